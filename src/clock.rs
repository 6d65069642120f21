//! The supervisor's clock: the core takes time as a `Duration` since an origin the caller
//! chooses, and this is that origin.

use std::time::Duration;

use tokio::time::Instant;

/// The supervisor's clock: the core takes time as a `Duration` since an origin the caller
/// chooses; every actor and request of one supervisor uses this one (tokio's, so paused time in
/// tests moves it too).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// Time since the origin.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The instant `at` after the origin, for timers.
    pub fn instant(&self, at: Duration) -> Instant {
        self.origin.checked_add(at).unwrap_or_else(far_future)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// An instant no timer will reach (about 30 years ahead), for deadlines that overflow.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}
