//! The output file as the batch's journal: what finished is what it holds.
//!
//! Opening it for a run takes an exclusive lock (two runs appending to one file would record an
//! id twice), reads back the ids already recorded, and repairs what a crash can leave behind: a
//! last line cut short (`kill -9` or a full disk in the middle of a write; a power loss can also
//! leave NUL bytes or a garbled last line after the last fsync). Only the tail after the last
//! whole record is ever cut; an unreadable line *before* a good one, or a file with no record
//! at all, is refused instead, so a wrong `--output` never loses anyone's data.
//!
//! With `--retry-failed`, the records of failed requests are dropped (by writing the kept lines
//! to a new file and renaming it over the old one, so a crash in between loses nothing) and
//! those requests run again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tracing::{info, warn};

/// Why the output file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// It cannot be opened for appending.
    #[error("cannot open the output file {} for writing: {source} (check that its directory exists and is writable)", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Another run holds it.
    #[error("the output file {} is in use by another `respawn batch` (wait for it to end, or choose another --output)", path.display())]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// Reading, repairing or rewriting it failed.
    #[error("cannot {action} the output file {}: {source}", path.display())]
    Io {
        /// What was being done: `read`, `repair`, `rewrite`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A line before the last good record cannot be read: not a crash's trace, so not repaired.
    #[error("output file {} line {line} is not a batch result ({reason}); it was not written by a crash, so it is left alone: fix it or choose another --output", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why the line cannot be read.
        reason: String,
    },
    /// The file has content but no batch result at all: probably the wrong file.
    #[error("the output file {} holds no batch results (line 1: {reason}); refusing to append to it: choose another --output", path.display())]
    NotBatchOutput {
        /// The file.
        path: PathBuf,
        /// Why its first line cannot be read.
        reason: String,
    },
}

/// A crash's trace that was cut from the end of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// 1-based line where the cut starts.
    pub line: usize,
    /// Bytes removed.
    pub bytes: u64,
}

/// What the output file already holds.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Every recorded `custom_id`, with whether its request succeeded (a 2xx answer).
    pub finished: HashMap<String, bool>,
    /// Whether a torn tail was cut, and where.
    pub repaired: Option<TornTail>,
    /// Failed records dropped because of `--retry-failed`.
    pub dropped_failures: usize,
    /// Ids recorded more than once (only possible if the file was edited by hand or written by
    /// two runs without locking); each counts once.
    pub duplicates: usize,
}

