//! Model-based property tests of the stream write path through a filter (issue #11, part
//! 1): the outbound queue feeding a filter (deflate, TLS, both) whose wire bytes go out in
//! random pieces and are decoded by a peer filter, checked against the model of
//! `outbound/model.rs`: the plain bytes queued and not yet decoded by the peer, in order.

use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use getty_codec::filter::{Compression, DeflateFilter, Filter, Layered, TlsFilter};
use getty_codec::rustls::{ClientConfig, ServerConfig};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::outbound::model::{expect_at, stream_bytes, Model, SIZE};
use crate::outbound::Outbound;
use getty_reactor::BufPool;

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
    /// Where finished chunks go back, and where pushed payloads come from: a chunk given
    /// back before the filter took its last byte would be overwritten and caught.
    pool: BufPool,
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
            pool: BufPool::new(4096, 4),
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
            .drain_into(batch, &mut self.pool, |plain| sender.encode(plain, wire))
            .expect("encode");
        assert_eq!(moved, batch.min(before));
        assert_eq!(self.out.len(), before - moved);
        moved
    }

    fn apply(&mut self, op: &FilterOp) {
        match *op {
            FilterOp::Push(len, text) => {
                let data = self.next_bytes(len, text);
                let mut payload = self
                    .pool
                    .take_large(len, usize::MAX)
                    .unwrap_or_else(|| self.pool.take());
                payload.extend_from_slice(&data);
                self.out.push(payload.freeze());
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
        6 => (SIZE.strategy(), any::<bool>()).prop_map(|(n, text)| FilterOp::Push(n, text)),
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
