//! Handle writes held on the reactor behind the high watermark (order, closes, aborts,
//! pauses, endings, refilling handlers, on TCP, TLS, WebSocket, groups and datagram
//! endpoints), with the pool's release of unused buffers and the ends of input on wss://
//! that changed with them.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use common::*;
use getty::codec::{Bytes, LengthFieldCodec};
use getty::reactor::{BufPool, Reactor};
use getty::tcp::TcpServer;
use getty::{Handler, Session, SessionHandle};

const LIMIT: Duration = Duration::from_secs(90);

/// Reads until the peer's end (or nothing comes for `STEP`); the bytes and whether it
/// ended.
fn drain(peer: &mut TcpStream) -> (Vec<u8>, bool) {
    peer.set_read_timeout(Some(STEP)).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match peer.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

/// The payloads of the length-prefixed frames in `bytes`, with the offset of each.
fn split_frames(bytes: &[u8]) -> Vec<(usize, &[u8])> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if at + 4 + len > bytes.len() {
            break;
        }
        frames.push((at, &bytes[at + 4..at + 4 + len]));
        at += 4 + len;
    }
    frames
}

/// A handler that produces as a pump does: in `on_writability_changed(true)` (and in
/// `on_open`) it writes 64 KiB frames while the session is writable, up to `cap` bytes in
/// all. The first time it hears the session is writable again, it posts a marker and a
/// close through a handle (the handle says writable: it was just told so), then pumps.
struct Pump {
    handle: Option<SessionHandle<LengthFieldCodec>>,
    produced: usize,
    cap: usize,
    events: Sender<String>,
}

impl Pump {
    fn pump(&mut self, s: &mut Session<LengthFieldCodec>) {
        while s.is_writable() && self.produced < self.cap {
            // Refused once the handle's close has applied.
            if s.write(Bytes::from(vec![b'p'; 64 * 1024])).is_err() {
                break;
            }
            self.produced += 4 + 64 * 1024;
        }
    }
}

impl Handler<LengthFieldCodec> for Pump {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        self.handle = s.handle();
        self.pump(s);
        Ok(())
    }
    fn on_writability_changed(&mut self, s: &mut Session<LengthFieldCodec>, writable: bool) {
        if !writable {
            return;
        }
        if let Some(handle) = self.handle.take() {
            let posted = handle
                .write(Bytes::from_static(b"MARKER"))
                .and_then(|()| handle.close());
            let _ = self
                .events
                .send(format!("posted {} {posted:?}", self.produced));
        }
        self.pump(s);
    }
    fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, _: Bytes) {}
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        let _ = self.events.send(format!("error {error}"));
    }
    fn on_close(&mut self, _: &mut Session<LengthFieldCodec>) {
        let _ = self.events.send("close".into());
    }
}

/// Handle writes held behind the high watermark "wait on the reactor until it drains to
/// the low one, then apply in order". A handler that refills the queue when it hears the
/// session is writable again (the pump pattern the watermarks are for) keeps them, and the
/// handle's `close()` behind them, waiting for as long as it produces: the marker and the
/// close come only after everything the pump made, 32 MiB later, though the session
/// drained to its low watermark a few hundred times meanwhile.
#[test]
fn held_handle_writes_are_not_starved_by_a_handler_that_refills_on_writability() {
    watchdog(LIMIT, || {
        const CAP: usize = 32 << 20;
        let (tx, events) = mpsc::channel();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((
                LengthFieldCodec::default(),
                Pump {
                    handle: None,
                    produced: 0,
                    cap: CAP,
                    events: tx.clone(),
                },
            ))
        })
        .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-today-pump", server);
        let mut peer = connect_with_recv_buffer(addr, 16 * 1024);
        // Not reading yet: the queue fills past the high watermark, the pump stops.
        std::thread::sleep(Duration::from_millis(300));
        let (got, ended) = drain(&mut peer);
        let posted = events.recv_timeout(STEP).unwrap();
        let mut fields = posted.split(' ');
        assert_eq!(fields.next(), Some("posted"), "{posted}");
        let posted_at: usize = fields.next().unwrap().parse().unwrap();
        assert!(posted.ends_with("Ok(())"), "the handle refused: {posted}");
        let frames = split_frames(&got);
        let marker = frames
            .iter()
            .find(|(_, payload)| *payload == b"MARKER")
            .map(|(at, _)| *at);
        assert!(ended, "the connection ended ({} bytes)", got.len());
        let marker = marker.expect("the marker arrived");
        assert!(
            marker < posted_at + (4 << 20),
            "the marker, posted after {posted_at} bytes, came after {marker} bytes \
             (the handler made {CAP} in all)"
        );
        server.stop();
    });
}

struct Echo;

impl Handler<LengthFieldCodec> for Echo {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, message: Bytes) {
        let _ = s.write(message);
    }
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        eprintln!("echo: on_error {error}");
    }
}

fn echo_with_pool(name: &str, pool: BufPool) -> (std::net::SocketAddr, Running) {
    let server =
        TcpServer::bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo))).unwrap();
    let addr = server.local_addr();
    let reactor = Running::serve_with(name, server, move || {
        Reactor::builder().buffer_pool(pool).build()
    });
    (addr, reactor)
}

/// Frames of mixed sizes (tiny, pooled, over twice the pooled size, near the 1 MiB limit), each
/// byte a function of the session, the frame and the offset.
fn mixed_payload(who: usize, n: usize) -> Vec<u8> {
    let len = [1usize, 700, 40_000, 65_536, 150_000, 1_000_000, 3][n % 7] + n;
    (0..len)
        .map(|k| (who * 31 + n * 7 + k % 251) as u8)
        .collect()
}

