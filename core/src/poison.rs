//! Quarantine by evidence: a request that hangs the server again and again is refused, and only
//! that one.
//!
//! Some prompts crash or wedge a model server every time (a tokenizer bug, a pathological
//! length); retrying one after each restart would hang every new generation too. But a request
//! is identified by a [`Fingerprint`] of what it asks (identical bodies from different clients
//! share one), and most requests in flight at a hang are innocent bystanders. So the tracker
//! blames on evidence, not presence:
//!
//! 1. **Hangs no request can have caused count against no one**: the caller passes no suspects
//!    for an operator's restart, and an exit or a failed probe with nothing in flight has none.
//!    An unexplained exit with requests in flight is no alibi (an out-of-memory kill can be the
//!    prompt's doing).
//! 2. **A success clears suspicion**: any request with that fingerprint answered in full wipes
//!    its strikes (and the record of an expired conviction).
//! 3. **Isolate before you convict**: a fingerprint present at `threshold` hangs with no success
//!    in between is not quarantined but put **on trial**: one trial request at a time, server-wide
//!    (its twins, and every other suspect, wait for the verdict: see [`Admission`]), and it starts
//!    only when no other suspect is in flight ([`PoisonTracker::may_start_trial`]), while other
//!    traffic flows. A hang while the trial request is in flight convicts it; its success
//!    acquits it. So a fingerprint that hangs the server every time is convicted at its
//!    `threshold + 1`-th hang, and an innocent one is never convicted by a hang that a known
//!    suspect or a fault from outside caused (suspects are held back during a trial, and a hang
//!    from outside that the caller can tell passes no suspects).
//! 4. **Bounded and visible**: a conviction lasts `ttl` (default 10 min); a fingerprint convicted
//!    before is convicted again at its first hang after that, without a new trial. At most
//!    `capacity` suspects and `capacity` convictions (current or expired) are kept; when full,
//!    the entry touched longest ago is forgotten.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::time::Duration;

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

    fn iter(&self) -> impl Iterator<Item = (Fingerprint, &V)> {
        self.entries.iter().map(|(fp, (value, _))| (*fp, value))
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

/// What the tracker suspects of one fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Suspicion {
    /// Hangs it was present at since its last success.
    strikes: u32,
    /// Present at `threshold` hangs: its requests go one at a time until a verdict.
    on_trial: bool,
}

/// A conviction: since when, after how many hangs, until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Conviction {
    /// When it was convicted (the caller's clock).
    pub since: Duration,
    /// Hangs it was present at, this conviction's included.
    pub hangs: u32,
    /// When the quarantine ends (the caller's clock).
    pub expires: Duration,
}

/// What to do with a request of a given fingerprint now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Admission {
    /// Send it.
    Go,
    /// It is on trial: send it only as the one trial request in flight; otherwise wait for the
    /// verdict (the first request of its twins to get the trial slot goes).
    Trial,
    /// It is a suspect and a trial is in flight: wait for the verdict before sending it.
    Wait,
    /// Refuse it: it is quarantined.
    Refused(Conviction),
}

/// The quarantine's suspects and convictions; see the module docs.
#[derive(Clone, Debug)]
pub struct PoisonTracker {
    threshold: u32,
    ttl: Duration,
    suspects: Recency<Suspicion>,
    convicted: Recency<Conviction>,
    clock: u64,
}

impl PoisonTracker {
    /// Fingerprints kept in each table (suspects, convictions) unless told otherwise.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// The default number of hangs that put a request on trial.
    pub const DEFAULT_THRESHOLD: u32 = 2;

    /// How long a conviction lasts unless told otherwise: 10 minutes.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

    /// A tracker that puts a fingerprint on trial after `threshold` hangs (0 acts as 1), with
    /// convictions of [`DEFAULT_TTL`](Self::DEFAULT_TTL) and at most
    /// [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) entries per table.
    #[must_use]
    pub fn new(threshold: u32) -> Self {
        PoisonTracker::with_capacity(threshold, Self::DEFAULT_CAPACITY)
    }

    /// Like [`new`](Self::new) with an explicit bound per table (0 acts as 1).
    #[must_use]
    pub fn with_capacity(threshold: u32, capacity: usize) -> Self {
        PoisonTracker {
            threshold: threshold.max(1),
            ttl: Self::DEFAULT_TTL,
            suspects: Recency::new(capacity),
            convicted: Recency::new(capacity),
            clock: 0,
        }
    }

