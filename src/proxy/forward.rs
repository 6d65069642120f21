//! The catch-all route: every request that is not `/respawn/*` goes to the model server.

use std::sync::Arc;

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::uri::PathAndQuery;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use respawn_core::{Generation, ResumeMode};

use crate::in_flight::fingerprint;
use crate::metrics::FailureClass;
use crate::pool::sender::PoolUpstream;
use crate::proxy::admission::ForwardSlots;
use crate::proxy::drain::{Drain, WorkerDrain, SHUTTING_DOWN};
use crate::proxy::headers::{connection_tokens, is_hop_by_hop};
use crate::proxy::resume::{stream_kind, ResumableBody, ResumeVia, Resumer};
use crate::proxy::served_body::ServedBody;
use crate::proxy::watched_body::{BodyWatch, Completeness, WatchedBody};
use crate::state::WaitError;
use crate::upstream::{response_has_body, CallError, Delivered, Identity, Outgoing, Upstream};

/// The header that tells a client its request was sent more than once (after a restart or a
/// server error), on successes and failures alike.
pub const ATTEMPTS_HEADER: &str = "x-respawn-attempts";

/// The header that tells a client which generation of the model server answered.
pub const GENERATION_HEADER: &str = "x-respawn-generation";

/// The header that tells a client which replica of a pool answered (absent for a lone server).
pub const REPLICA_HEADER: &str = "x-respawn-replica";

/// Who sends a request: a lone server's sender, or a pool's router.
#[derive(Clone, Copy)]
enum Sender<'a> {
    One(&'a Upstream),
    Pool(&'a PoolUpstream),
}

impl Sender<'_> {
    /// Delivers `out`; answers with the sender of the server that answered, the request as that
    /// server knows it, and the replica's index in a pool.
    async fn deliver(
        self,
        out: &Outgoing,
        fp: respawn_core::Fingerprint,
        plan: &mut respawn_core::RequestPlan,
    ) -> Result<(Delivered, Upstream, Identity, Option<usize>), CallError> {
        match self {
            Sender::One(upstream) => {
                let mut id = Identity::new(fp);
                let delivered = upstream
                    .deliver(out, &mut id, plan, Generation::NONE)
                    .await?;
                Ok((delivered, upstream.clone(), id, None))
            }
            Sender::Pool(pool) => {
                let answer = pool.deliver(out, fp, plan).await?;
                Ok((
                    answer.delivered,
                    answer.upstream,
                    answer.identity,
                    Some(answer.replica),
                ))
            }
        }
    }
}

/// The error type of a request refused because as many requests (or body bytes) as allowed were
/// already waiting for the model server to be ready.
pub const WAITING_FULL: &str = "too_many_waiting";

/// Limits the proxy enforces on what clients send.
#[derive(Clone, Copy, Debug)]
pub struct ProxyLimits {
    /// Largest request body accepted; past it the answer is 413.
    pub max_body_size: u64,
    /// Gives the allocator's free memory back to the system (see
    /// [`ProxySettings::return_free_memory`](super::ProxySettings::return_free_memory)).
    pub return_free_memory: fn(),
}

/// Forwards one request; see the module docs.
pub async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    upstream: web::Data<Upstream>,
    limits: web::Data<ProxyLimits>,
) -> HttpResponse {
    forward_with(req, payload, Sender::One(&upstream), &upstream, limits).await
}

/// Forwards one request to the replica of a pool its router picks.
pub async fn forward_to_pool(
    req: HttpRequest,
    payload: web::Payload,
    pool: web::Data<PoolUpstream>,
    limits: web::Data<ProxyLimits>,
) -> HttpResponse {
    let Some(front) = pool.front() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_unavailable",
            "the pool has no replica",
        );
    };
    forward_with(req, payload, Sender::Pool(&pool), front, limits).await
}

