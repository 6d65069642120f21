//! Which replica of a pool takes a request: the routing decision, with no lock and no I/O.
//!
//! A pool runs N supervised servers behind one address. Each replica publishes its
//! [`Snapshot`](crate::Snapshot) in one atomic word and counts its requests in flight in
//! another; the shell loads those words into one [`ReplicaView`] per replica and asks [`route`].
//! Rules, in the order they apply:
//!
//! 1. **Only a ready replica takes requests.** A replica that is starting, hung (its restart
//!    under way), restarting, backing off, given up, stopping, or held out of rotation for a
//!    rolling restart ([`ReplicaView::routable`] is `false`) receives nothing.
//! 2. **Not where it already failed**, when it can be helped: a replica in the request's
//!    [`ReplicaSet`] of failures is taken only when no other replica is ready (with one replica,
//!    a 5xx is retried where it came from, as a lone server would be).
//! 3. **The fewest in flight**: a model server's batch slots are its capacity, so the replica
//!    with the fewest requests open finishes a new one soonest.
//! 4. **Ties go round robin** from a cursor the caller advances for every request: with light
//!    traffic (every replica at zero) the lowest index would take everything, leaving the others
//!    cold and their hangs found only by their probes; rotating keeps every replica exercised.
//! 5. **None ready: wait** ([`Route::Wait`]), as a request waits for a lone server's restart.

/// What the router knows of one replica at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaView {
    /// Ready and in rotation: its generation answers, and no rolling restart holds it out.
    pub routable: bool,
    /// Requests open on it now.
    pub in_flight: u32,
}

/// A set of replica indices (0..64): the replicas a request already failed on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaSet(u64);

impl ReplicaSet {
    /// The largest pool a set can describe.
    pub const CAPACITY: usize = 64;

    /// The empty set.
    #[must_use]
    pub const fn new() -> Self {
        ReplicaSet(0)
    }

    /// Adds replica `index` (indices past [`CAPACITY`](Self::CAPACITY) are ignored).
    pub fn insert(&mut self, index: usize) {
        if index < Self::CAPACITY {
            self.0 |= 1 << index;
        }
    }

    /// Whether replica `index` is in the set.
    #[must_use]
    pub const fn contains(self, index: usize) -> bool {
        index < Self::CAPACITY && self.0 & (1 << index) != 0
    }

    /// Whether the set is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Send it to this replica.
    Send(usize),
    /// No replica is ready: wait until one is.
    Wait,
}

/// Picks the replica for a request; see the module docs for the rules. `views` are the
/// replicas in index order; `failed` the ones the request already failed on; `cursor` any
/// number that moves between requests (ties go to the first replica at or after
/// `cursor % views.len()`).
#[must_use]
pub fn route(views: &[ReplicaView], failed: ReplicaSet, cursor: usize) -> Route {
    let n = views.len();
    if n == 0 {
        return Route::Wait;
    }
    let start = cursor % n;
    // (avoided, in flight, distance from the cursor): the smallest wins.
    let mut best: Option<(bool, u32, usize, usize)> = None;
    for offset in 0..n {
        let index = (start + offset) % n;
        let view = views[index];
        if !view.routable {
            continue;
        }
        let key = (failed.contains(index), view.in_flight, offset, index);
        let better = match best {
            None => true,
            Some(b) => (key.0, key.1, key.2) < (b.0, b.1, b.2),
        };
        if better {
            best = Some(key);
        }
    }
    match best {
        Some((_, _, _, index)) => Route::Send(index),
        None => Route::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(in_flight: u32) -> ReplicaView {
        ReplicaView {
            routable: true,
            in_flight,
        }
    }

    const DOWN: ReplicaView = ReplicaView {
        routable: false,
        in_flight: 0,
    };

    #[test]
    fn the_least_loaded_ready_replica_takes_the_request() {
        let views = [ready(3), ready(1), ready(2)];
        assert_eq!(route(&views, ReplicaSet::new(), 0), Route::Send(1));
    }

    #[test]
    fn a_replica_that_is_not_ready_receives_nothing_however_idle() {
        let views = [DOWN, ready(7)];
        assert_eq!(route(&views, ReplicaSet::new(), 0), Route::Send(1));
        assert_eq!(route(&[DOWN, DOWN], ReplicaSet::new(), 0), Route::Wait);
        assert_eq!(route(&[], ReplicaSet::new(), 0), Route::Wait);
    }

    #[test]
    fn a_request_goes_elsewhere_than_where_it_failed_unless_nothing_else_is_ready() {
        let mut failed = ReplicaSet::new();
        failed.insert(0);
        assert_eq!(route(&[ready(0), ready(5)], failed, 0), Route::Send(1));
        assert_eq!(route(&[ready(0), DOWN], failed, 0), Route::Send(0));
        assert_eq!(route(&[ready(0)], failed, 0), Route::Send(0));
    }

    #[test]
    fn ties_rotate_with_the_cursor() {
        let views = [ready(0), ready(0), ready(0)];
        let picks: [Route; 4] =
            core::array::from_fn(|cursor| route(&views, ReplicaSet::new(), cursor));
        assert_eq!(
            picks,
            [
                Route::Send(0),
                Route::Send(1),
                Route::Send(2),
                Route::Send(0)
            ]
        );
    }

    #[test]
    fn the_set_ignores_indices_past_its_capacity() {
        let mut set = ReplicaSet::new();
        set.insert(64);
        assert!(set.is_empty());
        set.insert(63);
        assert!(set.contains(63) && !set.contains(64));
    }
}
