//! The WebSocket server: a TCP listener whose connections go through the HTTP upgrade (an
//! [`Upgrade`] entry each, under the handshake timeout) and are then routed by path to the
//! setup hook of that path, which picks the session's codec and handler.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use getty_codec::ws::{parse_request, DeflateConfig, HandshakeError, Protocol, Request, Role};
use getty_codec::Decoder;
use getty_reactor::{Context, Entry, Ready, Status};
use mio::net::TcpStream;
use socket2::SockRef;

use crate::builder::{sealed, ServerBuilder};
use crate::commands::ServerCommand;
use crate::listener::{Acceptor, Sessions};
use crate::session::{Handler, Session};
use crate::setup::FilterFactory;
use crate::stream::StreamEntry;
use crate::ws::routes::{NoRoutes, RouteWith, Routes, Then};
use crate::ws::upgrade::{Handshake, Parts, Step, Upgrade, MAX_HEAD};
use crate::ws::{protocol_config, Keepalive, Ws, WsFraming, WsState};
use crate::{Error, SessionOptions, SocketOptions};

mod builder;

/// What a route's setup hook gets for a new WebSocket connection, once its upgrade request
/// has been read: the request (path, headers, origin, offered subprotocols), the peer, the
/// socket, and the session's options to adjust. The hook returns the session's codec and
/// handler, or an error to refuse the upgrade (the client gets a `403`).
///
/// ```
/// use getty_codec::{Message, MessageCodec};
/// use getty_transports::ws::{Ws, WsServer, WsSetup};
/// use getty_transports::{Handler, Session};
///
/// struct Chat;
/// impl Handler<MessageCodec, Ws> for Chat {
///     fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {}
/// }
///
/// let server = WsServer::builder()
///     .protocols(["chat.v2", "chat.v1"])
///     .route("/chat", |setup: &mut WsSetup<'_>| {
///         if setup.request().header("Authorization").is_none() {
///             return Err(std::io::Error::other("not signed in"));
///         }
///         let options = setup.options();
///         *options = options.clone().max_message_len(64 * 1024);
///         Ok((MessageCodec, Chat))
///     })
///     .bind("127.0.0.1:0")
///     .unwrap();
/// ```
pub struct WsSetup<'a> {
    peer: SocketAddr,
    socket: SockRef<'a>,
    options: &'a mut Arc<SessionOptions>,
    request: &'a Request,
    protocol: Option<String>,
}

impl<'a> WsSetup<'a> {
    /// The peer's address.
    ///
    /// See the [type-level example](WsSetup).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The connected socket, for `setsockopt`.
    ///
    /// See the [type-level example](WsSetup).
    pub fn socket(&self) -> &SockRef<'a> {
        &self.socket
    }

    /// The client's upgrade request: path, headers, origin, offered subprotocols.
    ///
    /// See the [type-level example](WsSetup).
    pub fn request(&self) -> &Request {
        self.request
    }

    /// The new session's options, to change (the maximum message length also bounds
    /// WebSocket frames and inflated messages).
    ///
    /// See the [type-level example](WsSetup).
    pub fn options(&mut self) -> &mut SessionOptions {
        Arc::make_mut(self.options)
    }

    /// The subprotocol the server will answer with: the first one the client offered that
    /// is among [`WsServerBuilder::protocols`], unless the hook chose another.
    ///
    /// See the [type-level example](WsSetup).
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Chooses the subprotocol to answer with (`None`: none). It must be one the client
    /// offered; otherwise the upgrade fails with a `400`.
    ///
    /// See the [type-level example](WsSetup).
    pub fn set_protocol(&mut self, protocol: Option<&str>) {
        self.protocol = protocol.map(String::from);
    }
}

