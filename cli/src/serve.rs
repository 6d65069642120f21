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
use respawn::pool::{Pool, PoolConfig, PoolControl, PoolError, ReplicaSpec};
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

/// What replica `replica` of a pool supervises: the command with `{replica}` replaced by its
/// index, `RESPAWN_REPLICA` in its environment, on its own port.
pub fn replica_target(
    config: &ServeConfig,
    replica: usize,
    port: u16,
) -> Result<Target, ServeError> {
    let mut config = config.clone();
    let index = replica.to_string();
    for arg in &mut config.command {
        *arg = arg.replace("{replica}", &index);
    }
    let mut target = target(&config, port)?;
    if let Target::Command(spec) = &mut target {
        spec.env.push(("RESPAWN_REPLICA".into(), index.into()));
    }
    Ok(target)
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
    sup.waiting = config.wait_limits();
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
    if config.replicas > 1 {
        return run_pool(config, listener, listening, open_files.now);
    }
    let port = match config.port {
        Some(port) => port,
        None => free_port().map_err(ServeError::NoFreePort)?,
    };
    let target = target(&config, port)?;
    let notifier = systemd_notifier();
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
        let settings = proxy_settings(&config, open_files.now);
        info!(
            open_files = open_files.now,
            connections_per_worker = settings.admission.connections_per_worker,
            forwards_per_worker = settings.admission.forwards_per_worker,
            "connection budget"
        );
        let waiting = supervisor.metrics().waiting().limits();
        info!(
            max_waiting = waiting.max_requests,
            max_waiting_bytes = waiting.max_bytes,
            max_wait_time_s = supervisor.upstream_shared().config.wait_bound.as_secs(),
            "bounds of the requests waiting for a ready server"
        );
        let server = proxy::serve(listener, &settings, &supervisor, control)
            .map_err(|err| listen_error(config.listen, &err))?;
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
        let graceful = exit == ServeExit::Stopped;
        stop_serving(&handle, &settings.drain, config.stop_grace, graceful).await;
        supervisor.stop(config.stop_grace).await;
        let _ = server_task.await;
        Ok(exit)
    })
}

/// The systemd notifier when respawn runs as a `Type=notify` service (an invalid environment is
/// warned about and ignored).
fn systemd_notifier() -> Option<respawn::systemd::Notifier> {
    match respawn::systemd::Notifier::from_env() {
        Ok(notifier) => notifier,
        Err(err) => {
            warn!(error = %err, "ignoring an invalid systemd notify environment");
            None
        }
    }
}

/// The proxy's settings: its connection budget follows the open-file limit (`0`: unbounded).
fn proxy_settings(config: &ServeConfig, open_files: u64) -> ProxySettings {
    let admission = match open_files {
        0 => Admission::unbounded(),
        limit => Admission::for_open_files(limit, config.workers),
    };
    ProxySettings {
        listen: config.listen,
        workers: config.workers,
        max_body_size: config.max_body_size,
        header_timeout: config.header_timeout,
        shutdown_grace: config.stop_grace,
        admission,
        drain: Drain::new(),
        return_free_memory: crate::allocator::return_free_memory,
    }
}

fn listen_error(addr: SocketAddr, err: &impl std::fmt::Display) -> ServeError {
    ServeError::Listen {
        addr,
        source: std::io::Error::other(err.to_string()),
    }
}

/// Stops accepting, then waits for the workers to end. When `graceful`, in-flight requests get
/// the `grace` to finish; otherwise (respawn gave up, no model server will answer them) none.
/// What is still open then is ended with an error (a request still waiting with a 503, a stream
/// with an SSE `error` event) before actix closes the connections, when its shutdown timeout (the
/// grace and a second) ends at the latest.
/// The workers are waited for in both cases: a stop that did not wait left them writing their
/// own lines after the one that says why respawn ended, which is the last.
async fn stop_serving(
    handle: &actix_web::dev::ServerHandle,
    drain: &Drain,
    grace: std::time::Duration,
    graceful: bool,
) {
    let grace = if graceful {
        grace
    } else {
        std::time::Duration::ZERO
    };
    let drain = drain.clone();
    let ending = actix_web::rt::spawn(async move {
        tokio::time::sleep(grace).await;
        drain.end_streams();
    });
    handle.stop(true).await;
    ending.abort();
}

/// The ports of a pool's replicas: `--port BASE` gives BASE+i, otherwise each is picked free.
fn replica_ports(config: &ServeConfig) -> Result<Vec<u16>, ServeError> {
    (0..config.replicas)
        .map(|i| match config.port {
            Some(base) => u16::try_from(usize::from(base) + i).map_err(|_| {
                ServeError::NoFreePort(std::io::Error::other(format!(
                    "--port {base} + {i} is past the last port"
                )))
            }),
            None => free_port().map_err(ServeError::NoFreePort),
        })
        .collect()
}

