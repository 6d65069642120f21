//! The process's own resources: how many files it may open, how its listener queues
//! connections, and whether memory freed after a large request goes back to the system.
//!
//! These are process-wide settings, so they belong to the binary, not to the `respawn` library
//! (an application that embeds the library chooses its own).

use std::net::{SocketAddr, TcpListener};

use tracing::{info, warn};

/// Connections the kernel queues for the listener before respawn accepts them (actix-web's
/// default; the standard library's `bind` leaves 128, which a burst of clients overflows into
/// SYN retries of a second or more).
pub const LISTEN_BACKLOG: i32 = 1024;

/// What the open-file limit is after [`raise_open_file_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit before.
    pub was: u64,
    /// The soft limit now: the hard limit when it could be raised.
    pub now: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as systemd advises services that need many
/// descriptors to do themselves: each client of the proxy costs one descriptor and one more
/// towards the model server, so the common soft limit of 1,024 caps respawn at a few hundred
/// concurrent requests although the hard limit allows far more.
///
/// The model server inherits the raised limit (vLLM raises its own the same way). Returns the
/// limits as they are afterwards, also when raising failed (then `now == was`, and a warning says
/// why).
pub fn raise_open_file_limit() -> OpenFiles {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // `rlim_t` is `u64` on the Linux targets respawn runs on.
    let (soft, hard): (u64, u64) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(err) => {
            warn!(error = %err, "cannot read the open-file limit");
            return OpenFiles {
                was: 0,
                now: 0,
                hard: 0,
            };
        }
    };
    if soft >= hard {
        info!(
            open_files = soft,
            hard_limit = hard,
            "open-file limit already at the hard limit"
        );
        return OpenFiles {
            was: soft,
            now: soft,
            hard,
        };
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => {
            info!(
                open_files = hard,
                was = soft,
                hard_limit = hard,
                "raised the open-file limit to the hard limit"
            );
            OpenFiles {
                was: soft,
                now: hard,
                hard,
            }
        }
        Err(err) => {
            warn!(open_files = soft, hard_limit = hard, error = %err, "cannot raise the open-file limit; connections past it are refused with 503");
            OpenFiles {
                was: soft,
                now: soft,
                hard,
            }
        }
    }
}

/// Binds `addr` with a listen backlog of [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as the standard
/// library's `bind` sets it).
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Makes freed large allocations go back to the system at once.
///
/// glibc serves an allocation above its mmap threshold with its own mapping, unmapped on free;
/// but the threshold grows to the size of each such block freed (up to 32 MiB), after which
/// request bodies of that size come from the heap arenas and stay resident after the request:
/// eight concurrent 30 MB requests left respawn at ~140 MB. A fixed threshold (which also fixes
/// the trim threshold) keeps large bodies in their own mappings, so the memory is returned when
/// the request ends. Elsewhere (musl, other systems) this does nothing and says so (`false`).
///
/// Call it first thing in `main`, before other threads start allocating; it logs nothing (the
/// logger may not be set up yet), so the caller reports a `false`.
pub fn return_large_allocations() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// Blocks from 1 MiB up get their own mapping.
        const MMAP_THRESHOLD: libc::c_int = 1 << 20;
        // SAFETY: mallopt only adjusts the allocator's parameters (it takes the allocator's own
        // lock); the parameter is a documented one and the value is in its range.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
