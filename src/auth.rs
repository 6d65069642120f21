//! Bearer tokens for control endpoints.
//!
//! Every control endpoint (`POST /restart` of [`crate::web`], respawn's own admin API) is guarded
//! by one shared secret, an [`AdminToken`]. The rules, in one place so every endpoint behaves the
//! same:
//!
//! - a token is mandatory: with no token configured, [`authorize`] refuses everyone (an open
//!   restart endpoint is a denial-of-service switch);
//! - the comparison runs in constant time ([`AdminToken::verify_header`]);
//! - the token never reaches a log: `Debug` and `Display` print `<redacted>`.

use std::fmt;

use actix_web::{http::header, HttpRequest, HttpResponse, ResponseError};

/// A bearer token for control endpoints.
///
/// `Debug` and `Display` print `<redacted>`, so the token cannot leak through a log line or an
/// error message by accident.
#[derive(Clone)]
pub struct AdminToken(String);

/// Why a string cannot be used as an [`AdminToken`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    /// The token is empty or only whitespace: set a real secret.
    #[error("the admin token is empty; set a non-empty secret")]
    Empty,
    /// The token holds a character outside visible ASCII (`!`..=`~`), which cannot travel in an
    /// `Authorization` header unchanged; generate it e.g. with `openssl rand -hex 32`.
    #[error(
        "the admin token has a character outside visible ASCII at byte {position}; \
         use e.g. `openssl rand -hex 32`"
    )]
    NotVisibleAscii {
        /// Byte offset of the first offending character.
        position: usize,
    },
    /// The environment variable is set but is not valid Unicode.
    #[error("environment variable {var} is not valid Unicode")]
    NotUnicode {
        /// The variable that was read.
        var: String,
    },
}

impl AdminToken {
    /// Validates and wraps a token.
    ///
    /// Empty, whitespace-only and non-visible-ASCII tokens are refused, because they either
    /// guard nothing or cannot be sent in an `Authorization` header.
    pub fn new(token: impl Into<String>) -> Result<Self, InvalidToken> {
        let token = token.into();
        if token.trim().is_empty() {
            return Err(InvalidToken::Empty);
        }
        if let Some(position) = token.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
            return Err(InvalidToken::NotVisibleAscii { position });
        }
        Ok(Self(token))
    }

    /// Reads a token from the environment variable `var`; `Ok(None)` when it is unset.
    ///
    /// Meant for binaries, which read their environment once at start and pass the token on.
    pub fn from_env(var: &str) -> Result<Option<Self>, InvalidToken> {
        match std::env::var(var) {
            Ok(value) => Self::new(value).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(InvalidToken::NotUnicode {
                var: var.to_owned(),
            }),
        }
    }

    /// The token itself, for a client that must send it (e.g. in an `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Checks an `Authorization` header value (`Bearer <token>`) in constant time.
    ///
    /// The loop always runs over every byte of the configured token, whatever the candidate
    /// holds: the time taken depends neither on where the first difference is nor on how the
    /// candidate's length compares with the token's (missing bytes are compared as zero, and a
    /// length mismatch is folded into the same accumulator). Only the configured token's own
    /// length, which is the same for every attempt, shapes the timing.
    pub fn verify_header(&self, header: Option<&[u8]>) -> bool {
        let Some(value) = header else {
            return false;
        };
        let Some(candidate) = strip_bearer(value) else {
            return false;
        };
        let expected = self.0.as_bytes();
        let mut diff = u8::from(candidate.len() != expected.len());
        for (i, byte) in expected.iter().enumerate() {
            let other = candidate.get(i).copied().unwrap_or(0);
            diff |= byte ^ other;
        }
        std::hint::black_box(diff) == 0
    }
}

/// Strips the `Bearer ` scheme (case-insensitive, as RFC 7235 says) and surrounding spaces.
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    Some(value[SCHEME.len()..].trim_ascii())
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl fmt::Display for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> serde::Deserialize<'de> for AdminToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::new(raw).map_err(serde::de::Error::custom)
    }
}

