//! The TOML config file: keys, value forms, and errors that point at the line and column.

use std::path::Path;
use std::time::Duration;

use respawn_cli::config::{ConfigError, ProgressMetric, ServeConfig, KEYS};

fn parse(text: &str) -> Result<ServeConfig, ConfigError> {
    ServeConfig::from_toml(Path::new("/etc/respawn.toml"), text)
}

#[test]
fn an_unknown_key_is_named_with_its_line_and_the_likely_key() {
    let err = parse("command = [\"m\"]\nhelth_path = \"/h\"\n").unwrap_err();
    match &err {
        ConfigError::UnknownKey {
            key,
            line,
            expected,
            ..
        } => {
            assert_eq!(
                (key.as_str(), *line, *expected),
                ("helth_path", Some(2), Some("health_path"))
            );
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "unknown configuration key `helth_path` in /etc/respawn.toml (line 2); did you mean `health_path`?"
    );
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn an_unknown_key_without_a_close_match_points_to_the_docs() {
    let err = parse("command = [\"m\"]\nbanana = 1\n").unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownKey { expected: None, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("`banana`") && err.to_string().contains("docs/CONFIG.md"),
        "{err}"
    );
}

#[test]
fn invalid_toml_gives_the_line_and_column() {
    let err = parse("command = [\"m\"]\n\nretries = = 3\n").unwrap_err();
    match &err {
        ConfigError::Toml { line, column, .. } => assert_eq!((*line, *column), (3, 11), "{err}"),
        other => panic!("expected Toml, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("invalid TOML in /etc/respawn.toml at line 3, column 11: "),
        "{err}"
    );
}

#[test]
fn a_bad_duration_in_the_file_names_the_key_and_its_position() {
    let err = parse("command = [\"m\"]\nhealth_interval = \"10 parsecs\"\n").unwrap_err();
    let ConfigError::Toml {
        line,
        column,
        message,
        ..
    } = &err
    else {
        panic!("expected Toml, got {err:?}")
    };
    assert_eq!((*line, *column), (2, 19));
    assert!(
        message.contains("health_interval") && message.contains("10 parsecs"),
        "{message}"
    );
    assert!(
        message.contains("expected e.g. 500ms, 10s, 2m"),
        "{message}"
    );

    let err = parse("command = [\"m\"]\nhealth_interval = 10\n").unwrap_err();
    assert!(
        err.to_string().contains("\"10s\""),
        "a bare number suggests a unit: {err}"
    );
}

#[test]
fn a_value_of_the_wrong_type_names_the_key() {
    let err = parse("command = [\"m\"]\nretries = \"three\"\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("line 2") && text.contains("retries"),
        "{text}"
    );
    let err = parse("command = [\"m\"]\nport = 70000\n").unwrap_err();
    assert!(err.to_string().contains("port"), "{err}");
}

#[test]
fn every_value_form_is_read() {
    let config = parse(
        r#"
name = "llama"
listen = "0.0.0.0:9000"
port = 8101
command = ["vllm", "serve", "m", "--port", "{port}"]
shell = false
health_path = "/v1/models"
health_interval = "500ms"
health_timeout = "2s"
unhealthy_after = 5
request_timeout = "2m"
stall_timeout = "45s"
canary_interval = 0
canary_timeout = "3s"
canary_body = { model = "m", max_tokens = 1, messages = [{ role = "user", content = "hi" }] }
progress_metric = "llamacpp:tokens_predicted_total"
progress_timeout = "20s"
startup_timeout = "15m"
stop_grace = "0"
max_restarts = 2
restart_window = "1h"
retries = 1
poison_after = 4
enable_restart = false
admin_token = "abc"
restart_command = "systemctl restart vllm"
release_check = ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"]
max_body_size = "1.5MiB"
header_timeout = "10s"
workers = 3
log_format = "json"
"#,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.name, "llama");
    assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(config.port, Some(8101));
    assert_eq!(config.health_interval, Duration::from_millis(500));
    assert_eq!(config.request_timeout, Duration::from_secs(120));
    assert_eq!(config.canary_interval, Duration::ZERO);
    assert_eq!(
        config.canary_body.as_ref().unwrap()["messages"][0]["content"],
        "hi"
    );
    assert_eq!(
        config.progress_metric,
        ProgressMetric::Named("llamacpp:tokens_predicted_total".into())
    );
    assert_eq!(config.startup_timeout, Duration::from_secs(900));
    assert_eq!(config.stop_grace, Duration::ZERO);
    assert_eq!(config.restart_window, Duration::from_secs(3600));
    assert!(!config.enable_restart);
    assert_eq!(config.admin_token.as_ref().unwrap().expose(), "abc");
    assert!(
        !config.admin_token_from_flag,
        "a token from the file is not in `ps`"
    );
    assert_eq!(
        config.restart_command.as_deref().unwrap(),
        ["systemctl", "restart", "vllm"]
    );
    assert_eq!(config.release_check.as_ref().unwrap().len(), 3);
    assert_eq!(config.max_body_size, 1_572_864);
    assert_eq!(config.workers, 3);
    assert_eq!(config.log_format, respawn_cli::config::LogFormat::Json);
}

#[test]
fn every_documented_key_is_accepted_by_the_file() {
    for key in KEYS {
        let err = parse(&format!("{key} = {{ probe = true }}\n")).unwrap_err();
        assert!(
            !matches!(err, ConfigError::UnknownKey { .. }),
            "`{key}` is listed in KEYS but the file reader does not know it: {err}"
        );
    }
}

#[test]
fn a_canary_body_may_be_a_json_string() {
    let config =
        parse("command = [\"m\"]\ncanary_body = '{\"model\": \"m\", \"max_tokens\": 1}'\n")
            .unwrap();
    assert_eq!(config.canary_body.unwrap()["model"], "m");
    let err = parse("command = [\"m\"]\ncanary_body = '{broken'\n").unwrap_err();
    assert!(err.to_string().contains("canary_body"), "{err}");
}

#[test]
fn an_empty_command_array_is_refused() {
    let err = parse("command = []\n").unwrap_err();
    assert!(err.to_string().contains("empty command"), "{err}");
    let err = parse("command = [\"ok\", 3]\n").unwrap_err();
    assert!(err.to_string().contains("command"), "{err}");
}

#[test]
fn the_struct_deserializes_directly_for_embedders() {
    let config: ServeConfig =
        toml::from_str("command = [\"m\"]\nhealth_interval = \"2s\"\n").unwrap();
    assert_eq!(config.health_interval, Duration::from_secs(2));
    assert_eq!(config.retries, 3, "missing keys keep their defaults");
    assert!(
        toml::from_str::<ServeConfig>("helth_path = \"/\"\n").is_err(),
        "unknown keys are refused"
    );
}

#[test]
fn the_docs_list_every_key_flag_and_variable() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CONFIG.md")).unwrap();
    for key in KEYS {
        assert!(
            docs.contains(&format!("`{key}`")),
            "docs/CONFIG.md does not mention the key `{key}`"
        );
        let variable = respawn_cli::config::variable_for(key);
        assert!(
            docs.contains(&variable),
            "docs/CONFIG.md does not mention {variable}"
        );
    }
    for extra in [
        "SERVER_RESTART_WAIT_TIME",
        "ENABLE_SERVER_RESTART",
        "RESPAWN_CONFIG",
        "--config",
        "exit code",
    ] {
        assert!(
            docs.to_lowercase().contains(&extra.to_lowercase()),
            "docs/CONFIG.md does not mention {extra}"
        );
    }
}