/// The pool frees what went unused through each 5 ms interval while four sessions echo
/// frames of every size, pipelined, with pauses of a few intervals between bursts: every
/// echoed byte is checked.
#[test]
fn a_short_release_interval_loses_or_corrupts_no_byte() {
    watchdog(LIMIT, || {
        let pool = BufPool::default().release_unused_after(Some(Duration::from_millis(5)));
        let (addr, reactor) = echo_with_pool("review-today-release", pool);
        std::thread::scope(|scope| {
            for who in 0..4 {
                scope.spawn(move || {
                    let mut stream = connect(addr);
                    for burst in 0..6 {
                        let sent: Vec<Vec<u8>> =
                            (0..6).map(|n| mixed_payload(who, burst * 6 + n)).collect();
                        let mut writer = stream.try_clone().unwrap();
                        let outgoing = sent.clone();
                        let send = std::thread::spawn(move || {
                            for p in &outgoing {
                                writer.write_all(&frame(p)).unwrap();
                            }
                        });
                        for (n, p) in sent.iter().enumerate() {
                            let got = read_frame(&mut stream);
                            assert_eq!(got.len(), p.len(), "session {who} burst {burst} #{n}");
                            let diff = got.iter().zip(p).position(|(a, b)| a != b);
                            assert_eq!(diff, None, "session {who} burst {burst} #{n}");
                        }
                        send.join().unwrap();
                        std::thread::sleep(Duration::from_millis(12));
                    }
                });
            }
        });
        reactor.stop();
    });
}

/// A zero interval frees every spare buffer within a turn or two, and an interval too
/// long for the clock frees none: neither may make an idle reactor turn.
#[test]
fn zero_and_endless_release_intervals_cost_an_idle_reactor_no_turns() {
    watchdog(LIMIT, || {
        for (name, interval) in [
            ("review-today-zero", Duration::ZERO),
            ("review-today-max", Duration::MAX),
        ] {
            let pool = BufPool::default().release_unused_after(Some(interval));
            let (addr, reactor) = echo_with_pool(name, pool);
            let mut stream = connect(addr);
            for n in 0..12 {
                echo_roundtrip(&mut stream, &mixed_payload(1, n));
            }
            let turns = || reactor.run_on(|s| s.loop_metrics().turns);
            std::thread::sleep(Duration::from_millis(100));
            let before = turns();
            std::thread::sleep(Duration::from_millis(500));
            let woke = turns() - before;
            assert!(woke <= 3, "{name}: an idle reactor turned {woke} times");
            for n in 12..18 {
                echo_roundtrip(&mut stream, &mixed_payload(1, n));
            }
            drop(stream);
            reactor.stop();
        }
    });
}

// ---------------------------------------------------------------------------------------
// wss://: the ends of input of TLS and of WebSocket together
// ---------------------------------------------------------------------------------------

use bytes::BytesMut;
use getty::codec::filter::{Filter, TlsFilter};
use getty::codec::RawCodec;
use getty::ws::{Ws, WsServer};

/// Answers each message with 200 KB of its first byte: a few take the queue far past the
/// high watermark, so flow control holds the later messages back.
struct WssReplies(Sender<String>);

impl Handler<RawCodec, Ws> for WssReplies {
    fn on_message(&mut self, s: &mut Session<RawCodec, Ws>, msg: Bytes) {
        let _ = self
            .0
            .send(format!("msg {}", String::from_utf8_lossy(&msg)));
        s.write_bytes(Bytes::from(vec![msg[0]; 200_000])).unwrap();
    }
    fn on_error(&mut self, _: &mut Session<RawCodec, Ws>, error: &getty::Error) {
        let _ = self.0.send(format!("error {error}"));
    }
    fn on_close(&mut self, _: &mut Session<RawCodec, Ws>) {
        let _ = self.0.send("close".into());
    }
}

/// A wss:// server of `WssReplies`, a TLS client for it and the session's events.
fn wss_server(
    name: &str,
) -> (
    Running,
    std::net::SocketAddr,
    TlsFilter,
    mpsc::Receiver<String>,
) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
    let (tx, events) = mpsc::channel();
    let server = WsServer::builder()
        .tls(getty::tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
        .route("/echo", move |_| Ok((RawCodec, WssReplies(tx.clone()))))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let config = getty::tls::client_config(chain.as_bytes()).unwrap();
    let client = TlsFilter::client(config, "localhost").unwrap();
    (Running::serve(name, server), addr, client, events)
}

/// The TLS handshake and the WebSocket upgrade at `/echo`.
fn wss_connect(addr: std::net::SocketAddr, client: &mut TlsFilter) -> TcpStream {
    let mut peer = connect_with_recv_buffer(addr, 16 * 1024);
    peer.set_read_timeout(Some(STEP)).unwrap();
    let request = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    let (mut plain, mut wire_in) = tls_exchange(&mut peer, client, request, 0);
    let mut chunk = [0u8; 16 * 1024];
    for _ in 0..1000 {
        if plain.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        let n = peer.read(&mut chunk).expect("the upgrade response");
        assert!(n > 0, "the server closed before its 101");
        wire_in.extend_from_slice(&chunk[..n]);
        client.decode(&mut wire_in, &mut plain, 1 << 20).unwrap();
    }
    assert!(plain.starts_with(b"HTTP/1.1 101"), "{plain:?}");
    let head_end = plain.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(plain.len(), head_end, "nothing after the 101 yet");
    peer
}

/// A masked client frame (mask key 0).
fn ws_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= 125);
    let mut out = vec![first, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    out.extend_from_slice(payload);
    out
}

