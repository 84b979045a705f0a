//! The state machine of one datagram socket (an unconnected endpoint, or one connected
//! client socket), generic over the socket so that other datagram sockets can reuse it.
//!
//! Life of a datagram: the socket turns readable; `on_readable` receives a batch
//! (`recvmmsg` on Linux) into per-slot buffers, hands each datagram to the codec exactly
//! once and the message to `on_message`, and receives again until a receive comes back
//! short (the queue was empty: edge-triggered readiness reports the next datagram) or the
//! budget is spent. The replies the handler queued go out with one `sendmmsg` for what was
//! read (earlier only when they fill one or answer a whole batch: a receive offers no more
//! slots than a batch has left, so the queue never holds the replies to more than one batch
//! of datagrams, as when every receive is answered at once, which is what `max_outbound`
//! and the watermarks are sized against), runs of them to one destination merged by the
//! kernel's segmentation offload (`batch::Segmentation`); after replying, the entry looks
//! once more before it sleeps (a peer that answers at once). `settle` runs after every
//! event: it flushes, reports watermark crossings, acts on `close()`/`abort()` and re-arms
//! the entry's single timer (cron, read-idle and write-stall deadlines).
//!
//! A short receive is enough to stop: it found the socket's queue empty, and Linux raises
//! readiness again when a datagram lands in an empty queue (recent kernels only then). An
//! error that cut a receive short (an ICMP error met after some datagrams, which the kernel
//! keeps for the next call) raised an event of its own when it arrived, after the one
//! being handled; that event carries readable too while datagrams wait.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use getty_codec::{CodecError, Decoded, Decoder};
use getty_reactor::{Context, Entry, Ready, Recipient, Status};
use mio::Interest;

use super::batch::Outgoing;
use super::batch::{self, RecvMeta, Segmentation};
use super::client::PROBE_ANSWER;
use super::queue::{is_gone, Link, ParkLimits, PeerErrors, Step, FIRST_RETRY, MAX_RETRY};
use super::session::{DatagramHandler, DatagramSession};
use super::socket::{is_peer_error, DatagramSocket};
use crate::commands::{OwnerNote, SessionCommand, SessionOp};
use crate::core::CloseRequest;
use crate::core::{check_read_idle, earliest, settle_output, Output, SessionTimer};
use crate::stream::SessionEnded;
use crate::{Error, Metrics};

mod receive;
mod send;

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
    segmentation: &'a mut Segmentation,
    /// `SO_SNDBUF`, read once per flush when an `EAGAIN` must be told apart.
    send_buffer: Option<usize>,
}

