//! The sd_notify protocol: tell systemd when the service is ready, alive and stopping.
//!
//! systemd names a Unix datagram socket in `NOTIFY_SOCKET` (a path, or an abstract name written
//! `@name`); the service sends newline-separated `KEY=VALUE` datagrams to it:
//!
//! - `READY=1` once the service accepts requests (with `Type=notify` systemd waits for it);
//! - `WATCHDOG=1` at least once per `WATCHDOG_USEC` (with `WatchdogSec=`); we ping at half that
//!   period, from a task on the service's own event loop, so a wedged loop stops pinging and
//!   systemd kills and restarts the service with no client involved;
//! - `STOPPING=1` when shutting down.
//!
//! The environment is read once, by [`Notifier::from_env`] (or given explicitly to
//! [`Notifier::from_vars`]), and the [`Notifier`] is passed to whoever needs it. When
//! `NOTIFY_SOCKET` is unset there is no notifier and nothing is ever sent.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

/// Why the notify environment could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyEnvError {
    /// `WATCHDOG_USEC` is not a positive integer number of microseconds.
    #[error("WATCHDOG_USEC={value:?} is not a positive number of microseconds")]
    BadWatchdogUsec {
        /// The value found.
        value: String,
    },
    /// `NOTIFY_SOCKET` names an address that cannot be used (e.g. an over-long path).
    #[error("NOTIFY_SOCKET={value:?} is not a usable socket address: {source}")]
    BadSocket {
        /// The value found.
        value: String,
        /// What the OS said.
        source: io::Error,
    },
}

/// A handle on systemd's notify socket, cheap to clone.
#[derive(Clone, Debug)]
pub struct Notifier {
    inner: Arc<NotifierInner>,
}

