//! Model-based property tests of the stream write path (issue #11, part 1): the outbound
//! queue driven by random pushes, codec-style appends to its tail, `write_to` against
//! sinks that take what they like, and `drain_into` with random limits; then the same
//! queue feeding a filter (deflate, TLS, both) whose wire bytes go out in random pieces
//! and are decoded by a peer filter.
//!
//! The model is the plain bytes queued and not yet gone, in order. Every byte a sink is
//! offered is checked against the model's front where it is offered, so a byte that would
//! leave out of order fails the test even when the sink does not take it.
//!
//! Included from the tests module of `outbound.rs`, so it sees the queue's internals.

use std::io::{self, IoSlice, Write};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use getty_codec::filter::{Compression, DeflateFilter, Filter, Layered, TlsFilter};
use getty_codec::rustls::{ClientConfig, ServerConfig};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::outbound::{Outbound, COPY_THRESHOLD, MAX_IOVECS};

// ---------------------------------------------------------------------------------------
// The model and the bytes of the stream
// ---------------------------------------------------------------------------------------

/// The bytes queued and not gone yet, in order: a `Vec` and the index of its first byte
/// still queued (the front is dropped in bulk, not byte by byte).
#[derive(Default)]
struct Model {
    bytes: Vec<u8>,
    head: usize,
}

impl Model {
    fn len(&self) -> usize {
        self.bytes.len() - self.head
    }

    fn queued(&self) -> &[u8] {
        &self.bytes[self.head..]
    }

    fn push(&mut self, data: &[u8]) {
        if self.head > 0 && self.head >= self.bytes.len() / 2 {
            self.bytes.drain(..self.head);
            self.head = 0;
        }
        self.bytes.extend_from_slice(data);
    }

    /// The first `n` bytes left (each was checked against the front when it was offered).
    fn pop(&mut self, n: usize) {
        assert!(n <= self.len(), "{n} bytes left a queue of {}", self.len());
        self.head += n;
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.head = 0;
    }
}

