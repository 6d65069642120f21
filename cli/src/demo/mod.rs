//! `respawn demo`: respawn at work in one command, on the original design's story.
//!
//! A batch job sends 1,000 samples (8 at a time) to a model server that wedges twice, after
//! completion 400 and after completion 897: from then on every request and its `/health` hang
//! until the process is replaced. The demo runs `respawn mock` (this very executable) as a real
//! child under a [`Supervisor`] built exactly as `respawn serve` builds one, with respawn's
//! default detection settings, starts respawn's proxy in-process on a free loopback port, sends
//! the samples through it, and ends with a table: requests, succeeded, failed, wedges, restarts,
//! recovery time and wall time, next to what the same run costs the original design's way with no restart.
//!
//! It succeeds (exit code 0) only when every sample was answered and respawn restarted the
//! server exactly once per wedge.

mod load;
mod progress;
mod recoveries;
mod report;
mod wedge_plan;

use std::ffi::OsString;
use std::io::{IsTerminal as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use load::{sample_body, CLIENT_TIMEOUT};
pub use report::{human, median_and_max, NoRestart, Summary, ORIGINAL_TIMEOUT, ORIGINAL_TRIES};
pub use wedge_plan::WedgePlan;

use crate::config::ServeConfig;
use progress::Progress;
use recoveries::Recoveries;
use respawn::proxy::{self, Control, ProxySettings};
use respawn::supervisor::{Supervisor, Target};

/// How long the demo waits for the simulated server's first start.
const FIRST_START_BOUND: Duration = Duration::from_secs(60);

/// Options of `respawn demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Samples to send; the server's wedges are placed at 40 % and 89.7 % of them.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub requests: u64,

    /// Samples in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,

    /// Print one JSON object (requests, succeeded, failed, wedges, restarts, recovery_ms_median,
    /// recovery_ms_max, wall_s, no_restart_estimate_s) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Why `respawn demo` failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// respawn's own executable, which runs the simulated server, cannot be found.
    #[error("cannot find respawn's own executable to run the simulated server: {0}")]
    OwnExecutable(std::io::Error),
    /// A scratch directory for the simulated server's job ledger cannot be made.
    #[error("cannot create the scratch directory {path}: {source}")]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// No loopback port is free for the proxy or the simulated server.
    #[error("cannot get a free port on 127.0.0.1: {0}")]
    Port(std::io::Error),
    /// The demo's own configuration was rejected (a defect: please report it).
    #[error("the demo's configuration is invalid: {0}")]
    Config(String),
    /// The proxy or the supervisor could not start.
    #[error("cannot start respawn: {0}")]
    Start(String),
    /// The simulated server never became ready.
    #[error("the simulated server did not become ready: {0}")]
    NotReady(respawn::state::WaitError),
    /// The actix runtime failed.
    #[error("runtime error: {0}")]
    Runtime(std::io::Error),
    /// Some samples were not answered: respawn did not keep its promise.
    #[error("{failed} of {requests} samples failed (first: {first_error})")]
    SamplesFailed {
        /// Samples that failed.
        failed: u64,
        /// Samples sent.
        requests: u64,
        /// The first failure.
        first_error: String,
    },
    /// respawn did not restart exactly once per wedge.
    #[error("{restarts} restarts for {wedges} wedges (expected exactly one restart per wedge)")]
    RestartsPerWedge {
        /// Restarts made.
        restarts: u64,
        /// Wedges the server went through.
        wedges: u64,
    },
    /// The simulated server did not wedge as planned, so the demo showed less than it says.
    #[error(
        "the simulated server wedged {wedges} times instead of {planned} (its ledger: {ledger})"
    )]
    WedgesMissing {
        /// Wedges that happened.
        wedges: u64,
        /// Wedges planned.
        planned: u64,
        /// The ledger file that was read.
        ledger: PathBuf,
    },
}

impl DemoError {
    /// The process exit code: 1 when respawn did not keep its promise (samples failed, or not
    /// one restart per wedge), 3 when the simulated server could not be started, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            DemoError::NotReady(_) | DemoError::Start(_) => 3,
            _ => 1,
        }
    }
}

