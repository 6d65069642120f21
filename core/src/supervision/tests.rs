//! The machine on a virtual clock: every scenario of the coordinator, in microseconds.

use alloc::vec::Vec;

use super::*;
use crate::{Admission, BackoffConfig, GiveUpReason, IntensityConfig, RestartPolicyConfig};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config(strategies: usize, max_restarts: u32) -> SupervisionConfig {
    let mut config = SupervisionConfig::new(strategies);
    config.core.policy = RestartPolicyConfig {
        backoff: BackoffConfig {
            scale_with_startup: false,
            ..BackoffConfig::default()
        },
        intensity: IntensityConfig {
            max_restarts,
            window: Duration::from_secs(600),
        },
        stable_after: Duration::from_secs(60),
    };
    config
}

fn drain(m: &mut Supervision) -> Vec<Action> {
    core::iter::from_fn(|| m.poll_action()).collect()
}

fn restarts(actions: &[Action]) -> Vec<(Generation, Generation, HangCause, usize)> {
    actions
        .iter()
        .filter_map(|a| match *a {
            Action::Restart {
                hung,
                next,
                cause,
                strategy,
                ..
            } => Some((hung, next, cause, strategy)),
            _ => None,
        })
        .collect()
}

/// Carries out the restart the machine asked for at `now` (through its backoff, if any), with a
/// new generation that is ready at once.
fn complete_restart(m: &mut Supervision, now: Duration) {
    for action in drain(m) {
        match action {
            Action::WakeAt(at) => {
                m.handle_timeout(at.max(now));
                complete_restart(m, at.max(now));
                return;
            }
            Action::Restart { strategy, .. } => m.handle_restart_done(now, strategy, true),
            _ => {}
        }
    }
}

/// A machine whose generation 1 is ready at 10 ms.
fn ready_machine(config: SupervisionConfig) -> Supervision {
    let mut m = Supervision::try_new(config, ms(0), 7).unwrap();
    m.start(ms(0));
    assert_eq!(
        drain(&mut m),
        [
            Action::Spawn {
                generation: Generation(1)
            },
            Action::Publish(m.status()),
            Action::Life {
                generation: Generation(0),
                at: None
            }
        ]
    );
    m.handle_spawned(ms(1));
    m.handle_probe(
        ms(10),
        Generation(1),
        ProbeAnswer::Status(200),
        &[],
        Traffic::default(),
    );
    let actions = drain(&mut m);
    assert_eq!(
        actions[0],
        Action::Watch {
            generation: Generation(1)
        }
    );
    assert!(actions.contains(&Action::Ready {
        generation: Generation(1),
        startup: ms(9),
        recovery: None
    }));
    assert_eq!(m.phase(), Phase::Ready);
    m
}

#[test]
fn the_first_generation_is_spawned_watched_and_becomes_ready() {
    let m = ready_machine(config(1, 5));
    assert_eq!(m.generation(), Generation(1));
    assert_eq!(m.next_probe_in(Generation(1)), Some(Duration::from_secs(1)));
    assert_eq!(m.next_probe_in(Generation(2)), None);
}

#[test]
fn a_thousand_reports_of_one_freeze_make_one_restart() {
    let mut m = ready_machine(config(1, 5));
    for i in 0..1000 {
        let cause = if i % 2 == 0 {
            HangCause::FirstByteTimeout
        } else {
            HangCause::StreamStall
        };
        m.handle_hang(ms(100), Hang::new(Generation(1), cause), &[]);
    }
    let actions = drain(&mut m);
    assert_eq!(
        restarts(&actions),
        [(Generation(1), Generation(2), HangCause::FirstByteTimeout, 0)]
    );
    let detected = actions
        .iter()
        .filter(|a| matches!(a, Action::Detected { .. }))
        .count();
    assert_eq!(detected, 1000, "every report is counted");
    assert_eq!(m.phase(), Phase::Restarting);
    assert_eq!(m.status().restarts, 1);
    m.handle_restart_done(ms(150), 0, false);
    assert_eq!(m.generation(), Generation(2));
    m.handle_probe(
        ms(200),
        Generation(2),
        ProbeAnswer::Status(200),
        &[],
        Traffic::default(),
    );
    let actions = drain(&mut m);
    assert!(actions.contains(&Action::Ready {
        generation: Generation(2),
        startup: ms(50),
        recovery: Some(Recovery {
            cause: HangCause::FirstByteTimeout,
            took: ms(100)
        })
    }));
}

