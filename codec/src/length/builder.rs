//! [`LengthFieldCodecBuilder`]: the checked way to configure a [`LengthFieldCodec`].

use std::io;

use super::{
    ByteOrder, LengthFieldCodec, DEFAULT_LENGTH_FIELD_LEN, DEFAULT_MAX_FRAME_LENGTH, NO_MAX_SET,
};

/// Configures a [`LengthFieldCodec`]; made by [`LengthFieldCodec::builder`].
///
/// Every setter consumes and returns the builder. [`build`](Self::build) checks the
/// combination and returns an [`io::Error`] of kind [`io::ErrorKind::InvalidInput`] for a
/// configuration that cannot work, rather than panicking.
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::{ByteOrder, Decoded, Decoder, Encoder, LengthFieldCodec};
///
/// // A 2-byte magic number, then a little-endian u32 length of the payload.
/// let mut codec = LengthFieldCodec::builder()
///     .length_field_offset(2)
///     .byte_order(ByteOrder::LittleEndian)
///     .max_frame_length(1 << 20)
///     .build()
///     .unwrap();
/// let mut wire = BytesMut::new();
/// codec.encode(&b"\xca\xfehello"[..], &mut wire).unwrap(); // magic + payload
/// assert_eq!(&wire[..], b"\xca\xfe\x05\x00\x00\x00hello");
/// // Magic and length are stripped (the default strip is the whole header).
/// assert_eq!(codec.decode(&mut wire).unwrap(), Decoded::Frame("hello".into()));
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
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, Encoder, LengthFieldCodec};
    ///
    /// let mut codec = LengthFieldCodec::builder().length_field_len(2).build().unwrap();
    /// let mut wire = BytesMut::new();
    /// codec.encode("hi", &mut wire).unwrap();
    /// assert_eq!(&wire[..], b"\x00\x02hi");
    /// assert_eq!(codec.decode(&mut wire).unwrap(), Decoded::Frame("hi".into()));
    /// assert!(LengthFieldCodec::builder().length_field_len(3).build().is_err());
    /// ```
    pub fn length_field_len(mut self, bytes: usize) -> Self {
        self.length_field_len = bytes;
        self
    }

    /// Byte order of the length field. Default big endian.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{ByteOrder, Encoder, LengthFieldCodec};
    ///
    /// let mut codec = LengthFieldCodec::builder().byte_order(ByteOrder::LittleEndian).build().unwrap();
    /// let mut wire = BytesMut::new();
    /// codec.encode("abc", &mut wire).unwrap();
    /// assert_eq!(&wire[..], b"\x03\x00\x00\x00abc");
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
    /// use bytes::BytesMut;
    /// use getty_codec::{CodecErrorKind, Decoder, LengthFieldCodec};
    ///
    /// let mut codec = LengthFieldCodec::builder().max_frame_length(1024).build().unwrap();
    /// // A header announcing 2000 bytes is refused before the body arrives.
    /// let mut wire = BytesMut::from(&2000u32.to_be_bytes()[..]);
    /// let err = codec.decode(&mut wire).unwrap_err();
    /// assert_eq!(err.kind(), CodecErrorKind::FrameTooLong);
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
