//! The supervisor's published state, written only by the coordinator from its machine's
//! `Publish` actions:
//!
//! * a [`SharedSnapshot`]: one atomic word (generation, phase, poison epoch) that every request
//!   checks before it is sent, with no lock and no actor hop, and the poison table behind it,
//!   looked up only when its epoch moved ([`PoisonCache`]);
//! * one `watch` channel of [`SupervisorState`] that waiting requests, the status endpoint,
//!   metrics and embedders read.
//!
//! Both share one [`Clock`], so that times the machine publishes mean the same to a request.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use respawn_core::{Fingerprint, Generation, HangCause, Phase, PoisonTracker, Snapshot, Status};
use serde::Serialize;
use tokio::sync::watch;
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

/// The machine's snapshot in one atomic word, the poison table it points to, and the current
/// generation's last sign of life (a second word) for requests past their deadline.
#[derive(Debug)]
pub struct SharedSnapshot {
    word: AtomicU64,
    poison: RwLock<Arc<PoisonTracker>>,
    life: AtomicU64,
}

/// Bits of the life word that hold the time in milliseconds; the generation's low bits above.
const LIFE_MS_BITS: u32 = 40;
const LIFE_MS_MASK: u64 = (1 << LIFE_MS_BITS) - 1;

impl SharedSnapshot {
    /// The snapshot before anything started.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            word: AtomicU64::new(Snapshot::INITIAL.pack()),
            poison: RwLock::new(Arc::new(PoisonTracker::default())),
            life: AtomicU64::new(0),
        })
    }

    /// Publishes the last sign of life of `generation` (`None`: none yet).
    pub fn publish_life(&self, generation: Generation, at: Option<Duration>) {
        let word = match at {
            // +1 so that 0 means "none"; 2^40 ms is 34 years.
            Some(at) => {
                let ms = u64::try_from(at.as_millis())
                    .unwrap_or(u64::MAX)
                    .saturating_add(1)
                    .min(LIFE_MS_MASK);
                (generation.get() << LIFE_MS_BITS) | ms
            }
            None => 0,
        };
        self.life.store(word, Ordering::Release);
    }

    /// When `generation` last showed life, if it is the generation published and it has.
    pub fn life_of(&self, generation: Generation) -> Option<Duration> {
        let word = self.life.load(Ordering::Acquire);
        let ms = word & LIFE_MS_MASK;
        let tag = word >> LIFE_MS_BITS;
        let mine = generation.get() & (u64::MAX >> LIFE_MS_BITS);
        (ms != 0 && tag == mine).then(|| Duration::from_millis(ms - 1))
    }

    /// The current snapshot: one atomic load.
    pub fn load(&self) -> Snapshot {
        Snapshot::unpack(self.word.load(Ordering::Acquire))
    }

    /// Publishes `status`; `poison` is the machine's table, copied only when its epoch moved.
    pub fn publish(&self, status: &Status, poison: &PoisonTracker) {
        if self.load().poison_epoch != status.poison_epoch {
            *self.poison.write() = Arc::new(poison.clone());
        }
        self.word.store(status.snapshot().pack(), Ordering::Release);
    }

    /// The published poison table.
    pub fn poison(&self) -> Arc<PoisonTracker> {
        Arc::clone(&self.poison.read())
    }
}

/// One worker's copy of the poison table, fetched again only when the snapshot's epoch moves:
/// while nothing was ever suspected, a request's check is the atomic load alone.
#[derive(Debug, Default)]
pub struct PoisonCache {
    table: RefCell<Option<(u32, Arc<PoisonTracker>)>>,
}

impl PoisonCache {
    fn with<R>(
        &self,
        shared: &SharedSnapshot,
        snapshot: Snapshot,
        read: impl FnOnce(&PoisonTracker) -> R,
        empty: R,
    ) -> R {
        if snapshot.poison_epoch == 0 {
            return empty;
        }
        let mut table = self.table.borrow_mut();
        let fresh = matches!(&*table, Some((epoch, _)) if *epoch == snapshot.poison_epoch);
        if !fresh {
            *table = Some((snapshot.poison_epoch, shared.poison()));
        }
        match &*table {
            Some((_, tracker)) => read(tracker),
            None => empty,
        }
    }

