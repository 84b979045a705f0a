//! WebSocket over loopback: the getty-rs server and client against each other and against
//! tungstenite (a client no one here wrote), the upgrade's refusals (404, 403, garbage, a
//! stalled handshake), the RFC's close codes for bad frames, keep-alive pings, and the
//! client's redial policy.

mod common;

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, Message, MessageCodec, RawCodec};
use getty::tcp::ServerHandle;
use getty::ws::{Ws, WsClient, WsServer, WsServerBuilder};
use getty::{Error, Handler, Metrics, Session, SessionOptions};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message as TMessage;

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// An echo server (raw payloads, one message per WebSocket message) that reports every
/// callback, at `/echo`.
fn probe_server(builder: WsServerBuilder, tx: &Sender<Ev>) -> (Running, SocketAddr, ServerHandle) {
    let tx = tx.clone();
    let server = builder
        .route("/echo", move |_| Ok((RawCodec, Probe::echo(&tx))))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let (running, id) = Running::spawn("ws-server", server);
    let handle = ServerHandle::new(running.handle().clone(), id);
    (running, addr, handle)
}

/// Echoes every message with its kind (text stays text).
struct KindEcho;

impl Handler<MessageCodec, Ws> for KindEcho {
    fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
        if msg.as_text() == Some("close please") {
            s.close();
            return;
        }
        if msg.as_text() == Some("close with 4000") {
            s.close_with(4000, "as asked").unwrap();
            return;
        }
        s.write(msg).unwrap();
    }
}

fn kind_echo_server(builder: WsServerBuilder) -> (Running, SocketAddr) {
    let server = builder
        .route("/", |_| Ok((MessageCodec, KindEcho)))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("ws-kind-echo", server), addr)
}

/// A tungstenite client (blocking, with read and write timeouts) after its handshake.
fn tungstenite_client(url: &str, addr: SocketAddr) -> tungstenite::WebSocket<TcpStream> {
    let stream = connect(addr);
    let (ws, response) = tungstenite::client::client(url, stream)
        .unwrap_or_else(|e| panic!("handshake with {url}: {e}"));
    assert_eq!(response.status(), 101);
    ws
}

/// The next data or close message, answering nothing by hand (tungstenite answers pings).
fn next_message(ws: &mut tungstenite::WebSocket<TcpStream>) -> TMessage {
    loop {
        match ws.read().expect("read a message") {
            TMessage::Ping(_) | TMessage::Pong(_) => continue,
            other => return other,
        }
    }
}

/// Upgrades a plain socket by hand (fixed key) and returns it with the response head.
fn raw_upgrade(addr: SocketAddr, path: &str, extra: &str) -> (TcpStream, String) {
    let mut stream = connect(addr);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    (stream, head)
}

/// Reads an HTTP response head, byte by byte (so no frame after it is consumed).
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => head.push(byte[0]),
            Err(e) => panic!("reading the response head: {e}"),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A client frame: masked, with `opcode` (0 continuation, 1 text, 2 binary, 8 close, ...).
fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads one (unmasked) server frame: its opcode and payload.
fn read_server_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).expect("a frame header");
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            stream.read_exact(&mut n).unwrap();
            u16::from_be_bytes(n) as usize
        }
        127 => {
            let mut n = [0u8; 8];
            stream.read_exact(&mut n).unwrap();
            u64::from_be_bytes(n) as usize
        }
        n => n as usize,
    };
    assert_eq!(head[1] & 0x80, 0, "a server frame must not be masked");
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    (head[0] & 0x0f, payload)
}

