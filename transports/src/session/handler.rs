//! The callbacks a stream session's handler implements.

use super::*;

/// The callbacks of a session, as getty's `EventListener`.
///
/// The contract, on every transport:
/// - `on_open` first; returning an error rejects the session and closes its socket at once
///   (no other callback follows).
/// - then any number of `on_message` (one per decoded message, in order) and `on_cron`.
/// - `on_error` only when the session ends abnormally (never for a clean EOF or a local
///   close), then `on_close`.
/// - `on_close` exactly once for every opened session, after its last `on_message`,
///   whatever ended it: EOF, error, `close()`, `abort()` or reactor shutdown.
///
/// Callbacks run on the reactor thread: keep them short.
///
/// `T` is the session's [`Transport`]: [`Tcp`] (the default, also with TLS), [`Unix`](crate::Unix)
/// or [`Ws`](crate::ws::Ws). A WebSocket handler implements `Handler<C, Ws>` and gets a
/// `Session<C, Ws>`, which can also ping and close with a code; a handler for any transport
/// is generic over `T: Transport`.
///
/// ```
/// use bytes::Bytes;
/// use getty_codec::LengthFieldCodec;
/// use getty_transports::{Handler, Session};
///
/// struct Echo;
/// impl Handler<LengthFieldCodec> for Echo {
///     fn on_message(&mut self, session: &mut Session<LengthFieldCodec>, msg: Bytes) {
///         let _ = session.write(msg);
///     }
/// }
/// ```
#[cfg_attr(not(feature = "ws"), allow(rustdoc::broken_intra_doc_links))]
pub trait Handler<C: getty_codec::Decoder, T: Transport = Tcp>: 'static {
    /// The session is connected and configured. An error rejects it.
    fn on_open(&mut self, session: &mut Session<C, T>) -> io::Result<()> {
        let _ = session;
        Ok(())
    }

    /// One decoded message.
    fn on_message(&mut self, session: &mut Session<C, T>, message: C::Item);

    /// The session's cron period elapsed (see [`SessionOptions::cron_period`]).
    fn on_cron(&mut self, session: &mut Session<C, T>) {
        let _ = session;
    }

    /// The outbound queue crossed a watermark: `false` above the high one, `true` once it
    /// drained to the low one. Stop producing while it is `false`.
    fn on_writability_changed(&mut self, session: &mut Session<C, T>, writable: bool) {
        let _ = (session, writable);
    }

    /// The session is ending abnormally; `on_close` follows.
    fn on_error(&mut self, session: &mut Session<C, T>, error: &Error) {
        let _ = (session, error);
    }

    /// The session has ended. Called exactly once.
    fn on_close(&mut self, session: &mut Session<C, T>) {
        let _ = session;
    }
}
