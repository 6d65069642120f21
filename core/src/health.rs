//! Health tracking: turns health-probe outcomes into a verdict about the server.
//!
//! After a start the tracker is `Starting`: probes come fast (the readiness cadence starts at
//! `ready_poll_initial`, a millisecond, and grows by `ready_poll_factor` up to `ready_poll_max`,
//! 20 ms, never above the steady `interval`), so a server that becomes ready is noticed within
//! milliseconds however long its start took, and failures do not
//! count — a loading model refuses connections — except that the whole start is bounded by
//! `startup_timeout`. Once `Ready`, every failed probe is a strike; `unhealthy_after` strikes in a
//! row make the server `Unresponsive`, and a single good probe clears the strikes.
//!
//! **Silence.** Strikes alone find a freeze late: the first probe to go unanswered may be sent up
//! to an interval after the freeze, so three strikes come three to four seconds after it at the
//! defaults. The tracker also knows when the server last said anything — any HTTP answer to a
//! probe, any byte of an answer to a request ([`Traffic`]) — and since when it has been asked
//! without answering (its oldest unanswered probe, or the oldest request still open). A ready
//! server whose probe went unanswered and that has been silent while asked for the
//! [detection budget](HealthConfig::detection_budget) (the time `unhealthy_after` unanswered
//! probes take at least: 3 s by default) is `Unresponsive` then, without waiting for the probe
//! cadence to catch up; after an unanswered probe the next one is placed to end at that moment
//! ([`NextProbe`]: with the whole timeout when there is time, else at once and cut short; a
//! cut-short probe is no strike unless it ends the wait). A server is never found silent sooner
//! than the budget: a pause shorter than it costs no restart, whatever its phase against the
//! probes.
//!
//! ```text
//!  Starting ──ok──► Ready ──fail──► Suspect{1} ──fail──► … ──fail──► Unresponsive
//!     │               ▲                 │                                 │
//!     │               └──────ok─────────┘                     restarted() │
//!     └── startup_timeout elapsed: StartupTimedOut (once) ◄───────────────┘ (back to Starting)
//! ```

use core::time::Duration;

use crate::exponential::grow;
use crate::InvalidConfig;

/// Health-probe knobs: how often, how patient, how many strikes, how long a start may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct HealthConfig {
    /// Steady probe interval once the server is ready. Default 1 s.
    pub interval: Duration,
    /// How long one probe may take before it counts as timed out. Default 1 s.
    pub timeout: Duration,
    /// Consecutive failed probes (while ready) that mean a hang. Default 3; at least 1.
    pub unhealthy_after: u32,
    /// How long a start may take before it counts as hung. Default 600 s (large models load slowly).
    pub startup_timeout: Duration,
    /// Delay of the first readiness probe after a start. Default 1 ms: a small server is
    /// listening a few milliseconds after its spawn, and each millisecond before it is noticed is
    /// a millisecond of the restart.
    pub ready_poll_initial: Duration,
    /// Growth factor of the readiness cadence. Default 2; at least 1.
    pub ready_poll_factor: u32,
    /// The slowest readiness cadence (never above `interval`). Default 20 ms: a server that
    /// takes minutes to load is still noticed within 20 ms of answering. A probe of a server that
    /// is not listening yet is a refused connection, and one of a server still loading is a quick
    /// 503, so 50 of them a second cost next to nothing.
    pub ready_poll_max: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
            startup_timeout: Duration::from_secs(600),
            ready_poll_initial: Duration::from_millis(1),
            ready_poll_factor: 2,
            ready_poll_max: Duration::from_millis(20),
        }
    }
}

impl HealthConfig {
    /// How long a ready server must have said nothing, while asked, before it counts as hung: the
    /// time `unhealthy_after` probes take at least when each goes unanswered,
    /// `timeout + (unhealthy_after - 1) * max(interval, timeout)` (3 s by default).
    #[must_use]
    pub fn detection_budget(&self) -> Duration {
        let between = self.interval.max(self.timeout);
        between
            .saturating_mul(self.unhealthy_after.max(1).saturating_sub(1))
            .saturating_add(self.timeout)
    }

