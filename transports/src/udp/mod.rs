//! UDP, both ways the kernel offers, on the same reactor, codecs and callbacks as TCP.
//!
//! - [`UdpEndpoint`]: an **unconnected** socket. One entry, one session for the whole
//!   socket; [`DatagramHandler::on_message`] gets each message with its sender's address,
//!   and [`DatagramSession::write_to`] queues a datagram to any peer. It serves as a
//!   server, and as an unconnected client (bind `127.0.0.1:0` and write to the server).
//! - [`UdpClient`]: **connected** sockets (`connect`, then `send`/`recv`: the kernel
//!   remembers the peer, drops datagrams from anyone else and skips the per-datagram route
//!   lookup). `connect` on UDP succeeds even when nobody listens, so the client verifies
//!   a dial as getty does: it refuses a self-connect, sends a probe datagram, and counts
//!   an ICMP "port unreachable" (`ECONNREFUSED`) within the probe wait as a failed dial,
//!   silence as success. ICMP errors later on reach [`DatagramHandler::on_error`]; the
//!   client keeps its sessions at a number and redials with backoff, like the TCP client.
//!
//! **One datagram is one message.** The codec decodes each datagram exactly once: a
//! datagram over `max_message_len`, one the codec rejects, one that ends inside a message
//! or carries bytes after it, and an empty one are dropped, counted in
//! [`DatagramStats::dropped_in`] and reported to `on_error`; the session carries on.
//! Receivers drop datagrams equal to the dial probe by default (counted in
//! [`DatagramStats::probes_dropped`]; see [`UdpOptions::drop_probe`]).
//!
//! **Batching.** On Linux a readable socket is read with `recvmmsg` (up to
//! [`UdpOptions::batch_size`] datagrams per call, each into its own pooled buffer, so the
//! messages are zero-copy views) and the replies queued in one wake-up leave with one
//! `sendmmsg`. A run of them to one destination, of one size up to 1,232 bytes, goes as one
//! message that the kernel cuts back into those datagrams (UDP generic segmentation
//! offload, `UDP_SEGMENT`): the receiver sees the same datagrams in the same order, and the
//! route, headers and device queue are paid once per run. It is asked of the kernel first,
//! and turned off for a socket whose path refuses it. Elsewhere, or with a batch size of
//! 1, datagrams move one per syscall.
//!
//! **Writes** queue whole datagrams with the same hard bound and watermarks as TCP
//! sessions ([`SessionOptions`]). When the kernel's send buffer is full the queue waits
//! for writable readiness: it never spins and never drops a datagram it accepted, except
//! one the kernel refuses twice (too big for the route, say), which is counted and
//! reported.
//!
//! ```
//! use std::net::SocketAddr;
//! use bytes::Bytes;
//! use getty_codec::RawCodec;
//! use getty_reactor::Reactor;
//! use getty_transports::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
//!
//! struct Echo;
//! impl DatagramHandler<RawCodec> for Echo {
//!     fn on_message(&mut self, session: &mut DatagramSession<RawCodec>, msg: Bytes, peer: SocketAddr) {
//!         let _ = session.write_to(peer, msg);
//!     }
//! }
//!
//! let endpoint = UdpEndpoint::bind("127.0.0.1:0", |_| Ok((RawCodec, Echo))).unwrap();
//! let addr = endpoint.local_addr();
//! let reactor = Reactor::start_thread("udp-echo", move |r| {
//!     r.spawn(endpoint);
//!     Ok(())
//! }).unwrap();
//!
//! let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
//! peer.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
//! peer.send_to(b"hello", addr).unwrap();
//! let mut buf = [0u8; 16];
//! let (n, from) = peer.recv_from(&mut buf).unwrap();
//! assert_eq!((&buf[..n], from), (&b"hello"[..], addr));
//!
//! reactor.handle().shutdown();
//! reactor.join().unwrap();
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use getty_codec::Decoder;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::SessionOptions;

mod batch;
pub(crate) mod client;
mod dial;
pub(crate) mod endpoint;
pub(crate) mod entry;
mod handle;
pub(crate) mod queue;
mod session;
pub(crate) mod socket;

