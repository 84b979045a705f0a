//! One meaning of a session's message limit across the codecs: the message the handler gets
//! (header or terminator stripped), checked by `Decoder::decode_limited`.

use bytes::{Bytes, BytesMut};
use getty_codec::{
    CodecError, CodecErrorKind, Decoded, Decoder, Encoder, LengthFieldCodec, LinesCodec, Message,
    MessageCodec, RawCodec,
};

const MAX: usize = 1000;

fn length_frame(payload_len: usize) -> BytesMut {
    let mut wire = BytesMut::new();
    LengthFieldCodec::default()
        .encode(&vec![7u8; payload_len][..], &mut wire)
        .unwrap();
    wire
}

#[test]
fn length_field_limit_counts_the_payload() {
    let mut codec = LengthFieldCodec::default();
    let mut wire = length_frame(MAX);
    let Decoded::Frame(message) = codec.decode_limited(&mut wire, MAX).unwrap() else {
        panic!("the largest message is accepted");
    };
    assert_eq!(message.len(), MAX);

    // One byte more is refused from the header alone, against the caller's limit.
    let mut header = length_frame(MAX + 1).split_to(4);
    assert_eq!(
        codec.decode_limited(&mut header, MAX),
        Err(CodecError::message_too_long(MAX + 1, MAX))
    );
    // A partial frame within the limit reports the whole frame's length (buffer sizing).
    let mut partial = length_frame(MAX).split_to(10);
    assert_eq!(
        codec.decode_limited(&mut partial, MAX).unwrap(),
        Decoded::NeedMore(Some(MAX + 4))
    );
}

#[test]
fn a_huge_header_is_reported_against_the_callers_limit() {
    let mut codec = LengthFieldCodec::default();
    let err = codec
        .decode_limited(&mut BytesMut::from(&b"\xff\xff\xff\xff"[..]), 1 << 20)
        .unwrap_err();
    assert_eq!(err.limit_exceeded(), Some((0xFFFF_FFFF, 1 << 20)));
    // On its own the codec keeps its built-in 8 MiB safety limit (whole frame).
    let err = codec
        .decode(&mut BytesMut::from(&b"\xff\xff\xff\xff"[..]))
        .unwrap_err();
    assert_eq!(err, CodecError::frame_too_long(0xFFFF_FFFF + 4, 8 << 20));
    assert_eq!(err.limit_exceeded(), None);

    let mut wide = LengthFieldCodec::builder()
        .length_field_len(8)
        .build()
        .unwrap();
    let err = wide
        .decode_limited(&mut BytesMut::from(&[0xff; 8][..]), MAX)
        .unwrap_err();
    assert_eq!(err.limit_exceeded(), Some((usize::MAX, MAX)));
}

#[test]
fn the_built_in_frame_limit_yields_to_a_larger_session_limit() {
    // 9 MiB declared: over the built-in 8 MiB, within a 16 MiB session limit.
    let header = ((9u32 << 20).to_be_bytes()).to_vec();
    let mut codec = LengthFieldCodec::default();
    assert_eq!(
        codec
            .decode_limited(&mut BytesMut::from(&header[..]), 16 << 20)
            .unwrap(),
        Decoded::NeedMore(Some((9 << 20) + 4))
    );
    assert_eq!(
        codec
            .decode(&mut BytesMut::from(&header[..]))
            .unwrap_err()
            .kind(),
        CodecErrorKind::FrameTooLong
    );
}

#[test]
fn an_explicit_frame_limit_applies_after_the_sessions() {
    let mut codec = LengthFieldCodec::builder()
        .max_frame_length(104)
        .build()
        .unwrap();
    // Within both: 100 + 4.
    let mut wire = length_frame(100);
    assert!(matches!(
        codec.decode_limited(&mut wire, MAX).unwrap(),
        Decoded::Frame(m) if m.len() == 100
    ));
    // Within the session's, over the codec's own: the codec's error.
    let mut header = length_frame(101).split_to(4);
    assert_eq!(
        codec.decode_limited(&mut header, MAX),
        Err(CodecError::frame_too_long(105, 104))
    );
    // Over both: the session's comes first.
    let mut header = length_frame(MAX + 1).split_to(4);
    assert_eq!(
        codec
            .decode_limited(&mut header, MAX)
            .unwrap_err()
            .limit_exceeded(),
        Some((MAX + 1, MAX))
    );
}

