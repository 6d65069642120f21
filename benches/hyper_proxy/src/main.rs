//! A reverse proxy on hyper 1 (server) and hyper-util's pooled client, with nothing of
//! respawn's supervision, for the proxy-overhead part of `scripts/bench.sh`: what another
//! well-kept Rust HTTP stack costs when used plainly, beside `examples/bare_proxy.rs` (the same on
//! actix-web and awc) and nginx.
//!
//! It is set up as the bare proxy is: one worker per core (a thread with a current-thread runtime
//! and its own listening socket, `SO_REUSEPORT`), one pooled client per worker without a pool
//! limit or a timeout of its own, `TCP_NODELAY` on both sides, hop-by-hop headers (and those a
//! message names in `Connection`) dropped both ways, `Host` set from the origin, bodies streamed
//! with their declared length kept.
//!
//! `hyper-proxy LISTEN ORIGIN [WORKERS]`, e.g. `hyper-proxy 127.0.0.1:8080 http://127.0.0.1:8081`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Headers that describe one hop, not the request (RFC 9110 §7.6.1), as respawn drops them.
const HOP_BY_HOP: [&str; 9] = [
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

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// Drops the hop-by-hop headers of `headers`, and those its `Connection` header names.
fn drop_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
    {
        headers.remove(name);
    }
}

fn answer(status: StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

async fn forward(
    mut req: Request<Incoming>,
    client: Client<HttpConnector, Incoming>,
    scheme: Scheme,
    authority: Authority,
) -> Result<Response<Body>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = match Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
    {
        Ok(uri) => uri,
        Err(err) => return Ok(answer(StatusCode::BAD_REQUEST, format!("bad path: {err}"))),
    };
    *req.uri_mut() = uri;
    drop_hop_by_hop(req.headers_mut());
    req.headers_mut().remove(header::HOST);
    match client.request(req).await {
        Ok(got) => {
            let (mut parts, body) = got.into_parts();
            drop_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, body.boxed_unsync()))
        }
        Err(err) => Ok(answer(
            StatusCode::BAD_GATEWAY,
            format!("model server: {err}"),
        )),
    }
}

async fn serve(listen: SocketAddr, scheme: Scheme, authority: Authority) -> std::io::Result<()> {
    let socket = if listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(listen)?;
    let listener = socket.listen(1024)?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors and the like: wait a little rather than spin.
                eprintln!("hyper-proxy: accept: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (client, scheme, authority) = (client.clone(), scheme.clone(), authority.clone());
        tokio::task::spawn_local(async move {
            let service = hyper::service::service_fn(move |req| {
                forward(req, client.clone(), scheme.clone(), authority.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("hyper-proxy: {problem}\nusage: hyper-proxy LISTEN ORIGIN [WORKERS], e.g. hyper-proxy 127.0.0.1:8080 http://127.0.0.1:8081");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 || args.len() > 3 {
        usage("expected two or three arguments");
    }
    let listen: SocketAddr = args[0]
        .parse()
        .unwrap_or_else(|_| usage(&format!("{:?} is not an address (host:port)", args[0])));
    let origin: Uri = args[1]
        .parse()
        .unwrap_or_else(|_| usage(&format!("{:?} is not a URL", args[1])));
    let (scheme, authority) = match (origin.scheme(), origin.authority()) {
        (Some(scheme), Some(authority)) if *scheme == Scheme::HTTP => {
            (scheme.clone(), authority.clone())
        }
        _ => usage(&format!("{:?} is not http://host:port", args[1])),
    };
    let workers = match args.get(2) {
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => usage(&format!("{n:?} is not a number of workers above 0")),
        },
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // Each worker serves until it fails; the first failure ends the whole program.
    let (failed, failure) = std::sync::mpsc::channel();
    for _ in 0..workers {
        let (scheme, authority, failed) = (scheme.clone(), authority.clone(), failed.clone());
        std::thread::spawn(move || {
            let ended = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|runtime| {
                    tokio::task::LocalSet::new()
                        .block_on(&runtime, serve(listen, scheme, authority))
                });
            let _ = failed.send(ended);
        });
    }
    if let Ok(Err(err)) = failure.recv() {
        eprintln!("hyper-proxy: {listen}: {err}");
    }
    std::process::exit(1);
}
