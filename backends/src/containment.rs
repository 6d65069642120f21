//! Containment: which processes make up one generation of the server, and how all of them end.
//!
//! A model server's processes do not all stay where it started them. vLLM's engine and workers
//! stay in its process group; a helper started with `setsid`, a daemon that double-forks, a Ray
//! or vLLM worker that calls `setsid()` leave it, and with it every signal sent to the group.
//! Left alive, they keep GPU memory and even the server's listening socket, and every later
//! generation fails with "Address already in use".
//!
//! Three modes, strongest first ([`ContainmentMode`]):
//!
//! - **cgroup**: each generation runs in its own cgroup v2 (see `cgroup.rs`). Nothing the server
//!   starts can leave it; `cgroup.kill` ends everything at once; "empty" is the kernel's word.
//! - **guardian**: the [guardian](crate::guardian_main) is a child subreaper, so every process
//!   the server starts stays its descendant whatever session or group it moved to; the guardian
//!   kills all its descendants when the server exits and when respawn dies, and respawn follows
//!   the same parent links while it stops a generation.
//! - **process group**: no guardian and no cgroup (an embedder's choice); processes that leave
//!   the group escape.
//!
//! In every mode the processes of a generation are found the same way (a [`Scope`]): the process
//! group, the descendants of its first process, its cgroup, and every process seen so far that
//! still runs. The mode only decides which of those sources exist.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use parking_lot::Mutex;
use respawn_core::Generation;
use tokio::time::Instant;

use crate::cgroup::{Cgroup, CgroupParent};
use crate::clock::Clock;
use crate::error::{ContainmentError, SpawnError};
use crate::group::signal_group;
use crate::proc_table::{descendants, snapshot, ProcEntry};

/// How the processes of each generation are held together and ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainmentMode {
    /// Each generation in its own cgroup v2: the kernel tracks every process it starts.
    Cgroup,
    /// The guardian, a child subreaper, tracks and kills every descendant of the server.
    Guardian,
    /// Only the process group: processes that leave it (`setsid`) are not found.
    ProcessGroup,
}

impl ContainmentMode {
    /// The name shown in logs and in `/respawn/status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ContainmentMode::Cgroup => "cgroup",
            ContainmentMode::Guardian => "guardian",
            ContainmentMode::ProcessGroup => "process_group",
        }
    }
}

impl std::fmt::Display for ContainmentMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which containment to use: the strongest available (`Auto`), or one mode, forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContainmentRequest {
    /// A cgroup where respawn may create one, else the guardian (else the process group).
    #[default]
    Auto,
    /// A cgroup, or fail to start.
    Cgroup,
    /// The guardian, even where a cgroup could be created.
    Guardian,
}

impl FromStr for ContainmentRequest {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(ContainmentRequest::Auto),
            "cgroup" => Ok(ContainmentRequest::Cgroup),
            "guardian" => Ok(ContainmentRequest::Guardian),
            _ => Err("expected `auto`, `cgroup` or `guardian`".to_owned()),
        }
    }
}

/// Numbers the servers of this process, so that two servers never share a cgroup name.
static NEXT_SERVER: AtomicU32 = AtomicU32::new(1);

/// The containment a [`ServerActor`](crate::ServerActor) uses for all its generations.
#[derive(Debug)]
pub(crate) struct Containment {
    mode: ContainmentMode,
    parent: Option<CgroupParent>,
    server_number: u32,
}

