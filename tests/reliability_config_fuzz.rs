//! Fuzzing the config loader with whole TOML documents built from the real keys: every document
//! is either a configuration or a `ConfigError` that names the key at fault (and exits 2). A
//! message that does not say which key is wrong leaves the operator guessing in a file of thirty.

use std::path::Path;

use proptest::prelude::*;
use respawn_cli::config::{ServeConfig, KEYS};

/// A TOML value of any type, as text.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 .:/_\\-]{0,16}".prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        (-1e12f64..1e12).prop_map(|f| format!("{f:.3}")),
        "-?[0-9]{1,6}(ns|us|ms|s|m|h|d|KiB|MiB|GB|B| years|x)?".prop_map(|s| format!("{s:?}")),
        proptest::collection::vec("[a-z{}/.]{0,6}", 0..4).prop_map(|w| format!("{w:?}")),
        Just("{ nested = 1 }".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        Just("[]".to_owned()),
        Just("\"\"".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// One known key with a random value (after a valid command): accepted, or refused naming the key.
    #[test]
    fn a_bad_value_is_refused_naming_its_key(
        key in proptest::sample::select(KEYS.to_vec()),
        value in toml_value(),
    ) {
        let text = if key == "command" {
            format!("command = {value}\n")
        } else {
            format!("command = [\"model-server\"]\n{key} = {value}\n")
        };
        if let Err(err) = ServeConfig::from_toml(Path::new("fuzz.toml"), &text) {
            let message = err.to_string();
            prop_assert_eq!(err.exit_code(), 2);
            prop_assert!(
                message.contains(key) || message.contains(&key.replace('_', "-")),
                "`{}` does not name `{}`: {}", text.trim(), key, message
            );
        }
    }

    /// Several known keys, each with a random value, in any order, possibly in a table: never a
    /// panic, and an error always exits 2 with a message.
    #[test]
    fn whole_documents_load_or_fail_cleanly(
        lines in proptest::collection::vec((proptest::sample::select(KEYS.to_vec()), toml_value()), 0..16),
        table in any::<bool>(),
    ) {
        let mut text = String::from(if table { "[serve]\n" } else { "" });
        for (key, value) in &lines {
            text.push_str(&format!("{key} = {value}\n"));
        }
        if let Err(err) = ServeConfig::from_toml(Path::new("fuzz.toml"), &text) {
            prop_assert_eq!(err.exit_code(), 2);
            prop_assert!(!err.to_string().is_empty());
        }
    }
}
