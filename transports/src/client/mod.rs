//! The client every transport shares (TCP, WebSocket, unix sockets, UDP): it keeps
//! `connection_number` sessions to one peer, redialling with capped, jittered exponential
//! backoff until the app closes it.
//!
//! [`Client`] owns everything clients have in common: the sessions it keeps, the one redial
//! timer (`redial.rs`), the addresses and the re-resolution of a host name before every
//! redial (`resolve.rs`, with its deadline timer), the count of consecutive failed dials and
//! giving up after `max_consecutive_failures`, closing every session on [`Close`], and the
//! notes its sessions send it. What differs per transport is a [`Dialing`]: how one dial
//! starts, the entry that waits for its verdict, and how a connected socket becomes a
//! session. Stream sockets dial in `stream.rs`; UDP in `udp/client.rs`.
//!
//! Each dial is an entry of its own (a dialling socket needs its own token). It reports
//! back to the client with a command; the client runs the setup hook and spawns the
//! session, which tells the client when it ends. A peer may have several addresses
//! ([`DialTarget`]): a failed attempt goes on to the next address at once, and only when
//! all have failed is the dial a failure. A host name's answer comes back as a command,
//! with a deadline: the reactor never waits on DNS, and a lookup that hangs delays a redial
//! by the lookup's deadline at most. No locks and no re-entrancy: the client, its dialers
//! and its sessions only ever exchange queued commands, so closing a client while it
//! redials cannot deadlock (getty's #132).

mod stream;
mod target;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use getty_reactor::{Context, Entry, EntryId, NoCommand, Ready, Recipient, Status, TimerId};

use crate::builder::DialSettings;
use crate::commands::{OwnerNote, SessionCommand};
use crate::redial::Redial;
use crate::resolve::{round_order, Lookup, Next, Resolved, DEADLINE_TAG};
use crate::stream::SessionEnded;
use crate::{Close, Error, Metrics};

pub(crate) use stream::{ClientConfig, Dial, Opening, StreamClient};
pub use target::DialTarget;
pub(crate) use target::Peer;

/// What a transport dials and what a dial yields. Kept apart from [`Dialing`] (and free of
/// its bounds) so that a client type can name `Client<D>` without them.
pub(crate) trait DialTypes {
    /// An address of the peer.
    type Addr: Clone + PartialEq + fmt::Display + fmt::Debug + Send + Sync + 'static;
    /// What a good dial yields: a connected stream, a verified UDP socket.
    type Socket: Send + 'static;
}

/// What a client's command type is for a transport's dials.
type CommandOf<D> = ClientCommand<<D as DialTypes>::Socket, <D as DialTypes>::Addr>;

/// How one transport dials a connection and turns it into a session.
pub(crate) trait Dialing: DialTypes + Sized + 'static {
    /// A dial that has started and waits for its verdict: a connecting stream, a socket
    /// whose probe is out.
    type Pending;
    /// The entry that waits for a started dial's verdict and reports it ([`Attempt`]).
    type Dialer: Entry<Command = NoCommand>;
    /// The entry of a session.
    type Session: Entry<Command = SessionCommand>;

    /// What is dialled, for the log ("tcp", "unix", "udp").
    const KIND: &'static str;
    /// The log target of the client's lines (its transport's client module).
    const LOG_TARGET: &'static str;
    /// True when the dialer itself proves the peer alive (UDP's probe): a session counts as
    /// a good dial when it is spawned. Otherwise only when it says it opened (`on_open`
    /// accepted it), so that a server that accepts and then refuses every connection still
    /// makes the client back off.
    const GOOD_WHEN_SPAWNED: bool;

    /// Starts a dial to `addr`; an error fails this address at once (ENETUNREACH, an
    /// address of a family the host lacks).
    fn start(&mut self, addr: &Self::Addr) -> Result<Self::Pending, Error>;

    /// The entry that waits for `pending`'s verdict and tells `attempt`.
    fn dialer(
        &self,
        pending: Self::Pending,
        attempt: Attempt<Self::Socket, Self::Addr>,
    ) -> Self::Dialer;

    /// Runs the setup hook on a good dial's socket and makes its session, which tells
    /// `owner` when it opens and ends. An error (the hook refused or panicked) fails the
    /// dial.
    fn open(
        &mut self,
        cx: &mut Context<'_>,
        socket: Self::Socket,
        peer: Self::Addr,
        owner: Option<Recipient<OwnerNote>>,
    ) -> Result<Self::Session, Error>;

    /// One address failed (the dial may go on with the next one).
    fn attempt_failed(&mut self, _addr: &Self::Addr, _error: &Error) {}
}

