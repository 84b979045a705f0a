//! getty-rs: an event-loop network framework.
//!
//! One single-threaded mio reactor drives a slab of connection state machines; codecs are
//! sans-IO filters over byte buffers; handlers get getty's callbacks (open, message, cron,
//! error, close). Scale past one core by running one reactor per core.
//!
//! This crate only re-exports the parts:
//! - [`reactor`]: the poll loop, timers, waker and buffer pool;
//! - [`codec`]: framing codecs (length-prefixed, lines, raw);
//! - [`transports`] (and the shortcuts below): sessions, servers and clients.
//!
//! ```
//! use getty::codec::LengthFieldCodec;
//! use getty::tcp::TcpServer;
//! use getty::{Handler, Reactor, Session};
//!
//! struct Echo;
//! impl Handler<LengthFieldCodec> for Echo {
//!     fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: getty::codec::Bytes) {
//!         let _ = s.write(msg);
//!     }
//! }
//!
//! let server = TcpServer::bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo))).unwrap();
//! let reactor = Reactor::start_thread("echo", move |r| { r.spawn(server); Ok(()) }).unwrap();
//! reactor.handle().shutdown();
//! reactor.join().unwrap();
//! ```
//!
//! # Features
//!
//! All three are on by default; each switches on the feature of the same name in
//! [`transports`] and [`codec`]. With `default-features = false` this crate builds plain
//! TCP, UDP and unix sockets with every codec, and pulls in no TLS, WebSocket or
//! compression library.
//!
//! | Feature   | Gates                                                                         | Pulls in                      |
//! |-----------|-------------------------------------------------------------------------------|-------------------------------|
//! | `tls`     | [`tls`], the `tls` setters of the TCP and WebSocket builders, `codec::rustls` | rustls (with ring)            |
//! | `ws`      | [`ws`], `codec::ws`, `Error::WebSocket` and `Error::Upgrade`                  | tungstenite, httparse, rand   |
//! | `deflate` | `SessionOptions::compression`, `codec::filter::DeflateFilter`; permessage-deflate with `ws` | flate2 (zlib-rs), miniz_oxide |
//!
//! ```toml
//! [dependencies]
//! # Plain TCP, UDP and unix sockets, and WebSocket without compression:
//! getty = { version = "0.1", default-features = false, features = ["ws"] }
//! ```
//!
//! The transports' [features](transports#features) say what each leaves out and why.
//!

// Without the feature, links to what it gates point to the table of features instead.
#![cfg_attr(not(feature = "tls"), doc = "[`tls`]: crate#features")]
#![cfg_attr(not(feature = "ws"), doc = "[`ws`]: crate#features")]
#![deny(missing_docs)]
#![deny(unreachable_pub)]
#![deny(clippy::undocumented_unsafe_blocks)]

// Inline: the parts read as modules of this crate, so a reader stays on its pages.
#[doc(inline)]
pub use getty_codec as codec;
#[doc(inline)]
pub use getty_reactor as reactor;
#[doc(inline)]
pub use getty_transports as transports;

pub use getty_reactor::{PanicPolicy, Reactor, ReactorHandle, ReactorPool};
#[cfg(feature = "tls")]
pub use getty_transports::tls;
#[cfg(unix)]
pub use getty_transports::unix;
#[cfg(feature = "ws")]
pub use getty_transports::ws;
pub use getty_transports::{
    tcp, udp, Abort, Address, Close, DialTarget, Error, GroupStats, Handler, Metrics, Offload,
    Session, SessionGroup, SessionGroupBuilder, SessionHandle, SessionOptions, Setup, SlowConsumer,
    SocketOptions, Stats, Tcp, Transport, Unix, UnixAddr,
};

/// The README's code, compiled as a doctest so that it stays true. The README shows the
/// default build.
#[doc = include_str!("../README.md")]
#[cfg(all(doctest, feature = "tls", feature = "ws", feature = "deflate"))]
pub struct ReadmeDoctests;
