//! Retry plans: for one request, what to do after each attempt.
//!
//! The rules, in the order they are applied:
//!
//! 1. `Success` → [`Done`](RetryDecision::Done).
//! 2. `Cancelled` → give up ([`Cancelled`](GiveUpReason::Cancelled)): nobody is waiting.
//! 3. `ClientError` (4xx) → give up: the server rejected the request itself, a retry would too.
//!    `DeadlineExceeded` → give up ([`DeadlineExceeded`](GiveUpReason::DeadlineExceeded)): the
//!    request's own budget is spent.
//! 4. Bytes already reached the client → give up ([`BytesAlreadySent`](GiveUpReason::BytesAlreadySent)):
//!    a replay would send the client a second, different beginning. Never replay.
//! 5. That was the last attempt allowed (attempt `max_retries + 1`) → give up
//!    ([`RetriesExhausted`](GiveUpReason::RetriesExhausted)).
//! 6. `TookTooLong` → the server is alive but this request took too long: retry at once on the
//!    server that is there ([`RetryNow`](RetryDecision::RetryNow)).
//! 7. `FirstByteTimeout`, `Stall`, `ConnectionRefused`, `ConnectionReset` → the server of this
//!    generation is hung or gone ([`AttemptOutcome::means_server_hung`]): the retry goes to the
//!    next generation as soon as it is ready ([`WaitForGeneration`](RetryDecision::WaitForGeneration)).
//!    The timeouts are also the hang to report ([`AttemptOutcome::hang_cause`]); the first one
//!    triggers the restart, and the retry follows at once. [`RequestPlan`](crate::RequestPlan)
//!    refines this for refused connections and for a supervisor that does not restart.
//! 8. `ServerError` (5xx) → the server answers but failed: retry after an exponential backoff,
//!    `base_delay * 2^(attempt-1)` capped at `max_delay` ([`RetryNow`](RetryDecision::RetryNow)
//!    when that is zero).
//!
//! So every request ends, with `Done` or `GiveUp`, after at most `max_retries + 1` attempts. A
//! stream that reached its client and is continued after a cut ([`RetryPlan::decide_cut`])
//! begins a new part with the same bound: at most `max_retries + 1` attempts per part, and the
//! resume limit bounds the parts.

use core::time::Duration;

use crate::exponential::grow;
use crate::{Generation, GiveUpReason, HangCause, InvalidConfig};

/// How one attempt of a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum AttemptOutcome {
    /// The response arrived in full (or the server answered with a non-error status).
    Success,
    /// Nothing listens on the server's port (it is down or restarting).
    ConnectionRefused,
    /// The connection broke before the response was complete.
    ConnectionReset,
    /// No first byte of the response within the first-byte deadline.
    FirstByteTimeout,
    /// The streamed response went silent between chunks for too long.
    Stall,
    /// The server answered 5xx.
    ServerError {
        /// The HTTP status.
        status: u16,
    },
    /// The server answered 4xx.
    ClientError {
        /// The HTTP status.
        status: u16,
    },
    /// The client went away.
    Cancelled,
    /// The request's overall budget (`stream.total`) ran out: a budget, not a hang.
    DeadlineExceeded,
    /// The request's deadline passed while its server showed life, and it kept waiting until
    /// `stream.max_request_time`: this request alone took too long; the server is not hung.
    TookTooLong,
}

impl AttemptOutcome {
    /// Whether this outcome means the server of that generation is hung or gone, so that the
    /// retry belongs to the next generation: a deadline passed in silence, or the connection was
    /// refused or broken.
    #[must_use]
    pub const fn means_server_hung(self) -> bool {
        matches!(
            self,
            AttemptOutcome::ConnectionRefused
                | AttemptOutcome::ConnectionReset
                | AttemptOutcome::FirstByteTimeout
                | AttemptOutcome::Stall
        )
    }

    /// The hang this outcome is evidence of, to be reported: only a deadline that passed while
    /// the server kept silent. A refused or broken connection is not reported: a server that died
    /// is reported by whoever watches its process, and a stale keep-alive connection is no hang.
    #[must_use]
    pub const fn hang_cause(self) -> Option<HangCause> {
        match self {
            AttemptOutcome::FirstByteTimeout => Some(HangCause::FirstByteTimeout),
            AttemptOutcome::Stall => Some(HangCause::StreamStall),
            _ => None,
        }
    }
}

