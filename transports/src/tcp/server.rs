//! The TCP listener entry: accepts until `WouldBlock`, runs the setup hook, spawns sessions.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use getty_codec::Decoder;
use getty_reactor::{ReactorHandle, Recipient};
use mio::net::{TcpListener, TcpStream};

use crate::builder::{sealed, ServerBuilder};
use crate::listener::{AskSessionCount, CloseSessions};
use crate::server::{entry_by_inner, StreamServer};
use crate::session::Handler;
use crate::setup::{prepare, Plan, Setup};
use crate::{Close, Metrics, ServerCommand, SessionCommand, SessionOptions, SocketOptions};

/// Configures a [`TcpServer`]: the settings of every server on TCP ([`ServerBuilder`]:
/// backlog, `SO_REUSEPORT`, TLS, socket and session options).
///
/// ```
/// use getty_codec::RawCodec;
/// use getty_transports::{tcp::TcpServer, Handler, Session, SessionOptions};
///
/// struct Sink;
/// impl Handler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {}
/// }
///
/// let server = TcpServer::builder()
///     .backlog(4096)
///     .session_options(SessionOptions::default().max_message_len(64 * 1024))
///     .bind("127.0.0.1:0", |_setup| Ok((RawCodec, Sink)))
///     .unwrap();
/// assert_ne!(server.local_addr().port(), 0);
/// ```
pub type TcpServerBuilder = ServerBuilder<TcpServerKind>;

/// The TCP server's part of its [`TcpServerBuilder`]: nothing beyond the settings of every
/// server on TCP ([`ServerBuilder`]).
#[derive(Debug, Clone, Default)]
pub struct TcpServerKind {}

impl sealed::TcpListener for TcpServerKind {}

impl TcpServerBuilder {
    /// Binds and listens (port 0 picks a free port; see [`TcpServer::local_addr`]). `setup`
    /// runs for every accepted connection, as getty's `NewSessionCallback`: it picks the
    /// codec and handler and may change the session's options; an error refuses the
    /// connection.
    ///
    /// ```
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::{tcp::TcpServer, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<RawCodec> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {} }
    /// let server = TcpServer::builder().bind("127.0.0.1:0", |_| Ok((RawCodec, Sink))).unwrap();
    /// assert_ne!(server.local_addr().port(), 0);
    /// // It listens: the kernel completes a connect before the server is even spawned.
    /// std::net::TcpStream::connect(server.local_addr()).unwrap();
    /// ```
    pub fn bind<A, F, C, H>(self, addr: A, setup: F) -> io::Result<TcpServer<F, C, H>>
    where
        A: ToSocketAddrs,
        F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)> + 'static,
        C: Decoder + 'static,
        H: Handler<C>,
    {
        let acceptor = self.listen.bind(addr)?;
        Ok(TcpServer {
            inner: StreamServer::new(
                acceptor,
                setup,
                self.socket_options,
                self.session_options,
                self.tls,
            ),
        })
    }
}

/// A TCP server: an [`Entry`](getty_reactor::Entry) that accepts connections and spawns a session for each.
/// Spawn it into a reactor; send it [`Close`] to stop listening (its sessions carry on).
///
/// ```
/// use getty_codec::LengthFieldCodec;
/// use getty_reactor::Reactor;
/// use getty_transports::{tcp::TcpServer, Handler, Session};
///
/// struct Echo;
/// impl Handler<LengthFieldCodec> for Echo {
///     fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: bytes::Bytes) {
///         let _ = s.write(msg);
///     }
/// }
///
/// let server = TcpServer::bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo))).unwrap();
/// let addr = server.local_addr();
/// let mut reactor = Reactor::new().unwrap();
/// reactor.spawn(server);
/// # let _ = addr;
/// ```
pub struct TcpServer<F, C, H> {
    inner: StreamServer<TcpListener, F, C, H>,
}

impl TcpServer<(), (), ()> {
    /// A builder with default settings: a backlog of 1024, no `SO_REUSEPORT`, no TLS.
    ///
    /// See [`TcpServerBuilder`] and [`ServerBuilder`] for examples.
    pub fn builder() -> TcpServerBuilder {
        TcpServerBuilder::default()
    }

    /// Binds with default settings; see [`TcpServerBuilder::bind`].
    ///
    /// ```
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::{tcp::TcpServer, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<RawCodec> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {} }
    /// let server = TcpServer::bind("127.0.0.1:0", |_| Ok((RawCodec, Sink))).unwrap();
    /// std::net::TcpStream::connect(server.local_addr()).unwrap();
    /// ```
    pub fn bind<A, F, C, H>(addr: A, setup: F) -> io::Result<TcpServer<F, C, H>>
    where
        A: ToSocketAddrs,
        F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)> + 'static,
        C: Decoder + 'static,
        H: Handler<C>,
    {
        TcpServerBuilder::default().bind(addr, setup)
    }
}

