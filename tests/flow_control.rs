//! Flow control end to end, over real sockets: a peer that sends faster than it reads is
//! slowed down, never killed, and the server's memory stays bounded; a ping flood from a
//! peer that never reads is held the same way; the handler can pause reading itself.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
#[cfg(feature = "deflate")]
use getty::codec::filter::DeflateFilter;
#[cfg(feature = "tls")]
use getty::codec::filter::TlsFilter;
use getty::codec::filter::{Filter, FilterError};
#[cfg(all(feature = "ws", feature = "deflate"))]
use getty::codec::ws::{ClientRequest, DeflateConfig};
#[cfg(feature = "ws")]
use getty::codec::ws::{Config, Event, Protocol, Role};
#[cfg(feature = "deflate")]
use getty::codec::Compression;
use getty::codec::{Bytes, LengthFieldCodec};
#[cfg(feature = "ws")]
use getty::codec::{Message, MessageCodec, MessageKind};
use getty::tcp::TcpServer;
#[cfg(feature = "tls")]
use getty::tls;
#[cfg(feature = "ws")]
use getty::ws::{Ws, WsServer};
use getty::{Handler, Session, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(240);

/// How the server's sessions ended, as the echo handlers report it.
#[derive(Debug)]
enum Outcome {
    Opened,
    Failed(#[allow(dead_code)] String),
    Closed,
}

/// Echoes every frame and reports only the session's life (a report per message would
/// hold every message in the channel).
struct CountingEcho(Sender<Outcome>);

impl Handler<LengthFieldCodec> for CountingEcho {
    fn on_open(&mut self, _: &mut Session<LengthFieldCodec>) -> io::Result<()> {
        let _ = self.0.send(Outcome::Opened);
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        if let Err(e) = s.write(msg) {
            let _ = self.0.send(Outcome::Failed(format!("echo refused: {e}")));
        }
    }
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        let _ = self.0.send(Outcome::Failed(error.to_string()));
    }
    fn on_close(&mut self, _: &mut Session<LengthFieldCodec>) {
        let _ = self.0.send(Outcome::Closed);
    }
}

#[cfg(feature = "ws")]
impl Handler<MessageCodec, Ws> for CountingEcho {
    fn on_open(&mut self, _: &mut Session<MessageCodec, Ws>) -> io::Result<()> {
        let _ = self.0.send(Outcome::Opened);
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
        if let Err(e) = s.write(msg) {
            let _ = self.0.send(Outcome::Failed(format!("echo refused: {e}")));
        }
    }
    fn on_error(&mut self, _: &mut Session<MessageCodec, Ws>, error: &getty::Error) {
        let _ = self.0.send(Outcome::Failed(error.to_string()));
    }
    fn on_close(&mut self, _: &mut Session<MessageCodec, Ws>) {
        let _ = self.0.send(Outcome::Closed);
    }
}

/// The messages a client sends: deterministic, so the echo is checked by regenerating
/// them rather than by keeping a copy.
struct Messages {
    next: u64,
    /// TCP framing (a 4-byte length before each payload) or bare WebSocket payloads.
    framed: bool,
    /// Contents deflate cannot shrink, so a compressed queue fills as fast as a plain one.
    noisy: bool,
    /// The message being compared, and how far.
    current: Vec<u8>,
    offset: usize,
}

impl Messages {
    fn new(framed: bool, noisy: bool) -> Self {
        Messages {
            next: 0,
            framed,
            noisy,
            current: Vec::new(),
            offset: 0,
        }
    }

    /// The next message as it goes on the plain stream: 1 to 16 KiB, varied contents.
    fn next_message(&mut self) -> Vec<u8> {
        let i = self.next;
        self.next += 1;
        let len = 1 + (i as usize * 7919) % (16 * 1024);
        let mut out = Vec::with_capacity(len + 4);
        if self.framed {
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
        if self.noisy {
            out.extend((0..len as u64).map(|j| splitmix(i << 32 | j) as u8));
        } else {
            out.extend((0..len).map(|j| (j as u64 * 31 + i * 7) as u8));
        }
        out
    }

    /// Checks `got` against the next bytes of the stream.
    fn check(&mut self, mut got: &[u8], position: u64) {
        while !got.is_empty() {
            if self.offset == self.current.len() {
                self.current = self.next_message();
                self.offset = 0;
            }
            let n = got.len().min(self.current.len() - self.offset);
            if got[..n] != self.current[self.offset..self.offset + n] {
                panic!(
                    "the echo differs from what was sent near byte {position} (message {})",
                    self.next - 1
                );
            }
            self.offset += n;
            got = &got[n..];
        }
    }
}

/// splitmix64's finaliser: every input bit reaches every output bit, so deflate finds
/// nothing to shrink.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// No transform: plain TCP.
struct Plain;

impl Filter for Plain {
    fn decode(
        &mut self,
        wire: &mut BytesMut,
        plain: &mut BytesMut,
        _: usize,
    ) -> Result<(), FilterError> {
        plain.extend_from_slice(&wire.split());
        Ok(())
    }
    fn encode(&mut self, plain: &[u8], wire: &mut BytesMut) -> Result<(), FilterError> {
        wire.extend_from_slice(plain);
        Ok(())
    }
    fn flush(&mut self, _: &mut BytesMut) -> Result<(), FilterError> {
        Ok(())
    }
}

/// A WebSocket client as a filter: each `encode` is one binary message, `decode` yields
/// the payloads of the messages that arrive.
#[cfg(feature = "ws")]
struct WsWire(Protocol);

#[cfg(feature = "ws")]
impl Filter for WsWire {
    fn decode(
        &mut self,
        wire: &mut BytesMut,
        plain: &mut BytesMut,
        _: usize,
    ) -> Result<(), FilterError> {
        let mut control = BytesMut::new();
        while let Some(event) = self
            .0
            .decode(wire, &mut control)
            .map_err(|e| FilterError::malformed("ws", e))?
        {
            match event {
                Event::Message { payload, .. } => plain.extend_from_slice(&payload),
                other => panic!("unexpected {other:?}"),
            }
        }
        Ok(())
    }
    fn encode(&mut self, plain: &[u8], wire: &mut BytesMut) -> Result<(), FilterError> {
        let start = wire.len();
        wire.extend_from_slice(plain);
        self.0
            .encode_message(MessageKind::Binary, wire, start)
            .map_err(|e| FilterError::malformed("ws", e))
    }
    fn flush(&mut self, _: &mut BytesMut) -> Result<(), FilterError> {
        Ok(())
    }
}

/// What one greedy client saw.
struct Greedy {
    sent: u64,
    echoed: u64,
    peak_rss_growth: usize,
    /// The client's filter, for ending the stream the protocol's way once the caller has
    /// checked that the session survived (a TLS `close_notify` sent earlier would end it).
    wire: Box<dyn Filter>,
}

/// Ends the client's side the protocol's way (TLS `close_notify`; nothing for the others).
fn say_goodbye(stream: &mut TcpStream, mut wire: Box<dyn Filter>) {
    let mut wire_out = BytesMut::new();
    wire.close(&mut wire_out);
    stream.set_nonblocking(false).unwrap();
    stream.write_all(&wire_out).unwrap();
}

/// Sends `total` plain bytes of messages as fast as the socket takes them, reads nothing
/// for `deaf_for`, then reads and checks every echo. One thread, a non-blocking socket.
fn greedy_client(
    stream: &mut TcpStream,
    mut wire: Box<dyn Filter>,
    framed: bool,
    noisy: bool,
    total: u64,
    deaf_for: Duration,
) -> Greedy {
    stream.set_nonblocking(true).unwrap();
    let baseline = resident_bytes();
    let (mut outgoing, mut wire_out) = (Messages::new(framed, noisy), BytesMut::new());
    let mut expected = Messages::new(framed, noisy);
    let (mut wire_in, mut plain_in) = (BytesMut::new(), BytesMut::new());
    let mut chunk = vec![0u8; 64 * 1024];
    let (mut sent, mut echoed) = (0u64, 0u64);
    let started = Instant::now();
    let mut peak = baseline;
    let mut last_sample = started;
    // Until everything sent (the last message may overshoot `total`) has come back.
    while sent < total || echoed < sent {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "stuck: {sent} bytes sent, {echoed} echoed"
        );
        let mut progressed = false;
        // Keep at most about 64 KiB of wire bytes of our own waiting.
        while sent < total && wire_out.len() < 64 * 1024 && !wire.is_handshaking() {
            let message = outgoing.next_message();
            sent += message.len() as u64;
            wire.encode(&message, &mut wire_out).unwrap();
        }
        wire.flush(&mut wire_out).unwrap();
        match stream.write(&wire_out) {
            Ok(n) => {
                let _ = wire_out.split_to(n);
                progressed |= n > 0;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("write after {sent} bytes: {e}"),
        }
        // A TLS handshake needs reading from the start; the application bytes wait.
        if started.elapsed() >= deaf_for || wire.is_handshaking() {
            match stream.read(&mut chunk) {
                Ok(0) => panic!("the server closed after {echoed} of {total} bytes echoed"),
                Ok(n) => {
                    wire_in.extend_from_slice(&chunk[..n]);
                    // Again while it makes progress: a filter may hand over only part of
                    // what it decoded per call (the Filter contract).
                    loop {
                        wire.decode(&mut wire_in, &mut plain_in, usize::MAX)
                            .unwrap();
                        if plain_in.is_empty() {
                            break;
                        }
                        expected.check(&plain_in, echoed);
                        echoed += plain_in.len() as u64;
                        plain_in.clear();
                    }
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read after {echoed} bytes echoed: {e}"),
            }
        }
        if last_sample.elapsed() >= Duration::from_millis(20) {
            peak = peak.max(resident_bytes());
            last_sample = Instant::now();
        }
        if !progressed {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Greedy {
        sent,
        echoed,
        peak_rss_growth: peak.saturating_sub(baseline),
        wire,
    }
}

/// Server memory allowed beyond the baseline: the 64 KiB watermark, read buffers, the
/// filter's buffers and state, allocator slack — a few MiB, nowhere near what was sent.
const RSS_GROWTH_LIMIT: usize = 24 << 20;

/// Runs one greedy client against a server and checks the session survived it whole.
fn check_greedy(
    name: &str,
    addr: SocketAddr,
    outcomes: &Receiver<Outcome>,
    wire: Box<dyn Filter>,
    framed: bool,
    total: u64,
    connect_ws: bool,
) {
    let mut stream = connect(addr);
    if connect_ws {
        ws_upgrade(&mut stream);
    }
    assert!(matches!(outcomes.recv_timeout(STEP), Ok(Outcome::Opened)));
    let seen = greedy_client(
        &mut stream,
        wire,
        framed,
        false,
        total,
        Duration::from_secs(2),
    );
    assert_eq!(seen.echoed, seen.sent, "{name}: every byte comes back");
    if let Ok(outcome) = outcomes.try_recv() {
        panic!("{name}: the session did not survive the greedy peer: {outcome:?}");
    }
    say_goodbye(&mut stream, seen.wire);
    drop(stream);
    assert!(matches!(outcomes.recv_timeout(STEP), Ok(Outcome::Closed)));
    eprintln!(
        "{name}: {} MiB echoed, peak RSS growth {} KiB",
        seen.echoed >> 20,
        seen.peak_rss_growth >> 10
    );
    assert!(
        seen.peak_rss_growth < RSS_GROWTH_LIMIT,
        "{name}: RSS grew by {} KiB while a peer pipelined {} MiB",
        seen.peak_rss_growth >> 10,
        total >> 20
    );
}

fn tcp_server(options: SessionOptions) -> (Running, SocketAddr, Receiver<Outcome>) {
    serve(TcpServer::builder().session_options(options))
}

#[cfg(feature = "tls")]
fn tls_server(
    options: SessionOptions,
    config: std::sync::Arc<getty::codec::rustls::ServerConfig>,
) -> (Running, SocketAddr, Receiver<Outcome>) {
    serve(TcpServer::builder().session_options(options).tls(config))
}

fn serve(builder: getty::tcp::TcpServerBuilder) -> (Running, SocketAddr, Receiver<Outcome>) {
    let (tx, rx) = mpsc::channel();
    let server = builder
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), CountingEcho(tx.clone())))
        })
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("greedy-server", server), addr, rx)
}

