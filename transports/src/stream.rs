//! The state machine of one stream connection (TCP today, unix sockets later): reads until
//! `WouldBlock` within a budget, decodes every whole frame, hands messages to the handler,
//! flushes the outbound queue with `writev`, and runs the session's single timer.
//!
//! Life of a session: `on_start` registers the socket and calls `on_open`; then readiness
//! and timer events drive `read → decode → on_message → settle`, where `settle` flushes,
//! reports watermark crossings and re-arms the timer; the session ends through `end`,
//! which calls `on_close` exactly once.
//!
//! A graceful close lingers: once the queue is flushed, the write side is shut down, the
//! handler hears `on_close`, and the entry reads and discards until the peer's EOF (or the
//! linger timeout). Closing a socket with unread input would make the kernel send a reset
//! and drop the replies it had not sent yet.

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use getty_codec::filter::FilterError;
use getty_codec::Decoder;
use getty_reactor::{BufPool, Context, Entry, EntryId, Ready, Recipient, Status};
use mio::Interest;

use crate::commands::{OwnerNote, SessionCommand, SessionOp};
use crate::core::{check_read_idle, earliest, idle_deadline, settle_output, Output};
use crate::filtered::{FilterIo, DECODE_SLACK, ENCODE_BATCH};
use crate::framing::{CodecFraming, DecodeLimits, Framing, Next};
use crate::group::Inbox;
use crate::session::buffers::{compact_partial_frame, COMPACT_FRACTION};
use crate::session::{CloseRequest, Extras, Handler, Session, Stamp};
use crate::{Address, Error, Metrics, SocketOptions, Tcp, Transport};
use socket2::SockRef;

mod broadcasts;
mod ending;
mod read;
mod timers;
mod write;

/// A socket a session can run over: TCP or a unix stream socket.
pub(crate) trait Stream: Read + Write + mio::event::Source + Send + 'static {
    /// The address of either end.
    type Addr: Address;
    /// The transport of a session over this socket with no framing but the codec's.
    type Plain: Transport<Addr = Self::Addr, Framing = CodecFraming>;
    fn shutdown_write(&self) -> io::Result<()>;
    fn take_socket_error(&self) -> io::Result<Option<io::Error>>;
    /// Reads into uninitialised memory (no zeroing of the read buffer first).
    fn recv_uninit(&self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        self.socket().recv(buf)
    }
    /// The socket, for options and syscalls mio does not wrap.
    fn socket(&self) -> SockRef<'_>;
    /// The descriptor the session keeps to reach its socket.
    #[cfg(unix)]
    fn raw_fd(&self) -> std::os::fd::RawFd;
    /// Applies the options that make sense for this kind of socket.
    fn configure(&self, options: &SocketOptions) -> io::Result<()>;
}

impl Stream for mio::net::TcpStream {
    type Addr = std::net::SocketAddr;
    type Plain = Tcp;

    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn take_socket_error(&self) -> io::Result<Option<io::Error>> {
        self.take_error()
    }
    fn socket(&self) -> SockRef<'_> {
        SockRef::from(self)
    }
    #[cfg(unix)]
    fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
    fn configure(&self, options: &SocketOptions) -> io::Result<()> {
        options.apply(self.socket())
    }
}

/// What one pass of decoding did: how many messages reached the handler, and how it ended.
struct Decoding {
    messages: u64,
    result: Result<(), Error>,
}

/// Told to the session's owner (a client) when the session ends.
pub(crate) struct SessionEnded {
    pub(crate) id: EntryId,
    /// The peer ended it (its EOF or close frame), or an error or a panic in the handler
    /// did, before this side asked to close it.
    pub(crate) by_peer: bool,
    /// `Ok` for a session that opened; for one that never did (refused by `on_open`, or a
    /// WebSocket upgrade that failed), why not: the client counts it as a failed dial.
    pub(crate) outcome: Result<(), Error>,
}

/// Reads smaller than this are not worth a syscall: grow the buffer first.
const MIN_READ_SPACE: usize = 4096;

