//! The requests in flight through the proxy: how many, which (by fingerprint, for poison
//! tracking), and when the last one finished (for the idle canary).
//!
//! Shared by every proxy worker; the hot path takes one uncontended lock to register a request
//! and one to remove it.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use respawn_core::Fingerprint;
use tokio::time::Instant;

/// The requests in flight and the poison verdicts the coordinator published.
#[derive(Debug)]
pub struct InFlight {
    origin: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Fingerprint>>,
    last_activity_ms: AtomicU64,
    suspects: RwLock<HashSet<Fingerprint>>,
    quarantined: RwLock<HashSet<Fingerprint>>,
}

impl InFlight {
    /// An empty table.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            last_activity_ms: AtomicU64::new(0),
            suspects: RwLock::new(HashSet::new()),
            quarantined: RwLock::new(HashSet::new()),
        })
    }

    /// Registers a request; it stays in flight until the guard is dropped.
    pub fn enter(self: &Arc<Self>, fingerprint: Fingerprint) -> InFlightGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open.lock().insert(id, fingerprint);
        self.touch();
        InFlightGuard {
            table: Arc::clone(self),
            id,
        }
    }

    /// How many requests are in flight.
    pub fn count(&self) -> usize {
        self.open.lock().len()
    }

    /// The fingerprints of the requests in flight now.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.open.lock().values().copied().collect()
    }

    /// Time since the table was created when a request last started or finished.
    pub fn last_activity(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed))
    }

    /// Time since the table was created.
    pub fn now(&self) -> std::time::Duration {
        self.origin.elapsed()
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether this request was quarantined as poison.
    pub fn is_quarantined(&self, fingerprint: Fingerprint) -> bool {
        self.quarantined.read().contains(&fingerprint)
    }

    /// Whether this request was in flight at a hang and has not succeeded since.
    pub fn is_suspect(&self, fingerprint: Fingerprint) -> bool {
        self.suspects.read().contains(&fingerprint)
    }

    /// Publishes the coordinator's poison verdicts.
    pub fn publish_poison(
        &self,
        suspects: HashSet<Fingerprint>,
        quarantined: HashSet<Fingerprint>,
    ) {
        *self.suspects.write() = suspects;
        *self.quarantined.write() = quarantined;
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
        self.table.open.lock().remove(&self.id);
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

    #[test]
    fn fingerprint_depends_on_body_not_on_identity() {
        let a = fingerprint("POST", "/v1/completions", b"{\"prompt\":\"x\"}");
        let b = fingerprint("POST", "/v1/completions", b"{\"prompt\":\"x\"}");
        let c = fingerprint("POST", "/v1/completions", b"{\"prompt\":\"y\"}");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn quarantine_is_published() {
        let table = InFlight::new();
        assert!(!table.is_quarantined(Fingerprint(7)));
        table.publish_poison(HashSet::new(), [Fingerprint(7)].into_iter().collect());
        assert!(table.is_quarantined(Fingerprint(7)));
    }
}
