//! [`run_until_restart`]: runs a server until it stops or a restart is authorized, and reports
//! how the process should exit.

use std::io;

use tracing::info;

use super::{RestartControl, StopSignals};

/// The exit code after an authorized restart: 75, `EX_TEMPFAIL` from `sysexits.h` ("temporary
/// failure; try again"). It is non-zero, so systemd's `Restart=on-failure` (and `always`) and
/// Kubernetes' `restartPolicy` all start the service again, and it is distinct from a crash (1)
/// or a signal, so logs tell a requested restart apart. Change it with
/// [`RestartControl::exit_code`].
pub const EXIT_RESTART: i32 = 75;

/// How a service run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The server stopped by itself (SIGTERM, SIGINT, or its handle was stopped): exit 0.
    Stopped,
    /// An authorized `/restart` asked the process to exit with `code` so that it is started again.
    Restart {
        /// The exit code to use.
        code: i32,
    },
}

impl Exit {
    /// The process exit code for this ending.
    pub fn code(&self) -> i32 {
        match self {
            Exit::Stopped => 0,
            Exit::Restart { code } => *code,
        }
    }
}

/// Runs an actix-web server until it ends or a restart is authorized, and speaks sd_notify
/// meanwhile.
///
/// On start: `READY=1` (unless [`RestartControl::defer_ready`]) and the watchdog pinger, on this
/// event loop. On an authorized restart (the handler has already answered 202): runs the cleanup
/// hook, sends `STOPPING=1`, stops the server gracefully (`ServerHandle::stop(true)`, bounded by
/// the server's `shutdown_timeout`; keep it short, since idle keep-alive connections count as
/// open) and returns [`Exit::Restart`]. On SIGTERM (graceful) or SIGINT/SIGQUIT (immediate) it
/// sends `STOPPING=1`, stops the server and returns [`Exit::Stopped`]; so it does when the server
/// stops by itself.
///
/// # Signals
///
/// The stop signals are armed on entry, before `server` is first polled. actix-web starts the
/// workers, and so answers the first request, only on that first poll, so the guarantee holds:
/// nothing is answered while SIGTERM would still kill the process. Pass the server just as
/// `HttpServer::run` returned it, not spawned elsewhere. To catch signals even earlier (before
/// binding, or before logging the address others wait for), arm [`StopSignals`] yourself and
/// call [`run_until_restart_with`].
///
/// # Cancel safety
///
/// Not cancel safe: dropping the future drops the server.
///
/// # Panics
///
/// Panics when awaited outside an actix `System` (the watchdog task is spawned on it).
pub async fn run_until_restart(
    server: actix_web::dev::Server,
    control: &RestartControl,
) -> io::Result<Exit> {
    let signals = StopSignals::arm()?;
    run_until_restart_with(server, control, signals).await
}

/// [`run_until_restart`] with stop signals the caller armed earlier (e.g. before binding).
///
/// # Cancel safety
///
/// Not cancel safe: dropping the future drops the server.
///
/// # Panics
///
/// Panics when awaited outside an actix `System` (the watchdog task is spawned on it).
pub async fn run_until_restart_with(
    server: actix_web::dev::Server,
    control: &RestartControl,
    mut signals: StopSignals,
) -> io::Result<Exit> {
    let notifier = control.notifier_ref();
    let watchdog = notifier.and_then(|n| match control.probe() {
        Some(probe) => n.spawn_watchdog_while(move || probe()),
        None => n.spawn_watchdog(),
    });
    if control.ready_at_start() {
        control.ready();
    }
    let handle = server.handle();
    let mut server = std::pin::pin!(server);
    let outcome = tokio::select! {
        ended = &mut server => {
            if let Some(n) = notifier {
                n.stopping();
            }
            ended.map(|()| Exit::Stopped)
        }
        () = control.restart_requested() => {
            control.run_cleanup();
            if let Some(n) = notifier {
                n.stopping();
            }
            info!("stopping the server for the requested restart");
            let stop = handle.stop(true);
            let (ended, ()) = futures_util::future::join(server, stop).await;
            ended.map(|()| Exit::Restart { code: control.restart_exit_code() })
        }
        stop = signals.recv() => {
            if let Some(n) = notifier {
                n.stopping();
            }
            info!(signal = stop.name(), graceful = stop.graceful(), "stopping the server");
            // The server may not have started yet: polling it starts the workers, then the stop
            // request ends them. Should actix-web's own handler have seen the signal too, the
            // second stop request finds the server stopping and is dropped.
            let stop = handle.stop(stop.graceful());
            let (ended, ()) = futures_util::future::join(server, stop).await;
            ended.map(|()| Exit::Stopped)
        }
    };
    if let Some(task) = watchdog {
        task.abort();
    }
    outcome
}
