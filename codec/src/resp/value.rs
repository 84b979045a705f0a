//! What a server sends: replies, and commands (for a client or a test).

use super::*;

/// A RESP2 value to send: a reply, or an element of one.
///
/// Arrays come two ways: [`Array`](RespValue::Array) for a slice of values, or
/// [`ArrayHeader`](RespValue::ArrayHeader) followed by that many values encoded one by one,
/// which builds no slice (an `MGET` reply straight from the store).
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::{Encoder, RespCodec, RespValue};
///
/// let mut codec = RespCodec::default();
/// let mut out = BytesMut::new();
/// codec.encode(RespValue::ArrayHeader(2), &mut out).unwrap();
/// codec.encode(RespValue::Bulk(b"a"), &mut out).unwrap();
/// codec.encode(RespValue::Null, &mut out).unwrap();
/// assert_eq!(&out[..], b"*2\r\n$1\r\na\r\n$-1\r\n");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespValue<'a> {
    /// `+OK\r\n`: a status line; may not contain `\r` or `\n`.
    Simple(&'a str),
    /// `-ERR message\r\n`: an error, its first word the error's class (`ERR`,
    /// `WRONGTYPE`); may not contain `\r` or `\n`.
    Error(&'a str),
    /// `:42\r\n`.
    Integer(i64),
    /// `$5\r\nhello\r\n`: any bytes.
    Bulk(&'a [u8]),
    /// `$-1\r\n`: the null bulk string (a missing key).
    Null,
    /// `*-1\r\n`: the null array.
    NullArray,
    /// `*N\r\n` and the values.
    Array(&'a [RespValue<'a>]),
    /// `*N\r\n` alone: the caller encodes the `N` values next.
    ArrayHeader(usize),
}

impl RespValue<'_> {
    /// Checks that the peer will read the value back as it is (no line break in a line).
    fn check(&self) -> Result<(), CodecError> {
        match self {
            RespValue::Simple(line) | RespValue::Error(line) => {
                match line.bytes().position(|b| b == b'\r' || b == b'\n') {
                    Some(at) => Err(CodecError::unencodable(format!(
                        "a simple string or error holds a line break at byte {at}"
                    ))),
                    None => Ok(()),
                }
            }
            RespValue::Array(values) => values.iter().try_for_each(RespValue::check),
            _ => Ok(()),
        }
    }

    fn put(&self, dst: &mut BytesMut) {
        match *self {
            RespValue::Simple(line) => put_line(dst, b'+', line.as_bytes()),
            RespValue::Error(line) => put_line(dst, b'-', line.as_bytes()),
            RespValue::Integer(n) => put_number(dst, b':', n),
            RespValue::Bulk(bytes) => put_bulk(dst, bytes),
            RespValue::Null => dst.put_slice(b"$-1\r\n"),
            RespValue::NullArray => dst.put_slice(b"*-1\r\n"),
            RespValue::Array(values) => {
                put_number(dst, b'*', values.len() as i64);
                values.iter().for_each(|value| value.put(dst));
            }
            RespValue::ArrayHeader(len) => put_number(dst, b'*', len as i64),
        }
    }
}

impl RespValue<'_> {
    /// The bytes [`put`](Self::put) appends, counted without encoding.
    fn encoded_len(&self) -> usize {
        match *self {
            RespValue::Simple(line) | RespValue::Error(line) => line.len() + 3,
            RespValue::Integer(n) => number_len(n),
            RespValue::Bulk(bytes) => bulk_len(bytes),
            RespValue::Null | RespValue::NullArray => 5,
            RespValue::Array(values) => {
                number_len(values.len() as i64)
                    + values.iter().map(Self::encoded_len).sum::<usize>()
            }
            RespValue::ArrayHeader(len) => number_len(len as i64),
        }
    }
}

/// The length of `<marker><n>\r\n`.
fn number_len(n: i64) -> usize {
    let digits = n
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |d| d as usize + 1);
    3 + digits + usize::from(n < 0)
}

/// The length of a bulk string's encoding.
fn bulk_len(bytes: &[u8]) -> usize {
    number_len(bytes.len() as i64) + bytes.len() + 2
}

fn put_line(dst: &mut BytesMut, marker: u8, line: &[u8]) {
    dst.reserve(line.len() + 3);
    dst.put_u8(marker);
    dst.put_slice(line);
    dst.put_slice(b"\r\n");
}

/// `<marker><n>\r\n`, formatted without allocating.
fn put_number(dst: &mut BytesMut, marker: u8, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    dst.reserve(24);
    dst.put_u8(marker);
    if n < 0 {
        dst.put_u8(b'-');
    }
    dst.put_slice(&digits[at..]);
    dst.put_slice(b"\r\n");
}

