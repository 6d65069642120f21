//! `respawn mock` checked from outside the process: its OpenAI-compatible answers and every
//! fault flag.

use std::path::PathBuf;
use std::time::Duration;

use respawn::clock::Clock;

use serde_json::Value;

mod mock_process;

use mock_process::{Answer, BodyEnd, Mock};

const CHAT: &str = "/v1/chat/completions";

fn chat_body(prompt: &str, max_tokens: u64, stream: bool) -> String {
    serde_json::json!({
        "model": "mock-llm",
        "messages": [{ "role": "user", "content": prompt }],
        "max_tokens": max_tokens,
        "stream": stream,
    })
    .to_string()
}

/// The `data:` payloads of an event-stream answer, in order.
fn sse_data(answer: &Answer) -> Vec<String> {
    answer.events().into_iter().map(|e| e.data).collect()
}

/// The JSON chunks of a streamed completion, checked to end with `[DONE]`.
fn streamed_chunks(answer: &Answer) -> Vec<Value> {
    let data = sse_data(answer);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("each chunk is JSON"))
        .collect()
}

/// The text that streamed chat chunks carry, joined.
fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// How long a hung request is given before the test calls it hung.
const HANG: Duration = Duration::from_secs(1);

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("respawn-mock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn generated_tokens(mock: &Mock) -> u64 {
    let answer = mock.get("/metrics").expect("metrics answer");
    answer
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("mock:generation_tokens_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a generation_tokens_total sample")
}

#[test]
fn streams_openai_chunks_ending_with_done() {
    let mock = Mock::start(&[]);
    let answer = mock
        .post(CHAT, &chat_body("tell me a story", 5, true))
        .expect("an answer");
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.contains("text/event-stream")),
        "{:?}",
        answer.headers
    );
    let chunks = streamed_chunks(&answer);
    assert_eq!(chunks.len(), 6, "five tokens and a final chunk: {chunks:?}");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }
    let text = streamed_text(&chunks);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "length");
    assert_eq!(text.split_whitespace().count(), 5);

    let whole = mock
        .post(CHAT, &chat_body("tell me a story", 5, false))
        .expect("an answer");
    assert_eq!(
        whole.json()["choices"][0]["message"]["content"],
        text.as_str(),
        "deterministic tokens"
    );
}

#[test]
fn shared_steps_give_concurrent_streams_every_token() {
    let mock = Mock::start(&["--shared-steps", "--token-latency", "5ms"]);
    let texts: Vec<String> = std::thread::scope(|scope| {
        let streams: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let answer = mock
                        .post(CHAT, &chat_body("tell me a story", 5, true))
                        .expect("an answer");
                    assert_eq!(answer.status, 200);
                    streamed_text(&streamed_chunks(&answer))
                })
            })
            .collect();
        streams
            .into_iter()
            .map(|s| s.join().expect("a stream"))
            .collect()
    });
    // The step clock changes when tokens come, not which: the same prompt, the same answer.
    let whole = mock
        .post(CHAT, &chat_body("tell me a story", 5, false))
        .expect("an answer");
    for text in &texts {
        assert_eq!(text.split_whitespace().count(), 5, "{text:?}");
        assert_eq!(
            whole.json()["choices"][0]["message"]["content"],
            text.as_str()
        );
    }
}

#[test]
fn answers_completions_with_usage_models_and_errors() {
    let mock = Mock::start(&["--model", "tiny", "--tokens", "7"]);
    let chat = mock
        .post(CHAT, &chat_body("one two three", 4, false))
        .expect("an answer");
    assert_eq!(chat.status, 200);
    let json = chat.json();
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(json["usage"]["prompt_tokens"], 3);
    assert_eq!(json["usage"]["completion_tokens"], 4);
    assert_eq!(json["usage"]["total_tokens"], 7);

    let text = mock
        .post("/v1/completions", r#"{"prompt": "a b"}"#)
        .expect("an answer");
    let json = text.json();
    assert_eq!(json["object"], "text_completion");
    assert_eq!(
        json["usage"]["completion_tokens"], 7,
        "--tokens is the default length"
    );
    assert_eq!(json["model"], "tiny");

    let models = mock.get("/v1/models").expect("an answer").json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "tiny");

    let bad = mock.post(CHAT, "{not json").expect("an answer");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");

    let health = mock.get("/health").expect("an answer");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
}

