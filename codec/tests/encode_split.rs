//! `Encoder::encode_split` against `Encoder::encode`: for every layout the builder accepts,
//! the bytes appended followed by the payload handed back are exactly what `encode`
//! appends; a refused message leaves the destination as it was, both ways.

use bytes::{Bytes, BytesMut};
use getty_codec::{ByteOrder, Encoder, LengthFieldCodec, RawCodec, COPY_BELOW};
use proptest::prelude::*;

/// A layout the builder accepts, or `None`.
fn layout(
    width: usize,
    little: bool,
    offset: usize,
    adjustment: isize,
) -> Option<LengthFieldCodec> {
    LengthFieldCodec::builder()
        .length_field_len(width)
        .byte_order(if little {
            ByteOrder::LittleEndian
        } else {
            ByteOrder::BigEndian
        })
        .length_field_offset(offset)
        .length_adjustment(adjustment)
        .build()
        .ok()
}

/// What `encode_split` puts on the wire: the head it appended, then the payload.
fn split_wire<C: Encoder<Bytes>>(codec: &mut C, message: Bytes, dst: &mut BytesMut) -> bool {
    match codec.encode_split(message, dst) {
        Ok(Some(payload)) => {
            dst.extend_from_slice(&payload);
            true
        }
        Ok(None) => true,
        Err(_) => false,
    }
}

proptest! {
    #[test]
    fn length_field_split_equals_encode(
        width in prop_oneof![Just(1usize), Just(2), Just(4), Just(8)],
        little in any::<bool>(),
        offset in 0usize..8,
        adjustment in -8isize..8,
        len in prop_oneof![0usize..64, COPY_BELOW - 8..COPY_BELOW + 8, 60_000usize..70_000],
        prefix in 0usize..16,
    ) {
        let Some(mut codec) = layout(width, little, offset, adjustment) else {
            return Ok(());
        };
        let message = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
        let mut whole = BytesMut::from(&vec![0xee; prefix][..]);
        let encoded = codec.encode(message.clone(), &mut whole).is_ok();
        let mut split = BytesMut::from(&vec![0xee; prefix][..]);
        let split_ok = split_wire(&mut codec, message, &mut split);
        prop_assert_eq!(encoded, split_ok);
        prop_assert_eq!(&whole[..], &split[..]);
        if !encoded {
            prop_assert_eq!(whole.len(), prefix);
        }
    }

    #[test]
    fn raw_split_equals_encode(len in prop_oneof![0usize..64, COPY_BELOW - 8..COPY_BELOW + 8]) {
        let message = Bytes::from(vec![7u8; len]);
        let mut whole = BytesMut::new();
        RawCodec.encode(message.clone(), &mut whole).unwrap();
        let mut split = BytesMut::new();
        prop_assert!(split_wire(&mut RawCodec, message, &mut split));
        prop_assert_eq!(whole, split);
    }
}
