//! The client behind `respawn status` and `respawn restart`: it talks to a running
//! `respawn serve` over its `/respawn/*` control endpoints.
//!
//! The transport is awc, the HTTP client respawn already uses to reach model servers, run on a
//! short-lived actix system because a command that asks one question has no runtime of its own.
//! One request per connection, `http://` only, bounded three ways: connecting and waiting for the
//! answer's head each by [`ControlClient::io_timeout`], the whole exchange by
//! [`ControlClient::total_timeout`], however slowly the bytes trickle in. The status document
//! is read into the library's [`StatusDocument`], the type the server writes. The errors say
//! what to do: a refused connection names the URL, a 401 says whether the token was missing or
//! wrong, any other non-2xx shows the body the server sent.

mod endpoint;
mod render;

use std::fmt::Write as _;
use std::time::Duration;

use awc::error::{ConnectError, PayloadError, SendRequestError};
use awc::http::header::{ACCEPT, CONTENT_LENGTH, USER_AGENT};
use awc::http::{Method, StatusCode};
use bytes::Bytes;
use respawn::auth::AdminToken;
use respawn::status::StatusDocument;

use endpoint::Endpoint;

/// The largest response accepted; a control endpoint answers a few hundred bytes.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The longest server message quoted in an error.
const MAX_QUOTED_BODY: usize = 500;

/// Why a control request did not get the answer it asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The URL is not an `http://host[:port][/prefix]` URL.
    #[error("invalid URL `{url}`: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing accepted the connection.
    #[error("cannot connect to respawn at {url}: {source}; is `respawn serve` running and listening there?")]
    Connect {
        /// The URL that was tried.
        url: String,
        /// The connection error (refused, unreachable, ...).
        #[source]
        source: std::io::Error,
    },
    /// The instance accepted the connection but did not answer in time.
    #[error("respawn at {url} did not answer within {}", humantime::format_duration(*after))]
    Timeout {
        /// The URL that was asked.
        url: String,
        /// How long the client waited.
        after: Duration,
    },
    /// The connection broke while the request or the response was under way.
    #[error("lost the connection to respawn at {url}: {source}")]
    Io {
        /// The URL that was asked.
        url: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The answer was not HTTP the client understands, or not the document it asked for.
    #[error("respawn at {url} sent a malformed response: {reason}")]
    Malformed {
        /// The URL that was asked.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
    /// 401/403: the token was missing, wrong, or the instance has none configured.
    #[error("{}", unauthorized_message(url, *token_sent, message))]
    Unauthorized {
        /// The URL that was asked.
        url: String,
        /// Whether a token was sent at all.
        token_sent: bool,
        /// What the server said (it never contains the token).
        message: String,
    },
    /// Any other answer outside 2xx.
    #[error("respawn at {url} answered {status}: {body}")]
    Status {
        /// The URL that was asked.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The body the server sent (shortened).
        body: String,
    },
}

fn unauthorized_message(url: &str, token_sent: bool, message: &str) -> String {
    let advice = if token_sent {
        "the admin token was refused: check that it matches the one the instance was started with \
         (--admin-token or RESPAWN_ADMIN_TOKEN); an instance started without a token refuses everyone"
    } else {
        "no admin token was given: pass --token or set RESPAWN_ADMIN_TOKEN to the instance's token"
    };
    if message.is_empty() {
        format!("respawn at {url} refused the request: {advice}")
    } else {
        format!("respawn at {url} refused the request: {advice} (server said: {message})")
    }
}

impl ControlError {
    /// The process exit code: 2 for a malformed URL (a usage error), 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            ControlError::BadUrl { .. } => 2,
            _ => 1,
        }
    }
}

/// A control client with its timeouts; [`status`] and [`restart`] use the defaults.
#[derive(Clone, Copy, Debug)]
pub struct ControlClient {
    /// Bound on connecting, and on waiting for the head of the answer once the request is sent.
    pub io_timeout: Duration,
    /// Bound on the whole exchange, however slowly the bytes trickle in.
    pub total_timeout: Duration,
}

impl Default for ControlClient {
    fn default() -> Self {
        ControlClient {
            io_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(15),
        }
    }
}

