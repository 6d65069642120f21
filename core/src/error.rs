//! Configuration errors: a value that would make a decision machine misbehave.
//!
//! Every constructor that takes a configuration validates it up front (`try_new`, `validate`), so
//! a bad knob is reported once, at start-up, with the field that holds it.

use core::fmt;

/// A configuration value is out of range; the variant names the field and what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidConfig {
    /// A count that must be at least 1 is 0 (e.g. `health.unhealthy_after`).
    ZeroThreshold {
        /// The dotted name of the field, e.g. `"health.unhealthy_after"`.
        field: &'static str,
    },
    /// A duration that must be positive is zero (e.g. `health.interval`).
    ZeroDuration {
        /// The dotted name of the field, e.g. `"health.interval"`.
        field: &'static str,
    },
    /// `policy.backoff.cap` is smaller than `policy.backoff.base`.
    CapBelowBase,
    /// `policy.backoff.factor` is 0: delays would collapse to nothing; use 1 for a constant delay.
    FactorTooSmall,
    /// `policy.backoff.jitter_percent` is above 100.
    JitterOutOfRange {
        /// The configured percentage.
        percent: u8,
    },
    /// A growth factor other than the backoff's is 0 (e.g. `health.ready_poll_factor`).
    ZeroFactor {
        /// The dotted name of the field.
        field: &'static str,
    },
    /// `retry.max_delay` is smaller than `retry.base_delay`.
    MaxDelayBelowBase,
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidConfig::ZeroThreshold { field } => {
                write!(f, "`{field}` is 0: it must be at least 1")
            }
            InvalidConfig::ZeroDuration { field } => {
                write!(f, "`{field}` is zero: it must be a positive duration")
            }
            InvalidConfig::CapBelowBase => f.write_str(
                "`policy.backoff.cap` is smaller than `policy.backoff.base`: raise the cap or lower the base",
            ),
            InvalidConfig::FactorTooSmall => f.write_str(
                "`policy.backoff.factor` is 0: use 1 for a constant delay, 2 to double each time",
            ),
            InvalidConfig::JitterOutOfRange { percent } => write!(
                f,
                "`policy.backoff.jitter_percent` is {percent}: it must be between 0 and 100"
            ),
            InvalidConfig::ZeroFactor { field } => {
                write!(f, "`{field}` is 0: it must be at least 1")
            }
            InvalidConfig::MaxDelayBelowBase => f.write_str(
                "`retry.max_delay` is smaller than `retry.base_delay`: raise the maximum or lower the base",
            ),
        }
    }
}

impl core::error::Error for InvalidConfig {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn messages_name_the_field_and_the_fix() {
        let text = InvalidConfig::ZeroDuration {
            field: "health.interval",
        }
        .to_string();
        assert!(text.contains("health.interval"), "{text}");
        assert!(InvalidConfig::JitterOutOfRange { percent: 150 }
            .to_string()
            .contains("150"));
    }
}
