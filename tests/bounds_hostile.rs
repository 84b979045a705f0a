//! Bounds under hostile use: framed writes under the outbound bound, partial frames
//! moved out of pooled buffers, handshake timeouts on upgrades, compressed frames over the
//! message limit. Real sockets on loopback.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use getty::codec::ws::DeflateConfig;
use getty::codec::{Bytes, RawCodec};
use getty::ws::{Ws, WsClient, WsServer};
use getty::{Session, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(120);

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// FNV-1a, the digest the python peer prints for each message (`fnv` in `RECEIVER`).
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A python websockets client (it inflates with zlib): prints the extensions negotiated,
/// then "len digest" for every message it gets until the server closes.
const RECEIVER: &str = r#"
import asyncio, sys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK
def fnv(b):
    h = 0xcbf29ce484222325
    for x in b:
        h ^= x
        h = (h * 0x100000001b3) & 0xffffffffffffffff
    return h
async def main(url, compress):
    async with connect(url, compression="deflate" if compress else None, max_size=2**24,
                       open_timeout=10, close_timeout=10) as ws:
        print("EXT", ";".join(ws.response.headers.get_all("Sec-WebSocket-Extensions")) or "-", flush=True)
        try:
            while True:
                m = await asyncio.wait_for(ws.recv(), 20)
                if isinstance(m, str):
                    m = m.encode()
                print(len(m), fnv(m), flush=True)
        except ConnectionClosedOK:
            pass
    print("END", ws.close_code, flush=True)
asyncio.run(main(sys.argv[1], sys.argv[2] == "1"))
"#;

/// Runs `RECEIVER` against `url`; returns its output lines.
fn python_receiver(url: &str, compress: bool) -> Vec<String> {
    let child = Reaped(
        Command::new(interop_python())
            .arg("-c")
            .arg(RECEIVER)
            .arg(url)
            .arg(if compress { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run the python peer"),
    );
    finish_child(child, STEP)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Pseudo-random bytes (xorshift), which deflate cannot shrink much.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The messages the pattern writes: a small compressible one, and before it a large one
/// that ends with the same bytes (so a compressor that kept the large one in its window
/// would refer to it) and is too large for the bound once compressed.
fn pattern(i: usize) -> (Vec<u8>, Vec<u8>) {
    let small = format!("shared-prefix-{}-", i % 3).repeat(20).into_bytes();
    let mut big = noise(i as u64 + 7, 20_000);
    big.extend_from_slice(&small);
    (big, small)
}

/// Writes the pattern with `write_bytes`, `write_vectored` (three pieces) and `write` in
/// turn; returns the messages taken, in order, and how many were refused as QueueFull.
fn write_pattern<T: getty::Transport>(
    s: &mut Session<RawCodec, T>,
    rounds: usize,
) -> (Vec<Vec<u8>>, usize) {
    let mut taken = Vec::new();
    let mut refused = 0;
    for i in 0..rounds {
        let (big, small) = pattern(i);
        for message in [big, small] {
            let result = match i % 3 {
                0 => s.write_bytes(Bytes::from(message.clone())),
                1 => {
                    let (a, rest) = message.split_at(message.len() / 3);
                    let (b, c) = rest.split_at(rest.len() / 2);
                    s.write_vectored(&[
                        Bytes::copy_from_slice(a),
                        Bytes::copy_from_slice(b),
                        Bytes::copy_from_slice(c),
                    ])
                }
                _ => s.write(Bytes::from(message.clone())),
            };
            match result {
                Ok(()) => taken.push(message),
                Err(getty::Error::QueueFull { .. }) => refused += 1,
                Err(e) => panic!("write {i}: {e}"),
            }
        }
    }
    (taken, refused)
}

struct PatternWriter {
    rounds: usize,
    tx: mpsc::Sender<(Vec<Vec<u8>>, usize)>,
}

impl getty::Handler<RawCodec, Ws> for PatternWriter {
    fn on_open(&mut self, s: &mut Session<RawCodec, Ws>) -> std::io::Result<()> {
        let outcome = write_pattern(s, self.rounds);
        let _ = self.tx.send(outcome);
        s.close();
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec, Ws>, _: Bytes) {}
}

fn digests(messages: &[Vec<u8>]) -> Vec<String> {
    messages
        .iter()
        .map(|m| format!("{} {}", m.len(), fnv(m)))
        .collect()
}

/// Messages refused past `max_outbound` after permessage-deflate compressed them (by
/// `write_bytes`, `write_vectored` and `write`) leave nothing behind: every message taken
/// reaches a zlib-based peer (Python websockets) whole and in order, though each refused
/// one ends with the bytes of the one taken after it (with context takeover a compressor
/// that kept it would refer to bytes the peer never got).
#[test]
fn refused_compressed_writes_leave_later_messages_inflating_right_at_a_python_peer() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, rx) = mpsc::channel();
        let server = WsServer::builder()
            .deflate(Some(DeflateConfig::default()))
            .session_options(SessionOptions::default().max_outbound(8_000))
            .route("/", move |_| {
                Ok((
                    RawCodec,
                    PatternWriter {
                        rounds: 30,
                        tx: tx.clone(),
                    },
                ))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("review-merges-deflate-retract", server);
        let lines = python_receiver(&format!("ws://{addr}/"), true);
        let (taken, refused) = rx.recv_timeout(STEP).expect("the writes' outcome");
        running.stop();
        assert!(
            lines[0].contains("permessage-deflate"),
            "not negotiated: {lines:?}"
        );
        assert!(
            refused >= 25 && taken.len() >= 25,
            "{refused} refused, {} taken",
            taken.len()
        );
        let mut expected = digests(&taken);
        expected.insert(0, lines[0].clone());
        expected.push("END 1000".to_owned());
        assert_eq!(lines, expected);
    });
}

/// Joins the group; the second member to join broadcasts the pattern (each large message
/// before a small one), then closes the group.
struct Member {
    group: getty::SessionGroup<RawCodec, Ws>,
    rounds: usize,
    tx: mpsc::Sender<usize>,
}

impl getty::Handler<RawCodec, Ws> for Member {
    fn on_open(&mut self, s: &mut Session<RawCodec, Ws>) -> std::io::Result<()> {
        self.group.join(s).unwrap();
        if self.group.len() == 2 {
            let mut reached = 0;
            for i in 0..self.rounds {
                let (big, small) = pattern(i);
                reached += self.group.broadcast(Bytes::from(big)).unwrap();
                reached += self.group.broadcast(Bytes::from(small)).unwrap();
            }
            self.group.close_all();
            let _ = self.tx.send(reached);
        }
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec, Ws>, _: Bytes) {}
}

/// A group broadcast to a member that compresses and one that does not, under a
/// `max_outbound` that each large message exceeds (compressed or not) and that the small
/// ones fill: the large ones are skipped on both, the small ones all arrive, whole and in
/// order, at both (Python websockets inflating the compressed member's), though the
/// compressing member framed (and retracted) each large one before skipping it, and
/// retried small ones once its queue drained.
#[test]
fn a_broadcast_to_compressing_and_plain_members_near_the_bound_inflates_right() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, rx) = mpsc::channel();
        let group = getty::SessionGroup::<RawCodec, Ws>::new(RawCodec);
        let rounds = 40;
        let server = WsServer::builder()
            .deflate(Some(DeflateConfig::default()))
            .session_options(SessionOptions::default().max_outbound(3_000))
            .route("/", move |_| {
                Ok((
                    RawCodec,
                    Member {
                        group: group.clone(),
                        rounds,
                        tx: tx.clone(),
                    },
                ))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("review-merges-broadcast-mix", server);
        let url = format!("ws://{addr}/");
        let plain = {
            let url = url.clone();
            std::thread::spawn(move || python_receiver(&url, false))
        };
        let compressed = python_receiver(&url, true);
        let plain = plain.join().unwrap();
        let reached = rx.recv_timeout(STEP).expect("the broadcasts");
        running.stop();
        assert_eq!(reached, 4 * rounds);
        let smalls: Vec<Vec<u8>> = (0..rounds).map(|i| pattern(i).1).collect();
        let mut expected = digests(&smalls);
        expected.push("END 1000".to_owned());
        assert!(
            compressed[0].contains("permessage-deflate"),
            "{compressed:?}"
        );
        assert_eq!(plain[0], "EXT -");
        assert_eq!(compressed[1..], expected[..], "the compressing member");
        assert_eq!(plain[1..], expected[..], "the plain member");
    });
}

