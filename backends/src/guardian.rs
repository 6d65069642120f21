//! The guardian: a tiny process that leads the server's process group so that nothing the
//! server started can outlive respawn, not even after `kill -9 respawn`.
//!
//! `PR_SET_PDEATHSIG` reaches only a direct child, and model servers fork workers (vLLM's
//! engine processes) that would be orphaned and keep their GPU memory. With a guardian the
//! tree is `respawn → guardian → server → workers…`, all but respawn in one process group led
//! by the guardian:
//!
//! - it is a child subreaper, so every process the server starts stays its descendant, whatever
//!   session or process group it moves to (`setsid`, a daemonizing double fork): orphans
//!   reparent to it and it reaps them;
//! - the guardian asks for [`PARENT_DEATH_SIGNAL`] when respawn dies (a signal it can catch),
//!   and then SIGKILLs every descendant and every process of its group; in cgroup containment it
//!   also empties and removes the generation's cgroup (named in [`GUARDIAN_CGROUP_ENV`]);
//! - it forwards SIGTERM, SIGINT and SIGHUP to the server;
//! - when the server exits it SIGKILLs every descendant left (workers that ignored SIGTERM,
//!   helpers in their own session) and exits with the server's status: its code, or 128 + the
//!   signal number;
//! - it tells respawn the server's pid through the pipe named in [`GUARDIAN_REPORT_FD_ENV`], so
//!   that the status shows the server's pid, not the guardian's.
//!
//! The `respawn` binary runs it as `respawn __guardian -- PROGRAM ARGS...`; a
//! [`ServerSpec`](crate::ServerSpec) uses it when [`guardian`](crate::ServerSpec::guardian) is
//! set, and then [`Started::pid`](crate::Started::pid) is the guardian's pid (the group id) and
//! [`Started::server_pid`](crate::Started::server_pid) the server's.
//! It uses blocking calls only, and handles signals synchronously with `sigwait`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::prctl;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpgrp, getpid, getppid, setpgid, Pid};

use crate::cgroup::Cgroup;
use crate::exit::ExitInfo;
use crate::proc_table::{descendants, snapshot};

/// Environment variable through which the spawning process tells the guardian its pid, so
/// that the guardian can tell whether its parent already died before it asked to be told.
pub const GUARDIAN_PARENT_ENV: &str = "RESPAWN_GUARDIAN_PARENT_PID";

/// Environment variable naming the file descriptor (a pipe) on which the guardian writes the
/// server's pid, in decimal and a newline, once it has started it.
pub const GUARDIAN_REPORT_FD_ENV: &str = "RESPAWN_GUARDIAN_REPORT_FD";

/// Environment variable naming the generation's cgroup directory in cgroup containment: when
/// respawn dies, the guardian empties and removes it.
pub const GUARDIAN_CGROUP_ENV: &str = "RESPAWN_GUARDIAN_CGROUP";

/// The signal the guardian receives when its parent dies.
pub const PARENT_DEATH_SIGNAL: Signal = Signal::SIGUSR1;

/// Exit code of the guardian when it was called without a program, could not set itself up,
/// or found its parent already gone.
pub const GUARDIAN_SETUP_FAILED: i32 = 125;
/// Exit code when the server program exists but cannot be executed (as in a shell).
pub const GUARDIAN_NOT_EXECUTABLE: i32 = 126;
/// Exit code when the server program was not found (as in a shell).
pub const GUARDIAN_NOT_FOUND: i32 = 127;

/// How long the guardian waits for the killed remainder of its descendants to be reaped before
/// it exits anyway.
const REAP_REMAINDER_FOR: Duration = Duration::from_secs(5);

