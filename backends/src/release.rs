//! The release check: a command polled after a stop until the old server's processes no
//! longer appear in its output.
//!
//! The typical check is `nvidia-smi --query-compute-apps=pid --format=csv,noheader`, which
//! lists the pids holding GPU memory. The kernel can take a moment after a process exits to
//! hand its device memory back; starting the next server before that makes it run out of
//! memory.
//!
//! The built-in GPU release check ([`wait_gpu_released`]) asks exactly that of `nvidia-smi`
//! when it is installed, reading the first column (the pid) of each line.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::clock::{self, Clock};

use crate::error::StopError;

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
/// A run cut short by the end of the bound, after earlier runs listed old pids, ends the wait with
/// those pids (the check works; the pids were still held), as [`wait_gpu_released`] does.
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
    // Running time: a pause of the machine is not time waited (crate::clock).
    let clock = Clock::new();
    let mut last_held: Vec<u32> = Vec::new();
    loop {
        let run = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output();
        let left = timeout.saturating_sub(clock.now());
        let (still_held, failure) = match clock::timeout(left, run).await {
            None if !last_held.is_empty() => {
                return Err(StopError::ReleaseCheckTimedOut { pids: last_held });
            }
            None => (
                Vec::new(),
                Some("the check did not finish in time".to_owned()),
            ),
            Some(Err(source)) => {
                // A check that cannot even start will not start later either.
                return Err(StopError::ReleaseCheckFailed {
                    program: shown(),
                    reason: source.to_string(),
                });
            }
            Some(Ok(output)) if !output.status.success() => (
                Vec::new(),
                Some(format!(
                    "it ended with {}",
                    crate::ExitInfo::from(output.status)
                )),
            ),
            Some(Ok(output)) => {
                let held = mentioned_pids(&String::from_utf8_lossy(&output.stdout), pids);
                if held.is_empty() {
                    return Ok(());
                }
                (held, None)
            }
        };
        if clock.now() + RECHECK_EVERY >= timeout {
            return Err(match failure {
                Some(reason) => StopError::ReleaseCheckFailed {
                    program: shown(),
                    reason,
                },
                None => StopError::ReleaseCheckTimedOut { pids: still_held },
            });
        }
        last_held = still_held;
        tokio::time::sleep(RECHECK_EVERY).await;
    }
}

/// The arguments that make `nvidia-smi` list the processes holding GPU memory, one per line:
/// `pid, used_memory`.
pub(crate) const GPU_QUERY_ARGS: [&str; 2] = [
    "--query-compute-apps=pid,used_memory",
    "--format=csv,noheader",
];

/// The longest one `nvidia-smi` run may take (it can hang on a wedged GPU).
const GPU_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The pids of `pids` listed in the first column of `nvidia-smi --query-compute-apps` output.
pub(crate) fn gpu_pids(output: &str, pids: &BTreeSet<u32>) -> Vec<u32> {
    let listed: BTreeSet<u32> = output
        .lines()
        .filter_map(|line| line.split(',').next()?.trim().parse().ok())
        .filter(|pid| pids.contains(pid))
        .collect();
    listed.into_iter().collect()
}

