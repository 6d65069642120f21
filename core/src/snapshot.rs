//! The supervisor's state in one `u64`: what every request checks before it is sent.
//!
//! The request path must not take a lock or hop to an actor. The supervision machine publishes
//! its [`Status`](crate::Status) as a [`Snapshot`] packed into one word, which the shell keeps in
//! an atomic: a request loads it, and only when the word says something unusual (not ready, or
//! the poison table changed since it last looked) does it take a slower path.
//!
//! Layout, low bits first: 4 bits phase (its index in [`Phase::ALL`]), 20 bits poison epoch,
//! 40 bits generation (saturating; a server restarted every second would need 34,000 years).

use crate::{Generation, Phase};

const PHASE_BITS: u32 = 4;
const EPOCH_BITS: u32 = 20;
const PHASE_MASK: u64 = (1 << PHASE_BITS) - 1;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;
const GENERATION_MAX: u64 = (1 << (64 - PHASE_BITS - EPOCH_BITS)) - 1;

/// What a request needs to know about the supervisor, in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The current generation (saturated at 2^40 - 1 when packed).
    pub generation: Generation,
    /// What the supervisor is doing.
    pub phase: Phase,
    /// Grows whenever the poison table changes; 0 while it has never held anything, so a request
    /// looks the table up only when it is not 0 (see [`Snapshot::next_epoch`]).
    pub poison_epoch: u32,
}

impl Snapshot {
    /// The snapshot before anything started.
    pub const INITIAL: Snapshot = Snapshot {
        generation: Generation::NONE,
        phase: Phase::Starting,
        poison_epoch: 0,
    };

    /// Packs the snapshot into one word (see the module docs for the layout).
    #[must_use]
    pub fn pack(self) -> u64 {
        let phase = Phase::ALL
            .iter()
            .position(|p| *p == self.phase)
            .unwrap_or(0) as u64;
        let epoch = u64::from(self.poison_epoch) & EPOCH_MASK;
        let generation = self.generation.get().min(GENERATION_MAX);
        phase | (epoch << PHASE_BITS) | (generation << (PHASE_BITS + EPOCH_BITS))
    }

    /// Unpacks a word made by [`pack`](Self::pack).
    #[must_use]
    pub fn unpack(word: u64) -> Self {
        let phase_index = (word & PHASE_MASK) as usize;
        Snapshot {
            phase: Phase::ALL
                .get(phase_index)
                .copied()
                .unwrap_or(Phase::Starting),
            poison_epoch: ((word >> PHASE_BITS) & EPOCH_MASK) as u32,
            generation: Generation(word >> (PHASE_BITS + EPOCH_BITS)),
        }
    }

    /// Whether a request that needs `generation` (or a later one) may be sent now.
    #[must_use]
    pub fn ready_for(self, generation: Generation) -> bool {
        self.phase == Phase::Ready && self.generation >= generation
    }

    /// Whether `generation` is on its way out: its restart has begun, or a later generation
    /// exists. Whatever its server starts to answer now is cut when it is stopped, so a request
    /// whose answer begins in this moment goes to the next generation instead.
    #[must_use]
    pub fn replacing(self, generation: Generation) -> bool {
        self.generation > generation
            || (self.generation == generation
                && matches!(self.phase, Phase::Restarting | Phase::BackingOff))
    }

    /// The epoch after `epoch`: it wraps within its 20 bits and never comes back to 0, which
    /// means "the table never held anything".
    #[must_use]
    pub fn next_epoch(epoch: u32) -> u32 {
        let next = (u64::from(epoch) + 1) & EPOCH_MASK;
        if next == 0 {
            1
        } else {
            next as u32
        }
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot::INITIAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_is_being_replaced_once_its_restart_began_or_a_later_one_exists() {
        let at = |generation: u64, phase: Phase| Snapshot {
            generation: Generation(generation),
            phase,
            poison_epoch: 0,
        };
        let two = Generation(2);
        assert!(!at(2, Phase::Ready).replacing(two));
        assert!(!at(2, Phase::Starting).replacing(two));
        assert!(at(2, Phase::Restarting).replacing(two));
        assert!(at(2, Phase::BackingOff).replacing(two));
        assert!(at(3, Phase::Starting).replacing(two));
        assert!(at(3, Phase::Ready).replacing(two));
        assert!(!at(1, Phase::Restarting).replacing(two), "an older restart");
    }

    #[test]
    fn packs_and_unpacks_every_phase() {
        for phase in Phase::ALL {
            let snapshot = Snapshot {
                generation: Generation(123_456),
                phase,
                poison_epoch: 77,
            };
            assert_eq!(Snapshot::unpack(snapshot.pack()), snapshot);
        }
        assert_eq!(Snapshot::unpack(0), Snapshot::INITIAL);
    }

    #[test]
    fn the_generation_saturates_and_the_epoch_skips_zero() {
        let huge = Snapshot {
            generation: Generation(u64::MAX),
            phase: Phase::Ready,
            poison_epoch: 1,
        };
        let back = Snapshot::unpack(huge.pack());
        assert_eq!(back.generation, Generation(GENERATION_MAX));
        assert_eq!(back.phase, Phase::Ready);
        assert_eq!(Snapshot::next_epoch(0), 1);
        assert_eq!(Snapshot::next_epoch(EPOCH_MASK as u32), 1);
    }

    #[test]
    fn only_a_ready_phase_with_a_new_enough_generation_admits() {
        let s = Snapshot {
            generation: Generation(3),
            phase: Phase::Ready,
            poison_epoch: 0,
        };
        assert!(s.ready_for(Generation(3)));
        assert!(!s.ready_for(Generation(4)));
        let restarting = Snapshot {
            phase: Phase::Restarting,
            ..s
        };
        assert!(!restarting.ready_for(Generation(1)));
    }
}
