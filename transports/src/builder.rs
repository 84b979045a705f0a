//! The builders: one per role, each the settings every transport of that role shares plus
//! the transport's own part `K`.
//!
//! - [`ClientBuilder`] keeps N sessions to a peer and redials them: `connection_number`,
//!   `reconnect_backoff`, `max_consecutive_failures`, `session_options` for every client;
//!   `connect_timeout` and `socket_options` for the stream clients (TCP, WebSocket, unix).
//! - [`ServerBuilder`] listens: `backlog`, `socket_options`, `session_options` for every
//!   stream server; `reuse_port` and `tls` for those on TCP (TCP, WebSocket).
//! - [`EndpointBuilder`] opens a datagram socket: `batch_size`, `recv_buffer_size`,
//!   `send_buffer_size`, `session_options` for UDP and unix datagram endpoints.
//!
//! Each shared setter is documented here, once; the transport's own setters and its
//! `build`/`bind` are documented on its part. A builder is named by its transport
//! ([`TcpClientBuilder`](crate::tcp::TcpClientBuilder), ...) and made by its transport's
//! `builder()`; its setters need no import:
//!
//! ```
//! use std::time::Duration;
//! use getty_codec::RawCodec;
//! use getty_transports::{tcp::TcpClient, unix::UnixClient, Handler, Session, Unix};
//!
//! struct Sink;
//! impl Handler<RawCodec> for Sink {
//!     fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {}
//! }
//! impl Handler<RawCodec, Unix> for Sink {
//!     fn on_message(&mut self, _: &mut Session<RawCodec, Unix>, _: bytes::Bytes) {}
//! }
//!
//! let (min, max) = (Duration::from_millis(50), Duration::from_secs(2));
//! let tcp = TcpClient::builder().connection_number(4).reconnect_backoff(min, max);
//! let unix = UnixClient::builder().connection_number(4).reconnect_backoff(min, max);
//! let tcp = tcp.build("127.0.0.1:9", |_| Ok((RawCodec, Sink))).unwrap();
//! let unix = unix.build("/run/app.sock", |_| Ok((RawCodec, Sink))).unwrap();
//! ```

use std::time::Duration;

use crate::client::ClientConfig;
use crate::listener::ListenOptions;
use crate::options::clamp_timeout;
use crate::redial::RedialPolicy;
use crate::setup::FilterFactory;
use crate::udp::DatagramSettings;
use crate::{SessionOptions, SocketOptions};

/// Configures a client: the settings every client shares, and the part `K` of its
/// transport. Name it by its transport: [`TcpClientBuilder`](crate::tcp::TcpClientBuilder),
/// [`WsClientBuilder`], [`UdpClientBuilder`](crate::udp::UdpClientBuilder),
/// `UnixClientBuilder`.
///
/// The example below dials a loopback listener with two connections, socket options and
/// session options, and reads them back in the setup hook of each connection
/// ([`Setup::socket`](crate::Setup::socket), [`Setup::options`](crate::Setup::options)):
///
/// ```
/// use std::time::Duration;
/// use getty_codec::RawCodec;
/// use getty_reactor::Reactor;
/// use getty_transports::{tcp::TcpClient, Handler, Session, SessionOptions, SocketOptions};
///
/// struct Sink;
/// impl Handler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {}
/// }
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let (tx, rx) = std::sync::mpsc::channel();
/// let client = TcpClient::builder()
///     .connection_number(2)
///     .socket_options(SocketOptions::default().nodelay(false))
///     .session_options(SessionOptions::default().max_message_len(4096))
///     .build(listener.local_addr().unwrap(), move |setup| {
///         let nodelay = setup.socket().tcp_nodelay()?;
///         let _ = tx.send((nodelay, setup.options().get_max_message_len()));
///         Ok((RawCodec, Sink))
///     })
///     .unwrap();
/// let reactor = Reactor::start_thread("client", move |r| { r.spawn(client); Ok(()) }).unwrap();
/// // Two connections, each with the options set (the kernel queues them unaccepted).
/// for _ in 0..2 {
///     assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), (false, 4096));
/// }
/// reactor.handle().shutdown();
/// reactor.join().unwrap();
/// ```
// Without the feature, a link to what it gates points to the table of features.
#[cfg_attr(
    feature = "ws",
    doc = "[`WsClientBuilder`]: crate::ws::WsClientBuilder"
)]
#[cfg_attr(not(feature = "ws"), doc = "[`WsClientBuilder`]: crate#features")]
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder<K> {
    pub(crate) dial: DialSettings,
    pub(crate) session_options: SessionOptions,
    /// The transport's own settings.
    pub(crate) kind: K,
}