/// Reads frames until a close frame and returns its status code.
fn read_close_code(stream: &mut TcpStream) -> u16 {
    loop {
        let (opcode, payload) = read_server_frame(stream);
        if opcode == 8 {
            assert!(payload.len() >= 2, "close frame without a code");
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

fn metrics(running: &Running) -> Metrics {
    Metrics::of(running.handle()).unwrap()
}

// ---------------------------------------------------------------------------------------
// Bulk echo: 100 getty-rs clients, 500 messages each
// ---------------------------------------------------------------------------------------

const BULK_CLIENTS: usize = 100;
const BULK_MESSAGES: usize = 500;
const BULK_MAX_SIZE: usize = 256 * 1024;
const BULK_WINDOW: usize = 4;

/// A size from 0 to `max`, log-uniform (as many messages under 1 KiB as from 64 to 256
/// KiB), the extremes included.
fn bulk_size(rng: &mut fastrand::Rng, max: usize) -> usize {
    match rng.u32(0..100) {
        0 => 0,
        1 => max,
        _ => {
            let bits = rng.f64() * (max as f64).log2();
            (bits.exp2() as usize).min(max)
        }
    }
}

/// What a bulk client session reports when it ends.
struct BulkDone {
    verified: usize,
    bytes: usize,
    error: Option<String>,
}

/// Keeps a window of messages in flight and checks every echo, in order, byte for byte.
struct BulkSender {
    pool: Bytes,
    rng: fastrand::Rng,
    in_flight: VecDeque<Bytes>,
    sent: usize,
    verified: usize,
    bytes: usize,
    error: Option<String>,
    done: Sender<BulkDone>,
}

impl BulkSender {
    fn fill_window(&mut self, s: &mut Session<RawCodec, Ws>) {
        while self.sent < BULK_MESSAGES && self.in_flight.len() < BULK_WINDOW {
            let len = bulk_size(&mut self.rng, BULK_MAX_SIZE);
            let start = self.rng.usize(0..=self.pool.len() - len);
            let payload = self.pool.slice(start..start + len);
            s.write(payload.clone()).unwrap();
            self.in_flight.push_back(payload);
            self.sent += 1;
        }
    }
}

impl Handler<RawCodec, Ws> for BulkSender {
    fn on_open(&mut self, s: &mut Session<RawCodec, Ws>) -> io::Result<()> {
        assert_eq!(s.path(), "/bulk", "a WebSocket session of the URL's path");
        self.fill_window(s);
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<RawCodec, Ws>, echo: Bytes) {
        let expected = self.in_flight.pop_front();
        if expected.as_ref() != Some(&echo) {
            self.error = Some(format!(
                "echo {} differs: {} bytes, expected {:?} bytes",
                self.verified,
                echo.len(),
                expected.map(|e| e.len())
            ));
            s.close();
            return;
        }
        self.verified += 1;
        self.bytes += echo.len();
        if self.verified == BULK_MESSAGES {
            s.close();
        } else {
            self.fill_window(s);
        }
    }

    fn on_error(&mut self, _: &mut Session<RawCodec, Ws>, error: &Error) {
        self.error.get_or_insert_with(|| error.to_string());
    }

    fn on_close(&mut self, _: &mut Session<RawCodec, Ws>) {
        let _ = self.done.send(BulkDone {
            verified: self.verified,
            bytes: self.bytes,
            error: self.error.take(),
        });
    }
}

/// Echoes raw payloads and counts what went wrong.
struct CountingEcho {
    failures: Arc<AtomicUsize>,
}

impl Handler<RawCodec, Ws> for CountingEcho {
    fn on_message(&mut self, s: &mut Session<RawCodec, Ws>, msg: Bytes) {
        if s.write(msg).is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn on_error(&mut self, _: &mut Session<RawCodec, Ws>, error: &Error) {
        eprintln!("bulk echo session error: {error}");
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// 100 getty-rs WebSocket clients (one `WsClient` keeping 100 sessions) each send 500
/// messages of random sizes from 0 B to 256 KiB (log-uniform, both extremes included) to
/// the getty-rs server with 4 in flight; every echo comes back whole, in order, byte for
/// byte. Seeded, so a failure replays.
#[test]
fn echo_100_clients_500_messages_of_random_sizes() {
    let _gate = exclusive_gate();
    watchdog(Duration::from_secs(300), || {
        let failures = Arc::new(AtomicUsize::new(0));
        let server_failures = failures.clone();
        let server = WsServer::builder()
            .route("/bulk", move |_| {
                Ok((
                    RawCodec,
                    CountingEcho {
                        failures: server_failures.clone(),
                    },
                ))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let url = format!("ws://{}/bulk", server.local_addr());
        let (server, server_id) = Running::spawn("ws-bulk-server", server);
        let server_handle = ServerHandle::new(server.handle().clone(), server_id);

        let mut pool = vec![0u8; 2 * BULK_MAX_SIZE];
        fastrand::Rng::with_seed(0x5eed_0b0e).fill(&mut pool);
        let pool = Bytes::from(pool);
        let (done_tx, done_rx) = mpsc::channel();
        let mut seed = 0u64;
        let client = WsClient::builder()
            .connection_number(BULK_CLIENTS)
            .max_consecutive_failures(Some(3))
            .build(&url, move |_| {
                seed += 1;
                Ok((
                    RawCodec,
                    BulkSender {
                        pool: pool.clone(),
                        rng: fastrand::Rng::with_seed(0x5eed_0b0e ^ seed),
                        in_flight: VecDeque::new(),
                        sent: 0,
                        verified: 0,
                        bytes: 0,
                        error: None,
                        done: done_tx.clone(),
                    },
                ))
            })
            .unwrap();
        let started = Instant::now();
        let (client, client_id) = Running::spawn("ws-bulk-clients", client);
        let (mut verified, mut bytes) = (0, 0);
        for _ in 0..BULK_CLIENTS {
            let done = done_rx
                .recv_timeout(Duration::from_secs(240))
                .expect("every client session ends");
            assert_eq!(done.error, None, "a client session failed");
            assert_eq!(done.verified, BULK_MESSAGES);
            verified += done.verified;
            bytes += done.bytes;
        }
        eprintln!(
            "ws bulk echo: {verified} messages, {:.1} MiB echoed and checked in {:?}",
            bytes as f64 / (1 << 20) as f64,
            started.elapsed()
        );
        // Stop the client from redialling, and let the server finish the close handshakes
        // (a client's on_close runs when its handshake starts) before its reactor goes.
        client.handle().send(client_id, getty::Close).unwrap();
        let deadline = Instant::now() + STEP;
        while server_handle.session_count().unwrap() > 0 {
            assert!(Instant::now() < deadline, "server sessions did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
        client.stop();
        server.stop();
        assert_eq!(failures.load(Ordering::Relaxed), 0, "server-side failures");
    });
}

// ---------------------------------------------------------------------------------------
// A client no one here wrote
// ---------------------------------------------------------------------------------------

/// tungstenite's client: text stays text, binary stays binary, a fragmented message is
/// reassembled, a ping is answered with its payload, and the close handshake completes
/// with the client's code echoed before the server closes the connection.
#[test]
fn a_tungstenite_client_gets_text_binary_fragments_pongs_and_a_clean_close() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (server, addr) = kind_echo_server(WsServer::builder());
        let mut ws = tungstenite_client(&format!("ws://{addr}/"), addr);

        ws.send(TMessage::text("héllo wörld")).unwrap();
        assert_eq!(next_message(&mut ws), TMessage::text("héllo wörld"));
        let binary: Vec<u8> = (0..70_000).map(|i| (i % 251) as u8).collect();
        ws.send(TMessage::binary(binary.clone())).unwrap();
        assert_eq!(next_message(&mut ws), TMessage::binary(binary));
        ws.send(TMessage::binary(Vec::new())).unwrap();
        assert_eq!(next_message(&mut ws), TMessage::binary(Vec::new()));

        // Three fragments, with a ping between them (control frames may interleave).
        let text = OpCode::Data(Data::Text);
        let cont = OpCode::Data(Data::Continue);
        ws.send(TMessage::Frame(Frame::message("frag", text, false)))
            .unwrap();
        ws.send(TMessage::Ping(Bytes::from_static(b"mid"))).unwrap();
        ws.send(TMessage::Frame(Frame::message("men", cont, false)))
            .unwrap();
        ws.send(TMessage::Frame(Frame::message("ted", cont, true)))
            .unwrap();
        match ws.read().unwrap() {
            TMessage::Pong(payload) => assert_eq!(&payload[..], b"mid"),
            other => panic!("expected the pong first, got {other:?}"),
        }
        assert_eq!(next_message(&mut ws), TMessage::text("fragmented"));

        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .unwrap();
        match next_message(&mut ws) {
            TMessage::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("expected the close echo, got {other:?}"),
        }
        // The server closes the TCP connection once the handshake is done.
        match ws.read() {
            Err(tungstenite::Error::ConnectionClosed) => {}
            other => panic!("expected the connection to close, got {other:?}"),
        }
        server.stop();
    });
}

/// `close()` sends 1000, `close_with` the app's code; either way the server waits for the
/// client's close frame and then closes the connection.
#[test]
fn the_server_closes_with_1000_or_the_apps_code() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (server, addr) = kind_echo_server(WsServer::builder());
        for (ask, code, reason) in [
            ("close please", CloseCode::Normal, ""),
            ("close with 4000", CloseCode::from(4000), "as asked"),
        ] {
            let mut ws = tungstenite_client(&format!("ws://{addr}/"), addr);
            ws.send(TMessage::text(ask)).unwrap();
            match next_message(&mut ws) {
                TMessage::Close(Some(frame)) => {
                    assert_eq!((frame.code, frame.reason.as_str()), (code, reason))
                }
                other => panic!("expected a close frame, got {other:?}"),
            }
            // tungstenite answers the close on the next read; then the server hangs up.
            match ws.read() {
                Err(tungstenite::Error::ConnectionClosed) => {}
                other => panic!("expected the connection to close, got {other:?}"),
            }
        }
        server.stop();
    });
}

/// A graceful reactor shutdown closes WebSocket sessions with 1001 (going away), and the
/// close handshake completes within the grace period.
#[test]
fn a_graceful_shutdown_says_going_away() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (server, addr) = kind_echo_server(WsServer::builder());
        let mut ws = tungstenite_client(&format!("ws://{addr}/"), addr);
        ws.send(TMessage::text("before")).unwrap();
        assert_eq!(next_message(&mut ws), TMessage::text("before"));
        server
            .handle()
            .shutdown_graceful(Duration::from_secs(5))
            .unwrap();
        match next_message(&mut ws) {
            TMessage::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected a close frame, got {other:?}"),
        }
        match ws.read() {
            Err(tungstenite::Error::ConnectionClosed) => {}
            other => panic!("expected the connection to close, got {other:?}"),
        }
        server.join(STEP);
    });
}

// ---------------------------------------------------------------------------------------
// The upgrade: routes, origins, subprotocols, refusals
// ---------------------------------------------------------------------------------------

/// Requests for paths without a route get a 404 and a closed connection, a refused origin
/// a 403, and the subprotocol is the first one offered that the server speaks.
#[test]
fn routes_origins_and_subprotocols() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let builder = WsServer::builder()
            .protocols(["chat.v2", "chat.v1"])
            .check_origin(|origin| origin.is_none_or(|o| o == "https://good.example"));
        let (tx, mut events) = Events::new();
        let (server, addr, _) = probe_server(builder, &tx);

        let (mut stream, head) = raw_upgrade(addr, "/nowhere", "");
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        let _ = read_to_end(&mut stream);

        let (mut stream, head) = raw_upgrade(addr, "/echo", "Origin: https://evil.example\r\n");
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
        let _ = read_to_end(&mut stream);

        let offer = "Origin: https://good.example\r\nSec-WebSocket-Protocol: chat.v3, chat.v1\r\n";
        let (mut stream, head) = raw_upgrade(addr, "/echo?room=7", offer);
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(
            head.contains("Sec-WebSocket-Protocol: chat.v1\r\n"),
            "{head}"
        );
        assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        stream.write_all(&client_frame(2, true, b"routed")).unwrap();
        assert_eq!(read_server_frame(&mut stream), (2, b"routed".to_vec()));

        // No shared subprotocol: the upgrade goes on without one.
        let (_stream, head) = raw_upgrade(addr, "/echo", "Sec-WebSocket-Protocol: mqtt\r\n");
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(!head.contains("Sec-WebSocket-Protocol"), "{head}");

        // Only the two accepted upgrades became sessions.
        events.wait_n("two sessions", 2, |e| matches!(e, Ev::Open { .. }));
        server.stop();
        events.check_contract();
        assert_eq!(events.count(|e| matches!(e, Ev::Open { .. })), 2);
    });
}

