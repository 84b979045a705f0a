//! Unix stream sockets: the stream session, server and client of TCP over a path (or an
//! abstract name).

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};

use getty_codec::Decoder;
use mio::net::{UnixListener, UnixStream};
use socket2::{Domain, SockRef, Socket, Type};

use crate::builder::sealed::{self, StreamDial};
use crate::builder::{ClientBuilder, ServerBuilder};
use crate::client::{Dial, Opening, Peer, StreamClient};
use crate::commands::{OwnerNote, SessionCommand};
use crate::listener::{Acceptor, Listener};
use crate::server::{entry_by_inner, StreamServer};
use crate::session::Handler;
use crate::setup::{Prepared, Setup};
use crate::stream::Stream;
use crate::unix::socket_file::{self, SocketFile};
use crate::{SocketOptions, Unix, UnixAddr};

impl Opening<UnixStream> for Unix {
    fn open<C, H>(
        prepared: Prepared<UnixStream, C, H>,
        _config: &crate::client::ClientConfig,
        owner: getty_reactor::Recipient<OwnerNote>,
        now: std::time::Instant,
    ) -> Box<dyn getty_reactor::Entry<Command = SessionCommand>>
    where
        C: Decoder + 'static,
        H: Handler<C, Unix>,
    {
        Box::new(prepared.into_plain_entry(now, Some(owner)))
    }
}

impl Stream for UnixStream {
    type Addr = UnixAddr;
    type Plain = Unix;

    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn take_socket_error(&self) -> io::Result<Option<io::Error>> {
        self.take_error()
    }
    fn socket(&self) -> SockRef<'_> {
        SockRef::from(self)
    }
    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
    fn configure(&self, options: &SocketOptions) -> io::Result<()> {
        options.apply_buffer_sizes(self.socket())
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;

    fn accept_one(&self) -> io::Result<(UnixStream, UnixAddr)> {
        let (stream, peer) = self.accept()?;
        Ok((stream, UnixAddr::from(&peer)))
    }
}

impl Dial for UnixStream {
    const KIND: &'static str = "unix";

    fn dial(addr: &UnixAddr) -> io::Result<Self> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        match socket.connect(&addr.to_sockaddr()?) {
            Ok(()) => {}
            // EAGAIN here means the listener's backlog is full: the connect did not start.
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(UnixStream::from_std(socket.into()))
    }

