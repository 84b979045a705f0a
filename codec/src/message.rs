//! A codec whose messages remember whether they are text or binary.

use std::fmt;
use std::ops::Deref;
use std::ops::Range;
use std::str::Utf8Error;

use bytes::{Bytes, BytesMut};

use crate::{
    split_large, split_large_vec, split_message, split_message_after, CodecError, Decoded, Decoder,
    Encoder, MessageKind,
};

/// Bytes that are UTF-8: the payload of a [`Message::Text`]. Made from a `String` or a
/// `&'static str` at no cost; made from bytes only through a check
/// ([`Utf8Bytes::from_utf8`], `TryFrom`), so a text message that is not UTF-8 (which a
/// WebSocket peer would refuse with close code 1007) cannot be built. Cheap to clone (a
/// [`Bytes`] inside); derefs to `str`.
///
/// ```
/// use getty_codec::{Bytes, Utf8Bytes};
///
/// let t = Utf8Bytes::from("héllo".to_string());
/// assert_eq!(&*t, "héllo");
/// assert_eq!(t.as_bytes().len(), 6);
/// assert!(Utf8Bytes::from_utf8(Bytes::from_static(b"\xff")).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Checks that `bytes` are UTF-8, without copying them.
    ///
    /// ```
    /// use getty_codec::{Bytes, Utf8Bytes};
    /// let t = Utf8Bytes::from_utf8(Bytes::from_static(b"ok")).unwrap();
    /// assert_eq!(t.as_str(), "ok");
    /// assert!(Utf8Bytes::from_utf8(Bytes::from_static(b"\xc3")).is_err());
    /// ```
    pub fn from_utf8(bytes: Bytes) -> Result<Self, Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }

    /// Text that lives for the whole program, without copying it.
    ///
    /// ```
    /// assert_eq!(getty_codec::Utf8Bytes::from_static("hi").len(), 2);
    /// ```
    pub const fn from_static(text: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(text.as_bytes()))
    }

    /// The text.
    ///
    /// ```
    /// assert_eq!(getty_codec::Utf8Bytes::from_static("hi").as_str(), "hi");
    /// ```
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor takes a `str` or checks the bytes, and the bytes are
        // never changed afterwards (`Bytes` is immutable).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The bytes, as the [`Bytes`] they are held in.
    ///
    /// ```
    /// let t = getty_codec::Utf8Bytes::from_static("hi");
    /// assert_eq!(t.as_bytes(), &b"hi"[..]);
    /// ```
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The bytes, dropping the guarantee.
    ///
    /// ```
    /// let b = getty_codec::Utf8Bytes::from_static("hi").into_bytes();
    /// assert_eq!(b, "hi");
    /// ```
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Utf8Bytes(Bytes::from(text))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(text: Utf8Bytes) -> Self {
        text.0
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = Utf8Error;

    /// As [`Utf8Bytes::from_utf8`].
    fn try_from(bytes: Bytes) -> Result<Self, Utf8Error> {
        Utf8Bytes::from_utf8(bytes)
    }
}

impl TryFrom<Vec<u8>> for Utf8Bytes {
    type Error = std::string::FromUtf8Error;