#[test]
fn a_late_report_against_a_replaced_generation_is_stale() {
    let mut m = ready_machine(config(1, 5));
    m.handle_hang(
        ms(100),
        Hang::new(Generation(1), HangCause::HealthProbes),
        &[],
    );
    m.handle_restart_done(ms(110), 0, true);
    assert_eq!(m.phase(), Phase::Ready);
    drain(&mut m);
    m.handle_hang(
        ms(120),
        Hang::new(Generation(1), HangCause::FirstByteTimeout),
        &[],
    );
    let actions = drain(&mut m);
    assert_eq!(
        actions,
        [Action::Detected {
            hang: Hang::new(Generation(1), HangCause::FirstByteTimeout),
            triage: Triage::Stale
        }]
    );
}

#[test]
fn failed_probes_make_an_incident_and_the_hung_generation_is_no_longer_probed() {
    let mut m = ready_machine(config(1, 5));
    for at in [1000, 2000] {
        m.handle_probe(
            ms(at),
            Generation(1),
            ProbeAnswer::TimedOut,
            &[],
            Traffic::default(),
        );
    }
    assert!(restarts(&drain(&mut m)).is_empty());
    m.handle_probe(
        ms(3000),
        Generation(1),
        ProbeAnswer::NoConnection,
        &[],
        Traffic::default(),
    );
    let actions = drain(&mut m);
    assert_eq!(
        restarts(&actions),
        [(Generation(1), Generation(2), HangCause::HealthProbes, 0)]
    );
    assert_eq!(m.next_probe_in(Generation(1)), None);
    assert_eq!(m.status().last_cause, Some(HangCause::HealthProbes));
    m.handle_restart_done(ms(3100), 0, false);
    assert_eq!(
        drain(&mut m)[0],
        Action::Watch {
            generation: Generation(2)
        }
    );
}

#[test]
fn a_failing_strategy_falls_through_to_the_next_and_then_the_round_is_scheduled_again() {
    let mut m = ready_machine(config(2, 5));
    m.handle_hang(
        ms(100),
        Hang::new(Generation(1), HangCause::FirstByteTimeout),
        &[],
    );
    drain(&mut m);
    m.handle_restart_failed(ms(110), 0);
    let actions = drain(&mut m);
    assert_eq!(
        restarts(&actions),
        [(Generation(1), Generation(2), HangCause::FirstByteTimeout, 1)]
    );
    // A late answer from the first strategy changes nothing.
    m.handle_restart_done(ms(111), 0, false);
    assert_eq!(m.generation(), Generation(1));
    m.handle_restart_failed(ms(120), 1);
    let actions = drain(&mut m);
    assert!(actions.contains(&Action::StrategiesExhausted));
    // The second restart of the streak backs off.
    assert!(actions.contains(&Action::WakeAt(ms(620))), "{actions:?}");
    assert_eq!(m.phase(), Phase::BackingOff);
    m.handle_timeout(ms(620));
    assert_eq!(
        restarts(&drain(&mut m)),
        [(Generation(1), Generation(2), HangCause::FirstByteTimeout, 0)]
    );
}

#[test]
fn a_crash_loop_backs_off_longer_each_time_and_ends_failed() {
    let mut m = ready_machine(config(1, 3));
    let mut now = ms(100);
    m.handle_exit(now, Generation(1), &[]);
    let mut delays = Vec::new();
    loop {
        let actions = drain(&mut m);
        if let Some(Action::Failed(reason)) =
            actions.iter().find(|a| matches!(a, Action::Failed(_)))
        {
            assert_eq!(
                *reason,
                FailReason::Exhausted(GiveUpReason::IntensityExceeded {
                    restarts: 3,
                    window: Duration::from_secs(600)
                })
            );
            break;
        }
        for action in actions {
            match action {
                Action::RestartScheduled { delay, .. } => delays.push(delay),
                Action::WakeAt(at) => {
                    now = at;
                    m.handle_timeout(now);
                }
                Action::Restart { strategy, .. } => {
                    now += ms(5);
                    m.handle_restart_done(now, strategy, false);
                    // Every new generation dies as soon as it is spawned.
                    now += ms(5);
                    let generation = m.generation();
                    m.handle_exit(now, generation, &[]);
                }
                _ => {}
            }
        }
    }
    assert_eq!(delays, [ms(0), ms(500), ms(1000)]);
    assert_eq!(m.phase(), Phase::Failed);
    // Final: nothing brings it back.
    m.handle_hang(now, Hang::new(m.generation(), HangCause::Manual), &[]);
    assert!(drain(&mut m).is_empty());
}

