//! [`ServerActor`]: the actor that owns one model server process and its process group.
//!
//! It starts the server ([`Start`]), stops it completely ([`Stop`]), reports an exit the
//! server made on its own ([`ServerExited`], sent to the recipient given at construction),
//! answers [`GetServerStatus`], and signals the group on request ([`SignalServer`]).
//!
//! Exits caused by our own [`Stop`] are *not* reported as [`ServerExited`]: the caller of
//! `Stop` learns of them from [`Stopped`], and the recipient sees only the exits it must act on.
//!
//! The actor must run on a long-lived arbiter thread: the child's `PR_SET_PDEATHSIG` fires
//! when the thread that spawned it exits. When the actor ends, by stopping or by being
//! dropped with its runtime, every process of the current generation is killed with SIGKILL.
//!
//! A generation is not only its process group: see [`ContainmentMode`] for how the processes
//! that leave it are found. A new generation starts only once no process of the previous one is
//! left, whether that one was stopped or exited on its own, and its port is free.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use nix::sys::signal::Signal;
use respawn_core::Generation;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::containment::{Containment, ContainmentMode, Scope, ScopeGuard, SharedScope};
use crate::error::{ContainmentError, SpawnError, StopError};
use crate::exit::ExitInfo;
use crate::group::signal_group;
use crate::output::{spawn_forwarder, RecentLines, Stream};
use crate::port::accepts_connections;
use crate::program::resolve_program;
use crate::spawn::{path_for, plan_launch, spawn_group_leader, Spawned};
use crate::spec::ServerSpec;
use crate::stop::{stop_group, StopPlan, Stopped};

/// How long the guardian may take to report the server's pid before the start goes on without it.
const SERVER_PID_REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Start the server as generation `generation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "Result<Started, SpawnError>")]
pub struct Start {
    /// The generation the new process belongs to.
    pub generation: Generation,
}

/// The server was spawned (not yet ready: readiness is the health checker's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The generation of the new process.
    pub generation: Generation,
    /// The group leader's pid, which is also the process group id. With a guardian this is the
    /// guardian's pid, not the server program's.
    pub pid: u32,
    /// The model server's own pid: the one an operator signals. Without a guardian it equals
    /// [`pid`](Started::pid); with one it is the guardian's child, or the guardian's pid when the
    /// guardian did not report it in time.
    pub server_pid: u32,
    /// The guardian's pid, when a guardian leads the group.
    pub guardian_pid: Option<u32>,
    /// How long spawning took, from the message to the running child.
    pub spawn_took: Duration,
}

/// Stop the server and its whole process group, waiting until everything is released.
/// Stopping when nothing runs succeeds with [`Stopped::nothing_to_stop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "Result<Stopped, StopError>")]
pub struct Stop {
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
}

/// The server exited on its own (crash, or killed by someone else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct ServerExited {
    /// The generation that exited.
    pub generation: Generation,
    /// The leader's pid.
    pub pid: u32,
    /// How it ended.
    pub status: ExitInfo,
}

/// Ask for a [`ServerStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "ServerStatus")]
pub struct GetServerStatus;

/// A snapshot of the server for status pages and error messages.
#[derive(Debug, Clone, PartialEq, Eq, MessageResponse)]
pub struct ServerStatus {
    /// The generation of the running (or last) process.
    pub generation: Generation,
    /// The running leader's pid (the process group id).
    pub pid: Option<u32>,
    /// The running model server's own pid.
    pub server_pid: Option<u32>,
    /// The running guardian's pid, when a guardian leads the group.
    pub guardian_pid: Option<u32>,
    /// How the generations are contained (`None` when the requested containment is unavailable).
    pub containment: Option<ContainmentMode>,
    /// The running generation's cgroup directory, in cgroup containment.
    pub cgroup: Option<PathBuf>,
    /// Whether a child is running.
    pub running: bool,
    /// The last output lines, oldest first (they span generations).
    pub recent_lines: Vec<String>,
    /// How the last process ended, if one did.
    pub last_exit: Option<ExitInfo>,
}

