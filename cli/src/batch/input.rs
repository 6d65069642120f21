//! The input file: one request per line, `{"custom_id", "method", "url", "body"}` (the OpenAI
//! batch input format). The whole file is read and checked before anything is sent, so that a
//! mistake on line 9,000 does not surface after 8,999 requests were paid for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::Value;

/// One request of the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRequest {
    /// 1-based line of the input file, for messages.
    pub line: usize,
    /// The caller's id for this request, unique in the file.
    pub custom_id: String,
    /// The path (and query) to `POST` to, e.g. `/v1/chat/completions`.
    pub url: String,
    /// The JSON body, serialized once.
    pub body: Bytes,
}

/// Why the input file cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be read.
    #[error("cannot read the input file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a request object.
    #[error("input line {line}: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A line asks for another method than `POST`.
    #[error("input line {line}: method `{method}` is not supported; batch requests are POST")]
    NotPost {
        /// 1-based line number.
        line: usize,
        /// The method as written.
        method: String,
    },
    /// A line's `url` is not a path on the server.
    #[error("input line {line}: url `{url}` is not a POST path on the server (expected e.g. /v1/chat/completions)")]
    NotAPath {
        /// 1-based line number.
        line: usize,
        /// The url as written.
        url: String,
    },
    /// The same `custom_id` is on several lines: its results could not be told apart.
    #[error(
        "custom_id `{custom_id}` appears on input lines {}{}; every custom_id must be unique",
        join_lines(lines),
        if *others > 0 { format!(" (and {others} more custom_ids are duplicated)") } else { String::new() }
    )]
    Duplicate {
        /// The first duplicated id.
        custom_id: String,
        /// Every line it is on.
        lines: Vec<usize>,
        /// How many other ids are duplicated too.
        others: usize,
    },
}

fn join_lines(lines: &[usize]) -> String {
    lines
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads and checks the input file.
pub fn read(path: &Path) -> Result<Vec<BatchRequest>, InputError> {
    let bytes = std::fs::read(path).map_err(|source| InputError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&bytes)
}

/// Parses and checks the input file's contents: every line, then that ids are unique.
/// Blank lines are skipped.
pub fn parse(bytes: &[u8]) -> Result<Vec<BatchRequest>, InputError> {
    let mut requests = Vec::new();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let text = std::str::from_utf8(raw).map_err(|_| InputError::Malformed {
            line,
            reason: "not valid UTF-8".to_owned(),
        })?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        requests.push(parse_line(line, text)?);
    }
    check_unique(&requests)?;
    Ok(requests)
}

fn parse_line(line: usize, text: &str) -> Result<BatchRequest, InputError> {
    let malformed = |reason: String| InputError::Malformed { line, reason };
    let value: Value =
        serde_json::from_str(text).map_err(|err| malformed(format!("not valid JSON ({err})")))?;
    let Value::Object(mut object) = value else {
        return Err(malformed(
            "expected a JSON object {\"custom_id\", \"method\", \"url\", \"body\"}".to_owned(),
        ));
    };
    let custom_id = match object.remove("custom_id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        Some(Value::String(_)) => return Err(malformed("`custom_id` is empty".to_owned())),
        Some(_) => return Err(malformed("`custom_id` must be a string".to_owned())),
        None => return Err(malformed("no `custom_id`".to_owned())),
    };
    match object.get("method") {
        None => {}
        Some(Value::String(method)) if method.eq_ignore_ascii_case("POST") => {}
        Some(Value::String(method)) => {
            return Err(InputError::NotPost {
                line,
                method: method.clone(),
            })
        }
        Some(_) => return Err(malformed("`method` must be the string \"POST\"".to_owned())),
    }
    let url = match object.remove("url") {
        Some(Value::String(url)) => url,
        Some(_) => {
            return Err(malformed(
                "`url` must be a string such as \"/v1/chat/completions\"".to_owned(),
            ))
        }
        None => {
            return Err(malformed(
                "no `url` (e.g. \"/v1/chat/completions\")".to_owned(),
            ))
        }
    };
    if !url.starts_with('/')
        || url.starts_with("//")
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
        // What an HTTP request line cannot carry (the client refuses it before sending).
        || respawn::client_actor::path_and_query(&url).is_err()
    {
        return Err(InputError::NotAPath { line, url });
    }
    let body = match object.remove("body") {
        Some(body @ Value::Object(_)) => Bytes::from(body.to_string()),
        Some(_) => {
            return Err(malformed(
                "`body` must be a JSON object (the request body)".to_owned(),
            ))
        }
        None => return Err(malformed("no `body`".to_owned())),
    };
    Ok(BatchRequest {
        line,
        custom_id,
        url,
        body,
    })
}

