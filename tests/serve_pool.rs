//! `respawn serve --replicas 2`: a hang costs the clients nothing but one replica's capacity.
//! One replica frozen under load: every request succeeds, the caught ones are answered by the
//! other replica without waiting for the restart; a replica that keeps failing is given up while
//! the other serves, and respawn exits 3 only when the last one is given up.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::thread;
use std::time::Duration;

use common::{chat, proc_stat, Serve, ServeOptions, TempDir};
use nix::sys::signal::Signal;
use serde_json::Value;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Who answered one request: replica, its generation, attempts, and the status.
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    replica: Option<u64>,
    generation: Option<u64>,
    attempts: u64,
    /// How long it took (measured for docs/BENCHMARKS.md, never asserted).
    took: Duration,
}

fn pool(extra: &[&str], mock_args: &[&str]) -> Serve {
    let mut options = ServeOptions::mock(&[], mock_args);
    // Flag and value pairs: they replace the fast defaults they name.
    let mut overrides = vec!["--replicas", "2"];
    overrides.extend_from_slice(extra);
    options.args = common::fast_args(&overrides);
    let serve = Serve::start(options);
    serve.wait_status(Duration::from_secs(60), "both replicas ready", |s| {
        s["ready_replicas"] == 2
    });
    serve
}

fn replica(status: &Value, index: usize) -> &Value {
    &status["replicas"][index]
}

/// Eight clients sending without pause until `stop`; every answer is recorded in order.
fn load(
    serve: &Serve,
    stop: &Arc<AtomicBool>,
    answers: &Arc<Mutex<Vec<Answer>>>,
) -> Vec<thread::JoinHandle<()>> {
    let addr = serve.addr;
    (0..8)
        .map(|client| {
            let stop = Arc::clone(stop);
            let answers = Arc::clone(answers);
            thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let sent = std::time::Instant::now();
                    let reply = chat(
                        addr,
                        &format!("client {client} request {i}"),
                        4,
                        CLIENT_TIMEOUT,
                    )
                    .unwrap_or_else(|e| panic!("client {client} request {i}: {e}"));
                    let number = |name: &str| reply.header(name).and_then(|v| v.parse().ok());
                    answers.lock().push(Answer {
                        status: reply.status,
                        replica: number("x-respawn-replica"),
                        generation: reply.generation(),
                        attempts: number("x-respawn-attempts").unwrap_or(1),
                        took: sent.elapsed(),
                    });
                    i += 1;
                }
            })
        })
        .collect()
}

