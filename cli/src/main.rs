//! The `respawn` command line.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use respawn_cli::config::{LogFormat, ServeConfig};

/// Keeps LLM inference servers answering: detects hangs, kills and restarts the whole process
/// tree, and retries the requests that were caught.
#[derive(Parser, Debug)]
#[command(name = "respawn", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Supervise a model server and proxy clients to it: `respawn serve [OPTIONS] -- COMMAND [ARGS...]`.
    Serve(Box<respawn_cli::cli::ServeArgs>),
    /// Show the status of a running `respawn serve`.
    Status(respawn_cli::cli::StatusArgs),
    /// Ask a running `respawn serve` to restart its model server now.
    Restart(respawn_cli::cli::RestartArgs),
    /// Run a simulated OpenAI-compatible model server with fault injection.
    Mock(Box<respawn_mock::MockArgs>),
    /// Show respawn at work: a 1,000-sample run against a simulated server that wedges, and what it cost.
    Demo(respawn_cli::demo::DemoArgs),
    /// Run an OpenAI batch file (JSONL) against a supervised server, surviving hangs and respawn's own crash.
    Batch(Box<respawn_cli::batch::BatchArgs>),
}

/// Where the guardian mode is entered: `respawn __guardian -- PROGRAM ARGS...` leads the model
/// server's process group so that nothing in it outlives respawn (see `respawn_backends::guardian_main`).
const GUARDIAN_ARG: &str = "__guardian";

fn init_logging(format: LogFormat) {
    init_logging_default(format, "info");
}

/// Sets up respawn's logs on stderr, through a bounded queue to a writing thread
/// (`respawn_cli::log_writer`): a stalled reader of respawn's stderr costs dropped, counted lines,
/// never a blocked supervisor. With JSON every line respawn writes from here on is one JSON
/// object, a panic's message included; a second call changes nothing.
fn init_logging_default(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RESPAWN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let colour = format == LogFormat::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_target(false);
    let installed = match (respawn_cli::log_writer::install(), format) {
        (Ok(writer), LogFormat::Json) => builder.with_writer(writer).json().try_init().is_ok(),
        (Ok(writer), LogFormat::Text) => builder.with_writer(writer).try_init().is_ok(),
        (Err(_), LogFormat::Json) => builder
            .with_writer(std::io::stderr)
            .json()
            .try_init()
            .is_ok(),
        (Err(_), LogFormat::Text) => builder.with_writer(std::io::stderr).try_init().is_ok(),
    };
    if installed && format == LogFormat::Json {
        std::panic::set_hook(Box::new(|info| {
            tracing::error!(panic = %info, "respawn panicked");
            flush_logs();
        }));
    }
}

/// Lets the queued log lines out before the process's last words on stderr.
fn flush_logs() {
    if let Some(writer) = respawn_cli::log_writer::installed() {
        writer.flush(std::time::Duration::from_secs(2));
    }
}

/// Reports why a command ends: a plain `respawn CMD: message` line, or with JSON logs an error
/// record like every other line (the logs are set up for it if they were not yet).
fn report_end(format: LogFormat, command: &str, message: &dyn std::fmt::Display) {
    match format {
        LogFormat::Text => {
            flush_logs();
            eprintln!("respawn {command}: {message}");
        }
        LogFormat::Json => {
            init_logging(LogFormat::Json);
            tracing::error!(command, "{message}");
            flush_logs();
        }
    }
}

