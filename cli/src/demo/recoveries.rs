//! Following the supervisor while the demo runs: one line when the server stops answering and
//! respawn restarts it, one when the new generation is ready, and each restart's duration kept
//! for the closing table.

use std::cell::RefCell;

use respawn_core::Phase;
use tokio::sync::watch;

use super::progress::Progress;
use respawn::state::{LastRestart, SupervisorState};

/// The restarts seen so far, in order.
#[derive(Debug, Default)]
pub struct Recoveries {
    seen: RefCell<Vec<LastRestart>>,
}

impl Recoveries {
    /// Each restart's duration in milliseconds, in order.
    pub fn durations_ms(&self) -> Vec<u64> {
        self.seen.borrow().iter().map(|r| r.duration_ms).collect()
    }

    /// Records `last` if it is a restart not seen yet; answers whether it was new.
    pub fn note(&self, last: &LastRestart) -> bool {
        let mut seen = self.seen.borrow_mut();
        if seen.last() == Some(last) {
            return false;
        }
        seen.push(last.clone());
        true
    }

    /// Follows `state` until the channel closes, telling `progress` what happens.
    ///
    /// # Cancel safety
    /// Cancel safe: restarts already seen stay recorded; call [`Recoveries::catch_up`] after
    /// cancelling to record one that completed in the meantime.
    pub async fn follow(&self, mut state: watch::Receiver<SupervisorState>, progress: &Progress) {
        let mut phase = state.borrow_and_update().phase;
        loop {
            if state.changed().await.is_err() {
                return;
            }
            let current = state.borrow_and_update().clone();
            if current.phase == Phase::Restarting && phase != Phase::Restarting {
                progress.first_hang();
                let cause = current.last_cause.map_or("a hang", |cause| cause.as_str());
                progress.event(&format!(
                    "generation {} stopped answering ({cause}): respawn is restarting it",
                    current.generation.get()
                ));
            }
            phase = current.phase;
            if let Some(last) = &current.last_restart {
                if self.note(last) {
                    progress.event(&format!(
                        "generation {} ready: recovered {} ms after the hang was reported; the caught samples are retried",
                        current.generation.get(),
                        last.duration_ms
                    ));
                }
            }
        }
    }

    /// Records the last restart in `state` if [`Recoveries::follow`] has not seen it.
    pub fn catch_up(&self, state: &SupervisorState) {
        if let Some(last) = &state.last_restart {
            self.note(last);
        }
    }
}