/// A scratch directory holding the simulated server's job ledger; removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Result<Self, DemoError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("respawn-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| DemoError::Scratch {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    fn ledger(&self) -> PathBuf {
        self.dir.join("ledger.json")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Wedges recorded in the simulated server's ledger (`fired_wedges`); 0 when it is unreadable.
fn wedges_in_ledger(path: &Path) -> u64 {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|value| value.get("fired_wedges")?.as_array().map(Vec::len))
        .map_or(0, |n| n as u64)
}

/// The `respawn serve` configuration the demo runs: the defaults, a free loopback listener, and
/// the simulated server with the plan's wedges.
fn serve_config(
    exe: &Path,
    plan: &WedgePlan,
    ledger: &Path,
    listen: SocketAddr,
    port: u16,
) -> Result<ServeConfig, DemoError> {
    let mut config = ServeConfig {
        name: "demo".to_owned(),
        listen,
        port: Some(port),
        workers: 1,
        ..ServeConfig::default()
    };
    let mut command = vec![
        exe.to_string_lossy().into_owned(),
        "mock".to_owned(),
        "--port".to_owned(),
        "{port}".to_owned(),
        "--state-file".to_owned(),
        ledger.to_string_lossy().into_owned(),
    ];
    if let Some(points) = plan.flag_value() {
        command.extend(["--wedge-after".to_owned(), points]);
    }
    config.command = command;
    config
        .validate()
        .map_err(|err| DemoError::Config(err.to_string()))?;
    Ok(config)
}

/// Runs `respawn demo`; returns the process exit code.
pub fn run(args: DemoArgs) -> Result<i32, DemoError> {
    let plan = WedgePlan::scaled(args.requests);
    let exe = std::env::current_exe().map_err(DemoError::OwnExecutable)?;
    let scratch = Scratch::new()?;
    let ledger = scratch.ledger();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(DemoError::Port)?;
    let listen = listener.local_addr().map_err(DemoError::Port)?;
    let port = crate::serve::free_port().map_err(DemoError::Port)?;
    let config = serve_config(&exe, &plan, &ledger, listen, port)?;
    let mut target =
        crate::serve::target(&config, port).map_err(|err| DemoError::Start(err.to_string()))?;
    if let Target::Command(spec) = &mut target {
        // The simulated server's routine info lines stay out of the demo's output.
        spec.env
            .push((OsString::from("RESPAWN_LOG"), OsString::from("warn")));
    }
    let supervisor_config = crate::serve::supervisor_config(&config);
    let progress = Progress::new(args.requests, std::io::stderr().is_terminal());
    let wedging = if plan.points.is_empty() {
        "that never wedges (too few samples for the story)".to_owned()
    } else {
        format!(
            "that wedges after completions {} (every request and its /health then hang)",
            plan.describe()
        )
    };
    progress.event(&format!(
        "respawn demo: {} samples, {} at a time, through respawn's proxy (http://{listen}) to a simulated \
         model server {wedging}",
        args.requests, args.concurrency,
    ));
    progress.event(&format!(
        "detection: respawn's defaults, a health probe every {} with a {} timeout, {} failures in a row mean a hang",
        humantime::format_duration(config.health_interval),
        humantime::format_duration(config.health_timeout),
        config.unhealthy_after
    ));

    let system = actix_web::rt::System::new();
    // The supervision runs on this thread: its routine info lines would bury the demo's own
    // lines, so they are shown only when RESPAWN_LOG asks for them.
    let measured = tracing::subscriber::with_default(demo_logs(), || {
        system.block_on(async {
            let supervisor = Supervisor::start_with(
                &crate::config::restart_strategies(),
                supervisor_config,
                target,
            )
            .map_err(|err| DemoError::Start(err.to_string()))?;
            let control = Control::of(&supervisor, None);
            let settings = ProxySettings {
                listen,
                workers: config.workers,
                max_body_size: config.max_body_size,
                header_timeout: config.header_timeout,
                shutdown_grace: Duration::from_secs(1),
                admission: proxy::Admission::unbounded(),
                drain: proxy::Drain::new(),
                return_free_memory: crate::allocator::return_free_memory,
            };
            let server = match proxy::serve(listener, &settings, &supervisor, control) {
                Ok(server) => server,
                Err(err) => {
                    supervisor.stop(config.stop_grace).await;
                    return Err(DemoError::Start(err.to_string()));
                }
            };
            let handle = server.handle();
            let server_task = actix_web::rt::spawn(server);
            let outcome = measure(&supervisor, &progress, &args, listen).await;
            handle.stop(false).await;
            supervisor.stop(config.stop_grace).await;
            let _ = server_task.await;
            outcome
        })
    });
    progress.finish();
    let measured = measured?;

    let wedges = wedges_in_ledger(&ledger);
    let (recovery_ms_median, recovery_ms_max) = median_and_max(&measured.recoveries);
    let no_restart = NoRestart::new(
        &plan,
        args.concurrency,
        measured.healthy_rate,
        measured.wall,
    );
    let summary = Summary {
        requests: args.requests,
        succeeded: measured.succeeded,
        failed: measured.failed,
        wedges,
        restarts: measured.restarts,
        recovery_ms_median,
        recovery_ms_max,
        wall_s: report::round_s(measured.wall),
        no_restart_estimate_s: report::round_s(no_restart.cost()),
    };
    {
        let mut out = std::io::stdout().lock();
        let written = if args.json {
            serde_json::to_string(&summary)
                .map_err(std::io::Error::other)
                .and_then(|text| writeln!(out, "{text}"))
        } else {
            writeln!(out).and_then(|()| {
                write!(
                    out,
                    "{}",
                    report::table(&summary, &no_restart, measured.load.slowest)
                )
            })
        };
        if let Err(err) = written {
            tracing::warn!(error = %err, "cannot write the demo's report to stdout");
        }
    }
    verdict(&summary, &plan, &ledger, measured.load.first_error)
}

