//! The state machine of one stream connection (TCP today, unix sockets later): reads until
//! `WouldBlock` within a budget, decodes every whole frame, hands messages to the handler,
//! flushes the outbound queue with `writev`, and runs the session's single timer.
//!
//! Life of a session: `on_start` registers the socket and calls `on_open`; then readiness
//! and timer events drive `read → decode → on_message → settle`, where `settle` flushes,
//! reports watermark crossings and re-arms the timer; the session ends through `finish`,
//! which calls `on_close` exactly once.
//!
//! A graceful close lingers: once the queue is flushed, the write side is shut down, the
//! handler hears `on_close`, and the entry reads and discards until the peer's EOF (or the
//! linger timeout). Closing a socket with unread input would make the kernel send a reset
//! and drop the replies it had not sent yet.

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use getty_codec::filter::FilterError;
use getty_codec::Decoder;
use getty_reactor::{Context, Entry, EntryId, Ready, Recipient, Status};
use mio::Interest;

use crate::commands::{OwnerNote, SessionCommand, SessionOp};
use crate::filtered::{FilterIo, DECODE_SLACK, ENCODE_BATCH};
use crate::framing::{CodecFraming, DecodeLimits, Framing, Next};
use crate::outbound::{crossing_pending, next_writability};
use crate::session::{CloseRequest, Extras, Handler, Session, Stamp};
use crate::{Address, Error, Metrics, SocketOptions, Tcp, Transport};
use socket2::SockRef;

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
    /// `Ok` for a session that opened; for one that never did (refused by `on_open`, or a
    /// WebSocket upgrade that failed), why not: the client counts it as a failed dial.
    pub(crate) outcome: Result<(), Error>,
}

/// A partial frame at most this long is moved out of a pooled buffer into a small one of
/// its own, so that thousands of sessions waiting on a few header bytes do not each pin
/// a pooled buffer.
const COMPACT_BELOW: usize = 256;

/// Reads smaller than this are not worth a syscall: grow the buffer first.
const MIN_READ_SPACE: usize = 4096;

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
}

/// The `Flag`s that hold, in one byte: ten thousand idle sessions each hold an entry, whose
/// size a test guards.
#[derive(Debug, Clone, Copy, Default)]
struct Flags(u8);

impl Flags {
    fn get(self, flag: Flag) -> bool {
        self.0 & flag as u8 != 0
    }

    fn set(&mut self, flag: Flag, on: bool) {
        if on {
            self.0 |= flag as u8;
        } else {
            self.0 &= !(flag as u8);
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

/// One stream connection of transport `T` (whose framing turns its bytes into messages).
pub(crate) struct StreamEntry<S: Stream, T: Transport, C, H> {
    stream: S,
    phase: Phase,
    /// The writability last told to the handler.
    reported_writable: bool,
    /// Yes/no facts about the connection, in one byte (see `Flag`).
    flags: Flags,
    session: Session<C, T>,
    handler: H,
    rbuf: BytesMut,
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
            reported_writable: true,
            flags: Flags::default(),
            session,
            handler,
            rbuf: BytesMut::new(),
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
            return self.end_unopened(cx, Error::Io(refused));
        }
        cx.extension::<Metrics>().sessions_opened += 1;
        self.flags.set(Flag::Opened, true);
        let handshake_until = cx.now() + self.session.options.handshake_timeout;
        if let Some(io) = self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) {
            io.handshake_until = Some(handshake_until);
        }
        if let Some(owner) = self.owner() {
            cx.send(owner, OwnerNote::Opened);
        }
        self.session.timers_changed = true;
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
        self.rbuf = input;
        self
    }

    /// Decodes what was read before the session opened (see `with_input`); a socket
    /// readiness edge for those bytes has come and gone.
    fn decode_buffered(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        // A filter may hold decoded bytes of its own (rustls keeps the plaintext it could
        // not hand over), so a filtered session always asks it.
        if self.rbuf.is_empty() && self.session.filter_io().is_none() {
            return Ok(());
        }
        let decoded = self.deliver();
        cx.extension::<Metrics>().messages_in += decoded.messages;
        decoded.result
    }