/// Writes one message of `len` bytes with the method its counter picks (`write_bytes`,
/// `write_vectored`, `write`), reports the outcome and closes: in `on_open` on a client; on
/// the first message on a server, whose `101` response waits in the queue at `on_open`.
struct BoundProbe {
    len: usize,
    /// Writes noise (which deflate cannot shrink) rather than one byte repeated.
    noise: bool,
    client: bool,
    method: usize,
    tx: mpsc::Sender<(usize, String)>,
}

impl BoundProbe {
    fn probe(&mut self, s: &mut Session<RawCodec, Ws>) {
        let message = if self.noise {
            noise(self.len as u64, self.len)
        } else {
            vec![b'x'; self.len]
        };
        let result = match self.method {
            0 => s.write_bytes(Bytes::from(message)),
            1 => {
                let (a, b) = message.split_at(self.len / 2);
                s.write_vectored(&[Bytes::copy_from_slice(a), Bytes::copy_from_slice(b)])
            }
            _ => s.write(Bytes::from(message)),
        };
        let outcome = match result {
            Ok(()) => "ok".to_owned(),
            Err(getty::Error::QueueFull { queued, adding, .. }) => {
                format!("full ({queued} queued, adding {adding})")
            }
            Err(e) => e.to_string(),
        };
        let _ = self.tx.send((self.method, outcome));
        s.close();
    }
}

