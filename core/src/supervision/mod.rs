//! The supervision machine: every decision about the server's life, in one sans-IO type.
//!
//! [`Supervision`] is to the supervisor what quinn-proto's `Connection` is to a QUIC endpoint: the
//! driver feeds it what happened (`handle_*(now, ...)`: a start, a probe result, a hang report, an
//! exit, a restart done or failed, progress, an operator's restart, shutdown) and drains what to do
//! with [`poll_action`](Supervision::poll_action): spawn, watch a generation, ask restart strategy
//! *i*, wake at *t*, publish the status, quarantine a fingerprint, give up. The phase, the
//! [`RestartGate`], the [`RestartPolicy`], the [`HealthTracker`], the [`Liveness`] detectors and the
//! [`PoisonTracker`] are its parts; nothing else decides.
//!
//! ```text
//!            start                  probe ok                    hang / exit / probes
//!  (gen 0) ───────► Starting ─────────────────────► Ready ────────────────────────────┐
//!                     ▲  │ exit / startup timeout                                     ▼
//!                     │  └──────────────┐                    policy: at once  ┌─► Restarting
//!  restart done ──────┘                 ▼                                     │   (strategy i,
//!  (gen + 1)                 policy: back off ───► BackingOff ──wake at t─────┘    i+1 on failure)
//!                            policy: give up  ───► Failed
//!  shutdown ───► Stopping ───► Stopped
//! ```
//!
//! Rules, besides those of its parts:
//! * One restart per generation: the gate answers every later report with `Joined` or `Stale`.
//! * A generation that dies or times out during its start is a failed restart, not a new
//!   incident: the restart is scheduled again (with the policy's backoff).
//! * Strategies are tried in order; when every one failed, the restart is scheduled again.
//! * While a restart is under way the hung generation is no longer probed; `Failed`, `Stopping`
//!   and `Stopped` are final: reports are ignored there.
//! * With restarts disabled a hang is reported only, and the same generation stays watched.
//! * Quarantine by evidence ([`PoisonTracker`]): the requests in flight at an incident are
//!   suspects, a success clears a fingerprint, one present at `poison_threshold` incidents goes on
//!   trial (its requests one at a time, [`handle_trial_started`](Supervision::handle_trial_started)),
//!   and a hang during its trial convicts it for `quarantine_ttl`. With a table shared between
//!   machines (`shared_quarantine`, a pool's replicas) the suspects of an incident are handed
//!   out ([`Action::Suspects`]) for that table to judge.
//!
//! Rules against false restarts (a supervisor that kills healthy servers is worse than none):
//! * **Evidence of life beats a deadline.** The machine keeps each generation's last sign of
//!   life ([`Liveness`]: its progress counter growing, requests getting answers)
//!   and publishes it ([`Action::Life`]); a request past its first-byte or stall deadline waits on
//!   a server that showed life within the progress timeout instead of reporting a hang
//!   ([`RequestPlan`](crate::RequestPlan)). A flat counter is no stall while answers keep coming.
//! * **What `/health` answers matters.** A prompt non-2xx answer from a ready server that shows
//!   life is no strike (a TGI-like server answers 503 while busy); with no sign of life for the
//!   progress timeout each one is, and `unhealthy_after` of them make a hang (vLLM answers 503
//!   once its engine died). Probes that time out or cannot connect always strike. While starting,
//!   non-2xx means "loading": no strike, only the startup budget.
//! * **Operator restarts are not incidents** ([`handle_operator_restart`](Supervision::handle_operator_restart)):
//!   they begin at once, skip the backoff and the restart-intensity count, make no request a
//!   suspect, and join a restart already under way.
//! * **A hung server gets no grace.** Each [`Action::Restart`] says how the old generation is
//!   stopped ([`StopMode::for_cause`]): SIGKILL at once after a hang (it would not honour SIGTERM),
//!   the grace after an operator's restart.

mod action;

pub use action::{Action, FailReason, Recovery, Status, Triage};

use alloc::collections::VecDeque;
use core::time::Duration;

use crate::{
    CoreConfig, Fingerprint, GateDecision, Generation, Hang, HangCause, HealthEvent, HealthTracker,
    InvalidConfig, Liveness, LivenessStep, NextProbe, OperatorRestart, Phase, PoisonTracker,
    PolicyDecision, ProbeAnswer, ProbeOutcome, ProgressReading, RestartGate, RestartPolicy,
    Snapshot, StopMode, Traffic,
};

