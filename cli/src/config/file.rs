//! The TOML config file: the same keys as the flags, in snake_case.
//!
//! Mistakes are reported with the file, the line and the column, and an unknown key comes with
//! the closest known key when it looks like a typo (`helth_path` → `health_path`).

use std::ops::Range;
use std::path::Path;

use super::error::ConfigError;
use super::layer::{Layer, KEYS};

/// Reads and parses the config file at `path`.
pub(crate) fn read(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses config file text; `path` is only used in error messages.
pub(crate) fn parse(path: &Path, text: &str) -> Result<Layer, ConfigError> {
    toml::from_str::<Layer>(text).map_err(|err| translate(path, text, &err))
}

/// Turns a `toml` error into a [`ConfigError`] that names the key, line and column.
fn translate(path: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let message = err.message().trim().to_owned();
    let position = err.span().map(|span| position(text, span.start));
    if let Some(key) = unknown_field(&message) {
        return ConfigError::UnknownKey {
            path: path.to_owned(),
            expected: suggest(&key),
            key,
            line: position.map(|(line, _)| line),
        };
    }
    let (line, column) = position.unwrap_or((1, 1));
    // A value error points at the value; name the key it belongs to, so the reader need not count.
    let message = match err.span().and_then(|span| key_of_value(text, span)) {
        Some(key) if !message.contains(&format!("`{key}`")) => format!("{key}: {message}"),
        _ => message,
    };
    ConfigError::Toml {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

/// The key of serde's "unknown field `x`, expected one of ..." message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    Some(rest[..end].to_owned())
}

/// 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// The known key written before `=` on the line where `span` starts, if any.
fn key_of_value(text: &str, span: Range<usize>) -> Option<&'static str> {
    let start = span.start.min(text.len());
    let line_start = text.get(..start)?.rfind('\n').map_or(0, |nl| nl + 1);
    let (key, _) = text.get(line_start..start)?.split_once('=')?;
    let key = key.trim().trim_matches('"');
    KEYS.iter().copied().find(|known| *known == key)
}

/// The known key closest to `key`, if it is close enough to be a typo.
pub fn suggest(key: &str) -> Option<&'static str> {
    closest(key, KEYS.iter().copied())
}

/// The candidate closest to `word` (compared in lower case, `-` as `_`), if it is close enough
/// to be a typo: at most one edit in three characters of the candidate.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let wanted = word.to_ascii_lowercase().replace('-', "_");
    candidates
        .map(|known| (edit_distance(&wanted, known), known))
        .filter(|(distance, known)| *distance <= (known.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// Levenshtein distance between two strings, counted in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("helth_path", "health_path"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn typos_get_a_suggestion_and_nonsense_does_not() {
        assert_eq!(suggest("helth_path"), Some("health_path"));
        assert_eq!(suggest("health-interval"), Some("health_interval"));
        assert_eq!(suggest("max_restart"), Some("max_restarts"));
        assert_eq!(suggest("banana"), None);
    }

    #[test]
    fn positions_are_one_based_lines_and_character_columns() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 6), (2, 1));
        assert_eq!(
            position(text, 10),
            (2, 4),
            "é is one column though two bytes"
        );
        assert_eq!(position(text, 999), (3, 1));
    }
}