/// Garbage instead of an HTTP request gets a 400 (or a 426 for plain HTTP) and a closed
/// connection, never a panic; a session that was open carries on.
#[test]
fn garbage_instead_of_a_request_gets_an_error_response() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut events) = Events::new();
        let (server, addr, _) = probe_server(WsServer::builder(), &tx);
        let mut good = tungstenite_client(&format!("ws://{addr}/echo"), addr);

        let mut rng = fastrand::Rng::with_seed(7);
        let mut inputs: Vec<Vec<u8>> = vec![
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), // a TLS ClientHello
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),            // plain HTTP
            b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"GET\r\n\r\n".to_vec(),
        ];
        for _ in 0..20 {
            let len = rng.usize(1..300);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            bytes.extend_from_slice(b"\r\n\r\n");
            inputs.push(bytes);
        }
        for input in &inputs {
            let mut stream = connect(addr);
            stream.write_all(input).unwrap();
            let (answer, _) = read_to_end(&mut stream);
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.starts_with("HTTP/1.1 400 ") || answer.starts_with("HTTP/1.1 426 "),
                "{:?} got {answer:?}",
                String::from_utf8_lossy(input)
            );
        }
        good.send(TMessage::binary(&b"still here"[..])).unwrap();
        assert_eq!(
            next_message(&mut good),
            TMessage::binary(&b"still here"[..])
        );
        server.stop();
        events.check_contract();
        assert_eq!(events.count(|e| matches!(e, Ev::Open { .. })), 1);
    });
}