/// The scenario: pipelined length-prefixed messages, nothing read for 2 s, then
/// everything read. Before flow control the server queued echoes up to its 4 MiB bound and
/// then killed the session.
#[test]
fn a_pipelining_peer_is_slowed_down_not_killed() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let (server, addr, outcomes) = tcp_server(SessionOptions::default());
        check_greedy(
            "tcp",
            addr,
            &outcomes,
            Box::new(Plain),
            true,
            // A thousand times the high watermark, and sixteen times the hard bound that
            // used to end the session.
            64 << 20,
            false,
        );
        server.stop();
    });
}

#[test]
#[cfg(feature = "tls")]
fn a_pipelining_peer_over_tls_is_slowed_down_not_killed() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let config = tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
        let (server, addr, outcomes) = tls_server(SessionOptions::default(), config);
        let client_config = tls::client_config(chain.as_bytes()).unwrap();
        let filter = TlsFilter::client(client_config, "localhost").unwrap();
        // Less than over plain TCP: rustls in a debug build is slow, and 64 MiB is still
        // sixteen times the hard bound that used to end the session.
        check_greedy(
            "tls",
            addr,
            &outcomes,
            Box::new(filter),
            true,
            64 << 20,
            false,
        );
        server.stop();
    });
}

#[test]
#[cfg(feature = "deflate")]
fn a_pipelining_peer_with_deflate_is_slowed_down_not_killed() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let options = SessionOptions::default().compression(Some(Compression::Fast));
        let (server, addr, outcomes) = tcp_server(options);
        let filter = DeflateFilter::new(Compression::Fast);
        check_greedy(
            "deflate",
            addr,
            &outcomes,
            Box::new(filter),
            true,
            64 << 20,
            false,
        );
        server.stop();
    });
}

