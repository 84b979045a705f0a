//! The transports a stream session can run over, as types: a session, its handler and its
//! handles name theirs (`Session<C, Ws>`), so what only one transport can do (a WebSocket's
//! ping) exists on that transport's sessions alone, checked at compile time.

use std::net::SocketAddr;

use crate::framing::{CodecFraming, Framing};
use crate::Address;

pub(crate) mod sealed {
    /// Only this crate's transports are transports.
    pub trait Sealed {}
}

/// A transport of stream sessions: [`Tcp`] (the default), [`Unix`] or [`Ws`]. It says how a session's peer is addressed and how its bytes are
/// framed into messages.
///
/// A handler written for any transport names it as a type parameter:
///
/// ```
/// use getty_codec::{Bytes, LinesCodec};
/// use getty_transports::{Handler, Session, Transport};
///
/// /// Echoes lines, over TCP or a unix socket alike.
/// struct Echo;
/// impl<T: Transport> Handler<LinesCodec, T> for Echo {
///     fn on_message(&mut self, s: &mut Session<LinesCodec, T>, line: Bytes) {
///         let _ = s.write(line);
///     }
/// }
/// ```
#[cfg_attr(feature = "ws", doc = "[`Ws`]: crate::ws::Ws")]
#[cfg_attr(not(feature = "ws"), doc = "[`Ws`]: crate#features")]
pub trait Transport: sealed::Sealed + Sized + 'static {
    /// The address of either end: `SocketAddr`, or [`UnixAddr`](crate::UnixAddr).
    type Addr: Address;
    /// How the session's bytes become messages (the codec's framing, or WebSocket frames).
    #[doc(hidden)]
    type Framing: Framing;
}

/// TCP (with or without TLS): the codec frames the byte stream; peers are `SocketAddr`s.
/// The default transport of [`Session`](crate::Session) and [`Handler`](crate::Handler).
///
/// ```
/// use getty_transports::{Session, Tcp};
/// fn same(s: &Session<getty_codec::RawCodec>) -> &Session<getty_codec::RawCodec, Tcp> { s }
/// ```
#[derive(Debug)]
pub enum Tcp {}

impl sealed::Sealed for Tcp {}

impl Transport for Tcp {
    type Addr = SocketAddr;
    type Framing = CodecFraming;
}

/// Unix stream sockets: the codec frames the byte stream; peers are
/// [`UnixAddr`](crate::UnixAddr)s.
///
/// ```
/// use getty_codec::{Bytes, RawCodec};
/// use getty_transports::{Handler, Session, Unix};
///
/// struct Log;
/// impl Handler<RawCodec, Unix> for Log {
///     fn on_message(&mut self, s: &mut Session<RawCodec, Unix>, bytes: Bytes) {
///         println!("{} bytes from {}", bytes.len(), s.peer_addr());
///     }
/// }
/// ```
#[derive(Debug)]
pub enum Unix {}

impl sealed::Sealed for Unix {}

impl Transport for Unix {
    type Addr = crate::UnixAddr;
    type Framing = CodecFraming;
}