impl<K> ClientBuilder<K> {
    /// How many sessions to keep open to the peer (default 1; at least 1). A session that
    /// ends is redialled.
    ///
    /// See the [type-level example](ClientBuilder).
    pub fn connection_number(mut self, n: usize) -> Self {
        self.dial = self.dial.connection_number(n);
        self
    }

    /// Redial delays: the first after `min`, doubling per consecutive failure up to `max`,
    /// each drawn at random from its upper half so that many clients do not redial in step
    /// (defaults 100 ms and 5 s; `min` is at least 1 ms, and `max` at least `min`). A
    /// session that the peer (or an error) ends within a second of opening, as a server
    /// that accepts and closes at once does, doubles the delay too, until a session lasts
    /// longer; it does not count towards
    /// [`max_consecutive_failures`](Self::max_consecutive_failures). A session this side
    /// closes (`Session::close`), like one that lasted, resets it.
    ///
    /// Two clients of a closed port, each allowed two failed dials
    /// ([`max_consecutive_failures`](Self::max_consecutive_failures)): one redials within
    /// milliseconds and ends; the other, whose `max` below `min` is raised to `min`, waits
    /// at least 30 s before its second dial, so it is still there.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use getty_codec::RawCodec;
    /// # use getty_reactor::Reactor;
    /// # use getty_transports::{tcp::TcpClient, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<RawCodec> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {} }
    /// let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    /// let client = |min, max| TcpClient::builder().reconnect_backoff(min, max)
    ///     .max_consecutive_failures(Some(2)).build(closed, |_| Ok((RawCodec, Sink))).unwrap();
    /// let (quick, patient) = (client(Duration::from_millis(1), Duration::from_millis(2)),
    ///                         client(Duration::from_secs(60), Duration::ZERO));
    /// let reactor = Reactor::start_thread("r", |_| Ok(())).unwrap();
    /// let (quick, patient) = reactor.handle().query(move |s| (s.spawn(quick), s.spawn(patient))).unwrap();
    /// let alive = |id| reactor.handle().query(move |s| s.is_alive(id)).unwrap();
    /// for _ in 0..1000 {
    ///     if !alive(quick) { break; }
    ///     std::thread::sleep(Duration::from_millis(10));
    /// }
    /// assert!(!alive(quick) && alive(patient));
    /// # reactor.handle().shutdown();
    /// # reactor.join().unwrap();
    /// ```
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.dial.redial = self.dial.redial.backoff(min, max);
        self
    }

    /// Gives up, and ends the client, after this many consecutive failed dials (default:
    /// never). A session that fails its handshake (TLS, the WebSocket upgrade) counts as a
    /// failed dial.
    ///
    /// See [`reconnect_backoff`](Self::reconnect_backoff) for an example: a client that
    /// gives up.
    pub fn max_consecutive_failures(mut self, limit: Option<u32>) -> Self {
        self.dial.redial = self.dial.redial.max_failures(limit);
        self
    }

    /// The options every session starts with (the setup hook may change them). The
    /// handshake timeout bounds a TLS handshake and a WebSocket upgrade; the max message
    /// length bounds WebSocket frames and messages, and datagrams.
    ///
    /// See the [type-level example](ClientBuilder): the setup hook reads them back.
    pub fn session_options(mut self, options: SessionOptions) -> Self {
        self.session_options = options;
        self
    }
}

