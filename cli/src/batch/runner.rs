//! Sending the pending requests through the supervisor, `--concurrency` at a time, and
//! recording each result as it completes.
//!
//! Every request goes through the retrying sender ([`respawn::client_actor::call`]): the body is
//! collected whole before anything is recorded, so a request caught by a hang (no first byte,
//! a stalled or broken stream, the server killed under it) is simply sent again to the next
//! generation. What is recorded is final: an answer, or an error line when the retries are
//! spent or the request was quarantined as poison. A request that fails because no server is
//! available at all is *not* recorded: the run stops, and a rerun sends it again.

use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::http::Method;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use respawn::client_actor::{call, Call, CallResponse};
use respawn::supervisor::Supervisor;
use respawn::upstream::{CallError, Upstream};

use super::input::BatchRequest;
use super::journal_writer::JournalWriter;
use super::progress::Progress;
use super::record::{ErrorCode, IdSource, OutputLine};

/// How a run of the pending requests ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Every pending request was sent and recorded.
    Completed,
    /// No server could be had: the requests without a record wait for a rerun.
    ServerDown {
        /// Why.
        reason: String,
    },
    /// A signal asked to stop.
    Interrupted {
        /// `SIGINT` or `SIGTERM`.
        signal: &'static str,
    },
    /// The writer stopped on an error (returned by [`JournalWriter::finish`]).
    WriterFailed,
}

/// What [`drive`] needs besides the requests.
#[derive(Debug, Clone, Copy)]
pub struct RunSettings {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// How long to wait for the first generation to be ready.
    pub first_ready: Duration,
}

/// Sends `pending` through `supervisor` and records every result with `writer`.
///
/// # Cancel safety
/// Not meant to be cancelled: dropping it drops the requests in flight, which a rerun redoes.
pub async fn drive(
    supervisor: &Supervisor,
    pending: Vec<BatchRequest>,
    settings: RunSettings,
    writer: &JournalWriter,
    progress: &mut Progress,
) -> Result<RunEnd, std::io::Error> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let state = supervisor.state();
    tokio::select! {
        ready = supervisor.wait_ready(settings.first_ready) => match ready {
            Ok(generation) => {
                info!(generation = generation.get(), "the server is ready: sending the batch");
                progress.sending();
            }
            Err(err) => return Ok(RunEnd::ServerDown { reason: err.to_string() }),
        },
        _ = interrupt.recv() => return Ok(RunEnd::Interrupted { signal: "SIGINT" }),
        _ = terminate.recv() => return Ok(RunEnd::Interrupted { signal: "SIGTERM" }),
    }
    let upstream = supervisor.upstream();
    let mut ids = IdSource::new();
    let mut queue = pending.into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut server_down: Option<String> = None;
    loop {
        while server_down.is_none() && in_flight.len() < settings.concurrency {
            let Some(request) = queue.next() else { break };
            let request_id = ids.next_id("req_");
            in_flight.push(send(upstream.clone(), request, request_id));
        }
        if in_flight.is_empty() {
            break;
        }
        tokio::select! {
            Some(sent) = in_flight.next() => {
                let Sent { request, request_id, result } = sent;
                let line = match result {
                    Ok(response) => answered(&mut ids, request, request_id, &response),
                    Err(CallError::Unavailable(err)) => {
                        if server_down.is_none() {
                            warn!(error = %err, "no server available: sending no more requests; a rerun resumes");
                        }
                        server_down.get_or_insert_with(|| err.to_string());
                        continue;
                    }
                    Err(err) => failed(&mut ids, request, &err),
                };
                let succeeded = line.succeeded();
                if !writer.append(line.to_line()) {
                    return Ok(RunEnd::WriterFailed);
                }
                progress.finished(succeeded);
                progress.restarts(state.borrow().restarts);
            }
            _ = ticker.tick() => {
                progress.restarts(state.borrow().restarts);
                progress.tick();
            }
            _ = interrupt.recv() => return Ok(RunEnd::Interrupted { signal: "SIGINT" }),
            _ = terminate.recv() => return Ok(RunEnd::Interrupted { signal: "SIGTERM" }),
        }
    }
    progress.restarts(state.borrow().restarts);
    Ok(match server_down {
        Some(reason) => RunEnd::ServerDown { reason },
        None => RunEnd::Completed,
    })
}

/// One request and how it ended.
struct Sent {
    request: BatchRequest,
    request_id: String,
    result: Result<CallResponse, CallError>,
}

async fn send(upstream: Upstream, request: BatchRequest, request_id: String) -> Sent {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), value);
    }
    let message = Call {
        method: Method::POST,
        path: request.url.clone(),
        headers,
        body: request.body.clone(),
    };
    let result = call(&upstream, message).await;
    Sent {
        request,
        request_id,
        result,
    }
}

fn answered(
    ids: &mut IdSource,
    request: BatchRequest,
    request_id: String,
    response: &CallResponse,
) -> OutputLine {
    let status = response.status.as_u16();
    if !response.status.is_success() {
        warn!(custom_id = %request.custom_id, line = request.line, status, attempts = response.attempts,
              "the server answered with an error status; recorded as failed");
    }
    OutputLine::answered(
        ids.next_id("batch_req_"),
        request.custom_id,
        status,
        request_id,
        &response.body,
    )
}

fn failed(ids: &mut IdSource, request: BatchRequest, err: &CallError) -> OutputLine {
    let code = match err {
        CallError::Quarantined { .. } => ErrorCode::Quarantined,
        _ => ErrorCode::RetriesExhausted,
    };
    warn!(custom_id = %request.custom_id, line = request.line, error = %err, "request failed for good; recorded as an error line");
    OutputLine::failed(
        ids.next_id("batch_req_"),
        request.custom_id,
        code,
        err.to_string(),
    )
}
