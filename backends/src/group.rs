//! The server's process group: who is in it, and signalling all of it at once.
//!
//! The server (or its guardian) leads its own process group, so the group id equals the leader's
//! pid. Model servers fork workers (vLLM's engine processes) that stay in that group; killing
//! only the leader would orphan them with their GPU memory. Processes that leave the group
//! (`setsid`) are found by the [generation's scope](crate::scope) instead.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::proc_table::{snapshot, ProcEntry};

/// Every process (zombies included) whose process group is `pgid`.
pub(crate) fn members(pgid: u32) -> Vec<ProcEntry> {
    snapshot()
        .into_iter()
        .filter(|process| process.pgrp == pgid)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_group() {
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        let me = std::process::id();
        assert!(group_members(pgid).contains(&me));
        assert!(group_members(u32::MAX - 7).is_empty());
    }
}
