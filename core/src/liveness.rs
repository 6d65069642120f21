//! Liveness of a ready server behind a green `/health`: the progress counter while busy, the
//! canary while idle.
//!
//! [`ProgressWatch`] holds the rule for one counter; [`Liveness`] adds what the supervisor needs
//! around it for one generation: when to sample and when to send the canary, what a `/metrics`
//! that does not answer means, and that one verdict per generation is enough (the restart
//! follows it).
//!
//! It also keeps the generation's **last sign of life**, which beats deadlines: the progress
//! counter growing, or requests getting answers (the count of answers grew). Answering a health
//! check is not one: every model server's `/health` stays green through an engine deadlock. The
//! server *shows life* while that sign is less than `progress_timeout` old. A flat counter with
//! requests in flight is no stall while answers keep coming.

use core::time::Duration;

use crate::{ProgressConfig, ProgressVerdict, ProgressWatch};

/// What the sampler read from the server's progress counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ProgressReading {
    /// The counter's value.
    Counter(u64),
    /// `/metrics` did not answer at all (timeout, refused, reset). A server that cannot answer
    /// `/metrics` while requests are in flight makes no progress either (llama.cpp serves it from
    /// the loop that generates), so the counter counts as unchanged; only meaningful when the
    /// counter's name is known.
    NoAnswer,
    /// The server answered, but without the counter (404, not text): no verdict either way.
    NotServed,
}

/// What the detectors should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LivenessStep {
    /// Nothing to look at.
    Nothing,
    /// Requests are in flight: read the progress counter.
    SampleProgress,
    /// Idle for the canary interval: send the one-token canary.
    SendCanary,
}

/// The liveness detectors of one generation; see the module docs.
#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    watch: ProgressWatch,
    last_counter: Option<u64>,
    last_canary: Duration,
    reported: bool,
    life: Option<Duration>,
    answered: Option<u64>,
    /// The last real reading of the counter (growth between two of them is life).
    last_read: Option<u64>,
    /// Whether this generation's first reading was asked for (taken even when idle, so that
    /// growth shows at the first sample of a burst).
    baseline_asked: bool,
}

impl Liveness {
    /// Detectors for a generation that became ready at `now`.
    #[must_use]
    pub fn new(config: ProgressConfig, now: Duration) -> Self {
        Liveness {
            watch: ProgressWatch::new(config, now),
            last_counter: None,
            last_canary: now,
            reported: false,
            life: None,
            answered: None,
            last_read: None,
            baseline_asked: false,
        }
    }

    /// A new generation started at `now`: fresh counter, fresh clocks, no verdict, no life yet.
    pub fn reset(&mut self, now: Duration) {
        self.watch.reset(now);
        self.last_counter = None;
        self.last_canary = now;
        self.reported = false;
        self.life = None;
        self.last_read = None;
        self.baseline_asked = false;
    }

    /// The last sign of life of this generation.
    #[must_use]
    pub fn life(&self) -> Option<Duration> {
        self.life
    }

    /// Whether the server shows life at `now`: a sign of life less than `progress_timeout` old.
    #[must_use]
    pub fn shows_life(&self, now: Duration) -> bool {
        self.life
            .is_some_and(|at| now.saturating_sub(at) < self.watch.config().progress_timeout)
    }

    /// `answered` requests got an answer so far (a count that only grows); growth since the last
    /// call is a sign of life at `now`. The first call only sets the baseline.
    pub fn on_answers(&mut self, now: Duration, answered: u64) {
        if self.answered.is_some_and(|before| answered > before) {
            self.life = Some(now);
        }
        self.answered = Some(answered);
    }

    /// What to do at `now` with `in_flight` requests open, the last of which started or ended at
    /// `last_activity`. After a verdict, nothing until [`reset`](Self::reset).
    pub fn step(
        &mut self,
        now: Duration,
        in_flight: usize,
        last_activity: Duration,
    ) -> LivenessStep {
        if self.reported {
            return LivenessStep::Nothing;
        }
        if in_flight > 0 || !self.baseline_asked {
            self.baseline_asked = true;
            return LivenessStep::SampleProgress;
        }
        if self
            .watch
            .canary_due(now, in_flight, last_activity.max(self.last_canary))
        {
            return LivenessStep::SendCanary;
        }
        // Idle and no canary due: keep the busy clock honest.
        let _ = self.watch.on_sample(now, 0, 0);
        LivenessStep::Nothing
    }

    /// A reading of the progress counter at `now` with `in_flight` requests open. Answers how
    /// long the counter has been flat when that is a hang (once per generation).
    pub fn on_progress(
        &mut self,
        now: Duration,
        reading: ProgressReading,
        in_flight: usize,
    ) -> Option<Duration> {
        if self.reported {
            return None;
        }
        let counter = match reading {
            ProgressReading::NotServed => return None,
            ProgressReading::NoAnswer => self.last_counter.unwrap_or(0),
            ProgressReading::Counter(value) => value,
        };
        if let ProgressReading::Counter(value) = reading {
            if self.last_read.is_some_and(|before| value > before) {
                self.life = Some(now);
            }
            self.last_read = Some(value);
        }
        self.last_counter = Some(counter);
        match self.watch.on_sample(now, counter, in_flight) {
            ProgressVerdict::Fine => None,
            // Answers kept coming: the counter is not the whole story.
            ProgressVerdict::Stalled { .. } if self.shows_life(now) => None,
            ProgressVerdict::Stalled { for_ } => {
                self.reported = true;
                Some(for_)
            }
        }
    }