#[test]
fn a_frozen_replica_costs_no_request_and_its_caught_requests_go_to_the_other_at_once() {
    // A start of 5 s: a request that waited for the frozen replica's restart would show it.
    let mut serve = pool(&[], &["--token-latency", "20ms", "--start-delay", "5s"]);
    let frozen = replica(&serve.status(), 1)["pid"]
        .as_u64()
        .expect("replica 1's pid") as u32;

    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let clients = load(&serve, &stop, &answers);
    // Both replicas take traffic before the freeze.
    common::wait_for(Duration::from_secs(30), || {
        let answers = answers.lock();
        let seen = |r| answers.iter().any(|a: &Answer| a.replica == Some(r));
        (seen(0) && seen(1)).then_some(())
    })
    .expect("both replicas answered before the freeze");
    common::signal(frozen, Signal::SIGSTOP);
    assert!(
        common::wait_for(Duration::from_secs(10), || {
            (proc_stat(frozen).map(|s| s.state) == Some('T')).then_some(())
        })
        .is_some(),
        "replica 1's server is stopped"
    );
    let frozen_at = answers.lock().len();

    // The frozen replica comes back as generation 2, and answers again.
    serve.wait_status(
        Duration::from_secs(60),
        "replica 1 back as generation 2",
        |s| replica(s, 1)["generation"] == 2 && replica(s, 1)["state"] == "ready",
    );
    common::wait_for(Duration::from_secs(30), || {
        let answers = answers.lock();
        answers[frozen_at..]
            .iter()
            .any(|a| a.replica == Some(1) && a.generation == Some(2))
            .then_some(())
    })
    .expect("replica 1's generation 2 answers");
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client thread");
    }

    let answers = answers.lock().clone();
    assert!(
        answers.iter().all(|a| a.status == 200),
        "every request succeeded: {answers:?}"
    );
    let after = &answers[frozen_at..];
    // The requests the freeze caught were sent again, to replica 0, whose generation 1 never
    // stopped: none waited for replica 1's restart.
    let retried: Vec<&Answer> = after.iter().filter(|a| a.attempts > 1).collect();
    assert!(!retried.is_empty(), "the freeze caught requests: {after:?}");
    for answer in &retried {
        assert_eq!(
            (answer.replica, answer.generation),
            (Some(0), Some(1)),
            "a caught request was answered by the other replica: {answer:?}"
        );
    }
    // Until replica 1's generation 2 answered, every answer came from replica 0.
    let back = after
        .iter()
        .position(|a| a.replica == Some(1) && a.generation == Some(2))
        .expect("replica 1 answered again");
    assert!(
        after[..back].iter().all(|a| a.replica == Some(0)),
        "nothing went to the frozen replica: {:?}",
        &after[..back]
    );
    let worst = |answers: &[&Answer]| answers.iter().map(|a| a.took).max().unwrap_or_default();
    let all: Vec<&Answer> = after.iter().collect();
    // A measurement, not an assertion: how long it takes depends on the machine's load.
    println!(
        "POOL mock SIGSTOP: {} requests from the freeze until replica 1's generation 2 answered, {} caught and retried on replica 0 (worst {} ms: detection, then the other replica's answer), worst latency of all {} ms, replica 1's restart {} ms",
        back,
        retried.len(),
        worst(&retried).as_millis(),
        worst(&all).as_millis(),
        replica(&serve.status(), 1)["last_restart"]["duration_ms"]
    );
    let status = serve.status();
    assert_eq!(status["restarts"], 1, "exactly one restart: {status}");
    assert_eq!(replica(&status, 0)["restarts"], 0, "{status}");
    assert_eq!(replica(&status, 0)["generation"], 1, "{status}");
    assert!(status["pid"].is_null(), "{status}");
    serve.signal(Signal::SIGTERM);
    let exit = serve
        .wait_exit(Duration::from_secs(30))
        .expect("respawn exits");
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn a_rolling_restart_under_load_fails_no_request_and_moves_each_generation() {
    let mut options = ServeOptions::mock(&[], &["--token-latency", "20ms"]);
    let mut args = common::fast_args(&["--replicas", "2"]);
    args.extend(["--admin-token".to_owned(), "s3cret".to_owned()]);
    options.args = args;
    let mut serve = Serve::start(options);
    serve.wait_status(Duration::from_secs(60), "both replicas ready", |s| {
        s["ready_replicas"] == 2
    });
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let clients = load(&serve, &stop, &answers);
    let asked = common::request(
        serve.addr,
        "POST",
        "/respawn/restart?rolling=true",
        &[("authorization", "Bearer s3cret")],
        b"",
        Duration::from_secs(10),
    )
    .expect("POST /respawn/restart?rolling=true");
    assert_eq!(asked.status, 202, "{}", asked.text());
    assert_eq!(asked.json()["rolling"], true);
    serve.wait_status(Duration::from_secs(90), "both replicas restarted", |s| {
        replica(s, 0)["generation"] == 2
            && replica(s, 1)["generation"] == 2
            && s["ready_replicas"] == 2
    });
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client thread");
    }
    let answers = answers.lock().clone();
    assert!(
        answers.iter().all(|a| a.status == 200),
        "no failed request: {answers:?}"
    );
    // One at a time: replica 0's generation 2 answered before replica 1 was restarted, so the
    // pool never had both replicas down.
    assert!(answers
        .iter()
        .any(|a| a.replica == Some(0) && a.generation == Some(2)));
    serve.signal(Signal::SIGTERM);
    let exit = serve
        .wait_exit(Duration::from_secs(30))
        .expect("respawn exits");
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn a_crashing_replica_is_given_up_while_the_other_serves_and_exit_3_comes_with_the_last() {
    let dir = TempDir::new("serve-pool");
    let broken = dir.path().join("broken");
    // Replica 1 never starts; replica 0 starts until the file `broken` exists.
    let script = format!(
        "if [ \"$RESPAWN_REPLICA\" = 1 ] || [ -e '{}' ]; then exit 1; fi; exec '{}' mock --port \"$PORT\"",
        broken.display(),
        common::respawn_bin()
    );
    let mut args = common::fast_args(&["--replicas", "2", "--max-restarts", "2"]);
    args.push("--shell=true".to_owned());
    let mut options = ServeOptions::command(&[], &[&script]);
    options.args = args;
    let mut serve = Serve::start(options);
    serve.wait_status(Duration::from_secs(60), "replica 1 given up", |s| {
        replica(s, 1)["state"] == "failed"
    });
    let reply = serve
        .chat("still served", 2, CLIENT_TIMEOUT)
        .expect("a request");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-respawn-replica"), Some("0"));
    assert!(
        serve.wait_exit(Duration::from_millis(1)).is_none(),
        "respawn still runs"
    );

    std::fs::write(&broken, b"").expect("mark replica 0 broken");
    let last = replica(&serve.status(), 0)["pid"]
        .as_u64()
        .expect("replica 0's pid") as u32;
    common::signal(last, Signal::SIGKILL);
    let exit = serve
        .wait_exit(Duration::from_secs(90))
        .expect("respawn exits once the last replica is given up");
    assert_eq!(exit.code(), Some(3));
    assert!(serve.logged("every replica was given up"));
}

