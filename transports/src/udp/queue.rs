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

/// Why datagrams held for one destination of an unconnected unix datagram endpoint were
/// dropped (see [`DroppedDatagrams`]).
///
/// See [`DroppedDatagrams`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Its receiver was full and it held more than a destination may
    /// (`UnixDatagramEndpointBuilder::max_parked_per_peer`, in bytes, each datagram counted
    /// with 64 bytes of overhead): its oldest went.
    OverPeerLimit(usize),
    /// All parked destinations together held more than they may
    /// (`UnixDatagramEndpointBuilder::max_parked`, in bytes, each datagram counted with 64
    /// bytes of overhead), and this one had been parked longest: its oldest went.
    OverTotalLimit(usize),
    /// Its receiver took nothing for the write-stall timeout: all it held went.
    Stalled(Duration),
    /// A send to it failed for another reason than a full receiver (its socket closed, its
    /// file is gone; the error is the `source`): all it held went, and so did every other
    /// datagram for it that was to go out in the same flush.
    Failed,
}

/// The payload of the `Error::Io` an unconnected unix datagram endpoint reports to
/// `on_error` when it drops datagrams it held for one destination: who they were for, how
/// many, and why. Reported once per destination and cause in a flush, and drops past a
/// bound at most once per destination every 100 ms (those in between are added to the
/// next report, or to the one when it is no longer parked); the datagrams are counted in
/// `DatagramStats::dropped_out` as they are dropped. Get it from the error with `get_ref`
/// and `downcast_ref`; its `kind` is `WouldBlock` over a limit, `TimedOut` after the
/// stall, and the failure's own kind (`ConnectionRefused`, `NotFound`, ...) after a
/// failure.
///
/// ```
/// use getty_codec::RawCodec;
/// use getty_transports::udp::{DatagramHandler, DatagramSession, DroppedDatagrams, DropReason};
/// use getty_transports::{Error, UnixAddr};
///
/// struct Server;
/// impl DatagramHandler<RawCodec, UnixAddr> for Server {
///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, _: bytes::Bytes, _: UnixAddr) {}
///     fn on_error(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, error: &Error) {
///         let Error::Io(e) = error else { return };
///         if let Some(d) = e.get_ref().and_then(|e| e.downcast_ref::<DroppedDatagrams<UnixAddr>>()) {
///             if d.reason() == DropReason::Failed {
///                 eprintln!("{:?} is gone: {} replies dropped", d.peer(), d.datagrams());
///             }
///         }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct DroppedDatagrams<A> {
    peer: A,
    datagrams: u64,
    reason: DropReason,
    source: Option<io::Error>,
}

impl<A> DroppedDatagrams<A> {
    /// The destination the datagrams were for.
    ///
    /// See the [type-level example](DroppedDatagrams).
    pub fn peer(&self) -> &A {
        &self.peer
    }

    /// How many were dropped.
    ///
    /// See the [type-level example](DroppedDatagrams).
    pub fn datagrams(&self) -> u64 {
        self.datagrams
    }

    /// Why.
    ///
    /// See the [type-level example](DroppedDatagrams).
    pub fn reason(&self) -> DropReason {
        self.reason
    }
}

impl<A: fmt::Debug> fmt::Display for DroppedDatagrams<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, peer) = (self.datagrams, &self.peer);
        let what = if n == 1 { "datagram" } else { "datagrams" };
        match self.reason {
            DropReason::OverPeerLimit(limit) => write!(
                f,
                "dropped the oldest {n} {what} to {peer:?}: its receiver is full and a \
                 destination may hold {limit} bytes"
            ),
            DropReason::OverTotalLimit(limit) => write!(
                f,
                "dropped the oldest {n} {what} to {peer:?}: parked destinations may hold \
                 {limit} bytes in all, and it was parked longest"
            ),
            DropReason::Stalled(after) => write!(
                f,
                "dropped {n} {what} to {peer:?}: its receiver took none for {after:?}"
            ),
            DropReason::Failed => match &self.source {
                Some(e) => write!(f, "dropped {n} {what} to {peer:?}: {e}"),
                None => write!(f, "dropped {n} {what} to {peer:?}"),
            },
        }
    }
}

