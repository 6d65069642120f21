//! Message-level tests of the coordinator with simulated hangs: no processes, fake strategies,
//! and tokio's paused clock where waiting is involved, so a backoff of seconds costs no wall time.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use parking_lot::Mutex;
use respawn_backends::{Restart, RestartError, RestartReport};
use respawn_core::{
    BackoffConfig, CoreConfig, Fingerprint, Generation, Hang, HangCause, IntensityConfig, Phase,
    ProbeAnswer, RestartPolicyConfig,
};
use tokio::sync::watch;

use super::*;
use crate::in_flight::InFlight;
use crate::messages::{HangReport, ProbeResult, RestartNow, Watch};
use crate::metrics::Metrics;
use crate::state::{Clock, SharedSnapshot, SupervisorState};

/// A restart strategy that records every call and answers as told.
struct FakeStrategy {
    calls: Arc<Mutex<Vec<(Restart, tokio::time::Instant)>>>,
    fail: bool,
    delay: Duration,
}

impl Actor for FakeStrategy {
    type Context = Context<Self>;
}

impl Handler<Restart> for FakeStrategy {
    type Result = ResponseFuture<Result<RestartReport, RestartError>>;

    fn handle(&mut self, msg: Restart, _ctx: &mut Self::Context) -> Self::Result {
        self.calls.lock().push((msg, tokio::time::Instant::now()));
        let fail = self.fail;
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if fail {
                Err(RestartError::Timeout {
                    what: "the restart request",
                    after: delay,
                })
            } else {
                Ok(RestartReport {
                    strategy: "fake",
                    pid: Some(1000 + msg.next.get() as u32),
                    guardian_pid: None,
                    ready_confirmed: false,
                    steps: Vec::new(),
                    total: delay,
                })
            }
        })
    }
}

/// Records the generations the health actor is told to watch.
struct FakeHealth {
    watched: Arc<Mutex<Vec<Generation>>>,
}

impl Actor for FakeHealth {
    type Context = Context<Self>;
}

impl Handler<Watch> for FakeHealth {
    type Result = ();

    fn handle(&mut self, msg: Watch, _ctx: &mut Self::Context) {
        self.watched.lock().push(msg.generation);
    }
}

type Calls = Arc<Mutex<Vec<(Restart, tokio::time::Instant)>>>;

struct Harness {
    coordinator: Addr<RestartCoordinator>,
    state: watch::Receiver<SupervisorState>,
    snapshot: Arc<SharedSnapshot>,
    clock: Clock,
    in_flight: Arc<InFlight>,
    watched: Arc<Mutex<Vec<Generation>>>,
}

fn strategy(fail: bool, delay: Duration) -> (Strategy, Calls) {
    let calls: Calls = Arc::new(Mutex::new(Vec::new()));
    let actor = FakeStrategy {
        calls: Arc::clone(&calls),
        fail,
        delay,
    }
    .start();
    (
        Strategy {
            name: if fail { "failing" } else { "fake" },
            recipient: actor.recipient(),
        },
        calls,
    )
}

fn policy(max_restarts: u32) -> RestartPolicyConfig {
    RestartPolicyConfig {
        backoff: BackoffConfig {
            base: Duration::from_millis(500),
            factor: 2,
            cap: Duration::from_secs(30),
            jitter_percent: 0,
            scale_with_startup: false,
        },
        intensity: IntensityConfig {
            max_restarts,
            window: Duration::from_secs(600),
        },
        stable_after: Duration::from_secs(60),
    }
}

