//! The `ClientActor`: a whole request to the model server, retried across hangs and restarts, with
//! the complete answer returned. This is the seed's `call_vllm_api` for Rust programs; the proxy
//! uses the same sender ([`Upstream`]) without the actor hop.
//!
//! Because the caller receives the body only once it is complete, a stream that stalls or breaks
//! half-way has sent nothing to anyone yet, so it is reported and retried on the next generation
//! like any other hang.

use std::time::Duration;

use actix::prelude::*;
use actix_web::http::header::HeaderMap;
use actix_web::http::{Method, StatusCode};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use respawn_core::{Generation, HangCause};

use crate::coordinator::Hang;
use crate::in_flight::fingerprint;
use crate::state::wait_ready;
use crate::upstream::{CallError, Outgoing, Upstream};

/// Send this request and answer with the complete response.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<CallResponse, CallError>")]
pub struct Call {
    /// The HTTP method.
    pub method: Method,
    /// Path and query, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Headers to send.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Call {
    /// A JSON `POST` to `path`.
    pub fn post_json(path: &str, body: &serde_json::Value) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::HeaderValue::from_static("application/json"),
        );
        Self {
            method: Method::POST,
            path: path.to_owned(),
            headers,
            body: Bytes::from(body.to_string()),
        }
    }
}

/// A complete response.
#[derive(Clone, Debug)]
pub struct CallResponse {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
    /// The generation that answered.
    pub generation: Generation,
    /// Attempts it took, across stalls and restarts.
    pub attempts: u32,
}

/// Sends whole requests for Rust callers; see the module docs.
pub struct ClientActor {
    upstream: Option<Upstream>,
    shared: std::sync::Arc<crate::upstream::UpstreamShared>,
    max_stalls: u32,
}

impl ClientActor {
    /// A client using the supervisor's shared sending state.
    pub fn new(shared: std::sync::Arc<crate::upstream::UpstreamShared>) -> Self {
        let max_stalls = shared.config.retry.max_retries;
        Self {
            upstream: None,
            shared,
            max_stalls,
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
        let max_stalls = self.max_stalls;
        Box::pin(async move { call(&upstream, msg, max_stalls).await })
    }
}

/// Sends one whole request; see the module docs.
pub async fn call(
    upstream: &Upstream,
    msg: Call,
    max_stalls: u32,
) -> Result<CallResponse, CallError> {
    let shared = upstream.shared();
    let out = Outgoing {
        method: msg.method,
        path_and_query: msg.path,
        headers: msg.headers,
        body: msg.body,
    };
    let fp = fingerprint(out.method.as_str(), &out.path_and_query, &out.body);
    let _guard = shared.in_flight.enter(fp);
    let mut attempts = 0;
    let mut stalls = 0;
    loop {
        let delivered = upstream.deliver(&out, fp).await?;
        attempts += delivered.attempts;
        let generation = delivered.generation;
        let status = delivered.response.status();
        let mut response = delivered.response;
        let mut body = BytesMut::new();
        if let Some(first) = delivered.first {
            body.extend_from_slice(&first);
        }
        let stall = shared.config.stall_timeout;
        let broken = loop {
            match tokio::time::timeout(stall, response.next()).await {
                Ok(Some(Ok(chunk))) => body.extend_from_slice(&chunk),
                Ok(None) => break None,
                Ok(Some(Err(_))) => break Some(false),
                Err(_) => break Some(true),
            }
        };
        match broken {
            None => {
                return Ok(CallResponse {
                    status,
                    body: body.freeze(),
                    generation,
                    attempts,
                })
            }
            Some(stalled) => {
                stalls += 1;
                if stalled {
                    shared.coordinator.do_send(Hang {
                        generation,
                        cause: HangCause::StreamStall,
                    });
                }
                if stalls > max_stalls {
                    return Err(CallError::GaveUp {
                        reason: respawn_core::GiveUpReason::RetriesExhausted { attempts },
                        last: if stalled {
                            "the stream stalled".into()
                        } else {
                            "the stream broke".into()
                        },
                        status: 504,
                    });
                }
                shared.metrics.request_retried();
                let mut state = shared.state.clone();
                let bound = shared.config.wait_bound;
                let next = if stalled {
                    generation.next()
                } else {
                    generation
                };
                let wait = if stalled {
                    bound
                } else {
                    Duration::from_millis(250)
                };
                if let Err(err) = wait_ready(&mut state, next, wait).await {
                    if !matches!(err, crate::state::WaitError::TimedOut { .. }) || stalled {
                        return Err(err.into());
                    }
                }
            }
        }
    }
}