#[test]
fn a_repeat_suspect_goes_on_trial_and_a_hang_during_its_trial_quarantines_it() {
    let mut m = ready_machine(config(1, 5));
    let poison = Fingerprint(42);
    let innocent = Fingerprint(7);
    m.handle_hang(
        ms(100),
        Hang::new(Generation(1), HangCause::FirstByteTimeout),
        &[poison, innocent],
    );
    assert_eq!(m.poison().strikes(poison), 1);
    let epoch = m.status().poison_epoch;
    assert_ne!(epoch, 0);
    complete_restart(&mut m, ms(110));
    // Joined reports do not count again.
    m.handle_hang(
        ms(111),
        Hang::new(Generation(1), HangCause::FirstByteTimeout),
        &[poison],
    );
    // The innocent one succeeds on the new server: not a suspect any more.
    m.handle_request_succeeded(ms(200), innocent);
    drain(&mut m);
    m.handle_hang(
        ms(5000),
        Hang::new(Generation(2), HangCause::FirstByteTimeout),
        &[poison, innocent],
    );
    // Present at two incidents with no success between: on trial, not yet quarantined.
    assert!(!m.poison().is_quarantined(poison, ms(5000)));
    assert_eq!(m.poison().admit(poison, ms(5000), false), Admission::Trial);
    assert_eq!(m.poison().admit(innocent, ms(5000), false), Admission::Go);
    complete_restart(&mut m, ms(5100));
    assert_eq!(m.generation(), Generation(3));
    // Its trial request hangs the next server: quarantined for the TTL.
    m.handle_trial_started(ms(5200), poison);
    m.handle_hang(
        ms(9000),
        Hang::new(Generation(3), HangCause::FirstByteTimeout),
        &[poison, innocent],
    );
    let actions = drain(&mut m);
    assert!(actions.contains(&Action::Quarantined(poison)));
    assert!(m.poison().is_quarantined(poison, ms(9000)));
    assert!(!m.poison().is_quarantined(innocent, ms(9000)));
    assert!(!m
        .poison()
        .is_quarantined(poison, ms(9000) + Duration::from_secs(600)));
    // An operator clears it.
    let epoch = m.status().poison_epoch;
    assert_eq!(m.handle_quarantine_cleared(ms(9500)), 1);
    assert!(!m.poison().is_quarantined(poison, ms(9500)));
    assert_ne!(m.status().poison_epoch, epoch);
}

#[test]
fn with_a_shared_table_the_suspects_of_an_incident_are_handed_out_and_nothing_is_kept() {
    let mut shared = config(1, 5);
    shared.shared_quarantine = true;
    let mut m = ready_machine(shared);
    let poison = Fingerprint(42);
    m.handle_hang(
        ms(100),
        Hang::new(Generation(1), HangCause::FirstByteTimeout),
        &[poison],
    );
    let actions = drain(&mut m);
    assert!(actions.contains(&Action::Suspects(alloc::vec![poison])));
    // A joined report is no new incident: no suspects handed out again.
    m.handle_hang(
        ms(101),
        Hang::new(Generation(1), HangCause::FirstByteTimeout),
        &[poison],
    );
    assert!(!drain(&mut m)
        .iter()
        .any(|a| matches!(a, Action::Suspects(_))));
    assert!(m.poison().is_empty());
    assert_eq!(m.status().poison_epoch, 0);
}

#[test]
fn a_machine_shut_down_before_its_delayed_start_never_starts() {
    let mut m = Supervision::try_new(config(1, 5), ms(0), 7).unwrap();
    m.handle_shutdown(ms(1));
    drain(&mut m);
    m.start(ms(2));
    assert!(!drain(&mut m)
        .iter()
        .any(|a| matches!(a, Action::Spawn { .. })));
    assert_eq!(m.phase(), Phase::Stopping);
}

#[test]
fn a_trial_that_succeeds_acquits() {
    let mut m = ready_machine(config(1, 5));
    let twin = Fingerprint(5);
    for (at, generation) in [(100, 1), (5000, 2)] {
        m.handle_hang(
            ms(at),
            Hang::new(Generation(generation), HangCause::Exited),
            &[twin],
        );
        complete_restart(&mut m, ms(at + 10));
    }
    assert_eq!(m.poison().admit(twin, ms(6000), false), Admission::Trial);
    m.handle_trial_started(ms(6000), twin);
    m.handle_request_succeeded(ms(6100), twin);
    assert_eq!(m.poison().admit(twin, ms(6100), false), Admission::Go);
    // A later hang with it present is a first strike again.
    m.handle_hang(
        ms(90_000),
        Hang::new(Generation(3), HangCause::Exited),
        &[twin],
    );
    assert_eq!(m.poison().strikes(twin), 1);
}

