//! Restart policy: when to start the next child, and when to stop trying.
//!
//! Three rules, all pure arithmetic on the times the caller passes in:
//!
//! * **Immediate first restart.** The first restart after a stable period happens at once
//!   (`Duration::ZERO`): a hang must be fixed now, not after a pause.
//! * **Exponential backoff for a crash loop.** A *streak* is a run of restarts without a stable
//!   uptime between them (the server never stayed ready for `stable_after`). The n-th restart of
//!   a streak (n ≥ 2) waits
//!
//!   ```text
//!   curve  = min(cap, base * factor^(n-2))           (so: 0, base, base*factor, …)
//!   spread = curve - curve * jitter_percent/100 * jitter/u32::MAX
//!   floor  = the longest start-up measured since the streak began (only with scale_with_startup)
//!   delay  = min(cap, max(spread, floor))
//!   ```
//!
//!   `cap` is the hard ceiling, jitter included. Jitter only ever *shortens* the curve, so the
//!   ceiling keeps its spread and a fleet of supervisors restarting at the cap does not move in
//!   lockstep. The floor makes a model that takes 90 s to load wait at least that long (up to the
//!   cap) between crash-loop restarts rather than following a 0.5 s curve; taking the longest
//!   start-up of the streak keeps the delays non-decreasing within it.
//! * **Restart intensity.** At most `max_restarts` restarts inside any sliding window of length
//!   `window`; the one that would exceed it is answered with
//!   [`GiveUp(IntensityExceeded)`](GiveUpReason::IntensityExceeded) and not recorded. Memory is
//!   bounded: only the restart times still inside the window are kept (at most `max_restarts`).
//!
//! The streak ends when the server has been ready for `stable_after` when the next restart is
//! needed; the intensity window is purely time-based and is not reset by stability.

use alloc::collections::VecDeque;
use core::fmt;
use core::time::Duration;

use crate::exponential::grow;
use crate::InvalidConfig;

/// Delays between consecutive restarts of a crash loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct BackoffConfig {
    /// Delay before the second restart of a streak. Default 500 ms.
    pub base: Duration,
    /// Growth factor per further restart. Default 2; 1 = constant delay; at least 1.
    pub factor: u32,
    /// Hard ceiling of every delay, jitter and start-up scaling included. Default 30 s.
    pub cap: Duration,
    /// Up to this percentage of a delay is removed at random (0..=100). Default 0 (no jitter).
    pub jitter_percent: u8,
    /// Wait at least as long as the server's measured start-up (still capped). Default true.
    pub scale_with_startup: bool,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_millis(500),
            factor: 2,
            cap: Duration::from_secs(30),
            jitter_percent: 0,
            scale_with_startup: true,
        }
    }
}

impl BackoffConfig {
    /// Checks base > 0, cap ≥ base, factor ≥ 1, jitter ≤ 100.
    ///
    /// # Errors
    /// The first field out of range, as an [`InvalidConfig`].
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.base.is_zero() {
            return Err(InvalidConfig::ZeroDuration {
                field: "policy.backoff.base",
            });
        }
        if self.cap < self.base {
            return Err(InvalidConfig::CapBelowBase);
        }
        if self.factor == 0 {
            return Err(InvalidConfig::FactorTooSmall);
        }
        if self.jitter_percent > 100 {
            return Err(InvalidConfig::JitterOutOfRange {
                percent: self.jitter_percent,
            });
        }
        Ok(())
    }
}

/// The restart-intensity limit: at most `max_restarts` restarts within any `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct IntensityConfig {
    /// Restarts allowed inside one window. Default 5; at least 1.
    pub max_restarts: u32,
    /// Length of the sliding window. Default 10 minutes.
    pub window: Duration,
}

impl Default for IntensityConfig {
    fn default() -> Self {
        IntensityConfig {
            max_restarts: 5,
            window: Duration::from_secs(600),
        }
    }
}

impl IntensityConfig {
    /// Checks max_restarts ≥ 1 and window > 0.
    ///
    /// # Errors
    /// The first field out of range, as an [`InvalidConfig`].
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.max_restarts == 0 {
            return Err(InvalidConfig::ZeroThreshold {
                field: "policy.intensity.max_restarts",
            });
        }
        if self.window.is_zero() {
            return Err(InvalidConfig::ZeroDuration {
                field: "policy.intensity.window",
            });
        }
        Ok(())
    }
}

/// Everything the restart policy needs: backoff, intensity, and what counts as stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct RestartPolicyConfig {
    /// Delays between the restarts of a crash loop. Defaults: see [`BackoffConfig`].
    pub backoff: BackoffConfig,
    /// The restart-intensity limit. Defaults: 5 restarts in 10 minutes.
    pub intensity: IntensityConfig,
    /// An uptime (ready for this long) that ends a crash-loop streak and resets the backoff.
    /// Default 60 s.
    pub stable_after: Duration,
}

