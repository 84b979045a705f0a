//! The datagram queue against a model (issue #11, part 1; issue #14): random pushes,
//! encodes and sends against a socket that sends some of a batch, blocks, is interrupted or
//! fails. The model is the queue as the documentation describes it: whole datagrams in
//! order, and the two failure counters with their drop thresholds.
//!
//! One model, two drivers: the proptest in `tests/model.rs` generates the operations, and
//! [`decode_fuzz_input`] decodes them from fuzz input (the fuzz target `datagram_queue`),
//! both from the tables below.

use super::*;

use arbitrary::Unstructured;

use crate::model_input::{pick, Weighted};

/// What the documentation says every datagram is charged on top of its payload.
pub(super) const CHARGE: usize = 64;

/// What the fake socket does with one batch.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Sends the first `n` datagrams offered (at most the batch; 0 is a call that sent
    /// nothing, which the queue takes as a failure of the first datagram).
    Sent(usize),
    WouldBlock,
    Interrupted,
    /// An error about the datagram itself (EMSGSIZE).
    Own,
    /// An error about the peer, reported through ICMP: ECONNREFUSED, or EHOSTUNREACH.
    Peer {
        refused: bool,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// `push_bytes`: copied into the tail below the threshold, queued as is above.
    Push { len: usize, peer: Option<u32> },
    /// A codec encoding into the tail, then `push_encoded`.
    Encode { len: usize, peer: Option<u32> },
    /// One `send_step`.
    Step { per_call: usize, outcome: Outcome },
    /// `count` failing steps in a row (the drop thresholds need a run of them).
    Failures { peer: bool, count: usize },
}

#[derive(Debug, Clone, PartialEq)]
struct Datagram {
    data: Vec<u8>,
    peer: Option<u32>,
    /// Its bytes are in the queue's tail (not a chunk of its own).
    in_tail: bool,
}

/// The queue as the documentation describes it: whole datagrams in order, and the two
/// failure counters with their drop thresholds.
#[derive(Default)]
struct Model {
    queued: VecDeque<Datagram>,
    own_failures: u8,
    peer_failures: u8,
    /// Bytes made so far (each datagram's bytes depend on where they are in this count).
    made: u64,
    sent: usize,
    dropped: usize,
    pushed: usize,
}

pub(super) fn stamp(pos: u64) -> u8 {
    let mut z = pos.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u8
}

impl Model {
    fn make(&mut self, len: usize) -> Vec<u8> {
        let data = (self.made..self.made + len as u64).map(stamp).collect();
        self.made += len as u64;
        data
    }

    fn bytes(&self) -> usize {
        self.queued.iter().map(|d| d.data.len()).sum()
    }

    /// Drops the first datagram after too many failures; returns its length.
    fn drop_first(&mut self) -> usize {
        self.own_failures = 0;
        self.peer_failures = 0;
        self.dropped += 1;
        self.queued
            .pop_front()
            .expect("a datagram to drop")
            .data
            .len()
    }
}

fn error_for(outcome: &Outcome) -> Option<io::Error> {
    match outcome {
        Outcome::Sent(_) => None,
        Outcome::WouldBlock => Some(io::ErrorKind::WouldBlock.into()),
        Outcome::Interrupted => Some(io::ErrorKind::Interrupted.into()),
        Outcome::Own => Some(io::Error::from_raw_os_error(libc::EMSGSIZE)),
        Outcome::Peer { refused: true } => Some(io::ErrorKind::ConnectionRefused.into()),
        Outcome::Peer { refused: false } => Some(io::Error::from_raw_os_error(libc::EHOSTUNREACH)),
    }
}