    fn try_from(bytes: Vec<u8>) -> Result<Self, Self::Error> {
        String::from_utf8(bytes).map(Utf8Bytes::from)
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One message with its kind: what [`MessageCodec`] decodes and encodes.
///
/// Over WebSocket the kind is the message's opcode, so an echo server that writes back what
/// it received answers text with text. Over a byte stream every decoded message is
/// [`Message::Binary`] and the kind of an encoded one is lost.
///
/// ```
/// use getty_codec::{Message, MessageKind};
///
/// let m = Message::text("héllo");
/// assert_eq!(m.kind(), MessageKind::Text);
/// assert_eq!(m.as_text(), Some("héllo"));
/// assert_eq!(Message::binary(&b"\xff"[..]).as_text(), None);
/// // Text from bytes is checked: a text message is always UTF-8.
/// assert!(Message::text_from_utf8(&b"\xff"[..]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// A text message: UTF-8 by construction (see [`Utf8Bytes`]).
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// A text message (no check: a `String` is UTF-8 already).
    ///
    /// ```
    /// assert_eq!(getty_codec::Message::text("hi").payload(), "hi");
    /// ```
    pub fn text(text: impl Into<String>) -> Self {
        Message::Text(Utf8Bytes::from(text.into()))
    }

    /// A text message from bytes, checked to be UTF-8 (once, here; not again when it is
    /// written).
    ///
    /// ```
    /// use getty_codec::Message;
    /// let m = Message::text_from_utf8(bytes::Bytes::from_static(b"caf\xc3\xa9")).unwrap();
    /// assert_eq!(m.as_text(), Some("café"));
    /// assert!(Message::text_from_utf8(&b"caf\xc3"[..]).is_err());
    /// ```
    pub fn text_from_utf8(bytes: impl Into<Bytes>) -> Result<Self, Utf8Error> {
        Utf8Bytes::from_utf8(bytes.into()).map(Message::Text)
    }

    /// A binary message.
    ///
    /// ```
    /// assert_eq!(getty_codec::Message::binary(vec![1u8, 2]).payload(), &[1u8, 2][..]);
    /// ```
    pub fn binary(bytes: impl Into<Bytes>) -> Self {
        Message::Binary(bytes.into())
    }

    /// Text or binary.
    ///
    /// ```
    /// use getty_codec::{Message, MessageKind};
    /// assert_eq!(Message::binary(&b""[..]).kind(), MessageKind::Binary);
    /// ```
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Text(_) => MessageKind::Text,
            Message::Binary(_) => MessageKind::Binary,
        }
    }

    /// The message's bytes.
    ///
    /// ```
    /// assert_eq!(getty_codec::Message::text("abc").payload().len(), 3);
    /// ```
    pub fn payload(&self) -> &Bytes {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// The message as text: `Some` for a text message.
    ///
    /// ```
    /// assert_eq!(getty_codec::Message::text("ok").as_text(), Some("ok"));
    /// ```
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t.as_str()),
            Message::Binary(_) => None,
        }
    }

    /// The message's bytes, dropping the kind.
    ///
    /// ```
    /// let b = getty_codec::Message::text("x").into_payload();
    /// assert_eq!(b, "x");
    /// ```
    pub fn into_payload(self) -> Bytes {
        match self {
            Message::Text(t) => t.into_bytes(),
            Message::Binary(b) => b,
        }
    }
}

/// The codec of [`Message`]: on WebSocket, one message per WebSocket message with its kind;
/// on a byte stream it behaves like [`RawCodec`](crate::RawCodec) (no framing; every decoded
/// message is binary).
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::{Decoder, Encoder, Message, MessageCodec, MessageKind};
///
/// let mut codec = MessageCodec;
/// let mut out = BytesMut::new();
/// assert_eq!(codec.encode_message(Message::text("hi"), &mut out).unwrap(), MessageKind::Text);
/// let msg = codec.decode_message(MessageKind::Text, &mut out).unwrap();
/// assert_eq!(msg, Message::text("hi"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MessageCodec;

impl Decoder for MessageCodec {
    type Item = Message;

    /// Takes everything buffered as one binary message (zero-copy, or a copy if small: see
    /// [`split_message`](crate::split_message)), or asks for more.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, Message, MessageCodec};
    ///
    /// let mut buf = BytesMut::from(&b"abc"[..]);
    /// assert_eq!(
    ///     MessageCodec.decode(&mut buf).unwrap(),
    ///     Decoded::Frame(Message::binary(&b"abc"[..]))
    /// );
    /// assert_eq!(MessageCodec.decode(&mut buf).unwrap(), Decoded::NeedMore(None));
    /// ```
    fn decode(&mut self, src: &mut BytesMut) -> Result<Decoded<Message>, CodecError> {
        if src.is_empty() {
            return Ok(Decoded::NeedMore(None));
        }
        Ok(Decoded::Frame(Message::Binary(split_message(
            src,
            src.len(),
        ))))
    }

