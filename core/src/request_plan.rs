//! One request's plan: its attempts, its deadlines, and what each failure means.
//!
//! A [`RequestPlan`] is the small value every request carries through the proxy or the client
//! actor. It combines the [`RetryPlan`] (how many attempts, what each failure leads to) with one
//! [`StreamWatch`] per attempt (first byte, silence between chunks, total), so that the attempt
//! bound holds across every way a request can fail: a missing first byte, a stall while the body
//! is collected, a refused connection, a 5xx. It needs no lock and no actor: the shell checks it
//! against the lock-free [`Snapshot`](crate::Snapshot) of the supervisor and reports the hangs it
//! finds.
//!
//! Rules on top of the retry plan's, in the order they apply:
//!
//! 1. **Evidence of life beats a deadline.** A first-byte or stall deadline measures the
//!    server's silence, not the length of an answer. When it passes, [`RequestPlan::check`] is
//!    given the last time the attempt's generation showed life (its progress counter grew, or
//!    another request on it got an answer; the supervision machine judges that and publishes it).
//!    Life within `life_window` (the progress timeout) → no outcome: the attempt keeps waiting,
//!    until `life_window` after that sign of life, or until `stream.max_request_time` after it was
//!    sent, whichever comes first. Past `max_request_time` with the server still alive →
//!    [`AttemptOutcome::TookTooLong`]: this request alone is cut (and retried at once on the same
//!    server if nothing reached its client). With no sign of life → [`AttemptOutcome::FirstByteTimeout`]
//!    before the first byte, [`AttemptOutcome::Stall`] after it. The total budget, when set, ends
//!    the attempt whatever the life: [`AttemptOutcome::DeadlineExceeded`].
//! 2. A silent deadline is a hang to report against the attempt's generation
//!    ([`AttemptOutcome::hang_cause`]), whatever happens to the request. A request that waits on
//!    a living server reports nothing.
//! 3. Once bytes reached the client ([`RequestPlan::reached_client`]) nothing is replayed. A
//!    stream continuation is the one exception: when the shell judged a cut stream resumable
//!    ([`StreamResume`](crate::StreamResume)) it asks [`RequestPlan::decide_cut`], which decides as
//!    if nothing had reached the client (the same wait for the next generation) and answers
//!    [`Next::Continue`] instead of a retry: the continuation asks only for the rest of the
//!    answer, so nothing the client saw is sent twice. It begins a new part of the request, with
//!    the whole attempt bound to reach its own first byte.
//! 4. A refused or broken connection may be a dead server or only a stale keep-alive connection:
//!    [`Next::Recheck`] waits briefly (`base_delay` × attempts) for a new generation and otherwise
//!    retries the same server.
//! 5. Without restarts (report-only), a hang is retried on the same server after `base_delay`.

use core::time::Duration;

use crate::{
    AttemptOutcome, Generation, GiveUpReason, Hang, RetryConfig, RetryDecision, RetryPlan,
    StreamDeadlines, StreamTimeout, StreamWatch,
};

/// What a request needs to know to plan its attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestConfig {
    /// Attempts and backoff.
    pub retry: RetryConfig,
    /// First byte, between chunks, total, and how long to wait past them on a living server.
    pub deadlines: StreamDeadlines,
    /// How recent a sign of life must be to beat a deadline (the progress timeout: the silence
    /// after which a busy server counts as stalled). Default 15 s.
    pub life_window: Duration,
    /// Whether a hang leads to a restart (and the retry waits for the next generation).
    pub enable_restart: bool,
}

impl RequestConfig {
    /// The request settings of a core configuration.
    #[must_use]
    pub fn from_core(core: &crate::CoreConfig, enable_restart: bool) -> Self {
        RequestConfig {
            retry: core.retry,
            deadlines: core.stream,
            life_window: core.progress.progress_timeout,
            enable_restart,
        }
    }
}

impl Default for RequestConfig {
    fn default() -> Self {
        RequestConfig::from_core(&crate::CoreConfig::default(), true)
    }
}

