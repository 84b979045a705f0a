//! The outbound queue against a model (issue #11, part 1; issue #14): random pushes,
//! codec-style appends to its tail, payloads left out of an encoding (`push_view`, whatever
//! it is told of the queue), `write_to` against sinks that take what they like, and
//! `drain_into` with random limits, then everything drained.
//!
//! The model is the plain bytes queued and not yet gone, in order. Every byte a sink is
//! offered is checked against the model's front where it is offered, so a byte that would
//! leave out of order fails the check even when the sink does not take it.
//!
//! One model, two drivers: the proptests in `outbound_model_tests.rs` generate the
//! operations, and [`decode_fuzz_input`] decodes them from fuzz input (the fuzz target
//! `outbound_queue`), both from the tables below. `outbound_filter_model_tests.rs` reuses
//! the model for the queue feeding a filter.

use std::io::{self, IoSlice, Write};

use arbitrary::Unstructured;
use bytes::Bytes;

use getty_reactor::BufPool;

use crate::model_input::{pick, Weighted};
use crate::outbound::{Outbound, COPY_THRESHOLD, MAX_IOVECS, VIEWS_WHILE_BELOW};

// ---------------------------------------------------------------------------------------
// The model and the bytes of the stream
// ---------------------------------------------------------------------------------------

/// The bytes queued and not gone yet, in order: a `Vec` and the index of its first byte
/// still queued (the front is dropped in bulk, not byte by byte).
#[derive(Default)]
pub(crate) struct Model {
    bytes: Vec<u8>,
    head: usize,
}

impl Model {
    pub(crate) fn len(&self) -> usize {
        self.bytes.len() - self.head
    }

    pub(crate) fn queued(&self) -> &[u8] {
        &self.bytes[self.head..]
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.head > 0 && self.head >= self.bytes.len() / 2 {
            self.bytes.drain(..self.head);
            self.head = 0;
        }
        self.bytes.extend_from_slice(data);
    }

    /// The first `n` bytes left (each was checked against the front when it was offered).
    pub(crate) fn pop(&mut self, n: usize) {
        assert!(n <= self.len(), "{n} bytes left a queue of {}", self.len());
        self.head += n;
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.head = 0;
    }
}

/// Fails unless `got` equals `queued[at..]`'s first bytes: what a sink is offered (or a
/// peer decodes) at offset `at` must be exactly what was queued there.
pub(crate) fn expect_at(queued: &[u8], at: usize, got: &[u8], what: &str) {
    let end = at + got.len();
    assert!(
        end <= queued.len(),
        "{what}: {} bytes at offset {at}, but only {} are queued",
        got.len(),
        queued.len()
    );
    if got != &queued[at..end] {
        let i = got
            .iter()
            .zip(&queued[at..end])
            .position(|(a, b)| a != b)
            .expect("they differ");
        panic!(
            "{what}: byte {} of the queue is out of place (got {:#04x}, queued {:#04x})",
            at + i,
            got[i],
            queued[at + i]
        );
    }
}

