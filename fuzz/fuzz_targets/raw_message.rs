//! `RawCodec` and `MessageCodec`, the codecs without framing, on a stream and per message.
//!
//! Oracles:
//! - on a stream, with or without a session limit, however the input is cut: the frames
//!   are never empty, never over the limit, and concatenate to exactly the input (nothing
//!   lost, duplicated or reordered); `MessageCodec`'s are all binary;
//! - per message: `decode_message` hands back the payload unchanged, refusing a text
//!   payload exactly when it is not UTF-8; a `Message` encoded with `encode_message` decodes
//!   back to itself with the kind it was sent as.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use getty_codec::{Decoder, Encoder, Message, MessageCodec, MessageKind, RawCodec};
use getty_fuzz::{decode_stream, pieces};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    session_limit: Option<u8>,
    sizes: Vec<u8>,
    text: bool,
    data: Vec<u8>,
}

fn check_stream(frames: &[&[u8]], input: &Input) {
    let limit = input.session_limit.map(|l| usize::from(l).max(1));
    for frame in frames {
        assert!(!frame.is_empty(), "an empty frame");
        assert!(
            limit.is_none_or(|l| frame.len() <= l),
            "a frame over the limit"
        );
    }
    assert_eq!(frames.concat(), input.data, "the frames are not the input");
}

fuzz_target!(|input: Input| {
    let limit = input.session_limit.map(usize::from);
    let chunks = pieces(&input.data, &input.sizes);

    let raw = decode_stream(&mut RawCodec, &chunks, limit);
    assert!(raw.error.is_none());
    check_stream(
        &raw.frames.iter().map(|f| &f[..]).collect::<Vec<_>>(),
        &input,
    );

    let messages = decode_stream(&mut MessageCodec, &chunks, limit);
    assert!(messages.error.is_none());
    assert!(messages
        .frames
        .iter()
        .all(|m| m.kind() == MessageKind::Binary));
    check_stream(
        &messages
            .frames
            .iter()
            .map(|m| &m.payload()[..])
            .collect::<Vec<_>>(),
        &input,
    );

    // One whole message.
    let kind = if input.text {
        MessageKind::Text
    } else {
        MessageKind::Binary
    };
    let raw_one = RawCodec.decode_message(kind, &mut BytesMut::from(&input.data[..]));
    assert_eq!(&raw_one.unwrap()[..], &input.data[..]);
    let utf8 = std::str::from_utf8(&input.data).is_ok();
    match MessageCodec.decode_message(kind, &mut BytesMut::from(&input.data[..])) {
        Ok(m) => {
            assert!(
                kind == MessageKind::Binary || utf8,
                "accepted text that is not UTF-8"
            );
            assert_eq!((m.kind(), &m.payload()[..]), (kind, &input.data[..]));
        }
        Err(_) => assert!(
            kind == MessageKind::Text && !utf8,
            "refused a valid message"
        ),
    }

    // A Message out and back.
    let sent = match std::str::from_utf8(&input.data) {
        Ok(s) if input.text => Message::text(s),
        _ => Message::binary(input.data.clone()),
    };
    let mut wire = BytesMut::new();
    let kind = MessageCodec.encode_message(&sent, &mut wire).unwrap();
    assert_eq!(kind, sent.kind());
    assert_eq!(MessageCodec.decode_message(kind, &mut wire).unwrap(), sent);
});