fn harness(strategies: Vec<Strategy>, max_restarts: u32, enable_restart: bool) -> Harness {
    let (state_tx, state) = crate::state::channel();
    let watched = Arc::new(Mutex::new(Vec::new()));
    let health = FakeHealth {
        watched: Arc::clone(&watched),
    }
    .start();
    let clock = Clock::new();
    let snapshot = SharedSnapshot::with_clock(clock);
    let in_flight = InFlight::with_clock(clock);
    let parts = CoordinatorParts {
        strategies,
        server: None,
        health: health.recipient(),
        state: state_tx,
        snapshot: Arc::clone(&snapshot),
        clock,
        metrics: Arc::new(Metrics::default()),
        in_flight: Arc::clone(&in_flight),
        pool: None,
    };
    let config = CoordinatorConfig {
        name: "test".to_owned(),
        core: CoreConfig {
            policy: policy(max_restarts),
            poison_threshold: 2,
            ..CoreConfig::default()
        },
        enable_restart,
    };
    let coordinator = RestartCoordinator::new(config, parts)
        .expect("valid policy")
        .start();
    Harness {
        coordinator,
        state,
        snapshot,
        clock,
        in_flight,
        watched,
    }
}

/// Lets the actors process what is queued.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
        actix::clock::sleep(Duration::from_millis(1)).await;
    }
}

impl Harness {
    fn phase(&self) -> Phase {
        self.state.borrow().phase
    }

    fn generation(&self) -> Generation {
        self.state.borrow().generation
    }

    /// A detector reports that `generation` hung.
    fn report(&self, generation: Generation, cause: HangCause) {
        self.coordinator
            .do_send(HangReport(Hang::new(generation, cause)));
    }

    /// A health probe of `generation` got `answer`.
    fn probe(&self, generation: Generation, answer: ProbeAnswer) {
        self.coordinator.do_send(ProbeResult {
            generation,
            answer,
            body_head: None,
        });
    }

    /// `generation` answers its health check.
    async fn ready(&self, generation: Generation) {
        self.probe(generation, ProbeAnswer::Status(200));
        settle().await;
    }
}

#[actix::test]
async fn first_generation_is_watched_and_becomes_ready() {
    let (s, _calls) = strategy(false, Duration::ZERO);
    let h = harness(vec![s], 5, true);
    settle().await;
    assert_eq!(h.generation(), Generation(1));
    assert_eq!(h.phase(), Phase::Starting);
    assert_eq!(*h.watched.lock(), vec![Generation(1)]);
    h.ready(Generation(1)).await;
    assert_eq!(h.phase(), Phase::Ready);
}

#[actix::test]
async fn a_thousand_concurrent_hang_reports_cause_one_restart() {
    let (s, calls) = strategy(false, Duration::from_millis(5));
    let h = harness(vec![s], 5, true);
    settle().await;
    h.ready(Generation(1)).await;
    let mut sends = Vec::new();
    for i in 0..1000 {
        let cause = if i % 2 == 0 {
            HangCause::FirstByteTimeout
        } else {
            HangCause::StreamStall
        };
        sends.push(
            h.coordinator
                .send(HangReport(Hang::new(Generation(1), cause))),
        );
    }
    for send in sends {
        send.await.expect("coordinator alive");
    }
    settle().await;
    actix::clock::sleep(Duration::from_millis(20)).await;
    settle().await;
    assert_eq!(calls.lock().len(), 1, "one freeze is one restart");
    assert_eq!(h.generation(), Generation(2));
    assert_eq!(h.state.borrow().restarts, 1);
    assert_eq!(h.state.borrow().pid, Some(1002));
    h.ready(Generation(2)).await;
    assert_eq!(h.phase(), Phase::Ready);
    let last = h.state.borrow().last_restart.clone().expect("recorded");
    assert!(matches!(
        last.cause,
        HangCause::FirstByteTimeout | HangCause::StreamStall
    ));
}

#[actix::test]
async fn a_report_from_an_old_generation_is_ignored() {
    let (s, calls) = strategy(false, Duration::ZERO);
    let h = harness(vec![s], 5, true);
    settle().await;
    h.ready(Generation(1)).await;
    h.report(Generation(1), HangCause::HealthProbes);
    settle().await;
    h.ready(Generation(2)).await;
    assert_eq!(calls.lock().len(), 1);
    // A request that was sent to generation 1 times out late: stale, no second restart.
    h.report(Generation(1), HangCause::FirstByteTimeout);
    settle().await;
    assert_eq!(calls.lock().len(), 1);
    assert_eq!(h.phase(), Phase::Ready);
    assert_eq!(h.generation(), Generation(2));
}

