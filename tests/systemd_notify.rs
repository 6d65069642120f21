//! The sd_notify protocol against a real notify socket created by the test: `READY=1`, watchdog
//! pings from the event loop (which stop while it is blocked), `STOPPING=1`, and silence when
//! `NOTIFY_SOCKET` is unset. Driven through `respawn mock`, which uses `respawn::web`.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod mock_process;

use mock_process::Mock;

/// A notify socket in a fresh directory; messages arrive on a channel with their arrival time.
struct NotifySocket {
    dir: PathBuf,
    path: PathBuf,
    messages: mpsc::Receiver<(Instant, String)>,
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
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn listen(socket: UnixDatagram) -> mpsc::Receiver<(Instant, String)> {
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
                        if tx.send((Instant::now(), line.to_owned())).is_err() {
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    // Stop once the test has dropped the receiver.
                    if tx.send((Instant::now(), String::new())).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    rx
}

/// Waits up to `wait` for `line`; returns when it arrived.
fn wait_for(rx: &mpsc::Receiver<(Instant, String)>, line: &str, wait: Duration) -> Option<Instant> {
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok((at, got)) if got == line => return Some(at),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Every `line` received during the next `span`.
fn collect(rx: &mpsc::Receiver<(Instant, String)>, line: &str, span: Duration) -> Vec<Instant> {
    let deadline = Instant::now() + span;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok((at, got)) if got == line => seen.push(at),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    seen
}

fn largest_gap(times: &[Instant]) -> Duration {
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
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
    wait_for(&notify.messages, "READY=1", Duration::from_secs(30)).expect("READY=1 arrives");

    let pings = collect(&notify.messages, "WATCHDOG=1", Duration::from_secs(2));
    assert!(
        pings.len() >= 5,
        "pings about every 100 ms, got {} in 2 s",
        pings.len()
    );
    assert!(
        largest_gap(&pings) < Duration::from_millis(900),
        "gaps: {:?}",
        largest_gap(&pings)
    );

    let blocked = mock
        .request(
            "POST",
            "/debug/block?ms=1500",
            &[],
            "",
            Duration::from_secs(10),
        )
        .expect("the block request is answered");
    assert_eq!(blocked.status, 200);
    let around = collect(&notify.messages, "WATCHDOG=1", Duration::from_secs(4));
    assert!(
        largest_gap(&around) >= Duration::from_millis(1000),
        "no ping while the loop is blocked; largest gap {:?}",
        largest_gap(&around)
    );
    let last = *around.last().expect("pings resume after the block");
    assert!(
        last.elapsed() < Duration::from_secs(2),
        "pings resume after the block"
    );
    assert_eq!(mock.get("/health").expect("an answer").status, 200);

    mock.sigterm();
    wait_for(&notify.messages, "STOPPING=1", Duration::from_secs(15)).expect("STOPPING=1 arrives");
    let status = mock
        .wait_exit(Duration::from_secs(15))
        .expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn ready_waits_for_the_slow_start() {
    let notify = NotifySocket::new("slow");
    let mock = Mock::start_with_env(
        &["--start-delay", "1s"],
        &[("NOTIFY_SOCKET", &notify.env())],
    );
    assert_eq!(mock.get("/health").expect("an answer").status, 503);
    wait_for(&notify.messages, "READY=1", Duration::from_secs(30)).expect("READY=1 arrives");
    assert_eq!(
        mock.get("/health").expect("an answer").status,
        200,
        "READY=1 only once loaded"
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
        ],
    );
    wait_for(&notify.messages, "READY=1", Duration::from_secs(30)).expect("READY=1 arrives");
    assert!(!collect(&notify.messages, "WATCHDOG=1", Duration::from_secs(1)).is_empty());
    let poison = r#"{"messages":[{"role":"user","content":"POISON"}]}"#;
    assert!(mock
        .request(
            "POST",
            "/v1/chat/completions",
            &[],
            poison,
            Duration::from_secs(1)
        )
        .is_none());
    // A ping already in flight may land just after the wedge; then silence.
    let _ = collect(&notify.messages, "WATCHDOG=1", Duration::from_millis(300));
    assert!(collect(&notify.messages, "WATCHDOG=1", Duration::from_secs(1)).is_empty());
}

#[test]
fn watchdog_is_off_when_watchdog_pid_names_another_process() {
    let notify = NotifySocket::new("pid");
    let _mock = Mock::start_with_env(
        &[],
        &[
            ("NOTIFY_SOCKET", &notify.env()),
            ("WATCHDOG_USEC", "200000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    wait_for(&notify.messages, "READY=1", Duration::from_secs(30)).expect("READY=1 arrives");
    assert!(collect(&notify.messages, "WATCHDOG=1", Duration::from_secs(1)).is_empty());
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
    wait_for(&messages, "READY=1", Duration::from_secs(30)).expect("READY=1 arrives");
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
    assert_eq!(
        mock.wait_exit(Duration::from_secs(15))
            .and_then(|s| s.code()),
        Some(0)
    );
}