/// What a dialer tells its client: a socket of type `S` connected to an `A`, or why not.
pub(crate) enum DialOutcome<S, A> {
    /// Connected (verified) to `addr`.
    Connected { socket: S, addr: A },
    /// The attempt at `addrs[index]` failed; the client tries the next address, if any.
    Failed {
        error: Error,
        addrs: Arc<[A]>,
        index: usize,
    },
}

/// One dial to `addrs[index]`, as its dialer sees it: where to report, and its timer.
pub(crate) struct Attempt<S, A> {
    addrs: Arc<[A]>,
    index: usize,
    client: Recipient<ClientCommand<S, A>>,
    timer: Option<TimerId>,
}

impl<S: Send + 'static, A: Clone + Send + Sync + 'static> Attempt<S, A> {
    /// The address dialled.
    pub(crate) fn addr(&self) -> &A {
        &self.addrs[self.index]
    }

    /// Gives the dial `wait` to decide (the dialer's `on_timer` hears when it has passed).
    pub(crate) fn arm(&mut self, cx: &mut Context<'_>, wait: Duration) {
        self.timer = Some(cx.set_timer(wait, 0));
    }

    /// The timer armed by [`arm`](Self::arm) fired.
    pub(crate) fn timer_fired(&mut self) {
        self.timer = None;
    }

    pub(crate) fn connected(&mut self, cx: &mut Context<'_>, socket: S) -> Status {
        let addr = self.addr().clone();
        self.report(cx, DialOutcome::Connected { socket, addr })
    }

    pub(crate) fn failed(&mut self, cx: &mut Context<'_>, error: Error) -> Status {
        let addrs = Arc::clone(&self.addrs);
        let index = self.index;
        self.report(
            cx,
            DialOutcome::Failed {
                error,
                addrs,
                index,
            },
        )
    }

    fn report(&mut self, cx: &mut Context<'_>, outcome: DialOutcome<S, A>) -> Status {
        if let Some(timer) = self.timer.take() {
            cx.cancel_timer(timer);
        }
        cx.send(self.client, outcome);
        Status::Done
    }
}

/// What a client accepts: [`Close`] (close its sessions and stop redialling). It cannot be
/// aborted. The rest (its dialers' outcomes, its sessions' notes, resolved addresses) is
/// the framework's: `S` is what the client's dials yield and `A` its address type. Each
/// transport names its client's: [`TcpClientCommand`](crate::tcp::TcpClientCommand),
/// [`UnixClientCommand`](crate::unix::UnixClientCommand),
/// [`UdpClientCommand`](crate::udp::UdpClientCommand).
///
/// ```
/// use getty_codec::RawCodec;
/// use getty_transports::tcp::TcpClient;
/// use getty_transports::{Close, Handler, Session};
/// struct Quiet;
/// impl Handler<RawCodec> for Quiet {
///     fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {}
/// }
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let client = TcpClient::builder()
///     .build(listener.local_addr().unwrap(), |_| Ok((RawCodec, Quiet)))
///     .unwrap();
/// let mut reactor = getty_reactor::Reactor::new().unwrap();
/// let client = reactor.spawn(client);
/// reactor.handle().send(client, Close).unwrap();
/// ```
pub struct ClientCommand<S, A>(ClientOp<S, A>);

/// The commands inside a [`ClientCommand`].
enum ClientOp<S, A> {
    Close,
    Dialled(DialOutcome<S, A>),
    Resolved(Resolved<A>),
    Opened(EntryId),
    Ended(SessionEnded),
}