    /// Decodes what was read (through the filters, if any) and hands every whole message to
    /// the handler, stopping early if the handler pauses reading (or, under a filter, flow
    /// control holds it): the rest is delivered once reading resumes.
    fn deliver(&mut self) -> Decoding {
        let decoded = if self.session.filter_io().is_some() {
            self.unfilter_all()
        } else {
            self.decode_all()
        };
        if self.session.is_reading_paused() {
            self.flags.set(Flag::Undelivered, true);
        }
        decoded
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

    fn blocked_since(&self) -> Option<Instant> {
        self.extras()?.blocked_since
    }

    /// Reads until the socket is drained (or the budget is spent), decoding as it goes.
    /// `peer_closing` is set when the event already reported the peer's EOF or an error: then
    /// the loop reads on to the end, since no further event will come.
    fn on_readable(&mut self, cx: &mut Context<'_>, peer_closing: bool) -> Result<(), Error> {
        if self.flags.get(Flag::Undelivered) && !self.session.is_reading_paused() {
            self.flags.set(Flag::Undelivered, false);
            self.decode_buffered(cx)?;
        }
        let mut budget = self.session.options.read_budget;
        let mut eof = false;
        while self.phase == Phase::Open && !self.session.is_closing() {
            if self.session.is_reading_paused() && !self.session.handshaking() {
                // Flow control: the peer waits in TCP's window, not in our memory.
                self.flags.set(Flag::ReadHeld, true);
                break;
            }
            match self.read_once(cx) {
                Ok((0, _)) => {
                    eof = true;
                    break;
                }
                Ok((n, offered)) => {
                    self.session.counters.bytes_in += n as u64;
                    self.session.counters.last_read = Stamp::of(cx.now());
                    let decoded = self.deliver();
                    let metrics = cx.extension::<Metrics>();
                    metrics.bytes_in += n as u64;
                    metrics.messages_in += decoded.messages;
                    decoded.result?;
                    self.check_handshake_backlog()?;
                    if self.closed_in_filter() {
                        // After close_notify nothing more is read, and what came with it is
                        // dropped (it would pile up undecoded); the close answers with
                        // close_notify.
                        if let Some(io) =
                            self.session.extras.as_mut().and_then(|e| e.filter.as_mut())
                        {
                            io.wire_in.clear();
                        }
                        self.end_of_input()?;
                        break;
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        // Carry the peer's EOF over: the next turn must read on to it, as
                        // epoll will not report it again.
                        let ready = if peer_closing {
                            Ready::READABLE | Ready::READ_CLOSED
                        } else {
                            Ready::READABLE
                        };
                        cx.reschedule(ready);
                        break;
                    }
                    // A short read emptied the socket's receive queue: the next bytes will
                    // raise a new edge, so the read that would only say WouldBlock is saved
                    // (one syscall per wake-up; tokio does the same).
                    if n < offered && !peer_closing {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        }
        self.release_read_buffer(cx);
        if eof {
            self.on_peer_closed()?;
        }
        Ok(())
    }

    /// A session closed (`close()`) before its TLS handshake is done still needs the
    /// peer's handshake messages: what it queued can only be encrypted once the handshake
    /// completes. Reads feed the filter alone; no message is delivered after a close.
    fn feed_handshake(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let mut budget = self.session.options.read_budget;
        while self.session.handshaking() {
            match self.read_once(cx) {
                Ok((0, _)) => {
                    self.flags.set(Flag::PeerClosed, true);
                    let why = "the peer closed before the TLS handshake was done";
                    return Err(Error::Io(io::Error::new(io::ErrorKind::UnexpectedEof, why)));
                }
                Ok((n, _)) => {
                    self.session.counters.bytes_in += n as u64;
                    self.advance_handshake()?;
                    self.check_handshake_backlog()?;
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        cx.reschedule(Ready::READABLE | Ready::READ_CLOSED);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
        self.release_read_buffer(cx);
        Ok(())
    }

    /// Feeds the filter's wire bytes to a handshake still in progress, taking no plain
    /// bytes (those wait in the filter until messages may be delivered).
    fn advance_handshake(&mut self) -> Result<(), Error> {
        if let Some(io) = self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) {
            if io.filter.is_handshaking() {
                io.filter.decode(&mut io.wire_in, &mut self.rbuf, 0)?;
            }
        }
        Ok(())
    }

    /// One read from the socket into the read buffer, or into the filter's wire buffer when
    /// the session has a filter. Returns the bytes read and the room that was offered.
    fn read_once(&mut self, cx: &mut Context<'_>) -> io::Result<(usize, usize)> {
        let target = match self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) {
            Some(filter) => &mut filter.wire_in,
            None => &mut self.rbuf,
        };
        ensure_read_space(target, cx);
        let offered = target.capacity() - target.len();
        let n = read_into(&mut self.stream, target)?;
        Ok((n, offered))
    }

    /// Decodes the filter's wire bytes into the read buffer and hands every whole frame to
    /// the handler, again while the filter makes progress. The filter stops at the session's
    /// max message length (plus a read's worth) of undecoded plain bytes, so a decompression
    /// bomb never inflates into unbounded memory: past that the codec's length check fails.
    fn unfilter_all(&mut self) -> Decoding {
        let mut messages = 0;
        let result = self.unfilter(&mut messages);
        Decoding { messages, result }
    }

    fn unfilter(&mut self, messages: &mut u64) -> Result<(), Error> {
        if !self.delivering() {
            // Paused (or closing): nothing goes to the handler, but a handshake goes on.
            return self.advance_handshake();
        }
        // Frames already decoded first: after a pause, or the first ones read with a
        // handshake, no more wire bytes may come to push them out.
        if !self.rbuf.is_empty() {
            self.decode_frames(messages)?;
        }
        let cap = (self.session.options.max_message_len).saturating_add(DECODE_SLACK);
        while self.delivering() {
            if self.session.held_by_flow_control() {
                // Wire bytes wait as they are: inflated, a read's worth could be many
                // times the queue's bound once echoed.
                break;
            }
            let Some(io) = self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) else {
                break;
            };
            let before = self.rbuf.len();
            // A step at a time, so flow control is checked about every 64 KiB of plain
            // bytes, however well the input inflates.
            let room = cap.saturating_sub(before).min(DECODE_SLACK);
            io.filter.decode(&mut io.wire_in, &mut self.rbuf, room)?;
            let produced = self.rbuf.len() - before;
            io.plain_in += produced as u64;
            if produced == 0 {
                break;
            }
            self.decode_frames(messages)?;
        }
        Ok(())
    }

    /// Whether decoded messages may go to the handler now: not once it is closing, nor
    /// while it has paused reading.
    fn delivering(&self) -> bool {
        !self.session.is_closing() && !self.session.reading_paused
    }

    /// Hands every whole frame in the read buffer to the handler.
    fn decode_all(&mut self) -> Decoding {
        let mut messages = 0;
        let result = self.decode_frames(&mut messages);
        Decoding { messages, result }
    }

    /// Hands every whole message in the read buffer to the handler, as the session's
    /// framing cuts them. A framing's own output (a WebSocket pong or close reply) goes to
    /// the outbound queue; the peer's close ends input and closes the session gracefully
    /// (the reply is flushed, then the entry lingers until the peer's EOF).
    fn decode_frames(&mut self, messages: &mut u64) -> Result<(), Error> {
        let max_message_len = self.session.options.max_message_len;
        while self.delivering() {
            let limits = DecodeLimits {
                max_message_len,
                // Asked only of a framing that answers the peer by itself (a plain one
                // never does: no work per message).
                above_high_watermark: T::Framing::CONTROL_OUTPUT
                    && self.session.above_high_watermark(),
            };
            let session = &mut self.session;
            let next = session.framing.decode(
                &mut session.codec,
                &mut self.rbuf,
                limits,
                &mut session.out.tail,
            )?;
            match next {
                Next::Message(message) => {
                    self.session.counters.messages_in += 1;
                    *messages += 1;
                    self.handler.on_message(&mut self.session, message);
                }
                Next::NeedMore(Some(frame_len)) => {
                    // Room for the whole frame now, so the body arrives in few reads.
                    self.rbuf.reserve(frame_len.saturating_sub(self.rbuf.len()));
                    return Ok(());
                }
                Next::NeedMore(None) => return Ok(()),
                Next::Control => {}
                Next::PeerClosed => {
                    log::debug!("session {}: the peer closed", self.session.id());
                    self.session.close();
                }
            }
        }
        Ok(())
    }

    /// A session failing on bad input tells the peer why, the framing's way (a WebSocket
    /// close frame with 1002, 1007, 1009, ...). Returns true when a goodbye was queued.
    fn send_failure(&mut self, error: &Error) -> bool {
        if !self.session.framing.fail(error, &mut self.session.out.tail) {
            return false;
        }
        self.session.close_request = Some(CloseRequest::Graceful);
        true
    }

    /// Idle sessions hold no read buffer: give it back when it is drained, and move a tiny
    /// partial frame into a buffer of its own size.
    fn release_read_buffer(&mut self, cx: &mut Context<'_>) {
        release_read_buffer(&mut self.rbuf, cx);
        if let Some(io) = self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) {
            release_read_buffer(&mut io.wire_in, cx);
        }
    }

    /// The socket's EOF.
    fn on_peer_closed(&mut self) -> Result<(), Error> {
        self.flags.set(Flag::PeerClosed, true);
        let open = self.phase == Phase::Open && !self.session.is_closing();
        let truncated = self.session.filter_io().is_some_and(|io| {
            io.filter.peer_closed() == Some(false) && !io.filter.is_handshaking()
        });
        if open && truncated {
            // Without close_notify an attacker's cut looks like the peer's end (RFC 8446
            // §6.1): the handler hears it (tokio-rustls says UnexpectedEof too).
            let detail = "the peer closed the connection without close_notify";
            return Err(Error::Filter(FilterError::malformed("tls", detail)));
        }
        self.end_of_input()
    }

    /// The peer's input has ended (the socket's EOF, or TLS `close_notify`): answer what
    /// was asked, then close (no `on_error`), unless it ended inside a frame.
    fn end_of_input(&mut self) -> Result<(), Error> {
        let undecoded = self.session.filter_io().map_or(0, |f| f.wire_in.len());
        let buffered = self.rbuf.len() + undecoded;
        // A filter can hold the start of a unit it took whole from the wire (deflate's
        // inflater mid-block), which no buffer length shows.
        let cut_in_filter = self
            .session
            .filter_io()
            .is_some_and(|f| f.filter.holds_partial_input());
        let cut = buffered > 0 || cut_in_filter;
        if cut && self.phase == Phase::Open && !self.session.is_closing() {
            return Err(Error::UnexpectedEof { buffered });
        }
        self.session.close();
        Ok(())
    }

    /// The filter says the peer ended its stream (TLS `close_notify`).
    fn closed_in_filter(&self) -> bool {
        self.session
            .filter_io()
            .is_some_and(|io| io.filter.peer_closed() == Some(true))
    }

    /// Writes until the queue is empty or the socket is full.
    fn flush(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let mut progressed = false;
        while self.refill_wire(cx)? > 0 {
            match self.write_some() {
                Ok(0) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.session.counters.bytes_out += n as u64;
                    cx.extension::<Metrics>().bytes_out += n as u64;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        }
        if progressed {
            self.session.counters.last_write = Stamp::of(cx.now());
        }
        if self.session.queued_bytes() == 0 {
            if let Some(extras) = self.session.extras.as_mut() {
                extras.blocked_since = None;
                if let Some(io) = extras.filter.as_mut() {
                    give_back(&mut io.wire_out, cx);
                }
            }
            give_back(&mut self.session.out.tail, cx);
        } else if progressed || self.blocked_since().is_none() {
            self.extras_mut().blocked_since = Some(cx.now());
        }
        Ok(())
    }

    /// With a filter: when its wire buffer is empty, moves the next batch of the outbound
    /// queue through it (unless it is still handshaking) and flushes it. Returns the bytes
    /// ready to write to the socket.
    fn refill_wire(&mut self, cx: &mut Context<'_>) -> Result<usize, Error> {
        let Some(io) = self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) else {
            return Ok(self.session.out.len());
        };
        if io.wire_out.is_empty() {
            if !io.filter.is_handshaking() && !self.session.out.is_empty() {
                if io.wire_out.capacity() == 0 {
                    io.wire_out = cx.buffers().take();
                }
                let (filter, wire) = (&mut io.filter, &mut io.wire_out);
                let moved = self
                    .session
                    .out
                    .drain_into(ENCODE_BATCH, |plain| filter.encode(plain, wire))?;
                io.plain_out += moved as u64;
            }
            io.filter.flush(&mut io.wire_out)?;
        }
        Ok(io.wire_out.len())
    }

    /// One write to the socket: the filter's wire bytes, or the outbound queue (`writev`).
    fn write_some(&mut self) -> io::Result<usize> {
        match self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) {
            Some(io) => {
                let n = self.stream.write(&io.wire_out)?;
                io.wire_out.advance(n);
                Ok(n)
            }
            None => self.session.out.write_to(&mut self.stream),
        }
    }

    /// Lends the session a pooled buffer to encode into, so writes do not allocate.
    fn lend_write_buffer(&mut self, cx: &mut Context<'_>) {
        if self.session.out.tail.capacity() == 0 {
            self.session.out.tail = cx.buffers().take();
        }
    }

    /// After every event: act on close requests, flush, report watermarks, re-arm the timer.
    fn settle(&mut self, cx: &mut Context<'_>) -> Status {
        let queued = std::mem::take(&mut self.session.unreported_messages_out);
        if queued > 0 {
            cx.extension::<Metrics>().messages_out += u64::from(queued);
        }
        if let Err(e) = self.settle_io(cx) {
            return self.fail(cx, e);
        }
        if self.session.close_request == Some(CloseRequest::Abort) {
            return self.finish(cx, true);
        }
        if self.session.close_request.is_some() {
            if self.phase == Phase::Open && self.session.framing.close(&mut self.session.out.tail) {
                if let Err(e) = self.settle_io(cx) {
                    return self.fail(cx, e);
                }
            }
            self.phase = Phase::Closing;
            if self.session.queued_bytes() == 0 {
                return self.linger(cx);
            }
        }
        self.resume_reading_if_due(cx);
        self.rearm_timer(cx);
        Status::Continue
    }

    /// Reading was held by a pause that has lifted: read at once (no edge will come again
    /// for bytes that waited in the socket), counting read-idle time from now.
    fn resume_reading_if_due(&mut self, cx: &mut Context<'_>) {
        if self.phase != Phase::Open || self.session.is_closing() {
            return;
        }
        if self.session.is_reading_paused() {
            // Also a pause with no read in progress: resuming must read.
            self.flags.set(Flag::ReadHeld, true);
            return;
        }
        if self.flags.take(Flag::ReadHeld) || self.flags.get(Flag::Undelivered) {
            self.session.counters.last_read = Stamp::of(cx.now());
            self.session.framing.on_resume(cx.now());
            // READ_CLOSED: read on to WouldBlock, since the peer's EOF may have been
            // signalled while paused.
            cx.reschedule(Ready::READABLE | Ready::READ_CLOSED);
        }
    }

    fn settle_io(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        if self.session.close_request == Some(CloseRequest::Abort) {
            return Ok(());
        }
        // The handler heard about a crossing and may have written more: flush again. A few
        // rounds at most, so a handler refilling a fast reader's queue cannot hold the loop;
        // what is left waits for the next writable event.
        for _ in 0..4 {
            self.flush(cx)?;
            if !self.report_writability(cx) {
                return Ok(());
            }
        }
        // Work is left after the last round: the handler wrote again after the last flush
        // (no writable edge may come for it: that flush did not fill the socket), or a
        // crossing is still to be told. The second matters as much: when the last round
        // reported "not writable" for a queue that the flush had meanwhile drained, the
        // handler stopped producing and nothing would ever tell it to resume.
        if self.session.queued_bytes() > 0 || self.writability_pending() {
            cx.reschedule(Ready::WRITABLE);
        }
        Ok(())
    }

    /// Whether `report_writability` has a crossing to tell.
    fn writability_pending(&self) -> bool {
        let options = &self.session.options;
        crossing_pending(
            self.session.writable,
            self.reported_writable,
            self.session.queued_bytes(),
            options.high_watermark,
            options.low_watermark,
        )
    }

    /// Everything is flushed: shut down the write side, tell the handler, and wait for the
    /// peer's EOF while discarding its input (unless it has already closed).
    fn linger(&mut self, cx: &mut Context<'_>) -> Status {
        self.send_filter_close();
        let _ = self.stream.shutdown_write();
        self.flags.set(Flag::Graceful, true);
        if self.flags.get(Flag::PeerClosed) {
            return self.finish(cx, false);
        }
        self.close_session(cx);
        self.phase = Phase::Lingering;
        let until = cx.now() + self.session.options.linger_timeout;
        self.extras_mut().linger_until = Some(until);
        self.rearm_timer(cx);
        self.discard_input(cx)
    }

    /// Lets the filter say goodbye (TLS `close_notify`), best effort: the write side is
    /// about to shut down.
    fn send_filter_close(&mut self) {
        if let Some(io) = self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) {
            io.filter.close(&mut io.wire_out);
            let _ = self.stream.write(&io.wire_out);
            io.wire_out.clear();
        }
    }

    /// Reads and drops what the peer still sends; ends the entry at EOF or on an error.
    fn discard_input(&mut self, cx: &mut Context<'_>) -> Status {
        let mut scratch = [0u8; 4096];
        let mut budget = LINGER_READ_BUDGET;
        loop {
            match self.stream.read(&mut scratch) {
                Ok(0) => return self.finish(cx, false),
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        cx.reschedule(Ready::READABLE);
                        return Status::Continue;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Status::Continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.finish(cx, false),
            }
        }
    }

    /// Reads and drops the input already received, up to the linger budget, without
    /// waiting: the last thing done before a gracefully closing socket is dropped early.
    fn drain_unread(&mut self) {
        let mut scratch = [0u8; 4096];
        let mut budget = LINGER_READ_BUDGET;
        while budget > 0 {
            match self.stream.read(&mut scratch) {
                Ok(0) => return,
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Tells the handler when the queue crossed a watermark. Returns true when it did.
    fn report_writability(&mut self, cx: &mut Context<'_>) -> bool {
        let (high, low) = (
            self.session.options.high_watermark,
            self.session.options.low_watermark,
        );
        if self.session.writable == self.reported_writable {
            let queued = self.session.queued_bytes();
            self.session.writable = next_writability(self.reported_writable, queued, high, low);
        }
        if self.session.writable == self.reported_writable || self.phase != Phase::Open {
            return false;
        }
        self.reported_writable = self.session.writable;
        if let Some(state) = self.extras().and_then(|e| e.handle_state.as_ref()) {
            state.set_writable(self.reported_writable);
        }
        self.lend_write_buffer(cx);
        self.handler
            .on_writability_changed(&mut self.session, self.reported_writable);
        true
    }

    /// The earliest of the cron tick, the idle, write-stall and linger deadlines.
    fn next_deadline(&self) -> Option<Instant> {
        let opts = &self.session.options;
        let extras = self.extras();
        if self.phase == Phase::Lingering {
            return extras?.linger_until;
        }
        // The cron and the idle timeout apply only while open; `on_deadline` ignores them
        // once closing, so counting them here would re-arm an already-due timer on every
        // turn and spin the loop until the queue drained (or the write stall hit).
        let open = self.phase == Phase::Open;
        let idle = opts
            .read_idle_timeout
            .filter(|_| open && !self.session.is_reading_paused())
            .map(|t| self.session.counters.last_read.instant() + t);
        let cron = extras.and_then(|e| e.next_cron).filter(|_| open);
        let stall = extras
            .and_then(|e| e.blocked_since)
            .map(|t| t + opts.write_stall_timeout);
        let handshake = self
            .session
            .filter_io()
            .and_then(FilterIo::handshake_deadline);
        // Like read-idle: a session that does not read cannot see what the framing awaits
        // (a pong).
        let framing = self
            .session
            .framing
            .poll_timeout()
            .filter(|_| open && !self.session.is_reading_paused());
        [cron, idle, stall, handshake, framing]
            .into_iter()
            .flatten()
            .min()
    }

    /// Keeps one timer armed for the next deadline. A timer that fires early (the idle
    /// deadline moved because bytes arrived) just re-arms: nothing is done per message.
    fn rearm_timer(&mut self, cx: &mut Context<'_>) {
        if std::mem::take(&mut self.session.timers_changed) {
            let next_cron = self.session.options.cron_period.map(|p| cx.now() + p);
            if next_cron.is_some() || self.session.extras.is_some() {
                self.extras_mut().next_cron = next_cron;
            }
            self.cancel_timer(cx);
        }
        let Some(deadline) = self.next_deadline() else {
            return;
        };
        let extras = self.extras_mut();
        match extras.timer {
            Some((_, armed)) if armed <= deadline => {}
            _ => {
                if let Some((id, _)) = extras.timer.take() {
                    cx.cancel_timer(id);
                }
                extras.timer = Some((cx.set_timer_at(deadline, 0), deadline));
            }
        }
    }

    fn cancel_timer(&mut self, cx: &mut Context<'_>) {
        if let Some((id, _)) = self.session.extras.as_mut().and_then(|e| e.timer.take()) {
            cx.cancel_timer(id);
        }
    }

    fn on_deadline(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let now = cx.now();
        let opts = &self.session.options;
        if let Some(since) = self.blocked_since() {
            if now >= since + opts.write_stall_timeout {
                return Err(Error::WriteStalled(opts.write_stall_timeout));
            }
        }
        let handshake = self
            .session
            .filter_io()
            .and_then(FilterIo::handshake_deadline);
        if handshake.is_some_and(|t| now >= t) {
            return Err(Error::HandshakeTimeout(opts.handshake_timeout));
        }
        if self.phase == Phase::Open && !self.session.is_reading_paused() {
            self.session.framing.handle_timeout(now)?;
        }
        let opts = &self.session.options;
        if let Some(idle) = opts.read_idle_timeout {
            let idle_since = self.session.counters.last_read.instant();
            if self.phase == Phase::Open
                && !self.session.is_reading_paused()
                && now >= idle_since + idle
            {
                return Err(Error::ReadIdle(idle));
            }
        }
        let next_cron = self.extras().and_then(|e| e.next_cron);
        if let (Some(due), Some(period)) = (next_cron, opts.cron_period) {
            if now >= due && self.phase == Phase::Open {
                // Skip missed ticks rather than firing a burst after a stall.
                let missed = (now - due).as_nanos() / period.as_nanos().max(1);
                self.extras_mut().next_cron = Some(due + period * (missed + 1) as u32);
                self.lend_write_buffer(cx);
                if !self.session.is_closing() {
                    self.session
                        .framing
                        .on_cron(now, &mut self.session.out.tail);
                }
                self.handler.on_cron(&mut self.session);
            }
        }
        Ok(())
    }

    /// Ends the session with an error the handler sees, then `on_close`.
    ///
    /// Most errors end it gracefully: what is queued (replies to the frames before a bad
    /// one, a goodbye written in `on_error`, a WebSocket close frame with the RFC's code)
    /// is flushed within the write-stall timeout, then the write side is shut down and the
    /// entry lingers, as `close()` does. A reset only where nothing more can be sent or
    /// waiting would hold resources for a peer that does not cooperate: an I/O error, a
    /// write stall, a handshake timeout. A filter that broke (a TLS alert was queued) sends
    /// only its own goodbye: the alert, then FIN.
    fn fail(&mut self, cx: &mut Context<'_>, error: Error) -> Status {
        if !matches!(self.phase, Phase::Open | Phase::Closing) || self.flags.get(Flag::Failed) {
            return self.finish(cx, true);
        }
        self.flags.set(Flag::Failed, true);
        log::debug!(
            "session {} ({}) failed: {error}",
            self.session.id(),
            self.session.peer_addr()
        );
        cx.extension::<Metrics>().count_error(&error);
        let resets = matches!(
            error,
            Error::Io(_) | Error::WriteStalled(_) | Error::HandshakeTimeout(_)
        );
        // A filter that failed, or one still negotiating (nothing queued can be encrypted
        // before the handshake is done, and no more is read to finish it), sends only its
        // own goodbye.
        let filter_broken = self
            .session
            .filter_io()
            .is_some_and(|io| !io.filter.can_send() || io.filter.is_handshaking());
        if resets {
            // Writes in on_error fail (Error::Closed): nothing more can be sent.
            self.session.close_request = Some(CloseRequest::Abort);
        } else if filter_broken {
            self.session.out.clear();
            self.session.close_request = Some(CloseRequest::Graceful);
        }
        self.handler.on_error(&mut self.session, &error);
        if resets || self.session.close_request == Some(CloseRequest::Abort) {
            return self.finish(cx, true);
        }
        if self.phase == Phase::Open && !filter_broken {
            self.send_failure(&error);
        }
        self.session
            .close_request
            .get_or_insert(CloseRequest::Graceful);
        self.phase = Phase::Closing;
        self.settle(cx)
    }

    /// Ends the entry: calls `on_close` (if it has not run yet) and drops the socket,
    /// resetting the connection when `reset` (SO_LINGER 0 drops what the kernel holds).
    fn finish(&mut self, cx: &mut Context<'_>, reset: bool) -> Status {
        if reset && self.phase != Phase::Closed {
            #[cfg(unix)]
            let _ = self
                .session
                .socket()
                .set_linger(Some(std::time::Duration::ZERO));
        } else if !reset {
            self.flags.set(Flag::Graceful, true);
        }
        self.close_session(cx);
        self.phase = Phase::Closed;
        let _ = cx.registry().deregister(&mut self.stream);
        self.cancel_timer(cx);
        Status::Done
    }

    /// Ends a session that never opened (for `why`): no callback, but its handles see it
    /// closed and its owner hears that it ended.
    fn end_unopened(&mut self, cx: &mut Context<'_>, why: Error) -> Status {
        self.phase = Phase::Closed;
        if let Some(state) = self.extras().and_then(|e| e.handle_state.as_ref()) {
            state.mark_closed();
        }
        if let Some(owner) = self.owner() {
            let ended = SessionEnded {
                id: cx.id(),
                outcome: Err(why),
            };
            cx.send(owner, OwnerNote::Ended(ended));
        }
        Status::Done
    }

    /// The framework's side of an opened session's end, before the handler hears of it:
    /// the handles refuse writes, the owner (a client) hears the end and redials (the
    /// message is delivered after this call, panic or not), the metrics count it.
    fn end_opened(&mut self, cx: &mut Context<'_>) {
        self.phase = Phase::Closed;
        self.session
            .close_request
            .get_or_insert(CloseRequest::Abort);
        cx.extension::<Metrics>().sessions_closed += 1;
        if let Some(state) = self.extras().and_then(|e| e.handle_state.as_ref()) {
            state.mark_closed();
        }
        if let Some(owner) = self.owner() {
            let ended = SessionEnded {
                id: cx.id(),
                outcome: Ok(()),
            };
            cx.send(owner, OwnerNote::Ended(ended));
        }
    }

    /// Calls `on_close` once, returns the buffers and tells the owner.
    fn close_session(&mut self, cx: &mut Context<'_>) {
        if matches!(self.phase, Phase::Lingering | Phase::Closed) {
            return;
        }
        // The framework's side first, so that a panic in `on_close` cannot skip it.
        // `on_panic` then finds the session closed and adds nothing.
        self.end_opened(cx);
        self.handler.on_close(&mut self.session);
        self.session.out.clear();
        give_back(&mut self.rbuf, cx);
        give_back(&mut self.session.out.tail, cx);
        if let Some(io) = self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) {
            give_back(&mut io.wire_in, cx);
            give_back(&mut io.wire_out, cx);
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
            return self.end_unopened(cx, Error::Io(e));
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
            extras.timer = None;
        }
        if self.phase == Phase::Lingering {
            let until = self.extras().and_then(|e| e.linger_until);
            if until.is_some_and(|t| cx.now() >= t) {
                return self.finish(cx, false); // the peer never closed; stop waiting
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
        match command.0 {
            SessionOp::Close => self.session.close(),
            SessionOp::Abort => self.session.abort(),
            SessionOp::Job(job) => {
                self.lend_write_buffer(cx);
                match (job.0)(&mut self.session) {
                    Ok(()) | Err(Error::Closed) => {}
                    // Dropping it would leave a hole in the stream: end the session instead.
                    Err(e) => return self.fail(cx, e),
                }
            }
        }
        self.settle(cx)
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        if self.phase == Phase::Lingering {
            // Already closed for the handler; finish lingering unless time is up.
            return if deadline.is_some() {
                Status::Continue
            } else {
                self.finish(cx, false)
            };
        }
        if deadline.is_some() {
            self.session.framing.go_away();
            self.session.close();
            return self.settle(cx);
        }
        // No time left: one last non-blocking flush, then close (saying goodbye the
        // filter's way, close_notify, when everything went out: else the peer sees a
        // truncation).
        let _ = self.flush(cx);
        let unsent = self.session.queued_bytes() > 0;
        if !unsent {
            self.send_filter_close();
        }
        self.finish(cx, unsent)
    }

    /// A callback (or a job) panicked, and the reactor caught it: reset the connection
    /// (what is queued may be half-written), then tell the handler, last, so that a second
    /// panic leaves nothing undone: `on_error(Panicked)` and `on_close` for a session that
    /// opened; nothing for one that did not (a panic in `on_open` is a refusal).
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
                self.end_unopened(cx, error);
            }
            self.phase = Phase::Closed;
            return;
        }
        // Done from here on, whatever the handler does.
        self.session.close_request = Some(CloseRequest::Abort);
        self.end_opened(cx);
        self.handler.on_error(&mut self.session, &error);
        self.handler.on_close(&mut self.session);
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
/// capacity for a large one.
fn ensure_read_space(buf: &mut BytesMut, cx: &mut Context<'_>) {
    if buf.capacity() - buf.len() >= MIN_READ_SPACE {
        return;
    }
    let pool = cx.buffers();
    if buf.len() < pool.buffer_size() / 2 {
        // Move the (small) partial frame into a pooled buffer.
        let mut pooled = pool.take();
        pooled.extend_from_slice(buf);
        *buf = pooled;
    } else {
        buf.reserve(pool.buffer_size());
    }
}

/// Gives a drained buffer back to the pool, and moves a tiny partial frame out of a pooled
/// buffer into one of its own size.
fn release_read_buffer(buf: &mut BytesMut, cx: &mut Context<'_>) {
    if buf.capacity() == 0 {
        return;
    }
    if buf.is_empty() {
        cx.buffers().give(std::mem::take(buf));
    } else if buf.len() <= COMPACT_BELOW && buf.capacity() >= cx.buffers().buffer_size() {
        let small = BytesMut::from(&buf[..]);
        cx.buffers().give(std::mem::replace(buf, small));
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

    /// Ten thousand idle sessions must cost little: the entry (boxed in the reactor's slab)
    /// is the bulk of what an idle session holds in user space.
    #[test]
    fn an_idle_echo_session_stays_small() {
        type Entry = super::StreamEntry<mio::net::TcpStream, crate::Tcp, LengthFieldCodec, Echo>;
        let size = std::mem::size_of::<Entry>();
        // mio adds a selector id to every socket in debug builds.
        let limit = if cfg!(debug_assertions) { 216 } else { 200 };
        assert!(size <= limit, "a session entry grew to {size} bytes");
    }
}