#[actix::test]
async fn failed_health_probes_restart_the_server() {
    let (s, calls) = strategy(false, Duration::ZERO);
    let h = harness(vec![s], 5, true);
    settle().await;
    h.ready(Generation(1)).await;
    for _ in 0..3 {
        h.probe(Generation(1), ProbeAnswer::TimedOut);
    }
    settle().await;
    assert_eq!(calls.lock().len(), 1);
    assert_eq!(calls.lock()[0].0.cause, HangCause::HealthProbes);
    // A server that stopped answering probes would not honour SIGTERM: no grace.
    assert_eq!(calls.lock()[0].0.stop, respawn_core::StopMode::Kill);
    assert_eq!(h.state.borrow().last_cause, Some(HangCause::HealthProbes));
    assert_eq!(*h.watched.lock(), vec![Generation(1), Generation(2)]);
}

#[actix::test]
async fn a_failing_strategy_falls_through_to_the_next() {
    let (failing, failing_calls) = strategy(true, Duration::from_millis(5));
    let (working, working_calls) = strategy(false, Duration::ZERO);
    let h = harness(vec![failing, working], 5, true);
    settle().await;
    h.ready(Generation(1)).await;
    h.report(Generation(1), HangCause::FirstByteTimeout);
    settle().await;
    actix::clock::sleep(Duration::from_millis(20)).await;
    settle().await;
    assert_eq!(failing_calls.lock().len(), 1);
    assert_eq!(working_calls.lock().len(), 1);
    assert_eq!(h.generation(), Generation(2));
    let error = h.state.borrow().last_error.clone().unwrap_or_default();
    assert!(error.starts_with("failing:"), "{error}");
}

#[actix::test]
async fn a_crash_loop_backs_off_and_ends_failed() {
    tokio::time::pause();
    let (s, calls) = strategy(false, Duration::ZERO);
    let h = harness(vec![s], 3, true);
    settle().await;
    h.ready(Generation(1)).await;
    h.coordinator.do_send(respawn_backends::ServerExited {
        generation: Generation(1),
        pid: 1,
        status: respawn_backends::ExitInfo::Code(1),
    });
    settle().await;
    // Every new generation dies as soon as it is spawned.
    let mut seen = Generation(1);
    for _ in 0..2000 {
        let generation = h.generation();
        if generation != seen {
            seen = generation;
            h.coordinator.do_send(respawn_backends::ServerExited {
                generation,
                pid: 1,
                status: respawn_backends::ExitInfo::Code(1),
            });
        }
        settle().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if h.phase() == Phase::Failed {
            break;
        }
    }
    assert_eq!(h.phase(), Phase::Failed, "the crash loop must end");
    let calls = calls.lock();
    assert_eq!(calls.len(), 3, "no more restarts than the intensity limit");
    // The first restart is immediate; the following ones wait longer and longer.
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert!(
        gaps[0] >= Duration::from_millis(500),
        "backoff waits: {gaps:?}"
    );
    assert!(gaps[1] > gaps[0], "backoff grows: {gaps:?}");
    let reason = h.state.borrow().last_error.clone().unwrap_or_default();
    assert!(!reason.is_empty());
}

#[actix::test]
async fn a_request_at_two_hangs_goes_on_trial_and_a_hang_during_its_trial_quarantines_it() {
    tokio::time::pause();
    let (s, _calls) = strategy(false, Duration::ZERO);
    let h = harness(vec![s], 5, true);
    settle().await;
    h.ready(Generation(1)).await;
    let poison = Fingerprint(42);
    let innocent = Fingerprint(7);
    let _p = h.in_flight.enter(poison);
    {
        let _i = h.in_flight.enter(innocent);
        h.report(Generation(1), HangCause::FirstByteTimeout);
        settle().await;
    }
    // The verdicts are published with the snapshot, for the request path.
    assert_ne!(h.snapshot.load().poison_epoch, 0);
    assert_eq!(h.snapshot.poison().strikes(poison), 1);
    h.ready(Generation(2)).await;
    h.report(Generation(2), HangCause::FirstByteTimeout);
    settle().await;
    let now = h.clock.now();
    assert_eq!(
        h.snapshot.poison().admit(poison, now, false),
        respawn_core::Admission::Trial,
        "present at two hangs: on trial, not quarantined"
    );
    // The second restart waits out its backoff.
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    h.ready(Generation(3)).await;
    h.coordinator.do_send(crate::messages::TrialStarted {
        fingerprint: poison,
    });
    h.report(Generation(3), HangCause::FirstByteTimeout);
    settle().await;
    let now = h.clock.now();
    assert!(h.snapshot.poison().is_quarantined(poison, now));
    assert!(!h.snapshot.poison().is_quarantined(innocent, now));
    assert_eq!(
        h.coordinator
            .send(crate::messages::ClearQuarantine)
            .await
            .expect("alive"),
        1
    );
    settle().await;
    assert!(!h.snapshot.poison().is_quarantined(poison, h.clock.now()));
}