/// Why a control request was refused; answers 401 with `WWW-Authenticate: Bearer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthorized {
    /// No token is configured, so the endpoint refuses everyone.
    #[error(
        "no admin token is configured, so this endpoint refuses every request; \
         set RESPAWN_ADMIN_TOKEN (or the service's token setting) and send \
         `Authorization: Bearer <token>`"
    )]
    NoTokenConfigured,
    /// The request carried no `Authorization: Bearer` header.
    #[error("missing `Authorization: Bearer <token>` header")]
    MissingToken,
    /// The request carried a token, and it is not the configured one.
    #[error("wrong admin token")]
    WrongToken,
}

impl ResponseError for Unauthorized {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::UNAUTHORIZED
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .json(serde_json::json!({
                "error": {
                    "message": self.to_string(),
                    "type": "unauthorized",
                    "code": 401,
                }
            }))
    }
}

/// The check every control endpoint does before acting.
///
/// No token configured refuses everyone; otherwise the request's `Authorization` header must
/// carry the token ([`AdminToken::verify_header`]).
pub fn authorize(configured: Option<&AdminToken>, req: &HttpRequest) -> Result<(), Unauthorized> {
    let Some(token) = configured else {
        return Err(Unauthorized::NoTokenConfigured);
    };
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    if header.is_none() {
        return Err(Unauthorized::MissingToken);
    }
    if token.verify_header(header) {
        Ok(())
    } else {
        Err(Unauthorized::WrongToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> AdminToken {
        AdminToken::new("s3cret-token").unwrap()
    }

    #[test]
    fn accepts_the_right_token() {
        assert!(token().verify_header(Some(b"Bearer s3cret-token")));
        assert!(token().verify_header(Some(b"bearer s3cret-token")));
    }

    #[test]
    fn refuses_a_wrong_token_of_the_same_length() {
        assert!(!token().verify_header(Some(b"Bearer s3cret-tokem")));
        assert!(!token().verify_header(Some(b"Bearer X3cret-token")));
    }

    #[test]
    fn refuses_a_wrong_length() {
        assert!(!token().verify_header(Some(b"Bearer s3cret-toke")));
        assert!(!token().verify_header(Some(b"Bearer s3cret-token2")));
        assert!(!token().verify_header(Some(b"Bearer s3cret-token\0")));
    }

    #[test]
    fn refuses_without_the_bearer_scheme() {
        assert!(!token().verify_header(Some(b"s3cret-token")));
        assert!(!token().verify_header(Some(b"Basic s3cret-token")));
        assert!(!token().verify_header(Some(b"Bearers3cret-token")));
    }

    #[test]
    fn refuses_empty_and_missing() {
        assert!(!token().verify_header(Some(b"")));
        assert!(!token().verify_header(Some(b"Bearer ")));
        assert!(!token().verify_header(None));
    }

    #[test]
    fn validates_tokens() {
        assert_eq!(AdminToken::new("").unwrap_err(), InvalidToken::Empty);
        assert_eq!(AdminToken::new("  \t").unwrap_err(), InvalidToken::Empty);
        assert_eq!(
            AdminToken::new("ab cd").unwrap_err(),
            InvalidToken::NotVisibleAscii { position: 2 }
        );
        assert_eq!(
            AdminToken::new("tökén").unwrap_err(),
            InvalidToken::NotVisibleAscii { position: 1 }
        );
    }

    #[test]
    fn never_prints_the_token() {
        let t = token();
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(!format!("{t}").contains("s3cret"));
    }

    #[test]
    fn deserializes_with_validation() {
        let ok: AdminToken = serde_json::from_str("\"abc\"").unwrap();
        assert!(ok.verify_header(Some(b"Bearer abc")));
        assert!(serde_json::from_str::<AdminToken>("\"\"").is_err());
    }

    #[test]
    fn authorize_refuses_everyone_without_a_configured_token() {
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::AUTHORIZATION, "Bearer anything"))
            .to_http_request();
        assert_eq!(authorize(None, &req), Err(Unauthorized::NoTokenConfigured));
        let t = token();
        assert_eq!(authorize(Some(&t), &req), Err(Unauthorized::WrongToken));
        let bare = actix_web::test::TestRequest::default().to_http_request();
        assert_eq!(authorize(Some(&t), &bare), Err(Unauthorized::MissingToken));
        let good = actix_web::test::TestRequest::default()
            .insert_header((header::AUTHORIZATION, "Bearer s3cret-token"))
            .to_http_request();
        assert_eq!(authorize(Some(&t), &good), Ok(()));
    }
}
