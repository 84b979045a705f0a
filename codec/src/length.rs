//! Length-prefixed framing in the style of netty's `LengthFieldBasedFrameDecoder` and
//! `LengthFieldPrepender`.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{split_message, CodecError, Decoded, Decoder, Encoder};

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

    /// Length of the header up to and including the length field. The builder guarantees
    /// this does not overflow and is at most `max_frame_length`.
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

    /// Writes `frame` with the length field inserted at `length_field_offset`.
    fn encode_frame(&self, frame: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
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
    fn decode_limited(
        &mut self,
        src: &mut BytesMut,
        max_message_len: usize,
    ) -> Result<Decoded<Bytes>, CodecError> {
        self.decode_frame(src, Some(max_message_len))
    }
}

impl LengthFieldCodec {
    fn decode_frame(
        &mut self,
        src: &mut BytesMut,
        max_message_len: Option<usize>,
    ) -> Result<Decoded<Bytes>, CodecError> {
        if src.len() < self.header_len() {
            return Ok(Decoded::NeedMore(None));
        }
        let frame_len = self.frame_len_for(self.read_length_field(src), max_message_len)?;
        if src.len() < frame_len {
            return Ok(Decoded::NeedMore(Some(frame_len)));
        }
        // frame_len >= header_len >= 1, so a frame always consumes input.
        let strip = self.initial_bytes_to_strip();
        src.advance(strip);
        Ok(Decoded::Frame(split_message(src, frame_len - strip)))
    }
}

impl Encoder<&[u8]> for LengthFieldCodec {
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
}

impl Encoder<&Bytes> for LengthFieldCodec {
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
}

impl Encoder<&str> for LengthFieldCodec {
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

/// Configures a [`LengthFieldCodec`]; made by [`LengthFieldCodec::builder`].
///
/// Every setter consumes and returns the builder. [`build`](Self::build) checks the
/// combination and returns an [`io::Error`] of kind [`io::ErrorKind::InvalidInput`] for a
/// configuration that cannot work, rather than panicking.
///
/// ```
/// use getty_codec::{ByteOrder, LengthFieldCodec};
///
/// // A 2-byte magic number, then a little-endian u32 length of the payload.
/// let codec = LengthFieldCodec::builder()
///     .length_field_offset(2)
///     .byte_order(ByteOrder::LittleEndian)
///     .max_frame_length(1 << 20)
///     .build()
///     .unwrap();
/// assert_eq!(codec.initial_bytes_to_strip(), 6); // magic and length stripped
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a builder does nothing until build() is called"]
pub struct LengthFieldCodecBuilder {
    length_field_len: usize,
    byte_order: ByteOrder,
    length_field_offset: usize,
    length_adjustment: isize,
    /// `None` until set: then it defaults to the whole header, whatever offset and width
    /// end up configured.
    initial_bytes_to_strip: Option<usize>,
    /// `None` for the built-in limit.
    max_frame_length: Option<usize>,
}

impl Default for LengthFieldCodecBuilder {
    /// The settings of [`LengthFieldCodec::default`].
    ///
    /// ```
    /// use getty_codec::{LengthFieldCodec, LengthFieldCodecBuilder};
    /// let codec = LengthFieldCodecBuilder::default().build().unwrap();
    /// assert_eq!(codec, LengthFieldCodec::default());
    /// ```
    fn default() -> Self {
        LengthFieldCodecBuilder {
            length_field_len: DEFAULT_LENGTH_FIELD_LEN,
            byte_order: ByteOrder::BigEndian,
            length_field_offset: 0,
            length_adjustment: 0,
            initial_bytes_to_strip: None,
            max_frame_length: None,
        }
    }
}

impl LengthFieldCodecBuilder {
    /// Width of the length field in bytes; must be 1, 2, 4 or 8 (checked by
    /// [`build`](Self::build)). Default 4.
    ///
    /// ```
    /// use getty_codec::LengthFieldCodec;
    /// assert!(LengthFieldCodec::builder().length_field_len(8).build().is_ok());
    /// assert!(LengthFieldCodec::builder().length_field_len(3).build().is_err());
    /// ```
    pub fn length_field_len(mut self, bytes: usize) -> Self {
        self.length_field_len = bytes;
        self
    }

