//! What each kind of entry accepts: the typed commands of sessions, servers and clients,
//! and the notes a session sends the client that owns it.
//!
//! Users send the unit commands [`Close`], [`Abort`] and
//! [`CloseSessions`](crate::tcp::CloseSessions); each entry's command type converts from
//! the ones that mean something to it, so a command an entry cannot take does not compile.
//! The command types themselves are opaque: what else they carry is the framework's.

use crate::handle::SessionJob;
use crate::listener::AskSessionCount;
use crate::stream::SessionEnded;
use crate::tcp::CloseSessions;
use crate::{Abort, Close};

/// What a session accepts (and an unconnected datagram endpoint, which is one): [`Close`],
/// [`Abort`], and the work of its [`SessionHandle`](crate::SessionHandle)s.
///
/// ```
/// use std::net::SocketAddr;
/// use getty_codec::RawCodec;
/// use getty_transports::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
/// use getty_transports::{Abort, Close};
///
/// struct Sink;
/// impl DatagramHandler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {}
/// }
///
/// let mut reactor = getty_reactor::Reactor::new().unwrap();
/// let endpoint = UdpEndpoint::bind("127.0.0.1:0", |_| Ok((RawCodec, Sink))).unwrap();
/// let endpoint = reactor.spawn(endpoint); // a Recipient<SessionCommand>
/// reactor.handle().send(endpoint, Close).unwrap(); // or Abort
/// # let _ = Abort;
/// ```
pub struct SessionCommand(pub(crate) SessionOp);

/// The commands inside a [`SessionCommand`].
pub(crate) enum SessionOp {
    Close,
    Abort,
    Job(SessionJob),
}

impl From<Close> for SessionCommand {
    fn from(_: Close) -> Self {
        SessionCommand(SessionOp::Close)
    }
}

impl From<Abort> for SessionCommand {
    fn from(_: Abort) -> Self {
        SessionCommand(SessionOp::Abort)
    }
}

impl From<SessionJob> for SessionCommand {
    fn from(job: SessionJob) -> Self {
        SessionCommand(SessionOp::Job(job))
    }
}

/// What a stream server accepts: [`Close`] (stop listening; the sessions carry on) and
/// [`CloseSessions`] (close every session it accepted). A server cannot be aborted:
///
/// ```compile_fail
/// use getty_codec::RawCodec;
/// use getty_transports::tcp::TcpServer;
/// use getty_transports::{Abort, Handler};
/// struct Echo;
/// impl Handler<RawCodec> for Echo {
///     fn on_message(&mut self, _: &mut getty_transports::Session<RawCodec>, _: bytes::Bytes) {}
/// }
/// let mut reactor = getty_reactor::Reactor::new().unwrap();
/// let server = TcpServer::bind("127.0.0.1:0", |_| Ok((RawCodec, Echo))).unwrap();
/// let server = reactor.spawn(server);
/// reactor.handle().send(server, Abort).unwrap(); // a server takes Close, not Abort
/// ```
///
/// ```
/// use getty_codec::RawCodec;
/// use getty_transports::tcp::{CloseSessions, TcpServer};
/// use getty_transports::{Close, Handler};
/// struct Echo;
/// impl Handler<RawCodec> for Echo {
///     fn on_message(&mut self, _: &mut getty_transports::Session<RawCodec>, _: bytes::Bytes) {}
/// }
/// let mut reactor = getty_reactor::Reactor::new().unwrap();
/// let server = TcpServer::bind("127.0.0.1:0", |_| Ok((RawCodec, Echo))).unwrap();
/// let server = reactor.spawn(server);
/// reactor.handle().send(server, CloseSessions).unwrap();
/// reactor.handle().send(server, Close).unwrap();
/// ```
pub struct ServerCommand(pub(crate) ServerOp);

/// The commands inside a [`ServerCommand`].
pub(crate) enum ServerOp {
    Close,
    CloseSessions,
    AskSessionCount(AskSessionCount),
}

impl From<Close> for ServerCommand {
    fn from(_: Close) -> Self {
        ServerCommand(ServerOp::Close)
    }
}

impl From<CloseSessions> for ServerCommand {
    fn from(_: CloseSessions) -> Self {
        ServerCommand(ServerOp::CloseSessions)
    }
}

impl From<AskSessionCount> for ServerCommand {
    fn from(ask: AskSessionCount) -> Self {
        ServerCommand(ServerOp::AskSessionCount(ask))
    }
}

/// What a session tells the client that owns it, and the one command it may send it
/// ([`Session::close_client`](crate::Session::close_client)): a client's command type
/// converts from it, so its sessions need not know that type.
pub(crate) enum OwnerNote {
    /// Close the whole client.
    Close,
    /// `on_open` accepted the session (past its handshake, if any): the session's id.
    Opened(getty_reactor::EntryId),
    /// The session ended.
    Ended(SessionEnded),
}
