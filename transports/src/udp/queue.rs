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
//! whose retry fails for another reason (its socket closed). Every drop is reported once per
//! destination and cause, with the destination ([`DroppedDatagrams`]).

use std::collections::{HashMap, VecDeque};
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

/// What parked destinations may hold (unconnected unix sockets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParkLimits {
    /// Bytes one destination may hold; past it, its oldest go (its newest always stays).
    pub(crate) per_peer: usize,
    /// Bytes all of them may hold; past it, the destination parked longest loses its
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
    /// (`UnixDatagramEndpointBuilder::max_parked_per_peer`, in bytes): its oldest went.
    OverPeerLimit(usize),
    /// All parked destinations together held more than they may
    /// (`UnixDatagramEndpointBuilder::max_parked`, in bytes), and this one had been parked
    /// longest: its oldest went.
    OverTotalLimit(usize),
    /// Its receiver took nothing for the write-stall timeout: all it held went.
    Stalled(Duration),
    /// A send to it failed for another reason than a full receiver (its socket closed, its
    /// file is gone; the error is the `source`): all it held went.
    Failed,
}

/// The payload of the `Error::Io` an unconnected unix datagram endpoint reports to
/// `on_error` when it drops datagrams it held for one destination: who they were for, how
/// many, and why. Reported once per destination and cause; the datagrams are counted in
/// `DatagramStats::dropped_out`. Get it from the error with `get_ref` and `downcast_ref`;
/// its `kind` is `WouldBlock` over a limit, `TimedOut` after the stall, and the failure's
/// own kind (`ConnectionRefused`, `NotFound`, ...) after a failure.
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
    bytes: usize,
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
            park_limits: None,
            parked: HashMap::new(),
            parked_datagrams: 0,
            parked_bytes: 0,
            parkings: 0,
            next_retry: None,
            socket_full: false,
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
    /// destination (`Some(limits)`) or blocks the queue (`None`).
    pub(crate) fn set_policy(&mut self, peer_errors: PeerErrors, park_limits: Option<ParkLimits>) {
        self.peer_errors = peer_errors;
        self.park_limits = park_limits.map(|l| ParkLimits {
            per_peer: l.per_peer.max(1),
            total: l.total.max(1),
        });
    }

    /// Bytes queued in order: what the watermarks and `max_outbound` count. Parked
    /// datagrams are not in it ([`parked_bytes`](Self::parked_bytes)).
    pub(crate) fn len(&self) -> usize {
        self.bytes
    }

    /// Bytes held for parked destinations.
    pub(crate) fn parked_bytes(&self) -> usize {
        self.parked_bytes
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

    /// Drops from parked queues since the last call, to count and report.
    pub(crate) fn take_reports(&mut self) -> Vec<Dropped<A>> {
        std::mem::take(&mut self.reports)
    }

    /// True when there are drops to report.
    pub(crate) fn has_reports(&self) -> bool {
        !self.reports.is_empty()
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
    }
}

