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
/// ```
/// use std::time::Duration;
/// use getty_codec::RawCodec;
/// use getty_transports::{tcp::TcpClient, Handler, Session, SessionOptions};
///
/// struct Sink;
/// impl Handler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {}
/// }
///
/// let client = TcpClient::builder()
///     .connection_number(4)
///     .connect_timeout(Duration::from_secs(1))
///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(2))
///     .max_consecutive_failures(Some(100))
///     .session_options(SessionOptions::default().max_message_len(64 * 1024))
///     .build("127.0.0.1:9", |_| Ok((RawCodec, Sink)))
///     .unwrap();
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
    /// ```
    /// let b = getty_transports::tcp::TcpClient::builder().connection_number(8);
    /// let b = getty_transports::udp::UdpClient::builder().connection_number(8);
    /// ```
    pub fn connection_number(mut self, n: usize) -> Self {
        self.dial = self.dial.connection_number(n);
        self
    }

    /// Redial delays: the first after `min`, doubling per consecutive failure up to `max`,
    /// each drawn at random from its upper half so that many clients do not redial in step
    /// (defaults 100 ms and 5 s; `min` is at least 1 ms, and `max` at least `min`).
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[cfg(feature = "ws")]
    /// let b = getty_transports::ws::WsClient::builder()
    ///     .reconnect_backoff(Duration::from_millis(10), Duration::from_secs(1));
    /// ```
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.dial.redial = self.dial.redial.backoff(min, max);
        self
    }

    /// Gives up, and ends the client, after this many consecutive failed dials (default:
    /// never). A session that fails its handshake (TLS, the WebSocket upgrade) counts as a
    /// failed dial.
    ///
    /// ```
    /// let b = getty_transports::tcp::TcpClient::builder().max_consecutive_failures(Some(50));
    /// ```
    pub fn max_consecutive_failures(mut self, limit: Option<u32>) -> Self {
        self.dial.redial = self.dial.redial.max_failures(limit);
        self
    }

    /// The options every session starts with (the setup hook may change them). The
    /// handshake timeout bounds a TLS handshake and a WebSocket upgrade; the max message
    /// length bounds WebSocket frames and messages, and datagrams.
    ///
    /// ```
    /// use getty_transports::{udp::UdpClient, SessionOptions};
    /// let b = UdpClient::builder().session_options(SessionOptions::default().max_message_len(1500));
    /// ```
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
    /// ```
    /// let b = getty_transports::tcp::TcpClient::builder()
    ///     .connect_timeout(std::time::Duration::from_millis(500));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        let stream = self.kind.stream_dial();
        stream.connect_timeout = sealed::StreamDial::bounded_timeout(timeout);
        self
    }

    /// Options applied to every dialled socket (a unix socket takes only the buffer
    /// sizes).
    ///
    /// ```
    /// use getty_transports::SocketOptions;
    /// let b = getty_transports::tcp::TcpClient::builder()
    ///     .socket_options(SocketOptions::default().nodelay(false));
    /// ```
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
                connection_number: dial.connection_number,
                connect_timeout: self.connect_timeout,
                redial: dial.redial,
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
/// ```
/// use getty_codec::RawCodec;
/// use getty_transports::{tcp::TcpServer, Handler, Session, SessionOptions, SocketOptions};
///
/// struct Sink;
/// impl Handler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {}
/// }
///
/// let server = TcpServer::builder()
///     .backlog(4096)
///     .reuse_port(true)
///     .socket_options(SocketOptions::default().nodelay(true))
///     .session_options(SessionOptions::default().max_message_len(64 * 1024))
///     .bind("127.0.0.1:0", |_setup| Ok((RawCodec, Sink)))
///     .unwrap();
/// assert_ne!(server.local_addr().port(), 0);
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
    /// ```
    /// let b = getty_transports::tcp::TcpServer::builder().backlog(128);
    /// let b = getty_transports::unix::UnixServer::builder().backlog(128);
    /// ```
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.listen = self.listen.backlog(backlog);
        self
    }

    /// Options applied to every accepted socket (a unix socket takes only the buffer
    /// sizes).
    ///
    /// ```
    /// use getty_transports::SocketOptions;
    /// let b = getty_transports::tcp::TcpServer::builder()
    ///     .socket_options(SocketOptions::default().nodelay(false));
    /// ```
    pub fn socket_options(mut self, options: SocketOptions) -> Self {
        self.socket_options = options;
        self
    }

    /// The options every session starts with (the setup hook may change them). On a
    /// WebSocket server the handshake timeout bounds the TLS handshake and the HTTP upgrade
    /// together, and the max message length bounds frames and (inflated) messages.
    ///
    /// ```
    /// use getty_transports::SessionOptions;
    /// # #[cfg(feature = "ws")]
    /// let b = getty_transports::ws::WsServer::builder()
    ///     .session_options(SessionOptions::default().max_message_len(4096));
    /// ```
    pub fn session_options(mut self, options: SessionOptions) -> Self {
        self.session_options = options;
        self
    }
}

