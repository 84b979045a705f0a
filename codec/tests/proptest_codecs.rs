//! Property tests for the built-in codecs: encoded messages survive arbitrary read
//! boundaries, and arbitrary input never makes a decoder panic or spin.

use getty_codec::{
    ByteOrder, Bytes, BytesMut, CodecError, Decoded, Decoder, Encoder, LengthFieldCodec,
    LineEnding, LinesCodec, RawCodec,
};
use proptest::prelude::*;

const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// A message described by its length and a seed, expanded by a cheap generator. Letting
/// proptest generate up to 50 × 64 KiB bytes one by one would make the suite far too slow in
/// debug builds.
#[derive(Debug, Clone)]
struct MessageSpec {
    len: usize,
    seed: u64,
}

impl MessageSpec {
    fn bytes(&self, max_len: usize, exclude_line_breaks: bool) -> Vec<u8> {
        let mut state = self.seed | 1;
        (0..self.len.min(max_len))
            .map(|_| {
                // xorshift64: plenty random for message contents.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let byte = state as u8;
                if exclude_line_breaks && (byte == b'\n' || byte == b'\r') {
                    b'.'
                } else {
                    byte
                }
            })
            .collect()
    }
}

fn message_spec() -> impl Strategy<Value = MessageSpec> {
    // Mostly small messages so many frames share a read, some large ones that span many reads.
    let len = prop_oneof![4 => 0..64usize, 1 => 0..=MAX_MESSAGE_LEN];
    (len, any::<u64>()).prop_map(|(len, seed)| MessageSpec { len, seed })
}

/// Sizes of successive reads; cycled until the whole input is fed.
fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    let size = prop_oneof![3 => 1..16usize, 1 => 1..100_000usize];
    prop::collection::vec(size, 1..32)
}

/// Feeds `wire` to `decoder` in reads of the given sizes, decoding after every read until the
/// decoder asks for more, the way a transport does. Checks the decoder contract on the way:
/// a frame consumes input, and a declared frame length is longer than what is buffered.
fn feed_in_reads<D: Decoder>(
    decoder: &mut D,
    wire: &[u8],
    read_sizes: &[usize],
) -> Result<Vec<D::Item>, CodecError> {
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut remaining = wire;
    for &read_size in read_sizes.iter().cycle() {
        if remaining.is_empty() {
            break;
        }
        let (read, rest) = remaining.split_at(read_size.min(remaining.len()));
        buf.extend_from_slice(read);
        remaining = rest;
        decode_available(decoder, &mut buf, &mut items)?;
    }
    Ok(items)
}

fn decode_available<D: Decoder>(
    decoder: &mut D,
    buf: &mut BytesMut,
    items: &mut Vec<D::Item>,
) -> Result<(), CodecError> {
    loop {
        let buffered = buf.len();
        match decoder.decode(buf)? {
            Decoded::Frame(item) => {
                assert!(buf.len() < buffered, "a frame must consume input");
                items.push(item);
            }
            Decoded::NeedMore(Some(frame_len)) => {
                assert!(
                    frame_len > buffered,
                    "declared {frame_len}, have {buffered}"
                );
                assert_eq!(buf.len(), buffered, "NeedMore must not consume input");
                return Ok(());
            }
            Decoded::NeedMore(None) => {
                assert_eq!(buf.len(), buffered, "NeedMore must not consume input");
                return Ok(());
            }
        }
    }
}

fn encode_all<C>(codec: &mut C, messages: &[Vec<u8>]) -> Vec<u8>
where
    for<'a> C: Encoder<&'a [u8]>,
{
    let mut wire = BytesMut::new();
    for message in messages {
        codec
            .encode(message, &mut wire)
            .expect("message is encodable");
    }
    wire.to_vec()
}

fn length_codec(field_len: usize, order: ByteOrder) -> LengthFieldCodec {
    LengthFieldCodec::builder()
        .length_field_len(field_len)
        .byte_order(order)
        .build()
        .unwrap()
}

/// Largest payload a length field of this width can describe (capped to keep tests fast).
fn max_payload_for(field_len: usize) -> usize {
    match field_len {
        1 => 0xff,
        2 => 0xffff,
        _ => MAX_MESSAGE_LEN,
    }
}

