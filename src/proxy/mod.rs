//! The supervising proxy: an actix-web server that forwards every path to the model server
//! except `/respawn/*`, which is respawn's own control surface.
//!
//! Each actix-web worker gets its own [`Upstream`](crate::upstream::Upstream) (its own awc
//! client), so the data path never funnels through one thread; what the workers share is read
//! on the hot path, not written: a request writes only its own worker's shard of the in-flight
//! table and of the request counter (see [`crate::in_flight`]), and the body it streams holds one
//! reference to what its server's senders share rather than one to each part of it.

pub mod admission;
pub mod control;
pub mod drain;
pub mod forward;
pub mod headers;
pub mod resume;
pub mod served_body;
pub mod watched_body;

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::{web, App, HttpServer};

pub use admission::Admission;
pub use control::Control;
pub use drain::Drain;
pub use forward::ProxyLimits;

use crate::pool::Pool;
use crate::supervisor::Supervisor;

/// How the proxy listens.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// actix-web workers (one per core is best).
    pub workers: usize,
    /// Largest request body.
    pub max_body_size: u64,
    /// How long a client may take to send its request head (slowloris bound).
    pub header_timeout: Duration,
    /// How long in-flight requests may take to finish at shutdown. Streams still open when it
    /// ends are ended through [`ProxySettings::drain`]; actix closes what is left a second later.
    pub shutdown_grace: Duration,
    /// How many connections and forwarded requests each worker takes on.
    pub admission: Admission,
    /// Ends the answers still open when the shutdown grace ends.
    pub drain: Drain,
    /// Gives the global allocator's free memory back to the system; called when a request with a
    /// large body ends (its chunks, copied and freed, would otherwise stay resident).
    /// [`trim_system_allocator`] for the system allocator; the `respawn` program built on
    /// mimalloc passes its own.
    pub return_free_memory: fn(),
}

/// Gives the system allocator's free memory back to the system (glibc's `malloc_trim`; nothing
/// on other C libraries): the [`ProxySettings::return_free_memory`] of a program on the C
/// library's allocator.
pub fn trim_system_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator (under its own locks); no
    // memory in use is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listen address is taken or not ours to bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Serves on `listener` (already bound); the returned server runs when awaited (or spawned).
pub fn serve(
    listener: std::net::TcpListener,
    settings: &ProxySettings,
    supervisor: &Supervisor,
    control: Control,
) -> Result<actix_web::dev::Server, ProxyError> {
    let supervisor = supervisor.clone();
    serve_with(listener, settings, control, move || {
        let upstream = supervisor.upstream();
        Box::new(move |app: &mut web::ServiceConfig| {
            app.app_data(web::Data::new(upstream))
                .default_service(web::to(forward::forward));
        })
    })
}

/// Serves a pool on `listener` (already bound): each request goes to the replica its router
/// picks. The returned server runs when awaited (or spawned).
pub fn serve_pool(
    listener: std::net::TcpListener,
    settings: &ProxySettings,
    pool: &Pool,
    control: Control,
) -> Result<actix_web::dev::Server, ProxyError> {
    let pool = pool.clone();
    serve_with(listener, settings, control, move || {
        let upstream = pool.upstream();
        Box::new(move |app: &mut web::ServiceConfig| {
            app.app_data(web::Data::new(upstream))
                .default_service(web::to(forward::forward_to_pool));
        })
    })
}

type Forwarding = Box<dyn FnOnce(&mut web::ServiceConfig)>;

fn serve_with<F>(
    listener: std::net::TcpListener,
    settings: &ProxySettings,
    control: Control,
    forwarding: F,
) -> Result<actix_web::dev::Server, ProxyError>
where
    F: Fn() -> Forwarding + Clone + Send + 'static,
{
    let limits = ProxyLimits {
        max_body_size: settings.max_body_size,
        return_free_memory: settings.return_free_memory,
    };
    let admission = settings.admission;
    let drain = settings.drain.clone();
    // The drain must come before actix's forced close, which follows its shutdown timeout.
    let shutdown_timeout = settings.shutdown_grace.as_secs_f64().ceil() as u64 + 1;
    let server = HttpServer::new(move || {
        let forwarding = forwarding();
        App::new()
            .app_data(web::Data::new(limits))
            .app_data(web::Data::new(control.clone()))
            // Per worker, on the worker's thread (see `admission`).
            .app_data(admission::ForwardSlots::new(admission.forwards_per_worker))
            // Per worker too: its requests listen for the end of the grace on their own worker.
            .app_data(drain::WorkerDrain::new(&drain))
            // The body is read by the forwarder, which enforces the limit itself (413).
            .app_data(web::PayloadConfig::new(usize::MAX))
            .configure(control::configure)
            // The sender of this worker and the catch-all route to the model server.
            .configure(forwarding)
    })
    .workers(settings.workers.max(1))
    .max_connections(admission.connections_per_worker)
    .client_request_timeout(settings.header_timeout)
    // A client that closes its side is gone: end its handler at once, which drops the request to
    // the model server and frees its slot (otherwise a non-streamed request keeps generating for
    // nobody until it ends, and can be retried for nobody after a timeout).
    .h1_allow_half_closed(false)
    .shutdown_timeout(shutdown_timeout)
    .disable_signals()
    .on_connect(|conn, _ext| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
        }
    })
    .listen(listener)
    .map_err(|source| ProxyError::Bind {
        addr: settings.listen,
        source,
    })?;
    Ok(server.run())
}
