//! `respawn serve`: the supervising proxy as a process. Builds the supervisor and the proxy from
//! a [`ServeConfig`], speaks sd_notify for its own readiness, and handles signals: SIGTERM/SIGINT
//! stop accepting, let in-flight requests finish within the grace, stop the child's whole group
//! and exit 0; SIGHUP restarts the child.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use respawn_backends::{GuardianLaunch, ServerSpec};

use crate::config::GpuRelease;
use respawn_core::Phase;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info, warn};

use crate::config::ServeConfig;
use respawn::proxy::{self, Admission, Control, Drain, ProxySettings};
use respawn::supervisor::{RestRestart, Supervisor, SupervisorConfig, Target};

/// How `respawn serve` ended, with its documented exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeExit {
    /// Stopped by SIGTERM/SIGINT after a clean shutdown: exit 0.
    Stopped,
    /// respawn gave up keeping the server up (restart limit, or it never started): exit 3,
    /// so that systemd or Kubernetes take over.
    GaveUp {
        /// Why.
        reason: String,
    },
}

impl ServeExit {
    /// The process exit code.
    pub fn code(&self) -> u8 {
        match self {
            ServeExit::Stopped => 0,
            ServeExit::GaveUp { .. } => 3,
        }
    }
}

/// Why `respawn serve` could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address is in use or not bindable: exit 4.
    #[error("cannot listen on {addr}: {source} (is another respawn or server using it? choose another with --listen)")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// No free port could be found for the child: exit 1.
    #[error("cannot find a free port for the model server: {0}")]
    NoFreePort(std::io::Error),
    /// The supervisor rejected its configuration: exit 2.
    #[error(transparent)]
    Supervisor(#[from] respawn::supervisor::SupervisorError),
    /// The guardian (respawn's own executable) cannot be found: exit 1.
    #[error("cannot find respawn's own executable to run the process-group guardian: {0}")]
    Guardian(std::io::Error),
    /// The actix runtime failed: exit 1.
    #[error("runtime error: {0}")]
    Runtime(std::io::Error),
}

impl ServeError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::Listen { .. } => 4,
            ServeError::Supervisor(_) => 2,
            _ => 1,
        }
    }
}

/// Picks a free TCP port on loopback for the child.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// What `respawn serve` supervises, from its configuration.
pub fn target(config: &ServeConfig, port: u16) -> Result<Target, ServeError> {
    if let Some(url) = &config.upstream {
        return Ok(Target::Url {
            base_url: url.trim_end_matches('/').to_owned(),
        });
    }
    let mut argv = config.command.iter().map(OsString::from);
    let program: OsString = argv.next().unwrap_or_default();
    let args: Vec<OsString> = argv.collect();
    let mut spec = ServerSpec::new(config.name.clone(), program, args, port);
    spec.shell = config.shell;
    spec.stop_grace = config.stop_grace;
    spec.release_check = config
        .release_check
        .as_ref()
        .map(|argv| argv.iter().map(OsString::from).collect());
    spec.gpu_release = config.gpu_release == GpuRelease::Auto;
    spec.release_timeout = config.release_timeout;
    spec.containment = config.containment.request();
    if config.pass_secrets {
        spec.env_remove.clear();
    }
    spec.guardian = Some(GuardianLaunch::current_exe().map_err(ServeError::Guardian)?);
    Ok(Target::Command(Box::new(spec)))
}

/// The supervisor's settings, from the serve configuration.
pub fn supervisor_config(config: &ServeConfig) -> SupervisorConfig {
    let mut sup = SupervisorConfig::new(&config.name);
    sup.core = config.core();
    sup.health_path = config.health_path.clone();
    sup.stop_grace = config.stop_grace;
    sup.enable_restart = config.enable_restart;
    sup.resume = respawn_core::ResumeConfig {
        mode: config.resume.mode(),
        limit: config.resume_limit,
    };
    sup.rest_restart = match (&config.restart_url, &config.restart_token) {
        (Some(url), Some(token)) => Some(RestRestart {
            url: url.clone(),
            token: token.clone(),
        }),
        _ => None,
    };
    sup.restart_command = config
        .restart_command
        .as_ref()
        .map(|argv| argv.iter().map(OsString::from).collect());
    sup.restart_strategies = config.restart_strategies.clone();
    sup.progress_metric = config.progress_metric.clone();
    sup.canary_body = config.canary_body.clone();
    sup.log_lines_dropped = crate::log_writer::dropped_lines();
    sup
}

