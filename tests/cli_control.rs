//! The client behind `respawn status` and `respawn restart`, against a scripted HTTP server on
//! loopback that records the request it received and answers with a canned response.

mod raw_head;

use raw_head::read_head;
use std::io::Write;
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::Duration;

use respawn::auth::AdminToken;
use respawn_cli::control_client::{self, ControlClient, ControlError};

/// A one-shot server: accepts one connection, reads the request head, answers `response`,
/// and hands back the request it saw.
struct OneShot {
    url: String,
    handle: JoinHandle<String>,
}

impl OneShot {
    fn answering(response: impl Into<String>) -> OneShot {
        let response = response.into();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let request = read_head(&mut stream);
            stream.write_all(response.as_bytes()).unwrap();
            request
        });
        OneShot { url, handle }
    }

    fn request(self) -> String {
        self.handle.join().unwrap()
    }
}

/// A status document as `respawn serve` writes it (the wire format is the contract: spelled out
/// here rather than built from the library's type).
const STATUS_JSON: &str = r#"{"server":"llm","state":"ready","generation":4,"pid":4242,"restarts":3,"last_restart":{"cause":"first_byte_timeout","duration_ms":2500,"at":1700000000},"last_cause":"first_byte_timeout","last_error":null,"uptime_s":61,"in_flight":0,"requests_total":17}"#;

fn ok_json(body: &'static str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn status_asks_the_status_endpoint_and_renders_a_table() {
    let server = OneShot::answering(ok_json(STATUS_JSON));
    let url = server.url.clone();
    let table = control_client::status(&url, false).unwrap();
    let request = server.request();
    assert!(
        request.starts_with("GET /respawn/status HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        !request.to_ascii_lowercase().contains("authorization"),
        "status sends no token: {request}"
    );
    assert!(table.lines().next().unwrap().contains("ready"), "{table}");
    for expected in [
        "generation",
        "4242",
        "restarts",
        "first_byte_timeout",
        "2s 500ms",
        "1m 1s",
    ] {
        assert!(table.contains(expected), "missing {expected} in:\n{table}");
    }
}

#[test]
fn status_json_passes_the_document_through() {
    let server = OneShot::answering(ok_json(STATUS_JSON));
    let out = control_client::status(&format!("{}/", server.url), true).unwrap();
    let document: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(document["generation"], 4);
    assert_eq!(document["last_restart"]["cause"], "first_byte_timeout");
}

#[test]
fn a_chunked_answer_is_decoded() {
    let (first, second) = STATUS_JSON.split_at(40);
    let server = OneShot::answering(format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x};ext=1\r\n{second}\r\n0\r\n\r\n",
        first.len(),
        second.len()
    ));
    let out = control_client::status(&server.url, true).unwrap();
    assert!(out.contains("\"state\": \"ready\""), "{out}");
}

#[test]
fn an_answer_that_is_not_a_status_document_is_malformed() {
    let server = OneShot::answering(ok_json(r#"{"state":"ready"}"#));
    let err = control_client::status(&server.url, false).unwrap_err();
    assert!(matches!(err, ControlError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("not a status document"), "{err}");
    assert_eq!(err.exit_code(), 1);
}

#[test]
fn a_body_cut_short_is_malformed() {
    let server = OneShot::answering(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"state\"",
    );
    let err = control_client::status(&server.url, false).unwrap_err();
    assert!(matches!(err, ControlError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("before the whole body"), "{err}");
}

#[test]
fn restart_posts_with_the_bearer_token() {
    let server = OneShot::answering(
        "HTTP/1.1 202 Accepted\r\nContent-Length: 25\r\n\r\n{\"status\":\"restarting\"}\r\n",
    );
    let token = AdminToken::new("s3cret-token").unwrap();
    let out = control_client::restart(&server.url, Some(&token)).unwrap();
    let request = server.request();
    assert!(
        request.starts_with("POST /respawn/restart HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.contains("\r\nAuthorization: Bearer s3cret-token\r\n"),
        "{request}"
    );
    assert!(out.contains("202") && out.contains("restarting"), "{out}");
}

#[test]
fn a_refusal_without_a_token_says_the_token_is_missing() {
    let server = OneShot::answering(
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 36\r\n\r\n{\"error\":\"missing Authorization\"}   ",
    );
    let err = control_client::restart(&server.url, None).unwrap_err();
    assert!(!server
        .request()
        .to_ascii_lowercase()
        .contains("authorization: bearer"));
    assert!(
        matches!(
            err,
            ControlError::Unauthorized {
                token_sent: false,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("no admin token was given") && text.contains("RESPAWN_ADMIN_TOKEN"),
        "{text}"
    );
    assert!(
        text.contains("missing Authorization"),
        "the server's words are quoted: {text}"
    );
    assert_eq!(err.exit_code(), 1);
}

#[test]
fn a_refusal_with_a_token_says_the_token_is_wrong() {
    let server = OneShot::answering("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
    let token = AdminToken::new("wrong-token").unwrap();
    let err = control_client::restart(&server.url, Some(&token)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("the admin token was refused"), "{text}");
    assert!(
        !text.contains("wrong-token"),
        "the token never appears in messages: {text}"
    );
}

#[test]
fn another_error_status_shows_the_body() {
    let server = OneShot::answering(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 38\r\n\r\nrespawn gave up: 5 restarts within 10m",
    );
    let err = control_client::status(&server.url, false).unwrap_err();
    assert!(
        matches!(err, ControlError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("5 restarts within 10m"), "{err}");
}

#[test]
fn a_refused_connection_names_the_url() {
    // Bind, note the port, and close it again: nothing listens there now.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let err = control_client::status(&url, false).unwrap_err();
    assert!(matches!(err, ControlError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&url) && err.to_string().contains("respawn serve"),
        "{err}"
    );
}

#[test]
fn a_silent_server_times_out_instead_of_hanging() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let client = ControlClient {
        io_timeout: Duration::from_millis(300),
        total_timeout: Duration::from_secs(2),
    };
    let err = client.status(&url, false).unwrap_err();
    assert!(matches!(err, ControlError::Timeout { .. }), "{err:?}");
    drop(listener);
}

#[test]
fn garbage_is_reported_as_a_malformed_answer() {
    let server = OneShot::answering("SSH-2.0-OpenSSH_9.2\r\n\r\n");
    let err = control_client::status(&server.url, false).unwrap_err();
    assert!(matches!(err, ControlError::Malformed { .. }), "{err:?}");
}

#[test]
fn a_non_http_url_is_a_usage_error() {
    for url in ["https://127.0.0.1:8000", "127.0.0.1:8000", "localhost"] {
        let err = control_client::status(url, false).unwrap_err();
        assert!(matches!(err, ControlError::BadUrl { .. }), "{url}: {err:?}");
        assert_eq!(err.exit_code(), 2, "{url}");
    }
}
