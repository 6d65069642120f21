//! The requests in flight through the proxy: how many, which (by fingerprint: the machine makes
//! the ones in flight at an incident suspects), when the last one started or finished (for the
//! idle canary), when the oldest open one was sent and when the server was last heard from (for
//! the health tracker's silence rule: how long the server has said nothing while asked).
//!
//! Shared by every proxy worker, and split in shards so that workers share neither a lock nor a
//! cache line: each thread registers its requests in its own shard (a slab of slots with a free
//! list: no hashing, and no allocation once it has grown to the thread's largest number of
//! requests at once), whose lock only that thread takes on the hot path, and keeps its counts and
//! times there too (how many are open, the answers, when a request last started or ended, when the
//! server was last heard from). The readers (a hang's suspects, the oldest open request and the
//! silence once per probe, the count for a pool's router) visit every shard and add up or take
//! the latest. The poison verdicts are not kept here: the machine owns them and publishes them
//! with its snapshot ([`crate::state::SharedSnapshot`]).

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use respawn_core::Fingerprint;
use tokio::sync::Notify;

use crate::state::Clock;

/// Shards of the table: threads beyond this share one (still correct, only less private).
pub(crate) const SHARDS: usize = 8;

/// Each thread's shard, handed out in turn the first time a thread asks (the in-flight table and
/// the per-thread counters of [`crate::metrics`] use the same index).
pub(crate) fn shard_of_this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// One shard: the open requests' fingerprints and registration times, in reusable slots.
#[derive(Debug, Default)]
struct Slots {
    open: Vec<Option<(Fingerprint, Duration)>>,
    free: Vec<usize>,
}

impl Slots {
    fn insert(&mut self, entry: (Fingerprint, Duration)) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.open[slot] = Some(entry);
                slot
            }
            None => {
                self.open.push(Some(entry));
                self.open.len() - 1
            }
        }
    }

    fn remove(&mut self, slot: usize) -> bool {
        match self.open.get_mut(slot).and_then(Option::take) {
            Some(_) => {
                self.free.push(slot);
                true
            }
            None => false,
        }
    }

    fn entries(&self) -> impl Iterator<Item = &(Fingerprint, Duration)> {
        self.open.iter().flatten()
    }
}

/// A shard on its own cache lines, so that two workers' shards do not share one: its slots, and
/// the counts and times of the requests it registered or the thread that owns it served.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard {
    slots: Mutex<Slots>,
    /// How many of its slots are taken (readable without the lock).
    open: AtomicUsize,
    /// When one of its requests last started or finished, in ms on the table's clock.
    last_activity_ms: AtomicU64,
    /// Answers counted by its thread.
    answered: AtomicU64,
    /// When the server last sent anything on a request served by its thread, in microseconds on
    /// the table's clock plus one; 0: never.
    heard_us: AtomicU64,
}

impl Shard {
    fn mine(table: &InFlight) -> &Shard {
        &table.shards[shard_of_this_thread()]
    }
}

/// The requests in flight.
#[derive(Debug)]
pub struct InFlight {
    clock: Clock,
    shards: [Shard; SHARDS],
    /// How many are waiting for the table to empty: a request's end looks for an empty table
    /// only when some are.
    drain_waiters: AtomicUsize,
    /// Woken when the last request in flight ends (a rolling restart's drain waits on it).
    emptied: Notify,
}

impl InFlight {
    /// An empty table with its own clock.
    pub fn new() -> Arc<Self> {
        Self::with_clock(Clock::new())
    }

    /// An empty table on the supervisor's clock.
    pub fn with_clock(clock: Clock) -> Arc<Self> {
        Arc::new(Self {
            clock,
            shards: Default::default(),
            drain_waiters: AtomicUsize::new(0),
            emptied: Notify::new(),
        })
    }

    /// A request got an answer (its first bytes, or its end): a sign of life of the server.
    pub fn answered(&self) {
        let now = self.clock.now();
        let shard = Shard::mine(self);
        shard.answered.fetch_add(1, Ordering::Relaxed);
        shard.heard_us.store(heard_value(now), Ordering::Relaxed);
    }

    /// The server sent something on a request at `at` (on the table's clock): a chunk of an
    /// answer. One relaxed store: the streaming path already read the clock for its own deadline.
    pub fn heard(&self, at: Duration) {
        Shard::mine(self)
            .heard_us
            .store(heard_value(at), Ordering::Relaxed);
    }

    /// When the server last sent anything on a request, if it ever did (the latest of the
    /// shards').
    pub fn last_heard(&self) -> Option<Duration> {
        match self.latest(|shard| &shard.heard_us) {
            0 => None,
            us => Some(Duration::from_micros(us - 1)),
        }
    }