#[test]
fn a_poison_request_is_quarantined_at_its_second_hang_on_the_other_replica_while_the_pool_serves() {
    // One quarantine table for the pool: the poison prompt wedges the replica it reaches; its
    // strike there counts when it is retried on the other replica, so the hang it causes there
    // is its trial's and convicts it. With a table per replica it would get one strike in each,
    // and wedge the first replica once more before its conviction.
    let mut serve = pool(
        &[
            "--poison-after",
            "1",
            "--stable-after",
            "1ms",
            "--retries",
            "5",
        ],
        &["--wedge-on", "POISON", "--token-latency", "10ms"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let clients = load(&serve, &stop, &answers);
    common::wait_for(Duration::from_secs(30), || {
        (answers.lock().len() >= 16).then_some(())
    })
    .expect("the pool serves before the poison prompt");

    let poison = serve
        .chat("a POISON prompt", 8, CLIENT_TIMEOUT)
        .expect("the poison request");
    assert_eq!(poison.status, 422, "{}", poison.text());
    assert!(
        poison.text().contains("request_quarantined"),
        "{}",
        poison.text()
    );
    let after_poison = answers.lock().len();
    // The pool keeps serving once the poison prompt is refused.
    common::wait_for(Duration::from_secs(60), || {
        (answers.lock().len() >= after_poison + 16).then_some(())
    })
    .expect("the pool serves after the poison prompt");
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client thread");
    }
    let answers = answers.lock().clone();
    assert!(
        answers.iter().all(|a| a.status == 200),
        "every other request succeeded: {answers:?}"
    );

    let status = serve.status();
    assert_eq!(status["restarts"], 2, "two hangs, no third: {status}");
    assert_eq!(replica(&status, 0)["restarts"], 1, "{status}");
    assert_eq!(replica(&status, 1)["restarts"], 1, "{status}");
    let quarantined = status["quarantined"].as_array().expect("a list").clone();
    assert_eq!(quarantined.len(), 1, "{status}");

    // In order: an incident on one replica, then one on the other, then the conviction.
    let log = serve.log_text();
    let lines: Vec<&str> = log.lines().collect();
    let counted: Vec<(usize, &str)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("the pool's quarantine counts"))
        .map(|(at, l)| (at, *l))
        .collect();
    assert_eq!(counted.len(), 2, "two incidents:\n{log}");
    let on = |line: &str| {
        ["replica=0", "replica=1"]
            .iter()
            .position(|r| line.contains(r))
            .unwrap_or_else(|| panic!("no replica in {line}"))
    };
    assert_ne!(
        on(counted[0].1),
        on(counted[1].1),
        "the second hang is on the other replica:\n{log}"
    );
    let convicted = lines
        .iter()
        .position(|l| l.contains("request quarantined"))
        .expect("the conviction is logged");
    assert!(
        convicted > counted[1].0,
        "convicted at the second hang, not before:\n{log}"
    );
    serve.signal(Signal::SIGTERM);
    let exit = serve
        .wait_exit(Duration::from_secs(30))
        .expect("respawn exits");
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn a_staggered_start_serves_from_the_first_replica_while_the_next_waits_its_turn() {
    // A stagger far longer than the test: the listener and replica 0 must not wait for it.
    let mut options = ServeOptions::mock(&[], &[]);
    let mut args = common::fast_args(&["--replicas", "2"]);
    args.extend(["--start-stagger".to_owned(), "10m".to_owned()]);
    options.args = args;
    let mut serve = Serve::start(options);
    let status = serve.wait_status(Duration::from_secs(60), "replica 0 ready", |s| {
        replica(s, 0)["state"] == "ready"
    });
    assert_eq!(replica(&status, 1)["generation"], 0, "{status}");
    assert_eq!(replica(&status, 1)["state"], "starting", "{status}");
    let reply = serve
        .chat("served before the stagger ends", 2, CLIENT_TIMEOUT)
        .expect("a request");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-respawn-replica"), Some("0"));
    assert_eq!(replica(&serve.status(), 1)["generation"], 0);
    serve.signal(Signal::SIGTERM);
    let exit = serve
        .wait_exit(Duration::from_secs(30))
        .expect("respawn exits");
    assert_eq!(exit.code(), Some(0));
}

/// The value of the sample `name_and_labels` in a Prometheus text.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[test]
fn the_bound_on_waiting_requests_holds_for_the_whole_pool() {
    // Both replicas stay loading until the test ends one's loading.
    let mut options = ServeOptions::mock(&[], &["--debug-endpoints", "--start-delay", "1h"]);
    let mut args = common::fast_args(&["--replicas", "2", "--startup-timeout", "1h"]);
    args.extend(["--max-waiting".to_owned(), "2".to_owned()]);
    options.args = args;
    options.no_wait = true;
    let mut serve = Serve::start(options);
    let status = serve.wait_status(Duration::from_secs(60), "both replicas loading", |s| {
        (0..2).all(|r| replica(s, r)["state"] == "starting" && replica(s, r)["pid"].is_u64())
    });
    let addr = serve.addr;
    let waiters: Vec<_> = (0..2)
        .map(|i| thread::spawn(move || chat(addr, &format!("waits {i}"), 2, CLIENT_TIMEOUT)))
        .collect();
    let waiting = || {
        serve.get("/respawn/metrics").ok().and_then(|m| {
            sample(
                &m.text(),
                "respawn_requests_waiting{server=\"server\",replica=\"0\"}",
            )
        })
    };
    common::wait_for(Duration::from_secs(60), || {
        (waiting() == Some(2.0)).then_some(())
    })
    .expect("two requests wait, counted once for the pool");
    // A third is one too many for the pool, whichever replica it would go to.
    let refused = serve
        .chat("one too many", 2, CLIENT_TIMEOUT)
        .expect("an answer");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        refused.header("retry-after").is_some(),
        "{:?}",
        refused.headers
    );
    assert_eq!(refused.json()["error"]["type"], "too_many_waiting");
    assert!(waiters.iter().all(|w| !w.is_finished()), "still waiting");

    // One replica loads: the two that waited are served by it.
    let port = replica(&status, 1)["port"].as_u64().expect("a port") as u16;
    let loaded = common::request(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "POST",
        "/debug/finish-loading",
        &[],
        b"",
        Duration::from_secs(10),
    )
    .expect("the mock answers");
    assert_eq!(loaded.status, 200, "{}", loaded.text());
    for waiter in waiters {
        let reply = waiter.join().expect("client thread").expect("an answer");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-respawn-replica"), Some("1"));
    }
    assert_eq!(waiting(), Some(0.0), "every place was given back");
    serve.signal(Signal::SIGTERM);
    let exit = serve
        .wait_exit(Duration::from_secs(30))
        .expect("respawn exits");
    assert_eq!(exit.code(), Some(0));
}