    fn connect_result(&self) -> io::Result<Option<()>> {
        if let Some(e) = self.take_error()? {
            return Err(e);
        }
        match self.peer_addr() {
            Ok(_) => Ok(Some(())),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Configures a [`UnixServer`]: every server's settings ([`ServerBuilder`]: backlog,
/// socket and session options), and what to do with a stale socket file.
///
/// ```
/// use getty_codec::RawCodec;
/// use getty_transports::{unix::UnixServer, Handler, Session, SessionOptions, Unix, UnixAddr};
///
/// struct Sink;
/// impl Handler<RawCodec, Unix> for Sink {
///     fn on_message(&mut self, _: &mut Session<RawCodec, Unix>, _: bytes::Bytes) {}
/// }
///
/// let server = UnixServer::builder()
///     .backlog(4096)
///     .session_options(SessionOptions::default().max_message_len(64 * 1024))
///     .bind(UnixAddr::abstract_name("getty-doc-builder"), |_| Ok((RawCodec, Sink)))
///     .unwrap();
/// assert_eq!(server.local_addr(), UnixAddr::abstract_name("getty-doc-builder"));
/// ```
pub type UnixServerBuilder = ServerBuilder<UnixServerKind>;

/// The unix server's part of its [`UnixServerBuilder`]: what to do with a stale socket
/// file.
#[derive(Debug, Clone)]
pub struct UnixServerKind {
    remove_stale: bool,
}

impl Default for UnixServerKind {
    /// Stale socket files are removed.
    fn default() -> Self {
        UnixServerKind { remove_stale: true }
    }
}

impl UnixServerBuilder {
    /// Whether to remove a socket file that an earlier run left at the path before binding
    /// (default on). Only a file nothing listens on is removed: a path that is not a
    /// socket, or one another server still accepts on (even with its backlog full: the
    /// check never waits), fails the bind instead, with `AddrInUse` for a live server.
    ///
    /// ```
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::{unix::UnixServer, Handler, Session, Unix};
    /// # struct Sink;
    /// # impl Handler<RawCodec, Unix> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec, Unix>, _: bytes::Bytes) {} }
    /// let path = std::env::temp_dir().join(format!("getty-doc-stale-{}.sock", std::process::id()));
    /// drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // leaves its file behind
    /// let bind = |remove| UnixServer::builder().remove_stale_socket(remove).bind(path.as_path(), |_| Ok((RawCodec, Sink)));
    /// let err = bind(false).err().unwrap();
    /// assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    /// let server = bind(true).unwrap(); // the stale file is replaced
    /// # drop(server);
    /// ```
    pub fn remove_stale_socket(mut self, on: bool) -> Self {
        self.kind.remove_stale = on;
        self
    }

    /// Binds `addr` (a path, or an abstract name on Linux) and listens. `setup` runs for
    /// every accepted connection, as for a TCP server.
    ///
    /// ```
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::{unix::UnixServer, Handler, Session, Unix, UnixAddr};
    /// # struct Sink;
    /// # impl Handler<RawCodec, Unix> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec, Unix>, _: bytes::Bytes) {} }
    /// let path = std::env::temp_dir().join(format!("getty-doc-bind-{}.sock", std::process::id()));
    /// let server = UnixServer::builder().bind(path.as_path(), |_| Ok((RawCodec, Sink))).unwrap();
    /// assert!(path.exists());
    /// drop(server); // removes the socket file
    /// assert!(!path.exists());
    /// ```
    pub fn bind<F, C, H>(
        self,
        addr: impl Into<UnixAddr>,
        setup: F,
    ) -> io::Result<UnixServer<F, C, H>>
    where
        F: FnMut(&mut Setup<'_, UnixAddr>) -> io::Result<(C, H)> + 'static,
        C: Decoder + 'static,
        H: Handler<C, Unix>,
    {
        let addr = addr.into();
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        // Listening before the path is let go: a bound socket that does not listen yet
        // would look stale to a second server starting at the same moment.
        let backlog = self.listen.backlog;
        let file = socket_file::bind(&socket, &addr, Type::STREAM, self.kind.remove_stale, |s| {
            s.listen(backlog)
        })?;
        let listener = UnixListener::from_std(socket.into());
        let acceptor = Acceptor::new(listener, addr);
        Ok(UnixServer {
            _file: file,
            inner: StreamServer::new(
                acceptor,
                setup,
                self.socket_options,
                self.session_options,
                None,
            ),
        })
    }
}

/// A unix stream server: an [`Entry`](getty_reactor::Entry) that accepts connections on a
/// path (or an abstract name) and spawns a session for each, as [`TcpServer`] does. Its
/// socket file is removed when it stops (a [`Close`](crate::Close) command, the reactor's
/// shutdown, or a drop). See the [module documentation](super) for an example.
///
/// [`TcpServer`]: crate::tcp::TcpServer
pub struct UnixServer<F, C, H> {
    /// Declared first, so dropped first: the file goes while the listener still listens.
    _file: Option<SocketFile>,
    inner: StreamServer<UnixListener, F, C, H>,
}

impl UnixServer<(), (), ()> {
    /// A builder with default settings: a backlog of 1024, stale socket files removed.
    ///
    /// See [`UnixServerBuilder`] and [`ServerBuilder`] for examples.
    pub fn builder() -> UnixServerBuilder {
        UnixServerBuilder::default()
    }

    /// Binds with default settings; see [`UnixServerBuilder::bind`].
    ///
    /// See the [module documentation](super) for an example.
    pub fn bind<F, C, H>(addr: impl Into<UnixAddr>, setup: F) -> io::Result<UnixServer<F, C, H>>
    where
        F: FnMut(&mut Setup<'_, UnixAddr>) -> io::Result<(C, H)> + 'static,
        C: Decoder + 'static,
        H: Handler<C, Unix>,
    {
        UnixServerBuilder::default().bind(addr, setup)
    }
}

impl<F, C, H> UnixServer<F, C, H>
where
    F: FnMut(&mut Setup<'_, UnixAddr>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, Unix>,
{
    /// The address the server listens on.
    ///
    /// See [`UnixServerBuilder`] for an example.
    pub fn local_addr(&self) -> UnixAddr {
        self.inner.acceptor.local_addr().clone()
    }
}

entry_by_inner!(impl<F, C, H> for UnixServer<F, C, H>, command = crate::ServerCommand, where
    F: FnMut(&mut Setup<'_, UnixAddr>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, Unix>,
);

/// Configures a [`UnixClient`]: every stream client's settings ([`ClientBuilder`]:
/// connections, timeouts, backoff, socket and session options).
///
/// ```
/// use std::time::Duration;
/// use getty_codec::RawCodec;
/// use getty_transports::{unix::UnixClient, Handler, Session, Unix, UnixAddr};
///
/// struct Sink;
/// impl Handler<RawCodec, Unix> for Sink {
///     fn on_message(&mut self, _: &mut Session<RawCodec, Unix>, _: bytes::Bytes) {}
/// }
///
/// let client = UnixClient::builder()
///     .connection_number(4)
///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(2))
///     .build("/run/app.sock", |_| Ok((RawCodec, Sink)))
///     .unwrap();
/// ```
pub type UnixClientBuilder = ClientBuilder<UnixClientKind>;

/// The unix client's part of its [`UnixClientBuilder`]: nothing beyond every stream
/// client's settings ([`ClientBuilder`]).
#[derive(Debug, Clone, Default)]
pub struct UnixClientKind {
    stream: StreamDial,
}

impl sealed::StreamClient for UnixClientKind {
    fn stream_dial(&mut self) -> &mut StreamDial {
        &mut self.stream
    }
}

impl UnixClientBuilder {
    /// Makes the client for `addr` (a path or an abstract name). Nothing is dialled until
    /// it is spawned into a reactor. `setup` runs for every connected socket.
    ///
    /// See [`UnixClientBuilder`] for an example.
    pub fn build<F, C, H>(
        self,
        addr: impl Into<UnixAddr>,
        setup: F,
    ) -> io::Result<UnixClient<F, C, H>>
    where
        F: FnMut(&mut Setup<'_, UnixAddr>) -> io::Result<(C, H)> + 'static,
        C: Decoder + 'static,
        H: Handler<C, Unix>,
    {
        let addr = addr.into();
        addr.to_sockaddr()?; // an unnamed or too long address fails here, not at each dial
        Ok(UnixClient {
            inner: StreamClient::with_setup(
                Peer::one(addr),
                setup,
                self.kind.stream.config(self.dial, self.session_options),
            ),
        })
    }
}

/// A client that keeps `connection_number` sessions to one unix socket address, redialling
/// with backoff like [`TcpClient`](crate::tcp::TcpClient). Spawn it into a reactor; send it
/// [`Close`](crate::Close) to close its sessions and stop redialling.
///
/// ```
/// use getty_codec::RawCodec;
/// use getty_reactor::Reactor;
/// use getty_transports::{unix::UnixClient, Handler, Session, Unix, UnixAddr};
///
/// struct Sink;
/// impl Handler<RawCodec, Unix> for Sink {
///     fn on_message(&mut self, _: &mut Session<RawCodec, Unix>, _: bytes::Bytes) {}
/// }
/// let client = UnixClient::builder().build(UnixAddr::abstract_name("nobody"), |_| Ok((RawCodec, Sink))).unwrap();
/// let mut reactor = Reactor::new().unwrap();
/// let id = reactor.spawn(client);
/// reactor.handle().send(id, getty_transports::Close).unwrap();
/// ```
pub struct UnixClient<F, C, H> {
    inner: StreamClient<UnixStream, Unix, F, C, H>,
}

impl UnixClient<(), (), ()> {
    /// A builder with default settings: one connection, redials after 100 ms doubling to
    /// 5 s for ever, a 3 s connect timeout.
    ///
    /// See [`UnixClientBuilder`] and [`ClientBuilder`] for examples.
    pub fn builder() -> UnixClientBuilder {
        UnixClientBuilder::default()
    }
}

impl<F, C, H> UnixClient<F, C, H>
where
    F: FnMut(&mut Setup<'_, UnixAddr>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, Unix>,
{
    /// The address this client dials.
    ///
    /// ```
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::{unix::UnixClient, Handler, Session, Unix, UnixAddr};
    /// # struct Sink;
    /// # impl Handler<RawCodec, Unix> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec, Unix>, _: bytes::Bytes) {} }
    /// let c = UnixClient::builder().build("/run/app.sock", |_| Ok((RawCodec, Sink))).unwrap();
    /// assert_eq!(c.peer_addr(), UnixAddr::path("/run/app.sock"));
    /// ```
    pub fn peer_addr(&self) -> UnixAddr {
        self.inner.peer_addr().clone()
    }
}

/// What a [`UnixClient`] accepts: [`Close`](crate::Close). The name to write where a
/// client's address is kept (as [`TcpClientCommand`](crate::tcp::TcpClientCommand) shows).
pub type UnixClientCommand = crate::ClientCommand<UnixStream, UnixAddr>;

entry_by_inner!(impl<F, C, H> for UnixClient<F, C, H>, command = UnixClientCommand, where
    F: FnMut(&mut Setup<'_, UnixAddr>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, Unix>,
);