/// How far ahead of the bytes it holds the read buffer grows at once for a frame whose
/// header told its length (at least this, or as much again as it holds): a lying header
/// (64 MiB, then silence) costs a peer that many bytes, not the whole claim, while a real
/// large frame's body still arrives in few reads, the buffer doubling as it comes.
const READ_AHEAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading and writing.
    Open,
    /// Flushing before a graceful close; no more reading.
    Closing,
    /// `on_close` has run; the write side is shut down and input is discarded until the
    /// peer's EOF, so that closing does not reset what the kernel has yet to send.
    Lingering,
    /// `on_close` has run and the socket is done.
    Closed,
}

/// A yes/no fact about a stream connection, one bit of `Flags`.
#[derive(Debug, Clone, Copy)]
enum Flag {
    /// The peer has sent its EOF.
    PeerClosed = 1,
    /// `on_error` has run (a WebSocket session still flushes its close frame after it).
    Failed = 2,
    /// Reading was held back by a pause (flow control or the handler's): once it lifts,
    /// the socket is read without waiting for an edge, which epoll will not repeat.
    ReadHeld = 4,
    /// Decoding stopped at a pause (the handler's, or flow control under a filter) with
    /// bytes already read: they are decoded first when reading resumes.
    Undelivered = 8,
    /// `on_open` accepted the session: `on_close` is owed (a panic before it is a refusal).
    Opened = 16,
    /// The connection is ending without a reset: the write side is shut down, or
    /// everything was flushed and the socket is closing normally. A panic from here on
    /// (in `on_close`) must not reset it: the kernel may still hold a reply to deliver.
    Graceful = 32,
    /// The filter's goodbye (TLS `close_notify`) has been queued or sent: once only.
    FilterClosed = 64,
    /// The session failed on the peer's refusal of the filter's handshake (a TLS 1.3
    /// server's alert for the client's certificate, after the client's side was done): a
    /// client's dial failed.
    HandshakeRefused = 128,
    /// The session ended on the peer's account (its EOF or close frame), on an error or on
    /// a panic, not on a close this side asked for first: a client counts such a session
    /// that ended soon after it opened as a sign of a server that closes at once, and
    /// backs off.
    EndedByPeer = 256,
}

/// The `Flag`s that hold, in two bytes (in what the socket and the phase leave of a word):
/// ten thousand idle sessions each hold an entry, whose size a test guards.
#[derive(Debug, Clone, Copy, Default)]
struct Flags(u16);

impl Flags {
    fn get(self, flag: Flag) -> bool {
        self.0 & flag as u16 != 0
    }

    fn set(&mut self, flag: Flag, on: bool) {
        if on {
            self.0 |= flag as u16;
        } else {
            self.0 &= !(flag as u16);
        }
    }

    /// Clears `flag`, returning whether it was set.
    fn take(&mut self, flag: Flag) -> bool {
        let was = self.get(flag);
        self.set(flag, false);
        was
    }
}

/// Bytes discarded per turn while lingering, before yielding to other entries.
const LINGER_READ_BUDGET: usize = 256 * 1024;

/// What reading and dropping a closing peer's input came to.
pub(crate) enum Dropped {
    /// The peer's EOF, or an error: nothing more will come.
    Ended,
    /// Nothing more to read for now, or this turn's budget is spent (a read is rescheduled).
    Waiting,
}

