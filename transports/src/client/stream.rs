//! How stream clients dial (TCP, WebSocket, unix sockets): a non-blocking connect in a
//! [`Dialer`] entry with the connect timeout, then the setup hook, the session's filters
//! and, for WebSocket, the upgrade before the session opens.

use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use getty_codec::Decoder;
use getty_reactor::{Context, Entry, NoCommand, Ready, Recipient, Status};
use mio::Interest;

use super::{Attempt, Client, DialTypes, Dialing, Peer};
use crate::builder::DialSettings;
use crate::commands::{OwnerNote, SessionCommand};
use crate::session::Handler;
use crate::setup::{prepare_session, FilterFactory, Plan, Prepared, Setup};
use crate::stream::Stream;
#[cfg(feature = "ws")]
use crate::ws::WsDial;
use crate::{Error, Metrics, SessionOptions, SocketOptions, Transport};

/// A stream socket a client can dial.
pub(crate) trait Dial: Stream + Sized + Send {
    /// What is dialled, for the log ("tcp", "unix").
    const KIND: &'static str;

    /// Starts a non-blocking connect to `addr`.
    fn dial(addr: &Self::Addr) -> io::Result<Self>;

    /// Whether the connect finished: `Ok(None)` while it is still in progress.
    fn connect_result(&self) -> io::Result<Option<()>>;
}

/// What a stream client runs with, gathered from its builder (`StreamDial::config`).
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pub(crate) dial: DialSettings,
    pub(crate) connect_timeout: Duration,
    pub(crate) socket_options: SocketOptions,
    pub(crate) session_options: SessionOptions,
    /// The filter nearest the wire (TLS), if any.
    pub(crate) transport_filter: Option<FilterFactory>,
    /// Every session starts with this WebSocket upgrade.
    #[cfg(feature = "ws")]
    pub(crate) websocket: Option<Arc<WsDial>>,
}

/// How a client's connected socket becomes the entry of a session of transport `Self`: at
/// once for a plain one, through the upgrade for a WebSocket.
pub(crate) trait Opening<S: Stream>: Transport<Addr = S::Addr> {
    fn open<C, H>(
        prepared: Prepared<S, C, H>,
        config: &ClientConfig,
        owner: Recipient<OwnerNote>,
        now: Instant,
    ) -> Box<dyn Entry<Command = SessionCommand>>
    where
        C: Decoder + 'static,
        H: Handler<C, Self>;
}

impl Opening<mio::net::TcpStream> for crate::Tcp {
    fn open<C, H>(
        prepared: Prepared<mio::net::TcpStream, C, H>,
        _config: &ClientConfig,
        owner: Recipient<OwnerNote>,
        now: Instant,
    ) -> Box<dyn Entry<Command = SessionCommand>>
    where
        C: Decoder + 'static,
        H: Handler<C, Self>,
    {
        Box::new(prepared.into_plain_entry(now, Some(owner)))
    }
}

/// A client of stream sockets of type `S` whose sessions are of transport `T`.
pub(crate) type StreamClient<S, T, F, C, H> = Client<StreamDialing<S, T, F, C, H>>;

/// How a client of stream sockets of type `S` dials, with the setup hook `F`, and makes
/// sessions of transport `T`.
pub(crate) struct StreamDialing<S, T, F, C, H> {
    setup: F,
    session_options: Arc<SessionOptions>,
    config: ClientConfig,
    _socket: PhantomData<fn() -> S>,
    _types: PhantomData<Types<T, C, H>>,
}

/// The types a client makes sessions of, without owning any.
type Types<T, C, H> = fn() -> (T, C, H);