impl<S, A> From<Close> for ClientCommand<S, A> {
    fn from(_: Close) -> Self {
        ClientCommand(ClientOp::Close)
    }
}

impl<S, A> From<DialOutcome<S, A>> for ClientCommand<S, A> {
    fn from(outcome: DialOutcome<S, A>) -> Self {
        ClientCommand(ClientOp::Dialled(outcome))
    }
}

impl<S, A> From<Resolved<A>> for ClientCommand<S, A> {
    fn from(resolved: Resolved<A>) -> Self {
        ClientCommand(ClientOp::Resolved(resolved))
    }
}

impl<S, A> From<OwnerNote> for ClientCommand<S, A> {
    fn from(note: OwnerNote) -> Self {
        ClientCommand(match note {
            OwnerNote::Close => ClientOp::Close,
            OwnerNote::Opened(id) => ClientOp::Opened(id),
            OwnerNote::Ended(ended) => ClientOp::Ended(ended),
        })
    }
}

/// A session of a client's that counted as a good dial.
struct Opened {
    id: EntryId,
    /// The consecutive failures its success reset: they count again should the session
    /// turn out a failed dial after all.
    wiped: u32,
    /// When it opened: one that ends soon after makes the next redial wait longer.
    at: Instant,
}

impl Opened {
    fn new(id: EntryId, wiped: u32, at: Instant) -> Self {
        Opened { id, wiped, at }
    }
}

/// A client of one peer, dialling with `D`.
pub(crate) struct Client<D: DialTypes> {
    /// The addresses to dial, in order (never empty).
    addrs: Arc<[D::Addr]>,
    /// The address the last good dial reached: each round starts there.
    last_good: Option<D::Addr>,
    /// Resolves the host name again before a redial, with a deadline.
    lookup: Lookup<D::Addr>,
    /// What is dialled, for the log: the address, the list, or `host:port`.
    label: String,
    connection_number: usize,
    sessions: Vec<Recipient<SessionCommand>>,
    /// The sessions that counted as good dials.
    opened: Vec<Opened>,
    /// Dials in flight.
    dialing: usize,
    /// Consecutive failed dials, and the redial timer.
    redial: Redial,
    /// The transport's part.
    pub(crate) transport: D,
}

impl<D: DialTypes> Client<D> {
    /// The first address dialled.
    pub(crate) fn peer_addr(&self) -> &D::Addr {
        &self.addrs[0]
    }

    /// Writes the client's state as the struct `name`.
    pub(crate) fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("addrs", &self.addrs)
            .field("sessions", &self.sessions.len())
            .field("dialing", &self.dialing)
            .field("failures", &self.redial.failures())
            .finish_non_exhaustive()
    }
}

impl<D: Dialing> Client<D> {
    /// A client of `peer`, its addresses tried in order; with a resolver, they are resolved
    /// again (off the reactor, on the shared resolver) before every redial, each lookup
    /// given `lookup_deadline` before the client dials without its answer.
    pub(crate) fn new(
        transport: D,
        peer: Peer<D::Addr>,
        settings: DialSettings,
        lookup_deadline: Duration,
    ) -> Self {
        assert!(!peer.addrs.is_empty(), "a client needs an address");
        Client {
            addrs: peer.addrs.into(),
            last_good: None,
            lookup: Lookup::new::<CommandOf<D>>(peer.resolver, lookup_deadline),
            label: peer.label,
            connection_number: settings.connection_number,
            sessions: Vec::new(),
            opened: Vec::new(),
            dialing: 0,
            redial: Redial::new(settings.redial, D::KIND, D::LOG_TARGET),
            transport,
        }
    }

    fn missing(&self) -> usize {
        self.connection_number
            .saturating_sub(self.sessions.len() + self.dialing)
    }

    /// Dials the missing sessions, each starting at the address that last worked.
    fn dial_missing(&mut self, cx: &mut Context<'_>) {
        let order = round_order(&self.addrs, self.last_good.as_ref());
        for _ in 0..self.missing() {
            self.dial_from(cx, Arc::clone(&order), 0);
        }
        self.schedule_redial(cx);
    }

