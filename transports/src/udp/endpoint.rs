//! The unconnected UDP endpoint: one socket, one entry, one session for every peer.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use getty_codec::Decoder;
use getty_reactor::{Context, Entry, Ready, Status};

use crate::commands::SessionCommand;
use mio::net::UdpSocket;
use socket2::SockRef;

use super::entry::{DatagramConfig, DatagramEntry};
use super::socket::DatagramSocket;
use super::{new_session, DatagramHandler, DatagramSetup, UdpOptions};
use crate::builder::EndpointBuilder;
use crate::server::entry_by_inner;
use crate::SessionOptions;

/// Configures a [`UdpEndpoint`]: every datagram endpoint's settings ([`EndpointBuilder`]:
/// batch and buffer sizes, session options), `SO_REUSEPORT`, and the dial probe to drop.
///
/// ```
/// use std::net::SocketAddr;
/// use getty_codec::RawCodec;
/// use getty_transports::SessionOptions;
/// use getty_transports::udp::{DatagramHandler, DatagramSession, UdpEndpoint, UdpOptions};
///
/// struct Sink;
/// impl DatagramHandler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {}
/// }
///
/// let endpoint = UdpEndpoint::builder()
///     .udp_options(UdpOptions::default().recv_buffer_size(Some(1 << 20)))
///     .session_options(SessionOptions::default().max_message_len(1400))
///     .bind("127.0.0.1:0", |_setup| Ok((RawCodec, Sink)))
///     .unwrap();
/// assert_ne!(endpoint.local_addr().port(), 0);
/// ```
pub type UdpEndpointBuilder = EndpointBuilder<UdpEndpointKind>;

/// The UDP endpoint's part of its [`UdpEndpointBuilder`]: `SO_REUSEPORT` and the dial
/// probe to drop.
#[derive(Debug, Clone)]
pub struct UdpEndpointKind {
    reuse_port: bool,
    drop_probe: Option<Bytes>,
}

impl Default for UdpEndpointKind {
    /// No `SO_REUSEPORT`; [`DEFAULT_PROBE`](super::DEFAULT_PROBE) dropped.
    fn default() -> Self {
        UdpEndpointKind {
            reuse_port: false,
            drop_probe: UdpOptions::default().drop_probe,
        }
    }
}

