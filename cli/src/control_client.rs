//! The small HTTP client behind `respawn status` and `respawn restart`: it talks to a running
//! `respawn serve` over its `/respawn/*` control endpoints.
//!
//! It is blocking and deliberately minimal — one HTTP/1.1 request per connection
//! (`Connection: close`) over a [`std::net::TcpStream`], `http://` only, with connect, read and
//! overall timeouts — because a command-line tool that asks one question needs no runtime. The
//! errors say what to do: a refused connection names the URL, a 401 says whether the token was
//! missing or wrong, any other non-2xx shows the body the server sent.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use respawn::auth::AdminToken;

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
    /// The answer was not HTTP the client understands.
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
    /// Bound on connecting, and on each read or write.
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

impl ControlClient {
    /// [`status`] with these timeouts.
    pub fn status(&self, url: &str, json: bool) -> Result<String, ControlError> {
        let endpoint = Endpoint::parse(url)?;
        let response = self.exchange(&endpoint, "GET", "/respawn/status", None)?;
        let response = response.require_success(&endpoint, false)?;
        let text = String::from_utf8_lossy(&response.body);
        let document: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        Ok(match (document, json) {
            (Some(document), true) => {
                serde_json::to_string_pretty(&document).unwrap_or_else(|_| text.into_owned())
            }
            (Some(serde_json::Value::Object(fields)), false) => render_status(&fields),
            _ => text.trim_end().to_owned(),
        })
    }

    /// [`restart`] with these timeouts.
    pub fn restart(&self, url: &str, token: Option<&AdminToken>) -> Result<String, ControlError> {
        let endpoint = Endpoint::parse(url)?;
        let response = self.exchange(&endpoint, "POST", "/respawn/restart", token)?;
        let response = response.require_success(&endpoint, token.is_some())?;
        let body = String::from_utf8_lossy(&response.body);
        let body = body.trim();
        let mut rendered = format!(
            "restart requested at {} ({} {})",
            endpoint.url, response.status, response.reason
        );
        if !body.is_empty() {
            let _ = write!(rendered, ": {}", shorten(body));
        }
        Ok(rendered)
    }

    /// Sends one request and reads the whole response.
    fn exchange(
        &self,
        endpoint: &Endpoint,
        method: &str,
        path: &str,
        token: Option<&AdminToken>,
    ) -> Result<Response, ControlError> {
        let started = Instant::now();
        let mut stream = self.connect(endpoint)?;
        let io = |source: std::io::Error| self.io_error(endpoint, started, source);
        stream.set_read_timeout(Some(self.io_timeout)).map_err(io)?;
        stream
            .set_write_timeout(Some(self.io_timeout))
            .map_err(io)?;
        let mut request = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: respawn/{}\r\nAccept: application/json\r\n\
             Connection: close\r\nContent-Length: 0\r\n",
            endpoint.prefix,
            endpoint.authority,
            env!("CARGO_PKG_VERSION"),
        );
        if let Some(token) = token {
            let _ = write!(request, "Authorization: Bearer {}\r\n", token.expose());
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).map_err(io)?;
        stream.flush().map_err(io)?;

