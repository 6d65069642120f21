//! Resuming a cut stream: the client never sees the hang, even mid-answer.
//!
//! A streamed chat or text completion is recorded as it passes: the chunks that reached the
//! client are kept as the [`Bytes`] they already are (a reference-counted clone each, no parsing
//! on the way). When the stream is cut (its generation stalled, the server exited, the body broke
//! off before `[DONE]`, or the request waited past `--max-request-time` on a busy server), the
//! record is parsed once: the delivered text, the stream's `id`, `created`, `model` and
//! `system_fingerprint`, and what it streamed (tool calls, reasoning). The core judges whether
//! the stream may be resumed ([`StreamResume`]); if so the request plan decides where and when
//! ([`RequestPlan::decide_cut`](respawn_core::RequestPlan::decide_cut)), and the continuation is
//! sent through the same [`Upstream::deliver`] as any retry: it waits for a ready generation,
//! carries the original request's fingerprint, and its attempts before its own first byte are
//! bounded like a request's (a new part of the request, with the whole `--retries` bound). In a
//! pool ([`ResumeVia::Pool`]) the continuation goes through the pool's router instead: the cut's
//! hang is counted first, the replica it was cut on is left out, and the least loaded other
//! ready replica takes it at once (the body's watch moves there).
//!
//! The continuation asks for the rest of the answer only:
//! * chat: the original messages plus `{"role": "assistant", "content": <delivered>}` (a prefill;
//!   with [`ResumeMode::Vllm`] also `continue_final_message: true, add_generation_prompt: false`);
//! * text: the prompt with the delivered text appended;
//! * `max_tokens` / `max_completion_tokens` lowered by the delivered tokens.
//!
//! Its events are spliced into the open response ([`Splicer`]): the role-only first delta is
//! dropped, `id`, `created`, `model` and `system_fingerprint` are rewritten to the original's,
//! `index` is kept, and the usage chunk (with `stream_options.include_usage`) reports the
//! original prompt tokens and the completion tokens of every part. An SSE comment line
//! (`: respawn resumed ...`, which clients ignore) marks each resumption.
//!
//! Delivered tokens are counted by the server's tokenizer endpoint (`POST /tokenize`, as vLLM,
//! llama.cpp's server and the mock have it) on the generation that takes the continuation; a
//! server without one (or one that does not answer within a second) leaves the count of delivered
//! events that carried text: vLLM, llama.cpp's server and the mock send one token per event, so
//! that count is exact for them, and a server that merges tokens into one event makes it an
//! undercount (the continuation may then be allowed a few more tokens than `max_tokens` left,
//! and the usage is low by as many). Re-tokenizing text may also differ from the tokens that
//! generated it by a token or so at the seams.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::http::{Method, StatusCode};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use respawn_core::{
    AttemptOutcome, DeliveredPart, ResumeConfig, ResumeMode, ResumeRequest, StreamKind,
    StreamResume,
};
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use std::sync::Arc;

use crate::pool::sender::{PoolCut, PoolUpstream};
use crate::proxy::watched_body::{end_cut, BodyWatch, Cut, WatchedBody};
use crate::upstream::{Delivered as Answered, Identity, Outgoing, Upstream};

/// The kind of stream a response is, when it may be resumed: an event stream answering `POST`
/// to a chat or text completions path with 200.
pub fn stream_kind(
    method: &Method,
    path_and_query: &str,
    sse: bool,
    status: StatusCode,
) -> Option<StreamKind> {
    if !sse || method != Method::POST || status != StatusCode::OK {
        return None;
    }
    let path = path_and_query.split('?').next().unwrap_or_default();
    if path.ends_with("/chat/completions") {
        Some(StreamKind::Chat)
    } else if path.ends_with("/completions") {
        Some(StreamKind::Text)
    } else {
        None
    }
}

/// Whether a server command is vLLM's: its program is `vllm` (`vllm serve ...`), or an argument
/// names vLLM's entrypoint module (`python -m vllm.entrypoints.openai.api_server`) or image
/// (`docker run vllm/vllm-openai`). The command is what respawn knows before the server answers
/// anything, and it does not change between generations.
pub fn command_is_vllm(program: &OsStr, args: &[OsString]) -> bool {
    let name = std::path::Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    // A shell command (`sh -c "vllm serve m"`) is one argument of several words.
    name == "vllm"
        || args.iter().any(|arg| {
            let arg = arg.to_string_lossy().to_ascii_lowercase();
            arg.split_whitespace().any(|word| {
                let base = word.rsplit('/').next().unwrap_or(word);
                base == "vllm" || word.starts_with("vllm.") || word.contains("vllm/vllm-openai")
            })
        })
}

/// Resolves [`ResumeMode::Auto`] for a server: vLLM's flags when `is_vllm`, a prefill otherwise.
pub fn resolve(config: ResumeConfig, is_vllm: bool) -> ResumeConfig {
    let mode = match config.mode {
        ResumeMode::Auto if is_vllm => ResumeMode::Vllm,
        ResumeMode::Auto => ResumeMode::Prefill,
        mode => mode,
    };
    ResumeConfig { mode, ..config }
}