/// A client that sends half a request (or nothing) is dropped at the handshake timeout,
/// counted as a timeout; a patient client that finishes in time is served.
#[test]
fn a_stalled_handshake_is_closed_at_the_timeout() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let timeout = Duration::from_millis(300);
        let builder = WsServer::builder()
            .session_options(SessionOptions::default().handshake_timeout(timeout));
        let (tx, _events) = Events::new();
        let (server, addr, _) = probe_server(builder, &tx);

        let mut silent = connect(addr);
        let mut slow = connect(addr);
        slow.write_all(b"GET /echo HTTP/1.1\r\nHost: h\r\nUpg")
            .unwrap();
        let started = Instant::now();
        for stream in [&mut silent, &mut slow] {
            let (got, _) = read_to_end(stream);
            assert!(got.is_empty(), "a stalled handshake got an answer");
        }
        let waited = started.elapsed();
        assert!(waited >= timeout / 2, "closed after {waited:?}");
        assert_eq!(metrics(&server).errors_timeout, 2);

        // A request that arrives in pieces, each well within the timeout, is served.
        let mut patient = connect(addr);
        let request = "GET /echo HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        for piece in request.as_bytes().chunks(40) {
            patient.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(read_head(&mut patient).starts_with("HTTP/1.1 101 "));
        server.stop();
    });
}

