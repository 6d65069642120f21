//! The OpenAI-compatible completion endpoints: request parsing, answers in OpenAI's shape, and
//! token-by-token generation (streamed as Server-Sent Events or collected).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{http::header, web, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{debug, error};

use super::continuation;
use super::faults::{Admission, Faults};
use super::metrics::{MockMetrics, RunningGuard};
use super::steps::{Step, Steps};
use super::tokens::{count_prompt_tokens, TokenSource};

/// Everything a completion handler needs, shared by every worker.
#[derive(Debug)]
pub(crate) struct Generator {
    pub(crate) model: String,
    pub(crate) default_tokens: u32,
    pub(crate) token_latency: Duration,
    pub(crate) faults: Arc<Faults>,
    pub(crate) metrics: Arc<MockMetrics>,
    /// `--busy-health`: /health answers 503 while a completion runs.
    pub(crate) busy_health: bool,
    /// `--shared-steps` (with a token latency): the step clock every completion follows.
    pub(crate) steps: Option<Steps>,
}

/// Which endpoint is answering: they differ only in the shape of their JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Text,
}

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    model: Option<String>,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    prompt: Option<Value>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    /// Tools offered: with `tool_choice: "required"` a streamed chat answer is a tool call.
    #[serde(default)]
    tools: Vec<Value>,
    tool_choice: Option<Value>,
    /// A mock extension: stream the first N tokens of a chat answer as `reasoning_content`.
    #[serde(default)]
    mock_reasoning_tokens: u64,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    #[serde(default)]
    role: String,
    #[serde(default)]
    content: Value,
}

/// An OpenAI-style error body.
pub(crate) fn openai_error(
    status: actix_web::http::StatusCode,
    kind: &str,
    message: &str,
) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "error": { "message": message, "type": kind, "param": null, "code": null }
    }))
}

/// Flattens text found in a prompt or message content (string, array of strings, or array of
/// `{"type":"text","text":...}` parts).
fn collect_text(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(s);
        }
        Value::Array(items) => items.iter().for_each(|item| collect_text(item, out)),
        Value::Object(map) => {
            if let Some(text) = map.get("text") {
                collect_text(text, out);
            }
        }
        _ => {}
    }
}

/// Answers one completion request.
pub(crate) async fn complete(gen: Arc<Generator>, flavor: Flavor, body: Bytes) -> HttpResponse {
    use actix_web::http::StatusCode;
    gen.faults.hold_if_wedged().await;
    let request: CompletionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("the request body is not valid JSON for this endpoint: {err}"),
            )
        }
    };
    if !gen.faults.is_ready() {
        return openai_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable_error",
            "the model is still loading",
        );
    }
    let mut prompt = String::new();
    // A continuation of an earlier answer (a trailing assistant message, or a prompt that ends
    // with the beginning of its answer) goes on where that beginning ends.
    let mut start = None;
    match flavor {
        Flavor::Chat => {
            let (last, before) = match request.messages.split_last() {
                Some((last, before)) if last.role == "assistant" => (Some(last), before),
                _ => (None, request.messages.as_slice()),
            };
            before
                .iter()
                .for_each(|m| collect_text(&m.content, &mut prompt));
            if let Some(last) = last {
                let mut prefill = String::new();
                collect_text(&last.content, &mut prefill);
                start = continuation::chat(&prompt, &prefill);
                collect_text(&last.content, &mut prompt);
            }
        }
        Flavor::Text => {
            if let Some(p) = &request.prompt {
                collect_text(p, &mut prompt);
            }
            start = continuation::text(&prompt);
        }
    }
    let start = start.unwrap_or(continuation::Start {
        tokens: TokenSource::for_prompt(&prompt),
        first: 0,
    });
    let (ordinal, drop_stream) = match gen.faults.admit(&prompt, request.stream) {
        Admission::Serve {
            ordinal,
            drop_stream,
        } => (ordinal, drop_stream),
        Admission::Fail => {
            return openai_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "simulated failure (--error-rate)",
            )
        }
        Admission::Hang => std::future::pending().await,
        Admission::Crash => std::process::exit(1),
    };
    let limit = request.max_tokens.or(request.max_completion_tokens);
    let job = Job {
        id: match flavor {
            Flavor::Chat => format!("chatcmpl-mock-{ordinal}"),
            Flavor::Text => format!("cmpl-mock-{ordinal}"),
        },
        model: request.model.unwrap_or_else(|| gen.model.clone()),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        flavor,
        tokens: start.tokens,
        first: start.first,
        count: limit.unwrap_or(u64::from(gen.default_tokens)),
        reasoning: request.mock_reasoning_tokens,
        tool: request
            .tools
            .first()
            .filter(|_| request.tool_choice.as_ref().and_then(Value::as_str) == Some("required"))
            .and_then(|tool| tool["function"]["name"].as_str())
            .map(str::to_owned),
        include_usage: request
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage),
        finish_reason: if limit.is_some() { "length" } else { "stop" },
        prompt_tokens: count_prompt_tokens(&prompt),
    };
    debug!(
        ordinal,
        stream = request.stream,
        tokens = job.count,
        continues_at = job.first,
        "completion"
    );
    let running = gen.metrics.running();
    if request.stream {
        stream(gen, job, running, drop_stream)
    } else {
        collect(gen, job, running).await
    }
}