/// The log format asked for by `--log-format` among `args` (before a `--`), else by
/// `RESPAWN_LOG_FORMAT`: known before the configuration is, so that even an error in the
/// arguments or the configuration is written in it.
fn requested_log_format(args: &[OsString]) -> LogFormat {
    let mut words = args
        .iter()
        .map(|a| a.to_string_lossy())
        .take_while(|a| a != "--");
    let mut flag = None;
    while let Some(word) = words.next() {
        if word == "--log-format" {
            flag = words.next().map(|value| value.into_owned());
        } else if let Some(value) = word.strip_prefix("--log-format=") {
            flag = Some(value.to_owned());
        }
    }
    flag.or_else(|| std::env::var("RESPAWN_LOG_FORMAT").ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or_default()
}

/// Warns about `RESPAWN_*` variables that nothing reads (a typo would otherwise be silently
/// ignored), with the closest known one.
fn warn_unknown_environment() {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    for unknown in respawn_cli::config::unknown_variables(names.iter().map(String::as_str)) {
        tracing::warn!(
            variable = %unknown.name,
            did_you_mean = unknown.did_you_mean.as_deref(),
            "{unknown}"
        );
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn main() -> ExitCode {
    let code = run();
    // Lines still queued for the log writer are written before the process ends (a command's
    // last lines, such as a mock's "cleanup hook ran" before its restart exit, come right
    // before it).
    flush_logs();
    code
}

fn run() -> ExitCode {
    let mut args = std::env::args_os();
    let _program = args.next();
    let rest: Vec<OsString> = args.collect();
    if rest.first().is_some_and(|a| a == GUARDIAN_ARG) {
        return exit(respawn::backends::guardian_main(rest[1..].to_vec()));
    }
    // As PID 1 (a container's entrypoint) respawn runs itself under a minimal init: the guardian
    // reaps every orphaned zombie that reparents to PID 1 and forwards SIGTERM/SIGINT/SIGHUP,
    // while the supervisor runs as its child. RESPAWN_NO_INIT=1 turns this off.
    if std::process::id() == 1 && std::env::var_os("RESPAWN_NO_INIT").is_none() {
        if let Ok(me) = std::env::current_exe() {
            let mut argv = vec![OsString::from("--"), me.into_os_string()];
            argv.extend(rest);
            return exit(respawn::backends::guardian_main(argv));
        }
    }

    // First, before other threads allocate: large request bodies go back to the system when freed.
    let returns_memory = respawn_cli::resources::return_large_allocations();
    let requested = requested_log_format(&rest);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A usage error is one JSON line too when JSON logs were asked for; help and version
        // are printed as they are.
        Err(err) if err.use_stderr() && requested == LogFormat::Json => {
            let message = err.render().to_string();
            let command = rest
                .first()
                .map_or_else(|| "respawn".into(), |c| c.to_string_lossy());
            report_end(requested, &command, &message.trim_end());
            return exit(err.exit_code());
        }
        Err(err) => err.exit(),
    };
    match cli.command {
        Command::Serve(args) => {
            let env = |name: &str| std::env::var(name).ok();
            let config = match ServeConfig::load(&args, &env) {
                Ok(config) => config,
                Err(err) => {
                    report_end(requested, "serve", &err);
                    return exit(err.exit_code());
                }
            };
            let format = config.log_format;
            init_logging(format);
            warn_unknown_environment();
            if !returns_memory {
                tracing::debug!("the allocator's mmap threshold is left as it is: memory of large request bodies may stay resident after use");
            }
            let outcome = respawn_cli::serve::run(config);
            flush_logs();
            match outcome {
                Ok(outcome) => {
                    if let respawn_cli::serve::ServeExit::GaveUp { reason } = &outcome {
                        report_end(format, "serve", &format_args!("gave up: {reason}"));
                    }
                    ExitCode::from(outcome.code())
                }
                Err(err) => {
                    report_end(format, "serve", &err);
                    ExitCode::from(err.exit_code())
                }
            }
        }
        Command::Status(args) => match respawn_cli::control_client::status(&args.url, args.json) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("respawn status: {err}");
                exit(err.exit_code())
            }
        },
        Command::Restart(args) => {
            use respawn_cli::control_client::RestartWhich;
            let which = match (args.replica, args.rolling) {
                (Some(replica), _) => RestartWhich::Replica(replica),
                (None, true) => RestartWhich::Rolling,
                (None, false) => RestartWhich::Server,
            };
            match respawn_cli::control_client::restart_asking(&args.url, args.token.as_ref(), which)
            {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("respawn restart: {err}");
                    exit(err.exit_code())
                }
            }
        }
        Command::Demo(args) => {
            // The demo speaks through its progress bar and table; logs only for problems
            // (RESPAWN_LOG overrides, as everywhere).
            init_logging_default(LogFormat::Text, "warn");
            match respawn_cli::demo::run(args) {
                Ok(code) => exit(code),
                Err(err) => {
                    report_end(LogFormat::Text, "demo", &err);
                    exit(err.exit_code())
                }
            }
        }
        Command::Batch(args) => {
            init_logging(LogFormat::Text);
            warn_unknown_environment();
            match respawn_cli::batch::run(*args) {
                Ok(code) => exit(code),
                Err(err) => {
                    report_end(LogFormat::Text, "batch", &err);
                    exit(err.exit_code())
                }
            }
        }
        Command::Mock(args) => {
            init_logging(LogFormat::Text);
            match respawn_mock::run(*args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    report_end(LogFormat::Text, "mock", &err);
                    exit(err.exit_code())
                }
            }
        }
    }
}
