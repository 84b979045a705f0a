//! No framing: the byte stream as it arrives.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    split_large, split_large_vec, split_message, split_message_after, CodecError, Decoded, Decoder,
    Encoder, MessageKind,
};

/// Passes bytes through unframed: each decode hands out everything buffered so far, and
/// encoding copies the message as it is.
///
/// Message boundaries are not preserved: what one `encode` wrote may arrive as several
/// decoded messages, or merged with its neighbours, depending on how the transport reads.
/// Use it for proxies, byte-stream protocols, or when the handler does its own parsing.
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::{Decoded, Decoder, Encoder, RawCodec};
///
/// let mut codec = RawCodec::new();
/// let mut wire = BytesMut::new();
/// codec.encode("ab", &mut wire).unwrap();
/// codec.encode("cd", &mut wire).unwrap();
/// assert_eq!(codec.decode(&mut wire).unwrap(), Decoded::Frame("abcd".into()));
/// assert_eq!(codec.decode(&mut wire).unwrap(), Decoded::NeedMore(None));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RawCodec;

impl RawCodec {
    /// The raw codec; it has no settings.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, Encoder, RawCodec};
    ///
    /// let mut codec = RawCodec::new();
    /// let mut wire = BytesMut::new();
    /// codec.encode("no framing", &mut wire).unwrap();
    /// assert_eq!(&wire[..], b"no framing"); // written as it is
    /// assert_eq!(codec.decode(&mut wire).unwrap(), Decoded::Frame("no framing".into()));
    /// ```
    pub const fn new() -> Self {
        RawCodec
    }

    #[inline]
    fn encode_bytes(self, item: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.put_slice(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;

    /// Takes the whole buffer as one message (zero-copy, or a copy if small: see
    /// [`split_message`](crate::split_message)), or asks for more when it is empty.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, RawCodec};
    ///
    /// let mut buf = BytesMut::from(&b"\x00\xffany bytes"[..]);
    /// let msg = RawCodec.decode(&mut buf).unwrap();
    /// assert_eq!(msg, Decoded::Frame((&b"\x00\xffany bytes"[..]).into()));
    /// assert!(buf.is_empty());
    /// ```
    fn decode(&mut self, src: &mut BytesMut) -> Result<Decoded<Bytes>, CodecError> {
        if src.is_empty() {
            return Ok(Decoded::NeedMore(None));
        }
        Ok(Decoded::Frame(split_message(src, src.len())))
    }

    /// Takes what is buffered, at most `max_message_len` bytes of it (at least one), so no
    /// message exceeds a session's limit: the rest is the next message.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, RawCodec};
    ///
    /// let mut buf = BytesMut::from(&b"abcde"[..]);
    /// assert_eq!(RawCodec.decode_limited(&mut buf, 3).unwrap(), Decoded::Frame("abc".into()));
    /// assert_eq!(RawCodec.decode_limited(&mut buf, 3).unwrap(), Decoded::Frame("de".into()));
    /// ```
    fn decode_limited(
        &mut self,
        src: &mut BytesMut,
        max_message_len: usize,
    ) -> Result<Decoded<Bytes>, CodecError> {
        if src.is_empty() {
            return Ok(Decoded::NeedMore(None));
        }
        let len = src.len().min(max_message_len.max(1));
        Ok(Decoded::Frame(split_message(src, len)))
    }

    /// Takes the whole message payload (zero-copy, or a copy if small), an empty one
    /// included.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoder, MessageKind, RawCodec};
    ///
    /// let msg = RawCodec.decode_message(MessageKind::Binary, &mut BytesMut::new()).unwrap();
    /// assert!(msg.is_empty());
    /// ```
    fn decode_message(
        &mut self,
        _kind: MessageKind,
        payload: &mut BytesMut,
    ) -> Result<Bytes, CodecError> {
        Ok(split_message(payload, payload.len()))
    }

    /// Takes `src[payload]` as the message (zero-copy, or a copy if small), and
    /// `src[..payload.end]` off.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoder, MessageKind, RawCodec};
    ///
    /// let mut buf = BytesMut::from(&b"--onetwo"[..]);
    /// let msg = RawCodec.decode_front_message(MessageKind::Binary, &mut buf, 2..5).unwrap();
    /// assert_eq!((&msg[..], &buf[..]), (&b"one"[..], &b"two"[..]));
    /// ```
    // Always inlined: a WebSocket session calls it once per message, and out of line it
    // cost about 20 instructions per echoed message in callgrind (ws_echo, 50 conns).
    #[inline(always)]
    fn decode_front_message(
        &mut self,
        _kind: MessageKind,
        src: &mut BytesMut,
        payload: Range<usize>,
    ) -> Result<Bytes, CodecError> {
        Ok(split_message_after(src, payload.start, payload.len()))
    }

    const TAKES_COPIED_MESSAGES: bool = true;

    /// The message as it is.
    #[inline(always)]
    fn decode_copied_message(
        &mut self,
        _kind: MessageKind,
        message: Bytes,
    ) -> Result<Bytes, CodecError> {
        Ok(message)
    }
}

impl Encoder<&[u8]> for RawCodec {
    fn encoded_len_hint(item: &&[u8]) -> usize {
        item.len()
    }

    /// Appends `item` unchanged.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, RawCodec};
    ///
    /// let mut out = BytesMut::new();
    /// RawCodec.encode(&b"\x01\x02"[..], &mut out).unwrap();
    /// assert_eq!(&out[..], b"\x01\x02");
    /// ```
    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_bytes(item, dst)
    }
}

impl Encoder<Bytes> for RawCodec {
    fn encoded_len_hint(item: &Bytes) -> usize {
        item.len()
    }

