use super::*;
use crate::CodecErrorKind;

fn decode_all(codec: &mut LinesCodec, wire: &[u8]) -> Vec<Bytes> {
    let mut buf = BytesMut::from(wire);
    let mut lines = Vec::new();
    while let Decoded::Frame(line) = codec.decode(&mut buf).unwrap() {
        lines.push(line);
    }
    lines
}

fn decode_error(codec: &mut LinesCodec, wire: &[u8]) -> CodecError {
    codec.decode(&mut BytesMut::from(wire)).unwrap_err()
}

fn encode<I>(codec: &mut LinesCodec, item: I) -> Result<Vec<u8>, CodecErrorKind>
where
    LinesCodec: Encoder<I>,
{
    let mut dst = BytesMut::new();
    codec.encode(item, &mut dst).map_err(|err| err.kind())?;
    Ok(dst.to_vec())
}

#[test]
fn empty_buffer_needs_more() {
    let mut codec = LinesCodec::default();
    assert_eq!(
        codec.decode(&mut BytesMut::new()).unwrap(),
        Decoded::NeedMore(None)
    );
}

#[test]
fn decodes_lf_and_crlf_and_empty_lines() {
    let mut codec = LinesCodec::default();
    let lines = decode_all(&mut codec, b"one\ntwo\r\n\n\r\nthree");
    assert_eq!(lines, ["one", "two", "", ""]);
}

#[test]
fn only_a_trailing_cr_is_stripped() {
    let mut codec = LinesCodec::default();
    let lines = decode_all(&mut codec, b"a\rb\n\r\r\n");
    assert_eq!(lines, ["a\rb", "\r"]);
}

#[test]
fn leftover_partial_line_stays_in_the_buffer() {
    let mut codec = LinesCodec::default();
    let mut buf = BytesMut::from(&b"done\npart"[..]);
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Decoded::Frame("done".into())
    );
    assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::NeedMore(None));
    assert_eq!(&buf[..], b"part");
}

#[test]
fn decoding_split_at_every_byte() {
    let wire = b"alpha\r\nbeta\n\ngamma\r\n";
    let mut codec = LinesCodec::default();
    let mut buf = BytesMut::new();
    let mut lines = Vec::new();
    for &byte in wire {
        buf.extend_from_slice(&[byte]);
        while let Decoded::Frame(line) = codec.decode(&mut buf).unwrap() {
            lines.push(line);
        }
    }
    assert_eq!(lines, ["alpha", "beta", "", "gamma"]);
    assert!(buf.is_empty());
}

#[test]
fn scan_position_is_remembered_between_calls() {
    let mut codec = LinesCodec::default();
    let mut buf = BytesMut::from(&b"abc"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::NeedMore(None));
    assert_eq!(codec.scanned, 3);
    buf.extend_from_slice(b"de\nf");
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Decoded::Frame("abcde".into())
    );
    assert_eq!(codec.scanned, 0);
    assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::NeedMore(None));
    assert_eq!(codec.scanned, 1);
}

#[test]
fn a_buffer_that_shrank_behind_the_codec_is_rescanned_safely() {
    let mut codec = LinesCodec::default();
    let mut buf = BytesMut::from(&b"abcdef"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::NeedMore(None));
    let mut other = BytesMut::from(&b"x\n"[..]);
    // Not the intended use, but it must not panic; it may miss the terminator.
    let _ = codec.decode(&mut other);
}

#[test]
fn reset_makes_each_datagram_decode_as_with_a_fresh_codec() {
    // Issue 12, item 16: a datagram without a newline, then datagrams of their own.
    let mut codec = LinesCodec::default();
    let mut first = BytesMut::from(&[b'x'; 40][..]);
    assert_eq!(
        codec.decode_limited(&mut first, 1 << 20).unwrap(),
        Decoded::NeedMore(None)
    );
    for _ in 0..5 {
        codec.reset();
        let mut ping = BytesMut::from(&b"PING\n"[..]);
        assert_eq!(
            codec.decode_limited(&mut ping, 1 << 20).unwrap(),
            Decoded::Frame("PING".into())
        );
        assert!(ping.is_empty());
    }
    // Two lines in one datagram after a 3-byte one: the first line ends at its own `\n`,
    // not at one found past a stale scan position.
    let mut short = BytesMut::from(&b"abc"[..]);
    assert_eq!(codec.decode(&mut short).unwrap(), Decoded::NeedMore(None));
    codec.reset();
    let mut two = BytesMut::from(&b"a\nbc\n"[..]);
    assert_eq!(codec.decode(&mut two).unwrap(), Decoded::Frame("a".into()));
    assert_eq!(&two[..], b"bc\n");
}

