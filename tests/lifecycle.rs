//! Sessions from other threads, graceful shutdown, reactor pools, metrics and offload,
//! over real loopback sockets. Every wait is bounded; nothing here asserts on speed.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{connect, frame, read_frame, watchdog, Running, STEP};
use getty::codec::{Bytes, LengthFieldCodec, RawCodec};
use getty::tcp::{ServerHandle, TcpClient, TcpServer};
use getty::{Error, Handler, Metrics, Offload, Session, SessionHandle, SessionOptions};

const LIMIT: Duration = Duration::from_secs(120);

type Codec = LengthFieldCodec;

/// Publishes each session's handle on open and counts closes.
struct Publish {
    handles: Sender<SessionHandle<Codec>>,
    closes: Arc<AtomicUsize>,
}

impl Handler<Codec> for Publish {
    fn on_open(&mut self, s: &mut Session<Codec>) -> std::io::Result<()> {
        let _ = self.handles.send(s.handle().expect("inside a callback"));
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<Codec>, _: Bytes) {}
    fn on_close(&mut self, _: &mut Session<Codec>) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

fn publishing_server(
    options: SessionOptions,
) -> (
    Running,
    SocketAddr,
    mpsc::Receiver<SessionHandle<Codec>>,
    Arc<AtomicUsize>,
) {
    let (tx, rx) = mpsc::channel();
    let closes = Arc::new(AtomicUsize::new(0));
    let closes_in = closes.clone();
    let server = TcpServer::builder()
        .session_options(options)
        .bind("127.0.0.1:0", move |_| {
            Ok((
                Codec::default(),
                Publish {
                    handles: tx.clone(),
                    closes: closes_in.clone(),
                },
            ))
        })
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("publish", server), addr, rx, closes)
}

/// Raises the soft limit on open files to the hard limit; returns the soft limit.
fn raise_fd_limit() -> usize {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur as usize
    }
}

/// Writes through a handle, waiting (bounded) whenever the session pushes back.
fn write_with_backpressure(handle: &SessionHandle<Codec>, payload: Vec<u8>) {
    let deadline = Instant::now() + STEP;
    let payload = Bytes::from(payload);
    loop {
        match handle.write(payload.clone()) {
            Ok(()) => return,
            Err(Error::Backpressure) => {
                assert!(Instant::now() < deadline, "the session never drained");
                let _ = handle.wait_writable(Duration::from_millis(100));
            }
            Err(e) => panic!("write through a handle failed: {e}"),
        }
    }
}

