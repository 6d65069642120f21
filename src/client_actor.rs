//! The `ClientActor`: a whole request to the model server, retried across hangs and restarts, with
//! the complete answer returned. This is the original design's `call_vllm_api` for Rust programs;
//! the proxy uses the same sender ([`Upstream`]) without the actor hop.
//!
//! Because the caller receives the body only once it is complete, a stream that stalls or breaks
//! half-way has sent nothing to anyone yet, so it is reported and retried on the next generation
//! like any other hang. One [`RequestPlan`](respawn_core::RequestPlan) covers the whole call, so
//! the attempt bound holds whether the attempts failed before the first byte or while the body
//! was collected.

use actix::prelude::*;
use actix_web::http::uri::PathAndQuery;
use bytes::BytesMut;
use futures_util::{FutureExt, StreamExt};
use respawn_core::{AttemptOutcome, Generation};

use crate::in_flight::fingerprint;
pub use crate::messages::Call;
use crate::messages::RequestSucceeded;
use crate::upstream::{CallError, Identity, Outgoing, Upstream};

pub use crate::messages::CallResponse;

/// Sends whole requests for Rust callers; see the module docs.
pub struct ClientActor {
    upstream: Option<Upstream>,
    shared: std::sync::Arc<crate::upstream::UpstreamShared>,
}

impl ClientActor {
    /// A client using the supervisor's shared sending state.
    pub fn new(shared: std::sync::Arc<crate::upstream::UpstreamShared>) -> Self {
        Self {
            upstream: None,
            shared,
        }
    }
}

impl Actor for ClientActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        // awc's client is !Send: it is created on the actor's own thread.
        self.upstream = Some(Upstream::new(std::sync::Arc::clone(&self.shared)));
    }
}

impl Handler<Call> for ClientActor {
    type Result = ResponseFuture<Result<CallResponse, CallError>>;

    fn handle(&mut self, msg: Call, _ctx: &mut Self::Context) -> Self::Result {
        let shared = std::sync::Arc::clone(&self.shared);
        let upstream = self
            .upstream
            .get_or_insert_with(|| Upstream::new(shared))
            .clone();
        Box::pin(async move { call(&upstream, msg).await })
    }
}

/// `path` as the path and query of a request to the model server, or why no HTTP request can
/// carry it (no leading `/`, a space, `<`): [`CallError::InvalidPath`].
pub fn path_and_query(path: &str) -> Result<PathAndQuery, CallError> {
    let invalid = |reason: String| CallError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    match PathAndQuery::try_from(path) {
        Ok(parsed) if parsed.as_str().starts_with('/') => Ok(parsed),
        Ok(_) => Err(invalid("it does not start with `/`".to_owned())),
        Err(err) => Err(invalid(err.to_string())),
    }
}

/// Sends one whole request; see the module docs.
pub async fn call(upstream: &Upstream, msg: Call) -> Result<CallResponse, CallError> {
    let shared = upstream.shared();
    let clock = shared.clock;
    let path_and_query = path_and_query(&msg.path)?;
    let out = Outgoing {
        method: msg.method,
        path_and_query,
        headers: msg.headers,
        body: msg.body,
    };
    let fp = fingerprint(out.method.as_str(), out.path_and_query.as_str(), &out.body);
    let mut id = Identity::new(fp);
    let mut plan = upstream.plan();
    let mut want = Generation::NONE;
    let mut state = None;
    loop {
        let delivered = upstream.deliver(&out, &mut id, &mut plan, want).await?;
        let generation = delivered.generation;
        let status = delivered.response.status();
        let mut response = delivered.response;
        let mut body = BytesMut::new();
        if let Some(first) = delivered.first {
            body.extend_from_slice(&first);
        }
        let outcome = loop {
            let next = match response.next().now_or_never() {
                Some(item) => item,
                None => match upstream.before_deadline(&mut plan, response.next()).await {
                    Ok(item) => item,
                    Err(outcome) => break outcome,
                },
            };
            match next {
                Some(Ok(chunk)) => {
                    plan.on_chunk(clock.now());
                    body.extend_from_slice(&chunk);
                }
                Some(Err(_)) => break AttemptOutcome::ConnectionReset,
                None => {
                    shared.in_flight.answered();
                    if upstream.is_suspect(fp) {
                        shared
                            .coordinator
                            .do_send(RequestSucceeded { fingerprint: fp });
                    }
                    return Ok(CallResponse {
                        status,
                        body: body.freeze(),
                        generation,
                        attempts: plan.attempts() + 1,
                    });
                }
            }
        };
        want = upstream
            .after_failure(&mut plan, outcome, &mut state)
            .await?;
    }
}