/// Forwards one request through `sender`; `front` keeps the counters of requests refused before
/// a server is chosen.
async fn forward_with(
    req: HttpRequest,
    mut payload: web::Payload,
    sender: Sender<'_>,
    front: &Upstream,
    limits: web::Data<ProxyLimits>,
) -> HttpResponse {
    let shared = front.shared();
    let metrics = &shared.metrics;
    metrics.request_started();
    let drain = match req.app_data::<WorkerDrain>() {
        Some(drain) => drain.clone(),
        // Served without one (an embedder's own app): a grace that never ends.
        None => WorkerDrain::new(&Drain::new()),
    };
    if drain.has_ended() {
        metrics.request_failed(FailureClass::ShuttingDown);
        return refusal(
            shutting_down("respawn is shutting down and takes no new requests"),
            None,
        );
    }
    // A forward slot is two descriptors (this connection and one towards the model server): when
    // the worker has none left, refuse now, while this connection can still be answered.
    let slot = match req.app_data::<ForwardSlots>() {
        Some(slots) => match slots.try_take() {
            Some(slot) => Some(slot),
            None => {
                metrics.request_failed(FailureClass::Overloaded);
                return refusal(overloaded(slots.capacity()), Some(1));
            }
        },
        None => None,
    };

    // The body is held (up to the limit) so that the request can be sent again after a restart.
    let limit = limits.max_body_size;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared {
        if length > limit {
            metrics.request_failed(FailureClass::TooLarge);
            return too_large(limit);
        }
    }
    // Sized once from the declared length: growing by doubling would copy a large body several
    // times and leave the allocator with blocks of every size on the way.
    let mut body = BytesMut::with_capacity(
        declared
            .and_then(|length| usize::try_from(length).ok())
            .unwrap_or(0),
    );
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(chunk) => {
                if (body.len() + chunk.len()) as u64 > limit {
                    metrics.request_failed(FailureClass::TooLarge);
                    return too_large(limit);
                }
                body.extend_from_slice(&chunk);
            }
            Err(err) => {
                metrics.request_failed(FailureClass::BadRequest);
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("could not read the request body: {err}"),
                );
            }
        }
    }
    let body = body.freeze();
    // Dropped after the body (declared before `out`, which holds it): a large body's pieces,
    // read in chunks, leave free memory behind in the allocator, which goes back to the system.
    // (Made only for one: dropping the marker is what returns the memory.)
    let _return_memory = if body.len() >= LARGE_BODY {
        Some(ReturnFreeMemory(limits.return_free_memory))
    } else {
        None
    };

    let tokens = connection_tokens(req.headers());
    let mut headers = HeaderMap::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        if is_hop_by_hop(name, &tokens) || name == header::HOST || name == header::CONTENT_LENGTH {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    // Parsed by actix-web already: a clone shares its bytes.
    let path_and_query = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let fp = fingerprint(req.method().as_str(), path_and_query.as_str(), &body);
    let out = Outgoing {
        method: req.method().clone(),
        path_and_query,
        headers,
        body,
    };

    // A request still waiting for its first byte when the shutdown grace ends is answered, not
    // cut with its connection.
    let mut plan = front.plan();
    let outcome = tokio::select! {
        biased;
        outcome = sender.deliver(&out, fp, &mut plan) => Some(outcome),
        () = drain.ended() => None,
    };
    let Some(outcome) = outcome else {
        metrics.request_failed(FailureClass::ShuttingDown);
        return refusal(
            shutting_down(
                "respawn is shutting down and the grace for requests in flight ended before the model server answered",
            ),
            None,
        );
    };
    let (delivered, upstream, id, replica) = match outcome {
        Ok(answer) => answer,
        Err(err) => {
            let attempts = plan.attempts();
            metrics.request_failed(err.class());
            let kind = match err {
                CallError::Unavailable(WaitError::Full { .. }) => WAITING_FULL,
                CallError::Unavailable(_) => "server_unavailable",
                CallError::GaveUp { .. } => "upstream_failed",
                CallError::Quarantined { .. } => "request_quarantined",
                CallError::InvalidPath { .. } => "bad_request",
            };
            let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = error_response(status, kind, &err.to_string());
            if attempts > 1 {
                response.headers_mut().insert(
                    HeaderName::from_static(ATTEMPTS_HEADER),
                    HeaderValue::from(attempts),
                );
            }
            if err.worth_retrying_later() {
                // The server is starting or restarting: come back about when it should be ready.
                let after = shared.state.borrow().retry_after();
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(after.as_secs().max(1)),
                );
            }
            return response;
        }
    };

    // From here on, the server that answered.
    let shared = upstream.shared();
    let upstream_headers = delivered.response.headers();
    let response_tokens = connection_tokens(upstream_headers);
    let mut builder = HttpResponse::build(delivered.response.status());
    let length = delivered.length;
    let mut sse = false;
    for (name, value) in upstream_headers {
        // The length goes on as the body's own (`length`, read with the head).
        if name == header::CONTENT_LENGTH || is_hop_by_hop(name, &response_tokens) {
            continue;
        }
        if name == header::CONTENT_TYPE {
            sse = value
                .to_str()
                .map(|v| v.starts_with("text/event-stream"))
                .unwrap_or(false);
        }
        builder.append_header((name.clone(), value.clone()));
    }
    builder.insert_header((
        HeaderName::from_static(GENERATION_HEADER),
        upstream.generation_value(delivered.generation),
    ));
    if let Some(replica) = replica {
        builder.insert_header((HeaderName::from_static(REPLICA_HEADER), replica));
    }
    if delivered.attempts > 1 {
        builder.insert_header((HeaderName::from_static(ATTEMPTS_HEADER), delivered.attempts));
    }
    // The head goes to the client now: from here on nothing is replayed.
    plan.reached_client();
    let suspect = upstream.is_suspect(fp).then_some(fp);
    let status = delivered.response.status();
    if !response_has_body(&out.method, status) {
        // The head is the whole answer: pass its length on (a HEAD answer and a 304 keep the
        // length of the representation) without waiting for a body that never comes.
        shared.answered(suspect);
        // Its success is told first; then its place in flight (and a trial slot) ends.
        drop(id);
        return match length {
            Some(length)
                if out.method == Method::HEAD
                    && status != StatusCode::NO_CONTENT
                    && status != StatusCode::NOT_MODIFIED
                    && !status.is_informational() =>
            {
                // Declared as an unframed stream with a fixed length rather than a sized body:
                // actix-http decides "this answers a HEAD" from the last request it parsed, so
                // with a pipelined request behind this one a sized body would wait for bytes.
                builder.no_chunking(length);
                builder.body(BodyStream::new(futures_util::stream::empty::<
                    Result<Bytes, actix_web::Error>,
                >()))
            }
            Some(length) if status == StatusCode::NOT_MODIFIED => {
                builder.insert_header((header::CONTENT_LENGTH, length));
                builder.body(actix_web::body::None::new())
            }
            _ => builder.body(actix_web::body::None::new()),
        };
    }
    if delivered.complete {
        // The whole body came with the head, and the connection is back in the pool: answered as
        // it is, with nothing left to watch. Told as a body's end is: its success, then its place
        // in flight (and a trial slot) ends.
        shared.answered(suspect);
        drop(id);
        return builder.body(delivered.first.unwrap_or_default());
    }
    let completeness = Completeness {
        length,
        ends_with_done: sse && out.path_and_query.as_str().contains("/completions"),
    };
    let watch = BodyWatch {
        plan,
        shared: Arc::clone(shared),
        sse,
        identity: id,
        suspect,
        completeness,
    };
    let resume = shared.config.resume;
    let kind = stream_kind(&out.method, out.path_and_query.as_str(), sse, status)
        .filter(|_| length.is_none() && resume.mode != ResumeMode::Off);
    let body = WatchedBody::new(delivered.first, delivered.response, watch);
    if let Some(kind) = kind {
        // A streamed completion: recorded as it passes, and resumed when cut.
        let via = match (sender, replica) {
            (Sender::Pool(pool), Some(replica)) => ResumeVia::Pool {
                pool: pool.clone(),
                replica,
            },
            _ => ResumeVia::One(upstream.clone()),
        };
        let resumer = Resumer::new(via, out, kind, resume);
        let body = ServedBody::new(ResumableBody::new(body, resumer), slot, drain, sse);
        return builder.streaming(body);
    }
    let body = ServedBody::new(body, slot, drain, sse);
    match length {
        Some(length) => builder.body(SizedStream::new(length, body)),
        None => builder.streaming(body),
    }
}