        let mut raw = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            if started.elapsed() > self.total_timeout {
                return Err(ControlError::Timeout {
                    url: endpoint.url.clone(),
                    after: self.total_timeout,
                });
            }
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buffer[..n]);
                    if raw.len() > MAX_RESPONSE_BYTES {
                        return Err(endpoint.malformed(format!(
                            "response larger than {MAX_RESPONSE_BYTES} bytes"
                        )));
                    }
                    // Stop as soon as a complete response is in, even if the server keeps the
                    // connection open despite `Connection: close`.
                    if let Ok(Some(response)) = Response::parse(&raw) {
                        return Ok(response);
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(io(err)),
            }
        }
        match Response::parse_at_eof(&raw) {
            Ok(response) => Ok(response),
            Err(reason) => Err(endpoint.malformed(reason)),
        }
    }

    /// Connects to the first address of the endpoint that accepts.
    fn connect(&self, endpoint: &Endpoint) -> Result<TcpStream, ControlError> {
        let addresses: Vec<SocketAddr> = (endpoint.host.as_str(), endpoint.port)
            .to_socket_addrs()
            .map_err(|source| ControlError::Connect {
                url: endpoint.url.clone(),
                source,
            })?
            .collect();
        let mut last_error = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{}` resolves to no address", endpoint.host),
        );
        for address in addresses {
            match TcpStream::connect_timeout(&address, self.io_timeout) {
                Ok(stream) => return Ok(stream),
                Err(err) => last_error = err,
            }
        }
        if matches!(
            last_error.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) {
            return Err(ControlError::Timeout {
                url: endpoint.url.clone(),
                after: self.io_timeout,
            });
        }
        Err(ControlError::Connect {
            url: endpoint.url.clone(),
            source: last_error,
        })
    }

    fn io_error(
        &self,
        endpoint: &Endpoint,
        started: Instant,
        source: std::io::Error,
    ) -> ControlError {
        if matches!(
            source.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) {
            ControlError::Timeout {
                url: endpoint.url.clone(),
                after: started.elapsed().max(self.io_timeout),
            }
        } else {
            ControlError::Io {
                url: endpoint.url.clone(),
                source,
            }
        }
    }
}

/// Where a running instance listens, from a URL such as `http://127.0.0.1:8000`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    /// The URL as given, for messages.
    url: String,
    /// The host to resolve (brackets of an IPv6 literal removed).
    host: String,
    port: u16,
    /// `host:port` as sent in the `Host` header.
    authority: String,
    /// A path prefix the instance is mounted under (empty, or `/something` without a trailing `/`).
    prefix: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, ControlError> {
        let bad = |reason: &str| ControlError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = url.trim();
        let rest = match trimmed.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "the `{scheme}` scheme is not supported; use http://HOST:PORT, e.g. http://127.0.0.1:8000"
                )))
            }
            // `host:port` alone is a usage error (exit 2), as docs/CONFIG.md says, with the fix.
            None => {
                return Err(bad(&format!(
                    "no scheme; use http://HOST:PORT, e.g. http://{trimmed}"
                )))
            }
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if authority.is_empty()
            || authority.contains('@')
            || authority
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad("expected http://HOST:PORT, e.g. http://127.0.0.1:8000"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed
                    .split_once(']')
                    .ok_or_else(|| bad("unclosed `[` in the host"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .map_err(|_| bad("the port is not a number from 1 to 65535"))?,
            None => 80,
        };
        if port == 0 {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
        let path = path.split(['?', '#']).next().unwrap_or_default();
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("the path has spaces or control characters"));
        }
        Ok(Endpoint {
            url: trimmed.trim_end_matches('/').to_owned(),
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    fn malformed(&self, reason: impl Into<String>) -> ControlError {
        ControlError::Malformed {
            url: self.url.clone(),
            reason: reason.into(),
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
struct Response {
    status: u16,
    reason: String,
    body: Vec<u8>,
}

impl Response {
    /// Parses a complete response; `Ok(None)` while more bytes are needed to know.
    fn parse(raw: &[u8]) -> Result<Option<Response>, String> {
        let Some(head_end) = find(raw, b"\r\n\r\n") else {
            return Ok(None);
        };
        let head = std::str::from_utf8(&raw[..head_end])
            .map_err(|_| "the response head is not text".to_owned())?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(format!(
                "expected an HTTP/1.x status line, got `{}`",
                shorten(status_line)
            ));
        }
        let status: u16 = parts
            .next()
            .and_then(|code| code.parse().ok())
            .filter(|code| (100..=999).contains(code))
            .ok_or_else(|| format!("no status code in `{}`", shorten(status_line)))?;
        let reason = parts.next().unwrap_or_default().to_owned();
        let mut content_length = None;
        let mut chunked = false;
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("malformed header line `{}`", shorten(line)))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| format!("invalid Content-Length `{}`", shorten(value)))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value
                    .to_ascii_lowercase()
                    .split(',')
                    .any(|coding| coding.trim() == "chunked");
            }
        }
        let body = &raw[head_end + 4..];
        let body = if chunked {
            match decode_chunked(body)? {
                Some(body) => body,
                None => return Ok(None),
            }
        } else if let Some(length) = content_length {
            if body.len() < length {
                return Ok(None);
            }
            body[..length].to_vec()
        } else if (100..200).contains(&status) || status == 204 || status == 304 {
            Vec::new()
        } else {
            // The body runs to the end of the connection.
            return Ok(None);
        };
        Ok(Some(Response {
            status,
            reason,
            body,
        }))
    }

    /// Parses the response once the server closed the connection.
    fn parse_at_eof(raw: &[u8]) -> Result<Response, String> {
        if raw.is_empty() {
            return Err("the connection closed without an answer".to_owned());
        }
        if let Some(response) = Response::parse(raw)? {
            return Ok(response);
        }
        let Some(head_end) = find(raw, b"\r\n\r\n") else {
            return Err("the connection closed in the middle of the response head".to_owned());
        };
        // Parse the head alone, then take everything after it as the body (a close-delimited body).
        let mut head = raw[..head_end + 4].to_vec();
        let has_framing = std::str::from_utf8(&head)
            .map(|head| {
                head.lines().any(|line| {
                    let name = line.split(':').next().unwrap_or_default();
                    name.eq_ignore_ascii_case("content-length")
                        || name.eq_ignore_ascii_case("transfer-encoding")
                })
            })
            .unwrap_or(false);
        if has_framing {
            return Err("the connection closed before the whole body arrived".to_owned());
        }
        head.truncate(head_end);
        head.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        let mut response =
            Response::parse(&head)?.ok_or_else(|| "incomplete response".to_owned())?;
        response.body = raw[head_end + 4..].to_vec();
        Ok(response)
    }

    /// Passes 2xx through; turns anything else into the matching [`ControlError`].
    fn require_success(
        self,
        endpoint: &Endpoint,
        token_sent: bool,
    ) -> Result<Response, ControlError> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let body = String::from_utf8_lossy(&self.body);
        let message = server_message(body.trim());
        match self.status {
            401 | 403 => Err(ControlError::Unauthorized {
                url: endpoint.url.clone(),
                token_sent,
                message,
            }),
            status => Err(ControlError::Status {
                url: endpoint.url.clone(),
                status,
                body: if message.is_empty() {
                    self.reason
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

/// Decodes a chunked body; `Ok(None)` while the last chunk has not arrived.
fn decode_chunked(mut raw: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(raw, b"\r\n") else {
            return Ok(None);
        };
        let size_line =
            std::str::from_utf8(&raw[..line_end]).map_err(|_| "malformed chunk size".to_owned())?;
        let size_text = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("malformed chunk size `{}`", shorten(size_text)))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if size > MAX_RESPONSE_BYTES || raw.len() < size.saturating_add(2) {
            return if size > MAX_RESPONSE_BYTES {
                Err("chunk too large".to_owned())
            } else {
                Ok(None)
            };
        }
        body.extend_from_slice(&raw[..size]);
        if &raw[size..size + 2] != b"\r\n" {
            return Err("a chunk does not end with CRLF".to_owned());
        }
        raw = &raw[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// At most [`MAX_QUOTED_BODY`] characters of `text`, marked when cut.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The status document as an aligned table, the well-known fields first.
fn render_status(fields: &serde_json::Map<String, serde_json::Value>) -> String {
    const FIRST: [&str; 6] = [
        "state",
        "generation",
        "pid",
        "restarts",
        "last_restart",
        "uptime_s",
    ];
    let mut rows: Vec<(String, String)> = Vec::new();
    let ordered = FIRST
        .iter()
        .filter_map(|key| fields.get_key_value(*key))
        .chain(
            fields
                .iter()
                .filter(|(key, _)| !FIRST.contains(&key.as_str())),
        );
    for (key, value) in ordered {
        match (key.as_str(), value) {
            ("uptime_s", serde_json::Value::Number(seconds)) => {
                let text = seconds.as_u64().map_or_else(
                    || seconds.to_string(),
                    |s| humantime::format_duration(Duration::from_secs(s)).to_string(),
                );
                rows.push(("uptime".to_owned(), text));
            }
            ("last_restart", serde_json::Value::Object(restart)) => {
                rows.push(("last restart".to_owned(), render_last_restart(restart)));
            }
            (_, serde_json::Value::Object(inner)) => {
                for (inner_key, inner_value) in inner {
                    rows.push((
                        format!("{} {}", key.replace('_', " "), inner_key.replace('_', " ")),
                        plain(inner_value),
                    ));
                }
            }
            _ => rows.push((key.replace('_', " "), plain(value))),
        }
    }
    let width = rows
        .iter()
        .map(|(key, _)| key.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "{key:<width$}  {value}");
    }
    out.trim_end().to_owned()
}

/// `health_probes, ready again after 1.8s, at 2025-01-01T00:00:00Z`.
fn render_last_restart(restart: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut parts = Vec::new();
    if let Some(cause) = restart.get("cause") {
        parts.push(plain(cause));
    }
    if let Some(ms) = restart
        .get("duration_ms")
        .and_then(serde_json::Value::as_u64)
    {
        parts.push(format!(
            "ready again after {}",
            humantime::format_duration(Duration::from_millis(ms))
        ));
    }
    if let Some(at) = restart.get("at").and_then(serde_json::Value::as_u64) {
        let when = UNIX_EPOCH
            .checked_add(Duration::from_secs(at))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        parts.push(format!("at {}", humantime::format_rfc3339_seconds(when)));
    }
    if parts.is_empty() {
        serde_json::Value::Object(restart.clone()).to_string()
    } else {
        parts.join(", ")
    }
}

/// A JSON value as plain text: strings without quotes, null as `-`.
fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_host_port_and_prefix() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8000/").unwrap();
        assert_eq!(
            (
                endpoint.host.as_str(),
                endpoint.port,
                endpoint.prefix.as_str()
            ),
            ("127.0.0.1", 8000, "")
        );
        let endpoint = Endpoint::parse("http://[::1]:9000/llm/").unwrap();
        assert_eq!(
            (
                endpoint.host.as_str(),
                endpoint.port,
                endpoint.prefix.as_str()
            ),
            ("::1", 9000, "/llm")
        );
        assert_eq!(Endpoint::parse("http://localhost").unwrap().port, 80);
        match Endpoint::parse("localhost:8000") {
            Err(err @ ControlError::BadUrl { .. }) => {
                assert_eq!(err.exit_code(), 2);
                assert!(err.to_string().contains("http://localhost:8000"), "{err}");
            }
            other => panic!("a URL without a scheme is a usage error: {other:?}"),
        }
        assert!(matches!(
            Endpoint::parse("https://x:1"),
            Err(ControlError::BadUrl { .. })
        ));
        assert!(matches!(
            Endpoint::parse("http://:80"),
            Err(ControlError::BadUrl { .. })
        ));
        assert!(matches!(
            Endpoint::parse("http://h:99999"),
            Err(ControlError::BadUrl { .. })
        ));
        assert!(matches!(
            Endpoint::parse("http://user@h:1"),
            Err(ControlError::BadUrl { .. })
        ));
    }

    #[test]
    fn responses_parse_with_length_chunks_or_close() {
        let response = Response::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
            .unwrap()
            .unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"hi"[..])
        );
        assert!(
            Response::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi")
                .unwrap()
                .is_none()
        );
        let chunked = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(Response::parse(chunked).unwrap().unwrap().body, b"abcde");
        let close =
            Response::parse_at_eof(b"HTTP/1.0 500 Oops\r\nServer: x\r\n\r\nbroken").unwrap();
        assert_eq!((close.status, close.body.as_slice()), (500, &b"broken"[..]));
        assert!(Response::parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(Response::parse_at_eof(b"").is_err());
        assert!(Response::parse_at_eof(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhi").is_err());
    }

    #[test]
    fn status_renders_known_fields_first() {
        let document = serde_json::json!({
            "zeta": 1, "state": "ready", "generation": 3, "pid": 42, "restarts": 2, "uptime_s": 3725,
            "last_restart": {"cause": "health_probes", "duration_ms": 1800, "at": 0}
        });
        let serde_json::Value::Object(fields) = document else {
            unreachable!()
        };
        let table = render_status(&fields);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("state") && lines[0].ends_with("ready"),
            "{table}"
        );
        assert!(table.contains("uptime        1h 2m 5s"), "{table}");
        assert!(
            table.contains("health_probes, ready again after 1s 800ms, at 1970-01-01T00:00:00Z"),
            "{table}"
        );
        assert!(lines.last().unwrap().starts_with("zeta"), "{table}");
    }
}
