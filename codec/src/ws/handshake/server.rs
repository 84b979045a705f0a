//! Server side of the upgrade: parsing the request and writing the `101`.

use std::fmt::Write as _;

use bytes::{Buf, BytesMut};
use tungstenite::handshake::derive_accept_key;

use super::{
    has_token, header, header_values, list, only, own_headers, HandshakeError, Headers, MAX_HEADERS,
};
use crate::ws::DeflateConfig;

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
/// use bytes::BytesMut;
/// use getty_codec::ws::{parse_request, ClientRequest, Config, Protocol, Role};
///
/// let mut wire = BytesMut::new();
/// ClientRequest::new("h", "/").protocol("chat").write(&mut wire);
/// let request = parse_request(&mut wire, 8192).unwrap().unwrap();
/// let mut out = BytesMut::new();
/// let accepted = request.accept(Some("chat"), None, &mut out).unwrap();
/// assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
/// assert_eq!(accepted.protocol(), Some("chat"));
/// // The agreed settings make the frame machine.
/// let machine = Protocol::new(Role::Server, Config::default(), accepted.deflate());
/// assert!(machine.deflate().is_none());
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

    /// The agreed permessage-deflate settings, for [`Protocol::new`](crate::ws::Protocol::new).
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use getty_codec::ws::{parse_request, ClientRequest, DeflateConfig};
    /// # let mut buf = BytesMut::new();
    /// # ClientRequest::new("h", "/").deflate(DeflateConfig::default()).write(&mut buf);
    /// # let req = parse_request(&mut buf, 8192).unwrap().unwrap();
    /// let accepted = req.accept(None, Some(&DeflateConfig::default()), &mut BytesMut::new()).unwrap();
    /// // Agreed when the `deflate` feature is on; declined without it.
    /// assert_eq!(accepted.deflate().is_some(), cfg!(feature = "deflate"));
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

    /// The `Origin` header, for an origin check (answer [`reject`](crate::ws::reject)`(403, ..)` to refuse).
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
    /// # use getty_codec::ws::parse_request;
    /// let mut buf = BytesMut::from(
    ///     "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    ///      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
    ///      Sec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Extensions: x-custom\r\n\r\n",
    /// );
    /// let req = parse_request(&mut buf, 8192).unwrap().unwrap();
    /// assert_eq!(req.extensions().collect::<Vec<_>>(), ["permessage-deflate", "x-custom"]);
    /// ```
    pub fn extensions(&self) -> impl Iterator<Item = &str> {
        header_values(&self.headers, "Sec-WebSocket-Extensions")
    }

    /// Writes the `101 Switching Protocols` response into `out`.
    ///
    /// `protocol` is the chosen subprotocol, which must be one the client offered (else a
    /// 400 error; nothing is written). With `deflate`, the first acceptable
    /// permessage-deflate offer is accepted on those terms (see [`DeflateConfig`]); without
    /// it, or when no offer is acceptable, the connection runs uncompressed. Without the
    /// `deflate` feature no offer is ever accepted: RFC 7692 lets a server decline.
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
        let negotiated = deflate
            .filter(|_| cfg!(feature = "deflate"))
            .and_then(|d| d.accept_offer(self.extensions()));
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