/// With permessage-deflate: the client's upgrade offers it, and both ends compress.
#[test]
#[cfg(all(feature = "ws", feature = "deflate"))]
fn a_pipelining_compressed_websocket_peer_is_slowed_down_not_killed() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let (tx, outcomes) = mpsc::channel();
        let server = WsServer::builder()
            .deflate(Some(DeflateConfig::default()))
            .route("/echo", move |_| {
                Ok((MessageCodec, CountingEcho(tx.clone())))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("greedy-wsz-server", server);
        // A small receive window, so the kernel absorbs little and the server's queue (of
        // compressed bytes, incompressible contents) is what fills.
        let mut stream = connect_with_recv_buffer(addr, 64 * 1024);
        let mut request = BytesMut::new();
        let handshake = ClientRequest::new("localhost", "/echo")
            .deflate(DeflateConfig::default())
            .write(&mut request);
        stream.write_all(&request).unwrap();
        let (mut head, mut byte) = (BytesMut::new(), [0u8; 1]);
        let response = loop {
            stream.read_exact(&mut byte).expect("the upgrade response");
            head.extend_from_slice(&byte);
            if let Some(response) = handshake.parse_response(&mut head, 8192).unwrap() {
                break response;
            }
        };
        let agreed = response.deflate();
        assert!(agreed.is_some(), "permessage-deflate was not agreed");
        let client = Protocol::new(Role::Client, Config::default(), agreed);
        assert!(matches!(outcomes.recv_timeout(STEP), Ok(Outcome::Opened)));
        let seen = greedy_client(
            &mut stream,
            Box::new(WsWire(client)),
            false,
            true,
            64 << 20,
            Duration::from_secs(2),
        );
        assert_eq!(seen.echoed, seen.sent);
        assert!(outcomes.try_recv().is_err(), "the session survived");
        eprintln!(
            "ws+deflate: peak RSS growth {} KiB",
            seen.peak_rss_growth >> 10
        );
        assert!(seen.peak_rss_growth < RSS_GROWTH_LIMIT);
        server.stop();
    });
}