/// What to do with the request next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum RetryDecision {
    /// The request is answered; nothing more to do.
    Done,
    /// Send it again at once.
    RetryNow,
    /// Send it again after this delay.
    RetryAfter(Duration),
    /// Send it again once this generation of the server is ready.
    WaitForGeneration(Generation),
    /// Stop and tell the client why.
    GiveUp(GiveUpReason),
}

/// Per-request retry knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct RetryConfig {
    /// Attempts after the first. Default 3 (so at most 4 attempts); 0 = never retry.
    pub max_retries: u32,
    /// Delay before the first retry of a 5xx answer, doubled for each further one. Default 250 ms.
    pub base_delay: Duration,
    /// Ceiling of that delay. Default 10 s.
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    /// Checks `max_delay >= base_delay` (any retry count, including 0, is valid).
    ///
    /// # Errors
    /// [`InvalidConfig::MaxDelayBelowBase`].
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.max_delay < self.base_delay {
            return Err(InvalidConfig::MaxDelayBelowBase);
        }
        Ok(())
    }
}

/// The retry state of one request; see the module docs for the rules.
#[derive(Clone, Debug)]
pub struct RetryPlan {
    config: RetryConfig,
    attempts: u32,
}

impl RetryPlan {
    /// A plan for a request that has not been sent yet.
    #[must_use]
    pub fn new(config: RetryConfig) -> Self {
        RetryPlan {
            config,
            attempts: 0,
        }
    }

    /// Attempts decided so far (each call of [`decide`](Self::decide) is one attempt).
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Attempts still allowed after those made so far.
    #[must_use]
    pub fn retries_left(&self) -> u32 {
        self.config
            .max_retries
            .saturating_add(1)
            .saturating_sub(self.attempts)
    }

    /// Decides after one attempt that used server `generation`; `bytes_sent` says whether any
    /// response bytes already reached the client. Rules: see the module docs.
    pub fn decide(
        &mut self,
        outcome: AttemptOutcome,
        generation: Generation,
        bytes_sent: bool,
    ) -> RetryDecision {
        self.attempts = self.attempts.saturating_add(1);
        self.apply(outcome, generation, Ending::Failed { bytes_sent })
    }

    /// Decides after a stream that had reached its client was cut with `outcome`, when the
    /// stream is to be continued: a new part of the request begins. The attempt that was cut is
    /// not a failed one (it delivered), so it is not counted, and the continuation is the first
    /// attempt of the new part, with the whole bound (`max_retries + 1` attempts) to reach its own
    /// first byte: transient failures met by earlier parts (a 5xx, a dropped connection) do not
    /// use up the attempts of later ones. How many parts a stream may have is the resume limit's
    /// to bound, not this plan's.
    pub fn decide_cut(&mut self, outcome: AttemptOutcome, generation: Generation) -> RetryDecision {
        self.attempts = 0;
        self.apply(outcome, generation, Ending::Cut)
    }

    fn apply(
        &self,
        outcome: AttemptOutcome,
        generation: Generation,
        ending: Ending,
    ) -> RetryDecision {
        match outcome {
            AttemptOutcome::Success => return RetryDecision::Done,
            AttemptOutcome::Cancelled => return RetryDecision::GiveUp(GiveUpReason::Cancelled),
            AttemptOutcome::ClientError { status } => {
                return RetryDecision::GiveUp(GiveUpReason::ClientError { status })
            }
            AttemptOutcome::DeadlineExceeded => {
                return RetryDecision::GiveUp(GiveUpReason::DeadlineExceeded)
            }
            _ => {}
        }
        match ending {
            Ending::Failed { bytes_sent: true } => {
                return RetryDecision::GiveUp(GiveUpReason::BytesAlreadySent)
            }
            Ending::Failed { bytes_sent: false } if self.attempts > self.config.max_retries => {
                return RetryDecision::GiveUp(GiveUpReason::RetriesExhausted {
                    attempts: self.attempts,
                })
            }
            Ending::Failed { .. } | Ending::Cut => {}
        }
        if outcome == AttemptOutcome::TookTooLong {
            return RetryDecision::RetryNow;
        }
        if outcome.means_server_hung() {
            return RetryDecision::WaitForGeneration(generation.next());
        }
        let delay = grow(
            self.config.base_delay,
            2,
            self.attempts.saturating_sub(1),
            self.config.max_delay,
        );
        if delay.is_zero() {
            RetryDecision::RetryNow
        } else {
            RetryDecision::RetryAfter(delay)
        }
    }
}

