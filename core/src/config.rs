//! One place for every knob of the decision machines, with the documented defaults.
//!
//! | knob | default |
//! |---|---|
//! | `health.interval` | 1 s |
//! | `health.timeout` | 1 s |
//! | `health.unhealthy_after` | 3 probes |
//! | `health.startup_timeout` | 600 s |
//! | `health.ready_poll_initial` | 1 ms |
//! | `health.ready_poll_factor` | 2 |
//! | `health.ready_poll_max` | 20 ms |
//! | `policy.backoff.base` | 500 ms |
//! | `policy.backoff.factor` | 2 |
//! | `policy.backoff.cap` | 30 s |
//! | `policy.backoff.jitter_percent` | 0 |
//! | `policy.backoff.scale_with_startup` | true |
//! | `policy.intensity.max_restarts` | 5 |
//! | `policy.intensity.window` | 10 min |
//! | `policy.stable_after` | 60 s |
//! | `retry.max_retries` | 3 |
//! | `retry.base_delay` | 250 ms |
//! | `retry.max_delay` | 10 s |
//! | `stream.first_byte` | 60 s |
//! | `stream.between_chunks` | 30 s |
//! | `stream.total` | none |
//! | `stream.max_request_time` | 30 min |
//! | `progress.progress_timeout` | 15 s |
//! | `progress.canary_interval` | 10 s (0 = off) |
//! | `progress.canary_timeout` | 10 s |
//! | `poison_threshold` | 2 hangs |
//! | `quarantine_ttl` | 10 min |
//! | `graceful_hang_stop` | false (a hung server gets SIGKILL at once) |

use core::time::Duration;

use crate::{
    HealthConfig, InvalidConfig, PoisonTracker, ProgressConfig, RestartPolicyConfig, RetryConfig,
    StreamDeadlines,
};

/// Every knob of the core in one struct; `Default` gives the documented defaults above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct CoreConfig {
    /// Health probing: interval 1 s, timeout 1 s, 3 failures, startup 600 s, readiness polls
    /// from 1 ms doubling up to 20 ms.
    pub health: HealthConfig,
    /// Restarts: backoff 500 ms ×2 up to 30 s (no jitter, scaled by start-up time), at most 5
    /// restarts in 10 minutes, stable after 60 s of uptime.
    pub policy: RestartPolicyConfig,
    /// Per-request retries: 3 after the first, 5xx backoff 250 ms doubling up to 10 s.
    pub retry: RetryConfig,
    /// Response deadlines: first byte 60 s, 30 s between chunks, no total limit; a request past
    /// its deadline waits on a server that shows life for up to 30 min.
    pub stream: StreamDeadlines,
    /// Deadlock detectors: no progress for 15 s while busy; canary after 10 s idle, 10 s timeout.
    pub progress: ProgressConfig,
    /// Hangs a fingerprint must be present at (with no success between) to go on trial; a hang
    /// during its trial quarantines it. Default 2; at least 1.
    pub poison_threshold: u32,
    /// How long a quarantine lasts. Default 10 min.
    pub quarantine_ttl: Duration,
    /// Whether a restart caused by a hang grants the server the stop grace (SIGTERM first) like
    /// an operator's restart does. Default `false`: a hung server gets SIGKILL of its whole
    /// generation at once, since it would not honour SIGTERM (see [`StopMode`](crate::StopMode)).
    pub graceful_hang_stop: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            health: HealthConfig::default(),
            policy: RestartPolicyConfig::default(),
            retry: RetryConfig::default(),
            stream: StreamDeadlines::default(),
            progress: ProgressConfig::default(),
            poison_threshold: PoisonTracker::DEFAULT_THRESHOLD,
            quarantine_ttl: PoisonTracker::DEFAULT_TTL,
            graceful_hang_stop: false,
        }
    }
}

impl CoreConfig {
    /// Checks every part; the error names the first field out of range.
    ///
    /// # Errors
    /// An [`InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.health.validate()?;
        self.policy.validate()?;
        self.retry.validate()?;
        self.stream.validate()?;
        self.progress.validate()?;
        if self.poison_threshold == 0 {
            return Err(InvalidConfig::ZeroThreshold {
                field: "poison_threshold",
            });
        }
        if self.quarantine_ttl.is_zero() {
            return Err(InvalidConfig::ZeroDuration {
                field: "quarantine_ttl",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_each_part_is_checked() {
        assert_eq!(CoreConfig::default().validate(), Ok(()));
        let c = CoreConfig {
            poison_threshold: 0,
            ..CoreConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(InvalidConfig::ZeroThreshold {
                field: "poison_threshold"
            })
        );
        let mut c = CoreConfig::default();
        c.progress.progress_timeout = core::time::Duration::ZERO;
        assert!(c.validate().is_err());
        let mut c = CoreConfig::default();
        c.policy.backoff.jitter_percent = 200;
        assert!(c.validate().is_err());
    }
}
