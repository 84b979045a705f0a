//! The WebSocket client's builder: every stream client's settings, plus the upgrade
//! request's headers and subprotocols, permessage-deflate, TLS for `wss://`, and keep-alive
//! pings.

use std::io;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "tls")]
use getty_codec::rustls;
use getty_codec::ws::{ClientRequest, DeflateConfig};
use getty_codec::Decoder;

use crate::builder::sealed::{self, StreamDial};
use crate::builder::ClientBuilder;
use crate::session::Handler;
use crate::tcp::{Setup, TcpClientBuilder, TcpClientKind};
use crate::ws::{Keepalive, Ws};
use crate::DialTarget;

use super::{WsClient, WsDial, WsUrl};

/// Configures a [`WsClient`]: every stream client's settings ([`ClientBuilder`]:
/// connections, timeouts, backoff, socket and session options), plus the upgrade request's headers and subprotocols, permessage-deflate, TLS for
/// `wss://`, and keep-alive pings.
///
/// ```
/// use std::time::Duration;
/// use getty_codec::{Message, MessageCodec};
/// use getty_transports::{ws::{Ws, WsClient}, Handler, Session};
///
/// struct Sink;
/// impl Handler<MessageCodec, Ws> for Sink {
///     fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {}
/// }
///
/// let client = WsClient::builder()
///     .connection_number(4)
///     .header("Authorization", "Bearer t0ken")
///     .protocol("chat.v2")
///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(2))
///     .build("ws://127.0.0.1:9/chat", |_| Ok((MessageCodec, Sink)))
///     .unwrap();
/// ```
pub type WsClientBuilder = ClientBuilder<WsClientKind>;

/// The WebSocket client's part of its [`WsClientBuilder`]: the upgrade request, TLS for
/// `wss://`, permessage-deflate and keep-alive pings.
#[derive(Debug, Clone, Default)]
pub struct WsClientKind {
    stream: StreamDial,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
    headers: Vec<(String, String)>,
    protocols: Vec<String>,
    deflate: Option<DeflateConfig>,
    keepalive: Keepalive,
}

impl sealed::StreamClient for WsClientKind {
    fn stream_dial(&mut self) -> &mut StreamDial {
        &mut self.stream
    }
}

