//! Where a control command sends its request: the `--url` of a running `respawn serve`, parsed by
//! the HTTP stack's own URI parser and held to what the control endpoints serve (plain `http://`
//! with a host; no credentials in the URL, since the token travels in a header).

use awc::http::Uri;

use super::ControlError;

/// The usage hint every malformed URL gets.
const EXPECTED: &str = "expected http://HOST:PORT, e.g. http://127.0.0.1:8000";

/// A validated `http://HOST[:PORT][/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Endpoint {
    /// The URL as given, trimmed of spaces and a trailing `/`: what messages quote.
    pub(super) url: String,
    /// `http://HOST[:PORT]` and the path prefix a reverse proxy may put respawn under.
    base: String,
}

impl Endpoint {
    /// Checks `url`; every refusal is a [`ControlError::BadUrl`] that says what to type instead.
    pub(super) fn parse(url: &str) -> Result<Endpoint, ControlError> {
        let bad = |reason: &str| ControlError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = url.trim();
        let uri: Uri = trimmed
            .parse()
            .map_err(|err| bad(&format!("{err}; {EXPECTED}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(scheme) => {
                return Err(bad(&format!(
                    "the `{scheme}` scheme is not supported; use http://HOST:PORT, e.g. http://127.0.0.1:8000"
                )))
            }
            None => return Err(bad(&format!("no scheme; {EXPECTED}"))),
        }
        let Some(authority) = uri.authority() else {
            return Err(bad(EXPECTED));
        };
        if authority.as_str().contains('@') {
            return Err(bad(&format!(
                "credentials do not belong in the URL (pass --token); {EXPECTED}"
            )));
        }
        let host = authority.host();
        if host.is_empty() || host == "[]" {
            return Err(bad("no host"));
        }
        // The parser keeps a port it cannot read as a `u16` as text; refuse it here, and port 0.
        let port_text = authority.as_str()[host.len()..].trim_start_matches(':');
        if !port_text.is_empty() && !matches!(uri.port_u16(), Some(port) if port != 0) {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
        let prefix = uri.path().trim_end_matches('/');
        Ok(Endpoint {
            url: trimmed.trim_end_matches('/').to_owned(),
            base: format!("http://{authority}{prefix}"),
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

    fn refused(url: &str) -> String {
        match Endpoint::parse(url) {
            Err(err @ ControlError::BadUrl { .. }) => {
                assert_eq!(err.exit_code(), 2, "{url}");
                err.to_string()
            }
            other => panic!("{url} was accepted: {other:?}"),
        }
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
    fn what_is_not_http_host_port_is_a_usage_error() {
        assert!(refused("127.0.0.1:8000").contains("no scheme"));
        assert!(refused("localhost").contains("http://HOST:PORT"));
        assert!(refused("https://x:1").contains("`https` scheme"));
        assert!(refused("http://:80").contains("no host"));
        assert!(refused("http://h:99999").contains("1 to 65535"));
        assert!(refused("http://h:0").contains("1 to 65535"));
        assert!(refused("http://user@h:1").contains("credentials"));
        refused("http://h:80/a b");
        refused("");
    }
}