/// Send a signal to the whole process group, e.g. SIGSTOP to simulate a hard hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "Result<(), StopError>")]
pub struct SignalServer {
    /// The signal to send.
    pub signal: Signal,
}

/// Internal: the exit watcher saw the leader end.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct LeaderExited {
    generation: Generation,
    pid: u32,
    status: ExitInfo,
}

/// The child currently owned.
#[derive(Debug)]
struct Child {
    pid: u32,
    server_pid: u32,
    exited: watch::Receiver<Option<ExitInfo>>,
    guard: ScopeGuard,
    stopping: bool,
}

/// Owns one server process: starts it, stops its whole group, reports its exits.
pub struct ServerActor {
    spec: ServerSpec,
    name: Arc<str>,
    events: Recipient<ServerExited>,
    containment: Result<Containment, ContainmentError>,
    child: Option<Child>,
    /// What is left of a generation that exited on its own: killed at once, and waited for
    /// before the next generation starts.
    remains: Option<ScopeGuard>,
    starting: bool,
    generation: Generation,
    last_exit: Option<ExitInfo>,
    recent: Arc<RecentLines>,
}

impl std::fmt::Debug for ServerActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerActor")
            .field("server", &self.name)
            .field("generation", &self.generation)
            .field("pid", &self.child.as_ref().map(|c| c.pid))
            .finish_non_exhaustive()
    }
}

impl ServerActor {
    /// An actor for `spec` that reports the server's own exits to `events`. Nothing is
    /// started until it receives [`Start`].
    ///
    /// The containment is chosen here, once for every generation, and logged (see
    /// [`containment`](Self::containment)).
    pub fn new(spec: ServerSpec, events: Recipient<ServerExited>) -> Self {
        let recent = RecentLines::new(spec.log_lines);
        let containment =
            Containment::choose(spec.containment, spec.guardian.is_some(), &spec.name);
        Self {
            name: Arc::from(spec.name.as_str()),
            spec,
            events,
            containment,
            child: None,
            remains: None,
            starting: false,
            generation: Generation(0),
            last_exit: None,
            recent,
        }
    }

    /// The containment of this server's generations, or why the requested one is unavailable
    /// (then every [`Start`] fails with that error).
    pub fn containment(&self) -> Result<ContainmentMode, ContainmentError> {
        self.containment
            .as_ref()
            .map(Containment::mode)
            .map_err(Clone::clone)
    }

    fn port_addr(&self) -> Option<SocketAddr> {
        (self.spec.port != 0).then(|| SocketAddr::new(self.spec.host, self.spec.port))
    }

    /// The `nvidia-smi` to ask after a stop, when the GPU release check is on and one is found.
    fn gpu_query(&self) -> Option<PathBuf> {
        if !self.spec.gpu_release {
            return None;
        }
        resolve_program("nvidia-smi".as_ref(), path_for(&self.spec).as_deref()).ok()
    }