    /// Whether `fingerprint` must be refused.
    pub fn is_quarantined(
        &self,
        shared: &SharedSnapshot,
        snapshot: Snapshot,
        fingerprint: Fingerprint,
    ) -> bool {
        self.with(shared, snapshot, |t| t.is_quarantined(fingerprint), false)
    }

    /// Whether `fingerprint` was in flight at a hang and has not succeeded since.
    pub fn is_suspect(
        &self,
        shared: &SharedSnapshot,
        snapshot: Snapshot,
        fingerprint: Fingerprint,
    ) -> bool {
        self.with(shared, snapshot, |t| t.strikes(fingerprint) > 0, false)
    }
}

/// When and why the last restart happened, and how long it took to be ready again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastRestart {
    /// What caused it (`health_probes`, `first_byte_timeout`, ...).
    pub cause: &'static str,
    /// From the hang report to the new generation being ready, in milliseconds.
    pub duration_ms: u64,
    /// When the restart was decided, as seconds since the Unix epoch.
    pub at: u64,
}

/// A snapshot of what the supervisor is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorState {
    /// The generation that is (or is becoming) current: 0 before the first start.
    pub generation: Generation,
    /// What the supervisor is doing.
    pub phase: Phase,
    /// The PID of the current child (or of its guardian, which leads its process group).
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u64,
    /// The cause of the last hang that was acted upon.
    pub last_cause: Option<HangCause>,
    /// The last error (a failed strategy, the reason for `Failed`).
    pub last_error: Option<String>,
    /// The last completed restart.
    pub last_restart: Option<LastRestart>,
    /// When the current generation became ready, as seconds since the Unix epoch.
    pub ready_at: Option<u64>,
}

impl SupervisorState {
    /// The state before anything has started.
    pub fn initial() -> Self {
        Self {
            generation: Generation(0),
            phase: Phase::Starting,
            pid: None,
            restarts: 0,
            last_cause: None,
            last_error: None,
            last_restart: None,
            ready_at: None,
        }
    }

    /// Whether requests for at least `generation` can be sent now.
    pub fn ready_for(&self, generation: Generation) -> bool {
        self.phase == Phase::Ready && self.generation >= generation
    }

    /// Seconds the current generation has been ready, if it is.
    pub fn uptime_s(&self) -> Option<u64> {
        match (self.phase, self.ready_at) {
            (Phase::Ready, Some(at)) => Some(unix_now_s().saturating_sub(at)),
            _ => None,
        }
    }
}

/// Seconds since the Unix epoch, for timestamps shown to people.
pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Why waiting for a ready server ended without one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The supervisor gave up restarting the server.
    #[error("the model server is down and respawn gave up restarting it: {reason}")]
    Failed {
        /// The reason it gave up.
        reason: String,
    },
    /// The supervisor is stopping.
    #[error("respawn is shutting down")]
    Stopping,
    /// No ready server within the bound.
    #[error("the model server was not ready within {waited:?}")]
    TimedOut {
        /// How long the request waited.
        waited: Duration,
    },
}

/// Waits until the published state is ready for `generation` (or a later one).
///
/// # Cancel safety
/// Cancel safe: dropping the future only stops waiting.
pub async fn wait_ready(
    rx: &mut watch::Receiver<SupervisorState>,
    generation: Generation,
    bound: Duration,
) -> Result<Generation, WaitError> {
    // The common case, a ready server, costs no timer.
    {
        let state = rx.borrow_and_update();
        if state.ready_for(generation) {
            return Ok(state.generation);
        }
    }
    let wait = async {
        loop {
            {
                let state = rx.borrow_and_update();
                if state.ready_for(generation) {
                    return Ok(state.generation);
                }
                match state.phase {
                    Phase::Failed => {
                        return Err(WaitError::Failed {
                            reason: state
                                .last_error
                                .clone()
                                .unwrap_or_else(|| "restart limit reached".to_owned()),
                        })
                    }
                    Phase::Stopping | Phase::Stopped => return Err(WaitError::Stopping),
                    _ => {}
                }
            }
            if rx.changed().await.is_err() {
                return Err(WaitError::Stopping);
            }
        }
    };
    match tokio::time::timeout(bound, wait).await {
        Ok(result) => result,
        Err(_) => Err(WaitError::TimedOut { waited: bound }),
    }
}

/// Creates the channel the coordinator publishes on.
pub fn channel() -> (
    watch::Sender<SupervisorState>,
    watch::Receiver<SupervisorState>,
) {
    watch::channel(SupervisorState::initial())
}
