//! The process tests' bounds count only the time the test process ran: a pause of the machine
//! (a virtual machine suspended under the run, the process stopped) must not make a bounded
//! wait give up, nor a request time out, when what they wait for comes once the run goes on.
//!
//! Each test stops this very process with SIGSTOP for a few seconds, from a shell it starts, and
//! continues it with SIGCONT; what it waits for comes a little after the resume. A bound measured
//! on the monotonic clock alone would have run out during the stop.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The stops of the two tests must not overlap (either one's SIGCONT would end the other's).
static ONE_STOP_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long the process is stopped: longer than every bound below.
const STOPPED_FOR: &str = "3";

/// Starts a shell that stops this process 200 ms from now, and continues it `STOPPED_FOR`
/// seconds later.
fn stop_me_soon() -> Child {
    let script = format!(
        "sleep 0.2; kill -STOP {pid}; sleep {STOPPED_FOR}; kill -CONT {pid}",
        pid = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .spawn()
        .expect("start the shell that stops the test")
}

#[test]
fn a_bounded_wait_does_not_count_the_time_the_process_was_stopped() {
    let _one = ONE_STOP_AT_A_TIME.lock();
    let mut stopper = stop_me_soon();
    let began = Instant::now();
    let paused_before = common::pause::paused();
    // True 300 ms after the stopper is seen gone, which is after the resume: by then 3.5 s have
    // gone by on the clock, but only about 0.5 s of running time.
    let mut gone_at = None;
    let found = common::wait_for(Duration::from_secs(2), || {
        if gone_at.is_none() && matches!(stopper.try_wait(), Ok(Some(_))) {
            gone_at = Some(Instant::now());
        }
        gone_at
            .filter(|at| at.elapsed() >= Duration::from_millis(300))
            .map(|_| ())
    });
    let took = began.elapsed();
    let paused = common::pause::paused() - paused_before;
    assert!(
        took >= Duration::from_secs(3),
        "the process was stopped (the wait took {took:?})"
    );
    assert!(
        paused >= Duration::from_secs(2),
        "the stop was counted as a pause ({paused:?})"
    );
    assert!(
        found.is_some(),
        "the wait gave up after {took:?}, of which {paused:?} stopped"
    );
}

#[test]
fn a_request_does_not_time_out_because_the_process_was_stopped() {
    let _one = ONE_STOP_AT_A_TIME.lock();
    // A server that answers 4 s after the request, and a request given 2 s: the 3 s the
    // process is stopped must not count.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut head = [0u8; 4096];
        let _ = stream.read(&mut head);
        std::thread::sleep(Duration::from_secs(4));
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    });
    let mut stopper = stop_me_soon();
    let began = Instant::now();
    let reply = common::request(addr, "GET", "/", &[], b"", Duration::from_secs(2));
    let took = began.elapsed();
    let _ = stopper.wait();
    server.join().expect("server thread");
    let reply = reply.unwrap_or_else(|err| panic!("no answer after {took:?}: {err}"));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "ok");
    assert!(
        took >= Duration::from_secs(4),
        "the answer came after the server's 4 s ({took:?})"
    );
}
