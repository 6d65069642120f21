//! The shared decode step (`--shared-steps`): one clock that every generation follows, as in a
//! batching engine, where each step of the model produces the next token of every running
//! sequence at once.
//!
//! A thread of its own counts the steps (a sleep to each step's absolute time, so that the count
//! does not drift) and publishes each in a watch channel; every generation waits for the count to
//! move. Streams started at different moments thus get their tokens at the same moments, woken by
//! the same event, which no per-completion timer gives: each would be rounded up to the timer's
//! next millisecond on its own.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// A step later than this after its time (a busy machine) keeps the schedule; a longer pause (the
/// process was stopped) starts the schedule again from its end, as the per-completion pace does.
const LATE: Duration = Duration::from_millis(5);

/// The step clock. Its thread ends once the clock and every generation following it are gone.
#[derive(Debug)]
pub(crate) struct Steps(watch::Receiver<u64>);

impl Steps {
    /// Starts a clock with a step every `period` (which must not be zero).
    pub(crate) fn start(period: Duration) -> std::io::Result<Self> {
        Self::spawn(period).map(|(steps, _thread)| steps)
    }

    fn spawn(period: Duration) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (tx, rx) = watch::channel(0);
        let thread = std::thread::Builder::new()
            .name("mock-steps".into())
            .spawn(move || count(&tx, period))?;
        Ok((Self(rx), thread))
    }

    /// A clock driven by hand (`Sender::send_replace` is a step), for tests.
    #[cfg(test)]
    fn manual() -> (watch::Sender<u64>, Self) {
        let (tx, rx) = watch::channel(0);
        (tx, Self(rx))
    }

    /// A follower of the clock, waiting for the step after the current one.
    pub(crate) fn follow(&self) -> Step {
        let mut rx = self.0.clone();
        rx.mark_unchanged();
        Step(rx)
    }
}

/// One generation's view of the clock.
#[derive(Debug)]
pub(crate) struct Step(watch::Receiver<u64>);

impl Step {
    /// Waits for the next step. Steps missed while the generation was busy are not made up: one
    /// token per step observed. If the clock is gone (never while the server runs), waits forever.
    pub(crate) async fn next(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn count(tx: &watch::Sender<u64>, period: Duration) {
    let mut due = Instant::now() + period;
    let mut step = 0u64;
    while !tx.is_closed() {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > LATE {
            due = now;
        }
        step += 1;
        tx.send_replace(step);
        due += period;
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::Context;

    use futures_util::task::noop_waker_ref;

    use super::*;

    fn ready<F: Future>(f: std::pin::Pin<&mut F>) -> bool {
        f.poll(&mut Context::from_waker(noop_waker_ref()))
            .is_ready()
    }

    #[test]
    fn every_follower_moves_on_the_same_step() {
        let (tx, steps) = Steps::manual();
        tx.send_replace(7);
        // Two generations that started at different moments: neither takes the current step.
        let mut a = steps.follow();
        let mut b = steps.follow();
        {
            let mut fa = pin!(a.next());
            let mut fb = pin!(b.next());
            assert!(!ready(fa.as_mut()));
            assert!(!ready(fb.as_mut()));
            tx.send_replace(8);
            assert!(ready(fa.as_mut()));
            assert!(ready(fb.as_mut()));
        }
        // Each step releases one token: the next waits for the step after.
        let mut fa = pin!(a.next());
        assert!(!ready(fa.as_mut()));
    }

    #[test]
    fn missed_steps_give_one_token_not_a_burst() {
        let (tx, steps) = Steps::manual();
        let mut a = steps.follow();
        for step in 1..=5 {
            tx.send_replace(step);
        }
        assert!(ready(pin!(a.next()).as_mut()));
        assert!(!ready(pin!(a.next()).as_mut()));
    }

    #[test]
    fn the_clock_counts_and_its_thread_ends_with_its_followers() {
        let (steps, thread) = Steps::spawn(Duration::from_millis(1)).expect("thread");
        let mut a = steps.follow();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            for _ in 0..3 {
                a.next().await;
            }
        });
        assert!(*a.0.borrow() >= 3);
        assert!(!thread.is_finished());
        drop(a);
        drop(steps);
        // The next step finds no follower: the thread ends (bounded wait, not a timing check).
        let mut waited = 0;
        while !thread.is_finished() && waited < 500 {
            std::thread::sleep(Duration::from_millis(10));
            waited += 1;
        }
        assert!(
            thread.is_finished(),
            "the step thread outlived its followers"
        );
    }
}