#[test]
#[cfg(feature = "ws")]
fn a_pipelining_websocket_peer_is_slowed_down_not_killed() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let (tx, outcomes) = mpsc::channel();
        let server = WsServer::builder()
            .route("/echo", move |_| {
                Ok((MessageCodec, CountingEcho(tx.clone())))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("greedy-ws-server", server);
        let client = Protocol::new(Role::Client, Config::default(), None);
        check_greedy(
            "ws",
            addr,
            &outcomes,
            Box::new(WsWire(client)),
            false,
            64 << 20,
            true,
        );
        server.stop();
    });
}

/// Sends one WebSocket message over a blocking socket and reads its echo.
#[cfg(feature = "ws")]
fn ws_roundtrip(stream: &mut TcpStream, client: &mut Protocol, payload: &[u8]) {
    let mut out = BytesMut::from(payload);
    client
        .encode_message(MessageKind::Binary, &mut out, 0)
        .unwrap();
    stream.write_all(&out).unwrap();
    let (mut wire, mut control, mut chunk) = (BytesMut::new(), BytesMut::new(), [0u8; 4096]);
    loop {
        if let Some(event) = client.decode(&mut wire, &mut control).unwrap() {
            match event {
                Event::Message { payload: echo, .. } => {
                    assert_eq!(&echo[..], payload, "the bystander's echo differs");
                    return;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let n = stream.read(&mut chunk).expect("the bystander's echo");
        assert!(n > 0, "the server closed the bystander");
        wire.extend_from_slice(&chunk[..n]);
    }
}

/// A peer floods pings and never reads. Pongs coalesce (one answers a batch), count
/// against the session's bounds and, once above the watermark, stop the session reading:
/// the flood is held in TCP's window. Before, every ping queued a pong, past every bound.
#[test]
#[cfg(feature = "ws")]
fn a_ping_flood_from_a_peer_that_never_reads_is_held() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let (tx, outcomes) = mpsc::channel();
        let server = WsServer::builder()
            .route("/echo", move |_| {
                Ok((MessageCodec, CountingEcho(tx.clone())))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("ping-flood-server", server);

        let mut bystander = connect(addr);
        ws_upgrade(&mut bystander);
        let mut bystander_ws = Protocol::new(Role::Client, Config::default(), None);
        ws_roundtrip(&mut bystander, &mut bystander_ws, b"before");

        let mut flooder = connect(addr);
        ws_upgrade(&mut flooder);
        flooder.set_nonblocking(true).unwrap();
        let mut pinger = Protocol::new(Role::Client, Config::default(), None);
        let mut batch = BytesMut::new();
        for _ in 0..512 {
            pinger.ping(&[b'p'; 125], &mut batch).unwrap();
        }
        let baseline = resident_bytes();
        let (mut peak, mut pings_sent, mut pending) = (baseline, 0u64, &batch[..0]);
        let started = Instant::now();
        let mut last_progress = Instant::now();
        // A million pings, or until the server has stopped taking them for a second.
        while pings_sent < 1_000_000 && last_progress.elapsed() < Duration::from_secs(1) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the flood never ended"
            );
            if pending.is_empty() {
                pending = &batch[..];
            }
            match flooder.write(pending) {
                Ok(n) => {
                    let frame_len = batch.len() / 512;
                    let before = (batch.len() - pending.len()) / frame_len;
                    pending = &pending[n..];
                    let after = (batch.len() - pending.len()) / frame_len;
                    pings_sent += (after - before) as u64;
                    last_progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("the flooder's write failed after {pings_sent} pings: {e}"),
            }
            if pings_sent % 20_000 < 512 {
                ws_roundtrip(&mut bystander, &mut bystander_ws, b"still here");
                peak = peak.max(resident_bytes());
            }
        }
        peak = peak.max(resident_bytes());
        ws_roundtrip(&mut bystander, &mut bystander_ws, b"after");
        let growth = peak.saturating_sub(baseline);
        eprintln!("{pings_sent} pings sent; RSS growth {} KiB", growth >> 10);
        assert!(
            growth < 8 << 20,
            "RSS grew by {} KiB under a flood of {pings_sent} pings",
            growth >> 10
        );
        assert!(matches!(outcomes.try_recv(), Ok(Outcome::Opened)));
        assert!(matches!(outcomes.try_recv(), Ok(Outcome::Opened)));
        assert!(outcomes.try_recv().is_err(), "no session ended");
        server.stop();
    });
}

/// Answers every request with a reply of `BIG_REPLY` bytes, each byte the request's first.
struct BigReplies {
    tx: Sender<Ev>,
}

const BIG_REPLY: usize = 512 * 1024;

impl Handler<LengthFieldCodec> for BigReplies {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        if let Err(e) = s.write(Bytes::from(vec![msg[0]; BIG_REPLY])) {
            let _ = self.tx.send(Ev::Error {
                sid: s.id(),
                err: classify(&e),
            });
        }
    }

    fn on_error(&mut self, s: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }
}