impl<S: DatagramSocket> Link<S::Addr> for SocketLink<'_, S> {
    fn send(&mut self, items: &[Outgoing<'_, S::Addr>]) -> std::io::Result<usize> {
        batch::send(self.socket, items, self.mmsg, self.segmentation)
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
    /// The one timer: cron, read idle, write stall, retries.
    timer: SessionTimer,
    /// `messages_out` already added to the reactor's metrics.
    reported_messages_out: u64,
    /// Registered for writable readiness too: only while the socket's buffer is full. A
    /// UDP socket signals write space every time a sent datagram's buffer is freed, so
    /// staying registered would cost a wake-up per datagram sent.
    want_writable: bool,
    /// The session failed (an error, a panic) before this side asked to close it (see
    /// [`SessionEnded`]).
    ended_by_error: bool,
    /// When a blocked send is retried, and the wait that led there, for a blocked queue
    /// that no readiness event will wake: a socket that does not signal write space
    /// (`DatagramSocket::signals_write_space`), or a connected unix socket reconnecting.
    retry: Option<(Instant, Duration)>,
    /// A connected unix socket whose peer is gone: the last reconnect's error (the
    /// session ends with it if the peer is not back within the write-stall timeout).
    gone: Option<std::io::Error>,
    /// The handler heard the peer was gone, and has not seen a datagram go out since: a
    /// peer that goes once is reported once, however many sends find it gone.
    gone_reported: bool,
    /// Whether sends merge runs of datagrams to one destination (UDP on Linux).
    segmentation: Segmentation,
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
            owner,
            slots: Vec::new(),
            metas: Vec::new(),
            active: 1,
            slot_size: MAX_DATAGRAM + 1,
            overflow_per: 0,
            overflow: None,
            timer: SessionTimer::default(),
            reported_messages_out: 0,
            want_writable: false,
            ended_by_error: false,
            retry: None,
            gone: None,
            gone_reported: false,
            segmentation: Segmentation::for_socket(S::UDP),
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

    /// A command from a handle (or any sender): a close, an abort, or a handle's job.
    fn apply(&mut self, cx: &mut Context<'_>, op: SessionOp) {
        match op {
            SessionOp::Close => self.session.close(),
            SessionOp::Abort => self.session.abort(),
            SessionOp::Job(job) if self.phase == Phase::Open => {
                self.lend_write_buffer(cx);
                match job.run(&mut self.session) {
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
    }

    /// The session drained to its low watermark: the commands held behind the high one
    /// (see `HandleState::admit`) go now, before the handler hears it is writable (they
    /// were accepted before anything it writes on hearing it, and a handler that refills
    /// the queue then would hold them for as long as it produces). Writes go while the
    /// session stays writable, a close as soon as its turn comes. True when they closed
    /// the session.
    fn apply_held(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(state) = self.session.handle_state.clone() else {
            return false;
        };
        let was_closing = self.session.core.close_request.is_some();
        while self.phase == Phase::Open {
            let Some(op) = state.release(self.session.handle_room()) else {
                break;
            };
            self.apply(cx, op);
        }
        !was_closing && self.session.core.close_request.is_some()
    }

    /// Handle writes that wait, while the session stays writable, for room under
    /// `max_outbound` (not for a crossing): applied once the queue has drained enough.
    /// True when one was (the queue has more to flush), or the session closed.
    fn apply_held_with_room(&mut self, cx: &mut Context<'_>) -> bool {
        let waiting = self
            .session
            .handle_state
            .as_ref()
            .is_some_and(|state| state.holds_any());
        if !waiting {
            return false;
        }
        let queued = self.session.out.len();
        self.apply_held(cx) || self.session.out.len() != queued
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
            if let Err(e) = settle_output(self, cx) {
                return self.fail(cx, e);
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
                if let Some(state) = &self.session.handle_state {
                    state.mark_closing();
                }
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

    /// The earliest of the session's deadlines: the ones every session has (cron, read
    /// idle, write stall) and the retries of blocked sends.
    fn next_deadline(&self) -> Option<Instant> {
        let options = &self.session.core.options;
        let own = self
            .timer
            .next_deadline(options, self.phase == Phase::Open, self.idle_since());
        let retry = self.retry.map(|(at, _)| at);
        earliest(earliest(own, retry), self.session.out.next_retry())
    }

    /// Since when the read-idle timeout counts: the last read, while open (a datagram
    /// socket reads while open).
    fn idle_since(&self) -> Option<Instant> {
        (self.phase == Phase::Open).then_some(self.session.stats.last_read)
    }

    /// Keeps one timer armed for the next deadline; one that fires early just re-arms.
    fn rearm_timer(&mut self, cx: &mut Context<'_>) {
        if std::mem::take(&mut self.session.core.timers_changed) {
            self.timer
                .restart(cx, self.session.core.options.cron_period);
        }
        if let Some(deadline) = self.next_deadline() {
            self.timer.arm(cx, deadline);
        }
    }

    fn on_deadline(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let now = cx.now();
        // A due retry is done by the flush that follows every timer, which schedules the
        // next one from the wait it keeps (clearing it here would restart the backoff).
        // A connected unix socket whose peer did not come back ends with the reconnect's
        // error; anything else blocked that long, with the stall.
        if let Err(stalled) = self.check_stall(cx, now) {
            return Err(self.gone.take().map_or(stalled, Error::Io));
        }
        let options = &self.session.core.options;
        check_read_idle(now, options, self.idle_since())?;
        let period = options.cron_period;
        if self.phase == Phase::Open && self.timer.take_cron_tick(now, period) {
            self.lend_write_buffer(cx);
            self.handler.on_cron(&mut self.session);
        }
        Ok(())
    }

    /// `WriteStalled` once queued datagrams have not moved for the write-stall timeout. A
    /// send is tried first, as on a stream: Linux says a datagram socket is writable only
    /// once a quarter (unix) or half (UDP) of its send buffer is free, which a steady but
    /// slow reader may not free within the timeout, and a peer back since the last
    /// reconnect is found only by trying. Whatever goes out counts as progress.
    fn check_stall(&mut self, cx: &mut Context<'_>, now: Instant) -> Result<(), Error> {
        let aborting = |entry: &Self| entry.session.core.close_request == Some(CloseRequest::Abort);
        if self
            .timer
            .check_stall(now, &self.session.core.options)
            .is_ok()
            || aborting(self)
        {
            return Ok(());
        }
        // True when the socket took all it was given and more waits (a handler wrote in
        // an `on_error` of this flush): not stalled, and the settle after this sends it.
        // An abort asked for in such an `on_error` ends the session there, with no second
        // error.
        if self.flush(cx) || aborting(self) {
            return Ok(());
        }
        self.timer.check_stall(now, &self.session.core.options)
    }

    /// An abnormal end the handler hears: `on_error` with `error`, then `on_close`
    /// (through [`end`](Self::end)).
    fn fail(&mut self, cx: &mut Context<'_>, error: Error) -> Status {
        if matches!(self.phase, Phase::Open | Phase::Closing) {
            // Unless this side asked to close first, an error ended it (a peer's refusal):
            // a client backs off from a peer that does so soon after every dial.
            self.ended_by_error |= !self.session.core.is_closing();
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
        self.mark_handles_closed(cx);
        if matches!(self.phase, Phase::Open | Phase::Closing) {
            // Closed before the handler hears it, so that `on_close` runs once whatever
            // it does: should it panic, `on_panic` finds nothing owed and only releases.
            self.phase = Phase::Closed;
            self.session.core.note_ended(cx);
            self.drop_queued();
            self.handler.on_close(&mut self.session);
            // A handle made in on_close, after the ones before it were marked.
            self.mark_handles_closed(cx);
        }
        self.release(cx);
        Status::Done
    }

    /// What never went out is lost with the session: dropped and counted, before
    /// `on_close` reads the counters, so that every datagram written was either sent or
    /// dropped.
    fn drop_queued(&mut self) {
        self.session.stats.dropped_out += self.session.out.datagrams() as u64;
        self.session.out.clear();
    }

    /// The session's handles (if it has any) see it closed and refuse writes; what they
    /// posted that waited is dropped.
    fn mark_handles_closed(&self, cx: &mut Context<'_>) {
        if let Some(state) = &self.session.handle_state {
            crate::handle::drop_unapplied(cx, state.mark_closed());
        }
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
        self.timer.cancel(cx);
        if let Some(owner) = self.owner.take() {
            let ended = SessionEnded {
                id: cx.id(),
                by_peer: self.ended_by_error,
                outcome: Ok(()),
            };
            cx.send(owner, OwnerNote::Ended(ended));
        }
    }
}

impl<S, C, H> Output for DatagramEntry<S, C, H>
where
    S: DatagramSocket,
    C: Decoder + 'static,
    H: DatagramHandler<C, S::Addr>,
{
    /// True when datagrams are left that could still go now (see `flush`).
    fn flush_output(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        Ok(self.flush(cx))
    }

    fn report_writability(&mut self, cx: &mut Context<'_>) -> bool {
        let open = self.phase == Phase::Open;
        let queued = self.session.out.len();
        let Some(writable) = self.session.core.take_crossing(queued, open) else {
            return self.apply_held_with_room(cx);
        };
        if let Some(state) = &self.session.handle_state {
            state.set_writable(writable);
        }
        self.lend_write_buffer(cx);
        if writable && self.apply_held(cx) {
            // A held close ends the session: no more writability to tell.
            return true;
        }
        self.handler
            .on_writability_changed(&mut self.session, writable);
        true
    }

    fn output_pending(&self) -> bool {
        let queued = self.session.out.len();
        !self.session.out.is_empty() || self.session.core.crossing_pending(queued)
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
            // A handle made in on_open sees the session closed, as a stream's does.
            self.mark_handles_closed(cx);
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
        self.timer.fired();
        if self.phase == Phase::Closed {
            return Status::Done;
        }
        if let Err(e) = self.on_deadline(cx) {
            return self.fail(cx, e);
        }
        self.settle(cx)
    }

    fn on_command(&mut self, cx: &mut Context<'_>, command: SessionCommand) -> Status {
        let room = self.session.handle_room();
        let op = match &self.session.handle_state {
            // Held behind the high watermark or `max_outbound`, applied as the queue drains
            // (`apply_held`).
            Some(state) => crate::handle::admit_command(state, cx, command.0, room),
            None => Some(command.0),
        };
        if let Some(op) = op {
            self.apply(cx, op);
        }
        self.settle(cx)
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        if self.phase == Phase::Closed {
            return Status::Done;
        }
        if deadline.is_some() {
            // Handle writes accepted before the shutdown go first (see the stream's).
            let held = self.session.handle_state.as_ref();
            if !held.is_some_and(|state| state.close_behind_held()) {
                self.session.close();
            }
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
        // Not a close this side chose (see `fail`).
        self.ended_by_error |= !self.session.core.is_closing();
        self.mark_handles_closed(cx);
        if owes_close {
            self.drop_queued();
        }
        self.release(cx); // Closed from here on, whatever the handler does
        if owes_close {
            self.session.core.abort();
            self.session.core.note_ended(cx);
            self.handler.on_error(&mut self.session, &error);
            self.handler.on_close(&mut self.session);
        }
        // A handle made in those callbacks (or in the one that panicked).
        self.mark_handles_closed(cx);
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
