//! Fault injection: which completions the mock serves, and when it wedges, deadlocks or crashes.
//!
//! Counting is by completions *started* (admitted), over the whole job when a state file is
//! given. A fault point `N` fires when a completion arrives after `N` were started and the point
//! has not fired before; the request that meets it is not counted (it never completes), so after
//! a restart the same request, retried, becomes completion `N + 1` and is served.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use parking_lot::Mutex;
use tracing::{error, warn};

use super::args::MockArgs;
use super::state_file::{self, Ledger};

const HEALTHY: u8 = 0;
const DEADLOCKED: u8 = 1;
const WEDGED: u8 = 2;
const ENGINE_DEAD: u8 = 3;

/// What to do with one completion request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Generate it; `ordinal` is its 1-based number in the job, `drop_stream` whether a streamed
    /// answer is cut after a few chunks.
    Serve {
        /// 1-based number of this completion in the job.
        ordinal: u64,
        /// Cut the stream midway.
        drop_stream: bool,
    },
    /// Answer 500 (`--error-rate`).
    Fail,
    /// The server is wedged or deadlocked: never answer.
    Hang,
    /// Exit the process with code 1 (`--crash-after`).
    Crash,
}

/// The fault plan and the live fault state, shared by every worker.
#[derive(Debug)]
pub(crate) struct Faults {
    wedge_after: Vec<u64>,
    crash_after: Vec<u64>,
    deadlock_after: Vec<u64>,
    engine_dead_after: Vec<u64>,
    wedge_on: Option<String>,
    error_rate: f64,
    drop_stream_rate: f64,
    seed: u64,
    draws: AtomicU64,
    mode: AtomicU8,
    ready: AtomicBool,
    ledger: Mutex<Ledger>,
    state_file: Option<PathBuf>,
}

impl Faults {
    /// The plan from the flags, with the ledger loaded from the state file (or fresh).
    pub(crate) fn new(args: &MockArgs, ledger: Ledger) -> Self {
        Self {
            wedge_after: args.wedge_after.clone(),
            crash_after: args.crash_after.clone(),
            deadlock_after: args.deadlock_after.clone(),
            engine_dead_after: args.engine_dead_after.clone(),
            wedge_on: args.wedge_on.clone().filter(|m| !m.is_empty()),
            error_rate: args.error_rate,
            drop_stream_rate: args.drop_stream_rate,
            seed: args.seed,
            draws: AtomicU64::new(0),
            mode: AtomicU8::new(HEALTHY),
            ready: AtomicBool::new(args.start_delay.map_or(true, |d| d.is_zero())),
            ledger: Mutex::new(ledger),
            state_file: args.state_file.clone(),
        }
    }

    /// Whether the simulated model has finished loading (`--start-delay`).
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The simulated model finished loading.
    pub(crate) fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the whole server is wedged (every request and /health hang).
    pub(crate) fn is_wedged(&self) -> bool {
        self.mode.load(Ordering::Acquire) == WEDGED
    }

    /// Whether the engine died (`--engine-dead-after`): /health answers 503 for good.
    pub(crate) fn is_engine_dead(&self) -> bool {
        self.mode.load(Ordering::Acquire) == ENGINE_DEAD
    }

    /// Whether generation has stopped (wedged, deadlocked or dead): in-flight completions stall.
    pub(crate) fn generation_stopped(&self) -> bool {
        self.mode.load(Ordering::Acquire) != HEALTHY
    }

    /// Never returns while the server is wedged (a wedge is forever, for this process).
    pub(crate) async fn hold_if_wedged(&self) {
        if self.is_wedged() {
            std::future::pending::<()>().await;
        }
    }

