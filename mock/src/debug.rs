//! Test-only endpoints, enabled by the hidden `--debug-endpoints` flag.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
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