/// The fields of a record that resuming needs; the rest of the line is left as it is.
#[derive(Deserialize)]
struct RecordedLine {
    #[allow(dead_code)]
    id: String,
    custom_id: String,
    #[serde(default)]
    response: Option<RecordedResponse>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RecordedResponse {
    status_code: u16,
}

impl RecordedLine {
    fn succeeded(&self) -> bool {
        self.error.as_ref().map_or(true, serde_json::Value::is_null)
            && self
                .response
                .as_ref()
                .is_some_and(|response| (200..300).contains(&response.status_code))
    }
}

/// The output file, opened and locked for this run.
#[derive(Debug)]
pub struct Journal {
    /// Opened for appending, holding the run's exclusive lock.
    pub file: File,
    /// Its path, for messages.
    pub path: PathBuf,
    /// What it already held.
    pub recorded: Recorded,
}

/// Opens (or creates) the output file, locks it, reads what it records and repairs a torn
/// tail; with `retry_failed`, drops the records of failed requests first.
pub fn open(path: &Path, retry_failed: bool) -> Result<Journal, JournalError> {
    let (mut file, created) = open_locked(path)?;
    if created {
        sync_parent(path);
    }
    let mut content = Vec::new();
    file.read_to_end(&mut content)
        .map_err(|source| io("read", path, source))?;
    let scan = scan(path, &content)?;
    let mut recorded = Recorded {
        repaired: scan.torn,
        duplicates: scan.duplicates,
        ..Recorded::default()
    };
    if let Some(torn) = scan.torn {
        file.set_len(scan.keep as u64)
            .map_err(|source| io("repair", path, source))?;
        file.sync_data()
            .map_err(|source| io("repair", path, source))?;
        warn!(output = %path.display(), line = torn.line, bytes = torn.bytes,
              "repaired the output file: cut a torn last line left by an interrupted run; its request runs again");
    }
    let failed = scan.records.iter().filter(|r| !r.succeeded).count();
    if retry_failed && failed > 0 {
        let kept: Vec<u8> = scan
            .records
            .iter()
            .filter(|r| r.succeeded)
            .flat_map(|r| content[r.span.0..r.span.1].iter().copied())
            .collect();
        file = rewrite(path, &kept)?;
        recorded.dropped_failures = failed;
        info!(output = %path.display(), failed, "--retry-failed: the failed requests of the earlier run will be sent again");
    }
    for record in scan.records {
        if retry_failed && !record.succeeded {
            continue;
        }
        recorded
            .finished
            .entry(record.custom_id)
            .or_insert(record.succeeded);
    }
    Ok(Journal {
        file,
        path: path.to_owned(),
        recorded,
    })
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> JournalError {
    JournalError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Opens `path` for reading and appending, creating it if needed, and takes the exclusive lock.
fn open_locked(path: &Path) -> Result<(File, bool), JournalError> {
    let existed = path.exists();
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|source| JournalError::Open {
            path: path.to_owned(),
            source,
        })?;
    lock_exclusive(&file).map_err(|source| {
        if source.kind() == std::io::ErrorKind::WouldBlock {
            JournalError::Locked {
                path: path.to_owned(),
            }
        } else {
            JournalError::Open {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    Ok((file, !existed))
}

/// Takes a non-blocking exclusive `flock` on the file, held until the file is closed.
fn lock_exclusive(file: &File) -> std::io::Result<()> {
    // SAFETY: `flock` only reads the descriptor number, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Makes a new directory entry durable (best effort: some filesystems refuse to sync a directory).
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// Replaces the file's content with `kept`, crash-safely, and returns the new file, locked.
fn rewrite(path: &Path, kept: &[u8]) -> Result<File, JournalError> {
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(format!(".rewrite-{}", std::process::id()));
    let temp = PathBuf::from(temp_name);
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(kept)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    };
    if let Err(source) = write() {
        let _ = std::fs::remove_file(&temp);
        return Err(io("rewrite", path, source));
    }
    sync_parent(path);
    let (file, _) = open_locked(path)?;
    Ok(file)
}

/// One readable record and where it is in the file.
struct ScannedRecord {
    custom_id: String,
    succeeded: bool,
    /// Byte range of the line, newline included.
    span: (usize, usize),
}

struct Scan {
    records: Vec<ScannedRecord>,
    /// Bytes to keep: the end of the last whole record.
    keep: usize,
    torn: Option<TornTail>,
    duplicates: usize,
}

/// Reads every line; decides what is a record, what is a torn tail, and what is corruption.
fn scan(path: &Path, content: &[u8]) -> Result<Scan, JournalError> {
    let mut records: Vec<ScannedRecord> = Vec::new();
    let mut seen: HashMap<String, ()> = HashMap::new();
    let mut duplicates = 0;
    // The first unreadable line after the last good record: (line number, start offset, reason).
    let mut bad: Option<(usize, usize, String)> = None;
    let mut keep = 0;
    let mut start = 0;
    let mut line = 0;
    while start < content.len() {
        line += 1;
        let (end, terminated) = match content[start..].iter().position(|&b| b == b'\n') {
            Some(offset) => (start + offset + 1, true),
            None => (content.len(), false),
        };
        let text = &content[start..end];
        let parsed = if !terminated {
            Err("cut short: no newline at the end".to_owned())
        } else if text.iter().all(u8::is_ascii_whitespace) {
            Ok(None)
        } else {
            serde_json::from_slice::<RecordedLine>(text)
                .map(Some)
                .map_err(|err| err.to_string())
        };
        match parsed {
            Ok(Some(record)) => {
                if let Some((bad_line, _, reason)) = bad.take() {
                    return Err(JournalError::Corrupt {
                        path: path.to_owned(),
                        line: bad_line,
                        reason,
                    });
                }
                let succeeded = record.succeeded();
                if seen.insert(record.custom_id.clone(), ()).is_some() {
                    duplicates += 1;
                    warn!(output = %path.display(), line, custom_id = %record.custom_id,
                          "the output file records this custom_id more than once; the first record counts");
                }
                records.push(ScannedRecord {
                    custom_id: record.custom_id,
                    succeeded,
                    span: (start, end),
                });
                keep = end;
            }
            Ok(None) => {
                if bad.is_none() {
                    keep = end;
                }
            }
            Err(reason) => {
                if bad.is_none() {
                    bad = Some((line, start, reason));
                }
            }
        }
        start = end;
    }
    let torn = match bad {
        None => None,
        Some((_, _, reason)) if records.is_empty() && !is_blank_or_nul(content) => {
            return Err(JournalError::NotBatchOutput {
                path: path.to_owned(),
                reason,
            });
        }
        Some((bad_line, offset, _)) => {
            // Only the tail after the last good record is cut. More than one whole line of
            // garbage there is not a torn write: refuse rather than cut data.
            let tail = &content[offset..];
            let whole_lines = tail.iter().filter(|&&b| b == b'\n').count();
            let tail_is_one_line =
                whole_lines == 0 || (whole_lines == 1 && tail.last() == Some(&b'\n'));
            if !tail_is_one_line && !is_blank_or_nul(tail) {
                return Err(JournalError::Corrupt {
                    path: path.to_owned(),
                    line: bad_line,
                    reason:
                        "several unreadable lines at the end, more than an interrupted write leaves"
                            .to_owned(),
                });
            }
            Some(TornTail {
                line: bad_line,
                bytes: (content.len() - offset) as u64,
            })
        }
    };
    let keep = if torn.is_some() { keep } else { content.len() };
    Ok(Scan {
        records,
        keep,
        torn,
        duplicates,
    })
}

fn is_blank_or_nul(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0 || b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(id: &str) -> String {
        format!(
            r#"{{"id":"batch_req_1","custom_id":"{id}","response":{{"status_code":200,"request_id":"r","body":{{}}}},"error":null}}"#
        ) + "\n"
    }

    fn failed(id: &str) -> String {
        format!(
            r#"{{"id":"batch_req_2","custom_id":"{id}","response":null,"error":{{"code":"quarantined","message":"m"}}}}"#
        ) + "\n"
    }

    fn scan_text(text: &str) -> Result<Scan, JournalError> {
        scan(Path::new("out.jsonl"), text.as_bytes())
    }

    #[test]
    fn whole_records_are_kept_with_their_outcome() {
        let text = ok("a") + &failed("b");
        let scan = scan_text(&text).expect("readable");
        assert!(scan.torn.is_none());
        assert_eq!(scan.keep, text.len());
        let outcomes: Vec<(&str, bool)> = scan
            .records
            .iter()
            .map(|r| (r.custom_id.as_str(), r.succeeded))
            .collect();
        assert_eq!(outcomes, vec![("a", true), ("b", false)]);
    }

    #[test]
    fn a_line_cut_short_at_the_end_is_a_torn_tail() {
        let good = ok("a") + &ok("b");
        let text = good.clone() + r#"{"id":"batch_req_3","custom_id":"c","resp"#;
        let scan = scan_text(&text).expect("repairable");
        assert_eq!(scan.keep, good.len());
        assert_eq!(
            scan.torn,
            Some(TornTail {
                line: 3,
                bytes: (text.len() - good.len()) as u64
            })
        );
        assert_eq!(scan.records.len(), 2);
    }

    #[test]
    fn nul_bytes_after_a_power_loss_are_a_torn_tail() {
        let good = ok("a");
        let text = good.clone() + "\0\0\0\0";
        assert_eq!(scan_text(&text).expect("repairable").keep, good.len());
        let garbled = good.clone() + "{\"id\":\0\0\0\0\n";
        assert_eq!(scan_text(&garbled).expect("repairable").keep, good.len());
    }

    #[test]
    fn a_bad_line_before_a_good_one_is_corruption_not_a_tear() {
        let text = ok("a") + "{oops\n" + &ok("b");
        assert!(matches!(
            scan_text(&text),
            Err(JournalError::Corrupt { line: 2, .. })
        ));
        let two_bad = ok("a") + "junk one\njunk two\n";
        assert!(matches!(
            scan_text(&two_bad),
            Err(JournalError::Corrupt { line: 2, .. })
        ));
    }

    #[test]
    fn a_file_that_is_not_batch_output_is_refused() {
        let input = r#"{"custom_id":"a","method":"POST","url":"/v1/x","body":{}}"#;
        assert!(matches!(
            scan_text(input),
            Err(JournalError::NotBatchOutput { .. })
        ));
        assert!(matches!(
            scan_text(&format!("{input}\n")),
            Err(JournalError::NotBatchOutput { .. })
        ));
        assert!(scan_text("").expect("empty").records.is_empty());
    }

    fn temp_output(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("respawn-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir.join("out.jsonl")
    }

    #[test]
    fn a_second_run_on_the_same_output_is_refused_while_the_first_holds_it() {
        let path = temp_output("lock");
        let first = open(&path, false).expect("first open");
        assert!(matches!(
            open(&path, false),
            Err(JournalError::Locked { .. })
        ));
        drop(first);
        assert!(open(&path, false).is_ok(), "the lock goes with the run");
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn opening_repairs_the_tail_and_retry_failed_drops_the_failures() {
        let path = temp_output("repair");
        let good = ok("a") + &failed("b") + &ok("c");
        std::fs::write(&path, good.clone() + "{\"id\":\"x\",\"cust").expect("write");
        let journal = open(&path, false).expect("open");
        assert_eq!(journal.recorded.repaired.map(|t| t.line), Some(4));
        assert_eq!(journal.recorded.finished.len(), 3);
        assert_eq!(journal.recorded.finished.get("b"), Some(&false));
        drop(journal);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), good);

        let journal = open(&path, true).expect("open with --retry-failed");
        assert_eq!(journal.recorded.dropped_failures, 1);
        assert!(!journal.recorded.finished.contains_key("b"));
        drop(journal);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            ok("a") + &ok("c")
        );
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn a_non_2xx_answer_is_recorded_as_failed() {
        let text = r#"{"id":"x","custom_id":"a","response":{"status_code":400,"request_id":"r","body":{}},"error":null}"#.to_owned() + "\n";
        let scan = scan_text(&text).expect("readable");
        assert!(!scan.records[0].succeeded);
    }
}