impl getty::Handler<RawCodec, Ws> for BoundProbe {
    fn on_open(&mut self, s: &mut Session<RawCodec, Ws>) -> std::io::Result<()> {
        if self.client {
            self.probe(s);
        }
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<RawCodec, Ws>, _: Bytes) {
        self.probe(s);
    }
}

/// A frame header's length for `len` payload bytes (and a client's masking key).
fn header_len(len: usize, client: bool) -> usize {
    let base = match len {
        0..126 => 2,
        126..=0xffff => 4,
        _ => 10,
    };
    base + if client { 4 } else { 0 }
}

/// The three methods' outcomes for one `len` under `max_outbound`, on a server session.
fn server_outcomes(len: usize, max: usize, deflate: bool) -> Vec<(usize, String)> {
    let (tx, rx) = mpsc::channel();
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = WsServer::builder()
        .deflate(Some(DeflateConfig::default()))
        .session_options(SessionOptions::default().max_outbound(max))
        .route("/echo", move |_| {
            let method = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok((
                RawCodec,
                BoundProbe {
                    len,
                    noise: deflate,
                    client: false,
                    method,
                    tx: tx.clone(),
                },
            ))
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let running = Running::serve("review-merges-bound-server", server);
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(addr);
        let extension = if deflate {
            "Sec-WebSocket-Extensions: permessage-deflate\r\n"
        } else {
            ""
        };
        let request = format!(
            "GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{extension}\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        read_101(&mut stream);
        // Once the 101 is out: the probe writes when this masked "hi" arrives.
        stream.write_all(b"\x82\x82\0\0\0\0hi").unwrap();
        outcomes.push(rx.recv_timeout(STEP).expect("an outcome"));
    }
    running.stop();
    outcomes
}

/// The three methods' outcomes for one `len` under `max_outbound`, on a client session
/// (which masks): one session per method, the client redialing after each.
fn client_outcomes(len: usize, max: usize) -> Vec<(usize, String)> {
    let (sink_tx, _sink_rx) = mpsc::channel();
    let server = WsServer::builder()
        .route("/", move |_| Ok((RawCodec, Probe::silent(&sink_tx))))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let server = Running::serve("review-merges-bound-peer", server);
    let (tx, rx) = mpsc::channel();
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = WsClient::builder()
        .session_options(SessionOptions::default().max_outbound(max))
        .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build(&format!("ws://{addr}/"), move |_| {
            let method = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok((
                RawCodec,
                BoundProbe {
                    len,
                    noise: false,
                    client: true,
                    method,
                    tx: tx.clone(),
                },
            ))
        })
        .unwrap();
    let client = Running::serve("review-merges-bound-client", client);
    let mut outcomes: Vec<(usize, String)> = (0..3)
        .map(|_| rx.recv_timeout(STEP).expect("an outcome"))
        .collect();
    client.stop();
    server.stop();
    outcomes.sort();
    outcomes
}

/// `max_outbound` counts a WebSocket message's exact frame (header, and a client's
/// masking key) whichever method queues it: at the header size steps (125, 126, 65,535,
/// 65,536 bytes), a bound of exactly the frame takes it and one byte less refuses it, for
/// `write_bytes`, `write_vectored` and `write` alike, on a server and on a client session,
/// and on a server session that compresses, for noise that deflate cannot shrink (framed
/// first, then counted, and sent as it is).
#[test]
fn max_outbound_takes_a_frame_of_exactly_the_bound_at_each_header_size() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let mut wrong = Vec::new();
        for (client, deflate) in [(false, false), (true, false), (false, true)] {
            for len in [125, 126, 65_535, 65_536] {
                let frame = len + header_len(len, client);
                for (max, expected) in [
                    (frame, "ok".to_owned()),
                    (frame - 1, format!("full (0 queued, adding {frame})")),
                ] {
                    let outcomes = if client {
                        client_outcomes(len, max)
                    } else {
                        server_outcomes(len, max, deflate)
                    };
                    for (method, outcome) in outcomes {
                        if outcome != expected {
                            wrong.push(format!(
                                "client {client}, deflate {deflate}, {len} bytes, max {max}, \
                                 method {method}: {outcome} (expected {expected})"
                            ));
                        }
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    });
}

/// What the pattern client took, the echoes it got, and how many writes were refused.
type ClientOutcome = (Vec<Vec<u8>>, Vec<Vec<u8>>, usize);

/// A client session that writes the pattern in `on_open` and reports what it took and
/// the echoes that came back, once as many came as it took.
struct PatternClient {
    rounds: usize,
    taken: Vec<Vec<u8>>,
    echoes: Vec<Vec<u8>>,
    tx: mpsc::Sender<ClientOutcome>,
    refused: usize,
}

impl getty::Handler<RawCodec, Ws> for PatternClient {
    fn on_open(&mut self, s: &mut Session<RawCodec, Ws>) -> std::io::Result<()> {
        (self.taken, self.refused) = write_pattern(s, self.rounds);
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<RawCodec, Ws>, message: Bytes) {
        self.echoes.push(message.to_vec());
        if self.echoes.len() == self.taken.len() {
            let outcome = (
                std::mem::take(&mut self.taken),
                std::mem::take(&mut self.echoes),
                self.refused,
            );
            let _ = self.tx.send(outcome);
            s.close();
        }
    }
}

/// On a client session (which masks), refused compressed writes leave the compressor
/// right too: a Python websockets echo server inflates every message taken and echoes it
/// unchanged.
#[test]
fn a_compressing_client_s_refused_writes_leave_its_messages_inflating_right() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let peer = Reaped(
            Command::new(interop_python())
                .arg(ws_peer_script())
                .arg("server")
                .arg("--compress")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut peer = peer;
        let mut line = String::new();
        BufReader::new(peer.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the python server said {line:?}"));
        let (tx, rx) = mpsc::channel();
        let client = WsClient::builder()
            .deflate(Some(DeflateConfig::default()))
            .session_options(SessionOptions::default().max_outbound(8_000))
            .max_consecutive_failures(Some(1))
            .build(&format!("ws://127.0.0.1:{port}/"), move |_| {
                Ok((
                    RawCodec,
                    PatternClient {
                        rounds: 30,
                        taken: Vec::new(),
                        echoes: Vec::new(),
                        tx: tx.clone(),
                        refused: 0,
                    },
                ))
            })
            .unwrap();
        let client = Running::serve("review-merges-client-retract", client);
        let (taken, echoes, refused) = rx.recv_timeout(STEP).expect("the echoes");
        client.stop();
        drop(peer.0.stdin.take());
        let _ = finish_child(peer, STEP);
        assert!(
            refused >= 25 && taken.len() >= 25,
            "{refused} refused, {} taken",
            taken.len()
        );
        assert_eq!(digests(&echoes), digests(&taken));
    });
}

/// Echoes every message back; counts the times its session became unwritable.
#[derive(Clone, Default)]
struct Echo(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl<C, T> getty::Handler<C, T> for Echo
where
    C: getty::codec::Decoder<Item = Bytes> + getty::codec::Encoder<Bytes> + 'static,
    T: getty::Transport,
{
    fn on_message(&mut self, s: &mut Session<C, T>, message: Bytes) {
        s.write(message).expect("the echo is queued");
    }
    fn on_writability_changed(&mut self, _: &mut Session<C, T>, writable: bool) {
        if !writable {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Echo {
    fn paused(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Payload sizes around the 8 KiB partial frames moved out of pooled buffers, and larger
/// frames whose first 8 KiB stall.
const TRICKLED: [usize; 9] = [8_187, 8_188, 8_189, 8_192, 8_193, 3, 20_000, 100_000, 1];

/// Pieces the wire is cut into, cycled: ends of pieces fall just before, at and after
/// 8 KiB into frames.
const PIECES: [usize; 10] = [8_191, 1, 8_192, 2, 8_193, 4_095, 1, 1, 7, 12_000];

/// Payload `i`: every byte tells the frame and its place in it.
fn trickled_payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i * 37 + k % 253) as u8).collect()
}

/// Sends `wire` in `PIECES` (each let settle so it is read on its own) from a thread of
/// its own, while `read_echo` reads the echoes, slowly at first, so that the server's
/// queue passes its (small) high watermark and reading pauses with partial frames held.
fn trickle_and_check<W: Write + Send + 'static>(
    mut writer: W,
    wire: Vec<u8>,
    mut read_echo: impl FnMut(usize) -> Vec<u8>,
) {
    let sender = std::thread::spawn(move || {
        let mut sent = 0;
        let mut step = 0;
        while sent < wire.len() {
            let take = PIECES[step % PIECES.len()].min(wire.len() - sent);
            writer.write_all(&wire[sent..sent + take]).unwrap();
            sent += take;
            step += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        writer
    });
    for round in 0..3 {
        for (i, &len) in TRICKLED.iter().enumerate() {
            if round == 0 && i < 3 {
                std::thread::sleep(Duration::from_millis(50));
            }
            let got = read_echo(len);
            let expected = trickled_payload(round * TRICKLED.len() + i, len);
            assert!(
                got == expected,
                "round {round}, frame {i} ({len} B): the echo differs (first difference at {:?})",
                got.iter().zip(&expected).position(|(a, b)| a != b)
            );
        }
    }
    drop(sender.join().unwrap());
}

/// The length-prefixed wire of three rounds of `TRICKLED`.
fn length_field_wire() -> Vec<u8> {
    (0..3)
        .flat_map(|round| {
            TRICKLED.iter().enumerate().flat_map(move |(i, &len)| {
                frame(&trickled_payload(round * TRICKLED.len() + i, len))
            })
        })
        .collect()
}

fn trickle_options() -> SessionOptions {
    SessionOptions::default()
        .watermarks(16 * 1024, 4 * 1024)
        .max_outbound(8 << 20)
}

fn trickle_sockets() -> getty::SocketOptions {
    getty::SocketOptions::default().send_buffer_size(Some(8 * 1024))
}

/// Frames trickled in pieces that cut them just before, at and past 8 KiB, over TCP,
/// with reading paused and resumed by the watermarks meanwhile: every echo is whole and
/// in order (partial frames of up to 8 KiB are moved out of pooled buffers between reads).
#[test]
fn partial_frames_around_8_kib_trickled_over_tcp_are_echoed_whole() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let echo = Echo::default();
        let handler = echo.clone();
        let server = getty::tcp::TcpServer::builder()
            .session_options(trickle_options())
            .socket_options(trickle_sockets())
            .bind("127.0.0.1:0", move |_| {
                Ok((getty::codec::LengthFieldCodec::default(), handler.clone()))
            })
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("review-merges-trickle-tcp", server);
        let mut stream = connect_with_recv_buffer(addr, 4096);
        let writer = stream.try_clone().unwrap();
        trickle_and_check(writer, length_field_wire(), |_| read_frame(&mut stream));
        running.stop();
        assert!(echo.paused() > 0, "reading never paused");
    });
}

/// The same over a unix stream socket.
#[test]
fn partial_frames_around_8_kib_trickled_over_a_unix_socket_are_echoed_whole() {
    use std::os::unix::net::UnixStream;
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let dir = TempDir::new("trickle");
        let path = dir.path("s");
        let echo = Echo::default();
        let handler = echo.clone();
        let server = getty::unix::UnixServer::builder()
            .session_options(trickle_options())
            .bind(getty::UnixAddr::path(&path), move |_| {
                Ok((getty::codec::LengthFieldCodec::default(), handler.clone()))
            })
            .unwrap();
        let running = Running::serve("review-merges-trickle-unix", server);
        let mut stream = UnixStream::connect(&path).unwrap();
        stream.set_read_timeout(Some(STEP)).unwrap();
        let writer = stream.try_clone().unwrap();
        trickle_and_check(writer, length_field_wire(), |_| read_frame(&mut stream));
        running.stop();
        assert!(echo.paused() > 0, "reading never paused");
    });
}

