//! A reverse proxy built on actix-web and awc with nothing of respawn's supervision: no held
//! body for a retry, no in-flight table, no hang watch, no restart, no admission, no drain. It
//! uses respawn's client settings towards the model server (`respawn::upstream::build_client`:
//! no pool limit, no timeout of awc's own, `TCP_NODELAY`) and its hop-by-hop header rules, sets
//! `TCP_NODELAY` on incoming connections as `respawn serve` does, and passes a declared
//! `Content-Length` on instead of re-chunking the answer.
//!
//! It is the floor of the stack: the benchmark driver (`benches/driver.py`, proxy overhead) runs
//! it beside nginx and `respawn serve`, so that what respawn's own work costs (respawn against
//! this proxy) is told apart from what actix-web and awc cost (this proxy against nginx).
//!
//! `bare_proxy LISTEN ORIGIN [WORKERS]`, e.g. `bare_proxy 127.0.0.1:8080 http://127.0.0.1:8081`;
//! WORKERS defaults to one per core, as for `respawn serve`.

use std::net::SocketAddr;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::uri::{Authority, Parts, PathAndQuery, Scheme};
use actix_web::http::Uri;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use respawn::proxy::headers::{connection_tokens, is_hop_by_hop};

/// Where answers come from: the model server's scheme and authority.
#[derive(Clone)]
struct Origin {
    scheme: Scheme,
    authority: Authority,
}

/// One per worker, as respawn keeps one sender per worker.
struct Worker {
    client: awc::Client,
    origin: Origin,
}

/// The headers of `from` that a proxy passes on: not hop-by-hop, not `Host`, not the length
/// (which goes on as the body's own).
fn copy_headers(from: &HeaderMap, mut put: impl FnMut(&header::HeaderName, &header::HeaderValue)) {
    let tokens = connection_tokens(from);
    for (name, value) in from {
        if is_hop_by_hop(name, &tokens) || name == header::HOST || name == header::CONTENT_LENGTH {
            continue;
        }
        put(name, value);
    }
}

async fn forward(req: HttpRequest, body: web::Bytes, worker: web::Data<Worker>) -> HttpResponse {
    let mut parts = Parts::default();
    parts.scheme = Some(worker.origin.scheme.clone());
    parts.authority = Some(worker.origin.authority.clone());
    parts.path_and_query = Some(
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    let uri = match Uri::from_parts(parts) {
        Ok(uri) => uri,
        Err(err) => return HttpResponse::BadRequest().body(format!("bad path: {err}")),
    };
    let mut out = worker.client.request(req.method().clone(), uri);
    copy_headers(req.headers(), |name, value| {
        out.headers_mut().append(name.clone(), value.clone());
    });
    let answer = match out.send_body(body).await {
        Ok(answer) => answer,
        Err(err) => return HttpResponse::BadGateway().body(format!("model server: {err}")),
    };
    let length = answer
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut response = HttpResponse::build(answer.status());
    copy_headers(answer.headers(), |name, value| {
        response.append_header((name.clone(), value.clone()));
    });
    match length {
        Some(length) => response.body(SizedStream::new(length, answer)),
        None => response.streaming(answer),
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("bare_proxy: {problem}\nusage: bare_proxy LISTEN ORIGIN [WORKERS], e.g. bare_proxy 127.0.0.1:8080 http://127.0.0.1:8081");
    std::process::exit(2);
}

fn main() -> std::io::Result<()> {
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
    let origin = match (origin.scheme(), origin.authority()) {
        (Some(scheme), Some(authority)) => Origin {
            scheme: scheme.clone(),
            authority: authority.clone(),
        },
        _ => usage(&format!(
            "{:?} has no scheme or no host (http://host:port)",
            args[1]
        )),
    };
    let workers = match args.get(2) {
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => usage(&format!("{n:?} is not a number of workers above 0")),
        },
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    actix_web::rt::System::new().block_on(
        HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(Worker {
                    client: respawn::upstream::build_client(),
                    origin: origin.clone(),
                }))
                .app_data(web::PayloadConfig::new(64 << 20))
                .default_service(web::to(forward))
        })
        .workers(workers)
        .on_connect(|conn, _ext| {
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        .bind(listen)?
        .run(),
    )
}
