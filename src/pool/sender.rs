//! A worker's sender towards a pool: picks a replica for each attempt with the core's
//! [`route`], and retries a request caught by one replica's hang on another ready replica at
//! once, instead of after that replica's restart.
//!
//! The hot path reads two atomic words per replica (its snapshot and its count of requests in
//! flight) and one shared cursor; it takes no lock and hops to no actor. Each replica keeps its
//! own [`Upstream`] (its own awc client and request plan rules), so everything a lone server does
//! per attempt (deadlines, hang reports, the check that an answer did not begin after its
//! generation's restart began) holds per replica unchanged. The quarantine is the pool's one
//! table ([`PoolQuarantine`](crate::quarantine::PoolQuarantine)), read through every replica's
//! sender: a hang a request meets is counted there before the request moves to another replica
//! ([`Upstream::after_failure_counted`]), so a poison request's strikes add up across replicas
//! and, once on trial, it waits for the verdict instead of wedging the next replica.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use respawn_core::{
    route, AttemptOutcome, Fingerprint, Generation, Phase, ReplicaSet, ReplicaView, RequestPlan,
    Route,
};
use tokio::sync::watch;
use tracing::debug;

use crate::state::{SupervisorState, WaitError};
use crate::upstream::{CallError, Delivered, Identity, Outgoing, Upstream};
use crate::waiting::WaitBound;

/// What every worker's [`PoolUpstream`] shares: the round-robin cursor, which replicas a rolling
/// restart holds out of rotation, and the replicas' published states (to wait on).
#[derive(Debug)]
pub struct PoolShared {
    pub(crate) cursor: AtomicUsize,
    pub(crate) held_out: Vec<AtomicBool>,
    pub(crate) states: Vec<watch::Receiver<SupervisorState>>,
    pub(crate) wait_bound: Duration,
}

impl PoolShared {
    /// Whether replica `index` is held out of rotation (a rolling restart is draining it).
    pub fn is_held_out(&self, index: usize) -> bool {
        self.held_out
            .get(index)
            .is_some_and(|flag| flag.load(Ordering::Acquire))
    }
}

/// One worker's sender towards every replica of a pool.
#[derive(Clone)]
pub struct PoolUpstream {
    replicas: Vec<Upstream>,
    shared: Arc<PoolShared>,
}

/// A request answered by a pool: the answer, the replica that gave it, and the request's place in
/// that replica's tables (which must live as long as the answer's body).
pub struct PoolDelivery {
    /// The answer.
    pub delivered: Delivered,
    /// Which replica answered.
    pub replica: usize,
    /// The sender of that replica.
    pub upstream: Upstream,
    /// The request as that replica knows it (in flight, maybe on trial).
    pub identity: Identity,
}

impl PoolUpstream {
    /// A sender for this worker over `replicas` (one [`Upstream`] each, in index order).
    pub fn new(replicas: Vec<Upstream>, shared: Arc<PoolShared>) -> Self {
        Self { replicas, shared }
    }

    /// The sender of replica 0: counters kept before a replica is chosen land there.
    pub fn front(&self) -> Option<&Upstream> {
        self.replicas.first()
    }

    /// A plan for a new request (every replica shares the same request settings).
    pub fn plan(&self) -> Option<RequestPlan> {
        self.front().map(Upstream::plan)
    }

    /// The route for one attempt now, given the generation each replica must have reached.
    fn route_now(&self, want: &[Generation], failed: ReplicaSet) -> Route {
        let mut views = [ReplicaView {
            routable: false,
            in_flight: 0,
        }; ReplicaSet::CAPACITY];
        let n = self.replicas.len().min(ReplicaSet::CAPACITY);
        for (index, upstream) in self.replicas.iter().take(n).enumerate() {
            let shared = upstream.shared();
            let want = want.get(index).copied().unwrap_or(Generation::NONE);
            views[index] = ReplicaView {
                routable: !self.shared.is_held_out(index) && shared.snapshot.load().ready_for(want),
                in_flight: u32::try_from(shared.in_flight.count()).unwrap_or(u32::MAX),
            };
        }
        let cursor = self.shared.cursor.fetch_add(1, Ordering::Relaxed);
        route(&views[..n], failed, cursor)
    }

    /// Whether a replica other than `index` is ready and in rotation now.
    fn ready_elsewhere(&self, index: usize, want: &[Generation]) -> bool {
        self.replicas.iter().enumerate().any(|(other, upstream)| {
            other != index
                && !self.shared.is_held_out(other)
                && upstream
                    .shared()
                    .snapshot
                    .load()
                    .ready_for(want.get(other).copied().unwrap_or(Generation::NONE))
        })
    }

