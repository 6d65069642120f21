//! The simulated OpenAI-compatible model server (in progress).

/// Options of `respawn mock`.
#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    /// Port to listen on.
    #[arg(long)]
    pub port: Option<u16>,
}

/// Why the mock server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// Not built yet.
    #[error("not available yet")]
    Unavailable,
}

impl MockError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        1
    }
}

/// Runs the mock server until it is stopped.
pub fn run(_args: MockArgs) -> Result<(), MockError> {
    Err(MockError::Unavailable)
}