/// A masked client frame (mask key 0) of `payload`.
fn masked_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x82];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(payload);
    f
}

/// Reads one unmasked server data frame; returns its payload.
fn read_server_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).expect("a frame header");
    assert_eq!(head[0], 0x82, "a final binary frame");
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            stream.read_exact(&mut l).unwrap();
            usize::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            stream.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l) as usize
        }
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    payload
}

/// The same over a WebSocket.
#[test]
fn partial_frames_around_8_kib_trickled_over_a_websocket_are_echoed_whole() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let echo = Echo::default();
        let handler = echo.clone();
        let server = WsServer::builder()
            .session_options(trickle_options())
            .socket_options(trickle_sockets())
            .route("/echo", move |_| Ok((RawCodec, handler.clone())))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("review-merges-trickle-ws", server);
        let mut stream = connect_with_recv_buffer(addr, 4096);
        ws_upgrade(&mut stream);
        let wire = (0..3)
            .flat_map(|round| {
                TRICKLED.iter().enumerate().flat_map(move |(i, &len)| {
                    masked_frame(&trickled_payload(round * TRICKLED.len() + i, len))
                })
            })
            .collect();
        let writer = stream.try_clone().unwrap();
        trickle_and_check(writer, wire, |_| read_server_frame(&mut stream));
        running.stop();
        assert!(echo.paused() > 0, "reading never paused");
    });
}

