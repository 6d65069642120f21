//! Deadlock detectors that work while `/health` stays green.
//!
//! Every common model server keeps answering its health check while its engine is deadlocked.
//! Two signals see through that:
//!
//! * **Busy: token progress.** While requests are in flight, a progress counter the server
//!   exports (generated tokens in total) must grow. In flight continuously for
//!   `progress_timeout` with no growth → [`ProgressVerdict::Stalled`].
//! * **Idle: a canary.** When nothing is in flight and nothing has completed for
//!   `canary_interval`, a one-token request is due; one that takes `canary_timeout` is a hang.
//!   Never while busy: it would queue behind real work and cry wolf.

use core::time::Duration;

use crate::InvalidConfig;

/// Knobs of the busy and idle deadlock detectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct ProgressConfig {
    /// Requests in flight this long while the progress counter does not grow = a hang.
    /// Default 15 s.
    pub progress_timeout: Duration,
    /// Idle this long (nothing in flight, nothing completed) → send a canary. Default 10 s;
    /// `Duration::ZERO` turns the canary off.
    pub canary_interval: Duration,
    /// A canary that takes longer than this is a hang. Default 10 s.
    pub canary_timeout: Duration,
}

impl Default for ProgressConfig {
    fn default() -> Self {
        ProgressConfig {
            progress_timeout: Duration::from_secs(15),
            canary_interval: Duration::from_secs(10),
            canary_timeout: Duration::from_secs(10),
        }
    }
}

impl ProgressConfig {
    /// Checks `progress_timeout > 0`, and `canary_timeout > 0` when the canary is on.
    ///
    /// # Errors
    /// [`InvalidConfig::ZeroDuration`] naming the field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.progress_timeout.is_zero() {
            return Err(InvalidConfig::ZeroDuration {
                field: "progress.progress_timeout",
            });
        }
        if self.canary_enabled() && self.canary_timeout.is_zero() {
            return Err(InvalidConfig::ZeroDuration {
                field: "progress.canary_timeout",
            });
        }
        Ok(())
    }

    /// Whether the idle canary is on (`canary_interval` is not zero).
    #[must_use]
    pub fn canary_enabled(&self) -> bool {
        !self.canary_interval.is_zero()
    }
}

/// The busy detector's verdict after a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ProgressVerdict {
    /// Idle, or busy and progressing, or busy for less than the timeout.
    Fine,
    /// Busy with no progress for `for_` (at least `progress_timeout`): a hang.
    Stalled {
        /// How long the counter has been flat while requests were in flight.
        for_: Duration,
    },
}

/// Watches the progress counter while busy and says when an idle canary is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressWatch {
    config: ProgressConfig,
    /// Last counter value seen (busy or idle); `None` after a reset.
    last_counter: Option<u64>,
    /// Since when the counter has been flat while busy; `None` when idle.
    flat_since: Option<Duration>,
}

impl ProgressWatch {
    /// A watch starting at `now` with no sample yet.
    #[must_use]
    pub fn new(config: ProgressConfig, now: Duration) -> Self {
        let mut watch = ProgressWatch {
            config,
            last_counter: None,
            flat_since: None,
        };
        watch.reset(now);
        watch
    }

    /// A sample of the progress counter at `now` while `in_flight` requests are open.
    ///
    /// Busy clock: starts at the first sample with `in_flight > 0`, restarts whenever the counter
    /// changes (growth is progress; a drop means the server restarted and counts as a reset), and
    /// stops at a sample with `in_flight == 0`. Stalled when the clock has run for
    /// `progress_timeout` or more; it keeps answering `Stalled` until progress, idleness or a
    /// [`reset`](Self::reset).
    pub fn on_sample(&mut self, now: Duration, counter: u64, in_flight: usize) -> ProgressVerdict {
        let changed = self.last_counter != Some(counter);
        self.last_counter = Some(counter);
        if in_flight == 0 {
            self.flat_since = None;
            return ProgressVerdict::Fine;
        }
        let since = match self.flat_since {
            Some(since) if !changed => since,
            _ => {
                self.flat_since = Some(now);
                now
            }
        };
        let flat_for = now.saturating_sub(since);
        if flat_for >= self.config.progress_timeout {
            ProgressVerdict::Stalled { for_: flat_for }
        } else {
            ProgressVerdict::Fine
        }
    }

