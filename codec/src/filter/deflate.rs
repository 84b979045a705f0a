//! A continuous deflate stream per direction, as getty's compressed TCP sessions.

use std::cell::Cell;

use bytes::{Buf, BytesMut};
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use miniz_oxide::deflate::core::{CompressionStrategy, CompressorOxide};
use miniz_oxide::{DataFormat, MZError, MZFlush};

use super::{Filter, FilterError};

/// getty's compression levels. "None" is no filter at all.
///
/// ```
/// use getty_codec::Compression;
/// assert_eq!(Compression::default(), Compression::Default);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// zlib's default trade-off (level 6).
    #[default]
    Default,
    /// Best speed (level 1).
    Fast,
    /// Best compression (level 9).
    Best,
    /// No string matching, only Huffman coding of literals: cheap, and still shrinks text.
    HuffmanOnly,
}

/// Raw deflate (RFC 1951) window: 2^15 bytes.
const WINDOW_BITS: u8 = 15;

/// How a sync flush ends: an empty stored block, whose LEN and NLEN are 0 and 0xffff.
const SYNC_MARKER: [u8; 4] = [0, 0, 0xff, 0xff];

/// [`SYNC_MARKER`] as the filter's record of the last four bytes it took.
const SYNC_TAIL: u32 = u32::from_be_bytes(SYNC_MARKER);

/// Calls a sync flush may take before it is called a compressor failure.
const MAX_FLUSH_CALLS: usize = 64;

/// The most output produced per step; bigger inputs take several.
const STEP: usize = 32 * 1024;

thread_local! {
    /// Where both engines write before the bytes move to the session's buffers: zeroed
    /// once (the engines want initialised slices), and one per thread rather than one per
    /// session, since a thread runs one filter call at a time.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with the thread's scratch space (`STEP` bytes).
fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut scratch = SCRATCH.try_with(Cell::take).unwrap_or_default();
    if scratch.len() < STEP {
        scratch = vec![0; STEP];
    }
    let result = f(&mut scratch);
    let _ = SCRATCH.try_with(|s| s.set(scratch));
    result
}

/// The compressing half. zlib-rs (through flate2) deflates 1.8–3.2× faster than
/// miniz_oxide at the default and best levels (`bench/benches/compression.rs`). At best speed its
/// quick mode codes with fixed Huffman tables: faster by a sixth, but text came out 27 %
/// larger (0.218 of the input against 0.172) and random bytes 5.6 % larger than they went
/// in, so that level stays on miniz_oxide, as does Huffman-only (which flate2 does not
/// expose).
enum Compressor {
    Zlib(Box<Compress>),
    Miniz(Box<CompressorOxide>),
}

impl Compressor {
    fn new(level: Compression) -> Self {
        let zlib =
            |n| Compressor::Zlib(Box::new(Compress::new(flate2::Compression::new(n), false)));
        let miniz = |n, strategy| {
            let raw = CompressorOxide::with_params(DataFormat::Raw, n, strategy, WINDOW_BITS);
            Compressor::Miniz(Box::new(raw))
        };
        match level {
            Compression::Default => zlib(6),
            Compression::Best => zlib(9),
            Compression::Fast => miniz(1, CompressionStrategy::Default),
            Compression::HuffmanOnly => miniz(6, CompressionStrategy::HuffmanOnly),
        }
    }

    /// One step: compresses from `input` into `out`; returns (bytes consumed, bytes written).
    fn step(
        &mut self,
        input: &[u8],
        out: &mut [u8],
        sync: bool,
    ) -> Result<(usize, usize), FilterError> {
        let failed = |e: &dyn std::fmt::Debug| FilterError::internal("deflate", format!("{e:?}"));
        match self {
            Compressor::Zlib(c) => {
                let flush = if sync {
                    FlushCompress::Sync
                } else {
                    FlushCompress::None
                };
                let (in0, out0) = (c.total_in(), c.total_out());
                c.compress(input, out, flush).map_err(|e| failed(&e))?;
                Ok((
                    (c.total_in() - in0) as usize,
                    (c.total_out() - out0) as usize,
                ))
            }
            Compressor::Miniz(c) => {
                let flush = if sync { MZFlush::Sync } else { MZFlush::None };
                let result = miniz_oxide::deflate::stream::deflate(c, input, out, flush);
                match result.status {
                    Ok(_) | Err(MZError::Buf) => Ok((result.bytes_consumed, result.bytes_written)),
                    Err(e) => Err(failed(&e)),
                }
            }
        }
    }
}

