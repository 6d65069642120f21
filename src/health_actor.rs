//! The `HealthActor`: probes the server's health path and tells the coordinator what came back.
//!
//! It decides nothing: each answer goes to the coordinator as a [`ProbeResult`], whose machine
//! owns the `HealthTracker` (ready, strikes, startup budget) and answers when to probe next. After
//! every start that is fast (tens of milliseconds, growing) so that a server that becomes ready is
//! noticed at once, then the steady interval. Probes are scheduled from the start of the previous
//! probe, so a probe that times out does not stretch the period: three failures take about three
//! intervals. Each probe gets the timeout the coordinator gives it (the configured one, or less
//! for the probe that must end when a silent server's detection budget does).

use std::time::Duration;

use actix::prelude::*;
use respawn_core::{Generation, ProbeAnswer};
use tokio::time::Instant;
use tracing::trace;

use crate::messages::{ProbeResult, Watch};

/// How many bytes of a failing probe's body are kept for the log.
const BODY_HEAD: usize = 200;

/// Probes one health URL for the coordinator.
pub struct HealthActor {
    url: String,
    timeout: Duration,
    generation: Generation,
    epoch: u64,
    client: Option<awc::Client>,
    results: Recipient<ProbeResult>,
}

impl HealthActor {
    /// A prober for `url` (e.g. `http://127.0.0.1:8001/health`) whose probes may take `timeout`;
    /// results go to `results` (the coordinator).
    pub fn new(url: String, timeout: Duration, results: Recipient<ProbeResult>) -> Self {
        Self {
            url,
            timeout,
            generation: Generation::NONE,
            epoch: 0,
            client: None,
            results,
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>, delay: Duration, timeout: Duration) {
        let epoch = self.epoch;
        ctx.run_later(delay, move |act, ctx| {
            if act.epoch == epoch {
                act.probe(ctx, timeout);
            }
        });
    }

    fn probe(&mut self, ctx: &mut Context<Self>, timeout: Duration) {
        let epoch = self.epoch;
        let generation = self.generation;
        let started = Instant::now();
        let client = self
            .client
            .get_or_insert_with(|| {
                // Each probe's timeout is the running time below (`clock::timeout`): awc's
                // own would fire on a resume from a pause.
                awc::Client::builder()
                    .disable_redirects()
                    .disable_timeout()
                    .finish()
            })
            .clone();
        let url = self.url.clone();
        async move { probe_once(&client, &url, timeout).await }
            .into_actor(self)
            .then(move |(answer, body_head), act, _ctx| {
                trace!(url = %act.url, ?answer, "health probe");
                // A result from before the last `Watch` is about a server no longer watched.
                let current = act.epoch == epoch;
                let results = act.results.clone();
                async move {
                    if !current {
                        return None;
                    }
                    let result = ProbeResult {
                        generation,
                        answer,
                        body_head,
                    };
                    results.send(result).await.ok().flatten()
                }
                .into_actor(act)
            })
            .map(move |next, act, ctx| {
                if act.epoch != epoch {
                    return;
                }
                // `None`: the coordinator takes it from here; probing resumes with the next `Watch`.
                if let Some(next) = next {
                    act.schedule(
                        ctx,
                        next.after.saturating_sub(started.elapsed()),
                        next.timeout,
                    );
                }
            })
            .spawn(ctx);
    }
}

/// One probe: the status of an answer within the timeout, and the first bytes of a failing one's
/// body (a wrong health path answering 404 must be obvious in the log).
async fn probe_once(
    client: &awc::Client,
    url: &str,
    timeout: Duration,
) -> (ProbeAnswer, Option<String>) {
    let attempt = async {
        match client.get(url).send().await {
            Ok(mut response) => {
                let status = response.status();
                // Drain the body so the connection can be reused.
                let body = response.body().limit(64 * 1024).await;
                let head = (!status.is_success()).then(|| match body {
                    Ok(body) => {
                        let cut = body.len().min(BODY_HEAD);
                        String::from_utf8_lossy(&body[..cut]).into_owned()
                    }
                    Err(err) => format!("<unreadable body: {err}>"),
                });
                (ProbeAnswer::Status(status.as_u16()), head)
            }
            Err(awc::error::SendRequestError::Timeout) => (ProbeAnswer::TimedOut, None),
            Err(_) => (ProbeAnswer::NoConnection, None),
        }
    };
    crate::clock::timeout(timeout, attempt)
        .await
        .unwrap_or((ProbeAnswer::TimedOut, None))
}

impl Actor for HealthActor {
    type Context = Context<Self>;
}

impl Handler<Watch> for HealthActor {
    type Result = ();

