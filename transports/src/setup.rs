//! What servers and clients share when they turn a connected socket into a session: the
//! setup hook's view of the connection ([`Setup`]), the filter stack (TLS nearest the wire,
//! then compression, then filters the hook added) and `prepare`, which applies it all.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

#[cfg(feature = "deflate")]
use getty_codec::filter::DeflateFilter;
#[cfg(feature = "tls")]
use getty_codec::filter::TlsFilter;
use getty_codec::filter::{Filter, FilterError, Layered};
#[cfg(feature = "tls")]
use getty_codec::rustls;
use getty_codec::Decoder;
use getty_reactor::Recipient;

use crate::commands::OwnerNote;
use socket2::SockRef;

use crate::filtered::FilterIo;
use crate::framing::CodecFraming;
use crate::session::{Handler, Session};
use crate::stream::{Stream, StreamEntry};
use crate::{Address, SessionOptions, SocketOptions, Transport};

/// What the setup hook (getty's `NewSessionCallback`) gets for a new connection: its peer,
/// its socket (for options this crate does not wrap) and the session's options to adjust.
/// The hook returns the session's codec and handler, or an error to refuse it. The same
/// hook serves TCP servers and clients (`Setup<'_>`, a `SocketAddr` peer) and unix-socket
/// ones (`Setup<'_, UnixAddr>`).
///
/// ```
/// use std::time::Duration;
/// use getty_codec::LinesCodec;
/// use getty_transports::{tcp::TcpServer, Handler, Session, Setup};
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
pub struct Setup<'a, A: Address = SocketAddr> {
    pub(crate) peer: A,
    pub(crate) socket: SockRef<'a>,
    /// Shared with the server's other sessions until the hook asks to change it.
    pub(crate) options: &'a mut Arc<SessionOptions>,
    /// Filters the hook added, bottom (nearest the wire) first.
    pub(crate) filters: Vec<Box<dyn Filter>>,
}

