//! `LengthFieldCodec` under any configuration its builder accepts (length field of 1, 2, 4
//! or 8 bytes, either byte order, any offset, adjustment, strip and maximum), with or
//! without a session limit.
//!
//! Oracles:
//! - split invariance: the stream fed in arbitrary pieces decodes to the same frames and the
//!   same error as fed whole;
//! - round trip: each message the encoder accepts is one frame `F` on the wire, and decodes
//!   to `F[strip..]` exactly when `F` is within every limit and not shorter than the strip
//!   (otherwise decoding must fail at that frame);
//! - every call: frames consume input, a length hint exceeds what is buffered.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use getty_codec::{ByteOrder, Encoder, LengthFieldCodec};
use getty_fuzz::{decode_stream, pieces};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Config {
    width: u8,
    little_endian: bool,
    offset: u8,
    adjustment: i16,
    strip: Option<u8>,
    max_frame_length: Option<u16>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    config: Config,
    session_limit: Option<u16>,
    sizes: Vec<u8>,
    messages: Vec<Vec<u8>>,
    garbage: Vec<u8>,
}

fn build(c: &Config) -> Option<LengthFieldCodec> {
    let mut b = LengthFieldCodec::builder()
        .length_field_len([1, 2, 4, 8][usize::from(c.width % 4)])
        .byte_order(if c.little_endian {
            ByteOrder::LittleEndian
        } else {
            ByteOrder::BigEndian
        })
        .length_field_offset(usize::from(c.offset))
        .length_adjustment(isize::from(c.adjustment));
    if let Some(strip) = c.strip {
        b = b.initial_bytes_to_strip(usize::from(strip));
    }
    if let Some(max) = c.max_frame_length {
        b = b.max_frame_length(usize::from(max));
    }
    b.build().ok()
}

fuzz_target!(|input: Input| {
    let Some(mut codec) = build(&input.config) else {
        return;
    };
    let limit = input.session_limit.map(usize::from);
    let strip = codec.initial_bytes_to_strip();
    // The limit on whole frames that applies: an explicit one always; the built-in one
    // only without a session limit.
    let frame_max = match (limit, input.config.max_frame_length) {
        (_, Some(_)) | (None, None) => Some(codec.max_frame_length()),
        (Some(_), None) => None,
    };

    // Encode the messages; remember each frame as it went on the wire.
    let mut wire = BytesMut::new();
    let mut frames = Vec::new();
    for message in &input.messages {
        let start = wire.len();
        if codec.encode(&message[..], &mut wire).is_err() {
            assert_eq!(wire.len(), start, "a failed encode left bytes behind");
            continue;
        }
        let frame = wire[start..].to_vec();
        assert_eq!(frame.len(), message.len() + codec.length_field_len());
        frames.push(frame);
    }
    let encoded_len = wire.len();
    wire.extend_from_slice(&input.garbage);

    let whole = decode_stream(&mut codec.clone(), &[&wire[..]], limit);
    let split = decode_stream(&mut codec.clone(), &pieces(&wire, &input.sizes), limit);
    assert_eq!(whole, split, "split input decoded differently");

    // Round trip: the encoded frames come back, up to the first that breaks a limit.
    for (i, frame) in frames.iter().enumerate() {
        let too_long = frame_max.is_some_and(|max| frame.len() > max)
            || limit.is_some_and(|max| frame.len().saturating_sub(strip) > max);
        let refused = too_long || frame.len() < strip;
        match whole.frames.get(i) {
            Some(decoded) => {
                assert!(
                    !refused,
                    "frame {i} of {} bytes should be refused",
                    frame.len()
                );
                assert_eq!(&decoded[..], &frame[strip..], "frame {i} came back changed");
            }
            None => {
                assert!(refused, "frame {i} was not decoded: {:?}", whole.error);
                assert!(whole.error.is_some(), "frame {i}: no frame and no error");
                return;
            }
        }
    }
    if encoded_len == wire.len() {
        assert_eq!(whole.frames.len(), frames.len());
        assert!(whole.error.is_none());
    }
});
