//! The client every stream transport shares (TCP, WebSocket, unix sockets): it keeps
//! `connection_number` sessions to one peer, redialling with capped, jittered
//! exponential backoff until the app closes it.
//!
//! Each connect attempt is a `Dialer` entry of its own (a connecting socket needs its own
//! token). A dialer reports back to the client with a command; the client runs the setup
//! hook and spawns the session, which tells the client when it ends. A peer may have
//! several addresses ([`DialTarget`]): a failed attempt goes on to the next address at
//! once, and only when all have failed is the dial a failure. A host name is resolved
//! again before every redial by the shared resolver (`resolve.rs`), whose answer comes
//! back as a command, with a deadline: the reactor never waits on DNS, and a lookup that
//! hangs delays a redial by the connect timeout at most. No locks and no re-entrancy: the
//! client and its sessions only ever exchange queued commands, so closing a client while
//! it redials cannot deadlock (getty's #132).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use getty_codec::Decoder;
use getty_reactor::{Context, Entry, Ready, Recipient, Status, TimerId};
use mio::Interest;

use crate::commands::{OwnerNote, SessionCommand};
use crate::redial::{Redial, RedialPolicy};
use crate::resolve::{round_order, Lookup, Next, Resolved, Resolver, DEADLINE_TAG};
use crate::session::Handler;
use crate::setup::{prepare_session, FilterFactory, Plan, Prepared, Setup};
use crate::stream::{SessionEnded, Stream};
#[cfg(feature = "ws")]
use crate::ws::WsDial;
use crate::{Close, Error, Metrics, SessionOptions, SocketOptions, Transport};

/// A caller's resolver ([`DialTarget::resolve_with`]).
type CustomResolver = Arc<dyn Fn() -> io::Result<Vec<SocketAddr>> + Send + Sync>;

/// A stream socket a client can dial.
pub(crate) trait Dial: Stream + Sized {
    /// What is dialled, for the log ("tcp", "unix").
    const KIND: &'static str;

    /// Starts a non-blocking connect to `addr`.
    fn dial(addr: &Self::Addr) -> io::Result<Self>;

    /// Whether the connect finished: `Ok(None)` while it is still in progress.
    fn connect_result(&self) -> io::Result<Option<()>>;
}

/// Where a TCP, WebSocket or UDP client dials: addresses, or a host name and a port.
///
/// Made from what `std::net::ToSocketAddrs` takes (a `SocketAddr`, `"host:port"`,
/// `("host", port)`, `(ip, port)`, a slice or `Vec` of addresses). Every address is tried
/// in turn, each with the connect timeout, until one answers (RFC 8305's fall-through;
/// the attempts are not raced); a dial fails only when all of them did. Once a session
/// has opened, later rounds start at the address it opened with, then try the others in
/// order (a black-holed first address costs one connect timeout, not one per reconnect).
///
/// - **Addresses** (an IP literal, a `SocketAddr`, a list) are dialled in the order given
///   and never resolved: nothing blocks.
/// - **A host name** is resolved when the client is built (on the calling thread: build
///   clients off the reactor thread, or give them addresses), its addresses ordered with
///   the families alternating (RFC 8305 §4); and it is resolved again before every redial
///   by a resolver the whole process shares (at most 4 `getty-resolver` threads, started
///   when needed and ending when idle; lookups of one name in flight are made once), the
///   answer reaching the client as a reactor command, so the reactor never waits on DNS
///   and a changed record is followed. A lookup gets the connect timeout (for UDP, the
///   probe wait): past it, or if it fails or panics, the client dials the addresses it
///   had, and an answer that comes late is dialled in the next round.
/// - **Your own resolver** ([`DialTarget::resolve_with`]) is called as a host name's is.
///
/// ```
/// use std::net::SocketAddr;
/// use getty_transports::DialTarget;
///
/// let literal = DialTarget::from("127.0.0.1:9000");
/// assert_eq!(literal.to_string(), "127.0.0.1:9000");
/// let name = DialTarget::from(("localhost", 9000));
/// assert_eq!(name.to_string(), "localhost:9000");
/// let list: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()];
/// assert_eq!(DialTarget::from(list).to_string(), "[127.0.0.1:1, 127.0.0.1:2]");
/// ```
#[derive(Debug, Clone)]
pub struct DialTarget(Target);

