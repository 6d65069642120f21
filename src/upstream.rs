//! Sending one request to the model server under the core's deadlines and retry plan.
//!
//! This is the seed's `call_vllm_api` loop, rebuilt: every attempt is tagged with the generation it
//! went to; a first-byte timeout reports a `Hang` for that generation and waits for the next one;
//! a 5xx backs off; nothing is replayed once a byte reached the client. The proxy and the
//! `ClientActor` both use it. It is a plain value owned by each actix-web worker (awc's client is
//! `!Send`), so the data path never funnels through one thread or one actor.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::http::Method;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use respawn_core::{
    AttemptOutcome, Fingerprint, Generation, GiveUpReason, HangCause, RetryConfig, RetryDecision,
    RetryPlan,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::coordinator::{Hang, RestartCoordinator};
use crate::in_flight::InFlight;
use crate::metrics::{FailureClass, Metrics};
use crate::state::{wait_ready, SupervisorState, WaitError};

/// How requests are sent and retried.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// `http://host:port` of the model server, without a trailing slash.
    pub base_url: String,
    /// Time to a response's first byte.
    pub request_timeout: Duration,
    /// Longest silence between streamed chunks.
    pub stall_timeout: Duration,
    /// Attempts and backoff.
    pub retry: RetryConfig,
    /// How long a request waits for a ready server (during a start or a restart).
    pub wait_bound: Duration,
    /// Whether hangs lead to restarts; without them a timeout is retried on the same generation.
    pub enable_restart: bool,
}

/// What every worker's `Upstream` shares.
#[derive(Debug)]
pub struct UpstreamShared {
    /// Sending and retry settings.
    pub config: UpstreamConfig,
    /// The supervisor's published state.
    pub state: watch::Receiver<SupervisorState>,
    /// Where hangs are reported.
    pub coordinator: Addr<RestartCoordinator>,
    /// Shared counters.
    pub metrics: Arc<Metrics>,
    /// The requests in flight.
    pub in_flight: Arc<InFlight>,
}

/// One request to send: method, path and query, headers (already stripped of hop-by-hop ones) and
/// the body, held so that it can be sent again.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The HTTP method.
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
    /// End-to-end headers to forward.
    pub headers: HeaderMap,
    /// The request body.
    pub body: Bytes,
}

/// A response whose head and first chunk arrived: from here on bytes reach the client and the
/// request can no longer be replayed.
pub struct Delivered {
    /// The response, positioned after `first`.
    pub response: awc::ClientResponse,
    /// The first chunk of the body (`None`: the body is empty).
    pub first: Option<Bytes>,
    /// The generation that answered.
    pub generation: Generation,
    /// Attempts it took.
    pub attempts: u32,
}

/// Why a request could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No ready server (gave up, stopping, or not ready within the wait bound).
    #[error(transparent)]
    Unavailable(#[from] WaitError),
    /// The retry plan gave up.
    #[error("{reason} (last attempt: {last})")]
    GaveUp {
        /// Why the plan gave up.
        reason: GiveUpReason,
        /// What the last attempt ran into.
        last: String,
        /// The status a proxy should answer with.
        status: u16,
    },
    /// The request was quarantined as poison: it was in flight at repeated hangs.
    #[error("this request was in flight at repeated hangs of the model server and is quarantined")]
    Quarantined,
}

impl CallError {
    /// The HTTP status a proxy answers with.
    pub fn status(&self) -> u16 {
        match self {
            CallError::Unavailable(_) => 503,
            CallError::GaveUp { status, .. } => *status,
            CallError::Quarantined => 422,
        }
    }

    /// The failure class for metrics.
    pub fn class(&self) -> FailureClass {
        match self {
            CallError::Unavailable(_) => FailureClass::Unavailable,
            CallError::GaveUp { .. } => FailureClass::RetriesExhausted,
            CallError::Quarantined => FailureClass::Quarantined,
        }
    }
}

/// Headers that describe one hop, not the request: never forwarded (RFC 9110 §7.6.1).
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

/// Whether a header must not cross the proxy (hop-by-hop, or named in `Connection`).
pub fn is_hop_by_hop(name: &HeaderName, connection_tokens: &[String]) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(&n) || connection_tokens.iter().any(|t| t == n)
}

