//! One line of the output file, in the OpenAI batch output format that `vllm run-batch` also
//! writes, and the ids that name each line and each request.
//!
//! A request that got an HTTP answer is recorded with its `response` (whatever the status, as
//! OpenAI does: a 400 is a response, not an error) and `"error": null`; a request that got no
//! answer for good (retries spent, quarantined) is recorded with `"response": null` and an
//! `error` saying why.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One output line, as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputLine {
    /// This line's own id, `batch_req_<32 hex digits>`.
    pub id: String,
    /// The input line's `custom_id`: what the caller joins results on.
    pub custom_id: String,
    /// The server's answer, when there was one.
    pub response: Option<ResponseData>,
    /// Why there is no answer, when there is none.
    pub error: Option<ErrorData>,
}

/// The server's answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseData {
    /// The HTTP status.
    pub status_code: u16,
    /// The id sent to the server as `x-request-id`, to find the request in its logs.
    pub request_id: String,
    /// The response body: its JSON when it is JSON, else its text.
    pub body: serde_json::Value,
}

/// Why a request has no answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorData {
    /// A stable, machine-readable reason (see [`ErrorCode`]).
    pub code: String,
    /// What happened, for a person.
    pub message: String,
}

/// The reasons a request is recorded as failed without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Every attempt allowed by `--retries` hung, broke or was refused.
    RetriesExhausted,
    /// The request was in flight at repeated hangs of the server and is not sent again.
    Quarantined,
}

impl ErrorCode {
    /// The code as written in the output file.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::RetriesExhausted => "retries_exhausted",
            ErrorCode::Quarantined => "quarantined",
        }
    }
}

impl OutputLine {
    /// A request answered by the server.
    pub fn answered(
        id: String,
        custom_id: String,
        status_code: u16,
        request_id: String,
        body: &[u8],
    ) -> Self {
        let body = serde_json::from_slice(body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
        });
        OutputLine {
            id,
            custom_id,
            response: Some(ResponseData {
                status_code,
                request_id,
                body,
            }),
            error: None,
        }
    }

    /// A request that failed for good without an answer.
    pub fn failed(id: String, custom_id: String, code: ErrorCode, message: String) -> Self {
        OutputLine {
            id,
            custom_id,
            response: None,
            error: Some(ErrorData {
                code: code.as_str().to_owned(),
                message,
            }),
        }
    }

    /// Whether this line records a success: an answer with a 2xx status and no error.
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
            && self
                .response
                .as_ref()
                .is_some_and(|response| (200..300).contains(&response.status_code))
    }

    /// The line as written: compact JSON and a newline.
    pub fn to_line(&self) -> String {
        // Serializing these plain structs cannot fail: every map key is a string.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// Makes ids that are unique within a run (a counter) and across runs (the start time and the
/// process id), without a random-number crate: `<prefix><32 hex digits>`.
#[derive(Debug)]
pub struct IdSource {
    seed: u64,
    counter: u64,
}

impl IdSource {
    /// A source seeded from the clock and the process id.
    pub fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        // Folding the 128-bit nanosecond count keeps all of its bits in the seed.
        let nanos = (nanos as u64) ^ ((nanos >> 64) as u64);
        Self::with_seed(nanos ^ (u64::from(std::process::id()) << 32))
    }

    /// A source with a fixed seed (tests).
    pub fn with_seed(seed: u64) -> Self {
        Self { seed, counter: 0 }
    }

    /// The next id, `prefix` followed by 32 hex digits.
    pub fn next_id(&mut self, prefix: &str) -> String {
        self.counter = self.counter.wrapping_add(1);
        // `mix` is a bijection, so distinct counters give distinct high halves within a run.
        let high = mix(self.seed.wrapping_add(self.counter));
        let low = mix(self.seed.rotate_left(29) ^ self.counter.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        format!("{prefix}{high:016x}{low:016x}")
    }
}

impl Default for IdSource {
    fn default() -> Self {
        Self::new()
    }
}

/// The splitmix64 finalizer: a bijection on `u64` that spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_shaped_like_batch_request_ids() {
        let mut ids = IdSource::with_seed(7);
        let made: Vec<String> = (0..10_000).map(|_| ids.next_id("batch_req_")).collect();
        let distinct: HashSet<&String> = made.iter().collect();
        assert_eq!(distinct.len(), made.len());
        for id in &made {
            let hex = id.strip_prefix("batch_req_").expect("prefix");
            assert_eq!(hex.len(), 32);
            assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn two_sources_with_different_seeds_do_not_collide() {
        let mut a = IdSource::with_seed(1);
        let mut b = IdSource::with_seed(2);
        let from_a: HashSet<String> = (0..1000).map(|_| a.next_id("x")).collect();
        assert!((0..1000).all(|_| !from_a.contains(&b.next_id("x"))));
    }

    #[test]
    fn an_answer_keeps_json_bodies_as_json_and_other_bodies_as_text() {
        let json = OutputLine::answered("i".into(), "c".into(), 200, "r".into(), br#"{"a":1}"#);
        assert_eq!(
            json.response.as_ref().map(|r| r.body.clone()),
            Some(serde_json::json!({"a": 1}))
        );
        assert!(json.succeeded());
        let text = OutputLine::answered("i".into(), "c".into(), 502, "r".into(), b"bad gateway");
        assert_eq!(
            text.response.as_ref().map(|r| r.body.clone()),
            Some(serde_json::json!("bad gateway"))
        );
        assert!(!text.succeeded());
    }

    #[test]
    fn a_failure_is_written_with_a_null_response_and_an_error() {
        let line = OutputLine::failed(
            "i".into(),
            "c".into(),
            ErrorCode::Quarantined,
            "poison".into(),
        );
        let text = line.to_line();
        assert!(text.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["response"], serde_json::Value::Null);
        assert_eq!(value["error"]["code"], "quarantined");
        assert_eq!(value["custom_id"], "c");
        assert!(!line.succeeded());
    }
}