#[test]
fn with_restarts_disabled_every_hang_is_reported_and_the_same_generation_watched() {
    let mut cfg = config(1, 5);
    cfg.enable_restart = false;
    let mut m = ready_machine(cfg);
    for cause in [HangCause::CanaryTimeout, HangCause::FirstByteTimeout] {
        m.handle_hang(ms(100), Hang::new(Generation(1), cause), &[]);
        let actions = drain(&mut m);
        assert!(restarts(&actions).is_empty());
        assert!(actions.contains(&Action::Detected {
            hang: Hang::new(Generation(1), cause),
            triage: Triage::ReportOnly
        }));
        assert!(actions.contains(&Action::Watch {
            generation: Generation(1)
        }));
        assert_eq!(m.status().last_cause, Some(cause));
    }
    assert_eq!(m.phase(), Phase::Ready);
    assert_eq!(m.generation(), Generation(1));
}

#[test]
fn an_operator_restart_answers_the_replaced_generation() {
    let mut m = ready_machine(config(1, 5));
    assert_eq!(
        m.handle_operator_restart(ms(100), OperatorRestart::Manual),
        Generation(1)
    );
    let actions = drain(&mut m);
    assert_eq!(
        restarts(&actions),
        [(Generation(1), Generation(2), HangCause::Manual, 0)]
    );
    assert!(actions.contains(&Action::Detected {
        hang: Hang::new(Generation(1), HangCause::Manual),
        triage: Triage::Operator
    }));
    assert_eq!(m.status().last_cause, Some(HangCause::Manual));
}

#[test]
fn a_new_generation_that_never_becomes_ready_is_restarted_again() {
    let mut cfg = config(1, 5);
    cfg.core.health.startup_timeout = Duration::from_secs(600);
    let mut m = ready_machine(cfg);
    m.handle_hang(
        ms(100),
        Hang::new(Generation(1), HangCause::HealthProbes),
        &[],
    );
    m.handle_restart_done(ms(200), 0, false);
    drain(&mut m);
    m.handle_probe(
        ms(200 + 600_000),
        Generation(2),
        ProbeAnswer::NoConnection,
        &[],
        Traffic::default(),
    );
    let actions = drain(&mut m);
    assert!(actions.contains(&Action::StartupTimedOut {
        generation: Generation(2),
        after: Duration::from_secs(600)
    }));
    assert!(actions.contains(&Action::Detected {
        hang: Hang::new(Generation(2), HangCause::StartupTimeout),
        triage: Triage::FailedStart
    }));
    // A failed start is the second restart of the streak: it backs off, then replaces gen 2.
    let wake = actions
        .iter()
        .find_map(|a| match a {
            Action::WakeAt(at) => Some(*at),
            _ => None,
        })
        .expect("a backoff");
    m.handle_timeout(wake);
    assert_eq!(
        restarts(&drain(&mut m)),
        [(Generation(2), Generation(3), HangCause::StartupTimeout, 0)]
    );
}

#[test]
fn without_any_strategy_rounds_go_through_the_timer_and_end_failed() {
    let mut m = ready_machine(config(0, 3));
    m.handle_hang(
        ms(100),
        Hang::new(Generation(1), HangCause::FirstByteTimeout),
        &[],
    );
    let mut now = ms(100);
    for _ in 0..10 {
        let actions = drain(&mut m);
        if m.phase() == Phase::Failed {
            break;
        }
        let wake = actions
            .iter()
            .find_map(|a| match a {
                Action::WakeAt(at) => Some(*at),
                _ => None,
            })
            .expect("the next round is timed");
        now = wake.max(now);
        m.handle_timeout(now);
    }
    assert_eq!(m.phase(), Phase::Failed);
}

#[test]
fn a_failed_first_start_gives_up_and_shutdown_is_final() {
    let mut m = Supervision::try_new(config(1, 5), ms(0), 1).unwrap();
    m.start(ms(0));
    m.handle_spawn_failed(ms(1));
    assert!(drain(&mut m).contains(&Action::Failed(FailReason::FirstStartFailed)));
    let mut m = ready_machine(config(1, 5));
    m.handle_shutdown(ms(100));
    m.handle_exit(ms(101), Generation(1), &[]);
    m.handle_stopped(ms(102));
    let actions = drain(&mut m);
    assert!(restarts(&actions).is_empty());
    assert_eq!(m.phase(), Phase::Stopped);
}

