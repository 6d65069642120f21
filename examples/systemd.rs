//! A restartable service under systemd (tier 2: respawn does not own the process).
//!
//! It serves on `$PORT` (default 8080, loopback), takes its admin token from
//! `RESPAWN_ADMIN_TOKEN`, embeds `respawn::web` (`GET /health`, `POST /restart`), and speaks
//! sd_notify: `READY=1` once listening, `WATCHDOG=1` from its event loop, `STOPPING=1` on the way
//! out. An authorized `/restart` makes it exit with code 75, and the unit in
//! `examples/systemd/respawn-example.service` (`Restart=always`) starts it again.
//!
//! ```text
//! RESPAWN_ADMIN_TOKEN=secret PORT=8080 cargo run --example systemd
//! curl -X POST -H 'Authorization: Bearer secret' http://127.0.0.1:8080/restart   # 202, exits 75
//! ```

use std::process::ExitCode;

use actix_web::{web, App, HttpServer};
use respawn::{auth::AdminToken, systemd::Notifier, web::RestartControl};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match serve() {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}

fn serve() -> Result<i32, Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(raw) => raw
            .parse()
            .map_err(|_| format!("PORT={raw:?} is not a port number"))?,
        Err(_) => 8080,
    };
    let token = AdminToken::from_env("RESPAWN_ADMIN_TOKEN")?;
    if token.is_none() {
        tracing::warn!("RESPAWN_ADMIN_TOKEN is unset: /restart will refuse every request");
    }
    let control = RestartControl::new(token)
        .notifier(Notifier::from_env()?)
        .cleanup(|| tracing::info!("flushing caches before the restart"));

    let exit = actix_rt::System::new().block_on(async {
        let routes = control.clone();
        let server = HttpServer::new(move || {
            App::new().configure(routes.configure()).route(
                "/",
                web::get().to(|| async { "hello from a restartable service\n" }),
            )
        })
        .shutdown_timeout(2)
        .bind(("127.0.0.1", port))?;
        for address in server.addrs() {
            tracing::info!("listening on http://{address}");
        }
        let server = server.run();
        respawn::web::run_until_restart(server, &control).await
    })?;
    Ok(exit.code())
}