/// The log subscriber for the demo's own thread: errors only, unless `RESPAWN_LOG` says otherwise.
fn demo_logs() -> impl tracing::Subscriber + Send + Sync {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RESPAWN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .finish()
}

/// Whether the run kept respawn's promise: every sample answered, one restart per wedge, and
/// every planned wedge happened.
fn verdict(
    summary: &Summary,
    plan: &WedgePlan,
    ledger: &Path,
    first_error: Option<String>,
) -> Result<i32, DemoError> {
    if summary.failed > 0 || summary.succeeded != summary.requests {
        return Err(DemoError::SamplesFailed {
            failed: summary.requests - summary.succeeded,
            requests: summary.requests,
            first_error: first_error.unwrap_or_else(|| "no error recorded".to_owned()),
        });
    }
    let planned = plan.points.len() as u64;
    if summary.wedges != planned {
        return Err(DemoError::WedgesMissing {
            wedges: summary.wedges,
            planned,
            ledger: ledger.to_owned(),
        });
    }
    if summary.restarts != summary.wedges {
        return Err(DemoError::RestartsPerWedge {
            restarts: summary.restarts,
            wedges: summary.wedges,
        });
    }
    Ok(0)
}

/// What one run measured.
struct Measured {
    load: load::LoadOutcome,
    succeeded: u64,
    failed: u64,
    restarts: u64,
    recoveries: Vec<u64>,
    wall: Duration,
    healthy_rate: Option<(u64, Duration)>,
}

async fn measure(
    supervisor: &Supervisor,
    progress: &Progress,
    args: &DemoArgs,
    listen: SocketAddr,
) -> Result<Measured, DemoError> {
    supervisor
        .wait_ready(FIRST_START_BOUND)
        .await
        .map_err(DemoError::NotReady)?;
    let recoveries = Recoveries::default();
    let started = progress.start_clock();
    let base_url = format!("http://{listen}");
    let load = {
        let drive = std::pin::pin!(load::drive(
            &base_url,
            args.requests,
            args.concurrency,
            progress
        ));
        let follow = std::pin::pin!(recoveries.follow(supervisor.state(), progress));
        match futures_util::future::select(drive, follow).await {
            futures_util::future::Either::Left((load, _)) => load,
            futures_util::future::Either::Right(((), drive)) => drive.await,
        }
    };
    let wall = started.elapsed();
    let state = supervisor.state().borrow().clone();
    recoveries.catch_up(&state);
    Ok(Measured {
        load,
        succeeded: progress.succeeded(),
        failed: progress.failed(),
        restarts: state.restarts,
        recoveries: recoveries.durations_ms(),
        wall,
        healthy_rate: progress.before_first_hang(),
    })
}