/// Fails unless `got` equals `queued[at..]`'s first bytes: what a sink is offered (or a
/// peer decodes) at offset `at` must be exactly what was queued there.
fn expect_at(queued: &[u8], at: usize, got: &[u8], what: &str) {
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
fn stream_bytes(pos: u64, len: usize, text: bool) -> Vec<u8> {
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
enum Sink {
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
enum Op {
    /// `Outbound::push` of that many bytes (copied below the threshold, queued above).
    Push(usize),
    /// A codec appending that many bytes to the tail.
    Encode(usize),
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
}

struct Harness {
    out: Outbound,
    model: Model,
    /// Where the next pushed byte sits in the stream.
    pos: u64,
    /// Chunks queued at once, at most.
    most_chunks: usize,
}

impl Harness {
    fn new() -> Self {
        Harness {
            out: Outbound::default(),
            model: Model::default(),
            pos: 0,
            most_chunks: 0,
        }
    }

    fn next_bytes(&mut self, len: usize) -> Vec<u8> {
        let data = stream_bytes(self.pos, len, false);
        self.pos += len as u64;
        self.model.push(&data);
        data
    }

    fn chunks(&self) -> usize {
        self.out.chunks.as_ref().map_or(0, |c| c.queue.len())
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Push(len) => {
                let data = self.next_bytes(*len);
                self.out.push(Bytes::from(data));
            }
            Op::Encode(len) => {
                let data = self.next_bytes(*len);
                self.out.tail.extend_from_slice(&data);
            }
            Op::Burst { count, len, small } => {
                for _ in 0..*count {
                    if *small > 0 {
                        let data = self.next_bytes(*small);
                        self.out.tail.extend_from_slice(&data);
                    }
                    let data = self.next_bytes(*len);
                    self.out.push(Bytes::from(data));
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
        }
        self.most_chunks = self.most_chunks.max(self.chunks());
        self.check();
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
        let result = self.out.write_to(&mut sink);
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
        let result = self.out.drain_into(limit, |piece| {
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
    fn finish(&mut self, with_drain: bool) {
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

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0..64usize,
        3 => 64..COPY_THRESHOLD,
        2 => COPY_THRESHOLD - 3..COPY_THRESHOLD + 3,
        3 => COPY_THRESHOLD..65_536,
        1 => 65_536..=262_144usize,
    ]
}

fn sink() -> impl Strategy<Value = Sink> {
    let bytes = prop_oneof![
        Just(0usize),
        1..16usize,
        16..20_000usize,
        20_000..600_000usize,
        Just(usize::MAX),
    ];
    let iovecs = prop_oneof![Just(1usize), 2..=4usize, Just(MAX_IOVECS)];
    prop_oneof![
        8 => (bytes, iovecs).prop_map(|(bytes, iovecs)| Sink::Take { bytes, iovecs }),
        1 => Just(Sink::WouldBlock),
        1 => Just(Sink::Interrupted),
        1 => Just(Sink::Broken),
    ]
}

fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        1..16usize,
        16..70_000usize,
        70_000..600_000usize,
        Just(usize::MAX),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => size().prop_map(Op::Push),
        6 => (0..3000usize).prop_map(Op::Encode),
        1 => (1..=100usize, COPY_THRESHOLD..9000usize, prop_oneof![Just(0usize), 1..100usize])
            .prop_map(|(count, len, small)| Op::Burst { count, len, small }),
        8 => sink().prop_map(Op::Write),
        2 => (1..100_000usize, 1..50usize)
            .prop_map(|(per_call, calls)| Op::Flush { per_call, calls }),
        6 => (limit(), proptest::option::of(0..4usize))
            .prop_map(|(limit, fail_at)| Op::Drain { limit, fail_at }),
        1 => Just(Op::Clear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Random operations: after each, the bytes that left are the front of the bytes
    /// pushed, in order, and the counts agree; at the end everything comes out.
    #[test]
    fn outbound_matches_its_model(ops in vec(op(), 1..250), with_drain in any::<bool>()) {
        let mut h = Harness::new();
        for op in &ops {
            h.apply(op);
        }
        h.finish(with_drain);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Up to 2,000 queued chunks (large writes, some with small encoded bytes between
    /// them, which become chunks of their own) and a tail behind them, then random
    /// operations: one `writev` never carries them all.
    #[test]
    fn outbound_with_thousands_of_chunks_matches_its_model(
        build in vec((COPY_THRESHOLD..9000usize, prop_oneof![Just(0usize), 1..600usize]), 32..=1000),
        tail in 1..200usize,
        ops in vec(op(), 0..80),
        with_drain in any::<bool>(),
    ) {
        let mut h = Harness::new();
        for &(large, small) in &build {
            if small > 0 {
                h.apply(&Op::Encode(small));
            }
            h.apply(&Op::Push(large));
        }
        h.apply(&Op::Encode(tail));
        prop_assert!(h.chunks() >= build.len());
        for op in &ops {
            h.apply(op);
        }
        h.finish(with_drain);
    }
}

// ---------------------------------------------------------------------------------------
// The outbound queue through a filter to a peer
// ---------------------------------------------------------------------------------------

/// A filter stack on each side: the sender's and the peer's.
#[derive(Debug, Clone, Copy)]
enum Stack {
    Deflate(Compression),
    /// The sender is the TLS client.
    TlsClient,
    /// The sender is the TLS server.
    TlsServer,
    /// TLS nearest the wire, deflate above it (the sender is the client).
    TlsDeflate(Compression),
}

fn tls_configs() -> &'static (Arc<ServerConfig>, Arc<ClientConfig>) {
    static CONFIGS: OnceLock<(Arc<ServerConfig>, Arc<ClientConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let server = crate::tls::server_config(
            cert.cert.pem().as_bytes(),
            cert.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap();
        let client = crate::tls::client_config(cert.cert.pem().as_bytes()).unwrap();
        (server, client)
    })
}

/// The sender's filter and the peer's.
fn filters(stack: Stack) -> (Box<dyn Filter>, Box<dyn Filter>) {
    let (server_config, client_config) = tls_configs();
    let server = || TlsFilter::server(server_config.clone()).unwrap();
    let client = || TlsFilter::client(client_config.clone(), "localhost").unwrap();
    match stack {
        Stack::Deflate(level) => (
            Box::new(DeflateFilter::new(level)),
            Box::new(DeflateFilter::new(level)),
        ),
        Stack::TlsClient => (Box::new(client()), Box::new(server())),
        Stack::TlsServer => (Box::new(server()), Box::new(client())),
        Stack::TlsDeflate(level) => (
            Box::new(Layered::new(client(), DeflateFilter::new(level))),
            Box::new(Layered::new(server(), DeflateFilter::new(level))),
        ),
    }
}

#[derive(Debug, Clone)]
enum FilterOp {
    /// `Outbound::push` of that many bytes, compressible or not.
    Push(usize, bool),
    /// A codec appending that many bytes to the tail.
    Encode(usize, bool),
    /// What the stream session does before a write (`refill_wire`): when the wire buffer is
    /// empty, up to `batch` plain bytes through `encode` (not while handshaking), then
    /// `flush`.
    Refill(usize),
    /// Up to `batch` plain bytes through `encode`, whatever the wire buffer holds, no flush.
    EncodeBatch(usize),
    Flush,
    /// A socket write that takes that many wire bytes.
    Send(usize),
    /// The peer decodes with that plain-bytes limit, then answers (handshake records,
    /// session tickets), which the sender decodes at once.
    Decode(usize),
}

struct Pipe {
    out: Outbound,
    /// Plain bytes queued and not yet decoded by the peer.
    model: Model,
    pos: u64,
    sender: Box<dyn Filter>,
    wire_out: BytesMut,
    peer: Box<dyn Filter>,
    peer_wire: BytesMut,
    peer_plain: BytesMut,
}

impl Pipe {
    fn new(stack: Stack) -> Self {
        let (sender, peer) = filters(stack);
        Pipe {
            out: Outbound::default(),
            model: Model::default(),
            pos: 0,
            sender,
            wire_out: BytesMut::new(),
            peer,
            peer_wire: BytesMut::new(),
            peer_plain: BytesMut::new(),
        }
    }

    fn next_bytes(&mut self, len: usize, text: bool) -> Vec<u8> {
        let data = stream_bytes(self.pos, len, text);
        self.pos += len as u64;
        self.model.push(&data);
        data
    }

    /// Moves up to `batch` queued plain bytes into the sender's filter; returns how many.
    fn encode(&mut self, batch: usize) -> usize {
        if self.sender.is_handshaking() {
            return 0;
        }
        let before = self.out.len();
        let (sender, wire) = (&mut self.sender, &mut self.wire_out);
        let moved = self
            .out
            .drain_into(batch, |plain| sender.encode(plain, wire))
            .expect("encode");
        assert_eq!(moved, batch.min(before));
        assert_eq!(self.out.len(), before - moved);
        moved
    }

    fn apply(&mut self, op: &FilterOp) {
        match *op {
            FilterOp::Push(len, text) => {
                let data = self.next_bytes(len, text);
                self.out.push(Bytes::from(data));
            }
            FilterOp::Encode(len, text) => {
                let data = self.next_bytes(len, text);
                self.out.tail.extend_from_slice(&data);
            }
            FilterOp::Refill(batch) => {
                if self.wire_out.is_empty() {
                    self.encode(batch);
                    self.sender.flush(&mut self.wire_out).expect("flush");
                }
            }
            FilterOp::EncodeBatch(batch) => {
                self.encode(batch);
            }
            FilterOp::Flush => self.sender.flush(&mut self.wire_out).expect("flush"),
            FilterOp::Send(n) => {
                let n = n.min(self.wire_out.len());
                let piece = self.wire_out.split_to(n);
                self.peer_wire.extend_from_slice(&piece);
            }
            FilterOp::Decode(limit) => self.decode(limit),
        }
    }

    fn decode(&mut self, limit: usize) {
        self.peer
            .decode(&mut self.peer_wire, &mut self.peer_plain, limit)
            .expect("the peer decodes");
        // The plain bytes must be the front of what was queued; the codec takes them.
        expect_at(self.model.queued(), 0, &self.peer_plain, "the peer decoded");
        self.model.pop(self.peer_plain.len());
        self.peer_plain.clear();
        // The peer's answers (handshake, tickets) reach the sender whole.
        let mut back = BytesMut::new();
        self.peer.flush(&mut back).expect("the peer flushes");
        let mut nothing = BytesMut::new();
        self.sender
            .decode(&mut back, &mut nothing, usize::MAX)
            .expect("the sender decodes the peer's answer");
        assert!(nothing.is_empty(), "the peer sent no application data");
        assert!(back.is_empty(), "the sender took the peer's whole answer");
    }

    /// Refills, sends and decodes until everything queued has been decoded by the peer.
    fn finish(&mut self) {
        for _ in 0..10_000 {
            if self.model.len() == 0 && self.wire_out.is_empty() && self.peer_wire.is_empty() {
                break;
            }
            self.apply(&FilterOp::Refill(crate::filtered::ENCODE_BATCH));
            self.apply(&FilterOp::Send(usize::MAX));
            self.apply(&FilterOp::Decode(usize::MAX));
        }
        assert!(
            self.out.is_empty(),
            "{} plain bytes never left",
            self.out.len()
        );
        assert_eq!(self.model.len(), 0, "plain bytes the peer never decoded");
        assert!(self.wire_out.is_empty() && self.peer_wire.is_empty());
    }
}

fn stack() -> impl Strategy<Value = Stack> {
    let level = prop_oneof![
        Just(Compression::Default),
        Just(Compression::Fast),
        Just(Compression::Best),
        Just(Compression::HuffmanOnly),
    ];
    prop_oneof![
        2 => level.clone().prop_map(Stack::Deflate),
        1 => Just(Stack::TlsClient),
        1 => Just(Stack::TlsServer),
        1 => level.prop_map(Stack::TlsDeflate),
    ]
}

fn filter_op() -> impl Strategy<Value = FilterOp> {
    let batch = prop_oneof![
        1..64usize,
        64..20_000usize,
        Just(crate::filtered::ENCODE_BATCH)
    ];
    let amount = prop_oneof![Just(0usize), 1..64usize, 64..40_000usize, Just(usize::MAX)];
    prop_oneof![
        6 => (size(), any::<bool>()).prop_map(|(n, text)| FilterOp::Push(n, text)),
        3 => (0..3000usize, any::<bool>()).prop_map(|(n, text)| FilterOp::Encode(n, text)),
        4 => batch.clone().prop_map(FilterOp::Refill),
        2 => batch.prop_map(FilterOp::EncodeBatch),
        1 => Just(FilterOp::Flush),
        4 => amount.clone().prop_map(FilterOp::Send),
        4 => amount.prop_map(|n| FilterOp::Decode(n.max(1))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Plain bytes pushed into the outbound queue, moved through a filter in random
    /// batches with flushes between, written to the wire in random pieces and decoded by
    /// the peer's filter with random limits: the peer decodes exactly what was pushed, in
    /// order (checked after every decode), and everything once drained.
    #[test]
    fn filtered_output_decodes_to_what_was_queued(
        stack in stack(),
        ops in vec(filter_op(), 1..120),
    ) {
        let mut pipe = Pipe::new(stack);
        for op in &ops {
            pipe.apply(op);
        }
        pipe.finish();
    }
}
