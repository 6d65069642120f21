//! HTTP servers for the library's tests.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

/// An HTTP/1.1 server on a thread: answers every request on a connection with `answer` (a whole
/// response, head and body) and keeps the connection open; sends a connection's index (0 for the
/// first accepted) when its client closes it.
pub fn keep_alive_server(answer: &'static [u8]) -> (u16, mpsc::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (closed, closes) = mpsc::channel();
    std::thread::spawn(move || {
        for (index, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let closed = closed.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = closed.send(index);
                            return;
                        }
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if stream.write_all(answer).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, closes)
}
