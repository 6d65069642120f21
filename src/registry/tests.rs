//! Message-level tests of the registry: strategies registered by name, selected in order, built
//! from the supervisor's context; no model server, only a loopback listener that answers 200 so
//! that a supervised URL becomes ready.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler};
use parking_lot::Mutex;
use respawn_backends::{
    Restart, RestartError, RestartReport, ServerActor, ServerExited, ServerSpec,
};
use respawn_core::{Generation, HangCause, StopMode};

use super::*;
use crate::auth::AdminToken;
use crate::deadlock_watch::ProgressMetric;
use crate::supervisor::RestRestart;

/// Bound against hanging forever; the tests wait for events, not for time.
const BOUND: Duration = Duration::from_secs(30);

type Calls = Arc<Mutex<Vec<(&'static str, Restart)>>>;

/// A strategy that records each `Restart` it is asked and succeeds (the new generation confirmed
/// ready) or fails as told.
struct Recording {
    name: &'static str,
    calls: Calls,
    fail: bool,
}

impl Actor for Recording {
    type Context = Context<Self>;
}

impl Handler<Restart> for Recording {
    type Result = Result<RestartReport, RestartError>;

    fn handle(&mut self, msg: Restart, _ctx: &mut Self::Context) -> Self::Result {
        self.calls.lock().push((self.name, msg));
        if self.fail {
            return Err(RestartError::Invalid("told to fail"));
        }
        Ok(RestartReport {
            guardian_pid: None,
            strategy: self.name,
            pid: None,
            ready_confirmed: true,
            steps: Vec::new(),
            total: Duration::ZERO,
        })
    }
}

/// Registers a [`Recording`] strategy under `name`; returns what its constructor was given (the
/// server's name and health URL, once per supervisor built with it).
fn register(
    registry: &mut Registry,
    name: &'static str,
    calls: &Calls,
    fail: bool,
) -> Arc<Mutex<Vec<(String, String)>>> {
    let built = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&built);
    let calls = Arc::clone(calls);
    registry
        .register_strategy(name, move |context| {
            seen.lock().push((
                context.server_name().to_owned(),
                context.health_url().to_owned(),
            ));
            Ok(Recording {
                name,
                calls: Arc::clone(&calls),
                fail,
            }
            .start()
            .recipient())
        })
        .expect("a new name");
    built
}

/// A listener that answers every request `200 {}` and closes: a healthy server, as the health
/// prober sees it.
fn healthy_listener() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        }
    });
    addr
}

fn url_target(addr: SocketAddr) -> Target {
    Target::Url {
        base_url: format!("http://{addr}"),
    }
}

fn config(name: &str, strategies: &[&str]) -> SupervisorConfig {
    let mut config = SupervisorConfig::new(name);
    config.core.health.interval = Duration::from_millis(50);
    config.core.health.startup_timeout = BOUND;
    config.core.progress.canary_interval = Duration::ZERO;
    config.progress_metric = ProgressMetric::Off;
    config.restart_strategies = Some(strategies.iter().map(|s| (*s).to_owned()).collect());
    config
}

/// Restarts `supervisor` by hand and waits until the next generation is ready.
async fn restart_and_wait(supervisor: &Supervisor) -> Generation {
    supervisor.wait_ready(BOUND).await.expect("ready");
    let replaced = supervisor.restart().await.expect("the coordinator answers");
    let mut state = supervisor.state();
    crate::state::wait_ready(&mut state, replaced.next(), BOUND)
        .await
        .expect("the next generation is ready")
}

#[actix::test]
async fn a_registered_strategy_selected_by_name_is_called_with_the_supervisors_context() {
    let addr = healthy_listener();
    let calls = Calls::default();
    let mut registry = Registry::new();
    let built = register(&mut registry, "orchestrator", &calls, false);

    let supervisor = registry
        .start(config("llm", &["orchestrator"]), url_target(addr))
        .expect("start");
    assert_eq!(supervisor.strategy_names(), ["orchestrator"]);
    assert_eq!(
        *built.lock(),
        [("llm".to_owned(), format!("http://{addr}/health"))]
    );
    let ready = restart_and_wait(&supervisor).await;

    assert_eq!(ready, Generation(2));
    assert_eq!(
        *calls.lock(),
        [(
            "orchestrator",
            Restart {
                hung: Generation(1),
                next: Generation(2),
                cause: HangCause::Manual,
                stop: StopMode::Graceful,
            }
        )]
    );
    let kept = registry
        .get("llm")
        .expect("the registry keeps what it started");
    assert_eq!(kept.strategy_names(), ["orchestrator"]);
    supervisor.stop(Duration::from_secs(1)).await;
}

