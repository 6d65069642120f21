//! The flags of `respawn batch`: the batch's own (input, output, concurrency, where the server
//! is) and the supervision options it shares with `respawn serve`.
//!
//! The shared options keep `serve`'s names, meanings and layering (flags > environment >
//! `--config` file > defaults): [`BatchArgs::serve_args`] turns them into a
//! [`ServeArgs`] that [`crate::config::ServeConfig::load`] stacks exactly as for `serve`. Options
//! that only make sense for a listening proxy (`--listen`, `--workers`, `--admin-token`, ...)
//! are left out, since a batch opens no listener.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{ServeArgs, SupervisionArgs};
use crate::config::value::parse_duration;

/// Options of `respawn batch`: run an OpenAI batch file against a supervised server.
#[derive(clap::Args, Debug, Clone)]
#[command(
    override_usage = "respawn batch [OPTIONS] --input FILE --output FILE -- COMMAND [ARGS...]\n       \
respawn batch [OPTIONS] --input FILE --output FILE --url URL"
)]
#[command(
    after_help = "Input lines: {\"custom_id\", \"method\": \"POST\", \"url\": \"/v1/...\", \"body\": {...}}. \
Output lines (completion order): {\"id\", \"custom_id\", \"response\": {\"status_code\", \"request_id\", \"body\"}, \"error\"}. \
A rerun with the same --output resumes: finished ids are skipped, a torn last line is repaired. \
Exit codes: 0 every request succeeded, 1 some failed for good (written as error lines), \
2 usage, configuration or input error (nothing was sent), 3 the server could not be kept up \
(rerun to resume), 130 interrupted (rerun to resume). See docs/BATCH.md."
)]
pub struct BatchArgs {
    /// The requests, one JSON object per line (the OpenAI batch input format)
    #[arg(long, short = 'i', value_name = "FILE", help_heading = "Batch")]
    pub input: PathBuf,

    /// Where results are appended, one JSON object per line; an existing file is resumed
    #[arg(long, short = 'o', value_name = "FILE", help_heading = "Batch")]
    pub output: PathBuf,

    /// Requests in flight at once
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=4096), help_heading = "Batch")]
    pub concurrency: u32,

    /// Drive a server respawn does not own instead of COMMAND (restarted through --restart-url or --restart-command when given)
    #[arg(long, value_name = "URL", help_heading = "Batch")]
    pub url: Option<String>,

    /// On resume, send again the requests the earlier run recorded as failed (error lines and non-2xx answers)
    #[arg(long, help_heading = "Batch")]
    pub retry_failed: bool,

    /// Time between progress lines when stderr is not a terminal (a terminal gets a progress bar)
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10s", help_heading = "Batch")]
    pub log_interval: Duration,

    /// The options shared with `respawn serve`.
    #[command(flatten)]
    pub supervision: SupervisionArgs,

    /// The server to run and its arguments; `{port}` becomes the server's port
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

impl BatchArgs {
    /// The supervision options as `serve`'s flags, so that they are layered over the environment
    /// and the config file exactly as for `respawn serve`; `--url` becomes `--upstream`.
    pub fn serve_args(&self) -> ServeArgs {
        ServeArgs {
            supervision: self.supervision.clone(),
            upstream: self.url.clone(),
            command: self.command.clone(),
            ..ServeArgs::default()
        }
    }
}