    /// Checks every field: durations positive, counts and factor at least 1.
    ///
    /// # Errors
    /// The first field out of range, as an [`InvalidConfig`] naming it.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let durations = [
            ("health.interval", self.interval),
            ("health.timeout", self.timeout),
            ("health.startup_timeout", self.startup_timeout),
            ("health.ready_poll_initial", self.ready_poll_initial),
            ("health.ready_poll_max", self.ready_poll_max),
        ];
        for (field, value) in durations {
            if value.is_zero() {
                return Err(InvalidConfig::ZeroDuration { field });
            }
        }
        if self.unhealthy_after == 0 {
            return Err(InvalidConfig::ZeroThreshold {
                field: "health.unhealthy_after",
            });
        }
        if self.ready_poll_factor == 0 {
            return Err(InvalidConfig::ZeroFactor {
                field: "health.ready_poll_factor",
            });
        }
        Ok(())
    }
}

/// The result of one health probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ProbeOutcome {
    /// The server answered with success.
    Ok,
    /// The server answered with an error, or the connection failed.
    Failed,
    /// No answer within the probe timeout.
    TimedOut,
}

/// What one health probe got back, as the prober saw it: the machine that reads it needs more
/// than ok/failed (a server that answers 503 is alive; one that cannot be reached is not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ProbeAnswer {
    /// The server answered with this HTTP status.
    Status(u16),
    /// No connection could be made, or it broke before the answer.
    NoConnection,
    /// No answer within the probe timeout.
    TimedOut,
}

impl ProbeAnswer {
    /// Whether the server answered with a success status (2xx).
    #[must_use]
    pub const fn is_success(self) -> bool {
        matches!(self, ProbeAnswer::Status(200..=299))
    }

    /// The outcome as the [`HealthTracker`] counts it: 2xx is ok, any other answer or no
    /// connection is a failure, no answer in time is a timeout.
    #[must_use]
    pub const fn outcome(self) -> ProbeOutcome {
        match self {
            ProbeAnswer::Status(200..=299) => ProbeOutcome::Ok,
            ProbeAnswer::Status(_) | ProbeAnswer::NoConnection => ProbeOutcome::Failed,
            ProbeAnswer::TimedOut => ProbeOutcome::TimedOut,
        }
    }
}

/// What the proxy saw of a server's traffic, for the silence rule (see the module docs): both on
/// the tracker's clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Traffic {
    /// When the server last sent anything on a request (a head, a chunk, an end).
    pub last_heard: Option<Duration>,
    /// When the oldest request still open was sent to it.
    pub oldest_open: Option<Duration>,
}

/// The silence rule's memory: when the server last said anything and since when it has been
/// asked without answering.
#[derive(Clone, Copy, Debug, Default)]
struct Silence {
    heard: Option<Duration>,
    unanswered_since: Option<Duration>,
    /// The next probe as the silence rule places it: its delay from the start of the last one,
    /// and its timeout (shorter than the configured one when it must end when the silence
    /// reaches the budget).
    next: Option<NextProbe>,
    /// The timeout of the probe in flight (the configured one unless `next` shortened it).
    in_flight_timeout: Option<Duration>,
}

/// When to send the next probe and how long to give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NextProbe {
    /// The delay, counted from the start of the probe just answered.
    pub after: Duration,
    /// How long the probe may take before it counts as timed out.
    pub timeout: Duration,
}

impl Silence {
    fn heard(&mut self, at: Duration) {
        if self.heard.map_or(true, |heard| at > heard) {
            self.heard = Some(at);
        }
        if self.unanswered_since.is_some_and(|since| since <= at) {
            self.unanswered_since = None;
        }
    }

    fn unanswered(&mut self, sent: Duration) {
        if self.heard.map_or(true, |heard| sent >= heard) && self.unanswered_since.is_none() {
            self.unanswered_since = Some(sent);
        }
    }

    /// Since when the server has said nothing while asked: the later of its last word and the
    /// oldest ask since (an unanswered probe, or `oldest_open`).
    fn silent_since(&self, oldest_open: Option<Duration>) -> Option<Duration> {
        let asked = match (self.unanswered_since, oldest_open) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(self.heard.map_or(asked, |heard| heard.max(asked)))
    }
}

