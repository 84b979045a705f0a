//! Hostile checks of three changes, over real loopback sockets: refused and failed writes
//! take their message back (`Session::take_back`, with permessage-deflate on every write
//! path); a client backs off from sessions the peer ends soon after they open, but not from
//! its own closes; every entry call is given the time it began (`cx.now()`).
//!
//! Written as a hostile review. Two tests failed then, each showing a defect since fixed:
//! - `a_client_that_closes_its_own_sessions_is_not_backed_off_like_a_hostile_server`
//!   (the backoff counted the client's own closes);
//! - `a_write_stall_counts_from_the_write_even_behind_a_slow_job_of_the_same_batch`
//!   (commands and timers shared one stale clock read).

mod common;

use std::net::TcpListener;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::ws::DeflateConfig;
use getty::codec::{Bytes, Message, MessageCodec, RawCodec};
use getty::tcp::{TcpClient, TcpServer};
use getty::ws::{Ws, WsClient, WsServer};
use getty::{Error, Handler, Session, SessionGroup, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Refused compressed messages, every write path, both roles
// ---------------------------------------------------------------------------------------

/// The hard bound of both ends: small, so a filler brings the queue within a few hundred
/// bytes of it. The high watermark is at the bound, so the session stays writable and its
/// group broadcasts are tried (and refused) too.
const BOUND: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Method {
    Write,
    WriteBytes,
    WriteVectored,
    Broadcast,
}

const METHODS: [Method; 8] = [
    Method::Write,
    Method::WriteBytes,
    Method::WriteVectored,
    Method::Broadcast,
    Method::Broadcast,
    Method::WriteVectored,
    Method::WriteBytes,
    Method::Write,
];

/// Message `i`: compressible text (about 1 bit of entropy per byte, so some kilobytes
/// once deflated: far more than the room the filler leaves), unlike every other message,
/// so that a later copy of it that referred to a refused copy would inflate wrong.
fn t_msg(i: usize) -> Bytes {
    const WORDS: [&str; 16] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    let mut rng = fastrand::Rng::with_seed(0x7e57 + i as u64);
    let mut s = format!("T{i}:");
    while s.len() < 12_000 {
        s.push_str(WORDS[rng.usize(..WORDS.len())]);
        s.push(' ');
    }
    Bytes::from(s)
}

/// Incompressible: deflate gives up on it and sends it as it is.
fn filler(len: usize, seed: u64) -> Bytes {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    v[0] = b'F';
    Bytes::from(v)
}

/// Drives one end: every cron tick (once the queue has drained) it writes the message
/// refused at the previous tick (now accepted), then a filler that leaves about 200 bytes
/// of room, then the next message through the next method (refused, or for a broadcast,
/// retried by the session once the queue drained). It also checks what the other end sends.
struct Driver {
    role: &'static str,
    step: usize,
    pending: Option<(Method, usize)>,
    group: Option<SessionGroup<MessageCodec, Ws>>,
    refused: usize,
    done_writing: bool,
    received: usize,
    tx: Sender<Result<String, String>>,
}

impl Driver {
    fn new(role: &'static str, tx: Sender<Result<String, String>>) -> Self {
        Driver {
            role,
            step: 0,
            pending: None,
            group: None,
            refused: 0,
            done_writing: false,
            received: 0,
            tx,
        }
    }

    fn fail(&mut self, what: String) {
        self.done_writing = true;
        let _ = self.tx.send(Err(format!("{}: {what}", self.role)));
    }

    fn send(
        &mut self,
        s: &mut Session<MessageCodec, Ws>,
        method: Method,
        i: usize,
    ) -> Result<(), Error> {
        let t = t_msg(i);
        match method {
            Method::Write => s.write(Message::binary(t)),
            Method::WriteBytes => s.write_bytes(t),
            Method::WriteVectored => {
                let (a, b) = (t.slice(..5000), t.slice(5000..));
                s.write_vectored(&[a, b])
            }
            Method::Broadcast => {
                let group = self.group.as_ref().expect("joined in on_open");
                group.broadcast(Message::binary(t)).map(|_| ())
            }
        }
    }
}

impl Handler<MessageCodec, Ws> for Driver {
    fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
        let group = SessionGroup::<MessageCodec, Ws>::new(MessageCodec);
        group.join(s).map_err(std::io::Error::other)?;
        self.group = Some(group);
        Ok(())
    }

    fn on_cron(&mut self, s: &mut Session<MessageCodec, Ws>) {
        if self.done_writing || s.queued_bytes() > 0 {
            return;
        }
        if let Some((method, i)) = self.pending.take() {
            if let Err(e) = self.send(s, method, i) {
                return self.fail(format!("message {i} by {method:?} after a drain: {e}"));
            }
        }
        if self.step == METHODS.len() {
            self.done_writing = true;
            let done = format!("D{}:{}", METHODS.len(), self.refused);
            if let Err(e) = s.write(Message::binary(Bytes::from(done))) {
                self.fail(format!("the end marker: {e}"));
            }
            return;
        }
        let (i, method) = (self.step, METHODS[self.step]);
        self.step += 1;
        let header = if self.role == "client" { 14 } else { 10 };
        let room = BOUND - s.queued_bytes();
        if let Err(e) = s.write_bytes(filler(room - 200 - header, i as u64)) {
            return self.fail(format!("filler {i}: {e}"));
        }
        match self.send(s, method, i) {
            Err(Error::QueueFull { .. }) if method != Method::Broadcast => {
                self.refused += 1;
                self.pending = Some((method, i));
            }
            Ok(()) if method == Method::Broadcast => {}
            other => self.fail(format!(
                "message {i} by {method:?} behind the filler: {other:?}"
            )),
        }
    }

    fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
        let payload = msg.into_payload();
        match payload.first() {
            Some(b'F') => {}
            Some(b'T') => {
                let head = &payload[..payload.len().min(12)];
                let text = String::from_utf8_lossy(head);
                let i: Option<usize> = text[1..].split(':').next().and_then(|n| n.parse().ok());
                match i {
                    Some(i) if payload == t_msg(i) => self.received += 1,
                    _ => {
                        let what = format!(
                            "message {} from the peer inflated wrong: {:?}",
                            self.received,
                            String::from_utf8_lossy(&payload[..payload.len().min(80)])
                        );
                        self.fail(what);
                        s.close();
                    }
                }
            }
            Some(b'D') => {
                let verdict = if self.received == METHODS.len() {
                    Ok(format!(
                        "{} got all {} messages ({})",
                        self.role,
                        self.received,
                        String::from_utf8_lossy(&payload)
                    ))
                } else {
                    Err(format!(
                        "{} got {} messages of {} ({})",
                        self.role,
                        self.received,
                        METHODS.len(),
                        String::from_utf8_lossy(&payload)
                    ))
                };
                let _ = self.tx.send(verdict);
            }
            _ => self.fail(format!("an unexpected message of {} B", payload.len())),
        }
    }

    fn on_error(&mut self, _: &mut Session<MessageCodec, Ws>, error: &Error) {
        let _ = self
            .tx
            .send(Err(format!("{}: the session failed: {error}", self.role)));
    }
}