#[derive(Debug)]
struct Job {
    id: String,
    model: String,
    created: u64,
    flavor: Flavor,
    tokens: TokenSource,
    /// The first token of the answer to generate (after a prefill, where it ends).
    first: u64,
    count: u64,
    /// Streamed chat tokens below this index are reasoning deltas.
    reasoning: u64,
    /// The function a streamed chat answer calls (its tokens are the arguments).
    tool: Option<String>,
    include_usage: bool,
    finish_reason: &'static str,
    prompt_tokens: u64,
}

impl Job {
    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.count,
            "total_tokens": self.prompt_tokens + self.count,
        })
    }

    /// The final usage chunk of a stream (`stream_options.include_usage`).
    fn usage_chunk(&self) -> Bytes {
        let object = match self.flavor {
            Flavor::Chat => "chat.completion.chunk",
            Flavor::Text => "text_completion",
        };
        let body = json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [], "usage": self.usage(),
        });
        Bytes::from(format!("data: {body}\n\n"))
    }

    /// One SSE chunk carrying `text` (or the final chunk with the finish reason when `None`).
    fn chunk(&self, index: u64, text: Option<&str>) -> Bytes {
        let finish = if text.is_none() {
            Value::from(self.finish_reason)
        } else {
            Value::Null
        };
        let body = match self.flavor {
            Flavor::Chat => {
                let mut delta = match (text, &self.tool) {
                    (Some(t), Some(name)) => {
                        let mut call = json!({ "index": 0, "function": { "arguments": t } });
                        if index == 0 {
                            call["id"] = json!("call_mock");
                            call["type"] = json!("function");
                            call["function"]["name"] = json!(name);
                        }
                        json!({ "tool_calls": [call] })
                    }
                    (Some(t), None) if index < self.reasoning => json!({ "reasoning_content": t }),
                    (Some(t), None) => json!({ "content": t }),
                    (None, _) => json!({}),
                };
                if index == 0 && text.is_some() {
                    delta["role"] = json!("assistant");
                }
                json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model,
                    "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
                })
            }
            Flavor::Text => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{ "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish }],
            }),
        };
        Bytes::from(format!("data: {body}\n\n"))
    }

    fn whole(&self, text: &str) -> Value {
        match self.flavor {
            Flavor::Chat => json!({
                "id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model,
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": text },
                    "logprobs": null,
                    "finish_reason": self.finish_reason,
                }],
                "usage": self.usage(),
            }),
            Flavor::Text => json!({
                "id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{ "index": 0, "text": text, "logprobs": null, "finish_reason": self.finish_reason }],
                "usage": self.usage(),
            }),
        }
    }
}

/// When the tokens of one completion come. On its own schedule: one every `--token-latency` from
/// the start, as a real server's steady decode steps. A token up to 5 ms late does not push back
/// the ones after it (a sleep after each token would: the timer's rounding up to the next
/// millisecond and any delay in sending would add up over a stream); a longer pause (a freeze)
/// starts the schedule again from its end rather than sending the missed tokens at once (tokio's
/// `MissedTickBehavior::Delay`). With `--shared-steps`, on the step clock every completion
/// follows ([`Steps`]).
enum Pace {
    /// `--token-latency 0`: every token at once.
    Free,
    Own(tokio::time::Interval),
    Shared(Step),
}

impl Pace {
    fn new(gen: &Generator) -> Self {
        let latency = gen.token_latency;
        if latency.is_zero() {
            return Self::Free;
        }
        if let Some(steps) = &gen.steps {
            return Self::Shared(steps.follow());
        }
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + latency, latency);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self::Own(ticks)
    }

    async fn next(&mut self) {
        match self {
            Self::Free => {}
            Self::Own(ticks) => {
                ticks.tick().await;
            }
            Self::Shared(step) => step.next().await,
        }
    }
}

