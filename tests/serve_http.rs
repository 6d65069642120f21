//! HTTP as clients speak it, through `respawn serve`: answers without a body (`HEAD`, 204, 304)
//! pass through with their heads intact and nothing after them, respawn's own routes answer
//! `HEAD` and unknown paths or methods themselves, every error respawn makes is OpenAI-shaped,
//! and an answer that took more than one attempt says so, whether it succeeded or not.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{bin, raw_exchange, request, Reply, Respawn};

const TOKEN: &str = "http-test-admin-token-5d21";

fn mock(extra: &[&'static str]) -> Vec<&'static str> {
    let mut argv = vec![bin(), "mock", "--port", "{port}", "--debug-endpoints"];
    argv.extend_from_slice(extra);
    argv
}

fn serve(extra_mock: &[&'static str]) -> Respawn {
    Respawn::serve_ready(&[], &mock(extra_mock), &[("RESPAWN_ADMIN_TOKEN", TOKEN)])
}

/// Sends `first` and then, on the same connection, `GET /respawn/livez` with
/// `Connection: close`; returns everything that came back. When the first answer is framed
/// right, the second answer's status line follows its head at once.
fn pipelined(addr: SocketAddr, first: &str) -> String {
    let bytes = format!(
        "{first}\r\nHost: {addr}\r\n\r\nGET /respawn/livez HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let raw = raw_exchange(addr, bytes.as_bytes(), Duration::from_secs(20)).expect("an exchange");
    String::from_utf8_lossy(&raw).into_owned()
}

/// The head of the first answer and whatever follows it, split at the first blank line.
fn first_head_and_rest(text: &str) -> (String, String) {
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {text:?}"));
    (head.to_ascii_lowercase(), rest.to_owned())
}

fn assert_openai_error(reply: &Reply, status: u16, kind: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    let json = reply
        .try_json()
        .unwrap_or_else(|| panic!("{status} without a JSON body: {:?}", reply.text()));
    assert_eq!(json["error"]["type"], kind, "{json}");
    assert_eq!(json["error"]["code"], status, "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{json}"
    );
}

#[test]
fn head_passes_through_with_its_length_and_no_body() {
    let run = serve(&[]);
    let reply = request(
        run.addr(),
        "HEAD",
        "/debug/answer/200",
        &[],
        b"",
        Duration::from_secs(20),
    )
    .expect("a HEAD answer");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length"), Some("12"), "{reply:?}");
    assert!(reply.header("x-respawn-generation").is_some(), "{reply:?}");

    // Framing: the next answer on the same connection starts right after the head.
    let text = pipelined(run.addr(), "HEAD /debug/answer/200 HTTP/1.1");
    let (head, rest) = first_head_and_rest(&text);
    assert!(head.starts_with("http/1.1 200"), "{text}");
    assert!(head.contains("content-length: 12"), "{text}");
    assert!(
        rest.starts_with("HTTP/1.1 200"),
        "bytes after a HEAD answer: {text:?}"
    );
    assert!(rest.ends_with("ok\n"), "{text:?}");
}

#[test]
fn no_content_and_not_modified_pass_through_without_a_body() {
    let run = serve(&[]);
    let text = pipelined(run.addr(), "GET /debug/answer/204 HTTP/1.1");
    let (head, rest) = first_head_and_rest(&text);
    assert!(head.starts_with("http/1.1 204"), "{text}");
    assert!(!head.contains("content-length"), "{text}");
    assert!(!head.contains("transfer-encoding"), "{text}");
    assert!(rest.starts_with("HTTP/1.1 200"), "{text:?}");

    let text = pipelined(
        run.addr(),
        "GET /debug/answer/304 HTTP/1.1\r\nIf-None-Match: \"mock\"",
    );
    let (head, rest) = first_head_and_rest(&text);
    assert!(head.starts_with("http/1.1 304"), "{text}");
    assert!(
        head.contains("content-length: 12"),
        "a 304 keeps the length of the representation: {text}"
    );
    assert!(head.contains("etag: \"mock\""), "{text}");
    assert!(rest.starts_with("HTTP/1.1 200"), "{text:?}");

    // None of them was taken for a hang.
    let status = run.status();
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(status["restarts"], 0, "{status}");
}

#[test]
fn own_routes_answer_head_themselves() {
    let run = serve(&[]);
    for path in [
        "/respawn/status",
        "/respawn/metrics",
        "/respawn/livez",
        "/respawn/readyz",
    ] {
        let get = request(run.addr(), "GET", path, &[], b"", Duration::from_secs(10))
            .expect("a GET answer");
        let head = request(run.addr(), "HEAD", path, &[], b"", Duration::from_secs(10))
            .expect("a HEAD answer");
        assert_eq!(head.status, 200, "{path}: {head:?}");
        assert!(
            head.header("x-respawn-generation").is_none(),
            "{path} was forwarded to the model server: {head:?}"
        );
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path}"
        );
        assert!(head.body.is_empty(), "{path}: {head:?}");
    }
}

#[test]
fn own_errors_are_openai_shaped() {
    let run = serve(&[]);
    let addr = run.addr();
    let timeout = Duration::from_secs(10);

    let reply = request(addr, "GET", "/respawn/nothing-here", &[], b"", timeout).expect("404");
    assert_openai_error(&reply, 404, "not_found");
    assert!(reply.header("x-respawn-generation").is_none(), "{reply:?}");

    let reply = request(addr, "GET", "/respawn/restart", &[], b"", timeout).expect("405");
    assert_openai_error(&reply, 405, "method_not_allowed");
    assert_eq!(reply.header("allow"), Some("POST"));

    let reply = request(addr, "DELETE", "/respawn/status", &[], b"", timeout).expect("405");
    assert_openai_error(&reply, 405, "method_not_allowed");

    let reply = request(addr, "POST", "/respawn/restart", &[], b"", timeout).expect("401");
    assert_openai_error(&reply, 401, "unauthorized");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));

    let reply = request(
        addr,
        "POST",
        "/respawn/restart",
        &[("Authorization", "Bearer wrong")],
        b"",
        timeout,
    )
    .expect("401");
    assert_openai_error(&reply, 401, "unauthorized");
}

#[test]
fn a_server_error_after_retries_says_how_many_attempts_it_took() {
    let run = serve(&["--error-rate", "1"]);
    let reply = support::chat(
        run.addr(),
        "always fails",
        2,
        false,
        Duration::from_secs(60),
    )
    .expect("an answer");
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(
        reply.header("x-respawn-attempts"),
        Some("4"),
        "the first attempt and 3 retries: {reply:?}"
    );
    assert!(reply.header("x-respawn-generation").is_some(), "{reply:?}");
}
