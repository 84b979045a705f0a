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

// Inline: the parts read as modules of this crate, so a reader stays on its pages.
#[doc(inline)]
pub use getty_codec as codec;
#[doc(inline)]
pub use getty_reactor as reactor;
#[doc(inline)]
pub use getty_transports as transports;

pub use getty_reactor::{PanicPolicy, Reactor, ReactorHandle, ReactorPool};
#[cfg(unix)]
pub use getty_transports::unix;
pub use getty_transports::{
    tcp, tls, udp, ws, Abort, Address, Close, DialTarget, Error, Handler, Metrics, Offload,
    Session, SessionHandle, SessionOptions, Setup, SocketOptions, Stats, Tcp, Transport, Unix,
    UnixAddr,
};

/// The README's code, compiled as a doctest so that it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