/// The original stream's identity, which every spliced event carries.
#[derive(Clone, Debug, Default)]
struct Original {
    id: Option<Value>,
    created: Option<Value>,
    model: Option<Value>,
    system_fingerprint: Option<Value>,
}

/// What the record of a cut stream says.
#[derive(Debug, Default)]
struct Delivered {
    original: Original,
    text: String,
    tokens: u64,
    part: DeliveredPart,
}

/// Splits `data` into complete SSE events (each ended by a blank line); answers the events and
/// the length of what they cover.
fn events(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < data.len() {
        let end = if data[i..].starts_with(b"\n\n") {
            Some(2)
        } else if data[i..].starts_with(b"\r\n\r\n") {
            Some(4)
        } else {
            None
        };
        match end {
            Some(n) => {
                out.push(&data[start..i]);
                i += n;
                start = i;
            }
            None => i += 1,
        }
    }
    (out, start)
}

/// The JSON of an event's `data:` lines, if it has any and it is JSON.
fn event_json(event: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(event).ok()?;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    if data.is_empty() || data == "[DONE]" {
        return None;
    }
    serde_json::from_str(&data).ok()
}

fn parse_delivered(kind: StreamKind, recorded: &[Bytes]) -> Delivered {
    let mut data = BytesMut::with_capacity(recorded.iter().map(Bytes::len).sum());
    for chunk in recorded {
        data.extend_from_slice(chunk);
    }
    let (events, covered) = events(&data);
    let mut delivered = Delivered::default();
    delivered.part.partial_event = data[covered..].iter().any(|b| !b.is_ascii_whitespace());
    let mut first = true;
    for event in events {
        let Some(json) = event_json(event) else {
            continue;
        };
        if first && json.get("id").is_some() {
            first = false;
            delivered.original = Original {
                id: json.get("id").cloned(),
                created: json.get("created").cloned(),
                model: json.get("model").cloned(),
                system_fingerprint: json.get("system_fingerprint").cloned(),
            };
        }
        let Some(choices) = json.get("choices").and_then(Value::as_array) else {
            continue;
        };
        for choice in choices {
            let text = match kind {
                StreamKind::Chat => {
                    let Some(delta) = choice.get("delta") else {
                        continue;
                    };
                    let present = |key: &str| delta.get(key).is_some_and(|v| !v.is_null());
                    if present("tool_calls") || present("function_call") {
                        delivered.part.tool_calls = true;
                    }
                    let reasoning = ["reasoning_content", "reasoning"].iter().any(|key| {
                        delta
                            .get(*key)
                            .and_then(Value::as_str)
                            .is_some_and(|s| !s.is_empty())
                    });
                    if reasoning {
                        delivered.part.reasoning = true;
                    }
                    delta.get("content").and_then(Value::as_str)
                }
                StreamKind::Text => choice.get("text").and_then(Value::as_str),
            };
            if let Some(text) = text.filter(|t| !t.is_empty()) {
                delivered.text.push_str(text);
                delivered.tokens += 1;
            }
        }
    }
    delivered
}

fn request_traits(body: &Value) -> ResumeRequest {
    let present = |key: &str| body.get(key).is_some_and(|v| !v.is_null());
    let truthy = |key: &str| match body.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
        Some(_) => true,
    };
    let structured_format = body
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t != "text");
    let guided = body.as_object().is_some_and(|map| {
        map.iter()
            .any(|(k, v)| (k.starts_with("guided_") || k == "structured_outputs") && !v.is_null())
    }) || present("grammar")
        || present("json_schema");
    let prompts = match body.get("prompt") {
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items.len() as u64,
        // Token-id prompts cannot have text appended.
        Some(Value::Array(_)) => 2,
        _ => 1,
    };
    ResumeRequest {
        choices: body
            .get("n")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(prompts),
        best_of: body.get("best_of").and_then(Value::as_u64).unwrap_or(1) > 1,
        logprobs: truthy("logprobs") || truthy("top_logprobs"),
        echo: truthy("echo"),
        structured: structured_format || guided,
    }
}

/// What a cut stream's request becomes.
#[derive(Debug, PartialEq)]
enum Continuation {
    /// The body asking for the rest of the answer.
    Body(Value),
    /// Nothing remains: the delivered tokens reached `max_tokens`.
    Complete,
    /// The request has no shape a continuation can be made of.
    Impossible,
}

/// The continuation of a cut stream: the original request asking for the rest of the answer.
fn continuation(
    kind: StreamKind,
    mode: ResumeMode,
    body: &Value,
    delivered: &Delivered,
) -> Continuation {
    let Some(mut body) = body.as_object().cloned() else {
        return Continuation::Impossible;
    };
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(limit) = body.get(key).and_then(Value::as_u64) {
            let left = limit.saturating_sub(delivered.tokens);
            if left == 0 {
                return Continuation::Complete;
            }
            body.insert(key.to_owned(), Value::from(left));
        }
    }
    match prefilled(kind, mode, body, delivered) {
        Some(body) => Continuation::Body(body),
        None => Continuation::Impossible,
    }
}