    /// A new generation started at `now`: forget the counter and the busy clock.
    pub fn reset(&mut self, _now: Duration) {
        self.last_counter = None;
        self.flat_since = None;
    }

    /// Whether a canary should be sent now: the canary is on, nothing is in flight, and nothing
    /// has happened since `last_activity` (the last request started or finished) for
    /// `canary_interval`.
    #[must_use]
    pub fn canary_due(&self, now: Duration, in_flight: usize, last_activity: Duration) -> bool {
        self.config.canary_enabled()
            && in_flight == 0
            && now.saturating_sub(last_activity) >= self.config.canary_interval
    }

    /// Whether a canary sent at `sent_at` and still unanswered at `now` counts as a hang.
    #[must_use]
    pub fn canary_overdue(&self, sent_at: Duration, now: Duration) -> bool {
        now.saturating_sub(sent_at) >= self.config.canary_timeout
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &ProgressConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn busy_with_a_flat_counter_stalls_after_the_timeout() {
        let mut w = ProgressWatch::new(ProgressConfig::default(), s(0));
        assert_eq!(w.on_sample(s(0), 100, 1), ProgressVerdict::Fine);
        assert_eq!(w.on_sample(s(10), 100, 2), ProgressVerdict::Fine);
        assert_eq!(w.on_sample(s(14), 100, 1), ProgressVerdict::Fine);
        assert_eq!(
            w.on_sample(s(15), 100, 1),
            ProgressVerdict::Stalled { for_: s(15) }
        );
        assert_eq!(
            w.on_sample(s(16), 100, 1),
            ProgressVerdict::Stalled { for_: s(16) }
        );
    }

    #[test]
    fn growth_or_a_drop_restarts_the_clock() {
        let mut w = ProgressWatch::new(ProgressConfig::default(), s(0));
        w.on_sample(s(0), 100, 1);
        assert_eq!(w.on_sample(s(14), 101, 1), ProgressVerdict::Fine);
        assert_eq!(w.on_sample(s(28), 101, 1), ProgressVerdict::Fine);
        // The server restarted: its counter starts again from zero.
        assert_eq!(w.on_sample(s(29), 0, 1), ProgressVerdict::Fine);
        assert_eq!(w.on_sample(s(43), 0, 1), ProgressVerdict::Fine);
        assert!(matches!(
            w.on_sample(s(44), 0, 1),
            ProgressVerdict::Stalled { .. }
        ));
    }

    #[test]
    fn idle_stops_the_busy_clock_and_reset_forgets_it() {
        let mut w = ProgressWatch::new(ProgressConfig::default(), s(0));
        w.on_sample(s(0), 5, 1);
        assert_eq!(w.on_sample(s(10), 5, 0), ProgressVerdict::Fine);
        assert_eq!(w.on_sample(s(20), 5, 1), ProgressVerdict::Fine);
        assert_eq!(w.on_sample(s(34), 5, 1), ProgressVerdict::Fine);
        w.reset(s(34));
        assert_eq!(w.on_sample(s(40), 5, 1), ProgressVerdict::Fine);
        assert!(matches!(
            w.on_sample(s(55), 5, 1),
            ProgressVerdict::Stalled { .. }
        ));
    }

    #[test]
    fn canary_is_due_only_when_idle_long_enough_and_enabled() {
        let w = ProgressWatch::new(ProgressConfig::default(), s(0));
        assert!(!w.canary_due(s(9), 0, s(0)));
        assert!(w.canary_due(s(10), 0, s(0)));
        assert!(!w.canary_due(s(100), 1, s(0)));
        assert!(!w.canary_overdue(s(10), s(19)));
        assert!(w.canary_overdue(s(10), s(20)));
        let off = ProgressWatch::new(
            ProgressConfig {
                canary_interval: Duration::ZERO,
                ..ProgressConfig::default()
            },
            s(0),
        );
        assert!(!off.canary_due(s(1000), 0, s(0)));
        assert_eq!(off.config().validate(), Ok(()));
    }
}