    /// Spawns the child and its watchers; runs synchronously on the actor's thread. Returns the
    /// leader's pid and, with a guardian, the pipe on which it reports the server's pid.
    fn spawn_now(
        &mut self,
        generation: Generation,
        ctx: &mut Context<Self>,
    ) -> Result<(u32, Option<std::fs::File>), SpawnError> {
        let containment = self.containment.as_ref().map_err(Clone::clone)?;
        let launch = plan_launch(&self.spec)?;
        containment.sweep_earlier_generations(generation);
        let cgroup = containment.cgroup_for(generation)?;
        let spawned = match spawn_group_leader(&self.spec, &launch, cgroup.as_ref()) {
            Ok(spawned) => spawned,
            Err(err) => {
                if let Some(cgroup) = &cgroup {
                    let _ = cgroup.remove();
                }
                return Err(err);
            }
        };
        let Spawned {
            mut child,
            stdout,
            stderr,
            report,
        } = spawned;
        let Some(pid) = child.id() else {
            // Only possible if the child was already reaped, which nobody but us does.
            return Err(SpawnError::Io {
                program: self.spec.program.to_string_lossy().into_owned(),
                source: std::io::Error::other("the child vanished right after spawning"),
            });
        };
        let cgroup_dir = cgroup.as_ref().map(|c| c.dir().display().to_string());
        let guard = ScopeGuard::new(SharedScope::new(Scope::new(pid, cgroup)));
        for (reader, stream) in [(stdout, Stream::Stdout), (stderr, Stream::Stderr)] {
            if let Err(err) = spawn_forwarder(
                reader,
                stream,
                self.name.clone(),
                generation.0,
                self.recent.clone(),
            ) {
                tracing::error!(server = %self.name, error = %err, "cannot start a thread to read the server's output");
            }
        }
        let (exited_tx, exited) = watch::channel(None);
        // A weak address: the watcher must not keep the actor alive after its owners let go.
        let me = ctx.address().downgrade();
        let name = self.name.clone();
        actix::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => ExitInfo::from(status),
                Err(err) => {
                    tracing::error!(server = %name, pid, error = %err, "could not wait for the server");
                    ExitInfo::Unknown
                }
            };
            exited_tx.send_replace(Some(status));
            if let Some(me) = me.upgrade() {
                me.do_send(LeaderExited {
                    generation,
                    pid,
                    status,
                });
            }
        });
        self.child = Some(Child {
            pid,
            server_pid: pid,
            exited,
            guard,
            stopping: false,
        });
        self.generation = generation;
        tracing::info!(server = %self.name, generation = generation.0, pid, program = ?launch.program,
            containment = containment.mode().as_str(), cgroup = cgroup_dir.as_deref().unwrap_or("none"),
            "server spawned");
        Ok((pid, report))
    }
}

/// Reads the server's pid that the guardian writes on `report` (blocking; run off the actor).
fn read_server_pid(mut report: std::fs::File) -> Option<u32> {
    let mut text = String::new();
    // The guardian writes one short line and closes the pipe (or exits without writing).
    report.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// What must be released of a generation that exited on its own before the next one starts.
struct Remains {
    guard: ScopeGuard,
    bound: Duration,
    release_check: Option<Vec<std::ffi::OsString>>,
    gpu_query: Option<PathBuf>,
}

/// Waits until what is left of a generation that exited on its own is gone, and released as a
/// stop would have released it: the release check passes and no old pid holds GPU memory.
/// On failure the remains come back with the error, to be waited for again by the next start.
async fn clear_remains(remains: Option<Remains>) -> Result<(), (SpawnError, ScopeGuard)> {
    let Some(mut remains) = remains else {
        return Ok(());
    };
    let scope = remains.guard.scope().clone();
    let pgid = scope.with(|scope| scope.leader());
    if let Err(remaining) = scope
        .wait_gone((Clock::new(), Duration::ZERO), remains.bound)
        .await
    {
        let err = SpawnError::PreviousGeneration(StopError::GroupSurvived { pgid, remaining });
        return Err((err, remains.guard));
    }
    remains.guard.disarm();
    let seen = scope.with(|scope| scope.seen_pids());
    let released = async {
        if let Some(check) = &remains.release_check {
            crate::release::wait_released(check, &seen, remains.bound).await?;
        }
        if let Some(query) = &remains.gpu_query {
            crate::release::wait_gpu_released(query, &seen, remains.bound).await?;
        }
        Ok(())
    };
    released
        .await
        .map_err(|err| (SpawnError::PreviousGeneration(err), remains.guard))
}

impl Actor for ServerActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(child) = self.child.take() {
            tracing::info!(server = %self.name, pid = child.pid, "actor stopped; killing every process of the server");
            // Dropping the armed guard kills the generation and removes its cgroup.
            drop(child.guard);
        }
        self.remains = None;
    }
}

