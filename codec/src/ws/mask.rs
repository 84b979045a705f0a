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
    let wide = u64::from(word) | (u64::from(word) << 32);
    // Sixteen bytes a turn (two words), then one word, then the bytes left over: each
    // step starts at a multiple of four bytes into `data`, so the same mask lines up.
    let mut pairs = data.chunks_exact_mut(16);
    for pair in &mut pairs {
        let (a, b) = pair.split_at_mut(8);
        xor_word(a, wide);
        xor_word(b, wide);
    }
    let mut rest = pairs.into_remainder();
    if rest.len() >= 8 {
        let (a, b) = rest.split_at_mut(8);
        xor_word(a, wide);
        rest = b;
    }
    let m = word.to_ne_bytes();
    for (b, m) in rest.iter_mut().zip(m.iter().cycle()) {
        *b ^= m;
    }
}

/// XORs eight bytes with `wide`.
#[inline(always)]
fn xor_word(chunk: &mut [u8], wide: u64) {
    let bytes: [u8; 8] = (&*chunk).try_into().expect("eight bytes");
    chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
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
