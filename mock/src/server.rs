//! Starting the mock: the actix-web server, its routes, slow start, and the exit path.

use std::io::IsTerminal;
use std::sync::Arc;

use actix_web::{http::StatusCode, web, App, HttpResponse, HttpServer};
use tokio::sync::Notify;
use tracing::info;

use super::args::MockArgs;
use super::debug;
use super::escape;
use super::faults::Faults;
use super::metrics::MockMetrics;
use super::openai::{self, openai_error, Generator};
use super::state_file;
use super::steps::Steps;
use super::MockError;
use respawn::systemd::Notifier;
use respawn::web::{run_until_restart_with, Exit, RestartControl, StopSignals};

/// Runs the mock server until SIGTERM/SIGINT (`Ok`) or an authorized `/restart`
/// (`Err(MockError::RestartRequested)`, whose exit code tells the service manager to restart it).
///
/// Sets up logging to stderr (filter from `RESPAWN_LOG`, default `info`) unless the process
/// already has a subscriber, reads `NOTIFY_SOCKET`/`WATCHDOG_*` once, and blocks the calling
/// thread on its own actix system.
pub fn run(args: MockArgs) -> Result<(), MockError> {
    init_logging();
    let notifier = Notifier::from_env()?;
    let ledger = match &args.state_file {
        Some(path) => state_file::load(path)?,
        None => state_file::Ledger::default(),
    };
    let system = actix_rt::System::new();
    match system.block_on(serve(args, notifier, ledger))? {
        Exit::Stopped => Ok(()),
        Exit::Restart { code } => Err(MockError::RestartRequested { code }),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RESPAWN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn serve(
    args: MockArgs,
    notifier: Option<Notifier>,
    ledger: state_file::Ledger,
) -> Result<Exit, MockError> {
    // Before binding and logging the address: whoever learns the address from the log may stop
    // the mock at once, and must see a clean exit rather than a death by SIGTERM.
    let signals = StopSignals::arm()?;
    let faults = Arc::new(Faults::new(&args, ledger));
    let counters = Arc::new(MockMetrics::default());
    if args.flood_output {
        escape::flood(Arc::clone(&counters.output_lines))?;
    }
    let generator = web::Data::new(Generator {
        model: args.model.clone(),
        default_tokens: args.tokens,
        token_latency: args.token_latency,
        faults: Arc::clone(&faults),
        metrics: counters,
        busy_health: args.busy_health,
        steps: if args.shared_steps && !args.token_latency.is_zero() {
            Some(Steps::start(args.token_latency)?)
        } else {
            None
        },
    });
    let alive = Arc::clone(&faults);
    let control = RestartControl::new(args.token.clone())
        .exit_code(args.restart_exit_code)
        .notifier(notifier.clone())
        .without_health_route()
        .defer_ready()
        .health(move || !alive.is_wedged())
        .cleanup(|| info!("dropping the simulated KV cache"));

    let routes = control.clone();
    let debug_endpoints = args.debug_endpoints;
    let finish_loading = Arc::new(Notify::new());
    let hooks = web::Data::new(debug::DebugHooks {
        // This task runs on the main loop, where run_until_restart spawns the watchdog pinger.
        main_loop: actix_rt::Arbiter::current(),
        notifier: notifier.clone(),
        finish_loading: Arc::clone(&finish_loading),
    });
    let mut server = HttpServer::new(move || {
        let app = App::new()
            .app_data(generator.clone())
            .app_data(web::JsonConfig::default())
            .configure(routes.configure())
            .route("/health", web::get().to(health))
            .route("/v1/models", web::get().to(models))
            .route("/metrics", web::get().to(metrics))
            .route(
                "/v1/chat/completions",
                web::post().to(openai::chat_completions),
            )
            .route("/v1/completions", web::post().to(openai::completions))
            .route("/tokenize", web::post().to(openai::tokenize));
        if debug_endpoints {
            app.app_data(hooks.clone())
                .route("/debug/block", web::post().to(debug::block))
                .route("/debug/answer/{status}", web::route().to(debug::answer))
                .route(
                    "/debug/finish-loading",
                    web::post().to(debug::finish_loading),
                )
        } else {
            app
        }
    })
    .shutdown_timeout(args.shutdown_timeout.as_secs_f64().ceil() as u64)
    // Like a real model server, stop generating for a client that closed its connection.
    .h1_allow_half_closed(false)
    .on_connect(|conn, _ext| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
        }
    });
    if args.workers > 0 {
        server = server.workers(args.workers);
    }
    let address = format!("{}:{}", args.host, args.port);
    escape::before_bind(&args.escape)?;
    let server = server
        .bind((args.host.as_str(), args.port))
        .map_err(|source| MockError::Bind {
            address: address.clone(),
            source,
        })?;
    escape::after_bind(&args.escape)?;
    for bound in server.addrs() {
        info!("respawn mock listening on http://{bound}");
    }
    let server = server.run();

    let delay = args.start_delay.unwrap_or_default();
    let ready_control = control.clone();
    let loading = Arc::clone(&faults);
    actix_rt::spawn(async move {
        if !delay.is_zero() {
            info!(
                ?delay,
                "simulating a slow start: /health answers 503 until loaded"
            );
            tokio::select! {
                () = actix_rt::time::sleep(delay) => {}
                () = finish_loading.notified() => {}
            }
        }
        loading.mark_ready();
        ready_control.ready();
        info!("model loaded; ready");
    });

    Ok(run_until_restart_with(server, &control, signals).await?)
}

/// `GET /health`: hangs when wedged; 503 `{"status":"loading"}` during a slow start,
/// `{"status":"engine dead"}` once the engine died, `{"status":"busy"}` while generating with
/// `--busy-health`; else 200.
async fn health(gen: web::Data<Generator>) -> HttpResponse {
    gen.faults.hold_if_wedged().await;
    let unavailable = |status: &str| {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": status }))
    };
    if !gen.faults.is_ready() {
        unavailable("loading")
    } else if gen.faults.is_engine_dead() {
        unavailable("engine dead")
    } else if gen.busy_health && gen.metrics.running_now() > 0 {
        unavailable("busy")
    } else {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
    }
}

/// `GET /v1/models`: the one simulated model, in OpenAI's list shape.
async fn models(gen: web::Data<Generator>) -> HttpResponse {
    gen.faults.hold_if_wedged().await;
    if !gen.faults.is_ready() {
        return openai_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable_error",
            "the model is still loading",
        );
    }
    HttpResponse::Ok().json(serde_json::json!({
        "object": "list",
        "data": [{ "id": gen.model, "object": "model", "created": 0, "owned_by": "respawn-mock" }],
    }))
}

/// `GET /metrics`: Prometheus text.
async fn metrics(gen: web::Data<Generator>) -> HttpResponse {
    gen.faults.hold_if_wedged().await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(gen.metrics.render())
}
