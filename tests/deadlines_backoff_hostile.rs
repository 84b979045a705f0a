//! Hostile checks over real loopback sockets: copies `write_bytes` makes for a sender
//! whose peer reads; hostile servers that make the client end at once (the backoff holds);
//! and deadlines a stream entry sets after a slow callback (they count from when they are
//! set).
//!
//! Written as a hostile review. Four tests failed then, each showing a defect since fixed:
//! - `a_write_stall_after_a_slow_callback_gets_its_whole_timeout`,
//!   `a_linger_after_a_slow_callback_gets_its_whole_timeout` and
//!   `a_tls_handshake_after_a_slow_on_open_gets_its_whole_timeout`: deadlines set after
//!   user code counted from the clock the call began with (about 200 ms of 1 s left after
//!   an 800 ms callback);
//! - `a_server_that_alternates_quick_ends_with_replies_the_handler_panics_on_is_backed_off_from`:
//!   a session the client's handler panicked in reset the quick-end count (25 dials in 3 s).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, LengthFieldCodec, Message, MessageCodec, RawCodec};
use getty::tcp::{TcpClient, TcpServer};
use getty::ws::{Ws, WsClient};
use getty::{Error, Handler, Session, SessionOptions, SocketOptions};

const TEST_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// 1. write_bytes on a queue the peer drains
// ---------------------------------------------------------------------------------------

/// Streams `chunks` fresh buffers of `chunk` bytes through `write_bytes`, as a file sender
/// under watermark flow control does: while writable, then again when writability comes
/// back. It keeps a clone of each: unique right after `write_bytes` means it was copied.
struct Streamer {
    chunk: usize,
    chunks: usize,
    sent: usize,
    copies: Arc<AtomicUsize>,
    views: Arc<AtomicUsize>,
}

impl Streamer {
    fn pump(&mut self, s: &mut Session<RawCodec>) {
        while self.sent < self.chunks && s.is_writable() {
            let chunk = Bytes::from(vec![(self.sent % 251) as u8; self.chunk]);
            let probe = chunk.clone();
            s.write_bytes(chunk).unwrap();
            if probe.is_unique() {
                self.copies.fetch_add(1, Ordering::Relaxed);
            } else {
                self.views.fetch_add(1, Ordering::Relaxed);
            }
            self.sent += 1;
        }
        if self.sent == self.chunks {
            s.close();
        }
    }
}

impl Handler<RawCodec> for Streamer {
    fn on_open(&mut self, s: &mut Session<RawCodec>) -> std::io::Result<()> {
        self.pump(s);
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {}
    fn on_writability_changed(&mut self, s: &mut Session<RawCodec>, writable: bool) {
        if writable {
            self.pump(s);
        }
    }
}

/// Streams `total` bytes in `chunk`s with `watermarks` to a reader that reads as fast as
/// it can; returns (copies, chunks, MB/s).
fn stream_file(chunk: usize, total: usize, watermarks: (usize, usize)) -> (usize, usize, f64) {
    let chunks = total / chunk;
    let copies = Arc::new(AtomicUsize::new(0));
    let views = Arc::new(AtomicUsize::new(0));
    let (c, v) = (copies.clone(), views.clone());
    let server = TcpServer::builder()
        .session_options(SessionOptions::default().watermarks(watermarks.0, watermarks.1))
        .bind("127.0.0.1:0", move |_| {
            Ok((
                RawCodec,
                Streamer {
                    chunk,
                    chunks,
                    sent: 0,
                    copies: c.clone(),
                    views: v.clone(),
                },
            ))
        })
        .unwrap();
    let addr = server.local_addr();
    let server = Running::serve("review-c-streamer", server);
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0usize;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Spot checks: the first and last byte of each read are where they belong.
                for at in [0, n - 1] {
                    let expected = (((got + at) / chunk) % 251) as u8;
                    assert_eq!(buf[at], expected, "byte {} out of place", got + at);
                }
                got += n;
            }
            Err(e) => panic!("read after {got} bytes: {e}"),
        }
    }
    let took = start.elapsed();
    server.stop();
    assert_eq!(got, chunk * chunks);
    let copies = copies.load(Ordering::Relaxed);
    assert_eq!(copies + views.load(Ordering::Relaxed), chunks);
    (copies, chunks, got as f64 / took.as_secs_f64() / 1e6)
}

