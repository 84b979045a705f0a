//! Length-prefixed framing in the style of netty's `LengthFieldBasedFrameDecoder` and
//! `LengthFieldPrepender`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{keepable_vec, split_message_after, CodecError, Decoded, Decoder, Encoder, SPLIT_FROM};

mod builder;
#[cfg(test)]
mod tests;

pub use builder::LengthFieldCodecBuilder;

/// Default [`LengthFieldCodecBuilder::max_frame_length`]: 8 MiB.
const DEFAULT_MAX_FRAME_LENGTH: usize = 8 * 1024 * 1024;

/// `LengthFieldCodec::max_frame_length` when none was set (no valid limit is 0: the header
/// must fit).
const NO_MAX_SET: u32 = 0;

/// Default [`LengthFieldCodecBuilder::length_field_len`]: a 4-byte length.
const DEFAULT_LENGTH_FIELD_LEN: usize = 4;

/// The byte order of a length field.
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::{ByteOrder, Encoder, LengthFieldCodec};
///
/// let mut codec = LengthFieldCodec::builder()
///     .length_field_len(2)
///     .byte_order(ByteOrder::LittleEndian)
///     .build()
///     .unwrap();
/// let mut wire = BytesMut::new();
/// codec.encode("abc", &mut wire).unwrap();
/// assert_eq!(&wire[..], b"\x03\x00abc");
/// assert_eq!(ByteOrder::default(), ByteOrder::BigEndian);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ByteOrder {
    /// Most significant byte first ("network order"); the default.
    #[default]
    BigEndian,
    /// Least significant byte first.
    LittleEndian,
}

/// Splits a byte stream into frames announced by a length field, and prefixes outgoing
/// messages with one.
///
/// The wire layout of a frame is
///
/// ```text
/// +---------------------+--------------+------------------------------+
/// | length_field_offset | length field | length field + adjustment    |
/// |  bytes (any header) | (1/2/4/8 B)  |  bytes (rest of the frame)   |
/// +---------------------+--------------+------------------------------+
/// ```
///
/// **Decoding** follows netty's `LengthFieldBasedFrameDecoder`: the value of the length field
/// plus [`length_adjustment`](LengthFieldCodecBuilder::length_adjustment) is the number of
/// bytes that follow the length field. The decoder hands out the whole frame minus its first
/// [`initial_bytes_to_strip`](LengthFieldCodecBuilder::initial_bytes_to_strip) bytes: a
/// zero-copy [`Bytes`] view of the read buffer, or a copy if it is small (see
/// [`split_message`](crate::split_message)). As soon as the header is buffered it reports the
/// whole frame length with [`Decoded::NeedMore`]`(Some(len))`, or fails with
/// [`CodecErrorKind::FrameTooLong`](crate::CodecErrorKind::FrameTooLong) if that length
/// exceeds [`max_frame_length`](LengthFieldCodecBuilder::max_frame_length), before the body
/// arrives.
///
/// **Limits in a session.** A getty session decodes with
/// [`decode_limited`](Decoder::decode_limited) and its `max_message_len`, which limits the
/// message the handler gets: the frame *minus* the stripped bytes (with the defaults, the
/// payload without its 4-byte length). That limit is checked first and reported as the
/// session's. The built-in 8 MiB `max_frame_length` is a safety limit for the codec used on
/// its own ([`decode`](Decoder::decode)) and does not apply in a session, so the session's
/// limit is the only one there; a `max_frame_length` set explicitly on the builder applies
/// everywhere, after the session's.
///
/// **Encoding** takes the frame *without* its length field: the first `length_field_offset`
/// bytes of the item are written as they are, then the length field, then the rest of the
/// item. The length field is given the value that makes the decoder read back exactly the rest
/// of the item (`item.len() - length_field_offset - length_adjustment`). So with the default
/// strip (`length_field_offset + length_field_len`) decoding returns the item minus its first
/// `length_field_offset` bytes; with `length_field_offset == 0` that is the item itself.
/// `max_frame_length` only limits decoding: a sender may well send larger frames than it
/// accepts.
///
/// [`Default`] is a 4-byte big-endian length at offset 0, no adjustment, the length field
/// stripped, and frames of at most 8 MiB.
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::{Decoded, Decoder, Encoder, LengthFieldCodec};
///
/// let mut codec = LengthFieldCodec::default();
/// let mut wire = BytesMut::new();
/// codec.encode("ping", &mut wire).unwrap();
/// assert_eq!(&wire[..], b"\x00\x00\x00\x04ping");
///
/// let mut partial = wire.split_to(6);
/// assert_eq!(codec.decode(&mut partial).unwrap(), Decoded::NeedMore(Some(8)));
/// partial.unsplit(wire);
/// assert_eq!(codec.decode(&mut partial).unwrap(), Decoded::Frame("ping".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LengthFieldCodec {
    // Stored compactly (every session holds a codec; netty uses `int` for these too); the
    // builder checks the ranges and the getters widen them back.
    length_field_len: u8,
    byte_order: ByteOrder,
    length_field_offset: u32,
    length_adjustment: i32,
    initial_bytes_to_strip: u32,
    /// [`NO_MAX_SET`] for the built-in limit.
    max_frame_length: u32,
}