/// A WebSocket client whose server takes its request and answers half a `101` (then
/// nothing) times out each upgrade: every connection is reset (after the request, which
/// arrives whole), each counts as one failed dial, and the client gives up after
/// `max_consecutive_failures` of them, dialing no more.
#[test]
fn a_ws_client_whose_upgrade_times_out_resets_and_redials_as_a_failed_dial() {
    use std::net::TcpListener;
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (sink_tx, _sink) = mpsc::channel();
        let client = WsClient::builder()
            .session_options(
                SessionOptions::default().handshake_timeout(Duration::from_millis(300)),
            )
            .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
            .max_consecutive_failures(Some(3))
            .build(&format!("ws://{addr}/x"), move |_| {
                Ok((RawCodec, Probe::silent(&sink_tx)))
            })
            .unwrap();
        let running = Running::serve("review-merges-ws-client-timeout", client);
        let mut endings = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(4);
        while std::time::Instant::now() < deadline {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream.set_read_timeout(Some(STEP)).unwrap();
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        stream.read_exact(&mut byte).expect("the request");
                        head.push(byte[0]);
                        assert!(head.len() < 4096, "a request head");
                    }
                    stream
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\n")
                        .unwrap();
                    let (rest, ended) = read_to_end(&mut stream);
                    endings.push((rest.len(), ended));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        running.stop();
        assert_eq!(endings, vec![(0, Ended::Reset); 3]);
    });
}