// ---------------------------------------------------------------------------------------
// Bad frames: the RFC's close code, on_error then on_close, other sessions carry on
// ---------------------------------------------------------------------------------------

/// Each kind of bad input closes its session with the close code RFC 6455 names (1002
/// protocol error, 1007 bad UTF-8, 1009 too big), after `on_error` and before `on_close`;
/// a bystander session keeps echoing throughout.
#[test]
fn bad_frames_close_only_their_session_with_the_rfc_code() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let options = SessionOptions::default().max_message_len(4096);
        let (tx, mut events) = Events::new();
        let (server, addr, _) = probe_server(WsServer::builder().session_options(options), &tx);
        let mut bystander = tungstenite_client(&format!("ws://{addr}/echo"), addr);

        let mut unmasked = vec![0x82, 0x03];
        unmasked.extend_from_slice(b"abc");
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("invalid UTF-8", client_frame(1, true, b"ok \xff\xfe"), 1007),
            ("too big", client_frame(2, true, &[7u8; 5000]), 1009),
            ("unmasked", unmasked, 1002),
            ("reserved opcode", client_frame(3, true, b""), 1002),
            (
                "RSV1 without deflate",
                {
                    let mut f = client_frame(2, true, b"x");
                    f[0] |= 0x40;
                    f
                },
                1002,
            ),
            ("continuation first", client_frame(0, true, b"x"), 1002),
            ("fragmented ping", client_frame(9, false, b""), 1002),
        ];
        for (what, bytes, code) in cases {
            let (mut stream, head) = raw_upgrade(addr, "/echo", "");
            assert!(head.starts_with("HTTP/1.1 101 "), "{what}: {head}");
            stream.write_all(&bytes).unwrap();
            assert_eq!(read_close_code(&mut stream), code, "{what}");
            let _ = read_to_end(&mut stream);

            bystander.send(TMessage::text(what)).unwrap();
            assert_eq!(
                next_message(&mut bystander),
                TMessage::binary(what.as_bytes())
            );
        }
        server.stop();
        events.check_contract();
        let errors = events.count(|e| matches!(e, Ev::Error { .. }));
        assert_eq!(errors, 7, "one on_error per bad session: {:#?}", events.all);
    });
}

/// A compressed message that inflates past the max message length (16 KiB on the wire, 16
/// MiB inflated, 1 MiB allowed) closes its session with 1009 after inflating at most the
/// limit; a bystander carries on.
#[cfg(feature = "deflate")]
#[test]
fn a_deflate_bomb_is_refused_at_the_message_limit() {
    use bytes::BytesMut;
    use getty::codec::ws::{Config, DeflateConfig, Protocol, Role};
    use getty::codec::MessageKind;

    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let builder = WsServer::builder().deflate(Some(DeflateConfig::default()));
        let (tx, mut events) = Events::new();
        let (server, addr, _) = probe_server(builder, &tx);
        let mut bystander = tungstenite_client(&format!("ws://{addr}/echo"), addr);

        let offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
        let (mut stream, head) = raw_upgrade(addr, "/echo", offer);
        assert!(head.contains("permessage-deflate"), "{head}");
        let unlimited = Config {
            max_message_size: usize::MAX,
            max_frame_size: usize::MAX,
        };
        let mut client = Protocol::new(Role::Client, unlimited, Some(DeflateConfig::default()));
        let mut frame = BytesMut::zeroed(16 << 20);
        client
            .encode_message(MessageKind::Binary, &mut frame, 0)
            .unwrap();
        assert!(frame.len() < 32 << 10, "{} bytes on the wire", frame.len());
        let _ = stream.write_all(&frame);
        assert_eq!(read_close_code(&mut stream), 1009);
        let sid = events.wait_open(stream.local_addr().unwrap());
        events.wait_close(sid);
        assert_eq!(events.errors_of(sid).len(), 1);

        bystander.send(TMessage::binary(&b"unharmed"[..])).unwrap();
        assert_eq!(
            next_message(&mut bystander),
            TMessage::binary(&b"unharmed"[..])
        );
        server.stop();
        events.check_contract();
    });
}

