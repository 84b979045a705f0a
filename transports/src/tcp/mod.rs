//! TCP: [`TcpServer`] accepts, [`TcpClient`] dials and redials; both run the same session
//! state machine and call a setup hook ([`Setup`]) for every new connection.

use std::net::SocketAddr;
use std::sync::Arc;

use getty_codec::filter::{Filter, FilterError, Layered, TlsFilter};
use getty_codec::rustls;
use socket2::SockRef;

use crate::SessionOptions;

mod client;
mod pool;
mod server;

pub use client::{TcpClient, TcpClientBuilder};
pub use pool::TcpServerPool;
pub use crate::listener::CloseSessions;
pub use server::{adopt, ServerHandle, TcpServer, TcpServerBuilder};

/// What the setup hook (getty's `NewSessionCallback`) gets for a new connection: its peer,
/// its socket (for options this crate does not wrap) and the session's options to adjust.
/// The hook returns the session's codec and handler, or an error to refuse it.
///
/// ```
/// use std::time::Duration;
/// use getty_codec::LinesCodec;
/// use getty_transports::{tcp::{Setup, TcpServer}, Handler, Session};
///
/// struct Chat;
/// impl Handler<LinesCodec> for Chat {
///     fn on_message(&mut self, _: &mut Session<LinesCodec>, _: bytes::Bytes) {}
/// }
///
/// let server = TcpServer::bind("127.0.0.1:0", |setup: &mut Setup<'_>| {
///     if setup.peer_addr().ip().is_unspecified() {
///         return Err(std::io::Error::other("no thanks"));
///     }
///     setup.socket().set_tcp_nodelay(true)?;
///     let options = setup.options();
///     *options = options.clone().read_idle_timeout(Some(Duration::from_secs(60)));
///     Ok((LinesCodec::default(), Chat))
/// });
/// ```
pub struct Setup<'a> {
    pub(crate) peer: SocketAddr,
    pub(crate) socket: SockRef<'a>,
    /// Shared with the server's other sessions until the hook asks to change it.
    pub(crate) options: &'a mut Arc<SessionOptions>,
    /// Filters the hook added, bottom (nearest the wire) first.
    pub(crate) filters: Vec<Box<dyn Filter>>,
}

impl<'a> Setup<'a> {
    /// The peer's address.
    ///
    /// See the [type-level example](Setup).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The connected socket, for `setsockopt`.
    ///
    /// See the [type-level example](Setup).
    pub fn socket(&self) -> &SockRef<'a> {
        &self.socket
    }

    /// The new session's options, to change.
    ///
    /// See the [type-level example](Setup).
    pub fn options(&mut self) -> &mut SessionOptions {
        Arc::make_mut(self.options)
    }

    /// Adds a filter to the new session's stack, above the ones the transport installs
    /// (TLS, then the compression of [`SessionOptions::compression`]) and below the codec.
    ///
    /// ```
    /// use getty_codec::{filter::DeflateFilter, Compression, RawCodec};
    /// use getty_transports::{tcp::TcpServer, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<RawCodec> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {} }
    /// let server = TcpServer::bind("127.0.0.1:0", |setup| {
    ///     setup.add_filter(DeflateFilter::new(Compression::HuffmanOnly));
    ///     Ok((RawCodec, Sink))
    /// });
    /// ```
    pub fn add_filter(&mut self, filter: impl Filter) {
        self.filters.push(Box::new(filter));
    }
}

/// Makes the filter a transport puts nearest the wire (TLS) for each new session.
#[derive(Clone)]
pub(crate) struct FilterFactory(Arc<MakeFilter>);

type MakeFilter = dyn Fn() -> Result<Box<dyn Filter>, FilterError> + Send + Sync;

impl FilterFactory {
    pub(crate) fn tls_server(config: Arc<rustls::ServerConfig>) -> Self {
        FilterFactory(Arc::new(move || {
            Ok(Box::new(TlsFilter::server(Arc::clone(&config))?))
        }))
    }

    pub(crate) fn tls_client(config: Arc<rustls::ClientConfig>, server_name: String) -> Self {
        FilterFactory(Arc::new(move || {
            Ok(Box::new(TlsFilter::client(
                Arc::clone(&config),
                &server_name,
            )?))
        }))
    }

    pub(crate) fn make(&self) -> Result<Box<dyn Filter>, FilterError> {
        (self.0)()
    }
}

impl std::fmt::Debug for FilterFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FilterFactory")
    }
}

/// Stacks `filters` (bottom first) into one, or `None` when there are none.
pub(crate) fn stack(filters: impl IntoIterator<Item = Box<dyn Filter>>) -> Option<Box<dyn Filter>> {
    filters
        .into_iter()
        .reduce(|lower, upper| Box::new(Layered::new(lower, upper)))
}
