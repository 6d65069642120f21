//! Command-line arguments (in progress).

/// Options of `respawn serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// The command to supervise.
    #[arg(last = true)]
    pub command: Vec<std::ffi::OsString>,
}

/// Options of `respawn status`.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {}

/// Options of `respawn restart`.
#[derive(clap::Args, Debug, Clone)]
pub struct RestartArgs {}
