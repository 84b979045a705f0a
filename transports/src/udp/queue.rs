//! The outbound queue of a datagram session: whole datagrams in order, each with its
//! destination. Small datagrams are encoded back to back into one pooled buffer (the
//! tail); large byte buffers are queued as they are. A flush hands up to a batch of them
//! to one `sendmmsg`.
//!
//! On an unconnected unix datagram socket, `EAGAIN` has two causes, told apart by
//! [`Link::socket_full`]:
//! - the socket's **own** send buffer is full. Linux charges every unix datagram to its
//!   sender until its receiver reads it, so receivers that do not read hold up to their
//!   queue length (`net.unix.max_dgram_qlen` + 1, 11 by default) of our datagrams each, in
//!   our buffer. Then nothing can go anywhere: the whole queue waits ([`Step::Blocked`]),
//!   and no destination is blamed;
//! - the first datagram's **receiver** is full (our socket still has room): that
//!   destination is **parked**. Its datagrams move, in order, into a queue of its own,
//!   retried on a timer with backoff (1 ms doubling to 100 ms) while every other
//!   destination keeps flowing.
//!
//! Parked datagrams are not the session's queue: they count in neither its watermarks nor
//! `max_outbound` (one slow receiver must never cost the others their writes), and have
//! bounds of their own ([`ParkLimits`]): past its own bound a destination loses its oldest;
//! past the bound of them all, the destination parked longest loses its oldest. One that
//! takes nothing for the write-stall timeout is dropped whole and forgotten, and so is one
//! whose retry fails for another reason (its socket closed). A send in order that fails for
//! such a reason drops the datagram, and every other one for that destination that comes up
//! in the same flush, unsent. Every drop is reported with the destination
//! ([`DroppedDatagrams`]), once per destination and cause in a flush; drops past a bound at
//! most once per destination every [`REPORT_INTERVAL`] (and when it leaves), so that a
//! receiver that never reads cannot make one report per request.
//!
//! Every bound (the per-destination and total bounds of parked destinations, and the
//! queue's length that `max_outbound` and the watermarks count) charges each datagram its
//! payload plus [`DATAGRAM_OVERHEAD`], so that empty datagrams are bounded too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::io;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::batch::{Outgoing, MAX_BATCH};

mod send;

mod drops;

pub(crate) use drops::Dropped;
pub use drops::{DropReason, DroppedDatagrams};

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

/// What every datagram is charged against every bound, on top of its payload: what
/// holding it costs, roughly. In order, a queue entry (72 bytes for a UDP or unix address:
/// the address, the length, an optional buffer; a unix path's own allocation on top);
/// parked, a buffer of its own in a destination's queue (a 32-byte entry, and the
/// allocation's header and rounding). 64 keeps that order of magnitude: with it a bound of
/// B bytes holds at most B / 64 datagrams, however small, so that the memory behind it
/// stays within a small multiple of B (65,536 empty datagrams queued under the default
/// 4 MiB `max_outbound` take about 10 MB, queues grown by doubling included). Higher, it
/// would refuse honest small replies well before their bytes reach the bound (a 64 KiB
/// destination bound holds 512 replies of 64 bytes, not 341).
pub(crate) const DATAGRAM_OVERHEAD: usize = 64;

/// Drops past a bound are reported at most this often per destination (the rest is added
/// to the next report, or to the one when it leaves): a receiver that never reads costs at
/// most ten reports a second, as its retries cost at most ten wake-ups.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// The first and the longest wait before a blocked send is retried on a timer (a parked
/// destination, or a connected unix socket reconnecting to its peer): short at first, since
/// a reader that drains its queue frees room at once; doubling while nothing goes out, so a
/// receiver that stays full costs at most ten wake-ups a second.
pub(crate) const FIRST_RETRY: Duration = Duration::from_millis(1);
pub(crate) const MAX_RETRY: Duration = Duration::from_millis(100);

