//! WebSocket on the reactor (RFC 6455, with permessage-deflate from RFC 7692).
//!
//! A WebSocket session is a stream session whose bytes are frames: the same `Handler`,
//! `Session` and codec contract as TCP, one `on_message` per WebSocket message (its payload
//! decoded by the session's codec with `Decoder::decode_message`), one message per
//! `Session::write`. The protocol machine is `getty_codec::ws` (sans-IO); here it is driven by
//! the reactor: the upgrade runs in its own entry under the handshake timeout, then the
//! connection becomes a session.

mod state;
mod upgrade;

pub(crate) use state::WsState;
