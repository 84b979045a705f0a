//! The WebSocket server builder's own settings: permessage-deflate, subprotocols, the origin
//! check, keep-alive pings, routes.

use super::*;

impl<R: Routes> WsServerBuilder<R> {
    /// Accepts permessage-deflate (RFC 7692) when a client offers it, on these terms
    /// (`None`, the default: messages are never compressed). Without the `deflate` feature
    /// the server declines every offer (RFC 7692 lets it), so clients fall back to plain
    /// messages; see the crate's [features](crate#features).
    ///
    /// ```
    /// # #[cfg(feature = "deflate")] {
    /// use getty_codec::ws::DeflateConfig;
    /// # use std::io::{Read, Write};
    /// # use getty_codec::{Message, MessageCodec};
    /// # use getty_transports::{ws::{Ws, WsServer}, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<MessageCodec, Ws> for Sink { fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {} }
    /// # fn upgrade(addr: std::net::SocketAddr, extra: &str) -> String {
    /// #     let mut peer = std::net::TcpStream::connect(addr).unwrap();
    /// #     peer.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    /// #     write!(peer, "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    /// #         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").unwrap();
    /// #     let (mut head, mut buf) = (Vec::new(), [0; 512]);
    /// #     while !head.ends_with(b"\r\n\r\n") {
    /// #         let n = peer.read(&mut buf).unwrap();
    /// #         if n == 0 { break }
    /// #         head.extend_from_slice(&buf[..n]);
    /// #     }
    /// #     String::from_utf8(head).unwrap().to_ascii_lowercase()
    /// # }
    /// let server = WsServer::builder().deflate(Some(DeflateConfig::default()))
    ///     .route("/", |_| Ok((MessageCodec, Sink))).bind("127.0.0.1:0").unwrap();
    /// let addr = server.local_addr();
    /// let reactor = getty_reactor::Reactor::start_thread("ws", move |r| { r.spawn(server); Ok(()) }).unwrap();
    /// let head = upgrade(addr, "Sec-WebSocket-Extensions: permessage-deflate\r\n");
    /// assert!(head.starts_with("http/1.1 101") && head.contains("sec-websocket-extensions: permessage-deflate"));
    /// reactor.handle().shutdown();
    /// reactor.join().unwrap();
    /// # }
    /// ```
    pub fn deflate(mut self, config: Option<DeflateConfig>) -> Self {
        self.kind.router.deflate = config;
        self
    }

