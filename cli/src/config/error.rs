//! What can be wrong with a configuration, said so that the reader knows what to fix.

use std::path::PathBuf;

/// The exit code of `respawn` for a usage or configuration error (the same code clap uses).
pub const USAGE_EXIT_CODE: i32 = 2;

/// A configuration that cannot be used, with where the mistake is and what to do about it.
///
/// Every variant is a usage error: [`ConfigError::exit_code`] is 2 for all of them, so a service
/// manager can tell "fix the unit file" from "the server failed".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        /// The file named by `--config` or `RESPAWN_CONFIG`.
        path: PathBuf,
        /// Why the read failed.
        #[source]
        source: std::io::Error,
    },

    /// The config file is not valid TOML, or a value in it has the wrong form.
    #[error("invalid TOML in {} at line {line}, column {column}: {message}", path.display())]
    Toml {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the mistake.
        line: usize,
        /// 1-based column (in characters) of the mistake.
        column: usize,
        /// What is wrong there.
        message: String,
    },

    /// The config file names a key respawn does not know (often a typo).
    #[error(
        "unknown configuration key `{key}` in {}{}{}",
        path.display(),
        line.map(|l| format!(" (line {l})")).unwrap_or_default(),
        expected.map(|e| format!("; did you mean `{e}`?")).unwrap_or_else(|| "; see docs/CONFIG.md for the keys".to_owned())
    )]
    UnknownKey {
        /// The config file.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// 1-based line of the key, when known.
        line: Option<usize>,
        /// The closest known key, when one is close enough to be a likely typo.
        expected: Option<&'static str>,
    },

    /// A duration that cannot be read.
    #[error("invalid duration for {option}: `{value}` ({reason})")]
    BadDuration {
        /// Where the value came from: `--health-interval`, `RESPAWN_HEALTH_INTERVAL`, ...
        option: String,
        /// The value as given.
        value: String,
        /// Why it cannot be read, with examples.
        reason: String,
    },

    /// A value that cannot be read or is out of its allowed range.
    #[error("invalid value for {option}: `{value}` ({expected})")]
    BadValue {
        /// Where the value came from: the flag, the environment variable or the file key.
        option: String,
        /// The value as given (secrets are never shown).
        value: String,
        /// What would be accepted.
        expected: String,
    },

    /// Neither a command nor an upstream to supervise.
    #[error(
        "no command to supervise: respawn serve [OPTIONS] -- COMMAND [ARGS...] (or --upstream URL)"
    )]
    NoCommand,

    /// Both a command and an upstream: respawn either owns the server or watches one it does not own.
    #[error(
        "both a command and --upstream were given: either let respawn own the server (`-- COMMAND [ARGS...]`) \
         or supervise one it does not own (`--upstream URL`), not both"
    )]
    CommandAndUpstream,

    /// Two settings that cannot be used together, or one that needs another.
    #[error("{option}: {reason}")]
    Conflict {
        /// The setting at fault.
        option: String,
        /// What is wrong and what to do.
        reason: String,
    },

    /// The settings were read but the decision core refuses them (e.g. a zero threshold).
    #[error("invalid configuration: {0}")]
    Core(#[from] respawn_core::InvalidConfig),
}

impl ConfigError {
    /// The process exit code for this error: always 2 (usage or configuration error).
    pub fn exit_code(&self) -> i32 {
        USAGE_EXIT_CODE
    }
}
