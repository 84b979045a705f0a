//! The WebSocket client: a TCP client whose sessions start with the HTTP upgrade. It keeps
//! N connections to one `ws://` or `wss://` URL and redials them like the TCP client; a
//! session opens (`on_open`) only once the server's `101` has been verified, and an upgrade
//! that fails or times out counts as a failed dial.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use getty_codec::ws::{ClientRequest, Protocol, Role};
use getty_codec::Decoder;
use getty_reactor::{Context, Entry, Ready, Recipient, Status};

use mio::net::TcpStream;

use crate::client::{ClientConfig, Opening, StreamClient};
use crate::commands::{OwnerNote, SessionCommand, SessionOp};
use crate::server::entry_by_inner;
use crate::session::Handler;
use crate::setup::{Prepared, SessionParts};
use crate::stream::{SessionEnded, StreamEntry};
use crate::tcp::Setup;
use crate::ws::upgrade::{Handshake, Parts, Step, Upgrade, MAX_HEAD};
use crate::ws::{protocol_config, Keepalive, Ws, WsFraming, WsState};
use crate::Error;

mod builder;

pub use builder::{WsClientBuilder, WsClientKind};

/// The parts of a `ws://` or `wss://` URL a client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WsUrl {
    pub(crate) secure: bool,
    /// The host as written (an IPv6 address keeps its brackets), for DNS and TLS names.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query; `/` when the URL has none.
    pub(crate) path: String,
}