fn assert_same_messages(decoded: &[Bytes], expected: &[Vec<u8>]) {
    assert_eq!(decoded.len(), expected.len(), "number of messages");
    for (index, (got, want)) in decoded.iter().zip(expected).enumerate() {
        assert!(
            got == want,
            "message {index} differs ({} vs {} bytes)",
            got.len(),
            want.len()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn length_field_round_trip(
        specs in prop::collection::vec(message_spec(), 0..50),
        reads in read_sizes(),
        field_len in prop::sample::select(vec![1usize, 2, 4, 8]),
        little_endian in any::<bool>(),
    ) {
        let order = if little_endian { ByteOrder::LittleEndian } else { ByteOrder::BigEndian };
        let mut codec = length_codec(field_len, order);
        let messages: Vec<Vec<u8>> =
            specs.iter().map(|spec| spec.bytes(max_payload_for(field_len), false)).collect();
        let wire = encode_all(&mut codec, &messages);
        let decoded = feed_in_reads(&mut codec, &wire, &reads).unwrap();
        assert_same_messages(&decoded, &messages);
    }

    #[test]
    fn length_field_with_header_round_trip(
        specs in prop::collection::vec(message_spec(), 0..50),
        reads in read_sizes(),
    ) {
        // A 2-byte tag, then a 2-byte length that counts the whole frame; nothing stripped,
        // so each decoded frame is exactly the wire form of one message.
        let mut codec = LengthFieldCodec::builder()
            .length_field_offset(2)
            .length_field_len(2)
            .length_adjustment(-4)
            .initial_bytes_to_strip(0)
            .build()
            .unwrap();
        let messages: Vec<Vec<u8>> = specs
            .iter()
            .map(|spec| {
                let mut message = b"\xca\xfe".to_vec();
                message.extend(spec.bytes(0xffff - 4 - 2, false));
                message
            })
            .collect();
        let wire = encode_all(&mut codec, &messages);
        let decoded = feed_in_reads(&mut codec, &wire, &reads).unwrap();
        let expected: Vec<Vec<u8>> = messages
            .iter()
            .map(|message| {
                let body_len = (message.len() + 2) as u16;
                let mut frame = message[..2].to_vec();
                frame.extend(body_len.to_be_bytes());
                frame.extend(&message[2..]);
                frame
            })
            .collect();
        assert_same_messages(&decoded, &expected);
    }

    #[test]
    fn lines_round_trip(
        specs in prop::collection::vec(message_spec(), 0..50),
        reads in read_sizes(),
        crlf in any::<bool>(),
    ) {
        let ending = if crlf { LineEnding::CrLf } else { LineEnding::Lf };
        let mut codec = LinesCodec::new(MAX_MESSAGE_LEN).line_ending(ending);
        let messages: Vec<Vec<u8>> =
            specs.iter().map(|spec| spec.bytes(MAX_MESSAGE_LEN, true)).collect();
        let wire = encode_all(&mut codec, &messages);
        let decoded = feed_in_reads(&mut codec, &wire, &reads).unwrap();
        assert_same_messages(&decoded, &messages);
    }

    #[test]
    fn raw_round_trip_preserves_the_stream(
        specs in prop::collection::vec(message_spec(), 0..50),
        reads in read_sizes(),
    ) {
        let messages: Vec<Vec<u8>> =
            specs.iter().map(|spec| spec.bytes(MAX_MESSAGE_LEN, false)).collect();
        let wire = encode_all(&mut RawCodec, &messages);
        let decoded = feed_in_reads(&mut RawCodec, &wire, &reads).unwrap();
        prop_assert_eq!(decoded.concat(), wire);
    }
}

/// Decoders to throw garbage at: every codec, including configurations with headers,
/// negative adjustments, stripping and small limits.
type FeedFn = Box<dyn FnMut(&[u8], &[usize])>;

fn fuzzed_decoders() -> Vec<FeedFn> {
    fn boxed<D: Decoder + 'static>(mut decoder: D) -> FeedFn {
        Box::new(move |wire, reads| {
            // Errors are fine; panics and contract violations (checked inside) are not.
            let _ = feed_in_reads(&mut decoder, wire, reads);
        })
    }
    let mut decoders: Vec<FeedFn> = Vec::new();
    for field_len in [1, 2, 4, 8] {
        for order in [ByteOrder::BigEndian, ByteOrder::LittleEndian] {
            decoders.push(boxed(length_codec(field_len, order)));
        }
    }
    let unusual_length_configs = [
        LengthFieldCodec::builder()
            .length_field_len(1)
            .length_adjustment(-1),
        LengthFieldCodec::builder()
            .length_field_len(1)
            .length_field_offset(3)
            .length_adjustment(2),
        LengthFieldCodec::builder()
            .length_field_len(2)
            .initial_bytes_to_strip(5),
        LengthFieldCodec::builder()
            .length_field_len(8)
            .max_frame_length(usize::MAX),
        LengthFieldCodec::builder()
            .length_field_len(8)
            .length_adjustment(i32::MIN as isize)
            .max_frame_length(usize::MAX),
        LengthFieldCodec::builder()
            .length_field_len(8)
            .length_adjustment(i32::MAX as isize)
            .max_frame_length(usize::MAX),
        LengthFieldCodec::builder()
            .length_field_len(1)
            .max_frame_length(40),
    ];
    for builder in unusual_length_configs {
        decoders.push(boxed(builder.build().unwrap()));
    }
    decoders.push(boxed(LinesCodec::default()));
    decoders.push(boxed(LinesCodec::new(0)));
    decoders.push(boxed(LinesCodec::new(8)));
    decoders.push(boxed(RawCodec));
    decoders
}

/// Random bytes biased towards the ones codecs care about (line breaks, tiny lengths).
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => any::<u8>(),
        1 => Just(b'\n'),
        1 => Just(b'\r'),
        2 => 0..4u8,
    ];
    prop::collection::vec(byte, 0..2048)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoders_survive_arbitrary_input(
        wire in garbage(),
        reads in prop::collection::vec(1..64usize, 1..16),
    ) {
        for mut feed in fuzzed_decoders() {
            feed(&wire, &reads);
        }
    }
}