// ---------------------------------------------------------------------------------------
// Keep-alive
// ---------------------------------------------------------------------------------------

/// With pings on the cron tick and a pong timeout, a peer that never answers is closed
/// with `PongTimeout` (after `on_error`, before `on_close`); one that answers (tungstenite
/// does, while it reads) stays.
#[test]
fn a_peer_that_never_answers_pings_is_closed() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let options = SessionOptions::default().cron_period(Some(Duration::from_millis(100)));
        let builder = WsServer::builder()
            .session_options(options)
            .ping_on_cron(true)
            .pong_timeout(Some(Duration::from_millis(400)));
        let (tx, mut events) = Events::new();
        let (server, addr, _) = probe_server(builder, &tx);

        // The live client reads all along (tungstenite answers pings while it reads),
        // then checks that its session still echoes.
        let alive = tungstenite_client(&format!("ws://{addr}/echo"), addr);
        let alive_peer = alive.get_ref().local_addr().unwrap();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let live = std::thread::spawn(move || keep_reading_then_echo(alive, stop_rx));
        let (mut deaf, head) = raw_upgrade(addr, "/echo", "");
        assert!(head.starts_with("HTTP/1.1 101 "));
        let alive_sid = events.wait_open(alive_peer);
        let deaf_sid = events.wait_open(deaf.local_addr().unwrap());

        // The deaf peer sees pings, answers none, and is closed with 1001 (going away).
        let (opcode, _) = read_server_frame(&mut deaf);
        assert_eq!(opcode, 9, "a ping");
        assert_eq!(read_close_code(&mut deaf), 1001);
        events.wait_close(deaf_sid);
        let errors = events.errors_of(deaf_sid);
        assert!(
            matches!(&errors[..], [ErrKind::Other(text)] if text.contains("pong")),
            "{errors:?}"
        );

        // The live one has answered many pings meanwhile and still echoes.
        std::thread::sleep(Duration::from_millis(500));
        stop_tx.send(()).unwrap();
        let pings = live.join().unwrap();
        assert!(pings >= 5, "the live client saw {pings} pings");
        assert!(events.errors_of(alive_sid).is_empty());
        server.stop();
        events.check_contract();
    });
}

/// Reads (answering pings) until told to stop, then checks an echo; returns the pings
/// seen.
fn keep_reading_then_echo(
    mut ws: tungstenite::WebSocket<TcpStream>,
    stop: mpsc::Receiver<()>,
) -> usize {
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut pings = 0;
    while stop.try_recv().is_err() {
        match ws.read() {
            Ok(TMessage::Ping(_)) => pings += 1,
            Ok(other) => panic!("the live client got {other:?}"),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("the live client failed: {e}"),
        }
    }
    ws.get_mut().set_read_timeout(Some(STEP)).unwrap();
    ws.send(TMessage::binary(&b"ping-pong"[..])).unwrap();
    assert_eq!(next_message(&mut ws), TMessage::binary(&b"ping-pong"[..]));
    pings
}

// ---------------------------------------------------------------------------------------
// The getty-rs client
// ---------------------------------------------------------------------------------------

/// Reports the upgrade's outcome as the client saw it, then sends one message.
struct Greeter {
    tx: Sender<Ev>,
}

