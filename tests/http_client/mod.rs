//! The one HTTP client of the process tests: awc, the client respawn itself uses, on a thread of
//! its own, behind blocking calls that the (synchronous) tests make from any thread.
//!
//! - [`request`]: one request, the whole answer, or an error when no complete answer came;
//! - [`open`]: one request whose body is read as it arrives: every piece with its arrival time
//!   ([`StreamingResponse::next_chunk`]), Server-Sent Events ([`StreamingResponse::events_until`])
//!   and how the body ended ([`BodyEnd`]): cleanly, broken, or silent past the timeout;
//! - [`raw_exchange`]: bytes on a plain socket, for the tests that send malformed or unusual
//!   requests on purpose (no client would send them).
//!
//! Every request goes on a fresh connection (`Connection: close`), with `Content-Type:
//! application/json` unless another type is given for a non-empty body. Dropping a
//! [`StreamingResponse`] closes its connection at once, as a client that leaves does.
//!
//! awc ends a body the peer cut short (a chunked body without its last chunk, fewer bytes than
//! its `Content-Length`) as if it were complete. The tests must tell the two apart, so the
//! connection is watched underneath awc: a body with framing whose connection reached its end of
//! file before the body's end is [`BodyEnd::Broken`].

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc as std_mpsc;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_rt::net::{ActixStream, Ready};
use actix_tls::connect::{ConnectError as TcpConnectError, ConnectInfo, Connection};
use awc::error::{ConnectError, SendRequestError};
use awc::http::header::{HeaderName, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use awc::http::{Method, Uri};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

pub mod pause;

/// Bound on connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// What the tests see
// ---------------------------------------------------------------------------------------------

/// Status and headers of an answer.
#[derive(Debug, Clone)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// Header names (lower-case) and values.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How a body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEnd {
    /// The last chunk of a chunked body, the declared length, or a close for an unframed body.
    Clean,
    /// The connection closed or broke before the body's end.
    Broken(String),
    /// Nothing arrived within the timeout.
    TimedOut,
}

/// One piece of a body and when it arrived.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// When the client received it.
    pub at: Instant,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// When the chunk that completed it arrived (for a body parsed after the fact with
    /// [`sse_events`]: when it was parsed).
    pub at: Instant,
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined by newlines.
    pub data: String,
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Header names (lower-case) and values.
    pub headers: Vec<(String, String)>,
    /// The body, framing removed.
    pub body: Vec<u8>,
    /// How the body ended ([`request`] only returns clean ones).
    pub end: BodyEnd,
}

impl Reply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the status and the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// The body as JSON, if it is JSON.
    pub fn try_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// `error.type` of an OpenAI-shaped error body.
    pub fn error_type(&self) -> Option<String> {
        self.try_json()?["error"]["type"]
            .as_str()
            .map(str::to_owned)
    }

    /// The generation that answered, from `x-respawn-generation`.
    pub fn generation(&self) -> Option<u64> {
        self.header("x-respawn-generation")
            .and_then(|v| v.parse().ok())
    }

    /// The Server-Sent Events of the body.
    pub fn events(&self) -> Vec<SseEvent> {
        sse_events(&self.body)
    }

    /// The reply when its body ended cleanly, else an error that says how it ended.
    pub fn complete(self) -> io::Result<Reply> {
        match self.end {
            BodyEnd::Clean => Ok(self),
            end => Err(io::Error::other(format!(
                "status {} body ended badly: {end:?}",
                self.status
            ))),
        }
    }
}

/// An answer whose body is read as it arrives.
pub struct StreamingResponse {
    /// Status and headers.
    pub head: Head,
    pieces: mpsc::UnboundedReceiver<Piece>,
    finished: bool,
    parser: SseParser,
    parsed: VecDeque<SseEvent>,
}

impl StreamingResponse {
    /// The next piece of the body; `Ok(None)` at its clean end.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, BodyEnd> {
        if self.finished {
            return Ok(None);
        }
        let piece = self.pieces.blocking_recv().unwrap_or_else(|| {
            Piece::End(BodyEnd::Broken("the HTTP client thread stopped".into()))
        });
        match piece {
            Piece::Chunk(chunk) => Ok(Some(chunk)),
            Piece::End(end) => {
                self.finished = true;
                match end {
                    BodyEnd::Clean => Ok(None),
                    end => Err(end),
                }
            }
        }
    }

    /// Reads the body to its end: every piece with its arrival time, and how it ended.
    pub fn collect(mut self) -> (Vec<Chunk>, BodyEnd) {
        let mut chunks = Vec::new();
        loop {
            match self.next_chunk() {
                Ok(Some(chunk)) => chunks.push(chunk),
                Ok(None) => return (chunks, BodyEnd::Clean),
                Err(end) => return (chunks, end),
            }
        }
    }

    /// Reads the whole body into a [`Reply`] that records how it ended.
    pub fn into_reply(self) -> Reply {
        let head = self.head.clone();
        let (chunks, end) = self.collect();
        Reply {
            status: head.status,
            headers: head.headers,
            body: chunks.into_iter().flat_map(|c| c.bytes).collect(),
            end,
        }
    }

    /// Reads Server-Sent Events until `stop` says so or the body ends; events that arrived in
    /// the same piece after the one `stop` accepted are kept for the next call.
    pub fn events_until(
        &mut self,
        mut stop: impl FnMut(&SseEvent) -> bool,
    ) -> (Vec<SseEvent>, BodyEnd) {
        let mut events = Vec::new();
        loop {
            while let Some(event) = self.parsed.pop_front() {
                let done = stop(&event);
                events.push(event);
                if done {
                    return (events, BodyEnd::Clean);
                }
            }
            match self.next_chunk() {
                Ok(Some(chunk)) => {
                    let fresh = self.parser.feed(&chunk.bytes, chunk.at);
                    self.parsed.extend(fresh);
                }
                Ok(None) => return (events, BodyEnd::Clean),
                Err(end) => return (events, end),
            }
        }
    }

    /// Every Server-Sent Event of the body and how the body ended.
    pub fn events(mut self) -> (Vec<SseEvent>, BodyEnd) {
        self.events_until(|_| false)
    }
}

