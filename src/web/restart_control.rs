//! [`RestartControl`]: the `/health` and `/restart` routes and the restart signal between them
//! and [`super::run_until_restart`].

use std::future::Future;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::auth::{authorize, AdminToken};
use crate::systemd::Notifier;

use super::EXIT_RESTART;

type Hook = Arc<dyn Fn() + Send + Sync>;
type Probe = Arc<dyn Fn() -> bool + Send + Sync>;

/// The control surface of a restartable service: what `/restart` checks, what runs before the
/// process exits, and with which code it exits.
///
/// Cheap to clone; every clone shares the same restart signal, so a clone moved into
/// `HttpServer::new`'s factory (one per worker) and the one given to
/// [`super::run_until_restart`] see the same request.
#[derive(Clone)]
pub struct RestartControl {
    token: Option<AdminToken>,
    cleanup: Option<Hook>,
    health: Option<Probe>,
    exit_code: i32,
    notifier: Option<Notifier>,
    serve_health: bool,
    ready_at_start: bool,
    requested: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for RestartControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestartControl")
            .field("token", &self.token)
            .field("exit_code", &self.exit_code)
            .field("notifier", &self.notifier)
            .field("serve_health", &self.serve_health)
            .finish_non_exhaustive()
    }
}

impl RestartControl {
    /// A control guarded by `token`; with `None`, `/restart` refuses every request (401).
    pub fn new(token: Option<AdminToken>) -> Self {
        let (requested, _) = watch::channel(false);
        Self {
            token,
            cleanup: None,
            health: None,
            exit_code: EXIT_RESTART,
            notifier: None,
            serve_health: true,
            ready_at_start: true,
            requested: Arc::new(requested),
        }
    }

    /// A hook run once after an authorized restart, before the server stops (e.g. clear caches,
    /// flush state). It runs on the event loop: keep it short.
    pub fn cleanup(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.cleanup = Some(Arc::new(hook));
        self
    }

    /// The exit code reported on restart ([`EXIT_RESTART`], 75, unless set here).
    pub fn exit_code(mut self, code: i32) -> Self {
        self.exit_code = code;
        self
    }

    /// A liveness probe: `GET /health` answers 503 while it returns false, and the systemd
    /// watchdog withholds its pings meanwhile. Must be cheap and never block.
    pub fn health(mut self, probe: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.health = Some(Arc::new(probe));
        self
    }

    /// The systemd notifier used for `READY=1`, watchdog pings and `STOPPING=1`; `None` (not
    /// under systemd) sends nothing.
    pub fn notifier(mut self, notifier: Option<Notifier>) -> Self {
        self.notifier = notifier;
        self
    }

    /// Leaves `GET /health` out of [`RestartControl::configure`], for services that serve their
    /// own health route with richer states (loading, draining).
    pub fn without_health_route(mut self) -> Self {
        self.serve_health = false;
        self
    }

    /// Makes [`super::run_until_restart`] not send `READY=1` itself: the service sends it through
    /// [`RestartControl::ready`] once it has finished starting (e.g. loaded its model).
    pub fn defer_ready(mut self) -> Self {
        self.ready_at_start = false;
        self
    }

    /// Tells systemd the service is ready (`READY=1`); a no-op without a notifier.
    pub fn ready(&self) {
        if let Some(notifier) = &self.notifier {
            notifier.ready();
        }
    }

    /// The code the process should exit with after an authorized restart.
    pub fn restart_exit_code(&self) -> i32 {
        self.exit_code
    }

    /// Registers `GET /health` (unless [`RestartControl::without_health_route`]) and
    /// `POST /restart` on an app: `App::new().configure(control.configure())`.
    pub fn configure(&self) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
        let control = self.clone();
        move |cfg: &mut web::ServiceConfig| {
            if control.serve_health {
                let probe = control.health.clone();
                cfg.route(
                    "/health",
                    web::get().to(move || {
                        let healthy = probe.as_ref().map_or(true, |p| p());
                        async move {
                            if healthy {
                                HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
                            } else {
                                HttpResponse::ServiceUnavailable()
                                    .json(serde_json::json!({ "status": "unhealthy" }))
                            }
                        }
                    }),
                );
            }
            let restart = control.clone();
            cfg.route(
                "/restart",
                web::post().to(move |req: HttpRequest| {
                    let outcome = restart.handle_restart(&req);
                    async move { outcome }
                }),
            );
        }
    }

    fn handle_restart(&self, req: &HttpRequest) -> HttpResponse {
        let peer = req.peer_addr();
        match authorize(self.token.as_ref(), req) {
            Ok(()) => {
                info!(?peer, "authorized restart request; the service will exit");
                self.request_restart();
                HttpResponse::Accepted().force_close().json(
                    serde_json::json!({ "status": "restarting", "exit_code": self.exit_code }),
                )
            }
            Err(refusal) => {
                warn!(?peer, reason = %refusal, "refused restart request");
                actix_web::ResponseError::error_response(&refusal)
            }
        }
    }

    /// Asks for a restart from inside the process, as an authorized `/restart` would.
    pub fn request_restart(&self) {
        self.requested.send_replace(true);
    }

    /// Whether a restart has been requested.
    pub fn is_restart_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// A future that resolves once a restart has been authorized (at once if it already was).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it loses nothing; a new one sees a request made meanwhile.
    pub fn restart_requested(&self) -> impl Future<Output = ()> + 'static {
        let mut seen = self.requested.subscribe();
        async move {
            if seen.wait_for(|requested| *requested).await.is_err() {
                // The sender lives as long as any clone of the control; should every clone be
                // gone, no restart can ever come.
                std::future::pending::<()>().await;
            }
        }
    }

    pub(super) fn run_cleanup(&self) {
        if let Some(hook) = &self.cleanup {
            info!("running the cleanup hook before restart");
            hook();
            info!("cleanup hook ran");
        }
    }

    pub(super) fn notifier_ref(&self) -> Option<&Notifier> {
        self.notifier.as_ref()
    }

    pub(super) fn ready_at_start(&self) -> bool {
        self.ready_at_start
    }

    pub(super) fn probe(&self) -> Option<Probe> {
        self.health.clone()
    }
}