/// The codec and handler a route chose, waiting for the upgrade to finish.
pub trait NewSession {
    /// Spawns the session of an accepted upgrade.
    fn spawn(self: Box<Self>, cx: &mut Context<'_>, group: Option<Sessions>, accepted: Accepted);
}

/// What a route's hook made: the session's codec and handler.
pub(crate) struct Chosen<C, H> {
    codec: C,
    handler: H,
}

impl<C, H> Chosen<C, H> {
    pub(crate) fn new(codec: C, handler: H) -> Self {
        Chosen { codec, handler }
    }
}

impl<C, H> NewSession for Chosen<C, H>
where
    C: Decoder + 'static,
    H: Handler<C, Ws>,
{
    fn spawn(self: Box<Self>, cx: &mut Context<'_>, group: Option<Sessions>, accepted: Accepted) {
        let Accepted {
            parts,
            peer,
            options,
            ws,
            response,
        } = accepted;
        let framing = WsFraming::new(ws);
        #[cfg(unix)]
        let mut session = {
            use std::os::fd::AsRawFd;
            let fd = parts.stream.as_raw_fd();
            Session::new(peer, fd, self.codec, options, cx.now(), framing)
        };
        #[cfg(not(unix))]
        let mut session = Session::new(peer, self.codec, options, cx.now(), framing);
        if parts.filter.is_some() {
            session.extras_mut().filter = parts.filter;
        }
        // The 101 goes out first, before anything `on_open` writes.
        session.out.tail = response;
        let entry =
            StreamEntry::new(parts.stream, session, self.handler, None).with_input(parts.leftover);
        match group {
            Some(group) => cx.spawn_in(group, entry),
            None => cx.spawn(entry),
        };
    }
}

/// What routing an upgrade request chose: the route's codec and handler, the session's
/// options and protocol state, and the `101` to send first.
struct Routed {
    made: Box<dyn NewSession>,
    options: Arc<SessionOptions>,
    ws: WsState,
    response: BytesMut,
}

/// A connection whose upgrade was accepted, ready to become a session.
pub struct Accepted {
    parts: Parts<TcpStream>,
    peer: SocketAddr,
    options: Arc<SessionOptions>,
    ws: WsState,
    response: BytesMut,
}

type OriginCheck = dyn Fn(Option<&str>) -> bool + Send + Sync;

/// What every connection of a server shares: the routes and the upgrade policy. The upgrade
/// entries of a server share it with the server (one reactor thread; the lock is never
/// contended and is taken once per upgrade).
struct Router<R> {
    routes: R,
    protocols: Vec<String>,
    origin_check: Option<Arc<OriginCheck>>,
    deflate: Option<DeflateConfig>,
    keepalive: Keepalive,
    session_options: Arc<SessionOptions>,
}

/// Why an upgrade request was refused: the HTTP status answered and the reason logged.
type Refusal = HandshakeError;

impl<R: Routes> Router<R> {
    /// Routes a parsed request: checks origin and path, runs the route's setup hook, and
    /// writes the `101` response.
    fn route(
        &mut self,
        request: &Request,
        peer: SocketAddr,
        stream: &TcpStream,
    ) -> Result<Routed, Refusal> {
        let path = request.path().split('?').next().unwrap_or("/");
        if let Some(check) = &self.origin_check {
            if !check(request.origin()) {
                let origin = request.origin().unwrap_or("(none)");
                return Err(HandshakeError::new(403, format!("origin {origin} refused")));
            }
        }
        let Some(route) = self.routes.find(path) else {
            return Err(HandshakeError::new(404, format!("no route for {path}")));
        };
        let protocol = request
            .protocols()
            .iter()
            .find(|offered| self.protocols.contains(offered))
            .cloned();
        let mut options = Arc::clone(&self.session_options);
        let mut setup = WsSetup {
            peer,
            socket: SockRef::from(stream),
            options: &mut options,
            request,
            protocol,
        };
        let made = route
            .setup(&mut setup)
            .map_err(|e| HandshakeError::new(403, format!("setup refused: {e}")))?;
        let protocol = setup.protocol.take();
        let mut response = BytesMut::new();
        let accepted = request.accept(protocol.as_deref(), self.deflate.as_ref(), &mut response)?;
        let machine = Protocol::new(Role::Server, protocol_config(&options), accepted.deflate());
        let mut ws = WsState::new(machine, self.keepalive, request.path().to_string());
        ws.subprotocol = protocol;
        Ok(Routed {
            made,
            options,
            ws,
            response,
        })
    }
}

/// The server side of the upgrade: parse the request, route it, answer.
struct ServerHandshake<R> {
    router: Arc<Mutex<Router<R>>>,
    peer: SocketAddr,
    group: Option<Sessions>,
    chosen: Option<Routed>,
}

impl<R: Routes> Handshake<TcpStream> for ServerHandshake<R> {
    fn advance(&mut self, _cx: &mut Context<'_>, input: &mut BytesMut, stream: &TcpStream) -> Step {
        let routed = match parse_request(input, MAX_HEAD) {
            Ok(None) => return Step::More,
            Ok(Some(request)) => self
                .router
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .route(&request, self.peer, stream),
            Err(e) => Err(e),
        };
        match routed {
            Ok(chosen) => {
                self.chosen = Some(chosen);
                Step::Done
            }
            Err(refusal) => {
                log::debug!("websocket upgrade from {} refused: {refusal}", self.peer);
                let mut response = BytesMut::new();
                refusal.write_response(&mut response);
                Step::Refuse(response)
            }
        }
    }

