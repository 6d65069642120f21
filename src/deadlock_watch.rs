//! The `DeadlockWatch`: finds the hang every model server's `/health` misses.
//!
//! vLLM, llama.cpp, SGLang and TGI all keep `/health` green through an engine deadlock. Two signals
//! catch it without crying wolf: while requests are in flight, a token counter on the server's
//! `/metrics` must grow (slowness is not a hang: a counter that grows slowly is fine); while idle,
//! a one-token canary request must answer. Never a canary while busy, where it would queue behind
//! real work. The decisions are the supervision machine's (its `Liveness` part): this actor asks
//! the coordinator what to look at ([`LivenessTick`]), fetches, and sends back what it read
//! ([`ProgressSample`], [`CanaryResult`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use respawn_core::{Generation, LivenessStep, ProgressReading};
use tracing::{debug, info, warn};

use crate::coordinator::RestartCoordinator;
use crate::in_flight::InFlight;
use crate::messages::{CanaryResult, LivenessOrder, LivenessTick, ProgressSample};

/// Counters that grow while a known model server generates, in the order they are looked for.
///
/// Each must grow *during* a generation, not only when a request finishes: llama.cpp's
/// `llamacpp:tokens_predicted_total` is added to only at the end of a request (it stays flat
/// through a long generation), so llama.cpp is watched through `llamacpp:n_decode_total`, which
/// counts decode calls as they happen.
pub const KNOWN_PROGRESS_METRICS: [&str; 7] = [
    "vllm:generation_tokens_total",
    "vllm:iteration_tokens_total",
    "llamacpp:n_decode_total",
    "sglang:generation_tokens_total",
    "tgi_request_generated_tokens_sum",
    "tgi_request_generated_tokens_count",
    "mock:generation_tokens_total",
];

/// Where the progress signal comes from: the Prometheus counter on the child's `/metrics` that
/// grows while it generates tokens (the only reliable sign of life of a busy model server, whose
/// `/health` stays green through an engine deadlock).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProgressMetric {
    /// Look for the known counters of vLLM, llama.cpp, SGLang and TGI (written `auto`).
    #[default]
    Auto,
    /// No progress detection (written `none` or `off`).
    Off,
    /// This exact counter name.
    Named(String),
}

impl FromStr for ProgressMetric {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        match text.to_ascii_lowercase().as_str() {
            "" => Err("expected a metric name, `auto` or `none`".to_owned()),
            "auto" => Ok(ProgressMetric::Auto),
            "none" | "off" => Ok(ProgressMetric::Off),
            _ if text.chars().any(char::is_whitespace) => {
                Err(format!("`{text}`: a metric name has no spaces (expected e.g. vllm:generation_tokens_total)"))
            }
            _ => Ok(ProgressMetric::Named(text.to_owned())),
        }
    }
}

impl fmt::Display for ProgressMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgressMetric::Auto => f.write_str("auto"),
            ProgressMetric::Off => f.write_str("none"),
            ProgressMetric::Named(name) => f.write_str(name),
        }
    }
}

impl serde::Serialize for ProgressMetric {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ProgressMetric {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Settings of the deadlock detectors.
#[derive(Clone, Debug)]
pub struct DeadlockWatchConfig {
    /// `http://host:port` of the model server.
    pub base_url: String,
    /// How long the canary may take before it counts as unanswered.
    pub canary_timeout: Duration,
    /// Which counter to watch.
    pub metric: ProgressMetric,
    /// The canary request body (`None`: a one-token chat completion to the first listed model).
    pub canary_body: Option<serde_json::Value>,
    /// How often the detectors look.
    pub tick: Duration,
}

/// See the module docs.
pub struct DeadlockWatch {
    config: DeadlockWatchConfig,
    in_flight: Arc<InFlight>,
    coordinator: Addr<RestartCoordinator>,
    client: Option<awc::Client>,
    generation: Generation,
    metric: Option<String>,
    canary_body: Option<serde_json::Value>,
    busy: bool,
}

impl DeadlockWatch {
    /// A watcher of the server at `config.base_url`, reporting to `coordinator`.
    pub fn new(
        config: DeadlockWatchConfig,
        in_flight: Arc<InFlight>,
        coordinator: Addr<RestartCoordinator>,
    ) -> Self {
        Self {
            canary_body: config.canary_body.clone(),
            config,
            in_flight,
            coordinator,
            client: None,
            generation: Generation(0),
            metric: None,
            busy: false,
        }
    }