/// Bodies from this size up are followed by [`ReturnFreeMemory`] when their request ends.
const LARGE_BODY: usize = 1 << 20;

/// When dropped, gives the allocator's free memory back to the system (through the function it
/// holds, [`ProxyLimits::return_free_memory`]). A large body arrives in many chunks that are
/// copied into it and freed; their memory is free but stays resident until given back. Once per
/// large body: a walk of the allocator's free memory, small beside reading the body.
struct ReturnFreeMemory(fn());

impl Drop for ReturnFreeMemory {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// A refusal that also closes the connection, freeing its descriptor; `retry_after` in seconds.
fn refusal(mut response: HttpResponse, retry_after: Option<u32>) -> HttpResponse {
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Some(seconds) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn overloaded(capacity: usize) -> HttpResponse {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_overloaded",
        &format!(
            "respawn is forwarding as many requests as its open-file limit allows ({capacity} per worker); retry shortly"
        ),
    )
}

fn shutting_down(message: &str) -> HttpResponse {
    error_response(StatusCode::SERVICE_UNAVAILABLE, SHUTTING_DOWN, message)
}

fn too_large(limit: u64) -> HttpResponse {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        &format!("the request body is larger than the limit of {limit} bytes (--max-body-size)"),
    )
}

/// An error answer in the OpenAI error shape, so clients show the message.
pub fn error_response(status: StatusCode, kind: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "error": { "message": message, "type": kind, "code": status.as_u16() }
    }))
}