/// Runs `respawn serve` until it is stopped or gives up.
pub fn run(config: ServeConfig) -> Result<ServeExit, ServeError> {
    if config.admin_token_from_flag {
        warn!("--admin-token on the command line is visible to every user in `ps`; prefer RESPAWN_ADMIN_TOKEN or the config file");
    }
    if !config.listen_is_loopback() && config.admin_token.is_none() {
        warn!(listen = %config.listen, "listening on a non-loopback address without an admin token: POST /respawn/restart refuses everyone, but the proxy itself is open to the network");
    }
    let open_files = crate::resources::raise_open_file_limit();
    // Bind first: a taken listen address is an error before any child is spawned.
    let listener =
        crate::resources::bind_listener(config.listen).map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let listening = listener.local_addr().unwrap_or(config.listen);
    let port = match config.port {
        Some(port) => port,
        None => free_port().map_err(ServeError::NoFreePort)?,
    };
    let target = target(&config, port)?;
    let notifier = match respawn::systemd::Notifier::from_env() {
        Ok(notifier) => notifier,
        Err(err) => {
            warn!(error = %err, "ignoring an invalid systemd notify environment");
            None
        }
    };
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        // Before the child is spawned and before the proxy can answer: a stop that comes at any
        // moment after that is handled (child's group stopped, exit 0), never the default action.
        let signals = Signals::arm().map_err(ServeError::Runtime)?;
        let supervisor = Supervisor::start_with(
            &crate::config::restart_strategies(),
            supervisor_config(&config),
            target,
        )?;
        let control = Control::of(&supervisor, config.admin_token.clone());
        let admission = match open_files.now {
            0 => Admission::unbounded(),
            limit => Admission::for_open_files(limit, config.workers),
        };
        info!(
            open_files = open_files.now,
            connections_per_worker = admission.connections_per_worker,
            forwards_per_worker = admission.forwards_per_worker,
            "connection budget"
        );
        let drain = Drain::new();
        let settings = ProxySettings {
            listen: config.listen,
            workers: config.workers,
            max_body_size: config.max_body_size,
            header_timeout: config.header_timeout,
            shutdown_grace: config.stop_grace,
            admission,
            drain: drain.clone(),
        };
        let server = proxy::serve(listener, &settings, &supervisor, control).map_err(|err| {
            ServeError::Listen {
                addr: config.listen,
                source: std::io::Error::other(err.to_string()),
            }
        })?;
        let handle = server.handle();
        let server_task = actix_web::rt::spawn(server);
        let containment = supervisor
            .containment()
            .map_or("none", |mode| mode.as_str());
        info!(listen = %listening, child_port = port, containment, "respawn is listening");
        if let Some(notifier) = &notifier {
            notifier.spawn_watchdog();
        }
        let exit = supervise(&supervisor, notifier.as_ref(), signals).await?;
        if let Some(notifier) = &notifier {
            notifier.stopping();
        }
        // Stop accepting; in-flight requests get the grace to finish (graceful stop). What is
        // still open when it ends is ended with an error (streams with an SSE `error` event)
        // before actix closes the connections, a second later.
        let grace = config.stop_grace;
        let ending = actix_web::rt::spawn(async move {
            tokio::time::sleep(grace).await;
            drain.end_streams();
        });
        handle.stop(exit == ServeExit::Stopped).await;
        ending.abort();
        supervisor.stop(config.stop_grace).await;
        let _ = server_task.await;
        Ok(exit)
    })
}

/// The signals `respawn serve` answers, caught from the moment they are armed.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn arm() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

async fn supervise(
    supervisor: &Supervisor,
    notifier: Option<&respawn::systemd::Notifier>,
    signals: Signals,
) -> Result<ServeExit, ServeError> {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    let mut state = supervisor.state();
    let mut announced_ready = false;
    loop {
        {
            let current = state.borrow_and_update().clone();
            if current.phase == Phase::Ready && !announced_ready {
                announced_ready = true;
                if let Some(notifier) = notifier {
                    notifier.ready();
                }
            }
            if let Some(notifier) = notifier {
                notifier.status(&format!(
                    "{} (generation {}, {} restarts)",
                    current.phase.as_str(),
                    current.generation,
                    current.restarts
                ));
            }
            if current.phase == Phase::Failed {
                let reason = current
                    .last_error
                    .unwrap_or_else(|| "the restart limit was reached".to_owned());
                error!(%reason, "respawn gave up: exiting so that the service manager can take over");
                return Ok(ServeExit::GaveUp { reason });
            }
        }
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: shutting down"); return Ok(ServeExit::Stopped); }
            _ = int.recv() => { info!("SIGINT: shutting down"); return Ok(ServeExit::Stopped); }
            _ = hup.recv() => {
                info!("SIGHUP: restarting the model server");
                let _ = supervisor.restart_for(respawn_core::OperatorRestart::Signal).await;
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return Ok(ServeExit::GaveUp { reason: "the supervisor stopped".to_owned() });
                }
            }
        }
    }
}