impl<K: TcpListenerKind> ServerBuilder<K> {
    /// SO_REUSEPORT, so several listeners (one per reactor) can share a port.
    ///
    /// ```
    /// let b = getty_transports::tcp::TcpServer::builder().reuse_port(true);
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
    /// ```
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// # let (chain, key) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    /// let config = getty_transports::tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
    /// let b = getty_transports::tcp::TcpServer::builder().tls(config.clone());
    /// # #[cfg(feature = "ws")]
    /// let b = getty_transports::ws::WsServer::builder().tls(config);
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
/// let endpoint = UdpEndpoint::builder()
///     .batch_size(16)
///     .recv_buffer_size(Some(1 << 20))
///     .send_buffer_size(Some(1 << 20))
///     .session_options(SessionOptions::default().max_message_len(1400))
///     .bind("127.0.0.1:0", |_setup| Ok((RawCodec, Sink)))
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
    /// ```
    /// let b = getty_transports::udp::UdpEndpoint::builder().batch_size(1);
    /// let b = getty_transports::unix::UnixDatagramEndpoint::builder().batch_size(8);
    /// ```
    pub fn batch_size(mut self, n: usize) -> Self {
        self.datagram = self.datagram.batch_size(n);
        self
    }

    /// SO_RCVBUF (`None`: the kernel's default). A UDP burst larger than the receive
    /// buffer is dropped by the kernel before the reactor sees it, so raise it for bursty
    /// peers (the kernel caps it at `net.core.rmem_max`).
    ///
    /// ```
    /// let b = getty_transports::udp::UdpEndpoint::builder().recv_buffer_size(Some(4 << 20));
    /// ```
    pub fn recv_buffer_size(mut self, bytes: Option<usize>) -> Self {
        self.datagram.recv_buffer_size = bytes;
        self
    }

    /// SO_SNDBUF (`None`, the default: the kernel's, except for a bound unix endpoint,
    /// which asks for more: see
    /// [`UnixDatagramEndpointBuilder::bind`](crate::unix::UnixDatagramEndpointBuilder::bind)).
    /// On a unix socket it also sets the largest datagram the socket can send.
    ///
    /// ```
    /// let b = getty_transports::unix::UnixDatagramEndpoint::builder().send_buffer_size(Some(1 << 20));
    /// ```
    pub fn send_buffer_size(mut self, bytes: Option<usize>) -> Self {
        self.datagram.send_buffer_size = bytes;
        self
    }

    /// The options the session starts with (the setup hook may change them).
    /// `max_message_len` caps the datagrams accepted (larger ones are dropped); the
    /// watermarks and `max_outbound` bound the outbound queue, and what waits for a slow
    /// unix receiver.
    ///
    /// ```
    /// use getty_transports::{udp::UdpEndpoint, SessionOptions};
    /// let b = UdpEndpoint::builder().session_options(SessionOptions::default().max_message_len(512));
    /// ```
    pub fn session_options(mut self, options: SessionOptions) -> Self {
        self.session_options = options;
        self
    }
}
