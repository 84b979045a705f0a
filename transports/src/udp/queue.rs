//! The outbound queue of a datagram session: whole datagrams in order, each with its
//! destination. Small datagrams are encoded back to back into one pooled buffer (the
//! tail); large byte buffers are queued as they are. A flush hands up to a batch of them
//! to one `sendmmsg`.
//!
//! On an unconnected unix datagram socket, `EAGAIN` means that one receiver's queue is full
//! (Linux: `net.unix.max_dgram_qlen`, 10 by default), not that the socket is: that
//! destination is **parked**. Its datagrams move, in order, into a queue of its own, which
//! is retried on a timer with backoff (1 ms doubling to 100 ms) while every other
//! destination keeps flowing. A parked destination holds at most its limit in bytes (its
//! oldest datagrams go first, the newest always stays); one that takes nothing for the
//! write-stall timeout is dropped whole and forgotten. Every drop is reported once.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::io;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

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

/// The first and the longest wait before a blocked send is retried on a timer (a parked
/// destination, or a connected unix socket reconnecting to its peer): short at first, since
/// a reader that drains its queue frees room at once; doubling while nothing goes out, so a
/// receiver that stays full costs at most ten wake-ups a second.
pub(crate) const FIRST_RETRY: Duration = Duration::from_millis(1);
pub(crate) const MAX_RETRY: Duration = Duration::from_millis(100);

struct Item<A> {
    peer: Option<A>,
    len: usize,
    /// The bytes, when not in the tail.
    chunk: Option<Bytes>,
}

/// What an error about the peer (`ECONNREFUSED` and friends) does to the datagram that got
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerErrors {
    /// UDP: the error reports an ICMP message about an earlier datagram, and this send
    /// consumed it: the datagram is retried (dropped after 8 in a row).
    Retry,
    /// An unconnected unix socket: the error is about this datagram's receiver (its socket
    /// closed): the datagram is dropped at once, and reported once.
    Drop,
    /// A connected unix socket: its peer is gone (`ECONNREFUSED`, then `ENOTCONN` once the
    /// kernel disconnected the socket). The datagram stays first while the entry
    /// reconnects to the peer's address.
    Keep,
}

/// What one [`DatagramQueue::send_step`] did.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing is queued (for a destination that is not parked).
    Empty,
    /// `datagrams` went out (possibly none, after an interrupted call).
    Sent { datagrams: usize, bytes: usize },
    /// The socket's buffer is full: wait for writable readiness.
    Blocked,
    /// The first datagram's receiver is full (parking on): its destination was parked, with
    /// the datagram; the next step goes on with the others.
    Parked,
    /// The first datagram failed. It was `dropped` when it had failed too often; otherwise
    /// it stays first in the queue and the next step retries it.
    Failed {
        error: io::Error,
        dropped: Option<usize>,
    },
}

/// Why datagrams to one destination were dropped from its parked queue.
#[derive(Debug)]
pub(crate) enum Cause {
    /// It held more than the bytes a parked destination may hold: its oldest went.
    OverLimit { limit: usize },
    /// It took nothing for the write-stall timeout: all it held went.
    Stalled(Duration),
    /// A retry failed for a reason other than a full receiver (its socket closed, say).
    Failed(io::Error),
}

/// Datagrams dropped for one destination, to be counted and reported to `on_error` once.
#[derive(Debug)]
pub(crate) struct Dropped<A> {
    pub(crate) peer: A,
    pub(crate) datagrams: u64,
    pub(crate) cause: Cause,
}

impl<A: std::fmt::Debug> Dropped<A> {
    /// The error `on_error` gets: the destination is named in its text.
    pub(crate) fn into_error(self) -> io::Error {
        let Dropped {
            peer,
            datagrams,
            cause,
        } = self;
        let what = if datagrams == 1 {
            "1 datagram".to_owned()
        } else {
            format!("{datagrams} datagrams")
        };
        match cause {
            Cause::OverLimit { limit } => io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "dropped the oldest {what} to {peer:?}: its receiver is full and a \
                     destination may hold {limit} bytes"
                ),
            ),
            Cause::Stalled(after) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("dropped {what} to {peer:?}: its receiver took none for {after:?}"),
            ),
            Cause::Failed(e) => e,
        }
    }
}