fn prefilled(
    kind: StreamKind,
    mode: ResumeMode,
    mut body: Map<String, Value>,
    delivered: &Delivered,
) -> Option<Value> {
    if delivered.text.is_empty() {
        // Nothing visible was delivered: the request itself is the continuation.
        return Some(Value::Object(body));
    }
    match kind {
        StreamKind::Chat => {
            let messages = body.get_mut("messages")?.as_array_mut()?;
            let mut prefill = Map::new();
            prefill.insert("role".to_owned(), Value::from("assistant"));
            prefill.insert("content".to_owned(), Value::from(delivered.text.as_str()));
            messages.push(Value::Object(prefill));
            if mode == ResumeMode::Vllm {
                body.insert("continue_final_message".to_owned(), Value::Bool(true));
                body.insert("add_generation_prompt".to_owned(), Value::Bool(false));
            }
        }
        StreamKind::Text => {
            let prompt = match body.get_mut("prompt")? {
                Value::Array(items) => items.first_mut()?,
                prompt => prompt,
            };
            let mut text = prompt.as_str()?.to_owned();
            text.push_str(&delivered.text);
            *prompt = Value::from(text);
        }
    }
    Some(Value::Object(body))
}

/// Rewrites a continuation's events into the original stream; see the module docs.
#[derive(Debug)]
pub struct Splicer {
    kind: StreamKind,
    original: Original,
    /// Tokens delivered before this continuation (all earlier parts).
    delivered_tokens: u64,
    buffer: BytesMut,
    first_delta: bool,
    /// The delivered text, until the first piece of text shows whether the server echoed it.
    echo: Option<String>,
}

impl Splicer {
    fn new(kind: StreamKind, original: Original, delivered_tokens: u64, delivered: &str) -> Self {
        Self {
            kind,
            original,
            delivered_tokens,
            buffer: BytesMut::new(),
            first_delta: true,
            echo: (!delivered.is_empty()).then(|| delivered.to_owned()),
        }
    }

    /// Takes a chunk of the continuation; answers the complete events it finished, rewritten
    /// (empty when none is complete yet or all were dropped).
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        self.buffer.extend_from_slice(chunk);
        let buffer = std::mem::take(&mut self.buffer);
        let (events, covered) = events(&buffer);
        let mut out = BytesMut::new();
        for event in events {
            if let Some(event) = self.rewrite(event) {
                out.extend_from_slice(&event);
                out.extend_from_slice(b"\n\n");
            }
        }
        self.buffer.extend_from_slice(&buffer[covered..]);
        out.freeze()
    }

    fn rewrite(&mut self, event: &[u8]) -> Option<Vec<u8>> {
        let Some(mut json) = event_json(event) else {
            // `[DONE]`, comments and other events pass as they are.
            return (!event.is_empty()).then(|| event.to_vec());
        };
        let object = json.as_object_mut()?;
        let original = &self.original;
        for (key, value) in [
            ("id", &original.id),
            ("created", &original.created),
            ("model", &original.model),
            ("system_fingerprint", &original.system_fingerprint),
        ] {
            if let Some(value) = value {
                object.insert(key.to_owned(), value.clone());
            }
        }
        if let Some(usage) = object.get_mut("usage").and_then(Value::as_object_mut) {
            let field = |usage: &Map<String, Value>, key: &str| {
                usage.get(key).and_then(Value::as_u64).unwrap_or(0)
            };
            // The continuation's prompt held the delivered part; its completion is the rest.
            let prompt = field(usage, "prompt_tokens").saturating_sub(self.delivered_tokens);
            let completion = field(usage, "completion_tokens") + self.delivered_tokens;
            usage.insert("prompt_tokens".to_owned(), Value::from(prompt));
            usage.insert("completion_tokens".to_owned(), Value::from(completion));
            usage.insert("total_tokens".to_owned(), Value::from(prompt + completion));
        }
        let kind = self.kind;
        let choices = object.get_mut("choices").and_then(Value::as_array_mut);
        if let Some(choice) = choices.and_then(|c| c.first_mut()) {
            let finished = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            let mut touched = false;
            if kind == StreamKind::Chat && self.first_delta {
                if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
                    self.first_delta = false;
                    touched = delta.remove("role").is_some();
                }
            }
            let text = match kind {
                StreamKind::Chat => choice
                    .get_mut("delta")
                    .and_then(Value::as_object_mut)
                    .and_then(|delta| delta.get_mut("content")),
                StreamKind::Text => choice.get_mut("text"),
            };
            if let Some(Value::String(text)) = text {
                // A server that echoes the prefill (llama.cpp's server does when the request does
                // not say `continue_final_message`) repeats the delivered text in its first piece.
                if !text.is_empty() {
                    if let Some(echo) = self.echo.take() {
                        if let Some(rest) = text.strip_prefix(echo.as_str()) {
                            *text = rest.to_owned();
                            touched = true;
                        }
                    }
                }
            }
            if touched && !finished {
                let empty = match kind {
                    StreamKind::Chat => {
                        choice
                            .get("delta")
                            .and_then(Value::as_object)
                            .map_or(true, |delta| {
                                delta.iter().all(|(key, value)| {
                                    value.is_null()
                                        || (key == "content" && value.as_str() == Some(""))
                                })
                            })
                    }
                    StreamKind::Text => choice.get("text").and_then(Value::as_str) == Some(""),
                };
                if empty {
                    return None;
                }
            }
        }
        let mut out = b"data: ".to_vec();
        out.extend_from_slice(&serde_json::to_vec(&json).ok()?);
        Some(out)
    }
}

