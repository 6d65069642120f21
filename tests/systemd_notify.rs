//! The sd_notify protocol against a real notify socket created by the test: `READY=1`, watchdog
//! pings from the event loop (which stop while it is blocked), `STOPPING=1`, and silence when
//! `NOTIFY_SOCKET` is unset. Driven through `respawn mock`, which uses `respawn::web`.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use respawn::clock::Clock;

mod mock_process;

use mock_process::Mock;

/// A bound against hanging forever, never a measure of how long anything should take.
const BOUND: Duration = Duration::from_secs(30);

/// The lines `/debug/block` has the blocked loop itself send right before and after the block.
const BLOCK_STARTS: &str = "STATUS=debug: event loop blocked";
const BLOCK_ENDS: &str = "STATUS=debug: event loop unblocked";

/// A notify socket in a fresh directory; its messages arrive on a channel in the order they were
/// sent (one sender process, one datagram queue), which is what the tests assert on.
struct NotifySocket {
    dir: PathBuf,
    path: PathBuf,
    messages: mpsc::Receiver<String>,
}

impl NotifySocket {
    fn new(name: &str) -> NotifySocket {
        let dir =
            std::env::temp_dir().join(format!("respawn-notify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket {
            dir,
            path,
            messages: listen(socket),
        }
    }

    fn env(&self) -> String {
        self.path.to_str().expect("utf-8 path").to_owned()
    }

    /// Sends a line of the test's own into the socket. It is queued behind everything the service
    /// sent before this call, so it splits the stream into before and after.
    fn mark(&self, label: &str) -> String {
        let line = format!("TEST-MARK={label}");
        UnixDatagram::unbound()
            .expect("a client socket")
            .send_to(line.as_bytes(), &self.path)
            .expect("send a mark");
        line
    }

    /// Every message up to and including the first equal to `last` (see [`until`]).
    fn until(&self, last: &str) -> Vec<String> {
        until(&self.messages, last)
    }
}

/// Every message up to and including the first equal to `last`; panics with what came if `last`
/// does not arrive within [`BOUND`].
fn until(messages: &mpsc::Receiver<String>, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    // Running time: a pause of the machine does not count (respawn::clock); a wait cut short
    // by a resume is made again for the time left.
    let clock = Clock::new();
    while let Some(left) = BOUND.checked_sub(clock.now()) {
        match messages.recv_timeout(left) {
            Ok(line) if line.is_empty() => {}
            Ok(line) => {
                let done = line == last;
                seen.push(line);
                if done {
                    return seen;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("{last:?} did not arrive within {BOUND:?}; got {seen:?}")
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads the socket on a thread; an empty line on each read timeout lets it notice that the test
/// has dropped the receiver.
fn listen(socket: UnixDatagram) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    for line in text.lines() {
                        if tx.send(line.to_owned()).is_err() {
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    if tx.send(String::new()).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    rx
}

/// The lines with each run of repeated lines written once: the order of events, whatever the
/// number of pings between them.
fn runs(lines: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for line in lines {
        if out.last() != Some(&line.as_str()) {
            out.push(line);
        }
    }
    out
}

#[test]
fn ready_watchdog_pings_block_and_stopping() {
    let notify = NotifySocket::new("lifecycle");
    let mut mock = Mock::start_with_env(
        &["--debug-endpoints"],
        &[
            ("NOTIFY_SOCKET", &notify.env()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    // Pings may start before READY=1 (both come from the same loop); the story starts at READY.
    notify.until("READY=1");
    let mut story = vec!["READY=1".to_owned()];
    for _ in 0..3 {
        story.extend(notify.until("WATCHDOG=1"));
    }

    // The block runs on the loop that pings, whichever worker serves the request, and that loop
    // itself says when it stops and when it runs again: a ping between the two would have come
    // from another thread, or from a loop that was not blocked.
    let blocked = mock
        .request("POST", "/debug/block?ms=500", &[], "", BOUND)
        .expect("the block request is answered");
    assert_eq!(blocked.status, 200);
    story.extend(notify.until(BLOCK_ENDS));
    story.extend(notify.until("WATCHDOG=1"));
    assert_eq!(mock.get("/health").expect("an answer").status, 200);

    mock.sigterm();
    story.extend(notify.until("STOPPING=1"));
    assert_eq!(
        runs(&story),
        [
            "READY=1",
            "WATCHDOG=1",
            BLOCK_STARTS,
            BLOCK_ENDS,
            "WATCHDOG=1",
            "STOPPING=1"
        ],
        "pings while the loop runs, none while it is blocked, pings again, then STOPPING"
    );
    let status = mock.wait_exit(BOUND).expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn ready_waits_for_the_slow_start() {
    let notify = NotifySocket::new("slow");
    let mock = Mock::start_with_env(
        &["--start-delay", "1h", "--debug-endpoints"],
        &[("NOTIFY_SOCKET", &notify.env())],
    );
    assert_eq!(mock.get("/health").expect("an answer").status, 503);
    // Loading ends only when asked: READY=1 must come after this mark, not before.
    let loading = notify.mark("still-loading");
    let finish = mock
        .request("POST", "/debug/finish-loading", &[], "", BOUND)
        .expect("an answer");
    assert_eq!(finish.status, 200);
    let story = notify.until("READY=1");
    assert_eq!(
        runs(&story),
        [loading.as_str(), "READY=1"],
        "READY=1 only once loaded"
    );
    assert_eq!(
        mock.get("/health").expect("an answer").status,
        200,
        "loaded when READY=1 is sent"
    );
}

#[test]
fn a_wedged_server_stops_pinging() {
    let notify = NotifySocket::new("wedge");
    let mock = Mock::start_with_env(
        &["--wedge-on", "POISON"],
        &[
            ("NOTIFY_SOCKET", &notify.env()),
            ("WATCHDOG_USEC", "200000"),
            ("RESPAWN_LOG", "info,respawn::systemd=debug"),
        ],
    );
    notify.until("READY=1");
    notify.until("WATCHDOG=1");
    let poison = r#"{"messages":[{"role":"user","content":"POISON"}]}"#;
    assert!(
        mock.request(
            "POST",
            "/v1/chat/completions",
            &[],
            poison,
            Duration::from_secs(1)
        )
        .is_none(),
        "the poison request hangs"
    );
    // Once a tick has withheld its ping, every later tick sees the wedge too (it is forever):
    // pings sent before that tick are queued ahead of the first mark, and none may follow it,
    // across the next three ticks that the log shows.
    const WITHHELD: &str = "watchdog ping withheld";
    let withheld_once = mock.wait_logged_count(WITHHELD, 1, BOUND);
    let from = notify.mark("wedged");
    mock.wait_logged_count(WITHHELD, withheld_once + 3, BOUND);
    let to = notify.mark("three-ticks-later");
    let mut between = notify.until(&from);
    between.clear();
    between.extend(notify.until(&to));
    assert_eq!(between, [to.as_str()], "no ping after the wedge was seen");
}

#[test]
fn watchdog_is_off_when_watchdog_pid_names_another_process() {
    let notify = NotifySocket::new("pid");
    let mock = Mock::start_with_env(
        &["--debug-endpoints"],
        &[
            ("NOTIFY_SOCKET", &notify.env()),
            ("WATCHDOG_USEC", "200000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    let mut story = notify.until("READY=1");
    // Two turns of the loop the pings would come from, the first as long as three watchdog
    // periods: a pinger would have pinged by the end of the second.
    for ms in [300, 0] {
        let blocked = mock
            .request("POST", &format!("/debug/block?ms={ms}"), &[], "", BOUND)
            .expect("the block request is answered");
        assert_eq!(blocked.status, 200);
        story.extend(notify.until(BLOCK_ENDS));
    }
    assert!(
        !story.iter().any(|line| line == "WATCHDOG=1"),
        "WATCHDOG_PID names another process: no pings; got {story:?}"
    );
}

#[test]
fn abstract_socket_names_work() {
    let name = format!("respawn-notify-test-{}", std::process::id());
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.as_bytes(),
        )
        .expect("abstract address");
    let socket = UnixDatagram::bind_addr(&addr).expect("bind abstract socket");
    let messages = listen(socket);
    let _mock = Mock::start_with_env(&[], &[("NOTIFY_SOCKET", &format!("@{name}"))]);
    until(&messages, "READY=1");
}

#[test]
fn runs_normally_without_notify_socket() {
    let mut mock = Mock::start(&["--debug-endpoints"]);
    assert_eq!(mock.get("/health").expect("an answer").status, 200);
    assert_eq!(
        mock.post("/v1/completions", r#"{"prompt":"hi","max_tokens":2}"#)
            .expect("an answer")
            .status,
        200
    );
    mock.sigterm();
    assert_eq!(mock.wait_exit(BOUND).and_then(|s| s.code()), Some(0));
}