impl<F, C, H> TcpServer<F, C, H>
where
    F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C>,
{
    /// The address the server listens on (with the port the kernel picked for port 0).
    ///
    /// ```
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::{tcp::TcpServer, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<RawCodec> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {} }
    /// let server = TcpServer::bind("127.0.0.1:0", |_| Ok((RawCodec, Sink))).unwrap();
    /// assert!(server.local_addr().ip().is_loopback());
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        *self.inner.acceptor.local_addr()
    }
}

entry_by_inner!(impl<F, C, H> for TcpServer<F, C, H>, command = crate::ServerCommand, where
    F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C>,
);

/// Controls a server running on a reactor, from any thread.
///
/// ```
/// use getty_codec::RawCodec;
/// use getty_reactor::Reactor;
/// use getty_transports::{tcp::{ServerHandle, TcpServer}, Handler, Session};
///
/// struct Sink;
/// impl Handler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {}
/// }
/// let server = TcpServer::bind("127.0.0.1:0", |_| Ok((RawCodec, Sink))).unwrap();
/// let (tx, rx) = std::sync::mpsc::channel();
/// let reactor = Reactor::start_thread("r", move |r| {
///     let id = r.spawn(server);
///     tx.send(ServerHandle::new(r.handle(), id)).unwrap();
///     Ok(())
/// }).unwrap();
/// let server = rx.recv().unwrap();
/// assert_eq!(server.session_count().unwrap(), 0);
/// server.close_sessions().unwrap();
/// server.stop_listening().unwrap();
/// reactor.handle().shutdown();
/// reactor.join().unwrap();
/// ```
#[derive(Clone)]
pub struct ServerHandle {
    reactor: ReactorHandle,
    server: Recipient<ServerCommand>,
}

impl ServerHandle {
    /// A handle to the server entry `server` on `reactor` (the address `Reactor::spawn`
    /// returned).
    ///
    /// See the [type-level example](ServerHandle).
    pub fn new(reactor: ReactorHandle, server: Recipient<ServerCommand>) -> Self {
        ServerHandle { reactor, server }
    }

    /// Stops accepting; open sessions carry on.
    ///
    /// See the [type-level example](ServerHandle).
    pub fn stop_listening(&self) -> io::Result<()> {
        self.reactor.send(self.server, Close)
    }

    /// Closes every session the server accepted, gracefully.
    ///
    /// See the [type-level example](ServerHandle).
    pub fn close_sessions(&self) -> io::Result<()> {
        self.reactor.send(self.server, CloseSessions)
    }

    /// How many of the server's sessions are alive (waits for the reactor's answer).
    ///
    /// See the [type-level example](ServerHandle).
    pub fn session_count(&self) -> io::Result<usize> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.reactor.send(self.server, AskSessionCount(tx))?;
        rx.recv().map_err(|_| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the server is no longer running",
            )
        })
    }
}

/// Adopts a TCP connection accepted elsewhere (an acceptor thread handing connections to
/// reactors, a socket passed in by a supervisor) as a session on the reactor that runs
/// `spawner`'s job: the options are applied, `setup` runs as for a server's connections, and
/// the session's address is returned — `None` when the setup hook refused the connection.
///
/// ```
/// use getty_codec::RawCodec;
/// use getty_reactor::Reactor;
/// use getty_transports::{tcp, Handler, Session, SessionOptions, SocketOptions};
///
/// struct Sink;
/// impl Handler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {}
/// }
///
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
/// let (accepted, _) = listener.accept().unwrap();
///
/// let reactor = Reactor::start_thread("r", |_| Ok(())).unwrap();
/// let adopted = reactor.handle().query(move |spawner| {
///     let mut setup = |_: &mut tcp::Setup<'_>| Ok((RawCodec, Sink));
///     let (sockets, sessions) = (SocketOptions::default(), SessionOptions::default());
///     tcp::adopt(spawner, accepted, &sockets, &sessions, &mut setup).unwrap()
/// }).unwrap();
/// assert!(adopted.is_some());
/// reactor.handle().shutdown();
/// reactor.join().unwrap();
/// ```
pub fn adopt<F, C, H>(
    spawner: &mut getty_reactor::Spawner<'_>,
    stream: std::net::TcpStream,
    socket_options: &SocketOptions,
    session_options: &SessionOptions,
    setup: &mut F,
) -> io::Result<Option<Recipient<SessionCommand>>>
where
    F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)>,
    C: Decoder + 'static,
    H: Handler<C>,
{
    stream.set_nonblocking(true)?;
    let peer = stream.peer_addr()?;
    let options = Arc::new(session_options.clone());
    let stream = TcpStream::from_std(stream);
    let plan = Plan {
        socket_options,
        session_options: &options,
        transport_filter: None,
        #[cfg(all(feature = "ws", feature = "deflate"))]
        websocket: false,
    };
    let entry = prepare(stream, peer, &plan, setup, spawner.now(), None);
    match entry {
        Some(entry) => Ok(Some(spawner.spawn(entry))),
        None => {
            spawner.extension::<Metrics>().refused += 1;
            Ok(None)
        }
    }
}
