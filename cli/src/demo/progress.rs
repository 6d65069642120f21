//! How the demo shows a run in progress: a live bar on a terminal, plain periodic lines on a pipe
//! (so that logs and CI output carry no cursor escapes), and one line per restart either way.

use std::cell::Cell;
use std::io::Write as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

/// Time between two plain progress lines on a pipe.
const LINE_INTERVAL: Duration = Duration::from_secs(2);

/// Where progress goes.
enum Display {
    /// A live bar on the terminal (stderr).
    Bar(ProgressBar),
    /// Plain lines on stderr, at most one every [`LINE_INTERVAL`].
    Lines {
        /// When the last line was written.
        last: Cell<Option<Instant>>,
    },
}

/// The run's progress: counts and their display. Lives on the demo's one thread.
pub struct Progress {
    display: Display,
    total: u64,
    succeeded: Cell<u64>,
    failed: Cell<u64>,
    origin: Cell<Instant>,
    last_success: Cell<Option<Instant>>,
    before_first_hang: Cell<Option<(u64, Duration)>>,
}

impl Progress {
    /// A display for `total` samples: a bar when `terminal`, plain lines otherwise.
    pub fn new(total: u64, terminal: bool) -> Self {
        let display = if terminal {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(100));
            Display::Bar(bar)
        } else {
            Display::Lines {
                last: Cell::new(None),
            }
        };
        Self {
            display,
            total,
            succeeded: Cell::new(0),
            failed: Cell::new(0),
            origin: Cell::new(Instant::now()),
            last_success: Cell::new(None),
            before_first_hang: Cell::new(None),
        }
    }

    /// Samples answered so far.
    pub fn succeeded(&self) -> u64 {
        self.succeeded.get()
    }

    /// Samples that failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.get()
    }

    /// Starts the clock of the samples (by default, the display's creation) and answers it.
    pub fn start_clock(&self) -> Instant {
        let now = Instant::now();
        self.origin.set(now);
        now
    }

    /// The server stopped answering for the first time: remembers how many samples had been
    /// answered, and when the last of them was, so that the healthy serving rate is known.
    pub fn first_hang(&self) {
        if self.before_first_hang.get().is_some() {
            return;
        }
        if let Some(at) = self.last_success.get() {
            let origin = self.origin.get();
            self.before_first_hang.set(Some((
                self.succeeded.get(),
                at.saturating_duration_since(origin),
            )));
        }
    }

    /// Samples answered before the server first stopped answering, and the time they took;
    /// `None` when it never stopped answering.
    pub fn before_first_hang(&self) -> Option<(u64, Duration)> {
        self.before_first_hang.get()
    }

    /// One sample finished.
    pub fn sample_done(&self, ok: bool) {
        if ok {
            self.succeeded.set(self.succeeded.get() + 1);
            self.last_success.set(Some(Instant::now()));
        } else {
            self.failed.set(self.failed.get() + 1);
        }
        let done = self.succeeded.get() + self.failed.get();
        match &self.display {
            Display::Bar(bar) => {
                bar.set_position(done);
                if self.failed.get() > 0 {
                    bar.set_message(format!("{} failed", self.failed.get()));
                }
            }
            Display::Lines { last } => {
                let now = Instant::now();
                let due = match last.get() {
                    None => true,
                    Some(at) => now.duration_since(at) >= LINE_INTERVAL,
                };
                if due || done == self.total {
                    last.set(Some(now));
                    self.line(&format!(
                        "progress: {done}/{} samples ({} succeeded, {} failed)",
                        self.total,
                        self.succeeded.get(),
                        self.failed.get()
                    ));
                }
            }
        }
    }

    /// A line about what happened (a wedge, a restart), above the bar on a terminal.
    pub fn event(&self, text: &str) {
        match &self.display {
            Display::Bar(bar) => bar.println(text),
            Display::Lines { .. } => self.line(text),
        }
    }

    /// Ends the display (the bar stays on screen, complete).
    pub fn finish(&self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish();
        }
    }

    fn line(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{text}");
    }
}