    /// The replica for the next attempt: at once when one is ready (two atomic loads per
    /// replica); otherwise waits, within the wait bound, until one is, and fails at once when
    /// every replica has been given up or is stopping.
    ///
    /// A request that waits holds `bytes` of body among the pool's waiting requests (one count
    /// for the pool, kept by replica 0's [`Waiting`](crate::waiting::Waiting), as the requests
    /// refused before a replica is chosen are), and is refused at once when that would pass
    /// their bounds (`--max-waiting`, `--max-waiting-bytes`), or once it waited `--max-wait-time`.
    async fn pick(
        &self,
        want: &[Generation],
        failed: ReplicaSet,
        bytes: u64,
    ) -> Result<usize, CallError> {
        if let Route::Send(index) = self.route_now(want, failed) {
            return Ok(index);
        }
        let waiting = self
            .front()
            .map(|front| Arc::clone(front.shared().metrics.waiting()));
        let _place = match &waiting {
            Some(waiting) => Some(waiting.try_enter(bytes).map_err(|bound| {
                let limits = waiting.limits();
                let limit = match bound {
                    WaitBound::Requests => u64::try_from(limits.max_requests).unwrap_or(u64::MAX),
                    WaitBound::Bytes | WaitBound::Time => limits.max_bytes,
                };
                debug!(
                    bound = bound.as_str(),
                    limit, "no replica is ready and the request cannot wait for one: refused"
                );
                CallError::from(WaitError::Full { bound, limit })
            })?),
            None => None,
        };
        let bound = self.shared.wait_bound;
        // Running time: a pause of the machine is not time waited (crate::clock).
        let began = crate::clock::Clock::new();
        let mut states = self.shared.states.clone();
        loop {
            for state in &mut states {
                state.borrow_and_update();
            }
            if let Route::Send(index) = self.route_now(want, failed) {
                return Ok(index);
            }
            if let Some(err) = none_left(&states) {
                return Err(err.into());
            }
            let waited = began.now();
            if waited >= bound {
                if let Some(waiting) = &waiting {
                    waiting.refuse(WaitBound::Time);
                }
                return Err(WaitError::TimedOut { waited }.into());
            }
            // A replica's state change wakes us; a rolling restart's hold is lifted without one,
            // so look again at least every 100 ms.
            let changes = states.iter_mut().map(|state| Box::pin(state.changed()));
            let look_again = Duration::from_millis(100).min(bound - waited);
            let _ =
                tokio::time::timeout(look_again, futures_util::future::select_all(changes)).await;
        }
    }

    /// Sends `out` until its head and first chunk arrive, choosing a replica for each attempt.
    /// A hang caught on one replica moves the request to another ready one at once (that
    /// replica's generation is marked as needed again only once it restarted); a 5xx or a
    /// broken connection goes elsewhere when another replica is ready.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the attempt in progress.
    pub async fn deliver(
        &self,
        out: &Outgoing,
        fingerprint: Fingerprint,
        plan: &mut RequestPlan,
    ) -> Result<PoolDelivery, CallError> {
        let from = Attempted {
            want: vec![Generation::NONE; self.replicas.len()],
            failed: ReplicaSet::new(),
            current: None,
        };
        self.deliver_from(out, fingerprint, plan, from).await
    }

    /// Carries out the plan's decision after a stream served by `cut.replica` was cut with
    /// `outcome` and judged resumable: the hang is acknowledged (counted in the pool's
    /// quarantine before the continuation goes anywhere), and the replica it was cut on is left
    /// out of the continuation's choice (it may still look ready until its coordinator acts).
    /// Answers where the continuation stands, for [`continuation_replica`](Self::continuation_replica)
    /// and [`deliver_continuation`](Self::deliver_continuation).
    pub async fn after_cut(
        &self,
        plan: &mut RequestPlan,
        outcome: AttemptOutcome,
        cut: PoolCut,
    ) -> Result<Attempted, CallError> {
        let n = self.replicas.len();
        let mut want = vec![Generation::NONE; n];
        let upstream = self.replica(cut.replica)?;
        let mut state = None;
        let elsewhere = self.ready_elsewhere(cut.replica, &want);
        want[cut.replica] = upstream
            .after_cut_counted(plan, outcome, &mut state, elsewhere)
            .await?;
        let mut failed = ReplicaSet::new();
        failed.insert(cut.replica);
        Ok(Attempted {
            want,
            failed,
            current: Some((cut.replica, cut.identity)),
        })
    }

    /// The sender of the replica a continuation would go to: the least loaded ready replica
    /// other than the one the stream was cut on (that one only once its next generation is
    /// ready, when no other is), waiting as any request does when none is ready. The
    /// continuation is built with that replica's tokenizer. When it is another replica, the
    /// request's place on the one it was cut on ends now.
    pub async fn continuation_replica(
        &self,
        from: &mut Attempted,
        bytes: u64,
    ) -> Result<&Upstream, CallError> {
        let index = self.pick(&from.want, from.failed, bytes).await?;
        if from
            .current
            .as_ref()
            .is_some_and(|(held, _)| *held != index)
        {
            from.current = None;
        }
        self.replica(index)
    }