pub use client::{UdpClient, UdpClientBuilder, UdpClientCommand, UdpClientKind};
pub use endpoint::{UdpEndpoint, UdpEndpointBuilder, UdpEndpointKind};
pub use handle::DatagramHandle;
pub use queue::{DropReason, DroppedDatagrams};
pub use session::{DatagramHandler, DatagramSession, DatagramStats};

/// The probe a [`UdpClient`] sends to verify a dial, unless told otherwise
/// ([`UdpClientBuilder::probe`]); receivers built with getty-rs drop it by default
/// ([`UdpOptions::drop_probe`]).
///
/// ```
/// assert_eq!(getty_transports::udp::DEFAULT_PROBE, b"getty-rs:udp-dial-probe");
/// ```
pub const DEFAULT_PROBE: &[u8] = b"getty-rs:udp-dial-probe";

/// Datagrams per `recvmmsg`/`sendmmsg` by default.
const DEFAULT_BATCH: usize = 32;

/// Options of a UDP socket and its datagram path, for endpoints and clients alike.
///
/// ```
/// use getty_transports::udp::UdpOptions;
///
/// let opts = UdpOptions::default()
///     .batch_size(16)
///     .recv_buffer_size(Some(1 << 20))
///     .drop_probe(None); // hand dial probes to the handler like any datagram
/// assert_eq!(opts.get_batch_size(), 16);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpOptions {
    pub(crate) datagram: DatagramSettings,
    pub(crate) drop_probe: Option<Bytes>,
}

impl Default for UdpOptions {
    /// Batches of 32 datagrams (where the kernel batches), [`DEFAULT_PROBE`] dropped, the
    /// kernel's buffer sizes.
    fn default() -> Self {
        UdpOptions {
            datagram: DatagramSettings::default(),
            drop_probe: Some(Bytes::from_static(DEFAULT_PROBE)),
        }
    }
}

/// The settings of every datagram socket (UDP or unix), with their defaults and bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatagramSettings {
    pub(crate) batch_size: usize,
    pub(crate) recv_buffer_size: Option<usize>,
    pub(crate) send_buffer_size: Option<usize>,
}

impl Default for DatagramSettings {
    /// Batches of 32 datagrams; the kernel's buffer sizes.
    fn default() -> Self {
        DatagramSettings {
            batch_size: DEFAULT_BATCH,
            recv_buffer_size: None,
            send_buffer_size: None,
        }
    }
}

impl DatagramSettings {
    /// A batch holds 1 to 64 datagrams.
    pub(crate) fn batch_size(self, n: usize) -> Self {
        DatagramSettings {
            batch_size: n.clamp(1, batch::MAX_BATCH),
            ..self
        }
    }

    /// Sets the buffer sizes that were given; the kernel's stay otherwise.
    pub(crate) fn apply_buffer_sizes(&self, socket: &Socket) -> io::Result<()> {
        if let Some(n) = self.recv_buffer_size {
            socket.set_recv_buffer_size(n)?;
        }
        if let Some(n) = self.send_buffer_size {
            socket.set_send_buffer_size(n)?;
        }
        Ok(())
    }
}

impl UdpOptions {
    /// Datagrams moved per `recvmmsg`/`sendmmsg` (default 32), as
    /// [`EndpointBuilder::batch_size`](crate::builder::EndpointBuilder::batch_size).
    ///
    /// ```
    /// let o = getty_transports::udp::UdpOptions::default().batch_size(1);
    /// assert_eq!(o.get_batch_size(), 1);
    /// ```
    pub fn batch_size(mut self, n: usize) -> Self {
        self.datagram = self.datagram.batch_size(n);
        self
    }

