//! The one writer of the output file: a thread that appends result lines as they complete and
//! syncs them to disk at short intervals.
//!
//! A line is handed to the kernel with one `write` as soon as the writer receives it, so a
//! `kill -9` of respawn loses no finished result; the periodic `fdatasync` bounds what a power
//! loss can take to the last interval. It runs on its own thread so that a slow disk never
//! stalls the requests in flight.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// When to sync: after `interval` with unsynced lines, or after `lines` unsynced lines.
#[derive(Clone, Copy, Debug)]
pub struct SyncPolicy {
    /// Longest time a written line stays unsynced.
    pub interval: Duration,
    /// Most lines written between two syncs.
    pub lines: usize,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            lines: 256,
        }
    }
}

/// Why the output file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to the output file {}: {source} (the results so far are kept; rerun to resume)", path.display())]
pub struct WriteError {
    /// The file.
    pub path: PathBuf,
    /// What the OS said.
    #[source]
    pub source: std::io::Error,
}

/// The handle the run appends through; [`JournalWriter::finish`] syncs and closes.
#[derive(Debug)]
pub struct JournalWriter {
    lines: Option<Sender<String>>,
    thread: Option<JoinHandle<Result<(), WriteError>>>,
}

impl JournalWriter {
    /// Starts the writer thread over an append-mode file.
    pub fn spawn(file: File, path: PathBuf, policy: SyncPolicy) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<String>();
        let thread = std::thread::Builder::new()
            .name("respawn-batch-writer".to_owned())
            .spawn(move || write_loop(file, &path, policy, &rx))?;
        Ok(Self {
            lines: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues one complete line (ending in a newline). `false` means the writer has stopped
    /// on an error, which [`JournalWriter::finish`] returns.
    pub fn append(&self, line: String) -> bool {
        self.lines.as_ref().is_some_and(|tx| tx.send(line).is_ok())
    }

    /// Writes what is queued, syncs it, and stops the writer.
    pub fn finish(mut self) -> Result<(), WriteError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), WriteError> {
        drop(self.lines.take());
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(WriteError {
                path: PathBuf::new(),
                source: std::io::Error::other("the output writer thread panicked"),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn write_loop(
    mut file: File,
    path: &std::path::Path,
    policy: SyncPolicy,
    rx: &mpsc::Receiver<String>,
) -> Result<(), WriteError> {
    let fail = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    let idle = Duration::from_secs(3600);
    let mut unsynced = 0usize;
    let mut last_sync = Instant::now();
    let mut batch = String::new();
    loop {
        let wait = if unsynced > 0 {
            policy.interval.saturating_sub(last_sync.elapsed())
        } else {
            idle
        };
        match rx.recv_timeout(wait) {
            Ok(line) => {
                batch.clear();
                batch.push_str(&line);
                let mut count = 1;
                // Lines that completed together go out in one write.
                while let Ok(more) = rx.try_recv() {
                    batch.push_str(&more);
                    count += 1;
                    if batch.len() > 1 << 20 {
                        break;
                    }
                }
                file.write_all(batch.as_bytes()).map_err(fail)?;
                if unsynced == 0 {
                    last_sync = Instant::now();
                }
                unsynced += count;
                if unsynced >= policy.lines || last_sync.elapsed() >= policy.interval {
                    file.sync_data().map_err(fail)?;
                    unsynced = 0;
                    last_sync = Instant::now();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if unsynced > 0 {
                    file.sync_data().map_err(fail)?;
                    unsynced = 0;
                    last_sync = Instant::now();
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                file.sync_data().map_err(fail)?;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_appended_line_is_in_the_file_after_finish() {
        let dir = std::env::temp_dir().join(format!("respawn-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("out.jsonl");
        let _ = std::fs::remove_file(&path);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .expect("open");
        let writer = JournalWriter::spawn(
            file,
            path.clone(),
            SyncPolicy {
                interval: Duration::from_millis(5),
                lines: 3,
            },
        )
        .expect("spawn");
        for i in 0..100 {
            assert!(writer.append(format!("{i}\n")));
        }
        writer.finish().expect("finish");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            (0..100)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
