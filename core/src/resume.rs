//! Stream resumption: may a streamed completion that was cut after bytes reached its client be
//! continued on the next generation, and how often.
//!
//! A streamed chat or text completion that is cut (its generation stalled or took too long, the
//! server exited, the body broke off before `[DONE]`) can be continued faithfully by asking the
//! server for the rest of the answer: the delivered text goes back as a prefill (chat) or is
//! appended to the prompt (text), and `max_tokens` is lowered by what was delivered. The shell
//! records what was delivered and asks [`StreamResume::judge`] once per cut; the answer is
//! either "continue" (and [`RequestPlan::decide_cut`](crate::RequestPlan::decide_cut) then says
//! where and when: a new part of the request, with the attempt bound of every request) or a
//! [`ResumeRefusal`], and the stream ends with an error event as it did before resumption
//! existed.
//!
//! The rules, in the order they apply:
//!
//! 1. Resumption is off ([`ResumeMode::Off`]) → refused.
//! 2. The request's own budget is spent ([`AttemptOutcome::DeadlineExceeded`]) → refused: the
//!    client asked for the answer by then. An outcome that is no cut (a success, a 4xx, a client
//!    that left) is never resumed either.
//! 3. Requests whose continuation would not be the same kind of answer → refused:
//!    * `n` > 1 or `best_of`: several choices are interleaved in one stream; continuing them
//!      would need one prefill per choice, and servers take one.
//!    * `logprobs` / `top_logprobs`: the continuation's log-probabilities are conditioned on a
//!      prefill, not on the sampled history, and the delivered ones cannot be recomputed.
//!    * `echo`: the prompt was echoed; a continuation would echo the prefilled prompt again.
//!    * `response_format` with a JSON schema or JSON object, and guided decoding (`guided_*`,
//!      `structured_outputs`): the grammar restarts at the beginning of the prefill, so the
//!      continuation is not constrained to continue the document (NVIDIA Dynamo turned migration
//!      off for guided decoding after it produced duplicated JSON).
//! 4. What was delivered cannot be sent back → refused: tool or function calls already streamed
//!    (a partial call has no prefill form), reasoning deltas already streamed (servers drop or
//!    re-template reasoning in an assistant prefill), or a cut inside an event (the client holds
//!    half an event that nothing can complete).
//! 5. The stream was resumed `limit` times already → refused ([`ResumeRefusal::LimitReached`]).
//!
//! Sampling: a continuation at temperature > 0 is a valid sample of the rest of the answer given
//! its beginning, not the sample the cut generation would have produced.

use core::fmt;

use crate::AttemptOutcome;

/// How a cut stream is continued; a per-server setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ResumeMode {
    /// vLLM's flags when the server is vLLM, a trailing assistant message otherwise.
    #[default]
    Auto,
    /// A trailing assistant message (llama.cpp's server continues it by default).
    Prefill,
    /// A trailing assistant message with `continue_final_message: true` and
    /// `add_generation_prompt: false`, as vLLM needs.
    Vllm,
    /// Never resume: a cut stream ends with an error event.
    Off,
}

impl ResumeMode {
    /// The setting's word, as flags and config files spell it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ResumeMode::Auto => "auto",
            ResumeMode::Prefill => "prefill",
            ResumeMode::Vllm => "vllm",
            ResumeMode::Off => "off",
        }
    }
}

/// Stream resumption settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct ResumeConfig {
    /// How to continue. Default [`ResumeMode::Auto`].
    pub mode: ResumeMode,
    /// How many times one stream may be resumed. Default 2.
    pub limit: u32,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        ResumeConfig {
            mode: ResumeMode::Auto,
            limit: 2,
        }
    }
}

/// Which endpoint the stream answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Text,
}

/// What the request asked, as far as resumption cares (read from its body at the cut).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResumeRequest {
    /// `n`: choices asked for (1 when absent).
    pub choices: u64,
    /// `best_of` was given (above 1).
    pub best_of: bool,
    /// `logprobs` or `top_logprobs` was asked.
    pub logprobs: bool,
    /// `echo: true`.
    pub echo: bool,
    /// `response_format` with a schema or JSON object, or guided decoding.
    pub structured: bool,
}

/// What the delivered part of the answer holds (read from the recorded chunks at the cut).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveredPart {
    /// A tool or function call delta was streamed.
    pub tool_calls: bool,
    /// A reasoning delta (`reasoning_content` / `reasoning`) was streamed.
    pub reasoning: bool,
    /// The cut fell inside an event: the client holds half of it, and nothing sent after it
    /// could be read.
    pub partial_event: bool,
}

