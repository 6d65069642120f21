//! respawn owns the model server (tier 1): build a supervisor for a command, wait until it is
//! ready, ask it something through a `ClientActor`, force a restart, ask again, and stop.
//!
//! The model server here is `respawn mock`, the simulated OpenAI-compatible server; the `respawn`
//! binary is taken from the first argument, else from `RESPAWN_BIN`, else from `PATH`.
//!
//! ```text
//! cargo build && cargo run --example standalone -- target/debug/respawn
//! ```

use std::process::ExitCode;
use std::time::Duration;

use respawn::client_actor::{Call, ClientActor};
use respawn::core::Generation;
use respawn::supervisor::{Supervisor, SupervisorConfig, Target};

use actix::Actor;

/// How long the example waits for a start or a restart before it calls it a failure.
const READY_BOUND: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RESPAWN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let program = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("RESPAWN_BIN").ok())
        .unwrap_or_else(|| "respawn".to_owned());
    let system = actix::System::new();
    match system.block_on(run(program)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("standalone: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(program: String) -> Result<(), Box<dyn std::error::Error>> {
    // A port the OS says is free now; the supervisor checks again before each start.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port();
    let target = Target::command("llm", program, ["mock", "--port", "{port}"], port);
    let mut config = SupervisorConfig::new("llm");
    config.stop_grace = Duration::from_secs(2);
    let supervisor = Supervisor::start(config, target)?;
    let generation = supervisor.wait_ready(READY_BOUND).await?;
    println!("ready: generation {generation}");

    let client = ClientActor::new(supervisor.upstream_shared().clone()).start();
    let result = async {
        ask(&client, "Say hello", 1).await?;

        let replaced = supervisor.restart().await?;
        println!("restart requested: replacing generation {replaced}");
        let mut state = supervisor.state();
        let now = respawn::state::wait_ready(&mut state, replaced.next(), READY_BOUND).await?;
        println!("ready again: generation {now}");

        ask(&client, "Say hello again", 2).await
    }
    .await;

    supervisor.stop(Duration::from_secs(2)).await;
    println!("stopped");
    result
}

/// Sends one chat completion and prints who answered what.
async fn ask(
    client: &actix::Addr<ClientActor>,
    prompt: &str,
    number: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    let body = serde_json::json!({
        "model": "mock-llm",
        "messages": [{ "role": "user", "content": prompt }],
        "max_tokens": 8,
    });
    let response = client
        .send(Call::post_json("/v1/chat/completions", &body))
        .await??;
    let answer: serde_json::Value = serde_json::from_slice(&response.body)?;
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("<no content>");
    println!(
        "answer {number}: status {} from generation {} after {} attempt(s): {text}",
        response.status.as_u16(),
        response.generation,
        response.attempts
    );
    if !response.status.is_success() {
        return Err(format!("the server answered {}", response.status).into());
    }
    if response.generation < Generation(u64::from(number)) {
        return Err(format!(
            "expected generation {number} or later, got {}",
            response.generation
        )
        .into());
    }
    Ok(())
}
