//! A pool of two supervised model servers behind one address, embedded in your own program.
//!
//! Each replica is a full supervisor (`respawn mock` on its own port); [`Pool`] routes every
//! request to the ready replica with the fewest in flight, around a replica that is hung or
//! restarting. The proxy answers on 127.0.0.1:`$PORT` (default 8080) with respawn's control
//! routes (`/respawn/status` lists the replicas); SIGTERM or Ctrl-C stops it and both servers.
//! The `respawn` binary comes from the first argument, else `RESPAWN_BIN`, else `PATH`.
//!
//! ```text
//! cargo build && PORT=8080 cargo run --example pool -- target/debug/respawn
//! curl -s http://127.0.0.1:8080/respawn/status
//! ```

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use respawn::pool::{Pool, PoolConfig, PoolControl, ReplicaSpec};
use respawn::proxy::{self, Admission, Control, Drain, ProxySettings};
use respawn::supervisor::{SupervisorConfig, Target};

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let bin = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("RESPAWN_BIN").ok())
        .unwrap_or_else(|| "respawn".to_owned());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(listen)?;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(ReplicaSpec {
            config: SupervisorConfig::new("llm"),
            target: Target::command("llm", &bin, ["mock", "--port", "{port}"], free_port()?),
        });
    }
    actix_web::rt::System::new().block_on(async move {
        let pool = Pool::start(PoolConfig::default(), replicas).await?;
        let control = Control::of_pool(
            &pool.replicas()[0],
            Arc::new(PoolControl::new(pool.clone())),
            None,
        );
        let settings = ProxySettings {
            listen,
            workers: 1,
            max_body_size: 16 << 20,
            header_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            admission: Admission::unbounded(),
            drain: Drain::new(),
            return_free_memory: respawn::proxy::trim_system_allocator,
        };
        let server = proxy::serve_pool(listener, &settings, &pool, control)?;
        let handle = server.handle();
        let running = actix_web::rt::spawn(server);
        pool.wait_ready(Duration::from_secs(60)).await?;
        eprintln!("pool of {} replicas listening on {listen}", pool.len());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        handle.stop(true).await;
        pool.stop(Duration::from_secs(5)).await;
        let _ = running.await;
        Ok(())
    })
}