#[derive(Clone)]
enum Target {
    Addrs(Vec<SocketAddr>),
    Host {
        host: String,
        port: u16,
    },
    Custom {
        label: String,
        resolver: CustomResolver,
    },
    Invalid(String),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addrs(addrs) => f.debug_tuple("Addrs").field(addrs).finish(),
            Target::Host { host, port } => write!(f, "Host({host}:{port})"),
            Target::Custom { label, .. } => write!(f, "Custom({label})"),
            Target::Invalid(why) => f.debug_tuple("Invalid").field(why).finish(),
        }
    }
}

impl DialTarget {
    /// Dials these addresses, in this order, without resolving anything.
    ///
    /// ```
    /// let t = getty_transports::DialTarget::addrs(["127.0.0.1:7".parse().unwrap()]);
    /// assert_eq!(t.to_string(), "127.0.0.1:7");
    /// ```
    pub fn addrs(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        DialTarget(Target::Addrs(addrs.into_iter().collect()))
    }

    /// Dials `host` (a name, or an IP address: then nothing is resolved) on `port`. An
    /// IPv6 address may name its zone (RFC 6874, `fe80::1%25eth0`, or `fe80::1%eth0`): an
    /// interface's name or index.
    ///
    /// ```
    /// let t = getty_transports::DialTarget::host("localhost", 80);
    /// assert_eq!(t.to_string(), "localhost:80");
    /// assert_eq!(getty_transports::DialTarget::host("[::1]", 80).to_string(), "[::1]:80");
    /// let zoned = getty_transports::DialTarget::host("[fe80::1%252]", 80);
    /// assert_eq!(zoned.to_string(), "[fe80::1%2]:80");
    /// ```
    pub fn host(host: impl Into<String>, port: u16) -> Self {
        let host = host.into();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return DialTarget(Target::Addrs(vec![SocketAddr::new(ip, port)]));
        }
        match bare.split_once('%') {
            Some((ip, zone)) => match (ip.parse::<Ipv6Addr>(), scope_id(zone)) {
                (Ok(ip), Some(scope)) => DialTarget::from(SocketAddrV6::new(ip, port, 0, scope)),
                _ => DialTarget(Target::Invalid(format!(
                    "{host:?} is not an IPv6 address with a zone this host has"
                ))),
            },
            None => DialTarget(Target::Host { host, port }),
        }
    }

    /// Dials the addresses `resolve` answers, in its order: it is called when the client
    /// is built (on the calling thread) and again before every redial, on the shared
    /// resolver's threads (never the reactor's), so it may block: a service registry, a DNS
    /// client of your choice, a list that changes. Clients built from clones of one target
    /// share a lookup in flight. `label` names the target in the log. An error when the
    /// client is built fails the build; later, an error, a panic (reported on the client's
    /// reactor like any panic) or a lookup past its deadline leaves the client dialling the
    /// addresses it had.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use getty_transports::DialTarget;
    ///
    /// let t = DialTarget::resolve_with("registry:chat", || {
    ///     Ok(vec!["127.0.0.1:7000".parse::<SocketAddr>().unwrap()])
    /// });
    /// assert_eq!(t.to_string(), "registry:chat");
    /// ```
    pub fn resolve_with<R>(label: impl Into<String>, resolve: R) -> Self
    where
        R: Fn() -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
    {
        DialTarget(Target::Custom {
            label: label.into(),
            resolver: Arc::new(resolve),
        })
    }

    /// The addresses to dial first and, for a host name, how to resolve it again. Resolves
    /// a host name (blocking the calling thread).
    pub(crate) fn resolve_now(self) -> io::Result<(Vec<SocketAddr>, Option<Resolver<SocketAddr>>)> {
        match self.0 {
            Target::Invalid(why) => Err(io::Error::new(io::ErrorKind::InvalidInput, why)),
            Target::Addrs(addrs) if addrs.is_empty() => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address to dial",
            )),
            Target::Addrs(addrs) => Ok((addrs, None)),
            Target::Host { host, port } => {
                let name = host.clone();
                let resolver = Resolver::name(&name, port, move || resolve_host(&host, port));
                Ok((resolver.resolve_here()?, Some(resolver)))
            }
            Target::Custom { label, resolver } => {
                let resolver = Resolver::custom(resolver);
                match resolver.resolve_here()? {
                    addrs if addrs.is_empty() => Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{label} resolved to no address"),
                    )),
                    addrs => Ok((addrs, Some(resolver))),
                }
            }
        }
    }
}