fn check_unique(requests: &[BatchRequest]) -> Result<(), InputError> {
    let mut seen: HashMap<&str, Vec<usize>> = HashMap::with_capacity(requests.len());
    let mut order = Vec::new();
    for request in requests {
        let lines = seen.entry(request.custom_id.as_str()).or_default();
        if lines.len() == 1 {
            order.push(request.custom_id.as_str());
        }
        lines.push(request.line);
    }
    let Some(first) = order.first() else {
        return Ok(());
    };
    Err(InputError::Duplicate {
        custom_id: (*first).to_owned(),
        lines: seen.remove(first).unwrap_or_default(),
        others: order.len() - 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str) -> String {
        format!(
            r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"m","messages":[]}}}}"#
        )
    }

    #[test]
    fn well_formed_lines_are_read_with_their_line_numbers_and_blank_lines_skipped() {
        let text = format!("{}\n\n{}\r\n", line("a"), line("b"));
        let requests = parse(text.as_bytes()).expect("valid");
        assert_eq!(requests.len(), 2);
        assert_eq!((requests[0].custom_id.as_str(), requests[0].line), ("a", 1));
        assert_eq!((requests[1].custom_id.as_str(), requests[1].line), ("b", 3));
        assert_eq!(requests[1].url, "/v1/chat/completions");
        let body: Value = serde_json::from_slice(&requests[0].body).expect("json body");
        assert_eq!(body["model"], "m");
    }

    #[test]
    fn duplicate_ids_name_the_id_and_every_line() {
        let text = [
            line("a"),
            line("b"),
            line("a"),
            line("c"),
            line("b"),
            line("a"),
        ]
        .join("\n");
        match parse(text.as_bytes()) {
            Err(InputError::Duplicate {
                custom_id,
                lines,
                others,
            }) => {
                assert_eq!(custom_id, "a");
                assert_eq!(lines, vec![1, 3, 6]);
                assert_eq!(others, 1);
            }
            other => panic!("expected a duplicate error, got {other:?}"),
        }
        let message = parse(text.as_bytes()).expect_err("dup").to_string();
        assert!(
            message.contains("`a`") && message.contains("1, 3, 6"),
            "{message}"
        );
    }

    #[test]
    fn a_malformed_line_is_named_by_its_number() {
        let text = format!("{}\n{{not json\n", line("a"));
        match parse(text.as_bytes()) {
            Err(InputError::Malformed { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected malformed, got {other:?}"),
        }
        for bad in [
            r#"[1,2]"#,
            r#"{"method":"POST","url":"/v1/x","body":{}}"#,
            r#"{"custom_id":5,"url":"/v1/x","body":{}}"#,
            r#"{"custom_id":"","url":"/v1/x","body":{}}"#,
            r#"{"custom_id":"x","body":{}}"#,
            r#"{"custom_id":"x","url":"/v1/x"}"#,
            r#"{"custom_id":"x","url":"/v1/x","body":"text"}"#,
        ] {
            assert!(
                matches!(
                    parse(bad.as_bytes()),
                    Err(InputError::Malformed { line: 1, .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_post_paths_are_accepted() {
        let get = r#"{"custom_id":"x","method":"GET","url":"/v1/models","body":{}}"#;
        assert!(matches!(
            parse(get.as_bytes()),
            Err(InputError::NotPost { line: 1, .. })
        ));
        for url in [
            "http://evil.example/v1/x",
            "v1/chat/completions",
            "//host/x",
            "/v1/a b",
            "/v1/x<y>",
            "/v1/x`y",
        ] {
            let text = format!(r#"{{"custom_id":"x","method":"POST","url":"{url}","body":{{}}}}"#);
            assert!(
                matches!(
                    parse(text.as_bytes()),
                    Err(InputError::NotAPath { line: 1, .. })
                ),
                "{url}"
            );
        }
        let lower = r#"{"custom_id":"x","method":"post","url":"/v1/x?y=1","body":{}}"#;
        assert!(parse(lower.as_bytes()).is_ok());
        let no_method = r#"{"custom_id":"x","url":"/v1/x","body":{}}"#;
        assert!(parse(no_method.as_bytes()).is_ok());
    }
}
