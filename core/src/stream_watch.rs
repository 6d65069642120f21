//! Stream deadlines: how long a response may take to start, to continue, and in total.
//!
//! A hung model server rarely closes the connection; it simply stops sending. The watch turns
//! "no byte yet", "no chunk for a while" and "the whole request took too long" into deadlines the
//! caller sleeps until ([`StreamWatch::deadline`]) and then checks ([`StreamWatch::check`]).
//!
//! Every deadline is an absolute time since the caller's origin. A deadline is reached *at* its
//! instant: `check(now)` is `None` for every `now < deadline()` and `Some` for every
//! `now >= deadline()`.

use core::time::Duration;

use crate::InvalidConfig;

/// The deadlines of one request's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct StreamDeadlines {
    /// Longest wait for the first byte of the response after sending. Default 60 s.
    pub first_byte: Duration,
    /// Longest silence between two chunks once the response started. Default 30 s.
    pub between_chunks: Duration,
    /// Longest time for the whole response, from sending; `None` = unlimited. Default `None`.
    pub total: Option<Duration>,
    /// How long, from sending, a request whose first-byte or stall deadline passed may keep
    /// waiting while its server shows life (see [`RequestPlan`](crate::RequestPlan)); past it that
    /// request alone is cut. Default 30 min.
    pub max_request_time: Duration,
}

impl Default for StreamDeadlines {
    fn default() -> Self {
        StreamDeadlines {
            first_byte: Duration::from_secs(60),
            between_chunks: Duration::from_secs(30),
            total: None,
            max_request_time: Duration::from_secs(30 * 60),
        }
    }
}

impl StreamDeadlines {
    /// Checks that every deadline is positive.
    ///
    /// # Errors
    /// [`InvalidConfig::ZeroDuration`] naming the field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.first_byte.is_zero() {
            return Err(InvalidConfig::ZeroDuration {
                field: "stream.first_byte",
            });
        }
        if self.between_chunks.is_zero() {
            return Err(InvalidConfig::ZeroDuration {
                field: "stream.between_chunks",
            });
        }
        if self.total.is_some_and(|total| total.is_zero()) {
            return Err(InvalidConfig::ZeroDuration {
                field: "stream.total",
            });
        }
        if self.max_request_time.is_zero() {
            return Err(InvalidConfig::ZeroDuration {
                field: "stream.max_request_time",
            });
        }
        Ok(())
    }
}

/// Which deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum StreamTimeout {
    /// No first byte in time: the server is likely hung.
    FirstByte,
    /// The response stopped between chunks: the server is likely hung.
    Stall,
    /// The whole response took too long (a budget, not necessarily a hang).
    Total,
}

/// Deadlines of one response, advanced by each chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamWatch {
    deadlines: StreamDeadlines,
    sent_at: Duration,
    last_chunk_at: Option<Duration>,
}

impl StreamWatch {
    /// A watch for a request sent at `now`.
    #[must_use]
    pub fn new(deadlines: StreamDeadlines, now: Duration) -> Self {
        StreamWatch {
            deadlines,
            sent_at: now,
            last_chunk_at: None,
        }
    }

    /// A chunk arrived at `now`; the first call marks the first byte. Time never moves the watch
    /// backwards: a `now` earlier than the previous chunk is treated as that chunk's time.
    pub fn on_chunk(&mut self, now: Duration) {
        let previous = self.last_chunk_at.unwrap_or(self.sent_at);
        self.last_chunk_at = Some(now.max(previous));
    }

    /// Whether any byte of the response has arrived.
    #[must_use]
    pub fn first_byte_seen(&self) -> bool {
        self.last_chunk_at.is_some()
    }

    /// When the request was sent.
    #[must_use]
    pub fn sent_at(&self) -> Duration {
        self.sent_at
    }

    /// When the latest chunk arrived; `None` before the first byte.
    #[must_use]
    pub fn last_chunk_at(&self) -> Option<Duration> {
        self.last_chunk_at
    }

    fn progress_deadline(&self) -> (Duration, StreamTimeout) {
        match self.last_chunk_at {
            None => (
                self.sent_at.saturating_add(self.deadlines.first_byte),
                StreamTimeout::FirstByte,
            ),
            Some(at) => (
                at.saturating_add(self.deadlines.between_chunks),
                StreamTimeout::Stall,
            ),
        }
    }

    fn next(&self) -> (Duration, StreamTimeout) {
        let progress = self.progress_deadline();
        match self.deadlines.total {
            // On a tie the hang (first byte / stall) wins: it is the more useful verdict.
            Some(total) if self.sent_at.saturating_add(total) < progress.0 => {
                (self.sent_at.saturating_add(total), StreamTimeout::Total)
            }
            _ => progress,
        }
    }

    /// The absolute time (since the origin) of the next deadline: the earliest that applies.
    #[must_use]
    pub fn deadline(&self) -> Duration {
        self.next().0
    }

    /// The deadline that has passed at `now`, if any: `None` strictly before
    /// [`deadline`](Self::deadline), `Some` at or after it.
    #[must_use]
    pub fn check(&self, now: Duration) -> Option<StreamTimeout> {
        let (deadline, kind) = self.next();
        (now >= deadline).then_some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn first_byte_deadline_counts_from_sending() {
        let w = StreamWatch::new(StreamDeadlines::default(), s(100));
        assert!(!w.first_byte_seen());
        assert_eq!(w.deadline(), s(160));
        assert_eq!(w.check(s(159)), None);
        assert_eq!(w.check(s(160)), Some(StreamTimeout::FirstByte));
    }

    #[test]
    fn each_chunk_moves_the_stall_deadline() {
        let mut w = StreamWatch::new(StreamDeadlines::default(), s(0));
        w.on_chunk(s(5));
        assert!(w.first_byte_seen());
        assert_eq!(w.deadline(), s(35));
        w.on_chunk(s(20));
        assert_eq!(w.deadline(), s(50));
        assert_eq!(w.check(s(49)), None);
        assert_eq!(w.check(s(50)), Some(StreamTimeout::Stall));
        // Time going backwards does not move the deadline earlier.
        w.on_chunk(s(10));
        assert_eq!(w.deadline(), s(50));
    }

    #[test]
    fn total_deadline_caps_a_trickling_stream() {
        let deadlines = StreamDeadlines {
            total: Some(s(45)),
            ..StreamDeadlines::default()
        };
        let mut w = StreamWatch::new(deadlines, s(0));
        assert_eq!(w.deadline(), s(45));
        assert_eq!(w.check(s(45)), Some(StreamTimeout::Total));
        w.on_chunk(s(1));
        assert_eq!(w.deadline(), s(31));
        w.on_chunk(s(30));
        assert_eq!(w.deadline(), s(45));
        assert_eq!(w.check(s(44)), None);
        assert_eq!(w.check(s(46)), Some(StreamTimeout::Total));
    }

    #[test]
    fn validate_rejects_zero_deadlines() {
        assert_eq!(StreamDeadlines::default().validate(), Ok(()));
        let d = StreamDeadlines {
            total: Some(Duration::ZERO),
            ..StreamDeadlines::default()
        };
        assert_eq!(
            d.validate(),
            Err(InvalidConfig::ZeroDuration {
                field: "stream.total"
            })
        );
    }
}
