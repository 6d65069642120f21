//! respawn's own metrics, rendered in the Prometheus text format at `/respawn/metrics`.
//!
//! Plain atomics rather than a metrics framework: the request path touches two counters and a
//! gauge, and each costs one relaxed atomic add.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use respawn_core::{HangCause, Phase};

use crate::in_flight::{shard_of_this_thread, SHARDS};
use crate::state::SupervisorState;
use crate::waiting::{WaitBound, Waiting};

/// Upper bounds of the recovery-time histogram, in seconds.
const RECOVERY_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// How a cut stream's resumption ended, as the `outcome` label of
/// `respawn_streams_resumed_total`: `resumed`, `completed` (every token had been delivered; only
/// the end was sent), `failed` (the continuation could not be delivered), or why it was refused
/// ([`ResumeRefusal::label`](respawn_core::ResumeRefusal::label)).
pub const RESUME_OUTCOMES: [&str; 14] = [
    "resumed",
    "completed",
    "failed",
    "off",
    "not_a_cut",
    "refused_n",
    "refused_best_of",
    "refused_logprobs",
    "refused_echo",
    "refused_structured",
    "refused_tool_calls",
    "refused_reasoning",
    "partial_event",
    "limit_reached",
];

/// Why a request failed for good, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// No ready server within the wait bound, or the supervisor gave up.
    Unavailable,
    /// Retries ran out.
    RetriesExhausted,
    /// The response had already started when the server failed.
    Truncated,
    /// The request was quarantined as poison.
    Quarantined,
    /// The request body was too large.
    TooLarge,
    /// The request could not be forwarded (bad URL, bad headers).
    BadRequest,
    /// Every forward slot of the worker was taken (the open-file budget): refused with 503.
    Overloaded,
    /// respawn was shutting down: refused, or cut at the end of the grace.
    ShuttingDown,
    /// The server was not ready and as many requests (or body bytes) as allowed were waiting
    /// for it: refused with 503 (see [`crate::waiting`]).
    WaitingFull,
}