#[actix::test]
async fn strategies_are_asked_in_the_named_order_and_a_failing_one_falls_through() {
    let addr = healthy_listener();
    let calls = Calls::default();
    let mut registry = Registry::new();
    register(&mut registry, "refuses", &calls, true);
    register(&mut registry, "restarts", &calls, false);
    register(&mut registry, "spare", &calls, false);

    let first = registry
        .start(
            config("first", &["refuses", "restarts", "spare"]),
            url_target(addr),
        )
        .expect("start");
    restart_and_wait(&first).await;
    let asked: Vec<&str> = calls.lock().iter().map(|(name, _)| *name).collect();
    assert_eq!(asked, ["refuses", "restarts"], "the spare is never asked");
    let error = first
        .state()
        .borrow()
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(error.starts_with("refuses: "), "{error}");

    // Another supervisor of the same registry, the same strategies in another order.
    calls.lock().clear();
    let second = registry
        .start(config("second", &["spare", "refuses"]), url_target(addr))
        .expect("start");
    restart_and_wait(&second).await;
    let asked: Vec<&str> = calls.lock().iter().map(|(name, _)| *name).collect();
    assert_eq!(asked, ["spare"]);

    assert_eq!(registry.names().collect::<Vec<_>>(), ["first", "second"]);
    first.stop(Duration::from_secs(1)).await;
    second.stop(Duration::from_secs(1)).await;
}

#[actix::test]
async fn an_unknown_name_is_refused_with_the_registered_names_before_anything_is_built() {
    let calls = Calls::default();
    let mut registry = Registry::new();
    let built = register(&mut registry, "orchestrator", &calls, false);

    let err = registry
        .start(
            config("llm", &["orchestrator", "proces_kill"]),
            url_target(SocketAddr::from(([127, 0, 0, 1], 9))),
        )
        .expect_err("an unknown name");

    let RegistryError::Supervisor(SupervisorError::Strategy(SelectionError::Unknown {
        name,
        registered,
    })) = &err
    else {
        panic!("not an unknown strategy: {err:?}");
    };
    assert_eq!(name, "proces_kill");
    assert_eq!(
        registered,
        &["process_kill", "rest_endpoint", "command", "orchestrator"]
    );
    let message = err.to_string();
    assert!(
        message.contains("`proces_kill`")
            && message.contains("process_kill, rest_endpoint, command, orchestrator"),
        "{message}"
    );
    assert!(built.lock().is_empty(), "no strategy was built");
    assert!(registry.is_empty(), "no supervisor was kept");
}

#[actix::test]
async fn a_selection_must_name_each_strategy_once_and_each_must_apply() {
    let registry = Registry::new();
    let target = url_target(SocketAddr::from(([127, 0, 0, 1], 9)));
    let start = |names: &[&str]| {
        Supervisor::start_with(registry.strategies(), config("llm", names), target.clone())
            .expect_err("refused")
    };
    assert!(matches!(
        start(&["command", "command"]),
        SupervisorError::Strategy(SelectionError::Duplicate { name }) if name == "command"
    ));
    assert!(matches!(
        start(&[]),
        SupervisorError::Strategy(SelectionError::Empty { .. })
    ));
    let err = start(&["process_kill"]);
    assert!(
        matches!(&err, SupervisorError::Strategy(SelectionError::NotApplicable { name, .. }) if name == &"process_kill"),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not own"), "{err}");
    let err = start(&["rest_endpoint"]);
    assert!(
        err.to_string().contains("no REST restart endpoint"),
        "{err}"
    );
}

#[test]
fn a_strategy_name_is_registered_once_and_must_be_writable_in_a_list() {
    let mut registry = Registry::new();
    let constructor = |_: &StrategyContext<'_>| -> Result<RestartRecipient, NotApplicable> {
        Err(NotApplicable::new("never built"))
    };
    for taken in ["process_kill", "rest_endpoint", "command"] {
        assert!(matches!(
            registry.register_strategy(taken, constructor),
            Err(RegistryError::Strategy(RegistrationError::Duplicate { name })) if name == taken
        ));
    }
    for invalid in ["", "a,b", "with space"] {
        assert!(matches!(
            registry.register_strategy(invalid, constructor),
            Err(RegistryError::Strategy(
                RegistrationError::InvalidName { .. }
            ))
        ));
    }
    registry
        .register_strategy("k8s-rollout", constructor)
        .expect("a new name");
    assert_eq!(
        registry.strategies().names().collect::<Vec<_>>(),
        ["process_kill", "rest_endpoint", "command", "k8s-rollout"]
    );
}