fn driver_options() -> SessionOptions {
    SessionOptions::default()
        .cron_period(Some(Duration::from_millis(10)))
        .max_outbound(BOUND)
        .watermarks(BOUND, BOUND / 4)
}

/// End to end: with permessage-deflate (context takeover) on both ends,
/// each end refuses one compressed message per write path (`write`, `write_bytes`,
/// `write_vectored`, and a group broadcast, which the session retries once its queue
/// drained), then sends it again. Had a refused message stayed in the compressor's window,
/// its accepted copy would be deflated as a back-reference to bytes the peer never got and
/// inflate wrong. Both the server (unmasked) and the client (masked) check every message
/// the other sends.
#[test]
fn refused_compressed_messages_leave_later_ones_intact_on_every_write_path() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, rx) = std::sync::mpsc::channel();
        let server_tx = tx.clone();
        let server = WsServer::builder()
            .deflate(Some(DeflateConfig::default()))
            .session_options(driver_options())
            .route("/", move |_| {
                Ok((MessageCodec, Driver::new("server", server_tx.clone())))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let url = format!("ws://{}/", server.local_addr());
        let server = Running::serve("review-deflate-server", server);
        let client = WsClient::builder()
            .deflate(Some(DeflateConfig::default()))
            .session_options(driver_options())
            .max_consecutive_failures(Some(1))
            .build(&url, move |_| {
                Ok((MessageCodec, Driver::new("client", tx.clone())))
            })
            .unwrap();
        let client = Running::serve("review-deflate-client", client);
        let mut verdicts = Vec::new();
        while verdicts.len() < 2 {
            let verdict = rx.recv_timeout(STEP).expect("both ends' verdicts");
            println!("{verdict:?}");
            verdicts.push(verdict.unwrap_or_else(|e| panic!("{e}")));
        }
        // Each end refused its six non-broadcast messages (a broadcast's refusal is the
        // session's own, unseen here).
        for v in &verdicts {
            assert!(v.contains(&format!("D{}:6", METHODS.len())), "{v}");
        }
        client.stop();
        server.stop();
    });
}

