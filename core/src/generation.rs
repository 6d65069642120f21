//! Generations: every start of the server gets a number one higher than the last.
//!
//! A request remembers the generation that served it, and a hang report carries the generation it
//! was seen against. Comparing that number with the current one is how a thousand reports of the
//! same freeze collapse into a single restart, and how a report about a server that has already
//! been replaced is recognised as stale.

use core::fmt;

/// Every start of the server is a new generation.
///
/// `Generation(0)` means "nothing started yet"; the first child is generation 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Generation(pub u64);

impl Generation {
    /// The generation before any start: nothing has run yet.
    pub const NONE: Generation = Generation(0);

    /// The generation that the next start will carry (saturates at `u64::MAX`, which no real
    /// server ever reaches).
    #[must_use]
    pub const fn next(self) -> Generation {
        Generation(self.0.saturating_add(1))
    }

    /// The raw counter, for logs, metrics and status documents.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for Generation {
    fn from(value: u64) -> Self {
        Generation(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn next_counts_up_and_saturates() {
        assert_eq!(Generation(0).next(), Generation(1));
        assert_eq!(Generation(41).next().get(), 42);
        assert_eq!(Generation(u64::MAX).next(), Generation(u64::MAX));
        assert!(Generation(1) < Generation(2));
    }

    #[test]
    fn displays_as_the_bare_number() {
        assert_eq!(Generation(7).to_string(), "7");
        assert_eq!(Generation::default(), Generation::NONE);
    }
}