    /// Appends `item` unchanged.
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use getty_codec::{Encoder, RawCodec};
    ///
    /// let mut out = BytesMut::new();
    /// RawCodec.encode(Bytes::from_static(b"xyz"), &mut out).unwrap();
    /// assert_eq!(&out[..], b"xyz");
    /// ```
    #[inline]
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_bytes(&item, dst)
    }

    /// Returns a large `item` whole, to be queued as it is: see [`Encoder::encode_split`].
    fn encode_split(
        &mut self,
        item: Bytes,
        dst: &mut BytesMut,
    ) -> Result<Option<Bytes>, CodecError> {
        Ok(split_large(item, dst))
    }

    /// A binary message; a large `item` is returned whole: see
    /// [`Encoder::encode_message_split`].
    #[inline]
    fn encode_message_split(
        &mut self,
        item: Bytes,
        dst: &mut BytesMut,
    ) -> Result<(MessageKind, Option<Bytes>), CodecError> {
        Ok((MessageKind::Binary, split_large(item, dst)))
    }
}

impl Encoder<&Bytes> for RawCodec {
    fn encoded_len_hint(item: &&Bytes) -> usize {
        item.len()
    }

    /// Appends `item` unchanged.
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use getty_codec::{Encoder, RawCodec};
    ///
    /// let msg = Bytes::from_static(b"xyz");
    /// let mut out = BytesMut::new();
    /// RawCodec.encode(&msg, &mut out).unwrap();
    /// assert_eq!(&out[..], b"xyz");
    /// ```
    fn encode(&mut self, item: &Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_bytes(item, dst)
    }
}

impl Encoder<Vec<u8>> for RawCodec {
    fn encoded_len_hint(item: &Vec<u8>) -> usize {
        item.len()
    }

    /// Appends `item` unchanged.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, RawCodec};
    ///
    /// let mut out = BytesMut::new();
    /// RawCodec.encode(vec![1u8, 2, 3], &mut out).unwrap();
    /// assert_eq!(&out[..], [1, 2, 3]);
    /// ```
    fn encode(&mut self, item: Vec<u8>, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_bytes(&item, dst)
    }