impl Containment {
    /// Resolves `request` on this machine; `has_guardian` tells whether a guardian will lead the
    /// server's group. Logs the choice, and removes the cgroups of a respawn that died.
    pub(crate) fn choose(
        request: ContainmentRequest,
        has_guardian: bool,
        server: &str,
    ) -> Result<Self, ContainmentError> {
        let fallback = if has_guardian {
            ContainmentMode::Guardian
        } else {
            ContainmentMode::ProcessGroup
        };
        let server_number = NEXT_SERVER.fetch_add(1, Ordering::Relaxed);
        let (mode, parent) = match request {
            ContainmentRequest::Guardian if !has_guardian => {
                return Err(ContainmentError::NoGuardian)
            }
            ContainmentRequest::Guardian => {
                tracing::info!(
                    server,
                    containment = "guardian",
                    "containment: the guardian tracks every descendant (asked for)"
                );
                (ContainmentMode::Guardian, None)
            }
            ContainmentRequest::Cgroup => {
                let parent = CgroupParent::discover()?;
                (ContainmentMode::Cgroup, Some(parent))
            }
            ContainmentRequest::Auto => match CgroupParent::discover() {
                Ok(parent) => (ContainmentMode::Cgroup, Some(parent)),
                Err(why) => {
                    tracing::info!(server, containment = fallback.as_str(), reason = %why,
                        "containment: no cgroup can be created here; the {} tracks the server's processes",
                        if has_guardian { "guardian" } else { "process group" });
                    (fallback, None)
                }
            },
        };
        if let Some(parent) = &parent {
            tracing::info!(server, containment = "cgroup", parent = %parent.dir().display(),
                "containment: one cgroup per generation");
            for removed in parent.sweep_stale() {
                tracing::info!(server, cgroup = %removed.display(), "removed a cgroup left by a respawn that died");
            }
        }
        Ok(Self {
            mode,
            parent,
            server_number,
        })
    }

    /// The mode in use.
    pub(crate) fn mode(&self) -> ContainmentMode {
        self.mode
    }

    /// Empties and removes any cgroup of an earlier generation of this server that is still
    /// there (its removal failed after its stop): nothing of an older generation may meet the
    /// new one. Normally there is none.
    pub(crate) fn sweep_earlier_generations(&self, generation: Generation) {
        let Some(parent) = &self.parent else {
            return;
        };
        let prefix = format!(
            "{}{}-gen",
            crate::cgroup::own_name_prefix(),
            self.server_number
        );
        for (cgroup, rest) in parent.children_named(&prefix) {
            if rest
                .parse::<u64>()
                .map_or(true, |earlier| earlier >= generation.0)
            {
                continue;
            }
            tracing::warn!(cgroup = %cgroup.dir().display(), pids = ?cgroup.procs(),
                "the cgroup of an earlier generation is still there; emptying and removing it");
            if !cgroup.empty_and_remove(Duration::from_secs(5)) {
                tracing::warn!(cgroup = %cgroup.dir().display(), "could not remove it");
            }
        }
    }

    /// Creates the cgroup of `generation` (cgroup mode only).
    pub(crate) fn cgroup_for(&self, generation: Generation) -> Result<Option<Cgroup>, SpawnError> {
        let Some(parent) = &self.parent else {
            return Ok(None);
        };
        let name = format!(
            "{}{}-gen{}",
            crate::cgroup::own_name_prefix(),
            self.server_number,
            generation.0
        );
        parent
            .create(&name)
            .map(Some)
            .map_err(|source| SpawnError::Cgroup {
                dir: parent.dir().join(&name),
                source,
            })
    }
}

/// The processes of one generation: found by every means available, remembered once seen.
#[derive(Debug)]
pub(crate) struct Scope {
    leader: u32,
    cgroup: Option<Cgroup>,
    /// Every process seen in the generation, with its start time (to tell a reused pid).
    seen: BTreeMap<u32, u64>,
}

impl Scope {
    /// The scope of a generation whose first process (the group leader) is `leader`.
    pub(crate) fn new(leader: u32, cgroup: Option<Cgroup>) -> Self {
        let mut scope = Self {
            leader,
            cgroup,
            seen: BTreeMap::new(),
        };
        scope.live();
        scope
    }

    /// The generation's first process (its process group id).
    pub(crate) fn leader(&self) -> u32 {
        self.leader
    }

