//! Hostile peers at scale against a stream server: many cheap connections, each stalled
//! part way through a frame (TCP, WebSocket) or a handshake (TLS, the WebSocket upgrade),
//! must not make the server hold much more than they sent, nor wake it while they wait.
//!
//! The heap is measured with a counting allocator over the whole process, so the tests
//! take turns (`GATE`).
#![cfg(target_os = "linux")]

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use common::{connect, echo_roundtrip, live_bytes, watchdog, CountingAllocator, Running};
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{Handler, Session, SessionOptions};

const LIMIT: Duration = Duration::from_secs(120);

/// Stalled peers per measurement: many, within the test's descriptor limit (two
/// descriptors each, in this one process).
const PEERS: usize = 1000;

/// One test at a time: the allocator counts the whole process.
static GATE: Mutex<()> = Mutex::new(());

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

struct Echo;

impl Handler<LengthFieldCodec> for Echo {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = s.write(msg);
    }
}

fn length_server() -> (Running, SocketAddr) {
    let server = TcpServer::builder()
        .session_options(SessionOptions::default().max_message_len(64 << 20))
        .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("exhaustion", server), addr)
}

/// The heap each of [`PEERS`] peers makes a server hold when it sends `wire` (part of a
/// frame) and stalls. `open` connects a peer ready for frames (after its upgrade, say) and
/// `roundtrip` checks one echo, on a bystander whose answer after the peers' writes says
/// the server read them.
fn held_per_stalled(
    open: impl Fn() -> TcpStream,
    roundtrip: impl Fn(&mut TcpStream, &[u8]),
    wire: &[u8],
) -> isize {
    let mut bystander = open();
    roundtrip(&mut bystander, b"warm");
    let mut peers: Vec<TcpStream> = (0..PEERS).map(|_| open()).collect();
    // Let every session open and settle into what it holds idle.
    std::thread::sleep(Duration::from_millis(300));
    roundtrip(&mut bystander, b"idle");
    let base = live_bytes();
    for peer in &mut peers {
        peer.write_all(wire).unwrap();
    }
    // Let the server read every peer's bytes, then settle.
    std::thread::sleep(Duration::from_millis(500));
    roundtrip(&mut bystander, b"during");
    let held = (live_bytes() - base) / PEERS as isize;
    drop(peers);
    roundtrip(&mut bystander, b"after");
    held
}

/// What a stalled peer that sent `sent` bytes may make the server hold: eight times them
/// (the bound the read path keeps for buffers it grows ahead of a frame), the session's
/// own small state, and its share of the idle buffers the reactor's pool may keep (64 of
/// 64 KiB).
fn allowed(sent: usize) -> isize {
    (8 * sent + 4096 + 64 * 64 * 1024 / PEERS) as isize
}

/// [`held_per_stalled`] for a length header that claims `claim` bytes, then `sent` bytes.
fn held_per_stalled_peer(claim: u32, sent: usize) -> isize {
    let (server, addr) = length_server();
    let mut wire = claim.to_be_bytes().to_vec();
    wire.extend(std::iter::repeat_n(0x5a, sent));
    let held = held_per_stalled(|| connect(addr), echo_roundtrip, &wire);
    println!(
        "{PEERS} peers each claiming {claim} B, sending {sent} B and stalling: the heap \
         grew by {held} B per peer"
    );
    server.stop();
    held
}

/// A partial frame is moved out of its pooled 64 KiB read buffer into one of its own size
/// when it is tiny (at most 256 bytes), "so that thousands of sessions waiting on a few
/// header bytes do not each pin a pooled buffer". A peer that sends a few bytes more gets
/// past that: a stalled session must hold about what its peer sent (at most eight times
/// it, the bound the read path keeps for buffers it grows ahead), not a whole pooled
/// buffer.
#[test]
fn stalled_partial_frames_hold_about_what_their_peers_sent() {
    watchdog(LIMIT, || {
        let _gate = GATE.lock().unwrap_or_else(|p| p.into_inner());
        let tiny = held_per_stalled_peer(1 << 20, 200);
        let small = held_per_stalled_peer(1 << 20, 300);
        let unclaimed = held_per_stalled_peer(1 << 10, 300);
        println!("per peer: {tiny} B for 200 B sent, {small} B for 300 B (claim 1 MiB), {unclaimed} B for 300 B (claim 1 KiB)");
        for (held, what) in [(small, "1 MiB"), (unclaimed, "1 KiB")] {
            assert!(
                held <= allowed(304),
                "a peer that sent 300 bytes of a {what} frame holds {held} B of the server's \
                 heap (one that sent 200 holds {tiny} B)"
            );
        }
    });
}