// ---------------------------------------------------------------------------------------
// Quick ends and the redial backoff
// ---------------------------------------------------------------------------------------

/// A request per connection: writes a request on open and closes its own session once the
/// answer comes (the doc of `Session::close` says the client then dials a new one).
struct OneShot {
    tx: Sender<Instant>,
}

impl Handler<RawCodec> for OneShot {
    fn on_open(&mut self, s: &mut Session<RawCodec>) -> std::io::Result<()> {
        let _ = self.tx.send(Instant::now());
        s.write("request").map_err(std::io::Error::other)
    }

    fn on_message(&mut self, s: &mut Session<RawCodec>, _: Bytes) {
        s.close();
    }
}

struct Echo;

impl Handler<RawCodec> for Echo {
    fn on_message(&mut self, s: &mut Session<RawCodec>, m: Bytes) {
        let _ = s.write(m);
    }
}

/// Only sessions the peer (or an error) ends soon after they open back a client off, not
/// ones its own handler closes after an exchange with a healthy server: a
/// request-per-connection client (or one that closes to reconnect) keeps a new session
/// every 50 to 100 ms, at least 10 in 3 s. When every quick end counted, it was slowed to
/// one every 2.5 to 5 s (the default cap) after a handful: 5 sessions in 3 s.
#[test]
fn a_client_that_closes_its_own_sessions_is_not_backed_off_like_a_hostile_server() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let server = TcpServer::bind("127.0.0.1:0", |_| Ok((RawCodec, Echo))).unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-echo-server", server);
        let (tx, rx) = std::sync::mpsc::channel();
        let client = TcpClient::builder()
            .build(addr, move |_| Ok((RawCodec, OneShot { tx: tx.clone() })))
            .unwrap();
        let client = Running::serve("review-oneshot-client", client);
        let start = Instant::now();
        let mut opens = Vec::new();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(at) = rx.recv_timeout(Duration::from_millis(50)) {
                opens.push(at.duration_since(start));
            }
        }
        client.stop();
        server.stop();
        let gaps: Vec<_> = opens
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        println!(
            "{} sessions in 3 s; gaps between them (ms): {gaps:?}",
            opens.len()
        );
        assert!(
            opens.len() >= 10,
            "{} sessions in 3 s against a healthy server; gaps (ms): {gaps:?}",
            opens.len()
        );
    });
}

/// The flip side, pinned: a client of a server that accepts and closes every connection at
/// once keeps dialling with a bounded delay (the cap, 5 s by default, and no more), so a
/// server that turns healthy again is reached within the cap; the first session that then
/// lasts a second resets the backoff once it ends. Here the backoff is 20 ms to 400 ms:
/// after 12 quick ends the server turns healthy and a session must open within the cap (plus
/// slack), and after it lasted 1.2 s and was closed by the server, the next one must open
/// within the minimum delay (plus slack), not the cap.
#[test]
fn after_quick_ends_a_healthy_server_is_redialled_within_the_cap_and_a_lasting_session_resets_it() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, _events) = Events::new();
        let client = TcpClient::builder()
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(400))
            .build(addr, move |_| Ok((RawCodec, Probe::silent(&tx))))
            .unwrap();
        let client = Running::serve("review-quick-end-client", client);
        listener
            .set_nonblocking(false)
            .expect("blocking accepts, bounded by the watchdog");
        let mut last = Instant::now();
        for _ in 0..12 {
            let (stream, _) = listener.accept().unwrap();
            last = Instant::now();
            drop(stream);
        }
        // Healthy now: the next session is kept.
        let (kept, _) = listener.accept().unwrap();
        let waited = last.elapsed();
        println!("after 12 quick ends, the next dial came {waited:?} later");
        assert!(waited < Duration::from_millis(400 + 300), "{waited:?}");
        std::thread::sleep(Duration::from_millis(1200));
        drop(kept);
        let closed = Instant::now();
        let (_next, _) = listener.accept().unwrap();
        let waited = closed.elapsed();
        println!("after a session that lasted 1.2 s, the next dial came {waited:?} later");
        assert!(waited < Duration::from_millis(20 + 150), "{waited:?}");
        client.stop();
    });
}

