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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use respawn_core::{
    Admission, Fingerprint, Generation, HangCause, Phase, PoisonTracker, Snapshot, Status,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::waiting::WaitBound;

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
    /// The fingerprint whose trial request is in flight: at most one, server-wide.
    trial: Mutex<Option<Fingerprint>>,
    /// Whether `trial` holds one, readable without the lock.
    trial_busy: AtomicBool,
    /// Woken when the poison table or the trial slot changes: requests waiting for a verdict.
    changed: Notify,
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
            trial: Mutex::new(None),
            trial_busy: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    /// Whether a trial request is in flight.
    pub fn trial_busy(&self) -> bool {
        self.trial_busy.load(Ordering::Acquire)
    }

    /// Takes the trial slot for `fingerprint` if it is free and `may_start` agrees (evaluated
    /// under the slot's lock, so that two claimants cannot both start).
    pub fn claim_trial(&self, fingerprint: Fingerprint, may_start: impl FnOnce() -> bool) -> bool {
        let mut trial = self.trial.lock();
        if trial.is_some() || !may_start() {
            return false;
        }
        *trial = Some(fingerprint);
        self.trial_busy.store(true, Ordering::Release);
        true
    }

    /// Frees the trial slot `fingerprint` held, and wakes whoever waits for it.
    pub fn release_trial(&self, fingerprint: Fingerprint) {
        let mut trial = self.trial.lock();
        if *trial == Some(fingerprint) {
            *trial = None;
            self.trial_busy.store(false, Ordering::Release);
        }
        drop(trial);
        self.changed.notify_waiters();
    }

    /// Woken when the poison table or the trial slot changes.
    pub fn changed(&self) -> &Notify {
        &self.changed
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
        let moved = self.load().poison_epoch != status.poison_epoch;
        if moved {
            *self.poison.write() = Arc::new(poison.clone());
        }
        self.word.store(status.snapshot().pack(), Ordering::Release);
        if moved {
            self.changed.notify_waiters();
        }
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

    /// What to do with a request of `fingerprint` at `now` (the quarantine's
    /// [`Admission`]): one atomic load while nothing was ever suspected.
    pub fn admit(
        &self,
        shared: &SharedSnapshot,
        snapshot: Snapshot,
        fingerprint: Fingerprint,
        now: Duration,
    ) -> Admission {
        self.with(
            shared,
            snapshot,
            |t| t.admit(fingerprint, now, shared.trial_busy()),
            Admission::Go,
        )
    }

    /// Whether a trial may start while `in_flight` are the requests sent and not ended.
    pub fn may_start_trial(
        &self,
        shared: &SharedSnapshot,
        snapshot: Snapshot,
        in_flight: Vec<Fingerprint>,
    ) -> bool {
        self.with(
            shared,
            snapshot,
            |t| t.may_start_trial(in_flight.into_iter()),
            true,
        )
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

/// When and why the last restart happened, and how long it took to be ready again; part of the
/// [status document](crate::status::StatusDocument).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRestart {
    /// What caused it (`health_probes`, `first_byte_timeout`, ...).
    pub cause: HangCause,
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
    /// The PID of the current model server: the process an operator would signal.
    pub pid: Option<u32>,
    /// The PID of the guardian that leads the model server's process group, if there is one.
    pub guardian_pid: Option<u32>,
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
            guardian_pid: None,
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

    /// Whether `generation` is on its way out: its restart has begun, or a later generation
    /// exists. Whatever its server starts to answer now is cut when it is stopped.
    /// The request path asks the [`SharedSnapshot`] instead (one atomic load, no lock).
    pub fn replacing(&self, generation: Generation) -> bool {
        Snapshot {
            generation: self.generation,
            phase: self.phase,
            poison_epoch: 0,
        }
        .replacing(generation)
    }

    /// How long a client refused while the server is not ready had better wait before it tries
    /// again (its `Retry-After`): as long as the last restart took, since the one under way is
    /// likely to take as long; 5 s before any was measured; within 1 s and 60 s, so that a client
    /// neither hammers a server that needs minutes nor stays away long after it is back.
    pub fn retry_after(&self) -> Duration {
        self.last_restart
            .as_ref()
            .map_or(Duration::from_secs(5), |last| {
                Duration::from_millis(last.duration_ms)
            })
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
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
    /// The server was not ready and the request could not wait for it: as many requests, or as
    /// many body bytes, as allowed were already waiting (see [`crate::waiting`]).
    #[error("{}", full_message(*bound, *limit))]
    Full {
        /// The bound that refused it ([`WaitBound::Requests`] or [`WaitBound::Bytes`]).
        bound: WaitBound,
        /// Its value: requests, or bytes.
        limit: u64,
    },
}

fn full_message(bound: WaitBound, limit: u64) -> String {
    match bound {
        WaitBound::Requests => format!(
            "the model server is not ready (starting or restarting) and {limit} requests are already waiting for it (--max-waiting); retry later"
        ),
        WaitBound::Bytes => format!(
            "the model server is not ready (starting or restarting) and the requests waiting for it already hold up to {limit} body bytes (--max-waiting-bytes); retry later"
        ),
        WaitBound::Time => "the model server was not ready in time; retry later".to_owned(),
    }
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