/// One raw deflate stream per direction for the life of the session. Every write batch
/// ends with a sync flush, so each message is decodable by the peer as soon as it arrives
/// (nothing small is stuck in the compressor); the dictionary carries across messages, so
/// repetitive traffic compresses well. Both peers must use it; the levels interoperate.
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::filter::{DeflateFilter, Filter};
/// use getty_codec::Compression;
///
/// let mut tx = DeflateFilter::new(Compression::Best);
/// let mut rx = DeflateFilter::new(Compression::Fast); // levels need not match
/// let text = "{\"id\": 1, \"name\": \"getty\"} ".repeat(100);
/// let mut wire = BytesMut::new();
/// tx.encode(text.as_bytes(), &mut wire).unwrap();
/// tx.flush(&mut wire).unwrap();
/// assert!(wire.len() < text.len() / 10);
/// let mut plain = BytesMut::new();
/// rx.decode(&mut wire, &mut plain, usize::MAX).unwrap();
/// assert_eq!(&plain[..], text.as_bytes());
/// ```
pub struct DeflateFilter {
    level: Compression,
    /// Made for the first byte to compress: a session that never sends holds none of its
    /// state (about 310 KiB at the default level).
    compressor: Option<Compressor>,
    /// Made for the first wire byte received.
    inflater: Option<Box<Decompress>>,
    /// Bytes were compressed since the last sync flush.
    unflushed: bool,
    /// The last four wire bytes the inflater took, oldest in the high byte. Every batch the
    /// peer sends ends with a sync flush, whose last bytes are [`SYNC_MARKER`]: anything
    /// else at an EOF means the stream was cut inside a batch.
    last_taken: u32,
}

impl DeflateFilter {
    /// A filter compressing at `level` (decompression accepts any level).
    ///
    /// ```
    /// let f = getty_codec::filter::DeflateFilter::new(getty_codec::Compression::HuffmanOnly);
    /// assert_eq!(f.level(), getty_codec::Compression::HuffmanOnly);
    /// ```
    pub fn new(level: Compression) -> Self {
        DeflateFilter {
            level,
            compressor: None,
            inflater: None,
            unflushed: false,
            last_taken: SYNC_TAIL,
        }
    }

    /// The compression level.
    ///
    /// ```
    /// let f = getty_codec::filter::DeflateFilter::new(getty_codec::Compression::Fast);
    /// assert_eq!(f.level(), getty_codec::Compression::Fast);
    /// ```
    pub fn level(&self) -> Compression {
        self.level
    }

    /// Compresses `input` into `wire`, a step at a time.
    fn deflate(
        &mut self,
        mut input: &[u8],
        wire: &mut BytesMut,
        sync: bool,
    ) -> Result<(), FilterError> {
        let level = self.level;
        let compressor = self
            .compressor
            .get_or_insert_with(|| Compressor::new(level));
        with_scratch(|scratch| loop {
            let room = STEP.min(input.len() + 64).max(64);
            let (consumed, written) = compressor.step(input, &mut scratch[..room], sync)?;
            wire.extend_from_slice(&scratch[..written]);
            input = &input[consumed..];
            // Done when the input is taken and the output was not filled to the brim (a
            // full output may mean the compressor has more to give).
            if input.is_empty() && written < room {
                return Ok(());
            }
        })
    }
}

impl Filter for DeflateFilter {
    fn decode(
        &mut self,
        wire: &mut BytesMut,
        plain: &mut BytesMut,
        limit: usize,
    ) -> Result<(), FilterError> {
        if wire.is_empty() && self.inflater.is_none() {
            return Ok(()); // nothing received yet: no inflater needed
        }
        let inflater = self
            .inflater
            .get_or_insert_with(|| Box::new(Decompress::new(false)));
        with_scratch(|scratch| {
            let mut produced = 0;
            while produced < limit {
                let room = (limit - produced).min(STEP);
                let (in0, out0) = (inflater.total_in(), inflater.total_out());
                let status = inflater
                    .decompress(&wire[..], &mut scratch[..room], FlushDecompress::None)
                    .map_err(|e| FilterError::malformed("deflate", e))?;
                let consumed = (inflater.total_in() - in0) as usize;
                let written = (inflater.total_out() - out0) as usize;
                // Only the last four bytes taken can change the record.
                let taken = &wire[consumed.saturating_sub(4)..consumed];
                self.last_taken = taken
                    .iter()
                    .fold(self.last_taken, |tail, &b| tail << 8 | u32::from(b));
                wire.advance(consumed);
                plain.extend_from_slice(&scratch[..written]);
                produced += written;
                if status == Status::StreamEnd {
                    // A continuous stream never ends while the session lives.
                    return Err(FilterError::malformed("deflate", "stream ended early"));
                }
                if consumed == 0 && written == 0 {
                    break; // needs more input
                }
            }
            Ok(())
        })
    }

