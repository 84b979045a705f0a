//! Newline-delimited framing.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{split_message, CodecError, Decoded, Decoder, Encoder};

/// Default [`LinesCodec`] maximum line length: 64 KiB.
const DEFAULT_MAX_LINE_LENGTH: usize = 64 * 1024;

/// The terminator [`LinesCodec`] appends to encoded lines. Decoding accepts both.
///
/// ```
/// use getty_codec::LineEnding;
/// assert_eq!(LineEnding::default(), LineEnding::Lf);
/// assert_eq!(LineEnding::CrLf.as_bytes(), b"\r\n");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LineEnding {
    /// `\n`, the default.
    #[default]
    Lf,
    /// `\r\n`, as in HTTP/1, SMTP and other text protocols.
    CrLf,
}

impl LineEnding {
    /// The terminator's bytes.
    ///
    /// ```
    /// assert_eq!(getty_codec::LineEnding::Lf.as_bytes(), b"\n");
    /// ```
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            LineEnding::Lf => b"\n",
            LineEnding::CrLf => b"\r\n",
        }
    }
}

/// Splits a byte stream into lines ended by `\n` or `\r\n`, and terminates outgoing lines.
///
/// Decoded lines are [`Bytes`] without their terminator: zero-copy views of the read buffer,
/// or copies if short (see [`split_message`](crate::split_message)).
/// Lines are bytes, not necessarily UTF-8. A line longer than the maximum (terminator not
/// counted) fails with [`CodecErrorKind::FrameTooLong`](crate::CodecErrorKind::FrameTooLong)
/// as soon as it is clear it will be too long, without waiting for its end.
///
/// In a getty session ([`decode_limited`](Decoder::decode_limited)) the session's
/// `max_message_len` limits a line too (terminator not counted, as here): a line over it is
/// refused against the session's limit; otherwise, the maximum line length (a property of
/// the line format, for encoding as for decoding) still applies, so the smaller of the two
/// wins.
///
/// The decoder remembers how far it has searched for a terminator, so a line arriving in many
/// small reads is scanned once in total. It therefore expects to be called with the same
/// buffer each time, with bytes only appended between calls (as stream transports do);
/// [`reset`](Decoder::reset) forgets the position, and transports that decode each unit of
/// input from a buffer of its own (a datagram, a WebSocket message) call it before each.
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::{Decoded, Decoder, Encoder, LineEnding, LinesCodec};
///
/// let mut codec = LinesCodec::new(1024).line_ending(LineEnding::CrLf);
/// let mut wire = BytesMut::new();
/// codec.encode("HELO example.org", &mut wire).unwrap();
/// assert_eq!(&wire[..], b"HELO example.org\r\n");
/// assert_eq!(codec.decode(&mut wire).unwrap(), Decoded::Frame("HELO example.org".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinesCodec {
    max_line_length: usize,
    line_ending: LineEnding,
    /// Bytes at the front of the buffer already searched for `\n` without finding one.
    scanned: usize,
}

impl Default for LinesCodec {
    /// Lines of at most 64 KiB, encoded with `\n`.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, Encoder, LinesCodec};
    ///
    /// let mut codec = LinesCodec::default();
    /// assert_eq!(codec.max_line_length(), 64 * 1024);
    /// let mut wire = BytesMut::new();
    /// codec.encode("one", &mut wire).unwrap();
    /// assert_eq!(&wire[..], b"one\n");
    /// wire.extend_from_slice(b"two\r\n"); // either terminator decodes
    /// assert_eq!(codec.decode(&mut wire).unwrap(), Decoded::Frame("one".into()));
    /// assert_eq!(codec.decode(&mut wire).unwrap(), Decoded::Frame("two".into()));
    /// ```
    fn default() -> Self {
        LinesCodec::new(DEFAULT_MAX_LINE_LENGTH)
    }
}

impl LinesCodec {
    /// A codec for lines of at most `max_line_length` bytes (terminator not counted),
    /// encoded with `\n`.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{CodecErrorKind, Decoder, LinesCodec};
    ///
    /// let mut codec = LinesCodec::new(3);
    /// let err = codec.decode(&mut BytesMut::from(&b"abcd"[..])).unwrap_err();
    /// assert_eq!(err.kind(), CodecErrorKind::FrameTooLong);
    /// ```
    pub fn new(max_line_length: usize) -> Self {
        LinesCodec {
            max_line_length,
            line_ending: LineEnding::Lf,
            scanned: 0,
        }
    }

    /// Sets the terminator the encoder appends; the decoder accepts both regardless.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, LineEnding, LinesCodec};
    ///
    /// let mut out = BytesMut::new();
    /// LinesCodec::default().line_ending(LineEnding::CrLf).encode("hi", &mut out).unwrap();
    /// assert_eq!(&out[..], b"hi\r\n");
    /// ```
    #[must_use]
    pub fn line_ending(mut self, line_ending: LineEnding) -> Self {
        self.line_ending = line_ending;
        self
    }

