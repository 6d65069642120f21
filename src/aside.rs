//! Tasks that the HTTP client spawns while it sends a request, run later and in a batch.
//!
//! awc builds a new HTTP/1 codec for every request it sends, and the codec's configuration
//! starts a date service: a task on the current thread that refreshes a `Date` header value
//! every 500 ms, for servers to write. A client never writes that header, and the task is
//! aborted when the response is done. Run as it is, it still costs every request a task poll,
//! a timer due at the next millisecond and, since that timer is earlier than anything the
//! thread's driver sleeps for, a wake-up of the driver through its eventfd: on a proxy answering
//! in tens of microseconds, that was the largest part of its own time.
//!
//! [`SpawnAside`] polls a future with a second, thread-local task set entered, so that what the
//! future spawns goes there instead. That set is run by one drainer task per thread, 10 ms after
//! it was first given work and then as long as it has some: by then the date services of
//! short requests have been aborted, and running the set only drops them (no timer, no wake-up);
//! those of long requests run from then on as they would have. Anything else spawned inside a
//! send would start up to 10 ms late but with no further traffic needed; awc spawns nothing else
//! for plain HTTP (a stale pooled connection is dropped at once; its graceful close task is only
//! for TLS connections, which respawn's client does not make). The set, its drainer and its tasks
//! end with the executor the drainer runs on; a later executor on the same thread gets a new set.

use std::{
    cell::RefCell,
    future::Future,
    pin::Pin,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{ready, Context, Poll, Wake, Waker},
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{task::LocalSet, time::Sleep};

/// How long set-aside work waits before the drainer runs it.
pub(crate) const DELAY: Duration = Duration::from_millis(10);

/// Polls of the set in one drain (each runs up to 61 tasks): far more than a worker sets aside in
/// [`DELAY`]; what is left waits for the next drain.
const MAX_POLLS: usize = 256;

thread_local! {
    static ASIDE: RefCell<Option<Rc<Aside>>> = const { RefCell::new(None) };
}

/// This thread's set for tasks spawned inside a [`SpawnAside`].
struct Aside {
    set: RefCell<LocalSet>,
    relay: Arc<Relay>,
}

/// The set's waker: records that the set has work and wakes the drainer.
struct Relay {
    work: AtomicBool,
    drainer: Mutex<Option<Waker>>,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.work.store(true, Ordering::Release);
        if let Some(waker) = self.drainer.lock().as_ref() {
            waker.wake_by_ref();
        }
    }
}

impl Aside {
    /// This thread's set, made (with its drainer spawned on the current executor) on first use.
    /// `None` outside an actix executor, where there is nowhere to run a drainer.
    fn current() -> Option<Rc<Aside>> {
        ASIDE.with(|slot| {
            if let Some(aside) = slot.borrow().as_ref() {
                return Some(Rc::clone(aside));
            }
            actix_rt::Arbiter::try_current()?;
            let relay = Arc::new(Relay {
                // Tasks spawned before the set is first polled wake nothing: the drainer looks
                // at once.
                work: AtomicBool::new(true),
                drainer: Mutex::new(None),
            });
            let aside = Rc::new(Aside {
                set: RefCell::new(LocalSet::new()),
                relay: Arc::clone(&relay),
            });
            *slot.borrow_mut() = Some(Rc::clone(&aside));
            actix_rt::spawn(Drainer {
                waker: Waker::from(relay),
                aside: Rc::clone(&aside),
                sleep: Box::pin(tokio::time::sleep(DELAY)),
                armed: false,
            });
            Some(aside)
        })
    }

    /// Runs what the set has to run, as long as it has some (up to [`MAX_POLLS`] polls).
    fn drain(&self, waker: &Waker) {
        // Never nested in a poll of the set; if it were, the work stays flagged for next time.
        let Ok(mut set) = self.set.try_borrow_mut() else {
            return;
        };
        let mut cx = Context::from_waker(waker);
        for _ in 0..MAX_POLLS {
            if !self.relay.work.swap(false, Ordering::AcqRel) {
                break;
            }
            // Ready means the set is empty for now; a later spawn wakes the relay again.
            let _ = Pin::new(&mut *set).poll(&mut cx);
        }
    }
}

/// Runs the thread's set [`DELAY`] after it is given work. It never finishes: it ends, and the
/// set with it, when its executor drops it.
struct Drainer {
    aside: Rc<Aside>,
    waker: Waker,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl Future for Drainer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        {
            let mut slot = self.aside.relay.drainer.lock();
            if !slot
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
            {
                *slot = Some(cx.waker().clone());
            }
        }
        loop {
            if self.armed {
                ready!(self.sleep.as_mut().poll(cx));
                self.armed = false;
                self.aside.drain(&self.waker);
            }
            if !self.aside.relay.work.load(Ordering::Acquire) {
                return Poll::Pending;
            }
            let deadline = tokio::time::Instant::now() + DELAY;
            self.sleep.as_mut().reset(deadline);
            self.armed = true;
        }
    }
}

impl Drop for Drainer {
    fn drop(&mut self) {
        // The executor is going: the set goes with it (its tasks are dropped with the last `Rc`),
        // and the next use on this thread starts a new one.
        let _ = ASIDE.try_with(|slot| {
            if let Ok(mut slot) = slot.try_borrow_mut() {
                if slot
                    .as_ref()
                    .is_some_and(|aside| Rc::ptr_eq(aside, &self.aside))
                {
                    *slot = None;
                }
            }
        });
        *self.aside.relay.drainer.lock() = None;
    }
}

/// Polls the inner future with this thread's set-aside task set entered (see the module
/// documentation); outside an actix executor, polls it as it is.
pub(crate) struct SpawnAside<F>(pub(crate) F);

