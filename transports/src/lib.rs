//! getty-rs transports: sessions over sockets, driven by the getty reactor.
//!
//! Every transport offers the same contract. A server or client calls a **setup hook** for
//! each new connection (getty's `NewSessionCallback`), which picks a codec and a
//! [`Handler`] and may adjust the [`SessionOptions`]. The reactor then drives the session:
//! it reads until `WouldBlock` (within a per-turn budget), decodes every whole frame, calls
//! [`Handler::on_message`] for each, and flushes what the handler wrote with one `writev`.
//! Limits have safe defaults: a frame over `max_message_len` closes that one session with
//! [`Error::MessageTooLong`] (`on_error`, then `on_close`), and the outbound queue has
//! watermarks and a hard bound.
//!
//! ```
//! use std::io::{Read, Write};
//! use bytes::Bytes;
//! use getty_codec::LengthFieldCodec;
//! use getty_reactor::Reactor;
//! use getty_transports::{tcp::TcpServer, Handler, Session};
//!
//! struct Echo;
//! impl Handler<LengthFieldCodec> for Echo {
//!     fn on_message(&mut self, session: &mut Session<LengthFieldCodec>, msg: Bytes) {
//!         let _ = session.write(msg);
//!     }
//! }
//!
//! let server = TcpServer::bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo))).unwrap();
//! let addr = server.local_addr();
//! let reactor = Reactor::start_thread("echo", move |r| {
//!     r.spawn(server);
//!     Ok(())
//! }).unwrap();
//!
//! let mut peer = std::net::TcpStream::connect(addr).unwrap();
//! peer.write_all(b"\x00\x00\x00\x02hi").unwrap();
//! let mut echo = [0u8; 6];
//! peer.read_exact(&mut echo).unwrap();
//! assert_eq!(&echo, b"\x00\x00\x00\x02hi");
//!
//! reactor.handle().shutdown();
//! reactor.join().unwrap();
//! ```
//!
//! # Features
//!
//! All three are on by default and switch on the `getty-codec` feature of the same name.
//! `default-features = false` leaves TCP, UDP and unix sockets (stream and datagram), with
//! every codec, filter stacking ([`Setup::add_filter`]), clients, servers and handles; it
//! pulls in no TLS, WebSocket or compression library.
//!
//! | Feature   | Gates                                                                                   | Pulls in                      |
//! |-----------|-----------------------------------------------------------------------------------------|-------------------------------|
//! | `tls`     | the [`tls`] module; `tls` on the TCP and WebSocket builders (`wss://` URLs)             | rustls (with ring)            |
//! | `ws`      | the [`ws`] module (server, client, upgrade, routes); `Error::WebSocket`, `Error::Upgrade` | tungstenite, httparse, rand   |
//! | `deflate` | `SessionOptions::compression` (compressed TCP and unix sessions); permessage-deflate on [`ws`] | flate2 (zlib-rs), miniz_oxide |
//!
//! A setting that both peers must share is absent without its feature, so code that uses it
//! does not build, rather than silently talking past its peer: `compression` (nothing
//! negotiates it) and the `tls` setters. A WebSocket client given a `wss://` URL without
//! `tls` fails when it is built. Negotiated compression keeps its shape: with `ws` but not
//! `deflate`, the WebSocket builders still take `deflate(...)`, but the client offers
//! nothing and the server declines every offer (RFC 7692 lets it), so connections run
//! uncompressed, as with a peer that does not offer it.
//!
// Without the feature, links to what it gates point to the table of features instead.
#![cfg_attr(not(feature = "tls"), doc = "[`tls`]: crate#features")]
#![cfg_attr(not(feature = "ws"), doc = "[`ws`]: crate#features")]
#![deny(missing_docs)]
#![deny(unreachable_pub)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod addr;
pub mod builder;
mod client;
mod commands;
mod core;
mod error;
mod filtered;
mod framing;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod group;
mod handle;
mod listener;
mod metrics;
#[cfg(any(test, feature = "fuzzing"))]
mod model_input;
mod offload;
mod options;
mod outbound;
mod redial;
mod resolve;
mod server;
mod session;
mod setup;
mod stream;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;
pub mod udp;
#[cfg(unix)]
pub mod unix;
#[cfg(feature = "ws")]
pub mod ws;