    /// Longest line accepted or produced, terminator not counted.
    ///
    /// ```
    /// assert_eq!(getty_codec::LinesCodec::new(80).max_line_length(), 80);
    /// ```
    pub fn max_line_length(&self) -> usize {
        self.max_line_length
    }

    /// The limit a decode applies: the session's `max_message_len` if given and not above
    /// the codec's own maximum, else the codec's own.
    fn limit(&self, max_message_len: Option<usize>) -> LineLimit {
        match max_message_len {
            Some(max) if max <= self.max_line_length => LineLimit { max, session: true },
            _ => LineLimit {
                max: self.max_line_length,
                session: false,
            },
        }
    }

    fn decode_line(
        &mut self,
        src: &mut BytesMut,
        limit: LineLimit,
    ) -> Result<Decoded<Bytes>, CodecError> {
        // Never look past max + "\r\n": a `\n` any later ends a line that is too long anyway.
        let search_end = src.len().min(limit.max.saturating_add(2));
        let search_start = self.scanned.min(search_end);
        match find_newline(&src[search_start..search_end]) {
            Some(offset) => {
                self.scanned = 0;
                // The line includes its `\n`, so a frame always consumes input.
                take_line(src, search_start + offset, limit).map(Decoded::Frame)
            }
            // A trailing `\r` may turn out to be half of a `\r\n`, so it is not counted yet.
            None if line_len_without_cr(src) > limit.max => {
                // Too long: report its length if its end is buffered past the search.
                let end = find_newline(&src[search_end..]).map_or(src.len(), |i| search_end + i);
                Err(limit.exceeded(line_len_without_cr(&src[..end])))
            }
            None => {
                self.scanned = search_end;
                Ok(Decoded::NeedMore(None))
            }
        }
    }

    /// Appends `line` and the terminator, after checking the peer will decode it back as
    /// exactly one line.
    fn encode_line(&self, line: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        self.check_encodable(line)?;
        let terminator = self.line_ending.as_bytes();
        dst.reserve(line.len() + terminator.len());
        dst.put_slice(line);
        dst.put_slice(terminator);
        Ok(())
    }

    fn check_encodable(&self, line: &[u8]) -> Result<(), CodecError> {
        if line.len() > self.max_line_length {
            return Err(CodecError::unencodable(format!(
                "line of {} bytes exceeds the maximum of {}",
                line.len(),
                self.max_line_length
            )));
        }
        if let Some(index) = find_newline(line) {
            return Err(CodecError::unencodable(format!(
                "line contains a newline at byte {index}, the peer would read two lines"
            )));
        }
        if line.last() == Some(&b'\r') {
            return Err(CodecError::unencodable(
                "line ends with \\r, the peer would take it as part of a \\r\\n terminator",
            ));
        }
        Ok(())
    }
}

/// The longest line a decode accepts, and whose limit it is.
#[derive(Clone, Copy)]
struct LineLimit {
    max: usize,
    /// The session's `max_message_len` (reported as such), not the codec's own maximum.
    session: bool,
}

impl LineLimit {
    fn exceeded(self, len: usize) -> CodecError {
        if self.session {
            CodecError::message_too_long(len, self.max)
        } else {
            CodecError::frame_too_long(len, self.max)
        }
    }
}

/// Removes the line ending at `newline_index` (and its terminator) from `src`.
fn take_line(
    src: &mut BytesMut,
    newline_index: usize,
    limit: LineLimit,
) -> Result<Bytes, CodecError> {
    let line_len = line_len_without_cr(&src[..newline_index]);
    if line_len > limit.max {
        return Err(limit.exceeded(line_len));
    }
    let line = split_message(src, line_len);
    src.advance(newline_index + 1 - line_len);
    Ok(line)
}

fn find_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&byte| byte == b'\n')
}

/// Length of a line whose `\n` has been removed, minus the `\r` of a `\r\n`.
fn line_len_without_cr(line: &[u8]) -> usize {
    line.len() - usize::from(line.last() == Some(&b'\r'))
}

impl Decoder for LinesCodec {
    type Item = Bytes;

    /// Decodes one line, without its `\n` or `\r\n`.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, LinesCodec};
    ///
    /// let mut codec = LinesCodec::default();
    /// let mut buf = BytesMut::from(&b"a\r\nb\n\nc"[..]);
    /// assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::Frame("a".into()));
    /// assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::Frame("b".into()));
    /// assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::Frame("".into()));
    /// assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::NeedMore(None));
    /// ```
    fn decode(&mut self, src: &mut BytesMut) -> Result<Decoded<Bytes>, CodecError> {
        self.decode_line(src, self.limit(None))
    }