/// Why a cut stream is not resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ResumeRefusal {
    /// `--resume off`.
    Off,
    /// The attempt did not end in a cut (or the request's own budget is spent).
    NotACut,
    /// `n` > 1.
    SeveralChoices,
    /// `best_of`.
    BestOf,
    /// `logprobs` / `top_logprobs`.
    Logprobs,
    /// `echo`.
    Echo,
    /// `response_format` with a schema or JSON object, or guided decoding.
    Structured,
    /// Tool or function calls were already streamed.
    ToolCalls,
    /// Reasoning deltas were already streamed.
    Reasoning,
    /// The cut fell inside an event.
    PartialEvent,
    /// The stream was resumed as often as allowed.
    LimitReached {
        /// The limit (`--resume-limit`).
        limit: u32,
    },
}

impl ResumeRefusal {
    /// A short label, for logs and the `outcome` label of the resumption metric.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            ResumeRefusal::Off => "off",
            ResumeRefusal::NotACut => "not_a_cut",
            ResumeRefusal::SeveralChoices => "refused_n",
            ResumeRefusal::BestOf => "refused_best_of",
            ResumeRefusal::Logprobs => "refused_logprobs",
            ResumeRefusal::Echo => "refused_echo",
            ResumeRefusal::Structured => "refused_structured",
            ResumeRefusal::ToolCalls => "refused_tool_calls",
            ResumeRefusal::Reasoning => "refused_reasoning",
            ResumeRefusal::PartialEvent => "partial_event",
            ResumeRefusal::LimitReached { .. } => "limit_reached",
        }
    }
}

impl fmt::Display for ResumeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResumeRefusal::Off => f.write_str("stream resumption is off (--resume off)"),
            ResumeRefusal::NotACut => {
                f.write_str("the stream did not end in a cut that can be resumed")
            }
            ResumeRefusal::SeveralChoices => {
                f.write_str("a stream of several choices (n > 1) cannot be resumed faithfully")
            }
            ResumeRefusal::BestOf => f.write_str("a `best_of` stream cannot be resumed faithfully"),
            ResumeRefusal::Logprobs => {
                f.write_str("a stream with log-probabilities cannot be resumed faithfully")
            }
            ResumeRefusal::Echo => f.write_str("an `echo` stream cannot be resumed faithfully"),
            ResumeRefusal::Structured => f.write_str(
                "a stream under a response format or guided decoding cannot be resumed faithfully",
            ),
            ResumeRefusal::ToolCalls => f.write_str(
                "a stream that already streamed tool calls cannot be resumed faithfully",
            ),
            ResumeRefusal::Reasoning => {
                f.write_str("a stream that already streamed reasoning cannot be resumed faithfully")
            }
            ResumeRefusal::PartialEvent => {
                f.write_str("the stream was cut inside an event, which the client cannot complete")
            }
            ResumeRefusal::LimitReached { limit } => write!(
                f,
                "the stream was already resumed {limit} times (--resume-limit)"
            ),
        }
    }
}

/// Whether an attempt that ended with `outcome` after bytes reached the client was cut in a way
/// a continuation can repair: a silence (stall), a broken or refused connection (the server
/// exited or dropped the body), or the per-request limit on a busy server (`TookTooLong`).
#[must_use]
pub const fn is_cut(outcome: AttemptOutcome) -> bool {
    matches!(
        outcome,
        AttemptOutcome::Stall
            | AttemptOutcome::FirstByteTimeout
            | AttemptOutcome::ConnectionReset
            | AttemptOutcome::ConnectionRefused
            | AttemptOutcome::TookTooLong
    )
}

/// The resumptions of one stream; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamResume {
    config: ResumeConfig,
    resumed: u32,
}

impl StreamResume {
    /// A stream not resumed yet.
    #[must_use]
    pub const fn new(config: ResumeConfig) -> Self {
        StreamResume { config, resumed: 0 }
    }

    /// Times the stream was resumed so far.
    #[must_use]
    pub const fn resumed(&self) -> u32 {
        self.resumed
    }

    /// Whether resumption is on at all (the shell records nothing when it is off).
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.config.mode != ResumeMode::Off
    }

    /// The limit of resumptions per stream.
    #[must_use]
    pub const fn limit(&self) -> u32 {
        self.config.limit
    }

    /// Judges a cut that ended an attempt with `outcome`: `Ok` counts one more resumption; the
    /// rules are in the module docs.
    ///
    /// # Errors
    /// The [`ResumeRefusal`] that applies first.
    pub fn judge(
        &mut self,
        outcome: AttemptOutcome,
        request: &ResumeRequest,
        delivered: &DeliveredPart,
    ) -> Result<u32, ResumeRefusal> {
        if !self.enabled() {
            return Err(ResumeRefusal::Off);
        }
        if !is_cut(outcome) {
            return Err(ResumeRefusal::NotACut);
        }
        if request.choices > 1 {
            return Err(ResumeRefusal::SeveralChoices);
        }
        if request.best_of {
            return Err(ResumeRefusal::BestOf);
        }
        if request.logprobs {
            return Err(ResumeRefusal::Logprobs);
        }
        if request.echo {
            return Err(ResumeRefusal::Echo);
        }
        if request.structured {
            return Err(ResumeRefusal::Structured);
        }
        if delivered.tool_calls {
            return Err(ResumeRefusal::ToolCalls);
        }
        if delivered.reasoning {
            return Err(ResumeRefusal::Reasoning);
        }
        if delivered.partial_event {
            return Err(ResumeRefusal::PartialEvent);
        }
        if self.resumed >= self.config.limit {
            return Err(ResumeRefusal::LimitReached {
                limit: self.config.limit,
            });
        }
        self.resumed += 1;
        Ok(self.resumed)
    }
}