    /// Datagrams equal to these bytes are dial probes: dropped (at debug log level) and
    /// counted in [`DatagramStats::probes_dropped`] instead of reaching the handler.
    /// Default [`DEFAULT_PROBE`]; `None` hands them to the codec like any datagram. Set it
    /// to whatever probe your clients send (a Go getty client sends `connect-ping`).
    ///
    /// ```
    /// let o = getty_transports::udp::UdpOptions::default()
    ///     .drop_probe(Some(bytes::Bytes::from_static(b"connect-ping")));
    /// assert_eq!(o.get_drop_probe().unwrap().as_ref(), b"connect-ping");
    /// ```
    pub fn drop_probe(mut self, probe: Option<Bytes>) -> Self {
        self.drop_probe = probe;
        self
    }

    /// SO_RCVBUF (`None`: the kernel's default), as
    /// [`EndpointBuilder::recv_buffer_size`](crate::builder::EndpointBuilder::recv_buffer_size).
    ///
    /// ```
    /// let o = getty_transports::udp::UdpOptions::default().recv_buffer_size(Some(4 << 20));
    /// assert_eq!(o.get_recv_buffer_size(), Some(4 << 20));
    /// ```
    pub fn recv_buffer_size(mut self, bytes: Option<usize>) -> Self {
        self.datagram.recv_buffer_size = bytes;
        self
    }

    /// SO_SNDBUF (`None`: the kernel's default), as
    /// [`EndpointBuilder::send_buffer_size`](crate::builder::EndpointBuilder::send_buffer_size).
    ///
    /// ```
    /// let o = getty_transports::udp::UdpOptions::default().send_buffer_size(Some(1 << 20));
    /// assert_eq!(o.get_send_buffer_size(), Some(1 << 20));
    /// ```
    pub fn send_buffer_size(mut self, bytes: Option<usize>) -> Self {
        self.datagram.send_buffer_size = bytes;
        self
    }

    /// See [`batch_size`](Self::batch_size).
    ///
    /// ```
    /// assert_eq!(getty_transports::udp::UdpOptions::default().get_batch_size(), 32);
    /// ```
    pub fn get_batch_size(&self) -> usize {
        self.datagram.batch_size
    }

    /// See [`drop_probe`](Self::drop_probe).
    ///
    /// ```
    /// use getty_transports::udp::{UdpOptions, DEFAULT_PROBE};
    /// assert_eq!(UdpOptions::default().get_drop_probe().unwrap().as_ref(), DEFAULT_PROBE);
    /// ```
    pub fn get_drop_probe(&self) -> Option<&Bytes> {
        self.drop_probe.as_ref()
    }

    /// See [`recv_buffer_size`](Self::recv_buffer_size).
    ///
    /// ```
    /// assert_eq!(getty_transports::udp::UdpOptions::default().get_recv_buffer_size(), None);
    /// ```
    pub fn get_recv_buffer_size(&self) -> Option<usize> {
        self.datagram.recv_buffer_size
    }

    /// See [`send_buffer_size`](Self::send_buffer_size).
    ///
    /// ```
    /// assert_eq!(getty_transports::udp::UdpOptions::default().get_send_buffer_size(), None);
    /// ```
    pub fn get_send_buffer_size(&self) -> Option<usize> {
        self.datagram.send_buffer_size
    }

    /// A non-blocking UDP socket bound to `local`, with these options applied.
    fn bind_socket(&self, local: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
        #[cfg(unix)]
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        #[cfg(not(unix))]
        let _ = reuse_port;
        self.datagram.apply_buffer_sizes(&socket)?;
        socket.set_nonblocking(true)?;
        socket.bind(&local.into())?;
        Ok(socket)
    }

    fn entry_config(&self, close_on_peer_error: bool) -> entry::DatagramConfig {
        entry::DatagramConfig {
            batch: self.datagram.batch_size,
            mmsg: true,
            drop_probe: self.drop_probe.clone(),
            answer_probe: false,
            close_on_peer_error,
            unix: false,
            parked_limit: None,
            parked_total: None,
        }
    }
}

