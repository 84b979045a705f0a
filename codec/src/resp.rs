//! RESP2, the Redis serialization protocol, from the server's side: commands in (arrays of
//! bulk strings, or inline commands), replies out.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{split_message, CodecError, Decoded, Decoder, Encoder};

mod command;
#[cfg(test)]
mod tests;
mod value;

pub use command::{RespArgs, RespCommand};
pub use value::RespValue;

/// Default [`RespCodec::max_frame_len`]: 512 MiB, Redis's own `proto-max-bulk-len`.
const DEFAULT_MAX_FRAME_LEN: usize = 512 * 1024 * 1024;

/// The longest inline command, as in Redis (`PROTO_INLINE_MAX_SIZE`).
const MAX_INLINE_LEN: usize = 64 * 1024;

/// Most arguments in one command (a multibulk length over it is refused). Redis before
/// 7.0 had this bound; 7.0 allows up to `i32::MAX`, but a command with more than a million
/// arguments is not one a server of this kind should have to take.
const MAX_ARGS: usize = 1024 * 1024;

/// The longest `*N` or `$N` header line, `\r\n` included: a sign, 20 digits and the marker
/// fit with room to spare; anything longer is not a number.
const MAX_HEADER_LEN: usize = 32;

/// The fewest bytes an argument takes on the wire: `$0\r\n\r\n`.
const MIN_ARG_LEN: usize = 6;

/// Decodes Redis commands (RESP2) and encodes replies, sans-IO like every codec here.
///
/// **Decoding** accepts what clients send: an array of bulk strings
/// (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what `redis-cli` and every client library write) or
/// an inline command (`GET k\r\n`, a line split on spaces and tabs, what `telnet` users
/// type; unlike Redis, quotes are not interpreted, so `SET k "a b"` is four words). Each
/// [`RespCommand`] is one frame of the input: its arguments are read from it on
/// demand ([`RespCommand::args`]), so a command costs no allocation beyond its frame (and a
/// small frame is copied into a shared slab, see [`split_message`]). Empty commands (`*0`,
/// `*-1`, blank lines) are skipped, as Redis does.
///
/// A decoder that is waiting for the last argument's body reports the whole frame's length
/// ([`Decoded::NeedMore`]`(Some(n))`), so a large `SET` value is read into a buffer of the
/// right size. It resumes where it stopped: a value arriving in many reads is parsed once.
///
/// **Limits.** In a session ([`Decoder::decode_limited`]) the frame (the message the
/// handler gets) may not exceed the session's `max_message_len`; it is checked at every
/// header, so a `$2147483647` bulk header fails at once, before anything is buffered or
/// allocated. Outside a session the codec's own [`max_frame_len`](Self::max_frame_len)
/// applies (512 MiB). An inline command is at most 64 KiB, as in Redis, and a command at
/// most 1 Mi arguments, as in Redis before 7.0.
///
/// **Encoding** takes a [`RespValue`] (a reply: simple string, error, integer, bulk string,
/// null, array) or a `&RespCommand` (sent as an array of bulk strings).
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::{Decoded, Decoder, Encoder, RespCodec, RespValue};
///
/// let mut codec = RespCodec::default();
/// let mut wire = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\nPING\r\n"[..]);
/// let Decoded::Frame(get) = codec.decode(&mut wire).unwrap() else { panic!() };
/// assert_eq!(get.args().collect::<Vec<_>>(), [&b"GET"[..], b"key"]);
/// let Decoded::Frame(ping) = codec.decode(&mut wire).unwrap() else { panic!() };
/// assert_eq!(ping.name(), Some(&b"PING"[..]));
///
/// let mut out = BytesMut::new();
/// codec.encode(RespValue::Bulk(b"value"), &mut out).unwrap();
/// codec.encode(RespValue::Simple("PONG"), &mut out).unwrap();
/// assert_eq!(&out[..], b"$5\r\nvalue\r\n+PONG\r\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespCodec {
    max_frame_len: usize,
    /// How far the command at the front of the buffer has been parsed.
    progress: Progress,
}

