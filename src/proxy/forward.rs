//! The catch-all route: every request that is not `/respawn/*` goes to the model server.

use std::sync::Arc;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures_util::StreamExt;
use respawn_core::Generation;

use crate::in_flight::fingerprint;
use crate::metrics::FailureClass;
use crate::proxy::watched_body::{BodyWatch, Completeness, WatchedBody};
use crate::upstream::{connection_tokens, is_hop_by_hop, CallError, Identity, Outgoing, Upstream};

/// Limits the proxy enforces on what clients send.
#[derive(Clone, Copy, Debug)]
pub struct ProxyLimits {
    /// Largest request body accepted; past it the answer is 413.
    pub max_body_size: u64,
}

/// Forwards one request; see the module docs.
pub async fn forward(
    req: HttpRequest,
    mut payload: web::Payload,
    upstream: web::Data<Upstream>,
    limits: web::Data<ProxyLimits>,
) -> HttpResponse {
    let shared = Arc::clone(upstream.shared());
    let metrics = &shared.metrics;
    metrics.request_started();

    // The body is held (up to the limit) so that the request can be sent again after a restart.
    let limit = limits.max_body_size;
    if let Some(length) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if length > limit {
            metrics.request_failed(FailureClass::TooLarge);
            return too_large(limit);
        }
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(chunk) => {
                if (body.len() + chunk.len()) as u64 > limit {
                    metrics.request_failed(FailureClass::TooLarge);
                    return too_large(limit);
                }
                body.extend_from_slice(&chunk);
            }
            Err(err) => {
                metrics.request_failed(FailureClass::BadRequest);
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("could not read the request body: {err}"),
                );
            }
        }
    }
    let body = body.freeze();

    let tokens = connection_tokens(req.headers());
    let mut headers = HeaderMap::new();
    for (name, value) in req.headers() {
        if is_hop_by_hop(name, &tokens) || name == header::HOST || name == header::CONTENT_LENGTH {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let fp = fingerprint(req.method().as_str(), &path_and_query, &body);
    let mut id = Identity::new(fp);
    let out = Outgoing {
        method: req.method().clone(),
        path_and_query,
        headers,
        body,
    };

    let mut plan = upstream.plan();
    let delivered = match upstream
        .deliver(&out, &mut id, &mut plan, Generation::NONE)
        .await
    {
        Ok(delivered) => delivered,
        Err(err) => {
            metrics.request_failed(err.class());
            let kind = match err {
                CallError::Unavailable(_) => "server_unavailable",
                CallError::GaveUp { .. } => "upstream_failed",
                CallError::Quarantined { .. } => "request_quarantined",
            };
            let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_GATEWAY);
            return error_response(status, kind, &err.to_string());
        }
    };

    let upstream_headers = delivered.response.headers();
    let response_tokens = connection_tokens(upstream_headers);
    let mut builder = HttpResponse::build(delivered.response.status());
    let mut length = None;
    let mut sse = false;
    for (name, value) in upstream_headers {
        if name == header::CONTENT_LENGTH {
            length = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
            continue;
        }
        if is_hop_by_hop(name, &response_tokens) {
            continue;
        }
        if name == header::CONTENT_TYPE {
            sse = value
                .to_str()
                .map(|v| v.starts_with("text/event-stream"))
                .unwrap_or(false);
        }
        builder.append_header((name.clone(), value.clone()));
    }
    builder.insert_header((
        "x-respawn-generation",
        delivered.generation.get().to_string(),
    ));
    if delivered.attempts > 1 {
        builder.insert_header(("x-respawn-attempts", delivered.attempts.to_string()));
    }
    // The head goes to the client now: from here on nothing is replayed.
    plan.reached_client();
    let suspect = upstream.is_suspect(fp).then_some(fp);
    let completeness = Completeness {
        length,
        ends_with_done: sse && out.path_and_query.contains("/completions"),
    };
    let watch = BodyWatch {
        plan,
        clock: shared.clock,
        snapshot: Arc::clone(&shared.snapshot),
        in_flight: Arc::clone(&shared.in_flight),
        sse,
        coordinator: shared.coordinator.clone(),
        metrics: Arc::clone(&shared.metrics),
        identity: id,
        suspect,
        completeness,
    };
    let body = WatchedBody::new(delivered.first, delivered.response, watch);
    match length {
        Some(length) => builder.body(SizedStream::new(length, body)),
        None => builder.streaming(body),
    }
}

fn too_large(limit: u64) -> HttpResponse {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        &format!("the request body is larger than the limit of {limit} bytes (--max-body-size)"),
    )
}

/// An error answer in the OpenAI error shape, so clients show the message.
pub fn error_response(status: StatusCode, kind: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "error": { "message": message, "type": kind, "code": status.as_u16() }
    }))
}
