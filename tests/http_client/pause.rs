//! Bounds that count only the time the test process ran.
//!
//! A machine can be paused under a running test (a virtual machine suspended or moved, a laptop
//! put to sleep, the process stopped with SIGSTOP). The monotonic clock then jumps on resume,
//! and every bound measured with it runs out at once: a request given 60 s times out after one
//! second of work, a wait for a restart given 90 s gives up while the restart is under way. The
//! test then fails for something the code under test never did.
//!
//! A thread of this module wakes every [`BEAT`]. A wake more than [`SLACK`] late means that the
//! process did not run meanwhile; that lateness is counted as paused time ([`paused`]), and
//! [`Bound`] and [`timeout`] add it to what they allow. Lateness below [`SLACK`] (a busy machine)
//! counts as time that passed. A pause not yet seen by the thread (it has not run since the
//! resume) is counted from its last wake, so that a bound checked right after a resume already
//! knows of it.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How often the watching thread wakes.
const BEAT: Duration = Duration::from_millis(20);

/// A wake later than this after its time means the process was not running.
const SLACK: Duration = Duration::from_millis(500);

/// The watching thread's record: its last wake, and the paused time counted up to it.
struct Beats {
    last: Instant,
    paused: Duration,
}

fn beats() -> &'static Mutex<Beats> {
    static BEATS: OnceLock<Mutex<Beats>> = OnceLock::new();
    BEATS.get_or_init(|| {
        std::thread::Builder::new()
            .name("pause-watch".into())
            .spawn(|| loop {
                std::thread::sleep(BEAT);
                let mut beats = beats().lock();
                let gap = beats.last.elapsed();
                beats.paused += lateness(gap);
                beats.last = Instant::now();
            })
            .expect("start the thread that watches for pauses");
        Mutex::new(Beats {
            last: Instant::now(),
            paused: Duration::ZERO,
        })
    })
}

/// The part of a gap between two wakes that counts as paused.
fn lateness(gap: Duration) -> Duration {
    gap.saturating_sub(BEAT + SLACK)
}

/// The paused time counted since this module was first used, including a pause going on now
/// that the watching thread has not yet seen.
pub fn paused() -> Duration {
    let beats = beats().lock();
    beats.paused + lateness(beats.last.elapsed())
}

/// A time bound that does not count pauses: it passes once `bound` of running time has gone by
/// since it was made.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    start: Instant,
    bound: Duration,
    paused_before: Duration,
}

impl Bound {
    /// A bound of `bound` from now.
    pub fn new(bound: Duration) -> Self {
        Self {
            paused_before: paused(),
            start: Instant::now(),
            bound,
        }
    }

    /// The running time gone by since the bound was made.
    pub fn spent(&self) -> Duration {
        let paused = paused().saturating_sub(self.paused_before);
        self.start.elapsed().saturating_sub(paused)
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
/// A timer that fires on a resume is set again for the time the pause did not use.
pub async fn timeout<F: Future>(bound: Duration, future: F) -> Option<F::Output> {
    let bound = Bound::new(bound);
    let mut future = std::pin::pin!(future);
    loop {
        match tokio::time::timeout(bound.left(), future.as_mut()).await {
            Ok(output) => return Some(output),
            Err(_) if bound.passed() => return None,
            Err(_) => continue,
        }
    }
}

/// Blocks on `receiver` for at most `bound` of running time.
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
