//! The requests in flight through the proxy: how many, which (by fingerprint: the machine makes
//! the ones in flight at an incident suspects), when the last one started or finished (for the
//! idle canary), when the oldest open one was sent and when the server was last heard from (for
//! the health tracker's silence rule: how long the server has said nothing while asked).
//!
//! Shared by every proxy worker; the hot path takes one uncontended lock to register a request
//! and one to remove it. The poison verdicts are not kept here: the machine owns them and
//! publishes them with its snapshot ([`crate::state::SharedSnapshot`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use respawn_core::Fingerprint;
use tokio::sync::Notify;

use crate::state::Clock;

/// The requests in flight.
#[derive(Debug)]
pub struct InFlight {
    clock: Clock,
    next_id: AtomicU64,
    /// Each open request's fingerprint and when it was registered (on the table's clock).
    open: Mutex<HashMap<u64, (Fingerprint, Duration)>>,
    /// How many `open` holds, readable without its lock (a pool routes by it).
    open_count: AtomicUsize,
    last_activity_ms: AtomicU64,
    answered: AtomicU64,
    /// When the server last sent anything on a request (a head, a chunk, the end), in
    /// microseconds on the table's clock plus one; 0: never.
    heard_us: AtomicU64,
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
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            open_count: AtomicUsize::new(0),
            last_activity_ms: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            heard_us: AtomicU64::new(0),
            emptied: Notify::new(),
        })
    }

    /// A request got an answer (its first bytes, or its end): a sign of life of the server.
    pub fn answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.heard(self.clock.now());
    }

    /// The server sent something on a request at `at` (on the table's clock): a chunk of an
    /// answer. One relaxed store: the streaming path already read the clock for its own deadline.
    pub fn heard(&self, at: Duration) {
        let us = u64::try_from(at.as_micros()).unwrap_or(u64::MAX - 1);
        self.heard_us.store(us.saturating_add(1), Ordering::Relaxed);
    }

    /// When the server last sent anything on a request, if it ever did.
    pub fn last_heard(&self) -> Option<Duration> {
        match self.heard_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us - 1)),
        }
    }

    /// When the oldest request still in flight was registered, if any is.
    pub fn oldest_open(&self) -> Option<Duration> {
        self.open.lock().values().map(|&(_, since)| since).min()
    }

    /// Answers so far (only grows).
    pub fn answers(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Registers a request; it stays in flight until the guard is dropped.
    pub fn enter(self: &Arc<Self>, fingerprint: Fingerprint) -> InFlightGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now();
        self.open.lock().insert(id, (fingerprint, now));
        self.open_count.fetch_add(1, Ordering::Relaxed);
        self.touch_at(now);
        InFlightGuard {
            table: Arc::clone(self),
            id,
        }
    }

    /// How many requests are in flight: one atomic load, no lock (a pool's router reads it for
    /// every request).
    pub fn count(&self) -> usize {
        self.open_count.load(Ordering::Relaxed)
    }

    /// Waits until no request is in flight (at once when none is).
    ///
    /// # Cancel safety
    /// Cancel safe: it holds nothing.
    pub async fn until_empty(&self) {
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

    /// The fingerprints of the requests in flight now.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.open
            .lock()
            .values()
            .map(|&(fingerprint, _)| fingerprint)
            .collect()
    }

    /// When a request last started or finished, on the table's clock.
    pub fn last_activity(&self) -> Duration {
        Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed))
    }

    /// The table's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    fn touch(&self) {
        self.touch_at(self.clock.now());
    }

    fn touch_at(&self, now: Duration) {
        let ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }
}

/// Keeps one request registered as in flight.
#[derive(Debug)]
pub struct InFlightGuard {
    table: Arc<InFlight>,
    id: u64,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.table.open.lock().remove(&self.id).is_some()
            && self.table.open_count.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.table.emptied.notify_waiters();
        }
        self.table.touch();
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
    fn fingerprint_depends_on_body_not_on_identity() {
        let a = fingerprint("POST", "/v1/completions", b"{\"prompt\":\"x\"}");
        let b = fingerprint("POST", "/v1/completions", b"{\"prompt\":\"x\"}");
        let c = fingerprint("POST", "/v1/completions", b"{\"prompt\":\"y\"}");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
