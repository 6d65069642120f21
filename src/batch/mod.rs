//! `respawn batch` (in progress).

/// Options of `respawn batch`.
#[derive(clap::Args, Debug, Clone)]
pub struct BatchArgs {}

/// Why `respawn batch` failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Not built yet.
    #[error("not available yet")]
    Unavailable,
}

impl BatchError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        1
    }
}

/// Runs `respawn batch`; returns the process exit code.
pub fn run(_args: BatchArgs) -> Result<i32, BatchError> {
    Err(BatchError::Unavailable)
}