/// The client side of a TLS session: counts its opens.
struct TlsCounter {
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Handler<RawCodec> for TlsCounter {
    fn on_open(&mut self, _: &mut Session<RawCodec>) -> std::io::Result<()> {
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {}
}

/// One connection of a hostile TLS 1.3 server (rustls, blocking): it reads the ClientHello,
/// then sends its whole flight (ServerHello to Finished), a close_notify right behind it,
/// and its FIN, in one burst; so the client completes its handshake and sees the server's
/// goodbye in the same read. Returns whether the exchange got that far.
fn hostile_tls_connection(
    mut sock: std::net::TcpStream,
    config: &std::sync::Arc<getty::codec::rustls::ServerConfig>,
) -> bool {
    use std::io::Write;
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let Ok(mut conn) = getty::codec::rustls::ServerConnection::new(config.clone()) else {
        return false;
    };
    for _ in 0..20 {
        if conn.wants_write() {
            break;
        }
        match conn.read_tls(&mut sock) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if conn.process_new_packets().is_err() {
            return false;
        }
    }
    conn.send_close_notify();
    let mut burst = Vec::new();
    while conn.wants_write() {
        if conn.write_tls(&mut burst).is_err() {
            return false;
        }
    }
    let sent = sock.write_all(&burst).is_ok();
    let _ = sock.shutdown(std::net::Shutdown::Write);
    // Let the client read it all before the socket goes.
    let mut sink = [0u8; 4096];
    let _ = std::io::Read::read(&mut sock, &mut sink);
    sent
}

/// Over TLS: a server that completes its handshake and closes at once (its
/// flight, a close_notify and its FIN in one burst, so the client's handshake ends in the
/// same read as the server's goodbye) is backed off from as over plain TCP (3 to 6 dials
/// in 3 s with the default backoff, as
/// clients::a_client_backs_off_from_a_server_that_closes_every_connection_at_once asserts),
/// without ending the client (a limit of 2 failures). It guards the path where the
/// session's end could overtake its `Opened` note (sent from `settle` once the handshake is
/// done): then the client would count neither a failure nor a quick end, and redial every
/// 50 to 100 ms for ever. It passes: the note goes first.
#[test]
fn a_tls_server_that_closes_right_after_its_handshake_is_backed_off_from() {
    use getty::tls;
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let server_config = tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let client_opened = opened.clone();
        let client = TcpClient::builder()
            .tls(tls::client_config(chain.as_bytes()).unwrap(), "localhost")
            .max_consecutive_failures(Some(2))
            .build(addr, move |_| {
                Ok((
                    RawCodec,
                    TlsCounter {
                        opened: client_opened.clone(),
                    },
                ))
            })
            .unwrap();
        let client = Running::serve("review-tls-close-client", client);
        let start = Instant::now();
        let (mut dials, mut completed) = (0, 0);
        while start.elapsed() < Duration::from_secs(3) {
            match listener.accept() {
                Ok((sock, _)) => {
                    dials += 1;
                    sock.set_nonblocking(false).unwrap();
                    completed += usize::from(hostile_tls_connection(sock, &server_config));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        let still_running = client.entry_count();
        client.stop();
        println!(
            "{dials} TLS dials in 3 s ({completed} got the flight and the goodbye); {} opened on \
             the client; client entries left: {still_running}",
            opened.load(std::sync::atomic::Ordering::Relaxed)
        );
        assert!(still_running > 0, "the client gave up");
        assert!((3..=6).contains(&dials), "{dials} TLS dials in 3 s");
    });
}

/// A WebSocket server session that closes as it opens (a close frame right behind the 101).
struct WsCloseAtOnce;

impl Handler<MessageCodec, Ws> for WsCloseAtOnce {
    fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
        s.close();
        Ok(())
    }

    fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {}
}

struct WsCounter {
    tx: Sender<Instant>,
}

impl Handler<MessageCodec, Ws> for WsCounter {
    fn on_open(&mut self, _: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
        let _ = self.tx.send(Instant::now());
        Ok(())
    }

    fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {}
}

/// For WebSocket clients: a server that upgrades and closes at once (the close
/// frame may come in the same read as the 101) is backed off from (3 to 6 sessions in 3 s)
/// and does not end the client (a limit of 2 failures).
#[test]
fn a_ws_server_that_closes_right_after_the_upgrade_is_backed_off_from() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let server = WsServer::builder()
            .route("/", |_| Ok((MessageCodec, WsCloseAtOnce)))
            .bind("127.0.0.1:0")
            .unwrap();
        let url = format!("ws://{}/", server.local_addr());
        let server = Running::serve("review-ws-close-server", server);
        let (tx, rx) = std::sync::mpsc::channel();
        let client = WsClient::builder()
            .max_consecutive_failures(Some(2))
            .build(&url, move |_| {
                Ok((MessageCodec, WsCounter { tx: tx.clone() }))
            })
            .unwrap();
        let client = Running::serve("review-ws-close-client", client);
        let start = Instant::now();
        let mut opens = 0;
        while start.elapsed() < Duration::from_secs(3) {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                opens += 1;
            }
        }
        let still_running = client.entry_count();
        client.stop();
        server.stop();
        println!("{opens} WebSocket sessions in 3 s; client entries left: {still_running}");
        assert!(still_running > 0, "the client gave up");
        assert!((3..=6).contains(&opens), "{opens} sessions in 3 s");
    });
}