/// What the decoder knows of the command at the front of the buffer, so that the next call
/// goes on from there (bytes are only appended between calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Progress {
    /// Nothing parsed yet.
    #[default]
    Start,
    /// An array's header is parsed: `argc` arguments, the first `parsed` of them whole,
    /// ending at byte `end`.
    Array {
        argc: usize,
        parsed: usize,
        end: usize,
    },
    /// An inline command: its first `scanned` bytes hold no `\n`.
    Inline { scanned: usize },
}

impl Default for RespCodec {
    /// Frames of at most 512 MiB outside a session (Redis's largest bulk string).
    ///
    /// ```
    /// assert_eq!(getty_codec::RespCodec::default().max_frame_len(), 512 << 20);
    /// ```
    fn default() -> Self {
        RespCodec::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl RespCodec {
    /// A codec that refuses frames over `max_frame_len` bytes when used on its own
    /// ([`decode`](Decoder::decode)); in a session the smaller of it and the session's
    /// limit applies.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{CodecErrorKind, Decoder, RespCodec};
    ///
    /// let mut codec = RespCodec::new(64);
    /// let err = codec.decode(&mut BytesMut::from(&b"*1\r\n$100\r\n"[..])).unwrap_err();
    /// assert_eq!(err.kind(), CodecErrorKind::FrameTooLong);
    /// ```
    pub fn new(max_frame_len: usize) -> Self {
        RespCodec {
            max_frame_len,
            progress: Progress::Start,
        }
    }

    /// The largest frame (a whole command, headers included) accepted outside a session.
    ///
    /// ```
    /// assert_eq!(getty_codec::RespCodec::new(1024).max_frame_len(), 1024);
    /// ```
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The limit a decode applies: the session's if given and not above the codec's own.
    fn limit(&self, max_message_len: Option<usize>) -> Limit {
        match max_message_len {
            Some(max) if max <= self.max_frame_len => Limit { max, session: true },
            _ => Limit {
                max: self.max_frame_len,
                session: false,
            },
        }
    }

    fn decode_command(
        &mut self,
        src: &mut BytesMut,
        limit: Limit,
    ) -> Result<Decoded<RespCommand>, CodecError> {
        loop {
            let step = match self.progress {
                Progress::Start => match src.first() {
                    None => return Ok(Decoded::NeedMore(None)),
                    Some(b'*') => self.start_array(src, limit)?,
                    Some(_) => self.inline(src, 0, limit)?,
                },
                Progress::Array { argc, parsed, end } => {
                    self.array_args(src, argc, parsed, end, limit)?
                }
                Progress::Inline { scanned } => self.inline(src, scanned, limit)?,
            };
            match step {
                Step::Done(decoded) => return Ok(decoded),
                // An empty command was consumed; look at what follows.
                Step::Skipped => self.progress = Progress::Start,
            }
        }
    }

    /// Parses an array's `*N` header at the front of `src`.
    fn start_array(&mut self, src: &mut BytesMut, limit: Limit) -> Result<Step, CodecError> {
        let Some((argc, header_len)) = header(src, 0, b'*')? else {
            return Ok(Step::Done(Decoded::NeedMore(None)));
        };
        if argc <= 0 {
            src.advance(header_len);
            return Ok(Step::Skipped);
        }
        let argc = argc as usize;
        if argc > MAX_ARGS {
            return Err(CodecError::malformed(format!(
                "invalid multibulk length {argc} (at most {MAX_ARGS} arguments)"
            )));
        }
        // Refuse at once a count of arguments that cannot fit the limit.
        let least = header_len + argc * MIN_ARG_LEN;
        if least > limit.max {
            return Err(limit.exceeded(least));
        }
        self.array_args(src, argc, 0, header_len, limit)
    }

    /// Parses the arguments of an array from the `parsed`th, which starts at byte `end`.
    fn array_args(
        &mut self,
        src: &mut BytesMut,
        argc: usize,
        mut parsed: usize,
        mut end: usize,
        limit: Limit,
    ) -> Result<Step, CodecError> {
        while parsed < argc {
            let Some((len, header_len)) = header(src, end, b'$')? else {
                self.progress = Progress::Array { argc, parsed, end };
                return Ok(Step::Done(Decoded::NeedMore(None)));
            };
            let len = usize::try_from(len)
                .map_err(|_| CodecError::malformed(format!("invalid bulk length {len}")))?;
            // Checked on the header alone, so a huge length fails before its body is read.
            let arg_end = (end + header_len)
                .checked_add(len)
                .and_then(|n| n.checked_add(2))
                .filter(|&n| n <= limit.max)
                .ok_or_else(|| {
                    let frame_len = (end + header_len).saturating_add(len).saturating_add(2);
                    limit.exceeded(frame_len)
                })?;
            if src.len() < arg_end {
                self.progress = Progress::Array { argc, parsed, end };
                // Only the last argument's header tells the whole frame's length.
                let frame_len = (parsed + 1 == argc).then_some(arg_end);
                return Ok(Step::Done(Decoded::NeedMore(frame_len)));
            }
            if &src[arg_end - 2..arg_end] != b"\r\n" {
                return Err(CodecError::malformed("bulk string not followed by \\r\\n"));
            }
            parsed += 1;
            end = arg_end;
        }
        self.progress = Progress::Start;
        let frame = split_message(src, end);
        Ok(Step::Done(Decoded::Frame(RespCommand {
            frame,
            argc: argc as u32,
            inline: false,
        })))
    }

    /// Parses an inline command: a line of words. Its first `scanned` bytes hold no `\n`.
    fn inline(
        &mut self,
        src: &mut BytesMut,
        scanned: usize,
        limit: Limit,
    ) -> Result<Step, CodecError> {
        let max = limit.max.min(MAX_INLINE_LEN);
        // Never look past max + "\r\n": a line any longer is refused anyway.
        let search_end = src.len().min(max.saturating_add(2));
        let Some(newline) = memchr_newline(&src[scanned..search_end]).map(|i| scanned + i) else {
            if src.len() > max.saturating_add(1) {
                return Err(inline_too_long(limit, max, src.len()));
            }
            self.progress = Progress::Inline {
                scanned: search_end,
            };
            return Ok(Step::Done(Decoded::NeedMore(None)));
        };
        self.progress = Progress::Start;
        let line_len = newline - usize::from(newline > 0 && src[newline - 1] == b'\r');
        if line_len > max {
            return Err(inline_too_long(limit, max, line_len));
        }
        let argc = words(&src[..line_len]).count();
        if argc == 0 {
            src.advance(newline + 1);
            return Ok(Step::Skipped);
        }
        let frame = split_message(src, line_len);
        src.advance(newline + 1 - line_len);
        Ok(Step::Done(Decoded::Frame(RespCommand {
            frame,
            argc: argc as u32,
            inline: true,
        })))
    }
}

/// What one parsing step did.
enum Step {
    Done(Decoded<RespCommand>),
    /// Consumed an empty command.
    Skipped,
}

/// The largest frame a decode accepts, and whose limit it is.
#[derive(Clone, Copy)]
struct Limit {
    max: usize,
    /// The session's `max_message_len` (reported as such), not the codec's own maximum.
    session: bool,
}

impl Limit {
    fn exceeded(self, len: usize) -> CodecError {
        if self.session {
            CodecError::message_too_long(len, self.max)
        } else {
            CodecError::frame_too_long(len, self.max)
        }
    }
}

fn inline_too_long(limit: Limit, max: usize, len: usize) -> CodecError {
    if max < MAX_INLINE_LEN {
        limit.exceeded(len)
    } else {
        CodecError::malformed(format!(
            "too big inline request ({len} bytes; at most {MAX_INLINE_LEN})"
        ))
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// The words of an inline command: runs of bytes between spaces and tabs.
fn words(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b' ' || b == b'\t')
        .filter(|word| !word.is_empty())
}

/// Parses a `<marker><integer>\r\n` header at `at`: its value and length, or `None` if its
/// end is not buffered yet.
fn header(src: &[u8], at: usize, marker: u8) -> Result<Option<(i64, usize)>, CodecError> {
    let Some(&first) = src.get(at) else {
        return Ok(None);
    };
    if first != marker {
        return Err(CodecError::malformed(format!(
            "expected '{}', got '{}'",
            marker as char,
            first.escape_ascii()
        )));
    }
    let window = &src[at..src.len().min(at + MAX_HEADER_LEN)];
    let Some(newline) = memchr_newline(window) else {
        if window.len() == MAX_HEADER_LEN {
            return Err(bad_length(marker, &window[1..]));
        }
        return Ok(None);
    };
    if newline < 2 || window[newline - 1] != b'\r' {
        return Err(bad_length(marker, &window[1..newline]));
    }
    let digits = &window[1..newline - 1];
    let value = parse_int(digits).ok_or_else(|| bad_length(marker, digits))?;
    Ok(Some((value, newline + 1)))
}

fn bad_length(marker: u8, found: &[u8]) -> CodecError {
    let what = if marker == b'*' { "multibulk" } else { "bulk" };
    CodecError::malformed(format!("invalid {what} length '{}'", found.escape_ascii()))
}

/// A decimal integer, optionally negative, with no other characters, written as Redis
/// writes one: no leading zero, no `-0` (Redis refuses those lengths too).
fn parse_int(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    if digits[0] == b'0' && (negative || digits.len() > 1) {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

impl Decoder for RespCodec {
    type Item = RespCommand;

    /// Decodes one command, skipping empty ones; frames over
    /// [`max_frame_len`](RespCodec::max_frame_len) fail with
    /// [`FrameTooLong`](crate::CodecErrorKind::FrameTooLong) from their header.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, RespCodec};
    ///
    /// let mut codec = RespCodec::default();
    /// let mut buf = BytesMut::from(&b"\r\n*0\r\n*1\r\n$4\r\nPI"[..]);
    /// assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::NeedMore(Some(14)));
    /// buf.extend_from_slice(b"NG\r\n");
    /// let Decoded::Frame(ping) = codec.decode(&mut buf).unwrap() else { panic!() };
    /// assert_eq!(ping.name(), Some(&b"PING"[..]));
    /// assert!(buf.is_empty());
    /// ```
    fn decode(&mut self, src: &mut BytesMut) -> Result<Decoded<RespCommand>, CodecError> {
        self.decode_command(src, self.limit(None))
    }

    /// Decodes one command whose frame is at most `max_message_len` bytes, refusing a
    /// larger one with [`CodecError::message_too_long`] from the header that shows it.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoder, RespCodec};
    ///
    /// let mut codec = RespCodec::default();
    /// let mut huge = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2147483647\r\n"[..]);
    /// let err = codec.decode_limited(&mut huge, 1 << 20).unwrap_err();
    /// assert_eq!(err.limit_exceeded(), Some((2147483647 + 35, 1 << 20)));
    /// ```
    fn decode_limited(
        &mut self,
        src: &mut BytesMut,
        max_message_len: usize,
    ) -> Result<Decoded<RespCommand>, CodecError> {
        self.decode_command(src, self.limit(Some(max_message_len)))
    }

    /// Forgets how far the command at the front of the buffer was parsed.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Decoded, Decoder, RespCodec};
    ///
    /// let mut codec = RespCodec::default();
    /// assert!(matches!(codec.decode(&mut BytesMut::from(&b"*2\r\n"[..])), Ok(Decoded::NeedMore(_))));
    /// codec.reset();
    /// let mut next = BytesMut::from(&b"PING\r\n"[..]);
    /// assert!(matches!(codec.decode(&mut next), Ok(Decoded::Frame(_))));
    /// ```
    fn reset(&mut self) {
        self.progress = Progress::Start;
    }
}