/// How the attempt a decision follows ended.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// It failed, and counts against the bound; `bytes_sent`: some of its answer had already
    /// reached the client (so nothing may be sent again).
    Failed { bytes_sent: bool },
    /// A stream that had reached its client was cut and is to be continued: a new part of the
    /// request begins, and the cut attempt is not counted.
    Cut,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    const G: Generation = Generation(4);

    #[test]
    fn success_is_done_and_cancel_or_4xx_give_up_at_once() {
        let mut p = RetryPlan::new(RetryConfig::default());
        assert_eq!(
            p.decide(AttemptOutcome::Success, G, true),
            RetryDecision::Done
        );
        let mut p = RetryPlan::new(RetryConfig::default());
        assert_eq!(
            p.decide(AttemptOutcome::Cancelled, G, false),
            RetryDecision::GiveUp(GiveUpReason::Cancelled)
        );
        let mut p = RetryPlan::new(RetryConfig::default());
        assert_eq!(
            p.decide(AttemptOutcome::ClientError { status: 422 }, G, false),
            RetryDecision::GiveUp(GiveUpReason::ClientError { status: 422 })
        );
    }

    #[test]
    fn a_hang_sends_the_retry_to_the_next_generation() {
        for outcome in [
            AttemptOutcome::FirstByteTimeout,
            AttemptOutcome::Stall,
            AttemptOutcome::ConnectionRefused,
            AttemptOutcome::ConnectionReset,
        ] {
            let mut p = RetryPlan::new(RetryConfig::default());
            assert_eq!(
                p.decide(outcome, G, false),
                RetryDecision::WaitForGeneration(Generation(5)),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn nothing_is_replayed_once_bytes_reached_the_client() {
        let mut p = RetryPlan::new(RetryConfig::default());
        assert_eq!(
            p.decide(AttemptOutcome::Stall, G, true),
            RetryDecision::GiveUp(GiveUpReason::BytesAlreadySent)
        );
    }

    #[test]
    fn server_errors_back_off_exponentially_then_give_up() {
        let mut p = RetryPlan::new(RetryConfig::default());
        let e = AttemptOutcome::ServerError { status: 503 };
        assert_eq!(p.decide(e, G, false), RetryDecision::RetryAfter(ms(250)));
        assert_eq!(p.decide(e, G, false), RetryDecision::RetryAfter(ms(500)));
        assert_eq!(p.decide(e, G, false), RetryDecision::RetryAfter(ms(1000)));
        assert_eq!(p.retries_left(), 1);
        assert_eq!(
            p.decide(e, G, false),
            RetryDecision::GiveUp(GiveUpReason::RetriesExhausted { attempts: 4 })
        );
        assert_eq!(p.attempts(), 4);
    }

    #[test]
    fn retry_delay_is_capped_and_zero_means_now() {
        let config = RetryConfig {
            max_retries: 20,
            base_delay: ms(1000),
            max_delay: ms(3000),
        };
        let mut p = RetryPlan::new(config);
        let e = AttemptOutcome::ServerError { status: 500 };
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            if let RetryDecision::RetryAfter(d) = p.decide(e, G, false) {
                last = d;
            }
        }
        assert_eq!(last, ms(3000));
        let mut p = RetryPlan::new(RetryConfig {
            base_delay: Duration::ZERO,
            ..RetryConfig::default()
        });
        assert_eq!(p.decide(e, G, false), RetryDecision::RetryNow);
    }

    #[test]
    fn zero_retries_gives_up_after_the_first_failure() {
        let mut p = RetryPlan::new(RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        });
        assert_eq!(
            p.decide(AttemptOutcome::FirstByteTimeout, G, false),
            RetryDecision::GiveUp(GiveUpReason::RetriesExhausted { attempts: 1 })
        );
        assert_eq!(
            RetryConfig {
                base_delay: ms(5),
                max_delay: ms(1),
                ..RetryConfig::default()
            }
            .validate(),
            Err(InvalidConfig::MaxDelayBelowBase)
        );
    }
}
