//! Property tests for the invariants the rest of respawn relies on.
//!
//! Each test names the invariant it guards; the inputs are random interleavings, times and
//! configurations, including extreme durations that would overflow naive arithmetic.

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use respawn_core::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Any duration at all, biased towards the extremes that break naive arithmetic.
fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..100_000).prop_map(ms),
        (0u64..=u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        Just(Duration::MAX),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. At most one restart per generation, whatever the interleaving of reports.

#[derive(Clone, Debug)]
enum GateOp {
    /// Report a hang against `current + offset - 2` (older, current, or a future generation).
    Report(u8),
    Started,
    Ready,
    Abandon,
}

fn gate_ops(with_abandon: bool) -> impl Strategy<Value = Vec<GateOp>> {
    let abandon_weight = u32::from(with_abandon);
    prop::collection::vec(
        prop_oneof![
            8 => (0u8..5).prop_map(GateOp::Report),
            2 => Just(GateOp::Started),
            2 => Just(GateOp::Ready),
            abandon_weight => Just(GateOp::Abandon),
        ],
        0..200,
    )
}

fn run_gate(ops: &[GateOp]) -> Result<(), TestCaseError> {
    let mut gate = RestartGate::new();
    // (abandon epoch, generation) pairs that were told to restart.
    let mut restarted: BTreeSet<(u32, Generation)> = BTreeSet::new();
    let mut epoch = 0u32;
    for op in ops {
        match *op {
            GateOp::Report(offset) => {
                let current = gate.generation();
                let reported = Generation((current.get() + u64::from(offset)).saturating_sub(2));
                let was_restarting = gate.is_restarting();
                let decision = gate.report(Hang::new(reported, HangCause::FirstByteTimeout));
                match decision {
                    GateDecision::StartRestart { generation } => {
                        prop_assert_eq!(generation, current);
                        prop_assert_eq!(reported, current);
                        prop_assert!(!was_restarting);
                        prop_assert!(
                            restarted.insert((epoch, generation)),
                            "second StartRestart for {}",
                            generation
                        );
                    }
                    GateDecision::AlreadyRestarting { generation } => {
                        prop_assert_eq!(generation, current);
                        prop_assert!(was_restarting);
                    }
                    GateDecision::Stale {
                        reported: r,
                        current: c,
                    } => {
                        prop_assert_eq!(r, reported);
                        prop_assert_eq!(c, current);
                        prop_assert_ne!(reported, current);
                    }
                }
            }
            GateOp::Started => {
                let before = gate.generation();
                prop_assert_eq!(gate.started(), before.next());
            }
            GateOp::Ready => gate.ready(),
            GateOp::Abandon => {
                gate.abandon();
                epoch += 1;
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn gate_starts_at_most_one_restart_per_generation(ops in gate_ops(false)) {
        run_gate(&ops)?;
    }

    #[test]
    fn gate_starts_at_most_one_restart_per_generation_between_abandons(ops in gate_ops(true)) {
        run_gate(&ops)?;
    }

    #[test]
    fn gate_turns_a_thousand_concurrent_reports_into_one_restart(
        generation in 1u64..50,
        causes in prop::collection::vec(0usize..8, 1..1000),
    ) {
        let mut gate = RestartGate::new();
        for _ in 0..generation {
            gate.started();
        }
        gate.ready();
        let starts = causes
            .iter()
            .map(|&i| gate.report(Hang::new(Generation(generation), HangCause::ALL[i])))
            .filter(|d| matches!(d, GateDecision::StartRestart { .. }))
            .count();
        prop_assert_eq!(starts, 1);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Restarts never exceed the intensity limit.

proptest! {
    #[test]
    fn policy_never_exceeds_the_intensity_limit(
        max_restarts in 1u32..8,
        window_ms in 1u64..100_000,
        gaps in prop::collection::vec((0u64..30_000, any::<bool>(), any::<u32>()), 1..120),
    ) {
        let config = RestartPolicyConfig {
            intensity: IntensityConfig { max_restarts, window: ms(window_ms) },
            ..RestartPolicyConfig::default()
        };
        let mut policy = RestartPolicy::try_new(config).unwrap();
        let mut now = Duration::ZERO;
        let mut accepted: Vec<Duration> = Vec::new();
        for (gap, ready_between, jitter) in gaps {
            now += ms(gap);
            if ready_between {
                policy.on_ready(now, ms(gap / 2));
            }
            match policy.on_restart_needed(now, jitter) {
                PolicyDecision::RestartAfter(_) => accepted.push(now),
                PolicyDecision::GiveUp(reason) => {
                    prop_assert_eq!(
                        reason,
                        GiveUpReason::IntensityExceeded { restarts: max_restarts, window: ms(window_ms) }
                    );
                    prop_assert_eq!(policy.restarts_in_window(now), max_restarts);
                }
            }
            prop_assert!(policy.restarts_in_window(now) <= max_restarts);
        }
        // Any window [t, t + W) holds at most max_restarts accepted restarts.
        for &start in &accepted {
            let inside = accepted
                .iter()
                .filter(|&&t| t >= start && t - start < ms(window_ms))
                .count();
            prop_assert!(inside <= max_restarts as usize, "{} restarts in one window", inside);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Backoff is monotone across consecutive failures (no jitter) and never exceeds the cap.

fn backoff_config() -> impl Strategy<Value = BackoffConfig> {
    (1u64..20_000, 1u32..10, 0u64..200_000, any::<bool>()).prop_map(
        |(base, factor, extra, scale_with_startup)| BackoffConfig {
            base: ms(base),
            factor,
            cap: ms(base + extra),
            jitter_percent: 0,
            scale_with_startup,
        },
    )
}

proptest! {
    #[test]
    fn backoff_is_monotone_within_a_streak_without_jitter(
        backoff in backoff_config(),
        steps in prop::collection::vec((0u64..600_000, prop::option::of(0u64..300_000)), 1..60),
    ) {
        let config = RestartPolicyConfig {
            backoff,
            intensity: IntensityConfig { max_restarts: u32::MAX, window: ms(1) },
            // Never stable: every restart belongs to the same streak.
            stable_after: Duration::from_secs(3600),
        };
        let mut policy = RestartPolicy::try_new(config).unwrap();
        let mut now = Duration::ZERO;
        let mut previous = Duration::ZERO;
        for (i, (gap, startup)) in steps.into_iter().enumerate() {
            now += ms(gap);
            if let Some(startup) = startup {
                policy.on_ready(now, ms(startup));
                now += ms(1);
            }
            let PolicyDecision::RestartAfter(delay) = policy.on_restart_needed(now, 0) else {
                return Err(TestCaseError::fail("gave up with an unlimited intensity"));
            };
            if i == 0 {
                prop_assert_eq!(delay, Duration::ZERO, "the first restart is immediate");
            }
            prop_assert!(delay >= previous, "{:?} after {:?}", delay, previous);
            prop_assert!(delay <= backoff.cap);
            previous = delay;
        }
    }

    #[test]
    fn backoff_never_exceeds_the_cap_and_never_overflows(
        base in any_duration(),
        extra in any_duration(),
        factor in 1u32..=u32::MAX,
        jitter_percent in 0u8..=100,
        scale_with_startup in any::<bool>(),
        stable_after in any_duration(),
        events in prop::collection::vec((any_duration(), any_duration(), any::<u32>(), any::<bool>()), 1..40),
    ) {
        let base = base.max(Duration::from_nanos(1));
        let config = RestartPolicyConfig {
            backoff: BackoffConfig {
                base,
                factor,
                cap: base.saturating_add(extra),
                jitter_percent,
                scale_with_startup,
            },
            intensity: IntensityConfig { max_restarts: u32::MAX, window: Duration::MAX },
            stable_after: stable_after.max(Duration::from_nanos(1)),
        };
        let cap = config.backoff.cap;
        let mut policy = RestartPolicy::try_new(config).unwrap();
        for (now, startup, jitter, ready) in events {
            if ready {
                policy.on_ready(now, startup);
            }
            if let PolicyDecision::RestartAfter(delay) = policy.on_restart_needed(now, jitter) {
                prop_assert!(delay <= cap, "{:?} above the cap {:?}", delay, cap);
            }
            let _ = policy.restarts_in_window(now);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4 & 5. Every request ends after a bounded number of attempts; nothing is replayed after its
// first byte reached the client.

/// Every outcome but success.
fn failed_outcome() -> impl Strategy<Value = AttemptOutcome> {
    prop_oneof![
        Just(AttemptOutcome::ConnectionRefused),
        Just(AttemptOutcome::ConnectionReset),
        Just(AttemptOutcome::FirstByteTimeout),
        Just(AttemptOutcome::Stall),
        (500u16..600).prop_map(|status| AttemptOutcome::ServerError { status }),
        (400u16..500).prop_map(|status| AttemptOutcome::ClientError { status }),
        Just(AttemptOutcome::Cancelled),
        Just(AttemptOutcome::DeadlineExceeded),
        Just(AttemptOutcome::TookTooLong),
    ]
}

fn attempt_outcome() -> impl Strategy<Value = AttemptOutcome> {
    prop_oneof![1 => Just(AttemptOutcome::Success), 7 => failed_outcome()]
}

fn retry_config() -> impl Strategy<Value = RetryConfig> {
    (0u32..10, 0u64..5_000, 0u64..60_000).prop_map(|(max_retries, base, extra)| RetryConfig {
        max_retries,
        base_delay: ms(base),
        max_delay: ms(base + extra),
    })
}

proptest! {
    #[test]
    fn every_request_ends_within_max_retries_plus_one_attempts(
        config in retry_config(),
        attempts in prop::collection::vec((attempt_outcome(), any::<bool>(), 0u64..100), 64),
    ) {
        let mut plan = RetryPlan::new(config);
        let mut ended_after = None;
        for (n, (outcome, bytes_sent, generation)) in attempts.into_iter().enumerate() {
            match plan.decide(outcome, Generation(generation), bytes_sent) {
                RetryDecision::Done | RetryDecision::GiveUp(_) => {
                    ended_after = Some(n + 1);
                    break;
                }
                RetryDecision::RetryAfter(delay) => {
                    prop_assert!(delay <= config.max_delay);
                }
                RetryDecision::WaitForGeneration(g) => {
                    prop_assert_eq!(g, Generation(generation + 1));
                }
                RetryDecision::RetryNow => {}
            }
        }
        let ended_after = ended_after.ok_or_else(|| TestCaseError::fail("never ended"))?;
        prop_assert!(ended_after <= config.max_retries as usize + 1);
        prop_assert_eq!(plan.attempts() as usize, ended_after);
    }

    #[test]
    fn nothing_is_replayed_after_bytes_reached_the_client(
        config in retry_config(),
        earlier in prop::collection::vec(attempt_outcome(), 0..8),
        outcome in failed_outcome(),
    ) {
        let mut plan = RetryPlan::new(config);
        for before in earlier {
            match plan.decide(before, Generation(1), false) {
                RetryDecision::Done | RetryDecision::GiveUp(_) => return Ok(()),
                _ => {}
            }
        }
        let decision = plan.decide(outcome, Generation(1), true);
        prop_assert!(matches!(decision, RetryDecision::GiveUp(_)), "{:?}", decision);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Quarantine by evidence, against a simulation: innocents and at most one culprit (a
// fingerprint whose request hangs the server whenever it runs) send requests as the tracker
// admits them, one trial at a time; hangs from outside carry no suspects. An innocent is never
// quarantined; the culprit is, after at most `threshold + 1` hangs it was present at, and again
// at its first hang after the TTL; memory stays bounded. (The guarantees hold while the tables
// have room for every suspect, as the default 4096 has here; a smaller table forgets the oldest.)

#[derive(Clone, Debug)]
struct Round {
    /// Which fingerprints (0..6) send a request this round; 0 is the culprit when there is one.
    senders: Vec<u64>,
    /// A fault from outside hangs the server this round.
    outside: bool,
    /// Time to the next round.
    gap_ms: u64,
}

fn round() -> impl Strategy<Value = Round> {
    (
        prop::collection::vec(0u64..6, 0..8),
        prop::bool::weighted(0.15),
        1u64..120_000,
    )
        .prop_map(|(senders, outside, gap_ms)| Round {
            senders,
            outside,
            gap_ms,
        })
}

proptest! {
    #[test]
    fn quarantine_convicts_the_culprit_and_never_an_innocent(
        threshold in 1u32..4,
        ttl_s in 1u64..600,
        culprit in any::<bool>(),
        capacity in 1usize..12,
        rounds in prop::collection::vec(round(), 0..120),
    ) {
        let ttl = Duration::from_secs(ttl_s);
        let mut tracker = PoisonTracker::with_capacity(threshold, capacity).with_ttl(ttl);
        let culprit = culprit.then_some(Fingerprint(0));
        let mut now = Duration::ZERO;
        let mut culprit_hangs = 0u32;
        let mut convicted_until: Option<Duration> = None;
        let roomy = capacity >= 6;
        for round in rounds {
            now += ms(round.gap_ms);
            // Admission: at most one trial request, taken by the first on-trial sender.
            let mut trial = None;
            let mut sent = Vec::new();
            for &fp in &round.senders {
                let fp = Fingerprint(fp);
                match tracker.admit(fp, now, trial.is_some()) {
                    Admission::Go => sent.push(fp),
                    Admission::Trial
                        if trial.is_none() && tracker.may_start_trial(sent.iter().copied()) =>
                    {
                        trial = Some(fp);
                        sent.push(fp);
                    }
                    Admission::Trial | Admission::Wait => {}
                    Admission::Refused(_) => {
                        prop_assert!(Some(fp) == culprit || !roomy, "an innocent was refused");
                    }
                }
            }
            let caused = culprit.is_some_and(|c| sent.contains(&c));
            if caused {
                culprit_hangs += 1;
                let newly = tracker.on_hang(now, &sent, trial);
                for fp in &newly {
                    prop_assert!(Some(*fp) == culprit || !roomy, "an innocent was convicted");
                }
                if !newly.is_empty() {
                    convicted_until = Some(now + ttl);
                }
                // A culprit convicted before is convicted again at its first hang after the TTL.
                if roomy && convicted_until.is_some_and(|until| now < until) {
                    prop_assert!(tracker.is_quarantined(Fingerprint(0), now));
                }
            } else if round.outside {
                // From outside: no request could have caused it.
                prop_assert!(tracker.on_hang(now, &[], None).is_empty());
            } else {
                for fp in sent {
                    tracker.on_success(fp);
                }
            }
            if culprit_hangs > threshold && roomy {
                prop_assert!(
                    convicted_until.is_some(),
                    "the culprit was present at {} hangs and is not convicted",
                    culprit_hangs
                );
            }
            for fp in 1..6 {
                prop_assert!(!roomy || !tracker.is_quarantined(Fingerprint(fp), now));
            }
            prop_assert!(tracker.suspect_count() <= capacity);
            prop_assert!(tracker.record_count() <= capacity);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Health: Unresponsive exactly after `unhealthy_after` consecutive failures when ready; the
// readiness cadence is monotone and capped.

fn probe_outcome() -> impl Strategy<Value = ProbeOutcome> {
    prop_oneof![
        Just(ProbeOutcome::Ok),
        Just(ProbeOutcome::Failed),
        Just(ProbeOutcome::TimedOut)
    ]
}

proptest! {
    #[test]
    fn health_is_unresponsive_exactly_after_n_consecutive_failures(
        unhealthy_after in 1u32..8,
        outcomes in prop::collection::vec(probe_outcome(), 0..100),
    ) {
        let config = HealthConfig { unhealthy_after, ..HealthConfig::default() };
        let mut tracker = HealthTracker::new(config, Duration::ZERO);
        let became_ready = tracker.on_probe(ms(5), ProbeOutcome::Ok);
        prop_assert_eq!(became_ready, HealthEvent::BecameReady { startup: ms(5) });
        let mut run = 0u32;
        let mut tripped = false;
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let event = tracker.on_probe(ms(10 + i as u64), outcome);
            if !tripped {
                run = if outcome == ProbeOutcome::Ok { 0 } else { run + 1 };
            }
            if !tripped && run == unhealthy_after {
                tripped = true;
                prop_assert_eq!(event, HealthEvent::Unresponsive { failures: unhealthy_after });
            } else {
                prop_assert_eq!(event, HealthEvent::Nothing);
            }
            let expected = if tripped {
                HealthState::Unresponsive
            } else if run == 0 {
                HealthState::Ready
            } else {
                HealthState::Suspect { failures: run }
            };
            prop_assert_eq!(tracker.state(), expected);
        }
    }

    #[test]
    fn readiness_cadence_is_monotone_and_capped(
        interval in any_duration(),
        ready_poll_initial in any_duration(),
        ready_poll_factor in 1u32..=u32::MAX,
        ready_poll_max in any_duration(),
        probes in 0usize..200,
    ) {
        let interval = interval.max(Duration::from_nanos(1));
        let config = HealthConfig { interval, ready_poll_initial, ready_poll_factor, ready_poll_max, ..HealthConfig::default() };
        let cap = ready_poll_max.min(interval);
        let mut tracker = HealthTracker::new(config, Duration::ZERO);
        let mut previous = tracker.next_probe_in();
        prop_assert_eq!(previous, ready_poll_initial.min(cap));
        for i in 0..probes {
            tracker.on_probe(ms(i as u64), ProbeOutcome::Failed);
            let next = tracker.next_probe_in();
            prop_assert!(next >= previous);
            prop_assert!(next <= cap);
            previous = next;
        }
    }

    #[test]
    fn startup_timeout_is_reported_once_and_only_after_the_budget(
        budget in 1u64..10_000,
        probes in prop::collection::vec((0u64..500, any::<bool>()), 0..80),
    ) {
        let config = HealthConfig { startup_timeout: ms(budget), ..HealthConfig::default() };
        let mut tracker = HealthTracker::new(config, ms(1000));
        let mut now = ms(1000);
        let mut reported = 0;
        for (gap, use_poll) in probes {
            now += ms(gap);
            let event = if use_poll {
                tracker.poll(now)
            } else {
                tracker.on_probe(now, ProbeOutcome::TimedOut)
            };
            if let HealthEvent::StartupTimedOut { after } = event {
                prop_assert!(after >= ms(budget));
                reported += 1;
            }
            prop_assert_eq!(tracker.state(), HealthState::Starting);
        }
        prop_assert!(reported <= 1);
        prop_assert_eq!(reported == 1, now - ms(1000) >= ms(budget));
    }
}

proptest! {
    /// The silence rule never finds a hang sooner than it should: when a ready server is found
    /// unresponsive with fewer strikes than `unhealthy_after`, its probe timed out, it has said
    /// nothing (no probe answer, no traffic) for the whole detection budget, and something asked
    /// it (an unanswered probe or an open request) at least that long ago.
    #[test]
    fn silence_is_never_shorter_than_the_detection_budget(
        unhealthy_after in 1u32..6,
        interval_ms in 100u64..3_000,
        timeout_ms in 100u64..3_000,
        steps in prop::collection::vec(
            (0u8..4, 1u64..4_000, prop::option::of(0u64..4_000), prop::option::of(0u64..8_000)),
            1..80,
        ),
    ) {
        let config = HealthConfig {
            unhealthy_after,
            interval: ms(interval_ms),
            timeout: ms(timeout_ms),
            ..HealthConfig::default()
        };
        let budget = config.detection_budget();
        let mut tracker = HealthTracker::new(config, Duration::ZERO);
        let mut now = ms(10);
        tracker.on_probe_answer(now, ProbeAnswer::Status(200), Traffic::default());
        let mut last_word = now;
        let mut last_heard: Option<Duration> = None;
        let mut strikes = 0u32;
        let mut unanswered: Vec<Duration> = Vec::new();
        for (code, gap, heard_ago, open_ago) in steps {
            now += ms(gap);
            // Traffic: a word heard some time before now (never before the last one reported),
            // and the oldest open request.
            if let Some(ago) = heard_ago {
                let at = now.saturating_sub(ms(ago)).max(last_heard.unwrap_or_default());
                last_heard = Some(at);
                last_word = last_word.max(at);
            }
            let oldest_open = open_ago.map(|ago| now.saturating_sub(ms(ago)));
            let traffic = Traffic { last_heard, oldest_open };
            let answer = answer(code);
            // The probe answered had the timeout the tracker gave it.
            let probe_timeout = tracker.next_probe().timeout;
            prop_assert!(probe_timeout <= ms(timeout_ms));
            let cut_short = probe_timeout < ms(timeout_ms);
            let event = tracker.on_probe_answer(now, answer, traffic);
            match answer {
                ProbeAnswer::Status(200..=299) => strikes = 0,
                // A probe cut short to end with the budget is no strike unless it ends the wait.
                ProbeAnswer::TimedOut if cut_short && event == HealthEvent::Nothing => {}
                _ => strikes += 1,
            }
            match answer {
                ProbeAnswer::Status(_) => {
                    last_word = now;
                    unanswered.clear();
                }
                ProbeAnswer::TimedOut => unanswered.push(now.saturating_sub(probe_timeout)),
                ProbeAnswer::NoConnection => {}
            }
            if let HealthEvent::Unresponsive { failures } = event {
                prop_assert_eq!(failures, strikes);
                if strikes < unhealthy_after {
                    prop_assert_eq!(answer, ProbeAnswer::TimedOut);
                    prop_assert!(now - last_word >= budget, "silent {:?} < {:?}", now - last_word, budget);
                    // An open request asks from the moment it was sent, or from the last word if
                    // it was sent before (it was still unanswered then).
                    let asked = unanswered.iter().copied().filter(|&at| at >= last_word).chain(oldest_open).min();
                    let asked = asked.map_or(now, |at| at.max(last_word));
                    prop_assert!(now - asked >= budget, "asked {:?} ago", now - asked);
                }
                break;
            }
            prop_assert!(strikes < unhealthy_after, "{} strikes and no hang", strikes);
        }
    }

    /// And it finds a freeze in time: a server that answered every probe and request until a
    /// freeze, with a request sent at the freeze and probes sent when the tracker asks, is found
    /// unresponsive one detection budget after the freeze (plus the scheduling of one probe),
    /// whatever the phase of the freeze against the probes.
    #[test]
    fn a_frozen_server_under_traffic_is_found_one_budget_after_the_freeze(
        unhealthy_after in 1u32..6,
        interval_ms in 100u64..3_000,
        timeout_ms in 100u64..3_000,
        phase_ms in 0u64..3_000,
    ) {
        let config = HealthConfig {
            unhealthy_after,
            interval: ms(interval_ms),
            timeout: ms(timeout_ms),
            ..HealthConfig::default()
        };
        let budget = config.detection_budget();
        let mut tracker = HealthTracker::new(config, Duration::ZERO);
        // Ready at 0, answered probes every interval until the freeze.
        tracker.on_probe_answer(Duration::ZERO, ProbeAnswer::Status(200), Traffic::default());
        let freeze = ms(10_000 + phase_ms);
        let mut sent = Duration::ZERO;
        loop {
            let next = sent + tracker.next_probe_in();
            if next > freeze {
                sent = next;
                break;
            }
            sent = next;
            tracker.on_probe_answer(sent, ProbeAnswer::Status(200), Traffic { last_heard: Some(sent), oldest_open: None });
        }
        // Frozen: every probe from `sent` on times out; the last word was at the freeze, and a
        // request sent then is still open.
        let traffic = Traffic { last_heard: Some(freeze), oldest_open: Some(freeze) };
        let mut probe = tracker.next_probe();
        let found = loop {
            let done = sent + probe.timeout;
            if let HealthEvent::Unresponsive { .. } = tracker.on_probe_answer(done, ProbeAnswer::TimedOut, traffic) {
                break done;
            }
            // The next probe starts when the tracker says, counted from this one's start, and
            // never before this one ended (one probe at a time).
            probe = tracker.next_probe();
            sent = (sent + probe.after).max(done);
            prop_assert!(done < freeze + budget * 4, "not found by {:?}", done);
        };
        prop_assert!(found >= freeze + budget, "found {:?} after the freeze", found - freeze);
        // On time: one budget after the freeze, unless the first probe after the freeze (up to an
        // interval after it) could only end later than that (a budget shorter than an interval
        // and a timeout: one strike makes a hang).
        let latest = budget.max(ms(interval_ms) + ms(timeout_ms));
        prop_assert!(found <= freeze + latest, "found {:?} after the freeze", found - freeze);
        if unhealthy_after >= 2 {
            prop_assert_eq!(found, freeze + budget);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Stream watch: check(now) is None strictly before deadline() and Some at or after it.

proptest! {
    #[test]
    fn stream_check_agrees_with_deadline(
        first_byte in any_duration(),
        between_chunks in any_duration(),
        total in prop::option::of(any_duration()),
        sent_at in any_duration(),
        chunks in prop::collection::vec(any_duration(), 0..10),
        probes in prop::collection::vec(any_duration(), 1..10),
    ) {
        let deadlines = StreamDeadlines { first_byte, between_chunks, total, ..StreamDeadlines::default() };
        let mut watch = StreamWatch::new(deadlines, sent_at);
        let mut states = vec![watch];
        for at in chunks {
            watch.on_chunk(at);
            prop_assert!(watch.first_byte_seen());
            states.push(watch);
        }
        for w in states {
            let deadline = w.deadline();
            for &now in &probes {
                prop_assert_eq!(w.check(now).is_some(), now >= deadline);
            }
            prop_assert!(w.check(deadline).is_some());
            if let Some(before) = deadline.checked_sub(Duration::from_nanos(1)) {
                prop_assert_eq!(w.check(before), None);
            }
            if let Some(total) = total {
                prop_assert!(deadline <= sent_at.saturating_add(total));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The busy detector never cries wolf while the counter grows, and always fires when flat.

proptest! {
    #[test]
    fn progress_stalls_only_when_flat_and_busy_for_the_timeout(
        timeout_ms in 1u64..30_000,
        samples in prop::collection::vec((1u64..5_000, any::<bool>(), 0usize..3), 1..100),
    ) {
        let config = ProgressConfig { progress_timeout: ms(timeout_ms), ..ProgressConfig::default() };
        let mut watch = ProgressWatch::new(config, Duration::ZERO);
        let mut now = Duration::ZERO;
        let mut counter = 0u64;
        let mut flat_since: Option<Duration> = None;
        let mut last: Option<u64> = None;
        for (gap, grow, in_flight) in samples {
            now += ms(gap);
            if grow {
                counter += 1;
            }
            let verdict = watch.on_sample(now, counter, in_flight);
            // Model: the busy clock restarts on any change and stops when idle.
            if in_flight == 0 {
                flat_since = None;
            } else if last != Some(counter) || flat_since.is_none() {
                flat_since = Some(now);
            }
            last = Some(counter);
            let expected = match flat_since {
                Some(since) if now - since >= ms(timeout_ms) => {
                    ProgressVerdict::Stalled { for_: now - since }
                }
                _ => ProgressVerdict::Fine,
            };
            prop_assert_eq!(verdict, expected);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 9. The supervision machine against a simple model, under random interleavings of everything a
// supervisor can see: one incident per generation, restarts single-flight and never beyond the
// intensity limit, nothing after the end, `Ready` only for the current generation.

#[derive(Clone, Debug)]
enum Event {
    /// A detector reports a hang against `current + offset - 1`.
    Hang(u8, usize),
    Exit(u8),
    Probe(u8, u8),
    /// The outstanding restart strategy answers (or a stale one, when none is outstanding).
    RestartDone(bool),
    RestartFailed,
    /// Time passes; a due backoff fires.
    Advance(u64),
    Operator(bool),
    Progress(u8, bool),
    Canary(bool),
    Succeeded(u8),
    Shutdown,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (0u8..3, 0usize..8).prop_map(|(o, c)| Event::Hang(o, c)),
        2 => (0u8..3).prop_map(Event::Exit),
        6 => (0u8..3, 0u8..4).prop_map(|(o, a)| Event::Probe(o, a)),
        4 => any::<bool>().prop_map(Event::RestartDone),
        2 => Just(Event::RestartFailed),
        4 => (0u64..40_000).prop_map(Event::Advance),
        1 => any::<bool>().prop_map(Event::Operator),
        2 => (0u8..3, any::<bool>()).prop_map(|(c, busy)| Event::Progress(c, busy)),
        1 => any::<bool>().prop_map(Event::Canary),
        1 => (0u8..4).prop_map(Event::Succeeded),
        1 => Just(Event::Shutdown),
    ]
}

/// What the test's driver remembers between events (the I/O side, not decisions).
#[derive(Default)]
struct Driver {
    /// The strategy asked and not answered yet, with the generation it will start.
    asked: Option<(usize, Generation)>,
    wake: Option<Duration>,
    spawning: bool,
    /// Times of the restarts begun, for the intensity check.
    begun: Vec<Duration>,
    incidents: Vec<Generation>,
    operator: usize,
    exhausted: bool,
    failed: bool,
}

fn answer(code: u8) -> ProbeAnswer {
    match code {
        0 => ProbeAnswer::Status(200),
        1 => ProbeAnswer::Status(503),
        2 => ProbeAnswer::NoConnection,
        _ => ProbeAnswer::TimedOut,
    }
}

fn check_actions(
    m: &mut Supervision,
    d: &mut Driver,
    now: Duration,
    strategies: usize,
) -> Result<(), TestCaseError> {
    while let Some(action) = m.poll_action() {
        prop_assert!(
            !d.failed || matches!(action, Action::Publish(_) | Action::Detected { .. }),
            "{:?} after the machine gave up",
            action
        );
        match action {
            Action::Spawn { generation } => {
                prop_assert_eq!(generation, Generation(1));
                prop_assert!(!d.spawning);
                d.spawning = true;
            }
            Action::Restart {
                hung,
                next,
                cause,
                stop,
                strategy,
            } => {
                prop_assert!(d.asked.is_none(), "two restarts at once");
                // Only an operator's restart grants the grace (the default config).
                prop_assert_eq!(
                    stop == StopMode::Graceful,
                    cause.is_operator(),
                    "{:?} for {:?}",
                    stop,
                    cause
                );
                prop_assert!(strategy < strategies);
                prop_assert_eq!(next, m.generation().next());
                prop_assert!(hung <= m.generation());
                d.asked = Some((strategy, next));
            }
            Action::WakeAt(at) => {
                prop_assert!(at >= now);
                d.wake = Some(at);
            }
            Action::Detected { hang, triage } => {
                if triage == Triage::Incident {
                    prop_assert!(
                        d.incidents
                            .last()
                            .map_or(true, |last| *last < hang.generation),
                        "a second incident for {} after {:?}",
                        hang.generation,
                        d.incidents
                    );
                    d.incidents.push(hang.generation);
                }
            }
            Action::RestartScheduled { cause, delay } => {
                // A round that follows failed strategies goes through the policy, whoever asked.
                if cause.is_operator() && !d.exhausted {
                    prop_assert_eq!(delay, Duration::ZERO, "an operator restart waited");
                    d.operator += 1;
                } else {
                    d.begun.push(now);
                }
                d.exhausted = false;
            }
            Action::StrategiesExhausted => d.exhausted = true,
            Action::Ready { generation, .. } => {
                prop_assert_eq!(generation, m.generation());
                prop_assert_eq!(m.phase(), Phase::Ready);
            }
            Action::Failed(_) => d.failed = true,
            Action::Publish(status) => {
                prop_assert_eq!(status, m.status());
            }
            Action::Life { generation, at } => {
                prop_assert_eq!(generation, m.generation());
                prop_assert_eq!(at, m.life());
                if let Some(at) = at {
                    prop_assert!(at <= now);
                }
            }
            Action::Suspects(_) => prop_assert!(
                m.config().shared_quarantine,
                "suspects handed out by a machine with a table of its own"
            ),
            Action::Watch { .. }
            | Action::StartupTimedOut { .. }
            | Action::QuarantineCleared { .. }
            | Action::Quarantined(_) => {}
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn the_machine_restarts_each_generation_at_most_once_within_the_intensity_limit(
        strategies in 0usize..3,
        max_restarts in 1u32..6,
        window_s in 1u64..300,
        enable_restart in prop::bool::weighted(0.85),
        events in prop::collection::vec(event(), 0..250),
    ) {
        let mut config = SupervisionConfig::new(strategies);
        config.enable_restart = enable_restart;
        config.core.policy.intensity = IntensityConfig { max_restarts, window: Duration::from_secs(window_s) };
        config.core.health.startup_timeout = Duration::from_secs(60);
        config.core.poison_threshold = 2;
        let mut m = Supervision::try_new(config, Duration::ZERO, 3).unwrap();
        let mut d = Driver::default();
        let mut now = Duration::ZERO;
        m.start(now);
        check_actions(&mut m, &mut d, now, strategies)?;
        m.handle_spawned(now);
        d.spawning = false;
        check_actions(&mut m, &mut d, now, strategies)?;
        for event in events {
            let current = m.generation().get();
            let at = |offset: u8| Generation((current + u64::from(offset)).saturating_sub(1));
            let in_flight = [Fingerprint(1), Fingerprint(2)];
            match event {
                Event::Hang(offset, cause) => {
                    m.handle_hang(now, Hang::new(at(offset), HangCause::ALL[cause]), &in_flight)
                }
                Event::Exit(offset) => m.handle_exit(now, at(offset), &[]),
                Event::Probe(offset, code) => m.handle_probe(now, at(offset), answer(code), &[], Traffic::default()),
                Event::RestartDone(ready) => match d.asked.take() {
                    Some((strategy, _)) => m.handle_restart_done(now, strategy, ready),
                    None => m.handle_restart_done(now, 0, ready),
                },
                Event::RestartFailed => match d.asked.take() {
                    Some((strategy, _)) => m.handle_restart_failed(now, strategy),
                    None => m.handle_restart_failed(now, 0),
                },
                Event::Advance(ms_) => {
                    now += ms(ms_);
                    if d.wake.is_some_and(|at| at <= now) {
                        d.wake = None;
                        m.handle_timeout(now);
                    }
                }
                Event::Operator(signal) => {
                    let by = if signal { OperatorRestart::Signal } else { OperatorRestart::Manual };
                    let replaced = m.handle_operator_restart(now, by);
                    prop_assert_eq!(replaced, Generation(current));
                }
                Event::Progress(counter, busy) => {
                    let open: &[Fingerprint] = if busy { &in_flight } else { &[] };
                    let _ = m.liveness_step(now, open.len(), now, u64::from(counter));
                    check_actions(&mut m, &mut d, now, strategies)?;
                    m.handle_progress(now, m.generation(), ProgressReading::Counter(u64::from(counter)), open);
                }
                Event::Canary(answered) => m.handle_canary(now, m.generation(), answered, &[]),
                Event::Succeeded(fp) => m.handle_request_succeeded(now, Fingerprint(u64::from(fp))),
                Event::Shutdown => {
                    m.handle_shutdown(now);
                    d.failed = true;
                    d.asked = None;
                }
            }
            check_actions(&mut m, &mut d, now, strategies)?;
            // The intensity limit: never more restarts inside one window than allowed.
            for &start in &d.begun {
                let inside = d.begun.iter().filter(|&&t| t >= start && t - start < Duration::from_secs(window_s)).count();
                prop_assert!(inside <= max_restarts as usize, "{} restarts in one window", inside);
            }
            if !enable_restart {
                prop_assert!(d.begun.is_empty() && d.operator == 0, "a restart with restarts disabled");
            }
            if m.phase().is_terminal() {
                prop_assert!(m.next_probe_in(m.generation()).is_none());
            }
        }
    }

    #[test]
    fn snapshots_pack_and_unpack(generation in 0u64..(1 << 40), phase in 0usize..7, epoch in 0u32..(1 << 20)) {
        let snapshot = Snapshot { generation: Generation(generation), phase: Phase::ALL[phase], poison_epoch: epoch };
        prop_assert_eq!(Snapshot::unpack(snapshot.pack()), snapshot);
    }
}

// ---------------------------------------------------------------------------------------------
// 10. One request's plan: the attempt bound holds across deadlines, stalls, resets and 5xx; a
// hang is reported exactly for a silent deadline; once bytes reached the client nothing is
// replayed (`Continue`, reserved for stream resumption, is never answered).

#[derive(Clone, Debug)]
enum AttemptEnd {
    /// A deadline passes after `chunks` chunks arrived.
    Deadline {
        chunks: u8,
    },
    Outcome(AttemptOutcome),
}

fn attempt_end() -> impl Strategy<Value = AttemptEnd> {
    prop_oneof![
        2 => (0u8..3).prop_map(|chunks| AttemptEnd::Deadline { chunks }),
        3 => attempt_outcome().prop_map(AttemptEnd::Outcome),
    ]
}

proptest! {
    #[test]
    fn a_request_plan_ends_within_the_bound_and_never_replays_what_the_client_saw(
        retry in retry_config(),
        enable_restart in any::<bool>(),
        total in prop::option::of(1u64..200_000),
        attempts in prop::collection::vec((attempt_end(), prop::bool::weighted(0.2), 0u64..5), 64),
    ) {
        let deadlines = StreamDeadlines { total: total.map(ms), ..StreamDeadlines::default() };
        let mut plan = RequestPlan::new(RequestConfig { retry, deadlines, enable_restart, life_window: ms(15_000) });
        let mut now = Duration::ZERO;
        let mut ended_after = None;
        for (n, (end, reach_client, generation)) in attempts.into_iter().enumerate() {
            let generation = Generation(generation);
            plan.begin(now, generation);
            let outcome = match end {
                AttemptEnd::Outcome(outcome) => outcome,
                AttemptEnd::Deadline { chunks } => {
                    for _ in 0..chunks {
                        now += ms(10);
                        plan.on_chunk(now);
                    }
                    let deadline = plan.deadline().expect("an attempt was begun");
                    prop_assert_eq!(plan.check(deadline - Duration::from_nanos(1).min(deadline), None).is_none(), deadline > Duration::ZERO);
                    now = deadline;
                    plan.check(now, None).expect("the deadline passed")
                }
            };
            if reach_client {
                plan.reached_client();
            }
            let decision = plan.decide(outcome);
            prop_assert_eq!(decision.report.is_some(), matches!(outcome, AttemptOutcome::FirstByteTimeout | AttemptOutcome::Stall));
            if let Some(hang) = decision.report {
                prop_assert_eq!(hang.generation, generation);
            }
            let continued = matches!(decision.next, Next::Continue { .. });
            prop_assert!(!continued);
            if plan.has_reached_client() && outcome != AttemptOutcome::Success {
                prop_assert!(matches!(decision.next, Next::GiveUp(_)), "{:?} after bytes reached the client", decision.next);
            }
            match decision.next {
                Next::Done | Next::GiveUp(_) => {
                    ended_after = Some(n + 1);
                    break;
                }
                Next::WaitForGeneration(g) => {
                    prop_assert!(enable_restart);
                    prop_assert_eq!(g, generation.next());
                }
                Next::Recheck { next, .. } => prop_assert_eq!(next, generation.next()),
                Next::RetryNow | Next::RetryAfter(_) | Next::Continue { .. } => {}
            }
            now += ms(1);
        }
        let ended_after = ended_after.ok_or_else(|| TestCaseError::fail("never ended"))?;
        prop_assert!(ended_after <= retry.max_retries as usize + 1);
    }
}

// ---------------------------------------------------------------------------------------------
// 11. Never restart a healthy server.

proptest! {
    /// A deadline decides only in silence: a request never reports a hang while its server showed
    /// life within the window, never waits past `max_request_time` on life alone, and with no
    /// life at all the deadline decides as it always did.
    #[test]
    fn evidence_of_life_beats_a_deadline(
        first_byte_s in 1u64..120,
        window_s in 1u64..60,
        max_s in 1u64..3_600,
        lives in prop::collection::vec(0u64..4_000_000, 0..40),
        chunks in prop::collection::vec(0u64..4_000_000, 0..5),
    ) {
        let s = Duration::from_secs;
        let deadlines = StreamDeadlines { first_byte: s(first_byte_s), max_request_time: s(max_s), ..StreamDeadlines::default() };
        let config = RequestConfig { deadlines, life_window: s(window_s), ..RequestConfig::default() };
        let mut lives: Vec<Duration> = lives.into_iter().map(ms).collect();
        lives.sort();
        let mut chunks: Vec<Duration> = chunks.into_iter().map(ms).collect();
        chunks.sort();
        let mut plan = RequestPlan::new(config);
        plan.begin(Duration::ZERO, Generation(1));
        let mut now = Duration::ZERO;
        let mut next_chunk = chunks.into_iter().peekable();
        let outcome = loop {
            let deadline = plan.deadline().expect("begun");
            prop_assert!(deadline >= now);
            // Chunks that arrive before the deadline move it.
            if let Some(&at) = next_chunk.peek() {
                if at < deadline {
                    now = now.max(at);
                    plan.on_chunk(now);
                    next_chunk.next();
                    continue;
                }
            }
            now = deadline;
            let life = lives.iter().rev().find(|&&at| at <= now).copied();
            match plan.check(now, life) {
                None => {
                    let alive = life.is_some_and(|at| now - at < s(window_s));
                    prop_assert!(alive, "waited at {:?} with no life", now);
                    prop_assert!(now < s(max_s), "waited past max_request_time");
                }
                Some(outcome) => {
                    let alive = life.is_some_and(|at| now - at < s(window_s));
                    match outcome {
                        AttemptOutcome::FirstByteTimeout | AttemptOutcome::Stall => {
                            prop_assert!(!alive, "a hang while the server showed life at {:?}", now);
                        }
                        AttemptOutcome::TookTooLong => {
                            prop_assert!(alive);
                            prop_assert!(now >= s(max_s));
                        }
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                    break outcome;
                }
            }
        };
        if lives.is_empty() && plan.first_byte_seen() {
            prop_assert_eq!(outcome, AttemptOutcome::Stall);
        }
        if lives.is_empty() && !plan.first_byte_seen() {
            prop_assert_eq!(outcome, AttemptOutcome::FirstByteTimeout);
            prop_assert_eq!(now, s(first_byte_s), "with no life the deadline decides as before");
        }
    }

    /// A prompt non-2xx answer from a ready server is a strike only when the server has shown no
    /// life for the progress timeout; timeouts and refused connections always strike; a 2xx
    /// clears the strikes. The machine restarts exactly when the model's strikes reach the limit.
    #[test]
    fn a_busy_server_answering_503_is_never_struck(
        unhealthy_after in 1u32..5,
        steps in prop::collection::vec((0u8..4, prop::bool::weighted(0.15), 1u64..6_000), 1..120),
    ) {
        let mut config = SupervisionConfig::new(1);
        config.core.health.unhealthy_after = unhealthy_after;
        let window = config.core.progress.progress_timeout;
        let mut m = Supervision::try_new(config, Duration::ZERO, 9).unwrap();
        m.start(Duration::ZERO);
        m.handle_spawned(Duration::ZERO);
        let mut now = ms(10);
        m.handle_probe(now, Generation(1), ProbeAnswer::Status(200), &[], Traffic::default());
        while m.poll_action().is_some() {}
        // Model: strikes, and the silence rule (a probe timed out, and nothing was heard from
        // the server since the first probe that went unanswered for the detection budget).
        let budget = config.core.health.detection_budget();
        let mut heard = now;
        let mut unanswered: Option<Duration> = None;
        let mut life: Option<Duration> = None;
        let mut strikes = 0u32;
        let mut answered = 0u64;
        prop_assert!(m.liveness_step(now, 1, now, answered) == LivenessStep::SampleProgress);
        for (code, answers, gap) in steps {
            now += ms(gap);
            if answers {
                answered += 1;
                let _ = m.liveness_step(now, 1, now, answered);
                life = Some(now);
            }
            let answer = answer(code);
            // A probe the machine cut short to end with the silence budget is no strike unless
            // it ends the wait (then the silence rule makes the incident).
            let probe_timeout = m
                .next_probe(Generation(1))
                .map_or(config.core.health.timeout, |next| next.timeout);
            let cut_short = probe_timeout < config.core.health.timeout;
            m.handle_probe(now, Generation(1), answer, &[], Traffic::default());
            let struck = match answer {
                ProbeAnswer::Status(200..=299) => { strikes = 0; false }
                ProbeAnswer::Status(_) => life.map_or(true, |at| now - at >= window),
                ProbeAnswer::TimedOut if cut_short => false,
                _ => true,
            };
            if struck {
                strikes += 1;
            }
            let silent = match answer {
                ProbeAnswer::Status(_) => {
                    heard = now;
                    unanswered = None;
                    false
                }
                ProbeAnswer::TimedOut => {
                    let sent = now.saturating_sub(probe_timeout);
                    if sent >= heard && unanswered.is_none() {
                        unanswered = Some(sent);
                    }
                    unanswered.is_some_and(|since| now - since >= budget)
                }
                ProbeAnswer::NoConnection => false,
            };
            let incident = core::iter::from_fn(|| m.poll_action()).any(|a| matches!(
                a,
                Action::Detected { hang: Hang { cause: HangCause::HealthProbes, .. }, triage: Triage::Incident }
            ));
            prop_assert_eq!(incident, strikes == unhealthy_after || silent, "strikes {} at {:?}", strikes, now);
            if incident {
                break;
            }
        }
    }

    /// Operator restarts go at once, however many, and count toward nothing: after any number of
    /// them, real incidents still meet the intensity limit exactly as documented.
    #[test]
    fn operator_restarts_are_not_incidents(
        manual in 1usize..30,
        max_restarts in 1u32..5,
        gap_ms in 1u64..5_000,
    ) {
        let mut config = SupervisionConfig::new(1);
        config.core.policy.intensity.max_restarts = max_restarts;
        let mut m = Supervision::try_new(config, Duration::ZERO, 5).unwrap();
        let mut now = Duration::ZERO;
        m.start(now);
        m.handle_spawned(now);
        let restart_and_ready = |m: &mut Supervision, now: Duration| -> Result<Vec<Action>, TestCaseError> {
            let actions: Vec<Action> = core::iter::from_fn(|| m.poll_action()).collect();
            if let Some(Action::Restart { strategy, .. }) = actions.iter().find(|a| matches!(a, Action::Restart { .. })) {
                m.handle_restart_done(now, *strategy, true);
            }
            Ok(actions)
        };
        m.handle_probe(now, Generation(1), ProbeAnswer::Status(200), &[Fingerprint(3)], Traffic::default());
        restart_and_ready(&mut m, now)?;
        for i in 0..manual {
            now += ms(gap_ms);
            let by = if i % 2 == 0 { OperatorRestart::Manual } else { OperatorRestart::Signal };
            m.handle_operator_restart(now, by);
            let actions = restart_and_ready(&mut m, now)?;
            prop_assert!(actions.iter().any(|a| matches!(a, Action::Restart { .. })), "{:?}", actions);
            prop_assert!(!actions.iter().any(|a| matches!(a, Action::WakeAt(_) | Action::Failed(_))), "{:?}", actions);
            prop_assert_eq!(m.phase(), Phase::Ready);
        }
        prop_assert_eq!(m.poison().strikes(Fingerprint(3)), 0, "an operator restart made a suspect");
        // Real incidents: max_restarts of them restart, the next gives up.
        for i in 0..=max_restarts {
            now += ms(gap_ms);
            // Past any backoff.
            now += Duration::from_secs(60);
            m.handle_exit(now, m.generation(), &[]);
            let mut actions = restart_and_ready(&mut m, now)?;
            if let Some(Action::WakeAt(at)) = actions.iter().find(|a| matches!(a, Action::WakeAt(_))).cloned() {
                now = at;
                m.handle_timeout(now);
                actions = restart_and_ready(&mut m, now)?;
            }
            let failed = actions.iter().any(|a| matches!(a, Action::Failed(_)));
            prop_assert_eq!(failed, i == max_restarts, "incident {} of {}", i + 1, max_restarts);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Routing in a pool: never a replica that is not ready; the least loaded of the others.

fn replica_views() -> impl Strategy<Value = Vec<ReplicaView>> {
    prop::collection::vec(
        (any::<bool>(), 0u32..8).prop_map(|(routable, in_flight)| ReplicaView {
            routable,
            in_flight,
        }),
        0..12,
    )
}

proptest! {
    #[test]
    fn routing_never_picks_a_replica_that_is_not_ready(
        views in replica_views(),
        failed in prop::collection::vec(0usize..12, 0..4),
        cursor in any::<usize>(),
    ) {
        let mut set = ReplicaSet::new();
        for index in failed {
            set.insert(index);
        }
        match route(&views, set, cursor) {
            Route::Send(index) => prop_assert!(views[index].routable),
            Route::Wait => prop_assert!(views.iter().all(|v| !v.routable)),
        }
    }

    #[test]
    fn routing_picks_the_least_loaded_replica_the_request_has_not_failed_on(
        views in replica_views(),
        failed in prop::collection::vec(0usize..12, 0..4),
        cursor in any::<usize>(),
    ) {
        let mut set = ReplicaSet::new();
        for index in &failed {
            set.insert(*index);
        }
        let fresh: Vec<u32> = views
            .iter()
            .enumerate()
            .filter(|(i, v)| v.routable && !set.contains(*i))
            .map(|(_, v)| v.in_flight)
            .collect();
        if let Route::Send(index) = route(&views, set, cursor) {
            if let Some(least) = fresh.iter().min() {
                prop_assert!(!set.contains(index));
                prop_assert_eq!(views[index].in_flight, *least);
            } else {
                let least = views.iter().filter(|v| v.routable).map(|v| v.in_flight).min();
                prop_assert_eq!(Some(views[index].in_flight), least);
            }
        }
    }
}

// 12. Stream resumption.

proptest! {
    /// However a stream is cut, it is resumed at most `limit` times and never when a refusal
    /// applies; each continuation begins a new part of the request, whose own failures before
    /// its first byte end it within the attempt bound (`max_retries + 1`), whatever the earlier
    /// parts met.
    #[test]
    fn a_stream_is_resumed_at_most_limit_times_and_each_part_within_the_attempt_bound(
        limit in 0u32..5,
        retry in retry_config(),
        request in (1u64..3, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        delivered in (any::<bool>(), any::<bool>()),
        parts in prop::collection::vec(
            (attempt_outcome(), prop::collection::vec(failed_outcome(), 0..12)),
            1..12,
        ),
    ) {
        let (choices, best_of, logprobs, echo, structured) = request;
        let request = ResumeRequest { choices, best_of, logprobs, echo, structured };
        let delivered = DeliveredPart { tool_calls: delivered.0, reasoning: delivered.1, partial_event: false };
        let refused = choices > 1 || best_of || logprobs || echo || structured || delivered.tool_calls || delivered.reasoning;
        let mut resume = StreamResume::new(ResumeConfig { mode: ResumeMode::Auto, limit });
        let mut plan = RequestPlan::new(RequestConfig { retry, ..RequestConfig::default() });
        let mut continued = 0u32;
        let mut at = 0u64;
        let mut tick = |plan: &mut RequestPlan, generation: u64| {
            at += 1;
            plan.begin(Duration::from_secs(at), Generation(generation));
        };
        'parts: for (n, (outcome, failures)) in parts.into_iter().enumerate() {
            let generation = 1 + n as u64;
            tick(&mut plan, generation);
            plan.reached_client();
            match resume.judge(outcome, &request, &delivered) {
                Ok(count) => {
                    prop_assert!(!refused);
                    prop_assert!(is_cut(outcome));
                    prop_assert!(count <= limit);
                    match plan.decide_cut(outcome).next {
                        Next::Continue { .. } => continued += 1,
                        Next::GiveUp(_) => break,
                        other => prop_assert!(false, "{other:?} after a cut"),
                    }
                    prop_assert!(!plan.has_reached_client());
                    // The continuation's attempts before its first byte.
                    let mut attempts = 1u32;
                    for failure in failures {
                        tick(&mut plan, generation);
                        match plan.decide(failure).next {
                            Next::GiveUp(_) => {
                                prop_assert!(attempts <= retry.max_retries + 1);
                                break 'parts;
                            }
                            Next::Done => prop_assert!(false, "{failure:?} is no success"),
                            _ => attempts += 1,
                        }
                    }
                    prop_assert!(attempts <= retry.max_retries + 1, "{attempts} attempts in one part");
                }
                Err(refusal) => {
                    let limited = matches!(refusal, ResumeRefusal::LimitReached { .. });
                    prop_assert!(refused || !is_cut(outcome) || limited, "{:?}", refusal);
                    break;
                }
            }
        }
        prop_assert!(continued <= limit);
        prop_assert!(resume.resumed() <= limit);
    }
}
