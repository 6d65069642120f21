//! The mock's Prometheus counters, shaped like a model server's (`vllm:*` → `mock:*`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// Counters shared by every worker.
#[derive(Debug, Default)]
pub(crate) struct MockMetrics {
    generation_tokens: AtomicU64,
    running: AtomicI64,
    completions: AtomicU64,
    /// Lines written by `--flood-output`.
    pub(crate) output_lines: Arc<AtomicU64>,
    cancelled: AtomicU64,
}

impl MockMetrics {
    /// One more token generated.
    pub(crate) fn token_generated(&self) {
        self.generation_tokens.fetch_add(1, Ordering::Relaxed);
    }

    /// One completion finished.
    pub(crate) fn completion_finished(&self) {
        self.completions.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks a request running until the returned guard drops; a guard dropped before
    /// [`RunningGuard::finish`] counts as a cancelled request (its client went away).
    pub(crate) fn running(self: &Arc<Self>) -> RunningGuard {
        self.running.fetch_add(1, Ordering::Relaxed);
        RunningGuard {
            metrics: Arc::clone(self),
            finished: false,
        }
    }

    /// Completions being generated now.
    pub(crate) fn running_now(&self) -> i64 {
        self.running.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(512);
        let tokens = self.generation_tokens.load(Ordering::Relaxed);
        let running = self.running.load(Ordering::Relaxed);
        let completions = self.completions.load(Ordering::Relaxed);
        let output_lines = self.output_lines.load(Ordering::Relaxed);
        let cancelled = self.cancelled.load(Ordering::Relaxed);
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# HELP mock:generation_tokens_total Tokens generated since start.\n\
             # TYPE mock:generation_tokens_total counter\n\
             mock:generation_tokens_total {tokens}\n\
             # HELP mock:requests_running Completions being generated now.\n\
             # TYPE mock:requests_running gauge\n\
             mock:requests_running {running}\n\
             # HELP mock:completions_total Completions finished since start.\n\
             # TYPE mock:completions_total counter\n\
             mock:completions_total {completions}\n\
             # HELP mock:output_lines_total Lines written to stdout and stderr by --flood-output.\n\
             # TYPE mock:output_lines_total counter\n\
             mock:output_lines_total {output_lines}\n\
             # HELP mock:requests_cancelled_total Completions that ended unfinished (the client went away, or --drop-stream-rate cut them).\n\
             # TYPE mock:requests_cancelled_total counter\n\
             mock:requests_cancelled_total {cancelled}\n"
        );
        out
    }
}

/// Keeps a request counted in `mock:requests_running` while alive.
#[derive(Debug)]
pub(crate) struct RunningGuard {
    metrics: Arc<MockMetrics>,
    finished: bool,
}

impl RunningGuard {
    /// The completion was generated in full: dropping the guard now is no cancellation.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.metrics.running.fetch_sub(1, Ordering::Relaxed);
        if !self.finished {
            self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}