/// Runs the guardian; returns the exit code the process should exit with.
///
/// `args` is the command line after `__guardian`: an optional `--` and then the server's
/// argv (`PROGRAM ARGS...`, executed directly, never through a shell). It leads its own
/// process group (it calls `setpgid(0, 0)` when not started as a group leader). Call it from the
/// process's main thread before any other thread is started: it blocks the signals it handles
/// for the calling thread, and threads started earlier would still receive them.
///
/// Exit codes: the server's code, or 128 + the signal that killed it;
/// [`GUARDIAN_SETUP_FAILED`], [`GUARDIAN_NOT_EXECUTABLE`] or [`GUARDIAN_NOT_FOUND`] when the
/// server could not be started.
pub fn guardian_main(args: Vec<OsString>) -> i32 {
    let mut argv = args.into_iter().peekable();
    if argv.peek().is_some_and(|first| first == "--") {
        argv.next();
    }
    let Some(program) = argv.next() else {
        tracing::error!("guardian: no program given (usage: __guardian -- PROGRAM ARGS...)");
        return GUARDIAN_SETUP_FAILED;
    };
    let rest: Vec<OsString> = argv.collect();

    // Everything below kills "the rest of our group": make sure that group is ours alone,
    // even when the caller forgot to start us as a group leader.
    if getpgrp() != getpid() {
        if let Err(err) = setpgid(Pid::from_raw(0), Pid::from_raw(0)) {
            tracing::error!(error = %err, "guardian: cannot lead a process group of its own");
            return GUARDIAN_SETUP_FAILED;
        }
    }
    let mut handled = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
        PARENT_DEATH_SIGNAL,
    ] {
        handled.add(signal);
    }
    if let Err(err) = handled.thread_block() {
        tracing::error!(error = %err, "guardian: cannot block signals");
        return GUARDIAN_SETUP_FAILED;
    }
    if let Err(err) = prctl::set_pdeathsig(PARENT_DEATH_SIGNAL) {
        tracing::error!(error = %err, "guardian: cannot ask for a parent-death signal");
        return GUARDIAN_SETUP_FAILED;
    }
    // The parent may have died before the request above: then no signal will come.
    if parent_is_gone() {
        tracing::error!("guardian: parent already gone; not starting the server");
        return GUARDIAN_SETUP_FAILED;
    }
    if let Err(err) = prctl::set_child_subreaper(true) {
        tracing::warn!(error = %err, "guardian: cannot become a child subreaper; orphans go to init");
    }
    let report = take_report_pipe();
    let cgroup = std::env::var_os(GUARDIAN_CGROUP_ENV).map(|dir| Cgroup::at(PathBuf::from(dir)));

    let server = match spawn_server(&program, &rest) {
        Ok(pid) => {
            if let Some(mut report) = report {
                // respawn may be gone already; nothing to do about a failed write.
                let _ = writeln!(report, "{pid}");
            }
            pid
        }
        Err(err) => {
            tracing::error!(program = ?program, error = %err, "guardian: cannot start the server");
            return match err.kind() {
                io::ErrorKind::NotFound => GUARDIAN_NOT_FOUND,
                io::ErrorKind::PermissionDenied => GUARDIAN_NOT_EXECUTABLE,
                _ => GUARDIAN_SETUP_FAILED,
            };
        }
    };

    loop {
        let signal = match handled.wait() {
            Ok(signal) => signal,
            Err(err) => {
                tracing::error!(error = %err, "guardian: sigwait failed; killing every descendant");
                kill_every_descendant();
                return GUARDIAN_SETUP_FAILED;
            }
        };
        match signal {
            Signal::SIGCHLD => {
                if let Some(status) = reap_children(server) {
                    kill_every_descendant();
                    return status.as_shell_status();
                }
            }
            signal if signal == PARENT_DEATH_SIGNAL => {
                kill_every_descendant();
                if let Some(cgroup) = &cgroup {
                    empty_and_remove(cgroup);
                }
                return 128 + Signal::SIGKILL as i32;
            }
            forwarded => {
                let _ = kill(server, forwarded);
            }
        }
    }
}

/// Whether the process that started us is already gone.
fn parent_is_gone() -> bool {
    let ppid = getppid().as_raw();
    match std::env::var(GUARDIAN_PARENT_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        Some(expected) => ppid != expected,
        None => ppid == 1,
    }
}

/// The pipe respawn gave us to report the server's pid, marked close-on-exec so that the
/// server does not inherit it.
fn take_report_pipe() -> Option<std::fs::File> {
    let fd: i32 = std::env::var(GUARDIAN_REPORT_FD_ENV).ok()?.parse().ok()?;
    // Never take over the standard streams, whatever the variable says.
    if fd < 3 {
        return None;
    }
    // SAFETY: `fcntl` on an arbitrary number is safe: an fd that is not open fails with EBADF,
    // and then we do not take it.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return None;
    }
    // SAFETY: the fd is open (fcntl succeeded), was handed to us for this purpose by our parent,
    // and nothing else in this process uses it.
    Some(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Starts the server in our process group, with its own parent-death signal and an empty
/// signal mask.
fn spawn_server(program: &OsString, args: &[OsString]) -> io::Result<Pid> {
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .env_remove(GUARDIAN_PARENT_ENV)
        .env_remove(GUARDIAN_REPORT_FD_ENV)
        .env_remove(GUARDIAN_CGROUP_ENV);
    // SAFETY: runs in the forked child before exec and calls only async-signal-safe functions
    // (`sigemptyset`, `pthread_sigmask`, `prctl`) on a stack-allocated set.
    unsafe {
        command.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            if libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    Ok(Pid::from_raw(child.id() as i32))
}

/// Reaps every child that has exited; returns the server's status once it is among them.
fn reap_children(server: Pid) -> Option<ExitInfo> {
    let mut server_status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == server => {
                server_status = Some(ExitInfo::Code(code));
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == server => {
                server_status = Some(ExitInfo::Signal(signal as i32));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return server_status,
            Ok(_) => {}
        }
    }
}

/// SIGKILLs every descendant (whatever session or group it moved to) and every other process
/// of our group, again and again until none is left, reaping them; bounded in time.
fn kill_every_descendant() {
    let me = getpid().as_raw() as u32;
    let pgid = getpgrp().as_raw() as u32;
    let started = Instant::now();
    loop {
        let table = snapshot();
        let mut others: BTreeSet<u32> = descendants(&table, me)
            .into_iter()
            .filter(|p| !p.zombie)
            .map(|p| p.pid)
            .collect();
        others.extend(
            table
                .iter()
                .filter(|p| p.pgrp == pgid && p.pid != me && !p.zombie)
                .map(|p| p.pid),
        );
        for pid in &others {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        if others.is_empty() || started.elapsed() >= REAP_REMAINDER_FOR {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Leaves the generation's cgroup, kills whatever is still in it, and removes it: respawn, which
/// would have done it, is gone.
fn empty_and_remove(cgroup: &Cgroup) {
    if let Err(err) = cgroup.leave() {
        tracing::warn!(error = %err, cgroup = %cgroup.dir().display(), "guardian: cannot leave the cgroup");
    }
    cgroup.empty_and_remove(REAP_REMAINDER_FOR);
}