fn step(q: &mut DatagramQueue<u32>, m: &mut Model, per_call: usize, outcome: &Outcome) {
    let mut calls = 0;
    let queued = &m.queued;
    let result = q.send_step(Instant::now(), per_call, &mut |items: &[Outgoing<
        '_,
        u32,
    >]| {
        calls += 1;
        let k = per_call.clamp(1, MAX_BATCH).min(queued.len());
        assert_eq!(items.len(), k, "datagrams offered for per_call {per_call}");
        for (i, (item, want)) in items.iter().zip(queued).enumerate() {
            assert!(
                item.data == want.data.as_slice() && item.peer == want.peer.as_ref(),
                "datagram {i} of the batch is not the one queued there: \
                 {} B to {:?}, expected {} B to {:?}",
                item.data.len(),
                item.peer,
                want.data.len(),
                want.peer
            );
        }
        match (outcome, error_for(outcome)) {
            (Outcome::Sent(n), _) => Ok((*n).min(k)),
            (_, Some(e)) => Err(e),
            (_, None) => unreachable!(),
        }
    });
    if m.queued.is_empty() {
        assert_eq!(calls, 0, "an empty queue makes no call");
        assert!(matches!(result, Step::Empty), "{result:?}");
        return;
    }
    assert_eq!(calls, 1, "one call per step");
    let k = per_call.clamp(1, MAX_BATCH).min(m.queued.len());
    match (outcome, result) {
        (Outcome::Sent(n), Step::Sent { datagrams, bytes }) if *n > 0 => {
            let n = (*n).min(k);
            assert_eq!(datagrams, n);
            let want: usize = m.queued.iter().take(n).map(|d| d.data.len()).sum();
            assert_eq!(bytes, want);
            m.queued.drain(..n);
            m.sent += n;
            m.own_failures = 0;
            m.peer_failures = 0;
        }
        (Outcome::WouldBlock, Step::Blocked) => {}
        (
            Outcome::Interrupted,
            Step::Sent {
                datagrams: 0,
                bytes: 0,
            },
        ) => {}
        (Outcome::Sent(0) | Outcome::Own, Step::Failed { error, dropped }) => {
            if let Outcome::Own = outcome {
                assert_eq!(error.raw_os_error(), Some(libc::EMSGSIZE));
            } else {
                assert_eq!(error.kind(), io::ErrorKind::WriteZero);
            }
            m.own_failures += 1;
            let want = (m.own_failures >= OWN_FAILURES_BEFORE_DROP).then(|| m.drop_first());
            assert_eq!(dropped, want, "own failure {}", m.own_failures);
        }
        (Outcome::Peer { .. }, Step::Failed { error, dropped }) => {
            assert!(crate::udp::socket::is_peer_error(&error), "{error}");
            m.peer_failures += 1;
            let want = (m.peer_failures >= PEER_FAILURES_BEFORE_DROP).then(|| m.drop_first());
            assert_eq!(dropped, want, "peer failure {}", m.peer_failures);
        }
        (outcome, result) => panic!("{outcome:?} gave {result:?}"),
    }
}

fn apply(q: &mut DatagramQueue<u32>, m: &mut Model, op: &Op) {
    match op {
        Op::Push { len, peer } => {
            let data = m.make(*len);
            q.push_bytes(*peer, Bytes::from(data.clone()));
            let in_tail = *len < COPY_THRESHOLD;
            m.queued.push_back(Datagram {
                data,
                peer: *peer,
                in_tail,
            });
            m.pushed += 1;
        }
        Op::Encode { len, peer } => {
            let data = m.make(*len);
            q.tail.extend_from_slice(&data);
            q.push_encoded(*peer, *len);
            m.queued.push_back(Datagram {
                data,
                peer: *peer,
                in_tail: true,
            });
            m.pushed += 1;
        }
        Op::Step { per_call, outcome } => step(q, m, *per_call, outcome),
        Op::Failures { peer, count } => {
            let outcome = if *peer {
                Outcome::Peer { refused: true }
            } else {
                Outcome::Own
            };
            for _ in 0..*count {
                step(q, m, 8, &outcome);
            }
        }
    }
    assert_eq!(q.payload_bytes(), m.bytes(), "payload_bytes()");
    assert_eq!(
        q.len(),
        m.bytes() + m.queued.len() * CHARGE,
        "len(): the payload, and the overhead of every datagram"
    );
    assert_eq!(q.datagrams(), m.queued.len(), "datagrams()");
    assert_eq!(q.in_order(), m.queued.len(), "in_order()");
    assert_eq!(q.is_empty(), m.queued.is_empty(), "is_empty()");
    let in_tail: usize = m
        .queued
        .iter()
        .filter(|d| d.in_tail)
        .map(|d| d.data.len())
        .sum();
    assert_eq!(q.tail.len(), in_tail, "the tail holds the small datagrams");
}

/// Runs `ops` against the queue, checking it against the model after each, then sends
/// what is left into a socket that takes everything: everything not dropped goes out, in
/// order. Panics at the first disagreement.
pub(crate) fn run(ops: &[Op]) {
    let mut q = DatagramQueue::default();
    let mut m = Model::default();
    for op in ops {
        apply(&mut q, &mut m, op);
    }
    let send_all = Op::Step {
        per_call: MAX_BATCH,
        outcome: Outcome::Sent(usize::MAX),
    };
    for _ in 0..m.queued.len() + 1 {
        apply(&mut q, &mut m, &send_all);
    }
    assert!(q.is_empty() && q.tail.is_empty(), "left in the queue");
    assert_eq!(
        m.sent + m.dropped,
        m.pushed,
        "every datagram sent or dropped"
    );
}

