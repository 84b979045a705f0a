//! A codec whose messages remember whether they are text or binary.

use bytes::{Bytes, BytesMut};

use crate::{split_message, CodecError, Decoded, Decoder, Encoder, MessageKind};

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
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// A text message; the bytes are UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    ///
    /// ```
    /// assert_eq!(getty_codec::Message::text("hi").payload(), "hi");
    /// ```
    pub fn text(text: impl Into<String>) -> Self {
        Message::Text(Bytes::from(text.into()))
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
            Message::Text(b) | Message::Binary(b) => b,
        }
    }

    /// The message as text: `Some` for a text message whose bytes are UTF-8.
    ///
    /// ```
    /// assert_eq!(getty_codec::Message::text("ok").as_text(), Some("ok"));
    /// ```
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(b) => std::str::from_utf8(b).ok(),
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
            Message::Text(b) | Message::Binary(b) => b,
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
    /// empty one included.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoder, Message, MessageCodec, MessageKind};
    ///
    /// let msg = MessageCodec.decode_message(MessageKind::Text, &mut BytesMut::new()).unwrap();
    /// assert_eq!(msg, Message::text(""));
    /// ```
    fn decode_message(
        &mut self,
        kind: MessageKind,
        payload: &mut BytesMut,
    ) -> Result<Message, CodecError> {
        let bytes = split_message(payload, payload.len());
        Ok(match kind {
            MessageKind::Text => Message::Text(bytes),
            MessageKind::Binary => Message::Binary(bytes),
        })
    }
}

impl Encoder<Message> for MessageCodec {
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
}

impl Encoder<&Message> for MessageCodec {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LengthFieldCodec, RawCodec};

    #[test]
    fn stream_decoding_is_raw_and_binary() {
        let mut buf = BytesMut::from(&b"xyz"[..]);
        let Decoded::Frame(m) = MessageCodec.decode(&mut buf).unwrap() else {
            panic!("expected a frame");
        };
        assert_eq!(m, Message::binary(&b"xyz"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn message_decoding_keeps_the_kind_and_copies_only_small_ones() {
        let text = "t".repeat(crate::COPY_BELOW);
        let mut buf = BytesMut::from(text.as_bytes());
        let addr = buf.as_ptr();
        let m = MessageCodec
            .decode_message(MessageKind::Text, &mut buf)
            .unwrap();
        assert_eq!(m.kind(), MessageKind::Text);
        assert_eq!(m.payload().as_ptr(), addr);
        let mut small = BytesMut::from(&b"text"[..]);
        let addr = small.as_ptr();
        let m = MessageCodec
            .decode_message(MessageKind::Text, &mut small)
            .unwrap();
        assert_eq!(m, Message::text("text"));
        assert_ne!(m.payload().as_ptr(), addr);
        let m = MessageCodec
            .decode_message(MessageKind::Binary, &mut BytesMut::from(&b"b"[..]))
            .unwrap();
        assert_eq!(m.kind(), MessageKind::Binary);
    }

    #[test]
    fn default_decode_message_needs_exactly_one_frame() {
        let mut codec = LengthFieldCodec::default();
        let mut one = BytesMut::from(&b"\x00\x00\x00\x01a"[..]);
        assert_eq!(
            codec.decode_message(MessageKind::Binary, &mut one).unwrap(),
            "a"
        );
        let mut two = BytesMut::from(&b"\x00\x00\x00\x01a\x00"[..]);
        assert!(codec.decode_message(MessageKind::Binary, &mut two).is_err());
        let mut short = BytesMut::from(&b"\x00\x00\x00\x05a"[..]);
        assert!(codec
            .decode_message(MessageKind::Binary, &mut short)
            .is_err());
    }

    #[test]
    fn raw_codec_takes_empty_messages() {
        let m = RawCodec
            .decode_message(MessageKind::Binary, &mut BytesMut::new())
            .unwrap();
        assert!(m.is_empty());
    }

    #[test]
    fn default_encode_message_is_binary() {
        let mut out = BytesMut::new();
        let kind = RawCodec.encode_message("t", &mut out).unwrap();
        assert_eq!(kind, MessageKind::Binary);
        assert_eq!(&out[..], b"t");
    }
}
