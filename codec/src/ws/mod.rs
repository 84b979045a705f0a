//! WebSocket (RFC 6455) with permessage-deflate (RFC 7692), sans-IO.
//!
//! Nothing here touches a socket: the transport feeds bytes in and sends the bytes the
//! machine writes out. The accept key and the parser of the general frame header come from
//! `tungstenite`; a whole message in one frame (the common case) is parsed where it lies,
//! and every outgoing header written, by hand ([`Protocol::decode_in_place`]). The message
//! machine is ours, because tungstenite's `WebSocket` refuses RSV1 (so no
//! permessage-deflate) and buffers writes without bound.
//!
//! How a transport drives it:
//!
//! 1. **Handshake.** A server feeds the bytes it reads to [`parse_request`] until it answers
//!    `Some(request)`, routes on [`Request::path`], checks [`Request::origin`], and writes
//!    either [`Request::accept`]'s `101` or [`reject`]'s error response. A client writes
//!    [`ClientRequest::write`]'s request and feeds what it reads to
//!    [`ClientHandshake::parse_response`]. Bytes after the header block stay in the buffer:
//!    they are the first frames.
//! 2. **Frames.** Build a [`Protocol`] with the negotiated [`DeflateConfig`] and call
//!    [`Protocol::decode`] after every read until it answers `Ok(None)`. Control replies
//!    (pong, the close echo) are written to the `control_out` buffer; send them.
//! 3. **Writing.** Let the app's codec append a payload to the outbound buffer, then call
//!    [`Protocol::encode_message`] on the part it appended: it becomes a frame in place.
//!    A frame cut out again (the queue was full) is taken back with
//!    [`Protocol::retract_last_message`].
//! 4. **Closing.** [`Protocol::close`] writes a close frame; an error from `decode` says which
//!    close code to send ([`WsError::close_code`], written by [`Protocol::fail`]). Once
//!    [`Protocol::is_closed`] is true the connection may be dropped (the server first).
//!
//! ```
//! use bytes::BytesMut;
//! use getty_codec::ws::{
//!     parse_request, ClientHandshake, ClientRequest, Config, Event, Protocol, Role,
//! };
//! use getty_codec::MessageKind;
//!
//! // The client's request, the server's answer.
//! let mut to_server = BytesMut::new();
//! let client_hs: ClientHandshake = ClientRequest::new("example.com", "/chat").write(&mut to_server);
//! let request = parse_request(&mut to_server, 8192).unwrap().unwrap();
//! assert_eq!(request.path(), "/chat");
//! let mut to_client = BytesMut::new();
//! let accepted = request.accept(None, None, &mut to_client).unwrap();
//! let response = client_hs.parse_response(&mut to_client, 8192).unwrap().unwrap();
//! assert_eq!(response.deflate(), accepted.deflate());
//!
//! // A text message from the client to the server.
//! let mut client = Protocol::new(Role::Client, Config::default(), None);
//! let mut server = Protocol::new(Role::Server, Config::default(), None);
//! to_server.extend_from_slice(b"hello");
//! client.encode_message(MessageKind::Text, &mut to_server, 0).unwrap();
//! let mut control = BytesMut::new();
//! match server.decode(&mut to_server, &mut control).unwrap() {
//!     Some(Event::Message { kind, payload }) => {
//!         assert_eq!(kind, MessageKind::Text);
//!         assert_eq!(&payload[..], b"hello");
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```

use std::fmt;

use bytes::Bytes;

mod deflate;
mod handshake;
mod mask;
mod protocol;
#[cfg(test)]
mod tests;
mod utf8;

pub use deflate::DeflateConfig;
pub use handshake::{
    parse_request, reject, Accepted, ClientHandshake, ClientRequest, HandshakeError,
    InvalidRequest, Request, RequestPart, Response,
};
pub use mask::apply_mask;
pub use protocol::{HeaderRoom, InPlace, Protocol};

/// Close codes of RFC 6455 section 7.4.1 that the machine sends.
///
/// ```
/// assert_eq!(getty_codec::ws::close_code::PROTOCOL_ERROR, 1002);
/// ```
pub mod close_code {
    /// 1000: normal closure.
    pub const NORMAL: u16 = 1000;
    /// 1001: going away (server shutting down, page left).
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// 1003: a kind of data the endpoint cannot accept.
    pub const UNSUPPORTED: u16 = 1003;
    /// 1007: data inconsistent with the message type (bad UTF-8 in a text message).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// 1008: policy violation.
    pub const POLICY: u16 = 1008;
    /// 1009: message too big to process.
    pub const TOO_BIG: u16 = 1009;
    /// 1011: unexpected condition on the server.
    pub const INTERNAL_ERROR: u16 = 1011;