impl<K: StreamClientKind> ClientBuilder<K> {
    /// How long a connect may take (default 3 s; at least 1 ms), measured by a reactor
    /// timer. A TLS handshake or WebSocket upgrade that follows has the session's handshake
    /// timeout.
    ///
    /// A listener whose accept queue is full (Linux drops the SYNs): the connect hangs
    /// until the timeout fails it, and the client, allowed one failure, ends well before
    /// the default 3 s would have passed.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use getty_codec::RawCodec;
    /// # use getty_reactor::Reactor;
    /// # use getty_transports::{tcp::TcpClient, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<RawCodec> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {} }
    /// # use socket2::{Domain, Socket, Type};
    /// let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    /// listener.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    /// listener.listen(0).unwrap(); // room for one connection, which this one takes:
    /// let full = listener.local_addr().unwrap().as_socket().unwrap();
    /// let _queued = std::net::TcpStream::connect(full).unwrap();
    /// let client = TcpClient::builder()
    ///     .connect_timeout(Duration::from_millis(50))
    ///     .max_consecutive_failures(Some(1))
    ///     .build(full, |_| Ok((RawCodec, Sink)))
    ///     .unwrap();
    /// let reactor = Reactor::start_thread("r", |_| Ok(())).unwrap();
    /// let id = reactor.handle().query(move |s| s.spawn(client)).unwrap();
    /// let alive = || reactor.handle().query(move |s| s.is_alive(id)).unwrap();
    /// for _ in 0..250 {
    ///     if !alive() { break; }
    ///     std::thread::sleep(Duration::from_millis(10));
    /// }
    /// assert!(!alive(), "still connecting after 2.5 s");
    /// # reactor.handle().shutdown();
    /// # reactor.join().unwrap();
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        let stream = self.kind.stream_dial();
        stream.connect_timeout = sealed::StreamDial::bounded_timeout(timeout);
        self
    }

    /// Options applied to every dialled socket (a unix socket takes only the buffer
    /// sizes).
    ///
    /// See the [type-level example](ClientBuilder): the setup hook reads them back.
    pub fn socket_options(mut self, options: SocketOptions) -> Self {
        self.kind.stream_dial().socket_options = options;
        self
    }
}

/// The stream clients' parts (TCP, WebSocket, unix): they add `connect_timeout` and
/// `socket_options` to every client's settings. Implemented by this crate's transports only.
pub trait StreamClientKind: sealed::StreamClient {}

impl<K: sealed::StreamClient> StreamClientKind for K {}

/// The settings of a client's redials, with their defaults and bounds.
#[derive(Debug, Clone)]
pub(crate) struct DialSettings {
    pub(crate) connection_number: usize,
    pub(crate) redial: RedialPolicy,
}

impl Default for DialSettings {
    /// One session; redials after 100 ms doubling to 5 s, for ever.
    fn default() -> Self {
        DialSettings {
            connection_number: 1,
            redial: RedialPolicy::default(),
        }
    }
}

impl DialSettings {
    fn connection_number(self, n: usize) -> Self {
        DialSettings {
            connection_number: n.max(1),
            ..self
        }
    }
}

/// What the transports' parts give the shared setters. Sealed: the parts are this crate's,
/// and the setters reach crate-private settings through these traits.
pub(crate) mod sealed {
    use super::*;

    /// What a stream client dials with, beyond every client's settings.
    #[derive(Debug, Clone)]
    pub struct StreamDial {
        pub(crate) connect_timeout: Duration,
        pub(crate) socket_options: SocketOptions,
    }

    impl Default for StreamDial {
        /// A 3 s connect timeout; the default socket options.
        fn default() -> Self {
            StreamDial {
                connect_timeout: Duration::from_secs(3),
                socket_options: SocketOptions::default(),
            }
        }
    }

    impl StreamDial {
        /// A connect timeout takes at least 1 ms, and at most what an `Instant` can add.
        pub(crate) fn bounded_timeout(timeout: Duration) -> Duration {
            clamp_timeout(timeout.max(Duration::from_millis(1)))
        }