/// Asks the instance at `url` for `GET /respawn/status` and renders it: a table for people,
/// or the JSON document (pretty-printed) with `json`.
pub fn status(url: &str, json: bool) -> Result<String, ControlError> {
    ControlClient::default().status(url, json)
}

/// Asks the instance at `url` to restart its server now (`POST /respawn/restart` with
/// `Authorization: Bearer <token>`), and renders its answer.
pub fn restart(url: &str, token: Option<&AdminToken>) -> Result<String, ControlError> {
    ControlClient::default().restart(url, token)
}

/// Which restart `respawn restart` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartWhich {
    /// The server (a pool restarts its replicas one at a time).
    Server,
    /// One replica of a pool (`--replica I`).
    Replica(usize),
    /// Every replica, one at a time (`--rolling`).
    Rolling,
}

/// Like [`restart`], for one replica or a rolling restart.
pub fn restart_asking(
    url: &str,
    token: Option<&AdminToken>,
    which: RestartWhich,
) -> Result<String, ControlError> {
    ControlClient::default().restart_asking(url, token, which)
}

/// A whole answer.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

impl ControlClient {
    /// [`status`] with these timeouts.
    pub fn status(&self, url: &str, json: bool) -> Result<String, ControlError> {
        let endpoint = Endpoint::parse(url)?;
        let answer = self.exchange(&endpoint, Method::GET, "/respawn/status", None)?;
        let answer = answer.require_success(&endpoint, false)?;
        let document: StatusDocument = serde_json::from_slice(&answer.body)
            .map_err(|err| malformed(&endpoint, format!("not a status document ({err})")))?;
        if json {
            // The document as the instance sent it, fields this version does not know included.
            let sent: serde_json::Value = serde_json::from_slice(&answer.body)
                .map_err(|err| malformed(&endpoint, format!("not JSON ({err})")))?;
            serde_json::to_string_pretty(&sent)
                .map_err(|err| malformed(&endpoint, format!("not JSON ({err})")))
        } else {
            Ok(render::status_table(&document))
        }
    }

    /// [`restart`] with these timeouts.
    pub fn restart(&self, url: &str, token: Option<&AdminToken>) -> Result<String, ControlError> {
        self.restart_asking(url, token, RestartWhich::Server)
    }

    /// [`restart`] of one replica of a pool, or of every replica one at a time.
    pub fn restart_asking(
        &self,
        url: &str,
        token: Option<&AdminToken>,
        which: RestartWhich,
    ) -> Result<String, ControlError> {
        let endpoint = Endpoint::parse(url)?;
        let path = match which {
            RestartWhich::Server => "/respawn/restart".to_owned(),
            RestartWhich::Replica(replica) => format!("/respawn/restart?replica={replica}"),
            RestartWhich::Rolling => "/respawn/restart?rolling=true".to_owned(),
        };
        let answer = self.exchange(&endpoint, Method::POST, &path, token)?;
        let answer = answer.require_success(&endpoint, token.is_some())?;
        let body = String::from_utf8_lossy(&answer.body);
        let body = body.trim();
        let mut rendered = format!("restart requested at {} ({})", endpoint.url, answer.status);
        if !body.is_empty() {
            let _ = write!(rendered, ": {}", shorten(body));
        }
        Ok(rendered)
    }

    /// Sends one request and reads the whole answer, within [`ControlClient::total_timeout`].
    fn exchange(
        &self,
        endpoint: &Endpoint,
        method: Method,
        path: &str,
        token: Option<&AdminToken>,
    ) -> Result<Answer, ControlError> {
        let system = actix_rt::System::new();
        system.block_on(async {
            tokio::time::timeout(self.total_timeout, self.send(endpoint, method, path, token))
                .await
                .unwrap_or_else(|_| Err(self.timeout(endpoint, self.total_timeout)))
        })
    }