#[actix::test]
async fn a_taken_supervisor_name_is_refused_before_anything_is_built() {
    let addr = healthy_listener();
    let calls = Calls::default();
    let mut registry = Registry::new();
    let built = register(&mut registry, "orchestrator", &calls, false);
    let first = registry
        .start(config("llm", &["orchestrator"]), url_target(addr))
        .expect("start");
    let err = registry
        .start(config("llm", &["orchestrator"]), url_target(addr))
        .expect_err("the name is taken");
    assert!(
        matches!(&err, RegistryError::DuplicateName { name } if name == "llm"),
        "{err:?}"
    );
    assert_eq!(built.lock().len(), 1, "only the first supervisor was built");
    first.stop(Duration::from_secs(1)).await;
}

/// Receives the exits of a server that is never started.
struct NoExits;

impl Actor for NoExits {
    type Context = Context<Self>;
}

impl Handler<ServerExited> for NoExits {
    type Result = ();

    fn handle(&mut self, _msg: ServerExited, _ctx: &mut Self::Context) {}
}

/// The default selection's names for `config` and `target`, built as a supervisor would build
/// them (with an owned server's actor, never asked to start, for a command target).
fn default_names(config: &SupervisorConfig, target: &Target) -> Vec<&'static str> {
    let server = match target {
        Target::Command(spec) => {
            Some(ServerActor::new((**spec).clone(), NoExits.start().recipient()).start())
        }
        Target::Url { .. } => None,
    };
    let base_url = target.base_url();
    let health_url = format!("{base_url}/health");
    Strategies::builtin()
        .build(
            None,
            &StrategyContext {
                config,
                target,
                server: server.as_ref(),
                base_url: &base_url,
                health_url: &health_url,
            },
        )
        .expect("the default selection")
        .iter()
        .map(|strategy| strategy.name)
        .collect()
}

#[actix::test]
async fn without_names_the_built_ins_that_apply_are_asked_in_the_default_order() {
    let owned = Target::Command(Box::new(ServerSpec::new(
        "llm",
        "model-server",
        Vec::<std::ffi::OsString>::new(),
        8001,
    )));
    let not_owned = url_target(SocketAddr::from(([127, 0, 0, 1], 8001)));
    let mut bare = SupervisorConfig::new("llm");
    bare.restart_strategies = None;
    let mut full = bare.clone();
    full.rest_restart = Some(RestRestart {
        url: "http://127.0.0.1:8001/restart".to_owned(),
        token: AdminToken::new("token").expect("token"),
    });
    full.restart_command = Some(vec!["systemctl".into(), "restart".into(), "vllm".into()]);
    let mut command_only = bare.clone();
    command_only.restart_command = full.restart_command.clone();

    assert_eq!(default_names(&bare, &owned), ["process_kill"]);
    assert_eq!(
        default_names(&full, &owned),
        ["process_kill", "rest_endpoint", "command"]
    );
    assert_eq!(
        default_names(&full, &not_owned),
        ["rest_endpoint", "command"]
    );
    assert_eq!(default_names(&command_only, &not_owned), ["command"]);
    assert!(default_names(&bare, &not_owned).is_empty());
    assert!(matches!(
        Supervisor::start(bare, not_owned),
        Err(SupervisorError::NoStrategy { .. })
    ));
}
