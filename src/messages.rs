//! Every message between respawn's actors, in one place.
//!
//! The coordinator owns the supervision machine ([`respawn_core::Supervision`]); the other actors
//! are its drivers and reach it only by these messages. Detectors report what they saw
//! ([`HangReport`], [`ProbeResult`], [`ProgressSample`], [`CanaryResult`]) and ask what to do next
//! ([`ProbeResult`] answers when to probe again, [`LivenessTick`] what to look at); operators ask
//! for a restart ([`RestartNow`]) or the end ([`Shutdown`]). The restart strategies' `Restart`
//! and the server's `ServerExited` belong to `respawn-backends`, which owns processes.

use std::time::Duration;

use actix::Message;
use actix_web::http::header::HeaderMap;
use actix_web::http::Method;
use bytes::Bytes;
use respawn_core::{
    Fingerprint, Generation, Hang, LivenessStep, NextProbe, OperatorRestart, ProbeAnswer,
    ProgressReading,
};

use crate::call_error::CallError;

/// A detector saw a hang: the one [`Hang`] type of respawn-core, as a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct HangReport(pub Hang);

/// Start probing `generation`, which was just started: at once, then as the coordinator says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Watch {
    /// The generation to probe.
    pub generation: Generation,
}

/// A health probe of `generation` got `answer`. The coordinator answers when to probe next
/// (`None`: stop; a new [`Watch`] will come).
#[derive(Clone, Debug, PartialEq, Eq, Message)]
#[rtype(result = "Option<NextProbe>")]
pub struct ProbeResult {
    /// The generation probed.
    pub generation: Generation,
    /// What came back.
    pub answer: ProbeAnswer,
    /// The first bytes of the body of an answer that was not a success, for the log.
    pub body_head: Option<String>,
}

/// The liveness detectors' periodic question: what should be looked at now? The coordinator
/// answers with a [`LivenessOrder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "LivenessOrder")]
pub struct LivenessTick {
    /// Requests in flight now.
    pub in_flight: usize,
    /// When a request last started or ended (on the supervisor's clock).
    pub last_activity: Duration,
    /// Requests that got an answer so far (growth is a sign of life).
    pub answered: u64,
}

/// What the liveness detectors should do, and for which generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, actix::MessageResponse)]
pub struct LivenessOrder {
    /// The generation to look at.
    pub generation: Generation,
    /// What to do.
    pub step: LivenessStep,
}

/// A reading of `generation`'s progress counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct ProgressSample {
    /// The generation read.
    pub generation: Generation,
    /// What was read.
    pub reading: ProgressReading,
}

/// The idle canary sent to `generation` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct CanaryResult {
    /// The generation asked.
    pub generation: Generation,
    /// False when no answer came within the canary timeout.
    pub answered: bool,
}

/// Restart now, whatever the health of the server (the operator's button). Answers the
/// generation being replaced. Not an incident: no backoff, no count toward the restart limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "Generation")]
pub struct RestartNow {
    /// Who asked.
    pub by: OperatorRestart,
}

/// A request with this fingerprint was answered in full: it is not poison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct RequestSucceeded {
    /// The request's fingerprint.
    pub fingerprint: Fingerprint,
}

/// A request of this fingerprint, which is on trial, was sent as the one trial request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct TrialStarted {
    /// The fingerprint on trial.
    pub fingerprint: Fingerprint,
}

/// The trial request of this fingerprint ended (answered, cut, or its client left).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct TrialEnded {
    /// The fingerprint on trial.
    pub fingerprint: Fingerprint,
}

/// Lift every quarantine and forget every suspicion (the operator's `DELETE
/// /respawn/quarantine`). Answers how many fingerprints were quarantined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "usize")]
pub struct ClearQuarantine;

/// Stop supervising: stop the child's whole process group and stay stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    /// SIGTERM → SIGKILL grace for the child.
    pub grace: Duration,
}

/// A complete response.
#[derive(Clone, Debug)]
pub struct CallResponse {
    /// The status.
    pub status: actix_web::http::StatusCode,
    /// The body.
    pub body: bytes::Bytes,
    /// The generation that answered.
    pub generation: Generation,
    /// Attempts it took, across stalls and restarts.
    pub attempts: u32,
}

/// Send this request through the `ClientActor` and answer with the complete response.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<CallResponse, CallError>")]
pub struct Call {
    /// The HTTP method.
    pub method: Method,
    /// Path and query, e.g. `/v1/chat/completions`. One that no HTTP request can carry (no
    /// leading `/`, a space, `<`) is refused before anything is sent:
    /// [`CallError::InvalidPath`].
    pub path: String,
    /// Headers to send.
    pub headers: HeaderMap,
    /// The body.
    pub body: bytes::Bytes,
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