impl UdpEndpointBuilder {
    /// SO_REUSEPORT, so that several endpoints (one per reactor) can share a port; the
    /// kernel spreads datagrams across them by source address.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
    /// # struct Sink;
    /// # impl DatagramHandler<RawCodec> for Sink { fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {} }
    /// let bind = |addr, reuse| UdpEndpoint::builder().reuse_port(reuse).bind(addr, |_| Ok((RawCodec, Sink)));
    /// let first = bind(SocketAddr::from(([127, 0, 0, 1], 0)), true).unwrap();
    /// let second = bind(first.local_addr(), true).unwrap(); // the same port
    /// assert_eq!(second.local_addr(), first.local_addr());
    /// let err = bind(first.local_addr(), false).err().unwrap(); // not without it
    /// assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    /// ```
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.kind.reuse_port = on;
        self
    }

    /// Socket and datagram-path options, all at once: the batch and buffer sizes set
    /// before are replaced by these.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::udp::{DatagramHandler, DatagramSession};
    /// # struct Sink;
    /// # impl DatagramHandler<RawCodec> for Sink { fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {} }
    /// use getty_transports::udp::{UdpEndpoint, UdpOptions};
    /// let endpoint = UdpEndpoint::builder()
    ///     .recv_buffer_size(Some(4 << 20)) // replaced by the next line's
    ///     .udp_options(UdpOptions::default().recv_buffer_size(Some(16 * 1024)))
    ///     .bind("127.0.0.1:0", |setup| {
    ///         // 16 KiB, which Linux doubles: not the 4 MiB, nor the kernel's default.
    ///         assert!((16 * 1024..=32 * 1024).contains(&setup.socket().recv_buffer_size()?));
    ///         Ok((RawCodec, Sink))
    ///     })
    ///     .unwrap();
    /// # drop(endpoint);
    /// ```
    pub fn udp_options(mut self, options: UdpOptions) -> Self {
        self.datagram = options.datagram;
        self.kind.drop_probe = options.drop_probe;
        self
    }

    /// Binds the socket (port 0 picks a free port; see [`UdpEndpoint::local_addr`]) and
    /// runs `setup` for it, which picks the codec and handler and may change the session's
    /// options; an error from it is returned here.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
    /// # struct Sink;
    /// # impl DatagramHandler<RawCodec> for Sink { fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {} }
    /// let endpoint = UdpEndpoint::builder().bind("127.0.0.1:0", |_| Ok((RawCodec, Sink))).unwrap();
    /// assert_ne!(endpoint.local_addr().port(), 0);
    /// let refused = UdpEndpoint::builder().bind("127.0.0.1:0", |_| {
    ///     Err::<(RawCodec, Sink), _>(std::io::Error::other("not today"))
    /// });
    /// assert_eq!(refused.err().unwrap().to_string(), "not today");
    /// ```
    pub fn bind<A, F, C, H>(self, addr: A, setup: F) -> io::Result<UdpEndpoint<C, H>>
    where
        A: ToSocketAddrs,
        F: FnOnce(&mut DatagramSetup<'_>) -> io::Result<(C, H)>,
        C: Decoder + 'static,
        H: DatagramHandler<C>,
    {
        let udp_options = UdpOptions {
            datagram: self.datagram,
            drop_probe: self.kind.drop_probe,
        };
        let mut last_error = None;
        let mut socket = None;
        for addr in addr.to_socket_addrs()? {
            match udp_options.bind_socket(addr, self.kind.reuse_port) {
                Ok(s) => {
                    socket = Some(s);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let socket = match socket {
            Some(socket) => UdpSocket::from_std(socket.into()),
            None => {
                return Err(last_error.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to")
                }))
            }
        };
        let local_addr = socket.local_addr()?;
        let mut options = Arc::new(self.session_options);
        let (codec, handler) = setup(&mut DatagramSetup {
            local: local_addr,
            peer: None,
            socket: SockRef::from(&socket),
            options: &mut options,
        })?;
        let mut config = udp_options.entry_config(false);
        // A getty-rs client's dial opens as soon as its probe is answered.
        config.answer_probe = true;
        let parts = EndpointParts {
            socket,
            peer: None,
            codec,
            handler,
            options,
            config,
        };
        Ok(UdpEndpoint {
            inner: DatagramEndpoint::new(parts, local_addr),
        })
    }
}

/// An unconnected UDP socket: an [`Entry`](getty_reactor::Entry) whose one session receives datagrams from any
/// peer and writes to any peer. Spawn it into a reactor; send it
/// [`Close`](crate::Close) to close it gracefully (queued datagrams go out first).
///
/// It is a server, and an unconnected client too: bind `127.0.0.1:0` and
/// [`write_to`](super::DatagramSession::write_to) the server.
///
/// ```
/// use std::net::SocketAddr;
/// use getty_codec::LengthFieldCodec;
/// use getty_reactor::Reactor;
/// use getty_transports::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
///
/// /// Sends one message to `to` when it opens.
/// struct Hello { to: SocketAddr }
/// impl DatagramHandler<LengthFieldCodec> for Hello {
///     fn on_open(&mut self, s: &mut DatagramSession<LengthFieldCodec>) -> std::io::Result<()> {
///         s.write_to(self.to, &b"hello"[..]).map_err(std::io::Error::from)
///     }
///     fn on_message(&mut self, _: &mut DatagramSession<LengthFieldCodec>, _: bytes::Bytes, _: SocketAddr) {}
/// }
///
/// let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// server.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
/// let to = server.local_addr().unwrap();
/// let client = UdpEndpoint::bind("127.0.0.1:0", move |_| Ok((LengthFieldCodec::default(), Hello { to }))).unwrap();
/// let mut reactor = Reactor::new().unwrap();
/// reactor.spawn(client);
///
/// let mut buf = [0u8; 64];
/// let n = server.recv(&mut buf).unwrap();
/// assert_eq!(&buf[..n], b"\x00\x00\x00\x05hello");
/// ```
pub struct UdpEndpoint<C, H> {
    inner: DatagramEndpoint<UdpSocket, C, H>,
}

impl UdpEndpoint<(), ()> {
    /// A builder with default settings: batches of 32, the kernel's buffer sizes, no
    /// `SO_REUSEPORT`, [`DEFAULT_PROBE`](super::DEFAULT_PROBE) dropped.
    ///
    /// See [`UdpEndpointBuilder`] and [`EndpointBuilder`] for examples.
    pub fn builder() -> UdpEndpointBuilder {
        UdpEndpointBuilder::default()
    }

    /// Binds with default settings; see [`UdpEndpointBuilder::bind`].
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
    /// # struct Sink;
    /// # impl DatagramHandler<RawCodec> for Sink { fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {} }
    /// let endpoint = UdpEndpoint::bind("127.0.0.1:0", |_| Ok((RawCodec, Sink))).unwrap();
    /// assert_ne!(endpoint.local_addr().port(), 0);
    /// ```
    pub fn bind<A, F, C, H>(addr: A, setup: F) -> io::Result<UdpEndpoint<C, H>>
    where
        A: ToSocketAddrs,
        F: FnOnce(&mut DatagramSetup<'_>) -> io::Result<(C, H)>,
        C: Decoder + 'static,
        H: DatagramHandler<C>,
    {
        UdpEndpointBuilder::default().bind(addr, setup)
    }
}

impl<C, H> UdpEndpoint<C, H> {
    /// The address the socket is bound to (with the port the kernel picked for port 0).
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
    /// # struct Sink;
    /// # impl DatagramHandler<RawCodec> for Sink { fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {} }
    /// let endpoint = UdpEndpoint::bind("127.0.0.1:0", |_| Ok((RawCodec, Sink))).unwrap();
    /// assert!(endpoint.local_addr().ip().is_loopback());
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        *self.inner.local_addr()
    }
}

entry_by_inner!(impl<C, H> for UdpEndpoint<C, H>, command = crate::SessionCommand, where
    C: Decoder + 'static,
    H: DatagramHandler<C>,
);

/// What a datagram endpoint (UDP or unix) is made of until it starts.
pub(crate) struct EndpointParts<S: DatagramSocket, C, H> {
    pub(crate) socket: S,
    /// The connected peer, if the socket is connected.
    pub(crate) peer: Option<S::Addr>,
    pub(crate) codec: C,
    pub(crate) handler: H,
    pub(crate) options: Arc<SessionOptions>,
    pub(crate) config: DatagramConfig,
}

/// A datagram socket as an entry: its session is made when it starts, on the reactor's
/// thread (handlers need not be `Send`); until then the endpoint is only its parts.
pub(crate) struct DatagramEndpoint<S: DatagramSocket, C, H> {
    parts: Option<Box<EndpointParts<S, C, H>>>,
    entry: Option<DatagramEntry<S, C, H>>,
    local_addr: S::Addr,
}

impl<S: DatagramSocket, C, H> DatagramEndpoint<S, C, H> {
    pub(crate) fn new(parts: EndpointParts<S, C, H>, local_addr: S::Addr) -> Self {
        DatagramEndpoint {
            parts: Some(Box::new(parts)),
            entry: None,
            local_addr,
        }
    }

    pub(crate) fn local_addr(&self) -> &S::Addr {
        &self.local_addr
    }
}

impl<S, C, H> Entry for DatagramEndpoint<S, C, H>
where
    S: DatagramSocket,
    C: Decoder + 'static,
    H: DatagramHandler<C, S::Addr>,
{
    type Command = SessionCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        let Some(parts) = self.parts.take() else {
            return Status::Done;
        };
        let EndpointParts {
            socket,
            peer,
            codec,
            handler,
            options,
            config,
        } = *parts;
        let session = match new_session(&socket, peer, codec, options) {
            Ok(session) => session,
            Err(e) => {
                log::error!("datagram endpoint on {:?}: {e}", self.local_addr);
                return Status::Done;
            }
        };
        log::info!("datagram endpoint on {:?}", self.local_addr);
        self.entry
            .insert(DatagramEntry::new(socket, session, handler, config, None))
            .on_start(cx)
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, ready: Ready) -> Status {
        match self.entry.as_mut() {
            Some(entry) => entry.on_ready(cx, ready),
            None => Status::Done,
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, tag: u64) -> Status {
        match self.entry.as_mut() {
            Some(entry) => entry.on_timer(cx, tag),
            None => Status::Done,
        }
    }

    fn on_command(&mut self, cx: &mut Context<'_>, command: SessionCommand) -> Status {
        match self.entry.as_mut() {
            Some(entry) => entry.on_command(cx, command),
            None => Status::Done,
        }
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        match self.entry.as_mut() {
            Some(entry) => entry.on_shutdown(cx, deadline),
            None => Status::Done,
        }
    }

    fn on_panic(&mut self, cx: &mut Context<'_>, message: &str) {
        if let Some(entry) = self.entry.as_mut() {
            entry.on_panic(cx, message);
        }
    }
}
