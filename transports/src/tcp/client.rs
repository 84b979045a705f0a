//! The TCP client entry: keeps `connection_number` sessions to one address, redialling with
//! capped, jittered exponential backoff until the app closes it.
//!
//! Each connect attempt is a `Dialer` entry of its own (a connecting socket needs its own
//! token). A dialer reports back to the client with a command; the client runs the setup
//! hook and spawns the session, which tells the client when it ends. No locks, no threads,
//! and no re-entrancy: the client and its sessions only ever exchange queued commands, so
//! closing a client while it redials cannot deadlock (getty's #132).

use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use getty_codec::Decoder;
use getty_reactor::{Command, Context, Entry, EntryId, Ready, Status, TimerId};
use mio::net::TcpStream;
use mio::Interest;

use crate::options::clamp_timeout;
use crate::redial::{Redial, RedialPolicy};
use crate::session::Handler;
use crate::stream::{SessionEnded, SessionOpened};
use crate::tcp::server::{prepare, Plan};
use crate::tcp::{FilterFactory, Setup};
use crate::ws::WsDial;
use crate::{Close, Error, Metrics, SessionOptions, SocketOptions};
use getty_codec::rustls;

/// Configures a [`TcpClient`].
///
/// ```
/// use std::time::Duration;
/// use getty_codec::RawCodec;
/// use getty_transports::{tcp::TcpClient, Handler, Session};
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
///     .build("127.0.0.1:9", |_| Ok((RawCodec, Sink)))
///     .unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct TcpClientBuilder {
    connection_number: usize,
    connect_timeout: Duration,
    redial: RedialPolicy,
    socket_options: SocketOptions,
    session_options: SessionOptions,
    transport_filter: Option<FilterFactory>,
    /// Set by `WsClientBuilder`: every session starts with this WebSocket upgrade.
    pub(crate) websocket: Option<Arc<WsDial>>,
}

impl Default for TcpClientBuilder {
    fn default() -> Self {
        TcpClientBuilder {
            connection_number: 1,
            connect_timeout: Duration::from_secs(3),
            redial: RedialPolicy::default(),
            socket_options: SocketOptions::default(),
            session_options: SessionOptions::default(),
            transport_filter: None,
            websocket: None,
        }
    }
}

impl TcpClientBuilder {
    /// Dials with TLS: every session starts with a handshake under `config`, and the
    /// server's certificate must be valid for `server_name` (also sent as SNI) and chain to
    /// the configuration's roots. Writes wait for the handshake; a failed one ends the
    /// session with `on_error` and counts as a failed dial. See [`crate::tls`].
    ///
    /// ```
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// let config = getty_transports::tls::client_config(cert.cert.pem().as_bytes()).unwrap();
    /// let b = getty_transports::tcp::TcpClient::builder().tls(config, "localhost");
    /// ```
    pub fn tls(
        mut self,
        config: Arc<rustls::ClientConfig>,
        server_name: impl Into<String>,
    ) -> Self {
        self.transport_filter = Some(FilterFactory::tls_client(config, server_name.into()));
        self
    }

    /// How many sessions to keep open to the address (default 1; at least 1).
    ///
    /// ```
    /// let b = getty_transports::tcp::TcpClient::builder().connection_number(8);
    /// ```
    pub fn connection_number(mut self, n: usize) -> Self {
        self.connection_number = n.max(1);
        self
    }

    /// How long a connect may take (default 3 s), measured by a reactor timer.
    ///
    /// ```
    /// let b = getty_transports::tcp::TcpClient::builder()
    ///     .connect_timeout(std::time::Duration::from_millis(500));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = clamp_timeout(timeout.max(Duration::from_millis(1)));
        self
    }

    /// Redial delays: the first after `min`, doubling per consecutive failure up to `max`,
    /// each drawn at random from its upper half so that many clients do not redial in step
    /// (defaults 100 ms and 5 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = getty_transports::tcp::TcpClient::builder()
    ///     .reconnect_backoff(Duration::from_millis(10), Duration::from_secs(1));
    /// ```
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.redial = self.redial.backoff(min, max);
        self
    }

    /// Gives up after this many consecutive failed dials (default: never).
    ///
    /// ```
    /// let b = getty_transports::tcp::TcpClient::builder().max_consecutive_failures(Some(50));
    /// ```
    pub fn max_consecutive_failures(mut self, limit: Option<u32>) -> Self {
        self.redial = self.redial.max_failures(limit);
        self
    }

    /// Options applied to every dialled socket.
    ///
    /// ```
    /// let b = getty_transports::tcp::TcpClient::builder()
    ///     .socket_options(getty_transports::SocketOptions::default());
    /// ```
    pub fn socket_options(mut self, options: SocketOptions) -> Self {
        self.socket_options = options;
        self
    }

    /// The options every session starts with.
    ///
    /// ```
    /// let b = getty_transports::tcp::TcpClient::builder()
    ///     .session_options(getty_transports::SessionOptions::default());
    /// ```
    pub fn session_options(mut self, options: SessionOptions) -> Self {
        self.session_options = options;
        self
    }

    /// Resolves `addr` and makes the client. Nothing is dialled until it is spawned into a
    /// reactor. `setup` runs for every connected socket (an error drops it and redials).
    ///
    /// ```
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::{tcp::TcpClient, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<RawCodec> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {} }
    /// let client = TcpClient::builder().build("127.0.0.1:9", |_| Ok((RawCodec, Sink))).unwrap();
    /// assert_eq!(client.peer_addr().port(), 9);
    /// ```
    pub fn build<A, F, C, H>(self, addr: A, setup: F) -> io::Result<TcpClient<F, C, H>>
    where
        A: ToSocketAddrs,
        F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)> + 'static,
        C: Decoder + 'static,
        H: Handler<C>,
    {
        let addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing")
        })?;
        Ok(TcpClient {
            addr,
            setup,
            session_options: Arc::new(self.session_options.clone()),
            redial: Redial::new(self.redial.clone(), "tcp", module_path!()),
            config: self,
            sessions: Vec::new(),
            dialing: 0,
            _types: PhantomData,
        })
    }
}