    /// Takes what is buffered as one binary message, at most `max_message_len` bytes of it
    /// (at least one), as [`RawCodec`](crate::RawCodec) does.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, Message, MessageCodec};
    ///
    /// let mut buf = BytesMut::from(&b"abc"[..]);
    /// let first = MessageCodec.decode_limited(&mut buf, 2).unwrap();
    /// assert_eq!(first, Decoded::Frame(Message::binary(&b"ab"[..])));
    /// ```
    fn decode_limited(
        &mut self,
        src: &mut BytesMut,
        max_message_len: usize,
    ) -> Result<Decoded<Message>, CodecError> {
        if src.is_empty() {
            return Ok(Decoded::NeedMore(None));
        }
        let len = src.len().min(max_message_len.max(1));
        Ok(Decoded::Frame(Message::Binary(split_message(src, len))))
    }

    /// The whole payload as one message of the given kind (zero-copy, or a copy if small), an
    /// empty one included. A text payload is checked to be UTF-8 (a malformed-message error
    /// if not; a WebSocket session's payloads always pass, its protocol having checked them
    /// already), so that [`Message::Text`] keeps its guarantee.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoder, Message, MessageCodec, MessageKind};
    ///
    /// let msg = MessageCodec.decode_message(MessageKind::Text, &mut BytesMut::new()).unwrap();
    /// assert_eq!(msg, Message::text(""));
    /// let mut bad = BytesMut::from(&b"\xff"[..]);
    /// assert!(MessageCodec.decode_message(MessageKind::Text, &mut bad).is_err());
    /// ```
    fn decode_message(
        &mut self,
        kind: MessageKind,
        payload: &mut BytesMut,
    ) -> Result<Message, CodecError> {
        if kind == MessageKind::Text {
            if let Err(e) = std::str::from_utf8(payload) {
                return Err(CodecError::malformed(format!(
                    "a text message that is not UTF-8: {e}"
                )));
            }
        }
        let bytes = split_message(payload, payload.len());
        Ok(match kind {
            // Checked just above.
            MessageKind::Text => Message::Text(Utf8Bytes(bytes)),
            MessageKind::Binary => Message::Binary(bytes),
        })
    }

    /// `src[payload]` as one message of the given kind, checked as
    /// [`decode_message`](Decoder::decode_message) checks it; `src[..payload.end]` is taken
    /// off either way.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoder, Message, MessageCodec, MessageKind};
    ///
    /// let mut buf = BytesMut::from(&b"--hi\xff"[..]);
    /// let msg = MessageCodec.decode_front_message(MessageKind::Text, &mut buf, 2..4).unwrap();
    /// assert_eq!(msg, Message::text("hi"));
    /// assert!(MessageCodec.decode_front_message(MessageKind::Text, &mut buf, 0..1).is_err());
    /// assert!(buf.is_empty());
    /// ```
    fn decode_front_message(
        &mut self,
        kind: MessageKind,
        src: &mut BytesMut,
        payload: Range<usize>,
    ) -> Result<Message, CodecError> {
        let text = kind == MessageKind::Text;
        let checked = if text {
            std::str::from_utf8(&src[payload.clone()]).err()
        } else {
            None
        };
        let bytes = split_message_after(src, payload.start, payload.len());
        if let Some(e) = checked {
            return Err(CodecError::malformed(format!(
                "a text message that is not UTF-8: {e}"
            )));
        }
        Ok(match kind {
            // Checked just above.
            MessageKind::Text => Message::Text(Utf8Bytes(bytes)),
            MessageKind::Binary => Message::Binary(bytes),
        })
    }

    const TAKES_COPIED_MESSAGES: bool = true;

    /// The message as it is, of the given kind, checked as
    /// [`decode_message`](Decoder::decode_message) checks it.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use getty_codec::{Decoder, Message, MessageCodec, MessageKind};
    ///
    /// let run = Bytes::from_static(b"hi\xff");
    /// let msg = MessageCodec.decode_copied_message(MessageKind::Text, run.slice(..2));
    /// assert_eq!(msg.unwrap(), Message::text("hi"));
    /// assert!(MessageCodec.decode_copied_message(MessageKind::Text, run.slice(2..)).is_err());
    /// ```
    #[inline(always)]
    fn decode_copied_message(
        &mut self,
        kind: MessageKind,
        message: Bytes,
    ) -> Result<Message, CodecError> {
        Ok(match kind {
            MessageKind::Text => match std::str::from_utf8(&message) {
                Ok(_) => Message::Text(Utf8Bytes(message)),
                Err(e) => {
                    return Err(CodecError::malformed(format!(
                        "a text message that is not UTF-8: {e}"
                    )))
                }
            },
            MessageKind::Binary => Message::Binary(message),
        })
    }
}