    async fn send(
        &self,
        endpoint: &Endpoint,
        method: Method,
        path: &str,
        token: Option<&AdminToken>,
    ) -> Result<Answer, ControlError> {
        let client = awc::Client::builder()
            .connector(awc::Connector::new().timeout(self.io_timeout))
            .timeout(self.io_timeout)
            .disable_redirects()
            .finish();
        let mut request = client
            .request(method, endpoint.at(path))
            .insert_header((USER_AGENT, concat!("respawn/", env!("CARGO_PKG_VERSION"))))
            .insert_header((ACCEPT, "application/json"))
            .camel_case()
            .force_close();
        if let Some(token) = token {
            request = request.bearer_auth(token.expose());
        }
        let mut response = request
            .send()
            .await
            .map_err(|err| self.send_error(endpoint, err))?;
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
        let body = response
            .body()
            .limit(MAX_RESPONSE_BYTES)
            .await
            .map_err(|err| body_error(endpoint, err))?;
        // awc ends a body cut short by the peer's close as if it were complete.
        if declared.is_some_and(|length| body.len() < length) {
            return Err(malformed(
                endpoint,
                "the connection closed before the whole body arrived",
            ));
        }
        Ok(Answer {
            status: response.status(),
            body,
        })
    }

    fn timeout(&self, endpoint: &Endpoint, after: Duration) -> ControlError {
        ControlError::Timeout {
            url: endpoint.url.clone(),
            after,
        }
    }

    /// What went wrong before the head of the answer arrived.
    fn send_error(&self, endpoint: &Endpoint, err: SendRequestError) -> ControlError {
        let url = endpoint.url.clone();
        match err {
            SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
                self.timeout(endpoint, self.io_timeout)
            }
            SendRequestError::Connect(ConnectError::Io(source)) => {
                ControlError::Connect { url, source }
            }
            // awc's word for a connection the server closed without writing an answer.
            SendRequestError::Connect(ConnectError::Disconnected) => {
                malformed(endpoint, "the connection closed without an answer")
            }
            SendRequestError::Connect(other) => ControlError::Connect {
                url,
                source: std::io::Error::other(other.to_string()),
            },
            SendRequestError::Send(source) => ControlError::Io { url, source },
            SendRequestError::Response(parse) => malformed(endpoint, parse.to_string()),
            other => ControlError::Io {
                url,
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

/// What went wrong while the body was read.
fn body_error(endpoint: &Endpoint, err: PayloadError) -> ControlError {
    match err {
        PayloadError::Overflow => malformed(
            endpoint,
            format!("response larger than {MAX_RESPONSE_BYTES} bytes"),
        ),
        PayloadError::Io(source) => ControlError::Io {
            url: endpoint.url.clone(),
            source,
        },
        other => malformed(endpoint, other.to_string()),
    }
}

fn malformed(endpoint: &Endpoint, reason: impl Into<String>) -> ControlError {
    ControlError::Malformed {
        url: endpoint.url.clone(),
        reason: reason.into(),
    }
}

impl Answer {
    /// Passes 2xx through; turns anything else into the matching [`ControlError`].
    fn require_success(
        self,
        endpoint: &Endpoint,
        token_sent: bool,
    ) -> Result<Answer, ControlError> {
        if self.status.is_success() {
            return Ok(self);
        }
        let body = String::from_utf8_lossy(&self.body);
        let message = server_message(body.trim());
        let url = endpoint.url.clone();
        match self.status.as_u16() {
            401 | 403 => Err(ControlError::Unauthorized {
                url,
                token_sent,
                message,
            }),
            status => Err(ControlError::Status {
                url,
                status,
                body: if message.is_empty() {
                    self.status
                        .canonical_reason()
                        .unwrap_or_default()
                        .to_owned()
                } else {
                    message
                },
            }),
        }
    }
}

/// The readable part of an error body: the `error`/`message` field of a JSON body, or the text.
fn server_message(body: &str) -> String {
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(body) {
        // The OpenAI shape respawn answers with: `{"error": {"message": ...}}`.
        if let Some(serde_json::Value::String(text)) =
            fields.get("error").and_then(|error| error.get("message"))
        {
            return shorten(text);
        }
        for key in ["error", "message", "reason", "detail"] {
            if let Some(serde_json::Value::String(text)) = fields.get(key) {
                return shorten(text);
            }
        }
    }
    shorten(body)
}

/// At most [`MAX_QUOTED_BODY`] characters of `text`, marked when cut.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