    /// The same tracker with convictions lasting `ttl`.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn tick(&mut self) -> u64 {
        self.clock = self.clock.saturating_add(1);
        self.clock
    }

    fn convict(&mut self, fp: Fingerprint, now: Duration, hangs: u32) {
        let stamp = self.tick();
        self.suspects.remove(fp);
        self.convicted.put(
            fp,
            Conviction {
                since: now,
                hangs,
                expires: now.saturating_add(self.ttl),
            },
            stamp,
        );
    }

    /// A hang happened at `now` while the `suspects` were in flight (duplicates count once);
    /// `on_trial` is the fingerprint whose trial request was in flight, if any. Returns the
    /// fingerprints this hang convicted, in ascending order. The rules are in the module docs.
    pub fn on_hang(
        &mut self,
        now: Duration,
        suspects: &[Fingerprint],
        on_trial: Option<Fingerprint>,
    ) -> Vec<Fingerprint> {
        let mut present: Vec<Fingerprint> = suspects.iter().copied().chain(on_trial).collect();
        present.sort_unstable();
        present.dedup();
        let mut newly = Vec::new();
        for fp in present {
            let stamp = self.tick();
            if let Some(&record) = self.convicted.get(fp) {
                let hangs = record.hangs.saturating_add(1);
                if now < record.expires {
                    // Still quarantined (a request that slipped through before the verdict).
                    self.convicted
                        .put(fp, Conviction { hangs, ..record }, stamp);
                } else {
                    // Convicted before, hangs again after its quarantine: convicted again at once.
                    self.convict(fp, now, hangs);
                    newly.push(fp);
                }
                continue;
            }
            let before = self.suspects.get(fp).copied().unwrap_or(Suspicion {
                strikes: 0,
                on_trial: false,
            });
            let strikes = before.strikes.saturating_add(1);
            if on_trial == Some(fp) && before.on_trial {
                self.convict(fp, now, strikes);
                newly.push(fp);
            } else {
                let suspicion = Suspicion {
                    strikes,
                    on_trial: before.on_trial || strikes >= self.threshold,
                };
                self.suspects.put(fp, suspicion, stamp);
            }
        }
        newly
    }

    /// A request with `fp` was answered in full: it is not poison. Its suspicion is wiped, and
    /// so is the record of a conviction (one that expired, since a quarantined request is not
    /// sent). Returns whether anything changed.
    pub fn on_success(&mut self, fp: Fingerprint) -> bool {
        let suspected = self.suspects.remove(fp).is_some();
        let convicted = self.convicted.remove(fp).is_some();
        suspected || convicted
    }

    /// What to do with a request of `fp` at `now`; `trial_in_flight` says whether a trial
    /// request (of any fingerprint) is in flight.
    #[must_use]
    pub fn admit(&self, fp: Fingerprint, now: Duration, trial_in_flight: bool) -> Admission {
        if let Some(&record) = self.convicted.get(fp) {
            return if now < record.expires {
                Admission::Refused(record)
            } else if trial_in_flight {
                // Convicted before: a known offender is held back like a suspect.
                Admission::Wait
            } else {
                Admission::Go
            };
        }
        match self.suspects.get(fp) {
            Some(suspicion) if suspicion.on_trial => Admission::Trial,
            // A suspect could hang the server during another's trial and convict the wrong one.
            Some(_) if trial_in_flight => Admission::Wait,
            _ => Admission::Go,
        }
    }

    /// Whether a trial may start while `in_flight` are the requests in flight: none of them is a
    /// suspect or a fingerprint convicted before, so that a hang during the trial can only be
    /// the trial's doing, or a fault no suspect explains.
    pub fn may_start_trial(&self, mut in_flight: impl Iterator<Item = Fingerprint>) -> bool {
        in_flight.all(|fp| self.suspects.get(fp).is_none() && self.convicted.get(fp).is_none())
    }

    /// Lifts the quarantine of `fp` and forgets its record (an operator's decision); returns
    /// whether it was quarantined.
    pub fn release(&mut self, fp: Fingerprint) -> bool {
        self.convicted.remove(fp).is_some()
    }

    /// Lifts every quarantine and forgets every suspicion (an operator's decision); returns how
    /// many fingerprints were quarantined at `now`.
    pub fn release_all(&mut self, now: Duration) -> usize {
        let active = self.quarantined_count(now);
        self.convicted.clear();
        self.suspects.clear();
        active
    }

    /// Whether `fp` must be refused at `now`.
    #[must_use]
    pub fn is_quarantined(&self, fp: Fingerprint, now: Duration) -> bool {
        matches!(self.admit(fp, now, false), Admission::Refused(_))
    }

    /// Whether `fp` is on trial.
    #[must_use]
    pub fn is_on_trial(&self, fp: Fingerprint) -> bool {
        self.suspects.get(fp).is_some_and(|s| s.on_trial)
    }

    /// Hangs `fp` was present at since its last success (0 if unknown or forgotten).
    #[must_use]
    pub fn strikes(&self, fp: Fingerprint) -> u32 {
        match (self.convicted.get(fp), self.suspects.get(fp)) {
            (Some(record), _) => record.hangs,
            (None, Some(suspicion)) => suspicion.strikes,
            (None, None) => 0,
        }
    }

    /// The convictions in force at `now`, by fingerprint.
    pub fn convictions(
        &self,
        now: Duration,
    ) -> impl Iterator<Item = (Fingerprint, Conviction)> + '_ {
        self.convicted
            .iter()
            .filter(move |(_, record)| now < record.expires)
            .map(|(fp, record)| (fp, *record))
    }

    /// How many fingerprints are quarantined at `now`.
    #[must_use]
    pub fn quarantined_count(&self, now: Duration) -> usize {
        self.convictions(now).count()
    }

    /// How many fingerprints are suspected now (bounded by the capacity).
    #[must_use]
    pub fn suspect_count(&self) -> usize {
        self.suspects.len()
    }

    /// How many conviction records are kept, expired ones included (bounded by the capacity).
    #[must_use]
    pub fn record_count(&self) -> usize {
        self.convicted.len()
    }

    /// Whether the tracker holds nothing at all (no suspect, no conviction record).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.suspects.len() == 0 && self.convicted.len() == 0
    }

    /// The hangs that put a request on trial.
    #[must_use]
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// How long a conviction lasts.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
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

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_repeat_suspect_goes_on_trial_and_its_trial_hang_convicts_it() {
        let mut t = PoisonTracker::new(2);
        assert!(t.on_hang(s(1), &[A, B], None).is_empty());
        assert_eq!(t.strikes(A), 1);
        assert_eq!(t.admit(A, s(1), false), Admission::Go);
        // A success of B's fingerprint (any client) clears it.
        assert!(t.on_success(B));
        assert!(t.on_hang(s(2), &[A, B], None).is_empty());
        assert_eq!(t.admit(A, s(2), false), Admission::Trial);
        assert_eq!(t.admit(B, s(2), false), Admission::Go, "B has one strike");
        // A hang while A's trial request is in flight: convicted.
        assert_eq!(t.on_hang(s(3), &[A, B], Some(A)), [A]);
        assert_eq!(
            t.admit(A, s(4), false),
            Admission::Refused(Conviction {
                since: s(3),
                hangs: 3,
                expires: s(603)
            })
        );
        assert_eq!(t.quarantined_count(s(4)), 1);
        assert!(!t.is_quarantined(B, s(4)));
    }

    #[test]
    fn a_trial_success_acquits_and_a_hang_without_the_trial_in_flight_convicts_no_one() {
        let mut t = PoisonTracker::new(1);
        t.on_hang(s(1), &[A], None);
        assert!(t.is_on_trial(A));
        // A hang while another request was on trial, A present but not its trial: no conviction.
        assert!(t.on_hang(s(2), &[A], Some(B)).is_empty());
        assert!(t.is_on_trial(A));
        assert!(t.on_success(A));
        assert_eq!(t.admit(A, s(3), false), Admission::Go);
        assert_eq!(t.strikes(A), 0);
    }

    #[test]
    fn a_conviction_expires_and_is_renewed_at_the_first_hang_after_it() {
        let mut t = PoisonTracker::new(1).with_ttl(s(10));
        t.on_hang(s(0), &[A], None);
        assert_eq!(t.on_hang(s(1), &[], Some(A)), [A]);
        assert!(t.is_quarantined(A, s(10)));
        assert!(!t.is_quarantined(A, s(11)));
        assert_eq!(
            t.admit(A, s(11), false),
            Admission::Go,
            "tried again after the TTL"
        );
        assert_eq!(t.on_hang(s(12), &[A], None), [A], "no new trial");
        assert!(t.is_quarantined(A, s(13)));
        // A success after expiry forgets the record.
        assert!(t.on_success(A) || !t.is_quarantined(A, s(30)));
    }

    #[test]
    fn release_lifts_and_forgets() {
        let mut t = PoisonTracker::new(1);
        t.on_hang(s(0), &[A, B], None);
        t.on_hang(s(1), &[], Some(A));
        assert_eq!(t.release_all(s(2)), 1);
        assert!(t.is_empty());
        assert_eq!(t.admit(A, s(2), false), Admission::Go);
        t.on_hang(s(3), &[B], None);
        t.on_hang(s(4), &[], Some(B));
        assert!(t.release(B));
        assert!(!t.release(B));
    }

    #[test]
    fn duplicates_in_one_hang_count_once_and_zero_threshold_acts_as_one() {
        let mut t = PoisonTracker::new(3);
        t.on_hang(s(0), &[A, A, A], None);
        assert_eq!(t.strikes(A), 1);
        let t = PoisonTracker::new(0);
        assert_eq!(t.threshold(), 1);
    }

    #[test]
    fn memory_is_bounded_by_evicting_the_oldest() {
        let mut t = PoisonTracker::with_capacity(5, 3);
        for i in 0..10 {
            t.on_hang(s(i), &[Fingerprint(i)], None);
        }
        assert_eq!(t.suspects.len(), 3);
        assert_eq!(t.strikes(Fingerprint(0)), 0);
        assert_eq!(t.strikes(Fingerprint(9)), 1);
        let mut t = PoisonTracker::with_capacity(1, 2);
        for fp in [1, 2, 3] {
            t.on_hang(s(0), &[Fingerprint(fp)], None);
            t.on_hang(s(1), &[], Some(Fingerprint(fp)));
        }
        // 1 was convicted longest ago and is forgotten.
        assert!(!t.is_quarantined(Fingerprint(1), s(2)));
        assert!(t.is_quarantined(Fingerprint(2), s(2)));
        assert!(t.is_quarantined(Fingerprint(3), s(2)));
    }
}