    /// The generation's cgroup, in cgroup mode.
    pub(crate) fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// Remembers `pid` as a process of the generation (the server's pid that the guardian
    /// reported), so that it is waited for and looked for in the GPU check even if it is gone
    /// before the next look.
    pub(crate) fn remember(&mut self, pid: u32) {
        if let Some(process) = crate::proc_table::entry(pid) {
            self.seen.insert(pid, process.start_time);
        } else {
            self.seen.entry(pid).or_insert(0);
        }
    }

    /// Every pid seen in the generation so far.
    pub(crate) fn seen_pids(&self) -> BTreeSet<u32> {
        self.seen.keys().copied().collect()
    }

    /// Looks again: the live processes of the generation (zombies excluded), remembering each.
    ///
    /// A process listed in the generation's cgroup counts as live even when `/proc` shows its
    /// main thread as a zombie: the other threads of a multi-threaded server are still exiting,
    /// and the cgroup cannot be removed until they are gone. Zombies that are our own children
    /// (other than the leader, which the exit watcher reaps) are reaped on the way, so that none
    /// lingers.
    pub(crate) fn live(&mut self) -> Vec<ProcEntry> {
        let table = snapshot();
        let by_pid: BTreeMap<u32, &ProcEntry> = table.iter().map(|p| (p.pid, p)).collect();
        let mut found: BTreeMap<u32, ProcEntry> = BTreeMap::new();
        let leader = by_pid.get(&self.leader).copied().filter(|leader| {
            self.seen
                .get(&self.leader)
                .map_or(true, |start| *start == leader.start_time)
        });
        if let Some(leader) = leader {
            found.insert(self.leader, *leader);
            for process in descendants(&table, self.leader) {
                found.insert(process.pid, process);
            }
        }
        for process in table.iter().filter(|p| p.pgrp == self.leader) {
            found.insert(process.pid, *process);
        }
        let mut in_cgroup = BTreeSet::new();
        if let Some(cgroup) = &self.cgroup {
            for pid in cgroup.procs() {
                // A process started after the snapshot is read on its own.
                let process = by_pid
                    .get(&pid)
                    .map(|p| **p)
                    .or_else(|| crate::proc_table::entry(pid));
                if let Some(process) = process {
                    in_cgroup.insert(pid);
                    found.insert(pid, process);
                }
            }
        }
        for (pid, start) in &self.seen {
            if let Some(process) = by_pid.get(pid).filter(|p| p.start_time == *start) {
                found.insert(*pid, **process);
            }
        }
        let me = std::process::id();
        let mut live = Vec::new();
        for process in found.into_values() {
            if process.pid == me {
                continue;
            }
            self.seen.insert(process.pid, process.start_time);
            if !process.zombie || in_cgroup.contains(&process.pid) {
                live.push(process);
            } else if process.ppid == me && process.pid != self.leader {
                let _ = waitpid(
                    Pid::from_raw(process.pid as i32),
                    Some(WaitPidFlag::WNOHANG),
                );
            }
        }
        live
    }

    /// Sends `signal` to the whole group and to every live process of the generation outside it.
    ///
    /// # Errors
    /// The error of `killpg` when the group cannot be signalled (permission denied).
    pub(crate) fn signal(&mut self, signal: Signal) -> nix::Result<()> {
        signal_group(self.leader, signal)?;
        for process in self.live() {
            if process.pgrp != self.leader {
                let _ = kill(Pid::from_raw(process.pid as i32), signal);
            }
        }
        Ok(())
    }

    /// SIGKILLs every process of the generation: the cgroup, the group, and each one found.
    pub(crate) fn kill(&mut self) {
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill();
        }
        if let Err(err) = signal_group(self.leader, Signal::SIGKILL) {
            tracing::warn!(pgid = self.leader, error = %err, "could not kill the server's process group");
        }
        for process in self.live() {
            let _ = kill(Pid::from_raw(process.pid as i32), Signal::SIGKILL);
        }
    }

    /// Removes the generation's cgroup, which must be empty; nothing to do without one.
    pub(crate) fn remove_cgroup(&self) -> io::Result<()> {
        match &self.cgroup {
            Some(cgroup) => cgroup.remove(),
            None => Ok(()),
        }
    }
}

