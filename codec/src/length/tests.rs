use std::io;

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

mod plain_layout {
    //! The default layout's fast paths against the general arithmetic they skip.
    use proptest::prelude::*;

    use super::*;

    /// What the general path answers for the frame length of `header`.
    fn general_frame_len(
        codec: &LengthFieldCodec,
        header: &[u8],
        max_message_len: Option<usize>,
    ) -> Result<usize, CodecErrorKind> {
        codec
            .frame_len_for(codec.read_length_field(header), max_message_len)
            .map_err(|e| e.kind())
    }

    /// Lengths near every limit the decoder checks, and anywhere else.
    fn body_len() -> impl Strategy<Value = u32> {
        prop_oneof![
            0u32..70_000,
            (8u32 << 20) - 8..(8u32 << 20) + 8,
            any::<u32>(),
            Just(u32::MAX),
            Just(u32::MAX - 4),
        ]
    }

    proptest! {
        #[test]
        fn frame_len_matches_the_general_path(
            body in body_len(),
            max_message_len in prop_oneof![Just(None), (0usize..70_000).prop_map(Some)],
            max_frame_length in prop_oneof![Just(None), (4u32..80_000).prop_map(Some)],
        ) {
            let mut builder = LengthFieldCodec::builder();
            if let Some(max) = max_frame_length {
                builder = builder.max_frame_length(max as usize);
            }
            let codec = codec(builder);
            prop_assert!(codec.is_plain_u32());
            let header = body.to_be_bytes();
            let fast = codec
                .plain_frame_len(&header, max_message_len)
                .expect("the default layout takes the fast path")
                .map_err(|e| e.kind());
            prop_assert_eq!(fast, general_frame_len(&codec, &header, max_message_len));
        }

        /// Right at each limit, where an off-by-one would show.
        #[test]
        fn frame_len_matches_the_general_path_at_the_limits(
            limit in 4usize..70_000,
            delta in -5i64..=5,
            message_limit in any::<bool>(),
        ) {
            let (builder, max_message_len) = if message_limit {
                (LengthFieldCodec::builder(), Some(limit))
            } else {
                (LengthFieldCodec::builder().max_frame_length(limit), None)
            };
            let codec = codec(builder);
            let body = (limit as i64 + delta).max(0) as u32;
            let header = body.to_be_bytes();
            let fast = codec
                .plain_frame_len(&header, max_message_len)
                .expect("the default layout takes the fast path")
                .map_err(|e| e.kind());
            prop_assert_eq!(fast, general_frame_len(&codec, &header, max_message_len));
        }

        #[test]
        fn encoding_matches_the_general_path(len in 0usize..9000) {
            let codec = LengthFieldCodec::default();
            let payload = vec![0xa5u8; len];
            let mut fast = BytesMut::new();
            codec.encode_frame(&payload, &mut fast).unwrap();
            let mut general = BytesMut::new();
            let field = codec.field_value_for(&payload).unwrap();
            codec.put_length_field(field, &mut general);
            general.extend_from_slice(&payload);
            prop_assert_eq!(fast, general);
        }
    }

    #[test]
    fn other_layouts_take_the_general_path() {
        let layouts = [
            LengthFieldCodec::builder().length_field_len(2),
            LengthFieldCodec::builder().byte_order(ByteOrder::LittleEndian),
            LengthFieldCodec::builder().length_adjustment(-4),
            LengthFieldCodec::builder().initial_bytes_to_strip(0),
            LengthFieldCodec::builder().length_field_offset(2),
        ];
        for builder in layouts {
            let codec = codec(builder);
            assert!(!codec.is_plain_u32());
            assert!(codec.plain_frame_len(&[0; 8], None).is_none());
        }
    }
}
