//! How a batch tells a person how far it is: a progress bar on a terminal (done/total, rate,
//! ETA, restarts so far), plain periodic log lines otherwise (a log collector cannot render a
//! bar), and one summary line at the end.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;
use tracing::info;

/// The counts of one run, and how they are shown.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    earlier: u64,
    earlier_failed: u64,
    succeeded: u64,
    failed: u64,
    restarts: u64,
    started: Instant,
    last_line: Instant,
    interval: Duration,
}

/// The counts at the end of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Requests in the input.
    pub total: u64,
    /// Recorded by an earlier run and skipped.
    pub earlier: u64,
    /// Of those, recorded as failed.
    pub earlier_failed: u64,
    /// Succeeded in this run.
    pub succeeded: u64,
    /// Failed for good in this run (error lines and non-2xx answers).
    pub failed: u64,
    /// Restarts of the server in this run.
    pub restarts: u64,
}

impl Summary {
    /// Requests with a record in the output file.
    pub fn done(&self) -> u64 {
        self.earlier + self.succeeded + self.failed
    }

    /// Requests recorded as failed, in this run or an earlier one.
    pub fn failed_total(&self) -> u64 {
        self.earlier_failed + self.failed
    }
}

impl Progress {
    /// Starts counting `total` requests of which `earlier` were recorded by an earlier run
    /// (`earlier_failed` of them as failures); `interval` spaces the plain log lines.
    pub fn new(total: u64, earlier: u64, earlier_failed: u64, interval: Duration) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(
                "{bar:32.cyan/blue} {pos}/{len} {per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(style)
                .with_position(earlier)
                .with_message("restarts 0");
            bar.reset_eta();
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            total,
            earlier,
            earlier_failed,
            succeeded: 0,
            failed: 0,
            restarts: 0,
            started: now,
            last_line: now,
            interval,
        }
    }

    /// Restarts the clock when sending begins, so that the rate and the ETA leave out the
    /// server's start-up.
    pub fn sending(&mut self) {
        let now = Instant::now();
        self.started = now;
        self.last_line = now;
        if let Some(bar) = &self.bar {
            bar.reset_eta();
            bar.reset_elapsed();
        }
    }

    /// Counts one finished request.
    pub fn finished(&mut self, succeeded: bool) {
        if succeeded {
            self.succeeded += 1;
        } else {
            self.failed += 1;
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Updates the restarts so far.
    pub fn restarts(&mut self, restarts: u64) {
        if restarts != self.restarts {
            self.restarts = restarts;
            self.update_message();
        }
    }

    fn update_message(&self) {
        if let Some(bar) = &self.bar {
            let failed = self.failed + self.earlier_failed;
            bar.set_message(if failed > 0 {
                format!("restarts {}, failed {failed}", self.restarts)
            } else {
                format!("restarts {}", self.restarts)
            });
        }
    }

    /// Called regularly: writes a progress line when there is no bar and the interval passed.
    pub fn tick(&mut self) {
        self.update_message();
        if self.bar.is_some() || self.last_line.elapsed() < self.interval {
            return;
        }
        self.last_line = Instant::now();
        let summary = self.summary();
        let this_run = summary.succeeded + summary.failed;
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            this_run as f64 / elapsed
        } else {
            0.0
        };
        let remaining = summary.total.saturating_sub(summary.done());
        let eta = if rate > 0.0 {
            humantime::format_duration(Duration::from_secs((remaining as f64 / rate).ceil() as u64))
                .to_string()
        } else {
            "unknown".to_owned()
        };
        info!(
            done = summary.done(),
            total = summary.total,
            rate = format!("{rate:.1}/s"),
            eta = %eta,
            restarts = summary.restarts,
            failed = summary.failed_total(),
            "batch progress"
        );
    }

    /// The counts so far.
    pub fn summary(&self) -> Summary {
        Summary {
            total: self.total,
            earlier: self.earlier,
            earlier_failed: self.earlier_failed,
            succeeded: self.succeeded,
            failed: self.failed,
            restarts: self.restarts,
        }
    }

    /// Removes the bar and logs the summary; `outcome` says how the run ended.
    pub fn finish(&mut self, outcome: &str) -> Summary {
        self.update_message();
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
        let summary = self.summary();
        let elapsed = self.started.elapsed();
        let this_run = summary.succeeded + summary.failed;
        let rate = this_run as f64 / elapsed.as_secs_f64().max(0.001);
        info!(
            outcome,
            total = summary.total,
            done = summary.done(),
            succeeded = summary.succeeded,
            failed = summary.failed,
            skipped = summary.earlier,
            failed_earlier = summary.earlier_failed,
            restarts = summary.restarts,
            elapsed = %humantime::format_duration(Duration::from_millis(elapsed.as_millis() as u64)),
            rate = format!("{rate:.1}/s"),
            "batch summary"
        );
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_adds_this_run_to_the_earlier_one() {
        let mut progress = Progress::new(10, 4, 1, Duration::from_secs(10));
        progress.finished(true);
        progress.finished(false);
        progress.restarts(2);
        let summary = progress.finish("completed");
        assert_eq!(summary.done(), 6);
        assert_eq!(summary.failed_total(), 2);
        assert_eq!(summary.restarts, 2);
        assert_eq!((summary.succeeded, summary.failed), (1, 1));
    }
}
