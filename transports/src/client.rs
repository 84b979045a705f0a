//! The client every stream transport shares (TCP, WebSocket, unix sockets): it keeps
//! `connection_number` sessions to one address, redialling with capped, jittered
//! exponential backoff until the app closes it.
//!
//! Each connect attempt is a `Dialer` entry of its own (a connecting socket needs its own
//! token). A dialer reports back to the client with a command; the client runs the setup
//! hook and spawns the session, which tells the client when it ends. No locks, no threads,
//! and no re-entrancy: the client and its sessions only ever exchange queued commands, so
//! closing a client while it redials cannot deadlock (getty's #132).

use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use getty_codec::Decoder;
use getty_reactor::{Command, Context, Entry, EntryId, Ready, Status, TimerId};
use mio::Interest;

use crate::redial::{Redial, RedialPolicy};
use crate::session::Handler;
use crate::setup::{prepare, FilterFactory, Plan, Setup};
use crate::stream::{SessionEnded, SessionOpened, Stream};
use crate::ws::WsDial;
use crate::{Close, Error, Metrics, SessionOptions, SocketOptions};

/// A stream socket a client can dial.
pub(crate) trait Dial: Stream + Sized {
    /// What is dialled, for the log ("tcp", "unix").
    const KIND: &'static str;

    /// Starts a non-blocking connect to `addr`.
    fn dial(addr: &Self::Addr) -> io::Result<Self>;

    /// Whether the connect finished: `Ok(None)` while it is still in progress.
    fn connect_result(&self) -> io::Result<Option<()>>;
}

/// What a client builder collects, whatever the transport.
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pub(crate) connection_number: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) redial: RedialPolicy,
    pub(crate) socket_options: SocketOptions,
    pub(crate) session_options: SessionOptions,
    /// The filter nearest the wire (TLS), if any.
    pub(crate) transport_filter: Option<FilterFactory>,
    /// The TLS server name, checked when the client is built.
    pub(crate) tls_server_name: Option<String>,
    /// Every session starts with this WebSocket upgrade.
    pub(crate) websocket: Option<Arc<WsDial>>,
}

impl Default for ClientConfig {
    /// One connection, a 3 s connect timeout, the default redial policy.
    fn default() -> Self {
        ClientConfig {
            connection_number: 1,
            connect_timeout: Duration::from_secs(3),
            redial: RedialPolicy::default(),
            socket_options: SocketOptions::default(),
            session_options: SessionOptions::default(),
            transport_filter: None,
            tls_server_name: None,
            websocket: None,
        }
    }
}

/// What a dialer tells its client.
enum DialOutcome<S> {
    Connected(S),
    Failed(Error),
}

/// A client of stream sockets of type `S`.
pub(crate) struct StreamClient<S: Dial, F, C, H> {
    addr: S::Addr,
    setup: F,
    session_options: Arc<SessionOptions>,
    config: ClientConfig,
    sessions: Vec<EntryId>,
    dialing: usize,
    /// Consecutive failed dials; reset by a successful one.
    redial: Redial,
    _types: PhantomData<fn() -> (C, H)>,
}

impl<S, F, C, H> StreamClient<S, F, C, H>
where
    S: Dial,
    F: FnMut(&mut Setup<'_, S::Addr>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, S::Addr>,
{
    pub(crate) fn new(addr: S::Addr, setup: F, config: ClientConfig) -> Self {
        StreamClient {
            addr,
            setup,
            session_options: Arc::new(config.session_options.clone()),
            redial: Redial::new(config.redial.clone(), S::KIND, module_path!()),
            config,
            sessions: Vec::new(),
            dialing: 0,
            _types: PhantomData,
        }
    }

    pub(crate) fn peer_addr(&self) -> &S::Addr {
        &self.addr
    }

    fn missing(&self) -> usize {
        self.config
            .connection_number
            .saturating_sub(self.sessions.len() + self.dialing)
    }

    fn dial_missing(&mut self, cx: &mut Context<'_>) {
        for _ in 0..self.missing() {
            match S::dial(&self.addr) {
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

    fn on_dialled(&mut self, cx: &mut Context<'_>, outcome: DialOutcome<S>) {
        self.dialing = self.dialing.saturating_sub(1);
        match outcome {
            DialOutcome::Connected(stream) => self.open_session(cx, stream),
            DialOutcome::Failed(e) => self.note_failure(e),
        }
    }

    fn open_session(&mut self, cx: &mut Context<'_>, stream: S) {
        let plan = Plan {
            socket_options: &self.config.socket_options,
            session_options: &self.session_options,
            transport_filter: self.config.transport_filter.as_ref(),
            websocket: self.config.websocket.as_deref(),
        };
        let peer = self.addr.clone();
        let session = prepare(
            stream,
            peer,
            &plan,
            &mut self.setup,
            cx.now(),
            Some(cx.id()),
        );
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
        self.redial.failed(&self.addr, &error);
    }

    /// Closes the client once it has failed too many dials in a row.
    fn check_gave_up(&mut self, cx: &mut Context<'_>) -> Status {
        if self.redial.gave_up(&self.addr) {
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

impl<S, F, C, H> Entry for StreamClient<S, F, C, H>
where
    S: Dial,
    F: FnMut(&mut Setup<'_, S::Addr>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, S::Addr>,
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
        let command = match command.downcast::<DialOutcome<S>>() {
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
struct Dialer<S> {
    stream: Option<S>,
    client: EntryId,
    timeout: Duration,
    timer: Option<TimerId>,
}

impl<S: Dial> Dialer<S> {
    fn report(&mut self, cx: &mut Context<'_>, outcome: DialOutcome<S>) -> Status {
        if let Some(timer) = self.timer.take() {
            cx.cancel_timer(timer);
        }
        cx.send(self.client, Box::new(outcome));
        Status::Done
    }
}

impl<S: Dial> Entry for Dialer<S> {
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
        match stream.connect_result() {
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
