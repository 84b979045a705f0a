//! The HTTP/1.1 upgrade (RFC 6455 section 4), sans-IO, for both roles.

use std::fmt;
use std::fmt::Write as _;

use bytes::{Buf, BytesMut};
use tungstenite::handshake::{client::generate_key, derive_accept_key};

use super::DeflateConfig;

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

/// The path and query of a request target: the origin form (`/chat?x`) as it is, the
/// absolute form (`ws://host/chat?x`, which RFC 7230 §5.3.2 lets a client send and RFC 6455
/// §4.1 allows with http, https, ws and wss) reduced to its path and query (`/` when it has
/// none). The other forms (`*`, `host:port`) are no WebSocket resource: 400.
fn origin_form(target: &str) -> Result<String, HandshakeError> {
    if target.starts_with('/') {
        return Ok(target.to_string());
    }
    let bad = || HandshakeError::new(400, format!("bad request target {target:?}"));
    let (scheme, rest) = target.split_once("://").ok_or_else(bad)?;
    if !["http", "https", "ws", "wss"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
    {
        return Err(bad());
    }
    let rest = rest.split('#').next().unwrap_or_default();
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    Ok(match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    })
}

fn valid_key(key: &str) -> bool {
    // 16 bytes in base64: 22 significant characters and "==".
    key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// A client's upgrade request, parsed and checked by [`parse_request`].
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::ws::parse_request;
///
/// let mut buf = BytesMut::from(
///     "GET /chat?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
///      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
///      Origin: http://h\r\nSec-WebSocket-Protocol: chat, superchat\r\n\r\n",
/// );
/// let req = parse_request(&mut buf, 8192).unwrap().unwrap();
/// assert_eq!(req.path(), "/chat?x=1");
/// assert_eq!(req.origin(), Some("http://h"));
/// assert_eq!(req.protocols(), ["chat", "superchat"]);
/// assert_eq!(req.header("host"), Some("h"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    path: String,
    headers: Headers,
    key: String,
    protocols: Vec<String>,
}

/// Server side: parses the client's upgrade request from the front of `src`.
///
/// Answers `Ok(None)` until the header block is complete (read more and call again), then
/// removes the header block from `src` (whatever follows is the first frames) and returns
/// the request. Errors carry the status to answer with: 431 when the header block exceeds
/// `max_len` bytes (or 64 headers), 400 for garbage, a method other than GET, a request
/// target that is neither a path nor an absolute URI, a missing, empty or repeated `Host`,
/// or a missing, bad or repeated `Sec-WebSocket-Key`, 426 when the request is not a
/// WebSocket upgrade or asks for a version other than 13. An absolute-form target
/// (`GET ws://host/chat`) is taken for its path and query ([`Request::path`]: `/chat`).
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::ws::parse_request;
///
/// let mut buf = BytesMut::from("GET / HTTP/1.1\r\nHost: h\r\n");
/// assert!(parse_request(&mut buf, 8192).unwrap().is_none());
/// buf.extend_from_slice(b"\r\n");
/// assert_eq!(parse_request(&mut buf, 8192).unwrap_err().status(), 426);
/// let mut garbage = BytesMut::from(&b"\x16\x03\x01\x02\x00"[..]);
/// assert_eq!(parse_request(&mut garbage, 8192).unwrap_err().status(), 400);
/// ```
pub fn parse_request(
    src: &mut BytesMut,
    max_len: usize,
) -> Result<Option<Request>, HandshakeError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let len = match req.parse(src) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if src.len() > max_len => {
            return Err(HandshakeError::new(431, "request head too long"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::new(431, "too many request headers"))
        }
        Err(e) => return Err(HandshakeError::new(400, format!("bad request: {e}"))),
    };
    if len > max_len {
        return Err(HandshakeError::new(431, "request head too long"));
    }
    if req.method != Some("GET") {
        return Err(HandshakeError::new(400, "the method must be GET"));
    }
    if req.version != Some(1) {
        return Err(HandshakeError::new(400, "HTTP/1.1 is required"));
    }
    let path = origin_form(req.path.unwrap_or("/"))?;
    let headers = own_headers(req.headers);
    if !has_token(&headers, "Upgrade", "websocket") || !has_token(&headers, "Connection", "upgrade")
    {
        return Err(HandshakeError::new(426, "not a WebSocket upgrade"));
    }
    if header(&headers, "Sec-WebSocket-Version").map(str::trim) != Some("13") {
        return Err(HandshakeError::new(426, "Sec-WebSocket-Version must be 13"));
    }
    // RFC 7230 §5.4: exactly one Host, and (HTTP/1.1 with an authority) not empty.
    match only(&headers, "Host") {
        Ok(Some(host)) if !host.trim().is_empty() => {}
        Ok(Some(_)) => return Err(HandshakeError::new(400, "empty Host")),
        Ok(None) => return Err(HandshakeError::new(400, "missing Host")),
        Err(()) => return Err(HandshakeError::new(400, "more than one Host")),
    }
    // RFC 6455 §4.2.1: one key, 16 bytes in base64.
    let key = match only(&headers, "Sec-WebSocket-Key").map(|k| k.map(str::trim)) {
        Ok(Some(key)) if valid_key(key) => key.to_string(),
        Err(()) => return Err(HandshakeError::new(400, "more than one Sec-WebSocket-Key")),
        _ => return Err(HandshakeError::new(400, "missing or bad Sec-WebSocket-Key")),
    };
    let protocols = list(&headers, "Sec-WebSocket-Protocol");
    src.advance(len);
    Ok(Some(Request {
        path,
        headers,
        key,
        protocols,
    }))
}

