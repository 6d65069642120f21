//! `respawn mock` as a child process for the tests that drive it from outside: started on a
//! free port, its log collected, killed when dropped (even when the test fails), and asked
//! through the tests' HTTP client (`tests/http_client`).

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use parking_lot::Mutex;

#[path = "../http_client/mod.rs"]
mod http_client;

pub use http_client::BodyEnd;

/// A `respawn mock` child process, killed when dropped (even when the test fails).
pub struct Mock {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Mock {
    pub fn start(args: &[&str]) -> Mock {
        Mock::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Mock {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_respawn"));
        cmd.arg("mock")
            .args(["--port", "0", "--workers", "2"])
            .args(args)
            .env_remove("RESPAWN_ADMIN_TOKEN")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("PORT")
            .env("RESPAWN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn respawn mock");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.trim().to_owned());
                }
                sink.lock().push(line);
            }
        });
        let mut mock = Mock {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            reader: Some(reader),
        };
        let addr = http_client::pause::recv_timeout(&rx, Duration::from_secs(30))
            .expect("the mock logs its address");
        mock.addr = addr.parse().expect("a socket address");
        mock
    }

    /// One request on a fresh connection: the answer however its body ended (a cut stream is
    /// an answer too, [`Answer::end`] says so); `None` when the server stayed silent for `wait`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
        wait: Duration,
    ) -> Option<Answer> {
        let answer =
            match http_client::open(self.addr, method, path, headers, body.as_bytes(), wait) {
                Ok(response) => response.into_reply(),
                Err(err) if err.kind() == ErrorKind::TimedOut => return None,
                // Closed or reset before any answer: an answer with no status.
                Err(_) => {
                    return Some(Answer {
                        status: 0,
                        headers: Vec::new(),
                        body: Vec::new(),
                        end: BodyEnd::Broken("no answer".into()),
                    })
                }
            };
        (answer.end != BodyEnd::TimedOut).then_some(answer)
    }

    /// Sends one request and returns as soon as the first byte of the answer arrives: the
    /// earliest moment a client can know the server speaks. A raw socket on purpose: an HTTP
    /// client waits for a whole head, and this must see the very first byte.
    pub fn first_byte_of(&self, method: &str, path: &str, wait: Duration) -> Option<u8> {
        let mut stream = TcpStream::connect(self.addr).ok()?;
        stream.set_read_timeout(Some(wait)).ok()?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            self.addr
        );
        stream.write_all(head.as_bytes()).ok()?;
        let mut first = [0u8; 1];
        match stream.read(&mut first) {
            Ok(1) => Some(first[0]),
            _ => None,
        }
    }

    pub fn get(&self, path: &str) -> Option<Answer> {
        self.request("GET", path, &[], "", Duration::from_secs(10))
    }

    pub fn post(&self, path: &str, body: &str) -> Option<Answer> {
        self.request("POST", path, &[], body, Duration::from_secs(10))
    }

    /// Waits for the process to exit; `None` if it is still running after `wait`. After an exit
    /// the whole log has been read (see [`Mock::read_log_to_end`]).
    pub fn wait_exit(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        let bound = http_client::pause::Bound::new(wait);
        while !bound.passed() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.read_log_to_end();
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Once the process has exited: waits until its whole log has been read (the end of the
    /// pipe, which the reader thread reaches on its own schedule), so that what the mock wrote
    /// last is in [`Mock::log`].
    fn read_log_to_end(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(Some(_))),
            "the mock is still running"
        );
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader");
        }
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().iter().any(|l| l.contains(needle))
    }

    /// How many logged lines contain `needle`.
    pub fn logged_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits (≤ `bound`) until at least `count` logged lines contain `needle`; returns how many
    /// do, or panics with the log.
    pub fn wait_logged_count(&self, needle: &str, count: usize, bound: Duration) -> usize {
        let within = http_client::pause::Bound::new(bound);
        loop {
            let seen = self.logged_count(needle);
            if seen >= count {
                return seen;
            }
            assert!(
                !within.passed(),
                "{count} lines with {needle:?} not logged within {bound:?}: {:?}",
                self.log.lock()
            );
            // The log is read on another thread; poll it.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer of the mock.
pub type Answer = http_client::Reply;