/// A [`Scope`] shared between the actor that owns a generation and the future stopping it.
#[derive(Debug, Clone)]
pub(crate) struct SharedScope(Arc<Mutex<Scope>>);

/// The longest pause between two looks at processes that are going away: the wait ends earlier,
/// the moment the kernel reports their exit (see [`until_exited`]).
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Pause between two looks when nothing can be watched for its exit (processes that have exited
/// but whose threads the cgroup still lists, or a cgroup the kernel has not released yet).
const RELOOK_EVERY: Duration = Duration::from_millis(1);

/// A pidfd for `pid` (Linux 5.3+): readable once the process has exited. `None` when the process
/// is already gone or the kernel has no pidfds.
fn pidfd(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: `pidfd_open` takes a pid and flags and returns a new file descriptor or -1; it reads
    // and writes no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `fd` was just returned by the kernel as a new descriptor that nothing else owns.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Waits until every process of `live` that still runs has exited, for at most `bound`: each
/// is watched through a pidfd, so the wait ends when the kernel reports the last exit, not at
/// the next tick of a poll. Zombies (already exited) are not waited for; when nothing can be
/// watched the wait is a short pause.
///
/// # Cancel safety
/// Cancel safe: dropping it closes the pidfds.
async fn until_exited(live: &[ProcEntry], bound: Duration) {
    let deadline = Instant::now() + bound;
    let mut watched = Vec::new();
    for process in live.iter().filter(|p| !p.zombie) {
        let registered = pidfd(process.pid).map(|fd| {
            // SAFETY: the `OwnedFd` is moved into the `AsyncFd` and owned by it alone, so the
            // descriptor stays open and names the same pidfd until the `AsyncFd` is dropped.
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            }
        });
        match registered {
            Some(Ok(fd)) => watched.push(fd),
            // Gone already, or cannot be watched: look again soon.
            _ => return tokio::time::sleep(RELOOK_EVERY.min(bound)).await,
        }
    }
    if watched.is_empty() {
        return tokio::time::sleep(RELOOK_EVERY.min(bound)).await;
    }
    for fd in &watched {
        if tokio::time::timeout_at(deadline, fd.readable())
            .await
            .is_err()
        {
            return;
        }
    }
}

impl SharedScope {
    /// Shares `scope`.
    pub(crate) fn new(scope: Scope) -> Self {
        Self(Arc::new(Mutex::new(scope)))
    }

    /// Runs `f` with the scope locked (never across an await).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Scope) -> T) -> T {
        f(&mut self.0.lock())
    }

    /// Waits until no process of the generation is left, then removes its cgroup. Once the
    /// clock of `kill_at` reads its time, every look SIGKILLs the survivors. Between looks it
    /// waits on pidfds of the live processes, so it looks again as soon as they have exited (at
    /// most every 10 ms). Returns whether anything was killed, or the pids still alive after
    /// `bound`. Both times are running time ([`Clock`]): a pause of the machine neither ends the
    /// stragglers' grace nor the bound.
    ///
    /// The kernel refuses to remove a cgroup (EBUSY) until its exited processes are fully
    /// released, a moment after they stop running: the removal is retried within the same bound,
    /// and a cgroup still busy after it is left for a later respawn to sweep, with a warning.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping it only stops waiting.
    pub(crate) async fn wait_gone(
        &self,
        kill_at: (Clock, Duration),
        bound: Duration,
    ) -> Result<bool, Vec<u32>> {
        let started = Clock::new();
        let (clock, kill_at) = kill_at;
        let mut killed = false;
        loop {
            let live = self.with(Scope::live);
            if live.is_empty() {
                match self.with(|scope| scope.remove_cgroup()) {
                    Ok(()) => break,
                    Err(err) if started.now() >= bound => {
                        tracing::warn!(error = %err, "could not remove the generation's empty cgroup");
                        break;
                    }
                    Err(_) => tokio::time::sleep(RELOOK_EVERY).await,
                }
            } else {
                let now = clock.now();
                if now >= kill_at {
                    killed = true;
                    self.with(Scope::kill);
                }
                if started.now() >= bound {
                    return Err(live.iter().map(|p| p.pid).collect());
                }
                // Until the next kill (while stragglers still have grace) or the next look.
                let next_kill = kill_at.saturating_sub(now);
                let wait = if next_kill.is_zero() {
                    POLL_EVERY
                } else {
                    next_kill.min(POLL_EVERY)
                };
                until_exited(&live, wait).await;
            }
        }
        Ok(killed)
    }
}