/// What the server agreed in its `101` response.
///
/// ```
/// use getty_codec::ws::Accepted;
/// fn settings(a: &Accepted) -> (Option<&str>, bool) {
///     (a.protocol(), a.deflate().is_some())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    protocol: Option<String>,
    deflate: Option<DeflateConfig>,
}

impl Accepted {
    /// The subprotocol chosen, if any.
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use getty_codec::ws::{parse_request, ClientRequest};
    /// # let mut buf = BytesMut::new();
    /// # ClientRequest::new("h", "/").protocol("chat").write(&mut buf);
    /// # let req = parse_request(&mut buf, 8192).unwrap().unwrap();
    /// let accepted = req.accept(Some("chat"), None, &mut BytesMut::new()).unwrap();
    /// assert_eq!(accepted.protocol(), Some("chat"));
    /// ```
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The agreed permessage-deflate settings, for [`Protocol::new`](super::Protocol::new).
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use getty_codec::ws::{parse_request, ClientRequest, DeflateConfig};
    /// # let mut buf = BytesMut::new();
    /// # ClientRequest::new("h", "/").deflate(DeflateConfig::default()).write(&mut buf);
    /// # let req = parse_request(&mut buf, 8192).unwrap().unwrap();
    /// let accepted = req.accept(None, Some(&DeflateConfig::default()), &mut BytesMut::new()).unwrap();
    /// assert!(accepted.deflate().is_some());
    /// ```
    pub fn deflate(&self) -> Option<DeflateConfig> {
        self.deflate
    }
}

impl Request {
    /// The request target: path and query, as sent (an absolute-form target, such as
    /// `ws://host/chat?x`, reduced to its path and query: `/chat?x`).
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use getty_codec::ws::{parse_request, ClientRequest};
    /// let mut buf = BytesMut::new();
    /// ClientRequest::new("h", "/a?b").write(&mut buf);
    /// assert_eq!(parse_request(&mut buf, 8192).unwrap().unwrap().path(), "/a?b");
    /// ```
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The first header named `name` (case-insensitive); non-UTF-8 bytes are replaced.
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use getty_codec::ws::{parse_request, ClientRequest};
    /// let mut buf = BytesMut::new();
    /// ClientRequest::new("h", "/").header("X-Token", "t1").write(&mut buf);
    /// let req = parse_request(&mut buf, 8192).unwrap().unwrap();
    /// assert_eq!(req.header("x-token"), Some("t1"));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// All headers in order, as (name, value).
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use getty_codec::ws::{parse_request, ClientRequest};
    /// let mut buf = BytesMut::new();
    /// ClientRequest::new("h", "/").write(&mut buf);
    /// let req = parse_request(&mut buf, 8192).unwrap().unwrap();
    /// assert!(req.headers().any(|(n, v)| n == "Host" && v == "h"));
    /// ```
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The `Origin` header, for an origin check (answer [`reject`]`(403, ..)` to refuse).
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use getty_codec::ws::{parse_request, ClientRequest};
    /// let mut buf = BytesMut::new();
    /// ClientRequest::new("h", "/").header("Origin", "https://a.example").write(&mut buf);
    /// let req = parse_request(&mut buf, 8192).unwrap().unwrap();
    /// assert_eq!(req.origin(), Some("https://a.example"));
    /// ```
    pub fn origin(&self) -> Option<&str> {
        self.header("Origin")
    }

    /// The subprotocols the client offers, in its order of preference.
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use getty_codec::ws::{parse_request, ClientRequest};
    /// let mut buf = BytesMut::new();
    /// ClientRequest::new("h", "/").protocol("v2").protocol("v1").write(&mut buf);
    /// let req = parse_request(&mut buf, 8192).unwrap().unwrap();
    /// assert_eq!(req.protocols(), ["v2", "v1"]);
    /// ```
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The values of the `Sec-WebSocket-Extensions` headers (the offered extensions).
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use getty_codec::ws::{parse_request, ClientRequest, DeflateConfig};
    /// let mut buf = BytesMut::new();
    /// ClientRequest::new("h", "/").deflate(DeflateConfig::default()).write(&mut buf);
    /// let req = parse_request(&mut buf, 8192).unwrap().unwrap();
    /// assert!(req.extensions().any(|e| e.starts_with("permessage-deflate")));
    /// ```
    pub fn extensions(&self) -> impl Iterator<Item = &str> {
        header_values(&self.headers, "Sec-WebSocket-Extensions")
    }

