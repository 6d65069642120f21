//! respawn's actors inside your own actix-web service.
//!
//! The service supervises one model server (`respawn mock`, named `llm`), keeps the supervisors
//! in a [`Registry`] built at start-up and passed to the handlers as app data (no global), and
//! gives each worker its own `ClientActor` per server.
//!
//! It also registers a restart strategy of its own, `logged_kill`: it records each restart in the
//! service's restart log (where its operators look) and then restarts the process group as
//! `process_kill` does, through the `ProcessKill` it builds from the supervisor's context. The
//! supervisor names it first and the built-in `process_kill` after it, as the fallback. A strategy
//! that asks an outside orchestrator (a command, an HTTP call) is registered the same way.
//!
//! Its routes:
//!
//! - `POST /ask/{server}` with a prompt as the body: one chat completion, retried across hangs
//!   and restarts, answered as `{"server", "generation", "attempts", "answer"}`;
//! - `GET /servers`: every registered server with its generation, phase, restarts and restart
//!   strategies;
//! - `GET /restarts`: the restart log that `logged_kill` writes;
//! - `POST /restart/{server}`: restart that server now (an operator's button; put it behind
//!   authentication in a real service).
//!
//! It listens on 127.0.0.1:`$PORT` (default 8080) and takes the `respawn` binary from the first
//! argument, else `RESPAWN_BIN`, else `PATH`. SIGTERM or Ctrl-C stops it and the model server.
//!
//! ```text
//! cargo build && PORT=8080 cargo run --example embed -- target/debug/respawn
//! curl -d 'Say hello' http://127.0.0.1:8080/ask/llm
//! ```

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Context, Handler, Recipient, ResponseFuture};
use actix_web::{web, App, HttpResponse, HttpServer};
use parking_lot::Mutex;
use respawn::backends::{ProcessKill, Restart, RestartError, RestartReport};
use respawn::client_actor::{Call, ClientActor};
use respawn::registry::{NotApplicable, Registry, PROCESS_KILL};
use respawn::supervisor::{SupervisorConfig, Target};

/// The workers' own client actors, one per registered server.
struct Clients(HashMap<String, Addr<ClientActor>>);

/// The name this service registers its restart strategy under.
const LOGGED_KILL: &str = "logged_kill";

/// Every restart `logged_kill` was asked for, oldest first.
#[derive(Clone, Default)]
struct RestartLog(Arc<Mutex<Vec<serde_json::Value>>>);

/// This service's restart strategy: writes the restart into the service's log, then lets a
/// `ProcessKill` stop the whole process group and start a new one.
struct LoggedKill {
    server: String,
    log: RestartLog,
    kill: Recipient<Restart>,
}

impl Actor for LoggedKill {
    type Context = Context<Self>;
}

impl Handler<Restart> for LoggedKill {
    type Result = ResponseFuture<Result<RestartReport, RestartError>>;