/// What the setup hook gets for a new datagram socket (getty's `NewSessionCallback`): its
/// addresses, the socket (for options this crate does not wrap) and the session's options
/// to adjust. The hook returns the codec and handler, or an error to refuse the socket.
///
/// ```
/// use std::net::SocketAddr;
/// use getty_codec::RawCodec;
/// use getty_transports::udp::{DatagramHandler, DatagramSession, DatagramSetup, UdpEndpoint};
///
/// struct Sink;
/// impl DatagramHandler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {}
/// }
///
/// let endpoint = UdpEndpoint::bind("127.0.0.1:0", |setup: &mut DatagramSetup<'_>| {
///     assert!(setup.peer_addr().is_none()); // an endpoint is unconnected
///     setup.socket().set_broadcast(true)?;
///     let options = setup.options();
///     *options = options.clone().max_message_len(1500);
///     Ok((RawCodec, Sink))
/// }).unwrap();
/// ```
pub struct DatagramSetup<'a, A = SocketAddr> {
    pub(crate) local: A,
    pub(crate) peer: Option<A>,
    pub(crate) socket: SockRef<'a>,
    /// Shared with other sessions until the hook asks to change it.
    pub(crate) options: &'a mut Arc<SessionOptions>,
}

impl<'a, A: Clone> DatagramSetup<'a, A> {
    /// The socket's local address.
    ///
    /// See the [type-level example](DatagramSetup).
    pub fn local_addr(&self) -> A {
        self.local.clone()
    }

    /// The connected peer (a client socket), or `None` (an endpoint).
    ///
    /// See the [type-level example](DatagramSetup).
    pub fn peer_addr(&self) -> Option<A> {
        self.peer.clone()
    }

    /// The socket, for `setsockopt`.
    ///
    /// See the [type-level example](DatagramSetup).
    pub fn socket(&self) -> &SockRef<'a> {
        &self.socket
    }

    /// The new session's options, to change.
    ///
    /// See the [type-level example](DatagramSetup).
    pub fn options(&mut self) -> &mut SessionOptions {
        Arc::make_mut(self.options)
    }
}

/// Builds the session of a freshly set up datagram socket.
pub(crate) fn new_session<S: socket::DatagramSocket, C>(
    socket: &S,
    peer: Option<S::Addr>,
    codec: C,
    options: Arc<SessionOptions>,
) -> io::Result<DatagramSession<C, S::Addr>> {
    let local = socket.local_addr()?;
    let max_payload = match &peer {
        Some(peer) => S::max_payload_to(peer, socket.max_payload()),
        None => socket.max_payload(),
    };
    Ok(DatagramSession::new(
        local,
        peer,
        #[cfg(unix)]
        std::os::fd::AsRawFd::as_raw_fd(&*socket.sock()),
        codec,
        max_payload,
        session::DestinationRules {
            is_unnamed: S::is_unnamed,
            max_payload_to: S::max_payload_to,
        },
        options,
        std::time::Instant::now(),
    ))
}

/// Runs `f` in the `on_open` of an unconnected endpoint on `127.0.0.1`, on a fresh
/// reactor: the harness of this module's documentation examples.
///
/// ```
/// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |s| assert!(!s.is_closing()));
/// ```
#[doc(hidden)]
pub fn with_udp_session<C, F>(codec: C, f: F)
where
    C: Decoder + 'static,
    F: FnOnce(&mut DatagramSession<C>) + 'static,
{
    struct Run<F>(Option<F>);
    impl<C, F> DatagramHandler<C> for Run<F>
    where
        C: Decoder + 'static,
        F: FnOnce(&mut DatagramSession<C>) + 'static,
    {
        fn on_open(&mut self, session: &mut DatagramSession<C>) -> io::Result<()> {
            if let Some(f) = self.0.take() {
                f(session);
            }
            Ok(())
        }
        fn on_message(&mut self, _: &mut DatagramSession<C>, _: C::Item, _: SocketAddr) {}
    }
    let endpoint = UdpEndpoint::bind("127.0.0.1:0", move |_| Ok((codec, Run(Some(f)))))
        .expect("a loopback endpoint for the example");
    let mut reactor = getty_reactor::Reactor::new().expect("a reactor for the example");
    reactor.spawn(endpoint);
    // Dropping the reactor ends the endpoint (its on_close runs).
}