/// `respawn serve --replicas N` with N > 1: a pool of supervised replicas behind the listener.
fn run_pool(
    config: ServeConfig,
    listener: TcpListener,
    listening: SocketAddr,
    open_files: u64,
) -> Result<ServeExit, ServeError> {
    let ports = replica_ports(&config)?;
    let mut replicas = Vec::with_capacity(ports.len());
    for (replica, port) in ports.iter().enumerate() {
        replicas.push(ReplicaSpec {
            config: supervisor_config(&config),
            target: replica_target(&config, replica, *port)?,
        });
    }
    let notifier = systemd_notifier();
    let pool_config = PoolConfig {
        min_ready: config.min_ready,
        start_stagger: config.start_stagger,
        drain_grace: config.stop_grace,
    };
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let signals = Signals::arm().map_err(ServeError::Runtime)?;
        let pool = Pool::start_with(&crate::config::restart_strategies(), pool_config, replicas)
            .await
            .map_err(|err| match err {
                PoolError::Replica { source, .. } => ServeError::Supervisor(source),
                other => ServeError::Runtime(std::io::Error::other(other.to_string())),
            })?;
        let front = &pool.replicas()[0];
        let control = Control::of_pool(
            front,
            std::sync::Arc::new(PoolControl::new(pool.clone())),
            config.admin_token.clone(),
        );
        let settings = proxy_settings(&config, open_files);
        let server = proxy::serve_pool(listener, &settings, &pool, control)
            .map_err(|err| listen_error(config.listen, &err))?;
        let handle = server.handle();
        let server_task = actix_web::rt::spawn(server);
        for (replica, port) in ports.iter().enumerate() {
            info!(replica, child_port = *port, "replica's port");
        }
        info!(listen = %listening, replicas = pool.len(), "respawn is listening");
        if let Some(notifier) = &notifier {
            notifier.spawn_watchdog();
        }
        let exit = supervise_pool(&pool, notifier.as_ref(), signals).await;
        if let Some(notifier) = &notifier {
            notifier.stopping();
        }
        let graceful = exit == ServeExit::Stopped;
        stop_serving(&handle, &settings.drain, config.stop_grace, graceful).await;
        pool.stop(config.stop_grace).await;
        let _ = server_task.await;
        Ok(exit)
    })
}

/// Watches a pool until a stop signal, or until every replica has been given up (exit 3); a
/// replica given up alone is reported and left stopped while the others serve. SIGHUP restarts
/// the replicas one at a time.
async fn supervise_pool(
    pool: &Pool,
    notifier: Option<&respawn::systemd::Notifier>,
    signals: Signals,
) -> ServeExit {
    let Signals {
        mut term,
        mut int,
        mut hup,
    } = signals;
    let mut states: Vec<_> = pool.replicas().iter().map(|s| s.state()).collect();
    let mut given_up = vec![false; pool.len()];
    let mut announced_ready = false;
    loop {
        for (replica, state) in states.iter_mut().enumerate() {
            let current = state.borrow_and_update();
            if current.phase == Phase::Failed && !given_up[replica] {
                given_up[replica] = true;
                let reason = current.last_error.clone().unwrap_or_default();
                error!(replica, %reason, "replica given up: left stopped while the others serve");
            }
        }
        if pool.is_ready() && !announced_ready {
            announced_ready = true;
            if let Some(notifier) = notifier {
                notifier.ready();
            }
        }
        if let Some(notifier) = notifier {
            notifier.status(&format!(
                "{} of {} replicas ready",
                pool.ready_count(),
                pool.len()
            ));
        }
        if given_up.iter().all(|g| *g) {
            let reason = "every replica was given up".to_owned();
            error!(%reason, "respawn gave up: exiting so that the service manager can take over");
            return ServeExit::GaveUp { reason };
        }
        let changes = states.iter_mut().map(|state| Box::pin(state.changed()));
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: shutting down"); return ServeExit::Stopped; }
            _ = int.recv() => { info!("SIGINT: shutting down"); return ServeExit::Stopped; }
            _ = hup.recv() => {
                info!("SIGHUP: restarting the replicas one at a time");
                let pool = pool.clone();
                actix_web::rt::spawn(async move {
                    pool.rolling_restart_for(respawn_core::OperatorRestart::Signal).await;
                });
            }
            (changed, _, _) = futures_util::future::select_all(changes) => {
                if changed.is_err() {
                    return ServeExit::GaveUp { reason: "a replica's supervisor stopped".to_owned() };
                }
            }
        }
    }
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
