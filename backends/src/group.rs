//! The server's process group: who is in it, signalling all of it, and never leaving it behind.
//!
//! The server leads its own process group, so the group id equals the leader's pid. Model
//! servers fork workers (vLLM's engine processes) that stay in that group; killing only the
//! leader would orphan them with their GPU memory. Everything here works on the whole group.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// One process found in `/proc` with its parent and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    /// The process id.
    pub(crate) pid: u32,
    /// Its parent.
    pub(crate) ppid: u32,
    /// Whether it has exited and waits to be reaped (a zombie holds no memory).
    pub(crate) zombie: bool,
}

/// Parses the fields after the command name of `/proc/<pid>/stat`: state, ppid, pgrp.
fn parse_stat(stat: &str) -> Option<(char, u32, u32)> {
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Every process (zombies included) whose process group is `pgid`.
pub(crate) fn members(pgid: u32) -> Vec<Member> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (state, ppid, pgrp) = parse_stat(&stat)?;
            (pgrp == pgid).then_some(Member {
                pid,
                ppid,
                zombie: state == 'Z' || state == 'X',
            })
        })
        .collect()
}

/// The pids of the live (not yet exited) processes in process group `pgid`, read from `/proc`.
///
/// Public so that callers and tests can check that a stopped server left nothing behind.
pub fn group_members(pgid: u32) -> Vec<u32> {
    members(pgid)
        .into_iter()
        .filter(|member| !member.zombie)
        .map(|member| member.pid)
        .collect()
}

/// Sends `signal` to every process of group `pgid`. Returns `Ok(false)` when the group no
/// longer exists.
pub(crate) fn signal_group(pgid: u32, signal: Signal) -> nix::Result<bool> {
    match killpg(Pid::from_raw(pgid as i32), signal) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ESRCH) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Kills a process group with SIGKILL when dropped, unless disarmed.
///
/// Held by the actor for as long as it owns a child, so that no group outlives the actor,
/// whichever way the actor ends (stopped, or dropped with its runtime).
#[derive(Debug)]
pub(crate) struct GroupGuard {
    pgid: Option<u32>,
}

impl GroupGuard {
    /// Guards group `pgid`.
    pub(crate) fn new(pgid: u32) -> Self {
        Self { pgid: Some(pgid) }
    }

    /// Kills the group now (SIGKILL) and disarms the guard.
    pub(crate) fn kill_now(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            if let Err(err) = signal_group(pgid, Signal::SIGKILL) {
                tracing::warn!(pgid, error = %err, "could not kill the server's process group");
            }
        }
    }

    /// Forgets the group: it is known to be gone.
    pub(crate) fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560";
        assert_eq!(parse_stat(stat), Some(('S', 1, 1234)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn finds_our_own_group() {
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        let me = std::process::id();
        assert!(group_members(pgid).contains(&me));
        assert!(group_members(u32::MAX - 7).is_empty());
    }
}
