//! Which headers cross the proxy: hop-by-hop headers (RFC 9110 §7.6.1) and those a message
//! names in its own `Connection` header describe one connection, not the request, and are
//! dropped in both directions by [`forward`](super::forward).

use actix_web::http::header::{HeaderMap, HeaderName};

/// Headers that describe one hop, not the request: never forwarded (RFC 9110 §7.6.1).
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

/// Whether a header must not cross the proxy (hop-by-hop, or named in `Connection`).
pub fn is_hop_by_hop(name: &HeaderName, connection_tokens: &[String]) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(&n) || connection_tokens.iter().any(|t| t == n)
}

/// The header names listed in a message's `Connection` header, lower-cased.
pub fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(actix_web::http::header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_connection_tokens_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            actix_web::http::header::CONNECTION,
            actix_web::http::header::HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        let tokens = connection_tokens(&headers);
        assert_eq!(
            tokens,
            vec!["keep-alive".to_owned(), "x-secret-hop".to_owned()]
        );
        assert!(is_hop_by_hop(
            &HeaderName::from_static("x-secret-hop"),
            &tokens
        ));
        assert!(is_hop_by_hop(
            &HeaderName::from_static("transfer-encoding"),
            &tokens
        ));
        assert!(!is_hop_by_hop(
            &HeaderName::from_static("content-type"),
            &tokens
        ));
        assert!(!is_hop_by_hop(
            &HeaderName::from_static("authorization"),
            &tokens
        ));
    }
}
