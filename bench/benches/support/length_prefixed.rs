//! What the length-prefixed TCP echo benches (`tcp_echo`, `sweep`) share: the load
//! generator's framing (4-byte big-endian length, then the body), a plain connect (from a
//! chosen loopback source address, when one address runs out of ports), and the tokio echo
//! servers, on a current-thread runtime or on the multi-thread one.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream as StdTcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use crate::echo_bench::{
    bind_tokio_listener, current_thread_ids, random_payload, tokio_accept_loop, AcceptThread,
    Framing, ThreadIds,
};

/// Largest frame body the tokio echo accepts (getty-rs's default max message length).
pub const MAX_BODY: usize = 1 << 20;

/// How the tokio echo reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokioEcho {
    /// BufReader of `buf` bytes + read_exact(header) + read_exact(body), one write_all per
    /// batch.
    Framed { buf: usize },
    /// read into an 8 KiB buffer, write_all what was read.
    Raw,
}

/// True when `buf` starts with a whole length-prefixed frame.
pub fn holds_whole_frame(buf: &[u8]) -> bool {
    buf.len() >= 4 && buf.len() - 4 >= u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
}

/// The idiomatic framed tokio echo: buffered reads, `read_exact` header then body, and one
/// `write_all` for all the frames that were already buffered.
pub async fn tokio_framed_echo(stream: tokio::net::TcpStream, buf: usize) -> io::Result<()> {
    let mut conn = BufReader::with_capacity(buf, stream);
    let mut out: Vec<u8> = Vec::new();
    loop {
        let mut header = [0u8; 4];
        match conn.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
        }
        let start = out.len();
        out.extend_from_slice(&header);
        out.resize(start + 4 + len, 0);
        conn.read_exact(&mut out[start + 4..]).await?;
        if !holds_whole_frame(conn.buffer()) || out.len() >= 64 * 1024 {
            conn.write_all(&out).await?;
            out.clear();
        }
    }
}

/// The minimal tokio echo: whatever arrives goes back.
pub async fn tokio_raw_echo(mut stream: tokio::net::TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// What the tokio servers do with each accepted connection: count it in `opened` and spawn
/// its echo task.
pub fn tokio_echo_task(
    variant: TokioEcho,
    opened: &'static AtomicUsize,
) -> impl FnMut(tokio::net::TcpStream) + Send + 'static {
    move |stream| {
        opened.fetch_add(1, Ordering::Relaxed);
        match variant {
            TokioEcho::Framed { buf } => {
                tokio::spawn(async move {
                    let _ = tokio_framed_echo(stream, buf).await;
                });
            }
            TokioEcho::Raw => {
                tokio::spawn(async move {
                    let _ = tokio_raw_echo(stream).await;
                });
            }
        }
    }
}

/// Collects `(index, ids)` pairs sent by `n` threads, in index order.
pub fn thread_ids_by_index(
    rx: &mpsc::Receiver<(usize, ThreadIds)>,
    n: usize,
) -> io::Result<Vec<ThreadIds>> {
    let mut ids: Vec<(usize, ThreadIds)> = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(
            rx.recv_timeout(Duration::from_secs(10))
                .map_err(|_| io::Error::other("a server thread did not report"))?,
        );
    }
    ids.sort_by_key(|(index, _)| *index);
    Ok(ids.into_iter().map(|(_, ids)| ids).collect())
}

