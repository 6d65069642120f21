//! How much work the proxy takes on, so that every connection it accepts can be answered.
//!
//! Each forwarded request holds two descriptors (the client's connection and one towards the
//! model server); a connection that is only being answered holds one. When descriptors run out,
//! `accept` fails and actix-server pauses accepting, and, worse, the connection towards the model
//! server fails with "Too many open files", which a client would see as a 502 from a healthy
//! server. So the proxy spends its descriptors by a budget drawn from the open-file limit:
//!
//! - a reserve for everything else (event loops, the child's pipes, health probes, logs),
//! - client connections, per worker (past it actix-server stops accepting and the kernel queues
//!   the rest in the listen backlog; `/respawn/status` keeps getting through as connections end),
//! - forwarded requests, per worker (past it a request is refused at once with a 503
//!   `server_overloaded`, `Retry-After` and `Connection: close`, which frees its descriptor).
//!
//! The forward budget is per worker rather than shared: each worker's pool of connections towards
//! the model server then never holds more than that worker's share, idle ones included, and the
//! count is a plain `Cell` on the worker's own thread.

use std::cell::Cell;
use std::rc::Rc;

/// Descriptors kept out of the budget for everything that is not a client or its upstream
/// connection, at least; a sixteenth of the limit when that is more.
pub const MIN_RESERVE: u64 = 64;

/// How many connections and forwarded requests each worker takes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Client connections open at once on one worker; the kernel queues the rest.
    pub connections_per_worker: usize,
    /// Requests forwarded at once by one worker; the rest are refused with 503.
    pub forwards_per_worker: usize,
}

impl Admission {
    /// The budget for an open-file limit of `limit` descriptors shared by `workers` workers.
    ///
    /// After the reserve, a third of the descriptors go to forwarded requests' upstream
    /// connections and two thirds to client connections, so that there is always room to accept a
    /// connection and refuse it (or serve `/respawn/status` on it) while every forward slot is
    /// taken. A limit of 256 with 2 workers gives 64 connections and 32 forwards per worker.
    pub fn for_open_files(limit: u64, workers: usize) -> Self {
        let workers = workers.max(1) as u64;
        let reserve = (limit / 16).max(MIN_RESERVE);
        let usable = limit.saturating_sub(reserve);
        let forwards = usable / 3;
        let connections = usable - forwards;
        let per_worker = |n: u64| usize::try_from((n / workers).max(1)).unwrap_or(usize::MAX);
        Admission {
            connections_per_worker: per_worker(connections),
            forwards_per_worker: per_worker(forwards),
        }
    }

    /// No budget beyond actix-web's defaults (for embedders that manage descriptors themselves).
    pub fn unbounded() -> Self {
        Admission {
            connections_per_worker: 25_000,
            forwards_per_worker: usize::MAX,
        }
    }
}

/// One worker's count of requests it is forwarding (not `Send`: it lives on the worker's thread).
#[derive(Clone, Debug)]
pub struct ForwardSlots {
    taken: Rc<Cell<usize>>,
    capacity: usize,
}

impl ForwardSlots {
    /// A worker's slots.
    pub fn new(capacity: usize) -> Self {
        Self {
            taken: Rc::new(Cell::new(0)),
            capacity,
        }
    }

    /// A slot for one request, or `None` when every slot is taken.
    pub fn try_take(&self) -> Option<ForwardSlot> {
        let taken = self.taken.get();
        if taken >= self.capacity {
            return None;
        }
        self.taken.set(taken + 1);
        Some(ForwardSlot {
            taken: Rc::clone(&self.taken),
        })
    }

    /// How many slots there are.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many are taken now.
    pub fn taken(&self) -> usize {
        self.taken.get()
    }
}

/// A request's claim on a forward slot, given back when dropped (when its answer has ended).
#[derive(Debug)]
pub struct ForwardSlot {
    taken: Rc<Cell<usize>>,
}

impl Drop for ForwardSlot {
    fn drop(&mut self) {
        self.taken.set(self.taken.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_limit_leaves_a_reserve_and_room_to_refuse() {
        let admission = Admission::for_open_files(256, 2);
        assert_eq!(admission.connections_per_worker, 64);
        assert_eq!(admission.forwards_per_worker, 32);
        let spent = 2 * (admission.connections_per_worker + admission.forwards_per_worker) as u64;
        assert!(spent + MIN_RESERVE <= 256, "{spent}");
        assert!(admission.connections_per_worker > admission.forwards_per_worker);
    }

    #[test]
    fn budgets_never_exceed_the_limit_and_never_reach_zero() {
        for limit in [0, 1, 64, 100, 256, 1024, 20_000, 1 << 20] {
            for workers in [1, 2, 8, 64] {
                let a = Admission::for_open_files(limit, workers);
                assert!(a.connections_per_worker >= 1 && a.forwards_per_worker >= 1);
                if limit >= 1024 {
                    let spent =
                        workers as u64 * (a.connections_per_worker + a.forwards_per_worker) as u64;
                    assert!(
                        spent <= limit - (limit / 16).max(MIN_RESERVE),
                        "{limit} {workers}"
                    );
                }
            }
        }
    }

    #[test]
    fn slots_are_given_back_when_dropped() {
        let slots = ForwardSlots::new(2);
        let a = slots.try_take().expect("first");
        let b = slots.try_take().expect("second");
        assert!(slots.try_take().is_none(), "only two");
        assert_eq!(slots.taken(), 2);
        drop(a);
        let c = slots.try_take().expect("one given back");
        drop((b, c));
        assert_eq!(slots.taken(), 0);
    }
}