/// The scope id of an IPv6 zone: `25` (a percent-encoded `%`) first if it is there, then an
/// interface index or name.
fn scope_id(zone: &str) -> Option<u32> {
    let zone = zone
        .strip_prefix("25")
        .filter(|rest| !rest.is_empty())
        .unwrap_or(zone);
    if let Ok(index) = zone.parse::<u32>() {
        return Some(index);
    }
    let name = std::ffi::CString::new(zone).ok()?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Resolves `host` and orders its addresses for dialling: the families alternate, starting
/// with the resolver's first choice (RFC 8305 §4), otherwise in the resolver's order.
fn resolve_host(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let resolved: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    if resolved.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolved to no address"),
        ));
    }
    Ok(interleave(resolved))
}

/// The families alternate, starting with the first address's; each family keeps its order.
fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first_v6) = addrs.first().map(SocketAddr::is_ipv6) else {
        return addrs;
    };
    let (mut first, mut second): (VecDeque<_>, VecDeque<_>) =
        addrs.into_iter().partition(|a| a.is_ipv6() == first_v6);
    let mut ordered = Vec::with_capacity(first.len() + second.len());
    while !first.is_empty() || !second.is_empty() {
        ordered.extend(first.pop_front());
        ordered.extend(second.pop_front());
    }
    ordered
}

impl fmt::Display for DialTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Target::Addrs(addrs) => fmt_addrs(addrs, f),
            Target::Host { host, port } => write!(f, "{host}:{port}"),
            Target::Custom { label, .. } => f.write_str(label),
            Target::Invalid(why) => f.write_str(why),
        }
    }
}

/// One address as itself, several as a list: how a client names what it dials in its log.
fn fmt_addrs<A: fmt::Display>(addrs: &[A], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match addrs {
        [one] => one.fmt(f),
        many => {
            f.write_str("[")?;
            for (i, a) in many.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                a.fmt(f)?;
            }
            f.write_str("]")
        }
    }
}

impl From<SocketAddr> for DialTarget {
    fn from(addr: SocketAddr) -> Self {
        DialTarget::addrs([addr])
    }
}

impl From<SocketAddrV4> for DialTarget {
    fn from(addr: SocketAddrV4) -> Self {
        DialTarget::addrs([addr.into()])
    }
}

impl From<SocketAddrV6> for DialTarget {
    fn from(addr: SocketAddrV6) -> Self {
        DialTarget::addrs([addr.into()])
    }
}

impl From<(IpAddr, u16)> for DialTarget {
    fn from((ip, port): (IpAddr, u16)) -> Self {
        DialTarget::addrs([SocketAddr::new(ip, port)])
    }
}

impl From<(Ipv4Addr, u16)> for DialTarget {
    fn from((ip, port): (Ipv4Addr, u16)) -> Self {
        DialTarget::addrs([SocketAddr::new(ip.into(), port)])
    }
}

impl From<(Ipv6Addr, u16)> for DialTarget {
    fn from((ip, port): (Ipv6Addr, u16)) -> Self {
        DialTarget::addrs([SocketAddr::new(ip.into(), port)])
    }
}

impl From<(&str, u16)> for DialTarget {
    fn from((host, port): (&str, u16)) -> Self {
        DialTarget::host(host, port)
    }
}

