//! The supervisor's clock: the core takes time as a `Duration` since an origin the caller
//! chooses, and this is that origin. It counts only the time respawn ran. The backends measure
//! their own waits by it too (a stop's grace and bounds, the readiness probes of a REST or
//! command restart); the `respawn` crate re-exports it as `respawn::clock`.
//!
//! # Pauses
//!
//! A machine can stop under respawn and its server together: a laptop put to sleep, a virtual
//! machine suspended, snapshotted or moved to another host, the whole process tree stopped with
//! SIGSTOP. On resume the monotonic clock has jumped, and every deadline that ran meanwhile is
//! past: a stream that was between two tokens, a probe that was waiting for its answer, the
//! silence of a server that had nothing to say all look like a hang, and a healthy server would
//! be restarted (a model reloaded for minutes) for time in which nothing ran at all.
//!
//! So the clock leaves paused time out. One thread per process wakes every [`BEAT`]; a wake
//! later than [`SLACK`] past its time means that the process did not run in between, and that
//! lateness is counted as paused ([`paused`]). Every deadline of the supervision and of the
//! requests is a time on this clock, checked again when its timer fires: a timer that fires on
//! a resume finds its deadline not reached yet and is set again for the part the pause did not
//! use. A pause going on now that the thread has not seen yet (it has not run since the resume)
//! is counted from its last wake, so that a timer which runs first on a resume already knows of
//! it. Lateness below [`SLACK`] (a busy machine) counts as time that passed, and so does all of
//! the time if the thread cannot be started.
//!
//! Only a stop of the whole process counts: respawn's own threads being busy or blocked (the
//! thread is apart from them) and a server frozen alone (respawn runs on) are time that passed.

use std::future::Future;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// How often the watching thread wakes.
pub const BEAT: Duration = Duration::from_millis(50);

/// A wake later than this past its time means the process was not running.
pub const SLACK: Duration = Duration::from_millis(250);

/// The pauses shorter than this are counted but not logged.
const LOGGED_PAUSE: Duration = Duration::from_secs(1);

/// The supervisor's clock: the core takes time as a `Duration` since an origin the caller
/// chooses; every actor and request of one supervisor uses this one (tokio's, so paused time in
/// tests moves it too). Time the process did not run is left out (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
    /// The paused time counted before the origin.
    paused_before: Duration,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        let origin = Instant::now();
        Self {
            paused_before: paused_at(origin),
            origin,
        }
    }

    /// Running time since the origin.
    pub fn now(&self) -> Duration {
        let now = Instant::now();
        let paused = paused_at(now).saturating_sub(self.paused_before);
        now.duration_since(self.origin).saturating_sub(paused)
    }

    /// The instant at which this clock reads `at`, for timers: the origin, `at`, and the paused
    /// time counted so far. A pause before then makes the timer fire early; its owner checks
    /// [`now`](Self::now) against `at` again and sets it anew.
    pub fn instant(&self, at: Duration) -> Instant {
        let paused = paused_at(Instant::now()).saturating_sub(self.paused_before);
        self.origin
            .checked_add(at)
            .and_then(|t| t.checked_add(paused))
            .unwrap_or_else(far_future)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Runs `future` until it finishes or `bound` of running time has passed (`None`): a timer
/// fired by a resume is set again for what the pause did not use.
pub async fn timeout<F: Future>(bound: Duration, future: F) -> Option<F::Output> {
    let clock = Clock::new();
    let mut future = std::pin::pin!(future);
    loop {
        match tokio::time::timeout_at(clock.instant(bound), future.as_mut()).await {
            Ok(output) => return Some(output),
            Err(_) if clock.now() >= bound => return None,
            Err(_) => continue,
        }
    }
}

/// The paused time counted since the watching thread started, up to now.
pub fn paused() -> Duration {
    paused_at(Instant::now())
}

/// An instant no timer will reach (about 30 years ahead), for deadlines that overflow.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// The paused time counted up to `at` (an instant just taken).
fn paused_at(at: Instant) -> Duration {
    let Some(watch) = watch() else {
        return Duration::ZERO;
    };
    let (last, paused) = watch.read();
    // `at` taken before a wake that this look already sees: that wake's count covers it.
    let since = |at: std::time::Instant| at.saturating_duration_since(watch.base).max(last);
    let mut gap = since(at.into_std()) - last;
    if lateness(gap).is_zero() {
        return paused;
    }
    // A pause, or tokio's test clock ahead of the machine's: the machine's time then.
    gap = gap.min(since(std::time::Instant::now()) - last);
    paused + lateness(gap)
}

/// The part of a gap between two wakes that counts as paused.
fn lateness(gap: Duration) -> Duration {
    gap.saturating_sub(BEAT + SLACK)
}

/// The watching thread's record, published as a sequence lock: its last wake and the paused time
/// counted up to it, read together without a lock by every clock.
struct Watch {
    base: std::time::Instant,
    /// Odd while the thread writes.
    sequence: AtomicU64,
    /// Its last wake, in nanoseconds since `base`.
    last: AtomicU64,
    /// The paused time counted up to that wake, in nanoseconds.
    paused: AtomicU64,
}

fn watch() -> Option<&'static Watch> {
    static WATCH: OnceLock<Option<Watch>> = OnceLock::new();
    WATCH
        .get_or_init(|| {
            let started = std::thread::Builder::new()
                .name("respawn-pause-watch".into())
                .spawn(watch_pauses);
            match started {
                Ok(_) => Some(Watch {
                    base: std::time::Instant::now(),
                    sequence: AtomicU64::new(0),
                    last: AtomicU64::new(0),
                    paused: AtomicU64::new(0),
                }),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start the thread that notices pauses; a pause of the machine will count as time that passed");
                    None
                }
            }
        })
        .as_ref()
}

