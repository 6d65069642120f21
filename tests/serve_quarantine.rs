//! Quarantine blames only the guilty request. Identical bodies from many clients survive faults
//! from outside and hangs the server makes on its own; a poison prompt among busy clients is
//! quarantined alone, refused at once within its TTL, and tried again after it.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::thread;
use std::time::Duration;

use common::{chat, fast_args, wait_for, Serve, ServeOptions, TempDir};
use nix::sys::signal::Signal;
use serde_json::Value;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// These tests count restarts exactly while eight clients each keep the machine busy: one at a
/// time, so that a loaded machine's slowness is not mistaken for a hang.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Clients that keep sending until stopped, each recording every status it got.
struct Clients {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    statuses: Arc<Mutex<Vec<(String, u16, String)>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Clients {
    /// `prompts(i, n)` is the prompt of client `i`'s `n`-th request.
    fn start(serve: &Serve, count: usize, prompts: fn(usize, u64) -> String) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let addr = serve.addr;
        let threads = (0..count)
            .map(|i| {
                let (stop, ok, statuses) =
                    (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&statuses));
                thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let prompt = prompts(i, n);
                        n += 1;
                        let (status, body) = match chat(addr, &prompt, 8, CLIENT_TIMEOUT) {
                            Ok(response) => (response.status, response.text()),
                            Err(err) => (0, err.to_string()),
                        };
                        if status == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        statuses.lock().push((prompt, status, body));
                    }
                })
            })
            .collect();
        Clients {
            stop,
            ok,
            statuses,
            threads,
        }
    }

    fn successes(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `more` further requests succeeded.
    fn wait_successes(&self, more: u64) {
        let target = self.successes() + more;
        let reached = wait_for(Duration::from_secs(60), || {
            (self.successes() >= target).then_some(())
        });
        assert!(reached.is_some(), "the clients stopped succeeding");
    }

    /// Stops the clients and answers every (prompt, status, body) they got.
    fn finish(self) -> Vec<(String, u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("client thread");
        }
        Arc::try_unwrap(self.statuses)
            .expect("no client left")
            .into_inner()
    }
}

fn serve(args: &[&str], mock: &[&str]) -> Serve {
    let mut options = ServeOptions::mock(&[], mock);
    // Every restart immediate (a stable second between incidents is not what is tested here),
    // room for many incidents, retries for requests caught by several of them, and a health
    // timeout that a loaded machine does not mistake for a hang (restarts are counted exactly).
    let mut overrides = vec![
        "--health-timeout",
        "1s",
        "--stable-after",
        "1ms",
        "--max-restarts",
        "30",
        "--retries",
        "5",
    ];
    overrides.extend_from_slice(args);
    options.args = fast_args(&overrides);
    Serve::start(options)
}

fn assert_nothing_quarantined(serve: &Serve, statuses: &[(String, u16, String)]) {
    for (prompt, status, body) in statuses {
        assert_eq!(*status, 200, "{prompt}: {body}");
    }
    let status = serve.status();
    assert_eq!(status["quarantined"], Value::Array(Vec::new()), "{status}");
    let metrics = serve.get("/respawn/metrics").expect("metrics").text();
    assert!(
        metrics.contains("respawn_quarantines_total{server=\"server\"} 0"),
        "{metrics}"
    );
}

#[test]
fn one_identical_body_from_eight_clients_survives_eight_faults_from_outside() {
    let _one = ONE_AT_A_TIME.lock();
    let serve = serve(&[], &["--token-latency", "5ms"]);
    let clients = Clients::start(&serve, 8, |_, _| "the same question".to_owned());
    clients.wait_successes(8);
    for incident in 0..8u64 {
        let server = serve.server_pid();
        let generation = incident + 1;
        if incident % 2 == 0 {
            common::signal(server, Signal::SIGSTOP);
        } else {
            common::signal(server, Signal::SIGKILL);
        }
        serve.wait_status(Duration::from_secs(30), "the next generation", |s| {
            s["generation"] == generation + 1 && s["state"] == "ready"
        });
        // The body succeeds on the new server before the next fault: evidence of innocence.
        clients.wait_successes(8);
    }
    let statuses = clients.finish();
    assert!(statuses.len() >= 64, "{} requests", statuses.len());
    let status = serve.status();
    eprintln!(
        "one body, eight clients, eight faults from outside: {} requests, {} restarts",
        statuses.len(),
        status["restarts"]
    );
    assert_eq!(status["restarts"], 8, "one restart per incident: {status}");
    assert_nothing_quarantined(&serve, &statuses);
}

