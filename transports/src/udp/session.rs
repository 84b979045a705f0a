//! What a datagram handler sees: the session of one socket (an endpoint, or one connected
//! client socket), its outbound queue and its counters.

use std::any::Any;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use getty_codec::{Decoder, Encoder};

use super::queue::{DatagramQueue, DATAGRAM_OVERHEAD};
use crate::core::{self, Attributes, SessionCore};
use crate::handle::{HandleCore, HandleState, Room};
use crate::udp::DatagramHandle;
use crate::{Error, SessionOptions};

mod handler;
mod queueing;
mod stats;

pub use handler::DatagramHandler;
pub use stats::DatagramStats;

/// One datagram socket as its handler sees it: an unconnected endpoint serving any number
/// of peers, or one connected client socket. Write to it, close it, read its stats, keep
/// typed attributes on it.
///
/// Writes queue whole datagrams; the reactor sends them (up to a batch per `sendmmsg`) when
/// the callback returns. One write is one datagram: a message the codec encodes to more
/// than the socket can carry in one datagram is refused, not split. The watermarks and
/// `max_outbound` charge every datagram 64 bytes on top of its payload (see
/// [`queued_bytes`](Self::queued_bytes)).
///
/// `A` is the peers' address type: [`SocketAddr`] for UDP (the default), `UnixAddr` for
/// unix datagram sockets. A stream [`Session`](crate::Session) names a transport marker
/// instead because TCP and WebSocket share an address type and differ in framing; a
/// datagram socket has one framing (a datagram is a message), so its address type alone
/// says which transport it is.
///
/// ```
/// use getty_codec::LengthFieldCodec;
/// getty_transports::udp::with_udp_session(LengthFieldCodec::default(), |session| {
///     let peer = "127.0.0.1:9".parse().unwrap();
///     session.write_to(peer, &b"hello"[..]).unwrap();
///     assert_eq!(session.queued_datagrams(), 1);
///     assert_eq!(session.queued_bytes(), 4 + 5);
/// });
/// ```
pub struct DatagramSession<C, A = SocketAddr> {
    /// What every session holds: id, options, close request, writability.
    pub(crate) core: SessionCore,
    local: A,
    peer: Option<A>,
    codec: C,
    max_payload: usize,
    destinations: DestinationRules<A>,
    /// Bytes of receive buffers the entry holds right now (kept up to date by the entry).
    pub(crate) recv_held: usize,
    pub(crate) out: DatagramQueue<A>,
    pub(crate) stats: DatagramStats,
    /// `Send`, unlike a TCP session's, so that an endpoint built on one thread can be
    /// spawned into a reactor on another.
    attributes: Attributes<dyn Any + Send>,
    /// Shared with the session's handles, once one was made.
    pub(crate) handle_state: Option<Arc<HandleState>>,
    /// The client that keeps this session (a `UdpClient`'s), for `close_client`.
    pub(crate) owner: Option<getty_reactor::Recipient<crate::commands::OwnerNote>>,
}

/// What a session knows of destinations from its socket's type (it is not generic over
/// the socket itself).
pub(crate) struct DestinationRules<A> {
    /// True for a destination nothing can be sent to (an unnamed unix socket).
    pub(crate) is_unnamed: fn(&A) -> bool,
    /// The largest payload to a destination, given the socket's largest.
    pub(crate) max_payload_to: fn(&A, usize) -> usize,
}

