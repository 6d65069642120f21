//! The `http://HOST[:PORT][/PATH]` URLs respawn is given (`--url` of the control commands,
//! `--upstream`, `--restart-url`): parsed by the HTTP stack's own URI parser, then held to what
//! respawn speaks: plain HTTP/1.1 (no TLS) to a named host, with no credentials in the URL.

use awc::http::Uri;

/// A URL respawn can send requests to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    uri: Uri,
}

/// Why a URL is not one respawn can use; the text says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidHttpUrl {
    /// Not a URL at all (spaces, control characters, an empty string, ...).
    #[error("{0}")]
    Unparsable(String),
    /// `host:port` without `http://`.
    #[error("no scheme")]
    NoScheme,
    /// A scheme other than `http` (`https`: respawn does not speak TLS).
    #[error("the `{0}` scheme is not supported")]
    Scheme(String),
    /// `http://` with nothing after it, or `http://:8000`.
    #[error("no host")]
    NoHost,
    /// `http://user:password@host`: tokens travel in headers.
    #[error("credentials do not belong in the URL")]
    Credentials,
    /// A port that is not a number from 1 to 65535.
    #[error("the port is not a number from 1 to 65535")]
    Port,
}

impl HttpUrl {
    /// Parses `text` (surrounding spaces ignored).
    pub fn parse(text: &str) -> Result<HttpUrl, InvalidHttpUrl> {
        let uri: Uri = text
            .trim()
            .parse()
            .map_err(|err: awc::http::uri::InvalidUri| {
                InvalidHttpUrl::Unparsable(err.to_string())
            })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(scheme) => return Err(InvalidHttpUrl::Scheme(scheme.to_owned())),
            None => return Err(InvalidHttpUrl::NoScheme),
        }
        let authority = uri.authority().ok_or(InvalidHttpUrl::NoHost)?;
        if authority.as_str().contains('@') {
            return Err(InvalidHttpUrl::Credentials);
        }
        let host = authority.host();
        if host.is_empty() || host == "[]" {
            return Err(InvalidHttpUrl::NoHost);
        }
        // The parser keeps a port it cannot read as a `u16` as text; refuse it here, and port 0.
        let port_text = authority.as_str()[host.len()..].trim_start_matches(':');
        if !port_text.is_empty() && !matches!(uri.port_u16(), Some(port) if port != 0) {
            return Err(InvalidHttpUrl::Port);
        }
        Ok(HttpUrl { uri })
    }

    /// `HOST[:PORT]`.
    pub fn authority(&self) -> &str {
        self.uri.authority().map_or("", |a| a.as_str())
    }

    /// The path, without a query (`/` when there is none).
    pub fn path(&self) -> &str {
        self.uri.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_urls_are_accepted() {
        for (text, authority, path) in [
            ("http://127.0.0.1:8000", "127.0.0.1:8000", "/"),
            (" http://[::1]:9000/llm/ ", "[::1]:9000", "/llm/"),
            ("http://model-host", "model-host", "/"),
            ("http://h:1/p?q=1", "h:1", "/p"),
        ] {
            let url = HttpUrl::parse(text).unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!((url.authority(), url.path()), (authority, path), "{text}");
        }
    }

    #[test]
    fn every_refusal_says_why() {
        for (text, why) in [
            ("127.0.0.1:8000", InvalidHttpUrl::NoScheme),
            ("localhost", InvalidHttpUrl::NoScheme),
            ("https://x:1", InvalidHttpUrl::Scheme("https".into())),
            ("http://:80", InvalidHttpUrl::NoHost),
            ("http://h:99999", InvalidHttpUrl::Port),
            ("http://h:0", InvalidHttpUrl::Port),
            ("http://user@h:1", InvalidHttpUrl::Credentials),
        ] {
            assert_eq!(HttpUrl::parse(text), Err(why), "{text}");
        }
        for text in ["", "http://", "http://h:80/a b", "http://host:notaport"] {
            assert!(HttpUrl::parse(text).is_err(), "{text}");
        }
    }
}