#[test]
fn hangs_the_server_makes_on_its_own_quarantine_no_one() {
    let _one = ONE_AT_A_TIME.lock();
    let dir = TempDir::new("own-hangs");
    let state = dir.path().join("mock-state.json");
    let state = state.to_str().expect("utf-8 path").to_owned();
    // Wedges (every request and /health hang) and a health-green deadlock, at completions the
    // job counts across restarts: no request causes them.
    let serve = serve(
        &["--progress-timeout", "2s"],
        &[
            "--wedge-after",
            "20,60,100",
            "--deadlock-after",
            "140",
            "--state-file",
            &state,
        ],
    );
    let clients = Clients::start(&serve, 8, |_, _| "the same question".to_owned());
    serve.wait_status(Duration::from_secs(90), "four restarts", |s| {
        s["restarts"] == 4 && s["state"] == "ready"
    });
    clients.wait_successes(16);
    let statuses = clients.finish();
    let restarts = serve.status()["restarts"].clone();
    assert_eq!(
        restarts,
        4,
        "one restart per fault point:\n{}",
        serve.log_text()
    );
    assert_nothing_quarantined(&serve, &statuses);
}

#[test]
fn a_poison_prompt_among_busy_clients_is_quarantined_alone_and_tried_again_after_its_ttl() {
    let _one = ONE_AT_A_TIME.lock();
    let serve = serve(
        &["--quarantine-ttl", "5s"],
        &["--wedge-on", "POISON", "--token-latency", "10ms"],
    );
    // Eight busy clients: four send one identical body, four their own new bodies.
    let clients = Clients::start(&serve, 8, |i, n| {
        if i < 4 {
            "an innocent twin".to_owned()
        } else {
            format!("client {i}, request {n}")
        }
    });
    clients.wait_successes(16);

    // Every fingerprint the status names as tried alone (`on_trial`) while the poison is sent.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (watching, addr) = (Arc::clone(&watching), serve.addr);
        thread::spawn(move || {
            let mut seen: Vec<String> = Vec::new();
            while watching.load(Ordering::Acquire) {
                let status = common::get(addr, "/respawn/status", Duration::from_secs(5))
                    .ok()
                    .and_then(|reply| serde_json::from_slice::<Value>(&reply.body).ok());
                if let Some(trial) = status.as_ref().and_then(|s| s["on_trial"].as_str()) {
                    if !seen.iter().any(|s| s == trial) {
                        seen.push(trial.to_owned());
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    let sent = std::time::Instant::now();
    let poison = serve
        .chat("a POISON prompt", 8, CLIENT_TIMEOUT)
        .expect("the poison request");
    let took = sent.elapsed();
    watching.store(false, Ordering::Release);
    let on_trial = watcher.join().expect("the status watcher");
    assert_eq!(poison.status, 422, "{}", poison.text());
    assert!(
        poison.text().contains("request_quarantined") && poison.text().contains("quarantined for"),
        "the body says why and for how long: {}",
        poison.text()
    );
    let status = serve.status();
    let restarts = status["restarts"].as_u64().expect("restarts");
    eprintln!("the poison prompt: 422 after {took:?} and {restarts} restarts");
    assert!(
        restarts <= 3,
        "quarantined after at most 3 restarts: {status}"
    );
    let quarantined = status["quarantined"].as_array().expect("a list").clone();
    assert_eq!(quarantined.len(), 1, "{status}");
    let convicted = quarantined[0]["fingerprint"]
        .as_str()
        .expect("its fingerprint");
    // Convicted at its trial, which the status showed while it ran.
    assert!(
        on_trial.iter().any(|fingerprint| fingerprint == convicted),
        "the status named {convicted} on trial before its conviction; it named {on_trial:?}"
    );
    // A convicted fingerprint is refused, never tried again within its TTL (another suspect, an
    // innocent twin caught at the same incidents, may be on trial now).
    assert_ne!(
        status["on_trial"].as_str(),
        Some(convicted),
        "the convicted request is not on trial: {status}"
    );
    assert!(
        quarantined[0]["expires"].as_u64() > quarantined[0]["since"].as_u64(),
        "{status}"
    );
    assert!(!status.to_string().contains("POISON"), "never the prompt");

    // Within its TTL it is refused at once, without another restart.
    let again = serve
        .chat("a POISON prompt", 8, CLIENT_TIMEOUT)
        .expect("again");
    assert_eq!(again.status, 422);
    assert_eq!(serve.status()["restarts"].as_u64(), Some(restarts));

    // After the TTL it is tried again, hangs the server, and is convicted at that first hang.
    serve.wait_status(Duration::from_secs(30), "the quarantine expired", |s| {
        s["quarantined"] == Value::Array(Vec::new())
    });
    let after = serve
        .chat("a POISON prompt", 8, CLIENT_TIMEOUT)
        .expect("after the TTL");
    assert_eq!(after.status, 422, "{}", after.text());
    let status = serve.status();
    assert_eq!(
        status["restarts"].as_u64(),
        Some(restarts + 1),
        "one more hang: {status}"
    );
    assert_eq!(status["quarantined"].as_array().map(Vec::len), Some(1));

    clients.wait_successes(8);
    let statuses = clients.finish();
    eprintln!("innocent requests meanwhile: {}", statuses.len());
    for (prompt, status, body) in &statuses {
        assert_eq!(*status, 200, "an innocent request failed: {prompt}: {body}");
    }
    let metrics = serve.get("/respawn/metrics").expect("metrics").text();
    assert!(
        metrics.contains("respawn_quarantines_total{server=\"server\"} 2"),
        "{metrics}"
    );
}

#[test]
fn an_operator_lifts_the_quarantine_with_the_admin_token() {
    let _one = ONE_AT_A_TIME.lock();
    const TOKEN: &str = "quarantine-token-0123456789abcdef";
    let mut options = ServeOptions::mock(&[], &["--wedge-on", "POISON"]);
    options.args = fast_args(&[
        "--health-timeout",
        "1s",
        "--stable-after",
        "1ms",
        "--poison-after",
        "1",
    ]);
    let serve = Serve::start(options.env("RESPAWN_ADMIN_TOKEN", TOKEN));
    let poison = serve
        .chat("a POISON prompt", 4, CLIENT_TIMEOUT)
        .expect("the poison request");
    assert_eq!(poison.status, 422, "{}", poison.text());
    let refused = common::request(
        serve.addr,
        "DELETE",
        "/respawn/quarantine",
        &[],
        b"",
        Duration::from_secs(10),
    )
    .expect("DELETE without a token");
    assert_eq!(refused.status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let cleared = common::request(
        serve.addr,
        "DELETE",
        "/respawn/quarantine",
        &[("Authorization", &bearer)],
        b"",
        Duration::from_secs(10),
    )
    .expect("DELETE with the token");
    assert_eq!(cleared.status, 200, "{}", cleared.text());
    assert_eq!(cleared.json()["released"], 1);
    assert_eq!(serve.status()["quarantined"], Value::Array(Vec::new()));
    let metrics = serve.get("/respawn/metrics").expect("metrics").text();
    assert!(
        metrics.contains("respawn_quarantine_releases_total{server=\"server\"} 1"),
        "{metrics}"
    );
}
