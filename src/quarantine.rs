//! Where requests read the quarantine ([`QuarantineBoard`]), and the one table a pool's replicas
//! share ([`PoolQuarantine`]).
//!
//! A lone server's supervision machine keeps its own [`PoisonTracker`] and publishes a copy on
//! its board whenever it changes. A pool cannot give each replica its own table: a poison prompt
//! retried on the next replica at once would get one strike in each replica's table, never
//! two, and wedge every replica in turn. So a pool's machines keep no table
//! ([`SupervisionConfig::shared_quarantine`](respawn_core::SupervisionConfig::shared_quarantine));
//! each replica's coordinator hands the suspects of its incidents, and the successes it sees, to
//! one [`PoolQuarantine`], which judges on one clock and publishes on one board that every
//! replica's requests read. One table rather than copies kept in step by messages: a request
//! caught by a hang on one replica is admitted on the next one at once, and must find the hang
//! already counted, which a copy updated later by a message cannot promise.
//!
//! The trial slot lives on the board too: one trial request at a time for the whole pool, and a
//! hang convicts it only on the replica it was sent to.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use respawn_core::{Fingerprint, PoisonTracker, Snapshot};
use tokio::sync::Notify;

use crate::state::Clock;

/// The quarantine's table as requests read it: an epoch (0 while nothing was ever suspected, so
/// a request's check is one atomic load), the table behind it, the one trial slot, and a wake-up
/// for requests waiting for a verdict.
#[derive(Debug)]
pub struct QuarantineBoard {
    clock: Clock,
    epoch: AtomicU32,
    table: RwLock<Arc<PoisonTracker>>,
    /// The fingerprint whose trial request is in flight, and the replica it went to.
    trial: Mutex<Option<(Fingerprint, usize)>>,
    /// Whether `trial` holds one, readable without the lock.
    trial_busy: AtomicBool,
    changed: Notify,
}