#[test]
fn metrics_counter_grows_with_tokens() {
    let mock = Mock::start(&[]);
    let before = generated_tokens(&mock);
    mock.post(CHAT, &chat_body("x", 6, false))
        .expect("an answer");
    mock.post(CHAT, &chat_body("y", 4, true))
        .expect("an answer");
    assert_eq!(generated_tokens(&mock), before + 10);
    let metrics = mock.get("/metrics").expect("an answer").text();
    assert!(metrics.contains("# TYPE mock:generation_tokens_total counter"));
    assert!(metrics.contains("mock:completions_total 2"));
    assert!(metrics.contains("mock:requests_running 0"));
}

#[test]
fn wedge_after_hangs_every_request_and_health() {
    let mut mock = Mock::start(&["--wedge-after", "2"]);
    for _ in 0..2 {
        assert_eq!(
            mock.post(CHAT, &chat_body("hi", 2, false))
                .expect("served")
                .status,
            200
        );
    }
    assert!(mock
        .request("POST", CHAT, &[], &chat_body("hi", 2, false), HANG)
        .is_none());
    assert!(
        mock.request("GET", "/health", &[], "", HANG).is_none(),
        "/health hangs too"
    );
    assert!(mock.request("GET", "/v1/models", &[], "", HANG).is_none());
    assert!(
        mock.wait_exit(Duration::from_millis(100)).is_none(),
        "the process stays alive"
    );
    mock.wait_logged_count("--wedge-after 2 reached", 1, Duration::from_secs(30));
}

#[test]
fn wedge_on_marker_is_a_poison_request() {
    let mock = Mock::start(&["--wedge-on", "POISON-PILL"]);
    assert_eq!(
        mock.post(CHAT, &chat_body("harmless", 2, false))
            .expect("served")
            .status,
        200
    );
    assert!(mock
        .request(
            "POST",
            CHAT,
            &[],
            &chat_body("a POISON-PILL here", 2, false),
            HANG
        )
        .is_none());
    assert!(mock.request("GET", "/health", &[], "", HANG).is_none());
    assert!(mock
        .request("POST", CHAT, &[], &chat_body("harmless", 2, false), HANG)
        .is_none());
}

#[test]
fn crash_after_exits_with_code_1() {
    let mut mock = Mock::start(&["--crash-after", "1"]);
    assert_eq!(
        mock.post(CHAT, &chat_body("hi", 2, false))
            .expect("served")
            .status,
        200
    );
    let _ = mock.request("POST", CHAT, &[], &chat_body("hi", 2, false), HANG);
    let status = mock
        .wait_exit(Duration::from_secs(30))
        .expect("the process exits");
    assert_eq!(status.code(), Some(1));
}