/// The header names listed in a message's `Connection` header, lower-cased.
pub fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(actix_web::http::header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// A worker's sender: its own awc client plus the shared state.
#[derive(Clone)]
pub struct Upstream {
    shared: Arc<UpstreamShared>,
    client: awc::Client,
}

/// Builds the awc client respawn uses towards the model server: no connection limit (256
/// requests in flight must not queue behind a pool of 100), no redirects, no default headers.
pub fn build_client(request_timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .limit(0)
                .timeout(Duration::from_secs(5)),
        )
        .disable_redirects()
        .no_default_headers()
        .timeout(request_timeout)
        .finish()
}

impl Upstream {
    /// A sender for this worker.
    pub fn new(shared: Arc<UpstreamShared>) -> Self {
        let client = build_client(shared.config.request_timeout);
        Self { shared, client }
    }

    /// What this sender shares with the others.
    pub fn shared(&self) -> &Arc<UpstreamShared> {
        &self.shared
    }

    /// Sends `out` until its head and first chunk arrive, retrying across restarts as the core's
    /// retry plan says.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the attempt in progress, which closes its upstream
    /// connection (the model server stops generating for a client that left).
    pub async fn deliver(
        &self,
        out: &Outgoing,
        fingerprint: Fingerprint,
    ) -> Result<Delivered, CallError> {
        let shared = &self.shared;
        let config = &shared.config;
        if shared.in_flight.is_quarantined(fingerprint) {
            return Err(CallError::Quarantined);
        }
        let mut plan = RetryPlan::new(config.retry);
        let mut state = shared.state.clone();
        let mut want = Generation(0);
        loop {
            let generation = wait_ready(&mut state, want, config.wait_bound).await?;
            if shared.in_flight.is_quarantined(fingerprint) {
                return Err(CallError::Quarantined);
            }
            let (outcome, detail) = match self.attempt(out, generation).await {
                Ok(delivered) => {
                    let status = delivered.response.status();
                    if status.is_server_error() {
                        (
                            AttemptOutcome::ServerError {
                                status: status.as_u16(),
                            },
                            Some(delivered),
                        )
                    } else {
                        let mut delivered = delivered;
                        delivered.attempts = plan.attempts() + 1;
                        return Ok(delivered);
                    }
                }
                Err(outcome) => (outcome, None),
            };
            let decision = plan.decide(outcome, generation, false);
            debug!(%generation, ?outcome, ?decision, "attempt failed");
            let hang_cause = match outcome {
                AttemptOutcome::FirstByteTimeout => Some(HangCause::FirstByteTimeout),
                AttemptOutcome::Stall => Some(HangCause::StreamStall),
                _ => None,
            };
            if let Some(cause) = hang_cause {
                shared.coordinator.do_send(Hang { generation, cause });
            }
            match decision {
                RetryDecision::Done => {
                    // Only a success is Done, and successes returned above.
                    if let Some(delivered) = detail {
                        return Ok(delivered);
                    }
                }
                RetryDecision::RetryNow => {}
                RetryDecision::RetryAfter(delay) => tokio::time::sleep(delay).await,
                RetryDecision::WaitForGeneration(next) => {
                    if hang_cause.is_some() && config.enable_restart {
                        want = next;
                    } else if hang_cause.is_some() {
                        // No restart will come: retry the same server after a pause.
                        tokio::time::sleep(config.retry.base_delay).await;
                    } else {
                        // A refused or reset connection: if the server died, the restart shows up
                        // in the state at once; if it was a stale keep-alive connection, the same
                        // generation is still ready and the retry goes there.
                        let brief = config
                            .retry
                            .base_delay
                            .saturating_mul(plan.attempts().max(1));
                        match wait_ready(&mut state, next, brief).await {
                            Ok(_) => want = next,
                            Err(WaitError::TimedOut { .. }) => {
                                want = if state.borrow().ready_for(generation) {
                                    generation
                                } else {
                                    next
                                };
                            }
                            Err(err) => return Err(err.into()),
                        }
                    }
                }
                RetryDecision::GiveUp(reason) => {
                    if let Some(delivered) = detail {
                        // The server's own 5xx is the most honest answer once retries are spent.
                        return Ok(delivered);
                    }
                    let status = match outcome {
                        AttemptOutcome::FirstByteTimeout | AttemptOutcome::Stall => 504,
                        _ => 502,
                    };
                    return Err(CallError::GaveUp {
                        reason,
                        last: describe(outcome),
                        status,
                    });
                }
            }
            shared.metrics.request_retried();
        }
    }