/// The watching thread: wakes every [`BEAT`] and counts what it finds late.
fn watch_pauses() {
    loop {
        std::thread::sleep(BEAT);
        if let Some(watch) = watch() {
            watch.wake();
        }
    }
}

impl Watch {
    /// The last wake and the paused time counted up to it, as one consistent pair.
    fn read(&self) -> (Duration, Duration) {
        loop {
            let before = self.sequence.load(Ordering::Acquire);
            if before % 2 == 1 {
                // The thread was preempted mid-write (three stores): let it finish.
                std::thread::yield_now();
                continue;
            }
            let last = self.last.load(Ordering::Relaxed);
            let paused = self.paused.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.sequence.load(Ordering::Relaxed) == before {
                return (Duration::from_nanos(last), Duration::from_nanos(paused));
            }
        }
    }

    /// One wake: counts the lateness since the last one.
    fn wake(&self) {
        let (last, paused) = self.read();
        let now = self.base.elapsed().max(last);
        let late = lateness(now - last);
        let paused = paused + late;
        let sequence = self.sequence.load(Ordering::Relaxed);
        self.sequence.store(sequence + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.last.store(nanos(now), Ordering::Relaxed);
        self.paused.store(nanos(paused), Ordering::Relaxed);
        self.sequence.store(sequence + 2, Ordering::Release);
        if late >= LOGGED_PAUSE {
            tracing::warn!(
                paused_ms = u64::try_from(late.as_millis()).unwrap_or(u64::MAX),
                "respawn did not run for a while (the machine or the process was paused); that time does not count against the server"
            );
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_counts_only_past_the_slack() {
        assert_eq!(lateness(BEAT), Duration::ZERO);
        assert_eq!(lateness(BEAT + SLACK), Duration::ZERO);
        assert_eq!(
            lateness(BEAT + SLACK + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn the_clock_never_goes_back() {
        let clock = Clock::new();
        let mut last = clock.now();
        for _ in 0..10_000 {
            let now = clock.now();
            assert!(now >= last, "{now:?} < {last:?}");
            last = now;
        }
    }

    #[test]
    fn a_clock_reads_its_timer_instants_back() {
        let clock = Clock::new();
        let at = clock.now() + Duration::from_secs(5);
        let instant = clock.instant(at);
        let until = instant.duration_since(Instant::now());
        assert!(until <= Duration::from_secs(5), "{until:?}");
        assert!(until >= Duration::from_secs(4), "{until:?}");
    }
}