impl<C, A: Clone + PartialEq + std::fmt::Debug> DatagramSession<C, A> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        local: A,
        peer: Option<A>,
        #[cfg(unix)] fd: std::os::fd::RawFd,
        codec: C,
        max_payload: usize,
        destinations: DestinationRules<A>,
        options: Arc<SessionOptions>,
        now: Instant,
    ) -> Self {
        DatagramSession {
            core: SessionCore::new(
                options,
                #[cfg(unix)]
                fd,
            ),
            local,
            peer,
            codec,
            max_payload,
            destinations,
            recv_held: 0,
            out: DatagramQueue::default(),
            stats: DatagramStats::new(now),
            attributes: Attributes::default(),
            owner: None,
            handle_state: None,
        }
    }

    /// The session's id, unique in the process (shared with TCP sessions' ids).
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| assert!(s.id() > 0));
    /// ```
    pub fn id(&self) -> u64 {
        self.core.id()
    }

    /// The socket's local address.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     assert!(s.local_addr().ip().is_loopback());
    /// });
    /// ```
    pub fn local_addr(&self) -> A {
        self.local.clone()
    }

    /// The peer a connected socket talks to; `None` for an unconnected endpoint.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     assert_eq!(s.peer_addr(), None); // the harness runs an unconnected endpoint
    /// });
    /// ```
    pub fn peer_addr(&self) -> Option<A> {
        self.peer.clone()
    }

    /// True for a connected socket (a `UdpClient` session).
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| assert!(!s.is_connected()));
    /// ```
    pub fn is_connected(&self) -> bool {
        self.peer.is_some()
    }

    /// The largest datagram payload this socket can send. A dual-stack (`[::]`) endpoint
    /// answers IPv6's 65,527 B; to an IPv4 peer it can send 65,507 B, and a larger write to
    /// one is refused with `Error::MessageTooLong` as any other over the limit.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     assert_eq!(s.max_datagram_len(), 65_507); // UDP over IPv4
    /// });
    /// ```
    pub fn max_datagram_len(&self) -> usize {
        self.max_payload
    }

    /// The socket, for options this crate does not wrap (`setsockopt` only: reading or
    /// writing through it would bypass the session).
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     s.socket().set_broadcast(true).unwrap();
    /// });
    /// ```
    #[cfg(unix)]
    pub fn socket(&self) -> socket2::SockRef<'_> {
        self.core.socket()
    }

    /// Encodes `message` as one datagram to the connected peer.
    ///
    /// Fails with `Error::Io` (`NotConnected`) on an unconnected endpoint (use
    /// [`write_to`](Self::write_to)), `Error::Closed` once the session is closing,
    /// `Error::MessageTooLong` when the datagram would exceed
    /// [`max_datagram_len`](Self::max_datagram_len), `Error::QueueFull` when it would take
    /// the queue past its hard bound, and `Error::Codec` when the codec cannot encode it.
    /// Nothing is queued when it fails.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     // The harness's endpoint is unconnected: it needs a destination.
    ///     assert!(s.write(&b"x"[..]).is_err());
    /// });
    /// ```
    pub fn write<T>(&mut self, message: T) -> Result<(), Error>
    where
        C: Encoder<T>,
    {
        if self.peer.is_none() {
            return Err(not_connected());
        }
        self.queue(None, message)
    }

    /// A `Send + Clone` handle for writing to (and closing) this session from other threads;
    /// `None` outside a reactor callback.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     let handle = s.handle().expect("inside a reactor callback");
    ///     assert_eq!(handle.session_id(), s.id());
    ///     assert!(!handle.is_closed());
    /// });
    /// ```
    ///
    /// See [`DatagramHandle`] for a whole example.
    pub fn handle(&mut self) -> Option<DatagramHandle<C, A>>
    where
        C: 'static,
        A: Send + 'static,
    {
        let (writable, id) = (self.core.is_writable(), self.core.id());
        let (closing, max_outbound) = (self.core.is_closing(), self.core.options.max_outbound);
        let core =
            HandleCore::current(&mut self.handle_state, writable, closing, id, max_outbound)?;
        Some(DatagramHandle::new(core))
    }

    /// The reactor this session runs on, to stop it from a handler
    /// ([`shutdown_graceful`](getty_reactor::ReactorHandle::shutdown_graceful) or
    /// [`shutdown`](getty_reactor::ReactorHandle::shutdown)) or to post work to it; `None`
    /// outside a reactor callback. As [`Session::reactor`](crate::Session::reactor).
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use std::time::Duration;
    /// use bytes::Bytes;
    /// use getty_codec::RawCodec;
    /// use getty_transports::udp::{DatagramHandler, DatagramSession};
    ///
    /// /// A control socket: "quit" from any peer stops the reactor, gracefully.
    /// struct Control;
    /// impl DatagramHandler<RawCodec> for Control {
    ///     fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, _: SocketAddr) {
    ///         if &msg[..] == b"quit" {
    ///             let reactor = s.reactor().expect("in a callback");
    ///             let _ = reactor.shutdown_graceful(Duration::from_secs(1));
    ///         }
    ///     }
    /// }
    /// # getty_transports::udp::with_udp_session(RawCodec, |s| assert!(s.reactor().is_some()));
    /// ```
    pub fn reactor(&self) -> Option<getty_reactor::ReactorHandle> {
        core::current_reactor()
    }

    /// Ends the client that keeps this session (a [`UdpClient`](crate::udp::UdpClient)'s):
    /// it stops redialling and closes every session it keeps, this one included. Returns
    /// false, doing nothing, for an endpoint that no client keeps. As on a stream
    /// session, [`close`](Self::close) ends only this session, and the client dials a
    /// replacement.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use getty_codec::{Bytes, RawCodec};
    /// use getty_transports::udp::{DatagramHandler, DatagramSession};
    ///
    /// /// Stops the whole client when the server says so.
    /// struct Subscriber;
    /// impl DatagramHandler<RawCodec> for Subscriber {
    ///     fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, _: SocketAddr) {
    ///         if &msg[..] == b"done" {
    ///             s.close_client();
    ///         }
    ///     }
    /// }
    ///
    /// // An endpoint of its own (as here, from the doc harness) has no client to close.
    /// getty_transports::udp::with_udp_session(RawCodec, |s| assert!(!s.close_client()));
    /// ```
    pub fn close_client(&mut self) -> bool {
        core::close_client(self.owner)
    }

    /// Encodes `message` as one datagram to `peer`. On a connected socket `peer` must be
    /// the connected peer. Fails as [`write`](Self::write) does, and with
    /// [`Error::UnnamedPeer`] when `peer` is an unnamed unix socket (an unbound sender:
    /// its datagrams arrive, but there is no address to answer to).
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     s.write_to("127.0.0.1:9".parse().unwrap(), &b"ping"[..]).unwrap();
    /// });
    /// ```
    pub fn write_to<T>(&mut self, peer: A, message: T) -> Result<(), Error>
    where
        C: Encoder<T>,
    {
        let peer = self.destination(peer)?;
        self.queue(peer, message)
    }

    /// Queues raw bytes as one datagram to the connected peer, bypassing the codec. Large
    /// buffers are not copied.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     assert!(s.write_bytes(bytes::Bytes::from_static(b"raw")).is_err()); // unconnected
    /// });
    /// ```
    pub fn write_bytes(&mut self, bytes: impl Into<Bytes>) -> Result<(), Error> {
        if self.peer.is_none() {
            return Err(not_connected());
        }
        self.queue_bytes(None, bytes.into())
    }

    /// Queues raw bytes as one datagram to `peer`, bypassing the codec. Large buffers are
    /// not copied.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     let peer = "127.0.0.1:9".parse().unwrap();
    ///     s.write_bytes_to(peer, vec![0u8; 10_000]).unwrap();
    ///     assert_eq!(s.queued_bytes(), 10_000);
    /// });
    /// ```
    pub fn write_bytes_to(&mut self, peer: A, bytes: impl Into<Bytes>) -> Result<(), Error> {
        let peer = self.destination(peer)?;
        self.queue_bytes(peer, bytes.into())
    }

    /// Ends the session gracefully: stop reading, send what is queued (within the write
    /// stall timeout), close. `on_close` follows.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     s.close();
    ///     assert!(s.is_closing());
    /// });
    /// ```
    pub fn close(&mut self) {
        self.core.close();
        // At once (see `Session::close`).
        if let Some(state) = &self.handle_state {
            state.mark_closing();
        }
    }

    /// Ends the session now, discarding what is queued.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     s.abort();
    ///     assert!(s.is_closing());
    /// });
    /// ```
    pub fn abort(&mut self) {
        self.core.abort();
    }

    /// True once `close` or `abort` was called, or the session is ending for another
    /// reason.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| assert!(!s.is_closing()));
    /// ```
    pub fn is_closing(&self) -> bool {
        self.core.is_closing()
    }

    /// False while the outbound queue is above the high watermark.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| assert!(s.is_writable()));
    /// ```
    pub fn is_writable(&self) -> bool {
        self.core.is_writable()
    }

    /// Payload bytes queued and not yet sent. The watermarks and `max_outbound` count them
    /// plus 64 bytes for every queued datagram, the cost of holding one however small, so
    /// that empty datagrams are bounded too: a session above its high watermark holds
    /// `queued_bytes() + 64 * queued_datagrams()` (parked ones apart) over it. On an
    /// unconnected unix datagram endpoint, datagrams held for a parked destination (one
    /// whose receiver is full) are not in it: they have bounds of their own, so that a slow
    /// receiver never makes the endpoint unwritable for the others (see
    /// [`parked_bytes`](Self::parked_bytes)).
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     let peer = "127.0.0.1:9".parse().unwrap();
    ///     s.write_bytes_to(peer, bytes::Bytes::new()).unwrap();
    ///     s.write_bytes_to(peer, &b"abc"[..]).unwrap();
    ///     assert_eq!(s.queued_bytes(), 3); // what `max_outbound` counts: 3 + 2 * 64
    ///     assert_eq!(s.queued_datagrams(), 2);
    /// });
    /// ```
    pub fn queued_bytes(&self) -> usize {
        self.out.payload_bytes()
    }

    /// What the session can take now of its handles' writes.
    pub(crate) fn handle_room(&self) -> Room {
        let queued = self.out.len();
        Room {
            writable: self.core.is_writable() || queued <= self.core.options.low_watermark,
            queued,
            max_outbound: self.core.options.max_outbound,
        }
    }

    /// Payload bytes held for parked destinations of an unconnected unix datagram endpoint
    /// (receivers whose queue is full; see `UnixDatagramEndpointBuilder::bind`); always 0
    /// elsewhere. They count in neither the watermarks nor `max_outbound`; their own bounds
    /// count them plus 64 bytes for every datagram held.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| assert_eq!(s.parked_bytes(), 0));
    /// ```
    pub fn parked_bytes(&self) -> usize {
        self.out.parked_bytes()
    }

    /// Datagrams queued and not yet sent, parked ones included.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| assert_eq!(s.queued_datagrams(), 0));
    /// ```
    pub fn queued_datagrams(&self) -> usize {
        self.out.datagrams()
    }

    /// The session's counters.
    ///
    /// See [`DatagramStats`].
    pub fn stats(&self) -> DatagramStats {
        self.stats
    }

    /// Bytes of receive buffers the socket holds now: a batch of pooled slots (and the part
    /// of its overflow regions that large datagrams were written to) while datagrams are
    /// being read; none once the socket was read dry, as an idle socket holds no buffers.
    /// Messages the handler keeps are its own and not counted.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     // Opened, nothing received yet: no receive buffers.
    ///     assert_eq!(s.receive_buffer_bytes(), 0);
    /// });
    /// ```
    pub fn receive_buffer_bytes(&self) -> usize {
        self.recv_held
    }

    /// The session's options.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     assert_eq!(s.options().get_max_message_len(), 1 << 20);
    /// });
    /// ```
    pub fn options(&self) -> &SessionOptions {
        self.core.options()
    }

    /// Changes the cron period from now on (`None` stops the cron).
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     s.set_cron_period(Some(std::time::Duration::from_secs(1)));
    ///     assert_eq!(s.options().get_cron_period(), Some(std::time::Duration::from_secs(1)));
    /// });
    /// ```
    pub fn set_cron_period(&mut self, period: Option<Duration>) {
        self.core.set_cron_period(period);
    }

    /// Changes the read-idle timeout from now on (`None` disables it). When nothing is read
    /// for that long the session ends with `Error::ReadIdle`.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     s.set_read_idle_timeout(Some(std::time::Duration::from_secs(30)));
    /// });
    /// ```
    pub fn set_read_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.core.set_read_idle_timeout(timeout);
    }

    /// The session's codec.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     assert_eq!(*s.codec(), getty_codec::RawCodec);
    /// });
    /// ```
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The session's codec, mutably.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     let _codec: &mut getty_codec::RawCodec = s.codec_mut();
    /// });
    /// ```
    pub fn codec_mut(&mut self) -> &mut C {
        &mut self.codec
    }

    /// The attribute of type `T`, if set.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     s.set_attribute(7u32);
    ///     assert_eq!(s.attribute::<u32>(), Some(&7));
    /// });
    /// ```
    pub fn attribute<T: 'static>(&self) -> Option<&T> {
        self.attributes.get()
    }

    /// The attribute of type `T`, mutably, if set.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     s.set_attribute(1u64);
    ///     *s.attribute_mut::<u64>().unwrap() += 1;
    ///     assert_eq!(s.attribute::<u64>(), Some(&2));
    /// });
    /// ```
    pub fn attribute_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.attributes.get_mut()
    }

    /// Sets the attribute of type `T`, returning the previous one. Attributes of a datagram
    /// session must be `Send` (state that is not can live in the handler).
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     assert_eq!(s.set_attribute("a"), None);
    ///     assert_eq!(s.set_attribute("b"), Some("a"));
    /// });
    /// ```
    pub fn set_attribute<T: Send + 'static>(&mut self, value: T) -> Option<T> {
        self.attributes.insert::<T>(Box::new(value))
    }

    /// Removes and returns the attribute of type `T`.
    ///
    /// ```
    /// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| {
    ///     s.set_attribute(3i8);
    ///     assert_eq!(s.remove_attribute::<i8>(), Some(3));
    ///     assert_eq!(s.attribute::<i8>(), None);
    /// });
    /// ```
    pub fn remove_attribute<T: 'static>(&mut self) -> Option<T> {
        self.attributes.remove()
    }

    pub(crate) fn decoder(&mut self) -> &mut C {
        &mut self.codec
    }

    pub(crate) fn connected_peer(&self) -> Option<&A> {
        self.peer.as_ref()
    }
}

fn not_connected() -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::NotConnected,
        "an unconnected endpoint needs a destination: use write_to",
    ))
}