#[test]
fn eight_threads_write_through_handles_without_interleaving() {
    watchdog(LIMIT, || {
        const SESSIONS: usize = 100;
        const WRITERS: usize = 8;
        const PER_WRITER: usize = 100;
        let (server, addr, handles_rx, _) = publishing_server(SessionOptions::default());
        let clients: Vec<TcpStream> = (0..SESSIONS).map(|_| connect(addr)).collect();
        let handles: Vec<SessionHandle<Codec>> = (0..SESSIONS)
            .map(|_| handles_rx.recv_timeout(STEP).expect("a session opened"))
            .collect();
        // Map each client to its session by the id the session announces first.
        for (i, h) in handles.iter().enumerate() {
            h.write(Bytes::from(format!("hello {i}"))).unwrap();
        }
        let mut by_index: HashMap<usize, TcpStream> = HashMap::new();
        for mut c in clients {
            let hello = String::from_utf8(read_frame(&mut c)).unwrap();
            let index: usize = hello.strip_prefix("hello ").unwrap().parse().unwrap();
            by_index.insert(index, c);
        }
        let start = Arc::new(Barrier::new(WRITERS));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let handles = handles.clone();
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    for seq in 0..PER_WRITER {
                        for h in &handles {
                            // Varying sizes, so interleaved bytes could not decode cleanly.
                            let mut msg = format!("{w}:{seq}:").into_bytes();
                            msg.resize(msg.len() + (seq * 37 + w * 101) % 3000, b'x');
                            write_with_backpressure(h, msg);
                        }
                    }
                })
            })
            .collect();
        // Read every session's stream while the writers write.
        let readers: Vec<_> = by_index
            .into_values()
            .map(|mut c| {
                std::thread::spawn(move || {
                    let mut next = [0usize; WRITERS];
                    for _ in 0..WRITERS * PER_WRITER {
                        let msg = read_frame(&mut c);
                        let text = String::from_utf8_lossy(&msg);
                        let mut parts = text.splitn(3, ':');
                        let w: usize = parts.next().unwrap().parse().expect("a clean frame");
                        let seq: usize = parts.next().unwrap().parse().expect("a clean frame");
                        assert!(parts.next().unwrap().bytes().all(|b| b == b'x'));
                        assert_eq!(seq, next[w], "writer {w}'s messages out of order");
                        next[w] += 1;
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("a writer thread");
        }
        for r in readers {
            r.join().expect("a reader thread");
        }
        server.stop();
        for h in &handles {
            assert!(h.is_closed());
            assert!(matches!(
                h.write(Bytes::from_static(b"late")),
                Err(Error::Closed)
            ));
        }
    });
}

/// Queues a large reply for every new session and counts closes.
struct Burst {
    reply: Bytes,
    opened: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
}

impl Handler<RawCodec> for Burst {
    fn on_open(&mut self, s: &mut Session<RawCodec>) -> std::io::Result<()> {
        s.write_bytes(self.reply.clone())
            .expect("room for the reply");
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {}
    fn on_close(&mut self, _: &mut Session<RawCodec>) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn graceful_shutdown_mid_transfer_delivers_everything_and_closes_each_once() {
    watchdog(LIMIT, || {
        let sessions = (raise_fd_limit().saturating_sub(64) / 2).min(1000);
        assert!(sessions >= 100, "too few file descriptors for this test");
        let reply = Bytes::from((0..64 * 1024).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let opened = Arc::new(AtomicUsize::new(0));
        let closes = Arc::new(AtomicUsize::new(0));
        let (o, c, r) = (opened.clone(), closes.clone(), reply.clone());
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((
                RawCodec,
                Burst {
                    reply: r.clone(),
                    opened: o.clone(),
                    closes: c.clone(),
                },
            ))
        })
        .unwrap();
        let addr = server.local_addr();
        let reactor = Running::serve("burst", server);
        let clients: Vec<TcpStream> = (0..sessions).map(|_| connect(addr)).collect();
        let deadline = Instant::now() + STEP;
        while opened.load(Ordering::SeqCst) < sessions {
            assert!(Instant::now() < deadline, "not every session opened");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Most replies are still queued (nobody has read): shut down with time to flush.
        reactor
            .handle()
            .shutdown_graceful(Duration::from_secs(30))
            .unwrap();
        let readers: Vec<_> = clients
            .chunks(sessions.div_ceil(8))
            .map(|chunk| {
                let chunk: Vec<TcpStream> = chunk.iter().map(|c| c.try_clone().unwrap()).collect();
                let reply = reply.clone();
                std::thread::spawn(move || {
                    for mut c in chunk {
                        let mut got = Vec::new();
                        c.read_to_end(&mut got)
                            .expect("a clean end after the reply");
                        assert!(
                            got == reply,
                            "a reply arrived incomplete ({} bytes)",
                            got.len()
                        );
                    }
                })
            })
            .collect();
        for r in readers {
            r.join().expect("a reader thread");
        }
        reactor.join(STEP);
        assert_eq!(
            closes.load(Ordering::SeqCst),
            sessions,
            "on_close exactly once each"
        );
    });
}

/// Counts opens, for the client tests.
struct CountOpens(Arc<AtomicUsize>);

impl Handler<RawCodec> for CountOpens {
    fn on_open(&mut self, _: &mut Session<RawCodec>) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {}
}

#[test]
fn client_shutdown_during_a_reconnect_storm_neither_deadlocks_nor_redials() {
    watchdog(LIMIT, || {
        let target = common::dead_port();
        let opens = Arc::new(AtomicUsize::new(0));
        let opens_in = opens.clone();
        let client = TcpClient::builder()
            .connection_number(20)
            .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(5))
            .build(target, move |_| {
                Ok((RawCodec, CountOpens(opens_in.clone())))
            })
            .unwrap();
        let reactor = Running::serve("storm", client);
        std::thread::sleep(Duration::from_millis(200)); // dozens of failed dials
        reactor.stop(); // bounded: fails the test if the reactor does not stop in time
                        // Nothing dials any more: a listener on the target port sees no connection.
        let listener = std::net::TcpListener::bind(target).unwrap();
        listener.set_nonblocking(true).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(listener.accept().is_err(), "a stopped client dialled again");
        assert_eq!(opens.load(Ordering::SeqCst), 0);
    });
}

/// Echoes and counts which reactor thread served each session.
struct Where(Arc<std::sync::Mutex<HashMap<String, usize>>>);

impl Handler<Codec> for Where {
    fn on_open(&mut self, _: &mut Session<Codec>) -> std::io::Result<()> {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        *self.0.lock().unwrap().entry(name).or_default() += 1;
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<Codec>, msg: Bytes) {
        let _ = s.write(msg);
    }
}

#[test]
fn a_pool_of_two_reactors_spreads_sessions_over_both() {
    watchdog(LIMIT, || {
        let seen = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let seen_in = seen.clone();
        let pool = TcpServer::builder()
            .start_pool(2, "127.0.0.1:0", move |_| {
                let seen = seen_in.clone();
                move |_: &mut getty::tcp::Setup<'_>| Ok((Codec::default(), Where(seen.clone())))
            })
            .unwrap();
        let mut clients: Vec<TcpStream> = (0..100).map(|_| connect(pool.local_addr())).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            common::echo_roundtrip(c, format!("ping {i}").as_bytes());
        }
        let per_reactor: Vec<Metrics> = pool.metrics().unwrap();
        assert_eq!(per_reactor.len(), 2);
        for (i, m) in per_reactor.iter().enumerate() {
            assert!(
                m.sessions_open() > 0,
                "reactor {i} got no session: {per_reactor:?}"
            );
            assert_eq!(m.messages_in, m.sessions_opened, "one ping per session");
        }
        let total: u64 = per_reactor.iter().map(|m| m.sessions_open()).sum();
        assert_eq!(total, 100);
        assert_eq!(
            seen.lock().unwrap().len(),
            2,
            "sessions ran on both reactor threads"
        );
        drop(clients);
        pool.shutdown();
        pool.join().unwrap();
    });
}

#[test]
fn server_handle_counts_and_closes_every_session() {
    watchdog(LIMIT, || {
        let (tx, rx) = mpsc::channel();
        let closes = Arc::new(AtomicUsize::new(0));
        let closes_in = closes.clone();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((
                Codec::default(),
                Publish {
                    handles: tx.clone(),
                    closes: closes_in.clone(),
                },
            ))
        })
        .unwrap();
        let addr = server.local_addr();
        let (reactor, id) = Running::spawn("registry", server);
        let server = ServerHandle::new(reactor.handle().clone(), id);
        let mut clients: Vec<TcpStream> = (0..10).map(|_| connect(addr)).collect();
        for _ in 0..10 {
            rx.recv_timeout(STEP).expect("a session opened");
        }
        assert_eq!(server.session_count().unwrap(), 10);
        // One session ends on its own; the server forgets it.
        drop(clients.pop());
        let deadline = Instant::now() + STEP;
        while server.session_count().unwrap() != 9 {
            assert!(
                Instant::now() < deadline,
                "the ended session is still counted"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        server.close_sessions().unwrap();
        for mut c in clients {
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).expect("a clean close");
            assert!(rest.is_empty());
        }
        // A closing session lingers until its peer's EOF: the last clients' drops above
        // end their sessions a moment later.
        let deadline = Instant::now() + STEP;
        while server.session_count().unwrap() != 0 || closes.load(Ordering::SeqCst) != 10 {
            assert!(
                Instant::now() < deadline,
                "{} sessions still counted, {} closes told",
                server.session_count().unwrap(),
                closes.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Still listening: a new connection opens a session.
        let _late = connect(addr);
        rx.recv_timeout(STEP).expect("the server still accepts");
        reactor.stop();
    });
}

#[test]
fn metrics_count_sessions_bytes_messages_and_errors() {
    watchdog(LIMIT, || {
        let (server, addr, _handles, closes) =
            publishing_server(SessionOptions::default().max_message_len(1024));
        let mut good = connect(addr);
        good.write_all(&frame(b"0123456789")).unwrap();
        let mut bad = connect(addr);
        bad.write_all(&(1u32 << 20).to_be_bytes()).unwrap(); // declares 1 MiB: refused
        let mut rest = Vec::new();
        let _ = bad.read_to_end(&mut rest);
        let deadline = Instant::now() + STEP;
        let m = loop {
            let m = Metrics::of(server.handle()).unwrap();
            if m.messages_in == 1 && m.errors_bad_input == 1 {
                break m;
            }
            assert!(Instant::now() < deadline, "metrics never caught up: {m:?}");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(m.accepted, 2);
        assert_eq!(m.sessions_opened, 2);
        assert_eq!(m.sessions_closed, 1);
        assert_eq!(m.sessions_open(), 1);
        assert_eq!(m.bytes_in, 14 + 4);
        assert_eq!(closes.load(Ordering::SeqCst), 1);
        assert!(m.reactor.turns > 0 && m.reactor.turn_latency.count() > 0);
        drop(good);
        server.stop();
    });
}

/// Hands every message to an offload pool; the worker replies through the session handle.
struct Offloaded {
    pool: Offload,
    refused: Arc<AtomicUsize>,
}

impl Handler<Codec> for Offloaded {
    fn on_message(&mut self, s: &mut Session<Codec>, msg: Bytes) {
        let handle = s.handle().expect("inside a callback");
        let job = move || {
            // Uneven work, so a pool without per-session order would reorder replies.
            let n = msg.first().copied().unwrap_or(0);
            std::thread::sleep(Duration::from_micros(u64::from(n % 7) * 100));
            let _ = handle.write(msg);
        };
        if let Err(e) = self.pool.submit(s.id(), job) {
            assert!(matches!(e, Error::Backpressure));
            self.refused.fetch_add(1, Ordering::SeqCst);
            let _ = s.write(Bytes::from_static(b"busy"));
        }
    }
}

#[test]
fn offload_keeps_per_session_order() {
    watchdog(LIMIT, || {
        let pool = Offload::new(4, 1024).unwrap();
        let refused = Arc::new(AtomicUsize::new(0));
        let (p, r) = (pool.clone(), refused.clone());
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((
                Codec::default(),
                Offloaded {
                    pool: p.clone(),
                    refused: r.clone(),
                },
            ))
        })
        .unwrap();
        let addr = server.local_addr();
        let reactor = Running::serve("offload", server);
        let clients: Vec<_> = (0..8)
            .map(|c| {
                std::thread::spawn(move || {
                    let mut s = connect(addr);
                    let sent: Vec<Vec<u8>> = (0..200u32)
                        .map(|i| (i * 31 + c).to_be_bytes().to_vec())
                        .collect();
                    for m in &sent {
                        s.write_all(&frame(m)).unwrap();
                    }
                    for m in &sent {
                        assert_eq!(&read_frame(&mut s), m, "replies out of order");
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().expect("a client");
        }
        assert_eq!(refused.load(Ordering::SeqCst), 0);
        reactor.stop();
        pool.shutdown();
        assert!(matches!(pool.submit(1, || {}), Err(Error::Closed)));
    });
}

#[test]
fn a_full_offload_queue_pushes_back() {
    let pool = Offload::new(1, 1).unwrap();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel();
    pool.submit(0, move || {
        started_tx.send(()).unwrap();
        release_rx.recv_timeout(STEP).unwrap();
    })
    .unwrap();
    started_rx.recv_timeout(STEP).unwrap(); // the worker is busy
    pool.submit(0, || {}).unwrap(); // fills the one-job queue
    assert!(matches!(pool.submit(0, || {}), Err(Error::Backpressure)));
    release_tx.send(()).unwrap();
    pool.shutdown();
}

#[test]
fn handles_see_backpressure_and_wait_for_writability() {
    watchdog(LIMIT, || {
        let options = SessionOptions::default().watermarks(64 * 1024, 16 * 1024);
        let (server, addr, handles_rx, _) = publishing_server(options);
        let mut peer = common::connect_with_recv_buffer(addr, 4096);
        let handle = handles_rx.recv_timeout(STEP).unwrap();
        // Nobody reads: the queue climbs past the high watermark and the handle refuses.
        let chunk = Bytes::from(vec![7u8; 16 * 1024]);
        let deadline = Instant::now() + STEP;
        let mut accepted = 0usize;
        loop {
            match handle.write(chunk.clone()) {
                Ok(()) => accepted += 1,
                Err(Error::Backpressure) => break,
                Err(e) => panic!("unexpected {e}"),
            }
            assert!(Instant::now() < deadline, "never pushed back");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!handle.is_writable());
        assert!(matches!(
            handle.wait_writable(Duration::from_millis(50)),
            Err(Error::Backpressure)
        ));
        // Reading drains the queue; the handle hears it.
        let reader = std::thread::spawn(move || {
            let mut total = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = peer.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
            }
            total
        });
        handle.wait_writable(STEP).expect("writable again");
        handle.close().unwrap();
        let total = reader.join().unwrap();
        assert_eq!(
            total,
            accepted * (chunk.len() + 4),
            "every accepted write arrived"
        );
        server.stop();
    });
}

/// Publishes the endpoint's handle when it opens.
struct PublishDatagram(Sender<getty::udp::DatagramHandle<RawCodec>>);

impl getty::udp::DatagramHandler<RawCodec> for PublishDatagram {
    fn on_open(&mut self, s: &mut getty::udp::DatagramSession<RawCodec>) -> std::io::Result<()> {
        let _ = self.0.send(s.handle().expect("inside a callback"));
        Ok(())
    }
    fn on_message(
        &mut self,
        _: &mut getty::udp::DatagramSession<RawCodec>,
        _: Bytes,
        _: SocketAddr,
    ) {
    }
}

#[test]
fn threads_write_datagrams_through_an_endpoint_handle_in_order() {
    watchdog(LIMIT, || {
        const WRITERS: usize = 4;
        const PER_WRITER: usize = 200;
        let (tx, rx) = mpsc::channel();
        let endpoint = getty::udp::UdpEndpoint::bind("127.0.0.1:0", move |_| {
            Ok((RawCodec, PublishDatagram(tx.clone())))
        })
        .unwrap();
        let reactor = Running::serve("udp-handles", endpoint);
        let handle = rx.recv_timeout(STEP).expect("the endpoint opened");
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&peer)
            .set_recv_buffer_size(4 << 20)
            .unwrap();
        peer.set_read_timeout(Some(STEP)).unwrap();
        let to = peer.local_addr().unwrap();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let handle = handle.clone();
                std::thread::spawn(move || {
                    for seq in 0..PER_WRITER {
                        let msg = Bytes::from(format!("{w}:{seq}"));
                        let deadline = Instant::now() + STEP;
                        while let Err(e) = handle.write_to(to, msg.clone()) {
                            assert!(matches!(e, Error::Backpressure), "{e}");
                            assert!(Instant::now() < deadline, "never writable again");
                            let _ = handle.wait_writable(Duration::from_millis(50));
                        }
                    }
                })
            })
            .collect();
        let mut next = [0usize; WRITERS];
        let mut buf = [0u8; 64];
        for _ in 0..WRITERS * PER_WRITER {
            let (n, _) = peer.recv_from(&mut buf).expect("a datagram");
            let text = std::str::from_utf8(&buf[..n]).unwrap();
            let (w, seq) = text.split_once(':').unwrap();
            let (w, seq): (usize, usize) = (w.parse().unwrap(), seq.parse().unwrap());
            assert_eq!(seq, next[w], "writer {w}'s datagrams out of order");
            next[w] += 1;
        }
        for w in writers {
            w.join().expect("a writer");
        }
        handle.close().unwrap();
        let deadline = Instant::now() + STEP;
        while !handle.is_closed() {
            assert!(Instant::now() < deadline, "the endpoint never closed");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(
            handle.write_to(to, Bytes::from_static(b"late")),
            Err(Error::Closed)
        ));
        reactor.stop();
    });
}