/// A large-file sender under the default watermarks whose peer reads as fast as loopback
/// allows: its queue drains, and `write_bytes` queues (nearly) every chunk uncopied (0 of
/// 128 chunks of 256 KiB, 0 to 8 of 2,048 of 16 KiB at review time). With watermarks
/// raised past 64 KiB, most chunks are copied (120 of 128): the price of the rule that
/// bounds what views behind a long queue pin (see `Outbound::keeps_views`).
#[test]
fn a_file_sender_whose_peer_reads_gets_its_write_bytes_chunks_queued_uncopied() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let cases = [
            (
                "256 KiB chunks, default watermarks",
                256 << 10,
                (64 << 10, 32 << 10),
            ),
            (
                "16 KiB chunks, default watermarks",
                16 << 10,
                (64 << 10, 32 << 10),
            ),
        ];
        let mut worst = 0.0f64;
        for (what, chunk, marks) in cases {
            let (copies, chunks, rate) = stream_file(chunk, 32 << 20, marks);
            println!("{what}: {copies} of {chunks} chunks copied ({rate:.0} MB/s)");
            worst = worst.max(copies as f64 / chunks as f64);
        }
        assert!(
            worst <= 0.25,
            "up to {:.0}% of the chunks were copied although the peer read them all",
            worst * 100.0
        );
    });
}

// ---------------------------------------------------------------------------------------
// 2. Hostile servers and the quick-end backoff
// ---------------------------------------------------------------------------------------

struct Quiet;

impl Handler<MessageCodec, Ws> for Quiet {
    fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {}
}

impl Handler<LengthFieldCodec> for Quiet {
    fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, _: Bytes) {}
}

/// Reads an HTTP upgrade request, answers 101.
fn answer_upgrade(sock: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match sock.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let key = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let _ = sock.write_all(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .as_bytes(),
    );
}

/// Accepts on `listener` for 3 s; each connection gets `greet` (after a WebSocket 101 when
/// `ws`), then the server reads until the client ends it. Returns the dials.
fn hostile_server(listener: TcpListener, ws: bool, greet: &[u8]) -> usize {
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut dials = 0;
    while start.elapsed() < Duration::from_secs(3) {
        match listener.accept() {
            Ok((mut sock, _)) => {
                dials += 1;
                sock.set_nonblocking(false).unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(1500)))
                    .unwrap();
                if ws {
                    answer_upgrade(&mut sock);
                }
                let _ = sock.write_all(greet);
                let mut sink = [0u8; 4096];
                let until = Instant::now() + Duration::from_millis(1500);
                while Instant::now() < until {
                    match sock.read(&mut sink) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    dials
}

/// Counts a client's dials of a hostile server over 3 s.
type DialCount = fn() -> usize;

fn ws_dials(name: &str, greet: &[u8]) -> usize {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = WsClient::builder()
        .session_options(SessionOptions::default().max_message_len(64 * 1024))
        .build(&format!("ws://{addr}/"), |_| Ok((MessageCodec, Quiet)))
        .unwrap();
    let client = Running::serve(name, client);
    let dials = hostile_server(listener, true, greet);
    client.stop();
    dials
}

fn tcp_dials(name: &str, greet: &[u8]) -> usize {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpClient::builder()
        .session_options(SessionOptions::default().max_message_len(64 * 1024))
        .build(addr, |_| Ok((LengthFieldCodec::default(), Quiet)))
        .unwrap();
    let client = Running::serve(name, client);
    let dials = hostile_server(listener, false, greet);
    client.stop();
    dials
}

/// Servers that make the client's framework end the session at once (a close frame, an
/// oversized or malformed frame, a length over `max_message_len`, garbage): each is a
/// quick end the peer caused, so the default backoff holds the client to a few dials in
/// 3 s (at the shortest delay it would be 30 or more).
#[test]
fn servers_that_make_the_client_end_at_once_are_backed_off_from() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        // The five watch their clients over the same 3 s, each on threads of its own.
        let cases: [(&str, DialCount); 5] = [
            // A close frame (1000) right behind the 101.
            ("ws close frame", || {
                ws_dials("rc-ws-close", &[0x88, 0x02, 0x03, 0xe8])
            }),
            // A binary frame announcing 1 MiB, over max_message_len.
            ("ws oversized frame", || {
                ws_dials("rc-ws-big", &[0x82, 127, 0, 0, 0, 0, 0, 0x10, 0, 0])
            }),
            // A reserved opcode.
            ("ws reserved opcode", || ws_dials("rc-ws-op", &[0x83, 0x00])),
            // A masked frame from a server.
            ("ws masked server frame", || {
                ws_dials("rc-ws-mask", &[0x82, 0x81, 1, 2, 3, 4, 5])
            }),
            // A length prefix over max_message_len.
            ("tcp oversized length", || {
                tcp_dials("rc-tcp-big", &[0x7f, 0xff, 0xff, 0xff])
            }),
        ];
        let results: Vec<(&str, usize)> = std::thread::scope(|scope| {
            let watches: Vec<_> = cases
                .iter()
                .map(|&(what, dials)| (what, scope.spawn(dials)))
                .collect();
            watches
                .into_iter()
                .map(|(what, watch)| (what, watch.join().unwrap()))
                .collect()
        });
        for (what, dials) in &results {
            println!("{what}: {dials} dials in 3 s");
        }
        for (what, dials) in &results {
            assert!(*dials <= 8, "{what}: {dials} dials in 3 s: not backed off");
        }
    });
}

