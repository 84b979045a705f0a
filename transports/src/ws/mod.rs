//! WebSocket on the reactor (RFC 6455, with permessage-deflate from RFC 7692).
//!
//! A WebSocket session is a stream session whose bytes are frames: the same `Handler`,
//! `Session` and codec contract as TCP, one `on_message` per WebSocket message (its payload
//! decoded by the session's codec with `Decoder::decode_message`), one message per
//! `Session::write`. The protocol machine is `getty_codec::ws` (sans-IO); here it is driven by
//! the reactor: the upgrade (a server's or a client's) runs in an `Upgrade` entry under the
//! handshake timeout, then the connection becomes a session.

mod client;
mod server;
mod state;
pub(crate) mod upgrade;

pub(crate) use client::WsDial;
pub use client::{WsClient, WsClientBuilder, WsClientKind};
pub use server::{WsServer, WsServerBuilder, WsServerKind, WsSetup};
pub(crate) use state::{Keepalive, WsState};

/// The protocol machine's limits from the session's options: a message (after reassembly
/// and decompression) and a frame may each be as long as the session's max message length.
pub(crate) fn protocol_config(options: &crate::SessionOptions) -> getty_codec::ws::Config {
    getty_codec::ws::Config {
        max_message_size: options.get_max_message_len(),
        max_frame_size: options.get_max_message_len(),
    }
}
