//! Watching a server's health URL go down and come back, for strategies that restart a server
//! they do not own.

use std::time::Duration;

use crate::clock::{self, Clock};

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

/// Probes `url` once, giving up after `timeout` of running time (a probe in flight across a
/// pause of the machine is not a server that stopped answering; see [`crate::clock`]).
///
/// # Cancel safety
/// Cancel safe: dropping it drops the request.
pub(crate) async fn probe(client: &awc::Client, url: &str, timeout: Duration) -> Probe {
    // A fresh connection each time, so that a server that died is never mistaken for a live
    // one through a pooled connection. The client's own response timer is off
    // ([`bounded_client`]): it would fire on a resume.
    let request = client.get(url).force_close().send();
    match clock::timeout(timeout, request).await {
        Some(Ok(response)) if response.status().is_success() => Probe::Healthy,
        _ => Probe::Unhealthy,
    }
}

/// Waits until `url` stops answering 2xx (the old server went away), for at most `within` of
/// running time. Returns `false` when that passed first.
pub(crate) async fn wait_until_down(
    client: &awc::Client,
    url: &str,
    probe_timeout: Duration,
    within: Duration,
) -> bool {
    let clock = Clock::new();
    loop {
        if probe(client, url, probe_timeout).await == Probe::Unhealthy {
            return true;
        }
        if clock.now() + PROBE_EVERY >= within {
            return false;
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Waits until `url` answers 2xx, for at most `within` of running time.
///
/// # Errors
/// [`RestartError::NotReady`] when it never did.
pub(crate) async fn wait_until_healthy(
    client: &awc::Client,
    url: &str,
    probe_timeout: Duration,
    within: Duration,
) -> Result<(), RestartError> {
    let clock = Clock::new();
    loop {
        let left = within.saturating_sub(clock.now());
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
        if clock.now() + PROBE_EVERY >= within {
            return Err(RestartError::NotReady {
                url: url.to_owned(),
                after: within,
            });
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// A client whose connect timeout is `timeout`, without a response timer of its own: each
/// request bounds its wait itself (a probe on running time, [`probe`]; a request that sets its
/// own timeout).
pub(crate) fn bounded_client(timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .disable_timeout()
        .disable_redirects()
        .connector(awc::Connector::new().timeout(timeout))
        .finish()
}
