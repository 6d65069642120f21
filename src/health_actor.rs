//! The `HealthActor`: probes the server's health path and turns the outcomes, through the core's
//! `HealthTracker`, into `Ready`, `Unhealthy` and `StartupTimedOut` reports for the coordinator.
//!
//! After every start it polls fast (the tracker's readiness cadence starts at tens of
//! milliseconds) so a server that becomes ready is noticed at once, then settles to the steady
//! interval. Probes are scheduled from the start of the previous probe, so a probe that times out
//! does not stretch the period: three failures take about three intervals.

use std::time::Duration;

use actix::prelude::*;
use respawn_core::{Generation, HealthConfig, HealthEvent, HealthTracker, ProbeOutcome};
use tokio::time::Instant;
use tracing::{debug, trace};

use crate::coordinator::{Ready, StartupTimedOut, Unhealthy};

/// Where the health actor's reports go (the coordinator, or a test's recorder).
#[derive(Clone)]
pub struct HealthReports {
    /// `Ready { generation, startup }`.
    pub ready: Recipient<Ready>,
    /// `Unhealthy { generation, failures }`.
    pub unhealthy: Recipient<Unhealthy>,
    /// `StartupTimedOut { generation, after }`.
    pub startup_timed_out: Recipient<StartupTimedOut>,
}

impl HealthReports {
    /// Every report to one actor.
    pub fn to<A>(addr: &Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>>
            + Handler<Ready>
            + Handler<Unhealthy>
            + Handler<StartupTimedOut>,
    {
        Self {
            ready: addr.clone().recipient(),
            unhealthy: addr.clone().recipient(),
            startup_timed_out: addr.clone().recipient(),
        }
    }
}

/// Start watching `generation`, which was just started: poll until it is ready, then keep probing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Watch {
    /// The generation that was just started.
    pub generation: Generation,
}

/// Probes one health URL for the coordinator.
pub struct HealthActor {
    url: String,
    config: HealthConfig,
    tracker: HealthTracker,
    generation: Generation,
    epoch: u64,
    origin: Instant,
    client: Option<awc::Client>,
    reports: HealthReports,
}

