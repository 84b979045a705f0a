//! The outbound queue of a datagram session: whole datagrams in order, each with its
//! destination. Small datagrams are encoded back to back into one pooled buffer (the
//! tail); large byte buffers are queued as they are. A flush hands up to a batch of them
//! to one `sendmmsg`.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};

use super::batch::{Outgoing, MAX_BATCH};

/// `write_bytes` copies buffers shorter than this into the tail; longer ones are queued
/// without copying.
const COPY_THRESHOLD: usize = 4096;

/// A datagram that keeps failing for reasons of its own (too big for the route, an
/// unreachable destination) is dropped, and reported, after this many attempts.
const OWN_FAILURES_BEFORE_DROP: u8 = 2;

/// Errors about the peer (ICMP) are reported and the datagram is retried; after this many
/// in a row for the same datagram it is dropped, so that a socket that keeps returning one
/// cannot hold the loop.
const PEER_FAILURES_BEFORE_DROP: u8 = 8;

struct Item<A> {
    peer: Option<A>,
    len: usize,
    /// The bytes, when not in the tail.
    chunk: Option<Bytes>,
}

/// What one [`DatagramQueue::send_step`] did.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing is queued.
    Empty,
    /// `datagrams` went out (possibly none, after an interrupted call).
    Sent { datagrams: usize, bytes: usize },
    /// The socket's buffer is full: wait for writable readiness.
    Blocked,
    /// The first datagram failed. It was `dropped` when it had failed too often; otherwise
    /// it stays first in the queue and the next step retries it.
    Failed {
        error: io::Error,
        dropped: Option<usize>,
    },
}

pub(crate) struct DatagramQueue<A> {
    /// Where codecs encode to; lent from the reactor's pool while the session has output.
    pub(crate) tail: BytesMut,
    items: VecDeque<Item<A>>,
    bytes: usize,
    own_failures: u8,
    peer_failures: u8,
}

impl<A> Default for DatagramQueue<A> {
    fn default() -> Self {
        DatagramQueue {
            tail: BytesMut::new(),
            items: VecDeque::new(),
            bytes: 0,
            own_failures: 0,
            peer_failures: 0,
        }
    }
}

impl<A> DatagramQueue<A> {
    /// Queued bytes.
    pub(crate) fn len(&self) -> usize {
        self.bytes
    }

