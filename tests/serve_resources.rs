//! `respawn serve` within its resources: it raises its open-file limit to the hard limit, a burst
//! of 2,000 clients is served with no 502 from a healthy server, and when descriptors are short
//! every connection is answered or refused with a 503 that has a body; memory taken by large
//! request bodies goes back to the system when they end.
//!
//! The limits are set on the respawn process by the test (`setrlimit` before `exec`), the test
//! process raises its own soft limit to hold 2,000 client sockets, and a machine whose hard limit
//! is too low for that skips the burst tests, saying so.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use support::{bin, chat_body, get, rss_kib, wait_for, Respawn};

const CLIENTS: usize = 2_000;

/// Raises this test process's soft open-file limit to its hard limit; `false` (with the reason
/// printed) when the hard limit cannot hold `CLIENTS` sockets and respawn's own.
fn room_for_clients() -> bool {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        eprintln!("skipped: cannot read the open-file limit");
        return false;
    };
    if hard < (CLIENTS as u64) * 2 + 512 {
        eprintln!("skipped: the hard open-file limit {hard} cannot hold {CLIENTS} clients here");
        return false;
    }
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise the test's own soft limit");
    }
    true
}

/// Sets respawn's open-file limits before it starts.
fn with_open_files(soft: u64, hard: u64) -> impl Fn(&mut Command) {
    move |cmd: &mut Command| {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(std::io::Error::from)
            });
        }
    }
}

fn mock_command() -> Vec<&'static str> {
    // Slow enough that the requests overlap: 16 tokens, 20 ms apart.
    vec![
        bin(),
        "mock",
        "--port",
        "{port}",
        "--tokens",
        "16",
        "--token-latency",
        "20ms",
    ]
}

/// How one client fared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// 200 with a complete body.
    Served,
    /// 503 whose body is an OpenAI-shaped error of this type.
    Refused(String),
    /// Anything else: status and body, or what broke.
    Other(String),
}

/// One client: connect, send a chat completion, read the whole answer. A raw socket on purpose:
/// each of the 2,000 clients must be one connection of its own (a pooled HTTP client would share
/// or retry connections and hide a connection refused, reset or closed without an answer).
fn client(addr: SocketAddr, body: Arc<String>) -> Outcome {
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(60)) {
        Ok(stream) => stream,
        Err(err) => return Outcome::Other(format!("connect: {err}")),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(120)));
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // A refusal may come (and the connection close) before the request is read: not an error.
    let _ = stream.write_all(request.as_bytes());
    let mut raw = Vec::new();
    if let Err(err) = stream.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Outcome::Other(format!("read: {err}"));
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, payload)) = text.split_once("\r\n\r\n") else {
        return Outcome::Other(format!("no complete answer: {text:?}"));
    };
    let status = head.split_whitespace().nth(1).unwrap_or("");
    match status {
        "200" if payload.contains("chat.completion") => Outcome::Served,
        "503" => match serde_json::from_str::<serde_json::Value>(payload.trim()) {
            Ok(json) => match json["error"]["type"].as_str() {
                Some(kind) if json["error"]["message"].is_string() => {
                    Outcome::Refused(kind.to_owned())
                }
                _ => Outcome::Other(format!("503 without an OpenAI body: {payload:?}")),
            },
            Err(_) => Outcome::Other(format!("503 without a JSON body: {payload:?}")),
        },
        _ => Outcome::Other(format!("{head}\n\n{payload}")),
    }
}

/// `CLIENTS` clients at once, each on its own thread; also asks `/respawn/status` while they run.
fn burst(addr: SocketAddr) -> (Vec<Outcome>, u16) {
    let body = Arc::new(chat_body("burst", 16, false));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let body = Arc::clone(&body);
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || client(addr, body))
                .expect("spawn a client thread")
        })
        .collect();
    let status = get(addr, "/respawn/status").map_or(0, |reply| reply.status);
    let outcomes = threads
        .into_iter()
        .map(|t| t.join().expect("a client thread"))
        .collect();
    (outcomes, status)
}