    /// Whether `code` may appear in a close frame on the wire (RFC 6455 section 7.4 and the
    /// IANA registry): 1000–1003, 1007–1014 and 3000–4999.
    ///
    /// ```
    /// use getty_codec::ws::close_code::is_valid;
    /// assert!(is_valid(1000) && is_valid(4999));
    /// assert!(!is_valid(1005) && !is_valid(1006) && !is_valid(999) && !is_valid(2000));
    /// ```
    pub fn is_valid(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// Which end of the connection the machine plays: a server requires masked frames from its
/// peer and sends unmasked ones; a client the reverse.
///
/// ```
/// use getty_codec::ws::Role;
/// assert_ne!(Role::Server, Role::Client);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that accepted the connection.
    Server,
    /// The end that dialed.
    Client,
}

/// Limits of a [`Protocol`].
///
/// ```
/// use getty_codec::ws::Config;
/// let config = Config { max_message_size: 1 << 20, ..Config::default() };
/// assert_eq!(config.max_frame_size, Config::default().max_frame_size);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The largest message accepted, after reassembly and decompression (default 16 MiB).
    /// A larger one fails the connection with close code 1009.
    pub max_message_size: usize,
    /// The largest frame payload accepted as it is on the wire (default 16 MiB). A frame
    /// that declares more fails the connection with close code 1009 before its payload is
    /// buffered.
    pub max_frame_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_size: 16 << 20,
            max_frame_size: 16 << 20,
        }
    }
}

/// The payload of a close frame: a status code and a UTF-8 reason (at most 123 bytes).
///
/// ```
/// use getty_codec::ws::CloseFrame;
/// let f = CloseFrame { code: 1000, reason: "bye".into() };
/// assert_eq!(f.to_string(), "1000 (bye)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CloseFrame {
    /// The status code.
    pub code: u16,
    /// Why, for humans; may be empty.
    pub reason: String,
}

impl fmt::Display for CloseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code, self.reason)
    }
}

/// What [`Protocol::decode`] found.
///
/// ```
/// use getty_codec::ws::Event;
/// let e = Event::Ping(bytes::Bytes::from_static(b"x"));
/// assert!(matches!(e, Event::Ping(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole data message, reassembled and decompressed. A text payload is valid UTF-8.
    Message {
        /// Text or binary.
        kind: crate::MessageKind,
        /// The message's bytes.
        payload: bytes::BytesMut,
    },
    /// A ping arrived; its pong is in `control_out` (unless a close was sent), or, while
    /// pongs coalesce (`Protocol::coalesce_pongs`), will be once the input is used up or a
    /// message follows.
    Ping(Bytes),
    /// A pong arrived.
    Pong(Bytes),
    /// The peer's close frame arrived (`None` when it had no payload). Unless the machine had
    /// sent a close already, the reply is in `control_out`. Nothing more will be decoded.
    Close(Option<CloseFrame>),
}

/// Why the WebSocket connection must fail, and which close code to tell the peer.
///
/// ```
/// use getty_codec::ws::WsError;
/// let e = WsError::new(1002, "reserved bits set");
/// assert_eq!(e.close_code(), 1002);
/// assert!(e.to_string().contains("reserved bits"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsError {
    code: u16,
    detail: String,
    /// For a message over the limit: how long it was (at least), and the limit.
    limit_exceeded: Option<(usize, usize)>,
}

impl WsError {
    /// An error to report with close `code`.
    ///
    /// ```
    /// assert_eq!(getty_codec::ws::WsError::new(1009, "big").close_code(), 1009);
    /// ```
    pub fn new(code: u16, detail: impl Into<String>) -> Self {
        WsError {
            code,
            detail: detail.into(),
            limit_exceeded: None,
        }
    }

    /// A message of `len` bytes (at least: it is refused as soon as it is known to be too
    /// long) over the limit of `max`: close code 1009.
    ///
    /// ```
    /// use getty_codec::ws::WsError;
    /// let e = WsError::too_long(70_000, 65_536);
    /// assert_eq!((e.close_code(), e.limit_exceeded()), (1009, Some((70_000, 65_536))));
    /// ```
    pub fn too_long(len: usize, max: usize) -> Self {
        WsError {
            code: close_code::TOO_BIG,
            detail: format!("a message of {len} bytes exceeds the maximum of {max}"),
            limit_exceeded: Some((len, max)),
        }
    }

    /// For a message over the size limit, its length (at least) and the limit: the
    /// session reports it as `MessageTooLong`, the same error as every other transport.
    ///
    /// See [`too_long`](Self::too_long) for an example.
    pub fn limit_exceeded(&self) -> Option<(usize, usize)> {
        self.limit_exceeded
    }

    pub(crate) fn protocol(detail: impl Into<String>) -> Self {
        WsError::new(close_code::PROTOCOL_ERROR, detail)
    }

    /// The close code to send the peer: 1002 protocol error, 1007 invalid UTF-8 or
    /// compressed data, 1009 too big, 1011 internal.
    ///
    /// ```
    /// use getty_codec::ws::{close_code, WsError};
    /// assert_eq!(WsError::new(close_code::TOO_BIG, "x").close_code(), 1009);
    /// ```
    pub fn close_code(&self) -> u16 {
        self.code
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "websocket error {}: {}", self.code, self.detail)
    }
}

impl std::error::Error for WsError {}

impl From<WsError> for crate::CodecError {
    fn from(e: WsError) -> Self {
        if e.code == close_code::TOO_BIG {
            crate::CodecError {
                kind: crate::CodecErrorKind::FrameTooLong,
                detail: e.to_string(),
                limit_exceeded: e.limit_exceeded,
            }
        } else {
            crate::CodecError::malformed(e.to_string())
        }
    }
}
