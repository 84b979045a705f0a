//! Sans-IO codecs for getty-rs: pure functions from byte buffers to messages and back.
//!
//! A codec never touches a socket. The transport reads bytes into a [`BytesMut`], asks the
//! [`Decoder`] for messages until it answers [`Decoded::NeedMore`], and hands each message to
//! the handler. On the way out, an [`Encoder`] appends the wire form of a message to the
//! session's outbound buffer. This is getty's `ReadWriter` (and tokio-util's
//! `Decoder`/`Encoder` pair) with one addition from getty: a decoder that has parsed a header
//! reports the frame's declared length ([`Decoded::NeedMore`] with `Some(len)`), so the
//! transport can size its buffer, and a transport decodes with its session's message limit
//! ([`Decoder::decode_limited`]), so an oversized message is refused *before* its body is
//! buffered.
//!
//! Built-in codecs:
//! - [`LengthFieldCodec`]: length-prefixed frames (1, 2, 4 or 8-byte length, big or little
//!   endian, with netty's offset/adjustment/strip options).
//! - [`LinesCodec`]: `\n` or `\r\n` terminated lines with a maximum line length.
//! - [`RawCodec`]: the byte stream as it arrives, no framing.
//! - [`RespCodec`]: Redis's protocol (RESP2) from the server's side: commands in, replies
//!   out.
//! - [`MessageCodec`]: [`Message`]s that remember whether they are text or binary (raw on a
//!   byte stream; one per WebSocket message).
//!
//! Message-oriented transports call [`Decoder::decode_message`] and
//! [`Encoder::encode_message`], which carry a [`MessageKind`]. The [`ws`] module is the
//! sans-IO WebSocket machine (handshake, frames, permessage-deflate).
//!
//! # Features
//!
//! All three are on by default; `default-features = false` leaves the plain codecs
//! ([`LengthFieldCodec`], [`LinesCodec`], [`RawCodec`], [`MessageCodec`], [`RespCodec`]), the [`filter`]
//! trait and its stacking ([`filter::Layered`]), with `bytes` as the only dependency.
//!
//! | Feature   | Gates                                                            | Pulls in                      |
//! |-----------|------------------------------------------------------------------|-------------------------------|
//! | `tls`     | `filter::TlsFilter` and the `rustls` re-export                   | rustls (with ring)            |
//! | `ws`      | the `ws` module: handshake, frames, masking                      | tungstenite, httparse, rand   |
//! | `deflate` | `filter::DeflateFilter` and `Compression`; permessage-deflate in `ws` | flate2 (zlib-rs), miniz_oxide |
//!
//! With `ws` but not `deflate`, the WebSocket API keeps its shape: `ws::DeflateConfig`
//! exists and the handshake functions still take and return it, but the client offers
//! nothing and the server declines every offer (RFC 7692 lets a server decline), so every
//! connection runs uncompressed and `Protocol::new` drops any settings it is given. Code
//! written for the default build compiles in both; only compression goes away, as it would
//! with a peer that does not offer it.
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
// Without the feature, links to what it gates point to the table of features instead.
#![cfg_attr(not(feature = "ws"), doc = "[`ws`]: crate#features")]
#![deny(missing_docs)]
#![deny(unreachable_pub)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::fmt;
use std::ops::Range;

pub use bytes::{Bytes, BytesMut};
/// The TLS library under [`filter::TlsFilter`], for its configuration types.
#[cfg(feature = "tls")]
pub use rustls;

pub mod filter;
mod length;
mod lines;
mod message;
mod raw;
mod resp;
#[cfg(feature = "ws")]
pub mod ws;

#[cfg(feature = "deflate")]
pub use filter::Compression;
pub use length::{ByteOrder, LengthFieldCodec, LengthFieldCodecBuilder};
pub use lines::{LineEnding, LinesCodec};
pub use message::{Message, MessageCodec, Utf8Bytes};
pub use raw::RawCodec;
pub use resp::{RespArgs, RespCodec, RespCommand, RespValue};