    /// Writes the `101 Switching Protocols` response into `out`.
    ///
    /// `protocol` is the chosen subprotocol, which must be one the client offered (else a
    /// 400 error; nothing is written). With `deflate`, the first acceptable
    /// permessage-deflate offer is accepted on those terms (see [`DeflateConfig`]); without
    /// it, or when no offer is acceptable, the connection runs uncompressed.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{parse_request, ClientRequest};
    ///
    /// let mut buf = BytesMut::new();
    /// ClientRequest::new("h", "/").write(&mut buf);
    /// let req = parse_request(&mut buf, 8192).unwrap().unwrap();
    /// let mut out = BytesMut::new();
    /// let accepted = req.accept(None, None, &mut out).unwrap();
    /// assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    /// assert!(accepted.deflate().is_none());
    /// ```
    pub fn accept(
        &self,
        protocol: Option<&str>,
        deflate: Option<&DeflateConfig>,
        out: &mut BytesMut,
    ) -> Result<Accepted, HandshakeError> {
        if let Some(p) = protocol {
            if !self.protocols.iter().any(|o| o == p) {
                return Err(HandshakeError::new(
                    400,
                    format!("subprotocol {p:?} was not offered"),
                ));
            }
        }
        let negotiated = deflate.and_then(|d| d.accept_offer(self.extensions()));
        let mut head = String::with_capacity(256);
        head.push_str(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        );
        let _ = write!(
            head,
            "Sec-WebSocket-Accept: {}\r\n",
            derive_accept_key(self.key.as_bytes())
        );
        if let Some(p) = protocol {
            let _ = write!(head, "Sec-WebSocket-Protocol: {p}\r\n");
        }
        if let Some((_, ext)) = &negotiated {
            let _ = write!(head, "Sec-WebSocket-Extensions: {ext}\r\n");
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        Ok(Accepted {
            protocol: protocol.map(String::from),
            deflate: negotiated.map(|(agreed, _)| agreed),
        })
    }
}

/// Which part of a client's upgrade request is not valid (see [`InvalidRequest`]).
///
/// ```
/// use getty_codec::ws::{ClientRequest, RequestPart};
/// let err = ClientRequest::new("h", "/a b").check().unwrap_err();
/// assert_eq!(err.part(), RequestPart::Path);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestPart {
    /// The `Host` header: a host name or address and an optional port (RFC 3986 §3.2.2).
    Host,
    /// The request target: an absolute path and an optional query (RFC 3986 §3.3, §3.4).
    Path,
    /// A header name: an RFC 7230 token, and not one the request sets itself.
    HeaderName,
    /// A header value: no control characters but tab (RFC 7230 §3.2).
    HeaderValue,
    /// A subprotocol: an RFC 7230 token (RFC 6455 §4.1).
    Protocol,
}

/// A client's upgrade request that would not be valid HTTP: a control character, a space
/// or another character the RFCs forbid where it stands (a CR LF in a path or a header
/// value would inject headers of its own). Found by [`ClientRequest::check`] before
/// anything is written.
///
/// ```
/// use getty_codec::ws::{ClientRequest, RequestPart};
/// let err = ClientRequest::new("h", "/")
///     .header("X-Token", "t\r\nX-Injected: 1")
///     .check()
///     .unwrap_err();
/// assert_eq!(err.part(), RequestPart::HeaderValue);
/// assert!(err.to_string().contains("X-Token"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRequest {
    part: RequestPart,
    detail: String,
}

impl InvalidRequest {
    fn new(part: RequestPart, detail: String) -> Self {
        InvalidRequest { part, detail }
    }

    /// The part of the request that is not valid.
    ///
    /// ```
    /// use getty_codec::ws::{ClientRequest, RequestPart};
    /// let err = ClientRequest::new("h", "/").protocol("a b").check().unwrap_err();
    /// assert_eq!(err.part(), RequestPart::Protocol);
    /// ```
    pub fn part(&self) -> RequestPart {
        self.part
    }
}

impl fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid WebSocket upgrade request: {}", self.detail)
    }
}

impl std::error::Error for InvalidRequest {}

/// RFC 7230 `tchar`: what a token (a header name, a subprotocol) is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// RFC 3986 `unreserved` and `sub-delims`.
fn is_unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
}

/// The first byte of `s` outside `allowed`, where `%` must start a `%HH` escape; `None`
/// when every byte is allowed.
fn first_bad(s: &str, allowed: impl Fn(u8) -> bool) -> Option<(usize, u8)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Some((i, b));
            }
            i += 3;
            continue;
        }
        if !allowed(b) {
            return Some((i, b));
        }
        i += 1;
    }
    None
}

/// A request target in origin form: `/path[?query]`. Refused: what would break the request
/// line or change what the target means — control characters, space, DEL and `#` (a
/// fragment is never sent) — and non-ASCII, which browsers percent-encode (so must the
/// caller). Everything else printable goes out as given, as browsers and tungstenite send
/// it: `[`, `]`, `{`, `}`, `|`, `^`, quotes, backslashes and a `%` that starts no escape
/// are for the server to judge.
fn check_path(path: &str) -> Result<(), InvalidRequest> {
    let bad = |why: String| Err(InvalidRequest::new(RequestPart::Path, why));
    if !path.starts_with('/') {
        return bad(format!("the path {path:?} does not start with '/'"));
    }
    let Some((at, c)) = path
        .char_indices()
        .find(|&(_, c)| !c.is_ascii_graphic() || c == '#')
    else {
        return Ok(());
    };
    let mut utf8 = [0u8; 4];
    let escaped: String = c
        .encode_utf8(&mut utf8)
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    let what = match c {
        ' ' => "a space".to_string(),
        '#' => "'#' (a fragment is never sent)".to_string(),
        c if c.is_ascii() => format!("the control character {:#04x}", c as u32),
        c => format!("the non-ASCII character {c:?}"),
    };
    bad(format!(
        "the path {path:?} has {what} at byte {at} (percent-encode it: {escaped})"
    ))
}