/// A client whose handler panics on a reply it cannot parse (an `unwrap` on the server's
/// input): the reactor catches it and ends the session, which is not `EndedByPeer`.
struct PanicsOnReply;

impl Handler<LengthFieldCodec> for PanicsOnReply {
    fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, m: Bytes) {
        let _: u32 = std::str::from_utf8(&m).unwrap().parse().unwrap();
    }
}

/// A server that alternates: every other connection it drops at once (a quick end), and
/// answers the others with a reply the client's handler panics on. A panic is not a close
/// the client chose, so it does not reset the quick-end count, and the FIN ends hold the
/// client to a few dials in 3 s. When a panicked session counted as this side's close,
/// the backoff never built: 25 dials in 3 s.
#[test]
fn a_server_that_alternates_quick_ends_with_replies_the_handler_panics_on_is_backed_off_from() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpClient::builder()
            .build(addr, |_| Ok((LengthFieldCodec::default(), PanicsOnReply)))
            .unwrap();
        let client = Running::serve("review-c-panics", client);
        listener.set_nonblocking(true).unwrap();
        let start = Instant::now();
        let mut dials = 0;
        while start.elapsed() < Duration::from_secs(3) {
            match listener.accept() {
                Ok((mut sock, _)) => {
                    dials += 1;
                    sock.set_nonblocking(false).unwrap();
                    sock.set_read_timeout(Some(Duration::from_millis(1500)))
                        .unwrap();
                    if dials % 2 == 0 {
                        let _ = sock.write_all(&[0, 0, 0, 3, b'n', b'a', b'n']);
                    } else {
                        let _ = sock.shutdown(std::net::Shutdown::Write);
                    }
                    let mut sink = [0u8; 256];
                    let until = Instant::now() + Duration::from_millis(1500);
                    while Instant::now() < until {
                        match sock.read(&mut sink) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        let still_running = client.entry_count();
        client.stop();
        println!("{dials} dials in 3 s; client entries left: {still_running}");
        assert!(dials <= 10, "{dials} dials in 3 s: not backed off");
    });
}

// ---------------------------------------------------------------------------------------
// 3. Deadlines from the clock the call began with
// ---------------------------------------------------------------------------------------

/// On its first message: works for `busy` (a slow callback), then queues 3 MiB to a peer
/// that does not read and reports when it did; reports when the session failed, and how.
struct SlowThenFlood {
    busy: Duration,
    tx: Sender<(&'static str, Instant, String)>,
}

impl Handler<RawCodec> for SlowThenFlood {
    fn on_message(&mut self, s: &mut Session<RawCodec>, _: Bytes) {
        if s.queued_bytes() > 0 {
            return;
        }
        std::thread::sleep(self.busy);
        let _ = self.tx.send(("wrote", Instant::now(), String::new()));
        s.write_bytes(vec![1u8; 3 << 20]).unwrap();
    }
    fn on_error(&mut self, _: &mut Session<RawCodec>, e: &Error) {
        let _ = self.tx.send(("error", Instant::now(), e.to_string()));
    }
}

/// A write stall counts from the flush that left output queued. A flush behind an 800 ms
/// callback was stamped with the call's start, so a 1 s write-stall timeout fired about
/// 200 ms after the write.
#[test]
fn a_write_stall_after_a_slow_callback_gets_its_whole_timeout() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, rx) = mpsc::channel();
        let stall = Duration::from_secs(1);
        let server = TcpServer::builder()
            .session_options(
                SessionOptions::default()
                    .write_stall_timeout(stall)
                    .max_outbound(8 << 20),
            )
            .socket_options(SocketOptions::default().send_buffer_size(Some(16 * 1024)))
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    RawCodec,
                    SlowThenFlood {
                        busy: Duration::from_millis(800),
                        tx: tx.clone(),
                    },
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-c-stall", server);
        let mut client = connect_with_recv_buffer(addr, 4096);
        client.write_all(b"go").unwrap();
        let (_, wrote, _) = rx.recv_timeout(STEP).expect("the write");
        let (what, failed, error) = rx.recv_timeout(STEP).expect("the stall");
        server.stop();
        drop(client);
        let after = failed.saturating_duration_since(wrote);
        println!("{what} {error:?} {after:?} after the write (write-stall timeout {stall:?})");
        assert!(
            after >= stall - Duration::from_millis(50),
            "the stall fired {after:?} after the write, before its {stall:?}"
        );
    });
}

