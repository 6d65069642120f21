//! Test-only endpoints, enabled by the hidden `--debug-endpoints` flag.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use tracing::warn;

/// The longest block `/debug/block` accepts.
const MAX_BLOCK: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
pub(crate) struct BlockQuery {
    ms: u64,
}

/// `POST /debug/block?ms=N`: blocks the main event loop's thread for N ms (at most 60 s).
///
/// The systemd watchdog pings come from that loop, so this simulates a wedged service: the
/// pings stop, and systemd would kill it. The request itself is answered at once, from a worker.
pub(crate) async fn block(query: web::Query<BlockQuery>) -> HttpResponse {
    let wanted = Duration::from_millis(query.ms).min(MAX_BLOCK);
    warn!(
        ?wanted,
        "blocking the main event loop on request (--debug-endpoints)"
    );
    actix_rt::System::current().arbiter().spawn(async move {
        std::thread::sleep(wanted);
    });
    HttpResponse::Ok().json(serde_json::json!({ "blocked_ms": wanted.as_millis() as u64 }))
}
