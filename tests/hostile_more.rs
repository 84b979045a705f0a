//! More hostile peers on real sockets, each beside a well-behaved bystander whose echoes are
//! checked byte for byte while the attack runs: peers that never read, WebSocket floods of
//! pings, pongs and empty continuations, deflate bombs over both compression paths,
//! thousands of concurrent sessions with random write splits, and a server out of
//! descriptors (in a child process, under a low `RLIMIT_NOFILE`). Every test prints its
//! figures (time to close, RSS delta, descriptors, counts); the bounds are generous, since
//! they catch hangs, leaks, lost bytes and spins, not speed.
#![cfg(target_os = "linux")]

mod common;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, Decoder, Encoder, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{Error, Handler, Session, SessionOptions, Transport};

const TEST_LIMIT: Duration = Duration::from_secs(180);

/// An echo handler that reports opens, errors and closes (never messages: the floods here
/// would fill the test's channel) and counts the bytes it was handed.
struct Quiet {
    tx: Sender<Ev>,
    received: Arc<AtomicU64>,
}

impl Quiet {
    fn new(tx: &Sender<Ev>, received: &Arc<AtomicU64>) -> Quiet {
        Quiet {
            tx: tx.clone(),
            received: received.clone(),
        }
    }
}

impl<C, T> Handler<C, T> for Quiet
where
    C: Decoder<Item = Bytes> + Encoder<Bytes> + 'static,
    T: Transport<Addr = SocketAddr>,
{
    fn on_open(&mut self, s: &mut Session<C, T>) -> io::Result<()> {
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<C, T>, msg: Bytes) {
        self.received.fetch_add(msg.len() as u64, Ordering::Relaxed);
        let _ = s.write(msg);
    }

    fn on_error(&mut self, s: &mut Session<C, T>, error: &Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }

    fn on_close(&mut self, s: &mut Session<C, T>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

/// Descriptors open in this process.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A payload for bystander round `round`: its size and bytes vary with the round, so a
/// lost, repeated or shifted byte shows.
fn bystander_payload(round: u32) -> Vec<u8> {
    let len = 1 + (round as usize * 97) % 3000;
    (0..len)
        .map(|i| (i as u32 ^ round.wrapping_mul(31)) as u8)
        .collect()
}

/// Percentiles of `samples` (sorted here), as "p50 / max".
fn spread(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    samples.sort();
    format!(
        "p50 {:?} / max {:?}",
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    )
}

fn tcp_echo_server(
    name: &str,
    options: SessionOptions,
    tx: &Sender<Ev>,
    received: &Arc<AtomicU64>,
) -> (Running, SocketAddr) {
    let (tx, received) = (tx.clone(), received.clone());
    let server = TcpServer::builder()
        .session_options(options)
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), Quiet::new(&tx, &received)))
        })
        .unwrap();
    let addr = server.local_addr();
    (Running::serve(name, server), addr)
}