    /// Starts a dial to the first of `addrs[from..]` that can be started, in a dialer of
    /// its own. When none can, that is one failed dial.
    fn dial_from(&mut self, cx: &mut Context<'_>, addrs: Arc<[D::Addr]>, from: usize) {
        let mut last_error = None;
        for index in from..addrs.len() {
            match self.transport.start(&addrs[index]) {
                Ok(pending) => {
                    let client = cx
                        .recipient::<CommandOf<D>>()
                        .expect("a client takes its ClientCommand");
                    let attempt = Attempt {
                        addrs,
                        index,
                        client,
                        timer: None,
                    };
                    self.dialing += 1;
                    cx.spawn(self.transport.dialer(pending, attempt));
                    return;
                }
                Err(e) => {
                    let addr = &addrs[index];
                    let kind = D::KIND;
                    log::debug!(target: D::LOG_TARGET, "{kind} dial to {addr} failed at once: {e}");
                    cx.extension::<Metrics>().count_error(&e);
                    self.transport.attempt_failed(addr, &e);
                    last_error = Some(e);
                }
            }
        }
        let error = last_error
            .unwrap_or_else(|| Error::Io(std::io::Error::other("no address left to dial")));
        self.note_failure(error);
    }

    fn on_dialled(&mut self, cx: &mut Context<'_>, outcome: CommandOutcome<D>) {
        self.dialing = self.dialing.saturating_sub(1);
        match outcome {
            DialOutcome::Connected { socket, addr } => {
                self.last_good = Some(addr.clone());
                self.open_session(cx, socket, addr)
            }
            DialOutcome::Failed {
                error,
                addrs,
                index,
            } => {
                // Nothing else hears of a failed attempt (no session, no handler): the
                // metrics count it as `errors_io` (refused, unreachable) or `errors_timeout`.
                cx.extension::<Metrics>().count_error(&error);
                self.transport.attempt_failed(&addrs[index], &error);
                if index + 1 < addrs.len() {
                    // RFC 8305's fall-through: the next address, now; the dial has not
                    // failed until every address has.
                    log::debug!(
                        target: D::LOG_TARGET,
                        "{} dial to {} failed: {error}; trying {}",
                        D::KIND,
                        addrs[index],
                        addrs[index + 1]
                    );
                    self.dial_from(cx, addrs, index + 1);
                } else {
                    self.note_failure(error);
                }
            }
        }
    }

    fn open_session(&mut self, cx: &mut Context<'_>, socket: D::Socket, peer: D::Addr) {
        let owner = cx.recipient_as::<OwnerNote, CommandOf<D>>();
        debug_assert!(owner.is_some(), "a client takes its ClientCommand");
        match self.transport.open(cx, socket, peer.clone(), owner) {
            Ok(session) => {
                let session = cx.spawn(session);
                if D::GOOD_WHEN_SPAWNED {
                    let wiped = self.redial.succeeded();
                    self.opened.push(Opened::new(session.id(), wiped, cx.now()));
                }
                self.sessions.push(session);
            }
            Err(error) => {
                self.transport.attempt_failed(&peer, &error);
                self.note_failure(error);
            }
        }
    }

    fn note_failure(&mut self, error: Error) {
        self.redial.failed(&self.label, &error);
    }

    /// Closes the client once it has failed too many dials in a row.
    fn check_gave_up(&mut self, cx: &mut Context<'_>) -> Status {
        if self.redial.gave_up(&self.label) {
            return self.close_all(cx);
        }
        Status::Continue
    }

    fn schedule_redial(&mut self, cx: &mut Context<'_>) {
        let missing = self.missing();
        self.redial.schedule(cx, missing);
    }

    /// Time to redial: resolve the host name again first, if there is one (the dials
    /// start when the addresses arrive, or when the lookup's deadline passes).
    fn redial_now(&mut self, cx: &mut Context<'_>) {
        if self.lookup.redial(cx, self.missing(), &self.label) == Next::Dial {
            self.dial_missing(cx);
        }
    }

