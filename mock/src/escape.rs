//! `--escape` and `--flood-output`: the mock behaving like model servers that are hard to
//! supervise, so that respawn's containment and its output handling can be tested for real.
//!
//! - `setsid`: a helper started in a new session (its own process group), like a tool a server
//!   launches with `setsid`.
//! - `daemon`: a daemon made by the classic double fork: the intermediate process exits at once,
//!   so the daemon is orphaned (reparented to the nearest child subreaper) in its own session.
//! - `worker`: a worker that calls `setsid()` and keeps the server's listening socket, as some
//!   vLLM/Ray worker setups do; while it lives, no new server can bind the port.
//!
//! Every escaped process only sleeps. They are forked without `exec` (the mock's own image), and
//! between `fork` and their end they call only async-signal-safe functions (`setsid`, `signal`,
//! `pause`, `fork`, `_exit`), which is what a child of a multi-threaded process may do.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

/// A way of leaving the server's session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Escape {
    /// A helper started in a new session.
    Setsid,
    /// A daemon made by a double fork.
    Daemon,
    /// A worker that calls `setsid()` and keeps the listening socket.
    Worker,
}

/// In the forked child: default signal dispositions (the parent's handlers only write to a pipe
/// nobody reads here), then sleep until a signal ends the process.
///
/// # Safety
/// Call only in a freshly forked child; it never returns.
unsafe fn sleep_forever() -> ! {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        libc::signal(signal, libc::SIG_DFL);
    }
    loop {
        libc::pause();
    }
}

/// Forks a process that calls `setsid()` and sleeps; returns its pid.
fn fork_in_new_session() -> std::io::Result<libc::pid_t> {
    // SAFETY: the child calls only async-signal-safe functions (see the module doc).
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => unsafe {
            libc::setsid();
            sleep_forever()
        },
        pid => Ok(pid),
    }
}

/// Forks, and in the child forks the daemon and exits, like `daemon(3)`; returns once the
/// intermediate process is reaped.
fn double_fork() -> std::io::Result<()> {
    // SAFETY: the child calls only async-signal-safe functions (see the module doc).
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => unsafe {
            libc::setsid();
            match libc::fork() {
                0 => sleep_forever(),
                _ => libc::_exit(0),
            }
        },
        pid => {
            let mut status = 0;
            // SAFETY: waits for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            Ok(())
        }
    }
}

/// Starts the escapes that must not hold the listening socket: call before binding.
pub(crate) fn before_bind(escapes: &[Escape]) -> std::io::Result<()> {
    for escape in escapes {
        match escape {
            Escape::Setsid => {
                let pid = fork_in_new_session()?;
                info!(pid, "started a helper in a new session");
            }
            Escape::Daemon => {
                double_fork()?;
                info!("started a daemon by a double fork");
            }
            Escape::Worker => {}
        }
    }
    Ok(())
}

/// Starts the escapes that keep the listening socket: call after binding.
pub(crate) fn after_bind(escapes: &[Escape]) -> std::io::Result<()> {
    if escapes.contains(&Escape::Worker) {
        let pid = fork_in_new_session()?;
        info!(
            pid,
            "started a worker in a new session that keeps the listening socket"
        );
    }
    Ok(())
}

/// Lines each burst of `--flood-output` writes to each stream.
const FLOOD_BURST: u64 = 25;

/// Starts `--flood-output`: a thread writing bursts of lines to stdout and stderr, with a
/// millisecond between bursts, counting in `written` every line it got out.
pub(crate) fn flood(written: Arc<AtomicU64>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("flood-output".to_owned())
        .spawn(move || {
            let mut n: u64 = 0;
            loop {
                {
                    let mut out = std::io::stdout().lock();
                    let mut err = std::io::stderr().lock();
                    for _ in 0..FLOOD_BURST {
                        let _ =
                            writeln!(out, "flood stdout line {n}: the model server talks a lot");
                        let _ =
                            writeln!(err, "flood stderr line {n}: the model server talks a lot");
                        n += 1;
                    }
                    let _ = out.flush();
                }
                written.fetch_add(2 * FLOOD_BURST, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .map(drop)
}