/// Reads the server's records to its EOF; the WebSocket frames it sent (opcode and
/// payload), and whether its close_notify came.
fn wss_read_to_end(peer: &mut TcpStream, client: &mut TlsFilter) -> (Vec<(u8, Vec<u8>)>, bool) {
    let (plain, close_notify) = tls_read_to_end(peer, client);
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 2 <= plain.len() {
        let opcode = plain[at] & 0x0f;
        let (len, head) = match plain[at + 1] & 0x7f {
            126 => (
                u16::from_be_bytes([plain[at + 2], plain[at + 3]]) as usize,
                4,
            ),
            127 => (
                u64::from_be_bytes(plain[at + 2..at + 10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        if at + head + len > plain.len() {
            break;
        }
        frames.push((opcode, plain[at + head..at + head + len].to_vec()));
        at += head + len;
    }
    (frames, close_notify)
}

/// Sends `plain`, then (if `close_notify`) the TLS goodbye, in one write, then a FIN.
fn wss_send_and_end(peer: &mut TcpStream, client: &mut TlsFilter, plain: &[u8]) {
    let mut wire = BytesMut::new();
    client.encode(plain, &mut wire).unwrap();
    client.flush(&mut wire).unwrap();
    client.close(&mut wire);
    peer.write_all(&wire).unwrap();
    peer.shutdown(std::net::Shutdown::Write).unwrap();
}

fn events_through_close(events: &mpsc::Receiver<String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    while !seen.iter().any(|e| e == "close") {
        match events.recv_timeout(STEP) {
            Ok(e) => seen.push(e),
            Err(_) => panic!("no on_close within {STEP:?}; events so far: {seen:?}"),
        }
    }
    while let Ok(e) = events.recv_timeout(Duration::from_millis(200)) {
        seen.push(e);
    }
    seen
}

/// Pipelined messages, then close_notify and a FIN in the same write, over wss://: flow
/// control holds most messages back (each answer is 200 KB, the peer is slow to read), so
/// close_notify is read before they are delivered. Every message is answered, then the
/// session closes cleanly (no `on_error`), with a close frame and close_notify.
#[test]
fn wss_close_notify_behind_messages_held_by_flow_control_answers_them_all() {
    watchdog(LIMIT, || {
        let (server, addr, mut client, events) = wss_server("review-today-wss-held");
        let mut peer = wss_connect(addr, &mut client);
        let names: Vec<String> = (0..8).map(|i| format!("{}m", (b'a' + i) as char)).collect();
        let mut plain = Vec::new();
        for n in &names {
            plain.extend(ws_frame(0x82, n.as_bytes()));
        }
        wss_send_and_end(&mut peer, &mut client, &plain);
        std::thread::sleep(Duration::from_millis(300));
        let (frames, close_notify) = wss_read_to_end(&mut peer, &mut client);
        let seen = events_through_close(&events);
        let expected: Vec<String> = names
            .iter()
            .map(|n| format!("msg {n}"))
            .chain(["close".to_string()])
            .collect();
        assert_eq!(seen, expected);
        let replies: Vec<&(u8, Vec<u8>)> = frames.iter().filter(|(op, _)| *op == 2).collect();
        assert_eq!(replies.len(), names.len(), "every message answered");
        for ((_, reply), n) in replies.iter().zip(&names) {
            assert_eq!(reply.len(), 200_000);
            assert!(reply.iter().all(|b| *b == n.as_bytes()[0]));
        }
        assert!(close_notify, "the server's close_notify came");
        server.stop();
    });
}

/// A clean WebSocket close, then close_notify and a FIN, all in one write: no error.
#[test]
fn wss_clean_close_then_close_notify_and_fin_is_no_error() {
    watchdog(LIMIT, || {
        let (server, addr, mut client, events) = wss_server("review-today-wss-clean");
        let mut peer = wss_connect(addr, &mut client);
        let mut plain = ws_frame(0x82, b"x1");
        plain.extend(ws_frame(0x88, &1000u16.to_be_bytes()));
        wss_send_and_end(&mut peer, &mut client, &plain);
        let (frames, close_notify) = wss_read_to_end(&mut peer, &mut client);
        let seen = events_through_close(&events);
        assert_eq!(seen, ["msg x1", "close"]);
        let last = frames.last().expect("frames back");
        assert_eq!(last.0, 8, "a close frame last: {:?}", frames.len());
        assert_eq!(&last.1[..2], &1000u16.to_be_bytes());
        assert!(close_notify);
        server.stop();
    });
}

/// close_notify (and a FIN) between the fragments of a message over wss://: the input
/// was cut inside a message; the handler hears an error, once, then `on_close`.
#[test]
fn wss_close_notify_inside_a_fragmented_message_is_an_error() {
    watchdog(LIMIT, || {
        let (server, addr, mut client, events) = wss_server("review-today-wss-cut");
        let mut peer = wss_connect(addr, &mut client);
        let mut plain = ws_frame(0x82, b"whole");
        plain.extend(ws_frame(0x02, b"first-part"));
        wss_send_and_end(&mut peer, &mut client, &plain);
        let _ = wss_read_to_end(&mut peer, &mut client);
        let seen = events_through_close(&events);
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0], "msg whole");
        assert!(seen[1].starts_with("error"), "{seen:?}");
        assert_eq!(seen[2], "close");
        server.stop();
    });
}

// ---------------------------------------------------------------------------------------
// The same over UDP: an unconnected endpoint's handle (`DatagramHandle::write_to`)
// ---------------------------------------------------------------------------------------

use getty::udp::{DatagramHandle, DatagramHandler, DatagramSession, UdpEndpoint};

/// `Pump` for an unconnected UDP endpoint: 1 KiB datagrams to `to`, up to `cap` of them;
/// on the first `on_writability_changed(true)` a marker and a close through a handle.
struct DatagramPump {
    to: std::net::SocketAddr,
    handle: Option<DatagramHandle<RawCodec>>,
    produced: usize,
    cap: usize,
    events: Sender<String>,
}

impl DatagramPump {
    fn pump(&mut self, s: &mut DatagramSession<RawCodec>) {
        while s.is_writable() && self.produced < self.cap {
            if s.write_to(self.to, &[b'p'; 1024][..]).is_err() {
                break;
            }
            self.produced += 1;
        }
    }
}

impl DatagramHandler<RawCodec> for DatagramPump {
    fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> std::io::Result<()> {
        self.handle = s.handle();
        self.pump(s);
        Ok(())
    }
    fn on_writability_changed(&mut self, s: &mut DatagramSession<RawCodec>, writable: bool) {
        if !writable {
            return;
        }
        if let Some(handle) = self.handle.take() {
            let posted = handle
                .write_to(self.to, &b"MARKER"[..])
                .and_then(|()| handle.close());
            let _ = self
                .events
                .send(format!("posted {} {posted:?}", self.produced));
        }
        self.pump(s);
    }
    fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: Bytes, _: std::net::SocketAddr) {
    }
    fn on_close(&mut self, _: &mut DatagramSession<RawCodec>) {
        let _ = self.events.send(format!("close {}", self.produced));
    }
}

/// A UDP endpoint whose handler refills its queue on every `on_writability_changed(true)`
/// holds a handle's write and close, posted while writable, until it has made all it
/// would (`cap` datagrams), where they should go the next time the queue drains.
#[test]
fn held_datagram_handle_writes_are_not_starved_by_a_refilling_handler() {
    watchdog(LIMIT, || {
        const CAP: usize = 100_000;
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = sink.local_addr().unwrap();
        let (tx, events) = mpsc::channel();
        let endpoint = UdpEndpoint::bind("127.0.0.1:0", move |_| {
            Ok((
                RawCodec,
                DatagramPump {
                    to,
                    handle: None,
                    produced: 0,
                    cap: CAP,
                    events: tx,
                },
            ))
        })
        .unwrap();
        let reactor = Running::serve("review-today-udp-pump", endpoint);
        let posted = events.recv_timeout(STEP).unwrap();
        let mut fields = posted.split(' ');
        assert_eq!(fields.next(), Some("posted"), "{posted}");
        let posted_at: usize = fields.next().unwrap().parse().unwrap();
        assert!(posted.ends_with("Ok(())"), "the handle refused: {posted}");
        let closed = events.recv_timeout(STEP * 4).unwrap();
        let closed_at: usize = closed.strip_prefix("close ").unwrap().parse().unwrap();
        assert!(
            closed_at < posted_at + 10_000,
            "the handle's close, posted after {posted_at} datagrams, applied after \
             {closed_at} (the handler makes {CAP} in all)"
        );
        drop(sink);
        reactor.stop();
    });
}

// ---------------------------------------------------------------------------------------
// Held handle commands: order, and the session ending while they wait
// ---------------------------------------------------------------------------------------

/// Hands its handle out in `on_open`; reports `on_error` and `on_close`.
struct HandsOut(Sender<SessionHandle<LengthFieldCodec>>, Sender<String>);

impl Handler<LengthFieldCodec> for HandsOut {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        let _ = self.0.send(s.handle().unwrap());
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = self
            .1
            .send(format!("msg {}", String::from_utf8_lossy(&msg)));
    }
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        let _ = self.1.send(format!("error {error}"));
    }
    fn on_close(&mut self, _: &mut Session<LengthFieldCodec>) {
        let _ = self.1.send("close".into());
    }
}