/// The `Host` header: `host[:port]`, where host is a registered name, an IPv4 address or
/// a bracketed IP literal, which may carry an RFC 6874 zone (`[fe80::1%25eth0]`), and the
/// port may be empty (RFC 3986 §3.2.3: the scheme's default).
fn check_host(host: &str) -> Result<(), InvalidRequest> {
    let bad = || {
        Err(InvalidRequest::new(
            RequestPart::Host,
            format!("the host {host:?} is not a valid URI host[:port]"),
        ))
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => (name, Some(port)),
        _ => (host, None),
    };
    if port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
        return bad();
    }
    let ok = if let Some(inner) = name.strip_prefix('[') {
        inner.strip_suffix(']').is_some_and(|literal| {
            // IPv6address [ "%25" ZoneID ] (RFC 6874), or an IPvFuture.
            let (address, zone) = match literal.split_once('%') {
                Some((address, zone)) => (address, Some(zone)),
                None => (literal, None),
            };
            let is_unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
            !address.is_empty()
                && address
                    .bytes()
                    .all(|b| is_unreserved_or_sub_delim(b) || b == b':')
                && zone.is_none_or(|zone| {
                    zone.strip_prefix("25")
                        .is_some_and(|id| !id.is_empty() && first_bad(id, is_unreserved).is_none())
                })
        })
    } else {
        !name.is_empty() && first_bad(name, is_unreserved_or_sub_delim).is_none()
    };
    if ok {
        Ok(())
    } else {
        bad()
    }
}

/// Headers the request writes itself: a second copy would contradict it.
const OWN_HEADERS: [&str; 7] = [
    "Host",
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
];

fn check_header(name: &str, value: &str) -> Result<(), InvalidRequest> {
    if !is_token(name) {
        return Err(InvalidRequest::new(
            RequestPart::HeaderName,
            format!("the header name {name:?} is not an HTTP token"),
        ));
    }
    if OWN_HEADERS.iter().any(|own| own.eq_ignore_ascii_case(name)) {
        return Err(InvalidRequest::new(
            RequestPart::HeaderName,
            format!(
                "the header {name:?} is set by the upgrade request itself \
                 (subprotocols and extensions have their own settings)"
            ),
        ));
    }
    // field-value: visible characters, spaces and tabs, and obs-text (bytes >= 0x80).
    if let Some(b) = value
        .bytes()
        .find(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(InvalidRequest::new(
            RequestPart::HeaderValue,
            format!("the value of the header {name:?} has the control character {b:#04x}"),
        ));
    }
    Ok(())
}

/// Client side: the upgrade request to send, built step by step.
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::ws::ClientRequest;
///
/// let mut out = BytesMut::new();
/// let _handshake = ClientRequest::new("example.com:8080", "/ws")
///     .header("Authorization", "Bearer t")
///     .protocol("chat")
///     .write(&mut out);
/// let text = std::str::from_utf8(&out).unwrap();
/// assert!(text.starts_with("GET /ws HTTP/1.1\r\nHost: example.com:8080\r\n"));
/// assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    host: String,
    path: String,
    headers: Headers,
    protocols: Vec<String>,
    deflate: Option<DeflateConfig>,
}

impl ClientRequest {
    /// A request for `path` (with any query) on `host` (the `Host` header: name and port).
    ///
    /// ```
    /// let _ = getty_codec::ws::ClientRequest::new("localhost:9000", "/");
    /// ```
    pub fn new(host: impl Into<String>, path: impl Into<String>) -> Self {
        let path = path.into();
        ClientRequest {
            host: host.into(),
            path: if path.is_empty() { "/".into() } else { path },
            headers: Vec::new(),
            protocols: Vec::new(),
            deflate: None,
        }
    }

    /// Adds a header (such as `Origin` or `Authorization`).
    ///
    /// ```
    /// let _ = getty_codec::ws::ClientRequest::new("h", "/").header("Origin", "http://h");
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Offers a subprotocol; call again to offer more, most preferred first.
    ///
    /// ```
    /// let _ = getty_codec::ws::ClientRequest::new("h", "/").protocol("mqtt");
    /// ```
    pub fn protocol(mut self, name: impl Into<String>) -> Self {
        self.protocols.push(name.into());
        self
    }

    /// Offers permessage-deflate with these settings.
    ///
    /// ```
    /// use getty_codec::ws::{ClientRequest, DeflateConfig};
    /// let _ = ClientRequest::new("h", "/").deflate(DeflateConfig::default());
    /// ```
    pub fn deflate(mut self, config: DeflateConfig) -> Self {
        self.deflate = Some(config);
        self
    }

    /// Checks that the request is valid HTTP: the host, the path and query (printable
    /// ASCII but `#`, as browsers send them; a space, a control character or non-ASCII
    /// must be percent-encoded), the header names (tokens, none of the
    /// headers the request writes itself), the header values (no control characters but
    /// tab) and the subprotocols (tokens). A CR or LF anywhere would inject headers.
    ///
    /// ```
    /// use getty_codec::ws::{ClientRequest, RequestPart};
    /// assert!(ClientRequest::new("h:80", "/a%20b?c=d").header("X", "v w").check().is_ok());
    /// let injected = ClientRequest::new("h", "/x HTTP/1.1\r\nX-Injected: 1\r\nY:");
    /// assert_eq!(injected.check().unwrap_err().part(), RequestPart::Path);
    /// assert_eq!(ClientRequest::new("h\r\n", "/").check().unwrap_err().part(), RequestPart::Host);
    /// ```
    pub fn check(&self) -> Result<(), InvalidRequest> {
        check_host(&self.host)?;
        check_path(&self.path)?;
        for (name, value) in &self.headers {
            check_header(name, value)?;
        }
        if let Some(p) = self.protocols.iter().find(|p| !is_token(p)) {
            return Err(InvalidRequest::new(
                RequestPart::Protocol,
                format!("the subprotocol {p:?} is not an HTTP token"),
            ));
        }
        Ok(())
    }

