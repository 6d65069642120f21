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

use respawn_core::{
    Admission, Fingerprint, Generation, HangCause, Phase, PoisonTracker, Snapshot, Status,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

pub use crate::clock::Clock;
use crate::quarantine::QuarantineBoard;

use crate::waiting::WaitBound;

/// The machine's snapshot in one atomic word, the quarantine's board requests read, and the
/// current generation's last sign of life (a second word) for requests past their deadline.
#[derive(Debug)]
pub struct SharedSnapshot {
    word: AtomicU64,
    life: AtomicU64,
    /// The quarantine as requests read it: this server's own, or its pool's.
    board: Arc<QuarantineBoard>,
    /// Whether the machine publishes its table on `board` (a lone server), or the board is a
    /// pool's, written by the pool's one table.
    owns_board: bool,
}

/// Bits of the life word that hold the time in milliseconds; the generation's low bits above.
const LIFE_MS_BITS: u32 = 40;
const LIFE_MS_MASK: u64 = (1 << LIFE_MS_BITS) - 1;

impl SharedSnapshot {
    /// The snapshot before anything started, with a board of its own on a clock of its own.
    pub fn new() -> Arc<Self> {
        Self::with_clock(Clock::new())
    }

    /// The snapshot before anything started, with a board of its own whose times are on
    /// `clock` (the supervisor's: the machine's conviction times are on it).
    pub fn with_clock(clock: Clock) -> Arc<Self> {
        Self::build(QuarantineBoard::new(clock), true)
    }

    /// The snapshot before anything started, for a replica whose requests read its pool's
    /// `board` (the machine publishes no table there).
    pub fn sharing(board: Arc<QuarantineBoard>) -> Arc<Self> {
        Self::build(board, false)
    }

    fn build(board: Arc<QuarantineBoard>, owns_board: bool) -> Arc<Self> {
        Arc::new(Self {
            word: AtomicU64::new(Snapshot::INITIAL.pack()),
            life: AtomicU64::new(0),
            board,
            owns_board,
        })
    }

    /// The quarantine's board this server's requests read.
    pub fn board(&self) -> &Arc<QuarantineBoard> {
        &self.board
    }

    /// Whether a trial request is in flight.
    pub fn trial_busy(&self) -> bool {
        self.board.trial_busy()
    }

    /// Frees the trial slot `fingerprint` held, and wakes whoever waits for it.
    pub fn release_trial(&self, fingerprint: Fingerprint) {
        self.board.release_trial(fingerprint);
    }

    /// Woken when the poison table or the trial slot changes.
    pub fn changed(&self) -> &Notify {
        self.board.changed()
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

    /// Publishes `status`; `poison` is the machine's table, copied onto the board (when the
    /// board is this server's own) only when its epoch moved.
    pub fn publish(&self, status: &Status, poison: &PoisonTracker) {
        let moved = self.load().poison_epoch != status.poison_epoch;
        if moved && self.owns_board {
            self.board.publish(status.poison_epoch, poison);
        }
        self.word.store(status.snapshot().pack(), Ordering::Release);
    }

    /// The published poison table.
    pub fn poison(&self) -> Arc<PoisonTracker> {
        self.board.table()
    }
}

/// One worker's copy of the poison table, fetched again only when the board's epoch moves:
/// while nothing was ever suspected, a request's check is the atomic load alone.
#[derive(Debug, Default)]
pub struct PoisonCache {
    table: RefCell<Option<(u32, Arc<PoisonTracker>)>>,
}

impl PoisonCache {
    fn with<R>(
        &self,
        board: &QuarantineBoard,
        read: impl FnOnce(&PoisonTracker) -> R,
        empty: R,
    ) -> R {
        let epoch = board.epoch();
        if epoch == 0 {
            return empty;
        }
        let mut table = self.table.borrow_mut();
        let fresh = matches!(&*table, Some((cached, _)) if *cached == epoch);
        if !fresh {
            *table = Some((epoch, board.table()));
        }
        match &*table {
            Some((_, tracker)) => read(tracker),
            None => empty,
        }
    }

    /// What to do with a request of `fingerprint` at `now` on the board's clock (the
    /// quarantine's [`Admission`]): one atomic load while nothing was ever suspected.
    pub fn admit(
        &self,
        board: &QuarantineBoard,
        fingerprint: Fingerprint,
        now: Duration,
    ) -> Admission {
        self.with(
            board,
            |t| t.admit(fingerprint, now, board.trial_busy()),
            Admission::Go,
        )
    }

    /// Whether a trial may start while `in_flight` are the requests sent and not ended.
    pub fn may_start_trial(&self, board: &QuarantineBoard, in_flight: Vec<Fingerprint>) -> bool {
        self.with(board, |t| t.may_start_trial(in_flight.into_iter()), true)
    }

    /// Whether `fingerprint` was in flight at a hang and has not succeeded since.
    pub fn is_suspect(&self, board: &QuarantineBoard, fingerprint: Fingerprint) -> bool {
        self.with(board, |t| t.strikes(fingerprint) > 0, false)
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
    // Running time: a pause of the machine is not time waited (crate::clock).
    match crate::clock::timeout(bound, wait).await {
        Some(result) => result,
        None => Err(WaitError::TimedOut { waited: bound }),
    }
}

/// Creates the channel the coordinator publishes on.
pub fn channel() -> (
    watch::Sender<SupervisorState>,
    watch::Receiver<SupervisorState>,
) {
    watch::channel(SupervisorState::initial())
}