impl<A: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static> DatagramQueue<A> {
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
        if !give_up {
            return Step::Failed {
                error,
                dropped: None,
            };
        }
        self.own_failures = 0;
        self.peer_failures = 0;
        let peer = match self.peer_errors {
            // Unconnected unix: the error is about this datagram's receiver: name it.
            PeerErrors::Drop => self.items.front().and_then(|i| i.peer.clone()),
            _ => None,
        };
        let len = self.pop(1);
        let error = match peer {
            Some(peer) => Dropped {
                peer,
                datagrams: 1,
                reason: DropReason::Failed,
                source: Some(error),
            }
            .into_error(),
            None => error,
        };
        Step::Failed {
            error,
            dropped: Some(len),
        }
    }

    /// Offers up to `per_call` datagrams from the front to `link` (one syscall), which
    /// returns how many it sent. With parking on, datagrams for a parked destination are
    /// first moved to its queue, and a batch stops before the next one of them.
    pub(crate) fn send_step(
        &mut self,
        now: Instant,
        per_call: usize,
        link: &mut impl Link<A>,
    ) -> Step {
        self.park_front(now);
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

    fn is_parked(&self, peer: Option<&A>) -> bool {
        peer.is_some_and(|peer| self.parked.contains_key(peer))
    }

    /// Moves the datagrams at the front whose destination is parked into its queue.
    fn park_front(&mut self, now: Instant) {
        while !self.parked.is_empty()
            && self.is_parked(self.items.front().and_then(|i| i.peer.as_ref()))
        {
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
            since: self.parkings,
            progress: now,
            retry_at,
            wait: FIRST_RETRY,
        });
        self.next_retry = Some(self.next_retry.map_or(retry_at, |at| at.min(retry_at)));
        self.hold(now, peer, data);
        true
    }

    /// Appends a datagram to a parked destination's queue, then applies the bounds: while
    /// it holds more than a destination may, its oldest go (its newest always stays); while
    /// all of them hold more than they may, the destination parked longest loses its
    /// oldest.
    fn hold(&mut self, now: Instant, peer: A, data: Bytes) {
        let limits = self.park_limits.expect("parking is on");
        let parked = self.parked.get_mut(&peer).expect("a parked destination");
        parked.bytes += data.len();
        self.parked_bytes += data.len();
        parked.held.push_back(data);
        self.parked_datagrams += 1;
        let mut dropped = 0;
        while parked.bytes > limits.per_peer && parked.held.len() > 1 {
            let oldest = parked.held.pop_front().expect("more than one held");
            parked.bytes -= oldest.len();
            self.parked_bytes -= oldest.len();
            self.parked_datagrams -= 1;
            dropped += 1;
        }
        self.report(peer, dropped, DropReason::OverPeerLimit(limits.per_peer));
        while self.parked_bytes > limits.total {
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
            if parked.held.is_empty() {
                // Nothing left: it is unparked on its next retry, which is now.
                parked.retry_at = now;
                self.next_retry = Some(now);
            }
            self.parked_bytes -= oldest.len();
            self.parked_datagrams -= 1;
            let longest = longest.clone();
            self.report(longest, 1, DropReason::OverTotalLimit(limits.total));
        }
    }

    /// Notes `n` datagrams dropped for `peer`, added to an earlier report of the same
    /// destination and cause when there is one.
    fn report(&mut self, peer: A, n: u64, reason: DropReason) {
        if n == 0 {
            return;
        }
        match self
            .reports
            .iter_mut()
            .find(|r| r.reason == reason && r.peer == peer)
        {
            Some(r) => r.datagrams += n,
            None => self.reports.push(Dropped {
                peer,
                datagrams: n,
                reason,
                source: None,
            }),
        }
    }

    /// Retries the parked destinations that are due, each up to `per_call` datagrams per
    /// send. A destination whose queue empties is unparked; one whose receiver is still
    /// full waits twice as long as before (or from the first wait again when some went
    /// out), and is dropped whole once it has taken nothing for `stall`; one whose send
    /// fails otherwise is dropped whole at once. When the socket's own buffer is full the
    /// pass stops there: no destination is blamed, and those not tried stay due. Returns
    /// the datagrams and bytes sent. Allocates nothing (but a report of a drop).
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
            ..
        } = self;
        for (peer, parked) in map.iter_mut() {
            if parked.held.is_empty() {
                // Emptied by the bound of them all: unparked.
                emptied = true;
                continue;
            }
            if *socket_full || parked.retry_at > now {
                next_retry = Some(next_retry.map_or(parked.retry_at, |at| at.min(parked.retry_at)));
                continue;
            }
            let mut progressed = false;
            let mut interrupted = 0;
            loop {
                if parked.held.is_empty() {
                    emptied = true;
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
                let failed = match result {
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
                            next_retry = Some(
                                next_retry.map_or(parked.retry_at, |at| at.min(parked.retry_at)),
                            );
                            break;
                        }
                        *socket_full = false;
                        if now >= parked.progress + stall {
                            reports.push(Dropped {
                                peer: peer.clone(),
                                datagrams: parked.held.len() as u64,
                                reason: DropReason::Stalled(stall),
                                source: None,
                            });
                            *parked_bytes -= parked.bytes;
                            *parked_datagrams -= parked.held.len();
                            parked.held.clear();
                            parked.bytes = 0;
                            emptied = true;
                            break;
                        }
                        parked.wait = if progressed {
                            FIRST_RETRY
                        } else {
                            (parked.wait * 2).min(MAX_RETRY)
                        };
                        parked.retry_at = now + parked.wait;
                        next_retry =
                            Some(next_retry.map_or(parked.retry_at, |at| at.min(parked.retry_at)));
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupted < 8 => {
                        interrupted += 1;
                        continue;
                    }
                    Err(e) => e,
                };
                // Failed for another reason (its socket closed, its file is gone): what it
                // holds would fail alike. All of it goes, reported once, with the error.
                reports.push(Dropped {
                    peer: peer.clone(),
                    datagrams: parked.held.len() as u64,
                    reason: DropReason::Failed,
                    source: Some(failed),
                });
                *parked_bytes -= parked.bytes;
                *parked_datagrams -= parked.held.len();
                parked.held.clear();
                parked.bytes = 0;
                emptied = true;
                break;
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
            let step = q.send_step(Instant::now(), per_call, &mut |items: &[Outgoing<
                '_,
                u32,
            >]| {
                fake.send(items)
            });
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
            q.send_step(
                Instant::now(),
                4,
                &mut |_: &[Outgoing<'_, u32>]| -> io::Result<usize> { unreachable!() }
            ),
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

    use std::time::{Duration, Instant};

    const DESTS: u32 = 4;
    const LIMIT: usize = 600;
    const TOTAL: usize = 1500;
    const STALL: Duration = Duration::from_millis(300);

    /// What the fake receiver at one destination does with a datagram.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Receiver {
        /// Takes it.
        Free,
        /// Its queue is full: `EAGAIN`, with room in the socket's own buffer.
        Full,
        /// Its socket closed: `ECONNREFUSED`.
        Gone,
    }

    #[derive(Debug, Clone)]
    enum POp {
        Push {
            dest: u32,
            len: usize,
        },
        Set {
            dest: u32,
            receiver: Receiver,
        },
        /// The socket's own send buffer fills (`EAGAIN` for every destination) or frees.
        SocketFull(bool),
        Advance {
            ms: u64,
        },
        Flush {
            per_call: usize,
        },
    }

    /// One datagram not yet sent or dropped.
    #[derive(Debug, Clone, Copy)]
    struct Pending {
        dest: u32,
        id: u64,
        len: usize,
    }

    /// A parked destination as documented: its datagrams, oldest first; retried at
    /// `retry_at`, after a wait that doubles (1 ms to 100 ms) while its receiver stays
    /// full; the order it was parked in.
    #[derive(Debug, Clone)]
    struct ParkedModel {
        held: VecDeque<Pending>,
        retry_at: Instant,
        wait: Duration,
        progress: Instant,
        seq: u64,
    }

    type Reports = HashMap<(u32, &'static str), u64>;

    struct PModel {
        now: Instant,
        /// Datagrams queued in order (not parked), oldest first.
        fifo: VecDeque<Pending>,
        receivers: [Receiver; DESTS as usize],
        socket_full: bool,
        parked: HashMap<u32, ParkedModel>,
        parkings: u64,
        delivered: HashMap<u32, Vec<u64>>,
        next_id: u64,
        pushed: usize,
        dropped: usize,
        /// Drops owed a report in this flush: per destination and cause, how many.
        reports: Reports,
        /// Destinations retried in this flush, and whether the pass stopped at a full
        /// socket.
        tried: Vec<u32>,
        stopped: bool,
        /// The destination being retried, and whether some of it went out.
        retry: Option<(u32, bool)>,
        /// The queue's last `EAGAIN` was the socket's own buffer.
        said_socket_full: bool,
    }

    impl PModel {
        fn new() -> Self {
            PModel {
                now: Instant::now(),
                fifo: VecDeque::new(),
                receivers: [Receiver::Free; DESTS as usize],
                socket_full: false,
                parked: HashMap::new(),
                parkings: 0,
                delivered: HashMap::new(),
                next_id: 0,
                pushed: 0,
                dropped: 0,
                reports: HashMap::new(),
                tried: Vec::new(),
                stopped: false,
                retry: None,
                said_socket_full: false,
            }
        }

        fn held_bytes(&self) -> usize {
            self.parked
                .values()
                .flat_map(|p| &p.held)
                .map(|p| p.len)
                .sum()
        }

        fn report(&mut self, dest: u32, cause: &'static str, n: u64) {
            if n > 0 {
                *self.reports.entry((dest, cause)).or_default() += n;
                self.dropped += n as usize;
            }
        }

        /// A datagram joins its parked destination: past the destination's bound its
        /// oldest go (its newest stays); past the bound of them all, the destination parked
        /// longest loses its oldest.
        fn hold(&mut self, p: Pending) {
            let parked = self.parked.get_mut(&p.dest).expect("parked");
            parked.held.push_back(p);
            let mut over = 0;
            while parked.held.iter().map(|p| p.len).sum::<usize>() > LIMIT && parked.held.len() > 1
            {
                parked.held.pop_front();
                over += 1;
            }
            self.report(p.dest, "over-peer", over);
            while self.held_bytes() > TOTAL {
                let (&longest, parked) = self
                    .parked
                    .iter_mut()
                    .filter(|(_, p)| !p.held.is_empty())
                    .min_by_key(|(_, p)| p.seq)
                    .expect("something is held");
                parked.held.pop_front();
                if parked.held.is_empty() {
                    parked.retry_at = self.now;
                }
                self.report(longest, "over-total", 1);
            }
        }

        /// What the queue does before a send of its FIFO: the datagrams at the front for a
        /// parked destination join it.
        fn park_front(&mut self) {
            while let Some(&front) = self.fifo.front() {
                if !self.parked.contains_key(&front.dest) {
                    break;
                }
                self.fifo.pop_front();
                self.hold(front);
            }
        }

        fn next_retry(&self) -> Option<Instant> {
            self.parked.values().map(|p| p.retry_at).min()
        }
    }

    fn datagram(id: u64, len: usize) -> Vec<u8> {
        let mut data: Vec<u8> = (0..len as u64).map(|i| stamp(id * 65_536 + i)).collect();
        data[..8].copy_from_slice(&id.to_be_bytes());
        data
    }

    /// The fake socket, and the model's account of what the queue must do with each
    /// outcome. It takes the datagrams of a batch in order until a receiver that is full or
    /// gone (an error if that is the first, as `sendmmsg` does), or none when the socket's
    /// own buffer is full. It checks that each datagram offered is the next of its
    /// destination, that the FIFO never offers one for a parked destination, and that a
    /// parked destination is retried only when due.
    struct FakeLink<'m> {
        m: &'m mut PModel,
        retrying: bool,
    }

    impl Link<u32> for FakeLink<'_> {
        fn send(&mut self, items: &[Outgoing<'_, u32>]) -> io::Result<usize> {
            let m = &mut *self.m;
            assert!(!items.is_empty());
            let first = *items[0]
                .peer
                .expect("unconnected: every datagram has a destination");
            let expected: Vec<Pending> = if self.retrying {
                let parked = m
                    .parked
                    .get(&first)
                    .expect("a retry of a parked destination");
                assert!(
                    m.now >= parked.retry_at,
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
                parked.held.iter().copied().collect()
            } else {
                m.park_front();
                m.fifo.iter().copied().collect()
            };
            assert!(items.len() <= expected.len(), "more offered than queued");
            let mut taken = items.len();
            for (i, (item, want)) in items.iter().zip(&expected).enumerate() {
                let d = *item.peer.expect("a destination");
                assert_eq!(
                    d, want.dest,
                    "datagram {i} of the batch is for another destination"
                );
                if !self.retrying {
                    assert!(
                        !m.parked.contains_key(&d),
                        "the FIFO offered one for parked {d}"
                    );
                }
                let id = u64::from_be_bytes(item.data[..8].try_into().unwrap());
                assert_eq!(
                    (id, item.data.len()),
                    (want.id, want.len),
                    "not the next datagram"
                );
                assert!(
                    item.data == datagram(id, want.len).as_slice(),
                    "the bytes of {id}"
                );
                if m.socket_full || m.receivers[d as usize] != Receiver::Free {
                    taken = i;
                    break;
                }
            }
            let now = m.now;
            if taken > 0 {
                for p in &expected[..taken] {
                    m.delivered.entry(p.dest).or_default().push(p.id);
                }
                if self.retrying {
                    let parked = m.parked.get_mut(&first).unwrap();
                    parked.held.drain(..taken);
                    parked.progress = now;
                    m.retry = Some((first, true));
                } else {
                    m.fifo.drain(..taken);
                }
                m.said_socket_full = false;
                return Ok(taken);
            }
            if m.socket_full {
                m.said_socket_full = true;
                if self.retrying {
                    // No one is blamed: the pass stops, this destination untouched but for
                    // a wait that starts over when some of it went out.
                    m.stopped = true;
                    if m.retry.is_some_and(|(_, p)| p) {
                        m.parked.get_mut(&first).unwrap().wait = FIRST_RETRY;
                    }
                }
                return Err(io::ErrorKind::WouldBlock.into());
            }
            match m.receivers[first as usize] {
                Receiver::Free => unreachable!(),
                Receiver::Full if self.retrying => {
                    m.said_socket_full = false;
                    let progressed = m.retry.is_some_and(|(_, p)| p);
                    let parked = m.parked.get_mut(&first).unwrap();
                    if now >= parked.progress + STALL {
                        let n = parked.held.len() as u64;
                        m.parked.remove(&first);
                        m.report(first, "stalled", n);
                    } else {
                        parked.wait = if progressed {
                            FIRST_RETRY
                        } else {
                            (parked.wait * 2).min(MAX_RETRY)
                        };
                        parked.retry_at = now + parked.wait;
                    }
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Receiver::Full => {
                    // The FIFO's EAGAIN with room in the socket parks the destination, with
                    // this datagram.
                    m.said_socket_full = false;
                    m.parkings += 1;
                    m.parked.insert(
                        first,
                        ParkedModel {
                            held: VecDeque::new(),
                            retry_at: now + FIRST_RETRY,
                            wait: FIRST_RETRY,
                            progress: now,
                            seq: m.parkings,
                        },
                    );
                    let p = m.fifo.pop_front().unwrap();
                    m.hold(p);
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Receiver::Gone if self.retrying => {
                    // All it holds goes, reported once.
                    let n = m.parked.remove(&first).unwrap().held.len() as u64;
                    m.report(first, "failed", n);
                    Err(io::ErrorKind::ConnectionRefused.into())
                }
                Receiver::Gone => {
                    // Dropped at once (reported by the entry, from the step).
                    m.fifo.pop_front();
                    m.dropped += 1;
                    Err(io::ErrorKind::ConnectionRefused.into())
                }
            }
        }

        fn socket_full(&mut self) -> bool {
            self.m.socket_full
        }
    }

    /// One flush as the entry does it (due parked destinations first, then the FIFO), and
    /// the checks that follow it.
    fn flush_model(q: &mut DatagramQueue<u32>, m: &mut PModel, per_call: usize) {
        m.reports.clear();
        m.tried.clear();
        m.stopped = false;
        m.retry = None;
        let now = m.now;
        let due: Vec<u32> = m
            .parked
            .iter()
            .filter(|(_, p)| p.retry_at <= now && !p.held.is_empty())
            .map(|(d, _)| *d)
            .collect();
        let runs = m.parked.values().any(|p| p.retry_at <= now);
        if runs {
            m.said_socket_full = false;
        }
        q.retry_parked(now, STALL, per_call, &mut FakeLink { m, retrying: true });
        for d in due {
            assert!(
                m.stopped || m.tried.contains(&d),
                "destination {d} was due and not retried"
            );
        }
        // Emptied by the retry, or earlier by the bound of them all: unparked.
        m.parked.retain(|_, p| !p.held.is_empty());
        let mut blocked = false;
        for _ in 0..10_000 {
            let step = q.send_step(now, per_call, &mut FakeLink { m, retrying: false });
            match step {
                Step::Empty => {
                    // The queue parks what is left for parked destinations without a send.
                    m.park_front();
                    assert!(m.fifo.is_empty(), "the FIFO drained");
                    break;
                }
                Step::Sent { .. } | Step::Parked => {}
                Step::Failed { error, dropped } => {
                    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
                    assert!(
                        dropped.is_some(),
                        "a datagram to a gone receiver is dropped"
                    );
                    let named = error
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<DroppedDatagrams<u32>>())
                        .expect("the error names the destination");
                    assert_eq!((named.datagrams(), named.reason()), (1, DropReason::Failed));
                }
                Step::Blocked => {
                    assert!(m.socket_full, "blocked with room in the socket");
                    blocked = true;
                    break;
                }
            }
        }
        assert_eq!(q.fifo_is_empty(), m.fifo.is_empty(), "the FIFO");
        assert_eq!(q.socket_full(), m.said_socket_full, "socket_full()");
        if blocked {
            assert!(q.socket_full());
        }
        // Reports: once per destination and cause, with the count.
        let mut reported: Reports = HashMap::new();
        for r in q.take_reports() {
            let cause = match r.reason {
                DropReason::OverPeerLimit(limit) => {
                    assert_eq!(limit, LIMIT);
                    "over-peer"
                }
                DropReason::OverTotalLimit(limit) => {
                    assert_eq!(limit, TOTAL);
                    "over-total"
                }
                DropReason::Stalled(after) => {
                    assert_eq!(after, STALL);
                    "stalled"
                }
                DropReason::Failed => {
                    let e = r.source.as_ref().expect("the failure");
                    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
                    "failed"
                }
            };
            let dest = r.peer;
            let error = r.into_error();
            let named = error
                .get_ref()
                .and_then(|e| e.downcast_ref::<DroppedDatagrams<u32>>())
                .expect("a DroppedDatagrams");
            assert_eq!(*named.peer(), dest);
            assert!(
                reported.insert((dest, cause), named.datagrams()).is_none(),
                "{dest} reported twice for {cause}"
            );
        }
        assert_eq!(reported, m.reports, "the drops reported");
        for d in 0..DESTS {
            let held = m.parked.get(&d).map(|p| p.held.iter().map(|p| p.len).sum());
            assert_eq!(q.held_bytes(&d), held, "bytes held for {d}");
        }
        assert_eq!(q.parked_destinations(), m.parked.len());
        let next = (!q.socket_full()).then(|| m.next_retry()).flatten();
        assert_eq!(q.next_retry(), next, "the next retry");
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
                m.fifo.push_back(Pending { dest, id, len });
                m.pushed += 1;
            }
            POp::Set { dest, receiver } => m.receivers[dest as usize] = receiver,
            POp::SocketFull(full) => m.socket_full = full,
            POp::Advance { ms } => m.now += Duration::from_millis(ms),
            POp::Flush { per_call } => flush_model(q, m, per_call),
        }
        // The watermarks and `max_outbound` count the FIFO alone; parked bytes apart.
        let fifo: usize = m.fifo.iter().map(|p| p.len).sum();
        assert_eq!(q.len(), fifo, "len()");
        assert_eq!(q.parked_bytes(), m.held_bytes(), "parked_bytes()");
        assert!(
            q.parked_bytes() <= TOTAL.max(LIMIT),
            "over the bound of them all"
        );
        let held: usize = m.parked.values().map(|p| p.held.len()).sum();
        assert_eq!(q.datagrams(), m.fifo.len() + held, "datagrams()");
        assert_eq!(q.is_empty(), m.fifo.is_empty() && held == 0, "is_empty()");
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
            1 => any::<bool>().prop_map(POp::SocketFull),
            3 => prop_oneof![0..3u64, 3..40u64, 90..400u64].prop_map(|ms| POp::Advance { ms }),
            4 => prop_oneof![1..4usize, 4..=MAX_BATCH].prop_map(|per_call| POp::Flush { per_call }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(160))]

        /// Random pushes to four destinations whose receivers turn free, full or gone, a
        /// socket whose own buffer fills and frees, time passing, and flushes, against a
        /// model of per-destination queues: every datagram offered is the next of its
        /// destination; a full receiver (with room in the socket) parks only its own
        /// destination and the others keep flowing; a full socket blocks the queue and
        /// parks or blames no one; a parked one is retried exactly when its backoff (1 ms
        /// doubling to 100 ms) says, holds its newest within its bound while all of them
        /// stay within theirs (the one parked longest losing first), and is dropped whole
        /// after the stall timeout or a failed send; parked bytes stay out of `len()`;
        /// every drop is reported once per destination and cause, naming it. At the end,
        /// with every receiver free, all that was not dropped arrives, each destination's
        /// in order.
        #[test]
        fn parking_matches_its_model(ops in vec(parking_op(), 1..300)) {
            let mut q = DatagramQueue::default();
            q.set_policy(PeerErrors::Drop, Some(ParkLimits { per_peer: LIMIT, total: TOTAL }));
            let mut m = PModel::new();
            for op in &ops {
                apply_parking(&mut q, &mut m, op);
            }
            apply_parking(&mut q, &mut m, &POp::SocketFull(false));
            for d in 0..DESTS {
                apply_parking(&mut q, &mut m, &POp::Set { dest: d, receiver: Receiver::Free });
            }
            for _ in 0..3 {
                apply_parking(&mut q, &mut m, &POp::Advance { ms: 100 });
                apply_parking(&mut q, &mut m, &POp::Flush { per_call: MAX_BATCH });
            }
            prop_assert!(q.is_empty() && q.tail.is_empty());
            prop_assert!(m.fifo.is_empty() && m.parked.is_empty());
            let delivered: usize = m.delivered.values().map(|v| v.len()).sum();
            prop_assert_eq!(delivered + m.dropped, m.pushed);
            for ids in m.delivered.values() {
                prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "a destination's order");
            }
        }
    }
}
