//! The state machine of one datagram socket (an unconnected endpoint, or one connected
//! client socket), generic over the socket so that other datagram sockets can reuse it.
//!
//! Life of a datagram: the socket turns readable; `on_readable` receives a batch
//! (`recvmmsg` on Linux) into per-slot buffers, hands each datagram to the codec exactly
//! once and the message to `on_message`; the replies the handler queued go out with one
//! `sendmmsg` right after the batch. `settle` runs after every event: it flushes, reports
//! watermark crossings, acts on `close()`/`abort()` and re-arms the entry's single timer
//! (cron, read-idle and write-stall deadlines).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use getty_codec::{CodecError, Decoded, Decoder};
use getty_reactor::{Context, Entry, Ready, Recipient, Status, TimerId};
use mio::Interest;

use super::batch::Outgoing;
use super::batch::{self, RecvMeta};
use super::client::PROBE_ANSWER;
use super::queue::{is_gone, Link, ParkLimits, PeerErrors, Step, FIRST_RETRY, MAX_RETRY};
use super::session::{DatagramHandler, DatagramSession};
use super::socket::{is_peer_error, DatagramSocket};
use crate::commands::{OwnerNote, SessionCommand, SessionOp};
use crate::core::CloseRequest;
use crate::outbound::{crossing_pending, next_writability};
use crate::stream::SessionEnded;
use crate::{Error, Metrics};

/// The bytes a datagram is charged against the read budget, at the least, so that a flood
/// of tiny datagrams still yields to other entries.
const MIN_BUDGET_CHARGE: usize = 64;

/// The largest datagram any socket can deliver (the UDP length field is 16 bits).
const MAX_DATAGRAM: usize = 65_535;

/// The address space the overflow regions of one socket may reserve (they take memory only
/// where a datagram longer than a slot lands, and give it back when the socket goes idle):
/// with the default 1 MiB `max_message_len`, a region for every slot of a batch of 32.
const OVERFLOW_SPACE: usize = 64 << 20;

/// How an entry treats its datagrams, beyond the session options.
#[derive(Debug, Clone)]
pub(crate) struct DatagramConfig {
    /// Datagrams per `recvmmsg`/`sendmmsg` (1: one at a time).
    pub(crate) batch: usize,
    /// Use `recvmmsg`/`sendmmsg` where the kernel has them.
    pub(crate) mmsg: bool,
    /// Datagrams equal to these bytes are dial probes: dropped and counted. So are
    /// answers to probes ([`PROBE_ANSWER`]): the dial's, never the application's.
    pub(crate) drop_probe: Option<Bytes>,
    /// Answer each probe dropped with [`PROBE_ANSWER`], so that a client's dial opens at
    /// once (unconnected UDP endpoints).
    pub(crate) answer_probe: bool,
    /// Close the session (and let its client redial) on an ICMP error.
    pub(crate) close_on_peer_error: bool,
    /// A unix datagram socket, whose send errors are about the receiver of that very
    /// datagram. Unconnected, an `EAGAIN` with room in the socket's own buffer means that
    /// one receiver's queue is full: its destination is parked on its own (see
    /// `udp/queue.rs`), and the endpoint never fails on a stall. Connected, a peer found
    /// gone is reconnected to.
    pub(crate) unix: bool,
    /// Bytes a parked destination may hold (unconnected unix sockets); `None`:
    /// [`PARKED_PER_PEER`].
    pub(crate) parked_limit: Option<usize>,
    /// Bytes all parked destinations may hold; `None`: [`PARKED_TOTAL`].
    pub(crate) parked_total: Option<usize>,
}

/// What one parked destination may hold by default: 64 KiB. A receiver's own queue holds
/// 11 datagrams (`net.unix.max_dgram_qlen` + 1), the same again waits here for a reply of
/// about 6 KB, many more for small ones; and it is the default high watermark, so one slow
/// receiver never holds more than the session would queue for everyone before it says it
/// is unwritable. The newest datagram always stays, however long.
pub(crate) const PARKED_PER_PEER: usize = 64 * 1024;

/// What all parked destinations may hold by default: 4 MiB, as much as the default
/// `max_outbound` (64 destinations at their full bound), so that an endpoint's output never
/// takes more than twice that.
pub(crate) const PARKED_TOTAL: usize = 4 << 20;

/// The socket as the queue sends to it.
struct SocketLink<'a, S> {
    socket: &'a S,
    mmsg: bool,
    /// `SO_SNDBUF`, read once per flush when an `EAGAIN` must be told apart.
    send_buffer: Option<usize>,
}