/// Where a continuation is sent: a lone server's sender (the continuation waits for its next
/// generation), or a pool's router with the replica now serving the stream (the continuation
/// goes to another ready replica at once).
///
/// An enum like the proxy's own sender rather than a trait: there are two senders, their
/// continuations differ in more than the call (a pool's moves the request's watch to the replica
/// that answers), and the stream's future stays free of boxed trait objects.
pub enum ResumeVia {
    /// A lone server.
    One(Upstream),
    /// A replica of a pool.
    Pool {
        /// The pool's router.
        pool: PoolUpstream,
        /// The replica serving the stream now.
        replica: usize,
    },
}

/// What a resumption needs besides the body's watch: the sender, the original request, and the
/// stream's record.
pub struct Resumer {
    via: ResumeVia,
    out: Outgoing,
    kind: StreamKind,
    mode: ResumeMode,
    resume: StreamResume,
    recorded: Vec<Bytes>,
}

impl Resumer {
    /// A stream of `kind` answering `out`, resumed as `config` says.
    pub fn new(via: ResumeVia, out: Outgoing, kind: StreamKind, config: ResumeConfig) -> Self {
        Self {
            via,
            out,
            kind,
            mode: config.mode,
            resume: StreamResume::new(config),
            recorded: Vec::new(),
        }
    }
}

enum Resumed {
    Go {
        body: Box<WatchedBody<awc::ClientResponse>>,
        splicer: Box<Splicer>,
        marker: Bytes,
    },
    Finished(Bytes),
    Failed(Bytes),
}

type Resuming = Pin<Box<dyn Future<Output = (Resumer, Resumed)>>>;

enum State {
    Streaming {
        body: Box<WatchedBody<awc::ClientResponse>>,
        splicer: Option<Splicer>,
    },
    Resuming(Resuming),
    Done,
}

/// A streamed completion that is resumed when cut; see the module docs.
pub struct ResumableBody {
    state: State,
    resumer: Option<Resumer>,
}

impl ResumableBody {
    /// Serves `body` (made [`resumable`](WatchedBody::resumable) here), resuming it with
    /// `resumer` when it is cut.
    pub fn new(body: WatchedBody<awc::ClientResponse>, resumer: Resumer) -> Self {
        Self {
            state: State::Streaming {
                body: Box::new(body.resumable()),
                splicer: None,
            },
            resumer: Some(resumer),
        }
    }
}

/// A short word for how the attempt was cut, for the marker and the log.
fn cut_word(outcome: AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Stall | AttemptOutcome::FirstByteTimeout => "a stall",
        AttemptOutcome::TookTooLong => "the per-request time limit",
        _ => "a broken connection",
    }
}