// ---------------------------------------------------------------------------------------
// What the operations are drawn from, by the proptest and from fuzz input
// ---------------------------------------------------------------------------------------

/// The most operations in one run.
pub(crate) const MOST_OPS: usize = 300;

/// How often each kind of operation comes up: push, encode, step, failures.
pub(crate) const OP_WEIGHTS: [u32; 4] = [5, 5, 6, 1];

/// A datagram: either side of the copy threshold, at it, and past it up to the largest
/// UDP payload.
pub(crate) const DATAGRAM_LEN: Weighted<usize> = Weighted(&[
    (3, 0..=63),
    (3, 64..=COPY_THRESHOLD - 1),
    (2, COPY_THRESHOLD - 3..=COPY_THRESHOLD + 2),
    (2, COPY_THRESHOLD..=65_507),
]);

/// The destinations (when there is one, half the time).
pub(crate) const PEER: Weighted<u32> = Weighted(&[(1, 0..=3)]);

/// A step's batch size: any up to past the most, and no bound.
pub(crate) const PER_CALL: Weighted<usize> =
    Weighted(&[(1, 0..=MAX_BATCH + 8), (1, usize::MAX..=usize::MAX)]);

/// How often the socket sends, blocks, is interrupted, fails for the datagram, or for the
/// peer.
pub(crate) const OUTCOME_WEIGHTS: [u32; 5] = [8, 2, 1, 1, 2];

/// How many of the batch the socket sends: none (a failure), a few, up to all.
pub(crate) const SENT: Weighted<usize> =
    Weighted(&[(1, 0..=3), (1, 4..=MAX_BATCH), (1, usize::MAX..=usize::MAX)]);

/// A run of failures: enough to pass either drop threshold.
pub(crate) const FAILURES: Weighted<usize> = Weighted(&[(1, 1..=10)]);

/// What one fuzz input may push in all (past it, datagrams are empty): plenty of full
/// batches and large datagrams, while an input runs in milliseconds.
const FUZZ_INPUT_BYTES: usize = 256 * 1024;

/// Operations decoded from fuzz input, from the tables above, within
/// [`FUZZ_INPUT_BYTES`].
struct FuzzOps<'a> {
    u: Unstructured<'a>,
    bytes_left: usize,
}

impl FuzzOps<'_> {
    fn datagram(&mut self) -> arbitrary::Result<(usize, Option<u32>)> {
        let len = DATAGRAM_LEN.draw(&mut self.u)?.min(self.bytes_left);
        self.bytes_left -= len;
        let peer = if self.u.arbitrary()? {
            Some(PEER.draw(&mut self.u)?)
        } else {
            None
        };
        Ok((len, peer))
    }

    fn op(&mut self) -> arbitrary::Result<Op> {
        Ok(match pick(&mut self.u, &OP_WEIGHTS)? {
            0 => {
                let (len, peer) = self.datagram()?;
                Op::Push { len, peer }
            }
            1 => {
                let (len, peer) = self.datagram()?;
                Op::Encode { len, peer }
            }
            2 => Op::Step {
                per_call: PER_CALL.draw(&mut self.u)?,
                outcome: outcome(&mut self.u)?,
            },
            _ => Op::Failures {
                peer: self.u.arbitrary()?,
                count: FAILURES.draw(&mut self.u)?,
            },
        })
    }
}

fn outcome(u: &mut Unstructured<'_>) -> arbitrary::Result<Outcome> {
    Ok(match pick(u, &OUTCOME_WEIGHTS)? {
        0 => Outcome::Sent(SENT.draw(u)?),
        1 => Outcome::WouldBlock,
        2 => Outcome::Interrupted,
        3 => Outcome::Own,
        _ => Outcome::Peer {
            refused: u.arbitrary()?,
        },
    })
}

/// The operations `data` decodes to (at most [`MOST_OPS`]).
pub(crate) fn decode_fuzz_input(data: &[u8]) -> Vec<Op> {
    let mut input = FuzzOps {
        u: Unstructured::new(data),
        bytes_left: FUZZ_INPUT_BYTES,
    };
    let mut ops = Vec::new();
    while !input.u.is_empty() && ops.len() < MOST_OPS {
        match input.op() {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}