/// The datagrams of one parked destination, oldest first.
struct Parked {
    held: VecDeque<Bytes>,
    bytes: usize,
    /// When it was parked, or last took a datagram: the write-stall clock.
    progress: Instant,
    retry_at: Instant,
    /// The wait that led to `retry_at`; doubles while retries find the receiver full.
    wait: Duration,
}

pub(crate) struct DatagramQueue<A> {
    /// Where codecs encode to; lent from the reactor's pool while the session has output.
    pub(crate) tail: BytesMut,
    items: VecDeque<Item<A>>,
    /// Bytes queued, parked ones included.
    bytes: usize,
    own_failures: u8,
    peer_failures: u8,
    peer_errors: PeerErrors,
    /// Bytes a parked destination may hold; `None`: a full socket blocks the whole queue.
    park_limit: Option<usize>,
    parked: HashMap<A, Parked>,
    parked_datagrams: usize,
    /// The earliest retry of a parked destination.
    next_retry: Option<Instant>,
    /// Drops from parked queues not reported yet.
    reports: Vec<Dropped<A>>,
}

impl<A> Default for DatagramQueue<A> {
    fn default() -> Self {
        DatagramQueue {
            tail: BytesMut::new(),
            items: VecDeque::new(),
            bytes: 0,
            own_failures: 0,
            peer_failures: 0,
            peer_errors: PeerErrors::Retry,
            park_limit: None,
            parked: HashMap::new(),
            parked_datagrams: 0,
            next_retry: None,
            reports: Vec::new(),
        }
    }
}

/// True for the errors that say a connected unix socket's peer is gone.
pub(crate) fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotConnected
    )
}

impl<A> DatagramQueue<A> {
    /// How errors about the peer are handled, and whether a full receiver parks its
    /// destination (`Some(bytes it may hold)`) or blocks the queue (`None`).
    pub(crate) fn set_policy(&mut self, peer_errors: PeerErrors, park_limit: Option<usize>) {
        self.peer_errors = peer_errors;
        self.park_limit = park_limit.map(|limit| limit.max(1));
    }

    /// Queued bytes.
    pub(crate) fn len(&self) -> usize {
        self.bytes
    }

    /// Queued datagrams.
    pub(crate) fn datagrams(&self) -> usize {
        self.items.len() + self.parked_datagrams
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.parked_datagrams == 0
    }