// ---------------------------------------------------------------------------------------
// The clock commands and timers are given
// ---------------------------------------------------------------------------------------

/// Sends its session's handle to the test, and the time its write stall failed it.
struct StallWatch {
    handle_tx: Sender<getty::SessionHandle<RawCodec>>,
    stalled_tx: Sender<Instant>,
}

impl Handler<RawCodec> for StallWatch {
    fn on_open(&mut self, s: &mut Session<RawCodec>) -> std::io::Result<()> {
        let _ = self.handle_tx.send(s.handle().expect("in a callback"));
        Ok(())
    }

    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {}

    fn on_error(&mut self, _: &mut Session<RawCodec>, error: &Error) {
        if matches!(error, Error::WriteStalled(_)) {
            let _ = self.stalled_tx.send(Instant::now());
        }
    }
}

/// A handle's write applied after a 300 ms job of the same batch is stamped with the time
/// its call began, so its 600 ms write stall runs its whole timeout from the write. When
/// commands and timers shared one clock read, taken before the first command, the stall
/// reset the connection 300.6 ms after the write.
#[test]
fn a_write_stall_counts_from_the_write_even_behind_a_slow_job_of_the_same_batch() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let stall = Duration::from_millis(600);
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stalled_tx, stalled_rx) = std::sync::mpsc::channel();
        let server = TcpServer::builder()
            .session_options(SessionOptions::default().write_stall_timeout(stall))
            .socket_options(getty::SocketOptions::default().send_buffer_size(Some(4096)))
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    RawCodec,
                    StallWatch {
                        handle_tx: handle_tx.clone(),
                        stalled_tx: stalled_tx.clone(),
                    },
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-stall-server", server);
        // A peer that never reads, with a small receive buffer.
        let _peer = connect_with_recv_buffer(addr, 4096);
        let handle = handle_rx.recv_timeout(STEP).expect("the session's handle");
        // One batch: a job that keeps the loop busy for 300 ms, then a write far larger
        // than the socket takes (applied once the job is done).
        let (job_done_tx, job_done_rx) = std::sync::mpsc::channel();
        // A first job keeps the loop busy while the next two are posted, so that they are
        // taken in one batch.
        let (busy_tx, busy_rx) = std::sync::mpsc::channel();
        server
            .handle()
            .execute(move |_| {
                let _ = busy_tx.send(());
                std::thread::sleep(Duration::from_millis(200));
            })
            .unwrap();
        busy_rx.recv_timeout(STEP).expect("the first job runs");
        server
            .handle()
            .execute(move |_| {
                std::thread::sleep(Duration::from_millis(300));
                let _ = job_done_tx.send(Instant::now());
            })
            .unwrap();
        handle.write_bytes(Bytes::from(vec![7u8; 2 << 20])).unwrap();
        let written_after = job_done_rx.recv_timeout(STEP).expect("the job ran");
        let stalled = stalled_rx.recv_timeout(STEP).expect("the write stall");
        let ran = stalled.duration_since(written_after);
        println!("the write was applied after the job; its {stall:?} stall fired {ran:?} later");
        server.stop();
        assert!(
            ran >= stall - Duration::from_millis(50),
            "a {stall:?} write stall fired {ran:?} after the write"
        );
    });
}