impl Default for RestartPolicyConfig {
    fn default() -> Self {
        RestartPolicyConfig {
            backoff: BackoffConfig::default(),
            intensity: IntensityConfig::default(),
            stable_after: Duration::from_secs(60),
        }
    }
}

impl RestartPolicyConfig {
    /// Checks the backoff, the intensity limit and `stable_after > 0`.
    ///
    /// # Errors
    /// The first field out of range, as an [`InvalidConfig`].
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.backoff.validate()?;
        self.intensity.validate()?;
        if self.stable_after.is_zero() {
            return Err(InvalidConfig::ZeroDuration {
                field: "policy.stable_after",
            });
        }
        Ok(())
    }
}

/// Why a restart or a request was given up: each reads as a sentence for logs and error bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum GiveUpReason {
    /// The restart-intensity limit was reached: `restarts` restarts already happened in `window`.
    IntensityExceeded {
        /// Restarts already made inside the window (the configured maximum).
        restarts: u32,
        /// The window length.
        window: Duration,
    },
    /// A request failed on every one of its `attempts`.
    RetriesExhausted {
        /// Attempts made, the first included.
        attempts: u32,
    },
    /// Part of the response already reached the client, so the request cannot be replayed.
    BytesAlreadySent,
    /// The server rejected the request itself (4xx); sending it again would not help.
    ClientError {
        /// The HTTP status the server answered.
        status: u16,
    },
    /// The client went away.
    Cancelled,
    /// The request was in flight at repeated hangs and is refused so it cannot hang the server again.
    Quarantined,
    /// The request's overall deadline passed while it waited or retried.
    DeadlineExceeded,
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUpReason::IntensityExceeded { restarts, window } => {
                write!(f, "{restarts} restarts within {window:?}: giving up")
            }
            GiveUpReason::RetriesExhausted { attempts } => {
                write!(f, "the request failed on all {attempts} attempts: giving up")
            }
            GiveUpReason::BytesAlreadySent => f.write_str(
                "the response had already started reaching the client, so the request cannot be replayed",
            ),
            GiveUpReason::ClientError { status } => write!(
                f,
                "the server rejected the request with status {status}; sending it again would not help"
            ),
            GiveUpReason::Cancelled => f.write_str("the client cancelled the request"),
            GiveUpReason::Quarantined => f.write_str(
                "the request was in flight at repeated hangs of the server and is quarantined",
            ),
            GiveUpReason::DeadlineExceeded => {
                f.write_str("the request's overall deadline passed before it could be answered")
            }
        }
    }
}

/// The policy's answer to "a restart is needed".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum PolicyDecision {
    /// Start the next child after this delay (`Duration::ZERO`: at once).
    RestartAfter(Duration),
    /// Do not restart; the supervisor should enter `Failed` with this reason.
    GiveUp(GiveUpReason),
}

/// Decides when to start the next child and when to give up; see the module docs for the rule.
#[derive(Clone, Debug)]
pub struct RestartPolicy {
    config: RestartPolicyConfig,
    /// Times of the restarts still inside the intensity window, oldest first.
    recent: VecDeque<Duration>,
    /// Restarts in the current streak.
    streak: u32,
    /// When the server last became ready, if it has been ready since the last restart.
    ready_since: Option<Duration>,
    /// The most recent measured start-up.
    last_startup: Option<Duration>,
    /// The longest start-up measured since the current streak began.
    streak_startup: Option<Duration>,
}

impl RestartPolicy {
    /// A policy with no restart recorded yet.
    ///
    /// # Errors
    /// The configuration is out of range (see [`RestartPolicyConfig::validate`]).
    pub fn try_new(config: RestartPolicyConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(RestartPolicy {
            config,
            recent: VecDeque::new(),
            streak: 0,
            ready_since: None,
            last_startup: None,
            streak_startup: None,
        })
    }

    /// A restart is needed at `now`: records it and answers when to start the next child.
    ///
    /// `jitter` is a random value the caller draws (any `u32`); it is read as the fraction
    /// `jitter / u32::MAX` of `jitter_percent` and only shortens the delay. The exact rule is in
    /// the module docs. A [`PolicyDecision::GiveUp`] is not recorded as a restart.
    pub fn on_restart_needed(&mut self, now: Duration, jitter: u32) -> PolicyDecision {
        self.forget_outside_window(now);
        if let Some(ready) = self.ready_since {
            if now.saturating_sub(ready) >= self.config.stable_after {
                self.streak = 0;
                self.streak_startup = self.last_startup;
            }
        }
        let used = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        if used >= self.config.intensity.max_restarts.max(1) {
            return PolicyDecision::GiveUp(GiveUpReason::IntensityExceeded {
                restarts: used,
                window: self.config.intensity.window,
            });
        }
        self.recent.push_back(now);
        self.streak = self.streak.saturating_add(1);
        self.ready_since = None;
        PolicyDecision::RestartAfter(self.delay_for_streak(jitter))
    }

