//! Many streamed chat completions at once, and when each of their events arrived: the load
//! generator of the benchmark driver's many-streams part (`benches/driver.py`), in Rust because
//! a Python client spends most of a core on 1,000 streams of 50 events a second and its own lag
//! then hides the proxy's.
//!
//! `stream_clients PORT STREAMS TOKENS RAMP_MS` opens STREAMS connections to `127.0.0.1:PORT`
//! (their starts spread evenly over RAMP_MS), sends on each a streamed chat completion of TOKENS
//! tokens (`Connection: close`, TCP_NODELAY) and prints one line per stream, in order: the
//! arrival time of each of its Server-Sent Events (each `\n\n`), in microseconds after its
//! request was sent, or `failed`. One thread, so it takes one core at most.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let numbers: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let [port, streams, tokens, ramp_ms] = numbers[..] else {
        eprintln!("usage: stream_clients PORT STREAMS TOKENS RAMP_MS");
        std::process::exit(2);
    };
    let Ok(port) = u16::try_from(port) else {
        eprintln!("the port must be below 65536");
        std::process::exit(2);
    };
    let body = format!(
        r#"{{"model":"mock-llm","messages":[{{"role":"user","content":"many streams"}}],"max_tokens":{tokens},"stream":true}}"#
    );
    let request: Arc<[u8]> = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into();
    let bound = Duration::from_secs(60) + Duration::from_millis(200 * tokens);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(async move {
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..streams)
            .map(|i| {
                let request = Arc::clone(&request);
                let at = start + Duration::from_millis(ramp_ms) * (i as u32) / (streams as u32);
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    tokio::time::timeout(bound, one(port, &request))
                        .await
                        .ok()
                        .flatten()
                })
            })
            .collect();
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(task.await.ok().flatten());
        }
        results
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for result in results {
        match result {
            Some(times) => {
                let line: Vec<String> = times.iter().map(u64::to_string).collect();
                writeln!(out, "{}", line.join(" "))?;
            }
            None => writeln!(out, "failed")?,
        }
    }
    out.flush()
}

/// One stream: its events' arrival times in microseconds after the request was sent.
async fn one(port: u16, request: &[u8]) -> Option<Vec<u64>> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    socket.set_nodelay(true).ok()?;
    let sent = Instant::now();
    socket.write_all(request).await.ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut times = Vec::new();
    // The last bytes of the previous read: an event's end or `[DONE]` may straddle two reads.
    let mut tail: Vec<u8> = Vec::with_capacity(16);
    loop {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return Some(times);
        }
        let now = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        let data = &buf[..n];
        let mut seen = std::mem::take(&mut tail);
        let before = count(&seen, b"\n\n");
        seen.extend_from_slice(data);
        let events = count(&seen, b"\n\n") - before;
        times.resize(times.len() + events, now);
        if count(&seen, b"[DONE]") > 0 {
            return Some(times);
        }
        tail = seen[seen.len().saturating_sub(7)..].to_vec();
    }
}

/// How many times `needle` occurs in `haystack`, not overlapping.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        if &haystack[i..i + needle.len()] == needle {
            n += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    n
}