impl Default for LengthFieldCodec {
    /// A 4-byte big-endian length prefix that is stripped from decoded frames; frames of at
    /// most 8 MiB.
    ///
    /// ```
    /// use getty_codec::LengthFieldCodec;
    /// let codec = LengthFieldCodec::default();
    /// assert_eq!(codec, LengthFieldCodec::builder().build().unwrap());
    /// assert_eq!(codec.initial_bytes_to_strip(), 4);
    /// ```
    fn default() -> Self {
        LengthFieldCodec {
            length_field_len: DEFAULT_LENGTH_FIELD_LEN as u8,
            byte_order: ByteOrder::BigEndian,
            length_field_offset: 0,
            length_adjustment: 0,
            initial_bytes_to_strip: DEFAULT_LENGTH_FIELD_LEN as u32,
            max_frame_length: NO_MAX_SET,
        }
    }
}

impl LengthFieldCodec {
    /// Starts configuring a codec; the builder starts from the [`Default`] settings.
    ///
    /// ```
    /// use getty_codec::LengthFieldCodec;
    /// let codec = LengthFieldCodec::builder().length_field_len(2).build().unwrap();
    /// assert_eq!(codec.length_field_len(), 2);
    /// assert_eq!(codec.initial_bytes_to_strip(), 2);
    /// ```
    pub fn builder() -> LengthFieldCodecBuilder {
        LengthFieldCodecBuilder::default()
    }

    /// Width of the length field in bytes: 1, 2, 4 or 8.
    ///
    /// ```
    /// assert_eq!(getty_codec::LengthFieldCodec::default().length_field_len(), 4);
    /// ```
    pub fn length_field_len(&self) -> usize {
        self.length_field_len as usize
    }

    /// Byte order of the length field.
    ///
    /// ```
    /// use getty_codec::{ByteOrder, LengthFieldCodec};
    /// assert_eq!(LengthFieldCodec::default().byte_order(), ByteOrder::BigEndian);
    /// ```
    pub fn byte_order(&self) -> ByteOrder {
        self.byte_order
    }

    /// Number of bytes in front of the length field.
    ///
    /// ```
    /// assert_eq!(getty_codec::LengthFieldCodec::default().length_field_offset(), 0);
    /// ```
    pub fn length_field_offset(&self) -> usize {
        self.length_field_offset as usize
    }

    /// Added to the length field's value to get the number of bytes after the length field.
    ///
    /// ```
    /// assert_eq!(getty_codec::LengthFieldCodec::default().length_adjustment(), 0);
    /// ```
    pub fn length_adjustment(&self) -> isize {
        self.length_adjustment as isize
    }

    /// Number of bytes removed from the front of each decoded frame.
    ///
    /// ```
    /// assert_eq!(getty_codec::LengthFieldCodec::default().initial_bytes_to_strip(), 4);
    /// ```
    pub fn initial_bytes_to_strip(&self) -> usize {
        self.initial_bytes_to_strip as usize
    }