impl<A: fmt::Debug> std::error::Error for DroppedDatagrams<A> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Datagrams dropped for one destination, to be counted and reported to `on_error` once.
#[derive(Debug)]
pub(crate) struct Dropped<A> {
    pub(crate) peer: A,
    pub(crate) datagrams: u64,
    pub(crate) reason: DropReason,
    /// The failure, for [`DropReason::Failed`].
    pub(crate) source: Option<io::Error>,
}

impl<A: fmt::Debug + Send + Sync + 'static> Dropped<A> {
    /// The error `on_error` gets: a [`DroppedDatagrams`] that names the destination.
    pub(crate) fn into_error(self) -> io::Error {
        let kind = match (&self.reason, &self.source) {
            (DropReason::Stalled(_), _) => io::ErrorKind::TimedOut,
            (DropReason::Failed, Some(e)) => e.kind(),
            (DropReason::Failed, None) => io::ErrorKind::Other,
            _ => io::ErrorKind::WouldBlock,
        };
        io::Error::new(
            kind,
            DroppedDatagrams {
                peer: self.peer,
                datagrams: self.datagrams,
                reason: self.reason,
                source: self.source,
            },
        )
    }
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

    /// Destinations parked now (tests).
    #[cfg(test)]
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

impl<A: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static> DatagramQueue<A> {
    fn fail(&mut self, error: io::Error) -> Step {
        // The send got past the socket's own buffer (the kernel charges it first): whatever
        // was full is not any more, and a stale flag would keep the endpoint waiting for
        // room it has.
        self.socket_full = false;
        let named = match self.peer_errors {
            // Unconnected unix: the error is about this datagram's receiver: name it.
            PeerErrors::Drop => self.items.front().and_then(|i| i.peer.clone()),
            _ => None,
        };
        if let Some(peer) = named.as_ref().filter(|_| about_receiver(&error)) {
            // That receiver is gone (or its path unusable): the datagram is dropped, and so
            // is what else comes up for it in this flush, unsent; one report for them all.
            self.own_failures = 0;
            self.peer_failures = 0;
            self.pop(1);
            self.dropped += 1;
            note(&mut self.reports, peer, 1, DropReason::Failed, Some(error));
            self.failed.insert(peer.clone());
            return Step::Dropped;
        }
        let give_up = if self.peer_errors == PeerErrors::Keep && is_gone(&error) {
            false
        } else if super::socket::is_peer_error(&error) {
            self.peer_failures += 1;
            self.peer_errors == PeerErrors::Drop || self.peer_failures >= PEER_FAILURES_BEFORE_DROP
        } else {
            self.own_failures += 1;
            self.own_failures >= OWN_FAILURES_BEFORE_DROP
        };
        if !give_up {
            return Step::Failed {
                error,
                dropped: None,
            };
        }
        self.own_failures = 0;
        self.peer_failures = 0;
        let len = self.pop(1);
        if let Some(peer) = named {
            // A datagram of its own kept failing (too long for the receiver): reported
            // with the others of this flush, by destination.
            self.dropped += 1;
            note(&mut self.reports, &peer, 1, DropReason::Failed, Some(error));
            return Step::Dropped;
        }
        Step::Failed {
            error,
            dropped: Some(len),
        }
    }

