//! `respawn mock`: a simulated OpenAI-compatible model server with fault injection.
//!
//! A real, separate process (actix-web) that answers like a model server — `/health`,
//! `/v1/models`, `/v1/chat/completions`, `/v1/completions` (streamed as Server-Sent Events or
//! not), `/metrics` — with deterministic fake tokens at a configurable per-token latency, and
//! misbehaves on demand: wedges (the whole server hangs, `/health` too), poison prompts, crashes,
//! slow starts, 500s, streams dropped midway, and the engine deadlock that `/health` does not see.
//! It embeds [`respawn::web`], so `POST /restart` works with `RESPAWN_ADMIN_TOKEN`, and it speaks
//! sd_notify. The demo, the tests and the benchmarks run against it; `docs/MOCK.md` documents
//! every flag.
//!
//! Exit codes ([`MockError::exit_code`]): 0 after SIGTERM/SIGINT; 1 for the `--crash-after` fault;
//! 75 after an authorized `/restart` ([`respawn::web::EXIT_RESTART`]); 69 when the address cannot
//! be bound; 74 for another I/O failure; 78 for a configuration error; 2 for bad flags (clap).

mod args;
mod continuation;
mod debug;
mod escape;
mod faults;
mod metrics;
mod openai;
mod server;
mod state_file;
mod steps;
mod tokens;

pub use args::MockArgs;
pub use escape::Escape;
pub use server::run;

/// Why the mock server stopped with a non-zero exit code.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// An authorized `POST /restart` asked the process to exit so that its service manager
    /// starts a fresh one. Not a failure: the exit code tells the manager to restart it.
    #[error("restart requested over /restart; exiting with {code} so that the service manager starts a fresh process")]
    RestartRequested {
        /// The exit code to use (75 by default).
        code: i32,
    },
    /// The listening address could not be bound: pick another `--port`/`--host`, or stop what
    /// holds it.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    /// `NOTIFY_SOCKET`/`WATCHDOG_USEC` are set but unusable: fix the service's environment.
    #[error(transparent)]
    Notify(#[from] respawn::systemd::NotifyEnvError),
    /// The `--state-file` exists but cannot be read or parsed: fix or delete it.
    #[error(transparent)]
    StateFile(#[from] state_file::StateFileError),
}

impl MockError {
    /// The process exit code for this error (see the module documentation for the table).
    pub fn exit_code(&self) -> i32 {
        match self {
            MockError::RestartRequested { code } => *code,
            MockError::Bind { .. } => 69,
            MockError::Io(_) => 74,
            MockError::Notify(_) | MockError::StateFile(_) => 78,
        }
    }
}