    /// Largest whole frame (header included) the decoder accepts: the value set on the
    /// builder, or the built-in 8 MiB, which only [`decode`](Decoder::decode) applies (see
    /// [`LengthFieldCodec`] on limits in a session).
    ///
    /// ```
    /// assert_eq!(getty_codec::LengthFieldCodec::default().max_frame_length(), 8 << 20);
    /// ```
    pub fn max_frame_length(&self) -> usize {
        self.explicit_max_frame_length()
            .unwrap_or(DEFAULT_MAX_FRAME_LENGTH)
    }

    /// The `max_frame_length` set on the builder, if one was.
    fn explicit_max_frame_length(&self) -> Option<usize> {
        (self.max_frame_length != NO_MAX_SET).then_some(self.max_frame_length as usize)
    }

    /// Whether this is the default layout: a 4-byte big-endian length of what follows it,
    /// first in the frame, stripped on decode. Nearly every user has it, and the hot paths
    /// take it without the general arithmetic (offsets, adjustment, any field width).
    #[inline]
    fn is_plain_u32(&self) -> bool {
        self.length_field_len == 4
            && self.length_field_offset == 0
            && self.length_adjustment == 0
            && self.initial_bytes_to_strip == 4
            && self.byte_order == ByteOrder::BigEndian
    }

    /// Length of the header up to and including the length field. The builder guarantees
    /// this does not overflow and is at most `max_frame_length`.
    #[inline]
    fn header_len(&self) -> usize {
        self.length_field_offset() + self.length_field_len()
    }

    /// Reads the raw length field from a buffer that holds at least the whole header.
    fn read_length_field(&self, header: &[u8]) -> u64 {
        let mut field = &header[self.length_field_offset()..self.header_len()];
        match self.byte_order {
            ByteOrder::BigEndian => field.get_uint(self.length_field_len()),
            ByteOrder::LittleEndian => field.get_uint_le(self.length_field_len()),
        }
    }

    /// Turns a length field value into the whole frame length, rejecting frames that are
    /// malformed or too long: a message (the frame minus the stripped bytes) over
    /// `max_message_len`, if given, then a frame over `max_frame_length` (the built-in one
    /// only without `max_message_len`). Runs on the header alone so bad frames fail before
    /// their body is buffered.
    fn frame_len_for(
        &self,
        field_value: u64,
        max_message_len: Option<usize>,
    ) -> Result<usize, CodecError> {
        // i128 holds any u64 plus any isize plus any usize without overflow.
        let bytes_after_field = i128::from(field_value) + self.length_adjustment() as i128;
        if bytes_after_field < 0 {
            return Err(CodecError::malformed(format!(
                "length field {field_value} with adjustment {} gives a negative length",
                self.length_adjustment()
            )));
        }
        let frame_len = bytes_after_field + self.header_len() as i128;
        let max_frame_length = match max_message_len {
            Some(max) => {
                let message_len = frame_len - self.initial_bytes_to_strip() as i128;
                if message_len > max as i128 {
                    // A length beyond usize::MAX (only possible with 8-byte fields) is
                    // reported as usize::MAX.
                    let reported_len = usize::try_from(message_len).unwrap_or(usize::MAX);
                    return Err(CodecError::message_too_long(reported_len, max));
                }
                self.explicit_max_frame_length()
            }
            None => Some(self.max_frame_length()),
        };
        if let Some(max_frame_length) = max_frame_length.filter(|&m| frame_len > m as i128) {
            // A length beyond usize::MAX (only possible with 8-byte fields) is reported as
            // usize::MAX: the kind is what matters, and such a frame is garbage anyway.
            let reported_len = usize::try_from(frame_len).unwrap_or(usize::MAX);
            return Err(CodecError::frame_too_long(reported_len, max_frame_length));
        }
        // In range: the frame is no longer than a limit, or than the message plus the
        // stripped bytes, both of which fit a usize.
        let Ok(frame_len) = usize::try_from(frame_len) else {
            return Err(CodecError::frame_too_long(usize::MAX, usize::MAX));
        };
        if frame_len < self.initial_bytes_to_strip() {
            return Err(CodecError::malformed(format!(
                "frame of {frame_len} bytes is shorter than the {} bytes to strip",
                self.initial_bytes_to_strip()
            )));
        }
        Ok(frame_len)
    }