#[test]
fn progress_and_canary_verdicts_are_hangs_of_the_current_generation_only() {
    let mut m = ready_machine(config(1, 5));
    assert_eq!(
        m.liveness_step(ms(100), 1, ms(0), 0),
        LivenessStep::SampleProgress
    );
    m.handle_progress(
        ms(100),
        Generation(1),
        ProgressReading::Counter(5),
        &[Fingerprint(1)],
    );
    m.handle_progress(
        ms(20_000),
        Generation(1),
        ProgressReading::Counter(5),
        &[Fingerprint(1)],
    );
    let actions = drain(&mut m);
    assert_eq!(
        restarts(&actions),
        [(Generation(1), Generation(2), HangCause::ProgressStalled, 0)]
    );
    assert_eq!(
        m.liveness_step(ms(20_001), 1, ms(0), 0),
        LivenessStep::Nothing
    );
    m.handle_restart_done(ms(20_100), 0, true);
    m.handle_canary(ms(40_000), Generation(1), false, &[]);
    assert!(restarts(&drain(&mut m)).is_empty(), "a stale canary");
    // A new generation: first a baseline reading of its counter, then the canary when idle.
    assert_eq!(
        m.liveness_step(ms(40_000), 0, ms(20_100), 0),
        LivenessStep::SampleProgress
    );
    assert_eq!(
        m.liveness_step(ms(40_000), 0, ms(20_100), 0),
        LivenessStep::SendCanary
    );
    m.handle_canary(ms(50_000), Generation(2), false, &[]);
    assert!(drain(&mut m).contains(&Action::Detected {
        hang: Hang::new(Generation(2), HangCause::CanaryTimeout),
        triage: Triage::Incident
    }));
}

#[test]
fn operator_restarts_go_at_once_join_one_under_way_and_count_toward_nothing() {
    let mut m = ready_machine(config(1, 2));
    let mut now = ms(100);
    for i in 0..10u64 {
        let by = if i % 2 == 0 {
            OperatorRestart::Manual
        } else {
            OperatorRestart::Signal
        };
        m.handle_operator_restart(now, by);
        // A second request while the first is under way joins it.
        m.handle_operator_restart(now, OperatorRestart::Manual);
        let actions = drain(&mut m);
        assert_eq!(restarts(&actions).len(), 1, "{actions:?}");
        assert!(!actions.iter().any(|a| matches!(a, Action::WakeAt(_))));
        assert!(actions.contains(&Action::Detected {
            hang: Hang::new(m.generation(), HangCause::Manual),
            triage: Triage::Joined
        }));
        m.handle_restart_done(now + ms(10), 0, true);
        assert_eq!(m.phase(), Phase::Ready);
        now += ms(1000);
    }
    assert_eq!(m.generation(), Generation(11));
    // Two real incidents within the window are still allowed, the third gives up.
    for _ in 0..2 {
        now += Duration::from_secs(120);
        m.handle_exit(now, m.generation(), &[]);
        m.handle_restart_done(now, 0, true);
    }
    now += Duration::from_secs(120);
    m.handle_exit(now, m.generation(), &[]);
    assert_eq!(m.phase(), Phase::Failed);
}

#[test]
fn requests_caught_by_an_operator_restart_are_no_suspects() {
    let mut m = ready_machine(config(1, 5));
    m.handle_hang(
        ms(100),
        Hang::new(Generation(1), HangCause::Manual),
        &[Fingerprint(1)],
    );
    assert_eq!(m.poison().strikes(Fingerprint(1)), 0);
    assert_eq!(m.status().poison_epoch, 0);
    assert_eq!(restarts(&drain(&mut m)).len(), 1);
}

#[test]
fn a_busy_server_answering_503_is_not_struck_while_it_shows_life() {
    let mut m = ready_machine(config(1, 5));
    let _ = m.liveness_step(ms(20), 1, ms(20), 0);
    // Requests keep getting answers while /health says 503.
    for i in 1..=20u64 {
        let now = ms(20 + i * 1000);
        let _ = m.liveness_step(now, 1, now, i);
        m.handle_probe(
            now,
            Generation(1),
            ProbeAnswer::Status(503),
            &[],
            Traffic::default(),
        );
    }
    assert!(restarts(&drain(&mut m)).is_empty());
    // Then nothing progresses: after the progress timeout without life, 503s strike.
    let mut struck_at = None;
    for i in 21..60u64 {
        let now = ms(20 + i * 1000);
        m.handle_probe(
            now,
            Generation(1),
            ProbeAnswer::Status(503),
            &[],
            Traffic::default(),
        );
        if !restarts(&drain(&mut m)).is_empty() {
            struck_at = Some(now);
            break;
        }
    }
    // Last life at 20.02 s; no life from 35.02 s on; the third strike at 37.02 s.
    assert_eq!(struck_at, Some(ms(37_020)));
}

