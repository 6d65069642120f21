//! The response body as it streams from the model server to the client, watched for stalls.
//!
//! Every chunk is passed on as it arrives (no buffering). The request's [`RequestPlan`] keeps the
//! deadlines: a silence longer than the between-chunks deadline is a hang the plan reports
//! (`StreamStall`, for the generation that was answering), and since bytes already reached the
//! client the stream ends with a clear error: an explicit Server-Sent Events `error` event for
//! event streams (an awc or OpenAI client would otherwise read a cut stream as a normal end), an
//! aborted body otherwise.
//!
//! The timer is lazy: it is armed the first time the server makes the body wait, and when it
//! fires early (chunks came meanwhile) it is moved to the plan's new deadline, so a flowing stream
//! costs one clock read per chunk and no timer reset.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::error::ErrorBadGateway;
use bytes::Bytes;
use futures_util::Stream;
use respawn_core::{AttemptOutcome, Fingerprint, RequestPlan};
use tokio::time::Sleep;
use tracing::warn;

use crate::messages::HangReport;
use crate::metrics::FailureClass;
use crate::upstream::{Identity, UpstreamShared};

/// What the body needs to report and account for.
pub struct BodyWatch {
    /// The request's plan: its deadlines and what a stall means.
    pub plan: RequestPlan,
    /// What the server that answers shares with its senders: the supervisor's clock and
    /// snapshot (the life of the generation that answers), the in-flight table (a completed body
    /// is a sign of life), the coordinator (where a stall is reported) and the counters. One
    /// reference for all of them: each is shared by every worker, and taking a reference to each
    /// for every request would pass their counts between the workers' cores.
    pub shared: Arc<UpstreamShared>,
    /// Whether the response is an event stream (`text/event-stream`).
    pub sse: bool,
    /// Keeps the request counted as in flight (and its trial slot, if it holds it) until the
    /// body ends.
    pub identity: Identity,
    /// Set when the request was a poison suspect: its success clears it.
    pub suspect: Option<Fingerprint>,
    /// How the body must end to be complete.
    pub completeness: Completeness,
}

/// How to tell a complete body from one the server cut off.
///
/// awc reports a connection closed mid-body exactly like a normal end, so the proxy judges the
/// end itself: a body with a `Content-Length` must have that many bytes, and an OpenAI completion
/// stream must end with its `data: [DONE]` event. Other bodies (chunked, not OpenAI-shaped) are
/// taken as complete when the connection ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completeness {
    /// The declared length, if any.
    pub length: Option<u64>,
    /// Whether the stream must end with `data: [DONE]`.
    pub ends_with_done: bool,
}

/// A streaming response body with a stall deadline; see the module docs.
pub struct WatchedBody<S> {
    first: Option<Bytes>,
    inner: S,
    /// Armed the first time the server makes the body wait: a body that arrives whole costs no timer.
    stall: Option<Pin<Box<Sleep>>>,
    watch: BodyWatch,
    done: bool,
    received: u64,
    tail: Vec<u8>,
    /// Set for a stream that may be resumed: a cut ends the body quietly and is kept here for
    /// the resumption to judge, instead of ending it with an error.
    resumable: bool,
    cut: Option<Cut>,
}

/// How a resumable body was cut: the attempt's outcome and what to tell the client if the stream
/// is not resumed.
#[derive(Clone, Debug)]
pub struct Cut {
    /// How the attempt ended.
    pub outcome: AttemptOutcome,
    /// The error event's message.
    pub message: String,
}

/// How many trailing bytes are kept to find the final `[DONE]` event.
const TAIL: usize = 32;

impl<S> WatchedBody<S> {
    /// Wraps `inner`, which follows `first` (the chunk already read to confirm the response).
    pub fn new(first: Option<Bytes>, inner: S, watch: BodyWatch) -> Self {
        // Kept only for a stream that must end with `[DONE]`.
        let tail = if watch.completeness.ends_with_done {
            Vec::with_capacity(TAIL * 2)
        } else {
            Vec::new()
        };
        let mut body = Self {
            first: None,
            inner,
            stall: None,
            watch,
            done: false,
            received: 0,
            tail,
            resumable: false,
            cut: None,
        };
        if let Some(first) = &first {
            body.account(first);
        }
        body.first = first;
        body
    }

    /// Makes a cut end the body quietly (see [`Cut`]); the hang is then neither decided nor
    /// reported here: the resumption does both.
    #[must_use]
    pub fn resumable(mut self) -> Self {
        self.resumable = true;
        self
    }

    /// How the body was cut, once it ended (`None`: it ended complete, or is still going).
    pub fn take_cut(&mut self) -> Option<Cut> {
        self.cut.take()
    }

    /// What the body watched with, for the resumption to go on with.
    pub fn into_watch(self) -> BodyWatch {
        self.watch
    }

    fn account(&mut self, chunk: &[u8]) {
        self.received += chunk.len() as u64;
        if self.watch.completeness.ends_with_done {
            let keep = chunk.len().min(TAIL);
            self.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
            if self.tail.len() > TAIL {
                let excess = self.tail.len() - TAIL;
                self.tail.drain(..excess);
            }
        }
    }