    /// Queued datagrams.
    pub(crate) fn datagrams(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Records that the last `len` bytes of the tail are one datagram for `peer`.
    pub(crate) fn push_encoded(&mut self, peer: Option<A>, len: usize) {
        debug_assert!(len <= self.tail.len());
        self.items.push_back(Item {
            peer,
            len,
            chunk: None,
        });
        self.bytes += len;
    }

    /// Queues `bytes` as one datagram, copying small ones into the tail.
    pub(crate) fn push_bytes(&mut self, peer: Option<A>, bytes: Bytes) {
        let len = bytes.len();
        if len < COPY_THRESHOLD {
            self.tail.extend_from_slice(&bytes);
            self.push_encoded(peer, len);
            return;
        }
        self.items.push_back(Item {
            peer,
            len,
            chunk: Some(bytes),
        });
        self.bytes += len;
    }

    /// Offers up to `per_call` datagrams from the front to `send` (one syscall), which
    /// returns how many it sent.
    pub(crate) fn send_step<F>(&mut self, per_call: usize, send: F) -> Step
    where
        F: FnOnce(&[Outgoing<'_, A>]) -> io::Result<usize>,
    {
        if self.items.is_empty() {
            return Step::Empty;
        }
        let result = {
            let k = per_call.clamp(1, MAX_BATCH).min(self.items.len());
            let mut batch = [const { MaybeUninit::<Outgoing<'_, A>>::uninit() }; MAX_BATCH];
            let mut offset = 0;
            for (slot, item) in batch.iter_mut().zip(self.items.iter().take(k)) {
                let data: &[u8] = match &item.chunk {
                    Some(chunk) => chunk,
                    None => {
                        let data = &self.tail[offset..offset + item.len];
                        offset += item.len;
                        data
                    }
                };
                slot.write(Outgoing {
                    data,
                    peer: item.peer.as_ref(),
                });
            }
            // SAFETY: the loop initialised the first `k` elements (`k <= items.len()`), and
            // `Outgoing` has no drop glue, so the uninitialised rest is never touched.
            let ready =
                unsafe { std::slice::from_raw_parts(batch.as_ptr().cast::<Outgoing<'_, A>>(), k) };
            send(ready)
        };
        match result {
            Ok(0) => self.fail(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                self.own_failures = 0;
                self.peer_failures = 0;
                let bytes = self.pop(n);
                Step::Sent {
                    datagrams: n,
                    bytes,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Sent {
                datagrams: 0,
                bytes: 0,
            },
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, error: io::Error) -> Step {
        let give_up = if super::socket::is_peer_error(&error) {
            self.peer_failures += 1;
            self.peer_failures >= PEER_FAILURES_BEFORE_DROP
        } else {
            self.own_failures += 1;
            self.own_failures >= OWN_FAILURES_BEFORE_DROP
        };
        let dropped = give_up.then(|| {
            self.own_failures = 0;
            self.peer_failures = 0;
            self.pop(1)
        });
        Step::Failed { error, dropped }
    }

    /// Removes the first `n` datagrams; returns their bytes.
    fn pop(&mut self, n: usize) -> usize {
        let mut bytes = 0;
        for _ in 0..n {
            let Some(item) = self.items.pop_front() else {
                break;
            };
            if item.chunk.is_none() {
                self.tail.advance(item.len);
            }
            bytes += item.len;
        }
        self.bytes -= bytes;
        bytes
    }

    /// Drops everything queued (the session is going away without flushing).
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.tail.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket stand-in: accepts at most `per_call` datagrams per call, or fails with the
    /// scripted errors first.
    struct Fake {
        sent: Sent,
        script: VecDeque<io::Result<usize>>,
        calls: usize,
    }

    impl Fake {
        fn new(script: Vec<io::Result<usize>>) -> Self {
            Fake {
                sent: Vec::new(),
                script: script.into(),
                calls: 0,
            }
        }

        fn send(&mut self, items: &[Outgoing<'_, u32>]) -> io::Result<usize> {
            self.calls += 1;
            let n = match self.script.pop_front() {
                Some(Err(e)) => return Err(e),
                Some(Ok(n)) => n.min(items.len()),
                None => items.len(),
            };
            for item in &items[..n] {
                self.sent.push((item.data.to_vec(), item.peer.copied()));
            }
            Ok(n)
        }
    }

    fn drain(q: &mut DatagramQueue<u32>, fake: &mut Fake, per_call: usize) -> Vec<Step> {
        let mut steps = Vec::new();
        for _ in 0..1000 {
            let step = q.send_step(per_call, |items| fake.send(items));
            let done = matches!(step, Step::Empty | Step::Blocked);
            steps.push(step);
            if done {
                break;
            }
        }
        steps
    }

    type Sent = Vec<(Vec<u8>, Option<u32>)>;

    fn filled() -> (DatagramQueue<u32>, Sent) {
        let mut q = DatagramQueue::default();
        let mut want = Vec::new();
        for i in 0..40u32 {
            let len = if i % 9 == 0 {
                5000 + i as usize
            } else {
                1 + i as usize
            };
            let data: Vec<u8> = (0..len).map(|b| (b as u32 + i) as u8).collect();
            let peer = (i % 2 == 0).then_some(i);
            if i % 3 == 0 {
                q.push_bytes(peer, Bytes::from(data.clone()));
            } else {
                q.tail.extend_from_slice(&data);
                q.push_encoded(peer, len);
            }
            want.push((data, peer));
        }
        (q, want)
    }

    #[test]
    fn order_and_destinations_survive_partial_batches() {
        for per_call in [1, 7, 32, 64] {
            let (mut q, want) = filled();
            let total: usize = want.iter().map(|(d, _)| d.len()).sum();
            assert_eq!(q.len(), total);
            let mut fake = Fake::new(vec![Ok(3), Ok(1), Ok(5)]);
            drain(&mut q, &mut fake, per_call);
            assert_eq!(fake.sent, want, "per_call {per_call}");
            assert!(q.is_empty() && q.tail.is_empty());
            assert_eq!(q.len(), 0);
        }
    }

    #[test]
    fn a_full_socket_keeps_everything_queued() {
        let (mut q, want) = filled();
        let mut fake = Fake::new(vec![Ok(2), Err(io::ErrorKind::WouldBlock.into())]);
        let steps = drain(&mut q, &mut fake, 32);
        assert!(matches!(steps.last(), Some(Step::Blocked)));
        assert_eq!(q.datagrams(), want.len() - 2);
        // Writable again: the rest goes out, in order, nothing lost.
        drain(&mut q, &mut fake, 32);
        assert_eq!(fake.sent, want);
    }

    #[test]
    fn own_errors_drop_the_datagram_after_a_retry_and_say_so() {
        let (mut q, want) = filled();
        let emsgsize = || Err(io::Error::new(io::ErrorKind::InvalidInput, "too long"));
        let mut fake = Fake::new(vec![emsgsize(), emsgsize()]);
        let steps = drain(&mut q, &mut fake, 8);
        let failures: Vec<Option<usize>> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Failed { dropped, .. } => Some(*dropped),
                _ => None,
            })
            .collect();
        assert_eq!(failures, vec![None, Some(want[0].0.len())]);
        assert_eq!(fake.sent, want[1..].to_vec());
    }

    #[test]
    fn peer_errors_are_retried() {
        let (mut q, want) = filled();
        let refused = || Err(io::ErrorKind::ConnectionRefused.into());
        let mut fake = Fake::new(vec![refused(), Ok(1), refused(), refused()]);
        let steps = drain(&mut q, &mut fake, 4);
        let dropped = steps
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Step::Failed {
                        dropped: Some(_),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(dropped, 0);
        assert_eq!(fake.sent, want);
    }

    #[test]
    fn clear_forgets_everything() {
        let (mut q, _) = filled();
        q.clear();
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
        assert!(matches!(q.send_step(4, |_| unreachable!()), Step::Empty));
    }

    // -----------------------------------------------------------------------------------
    // Model-based property test (issue #11, part 1)
    // -----------------------------------------------------------------------------------

    use proptest::collection::vec;
    use proptest::prelude::*;

    /// What the fake socket does with one batch.
    #[derive(Debug, Clone)]
    enum Outcome {
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
    enum Op {
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

    fn stamp(pos: u64) -> u8 {
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
            Outcome::Peer { refused: false } => {
                Some(io::Error::from_raw_os_error(libc::EHOSTUNREACH))
            }
        }
    }

    fn step(q: &mut DatagramQueue<u32>, m: &mut Model, per_call: usize, outcome: &Outcome) {
        let mut calls = 0;
        let queued = &m.queued;
        let result = q.send_step(per_call, |items| {
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
                assert!(super::super::socket::is_peer_error(&error), "{error}");
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
        assert_eq!(q.len(), m.bytes(), "len()");
        assert_eq!(q.datagrams(), m.queued.len(), "datagrams()");
        assert_eq!(q.is_empty(), m.queued.is_empty(), "is_empty()");
        let in_tail: usize = m
            .queued
            .iter()
            .filter(|d| d.in_tail)
            .map(|d| d.data.len())
            .sum();
        assert_eq!(q.tail.len(), in_tail, "the tail holds the small datagrams");
    }

    fn datagram_len() -> impl Strategy<Value = usize> {
        prop_oneof![
            3 => 0..64usize,
            3 => 64..COPY_THRESHOLD,
            2 => COPY_THRESHOLD - 3..COPY_THRESHOLD + 3,
            2 => COPY_THRESHOLD..65_508usize,
        ]
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            8 => prop_oneof![0..4usize, 4..=MAX_BATCH, Just(usize::MAX)].prop_map(Outcome::Sent),
            2 => Just(Outcome::WouldBlock),
            1 => Just(Outcome::Interrupted),
            1 => Just(Outcome::Own),
            2 => any::<bool>().prop_map(|refused| Outcome::Peer { refused }),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let peer = proptest::option::of(0..4u32);
        prop_oneof![
            5 => (datagram_len(), peer.clone()).prop_map(|(len, peer)| Op::Push { len, peer }),
            5 => (datagram_len(), peer).prop_map(|(len, peer)| Op::Encode { len, peer }),
            6 => (prop_oneof![0..=MAX_BATCH + 8, Just(usize::MAX)], outcome())
                .prop_map(|(per_call, outcome)| Op::Step { per_call, outcome }),
            1 => (any::<bool>(), 1..=10usize).prop_map(|(peer, count)| Op::Failures { peer, count }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Random pushes, encodes and sends against a socket that sends some of a batch,
        /// blocks, is interrupted or fails: every batch offered is the front of the queue,
        /// whole datagrams with their destinations; the counts agree; a datagram is dropped
        /// only after 2 failures of its own or 8 about its peer in a row; at the end
        /// everything not dropped goes out, in order.
        #[test]
        fn the_datagram_queue_matches_its_model(ops in vec(op(), 1..300)) {
            let mut q = DatagramQueue::default();
            let mut m = Model::default();
            for op in &ops {
                apply(&mut q, &mut m, op);
            }
            for _ in 0..m.queued.len() + 1 {
                apply(&mut q, &mut m, &Op::Step { per_call: MAX_BATCH, outcome: Outcome::Sent(usize::MAX) });
            }
            prop_assert!(q.is_empty() && q.tail.is_empty());
            prop_assert_eq!(m.sent + m.dropped, m.pushed);
        }
    }
}