/// Reads and drops what the peer still sends, at most `budget` bytes this turn: a lingering
/// close waits for the peer's EOF without holding its bytes or holding the loop.
pub(crate) fn read_and_drop(
    stream: &mut impl Read,
    budget: usize,
    cx: &mut Context<'_>,
) -> Dropped {
    let mut scratch = [0u8; 4096];
    let mut budget = budget;
    loop {
        match stream.read(&mut scratch) {
            Ok(0) => return Dropped::Ended,
            Ok(n) => {
                budget = budget.saturating_sub(n);
                if budget == 0 {
                    cx.reschedule(Ready::READABLE);
                    return Dropped::Waiting;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Dropped::Waiting,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Dropped::Ended,
        }
    }
}

/// One stream connection of transport `T` (whose framing turns its bytes into messages).
pub(crate) struct StreamEntry<S: Stream, T: Transport, C, H> {
    stream: S,
    phase: Phase,
    /// Yes/no facts about the connection, in two bytes (see `Flag`).
    flags: Flags,
    session: Session<C, T>,
    handler: H,
}

impl<S, T, C, H> StreamEntry<S, T, C, H>
where
    S: Stream,
    T: Transport<Addr = S::Addr>,
    C: Decoder + 'static,
    H: Handler<C, T>,
{
    pub(crate) fn new(
        stream: S,
        mut session: Session<C, T>,
        handler: H,
        owner: Option<Recipient<OwnerNote>>,
    ) -> Self {
        if owner.is_some() {
            session.extras_mut().owner = owner;
        }
        StreamEntry {
            stream,
            phase: Phase::Open,
            flags: Flags::default(),
            session,
            handler,
        }
    }

    /// Opens the session: `on_open`, then whatever was read before it opened.
    fn open(&mut self, cx: &mut Context<'_>) -> Status {
        self.lend_write_buffer(cx);
        if let Err(e) = self.handler.on_open(&mut self.session) {
            log::debug!(
                "session {} ({}) rejected by on_open: {e}",
                self.session.id(),
                self.session.peer_addr()
            );
            cx.extension::<Metrics>().refused += 1;
            let _ = cx.registry().deregister(&mut self.stream);
            #[cfg(unix)]
            let _ = self
                .session
                .socket()
                .set_linger(Some(std::time::Duration::ZERO));
            let refused = io::Error::other(format!("the session was refused in on_open: {e}"));
            return self.abandon(cx, Error::Io(refused));
        }
        cx.extension::<Metrics>().sessions_opened += 1;
        self.flags.set(Flag::Opened, true);
        // After `on_open`, which may have taken long: the handshake's time counts from now.
        let handshake_until = cx.read_clock() + self.session.core.options.handshake_timeout;
        if let Some(io) = self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) {
            io.handshake_until = Some(handshake_until);
        }
        // A client's dial is good once its session can talk: a TLS session tells its owner
        // when the handshake is done (`settle`), so failed handshakes count as failed dials.
        self.tell_owner_once_talking(cx);
        self.session.core.timers_changed = true;
        if let Err(e) = self.decode_buffered(cx) {
            return self.fail(cx, e);
        }
        self.settle(cx)
    }

    /// A handshake (TLS) takes its input as it comes; wire bytes piling up unread mean a
    /// peer sending junk or far too much. Without this bound they would be buffered for as
    /// long as the handshake timeout allows.
    fn check_handshake_backlog(&self) -> Result<(), Error> {
        match self.session.filter_io() {
            Some(io) if self.session.handshaking() => Ok(io.check_handshake_backlog()?),
            _ => Ok(()),
        }
    }

    /// Bytes already read for this session (by a WebSocket upgrade, past its handshake):
    /// decoded as soon as the session opens.
    #[cfg(feature = "ws")]
    pub(crate) fn with_input(mut self, input: BytesMut) -> Self {
        if !input.is_empty() {
            *self.session.out.read_buf() = input;
        }
        self
    }

    fn extras(&self) -> Option<&Extras> {
        self.session.extras.as_deref()
    }

    fn extras_mut(&mut self) -> &mut Extras {
        self.session.extras_mut()
    }

    fn owner(&self) -> Option<Recipient<OwnerNote>> {
        self.extras()?.owner
    }

    /// Tells the owner (a client) that the session opened, once it is past any handshake:
    /// at `on_open` without a filter, otherwise when the filter's handshake is done (the
    /// handshake deadline is cleared then, so this tells once).
    pub(super) fn tell_owner_once_talking(&mut self, cx: &mut Context<'_>) {
        if let Some(io) = self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) {
            if io.handshake_until.is_none() || io.filter.is_handshaking() {
                return;
            }
            io.handshake_until = None;
        }
        if let Some(owner) = self.owner() {
            let id = cx.id();
            cx.send(owner, OwnerNote::Opened(id));
        }
    }
}

