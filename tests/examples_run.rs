//! The examples run and do what they say. `cargo test --workspace` builds them next to the test
//! binaries (`target/<profile>/examples/`); a test that cannot find its example fails and says
//! how to build it.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{children_of, free_port, get, proc_stat, request, respawn_bin, wait_for};
use nix::sys::signal::Signal;

/// The example binary `name`, which `cargo test --workspace` (and so `scripts/test.sh`) builds
/// next to the test binaries.
///
/// # Panics
/// When it was not built: a test that did not run must not pass.
fn example(name: &str) -> PathBuf {
    let dir = std::path::Path::new(respawn_bin())
        .parent()
        .map(|bin| bin.join("examples"))
        .unwrap_or_default();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "the example `{name}` was not built at {}: run `cargo build -p respawn --examples` \
         (`bash scripts/test.sh` and `cargo test --workspace` build it)",
        path.display()
    );
    path
}

/// A running example, killed with the processes it started when dropped.
struct Running {
    child: Child,
    spawned: Vec<u32>,
}

impl Running {
    fn remember_children(&mut self) {
        for pid in children_of(self.child.id()) {
            if !self.spawned.contains(&pid) {
                self.spawned.push(pid);
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.remember_children();
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for pid in &self.spawned {
            if proc_stat(*pid).is_some_and(|s| s.state != 'Z') {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    Signal::SIGKILL,
                );
            }
        }
    }
}

#[test]
fn standalone_asks_restarts_asks_again_and_stops() {
    let path = example("standalone");
    let child = Command::new(path)
        .arg(respawn_bin())
        .env_remove("RESPAWN_ADMIN_TOKEN")
        .env("RESPAWN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the standalone example");
    let mut running = Running {
        child,
        spawned: Vec::new(),
    };
    let finished = wait_for(Duration::from_secs(60), || {
        running.remember_children();
        running.child.try_wait().ok().flatten()
    });
    let status = finished.expect("the standalone example finishes within 60 s");
    let mut stdout = String::new();
    if let Some(mut out) = running.child.stdout.take() {
        std::io::Read::read_to_string(&mut out, &mut stdout).expect("read stdout");
    }
    assert!(status.success(), "exit {status}; stdout:\n{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("answer 1: status 200 from generation 1")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ready again: generation 2")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("answer 2: status 200 from generation 2")),
        "{stdout}"
    );
    assert_eq!(lines.last(), Some(&"stopped"), "{stdout}");
    for pid in &running.spawned {
        let gone = wait_for(Duration::from_secs(30), || {
            (!matches!(proc_stat(*pid), Some(s) if s.state != 'Z')).then_some(())
        });
        assert!(
            gone.is_some(),
            "the model server {pid} outlived the example"
        );
    }
}