impl From<(String, u16)> for DialTarget {
    fn from((host, port): (String, u16)) -> Self {
        DialTarget::host(host, port)
    }
}

impl From<&str> for DialTarget {
    /// `ip:port`, `[ipv6]:port` (with a zone if need be: `[fe80::1%eth0]:port`) or
    /// `host:port`.
    fn from(s: &str) -> Self {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return DialTarget::from(addr);
        }
        if let Some((literal, port)) = s.strip_prefix('[').and_then(|r| r.rsplit_once("]:")) {
            // `[fe80::1%eth0]:port`: a zone by name.
            return match port.parse::<u16>() {
                Ok(port) => DialTarget::host(literal, port),
                Err(_) => DialTarget(Target::Invalid(format!("invalid port in {s:?}"))),
            };
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.contains(':') => {
                match port.parse::<u16>() {
                    Ok(port) => DialTarget::host(host, port),
                    Err(_) => DialTarget(Target::Invalid(format!("invalid port in {s:?}"))),
                }
            }
            _ => DialTarget(Target::Invalid(format!(
                "{s:?} is not an address: host:port or ip:port"
            ))),
        }
    }
}

impl From<String> for DialTarget {
    fn from(s: String) -> Self {
        DialTarget::from(s.as_str())
    }
}

impl From<&String> for DialTarget {
    fn from(s: &String) -> Self {
        DialTarget::from(s.as_str())
    }
}

impl From<Vec<SocketAddr>> for DialTarget {
    fn from(addrs: Vec<SocketAddr>) -> Self {
        DialTarget::addrs(addrs)
    }
}

impl From<&[SocketAddr]> for DialTarget {
    fn from(addrs: &[SocketAddr]) -> Self {
        DialTarget::addrs(addrs.iter().copied())
    }
}

impl<const N: usize> From<[SocketAddr; N]> for DialTarget {
    fn from(addrs: [SocketAddr; N]) -> Self {
        DialTarget::addrs(addrs)
    }
}

impl From<&DialTarget> for DialTarget {
    fn from(target: &DialTarget) -> Self {
        target.clone()
    }
}

/// What a stream client runs with, gathered from its builder (`StreamDial::config`).
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pub(crate) connection_number: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) redial: RedialPolicy,
    pub(crate) socket_options: SocketOptions,
    pub(crate) session_options: SessionOptions,
    /// The filter nearest the wire (TLS), if any.
    pub(crate) transport_filter: Option<FilterFactory>,
    /// Every session starts with this WebSocket upgrade.
    #[cfg(feature = "ws")]
    pub(crate) websocket: Option<Arc<WsDial>>,
}

/// What a dialer tells its client: a stream of type `S` connected to an `A`, or why not.
pub(crate) enum DialOutcome<S, A> {
    /// Connected to `addrs[index]`.
    Connected { stream: S, addr: A },
    /// The attempt at `addrs[index]` failed; the client tries the next address, if any.
    Failed {
        error: Error,
        addrs: Arc<[A]>,
        index: usize,
    },
}

/// What a dialer of `S` tells its client.
type Outcome<S> = DialOutcome<S, <S as Stream>::Addr>;

/// What a stream client (TCP, WebSocket, unix) accepts: [`Close`] (close its sessions and
/// stop redialling). It cannot be aborted. The rest (its dialers' outcomes, its sessions'
/// notes, resolved addresses) is the framework's: `S` is the client's socket type and `A`
/// its address type.
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
    Opened,
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
            OwnerNote::Opened => ClientOp::Opened,
            OwnerNote::Ended(ended) => ClientOp::Ended(ended),
        })
    }
}

/// How a client's connected socket becomes the entry of a session of this transport: at
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

/// The types a client makes sessions of, without owning any.
type Types<T, C, H> = fn() -> (T, C, H);