    /// Byte order of the length field. Default big endian.
    ///
    /// ```
    /// use getty_codec::{ByteOrder, LengthFieldCodec};
    /// let codec = LengthFieldCodec::builder().byte_order(ByteOrder::LittleEndian).build().unwrap();
    /// assert_eq!(codec.byte_order(), ByteOrder::LittleEndian);
    /// ```
    pub fn byte_order(mut self, order: ByteOrder) -> Self {
        self.byte_order = order;
        self
    }

    /// Number of bytes before the length field, for example a magic number or a message
    /// type. Default 0.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, LengthFieldCodec};
    ///
    /// let mut codec = LengthFieldCodec::builder()
    ///     .length_field_len(2)
    ///     .length_field_offset(1)
    ///     .build()
    ///     .unwrap();
    /// let mut buf = BytesMut::from(&b"\x07\x00\x03abc"[..]);
    /// assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::Frame("abc".into()));
    /// ```
    pub fn length_field_offset(mut self, bytes: usize) -> Self {
        self.length_field_offset = bytes;
        self
    }

    /// Added to the length field's value to get the number of bytes that follow the length
    /// field (netty's `lengthAdjustment`). Use `-(offset + width)` when the length counts the
    /// whole frame, or a positive value when extra header bytes after the length field are
    /// not counted. Default 0.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, LengthFieldCodec};
    ///
    /// // The 2-byte length counts itself.
    /// let mut codec = LengthFieldCodec::builder()
    ///     .length_field_len(2)
    ///     .length_adjustment(-2)
    ///     .build()
    ///     .unwrap();
    /// let mut buf = BytesMut::from(&b"\x00\x05abc"[..]);
    /// assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::Frame("abc".into()));
    /// ```
    ///
    /// Like netty's, it must fit 32 bits; [`build`](Self::build) refuses a larger one.
    pub fn length_adjustment(mut self, adjustment: isize) -> Self {
        self.length_adjustment = adjustment;
        self
    }

    /// Number of bytes removed from the front of each decoded frame. Defaults to
    /// `length_field_offset + length_field_len`, so the handler gets what follows the length
    /// field; 0 hands out the whole frame, header included.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, LengthFieldCodec};
    ///
    /// let mut codec = LengthFieldCodec::builder().initial_bytes_to_strip(0).build().unwrap();
    /// let mut buf = BytesMut::from(&b"\x00\x00\x00\x01x"[..]);
    /// assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::Frame("\0\0\0\x01x".into()));
    /// ```
    pub fn initial_bytes_to_strip(mut self, bytes: usize) -> Self {
        self.initial_bytes_to_strip = Some(bytes);
        self
    }

    /// Largest whole frame, header included, that the decoder accepts. Default 8 MiB;
    /// values above 4 GiB mean 4 GiB (like netty's, the limit is 32 bits wide).
    ///
    /// The built-in 8 MiB protects the codec used on its own; in a getty session the
    /// session's `max_message_len` limits messages instead. A value set here applies in a
    /// session too (after the session's limit), like netty's.
    ///
    /// ```
    /// use getty_codec::LengthFieldCodec;
    /// let codec = LengthFieldCodec::builder().max_frame_length(1024).build().unwrap();
    /// assert_eq!(codec.max_frame_length(), 1024);
    /// ```
    pub fn max_frame_length(mut self, bytes: usize) -> Self {
        self.max_frame_length = Some(bytes);
        self
    }