    /// Largest value the length field can hold.
    fn max_field_value(&self) -> u64 {
        u64::MAX >> (64 - 8 * self.length_field_len())
    }

    /// The length field value that makes the decoder read back `frame` (which excludes the
    /// length field) exactly.
    fn field_value_for(&self, frame: &[u8]) -> Result<u64, CodecError> {
        let Some(bytes_after_field) = frame.len().checked_sub(self.length_field_offset()) else {
            return Err(CodecError::unencodable(format!(
                "{} bytes are fewer than the {} header bytes that go before the length field",
                frame.len(),
                self.length_field_offset()
            )));
        };
        let field_value = bytes_after_field as i128 - self.length_adjustment() as i128;
        if field_value < 0 {
            return Err(CodecError::unencodable(format!(
                "{bytes_after_field} bytes after the length field would need a negative length \
                 with adjustment {}",
                self.length_adjustment()
            )));
        }
        u64::try_from(field_value)
            .ok()
            .filter(|&value| value <= self.max_field_value())
            .ok_or_else(|| {
                CodecError::unencodable(format!(
                    "length {field_value} does not fit a {}-byte length field",
                    self.length_field_len()
                ))
            })
    }

    fn put_length_field(&self, field_value: u64, dst: &mut BytesMut) {
        match self.byte_order {
            ByteOrder::BigEndian => dst.put_uint(field_value, self.length_field_len()),
            ByteOrder::LittleEndian => dst.put_uint_le(field_value, self.length_field_len()),
        }
    }

    /// Writes the bytes of a large `frame` up to its length field, and the field, and
    /// returns the rest of it to follow unchanged (see [`Encoder::encode_split`]); copies a
    /// small one whole.
    #[inline]
    fn encode_frame_split(
        &self,
        frame: Bytes,
        dst: &mut BytesMut,
    ) -> Result<Option<Bytes>, CodecError> {
        if frame.len() < SPLIT_FROM {
            return self.encode_frame(&frame, dst).map(|()| None);
        }
        let field_value = self.field_value_for(&frame)?;
        let offset = self.length_field_offset();
        dst.reserve(offset + self.length_field_len());
        dst.put_slice(&frame[..offset]);
        self.put_length_field(field_value, dst);
        Ok(Some(frame.slice(offset..)))
    }

    /// Writes `frame` with the length field inserted at `length_field_offset`.
    #[inline]
    fn encode_frame(&self, frame: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        if self.is_plain_u32() {
            if let Ok(len) = u32::try_from(frame.len()) {
                dst.reserve(4 + frame.len());
                dst.put_u32(len);
                dst.put_slice(frame);
                return Ok(());
            }
        }
        // Validate before touching dst so a failed encode leaves it as it was.
        let field_value = self.field_value_for(frame)?;
        let (before_field, after_field) = frame.split_at(self.length_field_offset());
        dst.reserve(frame.len() + self.length_field_len());
        dst.put_slice(before_field);
        self.put_length_field(field_value, dst);
        dst.put_slice(after_field);
        Ok(())
    }
}

impl Decoder for LengthFieldCodec {
    type Item = Bytes;

    /// Decodes one frame; see [`LengthFieldCodec`] for the layout.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{CodecErrorKind, Decoded, Decoder, LengthFieldCodec};
    ///
    /// let mut codec = LengthFieldCodec::builder().max_frame_length(16).build().unwrap();
    /// let mut buf = BytesMut::from(&b"\x00\x00"[..]);
    /// assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::NeedMore(None));
    /// buf.extend_from_slice(b"\x00\x0c");
    /// assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::NeedMore(Some(16)));
    ///
    /// // 4 + 13 bytes exceed the maximum of 16: refused from the header alone.
    /// let mut too_long = BytesMut::from(&b"\x00\x00\x00\x0d"[..]);
    /// let err = codec.decode(&mut too_long).unwrap_err();
    /// assert_eq!(err.kind(), CodecErrorKind::FrameTooLong);
    /// ```
    fn decode(&mut self, src: &mut BytesMut) -> Result<Decoded<Bytes>, CodecError> {
        self.decode_frame(src, None)
    }