impl Handler<Start> for ServerActor {
    type Result = ResponseActFuture<Self, Result<Started, SpawnError>>;

    fn handle(&mut self, msg: Start, _ctx: &mut Self::Context) -> Self::Result {
        let begun = Instant::now();
        if let Some(child) = &self.child {
            let err = if child.stopping {
                SpawnError::Busy { doing: "stop" }
            } else {
                SpawnError::AlreadyRunning { pid: child.pid }
            };
            return Box::pin(fut::ready(Err(err)));
        }
        if self.starting {
            return Box::pin(fut::ready(Err(SpawnError::Busy { doing: "start" })));
        }
        // Fail early on a missing program, before looking at the port.
        if let Err(err) = plan_launch(&self.spec) {
            return Box::pin(fut::ready(Err(err)));
        }
        if let Err(err) = &self.containment {
            return Box::pin(fut::ready(Err(SpawnError::Containment(err.clone()))));
        }
        self.starting = true;
        let addr = self.port_addr();
        let remains = self.remains.take().map(|guard| Remains {
            guard,
            bound: self.spec.release_timeout,
            release_check: self.spec.release_check.clone(),
            gpu_query: self.gpu_query(),
        });
        let check = async move {
            clear_remains(remains).await?;
            Ok(match addr {
                Some(addr) => accepts_connections(addr).await.then_some(addr),
                None => None,
            })
        };
        Box::pin(
            check
                .into_actor(self)
                .map(move |checked, act, ctx| {
                    act.starting = false;
                    let checked = checked.map_err(|(err, remains)| {
                        act.remains = Some(remains);
                        err
                    });
                    if let Some(addr) = checked? {
                        return Err(SpawnError::PortInUse {
                            port: addr.port(),
                            host: addr.ip(),
                        });
                    }
                    act.spawn_now(msg.generation, ctx)
                })
                .then(move |spawned, act, _ctx| {
                    let waiting = async move {
                        let (pid, report) = spawned?;
                        let server_pid = match report {
                            Some(report) => {
                                let read =
                                    tokio::task::spawn_blocking(move || read_server_pid(report));
                                match tokio::time::timeout(SERVER_PID_REPORT_TIMEOUT, read).await {
                                    Ok(Ok(reported)) => reported,
                                    _ => None,
                                }
                            }
                            None => Some(pid),
                        };
                        Ok::<_, SpawnError>((pid, server_pid))
                    };
                    waiting.into_actor(act).map(move |result, act, _ctx| {
                        let (pid, server_pid) = result?;
                        let guardian_pid = act.spec.guardian.as_ref().map(|_| pid);
                        let server_pid = server_pid.unwrap_or(pid);
                        if let Some(child) = act.child.as_mut().filter(|c| c.pid == pid) {
                            child.server_pid = server_pid;
                            child.guard.scope().with(|scope| scope.remember(server_pid));
                        } else if let Some(remains) = act.remains.as_ref() {
                            // It already exited: what is left of it still counts the server.
                            remains.scope().with(|scope| scope.remember(server_pid));
                        }
                        if guardian_pid.is_some() {
                            tracing::info!(server = %act.name, generation = msg.generation.0,
                                guardian_pid = pid, server_pid, "the guardian started the server");
                        }
                        Ok(Started {
                            generation: msg.generation,
                            pid,
                            server_pid,
                            guardian_pid,
                            spawn_took: begun.elapsed(),
                        })
                    })
                }),
        )
    }
}

impl Handler<Stop> for ServerActor {
    type Result = ResponseActFuture<Self, Result<Stopped, StopError>>;