/// Messages shorter than this many bytes are copied out of the read buffer by
/// [`split_message`] (and so by every built-in codec); longer ones are zero-copy views of it.
/// The same threshold as the outbound side's copy of small writes.
pub const COPY_BELOW: usize = 4096;

/// Payloads at least this long are left out of the encoded bytes by
/// [`Encoder::encode_split`] (the built-in codecs) and queued as they are; shorter ones are
/// copied.
///
/// Not copying a payload keeps alive whatever memory it is a view of until it has been
/// written: for an echoed message, the read buffer it was decoded from. That buffer is one
/// pooled 64 KiB buffer (or, for a frame larger than that, a buffer about the frame's
/// size), so at 16 KiB a queued payload holds at most about four times what the outbound
/// bound counts for it, where a 4 KiB one could hold sixteen. (A small slice of a much
/// larger message holds all of it: copy such a slice before writing it.)
pub const SPLIT_FROM: usize = 16 * 1024;

/// Removes the first `len` bytes of `src` and returns them as one message, the way the
/// built-in codecs hand out messages.
///
/// A message shorter than [`COPY_BELOW`] is copied out: a zero-copy view would keep the
/// whole read buffer it came from alive (a 64 KiB pooled buffer for a 50-byte message) for
/// as long as the handler keeps the message, so a handler that keeps small messages (a
/// cache, a history, datagrams) would hold a read buffer for each. The copies are packed
/// into small slabs (4 KiB, one per thread at a time), so the hot path allocates once per
/// slab rather than once per message, and a kept message pins at most its slab. A longer
/// message is split off without copying; it pins at most its own size again in buffer
/// space. Custom codecs should hand out messages with it too.
///
/// ```
/// use getty_codec::{split_message, BytesMut, COPY_BELOW};
///
/// let mut buf = BytesMut::with_capacity(64 * 1024);
/// buf.extend_from_slice(b"hello, rest");
/// let small = split_message(&mut buf, 5);
/// assert_eq!(&small[..], b"hello");
/// assert_eq!(&buf[..], b", rest");
/// // The small message owns its bytes: the read buffer is not shared with it.
/// assert!(!buf.as_ptr_range().contains(&small.as_ptr()));
///
/// let mut big = BytesMut::from(&vec![7u8; COPY_BELOW][..]);
/// let start = big.as_ptr();
/// let view = split_message(&mut big, COPY_BELOW);
/// assert_eq!(view.as_ptr(), start); // zero-copy
/// ```
///
/// # Panics
///
/// If `len` exceeds `src.len()`.
#[inline]
pub fn split_message(src: &mut BytesMut, len: usize) -> Bytes {
    split_message_after(src, 0, len)
}

/// [`split_message`] of the `len` bytes that follow `skip` bytes of header, which go too:
/// one cut of `src` per message rather than two.
// Always inlined: every built-in codec hands out each message through it, and the
// callers are few; out of line it cost about 10 instructions per message in callgrind.
#[inline(always)]
pub(crate) fn split_message_after(src: &mut BytesMut, skip: usize, len: usize) -> Bytes {
    if len < COPY_BELOW {
        let message = copy_small(&src[skip..skip + len]);
        bytes::Buf::advance(src, skip + len);
        message
    } else {
        let mut frame = src.split_to(skip + len).freeze();
        bytes::Buf::advance(&mut frame, skip);
        frame
    }
}

/// `item`, handed to [`Encoder::encode_split`], as a `Bytes` to queue as it is; or back as
/// it came when most of its capacity is empty: queued, it would hold all of that capacity
/// until written while the outbound bound counts only its length, so it is copied instead.
pub(crate) fn keepable_vec(item: Vec<u8>) -> Result<Bytes, Vec<u8>> {
    if item.capacity() > 2 * item.len() {
        return Err(item);
    }
    Ok(Bytes::from(item))
}

/// A split encoding of `item`, a whole message with nothing before it: returned as it is
/// when it is large (at least [`SPLIT_FROM`] bytes), else copied into `dst`.
#[inline]
pub(crate) fn split_large(item: Bytes, dst: &mut BytesMut) -> Option<Bytes> {
    if item.len() < SPLIT_FROM {
        dst.extend_from_slice(&item);
        return None;
    }
    Some(item)
}