impl<S, T, C, H> Entry for StreamEntry<S, T, C, H>
where
    S: Stream,
    T: Transport<Addr = S::Addr>,
    C: Decoder + 'static,
    H: Handler<C, T>,
{
    type Command = SessionCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = cx
            .registry()
            .register(&mut self.stream, cx.token(), interest)
        {
            log::warn!("session {}: cannot register socket: {e}", self.session.id());
            return self.abandon(cx, Error::Io(e));
        }
        self.open(cx)
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, ready: Ready) -> Status {
        if self.phase == Phase::Lingering {
            return self.discard_input(cx);
        }
        if ready.is_error() {
            if let Ok(Some(e)) = self.stream.take_socket_error() {
                return self.fail(cx, Error::Io(e));
            }
        }
        if ready.is_readable() {
            self.lend_write_buffer(cx);
            let peer_closing = ready.is_read_closed() || ready.is_error();
            let read = if self.phase == Phase::Closing && self.session.handshaking() {
                self.feed_handshake(cx)
            } else {
                self.on_readable(cx, peer_closing)
            };
            if let Err(e) = read {
                return self.fail(cx, e);
            }
        }
        self.settle(cx)
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _tag: u64) -> Status {
        if let Some(extras) = self.session.extras.as_mut() {
            extras.timer.fired();
        }
        if self.phase == Phase::Lingering {
            let until = self.extras().and_then(|e| e.linger_until);
            if until.is_some_and(|t| cx.now() >= t) {
                return self.end(cx, false); // the peer never closed; stop waiting
            }
            self.rearm_timer(cx);
            return Status::Continue;
        }
        if let Err(e) = self.on_deadline(cx) {
            return self.fail(cx, e);
        }
        self.settle(cx)
    }

    fn on_command(&mut self, cx: &mut Context<'_>, command: SessionCommand) -> Status {
        if self.phase == Phase::Lingering {
            return Status::Continue;
        }
        let room = self.session.handle_room();
        let op = match self.extras().and_then(|e| e.handle_state.as_ref()) {
            // Held behind the high watermark or `max_outbound`, applied as the queue drains
            // (`apply_held`).
            Some(state) => crate::handle::admit_command(state, cx, command.0, room),
            None => Some(command.0),
        };
        if let Some(op) = op {
            if let Err(e) = self.apply(cx, op) {
                return self.fail(cx, e);
            }
        }
        self.settle(cx)
    }

    /// A group left broadcasts in the session's inbox.
    fn on_wake(&mut self, cx: &mut Context<'_>) -> Status {
        if self.phase == Phase::Lingering {
            return Status::Continue;
        }
        self.settle(cx)
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        if self.phase == Phase::Lingering {
            // Already closed for the handler; finish lingering unless time is up.
            return if deadline.is_some() {
                Status::Continue
            } else {
                self.drain_unread_unless_peer_closed();
                self.end(cx, false)
            };
        }
        if deadline.is_some() {
            self.session.framing.go_away();
            // Handle writes accepted before the shutdown go first, as before a handle's
            // close: a writer that heeds `Backpressure` loses nothing it was told was
            // accepted, unless the grace runs out.
            if !self.close_behind_held() {
                self.session.close();
            }
            return self.settle(cx);
        }
        // No time left: one last non-blocking flush, then close (saying goodbye the
        // filter's way, close_notify, when everything went out: else the peer sees a
        // truncation).
        let _ = self.flush(cx);
        let unsent = self.session.queued_bytes() > 0;
        if !unsent {
            self.send_filter_close();
            // Closing with unread input would make the kernel reset after all, dropping
            // what it has yet to send of the flushed output.
            self.drain_unread_unless_peer_closed();
        }
        self.end(cx, unsent)
    }

    /// A callback (or a job) panicked, and the reactor caught it: reset the connection
    /// (what is queued may be half-written), then tell the handler, last, so that a second
    /// panic leaves nothing undone: `on_error(Panicked)` and `on_close` for a session that
    /// opened (only `on_close` if it had heard `on_error` already: the panic was in it);
    /// nothing for one that did not (a panic in `on_open` is a refusal).
    ///
    /// A panic in `on_close` of a session ending gracefully (its write side shut down, or
    /// everything flushed) does not reset: what the kernel still holds for the peer (a
    /// reply, then the FIN) goes out as it would have. The bookkeeping of the end (handles,
    /// owner, metrics) was done before `on_close` was called.
    fn on_panic(&mut self, cx: &mut Context<'_>, message: &str) {
        let error = Error::Panicked(message.to_owned());
        log::debug!("session {} failed: {error}", self.session.id());
        cx.extension::<Metrics>().count_error(&error);
        if !self.flags.get(Flag::Graceful) {
            #[cfg(unix)]
            let _ = self
                .session
                .socket()
                .set_linger(Some(std::time::Duration::ZERO));
        } else if !self.flags.get(Flag::PeerClosed) {
            // The entry cannot linger any more: take what input is already here, so that
            // closing with unread input does not make the kernel reset after all.
            self.drain_unread();
        }
        let _ = cx.registry().deregister(&mut self.stream);
        self.cancel_timer(cx);
        let owes_close = matches!(self.phase, Phase::Open | Phase::Closing);
        if !owes_close || !self.flags.get(Flag::Opened) {
            if owes_close {
                self.abandon(cx, error);
            }
            self.phase = Phase::Closed;
            // A handle made in the callback that panicked (on_close, say).
            self.mark_handles_closed(cx);
            return;
        }
        // Done from here on, whatever the handler does. A panic is not a close this side
        // chose: a client counts the session as one that ended on it (a hostile server's
        // replies that make the handler panic must not reset the client's backoff).
        self.note_ended_by_peer();
        self.session.core.close_request = Some(CloseRequest::Abort);
        self.note_ended(cx);
        // A session that failed has had its `on_error` (the panic was in it, or after
        // it): at most one `on_error`, so only `on_close` is owed.
        if !self.flags.get(Flag::Failed) {
            self.handler.on_error(&mut self.session, &error);
        }
        self.handler.on_close(&mut self.session);
        // A handle made in those callbacks, after the ones before them were marked.
        self.mark_handles_closed(cx);
    }
}

