//! The end of a graceful shutdown, as the proxy's answers see it.
//!
//! At SIGTERM respawn stops accepting and gives the requests in flight a grace to finish. A
//! stream still open when the grace ends would otherwise be cut when the connection is closed,
//! which an OpenAI client reads as a normal end of the stream. [`Drain::end_streams`] is called
//! when the grace ends, before any connection is closed: every open event stream then ends with an
//! explicit SSE `event: error` (`server_shutting_down`), every other open body is aborted, and a
//! request still waiting for its first byte is answered 503.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

/// The error `type` and `code` of answers cut short by a shutdown.
pub const SHUTTING_DOWN: &str = "server_shutting_down";

/// A handle on the end of the shutdown grace; clones share it.
#[derive(Clone, Debug)]
pub struct Drain {
    ended: Arc<AtomicBool>,
    sender: Arc<watch::Sender<bool>>,
    receiver: watch::Receiver<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    /// A handle whose grace has not ended.
    pub fn new() -> Self {
        let (sender, receiver) = watch::channel(false);
        Self {
            ended: Arc::new(AtomicBool::new(false)),
            sender: Arc::new(sender),
            receiver,
        }
    }

    /// Ends the grace: open streams end with an error event, waiting requests get a 503.
    pub fn end_streams(&self) {
        self.ended.store(true, Ordering::Release);
        self.sender.send_replace(true);
    }

    /// Whether the grace has ended (one atomic load: cheap enough for every chunk).
    pub fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Completes when the grace ends (at once if it has); never when the handle is dropped first.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub fn ended(&self) -> impl Future<Output = ()> + 'static {
        let mut receiver = self.receiver.clone();
        async move {
            // An error means every sender is gone without ending the grace: never, then.
            if receiver.wait_for(|ended| *ended).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The SSE event that ends a stream cut by the shutdown, in the shape OpenAI clients raise on.
pub fn shutdown_event() -> Bytes {
    let body = serde_json::json!({
        "error": {
            "message": "respawn is shutting down and the grace for requests in flight has ended; the answer is incomplete, send the request again",
            "type": SHUTTING_DOWN,
            "code": SHUTTING_DOWN,
        }
    });
    Bytes::from(format!("event: error\ndata: {body}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ended_completes_for_waiters_before_and_after_the_end() {
        let drain = Drain::new();
        let before = tokio::spawn(drain.ended());
        assert!(!drain.has_ended());
        drain.clone().end_streams();
        assert!(drain.has_ended());
        before
            .await
            .expect("the waiter from before the end completes");
        drain.ended().await;
    }

    #[test]
    fn the_event_is_one_parseable_sse_error() {
        let event = shutdown_event();
        let text = std::str::from_utf8(&event).expect("utf-8");
        assert!(text.starts_with("event: error\ndata: "));
        assert!(text.ends_with("\n\n"));
        let data = text.lines().nth(1).expect("a data line");
        let json: serde_json::Value =
            serde_json::from_str(data.trim_start_matches("data: ")).expect("JSON");
        assert_eq!(json["error"]["type"], SHUTTING_DOWN);
    }
}
