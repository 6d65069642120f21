//! What the demo prints at the end: the figures of the run (a table for people, one JSON object
//! for scripts), next to what the same run costs the original design's way, with no restart.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::wedge_plan::WedgePlan;

/// The original design's request timeout.
pub const ORIGINAL_TIMEOUT: Duration = Duration::from_secs(60);
/// The original design's tries per request (the first and 3 retries).
pub const ORIGINAL_TRIES: u64 = 4;

/// The figures of one demo run; serialises to exactly the documented keys of `--json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Samples sent.
    pub requests: u64,
    /// Samples answered with a completion.
    pub succeeded: u64,
    /// Samples that ended in an error.
    pub failed: u64,
    /// Wedges the simulated server went through (read from its job ledger).
    pub wedges: u64,
    /// Restarts respawn made.
    pub restarts: u64,
    /// Median time of a restart, from the hang report to the new server being ready (ms).
    pub recovery_ms_median: Option<u64>,
    /// Longest restart (ms).
    pub recovery_ms_max: Option<u64>,
    /// Wall time of the run, in seconds.
    pub wall_s: f64,
    /// What the same run costs the original design's way with no restart, in seconds (see [`NoRestart`]).
    pub no_restart_estimate_s: f64,
}

/// The original design's way with no restart, defined precisely: once the server wedges it never answers
/// again, so every sample from the first wedge on times out on each of its 4 tries (60 s each),
/// with the same concurrency as this run. Its cost is the time this run took to complete the
/// samples before the first wedge, plus `ceil(stuck / concurrency) × 60 s × 4`.
#[derive(Clone, Debug, PartialEq)]
pub struct NoRestart {
    /// Samples answered before the first wedge.
    pub answered: u64,
    /// Samples that never get an answer.
    pub stuck: u64,
    /// Samples in flight at once.
    pub concurrency: u64,
    /// Time this run took to answer the samples before the first wedge.
    pub healthy: Duration,
}

impl NoRestart {
    /// The original design's way for `plan` with `concurrency` samples at a time. The samples before the
    /// first wedge take as long as they did in this run: `before_first_hang` is how many this run
    /// had answered when the server first stopped answering, and how long they took (scaled to the
    /// plan's first wedge); without it, the run's `wall` time pro rata.
    pub fn new(
        plan: &WedgePlan,
        concurrency: u64,
        before_first_hang: Option<(u64, Duration)>,
        wall: Duration,
    ) -> Self {
        let answered = plan.first().unwrap_or(plan.requests);
        let (count, took) = match before_first_hang {
            Some((count, took)) if count > 0 => (count, took),
            _ => (plan.requests.max(1), wall),
        };
        let healthy = took.mul_f64(answered as f64 / count as f64);
        Self {
            answered,
            stuck: plan.requests - answered,
            concurrency: concurrency.max(1),
            healthy,
        }
    }

    /// Rounds of stuck samples, `concurrency` at a time.
    pub fn stuck_rounds(&self) -> u64 {
        self.stuck.div_ceil(self.concurrency)
    }

    /// The estimated cost.
    pub fn cost(&self) -> Duration {
        let per_sample =
            ORIGINAL_TIMEOUT.saturating_mul(u32::try_from(ORIGINAL_TRIES).unwrap_or(u32::MAX));
        let rounds = u32::try_from(self.stuck_rounds()).unwrap_or(u32::MAX);
        self.healthy + per_sample.saturating_mul(rounds)
    }

    /// The formula with this run's numbers, for the table's footnote.
    pub fn formula(&self) -> String {
        format!(
            "{healthy:.1} s (the first {answered} samples, at this run's rate before the first wedge) + ceil({stuck} stuck / {c} at a time) \
             × {timeout} s timeout × {tries} tries = {total:.1} s",
            healthy = self.healthy.as_secs_f64(),
            answered = self.answered,
            stuck = self.stuck,
            c = self.concurrency,
            timeout = ORIGINAL_TIMEOUT.as_secs(),
            tries = ORIGINAL_TRIES,
            total = self.cost().as_secs_f64(),
        )
    }
}

/// The median and the largest of restart durations, in milliseconds.
pub fn median_and_max(durations_ms: &[u64]) -> (Option<u64>, Option<u64>) {
    let mut sorted = durations_ms.to_vec();
    sorted.sort_unstable();
    let median = match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    };
    (median, sorted.last().copied())
}

/// Seconds rounded to hundredths, so that the JSON does not show float noise.
pub fn round_s(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 100.0).round() / 100.0
}

/// A duration for people: `850 ms`, `12.3 s`, `2 min 5 s`, `5 h 0 min`.
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 1.0 {
        format!("{} ms", duration.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        let whole = duration.as_secs();
        format!("{} min {} s", whole / 60, whole % 60)
    } else {
        let whole = duration.as_secs();
        format!("{} h {} min", whole / 3600, (whole % 3600) / 60)
    }
}

fn ms(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| human(Duration::from_millis(v)))
}