#[test]
fn a_timed_out_probe_strikes_even_while_the_server_shows_life() {
    let mut m = ready_machine(config(1, 5));
    let _ = m.liveness_step(ms(500), 1, ms(500), 1);
    for at in [1000, 2000, 3000] {
        let _ = m.liveness_step(ms(at), 1, ms(at), at);
        m.handle_probe(
            ms(at),
            Generation(1),
            ProbeAnswer::TimedOut,
            &[],
            Traffic::default(),
        );
    }
    assert!(m.shows_life(ms(3000)));
    assert_eq!(restarts(&drain(&mut m)).len(), 1);
}

#[test]
fn the_life_of_the_current_generation_is_published() {
    let mut m = ready_machine(config(1, 5));
    let _ = m.liveness_step(ms(100), 1, ms(100), 3);
    let _ = m.liveness_step(ms(600), 1, ms(100), 4);
    assert!(drain(&mut m).contains(&Action::Life {
        generation: Generation(1),
        at: Some(ms(600))
    }));
    m.handle_progress(ms(700), Generation(1), ProgressReading::Counter(1), &[]);
    m.handle_progress(ms(1200), Generation(1), ProgressReading::Counter(5), &[]);
    assert!(drain(&mut m).contains(&Action::Life {
        generation: Generation(1),
        at: Some(ms(1200))
    }));
    m.handle_hang(
        ms(2000),
        Hang::new(Generation(1), HangCause::FirstByteTimeout),
        &[],
    );
    m.handle_restart_done(ms(2100), 0, false);
    assert!(drain(&mut m).contains(&Action::Life {
        generation: Generation(2),
        at: None
    }));
}

/// The stop mode of every restart the machine asks for in `actions`, with its cause.
fn stops(actions: &[Action]) -> Vec<(HangCause, StopMode)> {
    actions
        .iter()
        .filter_map(|a| match *a {
            Action::Restart { cause, stop, .. } => Some((cause, stop)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_hang_restart_kills_at_once_and_an_operator_restart_keeps_the_grace() {
    let hangs = [
        HangCause::HealthProbes,
        HangCause::FirstByteTimeout,
        HangCause::StreamStall,
        HangCause::ProgressStalled,
        HangCause::CanaryTimeout,
    ];
    for cause in hangs {
        let mut m = ready_machine(config(1, 5));
        m.handle_hang(ms(100), Hang::new(Generation(1), cause), &[]);
        assert_eq!(stops(&drain(&mut m)), [(cause, StopMode::Kill)], "{cause}");
    }
    for by in [OperatorRestart::Manual, OperatorRestart::Signal] {
        let mut m = ready_machine(config(1, 5));
        m.handle_operator_restart(ms(100), by);
        assert_eq!(
            stops(&drain(&mut m)),
            [(by.cause(), StopMode::Graceful)],
            "{by:?}"
        );
    }
}

#[test]
fn graceful_hang_stop_grants_the_grace_to_hangs_too() {
    let mut with_grace = config(1, 5);
    with_grace.core.graceful_hang_stop = true;
    let mut m = ready_machine(with_grace);
    m.handle_hang(
        ms(100),
        Hang::new(Generation(1), HangCause::HealthProbes),
        &[],
    );
    assert_eq!(
        stops(&drain(&mut m)),
        [(HangCause::HealthProbes, StopMode::Graceful)]
    );
}

#[test]
fn a_failed_restart_tried_again_keeps_the_stop_of_its_cause() {
    let mut m = ready_machine(config(2, 5));
    m.handle_operator_restart(ms(100), OperatorRestart::Manual);
    assert_eq!(
        stops(&drain(&mut m)),
        [(HangCause::Manual, StopMode::Graceful)]
    );
    // The first strategy failed: the second one is asked with the same stop.
    m.handle_restart_failed(ms(200), 0);
    assert_eq!(
        stops(&drain(&mut m)),
        [(HangCause::Manual, StopMode::Graceful)]
    );
}