/// The events of an event-stream body.
pub fn sse_events(body: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::default();
    let mut events = parser.feed(body, Instant::now());
    // A last event without its blank line still counts.
    events.extend(parser.feed(b"\n\n", Instant::now()));
    events
}

#[derive(Default)]
struct SseParser {
    pending: String,
}

impl SseParser {
    fn feed(&mut self, bytes: &[u8], at: Instant) -> Vec<SseEvent> {
        self.pending.push_str(&String::from_utf8_lossy(bytes));
        let mut out = Vec::new();
        while let Some(end) = self.pending.find("\n\n") {
            let block: String = self.pending[..end].to_owned();
            self.pending.drain(..end + 2);
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("event:") {
                    event = Some(rest.trim().to_owned());
                } else if let Some(rest) = line.strip_prefix("data:") {
                    data.push(rest.strip_prefix(' ').unwrap_or(rest).to_owned());
                }
            }
            if event.is_some() || !data.is_empty() {
                out.push(SseEvent {
                    at,
                    event,
                    data: data.join("\n"),
                });
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// Sends one request on a fresh connection and reads the whole answer; `timeout` bounds the
/// wait for the head and for each piece of the body. An error when no complete answer came.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Reply> {
    open(addr, method, path, headers, body, timeout)?
        .into_reply()
        .complete()
}

/// Sends one request on a fresh connection and returns once the head of the answer arrived;
/// `timeout` bounds that wait and then the wait for each piece of the body.
///
/// # Panics
/// When `headers` holds `Connection`, `Content-Length` or `Transfer-Encoding`: awc writes those
/// itself, so a test that needs its own must send the request with [`raw_exchange`].
pub fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<StreamingResponse> {
    for (name, _) in headers {
        let name = HeaderName::try_from(*name).map_err(|err| invalid(err.to_string()))?;
        assert!(
            ![CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING].contains(&name),
            "awc writes `{name}` itself; send this request with raw_exchange"
        );
    }
    let outgoing = Outgoing {
        method: Method::from_bytes(method.as_bytes()).map_err(|err| invalid(err.to_string()))?,
        url: format!("http://{addr}{path}"),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.to_vec(),
        timeout,
    };
    let (head_tx, head_rx) = std_mpsc::sync_channel(1);
    let (pieces_tx, pieces) = mpsc::unbounded_channel();
    let job: Job = Box::new(move || {
        actix_rt::spawn(exchange(outgoing, head_tx, pieces_tx));
    });
    client_thread()
        .send(job)
        .map_err(|_| io::Error::other("the HTTP client thread stopped"))?;
    // The exchange always answers within its own bounds; this one only guards against a bug.
    let head = pause::recv_timeout(
        &head_rx,
        CONNECT_TIMEOUT + timeout + Duration::from_secs(30),
    )
    .map_err(|_| io::Error::other("the HTTP client thread did not answer"))??;
    Ok(StreamingResponse {
        head,
        pieces,
        finished: false,
        parser: SseParser::default(),
        parsed: VecDeque::new(),
    })
}

/// Sends raw bytes on a fresh connection and reads everything until the peer closes (or
/// `timeout` passes without a byte). For requests no client would send; returns what arrived.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(bytes)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(err) if out.is_empty() => return Err(err),
            Err(_) => return Ok(out),
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

// ---------------------------------------------------------------------------------------------
// The client thread
// ---------------------------------------------------------------------------------------------

/// Work for the client thread: it starts one exchange there (awc's client is `!Send`).
type Job = Box<dyn FnOnce() + Send>;

/// What the exchange passes on after the head: pieces of the body, then how it ended.
enum Piece {
    Chunk(Chunk),
    End(BodyEnd),
}

struct Outgoing {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

/// The thread that runs every exchange of this test binary, started on first use.
fn client_thread() -> &'static mpsc::UnboundedSender<Job> {
    static JOBS: OnceLock<mpsc::UnboundedSender<Job>> = OnceLock::new();
    JOBS.get_or_init(|| {
        let (jobs, mut incoming) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("http-client".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    while let Some(job) = incoming.recv().await {
                        job();
                    }
                });
            })
            .expect("start the HTTP client thread");
        jobs
    })
}