    fn handle(&mut self, msg: Restart, _ctx: &mut Self::Context) -> Self::Result {
        self.log.0.lock().push(serde_json::json!({
            "server": self.server,
            "hung": msg.hung.0,
            "next": msg.next.0,
            "cause": msg.cause.as_str(),
        }));
        let kill = self.kill.clone();
        Box::pin(async move {
            let mut report = kill.send(msg).await.map_err(|_| RestartError::ActorGone {
                actor: PROCESS_KILL,
            })??;
            report.strategy = LOGGED_KILL;
            Ok(report)
        })
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RESPAWN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let program = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("RESPAWN_BIN").ok())
        .unwrap_or_else(|| "respawn".to_owned());
    let port: u16 = match std::env::var("PORT").map(|raw| raw.parse()) {
        Ok(Ok(port)) => port,
        Ok(Err(_)) => {
            eprintln!("embed: PORT is not a port number");
            return ExitCode::from(2);
        }
        Err(_) => 8080,
    };
    let system = actix_web::rt::System::new();
    match system.block_on(run(program, port)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("embed: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(program: String, port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let restart_log = RestartLog::default();
    let mut registry = Registry::new();
    let log = restart_log.clone();
    registry.register_strategy(LOGGED_KILL, move |context| {
        let server = context.server().ok_or_else(|| {
            NotApplicable::new("it restarts a process respawn owns, and this server is a URL")
        })?;
        let kill = ProcessKill::new(server.clone(), context.stop_grace()).start();
        Ok(LoggedKill {
            server: context.server_name().to_owned(),
            log: log.clone(),
            kill: kill.recipient(),
        }
        .start()
        .recipient())
    })?;
    // A port the OS says is free now; the supervisor checks again before each start.
    let child_port = std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port();
    let target = Target::command("llm", program, ["mock", "--port", "{port}"], child_port);
    let mut config = SupervisorConfig::new("llm");
    config.stop_grace = Duration::from_secs(2);
    config.restart_strategies = Some(vec![LOGGED_KILL.to_owned(), PROCESS_KILL.to_owned()]);
    registry.start(config, target)?;
    for (name, supervisor) in registry.iter() {
        let generation = supervisor.wait_ready(Duration::from_secs(30)).await?;
        tracing::info!(server = name, %generation, "model server ready");
    }

    let shared = registry.clone();
    let server = HttpServer::new(move || {
        // Each worker builds its own clients: awc's client lives on the thread that uses it.
        let clients: HashMap<String, Addr<ClientActor>> = shared
            .iter()
            .map(|(name, sup)| {
                (
                    name.to_owned(),
                    ClientActor::new(sup.upstream_shared().clone()).start(),
                )
            })
            .collect();
        App::new()
            .app_data(web::Data::new(shared.clone()))
            .app_data(web::Data::new(Clients(clients)))
            .app_data(web::Data::new(restart_log.clone()))
            .route("/ask/{server}", web::post().to(ask))
            .route("/servers", web::get().to(servers))
            .route("/restarts", web::get().to(restarts))
            .route("/restart/{server}", web::post().to(restart))
    })
    .workers(2)
    .bind(("127.0.0.1", port))?
    .run();
    println!("listening on http://127.0.0.1:{port}");
    let served = server.await;

    for (name, supervisor) in registry.iter() {
        supervisor.stop(Duration::from_secs(2)).await;
        tracing::info!(server = name, "model server stopped");
    }
    println!("stopped");
    Ok(served?)
}

/// `POST /ask/{server}`: one chat completion through the server's `ClientActor`.
async fn ask(
    server: web::Path<String>,
    prompt: String,
    clients: web::Data<Clients>,
) -> HttpResponse {
    let Some(client) = clients.0.get(server.as_str()) else {
        return HttpResponse::NotFound().json(serde_json::json!({ "error": "no such server" }));
    };
    let body = serde_json::json!({
        "model": "mock-llm",
        "messages": [{ "role": "user", "content": prompt }],
        "max_tokens": 8,
    });
    match client
        .send(Call::post_json("/v1/chat/completions", &body))
        .await
    {
        Ok(Ok(response)) => {
            let parsed: serde_json::Value =
                serde_json::from_slice(&response.body).unwrap_or_default();
            HttpResponse::Ok().json(serde_json::json!({
                "server": server.as_str(),
                "status": response.status.as_u16(),
                "generation": response.generation.0,
                "attempts": response.attempts,
                "answer": parsed["choices"][0]["message"]["content"],
            }))
        }
        Ok(Err(err)) => {
            HttpResponse::BadGateway().json(serde_json::json!({ "error": err.to_string() }))
        }
        Err(err) => {
            HttpResponse::ServiceUnavailable().json(serde_json::json!({ "error": err.to_string() }))
        }
    }
}

/// `GET /servers`: what every supervisor in the registry is doing.
async fn servers(registry: web::Data<Registry>) -> HttpResponse {
    let list: Vec<serde_json::Value> = registry
        .iter()
        .map(|(name, supervisor)| {
            let state = supervisor.state().borrow().clone();
            serde_json::json!({
                "server": name,
                "generation": state.generation.0,
                "phase": state.phase.as_str(),
                "restarts": state.restarts,
                "strategies": supervisor.strategy_names(),
            })
        })
        .collect();
    HttpResponse::Ok().json(list)
}

/// `GET /restarts`: what `logged_kill` recorded.
async fn restarts(log: web::Data<RestartLog>) -> HttpResponse {
    let entries = log.0.lock().clone();
    HttpResponse::Ok().json(entries)
}

/// `POST /restart/{server}`: restart through the registry's handle.
async fn restart(server: web::Path<String>, registry: web::Data<Registry>) -> HttpResponse {
    let Some(supervisor) = registry.get(server.as_str()) else {
        return HttpResponse::NotFound().json(serde_json::json!({ "error": "no such server" }));
    };
    match supervisor.restart().await {
        Ok(replaced) => {
            HttpResponse::Accepted().json(serde_json::json!({ "replacing": replaced.0 }))
        }
        Err(err) => {
            HttpResponse::ServiceUnavailable().json(serde_json::json!({ "error": err.to_string() }))
        }
    }
}
