//! What a handler sees of one connection: its identity, its outbound queue, its stats.

use std::any::Any;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use getty_codec::filter::Filter;
use getty_codec::Encoder;

use getty_reactor::Recipient;

use crate::addr::sealed::Stored;
use crate::commands::OwnerNote;
pub(crate) use crate::core::CloseRequest;
use crate::core::{self, Attributes, SessionCore, SessionTimer};
use crate::filtered::FilterIo;
use crate::framing::Framing;
use crate::group::{Inbox, Pending};
use crate::handle::{HandleCore, HandleState, Room};
use crate::outbound::Outbound;
use crate::transport::{Tcp, Transport};
use crate::SessionHandle;
use crate::{Error, SessionOptions};

pub(crate) mod buffers;
mod flow;
mod handler;
mod stats;

pub(crate) use buffers::Buffers;

pub use handler::Handler;
pub use stats::Stats;
pub(crate) use stats::{Counters, Stamp};

/// Per-session state most sessions never need, boxed on first use so that an idle session
/// stays small: the handler's attributes, and the transport's owner and timer bookkeeping.
#[derive(Default)]
pub(crate) struct Extras {
    attributes: Attributes<dyn Any>,
    /// The client that owns this session, told when it ends.
    pub(crate) owner: Option<Recipient<OwnerNote>>,
    /// The one timer of this session: cron, write stall, and when it fires.
    pub(crate) timer: SessionTimer,
    /// When a lingering close gives up waiting for the peer's EOF.
    pub(crate) linger_until: Option<Instant>,
    /// Shared with the session's handles, once one was made.
    pub(crate) handle_state: Option<Arc<HandleState>>,
    /// A held handle write applied as the session drained, which it could not take: the
    /// session fails with it once the settling round is over.
    pub(crate) held_error: Option<Error>,
    /// The session's filter stack (TLS, compression), if it has one.
    pub(crate) filter: Option<Box<FilterIo>>,
    /// Broadcasts of the groups it joined, waiting to be queued: one inbox per group, so
    /// that each group's bound and policy apply to its own broadcasts only.
    pub(crate) inboxes: Vec<Rc<Inbox>>,
}

/// One connection as its handler sees it: write to it, close it, read its stats, keep typed
/// attributes on it.
///
/// A `Session` is owned by its reactor and lent to the handler during callbacks; writes
/// queue bytes that the reactor flushes (with one `writev`) when the callback returns.
///
/// `T` is its [`Transport`] ([`Tcp`] by default): it types the peer's address and frames the
/// messages. What one transport alone can do is there only for it: a WebSocket session
/// (`Session<C, Ws>`) pings, closes with a code and tells what its handshake agreed (see
/// [`Ws`](crate::ws::Ws)); a TCP session has no such methods, so asking one fails to
/// compile rather than at run time.
#[cfg_attr(not(feature = "ws"), allow(rustdoc::broken_intra_doc_links))]
// Ten thousand idle sessions each hold one, boxed in the reactor's slab with the socket and
// the handler: what an idle session does not use is boxed on first use (`out`, `counters`,
// `extras`), and a test in `stream.rs` guards the size.
pub struct Session<C, T: Transport = Tcp> {
    /// What every session holds: id, options, close request, writability.
    pub(crate) core: SessionCore,
    peer: <T::Addr as Stored>::Compact,
    pub(crate) codec: C,
    /// How messages are framed on the wire (zero-sized for a plain byte stream).
    pub(crate) framing: T::Framing,
    /// The outbound queue and the read buffer, boxed while bytes are in flight only.
    pub(crate) out: Buffers,
    /// Boxed at the first byte in or out: a session that never moved a byte needs only
    /// `last_read` to tell its stats.
    counters: Option<Box<Counters>>,
    /// When bytes were last read (or reading resumed after a pause), the open time before
    /// that. It changes only once `counters` is boxed, which takes the open time for its
    /// `last_write` then: until then `last_read` is the open time.
    last_read: Stamp,
    pub(crate) extras: Option<Box<Extras>>,
    /// Messages queued since the reactor last added them to its metrics.
    pub(crate) unreported_messages_out: u32,
}

