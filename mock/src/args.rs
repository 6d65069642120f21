//! The flags of `respawn mock`.

use std::path::PathBuf;
use std::time::Duration;

use respawn::auth::AdminToken;

/// Options of `respawn mock`; every flag is described in `docs/MOCK.md`.
#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    /// Port to listen on (0 picks a free one; the address is logged).
    #[arg(long, env = "PORT", default_value_t = 8001)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Model name listed by /v1/models and used in answers when a request names none.
    #[arg(long, default_value = "mock-llm")]
    pub model: String,

    /// Tokens per completion when the request gives no max_tokens.
    #[arg(long, default_value_t = 16)]
    pub tokens: u32,

    /// Time to generate one token (humantime: 2ms, 50ms, 1s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2ms")]
    pub token_latency: Duration,

    /// Advance every running generation on one shared decode step, as a batching engine does
    /// (vLLM, TGI, llama.cpp's server with parallel slots): each step, every stream gets its next
    /// token at the same moment. Without it each completion keeps its own schedule from its
    /// start.
    #[arg(long)]
    pub shared_steps: bool,

    /// After N completions, every request and /health hang forever (comma-separated list: each
    /// point fires once per job when --state-file is given).
    #[arg(long, value_delimiter = ',', value_name = "N[,N...]")]
    pub wedge_after: Vec<u64>,

    /// A prompt containing MARKER wedges the whole server (a poison request).
    #[arg(long, value_name = "MARKER")]
    pub wedge_on: Option<String>,

    /// After N completions the process exits abruptly with code 1.
    #[arg(long, value_delimiter = ',', value_name = "N[,N...]")]
    pub crash_after: Vec<u64>,

    /// Slow start: the port opens at once, but /health answers 503 {"status":"loading"} (and
    /// completions 503) for this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub start_delay: Option<Duration>,

    /// Fraction (0..=1) of completions answered with a 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub error_rate: f64,

    /// Fraction (0..=1) of streamed completions whose connection is dropped after a few chunks.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub drop_stream_rate: f64,

    /// After N completions, completions hang while /health stays green and /metrics stops
    /// growing (an engine deadlock).
    #[arg(long, value_delimiter = ',', value_name = "N[,N...]")]
    pub deadlock_after: Vec<u64>,

    /// After N completions the engine dies: completions hang, /metrics stops growing, and
    /// /health answers 503 {"status":"engine dead"} for good (vLLM once its engine died).
    #[arg(long, value_delimiter = ',', value_name = "N[,N...]")]
    pub engine_dead_after: Vec<u64>,

    /// /health answers 503 {"status":"busy"} while a completion is being generated (a TGI-like
    /// server whose health check fails when it is busy).
    #[arg(long)]
    pub busy_health: bool,

    /// Seed of the random faults (--error-rate, --drop-stream-rate).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Count completions across restarts in this file (written atomically), so fault points
    /// refer to the whole job and each fires once.
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,

    /// Bearer token for POST /restart (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "RESPAWN_ADMIN_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub token: Option<AdminToken>,

    /// Exit code after an authorized POST /restart.
    #[arg(long, default_value_t = respawn::web::EXIT_RESTART)]
    pub restart_exit_code: i32,

    /// How long a graceful stop waits for open connections (humantime, rounded up to seconds).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub shutdown_timeout: Duration,

    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,

    /// Start processes that leave the server's session (comma-separated): `setsid` (a helper in
    /// a new session), `daemon` (a double-forked daemon), `worker` (a worker in a new session
    /// that keeps the listening socket).
    #[arg(long, value_delimiter = ',', value_enum, value_name = "KIND[,KIND...]")]
    pub escape: Vec<crate::escape::Escape>,

    /// Write lines to stdout and stderr in bursts of 25 a millisecond, counted in
    /// /metrics as mock:output_lines_total.
    #[arg(long)]
    pub flood_output: bool,

    /// Enables test-only endpoints: POST /debug/block?ms=N, which blocks the main event loop
    /// (where the systemd watchdog pings come from), and POST /debug/finish-loading, which ends
    /// a --start-delay at once.
    #[arg(long, hide = true)]
    pub debug_endpoints: bool,
}

fn parse_fraction(raw: &str) -> Result<f64, String> {
    let value: f64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{raw} is not a fraction between 0 and 1"))
    }
}

fn parse_token(raw: &str) -> Result<AdminToken, String> {
    AdminToken::new(raw).map_err(|err| err.to_string())
}
