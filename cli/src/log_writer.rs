//! respawn's own log writer: it never blocks the thread that logs.
//!
//! Whatever reads respawn's stderr can stall: a paused `| tee`, a full pipe, a log shipper that
//! fell behind. A plain writer would then block every thread that logs, and respawn logs from
//! the threads that read the model server's output and from the actors that detect hangs: the
//! child would block on its own writes and a frozen server would stay "ready". So each log line
//! goes into a bounded queue, and one thread of its own writes the queue to stderr. When the
//! queue is full the line is dropped and counted ([`LogLinesDropped`], shown as
//! `respawn_log_lines_dropped_total`), and once the writer has caught up it says how many lines
//! were lost (at most once every [`WARN_EVERY`]).

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use respawn::metrics::LogLinesDropped;
use tracing_subscriber::fmt::MakeWriter;

/// Lines the queue holds before it drops new ones (about a few MiB of typical lines).
pub const QUEUE_LINES: usize = 8192;

/// Least time between two warnings about dropped lines.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The writer installed by [`install`], for the counter of dropped lines.
static INSTALLED: OnceLock<NonBlockingStderr> = OnceLock::new();

/// What the loggers and the writing thread share.
#[derive(Debug)]
struct Shared {
    queue: SyncSender<Vec<u8>>,
    /// Lines accepted but not yet written.
    queued: AtomicUsize,
    dropped: LogLinesDropped,
}

/// A [`MakeWriter`] for `tracing_subscriber` that queues each line for a writing thread.
#[derive(Clone, Debug)]
pub struct NonBlockingStderr {
    shared: Arc<Shared>,
}

impl NonBlockingStderr {
    /// A writer of `capacity` queued lines to `out`, written by a thread started here.
    ///
    /// # Errors
    /// Fails when the writing thread cannot be started.
    pub fn spawn(out: impl Write + Send + 'static, capacity: usize) -> io::Result<Self> {
        let (queue, lines) = mpsc::sync_channel(capacity);
        let shared = Arc::new(Shared {
            queue,
            queued: AtomicUsize::new(0),
            dropped: LogLinesDropped::new(),
        });
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("respawn-log".to_owned())
            .spawn(move || write_lines(lines, out, &writer, capacity))?;
        Ok(Self { shared })
    }

    /// The counter of lines dropped because the queue was full.
    pub fn dropped(&self) -> LogLinesDropped {
        self.shared.dropped.clone()
    }

    /// Waits (at most `bound`) until every queued line is written: before the last words of a
    /// process, and at its exit.
    pub fn flush(&self, bound: Duration) {
        let deadline = Instant::now() + bound;
        while self.shared.queued.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn enqueue(&self, line: &[u8]) {
        // Counted before sending so that the writer never sees the count below what it wrote.
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        match self.shared.queue.try_send(line.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                self.shared.dropped.add(1);
            }
        }
    }
}

/// The writing thread: writes each queued line, and warns about dropped lines once it has
/// caught up.
fn write_lines(lines: Receiver<Vec<u8>>, mut out: impl Write, shared: &Shared, capacity: usize) {
    let mut reported = 0;
    let mut last_warning: Option<Instant> = None;
    while let Ok(line) = lines.recv() {
        // A reader that went away (EPIPE) loses the log; nothing else is affected.
        let _ = out.write_all(&line);
        let left = shared
            .queued
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        let dropped = shared.dropped.get();
        let caught_up = left < capacity / 2;
        let due = last_warning.map_or(true, |at| at.elapsed() >= WARN_EVERY);
        if dropped > reported && caught_up && due {
            tracing::warn!(
                dropped = dropped - reported,
                dropped_total = dropped,
                "respawn's stderr was not read fast enough: log lines were dropped (counted in respawn_log_lines_dropped_total); the model server and hang detection were not held up"
            );
            reported = dropped;
            last_warning = Some(Instant::now());
        }
    }
}

/// One log line on its way to the queue.
#[derive(Debug)]
pub struct QueuedLine<'a> {
    writer: &'a NonBlockingStderr,
}

impl Write for QueuedLine<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // `tracing_subscriber::fmt` formats an event whole and writes it with one call.
        self.writer.enqueue(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for NonBlockingStderr {
    type Writer = QueuedLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        QueuedLine { writer: self }
    }
}

/// The writer [`install`] started, if it has: what is still queued can be flushed without
/// starting one.
pub fn installed() -> Option<NonBlockingStderr> {
    INSTALLED.get().cloned()
}

/// The process's writer to stderr, started on first use (once per process).
///
/// # Errors
/// Fails when the writing thread cannot be started.
pub fn install() -> io::Result<NonBlockingStderr> {
    if let Some(installed) = INSTALLED.get() {
        return Ok(installed.clone());
    }
    let writer = NonBlockingStderr::spawn(io::stderr(), QUEUE_LINES)?;
    Ok(INSTALLED.get_or_init(|| writer).clone())
}

/// The counter of lines the process's writer dropped (a counter that stays at zero when no
/// writer was installed, as in tests that embed the library).
pub fn dropped_lines() -> LogLinesDropped {
    INSTALLED
        .get()
        .map_or_else(LogLinesDropped::new, NonBlockingStderr::dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// An output whose writes block until released, then record what was written.
    #[derive(Clone)]
    struct Gate {
        open: Arc<(Mutex<bool>, parking_lot::Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Gate {
        fn closed() -> Self {
            Self {
                open: Arc::new((Mutex::new(false), parking_lot::Condvar::new())),
                written: Arc::default(),
            }
        }

        fn open(&self) {
            *self.open.0.lock() = true;
            self.open.1.notify_all();
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.written.lock()).into_owned()
        }
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut open = self.open.0.lock();
            while !*open {
                self.open.1.wait(&mut open);
            }
            self.written.lock().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_reader_drops_and_counts_lines_without_blocking_the_logger() {
        let gate = Gate::closed();
        let writer = NonBlockingStderr::spawn(gate.clone(), 4).expect("thread");
        // The writing thread takes one line and blocks on it; four more fill the queue; the
        // rest are dropped. Every call returns at once although nothing can be written.
        for n in 0..20 {
            writer
                .make_writer()
                .write_all(format!("line {n}\n").as_bytes())
                .unwrap();
        }
        let dropped = writer.dropped().get();
        assert!(
            (15..=16).contains(&dropped),
            "20 lines, at most 5 in flight: {dropped} dropped"
        );
        gate.open();
        writer.flush(Duration::from_secs(10));
        let text = gate.text();
        assert!(text.starts_with("line 0\n"), "{text}");
        assert_eq!(text.lines().count() as u64, 20 - dropped, "{text}");
    }

    #[test]
    fn nothing_is_dropped_while_the_reader_keeps_up() {
        let gate = Gate::closed();
        gate.open();
        let writer = NonBlockingStderr::spawn(gate.clone(), 64).expect("thread");
        for n in 0..50 {
            writer
                .make_writer()
                .write_all(format!("line {n}\n").as_bytes())
                .unwrap();
            writer.flush(Duration::from_secs(10));
        }
        assert_eq!(writer.dropped().get(), 0);
        assert_eq!(gate.text().lines().count(), 50);
    }
}
