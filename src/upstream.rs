//! Sending one request to the model server under the core's request plan.
//!
//! This is the original design's `call_vllm_api` loop, rebuilt on the core: each request carries a
//! [`RequestPlan`] (its attempt bound, its deadlines, what each failure means); each attempt is
//! tagged with the generation it went to; a deadline passed in silence is reported as a hang for
//! that generation and the retry waits for the next one; a 5xx backs off; nothing is replayed once
//! a byte reached the client. Before each attempt the request checks the supervisor's one-word
//! [`Snapshot`](respawn_core::Snapshot): no lock, no actor hop, unless the server is not ready or
//! the poison table changed. The proxy and the `ClientActor` both use it. It is a plain value
//! owned by each actix-web worker (awc's client is `!Send`), so the data path never funnels
//! through one thread or one actor.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::http::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, HOST};
use actix_web::http::uri::{Authority, PathAndQuery, Scheme};
use actix_web::http::Method;
use actix_web::http::Uri;
use actix_web::rt::net::TcpStream;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use respawn_core::{
    Admission, AttemptOutcome, Fingerprint, Generation, Next, RequestConfig, RequestPlan,
};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::coordinator::RestartCoordinator;
use crate::in_flight::{InFlight, InFlightGuard};
use crate::messages::{HangReport, RequestSucceeded, TrialEnded, TrialStarted};
use crate::metrics::Metrics;
use crate::state::{wait_ready, Clock, PoisonCache, SharedSnapshot, SupervisorState, WaitError};
use crate::waiting::WaitBound;

/// How requests are sent and retried.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// `http://host:port` of the model server, without a trailing slash.
    pub base_url: String,
    /// Attempts, deadlines, and whether hangs lead to restarts.
    pub request: RequestConfig,
    /// How long a request waits for a ready server (during a start or a restart), in all: the
    /// time bound of the [waiting requests](crate::waiting); their count and bytes are bounded
    /// by the [`Waiting`](crate::waiting::Waiting) that [`Metrics::waiting`] shows.
    pub wait_bound: Duration,
    /// How cut streams are resumed (its mode resolved: never `Auto`).
    pub resume: respawn_core::ResumeConfig,
}

/// What every worker's `Upstream` shares.
#[derive(Debug)]
pub struct UpstreamShared {
    /// Sending and retry settings.
    pub config: UpstreamConfig,
    /// The supervisor's published state, for requests that must wait.
    pub state: watch::Receiver<SupervisorState>,
    /// The supervisor's one-word snapshot, checked before every attempt.
    pub snapshot: Arc<SharedSnapshot>,
    /// The supervisor's clock.
    pub clock: Clock,
    /// Where hangs are reported.
    pub coordinator: Addr<RestartCoordinator>,
    /// Shared counters.
    pub metrics: Arc<Metrics>,
    /// The requests in flight.
    pub in_flight: Arc<InFlight>,
    /// This server's index in its pool (0 for a lone server): where a trial request went.
    pub replica: usize,
}

impl UpstreamShared {
    /// A request's answer reached its end whole: a sign of life of the server that gave it, and,
    /// for a poison suspect, its success told to the coordinator.
    pub fn answered(&self, suspect: Option<Fingerprint>) {
        self.in_flight.answered();
        if let Some(fingerprint) = suspect {
            self.coordinator.do_send(RequestSucceeded { fingerprint });
        }
    }
}

/// Who a request is, for the quarantine: its fingerprint, its place in the in-flight table once
/// it is admitted, and the trial slot while it is the one request on trial. Dropping it ends all
/// three.
#[derive(Debug)]
pub struct Identity {
    /// What it asks, hashed.
    pub fingerprint: Fingerprint,
    guard: Option<InFlightGuard>,
    trial: Option<TrialGuard>,
}

impl Identity {
    /// A request of `fingerprint`, not admitted yet.
    pub fn new(fingerprint: Fingerprint) -> Self {
        Self {
            fingerprint,
            guard: None,
            trial: None,
        }
    }

    /// A request already registered in the in-flight table.
    #[cfg(test)]
    pub(crate) fn entered(fingerprint: Fingerprint, guard: InFlightGuard) -> Self {
        Self {
            fingerprint,
            guard: Some(guard),
            trial: None,
        }
    }