/// Takes every message and keeps none.
struct Discard;

impl Handler<LengthFieldCodec> for Discard {
    fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, _: Bytes) {}
}

/// The bytes that came right behind a large message sat in the rest of the message's
/// grown buffer, which hid its size (`capacity` counts from the consumed front), so no
/// check moved them out: 40 sessions that each sent a 1 MiB message, its last 100 bytes
/// with 2 bytes of the next header, and stalled, held 1.16 MB each, the whole buffer.
#[test]
fn a_few_bytes_left_behind_a_large_message_do_not_pin_its_buffer() {
    watchdog(LIMIT, || {
        let _gate = GATE.lock().unwrap_or_else(|p| p.into_inner());
        const N: usize = 40;
        const MESSAGE: usize = 1 << 20;
        let server = TcpServer::builder()
            .session_options(SessionOptions::default().max_message_len(64 << 20))
            .bind("127.0.0.1:0", |_| {
                Ok((LengthFieldCodec::default(), Discard))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("behind-large", server);
        let mut peers: Vec<_> = (0..N).map(|_| connect(addr)).collect();
        std::thread::sleep(Duration::from_millis(300));
        server.run_on(|_| ()); // every session open and settled
        let before = live_bytes();
        let mut wire = (MESSAGE as u32).to_be_bytes().to_vec();
        wire.resize(4 + MESSAGE, 1);
        // The message's last 100 bytes and half of the next header in one write, so that
        // they are read together.
        let tail_at = wire.len() - 100;
        wire.extend_from_slice(&[0, 0]);
        for peer in &mut peers {
            peer.write_all(&wire[..tail_at]).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        for peer in &mut peers {
            peer.write_all(&wire[tail_at..]).unwrap();
        }
        std::thread::sleep(Duration::from_millis(500));
        server.run_on(|_| ());
        let held = live_bytes() - before;
        // What the pool may keep (64 idle buffers of 64 KiB and its large budget), and a
        // generous 16 KiB a session besides.
        let pool = 64 * 64 * 1024 + getty::reactor::BufPool::DEFAULT_LARGE_BUDGET;
        let bound = (pool + N * 16 * 1024) as isize;
        println!("{N} sessions stalled 2 bytes behind a 1 MiB message hold {held} B");
        drop(peers);
        server.stop();
        assert!(held <= bound, "{held} B held, over {bound} B");
    });
}

/// The handshake timeout of the half-done handshakes below.
const HANDSHAKE: Duration = Duration::from_secs(3);

/// What [`PEERS`] peers that each send `opening` (a handshake they never finish) make the
/// server hold and do: heap per peer, the reactor's turns during a quiet second while they
/// wait, and how many of them the server had closed once the handshake timeout (and a
/// margin) passed.
fn half_done(addr: SocketAddr, server: &Running, opening: &[u8]) -> (isize, u64, usize) {
    use std::io::Read;
    let base = live_bytes();
    let started = std::time::Instant::now();
    let mut peers: Vec<TcpStream> = (0..PEERS)
        .map(|_| {
            let mut peer = connect(addr);
            peer.write_all(opening).unwrap();
            peer
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let held = (live_bytes() - base) / PEERS as isize;
    let turns = || getty::Metrics::of(server.handle()).unwrap().reactor.turns;
    let before = turns();
    std::thread::sleep(Duration::from_secs(1));
    let quiet_turns = turns() - before;
    assert!(
        started.elapsed() < HANDSHAKE,
        "the peers took too long to connect: the test measured nothing"
    );
    std::thread::sleep((HANDSHAKE + Duration::from_secs(2)).saturating_sub(started.elapsed()));
    let mut closed = 0;
    for peer in &mut peers {
        peer.set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => continue, // an alert or a 408 before the close
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    closed += 1;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    (held, quiet_turns, closed)
}

/// Thousands of TLS handshakes left half done (most of a ClientHello, then silence): each
/// holds a bounded, small amount, costs the reactor no wake-up while it waits, and is cut
/// at the handshake timeout.
#[cfg(feature = "tls")]
#[test]
fn thousands_of_half_done_tls_handshakes_are_cheap_and_cut_on_time() {
    use getty::codec::filter::{Filter, TlsFilter};
    use getty::tls;
    watchdog(LIMIT, || {
        let _gate = GATE.lock().unwrap_or_else(|p| p.into_inner());
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let server = TcpServer::builder()
            .tls(tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
            .session_options(SessionOptions::default().handshake_timeout(HANDSHAKE))
            .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("exhaustion-tls", server);
        let mut hello = bytes::BytesMut::new();
        let config = tls::client_config(chain.as_bytes()).unwrap();
        TlsFilter::client(config, "localhost")
            .unwrap()
            .flush(&mut hello)
            .unwrap();
        let opening = &hello[..hello.len() - 10];
        let (held, quiet_turns, closed) = half_done(addr, &server, opening);
        println!(
            "{PEERS} TLS handshakes stalled {} B into a {} B ClientHello: {held} B of heap \
             each, {quiet_turns} reactor turns in a quiet second, {closed} cut at the timeout",
            opening.len(),
            hello.len()
        );
        assert_eq!(closed, PEERS, "half-done handshakes outlived the timeout");
        assert!(
            quiet_turns < 20,
            "{quiet_turns} turns while nothing happened"
        );
        assert!(
            held < 16 * 1024,
            "a half-done TLS handshake holds {held} B of the server's heap"
        );
        server.stop();
    });
}

/// Thousands of WebSocket upgrades left half done (a request head without its blank line):
/// each holds about what its peer sent, costs no wake-up while it waits, and is cut at the
/// handshake timeout.
#[cfg(feature = "ws")]
#[test]
fn thousands_of_half_done_websocket_upgrades_are_cheap_and_cut_on_time() {
    use getty::codec::{Message, MessageCodec};
    use getty::ws::{Ws, WsServer};
    struct WsEcho;
    impl Handler<MessageCodec, Ws> for WsEcho {
        fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
            let _ = s.write(msg);
        }
    }
    watchdog(LIMIT, || {
        let _gate = GATE.lock().unwrap_or_else(|p| p.into_inner());
        let server = WsServer::builder()
            .session_options(SessionOptions::default().handshake_timeout(HANDSHAKE))
            .route("/echo", |_| Ok((MessageCodec, WsEcho)))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("exhaustion-ws", server);
        let mut opening = b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            .to_vec();
        while opening.len() < 1000 {
            opening.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let (held, quiet_turns, closed) = half_done(addr, &server, &opening);
        println!(
            "{PEERS} WebSocket upgrades stalled {} B into their head: {held} B of heap each, \
             {quiet_turns} reactor turns in a quiet second, {closed} cut at the timeout",
            opening.len()
        );
        assert_eq!(closed, PEERS, "half-done upgrades outlived the timeout");
        assert!(
            quiet_turns < 20,
            "{quiet_turns} turns while nothing happened"
        );
        assert!(
            held < 8 * opening.len() as isize + 2048,
            "a half-done upgrade holds {held} B of the server's heap for {} B sent",
            opening.len()
        );
        server.stop();
    });
}

/// The same over WebSocket: a frame header that claims a large payload, a few hundred
/// bytes of it, then silence, holds about what was sent (the limits mean the same on
/// every transport).
#[cfg(feature = "ws")]
#[test]
fn stalled_partial_websocket_frames_hold_about_what_their_peers_sent() {
    use common::{ws_echo_roundtrip, ws_upgrade};
    use getty::codec::{Message, MessageCodec};
    use getty::ws::{Ws, WsServer};
    struct WsEcho;
    impl Handler<MessageCodec, Ws> for WsEcho {
        fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
            let _ = s.write(msg);
        }
    }
    watchdog(LIMIT, || {
        let _gate = GATE.lock().unwrap_or_else(|p| p.into_inner());
        let server = WsServer::builder()
            .session_options(SessionOptions::default().max_message_len(64 << 20))
            .route("/echo", |_| Ok((MessageCodec, WsEcho)))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("exhaustion-ws-frames", server);
        let open = || {
            let mut peer = connect(addr);
            ws_upgrade(&mut peer);
            peer
        };
        // A masked binary frame header claiming 1 MiB (64-bit length), then `sent` bytes.
        let wire = |sent: usize| {
            let mut wire = vec![0x82, 0x80 | 127];
            wire.extend_from_slice(&(1u64 << 20).to_be_bytes());
            wire.extend_from_slice(&[0, 0, 0, 0]);
            wire.extend(std::iter::repeat_n(0x5a, sent));
            wire
        };
        let tiny = held_per_stalled(open, ws_echo_roundtrip, &wire(200));
        let small = held_per_stalled(open, ws_echo_roundtrip, &wire(300));
        println!(
            "{PEERS} WebSocket peers stalled into a 1 MiB frame: {tiny} B each for 200 B \
             sent, {small} B for 300 B"
        );
        assert!(
            small <= allowed(314),
            "a WebSocket peer that sent 300 bytes of a 1 MiB frame holds {small} B of the \
             server's heap (one that sent 200 holds {tiny} B)"
        );
        server.stop();
    });
}

/// Echoes over a unix stream socket, and records when an echo was refused.
struct UnixEcho(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Handler<LengthFieldCodec, getty::Unix> for UnixEcho {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec, getty::Unix>, msg: Bytes) {
        if s.write(msg).is_err() {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Unix stream peers that send without reading: the server stops reading each once its
/// echoes pass the high watermark (it holds about that much per peer, far below
/// `max_outbound`), and once a peer reads, the server reads again and every echo arrives
/// whole and in order.
#[test]
fn unix_peers_that_do_not_read_are_held_at_the_watermark_then_served_whole() {
    use std::io::{ErrorKind, Read};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;
    const UNIX_PEERS: usize = 200;
    const PAYLOAD: usize = 16 * 1024 - 4;
    const FRAMES: usize = 64; // 1 MiB per peer
    watchdog(LIMIT, || {
        let _gate = GATE.lock().unwrap_or_else(|p| p.into_inner());
        let path = std::env::temp_dir().join(format!(
            "getty-review-exhaustion-{}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let refused = Arc::new(AtomicUsize::new(0));
        let refused_in = refused.clone();
        let server = getty::unix::UnixServer::bind(path.as_path(), move |_| {
            Ok((LengthFieldCodec::default(), UnixEcho(refused_in.clone())))
        })
        .unwrap();
        let server = Running::serve("exhaustion-unix", server);
        let frame_of = |peer: usize, i: usize| {
            let mut wire = (PAYLOAD as u32).to_be_bytes().to_vec();
            let seed = (peer * FRAMES + i) as u32;
            wire.extend((0..PAYLOAD as u32).map(|k| (k ^ seed).wrapping_mul(31) as u8));
            wire
        };
        let mut peers: Vec<UnixStream> = (0..UNIX_PEERS)
            .map(|_| {
                let peer = UnixStream::connect(&path).unwrap();
                peer.set_nonblocking(true).unwrap();
                peer
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let base = live_bytes();
        // Phase 1: write without reading until no peer makes progress for a while.
        let mut sent = vec![0usize; UNIX_PEERS]; // bytes of the frames taken
        let wire_len = PAYLOAD + 4;
        let total = FRAMES * wire_len;
        let mut last_progress = Instant::now();
        let began = Instant::now();
        while last_progress.elapsed() < Duration::from_millis(500)
            && began.elapsed() < Duration::from_secs(30)
        {
            for (p, peer) in peers.iter_mut().enumerate() {
                while sent[p] < total {
                    let (i, at) = (sent[p] / wire_len, sent[p] % wire_len);
                    match peer.write(&frame_of(p, i)[at..]) {
                        Ok(n) => {
                            sent[p] += n;
                            last_progress = Instant::now();
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("peer {p}: {e}"),
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let held = (live_bytes() - base) / UNIX_PEERS as isize;
        let taken: usize = sent.iter().sum::<usize>() / UNIX_PEERS;
        println!(
            "{UNIX_PEERS} unix peers not reading: the kernel took {} KiB of each, the \
             server holds {} KiB per peer; {} echoes refused",
            taken >> 10,
            held >> 10,
            refused.load(Ordering::Relaxed)
        );
        assert!(
            sent.iter().all(|&s| s < total),
            "a peer got all its bytes taken while reading nothing: the test proves nothing"
        );
        // The high watermark (64 KiB), a message over it, and a read buffer of 64 KiB:
        // allow twice that, far below max_outbound (4 MiB).
        assert!(
            held < 512 * 1024,
            "the server holds {held} B per peer that does not read"
        );
        // Phase 2: read, and write the rest, until every echo came back.
        let mut got = vec![Vec::<u8>::new(); UNIX_PEERS];
        let mut checked = vec![0usize; UNIX_PEERS];
        let began = Instant::now();
        let mut buf = vec![0u8; 256 * 1024];
        while checked.iter().any(|&c| c < FRAMES) {
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "echoes stopped: {} of {} frames back",
                checked.iter().sum::<usize>(),
                UNIX_PEERS * FRAMES
            );
            let mut progress = false;
            for (p, peer) in peers.iter_mut().enumerate() {
                while sent[p] < total {
                    let (i, at) = (sent[p] / wire_len, sent[p] % wire_len);
                    match peer.write(&frame_of(p, i)[at..]) {
                        Ok(n) => {
                            sent[p] += n;
                            progress = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("peer {p}: {e}"),
                    }
                }
                loop {
                    match peer.read(&mut buf) {
                        Ok(0) => panic!("peer {p}: the server closed"),
                        Ok(n) => {
                            got[p].extend_from_slice(&buf[..n]);
                            progress = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("peer {p}: {e}"),
                    }
                }
                while got[p].len() >= wire_len {
                    assert!(
                        got[p][..wire_len] == frame_of(p, checked[p])[..],
                        "peer {p}: echo {} differs",
                        checked[p]
                    );
                    got[p].drain(..wire_len);
                    checked[p] += 1;
                }
            }
            if !progress {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        assert_eq!(refused.load(Ordering::Relaxed), 0, "echoes were refused");
        drop(peers);
        server.stop();
        let _ = std::fs::remove_file(&path);
    });
}

/// The same over TLS, once the handshake is done: a record header that claims a full
/// record, a few hundred bytes of it, then silence. The partial record waits in rustls's
/// own buffer (a read's worth) and in no pooled buffer of the session's.
#[cfg(feature = "tls")]
#[test]
fn stalled_partial_tls_records_hold_about_what_their_peers_sent() {
    use common::tls_exchange;
    use getty::codec::filter::TlsFilter;
    use getty::tls;
    const TLS_PEERS: usize = 300;
    watchdog(LIMIT, || {
        let _gate = GATE.lock().unwrap_or_else(|p| p.into_inner());
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let server = TcpServer::builder()
            .tls(tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
            .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("exhaustion-tls-records", server);
        let config = tls::client_config(chain.as_bytes()).unwrap();
        let mut peers: Vec<(TcpStream, TlsFilter)> = (0..TLS_PEERS)
            .map(|_| {
                let mut peer = connect(addr);
                let mut client = TlsFilter::client(config.clone(), "localhost").unwrap();
                tls_exchange(&mut peer, &mut client, b"", 0);
                (peer, client)
            })
            .collect();
        let (bystander, bystander_tls) = peers.last_mut().unwrap();
        let (echo, _) = tls_exchange(bystander, bystander_tls, &common::frame(b"idle"), 8);
        assert_eq!(&echo[..], &common::frame(b"idle")[..]);
        std::thread::sleep(Duration::from_millis(300));
        let base = live_bytes();
        // An application data record header claiming 16 KiB, then 300 bytes of it.
        let mut wire = vec![0x17, 0x03, 0x03, 0x40, 0x00];
        wire.extend(std::iter::repeat_n(0x5a, 300));
        for (peer, _) in &mut peers[..TLS_PEERS - 1] {
            peer.write_all(&wire).unwrap();
        }
        std::thread::sleep(Duration::from_millis(500));
        let (bystander, bystander_tls) = peers.last_mut().unwrap();
        let (echo, _) = tls_exchange(bystander, bystander_tls, &common::frame(b"during"), 10);
        assert_eq!(&echo[..], &common::frame(b"during")[..]);
        let held = (live_bytes() - base) / (TLS_PEERS - 1) as isize;
        println!(
            "{} TLS peers stalled 300 B into a 16 KiB record: {held} B of heap each",
            TLS_PEERS - 1
        );
        // rustls reads a record in 4 KiB steps: allow that on top of the usual bound.
        assert!(
            held <= allowed(wire.len()) + 4096 + 2 * 64 * 64 * 1024 / TLS_PEERS as isize,
            "a TLS peer that sent 300 bytes of a record holds {held} B of the server's heap"
        );
        drop(peers);
        server.stop();
    });
}

/// Connections reset mid-handshake (part of a ClientHello, part or all of an upgrade
/// request, then a RST), many at once: every upgrade or handshake entry ends, and the
/// server's descriptors and entries come back to their baseline.
#[cfg(all(feature = "ws", feature = "tls"))]
#[test]
fn connections_reset_mid_handshake_leave_entries_and_descriptors_at_baseline() {
    use common::{set_linger_zero, ws_echo_roundtrip, ws_upgrade};
    use getty::codec::filter::{Filter, TlsFilter};
    use getty::codec::{Message, MessageCodec};
    use getty::tls;
    use getty::ws::{Ws, WsServer};
    struct WsEcho;
    impl Handler<MessageCodec, Ws> for WsEcho {
        fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
            let _ = s.write(msg);
        }
    }
    const CYCLES: usize = 3000;
    const BATCH: usize = 500;
    let descriptors = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    watchdog(LIMIT, move || {
        let _gate = GATE.lock().unwrap_or_else(|p| p.into_inner());
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let tls_server = TcpServer::builder()
            .tls(tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
            .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
            .unwrap();
        let tls_addr = tls_server.local_addr();
        let ws_server = WsServer::builder()
            .route("/echo", |_| Ok((MessageCodec, WsEcho)))
            .bind("127.0.0.1:0")
            .unwrap();
        let ws_addr = ws_server.local_addr();
        let tls_running = Running::serve("exhaustion-reset-tls", tls_server);
        let ws_running = Running::serve("exhaustion-reset-ws", ws_server);
        let mut hello = bytes::BytesMut::new();
        let config = tls::client_config(chain.as_bytes()).unwrap();
        TlsFilter::client(config, "localhost")
            .unwrap()
            .flush(&mut hello)
            .unwrap();
        let full_upgrade: &[u8] =
            b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\n\r\n";
        let mut bystander = connect(ws_addr);
        ws_upgrade(&mut bystander);
        ws_echo_roundtrip(&mut bystander, b"warm");
        let base = (
            descriptors(),
            tls_running.entry_count(),
            ws_running.entry_count(),
        );
        let mut cycle = 0;
        while cycle < CYCLES {
            let batch: Vec<TcpStream> = (0..BATCH)
                .map(|i| {
                    let n = cycle + i;
                    let (addr, wire): (SocketAddr, &[u8]) = match n % 4 {
                        0 => (tls_addr, &hello[..hello.len() / 2]),
                        1 => (tls_addr, &hello[..]),
                        2 => (ws_addr, &full_upgrade[..40]),
                        _ => (ws_addr, full_upgrade),
                    };
                    let mut peer = connect(addr);
                    let _ = peer.write_all(wire);
                    set_linger_zero(&peer);
                    peer
                })
                .collect();
            drop(batch); // a RST each, all at once
            cycle += BATCH;
            ws_echo_roundtrip(&mut bystander, &(cycle as u32).to_be_bytes());
        }
        let accepted = |running: &Running| getty::Metrics::of(running.handle()).unwrap().accepted;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        // Every reset connection was accepted (none is still waiting in a backlog).
        while accepted(&tls_running) < CYCLES as u64 / 2
            || accepted(&ws_running) < CYCLES as u64 / 2 + 1
        {
            assert!(
                std::time::Instant::now() < deadline,
                "connections never accepted"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let now = || {
            (
                descriptors(),
                tls_running.entry_count(),
                ws_running.entry_count(),
            )
        };
        while now() != base && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let after = now();
        println!(
            "{CYCLES} connections reset mid-handshake, {BATCH} at a time: (descriptors, TLS \
             entries, WebSocket entries) {base:?} -> {after:?}"
        );
        assert_eq!(
            after, base,
            "handshakes reset by their peers were left behind"
        );
        ws_echo_roundtrip(&mut bystander, b"after");
        tls_running.stop();
        ws_running.stop();
    });
}