impl<'a, A: Address> Setup<'a, A> {
    /// The peer's address.
    ///
    /// See the [type-level example](Setup).
    pub fn peer_addr(&self) -> A {
        self.peer.clone()
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
    /// (TLS, then the compression of `SessionOptions::compression`) and below the codec.
    ///
    /// ```
    /// # #[cfg(feature = "deflate")] {
    /// use getty_codec::{filter::DeflateFilter, Compression, RawCodec};
    /// use getty_transports::{tcp::TcpServer, Handler, Session};
    /// # struct Sink;
    /// # impl Handler<RawCodec> for Sink { fn on_message(&mut self, _: &mut Session<RawCodec>, _: bytes::Bytes) {} }
    /// let server = TcpServer::bind("127.0.0.1:0", |setup| {
    ///     setup.add_filter(DeflateFilter::new(Compression::HuffmanOnly));
    ///     Ok((RawCodec, Sink))
    /// });
    /// # }
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
    #[cfg(feature = "tls")]
    pub(crate) fn tls_server(config: Arc<rustls::ServerConfig>) -> Self {
        FilterFactory(Arc::new(move || {
            Ok(Box::new(TlsFilter::server(Arc::clone(&config))?))
        }))
    }

    #[cfg(feature = "tls")]
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

/// How a server or client makes its sessions: the settings `prepare` applies to each new
/// connection.
pub(crate) struct Plan<'a> {
    pub(crate) socket_options: &'a SocketOptions,
    pub(crate) session_options: &'a Arc<SessionOptions>,
    /// The filter nearest the wire (TLS), if any.
    pub(crate) transport_filter: Option<&'a FilterFactory>,
    /// A WebSocket client's sessions: messages are compressed (permessage-deflate), never
    /// the byte stream. Read only to decide that, so only where both can be on.
    #[cfg(all(feature = "ws", feature = "deflate"))]
    pub(crate) websocket: bool,
}

/// A connection the setup hook accepted, not yet a session (a WebSocket client's upgrades
/// first: its session, and the framing it carries, is made once the `101` is in).
pub(crate) struct Prepared<S: Stream, C, H> {
    pub(crate) stream: S,
    pub(crate) parts: SessionParts<S::Addr, C, H>,
}

/// What a new session is made of, apart from its socket and its framing.
pub(crate) struct SessionParts<A, C, H> {
    pub(crate) peer: A,
    pub(crate) codec: C,
    pub(crate) handler: H,
    pub(crate) options: Arc<SessionOptions>,
    /// The filter stack (TLS, compression) with its buffers, if any.
    pub(crate) filter: Option<Box<FilterIo>>,
}

impl<A: Address, C, H> SessionParts<A, C, H> {
    /// The session entry over `stream`, framed by `framing`, owned by `owner` (a client) if
    /// any.
    pub(crate) fn into_entry<S, T>(
        self,
        stream: S,
        framing: T::Framing,
        now: Instant,
        owner: Option<Recipient<OwnerNote>>,
    ) -> StreamEntry<S, T, C, H>
    where
        S: Stream<Addr = A>,
        T: Transport<Addr = A>,
        C: Decoder + 'static,
        H: Handler<C, T>,
    {
        #[cfg(unix)]
        let mut session = Session::new(
            self.peer,
            stream.raw_fd(),
            self.codec,
            self.options,
            now,
            framing,
        );
        #[cfg(not(unix))]
        let mut session = Session::new(self.peer, self.codec, self.options, now, framing);
        if self.filter.is_some() {
            session.extras_mut().filter = self.filter;
        }
        StreamEntry::new(stream, session, self.handler, owner)
    }
}

impl<S: Stream, C, H> Prepared<S, C, H> {
    /// The session entry, with the codec's own framing.
    pub(crate) fn into_plain_entry(
        self,
        now: Instant,
        owner: Option<Recipient<OwnerNote>>,
    ) -> StreamEntry<S, S::Plain, C, H>
    where
        C: Decoder + 'static,
        H: Handler<C, S::Plain>,
    {
        self.parts.into_entry(self.stream, CodecFraming, now, owner)
    }
}

/// Applies socket options, runs the setup hook and builds the session's filter stack, then
/// makes the session's entry; `None` when any of them refused the socket.
pub(crate) fn prepare<S, F, C, H>(
    stream: S,
    peer: S::Addr,
    plan: &Plan<'_>,
    setup: &mut F,
    now: Instant,
    owner: Option<Recipient<OwnerNote>>,
) -> Option<StreamEntry<S, S::Plain, C, H>>
where
    S: Stream,
    F: FnMut(&mut Setup<'_, S::Addr>) -> io::Result<(C, H)>,
    C: Decoder + 'static,
    H: Handler<C, S::Plain>,
{
    Some(prepare_session(stream, peer, plan, setup)?.into_plain_entry(now, owner))
}

/// Applies socket options, runs the setup hook and builds the session's filter stack;
/// `None` when any of them refused the socket.
pub(crate) fn prepare_session<S, F, C, H>(
    stream: S,
    peer: S::Addr,
    plan: &Plan<'_>,
    setup: &mut F,
) -> Option<Prepared<S, C, H>>
where
    S: Stream,
    F: FnMut(&mut Setup<'_, S::Addr>) -> io::Result<(C, H)>,
{
    if let Err(e) = stream.configure(plan.socket_options) {
        log::debug!("socket options for {peer}: {e}");
        return None;
    }
    let mut options = Arc::clone(plan.session_options);
    let mut hook = Setup {
        peer: peer.clone(),
        socket: stream.socket(),
        options: &mut options,
        filters: Vec::new(),
    };
    let made = setup(&mut hook);
    let added = std::mem::take(&mut hook.filters);
    let (codec, handler) = match made {
        Ok(pair) => pair,
        Err(e) => {
            log::debug!("setup refused {peer}: {e}");
            return None;
        }
    };
    let transport = match plan.transport_filter.map(FilterFactory::make).transpose() {
        Ok(filter) => filter,
        Err(e) => {
            log::warn!("cannot start a session with {peer}: {e}");
            return None;
        }
    };
    let deflate = stream_compression(&options, plan);
    let filter = stack(transport.into_iter().chain(deflate).chain(added))
        .map(|filter| Box::new(FilterIo::new(filter)));
    Some(Prepared {
        stream,
        parts: SessionParts {
            peer,
            codec,
            handler,
            options,
            filter,
        },
    })
}

/// The deflate filter of a session whose options ask for a compressed byte stream.
#[cfg(feature = "deflate")]
fn stream_compression(options: &SessionOptions, plan: &Plan<'_>) -> Option<Box<dyn Filter>> {
    let level = options
        .get_compression()
        .filter(|_| plan.may_compress_stream())?;
    Some(Box::new(DeflateFilter::new(level)))
}

#[cfg(feature = "deflate")]
impl Plan<'_> {
    /// A WebSocket compresses messages (permessage-deflate), never its byte stream.
    #[cfg(feature = "ws")]
    fn may_compress_stream(&self) -> bool {
        !self.websocket
    }

    /// Without the `ws` feature every session is a byte stream.
    #[cfg(not(feature = "ws"))]
    fn may_compress_stream(&self) -> bool {
        true
    }
}

/// Without the `deflate` feature no session compresses its byte stream.
#[cfg(not(feature = "deflate"))]
fn stream_compression(_: &SessionOptions, _: &Plan<'_>) -> Option<Box<dyn Filter>> {
    None
}
