//! Poison tracking: a request that hangs the server again and again is refused.
//!
//! Some prompts crash or wedge a model server every time (a tokenizer bug, a pathological
//! length). Retrying such a request after each restart hangs every new generation too. The
//! tracker counts, per request [`Fingerprint`], the hangs it was in flight at; a success of that
//! fingerprint wipes its count. A fingerprint present at `threshold` consecutive hangs (hangs it
//! was present at, with no success of it in between; hangs it was absent from do not matter) is
//! quarantined: the caller refuses it with
//! [`GiveUpReason::Quarantined`](crate::GiveUpReason::Quarantined).
//!
//! # Bounded memory
//! At most `capacity` fingerprints with strikes and at most `capacity` quarantined fingerprints
//! are kept (default [`PoisonTracker::DEFAULT_CAPACITY`] each). When a set is full, the entry
//! touched longest ago is forgotten: an evicted suspect starts again from zero strikes, an
//! evicted quarantined request is let through again (and is caught again after `threshold` more
//! hangs).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// A stable hash of a request (method, path, body) chosen by the caller; equal requests have
/// equal fingerprints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Fingerprint(pub u64);

/// A bounded map from fingerprint to a value, forgetting the least recently touched entry.
#[derive(Clone, Debug)]
struct Recency<V> {
    entries: BTreeMap<Fingerprint, (V, u64)>,
    order: BTreeMap<u64, Fingerprint>,
    capacity: usize,
}