impl Encoder<Message> for MessageCodec {
    fn encoded_len_hint(item: &Message) -> usize {
        item.payload().len()
    }

    /// Appends the message's bytes unchanged.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, Message, MessageCodec};
    ///
    /// let mut out = BytesMut::new();
    /// MessageCodec.encode(Message::text("a"), &mut out).unwrap();
    /// MessageCodec.encode(Message::binary(&b"b"[..]), &mut out).unwrap();
    /// assert_eq!(&out[..], b"ab");
    /// ```
    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(item.payload());
        Ok(())
    }

    /// Appends the message's bytes and answers its kind.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, Message, MessageCodec, MessageKind};
    ///
    /// let mut out = BytesMut::new();
    /// let kind = MessageCodec.encode_message(Message::binary(&b"\x00"[..]), &mut out).unwrap();
    /// assert_eq!(kind, MessageKind::Binary);
    /// ```
    fn encode_message(
        &mut self,
        item: Message,
        dst: &mut BytesMut,
    ) -> Result<MessageKind, CodecError> {
        dst.extend_from_slice(item.payload());
        Ok(item.kind())
    }

    /// The message's kind; a large payload is returned as it is (see
    /// [`Encoder::encode_message_split`]).
    #[inline]
    fn encode_message_split(
        &mut self,
        item: Message,
        dst: &mut BytesMut,
    ) -> Result<(MessageKind, Option<Bytes>), CodecError> {
        let kind = item.kind();
        Ok((kind, split_large(item.into_payload(), dst)))
    }
}

impl Encoder<&Message> for MessageCodec {
    fn encoded_len_hint(item: &&Message) -> usize {
        item.payload().len()
    }

    /// Appends the message's bytes unchanged.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, Message, MessageCodec, MessageKind};
    ///
    /// let m = Message::text("echo");
    /// let mut out = BytesMut::new();
    /// assert_eq!(MessageCodec.encode_message(&m, &mut out).unwrap(), MessageKind::Text);
    /// assert_eq!(&out[..], b"echo");
    /// ```
    fn encode(&mut self, item: &Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(item.payload());
        Ok(())
    }

    fn encode_message(
        &mut self,
        item: &Message,
        dst: &mut BytesMut,
    ) -> Result<MessageKind, CodecError> {
        dst.extend_from_slice(item.payload());
        Ok(item.kind())
    }
}

impl Encoder<&str> for MessageCodec {
    fn encoded_len_hint(item: &&str) -> usize {
        item.len()
    }

    /// A text message: `session.write("OK")` works on a WebSocket as on TCP.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, MessageCodec, MessageKind};
    ///
    /// let mut out = BytesMut::new();
    /// let kind = MessageCodec.encode_message("OK", &mut out).unwrap();
    /// assert_eq!((kind, &out[..]), (MessageKind::Text, &b"OK"[..]));
    /// ```
    fn encode(&mut self, item: &str, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(item.as_bytes());
        Ok(())
    }

    fn encode_message(
        &mut self,
        item: &str,
        dst: &mut BytesMut,
    ) -> Result<MessageKind, CodecError> {
        dst.extend_from_slice(item.as_bytes());
        Ok(MessageKind::Text)
    }
}

impl Encoder<String> for MessageCodec {
    fn encoded_len_hint(item: &String) -> usize {
        item.len()
    }

    /// A text message, like the `&str` encoder.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, MessageCodec, MessageKind};
    ///
    /// let mut out = BytesMut::new();
    /// let kind = MessageCodec.encode_message(String::from("OK"), &mut out).unwrap();
    /// assert_eq!((kind, &out[..]), (MessageKind::Text, &b"OK"[..]));
    /// ```
    fn encode(&mut self, item: String, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(item.as_bytes());
        Ok(())
    }

    fn encode_message(
        &mut self,
        item: String,
        dst: &mut BytesMut,
    ) -> Result<MessageKind, CodecError> {
        dst.extend_from_slice(item.as_bytes());
        Ok(MessageKind::Text)
    }
}

