//! `LinesCodec` with any maximum line length and line ending, with or without a session
//! limit.
//!
//! Oracles:
//! - split invariance: the stream fed in arbitrary pieces (which exercises the decoder's
//!   memory of how far it has searched) decodes to the same lines and error as fed whole;
//! - round trip: the encoder refuses exactly the lines that would not come back as one line
//!   (too long, holding a `\n`, ending in `\r`), and every line it accepts decodes to
//!   itself, unless it exceeds the session limit, which must then fail the decode;
//! - every call: lines consume input.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use getty_codec::{Encoder, LineEnding, LinesCodec};
use getty_fuzz::{decode_stream, pieces};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    max_line_length: u8,
    crlf: bool,
    session_limit: Option<u8>,
    sizes: Vec<u8>,
    lines: Vec<Vec<u8>>,
    garbage: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let max = usize::from(input.max_line_length);
    let ending = if input.crlf {
        LineEnding::CrLf
    } else {
        LineEnding::Lf
    };
    let mut codec = LinesCodec::new(max).line_ending(ending);
    let limit = input.session_limit.map(usize::from);

    let mut wire = BytesMut::new();
    let mut sent = Vec::new();
    for line in &input.lines {
        let encodable = line.len() <= max && !line.contains(&b'\n') && line.last() != Some(&b'\r');
        let start = wire.len();
        let encoded = codec.encode(&line[..], &mut wire).is_ok();
        assert_eq!(encoded, encodable, "encode of {line:?} with max {max}");
        if encoded {
            let mut expected = line.clone();
            expected.extend_from_slice(ending.as_bytes());
            assert_eq!(&wire[start..], &expected[..]);
            sent.push(line);
        } else {
            assert_eq!(wire.len(), start, "a failed encode left bytes behind");
        }
    }
    let encoded_len = wire.len();
    wire.extend_from_slice(&input.garbage);

    let whole = decode_stream(&mut codec.clone(), &[&wire[..]], limit);
    let split = decode_stream(&mut codec.clone(), &pieces(&wire, &input.sizes), limit);
    assert_eq!(whole, split, "split input decoded differently");

    for (i, line) in sent.iter().enumerate() {
        let too_long = limit.is_some_and(|l| line.len() > l);
        match whole.frames.get(i) {
            Some(decoded) => {
                assert!(
                    !too_long,
                    "line {i} of {} bytes is over the limit",
                    line.len()
                );
                assert_eq!(&decoded[..], &line[..], "line {i} came back changed");
            }
            None => {
                assert!(too_long, "line {i} was not decoded: {:?}", whole.error);
                assert!(whole.error.is_some());
                return;
            }
        }
    }
    if encoded_len == wire.len() {
        assert_eq!(whole.frames.len(), sent.len());
        assert!(whole.error.is_none());
    }
    // Every decoded line is within the limits and holds no newline.
    let cap = limit.map_or(max, |l| l.min(max));
    for frame in &whole.frames {
        assert!(frame.len() <= cap && !frame.contains(&b'\n'));
    }
});