    /// [`check`](Self::check)s the request, then [`write`](Self::write)s it.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::ClientRequest;
    /// let mut out = BytesMut::new();
    /// assert!(ClientRequest::new("h", "/").try_write(&mut out).is_ok());
    /// assert!(ClientRequest::new("h", "/ x").try_write(&mut out).is_err());
    /// ```
    pub fn try_write(self, out: &mut BytesMut) -> Result<ClientHandshake, InvalidRequest> {
        self.check()?;
        Ok(self.write_checked(out))
    }

    /// Writes the request into `out` with a fresh random key, and returns what is needed to
    /// check the response.
    ///
    /// # Panics
    ///
    /// If the request is not valid (see [`check`](Self::check)): a request built from
    /// input that may be bad goes out through [`try_write`](Self::try_write).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// let mut out = BytesMut::new();
    /// getty_codec::ws::ClientRequest::new("h", "/").write(&mut out);
    /// assert!(out.ends_with(b"\r\n\r\n"));
    /// ```
    pub fn write(self, out: &mut BytesMut) -> ClientHandshake {
        if let Err(e) = self.check() {
            panic!("{e}");
        }
        self.write_checked(out)
    }

    fn write_checked(self, out: &mut BytesMut) -> ClientHandshake {
        let key = generate_key();
        let mut head = String::with_capacity(256);
        let _ = write!(
            head,
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            self.path, self.host
        );
        if !self.protocols.is_empty() {
            let _ = write!(
                head,
                "Sec-WebSocket-Protocol: {}\r\n",
                self.protocols.join(", ")
            );
        }
        if let Some(d) = &self.deflate {
            let _ = write!(head, "Sec-WebSocket-Extensions: {}\r\n", d.offer());
        }
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        ClientHandshake {
            accept: derive_accept_key(key.as_bytes()),
            protocols: self.protocols,
            deflate: self.deflate,
        }
    }
}

/// Client side: a request that was sent, waiting for the server's response.
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::ws::{parse_request, ClientRequest};
///
/// let mut wire = BytesMut::new();
/// let hs = ClientRequest::new("h", "/").write(&mut wire);
/// let req = parse_request(&mut wire, 8192).unwrap().unwrap();
/// let mut back = BytesMut::new();
/// req.accept(None, None, &mut back).unwrap();
/// back.extend_from_slice(b"\x81\x02hi"); // a first frame right behind the response
/// let resp = hs.parse_response(&mut back, 8192).unwrap().unwrap();
/// assert_eq!(resp.protocol(), None);
/// assert_eq!(&back[..], b"\x81\x02hi");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandshake {
    accept: String,
    protocols: Vec<String>,
    deflate: Option<DeflateConfig>,
}

/// The server's verified `101` response.
///
/// ```
/// use getty_codec::ws::Response;
/// fn negotiated(r: &Response) -> bool { r.deflate().is_some() }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    headers: Headers,
    protocol: Option<String>,
    deflate: Option<DeflateConfig>,
}

impl Response {
    /// The subprotocol the server chose, one of those offered.
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use getty_codec::ws::{parse_request, ClientRequest};
    /// let mut wire = BytesMut::new();
    /// let hs = ClientRequest::new("h", "/").protocol("a").protocol("b").write(&mut wire);
    /// let req = parse_request(&mut wire, 8192).unwrap().unwrap();
    /// let mut back = BytesMut::new();
    /// req.accept(Some("b"), None, &mut back).unwrap();
    /// assert_eq!(hs.parse_response(&mut back, 8192).unwrap().unwrap().protocol(), Some("b"));
    /// ```
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The agreed permessage-deflate settings, for [`Protocol::new`](super::Protocol::new).
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use getty_codec::ws::{parse_request, ClientRequest, DeflateConfig};
    /// let mut wire = BytesMut::new();
    /// let hs = ClientRequest::new("h", "/").deflate(DeflateConfig::default()).write(&mut wire);
    /// let req = parse_request(&mut wire, 8192).unwrap().unwrap();
    /// let mut back = BytesMut::new();
    /// req.accept(None, Some(&DeflateConfig::default()), &mut back).unwrap();
    /// let resp = hs.parse_response(&mut back, 8192).unwrap().unwrap();
    /// assert_eq!(resp.deflate().unwrap().server_max_window_bits, 15);
    /// ```
    pub fn deflate(&self) -> Option<DeflateConfig> {
        self.deflate
    }