#[test]
fn start_delay_answers_503_loading_then_200() {
    // Loading lasts until the test ends it: the early answers cannot race a timer.
    let mock = Mock::start(&["--start-delay", "1h", "--debug-endpoints"]);
    let early = mock.get("/health").expect("the port is open at once");
    assert_eq!(early.status, 503);
    assert_eq!(early.json()["status"], "loading");
    assert_eq!(
        mock.post(CHAT, &chat_body("hi", 1, false))
            .expect("an answer")
            .status,
        503
    );
    assert_eq!(
        mock.post("/debug/finish-loading", "")
            .expect("an answer")
            .status,
        200
    );
    let clock = Clock::new();
    loop {
        let now = mock.get("/health").expect("an answer");
        if now.status == 200 {
            break;
        }
        assert!(clock.now() < Duration::from_secs(30), "never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        mock.post(CHAT, &chat_body("hi", 1, false))
            .expect("an answer")
            .status,
        200
    );
}

#[test]
fn error_rate_one_answers_500() {
    let mock = Mock::start(&["--error-rate", "1.0"]);
    for _ in 0..3 {
        let answer = mock
            .post(CHAT, &chat_body("hi", 2, false))
            .expect("an answer");
        assert_eq!(answer.status, 500);
        assert_eq!(answer.json()["error"]["type"], "server_error");
    }
    assert_eq!(mock.get("/health").expect("an answer").status, 200);
}

#[test]
fn drop_stream_rate_one_cuts_streams_before_done() {
    let mock = Mock::start(&["--drop-stream-rate", "1.0"]);
    let answer = mock
        .post(CHAT, &chat_body("hi", 8, true))
        .expect("an answer");
    assert_eq!(answer.status, 200);
    let data = sse_data(&answer);
    assert!(!data.is_empty(), "a few chunks arrive first");
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    assert!(
        matches!(answer.end, BodyEnd::Broken(_)),
        "the chunked body is not terminated: {:?}",
        answer.end
    );
    let whole = mock
        .post(CHAT, &chat_body("hi", 8, false))
        .expect("an answer");
    assert_eq!(whole.status, 200, "non-streamed answers are untouched");
}

#[test]
fn deadlock_after_hangs_completions_while_health_stays_green() {
    let mock = Mock::start(&["--deadlock-after", "1"]);
    assert_eq!(
        mock.post(CHAT, &chat_body("hi", 3, false))
            .expect("served")
            .status,
        200
    );
    let frozen = generated_tokens(&mock);
    assert!(mock
        .request("POST", CHAT, &[], &chat_body("hi", 3, false), HANG)
        .is_none());
    assert!(mock
        .request("POST", CHAT, &[], &chat_body("hi", 3, true), HANG)
        .is_none());
    assert_eq!(mock.get("/health").expect("health answers").status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(generated_tokens(&mock), frozen, "/metrics stops growing");
}

#[test]
fn state_file_counts_across_processes_and_each_point_fires_once() {
    let dir = TempDir::new("state");
    let state = dir.0.join("ledger.json");
    let state = state.to_str().expect("utf-8 path");
    let args = ["--wedge-after", "2,4", "--state-file", state];
    {
        let first = Mock::start(&args);
        for _ in 0..2 {
            assert_eq!(
                first
                    .post(CHAT, &chat_body("hi", 1, false))
                    .expect("served")
                    .status,
                200
            );
        }
        assert!(first
            .request("POST", CHAT, &[], &chat_body("hi", 1, false), HANG)
            .is_none());
    }
    let second = Mock::start(&args);
    let third = second
        .post(CHAT, &chat_body("hi", 1, false))
        .expect("served after restart");
    assert_eq!(
        third.json()["id"],
        "chatcmpl-mock-3",
        "the count carried over"
    );
    assert_eq!(
        second
            .post(CHAT, &chat_body("hi", 1, false))
            .expect("served")
            .status,
        200
    );
    assert!(second
        .request("POST", CHAT, &[], &chat_body("hi", 1, false), HANG)
        .is_none());
    drop(second);
    let third_process = Mock::start(&args);
    assert_eq!(
        third_process
            .post(CHAT, &chat_body("hi", 1, false))
            .expect("served")
            .json()["id"],
        "chatcmpl-mock-5"
    );
}

#[test]
fn a_short_start_delay_ends_by_itself() {
    let mock = Mock::start(&["--start-delay", "200ms"]);
    let clock = Clock::new();
    while mock.get("/health").expect("an answer").status != 200 {
        assert!(clock.now() < Duration::from_secs(30), "never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    mock.wait_logged_count("model loaded; ready", 1, Duration::from_secs(30));
}

#[test]
fn sigterm_exits_zero() {
    let mut mock = Mock::start(&[]);
    assert_eq!(mock.get("/health").expect("an answer").status, 200);
    mock.sigterm();
    let status = mock
        .wait_exit(Duration::from_secs(30))
        .expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
}

/// How many fresh mocks the early-SIGTERM tests signal: each start is cheap, and a race that
/// loses only now and then shows up within a few dozen tries.
const EARLY_SIGTERM_TRIES: usize = 25;

#[test]
fn sigterm_as_soon_as_the_address_is_logged_exits_zero() {
    // The mock logs its address before its workers run: a service manager (or a test) that
    // learns the address from that line may stop it at once, and must get a clean exit.
    for attempt in 0..EARLY_SIGTERM_TRIES {
        let mut mock = Mock::start(&[]);
        mock.sigterm();
        let status = mock
            .wait_exit(Duration::from_secs(30))
            .expect("exits on SIGTERM");
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: {status:?}; log: {:?}",
            mock.log.lock()
        );
    }
}

#[test]
fn sigterm_right_after_the_first_answer_exits_zero() {
    // The request is queued before the workers start, so its answer is the first thing the
    // server ever says; the signal follows the first byte of it.
    for attempt in 0..EARLY_SIGTERM_TRIES {
        let mut mock = Mock::start(&[]);
        let first = mock.first_byte_of("GET", "/health", Duration::from_secs(10));
        assert!(first.is_some(), "attempt {attempt}: the server answers");
        mock.sigterm();
        let status = mock
            .wait_exit(Duration::from_secs(30))
            .expect("exits on SIGTERM");
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: {status:?}; log: {:?}",
            mock.log.lock()
        );
    }
}