/// Everything the machine needs to know besides the events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupervisionConfig {
    /// Every threshold.
    pub core: CoreConfig,
    /// How many restart strategies the driver has, best first.
    pub strategies: usize,
    /// `false`: detect and report hangs, never restart.
    pub enable_restart: bool,
    /// `true`: the quarantine's table is shared with other machines (a pool's replicas), so the
    /// requests in flight at an incident are handed to the driver ([`Action::Suspects`]) instead
    /// of being counted in this machine's own table, which stays empty.
    pub shared_quarantine: bool,
}

impl SupervisionConfig {
    /// The documented defaults with `strategies` restart strategies, restarts enabled.
    #[must_use]
    pub fn new(strategies: usize) -> Self {
        SupervisionConfig {
            core: CoreConfig::default(),
            strategies,
            enable_restart: true,
            shared_quarantine: false,
        }
    }
}

/// What the machine waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Nothing outstanding: the current generation is starting (probed) or ready.
    Idle,
    /// The first start was asked for.
    Spawning(Generation),
    /// A restart waits out its backoff.
    BackingOff {
        until: Duration,
        hung: Generation,
        cause: HangCause,
    },
    /// A restart strategy is at work.
    Asking {
        strategy: usize,
        hung: Generation,
        next: Generation,
        cause: HangCause,
    },
}

/// A restart under way: why, and since when (for the recovery time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Incident {
    cause: HangCause,
    detected_at: Duration,
}

/// The supervision state machine; see the module docs.
#[derive(Clone, Debug)]
pub struct Supervision {
    config: SupervisionConfig,
    phase: Phase,
    gate: RestartGate,
    policy: RestartPolicy,
    health: HealthTracker,
    liveness: Liveness,
    poison: PoisonTracker,
    /// The fingerprint whose trial request is in flight, if any.
    trial: Option<Fingerprint>,
    /// The generation whose probes count, if any.
    probing: Option<Generation>,
    step: Step,
    incident: Option<Incident>,
    restarts: u64,
    last_cause: Option<HangCause>,
    poison_epoch: u32,
    published: Option<Status>,
    published_life: Option<(Generation, Option<Duration>)>,
    rng: u64,
    actions: VecDeque<Action>,
}

impl Supervision {
    /// A machine before the first start, at `now`; `seed` feeds the backoff jitter (any value).
    ///
    /// # Errors
    /// A threshold is out of range ([`CoreConfig::validate`]).
    pub fn try_new(
        config: SupervisionConfig,
        now: Duration,
        seed: u64,
    ) -> Result<Self, InvalidConfig> {
        config.core.validate()?;
        let core = config.core;
        Ok(Supervision {
            config,
            phase: Phase::Starting,
            gate: RestartGate::new(),
            policy: RestartPolicy::try_new(core.policy)?,
            health: HealthTracker::new(core.health, now),
            liveness: Liveness::new(core.progress, now),
            poison: PoisonTracker::new(core.poison_threshold).with_ttl(core.quarantine_ttl),
            trial: None,
            probing: None,
            step: Step::Idle,
            incident: None,
            restarts: 0,
            last_cause: None,
            poison_epoch: 0,
            published: None,
            published_life: None,
            // xorshift needs a state other than zero.
            rng: seed | 1,
            actions: VecDeque::new(),
        })
    }

    /// The next thing to do, in order; `None` when there is nothing left.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// What the world sees.
    #[must_use]
    pub fn status(&self) -> Status {
        Status {
            phase: self.phase,
            generation: self.gate.generation(),
            restarts: self.restarts,
            last_cause: self.last_cause,
            poison_epoch: self.poison_epoch,
        }
    }