    /// Checks the configuration and makes the codec.
    ///
    /// # Errors
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] when the length field width is not 1, 2, 4
    /// or 8, when the offset, adjustment or strip count does not fit 32 bits, or when the
    /// header (`length_field_offset + length_field_len`) is longer than
    /// `max_frame_length`, since then no frame could ever be decoded.
    ///
    /// ```
    /// use std::io::ErrorKind;
    /// use getty_codec::LengthFieldCodec;
    ///
    /// let err = LengthFieldCodec::builder().max_frame_length(3).build().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidInput);
    /// ```
    pub fn build(self) -> io::Result<LengthFieldCodec> {
        if ![1, 2, 4, 8].contains(&self.length_field_len) {
            return Err(invalid_config(format!(
                "length_field_len must be 1, 2, 4 or 8, not {}",
                self.length_field_len
            )));
        }
        let max_frame_length = self.max_frame_length.unwrap_or(DEFAULT_MAX_FRAME_LENGTH);
        let header_len = self
            .length_field_offset
            .checked_add(self.length_field_len)
            .filter(|&len| len <= max_frame_length)
            .ok_or_else(|| {
                invalid_config(format!(
                    "a header of {} + {} bytes does not fit max_frame_length {}",
                    self.length_field_offset, self.length_field_len, max_frame_length
                ))
            })?;
        let strip = self.initial_bytes_to_strip.unwrap_or(header_len);
        let narrow = |value: usize, what: &str| {
            u32::try_from(value)
                .map_err(|_| invalid_config(format!("{what} {value} does not fit 32 bits")))
        };
        Ok(LengthFieldCodec {
            length_field_len: self.length_field_len as u8,
            byte_order: self.byte_order,
            length_field_offset: narrow(self.length_field_offset, "length_field_offset")?,
            length_adjustment: i32::try_from(self.length_adjustment).map_err(|_| {
                invalid_config(format!(
                    "length_adjustment {} does not fit 32 bits",
                    self.length_adjustment
                ))
            })?,
            initial_bytes_to_strip: narrow(strip, "initial_bytes_to_strip")?,
            // No frame that large fits in memory anyway; clamping keeps "no limit" working.
            // An explicit limit is at least the header, so never NO_MAX_SET.
            max_frame_length: self
                .max_frame_length
                .map_or(NO_MAX_SET, |max| max.min(u32::MAX as usize) as u32),
        })
    }
}

fn invalid_config(detail: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("invalid LengthFieldCodec configuration: {detail}"),
    )
}

impl Encoder<String> for LengthFieldCodec {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CodecErrorKind;

    fn codec(builder: LengthFieldCodecBuilder) -> LengthFieldCodec {
        builder.build().expect("valid test configuration")
    }

    fn decode_all(codec: &mut LengthFieldCodec, wire: &[u8]) -> Vec<Bytes> {
        let mut buf = BytesMut::from(wire);
        let mut frames = Vec::new();
        while let Decoded::Frame(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "leftover bytes: {buf:?}");
        frames
    }

    fn decode_one(codec: &mut LengthFieldCodec, wire: &[u8]) -> Bytes {
        let frames = decode_all(codec, wire);
        assert_eq!(frames.len(), 1);
        frames.into_iter().next().unwrap()
    }

    fn encode<I>(codec: &mut LengthFieldCodec, item: I) -> Vec<u8>
    where
        LengthFieldCodec: Encoder<I>,
    {
        let mut wire = BytesMut::new();
        codec.encode(item, &mut wire).unwrap();
        wire.to_vec()
    }

    fn decode_error(codec: &mut LengthFieldCodec, wire: &[u8]) -> CodecErrorKind {
        codec.decode(&mut BytesMut::from(wire)).unwrap_err().kind()
    }

    #[test]
    fn empty_buffer_needs_more_without_a_length() {
        let mut codec = LengthFieldCodec::default();
        assert_eq!(
            codec.decode(&mut BytesMut::new()).unwrap(),
            Decoded::NeedMore(None)
        );
    }

    #[test]
    fn default_round_trip_of_every_encoder_type() {
        let mut codec = LengthFieldCodec::default();
        let mut wire = encode(&mut codec, &b"one"[..]);
        wire.extend(encode(&mut codec, Bytes::from_static(b"two")));
        wire.extend(encode(&mut codec, &Bytes::from_static(b"three")));
        wire.extend(encode(&mut codec, b"four".to_vec()));
        wire.extend(encode(&mut codec, "five"));
        wire.extend(encode(&mut codec, ""));
        let frames = decode_all(&mut codec, &wire);
        assert_eq!(frames, ["one", "two", "three", "four", "five", ""]);
    }

