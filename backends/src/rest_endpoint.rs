//! [`RestEndpoint`]: the restart strategy for a server respawn does not own but that exposes
//! an authenticated `POST /restart` (as `respawn::web` provides) and is brought back by its
//! service manager (systemd, Kubernetes).
//!
//! A hung server usually cannot answer its `/restart` either, so the request has a short
//! timeout of its own: the strategy fails fast and the caller falls through to the next one.

use std::fmt;
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::readiness::{bounded_client, wait_until_down, wait_until_healthy};
use crate::restart::{Restart, RestartError, RestartReport};

/// Default bound for the restart request and for each health probe.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Default bound for the old server going away and the new one answering its health check.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Restarts a server through its REST endpoint, then watches its health URL go down and up.
/// Its `Debug` output never shows the token.
#[derive(Clone)]
pub struct RestEndpoint {
    /// Where to `POST` the restart, e.g. `http://127.0.0.1:8080/restart`.
    pub restart_url: String,
    /// The bearer token the endpoint requires.
    pub token: String,
    /// The server's health URL, e.g. `http://127.0.0.1:8080/health`.
    pub health_url: String,
    /// Bound for the restart request and each health probe; keep it short.
    pub request_timeout: Duration,
    /// Bound for the server going away and coming back healthy.
    pub ready_timeout: Duration,
}

impl fmt::Debug for RestEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestEndpoint")
            .field("restart_url", &self.restart_url)
            .field("token", &"<redacted>")
            .field("health_url", &self.health_url)
            .field("request_timeout", &self.request_timeout)
            .field("ready_timeout", &self.ready_timeout)
            .finish()
    }
}

impl RestEndpoint {
    /// The strategy's name in reports, logs and a supervisor's `restart_strategies`.
    pub const NAME: &'static str = "rest_endpoint";

    /// A strategy with [`DEFAULT_REQUEST_TIMEOUT`] and [`DEFAULT_READY_TIMEOUT`].
    pub fn new(
        restart_url: impl Into<String>,
        token: impl Into<String>,
        health_url: impl Into<String>,
    ) -> Self {
        Self {
            restart_url: restart_url.into(),
            token: token.into(),
            health_url: health_url.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }

    /// Sends the restart request; any 2xx answer is success.
    async fn request_restart(&self, client: &awc::Client) -> Result<(), RestartError> {
        let url = &self.restart_url;
        let send = client
            .post(url)
            .insert_header(("Authorization", format!("Bearer {}", self.token)))
            .force_close()
            .timeout(self.request_timeout)
            .send();
        let timeout = || RestartError::Timeout {
            what: "the restart request",
            after: self.request_timeout,
        };
        let response = match tokio::time::timeout(self.request_timeout, send).await {
            Err(_) | Ok(Err(awc::error::SendRequestError::Timeout)) => return Err(timeout()),
            Ok(Err(awc::error::SendRequestError::Connect(awc::error::ConnectError::Timeout))) => {
                return Err(timeout())
            }
            Ok(Err(err)) => {
                return Err(RestartError::Unreachable {
                    url: url.clone(),
                    reason: err.to_string(),
                })
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.as_u16() == 401 || status.as_u16() == 403 {
            Err(RestartError::Unauthorized { url: url.clone() })
        } else {
            Err(RestartError::Rejected {
                url: url.clone(),
                status: status.as_u16(),
            })
        }
    }
}

impl Actor for RestEndpoint {
    type Context = Context<Self>;
}

impl Handler<Restart> for RestEndpoint {
    type Result = ResponseFuture<Result<RestartReport, RestartError>>;

    fn handle(&mut self, msg: Restart, _ctx: &mut Self::Context) -> Self::Result {
        let this = self.clone();
        Box::pin(async move {
            let begun = Instant::now();
            tracing::info!(url = %this.restart_url, hung = msg.hung.0, next = msg.next.0,
                cause = msg.cause.as_str(), "restarting through the REST endpoint");
            // awc's client is !Send and bound to this thread's runtime: made here, used here.
            let client = bounded_client(this.request_timeout);
            this.request_restart(&client).await?;
            let requested = begun.elapsed();

            // Running time: a pause of the machine is not time waited (crate::clock).
            let step = Clock::new();
            let within = this.ready_timeout;
            if !wait_until_down(&client, &this.health_url, this.request_timeout, within).await {
                return Err(RestartError::Timeout {
                    what: "the old server going away",
                    after: this.ready_timeout,
                });
            }
            let went_down = step.now();

            let step = Instant::now();
            let left = within.saturating_sub(went_down);
            wait_until_healthy(&client, &this.health_url, this.request_timeout, left).await?;
            Ok(RestartReport {
                strategy: Self::NAME,
                pid: None,
                guardian_pid: None,
                ready_confirmed: true,
                steps: vec![
                    ("request", requested),
                    ("old_gone", went_down),
                    ("ready", step.elapsed()),
                ],
                total: begun.elapsed(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let strategy = RestEndpoint::new(
            "http://127.0.0.1:1/restart",
            "s3cret-token",
            "http://127.0.0.1:1/health",
        );
        let shown = format!("{strategy:?}");
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