pub use addr::{Address, UnixAddr};
pub use client::{ClientCommand, DialTarget};
pub use commands::{ServerCommand, SessionCommand};
pub use error::Error;
pub use group::{GroupStats, SessionGroup, SessionGroupBuilder, SlowConsumer};
pub use handle::SessionHandle;
pub use metrics::Metrics;
pub use offload::Offload;
pub use options::{SessionOptions, SocketOptions};
pub use session::{Handler, Session, Stats};
pub use setup::Setup;
pub use transport::{Tcp, Transport, Unix};

/// A command for an entry: a session closes gracefully, a server stops listening, a client
/// closes its sessions and stops redialling. Send it with `ReactorHandle::send` or
/// `Context::send` to the address `spawn` returned; every session, server and client
/// accepts it.
///
/// See [`ServerCommand`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close;

/// A command for a session: reset the connection now, discarding what is queued. Only
/// sessions (and datagram endpoints, which are sessions) accept it; servers and clients do
/// not compile with it.
///
/// See [`SessionCommand`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort;

/// Runs `f` with a real session over a loopback TCP connection (raw codec), outside any
/// reactor: the harness of this crate's documentation examples.
///
/// ```
/// getty_transports::with_session(|s| assert!(s.is_writable()));
/// ```
#[doc(hidden)]
pub fn with_session(f: impl FnOnce(&mut Session<getty_codec::RawCodec>)) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let _peer = std::net::TcpStream::connect(addr).expect("connect loopback");
    let (stream, peer) = listener.accept().expect("accept");
    #[cfg(unix)]
    let mut session = {
        use std::os::fd::AsRawFd;
        Session::new(
            peer,
            stream.as_raw_fd(),
            getty_codec::RawCodec,
            Default::default(),
            std::time::Instant::now(),
            framing::CodecFraming,
        )
    };
    #[cfg(not(unix))]
    let mut session = Session::new(
        peer,
        getty_codec::RawCodec,
        Default::default(),
        std::time::Instant::now(),
        framing::CodecFraming,
    );
    f(&mut session);
    drop(session);
    drop(stream);
}

/// Runs `f` with a real WebSocket session (a server's, message codec, path `/`, nothing
/// negotiated) over a loopback TCP connection, outside any reactor: the harness of this
/// crate's documentation examples.
///
/// ```
/// getty_transports::with_ws_session(|s| assert_eq!(s.path(), "/"));
/// ```
#[doc(hidden)]
#[cfg(feature = "ws")]
pub fn with_ws_session(f: impl FnOnce(&mut Session<getty_codec::MessageCodec, ws::Ws>)) {
    use getty_codec::ws::{Protocol, Role};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let _peer = std::net::TcpStream::connect(addr).expect("connect loopback");
    let (stream, peer) = listener.accept().expect("accept");
    let options = std::sync::Arc::new(SessionOptions::default());
    let protocol = Protocol::new(Role::Server, ws::protocol_config(&options), None);
    let state = ws::WsState::new(protocol, ws::Keepalive::default(), "/".to_string());
    let framing = ws::WsFraming::new(state);
    let now = std::time::Instant::now();
    #[cfg(unix)]
    let mut session = {
        use std::os::fd::AsRawFd;
        Session::new(
            peer,
            stream.as_raw_fd(),
            getty_codec::MessageCodec,
            options,
            now,
            framing,
        )
    };
    #[cfg(not(unix))]
    let mut session = Session::new(peer, getty_codec::MessageCodec, options, now, framing);
    f(&mut session);
    drop(session);
    drop(stream);
}
