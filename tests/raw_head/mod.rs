//! The request head a scripted test server reads, byte by byte up to the blank line: for the
//! fake servers that must answer with raw, unusual bytes on purpose (cut, slow, malformed), so no
//! HTTP server library sits between the test and the wire.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

/// Reads the head of one request (up to and including `\r\n\r\n`), or what came before the
/// client stopped sending; bounded by a 10 s read timeout.
pub fn read_head(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}