/// What the tracker currently believes about the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum HealthState {
    /// Started, not yet answered a probe; failures do not count, the startup budget does.
    Starting,
    /// Answered its last probe.
    Ready,
    /// Was ready, then failed `failures` probes in a row (fewer than `unhealthy_after`).
    Suspect {
        /// Consecutive failed probes so far.
        failures: u32,
    },
    /// Failed `unhealthy_after` probes in a row; stays so until [`HealthTracker::restarted`].
    Unresponsive,
}

/// What a probe (or the passing of time) changed; anything but `Nothing` is worth reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum HealthEvent {
    /// No change worth reporting.
    Nothing,
    /// The server answered for the first time since its start, `startup` after it.
    BecameReady {
        /// Time from the start to the first good probe.
        startup: Duration,
    },
    /// The server failed `failures` probes in a row while ready: a hang. Reported once.
    Unresponsive {
        /// Consecutive failed probes (equal to `unhealthy_after`).
        failures: u32,
    },
    /// The start did not become ready within the startup budget. Reported once per start.
    StartupTimedOut {
        /// Time since the start when the budget was found exhausted.
        after: Duration,
    },
}

/// Turns probe outcomes into [`HealthState`] and [`HealthEvent`]s, and paces the probes.
///
/// Time is a [`Duration`] since an origin the caller chooses; it should not go backwards (if it
/// does, elapsed times saturate at zero).
#[derive(Clone, Debug)]
pub struct HealthTracker {
    config: HealthConfig,
    state: HealthState,
    started_at: Duration,
    readiness_probes: u32,
    startup_timeout_reported: bool,
    silence: Silence,
}

impl HealthTracker {
    /// A tracker for a server started at `now`: state `Starting`, fast readiness cadence.
    ///
    /// The configuration is used as given; an `unhealthy_after` of 0 acts as 1 (call
    /// [`HealthConfig::validate`] to reject it instead).
    #[must_use]
    pub fn new(config: HealthConfig, now: Duration) -> Self {
        HealthTracker {
            config,
            state: HealthState::Starting,
            started_at: now,
            readiness_probes: 0,
            startup_timeout_reported: false,
            silence: Silence::default(),
        }
    }

    /// A new generation started at `now`: back to `Starting`, cadence and startup budget reset.
    pub fn restarted(&mut self, now: Duration) {
        self.state = HealthState::Starting;
        self.started_at = now;
        self.readiness_probes = 0;
        self.startup_timeout_reported = false;
        self.silence = Silence::default();
    }