/// The closing table: this run next to the original design's way with no restart, and the formula.
pub fn table(summary: &Summary, no_restart: &NoRestart, slowest_request: Duration) -> String {
    let never = "-".to_owned();
    let rows: [(&str, String, String); 9] = [
        (
            "requests",
            summary.requests.to_string(),
            summary.requests.to_string(),
        ),
        (
            "succeeded",
            summary.succeeded.to_string(),
            no_restart.answered.to_string(),
        ),
        (
            "failed",
            summary.failed.to_string(),
            no_restart.stuck.to_string(),
        ),
        (
            "wedges",
            summary.wedges.to_string(),
            if no_restart.stuck > 0 {
                "1, never cleared".to_owned()
            } else {
                "0".to_owned()
            },
        ),
        ("restarts", summary.restarts.to_string(), "0".to_owned()),
        (
            "recovery (median)",
            ms(summary.recovery_ms_median),
            never.clone(),
        ),
        ("recovery (max)", ms(summary.recovery_ms_max), never.clone()),
        (
            "slowest request",
            human(slowest_request),
            human(no_restart_per_sample()),
        ),
        (
            "wall time",
            human(Duration::from_secs_f64(summary.wall_s)),
            human(no_restart.cost()),
        ),
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20}{:>16}   the original design's way, no restart",
        "", "with respawn"
    );
    for (name, ours, original) in rows {
        let _ = writeln!(out, "{name:<20}{ours:>16}   {original}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "recovery: from the hang report to the new server answering its health check (respawn's status: last_restart.duration_ms)."
    );
    let _ = writeln!(
        out,
        "the original design's way, no restart: the server stays wedged from the first wedge on, so every later sample times out on all of its {ORIGINAL_TRIES} tries:"
    );
    let _ = writeln!(out, "  {}", no_restart.formula());
    out
}

fn no_restart_per_sample() -> Duration {
    ORIGINAL_TIMEOUT.saturating_mul(u32::try_from(ORIGINAL_TRIES).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            requests: 1000,
            succeeded: 1000,
            failed: 0,
            wedges: 2,
            restarts: 2,
            recovery_ms_median: Some(1200),
            recovery_ms_max: Some(1400),
            wall_s: 14.25,
            no_restart_estimate_s: 18005.3,
        }
    }

    #[test]
    fn json_has_exactly_the_documented_keys() {
        let value = serde_json::to_value(summary()).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "failed",
                "no_restart_estimate_s",
                "recovery_ms_max",
                "recovery_ms_median",
                "requests",
                "restarts",
                "succeeded",
                "wall_s",
                "wedges"
            ]
        );
    }

    #[test]
    fn the_original_designs_cost_follows_the_formula() {
        let plan = WedgePlan::scaled(1000);
        let original = NoRestart::new(
            &plan,
            8,
            Some((200, Duration::from_millis(2500))),
            Duration::from_secs(20),
        );
        assert_eq!(original.healthy, Duration::from_secs(5));
        assert_eq!(original.answered, 400);
        assert_eq!(original.stuck, 600);
        assert_eq!(original.stuck_rounds(), 75);
        assert_eq!(original.cost(), Duration::from_secs(5 + 75 * 240));
        assert!(
            original.formula().contains("ceil(600 stuck / 8 at a time)"),
            "{}",
            original.formula()
        );
        let sequential =
            NoRestart::new(&plan, 1, Some((10, Duration::ZERO)), Duration::from_secs(9));
        assert_eq!(sequential.cost(), Duration::from_secs(600 * 240));
        let rounded_up = NoRestart::new(&WedgePlan::scaled(10), 3, None, Duration::ZERO);
        assert_eq!(rounded_up.stuck, 6);
        assert_eq!(rounded_up.stuck_rounds(), 2);
    }

    #[test]
    fn without_wedges_nothing_is_stuck() {
        let original = NoRestart::new(&WedgePlan::scaled(1), 8, None, Duration::from_millis(300));
        assert_eq!(original.stuck, 0);
        assert_eq!(original.cost(), Duration::from_millis(300));
    }

    #[test]
    fn medians() {
        assert_eq!(median_and_max(&[]), (None, None));
        assert_eq!(median_and_max(&[7]), (Some(7), Some(7)));
        assert_eq!(median_and_max(&[9, 1, 5]), (Some(5), Some(9)));
        assert_eq!(median_and_max(&[4, 1, 3, 2]), (Some(2), Some(4)));
    }

    #[test]
    fn the_table_shows_both_ways_and_the_formula() {
        let plan = WedgePlan::scaled(1000);
        let original = NoRestart::new(&plan, 8, None, Duration::from_secs(12));
        let text = table(&summary(), &original, Duration::from_millis(4500));
        assert!(text.contains("with respawn"), "{text}");
        assert!(
            text.contains("the original design's way, no restart"),
            "{text}"
        );
        assert!(text.contains("1.2 s"), "{text}");
        assert!(text.contains("5 h 0 min"), "{text}");
        assert!(text.contains("× 60 s timeout × 4 tries"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(850)), "850 ms");
        assert_eq!(human(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(human(Duration::from_secs(125)), "2 min 5 s");
        assert_eq!(human(Duration::from_secs(18_005)), "5 h 0 min");
    }
}