impl WsClientBuilder {
    /// The TLS configuration for `wss://` URLs (required for them): the server's
    /// certificate must be valid for the URL's host and chain to the configuration's roots.
    /// See [`crate::tls`].
    ///
    /// A `wss://` client that trusts a loopback server's self-signed certificate (issued for
    /// `127.0.0.1`, the URL's host) and gets its message echoed through TLS:
    ///
    /// ```
    /// use std::sync::mpsc::{channel, Sender};
    /// use std::time::Duration;
    /// use getty_codec::{Message, MessageCodec};
    /// use getty_reactor::Reactor;
    /// use getty_transports::{tls, ws::{Ws, WsClient, WsServer}, Handler, Session};
    ///
    /// struct Hello(Sender<Message>);
    /// impl Handler<MessageCodec, Ws> for Hello {
    ///     fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
    ///         s.write(Message::text("hello"))?; // encrypted, sent once TLS and the upgrade are done
    ///         Ok(())
    ///     }
    ///     fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, m: Message) {
    ///         let _ = self.0.send(m);
    ///     }
    /// }
    /// # struct Echo;
    /// # impl Handler<MessageCodec, Ws> for Echo {
    /// #     fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, m: Message) { let _ = s.write(m); }
    /// # }
    /// # let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    /// # let (chain, key) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    /// # let server = WsServer::builder().tls(tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
    /// #     .route("/echo", |_| Ok((MessageCodec, Echo))).bind("127.0.0.1:0").unwrap();
    /// # let url = format!("wss://{}/echo", server.local_addr());
    /// # let server = Reactor::start_thread("wss-server", move |r| { r.spawn(server); Ok(()) }).unwrap();
    /// let config = tls::client_config(chain.as_bytes()).unwrap(); // the roots to trust
    /// let (tx, rx) = channel();
    /// let reactor = Reactor::start_thread("wss", move |r| {
    ///     let client = WsClient::builder()
    ///         .tls(config)
    ///         .build(&url, move |_| Ok((MessageCodec, Hello(tx.clone()))))?;
    ///     r.spawn(client);
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), Message::text("hello"));
    /// reactor.handle().shutdown();
    /// reactor.join().unwrap();
    /// # server.handle().shutdown();
    /// # server.join().unwrap();
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.kind.tls = Some(config);
        self
    }

    /// Adds a header to the upgrade request (`Origin`, `Authorization`, cookies, ...). The
    /// name must be an HTTP token and not one the upgrade sets itself (`Host`, `Upgrade`,
    /// `Sec-WebSocket-*`, ...), the value must hold no control character but tab:
    /// [`build`](Self::build) refuses the client otherwise.
    ///
    /// ```
    /// # use std::io::Read;
    /// # use getty_codec::{Message, MessageCodec};
    /// # use getty_transports::{ws::{Ws, WsClient, WsClientBuilder}, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<MessageCodec, Ws> for Sink { fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {} }
    /// # /// The upgrade request `client` sends to a loopback listener, lowercased.
    /// # fn request(client: WsClientBuilder) -> String {
    /// #     let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// #     let url = format!("ws://{}/", listener.local_addr().unwrap());
    /// #     let reactor = getty_reactor::Reactor::start_thread("ws", move |r| {
    /// #         r.spawn(client.build(&url, |_| Ok((MessageCodec, Sink)))?);
    /// #         Ok(())
    /// #     }).unwrap();
    /// #     listener.set_nonblocking(true).unwrap();
    /// #     let mut peer = (0..1000).find_map(|_| {
    /// #         std::thread::sleep(std::time::Duration::from_millis(10));
    /// #         listener.accept().ok()
    /// #     }).expect("the client never dialled").0;
    /// #     peer.set_nonblocking(false).unwrap();
    /// #     peer.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    /// #     let (mut head, mut buf) = (Vec::new(), [0; 512]);
    /// #     while !head.ends_with(b"\r\n\r\n") {
    /// #         let n = peer.read(&mut buf).unwrap();
    /// #         if n == 0 { break }
    /// #         head.extend_from_slice(&buf[..n]);
    /// #     }
    /// #     reactor.handle().shutdown();
    /// #     reactor.join().unwrap();
    /// #     String::from_utf8(head).unwrap().to_ascii_lowercase()
    /// # }
    /// let head = request(WsClient::builder().header("Origin", "https://app.example"));
    /// assert!(head.starts_with("get / http/1.1\r\n") && head.contains("\r\norigin: https://app.example\r\n"));
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.kind.headers.push((name.into(), value.into()));
        self
    }

    /// Offers a subprotocol (an HTTP token); call again to offer more, most preferred
    /// first. The one the server chose is [`Session::protocol`](crate::Session::protocol).
    ///
    /// ```
    /// # use std::io::Read;
    /// # use getty_codec::{Message, MessageCodec};
    /// # use getty_transports::{ws::{Ws, WsClient, WsClientBuilder}, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<MessageCodec, Ws> for Sink { fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {} }
    /// # /// The upgrade request `client` sends to a loopback listener, lowercased.
    /// # fn request(client: WsClientBuilder) -> String {
    /// #     let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// #     let url = format!("ws://{}/", listener.local_addr().unwrap());
    /// #     let reactor = getty_reactor::Reactor::start_thread("ws", move |r| {
    /// #         r.spawn(client.build(&url, |_| Ok((MessageCodec, Sink)))?);
    /// #         Ok(())
    /// #     }).unwrap();
    /// #     listener.set_nonblocking(true).unwrap();
    /// #     let mut peer = (0..1000).find_map(|_| {
    /// #         std::thread::sleep(std::time::Duration::from_millis(10));
    /// #         listener.accept().ok()
    /// #     }).expect("the client never dialled").0;
    /// #     peer.set_nonblocking(false).unwrap();
    /// #     peer.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    /// #     let (mut head, mut buf) = (Vec::new(), [0; 512]);
    /// #     while !head.ends_with(b"\r\n\r\n") {
    /// #         let n = peer.read(&mut buf).unwrap();
    /// #         if n == 0 { break }
    /// #         head.extend_from_slice(&buf[..n]);
    /// #     }
    /// #     reactor.handle().shutdown();
    /// #     reactor.join().unwrap();
    /// #     String::from_utf8(head).unwrap().to_ascii_lowercase()
    /// # }
    /// let head = request(WsClient::builder().protocol("mqtt").protocol("mqttv3.1"));
    /// assert!(head.contains("\r\nsec-websocket-protocol: mqtt, mqttv3.1\r\n"));
    /// ```
    pub fn protocol(mut self, name: impl Into<String>) -> Self {
        self.kind.protocols.push(name.into());
        self
    }

    /// Offers permessage-deflate (RFC 7692) with these settings (`None`, the default:
    /// messages are never compressed). Without the `deflate` feature nothing is offered,
    /// and messages are sent plain; see the crate's [features](crate#features).
    ///
    /// ```
    /// use getty_codec::ws::DeflateConfig;
    /// # use std::io::Read;
    /// # use getty_codec::{Message, MessageCodec};
    /// # use getty_transports::{ws::{Ws, WsClient, WsClientBuilder}, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<MessageCodec, Ws> for Sink { fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {} }
    /// # /// The upgrade request `client` sends to a loopback listener, lowercased.
    /// # fn request(client: WsClientBuilder) -> String {
    /// #     let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// #     let url = format!("ws://{}/", listener.local_addr().unwrap());
    /// #     let reactor = getty_reactor::Reactor::start_thread("ws", move |r| {
    /// #         r.spawn(client.build(&url, |_| Ok((MessageCodec, Sink)))?);
    /// #         Ok(())
    /// #     }).unwrap();
    /// #     listener.set_nonblocking(true).unwrap();
    /// #     let mut peer = (0..1000).find_map(|_| {
    /// #         std::thread::sleep(std::time::Duration::from_millis(10));
    /// #         listener.accept().ok()
    /// #     }).expect("the client never dialled").0;
    /// #     peer.set_nonblocking(false).unwrap();
    /// #     peer.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    /// #     let (mut head, mut buf) = (Vec::new(), [0; 512]);
    /// #     while !head.ends_with(b"\r\n\r\n") {
    /// #         let n = peer.read(&mut buf).unwrap();
    /// #         if n == 0 { break }
    /// #         head.extend_from_slice(&buf[..n]);
    /// #     }
    /// #     reactor.handle().shutdown();
    /// #     reactor.join().unwrap();
    /// #     String::from_utf8(head).unwrap().to_ascii_lowercase()
    /// # }
    /// let head = request(WsClient::builder().deflate(Some(DeflateConfig::default())));
    /// // Offered only when the crate is built with its `deflate` feature (a default one).
    /// assert_eq!(head.contains("\r\nsec-websocket-extensions: permessage-deflate"), cfg!(feature = "deflate"));
    /// assert!(!request(WsClient::builder()).contains("permessage-deflate"));
    /// ```
    pub fn deflate(mut self, config: Option<DeflateConfig>) -> Self {
        self.kind.deflate = config;
        self
    }

    /// Sends a ping on every cron tick, before `on_cron` (see
    /// [`SessionOptions::cron_period`](crate::SessionOptions::cron_period)). Default off.
    ///
    /// ```
    /// # use std::io::{Read, Write};
    /// # use std::net::TcpListener;
    /// # use std::time::Duration;
    /// # use bytes::BytesMut;
    /// # use getty_codec::ws::{parse_request, Config, Event, Protocol, Role};
    /// # use getty_codec::{Message, MessageCodec};
    /// # use getty_reactor::Reactor;
    /// # use getty_transports::{ws::{Ws, WsClient}, Handler, Session, SessionOptions};
    /// # struct Sink;
    /// # impl Handler<MessageCodec, Ws> for Sink { fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {} }
    /// # /// Accepts a client on `listener` and answers its upgrade with a `101`; then reads what
    /// # /// the client sends (decoded as a server does, so unmasked frames fail), never answering.
    /// # fn upgraded(listener: &TcpListener) -> impl FnMut() -> Option<Event> {
    /// #     listener.set_nonblocking(true).unwrap();
    /// #     let mut peer = (0..1000).find_map(|_| {
    /// #         std::thread::sleep(Duration::from_millis(10));
    /// #         listener.accept().ok()
    /// #     }).expect("the client never dialled").0;
    /// #     peer.set_nonblocking(false).unwrap();
    /// #     peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    /// #     let (mut input, mut buf) = (BytesMut::new(), [0; 512]);
    /// #     let mut read = move |peer: &mut std::net::TcpStream, input: &mut BytesMut| {
    /// #         let n = peer.read(&mut buf).unwrap();
    /// #         input.extend_from_slice(&buf[..n]);
    /// #         n > 0
    /// #     };
    /// #     let request = loop {
    /// #         if let Some(request) = parse_request(&mut input, 8192).unwrap() { break request }
    /// #         assert!(read(&mut peer, &mut input), "closed during the upgrade");
    /// #     };
    /// #     let mut response = BytesMut::new();
    /// #     request.accept(None, None, &mut response).unwrap();
    /// #     peer.write_all(&response).unwrap();
    /// #     let mut frames = Protocol::new(Role::Server, Config::default(), None);
    /// #     move || loop {
    /// #         if let Some(event) = frames.decode(&mut input, &mut BytesMut::new()).unwrap() { return Some(event) }
    /// #         if !read(&mut peer, &mut input) { return None }
    /// #     }
    /// # }
    /// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    /// let url = format!("ws://{}/", listener.local_addr().unwrap());
    /// let reactor = Reactor::start_thread("ws", move |r| {
    ///     let client = WsClient::builder().ping_on_cron(true)
    ///         .session_options(SessionOptions::default().cron_period(Some(Duration::from_millis(50))))
    ///         .build(&url, |_| Ok((MessageCodec, Sink)))?;
    ///     r.spawn(client);
    ///     Ok(())
    /// }).unwrap();
    /// let mut next_event = upgraded(&listener);
    /// assert!(matches!(next_event(), Some(Event::Ping(_))), "the client pings on its own");
    /// reactor.handle().shutdown();
    /// reactor.join().unwrap();
    /// ```
    pub fn ping_on_cron(mut self, on: bool) -> Self {
        self.kind.keepalive.ping_on_cron = on;
        self
    }

    /// Ends a session with `Error::PongTimeout` when a ping gets no pong for this long
    /// (`None`, the default: never).
    ///
    /// ```
    /// # use std::io::{Read, Write};
    /// # use std::net::TcpListener;
    /// # use std::time::Duration;
    /// # use bytes::BytesMut;
    /// # use getty_codec::ws::{parse_request, Config, Event, Protocol, Role};
    /// # use getty_codec::{Message, MessageCodec};
    /// # use getty_reactor::Reactor;
    /// # use getty_transports::{ws::{Ws, WsClient}, Handler, Session, SessionOptions};
    /// # struct Sink;
    /// # impl Handler<MessageCodec, Ws> for Sink { fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {} }
    /// # /// Accepts a client on `listener` and answers its upgrade with a `101`; then reads what
    /// # /// the client sends (decoded as a server does, so unmasked frames fail), never answering.
    /// # fn upgraded(listener: &TcpListener) -> impl FnMut() -> Option<Event> {
    /// #     listener.set_nonblocking(true).unwrap();
    /// #     let mut peer = (0..1000).find_map(|_| {
    /// #         std::thread::sleep(Duration::from_millis(10));
    /// #         listener.accept().ok()
    /// #     }).expect("the client never dialled").0;
    /// #     peer.set_nonblocking(false).unwrap();
    /// #     peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    /// #     let (mut input, mut buf) = (BytesMut::new(), [0; 512]);
    /// #     let mut read = move |peer: &mut std::net::TcpStream, input: &mut BytesMut| {
    /// #         let n = peer.read(&mut buf).unwrap();
    /// #         input.extend_from_slice(&buf[..n]);
    /// #         n > 0
    /// #     };
    /// #     let request = loop {
    /// #         if let Some(request) = parse_request(&mut input, 8192).unwrap() { break request }
    /// #         assert!(read(&mut peer, &mut input), "closed during the upgrade");
    /// #     };
    /// #     let mut response = BytesMut::new();
    /// #     request.accept(None, None, &mut response).unwrap();
    /// #     peer.write_all(&response).unwrap();
    /// #     let mut frames = Protocol::new(Role::Server, Config::default(), None);
    /// #     move || loop {
    /// #         if let Some(event) = frames.decode(&mut input, &mut BytesMut::new()).unwrap() { return Some(event) }
    /// #         if !read(&mut peer, &mut input) { return None }
    /// #     }
    /// # }
    /// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    /// let url = format!("ws://{}/", listener.local_addr().unwrap());
    /// let reactor = Reactor::start_thread("ws", move |r| {
    ///     let client = WsClient::builder().ping_on_cron(true).pong_timeout(Some(Duration::from_millis(200)))
    ///         .session_options(SessionOptions::default().cron_period(Some(Duration::from_millis(50))))
    ///         .build(&url, |_| Ok((MessageCodec, Sink)))?;
    ///     r.spawn(client);
    ///     Ok(())
    /// }).unwrap();
    /// // This server reads but never answers a ping: the client gives up on it with a close
    /// // frame, 1001 (going away), after a few unanswered pings.
    /// let mut next_event = upgraded(&listener);
    /// assert!(matches!(next_event(), Some(Event::Ping(_))));
    /// let close = std::iter::from_fn(next_event).take(100).find_map(|event| match event {
    ///     Event::Close(frame) => frame,
    ///     _ => None,
    /// });
    /// assert_eq!(close.unwrap().code, 1001);
    /// reactor.handle().shutdown();
    /// reactor.join().unwrap();
    /// ```
    pub fn pong_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.kind.keepalive.pong_timeout = timeout.map(crate::options::clamp_timeout);
        self
    }

    /// Parses `url` (`ws://host[:port][/path][?query]` or `wss://...`), resolves its host
    /// and makes the client. Nothing is dialled until it is spawned into a reactor. `setup`
    /// runs for every connected socket, before the upgrade. Every address of the host is
    /// tried in turn until one connects, and a host name is resolved again (off the
    /// reactor) before every redial: see [`DialTarget`].
    ///
    /// The upgrade request is checked here: a path or query with a character RFC 3986
    /// does not allow (a space, a control character: percent-encode them), or a bad header
    /// or subprotocol, fails with [`io::ErrorKind::InvalidInput`] carrying a
    /// [`getty_codec::ws::InvalidRequest`], so no request with injected headers is ever
    /// sent.
    ///
    /// ```
    /// # use getty_codec::{Message, MessageCodec};
    /// # use getty_transports::{ws::{Ws, WsClient}, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<MessageCodec, Ws> for Sink { fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {} }
    /// let client = WsClient::builder().build("ws://127.0.0.1:9/feed?v=2", |_| Ok((MessageCodec, Sink))).unwrap();
    /// assert_eq!(client.peer_addr().port(), 9);
    /// assert!(WsClient::builder().build("http://h/", |_| Ok((MessageCodec, Sink))).is_err());
    ///
    /// use getty_codec::ws::{InvalidRequest, RequestPart};
    /// let err = WsClient::builder()
    ///     .header("X-Token", "t\r\nX-Injected: 1")
    ///     .build("ws://127.0.0.1:9/", |_| Ok((MessageCodec, Sink)))
    ///     .err()
    ///     .unwrap();
    /// let why = err.get_ref().and_then(|e| e.downcast_ref::<InvalidRequest>()).unwrap();
    /// assert_eq!(why.part(), RequestPart::HeaderValue);
    /// ```
    pub fn build<F, C, H>(self, url: &str, setup: F) -> io::Result<WsClient<F, C, H>>
    where
        F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)> + 'static,
        C: Decoder + 'static,
        H: Handler<C, Ws>,
    {
        let url = WsUrl::parse(url)?;
        let mut ws = self.kind;
        let mut tcp = TcpClientBuilder {
            dial: self.dial,
            session_options: self.session_options,
            kind: TcpClientKind::new(std::mem::take(&mut ws.stream)),
        };
        if url.secure {
            tcp = ws.secure(tcp, &url)?;
        }
        let mut request = ClientRequest::new(url.host_header(), url.path.as_str());
        for (name, value) in ws.headers {
            request = request.header(name, value);
        }
        for protocol in ws.protocols {
            request = request.protocol(protocol);
        }
        if let Some(deflate) = ws.deflate {
            request = request.deflate(deflate);
        }
        // A CR LF in the path or a header would inject headers: refuse it here, typed
        // (`InvalidRequest` inside the `io::Error`), not as a bad request on every dial.
        request
            .check()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        tcp.kind.websocket = Some(Arc::new(WsDial {
            request,
            path: url.path.clone(),
            keepalive: ws.keepalive,
        }));
        // Every address of the host is tried in turn; a name is resolved again before
        // every redial (see `DialTarget`).
        let target = DialTarget::host(url.bare_host(), url.port);
        Ok(WsClient {
            inner: tcp.build_client(target, setup)?,
        })
    }
}

impl WsClientKind {
    /// `tcp` with TLS for a `wss://` URL: the configuration given to
    /// [`WsClientBuilder::tls`], the server's name from the URL.
    #[cfg(feature = "tls")]
    fn secure(&self, tcp: TcpClientBuilder, url: &WsUrl) -> io::Result<TcpClientBuilder> {
        let config = self.tls.clone().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a wss:// URL needs a TLS configuration (WsClientBuilder::tls)",
            )
        })?;
        let tcp = tcp.tls(config, url.bare_host());
        tcp.check_tls_name()?;
        Ok(tcp)
    }

    /// Without the `tls` feature a `wss://` URL is refused when the client is built.
    #[cfg(not(feature = "tls"))]
    fn secure(&self, _: TcpClientBuilder, _: &WsUrl) -> io::Result<TcpClientBuilder> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a wss:// URL needs getty-transports' `tls` feature",
        ))
    }
}
