//! The release check: a command polled after a stop until the old server's processes no
//! longer appear in its output.
//!
//! The typical check is `nvidia-smi --query-compute-apps=pid --format=csv,noheader`, which
//! lists the pids holding GPU memory. The kernel can take a moment after a process exits to
//! hand its device memory back; starting the next server before that makes it run out of
//! memory.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

use crate::stop::StopError;

/// Pause between two runs of the check.
const RECHECK_EVERY: Duration = Duration::from_millis(50);

/// The pids of `pids` that appear as whole numbers anywhere in `output`.
pub(crate) fn mentioned_pids(output: &str, pids: &BTreeSet<u32>) -> Vec<u32> {
    let mut found: BTreeSet<u32> = BTreeSet::new();
    for token in output.split(|c: char| !c.is_ascii_digit()) {
        if let Ok(pid) = token.parse::<u32>() {
            if pids.contains(&pid) {
                found.insert(pid);
            }
        }
    }
    found.into_iter().collect()
}

/// Runs `argv` until its output mentions none of `pids`, for at most `timeout`.
///
/// # Cancel safety
/// Cancel safe: a check still running is killed when the future is dropped.
pub(crate) async fn wait_released(
    argv: &[OsString],
    pids: &BTreeSet<u32>,
    timeout: Duration,
) -> Result<(), StopError> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let shown = || program.to_string_lossy().into_owned();
    let deadline = Instant::now() + timeout;
    loop {
        let run = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output();
        let (still_held, failure) = match tokio::time::timeout_at(deadline, run).await {
            Err(_) => (
                Vec::new(),
                Some("the check did not finish in time".to_owned()),
            ),
            Ok(Err(source)) => {
                // A check that cannot even start will not start later either.
                return Err(StopError::ReleaseCheckFailed {
                    program: shown(),
                    reason: source.to_string(),
                });
            }
            Ok(Ok(output)) if !output.status.success() => (
                Vec::new(),
                Some(format!(
                    "it ended with {}",
                    crate::ExitInfo::from(output.status)
                )),
            ),
            Ok(Ok(output)) => {
                let held = mentioned_pids(&String::from_utf8_lossy(&output.stdout), pids);
                if held.is_empty() {
                    return Ok(());
                }
                (held, None)
            }
        };
        if Instant::now() + RECHECK_EVERY >= deadline {
            return Err(match failure {
                Some(reason) => StopError::ReleaseCheckFailed {
                    program: shown(),
                    reason,
                },
                None => StopError::ReleaseCheckTimedOut { pids: still_held },
            });
        }
        tokio::time::sleep(RECHECK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_whole_pids_only() {
        let pids: BTreeSet<u32> = [12, 345].into_iter().collect();
        assert_eq!(mentioned_pids("345, 1200 MiB\n9912\n", &pids), vec![345]);
        assert!(mentioned_pids("123\n1234\n", &pids).is_empty());
        assert_eq!(mentioned_pids("12\n345\n", &pids), vec![12, 345]);
    }

    #[tokio::test]
    async fn passes_when_no_pid_is_listed() {
        let pids: BTreeSet<u32> = [4_000_000].into_iter().collect();
        let argv = vec![OsString::from("echo"), OsString::from("1 2 3")];
        wait_released(&argv, &pids, Duration::from_secs(5))
            .await
            .expect("released");
    }

    #[tokio::test]
    async fn times_out_naming_the_pids_still_listed() {
        let pids: BTreeSet<u32> = [4_000_000].into_iter().collect();
        let argv = vec![OsString::from("echo"), OsString::from("4000000")];
        let err = wait_released(&argv, &pids, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StopError::ReleaseCheckTimedOut { ref pids } if pids == &[4_000_000]),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_check_program_fails_at_once() {
        let pids: BTreeSet<u32> = BTreeSet::new();
        let argv = vec![OsString::from("respawn-no-such-check")];
        let err = wait_released(&argv, &pids, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StopError::ReleaseCheckFailed { .. }),
            "{err:?}"
        );
    }
}