/// On its first message: works for `busy`, answers, and closes; reports when it closed.
struct SlowThenClose {
    busy: Duration,
    tx: Sender<Instant>,
}

impl Handler<RawCodec> for SlowThenClose {
    fn on_message(&mut self, s: &mut Session<RawCodec>, _: Bytes) {
        if s.is_closing() {
            return;
        }
        std::thread::sleep(self.busy);
        let _ = self.tx.send(Instant::now());
        let _ = s.write("bye");
        s.close();
    }
}

/// The linger after a graceful close waits up to `linger_timeout` for the peer's EOF. A
/// close asked at the end of an 800 ms callback lingered from the call's start: with a
/// 1 s linger the socket was dropped about 200 ms after the close (`linger`'s
/// `cx.now() + linger_timeout`). The peer here keeps its side open and writes a byte
/// every 10 ms: the server's socket going away shows as a reset.
#[test]
fn a_linger_after_a_slow_callback_gets_its_whole_timeout() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, rx) = mpsc::channel();
        let linger = Duration::from_secs(1);
        let server = TcpServer::builder()
            .session_options(SessionOptions::default().linger_timeout(linger))
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    RawCodec,
                    SlowThenClose {
                        busy: Duration::from_millis(800),
                        tx: tx.clone(),
                    },
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-c-linger", server);
        let mut client = connect(addr);
        client.write_all(b"go").unwrap();
        let closed = rx.recv_timeout(STEP).expect("the close");
        // The reply and the FIN.
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        loop {
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read: {e}"),
            }
        }
        assert_eq!(got, b"bye");
        // Keep writing until the server's socket is gone (a reset, then an error).
        let mut gone = None;
        for _ in 0..500 {
            if client.write_all(b"x").is_err() {
                gone = Some(Instant::now());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        server.stop();
        let gone = gone.expect("the server never dropped the socket");
        let after = gone.saturating_duration_since(closed);
        println!("the socket went {after:?} after the close (linger timeout {linger:?})");
        assert!(
            after >= linger - Duration::from_millis(50),
            "the linger ended {after:?} after the close, before its {linger:?}"
        );
    });
}

/// Works for `busy` in `on_open`; reports when it returned, and the session's error.
struct SlowOpen {
    busy: Duration,
    tx: Sender<(&'static str, Instant, String)>,
}

impl Handler<LengthFieldCodec> for SlowOpen {
    fn on_open(&mut self, _: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        std::thread::sleep(self.busy);
        let _ = self.tx.send(("opened", Instant::now(), String::new()));
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, _: Bytes) {}
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, e: &Error) {
        let _ = self.tx.send(("error", Instant::now(), e.to_string()));
    }
}

/// A TLS session's handshake deadline is set right after `on_open` returns, from the clock
/// its call began with: behind an 800 ms `on_open`, a 1 s handshake timeout fired about
/// 200 ms after the handshake could begin (stream.rs, `cx.now() + handshake_timeout`).
/// A peer that connects and says nothing here.
#[test]
fn a_tls_handshake_after_a_slow_on_open_gets_its_whole_timeout() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let config = getty::tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
        let (tx, rx) = mpsc::channel();
        let timeout = Duration::from_secs(1);
        let server = TcpServer::builder()
            .tls(config)
            .session_options(SessionOptions::default().handshake_timeout(timeout))
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    LengthFieldCodec::default(),
                    SlowOpen {
                        busy: Duration::from_millis(800),
                        tx: tx.clone(),
                    },
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-c-handshake", server);
        let client = connect(addr);
        let (_, opened, _) = rx.recv_timeout(STEP).expect("on_open");
        let (what, failed, error) = rx.recv_timeout(STEP).expect("the timeout");
        server.stop();
        drop(client);
        let after = failed.saturating_duration_since(opened);
        println!("{what} {error:?} {after:?} after on_open returned (timeout {timeout:?})");
        assert!(
            after >= timeout - Duration::from_millis(50),
            "the handshake timed out {after:?} after on_open returned, before its {timeout:?}"
        );
    });
}