    fn client(&mut self) -> awc::Client {
        self.client
            .get_or_insert_with(|| {
                // Every exchange is bounded by running time (`clock::timeout`): awc's own timer
                // would fire on a resume from a pause, and a fetch cut by it reads as silence.
                awc::Client::builder()
                    .disable_redirects()
                    .disable_timeout()
                    .finish()
            })
            .clone()
    }

    /// Asks the coordinator what to look at, then looks.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let question = LivenessTick {
            in_flight: self.in_flight.count(),
            last_activity: self.in_flight.last_activity(),
            answered: self.in_flight.answers(),
        };
        self.coordinator
            .send(question)
            .into_actor(self)
            .map(|order, act, ctx| {
                act.busy = false;
                let Ok(LivenessOrder { generation, step }) = order else {
                    return;
                };
                if generation != act.generation {
                    // A new generation: find the metric again (the server may have changed).
                    act.generation = generation;
                    if matches!(act.config.metric, ProgressMetric::Auto) {
                        act.metric = None;
                    }
                }
                match step {
                    LivenessStep::Nothing => {}
                    LivenessStep::SampleProgress => act.sample_progress(ctx, generation),
                    LivenessStep::SendCanary => act.send_canary(ctx, generation),
                }
            })
            .spawn(ctx);
    }

    fn sample_progress(&mut self, ctx: &mut Context<Self>, generation: Generation) {
        let wanted = match &self.config.metric {
            ProgressMetric::Off => return,
            ProgressMetric::Named(name) => Some(name.clone()),
            ProgressMetric::Auto => self.metric.clone(),
        };
        let client = self.client();
        let url = format!("{}/metrics", self.config.base_url);
        self.busy = true;
        async move {
            let text = fetch_text(&client, &url).await;
            (text, wanted)
        }
        .into_actor(self)
        .map(move |(text, wanted), act, _ctx| {
            act.busy = false;
            let reading = match text {
                Fetched::Text(text) => {
                    let name = match wanted {
                        Some(name) => name,
                        None => match KNOWN_PROGRESS_METRICS
                            .iter()
                            .find(|name| metric_value(&text, name).is_some())
                        {
                            Some(found) => {
                                info!(
                                    metric = found,
                                    "progress metric found on the server's /metrics"
                                );
                                act.metric = Some((*found).to_owned());
                                (*found).to_owned()
                            }
                            None => return,
                        },
                    };
                    let Some(value) = metric_value(&text, &name) else {
                        debug!(metric = %name, "progress metric missing from /metrics");
                        return;
                    };
                    ProgressReading::Counter(value.max(0.0) as u64)
                }
                Fetched::NotServed => ProgressReading::NotServed,
                // Silence means something only for a counter we know the server has.
                Fetched::NoAnswer if wanted.is_some() => ProgressReading::NoAnswer,
                Fetched::NoAnswer => return,
            };
            act.coordinator.do_send(ProgressSample {
                generation,
                reading,
            });
        })
        .spawn(ctx);
    }

