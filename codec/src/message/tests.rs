use super::*;
use crate::{LengthFieldCodec, RawCodec};

#[test]
fn stream_decoding_is_raw_and_binary() {
    let mut buf = BytesMut::from(&b"xyz"[..]);
    let Decoded::Frame(m) = MessageCodec.decode(&mut buf).unwrap() else {
        panic!("expected a frame");
    };
    assert_eq!(m, Message::binary(&b"xyz"[..]));
    assert!(buf.is_empty());
}

#[test]
fn message_decoding_keeps_the_kind_and_copies_only_small_ones() {
    let text = "t".repeat(crate::COPY_BELOW);
    let mut buf = BytesMut::from(text.as_bytes());
    let addr = buf.as_ptr();
    let m = MessageCodec
        .decode_message(MessageKind::Text, &mut buf)
        .unwrap();
    assert_eq!(m.kind(), MessageKind::Text);
    assert_eq!(m.payload().as_ptr(), addr);
    let mut small = BytesMut::from(&b"text"[..]);
    let addr = small.as_ptr();
    let m = MessageCodec
        .decode_message(MessageKind::Text, &mut small)
        .unwrap();
    assert_eq!(m, Message::text("text"));
    assert_ne!(m.payload().as_ptr(), addr);
    let m = MessageCodec
        .decode_message(MessageKind::Binary, &mut BytesMut::from(&b"b"[..]))
        .unwrap();
    assert_eq!(m.kind(), MessageKind::Binary);
}

#[test]
fn default_decode_message_needs_exactly_one_frame() {
    let mut codec = LengthFieldCodec::default();
    let mut one = BytesMut::from(&b"\x00\x00\x00\x01a"[..]);
    assert_eq!(
        codec.decode_message(MessageKind::Binary, &mut one).unwrap(),
        "a"
    );
    let mut two = BytesMut::from(&b"\x00\x00\x00\x01a\x00"[..]);
    assert!(codec.decode_message(MessageKind::Binary, &mut two).is_err());
    let mut short = BytesMut::from(&b"\x00\x00\x00\x05a"[..]);
    assert!(codec
        .decode_message(MessageKind::Binary, &mut short)
        .is_err());
}

#[test]
fn raw_codec_takes_empty_messages() {
    let m = RawCodec
        .decode_message(MessageKind::Binary, &mut BytesMut::new())
        .unwrap();
    assert!(m.is_empty());
}

#[test]
fn default_encode_message_is_binary() {
    let mut out = BytesMut::new();
    let kind = RawCodec.encode_message("t", &mut out).unwrap();
    assert_eq!(kind, MessageKind::Binary);
    assert_eq!(&out[..], b"t");
}
