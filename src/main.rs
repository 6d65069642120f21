//! The `respawn` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keeps LLM inference servers answering: detects hangs, restarts the whole process tree, retries
/// the caught requests.
#[derive(Parser, Debug)]
#[command(name = "respawn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a simulated OpenAI-compatible model server with fault injection.
    Mock(respawn::mock::MockArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Mock(args) => match respawn::mock::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("respawn mock: {err}");
                ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(1))
            }
        },
    }
}