async fn resume(mut resumer: Resumer, mut watch: BodyWatch, cut: Cut) -> (Resumer, Resumed) {
    let metrics = std::sync::Arc::clone(&watch.shared.metrics);
    let delivered = parse_delivered(resumer.kind, &resumer.recorded);
    let request: Value = serde_json::from_slice(&resumer.out.body).unwrap_or(Value::Null);
    let traits = request_traits(&request);
    let count = match resumer.resume.judge(cut.outcome, &traits, &delivered.part) {
        Ok(count) => count,
        Err(refusal) => {
            metrics.stream_resume(refusal.label());
            let message = format!("{}; not resumed: {refusal}", cut.message);
            return (
                resumer,
                Resumed::Failed(end_cut(&mut watch, cut.outcome, &message)),
            );
        }
    };
    let limit = resumer.resume.limit();
    let mut delivered = delivered;
    if continuation(resumer.kind, resumer.mode, &request, &delivered) == Continuation::Complete {
        // Only the end was lost: no need to wait for a generation, but a hang is still one.
        let decision = watch.plan.decide(cut.outcome);
        if let Some(hang) = decision.report {
            watch
                .shared
                .coordinator
                .do_send(crate::messages::HangReport(hang));
        }
        return finished(resumer, watch, &delivered);
    }
    let sent = match &resumer.via {
        ResumeVia::One(upstream) => {
            continue_on_one(&resumer, &request, &mut delivered, watch, &cut, upstream).await
        }
        ResumeVia::Pool { pool, replica } => {
            let on = (pool, *replica);
            continue_on_pool(&resumer, &request, &mut delivered, watch, &cut, on).await
        }
    };
    let (answer, mut watch, replica) = match sent {
        Sent::Answer(answer, watch, replica) => (answer, *watch, replica),
        Sent::Complete(watch) => return finished(resumer, *watch, &delivered),
        Sent::Failed(watch, why) => return resume_failed(resumer, *watch, &cut, &why),
    };
    if let (
        ResumeVia::Pool {
            replica: serving, ..
        },
        Some(replica),
    ) = (&mut resumer.via, replica)
    {
        *serving = replica;
    }
    let status = answer.response.status();
    if status != StatusCode::OK {
        let why = format!("the continuation was answered {status}");
        return resume_failed(resumer, watch, &cut, &why);
    }
    watch.plan.reached_client();
    let generation = answer.generation;
    metrics.stream_resume("resumed");
    info!(
        generation = generation.get(),
        replica,
        resumption = count,
        resume_limit = limit,
        delivered_tokens = delivered.tokens,
        "a cut stream was resumed after {}",
        cut_word(cut.outcome)
    );
    let on_replica = replica
        .map(|r| format!(", replica {r}"))
        .unwrap_or_default();
    let marker = Bytes::from(format!(
        ": respawn resumed this stream after {} ({count} of {limit}, generation {}{on_replica})\n\n",
        cut_word(cut.outcome),
        generation.get()
    ));
    let splicer = Splicer::new(
        resumer.kind,
        delivered.original,
        delivered.tokens,
        &delivered.text,
    );
    let body = Box::new(WatchedBody::new(answer.first, answer.response, watch).resumable());
    (
        resumer,
        Resumed::Go {
            body,
            splicer: Box::new(splicer),
            marker,
        },
    )
}

/// How sending a continuation ended: its answer (with the watch of the server that gave it,
/// and its replica in a pool), nothing left to ask, or why it failed.
enum Sent {
    Answer(Answered, Box<BodyWatch>, Option<usize>),
    Complete(Box<BodyWatch>),
    Failed(Box<BodyWatch>, String),
}

/// The continuation's request, its delivered tokens counted by `tokenizer`'s server.
async fn continuation_out(
    resumer: &Resumer,
    request: &Value,
    delivered: &mut Delivered,
    tokenizer: &Upstream,
) -> Result<Outgoing, Option<String>> {
    if !delivered.text.is_empty() {
        if let Some(tokens) = tokenize(tokenizer, &delivered.text).await {
            debug!(
                events = delivered.tokens,
                tokens, "the delivered text counted by the server's tokenizer"
            );
            delivered.tokens = tokens;
        }
    }
    let body = match continuation(resumer.kind, resumer.mode, request, delivered) {
        Continuation::Body(body) => body,
        Continuation::Complete => return Err(None),
        Continuation::Impossible => {
            let why = "the request has no messages or text prompt to continue";
            return Err(Some(why.to_owned()));
        }
    };
    let mut out = resumer.out.clone();
    out.body = Bytes::from(serde_json::to_vec(&body).map_err(|err| Some(err.to_string()))?);
    Ok(out)
}

/// A lone server's continuation: it waits for the generation the plan names, on the same
/// server, with the same watch.
async fn continue_on_one(
    resumer: &Resumer,
    request: &Value,
    delivered: &mut Delivered,
    mut watch: BodyWatch,
    cut: &Cut,
    upstream: &Upstream,
) -> Sent {
    let mut state = None;
    let generation = match upstream
        .after_cut(&mut watch.plan, cut.outcome, &mut state)
        .await
    {
        Ok(generation) => generation,
        Err(err) => return Sent::Failed(Box::new(watch), err.to_string()),
    };
    let out = match continuation_out(resumer, request, delivered, upstream).await {
        Ok(out) => out,
        Err(None) => return Sent::Complete(Box::new(watch)),
        Err(Some(why)) => return Sent::Failed(Box::new(watch), why),
    };
    match upstream
        .deliver(&out, &mut watch.identity, &mut watch.plan, generation)
        .await
    {
        Ok(answer) => Sent::Answer(answer, Box::new(watch), None),
        Err(err) => Sent::Failed(Box::new(watch), err.to_string()),
    }
}