    fn handle(&mut self, msg: Stop, _ctx: &mut Self::Context) -> Self::Result {
        if self.starting {
            return Box::pin(fut::ready(Err(StopError::Busy { doing: "start" })));
        }
        let port = self.port_addr();
        let gpu_query = self.gpu_query();
        let Some(child) = self.child.as_mut() else {
            return Box::pin(fut::ready(Ok(Stopped::nothing_to_stop())));
        };
        if child.stopping {
            return Box::pin(fut::ready(Err(StopError::Busy { doing: "stop" })));
        }
        child.stopping = true;
        let pid = child.pid;
        let plan = StopPlan {
            server: self.name.clone(),
            pgid: pid,
            scope: child.guard.scope().clone(),
            gpu_query,
            grace: msg.grace,
            release_timeout: self.spec.release_timeout,
            port,
            release_check: self.spec.release_check.clone(),
            exited: child.exited.clone(),
        };
        tracing::info!(server = %self.name, pid, grace = ?msg.grace, "stopping server");
        Box::pin(
            stop_group(plan)
                .into_actor(self)
                .map(move |result, act, _ctx| {
                    if act.child.as_ref().is_some_and(|c| c.pid == pid) {
                        let Some(mut child) = act.child.take() else {
                            return result;
                        };
                        match &result {
                            Ok(stopped) => {
                                child.guard.disarm();
                                act.last_exit = stopped.exit.or(act.last_exit);
                            }
                            // Keep the guard armed: whatever survived is killed again now, and
                            // waited for before the next start.
                            Err(_) => {
                                child.guard.kill_now();
                                act.remains = Some(child.guard);
                            }
                        }
                    }
                    result
                }),
        )
    }
}

impl Handler<LeaderExited> for ServerActor {
    type Result = ();

    fn handle(&mut self, msg: LeaderExited, _ctx: &mut Self::Context) {
        let Some(child) = self.child.as_mut().filter(|c| c.pid == msg.pid) else {
            return;
        };
        self.last_exit = Some(msg.status);
        if child.stopping {
            // Our own Stop caused this; it reports through `Stopped`.
            return;
        }
        tracing::warn!(server = %self.name, generation = msg.generation.0, pid = msg.pid,
            exit = %msg.status, "server exited on its own");
        if let Some(child) = self.child.take() {
            // The leader is gone; kill whatever of its generation is left, and let the next
            // start wait until it is gone, so that it does not meet the old workers.
            child.guard.kill_now();
            self.remains = Some(child.guard);
        }
        self.events.do_send(ServerExited {
            generation: msg.generation,
            pid: msg.pid,
            status: msg.status,
        });
    }
}

impl Handler<GetServerStatus> for ServerActor {
    type Result = ServerStatus;

    fn handle(&mut self, _msg: GetServerStatus, _ctx: &mut Self::Context) -> ServerStatus {
        let child = self.child.as_ref();
        ServerStatus {
            generation: self.generation,
            pid: child.map(|c| c.pid),
            server_pid: child.map(|c| c.server_pid),
            guardian_pid: child
                .filter(|_| self.spec.guardian.is_some())
                .map(|c| c.pid),
            containment: self.containment().ok(),
            cgroup: child.and_then(|c| {
                c.guard
                    .scope()
                    .with(|scope| scope.cgroup().map(|cg| cg.dir().to_path_buf()))
            }),
            running: child.is_some(),
            recent_lines: self.recent.snapshot(),
            last_exit: self.last_exit,
        }
    }
}

impl Handler<SignalServer> for ServerActor {
    type Result = Result<(), StopError>;

    fn handle(&mut self, msg: SignalServer, _ctx: &mut Self::Context) -> Self::Result {
        let Some(child) = &self.child else {
            return Err(StopError::NotRunning);
        };
        match signal_group(child.pid, msg.signal) {
            Ok(true) => Ok(()),
            Ok(false) => Err(StopError::NotRunning),
            Err(source) => Err(StopError::Signal {
                pgid: child.pid,
                signal: msg.signal.as_str(),
                source,
            }),
        }
    }
}