impl<S: Stream, T: Transport, C, H> Drop for StreamEntry<S, T, C, H> {
    fn drop(&mut self) {
        debug_assert!(
            self.phase == Phase::Closed || std::thread::panicking(),
            "a session was dropped without on_close"
        );
    }
}

/// Makes room for a worthwhile read: a pooled buffer for a small partial frame, or more
/// capacity for a large one (whose length the framing did not tell): a large buffer the
/// pool kept, once the bytes read earn one, else twice the room.
fn ensure_read_space(buf: &mut BytesMut, cx: &mut Context<'_>) {
    if buf.capacity() - buf.len() >= MIN_READ_SPACE {
        return;
    }
    let pool = cx.buffers();
    if buf.len() < pool.buffer_size() / 2 {
        // Move the (small) partial frame into a pooled buffer; the one it leaves may be a
        // large buffer's remainder, which the pool takes back whole once unshared.
        let pooled = pool.take();
        pool.give(move_bytes_into(buf, pooled));
    } else {
        let doubled = (2 * buf.len()).max(buf.len() + pool.buffer_size());
        if !move_into_kept(buf, doubled, doubled, pool) {
            buf.reserve(pool.buffer_size());
        }
    }
}

/// How large a kept buffer a partial frame may take, per byte of it read: eight, so that a
/// 1 MiB frame reuses one once 128 KiB of it came.
const KEPT_PER_BYTE_READ: usize = 8;

/// The largest kept buffer a partial frame of `read` bytes may take.
fn kept_earned_by(read: usize) -> usize {
    read.saturating_mul(KEPT_PER_BYTE_READ) + READ_AHEAD
}

