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
    /// use getty_codec::ws::DeflateConfig;
    /// let b = getty_transports::ws::WsServer::builder().deflate(Some(DeflateConfig::default()));
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
    /// let b = getty_transports::ws::WsServer::builder().protocols(["graphql-ws"]);
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
    /// let b = getty_transports::ws::WsServer::builder()
    ///     .check_origin(|origin| origin == Some("https://app.example"));
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
    /// let b = getty_transports::ws::WsServer::builder().ping_on_cron(true);
    /// ```
    pub fn ping_on_cron(mut self, on: bool) -> Self {
        self.kind.router.keepalive.ping_on_cron = on;
        self
    }

    /// Ends a session with `Error::PongTimeout` when a ping (from the cron or from
    /// `Session::ping`) gets no pong for this long (`None`, the default: never).
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = getty_transports::ws::WsServer::builder().pong_timeout(Some(Duration::from_secs(5)));
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
