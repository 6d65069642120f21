//! [`CommandRestart`]: the restart strategy that runs a configured command, such as
//! `systemctl restart vllm` or `kubectl rollout restart deployment/vllm`, then waits for the
//! server to answer its health check.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use crate::exit::ExitInfo;
use crate::readiness::{bounded_client, wait_until_healthy};
use crate::restart::{Restart, RestartError, RestartReport};

/// Default bound for the command itself.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Default bound for the server answering its health check after the command.
pub const DEFAULT_COMMAND_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for a single health probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of the command's stderr an error keeps.
const STDERR_TAIL_BYTES: usize = 2048;

/// Restarts the server by running `argv` (directly, never through a shell), then, when
/// `health_url` is set, waits for it to answer 2xx.
#[derive(Debug, Clone)]
pub struct CommandRestart {
    /// The command and its arguments.
    pub argv: Vec<OsString>,
    /// Health URL to wait for after the command; `None` trusts the command's exit status.
    pub health_url: Option<String>,
    /// Bound for the command; it is killed past it.
    pub timeout: Duration,
    /// Bound for the health check to pass after the command.
    pub ready_timeout: Duration,
}

impl CommandRestart {
    /// The strategy's name in reports, logs and a supervisor's `restart_strategies`.
    pub const NAME: &'static str = "command";

    /// A strategy running `argv` with [`DEFAULT_COMMAND_TIMEOUT`] and
    /// [`DEFAULT_COMMAND_READY_TIMEOUT`].
    pub fn new(
        argv: impl IntoIterator<Item = impl Into<OsString>>,
        health_url: Option<String>,
    ) -> Self {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            health_url,
            timeout: DEFAULT_COMMAND_TIMEOUT,
            ready_timeout: DEFAULT_COMMAND_READY_TIMEOUT,
        }
    }

    async fn run(&self) -> Result<(), RestartError> {
        let Some((program, args)) = self.argv.split_first() else {
            return Err(RestartError::Invalid("the restart command is empty"));
        };
        let shown = program.to_string_lossy().into_owned();
        let run = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let output = match tokio::time::timeout(self.timeout, run).await {
            Err(_) => {
                return Err(RestartError::Timeout {
                    what: "the restart command",
                    after: self.timeout,
                })
            }
            Ok(Err(source)) => {
                return Err(RestartError::CommandNotRun {
                    program: shown,
                    reason: source.to_string(),
                })
            }
            Ok(Ok(output)) => output,
        };
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(RestartError::CommandFailed {
            program: shown,
            status: ExitInfo::from(output.status),
            stderr_tail: tail(stderr.trim_end(), STDERR_TAIL_BYTES).to_owned(),
        })
    }
}

/// The last `max` bytes of `text`, cut at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

impl Actor for CommandRestart {
    type Context = Context<Self>;
}

impl Handler<Restart> for CommandRestart {
    type Result = ResponseFuture<Result<RestartReport, RestartError>>;

    fn handle(&mut self, msg: Restart, _ctx: &mut Self::Context) -> Self::Result {
        let this = self.clone();
        Box::pin(async move {
            let begun = Instant::now();
            tracing::info!(command = ?this.argv, hung = msg.hung.0, next = msg.next.0,
                cause = msg.cause.as_str(), "restarting by command");
            this.run().await?;
            let mut steps = vec![("command", begun.elapsed())];
            let mut ready_confirmed = false;
            if let Some(url) = &this.health_url {
                let step = Instant::now();
                let client = bounded_client(PROBE_TIMEOUT);
                wait_until_healthy(&client, url, PROBE_TIMEOUT, this.ready_timeout).await?;
                steps.push(("ready", step.elapsed()));
                ready_confirmed = true;
            }
            Ok(RestartReport {
                strategy: Self::NAME,
                pid: None,
                guardian_pid: None,
                ready_confirmed,
                steps,
                total: begun.elapsed(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ab", 10), "ab");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("aéb", 2), "b");
    }
}