impl Handler<MessageCodec, Ws> for Greeter {
    fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> io::Result<()> {
        let what = format!("protocol {:?} path {:?}", s.protocol(), s.path());
        let _ = self.tx.send(Ev::Note { sid: s.id(), what });
        s.write(Message::text("hi")).map_err(io::Error::from)
    }
    fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
        let what = format!("got {:?}", msg.as_text());
        let _ = self.tx.send(Ev::Note { sid: s.id(), what });
    }
    fn on_close(&mut self, s: &mut Session<MessageCodec, Ws>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

/// The client sends its extra headers and offered subprotocols, opens only after the 101,
/// and learns the subprotocol the server picked.
#[test]
fn the_client_sends_headers_and_learns_the_subprotocol() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (seen_tx, seen_rx) = mpsc::channel();
        let server = WsServer::builder()
            .protocols(["b"])
            .route("/greet", move |setup| {
                let _ = seen_tx.send(setup.request().header("X-Token").map(String::from));
                Ok((MessageCodec, KindEcho))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("ws-greet-server", server);
        let (tx, mut events) = Events::new();
        let client = WsClient::builder()
            .header("X-Token", "t0k3n")
            .protocol("a")
            .protocol("b")
            .build(&format!("ws://{addr}/greet?x=1"), move |_| {
                Ok((MessageCodec, Greeter { tx: tx.clone() }))
            })
            .unwrap();
        let client = Running::serve("ws-greet-client", client);
        let note = events.wait("the open", |e| matches!(e, Ev::Note { .. }));
        assert_eq!(
            note,
            Ev::Note {
                sid: note.sid(),
                what: "protocol Some(\"b\") path \"/greet?x=1\"".into()
            }
        );
        events.wait(
            "the echo",
            |e| matches!(e, Ev::Note { what, .. } if what == "got Some(\"hi\")"),
        );
        assert_eq!(seen_rx.recv_timeout(STEP).unwrap(), Some("t0k3n".into()));
        client.stop();
        server.stop();
    });
}

/// An upgrade the server refuses (404) never opens a session; it counts as a failed dial,
/// so a client with a failure limit gives up.
#[test]
fn a_refused_upgrade_is_a_failed_dial() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut server_events) = Events::new();
        let (server, addr, _) = probe_server(WsServer::builder(), &tx);
        let (ctx, mut events) = Events::new();
        let client = WsClient::builder()
            .max_consecutive_failures(Some(3))
            .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
            .build(&format!("ws://{addr}/missing"), move |_| {
                Ok((MessageCodec, Greeter { tx: ctx.clone() }))
            })
            .unwrap();
        let client = Running::serve("ws-refused-client", client);
        let deadline = Instant::now() + STEP;
        while client.entry_count() > 0 {
            assert!(Instant::now() < deadline, "the client did not give up");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            events.count(|_| true),
            0,
            "no callback for a refused upgrade"
        );
        assert_eq!(server_events.count(|_| true), 0);
        client.stop();
        server.stop();
    });
}

/// A server that accepts the connection and never answers the upgrade: the client's
/// session never opens, the handshake timeout ends the attempt, and it counts as a failed
/// dial.
#[test]
fn a_silent_server_times_the_client_out() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = std::thread::spawn(move || {
            let held: Vec<_> = (0..2).filter_map(|_| listener.accept().ok()).collect();
            held
        });
        let (ctx, mut events) = Events::new();
        let options = SessionOptions::default().handshake_timeout(Duration::from_millis(200));
        let client = WsClient::builder()
            .session_options(options)
            .max_consecutive_failures(Some(2))
            .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
            .build(&format!("ws://{addr}/"), move |_| {
                Ok((MessageCodec, Greeter { tx: ctx.clone() }))
            })
            .unwrap();
        let started = Instant::now();
        let client = Running::serve("ws-timeout-client", client);
        while client.entry_count() > 0 {
            assert!(started.elapsed() < STEP, "the client did not give up");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "two timeouts of 200 ms"
        );
        assert_eq!(events.count(|_| true), 0, "no session opened");
        assert_eq!(metrics(&client).errors_timeout, 2);
        client.stop();
        drop(silent.join().unwrap());
    });
}

/// A client keeps its sessions: when the server closes them all, it dials again.
#[test]
fn the_client_redials_after_the_server_closes_its_sessions() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut server_events) = Events::new();
        let (server, addr, handle) = probe_server(WsServer::builder(), &tx);
        let (ctx, mut events) = Events::new();
        let client = WsClient::builder()
            .connection_number(3)
            .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50))
            .build(&format!("ws://{addr}/echo"), move |_| {
                Ok((MessageCodec, Greeter { tx: ctx.clone() }))
            })
            .unwrap();
        let client = Running::serve("ws-redial-client", client);
        server_events.wait_n("3 sessions", 3, |e| matches!(e, Ev::Open { .. }));
        assert_eq!(handle.session_count().unwrap(), 3);
        handle.close_sessions().unwrap();
        events.wait_n("3 closes", 3, |e| matches!(e, Ev::Close { .. }));
        server_events.wait_n("3 new sessions", 6, |e| matches!(e, Ev::Open { .. }));
        client.stop();
        server.stop();
        server_events.check_contract();
    });
}

/// Reports what a binary write of exactly the room left below the hard bound gives.
struct FillToTheBound(Sender<String>);