/// Generates one token: waits for its turn, stalls forever if generation has stopped (wedge or
/// deadlock), and counts it.
async fn next_token(gen: &Generator, job: &Job, index: u64, pace: &mut Pace) -> String {
    pace.next().await;
    if gen.faults.generation_stopped() {
        std::future::pending::<()>().await;
    }
    gen.metrics.token_generated();
    job.tokens.token(job.first + index)
}

async fn collect(gen: Arc<Generator>, job: Job, mut running: RunningGuard) -> HttpResponse {
    let mut text = String::new();
    let mut pace = Pace::new(&gen);
    for index in 0..job.count {
        text.push_str(&next_token(&gen, &job, index, &mut pace).await);
    }
    gen.metrics.completion_finished();
    running.finish();
    drop(running);
    HttpResponse::Ok().json(job.whole(&text))
}

/// Where a streamed answer is in its life.
enum StreamStep {
    Token(u64),
    Usage,
    Done,
    Over,
}

/// After how many token chunks `--drop-stream-rate` cuts a stream.
const DROP_AFTER_CHUNKS: u64 = 2;

fn stream(gen: Arc<Generator>, job: Job, running: RunningGuard, drop_stream: bool) -> HttpResponse {
    let drop_at = drop_stream.then(|| DROP_AFTER_CHUNKS.min(job.count / 2));
    let pace = Pace::new(&gen);
    let state = (gen, job, running, pace, StreamStep::Token(0));
    let body = futures_util::stream::unfold(
        state,
        move |(gen, job, mut running, mut pace, step)| async move {
            let (item, next) = match step {
                StreamStep::Token(index) if drop_at == Some(index) => {
                    // The chunks before the cut reach the client first: a server slowed down
                    // (a busy machine) can make the last token and the cut in one poll, and
                    // actix drops what it has not yet written when a body fails. Yielding once
                    // lets it write them.
                    tokio::task::yield_now().await;
                    error!(id = %job.id, "dropping the connection mid-stream (--drop-stream-rate)");
                    let err = std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "simulated dropped stream",
                    );
                    (Err(err), StreamStep::Over)
                }
                StreamStep::Token(index) if index < job.count => {
                    let token = next_token(&gen, &job, index, &mut pace).await;
                    (
                        Ok(job.chunk(index, Some(&token))),
                        StreamStep::Token(index + 1),
                    )
                }
                StreamStep::Token(_) => {
                    gen.metrics.completion_finished();
                    running.finish();
                    let next = if job.include_usage {
                        StreamStep::Usage
                    } else {
                        StreamStep::Done
                    };
                    (Ok(job.chunk(job.count, None)), next)
                }
                StreamStep::Usage => (Ok(job.usage_chunk()), StreamStep::Done),
                StreamStep::Done => (
                    Ok(Bytes::from_static(b"data: [DONE]\n\n")),
                    StreamStep::Over,
                ),
                StreamStep::Over => return None,
            };
            Some((item, (gen, job, running, pace, next)))
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(body)
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(gen: web::Data<Generator>, body: Bytes) -> HttpResponse {
    complete(gen.into_inner(), Flavor::Chat, body).await
}

/// `POST /v1/completions`.
pub(crate) async fn completions(gen: web::Data<Generator>, body: Bytes) -> HttpResponse {
    complete(gen.into_inner(), Flavor::Text, body).await
}

/// `POST /tokenize`: counts the tokens of `prompt` (vLLM's field) or `content` (llama.cpp's), the
/// way the mock bills them (words); answers `{"count", "tokens", "max_model_len"}`.
pub(crate) async fn tokenize(gen: web::Data<Generator>, body: Bytes) -> HttpResponse {
    use actix_web::http::StatusCode;
    gen.faults.hold_if_wedged().await;
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("the request body is not valid JSON: {err}"),
            )
        }
    };
    let mut text = String::new();
    if let Some(prompt) = request.get("prompt").or_else(|| request.get("content")) {
        collect_text(prompt, &mut text);
    }
    let tokens: Vec<u64> = text
        .split_whitespace()
        .map(|word| {
            super::tokens::WORDS
                .iter()
                .position(|w| *w == word)
                .map_or(super::tokens::WORDS.len() as u64, |i| i as u64)
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "count": tokens.len(), "tokens": tokens, "max_model_len": 32768,
    }))
}
