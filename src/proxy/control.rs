//! respawn's own routes under `/respawn/`: status, restart, quarantine, metrics, liveness and
//! readiness.

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use respawn_core::Phase;
use std::sync::Arc;
use tokio::sync::watch;

use crate::auth::AdminToken;
use crate::coordinator::RestartCoordinator;
use crate::in_flight::InFlight;
use crate::messages::{ClearQuarantine, RestartNow};
use crate::metrics::Metrics;
use crate::proxy::forward::error_response;
use crate::state::{unix_now_s, Clock, SharedSnapshot, SupervisorState};
use crate::status::{QuarantinedFingerprint, StatusDocument};
use crate::supervisor::Supervisor;

/// What the control routes read.
#[derive(Clone)]
pub struct Control {
    /// The server's name.
    pub name: String,
    /// The published state.
    pub state: watch::Receiver<SupervisorState>,
    /// Where a manual restart goes.
    pub coordinator: Addr<RestartCoordinator>,
    /// Shared counters.
    pub metrics: Arc<Metrics>,
    /// The requests in flight.
    pub in_flight: Arc<InFlight>,
    /// The bearer token `POST /respawn/restart` requires; `None` refuses everyone.
    pub token: Option<AdminToken>,
    /// How the owned server's processes are contained (`cgroup`, `guardian`, ...); `None` for a
    /// server respawn does not own.
    pub containment: Option<&'static str>,
    /// The machine's published snapshot (the quarantine table).
    pub snapshot: Arc<SharedSnapshot>,
    /// The supervisor's clock.
    pub clock: Clock,
}

impl Control {
    /// The control surface of `supervisor`, guarded by `token` (`None` refuses every restart).
    pub fn of(supervisor: &Supervisor, token: Option<AdminToken>) -> Self {
        Self {
            name: supervisor.name().to_owned(),
            state: supervisor.state(),
            coordinator: supervisor.coordinator().clone(),
            metrics: Arc::clone(supervisor.metrics()),
            in_flight: Arc::clone(supervisor.in_flight()),
            token,
            containment: supervisor.containment().map(|mode| mode.as_str()),
            snapshot: Arc::clone(supervisor.snapshot()),
            clock: supervisor.clock(),
        }
    }
}

/// Registers the `/respawn/*` routes.
///
/// The whole `/respawn/` prefix is respawn's: a path or method it does not serve is answered
/// here (404, 405 with `Allow`), never forwarded to the model server, and every read-only route
/// answers `HEAD` itself (the head of its `GET`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/respawn")
            .service(readable("/status", status))
            .service(
                web::resource("/restart")
                    .route(web::post().to(restart))
                    .default_service(web::to(|| method_not_allowed("POST"))),
            )
            .service(
                web::resource("/quarantine")
                    .route(web::delete().to(clear_quarantine))
                    .default_service(web::to(|| method_not_allowed("DELETE"))),
            )
            .service(readable("/metrics", metrics))
            .service(readable("/livez", livez))
            .service(readable("/readyz", readyz))
            .default_service(web::to(not_found)),
    );
}

impl Control {
    /// The status document served at `/respawn/status`, as of now.
    pub fn status(&self) -> StatusDocument {
        let state = self.state.borrow();
        let mut document = StatusDocument::new(
            &self.name,
            &state,
            self.in_flight.count(),
            self.metrics.requests_total(),
        );
        document.containment = self.containment.map(str::to_owned);
        document.quarantined = quarantined(self);
        document
    }
}

/// A read-only route: `GET` and `HEAD`, anything else 405.
fn readable<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(|| method_not_allowed("GET, HEAD")))
}

async fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("this respawn endpoint answers {allow} only"),
    );
    response.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static(allow),
    );
    response
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!(
            "respawn has no endpoint {}; its own are /respawn/status, /respawn/restart, \
             /respawn/quarantine, /respawn/metrics, /respawn/livez and /respawn/readyz",
            req.path()
        ),
    )
}

/// The fingerprints quarantined now: hash, since, hangs, expiry (never the prompt).
fn quarantined(control: &Control) -> Vec<QuarantinedFingerprint> {
    let now = control.clock.now();
    let unix_now = unix_now_s();
    let unix = |at: std::time::Duration| {
        if at <= now {
            unix_now.saturating_sub((now - at).as_secs())
        } else {
            unix_now.saturating_add((at - now).as_secs())
        }
    };
    control
        .snapshot
        .poison()
        .convictions(now)
        .map(|(fingerprint, conviction)| QuarantinedFingerprint {
            fingerprint: format!("{:016x}", fingerprint.0),
            since: unix(conviction.since),
            hangs: conviction.hangs,
            expires: unix(conviction.expires),
        })
        .collect()
}

/// `DELETE /respawn/quarantine`: lifts every quarantine (an operator's decision; token-guarded).
async fn clear_quarantine(req: HttpRequest, control: web::Data<Control>) -> HttpResponse {
    if let Err(denied) = crate::auth::authorize(control.token.as_ref(), &req) {
        return actix_web::ResponseError::error_response(&denied);
    }
    match control.coordinator.send(ClearQuarantine).await {
        Ok(released) => HttpResponse::Ok().json(serde_json::json!({ "released": released })),
        Err(err) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "supervisor_unavailable",
            &format!("the restart coordinator is not running: {err}"),
        ),
    }
}

async fn status(control: web::Data<Control>) -> HttpResponse {
    HttpResponse::Ok().json(control.status())
}

async fn restart(req: HttpRequest, control: web::Data<Control>) -> HttpResponse {
    if let Err(denied) = crate::auth::authorize(control.token.as_ref(), &req) {
        return actix_web::ResponseError::error_response(&denied);
    }
    match control
        .coordinator
        .send(RestartNow {
            by: respawn_core::OperatorRestart::Manual,
        })
        .await
    {
        Ok(generation) => HttpResponse::Accepted().json(serde_json::json!({
            "restarting": true,
            "generation": generation.get(),
        })),
        Err(err) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "supervisor_unavailable",
            &format!("the restart coordinator is not running: {err}"),
        ),
    }
}

async fn metrics(control: web::Data<Control>) -> HttpResponse {
    let state = control.state.borrow().clone();
    let text = control
        .metrics
        .render(&control.name, &state, control.in_flight.count());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}

/// Alive unless respawn gave up: then the orchestrator should restart respawn itself.
async fn livez(control: web::Data<Control>) -> HttpResponse {
    let phase = control.state.borrow().phase;
    if phase == Phase::Failed {
        HttpResponse::ServiceUnavailable().body("failed\n")
    } else {
        HttpResponse::Ok().body("ok\n")
    }
}

/// Ready while the model server answers; not ready during starts and restarts.
async fn readyz(control: web::Data<Control>) -> HttpResponse {
    let phase = control.state.borrow().phase;
    if phase == Phase::Ready {
        HttpResponse::Ok().body("ready\n")
    } else {
        HttpResponse::ServiceUnavailable().body(format!("{}\n", phase.as_str()))
    }
}
