//! What only a WebSocket session can do: ping, close with a code of the app's choosing, and
//! tell what its handshake agreed. These exist on `Session<C, Ws>` alone, so asking a TCP
//! session for them does not compile.

use std::time::Instant;

use getty_codec::ws::{close_code, DeflateConfig, WsError};

use crate::ws::Ws;
use crate::{Error, Session};

impl<C> Session<C, Ws> {
    /// Sends a ping (at most 125 bytes of payload). With a pong timeout set
    /// ([`WsServerBuilder::pong_timeout`](crate::ws::WsServerBuilder::pong_timeout)), a ping
    /// that gets no pong in time ends the session with `Error::PongTimeout`; a handler that
    /// pings from `on_cron` gets a keep-alive that notices dead peers.
    ///
    /// ```
    /// getty_transports::with_ws_session(|s| {
    ///     s.ping(b"are you there").unwrap();
    ///     assert!(s.queued_bytes() > 0); // the ping frame
    ///     assert!(s.ping(&[0u8; 126]).is_err()); // a control frame holds 125 bytes at most
    /// });
    /// ```
    ///
    /// A TCP session has no ping:
    ///
    /// ```compile_fail
    /// getty_transports::with_session(|s| {
    ///     let _ = s.ping(b"t");
    /// });
    /// ```
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.check_open()?;
        self.framing
            .state_mut()
            .ping(payload, Instant::now(), &mut self.out.tail)
            .map_err(Error::WebSocket)
    }

    /// Closes the session with a close code and reason of the app's choosing (`close()`
    /// sends 1000): a code the RFC lets an endpoint send, and a reason of at most 123 bytes.
    ///
    /// ```
    /// getty_transports::with_ws_session(|s| {
    ///     assert!(s.close_with(1005, "reserved").is_err()); // never sent on the wire
    ///     s.close_with(4000, "shift over").unwrap();
    ///     assert!(s.is_closing());
    /// });
    /// ```
    pub fn close_with(&mut self, code: u16, reason: &str) -> Result<(), Error> {
        if !close_code::is_valid(code) || reason.len() > 123 {
            return Err(Error::WebSocket(WsError::new(
                close_code::PROTOCOL_ERROR,
                format!(
                    "close code {code} or a reason of {} bytes may not be sent",
                    reason.len()
                ),
            )));
        }
        self.framing.state_mut().close_with = Some((code, reason.to_string()));
        self.close();
        Ok(())
    }

    /// The subprotocol the handshake agreed on, if any.
    ///
    /// ```
    /// getty_transports::with_ws_session(|s| assert_eq!(s.protocol(), None));
    /// ```
    pub fn protocol(&self) -> Option<&str> {
        self.framing.state().subprotocol.as_deref()
    }

    /// The permessage-deflate settings the handshake agreed, if compression was negotiated.
    ///
    /// ```
    /// getty_transports::with_ws_session(|s| assert!(s.deflate().is_none()));
    /// ```
    pub fn deflate(&self) -> Option<&DeflateConfig> {
        self.framing.state().protocol.deflate()
    }

    /// The path: the request's on a server, the URL's on a client.
    ///
    /// ```
    /// getty_transports::with_ws_session(|s| assert_eq!(s.path(), "/"));
    /// ```
    pub fn path(&self) -> &str {
        &self.framing.state().path
    }
}