/// What a dialer tells its client.
enum DialOutcome {
    Connected(TcpStream),
    Failed(Error),
}

/// A client that keeps `connection_number` sessions to one address. Spawn it into a reactor;
/// send it [`Close`] to close its sessions and stop redialling.
///
/// ```
/// use getty_codec::RawCodec;
/// use getty_reactor::Reactor;
/// use getty_transports::{tcp::TcpClient, Handler, Session};
///
/// struct Sink;
/// impl Handler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {}
/// }
/// let client = TcpClient::builder().build("127.0.0.1:9", |_| Ok((RawCodec, Sink))).unwrap();
/// let mut reactor = Reactor::new().unwrap();
/// let id = reactor.spawn(Box::new(client));
/// reactor.handle().send(id, Box::new(getty_transports::Close)).unwrap();
/// ```
pub struct TcpClient<F, C, H> {
    addr: SocketAddr,
    setup: F,
    session_options: Arc<SessionOptions>,
    config: TcpClientBuilder,
    sessions: Vec<EntryId>,
    dialing: usize,
    /// Consecutive failed dials; reset by a successful one.
    redial: Redial,
    _types: PhantomData<fn() -> (C, H)>,
}

impl TcpClient<(), (), ()> {
    /// A builder with default settings.
    ///
    /// ```
    /// let b = getty_transports::tcp::TcpClient::builder();
    /// ```
    pub fn builder() -> TcpClientBuilder {
        TcpClientBuilder::default()
    }
}

impl<F, C, H> TcpClient<F, C, H>
where
    F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C>,
{
    /// The address this client dials.
    ///
    /// ```
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::{tcp::TcpClient, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<RawCodec> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {} }
    /// let c = TcpClient::builder().build("127.0.0.1:9", |_| Ok((RawCodec, Sink))).unwrap();
    /// assert!(c.peer_addr().ip().is_loopback());
    /// ```
    pub fn peer_addr(&self) -> SocketAddr {
        self.addr
    }

    fn missing(&self) -> usize {
        self.config
            .connection_number
            .saturating_sub(self.sessions.len() + self.dialing)
    }

    fn dial_missing(&mut self, cx: &mut Context<'_>) {
        for _ in 0..self.missing() {
            match TcpStream::connect(self.addr) {
                Ok(stream) => {
                    self.dialing += 1;
                    cx.spawn(Box::new(Dialer {
                        stream: Some(stream),
                        client: cx.id(),
                        timeout: self.config.connect_timeout,
                        timer: None,
                    }));
                }
                Err(e) => {
                    self.note_failure(Error::Io(e));
                }
            }
        }
        self.schedule_redial(cx);
    }

    fn on_dialled(&mut self, cx: &mut Context<'_>, outcome: DialOutcome) {
        self.dialing = self.dialing.saturating_sub(1);
        match outcome {
            DialOutcome::Connected(stream) => self.open_session(cx, stream),
            DialOutcome::Failed(e) => self.note_failure(e),
        }
    }

    fn open_session(&mut self, cx: &mut Context<'_>, stream: TcpStream) {
        let plan = Plan {
            socket_options: &self.config.socket_options,
            session_options: &self.session_options,
            transport_filter: self.config.transport_filter.as_ref(),
            websocket: self.config.websocket.as_deref(),
        };
        let session = prepare(stream, self.addr, &plan, &mut self.setup, cx.now(), Some(cx.id()));
        match session {
            // Success is counted when on_open accepts the session (SessionOpened), so a
            // server that accepts and then refuses every connection still backs off.
            Some(session) => self.sessions.push(cx.spawn(Box::new(session))),
            None => {
                cx.extension::<Metrics>().refused += 1;
                self.note_failure(Error::Io(io::Error::other("setup refused the connection")))
            }
        }
    }

    fn note_failure(&mut self, error: Error) {
        self.redial.failed(self.addr, &error);
    }

    /// Closes the client once it has failed too many dials in a row.
    fn check_gave_up(&mut self, cx: &mut Context<'_>) -> Status {
        if self.redial.gave_up(self.addr) {
            return self.close_all(cx);
        }
        Status::Continue
    }

    fn schedule_redial(&mut self, cx: &mut Context<'_>) {
        let missing = self.missing();
        self.redial.schedule(cx, missing);
    }

    fn close_all(&mut self, cx: &mut Context<'_>) -> Status {
        log::debug!(
            "client for {} closing {} sessions",
            self.addr,
            self.sessions.len()
        );
        self.redial.cancel(cx);
        for id in self.sessions.drain(..) {
            cx.send(id, Box::new(Close));
        }
        // Dialers in flight report to an entry that no longer exists; their reports are
        // dropped along with the sockets they carry.
        Status::Done
    }
}