    fn on_resolved(&mut self, cx: &mut Context<'_>, resolved: Resolved<D::Addr>) {
        let (addrs, next) = self.lookup.resolved(cx, resolved, &self.label);
        if let Some(addrs) = addrs {
            self.addrs = addrs.into();
        }
        if next == Next::Dial {
            self.dial_missing(cx);
        }
    }

    fn on_ended(&mut self, ended: SessionEnded, now: Instant) {
        self.sessions.retain(|session| session.id() != ended.id);
        let opened = self.opened.iter().position(|o| o.id == ended.id);
        let opened = opened.map(|at| self.opened.swap_remove(at));
        match ended.outcome {
            // A session that never opened (refused by `on_open`, a failed WebSocket
            // upgrade) was a failed dial. So was one whose handshake the peer refused after
            // it had counted as opened: the failures its success reset count again.
            Err(why) => {
                self.redial.take_back_success(opened.map_or(0, |o| o.wiped));
                self.note_failure(why);
            }
            // One this side closed was served until the client chose to end it (a client
            // may close to send a request per connection): not a quick end.
            Ok(()) => {
                if let Some(opened) = opened {
                    let lived = now.saturating_duration_since(opened.at);
                    self.redial.session_ended(lived, ended.by_peer, &self.label);
                }
            }
        }
    }

    fn close_all(&mut self, cx: &mut Context<'_>) -> Status {
        log::debug!(
            target: D::LOG_TARGET,
            "client for {} closing {} sessions",
            self.label,
            self.sessions.len()
        );
        self.stop_redialling(cx);
        for session in self.sessions.drain(..) {
            cx.send(session, Close);
        }
        // Dialers in flight report to an entry that no longer exists; their reports are
        // dropped along with the sockets they carry.
        Status::Done
    }

    fn stop_redialling(&mut self, cx: &mut Context<'_>) {
        self.redial.cancel(cx);
        self.lookup.cancel(cx);
    }
}

/// What a dialer of `D` reports.
type CommandOutcome<D> = DialOutcome<<D as DialTypes>::Socket, <D as DialTypes>::Addr>;

impl<D: Dialing> Entry for Client<D> {
    type Command = CommandOf<D>;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        // The addresses were resolved when the client was built: dial them now.
        self.dial_missing(cx);
        self.check_gave_up(cx)
    }

    fn on_ready(&mut self, _cx: &mut Context<'_>, _ready: Ready) -> Status {
        Status::Continue // the client owns no socket
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, tag: u64) -> Status {
        if tag == DEADLINE_TAG {
            if self.lookup.deadline_passed(&self.label) == Next::Dial {
                self.dial_missing(cx);
            }
        } else {
            self.redial.fired();
            self.redial_now(cx);
        }
        // A dial that fails at once (ENETUNREACH, say) is counted in `dial_missing`, not
        // reported by a dialer: check the limit here too, or such a client would redial
        // forever whatever `max_consecutive_failures` says.
        self.check_gave_up(cx)
    }

    fn on_command(&mut self, cx: &mut Context<'_>, command: Self::Command) -> Status {
        match command.0 {
            ClientOp::Close => return self.close_all(cx),
            ClientOp::Dialled(outcome) => self.on_dialled(cx, outcome),
            ClientOp::Resolved(resolved) => self.on_resolved(cx, resolved),
            // Only a session that proves itself in `on_open` makes a stream dial good.
            ClientOp::Opened(id) => {
                let wiped = self.redial.succeeded();
                self.opened.push(Opened::new(id, wiped, cx.now()));
            }
            ClientOp::Ended(ended) => self.on_ended(ended, cx.now()),
        }
        if self.check_gave_up(cx) == Status::Done {
            return Status::Done;
        }
        self.schedule_redial(cx);
        Status::Continue
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>, _deadline: Option<Instant>) -> Status {
        // Sessions hear the shutdown themselves; the client just stops redialling.
        self.stop_redialling(cx);
        Status::Done
    }
}