impl QuarantineBoard {
    /// An empty board whose times are read on `clock` (the clock of whoever writes the table).
    pub fn new(clock: Clock) -> Arc<Self> {
        Arc::new(Self {
            clock,
            epoch: AtomicU32::new(0),
            table: RwLock::new(Arc::new(PoisonTracker::default())),
            trial: Mutex::new(None),
            trial_busy: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    /// The clock the table's times are on.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Grows whenever the table changes; 0 while it never held anything.
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The published table.
    pub fn table(&self) -> Arc<PoisonTracker> {
        Arc::clone(&self.table.read())
    }

    /// Publishes `table` as of `epoch`, and wakes the requests waiting for a verdict.
    pub fn publish(&self, epoch: u32, table: &PoisonTracker) {
        // The table first: a reader that sees the new epoch finds at least this table.
        *self.table.write() = Arc::new(table.clone());
        self.epoch.store(epoch, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Whether a trial request is in flight.
    pub fn trial_busy(&self) -> bool {
        self.trial_busy.load(Ordering::Acquire)
    }

    /// Takes the trial slot for `fingerprint`, sent to `replica`, if it is free and `may_start`
    /// agrees (evaluated under the slot's lock, so that two claimants cannot both start).
    pub fn claim_trial(
        &self,
        fingerprint: Fingerprint,
        replica: usize,
        may_start: impl FnOnce() -> bool,
    ) -> bool {
        let mut trial = self.trial.lock();
        if trial.is_some() || !may_start() {
            return false;
        }
        *trial = Some((fingerprint, replica));
        self.trial_busy.store(true, Ordering::Release);
        true
    }

    /// Frees the trial slot `fingerprint` held, and wakes whoever waits for it.
    pub fn release_trial(&self, fingerprint: Fingerprint) {
        let mut trial = self.trial.lock();
        if matches!(*trial, Some((held, _)) if held == fingerprint) {
            *trial = None;
            self.trial_busy.store(false, Ordering::Release);
        }
        drop(trial);
        self.changed.notify_waiters();
    }

    /// The fingerprint on trial now, on whichever replica, if any.
    pub fn trial(&self) -> Option<Fingerprint> {
        self.trial.lock().map(|(fingerprint, _)| fingerprint)
    }

    /// The fingerprint on trial on `replica` now, if any.
    pub fn trial_on(&self, replica: usize) -> Option<Fingerprint> {
        match *self.trial.lock() {
            Some((fingerprint, on)) if on == replica => Some(fingerprint),
            _ => None,
        }
    }

    /// Woken when the table or the trial slot changes.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }
}

/// The one quarantine table of a pool: every replica's coordinator writes its incidents'
/// suspects and its successes here, and every replica's requests read its board.
#[derive(Debug)]
pub struct PoolQuarantine {
    board: Arc<QuarantineBoard>,
    table: Mutex<(PoisonTracker, u32)>,
}

impl PoolQuarantine {
    /// An empty table putting a fingerprint on trial after `threshold` hangs, convictions lasting
    /// `ttl`, on its own clock.
    pub fn new(threshold: u32, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            board: QuarantineBoard::new(Clock::new()),
            table: Mutex::new((PoisonTracker::new(threshold).with_ttl(ttl), 0)),
        })
    }

    /// The board every replica's requests read.
    pub fn board(&self) -> &Arc<QuarantineBoard> {
        &self.board
    }

    /// Changes the table with `change` (which answers whether it changed anything and what to
    /// return), publishing it when it did.
    fn update<R>(&self, change: impl FnOnce(&mut PoisonTracker, Duration) -> (bool, R)) -> R {
        let mut table = self.table.lock();
        let (tracker, epoch) = &mut *table;
        let (changed, out) = change(tracker, self.board.clock.now());
        if changed {
            *epoch = Snapshot::next_epoch(*epoch);
            self.board.publish(*epoch, tracker);
        }
        out
    }

    /// An incident on `replica` found `suspects` in flight there: counts them (a trial request
    /// sent to that replica meets its verdict). Answers the fingerprints it convicted.
    pub fn on_hang(&self, replica: usize, suspects: &[Fingerprint]) -> Vec<Fingerprint> {
        let on_trial = self.board.trial_on(replica);
        if suspects.is_empty() && on_trial.is_none() {
            return Vec::new();
        }
        self.update(|tracker, now| (true, tracker.on_hang(now, suspects, on_trial)))
    }

    /// A request of `fingerprint` was answered in full on some replica: it is not poison.
    pub fn on_success(&self, fingerprint: Fingerprint) {
        self.update(|tracker, _| (tracker.on_success(fingerprint), ()));
    }

    /// An operator cleared the quarantine: answers how many fingerprints were quarantined.
    pub fn clear(&self) -> usize {
        self.update(|tracker, now| (true, tracker.release_all(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POISON: Fingerprint = Fingerprint(42);

    #[test]
    fn strikes_on_two_replicas_add_up_in_the_one_table() {
        let pool = PoolQuarantine::new(2, Duration::from_secs(600));
        assert_eq!(pool.board().epoch(), 0);
        assert!(pool.on_hang(0, &[POISON]).is_empty());
        assert!(pool.on_hang(1, &[POISON]).is_empty());
        let table = pool.board().table();
        assert_eq!(table.strikes(POISON), 2);
        assert!(
            table.is_on_trial(POISON),
            "two hangs, two replicas: on trial"
        );
        assert_ne!(pool.board().epoch(), 0);
    }

    #[test]
    fn a_trial_is_judged_only_by_a_hang_of_the_replica_it_went_to() {
        let pool = PoolQuarantine::new(1, Duration::from_secs(600));
        pool.on_hang(0, &[POISON]);
        assert!(pool.board().claim_trial(POISON, 1, || true));
        assert!(
            !pool.board().claim_trial(Fingerprint(7), 0, || true),
            "one trial for the whole pool"
        );
        // Replica 0 hangs again: not the trial's doing.
        assert!(pool.on_hang(0, &[]).is_empty());
        assert!(!pool.board().table().is_quarantined(POISON, Duration::ZERO));
        assert_eq!(pool.on_hang(1, &[POISON]), [POISON]);
        let now = pool.board().clock().now();
        assert!(pool.board().table().is_quarantined(POISON, now));
        pool.board().release_trial(POISON);
        assert!(!pool.board().trial_busy());
        assert_eq!(pool.clear(), 1);
        assert!(pool.board().table().is_empty());
    }

    #[test]
    fn a_success_anywhere_clears_the_suspicion() {
        let pool = PoolQuarantine::new(2, Duration::from_secs(600));
        pool.on_hang(0, &[POISON]);
        let epoch = pool.board().epoch();
        pool.on_success(POISON);
        assert_eq!(pool.board().table().strikes(POISON), 0);
        assert_ne!(pool.board().epoch(), epoch);
        // Nothing to clear: the epoch stays.
        let epoch = pool.board().epoch();
        pool.on_success(POISON);
        assert_eq!(pool.board().epoch(), epoch);
    }
}