/// What to do with the request next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The request is answered.
    Done,
    /// Send it again at once, to the server that is ready.
    RetryNow,
    /// Send it again after this delay, to the server that is ready then.
    RetryAfter(Duration),
    /// The server is hung or gone: send it again once this generation is ready.
    WaitForGeneration(Generation),
    /// The connection failed: wait up to `within` for generation `next` (a server that died is
    /// being replaced); if none comes, the same server is still there and gets the retry.
    Recheck {
        /// The generation a restart would bring.
        next: Generation,
        /// How long to wait for it.
        within: Duration,
    },
    /// Resume the response where the client's copy ends: send the continuation once generation
    /// `after` is ready (waiting at most `within` for it when set, then to the generation that is
    /// there). Only [`RequestPlan::decide_cut`] answers it.
    Continue {
        /// The generation the continuation waits for.
        after: Generation,
        /// How long to wait for it (`None`: as long as any request waits for a ready server).
        within: Option<Duration>,
    },
    /// Stop and tell the client why.
    GiveUp(GiveUpReason),
}

/// The plan's answer after an attempt failed or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to do with the request.
    pub next: Next,
    /// A hang to report to the supervisor, if the attempt found one.
    pub report: Option<Hang>,
}

/// The plan of one request; see the module docs.
#[derive(Clone, Debug)]
pub struct RequestPlan {
    config: RequestConfig,
    retry: RetryPlan,
    watch: Option<StreamWatch>,
    /// Until when the current attempt waits past its silent deadline, on the strength of life.
    waits_until: Option<Duration>,
    generation: Generation,
    reached_client: bool,
}

impl RequestPlan {
    /// A plan for a request not sent yet.
    #[must_use]
    pub fn new(config: RequestConfig) -> Self {
        RequestPlan {
            config,
            retry: RetryPlan::new(config.retry),
            watch: None,
            waits_until: None,
            generation: Generation::NONE,
            reached_client: false,
        }
    }

    /// An attempt is sent at `now` to `generation`: its deadlines start.
    pub fn begin(&mut self, now: Duration, generation: Generation) {
        self.generation = generation;
        self.watch = Some(StreamWatch::new(self.config.deadlines, now));
        self.waits_until = None;
    }

    /// The deadlines each attempt gets.
    #[must_use]
    pub fn deadlines(&self) -> StreamDeadlines {
        self.config.deadlines
    }

