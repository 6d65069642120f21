//! The catch-all route: every request that is not `/respawn/*` goes to the model server.

use std::sync::Arc;

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::coordinator::RequestSucceeded;
use crate::in_flight::fingerprint;
use crate::metrics::FailureClass;
use crate::proxy::watched_body::{BodyWatch, Completeness, WatchedBody};
use crate::upstream::{
    connection_tokens, is_hop_by_hop, response_has_body, CallError, Outgoing, Upstream,
};

/// The header that tells a client its request was sent more than once (after a restart or a
/// server error), on successes and failures alike.
pub const ATTEMPTS_HEADER: &str = "x-respawn-attempts";

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
    let guard = shared.in_flight.enter(fp);
    let out = Outgoing {
        method: req.method().clone(),
        path_and_query,
        headers,
        body,
    };

    let delivered = match upstream.deliver_counted(&out, fp).await {
        (Ok(delivered), _) => delivered,
        (Err(err), attempts) => {
            metrics.request_failed(err.class());
            let kind = match err {
                CallError::Unavailable(_) => "server_unavailable",
                CallError::GaveUp { .. } => "upstream_failed",
                CallError::Quarantined => "request_quarantined",
            };
            let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = error_response(status, kind, &err.to_string());
            if attempts > 1 {
                response.headers_mut().insert(
                    HeaderName::from_static(ATTEMPTS_HEADER),
                    HeaderValue::from(attempts),
                );
            }
            return response;
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
        builder.insert_header((ATTEMPTS_HEADER, delivered.attempts));
    }
    let suspect = shared.in_flight.is_suspect(fp).then_some(fp);
    let status = delivered.response.status();
    if !response_has_body(&out.method, status) {
        // The head is the whole answer: pass its length on (a HEAD answer and a 304 keep the
        // length of the representation) without waiting for a body that never comes.
        drop(guard);
        if let Some(fingerprint) = suspect {
            shared.coordinator.do_send(RequestSucceeded { fingerprint });
        }
        return match length {
            Some(length)
                if out.method == Method::HEAD
                    && status != StatusCode::NO_CONTENT
                    && status != StatusCode::NOT_MODIFIED
                    && !status.is_informational() =>
            {
                // Declared as an unframed stream with a fixed length rather than a sized body:
                // actix-http decides "this answers a HEAD" from the last request it parsed, so
                // with a pipelined request behind this one a sized body would wait for bytes.
                builder.no_chunking(length);
                builder.body(BodyStream::new(futures_util::stream::empty::<
                    Result<Bytes, actix_web::Error>,
                >()))
            }
            Some(length) if status == StatusCode::NOT_MODIFIED => {
                builder.insert_header((header::CONTENT_LENGTH, length));
                builder.body(actix_web::body::None::new())
            }
            _ => builder.body(actix_web::body::None::new()),
        };
    }
    let completeness = Completeness {
        length,
        ends_with_done: sse && out.path_and_query.contains("/completions"),
    };
    let watch = BodyWatch {
        generation: delivered.generation,
        stall_timeout: shared.config.stall_timeout,
        sse,
        coordinator: shared.coordinator.clone(),
        metrics: Arc::clone(&shared.metrics),
        guard,
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