/// A streamed completion and the replica that began answering it.
struct Streamed {
    replica: u64,
    answer: common::Streamed,
}

impl std::ops::Deref for Streamed {
    type Target = common::Streamed;

    fn deref(&self) -> &common::Streamed {
        &self.answer
    }
}

/// Sends a streamed chat completion and reads it whole; once `cut_after` pieces arrived, calls
/// `fault` once with the replica that answers it.
fn stream_chat(
    serve: &Serve,
    body: &Value,
    cut_after: Option<usize>,
    fault: impl FnOnce(u64),
) -> Streamed {
    let replica_of = |head: &common::Head| -> u64 {
        head.header("x-respawn-replica")
            .and_then(|v| v.parse().ok())
            .expect("the replica that answers")
    };
    let answer = common::stream(
        serve.addr,
        "/v1/chat/completions",
        body,
        CLIENT_TIMEOUT,
        cut_after,
        |head| fault(replica_of(head)),
    );
    Streamed {
        replica: replica_of(&answer.head),
        answer,
    }
}

/// A stream cut on one replica (`signal` to its server after 10 of 40 pieces) continues on the
/// other at once: one stream, the exact fault-free answer, the continuation from the other
/// replica's generation 1, resumed before the cut replica's generation 2 was ready.
fn a_stream_cut_on_one_replica_continues_on_the_other(signal: Signal) {
    // Stalls noticed by the stream's own deadline; a token every 50 ms; a start of 3 s, so that
    // a continuation that waited for the cut replica's restart would come after it.
    let serve = pool(
        &["--stall-timeout", "1s", "--unhealthy-after", "25"],
        &["--token-latency", "50ms", "--start-delay", "3s"],
    );
    let body = serde_json::json!({
        "model": "mock-llm",
        "messages": [{ "role": "user", "content": "tell me a long story" }],
        "max_tokens": 40,
        "stream": true,
    });
    let whole = stream_chat(&serve, &body, None, |_| {});
    assert_eq!(whole.end, common::BodyEnd::Clean, "{}", whole.raw);
    assert_eq!(whole.pieces().len(), 40, "{}", whole.raw);
    assert!(!whole.raw.contains(": respawn resumed"), "{}", whole.raw);

    let status = serve.status();
    let cut = stream_chat(&serve, &body, Some(10), |on| {
        let pid = replica(&status, on as usize)["pid"]
            .as_u64()
            .expect("the serving replica's pid") as u32;
        common::signal(pid, signal);
    });
    let other = 1 - cut.replica;

    // One stream, the exact answer.
    assert_eq!(cut.end, common::BodyEnd::Clean, "{}", cut.raw);
    assert_eq!(cut.errors().len(), 0, "no error event: {}", cut.raw);
    assert_eq!(cut.pieces(), whole.pieces(), "{}", cut.raw);
    assert_eq!(cut.ids().len(), 1, "one id: {:?}", cut.ids());
    assert_eq!(cut.dones(), 1, "{}", cut.raw);
    assert_eq!(cut.events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    // Resumed once, by the other replica's first generation.
    assert_eq!(
        cut.raw.matches(": respawn resumed").count(),
        1,
        "{}",
        cut.raw
    );
    assert!(
        cut.raw.contains(&format!("generation 1, replica {other})")),
        "continued on replica {other}: {}",
        cut.raw
    );
    let marker = cut.raw.find(": respawn resumed").expect("the marker");
    let before = common::pieces(&common::sse_events(&cut.raw.as_bytes()[..marker]));
    assert!(before.len() >= 10, "{}", cut.raw);

    // The cut replica restarts once, after the continuation went to the other one.
    let status = serve.wait_status(
        Duration::from_secs(60),
        "the cut replica back as generation 2",
        |s| {
            replica(s, cut.replica as usize)["generation"] == 2
                && replica(s, cut.replica as usize)["state"] == "ready"
        },
    );
    assert_eq!(status["restarts"], 1, "exactly one restart: {status}");
    assert_eq!(
        replica(&status, other as usize)["generation"],
        1,
        "{status}"
    );
    let log = serve.log_text();
    let lines: Vec<&str> = log.lines().collect();
    let resumed = lines
        .iter()
        .position(|l| l.contains("a cut stream was resumed"))
        .unwrap_or_else(|| panic!("the resumption is logged:\n{log}"));
    assert!(
        lines[resumed].contains(&format!("replica={other}")),
        "{}",
        lines[resumed]
    );
    let back = lines
        .iter()
        // Only the cut replica restarts (one restart): its generation 2 is the only one.
        .position(|l| l.contains("the new generation is ready") && l.contains("generation=2"))
        .unwrap_or_else(|| panic!("the cut replica's generation 2 is logged ready:\n{log}"));
    assert!(
        resumed < back,
        "the continuation did not wait for the cut replica's restart:\n{log}"
    );
}

#[test]
fn a_stream_frozen_on_one_replica_continues_on_the_other_with_the_exact_answer() {
    a_stream_cut_on_one_replica_continues_on_the_other(Signal::SIGSTOP);
}

#[test]
fn a_stream_whose_replica_is_killed_continues_on_the_other_with_the_exact_answer() {
    a_stream_cut_on_one_replica_continues_on_the_other(Signal::SIGKILL);
}