/// [`split_large`] of a `Vec<u8>`, copied instead when most of its capacity is empty
/// ([`keepable_vec`]).
#[inline]
pub(crate) fn split_large_vec(item: Vec<u8>, dst: &mut BytesMut) -> Option<Bytes> {
    match keepable_vec(item) {
        Ok(item) => split_large(item, dst),
        Err(item) => {
            dst.extend_from_slice(&item);
            None
        }
    }
}

/// The size of the slabs small messages are copied into.
const SMALL_SLAB: usize = 4096;

thread_local! {
    /// The room left in this thread's current slab; messages already handed out share
    /// (and keep alive) the front of it.
    static SLAB: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// `bytes` copied into the thread's slab (a new slab when it has no room left).
#[inline]
fn copy_small(bytes: &[u8]) -> Bytes {
    SLAB.try_with(|slab| {
        let mut slab = slab.borrow_mut();
        if slab.capacity() < bytes.len() {
            *slab = BytesMut::with_capacity(SMALL_SLAB.max(bytes.len()));
        }
        slab.extend_from_slice(bytes);
        slab.split_to(bytes.len()).freeze()
    })
    // Only while the thread is being torn down.
    .unwrap_or_else(|_| Bytes::copy_from_slice(bytes))
}

/// How many bytes the next copy [`split_message`] makes on this thread can take without
/// starting a new slab (zero when the thread has none yet). A transport that copies
/// several small messages out in one piece (a WebSocket run) sizes the piece by it when it
/// can, so that the slabs stay packed: a slab left with room it never fills is memory the
/// messages in it keep for nothing.
///
/// ```
/// use getty_codec::{small_copy_room, split_message, BytesMut};
///
/// let mut buf = BytesMut::from(&[7u8; 100][..]);
/// let _first = split_message(&mut buf, 40);
/// let room = small_copy_room();
/// let _second = split_message(&mut buf, 60);
/// assert_eq!(small_copy_room(), room - 60); // the same slab
/// ```
pub fn small_copy_room() -> usize {
    SLAB.try_with(|slab| slab.borrow().capacity()).unwrap_or(0)
}

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
    /// (header included) will occupy `n` bytes from the start of the buffer, and transports
    /// size their read buffer by it.
    ///
    /// `n` is a frame length, not a message length: a session's `max_message_len` limits
    /// the message the handler gets (the payload, after the codec strips its header or
    /// delimiter). That check belongs to [`Decoder::decode_limited`], which refuses a
    /// message over the limit as soon as its length is known (from the header alone), so a
    /// frame that a limited decode answers `NeedMore(Some(n))` for carries an acceptable
    /// message.
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

    /// Decodes at most one message, as [`decode`](Decoder::decode) does, for a transport
    /// whose session accepts messages of at most `max_message_len` bytes: the message as the
    /// handler gets it (a length-prefixed payload without its prefix, a line without its
    /// terminator). A message over the limit fails with
    /// [`CodecError::message_too_long`]`(len, max_message_len)` as soon as its length is
    /// known, before its body is buffered; the transport reports it as its own
    /// "message too long" error against the session's limit. Input that cannot become a
    /// message within the limit must fail too, so the transport's buffer stays bounded.
    ///
    /// The session's limit comes first; a limit of the codec's own still applies after it
    /// where the codec says so ([`LinesCodec`]'s line length, a
    /// [`LengthFieldCodec`]'s explicitly set frame length), failing with the codec's
    /// [`FrameTooLong`](CodecErrorKind::FrameTooLong) error. The built-in codecs document
    /// theirs.
    ///
    /// The default runs `decode` and fails when a frame's declared length
    /// (`NeedMore(Some(n))`), or the bytes buffered without a frame, exceed
    /// `max_message_len`: for a codec whose frames have a header it strips, that counts the
    /// header too, so such a codec should override this to compare the message itself.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{CodecError, Decoded, Decoder, LengthFieldCodec};
    ///
    /// let mut codec = LengthFieldCodec::default();
    /// // A 16-byte payload (20 bytes with its header) is within a limit of 16 ...
    /// let mut buf = BytesMut::from(&b"\x00\x00\x00\x10"[..]);
    /// assert_eq!(codec.decode_limited(&mut buf, 16).unwrap(), Decoded::NeedMore(Some(20)));
    /// // ... 17 bytes are not, refused from the header alone.
    /// let mut buf = BytesMut::from(&b"\x00\x00\x00\x11"[..]);
    /// let err = codec.decode_limited(&mut buf, 16).unwrap_err();
    /// assert_eq!(err, CodecError::message_too_long(17, 16));
    /// assert_eq!(err.limit_exceeded(), Some((17, 16)));
    /// ```
    fn decode_limited(
        &mut self,
        src: &mut BytesMut,
        max_message_len: usize,
    ) -> Result<Decoded<Self::Item>, CodecError> {
        let buffered = src.len();
        match self.decode(src)? {
            Decoded::NeedMore(Some(frame_len)) if frame_len > max_message_len => {
                Err(CodecError::message_too_long(frame_len, max_message_len))
            }
            Decoded::NeedMore(None) if buffered > max_message_len => {
                Err(CodecError::message_too_long(buffered, max_message_len))
            }
            decoded => Ok(decoded),
        }
    }

    /// Forgets whatever the decoder remembers of the input it has seen, so that the next call
    /// starts afresh on a buffer of its own.
    ///
    /// On a stream every call sees the same buffer, with bytes only appended between calls,
    /// and a decoder may keep state across calls to save work ([`LinesCodec`] remembers how
    /// far it has searched for a terminator). Where each unit of input is a buffer of its own
    /// — one datagram, one WebSocket message — transports call `reset` before decoding each
    /// unit, so that nothing of one (a peer's unterminated line, say) carries over to the
    /// next: decoding a datagram gives what a fresh decoder would. The default does nothing;
    /// the built-in decoders other than [`LinesCodec`] keep no such state. A custom decoder
    /// that does must override this.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, LinesCodec};
    ///
    /// let mut codec = LinesCodec::default();
    /// // One datagram without a newline ...
    /// let mut first = BytesMut::from(&b"no newline in this datagram"[..]);
    /// assert_eq!(codec.decode(&mut first).unwrap(), Decoded::NeedMore(None));
    /// // ... says nothing about the next one, a buffer of its own.
    /// codec.reset();
    /// let mut next = BytesMut::from(&b"PING\n"[..]);
    /// assert_eq!(codec.decode(&mut next).unwrap(), Decoded::Frame("PING".into()));
    /// ```
    fn reset(&mut self) {}

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
        // A message is a buffer of its own: nothing of an earlier one applies.
        self.reset();
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

    /// [`decode_message`](Decoder::decode_message) for a message that lies in `src` (a
    /// WebSocket transport's read buffer) at `payload`, behind bytes of no interest to the
    /// codec (its frame header): decodes it and takes `src[..payload.end]` off, whatever the
    /// outcome.
    ///
    /// The default cuts the payload off into a buffer of its own and calls `decode_message`
    /// on it. A codec that copies small messages out anyway ([`RawCodec`],
    /// [`MessageCodec`]) overrides it to copy them straight from `src`, which saves cutting
    /// a buffer per message.
    ///
    /// # Panics
    ///
    /// If `payload` does not lie within `src`.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoder, LinesCodec, MessageKind};
    ///
    /// let mut buf = BytesMut::from(&b"\x81\x06hello\nrest"[..]);
    /// let line = LinesCodec::default().decode_front_message(MessageKind::Text, &mut buf, 2..8);
    /// assert_eq!(line.unwrap(), "hello");
    /// assert_eq!(&buf[..], b"rest");
    /// ```
    fn decode_front_message(
        &mut self,
        kind: MessageKind,
        src: &mut BytesMut,
        payload: Range<usize>,
    ) -> Result<Self::Item, CodecError> {
        assert!(
            payload.start <= payload.end,
            "decode_front_message: {payload:?}"
        );
        bytes::Buf::advance(src, payload.start);
        let mut payload = src.split_to(payload.end - payload.start);
        self.decode_message(kind, &mut payload)
    }

    /// Whether the codec takes small messages already copied out
    /// ([`decode_copied_message`](Decoder::decode_copied_message)) as they are. A WebSocket
    /// session then copies a run of small messages out of its read buffer at once, rather
    /// than having the codec copy each.
    const TAKES_COPIED_MESSAGES: bool = false;

    /// [`decode_message`](Decoder::decode_message) for a small message the transport has
    /// copied out of its read buffer already, with the small messages read beside it: they
    /// share one buffer of fewer than [`COPY_BELOW`] bytes, so keeping `message` pins no more
    /// than the copy [`split_message`] makes would.
    ///
    /// The default copies `message` into a buffer of its own for `decode_message`; a codec
    /// whose item is the message's bytes ([`RawCodec`], [`MessageCodec`]) takes them as they
    /// are, and says so with [`TAKES_COPIED_MESSAGES`](Decoder::TAKES_COPIED_MESSAGES).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use getty_codec::{Decoder, LinesCodec, MessageKind, RawCodec};
    ///
    /// let run = Bytes::from_static(b"hello\nbye\n");
    /// let line = LinesCodec::default().decode_copied_message(MessageKind::Text, run.slice(..6));
    /// assert_eq!(line.unwrap(), "hello");
    /// let raw = RawCodec.decode_copied_message(MessageKind::Binary, run.slice(6..)).unwrap();
    /// assert_eq!(raw.as_ptr(), run[6..].as_ptr()); // the same bytes, not another copy
    /// ```
    fn decode_copied_message(
        &mut self,
        kind: MessageKind,
        message: Bytes,
    ) -> Result<Self::Item, CodecError> {
        let mut payload = BytesMut::from(&message[..]);
        self.decode_message(kind, &mut payload)
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

    /// Encodes `item` as [`encode`](Encoder::encode) does, except that the payload of a
    /// large message may stay out of `dst`: the codec appends what goes before the payload
    /// and returns the payload, whose bytes follow on the wire unchanged. A session queues
    /// that payload as it is, so a large message is never copied on its way out. The
    /// default appends everything and returns `None`; the built-in codecs return the
    /// payload of an owned `Bytes` or `Vec<u8>` of at least [`SPLIT_FROM`] bytes. On error,
    /// `dst` must be left as it was.
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use getty_codec::{Encoder, LengthFieldCodec, SPLIT_FROM};
    ///
    /// let mut codec = LengthFieldCodec::default();
    /// let mut head = BytesMut::new();
    /// let small = codec.encode_split(Bytes::from_static(b"ab"), &mut head).unwrap();
    /// assert_eq!((&head[..], small), (&b"\x00\x00\x00\x02ab"[..], None));
    ///
    /// let big = Bytes::from(vec![7u8; SPLIT_FROM]);
    /// head.clear();
    /// let payload = codec.encode_split(big.clone(), &mut head).unwrap().unwrap();
    /// assert_eq!(&head[..], (SPLIT_FROM as u32).to_be_bytes()); // the header alone
    /// assert_eq!(payload.as_ptr(), big.as_ptr()); // the payload itself, not a copy
    /// ```
    fn encode_split(
        &mut self,
        item: Item,
        dst: &mut BytesMut,
    ) -> Result<Option<Bytes>, CodecError> {
        self.encode(item, dst).map(|()| None)
    }

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

    /// Encodes `item` as one message, as [`encode_message`](Encoder::encode_message) does,
    /// except that a large payload may stay out of `dst`, as with
    /// [`encode_split`](Encoder::encode_split): the codec appends what goes before the
    /// payload in the message (often nothing) and returns the payload. A WebSocket server
    /// that sends the message uncompressed queues that payload as it is, behind the frame's
    /// header, so a large message is never copied on its way out (a client, which masks,
    /// and a compressing session copy it). A session asks only for a message whose
    /// [`encoded_len_hint`](Encoder::encoded_len_hint) is at least [`SPLIT_FROM`], and
    /// calls `encode_message` for the rest. The default is `encode_message`, with no
    /// payload left out; the built-in codecs leave out the payload of an owned `Bytes`,
    /// `Vec<u8>` or [`Message`] of at least [`SPLIT_FROM`] bytes. On error, `dst` must be
    /// left as it was.
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use getty_codec::{Encoder, Message, MessageCodec, MessageKind, SPLIT_FROM};
    ///
    /// let mut out = BytesMut::new();
    /// let big = Message::binary(vec![7u8; SPLIT_FROM]);
    /// let payload = big.payload().clone();
    /// let (kind, left_out) = MessageCodec.encode_message_split(big, &mut out).unwrap();
    /// assert_eq!(kind, MessageKind::Binary);
    /// assert!(out.is_empty()); // nothing goes before the payload
    /// assert_eq!(left_out.unwrap().as_ptr(), payload.as_ptr()); // the payload, not a copy
    ///
    /// let (kind, left_out) = MessageCodec.encode_message_split(Message::text("hi"), &mut out).unwrap();
    /// assert_eq!((kind, left_out, &out[..]), (MessageKind::Text, None, &b"hi"[..]));
    /// ```
    fn encode_message_split(
        &mut self,
        item: Item,
        dst: &mut BytesMut,
    ) -> Result<(MessageKind, Option<Bytes>), CodecError> {
        self.encode_message(item, dst).map(|kind| (kind, None))
    }

    /// About how many bytes `item` takes once encoded, told without encoding it: what a
    /// session handle counts for a write that waits for its reactor, which encodes it
    /// (see `SessionHandle::write`). The default is the item's own size, right for an item
    /// that holds its bytes inline; an item whose bytes live elsewhere (`Bytes`, `Vec<u8>`,
    /// `String`) should answer their length, as the built-in codecs do. Headers may be left
    /// out: it bounds memory, it need not be exact.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use getty_codec::{Encoder, LengthFieldCodec};
    ///
    /// let message = Bytes::from(vec![0u8; 1 << 20]);
    /// let hint = <LengthFieldCodec as Encoder<Bytes>>::encoded_len_hint(&message);
    /// assert_eq!(hint, 1 << 20);
    /// ```
    fn encoded_len_hint(item: &Item) -> usize
    where
        Self: Sized,
    {
        std::mem::size_of_val(item)
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
    /// `(len, max)` of a message over the limit given to [`Decoder::decode_limited`].
    limit_exceeded: Option<(usize, usize)>,
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
            limit_exceeded: None,
        }
    }

    /// A message of `len` bytes exceeds `max`, the limit a transport gave
    /// [`Decoder::decode_limited`] (its session's max message length). Its kind is
    /// [`CodecErrorKind::FrameTooLong`]; [`limit_exceeded`](Self::limit_exceeded) answers
    /// `Some((len, max))`, so the transport reports it against its own limit.
    ///
    /// ```
    /// let e = getty_codec::CodecError::message_too_long(10, 5);
    /// assert_eq!(e.to_string(), "message of 10 bytes exceeds the maximum of 5");
    /// assert_eq!(e.kind(), getty_codec::CodecErrorKind::FrameTooLong);
    /// ```
    pub fn message_too_long(len: usize, max: usize) -> Self {
        CodecError {
            kind: CodecErrorKind::FrameTooLong,
            detail: format!("message of {len} bytes exceeds the maximum of {max}"),
            limit_exceeded: Some((len, max)),
        }
    }

    /// `Some((len, max))` for an error made by [`message_too_long`](Self::message_too_long):
    /// a message over the limit given to [`Decoder::decode_limited`]. `None` for every other
    /// error, a codec's own limit ([`frame_too_long`](Self::frame_too_long)) included.
    ///
    /// ```
    /// use getty_codec::CodecError;
    /// assert_eq!(CodecError::message_too_long(9, 8).limit_exceeded(), Some((9, 8)));
    /// assert_eq!(CodecError::frame_too_long(9, 8).limit_exceeded(), None);
    /// ```
    pub fn limit_exceeded(&self) -> Option<(usize, usize)> {
        self.limit_exceeded
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
            limit_exceeded: None,
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
            limit_exceeded: None,
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
