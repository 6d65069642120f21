//! The mock's job-wide ledger: completions started and fault points already fired, kept in a
//! file so that they survive restarts of the mock.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the ledger remembers across processes.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Ledger {
    /// Completions started over the whole job.
    pub completions: u64,
    /// `--wedge-after` points that already fired.
    #[serde(default)]
    pub fired_wedges: BTreeSet<u64>,
    /// `--crash-after` points that already fired.
    #[serde(default)]
    pub fired_crashes: BTreeSet<u64>,
    /// `--deadlock-after` points that already fired.
    #[serde(default)]
    pub fired_deadlocks: BTreeSet<u64>,
    /// `--engine-dead-after` points that already fired.
    #[serde(default)]
    pub fired_dead_engines: BTreeSet<u64>,
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file exists but cannot be read.
    #[error("cannot read state file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is not a ledger written by `respawn mock`: delete it to start the count afresh.
    #[error("state file {path} is not valid: {source}; delete it to start counting afresh")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
}

/// Loads the ledger; a missing file is a fresh job.
pub(crate) fn load(path: &Path) -> Result<Ledger, StateFileError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateFileError::Parse {
            path: path.to_owned(),
            source,
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Ledger::default()),
        Err(source) => Err(StateFileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes the ledger atomically: a temporary file beside it, then a rename, so a crash leaves
/// either the old or the new ledger, never half of one.
pub(crate) fn store(path: &Path, ledger: &Ledger) -> io::Result<()> {
    let bytes = serde_json::to_vec(ledger).map_err(io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_missing_is_fresh() {
        let dir = std::env::temp_dir().join(format!("respawn-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let _ = std::fs::remove_file(&path);
        assert_eq!(load(&path).unwrap(), Ledger::default());
        let mut ledger = Ledger {
            completions: 41,
            ..Ledger::default()
        };
        ledger.fired_wedges.insert(40);
        store(&path, &ledger).unwrap();
        assert_eq!(load(&path).unwrap(), ledger);
        std::fs::write(&path, b"nonsense").unwrap();
        assert!(matches!(load(&path), Err(StateFileError::Parse { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