/// A server of `HandsOut`, a slow client of it (16 KiB receive buffer), the session's
/// handle and events.
fn hands_out_server(
    name: &str,
    options: getty::SessionOptions,
) -> (
    Running,
    TcpStream,
    SessionHandle<LengthFieldCodec>,
    mpsc::Receiver<String>,
) {
    let (handles_tx, handles) = mpsc::channel();
    let (tx, events) = mpsc::channel();
    let server = TcpServer::builder()
        .session_options(options)
        .bind("127.0.0.1:0", move |_| {
            Ok((
                LengthFieldCodec::default(),
                HandsOut(handles_tx.clone(), tx.clone()),
            ))
        })
        .unwrap();
    let addr = server.local_addr();
    let server = Running::serve(name, server);
    let peer = connect_with_recv_buffer(addr, 16 * 1024);
    let handle = handles.recv_timeout(STEP).unwrap();
    (server, peer, handle, events)
}

fn numbered(n: u32) -> Bytes {
    let mut payload = vec![b'.'; 2048];
    payload[..4].copy_from_slice(&n.to_be_bytes());
    Bytes::from(payload)
}

/// Writes held behind the high watermark, a pause and a resume of reading, more writes and
/// a close, all through the handle: every write arrives, in order, then the FIN; reading
/// resumed (a request sent meanwhile is delivered) and no error.
#[test]
fn held_writes_pause_resume_and_close_apply_in_order() {
    watchdog(LIMIT, || {
        let (server, mut peer, handle, events) =
            hands_out_server("review-today-held-order", getty::SessionOptions::default());
        let mut sent = 0u32;
        server.while_busy(|| {
            for _ in 0..1500 {
                handle.write(numbered(sent)).unwrap();
                sent += 1;
            }
            handle.pause_reading().unwrap();
            for _ in 0..10 {
                handle.write(numbered(sent)).unwrap();
                sent += 1;
            }
            handle.resume_reading().unwrap();
            for _ in 0..10 {
                handle.write(numbered(sent)).unwrap();
                sent += 1;
            }
        });
        peer.write_all(&frame(b"ping")).unwrap();
        // The request is delivered once reading resumes (after the held writes applied).
        std::thread::sleep(Duration::from_millis(200));
        let reader = std::thread::spawn(move || drain(&mut peer));
        let seen = events.recv_timeout(STEP).unwrap();
        assert_eq!(seen, "msg ping");
        handle.close().unwrap();
        let (got, ended) = reader.join().unwrap();
        assert!(ended, "a FIN after {} bytes", got.len());
        let frames = split_frames(&got);
        assert_eq!(frames.len(), sent as usize, "every write arrived");
        for (k, (_, payload)) in frames.iter().enumerate() {
            let n = u32::from_be_bytes(payload[..4].try_into().unwrap());
            assert_eq!(n as usize, k, "in order");
        }
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        server.stop();
    });
}

