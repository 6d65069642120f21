//! The clap surface of `serve`, `status` and `restart`, parsed as the binary parses it.

use std::time::Duration;

use clap::{CommandFactory, Parser};
use respawn_cli::cli::{RestartArgs, ServeArgs, StatusArgs};
use respawn_cli::config::{variable_for, KEYS};

#[derive(Parser, Debug)]
#[command(name = "respawn")]
enum Cli {
    Serve(Box<ServeArgs>),
    Status(StatusArgs),
    Restart(RestartArgs),
}

fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
    let argv = ["respawn", "serve"].iter().chain(args);
    match Cli::try_parse_from(argv)? {
        Cli::Serve(args) => Ok(*args),
        other => panic!("parsed as {other:?}"),
    }
}

fn serve_help() -> String {
    let mut cli = Cli::command();
    cli.build();
    cli.find_subcommand_mut("serve")
        .unwrap()
        .render_long_help()
        .to_string()
}

/// The flag of a key, where it has one (enable_restart is the original design's variable; the command
/// follows `--`).
fn flag_for(key: &str) -> Option<String> {
    match key {
        "enable_restart" | "command" => None,
        _ => Some(format!("--{}", key.replace('_', "-"))),
    }
}

#[test]
fn help_lists_every_option_with_its_environment_variable() {
    let help = serve_help();
    for key in KEYS {
        if let Some(flag) = flag_for(key) {
            assert!(
                help.contains(&flag),
                "`serve --help` does not list {flag}:\n{help}"
            );
        }
        if *key != "enable_restart" {
            let variable = variable_for(key);
            assert!(
                help.contains(&variable),
                "`serve --help` does not mention {variable}"
            );
        }
    }
    for extra in [
        "--config",
        "ENABLE_SERVER_RESTART",
        "SERVER_RESTART_WAIT_TIME",
        "COMMAND",
    ] {
        assert!(
            help.contains(extra),
            "`serve --help` does not mention {extra}"
        );
    }
}

#[test]
fn help_shows_the_defaults() {
    let help = serve_help();
    for default in [
        "[default: 127.0.0.1:8000]",
        "[default: a free one]",
        "[default: /health]",
        "[default: 1s]",
        "[default: 3]",
        "[default: 60s, the original design's]",
        "[default: 30s]",
        "[default: 10s]",
        "[default: 15s]",
        "[default: 600s]",
        "[default: 5s]",
        "[default: 5]",
        "[default: 10m]",
        "[default: 64MiB]",
        "[default: number of cores]",
        "[default: 2]",
        "[default: text]",
        "[default: server]",
        "0 = off",
    ] {
        assert!(
            help.contains(default),
            "`serve --help` does not show {default}:\n{help}"
        );
    }
}

#[test]
fn nothing_given_means_every_value_is_unset() {
    let args = serve(&["--", "model"]).unwrap();
    assert!(
        args.supervision.health_interval.is_none()
            && args.supervision.retries.is_none()
            && args.listen.is_none()
    );
    assert!(
        args.supervision.shell.is_none()
            && args.admin_token.is_none()
            && args.supervision.config.is_none()
    );
    assert_eq!(args.command, ["model"]);
}

#[test]
fn the_command_after_the_separator_is_kept_verbatim() {
    let args = serve(&[
        "--port", "8101", "--", "vllm", "serve", "m", "--port", "{port}",
    ])
    .unwrap();
    assert_eq!(args.supervision.port, Some(8101));
    assert_eq!(args.command, ["vllm", "serve", "m", "--port", "{port}"]);
}

#[test]
fn durations_and_sizes_are_parsed_by_clap() {
    let args = serve(&[
        "--health-interval",
        "500ms",
        "--canary-interval",
        "0",
        "--max-body-size",
        "10MB",
        "--",
        "m",
    ])
    .unwrap();
    assert_eq!(
        args.supervision.health_interval,
        Some(Duration::from_millis(500))
    );
    assert_eq!(args.supervision.canary_interval, Some(Duration::ZERO));
    assert_eq!(args.max_body_size, Some(10_000_000));
}

#[test]
fn a_bad_duration_is_a_usage_error_naming_the_option_and_value() {
    let err = serve(&["--health-interval", "10 parsecs", "--", "m"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    assert_eq!(err.exit_code(), 2);
    let text = err.to_string();
    assert!(
        text.contains("--health-interval") && text.contains("10 parsecs"),
        "{text}"
    );
    assert!(text.contains("expected e.g. 500ms, 10s, 2m"), "{text}");
}

#[test]
fn shell_is_a_switch_that_can_also_be_turned_off() {
    assert_eq!(
        serve(&["--shell", "--", "m"]).unwrap().supervision.shell,
        Some(true)
    );
    assert_eq!(
        serve(&["--shell=false", "--", "m"])
            .unwrap()
            .supervision
            .shell,
        Some(false)
    );
    assert_eq!(serve(&["--", "m"]).unwrap().supervision.shell, None);
}

#[test]
fn a_bad_token_flag_is_refused_without_echoing_it() {
    let err = serve(&["--admin-token", "has a space", "--", "m"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let text = err.to_string();
    assert!(
        text.contains("--admin-token") && !text.contains("has a space"),
        "{text}"
    );
    let args = serve(&["--admin-token", "s3cret", "--", "m"]).unwrap();
    assert_eq!(args.admin_token.as_ref().unwrap().expose(), "s3cret");
    assert!(
        !format!("{args:?}").contains("s3cret"),
        "Debug must not show the token"
    );
}

#[test]
fn port_zero_and_bad_listen_addresses_are_refused() {
    assert!(serve(&["--port", "0", "--", "m"]).is_err());
    let err = serve(&["--listen", "localhost:80", "--", "m"]).unwrap_err();
    assert!(err.to_string().contains("IP address"), "{err}");
}

#[test]
fn status_and_restart_default_to_the_local_instance() {
    let Cli::Status(status) = Cli::try_parse_from(["respawn", "status", "--json"]).unwrap() else {
        panic!()
    };
    assert_eq!(status.url, "http://127.0.0.1:8000");
    assert!(status.json);
    let Cli::Restart(restart) = Cli::try_parse_from([
        "respawn",
        "restart",
        "--url",
        "http://127.0.0.1:9",
        "--token",
        "t",
    ])
    .unwrap() else {
        panic!()
    };
    assert_eq!(restart.url, "http://127.0.0.1:9");
    assert_eq!(restart.token.unwrap().expose(), "t");
}

#[test]
fn restart_help_names_the_token_variable() {
    let mut cli = Cli::command();
    cli.build();
    let help = cli
        .find_subcommand_mut("restart")
        .unwrap()
        .render_long_help()
        .to_string();
    assert!(help.contains("RESPAWN_ADMIN_TOKEN"), "{help}");
}
