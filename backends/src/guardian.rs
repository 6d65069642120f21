//! The guardian: a tiny process that leads the server's process group so that nothing the
//! server started can outlive respawn, not even after `kill -9 respawn`.
//!
//! `PR_SET_PDEATHSIG` reaches only a direct child, and model servers fork workers (vLLM's
//! engine processes) that would be orphaned and keep their GPU memory. With a guardian the
//! tree is `respawn → guardian → server → workers…`, all but respawn in one process group led
//! by the guardian:
//!
//! - the guardian asks for [`PARENT_DEATH_SIGNAL`] when respawn dies (a signal it can catch),
//!   and then SIGKILLs the whole group, itself included;
//! - it is a child subreaper, so orphaned descendants reparent to it and it reaps them;
//! - it forwards SIGTERM, SIGINT and SIGHUP to the server;
//! - when the server exits it SIGKILLs whatever is left of the group (workers that ignored
//!   SIGTERM) and exits with the server's status: its code, or 128 + the signal number.
//!
//! The `respawn` binary runs it as `respawn __guardian -- PROGRAM ARGS...`; a
//! [`ServerSpec`](crate::ServerSpec) uses it when [`guardian`](crate::ServerSpec::guardian) is
//! set, and then [`Started::pid`](crate::Started::pid) is the guardian's pid (the group id).
//! It uses blocking calls only, and handles signals synchronously with `sigwait`.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use nix::sys::prctl;
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpgrp, getpid, getppid, setpgid, Pid};

use crate::exit::ExitInfo;
use crate::group::members;

/// Environment variable through which the spawning process tells the guardian its pid, so
/// that the guardian can tell whether its parent already died before it asked to be told.
pub const GUARDIAN_PARENT_ENV: &str = "RESPAWN_GUARDIAN_PARENT_PID";

/// The signal the guardian receives when its parent dies.
pub const PARENT_DEATH_SIGNAL: Signal = Signal::SIGUSR1;

/// Exit code of the guardian when it was called without a program, could not set itself up,
/// or found its parent already gone.
pub const GUARDIAN_SETUP_FAILED: i32 = 125;
/// Exit code when the server program exists but cannot be executed (as in a shell).
pub const GUARDIAN_NOT_EXECUTABLE: i32 = 126;
/// Exit code when the server program was not found (as in a shell).
pub const GUARDIAN_NOT_FOUND: i32 = 127;

/// How long the guardian waits for the killed remainder of its group to be reaped before it
/// exits anyway.
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

    let server = match spawn_server(&program, &rest) {
        Ok(pid) => pid,
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
                tracing::error!(error = %err, "guardian: sigwait failed; killing the group");
                kill_whole_group();
                return GUARDIAN_SETUP_FAILED;
            }
        };
        match signal {
            Signal::SIGCHLD => {
                if let Some(status) = reap_children(server) {
                    kill_rest_of_group();
                    return status.as_shell_status();
                }
            }
            signal if signal == PARENT_DEATH_SIGNAL => {
                kill_whole_group();
                // Not reached: SIGKILL to our own group includes us.
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

/// Starts the server in our process group, with its own parent-death signal and an empty
/// signal mask.
fn spawn_server(program: &OsString, args: &[OsString]) -> io::Result<Pid> {
    let mut command = std::process::Command::new(program);
    command.args(args).env_remove(GUARDIAN_PARENT_ENV);
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

/// SIGKILLs every other process of our group, then reaps what it can for a bounded time.
fn kill_rest_of_group() {
    let me = getpid().as_raw() as u32;
    let pgid = getpgrp().as_raw() as u32;
    let started = Instant::now();
    loop {
        let others: Vec<u32> = members(pgid)
            .into_iter()
            .filter(|m| m.pid != me && !m.zombie)
            .map(|m| m.pid)
            .collect();
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

/// SIGKILLs the whole group, the guardian included.
fn kill_whole_group() {
    let _ = killpg(getpgrp(), Signal::SIGKILL);
}
