//! The HTTP/1.1 upgrade (RFC 6455 section 4), sans-IO, for both roles.

use std::fmt;

use bytes::BytesMut;

mod client;
mod server;
#[cfg(test)]
mod tests;
mod validate;

pub use client::{ClientHandshake, ClientRequest, Response};
pub use server::{parse_request, Accepted, Request};
pub use validate::{InvalidRequest, RequestPart};

const MAX_HEADERS: usize = 64;

/// Why a handshake failed. On a server, [`status`](HandshakeError::status) is the HTTP
/// status to answer with ([`write_response`](HandshakeError::write_response) writes it); on
/// a client it is the status the server sent (101 when a 101 response failed verification,
/// 0 when the response was not HTTP).
///
/// ```
/// use getty_codec::ws::HandshakeError;
/// let e = HandshakeError::new(404, "no route");
/// assert_eq!(e.status(), 404);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeError {
    status: u16,
    detail: String,
}

impl HandshakeError {
    /// A handshake failure with an HTTP status.
    ///
    /// ```
    /// assert_eq!(getty_codec::ws::HandshakeError::new(403, "origin").status(), 403);
    /// ```
    pub fn new(status: u16, detail: impl Into<String>) -> Self {
        HandshakeError {
            status,
            detail: detail.into(),
        }
    }

    /// The HTTP status (see the type's documentation).
    ///
    /// ```
    /// assert_eq!(getty_codec::ws::HandshakeError::new(400, "x").status(), 400);
    /// ```
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Server side: writes the error response for this failure into `out`.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::HandshakeError;
    /// let mut out = BytesMut::new();
    /// HandshakeError::new(400, "bad key").write_response(&mut out);
    /// assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    /// ```
    pub fn write_response(&self, out: &mut BytesMut) {
        reject(self.status, out);
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "websocket handshake failed ({}): {}",
            self.status, self.detail
        )
    }
}

impl std::error::Error for HandshakeError {}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Server side: writes an error response (`400`, `403`, `404`, `426`, ...) that refuses
/// the upgrade and announces that the connection will close. A `426` also names the
/// supported WebSocket version.
///
/// ```
/// use bytes::BytesMut;
/// let mut out = BytesMut::new();
/// getty_codec::ws::reject(426, &mut out);
/// let text = std::str::from_utf8(&out).unwrap();
/// assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
/// assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
/// assert!(text.ends_with("\r\n\r\n426 Upgrade Required\n"));
/// ```
pub fn reject(status: u16, out: &mut BytesMut) {
    let phrase = reason_phrase(status);
    let body = format!("{status} {phrase}\n");
    let mut head = format!(
        "HTTP/1.1 {status} {phrase}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
        body.len()
    );
    if status == 426 {
        head.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body.as_bytes());
}

type Headers = Vec<(String, String)>;

fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn header_values<'a>(headers: &'a Headers, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn has_token(headers: &Headers, name: &str, token: &str) -> bool {
    header_values(headers, name)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn list(headers: &Headers, name: &str) -> Vec<String> {
    header_values(headers, name)
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

fn own_headers(raw: &[httparse::Header<'_>]) -> Headers {
    raw.iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// The one header named `name`: `Ok(None)` when there is none, `Err` when there are more.
fn only<'a>(headers: &'a Headers, name: &'a str) -> Result<Option<&'a str>, ()> {
    let mut values = header_values(headers, name);
    match (values.next(), values.next()) {
        (first, None) => Ok(first),
        _ => Err(()),
    }
}
