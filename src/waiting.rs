//! The requests waiting for a ready generation, bounded in count, in held body bytes and in time.
//!
//! While the model server starts or restarts (a vLLM restart takes minutes), every request that
//! arrives waits for the next ready generation, holding its client's connection and its body, so
//! that it can be sent the moment the server answers again. Unbounded, that queue grows with the
//! traffic for as long as the restart lasts: memory, descriptors, and clients that wait minutes
//! for an answer they would rather get elsewhere. So a request may wait only while fewer than
//! [`WaitLimits::max_requests`] others wait, while the bodies held by the waiting requests stay
//! within [`WaitLimits::max_bytes`], and for at most the upstream's wait bound; past any of
//! these it is refused at once (the proxy answers 503 with `Retry-After`).
//!
//! A request takes a place only when it has to wait: a ready server costs the request path
//! nothing here (its check is the snapshot's one atomic load). Taking a place is two
//! compare-and-swap loops on shared atomics, no lock; the place is given back when its
//! [`WaitingPlace`] is dropped, on every path (ready, refused, timed out, client gone).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How many requests may wait for a ready generation, and how many body bytes they may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitLimits {
    /// Requests waiting at once; past it a request is refused. `0`: none waits, every request
    /// that finds the server not ready is refused at once.
    pub max_requests: usize,
    /// Body bytes held by the waiting requests together; a request whose body would take the sum
    /// past it is refused.
    pub max_bytes: u64,
    /// How long a request may wait in all (`None`: as long as a restart may take, the start-up
    /// timeout plus the stop grace and a margin).
    pub max_time: Option<Duration>,
}

impl WaitLimits {
    /// The default count: four times the 256 sequences vLLM runs at once by default, so that the
    /// requests of a busy server's restart are all served after it, in a few batches.
    pub const DEFAULT_MAX_REQUESTS: usize = 1024;
    /// The default byte bound, 256 MiB: a thousand chat requests of 256 KiB, or four of the
    /// largest bodies the proxy takes by default.
    pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
}

impl Default for WaitLimits {
    fn default() -> Self {
        Self {
            max_requests: Self::DEFAULT_MAX_REQUESTS,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_time: None,
        }
    }
}

/// Which bound refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitBound {
    /// As many requests as allowed were waiting.
    Requests,
    /// Its body would take the waiting requests' bytes past the bound.
    Bytes,
    /// It waited as long as allowed.
    Time,
}

impl WaitBound {
    /// Every bound, in label order.
    pub const ALL: [WaitBound; 3] = [WaitBound::Requests, WaitBound::Bytes, WaitBound::Time];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            WaitBound::Requests => "requests",
            WaitBound::Bytes => "bytes",
            WaitBound::Time => "time",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The waiting requests of one supervisor: their count, their bytes, and the refusals so far.
#[derive(Debug, Default)]
pub struct Waiting {
    limits: WaitLimits,
    requests: AtomicUsize,
    bytes: AtomicU64,
    refused: [AtomicU64; WaitBound::ALL.len()],
}

impl Waiting {
    /// No request waiting, within `limits`.
    pub fn new(limits: WaitLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            ..Self::default()
        })
    }

    /// The bounds.
    pub fn limits(&self) -> WaitLimits {
        self.limits
    }

    /// A place for a request holding `bytes` of body, or the bound that refuses it (the refusal
    /// is counted).
    pub fn try_enter(self: &Arc<Self>, bytes: u64) -> Result<WaitingPlace, WaitBound> {
        let max_requests = self.limits.max_requests;
        let counted = self
            .requests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_requests).then_some(n + 1)
            });
        if counted.is_err() {
            self.refuse(WaitBound::Requests);
            return Err(WaitBound::Requests);
        }
        let max_bytes = self.limits.max_bytes;
        let held = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |sum| {
                sum.checked_add(bytes).filter(|total| *total <= max_bytes)
            });
        if held.is_err() {
            self.requests.fetch_sub(1, Ordering::AcqRel);
            self.refuse(WaitBound::Bytes);
            return Err(WaitBound::Bytes);
        }
        Ok(WaitingPlace {
            waiting: Arc::clone(self),
            bytes,
        })
    }

    /// Counts a refusal by `bound` (the time bound is found by the waiter, not here).
    pub fn refuse(&self, bound: WaitBound) {
        self.refused[bound.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests waiting now.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }

    /// Body bytes the waiting requests hold now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Requests refused by `bound` so far.
    pub fn refused(&self, bound: WaitBound) -> u64 {
        self.refused[bound.index()].load(Ordering::Relaxed)
    }
}

/// One request's place among the waiting ones, given back when dropped.
#[derive(Debug)]
pub struct WaitingPlace {
    waiting: Arc<Waiting>,
    bytes: u64,
}

impl Drop for WaitingPlace {
    fn drop(&mut self) {
        self.waiting.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.waiting.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_requests: usize, max_bytes: u64) -> WaitLimits {
        WaitLimits {
            max_requests,
            max_bytes,
            max_time: None,
        }
    }

    #[test]
    fn the_request_past_the_count_is_refused_until_a_place_is_given_back() {
        let waiting = Waiting::new(limits(2, 1000));
        let a = waiting.try_enter(10).expect("first");
        let _b = waiting.try_enter(10).expect("second");
        assert_eq!(waiting.try_enter(0).err(), Some(WaitBound::Requests));
        assert_eq!(waiting.refused(WaitBound::Requests), 1);
        drop(a);
        assert_eq!(waiting.requests(), 1);
        assert_eq!(waiting.bytes(), 10);
        let _c = waiting.try_enter(10).expect("a place was given back");
    }

    #[test]
    fn the_body_past_the_bytes_is_refused_and_leaves_no_trace() {
        let waiting = Waiting::new(limits(10, 1000));
        let _a = waiting.try_enter(600).expect("first");
        assert_eq!(waiting.try_enter(600).err(), Some(WaitBound::Bytes));
        assert_eq!(waiting.requests(), 1, "the refused one is not counted");
        assert_eq!(waiting.bytes(), 600);
        let _b = waiting.try_enter(400).expect("what still fits");
        assert_eq!(waiting.bytes(), 1000);
        assert_eq!(waiting.refused(WaitBound::Bytes), 1);
        assert_eq!(waiting.refused(WaitBound::Requests), 0);
    }

    #[test]
    fn no_place_at_all_refuses_every_request() {
        let waiting = Waiting::new(limits(0, 1000));
        assert_eq!(waiting.try_enter(0).err(), Some(WaitBound::Requests));
    }

    #[test]
    fn places_taken_and_given_back_from_many_threads_balance_to_zero() {
        let waiting = Waiting::new(limits(8, 80));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let waiting = Arc::clone(&waiting);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if let Ok(place) = waiting.try_enter(10) {
                            assert!(waiting.requests() <= 8);
                            assert!(waiting.bytes() <= 80);
                            drop(place);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a thread");
        }
        assert_eq!((waiting.requests(), waiting.bytes()), (0, 0));
    }
}
