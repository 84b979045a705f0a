//! Unix-domain sockets on the same reactor, handlers, codecs and sessions as TCP and UDP.
//!
//! - **Stream**: [`UnixServer`] and [`UnixClient`] run the TCP session machinery (read until
//!   `WouldBlock`, watermarks, graceful close, filters) over a socket file or, on Linux, a
//!   name in the abstract namespace. Sessions are `Session<C, Unix>` and handlers
//!   implement `Handler<C, Unix>`. A server removes a stale socket file left by an
//!   earlier run before it binds (unless told not to; a file another server still listens
//!   on is never removed) and removes its own file when it stops.
//! - **Datagram**: [`UnixDatagramEndpoint`] is the UDP datagram path over a unix datagram
//!   socket, bound (any peer writes to it) or connected to one peer. Unix datagrams are
//!   reliable: the kernel never drops one, and a sender to a full receiver gets `EAGAIN`.
//!   The endpoint then keeps the datagram queued and sends it when the receiver has room,
//!   in order: **nothing is dropped**, and memory stays within the outbound bound (writes
//!   past it fail with `Error::QueueFull`). A datagram longer than the kernel's limit
//!   (found at run time: about the socket's send buffer, 212,960 bytes with Linux's
//!   defaults) fails at `write` with `Error::MessageTooLong`, and the session carries on.
//!
//! ```
//! use std::io::{Read, Write};
//! use getty_codec::{Bytes, LengthFieldCodec};
//! use getty_reactor::Reactor;
//! use getty_transports::{unix::UnixServer, Handler, Session, Unix, UnixAddr};
//!
//! struct Echo;
//! impl Handler<LengthFieldCodec, Unix> for Echo {
//!     fn on_message(&mut self, s: &mut Session<LengthFieldCodec, Unix>, msg: Bytes) {
//!         let _ = s.write(msg);
//!     }
//! }
//!
//! let path = std::env::temp_dir().join(format!("getty-doc-{}.sock", std::process::id()));
//! let server = UnixServer::bind(path.as_path(), |_| Ok((LengthFieldCodec::default(), Echo))).unwrap();
//! let reactor = Reactor::start_thread("unix-echo", move |r| {
//!     r.spawn(server);
//!     Ok(())
//! }).unwrap();
//!
//! let mut peer = std::os::unix::net::UnixStream::connect(&path).unwrap();
//! peer.write_all(b"\x00\x00\x00\x02hi").unwrap();
//! let mut echo = [0u8; 6];
//! peer.read_exact(&mut echo).unwrap();
//! assert_eq!(&echo, b"\x00\x00\x00\x02hi");
//!
//! reactor.handle().shutdown();
//! reactor.join().unwrap();
//! assert!(!path.exists(), "the server removes its socket file when it stops");
//! ```

mod datagram;
mod socket_file;
mod stream;

pub use datagram::{UnixDatagramEndpoint, UnixDatagramEndpointBuilder, UnixDatagramEndpointKind};
pub use stream::{
    UnixClient, UnixClientBuilder, UnixClientCommand, UnixClientKind, UnixServer,
    UnixServerBuilder, UnixServerKind,
};