    /// The generation of the latest attempt.
    #[must_use]
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Attempts decided so far.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.retry.attempts()
    }

    /// A chunk of the response arrived from the server at `now`.
    pub fn on_chunk(&mut self, now: Duration) {
        if let Some(watch) = self.watch.as_mut() {
            watch.on_chunk(now);
            // The server spoke: its silence is measured afresh.
            self.waits_until = None;
        }
    }

    /// Whether the current attempt has seen its first byte.
    #[must_use]
    pub fn first_byte_seen(&self) -> bool {
        self.watch.is_some_and(|w| w.first_byte_seen())
    }

    /// Bytes of the response reached the client: from now on nothing is replayed.
    pub fn reached_client(&mut self) {
        self.reached_client = true;
    }

    /// Whether bytes of the response already reached the client.
    #[must_use]
    pub fn has_reached_client(&self) -> bool {
        self.reached_client
    }

    /// When the current attempt must be looked at next (`None` before any attempt): its silent
    /// deadline, or the end of the wait that life earned it.
    #[must_use]
    pub fn deadline(&self) -> Option<Duration> {
        let watch = self.watch?;
        let silence = watch.deadline();
        Some(match self.waits_until {
            Some(until) if until > silence => match self.total_deadline() {
                Some(total) => until.min(total),
                None => until,
            },
            _ => silence,
        })
    }

    fn total_deadline(&self) -> Option<Duration> {
        let watch = self.watch?;
        let total = self.config.deadlines.total?;
        Some(watch.sent_at().saturating_add(total))
    }

    /// Whether the current attempt ended at `now`, given `life`: the last sign of life of the
    /// attempt's generation, if any. `None`: keep waiting, until [`deadline`](Self::deadline).
    /// The rule is in the module docs.
    pub fn check(&mut self, now: Duration, life: Option<Duration>) -> Option<AttemptOutcome> {
        let watch = self.watch?;
        if self.total_deadline().is_some_and(|total| now >= total) {
            return Some(AttemptOutcome::DeadlineExceeded);
        }
        let silent = match watch.check(now)? {
            StreamTimeout::Total => return Some(AttemptOutcome::DeadlineExceeded),
            StreamTimeout::FirstByte => AttemptOutcome::FirstByteTimeout,
            StreamTimeout::Stall => AttemptOutcome::Stall,
        };
        let window = self.config.life_window;
        let alive = life.filter(|at| now.saturating_sub(*at) < window);
        let Some(seen) = alive else {
            return Some(silent);
        };
        let limit = watch
            .sent_at()
            .saturating_add(self.config.deadlines.max_request_time);
        if now >= limit {
            return Some(AttemptOutcome::TookTooLong);
        }
        self.waits_until = Some(seen.saturating_add(window).min(limit));
        None
    }

    /// Decides after the current attempt ended with `outcome`; see the module docs.
    pub fn decide(&mut self, outcome: AttemptOutcome) -> Decision {
        let retry = self
            .retry
            .decide(outcome, self.generation, self.reached_client);
        self.follow(outcome, retry)
    }

    /// The request's next step once its retry plan decided `retry` after `outcome`.
    fn follow(&mut self, outcome: AttemptOutcome, retry: RetryDecision) -> Decision {
        let generation = self.generation;
        let report = outcome
            .hang_cause()
            .map(|cause| Hang::new(generation, cause));
        let next = match retry {
            RetryDecision::Done => Next::Done,
            RetryDecision::RetryNow => Next::RetryNow,
            RetryDecision::RetryAfter(delay) => Next::RetryAfter(delay),
            RetryDecision::GiveUp(reason) => Next::GiveUp(reason),
            RetryDecision::WaitForGeneration(next) if report.is_none() => Next::Recheck {
                next,
                within: self
                    .config
                    .retry
                    .base_delay
                    .saturating_mul(self.retry.attempts().max(1)),
            },
            RetryDecision::WaitForGeneration(next) if self.config.enable_restart => {
                Next::WaitForGeneration(next)
            }
            RetryDecision::WaitForGeneration(_) => {
                // No restart will come: the same server gets the retry after a pause.
                let pause = self.config.retry.base_delay;
                if pause.is_zero() {
                    Next::RetryNow
                } else {
                    Next::RetryAfter(pause)
                }
            }
        };
        self.watch = None;
        Decision { next, report }
    }

    /// Decides after a stream that had reached the client was cut with `outcome` and judged
    /// resumable: as [`decide`](Self::decide) would if nothing had reached the client (the same
    /// hang report, the same wait for the next generation), but a retry becomes
    /// [`Next::Continue`]. The continuation begins a new part of the request
    /// ([`RetryPlan::decide_cut`](crate::RetryPlan::decide_cut)): the cut attempt delivered and
    /// is not counted as failed, and the continuation's own attempts may be retried, within the
    /// attempt bound, until its first byte reaches the client again.
    pub fn decide_cut(&mut self, outcome: AttemptOutcome) -> Decision {
        let generation = self.generation;
        let was = core::mem::replace(&mut self.reached_client, false);
        let retry = self.retry.decide_cut(outcome, generation);
        let decision = self.follow(outcome, retry);
        let next = match decision.next {
            Next::RetryNow | Next::RetryAfter(_) => Next::Continue {
                after: generation,
                within: None,
            },
            Next::WaitForGeneration(next) => Next::Continue {
                after: next,
                within: None,
            },
            Next::Recheck { next, within } => Next::Continue {
                after: next,
                within: Some(within),
            },
            ended => {
                self.reached_client = was;
                ended
            }
        };
        Decision {
            next,
            report: decision.report,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HangCause;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_silent_first_byte_deadline_is_a_hang_and_the_retry_waits_for_the_next_generation() {
        let mut plan = RequestPlan::new(RequestConfig::default());
        plan.begin(s(10), Generation(3));
        assert_eq!(plan.deadline(), Some(s(70)));
        assert_eq!(plan.check(s(69), None), None);
        let outcome = plan.check(s(70), None).unwrap();
        assert_eq!(outcome, AttemptOutcome::FirstByteTimeout);
        assert_eq!(
            plan.decide(outcome),
            Decision {
                next: Next::WaitForGeneration(Generation(4)),
                report: Some(Hang::new(Generation(3), HangCause::FirstByteTimeout)),
            }
        );
    }

    #[test]
    fn a_stall_after_bytes_reached_the_client_is_reported_and_never_replayed() {
        let mut plan = RequestPlan::new(RequestConfig::default());
        plan.begin(s(0), Generation(1));
        plan.on_chunk(s(1));
        plan.reached_client();
        assert_eq!(plan.check(s(31), None), Some(AttemptOutcome::Stall));
        let decision = plan.decide(AttemptOutcome::Stall);
        assert_eq!(decision.next, Next::GiveUp(GiveUpReason::BytesAlreadySent));
        assert_eq!(
            decision.report,
            Some(Hang::new(Generation(1), HangCause::StreamStall))
        );
    }

    #[test]
    fn a_resumable_cut_continues_on_the_next_generation_as_a_new_part_of_the_request() {
        let mut plan = RequestPlan::new(RequestConfig::default());
        // Two 5xx before the first byte: two of the first part's four attempts.
        let busy = AttemptOutcome::ServerError { status: 500 };
        for at in 0..2 {
            plan.begin(s(at), Generation(1));
            assert!(matches!(plan.decide(busy).next, Next::RetryAfter(_)));
        }
        plan.begin(s(2), Generation(1));
        plan.on_chunk(s(3));
        plan.reached_client();
        let decision = plan.decide_cut(AttemptOutcome::Stall);
        assert_eq!(
            decision,
            Decision {
                next: Next::Continue {
                    after: Generation(2),
                    within: None
                },
                report: Some(Hang::new(Generation(1), HangCause::StreamStall)),
            }
        );
        assert!(
            !plan.has_reached_client(),
            "the continuation may be retried until it is seen"
        );
        assert_eq!(
            plan.attempts(),
            0,
            "the cut attempt delivered: not a failed one"
        );
        // A server that exited: a brief recheck for its successor.
        plan.begin(s(4), Generation(2));
        plan.reached_client();
        assert_eq!(
            plan.decide_cut(AttemptOutcome::ConnectionReset).next,
            Next::Continue {
                after: Generation(3),
                within: Some(Duration::from_millis(250))
            }
        );
        // The continuation's own failures before its first byte are bounded like any request's:
        // four attempts, whatever the earlier parts met.
        for at in 0..3 {
            plan.begin(s(5 + at), Generation(3));
            assert!(matches!(
                plan.decide(AttemptOutcome::ConnectionRefused).next,
                Next::Recheck { .. }
            ));
        }
        plan.begin(s(9), Generation(3));
        assert_eq!(
            plan.decide(AttemptOutcome::ConnectionRefused).next,
            Next::GiveUp(GiveUpReason::RetriesExhausted { attempts: 4 })
        );
        // Nothing is ever replayed: a cut the shell did not judge resumable gives up.
        plan.begin(s(10), Generation(3));
        plan.reached_client();
        assert_eq!(
            plan.decide(AttemptOutcome::Stall).next,
            Next::GiveUp(GiveUpReason::BytesAlreadySent)
        );
    }

    #[test]
    fn a_refused_connection_rechecks_briefly_and_reports_nothing() {
        let mut plan = RequestPlan::new(RequestConfig::default());
        plan.begin(s(0), Generation(2));
        let decision = plan.decide(AttemptOutcome::ConnectionRefused);
        assert_eq!(decision.report, None);
        assert_eq!(
            decision.next,
            Next::Recheck {
                next: Generation(3),
                within: Duration::from_millis(250)
            }
        );
        plan.begin(s(1), Generation(2));
        let decision = plan.decide(AttemptOutcome::ConnectionReset);
        assert_eq!(
            decision.next,
            Next::Recheck {
                next: Generation(3),
                within: Duration::from_millis(500)
            }
        );
    }

    #[test]
    fn without_restarts_a_hang_is_retried_on_the_same_server_after_a_pause() {
        let mut plan = RequestPlan::new(RequestConfig {
            enable_restart: false,
            ..RequestConfig::default()
        });
        plan.begin(s(0), Generation(1));
        let decision = plan.decide(AttemptOutcome::FirstByteTimeout);
        assert_eq!(decision.next, Next::RetryAfter(Duration::from_millis(250)));
        assert!(decision.report.is_some(), "the hang is still reported");
    }

    #[test]
    fn the_total_budget_ends_the_request() {
        let mut plan = RequestPlan::new(RequestConfig {
            deadlines: StreamDeadlines {
                total: Some(s(5)),
                ..StreamDeadlines::default()
            },
            ..RequestConfig::default()
        });
        plan.begin(s(0), Generation(1));
        assert_eq!(
            plan.check(s(5), None),
            Some(AttemptOutcome::DeadlineExceeded)
        );
        let decision = plan.decide(AttemptOutcome::DeadlineExceeded);
        assert_eq!(decision.next, Next::GiveUp(GiveUpReason::DeadlineExceeded));
        assert_eq!(decision.report, None);
    }

    #[test]
    fn life_beats_a_deadline_until_the_request_has_waited_its_maximum() {
        let mut plan = RequestPlan::new(RequestConfig::default());
        plan.begin(s(0), Generation(1));
        // Tokens flow on the server (its counter grew 2 s ago): no outcome, no report.
        assert_eq!(plan.check(s(60), Some(s(58))), None);
        // The wait lasts as long as the life is recent.
        assert_eq!(plan.deadline(), Some(s(73)));
        assert_eq!(plan.check(s(73), Some(s(72))), None);
        assert_eq!(plan.deadline(), Some(s(87)));
        // Life stopped 15 s ago: now the silence is a hang.
        assert_eq!(
            plan.check(s(87), Some(s(72))),
            Some(AttemptOutcome::FirstByteTimeout)
        );
        // Life that goes on forever: the request alone is cut at 30 min, and retried at once.
        plan.begin(s(100), Generation(1));
        let mut now = s(160);
        loop {
            match plan.check(now, Some(now - s(1))) {
                None => now = plan.deadline().unwrap(),
                Some(outcome) => {
                    assert_eq!(outcome, AttemptOutcome::TookTooLong);
                    break;
                }
            }
        }
        assert_eq!(now, s(100 + 1800));
        let decision = plan.decide(AttemptOutcome::TookTooLong);
        assert_eq!(
            decision,
            Decision {
                next: Next::RetryNow,
                report: None
            }
        );
    }

    #[test]
    fn a_chunk_measures_the_silence_afresh() {
        let mut plan = RequestPlan::new(RequestConfig::default());
        plan.begin(s(0), Generation(1));
        assert_eq!(plan.check(s(60), Some(s(55))), None);
        plan.on_chunk(s(61));
        assert_eq!(plan.deadline(), Some(s(91)));
        assert_eq!(plan.check(s(91), None), Some(AttemptOutcome::Stall));
    }

    #[test]
    fn the_attempt_bound_holds_across_every_kind_of_failure() {
        let mut plan = RequestPlan::new(RequestConfig::default());
        let failures = [
            AttemptOutcome::FirstByteTimeout,
            AttemptOutcome::Stall,
            AttemptOutcome::ConnectionReset,
            AttemptOutcome::ServerError { status: 500 },
        ];
        for (i, outcome) in failures.into_iter().enumerate() {
            plan.begin(s(i as u64), Generation(1));
            let next = plan.decide(outcome).next;
            if i < 3 {
                assert!(!matches!(next, Next::GiveUp(_)), "{next:?}");
            } else {
                assert_eq!(
                    next,
                    Next::GiveUp(GiveUpReason::RetriesExhausted { attempts: 4 })
                );
            }
        }
    }
}