impl Encoder<&[u8]> for MessageCodec {
    fn encoded_len_hint(item: &&[u8]) -> usize {
        item.len()
    }

    /// A binary message.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, MessageCodec, MessageKind};
    ///
    /// let mut out = BytesMut::new();
    /// let kind = MessageCodec.encode_message(&b"\x01"[..], &mut out).unwrap();
    /// assert_eq!((kind, &out[..]), (MessageKind::Binary, &b"\x01"[..]));
    /// ```
    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(item);
        Ok(())
    }

    fn encode_message(
        &mut self,
        item: &[u8],
        dst: &mut BytesMut,
    ) -> Result<MessageKind, CodecError> {
        dst.extend_from_slice(item);
        Ok(MessageKind::Binary)
    }
}

impl Encoder<Vec<u8>> for MessageCodec {
    fn encoded_len_hint(item: &Vec<u8>) -> usize {
        item.len()
    }

    /// A binary message, like the `&[u8]` encoder.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, MessageCodec, MessageKind};
    ///
    /// let mut out = BytesMut::new();
    /// let kind = MessageCodec.encode_message(vec![1u8], &mut out).unwrap();
    /// assert_eq!((kind, &out[..]), (MessageKind::Binary, &b"\x01"[..]));
    /// ```
    fn encode(&mut self, item: Vec<u8>, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&item);
        Ok(())
    }

    fn encode_message(
        &mut self,
        item: Vec<u8>,
        dst: &mut BytesMut,
    ) -> Result<MessageKind, CodecError> {
        dst.extend_from_slice(&item);
        Ok(MessageKind::Binary)
    }

    /// A binary message; a large `item` is returned whole (see
    /// [`Encoder::encode_message_split`]).
    #[inline]
    fn encode_message_split(
        &mut self,
        item: Vec<u8>,
        dst: &mut BytesMut,
    ) -> Result<(MessageKind, Option<Bytes>), CodecError> {
        Ok((MessageKind::Binary, split_large_vec(item, dst)))
    }
}

impl Encoder<Bytes> for MessageCodec {
    fn encoded_len_hint(item: &Bytes) -> usize {
        item.len()
    }

    /// A binary message, like the `&[u8]` encoder.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, MessageCodec, MessageKind};
    ///
    /// let mut out = BytesMut::new();
    /// let kind = MessageCodec.encode_message(bytes::Bytes::from_static(b"\x01"), &mut out).unwrap();
    /// assert_eq!((kind, &out[..]), (MessageKind::Binary, &b"\x01"[..]));
    /// ```
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&item);
        Ok(())
    }

    fn encode_message(
        &mut self,
        item: Bytes,
        dst: &mut BytesMut,
    ) -> Result<MessageKind, CodecError> {
        dst.extend_from_slice(&item);
        Ok(MessageKind::Binary)
    }

    /// A binary message; a large `item` is returned whole (see
    /// [`Encoder::encode_message_split`]).
    #[inline]
    fn encode_message_split(
        &mut self,
        item: Bytes,
        dst: &mut BytesMut,
    ) -> Result<(MessageKind, Option<Bytes>), CodecError> {
        Ok((MessageKind::Binary, split_large(item, dst)))
    }
}

impl Encoder<&Bytes> for MessageCodec {
    fn encoded_len_hint(item: &&Bytes) -> usize {
        item.len()
    }

    /// A binary message, like the `&[u8]` encoder.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, MessageCodec, MessageKind};
    ///
    /// let mut out = BytesMut::new();
    /// let kind = MessageCodec.encode_message(&bytes::Bytes::from_static(b"\x01"), &mut out).unwrap();
    /// assert_eq!((kind, &out[..]), (MessageKind::Binary, &b"\x01"[..]));
    /// ```
    fn encode(&mut self, item: &Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(item);
        Ok(())
    }

    fn encode_message(
        &mut self,
        item: &Bytes,
        dst: &mut BytesMut,
    ) -> Result<MessageKind, CodecError> {
        dst.extend_from_slice(item);
        Ok(MessageKind::Binary)
    }
}

#[cfg(test)]
mod tests;
