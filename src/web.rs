//! Restartable actix-web services: `GET /health`, an authenticated `POST /restart`, and the
//! systemd lifecycle, added to any actix-web `App` with one call.
//!
//! A model server that respawn does not own can still be brought back: it answers an
//! authenticated `/restart` by exiting with a documented code, and its service manager
//! (systemd's `Restart=`, Kubernetes) starts a fresh process. With systemd's watchdog it is
//! restarted even when no client notices: the pings come from the service's own event loop.
//!
//! SIGTERM, SIGINT and SIGQUIT are caught before the server can answer anything
//! ([`StopSignals`], armed by [`run_until_restart`] before it starts the workers), so a service
//! stopped right after it came up still stops cleanly, with `STOPPING=1` and exit code 0.
//!
//! ```no_run
//! use actix_web::{web, App, HttpServer};
//! use respawn::{auth::AdminToken, systemd::Notifier, web::RestartControl};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let control = RestartControl::new(AdminToken::from_env("RESPAWN_ADMIN_TOKEN")?)
//!     .notifier(Notifier::from_env()?)
//!     .cleanup(|| tracing::info!("clearing caches"));
//! actix_rt::System::new().block_on(async {
//!     let routes = control.clone();
//!     let server = HttpServer::new(move || {
//!         App::new()
//!             .configure(routes.configure())
//!             .route("/", web::get().to(|| async { "hello" }))
//!     })
//!     .shutdown_timeout(5)
//!     .bind(("127.0.0.1", 8080))?
//!     .run();
//!     let exit = respawn::web::run_until_restart(server, &control).await?;
//!     std::process::exit(exit.code())
//! })
//! # }
//! ```

mod restart_control;
mod shutdown;
mod stop_signals;

pub use restart_control::RestartControl;
pub use shutdown::{run_until_restart, run_until_restart_with, Exit, EXIT_RESTART};
pub use stop_signals::{StopSignal, StopSignals};