fn mix(x: u64) -> u64 {
    // splitmix64's finaliser: neighbouring inputs give unrelated outputs.
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Bytes `pos..pos + len` of the test stream: pseudo-random per position, so a byte out of
/// place shows. With `text`, they compress (for deflate): a repeated sentence, with every
/// 64th byte still a function of its position.
pub(crate) fn stream_bytes(pos: u64, len: usize, text: bool) -> Vec<u8> {
    const SENTENCE: &[u8] = b"getty keeps every byte in the order it was queued; ";
    let mut out = Vec::with_capacity(len);
    let end = pos + len as u64;
    let mut p = pos;
    while p < end {
        let word = mix(p / 8).to_le_bytes();
        let from = (p % 8) as usize;
        let take = (8 - from).min((end - p) as usize);
        out.extend_from_slice(&word[from..from + take]);
        p += take as u64;
    }
    if text {
        for (i, b) in out.iter_mut().enumerate() {
            let p = pos + i as u64;
            if p & 63 != 0 {
                *b = SENTENCE[(p % SENTENCE.len() as u64) as usize];
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The outbound queue against sinks
// ---------------------------------------------------------------------------------------

/// What a sink does with one `write`/`writev`.
#[derive(Debug, Clone)]
pub(crate) enum Sink {
    /// Takes at most `bytes` (0: `Ok(0)`) from the first `iovecs` buffers only (1 is what
    /// `Write::write_vectored`'s default does).
    Take {
        bytes: usize,
        iovecs: usize,
    },
    WouldBlock,
    Interrupted,
    /// Any other error (the connection broke).
    Broken,
}

/// A sink that checks what it is offered against the model before taking any of it.
struct Checking<'a> {
    queued: &'a [u8],
    behaviour: Sink,
    calls: usize,
    took: usize,
}

impl Write for Checking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.calls += 1;
        assert_eq!(self.calls, 1, "write_to makes one call");
        assert!(
            bufs.len() <= MAX_IOVECS,
            "{} buffers in one writev",
            bufs.len()
        );
        let mut offered = 0;
        for buf in bufs {
            expect_at(self.queued, offered, buf, "write_to");
            offered += buf.len();
        }
        assert!(
            offered > 0 || self.queued.is_empty(),
            "write_to offered nothing with {} bytes queued",
            self.queued.len()
        );
        match self.behaviour {
            Sink::Take { bytes, iovecs } => {
                let mut room = bytes;
                for buf in bufs.iter().take(iovecs) {
                    let n = buf.len().min(room);
                    self.took += n;
                    room -= n;
                }
                Ok(self.took)
            }
            Sink::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
            Sink::Interrupted => Err(io::ErrorKind::Interrupted.into()),
            Sink::Broken => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// `Outbound::push` of that many bytes (copied below the threshold, queued above).
    Push(usize),
    /// A codec appending that many bytes to the tail.
    Encode(usize),
    /// `Outbound::push_view` of `len` bytes a codec left out of its encoding, told that
    /// `queued` bytes are queued before it and whether the last flush was `blocked`. Those
    /// decide only whether the payload is queued as it is or copied: the bytes leave in
    /// order either way.
    PushView {
        len: usize,
        queued: usize,
        blocked: bool,
    },
    /// `count` pushes of `len` bytes each, each behind `small` encoded bytes (when not 0,
    /// those become a chunk of their own): many chunks at once.
    Burst {
        count: usize,
        len: usize,
        small: usize,
    },
    /// One `write_to`.
    Write(Sink),
    /// `write_to` until the queue is empty or a call takes nothing, at most `calls` times,
    /// into a socket that takes `per_call` bytes each time (a flush in `settle`).
    Flush {
        per_call: usize,
        calls: usize,
    },
    /// One `drain_into`; the sink fails on its `fail_at`-th call (from 0), if given.
    Drain {
        limit: usize,
        fail_at: Option<usize>,
    },
    Clear,
    /// A message of that many bytes encoded into the tail, then refused (past the hard
    /// bound) and taken back with `take_back_tail`: none of its bytes may leave, and the
    /// tail keeps no room the message grew it by.
    Refused(usize),
}

pub(crate) struct Harness {
    out: Outbound,
    model: Model,
    /// Where written chunks go back (`recycle`) and where pushed payloads come from, so
    /// that a chunk given back before its last byte left would have its bytes overwritten
    /// by the next payload, and the check against the model would catch it.
    pool: BufPool,
    /// Where the next pushed byte sits in the stream.
    pos: u64,
}

impl Harness {
    pub(crate) fn new() -> Self {
        Harness {
            out: Outbound::default(),
            model: Model::default(),
            pool: BufPool::new(COPY_THRESHOLD, 4).large_budget(1 << 20),
            pos: 0,
        }
    }

    fn next_bytes(&mut self, len: usize) -> Vec<u8> {
        let data = stream_bytes(self.pos, len, false);
        self.pos += len as u64;
        self.model.push(&data);
        data
    }

    /// The next `len` bytes of the stream as a payload, in memory the pool had kept.
    fn next_payload(&mut self, len: usize) -> Bytes {
        let data = self.next_bytes(len);
        let mut memory = self
            .pool
            .take_large(len, usize::MAX)
            .unwrap_or_else(|| self.pool.take());
        memory.extend_from_slice(&data);
        memory.freeze()
    }

    pub(crate) fn chunks(&self) -> usize {
        self.out.chunks.as_ref().map_or(0, |c| c.queue.len())
    }

    pub(crate) fn apply(&mut self, op: &Op) {
        match op {
            Op::Push(len) => {
                let payload = self.next_payload(*len);
                self.out.push(payload);
            }
            Op::Encode(len) => {
                let data = self.next_bytes(*len);
                self.out.tail.extend_from_slice(&data);
            }
            &Op::PushView {
                len,
                queued,
                blocked,
            } => self.push_view(len, queued, blocked),
            Op::Burst { count, len, small } => {
                for _ in 0..*count {
                    if *small > 0 {
                        let data = self.next_bytes(*small);
                        self.out.tail.extend_from_slice(&data);
                    }
                    let payload = self.next_payload(*len);
                    self.out.push(payload);
                }
            }
            Op::Write(sink) => {
                self.write(sink.clone());
            }
            Op::Flush { per_call, calls } => {
                for _ in 0..*calls {
                    let sink = Sink::Take {
                        bytes: *per_call,
                        iovecs: MAX_IOVECS,
                    };
                    if self.out.is_empty() || self.write(sink) == Some(0) {
                        break;
                    }
                }
            }
            Op::Drain { limit, fail_at } => self.drain(*limit, *fail_at),
            Op::Clear => {
                self.out.clear();
                self.model.clear();
            }
            Op::Refused(len) => self.refused(*len),
        }
        self.check();
    }

    /// Encodes `len` bytes the model never gets (from another stream, so a byte of them
    /// that left would not match the model's), then takes them back.
    fn refused(&mut self, len: usize) {
        let (tail_len, capacity) = (self.out.tail.len(), self.out.tail.capacity());
        let refused = stream_bytes(self.pos | 1 << 63, len, false);
        self.out.tail.extend_from_slice(&refused);
        self.out.take_back_tail(tail_len, capacity);
        assert_eq!(self.out.tail.len(), tail_len, "the refused bytes are gone");
        assert!(
            self.out.tail.capacity() <= capacity,
            "a refused message of {len} B left the tail {} B of room, up from {capacity}",
            self.out.tail.capacity()
        );
    }

    /// A payload queued behind an encoding: past the queue's length, or behind a blocked
    /// flush, it must be copied (the queue holds no view of it, so no read buffer is
    /// pinned); otherwise it is queued as `push` would queue it.
    fn push_view(&mut self, len: usize, queued: usize, blocked: bool) {
        let payload = self.next_payload(len);
        let chunks_before = self.chunks();
        let tail_before = self.out.tail.len();
        self.out.push_view(payload, queued, blocked);
        if blocked || queued >= VIEWS_WHILE_BELOW {
            assert_eq!(
                self.chunks(),
                chunks_before,
                "a view was queued behind {queued} bytes (blocked: {blocked})"
            );
        } else if len >= COPY_THRESHOLD {
            // The zero-copy case: the payload is a chunk of its own (behind the tail's
            // bytes, which become one first).
            let added = 1 + usize::from(tail_before > 0);
            assert_eq!(
                self.chunks(),
                chunks_before + added,
                "a payload of {len} B was copied though the queue drains"
            );
        }
    }

    /// One `write_to`; returns what it wrote, `None` on an error.
    fn write(&mut self, behaviour: Sink) -> Option<usize> {
        let before = self.out.len();
        let mut sink = Checking {
            queued: self.model.queued(),
            behaviour,
            calls: 0,
            took: 0,
        };
        let result = self.out.write_to(&mut sink, &mut self.pool);
        let (calls, took) = (sink.calls, sink.took);
        assert_eq!(calls, 1, "write_to makes exactly one call");
        match result {
            Ok(n) => {
                assert_eq!(n, took, "write_to reports what the sink took");
                self.model.pop(n);
                Some(n)
            }
            Err(_) => {
                assert_eq!(self.out.len(), before, "a failed write takes nothing");
                None
            }
        }
    }

    fn drain(&mut self, limit: usize, fail_at: Option<usize>) {
        let before = self.out.len();
        let most_calls = self.chunks() + 1;
        let queued = self.model.queued();
        let (mut at, mut calls) = (0, 0);
        let result = self.out.drain_into(limit, &mut self.pool, |piece| {
            calls += 1;
            assert!(
                calls <= most_calls,
                "drain_into called its sink {calls} times"
            );
            assert!(!piece.is_empty(), "drain_into handed over an empty piece");
            expect_at(queued, at, piece, "drain_into");
            if fail_at == Some(calls - 1) {
                return Err(());
            }
            at += piece.len();
            Ok(())
        });
        match result {
            Ok(taken) => {
                assert_eq!(taken, at, "drain_into reports what it handed over");
                assert_eq!(taken, limit.min(before), "drain_into stops at its limit");
            }
            Err(()) => assert!(at < limit.min(before)),
        }
        // The pieces the sink accepted are gone; the one it refused is still queued.
        self.model.pop(at);
    }

    fn check(&self) {
        assert_eq!(self.out.len(), self.model.len(), "len()");
        assert_eq!(self.out.is_empty(), self.model.len() == 0, "is_empty()");
        if let Some(chunks) = self.out.chunks.as_deref() {
            let sum: usize = chunks.queue.iter().map(Bytes::len).sum();
            assert_eq!(chunks.len, sum, "the chunks' byte count");
            assert!(
                chunks.queue.iter().all(|c| !c.is_empty()),
                "an empty chunk is queued"
            );
        }
    }

    /// Drains everything into a sink that takes all it is offered (with `writev`), or
    /// through `drain_into`, and checks that nothing is left over.
    pub(crate) fn finish(&mut self, with_drain: bool) {
        let most_calls = self.chunks() + 2;
        for _ in 0..most_calls {
            if self.out.is_empty() {
                break;
            }
            if with_drain {
                self.drain(usize::MAX, None);
            } else {
                let n = self.write(Sink::Take {
                    bytes: usize::MAX,
                    iovecs: MAX_IOVECS,
                });
                assert!(n > Some(0), "no progress into a sink that takes everything");
            }
            self.check();
        }
        assert!(self.out.is_empty(), "{} bytes left over", self.out.len());
        assert_eq!(self.model.len(), 0);
    }
}

/// Runs `ops` against the queue, checking it against the model after each, then drains
/// the queue (through `drain_into` or `write_to`): everything not cleared comes out, in
/// order. Panics at the first disagreement.
pub(crate) fn run(ops: &[Op], with_drain: bool) {
    let mut h = Harness::new();
    for op in ops {
        h.apply(op);
    }
    h.finish(with_drain);
}

// ---------------------------------------------------------------------------------------
// What the operations are drawn from, by the proptests and from fuzz input
// ---------------------------------------------------------------------------------------

/// The most operations in one run.
pub(crate) const MOST_OPS: usize = 250;

/// How often each kind of operation comes up: push, encode, burst, write, flush, drain,
/// clear, push_view, refused.
pub(crate) const OP_WEIGHTS: [u32; 9] = [12, 6, 1, 8, 2, 6, 1, 6, 2];

/// A push: either side of the copy threshold, at it, and well past it.
pub(crate) const SIZE: Weighted<usize> = Weighted(&[
    (3, 0..=63),
    (3, 64..=COPY_THRESHOLD - 1),
    (2, COPY_THRESHOLD - 3..=COPY_THRESHOLD + 2),
    (3, COPY_THRESHOLD..=65_535),
    (1, 65_536..=262_144),
]);

/// What a codec appends to the tail.
pub(crate) const ENCODE: Weighted<usize> = Weighted(&[(1, 0..=2_999)]);

/// What `push_view` is told is queued before its payload: below, at and past the length
/// up to which views are queued as they are.
pub(crate) const VIEW_QUEUED: Weighted<usize> = Weighted(&[
    (2, 0..=VIEWS_WHILE_BELOW - 2),
    (1, VIEWS_WHILE_BELOW - 1..=VIEWS_WHILE_BELOW),
    (1, VIEWS_WHILE_BELOW + 1..=1 << 20),
]);

/// A burst: how many large pushes, how large, and the encoded bytes before each (none, or
/// a few, which then become a chunk of their own).
pub(crate) const BURST_COUNT: Weighted<usize> = Weighted(&[(1, 1..=100)]);
pub(crate) const BURST_LEN: Weighted<usize> = Weighted(&[(1, COPY_THRESHOLD..=8_999)]);
pub(crate) const BURST_SMALL: Weighted<usize> = Weighted(&[(1, 0..=0), (1, 1..=99)]);

/// How often a sink takes, would block, is interrupted, or is broken.
pub(crate) const SINK_WEIGHTS: [u32; 4] = [8, 1, 1, 1];

/// What a sink takes from one call: nothing, a few bytes, part of a chunk, several, all.
pub(crate) const SINK_BYTES: Weighted<usize> = Weighted(&[
    (1, 0..=0),
    (1, 1..=15),
    (1, 16..=19_999),
    (1, 20_000..=599_999),
    (1, usize::MAX..=usize::MAX),
]);

/// From how many buffers a sink takes: one (as `Write::write_vectored`'s default does), a
/// few, or all.
pub(crate) const SINK_IOVECS: Weighted<usize> =
    Weighted(&[(1, 1..=1), (1, 2..=4), (1, MAX_IOVECS..=MAX_IOVECS)]);

/// A flush: what the socket takes per call, and the most calls.
pub(crate) const FLUSH_PER_CALL: Weighted<usize> = Weighted(&[(1, 1..=99_999)]);
pub(crate) const FLUSH_CALLS: Weighted<usize> = Weighted(&[(1, 1..=49)]);

/// A `drain_into` limit, and the call on which its sink fails (when it does, half the
/// time).
pub(crate) const DRAIN_LIMIT: Weighted<usize> = Weighted(&[
    (1, 0..=0),
    (1, 1..=15),
    (1, 16..=69_999),
    (1, 70_000..=599_999),
    (1, usize::MAX..=usize::MAX),
]);
pub(crate) const FAIL_AT: Weighted<usize> = Weighted(&[(1, 0..=3)]);

/// What one fuzz input may push in all: room for more chunks than one `writev` takes
/// (past it, pushes are empty and bursts shorter), while the checks of every write, which
/// compare all the bytes offered, keep an input to milliseconds.
const FUZZ_INPUT_BYTES: usize = 256 * 1024;

/// Operations decoded from fuzz input, from the tables above, within
/// [`FUZZ_INPUT_BYTES`].
struct FuzzOps<'a> {
    u: Unstructured<'a>,
    bytes_left: usize,
}

impl FuzzOps<'_> {
    /// `len` bytes, or what is left of the input's allowance.
    fn take_bytes(&mut self, len: usize) -> usize {
        let len = len.min(self.bytes_left);
        self.bytes_left -= len;
        len
    }

    fn op(&mut self) -> arbitrary::Result<Op> {
        let u = &mut self.u;
        Ok(match pick(u, &OP_WEIGHTS)? {
            0 => {
                let len = SIZE.draw(u)?;
                Op::Push(self.take_bytes(len))
            }
            1 => {
                let len = ENCODE.draw(u)?;
                Op::Encode(self.take_bytes(len))
            }
            2 => {
                let count = BURST_COUNT.draw(u)?;
                let (len, small) = (BURST_LEN.draw(u)?, BURST_SMALL.draw(u)?);
                let count = count.min(self.bytes_left / (len + small));
                self.take_bytes(count * (len + small));
                Op::Burst { count, len, small }
            }
            3 => Op::Write(sink(u)?),
            4 => Op::Flush {
                per_call: FLUSH_PER_CALL.draw(u)?,
                calls: FLUSH_CALLS.draw(u)?,
            },
            5 => {
                let limit = DRAIN_LIMIT.draw(u)?;
                let fail_at = if u.arbitrary()? {
                    Some(FAIL_AT.draw(u)?)
                } else {
                    None
                };
                Op::Drain { limit, fail_at }
            }
            6 => Op::Clear,
            7 => {
                let len = SIZE.draw(u)?;
                let (queued, blocked) = (VIEW_QUEUED.draw(u)?, u.arbitrary()?);
                Op::PushView {
                    len: self.take_bytes(len),
                    queued,
                    blocked,
                }
            }
            _ => {
                let len = SIZE.draw(u)?;
                Op::Refused(self.take_bytes(len))
            }
        })
    }
}

fn sink(u: &mut Unstructured<'_>) -> arbitrary::Result<Sink> {
    Ok(match pick(u, &SINK_WEIGHTS)? {
        0 => Sink::Take {
            bytes: SINK_BYTES.draw(u)?,
            iovecs: SINK_IOVECS.draw(u)?,
        },
        1 => Sink::WouldBlock,
        2 => Sink::Interrupted,
        _ => Sink::Broken,
    })
}

/// The operations `data` decodes to (at most [`MOST_OPS`]), and whether to drain the
/// queue at the end through `drain_into` rather than `write_to`.
pub(crate) fn decode_fuzz_input(data: &[u8]) -> (Vec<Op>, bool) {
    let mut input = FuzzOps {
        u: Unstructured::new(data),
        bytes_left: FUZZ_INPUT_BYTES,
    };
    let with_drain = input.u.arbitrary().unwrap_or(false);
    let mut ops = Vec::new();
    while !input.u.is_empty() && ops.len() < MOST_OPS {
        match input.op() {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    (ops, with_drain)
}