fn put_bulk(dst: &mut BytesMut, bytes: &[u8]) {
    dst.reserve(bytes.len() + 24);
    put_number(dst, b'$', bytes.len() as i64);
    dst.put_slice(bytes);
    dst.put_slice(b"\r\n");
}

pub(super) fn put_array_of_bulks(args: &[&[u8]], dst: &mut BytesMut) {
    put_number(dst, b'*', args.len() as i64);
    args.iter().for_each(|arg| put_bulk(dst, arg));
}

impl Encoder<RespValue<'_>> for RespCodec {
    /// Appends the value. Fails, leaving `dst` as it was, if a simple string or error holds
    /// a line break.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, RespCodec, RespValue};
    ///
    /// let mut out = BytesMut::new();
    /// let mut codec = RespCodec::default();
    /// codec.encode(RespValue::Integer(-7), &mut out).unwrap();
    /// codec.encode(RespValue::Error("ERR no"), &mut out).unwrap();
    /// assert!(codec.encode(RespValue::Simple("two\nlines"), &mut out).is_err());
    /// assert_eq!(&out[..], b":-7\r\n-ERR no\r\n");
    /// ```
    fn encode(&mut self, item: RespValue<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.check()?;
        item.put(dst);
        Ok(())
    }

    /// Exactly what `encode` appends (what a session handle counts for a write in flight).
    ///
    /// ```
    /// use getty_codec::{Encoder, RespCodec, RespValue};
    /// let bulk = RespValue::Bulk(&[0u8; 1000]);
    /// assert_eq!(<RespCodec as Encoder<RespValue>>::encoded_len_hint(&bulk), 1009); // $1000\r\n...\r\n
    /// ```
    fn encoded_len_hint(item: &RespValue<'_>) -> usize {
        item.encoded_len()
    }
}

impl Encoder<&RespValue<'_>> for RespCodec {
    /// Same as the by-value encoder.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, RespCodec, RespValue};
    ///
    /// let mut out = BytesMut::new();
    /// RespCodec::default().encode(&RespValue::Simple("OK"), &mut out).unwrap();
    /// assert_eq!(&out[..], b"+OK\r\n");
    /// ```
    fn encode(&mut self, item: &RespValue<'_>, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(*item, dst)
    }

    fn encoded_len_hint(item: &&RespValue<'_>) -> usize {
        item.encoded_len()
    }
}

impl Encoder<&RespCommand> for RespCodec {
    /// Appends the command as an array of bulk strings, as a client sends it (an inline
    /// command too).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::{Encoder, RespCodec, RespCommand};
    ///
    /// let mut out = BytesMut::new();
    /// let cmd = RespCommand::from_args([&b"GET"[..], b"k"]);
    /// RespCodec::default().encode(&cmd, &mut out).unwrap();
    /// assert_eq!(&out[..], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    /// ```
    fn encode(&mut self, item: &RespCommand, dst: &mut BytesMut) -> Result<(), CodecError> {
        if item.inline {
            put_number(dst, b'*', item.len() as i64);
            item.args().for_each(|arg| put_bulk(dst, arg));
        } else {
            dst.put_slice(&item.frame);
        }
        Ok(())
    }

    fn encoded_len_hint(item: &&RespCommand) -> usize {
        if item.inline {
            number_len(item.len() as i64) + item.args().map(bulk_len).sum::<usize>()
        } else {
            item.frame.len()
        }
    }
}

#[cfg(test)]
mod hint_tests {
    use super::*;

    /// The hint is exactly what `encode` appends, for every kind of value.
    #[test]
    fn the_length_hint_is_the_encoding_length() {
        let nested = [
            RespValue::Integer(-12),
            RespValue::Bulk(b"xyz"),
            RespValue::Null,
        ];
        let values = [
            RespValue::Simple("OK"),
            RespValue::Error("ERR no"),
            RespValue::Integer(0),
            RespValue::Integer(i64::MIN),
            RespValue::Integer(1_000_000),
            RespValue::Bulk(&[]),
            RespValue::Bulk(&[7; 12_345]),
            RespValue::Null,
            RespValue::NullArray,
            RespValue::Array(&nested),
            RespValue::ArrayHeader(10),
        ];
        for value in values {
            let mut out = BytesMut::new();
            RespCodec::default().encode(value, &mut out).unwrap();
            assert_eq!(
                <RespCodec as Encoder<RespValue>>::encoded_len_hint(&value),
                out.len(),
                "{value:?}"
            );
        }
        let cmd = RespCommand::from_args([&b"SET"[..], b"k", &[1; 300]]);
        let mut out = BytesMut::new();
        RespCodec::default().encode(&cmd, &mut out).unwrap();
        assert_eq!(
            <RespCodec as Encoder<&RespCommand>>::encoded_len_hint(&&cmd),
            out.len()
        );
    }
}