    /// The one-word form of [`status`](Self::status).
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        self.status().snapshot()
    }

    /// What the supervisor is doing.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The current (latest started) generation.
    #[must_use]
    pub fn generation(&self) -> Generation {
        self.gate.generation()
    }

    /// The last sign of life of the current generation.
    #[must_use]
    pub fn life(&self) -> Option<Duration> {
        self.liveness.life()
    }

    /// Whether the current generation shows life at `now` (a sign of life less than the
    /// progress timeout old).
    #[must_use]
    pub fn shows_life(&self, now: Duration) -> bool {
        self.liveness.shows_life(now)
    }

    /// The poison table (suspects and quarantined fingerprints).
    #[must_use]
    pub fn poison(&self) -> &PoisonTracker {
        &self.poison
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &SupervisionConfig {
        &self.config
    }

    // -----------------------------------------------------------------------------------------
    // Events.

    /// Begin supervising at `now`: asks for the first start ([`Action::Spawn`]). Only the first
    /// call does anything, and none after a shutdown (a start that was delayed, then cancelled).
    pub fn start(&mut self, _now: Duration) {
        if self.gate.generation() == Generation::NONE
            && self.step == Step::Idle
            && !self.phase.is_terminal()
        {
            let generation = Generation::NONE.next();
            self.step = Step::Spawning(generation);
            self.actions.push_back(Action::Spawn { generation });
        }
        self.flush();
    }

    /// The first start succeeded: the server is up (not necessarily ready).
    pub fn handle_spawned(&mut self, now: Duration) {
        if let Step::Spawning(_) = self.step {
            self.step = Step::Idle;
            self.started(now, false);
        }
        self.flush();
    }

    /// The first start failed: there is nothing to restart; the supervisor gives up.
    pub fn handle_spawn_failed(&mut self, _now: Duration) {
        if let Step::Spawning(_) = self.step {
            self.step = Step::Idle;
            self.fail(FailReason::FirstStartFailed);
        }
        self.flush();
    }

    /// A health probe of `generation` got `answer` at `now`; `in_flight` are the requests open
    /// now (suspects if this makes an incident), `traffic` what the proxy saw of the server's
    /// answers (for the silence rule, see [`HealthTracker`]). Ask
    /// [`next_probe_in`](Self::next_probe_in) when to probe again.
    pub fn handle_probe(
        &mut self,
        now: Duration,
        generation: Generation,
        answer: ProbeAnswer,
        in_flight: &[Fingerprint],
        traffic: Traffic,
    ) {
        if self.probing == Some(generation) && self.gate.is_current(generation) {
            // A ready server that answers promptly but not 2xx, while it shows life, is busy,
            // not hung: no strike (and no clearing either).
            let busy = !answer.is_success()
                && matches!(answer, ProbeAnswer::Status(_))
                && self.phase == Phase::Ready
                && self.liveness.shows_life(now);
            let event = if busy {
                self.health.on_uncounted_answer(now);
                HealthEvent::Nothing
            } else {
                match self.health.on_probe_answer(now, answer, traffic) {
                    HealthEvent::Nothing => self.health.poll(now),
                    event => event,
                }
            };
            match event {
                HealthEvent::Nothing => {}
                HealthEvent::BecameReady { startup } => self.on_ready(now, generation, startup),
                HealthEvent::Unresponsive { .. } => {
                    self.probing = None;
                    self.hang(
                        now,
                        Hang::new(generation, HangCause::HealthProbes),
                        in_flight,
                    );
                }
                HealthEvent::StartupTimedOut { after } => {
                    self.probing = None;
                    self.actions
                        .push_back(Action::StartupTimedOut { generation, after });
                    self.hang(
                        now,
                        Hang::new(generation, HangCause::StartupTimeout),
                        in_flight,
                    );
                }
            }
        }
        self.flush();
    }

    /// When to probe `generation` next; `None`: stop probing it (it is being replaced, or a new
    /// [`Action::Watch`] will come).
    #[must_use]
    pub fn next_probe_in(&self, generation: Generation) -> Option<Duration> {
        self.next_probe(generation).map(|next| next.after)
    }

    /// When to probe `generation` next and how long to give that probe (see
    /// [`HealthTracker::next_probe`]); `None` as for [`next_probe_in`](Self::next_probe_in).
    #[must_use]
    pub fn next_probe(&self, generation: Generation) -> Option<NextProbe> {
        (self.probing == Some(generation) && self.gate.is_current(generation))
            .then(|| self.health.next_probe())
    }

    /// A detector saw `hang` at `now`; `in_flight` are the requests open now. A report whose
    /// cause is an operator's is taken as [`handle_operator_restart`](Self::handle_operator_restart).
    pub fn handle_hang(&mut self, now: Duration, hang: Hang, in_flight: &[Fingerprint]) {
        match hang.cause {
            HangCause::Manual => self.operator(now, OperatorRestart::Manual, hang.generation),
            HangCause::Signal => self.operator(now, OperatorRestart::Signal, hang.generation),
            _ => self.hang(now, hang, in_flight),
        }
        self.flush();
    }

    /// The server of `generation` exited on its own.
    pub fn handle_exit(
        &mut self,
        now: Duration,
        generation: Generation,
        in_flight: &[Fingerprint],
    ) {
        self.hang(now, Hang::new(generation, HangCause::Exited), in_flight);
        self.flush();
    }

    /// An operator asked for a restart; answers the generation being replaced. Not an incident:
    /// see the module docs.
    pub fn handle_operator_restart(&mut self, now: Duration, by: OperatorRestart) -> Generation {
        let generation = self.gate.generation();
        self.operator(now, by, generation);
        self.flush();
        generation
    }

    /// Restart strategy `strategy` replaced the server; `ready_confirmed` when it saw the new one
    /// answer its health check itself.
    pub fn handle_restart_done(&mut self, now: Duration, strategy: usize, ready_confirmed: bool) {
        if let Step::Asking {
            strategy: asked, ..
        } = self.step
        {
            if asked == strategy && !self.phase.is_terminal() {
                self.step = Step::Idle;
                self.started(now, ready_confirmed);
            }
        }
        self.flush();
    }

    /// Restart strategy `strategy` failed: the next one is asked.
    pub fn handle_restart_failed(&mut self, now: Duration, strategy: usize) {
        if let Step::Asking {
            strategy: asked,
            hung,
            cause,
            ..
        } = self.step
        {
            if asked == strategy {
                self.step = Step::Idle;
                self.run_strategy(now, hung, cause, strategy.saturating_add(1));
            }
        }
        self.flush();
    }

    /// A time asked for with [`Action::WakeAt`] came.
    pub fn handle_timeout(&mut self, now: Duration) {
        if let Step::BackingOff { until, hung, cause } = self.step {
            if now >= until {
                self.step = Step::Idle;
                self.run_strategy(now, hung, cause, 0);
            } else {
                self.actions.push_back(Action::WakeAt(until));
            }
        }
        self.flush();
    }

    /// What the liveness detectors should do at `now`, with `in_flight` requests open, the last
    /// of which started or ended at `last_activity`. Only a ready server is looked at.
    /// `answered` counts the requests that got an answer so far (growth is a sign of life).
    pub fn liveness_step(
        &mut self,
        now: Duration,
        in_flight: usize,
        last_activity: Duration,
        answered: u64,
    ) -> LivenessStep {
        if self.phase != Phase::Ready {
            return LivenessStep::Nothing;
        }
        self.liveness.on_answers(now, answered);
        let step = self.liveness.step(now, in_flight, last_activity);
        self.flush();
        step
    }

    /// A reading of `generation`'s progress counter at `now`, with `in_flight` open.
    pub fn handle_progress(
        &mut self,
        now: Duration,
        generation: Generation,
        reading: ProgressReading,
        in_flight: &[Fingerprint],
    ) {
        if self.phase == Phase::Ready
            && self.gate.is_current(generation)
            && self
                .liveness
                .on_progress(now, reading, in_flight.len())
                .is_some()
        {
            self.hang(
                now,
                Hang::new(generation, HangCause::ProgressStalled),
                in_flight,
            );
        }
        self.flush();
    }

    /// The idle canary sent to `generation` ended at `now`; `answered` is false when it got no
    /// answer within the canary timeout.
    pub fn handle_canary(
        &mut self,
        now: Duration,
        generation: Generation,
        answered: bool,
        in_flight: &[Fingerprint],
    ) {
        if self.gate.is_current(generation) && self.liveness.on_canary(now, answered) {
            self.hang(
                now,
                Hang::new(generation, HangCause::CanaryTimeout),
                in_flight,
            );
        }
        self.flush();
    }

    /// A request with this fingerprint was answered in full: it is not poison.
    pub fn handle_request_succeeded(&mut self, _now: Duration, fingerprint: Fingerprint) {
        if self.trial == Some(fingerprint) {
            self.trial = None;
        }
        if self.poison.on_success(fingerprint) {
            self.poison_changed();
        }
        self.flush();
    }

    /// A request of `fingerprint`, which is on trial, was sent as the one trial request: a hang
    /// while it is in flight convicts it.
    pub fn handle_trial_started(&mut self, _now: Duration, fingerprint: Fingerprint) {
        if self.poison.is_on_trial(fingerprint) {
            self.trial = Some(fingerprint);
        }
        self.flush();
    }

    /// The trial request of `fingerprint` ended without a verdict (its client left, the server
    /// refused it): the next request of a fingerprint on trial takes its place.
    pub fn handle_trial_ended(&mut self, _now: Duration, fingerprint: Fingerprint) {
        if self.trial == Some(fingerprint) {
            self.trial = None;
        }
        self.flush();
    }

    /// An operator cleared the quarantine: every conviction and suspicion is forgotten. Answers
    /// how many fingerprints were quarantined.
    pub fn handle_quarantine_cleared(&mut self, now: Duration) -> usize {
        let released = self.poison.release_all(now);
        self.trial = None;
        self.poison_changed();
        self.actions
            .push_back(Action::QuarantineCleared { released });
        self.flush();
        released
    }

    /// Supervision is ending: the server is being stopped; nothing is restarted any more.
    pub fn handle_shutdown(&mut self, _now: Duration) {
        self.phase = Phase::Stopping;
        self.step = Step::Idle;
        self.probing = None;
        self.flush();
    }

    /// The server was stopped for good.
    pub fn handle_stopped(&mut self, _now: Duration) {
        self.phase = Phase::Stopped;
        self.flush();
    }

    // -----------------------------------------------------------------------------------------
    // Rules.

    /// A new generation was started at `now`.
    fn started(&mut self, now: Duration, ready_confirmed: bool) {
        let generation = self.gate.started();
        self.health.restarted(now);
        self.liveness.reset(now);
        self.probing = Some(generation);
        self.phase = Phase::Starting;
        self.actions.push_back(Action::Watch { generation });
        if ready_confirmed {
            if let HealthEvent::BecameReady { startup } =
                self.health.on_probe(now, ProbeOutcome::Ok)
            {
                self.on_ready(now, generation, startup);
            }
        }
    }

    fn on_ready(&mut self, now: Duration, generation: Generation, startup: Duration) {
        if !self.gate.is_current(generation)
            || self.phase == Phase::Ready
            || self.phase.is_terminal()
            || self.step != Step::Idle
        {
            return;
        }
        self.gate.ready();
        self.policy.on_ready(now, startup);
        self.liveness.reset(now);
        let recovery = self.incident.take().map(|incident| Recovery {
            cause: incident.cause,
            took: now.saturating_sub(incident.detected_at),
        });
        self.phase = Phase::Ready;
        self.actions.push_back(Action::Ready {
            generation,
            startup,
            recovery,
        });
    }

    fn hang(&mut self, now: Duration, hang: Hang, in_flight: &[Fingerprint]) {
        if self.phase.is_terminal() {
            return;
        }
        let Hang { generation, cause } = hang;
        // A start that dies or never becomes ready is a failed restart, not a new hang: the gate
        // already has a restart under way for this generation.
        if self.phase == Phase::Starting
            && self.step == Step::Idle
            && self.gate.is_current(generation)
            && matches!(cause, HangCause::Exited | HangCause::StartupTimeout)
            && self.gate.is_restarting()
        {
            self.actions.push_back(Action::Detected {
                hang,
                triage: Triage::FailedStart,
            });
            self.probing = None;
            let incident = self.incident.get_or_insert(Incident {
                cause,
                detected_at: now,
            });
            incident.cause = cause;
            self.schedule_restart(now, generation, cause);
            return;
        }
        match self.gate.report(hang) {
            GateDecision::StartRestart { generation } => {
                self.update_poison(now, in_flight);
                self.last_cause = Some(cause);
                if !self.config.enable_restart {
                    self.actions.push_back(Action::Detected {
                        hang,
                        triage: Triage::ReportOnly,
                    });
                    // Nothing will be restarted: close the gate again so the next hang is
                    // reported too, and watch the same generation so that a recovery is seen.
                    self.gate.abandon();
                    self.health.restarted(now);
                    self.probing = Some(generation);
                    self.actions.push_back(Action::Watch { generation });
                    return;
                }
                self.actions.push_back(Action::Detected {
                    hang,
                    triage: Triage::Incident,
                });
                self.probing = None;
                self.incident = Some(Incident {
                    cause,
                    detected_at: now,
                });
                self.schedule_restart(now, generation, cause);
            }
            GateDecision::AlreadyRestarting { .. } => {
                self.actions.push_back(Action::Detected {
                    hang,
                    triage: Triage::Joined,
                });
            }
            GateDecision::Stale { .. } => {
                self.actions.push_back(Action::Detected {
                    hang,
                    triage: Triage::Stale,
                });
            }
        }
    }

    fn operator(&mut self, now: Duration, by: OperatorRestart, generation: Generation) {
        if self.phase.is_terminal() || generation == Generation::NONE {
            return;
        }
        let cause = by.cause();
        let hang = Hang::new(generation, cause);
        match self.gate.report(hang) {
            GateDecision::StartRestart { generation } => {
                self.last_cause = Some(cause);
                if !self.config.enable_restart {
                    self.actions.push_back(Action::Detected {
                        hang,
                        triage: Triage::ReportOnly,
                    });
                    self.gate.abandon();
                    return;
                }
                self.actions.push_back(Action::Detected {
                    hang,
                    triage: Triage::Operator,
                });
                self.probing = None;
                self.incident = Some(Incident {
                    cause,
                    detected_at: now,
                });
                // No policy: no backoff, no count toward the intensity limit.
                self.restarts = self.restarts.saturating_add(1);
                self.actions.push_back(Action::RestartScheduled {
                    cause,
                    delay: Duration::ZERO,
                });
                self.run_strategy(now, generation, cause, 0);
            }
            GateDecision::AlreadyRestarting { .. } => {
                self.actions.push_back(Action::Detected {
                    hang,
                    triage: Triage::Joined,
                });
            }
            GateDecision::Stale { .. } => {
                self.actions.push_back(Action::Detected {
                    hang,
                    triage: Triage::Stale,
                });
            }
        }
    }

    fn update_poison(&mut self, now: Duration, in_flight: &[Fingerprint]) {
        if self.config.shared_quarantine {
            // The shared table judges; it knows which trial request, if any, ran here.
            self.actions.push_back(Action::Suspects(in_flight.to_vec()));
            return;
        }
        // The trial request is caught by this hang: its verdict is now.
        let on_trial = self.trial.take();
        if in_flight.is_empty() && on_trial.is_none() {
            return;
        }
        for fingerprint in self.poison.on_hang(now, in_flight, on_trial) {
            self.actions.push_back(Action::Quarantined(fingerprint));
        }
        self.poison_changed();
    }

    fn poison_changed(&mut self) {
        self.poison_epoch = Snapshot::next_epoch(self.poison_epoch);
    }

    fn jitter(&mut self) -> u32 {
        // xorshift64: jitter needs spread, not secrecy.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 32) as u32
    }

    fn schedule_restart(&mut self, now: Duration, hung: Generation, cause: HangCause) {
        let jitter = self.jitter();
        match self.policy.on_restart_needed(now, jitter) {
            PolicyDecision::GiveUp(reason) => self.fail(FailReason::Exhausted(reason)),
            PolicyDecision::RestartAfter(delay) => {
                self.restarts = self.restarts.saturating_add(1);
                self.actions
                    .push_back(Action::RestartScheduled { cause, delay });
                if delay.is_zero() && self.config.strategies > 0 {
                    self.run_strategy(now, hung, cause, 0);
                } else {
                    // Also with no strategy at all: the next round goes through the driver's
                    // timer, so rounds of failures never recurse.
                    let until = now.saturating_add(delay);
                    self.phase = if delay.is_zero() {
                        Phase::Restarting
                    } else {
                        Phase::BackingOff
                    };
                    self.step = Step::BackingOff { until, hung, cause };
                    self.actions.push_back(Action::WakeAt(until));
                }
            }
        }
    }

    fn run_strategy(&mut self, now: Duration, hung: Generation, cause: HangCause, strategy: usize) {
        if self.phase.is_terminal() {
            return;
        }
        if strategy >= self.config.strategies {
            self.actions.push_back(Action::StrategiesExhausted);
            self.schedule_restart(now, hung, cause);
            return;
        }
        self.phase = Phase::Restarting;
        let next = self.gate.generation().next();
        self.step = Step::Asking {
            strategy,
            hung,
            next,
            cause,
        };
        let stop = StopMode::for_cause(cause, self.config.core.graceful_hang_stop);
        self.actions.push_back(Action::Restart {
            hung,
            next,
            cause,
            stop,
            strategy,
        });
    }

    fn fail(&mut self, reason: FailReason) {
        self.gate.abandon();
        self.incident = None;
        self.step = Step::Idle;
        self.probing = None;
        self.phase = Phase::Failed;
        self.actions.push_back(Action::Failed(reason));
    }

    /// Publishes the status and the life of the current generation when they changed.
    fn flush(&mut self) {
        let status = self.status();
        if self.published != Some(status) {
            self.published = Some(status);
            self.actions.push_back(Action::Publish(status));
        }
        let life = (self.gate.generation(), self.liveness.life());
        if self.published_life != Some(life) {
            self.published_life = Some(life);
            self.actions.push_back(Action::Life {
                generation: life.0,
                at: life.1,
            });
        }
    }
}

#[cfg(test)]
mod tests;