    /// Feeds one probe that completed at `now` as [`on_probe`](Self::on_probe) does, with what
    /// its answer and the server's `traffic` say about the server's silence (see the module
    /// docs): a ready server whose probe timed out and that has said nothing while asked for the
    /// [detection budget](HealthConfig::detection_budget) is [`HealthEvent::Unresponsive`] now,
    /// however few strikes it has. A refused connection only strikes.
    pub fn on_probe_answer(
        &mut self,
        now: Duration,
        answer: ProbeAnswer,
        traffic: Traffic,
    ) -> HealthEvent {
        // The probe just answered had the timeout the last `next_probe` gave it.
        let timeout = self
            .silence
            .in_flight_timeout
            .take()
            .unwrap_or(self.config.timeout);
        let cut_short = timeout < self.config.timeout;
        self.silence.next = None;
        if let Some(at) = traffic.last_heard {
            self.silence.heard(at);
        }
        match answer {
            ProbeAnswer::Status(_) => self.silence.heard(now),
            ProbeAnswer::TimedOut => self.silence.unanswered(now.saturating_sub(timeout)),
            // A refused connection is a strike, not an ask the server left unanswered (a frozen
            // server's kernel still accepts): it says nothing about how long it has been silent.
            ProbeAnswer::NoConnection => {}
        }
        let silent_since = (answer == ProbeAnswer::TimedOut)
            .then(|| self.silence.silent_since(traffic.oldest_open))
            .flatten();
        let deadline =
            silent_since.map(|since| since.saturating_add(self.config.detection_budget()));
        let event = match self.state {
            // A probe cut short to end with the budget only proves the silence: if the silence
            // is not long enough (the server spoke since), its timeout is no strike.
            HealthState::Suspect { failures } if cut_short && answer == ProbeAnswer::TimedOut => {
                if deadline.is_some_and(|deadline| now >= deadline) {
                    self.state = HealthState::Unresponsive;
                    return HealthEvent::Unresponsive {
                        failures: failures.saturating_add(1),
                    };
                }
                HealthEvent::Nothing
            }
            _ => self.on_probe(now, answer.outcome()),
        };
        let HealthState::Suspect { failures } = self.state else {
            return event;
        };
        let Some(deadline) = deadline else {
            return event;
        };
        if now >= deadline {
            self.state = HealthState::Unresponsive;
            return HealthEvent::Unresponsive { failures };
        }
        // Place the next probe so that it ends when the silence reaches the budget: with the
        // whole timeout when it can start late enough, cut short when it must start now (probes
        // go one at a time). Delays count from this probe's start, `now - timeout`.
        let started = now.saturating_sub(timeout);
        let full_start = deadline.saturating_sub(self.config.timeout);
        self.silence.next = Some(if full_start >= now {
            NextProbe {
                after: full_start.saturating_sub(started).min(self.config.interval),
                timeout: self.config.timeout,
            }
        } else {
            NextProbe {
                after: now.saturating_sub(started),
                timeout: deadline.saturating_sub(now),
            }
        });
        self.silence.in_flight_timeout = self.silence.next.map(|next| next.timeout);
        event
    }

    /// A probe got, at `now`, an answer the tracker is not fed as an outcome (a prompt non-2xx
    /// from a server that shows life: no strike, no clearing): the server spoke, and the next
    /// probe is a whole one again.
    pub fn on_uncounted_answer(&mut self, now: Duration) {
        self.silence.in_flight_timeout = None;
        self.silence.next = None;
        self.silence.heard(now);
    }

    /// Since when the server has said nothing while asked, as the last probe left it (`None`
    /// when it answered, or nothing was asked).
    #[must_use]
    pub fn silent_since(&self, oldest_open: Option<Duration>) -> Option<Duration> {
        self.silence.silent_since(oldest_open)
    }

    /// Feeds the outcome of one probe that completed at `now`.
    ///
    /// * `Starting` + ok → `Ready`, [`HealthEvent::BecameReady`] (also after a reported startup
    ///   timeout: a late start is still a start, and the caller knows which generation it watches).
    /// * `Starting` + failure → stays `Starting` (no strike); [`HealthEvent::StartupTimedOut`] once
    ///   when `startup_timeout` has elapsed since the start.
    /// * `Ready`/`Suspect` + failure → one more strike; at `unhealthy_after` strikes →
    ///   `Unresponsive` and [`HealthEvent::Unresponsive`] (once).
    /// * `Suspect` + ok → `Ready`. `Unresponsive` ignores probes until [`restarted`](Self::restarted).
    pub fn on_probe(&mut self, now: Duration, outcome: ProbeOutcome) -> HealthEvent {
        let ok = outcome == ProbeOutcome::Ok;
        match self.state {
            HealthState::Starting => {
                self.readiness_probes = self.readiness_probes.saturating_add(1);
                if ok {
                    self.state = HealthState::Ready;
                    HealthEvent::BecameReady {
                        startup: now.saturating_sub(self.started_at),
                    }
                } else {
                    self.poll(now)
                }
            }
            HealthState::Ready | HealthState::Suspect { .. } if ok => {
                self.state = HealthState::Ready;
                HealthEvent::Nothing
            }
            HealthState::Ready => self.strike(1),
            HealthState::Suspect { failures } => self.strike(failures.saturating_add(1)),
            HealthState::Unresponsive => HealthEvent::Nothing,
        }
    }

    fn strike(&mut self, failures: u32) -> HealthEvent {
        if failures >= self.config.unhealthy_after.max(1) {
            self.state = HealthState::Unresponsive;
            HealthEvent::Unresponsive { failures }
        } else {
            self.state = HealthState::Suspect { failures };
            HealthEvent::Nothing
        }
    }