/// Kills a generation when dropped, unless disarmed: no generation outlives the actor that owns
/// it, whichever way the actor ends (stopped, or dropped with its runtime).
#[derive(Debug)]
pub(crate) struct ScopeGuard {
    scope: SharedScope,
    armed: bool,
}

impl ScopeGuard {
    /// Guards `scope`.
    pub(crate) fn new(scope: SharedScope) -> Self {
        Self { scope, armed: true }
    }

    /// The guarded scope.
    pub(crate) fn scope(&self) -> &SharedScope {
        &self.scope
    }

    /// SIGKILLs every process of the generation now (the guard stays armed).
    pub(crate) fn kill_now(&self) {
        self.scope.with(Scope::kill);
    }

    /// Forgets the generation: it is known to be gone.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.scope.with(|scope| {
            scope.kill();
            if let Some(cgroup) = scope.cgroup() {
                // Killed processes leave the cgroup within milliseconds; a cgroup that stays
                // populated is left for the next respawn to sweep.
                cgroup.empty_and_remove(Duration::from_secs(1));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_wait_for_an_exit_ends_with_the_exit_not_with_its_bound() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep");
        let entry = crate::proc_table::entry(child.id()).expect("listed in /proc");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let waiting =
            tokio::spawn(async move { until_exited(&[entry], Duration::from_secs(600)).await });
        tokio::task::yield_now().await;
        kill(pid, Signal::SIGKILL).expect("kill");
        // Only a bound against hanging forever: the wait itself would last 600 s without the
        // pidfd's wake-up.
        tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .expect("woken by the exit")
            .expect("joined");
        let _ = child.wait();
    }

    #[test]
    fn requests_parse_from_their_names() {
        assert_eq!("auto".parse(), Ok(ContainmentRequest::Auto));
        assert_eq!(" Cgroup ".parse(), Ok(ContainmentRequest::Cgroup));
        assert_eq!("guardian".parse(), Ok(ContainmentRequest::Guardian));
        assert!("systemd".parse::<ContainmentRequest>().is_err());
    }

    #[test]
    fn cgroups_of_earlier_generations_are_swept_before_a_start() {
        let Ok(containment) = Containment::choose(ContainmentRequest::Cgroup, false, "sweep")
        else {
            eprintln!("skipped: no cgroup can be created here");
            return;
        };
        let made: Vec<Cgroup> = [1, 2, 3]
            .into_iter()
            .map(|n| {
                containment
                    .cgroup_for(Generation(n))
                    .expect("created")
                    .expect("cgroup mode")
            })
            .collect();
        containment.sweep_earlier_generations(Generation(3));
        assert!(!made[0].dir().exists() && !made[1].dir().exists());
        assert!(
            made[2].dir().exists(),
            "the current generation's cgroup is kept"
        );
        made[2].remove().expect("removed");
    }

    #[test]
    fn guardian_containment_without_a_guardian_is_refused() {
        let err = Containment::choose(ContainmentRequest::Guardian, false, "t").unwrap_err();
        assert_eq!(err, ContainmentError::NoGuardian);
        let chosen = Containment::choose(ContainmentRequest::Guardian, true, "t").expect("ok");
        assert_eq!(chosen.mode(), ContainmentMode::Guardian);
        assert!(chosen
            .cgroup_for(Generation(1))
            .expect("no cgroup")
            .is_none());
    }
}