    fn encode(&mut self, plain: &[u8], wire: &mut BytesMut) -> Result<(), FilterError> {
        if plain.is_empty() {
            return Ok(());
        }
        self.unflushed = true;
        self.deflate(plain, wire, false)
    }

    fn holds_partial_input(&self) -> bool {
        self.last_taken != SYNC_TAIL
    }

    fn flush(&mut self, wire: &mut BytesMut) -> Result<(), FilterError> {
        if !std::mem::take(&mut self.unflushed) {
            return Ok(()); // an idle session's flush emits nothing
        }
        // A sync flush is complete when it ends with the empty stored block's length
        // fields. One call is not always enough: miniz_oxide can leave part of its lookahead
        // for the next call (seen with the Huffman-only strategy), so call until it is.
        let start = wire.len();
        for _ in 0..MAX_FLUSH_CALLS {
            self.deflate(&[], wire, true)?;
            if wire[start..].ends_with(&SYNC_MARKER) {
                return Ok(());
            }
        }
        Err(FilterError::internal(
            "deflate",
            "sync flush did not complete",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEVELS: [Compression; 4] = [
        Compression::Default,
        Compression::Fast,
        Compression::Best,
        Compression::HuffmanOnly,
    ];

    fn text(n: usize) -> Vec<u8> {
        let word = b"getty session message ";
        (0..n)
            .map(|i| word[i % word.len()] ^ (i / 977) as u8)
            .collect()
    }

    #[test]
    fn every_level_round_trips_message_by_message() {
        for level in LEVELS {
            let (mut tx, mut rx) = (DeflateFilter::new(level), DeflateFilter::new(level));
            for size in [0, 1, 100, 5000, 200_000] {
                let msg = text(size);
                let mut wire = BytesMut::new();
                tx.encode(&msg, &mut wire).unwrap();
                tx.flush(&mut wire).unwrap();
                let mut plain = BytesMut::new();
                rx.decode(&mut wire, &mut plain, usize::MAX).unwrap();
                assert_eq!(
                    plain.len(),
                    size,
                    "{level:?}: the message is decodable at once"
                );
                assert_eq!(&plain[..], &msg[..]);
                assert!(wire.is_empty());
            }
        }
    }

    #[test]
    fn huffman_only_still_compresses_text_but_less_than_default() {
        let msg = text(100_000);
        let size = |level| {
            let mut wire = BytesMut::new();
            let mut f = DeflateFilter::new(level);
            f.encode(&msg, &mut wire).unwrap();
            f.flush(&mut wire).unwrap();
            wire.len()
        };
        let (huffman, default) = (size(Compression::HuffmanOnly), size(Compression::Default));
        assert!(huffman < msg.len(), "huffman {huffman}");
        assert!(default < huffman, "default {default} vs huffman {huffman}");
    }

    /// Many small pieces before one flush: miniz_oxide's Huffman-only mode once left part
    /// of its lookahead unflushed after a single sync call.
    #[test]
    fn a_flush_after_many_pieces_emits_everything() {
        for level in LEVELS {
            let (mut tx, mut rx) = (DeflateFilter::new(level), DeflateFilter::new(level));
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            for round in 0..100 {
                let msg = text((next() % 40_000) as usize);
                let mut wire = BytesMut::new();
                let mut rest = &msg[..];
                while !rest.is_empty() {
                    let n = ((next() % 5000) as usize + 1).min(rest.len());
                    tx.encode(&rest[..n], &mut wire).unwrap();
                    rest = &rest[n..];
                }
                tx.flush(&mut wire).unwrap();
                let mut plain = BytesMut::new();
                rx.decode(&mut wire, &mut plain, usize::MAX).unwrap();
                assert_eq!(&plain[..], &msg[..], "{level:?}, round {round}");
            }
        }
    }

    /// Issue 11 part 6: a session that has not sent holds no compressor, one that has not
    /// received holds no inflater.
    #[test]
    fn the_engines_are_made_on_first_use() {
        for level in LEVELS {
            let (mut tx, mut rx) = (DeflateFilter::new(level), DeflateFilter::new(level));
            let mut wire = BytesMut::new();
            let mut plain = BytesMut::new();
            tx.flush(&mut wire).unwrap();
            rx.decode(&mut wire, &mut plain, 1 << 20).unwrap();
            for f in [&tx, &rx] {
                assert!(f.compressor.is_none() && f.inflater.is_none(), "{level:?}");
            }
            tx.encode(b"the first message", &mut wire).unwrap();
            tx.flush(&mut wire).unwrap();
            assert!(tx.compressor.is_some() && tx.inflater.is_none());
            rx.decode(&mut wire, &mut plain, 1 << 20).unwrap();
            assert!(rx.compressor.is_none() && rx.inflater.is_some());
            assert_eq!(&plain[..], b"the first message");
        }
    }

    #[test]
    fn an_idle_flush_emits_nothing() {
        let mut f = DeflateFilter::new(Compression::Default);
        let mut wire = BytesMut::new();
        f.flush(&mut wire).unwrap();
        assert!(wire.is_empty());
        f.encode(b"x", &mut wire).unwrap();
        f.flush(&mut wire).unwrap();
        let after_one = wire.len();
        f.flush(&mut wire).unwrap();
        assert_eq!(wire.len(), after_one);
    }

    #[test]
    fn input_cut_inside_a_batch_is_held_partial() {
        let fresh = || DeflateFilter::new(Compression::Default);
        assert!(
            !fresh().holds_partial_input(),
            "nothing received is nothing cut"
        );
        for n in [1, 40, 5000] {
            // A fresh pair for each: a later batch refers back into the earlier ones.
            let (mut tx, mut rx, mut wire) = (fresh(), fresh(), BytesMut::new());
            tx.encode(&text(n), &mut wire).unwrap();
            tx.flush(&mut wire).unwrap();
            let whole = wire.split().freeze();
            for cut in 1..whole.len() {
                let mut rx = fresh();
                let (mut part, mut plain) = (BytesMut::from(&whole[..cut]), BytesMut::new());
                rx.decode(&mut part, &mut plain, usize::MAX).unwrap();
                assert!(
                    rx.holds_partial_input() || !part.is_empty(),
                    "{n} B cut at {cut}"
                );
            }
            let (mut all, mut plain) = (BytesMut::from(&whole[..]), BytesMut::new());
            rx.decode(&mut all, &mut plain, usize::MAX).unwrap();
            assert_eq!((plain.len(), all.len()), (n, 0));
            assert!(!rx.holds_partial_input(), "a whole batch of {n} B");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let mut f = DeflateFilter::new(Compression::Default);
        // Block type 3 is reserved: the first byte 0b111 is final + type 3.
        let mut wire = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        let mut plain = BytesMut::new();
        let err = f.decode(&mut wire, &mut plain, 1 << 20).unwrap_err();
        assert_eq!(err.kind(), crate::filter::FilterErrorKind::Malformed);
    }

    #[test]
    fn a_bomb_inflates_only_up_to_the_limit() {
        let mut tx = DeflateFilter::new(Compression::Best);
        let mut wire = BytesMut::new();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            tx.encode(&zeros, &mut wire).unwrap(); // 64 MiB of zeros
        }
        tx.flush(&mut wire).unwrap();
        assert!(wire.len() < 128 * 1024, "{} wire bytes", wire.len());
        let mut rx = DeflateFilter::new(Compression::Default);
        let mut plain = BytesMut::new();
        rx.decode(&mut wire, &mut plain, 100_000).unwrap();
        assert!(plain.len() <= 100_000);
        assert!(!wire.is_empty(), "the rest waits for room");
        // Draining in bounded steps yields it all.
        let mut total = plain.len();
        loop {
            plain.clear();
            rx.decode(&mut wire, &mut plain, 1 << 20).unwrap();
            if plain.is_empty() {
                break;
            }
            total += plain.len();
        }
        assert_eq!(total, 64 << 20);
    }

    #[test]
    fn input_split_at_every_byte_decodes_alike() {
        let msg = text(3000);
        let mut tx = DeflateFilter::new(Compression::Default);
        let mut wire = BytesMut::new();
        tx.encode(&msg, &mut wire).unwrap();
        tx.flush(&mut wire).unwrap();
        let mut rx = DeflateFilter::new(Compression::Default);
        let mut plain = BytesMut::new();
        let mut pending = BytesMut::new();
        for byte in wire.iter() {
            pending.extend_from_slice(&[*byte]);
            rx.decode(&mut pending, &mut plain, usize::MAX).unwrap();
        }
        assert_eq!(&plain[..], &msg[..]);
    }
}
