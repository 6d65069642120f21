//! `respawn batch`: run an OpenAI batch file (JSONL) against a model server that respawn keeps
//! answering, exactly once per request, surviving the server's hangs and respawn's own crash.
//!
//! ```text
//! respawn batch --input requests.jsonl --output results.jsonl -- vllm serve MODEL --port {port}
//! ```
//!
//! The run, in order:
//! 1. the supervision options are stacked as for `respawn serve` ([`args`]);
//! 2. the whole input is read and checked — malformed lines, non-POST urls and duplicate
//!    `custom_id`s are refused before anything is sent ([`input`]);
//! 3. the output file is locked and read back: the ids it records are skipped, and a torn last
//!    line left by a crash is cut ([`journal`]);
//! 4. the server is started (or, with `--url`, watched) by an in-process
//!    [`Supervisor`](respawn::supervisor::Supervisor), and the pending requests are sent
//!    `--concurrency` at a time through the retrying sender ([`runner`]);
//! 5. each result is appended as it completes by one writer thread that syncs at short
//!    intervals ([`journal_writer`]), in the OpenAI batch output format ([`record`]);
//! 6. a progress bar or periodic log lines, then a summary ([`progress`]).
//!
//! Exactly once: an id is recorded only when its request is final, the file is appended to by
//! one writer under an exclusive lock, and a rerun skips what is recorded. A `kill -9` at any
//! moment loses only the requests in flight, which the rerun sends again.

pub mod args;
pub mod error;
pub mod input;
pub mod journal;
pub mod journal_writer;
pub mod progress;
pub mod record;
pub mod runner;

use std::collections::HashSet;
use std::time::Duration;

use tracing::{info, warn};

pub use crate::cli::SupervisionArgs;
pub use args::BatchArgs;
pub use error::BatchError;

use crate::config::ServeConfig;
use crate::serve::{free_port, supervisor_config, target, ServeError};
use journal_writer::{JournalWriter, SyncPolicy};
use progress::Progress;
use respawn::supervisor::Supervisor;
use runner::{RunEnd, RunSettings};

/// Runs `respawn batch`; returns the process exit code: 0 when every request succeeded, 1 when
/// some failed for good (they are in the output as error lines or non-2xx answers). The other
/// endings are errors, with [`BatchError::exit_code`].
pub fn run(args: BatchArgs) -> Result<i32, BatchError> {
    let env = |name: &str| std::env::var(name).ok();
    let mut config = ServeConfig::load(&args.serve_args(), &env)?;
    let requests = input::read(&args.input)?;
    let journal = journal::open(&args.output, args.retry_failed)?;
    let recorded = &journal.recorded;
    let input_ids: HashSet<&str> = requests.iter().map(|r| r.custom_id.as_str()).collect();
    let foreign: Vec<&String> = recorded
        .finished
        .keys()
        .filter(|id| !input_ids.contains(id.as_str()))
        .collect();
    if let Some(first) = foreign.first() {
        return Err(BatchError::ForeignIds {
            output: args.output.clone(),
            custom_id: (*first).clone(),
            count: foreign.len(),
        });
    }
    let earlier = recorded.finished.len() as u64;
    let earlier_failed = recorded.finished.values().filter(|ok| !**ok).count() as u64;
    let pending: Vec<input::BatchRequest> = requests
        .iter()
        .filter(|r| !recorded.finished.contains_key(&r.custom_id))
        .cloned()
        .collect();
    let total = requests.len() as u64;
    drop(requests);
    if earlier > 0 {
        info!(output = %args.output.display(), recorded = earlier, pending = pending.len(),
              "resuming: the requests already recorded are skipped");
    }
    let mut progress = Progress::new(total, earlier, earlier_failed, args.log_interval);
    if pending.is_empty() {
        let summary = progress.finish("nothing left to send");
        return Ok(exit_code(summary.failed_total()));
    }
    if config.upstream.is_some()
        && config.restart_url.is_none()
        && config.restart_command.is_none()
        && config.enable_restart
    {
        info!("--url without --restart-url or --restart-command: hangs are detected and requests retried, but the server is not restarted");
        config.enable_restart = false;
    }
    let port = match config.port {
        Some(port) => port,
        None => free_port().map_err(ServeError::NoFreePort)?,
    };
    let target = target(&config, port)?;
    let writer = JournalWriter::spawn(journal.file, journal.path.clone(), SyncPolicy::default())
        .map_err(BatchError::Runtime)?;
    let settings = RunSettings {
        concurrency: args.concurrency as usize,
        first_ready: config.startup_timeout + config.stop_grace + Duration::from_secs(5),
    };
    let system = actix_web::rt::System::new();
    let ended = system.block_on(async {
        let supervisor = Supervisor::start_with(
            &crate::config::restart_strategies(),
            supervisor_config(&config),
            target,
        )?;
        let ended = runner::drive(&supervisor, pending, settings, &writer, &mut progress).await;
        supervisor.stop(config.stop_grace).await;
        ended.map_err(BatchError::Runtime)
    });
    // The writer's own error explains a failed append better than the run's ending does.
    writer.finish()?;
    let ended = ended?;
    let outcome = match &ended {
        RunEnd::Completed => "completed",
        RunEnd::ServerDown { .. } => "stopped: no server",
        RunEnd::Interrupted { .. } => "interrupted",
        RunEnd::WriterFailed => "stopped: output write failed",
    };
    let summary = progress.finish(outcome);
    let remaining = summary.total.saturating_sub(summary.done());
    match ended {
        RunEnd::Completed => {
            if summary.failed_total() > 0 {
                warn!(failed = summary.failed_total(), "some requests failed for good: see their lines in the output (rerun with --retry-failed to send them again)");
            }
            Ok(exit_code(summary.failed_total()))
        }
        RunEnd::ServerDown { reason } => Err(BatchError::GaveUp { reason, remaining }),
        RunEnd::Interrupted { signal } => Err(BatchError::Interrupted { signal, remaining }),
        // `finish` above returned the write error; reaching here means it vanished.
        RunEnd::WriterFailed => Err(BatchError::Runtime(std::io::Error::other(
            "the output writer stopped",
        ))),
    }
}

fn exit_code(failed: u64) -> i32 {
    if failed > 0 {
        1
    } else {
        0
    }
}