impl<V> Recency<V> {
    fn new(capacity: usize) -> Self {
        Recency {
            entries: BTreeMap::new(),
            order: BTreeMap::new(),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, fp: Fingerprint) -> Option<&V> {
        self.entries.get(&fp).map(|(value, _)| value)
    }

    fn remove(&mut self, fp: Fingerprint) -> Option<V> {
        let (value, stamp) = self.entries.remove(&fp)?;
        self.order.remove(&stamp);
        Some(value)
    }

    /// Inserts or replaces `fp`'s value, marking it touched at `stamp` (unique, increasing).
    fn put(&mut self, fp: Fingerprint, value: V, stamp: u64) {
        if let Some((_, old)) = self.entries.remove(&fp) {
            self.order.remove(&old);
        } else if self.entries.len() >= self.capacity {
            if let Some((_, oldest)) = self.order.pop_first() {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(fp, (value, stamp));
        self.order.insert(stamp, fp);
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Counts the hangs each request was in flight at and quarantines repeat offenders.
#[derive(Clone, Debug)]
pub struct PoisonTracker {
    threshold: u32,
    suspects: Recency<u32>,
    quarantined: Recency<u32>,
    clock: u64,
}

impl PoisonTracker {
    /// Fingerprints kept in each set (suspects, quarantined) unless told otherwise.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// The default number of hangs that quarantine a request.
    pub const DEFAULT_THRESHOLD: u32 = 2;

    /// A tracker that quarantines after `threshold` hangs (0 acts as 1), keeping at most
    /// [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) fingerprints per set.
    #[must_use]
    pub fn new(threshold: u32) -> Self {
        PoisonTracker::with_capacity(threshold, Self::DEFAULT_CAPACITY)
    }

    /// Like [`new`](Self::new) with an explicit bound per set (0 acts as 1).
    #[must_use]
    pub fn with_capacity(threshold: u32, capacity: usize) -> Self {
        PoisonTracker {
            threshold: threshold.max(1),
            suspects: Recency::new(capacity),
            quarantined: Recency::new(capacity),
            clock: 0,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock = self.clock.saturating_add(1);
        self.clock
    }

    /// A hang happened while these requests were in flight (duplicates count once). Returns the
    /// fingerprints that this hang quarantined, in ascending order.
    pub fn on_hang(&mut self, in_flight: &[Fingerprint]) -> Vec<Fingerprint> {
        let mut present: Vec<Fingerprint> = in_flight.to_vec();
        present.sort_unstable();
        present.dedup();
        let mut newly = Vec::new();
        for fp in present {
            let stamp = self.tick();
            if let Some(&strikes) = self.quarantined.get(fp) {
                self.quarantined.put(fp, strikes.saturating_add(1), stamp);
                continue;
            }
            let strikes = self
                .suspects
                .get(fp)
                .copied()
                .unwrap_or(0)
                .saturating_add(1);
            if strikes >= self.threshold {
                self.suspects.remove(fp);
                self.quarantined.put(fp, strikes, stamp);
                newly.push(fp);
            } else {
                self.suspects.put(fp, strikes, stamp);
            }
        }
        newly
    }

    /// The request completed: it is not poison. Its strikes are wiped and a quarantine, if any,
    /// is lifted.
    pub fn on_success(&mut self, fp: Fingerprint) {
        self.suspects.remove(fp);
        self.quarantined.remove(fp);
    }

    /// Lifts the quarantine of `fp` (an operator's decision); returns whether it was quarantined.
    pub fn release(&mut self, fp: Fingerprint) -> bool {
        self.quarantined.remove(fp).is_some()
    }

    /// Whether `fp` must be refused.
    #[must_use]
    pub fn is_quarantined(&self, fp: Fingerprint) -> bool {
        self.quarantined.get(fp).is_some()
    }

    /// Consecutive hangs `fp` was in flight at (0 if unknown or forgotten).
    #[must_use]
    pub fn strikes(&self, fp: Fingerprint) -> u32 {
        self.quarantined
            .get(fp)
            .or_else(|| self.suspects.get(fp))
            .copied()
            .unwrap_or(0)
    }

    /// How many fingerprints are quarantined now.
    #[must_use]
    pub fn quarantined_count(&self) -> usize {
        self.quarantined.len()
    }

    /// The hangs that quarantine a request.
    #[must_use]
    pub fn threshold(&self) -> u32 {
        self.threshold
    }
}

impl Default for PoisonTracker {
    fn default() -> Self {
        PoisonTracker::new(Self::DEFAULT_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Fingerprint = Fingerprint(1);
    const B: Fingerprint = Fingerprint(2);

    #[test]
    fn quarantined_at_the_kth_hang_it_was_present_at() {
        let mut t = PoisonTracker::new(2);
        assert_eq!(t.on_hang(&[A, B]), [] as [Fingerprint; 0]);
        assert_eq!(t.strikes(A), 1);
        // A hang without A does not reset or add to A.
        assert!(t.on_hang(&[B]).contains(&B));
        assert!(!t.is_quarantined(A));
        assert_eq!(t.on_hang(&[A]), [A]);
        assert!(t.is_quarantined(A));
        // Already quarantined: not reported again.
        assert!(t.on_hang(&[A]).is_empty());
        assert_eq!(t.strikes(A), 3);
        assert_eq!(t.quarantined_count(), 2);
    }

    #[test]
    fn a_success_wipes_the_strikes() {
        let mut t = PoisonTracker::new(2);
        t.on_hang(&[A]);
        t.on_success(A);
        assert_eq!(t.strikes(A), 0);
        assert!(t.on_hang(&[A]).is_empty());
        assert!(!t.is_quarantined(A));
    }

    #[test]
    fn duplicates_in_one_hang_count_once_and_zero_threshold_acts_as_one() {
        let mut t = PoisonTracker::new(3);
        t.on_hang(&[A, A, A]);
        assert_eq!(t.strikes(A), 1);
        let mut t = PoisonTracker::new(0);
        assert_eq!(t.threshold(), 1);
        assert_eq!(t.on_hang(&[B]), [B]);
        assert!(t.release(B));
        assert!(!t.is_quarantined(B));
    }

    #[test]
    fn memory_is_bounded_by_evicting_the_oldest() {
        let mut t = PoisonTracker::with_capacity(5, 3);
        for i in 0..10 {
            t.on_hang(&[Fingerprint(i)]);
        }
        assert_eq!(t.suspects.len(), 3);
        assert_eq!(t.strikes(Fingerprint(0)), 0);
        assert_eq!(t.strikes(Fingerprint(9)), 1);
        let mut t = PoisonTracker::with_capacity(1, 2);
        t.on_hang(&[Fingerprint(1)]);
        t.on_hang(&[Fingerprint(2)]);
        t.on_hang(&[Fingerprint(1)]);
        t.on_hang(&[Fingerprint(3)]);
        // 2 was touched longest ago.
        assert!(t.is_quarantined(Fingerprint(1)));
        assert!(!t.is_quarantined(Fingerprint(2)));
        assert!(t.is_quarantined(Fingerprint(3)));
    }
}
