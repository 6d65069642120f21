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
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

/// The error `type` and `code` of answers cut short by a shutdown.
pub const SHUTTING_DOWN: &str = "server_shutting_down";

/// A handle on the end of the shutdown grace; clones share it.
#[derive(Clone, Debug)]
pub struct Drain {
    ended: Arc<AtomicBool>,
    sender: Arc<watch::Sender<bool>>,
    receiver: watch::Receiver<bool>,
    /// Each worker's own end (see [`WorkerDrain`]), told when the grace ends.
    workers: Arc<Mutex<Vec<Arc<WorkerEnd>>>>,
}

/// The end of the grace as one worker sees it: a flag and a notifier that only that worker's
/// requests touch, so that a request listening for the end takes no lock another worker takes.
#[derive(Debug, Default)]
struct WorkerEnd {
    ended: AtomicBool,
    notify: Notify,
}

impl WorkerEnd {
    fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// One worker's handle on the end of the grace: what its requests wait on and its answers check,
/// told by [`Drain::end_streams`] like every other worker's. Cloned for each answer (one
/// reference count that only this worker touches).
#[derive(Clone, Debug)]
pub struct WorkerDrain {
    end: Arc<WorkerEnd>,
}

impl WorkerDrain {
    /// A worker's handle on `drain` (already ended if `drain` has).
    pub fn new(drain: &Drain) -> Self {
        let end = Arc::new(WorkerEnd::default());
        let mut workers = drain.workers.lock();
        workers.push(Arc::clone(&end));
        // Read under the lock that `end_streams` takes after raising the flag: either the flag is
        // seen here, or this worker is in the list it goes through.
        if drain.ended.load(Ordering::SeqCst) {
            end.ended.store(true, Ordering::SeqCst);
        }
        drop(workers);
        Self { end }
    }

    /// Whether the grace has ended (one atomic load: cheap enough for every chunk).
    pub fn has_ended(&self) -> bool {
        self.end.ended.load(Ordering::SeqCst)
    }

    /// Completes when the grace ends (at once if it has).
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub fn ended(&self) -> impl Future<Output = ()> + 'static {
        let end = Arc::clone(&self.end);
        async move {
            loop {
                // Registered before the flag is read, so that the end is not missed in between.
                let notified = end.notify.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if end.ended.load(Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        }
    }
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
            workers: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Ends the grace: open streams end with an error event, waiting requests get a 503.
    pub fn end_streams(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.sender.send_replace(true);
        for worker in self.workers.lock().iter() {
            worker.end();
        }
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

    #[tokio::test]
    async fn workers_are_told_the_end_whenever_they_started() {
        let drain = Drain::new();
        let early = WorkerDrain::new(&drain);
        let waiting = tokio::spawn(early.ended());
        tokio::task::yield_now().await;
        assert!(!early.has_ended());
        drain.end_streams();
        assert!(early.has_ended());
        waiting
            .await
            .expect("a worker's waiter from before the end completes");
        let late = WorkerDrain::new(&drain);
        assert!(
            late.has_ended(),
            "a worker that starts after the end sees it"
        );
        late.ended().await;
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
