//! The proxy behaves as a proxy must: a body over the limit is refused with 413, hop-by-hop
//! headers do not cross it in either direction, the request line reaches the server as the
//! client wrote it (under the upstream URL's own path, if it has one), and a client that leaves
//! mid-stream cancels the child's work.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use common::{
    chat_body, free_port, get, open, prometheus_value, raw_exchange, serve_mock, wait_for, Serve,
    ServeOptions,
};
use parking_lot::Mutex;

#[test]
fn a_body_over_the_limit_is_refused_with_413_and_one_under_it_passes() {
    let serve = serve_mock(&["--max-body-size", "2048"], &[]);
    let padding = "x".repeat(4096);
    let big = chat_body(&padding, 2, false);
    let response = serve
        .post("/v1/chat/completions", &big, Duration::from_secs(30))
        .expect("request");
    assert_eq!(response.status, 413, "{}", response.text());
    assert!(
        response.text().contains("2048"),
        "names the limit: {}",
        response.text()
    );
    let small = chat_body("a short prompt", 2, false);
    let response = serve
        .post("/v1/chat/completions", &small, Duration::from_secs(30))
        .expect("request");
    assert_eq!(response.status, 200, "{}", response.text());
    let metrics = serve.get("/respawn/metrics").expect("metrics").text();
    assert!(metrics.contains("reason=\"too_large\"} 1"), "{metrics}");
}

/// A tiny HTTP server that records every request head and answers with hop-by-hop headers of
/// its own. It stands in for a model server that shows what it received.
struct EchoServer {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl EchoServer {
    fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&heads);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut reader = BufReader::new(match stream.try_clone() {
                        Ok(s) => s,
                        Err(_) => return,
                    });
                    let mut writer = stream;
                    loop {
                        let mut head = String::new();
                        let mut length = 0usize;
                        loop {
                            let mut line = String::new();
                            match reader.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            if line.trim().is_empty() {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':') {
                                if name.trim().eq_ignore_ascii_case("content-length") {
                                    length = value.trim().parse().unwrap_or(0);
                                }
                            }
                            head.push_str(&line);
                        }
                        let mut body = vec![0u8; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        sink.lock().push(head);
                        let answer = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\
                                      Connection: keep-alive, x-upstream-hop\r\nX-Upstream-Hop: secret\r\n\
                                      X-Upstream-Kept: yes\r\nKeep-Alive: timeout=30\r\n\r\nok";
                        if writer.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        EchoServer { addr, heads }
    }
}

/// `respawn serve` in front of `echo`, reached at `upstream` (its URL with or without a path).
fn serve_in_front_of(upstream: &str) -> Serve {
    Serve::start(ServeOptions {
        args: common::fast_args(&["--upstream", upstream]),
        command: Vec::new(),
        env: vec![("ENABLE_SERVER_RESTART".into(), "false".into())],
        no_wait: false,
        hold_stderr: false,
    })
}

#[test]
fn the_request_line_reaches_the_server_as_the_client_wrote_it() {
    let echo = EchoServer::start();
    let paths = [
        "/v1/echo",
        "/v1/echo?stream=true&x=%2F%20y",
        "/v1/echo/a%2Fb?",
        "/v1/echo/{id}|\"q\"^",
        "/v1/%C3%A9cho?q=1?2",
    ];
    for (upstream, prefix) in [
        (format!("http://{}", echo.addr), ""),
        (format!("http://{}/", echo.addr), ""),
        (format!("http://{}/models/a", echo.addr), "/models/a"),
    ] {
        let serve = serve_in_front_of(&upstream);
        for path in paths {
            let raw = format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
                serve.addr
            );
            let answer =
                raw_exchange(serve.addr, raw.as_bytes(), Duration::from_secs(10)).expect("request");
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.starts_with("HTTP/1.1 200 "),
                "{upstream} {path}: {answer}"
            );
            let line = format!("POST {prefix}{path} HTTP/1.1\r\n");
            let heads = echo.heads.lock().clone();
            assert!(
                heads.last().is_some_and(|h| h.starts_with(&line)),
                "through {upstream}, {line:?} expected, the server saw {:?}",
                heads.last()
            );
        }
    }
}

