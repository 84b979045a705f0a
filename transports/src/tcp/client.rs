//! The TCP client: keeps `connection_number` sessions to one peer (every address of it
//! tried in turn), redialling with capped, jittered exponential backoff until the app
//! closes it (see `crate::client`).

use std::io;
use std::net::SocketAddr;
#[cfg(any(feature = "tls", feature = "ws"))]
use std::sync::Arc;

#[cfg(feature = "tls")]
use getty_codec::rustls;
#[cfg(feature = "tls")]
use getty_codec::rustls::pki_types::ServerName;
use getty_codec::Decoder;
use mio::net::TcpStream;

use crate::builder::sealed::{self, StreamDial};
use crate::builder::ClientBuilder;
use crate::client::{ClientConfig, DialTarget, Opening, Peer, StreamClient};
use crate::server::entry_by_inner;
use crate::session::Handler;
use crate::setup::{FilterFactory, Setup};
#[cfg(feature = "ws")]
use crate::ws::WsDial;
use crate::Tcp;

/// Configures a [`TcpClient`]: every client's settings ([`ClientBuilder`]: connections,
/// timeouts, backoff, socket and session options) and TLS.
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
pub type TcpClientBuilder = ClientBuilder<TcpClientKind>;

/// The TCP client's part of its [`TcpClientBuilder`]: TLS.
#[derive(Debug, Clone, Default)]
pub struct TcpClientKind {
    stream: StreamDial,
    /// The filter nearest the wire (TLS), if any.
    transport_filter: Option<FilterFactory>,
    /// The TLS server name, checked when the client is built.
    #[cfg(feature = "tls")]
    tls_server_name: Option<String>,
    /// `WsClientBuilder` sets it: every session starts with the upgrade.
    #[cfg(feature = "ws")]
    pub(crate) websocket: Option<Arc<WsDial>>,
}

impl sealed::StreamClient for TcpClientKind {
    fn stream_dial(&mut self) -> &mut StreamDial {
        &mut self.stream
    }
}

#[cfg(feature = "ws")]
impl TcpClientKind {
    /// The TCP part of a client whose common settings were set elsewhere (the WebSocket
    /// client's).
    pub(crate) fn new(stream: StreamDial) -> Self {
        TcpClientKind {
            stream,
            ..TcpClientKind::default()
        }
    }
}