/// Waits (at most `STEP`) until `peer`'s connection is reset or hung up, without reading
/// from it: POLLERR and POLLHUP are reported whatever events are asked for.
fn wait_for_hangup(peer: &TcpStream) -> bool {
    let mut pfd = libc::pollfd {
        fd: peer.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        // SAFETY: one valid pollfd for a descriptor `peer` owns.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n > 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------
// 1. Peers that never read
// ---------------------------------------------------------------------------------------

const NEVER_READERS: usize = 20;
const NEVER_READER_BYTES: usize = 8 << 20;

/// What one peer that never reads saw: bytes the kernel took from it, and how long after
/// its last progress the server ended the connection.
struct Unread {
    sent: usize,
    closed_after_stall: Duration,
}

/// Sends `total` bytes of `wire` frames, never reading, until the kernel stops taking them
/// and the server ends the connection.
fn never_read(addr: SocketAddr, wire: &[u8], total: usize) -> Unread {
    let mut peer = connect(addr);
    let (mut sent, mut last_progress) = (0usize, Instant::now());
    let mut failed = false;
    while sent < total && !failed {
        let mut pending = wire;
        while !pending.is_empty() {
            match peer.write(pending) {
                Ok(n) => {
                    pending = &pending[n..];
                    sent += n;
                    last_progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    assert!(
                        matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                        ),
                        "a never-reading peer's write failed with {e} after {sent} bytes"
                    );
                    failed = true;
                    break;
                }
            }
        }
    }
    if !failed {
        assert!(
            wait_for_hangup(&peer),
            "the server never ended a peer that never reads (all {sent} bytes taken)"
        );
    }
    Unread {
        sent,
        closed_after_stall: last_progress.elapsed(),
    }
}

/// Twenty peers each send 8 MiB of frames and never read. The server stops reading them
/// once their echoes pass the watermark (so it holds a bounded amount for each), ends each
/// at the write-stall timeout, and the bystander's echoes keep flowing meanwhile.
#[test]
fn peers_that_never_read_are_held_then_ended_at_the_write_stall() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let stall = Duration::from_secs(1);
        let (tx, mut events) = Events::new();
        let received = Arc::new(AtomicU64::new(0));
        let options = SessionOptions::default().write_stall_timeout(stall);
        let (server, addr) = tcp_echo_server("hostile-never-read", options, &tx, &received);
        let mut bystander = connect(addr);
        echo_roundtrip(&mut bystander, b"warm");
        let (fds, entries, baseline) = (open_descriptors(), server.entry_count(), resident_bytes());
        let mut bystander_bytes = received.load(Ordering::Relaxed);

        let wire: Arc<Vec<u8>> = Arc::new(frame(&[0xa5; 64 * 1024 - 4]));
        let began = Instant::now();
        let peers: Vec<_> = (0..NEVER_READERS)
            .map(|_| {
                let wire = wire.clone();
                std::thread::spawn(move || never_read(addr, &wire, NEVER_READER_BYTES))
            })
            .collect();
        let (mut rounds, mut peak) = (0u32, baseline);
        while peers.iter().any(|p| !p.is_finished()) {
            let payload = bystander_payload(rounds);
            echo_roundtrip(&mut bystander, &payload);
            bystander_bytes += payload.len() as u64;
            rounds += 1;
            peak = peak.max(resident_bytes());
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = began.elapsed();
        let unread: Vec<Unread> = peers.into_iter().map(|p| p.join().unwrap()).collect();
        let stalls = events.wait_n("a write stall per peer", NEVER_READERS, |e| {
            matches!(
                e,
                Ev::Error {
                    err: ErrKind::WriteStalled(_),
                    ..
                }
            )
        });
        let deadline = Instant::now() + STEP;
        while server.entry_count() > entries && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (fds_after, entries_after) = (open_descriptors(), server.entry_count());
        let read_by_server = received.load(Ordering::Relaxed) - bystander_bytes;
        let taken: usize = unread.iter().map(|u| u.sent).sum();
        let mut closes: Vec<Duration> = unread.iter().map(|u| u.closed_after_stall).collect();
        let growth = peak.saturating_sub(baseline);
        println!(
            "never-reading peers: {NEVER_READERS} x {} MiB offered; the kernel took {} MiB, \
             the server read {} MiB (its echoes unread); {} write stalls; closed after the \
             peer's last progress: {}; all done in {took:?}; peak RSS +{} KiB; descriptors \
             {fds} -> {fds_after}, sessions {entries} -> {entries_after}; {rounds} bystander \
             echoes meanwhile",
            NEVER_READER_BYTES >> 20,
            taken >> 20,
            read_by_server >> 20,
            stalls.len(),
            spread(&mut closes),
            growth >> 10,
        );
        // A server that kept reading would have read everything the kernel took from the
        // peers: nothing moves in a stalled second. What it left in its receive buffers
        // is what flow control held back (how much depends on the kernel's buffer sizes).
        let held_back = (taken as u64).saturating_sub(read_by_server);
        assert!(
            held_back >= NEVER_READERS as u64 * 64 * 1024,
            "the server kept reading peers whose echoes pile up: read {read_by_server} of \
             {taken} bytes"
        );
        assert!(
            growth < 64 << 20,
            "RSS grew by {} KiB holding peers that never read",
            growth >> 10
        );
        assert_eq!(entries_after, entries, "every stalled session ended");
        assert!(
            fds_after <= fds + 2,
            "descriptors leaked: {fds} -> {fds_after}"
        );
        echo_roundtrip(&mut bystander, b"after");
        server.stop();
        events.check_contract();
    });
}

// ---------------------------------------------------------------------------------------
// 2. WebSocket floods
// ---------------------------------------------------------------------------------------

/// A client frame: masked, with `opcode` (0 continuation, 1 text, 2 binary, 9 ping, 10
/// pong).
#[cfg(feature = "ws")]
fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= 0xffff, "short frames only");
    let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    let mask = [0x5c, 0x13, 0xe7, 0x42];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads one (unmasked) server frame: its first byte (FIN and opcode) and payload.
#[cfg(feature = "ws")]
fn read_server_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    use std::io::Read;
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
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).expect("a frame payload");
    (head[0], payload)
}

/// A WebSocket echo round trip of a binary message on an upgraded connection, checked
/// byte for byte.
#[cfg(feature = "ws")]
fn ws_roundtrip(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(&client_frame(2, true, payload)).unwrap();
    let (head, echo) = read_server_frame(stream);
    assert_eq!(head, 0x82, "the bystander's echo is one binary frame");
    assert!(echo == payload, "the bystander's echo differs");
}

/// Writes `batch` (whole frames of `frame_len` bytes each) again and again without
/// reading, until `max_frames` are sent or the server has taken nothing for a second;
/// the bystander runs a round trip and RSS is sampled every 64 KiB or so.
#[cfg(feature = "ws")]
struct Flooded {
    /// Frames begun (the last one may be cut short).
    frames: usize,
    /// The rest of the last frame, if it was cut short.
    rest: Vec<u8>,
    /// From the first byte to the last one the server took.
    took: Duration,
    /// The peak RSS of this process meanwhile.
    peak_rss: usize,
}