/// Where a flush sends: the socket, and (after an `EAGAIN`, with parking on) whether its
/// own send buffer is the one that is full.
pub(crate) trait Link<A> {
    /// Sends the datagrams offered (one syscall); returns how many went.
    fn send(&mut self, items: &[Outgoing<'_, A>]) -> io::Result<usize>;

    /// Asked after an `EAGAIN` when parking is on: true when the socket's own send buffer
    /// is full (the whole queue waits, no destination is to blame), false when the first
    /// datagram's receiver is (its destination is parked).
    fn socket_full(&mut self) -> bool {
        false
    }
}

impl<A, F> Link<A> for F
where
    F: FnMut(&[Outgoing<'_, A>]) -> io::Result<usize>,
{
    fn send(&mut self, items: &[Outgoing<'_, A>]) -> io::Result<usize> {
        self(items)
    }
}

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
    /// closed): the datagram is dropped at once, and reported once, naming the receiver.
    Drop,
    /// A connected unix socket: its peer is gone (`ECONNREFUSED`, then `ENOTCONN` once the
    /// kernel disconnected the socket). The datagram stays first while the entry
    /// reconnects to the peer's address.
    Keep,
}

/// What parked destinations may hold (unconnected unix sockets), in bytes, each datagram
/// charged its payload plus [`DATAGRAM_OVERHEAD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParkLimits {
    /// What one destination may hold; past it, its oldest go (its newest always stays).
    pub(crate) per_peer: usize,
    /// What all of them may hold; past it, the destination parked longest loses its
    /// oldest.
    pub(crate) total: usize,
}

/// What one [`DatagramQueue::send_step`] did.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing is queued (for a destination that is not parked).
    Empty,
    /// `datagrams` went out (possibly none, after an interrupted call).
    Sent { datagrams: usize, bytes: usize },
    /// The socket's own buffer is full: wait for room (no destination is to blame).
    Blocked,
    /// The first datagram's receiver is full (parking on, our socket has room): its
    /// destination was parked, with the datagram; the next step goes on with the others.
    Parked,
    /// The first datagram's receiver is gone (parking on: an unconnected unix socket): it
    /// was dropped unsent, and so is every other one for that destination that comes up
    /// before [`DatagramQueue::end_flush`]; noted in the reports, not reported by the step.
    Dropped,
    /// The first datagram failed. It was `dropped` when it had failed too often; otherwise
    /// it stays first in the queue and the next step retries it.
    Failed {
        error: io::Error,
        dropped: Option<usize>,
    },
}

/// The datagrams of one parked destination, oldest first.
struct Parked {
    held: VecDeque<Bytes>,
    /// Their payload bytes.
    bytes: usize,
    /// Drops past its own bound and past the bound of them all, not reported yet.
    unreported: [u64; 2],
    /// When drops past a bound were last reported for it.
    reported_at: Option<Instant>,
    /// The order it was parked in: the one parked longest loses first past the total
    /// bound.
    since: u64,
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
    /// Bytes queued in order (parked ones apart).
    bytes: usize,
    own_failures: u8,
    peer_failures: u8,
    peer_errors: PeerErrors,
    /// What parked destinations may hold; `None`: a full socket blocks the whole queue.
    park_limits: Option<ParkLimits>,
    parked: HashMap<A, Parked>,
    parked_datagrams: usize,
    parked_bytes: usize,
    /// Destinations parked so far (the next one's `since`).
    parkings: u64,
    /// The earliest retry of a parked destination.
    next_retry: Option<Instant>,
    /// The last `EAGAIN` was the socket's own buffer, and nothing went out since.
    socket_full: bool,
    /// Drops not reported yet (parked destinations, and failed ones with parking on).
    reports: Vec<Dropped<A>>,
    /// Datagrams dropped into `reports` (or held back for a later report), not counted
    /// yet.
    dropped: u64,
    /// Destinations a send failed to for good in this flush (parking on): what else comes
    /// up for them is dropped unsent.
    failed: HashSet<A>,
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
            park_limits: None,
            parked: HashMap::new(),
            parked_datagrams: 0,
            parked_bytes: 0,
            parkings: 0,
            next_retry: None,
            socket_full: false,
            reports: Vec::new(),
            dropped: 0,
            failed: HashSet::new(),
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
    /// destination (`Some(limits)`) or blocks the queue (`None`).
    pub(crate) fn set_policy(&mut self, peer_errors: PeerErrors, park_limits: Option<ParkLimits>) {
        self.peer_errors = peer_errors;
        self.park_limits = park_limits.map(|l| ParkLimits {
            per_peer: l.per_peer.max(1),
            total: l.total.max(1),
        });
    }

    /// What the watermarks and `max_outbound` count: the datagrams queued in order, each
    /// charged its payload plus [`DATAGRAM_OVERHEAD`]. Parked datagrams are not in it
    /// ([`parked_bytes`](Self::parked_bytes)).
    pub(crate) fn len(&self) -> usize {
        self.bytes + self.items.len() * DATAGRAM_OVERHEAD
    }

    /// Payload bytes queued in order (parked ones apart).
    pub(crate) fn payload_bytes(&self) -> usize {
        self.bytes
    }

    /// Payload bytes held for parked destinations.
    pub(crate) fn parked_bytes(&self) -> usize {
        self.parked_bytes
    }

    /// What the parked destinations are charged against the bound of them all.
    fn parked_charge(&self) -> usize {
        self.parked_bytes + self.parked_datagrams * DATAGRAM_OVERHEAD
    }

    /// Queued datagrams, parked ones included.
    pub(crate) fn datagrams(&self) -> usize {
        self.items.len() + self.parked_datagrams
    }

    /// Datagrams queued in order, parked ones apart: what the next send may take.
    pub(crate) fn in_order(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.parked_datagrams == 0
    }

    /// Nothing waits in order behind the front (parked destinations aside): the tail
    /// holds no datagram, and no send is blocked.
    pub(crate) fn fifo_is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The last `EAGAIN` found the socket's own send buffer full and nothing went out
    /// since: wait for room before trying again (parked destinations too).
    pub(crate) fn socket_full(&self) -> bool {
        self.socket_full
    }

    /// When the earliest parked destination is due for a retry; `None` while the socket's
    /// own buffer is full (room for it, not a parked receiver, is what is awaited).
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.next_retry.filter(|_| !self.socket_full)
    }

    /// Destinations parked now (the parking model).
    #[cfg(any(test, feature = "fuzzing"))]
    fn parked_destinations(&self) -> usize {
        self.parked.len()
    }

    /// Drops to report since the last call.
    pub(crate) fn take_reports(&mut self) -> Vec<Dropped<A>> {
        std::mem::take(&mut self.reports)
    }

    /// Datagrams dropped since the last call that the steps did not report themselves
    /// (those of [`take_reports`](Self::take_reports), reported now or later), to count.
    pub(crate) fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// True when there are drops to report or count.
    pub(crate) fn has_reports(&self) -> bool {
        !self.reports.is_empty() || self.dropped > 0
    }

    /// The flush is over: a destination a send failed to gets another try in the next one.
    /// With nothing left to send, the socket's buffer is no longer waited for.
    pub(crate) fn end_flush(&mut self) {
        self.failed.clear();
        if self.is_empty() {
            self.socket_full = false;
        }
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

    /// Removes the first `n` datagrams; returns their bytes.
    fn pop(&mut self, n: usize) -> usize {
        let mut bytes = 0;
        // The tail holds its datagrams in queue order: one advance past all of them.
        let mut in_tail = 0;
        for _ in 0..n {
            let Some(item) = self.items.pop_front() else {
                break;
            };
            if item.chunk.is_none() {
                in_tail += item.len;
            }
            bytes += item.len;
        }
        self.tail.advance(in_tail);
        self.bytes -= bytes;
        bytes
    }

    /// Takes the first datagram out of the queue, as bytes of its own (copied out of the
    /// tail when it is there); its bytes no longer count as queued in order.
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
        self.bytes -= item.len;
        Some((item.peer, data))
    }

    /// Drops everything queued (the session is going away without flushing).
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.tail.clear();
        self.bytes = 0;
        self.parked.clear();
        self.parked_datagrams = 0;
        self.parked_bytes = 0;
        self.next_retry = None;
        self.socket_full = false;
        self.failed.clear();
    }
}

/// The queue against a model of whole datagrams in order, and with parking on against a
/// model of per-destination queues: driven by the proptests in `tests`, and by the fuzz
/// targets `datagram_queue` and `datagram_parking` (the `fuzzing` feature).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod model;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod parking_model;

#[cfg(test)]
mod tests;