    /// The largest value of one of the shards' times.
    fn latest(&self, field: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|shard| field(shard).load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// When the oldest request still in flight was registered, if any is (visits every shard).
    pub fn oldest_open(&self) -> Option<Duration> {
        self.shards
            .iter()
            .filter_map(|shard| shard.slots.lock().entries().map(|&(_, since)| since).min())
            .min()
    }

    /// Answers so far (only grows).
    pub fn answers(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.answered.load(Ordering::Relaxed))
            .sum()
    }

    /// Registers a request; it stays in flight until the guard is dropped.
    pub fn enter(self: &Arc<Self>, fingerprint: Fingerprint) -> InFlightGuard {
        let now = self.clock.now();
        let shard = shard_of_this_thread();
        let mine = &self.shards[shard];
        let slot = mine.slots.lock().insert((fingerprint, now));
        mine.open.fetch_add(1, Ordering::SeqCst);
        touch(mine, now);
        InFlightGuard {
            table: Arc::clone(self),
            shard,
            slot,
        }
    }

    /// How many requests are in flight: an atomic load per shard, no lock (a pool's router reads
    /// it for every request).
    pub fn count(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.open.load(Ordering::SeqCst))
            .sum()
    }

    /// Waits until no request is in flight (at once when none is).
    ///
    /// # Cancel safety
    /// Cancel safe: it holds nothing but its place among the waiters, given back when dropped.
    pub async fn until_empty(&self) {
        // Counted before the count is read (both sequentially consistent, as the last request's
        // decrement and its look at the waiters are): either this sees the table empty, or the
        // last request sees this waiter and wakes it.
        self.drain_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = DrainWaiter(&self.drain_waiters);
        loop {
            // Registered before the count is read, so that the last request's end is not missed
            // in between.
            let emptied = self.emptied.notified();
            let mut emptied = std::pin::pin!(emptied);
            emptied.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            emptied.await;
        }
    }

    /// The fingerprints of the requests in flight now (visits every shard).
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        let mut all = Vec::with_capacity(self.count());
        for shard in &self.shards {
            all.extend(
                shard
                    .slots
                    .lock()
                    .entries()
                    .map(|&(fingerprint, _)| fingerprint),
            );
        }
        all
    }

    /// When a request last started or finished, on the table's clock.
    pub fn last_activity(&self) -> Duration {
        Duration::from_millis(self.latest(|shard| &shard.last_activity_ms))
    }

    /// The table's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }
}

/// A request of `shard` started or finished at `now`.
fn touch(shard: &Shard, now: Duration) {
    let ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
    shard.last_activity_ms.store(ms, Ordering::Relaxed);
}

/// `at` as a shard's `heard_us`.
fn heard_value(at: Duration) -> u64 {
    u64::try_from(at.as_micros())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// One waiter of [`InFlight::until_empty`], counted while it waits.
struct DrainWaiter<'a>(&'a AtomicUsize);

impl Drop for DrainWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Keeps one request registered as in flight.
#[derive(Debug)]
pub struct InFlightGuard {
    table: Arc<InFlight>,
    shard: usize,
    slot: usize,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let table = &self.table;
        let shard = &table.shards[self.shard];
        let removed = shard.slots.lock().remove(self.slot);
        if removed {
            shard.open.fetch_sub(1, Ordering::SeqCst);
            // Every count is sequentially consistent: of the last requests to end at once, at
            // least one sees the table empty, and a waiter counted before that sees it too or is
            // woken.
            if table.drain_waiters.load(Ordering::SeqCst) > 0 && table.count() == 0 {
                table.emptied.notify_waiters();
            }
        }
        touch(shard, table.clock.now());
    }
}

