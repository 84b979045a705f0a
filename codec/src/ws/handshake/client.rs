//! Client side of the upgrade: the request to send and the response to check.

use std::fmt::Write as _;

use bytes::{Buf, BytesMut};
use tungstenite::handshake::{client::generate_key, derive_accept_key};

use super::validate::{check_header, check_host, check_path, is_token};
use super::{
    has_token, header, header_values, own_headers, HandshakeError, Headers, InvalidRequest,
    RequestPart, MAX_HEADERS,
};
use crate::ws::DeflateConfig;

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
    /// use bytes::BytesMut;
    /// use getty_codec::ws::ClientRequest;
    ///
    /// let mut out = BytesMut::new();
    /// ClientRequest::new("localhost:9000", "/feed?since=7").write(&mut out);
    /// let text = std::str::from_utf8(&out).unwrap();
    /// assert!(text.starts_with("GET /feed?since=7 HTTP/1.1\r\nHost: localhost:9000\r\n"));
    /// assert!(text.contains("Upgrade: websocket\r\n") && text.ends_with("\r\n\r\n"));
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
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{parse_request, ClientRequest};
    ///
    /// let mut wire = BytesMut::new();
    /// ClientRequest::new("h", "/").header("Origin", "http://h").write(&mut wire);
    /// let request = parse_request(&mut wire, 8192).unwrap().unwrap();
    /// assert_eq!(request.origin(), Some("http://h"));
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Offers a subprotocol; call again to offer more, most preferred first.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{parse_request, ClientRequest};
    ///
    /// let mut wire = BytesMut::new();
    /// let handshake = ClientRequest::new("h", "/").protocol("mqtt").protocol("chat").write(&mut wire);
    /// let request = parse_request(&mut wire, 8192).unwrap().unwrap();
    /// assert_eq!(request.protocols(), ["mqtt", "chat"]);
    /// let mut back = BytesMut::new();
    /// request.accept(Some("chat"), None, &mut back).unwrap(); // the server picks one
    /// let response = handshake.parse_response(&mut back, 8192).unwrap().unwrap();
    /// assert_eq!(response.protocol(), Some("chat"));
    /// ```
    pub fn protocol(mut self, name: impl Into<String>) -> Self {
        self.protocols.push(name.into());
        self
    }

    /// Offers permessage-deflate with these settings.
    ///
    /// Without the `deflate` feature nothing is offered (there is no engine to run the
    /// extension), so the connection runs uncompressed, as if this were not called.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{ClientRequest, DeflateConfig};
    ///
    /// let mut out = BytesMut::new();
    /// ClientRequest::new("h", "/").deflate(DeflateConfig::default()).write(&mut out);
    /// let offered = std::str::from_utf8(&out).unwrap().contains("permessage-deflate");
    /// assert_eq!(offered, cfg!(feature = "deflate"));
    /// ```
    pub fn deflate(mut self, config: DeflateConfig) -> Self {
        if cfg!(feature = "deflate") {
            self.deflate = Some(config);
        }
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
/// use bytes::BytesMut;
/// use getty_codec::ws::{parse_request, ClientRequest};
///
/// let mut wire = BytesMut::new();
/// let handshake = ClientRequest::new("h", "/").protocol("chat").write(&mut wire);
/// let mut back = BytesMut::new();
/// let request = parse_request(&mut wire, 8192).unwrap().unwrap();
/// request.accept(Some("chat"), None, &mut back).unwrap();
/// back.extend_from_slice(b"\x81\x02hi"); // the server's first frame, in the same read
/// let response = handshake.parse_response(&mut back, 8192).unwrap().unwrap();
/// assert_eq!(response.protocol(), Some("chat"));
/// assert!(response.deflate().is_none());
/// assert_eq!(&back[..], b"\x81\x02hi"); // left for the frame decoder
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

    /// The agreed permessage-deflate settings, for [`Protocol::new`](crate::ws::Protocol::new).
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
    /// // Without the `deflate` feature nothing was offered, so nothing was agreed.
    /// let bits = resp.deflate().map(|agreed| agreed.server_max_window_bits);
    /// assert_eq!(bits, cfg!(feature = "deflate").then_some(15));
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