#[cfg(feature = "ws")]
fn flood(
    flooder: &mut TcpStream,
    batch: &[u8],
    frame_len: usize,
    max_frames: usize,
    bystander: &mut TcpStream,
    round: &mut u32,
) -> Flooded {
    flooder.set_nonblocking(true).unwrap();
    let (mut written, mut peak) = (0usize, resident_bytes());
    let began = Instant::now();
    let mut last_progress = began;
    let mut next_check = 0usize;
    let total = max_frames * frame_len;
    while written < total && last_progress.elapsed() < Duration::from_secs(1) {
        let at = written % batch.len();
        let end = batch.len().min(at + total - written);
        match flooder.write(&batch[at..end]) {
            Ok(n) => {
                written += n;
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("the flooder's write failed after {written} bytes: {e}"),
        }
        if written >= next_check {
            next_check = written + (64 << 10);
            ws_roundtrip(bystander, &bystander_payload(*round));
            *round += 1;
            peak = peak.max(resident_bytes());
        }
    }
    flooder.set_nonblocking(false).unwrap();
    let cut = written % frame_len;
    let at = written % batch.len();
    let rest = if cut == 0 {
        Vec::new()
    } else {
        batch[at..at + frame_len - cut].to_vec()
    };
    Flooded {
        frames: written.div_ceil(frame_len),
        rest,
        took: last_progress - began,
        peak_rss: peak.max(resident_bytes()),
    }
}

#[cfg(feature = "ws")]
fn ws_echo_server(
    builder: getty::ws::WsServerBuilder,
    tx: &Sender<Ev>,
    received: &Arc<AtomicU64>,
) -> (Running, SocketAddr) {
    let (tx, received) = (tx.clone(), received.clone());
    let server = builder
        .route("/echo", move |_| {
            Ok((getty::codec::RawCodec, Quiet::new(&tx, &received)))
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("hostile-ws", server), addr)
}

/// Floods of pings (the peer never reads while it floods), of unsolicited pongs, and of
/// empty continuation frames inside one message. Pongs coalesce and the ping flood is held
/// in TCP's window; pongs cost nothing; the continuations either make one message or close
/// with the RFC's code. Memory stays bounded and the bystander never misses an echo.
#[cfg(feature = "ws")]
#[test]
fn websocket_floods_of_pings_pongs_and_empty_continuations_are_bounded() {
    use getty::ws::WsServer;
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let (tx, mut events) = Events::new();
        let received = Arc::new(AtomicU64::new(0));
        let (server, addr) = ws_echo_server(WsServer::builder(), &tx, &received);
        let mut bystander = connect(addr);
        ws_upgrade(&mut bystander);
        let mut round = 0u32;
        ws_roundtrip(&mut bystander, b"warm");

        // Pings, 125 bytes each, with nothing read until the flood stops (at most a
        // million; the server stops taking them long before).
        const MAX_PINGS: usize = 1_000_000;
        let ping = client_frame(9, true, &[b'p'; 125]);
        let batch = ping.repeat(512);
        let mut flooder = connect(addr);
        ws_upgrade(&mut flooder);
        let baseline = resident_bytes();
        let pings = flood(
            &mut flooder,
            &batch,
            ping.len(),
            MAX_PINGS,
            &mut bystander,
            &mut round,
        );
        // Now it reads: pongs (at most one per ping, with a ping's payload), then the echo
        // of a message sent after the flood. The server reads again only once its pongs
        // drain, so the reading runs on its own thread.
        let mut reader = flooder.try_clone().unwrap();
        let pong_counter = std::thread::spawn(move || {
            let mut pongs = 0usize;
            loop {
                let (head, payload) = read_server_frame(&mut reader);
                match head {
                    0x8a => {
                        assert_eq!(payload, [b'p'; 125], "a pong carries a ping's payload");
                        pongs += 1;
                    }
                    0x82 => {
                        assert_eq!(payload, b"after the pings");
                        return pongs;
                    }
                    other => panic!("unexpected frame {other:#x} after a ping flood"),
                }
            }
        });
        flooder.write_all(&pings.rest).unwrap();
        flooder
            .write_all(&client_frame(2, true, b"after the pings"))
            .unwrap();
        let pongs = pong_counter.join().unwrap();
        let ping_growth = pings.peak_rss.saturating_sub(baseline);
        let (took, pings) = (pings.took, pings.frames);
        let held = if pings < MAX_PINGS {
            "then the server stopped reading"
        } else {
            "never held"
        };
        println!(
            "ping flood: {pings} pings taken in {took:?}, {held}; {pongs} pongs once \
             read; peak RSS +{} KiB; the session survived",
            ping_growth >> 10
        );
        assert!(pings >= 10_000, "only {pings} pings were taken");
        assert!(pings < MAX_PINGS, "the server never stopped taking pings");
        // Every ping is answered at most once: each in turn while flow control holds the
        // rest unread, or only the latest of those already read (RFC 6455 5.5.3 allows
        // both); memory stays bounded either way.
        assert!(
            pongs >= 1 && pongs <= pings,
            "{pongs} pongs for {pings} pings"
        );
        assert!(
            ping_growth < 16 << 20,
            "a ping flood grew RSS by {} KiB",
            ping_growth >> 10
        );

        // Unsolicited pongs: nothing to answer, nothing to keep.
        let pong = client_frame(10, true, &[b'q'; 125]);
        let batch = pong.repeat(512);
        let mut ponger = connect(addr);
        ws_upgrade(&mut ponger);
        let baseline = resident_bytes();
        let pongs = flood(
            &mut ponger,
            &batch,
            pong.len(),
            100_000,
            &mut bystander,
            &mut round,
        );
        ws_roundtrip(&mut ponger, b"after the pongs");
        let pong_growth = pongs.peak_rss.saturating_sub(baseline);
        println!(
            "pong flood: {} unsolicited pongs in {:?}, no reply but the next echo; peak RSS \
             +{} KiB",
            pongs.frames,
            pongs.took,
            pong_growth >> 10
        );
        assert_eq!(pongs.frames, 100_000, "the server stopped reading pongs");

        // A text message in 100,002 fragments, all but the first and last empty.
        let empty = client_frame(0, false, b"");
        let batch = empty.repeat(1024);
        let mut fragmenter = connect(addr);
        ws_upgrade(&mut fragmenter);
        fragmenter.write_all(&client_frame(1, false, b"a")).unwrap();
        let baseline = resident_bytes();
        let fragments = flood(
            &mut fragmenter,
            &batch,
            empty.len(),
            100_000,
            &mut bystander,
            &mut round,
        );
        let _ = fragmenter.write_all(&client_frame(0, true, b"b"));
        let (head, payload) = read_server_frame(&mut fragmenter);
        let ending = match head & 0x0f {
            1 | 2 => {
                assert_eq!(payload, b"ab", "the fragmented message, whole");
                "survived: the message echoed whole".to_string()
            }
            8 => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                assert!(
                    [1008, 1009].contains(&code),
                    "closed with {code} for too many fragments"
                );
                let _ = read_to_end(&mut fragmenter);
                format!("closed with {code}")
            }
            other => panic!("unexpected frame opcode {other} after the fragments"),
        };
        let fragment_growth = fragments.peak_rss.saturating_sub(baseline);
        println!(
            "continuation flood: {} empty continuations in {:?}, {ending}; peak RSS +{} KiB; \
             {round} bystander echoes over the three floods",
            fragments.frames,
            fragments.took,
            fragment_growth >> 10
        );
        assert_eq!(
            fragments.frames, 100_000,
            "the server stopped reading fragments"
        );
        for (what, growth) in [
            ("pings", ping_growth),
            ("pongs", pong_growth),
            ("continuations", fragment_growth),
        ] {
            assert!(
                growth < 16 << 20,
                "RSS grew by {} KiB under a flood of {what}",
                growth >> 10
            );
        }
        ws_roundtrip(&mut bystander, b"after");
        drop((flooder, ponger, fragmenter, bystander));
        server.stop();
        events.check_contract();
    });
}