        /// The shared client's configuration (no TLS, no WebSocket: the transport adds them).
        pub(crate) fn config(
            self,
            dial: DialSettings,
            session_options: SessionOptions,
        ) -> ClientConfig {
            ClientConfig {
                dial,
                connect_timeout: self.connect_timeout,
                socket_options: self.socket_options,
                session_options,
                transport_filter: None,
                #[cfg(feature = "ws")]
                websocket: None,
            }
        }
    }

    /// A stream client's part: it holds a [`StreamDial`].
    pub trait StreamClient {
        fn stream_dial(&mut self) -> &mut StreamDial;
    }

    /// A server that listens on TCP (TCP, WebSocket).
    pub trait TcpListener {}
}

/// Configures a stream server: the settings every server shares, and the part `K` of its
/// transport. Name it by its transport: [`TcpServerBuilder`](crate::tcp::TcpServerBuilder),
/// [`WsServerBuilder`], `UnixServerBuilder`.
///
/// The example below accepts a loopback connection with socket and session options set,
/// and reads them back in the setup hook ([`Setup::socket`](crate::Setup::socket),
/// [`Setup::options`](crate::Setup::options)):
///
/// ```
/// use std::time::Duration;
/// use getty_codec::RawCodec;
/// use getty_reactor::Reactor;
/// use getty_transports::{tcp::TcpServer, Handler, Session, SessionOptions, SocketOptions};
///
/// struct Sink;
/// impl Handler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {}
/// }
///
/// let (tx, rx) = std::sync::mpsc::channel();
/// let server = TcpServer::builder()
///     .socket_options(SocketOptions::default().nodelay(false))
///     .session_options(SessionOptions::default().max_message_len(4096))
///     .bind("127.0.0.1:0", move |setup| {
///         let nodelay = setup.socket().tcp_nodelay()?;
///         let _ = tx.send((nodelay, setup.options().get_max_message_len()));
///         Ok((RawCodec, Sink))
///     })
///     .unwrap();
/// let addr = server.local_addr();
/// let reactor = Reactor::start_thread("server", move |r| { r.spawn(server); Ok(()) }).unwrap();
/// let _peer = std::net::TcpStream::connect(addr).unwrap();
/// assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), (false, 4096));
/// reactor.handle().shutdown();
/// reactor.join().unwrap();
/// ```
#[cfg_attr(
    feature = "ws",
    doc = "[`WsServerBuilder`]: crate::ws::WsServerBuilder"
)]
#[cfg_attr(not(feature = "ws"), doc = "[`WsServerBuilder`]: crate#features")]
#[derive(Debug, Clone, Default)]
pub struct ServerBuilder<K> {
    pub(crate) listen: ListenOptions,
    pub(crate) socket_options: SocketOptions,
    pub(crate) session_options: SessionOptions,
    /// The filter nearest the wire (TLS) of every session, if any.
    pub(crate) tls: Option<FilterFactory>,
    /// The transport's own settings.
    pub(crate) kind: K,
}

impl<K> ServerBuilder<K> {
    /// The listen backlog (default 1024; mio's own `bind` uses 128, which drops bursts).
    ///
    /// A unix server shows it at once: a connect to a full backlog fails with `WouldBlock`
    /// (Linux queues one more than the backlog) rather than waiting.
    ///
    /// ```
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::{unix::UnixServer, Handler, Session, Unix};
    /// # struct Sink;
    /// # impl Handler<RawCodec, Unix> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec, Unix>, _: bytes::Bytes) {} }
    /// use socket2::{Domain, SockAddr, Socket, Type};
    /// let path = std::env::temp_dir().join(format!("getty-doc-backlog-{}.sock", std::process::id()));
    /// let server = UnixServer::builder().backlog(1).bind(path.as_path(), |_| Ok((RawCodec, Sink))).unwrap();
    /// let connect = || {
    ///     let s = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    ///     s.set_nonblocking(true).unwrap();
    ///     s.connect(&SockAddr::unix(&path).unwrap()).map(|()| s)
    /// };
    /// let queued: Vec<_> = (0..10).map_while(|_| connect().ok()).collect();
    /// assert!((1..=2).contains(&queued.len()), "{} queued", queued.len());
    /// # drop(server);
    /// ```
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.listen = self.listen.backlog(backlog);
        self
    }

    /// Options applied to every accepted socket (a unix socket takes only the buffer
    /// sizes).
    ///
    /// See the [type-level example](ServerBuilder): the setup hook reads them back.
    pub fn socket_options(mut self, options: SocketOptions) -> Self {
        self.socket_options = options;
        self
    }

    /// The options every session starts with (the setup hook may change them). On a
    /// WebSocket server the handshake timeout bounds the TLS handshake and the HTTP upgrade
    /// together, and the max message length bounds frames and (inflated) messages.
    ///
    /// See the [type-level example](ServerBuilder): the setup hook reads them back.
    pub fn session_options(mut self, options: SessionOptions) -> Self {
        self.session_options = options;
        self
    }
}