    /// Why the body that just ended is incomplete, if it is.
    fn incomplete(&self) -> Option<String> {
        let completeness = self.watch.completeness;
        if let Some(length) = completeness.length {
            if self.received < length {
                return Some(format!(
                    "the model server's response broke off after {} of {length} bytes",
                    self.received
                ));
            }
        }
        if completeness.ends_with_done {
            let tail = String::from_utf8_lossy(&self.tail);
            if !tail.trim_end().ends_with("[DONE]") {
                return Some(
                    "the model server's event stream broke off before its final `data: [DONE]`"
                        .to_owned(),
                );
            }
        }
        None
    }

    fn failure(&mut self, message: &str) -> Poll<Option<Result<Bytes, actix_web::Error>>> {
        self.done = true;
        if self.resumable {
            self.cut = Some(Cut {
                outcome: AttemptOutcome::ConnectionReset,
                message: message.to_owned(),
            });
            return Poll::Ready(None);
        }
        self.watch
            .shared
            .metrics
            .request_failed(FailureClass::Truncated);
        warn!(generation = self.watch.plan.generation().get(), "{message}");
        if self.watch.sse {
            Poll::Ready(Some(Ok(sse_error_event(message))))
        } else {
            Poll::Ready(Some(Err(ErrorBadGateway(message.to_owned()))))
        }
    }
}

/// Ends a cut stream that is not resumed, as a body that is not resumable ends: the attempt's
/// hang (if it was one) is reported, the failure counted and logged, and the client gets the
/// error event.
pub fn end_cut(watch: &mut BodyWatch, outcome: AttemptOutcome, message: &str) -> Bytes {
    let decision = watch.plan.decide(outcome);
    if let Some(hang) = decision.report {
        watch.shared.coordinator.do_send(HangReport(hang));
    }
    watch.shared.metrics.request_failed(FailureClass::Truncated);
    warn!(generation = watch.plan.generation().get(), "{message}");
    sse_error_event(message)
}

/// An SSE `error` event in the shape OpenAI clients raise on.
pub fn sse_error_event(message: &str) -> Bytes {
    let body = serde_json::json!({
        "error": {
            "message": message,
            "type": "upstream_failed",
            "code": "respawn_stream_interrupted",
        }
    });
    Bytes::from(format!("event: error\ndata: {body}\n\n"))
}

impl<S> Stream for WatchedBody<S>
where
    S: Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let now = this.watch.shared.clock.now();
                this.watch.plan.on_chunk(now);
                this.watch.shared.in_flight.heard(now);
                this.account(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                if let Some(why) = this.incomplete() {
                    let message = format!(
                        "{why}; the request cannot be replayed because part of the answer was already sent"
                    );
                    return this.failure(&message);
                }
                this.done = true;
                this.watch.shared.answered(this.watch.suspect.take());
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                let message = format!(
                    "the model server's response broke off mid-stream ({err}); the request cannot be replayed because part of the answer was already sent"
                );
                this.failure(&message)
            }
            Poll::Pending => loop {
                let clock = this.watch.shared.clock;
                let deadline = clock.instant(this.watch.plan.deadline().unwrap_or_default());
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if stall.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let life = this
                    .watch
                    .shared
                    .snapshot
                    .life_of(this.watch.plan.generation());
                let Some(outcome) = this.watch.plan.check(clock.now(), life) else {
                    // Chunks came since the timer was set, or the server shows life elsewhere:
                    // follow the deadline the plan gives now.
                    let next = clock.instant(this.watch.plan.deadline().unwrap_or_default());
                    stall.as_mut().reset(next);
                    continue;
                };
                let message = match outcome {
                    AttemptOutcome::DeadlineExceeded => "the request's overall deadline passed mid-stream; the request cannot be replayed because part of the answer was already sent".to_owned(),
                    AttemptOutcome::TookTooLong => "the stream waited longer than --max-request-time on a busy server; the request cannot be replayed because part of the answer was already sent".to_owned(),
                    _ => format!(
                        "the model server stalled for {:?} mid-stream; it is being restarted, and the request cannot be replayed because part of the answer was already sent",
                        this.watch.plan.deadlines().between_chunks
                    ),
                };
                if this.resumable {
                    this.done = true;
                    this.cut = Some(Cut { outcome, message });
                    return Poll::Ready(None);
                }
                let decision = this.watch.plan.decide(outcome);
                if let Some(hang) = decision.report {
                    this.watch.shared.coordinator.do_send(HangReport(hang));
                }
                return this.failure(&message);
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_error_event_is_one_parseable_event() {
        let event = sse_error_event("stalled");
        let text = std::str::from_utf8(&event).unwrap();
        assert!(text.starts_with("event: error\ndata: "));
        assert!(text.ends_with("\n\n"));
        let data = text.lines().nth(1).unwrap().trim_start_matches("data: ");
        let json: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(json["error"]["message"], "stalled");
    }
}
