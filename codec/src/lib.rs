//! Sans-IO codecs for getty-rs: pure functions from byte buffers to messages and back.
//!
//! A codec never touches a socket. The transport reads bytes into a [`BytesMut`], asks the
//! [`Decoder`] for messages until it answers [`Decoded::NeedMore`], and hands each message to
//! the handler. On the way out, an [`Encoder`] appends the wire form of a message to the
//! session's outbound buffer. This is getty's `ReadWriter` (and tokio-util's
//! `Decoder`/`Encoder` pair) with one addition from getty: a decoder that has parsed a header
//! reports the frame's declared length ([`Decoded::NeedMore`] with `Some(len)`), so the
//! transport can refuse an oversized frame *before* it buffers the body.
//!
//! Built-in codecs:
//! - [`LengthFieldCodec`]: length-prefixed frames (1, 2, 4 or 8-byte length, big or little
//!   endian, with netty's offset/adjustment/strip options).
//! - [`LinesCodec`]: `\n` or `\r\n` terminated lines with a maximum line length.
//! - [`RawCodec`]: the byte stream as it arrives, no framing.
//! - [`MessageCodec`]: [`Message`]s that remember whether they are text or binary (raw on a
//!   byte stream; one per WebSocket message).
//!
//! Message-oriented transports call [`Decoder::decode_message`] and
//! [`Encoder::encode_message`], which carry a [`MessageKind`]. The [`ws`] module is the
//! sans-IO WebSocket machine (handshake, frames, permessage-deflate).
//!
//! ```
//! use bytes::BytesMut;
//! use getty_codec::{Decoded, Decoder, Encoder, LengthFieldCodec};
//!
//! let mut codec = LengthFieldCodec::default(); // 4-byte big-endian length prefix
//! let mut wire = BytesMut::new();
//! codec.encode(&b"hello"[..], &mut wire).unwrap();
//! assert_eq!(&wire[..], b"\x00\x00\x00\x05hello");
//! match codec.decode(&mut wire).unwrap() {
//!     Decoded::Frame(msg) => assert_eq!(&msg[..], b"hello"),
//!     Decoded::NeedMore(_) => unreachable!(),
//! }
//! ```

use std::fmt;

pub use bytes::{Bytes, BytesMut};
/// The TLS library under [`filter::TlsFilter`], for its configuration types.
pub use rustls;

pub mod filter;
mod length;
mod lines;
mod message;
mod raw;
pub mod ws;

pub use filter::Compression;
pub use length::{ByteOrder, LengthFieldCodec, LengthFieldCodecBuilder};
pub use lines::{LineEnding, LinesCodec};
pub use message::{Message, MessageCodec};
pub use raw::RawCodec;

/// Whether a message-oriented transport (WebSocket) carries a message as text or binary.
///
/// A byte stream (TCP) has no such notion; there every message is [`MessageKind::Binary`].
/// A text message is valid UTF-8: the WebSocket layer refuses any other before a decoder
/// sees it.
///
/// ```
/// use getty_codec::MessageKind;
/// assert_eq!(MessageKind::default(), MessageKind::Binary);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Arbitrary bytes.
    #[default]
    Binary,
    /// UTF-8 text.
    Text,
}

/// What one call to [`Decoder::decode`] found in the buffer.
///
/// ```
/// use getty_codec::Decoded;
/// let d: Decoded<u8> = Decoded::NeedMore(Some(1024));
/// assert!(matches!(d, Decoded::NeedMore(Some(1024))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    /// One whole message; the decoder has removed its bytes from the front of the buffer.
    /// A decoder that returns a frame must consume at least one byte; the transport treats
    /// a frame that consumed nothing as a codec bug and closes the session.
    Frame(T),
    /// No whole message yet. `Some(n)` when a header has been parsed: the whole frame
    /// (header included) will occupy `n` bytes from the start of the buffer. Transports use
    /// it to reject oversized frames early and to size their read buffer.
    NeedMore(Option<usize>),
}

/// Turns bytes from the wire into messages.
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::{Decoded, Decoder, LinesCodec};
///
/// let mut codec = LinesCodec::default();
/// let mut buf = BytesMut::from(&b"one\ntw"[..]);
/// assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::Frame("one".into()));
/// assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::NeedMore(None));
/// ```
pub trait Decoder {
    /// The message type handed to the session's handler.
    type Item;

    /// Decodes at most one message from the front of `src`.
    ///
    /// Returns an error when the stream is malformed; the transport then closes the session
    /// and reports the error to the handler's `on_error`.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Decoded<Self::Item>, CodecError>;