/// A pool's continuation: the hang is counted, and the continuation goes to the least loaded
/// ready replica other than `cut_on` (or waits as any request does when none is); the watch
/// moves to the replica that answers (its clock, snapshot, coordinator, in-flight table and
/// suspects), and the request's place on `cut_on` ends.
async fn continue_on_pool(
    resumer: &Resumer,
    request: &Value,
    delivered: &mut Delivered,
    mut watch: BodyWatch,
    cut: &Cut,
    (pool, cut_on): (&PoolUpstream, usize),
) -> Sent {
    let fingerprint = watch.identity.fingerprint;
    let identity = std::mem::replace(&mut watch.identity, Identity::new(fingerprint));
    let from = PoolCut {
        replica: cut_on,
        identity,
    };
    let mut from = match pool.after_cut(&mut watch.plan, cut.outcome, from).await {
        Ok(from) => from,
        Err(err) => return Sent::Failed(Box::new(watch), err.to_string()),
    };
    let bytes = u64::try_from(resumer.out.body.len()).unwrap_or(u64::MAX);
    let out = match pool.continuation_replica(&mut from, bytes).await {
        Ok(tokenizer) => continuation_out(resumer, request, delivered, tokenizer).await,
        Err(err) => return Sent::Failed(Box::new(watch), err.to_string()),
    };
    let out = match out {
        Ok(out) => out,
        Err(None) => return Sent::Complete(Box::new(watch)),
        Err(Some(why)) => return Sent::Failed(Box::new(watch), why),
    };
    let answer = match pool
        .deliver_continuation(&out, fingerprint, &mut watch.plan, from)
        .await
    {
        Ok(answer) => answer,
        Err(err) => return Sent::Failed(Box::new(watch), err.to_string()),
    };
    let watch = BodyWatch {
        shared: Arc::clone(answer.upstream.shared()),
        identity: answer.identity,
        suspect: answer
            .upstream
            .is_suspect(fingerprint)
            .then_some(fingerprint),
        ..watch
    };
    Sent::Answer(answer.delivered, Box::new(watch), Some(answer.replica))
}

/// Ends a stream whose every token was delivered: only its end was lost.
fn finished(resumer: Resumer, watch: BodyWatch, delivered: &Delivered) -> (Resumer, Resumed) {
    watch.shared.metrics.stream_resume("completed");
    watch.shared.in_flight.answered();
    info!(
        generation = watch.plan.generation().get(),
        delivered_tokens = delivered.tokens,
        "a cut stream had delivered every token it asked for: ended it with [DONE]"
    );
    let end = finish_events(resumer.kind, delivered);
    (resumer, Resumed::Finished(end))
}

/// The number of tokens of `text` by the server's tokenizer endpoint (`POST /tokenize`: vLLM
/// reads `prompt`, llama.cpp's server `content`; both answer `tokens`, vLLM also `count`), if it
/// has one and answers within a second.
async fn tokenize(upstream: &Upstream, text: &str) -> Option<u64> {
    let url = format!("{}/tokenize", upstream.shared().config.base_url);
    let body = serde_json::json!({ "prompt": text, "content": text, "add_special_tokens": false });
    let ask = async {
        let mut response = crate::upstream::build_client()
            .post(url)
            .send_json(&body)
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let answer: Value = response.json().limit(1 << 22).await.ok()?;
        answer.get("count").and_then(Value::as_u64).or_else(|| {
            answer
                .get("tokens")
                .and_then(Value::as_array)
                .map(|t| t.len() as u64)
        })
    };
    tokio::time::timeout(std::time::Duration::from_secs(1), ask)
        .await
        .ok()
        .flatten()
}

fn resume_failed(resumer: Resumer, watch: BodyWatch, cut: &Cut, why: &str) -> (Resumer, Resumed) {
    watch.shared.metrics.stream_resume("failed");
    watch
        .shared
        .metrics
        .request_failed(crate::metrics::FailureClass::Truncated);
    let message = format!("{}; resuming it failed: {why}", cut.message);
    warn!(generation = watch.plan.generation().get(), "{message}");
    (
        resumer,
        Resumed::Failed(crate::proxy::watched_body::sse_error_event(&message)),
    )
}

/// The end of a stream whose every token was delivered: a finish chunk and `[DONE]`.
fn finish_events(kind: StreamKind, delivered: &Delivered) -> Bytes {
    let original = &delivered.original;
    let choice = match kind {
        StreamKind::Chat => serde_json::json!({
            "index": 0, "delta": {}, "logprobs": null, "finish_reason": "length"
        }),
        StreamKind::Text => serde_json::json!({
            "index": 0, "text": "", "logprobs": null, "finish_reason": "length"
        }),
    };
    let object = match kind {
        StreamKind::Chat => "chat.completion.chunk",
        StreamKind::Text => "text_completion",
    };
    let chunk = serde_json::json!({
        "id": original.id, "object": object, "created": original.created,
        "model": original.model, "choices": [choice],
    });
    Bytes::from(format!("data: {chunk}\n\ndata: [DONE]\n\n"))
}

