//! The control API's HTTP/1.1 client of the service tests: one request per connection, written
//! by hand so a test sees exactly the status and body the node sent.

use std::io::{Read, Write};
use std::net::SocketAddr;

/// One HTTP/1.1 request from `from` (a loopback source address), with a bearer `token` if
/// given; returns the status and the body.
pub fn request(
    to: SocketAddr,
    from: &str,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    sock.connect(&to.into()).unwrap();
    let mut s: std::net::TcpStream = sock.into();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (status, body) = split_response(&out);
    (
        status.unwrap_or_else(|| panic!("no status in {out:?}")),
        body,
    )
}

/// [`request`] from 127.0.0.1 without a token (the nodes of the tests let loopback in).
pub fn local(to: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    request(to, "127.0.0.1", method, path, body, None)
}

/// An HTTP/1.1 answer read whole: its status (`None` if the connection closed without one) and
/// its body.
pub fn split_response(out: &str) -> (Option<u16>, String) {
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A form POST (`application/x-www-form-urlencoded`, the qBittorrent API's) with the node's key;
/// returns the status (0 if none came) and the body.
pub fn form_post(to: SocketAddr, token: &str, path: &str, form: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(to).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (status, body) = split_response(&out);
    (status.unwrap_or(0), body)
}
