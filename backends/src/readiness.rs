//! Watching a server's health URL go down and come back, for strategies that restart a server
//! they do not own.

use std::time::Duration;

use tokio::time::Instant;

use crate::restart::RestartError;

/// Pause between two health probes while waiting.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// What one probe of a health URL found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The server answered 2xx.
    Healthy,
    /// The server answered with another status, or not at all.
    Unhealthy,
}

/// Probes `url` once, giving up after `timeout`.
///
/// # Cancel safety
/// Cancel safe: dropping it drops the request.
pub(crate) async fn probe(client: &awc::Client, url: &str, timeout: Duration) -> Probe {
    // A fresh connection each time, so that a server that died is never mistaken for a live
    // one through a pooled connection.
    let request = client.get(url).force_close().timeout(timeout).send();
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(response)) if response.status().is_success() => Probe::Healthy,
        _ => Probe::Unhealthy,
    }
}

/// Waits until `url` stops answering 2xx (the old server went away), bounded by `deadline`.
/// Returns `false` when the deadline passed first.
pub(crate) async fn wait_until_down(
    client: &awc::Client,
    url: &str,
    probe_timeout: Duration,
    deadline: Instant,
) -> bool {
    loop {
        if probe(client, url, probe_timeout).await == Probe::Unhealthy {
            return true;
        }
        if Instant::now() + PROBE_EVERY >= deadline {
            return false;
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Waits until `url` answers 2xx, for at most `within`.
///
/// # Errors
/// [`RestartError::NotReady`] when it never did.
pub(crate) async fn wait_until_healthy(
    client: &awc::Client,
    url: &str,
    probe_timeout: Duration,
    within: Duration,
) -> Result<(), RestartError> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if probe(
            client,
            url,
            probe_timeout.min(left.max(Duration::from_millis(1))),
        )
        .await
            == Probe::Healthy
        {
            return Ok(());
        }
        if Instant::now() + PROBE_EVERY >= deadline {
            return Err(RestartError::NotReady {
                url: url.to_owned(),
                after: within,
            });
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// A client whose connect and response-head timeouts are both `timeout`.
pub(crate) fn bounded_client(timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .timeout(timeout)
        .disable_redirects()
        .connector(awc::Connector::new().timeout(timeout))
        .finish()
}