impl TcpClientBuilder {
    /// Dials with TLS: every session starts with a handshake under `config`, and the
    /// server's certificate must be valid for `server_name` (also sent as SNI) and chain to
    /// the configuration's roots. Writes wait for the handshake; a failed one ends the
    /// session with `on_error` and counts as a failed dial. See [`crate::tls`].
    ///
    /// `server_name` is a DNS name or an IP address; anything else makes
    /// [`build`](Self::build) fail (with a
    /// [`InvalidDnsNameError`](getty_codec::rustls::pki_types::InvalidDnsNameError) inside
    /// the `io::Error`), rather than every dial.
    ///
    /// ```
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::{tcp::TcpClient, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<RawCodec> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {} }
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// let config = getty_transports::tls::client_config(cert.cert.pem().as_bytes()).unwrap();
    /// let good = TcpClient::builder().tls(config.clone(), "localhost");
    /// assert!(good.build("127.0.0.1:9", |_| Ok((RawCodec, Sink))).is_ok());
    /// let bad = TcpClient::builder().tls(config, "not a host name!");
    /// let err = bad.build("127.0.0.1:9", |_| Ok((RawCodec, Sink))).err().unwrap();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(
        mut self,
        config: Arc<rustls::ClientConfig>,
        server_name: impl Into<String>,
    ) -> Self {
        let server_name = server_name.into();
        self.kind.tls_server_name = Some(server_name.clone());
        self.kind.transport_filter = Some(FilterFactory::tls_client(config, server_name));
        self
    }

    /// Fails when the TLS server name is neither a DNS name nor an IP address: found when
    /// the client is built, not at every dial (which would fail and redial forever).
    #[cfg(feature = "tls")]
    pub(crate) fn check_tls_name(&self) -> io::Result<()> {
        if let Some(name) = &self.kind.tls_server_name {
            ServerName::try_from(name.as_str())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        Ok(())
    }

    /// Without the `tls` feature there is no server name to check.
    #[cfg(not(feature = "tls"))]
    pub(crate) fn check_tls_name(&self) -> io::Result<()> {
        Ok(())
    }

    /// Makes the client of `target`: an address, a list of addresses, or a host name and
    /// port (`"host:port"`, `("host", port)`); see [`DialTarget`]. Every address is tried
    /// in turn until one connects; a host name is resolved here (on the calling thread)
    /// and again, off the reactor, before every redial. Nothing is dialled until the
    /// client is spawned into a reactor. `setup` runs for every connected socket (an
    /// error drops it and redials).
    ///
    /// ```
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::{tcp::TcpClient, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<RawCodec> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {} }
    /// let client = TcpClient::builder().build("127.0.0.1:9", |_| Ok((RawCodec, Sink))).unwrap();
    /// assert_eq!(client.peer_addr().port(), 9);
    /// // A closed port first, then the one to reach: the client falls through to it.
    /// let addrs: Vec<std::net::SocketAddr> = vec!["127.0.0.1:9".parse().unwrap(), "127.0.0.1:80".parse().unwrap()];
    /// let client = TcpClient::builder().build(addrs, |_| Ok((RawCodec, Sink))).unwrap();
    /// assert_eq!(client.peer_addr().port(), 9);
    /// assert!(TcpClient::builder().build("no port", |_| Ok((RawCodec, Sink))).is_err());
    /// ```
    pub fn build<A, F, C, H>(self, target: A, setup: F) -> io::Result<TcpClient<F, C, H>>
    where
        A: Into<DialTarget>,
        F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)> + 'static,
        C: Decoder + 'static,
        H: Handler<C>,
    {
        Ok(TcpClient {
            inner: self.build_client(target.into(), setup)?,
        })
    }

    /// The client of sessions of transport `T` over TCP (plain ones, or WebSocket).
    pub(crate) fn build_client<T, F, C, H>(
        self,
        target: DialTarget,
        setup: F,
    ) -> io::Result<StreamClient<TcpStream, T, F, C, H>>
    where
        T: Opening<TcpStream>,
        F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)> + 'static,
        C: Decoder + 'static,
        H: Handler<C, T>,
    {
        self.check_tls_name()?;
        let peer = Peer::resolve(target)?;
        let kind = self.kind;
        let config = ClientConfig {
            transport_filter: kind.transport_filter,
            #[cfg(feature = "ws")]
            websocket: kind.websocket,
            ..kind.stream.config(self.dial, self.session_options)
        };
        Ok(StreamClient::with_setup(peer, setup, config))
    }
}

/// A client that keeps `connection_number` sessions to one peer (an address, one of a list,
/// or a host name: see [`DialTarget`]). Spawn it into a reactor;
/// send it [`Close`](crate::Close) to close its sessions and stop redialling.
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
/// let id = reactor.spawn(client);
/// reactor.handle().send(id, getty_transports::Close).unwrap();
/// ```
pub struct TcpClient<F, C, H> {
    inner: StreamClient<TcpStream, Tcp, F, C, H>,
}

impl TcpClient<(), (), ()> {
    /// A builder with default settings: one connection, redials after 100 ms doubling to
    /// 5 s for ever, a 3 s connect timeout, no TLS.
    ///
    /// See [`TcpClientBuilder`] and [`ClientBuilder`] for examples.
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
    /// The first address this client dials (of a host name: the first as resolved when
    /// the client was built).
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
        *self.inner.peer_addr()
    }
}

/// What a [`TcpClient`] (and a [`WsClient`], which is one) accepts:
/// [`Close`](crate::Close). The name to write where a client's address is kept:
///
/// ```
/// use getty_reactor::{Reactor, Recipient};
/// use getty_transports::tcp::TcpClientCommand;
///
/// /// Closes a client later, from any thread.
/// fn close_later(reactor: &Reactor, client: Recipient<TcpClientCommand>) {
///     reactor.handle().send(client, getty_transports::Close).unwrap();
/// }
/// # let _ = close_later;
/// ```
#[cfg_attr(feature = "ws", doc = "[`WsClient`]: crate::ws::WsClient")]
#[cfg_attr(not(feature = "ws"), doc = "[`WsClient`]: crate#features")]
pub type TcpClientCommand = crate::ClientCommand<TcpStream, SocketAddr>;

entry_by_inner!(impl<F, C, H> for TcpClient<F, C, H>, command = TcpClientCommand, where
    F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C>,
);