#[test]
fn line_of_exactly_max_length_is_accepted_with_either_terminator() {
    let mut codec = LinesCodec::new(4);
    assert_eq!(decode_all(&mut codec, b"abcd\n"), ["abcd"]);
    assert_eq!(decode_all(&mut codec, b"abcd\r\n"), ["abcd"]);
}

#[test]
fn complete_line_longer_than_max_is_too_long() {
    let mut codec = LinesCodec::new(4);
    let err = decode_error(&mut codec, b"abcde\n");
    assert_eq!(err, CodecError::frame_too_long(5, 4));
}

#[test]
fn unterminated_line_is_too_long_as_soon_as_it_passes_max() {
    let mut codec = LinesCodec::new(4);
    let mut buf = BytesMut::from(&b"abcd"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::NeedMore(None));
    // A trailing \r may still be the start of \r\n.
    buf.extend_from_slice(b"\r");
    assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::NeedMore(None));
    buf.extend_from_slice(b"x");
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), CodecErrorKind::FrameTooLong);
}

#[test]
fn long_line_is_detected_without_scanning_the_whole_buffer() {
    let mut codec = LinesCodec::new(8);
    let mut wire = vec![b'x'; 1 << 20];
    wire.push(b'\n');
    let err = decode_error(&mut codec, &wire);
    assert_eq!(err.kind(), CodecErrorKind::FrameTooLong);
}

#[test]
fn zero_max_accepts_only_empty_lines() {
    let mut codec = LinesCodec::new(0);
    assert_eq!(decode_all(&mut codec, b"\n\r\n"), ["", ""]);
    assert_eq!(
        decode_error(&mut codec, b"a").kind(),
        CodecErrorKind::FrameTooLong
    );
}

#[test]
fn huge_max_does_not_overflow() {
    let mut codec = LinesCodec::new(usize::MAX);
    assert_eq!(decode_all(&mut codec, b"abc\n"), ["abc"]);
}

#[test]
fn encoders_append_the_configured_terminator() {
    let mut lf = LinesCodec::default();
    assert_eq!(encode(&mut lf, "a"), Ok(b"a\n".to_vec()));
    assert_eq!(encode(&mut lf, String::from("b")), Ok(b"b\n".to_vec()));
    assert_eq!(encode(&mut lf, b"c".to_vec()), Ok(b"c\n".to_vec()));
    assert_eq!(encode(&mut lf, &b"d"[..]), Ok(b"d\n".to_vec()));
    assert_eq!(
        encode(&mut lf, Bytes::from_static(b"e")),
        Ok(b"e\n".to_vec())
    );
    assert_eq!(
        encode(&mut lf, &Bytes::from_static(b"f")),
        Ok(b"f\n".to_vec())
    );
    let mut crlf = LinesCodec::default().line_ending(LineEnding::CrLf);
    assert_eq!(encode(&mut crlf, ""), Ok(b"\r\n".to_vec()));
}

#[test]
fn round_trip_with_both_terminators() {
    for ending in [LineEnding::Lf, LineEnding::CrLf] {
        let mut codec = LinesCodec::default().line_ending(ending);
        let mut wire = Vec::new();
        for line in ["first", "", "with\rinner cr", "last"] {
            wire.extend(encode(&mut codec, line).unwrap());
        }
        let lines = decode_all(&mut codec, &wire);
        assert_eq!(lines, ["first", "", "with\rinner cr", "last"]);
    }
}

#[test]
fn unencodable_lines_leave_dst_untouched() {
    let mut codec = LinesCodec::new(4);
    for bad in ["a\nb", "\n", "ab\r", "abcde"] {
        let mut dst = BytesMut::from(&b"kept"[..]);
        let err = codec.encode(bad, &mut dst).unwrap_err();
        assert_eq!(err.kind(), CodecErrorKind::Unencodable, "{bad:?}");
        assert_eq!(&dst[..], b"kept");
    }
    assert_eq!(encode(&mut codec, "abcd"), Ok(b"abcd\n".to_vec()));
}