/// A client of stream sockets of type `S`, whose sessions are of transport `T`.
pub(crate) struct StreamClient<S: Dial, T, F, C, H> {
    /// The addresses to dial, in order (never empty).
    addrs: Arc<[S::Addr]>,
    /// The address the last session opened with: each round starts there.
    last_good: Option<S::Addr>,
    /// Resolves the host name again before a redial, with a deadline.
    lookup: Lookup<S::Addr>,
    /// What is dialled, for the log: the address, the list, or `host:port`.
    label: String,
    setup: F,
    session_options: Arc<SessionOptions>,
    config: ClientConfig,
    sessions: Vec<Recipient<SessionCommand>>,
    dialing: usize,
    /// Consecutive failed dials; reset by a successful one.
    redial: Redial,
    _types: PhantomData<Types<T, C, H>>,
}

impl<S, T, F, C, H> StreamClient<S, T, F, C, H>
where
    S: Dial,
    T: Opening<S>,
    F: FnMut(&mut Setup<'_, S::Addr>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, T>,
{
    /// A client of the one address `addr`.
    pub(crate) fn new(addr: S::Addr, setup: F, config: ClientConfig) -> Self {
        let label = addr.to_string();
        Self::with_addrs(vec![addr], None, label, setup, config)
    }

    /// A client of `addrs` (not empty), tried in order; with a `resolver`, they are
    /// resolved again (off the reactor, on the shared resolver) before every redial, each
    /// lookup given the connect timeout before the client dials without its answer.
    pub(crate) fn with_addrs(
        addrs: Vec<S::Addr>,
        resolver: Option<Resolver<S::Addr>>,
        label: String,
        setup: F,
        config: ClientConfig,
    ) -> Self {
        assert!(!addrs.is_empty(), "a client needs an address");
        StreamClient {
            addrs: addrs.into(),
            last_good: None,
            lookup: Lookup::new::<ClientCommand<S, S::Addr>>(resolver, config.connect_timeout),
            label,
            setup,
            session_options: Arc::new(config.session_options.clone()),
            redial: Redial::new(config.redial.clone(), S::KIND, module_path!()),
            config,
            sessions: Vec::new(),
            dialing: 0,
            _types: PhantomData,
        }
    }

    /// The first address dialled.
    pub(crate) fn peer_addr(&self) -> &S::Addr {
        &self.addrs[0]
    }

    fn missing(&self) -> usize {
        self.config
            .connection_number
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

    /// Starts a connect to the first of `addrs[from..]` that can be started (a `connect`
    /// may fail at once: ENETUNREACH, an address of a family the host lacks), in a dialer
    /// of its own. When none can, that is one failed dial.
    fn dial_from(&mut self, cx: &mut Context<'_>, addrs: Arc<[S::Addr]>, from: usize) {
        let mut last_error = None;
        for index in from..addrs.len() {
            match S::dial(&addrs[index]) {
                Ok(stream) => {
                    let client = Self::me(cx);
                    self.dialing += 1;
                    cx.spawn(Dialer {
                        stream: Some(stream),
                        addrs,
                        index,
                        client,
                        timeout: self.config.connect_timeout,
                        timer: None,
                    });
                    return;
                }
                Err(e) => {
                    log::debug!(
                        "{} connect to {} failed at once: {e}",
                        S::KIND,
                        addrs[index]
                    );
                    last_error = Some(e);
                }
            }
        }
        let error = last_error.unwrap_or_else(|| io::Error::other("no address left to dial"));
        self.note_failure(Error::Io(error));
    }

    /// This client's address, for its dialers.
    fn me(cx: &Context<'_>) -> Recipient<ClientCommand<S, S::Addr>> {
        cx.recipient().expect("a stream client takes ClientCommand")
    }

    fn on_dialled(&mut self, cx: &mut Context<'_>, outcome: Outcome<S>) {
        self.dialing = self.dialing.saturating_sub(1);
        match outcome {
            DialOutcome::Connected { stream, addr } => {
                self.last_good = Some(addr.clone());
                self.open_session(cx, stream, addr)
            }
            DialOutcome::Failed {
                error,
                addrs,
                index,
            } if index + 1 < addrs.len() => {
                // RFC 8305's fall-through: the next address, now; the dial has not failed
                // until every address has.
                log::debug!(
                    "{} connect to {} failed: {error}; trying {}",
                    S::KIND,
                    addrs[index],
                    addrs[index + 1]
                );
                self.dial_from(cx, addrs, index + 1);
            }
            DialOutcome::Failed { error, .. } => self.note_failure(error),
        }
    }

    fn open_session(&mut self, cx: &mut Context<'_>, stream: S, peer: S::Addr) {
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
        let owner = cx
            .recipient_as::<OwnerNote, ClientCommand<S, S::Addr>>()
            .expect("a stream client takes ClientCommand");
        let session = cx.catch_panic("a client's setup hook", |_| {
            prepare_session(stream, peer, &plan, setup).ok_or("refused")
        });
        match session.unwrap_or(Err("panicked")) {
            // Success is counted when on_open accepts the session (SessionOpened), so a
            // server that accepts and then refuses every connection still backs off.
            Ok(prepared) => {
                let entry = T::open(prepared, &self.config, owner, cx.now());
                self.sessions.push(cx.spawn(entry));
            }
            Err(what) => {
                cx.extension::<Metrics>().refused += 1;
                let detail = format!("the setup hook {what} the connection");
                self.note_failure(Error::Io(io::Error::other(detail)))
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

    fn on_resolved(&mut self, cx: &mut Context<'_>, resolved: Resolved<S::Addr>) {
        let (addrs, next) = self.lookup.resolved(cx, resolved, &self.label);
        if let Some(addrs) = addrs {
            self.addrs = addrs.into();
        }
        if next == Next::Dial {
            self.dial_missing(cx);
        }
    }

    fn close_all(&mut self, cx: &mut Context<'_>) -> Status {
        log::debug!(
            "client for {} closing {} sessions",
            self.label,
            self.sessions.len()
        );
        self.redial.cancel(cx);
        self.lookup.cancel(cx);
        for session in self.sessions.drain(..) {
            cx.send(session, Close);
        }
        // Dialers in flight report to an entry that no longer exists; their reports are
        // dropped along with the sockets they carry.
        Status::Done
    }
}

impl<S, T, F, C, H> Entry for StreamClient<S, T, F, C, H>
where
    S: Dial,
    T: Opening<S>,
    F: FnMut(&mut Setup<'_, S::Addr>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, T>,
{
    type Command = ClientCommand<S, S::Addr>;

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
        // A `connect` that fails at once (ENETUNREACH, say) is counted in `dial_missing`,
        // not reported by a dialer: check the limit here too, or such a client would
        // redial forever whatever `max_consecutive_failures` says.
        self.check_gave_up(cx)
    }

    fn on_command(&mut self, cx: &mut Context<'_>, command: Self::Command) -> Status {
        match command.0 {
            ClientOp::Close => return self.close_all(cx),
            ClientOp::Dialled(outcome) => self.on_dialled(cx, outcome),
            ClientOp::Resolved(resolved) => self.on_resolved(cx, resolved),
            ClientOp::Opened => self.redial.succeeded(),
            ClientOp::Ended(ended) => {
                self.sessions.retain(|session| session.id() != ended.id);
                if let Err(why) = ended.outcome {
                    self.note_failure(why);
                }
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
        self.lookup.cancel(cx);
        Status::Done
    }
}

/// One connect attempt (to `addrs[index]`), with its timeout.
struct Dialer<S: Dial> {
    stream: Option<S>,
    addrs: Arc<[S::Addr]>,
    index: usize,
    client: Recipient<ClientCommand<S, S::Addr>>,
    timeout: Duration,
    timer: Option<TimerId>,
}

impl<S: Dial> Dialer<S> {
    fn report(&mut self, cx: &mut Context<'_>, outcome: Outcome<S>) -> Status {
        if let Some(timer) = self.timer.take() {
            cx.cancel_timer(timer);
        }
        cx.send(self.client, outcome);
        Status::Done
    }

    fn failed(&mut self, cx: &mut Context<'_>, error: Error) -> Status {
        if let Some(mut stream) = self.stream.take() {
            let _ = cx.registry().deregister(&mut stream);
        }
        let outcome = DialOutcome::Failed {
            error,
            addrs: Arc::clone(&self.addrs),
            index: self.index,
        };
        self.report(cx, outcome)
    }
}

impl<S: Dial> Entry for Dialer<S> {
    type Command = getty_reactor::NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        let Some(stream) = self.stream.as_mut() else {
            return Status::Done;
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = cx.registry().register(stream, cx.token(), interest) {
            return self.failed(cx, Error::Io(e));
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
                let addr = self.addrs[self.index].clone();
                self.report(cx, DialOutcome::Connected { stream, addr })
            }
            Err(e) => self.failed(cx, Error::Io(e)),
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _tag: u64) -> Status {
        self.timer = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn targets_parse_as_to_socket_addrs_would() {
        let cases: [(DialTarget, &str); 8] = [
            ("127.0.0.1:9".into(), "Addrs([127.0.0.1:9])"),
            ("[::1]:9".into(), "Addrs([[::1]:9])"),
            ("localhost:9".into(), "Host(localhost:9)"),
            (("::1", 9).into(), "Addrs([[::1]:9])"),
            (("example.com", 443).into(), "Host(example.com:443)"),
            (
                "no-port".into(),
                "Invalid(\"\\\"no-port\\\" is not an address: host:port or ip:port\")",
            ),
            (
                "h:99999".into(),
                "Invalid(\"invalid port in \\\"h:99999\\\"\")",
            ),
            (
                "::1".into(),
                "Invalid(\"\\\"::1\\\" is not an address: host:port or ip:port\")",
            ),
        ];
        for (target, debug) in cases {
            assert_eq!(format!("{:?}", target.0), debug);
        }
        // IPv6 zones, by index or (the loopback's) name, percent-encoded or not.
        let lo = scope_id("lo").expect("a loopback interface named lo");
        for (target, scope) in [
            (DialTarget::host("[fe80::1%253]", 9), 3),
            (DialTarget::host("fe80::1%3", 9), 3),
            (DialTarget::host("fe80::1%25lo", 9), lo),
            (DialTarget::from("[fe80::1%lo]:9"), lo),
        ] {
            let (addrs, _) = target.resolve_now().unwrap();
            let expected = SocketAddrV6::new("fe80::1".parse().unwrap(), 9, 0, scope);
            assert_eq!(addrs, vec![SocketAddr::V6(expected)]);
        }
        assert!(DialTarget::host("fe80::1%no-such-if", 9)
            .resolve_now()
            .is_err());
        assert!(DialTarget::from("[fe80::1%lo]:x").resolve_now().is_err());
        assert!(DialTarget::from("no-port").resolve_now().is_err());
        assert!(DialTarget::addrs([]).resolve_now().is_err());
        let (addrs, resolver) = DialTarget::from("127.0.0.1:9").resolve_now().unwrap();
        assert_eq!(
            (addrs, resolver.is_none()),
            (vec![addr("127.0.0.1:9")], true)
        );
    }

    #[test]
    fn resolved_families_alternate_in_their_own_order() {
        let list = vec![
            addr("[::1]:1"),
            addr("[::2]:1"),
            addr("[::3]:1"),
            addr("10.0.0.1:1"),
            addr("10.0.0.2:1"),
        ];
        let expected = vec![
            addr("[::1]:1"),
            addr("10.0.0.1:1"),
            addr("[::2]:1"),
            addr("10.0.0.2:1"),
            addr("[::3]:1"),
        ];
        assert_eq!(interleave(list), expected);
        assert_eq!(interleave(Vec::new()), Vec::<SocketAddr>::new());
        let v4 = vec![addr("10.0.0.1:1"), addr("10.0.0.2:1")];
        assert_eq!(interleave(v4.clone()), v4);
    }
}