impl<S: DatagramSocket> Link<S::Addr> for SocketLink<'_, S> {
    fn send(&mut self, items: &[Outgoing<'_, S::Addr>]) -> std::io::Result<usize> {
        batch::send(self.socket, items, self.mmsg)
    }

    fn socket_full(&mut self) -> bool {
        self.socket.send_buffer_full(&mut self.send_buffer)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Built, not spawned yet.
    New,
    Open,
    /// Sending what is queued before closing; no more reading.
    Closing,
    /// `on_close` has run (or the session was rejected).
    Closed,
}

pub(crate) struct DatagramEntry<S: DatagramSocket, C, H> {
    socket: S,
    session: DatagramSession<C, S::Addr>,
    handler: H,
    config: DatagramConfig,
    phase: Phase,
    /// The writability last told to the handler.
    reported_writable: bool,
    owner: Option<Recipient<OwnerNote>>,
    /// One buffer per datagram of a batch (pooled, held only while datagrams arrive); the
    /// messages are copies or zero-copy views of them.
    slots: Vec<BytesMut>,
    metas: Vec<RecvMeta<S::Addr>>,
    /// Slots offered per receive: grows to `config.batch` while batches come back full,
    /// shrinks when they come back mostly empty.
    active: usize,
    /// Bytes received into a slot: at most a pooled buffer.
    slot_size: usize,
    /// Bytes per overflow region: what the largest datagram accepted (plus one byte, to
    /// catch an oversized one) needs beyond a slot. Zero when a slot holds it all (UDP).
    overflow_per: usize,
    /// The overflow regions, made on the first receive that needs them.
    overflow: Option<batch::Overflow>,
    timer: Option<(TimerId, Instant)>,
    next_cron: Option<Instant>,
    /// Since when queued datagrams have made no progress.
    blocked_since: Option<Instant>,
    /// `messages_out` already added to the reactor's metrics.
    reported_messages_out: u64,
    /// Registered for writable readiness too: only while the socket's buffer is full. A
    /// UDP socket signals write space every time a sent datagram's buffer is freed, so
    /// staying registered would cost a wake-up per datagram sent.
    want_writable: bool,
    /// When a blocked send is retried, and the wait that led there, for a blocked queue
    /// that no readiness event will wake: a socket that does not signal write space
    /// (`DatagramSocket::signals_write_space`), or a connected unix socket reconnecting.
    retry: Option<(Instant, Duration)>,
    /// A connected unix socket whose peer is gone: the last reconnect's error (the
    /// session ends with it if the peer is not back within the write-stall timeout).
    gone: Option<std::io::Error>,
}

impl<S, C, H> DatagramEntry<S, C, H>
where
    S: DatagramSocket,
    C: Decoder + 'static,
    H: DatagramHandler<C, S::Addr>,
{
    pub(crate) fn new(
        socket: S,
        session: DatagramSession<C, S::Addr>,
        handler: H,
        mut config: DatagramConfig,
        owner: Option<Recipient<OwnerNote>>,
    ) -> Self {
        config.batch = config.batch.clamp(1, batch::MAX_BATCH);
        let mut session = session;
        session.owner = owner;
        DatagramEntry {
            socket,
            session,
            handler,
            config,
            phase: Phase::New,
            reported_writable: true,
            owner,
            slots: Vec::new(),
            metas: Vec::new(),
            active: 1,
            slot_size: MAX_DATAGRAM + 1,
            overflow_per: 0,
            overflow: None,
            timer: None,
            next_cron: None,
            blocked_since: None,
            reported_messages_out: 0,
            want_writable: false,
            retry: None,
            gone: None,
        }
    }

    /// Lends the session a pooled buffer to encode into, so writes do not allocate.
    fn lend_write_buffer(&mut self, cx: &mut Context<'_>) {
        if self.session.out.tail.capacity() == 0 {
            self.session.out.tail = cx.buffers().take();
        }
    }

    fn give_back(cx: &mut Context<'_>, mut buf: BytesMut) {
        if buf.capacity() == 0 {
            return;
        }
        buf.clear();
        let size = cx.buffers().buffer_size();
        if buf.capacity() < size {
            // Split-off views of it may be gone: then its whole allocation is reusable.
            let _ = buf.try_reclaim(size);
        }
        cx.buffers().give(buf);
    }

    fn new_slot(&self, cx: &mut Context<'_>) -> BytesMut {
        if cx.buffers().buffer_size() >= self.slot_size {
            cx.buffers().take()
        } else {
            BytesMut::with_capacity(self.slot_size)
        }
    }

    /// Sizes the receive buffers for the largest datagram accepted: `max_message_len`, or
    /// less when the socket cannot receive that much (UDP's 64 KiB). Slots are pooled
    /// buffers, one per datagram of a batch; what a datagram needs beyond its slot goes to
    /// an overflow region of its own (a unix datagram of up to the sender's send buffer).
    fn size_receive_buffers(&mut self, cx: &mut Context<'_>) {
        // One byte more than the largest datagram accepted, to catch an oversized one.
        let largest = self
            .session
            .core
            .options
            .max_message_len
            .min(self.socket.max_recv_payload())
            .saturating_add(1);
        self.slot_size = largest.min(cx.buffers().buffer_size().max(1));
        self.overflow_per = largest - self.slot_size;
        self.active = self.config.batch.min(2);
    }

    /// Makes the overflow regions when first needed: one per slot of a batch, or fewer so
    /// that they reserve at most `OVERFLOW_SPACE` of address space (at least one: then a
    /// receive takes one datagram at a time). None are needed when a slot holds the largest
    /// datagram accepted; when the space cannot be had, a datagram longer than a slot is
    /// truncated and reported.
    fn make_overflow(&mut self) {
        if self.overflow_per == 0 || self.overflow.is_some() {
            return;
        }
        let regions = (OVERFLOW_SPACE / self.overflow_per).clamp(1, self.config.batch);
        match batch::Overflow::new(regions, self.overflow_per) {
            Ok(o) => self.overflow = Some(o),
            Err(e) => {
                log::warn!(
                    "session {}: no room to receive datagrams over {} bytes ({e}): they will \
                     be truncated and dropped",
                    self.session.id(),
                    self.slot_size - 1
                );
                self.overflow_per = 0;
            }
        }
    }

    /// Notes the receive buffers held, for [`DatagramSession::receive_buffer_bytes`].
    fn note_held(&mut self) {
        let slots: usize = self.slots.iter().map(BytesMut::capacity).sum();
        let overflow = self.overflow.as_ref().map_or(0, batch::Overflow::touched);
        self.session.recv_held = slots + overflow;
    }

    /// Gives the slots back to the pool and the overflow's pages back to the kernel: the
    /// socket was read dry, and an idle socket holds no receive buffers. The next readable
    /// event takes pooled buffers again, so datagrams arriving under load cost no
    /// allocation.
    fn release_receive_buffers(&mut self, cx: &mut Context<'_>) {
        for slot in self.slots.drain(..) {
            Self::give_back(cx, slot);
        }
        for meta in &mut self.metas {
            meta.peer = None;
        }
        if let Some(o) = &mut self.overflow {
            o.release();
        }
        self.session.recv_held = 0;
    }

    /// Makes the first `active` slots ready for a receive: each with room for a whole
    /// datagram, reusing its allocation once the handler has dropped the messages in it.
    fn prepare_slots(&mut self, cx: &mut Context<'_>) {
        let n = self.active;
        while self.slots.len() < n {
            let slot = self.new_slot(cx);
            self.slots.push(slot);
        }
        // The metadata stays when the slots go back to the pool (it is small): grow it to
        // the slots in use, never past them, or it would grow with every drained read.
        if self.metas.len() < n {
            self.metas.resize_with(n, RecvMeta::default);
        }
        debug_assert!(
            self.metas.len() <= self.config.batch,
            "receive metadata leaks"
        );
        for i in 0..n {
            let slot = &mut self.slots[i];
            debug_assert!(slot.is_empty());
            if slot.capacity() < self.slot_size && !slot.try_reclaim(self.slot_size) {
                // Messages handed out still use this buffer: they keep it alive.
                self.slots[i] = self.new_slot(cx);
            }
        }
        self.note_held();
    }

    fn on_readable(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let mut budget = self.session.core.options.read_budget;
        let want_addr = self.session.connected_peer().is_none();
        while self.phase == Phase::Open && !self.session.is_closing() {
            self.lend_write_buffer(cx);
            self.prepare_slots(cx);
            let n = self.active;
            self.make_overflow();
            let received = batch::recv(
                &self.socket,
                &mut self.slots[..n],
                &mut self.metas[..n],
                self.slot_size,
                self.overflow.as_mut(),
                want_addr,
                self.config.mmsg,
            );
            self.note_held();
            match received {
                Ok(r) => {
                    if r.count > 0 {
                        self.session.stats.last_read = cx.now();
                    }
                    let (bytes, messages) =
                        (self.session.stats.bytes_in, self.session.stats.messages_in);
                    for i in 0..r.count {
                        budget = budget.saturating_sub(self.metas[i].len.max(MIN_BUDGET_CHARGE));
                        if self.session.is_closing() {
                            // The handler closed mid-batch: no message after that.
                            self.slots[i].clear();
                            continue;
                        }
                        self.deliver(i);
                    }
                    let metrics = cx.extension::<Metrics>();
                    metrics.bytes_in += self.session.stats.bytes_in - bytes;
                    metrics.messages_in += self.session.stats.messages_in - messages;
                    if r.count == n && n < self.config.batch {
                        self.active = (n * 2).min(self.config.batch);
                    } else if r.drained && r.count * 4 <= n && n > 2 {
                        // Mostly empty: offer fewer slots (pooled buffers) next time.
                        self.active = n / 2;
                    }
                    // The replies to this batch leave with one `sendmmsg`, now.
                    self.flush(cx);
                    if let Some(e) = r.error {
                        self.read_error(e)?;
                    }
                    if r.drained {
                        break;
                    }
                    if budget == 0 {
                        // More to read on the next turn: the buffers stay.
                        cx.reschedule(Ready::READABLE);
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => self.read_error(e)?,
            }
        }
        // Read dry (or no longer reading): an idle socket holds no receive buffers.
        self.release_receive_buffers(cx);
        Ok(())
    }

    /// Decodes datagram `i` as exactly one message and hands it to the handler, or drops it.
    fn deliver(&mut self, i: usize) {
        let len = self.metas[i].len;
        let truncated = self.metas[i].truncated;
        let overflow = std::mem::take(&mut self.metas[i].overflow);
        let peer = match self.metas[i].peer.take() {
            Some(peer) => peer,
            None => match self.session.connected_peer() {
                Some(peer) => peer.clone(),
                None => {
                    self.session.stats.datagrams_in += 1;
                    self.session.stats.dropped_in += 1;
                    log::debug!("dropped a datagram from an address of another family");
                    self.slots[i].clear();
                    return;
                }
            },
        };
        let stats = &mut self.session.stats;
        stats.datagrams_in += 1;
        stats.bytes_in += len as u64;
        let max = self.session.core.options.max_message_len;
        if len > max || truncated {
            // With MSG_TRUNC the kernel reports the datagram's real length. One within the
            // limit, yet longer than the buffers, was cut by the socket's own bound (or the
            // want of room for an overflow region): say so, with the real sizes.
            let kept = self.slots[i].len() + overflow;
            self.slots[i].clear();
            let error = if len > max {
                Error::MessageTooLong { len, max }
            } else {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "datagram of {len} bytes truncated to the {kept}-byte receive buffer \
                         (max message length {max})"
                    ),
                ))
            };
            self.drop_datagram(error, &peer);
            return;
        }
        let mut datagram = if overflow > 0 {
            // Longer than its slot: the whole datagram in a buffer of its own, so that the
            // message is a view of exactly its bytes, and the slot stays a pooled buffer.
            let regions = self
                .overflow
                .as_ref()
                .expect("a datagram overflowed into it");
            let mut whole = BytesMut::with_capacity(len);
            whole.extend_from_slice(&self.slots[i]);
            whole.extend_from_slice(regions.part(i, overflow));
            self.slots[i].clear();
            whole
        } else {
            std::mem::take(&mut self.slots[i])
        };
        self.decode_datagram(&mut datagram, len, peer);
        if overflow == 0 {
            datagram.clear();
            self.slots[i] = datagram;
        }
    }

    /// Decodes one whole datagram of `len` bytes as exactly one message and hands it to the
    /// handler, or drops it.
    fn decode_datagram(&mut self, datagram: &mut BytesMut, len: usize, peer: S::Addr) {
        if let Some(probe) = &self.config.drop_probe {
            // An answer first, even if the probe is configured to the same bytes: an answer
            // is never answered, so two endpoints cannot bounce one between them.
            if datagram[..] == *PROBE_ANSWER {
                // An answer that came after its dial had opened on silence.
                self.session.stats.probes_dropped += 1;
                return;
            }
            if datagram[..] == probe[..] {
                self.session.stats.probes_dropped += 1;
                log::debug!("dropped a dial probe from {peer:?}");
                // Never more bytes out than came in, so a forged probe amplifies nothing;
                // never to a source nothing can be sent to (a forged port 0); a full queue
                // (or a closing session) leaves the client to its wait.
                let answerable = probe.len() >= PROBE_ANSWER.len() && S::can_send_to(&peer);
                if self.config.answer_probe && answerable {
                    let answer = Bytes::from_static(PROBE_ANSWER);
                    match self.session.queue_control(peer, answer) {
                        Ok(()) => self.session.stats.probes_answered += 1,
                        Err(e) => log::debug!("a dial probe went unanswered: {e}"),
                    }
                }
                return;
            }
        }
        let max = self.session.core.options.max_message_len;
        // Each datagram is a buffer of its own: nothing the codec remembers of an earlier
        // one (a line scanned without a newline) may apply to it.
        let codec = self.session.decoder();
        codec.reset();
        // The datagram is within the limit; a message it declares longer (a length header)
        // is refused against the same limit, as on a stream.
        let error = match codec.decode_limited(datagram, max) {
            Ok(Decoded::Frame(message)) if datagram.is_empty() => {
                self.session.stats.messages_in += 1;
                self.handler.on_message(&mut self.session, message, peer);
                return;
            }
            Ok(Decoded::Frame(_)) if datagram.len() == len => Error::CodecConsumedNothing,
            Ok(Decoded::Frame(_)) => Error::Codec(CodecError::malformed(format!(
                "{} bytes after the message in one datagram",
                datagram.len()
            ))),
            Ok(Decoded::NeedMore(_)) if len == 0 => {
                Error::Codec(CodecError::malformed("empty datagram"))
            }
            Ok(Decoded::NeedMore(_)) => Error::Codec(CodecError::malformed(format!(
                "datagram of {len} bytes ends inside a message"
            ))),
            Err(e) => match e.limit_exceeded() {
                Some((len, max)) => Error::MessageTooLong { len, max },
                None => Error::Codec(e),
            },
        };
        self.drop_datagram(error, &peer);
    }

    /// Counts and reports a datagram dropped on the way in (its buffer already cleared).
    fn drop_datagram(&mut self, error: Error, peer: &S::Addr) {
        self.session.stats.dropped_in += 1;
        log::debug!(
            "session {}: dropped a datagram from {peer:?}: {error}",
            self.session.id()
        );
        self.handler.on_error(&mut self.session, &error);
    }

    /// An error from a receive: ICMP errors are reported and reading goes on; anything
    /// else ends the session.
    fn read_error(&mut self, e: std::io::Error) -> Result<(), Error> {
        if is_peer_error(&e) {
            self.peer_error(e);
            Ok(())
        } else {
            Err(Error::Io(e))
        }
    }

    /// An ICMP error about the peer: count it, report it, and close when so configured.
    fn peer_error(&mut self, e: std::io::Error) {
        self.session.stats.peer_errors += 1;
        log::debug!("session {}: peer error: {e}", self.session.id());
        if self.config.close_on_peer_error && self.session.is_connected() {
            self.session.close();
        }
        self.handler.on_error(&mut self.session, &Error::Io(e));
    }

    /// Sends queued datagrams until the queue is empty or the socket is full. Parked
    /// destinations that are due are retried first (their datagrams are older than any
    /// queued for them since), then the queue in order.
    /// Sends what the socket takes. Returns true when datagrams are left that could still
    /// go now: the handler wrote them in an `on_error` for a drop reported after the send
    /// loop, and nothing (no readiness, no timer) would wake the session for them.
    fn flush(&mut self, cx: &mut Context<'_>) -> bool {
        let per_call = if self.config.mmsg && batch::HAS_MMSG {
            self.config.batch
        } else {
            1
        };
        let now = cx.now();
        let mut progressed = false;
        let mut blocked = false;
        let mut reconnected = false;
        let bytes_before = self.session.stats.bytes_out;
        let mut link = SocketLink {
            socket: &self.socket,
            mmsg: self.config.mmsg,
            send_buffer: None,
        };
        if self.session.core.close_request != Some(CloseRequest::Abort) {
            let stall = self.session.core.options.write_stall_timeout;
            let (datagrams, bytes) = self
                .session
                .out
                .retry_parked(now, stall, per_call, &mut link);
            self.session.stats.datagrams_out += datagrams as u64;
            self.session.stats.bytes_out += bytes as u64;
            progressed |= datagrams > 0;
        }
        while self.session.core.close_request != Some(CloseRequest::Abort) {
            let step = self.session.out.send_step(now, per_call, &mut link);
            match step {
                Step::Empty => break,
                Step::Blocked => {
                    blocked = true;
                    break;
                }
                // That destination waits on its own, or was dropped (reported below, once
                // for all its datagrams of this flush); the others go on.
                Step::Parked | Step::Dropped => {}
                Step::Sent { datagrams, bytes } => {
                    self.session.stats.datagrams_out += datagrams as u64;
                    self.session.stats.bytes_out += bytes as u64;
                    progressed |= datagrams > 0;
                    if datagrams > 0 {
                        self.gone = None;
                    }
                }
                Step::Failed {
                    error,
                    dropped: None,
                } if self.reconnects() && is_gone(&error) => {
                    // The peer is gone (it closed; perhaps it restarted at the same
                    // address): reconnect, and send the datagram again. Reported once.
                    if self.gone.is_none() {
                        self.session.stats.peer_errors += 1;
                        log::debug!("session {}: the peer is gone: {error}", self.session.id());
                        self.gone = Some(std::io::ErrorKind::NotConnected.into());
                        self.lend_write_buffer(cx);
                        self.handler.on_error(&mut self.session, &Error::Io(error));
                    }
                    match self.reconnect() {
                        // Once per flush: a peer that keeps vanishing waits for the timer.
                        Ok(()) if !reconnected => reconnected = true,
                        Ok(()) => {
                            blocked = true;
                            break;
                        }
                        Err(e) => {
                            self.gone = Some(e);
                            blocked = true;
                            break;
                        }
                    }
                    link = SocketLink {
                        socket: &self.socket,
                        mmsg: self.config.mmsg,
                        send_buffer: None,
                    };
                }
                Step::Failed { error, dropped } => {
                    if let Some(len) = dropped {
                        self.session.stats.dropped_out += 1;
                        log::debug!(
                            "session {}: dropped an outgoing datagram of {len} bytes: {error}",
                            self.session.id()
                        );
                    }
                    self.lend_write_buffer(cx);
                    if is_peer_error(&error) {
                        self.peer_error(error);
                    } else if dropped.is_some() {
                        self.handler.on_error(&mut self.session, &Error::Io(error));
                    }
                    link = SocketLink {
                        socket: &self.socket,
                        mmsg: self.config.mmsg,
                        send_buffer: None,
                    };
                }
            }
        }
        if self.session.out.has_reports() {
            self.report_parked_drops(cx);
        }
        self.session.out.end_flush();
        if progressed {
            self.session.stats.last_write = now;
            cx.extension::<Metrics>().bytes_out += self.session.stats.bytes_out - bytes_before;
        }
        // Parking on (an unconnected unix socket): a full socket may be found by a retry of
        // a parked destination, with nothing queued in order.
        let socket_full = blocked || self.session.out.socket_full();
        if !socket_full && !self.session.out.fifo_is_empty() {
            return true;
        }
        if !socket_full {
            self.blocked_since = None;
            self.retry = None;
            self.watch_writable(cx, false);
        } else {
            let parking = self.config.unix && !self.session.is_connected();
            // An open unconnected unix endpoint never fails on a stall: receivers that do
            // not read hold its buffer, and it is free again when they read or close.
            // Until then its queue waits, bounded by `max_outbound` (and the watermarks say
            // so). Once closing, the stall bounds the wait, as for any session.
            let stalls = !parking || self.phase == Phase::Closing;
            if stalls && (progressed || self.blocked_since.is_none()) {
                self.blocked_since = Some(now);
            }
            let connected = self.session.is_connected();
            if self.gone.is_none() && self.socket.signals_write_space(connected) {
                // Registering re-checks readiness, so space freed since the `EAGAIN` still
                // raises an event.
                self.watch_writable(cx, true);
            } else {
                if parking {
                    // The kernel says so once the buffer has drained to a quarter; the
                    // timer finds room that comes sooner (a fast reader's datagrams read).
                    self.watch_writable(cx, true);
                }
                self.schedule_retry(now, progressed);
            }
        }
        false
    }

    /// A connected unix socket: a peer found gone is reconnected to.
    fn reconnects(&self) -> bool {
        self.config.unix && self.session.is_connected()
    }

    /// Connects the socket to its peer's address again (the kernel disconnected it when it
    /// found the peer gone). It succeeds once a socket is bound there again.
    fn reconnect(&mut self) -> std::io::Result<()> {
        let peer = self
            .session
            .connected_peer()
            .expect("only a connected socket reconnects");
        let result = self.socket.sock().connect(&S::encode_addr(peer));
        match &result {
            Ok(()) => log::debug!("session {}: reconnected to {peer:?}", self.session.id()),
            Err(e) => log::debug!("session {}: cannot reconnect: {e}", self.session.id()),
        }
        result
    }

    /// Counts the datagrams dropped by destination (parked, or failed on an unconnected
    /// unix socket), and reports them, one `on_error` per destination and cause (drops past
    /// a bound may be held back for a later report, but are counted now).
    fn report_parked_drops(&mut self, cx: &mut Context<'_>) {
        self.session.stats.dropped_out += self.session.out.take_dropped();
        for dropped in self.session.out.take_reports() {
            let error = Error::Io(dropped.into_error());
            log::debug!("session {}: {error}", self.session.id());
            self.lend_write_buffer(cx);
            self.handler.on_error(&mut self.session, &error);
        }
    }

    /// Retries a blocked send after a wait that doubles while nothing goes out (1 ms up to
    /// 100 ms): a slow reader costs at most ten wake-ups a second, never a busy loop. A
    /// flush before the retry is due (another event) leaves the armed retry as it is; the
    /// one that is due doubles the wait.
    fn schedule_retry(&mut self, now: Instant, progressed: bool) {
        let wait = match self.retry {
            Some((at, last)) if !progressed => {
                if now < at {
                    return;
                }
                (last * 2).min(MAX_RETRY)
            }
            _ => FIRST_RETRY,
        };
        self.retry = Some((now + wait, wait));
    }

    /// How the queue treats a full receiver and errors about the peer, by socket.
    fn set_send_policy(&mut self) {
        let (peer_errors, park_limit) = match (self.config.unix, self.session.is_connected()) {
            (false, _) => (PeerErrors::Retry, None),
            (true, true) => (PeerErrors::Keep, None),
            (true, false) => {
                let limits = ParkLimits {
                    per_peer: self.config.parked_limit.unwrap_or(PARKED_PER_PEER),
                    total: self.config.parked_total.unwrap_or(PARKED_TOTAL),
                };
                (PeerErrors::Drop, Some(limits))
            }
        };
        self.session.out.set_policy(peer_errors, park_limit);
    }

    /// Registers or drops interest in writable readiness.
    fn watch_writable(&mut self, cx: &mut Context<'_>, on: bool) {
        if self.want_writable == on {
            return;
        }
        let interest = if on {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        match cx
            .registry()
            .reregister(&mut self.socket, cx.token(), interest)
        {
            Ok(()) => self.want_writable = on,
            Err(e) => log::warn!("session {}: cannot reregister: {e}", self.session.id()),
        }
    }

    /// Tells the handler when the queue crossed a watermark. Returns true when it did.
    fn report_writability(&mut self, cx: &mut Context<'_>) -> bool {
        let (high, low) = (
            self.session.core.options.high_watermark,
            self.session.core.options.low_watermark,
        );
        if self.session.core.writable == self.reported_writable {
            let queued = self.session.out.len();
            self.session.core.writable =
                next_writability(self.reported_writable, queued, high, low);
        }
        if self.session.core.writable == self.reported_writable || self.phase != Phase::Open {
            return false;
        }
        self.reported_writable = self.session.core.writable;
        if let Some(state) = &self.session.handle_state {
            state.set_writable(self.reported_writable);
        }
        self.lend_write_buffer(cx);
        self.handler
            .on_writability_changed(&mut self.session, self.reported_writable);
        true
    }

    /// Datagrams queued, or a writability crossing the handler has not heard of.
    fn work_left(&self) -> bool {
        let options = &self.session.core.options;
        !self.session.out.is_empty()
            || crossing_pending(
                self.session.core.writable,
                self.reported_writable,
                self.session.out.len(),
                options.high_watermark,
                options.low_watermark,
            )
    }

    /// After every event: flush, report watermarks, act on close requests, re-arm the timer.
    fn settle(&mut self, cx: &mut Context<'_>) -> Status {
        if self.phase == Phase::Closed {
            return Status::Done;
        }
        let queued = self.session.stats.messages_out - self.reported_messages_out;
        if queued > 0 {
            self.reported_messages_out = self.session.stats.messages_out;
            cx.extension::<Metrics>().messages_out += queued;
        }
        if self.session.core.close_request != Some(CloseRequest::Abort) {
            // The handler may write more when it hears of a crossing: a few rounds at most;
            // what is left (datagrams it queued in the last round, a crossing still to
            // tell) waits for the next turn, as nothing else would wake the session for it.
            let settled = (0..4).any(|_| {
                let more = self.flush(cx);
                !self.report_writability(cx) && !more
            });
            if !settled && self.work_left() {
                cx.reschedule(Ready::WRITABLE);
            }
        }
        if self.session.out.fifo_is_empty() {
            // Nothing in flight: the encoding buffer goes back to the pool until the next
            // event (an idle socket holds none; parked datagrams have bytes of their own).
            let tail = std::mem::take(&mut self.session.out.tail);
            Self::give_back(cx, tail);
        }
        match self.session.core.close_request {
            Some(CloseRequest::Abort) => return self.end(cx),
            Some(CloseRequest::Graceful) => {
                self.phase = Phase::Closing;
                if self.session.out.is_empty() {
                    return self.end(cx);
                }
            }
            None => {}
        }
        self.rearm_timer(cx);
        Status::Continue
    }

    /// The earliest of the cron tick and the idle and write-stall deadlines.
    fn next_deadline(&self) -> Option<Instant> {
        let opts = &self.session.core.options;
        let open = self.phase == Phase::Open;
        let idle = opts
            .read_idle_timeout
            .filter(|_| open)
            .map(|t| self.session.stats.last_read + t);
        let cron = self.next_cron.filter(|_| open);
        let stall = self.blocked_since.map(|t| t + opts.write_stall_timeout);
        let retry = self.retry.map(|(at, _)| at);
        let parked = self.session.out.next_retry();
        [cron, idle, stall, retry, parked]
            .into_iter()
            .flatten()
            .min()
    }

    /// Keeps one timer armed for the next deadline; one that fires early just re-arms.
    fn rearm_timer(&mut self, cx: &mut Context<'_>) {
        if std::mem::take(&mut self.session.core.timers_changed) {
            self.next_cron = self.session.core.options.cron_period.map(|p| cx.now() + p);
            if let Some((id, _)) = self.timer.take() {
                cx.cancel_timer(id);
            }
        }
        let Some(deadline) = self.next_deadline() else {
            return;
        };
        match self.timer {
            Some((_, armed)) if armed <= deadline => {}
            _ => {
                if let Some((id, _)) = self.timer.take() {
                    cx.cancel_timer(id);
                }
                self.timer = Some((cx.set_timer_at(deadline, 0), deadline));
            }
        }
    }

    fn on_deadline(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let now = cx.now();
        // A due retry is done by the flush that follows every timer, which schedules the
        // next one from the wait it keeps (clearing it here would restart the backoff).
        let opts = &self.session.core.options;
        if let Some(since) = self.blocked_since {
            if now >= since + opts.write_stall_timeout {
                // A connected unix socket whose peer did not come back ends with the
                // reconnect's error; anything else blocked that long, with the stall.
                return Err(match self.gone.take() {
                    Some(e) => Error::Io(e),
                    None => Error::WriteStalled(opts.write_stall_timeout),
                });
            }
        }
        if let Some(idle) = opts.read_idle_timeout {
            if self.phase == Phase::Open && now >= self.session.stats.last_read + idle {
                return Err(Error::ReadIdle(idle));
            }
        }
        if let (Some(due), Some(period)) = (self.next_cron, opts.cron_period) {
            if now >= due && self.phase == Phase::Open {
                // Skip missed ticks rather than firing a burst after a stall.
                let missed = (now - due).as_nanos() / period.as_nanos().max(1);
                self.next_cron = Some(due + period * (missed + 1) as u32);
                self.lend_write_buffer(cx);
                self.handler.on_cron(&mut self.session);
            }
        }
        Ok(())
    }

    /// An abnormal end the handler hears: `on_error` with `error`, then `on_close`
    /// (through [`end`](Self::end)).
    fn fail(&mut self, cx: &mut Context<'_>, error: Error) -> Status {
        if matches!(self.phase, Phase::Open | Phase::Closing) {
            log::debug!("session {} failed: {error}", self.session.id());
            self.session.core.close_request = Some(CloseRequest::Abort);
            cx.extension::<Metrics>().count_error(&error);
            self.handler.on_error(&mut self.session, &error);
        }
        self.end(cx)
    }

    /// The entry's own end, whatever led to it: runs `on_close` (once, if the handler
    /// opened), returns the buffers, tells the owner.
    fn end(&mut self, cx: &mut Context<'_>) -> Status {
        if let Some(state) = &self.session.handle_state {
            state.mark_closed();
        }
        if matches!(self.phase, Phase::Open | Phase::Closing) {
            // Closed before the handler hears it, so that `on_close` runs once whatever
            // it does: should it panic, `on_panic` finds nothing owed and only releases.
            self.phase = Phase::Closed;
            self.session
                .core
                .close_request
                .get_or_insert(CloseRequest::Abort);
            cx.extension::<Metrics>().sessions_closed += 1;
            self.handler.on_close(&mut self.session);
        }
        self.release(cx);
        Status::Done
    }

    /// The end of every path: no callback follows. Safe to run twice (a panic in
    /// `on_close` cuts `end` short, and `on_panic` releases again): the owner hears
    /// once.
    fn release(&mut self, cx: &mut Context<'_>) {
        self.phase = Phase::Closed;
        self.session.out.clear();
        let tail = std::mem::take(&mut self.session.out.tail);
        Self::give_back(cx, tail);
        for slot in self.slots.drain(..) {
            Self::give_back(cx, slot);
        }
        self.overflow = None;
        self.session.recv_held = 0;
        let _ = cx.registry().deregister(&mut self.socket);
        if let Some((id, _)) = self.timer.take() {
            cx.cancel_timer(id);
        }
        if let Some(owner) = self.owner.take() {
            let ended = SessionEnded {
                id: cx.id(),
                outcome: Ok(()),
            };
            cx.send(owner, OwnerNote::Ended(ended));
        }
    }
}

impl<S, C, H> Entry for DatagramEntry<S, C, H>
where
    S: DatagramSocket,
    C: Decoder + 'static,
    H: DatagramHandler<C, S::Addr>,
{
    type Command = SessionCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        if let Err(e) = cx
            .registry()
            .register(&mut self.socket, cx.token(), Interest::READABLE)
        {
            log::warn!("session {}: cannot register socket: {e}", self.session.id());
            self.release(cx);
            return Status::Done;
        }
        self.session.stats.last_read = cx.now();
        self.session.stats.last_write = cx.now();
        self.set_send_policy();
        self.size_receive_buffers(cx);
        self.lend_write_buffer(cx);
        if let Err(e) = self.handler.on_open(&mut self.session) {
            log::debug!("session {} rejected by on_open: {e}", self.session.id());
            cx.extension::<Metrics>().refused += 1;
            self.release(cx);
            return Status::Done;
        }
        // Open only once on_open accepted it: a panic in on_open owes no on_close.
        self.phase = Phase::Open;
        cx.extension::<Metrics>().sessions_opened += 1;
        self.session.core.timers_changed = true;
        self.settle(cx)
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, ready: Ready) -> Status {
        if self.phase == Phase::Closed {
            return Status::Done;
        }
        if ready.is_error() {
            if let Ok(Some(e)) = self.socket.sock().take_error() {
                if !is_peer_error(&e) {
                    return self.fail(cx, Error::Io(e));
                }
                self.lend_write_buffer(cx);
                self.peer_error(e);
            }
        }
        if ready.is_readable() && self.phase == Phase::Open {
            if let Err(e) = self.on_readable(cx) {
                return self.fail(cx, e);
            }
        }
        self.settle(cx)
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _tag: u64) -> Status {
        self.timer = None;
        if self.phase == Phase::Closed {
            return Status::Done;
        }
        if let Err(e) = self.on_deadline(cx) {
            return self.fail(cx, e);
        }
        self.settle(cx)
    }

    fn on_command(&mut self, cx: &mut Context<'_>, command: SessionCommand) -> Status {
        match command.0 {
            SessionOp::Close => self.session.close(),
            SessionOp::Abort => self.session.abort(),
            SessionOp::Job(job) if self.phase == Phase::Open => {
                self.lend_write_buffer(cx);
                match (job.0)(&mut self.session) {
                    Ok(()) | Err(Error::Closed) => {}
                    // Datagrams stand alone: count the one refused, report it, carry on.
                    Err(e) => {
                        self.session.stats.dropped_out += 1;
                        self.handler.on_error(&mut self.session, &e);
                    }
                }
            }
            SessionOp::Job(_) => {}
        }
        self.settle(cx)
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        if self.phase == Phase::Closed {
            return Status::Done;
        }
        if deadline.is_some() {
            self.session.close();
            return self.settle(cx);
        }
        // No time left: one last non-blocking flush, then close.
        if self.session.core.close_request != Some(CloseRequest::Abort) {
            self.flush(cx);
        }
        self.end(cx)
    }

    /// A callback (or a job) panicked, and the reactor caught it: close the socket, then
    /// tell the handler, last, so that a second panic leaves nothing undone:
    /// `on_error(Panicked)` and `on_close` for a session that opened.
    fn on_panic(&mut self, cx: &mut Context<'_>, message: &str) {
        let error = Error::Panicked(message.to_owned());
        log::debug!("session {} failed: {error}", self.session.id());
        cx.extension::<Metrics>().count_error(&error);
        let owes_close = matches!(self.phase, Phase::Open | Phase::Closing);
        if let Some(state) = &self.session.handle_state {
            state.mark_closed();
        }
        self.release(cx); // Closed from here on, whatever the handler does
        if owes_close {
            cx.extension::<Metrics>().sessions_closed += 1;
            self.session.core.close_request = Some(CloseRequest::Abort);
            self.handler.on_error(&mut self.session, &error);
            self.handler.on_close(&mut self.session);
        }
    }
}

impl<S: DatagramSocket, C, H> Drop for DatagramEntry<S, C, H> {
    fn drop(&mut self) {
        debug_assert!(
            matches!(self.phase, Phase::New | Phase::Closed) || std::thread::panicking(),
            "a datagram session was dropped without on_close"
        );
    }
}