#[test]
fn embed_serves_its_own_routes_and_restarts_with_its_own_strategy() {
    let path = example("embed");
    let port = free_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let child = Command::new(path)
        .arg(respawn_bin())
        .env_remove("RESPAWN_ADMIN_TOKEN")
        .env("PORT", port.to_string())
        .env("RESPAWN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the embed example");
    let mut running = Running {
        child,
        spawned: Vec::new(),
    };
    let servers = wait_for(Duration::from_secs(30), || {
        running.remember_children();
        let response = get(addr, "/servers", Duration::from_secs(2)).ok()?;
        (response.status == 200).then(|| response.json())
    })
    .expect("the embed example serves /servers");
    assert_eq!(servers[0]["server"], "llm", "{servers}");
    assert_eq!(servers[0]["phase"], "ready", "{servers}");
    assert_eq!(
        servers[0]["strategies"],
        serde_json::json!(["logged_kill", "process_kill"]),
        "the example's own strategy first, the built-in after it: {servers}"
    );
    let log = get(addr, "/restarts", Duration::from_secs(2))
        .expect("GET /restarts")
        .json();
    assert_eq!(log, serde_json::json!([]), "no restart yet");
    let model_server = running.spawned.clone();
    assert!(
        !model_server.is_empty(),
        "the example started the model server"
    );

    let ask = |prompt: &str| {
        request(
            addr,
            "POST",
            "/ask/llm",
            &[("Content-Type", "text/plain")],
            prompt.as_bytes(),
            Duration::from_secs(30),
        )
        .expect("POST /ask/llm")
    };
    let first = ask("hello");
    assert_eq!(first.status, 200, "{}", first.text());
    let first = first.json();
    assert_eq!(first["generation"], 1, "{first}");
    assert_eq!(first["status"], 200, "{first}");
    assert!(
        first["answer"].as_str().is_some_and(|a| !a.is_empty()),
        "{first}"
    );

    let unknown = request(
        addr,
        "POST",
        "/ask/nope",
        &[],
        b"hi",
        Duration::from_secs(10),
    )
    .expect("POST /ask/nope");
    assert_eq!(unknown.status, 404);

    let restart = request(
        addr,
        "POST",
        "/restart/llm",
        &[],
        b"",
        Duration::from_secs(10),
    )
    .expect("POST /restart/llm");
    assert_eq!(restart.status, 202, "{}", restart.text());
    wait_for(Duration::from_secs(20), || {
        let servers = get(addr, "/servers", Duration::from_secs(2)).ok()?.json();
        (servers[0]["generation"] == 2 && servers[0]["phase"] == "ready").then_some(())
    })
    .expect("generation 2 becomes ready");
    let log = get(addr, "/restarts", Duration::from_secs(2))
        .expect("GET /restarts")
        .json();
    assert_eq!(
        log,
        serde_json::json!([{ "server": "llm", "hung": 1, "next": 2, "cause": "manual" }]),
        "the restart went through the example's own strategy"
    );
    let pids_before = running.spawned.clone();
    running.remember_children();
    assert!(
        running.spawned.len() > pids_before.len(),
        "a new model server process was started: {:?}",
        running.spawned
    );
    let second = ask("hello again").json();
    assert_eq!(second["generation"], 2, "{second}");

    common::signal(running.child.id(), Signal::SIGTERM);
    let status = wait_for(Duration::from_secs(20), || {
        running.child.try_wait().ok().flatten()
    })
    .expect("the example stops on SIGTERM");
    assert!(status.success(), "exit {status}");
    for pid in &running.spawned {
        let gone = wait_for(Duration::from_secs(30), || {
            (!matches!(proc_stat(*pid), Some(s) if s.state != 'Z')).then_some(())
        });
        assert!(
            gone.is_some(),
            "the model server {pid} outlived the example"
        );
    }
}

#[test]
fn systemd_stops_cleanly_on_sigterm_right_after_its_first_answer() {
    // `respawn::web::run_until_restart` arms the stop signals before the workers start: the
    // first answer the service ever gives is already covered. A service manager that stops it at
    // that moment gets exit 0 every time, never a death by SIGTERM.
    let path = example("systemd");
    for attempt in 0..20 {
        // Port 0: the example binds a port nobody else can hold, and logs which.
        let mut child = Command::new(&path)
            .env_remove("RESPAWN_ADMIN_TOKEN")
            .env_remove("NOTIFY_SOCKET")
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the systemd example");
        let addr = logged_address(child.stderr.take().expect("piped stderr"));
        let mut running = Running {
            child,
            spawned: Vec::new(),
        };
        let addr =
            addr.unwrap_or_else(|| panic!("attempt {attempt}: the example logs its address"));
        let first = first_byte_of_health(addr);
        assert!(first.is_some(), "attempt {attempt}: the example answers");
        common::signal(running.child.id(), Signal::SIGTERM);
        let status = wait_for(Duration::from_secs(20), || {
            running.child.try_wait().ok().flatten()
        })
        .expect("the example stops on SIGTERM");
        assert_eq!(status.code(), Some(0), "attempt {attempt}: {status}");
    }
}

/// The address in the example's `listening on http://ADDR` line; `None` if its log ends first.
/// The rest of the log is read (and dropped) on a thread, so the example never blocks on it.
fn logged_address(stderr: std::process::ChildStderr) -> Option<std::net::SocketAddr> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).ok()?.parse().ok()
}

/// Asks for `/health` (the example is listening: it logged its address) and returns the first
/// byte of the answer, the first thing the service ever says; `None` if it never answers.
fn first_byte_of_health(addr: std::net::SocketAddr) -> Option<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut first = [0u8; 1];
    match stream.read(&mut first) {
        Ok(1) => Some(first[0]),
        _ => None,
    }
}