/// The deflate filter needs the `deflate` feature.
#[cfg(feature = "deflate")]
mod deflate_filter {
    use getty_codec::filter::{DeflateFilter, Filter};
    use getty_codec::Compression;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Any stream of messages, written in any batches (each batch sync-flushed) and read
        /// back in arbitrary pieces with an arbitrary plain-bytes limit per call, survives
        /// deflate → inflate at every level.
        #[test]
        fn deflate_filter_round_trip(
            specs in prop::collection::vec(message_spec(), 0..30),
            batch_every in 1usize..6,
            reads in read_sizes(),
            limit in 1usize..100_000,
            level in prop::sample::select(vec![
                Compression::Default, Compression::Fast, Compression::Best, Compression::HuffmanOnly,
            ]),
        ) {
            let messages: Vec<Vec<u8>> = specs.iter().map(|s| s.bytes(MAX_MESSAGE_LEN, false)).collect();
            let (mut tx, mut rx) = (DeflateFilter::new(level), DeflateFilter::new(level));
            let mut wire = BytesMut::new();
            for (i, m) in messages.iter().enumerate() {
                tx.encode(m, &mut wire).unwrap();
                if i % batch_every == 0 {
                    tx.flush(&mut wire).unwrap();
                }
            }
            tx.flush(&mut wire).unwrap();
            let mut pending = BytesMut::new();
            let mut plain = BytesMut::new();
            let mut read = reads.iter().cycle();
            while !wire.is_empty() {
                let n = (*read.next().unwrap()).clamp(1, wire.len());
                pending.extend_from_slice(&wire.split_to(n));
                loop {
                    let before = plain.len();
                    rx.decode(&mut pending, &mut plain, limit).unwrap();
                    prop_assert!(plain.len() - before <= limit);
                    if plain.len() == before {
                        break;
                    }
                }
            }
            prop_assert_eq!(&plain[..], &messages.concat()[..]);
        }
    }
}
