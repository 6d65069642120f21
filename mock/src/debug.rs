//! Test-only endpoints, enabled by the hidden `--debug-endpoints` flag.

use std::sync::Arc;
use std::time::Duration;

use actix_rt::ArbiterHandle;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use respawn::systemd::Notifier;
use serde::Deserialize;
use tokio::sync::Notify;
use tracing::warn;

/// The longest block `/debug/block` accepts.
const MAX_BLOCK: Duration = Duration::from_secs(60);

/// The `STATUS=` line sent on the event loop just before it blocks.
const BLOCK_STARTS: &str = "debug: event loop blocked";
/// The `STATUS=` line sent on the event loop just after the block ends.
const BLOCK_ENDS: &str = "debug: event loop unblocked";

/// What the debug endpoints reach into.
#[derive(Clone)]
pub(crate) struct DebugHooks {
    /// The loop `run_until_restart` runs on, where the watchdog pinger was spawned; not a
    /// worker's loop, whichever worker serves the request.
    pub(crate) main_loop: ArbiterHandle,
    /// The systemd notifier, when there is one.
    pub(crate) notifier: Option<Notifier>,
    /// Ends a `--start-delay` now (a permit is kept if the slow start has not begun waiting).
    pub(crate) finish_loading: Arc<Notify>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct BlockQuery {
    ms: u64,
}

/// `POST /debug/block?ms=N`: blocks the main event loop's thread for N ms (at most 60 s).
///
/// The systemd watchdog pings come from that loop, so this simulates a wedged service: the
/// pings stop, and systemd would kill it. The request itself is answered at once, from a worker.
/// With a notifier, the blocked loop itself sends `STATUS=debug: event loop blocked` right before
/// it sleeps and `STATUS=debug: event loop unblocked` right after: on the notify socket, in the
/// order things happened, no ping can fall between the two.
pub(crate) async fn block(
    query: web::Query<BlockQuery>,
    hooks: web::Data<DebugHooks>,
) -> HttpResponse {
    let wanted = Duration::from_millis(query.ms).min(MAX_BLOCK);
    let notifier = hooks.notifier.clone();
    let spawned = hooks.main_loop.spawn(async move {
        warn!(
            ?wanted,
            "blocking the main event loop on request (--debug-endpoints)"
        );
        if let Some(n) = &notifier {
            n.status(BLOCK_STARTS);
        }
        std::thread::sleep(wanted);
        if let Some(n) = &notifier {
            n.status(BLOCK_ENDS);
        }
        warn!("the main event loop runs again");
    });
    if !spawned {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "error": "the main event loop has stopped" }));
    }
    HttpResponse::Ok().json(serde_json::json!({ "blocked_ms": wanted.as_millis() as u64 }))
}

/// `ANY /debug/answer/{status}`: answers with that status and the body `mock answer\n` (12
/// bytes), so a proxy's handling of bodiless answers can be tested against a real server.
///
/// For `HEAD` the server sends the head only, with the `Content-Length` a `GET` would have (as
/// RFC 9110 §9.3.2 allows); `204` has neither body nor length; `304` has no body but keeps the
/// length of the representation (RFC 9110 §15.4.5), which is what trips naive proxies.
pub(crate) async fn answer(status: web::Path<u16>) -> HttpResponse {
    const BODY: &str = "mock answer\n";
    let Ok(status) = StatusCode::from_u16(*status) else {
        return HttpResponse::BadRequest().body("not a status code\n");
    };
    match status {
        StatusCode::NO_CONTENT => HttpResponse::NoContent().finish(),
        StatusCode::NOT_MODIFIED => HttpResponse::NotModified()
            .insert_header((header::CONTENT_LENGTH, BODY.len()))
            .insert_header((header::ETAG, "\"mock\""))
            .finish(),
        _ => HttpResponse::build(status)
            .content_type("text/plain")
            .body(BODY),
    }
}

/// `POST /debug/finish-loading`: ends a `--start-delay` now, so a test decides when the model
/// is loaded instead of racing a timer: `/health` answers 503 until then, and `READY=1` comes
/// only after.
pub(crate) async fn finish_loading(hooks: web::Data<DebugHooks>) -> HttpResponse {
    warn!("finishing the simulated start now (--debug-endpoints)");
    hooks.finish_loading.notify_one();
    HttpResponse::Ok().json(serde_json::json!({ "loading": "finishing" }))
}
