//! WebSocket on the reactor (RFC 6455, with permessage-deflate from RFC 7692).
//!
//! A WebSocket session is a stream session whose bytes are frames: the same `Handler`,
//! `Session` and codec contract as TCP, one `on_message` per WebSocket message (its payload
//! decoded by the session's codec with `Decoder::decode_message`), one message per
//! `Session::write`. The protocol machine is `getty_codec::ws` (sans-IO); here it is driven by
//! the reactor: the upgrade (a server's or a client's) runs in an `Upgrade` entry under the
//! handshake timeout, then the connection becomes a session.

mod client;
mod framing;
mod routes;
mod run;
mod server;
mod session;
mod state;
pub(crate) mod upgrade;

pub(crate) use client::WsDial;
pub use client::{WsClient, WsClientBuilder, WsClientKind};
pub use framing::WsFraming;
pub use server::{WsServer, WsServerBuilder, WsServerKind, WsSetup};
pub(crate) use state::{Keepalive, WsState};

/// The WebSocket transport: a session's messages are WebSocket messages, its peer a
/// `SocketAddr`. Its sessions (`Session<C, Ws>`) can also ping, close with a code, and tell
/// what the handshake agreed (subprotocol, permessage-deflate, path).
///
/// ```
/// use getty_codec::{Message, MessageCodec};
/// use getty_transports::ws::{Ws, WsServer};
/// use getty_transports::{Handler, Session};
///
/// struct Chat;
/// impl Handler<MessageCodec, Ws> for Chat {
///     fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
///         println!("{} joined on {:?}", s.peer_addr(), s.protocol());
///         Ok(())
///     }
///     fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, m: Message) {
///         if m.as_text() == Some("bye") {
///             let _ = s.close_with(4000, "see you");
///         }
///     }
/// }
/// let server = WsServer::builder().route("/chat", |_| Ok((MessageCodec, Chat))).bind("127.0.0.1:0");
/// ```
#[derive(Debug)]
pub enum Ws {}

impl crate::transport::sealed::Sealed for Ws {}

impl crate::Transport for Ws {
    type Addr = std::net::SocketAddr;
    type Framing = WsFraming;
}

/// The protocol machine's limits from the session's options: a message (after reassembly
/// and decompression) and a frame may each be as long as the session's max message length.
pub(crate) fn protocol_config(options: &crate::SessionOptions) -> getty_codec::ws::Config {
    getty_codec::ws::Config {
        max_message_size: options.get_max_message_len(),
        max_frame_size: options.get_max_message_len(),
    }
}