// ---------------------------------------------------------------------------------------
// 3. Deflate bombs
// ---------------------------------------------------------------------------------------

/// Upgrades `stream` at `/echo` offering permessage-deflate, and returns the response head.
#[cfg(all(feature = "ws", feature = "deflate"))]
fn ws_upgrade_offering_deflate(stream: &mut TcpStream) -> String {
    use std::io::Read;
    stream
        .write_all(
            b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("the upgrade response");
        head.push(byte[0]);
        assert!(head.len() < 4096, "an overlong response head");
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Compressed messages of zeros (1 MiB and 16 MiB inflated, a few KiB on the wire) to a
/// server that allows 64 KiB: each closes its session with 1009 while RSS stays flat, and
/// a bystander keeps echoing between them.
#[cfg(all(feature = "ws", feature = "deflate"))]
#[test]
fn a_permessage_deflate_bomb_is_closed_with_1009() {
    use bytes::BytesMut;
    use getty::codec::ws::{Config, DeflateConfig, Protocol, Role};
    use getty::codec::MessageKind;
    use getty::ws::WsServer;
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let max = 64 * 1024;
        let (tx, mut events) = Events::new();
        let received = Arc::new(AtomicU64::new(0));
        let builder = WsServer::builder()
            .deflate(Some(DeflateConfig::default()))
            .session_options(SessionOptions::default().max_message_len(max));
        let (server, addr) = ws_echo_server(builder, &tx, &received);
        let mut bystander = connect(addr);
        ws_upgrade(&mut bystander);
        ws_roundtrip(&mut bystander, b"warm");
        let unlimited = Config {
            max_message_size: usize::MAX,
            max_frame_size: usize::MAX,
        };
        for (round, inflated) in [(1u32, 1usize << 20), (2, 16 << 20)] {
            let mut bomber = connect(addr);
            let head = ws_upgrade_offering_deflate(&mut bomber);
            assert!(head.contains("permessage-deflate"), "{head}");
            let mut client = Protocol::new(Role::Client, unlimited, Some(DeflateConfig::default()));
            let mut bomb = BytesMut::zeroed(inflated);
            client
                .encode_message(MessageKind::Binary, &mut bomb, 0)
                .unwrap();
            let baseline = resident_bytes();
            let began = Instant::now();
            // The server may close before it has read the whole bomb.
            let _ = bomber.write_all(&bomb);
            let (first, payload) = read_server_frame(&mut bomber);
            let took = began.elapsed();
            let growth = resident_bytes().saturating_sub(baseline);
            assert_eq!(first, 0x88, "a close frame, not an echo");
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let (_, ended) = read_to_end(&mut bomber);
            println!(
                "permessage-deflate bomb: {} KiB inflated from {} bytes on the wire, max \
                 {} KiB: closed with {code} in {took:?} ({ended:?}); RSS +{} KiB",
                inflated >> 10,
                bomb.len(),
                max >> 10,
                growth >> 10
            );
            assert_eq!(code, 1009, "the RFC's code for a message too big");
            assert!(
                growth < 8 << 20,
                "RSS grew by {} KiB for a bomb",
                growth >> 10
            );
            ws_roundtrip(&mut bystander, &bystander_payload(round));
        }
        let errors = events.wait_n("the bombs' errors", 2, |e| matches!(e, Ev::Error { .. }));
        for error in errors {
            assert!(
                matches!(error, Ev::Error { err: ErrKind::MessageTooLong { len, max: m }, .. }
                    if m == max && len <= max + 1),
                "refused past the limit, not inflated: {error:?}"
            );
        }
        // Nothing of a bomb reached the handler: it got the bystander's bytes alone.
        let bystander_bytes = 4 + bystander_payload(1).len() + bystander_payload(2).len();
        assert_eq!(received.load(Ordering::Relaxed), bystander_bytes as u64);
        ws_roundtrip(&mut bystander, b"after");
        drop(bystander);
        server.stop();
        events.check_contract();
    });
}