    async fn attempt(
        &self,
        out: &Outgoing,
        generation: Generation,
    ) -> Result<Delivered, AttemptOutcome> {
        let config = &self.shared.config;
        let started = Instant::now();
        let url = format!("{}{}", config.base_url, out.path_and_query);
        let mut request = self
            .client
            .request(out.method.clone(), url)
            .timeout(config.request_timeout);
        *request.headers_mut() = out.headers.clone();
        let mut response = match request.send_body(out.body.clone()).await {
            Ok(response) => response,
            Err(err) => return Err(classify_send_error(&err)),
        };
        // A small answer is usually complete with its head: take it without arming a timer.
        let ready = response.next().now_or_never();
        let remaining = config.request_timeout.saturating_sub(started.elapsed());
        let next = match ready {
            Some(item) => Ok(item),
            None => tokio::time::timeout(remaining, response.next()).await,
        };
        let first = match next {
            Err(_) => return Err(AttemptOutcome::FirstByteTimeout),
            Ok(None) => None,
            Ok(Some(Ok(chunk))) => Some(chunk),
            Ok(Some(Err(err))) => {
                warn!(%generation, error = %err, "the response broke before its first byte");
                return Err(AttemptOutcome::ConnectionReset);
            }
        };
        // A hung server is resumed (SIGCONT) only so that its SIGTERM gets through, and in that
        // moment it may start answering the requests that waited on it: an answer that begins
        // once its generation is being replaced is cut when the server dies. Nothing of it has
        // reached the client yet, so the request goes to the next generation instead, like any
        // other request the hang caught.
        if self.shared.state.borrow().replacing(generation) {
            debug!(%generation, "an answer began after the restart of its generation had begun; dropped, the request goes to the next generation");
            return Err(AttemptOutcome::ConnectionReset);
        }
        Ok(Delivered {
            response,
            first,
            generation,
            attempts: 0,
        })
    }
}

fn classify_send_error(err: &awc::error::SendRequestError) -> AttemptOutcome {
    use awc::error::{ConnectError, SendRequestError};
    match err {
        SendRequestError::Timeout => AttemptOutcome::FirstByteTimeout,
        SendRequestError::Connect(ConnectError::Timeout) => AttemptOutcome::FirstByteTimeout,
        SendRequestError::Connect(_) => AttemptOutcome::ConnectionRefused,
        _ => AttemptOutcome::ConnectionReset,
    }
}

fn describe(outcome: AttemptOutcome) -> String {
    match outcome {
        AttemptOutcome::Success => "success".to_owned(),
        AttemptOutcome::ConnectionRefused => "connection refused".to_owned(),
        AttemptOutcome::ConnectionReset => "connection reset".to_owned(),
        AttemptOutcome::FirstByteTimeout => "no first byte within the request timeout".to_owned(),
        AttemptOutcome::Stall => "the stream stalled".to_owned(),
        AttemptOutcome::ServerError { status } => format!("server error {status}"),
        AttemptOutcome::ClientError { status } => format!("client error {status}"),
        AttemptOutcome::Cancelled => "cancelled".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_connection_tokens_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            actix_web::http::header::CONNECTION,
            actix_web::http::header::HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        let tokens = connection_tokens(&headers);
        assert_eq!(
            tokens,
            vec!["keep-alive".to_owned(), "x-secret-hop".to_owned()]
        );
        assert!(is_hop_by_hop(
            &HeaderName::from_static("x-secret-hop"),
            &tokens
        ));
        assert!(is_hop_by_hop(
            &HeaderName::from_static("transfer-encoding"),
            &tokens
        ));
        assert!(!is_hop_by_hop(
            &HeaderName::from_static("content-type"),
            &tokens
        ));
        assert!(!is_hop_by_hop(
            &HeaderName::from_static("authorization"),
            &tokens
        ));
    }
}