    /// Checks the startup budget without a probe (a probe may itself hang): answers
    /// [`HealthEvent::StartupTimedOut`] once when a start has taken `startup_timeout` or more.
    pub fn poll(&mut self, now: Duration) -> HealthEvent {
        if self.state != HealthState::Starting || self.startup_timeout_reported {
            return HealthEvent::Nothing;
        }
        let elapsed = now.saturating_sub(self.started_at);
        if elapsed >= self.config.startup_timeout {
            self.startup_timeout_reported = true;
            HealthEvent::StartupTimedOut { after: elapsed }
        } else {
            HealthEvent::Nothing
        }
    }

    /// How long to wait before the next probe: [`next_probe`](Self::next_probe)'s delay.
    #[must_use]
    pub fn next_probe_in(&self) -> Duration {
        self.next_probe().after
    }

    /// When to send the next probe, counted from the start of the last one, and how long to give
    /// it; the tracker judges the next answer with the timeout given here.
    ///
    /// While `Starting`: `ready_poll_initial * ready_poll_factor^k` (k = readiness probes so far),
    /// never above `ready_poll_max` nor `interval`. After a probe that timed out (fed through
    /// [`on_probe_answer`](Self::on_probe_answer)) while the server is silent: the probe that ends
    /// when the silence reaches the budget — with the whole timeout, at most `interval` after the
    /// last start, when there is time for it, else at once with what is left of the budget.
    /// Otherwise: `interval`. The timeout is `timeout` unless cut short so.
    #[must_use]
    pub fn next_probe(&self) -> NextProbe {
        let steady = NextProbe {
            after: self.config.interval,
            timeout: self.config.timeout,
        };
        match self.state {
            HealthState::Starting => NextProbe {
                after: grow(
                    self.config.ready_poll_initial,
                    self.config.ready_poll_factor,
                    self.readiness_probes,
                    self.config.ready_poll_max.min(self.config.interval),
                ),
                timeout: self.config.timeout,
            },
            HealthState::Suspect { .. } => self.silence.next.unwrap_or(steady),
            _ => steady,
        }
    }

    /// The current verdict.
    #[must_use]
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Consecutive failed probes while ready (0 when `Starting` or `Ready`).
    #[must_use]
    pub fn consecutive_failures(&self) -> u32 {
        match self.state {
            HealthState::Suspect { failures } => failures,
            HealthState::Unresponsive => self.config.unhealthy_after.max(1),
            HealthState::Starting | HealthState::Ready => 0,
        }
    }

    /// When the current start began (the `now` given to [`new`](Self::new) or
    /// [`restarted`](Self::restarted)).
    #[must_use]
    pub fn started_at(&self) -> Duration {
        self.started_at
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ready_tracker() -> HealthTracker {
        let mut t = HealthTracker::new(HealthConfig::default(), ms(0));
        assert_eq!(
            t.on_probe(ms(250), ProbeOutcome::Ok),
            HealthEvent::BecameReady { startup: ms(250) }
        );
        t
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = HealthConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.interval, ms(1000));
        assert_eq!(c.unhealthy_after, 3);
        assert_eq!(c.startup_timeout, Duration::from_secs(600));
    }