impl FailureClass {
    /// Every class, in label order.
    pub const ALL: [FailureClass; 9] = [
        FailureClass::Unavailable,
        FailureClass::RetriesExhausted,
        FailureClass::Truncated,
        FailureClass::Quarantined,
        FailureClass::TooLarge,
        FailureClass::BadRequest,
        FailureClass::Overloaded,
        FailureClass::ShuttingDown,
        FailureClass::WaitingFull,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureClass::Unavailable => "unavailable",
            FailureClass::RetriesExhausted => "retries_exhausted",
            FailureClass::Truncated => "truncated",
            FailureClass::Quarantined => "quarantined",
            FailureClass::TooLarge => "too_large",
            FailureClass::BadRequest => "bad_request",
            FailureClass::Overloaded => "overloaded",
            FailureClass::ShuttingDown => "shutting_down",
            FailureClass::WaitingFull => "waiting_full",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

const CAUSES: usize = HangCause::ALL.len();

fn cause_index(cause: HangCause) -> usize {
    HangCause::ALL.iter().position(|c| *c == cause).unwrap_or(0)
}

/// The count of log lines the process's log writer dropped because its reader (whatever reads
/// respawn's stderr) did not keep up.
///
/// Shared between the log writer, which counts, and [`Metrics`], which shows the count as
/// `respawn_log_lines_dropped_total`. Logging is process-wide, so one counter serves every
/// supervisor of the process; an embedder with a non-blocking writer of its own can count into
/// one too.
#[derive(Clone, Debug, Default)]
pub struct LogLinesDropped(Arc<AtomicU64>);

impl LogLinesDropped {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// `lines` more lines were dropped.
    pub fn add(&self, lines: u64) {
        self.0.fetch_add(lines, Ordering::Relaxed);
    }

    /// Lines dropped so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A counter on its own cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct PerThread(AtomicU64);

/// Counters shared by the proxy workers, the detectors and the coordinator.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Counted per thread (each worker on its own cache line), added up when read: every request
    /// counts itself, and the workers would otherwise pass one line back and forth.
    requests: [PerThread; SHARDS],
    retried: AtomicU64,
    failed: [AtomicU64; FailureClass::ALL.len()],
    hangs: [AtomicU64; CAUSES],
    restarts: [AtomicU64; CAUSES],
    recovery_buckets: [AtomicU64; RECOVERY_BUCKETS.len()],
    recovery_count: AtomicU64,
    recovery_sum_ms: AtomicU64,
    log_lines_dropped: LogLinesDropped,
    quarantines: AtomicU64,
    quarantine_releases: AtomicU64,
    waiting: Arc<Waiting>,
    streams_resumed: [AtomicU64; RESUME_OUTCOMES.len()],
}

impl Metrics {
    /// Counters at zero that show `dropped` as `respawn_log_lines_dropped_total`.
    pub fn with_log_lines_dropped(dropped: LogLinesDropped) -> Self {
        Self {
            log_lines_dropped: dropped,
            ..Self::default()
        }
    }

    /// The same counters, showing `waiting` (the requests waiting for a ready generation).
    pub fn with_waiting(self, waiting: Arc<Waiting>) -> Self {
        Self { waiting, ..self }
    }

    /// The requests waiting for a ready generation, and their bounds.
    pub fn waiting(&self) -> &Arc<Waiting> {
        &self.waiting
    }

    /// Log lines dropped so far because respawn's stderr was not read fast enough.
    pub fn log_lines_dropped(&self) -> u64 {
        self.log_lines_dropped.get()
    }

    /// A request arrived.
    pub fn request_started(&self) {
        self.requests[shard_of_this_thread()]
            .0
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Requests received so far.
    pub fn requests_total(&self) -> u64 {
        self.requests
            .iter()
            .map(|count| count.0.load(Ordering::Relaxed))
            .sum()
    }

    /// A request is being sent again.
    pub fn request_retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    /// A request failed for good.
    pub fn request_failed(&self, class: FailureClass) {
        self.failed[class.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests that failed for good, of one class.
    pub fn failed(&self, class: FailureClass) -> u64 {
        self.failed[class.index()].load(Ordering::Relaxed)
    }

    /// A detector reported a hang.
    pub fn hang_detected(&self, cause: HangCause) {
        self.hangs[cause_index(cause)].fetch_add(1, Ordering::Relaxed);
    }

    /// A restart began, for `cause`.
    pub fn restart_started(&self, cause: HangCause) {
        self.restarts[cause_index(cause)].fetch_add(1, Ordering::Relaxed);
    }

    /// Restarts so far, all causes.
    pub fn restarts_total(&self) -> u64 {
        self.restarts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// A cut stream's resumption ended with `outcome` (one of [`RESUME_OUTCOMES`]; another
    /// label is not counted).
    pub fn stream_resume(&self, outcome: &str) {
        if let Some(i) = RESUME_OUTCOMES.iter().position(|o| *o == outcome) {
            self.streams_resumed[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Cut streams whose resumption ended with `outcome`.
    pub fn streams_resumed(&self, outcome: &str) -> u64 {
        RESUME_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .map_or(0, |i| self.streams_resumed[i].load(Ordering::Relaxed))
    }

    /// A fingerprint was quarantined.
    pub fn quarantined(&self) {
        self.quarantines.fetch_add(1, Ordering::Relaxed);
    }

    /// An operator lifted `released` quarantines.
    pub fn quarantine_released(&self, released: usize) {
        let released = u64::try_from(released).unwrap_or(u64::MAX);
        self.quarantine_releases
            .fetch_add(released, Ordering::Relaxed);
    }

    /// A restart finished: the new generation is ready `took` after the hang was reported.
    pub fn recovered(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bucket, bound) in self.recovery_buckets.iter().zip(RECOVERY_BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.recovery_count.fetch_add(1, Ordering::Relaxed);
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.recovery_sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render(&self, server: &str, state: &SupervisorState, in_flight: usize) -> String {
        let mut out = String::with_capacity(4096);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP respawn_restarts_total Restarts of the model server, by cause."
        );
        let _ = writeln!(out, "# TYPE respawn_restarts_total counter");
        for (cause, counter) in HangCause::ALL.iter().zip(&self.restarts) {
            let _ = writeln!(
                out,
                "respawn_restarts_total{{server=\"{server}\",cause=\"{}\"}} {}",
                cause.as_str(),
                load(counter)
            );
        }
        let _ = writeln!(
            out,
            "# HELP respawn_hangs_detected_total Hang reports, by detector."
        );
        let _ = writeln!(out, "# TYPE respawn_hangs_detected_total counter");
        for (cause, counter) in HangCause::ALL.iter().zip(&self.hangs) {
            let _ = writeln!(
                out,
                "respawn_hangs_detected_total{{server=\"{server}\",detector=\"{}\"}} {}",
                cause.as_str(),
                load(counter)
            );
        }
        let _ = writeln!(
            out,
            "# HELP respawn_requests_total Requests received by the proxy."
        );
        let _ = writeln!(out, "# TYPE respawn_requests_total counter");
        let _ = writeln!(
            out,
            "respawn_requests_total{{server=\"{server}\"}} {}",
            self.requests_total()
        );
        let _ = writeln!(
            out,
            "# HELP respawn_requests_retried_total Attempts sent again after a failure."
        );
        let _ = writeln!(out, "# TYPE respawn_requests_retried_total counter");
        let _ = writeln!(
            out,
            "respawn_requests_retried_total{{server=\"{server}\"}} {}",
            load(&self.retried)
        );
        let _ = writeln!(
            out,
            "# HELP respawn_requests_failed_total Requests that failed for good, by reason."
        );
        let _ = writeln!(out, "# TYPE respawn_requests_failed_total counter");
        for class in FailureClass::ALL {
            let _ = writeln!(
                out,
                "respawn_requests_failed_total{{server=\"{server}\",reason=\"{}\"}} {}",
                class.as_str(),
                self.failed(class)
            );
        }
        let _ = writeln!(
            out,
            "# HELP respawn_quarantines_total Fingerprints quarantined (they hung the server on their own)."
        );
        let _ = writeln!(out, "# TYPE respawn_quarantines_total counter");
        let _ = writeln!(
            out,
            "respawn_quarantines_total{{server=\"{server}\"}} {}",
            self.quarantines.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP respawn_quarantine_releases_total Quarantines lifted by an operator."
        );
        let _ = writeln!(out, "# TYPE respawn_quarantine_releases_total counter");
        let _ = writeln!(
            out,
            "respawn_quarantine_releases_total{{server=\"{server}\"}} {}",
            self.quarantine_releases.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP respawn_streams_resumed_total Cut streams, by how their resumption ended."
        );
        let _ = writeln!(out, "# TYPE respawn_streams_resumed_total counter");
        for (outcome, count) in RESUME_OUTCOMES.iter().zip(&self.streams_resumed) {
            let _ = writeln!(
                out,
                "respawn_streams_resumed_total{{server=\"{server}\",outcome=\"{outcome}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP respawn_requests_in_flight Requests currently in flight."
        );
        let _ = writeln!(out, "# TYPE respawn_requests_in_flight gauge");
        let _ = writeln!(
            out,
            "respawn_requests_in_flight{{server=\"{server}\"}} {in_flight}"
        );
        let waiting = &self.waiting;
        let _ = writeln!(
            out,
            "# HELP respawn_requests_waiting Requests waiting for the model server to be ready (during a start or a restart)."
        );
        let _ = writeln!(out, "# TYPE respawn_requests_waiting gauge");
        let _ = writeln!(
            out,
            "respawn_requests_waiting{{server=\"{server}\"}} {}",
            waiting.requests()
        );
        let _ = writeln!(
            out,
            "# HELP respawn_requests_waiting_bytes Body bytes held by the requests waiting for the model server."
        );
        let _ = writeln!(out, "# TYPE respawn_requests_waiting_bytes gauge");
        let _ = writeln!(
            out,
            "respawn_requests_waiting_bytes{{server=\"{server}\"}} {}",
            waiting.bytes()
        );
        let _ = writeln!(
            out,
            "# HELP respawn_requests_waiting_refused_total Requests refused with 503 because waiting for the model server would pass a bound, by bound."
        );
        let _ = writeln!(out, "# TYPE respawn_requests_waiting_refused_total counter");
        for bound in WaitBound::ALL {
            let _ = writeln!(
                out,
                "respawn_requests_waiting_refused_total{{server=\"{server}\",bound=\"{}\"}} {}",
                bound.as_str(),
                waiting.refused(bound)
            );
        }
        let _ = writeln!(
            out,
            "# HELP respawn_recovery_seconds From a hang report to the new generation being ready."
        );
        let _ = writeln!(out, "# TYPE respawn_recovery_seconds histogram");
        for (bound, bucket) in RECOVERY_BUCKETS.iter().zip(&self.recovery_buckets) {
            let _ = writeln!(
                out,
                "respawn_recovery_seconds_bucket{{server=\"{server}\",le=\"{bound}\"}} {}",
                load(bucket)
            );
        }
        let count = load(&self.recovery_count);
        let _ = writeln!(
            out,
            "respawn_recovery_seconds_bucket{{server=\"{server}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "respawn_recovery_seconds_sum{{server=\"{server}\"}} {}",
            load(&self.recovery_sum_ms) as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "respawn_recovery_seconds_count{{server=\"{server}\"}} {count}"
        );
        let _ = writeln!(
            out,
            "# HELP respawn_upstream_up Whether the model server is ready (1) or not (0)."
        );
        let _ = writeln!(out, "# TYPE respawn_upstream_up gauge");
        let up = u8::from(state.phase == Phase::Ready);
        let _ = writeln!(out, "respawn_upstream_up{{server=\"{server}\"}} {up}");
        let _ = writeln!(
            out,
            "# HELP respawn_upstream_phase The supervisor's phase (1 for the current one)."
        );
        let _ = writeln!(out, "# TYPE respawn_upstream_phase gauge");
        for phase in Phase::ALL {
            let _ = writeln!(
                out,
                "respawn_upstream_phase{{server=\"{server}\",phase=\"{}\"}} {}",
                phase.as_str(),
                u8::from(state.phase == phase)
            );
        }
        let _ = writeln!(
            out,
            "# HELP respawn_upstream_generation The current generation of the model server."
        );
        let _ = writeln!(out, "# TYPE respawn_upstream_generation gauge");
        let _ = writeln!(
            out,
            "respawn_upstream_generation{{server=\"{server}\"}} {}",
            state.generation.get()
        );
        let _ = writeln!(
            out,
            "# HELP respawn_log_lines_dropped_total Log lines dropped because respawn's stderr was not read fast enough."
        );
        let _ = writeln!(out, "# TYPE respawn_log_lines_dropped_total counter");
        let _ = writeln!(
            out,
            "respawn_log_lines_dropped_total{{server=\"{server}\"}} {}",
            self.log_lines_dropped()
        );
        let _ = writeln!(
            out,
            "# HELP respawn_paused_seconds_total Time respawn did not run (the machine or the process was paused), left out of every deadline."
        );
        let _ = writeln!(out, "# TYPE respawn_paused_seconds_total counter");
        let _ = writeln!(
            out,
            "respawn_paused_seconds_total{{server=\"{server}\"}} {:.3}",
            crate::clock::paused().as_secs_f64()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_restarts_by_cause_and_recovery_buckets() {
        let metrics = Metrics::default();
        metrics.restart_started(HangCause::HealthProbes);
        metrics.restart_started(HangCause::HealthProbes);
        metrics.restart_started(HangCause::Exited);
        metrics.recovered(Duration::from_millis(300));
        let text = metrics.render("llm", &SupervisorState::initial(), 0);
        assert!(text.contains("respawn_restarts_total{server=\"llm\",cause=\"health_probes\"} 2"));
        assert!(text.contains("respawn_restarts_total{server=\"llm\",cause=\"exited\"} 1"));
        assert!(text.contains("respawn_recovery_seconds_bucket{server=\"llm\",le=\"0.25\"} 0"));
        assert!(text.contains("respawn_recovery_seconds_bucket{server=\"llm\",le=\"0.5\"} 1"));
        assert!(text.contains("respawn_recovery_seconds_count{server=\"llm\"} 1"));
        assert_eq!(metrics.restarts_total(), 3);
    }

    #[test]
    fn dropped_log_lines_are_shown_from_the_shared_counter() {
        let dropped = LogLinesDropped::new();
        let metrics = Metrics::with_log_lines_dropped(dropped.clone());
        dropped.add(41);
        dropped.add(1);
        let text = metrics.render("llm", &SupervisorState::initial(), 0);
        assert!(
            text.contains("respawn_log_lines_dropped_total{server=\"llm\"} 42"),
            "{text}"
        );
        let fresh = Metrics::default().render("llm", &SupervisorState::initial(), 0);
        assert!(fresh.contains("respawn_log_lines_dropped_total{server=\"llm\"} 0"));
    }

    #[test]
    fn failures_are_counted_by_class() {
        let metrics = Metrics::default();
        metrics.request_started();
        metrics.request_started();
        metrics.request_failed(FailureClass::Truncated);
        assert_eq!(metrics.requests_total(), 2);
        assert_eq!(metrics.failed(FailureClass::Truncated), 1);
        assert_eq!(metrics.failed(FailureClass::Unavailable), 0);
        let text = metrics.render("llm", &SupervisorState::initial(), 3);
        assert!(text.contains("respawn_requests_in_flight{server=\"llm\"} 3"));
        assert!(
            text.contains("respawn_requests_failed_total{server=\"llm\",reason=\"truncated\"} 1")
        );
    }

    #[test]
    fn waiting_requests_and_their_refusals_are_shown() {
        let waiting = Waiting::new(crate::waiting::WaitLimits {
            max_requests: 1,
            max_bytes: 100,
            max_time: None,
        });
        let metrics = Metrics::default().with_waiting(Arc::clone(&waiting));
        let _place = waiting.try_enter(42).expect("a place");
        assert!(waiting.try_enter(1).is_err());
        waiting.refuse(WaitBound::Time);
        let text = metrics.render("llm", &SupervisorState::initial(), 0);
        for line in [
            "respawn_requests_waiting{server=\"llm\"} 1",
            "respawn_requests_waiting_bytes{server=\"llm\"} 42",
            "respawn_requests_waiting_refused_total{server=\"llm\",bound=\"requests\"} 1",
            "respawn_requests_waiting_refused_total{server=\"llm\",bound=\"bytes\"} 0",
            "respawn_requests_waiting_refused_total{server=\"llm\",bound=\"time\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