impl<F, C, H> Entry for TcpClient<F, C, H>
where
    F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C>,
{
    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        self.dial_missing(cx);
        self.check_gave_up(cx)
    }

    fn on_ready(&mut self, _cx: &mut Context<'_>, _ready: Ready) -> Status {
        Status::Continue // the client owns no socket
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _tag: u64) -> Status {
        self.redial.fired();
        self.dial_missing(cx);
        // A `connect` that fails at once (ENETUNREACH, say) is counted in `dial_missing`,
        // not reported by a dialer: check the limit here too, or such a client would
        // redial forever whatever `max_consecutive_failures` says.
        self.check_gave_up(cx)
    }

    fn on_command(&mut self, cx: &mut Context<'_>, command: Command) -> Status {
        if command.is::<Close>() {
            return self.close_all(cx);
        }
        let command = match command.downcast::<DialOutcome>() {
            Ok(outcome) => {
                self.on_dialled(cx, *outcome);
                None
            }
            Err(other) => Some(other),
        };
        let command = match command.map(|c| c.downcast::<SessionOpened>()) {
            Some(Ok(_)) => {
                self.redial.succeeded();
                None
            }
            Some(Err(other)) => Some(other),
            None => None,
        };
        if let Some(ended) = command.and_then(|c| c.downcast::<SessionEnded>().ok()) {
            self.sessions.retain(|id| *id != ended.id);
            if let Err(why) = ended.outcome {
                self.note_failure(why);
            }
        }
        if self.check_gave_up(cx) == Status::Done {
            return Status::Done;
        }
        self.schedule_redial(cx);
        Status::Continue
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>, _deadline: Option<Instant>) -> Status {
        // Sessions hear the shutdown themselves; the client just stops redialling.
        self.redial.cancel(cx);
        Status::Done
    }
}

/// One connect attempt, with its timeout.
struct Dialer {
    stream: Option<TcpStream>,
    client: EntryId,
    timeout: Duration,
    timer: Option<TimerId>,
}

impl Dialer {
    fn report(&mut self, cx: &mut Context<'_>, outcome: DialOutcome) -> Status {
        if let Some(timer) = self.timer.take() {
            cx.cancel_timer(timer);
        }
        cx.send(self.client, Box::new(outcome));
        Status::Done
    }

    /// Whether the connect finished: `Ok(None)` while it is still in progress.
    fn connect_result(stream: &TcpStream) -> io::Result<Option<()>> {
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        let peer = match stream.peer_addr() {
            Ok(peer) => peer,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(None),
            Err(e) => return Err(e),
        };
        // Dialling a free port on this host can connect the socket to itself.
        if stream.local_addr()? == peer {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("self-connect to {peer} refused"),
            ));
        }
        Ok(Some(()))
    }
}

impl Entry for Dialer {
    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        let Some(stream) = self.stream.as_mut() else {
            return Status::Done;
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = cx.registry().register(stream, cx.token(), interest) {
            return self.report(cx, DialOutcome::Failed(Error::Io(e)));
        }
        self.timer = Some(cx.set_timer(self.timeout, 0));
        Status::Continue
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _ready: Ready) -> Status {
        let Some(stream) = self.stream.as_mut() else {
            return Status::Done;
        };
        match Dialer::connect_result(stream) {
            Ok(None) => Status::Continue,
            Ok(Some(())) => {
                let mut stream = self.stream.take().expect("checked above");
                // The session registers the socket again under its own token.
                let _ = cx.registry().deregister(&mut stream);
                self.report(cx, DialOutcome::Connected(stream))
            }
            Err(e) => self.report(cx, DialOutcome::Failed(Error::Io(e))),
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _tag: u64) -> Status {
        self.timer = None;
        self.report(cx, DialOutcome::Failed(Error::ConnectTimeout(self.timeout)))
    }
}