impl<C, T: Transport> Session<C, T> {
    pub(crate) fn new(
        peer: T::Addr,
        #[cfg(unix)] fd: std::os::fd::RawFd,
        codec: C,
        options: Arc<SessionOptions>,
        now: Instant,
        framing: T::Framing,
    ) -> Self {
        Session {
            core: SessionCore::new(
                options,
                #[cfg(unix)]
                fd,
            ),
            peer: peer.compact(),
            codec,
            framing,
            out: Buffers::default(),
            counters: None,
            last_read: Stamp::of(now),
            extras: None,
            unreported_messages_out: 0,
        }
    }

    /// The session's id, unique in the process.
    ///
    /// ```
    /// getty_transports::with_session(|s| assert!(s.id() > 0));
    /// ```
    pub fn id(&self) -> u64 {
        self.core.id()
    }

    /// The peer's address.
    ///
    /// ```
    /// getty_transports::with_session(|s| assert!(s.peer_addr().ip().is_loopback()));
    /// ```
    pub fn peer_addr(&self) -> T::Addr {
        T::Addr::expand(&self.peer)
    }

    /// The local address (asked of the socket: it is not stored, to keep sessions small).
    ///
    /// ```
    /// getty_transports::with_session(|s| assert!(s.local_addr().unwrap().ip().is_loopback()));
    /// ```
    #[cfg(unix)]
    pub fn local_addr(&self) -> io::Result<T::Addr> {
        let local = self.socket().local_addr()?;
        T::Addr::from_sockaddr(&local).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "an address of another family")
        })
    }

    /// The socket, for options this crate does not wrap (`setsockopt` only: reading or
    /// writing through it would bypass the session's buffers).
    ///
    /// ```
    /// getty_transports::with_session(|s| s.socket().set_tcp_nodelay(true).unwrap());
    /// ```
    #[cfg(unix)]
    pub fn socket(&self) -> socket2::SockRef<'_> {
        self.core.socket()
    }

    /// Encodes `message` with the session's codec and queues it.
    ///
    /// Fails with `Error::Closed` once the session is closing, with `Error::QueueFull` when
    /// it would take the queue past its hard bound (nothing is queued then), and with
    /// `Error::Codec` when the codec cannot encode it.
    ///
    /// ```
    /// getty_transports::with_session(|s| {
    ///     s.write("hello").unwrap(); // RawCodec copies the bytes as they are
    ///     assert_eq!(s.queued_bytes(), 5);
    /// });
    /// ```
    #[inline]
    pub fn write<M>(&mut self, message: M) -> Result<(), Error>
    where
        C: Encoder<M>,
    {
        self.check_open()?;
        let in_filter = self.filter_io().map_or(0, |f| f.wire_out.len());
        // The queue is taken once (a session that holds none takes its box here), and
        // what it holds is counted once: the bound and the watermark are checked against
        // that count plus what this message adds.
        let out: &mut Outbound = &mut self.out;
        let (tail_before, capacity_before) = (out.tail.len(), out.tail.capacity());
        let before = out.len() + in_filter;
        // A large payload the codec leaves out of the tail is queued as it is: the message
        // is not copied on its way out.
        let payload = match self
            .framing
            .encode_split(&mut self.codec, message, &mut out.tail)
        {
            Ok(payload) => payload,
            Err(e) => {
                self.take_back(tail_before, capacity_before);
                return Err(e);
            }
        };
        let added = out.tail.len() - tail_before + payload.as_ref().map_or(0, Bytes::len);
        if before + added > self.core.options.max_outbound {
            self.take_back(tail_before, capacity_before);
            return Err(self.queue_full(before, added));
        }
        if let Some(payload) = payload {
            let blocked = self.extras.as_ref().is_some_and(|e| e.timer.is_blocked());
            out.push_view(payload, before, blocked);
        }
        self.note_queued_now(1, before + added);
        Ok(())
    }

    /// Queues raw bytes, bypassing the codec. Large buffers are not copied while the queue
    /// drains; behind a long or stalled queue they are, so that a slice of a larger buffer
    /// (a received message, which may share a read buffer) does not keep all of it for as
    /// long as the peer does not read. On a WebSocket it is one binary message: a client's
    /// payload is copied to be masked, and a compressed one to be deflated.
    ///
    /// ```
    /// getty_transports::with_session(|s| {
    ///     s.write_bytes(vec![0u8; 1 << 20]).unwrap(); // queued as is, not copied
    ///     assert_eq!(s.queued_bytes(), 1 << 20);
    /// });
    /// ```
    pub fn write_bytes(&mut self, bytes: impl Into<Bytes>) -> Result<(), Error> {
        let bytes = bytes.into();
        self.check_open()?;
        let keep_views = self.keeps_views();
        let messages = self.queue_framed(bytes.len(), |framing, out| {
            framing.write_bytes(bytes, keep_views, out).map(|()| 1)
        })?;
        self.note_queued(messages);
        Ok(())
    }

    /// Queues several buffers as one unit: all of them or, when they would exceed the hard
    /// bound, none. They go out with one `writev` where the kernel takes them; large ones
    /// are copied only behind a long or stalled queue, as with
    /// [`write_bytes`](Self::write_bytes).
    ///
    /// ```
    /// use bytes::Bytes;
    /// getty_transports::with_session(|s| {
    ///     s.write_vectored(&[Bytes::from_static(b"head"), Bytes::from(vec![7u8; 10_000])]).unwrap();
    ///     assert_eq!(s.queued_bytes(), 10_004);
    /// });
    /// ```
    pub fn write_vectored(&mut self, buffers: &[Bytes]) -> Result<(), Error> {
        self.check_open()?;
        let total: usize = buffers.iter().map(Bytes::len).sum();
        let keep_views = self.keeps_views();
        let messages = self.queue_framed(total, |framing, out| {
            framing.write_vectored(buffers, keep_views, out)
        })?;
        self.note_queued(messages);
        Ok(())
    }

    /// Ends the session gracefully: stop reading, flush what is queued (within the write
    /// stall timeout), shut down the write side, close. `on_close` follows.
    ///
    /// This ends one connection, not its owner. A server's session is gone for good (the
    /// server accepts on). A **client's** session (from `TcpClient`, `WsClient`,
    /// `UnixClient`) is one of the `connection_number` the client keeps: the client hears
    /// that it ended and dials a new one (after its redial backoff), whose `on_open` runs
    /// as for any new session. To end the client itself, sessions and redials, call
    /// [`close_client`](Self::close_client).
    ///
    /// ```
    /// getty_transports::with_session(|s| {
    ///     s.close();
    ///     assert!(s.is_closing());
    ///     assert!(s.write("late").is_err());
    /// });
    /// ```
    pub fn close(&mut self) {
        self.core.close();
        // At once, not when the reactor acts on it: a handle's write from now on would be
        // dropped with the close.
        if let Some(state) = self.extras.as_ref().and_then(|e| e.handle_state.as_ref()) {
            state.mark_closing();
        }
    }

    /// Closes the client this session belongs to, as sending it [`Close`](crate::Close)
    /// does: it stops redialling and closes every one of its sessions gracefully, this one
    /// included, so `on_close` follows for each, and no new session opens. Returns false,
    /// and does nothing, for a session no client owns (a server's), or outside a reactor's
    /// callback.
    ///
    /// The client hears it once this callback has returned (at the reactor's next turn);
    /// until its `Close` reaches this session, the session stays open, so a goodbye can
    /// still be written. Use [`close`](Self::close) to end only this session (the client
    /// then dials a new one).
    ///
    /// ```
    /// use getty_codec::{Bytes, LinesCodec};
    /// use getty_transports::{Handler, Session};
    ///
    /// /// Talks until the server says "bye", then ends the whole client: all its
    /// /// connections, and no redial.
    /// struct Chat;
    /// impl Handler<LinesCodec> for Chat {
    ///     fn on_message(&mut self, session: &mut Session<LinesCodec>, line: Bytes) {
    ///         if &line[..] == b"bye" {
    ///             let closing = session.close_client();
    ///             assert!(closing, "a client's session");
    ///         }
    ///     }
    /// }
    ///
    /// // A server's session (as here, from the doc harness) has no client to close.
    /// getty_transports::with_session(|s| assert!(!s.close_client()));
    /// ```
    pub fn close_client(&mut self) -> bool {
        core::close_client(self.extras.as_ref().and_then(|e| e.owner))
    }

    /// The reactor this session runs on, to stop it from a handler
    /// ([`shutdown_graceful`](getty_reactor::ReactorHandle::shutdown_graceful) or
    /// [`shutdown`](getty_reactor::ReactorHandle::shutdown)) or to post work to it;
    /// `None` outside a reactor's callback. A handle is cheap (a reference count) and may
    /// be kept and sent to other threads.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::time::Duration;
    /// use getty_codec::{Bytes, LinesCodec};
    /// use getty_reactor::Reactor;
    /// use getty_transports::{tcp::TcpServer, Handler, Session};
    ///
    /// /// An admin port: "shutdown" stops the whole reactor, letting every session finish.
    /// struct Admin;
    /// impl Handler<LinesCodec> for Admin {
    ///     fn on_message(&mut self, session: &mut Session<LinesCodec>, line: Bytes) {
    ///         if &line[..] == b"shutdown" {
    ///             let reactor = session.reactor().expect("in a callback");
    ///             let _ = reactor.shutdown_graceful(Duration::from_secs(5));
    ///         }
    ///     }
    /// }
    ///
    /// let server = TcpServer::bind("127.0.0.1:0", |_| Ok((LinesCodec::default(), Admin))).unwrap();
    /// let addr = server.local_addr();
    /// let mut reactor = Reactor::new().unwrap();
    /// reactor.spawn(server);
    /// let mut admin = std::net::TcpStream::connect(addr).unwrap();
    /// admin.write_all(b"shutdown\n").unwrap();
    /// drop(admin);
    /// reactor.run().unwrap(); // returns: the handler stopped it
    /// ```
    pub fn reactor(&self) -> Option<getty_reactor::ReactorHandle> {
        core::current_reactor()
    }

    /// Ends the session now, discarding what is queued and resetting the connection.
    ///
    /// ```
    /// getty_transports::with_session(|s| {
    ///     s.abort();
    ///     assert!(s.is_closing());
    /// });
    /// ```
    pub fn abort(&mut self) {
        self.core.abort();
    }

    /// True once `close` or `abort` was called (or the session is ending for another reason).
    ///
    /// ```
    /// getty_transports::with_session(|s| assert!(!s.is_closing()));
    /// ```
    pub fn is_closing(&self) -> bool {
        self.core.is_closing()
    }

    /// False while the outbound queue is above the high watermark.
    ///
    /// ```
    /// getty_transports::with_session(|s| {
    ///     assert!(s.is_writable());
    ///     s.write_bytes(vec![0u8; 128 * 1024]).unwrap(); // past the 64 KiB high watermark
    ///     assert!(!s.is_writable());
    /// });
    /// ```
    pub fn is_writable(&self) -> bool {
        self.core.is_writable()
    }

    /// Bytes queued and not yet written to the socket.
    ///
    /// ```
    /// getty_transports::with_session(|s| assert_eq!(s.queued_bytes(), 0));
    /// ```
    pub fn queued_bytes(&self) -> usize {
        self.out.len() + self.filter_io().map_or(0, |f| f.wire_out.len())
    }

    /// What the session can take now of its handles' writes.
    pub(crate) fn handle_room(&self) -> Room {
        let queued = self.queued_bytes();
        Room {
            writable: self.core.is_writable() || queued <= self.core.options.low_watermark,
            queued,
            max_outbound: self.core.options.max_outbound,
        }
    }

    /// What the watermarks count: the queue, and the handles' writes held for it.
    pub(crate) fn watermark_bytes(&self) -> usize {
        let held = self.extras.as_ref().and_then(|e| e.handle_state.as_ref());
        self.queued_bytes() + held.map_or(0, |state| state.held_bytes())
    }

    /// The filter of type `F` in the session's filter stack, if it has one: for example the
    /// TLS layer, to ask for the peer's certificates.
    ///
    /// ```
    /// # #[cfg(feature = "deflate")] {
    /// use getty_codec::filter::DeflateFilter;
    /// getty_transports::with_session(|s| assert!(s.filter::<DeflateFilter>().is_none()));
    /// # }
    /// ```
    pub fn filter<F: Filter>(&self) -> Option<&F> {
        self.filter_io()?.filter.layer::<F>()
    }

    pub(crate) fn filter_io(&self) -> Option<&FilterIo> {
        self.extras.as_ref()?.filter.as_deref()
    }

    /// The session's counters.
    ///
    /// ```
    /// getty_transports::with_session(|s| {
    ///     s.write("x").unwrap();
    ///     assert_eq!(s.stats().messages_out, 1);
    ///     assert_eq!(s.stats().bytes_in, 0);
    /// });
    /// ```
    pub fn stats(&self) -> Stats {
        let c = self.counters();
        let (plain_in, plain_out) = match self.filter_io() {
            Some(f) => (f.plain_in, f.plain_out),
            None => (c.bytes_in, c.bytes_out),
        };
        Stats {
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            plain_bytes_in: plain_in,
            plain_bytes_out: plain_out,
            messages_in: c.messages_in,
            messages_out: c.messages_out,
            last_read: self.last_read.instant(),
            last_write: c.last_write.instant(),
        }
    }

    /// The session's options.
    ///
    /// ```
    /// getty_transports::with_session(|s| assert_eq!(s.options().get_max_message_len(), 1 << 20));
    /// ```
    pub fn options(&self) -> &SessionOptions {
        self.core.options()
    }

    /// Changes the cron period from now on (`None` stops the cron).
    ///
    /// ```
    /// use std::time::Duration;
    /// getty_transports::with_session(|s| {
    ///     s.set_cron_period(Some(Duration::from_secs(1)));
    ///     assert_eq!(s.options().get_cron_period(), Some(Duration::from_secs(1)));
    /// });
    /// ```
    pub fn set_cron_period(&mut self, period: Option<Duration>) {
        self.core.set_cron_period(period);
    }

    /// Changes the read-idle timeout from now on (`None` disables it).
    ///
    /// ```
    /// use std::time::Duration;
    /// getty_transports::with_session(|s| {
    ///     s.set_read_idle_timeout(Some(Duration::from_secs(30)));
    ///     assert_eq!(s.options().get_read_idle_timeout(), Some(Duration::from_secs(30)));
    /// });
    /// ```
    pub fn set_read_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.core.set_read_idle_timeout(timeout);
    }

    /// The session's codec.
    ///
    /// ```
    /// getty_transports::with_session(|s| assert_eq!(*s.codec(), getty_codec::RawCodec));
    /// ```
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The session's codec, mutably (to change its settings mid-stream).
    ///
    /// ```
    /// getty_transports::with_session(|s| { let _codec: &mut getty_codec::RawCodec = s.codec_mut(); });
    /// ```
    pub fn codec_mut(&mut self) -> &mut C {
        &mut self.codec
    }

    /// The attribute of type `T`, if set.
    ///
    /// ```
    /// struct User(&'static str);
    /// getty_transports::with_session(|s| {
    ///     assert!(s.attribute::<User>().is_none());
    ///     s.set_attribute(User("alice"));
    ///     assert_eq!(s.attribute::<User>().unwrap().0, "alice");
    /// });
    /// ```
    pub fn attribute<V: 'static>(&self) -> Option<&V> {
        self.extras.as_ref()?.attributes.get()
    }

    /// The attribute of type `T`, mutably, if set.
    ///
    /// ```
    /// getty_transports::with_session(|s| {
    ///     s.set_attribute(0u32);
    ///     *s.attribute_mut::<u32>().unwrap() += 1;
    ///     assert_eq!(s.attribute::<u32>(), Some(&1));
    /// });
    /// ```
    pub fn attribute_mut<V: 'static>(&mut self) -> Option<&mut V> {
        self.extras.as_mut()?.attributes.get_mut()
    }

    /// Sets the attribute of type `T`, returning the previous one.
    ///
    /// ```
    /// getty_transports::with_session(|s| {
    ///     assert_eq!(s.set_attribute(1u8), None);
    ///     assert_eq!(s.set_attribute(2u8), Some(1));
    /// });
    /// ```
    pub fn set_attribute<V: 'static>(&mut self, value: V) -> Option<V> {
        self.extras_mut().attributes.insert::<V>(Box::new(value))
    }

    /// Removes and returns the attribute of type `T`.
    ///
    /// ```
    /// getty_transports::with_session(|s| {
    ///     s.set_attribute("tag");
    ///     assert_eq!(s.remove_attribute::<&str>(), Some("tag"));
    ///     assert_eq!(s.remove_attribute::<&str>(), None);
    /// });
    /// ```
    pub fn remove_attribute<V: 'static>(&mut self) -> Option<V> {
        self.extras.as_mut()?.attributes.remove()
    }

    /// A `Send + Clone` handle for writing to (and closing) this session from other threads;
    /// `None` outside a reactor callback.
    ///
    /// ```
    /// // Outside a reactor (this doc harness) there is no reactor to post to.
    /// getty_transports::with_session(|s| assert!(s.handle().is_none()));
    /// ```
    ///
    /// See [`SessionHandle`] for a whole example.
    pub fn handle(&mut self) -> Option<SessionHandle<C, T>>
    where
        C: 'static,
    {
        let (writable, id) = (self.core.is_writable(), self.core.id());
        let (closing, max_outbound) = (self.core.is_closing(), self.core.options.max_outbound);
        let core = HandleCore::current(
            &mut self.extras_mut().handle_state,
            writable,
            closing,
            id,
            max_outbound,
        )?;
        Some(SessionHandle::new(core))
    }

    pub(crate) fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// The session's inbox for the broadcasts of group `group`, made when it first joins
    /// it; only in a callback of the session's own reactor, which wakes it.
    pub(crate) fn inbox(&mut self, group: u64) -> Result<Rc<Inbox>, Error> {
        let inboxes = self.extras.as_ref().map(|e| e.inboxes.as_slice());
        if let Some(inbox) = inboxes
            .unwrap_or_default()
            .iter()
            .find(|i| i.group() == group)
        {
            return Ok(inbox.clone());
        }
        let (entry, _) = getty_reactor::current().ok_or(Error::Closed)?;
        let inbox = Rc::new(Inbox::new(group, entry));
        self.extras_mut().inboxes.push(inbox.clone());
        Ok(inbox)
    }

    /// Queues one group broadcast, framed for this session. Fails (queuing nothing) when
    /// it would take the queue past its hard bound.
    pub(crate) fn write_shared(&mut self, pending: &Pending) -> Result<(), Error> {
        self.check_open()?;
        let messages = self.queue_framed(pending.payload.len(), |framing, out| {
            framing
                .write_shared(pending.kind, &pending.payload, out)
                .map(|()| 1)
        })?;
        self.note_queued(messages);
        Ok(())
    }

    /// Frames `len` raw bytes with `frame`, within the hard bound: counted before they are
    /// queued when the framing knows what it adds, else (a compressed message, which only
    /// the tail takes) once framed, and then taken back if past the bound, as `write` does.
    /// So a message counts the same whichever call queues it.
    fn queue_framed(
        &mut self,
        len: usize,
        frame: impl FnOnce(&mut T::Framing, &mut Outbound) -> Result<u64, Error>,
    ) -> Result<u64, Error> {
        if let Some(overhead) = self.framing.overhead(len) {
            self.check_room(len + overhead)?;
            return frame(&mut self.framing, &mut self.out);
        }
        let queued = self.queued_bytes();
        let (tail_before, capacity_before) = (self.out.tail.len(), self.out.tail.capacity());
        let chunks_before = self.out.len() - tail_before;
        let messages = match frame(&mut self.framing, &mut self.out) {
            Ok(messages) => messages,
            Err(e) => {
                self.take_back(tail_before, capacity_before);
                return Err(e);
            }
        };
        debug_assert_eq!(
            self.out.len() - self.out.tail.len(),
            chunks_before,
            "tail only"
        );
        let added = self.out.tail.len() - tail_before;
        if queued + added > self.core.options.max_outbound {
            self.take_back(tail_before, capacity_before);
            return Err(self.queue_full(queued, added));
        }
        Ok(messages)
    }

    /// Takes back a message that was encoded into the tail and then refused (past the hard
    /// bound, or failed by the codec or the framing part way): its bytes, the room it grew
    /// the tail by (the tail had `len` bytes in `capacity`), and what it left in the
    /// framing's state (a compressor's window).
    #[cold]
    fn take_back(&mut self, len: usize, capacity: usize) {
        self.out.take_back_tail(len, capacity);
        self.framing.retract();
    }

    pub(crate) fn check_open(&self) -> Result<(), Error> {
        self.core.check_open()
    }

    /// Whether a payload handed over whole is queued as it is now: while the queue drains
    /// ([`Outbound::keeps_views`]).
    fn keeps_views(&self) -> bool {
        let blocked = self.extras.as_ref().is_some_and(|e| e.timer.is_blocked());
        Outbound::keeps_views(self.queued_bytes(), blocked)
    }

    fn check_room(&self, adding: usize) -> Result<(), Error> {
        let queued = self.queued_bytes();
        if queued + adding > self.core.options.max_outbound {
            return Err(self.queue_full(queued, adding));
        }
        Ok(())
    }

    fn queue_full(&self, queued: usize, adding: usize) -> Error {
        Error::QueueFull {
            queued,
            adding,
            max: self.core.options.max_outbound,
        }
    }

    /// The session's counters, for updating (boxed on first use).
    #[inline]
    pub(crate) fn counters_mut(&mut self) -> &mut Counters {
        // Not boxed yet: `last_read` is still the open time (see the field).
        let opened = self.last_read;
        self.counters.get_or_insert_with(|| {
            Box::new(Counters {
                last_write: opened,
                ..Counters::default()
            })
        })
    }

    /// The session's counters: zeros and its open time until it moved a byte.
    fn counters(&self) -> Counters {
        self.counters.as_deref().copied().unwrap_or(Counters {
            last_write: self.last_read,
            ..Counters::default()
        })
    }

    /// `n` bytes were read at `now`.
    #[inline]
    pub(crate) fn note_read(&mut self, n: usize, now: Stamp) {
        self.counters_mut().bytes_in += n as u64;
        self.last_read = now;
    }

    /// Reading resumed at `now`: read-idle time counts from then.
    pub(crate) fn restart_read_idle(&mut self, now: Stamp) {
        self.counters_mut();
        self.last_read = now;
    }

    /// When bytes were last read (the open time before any).
    pub(crate) fn last_read(&self) -> Stamp {
        self.last_read
    }

    fn note_queued(&mut self, messages: u64) {
        self.note_queued_now(messages, self.queued_bytes());
    }

    /// `messages` were queued, and `queued` bytes are queued now (as `queued_bytes` counts
    /// them).
    #[inline]
    fn note_queued_now(&mut self, messages: u64, queued: usize) {
        self.counters_mut().messages_out += messages;
        self.unreported_messages_out = self.unreported_messages_out.saturating_add(messages as u32);
        self.core.note_grown(queued);
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use getty_codec::{CodecError, Decoded, Decoder, Encoder};

    use super::*;
    use crate::framing::CodecFraming;

    /// Appends a message of the given length, then fails, as a codec can part way.
    struct FailsPartWay;

    impl Decoder for FailsPartWay {
        type Item = Bytes;

        fn decode(&mut self, _: &mut BytesMut) -> Result<Decoded<Bytes>, CodecError> {
            Ok(Decoded::NeedMore(None))
        }
    }

    impl Encoder<usize> for FailsPartWay {
        fn encode(&mut self, len: usize, dst: &mut BytesMut) -> Result<(), CodecError> {
            dst.resize(dst.len() + len, 7);
            Err(CodecError::malformed("failed part way"))
        }
    }

    /// A message the codec fails part way leaves neither its bytes nor the room it grew the
    /// queue by (on a stalled session that room would be held until the queue drains).
    #[test]
    fn a_message_the_codec_fails_part_way_leaves_nothing_queued_and_no_room_behind() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, peer) = listener.accept().unwrap();
        let mut session: Session<FailsPartWay> = Session::new(
            peer,
            #[cfg(unix)]
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            FailsPartWay,
            Default::default(),
            Instant::now(),
            CodecFraming,
        );
        session.out.tail.extend_from_slice(b"queued before");
        let capacity = session.out.tail.capacity();
        assert!(matches!(session.write(4 << 20), Err(Error::Codec(_))));
        assert_eq!(&session.out.tail[..], b"queued before");
        assert!(
            session.out.tail.capacity() <= capacity,
            "{} B of room left behind, up from {capacity}",
            session.out.tail.capacity()
        );
    }
}
