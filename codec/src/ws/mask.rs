//! Frame masking (RFC 6455 section 5.3).

/// XORs `data` with `mask` in place, as if `data` started `offset` bytes into a frame's
/// payload. Masking and unmasking are the same operation, and a payload may be processed in
/// pieces: pass each piece's position in the payload as `offset`.
///
/// ```
/// use getty_codec::ws::apply_mask;
/// let mask = [1, 2, 3, 4];
/// let mut data = *b"hello world";
/// apply_mask(&mut data, mask, 0);
/// assert_ne!(&data, b"hello world");
/// apply_mask(&mut data[..3], mask, 0);
/// apply_mask(&mut data[3..], mask, 3);
/// assert_eq!(&data, b"hello world");
/// ```
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = [0u8; 4];
    for (i, b) in m.iter_mut().enumerate() {
        *b = mask[(offset + i) % 4];
    }
    let word = u32::from_ne_bytes(m);
    let wide = u64::from(word) | (u64::from(word) << 32);
    let wide = if cfg!(target_endian = "little") {
        wide
    } else {
        wide.rotate_left(32)
    };
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut v = [0u8; 8];
        v.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(v) ^ wide;
        chunk.copy_from_slice(&x.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(data: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= mask[(offset + i) % 4];
        }
    }

    proptest! {
        #[test]
        fn matches_the_definition(data in proptest::collection::vec(any::<u8>(), 0..100),
                                  mask in any::<[u8; 4]>(), offset in 0usize..16) {
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(&mut fast, mask, offset);
            naive(&mut slow, mask, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn piecewise_masking_round_trips(data in proptest::collection::vec(any::<u8>(), 0..100),
                                         mask in any::<[u8; 4]>(), cut in 0usize..100) {
            let cut = cut.min(data.len());
            let mut m = data.clone();
            apply_mask(&mut m, mask, 0);
            let (a, b) = m.split_at_mut(cut);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, cut);
            prop_assert_eq!(m, data);
        }
    }
}