impl WsUrl {
    pub(crate) fn parse(url: &str) -> io::Result<WsUrl> {
        let bad = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad WebSocket URL {url:?}: {why}"),
            )
        };
        let (secure, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "ws://") {
            (false, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "wss://") {
            (true, rest)
        } else {
            return Err(bad("the scheme must be ws:// or wss://"));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad("user information is not supported"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                let port = port.parse().map_err(|_| bad("the port is not a number"))?;
                (host, Some(port))
            }
            _ => (authority, None),
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("no host"));
        }
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(WsUrl {
            secure,
            host: host.to_string(),
            port: port.unwrap_or(if secure { 443 } else { 80 }),
            path,
        })
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    fn host_header(&self) -> String {
        let default = if self.secure { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The host without IPv6 brackets: for DNS and the TLS server name.
    pub(crate) fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// What every session of a WebSocket client sends before it opens.
#[derive(Debug, Clone)]
pub(crate) struct WsDial {
    /// The upgrade request, checked when the client was built (a fresh key per session).
    request: ClientRequest,
    path: String,
    keepalive: Keepalive,
}

impl Opening<TcpStream> for Ws {
    /// The upgrade first (its request sent behind the TLS handshake, if any); once the
    /// `101` is verified, the session, under the same entry id, so the owning client reaches
    /// it with its commands and hears its end.
    fn open<C, H>(
        prepared: Prepared<TcpStream, C, H>,
        config: &ClientConfig,
        owner: Recipient<OwnerNote>,
        _now: Instant,
    ) -> Box<dyn Entry<Command = SessionCommand>>
    where
        C: Decoder + 'static,
        H: Handler<C, Ws>,
    {
        let dial = config
            .websocket
            .as_deref()
            .expect("a WebSocket client's configuration has its upgrade");
        let Prepared { stream, mut parts } = prepared;
        let mut request = BytesMut::new();
        // Checked by `WsClientBuilder::build`, so `write` cannot refuse it.
        let handshake = dial.request.clone().write(&mut request);
        let filter = parts.filter.take();
        let timeout = parts.options.handshake_timeout;
        let client = ClientHandshake {
            handshake,
            parts: Some(parts),
            owner,
            path: dial.path.clone(),
            keepalive: dial.keepalive,
            agreed: None,
            opened: None,
        };
        let upgrade = Upgrade::new(stream, filter, request, client, timeout);
        Box::new(ClientSession::Upgrading(Box::new(upgrade)))
    }
}

/// The client side of the upgrade: reads and verifies the `101`, then makes the session.
struct ClientHandshake<C, H> {
    handshake: getty_codec::ws::ClientHandshake,
    /// What the setup hook made, until the session opens.
    parts: Option<SessionParts<SocketAddr, C, H>>,
    /// The client, told when an upgrade fails (a failed dial).
    owner: Recipient<OwnerNote>,
    path: String,
    keepalive: Keepalive,
    /// The protocol state the `101` agreed to.
    agreed: Option<WsState>,
    /// The session, once the upgrade is done (and whether the peer's EOF came with it):
    /// the entry goes on as it.
    opened: Option<(StreamEntry<TcpStream, Ws, C, H>, bool)>,
}

impl<C, H> ClientHandshake<C, H> {
    /// How long a close before the `101` waits for the server's EOF: the session's linger.
    fn linger(&self) -> Duration {
        self.parts
            .as_ref()
            .map_or(Duration::ZERO, |parts| parts.options.linger_timeout)
    }
}

impl<C, H> Handshake<TcpStream> for ClientHandshake<C, H>
where
    C: Decoder + 'static,
    H: Handler<C, Ws>,
{
    fn advance(&mut self, _cx: &mut Context<'_>, input: &mut BytesMut, _: &TcpStream) -> Step {
        let response = match self.handshake.parse_response(input, MAX_HEAD) {
            Ok(None) => return Step::More,
            Ok(Some(response)) => response,
            Err(e) => return Step::Fail(Error::Upgrade(e)),
        };
        let Some(parts) = self.parts.as_ref() else {
            return Step::Fail(Error::Closed);
        };
        let config = protocol_config(&parts.options);
        let protocol = Protocol::new(Role::Client, config, response.deflate());
        let mut state = WsState::new(protocol, self.keepalive, self.path.clone());
        state.subprotocol = response.protocol().map(String::from);
        self.agreed = Some(state);
        Step::Done
    }

    fn open_session(&mut self, cx: &mut Context<'_>, upgraded: Parts<TcpStream>) {
        let (Some(mut parts), Some(state)) = (self.parts.take(), self.agreed.take()) else {
            return;
        };
        parts.filter = upgraded.filter;
        let framing = WsFraming::new(state);
        let entry = parts
            .into_entry(upgraded.stream, framing, cx.now(), Some(self.owner))
            .with_input(upgraded.leftover);
        self.opened = Some((entry, upgraded.peer_closed));
    }

    fn failed(&mut self, cx: &mut Context<'_>, error: Error) {
        // The session never opened (no callback): the client counts a failed dial.
        let ended = SessionEnded {
            id: cx.id(),
            by_peer: false,
            outcome: Err(error),
        };
        cx.send(self.owner, OwnerNote::Ended(ended));
    }
}

/// One connection of a WebSocket client, in one entry from connect to close: the upgrade,
/// then the session. (A server's upgrade spawns its session as a new entry: no one holds the
/// upgrade's id.)
enum ClientSession<C, H> {
    /// Boxed: the open session, which lives long, need not carry the upgrade's size.
    Upgrading(Box<Upgrade<TcpStream, ClientHandshake<C, H>>>),
    Open(StreamEntry<TcpStream, Ws, C, H>),
}

impl<C, H> ClientSession<C, H>
where
    C: Decoder + 'static,
    H: Handler<C, Ws>,
{
    /// After a call into the upgrade: once it is done, the session takes over and opens.
    fn after_upgrade(&mut self, cx: &mut Context<'_>, status: Status) -> Status {
        let ClientSession::Upgrading(upgrade) = self else {
            return status;
        };
        let Some((entry, peer_closed)) = upgrade.handshake_mut().opened.take() else {
            return status;
        };
        *self = ClientSession::Open(entry);
        let ClientSession::Open(entry) = self else {
            unreachable!("just opened");
        };
        let status = entry.on_start(cx);
        if status == Status::Continue {
            // The head was read in small steps and the first frames may still sit in the
            // socket, behind an edge that has come and gone: read on. An EOF read with the
            // head is carried over too (epoll will not report it again).
            let ready = if peer_closed {
                Ready::READABLE | Ready::READ_CLOSED
            } else {
                Ready::READABLE
            };
            cx.reschedule(ready);
        }
        status
    }
}

impl<C, H> Entry for ClientSession<C, H>
where
    C: Decoder + 'static,
    H: Handler<C, Ws>,
{
    type Command = SessionCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        let status = match self {
            ClientSession::Upgrading(upgrade) => upgrade.on_start(cx),
            ClientSession::Open(entry) => entry.on_start(cx),
        };
        self.after_upgrade(cx, status)
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, ready: Ready) -> Status {
        let status = match self {
            ClientSession::Upgrading(upgrade) => upgrade.on_ready(cx, ready),
            ClientSession::Open(entry) => entry.on_ready(cx, ready),
        };
        self.after_upgrade(cx, status)
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, tag: u64) -> Status {
        match self {
            ClientSession::Upgrading(upgrade) => upgrade.on_timer(cx, tag),
            ClientSession::Open(entry) => entry.on_timer(cx, tag),
        }
    }

    fn on_command(&mut self, cx: &mut Context<'_>, command: SessionCommand) -> Status {
        match self {
            // Closed before it opened (its client is closing): as a session's close, with
            // a FIN and a linger, not a reset of a connection the server has upgraded.
            ClientSession::Upgrading(upgrade) if matches!(command.0, SessionOp::Close) => {
                let linger = upgrade.handshake_mut().linger();
                upgrade.close(cx, linger)
            }
            ClientSession::Upgrading(upgrade) => upgrade.on_command(cx, command),
            ClientSession::Open(entry) => entry.on_command(cx, command),
        }
    }

    /// A group the open session joined left broadcasts for it (before it opened, it is in
    /// no group).
    fn on_wake(&mut self, cx: &mut Context<'_>) -> Status {
        match self {
            ClientSession::Upgrading(_) => Status::Continue,
            ClientSession::Open(entry) => entry.on_wake(cx),
        }
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        match self {
            ClientSession::Upgrading(upgrade) if deadline.is_some() => {
                let linger = upgrade.handshake_mut().linger();
                upgrade.close(cx, linger)
            }
            ClientSession::Upgrading(upgrade) => upgrade.on_shutdown(cx, deadline),
            ClientSession::Open(entry) => entry.on_shutdown(cx, deadline),
        }
    }

    fn on_panic(&mut self, cx: &mut Context<'_>, message: &str) {
        match self {
            ClientSession::Upgrading(upgrade) => upgrade.on_panic(cx, message),
            ClientSession::Open(entry) => entry.on_panic(cx, message),
        }
    }
}

/// A WebSocket client that keeps `connection_number` sessions to one URL, redialling with
/// backoff like [`TcpClient`](crate::tcp::TcpClient). Spawn it into a reactor; send it [`Close`](crate::Close) to
/// close its sessions (each with a close frame) and stop redialling.
///
/// ```
/// use getty_codec::{Message, MessageCodec};
/// use getty_reactor::Reactor;
/// use getty_transports::{ws::{Ws, WsClient}, Handler, Session};
///
/// struct Hello;
/// impl Handler<MessageCodec, Ws> for Hello {
///     fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
///         s.write(Message::text("hello"))?; // sent once the upgrade is done
///         Ok(())
///     }
///     fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {}
/// }
/// let client = WsClient::builder().build("ws://127.0.0.1:9/", |_| Ok((MessageCodec, Hello))).unwrap();
/// let mut reactor = Reactor::new().unwrap();
/// let id = reactor.spawn(client);
/// reactor.handle().send(id, getty_transports::Close).unwrap();
/// ```
pub struct WsClient<F, C, H> {
    inner: StreamClient<TcpStream, Ws, F, C, H>,
}

impl WsClient<(), (), ()> {
    /// A builder with default settings.
    ///
    /// ```
    /// let b = getty_transports::ws::WsClient::builder();
    /// ```
    pub fn builder() -> WsClientBuilder {
        WsClientBuilder::default()
    }
}

impl<F, C, H> WsClient<F, C, H>
where
    F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, Ws>,
{
    /// The first address this client dials (the URL's host, as resolved when the client
    /// was built).
    ///
    /// See [`WsClientBuilder::build`].
    pub fn peer_addr(&self) -> SocketAddr {
        *self.inner.peer_addr()
    }
}

entry_by_inner!(impl<F, C, H> for WsClient<F, C, H>, command = crate::tcp::TcpClientCommand, where
    F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, Ws>,
);

#[cfg(test)]
mod tests;