/// A session that ends while handle writes are held (the peer resets, the write-stall
/// timeout, the reactor stops): a writer waiting in `wait_writable` hears `Closed`, and
/// the handle refuses from then on.
#[test]
fn a_session_ending_with_held_writes_wakes_wait_writable_with_closed() {
    watchdog(LIMIT, || {
        for how in ["reset", "stall", "stop"] {
            let options = getty::SessionOptions::default().write_stall_timeout(
                Duration::from_millis(if how == "stall" { 500 } else { 60_000 }),
            );
            let (server, peer, handle, events) =
                hands_out_server(&format!("review-today-end-{how}"), options);
            server.while_busy(|| {
                for n in 0..2000 {
                    handle.write(numbered(n)).unwrap();
                }
            });
            // The reactor has applied what it could and reported the crossing.
            server.run_on(|_| ());
            assert!(!handle.is_writable(), "{how}: past the high watermark");
            let waiter = handle.clone();
            let (tx, waited) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(waiter.wait_writable(Duration::MAX));
            });
            std::thread::sleep(Duration::from_millis(100));
            match how {
                "reset" => {
                    set_linger_zero(&peer);
                    drop(peer);
                    server.run_on(|_| ());
                }
                "stop" => {
                    server.stop();
                    let result = waited.recv_timeout(STEP);
                    assert!(
                        matches!(result, Ok(Err(getty::Error::Closed))),
                        "{how}: {result:?}"
                    );
                    assert!(handle.is_closed());
                    continue;
                }
                _ => {}
            }
            let result = waited.recv_timeout(STEP);
            assert!(
                matches!(result, Ok(Err(getty::Error::Closed))),
                "{how}: {result:?}"
            );
            assert!(handle.is_closed(), "{how}");
            assert!(matches!(
                handle.write(numbered(0)),
                Err(getty::Error::Closed)
            ));
            let mut seen = Vec::new();
            while let Ok(e) = events.recv_timeout(Duration::from_millis(300)) {
                seen.push(e);
            }
            assert_eq!(
                seen.last().map(String::as_str),
                Some("close"),
                "{how}: {seen:?}"
            );
            server.stop();
        }
    });
}

