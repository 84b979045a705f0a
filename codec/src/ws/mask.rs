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
#[inline]
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    // The mask as it lines up with `data[0]`: rotated by the offset into the payload.
    let shift = 8 * (offset % 4) as u32;
    let word = u32::from_ne_bytes(mask);
    let word = if cfg!(target_endian = "little") {
        word.rotate_right(shift)
    } else {
        word.rotate_left(shift)
    };
    // The same four bytes over and over, so a wide word lines up with any multiple of four.
    let half = u64::from(word) | (u64::from(word) << 32);
    let wide = u128::from(half) | (u128::from(half) << 64);
    let mut blocks = data.chunks_exact_mut(16);
    for block in &mut blocks {
        let block: &mut [u8; 16] = block.try_into().expect("sixteen bytes");
        *block = (u128::from_ne_bytes(*block) ^ wide).to_ne_bytes();
    }
    let mut words = blocks.into_remainder().chunks_exact_mut(4);
    for w in &mut words {
        let w: &mut [u8; 4] = w.try_into().expect("four bytes");
        *w = (u32::from_ne_bytes(*w) ^ word).to_ne_bytes();
    }
    for (b, m) in words.into_remainder().iter_mut().zip(word.to_ne_bytes()) {
        *b ^= m;
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