/// A client of a compressed lines server: its own deflate filter, one for both directions.
#[cfg(feature = "deflate")]
struct CompressedLines {
    stream: TcpStream,
    filter: getty::codec::filter::DeflateFilter,
    wire_in: bytes::BytesMut,
    plain_in: bytes::BytesMut,
}

#[cfg(feature = "deflate")]
impl CompressedLines {
    fn connect(addr: SocketAddr) -> CompressedLines {
        CompressedLines {
            stream: connect(addr),
            filter: getty::codec::filter::DeflateFilter::new(getty::codec::Compression::Default),
            wire_in: bytes::BytesMut::new(),
            plain_in: bytes::BytesMut::new(),
        }
    }

    /// Sends `line` (with its `\n`) and checks the echo, byte for byte.
    fn roundtrip(&mut self, line: &[u8]) {
        use getty::codec::filter::Filter;
        use std::io::Read;
        let mut wire = bytes::BytesMut::new();
        self.filter.encode(line, &mut wire).unwrap();
        self.filter.encode(b"\n", &mut wire).unwrap();
        self.filter.flush(&mut wire).unwrap();
        self.stream.write_all(&wire).unwrap();
        while !self.plain_in.contains(&b'\n') {
            let mut buf = [0u8; 16 * 1024];
            let n = self.stream.read(&mut buf).expect("the bystander's echo");
            assert!(n > 0, "the server closed the bystander");
            self.wire_in.extend_from_slice(&buf[..n]);
            self.filter
                .decode(&mut self.wire_in, &mut self.plain_in, usize::MAX)
                .unwrap();
        }
        let end = self.plain_in.iter().position(|b| *b == b'\n').unwrap();
        let echo = self.plain_in.split_to(end + 1);
        assert!(&echo[..end] == line, "the bystander's echo differs");
    }
}

/// A deflate stream of zeros: the first MiB compressed, then a block that stands for every
/// further MiB (once the window is all zeros, each MiB compresses to the same bytes), so a
/// GiB can be sent without compressing a GiB.
#[cfg(feature = "deflate")]
fn zeros_stream() -> (Vec<u8>, Vec<u8>) {
    use getty::codec::filter::{DeflateFilter, Filter};
    let zeros = vec![0u8; 1 << 20];
    let mut filter = DeflateFilter::new(getty::codec::Compression::Best);
    let mut compress = || {
        let mut wire = bytes::BytesMut::new();
        filter.encode(&zeros, &mut wire).unwrap();
        filter.flush(&mut wire).unwrap();
        wire.to_vec()
    };
    let head = compress();
    let block = compress();
    assert_eq!(block, compress(), "every further MiB compresses alike");
    (head, block)
}