/// With `pause_reading_when_unwritable(false)` reading does not wait for the output to
/// drain. The handler paused reading, then a handle posted writes (held: the session is
/// far past its high watermark) and `resume_reading()`. The resume queues no bytes, yet it
/// waits behind the held writes, which wait for the peer to read; a peer that reads only
/// once its request is sent (a blocking client) waits for the server to read: neither
/// moves until the write-stall timeout. (With the default option flow control pauses
/// reading there anyway; with this one the session must read.)
#[test]
fn a_resume_is_not_held_behind_writes_when_reading_ignores_writability() {
    watchdog(LIMIT, || {
        let options = getty::SessionOptions::default().pause_reading_when_unwritable(false);
        let (server, mut peer, handle, events) =
            hands_out_server("review-today-held-resume", options);
        handle.pause_reading().unwrap();
        server.run_on(|_| ());
        let mut sent = 0u32;
        server.while_busy(|| {
            for _ in 0..2000 {
                handle.write(numbered(sent)).unwrap();
                sent += 1;
            }
            handle.resume_reading().unwrap();
        });
        // A blocking client: its request first (8 MiB, more than the kernel buffers
        // hold), then it reads the replies.
        let request: Vec<u8> = (0..1024u32)
            .flat_map(|k| {
                let mut payload = vec![b'r'; 8 * 1024];
                payload[..4].copy_from_slice(&k.to_be_bytes());
                frame(&payload)
            })
            .collect();
        peer.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let written = peer.write_all(&request);
        let (got, _) = {
            peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            while got.len() < sent as usize * (4 + 2048) {
                match peer.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            (got, ())
        };
        let mut messages = 0;
        while let Ok(e) = events.recv_timeout(Duration::from_millis(300)) {
            if e.starts_with("msg") {
                messages += 1;
            }
        }
        assert!(
            written.is_ok(),
            "the request was never read: {written:?}; {messages} messages delivered, \
             {} of {} reply bytes came",
            got.len(),
            sent as usize * (4 + 2048)
        );
        assert_eq!(messages, 1024);
        assert_eq!(got.len(), sent as usize * (4 + 2048));
        server.stop();
    });
}

/// Hands its handle out in `on_open`, on a WebSocket; reports `on_error` and `on_close`.
struct WsHandsOut(Sender<SessionHandle<RawCodec, Ws>>, Sender<String>);

impl Handler<RawCodec, Ws> for WsHandsOut {
    fn on_open(&mut self, s: &mut Session<RawCodec, Ws>) -> std::io::Result<()> {
        let _ = self.0.send(s.handle().unwrap());
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec, Ws>, _: Bytes) {}
    fn on_error(&mut self, _: &mut Session<RawCodec, Ws>, error: &getty::Error) {
        let _ = self.1.send(format!("error {error}"));
    }
    fn on_close(&mut self, _: &mut Session<RawCodec, Ws>) {
        let _ = self.1.send("close".into());
    }
}

/// Handle writes on a WebSocket session, far past its watermarks when they reach it (the
/// framing's headers count too), then the handle's close: every message arrives whole and
/// in order, then the close frame (1000) and the FIN; no error.
#[test]
fn held_handle_writes_on_a_websocket_arrive_whole_then_the_close() {
    watchdog(LIMIT, || {
        let (handles_tx, handles) = mpsc::channel();
        let (tx, events) = mpsc::channel();
        let server = WsServer::builder()
            .route("/echo", move |_| {
                Ok((RawCodec, WsHandsOut(handles_tx.clone(), tx.clone())))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-today-ws-held", server);
        let mut peer = connect_with_recv_buffer(addr, 16 * 1024);
        peer.set_read_timeout(Some(STEP)).unwrap();
        ws_upgrade(&mut peer);
        let handle = handles.recv_timeout(STEP).unwrap();
        let count = 2000u32;
        server.while_busy(|| {
            for n in 0..count {
                handle.write(numbered(n)).unwrap();
            }
            handle.close().unwrap();
        });
        std::thread::sleep(Duration::from_millis(200));
        let (wire, ended) = drain(&mut peer);
        assert!(ended, "a FIN after {} bytes", wire.len());
        let mut at = 0;
        let mut seen = 0u32;
        let mut close = None;
        while at + 2 <= wire.len() {
            let opcode = wire[at] & 0x0f;
            let (len, head) = match wire[at + 1] & 0x7f {
                126 => (u16::from_be_bytes([wire[at + 2], wire[at + 3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(wire[at + 2..at + 10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            let payload = &wire[at + head..at + head + len];
            match opcode {
                2 => {
                    assert_eq!(payload.len(), 2048);
                    let n = u32::from_be_bytes(payload[..4].try_into().unwrap());
                    assert_eq!(n, seen, "in order");
                    assert!(close.is_none(), "a message after the close");
                    seen += 1;
                }
                8 => close = Some(u16::from_be_bytes([payload[0], payload[1]])),
                other => panic!("opcode {other}"),
            }
            at += head + len;
        }
        assert_eq!(at, wire.len(), "whole frames");
        assert_eq!(seen, count, "every message");
        assert_eq!(close, Some(1000));
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        server.stop();
    });
}

/// Held handle writes on a TLS session (its records count against the watermarks), then
/// the handle's close, to a slow reader: every byte, then close_notify, then the FIN.
#[test]
fn held_handle_writes_on_tls_arrive_whole_then_close_notify_and_fin() {
    watchdog(LIMIT, || {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let (handles_tx, handles) = mpsc::channel();
        let (tx, events) = mpsc::channel();
        let server = TcpServer::builder()
            .tls(getty::tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    LengthFieldCodec::default(),
                    HandsOut(handles_tx.clone(), tx.clone()),
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-today-tls-held", server);
        let config = getty::tls::client_config(chain.as_bytes()).unwrap();
        let mut client = TlsFilter::client(config, "localhost").unwrap();
        let mut peer = connect_with_recv_buffer(addr, 16 * 1024);
        peer.set_read_timeout(Some(STEP)).unwrap();
        tls_exchange(&mut peer, &mut client, &[], 0);
        let handle = handles.recv_timeout(STEP).unwrap();
        let count = 2000u32;
        server.while_busy(|| {
            for n in 0..count {
                handle.write(numbered(n)).unwrap();
            }
            handle.close().unwrap();
        });
        std::thread::sleep(Duration::from_millis(300));
        let (wire, ended) = drain(&mut peer);
        assert!(ended, "a FIN after {} bytes", wire.len());
        let mut wire = BytesMut::from(&wire[..]);
        let mut plain = BytesMut::new();
        for _ in 0..100_000 {
            let before = (wire.len(), plain.len());
            client.decode(&mut wire, &mut plain, 64 << 20).unwrap();
            if (wire.len(), plain.len()) == before {
                break;
            }
        }
        let frames = split_frames(&plain);
        assert_eq!(frames.len(), count as usize, "every write");
        for (k, (_, payload)) in frames.iter().enumerate() {
            let n = u32::from_be_bytes(payload[..4].try_into().unwrap());
            assert_eq!(n as usize, k, "in order");
        }
        assert_eq!(plain.len(), count as usize * (4 + 2048), "nothing more");
        assert_eq!(client.peer_closed(), Some(true), "close_notify came");
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        server.stop();
    });
}

/// `HandsOut` that joins a group in `on_open`.
struct Member(getty::SessionGroup<LengthFieldCodec>, HandsOut);

impl Handler<LengthFieldCodec> for Member {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        self.0.join(s).unwrap();
        self.1.on_open(s)
    }
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        self.1.on_message(s, msg)
    }
    fn on_error(&mut self, s: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        self.1.on_error(s, error)
    }
    fn on_close(&mut self, s: &mut Session<LengthFieldCodec>) {
        self.1.on_close(s)
    }
}

/// A group member (its settling goes through its inbox) with held handle writes while
/// broadcasts keep coming: every handle write and every broadcast arrives, each stream in
/// its own order, then the handle's close; no error.
#[test]
fn a_group_member_with_held_handle_writes_gets_them_and_the_broadcasts() {
    watchdog(LIMIT, || {
        let group = getty::SessionGroup::new(LengthFieldCodec::default());
        let (handles_tx, handles) = mpsc::channel();
        let (tx, events) = mpsc::channel();
        let members = group.clone();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((
                LengthFieldCodec::default(),
                Member(members.clone(), HandsOut(handles_tx.clone(), tx.clone())),
            ))
        })
        .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-today-member-held", server);
        let mut peer = connect_with_recv_buffer(addr, 16 * 1024);
        let handle = handles.recv_timeout(STEP).unwrap();
        let count = 2000u32;
        let broadcasts = 300u32;
        let mut next_broadcast = 0u32;
        server.while_busy(|| {
            for n in 0..count {
                handle.write(numbered(n)).unwrap();
                if n % 10 == 0 && next_broadcast < broadcasts {
                    let mut b = vec![b'B'; 1000];
                    b[..4].copy_from_slice(&next_broadcast.to_be_bytes());
                    group.broadcast(Bytes::from(b)).unwrap();
                    next_broadcast += 1;
                }
            }
        });
        while next_broadcast < broadcasts {
            let mut b = vec![b'B'; 1000];
            b[..4].copy_from_slice(&next_broadcast.to_be_bytes());
            group.broadcast(Bytes::from(b)).unwrap();
            next_broadcast += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
        let expected = count as usize * (4 + 2048) + broadcasts as usize * (4 + 1000);
        let (all_tx, all) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            peer.set_read_timeout(Some(STEP)).unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            while got.len() < expected {
                match peer.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = all_tx.send(());
            let (rest, ended) = drain(&mut peer);
            got.extend_from_slice(&rest);
            (got, ended)
        });
        // Once everything went out: close.
        let _ = all.recv_timeout(STEP);
        handle.close().unwrap();
        let (got, ended) = reader.join().unwrap();
        assert!(ended, "a FIN after {} bytes", got.len());
        let (mut writes, mut casts) = (0u32, 0u32);
        for (_, payload) in split_frames(&got) {
            let n = u32::from_be_bytes(payload[..4].try_into().unwrap());
            if payload.len() == 2048 {
                assert_eq!(n, writes, "handle writes in order");
                writes += 1;
            } else {
                assert_eq!(payload.len(), 1000);
                assert_eq!(n, casts, "broadcasts in order");
                casts += 1;
            }
        }
        assert_eq!((writes, casts), (count, broadcasts));
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        server.stop();
    });
}

/// An abort through the handle while its writes are held: the session ends at once with a
/// reset (the held writes are dropped, not sent), a waiting writer hears `Closed`.
#[test]
fn an_abort_while_writes_are_held_ends_the_session_at_once() {
    watchdog(LIMIT, || {
        let (server, mut peer, handle, events) =
            hands_out_server("review-today-held-abort", getty::SessionOptions::default());
        server.while_busy(|| {
            for n in 0..2000 {
                handle.write(numbered(n)).unwrap();
            }
        });
        server.run_on(|_| ());
        assert!(!handle.is_writable());
        let waiter = handle.clone();
        let (tx, waited) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(waiter.wait_writable(Duration::MAX));
        });
        handle.abort().unwrap();
        let result = waited.recv_timeout(STEP);
        assert!(
            matches!(result, Ok(Err(getty::Error::Closed))),
            "{result:?}"
        );
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0usize;
        let ended = loop {
            match peer.read(&mut buf) {
                Ok(0) => break "eof",
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
                Err(e) => panic!("{e} after {got} bytes"),
            }
        };
        assert_eq!(ended, "reset", "after {got} bytes");
        assert!(got < 2000 * (4 + 2048), "the held writes were not sent");
        server.stop();
    });
}

/// A held handle write the codec refuses (over its 8 MiB frame limit), applied as the
/// session drains: the session ends with that error in `on_error`, then `on_close`, once.
#[test]
fn a_held_write_the_codec_refuses_ends_the_session_with_its_error() {
    watchdog(LIMIT, || {
        let (server, mut peer, handle, events) = hands_out_server(
            "review-today-held-refused",
            getty::SessionOptions::default(),
        );
        server.while_busy(|| {
            for n in 0..1000 {
                handle.write(numbered(n)).unwrap();
            }
            handle
                .write(Bytes::from(vec![0u8; 9 << 20]))
                .expect("accepted: the codec runs on the reactor");
            // The bytes in flight are past `max_outbound` now.
            assert!(matches!(
                handle.write(numbered(1000)),
                Err(getty::Error::Backpressure)
            ));
        });
        std::thread::sleep(Duration::from_millis(200));
        let (got, _) = drain(&mut peer);
        let mut seen = Vec::new();
        while let Ok(e) = events.recv_timeout(Duration::from_millis(500)) {
            seen.push(e);
        }
        assert_eq!(seen.len(), 2, "{seen:?} ({} bytes came)", got.len());
        assert!(seen[0].starts_with("error"), "{seen:?}");
        assert_eq!(seen[1], "close");
        assert!(handle.is_closed());
        server.stop();
    });
}

/// `DatagramPump` for a unix datagram endpoint (`DatagramHandle::write_to` a path).
struct UnixPump {
    to: getty::UnixAddr,
    handle: Option<DatagramHandle<RawCodec, getty::UnixAddr>>,
    produced: usize,
    cap: usize,
    events: Sender<String>,
}

impl UnixPump {
    fn pump(&mut self, s: &mut DatagramSession<RawCodec, getty::UnixAddr>) {
        while s.is_writable() && self.produced < self.cap {
            if s.write_to(self.to.clone(), &[b'p'; 1024][..]).is_err() {
                break;
            }
            self.produced += 1;
        }
    }
}

impl DatagramHandler<RawCodec, getty::UnixAddr> for UnixPump {
    fn on_open(
        &mut self,
        s: &mut DatagramSession<RawCodec, getty::UnixAddr>,
    ) -> std::io::Result<()> {
        self.handle = s.handle();
        self.pump(s);
        Ok(())
    }
    fn on_writability_changed(
        &mut self,
        s: &mut DatagramSession<RawCodec, getty::UnixAddr>,
        writable: bool,
    ) {
        if !writable {
            return;
        }
        if let Some(handle) = self.handle.take() {
            let posted = handle
                .write_to(self.to.clone(), &b"MARKER"[..])
                .and_then(|()| handle.close());
            let _ = self
                .events
                .send(format!("posted {} {posted:?}", self.produced));
        }
        self.pump(s);
    }
    fn on_message(
        &mut self,
        _: &mut DatagramSession<RawCodec, getty::UnixAddr>,
        _: Bytes,
        _: getty::UnixAddr,
    ) {
    }
    fn on_close(&mut self, _: &mut DatagramSession<RawCodec, getty::UnixAddr>) {
        let _ = self.events.send(format!("close {}", self.produced));
    }
}

/// The unix datagram endpoint, with a receiver that reads all the time: the handle's
/// write and close, posted while writable, apply the next time the queue drains, not
/// after everything the refilling handler makes.
#[test]
fn held_unix_datagram_handle_writes_are_not_starved_by_a_refilling_handler() {
    watchdog(LIMIT, || {
        const CAP: usize = 100_000;
        let dir = TempDir::new("review-today-unix-pump");
        let sink_path = dir.path("sink.sock");
        let sink = unix_datagram_socket(&sink_path);
        sink.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while sink.recv(&mut buf).is_ok() {}
        });
        let to = getty::UnixAddr::path(&sink_path);
        let (tx, events) = mpsc::channel();
        let endpoint = getty::unix::UnixDatagramEndpoint::builder()
            .bind(dir.path("server.sock"), move |_| {
                Ok((
                    RawCodec,
                    UnixPump {
                        to,
                        handle: None,
                        produced: 0,
                        cap: CAP,
                        events: tx,
                    },
                ))
            })
            .unwrap();
        let reactor = Running::serve("review-today-unix-pump", endpoint);
        let posted = events.recv_timeout(STEP).unwrap();
        let mut fields = posted.split(' ');
        assert_eq!(fields.next(), Some("posted"), "{posted}");
        let posted_at: usize = fields.next().unwrap().parse().unwrap();
        assert!(posted.ends_with("Ok(())"), "the handle refused: {posted}");
        let closed = events.recv_timeout(STEP * 4).unwrap();
        let closed_at: usize = closed.strip_prefix("close ").unwrap().parse().unwrap();
        assert!(
            closed_at < posted_at + 10_000,
            "the handle's close, posted after {posted_at} datagrams, applied after \
             {closed_at} (the handler makes {CAP} in all)"
        );
        // (Whether the marker arrived depends on the receiver: a full one has the oldest
        // datagrams parked for it dropped.)
        reader.join().unwrap();
        reactor.stop();
    });
}

/// The writes a handle has in flight (posted, and not yet applied by a reactor that is
/// busy) are bounded in bytes, by the session's `max_outbound`, and not only in number:
/// a writer of 1 MiB messages gets `Backpressure` once 4 MiB wait, where before 4,096 of
/// them (4 GiB) were taken. A writer waiting in `wait_writable` meanwhile is woken once
/// they have gone out, and everything arrives whole and in order.
#[test]
fn the_bytes_of_handle_writes_waiting_for_a_busy_reactor_are_bounded() {
    watchdog(LIMIT, || {
        const MESSAGE: usize = 1 << 20;
        let options = getty::SessionOptions::default().max_outbound(4 * MESSAGE);
        let (server, mut peer, handle, _events) = hands_out_server("handle-bytes", options);
        let mut taken = 0u32;
        let mut refused = None;
        server.while_busy(|| {
            while taken < 64 {
                let mut payload = vec![b'm'; MESSAGE];
                payload[..4].copy_from_slice(&taken.to_be_bytes());
                match handle.write(Bytes::from(payload)) {
                    Ok(()) => taken += 1,
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                }
            }
        });
        println!("{taken} writes of 1 MiB taken, then {refused:?}");
        assert!(
            matches!(refused, Some(getty::Error::Backpressure)),
            "{taken} writes of 1 MiB taken, then {refused:?}"
        );
        assert_eq!(taken, 4, "writes of 1 MiB in flight under a 4 MiB bound");
        let waiter = handle.clone();
        let last = std::thread::spawn(move || {
            waiter.wait_writable(Duration::from_secs(30))?;
            waiter.write(Bytes::from_static(b"LAST"))?;
            waiter.close()
        });
        let reader = std::thread::spawn(move || drain(&mut peer));
        last.join().unwrap().expect("room once the writes went out");
        let (got, ended) = reader.join().unwrap();
        assert!(ended, "a FIN after {} bytes", got.len());
        let frames = split_frames(&got);
        assert_eq!(frames.len(), taken as usize + 1, "every write arrived");
        for (k, (_, payload)) in frames.iter().take(taken as usize).enumerate() {
            assert_eq!(payload.len(), MESSAGE);
            let n = u32::from_be_bytes(payload[..4].try_into().unwrap());
            assert_eq!(n as usize, k, "in order");
        }
        assert_eq!(frames.last().unwrap().1, b"LAST");
        server.stop();
    });
}