    fn delay_for_streak(&self, jitter: u32) -> Duration {
        if self.streak <= 1 {
            return Duration::ZERO;
        }
        let backoff = &self.config.backoff;
        let curve = grow(backoff.base, backoff.factor, self.streak - 2, backoff.cap);
        let spread = curve.saturating_sub(jitter_share(curve, backoff.jitter_percent, jitter));
        let floor = if backoff.scale_with_startup {
            self.streak_startup.unwrap_or(Duration::ZERO)
        } else {
            Duration::ZERO
        };
        spread.max(floor).min(backoff.cap)
    }

    fn forget_outside_window(&mut self, now: Duration) {
        let window = self.config.intensity.window;
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_sub(oldest) >= window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }

    /// The server became ready at `now` after a start that took `startup`.
    ///
    /// Starts the stability clock (a restart needed `stable_after` or more from now begins a new
    /// streak) and records the start-up time that scales the backoff.
    pub fn on_ready(&mut self, now: Duration, startup: Duration) {
        self.ready_since = Some(now);
        self.last_startup = Some(startup);
        self.streak_startup = Some(match self.streak_startup {
            Some(longest) if self.streak > 0 => longest.max(startup),
            _ => startup,
        });
    }

    /// Restarts recorded inside the window that ends at `now`.
    #[must_use]
    pub fn restarts_in_window(&self, now: Duration) -> u32 {
        let window = self.config.intensity.window;
        let inside = self
            .recent
            .iter()
            .filter(|&&at| now.saturating_sub(at) < window)
            .count();
        u32::try_from(inside).unwrap_or(u32::MAX)
    }

    /// Restarts in the current streak (restarts without a stable uptime between them).
    #[must_use]
    pub fn consecutive_failures(&self) -> u32 {
        self.streak
    }