/// How the body of an answer is delimited, which says whether the connection's end is its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    Chunked,
    Length(u64),
    /// No framing: the body runs to the connection's end.
    UntilClose,
}

async fn exchange(
    outgoing: Outgoing,
    head_tx: std_mpsc::SyncSender<io::Result<Head>>,
    pieces: mpsc::UnboundedSender<Piece>,
) {
    let closed = Rc::new(Cell::new(false));
    let client = awc::Client::builder()
        .connector(
            awc::Connector::new()
                .connector(watched_connector(Rc::clone(&closed)))
                .timeout(CONNECT_TIMEOUT),
        )
        // The wait for the head is bounded below, by running time (see `pause`).
        .disable_timeout()
        .disable_redirects()
        .finish();
    let mut request = client
        .request(outgoing.method.clone(), outgoing.url.as_str())
        .force_close();
    let mut typed = false;
    for (name, value) in &outgoing.headers {
        typed |= name.eq_ignore_ascii_case("content-type");
        request = request.append_header((name.as_str(), value.as_str()));
    }
    if !typed && !outgoing.body.is_empty() {
        request = request.insert_header((CONTENT_TYPE, "application/json"));
    }
    let sent = pause::timeout(outgoing.timeout, request.send_body(outgoing.body)).await;
    let mut response = match sent.unwrap_or(Err(SendRequestError::Timeout)) {
        Ok(response) => response,
        Err(err) => {
            let _ = head_tx.send(Err(send_error(err)));
            return;
        }
    };
    let head = Head {
        status: response.status().as_u16(),
        headers: response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let framing = if outgoing.method == Method::HEAD || matches!(head.status, 100..=199 | 204 | 304)
    {
        Framing::Empty
    } else if head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        Framing::Chunked
    } else if let Some(length) = head.header("content-length").and_then(|v| v.parse().ok()) {
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };
    if head_tx.send(Ok(head)).is_err() {
        return;
    }
    let mut received: u64 = 0;
    loop {
        let next = tokio::select! {
            // The reader dropped the response: close the connection, as a client that leaves.
            () = pieces.closed() => return,
            next = pause::timeout(outgoing.timeout, response.next()) => next,
        };
        let end = match next {
            None => BodyEnd::TimedOut,
            Some(Some(Ok(bytes))) => {
                received += bytes.len() as u64;
                let chunk = Chunk {
                    at: Instant::now(),
                    bytes: bytes.to_vec(),
                };
                if pieces.send(Piece::Chunk(chunk)).is_err() {
                    return;
                }
                continue;
            }
            Some(Some(Err(err))) => BodyEnd::Broken(err.to_string()),
            Some(None) => match framing {
                Framing::Length(length) if received < length => BodyEnd::Broken(format!(
                    "closed with {} of {length} bytes missing",
                    length - received
                )),
                Framing::Chunked if closed.get() => {
                    BodyEnd::Broken("closed before the last chunk".into())
                }
                _ => BodyEnd::Clean,
            },
        };
        let _ = pieces.send(Piece::End(end));
        return;
    }
}

fn send_error(err: SendRequestError) -> io::Error {
    match err {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            io::Error::new(io::ErrorKind::TimedOut, err.to_string())
        }
        SendRequestError::Connect(ConnectError::Io(err)) | SendRequestError::Send(err) => err,
        // awc's word for a connection closed before any answer.
        SendRequestError::Connect(ConnectError::Disconnected) => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before the status line",
        ),
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

/// A TCP connector whose connections note when they reach the end of file, in `closed`.
fn watched_connector(
    closed: Rc<Cell<bool>>,
) -> impl actix_service::Service<
    ConnectInfo<Uri>,
    Response = Connection<Uri, Watched>,
    Error = TcpConnectError,
> + Clone {
    actix_service::fn_service(move |info: ConnectInfo<Uri>| {
        let closed = Rc::clone(&closed);
        async move {
            let tcp = actix_rt::net::TcpStream::connect((info.hostname(), info.port()))
                .await
                .map_err(TcpConnectError::Io)?;
            tcp.set_nodelay(true).map_err(TcpConnectError::Io)?;
            Ok(Connection::new(
                info.request().clone(),
                Watched { tcp, closed },
            ))
        }
    })
}

/// A TCP stream that notes a read that found the end of file.
#[derive(Debug)]
struct Watched {
    tcp: actix_rt::net::TcpStream,
    closed: Rc<Cell<bool>>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let poll = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && room && buf.filled().len() == before {
            self.closed.set(true);
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl ActixStream for Watched {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_read_ready(&self.tcp, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_write_ready(&self.tcp, cx)
    }
}
