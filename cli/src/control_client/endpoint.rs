//! Where a control command sends its request: the `--url` of a running `respawn serve`, an
//! [`HttpUrl`] whose path is the prefix a reverse proxy may put respawn under.

use crate::http_url::{HttpUrl, InvalidHttpUrl};

use super::ControlError;

/// The usage hint every malformed URL gets.
const EXPECTED: &str = "use http://HOST:PORT, e.g. http://127.0.0.1:8000";

/// A validated `http://HOST[:PORT][/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Endpoint {
    /// The URL as given, trimmed of spaces and a trailing `/`: what messages quote.
    pub(super) url: String,
    /// `http://HOST[:PORT]` and the path prefix.
    base: String,
}

impl Endpoint {
    /// Checks `url`; every refusal is a [`ControlError::BadUrl`] that says what to type instead.
    pub(super) fn parse(url: &str) -> Result<Endpoint, ControlError> {
        let parsed = HttpUrl::parse(url).map_err(|why| ControlError::BadUrl {
            url: url.to_owned(),
            reason: match why {
                // The likely fix is the same address with the scheme: say it.
                InvalidHttpUrl::NoScheme => {
                    format!("{why}; use http://HOST:PORT, here http://{}", url.trim())
                }
                _ => format!("{why}; {EXPECTED}"),
            },
        })?;
        Ok(Endpoint {
            url: url.trim().trim_end_matches('/').to_owned(),
            base: format!(
                "http://{}{}",
                parsed.authority(),
                parsed.path().trim_end_matches('/')
            ),
        })
    }

    /// The URL of `path` (`/respawn/status`) on this instance.
    pub(super) fn at(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> String {
        Endpoint::parse(url)
            .unwrap_or_else(|err| panic!("{url}: {err}"))
            .at("/respawn/status")
    }

    #[test]
    fn host_port_and_prefix_are_kept() {
        assert_eq!(
            parsed("http://127.0.0.1:8000/"),
            "http://127.0.0.1:8000/respawn/status"
        );
        assert_eq!(
            parsed(" http://[::1]:9000/llm/ "),
            "http://[::1]:9000/llm/respawn/status"
        );
        assert_eq!(
            parsed("http://localhost"),
            "http://localhost/respawn/status"
        );
        assert_eq!(
            parsed("http://h:1/p?q=1"),
            "http://h:1/p/respawn/status",
            "a query is dropped"
        );
        assert_eq!(
            Endpoint::parse("http://h:1/").map(|e| e.url).ok(),
            Some("http://h:1".to_owned())
        );
    }

    #[test]
    fn what_is_not_http_host_port_is_a_usage_error_that_says_what_to_type() {
        for url in ["127.0.0.1:8000", "https://x:1", "http://h:0", ""] {
            match Endpoint::parse(url) {
                Err(err @ ControlError::BadUrl { .. }) => {
                    assert_eq!(err.exit_code(), 2, "{url}");
                    assert!(err.to_string().contains("http://HOST:PORT"), "{url}: {err}");
                }
                other => panic!("{url} was accepted: {other:?}"),
            }
        }
    }
}