impl<K: TcpListenerKind> ServerBuilder<K> {
    /// SO_REUSEPORT, so several listeners (one per reactor) can share a port.
    ///
    /// ```
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::{tcp::TcpServer, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<RawCodec> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {} }
    /// let bind = |addr, reuse| TcpServer::builder().reuse_port(reuse).bind(addr, |_| Ok((RawCodec, Sink)));
    /// let first = bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), true).unwrap();
    /// let second = bind(first.local_addr(), true).unwrap(); // the same port
    /// assert_eq!(second.local_addr(), first.local_addr());
    /// let err = bind(first.local_addr(), false).err().unwrap(); // not without it
    /// assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    /// ```
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.listen.reuse_port = on;
        self
    }

    /// Serves TLS (`wss://` for WebSocket): every connection starts with a handshake under
    /// `config` (its certificate, ALPN protocols and client-certificate policy), which must
    /// finish within the session's handshake timeout (on a WebSocket server, with the HTTP
    /// upgrade). A failed handshake ends only that connection. A TCP session's `on_open`
    /// runs when the connection is accepted, and its writes wait for the handshake. See
    /// [`crate::tls`] for ready-made configurations.
    ///
    /// A peer that speaks plain text to a TLS server fails the handshake, and the server
    /// ends the connection (a plain server would wait for more):
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// # use getty_codec::RawCodec;
    /// # use getty_reactor::Reactor;
    /// # use getty_transports::{tcp::TcpServer, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<RawCodec> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {} }
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// # let (chain, key) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    /// let config = getty_transports::tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
    /// let server = TcpServer::builder().tls(config).bind("127.0.0.1:0", |_| Ok((RawCodec, Sink))).unwrap();
    /// let mut peer = std::net::TcpStream::connect(server.local_addr()).unwrap();
    /// let reactor = Reactor::start_thread("tls", move |r| { r.spawn(server); Ok(()) }).unwrap();
    /// peer.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    /// peer.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap(); // not a TLS ClientHello
    /// let ended = match peer.read_to_end(&mut Vec::new()) {
    ///     Ok(_) => true,
    ///     Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    /// };
    /// assert!(ended);
    /// # reactor.handle().shutdown();
    /// # reactor.join().unwrap();
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: std::sync::Arc<getty_codec::rustls::ServerConfig>) -> Self {
        self.tls = Some(FilterFactory::tls_server(config));
        self
    }
}

/// The parts of the servers that listen on TCP (TCP, WebSocket): they add `reuse_port`
/// and `tls` to every server's settings. Implemented by this crate's transports only.
pub trait TcpListenerKind: sealed::TcpListener {}

impl<K: sealed::TcpListener> TcpListenerKind for K {}