    /// Offers up to `per_call` datagrams from the front to `link` (one syscall), which
    /// returns how many it sent. With parking on, datagrams for a parked destination are
    /// first moved to its queue (those for a destination that failed in this flush are
    /// dropped), and a batch stops before the next one of them.
    pub(crate) fn send_step(
        &mut self,
        now: Instant,
        per_call: usize,
        link: &mut impl Link<A>,
    ) -> Step {
        self.park_front(now);
        if self.items.is_empty() {
            if self.parked_datagrams == 0 {
                // Nothing to send: no room to wait for.
                self.socket_full = false;
            }
            return Step::Empty;
        }
        let result = {
            let mut k = per_call.clamp(1, MAX_BATCH).min(self.items.len());
            if !self.parked.is_empty() || !self.failed.is_empty() {
                // The front is neither (`park_front`): send up to the next that is.
                k = 1 + self
                    .items
                    .iter()
                    .take(k)
                    .skip(1)
                    .take_while(|item| !self.held_back(item.peer.as_ref()))
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
            link.send(ready)
        };
        match result {
            Ok(0) => self.fail(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                self.own_failures = 0;
                self.peer_failures = 0;
                self.socket_full = false;
                let bytes = self.pop(n);
                Step::Sent {
                    datagrams: n,
                    bytes,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.park_limits.is_none() {
                    return Step::Blocked;
                }
                self.socket_full = link.socket_full();
                if !self.socket_full && self.park_first(now) {
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

    /// The destination is parked, or failed in this flush: its datagrams are not sent in
    /// order.
    fn held_back(&self, peer: Option<&A>) -> bool {
        peer.is_some_and(|peer| self.parked.contains_key(peer) || self.failed.contains(peer))
    }

    /// Moves the datagrams at the front whose destination is parked into its queue, and
    /// drops those whose destination failed in this flush.
    fn park_front(&mut self, now: Instant) {
        while !(self.parked.is_empty() && self.failed.is_empty()) {
            let Some(peer) = self.items.front().and_then(|i| i.peer.as_ref()) else {
                break;
            };
            if self.failed.contains(peer) {
                let peer = peer.clone();
                self.pop(1);
                self.dropped += 1;
                note(&mut self.reports, &peer, 1, DropReason::Failed, None);
                continue;
            }
            if !self.parked.contains_key(peer) {
                break;
            }
            let Some((Some(peer), data)) = self.take_front() else {
                unreachable!("the front has a parked destination");
            };
            self.hold(now, peer, data);
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
        self.parkings += 1;
        self.parked.entry(peer.clone()).or_insert(Parked {
            held: VecDeque::new(),
            bytes: 0,
            unreported: [0; 2],
            reported_at: None,
            since: self.parkings,
            progress: now,
            retry_at,
            wait: FIRST_RETRY,
        });
        self.next_retry = earliest(self.next_retry, retry_at);
        self.hold(now, peer, data);
        true
    }

    /// Appends a datagram to a parked destination's queue, then applies the bounds: while
    /// it holds more than a destination may, its oldest go (its newest always stays); while
    /// all of them hold more than they may, the destination parked longest loses its
    /// oldest. Each datagram is charged its payload plus [`DATAGRAM_OVERHEAD`].
    fn hold(&mut self, now: Instant, peer: A, data: Bytes) {
        let limits = self.park_limits.expect("parking is on");
        let parked = self.parked.get_mut(&peer).expect("a parked destination");
        parked.bytes += data.len();
        self.parked_bytes += data.len();
        parked.held.push_back(data);
        self.parked_datagrams += 1;
        let mut dropped = 0;
        while parked.charge() > limits.per_peer && parked.held.len() > 1 {
            let oldest = parked.held.pop_front().expect("more than one held");
            parked.bytes -= oldest.len();
            self.parked_bytes -= oldest.len();
            self.parked_datagrams -= 1;
            dropped += 1;
        }
        if dropped > 0 {
            parked.unreported[0] += dropped;
            self.dropped += dropped;
            if let Some(due) =
                report_held_back(&peer, parked, limits, now, false, &mut self.reports)
            {
                self.next_retry = earliest(self.next_retry, due);
            }
        }
        while self.parked_charge() > limits.total {
            // Rare (the bound of them all is many destinations' worth): a scan will do.
            let Some((longest, parked)) = self
                .parked
                .iter_mut()
                .filter(|(_, p)| !p.held.is_empty())
                .min_by_key(|(_, p)| p.since)
            else {
                break;
            };
            let oldest = parked.held.pop_front().expect("not empty");
            parked.bytes -= oldest.len();
            self.parked_bytes -= oldest.len();
            self.parked_datagrams -= 1;
            self.dropped += 1;
            parked.unreported[1] += 1;
            if parked.held.is_empty() {
                // Nothing left: it is unparked (and its drops reported) on its next retry,
                // which is now.
                parked.retry_at = now;
                self.next_retry = earliest(self.next_retry, now);
            } else if let Some(due) =
                report_held_back(longest, parked, limits, now, false, &mut self.reports)
            {
                self.next_retry = earliest(self.next_retry, due);
            }
        }
    }

    /// Retries the parked destinations that are due, each up to `per_call` datagrams per
    /// send. A destination whose queue empties is unparked; one whose receiver is still
    /// full waits twice as long as before (or from the first wait again when some went
    /// out), and is dropped whole once it has taken nothing for `stall`; one whose send
    /// fails otherwise is dropped whole at once (and what comes up for it in order in the
    /// same flush, unsent). When the socket's own buffer is full the pass stops there: no
    /// destination is blamed, and those not tried stay due. Drops past a bound held back
    /// for a report are reported when [`REPORT_INTERVAL`] has passed, or when their
    /// destination leaves. Returns the datagrams and bytes sent. Allocates nothing (but a
    /// report of a drop).
    pub(crate) fn retry_parked(
        &mut self,
        now: Instant,
        stall: Duration,
        per_call: usize,
        link: &mut impl Link<A>,
    ) -> (usize, usize) {
        if self.next_retry.is_none_or(|at| now < at) {
            return (0, 0);
        }
        let limits = self.park_limits.expect("parking is on");
        let (mut datagrams, mut bytes) = (0, 0);
        let mut next_retry: Option<Instant> = None;
        let mut emptied = false;
        // Called when room may have come (a timer, writable readiness): try again.
        self.socket_full = false;
        let Self {
            parked: map,
            parked_bytes,
            parked_datagrams,
            reports,
            socket_full,
            dropped,
            failed,
            ..
        } = self;
        for (peer, parked) in map.iter_mut() {
            if parked.held.is_empty() {
                // Emptied by the bound of them all: unparked.
                report_held_back(peer, parked, limits, now, true, reports);
                emptied = true;
                continue;
            }
            let report_due = report_held_back(peer, parked, limits, now, false, reports);
            if *socket_full || parked.retry_at > now {
                next_retry = earliest(next_retry, parked.retry_at);
                if let Some(due) = report_due {
                    next_retry = earliest(next_retry, due);
                }
                continue;
            }
            let mut progressed = false;
            let mut interrupted = 0;
            loop {
                if parked.held.is_empty() {
                    break;
                }
                let k = per_call.clamp(1, MAX_BATCH).min(parked.held.len());
                let result = {
                    let mut batch = [const { MaybeUninit::<Outgoing<'_, A>>::uninit() }; MAX_BATCH];
                    for (slot, data) in batch.iter_mut().zip(parked.held.iter().take(k)) {
                        slot.write(Outgoing {
                            data,
                            peer: Some(peer),
                        });
                    }
                    // SAFETY: the loop initialised the first `k` elements (`k <=
                    // held.len()`); `Outgoing` has no drop glue.
                    let ready = unsafe {
                        std::slice::from_raw_parts(batch.as_ptr().cast::<Outgoing<'_, A>>(), k)
                    };
                    link.send(ready)
                };
                let failure = match result {
                    Ok(0) => io::ErrorKind::WriteZero.into(),
                    Ok(n) => {
                        *socket_full = false;
                        for data in parked.held.drain(..n.min(k)) {
                            parked.bytes -= data.len();
                            *parked_bytes -= data.len();
                            *parked_datagrams -= 1;
                            bytes += data.len();
                            datagrams += 1;
                        }
                        parked.progress = now;
                        progressed = true;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if link.socket_full() {
                            // Not this receiver's doing: it stays due, untouched.
                            *socket_full = true;
                            if progressed {
                                parked.wait = FIRST_RETRY;
                            }
                            next_retry = earliest(next_retry, parked.retry_at);
                            break;
                        }
                        *socket_full = false;
                        if now >= parked.progress + stall {
                            let n = parked.held.len() as u64;
                            report_held_back(peer, parked, limits, now, true, reports);
                            note(reports, peer, n, DropReason::Stalled(stall), None);
                            *dropped += n;
                            *parked_bytes -= parked.bytes;
                            *parked_datagrams -= parked.held.len();
                            parked.held.clear();
                            parked.bytes = 0;
                            break;
                        }
                        parked.wait = if progressed {
                            FIRST_RETRY
                        } else {
                            (parked.wait * 2).min(MAX_RETRY)
                        };
                        parked.retry_at = now + parked.wait;
                        next_retry = earliest(next_retry, parked.retry_at);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupted < 8 => {
                        interrupted += 1;
                        continue;
                    }
                    Err(e) => e,
                };
                // Failed for another reason (its socket closed, its file is gone): what it
                // holds would fail alike. All of it goes, reported once, with the error, and
                // so does what comes up for it in order in this flush.
                *socket_full = false;
                let n = parked.held.len() as u64;
                report_held_back(peer, parked, limits, now, true, reports);
                note(reports, peer, n, DropReason::Failed, Some(failure));
                *dropped += n;
                failed.insert(peer.clone());
                *parked_bytes -= parked.bytes;
                *parked_datagrams -= parked.held.len();
                parked.held.clear();
                parked.bytes = 0;
                break;
            }
            if parked.held.is_empty() {
                // Sent, stalled or failed: unparked, its last drops reported.
                report_held_back(peer, parked, limits, now, true, reports);
                emptied = true;
            } else if let Some(due) = report_due {
                next_retry = earliest(next_retry, due);
            }
        }
        if emptied {
            map.retain(|_, p| !p.held.is_empty());
        }
        self.next_retry = next_retry;
        (datagrams, bytes)
    }

    /// The bytes a parked destination holds (tests).
    #[cfg(test)]
    fn held_bytes(&self, peer: &A) -> Option<usize> {
        self.parked.get(peer).map(|p| p.bytes)
    }
}

impl Parked {
    /// What it is charged against the bounds: its payload, and the overhead of each
    /// datagram.
    fn charge(&self) -> usize {
        self.bytes + self.held.len() * DATAGRAM_OVERHEAD
    }
}

/// The earlier of a deadline (if any) and `at`.
fn earliest(deadline: Option<Instant>, at: Instant) -> Option<Instant> {
    Some(deadline.map_or(at, |d| d.min(at)))
}

/// True for the errors of a send on an unconnected unix socket that are about the
/// destination, not the datagram or the socket: its socket closed (`ECONNREFUSED`), its
/// path is gone, not a socket of this type, or not ours to write to. Every datagram to it
/// would fail alike.
fn about_receiver(e: &io::Error) -> bool {
    if super::socket::is_peer_error(e)
        || matches!(
            e.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
        )
    {
        return true;
    }
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::EPROTOTYPE))
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Notes `n` datagrams dropped for `peer`, added to an earlier report of the same
/// destination and cause when there is one (which keeps its error).
fn note<A: PartialEq + Clone>(
    reports: &mut Vec<Dropped<A>>,
    peer: &A,
    n: u64,
    reason: DropReason,
    source: Option<io::Error>,
) {
    if n == 0 {
        return;
    }
    match reports
        .iter_mut()
        .find(|r| r.reason == reason && r.peer == *peer)
    {
        Some(r) => {
            r.datagrams += n;
            if r.source.is_none() {
                r.source = source;
            }
        }
        None => reports.push(Dropped {
            peer: peer.clone(),
            datagrams: n,
            reason,
            source,
        }),
    }
}

/// Reports the drops past a bound held back for `peer`: at once when `leaving` (it is no
/// longer parked) or when its last such report is [`REPORT_INTERVAL`] old, else returns
/// when they are due.
fn report_held_back<A: PartialEq + Clone>(
    peer: &A,
    parked: &mut Parked,
    limits: ParkLimits,
    now: Instant,
    leaving: bool,
    reports: &mut Vec<Dropped<A>>,
) -> Option<Instant> {
    if parked.unreported == [0; 2] {
        return None;
    }
    if let Some(due) = parked.reported_at.map(|at| at + REPORT_INTERVAL) {
        if !leaving && now < due {
            return Some(due);
        }
    }
    let [over_peer, over_total] = std::mem::take(&mut parked.unreported);
    note(
        reports,
        peer,
        over_peer,
        DropReason::OverPeerLimit(limits.per_peer),
        None,
    );
    note(
        reports,
        peer,
        over_total,
        DropReason::OverTotalLimit(limits.total),
        None,
    );
    parked.reported_at = Some(now);
    None
}

#[cfg(test)]
mod tests;