#[test]
fn lines_limit_counts_the_line_without_its_terminator() {
    for terminator in [&b"\n"[..], b"\r\n"] {
        let mut codec = LinesCodec::new(64 * 1024);
        let line = vec![b'a'; MAX];
        let mut wire = BytesMut::from(&[&line[..], terminator].concat()[..]);
        assert_eq!(
            codec.decode_limited(&mut wire, MAX).unwrap(),
            Decoded::Frame(Bytes::from(line.clone()))
        );
        let long = vec![b'b'; MAX + 1];
        let mut wire = BytesMut::from(&[&long[..], terminator].concat()[..]);
        assert_eq!(
            codec.decode_limited(&mut wire, MAX),
            Err(CodecError::message_too_long(MAX + 1, MAX))
        );
    }
    // Unterminated: MAX bytes and a `\r` may still be a whole line; one more byte is not.
    let mut codec = LinesCodec::default();
    let mut buf = BytesMut::from(&vec![b'c'; MAX][..]);
    buf.extend_from_slice(b"\r");
    assert_eq!(
        codec.decode_limited(&mut buf, MAX).unwrap(),
        Decoded::NeedMore(None)
    );
    buf.extend_from_slice(b"c");
    // The `\r` was part of the line after all.
    assert_eq!(
        codec.decode_limited(&mut buf, MAX),
        Err(CodecError::message_too_long(MAX + 2, MAX))
    );
}

#[test]
fn lines_own_smaller_maximum_still_applies() {
    let mut codec = LinesCodec::new(10);
    let mut wire = BytesMut::from(&b"01234567890\n"[..]);
    assert_eq!(
        codec.decode_limited(&mut wire, MAX),
        Err(CodecError::frame_too_long(11, 10))
    );
}

#[test]
fn raw_and_message_codecs_hand_out_at_most_the_limit() {
    let mut buf = BytesMut::from(&vec![1u8; 2 * MAX + 5][..]);
    let mut sizes = Vec::new();
    while let Decoded::Frame(chunk) = RawCodec.decode_limited(&mut buf, MAX).unwrap() {
        sizes.push(chunk.len());
    }
    assert_eq!(sizes, [MAX, MAX, 5]);

    let mut buf = BytesMut::from(&vec![2u8; MAX + 1][..]);
    let Decoded::Frame(Message::Binary(first)) =
        MessageCodec.decode_limited(&mut buf, MAX).unwrap()
    else {
        panic!("a binary message");
    };
    assert_eq!((first.len(), buf.len()), (MAX, 1));
}

/// A codec that only implements `decode`: the default `decode_limited` compares what it can
/// see (the declared frame, or what is buffered without one).
struct Fixed(usize);

impl Decoder for Fixed {
    type Item = Bytes;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Decoded<Bytes>, CodecError> {
        if src.len() < self.0 {
            return Ok(Decoded::NeedMore(Some(self.0)));
        }
        Ok(Decoded::Frame(src.split_to(self.0).freeze()))
    }
}

#[test]
fn the_default_limited_decode_checks_declared_lengths() {
    let mut ok = Fixed(MAX);
    assert_eq!(
        ok.decode_limited(&mut BytesMut::from(&b"x"[..]), MAX)
            .unwrap(),
        Decoded::NeedMore(Some(MAX))
    );
    let mut big = Fixed(MAX + 1);
    assert_eq!(
        big.decode_limited(&mut BytesMut::from(&b"x"[..]), MAX),
        Err(CodecError::message_too_long(MAX + 1, MAX))
    );
}