/// A compressed TCP session whose stream inflates to a GiB of zeros without a line break
/// (a few hundred KiB on the wire): the session ends at the max message length without
/// inflating the rest, RSS stays flat, and a compressed bystander keeps echoing.
#[cfg(feature = "deflate")]
#[test]
fn a_bomb_through_the_tcp_deflate_filter_ends_its_session_only() {
    use getty::codec::{Compression, LinesCodec};
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let max = 64 * 1024;
        let (tx, mut events) = Events::new();
        let received = Arc::new(AtomicU64::new(0));
        let server = {
            let (tx, received) = (tx.clone(), received.clone());
            TcpServer::builder()
                .session_options(
                    SessionOptions::default()
                        .compression(Some(Compression::Default))
                        .max_message_len(max),
                )
                .bind("127.0.0.1:0", move |_| {
                    Ok((LinesCodec::new(64 << 20), Quiet::new(&tx, &received)))
                })
                .unwrap()
        };
        let addr = server.local_addr();
        let server = Running::serve("hostile-deflate-bomb", server);
        let mut bystander = CompressedLines::connect(addr);
        bystander.roundtrip(b"warm");
        let bystander_line = |round: u32| -> Vec<u8> {
            bystander_payload(round)
                .iter()
                .map(|b| b'a' + b % 26)
                .collect()
        };

        let (head, block) = zeros_stream();
        let baseline = resident_bytes();
        let began = Instant::now();
        let bomber = std::thread::spawn(move || {
            let mut bomber = connect(addr);
            let mut wire = head.len();
            let mut inflated = 1usize << 20;
            let _ = bomber.write_all(&head);
            // A GiB inflated, unless the server ends it first (a reset fails a write).
            for _ in 0..1023 {
                if bomber.write_all(&block).is_err() {
                    break;
                }
                wire += block.len();
                inflated += 1 << 20;
            }
            let (_, ended) = read_to_end(&mut bomber);
            (wire, inflated, ended, began.elapsed())
        });
        let (mut rounds, mut peak) = (0u32, baseline);
        while !bomber.is_finished() || rounds < 20 {
            bystander.roundtrip(&bystander_line(rounds));
            rounds += 1;
            peak = peak.max(resident_bytes());
            std::thread::sleep(Duration::from_millis(5));
        }
        let (wire, inflated, ended, took) = bomber.join().unwrap();
        let error = events.wait("the bomb's error", |e| matches!(e, Ev::Error { .. }));
        let growth = peak.max(resident_bytes()).saturating_sub(baseline);
        println!(
            "tcp deflate bomb: sent {} KiB on the wire ({} MiB inflated) before the end \
             ({ended:?}) after {took:?}; {error:?}; peak RSS +{} KiB; {rounds} bystander \
             echoes meanwhile",
            wire >> 10,
            inflated >> 20,
            growth >> 10
        );
        assert!(
            matches!(error, Ev::Error { err: ErrKind::MessageTooLong { len, max: m }, .. }
                if m == max && len <= max + 64 * 1024 + 1),
            "refused at the limit, not inflated: {error:?}"
        );
        assert!(
            growth < 16 << 20,
            "RSS grew by {} KiB for a bomb",
            growth >> 10
        );
        bystander.roundtrip(b"after");
        drop(bystander);
        server.stop();
        events.check_contract();
    });
}

// ---------------------------------------------------------------------------------------
// 4. Thousands of concurrent sessions with random write splits
// ---------------------------------------------------------------------------------------

const SPLIT_CLIENTS: usize = 2_000;
const SPLIT_WORKERS: usize = 4;
const SPLIT_FRAMES: usize = 20;

/// Raises this process's soft descriptor limit to its hard limit; returns the new limit.
fn raise_descriptor_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        limit.rlim_cur as u64
    }
}

/// One client of the split test: its frames' wire bytes, cut into pieces at random byte
/// boundaries; how far it has written and how much of the echo has come back.
struct Splitter {
    stream: TcpStream,
    wire: Vec<u8>,
    cuts: Vec<usize>,
    pieces_sent: usize,
    echoed: usize,
}