    /// The canary sent earlier ended at `now`; `answered` is false when it got no answer within
    /// the canary timeout. Answers whether that is a hang (once per generation).
    pub fn on_canary(&mut self, now: Duration, answered: bool) -> bool {
        // Whatever the answer, the canary counts as activity: the next one is an interval away.
        self.last_canary = now;
        if answered || self.reported {
            return false;
        }
        self.reported = true;
        true
    }

    /// Whether this generation already got its verdict.
    #[must_use]
    pub fn reported(&self) -> bool {
        self.reported
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn busy_samples_idle_sends_the_canary_after_the_interval() {
        let mut l = Liveness::new(ProgressConfig::default(), s(0));
        // One baseline reading per generation, busy or not.
        assert_eq!(l.step(s(0), 0, s(0)), LivenessStep::SampleProgress);
        assert_eq!(l.step(s(1), 2, s(1)), LivenessStep::SampleProgress);
        assert_eq!(l.step(s(5), 0, s(1)), LivenessStep::Nothing);
        assert_eq!(l.step(s(11), 0, s(1)), LivenessStep::SendCanary);
        assert!(!l.on_canary(s(12), true));
        assert_eq!(l.step(s(13), 0, s(1)), LivenessStep::Nothing);
        assert_eq!(l.step(s(22), 0, s(1)), LivenessStep::SendCanary);
    }

    #[test]
    fn a_flat_counter_while_busy_is_reported_once() {
        let mut l = Liveness::new(ProgressConfig::default(), s(0));
        assert_eq!(l.on_progress(s(0), ProgressReading::Counter(10), 1), None);
        assert_eq!(l.on_progress(s(10), ProgressReading::NoAnswer, 1), None);
        assert_eq!(
            l.on_progress(s(15), ProgressReading::Counter(10), 1),
            Some(s(15))
        );
        assert!(l.reported());
        assert_eq!(l.on_progress(s(20), ProgressReading::Counter(10), 1), None);
        assert_eq!(l.step(s(20), 1, s(0)), LivenessStep::Nothing);
        l.reset(s(30));
        assert_eq!(l.step(s(30), 1, s(0)), LivenessStep::SampleProgress);
        assert_eq!(l.on_progress(s(31), ProgressReading::NoAnswer, 1), None);
        assert_eq!(l.life(), None, "silence is no sign of life");
    }

    #[test]
    fn no_answer_counts_from_zero_and_not_served_gives_no_verdict() {
        let mut l = Liveness::new(ProgressConfig::default(), s(0));
        assert_eq!(l.on_progress(s(0), ProgressReading::NoAnswer, 1), None);
        assert_eq!(l.on_progress(s(14), ProgressReading::NotServed, 1), None);
        assert_eq!(
            l.on_progress(s(15), ProgressReading::NoAnswer, 1),
            Some(s(15))
        );
    }

    #[test]
    fn life_is_counter_growth_or_answers_and_lasts_the_progress_timeout() {
        let mut l = Liveness::new(ProgressConfig::default(), s(0));
        assert!(!l.shows_life(s(0)));
        l.on_progress(s(20), ProgressReading::Counter(7), 1);
        assert_eq!(l.life(), None, "a first reading is only a baseline");
        l.on_progress(s(21), ProgressReading::Counter(9), 1);
        assert_eq!(l.life(), Some(s(21)));
        assert!(l.shows_life(s(35)));
        assert!(!l.shows_life(s(36)));
        l.on_answers(s(30), 4);
        assert_eq!(l.life(), Some(s(21)), "a first count is only a baseline");
        l.on_answers(s(31), 5);
        assert_eq!(l.life(), Some(s(31)));
        l.reset(s(40));
        assert_eq!(l.life(), None);
    }

    #[test]
    fn a_flat_counter_is_no_stall_while_answers_keep_coming() {
        let mut l = Liveness::new(ProgressConfig::default(), s(0));
        l.on_answers(s(0), 0);
        l.on_progress(s(0), ProgressReading::Counter(3), 2);
        l.on_answers(s(14), 1);
        assert_eq!(l.on_progress(s(20), ProgressReading::Counter(3), 2), None);
        assert!(!l.reported());
        assert_eq!(
            l.on_progress(s(29), ProgressReading::Counter(3), 2),
            Some(s(29))
        );
    }

    #[test]
    fn an_unanswered_canary_is_a_hang_once() {
        let mut l = Liveness::new(ProgressConfig::default(), s(0));
        assert!(l.on_canary(s(20), false));
        assert!(!l.on_canary(s(30), false));
    }
}