    /// Decodes one line of at most `max_message_len` bytes (terminator not counted), or of
    /// at most the codec's maximum line length if that is smaller: a line over the first is
    /// refused with [`CodecError::message_too_long`], over the second with
    /// [`CodecError::frame_too_long`], as soon as it is clear, without waiting for its end.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{CodecError, Decoded, Decoder, LinesCodec};
    ///
    /// let mut codec = LinesCodec::new(100);
    /// let mut buf = BytesMut::from(&b"abcd\r\n"[..]);
    /// assert_eq!(codec.decode_limited(&mut buf, 4).unwrap(), Decoded::Frame("abcd".into()));
    /// let mut buf = BytesMut::from(&b"abcde"[..]);
    /// assert_eq!(codec.decode_limited(&mut buf, 4), Err(CodecError::message_too_long(5, 4)));
    /// ```
    fn decode_limited(
        &mut self,
        src: &mut BytesMut,
        max_message_len: usize,
    ) -> Result<Decoded<Bytes>, CodecError> {
        self.decode_line(src, self.limit(Some(max_message_len)))
    }

    /// Forgets how far the decoder has searched for a terminator, so the next decode scans
    /// its buffer from the start (a datagram after one that held no newline, say).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, LinesCodec};
    ///
    /// let mut codec = LinesCodec::default();
    /// let mut first = BytesMut::from(&b"0123456789"[..]);
    /// assert_eq!(codec.decode(&mut first).unwrap(), Decoded::NeedMore(None));
    /// codec.reset();
    /// let mut second = BytesMut::from(&b"a\nb\n"[..]);
    /// assert_eq!(codec.decode(&mut second).unwrap(), Decoded::Frame("a".into()));
    /// ```
    fn reset(&mut self) {
        self.scanned = 0;
    }
}

impl Encoder<&[u8]> for LinesCodec {
    fn encoded_len_hint(item: &&[u8]) -> usize {
        item.len()
    }

    /// Appends `item` and the terminator. Fails, leaving `dst` as it was, if `item` is longer
    /// than the maximum, contains `\n`, or ends with `\r` (which the peer would strip).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{CodecErrorKind, Encoder, LinesCodec};
    ///
    /// let mut codec = LinesCodec::default();
    /// let mut out = BytesMut::new();
    /// codec.encode(&b"ok"[..], &mut out).unwrap();
    /// let err = codec.encode(&b"two\nlines"[..], &mut out).unwrap_err();
    /// assert_eq!(err.kind(), CodecErrorKind::Unencodable);
    /// assert_eq!(&out[..], b"ok\n");
    /// ```
    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_line(item, dst)
    }
}

impl Encoder<Bytes> for LinesCodec {
    fn encoded_len_hint(item: &Bytes) -> usize {
        item.len()
    }

    /// Same as the `&[u8]` encoder.
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use getty_codec::{Encoder, LinesCodec};
    ///
    /// let mut out = BytesMut::new();
    /// LinesCodec::default().encode(Bytes::from_static(b"x"), &mut out).unwrap();
    /// assert_eq!(&out[..], b"x\n");
    /// ```
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_line(&item, dst)
    }
}

impl Encoder<&Bytes> for LinesCodec {
    fn encoded_len_hint(item: &&Bytes) -> usize {
        item.len()
    }

    /// Same as the `&[u8]` encoder.
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use getty_codec::{Encoder, LinesCodec};
    ///
    /// let line = Bytes::from_static(b"x");
    /// let mut out = BytesMut::new();
    /// LinesCodec::default().encode(&line, &mut out).unwrap();
    /// assert_eq!(&out[..], b"x\n");
    /// ```
    fn encode(&mut self, item: &Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_line(item, dst)
    }
}

impl Encoder<Vec<u8>> for LinesCodec {
    fn encoded_len_hint(item: &Vec<u8>) -> usize {
        item.len()
    }

    /// Same as the `&[u8]` encoder.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, LinesCodec};
    ///
    /// let mut out = BytesMut::new();
    /// LinesCodec::default().encode(b"x".to_vec(), &mut out).unwrap();
    /// assert_eq!(&out[..], b"x\n");
    /// ```
    fn encode(&mut self, item: Vec<u8>, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_line(&item, dst)
    }
}

impl Encoder<&str> for LinesCodec {
    fn encoded_len_hint(item: &&str) -> usize {
        item.len()
    }

    /// Same as the `&[u8]` encoder, on the UTF-8 bytes of `item`.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, LinesCodec};
    ///
    /// let mut out = BytesMut::new();
    /// LinesCodec::default().encode("héllo", &mut out).unwrap();
    /// assert_eq!(&out[..], "héllo\n".as_bytes());
    /// ```
    fn encode(&mut self, item: &str, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_line(item.as_bytes(), dst)
    }
}

impl Encoder<String> for LinesCodec {
    fn encoded_len_hint(item: &String) -> usize {
        item.len()
    }

    /// Same as the `&str` encoder.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, LinesCodec};
    ///
    /// let mut out = BytesMut::new();
    /// LinesCodec::default().encode(String::from("x"), &mut out).unwrap();
    /// assert_eq!(&out[..], b"x\n");
    /// ```
    fn encode(&mut self, item: String, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_line(item.as_bytes(), dst)
    }
}

#[cfg(test)]
mod tests;
