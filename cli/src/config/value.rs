//! How each kind of configuration value is written, and how it is read.
//!
//! The same parsers serve the three sources of configuration — flags, environment variables and
//! the TOML file — so `10s` means the same thing wherever it is written, and a mistake is
//! reported the same way. Every parser returns a message that says what was expected; the
//! caller adds where the value came from.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// What a duration looks like, shown in every duration error.
pub const DURATION_EXAMPLES: &str = "expected e.g. 500ms, 10s, 2m";

/// What a size looks like, shown in every size error.
pub const SIZE_EXAMPLES: &str =
    "expected a number of bytes with an optional unit, e.g. 1048576, 64MiB, 10MB, 512k";

/// What a boolean looks like, shown in every boolean error.
pub const BOOL_EXAMPLES: &str = "expected true/false, 1/0, yes/no or on/off";

/// Reads a duration in humantime style (`500ms`, `10s`, `2m`, `1h 30m`; `0` is zero).
///
/// Surrounding whitespace is ignored. The error names the value and shows examples.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("empty; {DURATION_EXAMPLES}"));
    }
    humantime::parse_duration(trimmed).map_err(|err| format!("{err}; {DURATION_EXAMPLES}"))
}

/// Reads a number of seconds, the unit of the original design's `SERVER_RESTART_WAIT_TIME` (`600`, `1.5`).
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let expected = "expected a number of seconds, e.g. 600";
    let seconds: f64 = trimmed
        .parse()
        .map_err(|_| format!("not a number; {expected}"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("out of range; {expected}"))
}

/// Reads a byte size: a plain number of bytes, or a number with a unit.
///
/// Units are case-insensitive: `B`; decimal `KB`, `MB`, `GB`, `TB` (powers of 1000); binary
/// `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024); the single letters `K`, `M`, `G`, `T` are binary,
/// as in nginx and Docker. A decimal point is allowed (`1.5GiB`); the result is rounded down to a
/// whole byte. Overflow is an error, never a wrap.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: String = number.chars().filter(|c| *c != '_').collect();
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        other => return Err(format!("unknown unit `{other}`; {SIZE_EXAMPLES}")),
    };
    if number.is_empty() {
        return Err(format!("no number; {SIZE_EXAMPLES}"));
    }
    let out_of_range = || format!("too large; {SIZE_EXAMPLES}");
    match number.split_once('.') {
        None => {
            let whole: u64 = number.parse().map_err(|_| out_of_range())?;
            whole.checked_mul(multiplier).ok_or_else(out_of_range)
        }
        Some((whole, fraction)) => {
            if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
                return Err(format!("not a number; {SIZE_EXAMPLES}"));
            }
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| out_of_range())?
            };
            let whole = whole.checked_mul(multiplier).ok_or_else(out_of_range)?;
            // The fractional part, exactly: digits / 10^len * multiplier, rounded down. Only the
            // first 18 digits matter for any multiplier up to 2^40.
            let digits = &fraction[..fraction.len().min(18)];
            let part = if digits.is_empty() {
                0
            } else {
                let numerator: u128 = digits.parse().map_err(|_| out_of_range())?;
                let denominator = 10u128.pow(digits.len() as u32);
                u64::try_from(numerator * u128::from(multiplier) / denominator)
                    .map_err(|_| out_of_range())?
            };
            whole.checked_add(part).ok_or_else(out_of_range)
        }
    }
}

/// Reads a boolean the way the original design's `ENABLE_SERVER_RESTART` is written: `true`/`false`,
/// `1`/`0`, `yes`/`no`, `on`/`off`, in any case.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "y" => Ok(true),
        "false" | "0" | "no" | "off" | "n" => Ok(false),
        _ => Err(BOOL_EXAMPLES.to_owned()),
    }
}

/// Splits a command written on one line (`systemctl restart vllm`) into its argv, on whitespace.
///
/// No shell quoting is interpreted: a command that needs an argument with spaces belongs in the
/// TOML file as an array.
pub fn parse_argv(text: &str) -> Result<Vec<String>, String> {
    let argv: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    if argv.is_empty() {
        return Err(
            "empty command (expected a program and its arguments, e.g. `systemctl restart vllm`)"
                .to_owned(),
        );
    }
    Ok(argv)
}

/// Reads a list of names written on one line, separated by commas (`process_kill, command`).
pub fn parse_names(text: &str) -> Result<Vec<String>, String> {
    let expected = "expected names separated by commas, e.g. process_kill,rest_endpoint";
    if text.trim().is_empty() {
        return Err(format!("empty; {expected}"));
    }
    text.split(',')
        .map(|name| {
            let name = name.trim();
            if name.is_empty() {
                Err(format!("an empty name between commas; {expected}"))
            } else {
                Ok(name.to_owned())
            }
        })
        .collect()
}

/// Reads a JSON document (the canary request body).
pub fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|err| format!("not valid JSON: {err}"))
}

/// Reads the address respawn listens on: an IP address and a port.
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        "expected an IP address and a port, e.g. 127.0.0.1:8000 or [::1]:8000".to_owned()
    })
}

/// serde adapters for the TOML file: each accepts the natural TOML spelling of its kind.
pub(crate) mod serde_with {
    use super::*;
    use serde::de::Error as _;
    use serde_json::Value;