/// Configures a datagram endpoint: the settings every datagram socket shares, and the part
/// `K` of its transport. Name it by its transport:
/// [`UdpEndpointBuilder`](crate::udp::UdpEndpointBuilder), `UnixDatagramEndpointBuilder`.
///
/// The setup hook sees the buffer sizes on the socket and the session's options
/// ([`DatagramSetup::socket`](crate::udp::DatagramSetup::socket),
/// [`DatagramSetup::options`](crate::udp::DatagramSetup::options)):
///
/// ```
/// use std::net::SocketAddr;
/// use getty_codec::RawCodec;
/// use getty_transports::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
/// use getty_transports::SessionOptions;
///
/// struct Sink;
/// impl DatagramHandler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {}
/// }
///
/// // Small buffers, so that they differ from the kernel's defaults (which Linux doubles).
/// let small = 16 * 1024..=32 * 1024;
/// let endpoint = UdpEndpoint::builder()
///     .recv_buffer_size(Some(16 * 1024))
///     .send_buffer_size(Some(16 * 1024))
///     .session_options(SessionOptions::default().max_message_len(1400))
///     .bind("127.0.0.1:0", |setup| {
///         assert!(small.contains(&setup.socket().recv_buffer_size()?));
///         assert!(small.contains(&setup.socket().send_buffer_size()?));
///         assert_eq!(setup.options().get_max_message_len(), 1400);
///         Ok((RawCodec, Sink))
///     })
///     .unwrap();
/// assert_ne!(endpoint.local_addr().port(), 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct EndpointBuilder<K> {
    pub(crate) datagram: DatagramSettings,
    pub(crate) session_options: SessionOptions,
    /// The transport's own settings.
    pub(crate) kind: K,
}

impl<K> EndpointBuilder<K> {
    /// Datagrams moved per `recvmmsg`/`sendmmsg` (Linux; clamped to 1..=64; default 32).
    /// 1 turns batching off: one `recvfrom`/`sendto` per datagram. Each slot of a batch
    /// holds one datagram of up to `max_message_len` bytes (at most 64 KiB); slots are
    /// borrowed from the reactor's buffer pool as bursts make the batch grow, and kept
    /// until the socket closes, so a busy socket holds up to `batch_size` × 64 KiB (lower
    /// `max_message_len` to shrink them).
    ///
    /// It is the setting [`UdpOptions::batch_size`](crate::udp::UdpOptions::batch_size)
    /// sets too, with the same bounds, which its getter shows:
    ///
    /// ```
    /// use getty_transports::udp::{UdpEndpoint, UdpOptions};
    /// assert_eq!(UdpOptions::default().batch_size(0).get_batch_size(), 1);
    /// assert_eq!(UdpOptions::default().batch_size(1000).get_batch_size(), 64);
    /// let unbatched = UdpEndpoint::builder().batch_size(1);
    /// # let _ = unbatched;
    /// ```
    pub fn batch_size(mut self, n: usize) -> Self {
        self.datagram = self.datagram.batch_size(n);
        self
    }

    /// SO_RCVBUF (`None`: the kernel's default). A UDP burst larger than the receive
    /// buffer is dropped by the kernel before the reactor sees it, so raise it for bursty
    /// peers (the kernel caps it at `net.core.rmem_max`).
    ///
    /// See the [type-level example](EndpointBuilder): the setup hook reads it back.
    pub fn recv_buffer_size(mut self, bytes: Option<usize>) -> Self {
        self.datagram.recv_buffer_size = bytes;
        self
    }

    /// SO_SNDBUF (`None`, the default: the kernel's, except for a bound unix endpoint,
    /// which asks for more: see
    /// [`UnixDatagramEndpointBuilder::bind`](crate::unix::UnixDatagramEndpointBuilder::bind)).
    /// On a unix socket it also sets the largest datagram the socket can send.
    ///
    /// See the [type-level example](EndpointBuilder): the setup hook reads it back.
    pub fn send_buffer_size(mut self, bytes: Option<usize>) -> Self {
        self.datagram.send_buffer_size = bytes;
        self
    }

    /// The options the session starts with (the setup hook may change them).
    /// `max_message_len` caps the datagrams accepted (larger ones are dropped); the
    /// watermarks and `max_outbound` bound the outbound queue, and what waits for a slow
    /// unix receiver.
    ///
    /// See the [type-level example](EndpointBuilder): the setup hook reads them back.
    pub fn session_options(mut self, options: SessionOptions) -> Self {
        self.session_options = options;
        self
    }
}