    #[test]
    fn validate_names_the_bad_field() {
        let c = HealthConfig {
            unhealthy_after: 0,
            ..HealthConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(InvalidConfig::ZeroThreshold {
                field: "health.unhealthy_after"
            })
        );
        let c = HealthConfig {
            interval: Duration::ZERO,
            ..HealthConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(InvalidConfig::ZeroDuration {
                field: "health.interval"
            })
        );
        let c = HealthConfig {
            ready_poll_factor: 0,
            ..HealthConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn starting_ignores_failures_until_the_startup_budget_is_spent() {
        let config = HealthConfig {
            startup_timeout: ms(1000),
            ..HealthConfig::default()
        };
        let mut t = HealthTracker::new(config, ms(100));
        for at in [110, 200, 500, 1099] {
            assert_eq!(
                t.on_probe(ms(at), ProbeOutcome::Failed),
                HealthEvent::Nothing
            );
            assert_eq!(t.state(), HealthState::Starting);
        }
        assert_eq!(
            t.on_probe(ms(1100), ProbeOutcome::TimedOut),
            HealthEvent::StartupTimedOut { after: ms(1000) }
        );
        // Reported once only.
        assert_eq!(
            t.on_probe(ms(1200), ProbeOutcome::Failed),
            HealthEvent::Nothing
        );
        assert_eq!(t.poll(ms(5000)), HealthEvent::Nothing);
        // A late start is still reported as ready.
        assert_eq!(
            t.on_probe(ms(1300), ProbeOutcome::Ok),
            HealthEvent::BecameReady { startup: ms(1200) }
        );
    }

    #[test]
    fn poll_reports_the_startup_timeout_without_a_probe() {
        let config = HealthConfig {
            startup_timeout: ms(500),
            ..HealthConfig::default()
        };
        let mut t = HealthTracker::new(config, ms(0));
        assert_eq!(t.poll(ms(499)), HealthEvent::Nothing);
        assert_eq!(
            t.poll(ms(500)),
            HealthEvent::StartupTimedOut { after: ms(500) }
        );
        assert_eq!(t.poll(ms(600)), HealthEvent::Nothing);
        t.restarted(ms(1000));
        assert_eq!(t.poll(ms(1400)), HealthEvent::Nothing);
        assert_eq!(
            t.poll(ms(1500)),
            HealthEvent::StartupTimedOut { after: ms(500) }
        );
    }

    #[test]
    fn ready_becomes_unresponsive_after_consecutive_failures_once() {
        let mut t = ready_tracker();
        assert_eq!(
            t.on_probe(ms(1000), ProbeOutcome::Failed),
            HealthEvent::Nothing
        );
        assert_eq!(t.state(), HealthState::Suspect { failures: 1 });
        assert_eq!(
            t.on_probe(ms(2000), ProbeOutcome::TimedOut),
            HealthEvent::Nothing
        );
        assert_eq!(t.state(), HealthState::Suspect { failures: 2 });
        assert_eq!(
            t.on_probe(ms(3000), ProbeOutcome::Failed),
            HealthEvent::Unresponsive { failures: 3 }
        );
        assert_eq!(t.state(), HealthState::Unresponsive);
        assert_eq!(
            t.on_probe(ms(4000), ProbeOutcome::Failed),
            HealthEvent::Nothing
        );
        assert_eq!(t.on_probe(ms(5000), ProbeOutcome::Ok), HealthEvent::Nothing);
        assert_eq!(t.state(), HealthState::Unresponsive);
    }

    #[test]
    fn a_good_probe_clears_suspicion() {
        let mut t = ready_tracker();
        t.on_probe(ms(1000), ProbeOutcome::Failed);
        t.on_probe(ms(2000), ProbeOutcome::Failed);
        assert_eq!(t.consecutive_failures(), 2);
        assert_eq!(t.on_probe(ms(3000), ProbeOutcome::Ok), HealthEvent::Nothing);
        assert_eq!(t.state(), HealthState::Ready);
        assert_eq!(
            t.on_probe(ms(4000), ProbeOutcome::Failed),
            HealthEvent::Nothing
        );
        assert_eq!(t.state(), HealthState::Suspect { failures: 1 });
    }

    #[test]
    fn threshold_of_one_and_zero_trip_on_the_first_failure() {
        for unhealthy_after in [0, 1] {
            let config = HealthConfig {
                unhealthy_after,
                ..HealthConfig::default()
            };
            let mut t = HealthTracker::new(config, ms(0));
            t.on_probe(ms(10), ProbeOutcome::Ok);
            assert_eq!(
                t.on_probe(ms(20), ProbeOutcome::Failed),
                HealthEvent::Unresponsive { failures: 1 }
            );
        }
    }

    #[test]
    fn readiness_cadence_starts_fast_and_backs_off_to_the_interval() {
        let mut t = HealthTracker::new(HealthConfig::default(), ms(0));
        let mut seen = alloc::vec::Vec::new();
        for i in 0..10 {
            seen.push(t.next_probe_in());
            t.on_probe(ms(i), ProbeOutcome::Failed);
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 20, 20, 20, 20, 20].map(ms));
        t.on_probe(ms(20), ProbeOutcome::Ok);
        assert_eq!(t.next_probe_in(), ms(1000));
        t.restarted(ms(30));
        assert_eq!(t.state(), HealthState::Starting);
        assert_eq!(t.next_probe_in(), ms(1));
    }

    #[test]
    fn restarted_leaves_unresponsive() {
        let config = HealthConfig {
            unhealthy_after: 1,
            ..HealthConfig::default()
        };
        let mut t = HealthTracker::new(config, ms(0));
        t.on_probe(ms(1), ProbeOutcome::Ok);
        t.on_probe(ms(2), ProbeOutcome::Failed);
        assert_eq!(t.state(), HealthState::Unresponsive);
        t.restarted(ms(100));
        assert_eq!(t.started_at(), ms(100));
        assert_eq!(
            t.on_probe(ms(150), ProbeOutcome::Ok),
            HealthEvent::BecameReady { startup: ms(50) }
        );
    }

    fn traffic(last_heard: u64, oldest_open: Option<u64>) -> Traffic {
        Traffic {
            last_heard: Some(ms(last_heard)),
            oldest_open: oldest_open.map(ms),
        }
    }

    #[test]
    fn the_detection_budget_is_the_least_time_the_strikes_take() {
        assert_eq!(HealthConfig::default().detection_budget(), ms(3000));
        let sparse = HealthConfig {
            interval: ms(5000),
            ..HealthConfig::default()
        };
        assert_eq!(sparse.detection_budget(), ms(11_000));
        let dense = HealthConfig {
            interval: ms(200),
            unhealthy_after: 2,
            ..HealthConfig::default()
        };
        assert_eq!(dense.detection_budget(), ms(2000));
    }

    /// A pause just short of the budget is no hang: the probe cut short to end with the budget
    /// is no strike when the server spoke before it ended.
    #[test]
    fn silence_shorter_than_the_budget_is_no_hang() {
        let mut t = ready_tracker();
        let quiet = traffic(10_000, Some(10_000));
        assert_eq!(
            t.on_probe_answer(ms(11_000), ProbeAnswer::TimedOut, quiet),
            HealthEvent::Nothing
        );
        assert_eq!(
            t.on_probe_answer(ms(12_999), ProbeAnswer::TimedOut, quiet),
            HealthEvent::Nothing
        );
        // At once (this probe started 1 s ago), for the 1 ms left of the budget.
        assert_eq!(
            t.next_probe(),
            NextProbe {
                after: ms(1000),
                timeout: ms(1)
            }
        );
        // The server spoke at 12.9995 s: the short probe's timeout is no strike.
        let spoke = Traffic {
            last_heard: Some(Duration::from_micros(12_999_500)),
            oldest_open: Some(ms(10_000)),
        };
        assert_eq!(
            t.on_probe_answer(ms(13_000), ProbeAnswer::TimedOut, spoke),
            HealthEvent::Nothing
        );
        assert_eq!(t.state(), HealthState::Suspect { failures: 2 });
        // Back to whole probes.
        assert_eq!(t.next_probe().timeout, ms(1000));
    }

    /// A server frozen at 10 s with a request just sent to it: the first unanswered probe left
    /// 0.1 s later; the probes are placed so that the hang is found 3 s after the freeze, not 3 s
    /// after that first probe.
    #[test]
    fn a_freeze_under_traffic_is_found_one_budget_after_the_last_word() {
        let mut t = ready_tracker();
        let busy = traffic(10_000, Some(10_000));
        // Sent at 10.1 s, timed out at 11.1 s: the server has been silent since 10 s.
        assert_eq!(
            t.on_probe_answer(ms(11_100), ProbeAnswer::TimedOut, busy),
            HealthEvent::Nothing
        );
        assert_eq!(t.silent_since(busy.oldest_open), Some(ms(10_000)));
        assert_eq!(
            t.next_probe(),
            NextProbe {
                after: ms(1000),
                timeout: ms(1000)
            }
        );
        // Sent at 11.1 s, timed out at 12.1 s; the next one goes at once (probes go one at a
        // time) and is given the 0.9 s left of the budget.
        assert_eq!(
            t.on_probe_answer(ms(12_100), ProbeAnswer::TimedOut, busy),
            HealthEvent::Nothing
        );
        assert_eq!(
            t.next_probe(),
            NextProbe {
                after: ms(1000),
                timeout: ms(900)
            }
        );
        // Its timeout lands 3 s after the freeze.
        assert_eq!(
            t.on_probe_answer(ms(13_000), ProbeAnswer::TimedOut, busy),
            HealthEvent::Unresponsive { failures: 3 }
        );
        assert_eq!(t.state(), HealthState::Unresponsive);
    }

    /// The silence rule can find a hang before the strikes do: two unanswered probes, the server
    /// silent for the whole budget since its last answer.
    #[test]
    fn silence_for_the_budget_is_a_hang_with_fewer_strikes() {
        let mut t = ready_tracker();
        let quiet = traffic(10_000, Some(10_000));
        assert_eq!(
            t.on_probe_answer(ms(11_900), ProbeAnswer::TimedOut, quiet),
            HealthEvent::Nothing
        );
        assert_eq!(t.next_probe_in(), ms(1000));
        assert_eq!(
            t.on_probe_answer(ms(13_000), ProbeAnswer::TimedOut, quiet),
            HealthEvent::Unresponsive { failures: 2 }
        );
    }

    /// With no traffic the silence begins at the first unanswered probe: detection takes what
    /// the strikes take, as before.
    #[test]
    fn an_idle_server_is_silent_from_its_first_unanswered_probe() {
        let mut t = ready_tracker();
        let idle = Traffic::default();
        for (at, next) in [(2_250, 1000), (3_250, 1000)] {
            assert_eq!(
                t.on_probe_answer(ms(at), ProbeAnswer::TimedOut, idle),
                HealthEvent::Nothing
            );
            assert_eq!(t.next_probe_in(), ms(next));
        }
        assert_eq!(t.silent_since(None), Some(ms(1250)));
        assert_eq!(
            t.on_probe_answer(ms(4_250), ProbeAnswer::TimedOut, idle),
            HealthEvent::Unresponsive { failures: 3 }
        );
    }

    /// Anything the server says resets the silence: an answer to a probe, or a byte of an answer
    /// to a request after the unanswered probe was sent.
    #[test]
    fn a_word_from_the_server_restarts_the_silence() {
        let mut t = ready_tracker();
        let idle = Traffic::default();
        assert_eq!(
            t.on_probe_answer(ms(2_250), ProbeAnswer::TimedOut, idle),
            HealthEvent::Nothing
        );
        // A chunk of a stream at 2.5 s: the unanswered probe (sent at 1.25 s) is old news.
        let streaming = traffic(2_500, Some(2_000));
        assert_eq!(
            t.on_probe_answer(ms(3_250), ProbeAnswer::TimedOut, streaming),
            HealthEvent::Nothing
        );
        assert_eq!(t.silent_since(streaming.oldest_open), Some(ms(2_500)));
        assert_eq!(
            t.on_probe_answer(ms(3_300), ProbeAnswer::Status(200), streaming),
            HealthEvent::Nothing
        );
        assert_eq!(t.silent_since(None), None);
        assert_eq!(t.next_probe_in(), ms(1000));
    }

    /// A refused connection strikes but is no evidence of silence: three of them make the hang,
    /// however old the last word.
    #[test]
    fn refused_connections_only_strike() {
        let mut t = ready_tracker();
        let old = traffic(300, Some(300));
        for at in [5_000, 6_000] {
            assert_eq!(
                t.on_probe_answer(ms(at), ProbeAnswer::NoConnection, old),
                HealthEvent::Nothing
            );
        }
        assert_eq!(
            t.on_probe_answer(ms(7_000), ProbeAnswer::NoConnection, old),
            HealthEvent::Unresponsive { failures: 3 }
        );
    }
}
