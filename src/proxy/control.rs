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
    /// A pool's part of the routes (`None` for a lone server, whose answers stay as they were).
    pub replicas: Option<Arc<dyn ReplicaControl>>,
}

/// Which restart `POST /respawn/restart` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartAsked {
    /// No parameter: the server (a pool restarts its replicas one at a time).
    Plain,
    /// `?replica=I`: that replica only.
    Replica(usize),
    /// `?rolling=true`: every replica, one at a time.
    Rolling,
}

impl RestartAsked {
    /// Reads the query string of `POST /respawn/restart`; an error names what is wrong.
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut asked = RestartAsked::Plain;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "replica" => {
                    let replica = value
                        .parse()
                        .map_err(|_| format!("replica={value} is not a replica index"))?;
                    asked = RestartAsked::Replica(replica);
                }
                "rolling" => match value {
                    "true" | "1" | "" => {
                        if asked == RestartAsked::Plain {
                            asked = RestartAsked::Rolling;
                        }
                    }
                    "false" | "0" => {}
                    _ => return Err(format!("rolling={value} is neither true nor false")),
                },
                _ => {
                    return Err(format!(
                        "unknown parameter {key}: use replica=I or rolling=true"
                    ))
                }
            }
        }
        Ok(asked)
    }
}

/// A pool's part of the control routes, implemented by the pool (the proxy does not know it).
pub trait ReplicaControl: Send + Sync + 'static {
    /// Rewrites the top-level fields of the status document for the pool and adds its replicas.
    fn fill_status(&self, document: &mut StatusDocument);
    /// Whether enough replicas are ready, with the line `/respawn/readyz` answers either way.
    fn ready(&self) -> Result<String, String>;
    /// Whether the pool can still serve (some replica is not given up).
    fn alive(&self) -> bool;
    /// Every replica's metrics, with a `replica` label.
    fn metrics(&self, name: &str) -> String;
    /// Starts the restart asked for; answers the JSON of the `202`, or why it cannot.
    fn restart(
        &self,
        asked: RestartAsked,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<serde_json::Value, String>>>>;
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
            replicas: None,
        }
    }

    /// The control surface of a pool: replica 0's supervisor answers what the pool has once
    /// (the quarantine, the requests received), `replicas` the rest.
    pub fn of_pool(
        front: &Supervisor,
        replicas: Arc<dyn ReplicaControl>,
        token: Option<AdminToken>,
    ) -> Self {
        let mut control = Self::of(front, token);
        control.replicas = Some(replicas);
        control
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
        document.on_trial = self
            .snapshot
            .board()
            .trial()
            .map(|fingerprint| format!("{:016x}", fingerprint.0));
        if let Some(replicas) = &self.replicas {
            replicas.fill_status(&mut document);
        }
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
    // The table's times are on its writer's clock (a pool's own, for a pool).
    let now = control.snapshot.board().clock().now();
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
    let asked = match RestartAsked::parse(req.query_string()) {
        Ok(asked) => asked,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, "bad_request", &message),
    };
    if let Some(replicas) = &control.replicas {
        return match replicas.restart(asked).await {
            Ok(answer) => HttpResponse::Accepted().json(answer),
            Err(message) => error_response(StatusCode::NOT_FOUND, "no_such_replica", &message),
        };
    }
    if let RestartAsked::Replica(replica) = asked {
        if replica != 0 {
            return error_response(
                StatusCode::NOT_FOUND,
                "no_such_replica",
                &format!("no replica {replica}: respawn runs one server (replica 0)"),
            );
        }
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
    if let Some(replicas) = &control.replicas {
        return HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(replicas.metrics(&control.name));
    }
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
    if let Some(replicas) = &control.replicas {
        return if replicas.alive() {
            HttpResponse::Ok().body("ok\n")
        } else {
            HttpResponse::ServiceUnavailable().body("failed\n")
        };
    }
    let phase = control.state.borrow().phase;
    if phase == Phase::Failed {
        HttpResponse::ServiceUnavailable().body("failed\n")
    } else {
        HttpResponse::Ok().body("ok\n")
    }
}

/// Ready while the model server answers; not ready during starts and restarts.
async fn readyz(control: web::Data<Control>) -> HttpResponse {
    if let Some(replicas) = &control.replicas {
        return match replicas.ready() {
            Ok(line) => HttpResponse::Ok().body(line),
            Err(line) => HttpResponse::ServiceUnavailable().body(line),
        };
    }
    let phase = control.state.borrow().phase;
    if phase == Phase::Ready {
        HttpResponse::Ok().body("ready\n")
    } else {
        HttpResponse::ServiceUnavailable().body(format!("{}\n", phase.as_str()))
    }
}