    /// The first response header named `name` (case-insensitive).
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use getty_codec::ws::{parse_request, ClientRequest};
    /// let mut wire = BytesMut::new();
    /// let hs = ClientRequest::new("h", "/").write(&mut wire);
    /// let req = parse_request(&mut wire, 8192).unwrap().unwrap();
    /// let mut back = BytesMut::new();
    /// req.accept(None, None, &mut back).unwrap();
    /// let resp = hs.parse_response(&mut back, 8192).unwrap().unwrap();
    /// assert_eq!(resp.header("upgrade"), Some("websocket"));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

impl ClientHandshake {
    /// Parses and verifies the server's response from the front of `src`: `Ok(None)` until
    /// the header block is complete; then the header block is removed from `src` (what
    /// follows is the first frames). Fails unless the status is 101, the upgrade headers and
    /// `Sec-WebSocket-Accept` are right, the subprotocol (if any) was offered and the
    /// extension parameters are acceptable; also when the head exceeds `max_len` bytes.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::ClientRequest;
    ///
    /// let hs = ClientRequest::new("h", "/").write(&mut BytesMut::new());
    /// let mut back = BytesMut::from("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    /// assert_eq!(hs.parse_response(&mut back, 8192).unwrap_err().status(), 404);
    /// ```
    pub fn parse_response(
        &self,
        src: &mut BytesMut,
        max_len: usize,
    ) -> Result<Option<Response>, HandshakeError> {
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut raw);
        let len = match resp.parse(src) {
            Ok(httparse::Status::Complete(len)) if len <= max_len => len,
            Ok(httparse::Status::Partial) if src.len() <= max_len => return Ok(None),
            Ok(_) => return Err(HandshakeError::new(0, "response head too long")),
            Err(e) => return Err(HandshakeError::new(0, format!("bad response: {e}"))),
        };
        let status = resp.code.unwrap_or(0);
        let fail = |detail: String| Err(HandshakeError::new(status, detail));
        if status != 101 {
            return fail(format!("the server answered {status}, not 101"));
        }
        // RFC 6455 §4.1: the upgrade is HTTP/1.1; an HTTP/1.0 server cannot switch.
        if resp.version != Some(1) {
            return fail("the 101 is not HTTP/1.1".into());
        }
        let headers = own_headers(resp.headers);
        if !has_token(&headers, "Upgrade", "websocket")
            || !has_token(&headers, "Connection", "upgrade")
        {
            return fail("the response lacks the upgrade headers".into());
        }
        if header(&headers, "Sec-WebSocket-Accept").map(str::trim) != Some(self.accept.as_str()) {
            return fail("wrong Sec-WebSocket-Accept".into());
        }
        let protocol = match header(&headers, "Sec-WebSocket-Protocol").map(str::trim) {
            None => None,
            Some(p) if self.protocols.iter().any(|o| o == p) => Some(p.to_string()),
            Some(p) => return fail(format!("subprotocol {p:?} was not offered")),
        };
        let extensions: Vec<&str> = header_values(&headers, "Sec-WebSocket-Extensions").collect();
        let deflate = match (&self.deflate, &extensions[..]) {
            (_, []) => None,
            (Some(offer), [value]) => match offer.accept_response(value) {
                Ok(agreed) => Some(agreed),
                Err(e) => return fail(e),
            },
            _ => return fail(format!("unexpected extensions {extensions:?}")),
        };
        src.advance(len);
        Ok(Some(Response {
            headers,
            protocol,
            deflate,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &str) -> BytesMut {
        BytesMut::from(
            format!(
                "GET /p HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            )
            .as_bytes(),
        )
    }

    #[test]
    fn rfc_sample_accept_key() {
        let req = parse_request(&mut request(""), 8192).unwrap().unwrap();
        let mut out = BytesMut::new();
        req.accept(None, None, &mut out).unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn request_split_anywhere_parses_alike_and_keeps_leftovers() {
        let mut whole = request("");
        whole.extend_from_slice(b"\x81\x80");
        let total = whole.len();
        for cut in 0..total {
            let mut buf = BytesMut::from(&whole[..cut]);
            let first = parse_request(&mut buf, 8192).unwrap();
            if cut < total - 2 {
                assert!(first.is_none(), "cut {cut}");
                buf.extend_from_slice(&whole[cut..]);
                let req = parse_request(&mut buf, 8192).unwrap().unwrap();
                assert_eq!(req.path(), "/p");
            } else {
                assert!(first.is_some());
                buf.extend_from_slice(&whole[cut..]);
            }
            assert_eq!(&buf[..], b"\x81\x80", "cut {cut}");
        }
    }

    #[test]
    fn refusals_carry_their_status() {
        let cases: [(&[u8], u16); 8] = [
            (b"POST / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET / HTTP/1.0\r\nHost: h\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 426),
            (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n", 426),
            (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n", 400),
            (b"\x00\x01\x02 garbage\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        ];
        for (bytes, status) in cases {
            let err = parse_request(&mut BytesMut::from(bytes), 8192).unwrap_err();
            assert_eq!(err.status(), status, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn repeated_keys_and_empty_or_repeated_hosts_are_refused() {
        let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
        for (headers, what) in [
            (format!("Host: h\r\n{upgrade}{key}{key}"), "two keys"),
            (format!("Host: \r\n{upgrade}{key}"), "an empty Host"),
            (format!("Host: h\r\nHost: i\r\n{upgrade}{key}"), "two Hosts"),
        ] {
            let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\n{headers}\r\n").as_bytes());
            assert_eq!(
                parse_request(&mut buf, 8192).unwrap_err().status(),
                400,
                "{what}"
            );
        }
    }

    #[test]
    fn absolute_form_targets_are_taken_for_their_path() {
        let upgrade = "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        for (target, path) in [
            ("/chat?x", Some("/chat?x")),
            ("ws://h/chat", Some("/chat")),
            ("WSS://h:443/chat?x=1#f", Some("/chat?x=1")),
            ("http://h", Some("/")),
            ("https://h?q", Some("/?q")),
            ("*", None),
            ("h:80", None),
            ("chat", None),
            ("ftp://h/chat", None),
            ("ws:///chat", None),
        ] {
            let mut buf =
                BytesMut::from(format!("GET {target} HTTP/1.1\r\n{upgrade}\r\n").as_bytes());
            match (parse_request(&mut buf, 8192), path) {
                (Ok(Some(req)), Some(path)) => assert_eq!(req.path(), path, "{target}"),
                (Err(e), None) => assert_eq!(e.status(), 400, "{target}"),
                (other, _) => panic!("{target}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_101_over_http_1_0_is_refused() {
        let mut wire = BytesMut::new();
        let hs = ClientRequest::new("h", "/").write(&mut wire);
        let req = parse_request(&mut wire, 8192).unwrap().unwrap();
        let mut back = BytesMut::new();
        req.accept(None, None, &mut back).unwrap();
        let old = String::from_utf8(back.to_vec())
            .unwrap()
            .replace("HTTP/1.1 101", "HTTP/1.0 101");
        let err = hs
            .parse_response(&mut BytesMut::from(old.as_bytes()), 8192)
            .unwrap_err();
        assert_eq!(err.status(), 101);
    }

    #[test]
    fn malformed_extension_parameters_are_declined_or_refused() {
        let ours = DeflateConfig::default();
        for bad in [
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; client_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=\"10",
            "permessage-deflate; client_max_window_bits=10\"",
            "permessage-deflate; client_max_window_bits=\"1\"0\"",
            "permessage-deflate; client_max_window_bits=\"\"",
            "permessage-deflate; server_max_window_bits=1 0",
            "permessage-deflate; bad name=10",
        ] {
            assert!(ours.accept_offer([bad]).is_none(), "offer {bad}");
            assert!(ours.accept_response(bad).is_err(), "response {bad}");
        }
        let (agreed, _) = ours
            .accept_offer(["permessage-deflate; client_max_window_bits=\"1\\0\""])
            .unwrap();
        assert_eq!(agreed.client_max_window_bits, 10);
        assert_eq!(
            ours.accept_response("permessage-deflate; server_max_window_bits=\"9\"")
                .unwrap()
                .server_max_window_bits,
            9
        );
    }

    #[test]
    fn requests_that_would_inject_headers_are_refused() {
        let ok = ClientRequest::new("[::1]:9000", "/a/b%2F?q=1&r=%7E")
            .header("Authorization", "Bearer a.b c\tfoo")
            .header("X-Utf8", "héllo")
            .protocol("chat.v2");
        assert_eq!(ok.check(), Ok(()));
        let cases = [
            (
                ClientRequest::new("h", "/x HTTP/1.1\r\nX: 1\r\nY:"),
                RequestPart::Path,
            ),
            (ClientRequest::new("h", "x"), RequestPart::Path),
            (ClientRequest::new("h", "/\u{7f}"), RequestPart::Path),
            (ClientRequest::new("h", "/é"), RequestPart::Path),
            (ClientRequest::new("h", "/a#b"), RequestPart::Path),
            (ClientRequest::new("h", "/?a=\tb"), RequestPart::Path),
            (ClientRequest::new("[fe80::1%eth0]", "/"), RequestPart::Host),
            (ClientRequest::new("[fe80::1%25]", "/"), RequestPart::Host),
            (ClientRequest::new("[%25eth0]", "/"), RequestPart::Host),
            (ClientRequest::new("h h", "/"), RequestPart::Host),
            (ClientRequest::new("h:8x", "/"), RequestPart::Host),
            (ClientRequest::new("[::1", "/"), RequestPart::Host),
            (ClientRequest::new("", "/"), RequestPart::Host),
            (
                ClientRequest::new("h", "/").header("", "v"),
                RequestPart::HeaderName,
            ),
            (
                ClientRequest::new("h", "/").header("X:Y", "v"),
                RequestPart::HeaderName,
            ),
            (
                ClientRequest::new("h", "/").header("host", "v"),
                RequestPart::HeaderName,
            ),
            (
                ClientRequest::new("h", "/").header("X", "a\nb"),
                RequestPart::HeaderValue,
            ),
            (
                ClientRequest::new("h", "/").header("X", "a\rb"),
                RequestPart::HeaderValue,
            ),
            (
                ClientRequest::new("h", "/").protocol(""),
                RequestPart::Protocol,
            ),
            (
                ClientRequest::new("h", "/").protocol("a,b"),
                RequestPart::Protocol,
            ),
        ];
        for (request, part) in cases {
            let err = request.clone().check().unwrap_err();
            assert_eq!(err.part(), part, "{request:?}");
            let mut out = BytesMut::new();
            assert!(request.try_write(&mut out).is_err());
            assert!(out.is_empty());
        }
    }

    /// What browsers and tungstenite send raw is sent raw; what is refused is named as the
    /// character it is, with its escape.
    #[test]
    fn paths_take_what_browsers_send_and_hosts_take_zones_and_empty_ports() {
        for path in [
            "/chat?a[]=1",
            "/q?filter={\"a\":1}",
            "/x?sym=A|B",
            "/p?x=^",
            "/caf%C3%A9",
            "/%zz",
            "/a\\b?<x>`y`",
        ] {
            assert_eq!(ClientRequest::new("h", path).check(), Ok(()), "{path}");
        }
        for host in ["h:", "[::1]:", "[fe80::1%25eth0]:80", "[fe80::1%25en%2D1]"] {
            assert_eq!(ClientRequest::new(host, "/").check(), Ok(()), "{host}");
        }
        let why = |path: &str| {
            ClientRequest::new("h", path)
                .check()
                .unwrap_err()
                .to_string()
        };
        let cafe = why("/café");
        assert!(
            cafe.contains("the non-ASCII character 'é' at byte 4 (percent-encode it: %C3%A9)"),
            "{cafe}"
        );
        assert!(why("/a b").contains("a space at byte 2 (percent-encode it: %20)"));
        assert!(why("/a\nb").contains("the control character 0x0a at byte 2"));
        assert!(why("/a#b").contains("'#'"));
    }

    #[test]
    fn oversized_heads_are_refused_before_completion() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nX-Long: "[..]);
        buf.extend_from_slice(&[b'a'; 9000]);
        assert_eq!(parse_request(&mut buf, 8192).unwrap_err().status(), 431);
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..100 {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        let err = parse_request(&mut BytesMut::from(many.as_bytes()), 1 << 20).unwrap_err();
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn error_responses_are_complete_http() {
        for status in [400, 403, 404, 426, 431] {
            let mut out = BytesMut::new();
            reject(status, &mut out);
            let mut raw = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut raw);
            let httparse::Status::Complete(len) = resp.parse(&out).unwrap() else {
                panic!("incomplete response");
            };
            assert_eq!(resp.code, Some(status));
            let body_len: usize = resp
                .headers
                .iter()
                .find(|h| h.name == "Content-Length")
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap();
            assert_eq!(out.len() - len, body_len);
        }
    }

    #[test]
    fn unoffered_subprotocol_is_refused_on_both_sides() {
        let req = parse_request(&mut request("Sec-WebSocket-Protocol: a\r\n"), 8192)
            .unwrap()
            .unwrap();
        let mut out = BytesMut::new();
        assert_eq!(
            req.accept(Some("b"), None, &mut out).unwrap_err().status(),
            400
        );
        assert!(out.is_empty());

        let mut wire = BytesMut::new();
        let hs = ClientRequest::new("h", "/").protocol("a").write(&mut wire);
        let req = parse_request(&mut wire, 8192).unwrap().unwrap();
        let mut back = BytesMut::new();
        req.accept(Some("a"), None, &mut back).unwrap();
        let forged = String::from_utf8(back.to_vec())
            .unwrap()
            .replace("Protocol: a", "Protocol: z");
        let err = hs
            .parse_response(&mut BytesMut::from(forged.as_bytes()), 8192)
            .unwrap_err();
        assert_eq!(err.status(), 101);
    }

    #[test]
    fn client_rejects_a_wrong_accept_key_and_unoffered_extensions() {
        let mut wire = BytesMut::new();
        let hs = ClientRequest::new("h", "/").write(&mut wire);
        let mut bad = BytesMut::from(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        );
        assert!(hs.parse_response(&mut bad, 8192).is_err());

        let req = parse_request(&mut wire, 8192).unwrap().unwrap();
        let mut back = BytesMut::new();
        req.accept(None, None, &mut back).unwrap();
        let with_ext = String::from_utf8(back.to_vec()).unwrap().replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        );
        assert!(hs
            .parse_response(&mut BytesMut::from(with_ext.as_bytes()), 8192)
            .is_err());
    }

    #[test]
    fn deflate_negotiation_end_to_end() {
        let offer = DeflateConfig {
            client_no_context_takeover: true,
            server_max_window_bits: 12,
            ..DeflateConfig::default()
        };
        let mut wire = BytesMut::new();
        let hs = ClientRequest::new("h", "/").deflate(offer).write(&mut wire);
        let req = parse_request(&mut wire, 8192).unwrap().unwrap();
        let server_side = DeflateConfig {
            server_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let mut back = BytesMut::new();
        let accepted = req.accept(None, Some(&server_side), &mut back).unwrap();
        let resp = hs.parse_response(&mut back, 8192).unwrap().unwrap();
        let (s, c) = (accepted.deflate().unwrap(), resp.deflate().unwrap());
        for d in [s, c] {
            assert!(d.server_no_context_takeover && d.client_no_context_takeover);
            assert_eq!(d.server_max_window_bits, 12);
        }
    }

    #[test]
    fn garbage_never_panics() {
        for seed in 0..2000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let len = rng.usize(0..200);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if seed % 2 == 0 {
                bytes.splice(0..0, b"GET / HTTP/1.1\r\n".iter().copied());
                bytes.extend_from_slice(b"\r\n\r\n");
            }
            let _ = parse_request(&mut BytesMut::from(&bytes[..]), 8192);
            let hs = ClientRequest::new("h", "/").write(&mut BytesMut::new());
            let _ = hs.parse_response(&mut BytesMut::from(&bytes[..]), 8192);
        }
    }
}