impl Splitter {
    fn new(addr: SocketAddr, rng: &mut fastrand::Rng) -> Splitter {
        let mut wire = Vec::new();
        for _ in 0..SPLIT_FRAMES {
            let len = rng.usize(0..=1500);
            let payload: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            wire.extend_from_slice(&frame(&payload));
        }
        // Cuts every 1 to 8 bytes half of the time, every 1 to 1 KiB otherwise: headers
        // split inside, bodies in many pieces.
        let mut cuts = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let longest = if rng.bool() { 8 } else { 1024 };
            at = (at + rng.usize(1..=longest)).min(wire.len());
            cuts.push(at);
        }
        let stream = connect(addr);
        stream.set_nonblocking(true).unwrap();
        Splitter {
            stream,
            wire,
            cuts,
            pieces_sent: 0,
            echoed: 0,
        }
    }

    fn done(&self) -> bool {
        self.echoed == self.wire.len()
    }

    /// Writes the next piece, if the socket takes it, and reads what came back, checking
    /// it against what was sent. Returns whether anything moved.
    fn step(&mut self, buf: &mut [u8]) -> bool {
        use std::io::Read;
        let mut moved = false;
        if self.pieces_sent < self.cuts.len() {
            let from = match self.pieces_sent {
                0 => 0,
                n => self.cuts[n - 1],
            };
            let piece = &self.wire[from..self.cuts[self.pieces_sent]];
            match self.stream.write(piece) {
                Ok(n) if n == piece.len() => {
                    self.pieces_sent += 1;
                    moved = true;
                }
                // The rest of a piece cut short by a full socket is a piece of its own.
                Ok(n) => {
                    self.cuts.insert(self.pieces_sent, from + n);
                    self.pieces_sent += 1;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("a split client's write failed: {e}"),
            }
        }
        match self.stream.read(buf) {
            Ok(0) => panic!(
                "the server closed a split client after {} bytes",
                self.echoed
            ),
            Ok(n) => {
                let expected = &self.wire[self.echoed..];
                assert!(n <= expected.len(), "more echoed than sent");
                assert!(
                    buf[..n] == expected[..n],
                    "an echo differs at {}",
                    self.echoed
                );
                self.echoed += n;
                moved = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("a split client's read failed: {e}"),
        }
        moved
    }
}

/// Runs `clients` split clients to the end on this thread; returns the writes made.
fn run_splitters(addr: SocketAddr, clients: usize, seed: u64) -> usize {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut splitters: Vec<Splitter> = (0..clients)
        .map(|_| Splitter::new(addr, &mut rng))
        .collect();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(120);
    while splitters.iter().any(|s| !s.done()) {
        assert!(Instant::now() < deadline, "split clients never finished");
        let mut moved = false;
        for s in splitters.iter_mut().filter(|s| !s.done()) {
            moved |= s.step(&mut buf);
        }
        if !moved {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    splitters.iter().map(|s| s.cuts.len()).sum()
}

/// Two thousand clients at once, each sending twenty length-prefixed frames cut at random
/// byte boundaries into many writes: every echo comes back whole and in order, the
/// bystander's too, and every session ends when its client goes.
#[test]
fn thousands_of_sessions_with_random_write_splits_echo_every_byte() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let limit = raise_descriptor_limit();
        if limit < 5_000 {
            println!(
                "skipped: {SPLIT_CLIENTS} clients and their sessions need 5,000 descriptors; \
                 the hard limit is {limit}"
            );
            return;
        }
        let (tx, mut events) = Events::new();
        let received = Arc::new(AtomicU64::new(0));
        let (server, addr) =
            tcp_echo_server("hostile-splits", SessionOptions::default(), &tx, &received);
        let mut bystander = connect(addr);
        echo_roundtrip(&mut bystander, b"warm");
        let (fds, entries, baseline) = (open_descriptors(), server.entry_count(), resident_bytes());
        let began = Instant::now();
        let workers: Vec<_> = (0..SPLIT_WORKERS)
            .map(|w| {
                std::thread::spawn(move || {
                    run_splitters(addr, SPLIT_CLIENTS / SPLIT_WORKERS, 0x5eed + w as u64)
                })
            })
            .collect();
        let (mut rounds, mut peak_sessions, mut peak) = (0u32, 0usize, baseline);
        while workers.iter().any(|w| !w.is_finished()) {
            echo_roundtrip(&mut bystander, &bystander_payload(rounds));
            rounds += 1;
            peak_sessions = peak_sessions.max(server.entry_count());
            peak = peak.max(resident_bytes());
            std::thread::sleep(Duration::from_millis(20));
        }
        let writes: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
        let took = began.elapsed();
        let deadline = Instant::now() + STEP;
        while server.entry_count() > entries && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (fds_after, entries_after) = (open_descriptors(), server.entry_count());
        println!(
            "random splits: {SPLIT_CLIENTS} clients x {SPLIT_FRAMES} frames, {writes} writes \
             ({} MiB echoed), all whole and in order in {took:?}; peak {peak_sessions} \
             entries on the reactor; peak RSS +{} MiB (clients included); descriptors \
             {fds} -> {fds_after}, entries {entries} -> {entries_after}; {rounds} bystander \
             echoes meanwhile",
            received.load(Ordering::Relaxed) >> 20,
            peak.saturating_sub(baseline) >> 20,
        );
        let opened = events.count(|e| matches!(e, Ev::Open { .. }));
        assert_eq!(opened, SPLIT_CLIENTS + 1, "every client had its session");
        assert_eq!(
            entries_after, entries,
            "every session ended with its client"
        );
        assert!(
            fds_after <= fds + 2,
            "descriptors leaked: {fds} -> {fds_after}"
        );
        echo_roundtrip(&mut bystander, b"after");
        server.stop();
        events.check_contract();
        let errors = events.count(|e| matches!(e, Ev::Error { .. }));
        assert_eq!(errors, 0, "a well-behaved client's session failed");
    });
}

// ---------------------------------------------------------------------------------------
// 5. Descriptor exhaustion, in a child process
// ---------------------------------------------------------------------------------------

/// Set (to the descriptor limit) in the environment of the child that runs the server.
const FD_CHILD_ENV: &str = "GETTY_HOSTILE_FD_LIMIT";