    /// The sender of replica `index` (always one: indices come from this pool).
    fn replica(&self, index: usize) -> Result<&Upstream, CallError> {
        self.replicas.get(index).ok_or_else(|| {
            CallError::Unavailable(WaitError::Failed {
                reason: format!("the pool has no replica {index}"),
            })
        })
    }

    /// Sends a cut stream's continuation from where [`after_cut`](Self::after_cut) left it, as
    /// [`deliver`](Self::deliver) sends a request: the request's place on the replica it was cut
    /// on ends when the continuation goes to another.
    pub async fn deliver_continuation(
        &self,
        out: &Outgoing,
        fingerprint: Fingerprint,
        plan: &mut RequestPlan,
        from: Attempted,
    ) -> Result<PoolDelivery, CallError> {
        self.deliver_from(out, fingerprint, plan, from).await
    }

    async fn deliver_from(
        &self,
        out: &Outgoing,
        fingerprint: Fingerprint,
        plan: &mut RequestPlan,
        from: Attempted,
    ) -> Result<PoolDelivery, CallError> {
        let n = self.replicas.len();
        let Attempted {
            mut want,
            mut failed,
            mut current,
        } = from;
        want.resize(n, Generation::NONE);
        let mut states: Vec<Option<watch::Receiver<SupervisorState>>> = vec![None; n];
        let bytes = u64::try_from(out.body.len()).unwrap_or(u64::MAX);
        loop {
            let index = self.pick(&want, failed, bytes).await?;
            let upstream = &self.replicas[index];
            let mut id = match current.take() {
                Some((held, id)) if held == index => id,
                _ => Identity::new(fingerprint),
            };
            upstream.admit(&mut id).await?;
            let snapshot = upstream.shared().snapshot.load();
            if !snapshot.ready_for(want[index]) || self.shared.is_held_out(index) {
                // It changed while the quarantine held the request: choose again.
                current = Some((index, id));
                continue;
            }
            plan.begin(upstream.shared().clock.now(), snapshot.generation);
            let (outcome, answered) = match upstream.attempt(out, plan).await {
                Ok(delivered) if delivered.response.status().is_server_error() => {
                    let status = delivered.response.status().as_u16();
                    (AttemptOutcome::ServerError { status }, Some(delivered))
                }
                Ok(mut delivered) => {
                    delivered.attempts = plan.attempts() + 1;
                    upstream.shared().in_flight.answered();
                    return Ok(PoolDelivery {
                        delivered,
                        replica: index,
                        upstream: upstream.clone(),
                        identity: id,
                    });
                }
                Err(outcome) => (outcome, None),
            };
            debug!(replica = index, ?outcome, "attempt on a replica failed");
            failed.insert(index);
            match (
                upstream
                    .after_failure_counted(
                        plan,
                        outcome,
                        &mut states[index],
                        self.ready_elsewhere(index, &want),
                    )
                    .await,
                answered,
            ) {
                (Ok(next), _) => want[index] = next,
                (Err(CallError::GaveUp { .. }), Some(mut delivered)) => {
                    delivered.attempts = plan.attempts();
                    return Ok(PoolDelivery {
                        delivered,
                        replica: index,
                        upstream: upstream.clone(),
                        identity: id,
                    });
                }
                (Err(err), _) => return Err(err),
            }
            current = Some((index, id));
        }
    }
}

/// Where a stream served by a pool was cut: the replica, and the request's place there (in
/// flight, maybe on trial), which lasts until the hang is counted and the continuation moves.
pub struct PoolCut {
    /// The replica that served the stream.
    pub replica: usize,
    /// The request as that replica knows it.
    pub identity: Identity,
}

/// What a request's earlier attempts left for its next one: the generation each replica must
/// reach, the replicas it failed on (avoided while another is ready), and its place on the
/// replica it last went to.
pub struct Attempted {
    want: Vec<Generation>,
    failed: ReplicaSet,
    current: Option<(usize, Identity)>,
}

/// Why no replica will ever take a request, when none will: each has been given up or is
/// stopping.
fn none_left(states: &[watch::Receiver<SupervisorState>]) -> Option<WaitError> {
    let mut reason = None;
    for state in states {
        let state = state.borrow();
        match state.phase {
            Phase::Failed => {
                reason.get_or_insert_with(|| WaitError::Failed {
                    reason: state
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "restart limit reached".to_owned()),
                });
            }
            Phase::Stopping | Phase::Stopped => {
                reason = Some(WaitError::Stopping);
            }
            _ => return None,
        }
    }
    reason
}