    /// Decides the fate of a completion request with this prompt.
    pub(crate) fn admit(&self, prompt: &str, streamed: bool) -> Admission {
        if self.generation_stopped() {
            return Admission::Hang;
        }
        if let Some(marker) = &self.wedge_on {
            if prompt.contains(marker.as_str()) {
                warn!("poison prompt received (contains the --wedge-on marker); the server wedges now");
                self.mode.store(WEDGED, Ordering::Release);
                return Admission::Hang;
            }
        }
        if self.error_rate > 0.0 && self.draw() < self.error_rate {
            return Admission::Fail;
        }
        let drop_stream =
            streamed && self.drop_stream_rate > 0.0 && self.draw() < self.drop_stream_rate;
        let mut ledger = self.ledger.lock();
        let done = ledger.completions;
        let decision = if let Some(point) = due(&self.crash_after, &ledger.fired_crashes, done) {
            ledger.fired_crashes.insert(point);
            error!(
                completions = done,
                "--crash-after {point} reached; exiting with code 1"
            );
            Admission::Crash
        } else if let Some(point) = due(&self.wedge_after, &ledger.fired_wedges, done) {
            ledger.fired_wedges.insert(point);
            warn!(
                completions = done,
                "--wedge-after {point} reached; every request and /health hang from now on"
            );
            self.mode.store(WEDGED, Ordering::Release);
            Admission::Hang
        } else if let Some(point) = due(&self.deadlock_after, &ledger.fired_deadlocks, done) {
            ledger.fired_deadlocks.insert(point);
            warn!(
                completions = done,
                "--deadlock-after {point} reached; completions hang, /health stays green"
            );
            self.mode.store(DEADLOCKED, Ordering::Release);
            Admission::Hang
        } else if let Some(point) = due(&self.engine_dead_after, &ledger.fired_dead_engines, done) {
            ledger.fired_dead_engines.insert(point);
            warn!(
                completions = done,
                "--engine-dead-after {point} reached; completions hang, /health answers 503"
            );
            self.mode.store(ENGINE_DEAD, Ordering::Release);
            Admission::Hang
        } else {
            ledger.completions += 1;
            Admission::Serve {
                ordinal: ledger.completions,
                drop_stream,
            }
        };
        if let Some(path) = &self.state_file {
            if let Err(err) = state_file::store(path, &ledger) {
                error!(%err, path = %path.display(), "cannot write the state file");
            }
        }
        decision
    }

    /// A uniform draw in [0, 1) from the seeded sequence (splitmix64).
    fn draw(&self) -> f64 {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        let mut z = self
            .seed
            .wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The smallest fault point reached (`point <= done`) that has not fired yet.
fn due(points: &[u64], fired: &std::collections::BTreeSet<u64>, done: u64) -> Option<u64> {
    points
        .iter()
        .copied()
        .filter(|p| *p <= done && !fired.contains(p))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: MockArgs,
    }

    fn faults(flags: &[&str], ledger: Ledger) -> Faults {
        let mut argv = vec!["mock", "--port", "1"];
        argv.extend_from_slice(flags);
        let parsed = Wrapper::try_parse_from(argv).unwrap();
        Faults::new(&parsed.args, ledger)
    }

    #[test]
    fn wedge_points_fire_once_across_ledgers() {
        let f = faults(&["--wedge-after", "2,4"], Ledger::default());
        assert!(matches!(
            f.admit("x", false),
            Admission::Serve { ordinal: 1, .. }
        ));
        assert!(matches!(
            f.admit("x", false),
            Admission::Serve { ordinal: 2, .. }
        ));
        assert_eq!(f.admit("x", false), Admission::Hang);
        assert!(f.is_wedged());
        let carried = f.ledger.lock().clone();
        assert_eq!(carried.completions, 2);
        let g = faults(&["--wedge-after", "2,4"], carried);
        assert!(matches!(
            g.admit("x", false),
            Admission::Serve { ordinal: 3, .. }
        ));
        assert!(matches!(
            g.admit("x", false),
            Admission::Serve { ordinal: 4, .. }
        ));
        assert_eq!(g.admit("x", false), Admission::Hang);
    }

    #[test]
    fn draws_are_uniformish_and_seeded() {
        let a = faults(&["--seed", "7"], Ledger::default());
        let b = faults(&["--seed", "7"], Ledger::default());
        let da: Vec<f64> = (0..1000).map(|_| a.draw()).collect();
        let db: Vec<f64> = (0..1000).map(|_| b.draw()).collect();
        assert_eq!(da, db);
        assert!(da.iter().all(|d| (0.0..1.0).contains(d)));
        let below_half = da.iter().filter(|d| **d < 0.5).count();
        assert!((350..650).contains(&below_half), "{below_half}");
    }

    #[test]
    fn a_dead_engine_stops_generation_without_wedging() {
        let f = faults(&["--engine-dead-after", "1"], Ledger::default());
        assert!(matches!(f.admit("x", false), Admission::Serve { .. }));
        assert_eq!(f.admit("x", false), Admission::Hang);
        assert!(f.is_engine_dead());
        assert!(f.generation_stopped());
        assert!(!f.is_wedged());
    }

    #[test]
    fn poison_prompt_wedges() {
        let f = faults(&["--wedge-on", "POISON"], Ledger::default());
        assert!(matches!(f.admit("fine", false), Admission::Serve { .. }));
        assert_eq!(f.admit("a POISON pill", false), Admission::Hang);
        assert_eq!(f.admit("fine", false), Admission::Hang);
    }
}
