//! The demo's client: sends the samples through respawn's proxy as chat completions, a fixed
//! number at a time, like a batch-inference job, and tells a real answer from an error.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::progress::Progress;

/// How long the demo's client waits for one answer: far longer than respawn needs to notice a
/// wedge and restart (a few seconds), so that a slow recovery shows as slow, not as an error.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Tokens asked for in each sample.
const MAX_TOKENS: u32 = 16;

/// What the client saw.
#[derive(Debug, Clone, Default)]
pub struct LoadOutcome {
    /// The longest any one sample took (a sample caught by a wedge waits for the restart).
    pub slowest: Duration,
    /// The first error, for the closing message.
    pub first_error: Option<String>,
}

/// The body of sample `index` (distinct prompts: respawn tells requests apart by their body).
pub fn sample_body(index: u64, total: u64) -> serde_json::Value {
    serde_json::json!({
        "model": "mock-llm",
        "messages": [{
            "role": "user",
            "content": format!("Sample {index} of {total}: in one sentence, why do servers hang?"),
        }],
        "max_tokens": MAX_TOKENS,
    })
}

/// Sends `total` samples to `base_url` (respawn's proxy), `concurrency` at a time, counting
/// them in `progress`.
///
/// # Cancel safety
/// Dropping the future abandons the samples in flight.
pub async fn drive(
    base_url: &str,
    total: u64,
    concurrency: u64,
    progress: &Progress,
) -> LoadOutcome {
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        .timeout(CLIENT_TIMEOUT)
        .finish();
    let url = format!("{base_url}/v1/chat/completions");
    let next = Cell::new(1u64);
    let outcome = RefCell::new(LoadOutcome::default());
    let lanes = (0..concurrency.max(1)).map(|_| async {
        loop {
            let index = next.get();
            if index > total {
                break;
            }
            next.set(index + 1);
            let sent = Instant::now();
            let result = one_sample(&client, &url, index, total).await;
            let took = sent.elapsed();
            let ok = result.is_ok();
            {
                let mut out = outcome.borrow_mut();
                out.slowest = out.slowest.max(took);
                if let Err(err) = result {
                    tracing::warn!(sample = index, error = %err, "a sample failed");
                    out.first_error
                        .get_or_insert(format!("sample {index}: {err}"));
                }
            }
            progress.sample_done(ok);
        }
    });
    join_all(lanes).await;
    outcome.into_inner()
}

async fn one_sample(client: &awc::Client, url: &str, index: u64, total: u64) -> Result<(), String> {
    let mut response = client
        .post(url)
        .send_json(&sample_body(index, total))
        .await
        .map_err(|err| format!("request failed: {err}"))?;
    let status = response.status();
    let body = response
        .body()
        .limit(1 << 20)
        .await
        .map_err(|err| format!("the answer broke off: {err}"))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(format!("{status}: {}", text.trim()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|err| format!("the answer is not JSON: {err}"))?;
    let answered = value
        .get("choices")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|choices| !choices.is_empty());
    if answered {
        Ok(())
    } else {
        Err(format!("the answer has no choices: {value}"))
    }
}
