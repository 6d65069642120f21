//! Bounds that count only the time the test process ran.
//!
//! A machine can be paused under a running test (a virtual machine suspended or moved, a laptop
//! put to sleep, the process stopped with SIGSTOP). The monotonic clock then jumps on resume,
//! and every bound measured with it runs out at once: a request given 60 s times out after one
//! second of work, a wait for a restart given 90 s gives up while the restart is under way. The
//! test then fails for something the code under test never did.
//!
//! respawn's own clock ([`respawn::clock`]) leaves such pauses out, for the same reason: its
//! watching thread counts a wake that comes late as time the process did not run. The tests'
//! bounds are measured on that clock, in the test process: [`Bound`] and [`timeout`] allow
//! their time in running time, and [`recv_timeout`] does the same for a blocking receive.

use std::future::Future;
use std::time::Duration;

use respawn::clock::Clock;

/// The paused time counted in this process so far, including a pause going on now.
pub fn paused() -> Duration {
    respawn::clock::paused()
}

/// A time bound that does not count pauses: it passes once `bound` of running time has gone by
/// since it was made.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    clock: Clock,
    bound: Duration,
}

impl Bound {
    /// A bound of `bound` from now.
    pub fn new(bound: Duration) -> Self {
        Self {
            clock: Clock::new(),
            bound,
        }
    }

    /// The running time gone by since the bound was made.
    pub fn spent(&self) -> Duration {
        self.clock.now()
    }

    /// Whether the bound has passed.
    pub fn passed(&self) -> bool {
        self.spent() >= self.bound
    }

    /// The running time left.
    pub fn left(&self) -> Duration {
        self.bound.saturating_sub(self.spent())
    }
}

/// Runs `future` for at most `bound` of running time: `None` when it did not finish within it.
pub async fn timeout<F: Future>(bound: Duration, future: F) -> Option<F::Output> {
    respawn::clock::timeout(bound, future).await
}

/// Blocks on `receiver` for at most `bound` of running time: a wait cut short by a resume is
/// made again for what the pause did not use.
pub fn recv_timeout<T>(
    receiver: &std::sync::mpsc::Receiver<T>,
    bound: Duration,
) -> Result<T, std::sync::mpsc::RecvTimeoutError> {
    let bound = Bound::new(bound);
    loop {
        match receiver.recv_timeout(bound.left()) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !bound.passed() => continue,
            other => return other,
        }
    }
}
