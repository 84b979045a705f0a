//! What a WebSocket session keeps beyond a stream session: the protocol machine, the
//! outstanding ping, the close code the app asked for.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use getty_codec::ws::{Protocol, WsError};

use crate::ws::run::Run;

pub(crate) struct WsState {
    pub(crate) protocol: Protocol,
    pub(crate) keepalive: Keepalive,
    /// When the oldest unanswered ping was sent.
    pub(crate) ping_sent: Option<Instant>,
    /// The close code and reason `close()` sends (1000 and no reason unless the app chose).
    pub(crate) close_with: Option<(u16, String)>,
    /// The subprotocol agreed in the handshake.
    pub(crate) subprotocol: Option<String>,
    /// The request path (server side) or the dialed path (client side).
    pub(crate) path: String,
    /// Small messages read together, copied out of the read buffer at once, that wait
    /// for the handler.
    pub(crate) run: Run,
}

impl WsState {
    pub(crate) fn new(protocol: Protocol, keepalive: Keepalive, path: String) -> Self {
        WsState {
            protocol,
            keepalive,
            ping_sent: None,
            close_with: None,
            subprotocol: None,
            path,
            run: Run::new(),
        }
    }

    /// Queues a ping; the pong clock starts at `now` unless a ping is outstanding already.
    pub(crate) fn ping(
        &mut self,
        payload: &[u8],
        now: Instant,
        out: &mut BytesMut,
    ) -> Result<(), WsError> {
        self.protocol.ping(payload, out)?;
        self.ping_sent.get_or_insert(now);
        Ok(())
    }

    /// When the outstanding ping times out.
    pub(crate) fn pong_deadline(&self) -> Option<Instant> {
        Some(self.ping_sent? + self.keepalive.pong_timeout?)
    }
}

/// The keep-alive settings of a WebSocket session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Keepalive {
    /// Send a ping on every cron tick, before `on_cron`.
    pub(crate) ping_on_cron: bool,
    /// How long a ping may wait for its pong (`None`: forever).
    pub(crate) pong_timeout: Option<Duration>,
}
