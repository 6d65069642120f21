//! Whether something accepts connections on the server's port.
//!
//! Used twice: before a start (someone else holding the port would make the new server fail
//! to bind) and after a stop (the old server's socket must be closed before the next one binds).

use std::net::SocketAddr;
use std::time::Duration;

/// How long a single connection attempt may take; on loopback a closed port refuses at once,
/// so reaching this bound means nothing accepted the connection.
pub(crate) const CONNECT_PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// True when a TCP connection to `addr` is accepted within [`CONNECT_PROBE_TIMEOUT`].
///
/// # Cancel safety
/// Cancel safe: dropping the future drops the pending connection attempt.
pub(crate) async fn accepts_connections(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(CONNECT_PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}
