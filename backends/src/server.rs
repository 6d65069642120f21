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
//! dropped with its runtime, the child's whole group is killed with SIGKILL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use nix::sys::signal::Signal;
use respawn_core::Generation;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::exit::ExitInfo;
use crate::group::{signal_group, GroupGuard};
use crate::output::{forward_lines, RecentLines, Stream};
use crate::port::accepts_connections;
use crate::spawn::{plan_launch, spawn_group_leader, SpawnError};
use crate::spec::ServerSpec;
use crate::stop::{stop_group, StopError, StopPlan, Stopped};

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
    /// The running leader's pid.
    pub pid: Option<u32>,
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
    exited: watch::Receiver<Option<ExitInfo>>,
    guard: GroupGuard,
    stopping: bool,
}

/// Owns one server process: starts it, stops its whole group, reports its exits.
pub struct ServerActor {
    spec: ServerSpec,
    name: Arc<str>,
    events: Recipient<ServerExited>,
    child: Option<Child>,
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
    pub fn new(spec: ServerSpec, events: Recipient<ServerExited>) -> Self {
        let recent = RecentLines::new(spec.log_lines);
        Self {
            name: Arc::from(spec.name.as_str()),
            spec,
            events,
            child: None,
            starting: false,
            generation: Generation(0),
            last_exit: None,
            recent,
        }
    }

    fn port_addr(&self) -> Option<SocketAddr> {
        (self.spec.port != 0).then(|| SocketAddr::new(self.spec.host, self.spec.port))
    }

    /// Spawns the child and its watchers; runs synchronously on the actor's thread.
    fn spawn_now(
        &mut self,
        generation: Generation,
        ctx: &mut Context<Self>,
    ) -> Result<u32, SpawnError> {
        let launch = plan_launch(&self.spec)?;
        let mut child = spawn_group_leader(&self.spec, &launch)?;
        let Some(pid) = child.id() else {
            // Only possible if the child was already reaped, which nobody but us does.
            return Err(SpawnError::Io {
                program: self.spec.program.to_string_lossy().into_owned(),
                source: std::io::Error::other("the child vanished right after spawning"),
            });
        };
        let guard = GroupGuard::new(pid);
        if let Some(stdout) = child.stdout.take() {
            let task = forward_lines(
                stdout,
                Stream::Stdout,
                self.name.clone(),
                generation.0,
                self.recent.clone(),
            );
            actix::spawn(task);
        }
        if let Some(stderr) = child.stderr.take() {
            let task = forward_lines(
                stderr,
                Stream::Stderr,
                self.name.clone(),
                generation.0,
                self.recent.clone(),
            );
            actix::spawn(task);
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
            exited,
            guard,
            stopping: false,
        });
        self.generation = generation;
        tracing::info!(server = %self.name, generation = generation.0, pid, program = ?launch.program, "server spawned");
        Ok(pid)
    }
}

impl Actor for ServerActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(mut child) = self.child.take() {
            tracing::info!(server = %self.name, pid = child.pid, "actor stopped; killing the server's group");
            child.guard.kill_now();
        }
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
        self.starting = true;
        let addr = self.port_addr();
        let check = async move {
            match addr {
                Some(addr) => accepts_connections(addr).await.then_some(addr),
                None => None,
            }
        };
        Box::pin(check.into_actor(self).map(move |taken, act, ctx| {
            act.starting = false;
            if let Some(addr) = taken {
                return Err(SpawnError::PortInUse {
                    port: addr.port(),
                    host: addr.ip(),
                });
            }
            let pid = act.spawn_now(msg.generation, ctx)?;
            Ok(Started {
                generation: msg.generation,
                pid,
                spawn_took: begun.elapsed(),
            })
        }))
    }
}

impl Handler<Stop> for ServerActor {
    type Result = ResponseActFuture<Self, Result<Stopped, StopError>>;

    fn handle(&mut self, msg: Stop, _ctx: &mut Self::Context) -> Self::Result {
        if self.starting {
            return Box::pin(fut::ready(Err(StopError::Busy { doing: "start" })));
        }
        let port = self.port_addr();
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
                            // Keep the guard armed: whatever survived is killed again on drop.
                            Err(_) => child.guard.kill_now(),
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
        if let Some(mut child) = self.child.take() {
            // The leader is gone; kill whatever of its group is left so that the next start
            // does not meet the old workers.
            child.guard.kill_now();
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
        ServerStatus {
            generation: self.generation,
            pid: self.child.as_ref().map(|c| c.pid),
            running: self.child.is_some(),
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
