//! Decoding units of input that are buffers of their own (datagrams, WebSocket messages) is
//! stateless: with [`Decoder::reset`] before each unit, as the transports do, every built-in
//! codec decodes a unit exactly as a fresh codec would, whatever came before it.

use getty_codec::{
    Bytes, BytesMut, CodecError, Decoded, Decoder, LengthFieldCodec, LinesCodec, Message,
    MessageCodec, MessageKind, RawCodec,
};
use proptest::prelude::*;

/// What decoding one unit gave: the first outcome and what was left of the unit.
#[derive(Debug, PartialEq)]
struct Outcome<T> {
    first: Result<Decoded<T>, CodecError>,
    left: Vec<u8>,
}

/// Decodes `unit` as the datagram path does: reset, then one limited decode.
fn decode_unit<D: Decoder>(codec: &mut D, unit: &[u8], max: usize) -> Outcome<D::Item> {
    codec.reset();
    let mut buf = BytesMut::from(unit);
    let first = codec.decode_limited(&mut buf, max);
    Outcome {
        first,
        left: buf.to_vec(),
    }
}

/// Decodes every unit with one codec, and each with a fresh copy of the codec as it was
/// built, and requires the same outcomes.
fn same_as_fresh<D>(make: impl Fn() -> D, units: &[Vec<u8>], max: usize)
where
    D: Decoder,
    D::Item: PartialEq + std::fmt::Debug,
{
    let mut shared = make();
    for (i, unit) in units.iter().enumerate() {
        let got = decode_unit(&mut shared, unit, max);
        let fresh = decode_unit(&mut make(), unit, max);
        assert_eq!(got, fresh, "unit {i} of {units:?}");
    }
}

/// Also as WebSocket messages: `decode_message` on a shared codec equals a fresh one's.
fn same_messages_as_fresh<D>(make: impl Fn() -> D, units: &[Vec<u8>])
where
    D: Decoder,
    D::Item: PartialEq + std::fmt::Debug,
{
    let mut shared = make();
    for unit in units {
        // A stream-style decode first, that may leave a scan position behind.
        let _ = shared.decode(&mut BytesMut::from(&unit[..]));
        let got = shared.decode_message(MessageKind::Binary, &mut BytesMut::from(&unit[..]));
        let fresh = make().decode_message(MessageKind::Binary, &mut BytesMut::from(&unit[..]));
        assert_eq!(got, fresh);
    }
}

/// Units of lines-ish input: newlines, carriage returns and letters, often without a
/// newline at all, with lengths around the limits used below.
fn units() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let byte = prop_oneof![6 => Just(b'a'), 2 => Just(b'\n'), 1 => Just(b'\r'), 1 => any::<u8>()];
    prop::collection::vec(prop::collection::vec(byte, 0..80), 1..12)
}

proptest! {
    #[test]
    fn lines_units_decode_as_with_a_fresh_codec(units in units(), max in 0usize..100, line in 1usize..100) {
        same_as_fresh(LinesCodec::default, &units, max);
        same_as_fresh(|| LinesCodec::new(line), &units, max.max(1) * 2);
        same_messages_as_fresh(|| LinesCodec::new(line), &units);
    }

    #[test]
    fn other_codecs_units_decode_as_with_a_fresh_codec(units in units(), max in 0usize..100) {
        same_as_fresh(LengthFieldCodec::default, &units, max);
        let one_byte = || LengthFieldCodec::builder().length_field_len(1).build().unwrap();
        same_as_fresh(one_byte, &units, max);
        same_as_fresh(|| RawCodec, &units, max);
        same_as_fresh(|| MessageCodec, &units, max);
        same_messages_as_fresh(LengthFieldCodec::default, &units);
        same_messages_as_fresh(|| RawCodec, &units);
        same_messages_as_fresh(|| MessageCodec, &units);
    }
}

/// The reproduction from issue 12 (item 16), as units: one 40-byte unit without a newline,
/// then five `PING\n`.
#[test]
fn pings_after_an_unterminated_datagram_all_decode() {
    let mut codec = LinesCodec::default();
    let first = decode_unit(&mut codec, &[b'x'; 40], 1 << 20);
    assert_eq!(first.first, Ok(Decoded::NeedMore(None)));
    for _ in 0..5 {
        let ping = decode_unit(&mut codec, b"PING\n", 1 << 20);
        assert_eq!(ping.first, Ok(Decoded::Frame(Bytes::from_static(b"PING"))));
        assert!(ping.left.is_empty());
    }
    // The message codec's output type works the same way.
    let m = decode_unit(&mut MessageCodec, b"m", 10);
    assert_eq!(m.first, Ok(Decoded::Frame(Message::binary(&b"m"[..]))));
}