    /// Decodes one frame whose message (the frame minus the stripped bytes, the payload with
    /// the defaults) is at most `max_message_len` bytes, refusing a longer one from the
    /// header alone. Only an explicitly set `max_frame_length` applies besides; see
    /// [`LengthFieldCodec`] on limits in a session.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{CodecError, Decoder, LengthFieldCodec};
    ///
    /// // 0xFFFFFFFF declared: refused against the caller's limit, not the built-in 8 MiB.
    /// let mut buf = BytesMut::from(&b"\xff\xff\xff\xff"[..]);
    /// let err = LengthFieldCodec::default().decode_limited(&mut buf, 1 << 20).unwrap_err();
    /// assert_eq!(err, CodecError::message_too_long(0xFFFF_FFFF, 1 << 20));
    /// ```
    #[inline]
    fn decode_limited(
        &mut self,
        src: &mut BytesMut,
        max_message_len: usize,
    ) -> Result<Decoded<Bytes>, CodecError> {
        self.decode_frame(src, Some(max_message_len))
    }
}

impl LengthFieldCodec {
    #[inline]
    fn decode_frame(
        &mut self,
        src: &mut BytesMut,
        max_message_len: Option<usize>,
    ) -> Result<Decoded<Bytes>, CodecError> {
        if src.len() < self.header_len() {
            return Ok(Decoded::NeedMore(None));
        }
        let frame_len = match self.plain_frame_len(src, max_message_len) {
            Some(checked) => checked?,
            None => self.frame_len_for(self.read_length_field(src), max_message_len)?,
        };
        if src.len() < frame_len {
            return Ok(Decoded::NeedMore(Some(frame_len)));
        }
        // frame_len >= header_len >= 1, so a frame always consumes input.
        let strip = self.initial_bytes_to_strip();
        Ok(Decoded::Frame(split_message_after(
            src,
            strip,
            frame_len - strip,
        )))
    }

    /// [`frame_len_for`](Self::frame_len_for) in the default layout, from a header that is
    /// all there: the same answers, without the general arithmetic. `None` for another
    /// layout, or a frame too long for `usize`.
    #[inline]
    fn plain_frame_len(
        &self,
        header: &[u8],
        max_message_len: Option<usize>,
    ) -> Option<Result<usize, CodecError>> {
        if !self.is_plain_u32() {
            return None;
        }
        let body = u32::from_be_bytes(header[..4].try_into().ok()?) as usize;
        let frame_len = body.checked_add(4)?;
        let max_frame_length = match max_message_len {
            Some(max) if body > max => return Some(Err(CodecError::message_too_long(body, max))),
            Some(_) => self.explicit_max_frame_length(),
            None => Some(self.max_frame_length()),
        };
        Some(match max_frame_length {
            Some(max) if frame_len > max => Err(CodecError::frame_too_long(frame_len, max)),
            _ => Ok(frame_len),
        })
    }
}

impl Encoder<&[u8]> for LengthFieldCodec {
    fn encoded_len_hint(item: &&[u8]) -> usize {
        item.len()
    }

    /// Writes the frame with its length field; see [`LengthFieldCodec`] for the rule.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{CodecErrorKind, Encoder, LengthFieldCodec};
    ///
    /// let mut codec = LengthFieldCodec::builder().length_field_len(1).build().unwrap();
    /// let mut wire = BytesMut::new();
    /// codec.encode(&b"hi"[..], &mut wire).unwrap();
    /// assert_eq!(&wire[..], b"\x02hi");
    ///
    /// let err = codec.encode(&[0u8; 300][..], &mut wire).unwrap_err();
    /// assert_eq!(err.kind(), CodecErrorKind::Unencodable);
    /// assert_eq!(&wire[..], b"\x02hi"); // untouched on error
    /// ```
    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_frame(item, dst)
    }
}

