//! `ServeConfig::load`: the four layers (flags > environment > file > defaults), the original design's
//! variables, and the checks across fields.

use std::path::{Path, PathBuf};
use std::time::Duration;

use respawn::auth::AdminToken;
use respawn_cli::cli::{ServeArgs, SupervisionArgs};
use respawn_cli::config::{ConfigError, HangStop, LogFormat, ProgressMetric, ServeConfig};

/// A config file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    /// `label` must be unique among the tests of this file, which run in parallel.
    fn new(label: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "respawn-config-load-{}-{label}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An environment made of these variables only.
fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Flags with a command, the minimum `serve` accepts.
fn with_command() -> ServeArgs {
    ServeArgs {
        command: vec!["model-server".into(), "--port".into(), "{port}".into()],
        ..ServeArgs::default()
    }
}

fn load(args: &ServeArgs, env: &dyn Fn(&str) -> Option<String>) -> ServeConfig {
    ServeConfig::load(args, env).unwrap_or_else(|err| panic!("load failed: {err}"))
}

#[test]
fn defaults_are_the_documented_ones() {
    let config = load(&with_command(), &no_env);
    assert_eq!(config.name, "server");
    assert_eq!(config.listen.to_string(), "127.0.0.1:8000");
    assert_eq!(config.port, None);
    assert_eq!(config.health_path, "/health");
    assert_eq!(config.health_interval, Duration::from_secs(1));
    assert_eq!(config.health_timeout, Duration::from_secs(1));
    assert_eq!(config.unhealthy_after, 3);
    assert_eq!(config.request_timeout, Duration::from_secs(60));
    assert_eq!(config.stall_timeout, Duration::from_secs(30));
    assert_eq!(config.canary_interval, Duration::from_secs(10));
    assert_eq!(config.canary_timeout, Duration::from_secs(10));
    assert_eq!(config.canary_body, None);
    assert_eq!(config.progress_metric, ProgressMetric::Auto);
    assert_eq!(config.progress_timeout, Duration::from_secs(15));
    assert_eq!(config.startup_timeout, Duration::from_secs(600));
    assert_eq!(config.stop_grace, Duration::from_secs(5));
    assert_eq!(config.max_restarts, 5);
    assert_eq!(config.restart_window, Duration::from_secs(600));
    assert_eq!(config.retries, 3);
    assert!(config.admin_token.is_none() && !config.admin_token_from_flag);
    assert!(config.enable_restart);
    assert_eq!(config.max_body_size, 64 * 1024 * 1024);
    assert_eq!(config.header_timeout, Duration::from_secs(5));
    assert_eq!(
        config.workers,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    assert_eq!(config.poison_after, 2);
    assert!(!config.shell);
    assert_eq!(config.upstream, None);
    assert_eq!(config.restart_command, None);
    assert_eq!(config.log_format, LogFormat::Text);
}

#[test]
fn each_layer_beats_the_one_below_for_a_duration() {
    let file = TempFile::new("f1", "command = [\"m\"]\nhealth_interval = \"3s\"\n");
    let env = env_of(&[("RESPAWN_HEALTH_INTERVAL", "2s")]);
    let flag = ServeArgs {
        supervision: SupervisionArgs {
            config: Some(file.path().to_owned()),
            health_interval: Some(Duration::from_millis(1500)),
            ..SupervisionArgs::default()
        },
        ..ServeArgs::default()
    };
    assert_eq!(
        load(&flag, &env).health_interval,
        Duration::from_millis(1500),
        "flag beats env"
    );
    let no_flag = ServeArgs {
        supervision: SupervisionArgs {
            health_interval: None,
            ..flag.supervision.clone()
        },
        ..flag.clone()
    };
    assert_eq!(
        load(&no_flag, &env).health_interval,
        Duration::from_secs(2),
        "env beats file"
    );
    assert_eq!(
        load(&no_flag, &no_env).health_interval,
        Duration::from_secs(3),
        "file beats default"
    );
    let nothing = ServeArgs {
        supervision: SupervisionArgs {
            config: None,
            ..SupervisionArgs::default()
        },
        ..with_command()
    };
    assert_eq!(
        load(&nothing, &no_env).health_interval,
        Duration::from_secs(1),
        "the default"
    );
}

#[test]
fn each_layer_beats_the_one_below_for_counts_and_text() {
    let file = TempFile::new(
        "f2",
        "command = \"m\"\nretries = 7\nhealth_path = \"/file\"\nname = \"file\"\n",
    );
    let env = env_of(&[("RESPAWN_RETRIES", "5"), ("RESPAWN_HEALTH_PATH", "/env")]);
    let args = ServeArgs {
        supervision: SupervisionArgs {
            config: Some(file.path().to_owned()),
            retries: Some(1),
            ..SupervisionArgs::default()
        },
        ..ServeArgs::default()
    };
    let config = load(&args, &env);
    assert_eq!(config.retries, 1, "flag beats env and file");
    assert_eq!(config.health_path, "/env", "env beats file");
    assert_eq!(config.name, "file", "file beats default");
}

#[test]
fn the_file_can_be_named_by_the_environment_and_the_flag_wins() {
    let from_env = TempFile::new("f3", "command = [\"m\"]\nretries = 4\n");
    let from_flag = TempFile::new("f4", "command = [\"m\"]\nretries = 9\n");
    let path = from_env.path().to_str().unwrap();
    let env = env_of(&[("RESPAWN_CONFIG", path)]);
    assert_eq!(load(&ServeArgs::default(), &env).retries, 4);
    let args = ServeArgs {
        supervision: SupervisionArgs {
            config: Some(from_flag.path().to_owned()),
            ..SupervisionArgs::default()
        },
        ..ServeArgs::default()
    };
    assert_eq!(load(&args, &env).retries, 9);
}

#[test]
fn a_missing_file_is_named() {
    let args = ServeArgs {
        supervision: SupervisionArgs {
            config: Some("/nonexistent/respawn.toml".into()),
            ..SupervisionArgs::default()
        },
        ..with_command()
    };
    let err = ServeConfig::load(&args, &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::ReadFile { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot read config file /nonexistent/respawn.toml: "),
        "{err}"
    );
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn the_seed_wait_time_sets_the_startup_timeout_in_seconds() {
    let env = env_of(&[("SERVER_RESTART_WAIT_TIME", "900")]);
    assert_eq!(
        load(&with_command(), &env).startup_timeout,
        Duration::from_secs(900)
    );

    let both = env_of(&[
        ("SERVER_RESTART_WAIT_TIME", "900"),
        ("RESPAWN_STARTUP_TIMEOUT", "2m"),
    ]);
    assert_eq!(
        load(&with_command(), &both).startup_timeout,
        Duration::from_secs(120),
        "our variable wins"
    );

    let flag = ServeArgs {
        supervision: SupervisionArgs {
            startup_timeout: Some(Duration::from_secs(30)),
            ..SupervisionArgs::default()
        },
        ..with_command()
    };
    assert_eq!(
        load(&flag, &both).startup_timeout,
        Duration::from_secs(30),
        "the flag wins over both"
    );

    let bad = env_of(&[("SERVER_RESTART_WAIT_TIME", "ten minutes")]);
    let err = ServeConfig::load(&with_command(), &bad).unwrap_err();
    assert!(
        matches!(&err, ConfigError::BadDuration { option, value, .. }
        if option == "SERVER_RESTART_WAIT_TIME" && value == "ten minutes"),
        "{err:?}"
    );
}

#[test]
fn the_seed_restart_switch_reads_every_boolean_form() {
    for (text, expected) in [
        ("false", false),
        ("0", false),
        ("no", false),
        ("FALSE", false),
        ("true", true),
        ("1", true),
        ("yes", true),
    ] {
        let env = env_of(&[("ENABLE_SERVER_RESTART", text)]);
        assert_eq!(
            load(&with_command(), &env).enable_restart,
            expected,
            "ENABLE_SERVER_RESTART={text}"
        );
    }
    let both = env_of(&[
        ("ENABLE_SERVER_RESTART", "false"),
        ("RESPAWN_ENABLE_RESTART", "true"),
    ]);
    assert!(
        load(&with_command(), &both).enable_restart,
        "RESPAWN_ENABLE_RESTART wins"
    );

    let bad = env_of(&[("ENABLE_SERVER_RESTART", "maybe")]);
    let err = ServeConfig::load(&with_command(), &bad).unwrap_err();
    assert!(
        err.to_string().contains("ENABLE_SERVER_RESTART") && err.to_string().contains("maybe"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn an_empty_variable_counts_as_unset() {
    let env = env_of(&[
        ("RESPAWN_HEALTH_INTERVAL", ""),
        ("ENABLE_SERVER_RESTART", "  "),
    ]);
    let config = load(&with_command(), &env);
    assert_eq!(config.health_interval, Duration::from_secs(1));
    assert!(config.enable_restart);
}

#[test]
fn a_bad_duration_in_the_environment_names_the_variable_and_the_value() {
    let env = env_of(&[("RESPAWN_HEALTH_INTERVAL", "10 parsecs")]);
    let err = ServeConfig::load(&with_command(), &env).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("invalid duration for RESPAWN_HEALTH_INTERVAL: `10 parsecs` (")
            && text.contains("expected e.g. 500ms, 10s, 2m"),
        "{text}"
    );
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn sizes_are_read_with_units_from_every_layer() {
    let file = TempFile::new("f5", "command = [\"m\"]\nmax_body_size = \"10MB\"\n");
    let args = ServeArgs {
        supervision: SupervisionArgs {
            config: Some(file.path().to_owned()),
            ..SupervisionArgs::default()
        },
        ..ServeArgs::default()
    };
    assert_eq!(load(&args, &no_env).max_body_size, 10_000_000);
    let env = env_of(&[("RESPAWN_MAX_BODY_SIZE", "1048576")]);
    assert_eq!(load(&args, &env).max_body_size, 1 << 20);
    let flag = ServeArgs {
        max_body_size: Some(64 << 20),
        ..args.clone()
    };
    assert_eq!(load(&flag, &env).max_body_size, 64 << 20);
    let bad = env_of(&[("RESPAWN_MAX_BODY_SIZE", "12 parsecs")]);
    let err = ServeConfig::load(&args, &bad).unwrap_err();
    assert!(err.to_string().contains("RESPAWN_MAX_BODY_SIZE"), "{err}");
}

#[test]
fn the_waiting_bounds_come_from_every_layer_and_default_to_a_whole_restart() {
    let defaults = load(&with_command(), &no_env);
    assert_eq!(
        (
            defaults.max_waiting,
            defaults.max_waiting_bytes,
            defaults.max_wait_time
        ),
        (1024, 256 << 20, None)
    );
    let limits = defaults.wait_limits();
    assert_eq!(limits, respawn::waiting::WaitLimits::default());

    let file = TempFile::new(
        "wait",
        "command = [\"m\"]\nmax_waiting = 7\nmax_waiting_bytes = \"1MiB\"\nmax_wait_time = \"90s\"\n",
    );
    let args = ServeArgs {
        supervision: SupervisionArgs {
            config: Some(file.path().to_owned()),
            ..SupervisionArgs::default()
        },
        ..ServeArgs::default()
    };
    let from_file = load(&args, &no_env);
    assert_eq!(
        (
            from_file.max_waiting,
            from_file.max_waiting_bytes,
            from_file.max_wait_time
        ),
        (7, 1 << 20, Some(Duration::from_secs(90)))
    );
    let env = env_of(&[
        ("RESPAWN_MAX_WAITING", "0"),
        ("RESPAWN_MAX_WAITING_BYTES", "2k"),
        ("RESPAWN_MAX_WAIT_TIME", "2m"),
    ]);
    let from_env = load(&args, &env);
    assert_eq!(
        (
            from_env.max_waiting,
            from_env.max_waiting_bytes,
            from_env.max_wait_time
        ),
        (0, 2048, Some(Duration::from_secs(120))),
        "0 waiting requests is allowed: every request is refused while the server is not ready"
    );
    let flags = ServeArgs {
        max_waiting: Some(3),
        max_waiting_bytes: Some(5),
        max_wait_time: Some(Duration::from_secs(4)),
        ..args.clone()
    };
    let from_flags = load(&flags, &env);
    assert_eq!(
        (
            from_flags.max_waiting,
            from_flags.max_waiting_bytes,
            from_flags.max_wait_time
        ),
        (3, 5, Some(Duration::from_secs(4)))
    );

    for (variable, value) in [
        ("RESPAWN_MAX_WAITING_BYTES", "0"),
        ("RESPAWN_MAX_WAIT_TIME", "0"),
    ] {
        let err = ServeConfig::load(&with_command(), &env_of(&[(variable, value)])).unwrap_err();
        assert!(err.to_string().contains(variable), "{err}");
        assert_eq!(err.exit_code(), 2);
    }
}

#[test]
fn the_port_placeholder_is_left_for_the_spawner() {
    let config = load(&with_command(), &no_env);
    assert_eq!(config.command, ["model-server", "--port", "{port}"]);
    let file = TempFile::new(
        "f6",
        "command = [\"vllm\", \"serve\", \"m\", \"--port={port}\"]\n",
    );
    let args = ServeArgs {
        supervision: SupervisionArgs {
            config: Some(file.path().to_owned()),
            ..SupervisionArgs::default()
        },
        ..ServeArgs::default()
    };
    assert_eq!(
        load(&args, &no_env).command,
        ["vllm", "serve", "m", "--port={port}"]
    );
}

#[test]
fn the_flag_command_replaces_the_file_command_whole() {
    let file = TempFile::new("f7", "command = [\"from-file\", \"a\", \"b\"]\n");
    let args = ServeArgs {
        supervision: SupervisionArgs {
            config: Some(file.path().to_owned()),
            ..SupervisionArgs::default()
        },
        ..with_command()
    };
    assert_eq!(
        load(&args, &no_env).command,
        ["model-server", "--port", "{port}"]
    );
    let env = env_of(&[("RESPAWN_COMMAND", "from-env  --x 1")]);
    let args = ServeArgs {
        command: vec![],
        ..args
    };
    assert_eq!(load(&args, &env).command, ["from-env", "--x", "1"]);
}

#[test]
fn a_token_on_the_command_line_is_remembered_for_the_ps_warning() {
    let flag = ServeArgs {
        admin_token: Some(AdminToken::new("s3cret-flag").unwrap()),
        ..with_command()
    };
    let env = env_of(&[("RESPAWN_ADMIN_TOKEN", "s3cret-env")]);
    let config = load(&flag, &env);
    assert!(config.admin_token_from_flag);
    assert_eq!(
        config.admin_token.unwrap().expose(),
        "s3cret-flag",
        "the flag beats the environment"
    );

    let config = load(&with_command(), &env);
    assert!(!config.admin_token_from_flag);
    assert_eq!(config.admin_token.unwrap().expose(), "s3cret-env");
}

#[test]
fn an_invalid_token_in_the_environment_is_refused_without_showing_it() {
    let env = env_of(&[("RESPAWN_ADMIN_TOKEN", "two words")]);
    let err = ServeConfig::load(&with_command(), &env).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("RESPAWN_ADMIN_TOKEN") && !text.contains("two words"),
        "{text}"
    );
    // A trailing newline, as a secret file mounted into the environment often has, is not a mistake.
    let env = env_of(&[("RESPAWN_ADMIN_TOKEN", "abc123\n")]);
    assert_eq!(
        load(&with_command(), &env).admin_token.unwrap().expose(),
        "abc123"
    );
}

#[test]
fn a_command_or_an_upstream_exactly_one() {
    let err = ServeConfig::load(&ServeArgs::default(), &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::NoCommand));
    assert_eq!(
        err.to_string(),
        "no command to supervise: respawn serve [OPTIONS] -- COMMAND [ARGS...] (or --upstream URL)"
    );
    assert_eq!(err.exit_code(), 2);

    let both = ServeArgs {
        upstream: Some("http://127.0.0.1:8001".into()),
        ..with_command()
    };
    let err = ServeConfig::load(&both, &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::CommandAndUpstream), "{err:?}");

    let upstream = ServeArgs {
        upstream: Some("http://127.0.0.1:8001".into()),
        ..ServeArgs::default()
    };
    let config = load(&upstream, &no_env);
    assert!(config.command.is_empty());
    assert_eq!(config.upstream.as_deref(), Some("http://127.0.0.1:8001"));
}

#[test]
fn urls_must_be_plain_http() {
    for bad in [
        "https://127.0.0.1:8001",
        "127.0.0.1:8001",
        "http://",
        "http://host:notaport",
        "http://u@h:1",
    ] {
        let args = ServeArgs {
            upstream: Some(bad.into()),
            ..ServeArgs::default()
        };
        let err = ServeConfig::load(&args, &no_env).unwrap_err();
        assert!(
            err.to_string().contains("upstream") && err.to_string().contains(bad),
            "{bad}: {err}"
        );
    }
    for good in [
        "http://127.0.0.1:8001",
        "http://[::1]:8001/v1",
        "http://model-host",
    ] {
        let args = ServeArgs {
            upstream: Some(good.into()),
            ..ServeArgs::default()
        };
        assert!(ServeConfig::load(&args, &no_env).is_ok(), "{good}");
    }
}

#[test]
fn a_restart_url_needs_its_token() {
    let args = ServeArgs {
        supervision: SupervisionArgs {
            restart_url: Some("http://127.0.0.1:9000/restart".into()),
            ..SupervisionArgs::default()
        },
        ..with_command()
    };
    let err = ServeConfig::load(&args, &no_env).unwrap_err();
    assert!(err.to_string().contains("--restart-token"), "{err}");
    let env = env_of(&[("RESPAWN_RESTART_TOKEN", "t0ken")]);
    assert_eq!(load(&args, &env).restart_token.unwrap().expose(), "t0ken");
}

#[test]
fn a_zero_canary_interval_turns_the_canary_off() {
    let args = ServeArgs {
        supervision: SupervisionArgs {
            canary_interval: Some(Duration::ZERO),
            ..SupervisionArgs::default()
        },
        ..with_command()
    };
    let config = load(&args, &no_env);
    assert!(!config.canary_enabled());
    assert_eq!(config.core().progress.canary_interval, Duration::ZERO);
    assert!(load(&with_command(), &no_env).canary_enabled());
}

#[test]
fn zero_where_zero_means_nothing_is_refused() {
    let args = ServeArgs {
        supervision: SupervisionArgs {
            health_interval: Some(Duration::ZERO),
            ..SupervisionArgs::default()
        },
        ..with_command()
    };
    let err = ServeConfig::load(&args, &no_env).unwrap_err();
    assert!(err.to_string().contains("--health-interval"), "{err}");
    for args in [
        ServeArgs {
            supervision: SupervisionArgs {
                unhealthy_after: Some(0),
                ..SupervisionArgs::default()
            },
            ..with_command()
        },
        ServeArgs {
            supervision: SupervisionArgs {
                max_restarts: Some(0),
                ..SupervisionArgs::default()
            },
            ..with_command()
        },
        ServeArgs {
            workers: Some(0),
            ..with_command()
        },
        ServeArgs {
            max_body_size: Some(0),
            ..with_command()
        },
        ServeArgs {
            supervision: SupervisionArgs {
                poison_after: Some(0),
                ..SupervisionArgs::default()
            },
            ..with_command()
        },
    ] {
        let err = ServeConfig::load(&args, &no_env).unwrap_err();
        assert!(matches!(err, ConfigError::BadValue { .. }), "{err:?}");
    }
    let zero_grace = ServeArgs {
        supervision: SupervisionArgs {
            stop_grace: Some(Duration::ZERO),
            ..SupervisionArgs::default()
        },
        ..with_command()
    };
    assert_eq!(
        load(&zero_grace, &no_env).stop_grace,
        Duration::ZERO,
        "zero grace = SIGKILL at once"
    );
}

#[test]
fn the_core_gets_the_mapped_settings() {
    let args = ServeArgs {
        supervision: SupervisionArgs {
            health_interval: Some(Duration::from_secs(2)),
            health_timeout: Some(Duration::from_millis(700)),
            unhealthy_after: Some(4),
            request_timeout: Some(Duration::from_secs(20)),
            stall_timeout: Some(Duration::from_secs(7)),
            startup_timeout: Some(Duration::from_secs(90)),
            max_restarts: Some(8),
            restart_window: Some(Duration::from_secs(120)),
            retries: Some(6),
            poison_after: Some(3),
            progress_timeout: Some(Duration::from_secs(12)),
            canary_timeout: Some(Duration::from_secs(4)),
            ..SupervisionArgs::default()
        },
        ..with_command()
    };
    let core = load(&args, &no_env).core();
    assert_eq!(core.health.interval, Duration::from_secs(2));
    assert_eq!(core.health.timeout, Duration::from_millis(700));
    assert_eq!(core.health.unhealthy_after, 4);
    assert_eq!(core.health.startup_timeout, Duration::from_secs(90));
    assert_eq!(core.stream.first_byte, Duration::from_secs(20));
    assert_eq!(core.stream.between_chunks, Duration::from_secs(7));
    assert_eq!(core.policy.intensity.max_restarts, 8);
    assert_eq!(core.policy.intensity.window, Duration::from_secs(120));
    assert_eq!(core.retry.max_retries, 6);
    assert_eq!(core.poison_threshold, 3);
    assert_eq!(core.progress.progress_timeout, Duration::from_secs(12));
    assert_eq!(core.progress.canary_timeout, Duration::from_secs(4));
}

#[test]
fn a_hang_stop_of_grace_reaches_the_core_from_each_layer() {
    assert!(
        !load(&with_command(), &no_env).core().graceful_hang_stop,
        "by default a hung server is killed at once"
    );
    let flag = ServeArgs {
        supervision: SupervisionArgs {
            hang_stop: Some(HangStop::Grace),
            ..SupervisionArgs::default()
        },
        ..with_command()
    };
    assert!(load(&flag, &no_env).core().graceful_hang_stop);
    let env = env_of(&[("RESPAWN_HANG_STOP", "grace")]);
    assert!(load(&with_command(), &env).core().graceful_hang_stop);
    let file = TempFile::new("hang-stop", "hang_stop = \"grace\"\n");
    let from_file = ServeArgs {
        supervision: SupervisionArgs {
            config: Some(file.path().to_owned()),
            ..SupervisionArgs::default()
        },
        ..with_command()
    };
    assert_eq!(load(&from_file, &no_env).hang_stop, HangStop::Grace);
    let bad = env_of(&[("RESPAWN_HANG_STOP", "sometimes")]);
    assert!(ServeConfig::load(&with_command(), &bad).is_err());
}

#[test]
fn loopback_listeners_are_told_apart() {
    let config = load(&with_command(), &no_env);
    assert!(config.listen_is_loopback());
    let env = env_of(&[("RESPAWN_LISTEN", "0.0.0.0:8000")]);
    assert!(!load(&with_command(), &env).listen_is_loopback());
    let env = env_of(&[("RESPAWN_LISTEN", "[::1]:8000")]);
    assert!(load(&with_command(), &env).listen_is_loopback());
    let env = env_of(&[("RESPAWN_LISTEN", "localhost:8000")]);
    let err = ServeConfig::load(&with_command(), &env).unwrap_err();
    assert!(err.to_string().contains("RESPAWN_LISTEN"), "{err}");
}

#[test]
fn the_progress_metric_reads_auto_none_and_names() {
    for (text, expected) in [
        ("auto", ProgressMetric::Auto),
        ("none", ProgressMetric::Off),
        ("off", ProgressMetric::Off),
        (
            "vllm:generation_tokens_total",
            ProgressMetric::Named("vllm:generation_tokens_total".into()),
        ),
    ] {
        let env = env_of(&[("RESPAWN_PROGRESS_METRIC", text)]);
        assert_eq!(
            load(&with_command(), &env).progress_metric,
            expected,
            "{text}"
        );
    }
}

#[test]
fn restart_commands_split_on_whitespace() {
    let env = env_of(&[
        ("RESPAWN_RESTART_COMMAND", "systemctl restart vllm"),
        ("RESPAWN_RELEASE_CHECK", "nvidia-smi -q"),
    ]);
    let config = load(&with_command(), &env);
    assert_eq!(
        config.restart_command.unwrap(),
        ["systemctl", "restart", "vllm"]
    );
    assert_eq!(config.release_check.unwrap(), ["nvidia-smi", "-q"]);
    let args = ServeArgs {
        supervision: SupervisionArgs {
            restart_command: Some("  ".into()),
            ..SupervisionArgs::default()
        },
        ..with_command()
    };
    assert!(ServeConfig::load(&args, &no_env)
        .unwrap_err()
        .to_string()
        .contains("--restart-command"));
}

#[test]
fn restart_strategies_come_from_any_layer_in_the_order_written() {
    let file = TempFile::new(
        "strategies",
        "command = [\"m\"]\nrestart_command = \"systemctl restart vllm\"\nrestart_strategies = [\"command\", \"process_kill\"]\n",
    );
    let args = ServeArgs {
        supervision: SupervisionArgs {
            config: Some(file.path().to_path_buf()),
            ..SupervisionArgs::default()
        },
        ..ServeArgs::default()
    };
    assert_eq!(
        load(&args, &no_env).restart_strategies.unwrap(),
        ["command", "process_kill"]
    );
    let env = env_of(&[("RESPAWN_RESTART_STRATEGIES", " process_kill , command")]);
    assert_eq!(
        load(&args, &env).restart_strategies.unwrap(),
        ["process_kill", "command"]
    );
    let flag = ServeArgs {
        supervision: SupervisionArgs {
            restart_strategies: Some("command".into()),
            ..args.supervision.clone()
        },
        ..args.clone()
    };
    let config = load(&flag, &env);
    assert_eq!(config.restart_strategies.as_deref().unwrap(), ["command"]);
    assert_eq!(
        respawn_cli::serve::supervisor_config(&config).restart_strategies,
        config.restart_strategies,
        "the supervisor is built with the names the configuration holds"
    );
    assert_eq!(load(&with_command(), &no_env).restart_strategies, None);
}

#[test]
fn restart_strategies_must_be_known_named_once_and_configured() {
    let strategies = |names: &str, env: &[(&str, &str)]| {
        let args = ServeArgs {
            supervision: SupervisionArgs {
                restart_strategies: Some(names.into()),
                ..SupervisionArgs::default()
            },
            ..with_command()
        };
        ServeConfig::load(&args, &env_of(env)).map(|config| config.restart_strategies)
    };
    let err = strategies("process_kill,k8s", &[]).unwrap_err();
    assert!(
        err.to_string().contains("`k8s`")
            && err
                .to_string()
                .contains("process_kill, rest_endpoint, command"),
        "{err}"
    );
    let err = strategies("process_kill,process_kill", &[]).unwrap_err();
    assert!(err.to_string().contains("named once"), "{err}");
    let err = strategies("process_kill,,command", &[]).unwrap_err();
    assert!(err.to_string().contains("--restart-strategies"), "{err}");
    let err = strategies("rest_endpoint", &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("`rest_endpoint` needs --restart-url"),
        "{err}"
    );
    let upstream = [("RESPAWN_UPSTREAM", "http://127.0.0.1:9")];
    let args = ServeArgs {
        supervision: SupervisionArgs {
            restart_strategies: Some("process_kill".into()),
            ..SupervisionArgs::default()
        },
        ..ServeArgs::default()
    };
    let err = ServeConfig::load(&args, &env_of(&upstream)).unwrap_err();
    assert!(
        err.to_string().contains("`process_kill` needs a command"),
        "{err}"
    );
    assert_eq!(
        strategies(
            "command",
            &[("RESPAWN_RESTART_COMMAND", "systemctl restart vllm")]
        )
        .unwrap()
        .unwrap(),
        ["command"]
    );
}

#[test]
fn shell_and_log_format_come_from_any_layer() {
    let env = env_of(&[("RESPAWN_SHELL", "yes"), ("RESPAWN_LOG_FORMAT", "json")]);
    let config = load(&with_command(), &env);
    assert!(config.shell);
    assert_eq!(config.log_format, LogFormat::Json);
    let flag = ServeArgs {
        supervision: SupervisionArgs {
            shell: Some(false),
            ..SupervisionArgs::default()
        },
        log_format: Some(LogFormat::Text),
        ..with_command()
    };
    let config = load(&flag, &env);
    assert!(!config.shell, "--shell=false beats the environment");
    assert_eq!(config.log_format, LogFormat::Text);
}

#[test]
fn a_canary_body_must_be_a_json_object() {
    let env = env_of(&[("RESPAWN_CANARY_BODY", r#"{"model":"m","max_tokens":1}"#)]);
    let config = load(&with_command(), &env);
    assert_eq!(config.canary_body.unwrap()["max_tokens"], 1);
    let env = env_of(&[("RESPAWN_CANARY_BODY", "[1,2]")]);
    assert!(ServeConfig::load(&with_command(), &env)
        .unwrap_err()
        .to_string()
        .contains("canary_body"));
    let env = env_of(&[("RESPAWN_CANARY_BODY", "{not json")]);
    assert!(ServeConfig::load(&with_command(), &env)
        .unwrap_err()
        .to_string()
        .contains("RESPAWN_CANARY_BODY"));
}