#[actix::test]
async fn with_restarts_disabled_a_hang_is_reported_only() {
    let (s, calls) = strategy(false, Duration::ZERO);
    let h = harness(vec![s], 5, false);
    settle().await;
    h.ready(Generation(1)).await;
    h.report(Generation(1), HangCause::CanaryTimeout);
    settle().await;
    assert!(calls.lock().is_empty());
    assert_eq!(h.state.borrow().last_cause, Some(HangCause::CanaryTimeout));
    assert_eq!(h.generation(), Generation(1));
    // The next hang is reported too, and the same generation stays watched.
    h.report(Generation(1), HangCause::FirstByteTimeout);
    settle().await;
    assert!(calls.lock().is_empty());
    assert_eq!(
        h.state.borrow().last_cause,
        Some(HangCause::FirstByteTimeout)
    );
    assert_eq!(
        *h.watched.lock(),
        vec![Generation(1), Generation(1), Generation(1)]
    );
}

#[actix::test]
async fn manual_restart_answers_the_replaced_generation() {
    let (s, calls) = strategy(false, Duration::ZERO);
    let h = harness(vec![s], 5, true);
    settle().await;
    h.ready(Generation(1)).await;
    let replaced = h
        .coordinator
        .send(RestartNow {
            by: respawn_core::OperatorRestart::Manual,
        })
        .await
        .expect("alive");
    assert_eq!(replaced, Generation(1));
    settle().await;
    assert_eq!(calls.lock()[0].0.cause, HangCause::Manual);
    // An operator's restart of a healthy server keeps the grace.
    assert_eq!(calls.lock()[0].0.stop, respawn_core::StopMode::Graceful);
    assert_eq!(h.generation(), Generation(2));
}

#[actix::test]
async fn startup_timeout_of_a_new_generation_restarts_it_again() {
    tokio::time::pause();
    let (s, calls) = strategy(false, Duration::ZERO);
    let h = harness(vec![s], 5, true);
    settle().await;
    h.ready(Generation(1)).await;
    h.report(Generation(1), HangCause::HealthProbes);
    settle().await;
    assert_eq!(h.generation(), Generation(2));
    // Generation 2 never answers: when a probe finds the startup budget spent, it is a hang.
    tokio::time::sleep(Duration::from_secs(600)).await;
    h.probe(Generation(2), ProbeAnswer::NoConnection);
    settle().await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    settle().await;
    assert_eq!(calls.lock().len(), 2);
    assert_eq!(h.generation(), Generation(3));
    let error = h.state.borrow().last_error.clone().unwrap_or_default();
    assert!(error.contains("600s"), "{error}");
}

/// A TCP listener that accepts connections and never answers: a frozen server as a client sees it.
fn hung_listener() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(16) {
            match stream {
                Ok(stream) => held.push(stream),
                Err(_) => break,
            }
        }
    });
    (addr, handle)
}

fn upstream_for(h: &Harness, base_url: String, retries: u32) -> crate::upstream::Upstream {
    upstream_with(h, base_url, retries, Duration::from_millis(200))
}