/// tokio's multi-thread runtime with `workers` worker threads, on a thread named `name`
/// that only waits for the accept loop; the accept loop is a task like the connections, so
/// all of the server's work happens on the workers, whose ids this returns in start order.
pub fn start_tokio_mt(
    name: &str,
    workers: usize,
    serve: impl FnMut(tokio::net::TcpStream) + Send + 'static,
) -> io::Result<(AcceptThread, Vec<ThreadIds>)> {
    let (tx, rx) = mpsc::channel::<io::Result<SocketAddr>>();
    let (ids_tx, ids_rx) = mpsc::channel::<(usize, ThreadIds)>();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let worker_name = format!("{name}-worker");
    let thread =
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || -> io::Result<()> {
                let started = Arc::new(AtomicUsize::new(0));
                let ids_tx = Mutex::new(ids_tx);
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .thread_name(worker_name)
                    .on_thread_start(move || {
                        let index = started.fetch_add(1, Ordering::Relaxed);
                        let ids_tx = ids_tx.lock().unwrap_or_else(|p| p.into_inner());
                        let _ = ids_tx.send((index, current_thread_ids()));
                    })
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let Some(listener) = bind_tokio_listener(|addr| {
                        let _ = tx.send(addr);
                    }) else {
                        return Ok(());
                    };
                    let accept_loop = tokio_accept_loop(listener, stop_flag, serve);
                    tokio::spawn(accept_loop)
                        .await
                        .unwrap_or_else(|e| Err(io::Error::other(e)))
                })
            })?;
    let addr = rx
        .recv()
        .map_err(|_| io::Error::other("tokio server thread gone"))??;
    // The workers; a blocking-pool thread (none is expected) would report later.
    let threads = thread_ids_by_index(&ids_rx, workers)?;
    Ok((AcceptThread { addr, stop, thread }, threads))
}

/// The load generator's message: one length-prefixed frame of random bytes, sent again for
/// each echo.
pub struct LengthPrefixed {
    frame: Vec<u8>,
}

impl LengthPrefixed {
    pub fn random(size: usize) -> LengthPrefixed {
        let mut frame = Vec::with_capacity(4 + size);
        frame.extend_from_slice(&(size as u32).to_be_bytes());
        frame.extend_from_slice(&random_payload(size));
        LengthPrefixed { frame }
    }
}

impl Framing for LengthPrefixed {
    fn message(&self) -> &[u8] {
        &self.frame
    }

    fn whole_echo(&self, buf: &[u8]) -> io::Result<Option<usize>> {
        if !holds_whole_frame(buf) {
            return Ok(None);
        }
        let sent = &self.frame[..];
        // Equal headers mean equal lengths (so `buf` holds all of it); spot-check the
        // payload's end rather than charge the client a full comparison per message.
        if buf[..4] != sent[..4] || buf[sent.len() - 8..sent.len()] != sent[sent.len() - 8..] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the echo does not match what was sent",
            ));
        }
        Ok(Some(sent.len()))
    }
}

/// A connected socket for the load generator (a TCP connection needs no handshake).
pub fn connect_plain(addr: SocketAddr) -> io::Result<(StdTcpStream, Vec<u8>)> {
    let stream = StdTcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    Ok((stream, Vec::new()))
}

/// Connections per loopback source address: well under the ~28,000 ephemeral ports
/// (32768-60999) one address has towards one server port. Not much more: `connect` looks
/// for a free port by probing, first among half of the range, and grows slow as it fills
/// (19,500 connections from one address took 15 s to open, 10,000 took 1.3 s).
#[allow(dead_code)] // Only the sweep spreads its connections.
pub const CONNS_PER_SOURCE: usize = 10_000;

/// The loopback source address of the `index`-th connection: 127.0.0.1 for the first
/// [`CONNS_PER_SOURCE`], then 127.0.0.2, and so on (all of 127/8 is loopback on Linux).
#[allow(dead_code)] // Only the sweep spreads its connections.
pub fn loopback_source(index: usize) -> Ipv4Addr {
    let n = 1 + (index / CONNS_PER_SOURCE) as u32;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + n)
}

/// Like [`connect_plain`], from [`loopback_source`]`(index)`: past one address's ports,
/// each connection needs a source address of its own kind.
#[allow(dead_code)] // Only the sweep spreads its connections.
pub fn connect_spread(addr: SocketAddr, index: usize) -> io::Result<(StdTcpStream, Vec<u8>)> {
    let source = loopback_source(index);
    if source == Ipv4Addr::LOCALHOST {
        return connect_plain(addr);
    }
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect(&addr.into())?;
    socket.set_tcp_nodelay(true)?;
    Ok((socket.into(), Vec::new()))
}
