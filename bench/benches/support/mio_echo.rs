//! The hand-written baseline of the echo benches: a minimal single-threaded server on mio,
//! with no framework, that a bench measures getty-rs against in the same run.
//!
//! It is what one writes by hand for a fast echo, and no more:
//!
//! - one `Poll`, connections in a `Slab`, sockets registered once for reading and writing
//!   (edge-triggered, as mio always is);
//! - one read buffer (64 KiB) and one output buffer shared by every connection: a
//!   connection holds bytes of its own only while a request is cut short or the socket
//!   refused part of an answer, so an idle connection costs its socket, its slab slot and two
//!   empty `Vec`s;
//! - on readiness it reads until a read comes back short (the socket's queue was emptied;
//!   a later arrival raises a new edge) or `WouldBlock`, hands the bytes to the
//!   [`Protocol`], which appends its answers to the output buffer, and writes that buffer
//!   once per batch;
//! - what the socket does not take waits in the connection, and the connection stops
//!   reading until it has gone out (the bound a real server needs against a peer that
//!   sends without reading).
//!
//! The bench chooses the protocol: [`LengthPrefixedEcho`] answers 4-byte big-endian
//! length-prefixed frames, as getty-rs's `LengthFieldCodec` echo does.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::echo_bench::{current_thread_ids, AcceptThread, ThreadIds};

/// Connections accepted by the hand-written server (every instance, since the start).
pub static MIO_OPENED: AtomicUsize = AtomicUsize::new(0);

/// Size of the read buffer all connections share.
const READ_BUF: usize = 64 * 1024;

/// The listener's token; connections use their slab index.
const LISTENER: Token = Token(usize::MAX);

/// What a hand-written server says to its peer, one value per connection.
pub trait Protocol: Default + 'static {
    /// Appends to `out` the answers to the whole requests at the front of `input` and
    /// returns how many bytes of `input` they took: a request cut short stays for the next
    /// read. An error closes the connection.
    fn answer(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<usize>;
}

/// Echoes 4-byte big-endian length-prefixed frames whole, in one copy per batch.
#[derive(Default)]
pub struct LengthPrefixedEcho;

impl LengthPrefixedEcho {
    /// The largest frame body it takes, as the other servers of the bench.
    const MAX_BODY: usize = 1 << 20;
}

impl Protocol for LengthPrefixedEcho {
    fn answer(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        let mut whole = 0;
        while let Some(header) = input.get(whole..whole + 4) {
            let body = u32::from_be_bytes(header.try_into().unwrap()) as usize;
            if body > Self::MAX_BODY {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
            }
            if input.len() - whole - 4 < body {
                break;
            }
            whole += 4 + body;
        }
        out.extend_from_slice(&input[..whole]);
        Ok(whole)
    }
}

/// One connection: its socket, its protocol state, and the bytes it holds between events.
struct Conn<P> {
    stream: TcpStream,
    protocol: P,
    /// The start of a request the last read cut short.
    partial: Vec<u8>,
    /// Answers the socket has not taken yet: while any wait, the connection does not read.
    unsent: Vec<u8>,
}

/// The buffers every connection borrows in turn.
struct Scratch {
    read: Vec<u8>,
    out: Vec<u8>,
}

/// Starts the hand-written server with protocol `P` on a thread named `name`, listening on
/// an ephemeral loopback port. Returns its accept thread (stop it like the tokio server's)
/// and the thread's ids.
pub fn start_mio_thread<P: Protocol>(name: &str) -> io::Result<(AcceptThread, ThreadIds)> {
    let listener = bind_listener()?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let (ids_tx, ids_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = ids_tx.send(current_thread_ids());
            serve::<P>(TcpListener::from_std(listener), &stop_flag)
        })?;
    let ids = ids_rx
        .recv()
        .map_err(|_| io::Error::other(format!("the {name} thread is gone")))?;
    Ok((AcceptThread { addr, stop, thread }, ids))
}

/// A non-blocking loopback listener with the backlog getty-rs uses (1024).
fn bind_listener() -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The event loop, until `stop` is set (and a connection wakes it).
fn serve<P: Protocol>(mut listener: TcpListener, stop: &AtomicBool) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn<P>> = Slab::new();
    let mut scratch = Scratch {
        read: vec![0; READ_BUF],
        out: Vec::with_capacity(READ_BUF),
    };
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                if stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                accept_all(&listener, &poll, &mut conns);
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if serve_conn(conn, &mut scratch).is_err() {
                let mut conn = conns.remove(key);
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
}

/// Accepts every connection waiting, registers each for reading and writing.
fn accept_all<P: Protocol>(listener: &TcpListener, poll: &Poll, conns: &mut Slab<Conn<P>>) {
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors or an aborted handshake: the next edge retries.
                eprintln!("mio echo accept: {e}");
                return;
            }
        };
        // getty-rs sets TCP_NODELAY on every session by default; so does this.
        let _ = stream.set_nodelay(true);
        let entry = conns.vacant_entry();
        let token = Token(entry.key());
        if poll
            .registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .is_ok()
        {
            MIO_OPENED.fetch_add(1, Ordering::Relaxed);
            entry.insert(Conn {
                stream,
                protocol: P::default(),
                partial: Vec::new(),
                unsent: Vec::new(),
            });
        }
    }
}

/// Handles one readiness event: flushes what waits, then reads, answers and writes until
/// the socket has nothing more to give. `Err` closes the connection.
fn serve_conn<P: Protocol>(conn: &mut Conn<P>, scratch: &mut Scratch) -> io::Result<()> {
    if !conn.unsent.is_empty() {
        let written = write_some(&mut conn.stream, &conn.unsent)?;
        conn.unsent.drain(..written);
        if !conn.unsent.is_empty() {
            return Ok(());
        }
        conn.unsent = Vec::new();
    }
    loop {
        let n = match conn.stream.read(&mut scratch.read) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        answer_read(conn, &scratch.read[..n], &mut scratch.out)?;
        let written = write_some(&mut conn.stream, &scratch.out)?;
        if written < scratch.out.len() {
            // The socket is full: keep the rest and stop reading until it has gone.
            conn.unsent.extend_from_slice(&scratch.out[written..]);
            scratch.out.clear();
            return Ok(());
        }
        scratch.out.clear();
        if n < scratch.read.len() {
            return Ok(());
        }
    }
}

/// Answers the bytes just read, after whatever a previous read cut short.
fn answer_read<P: Protocol>(conn: &mut Conn<P>, read: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    if conn.partial.is_empty() {
        let used = conn.protocol.answer(read, out)?;
        conn.partial.extend_from_slice(&read[used..]);
    } else {
        conn.partial.extend_from_slice(read);
        let used = conn.protocol.answer(&conn.partial, out)?;
        conn.partial.drain(..used);
        if conn.partial.is_empty() {
            // A large request is done: give its memory back, as an idle connection has none.
            conn.partial = Vec::new();
        }
    }
    Ok(())
}

/// Writes as much of `bytes` as the socket takes now.
fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