fn upstream_with(
    h: &Harness,
    base_url: String,
    retries: u32,
    request_timeout: Duration,
) -> crate::upstream::Upstream {
    let shared = Arc::new(crate::upstream::UpstreamShared {
        config: crate::upstream::UpstreamConfig {
            base_url,
            request: respawn_core::RequestConfig {
                retry: respawn_core::RetryConfig {
                    max_retries: retries,
                    base_delay: Duration::from_millis(10),
                    max_delay: Duration::from_millis(100),
                },
                deadlines: respawn_core::StreamDeadlines {
                    first_byte: request_timeout,
                    between_chunks: Duration::from_millis(200),
                    ..respawn_core::StreamDeadlines::default()
                },
                life_window: Duration::from_secs(15),
                enable_restart: true,
            },
            wait_bound: Duration::from_secs(10),
            resume: respawn_core::ResumeConfig::default(),
        },
        state: h.state.clone(),
        snapshot: Arc::clone(&h.snapshot),
        clock: h.clock,
        coordinator: h.coordinator.clone(),
        metrics: Arc::new(Metrics::default()),
        in_flight: Arc::clone(&h.in_flight),
        replica: 0,
    });
    crate::upstream::Upstream::new(shared)
}

#[actix::test]
async fn a_request_without_a_first_byte_reports_a_hang_and_waits_for_the_next_generation() {
    let (addr, _listener) = hung_listener();
    let (s, calls) = strategy(false, Duration::ZERO);
    let h = harness(vec![s], 5, true);
    settle().await;
    h.ready(Generation(1)).await;
    let upstream = upstream_for(&h, format!("http://{addr}"), 1);
    let out = crate::upstream::Outgoing {
        method: actix_web::http::Method::POST,
        path_and_query: actix_web::http::uri::PathAndQuery::from_static("/v1/completions"),
        headers: actix_web::http::header::HeaderMap::new(),
        body: bytes::Bytes::from_static(b"{}"),
    };
    let coordinator_side = async {
        // Each generation is brought up as soon as it is started (for at most 30 s, a bound
        // against a hung test only).
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < until {
            let generation = h.generation();
            if h.phase() == Phase::Starting && generation > Generation(1) {
                h.ready(generation).await;
            }
            actix::clock::sleep(Duration::from_millis(10)).await;
        }
    };
    let mut plan = upstream.plan();
    let mut id = crate::upstream::Identity::new(Fingerprint(1));
    let result = tokio::select! {
        result = upstream.deliver(&out, &mut id, &mut plan, Generation::NONE) => result,
        () = coordinator_side => panic!("deliver never finished"),
    };
    let err = result.err().expect("the server never answers");
    assert_eq!(err.status(), 504);
    // The second restart of a streak waits for the backoff (500 ms here).
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while calls.lock().len() < 2 && tokio::time::Instant::now() < until {
        actix::clock::sleep(Duration::from_millis(20)).await;
    }
    let calls = calls.lock();
    assert_eq!(calls.len(), 2, "each hung generation was restarted once");
    assert_eq!(calls[0].0.hung, Generation(1));
    assert_eq!(calls[1].0.hung, Generation(2));
    assert!(calls
        .iter()
        .all(|(r, _)| r.cause == HangCause::FirstByteTimeout));
}

/// The plan of a request to generation 1 whose head and first chunk already reached the client.
fn streaming_plan(h: &Harness) -> respawn_core::RequestPlan {
    let mut plan = respawn_core::RequestPlan::new(respawn_core::RequestConfig::default());
    plan.begin(h.clock.now(), Generation(1));
    plan.on_chunk(h.clock.now());
    plan.reached_client();
    plan
}

