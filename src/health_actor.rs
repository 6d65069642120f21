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

use crate::coordinator::{Ready, RestartCoordinator, StartupTimedOut, Unhealthy};

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
    coordinator: Addr<RestartCoordinator>,
}

impl HealthActor {
    /// A prober for `url` (e.g. `http://127.0.0.1:8001/health`) reporting to `coordinator`.
    pub fn new(url: String, config: HealthConfig, coordinator: Addr<RestartCoordinator>) -> Self {
        let origin = Instant::now();
        Self {
            url,
            config,
            tracker: HealthTracker::new(config, Duration::ZERO),
            generation: Generation(0),
            epoch: 0,
            origin,
            client: None,
            coordinator,
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
                self.coordinator.do_send(Ready {
                    generation,
                    startup,
                });
            }
            HealthEvent::Unresponsive { failures } => {
                debug!(url = %self.url, %generation, failures, "health probes failed in a row");
                self.coordinator.do_send(Unhealthy {
                    generation,
                    failures,
                });
                // The coordinator takes it from here; probing resumes with the next `Watch`.
                return;
            }
            HealthEvent::StartupTimedOut { after } => {
                self.coordinator.do_send(StartupTimedOut { generation, after });
                return;
            }
        }
        let next = self.tracker.next_probe_in().saturating_sub(started.elapsed());
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