#[test]
fn hop_by_hop_headers_are_not_forwarded_either_way() {
    let echo = EchoServer::start();
    // A server respawn does not own, with restarts off: only the proxy is exercised here.
    let options = ServeOptions {
        args: common::fast_args(&["--upstream", &format!("http://{}", echo.addr)]),
        command: Vec::new(),
        env: vec![("ENABLE_SERVER_RESTART".into(), "false".into())],
        no_wait: false,
        hold_stderr: false,
    };
    let serve = Serve::start(options);
    // awc writes the Connection header itself and cannot name other headers in it, which is what
    // this test needs: the request goes out as raw bytes, and the answer is read as text.
    let raw = format!(
        "POST /v1/echo HTTP/1.1\r\nHost: {}\r\nConnection: close, x-client-hop\r\n\
         X-Client-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic c2VjcmV0\r\n\
         TE: trailers\r\nX-End-To-End: kept\r\nAuthorization: Bearer for-the-model-server\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}",
        serve.addr
    );
    let answer =
        raw_exchange(serve.addr, raw.as_bytes(), Duration::from_secs(10)).expect("request");
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {answer:?}"));
    let head = head.to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    assert!(head.starts_with("http/1.1 200 "), "{answer}");
    assert_eq!(body, "ok", "{answer}");
    assert_eq!(header("x-upstream-kept"), Some("yes"));
    assert_eq!(
        header("x-upstream-hop"),
        None,
        "a header the upstream named in Connection"
    );
    assert_eq!(header("keep-alive"), None);

    let heads = echo.heads.lock().clone();
    let head = heads
        .iter()
        .find(|h| h.starts_with("POST /v1/echo"))
        .unwrap_or_else(|| panic!("the request reached the server: {heads:?}"))
        .to_ascii_lowercase();
    assert!(head.contains("x-end-to-end: kept"), "{head}");
    assert!(
        head.contains("authorization: bearer for-the-model-server"),
        "{head}"
    );
    for hop in ["x-client-hop", "keep-alive:", "proxy-authorization", "te:"] {
        assert!(
            !head.lines().any(|l| l.starts_with(hop)),
            "{hop} was forwarded:\n{head}"
        );
    }
}

#[test]
fn a_client_that_leaves_mid_stream_cancels_the_childs_generation() {
    let child_port = free_port();
    let serve = serve_mock(
        &["--port", &child_port.to_string()],
        &["--token-latency", "100ms"],
    );
    let child = SocketAddr::from(([127, 0, 0, 1], child_port));
    let running = || -> Option<f64> {
        let text = get(child, "/metrics", Duration::from_secs(5)).ok()?.text();
        prometheus_value(&text, "mock:requests_running")
    };
    assert_eq!(running(), Some(0.0));

    // 10,000 tokens at 100 ms: over a quarter of an hour if nobody cancels it, so the generation
    // can only have ended because the client left, however long a loaded machine takes to
    // pass that on.
    let body = chat_body("a long story", 10_000, true);
    let mut stream = open(
        serve.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        body.as_bytes(),
        Duration::from_secs(30),
    )
    .expect("open the stream");
    assert_eq!(stream.head.status, 200);
    let mut seen = 0;
    let (events, _) = stream.events_until(|_| {
        seen += 1;
        seen >= 3
    });
    assert_eq!(events.len(), 3);
    assert_eq!(running(), Some(1.0), "the child is generating");
    drop(stream);

    let cancelled = wait_for(Duration::from_secs(60), || {
        (running() == Some(0.0)).then_some(())
    });
    assert!(
        cancelled.is_some(),
        "the child still generates for a client that left: {:?}",
        running()
    );
    assert_eq!(serve.status()["in_flight"], 0);
}