/// With `connection_number(2)` against a server that keeps one connection and
/// closes every other at once (a per-client connection limit of 1): the lasting session is
/// kept, the client does not give up (a limit of 2 failures), and the missing one is
/// redialled with backoff (3 to 6 dials in 3 s), not every 50 to 100 ms.
#[test]
fn with_two_connections_a_server_that_keeps_one_gets_the_other_redialled_with_backoff() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (tx, _events) = Events::new();
        let client = TcpClient::builder()
            .connection_number(2)
            .max_consecutive_failures(Some(2))
            .build(addr, move |_| Ok((RawCodec, Probe::silent(&tx))))
            .unwrap();
        let client = Running::serve("review-two-conn-client", client);
        let mut kept = None;
        let start = Instant::now();
        let mut closed = 0;
        while start.elapsed() < Duration::from_secs(3) {
            match listener.accept() {
                Ok((stream, _)) if kept.is_none() => kept = Some(stream),
                Ok((stream, _)) => {
                    closed += 1;
                    drop(stream);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        let mut kept = kept.expect("a session was kept");
        // The kept session is still there: the client has not closed it.
        kept.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let alive = matches!(
            std::io::Read::read(&mut kept, &mut byte),
            Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock
        );
        let still_running = client.entry_count();
        client.stop();
        println!("kept one; closed {closed} others in 3 s; kept alive: {alive}; entries: {still_running}");
        assert!(alive, "the kept session was closed");
        assert!(still_running > 0, "the client gave up");
        assert!(
            (3..=6).contains(&closed),
            "{closed} redials of the missing session in 3 s"
        );
    });
}

/// A UDP client session that closes as it opens.
struct UdpCloseAtOnce;

impl getty::udp::DatagramHandler<RawCodec> for UdpCloseAtOnce {
    fn on_open(&mut self, s: &mut getty::udp::DatagramSession<RawCodec>) -> std::io::Result<()> {
        s.close();
        Ok(())
    }

    fn on_message(
        &mut self,
        _: &mut getty::udp::DatagramSession<RawCodec>,
        _: Bytes,
        _: std::net::SocketAddr,
    ) {
    }
}

/// UDP clients (good when spawned: they record their open time at once) whose handler
/// closes each session as it opens: a close this side asked for says nothing of the peer,
/// so the client redials at its shortest delay (50 to 100 ms, each dial also waiting 20 ms
/// for an answer: at least 10 probes in 3 s), and a limit of 2 failures does not end it.
/// (Sessions that the peer or an error ends at once back the client off: the TCP, TLS and
/// WebSocket tests above.)
#[test]
fn a_udp_client_whose_handler_closes_each_session_at_once_redials_without_backing_off() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let client = getty::udp::UdpClient::builder()
            .probe_wait(Duration::from_millis(20))
            .max_consecutive_failures(Some(2))
            .build(peer.local_addr().unwrap(), |_| {
                Ok((RawCodec, UdpCloseAtOnce))
            })
            .unwrap();
        let client = Running::serve("review-udp-client", client);
        let start = Instant::now();
        let mut probes = 0;
        let mut buf = [0u8; 256];
        while start.elapsed() < Duration::from_secs(3) {
            if peer.recv_from(&mut buf).is_ok() {
                probes += 1;
            }
        }
        let still_running = client.entry_count();
        client.stop();
        println!("{probes} UDP probes in 3 s; client entries left: {still_running}");
        assert!(still_running > 0, "the client gave up");
        assert!(probes >= 10, "{probes} probes in 3 s");
    });
}