impl HealthActor {
    /// A prober for `url` (e.g. `http://127.0.0.1:8001/health`).
    pub fn new(url: String, config: HealthConfig, reports: HealthReports) -> Self {
        let origin = Instant::now();
        Self {
            url,
            config,
            tracker: HealthTracker::new(config, Duration::ZERO),
            generation: Generation(0),
            epoch: 0,
            origin,
            client: None,
            reports,
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn schedule(&mut self, ctx: &mut Context<Self>, delay: Duration) {
        let epoch = self.epoch;
        ctx.run_later(delay, move |act, ctx| {
            if act.epoch == epoch {
                act.probe(ctx);
            }
        });
    }

    fn probe(&mut self, ctx: &mut Context<Self>) {
        let epoch = self.epoch;
        let started = Instant::now();
        let timeout = self.config.timeout;
        let client = self
            .client
            .get_or_insert_with(|| {
                awc::Client::builder()
                    .disable_redirects()
                    .timeout(timeout)
                    .finish()
            })
            .clone();
        let url = self.url.clone();
        let fut = async move { probe_once(&client, &url, timeout).await };
        fut.into_actor(self)
            .map(move |outcome, act, ctx| {
                if act.epoch != epoch {
                    return;
                }
                act.on_outcome(ctx, outcome, started);
            })
            .spawn(ctx);
    }

    fn on_outcome(&mut self, ctx: &mut Context<Self>, outcome: ProbeOutcome, started: Instant) {
        let now = self.now();
        trace!(url = %self.url, ?outcome, "health probe");
        let event = match self.tracker.on_probe(now, outcome) {
            HealthEvent::Nothing => self.tracker.poll(now),
            event => event,
        };
        let generation = self.generation;
        match event {
            HealthEvent::Nothing => {}
            HealthEvent::BecameReady { startup } => {
                self.reports.ready.do_send(Ready {
                    generation,
                    startup,
                });
            }
            HealthEvent::Unresponsive { failures } => {
                debug!(url = %self.url, %generation, failures, "health probes failed in a row");
                self.reports.unhealthy.do_send(Unhealthy {
                    generation,
                    failures,
                });
                // The coordinator takes it from here; probing resumes with the next `Watch`.
                return;
            }
            HealthEvent::StartupTimedOut { after } => {
                self.reports
                    .startup_timed_out
                    .do_send(StartupTimedOut { generation, after });
                return;
            }
        }
        let next = self
            .tracker
            .next_probe_in()
            .saturating_sub(started.elapsed());
        self.schedule(ctx, next);
    }
}

/// One probe: a 2xx answer within the timeout is healthy.
async fn probe_once(client: &awc::Client, url: &str, timeout: Duration) -> ProbeOutcome {
    let attempt = async {
        match client.get(url).send().await {
            Ok(mut response) => {
                let ok = response.status().is_success();
                // Drain the body so the connection can be reused.
                let _ = response.body().limit(64 * 1024).await;
                if ok {
                    ProbeOutcome::Ok
                } else {
                    ProbeOutcome::Failed
                }
            }
            Err(awc::error::SendRequestError::Timeout) => ProbeOutcome::TimedOut,
            Err(_) => ProbeOutcome::Failed,
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => ProbeOutcome::TimedOut,
    }
}

impl Actor for HealthActor {
    type Context = Context<Self>;
}

impl Handler<Watch> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: Watch, ctx: &mut Self::Context) {
        self.epoch = self.epoch.wrapping_add(1);
        self.generation = msg.generation;
        let now = self.now();
        self.tracker.restarted(now);
        // The first probe goes out at once: a server that starts instantly is ready instantly.
        self.schedule(ctx, Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use actix_web::{web, App, HttpResponse, HttpServer};
    use parking_lot::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        events: Arc<Mutex<Vec<String>>>,
    }

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<Ready> for Recorder {
        type Result = ();
        fn handle(&mut self, msg: Ready, _: &mut Self::Context) {
            self.events.lock().push(format!("ready {}", msg.generation));
        }
    }

    impl Handler<Unhealthy> for Recorder {
        type Result = ();
        fn handle(&mut self, msg: Unhealthy, _: &mut Self::Context) {
            self.events.lock().push(format!(
                "unhealthy {} after {}",
                msg.generation, msg.failures
            ));
        }
    }

    impl Handler<StartupTimedOut> for Recorder {
        type Result = ();
        fn handle(&mut self, msg: StartupTimedOut, _: &mut Self::Context) {
            self.events
                .lock()
                .push(format!("startup timed out {}", msg.generation));
        }
    }

    /// A health endpoint that answers until `hang` is set, then never answers.
    fn server(hang: Arc<AtomicBool>) -> std::net::SocketAddr {
        let server = HttpServer::new(move || {
            let hang = Arc::clone(&hang);
            App::new().route(
                "/health",
                web::get().to(move || {
                    let hang = Arc::clone(&hang);
                    async move {
                        if hang.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        HttpResponse::Ok().finish()
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind");
        let addr = server.addrs()[0];
        actix_web::rt::spawn(server.run());
        addr
    }

    fn config() -> HealthConfig {
        HealthConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            unhealthy_after: 3,
            startup_timeout: Duration::from_millis(500),
            ..HealthConfig::default()
        }
    }

    /// Waits for `what` to be recorded; `false` after a bound that is only there to end a test
    /// that would otherwise hang.
    async fn wait_for(events: &Arc<Mutex<Vec<String>>>, what: &str) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if events.lock().iter().any(|e| e == what) {
                return true;
            }
            actix::clock::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[actix::test]
    async fn probes_report_ready_then_unhealthy_when_the_server_stops_answering() {
        let hang = Arc::new(AtomicBool::new(false));
        let addr = server(Arc::clone(&hang));
        let recorder = Recorder::default();
        let events = Arc::clone(&recorder.events);
        let recorder = recorder.start();
        // The in-process server shares a loaded machine with every other test of this binary:
        // its first answer may take a while, and that is not what this test is about.
        let config = HealthConfig {
            startup_timeout: Duration::from_secs(30),
            ..config()
        };
        let health = HealthActor::new(
            format!("http://{addr}/health"),
            config,
            HealthReports::to(&recorder),
        )
        .start();
        health.do_send(Watch {
            generation: Generation(1),
        });
        assert!(wait_for(&events, "ready 1").await, "{:?}", events.lock());
        hang.store(true, Ordering::SeqCst);
        assert!(
            wait_for(&events, "unhealthy 1 after 3").await,
            "{:?}",
            events.lock()
        );
        // Reported once: the coordinator takes over.
        actix::clock::sleep(Duration::from_millis(400)).await;
        let unhealthy = events
            .lock()
            .iter()
            .filter(|e| e.starts_with("unhealthy"))
            .count();
        assert_eq!(unhealthy, 1);
    }

    #[actix::test]
    async fn a_server_that_never_answers_times_out_its_startup() {
        // A port with nothing listening: every probe fails, the startup budget runs out.
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let recorder = Recorder::default();
        let events = Arc::clone(&recorder.events);
        let recorder = recorder.start();
        let health = HealthActor::new(
            format!("http://127.0.0.1:{port}/health"),
            config(),
            HealthReports::to(&recorder),
        )
        .start();
        health.do_send(Watch {
            generation: Generation(4),
        });
        assert!(
            wait_for(&events, "startup timed out 4").await,
            "{:?}",
            events.lock()
        );
        assert!(!events.lock().iter().any(|e| e.starts_with("ready")));
    }
}