    /// A duration string (`"10s"`); the bare integer `0` is also accepted where zero means off.
    pub fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
        match Value::deserialize(de)? {
            Value::String(text) => parse_duration(&text)
                .map(Some)
                .map_err(|reason| D::Error::custom(format!("invalid duration `{text}`: {reason}"))),
            Value::Number(n) if n.as_u64() == Some(0) => Ok(Some(Duration::ZERO)),
            Value::Number(n) => Err(D::Error::custom(format!(
                "invalid duration {n}: a duration is a string with a unit, e.g. \"{n}s\"; {DURATION_EXAMPLES}"
            ))),
            other => Err(D::Error::custom(format!("invalid duration {other}: {DURATION_EXAMPLES}"))),
        }
    }

    /// A size: an integer number of bytes, or a string with a unit (`"64MiB"`).
    pub fn size<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
        match Value::deserialize(de)? {
            Value::String(text) => parse_size(&text)
                .map(Some)
                .map_err(|reason| D::Error::custom(format!("invalid size `{text}`: {reason}"))),
            Value::Number(n) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("invalid size {n}: {SIZE_EXAMPLES}"))),
            other => Err(D::Error::custom(format!(
                "invalid size {other}: {SIZE_EXAMPLES}"
            ))),
        }
    }

    /// An argv: an array of strings, or one string split on whitespace.
    pub fn argv<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Vec<String>>, D::Error> {
        let expected =
            "expected a program and its arguments, e.g. [\"systemctl\", \"restart\", \"vllm\"]";
        match Value::deserialize(de)? {
            Value::String(text) => parse_argv(&text).map(Some).map_err(D::Error::custom),
            Value::Array(items) if !items.is_empty() => items
                .into_iter()
                .map(|item| match item {
                    Value::String(word) => Ok(word),
                    other => Err(D::Error::custom(format!(
                        "invalid command word {other}: each word is a string"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Value::Array(_) => Err(D::Error::custom(format!("empty command; {expected}"))),
            other => Err(D::Error::custom(format!(
                "invalid command {other}: {expected}"
            ))),
        }
    }

    /// A list of names: an array of strings, or one string of names separated by commas.
    pub fn names<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Vec<String>>, D::Error> {
        let expected = "expected a list of names, e.g. [\"process_kill\", \"command\"]";
        match Value::deserialize(de)? {
            Value::String(text) => parse_names(&text).map(Some).map_err(D::Error::custom),
            Value::Array(items) if !items.is_empty() => items
                .into_iter()
                .map(|item| match item {
                    Value::String(name) => parse_names(&name).and_then(|mut one| match one.len() {
                        1 => Ok(one.remove(0)),
                        _ => Err(format!(
                            "`{name}` holds several names; write each as its own string"
                        )),
                    }),
                    other => Err(format!("invalid name {other}: each name is a string")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
                .map_err(D::Error::custom),
            Value::Array(_) => Err(D::Error::custom(format!("empty list; {expected}"))),
            other => Err(D::Error::custom(format!(
                "invalid list {other}: {expected}"
            ))),
        }
    }

    /// A JSON body: a string holding JSON, or a TOML table written in place.
    pub fn json<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Value>, D::Error> {
        match Value::deserialize(de)? {
            Value::String(text) => parse_json(&text).map(Some).map_err(D::Error::custom),
            other => Ok(Some(other)),
        }
    }

    /// A listen address string (`"127.0.0.1:8000"`).
    pub fn listen<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Option<std::net::SocketAddr>, D::Error> {
        let text = String::deserialize(de)?;
        parse_listen(&text)
            .map(Some)
            .map_err(|reason| D::Error::custom(format!("invalid address `{text}`: {reason}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_humantime_and_zero() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 2m "), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        let err = parse_duration("10 parsecs").unwrap_err();
        assert!(
            err.contains("parsecs") && err.contains(DURATION_EXAMPLES),
            "{err}"
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10").is_err(), "a bare number has no unit");
    }

    #[test]
    fn sizes_read_units_both_ways() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64 mib"), Ok(64 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("0.5KB"), Ok(500));
        assert_eq!(parse_size("1_000B"), Ok(1000));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("1.2.3").is_err());
        assert!(parse_size("-1").is_err());
        assert!(
            parse_size("99999999999TiB").is_err(),
            "overflow is an error"
        );
        assert!(parse_size("18446744073709551616").is_err());
    }

    #[test]
    fn booleans_read_the_original_designs_forms() {
        for yes in ["true", "TRUE", "1", "yes", "on"] {
            assert_eq!(parse_bool(yes), Ok(true), "{yes}");
        }
        for no in ["false", "False", "0", "no", "off"] {
            assert_eq!(parse_bool(no), Ok(false), "{no}");
        }
        assert!(parse_bool("maybe").is_err());
    }

    #[test]
    fn seconds_read_the_original_designs_variable() {
        assert_eq!(parse_seconds("600"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_seconds("-3").is_err());
        assert!(parse_seconds("ten").is_err());
        assert!(parse_seconds("1e300").is_err());
    }

    #[test]
    fn argv_splits_on_whitespace_and_refuses_empty() {
        assert_eq!(
            parse_argv(" systemctl  restart\tvllm "),
            Ok(vec![
                "systemctl".to_owned(),
                "restart".to_owned(),
                "vllm".to_owned()
            ])
        );
        assert!(parse_argv("   ").is_err());
    }

    #[test]
    fn names_split_on_commas_and_refuse_empty_ones() {
        assert_eq!(
            parse_names(" process_kill, command "),
            Ok(vec!["process_kill".to_owned(), "command".to_owned()])
        );
        assert_eq!(parse_names("command"), Ok(vec!["command".to_owned()]));
        assert!(parse_names("  ").is_err());
        assert!(parse_names("process_kill,,command").is_err());
        assert!(parse_names("command,").is_err());
    }
}
