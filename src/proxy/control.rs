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
            snapshot: Arc::clone(supervisor.snapshot()),
            clock: supervisor.clock(),
        }
    }
}

/// Registers the `/respawn/*` routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/respawn")
            .route("/status", web::get().to(status))
            .route("/restart", web::post().to(restart))
            .route("/quarantine", web::delete().to(clear_quarantine))
            .route("/metrics", web::get().to(metrics))
            .route("/livez", web::get().to(livez))
            .route("/readyz", web::get().to(readyz)),
    );
}

/// The status document served at `/respawn/status`.
pub fn status_json(control: &Control) -> serde_json::Value {
    let state = control.state.borrow().clone();
    serde_json::json!({
        "server": control.name,
        "state": state.phase.as_str(),
        "generation": state.generation.get(),
        "pid": state.pid,
        "restarts": state.restarts,
        "last_restart": state.last_restart,
        "last_cause": state.last_cause.map(|c| c.as_str()),
        "last_error": state.last_error,
        "uptime_s": state.uptime_s(),
        "in_flight": control.in_flight.count(),
        "requests_total": control.metrics.requests_total(),
        "quarantined": quarantined_json(control),
    })
}

/// The fingerprints quarantined now: hash, since, hangs, expiry (never the prompt).
fn quarantined_json(control: &Control) -> serde_json::Value {
    let now = control.clock.now();
    let unix_now = unix_now_s();
    let unix = |at: std::time::Duration| {
        if at <= now {
            unix_now.saturating_sub((now - at).as_secs())
        } else {
            unix_now.saturating_add((at - now).as_secs())
        }
    };
    let table = control.snapshot.poison();
    let entries: Vec<serde_json::Value> = table
        .convictions(now)
        .map(|(fingerprint, conviction)| {
            serde_json::json!({
                "fingerprint": format!("{:016x}", fingerprint.0),
                "since": unix(conviction.since),
                "hangs": conviction.hangs,
                "expires": unix(conviction.expires),
            })
        })
        .collect();
    serde_json::Value::Array(entries)
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
    HttpResponse::Ok().json(status_json(&control))
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