    /// Whether it holds the trial slot.
    pub fn on_trial(&self) -> bool {
        self.trial.is_some()
    }
}

/// Holds the server-wide trial slot for one request; frees it (and tells the coordinator) when
/// dropped.
#[derive(Debug)]
struct TrialGuard {
    snapshot: Arc<SharedSnapshot>,
    coordinator: Addr<RestartCoordinator>,
    fingerprint: Fingerprint,
}

impl Drop for TrialGuard {
    fn drop(&mut self) {
        self.snapshot.release_trial(self.fingerprint);
        self.coordinator.do_send(TrialEnded {
            fingerprint: self.fingerprint,
        });
    }
}

/// One request to send: method, path and query, headers (already stripped of hop-by-hop ones) and
/// the body, held so that it can be sent again.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The HTTP method.
    pub method: Method,
    /// Path and query, starting with `/` (parsed once: the proxy takes the client's, already
    /// parsed by actix-web, and each attempt's URI is put together from it without a copy).
    pub path_and_query: PathAndQuery,
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
    /// The length the response's head declares, if any.
    pub length: Option<u64>,
    /// `first` is the whole body: the head declared its length, and the end that follows was read
    /// at once (which gave the connection back to the client's pool). `response` then has no body
    /// left, and the answer can go to the client whole.
    pub complete: bool,
}

pub use crate::call_error::CallError;

