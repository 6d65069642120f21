//! How a child process ended.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// How a process ended: its exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitInfo {
    /// The process called `exit(code)`.
    Code(i32),
    /// The process was killed by this signal number.
    Signal(i32),
    /// The status could not be read (waiting on the process failed).
    Unknown,
}

impl ExitInfo {
    /// Whether the process exited with code 0.
    pub fn success(self) -> bool {
        self == ExitInfo::Code(0)
    }

    /// The status as a shell reports it: the code, or 128 + the signal number.
    pub fn as_shell_status(self) -> i32 {
        match self {
            ExitInfo::Code(code) => code,
            ExitInfo::Signal(signal) => 128 + signal,
            ExitInfo::Unknown => 255,
        }
    }
}

impl From<ExitStatus> for ExitInfo {
    fn from(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitInfo::Code(code),
            (None, Some(signal)) => ExitInfo::Signal(signal),
            (None, None) => ExitInfo::Unknown,
        }
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitInfo::Code(code) => write!(f, "exit code {code}"),
            ExitInfo::Signal(signal) => match nix::sys::signal::Signal::try_from(signal) {
                Ok(named) => write!(f, "killed by signal {signal} ({})", named.as_str()),
                Err(_) => write!(f, "killed by signal {signal}"),
            },
            ExitInfo::Unknown => f.write_str("unknown exit status"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_code_and_named_signal() {
        assert_eq!(ExitInfo::Code(3).to_string(), "exit code 3");
        assert_eq!(
            ExitInfo::Signal(9).to_string(),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(ExitInfo::Signal(200).to_string(), "killed by signal 200");
    }

    #[test]
    fn shell_status_adds_128_to_signals() {
        assert_eq!(ExitInfo::Code(7).as_shell_status(), 7);
        assert_eq!(ExitInfo::Signal(15).as_shell_status(), 143);
        assert!(ExitInfo::Code(0).success());
        assert!(!ExitInfo::Signal(9).success());
    }

    #[test]
    fn converts_from_raw_wait_status() {
        assert_eq!(
            ExitInfo::from(ExitStatus::from_raw(3 << 8)),
            ExitInfo::Code(3)
        );
        assert_eq!(ExitInfo::from(ExitStatus::from_raw(9)), ExitInfo::Signal(9));
    }
}
