//! The callbacks a datagram session's handler implements.

use super::*;

/// The callbacks of a datagram socket, parallel to [`Handler`](crate::Handler).
///
/// The contract:
/// - `on_open` first; an error rejects the socket (no other callback follows).
/// - then any number of `on_message` (one per datagram that decoded to exactly one
///   message, in arrival order, with the sender's address), `on_cron` and
///   `on_writability_changed`.
/// - `on_error` reports a problem. Unlike TCP, most problems do **not** end a datagram
///   session: a datagram that is oversized, malformed or garbage is dropped, counted in
///   [`DatagramStats`] and reported here ([`Error::is_bad_input`] is true); an ICMP error
///   on a connected socket (the peer's port is closed, its host unreachable) is reported
///   as [`Error::Io`] and counted; a datagram the kernel refused twice is dropped and
///   reported. When the error does end the session, [`DatagramSession::is_closing`] is
///   already true and `on_close` follows.
/// - `on_close` exactly once for every opened session, after its last `on_message`,
///   whatever ended it: `close()`, `abort()`, a fatal socket error, a timeout, reactor
///   shutdown.
///
/// Callbacks run on the reactor thread: keep them short.
///
/// An unconnected endpoint serves many peers through one session. State per peer, if the
/// application needs any, is the handler's: for example a map from address to state,
/// pruned on the cron tick.
///
/// ```
/// use std::collections::HashMap;
/// use std::net::SocketAddr;
/// use std::time::{Duration, Instant};
/// use bytes::Bytes;
/// use getty_codec::RawCodec;
/// use getty_transports::udp::{DatagramHandler, DatagramSession};
///
/// /// Echoes, and remembers when each peer was last heard from.
/// #[derive(Default)]
/// struct Echo {
///     peers: HashMap<SocketAddr, Instant>,
/// }
///
/// impl DatagramHandler<RawCodec> for Echo {
///     fn on_open(&mut self, session: &mut DatagramSession<RawCodec>) -> std::io::Result<()> {
///         session.set_cron_period(Some(Duration::from_secs(10)));
///         Ok(())
///     }
///     fn on_message(&mut self, session: &mut DatagramSession<RawCodec>, msg: Bytes, peer: SocketAddr) {
///         self.peers.insert(peer, Instant::now());
///         let _ = session.write_to(peer, msg);
///     }
///     fn on_cron(&mut self, _: &mut DatagramSession<RawCodec>) {
///         self.peers.retain(|_, seen| seen.elapsed() < Duration::from_secs(60));
///     }
/// }
/// ```
pub trait DatagramHandler<C: Decoder, A = SocketAddr>: 'static {
    /// The socket is ready. An error rejects it.
    ///
    /// See the [trait-level example](DatagramHandler).
    fn on_open(&mut self, session: &mut DatagramSession<C, A>) -> io::Result<()> {
        let _ = session;
        Ok(())
    }

    /// One datagram, decoded to one message, and who sent it (on a connected socket: the
    /// peer it is connected to).
    ///
    /// See the [trait-level example](DatagramHandler).
    fn on_message(&mut self, session: &mut DatagramSession<C, A>, message: C::Item, peer: A);

    /// The session's cron period elapsed (see [`SessionOptions::cron_period`]).
    ///
    /// See the [trait-level example](DatagramHandler).
    fn on_cron(&mut self, session: &mut DatagramSession<C, A>) {
        let _ = session;
    }

    /// The outbound queue crossed a watermark: `false` above the high one, `true` once it
    /// drained to the low one. Stop producing while it is `false`.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use bytes::Bytes;
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::udp::{DatagramHandler, DatagramSession};
    /// struct Producer { paused: bool }
    /// impl DatagramHandler<RawCodec> for Producer {
    ///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: Bytes, _: SocketAddr) {}
    ///     fn on_writability_changed(&mut self, _: &mut DatagramSession<RawCodec>, writable: bool) {
    ///         self.paused = !writable;
    ///     }
    /// }
    /// ```
    fn on_writability_changed(&mut self, session: &mut DatagramSession<C, A>, writable: bool) {
        let _ = (session, writable);
    }

    /// A dropped datagram, an ICMP error, or (when `session.is_closing()`) the reason the
    /// session ends. See the trait's contract.
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use bytes::Bytes;
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::{Error, udp::{DatagramHandler, DatagramSession}};
    /// struct Quiet;
    /// impl DatagramHandler<RawCodec> for Quiet {
    ///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: Bytes, _: SocketAddr) {}
    ///     fn on_error(&mut self, session: &mut DatagramSession<RawCodec>, error: &Error) {
    ///         if error.is_bad_input() {
    ///             return; // one bad datagram, already dropped and counted
    ///         }
    ///         eprintln!("session {}: {error}", session.id());
    ///     }
    /// }
    /// ```
    fn on_error(&mut self, session: &mut DatagramSession<C, A>, error: &Error) {
        let _ = (session, error);
    }

    /// The session has ended. Called exactly once.
    ///
    /// See the [`on_error` example](DatagramHandler::on_error).
    fn on_close(&mut self, session: &mut DatagramSession<C, A>) {
        let _ = session;
    }
}
