//! Property tests: the config loader answers every input with a configuration or a
//! `ConfigError` — never a panic — whatever the file, the environment or the value.

use std::path::Path;

use proptest::prelude::*;
use respawn_cli::cli::ServeArgs;
use respawn_cli::config::value::{parse_duration, parse_size};
use respawn_cli::config::{ServeConfig, KEYS};

/// A line `key = value` with a known key and a value of any TOML-ish shape.
fn key_value_line() -> impl Strategy<Value = String> {
    let key = proptest::sample::select(KEYS.to_vec());
    let value = prop_oneof![
        "[a-z0-9 .:/\\-]{0,12}".prop_map(|s| format!("\"{s}\"")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[0-9]{1,4}(ms|s|m|h|MiB|MB|k| parsecs)?".prop_map(|s| format!("\"{s}\"")),
        proptest::collection::vec("[a-z{}]{0,5}", 0..4).prop_map(|words| format!("{words:?}")),
        Just("{ a = 1 }".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
    ];
    (key, value).prop_map(|(key, value)| format!("{key} = {value}"))
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = ServeConfig::from_toml(Path::new("fuzz.toml"), &text);
    }

    #[test]
    fn arbitrary_toml_like_text_never_panics(text in "[a-z_=\\[\\]{}\"'#,.0-9 \\n]{0,200}") {
        let _ = ServeConfig::from_toml(Path::new("fuzz.toml"), &text);
    }

    #[test]
    fn known_keys_with_any_values_never_panic(lines in proptest::collection::vec(key_value_line(), 0..12)) {
        let text = lines.join("\n");
        if let Err(err) = ServeConfig::from_toml(Path::new("fuzz.toml"), &text) {
            prop_assert_eq!(err.exit_code(), 2);
            prop_assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn arbitrary_duration_strings_never_panic(text in any::<String>()) {
        let _ = parse_duration(&text);
        let _ = parse_size(&text);
    }

    #[test]
    fn arbitrary_environment_values_never_panic(
        key in proptest::sample::select(KEYS.to_vec()),
        value in prop_oneof![any::<String>(), "[0-9]{1,25}(\\.[0-9]{0,20})?(ms|s|KiB|TB|GiB)?"],
    ) {
        let variable = respawn_cli::config::variable_for(key);
        let args = ServeArgs { command: vec!["m".into()], ..ServeArgs::default() };
        let env = |name: &str| (name == variable).then(|| value.clone());
        let _ = ServeConfig::load(&args, &env);
        let seed = |name: &str| (name == "SERVER_RESTART_WAIT_TIME").then(|| value.clone());
        let _ = ServeConfig::load(&args, &seed);
    }

    #[test]
    fn written_durations_read_back(millis in 1u64..10_000_000) {
        let text = format!("{}ms", millis);
        prop_assert_eq!(parse_duration(&text).unwrap().as_millis(), u128::from(millis));
        let text = humantime::format_duration(std::time::Duration::from_millis(millis)).to_string();
        prop_assert_eq!(parse_duration(&text).unwrap().as_millis(), u128::from(millis));
    }

    #[test]
    fn sizes_scale_exactly(n in 0u64..(1 << 20)) {
        prop_assert_eq!(parse_size(&format!("{n}KiB")).unwrap(), n * 1024);
        prop_assert_eq!(parse_size(&format!("{n}MB")).unwrap(), n * 1_000_000);
        prop_assert_eq!(parse_size(&n.to_string()).unwrap(), n);
    }
}