    /// Nothing waits in order behind the front (parked destinations aside): the tail
    /// holds no datagram, and no send is blocked.
    pub(crate) fn fifo_is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// When the earliest parked destination is due for a retry.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.next_retry
    }

    /// Destinations parked now (tests).
    #[cfg(test)]
    fn parked_destinations(&self) -> usize {
        self.parked.len()
    }

    /// Drops from parked queues since the last call, to count and report.
    pub(crate) fn take_reports(&mut self) -> Vec<Dropped<A>> {
        std::mem::take(&mut self.reports)
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

    fn fail(&mut self, error: io::Error) -> Step {
        let give_up = if self.peer_errors == PeerErrors::Keep && is_gone(&error) {
            false
        } else if super::socket::is_peer_error(&error) {
            self.peer_failures += 1;
            self.peer_errors == PeerErrors::Drop || self.peer_failures >= PEER_FAILURES_BEFORE_DROP
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

    /// Takes the first datagram out of the queue, as bytes of its own (copied out of the
    /// tail when it is there); its bytes still count as queued.
    fn take_front(&mut self) -> Option<(Option<A>, Bytes)> {
        let item = self.items.pop_front()?;
        let data = match item.chunk {
            Some(chunk) => chunk,
            None => {
                let data = Bytes::copy_from_slice(&self.tail[..item.len]);
                self.tail.advance(item.len);
                data
            }
        };
        Some((item.peer, data))
    }

    /// Drops everything queued (the session is going away without flushing).
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.tail.clear();
        self.bytes = 0;
        self.parked.clear();
        self.parked_datagrams = 0;
        self.next_retry = None;
    }
}

impl<A: Clone + Eq + Hash> DatagramQueue<A> {
    /// Offers up to `per_call` datagrams from the front to `send` (one syscall), which
    /// returns how many it sent. With parking on, datagrams for a parked destination are
    /// first moved to its queue, and a batch stops before the next one of them.
    pub(crate) fn send_step<F>(&mut self, now: Instant, per_call: usize, send: F) -> Step
    where
        F: FnOnce(&[Outgoing<'_, A>]) -> io::Result<usize>,
    {
        self.park_front();
        if self.items.is_empty() {
            return Step::Empty;
        }
        let result = {
            let mut k = per_call.clamp(1, MAX_BATCH).min(self.items.len());
            if !self.parked.is_empty() {
                // The front is not parked (`park_front`): send up to the next that is.
                k = 1 + self
                    .items
                    .iter()
                    .take(k)
                    .skip(1)
                    .take_while(|item| !self.is_parked(item.peer.as_ref()))
                    .count();
            }
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
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.park_limit.is_some() && self.park_first(now) {
                    Step::Parked
                } else {
                    Step::Blocked
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Sent {
                datagrams: 0,
                bytes: 0,
            },
            Err(e) => self.fail(e),
        }
    }

    fn is_parked(&self, peer: Option<&A>) -> bool {
        peer.is_some_and(|peer| self.parked.contains_key(peer))
    }

    /// Moves the datagrams at the front whose destination is parked into its queue.
    fn park_front(&mut self) {
        while !self.parked.is_empty()
            && self.is_parked(self.items.front().and_then(|i| i.peer.as_ref()))
        {
            let Some((Some(peer), data)) = self.take_front() else {
                unreachable!("the front has a parked destination");
            };
            self.hold(peer, data);
        }
    }

    /// Parks the first datagram's destination (its receiver is full), with the datagram.
    /// False when the datagram has no destination of its own (a connected socket).
    fn park_first(&mut self, now: Instant) -> bool {
        if self.items.front().is_none_or(|item| item.peer.is_none()) {
            return false;
        }
        let Some((Some(peer), data)) = self.take_front() else {
            unreachable!("the front has a destination");
        };
        self.own_failures = 0;
        self.peer_failures = 0;
        let retry_at = now + FIRST_RETRY;
        self.parked.entry(peer.clone()).or_insert(Parked {
            held: VecDeque::new(),
            bytes: 0,
            progress: now,
            retry_at,
            wait: FIRST_RETRY,
        });
        self.next_retry = Some(self.next_retry.map_or(retry_at, |at| at.min(retry_at)));
        self.hold(peer, data);
        true
    }

    /// Appends a datagram to a parked destination's queue, dropping its oldest while it
    /// holds more than the limit (the newest always stays).
    fn hold(&mut self, peer: A, data: Bytes) {
        let limit = self.park_limit.unwrap_or(usize::MAX);
        let parked = self.parked.get_mut(&peer).expect("a parked destination");
        parked.bytes += data.len();
        parked.held.push_back(data);
        self.parked_datagrams += 1;
        let mut dropped = 0;
        while parked.bytes > limit && parked.held.len() > 1 {
            let oldest = parked.held.pop_front().expect("more than one held");
            parked.bytes -= oldest.len();
            self.bytes -= oldest.len();
            self.parked_datagrams -= 1;
            dropped += 1;
        }
        if dropped > 0 {
            match self.reports.last_mut() {
                Some(Dropped {
                    peer: last,
                    datagrams,
                    cause: Cause::OverLimit { .. },
                }) if *last == peer => *datagrams += dropped,
                _ => self.reports.push(Dropped {
                    peer,
                    datagrams: dropped,
                    cause: Cause::OverLimit { limit },
                }),
            }
        }
    }

    /// Retries the parked destinations that are due, each up to `per_call` datagrams per
    /// `send`. A destination whose queue empties is unparked; one whose receiver is still
    /// full waits twice as long as before (or from the first wait again when some went
    /// out), and is dropped whole once it has taken nothing for `stall`. Returns the
    /// datagrams and bytes sent.
    pub(crate) fn retry_parked<F>(
        &mut self,
        now: Instant,
        stall: Duration,
        per_call: usize,
        mut send: F,
    ) -> (usize, usize)
    where
        F: FnMut(&[Outgoing<'_, A>]) -> io::Result<usize>,
    {
        if self.next_retry.is_none_or(|at| now < at) {
            return (0, 0);
        }
        let due: Vec<A> = self
            .parked
            .iter()
            .filter(|(_, p)| p.retry_at <= now)
            .map(|(peer, _)| peer.clone())
            .collect();
        let (mut datagrams, mut bytes) = (0, 0);
        for peer in due {
            let parked = self.parked.get_mut(&peer).expect("due and parked");
            let mut progressed = false;
            let mut interrupted = 0;
            let unpark = loop {
                if parked.held.is_empty() {
                    break true;
                }
                let k = per_call.clamp(1, MAX_BATCH).min(parked.held.len());
                let batch: Vec<Outgoing<'_, A>> = parked
                    .held
                    .iter()
                    .take(k)
                    .map(|data| Outgoing {
                        data,
                        peer: Some(&peer),
                    })
                    .collect();
                let result = send(&batch);
                drop(batch);
                let failed = match result {
                    Ok(0) => io::ErrorKind::WriteZero.into(),
                    Ok(n) => {
                        for data in parked.held.drain(..n.min(k)) {
                            parked.bytes -= data.len();
                            self.bytes -= data.len();
                            self.parked_datagrams -= 1;
                            bytes += data.len();
                            datagrams += 1;
                        }
                        parked.progress = now;
                        progressed = true;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if now >= parked.progress + stall {
                            let n = parked.held.len() as u64;
                            self.bytes -= parked.bytes;
                            self.parked_datagrams -= parked.held.len();
                            self.reports.push(Dropped {
                                peer: peer.clone(),
                                datagrams: n,
                                cause: Cause::Stalled(stall),
                            });
                            break true;
                        }
                        parked.wait = if progressed {
                            FIRST_RETRY
                        } else {
                            (parked.wait * 2).min(MAX_RETRY)
                        };
                        parked.retry_at = now + parked.wait;
                        break false;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupted < 8 => {
                        interrupted += 1;
                        continue;
                    }
                    Err(e) => e,
                };
                // A retry failed for another reason: that datagram is dropped and reported.
                let data = parked.held.pop_front().expect("a datagram was offered");
                parked.bytes -= data.len();
                self.bytes -= data.len();
                self.parked_datagrams -= 1;
                self.reports.push(Dropped {
                    peer: peer.clone(),
                    datagrams: 1,
                    cause: Cause::Failed(failed),
                });
            };
            if unpark {
                self.parked.remove(&peer);
            }
        }
        self.next_retry = self.parked.values().map(|p| p.retry_at).min();
        (datagrams, bytes)
    }

    /// The bytes a parked destination holds (tests).
    #[cfg(test)]
    fn held_bytes(&self, peer: &A) -> Option<usize> {
        self.parked.get(peer).map(|p| p.bytes)
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
            let step = q.send_step(Instant::now(), per_call, |items| fake.send(items));
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
        assert!(matches!(
            q.send_step(Instant::now(), 4, |_| unreachable!()),
            Step::Empty
        ));
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
        let result = q.send_step(Instant::now(), per_call, |items| {
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

    // -----------------------------------------------------------------------------------
    // Model-based property test of parking (unconnected unix sockets, issue #12 item 1)
    // -----------------------------------------------------------------------------------

    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    const DESTS: u32 = 4;
    const LIMIT: usize = 600;
    const STALL: Duration = Duration::from_millis(300);

    /// What the fake receiver at one destination does with a datagram.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Receiver {
        /// Takes it.
        Free,
        /// Its queue is full: `EAGAIN`.
        Full,
        /// Its socket closed: `ECONNREFUSED`.
        Gone,
    }

    #[derive(Debug, Clone)]
    enum POp {
        Push { dest: u32, len: usize },
        Set { dest: u32, receiver: Receiver },
        Advance { ms: u64 },
        Flush { per_call: usize },
    }

    /// One datagram not yet sent or dropped, in its destination's order.
    #[derive(Debug, Clone, Copy)]
    struct Pending {
        id: u64,
        len: usize,
        /// Queued since the last flush (still in the queue's FIFO, not in a parked queue).
        fresh: bool,
    }

    /// A parked destination as documented: retried `min(1 ms << tries, 100 ms)` after its
    /// last try, dropped whole once it took nothing for the stall timeout.
    #[derive(Debug, Clone, Copy)]
    struct ParkedModel {
        last_try: Instant,
        tries: u32,
        progress: Instant,
    }

    impl ParkedModel {
        fn due(&self) -> Instant {
            let wait = FIRST_RETRY
                .checked_mul(1 << self.tries.min(16))
                .unwrap_or(MAX_RETRY)
                .min(MAX_RETRY);
            self.last_try + wait
        }
    }

    /// Per destination: the datagrams in order, the receiver, whether it is parked.
    struct PModel {
        now: Instant,
        pending: HashMap<u32, VecDeque<Pending>>,
        receivers: [Receiver; DESTS as usize],
        parked: HashMap<u32, ParkedModel>,
        delivered: HashMap<u32, Vec<u64>>,
        next_id: u64,
        pushed: usize,
        dropped: usize,
        /// Reports the queue owes for drops during the retries of this flush, in order.
        expected_reports: Vec<(u32, u64, &'static str)>,
        /// Destinations retried in this flush.
        tried: Vec<u32>,
        /// The destination being retried, and whether some of it went out.
        retry: Option<(u32, bool)>,
    }

    impl PModel {
        fn new() -> Self {
            PModel {
                now: Instant::now(),
                pending: HashMap::new(),
                receivers: [Receiver::Free; DESTS as usize],
                parked: HashMap::new(),
                delivered: HashMap::new(),
                next_id: 0,
                pushed: 0,
                dropped: 0,
                expected_reports: Vec::new(),
                tried: Vec::new(),
                retry: None,
            }
        }

        fn queued_bytes(&self) -> usize {
            self.pending.values().flatten().map(|p| p.len).sum()
        }

        fn queued(&self) -> usize {
            self.pending.values().map(|q| q.len()).sum()
        }
    }

    fn datagram(id: u64, len: usize) -> Vec<u8> {
        let mut data: Vec<u8> = (0..len as u64).map(|i| stamp(id * 65_536 + i)).collect();
        data[..8].copy_from_slice(&id.to_be_bytes());
        data
    }

    /// The fake socket: takes the datagrams of a batch in order until a receiver that is
    /// full or gone (an error if that is the first, as `sendmmsg` does). Checks that each
    /// datagram offered is the next of its destination, that the FIFO never offers one for
    /// a parked destination, and that a parked destination is retried only when due; and
    /// follows what the queue must do with the outcome (park, back off, drop).
    fn fake_send(m: &mut PModel, items: &[Outgoing<'_, u32>], retrying: bool) -> io::Result<usize> {
        assert!(!items.is_empty());
        let now = m.now;
        let first = *items[0]
            .peer
            .expect("unconnected: every datagram has a destination");
        if retrying {
            let parked = m
                .parked
                .get(&first)
                .expect("a retry of a parked destination");
            assert!(
                now >= parked.due(),
                "destination {first} retried before it was due"
            );
            if m.retry.is_none_or(|(d, _)| d != first) {
                assert!(
                    !m.tried.contains(&first),
                    "destination {first} retried twice"
                );
                m.tried.push(first);
                m.retry = Some((first, false));
            }
        }
        let mut offset: HashMap<u32, usize> = HashMap::new();
        let mut last_id = None;
        let mut taken = items.len();
        for (i, item) in items.iter().enumerate() {
            let d = *item
                .peer
                .expect("unconnected: every datagram has a destination");
            if retrying {
                assert_eq!(d, first, "a retry offers only its own destination");
            } else {
                assert!(
                    !m.parked.contains_key(&d),
                    "the FIFO offered a datagram for parked {d}"
                );
            }
            let at = offset.entry(d).or_default();
            let want = m.pending[&d][*at];
            *at += 1;
            let id = u64::from_be_bytes(item.data[..8].try_into().unwrap());
            assert_eq!(
                (id, item.data.len()),
                (want.id, want.len),
                "not the next datagram for {d}"
            );
            assert!(
                item.data == datagram(id, want.len).as_slice(),
                "the bytes of datagram {id}"
            );
            if !retrying {
                assert!(
                    last_id.is_none_or(|last| last < id),
                    "the FIFO out of order"
                );
                last_id = Some(id);
            }
            if m.receivers[d as usize] != Receiver::Free {
                taken = i;
                break;
            }
        }
        for item in &items[..taken] {
            let d = *item.peer.unwrap();
            let sent = m.pending.get_mut(&d).unwrap().pop_front().unwrap();
            m.delivered.entry(d).or_default().push(sent.id);
        }
        if taken > 0 {
            if retrying {
                let p = m.parked.get_mut(&first).unwrap();
                p.progress = now;
                m.retry = Some((first, true));
            }
            return Ok(taken);
        }
        match m.receivers[first as usize] {
            Receiver::Free => unreachable!(),
            Receiver::Full if retrying => {
                let progressed = m.retry.is_some_and(|(_, p)| p);
                let parked = m.parked.get_mut(&first).unwrap();
                if now >= parked.progress + STALL {
                    // Dropped whole: what it held, not what was queued since.
                    let pending = m.pending.get_mut(&first).unwrap();
                    let held = pending.iter().take_while(|p| !p.fresh).count();
                    pending.drain(..held);
                    m.dropped += held;
                    m.expected_reports.push((first, held as u64, "stalled"));
                    m.parked.remove(&first);
                } else {
                    parked.tries = if progressed { 0 } else { parked.tries + 1 };
                    parked.last_try = now;
                }
                Err(io::ErrorKind::WouldBlock.into())
            }
            Receiver::Full => {
                // The FIFO's EAGAIN parks the destination, with this datagram.
                m.parked.insert(
                    first,
                    ParkedModel {
                        last_try: now,
                        tries: 0,
                        progress: now,
                    },
                );
                Err(io::ErrorKind::WouldBlock.into())
            }
            Receiver::Gone => {
                // Dropped at once, reported once.
                m.pending.get_mut(&first).unwrap().pop_front();
                m.dropped += 1;
                if retrying {
                    m.expected_reports.push((first, 1, "failed"));
                }
                Err(io::ErrorKind::ConnectionRefused.into())
            }
        }
    }

    /// One flush as the entry does it (due parked destinations first, then the FIFO), and
    /// the checks that follow it.
    fn flush_model(q: &mut DatagramQueue<u32>, m: &mut PModel, per_call: usize) {
        m.expected_reports.clear();
        m.tried.clear();
        m.retry = None;
        let now = m.now;
        q.retry_parked(now, STALL, per_call, |items| fake_send(m, items, true));
        for (d, parked) in m.parked.clone() {
            if now >= parked.due() {
                assert!(
                    m.tried.contains(&d),
                    "destination {d} was due and not retried"
                );
            }
            if m.pending[&d].iter().all(|p| p.fresh) {
                // All it held went out (or was dropped): unparked.
                m.parked.remove(&d);
            }
        }
        for _ in 0..10_000 {
            match q.send_step(now, per_call, |items| fake_send(m, items, false)) {
                Step::Empty => break,
                Step::Sent { .. } | Step::Parked => {}
                Step::Failed { error, dropped } => {
                    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
                    assert!(
                        dropped.is_some(),
                        "a datagram to a gone receiver is dropped at once"
                    );
                }
                Step::Blocked => panic!("parking on: a full receiver never blocks the queue"),
            }
        }
        assert!(q.fifo_is_empty() && q.tail.is_empty(), "the FIFO drained");
        // What is left is held by parked destinations; each keeps its newest within the
        // limit (the oldest go).
        let mut over_limit: HashMap<u32, u64> = HashMap::new();
        for (d, pending) in m.pending.iter_mut() {
            pending.iter_mut().for_each(|p| p.fresh = false);
            if pending.is_empty() {
                continue;
            }
            assert!(
                m.parked.contains_key(d),
                "{d} has datagrams left and is not parked"
            );
            let mut bytes: usize = pending.iter().map(|p| p.len).sum();
            while bytes > LIMIT && pending.len() > 1 {
                bytes -= pending.pop_front().unwrap().len;
                *over_limit.entry(*d).or_default() += 1;
                m.dropped += 1;
            }
            assert_eq!(q.held_bytes(d), Some(bytes), "bytes held for {d}");
        }
        let mut reported_over: HashMap<u32, u64> = HashMap::new();
        let mut reported = Vec::new();
        for r in q.take_reports() {
            match r.cause {
                Cause::OverLimit { limit } => {
                    assert_eq!(limit, LIMIT);
                    *reported_over.entry(r.peer).or_default() += r.datagrams;
                }
                Cause::Stalled(after) => {
                    assert_eq!(after, STALL);
                    reported.push((r.peer, r.datagrams, "stalled"));
                }
                Cause::Failed(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
                    reported.push((r.peer, r.datagrams, "failed"));
                }
            }
        }
        assert_eq!(reported, m.expected_reports, "reports of the retries");
        assert_eq!(
            reported_over, over_limit,
            "datagrams dropped over the limit"
        );
        for d in 0..DESTS {
            assert_eq!(
                q.held_bytes(&d).is_some(),
                m.parked.contains_key(&d),
                "{d} parked"
            );
        }
        assert_eq!(q.parked_destinations(), m.parked.len());
        assert_eq!(
            q.next_retry(),
            m.parked.values().map(|p| p.due()).min(),
            "the next retry"
        );
    }

    fn apply_parking(q: &mut DatagramQueue<u32>, m: &mut PModel, op: &POp) {
        match *op {
            POp::Push { dest, len } => {
                let id = m.next_id;
                m.next_id += 1;
                let data = datagram(id, len);
                if id & 1 == 0 {
                    q.push_bytes(Some(dest), Bytes::from(data));
                } else {
                    q.tail.extend_from_slice(&data);
                    q.push_encoded(Some(dest), len);
                }
                m.pending.entry(dest).or_default().push_back(Pending {
                    id,
                    len,
                    fresh: true,
                });
                m.pushed += 1;
            }
            POp::Set { dest, receiver } => m.receivers[dest as usize] = receiver,
            POp::Advance { ms } => m.now += Duration::from_millis(ms),
            POp::Flush { per_call } => flush_model(q, m, per_call),
        }
        assert_eq!(q.len(), m.queued_bytes(), "len()");
        assert_eq!(q.datagrams(), m.queued(), "datagrams()");
        assert_eq!(q.is_empty(), m.queued() == 0, "is_empty()");
    }

    fn parking_op() -> impl Strategy<Value = POp> {
        let dest = 0..DESTS;
        let len = prop_oneof![8 => 8..200usize, 1 => COPY_THRESHOLD..COPY_THRESHOLD + 200];
        let receiver = prop_oneof![
            2 => Just(Receiver::Free),
            2 => Just(Receiver::Full),
            1 => Just(Receiver::Gone),
        ];
        prop_oneof![
            8 => (dest.clone(), len).prop_map(|(dest, len)| POp::Push { dest, len }),
            2 => (dest, receiver).prop_map(|(dest, receiver)| POp::Set { dest, receiver }),
            3 => prop_oneof![0..3u64, 3..40u64, 90..400u64].prop_map(|ms| POp::Advance { ms }),
            4 => prop_oneof![1..4usize, 4..=MAX_BATCH].prop_map(|per_call| POp::Flush { per_call }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Random pushes to four destinations whose receivers turn free, full or gone, time
        /// passing, and flushes, against a model of per-destination queues: every datagram
        /// offered is the next of its destination; a full receiver parks only its own
        /// destination and the others keep flowing (after each flush nothing is left for a
        /// destination that is not parked); a parked one is retried exactly when its
        /// backoff (1 ms doubling to 100 ms) says, holds its newest within the limit, and
        /// is dropped whole after the stall timeout; every drop is reported once, for its
        /// destination. At the end, with every receiver free, all that was not dropped
        /// arrives, each destination's in order.
        #[test]
        fn parking_matches_its_model(ops in vec(parking_op(), 1..300)) {
            let mut q = DatagramQueue::default();
            q.set_policy(PeerErrors::Drop, Some(LIMIT));
            let mut m = PModel::new();
            for op in &ops {
                apply_parking(&mut q, &mut m, op);
            }
            for d in 0..DESTS {
                apply_parking(&mut q, &mut m, &POp::Set { dest: d, receiver: Receiver::Free });
            }
            for _ in 0..3 {
                apply_parking(&mut q, &mut m, &POp::Advance { ms: 100 });
                apply_parking(&mut q, &mut m, &POp::Flush { per_call: MAX_BATCH });
            }
            prop_assert!(q.is_empty() && q.tail.is_empty());
            prop_assert_eq!(m.queued(), 0);
            let delivered: usize = m.delivered.values().map(|v| v.len()).sum();
            prop_assert_eq!(delivered + m.dropped, m.pushed);
            for ids in m.delivered.values() {
                prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "a destination's order");
            }
        }
    }
}