    /// The most recent measured start-up, if the server has ever become ready.
    #[must_use]
    pub fn last_startup(&self) -> Option<Duration> {
        self.last_startup
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &RestartPolicyConfig {
        &self.config
    }
}

/// `delay * percent/100 * jitter/u32::MAX`, in u128 nanoseconds so nothing overflows.
fn jitter_share(delay: Duration, percent: u8, jitter: u32) -> Duration {
    let percent = u128::from(percent.min(100));
    if percent == 0 || jitter == 0 {
        return Duration::ZERO;
    }
    // delay < 2^94 ns, jitter < 2^32: the product fits in u128, and so does the next one.
    let nanos = delay.as_nanos() * u128::from(jitter) / u128::from(u32::MAX) * percent / 100;
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 10^9 and fits in u32.
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, sub).min(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn no_startup_scaling() -> RestartPolicyConfig {
        RestartPolicyConfig {
            backoff: BackoffConfig {
                scale_with_startup: false,
                ..BackoffConfig::default()
            },
            ..RestartPolicyConfig::default()
        }
    }

    fn delay(d: PolicyDecision) -> Duration {
        match d {
            PolicyDecision::RestartAfter(d) => d,
            PolicyDecision::GiveUp(r) => panic!("gave up: {r}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = RestartPolicyConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.intensity.max_restarts, 5);
        assert_eq!(c.intensity.window, secs(600));
        assert_eq!(c.stable_after, secs(60));
        assert_eq!(c.backoff.base, ms(500));
    }

    #[test]
    fn try_new_rejects_bad_configs() {
        let bad = |f: fn(&mut RestartPolicyConfig)| {
            let mut c = RestartPolicyConfig::default();
            f(&mut c);
            RestartPolicy::try_new(c).err()
        };
        assert_eq!(
            bad(|c| c.backoff.cap = ms(100)),
            Some(InvalidConfig::CapBelowBase)
        );
        assert_eq!(
            bad(|c| c.backoff.factor = 0),
            Some(InvalidConfig::FactorTooSmall)
        );
        assert_eq!(
            bad(|c| c.backoff.jitter_percent = 101),
            Some(InvalidConfig::JitterOutOfRange { percent: 101 })
        );
        assert!(bad(|c| c.intensity.max_restarts = 0).is_some());
        assert!(bad(|c| c.intensity.window = Duration::ZERO).is_some());
        assert!(bad(|c| c.stable_after = Duration::ZERO).is_some());
        assert!(bad(|c| c.backoff.base = Duration::ZERO).is_some());
    }

    #[test]
    fn first_restart_is_immediate_then_backs_off_exponentially_to_the_cap() {
        let mut c = no_startup_scaling();
        c.intensity.max_restarts = 100;
        let mut p = RestartPolicy::try_new(c).unwrap();
        let delays: Vec<Duration> = (0..10)
            .map(|i| delay(p.on_restart_needed(secs(i), 0)))
            .collect();
        assert_eq!(
            delays,
            [0, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000].map(ms)
        );
        assert_eq!(p.consecutive_failures(), 10);
    }

    #[test]
    fn a_stable_uptime_resets_the_backoff() {
        let mut p = RestartPolicy::try_new(no_startup_scaling()).unwrap();
        assert_eq!(delay(p.on_restart_needed(secs(0), 0)), ms(0));
        p.on_ready(secs(1), secs(1));
        // Hung again after 10 s of uptime: not stable, backoff continues.
        assert_eq!(delay(p.on_restart_needed(secs(11), 0)), ms(500));
        p.on_ready(secs(12), secs(1));
        // Ready for 60 s: stable; the next hang is fixed at once.
        assert_eq!(delay(p.on_restart_needed(secs(72), 0)), ms(0));
        assert_eq!(p.consecutive_failures(), 1);
    }

    #[test]
    fn intensity_limit_gives_up_and_the_window_slides() {
        let mut c = no_startup_scaling();
        c.intensity = IntensityConfig {
            max_restarts: 3,
            window: secs(100),
        };
        let mut p = RestartPolicy::try_new(c).unwrap();
        for t in [0, 10, 20] {
            assert!(matches!(
                p.on_restart_needed(secs(t), 0),
                PolicyDecision::RestartAfter(_)
            ));
        }
        assert_eq!(p.restarts_in_window(secs(30)), 3);
        let gave_up = p.on_restart_needed(secs(30), 0);
        assert_eq!(
            gave_up,
            PolicyDecision::GiveUp(GiveUpReason::IntensityExceeded {
                restarts: 3,
                window: secs(100)
            })
        );
        // A give-up is not recorded; once the first restart leaves the window one more is allowed.
        assert_eq!(p.restarts_in_window(secs(99)), 3);
        assert_eq!(p.restarts_in_window(secs(100)), 2);
        assert!(matches!(
            p.on_restart_needed(secs(100), 0),
            PolicyDecision::RestartAfter(_)
        ));
        assert!(matches!(
            p.on_restart_needed(secs(101), 0),
            PolicyDecision::GiveUp(_)
        ));
    }

    #[test]
    fn a_slow_start_raises_the_delay_up_to_the_cap() {
        let mut p = RestartPolicy::try_new(RestartPolicyConfig::default()).unwrap();
        p.on_ready(secs(12), secs(12));
        assert_eq!(delay(p.on_restart_needed(secs(100), 0)), ms(0));
        p.on_ready(secs(112), secs(12));
        // The curve says 500 ms; the model needs 12 s to load.
        assert_eq!(delay(p.on_restart_needed(secs(120), 0)), secs(12));
        p.on_ready(secs(210), secs(90));
        // A 90 s start would ask for 90 s, but the cap is the hard ceiling.
        assert_eq!(delay(p.on_restart_needed(secs(215), 0)), secs(30));
        // A faster start in the same streak does not shorten the delay.
        p.on_ready(secs(220), secs(2));
        assert_eq!(delay(p.on_restart_needed(secs(225), 0)), secs(30));
    }

    #[test]
    fn jitter_only_shortens_and_never_passes_the_cap() {
        let mut c = no_startup_scaling();
        c.backoff.jitter_percent = 50;
        c.intensity.max_restarts = 100;
        let mut p = RestartPolicy::try_new(c).unwrap();
        p.on_restart_needed(secs(0), u32::MAX);
        assert_eq!(delay(p.on_restart_needed(secs(1), u32::MAX)), ms(250));
        assert_eq!(delay(p.on_restart_needed(secs(2), 0)), ms(1000));
        for i in 3..20 {
            let d = delay(p.on_restart_needed(secs(i), u32::MAX / 2));
            assert!(d <= secs(30));
        }
        assert_eq!(jitter_share(Duration::MAX, 100, u32::MAX), Duration::MAX);
    }

    #[test]
    fn give_up_reasons_read_as_sentences() {
        let r = GiveUpReason::IntensityExceeded {
            restarts: 5,
            window: secs(600),
        };
        assert_eq!(r.to_string(), "5 restarts within 600s: giving up");
        assert!(GiveUpReason::ClientError { status: 404 }
            .to_string()
            .contains("404"));
    }
}