impl Encoder<Bytes> for LengthFieldCodec {
    fn encoded_len_hint(item: &Bytes) -> usize {
        item.len()
    }

    /// Same as the `&[u8]` encoder.
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use getty_codec::{Encoder, LengthFieldCodec};
    ///
    /// let mut wire = BytesMut::new();
    /// LengthFieldCodec::default().encode(Bytes::from_static(b"ab"), &mut wire).unwrap();
    /// assert_eq!(&wire[..], b"\x00\x00\x00\x02ab");
    /// ```
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_frame(&item, dst)
    }

    /// Leaves a large payload out of `dst`: see [`Encoder::encode_split`].
    #[inline]
    fn encode_split(
        &mut self,
        item: Bytes,
        dst: &mut BytesMut,
    ) -> Result<Option<Bytes>, CodecError> {
        self.encode_frame_split(item, dst)
    }
}

impl Encoder<&Bytes> for LengthFieldCodec {
    fn encoded_len_hint(item: &&Bytes) -> usize {
        item.len()
    }

    /// Same as the `&[u8]` encoder.
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use getty_codec::{Encoder, LengthFieldCodec};
    ///
    /// let msg = Bytes::from_static(b"ab");
    /// let mut wire = BytesMut::new();
    /// LengthFieldCodec::default().encode(&msg, &mut wire).unwrap();
    /// assert_eq!(&wire[..], b"\x00\x00\x00\x02ab");
    /// ```
    fn encode(&mut self, item: &Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_frame(item, dst)
    }
}

impl Encoder<Vec<u8>> for LengthFieldCodec {
    fn encoded_len_hint(item: &Vec<u8>) -> usize {
        item.len()
    }

    /// Same as the `&[u8]` encoder.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, LengthFieldCodec};
    ///
    /// let mut wire = BytesMut::new();
    /// LengthFieldCodec::default().encode(vec![7u8], &mut wire).unwrap();
    /// assert_eq!(&wire[..], b"\x00\x00\x00\x01\x07");
    /// ```
    fn encode(&mut self, item: Vec<u8>, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_frame(&item, dst)
    }

    /// Leaves a large payload out of `dst` (the vector becomes a `Bytes` without a copy):
    /// see [`Encoder::encode_split`].
    fn encode_split(
        &mut self,
        item: Vec<u8>,
        dst: &mut BytesMut,
    ) -> Result<Option<Bytes>, CodecError> {
        match keepable_vec(item) {
            Ok(item) => self.encode_frame_split(item, dst),
            Err(item) => self.encode_frame(&item, dst).map(|()| None),
        }
    }
}

impl Encoder<&str> for LengthFieldCodec {
    fn encoded_len_hint(item: &&str) -> usize {
        item.len()
    }

    /// Encodes the UTF-8 bytes of `item`, like the `&[u8]` encoder.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, LengthFieldCodec};
    ///
    /// let mut wire = BytesMut::new();
    /// LengthFieldCodec::default().encode("é", &mut wire).unwrap();
    /// assert_eq!(&wire[..], b"\x00\x00\x00\x02\xc3\xa9");
    /// ```
    fn encode(&mut self, item: &str, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_frame(item.as_bytes(), dst)
    }
}

impl Encoder<String> for LengthFieldCodec {
    fn encoded_len_hint(item: &String) -> usize {
        item.len()
    }

    /// Same as the `&str` encoder: every codec takes the same kinds of input.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, LengthFieldCodec};
    ///
    /// let mut wire = BytesMut::new();
    /// LengthFieldCodec::default().encode(format!("{}", 7), &mut wire).unwrap();
    /// assert_eq!(&wire[..], b"\x00\x00\x00\x017");
    /// ```
    fn encode(&mut self, item: String, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_frame(item.as_bytes(), dst)
    }
}
