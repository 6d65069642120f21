//! A replica's place in a pool, as its supervisor and coordinator need it (the pool itself is
//! [`crate::pool`], which builds on supervisors and so cannot be imported by them).

use std::sync::Arc;
use std::time::Duration;

use crate::quarantine::PoolQuarantine;

/// A replica's place in a pool, as its coordinator needs it: the shared table, and its index.
#[derive(Clone, Debug)]
pub struct PoolMember {
    /// The pool's one quarantine table.
    pub quarantine: Arc<PoolQuarantine>,
    /// This replica's index.
    pub replica: usize,
    /// How long after its supervisor starts its server is first started (a staggered start:
    /// the pool's listener is up meanwhile, and requests wait as during any start).
    pub start_after: Duration,
}