#[actix::test]
async fn a_stalled_stream_reports_a_hang_and_ends_with_an_error_event() {
    use futures_util::StreamExt;
    tokio::time::pause();
    let (s, calls) = strategy(false, Duration::ZERO);
    let h = harness(vec![s], 5, true);
    settle().await;
    h.ready(Generation(1)).await;
    let inner = futures_util::stream::iter(vec![Ok::<_, awc::error::PayloadError>(
        bytes::Bytes::from_static(b"data: {\"x\":2}\n\n"),
    )])
    .chain(futures_util::stream::pending());
    let watch = crate::proxy::watched_body::BodyWatch {
        plan: streaming_plan(&h),
        shared: Arc::clone(watch_shared(&h).shared()),
        sse: true,
        identity: crate::upstream::Identity::entered(
            Fingerprint(9),
            h.in_flight.enter(Fingerprint(9)),
        ),
        suspect: None,
        completeness: crate::proxy::watched_body::Completeness::default(),
    };
    let mut body = crate::proxy::watched_body::WatchedBody::new(
        Some(bytes::Bytes::from_static(b"data: {\"x\":1}\n\n")),
        Box::pin(inner),
        watch,
    );
    let mut chunks = Vec::new();
    while let Some(chunk) = body.next().await {
        chunks.push(chunk.expect("sse errors are events"));
    }
    assert_eq!(chunks.len(), 3);
    assert!(std::str::from_utf8(&chunks[2])
        .expect("utf8")
        .starts_with("event: error"));
    settle().await;
    assert_eq!(calls.lock().len(), 1);
    assert_eq!(calls.lock()[0].0.cause, HangCause::StreamStall);
    drop(body);
    assert_eq!(
        h.in_flight.count(),
        0,
        "the request leaves the in-flight table with its body"
    );
}

#[actix::test]
async fn the_rest_strategy_fails_fast_on_a_hung_server_and_the_command_strategy_takes_over() {
    let (addr, _listener) = hung_listener();
    let mut rest = respawn_backends::RestEndpoint::new(
        format!("http://{addr}/restart"),
        "secret-token",
        format!("http://{addr}/health"),
    );
    rest.request_timeout = Duration::from_millis(300);
    let command = respawn_backends::CommandRestart::new(["true"], None);
    let strategies = vec![
        Strategy {
            name: "rest_endpoint",
            recipient: rest.start().recipient(),
        },
        Strategy {
            name: "command",
            recipient: command.start().recipient(),
        },
    ];
    let h = harness(strategies, 5, true);
    settle().await;
    h.ready(Generation(1)).await;
    h.report(Generation(1), HangCause::HealthProbes);
    let mut state = h.state.clone();
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if state.borrow_and_update().generation == Generation(2) {
                break;
            }
            if state.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "the command strategy restarted the server");
    let error = h.state.borrow().last_error.clone().unwrap_or_default();
    assert!(error.starts_with("rest_endpoint:"), "{error}");
    assert!(
        error.contains("within 300ms"),
        "the REST strategy gave up on its own short timeout: {error}"
    );
}

/// A sender's shared parts for a body watched in these tests (the server's address unused).
fn watch_shared(h: &Harness) -> crate::upstream::Upstream {
    upstream_for(h, "http://127.0.0.1:9".to_owned(), 0)
}

async fn drain_body(
    h: &Harness,
    chunks: Vec<&'static [u8]>,
    completeness: crate::proxy::watched_body::Completeness,
    sse: bool,
) -> Vec<Result<bytes::Bytes, String>> {
    use futures_util::StreamExt;
    let inner = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, awc::error::PayloadError>(bytes::Bytes::from_static(c)))
            .collect::<Vec<_>>(),
    );
    let watch = crate::proxy::watched_body::BodyWatch {
        plan: streaming_plan(h),
        shared: Arc::clone(watch_shared(h).shared()),
        sse,
        identity: crate::upstream::Identity::entered(
            Fingerprint(3),
            h.in_flight.enter(Fingerprint(3)),
        ),
        suspect: None,
        completeness,
    };
    let mut body = crate::proxy::watched_body::WatchedBody::new(None, Box::pin(inner), watch);
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.push(chunk.map_err(|e| e.to_string()));
    }
    out
}