impl<F: Future + Unpin> Future for SpawnAside<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(aside) = Aside::current() else {
            return Pin::new(&mut self.0).poll(cx);
        };
        let Ok(set) = aside.set.try_borrow() else {
            return Pin::new(&mut self.0).poll(cx);
        };
        let _entered = set.enter();
        Pin::new(&mut self.0).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, time::Duration};

    use super::*;

    /// Sets its flag when dropped.
    struct DropFlag(Rc<Cell<bool>>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }

    /// Spawns, inside a `SpawnAside`, a task that records that it ran and, when dropped, that it
    /// was dropped; returns its handle and both flags.
    async fn spawn_inside(
        sleep: Duration,
    ) -> (tokio::task::JoinHandle<()>, Rc<Cell<bool>>, Rc<Cell<bool>>) {
        let ran = Rc::new(Cell::new(false));
        let dropped = Rc::new(Cell::new(false));
        let (task_ran, guard) = (Rc::clone(&ran), DropFlag(Rc::clone(&dropped)));
        // The block spawns the task inside `SpawnAside` and hands out its handle, not awaited.
        #[allow(clippy::async_yields_async)]
        let handle = SpawnAside(Box::pin(async move {
            actix_rt::spawn(async move {
                let _guard = guard;
                task_ran.set(true);
                tokio::time::sleep(sleep).await;
            })
        }))
        .await;
        (handle, ran, dropped)
    }

    #[actix_rt::test]
    async fn a_task_set_aside_runs_after_the_delay_without_further_use() {
        let (handle, ran, dropped) = spawn_inside(Duration::ZERO).await;
        // Not run with the rest of the executor's tasks...
        actix_rt::task::yield_now().await;
        assert!(!ran.get(), "a task set aside ran at once");
        // ...but within a few delays, with nothing else set aside meanwhile, and to its end.
        tokio::time::sleep(DELAY * 5).await;
        assert!(ran.get(), "a task set aside never ran");
        assert!(dropped.get(), "a finished task set aside was not dropped");
        assert!(handle.is_finished());
    }

    #[actix_rt::test]
    async fn an_aborted_task_set_aside_is_dropped_without_running() {
        let (handle, ran, dropped) = spawn_inside(Duration::from_secs(3600)).await;
        handle.abort();
        tokio::time::sleep(DELAY * 5).await;
        assert!(dropped.get(), "an aborted task set aside was never dropped");
        assert!(!ran.get(), "an aborted task set aside was run");
    }

    #[actix_rt::test]
    async fn the_drainer_goes_back_to_sleep_and_wakes_for_new_work() {
        for _ in 0..3 {
            let (_, ran, _) = spawn_inside(Duration::ZERO).await;
            tokio::time::sleep(DELAY * 5).await;
            assert!(
                ran.get(),
                "a task set aside after an idle drainer never ran"
            );
        }
    }

    #[test]
    fn the_set_and_its_tasks_end_with_their_executor() {
        let dropped = actix_rt::System::new().block_on(async {
            let (_, _, dropped) = spawn_inside(Duration::from_secs(3600)).await;
            // Let it start: it then waits on its timer.
            tokio::time::sleep(DELAY * 5).await;
            assert!(!dropped.get());
            dropped
        });
        // block_on returns with the executor's tasks still there; dropping the runner ends them.
        let ran_again = actix_rt::System::new().block_on(async move {
            // A second executor on the same thread gets its own set and drainer.
            let (_, ran, _) = spawn_inside(Duration::ZERO).await;
            tokio::time::sleep(DELAY * 5).await;
            ran.get()
        });
        assert!(dropped.get(), "a task set aside outlived its executor");
        assert!(
            ran_again,
            "a later executor on the same thread ran nothing set aside"
        );
    }

    #[test]
    fn outside_an_actix_executor_the_future_is_polled_as_it_is() {
        let value = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            runtime.map(|rt| rt.block_on(SpawnAside(Box::pin(async { 7 }))))
        })
        .join();
        assert!(matches!(value, Ok(Ok(7))));
    }

    /// Whether a response is a 200 whose body was read to its end (which gives its connection back
    /// to the pool).
    async fn answered<S>(
        response: Result<awc::ClientResponse<S>, awc::error::SendRequestError>,
    ) -> bool
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
    {
        let Ok(mut response) = response else {
            return false;
        };
        response.status().as_u16() == 200 && response.body().await.is_ok()
    }

    /// The one thing besides the date service that awc does with the pool inside a send: a stale
    /// connection met there must still be closed when the request is sent through `SpawnAside`,
    /// with nothing sent after it.
    #[actix_rt::test]
    async fn a_stale_pooled_connection_met_in_a_send_is_closed_without_further_traffic() {
        let (port, closes) =
            crate::test_servers::keep_alive_server(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let client = awc::Client::builder()
            .connector(awc::Connector::new().conn_keep_alive(Duration::from_millis(50)))
            .finish();
        let url = format!("http://127.0.0.1:{port}/");
        let first = SpawnAside(client.get(&url).send()).await;
        assert!(answered(first).await, "the first request failed");
        // The first connection goes back to the pool and outlives its keep-alive.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            closes.try_recv().is_err(),
            "the pooled connection closed early"
        );
        // The second send finds it stale and awc's pool lets it go inside the send (dropped at once
        // on plain HTTP; a graceful close task would be spawned there for TLS).
        let second = SpawnAside(client.get(&url).send()).await;
        assert!(answered(second).await, "the second request failed");
        // With nothing else sent, the stale connection still closes.
        let mut closed = None;
        for _ in 0..100 {
            if let Ok(index) = closes.try_recv() {
                closed = Some(index);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            closed,
            Some(0),
            "the stale connection was not the one closed"
        );
    }
}