    fn handle(&mut self, msg: Watch, ctx: &mut Self::Context) {
        self.epoch = self.epoch.wrapping_add(1);
        self.generation = msg.generation;
        // The first probe goes out at once: a server that starts instantly is ready instantly.
        self.schedule(ctx, Duration::ZERO, self.timeout);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use actix_web::{web, App, HttpResponse, HttpServer};
    use parking_lot::Mutex;
    use respawn_core::NextProbe;

    use super::*;

    type Results = Arc<Mutex<Vec<(Generation, ProbeAnswer)>>>;

    /// Records every result and answers with the cadence it is given; `None` after `stop_after`.
    struct Recorder {
        results: Results,
        stop_after: usize,
        next_timeout: Duration,
    }

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<ProbeResult> for Recorder {
        type Result = Option<NextProbe>;
        fn handle(&mut self, msg: ProbeResult, _: &mut Self::Context) -> Self::Result {
            let mut results = self.results.lock();
            results.push((msg.generation, msg.answer));
            (results.len() < self.stop_after).then_some(NextProbe {
                after: Duration::from_millis(20),
                timeout: self.next_timeout,
            })
        }
    }

    /// A health endpoint that answers 200 until `hang` is set, then never answers.
    fn server(hang: Arc<AtomicBool>) -> std::net::SocketAddr {
        let server = HttpServer::new(move || {
            let hang = Arc::clone(&hang);
            App::new()
                .route(
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
                .route(
                    "/busy",
                    web::get().to(|| async { HttpResponse::ServiceUnavailable().body("busy") }),
                )
                .route(
                    "/slow",
                    web::get().to(|| async {
                        actix::clock::sleep(Duration::from_millis(150)).await;
                        HttpResponse::Ok().finish()
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

    fn start_recorder(stop_after: usize) -> (Addr<Recorder>, Results) {
        start_recorder_with(stop_after, Duration::from_millis(200))
    }

    /// A recorder that gives every next probe `next_timeout`.
    fn start_recorder_with(stop_after: usize, next_timeout: Duration) -> (Addr<Recorder>, Results) {
        let results = Arc::new(Mutex::new(Vec::new()));
        let addr = Recorder {
            results: Arc::clone(&results),
            stop_after,
            next_timeout,
        }
        .start();
        (addr, results)
    }

    /// The first probe after a `Watch` gets the prober's own timeout; each later one the timeout
    /// the coordinator gave it (the silence rule cuts the last probe of a budget short).
    #[actix::test]
    async fn each_probe_gets_the_timeout_it_was_given() {
        let addr = server(Arc::new(AtomicBool::new(false)));
        let (recorder, results) = start_recorder_with(3, Duration::from_millis(50));
        let health = HealthActor::new(
            format!("http://{addr}/slow"),
            Duration::from_secs(5),
            recorder.recipient(),
        )
        .start();
        health.do_send(Watch {
            generation: Generation(2),
        });
        assert!(
            wait_for(&results, |r| r.len() == 3).await,
            "{:?}",
            results.lock()
        );
        let results = results.lock().clone();
        assert_eq!(
            results,
            vec![
                (Generation(2), ProbeAnswer::Status(200)),
                (Generation(2), ProbeAnswer::TimedOut),
                (Generation(2), ProbeAnswer::TimedOut),
            ]
        );
    }

    async fn wait_for(
        results: &Results,
        what: impl Fn(&[(Generation, ProbeAnswer)]) -> bool,
    ) -> bool {
        for _ in 0..300 {
            if what(&results.lock()) {
                return true;
            }
            actix::clock::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[actix::test]
    async fn probes_report_each_answer_of_the_watched_generation_until_told_to_stop() {
        let hang = Arc::new(AtomicBool::new(false));
        let addr = server(Arc::clone(&hang));
        let (recorder, results) = start_recorder(6);
        let health = HealthActor::new(
            format!("http://{addr}/health"),
            Duration::from_millis(100),
            recorder.recipient(),
        )
        .start();
        health.do_send(Watch {
            generation: Generation(1),
        });
        assert!(
            wait_for(&results, |r| r.len() >= 2).await,
            "{:?}",
            results.lock()
        );
        hang.store(true, Ordering::SeqCst);
        assert!(
            wait_for(&results, |r| r
                .last()
                .is_some_and(|(_, a)| *a == ProbeAnswer::TimedOut))
            .await,
            "{:?}",
            results.lock()
        );
        assert!(wait_for(&results, |r| r.len() == 6).await);
        // Told to stop: no probe until the next `Watch`.
        actix::clock::sleep(Duration::from_millis(300)).await;
        let results = results.lock().clone();
        assert_eq!(results.len(), 6, "{results:?}");
        assert_eq!(results[0], (Generation(1), ProbeAnswer::Status(200)));
    }

    #[actix::test]
    async fn refused_connections_and_error_statuses_are_told_apart() {
        // A port with nothing listening: every probe finds no connection.
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let (recorder, results) = start_recorder(2);
        let health = HealthActor::new(
            format!("http://127.0.0.1:{port}/health"),
            Duration::from_millis(100),
            recorder.clone().recipient(),
        )
        .start();
        health.do_send(Watch {
            generation: Generation(4),
        });
        assert!(wait_for(&results, |r| r.len() == 2).await);
        assert!(results
            .lock()
            .iter()
            .all(|r| *r == (Generation(4), ProbeAnswer::NoConnection)));

        let addr = server(Arc::new(AtomicBool::new(false)));
        let (recorder, results) = start_recorder(1);
        let health = HealthActor::new(
            format!("http://{addr}/busy"),
            Duration::from_millis(500),
            recorder.recipient(),
        )
        .start();
        health.do_send(Watch {
            generation: Generation(5),
        });
        assert!(wait_for(&results, |r| r.len() == 1).await);
        assert_eq!(results.lock()[0], (Generation(5), ProbeAnswer::Status(503)));
    }
}