    /// The subprotocols the server speaks. The server answers with the first one the
    /// client offered that is in this list (a route's hook may choose otherwise); when none
    /// is, the upgrade goes on without one, as RFC 6455 says, and the client decides.
    ///
    /// ```
    /// # use std::io::{Read, Write};
    /// # use getty_codec::{Message, MessageCodec};
    /// # use getty_transports::{ws::{Ws, WsServer}, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<MessageCodec, Ws> for Sink { fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {} }
    /// # fn upgrade(addr: std::net::SocketAddr, extra: &str) -> String {
    /// #     let mut peer = std::net::TcpStream::connect(addr).unwrap();
    /// #     peer.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    /// #     write!(peer, "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    /// #         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").unwrap();
    /// #     let (mut head, mut buf) = (Vec::new(), [0; 512]);
    /// #     while !head.ends_with(b"\r\n\r\n") {
    /// #         let n = peer.read(&mut buf).unwrap();
    /// #         if n == 0 { break }
    /// #         head.extend_from_slice(&buf[..n]);
    /// #     }
    /// #     String::from_utf8(head).unwrap().to_ascii_lowercase()
    /// # }
    /// let server = WsServer::builder().protocols(["graphql-ws"])
    ///     .route("/", |_| Ok((MessageCodec, Sink))).bind("127.0.0.1:0").unwrap();
    /// let addr = server.local_addr();
    /// let reactor = getty_reactor::Reactor::start_thread("ws", move |r| { r.spawn(server); Ok(()) }).unwrap();
    /// let head = upgrade(addr, "Sec-WebSocket-Protocol: mqtt, graphql-ws\r\n");
    /// assert!(head.starts_with("http/1.1 101") && head.contains("sec-websocket-protocol: graphql-ws\r\n"));
    /// reactor.handle().shutdown();
    /// reactor.join().unwrap();
    /// ```
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.kind.router.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Checks the request's `Origin` header (`None` when there is none, as from non-browser
    /// clients); a `false` refuses the upgrade with a `403`. By default every origin is let
    /// in.
    ///
    /// ```
    /// # use std::io::{Read, Write};
    /// # use getty_codec::{Message, MessageCodec};
    /// # use getty_transports::{ws::{Ws, WsServer}, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<MessageCodec, Ws> for Sink { fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {} }
    /// # fn upgrade(addr: std::net::SocketAddr, extra: &str) -> String {
    /// #     let mut peer = std::net::TcpStream::connect(addr).unwrap();
    /// #     peer.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    /// #     write!(peer, "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    /// #         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").unwrap();
    /// #     let (mut head, mut buf) = (Vec::new(), [0; 512]);
    /// #     while !head.ends_with(b"\r\n\r\n") {
    /// #         let n = peer.read(&mut buf).unwrap();
    /// #         if n == 0 { break }
    /// #         head.extend_from_slice(&buf[..n]);
    /// #     }
    /// #     String::from_utf8(head).unwrap().to_ascii_lowercase()
    /// # }
    /// let server = WsServer::builder().check_origin(|origin| origin == Some("https://app.example"))
    ///     .route("/", |_| Ok((MessageCodec, Sink))).bind("127.0.0.1:0").unwrap();
    /// let addr = server.local_addr();
    /// let reactor = getty_reactor::Reactor::start_thread("ws", move |r| { r.spawn(server); Ok(()) }).unwrap();
    /// assert!(upgrade(addr, "Origin: https://app.example\r\n").starts_with("http/1.1 101"));
    /// assert!(upgrade(addr, "Origin: https://evil.example\r\n").starts_with("http/1.1 403"));
    /// reactor.handle().shutdown();
    /// reactor.join().unwrap();
    /// ```
    pub fn check_origin(
        mut self,
        check: impl Fn(Option<&str>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.kind.router.origin_check = Some(Arc::new(check));
        self
    }

    /// Sends a ping on every cron tick, before `on_cron` runs (getty's WebSocket keep-alive;
    /// set the period with [`SessionOptions::cron_period`]). Default off.
    ///
    /// ```
    /// # use std::io::{Read, Write};
    /// # use std::time::Duration;
    /// # use getty_codec::{Message, MessageCodec};
    /// # use getty_transports::{ws::{Ws, WsServer}, Handler, Session, SessionOptions};
    /// # struct Sink;
    /// # impl Handler<MessageCodec, Ws> for Sink { fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {} }
    /// # /// A client that upgrades and then only reads (it never answers a ping).
    /// # fn upgraded(addr: std::net::SocketAddr) -> std::net::TcpStream {
    /// #     let mut peer = std::net::TcpStream::connect(addr).unwrap();
    /// #     peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    /// #     peer.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    /// #         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    /// #     let mut head = Vec::new();
    /// #     while !head.ends_with(b"\r\n\r\n") {
    /// #         let mut byte = [0];
    /// #         assert_eq!(peer.read(&mut byte).unwrap(), 1, "closed during the upgrade");
    /// #         head.push(byte[0]);
    /// #     }
    /// #     assert!(head.starts_with(b"HTTP/1.1 101"));
    /// #     peer
    /// # }
    /// let server = WsServer::builder().ping_on_cron(true)
    ///     .session_options(SessionOptions::default().cron_period(Some(Duration::from_millis(50))))
    ///     .route("/", |_| Ok((MessageCodec, Sink))).bind("127.0.0.1:0").unwrap();
    /// let addr = server.local_addr();
    /// let reactor = getty_reactor::Reactor::start_thread("ws", move |r| { r.spawn(server); Ok(()) }).unwrap();
    /// let mut frame = [0; 2];
    /// upgraded(addr).read_exact(&mut frame).unwrap();
    /// assert_eq!(frame[0], 0x89, "a final ping frame");
    /// reactor.handle().shutdown();
    /// reactor.join().unwrap();
    /// ```
    pub fn ping_on_cron(mut self, on: bool) -> Self {
        self.kind.router.keepalive.ping_on_cron = on;
        self
    }

    /// Ends a session with `Error::PongTimeout` when a ping (from the cron or from
    /// `Session::ping`) gets no pong for this long (`None`, the default: never).
    ///
    /// ```
    /// # use std::io::{Read, Write};
    /// # use std::time::Duration;
    /// # use getty_codec::{Message, MessageCodec};
    /// # use getty_transports::{ws::{Ws, WsServer}, Handler, Session, SessionOptions};
    /// # struct Sink;
    /// # impl Handler<MessageCodec, Ws> for Sink { fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {} }
    /// # /// A client that upgrades and then only reads (it never answers a ping).
    /// # fn upgraded(addr: std::net::SocketAddr) -> std::net::TcpStream {
    /// #     let mut peer = std::net::TcpStream::connect(addr).unwrap();
    /// #     peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    /// #     peer.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    /// #         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    /// #     let mut head = Vec::new();
    /// #     while !head.ends_with(b"\r\n\r\n") {
    /// #         let mut byte = [0];
    /// #         assert_eq!(peer.read(&mut byte).unwrap(), 1, "closed during the upgrade");
    /// #         head.push(byte[0]);
    /// #     }
    /// #     assert!(head.starts_with(b"HTTP/1.1 101"));
    /// #     peer
    /// # }
    /// let server = WsServer::builder().ping_on_cron(true).pong_timeout(Some(Duration::from_millis(200)))
    ///     .session_options(SessionOptions::default().cron_period(Some(Duration::from_millis(50))))
    ///     .route("/", |_| Ok((MessageCodec, Sink))).bind("127.0.0.1:0").unwrap();
    /// let addr = server.local_addr();
    /// let reactor = getty_reactor::Reactor::start_thread("ws", move |r| { r.spawn(server); Ok(()) }).unwrap();
    /// // The peer never answers the pings, so the server hangs up within the read timeout.
    /// let mut frames = Vec::new();
    /// upgraded(addr).read_to_end(&mut frames).unwrap();
    /// assert_eq!(frames[0], 0x89, "a final ping frame first");
    /// reactor.handle().shutdown();
    /// reactor.join().unwrap();
    /// ```
    pub fn pong_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.kind.router.keepalive.pong_timeout = timeout.map(crate::options::clamp_timeout);
        self
    }

