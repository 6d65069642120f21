//! Measures how long respawn itself spends restarting a child that starts instantly, step
//! by step: `cargo run --release -p respawn-backends --example restart_timing [ROUNDS]`.
//!
//! The child is `sleep 30` (it exits at once on SIGTERM and holds no port), so every
//! millisecond reported is respawn's own: signalling, reaping, scanning the group, spawning.

use std::time::Duration;

use actix::prelude::*;
use respawn_backends::{ProcessKill, Restart, ServerActor, ServerExited, ServerSpec, Start, Stop};
use respawn_core::{Generation, HangCause, StopMode};

struct IgnoreExits;

impl Actor for IgnoreExits {
    type Context = Context<Self>;
}

impl Handler<ServerExited> for IgnoreExits {
    type Result = ();
    fn handle(&mut self, _msg: ServerExited, _ctx: &mut Self::Context) {}
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    System::new().block_on(async move {
        let spec = ServerSpec::new("timing", "sleep", ["30"], 0);
        let server = ServerActor::new(spec, IgnoreExits.start().recipient()).start();
        server
            .send(Start {
                generation: Generation(1),
            })
            .await??;
        let strategy = ProcessKill::new(server.clone(), Duration::from_secs(5)).start();
        let mut stops = Vec::new();
        let mut spawns = Vec::new();
        let mut totals = Vec::new();
        for round in 1..=rounds {
            let report = strategy
                .send(Restart {
                    hung: Generation(round),
                    next: Generation(round + 1),
                    cause: HangCause::Manual,
                    stop: StopMode::Graceful,
                })
                .await??;
            stops.push(report.steps[0].1);
            spawns.push(report.steps[1].1);
            totals.push(report.total);
        }
        // One more stop, to see the stop's own steps.
        let stopped = server
            .send(Stop {
                grace: Duration::from_secs(5),
            })
            .await??;
        println!("rounds: {rounds}");
        for (name, values) in [
            ("stop", &mut stops),
            ("spawn", &mut spawns),
            ("total", &mut totals),
        ] {
            values.sort();
            println!(
                "{name:>6}: median {:>9.3?}  max {:>9.3?}",
                values[values.len() / 2],
                values[values.len() - 1]
            );
        }
        println!(
            "last stop: signal_to_exit {:.3?}, group_gone {:.3?}, port_free {:.3?}, total {:.3?}",
            stopped.signal_to_exit, stopped.group_gone, stopped.port_free, stopped.total
        );
        Ok(())
    })
}