/// A stored (uncompressed) deflate block of `data`, not final.
fn stored_block(data: &[u8]) -> Vec<u8> {
    let len = data.len() as u16;
    let mut out = vec![0x00];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// A masked client frame header (mask key 0) with `first` as its first byte.
fn client_header(first: u8, len: usize) -> Vec<u8> {
    let mut f = masked_frame(&vec![0; len]);
    f.truncate(f.len() - len);
    f[0] = first;
    f
}

/// Reads server frames until a close frame; returns its payload.
fn read_close(stream: &mut TcpStream) -> Vec<u8> {
    for _ in 0..100 {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).expect("a frame header");
        let len = match head[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                stream.read_exact(&mut l).unwrap();
                usize::from(u16::from_be_bytes(l))
            }
            127 => panic!("an unexpectedly long frame"),
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).unwrap();
        if head[0] == 0x88 {
            return payload;
        }
    }
    panic!("no close frame");
}

/// On a session that negotiated permessage-deflate, with `max_message_len` 1,000: an
/// uncompressed message of exactly the limit, whole or in fragments, and a compressed one
/// whose frame is over the limit (a stored block's 5 bytes) but that inflates to it, are
/// delivered; one byte more is refused with `MessageTooLong` naming the configured limit
/// (and the message's length where the headers tell it), and 1009.
#[test]
fn messages_at_and_around_the_limit_report_the_configured_limit() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let max = 1000;
        let (tx, mut events) = Events::new();
        let server = WsServer::builder()
            .deflate(Some(DeflateConfig::default()))
            .session_options(SessionOptions::default().max_message_len(max))
            .route("/echo", move |_| Ok((RawCodec, Probe::silent(&tx))))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("review-merges-limit-values", server);
        let request = "GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
        // (what, the wire, the message's length if delivered, else the error expected)
        let plain = |parts: &[usize]| {
            let mut wire = Vec::new();
            for (i, &n) in parts.iter().enumerate() {
                let opcode = if i == 0 { 0x02 } else { 0x00 };
                let fin = if i + 1 == parts.len() { 0x80 } else { 0 };
                wire.extend_from_slice(&client_header(fin | opcode, n));
                wire.extend(std::iter::repeat_n(b'p', n));
            }
            wire
        };
        let compressed = |n: usize| {
            let mut block = stored_block(&vec![b'c'; n]);
            block.push(0x00); // an empty final-less block's start, as the existing test does
            let mut wire = client_header(0xc2, block.len());
            wire.extend_from_slice(&block);
            wire
        };
        type Case = (&'static str, Vec<u8>, Result<usize, (usize, usize)>);
        let cases: Vec<Case> = vec![
            ("one frame of the limit", plain(&[1000]), Ok(1000)),
            ("one frame over", plain(&[1001]), Err((1001, max))),
            ("fragments of the limit", plain(&[600, 400]), Ok(1000)),
            ("fragments over", plain(&[600, 401]), Err((1001, max))),
            (
                "three fragments over",
                plain(&[1, 999, 1]),
                Err((1001, max)),
            ),
            ("compressed to the limit", compressed(1000), Ok(1000)),
            ("compressed over", compressed(1001), Err((1001, max))),
            (
                "compressed, its frame past the slack",
                compressed(1009),
                Err((1015, max)),
            ),
        ];
        let mut wrong = Vec::new();
        for (what, wire, expected) in cases {
            let mut stream = connect(addr);
            stream.write_all(request.as_bytes()).unwrap();
            read_101(&mut stream);
            let sid = events.wait_open(stream.local_addr().unwrap());
            stream.write_all(&wire).unwrap();
            let outcome = match expected {
                Ok(_) => match events.wait("the message or an error", |e| {
                    e.sid() == sid && !matches!(e, Ev::Open { .. })
                }) {
                    Ev::Msg { msg, .. } => Ok(msg.len()),
                    other => Err(format!("{other:?}")),
                },
                Err(_) => {
                    let close = read_close(&mut stream);
                    events.wait_close(sid);
                    match &events.errors_of(sid)[..] {
                        [ErrKind::MessageTooLong { len, max }] if close[..2] == [3, 241] => {
                            Err(format!("{len}/{max}"))
                        }
                        other => Err(format!("{other:?}, close {close:?}")),
                    }
                }
            };
            let expected = expected.map_err(|(len, max)| format!("{len}/{max}"));
            if outcome != expected {
                wrong.push(format!("{what}: {outcome:?}, expected {expected:?}"));
            }
        }
        running.stop();
        assert!(wrong.is_empty(), "{wrong:#?}");
    });
}