    fn open_session(&mut self, cx: &mut Context<'_>, parts: Parts<TcpStream>) {
        let Some(Routed {
            made,
            options,
            ws,
            response,
        }) = self.chosen.take()
        else {
            return;
        };
        let accepted = Accepted {
            parts,
            peer: self.peer,
            options,
            ws,
            response,
        };
        made.spawn(cx, self.group, accepted);
    }

    fn failed(&mut self, _cx: &mut Context<'_>, _error: Error) {}
}

/// Configures a [`WsServer`]: the settings of every server on TCP ([`ServerBuilder`]:
/// backlog, `SO_REUSEPORT`, TLS for `wss://`, socket and session options), plus
/// permessage-deflate, subprotocols, the origin check, keep-alive pings, and one setup hook
/// per path.
///
/// ```
/// use std::time::Duration;
/// use getty_codec::{Message, MessageCodec, ws::DeflateConfig};
/// use getty_transports::ws::{Ws, WsServer};
/// use getty_transports::{Handler, Session};
///
/// struct Echo;
/// impl Handler<MessageCodec, Ws> for Echo {
///     fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
///         let _ = s.write(msg);
///     }
/// }
///
/// let server = WsServer::builder()
///     .deflate(Some(DeflateConfig::default()))
///     .check_origin(|origin| origin.is_none_or(|o| o == "https://app.example"))
///     .ping_on_cron(true)
///     .pong_timeout(Some(Duration::from_secs(10)))
///     .route("/echo", |_| Ok((MessageCodec, Echo)))
///     .bind("127.0.0.1:0")
///     .unwrap();
/// assert_ne!(server.local_addr().port(), 0);
/// ```
pub type WsServerBuilder<R = NoRoutes> = ServerBuilder<WsServerKind<R>>;

/// The WebSocket server's part of its [`WsServerBuilder`]: the routes, subprotocols,
/// permessage-deflate, the origin check and keep-alive pings.
pub struct WsServerKind<R = NoRoutes> {
    router: Router<R>,
}

impl<R> sealed::TcpListener for WsServerKind<R> {}

impl<R: Routes> fmt::Debug for WsServerKind<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut paths = Vec::new();
        self.router.routes.paths(&mut paths);
        f.debug_struct("WsServerKind")
            .field("routes", &paths)
            .field("protocols", &self.router.protocols)
            .field("deflate", &self.router.deflate)
            .finish_non_exhaustive()
    }
}

impl Default for WsServerKind {
    fn default() -> Self {
        WsServerKind {
            router: Router {
                routes: NoRoutes,
                protocols: Vec::new(),
                origin_check: None,
                deflate: None,
                keepalive: Keepalive::default(),
                // `bind` sets the builder's.
                session_options: Arc::new(SessionOptions::default()),
            },
        }
    }
}