/// The token limit of a continuation: the original limit less what was delivered. `None`: no
/// limit was asked. `Some(0)`: the limit is reached, the answer is complete.
#[must_use]
pub const fn remaining_tokens(limit: Option<u64>, delivered: u64) -> Option<u64> {
    match limit {
        Some(limit) => Some(limit.saturating_sub(delivered)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> ResumeRequest {
        ResumeRequest {
            choices: 1,
            ..ResumeRequest::default()
        }
    }

    #[test]
    fn a_plain_stream_is_resumed_up_to_the_limit_then_refused() {
        let mut resume = StreamResume::new(ResumeConfig::default());
        let delivered = DeliveredPart::default();
        assert_eq!(
            resume.judge(AttemptOutcome::Stall, &plain(), &delivered),
            Ok(1)
        );
        assert_eq!(
            resume.judge(AttemptOutcome::ConnectionReset, &plain(), &delivered),
            Ok(2)
        );
        assert_eq!(
            resume.judge(AttemptOutcome::Stall, &plain(), &delivered),
            Err(ResumeRefusal::LimitReached { limit: 2 })
        );
        assert_eq!(resume.resumed(), 2);
    }

    #[test]
    fn each_refused_kind_is_named() {
        let delivered = DeliveredPart::default();
        let cases = [
            (
                ResumeRequest {
                    choices: 2,
                    ..plain()
                },
                ResumeRefusal::SeveralChoices,
            ),
            (
                ResumeRequest {
                    best_of: true,
                    ..plain()
                },
                ResumeRefusal::BestOf,
            ),
            (
                ResumeRequest {
                    logprobs: true,
                    ..plain()
                },
                ResumeRefusal::Logprobs,
            ),
            (
                ResumeRequest {
                    echo: true,
                    ..plain()
                },
                ResumeRefusal::Echo,
            ),
            (
                ResumeRequest {
                    structured: true,
                    ..plain()
                },
                ResumeRefusal::Structured,
            ),
        ];
        for (request, refusal) in cases {
            let mut resume = StreamResume::new(ResumeConfig::default());
            assert_eq!(
                resume.judge(AttemptOutcome::Stall, &request, &delivered),
                Err(refusal)
            );
            assert_eq!(resume.resumed(), 0, "a refusal spends nothing");
        }
        let mut resume = StreamResume::new(ResumeConfig::default());
        let tools = DeliveredPart {
            tool_calls: true,
            ..DeliveredPart::default()
        };
        assert_eq!(
            resume.judge(AttemptOutcome::Stall, &plain(), &tools),
            Err(ResumeRefusal::ToolCalls)
        );
        let thoughts = DeliveredPart {
            reasoning: true,
            ..DeliveredPart::default()
        };
        assert_eq!(
            resume.judge(AttemptOutcome::Stall, &plain(), &thoughts),
            Err(ResumeRefusal::Reasoning)
        );
        let half = DeliveredPart {
            partial_event: true,
            ..DeliveredPart::default()
        };
        assert_eq!(
            resume.judge(AttemptOutcome::Stall, &plain(), &half),
            Err(ResumeRefusal::PartialEvent)
        );
    }

    #[test]
    fn off_and_spent_budgets_are_never_resumed() {
        let mut off = StreamResume::new(ResumeConfig {
            mode: ResumeMode::Off,
            limit: 5,
        });
        assert_eq!(
            off.judge(AttemptOutcome::Stall, &plain(), &DeliveredPart::default()),
            Err(ResumeRefusal::Off)
        );
        let mut on = StreamResume::new(ResumeConfig::default());
        for outcome in [
            AttemptOutcome::DeadlineExceeded,
            AttemptOutcome::Success,
            AttemptOutcome::Cancelled,
            AttemptOutcome::ClientError { status: 400 },
        ] {
            assert_eq!(
                on.judge(outcome, &plain(), &DeliveredPart::default()),
                Err(ResumeRefusal::NotACut)
            );
        }
    }

    #[test]
    fn the_token_limit_is_lowered_by_what_was_delivered() {
        assert_eq!(remaining_tokens(Some(40), 10), Some(30));
        assert_eq!(remaining_tokens(Some(5), 10), Some(0));
        assert_eq!(remaining_tokens(None, 10), None);
    }
}
