//! The TCP `DeflateFilter` at every level: a round trip of arbitrary writes and flushes, and
//! arbitrary (hostile) wire bytes, both read in arbitrary pieces under an arbitrary
//! plain-bytes limit.
//!
//! Oracles:
//! - round trip: after each flush the peer inflates exactly the bytes encoded so far, and
//!   then holds no partial input;
//! - the cap: no `decode` call appends more plain bytes than its limit, on good or hostile
//!   input (a decompression bomb inflates a limit at a time);
//! - split invariance on hostile input: read whole or in pieces, it fails or not alike,
//!   and when it does not, inflates to the same bytes.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use getty_codec::filter::{DeflateFilter, Filter};
use getty_codec::Compression;
use getty_fuzz::pieces;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    level: u8,
    limit: u16,
    sizes: Vec<u8>,
    writes: Vec<(Vec<u8>, bool)>,
    hostile: Vec<u8>,
}

/// Stop inflating hostile input past this much: enough to see the cap at work.
const ENOUGH: usize = 1 << 20;

/// Reads `chunks` as a transport does: after each, decodes while that makes progress.
/// Answers whether it failed.
/// Wire bytes the filter has not taken stay in `wire` for the next read.
fn read(
    rx: &mut DeflateFilter,
    wire: &mut BytesMut,
    chunks: &[&[u8]],
    limit: usize,
    plain: &mut BytesMut,
) -> bool {
    for chunk in chunks {
        wire.extend_from_slice(chunk);
        loop {
            let (wire_before, plain_before) = (wire.len(), plain.len());
            if rx.decode(wire, plain, limit).is_err() {
                return true;
            }
            let produced = plain.len() - plain_before;
            assert!(
                produced <= limit,
                "{produced} plain bytes over a limit of {limit}"
            );
            if (wire.len() == wire_before && produced == 0) || plain.len() > ENOUGH {
                break;
            }
        }
        if plain.len() > ENOUGH {
            break;
        }
    }
    false
}

fuzz_target!(|input: Input| {
    let level = [
        Compression::Default,
        Compression::Fast,
        Compression::Best,
        Compression::HuffmanOnly,
    ][usize::from(input.level % 4)];
    let limit = usize::from(input.limit).max(1);

    let (mut tx, mut rx) = (DeflateFilter::new(level), DeflateFilter::new(level));
    let mut sent = Vec::new();
    let mut plain = BytesMut::new();
    let mut unread = BytesMut::new();
    let count = input.writes.len();
    for (i, (data, flush)) in input.writes.iter().enumerate() {
        let mut wire = BytesMut::new();
        tx.encode(data, &mut wire).unwrap();
        sent.extend_from_slice(data);
        if *flush || i + 1 == count {
            tx.flush(&mut wire).unwrap();
        }
        let chunks = pieces(&wire, &input.sizes);
        assert!(!read(&mut rx, &mut unread, &chunks, limit, &mut plain));
        if *flush || i + 1 == count {
            assert_eq!(&plain[..], &sent[..], "a flush left bytes behind");
            assert!(unread.is_empty(), "wire bytes not taken after a flush");
            assert!(
                !rx.holds_partial_input(),
                "partial input after a whole flush"
            );
        }
    }

    let mut whole = BytesMut::new();
    let mut split = BytesMut::new();
    let mut rx = DeflateFilter::new(level);
    let whole_failed = read(
        &mut rx,
        &mut BytesMut::new(),
        &[&input.hostile[..]],
        limit,
        &mut whole,
    );
    let chunks = pieces(&input.hostile, &input.sizes);
    let mut rx = DeflateFilter::new(level);
    let split_failed = read(&mut rx, &mut BytesMut::new(), &chunks, limit, &mut split);
    if whole.len() <= ENOUGH && split.len() <= ENOUGH {
        assert_eq!(
            whole_failed, split_failed,
            "failed only when read whole or split"
        );
        if !whole_failed {
            assert_eq!(whole, split, "inflated otherwise when split");
        }
    }
});
