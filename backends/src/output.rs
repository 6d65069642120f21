//! The child's stdout and stderr: forwarded line by line into `tracing`, and the last lines
//! kept in a bounded buffer for status pages and error messages.
//!
//! Each stream is read by a thread of its own, into a fixed buffer, never by the actors: a child
//! that floods its output costs that thread's time, not the health prober's. Nothing here waits
//! for respawn's own log to be written: the log writer of the `respawn` binary drops lines (and
//! counts them) when its reader stalls, so the child is read at the pace it writes and never
//! blocks on a full pipe because respawn's stderr is not being read.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;

use parking_lot::Mutex;

/// Longest line kept; longer lines are split so that a child printing without newlines cannot
/// grow memory without bound.
const MAX_LINE_BYTES: usize = 8 * 1024;

/// Size of each reader's buffer: large enough that a flood is read in few system calls.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// The last `capacity` output lines of a server, shared between the readers and the actor.
#[derive(Debug)]
pub(crate) struct RecentLines {
    lines: Mutex<VecDeque<String>>,
    capacity: usize,
}

impl RecentLines {
    /// An empty buffer keeping at most `capacity` lines.
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            lines: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
        })
    }

    /// Appends a line, dropping the oldest when full.
    pub(crate) fn push(&self, line: String) {
        if self.capacity == 0 {
            return;
        }
        let mut lines = self.lines.lock();
        while lines.len() >= self.capacity {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// A copy of the kept lines, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<String> {
        self.lines.lock().iter().cloned().collect()
    }
}

/// Which of the child's streams a reader follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Logged at info.
    Stdout,
    /// Logged at warn.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Starts a thread that forwards `reader` (one of the child's pipes) until its end.
pub(crate) fn spawn_forwarder(
    reader: impl Read + Send + 'static,
    stream: Stream,
    server: Arc<str>,
    generation: u64,
    recent: Arc<RecentLines>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("respawn-{}", stream.as_str()))
        .spawn(move || forward_lines(reader, stream, &server, generation, &recent))
        .map(drop)
}

/// Reads `reader` to its end (the child and everything that inherited the pipe are gone),
/// logging every line under `server`/`generation` and keeping it.
pub(crate) fn forward_lines(
    reader: impl Read,
    stream: Stream,
    server: &str,
    generation: u64,
    recent: &RecentLines,
) {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                tracing::debug!(server, generation, error = %err, "output stream failed");
                break;
            }
        };
        if buf.is_empty() {
            if !line.is_empty() {
                emit(&mut line, stream, server, generation, recent);
            }
            break;
        }
        let room = MAX_LINE_BYTES - line.len();
        let take = buf.len().min(room);
        let (consumed, complete) = match buf[..take].iter().position(|&b| b == b'\n') {
            Some(at) => {
                line.extend_from_slice(&buf[..at]);
                (at + 1, true)
            }
            None => {
                line.extend_from_slice(&buf[..take]);
                (take, line.len() >= MAX_LINE_BYTES)
            }
        };
        reader.consume(consumed);
        if complete {
            emit(&mut line, stream, server, generation, recent);
        }
    }
}

fn emit(line: &mut Vec<u8>, stream: Stream, server: &str, generation: u64, recent: &RecentLines) {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let text = String::from_utf8_lossy(line).into_owned();
    line.clear();
    // Model servers log their ordinary progress to stderr (vLLM, llama.cpp, Python's logging):
    // both streams are the server's log at info level, told apart by the `stream` field.
    match stream {
        Stream::Stdout => tracing::info!(server, generation, stream = "stdout", "{text}"),
        Stream::Stderr => tracing::info!(server, generation, stream = "stderr", "{text}"),
    }
    recent.push(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_lines() {
        let recent = RecentLines::new(2);
        for n in 0..5 {
            recent.push(n.to_string());
        }
        assert_eq!(recent.snapshot(), vec!["3".to_owned(), "4".to_owned()]);
        let none = RecentLines::new(0);
        none.push("x".into());
        assert!(none.snapshot().is_empty());
    }

    #[test]
    fn splits_lines_and_caps_long_ones() {
        let recent = RecentLines::new(10);
        let mut input = b"first\r\nsecond\n".to_vec();
        input.extend(vec![b'x'; MAX_LINE_BYTES + 10]);
        input.extend_from_slice(b"\nlast-without-newline");
        forward_lines(&input[..], Stream::Stdout, "t", 1, &recent);
        let lines = recent.snapshot();
        assert_eq!(lines[0], "first");
        assert_eq!(lines[1], "second");
        assert_eq!(lines[2].len(), MAX_LINE_BYTES);
        assert_eq!(lines[3], "x".repeat(10));
        assert_eq!(lines[4], "last-without-newline");
        assert_eq!(lines.len(), 5);
    }
}
