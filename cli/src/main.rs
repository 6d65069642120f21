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

/// Logs go through a bounded queue to a writing thread (`respawn_cli::log_writer`): a stalled
/// reader of respawn's stderr costs dropped, counted lines, never a blocked supervisor.
fn init_logging_default(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RESPAWN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_target(false);
    match (respawn_cli::log_writer::install(), format) {
        (Ok(writer), LogFormat::Json) => builder.with_writer(writer).json().init(),
        (Ok(writer), LogFormat::Text) => builder.with_writer(writer).init(),
        (Err(_), LogFormat::Json) => builder.with_writer(std::io::stderr).json().init(),
        (Err(_), LogFormat::Text) => builder.with_writer(std::io::stderr).init(),
    }
}

/// Lets the queued log lines out before the process's last words on stderr.
fn flush_logs() {
    if let Ok(writer) = respawn_cli::log_writer::install() {
        writer.flush(std::time::Duration::from_secs(2));
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn main() -> ExitCode {
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

    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let env = |name: &str| std::env::var(name).ok();
            let config = match ServeConfig::load(&args, &env) {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("respawn serve: {err}");
                    return exit(err.exit_code());
                }
            };
            init_logging(config.log_format);
            let outcome = respawn_cli::serve::run(config);
            flush_logs();
            match outcome {
                Ok(outcome) => {
                    if let respawn_cli::serve::ServeExit::GaveUp { reason } = &outcome {
                        eprintln!("respawn serve: gave up: {reason}");
                    }
                    ExitCode::from(outcome.code())
                }
                Err(err) => {
                    eprintln!("respawn serve: {err}");
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
            match respawn_cli::control_client::restart(&args.url, args.token.as_ref()) {
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
                    eprintln!("respawn demo: {err}");
                    exit(err.exit_code())
                }
            }
        }
        Command::Batch(args) => {
            init_logging(LogFormat::Text);
            match respawn_cli::batch::run(*args) {
                Ok(code) => exit(code),
                Err(err) => {
                    eprintln!("respawn batch: {err}");
                    exit(err.exit_code())
                }
            }
        }
        Command::Mock(args) => {
            init_logging(LogFormat::Text);
            match respawn_mock::run(*args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("respawn mock: {err}");
                    exit(err.exit_code())
                }
            }
        }
    }
}