/// Moves `buf`'s bytes into a large buffer the pool kept, of at least `preferred` bytes if
/// one is, else of at least `needed`, and at most what the bytes already read earn (see
/// [`KEPT_PER_BYTE_READ`]); false if the pool has no such buffer.
fn move_into_kept(buf: &mut BytesMut, preferred: usize, needed: usize, pool: &mut BufPool) -> bool {
    let earned = kept_earned_by(buf.len());
    let kept = match pool.take_large(preferred, earned) {
        None if needed < preferred => pool.take_large(needed, earned),
        found => found,
    };
    let Some(kept) = kept else {
        return false;
    };
    pool.give(move_bytes_into(buf, kept));
    true
}

/// Moves `buf`'s bytes into `into`, which takes its place; returns the buffer they left.
fn move_bytes_into(buf: &mut BytesMut, into: BytesMut) -> BytesMut {
    let left = std::mem::replace(buf, into);
    buf.extend_from_slice(&left);
    left
}

/// Gives a drained buffer back to the pool, and moves a small partial frame out of a pooled
/// buffer into one of its own size.
fn release_read_buffer(buf: &mut BytesMut, cx: &mut Context<'_>) {
    if buf.capacity() == 0 {
        return;
    }
    if buf.is_empty() {
        cx.buffers().give(std::mem::take(buf));
    } else {
        compact_partial_frame(buf, cx.buffers());
    }
}

/// Returns a buffer's memory to the pool (it keeps what fits its size policy).
fn give_back(buf: &mut BytesMut, cx: &mut Context<'_>) {
    if buf.capacity() > 0 {
        cx.buffers().give(std::mem::take(buf));
    }
}

/// Reads into the spare capacity of `buf` without zeroing it first.
fn read_into<S: Stream>(stream: &mut S, buf: &mut BytesMut) -> io::Result<usize> {
    let n = stream.recv_uninit(buf.spare_capacity_mut())?;
    // SAFETY: recv initialised the first `n` spare bytes (it never reports more than the
    // buffer it was given).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use getty_codec::{Bytes, LengthFieldCodec};

    struct Echo;
    impl crate::Handler<LengthFieldCodec> for Echo {
        fn on_message(&mut self, _: &mut crate::Session<LengthFieldCodec>, _: Bytes) {}
    }

    /// Ten thousand idle sessions must cost little: the entry, boxed in the reactor's slab,
    /// is what an idle session holds in user space besides its slab slot. What an idle
    /// session does not use is boxed on first use; what is left, in a release build:
    ///
    /// - the socket, 4 bytes: its descriptor (mio adds a selector id in debug builds: 16);
    /// - the phase and the flags, 1 + 2;
    /// - the session, 96: its core 24 (the options' `Arc` 8, the id 8, the descriptor for
    ///   `setsockopt` 4, the close request, writability, timer and pause flags 4), the
    ///   peer's address 16 (IPv4 inline, IPv6 boxed), the codec 20 (`LengthFieldCodec`'s
    ///   settings, four `u32`s and two bytes), the read buffer and outbound queue 8 (boxed
    ///   while bytes are in flight), the counters 8 (boxed at the first byte), the last
    ///   read's time 8 (the open time until then), the extras 8 (attributes, owner, timer, filters,
    ///   groups' inboxes: boxed on first use) and the messages not yet added to the
    ///   reactor's metrics 4;
    /// - the handler, 0 (`Echo` holds nothing).
    ///
    /// 104 bytes in all: malloc's 112-byte chunk (an 8-byte header, rounded to 16).
    #[test]
    fn an_idle_echo_session_stays_small() {
        type Entry = super::StreamEntry<mio::net::TcpStream, crate::Tcp, LengthFieldCodec, Echo>;
        let session = std::mem::size_of::<crate::Session<LengthFieldCodec>>();
        assert!(session <= 96, "a session grew to {session} bytes");
        let size = std::mem::size_of::<Entry>();
        let limit = if cfg!(debug_assertions) { 120 } else { 104 };
        assert!(size <= limit, "a session entry grew to {size} bytes");
    }
}