impl Handler<RawCodec, Ws> for FillToTheBound {
    fn on_open(&mut self, s: &mut Session<RawCodec, Ws>) -> io::Result<()> {
        let bound = s.options().get_max_outbound();
        // The 101 may still be queued: fill exactly what is left.
        let room = bound - s.queued_bytes();
        let outcome = match s.write_bytes(vec![7u8; room]) {
            Ok(()) => format!("accepted; {} queued of {bound}", s.queued_bytes()),
            Err(e) => format!("refused: {e}"),
        };
        let _ = self.0.send(outcome);
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec, Ws>, _: Bytes) {}
}

/// The hard bound holds a WebSocket write with its frame header: a payload of exactly the
/// room left does not fit (it once did, and the queue went past the bound by the header).
#[test]
fn a_binary_write_is_held_to_the_bound_with_its_frame() {
    watchdog(TEST_LIMIT, || {
        let (tx, outcomes) = mpsc::channel();
        let server = WsServer::builder()
            .session_options(SessionOptions::default().max_outbound(64 * 1024))
            .route("/", move |_| Ok((RawCodec, FillToTheBound(tx.clone()))))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("ws-bound", server);
        let (_stream, head) = raw_upgrade(addr, "/", "");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let outcome = outcomes.recv_timeout(STEP).unwrap();
        assert!(
            outcome.starts_with("refused: outbound queue full"),
            "{outcome}"
        );
        running.stop();
    });
}

/// A WebSocket session takes what a TCP one takes: `write("OK")` and a `String` go out as
/// text frames, byte types as binary frames (every codec accepts the same kinds of input).
#[test]
fn a_websocket_session_writes_strings_as_text_and_bytes_as_binary() {
    struct Greets;
    impl Handler<MessageCodec, Ws> for Greets {
        fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> io::Result<()> {
            s.write("OK").unwrap();
            s.write(String::from("fine")).unwrap();
            s.write(&b"\x01"[..]).unwrap();
            s.write(vec![2u8]).unwrap();
            s.write(Bytes::from_static(b"\x03")).unwrap();
            Ok(())
        }
        fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {}
    }

    watchdog(TEST_LIMIT, || {
        let server = WsServer::builder()
            .route("/echo", |_| Ok((MessageCodec, Greets)))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("ws-greets", server);
        let mut stream = connect(addr);
        ws_upgrade(&mut stream);
        // Unmasked server frames: FIN + opcode, then a one-byte length.
        let mut frames = [0u8; 4 + 6 + 3 * 3];
        stream.read_exact(&mut frames).unwrap();
        let expected = [
            &b"\x81\x02OK"[..],
            b"\x81\x04fine",
            b"\x82\x01\x01",
            b"\x82\x01\x02",
            b"\x82\x01\x03",
        ]
        .concat();
        assert_eq!(&frames[..], &expected[..]);
        server.stop();
    });
}

// ---------------------------------------------------------------------------------------
// A route's hook stays on the reactor thread
// ---------------------------------------------------------------------------------------

/// Counts the sessions its route opened, in an `Rc` shared with the route's hook.
struct RcCounted(Rc<Cell<u32>>);

impl Handler<MessageCodec, Ws> for RcCounted {
    fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, _: Message) {
        let opened = self.0.get();
        s.write(Message::text(format!("session {opened}"))).unwrap();
    }
}

/// A route's setup hook may hold what is not `Send` (an `Rc`), as `TcpServer`'s hook may:
/// the server is then built on its reactor's thread, and every session sees the one count.
#[test]
fn a_route_hook_may_hold_an_rc() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (addr_tx, addr_rx) = mpsc::channel();
        let reactor = getty::Reactor::start_thread("ws-rc", move |r| {
            let opened = Rc::new(Cell::new(0));
            let server = WsServer::builder()
                .route("/", move |_| {
                    opened.set(opened.get() + 1);
                    Ok((MessageCodec, RcCounted(opened.clone())))
                })
                .bind("127.0.0.1:0")?;
            addr_tx
                .send(server.local_addr())
                .map_err(io::Error::other)?;
            r.spawn(Box::new(server));
            Ok(())
        })
        .unwrap();
        let addr = addr_rx.recv_timeout(STEP).unwrap();
        for n in 1..=2 {
            let mut ws = tungstenite_client(&format!("ws://{addr}/"), addr);
            ws.send(TMessage::text("which?")).unwrap();
            assert_eq!(
                next_message(&mut ws),
                TMessage::text(format!("session {n}"))
            );
        }
        reactor.handle().shutdown();
        reactor.join().unwrap();
    });
}