#[actix::test]
async fn an_event_stream_cut_before_done_ends_with_an_error_event() {
    let (s, calls) = strategy(false, Duration::ZERO);
    let h = harness(vec![s], 5, true);
    settle().await;
    let completeness = crate::proxy::watched_body::Completeness {
        length: None,
        ends_with_done: true,
    };
    let cut = drain_body(&h, vec![b"data: {\"a\":1}\n\n"], completeness, true).await;
    assert_eq!(cut.len(), 2);
    let last = cut[1].as_ref().expect("an event, not an abort");
    assert!(std::str::from_utf8(last)
        .expect("utf8")
        .starts_with("event: error"));
    let whole = drain_body(
        &h,
        vec![b"data: {\"a\":1}\n\n", b"data: [DONE]\n\n"],
        completeness,
        true,
    )
    .await;
    assert_eq!(whole.len(), 2, "a complete stream passes through untouched");
    assert!(whole.iter().all(|c| c.is_ok()));
    settle().await;
    assert!(calls.lock().is_empty(), "a cut stream is not a hang");
}

#[actix::test]
async fn a_body_shorter_than_its_content_length_is_aborted() {
    let (s, _calls) = strategy(false, Duration::ZERO);
    let h = harness(vec![s], 5, true);
    settle().await;
    let completeness = crate::proxy::watched_body::Completeness {
        length: Some(10),
        ends_with_done: false,
    };
    let short = drain_body(&h, vec![b"01234"], completeness, false).await;
    assert_eq!(short.len(), 2);
    assert!(short[1].is_err(), "the client sees an aborted body");
    let full = drain_body(&h, vec![b"01234", b"56789"], completeness, false).await;
    assert!(full.iter().all(|c| c.is_ok()));
}

/// A server whose first connection answers only when released, with the head and first chunk of
/// a stream and then nothing (a server resumed just long enough to start answering before its
/// SIGTERM ends it); every later connection answers `200 gen-2` in full.
fn held_then_cut_server() -> (
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (got_request, request_seen) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (i, stream) in listener.incoming().take(8).enumerate() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            if i == 0 {
                let _ = got_request.send(());
                if released.recv().is_err() {
                    return;
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                      transfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n",
                );
                held.push(stream);
            } else {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\ngen-2");
            }
        }
    });
    (addr, request_seen, release)
}

#[actix::test]
async fn an_answer_that_begins_after_its_generation_is_being_restarted_goes_to_the_next_one() {
    let (addr, request_seen, release) = held_then_cut_server();
    let (s, _calls) = strategy(false, Duration::from_millis(300));
    let h = harness(vec![s], 5, true);
    settle().await;
    h.ready(Generation(1)).await;
    // A first-byte timeout long enough that only the hang report below can end an attempt.
    let upstream = upstream_with(&h, format!("http://{addr}"), 3, Duration::from_secs(60));
    let out = crate::upstream::Outgoing {
        method: actix_web::http::Method::POST,
        path_and_query: actix_web::http::uri::PathAndQuery::from_static("/v1/chat/completions"),
        headers: actix_web::http::header::HeaderMap::new(),
        body: bytes::Bytes::from_static(b"{}"),
    };
    let coordinator_side = async {
        // The request reaches generation 1, which hangs and is being restarted when it starts to
        // answer it.
        tokio::task::spawn_blocking(move || request_seen.recv().expect("the request arrives"))
            .await
            .expect("the server thread");
        h.report(Generation(1), HangCause::HealthProbes);
        let mut state = h.state.clone();
        let _ = state
            .wait_for(|s| s.phase == Phase::Restarting || s.generation > Generation(1))
            .await;
        release.send(()).expect("the server thread waits");
        // Generation 2 comes up as soon as it is started.
        let _ = state
            .wait_for(|s| s.phase == Phase::Starting && s.generation == Generation(2))
            .await;
        h.ready(Generation(2)).await;
        std::future::pending::<()>().await;
    };
    let mut id = crate::upstream::Identity::new(Fingerprint(7));
    let mut plan = upstream.plan();
    let delivered = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            result = upstream.deliver(&out, &mut id, &mut plan, Generation::NONE) => result,
            () = coordinator_side => unreachable!(),
        }
    })
    .await
    .expect("deliver ends")
    .expect("the request is answered");
    assert_eq!(
        delivered.generation,
        Generation(2),
        "the answer generation 1 began while being restarted was not delivered"
    );
    assert_eq!(delivered.first.as_deref(), Some(&b"gen-2"[..]));
}