impl<S, T, F, C, H> StreamClient<S, T, F, C, H>
where
    S: Dial,
    T: Opening<S>,
    F: FnMut(&mut Setup<'_, S::Addr>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, T>,
{
    /// A client of `peer` (see [`Client::new`]), each lookup given the connect timeout.
    pub(crate) fn with_setup(peer: Peer<S::Addr>, setup: F, config: ClientConfig) -> Self {
        let (settings, deadline) = (config.dial.clone(), config.connect_timeout);
        let dialing = StreamDialing {
            setup,
            session_options: Arc::new(config.session_options.clone()),
            config,
            _socket: PhantomData,
            _types: PhantomData,
        };
        Client::new(dialing, peer, settings, deadline)
    }
}

impl<S: Dial, T, F, C, H> DialTypes for StreamDialing<S, T, F, C, H> {
    type Addr = S::Addr;
    type Socket = S;
}

impl<S, T, F, C, H> Dialing for StreamDialing<S, T, F, C, H>
where
    S: Dial,
    T: Opening<S>,
    F: FnMut(&mut Setup<'_, S::Addr>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, T>,
{
    type Pending = S;
    type Dialer = Dialer<S>;
    type Session = Box<dyn Entry<Command = SessionCommand>>;

    const KIND: &'static str = S::KIND;
    const LOG_TARGET: &'static str = "getty_transports::client";
    const GOOD_WHEN_SPAWNED: bool = false;

    fn start(&mut self, addr: &S::Addr) -> Result<S, Error> {
        Ok(S::dial(addr)?)
    }

    fn dialer(&self, stream: S, attempt: Attempt<S, S::Addr>) -> Dialer<S> {
        Dialer {
            stream: Some(stream),
            attempt,
            timeout: self.config.connect_timeout,
        }
    }

    fn open(
        &mut self,
        cx: &mut Context<'_>,
        stream: S,
        peer: S::Addr,
        owner: Option<Recipient<OwnerNote>>,
    ) -> Result<Self::Session, Error> {
        let plan = Plan {
            socket_options: &self.config.socket_options,
            session_options: &self.session_options,
            transport_filter: self.config.transport_filter.as_ref(),
            #[cfg(all(feature = "ws", feature = "deflate"))]
            websocket: self.config.websocket.is_some(),
        };
        // The setup hook is user code: a panic in it counts as one failed dial (logged by
        // the reactor), and the client redials and keeps its other sessions.
        let setup = &mut self.setup;
        let session = cx.catch_panic("a client's setup hook", |_| {
            prepare_session(stream, peer, &plan, setup).ok_or("refused")
        });
        // A client always has an address for its sessions (its command type takes their
        // notes); without one there would be no one to hear the session end.
        let owner = owner.ok_or(Error::Closed)?;
        match session.unwrap_or(Err("panicked")) {
            Ok(prepared) => Ok(T::open(prepared, &self.config, owner, cx.now())),
            Err(what) => {
                cx.extension::<Metrics>().refused += 1;
                let detail = format!("the setup hook {what} the connection");
                Err(Error::Io(io::Error::other(detail)))
            }
        }
    }
}

/// One connect attempt, with its timeout.
pub(crate) struct Dialer<S: Dial> {
    stream: Option<S>,
    attempt: Attempt<S, S::Addr>,
    timeout: Duration,
}

impl<S: Dial> Dialer<S> {
    fn failed(&mut self, cx: &mut Context<'_>, error: Error) -> Status {
        if let Some(mut stream) = self.stream.take() {
            let _ = cx.registry().deregister(&mut stream);
        }
        self.attempt.failed(cx, error)
    }
}

impl<S: Dial> Entry for Dialer<S> {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        let Some(stream) = self.stream.as_mut() else {
            return Status::Done;
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = cx.registry().register(stream, cx.token(), interest) {
            return self.failed(cx, Error::Io(e));
        }
        self.attempt.arm(cx, self.timeout);
        Status::Continue
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _ready: Ready) -> Status {
        let Some(stream) = self.stream.as_mut() else {
            return Status::Done;
        };
        match stream.connect_result() {
            Ok(None) => Status::Continue,
            Ok(Some(())) => {
                let mut stream = self.stream.take().expect("checked above");
                // The session registers the socket again under its own token.
                let _ = cx.registry().deregister(&mut stream);
                self.attempt.connected(cx, stream)
            }
            Err(e) => self.failed(cx, Error::Io(e)),
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _tag: u64) -> Status {
        self.attempt.timer_fired();
        self.failed(cx, Error::ConnectTimeout(self.timeout))
    }
}

impl Dial for mio::net::TcpStream {
    const KIND: &'static str = "tcp";

    fn dial(addr: &std::net::SocketAddr) -> io::Result<Self> {
        mio::net::TcpStream::connect(*addr)
    }

    fn connect_result(&self) -> io::Result<Option<()>> {
        if let Some(e) = self.take_error()? {
            return Err(e);
        }
        let peer = match self.peer_addr() {
            Ok(peer) => peer,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(None),
            Err(e) => return Err(e),
        };
        // Dialling a free port on this host can connect the socket to itself.
        if self.local_addr()? == peer {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("self-connect to {peer} refused"),
            ));
        }
        Ok(Some(()))
    }
}