/// The server half of `a_server_out_of_descriptors_neither_spins_nor_stops_serving`, run by
/// it in a child process (a test binary is one process, and this one must not lower the
/// limit of the others): an echo server under a low `RLIMIT_NOFILE` that prints its address
/// and runs until its stdin closes. Without the variable it does nothing.
#[test]
#[ignore = "the server half of a_server_out_of_descriptors_neither_spins_nor_stops_serving"]
fn fd_limited_server() {
    let Ok(limit) = std::env::var(FD_CHILD_ENV) else {
        return;
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut rlimit: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlimit), 0);
        rlimit.rlim_cur = limit.parse().expect("a descriptor limit");
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit), 0);
    }
    let (tx, _events) = Events::new();
    let received = Arc::new(AtomicU64::new(0));
    let (server, addr) = tcp_echo_server("fd-limited", SessionOptions::default(), &tx, &received);
    println!("ADDR {addr}");
    io::stdout().flush().unwrap();
    let _ = io::Read::read_to_end(&mut io::stdin(), &mut Vec::new());
    server.stop();
}

/// CPU time (user and system, every thread) the process `pid` has used.
fn process_cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the child's stat");
    // The fields after the command name (which may hold spaces) in parentheses: the
    // state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

fn descriptors_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A server under `RLIMIT_NOFILE` 64 gets 200 connections: it serves what its descriptors
/// allow, the rest wait in the backlog, and it does not spin on the failing accept (its CPU
/// time is measured over two seconds at the limit). A bystander connected before is served
/// throughout, and once the 200 go, a new client is served again.
#[test]
fn a_server_out_of_descriptors_neither_spins_nor_stops_serving() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    const LIMIT: usize = 64;
    const PEERS: usize = 200;
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let mut child = Reaped(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "fd_limited_server",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(FD_CHILD_ENV, LIMIT.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start the child server"),
        );
        let pid = child.0.id();
        let mut lines = io::BufReader::new(child.0.stdout.take().unwrap()).lines();
        let addr: SocketAddr = loop {
            let line = lines
                .next()
                .expect("the child's address")
                .expect("the child's output");
            // The harness's "test fd_limited_server ... " comes first on the line.
            if let Some(at) = line.find("ADDR ") {
                break line[at + 5..].trim().parse().unwrap();
            }
        };
        std::thread::spawn(move || lines.for_each(drop)); // whatever else it prints
        let mut bystander = connect(addr);
        echo_roundtrip(&mut bystander, b"warm");
        let fds_idle = descriptors_of(pid);

        let mut peers: Vec<TcpStream> = (0..PEERS).map(|_| connect(addr)).collect();
        for (i, peer) in peers.iter_mut().enumerate() {
            peer.write_all(&frame(&(i as u32).to_be_bytes())).unwrap();
            peer.set_nonblocking(true).unwrap();
        }
        // Until the server has taken every descriptor it may (bounded), and a moment for
        // the echoes of the sessions it opened.
        let deadline = Instant::now() + STEP;
        while descriptors_of(pid) < LIMIT - 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        let served = peers
            .iter()
            .filter(|p| matches!(p.peek(&mut [0u8; 8]), Ok(8)))
            .count();
        let fds_full = descriptors_of(pid);

        // Two seconds at the limit, the bystander served ten times a second.
        let (cpu_before, began) = (process_cpu_time(pid), Instant::now());
        let mut rounds = 0u32;
        while began.elapsed() < Duration::from_secs(2) {
            echo_roundtrip(&mut bystander, &bystander_payload(rounds));
            rounds += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        let busy =
            (process_cpu_time(pid) - cpu_before).as_secs_f64() / began.elapsed().as_secs_f64();

        drop(peers);
        let recovering = Instant::now();
        let mut newcomer = connect(addr);
        echo_roundtrip(&mut newcomer, b"served again");
        let recovered_in = recovering.elapsed();
        let fds_after = descriptors_of(pid);
        println!(
            "descriptor exhaustion (RLIMIT_NOFILE {LIMIT}): {PEERS} connections, {served} \
             served at the limit, the rest in the backlog; the child's descriptors \
             {fds_idle} idle -> {fds_full} at the limit -> {fds_after} after; CPU at the \
             limit {:.1}% of a core over {:?}; a new client served {recovered_in:?} after \
             the {PEERS} closed; {rounds} bystander echoes at the limit",
            busy * 100.0,
            began.elapsed()
        );
        assert!(
            fds_full >= LIMIT - 1,
            "the server never reached its limit ({fds_full} descriptors): the test proves nothing"
        );
        assert!(
            served < PEERS,
            "all {PEERS} served under a limit of {LIMIT}?"
        );
        assert!(
            busy < 0.5,
            "the server spun at the descriptor limit: {:.1}% of a core",
            busy * 100.0
        );
        echo_roundtrip(&mut bystander, b"after");
        drop(child.0.stdin.take()); // the child stops its server and exits
        let deadline = Instant::now() + STEP;
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the child server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "the child server failed: {status}");
    });
}
