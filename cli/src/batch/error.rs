//! Why `respawn batch` stopped without finishing, each with its exit code.

use std::path::PathBuf;

use crate::config::ConfigError;

use super::input::InputError;
use super::journal::JournalError;
use super::journal_writer::WriteError;

/// Why `respawn batch` failed; [`BatchError::exit_code`] is the process's exit code.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A supervision option is invalid (exit 2).
    #[error(transparent)]
    Config(ConfigError),
    /// Neither a command nor a URL (exit 2).
    #[error("no server to send the requests to: give `-- COMMAND [ARGS...]` (respawn runs it) or `--url URL` (a running server)")]
    NoServer,
    /// Both a command and a URL (exit 2).
    #[error("both a command and --url were given: either let respawn run the server (`-- COMMAND [ARGS...]`) or drive a running one (`--url URL`)")]
    CommandAndUrl,
    /// The input file is unreadable or invalid; nothing was sent (exit 2).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The output file cannot be used; nothing was sent (exit 2).
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The output file records ids the input does not have: it belongs to another batch (exit 2).
    #[error("the output file {} records {count} custom_id(s) that are not in the input (e.g. `{custom_id}`): it holds another batch's results; choose another --output", output.display())]
    ForeignIds {
        /// The output file.
        output: PathBuf,
        /// One such id.
        custom_id: String,
        /// How many.
        count: usize,
    },
    /// The supervisor refused its configuration (exit 2).
    #[error(transparent)]
    Supervisor(#[from] respawn::supervisor::SupervisorError),
    /// The server could not be set up: no free port, respawn's own executable missing (exit 1).
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
    /// Writing a result failed (exit 1); what was written is kept and a rerun resumes.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The runtime could not be set up (exit 1).
    #[error("runtime error: {0}")]
    Runtime(std::io::Error),
    /// The server could not be kept up (restart limit, or it never became ready) (exit 3).
    #[error("the server could not be kept up: {reason}; {remaining} request(s) not done: rerun with the same --output to resume")]
    GaveUp {
        /// Why.
        reason: String,
        /// Requests with no record.
        remaining: u64,
    },
    /// SIGINT or SIGTERM (exit 130).
    #[error("interrupted by {signal}; {remaining} request(s) not done: rerun with the same --output to resume")]
    Interrupted {
        /// `SIGINT` or `SIGTERM`.
        signal: &'static str,
        /// Requests with no record.
        remaining: u64,
    },
}

impl From<ConfigError> for BatchError {
    fn from(err: ConfigError) -> Self {
        match err {
            ConfigError::NoCommand => BatchError::NoServer,
            ConfigError::CommandAndUpstream => BatchError::CommandAndUrl,
            other => BatchError::Config(other),
        }
    }
}

impl BatchError {
    /// The process exit code: 2 when nothing could be sent (usage, configuration, input,
    /// output), 3 when the server could not be kept up, 130 when interrupted, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            BatchError::Config(_)
            | BatchError::NoServer
            | BatchError::CommandAndUrl
            | BatchError::Input(_)
            | BatchError::Journal(_)
            | BatchError::ForeignIds { .. }
            | BatchError::Supervisor(_) => 2,
            BatchError::GaveUp { .. } => 3,
            BatchError::Interrupted { .. } => 130,
            BatchError::Serve(_) | BatchError::Write(_) | BatchError::Runtime(_) => 1,
        }
    }
}