fn summary(outcomes: &[Outcome]) -> String {
    let served = outcomes.iter().filter(|o| **o == Outcome::Served).count();
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Refused(_)))
        .count();
    let others: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Other(_)))
        .take(5)
        .collect();
    format!("{served} served, {refused} refused, others (first 5): {others:?}")
}

#[test]
fn respawn_raises_its_soft_open_file_limit_and_serves_a_burst_of_2000_without_502() {
    if !room_for_clients() {
        return;
    }
    let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let run =
        Respawn::serve_ready_adjusted(&[], &mock_command(), &[], &with_open_files(1024, hard));
    let log = run.log_text();
    assert!(
        log.contains("raised the open-file limit to the hard limit")
            && log.contains(&format!("open_files={hard}"))
            && log.contains("was=1024"),
        "{log}"
    );
    let (outcomes, status) = burst(run.addr());
    assert_eq!(status, 200, "/respawn/status during the burst");
    let summary = summary(&outcomes);
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Served),
        "a healthy server under a raised limit serves every client: {summary}"
    );
    let status = run.status();
    assert_eq!(status["restarts"], 0, "{status}");
}

#[test]
fn with_256_descriptors_every_connection_is_answered_or_refused_with_a_body() {
    if !room_for_clients() {
        return;
    }
    let run = Respawn::serve_ready_adjusted(&[], &mock_command(), &[], &with_open_files(256, 256));
    assert!(
        run.log_text()
            .contains("open-file limit already at the hard limit"),
        "{}",
        run.log_text()
    );
    let (outcomes, status) = burst(run.addr());
    assert_eq!(status, 200, "/respawn/status during the burst");
    let summary = summary(&outcomes);
    for outcome in &outcomes {
        match outcome {
            Outcome::Served => {}
            Outcome::Refused(kind) => assert_eq!(kind, "server_overloaded", "{summary}"),
            Outcome::Other(what) => {
                panic!("neither served nor refused with a body: {what}\n{summary}")
            }
        }
    }
    assert!(
        outcomes.contains(&Outcome::Served),
        "some are served: {summary}"
    );
    let metrics = run.metrics();
    assert!(
        !run.log_text().contains("Too many open files"),
        "descriptors ran out:\n{}",
        run.log_text()
    );
    assert!(
        metrics.contains("reason=\"overloaded\""),
        "refusals are counted:\n{metrics}"
    );
    let status = run.status();
    assert_eq!(status["restarts"], 0, "{status}");
    eprintln!("256 descriptors, {CLIENTS} clients: {summary}");
}

#[test]
fn memory_of_eight_concurrent_30_mb_requests_goes_back_after_them() {
    let run = Respawn::serve_ready(&[], &mock_command(), &[]);
    let pid = run.pid();
    let addr = run.addr();
    let warm =
        support::chat(addr, "warm up", 2, false, Duration::from_secs(30)).expect("a request");
    assert_eq!(warm.status, 200);
    let before = rss_kib(pid).expect("respawn's RSS");

    let prompt = "x".repeat(30 << 20);
    let body = Arc::new(chat_body(&prompt, 2, false));
    drop(prompt);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let body = Arc::clone(&body);
            std::thread::spawn(move || {
                support::request(
                    addr,
                    "POST",
                    "/v1/chat/completions",
                    &[],
                    body.as_bytes(),
                    Duration::from_secs(120),
                )
                .map(|reply| reply.status)
            })
        })
        .collect();
    for thread in threads {
        let status = thread.join().expect("a client").expect("an answer");
        // The mock refuses a JSON body this large (413): respawn held and forwarded it whole.
        assert!(status == 200 || status == 413, "status {status}");
    }
    drop(body);
    // The answers are in; the bodies are freed as the requests end. Bounded wait, not a sleep.
    let bound = before + 32 * 1024;
    let after = wait_for(Duration::from_secs(10), || {
        rss_kib(pid).filter(|rss| *rss <= bound)
    });
    let now = rss_kib(pid).unwrap_or(0);
    eprintln!(
        "RSS before {} MiB, after eight concurrent 30 MB requests {} MiB",
        before / 1024,
        now / 1024
    );
    assert!(
        after.is_some(),
        "respawn kept {} MiB after the requests ({} MiB before)",
        now / 1024,
        before / 1024
    );
}