/// On its first message queues 48 KiB of noise (below the high watermark; a peer that
/// does not read leaves most of it queued); on its second writes 8 MiB of noise with `method` (0:
/// `write_bytes`, 1: `write_vectored`), which is past `max_outbound`, and reports the
/// outcome, the live bytes before and how many more are live right after.
struct BigWriter {
    method: usize,
    seen: usize,
    tx: mpsc::Sender<(String, isize, isize)>,
}

impl getty::Handler<RawCodec, Ws> for BigWriter {
    fn on_message(&mut self, s: &mut Session<RawCodec, Ws>, _: Bytes) {
        self.seen += 1;
        if self.seen == 1 {
            s.write_bytes(Bytes::from(noise(1, 48 * 1024))).unwrap();
            return;
        }
        let before = live_bytes();
        let result = {
            let big = Bytes::from(noise(99, 8 << 20));
            match self.method {
                0 => s.write_bytes(big),
                1 => s.write_vectored(&[big.slice(..1 << 20), big.slice(1 << 20..)]),
                _ => s.write(big),
            }
        };
        let after = live_bytes();
        let outcome = match result {
            Ok(()) => "ok".to_owned(),
            Err(getty::Error::QueueFull { .. }) => "full".to_owned(),
            Err(e) => e.to_string(),
        };
        let _ = self.tx.send((outcome, before, after - before));
    }
}