/// A WebSocket server: an [`Entry`] that accepts TCP connections, upgrades them (each under
/// the handshake timeout; a slow or silent client is dropped when it expires) and routes
/// them by path to their setup hook. Spawn it into a reactor; send it
/// [`Close`](crate::Close) to stop listening, or control it with a
/// [`ServerHandle`](crate::tcp::ServerHandle).
///
/// ```
/// use std::io::{Read, Write};
/// use getty_codec::{Message, MessageCodec};
/// use getty_reactor::Reactor;
/// use getty_transports::{ws::{Ws, WsServer}, Handler, Session};
///
/// struct Echo;
/// impl Handler<MessageCodec, Ws> for Echo {
///     fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
///         let _ = s.write(msg);
///     }
/// }
///
/// let server = WsServer::builder().route("/", |_| Ok((MessageCodec, Echo))).bind("127.0.0.1:0").unwrap();
/// let addr = server.local_addr();
/// let reactor = Reactor::start_thread("ws", move |r| {
///     r.spawn(server);
///     Ok(())
/// }).unwrap();
///
/// // A path without a route is answered with a 404.
/// let mut peer = std::net::TcpStream::connect(addr).unwrap();
/// peer.write_all(b"GET /nowhere HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
///     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
/// let mut answer = String::new();
/// peer.read_to_string(&mut answer).unwrap();
/// assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"));
///
/// reactor.handle().shutdown();
/// reactor.join().unwrap();
/// ```
pub struct WsServer<R = NoRoutes> {
    acceptor: Acceptor<mio::net::TcpListener>,
    socket_options: SocketOptions,
    tls: Option<FilterFactory>,
    handshake_timeout: Duration,
    router: Arc<Mutex<Router<R>>>,
}

impl WsServer {
    /// A builder with default settings (no routes: add them with
    /// [`WsServerBuilder::route`]).
    ///
    /// ```
    /// let b = getty_transports::ws::WsServer::builder();
    /// ```
    pub fn builder() -> WsServerBuilder {
        WsServerBuilder::default()
    }
}

impl<R: Routes> WsServer<R> {
    /// The address the server listens on (with the port the kernel picked for port 0).
    ///
    /// ```
    /// let server = getty_transports::ws::WsServer::builder().bind("127.0.0.1:0").unwrap();
    /// assert!(server.local_addr().ip().is_loopback());
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        *self.acceptor.local_addr()
    }

    /// Accepts what is waiting; each connection becomes an upgrade entry in the server's
    /// group, and then a session in the same group.
    fn accept(&mut self, cx: &mut Context<'_>, resumed: bool) -> Status {
        let group = self.acceptor.group();
        let accepted = |_cx: &mut Context<'_>, stream: TcpStream, peer: SocketAddr| {
            if let Err(e) = self.socket_options.apply(SockRef::from(&stream)) {
                log::debug!("socket options for {peer}: {e}");
                return None;
            }
            let filter = match self.tls.as_ref().map(FilterFactory::make).transpose() {
                Ok(filter) => filter.map(|f| Box::new(crate::filtered::FilterIo::new(f))),
                Err(e) => {
                    log::warn!("cannot start a TLS session with {peer}: {e}");
                    return None;
                }
            };
            let handshake = ServerHandshake {
                router: Arc::clone(&self.router),
                peer,
                group,
                chosen: None,
            };
            let upgrade = Upgrade::new(
                stream,
                filter,
                BytesMut::new(),
                handshake,
                self.handshake_timeout,
            );
            Some(upgrade)
        };
        if resumed {
            self.acceptor.on_timer(cx, accepted)
        } else {
            self.acceptor.on_ready(cx, accepted)
        }
    }
}

impl<R: Routes> Entry for WsServer<R> {
    type Command = ServerCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        self.acceptor.start(cx)
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _ready: Ready) -> Status {
        self.accept(cx, false)
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _tag: u64) -> Status {
        self.accept(cx, true)
    }

    fn on_command(&mut self, cx: &mut Context<'_>, command: ServerCommand) -> Status {
        self.acceptor.on_command(cx, command)
    }
}