#[derive(Debug)]
struct NotifierInner {
    socket: UnixDatagram,
    address: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the process environment.
    ///
    /// Returns `Ok(None)` when `NOTIFY_SOCKET` is unset or empty (not running under systemd).
    /// Call it once at start and pass the notifier on.
    pub fn from_env() -> Result<Option<Self>, NotifyEnvError> {
        let get = |name: &str| std::env::var(name).ok();
        Self::from_vars(
            get("NOTIFY_SOCKET").as_deref(),
            get("WATCHDOG_USEC").as_deref(),
            get("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// Builds a notifier from explicit variable values, for callers that read them elsewhere.
    ///
    /// The watchdog is enabled when `watchdog_usec` is set and `watchdog_pid` is either unset or
    /// equal to `own_pid` (systemd sets `WATCHDOG_PID` so that a forked child does not ping on
    /// behalf of its parent).
    pub fn from_vars(
        notify_socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Result<Option<Self>, NotifyEnvError> {
        let Some(path) = notify_socket.filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let address = socket_address(path).map_err(|source| NotifyEnvError::BadSocket {
            value: path.to_owned(),
            source,
        })?;
        let for_us = watchdog_pid
            .map(|pid| pid.trim().parse::<u32>().ok() == Some(own_pid))
            .unwrap_or(true);
        let watchdog = match watchdog_usec {
            Some(value) if for_us => {
                let usec = value
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|u| *u > 0)
                    .ok_or_else(|| NotifyEnvError::BadWatchdogUsec {
                        value: value.to_owned(),
                    })?;
                Some(Duration::from_micros(usec))
            }
            _ => None,
        };
        let socket = UnixDatagram::unbound().map_err(|source| NotifyEnvError::BadSocket {
            value: path.to_owned(),
            source,
        })?;
        Ok(Some(Self {
            inner: Arc::new(NotifierInner {
                socket,
                address,
                watchdog,
            }),
        }))
    }

    /// The watchdog period systemd expects (`WATCHDOG_USEC`), when the watchdog is on.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.inner.watchdog
    }

    /// Sends raw `KEY=VALUE` lines; failures are logged, never fatal (systemd may be restarting).
    pub fn send(&self, state: &str) {
        if let Err(err) = self
            .inner
            .socket
            .send_to_addr(state.as_bytes(), &self.inner.address)
        {
            warn!(%err, "sd_notify: could not send {state:?}");
        }
    }

    /// `READY=1`: the service accepts requests.
    pub fn ready(&self) {
        debug!("sd_notify: READY=1");
        self.send("READY=1");
    }

    /// `STOPPING=1`: the service is shutting down.
    pub fn stopping(&self) {
        debug!("sd_notify: STOPPING=1");
        self.send("STOPPING=1");
    }

    /// `STATUS=...`: a one-line status shown by `systemctl status` (newlines are replaced).
    pub fn status(&self, status: &str) {
        let line = status.replace('\n', " ");
        self.send(&format!("STATUS={line}"));
    }

    /// `WATCHDOG=1`: one keep-alive ping.
    pub fn watchdog_ping(&self) {
        self.send("WATCHDOG=1");
    }

    /// Spawns the watchdog pinger on the current actix/tokio event loop; `None` when the
    /// watchdog is off.
    ///
    /// The task pings every half `WATCHDOG_USEC`. It runs on the loop it is spawned from, so if
    /// that loop is blocked the pings stop and systemd restarts the service — which is the point.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime with a `LocalSet` (e.g. outside actix's
    /// `System`), as `actix_rt::spawn` does.
    pub fn spawn_watchdog(&self) -> Option<actix_rt::task::JoinHandle<()>> {
        self.spawn_watchdog_while(|| true)
    }

    /// Like [`Notifier::spawn_watchdog`], but skips a ping whenever `alive()` is false, so a
    /// service that knows it is stuck (its engine no longer makes progress) lets systemd restart it.
    ///
    /// # Panics
    ///
    /// As [`Notifier::spawn_watchdog`].
    pub fn spawn_watchdog_while(
        &self,
        alive: impl Fn() -> bool + 'static,
    ) -> Option<actix_rt::task::JoinHandle<()>> {
        let period = self.inner.watchdog? / 2;
        let notifier = self.clone();
        debug!(?period, "sd_notify: watchdog pings enabled");
        Some(actix_rt::spawn(async move {
            let mut ticks = actix_rt::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if alive() {
                    notifier.watchdog_ping();
                } else {
                    debug!("sd_notify: service reports itself stuck; watchdog ping withheld");
                }
            }
        }))
    }
}

/// Parses `NOTIFY_SOCKET`: `@name` is an abstract socket (Linux), anything else a path.
fn socket_address(value: &str) -> io::Result<SocketAddr> {
    if let Some(name) = value.strip_prefix('@') {
        abstract_address(name.as_bytes())
    } else {
        SocketAddr::from_pathname(value)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_address(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_socket_means_no_notifier() {
        assert!(Notifier::from_vars(None, Some("1000"), None, 1)
            .unwrap()
            .is_none());
        assert!(Notifier::from_vars(Some(""), None, None, 1)
            .unwrap()
            .is_none());
    }

    #[test]
    fn watchdog_respects_watchdog_pid() {
        let mine = Notifier::from_vars(Some("/nonexistent/sock"), Some("200000"), Some("7"), 7)
            .unwrap()
            .unwrap();
        assert_eq!(mine.watchdog_period(), Some(Duration::from_millis(200)));
        let other = Notifier::from_vars(Some("/nonexistent/sock"), Some("200000"), Some("8"), 7)
            .unwrap()
            .unwrap();
        assert_eq!(other.watchdog_period(), None);
    }

    #[test]
    fn bad_watchdog_usec_is_an_error() {
        assert!(matches!(
            Notifier::from_vars(Some("/x"), Some("soon"), None, 1),
            Err(NotifyEnvError::BadWatchdogUsec { .. })
        ));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("respawn-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier::from_vars(Some(&format!("@{name}")), None, None, 1)
            .unwrap()
            .unwrap();
        notifier.ready();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