/// The fingerprint of a request: what it asks, not who asked or when.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> Fingerprint {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    method.hash(&mut hasher);
    path.hash(&mut hasher);
    body.hash(&mut hasher);
    Fingerprint(hasher.finish())
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn guard_removes_request_on_drop() {
        let table = InFlight::new();
        let a = table.enter(Fingerprint(1));
        let b = table.enter(Fingerprint(2));
        assert_eq!(table.count(), 2);
        drop(a);
        assert_eq!(table.fingerprints(), vec![Fingerprint(2)]);
        drop(b);
        assert_eq!(table.count(), 0);
    }

    #[tokio::test]
    async fn until_empty_wakes_when_the_last_request_ends_and_not_before() {
        let table = InFlight::new();
        table.until_empty().await;
        let a = table.enter(Fingerprint(1));
        let b = table.enter(Fingerprint(2));
        let mut waiting = waiting_for_empty(&table);
        assert!(waiting.as_mut().now_or_never().is_none(), "two in flight");
        drop(a);
        assert!(waiting.as_mut().now_or_never().is_none(), "one in flight");
        drop(b);
        assert!(waiting.as_mut().now_or_never().is_some(), "none in flight");
    }

    fn waiting_for_empty(
        table: &Arc<InFlight>,
    ) -> std::pin::Pin<Box<impl std::future::Future<Output = ()> + '_>> {
        Box::pin(table.until_empty())
    }

    #[tokio::test(start_paused = true)]
    async fn oldest_open_and_last_heard_follow_the_requests() {
        let table = InFlight::new();
        assert_eq!(table.oldest_open(), None);
        assert_eq!(table.last_heard(), None);
        let first = table.enter(Fingerprint(1));
        let started = table.clock().now();
        tokio::time::advance(Duration::from_millis(5)).await;
        let second = table.enter(Fingerprint(2));
        assert_eq!(table.oldest_open(), Some(started));
        drop(first);
        assert_eq!(
            table.oldest_open(),
            Some(started + Duration::from_millis(5))
        );
        table.answered();
        assert_eq!(table.last_heard(), Some(started + Duration::from_millis(5)));
        table.heard(Duration::from_millis(7));
        assert_eq!(table.last_heard(), Some(Duration::from_millis(7)));
        drop(second);
        assert_eq!(table.oldest_open(), None);
    }

    #[test]
    fn guards_dropped_on_other_threads_free_their_own_slots() {
        let table = InFlight::new();
        let here = table.enter(Fingerprint(1));
        let there = std::thread::spawn({
            let table = Arc::clone(&table);
            move || table.enter(Fingerprint(2))
        })
        .join()
        .expect("the thread registers its request");
        let mut fps = table.fingerprints();
        fps.sort_by_key(|fp| fp.0);
        assert_eq!(fps, vec![Fingerprint(1), Fingerprint(2)]);
        drop(there);
        assert_eq!(table.fingerprints(), vec![Fingerprint(1)]);
        // A freed slot is reused, and the one still open keeps its place.
        let again = table.enter(Fingerprint(3));
        let mut fps = table.fingerprints();
        fps.sort_by_key(|fp| fp.0);
        assert_eq!(fps, vec![Fingerprint(1), Fingerprint(3)]);
        drop((here, again));
        assert_eq!(table.count(), 0);
        assert!(table.fingerprints().is_empty());
    }

    #[test]
    fn the_counts_and_times_of_every_thread_are_added_up() {
        let table = InFlight::new();
        let here = table.enter(Fingerprint(1));
        table.answered();
        table.heard(Duration::from_millis(3));
        let there = std::thread::spawn({
            let table = Arc::clone(&table);
            move || {
                let guard = table.enter(Fingerprint(2));
                table.answered();
                table.heard(Duration::from_millis(9));
                guard
            }
        })
        .join()
        .expect("the thread registers its request");
        assert_eq!(table.count(), 2);
        assert_eq!(table.answers(), 2);
        // The latest word of the server, whichever thread heard it.
        assert_eq!(table.last_heard(), Some(Duration::from_millis(9)));
        table.heard(Duration::from_millis(5));
        assert_eq!(table.last_heard(), Some(Duration::from_millis(9)));
        // A drain waits for the requests of every thread: the other thread's request ends
        // first (its shard is empty, the table is not), then this one.
        let mut waiting = waiting_for_empty(&table);
        assert!(waiting.as_mut().now_or_never().is_none(), "two in flight");
        drop(there);
        assert_eq!(table.count(), 1);
        assert!(waiting.as_mut().now_or_never().is_none(), "one in flight");
        drop(here);
        assert!(waiting.as_mut().now_or_never().is_some(), "none in flight");
    }

    #[tokio::test]
    async fn a_drain_that_started_after_the_table_emptied_ends_at_once() {
        let table = InFlight::new();
        let a = table.enter(Fingerprint(1));
        drop(a);
        table.until_empty().await;
        assert_eq!(table.drain_waiters.load(Ordering::SeqCst), 0);
        let b = table.enter(Fingerprint(2));
        let mut waiting = waiting_for_empty(&table);
        assert!(waiting.as_mut().now_or_never().is_none(), "one in flight");
        assert_eq!(table.drain_waiters.load(Ordering::SeqCst), 1);
        drop(b);
        assert!(waiting.as_mut().now_or_never().is_some(), "none in flight");
        drop(waiting);
        assert_eq!(table.drain_waiters.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn fingerprint_depends_on_body_not_on_identity() {
        let a = fingerprint("POST", "/v1/completions", b"{\"prompt\":\"x\"}");
        let b = fingerprint("POST", "/v1/completions", b"{\"prompt\":\"x\"}");
        let c = fingerprint("POST", "/v1/completions", b"{\"prompt\":\"y\"}");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