impl Stream for ResumableBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Streaming { body, splicer } => match Pin::new(&mut **body).poll_next(cx) {
                    Poll::Ready(Some(Ok(chunk))) => {
                        let chunk = match splicer {
                            None => chunk,
                            Some(splicer) => splicer.feed(&chunk),
                        };
                        if chunk.is_empty() {
                            continue;
                        }
                        if let Some(resumer) = this.resumer.as_mut() {
                            resumer.recorded.push(chunk.clone());
                        }
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        let Some(cut) = body.take_cut() else {
                            this.state = State::Done;
                            return Poll::Ready(None);
                        };
                        let State::Streaming { body, .. } =
                            std::mem::replace(&mut this.state, State::Done)
                        else {
                            return Poll::Ready(None);
                        };
                        let mut watch = body.into_watch();
                        let Some(resumer) = this.resumer.take() else {
                            let event = end_cut(&mut watch, cut.outcome, &cut.message);
                            return Poll::Ready(Some(Ok(event)));
                        };
                        this.state = State::Resuming(Box::pin(resume(resumer, watch, cut)));
                    }
                },
                State::Resuming(future) => {
                    let (resumer, resumed) = match future.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(done) => done,
                    };
                    this.resumer = Some(resumer);
                    match resumed {
                        Resumed::Go {
                            body,
                            splicer,
                            marker,
                        } => {
                            this.state = State::Streaming {
                                body,
                                splicer: Some(*splicer),
                            };
                            return Poll::Ready(Some(Ok(marker)));
                        }
                        Resumed::Finished(end) | Resumed::Failed(end) => {
                            this.state = State::Done;
                            return Poll::Ready(Some(Ok(end)));
                        }
                    }
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(json: Value) -> Bytes {
        Bytes::from(format!("data: {json}\n\n"))
    }

    fn chat_chunk(id: &str, delta: Value) -> Bytes {
        chunk(json!({
            "id": id, "object": "chat.completion.chunk", "created": 7, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": null}],
        }))
    }

    #[test]
    fn the_record_gives_the_delivered_text_and_the_original_identity() {
        let recorded = vec![
            chat_chunk("a", json!({"role": "assistant", "content": "The"})),
            chat_chunk("a", json!({"content": " cat"})),
        ];
        let delivered = parse_delivered(StreamKind::Chat, &recorded);
        assert_eq!(delivered.text, "The cat");
        assert_eq!(delivered.tokens, 2);
        assert_eq!(delivered.original.id, Some(json!("a")));
        assert_eq!(delivered.part, DeliveredPart::default());
        // Half an event.
        let mut cut = recorded.clone();
        cut.push(Bytes::from_static(b"data: {\"id\":"));
        assert!(parse_delivered(StreamKind::Chat, &cut).part.partial_event);
        let tools = vec![chat_chunk(
            "a",
            json!({"tool_calls": [{"index": 0, "function": {"name": "f"}}]}),
        )];
        assert!(parse_delivered(StreamKind::Chat, &tools).part.tool_calls);
    }

    fn body_of(continuation: Continuation) -> Value {
        match continuation {
            Continuation::Body(body) => body,
            other => panic!("no body: {other:?}"),
        }
    }

    #[test]
    fn the_continuation_prefills_the_delivered_text_and_lowers_the_limit() {
        let recorded = vec![
            chat_chunk("a", json!({"role": "assistant", "content": "The"})),
            chat_chunk("a", json!({"content": " cat"})),
        ];
        let delivered = parse_delivered(StreamKind::Chat, &recorded);
        let request = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "stream": true});
        let body = body_of(continuation(
            StreamKind::Chat,
            ResumeMode::Vllm,
            &request,
            &delivered,
        ));
        assert_eq!(body["max_tokens"], 8);
        assert_eq!(
            body["messages"][1],
            json!({"role": "assistant", "content": "The cat"})
        );
        assert_eq!(body["continue_final_message"], true);
        assert_eq!(body["add_generation_prompt"], false);
        let body = body_of(continuation(
            StreamKind::Chat,
            ResumeMode::Prefill,
            &request,
            &delivered,
        ));
        assert!(body.get("continue_final_message").is_none());

        let text = vec![chunk(
            json!({"id": "t", "choices": [{"index": 0, "text": " sat"}]}),
        )];
        let delivered = parse_delivered(StreamKind::Text, &text);
        let request = json!({"prompt": "The cat", "max_tokens": 1});
        assert_eq!(
            continuation(StreamKind::Text, ResumeMode::Prefill, &request, &delivered),
            Continuation::Complete,
            "nothing left to generate"
        );
        assert_eq!(
            continuation(
                StreamKind::Text,
                ResumeMode::Prefill,
                &json!({"max_tokens": 5}),
                &delivered
            ),
            Continuation::Impossible,
        );
        let request = json!({"prompt": "The cat", "max_tokens": 5});
        let body = body_of(continuation(
            StreamKind::Text,
            ResumeMode::Prefill,
            &request,
            &delivered,
        ));
        assert_eq!(body["prompt"], "The cat sat");
        assert_eq!(body["max_tokens"], 4);
    }

    #[test]
    fn refused_kinds_are_read_from_the_request() {
        let traits = |body: Value| request_traits(&body);
        assert_eq!(traits(json!({"n": 2})).choices, 2);
        assert!(traits(json!({"best_of": 3})).best_of);
        assert!(traits(json!({"logprobs": true})).logprobs);
        assert!(traits(json!({"logprobs": 2})).logprobs);
        assert!(!traits(json!({"logprobs": false})).logprobs);
        assert!(traits(json!({"top_logprobs": 3})).logprobs);
        assert!(traits(json!({"echo": true})).echo);
        assert!(traits(json!({"response_format": {"type": "json_object"}})).structured);
        assert!(!traits(json!({"response_format": {"type": "text"}})).structured);
        assert!(traits(json!({"guided_json": {}})).structured);
        assert!(traits(json!({"structured_outputs": {"regex": "a"}})).structured);
        assert_eq!(traits(json!({"prompt": ["a", "b"]})).choices, 2);
        assert_eq!(
            traits(json!({"messages": []})),
            ResumeRequest {
                choices: 1,
                ..ResumeRequest::default()
            }
        );
    }

    #[test]
    fn the_splicer_rewrites_identity_drops_the_role_delta_and_adds_up_usage() {
        let original = Original {
            id: Some(json!("orig")),
            created: Some(json!(1)),
            model: Some(json!("m")),
            system_fingerprint: None,
        };
        let mut splicer = Splicer::new(StreamKind::Chat, original.clone(), 10, "The cat");
        let first = chat_chunk("new", json!({"role": "assistant", "content": ""}));
        assert!(
            splicer.feed(&first).is_empty(),
            "the role-only delta is dropped"
        );
        let text = chat_chunk("new", json!({"content": " more"}));
        // Split across two chunks: nothing until the event is whole.
        let (a, b) = text.split_at(10);
        assert!(splicer.feed(a).is_empty());
        let out = splicer.feed(b);
        let json = event_json(out.strip_suffix(b"\n\n").unwrap()).unwrap();
        assert_eq!(json["id"], "orig");
        assert_eq!(json["created"], 1);
        assert_eq!(json["choices"][0]["delta"]["content"], " more");
        assert_eq!(json["choices"][0]["index"], 0);
        let usage = chunk(json!({
            "id": "new", "choices": [],
            "usage": {"prompt_tokens": 15, "completion_tokens": 30, "total_tokens": 45},
        }));
        let out = splicer.feed(&usage);
        let json = event_json(out.strip_suffix(b"\n\n").unwrap()).unwrap();
        assert_eq!(
            json["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 40, "total_tokens": 45})
        );
        assert_eq!(&splicer.feed(b"data: [DONE]\n\n")[..], b"data: [DONE]\n\n");

        // A server that echoes the prefill: its first piece repeats the delivered text.
        let mut splicer = Splicer::new(StreamKind::Chat, original.clone(), 2, "The cat");
        let echoed = chat_chunk(
            "new",
            json!({"role": "assistant", "content": "The cat sat"}),
        );
        let out = splicer.feed(&echoed);
        let json = event_json(out.strip_suffix(b"\n\n").unwrap()).unwrap();
        assert_eq!(json["choices"][0]["delta"], json!({"content": " sat"}));
        let alone = chat_chunk("new", json!({"content": "The cat"}));
        let mut splicer = Splicer::new(StreamKind::Chat, original.clone(), 2, "The cat");
        assert!(splicer.feed(&alone).is_empty(), "an echo alone is dropped");
        // Only the first piece is looked at: later text that happens to repeat stays.
        let later = splicer.feed(&chat_chunk("new", json!({"content": "The cat"})));
        assert!(!later.is_empty());
        let mut text = Splicer::new(StreamKind::Text, original, 2, "The cat");
        let piece = chunk(json!({"id": "t", "choices": [{"index": 0, "text": " sat"}]}));
        let out = text.feed(&piece);
        let json = event_json(out.strip_suffix(b"\n\n").unwrap()).unwrap();
        assert_eq!(
            json["choices"][0]["text"], " sat",
            "no echo: nothing is cut"
        );
    }

    #[test]
    fn vllm_is_told_by_its_command() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(command_is_vllm(
            OsStr::new("/usr/bin/vllm"),
            &args(&["serve", "m"])
        ));
        assert!(command_is_vllm(
            OsStr::new("python3"),
            &args(&["-m", "vllm.entrypoints.openai.api_server"])
        ));
        assert!(command_is_vllm(
            OsStr::new("sh"),
            &args(&["-c", "exec /opt/bin/vllm serve m --port 8000"])
        ));
        assert!(!command_is_vllm(
            OsStr::new("llama-server"),
            &args(&["-m", "/models/x.gguf"])
        ));
        let auto = ResumeConfig::default();
        assert_eq!(resolve(auto, true).mode, ResumeMode::Vllm);
        assert_eq!(resolve(auto, false).mode, ResumeMode::Prefill);
        let off = ResumeConfig {
            mode: ResumeMode::Off,
            limit: 2,
        };
        assert_eq!(resolve(off, true).mode, ResumeMode::Off);
    }
}