    fn send_canary(&mut self, ctx: &mut Context<Self>, generation: Generation) {
        let client = self.client();
        let base = self.config.base_url.clone();
        let timeout = self.config.canary_timeout;
        let body = self.canary_body.clone();
        self.busy = true;
        async move {
            let body = match body {
                Some(body) => body,
                None => default_canary(&client, &base).await,
            };
            let path = if body.get("messages").is_some() {
                "/v1/chat/completions"
            } else {
                "/v1/completions"
            };
            let started = tokio::time::Instant::now();
            let sent = client.post(format!("{base}{path}")).send_json(&body);
            let outcome = crate::clock::timeout(timeout, async {
                match sent.await {
                    Ok(mut response) => {
                        let _ = response.body().limit(1 << 20).await;
                        Some(response.status().as_u16())
                    }
                    Err(awc::error::SendRequestError::Timeout) => None,
                    // A refused connection is an exit, which the server's watcher reports.
                    Err(_) => Some(0),
                }
            })
            .await
            .unwrap_or(None);
            (outcome, started.elapsed())
        }
        .into_actor(self)
        .map(move |(outcome, took), act, _ctx| {
            act.busy = false;
            match outcome {
                None => {
                    warn!(
                        generation = generation.get(),
                        took_ms = took.as_millis() as u64,
                        "the idle canary got no answer"
                    );
                }
                Some(status) => {
                    debug!(
                        generation = generation.get(),
                        status,
                        took_ms = took.as_millis() as u64,
                        "canary answered"
                    );
                }
            }
            act.coordinator.do_send(CanaryResult {
                generation,
                answered: outcome.is_some(),
            });
        })
        .spawn(ctx);
    }
}

/// The body of the default canary: one token from the first model the server lists.
async fn default_canary(client: &awc::Client, base: &str) -> serde_json::Value {
    let listed = crate::clock::timeout(FETCH_TIMEOUT, async {
        let mut response = client.get(format!("{base}/v1/models")).send().await.ok()?;
        let list = response
            .json::<serde_json::Value>()
            .limit(1 << 20)
            .await
            .ok()?;
        list["data"][0]["id"].as_str().map(str::to_owned)
    })
    .await
    .flatten();
    let model = listed.unwrap_or_else(|| String::from("default"));
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
        "temperature": 0,
    })
}

/// What a `/metrics` fetch found.
enum Fetched {
    /// The exposition text.
    Text(String),
    /// The server answered, but not with metrics (404, 500, not text): no verdict either way.
    NotServed,
    /// No answer at all (timeout, connection refused or reset).
    NoAnswer,
}

/// Bound on a `/metrics` fetch and on the model list read for the default canary.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

async fn fetch_text(client: &awc::Client, url: &str) -> Fetched {
    crate::clock::timeout(FETCH_TIMEOUT, fetch_text_now(client, url))
        .await
        .unwrap_or(Fetched::NoAnswer)
}

async fn fetch_text_now(client: &awc::Client, url: &str) -> Fetched {
    let Ok(mut response) = client.get(url).send().await else {
        return Fetched::NoAnswer;
    };
    if !response.status().is_success() {
        return Fetched::NotServed;
    }
    match response.body().limit(8 << 20).await {
        Ok(body) => match String::from_utf8(body.to_vec()) {
            Ok(text) => Fetched::Text(text),
            Err(_) => Fetched::NotServed,
        },
        Err(awc::error::PayloadError::Overflow) => Fetched::NotServed,
        Err(_) => Fetched::NoAnswer,
    }
}

/// The sum of every sample of `name` in a Prometheus text exposition (labels summed over).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = match rest.chars().next() {
            Some('{') => match rest.find('}') {
                Some(end) => &rest[end + 1..],
                None => continue,
            },
            Some(' ') | Some('\t') => rest,
            _ => continue,
        };
        if let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            found = true;
            sum += value;
        }
    }
    found.then_some(sum)
}

impl Actor for DeadlockWatch {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let tick = self.config.tick;
        ctx.run_interval(tick, |act, ctx| act.tick(ctx));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_value_sums_labelled_samples_and_ignores_prefixes() {
        let text = "# HELP vllm:generation_tokens_total tokens\n\
                    vllm:generation_tokens_total{model=\"a\"} 10\n\
                    vllm:generation_tokens_total{model=\"b\"} 5.5\n\
                    vllm:generation_tokens_total_created 99\n";
        assert_eq!(
            metric_value(text, "vllm:generation_tokens_total"),
            Some(15.5)
        );
        assert_eq!(metric_value(text, "llamacpp:tokens_predicted_total"), None);
    }

    #[test]
    fn metric_value_reads_unlabelled_samples() {
        let text = "llamacpp:tokens_predicted_total 42\n";
        assert_eq!(
            metric_value(text, "llamacpp:tokens_predicted_total"),
            Some(42.0)
        );
    }
}