/// Asks `nvidia-smi` (at `program`) until none of `pids` holds GPU memory, for at most `timeout`.
///
/// An `nvidia-smi` that fails or does not answer cannot tell: respawn warns and does not wait
/// (a machine with the tool but no usable driver must still restart its server), unless an
/// earlier answer already listed old pids: then the bound ends the wait with those pids.
///
/// # Cancel safety
/// Cancel safe: a query still running is killed when the future is dropped.
pub(crate) async fn wait_gpu_released(
    program: &Path,
    pids: &BTreeSet<u32>,
    timeout: Duration,
) -> Result<(), StopError> {
    // Running time: a pause of the machine is not time waited (crate::clock).
    let clock = Clock::new();
    let mut announced = false;
    let mut last_held: Vec<u32> = Vec::new();
    loop {
        let run = tokio::process::Command::new(program)
            .args(GPU_QUERY_ARGS)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output();
        let bound = timeout.saturating_sub(clock.now()).min(GPU_QUERY_TIMEOUT);
        let output = match clock::timeout(bound, run).await {
            Some(Ok(output)) if output.status.success() => output,
            Some(Ok(output)) => {
                tracing::warn!(program = %program.display(), status = %crate::ExitInfo::from(output.status),
                    "nvidia-smi failed; not waiting for GPU memory to be released");
                return Ok(());
            }
            Some(Err(err)) => {
                tracing::warn!(program = %program.display(), error = %err,
                    "cannot run nvidia-smi; not waiting for GPU memory to be released");
                return Ok(());
            }
            None if !last_held.is_empty() && clock.now() >= timeout => {
                return Err(StopError::GpuMemoryHeld { pids: last_held });
            }
            None => {
                tracing::warn!(program = %program.display(),
                    "nvidia-smi did not answer in time; not waiting for GPU memory to be released");
                return Ok(());
            }
        };
        let held = gpu_pids(&String::from_utf8_lossy(&output.stdout), pids);
        if held.is_empty() {
            if announced {
                tracing::info!("GPU memory of the old generation released");
            }
            return Ok(());
        }
        if !announced {
            announced = true;
            tracing::info!(pids = ?held, "waiting for the old generation's GPU memory to be released");
        }
        if clock.now() + RECHECK_EVERY >= timeout {
            return Err(StopError::GpuMemoryHeld { pids: held });
        }
        last_held = held;
        tokio::time::sleep(RECHECK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A fake `nvidia-smi`: a script in a fresh directory that prints `output` for its first
    /// `busy_runs` runs and nothing after, counting its runs in `runs`.
    fn fake_nvidia_smi(label: &str, output: &str, busy_runs: u32) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "respawn-fake-nvidia-{label}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let runs = dir.join("runs");
        let _ = std::fs::remove_file(&runs);
        let script = dir.join("nvidia-smi");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n[ \"$1 $2\" = \"{} {}\" ] || exit 9\necho run >> {runs}\nn=$(wc -l < {runs})\n[ \"$n\" -le {busy_runs} ] && printf '{output}'\nexit 0\n",
                GPU_QUERY_ARGS[0],
                GPU_QUERY_ARGS[1],
                runs = runs.display(),
            ),
        )
        .expect("write the script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        (script, runs)
    }

    fn runs(path: &Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
    }

    #[test]
    fn gpu_pids_are_the_first_column_only() {
        let pids: BTreeSet<u32> = [500, 4321].into_iter().collect();
        let output = "4321, 1024 MiB\n777, 500 MiB\n";
        assert_eq!(gpu_pids(output, &pids), vec![4321]);
        assert!(gpu_pids("No running processes found\n", &pids).is_empty());
    }

    #[tokio::test]
    async fn waits_until_nvidia_smi_no_longer_lists_an_old_pid() {
        let (script, counter) = fake_nvidia_smi("release", "4000001, 2048 MiB\\n", 3);
        let pids: BTreeSet<u32> = [4_000_001].into_iter().collect();
        wait_gpu_released(&script, &pids, Duration::from_secs(20))
            .await
            .expect("released after three busy answers");
        assert_eq!(
            runs(&counter),
            4,
            "asked until the pid was gone, then stopped"
        );
    }

    #[tokio::test]
    async fn gpu_memory_held_past_the_timeout_names_the_pids() {
        let (script, _) = fake_nvidia_smi("held", "4000002, 2048 MiB\\n", u32::MAX / 2);
        let pids: BTreeSet<u32> = [4_000_002].into_iter().collect();
        let err = wait_gpu_released(&script, &pids, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StopError::GpuMemoryHeld { ref pids } if pids == &[4_000_002]),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_failing_nvidia_smi_does_not_block_the_restart() {
        let pids: BTreeSet<u32> = [4_000_003].into_iter().collect();
        wait_gpu_released(Path::new("false"), &pids, Duration::from_secs(30))
            .await
            .expect("cannot tell, so does not wait");
    }

    #[test]
    fn finds_whole_pids_only() {
        let pids: BTreeSet<u32> = [12, 345].into_iter().collect();
        assert_eq!(mentioned_pids("345, 1200 MiB\n9912\n", &pids), vec![345]);
        assert!(mentioned_pids("123\n1234\n", &pids).is_empty());
        assert_eq!(mentioned_pids("12\n345\n", &pids), vec![12, 345]);
    }

    /// The release check `argv` run for the old pid 4000000, bounded by `timeout`.
    async fn check_old_pid(argv: &[&str], timeout: Duration) -> Result<(), StopError> {
        let pids: BTreeSet<u32> = [4_000_000].into_iter().collect();
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        wait_released(&argv, &pids, timeout).await
    }

    #[tokio::test]
    async fn passes_when_no_pid_is_listed() {
        check_old_pid(&["echo", "1 2 3"], Duration::from_secs(5))
            .await
            .expect("released");
    }

    #[tokio::test]
    async fn times_out_naming_the_pids_still_listed() {
        let err = check_old_pid(&["echo", "4000000"], Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StopError::ReleaseCheckTimedOut { ref pids } if pids == &[4_000_000]),
            "{err:?}"
        );
    }

    /// A check that listed the pid and then hangs until the bound: the pid was still held, and the
    /// error says so, not that the check is broken.
    #[tokio::test]
    async fn a_run_cut_by_the_bound_after_a_listing_names_the_pids() {
        let seen = std::env::temp_dir().join(format!("respawn-check-seen-{}", std::process::id()));
        let _ = std::fs::remove_file(&seen);
        let script = format!(
            "if [ -e '{seen}' ]; then sleep 5; else touch '{seen}'; echo 4000000; fi",
            seen = seen.display()
        );
        let err = check_old_pid(&["sh", "-c", &script], Duration::from_millis(400))
            .await
            .unwrap_err();
        let _ = std::fs::remove_file(&seen);
        assert!(
            matches!(err, StopError::ReleaseCheckTimedOut { ref pids } if pids == &[4_000_000]),
            "{err:?}"
        );
    }

    /// A check that never finishes a run cannot tell: that is its failure.
    #[tokio::test]
    async fn a_check_that_never_finishes_fails() {
        let err = check_old_pid(&["sleep", "5"], Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StopError::ReleaseCheckFailed { ref reason, .. } if reason.contains("did not finish in time")),
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