    #[test]
    fn decoding_split_at_every_byte() {
        let mut codec = LengthFieldCodec::default();
        let mut wire = encode(&mut codec, "hello");
        wire.extend(encode(&mut codec, "world!"));
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for (fed, &byte) in wire.iter().enumerate() {
            buf.extend_from_slice(&[byte]);
            match codec.decode(&mut buf).unwrap() {
                Decoded::Frame(frame) => frames.push(frame),
                Decoded::NeedMore(None) => assert!(buf.len() < 4, "header complete at {fed}"),
                Decoded::NeedMore(Some(frame_len)) => assert!(frame_len > buf.len()),
            }
        }
        assert_eq!(frames, ["hello", "world!"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_large_frame_is_a_view_of_the_read_buffer_a_small_one_a_copy() {
        let mut codec = LengthFieldCodec::default();
        let payload = vec![b'p'; crate::COPY_BELOW];
        let mut buf = BytesMut::from(&frame_bytes(&payload)[..]);
        let payload_addr = buf[4..].as_ptr();
        let Decoded::Frame(frame) = codec.decode(&mut buf).unwrap() else {
            panic!("expected a frame");
        };
        assert_eq!(frame.as_ptr(), payload_addr);
        assert_eq!(frame, payload);

        let small = vec![b's'; crate::COPY_BELOW - 1];
        let mut buf = BytesMut::from(&frame_bytes(&small)[..]);
        let payload_addr = buf[4..].as_ptr();
        let Decoded::Frame(frame) = codec.decode(&mut buf).unwrap() else {
            panic!("expected a frame");
        };
        assert_ne!(frame.as_ptr(), payload_addr);
        assert_eq!(frame, small);
    }

    fn frame_bytes(payload: &[u8]) -> Vec<u8> {
        let mut wire = (payload.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(payload);
        wire
    }

    #[test]
    fn little_endian_round_trip() {
        let mut codec = codec(LengthFieldCodec::builder().byte_order(ByteOrder::LittleEndian));
        let wire = encode(&mut codec, "abc");
        assert_eq!(wire, b"\x03\x00\x00\x00abc");
        assert_eq!(decode_one(&mut codec, &wire), "abc");
    }

    #[test]
    fn one_byte_field_holds_up_to_255() {
        let mut codec = codec(LengthFieldCodec::builder().length_field_len(1));
        let payload = vec![b'x'; 255];
        let wire = encode(&mut codec, &payload[..]);
        assert_eq!(wire[0], 255);
        assert_eq!(decode_one(&mut codec, &wire), payload);
    }

    #[test]
    fn two_byte_field_in_both_orders() {
        for (order, header) in [
            (ByteOrder::BigEndian, [0x01, 0x02]),
            (ByteOrder::LittleEndian, [0x02, 0x01]),
        ] {
            let mut codec = codec(
                LengthFieldCodec::builder()
                    .length_field_len(2)
                    .byte_order(order),
            );
            let payload = vec![b'y'; 0x0102];
            let wire = encode(&mut codec, &payload[..]);
            assert_eq!(wire[..2], header);
            assert_eq!(decode_one(&mut codec, &wire), payload);
        }
    }

    #[test]
    fn eight_byte_field_in_both_orders() {
        for (order, header) in [
            (ByteOrder::BigEndian, *b"\0\0\0\0\0\0\0\x02"),
            (ByteOrder::LittleEndian, *b"\x02\0\0\0\0\0\0\0"),
        ] {
            let mut codec = codec(
                LengthFieldCodec::builder()
                    .length_field_len(8)
                    .byte_order(order),
            );
            let wire = encode(&mut codec, "hi");
            assert_eq!(wire[..8], header);
            assert_eq!(decode_one(&mut codec, &wire), "hi");
        }
    }

    #[test]
    fn payload_too_long_for_the_field_is_unencodable_and_leaves_dst_alone() {
        let cases = [(1, 256), (2, 65_536)];
        for (field_len, payload_len) in cases {
            let mut codec = codec(LengthFieldCodec::builder().length_field_len(field_len));
            let mut dst = BytesMut::from(&b"earlier"[..]);
            let err = codec
                .encode(&vec![0u8; payload_len][..], &mut dst)
                .unwrap_err();
            assert_eq!(err.kind(), CodecErrorKind::Unencodable);
            assert_eq!(&dst[..], b"earlier");
        }
    }

    #[test]
    fn adjustment_counts_against_the_field_width() {
        // With adjustment -1 a 1-byte field can only describe 254 bytes after it.
        let mut codec = codec(
            LengthFieldCodec::builder()
                .length_field_len(1)
                .length_adjustment(-1),
        );
        assert!(codec.encode(&[0u8; 254][..], &mut BytesMut::new()).is_ok());
        let err = codec
            .encode(&[0u8; 255][..], &mut BytesMut::new())
            .unwrap_err();
        assert_eq!(err.kind(), CodecErrorKind::Unencodable);
    }

    #[test]
    fn positive_adjustment_needs_that_many_bytes_to_encode() {
        let mut codec = codec(LengthFieldCodec::builder().length_adjustment(2));
        let err = codec.encode("x", &mut BytesMut::new()).unwrap_err();
        assert_eq!(err.kind(), CodecErrorKind::Unencodable);
        let wire = encode(&mut codec, "xyz");
        assert_eq!(wire, b"\x00\x00\x00\x01xyz");
        assert_eq!(decode_one(&mut codec, &wire), "xyz");
    }

    #[test]
    fn offset_header_is_written_before_the_length_field() {
        let mut codec = codec(
            LengthFieldCodec::builder()
                .length_field_len(2)
                .length_field_offset(2),
        );
        let wire = encode(&mut codec, "\u{1}\u{2}payload");
        assert_eq!(wire, b"\x01\x02\x00\x07payload");
        assert_eq!(decode_one(&mut codec, &wire), "payload");

        let err = codec.encode("\u{1}", &mut BytesMut::new()).unwrap_err();
        assert_eq!(err.kind(), CodecErrorKind::Unencodable);
    }

    #[test]
    fn oversize_frame_is_refused_from_the_header_alone() {
        let mut codec = codec(LengthFieldCodec::builder().max_frame_length(104));
        // 4 + 100 = 104 is allowed: the decoder asks for the whole frame.
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x64"[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Decoded::NeedMore(Some(104))
        );
        // 4 + 101 is not, and fails before any of the body arrived.
        let err = codec
            .decode(&mut BytesMut::from(&b"\x00\x00\x00\x65"[..]))
            .unwrap_err();
        assert_eq!(err, CodecError::frame_too_long(105, 104));
    }

    #[test]
    fn max_frame_length_counts_the_whole_frame_including_header() {
        let mut codec = codec(
            LengthFieldCodec::builder()
                .length_field_offset(2)
                .length_field_len(2)
                .max_frame_length(10),
        );
        assert_eq!(decode_one(&mut codec, b"hh\x00\x06123456"), "123456");
        assert_eq!(
            decode_error(&mut codec, b"hh\x00\x07"),
            CodecErrorKind::FrameTooLong
        );
    }

    #[test]
    fn huge_eight_byte_lengths_are_errors_not_panics() {
        let mut codec = codec(
            LengthFieldCodec::builder()
                .length_field_len(8)
                .max_frame_length(usize::MAX),
        );
        assert_eq!(
            decode_error(&mut codec, &[0xff; 8]),
            CodecErrorKind::FrameTooLong
        );
        let mut default_max = self::codec(LengthFieldCodec::builder().length_field_len(8));
        assert_eq!(
            decode_error(&mut default_max, &[0xff; 8]),
            CodecErrorKind::FrameTooLong
        );
    }

    #[test]
    fn length_that_goes_negative_after_adjustment_is_malformed() {
        let mut codec = codec(
            LengthFieldCodec::builder()
                .length_field_len(2)
                .length_adjustment(-2),
        );
        // A whole-frame length of 1 is shorter than the 2-byte header itself.
        assert_eq!(
            decode_error(&mut codec, b"\x00\x01"),
            CodecErrorKind::Malformed
        );
        // Exactly the header is a valid, empty frame.
        assert_eq!(decode_one(&mut codec, b"\x00\x02"), "");
    }

    #[test]
    fn frame_shorter_than_strip_is_malformed() {
        let mut codec = codec(
            LengthFieldCodec::builder()
                .length_field_len(1)
                .initial_bytes_to_strip(3),
        );
        assert_eq!(decode_error(&mut codec, b"\x01"), CodecErrorKind::Malformed);
        assert_eq!(decode_one(&mut codec, b"\x02ab"), "");
    }

    #[test]
    fn invalid_configurations_are_rejected_by_build() {
        let bad = [
            LengthFieldCodec::builder().length_field_len(0),
            LengthFieldCodec::builder().length_field_len(3),
            LengthFieldCodec::builder().length_field_len(16),
            LengthFieldCodec::builder().max_frame_length(3),
            LengthFieldCodec::builder().length_field_offset(usize::MAX),
            LengthFieldCodec::builder()
                .length_field_offset(10)
                .max_frame_length(13),
            // The codec stores these in 32 bits, as netty's `int`s.
            LengthFieldCodec::builder().length_adjustment(i32::MAX as isize + 1),
            LengthFieldCodec::builder().length_adjustment(i32::MIN as isize - 1),
            LengthFieldCodec::builder()
                .length_field_offset(u32::MAX as usize + 1)
                .max_frame_length(usize::MAX),
            LengthFieldCodec::builder().initial_bytes_to_strip(u32::MAX as usize + 1),
        ];
        for builder in bad {
            let err = builder.clone().build().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{builder:?}");
        }
    }

    // The netty javadoc examples of LengthFieldBasedFrameDecoder. netty's 3-byte length
    // fields become 2-byte ones here (only 1, 2, 4 and 8 are supported); the other
    // parameters are netty's. "HELLO, WORLD" is 12 (0x0C) bytes.

    #[test]
    fn netty_example_length_only_nothing_stripped() {
        let mut codec = codec(
            LengthFieldCodec::builder()
                .length_field_len(2)
                .initial_bytes_to_strip(0),
        );
        let wire = b"\x00\x0cHELLO, WORLD";
        assert_eq!(decode_one(&mut codec, wire), &wire[..]);
    }

    #[test]
    fn netty_example_length_stripped() {
        let mut codec = codec(
            LengthFieldCodec::builder()
                .length_field_len(2)
                .initial_bytes_to_strip(2),
        );
        assert_eq!(
            decode_one(&mut codec, b"\x00\x0cHELLO, WORLD"),
            "HELLO, WORLD"
        );
    }

    #[test]
    fn netty_example_length_counts_whole_frame() {
        let mut codec = codec(
            LengthFieldCodec::builder()
                .length_field_len(2)
                .length_adjustment(-2)
                .initial_bytes_to_strip(0),
        );
        let wire = b"\x00\x0eHELLO, WORLD";
        assert_eq!(decode_one(&mut codec, wire), &wire[..]);
        // Encoding the stripped-less frame body gives the same wire bytes back.
        assert_eq!(encode(&mut codec, "HELLO, WORLD"), wire);
    }

    #[test]
    fn netty_example_header_before_length() {
        let mut codec = codec(
            LengthFieldCodec::builder()
                .length_field_offset(2)
                .length_field_len(2)
                .initial_bytes_to_strip(0),
        );
        let wire = b"\xca\xfe\x00\x0cHELLO, WORLD";
        assert_eq!(decode_one(&mut codec, wire), &wire[..]);
        assert_eq!(encode(&mut codec, &b"\xca\xfeHELLO, WORLD"[..]), wire);
    }

    #[test]
    fn netty_example_header_after_length() {
        let mut codec = codec(
            LengthFieldCodec::builder()
                .length_field_len(2)
                .length_adjustment(2)
                .initial_bytes_to_strip(0),
        );
        let wire = b"\x00\x0c\xca\xfeHELLO, WORLD";
        assert_eq!(decode_one(&mut codec, wire), &wire[..]);
        assert_eq!(encode(&mut codec, &b"\xca\xfeHELLO, WORLD"[..]), wire);
    }

    #[test]
    fn netty_example_offset_one_strip_first_header_and_length() {
        let mut codec = codec(
            LengthFieldCodec::builder()
                .length_field_offset(1)
                .length_field_len(2)
                .length_adjustment(1)
                .initial_bytes_to_strip(3),
        );
        let wire = b"\xca\x00\x0c\xfeHELLO, WORLD";
        assert_eq!(decode_one(&mut codec, wire), &b"\xfeHELLO, WORLD"[..]);
        assert_eq!(encode(&mut codec, &b"\xca\xfeHELLO, WORLD"[..]), wire);
    }

    #[test]
    fn netty_example_offset_one_length_counts_whole_frame() {
        let mut codec = codec(
            LengthFieldCodec::builder()
                .length_field_offset(1)
                .length_field_len(2)
                .length_adjustment(-3)
                .initial_bytes_to_strip(3),
        );
        let wire = b"\xca\x00\x10\xfeHELLO, WORLD";
        assert_eq!(decode_one(&mut codec, wire), &b"\xfeHELLO, WORLD"[..]);
        assert_eq!(encode(&mut codec, &b"\xca\xfeHELLO, WORLD"[..]), wire);
    }

    #[test]
    fn need_more_reports_whole_frame_length_with_offset_and_adjustment() {
        let mut codec = codec(
            LengthFieldCodec::builder()
                .length_field_offset(1)
                .length_field_len(2)
                .length_adjustment(1),
        );
        let mut buf = BytesMut::from(&b"\xca\x00\x0c"[..]);
        // 3 header bytes + 12 + 1 adjustment.
        assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::NeedMore(Some(16)));
    }
}