    /// Decodes one whole message of a message-oriented transport (a WebSocket message)
    /// into exactly one item. `payload` holds the complete message; `kind` says whether it
    /// arrived as text (already checked to be UTF-8) or binary.
    ///
    /// The default runs [`decode`](Decoder::decode) once and requires it to produce a frame
    /// that takes the whole payload, so a stream codec used over WebSocket expects one of its
    /// frames per message. Codecs without framing (such as [`RawCodec`]) override it.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoder, LinesCodec, MessageKind};
    ///
    /// let mut codec = LinesCodec::default();
    /// let mut one = BytesMut::from(&b"hello\n"[..]);
    /// assert_eq!(codec.decode_message(MessageKind::Text, &mut one).unwrap(), "hello");
    /// let mut partial = BytesMut::from(&b"no newline"[..]);
    /// assert!(codec.decode_message(MessageKind::Text, &mut partial).is_err());
    /// ```
    fn decode_message(
        &mut self,
        kind: MessageKind,
        payload: &mut BytesMut,
    ) -> Result<Self::Item, CodecError> {
        let _ = kind;
        match self.decode(payload)? {
            Decoded::Frame(item) if payload.is_empty() => Ok(item),
            Decoded::Frame(_) => Err(CodecError::malformed(format!(
                "{} bytes left after the message's frame",
                payload.len()
            ))),
            Decoded::NeedMore(_) => Err(CodecError::malformed(
                "the message does not hold a whole frame",
            )),
        }
    }
}

/// Turns a message into bytes for the wire, appending them to `dst`.
///
/// A codec may implement `Encoder` for several item types (the built-ins accept `Bytes`,
/// `&[u8]`, `Vec<u8>` and `&str`).
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::{Encoder, LinesCodec};
///
/// let mut out = BytesMut::new();
/// LinesCodec::default().encode("hi", &mut out).unwrap();
/// assert_eq!(&out[..], b"hi\n");
/// ```
pub trait Encoder<Item> {
    /// Appends the wire form of `item` to `dst`. On error, `dst` must be left as it was.
    fn encode(&mut self, item: Item, dst: &mut BytesMut) -> Result<(), CodecError>;

    /// Appends `item` as one message of a message-oriented transport (a WebSocket message)
    /// and says whether to send it as text or binary. The default is
    /// [`encode`](Encoder::encode), sent as binary. A codec that answers
    /// [`MessageKind::Text`] must have appended valid UTF-8.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, LengthFieldCodec, MessageKind};
    ///
    /// let mut out = BytesMut::new();
    /// let kind = LengthFieldCodec::default().encode_message(&b"ab"[..], &mut out).unwrap();
    /// assert_eq!(kind, MessageKind::Binary);
    /// assert_eq!(&out[..], b"\x00\x00\x00\x02ab");
    /// ```
    fn encode_message(
        &mut self,
        item: Item,
        dst: &mut BytesMut,
    ) -> Result<MessageKind, CodecError> {
        self.encode(item, dst)?;
        Ok(MessageKind::Binary)
    }
}

/// Why a codec refused its input or output.
///
/// ```
/// use getty_codec::{CodecError, CodecErrorKind};
/// let e = CodecError::frame_too_long(2048, 1024);
/// assert_eq!(e.kind(), CodecErrorKind::FrameTooLong);
/// assert!(e.to_string().contains("2048"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    kind: CodecErrorKind,
    detail: String,
}

/// The class of a [`CodecError`].
///
/// ```
/// use getty_codec::{CodecError, CodecErrorKind};
/// assert_eq!(CodecError::malformed("bad header").kind(), CodecErrorKind::Malformed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecErrorKind {
    /// A frame (declared or found) is longer than the configured maximum.
    FrameTooLong,
    /// The bytes do not follow the codec's format.
    Malformed,
    /// A message cannot be encoded (for example, too long for the length field).
    Unencodable,
}

impl CodecError {
    /// A frame of `len` bytes exceeds the limit `max`.
    ///
    /// ```
    /// let e = getty_codec::CodecError::frame_too_long(10, 5);
    /// assert_eq!(e.to_string(), "frame of 10 bytes exceeds the maximum of 5");
    /// ```
    pub fn frame_too_long(len: usize, max: usize) -> Self {
        CodecError {
            kind: CodecErrorKind::FrameTooLong,
            detail: format!("frame of {len} bytes exceeds the maximum of {max}"),
        }
    }

    /// The input is malformed; `detail` says how.
    ///
    /// ```
    /// let e = getty_codec::CodecError::malformed("negative length");
    /// assert_eq!(e.to_string(), "malformed frame: negative length");
    /// ```
    pub fn malformed(detail: impl Into<String>) -> Self {
        CodecError {
            kind: CodecErrorKind::Malformed,
            detail: format!("malformed frame: {}", detail.into()),
        }
    }

    /// A message cannot be encoded; `detail` says why.
    ///
    /// ```
    /// let e = getty_codec::CodecError::unencodable("300 bytes do not fit a 1-byte length");
    /// assert!(e.to_string().starts_with("cannot encode"));
    /// ```
    pub fn unencodable(detail: impl Into<String>) -> Self {
        CodecError {
            kind: CodecErrorKind::Unencodable,
            detail: format!("cannot encode message: {}", detail.into()),
        }
    }

    /// The class of this error.
    ///
    /// ```
    /// use getty_codec::{CodecError, CodecErrorKind};
    /// assert_eq!(CodecError::unencodable("x").kind(), CodecErrorKind::Unencodable);
    /// ```
    pub fn kind(&self) -> CodecErrorKind {
        self.kind
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for CodecError {}