/// Whether a response to `method` with `status` has a body (RFC 9110 §6.4.1): never for `HEAD`,
/// nor for 1xx, 204 and 304, whatever `Content-Length` the head declares.
pub fn response_has_body(method: &Method, status: actix_web::http::StatusCode) -> bool {
    use actix_web::http::StatusCode;
    !(method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// A worker's sender: its own awc client and poison-table copy, plus the shared state.
#[derive(Clone)]
pub struct Upstream {
    shared: Arc<UpstreamShared>,
    client: awc::Client,
    poison: Rc<PoisonCache>,
    /// The `Host` every request carries (the model server's), made once rather than written by
    /// the client for each request.
    host: Option<HeaderValue>,
    /// The last generation's `x-respawn-generation` value, made once per generation.
    generation_value: Rc<RefCell<Option<(Generation, HeaderValue)>>>,
    /// The model server's scheme and authority, parsed once (see [`origin`]).
    origin: Option<Rc<(Scheme, Authority)>>,
}

/// The scheme and authority of the base URL (`http://host:port`), kept once per worker: each
/// attempt's URI is then put together from these parts and the request's parsed path, where
/// a URL written out as text would be allocated and parsed again for every attempt. `None` when
/// the base URL has a path of its own: the request's path is then appended to it as text.
fn origin(base: &Uri) -> Option<Rc<(Scheme, Authority)>> {
    if !matches!(base.path(), "" | "/") || base.query().is_some() {
        return None;
    }
    Some(Rc::new((base.scheme()?.clone(), base.authority()?.clone())))
}

/// The `Host` header for requests to the base URL (`http://host:port`): the host, with the port
/// unless it is the scheme's default, as an HTTP client writes it.
fn host_header(base: &Uri) -> Option<HeaderValue> {
    let host = base.host()?;
    let value = match base.port_u16() {
        None | Some(80) | Some(443) => host.to_owned(),
        Some(port) => format!("{host}:{port}"),
    };
    HeaderValue::try_from(value).ok()
}

/// Builds the awc client respawn uses towards the model server: no connection limit (256
/// requests in flight must not queue behind a pool of 100), no redirects, no default headers,
/// no timeout of its own (the request plan's deadlines are the only ones), and connections with
/// Nagle's algorithm off (see [`tcp_connector`]).
pub fn build_client() -> awc::Client {
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .connector(tcp_connector())
                .limit(0)
                .timeout(Duration::from_secs(5)),
        )
        .disable_redirects()
        .no_default_headers()
        .disable_timeout()
        .finish()
}

/// The TCP connector towards the model server: awc's own, with `TCP_NODELAY` set on every new
/// connection. awc writes a request that does not fit its 8 KiB write buffer (a long prompt) in
/// several writes; with Nagle's algorithm on, a write after the first may wait for the ACK of the
/// one before, which the server may delay (delayed ACK) since it has nothing to answer before
/// the whole request has come.
pub fn tcp_connector() -> impl actix_service::Service<
    actix_tls::connect::ConnectInfo<Uri>,
    Response = actix_tls::connect::Connection<Uri, TcpStream>,
    Error = actix_tls::connect::ConnectError,
> + Clone {
    use actix_service::ServiceExt;
    actix_tls::connect::Connector::new(actix_tls::connect::Resolver::default())
        .service()
        .map(
            |connection: actix_tls::connect::Connection<Uri, TcpStream>| {
                if let Err(err) = connection.io_ref().set_nodelay(true) {
                    debug!(%err, "could not set TCP_NODELAY towards the model server");
                }
                connection
            },
        )
}

impl Upstream {
    /// A sender for this worker.
    pub fn new(shared: Arc<UpstreamShared>) -> Self {
        let base: Option<Uri> = shared.config.base_url.parse().ok();
        let host = base.as_ref().and_then(host_header);
        let origin = base.as_ref().and_then(origin);
        Self {
            shared,
            client: build_client(),
            poison: Rc::new(PoisonCache::default()),
            host,
            generation_value: Rc::new(RefCell::new(None)),
            origin,
        }
    }

    /// A request to `path_and_query` on the model server, its URI put together from parts when
    /// the base URL has no path of its own, written out as text otherwise.
    fn request(&self, method: Method, path_and_query: &PathAndQuery) -> awc::ClientRequest {
        if let Some(origin) = &self.origin {
            let mut parts = actix_web::http::uri::Parts::default();
            parts.scheme = Some(origin.0.clone());
            parts.authority = Some(origin.1.clone());
            parts.path_and_query = Some(path_and_query.clone());
            if let Ok(uri) = Uri::from_parts(parts) {
                return self.client.request(method, uri);
            }
        }
        let base = &self.shared.config.base_url;
        let mut url = String::with_capacity(base.len() + path_and_query.as_str().len());
        url.push_str(base);
        url.push_str(path_and_query.as_str());
        self.client.request(method, url)
    }

    /// The `x-respawn-generation` value for `generation`: this worker's copy while the
    /// generation lasts (a header value's clone shares its bytes).
    pub fn generation_value(&self, generation: Generation) -> HeaderValue {
        let mut cached = self.generation_value.borrow_mut();
        match &*cached {
            Some((g, value)) if *g == generation => value.clone(),
            _ => {
                let value = HeaderValue::from(generation.get());
                *cached = Some((generation, value.clone()));
                value
            }
        }
    }

    /// What this sender shares with the others.
    pub fn shared(&self) -> &Arc<UpstreamShared> {
        &self.shared
    }

    /// A plan for a new request.
    pub fn plan(&self) -> RequestPlan {
        RequestPlan::new(self.shared.config.request)
    }

    /// Waits until the quarantine lets `id` be sent: at once when it is not suspected (one
    /// atomic load while nothing ever was); as the one trial request when it is on trial and
    /// the trial may start; after the verdict when it is a twin of the request on trial, or a
    /// suspect while a trial runs. Registers the request as in flight when it goes.
    pub(crate) async fn admit(&self, id: &mut Identity) -> Result<(), CallError> {
        let shared = &self.shared;
        // The common case, nothing ever suspected: one atomic load, no clock, no lock.
        if shared.snapshot.board().epoch() != 0 {
            let bound = shared.config.wait_bound;
            // Running time: a pause of the machine is not time waited (crate::clock).
            let began = Clock::new();
            while !self.look(id)? {
                // Registered before looking again, so that no verdict is missed in between.
                let changed = shared.snapshot.changed().notified();
                let mut changed = std::pin::pin!(changed);
                changed.as_mut().enable();
                if self.look(id)? {
                    break;
                }
                let waited = began.now();
                if waited >= bound {
                    return Err(WaitError::TimedOut { waited }.into());
                }
                // A verdict or a free slot wakes us; a suspect that ends without one is seen at
                // the next look.
                let look_again = Duration::from_millis(100).min(bound - waited);
                let _ = tokio::time::timeout(look_again, changed).await;
            }
        }
        if let Some(trial) = &id.trial {
            // Every attempt of the trial request is the trial (a hang during it is the verdict).
            shared.coordinator.do_send(TrialStarted {
                fingerprint: trial.fingerprint,
            });
        }
        if id.guard.is_none() {
            id.guard = Some(shared.in_flight.enter(id.fingerprint));
        }
        Ok(())
    }

    /// One look at the quarantine for `id`: `true` when it may go now (taking the trial slot if
    /// it is its turn), `false` when it must wait, an error when it is refused.
    fn look(&self, id: &mut Identity) -> Result<bool, CallError> {
        let shared = &self.shared;
        let board = shared.snapshot.board();
        // The table's times are on its writer's clock (a pool's own, for a pool's replicas).
        let now = board.clock().now();
        match self.poison.admit(board, id.fingerprint, now) {
            Admission::Go => Ok(true),
            Admission::Refused(conviction) => Err(CallError::Quarantined {
                hangs: conviction.hangs,
                remaining: conviction.expires.saturating_sub(now),
            }),
            Admission::Trial if id.trial.is_some() => Ok(true),
            Admission::Trial => {
                let fingerprint = id.fingerprint;
                // Not on the server while it waits: neither busy for the progress watch nor
                // present at a hang.
                id.guard = None;
                let claimed = board.claim_trial(fingerprint, shared.replica, || {
                    // Its twins (the same fingerprint) are no other suspect.
                    let others = shared
                        .in_flight
                        .fingerprints()
                        .into_iter()
                        .filter(|fp| *fp != fingerprint)
                        .collect();
                    self.poison.may_start_trial(board, others)
                });
                if claimed {
                    id.trial = Some(TrialGuard {
                        snapshot: Arc::clone(&shared.snapshot),
                        coordinator: shared.coordinator.clone(),
                        fingerprint,
                    });
                }
                Ok(claimed)
            }
            Admission::Wait => {
                id.guard = None;
                Ok(false)
            }
        }
    }

    /// Whether this fingerprint was in flight at a hang and has not succeeded since (its success
    /// must be reported, to clear it).
    pub fn is_suspect(&self, fingerprint: Fingerprint) -> bool {
        self.poison
            .is_suspect(self.shared.snapshot.board(), fingerprint)
    }

    /// Waits until a generation at least `want` is ready: one atomic load when it already is.
    ///
    /// Otherwise the request waits among the [`Waiting`](crate::waiting::Waiting) ones, holding
    /// `bytes` of body, or is refused at once when that would pass their bounds; and it waits no
    /// longer than what is left of the wait bound after the `waited` it already spent (which
    /// grows by this wait), so that a request caught by several restarts does not wait for each
    /// in full.
    async fn ready(
        &self,
        state: &mut Option<watch::Receiver<SupervisorState>>,
        want: Generation,
        bytes: u64,
        waited: &mut Duration,
    ) -> Result<Generation, WaitError> {
        let snapshot = self.shared.snapshot.load();
        if snapshot.ready_for(want) {
            return Ok(snapshot.generation);
        }
        let waiting = self.shared.metrics.waiting();
        let _place = waiting.try_enter(bytes).map_err(|bound| {
            let limits = waiting.limits();
            let limit = match bound {
                WaitBound::Requests => u64::try_from(limits.max_requests).unwrap_or(u64::MAX),
                WaitBound::Bytes | WaitBound::Time => limits.max_bytes,
            };
            debug!(
                generation = snapshot.generation.get(),
                bound = bound.as_str(),
                limit,
                "the server is not ready and the request cannot wait for it: refused"
            );
            WaitError::Full { bound, limit }
        })?;
        let state = state.get_or_insert_with(|| self.shared.state.clone());
        let left = self.shared.config.wait_bound.saturating_sub(*waited);
        let began = Clock::new();
        let ready = wait_ready(state, want, left).await;
        *waited += began.now();
        match ready {
            Err(WaitError::TimedOut { .. }) => {
                waiting.refuse(WaitBound::Time);
                Err(WaitError::TimedOut { waited: *waited })
            }
            other => other,
        }
    }

    /// Sends `out` until its head and first chunk arrive, attempts and retries as `plan` says;
    /// the first attempt goes to generation `want` or a later one.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the attempt in progress, which closes its upstream
    /// connection (the model server stops generating for a client that left).
    pub async fn deliver(
        &self,
        out: &Outgoing,
        id: &mut Identity,
        plan: &mut RequestPlan,
        mut want: Generation,
    ) -> Result<Delivered, CallError> {
        let mut state = None;
        let bytes = u64::try_from(out.body.len()).unwrap_or(u64::MAX);
        let mut waited = Duration::ZERO;
        loop {
            self.admit(id).await?;
            let generation = self.ready(&mut state, want, bytes, &mut waited).await?;
            if state.is_some() {
                // It waited for a restart: the verdicts may have changed meanwhile.
                self.admit(id).await?;
            }
            plan.begin(self.shared.clock.now(), generation);
            let (outcome, answered) = match self.attempt(out, plan).await {
                Ok(delivered) => {
                    let status = delivered.response.status();
                    if status.is_server_error() {
                        let status = status.as_u16();
                        (AttemptOutcome::ServerError { status }, Some(delivered))
                    } else {
                        let mut delivered = delivered;
                        delivered.attempts = plan.attempts() + 1;
                        self.shared.in_flight.answered();
                        return Ok(delivered);
                    }
                }
                Err(outcome) => (outcome, None),
            };
            match (
                self.after_failure(plan, outcome, &mut state).await,
                answered,
            ) {
                (Ok(next), _) => want = next,
                // The server's own 5xx is the most honest answer once retries are spent.
                (Err(CallError::GaveUp { .. }), Some(mut delivered)) => {
                    delivered.attempts = plan.attempts();
                    return Ok(delivered);
                }
                (Err(err), _) => return Err(err),
            }
        }
    }

    /// Carries out the plan's decision after an attempt failed with `outcome`: reports the hang
    /// it found, waits as decided, and answers the generation the next attempt needs (or why the
    /// request ends).
    pub async fn after_failure(
        &self,
        plan: &mut RequestPlan,
        outcome: AttemptOutcome,
        state: &mut Option<watch::Receiver<SupervisorState>>,
    ) -> Result<Generation, CallError> {
        let decision = plan.decide(outcome);
        self.carry_out(plan, outcome, decision, state, Report::Tell)
            .await
    }

    /// Like [`after_failure`](Self::after_failure), for a replica of a pool, whose request's
    /// next attempt goes to another replica at once:
    /// * a hang it reports is acknowledged by the coordinator before it answers, so that the
    ///   next replica finds this hang's suspects already counted in the pool's quarantine table
    ///   (or a poison request would wedge it before its strike is counted);
    /// * when `elsewhere` (another replica is ready), a broken connection is not rechecked here
    ///   (no wait to see whether this replica restarts): the request moves at once, and answers
    ///   the same generation.
    pub async fn after_failure_counted(
        &self,
        plan: &mut RequestPlan,
        outcome: AttemptOutcome,
        state: &mut Option<watch::Receiver<SupervisorState>>,
        elsewhere: bool,
    ) -> Result<Generation, CallError> {
        let decision = plan.decide(outcome);
        self.carry_out(
            plan,
            outcome,
            decision,
            state,
            Report::Acknowledged { elsewhere },
        )
        .await
    }

    /// Carries out the plan's decision after a stream that had reached its client was cut with
    /// `outcome` and judged resumable: as [`after_failure`](Self::after_failure), and answers the
    /// generation the continuation goes to (or why the stream ends).
    pub async fn after_cut(
        &self,
        plan: &mut RequestPlan,
        outcome: AttemptOutcome,
        state: &mut Option<watch::Receiver<SupervisorState>>,
    ) -> Result<Generation, CallError> {
        let decision = plan.decide_cut(outcome);
        self.carry_out(plan, outcome, decision, state, Report::Tell)
            .await
    }

    /// Like [`after_cut`](Self::after_cut), for a replica of a pool, whose continuation goes
    /// to another replica at once: the hang is acknowledged (counted in the pool's quarantine)
    /// before it answers, and when `elsewhere` a broken connection is not rechecked here, as
    /// in [`after_failure_counted`](Self::after_failure_counted).
    pub async fn after_cut_counted(
        &self,
        plan: &mut RequestPlan,
        outcome: AttemptOutcome,
        state: &mut Option<watch::Receiver<SupervisorState>>,
        elsewhere: bool,
    ) -> Result<Generation, CallError> {
        let decision = plan.decide_cut(outcome);
        self.carry_out(
            plan,
            outcome,
            decision,
            state,
            Report::Acknowledged { elsewhere },
        )
        .await
    }

    async fn carry_out(
        &self,
        plan: &mut RequestPlan,
        outcome: AttemptOutcome,
        decision: respawn_core::Decision,
        state: &mut Option<watch::Receiver<SupervisorState>>,
        report: Report,
    ) -> Result<Generation, CallError> {
        let shared = &self.shared;
        let generation = plan.generation();
        debug!(
            generation = generation.get(),
            ?outcome,
            ?decision,
            "attempt failed"
        );
        if let Some(hang) = decision.report {
            match report {
                Report::Tell => shared.coordinator.do_send(HangReport(hang)),
                Report::Acknowledged { .. } => {
                    // A coordinator that is gone counts nothing more: nothing to wait for.
                    let _ = shared.coordinator.send(HangReport(hang)).await;
                }
            }
        }
        let give_up = |reason| CallError::GaveUp {
            reason,
            last: describe(outcome),
            status: match outcome {
                AttemptOutcome::FirstByteTimeout
                | AttemptOutcome::Stall
                | AttemptOutcome::TookTooLong
                | AttemptOutcome::DeadlineExceeded => 504,
                _ => 502,
            },
        };
        let next = match decision.next {
            Next::Done | Next::RetryNow => generation,
            Next::RetryAfter(delay) => {
                tokio::time::sleep(delay).await;
                generation
            }
            Next::WaitForGeneration(next) => next,
            Next::Recheck { .. }
            | Next::Continue {
                within: Some(_), ..
            } if matches!(report, Report::Acknowledged { elsewhere: true }) => generation,
            Next::Recheck { next, within }
            | Next::Continue {
                after: next,
                within: Some(within),
            } => {
                // A dead server shows up as a restart at once; a stale keep-alive connection
                // leaves the same generation ready, and the retry goes there.
                let state = state.get_or_insert_with(|| shared.state.clone());
                match wait_ready(state, next, within).await {
                    Ok(_) => next,
                    Err(WaitError::TimedOut { .. }) => generation,
                    Err(err) => return Err(err.into()),
                }
            }
            // The continuation is delivered like a retry: it waits for this generation.
            Next::Continue {
                after: next,
                within: None,
            } => next,
            Next::GiveUp(reason) => return Err(give_up(reason)),
        };
        shared.metrics.request_retried();
        Ok(next)
    }

    pub(crate) async fn attempt(
        &self,
        out: &Outgoing,
        plan: &mut RequestPlan,
    ) -> Result<Delivered, AttemptOutcome> {
        let shared = &self.shared;
        let generation = plan.generation();
        let mut request = self.request(out.method.clone(), &out.path_and_query);
        // Into the client's own map (made with room for 16 names): no second map per attempt.
        let headers = request.headers_mut();
        for (name, value) in out.headers.iter() {
            headers.append(name.clone(), value.clone());
        }
        if let Some(host) = &self.host {
            if !headers.contains_key(HOST) {
                headers.insert(HOST, host.clone());
            }
        }
        // What awc spawns inside the send (a date service per request) is set aside: see `aside`.
        let sent = crate::aside::SpawnAside(request.send_body(out.body.clone()));
        let mut response = match self.before_deadline(plan, sent).await? {
            Err(err) => {
                let outcome = classify_send_error(&err);
                debug!(generation = generation.get(), error = %err, ?outcome, "the request was not sent");
                return Err(outcome);
            }
            Ok(response) => response,
        };
        let length = declared_length(&response);
        if !response_has_body(&out.method, response.status()) {
            // Nothing follows the head (HEAD, 204, 304): waiting for a first chunk would wait for
            // bytes that never come, even when the head declares a length.
            return Ok(Delivered {
                response,
                first: None,
                generation,
                attempts: 0,
                length,
                complete: false,
            });
        }
        // A small answer is usually complete with its head: take it without arming a timer.
        let next = match response.next().now_or_never() {
            Some(item) => item,
            None => self.before_deadline(plan, response.next()).await?,
        };
        let mut first = match next {
            None => None,
            Some(Ok(chunk)) => {
                plan.on_chunk(shared.clock.now());
                Some(chunk)
            }
            Some(Err(err)) => {
                warn!(generation = generation.get(), error = %err, "the response broke before its first byte");
                return Err(AttemptOutcome::ConnectionReset);
            }
        };
        let complete = match first.as_mut() {
            Some(chunk) if length == Some(chunk.len() as u64) => {
                whole(&mut response, chunk).map_err(|err| {
                    warn!(generation = generation.get(), error = %err, "the response broke after its first chunk");
                    AttemptOutcome::ConnectionReset
                })?
            }
            _ => false,
        };
        // A hung server is resumed (SIGCONT) only so that its SIGTERM gets through, and in that
        // moment it may start answering the requests that waited on it: an answer that begins
        // once its generation is being replaced is cut when the server dies. Nothing of it has
        // reached the client yet, so the request goes to the next generation instead, like any
        // other request the hang caught. Asked of the one-word snapshot (published before the
        // watch channel, with the same phase and generation): no lock on the request path.
        if self.shared.snapshot.load().replacing(generation) {
            debug!(generation = generation.get(), "an answer began after the restart of its generation had begun; dropped, the request goes to the next generation");
            return Err(AttemptOutcome::ConnectionReset);
        }
        Ok(Delivered {
            response,
            first,
            generation,
            attempts: 0,
            length,
            complete,
        })
    }
}

/// The length the response's head declares, if any (its last `Content-Length`, as the proxy
/// passes it on).
fn declared_length(response: &awc::ClientResponse) -> Option<u64> {
    response
        .headers()
        .get_all(CONTENT_LENGTH)
        .last()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// After `first`, which holds as many bytes as the head declared: reads the end of the body if it
/// is there already (it is, for a declared length: the decoder needs no more bytes to tell it),
/// which gives the connection back to the pool; then takes the body from `response`, which has
/// nothing left to give, and answers `true`. `false` when the end is not there yet (`response`
/// untouched, or with what came after `first` appended to it).
fn whole(
    response: &mut awc::ClientResponse,
    first: &mut Bytes,
) -> Result<bool, awc::error::PayloadError> {
    match response.next().now_or_never() {
        Some(None) => {
            // The stream ended: nothing may poll its connection again.
            drop(actix_web::HttpMessage::take_payload(response));
            Ok(true)
        }
        None => Ok(false),
        Some(Some(Err(err))) => Err(err),
        // More than the head declared: not a whole answer; the rest follows `first`.
        Some(Some(Ok(more))) => {
            let mut joined = bytes::BytesMut::with_capacity(first.len() + more.len());
            joined.extend_from_slice(first);
            joined.extend_from_slice(&more);
            *first = joined.freeze();
            Ok(false)
        }
    }
}

impl Upstream {
    /// Runs `work` until it finishes or the attempt ends: at each deadline the plan decides,
    /// given the last sign of life of the attempt's generation, whether the server's silence is
    /// a hang (the attempt ends), or it shows life and `work` keeps going.
    pub async fn before_deadline<F: std::future::Future>(
        &self,
        plan: &mut RequestPlan,
        work: F,
    ) -> Result<F::Output, AttemptOutcome> {
        let shared = &self.shared;
        let clock = shared.clock;
        let generation = plan.generation();
        let mut work = std::pin::pin!(work);
        loop {
            let deadline = clock.instant(plan.deadline().unwrap_or_default());
            match tokio::time::timeout_at(deadline, &mut work).await {
                Ok(output) => return Ok(output),
                Err(_) => {
                    let life = shared.snapshot.life_of(generation);
                    if let Some(outcome) = plan.check(clock.now(), life) {
                        return Err(outcome);
                    }
                    debug!(
                        generation = generation.get(),
                        "past the deadline, but the server shows life: waiting on"
                    );
                }
            }
        }
    }
}

/// How a hang found by a request is reported.
#[derive(Clone, Copy, Debug)]
enum Report {
    /// Sent without waiting: the request waits for the next generation anyway.
    Tell,
    /// Sent and waited for until the coordinator handled it; `elsewhere`: another replica of the
    /// pool is ready for the next attempt.
    Acknowledged {
        /// Another replica is ready: no recheck of this one.
        elsewhere: bool,
    },
}

fn classify_send_error(err: &awc::error::SendRequestError) -> AttemptOutcome {
    use awc::error::{ConnectError, SendRequestError};
    match err {
        SendRequestError::Timeout => AttemptOutcome::FirstByteTimeout,
        SendRequestError::Connect(ConnectError::Timeout) => AttemptOutcome::FirstByteTimeout,
        // The request went out on a connection that closed before the answer's head (a server
        // killed with the request on it, or a kept-alive connection it had closed): no refusal.
        SendRequestError::Connect(ConnectError::Disconnected) => AttemptOutcome::ConnectionReset,
        SendRequestError::Connect(_) => AttemptOutcome::ConnectionRefused,
        _ => AttemptOutcome::ConnectionReset,
    }
}

/// What an attempt ran into, for error messages.
pub fn describe(outcome: AttemptOutcome) -> String {
    match outcome {
        AttemptOutcome::Success => "success".to_owned(),
        AttemptOutcome::ConnectionRefused => "connection refused".to_owned(),
        AttemptOutcome::ConnectionReset => "connection reset".to_owned(),
        AttemptOutcome::FirstByteTimeout => "no first byte within the request timeout".to_owned(),
        AttemptOutcome::Stall => "the stream stalled".to_owned(),
        AttemptOutcome::ServerError { status } => format!("server error {status}"),
        AttemptOutcome::ClientError { status } => format!("client error {status}"),
        AttemptOutcome::Cancelled => "cancelled".to_owned(),
        AttemptOutcome::DeadlineExceeded => "the request's overall deadline passed".to_owned(),
        AttemptOutcome::TookTooLong => {
            "the request took longer than --max-request-time while the server was busy".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_service::Service;

    use super::*;

    #[actix_rt::test]
    async fn connections_to_the_model_server_have_nagle_off() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let uri: Uri = format!("http://127.0.0.1:{port}/").parse().expect("uri");
        let connector = tcp_connector();
        let connection = connector
            .call(actix_tls::connect::ConnectInfo::new(uri))
            .await
            .expect("connected");
        assert!(connection.io_ref().nodelay().expect("getsockopt"));
    }

    /// Nothing listening is a refusal; a connection that closed before the answer's head (the
    /// request may have reached the server) is a reset, whatever awc calls it.
    #[actix_rt::test]
    async fn a_connection_closed_before_the_head_is_a_reset_not_a_refusal() {
        let closing = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closing.local_addr().expect("address");
        let accept = std::thread::spawn(move || {
            let (mut conn, _) = closing.accept().expect("accept");
            let mut head = [0u8; 1024];
            let _ = std::io::Read::read(&mut conn, &mut head);
        });
        let client = awc::Client::default();
        let closed = client
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .expect_err("no answer");
        accept.join().expect("the acceptor");
        assert_eq!(
            classify_send_error(&closed),
            AttemptOutcome::ConnectionReset,
            "{closed}"
        );

        let nobody = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = nobody.local_addr().expect("address");
        drop(nobody);
        let refused = client
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .expect_err("nobody listens");
        assert_eq!(
            classify_send_error(&refused),
            AttemptOutcome::ConnectionRefused,
            "{refused}"
        );
    }

    /// An answer whose first chunk holds the length its head declares is whole: its end is read at
    /// once, which gives the connection back to the pool (the response is dropped at once, and
    /// three requests take one connection), and the response has nothing left to read.
    #[actix_rt::test]
    async fn a_whole_first_chunk_ends_the_answer_and_frees_its_connection() {
        let (port, closes) = crate::test_servers::keep_alive_server(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        );
        let client = build_client();
        for request in 0..3 {
            let mut response = client
                .get(format!("http://127.0.0.1:{port}/"))
                .send()
                .await
                .expect("an answer");
            let mut first = response.next().await.expect("a chunk").expect("not broken");
            assert_eq!(first, "hello");
            assert_eq!(declared_length(&response), Some(5));
            assert!(whole(&mut response, &mut first).expect("not broken"));
            assert_eq!(first, "hello", "the chunk is left as it was");
            if request == 2 {
                assert!(response.next().await.is_none(), "nothing after the end");
            }
        }
        drop(client);
        let first = closes
            .recv_timeout(Duration::from_secs(5))
            .expect("the connection closed with its client");
        assert_eq!(first, 0);
        assert!(
            closes.recv_timeout(Duration::from_millis(300)).is_err(),
            "one connection served the three requests"
        );
    }
}
