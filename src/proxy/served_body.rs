//! The answer's body as the client is served it: it holds the request's forward slot until the
//! body ends, and ends an open body cleanly when the shutdown grace ends.
//!
//! It wraps the watched body from the model server. A chunk passes straight through; only when
//! the model server makes the body wait does it start listening for the end of the grace, so a
//! body that arrives whole costs one atomic load per chunk and no allocation.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::error::ErrorServiceUnavailable;
use bytes::Bytes;
use futures_util::Stream;
use tracing::info;

use crate::proxy::admission::ForwardSlot;
use crate::proxy::drain::{shutdown_event, WorkerDrain};

/// A body served to a client; see the module docs.
pub struct ServedBody<S> {
    /// `None` once the body was cut: dropping it closes the connection to the model server.
    inner: Option<S>,
    _slot: Option<ForwardSlot>,
    drain: WorkerDrain,
    ended: Option<Pin<Box<dyn Future<Output = ()>>>>,
    sse: bool,
}

impl<S> ServedBody<S> {
    /// Serves `inner`, an event stream when `sse`, holding `slot` until it ends.
    pub fn new(inner: S, slot: Option<ForwardSlot>, drain: WorkerDrain, sse: bool) -> Self {
        Self {
            inner: Some(inner),
            _slot: slot,
            drain,
            ended: None,
            sse,
        }
    }

    fn cut(&mut self) -> Poll<Option<Result<Bytes, actix_web::Error>>> {
        self.inner = None;
        self.ended = None;
        info!(
            sse = self.sse,
            "the shutdown grace ended with this answer still open: ending it with an error"
        );
        if self.sse {
            Poll::Ready(Some(Ok(shutdown_event())))
        } else {
            Poll::Ready(Some(Err(ErrorServiceUnavailable(
                "respawn is shutting down and the grace for requests in flight has ended",
            ))))
        }
    }
}

impl<S> Stream for ServedBody<S>
where
    S: Stream<Item = Result<Bytes, actix_web::Error>> + Unpin,
{
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.drain.has_ended() {
            return this.cut();
        }
        match Pin::new(inner).poll_next(cx) {
            Poll::Ready(None) => {
                this.inner = None;
                Poll::Ready(None)
            }
            Poll::Ready(item) => Poll::Ready(item),
            Poll::Pending => {
                let drain = &this.drain;
                let ended = this.ended.get_or_insert_with(|| Box::pin(drain.ended()));
                if ended.as_mut().poll(cx).is_ready() {
                    return this.cut();
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::drain::Drain;
    use futures_util::StreamExt;

    fn pending_after(
        chunks: Vec<&'static str>,
    ) -> impl Stream<Item = Result<Bytes, actix_web::Error>> + Unpin {
        futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))))
            .chain(futures_util::stream::pending())
    }

    #[tokio::test]
    async fn an_open_event_stream_ends_with_the_shutdown_event() {
        let drain = Drain::new();
        let mut body = ServedBody::new(
            pending_after(vec!["data: a\n\n"]),
            None,
            WorkerDrain::new(&drain),
            true,
        );
        assert_eq!(
            body.next().await.expect("a chunk").expect("ok"),
            "data: a\n\n"
        );
        // The body waits first (and starts listening); then the grace ends.
        let end = async {
            tokio::task::yield_now().await;
            drain.end_streams();
        };
        let (last, ()) = futures_util::future::join(body.next(), end).await;
        let after = body.next().await;
        let last = last.expect("an event").expect("ok");
        assert!(last.starts_with(b"event: error\n"), "{last:?}");
        assert!(after.is_none(), "nothing after the error event");
    }

    #[tokio::test]
    async fn another_open_body_is_aborted_and_its_slot_given_back() {
        let drain = Drain::new();
        let slots = crate::proxy::admission::ForwardSlots::new(1);
        let slot = slots.try_take();
        let mut body =
            ServedBody::new(pending_after(vec![]), slot, WorkerDrain::new(&drain), false);
        drain.end_streams();
        assert!(body.next().await.expect("an item").is_err());
        drop(body);
        assert_eq!(slots.taken(), 0);
    }

    #[tokio::test]
    async fn a_body_that_ends_before_the_grace_ends_untouched() {
        let drain = Drain::new();
        let chunks = futures_util::stream::iter([Ok(Bytes::from("whole"))]);
        let mut body = ServedBody::new(chunks, None, WorkerDrain::new(&drain), true);
        assert_eq!(body.next().await.expect("a chunk").expect("ok"), "whole");
        assert!(body.next().await.is_none());
        drain.end_streams();
        assert!(body.next().await.is_none(), "an ended body stays ended");
    }
}