    /// Serves `path` (the request target without its query, matched exactly): `setup`
    /// runs for every upgrade request to it, as getty's `NewSessionCallback`, and picks the
    /// session's codec and handler. A request for a path without a route gets a `404`; of
    /// two routes for one path, the first added serves it. Routes may use different codecs
    /// and handlers.
    ///
    /// `setup` runs on the reactor's thread and need not be `Send`; the server is `Send`
    /// (to be built on one thread and spawned on another) when every route's `setup` is,
    /// as a [`TcpServer`](crate::tcp::TcpServer) is when its hook is. A hook holding an
    /// `Rc` makes a server that is built on its reactor's thread:
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use getty_codec::{Message, MessageCodec};
    /// use getty_reactor::Reactor;
    /// use getty_transports::{ws::{Ws, WsServer}, Handler, Session};
    ///
    /// struct Count(Rc<Cell<u64>>);
    /// impl Handler<MessageCodec, Ws> for Count {
    ///     fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {
    ///         self.0.set(self.0.get() + 1);
    ///     }
    /// }
    ///
    /// let reactor = Reactor::start_thread("ws", |r| {
    ///     let messages = Rc::new(Cell::new(0)); // shared by the sessions, on this thread
    ///     let server = WsServer::builder()
    ///         .route("/", move |_| Ok((MessageCodec, Count(messages.clone()))))
    ///         .bind("127.0.0.1:0")?;
    ///     r.spawn(server);
    ///     Ok(())
    /// }).unwrap();
    /// reactor.handle().shutdown();
    /// reactor.join().unwrap();
    /// ```
    ///
    ///
    /// ```
    /// use getty_codec::{Bytes, LinesCodec, Message, MessageCodec};
    /// use getty_transports::{ws::{Ws, WsServer}, Handler, Session};
    /// struct Echo;
    /// impl Handler<MessageCodec, Ws> for Echo {
    ///     fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, m: Message) { let _ = s.write(m); }
    /// }
    /// struct Log;
    /// impl Handler<LinesCodec, Ws> for Log {
    ///     fn on_message(&mut self, _: &mut Session<LinesCodec, Ws>, line: Bytes) { println!("{line:?}"); }
    /// }
    /// let b = WsServer::builder()
    ///     .route("/echo", |_| Ok((MessageCodec, Echo)))
    ///     .route("/log", |_| Ok((LinesCodec::default(), Log)));
    /// ```
    pub fn route<F, C, H>(
        self,
        path: impl Into<String>,
        setup: F,
    ) -> WsServerBuilder<Then<R, F, C, H>>
    where
        F: FnMut(&mut WsSetup<'_>) -> io::Result<(C, H)> + 'static,
        C: Decoder + 'static,
        H: Handler<C, Ws>,
    {
        let ServerBuilder {
            listen,
            socket_options,
            session_options,
            tls,
            kind: WsServerKind { router },
        } = self;
        let route = RouteWith::new(path.into(), setup);
        let router = Router {
            routes: Then::new(router.routes, route),
            protocols: router.protocols,
            origin_check: router.origin_check,
            deflate: router.deflate,
            keepalive: router.keepalive,
            session_options: router.session_options,
        };
        ServerBuilder {
            listen,
            socket_options,
            session_options,
            tls,
            kind: WsServerKind { router },
        }
    }

    /// Binds and listens (port 0 picks a free port; see [`WsServer::local_addr`]).
    ///
    /// ```
    /// let server = getty_transports::ws::WsServer::builder().bind("127.0.0.1:0").unwrap();
    /// ```
    pub fn bind(self, addr: impl ToSocketAddrs) -> io::Result<WsServer<R>> {
        let mut router = self.kind.router;
        router.session_options = Arc::new(self.session_options);
        Ok(WsServer {
            acceptor: self.listen.bind(addr)?,
            socket_options: self.socket_options,
            tls: self.tls,
            handshake_timeout: router.session_options.handshake_timeout,
            router: Arc::new(Mutex::new(router)),
        })
    }
}