/// A write past `max_outbound` is refused without leaving the session holding the
/// message's size: on a WebSocket that compresses as on one that does not, `write_bytes`,
/// `write_vectored` and `write` of 8 MiB, refused on a session whose queue holds what a peer that
/// does not read left, leave the process holding no more than before (the message is
/// freed), right after the call and while the session stays stalled.
#[test]
fn a_refused_large_write_leaves_a_stalled_session_holding_nothing_more() {
    watchdog(TEST_LIMIT, || {
        // The count is the process's: nothing else runs meanwhile.
        let _gate = exclusive_gate();
        let mut wrong = Vec::new();
        for (deflate, method) in [(false, 0), (true, 0), (true, 1), (false, 2), (true, 2)] {
            let (tx, rx) = mpsc::channel();
            let server = WsServer::builder()
                .deflate(Some(DeflateConfig::default()))
                .session_options(SessionOptions::default().max_outbound(256 * 1024))
                .socket_options(trickle_sockets())
                .route("/echo", move |_| {
                    Ok((
                        RawCodec,
                        BigWriter {
                            method,
                            seen: 0,
                            tx: tx.clone(),
                        },
                    ))
                })
                .bind("127.0.0.1:0")
                .unwrap();
            let addr = server.local_addr();
            let running = Running::serve("review-merges-big-refused", server);
            let mut stream = connect_with_recv_buffer(addr, 4096);
            let extension = if deflate {
                "Sec-WebSocket-Extensions: permessage-deflate\r\n"
            } else {
                ""
            };
            let request = format!(
                "GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n{extension}\r\n"
            );
            stream.write_all(request.as_bytes()).unwrap();
            read_101(&mut stream);
            stream.write_all(&masked_frame(b"fill")).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            stream.write_all(&masked_frame(b"big")).unwrap();
            let (outcome, before, right_after) = rx.recv_timeout(STEP).expect("the outcome");
            std::thread::sleep(Duration::from_millis(300));
            let stalled = live_bytes() - before;
            let case = format!(
                "deflate {deflate}, {}: {outcome}, {right_after} more bytes live right after, \
                 {stalled} while stalled",
                ["write_bytes", "write_vectored", "write"][method]
            );
            eprintln!("{case}");
            if outcome != "full" || right_after > 1 << 20 || stalled > 1 << 20 {
                wrong.push(case);
            }
            drop(stream);
            running.stop();
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    });
}