/// A pipeline whose replies add up to far more than `max_outbound` is answered whole, at
/// the pace the peer reads: flow control stops delivering requests already read once the
/// queue passes the high watermark, and they wait in the read buffer until it drains.
/// (Before, every request read went to the handler at once, and the session ended with
/// `QueueFull` at `max_outbound`, cutting off a peer that was reading.)
#[test]
fn a_pipeline_of_requests_with_large_replies_is_answered_whole() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut events) = Events::new();
        let options = SessionOptions::default().max_outbound(8 << 20);
        let server = TcpServer::builder()
            .session_options(options)
            .bind("127.0.0.1:0", move |_| {
                Ok((LengthFieldCodec::default(), BigReplies { tx: tx.clone() }))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("big-replies", server);
        let requests = 160usize; // 80 MiB of replies against an 8 MiB bound
        let mut client = connect(addr);
        let pipeline: Vec<u8> = (0..requests).flat_map(|i| frame(&[i as u8])).collect();
        client.write_all(&pipeline).unwrap();
        let mut header = [0u8; 4];
        let mut body = vec![0u8; BIG_REPLY];
        for i in 0..requests {
            client.read_exact(&mut header).unwrap();
            assert_eq!(u32::from_be_bytes(header) as usize, BIG_REPLY, "reply {i}");
            client.read_exact(&mut body).unwrap();
            assert!(
                body.iter().all(|&b| b == i as u8),
                "reply {i} in order, whole"
            );
        }
        assert_eq!(events.count(|e| matches!(e, Ev::Error { .. })), 0);
        echo_roundtrip_len(&mut client);
        server.stop();
    });
}

/// One more request on the same connection is still answered.
fn echo_roundtrip_len(client: &mut TcpStream) {
    client.write_all(&frame(&[7])).unwrap();
    let mut header = [0u8; 4];
    client.read_exact(&mut header).unwrap();
    assert_eq!(u32::from_be_bytes(header) as usize, BIG_REPLY);
    let mut body = vec![0u8; BIG_REPLY];
    client.read_exact(&mut body).unwrap();
}