    /// Returns a large `item` whole (as `Bytes`, without a copy): see
    /// [`Encoder::encode_split`].
    fn encode_split(
        &mut self,
        item: Vec<u8>,
        dst: &mut BytesMut,
    ) -> Result<Option<Bytes>, CodecError> {
        Ok(split_large_vec(item, dst))
    }

    /// A binary message; a large `item` is returned whole (as `Bytes`, without a copy):
    /// see [`Encoder::encode_message_split`].
    #[inline]
    fn encode_message_split(
        &mut self,
        item: Vec<u8>,
        dst: &mut BytesMut,
    ) -> Result<(MessageKind, Option<Bytes>), CodecError> {
        Ok((MessageKind::Binary, split_large_vec(item, dst)))
    }
}

impl Encoder<&str> for RawCodec {
    fn encoded_len_hint(item: &&str) -> usize {
        item.len()
    }

    /// Appends the UTF-8 bytes of `item` unchanged.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, RawCodec};
    ///
    /// let mut out = BytesMut::new();
    /// RawCodec.encode("GET / HTTP/1.0\r\n\r\n", &mut out).unwrap();
    /// assert_eq!(&out[..], b"GET / HTTP/1.0\r\n\r\n");
    /// ```
    fn encode(&mut self, item: &str, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_bytes(item.as_bytes(), dst)
    }
}

impl Encoder<String> for RawCodec {
    fn encoded_len_hint(item: &String) -> usize {
        item.len()
    }

    /// Same as the `&str` encoder: every codec takes the same kinds of input.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, RawCodec};
    ///
    /// let mut out = BytesMut::new();
    /// RawCodec.encode(format!("{}+{}", 1, 2), &mut out).unwrap();
    /// assert_eq!(&out[..], b"1+2");
    /// ```
    fn encode(&mut self, item: String, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_bytes(item.as_bytes(), dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_buffer_needs_more() {
        assert_eq!(
            RawCodec.decode(&mut BytesMut::new()).unwrap(),
            Decoded::NeedMore(None)
        );
    }

    #[test]
    fn decode_takes_everything_copying_only_a_small_chunk() {
        let big = vec![b'r'; crate::COPY_BELOW];
        let mut buf = BytesMut::from(&big[..]);
        let data_addr = buf.as_ptr();
        let Decoded::Frame(msg) = RawCodec.decode(&mut buf).unwrap() else {
            panic!("expected a frame");
        };
        assert_eq!(msg, big);
        assert_eq!(msg.as_ptr(), data_addr);
        assert!(buf.is_empty());

        let mut buf = BytesMut::from(&b"abc"[..]);
        let data_addr = buf.as_ptr();
        let Decoded::Frame(msg) = RawCodec.decode(&mut buf).unwrap() else {
            panic!("expected a frame");
        };
        assert_eq!(msg, "abc");
        assert_ne!(msg.as_ptr(), data_addr);
        assert!(buf.is_empty());
    }

    #[test]
    fn every_encoder_copies_its_item() {
        let mut out = BytesMut::new();
        let mut codec = RawCodec::new();
        codec.encode(&b"1"[..], &mut out).unwrap();
        codec.encode(Bytes::from_static(b"2"), &mut out).unwrap();
        codec.encode(&Bytes::from_static(b"3"), &mut out).unwrap();
        codec.encode(b"4".to_vec(), &mut out).unwrap();
        codec.encode("5", &mut out).unwrap();
        codec.encode("", &mut out).unwrap();
        assert_eq!(&out[..], b"12345");
    }

    #[test]
    fn decoding_byte_by_byte_yields_each_byte() {
        let mut buf = BytesMut::new();
        let mut received = Vec::new();
        for &byte in b"stream" {
            buf.extend_from_slice(&[byte]);
            let Decoded::Frame(msg) = RawCodec.decode(&mut buf).unwrap() else {
                panic!("expected a frame");
            };
            assert_eq!(msg.len(), 1);
            received.extend_from_slice(&msg);
            assert_eq!(RawCodec.decode(&mut buf).unwrap(), Decoded::NeedMore(None));
        }
        assert_eq!(received, b"stream");
    }
}
