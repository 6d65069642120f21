//! The tests' HTTP client (`tests/http_client`) tells a complete body from one the peer cut
//! short, a silent peer from a closed one, and closes the connection of a response the test
//! dropped; every process test that asserts how a body ended relies on it. Checked against
//! scripted servers on loopback that write exact bytes.

mod http_client;

mod raw_head;

use raw_head::read_head;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_client::{open, request, BodyEnd};

/// A server for one connection: reads the request head, writes `answer`, then (unless `hold`)
/// closes. Hands back the request head it read.
struct Scripted {
    addr: SocketAddr,
    handle: JoinHandle<String>,
}

impl Scripted {
    fn answering(answer: &'static [u8]) -> Scripted {
        Scripted::start(answer, None)
    }

    /// Writes `answer`, then keeps the connection open until the client closes it, and reports
    /// that close on `closed`.
    fn holding(answer: &'static [u8], closed: mpsc::Sender<()>) -> Scripted {
        Scripted::start(answer, Some(closed))
    }

    fn start(answer: &'static [u8], hold: Option<mpsc::Sender<()>>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let head = read_head(&mut stream);
            stream.write_all(answer).unwrap();
            if let Some(closed) = hold {
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
                let _ = closed.send(());
            }
            head
        });
        Scripted { addr, handle }
    }

    fn request_head(self) -> String {
        self.handle.join().unwrap()
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn end_of(answer: &'static [u8]) -> (Vec<u8>, BodyEnd) {
    let server = Scripted::answering(answer);
    let reply = open(server.addr, "GET", "/x", &[], b"", WAIT)
        .expect("a head")
        .into_reply();
    (reply.body, reply.end)
}

#[test]
fn complete_bodies_end_clean_whatever_their_framing() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nh\r\n1;x=y\r\ni\r\n0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nhi",
    ] {
        assert_eq!(
            end_of(answer),
            (b"hi".to_vec(), BodyEnd::Clean),
            "{}",
            String::from_utf8_lossy(answer)
        );
    }
}

#[test]
fn a_body_cut_short_is_broken_though_awc_would_call_it_complete() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhi",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhi",
    ] {
        let (body, end) = end_of(answer);
        assert_eq!(body, b"hi", "{}", String::from_utf8_lossy(answer));
        assert!(
            matches!(end, BodyEnd::Broken(_)),
            "{end:?} for {}",
            String::from_utf8_lossy(answer)
        );
    }
    let server = Scripted::answering(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhi");
    let err = request(server.addr, "GET", "/x", &[], b"", WAIT).unwrap_err();
    assert!(err.to_string().contains("ended badly"), "{err}");
}

#[test]
fn a_silent_body_times_out_and_a_silent_head_is_an_error() {
    let (closed, _) = mpsc::channel();
    let server = Scripted::holding(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n",
        closed,
    );
    let reply = open(
        server.addr,
        "GET",
        "/x",
        &[],
        b"",
        Duration::from_millis(300),
    )
    .expect("a head")
    .into_reply();
    assert_eq!(reply.end, BodyEnd::TimedOut);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let err = request(
        listener.local_addr().unwrap(),
        "GET",
        "/x",
        &[],
        b"",
        Duration::from_millis(300),
    )
    .expect_err("no answer");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
}

#[test]
fn a_dropped_response_closes_its_connection() {
    let (closed, closes) = mpsc::channel();
    let server = Scripted::holding(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n",
        closed,
    );
    let mut response = open(server.addr, "GET", "/x", &[], b"", WAIT).expect("a head");
    let chunk = response
        .next_chunk()
        .expect("a chunk")
        .expect("not the end");
    assert_eq!(chunk.bytes, b"hi");
    drop(response);
    closes
        .recv_timeout(WAIT)
        .expect("the server sees the connection close");
}

#[test]
fn requests_carry_the_method_headers_body_and_a_json_type() {
    let server = Scripted::answering(b"HTTP/1.1 204 No Content\r\n\r\n");
    let reply = request(
        server.addr,
        "POST",
        "/v1/x?y=1",
        &[("Authorization", "Bearer t")],
        b"{}",
        WAIT,
    )
    .expect("an answer");
    assert_eq!((reply.status, reply.end), (204, BodyEnd::Clean));
    let head = server.request_head().to_ascii_lowercase();
    assert!(head.starts_with("post /v1/x?y=1 http/1.1\r\n"), "{head}");
    for line in [
        "authorization: bearer t",
        "content-type: application/json",
        "content-length: 2",
        "connection: close",
    ] {
        assert!(head.contains(line), "{line} missing in {head}");
    }
}

#[test]
fn events_after_the_one_that_stopped_the_reader_are_kept() {
    let server = Scripted::answering(
        b"HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\ndata: 1\n\ndata: 2\n\ndata: 3\n\n",
    );
    let mut response = open(server.addr, "GET", "/x", &[], b"", WAIT).expect("a head");
    let (first, _) = response.events_until(|_| true);
    let (rest, end) = response.events();
    let data: Vec<&str> = first.iter().chain(&rest).map(|e| e.data.as_str()).collect();
    assert_eq!((data, end), (vec!["1", "2", "3"], BodyEnd::Clean));
}
