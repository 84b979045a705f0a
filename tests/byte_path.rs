//! The byte path over real sockets: whatever a handler queues in one callback (many large
//! zero-copy buffers, small copied writes, in any mix) reaches the peer whole and in order,
//! however the kernel splits the writes.
//!
//! Issue #11, part 1: with more than 63 chunks queued, `Outbound::write_to` put the small
//! tail into a `writev` that did not carry the later chunks, so the tail overtook them and
//! the bytes the kernel took for it were credited to chunk 63 (which then went out cut).
//! Every test here but the two with a small send buffer failed that way before the fix;
//! those two guard the bookkeeping of writes cut short inside a chunk.
//!
//! The random mixes also go through the codec (`Session::write` with a
//! `LengthFieldCodec`): a large message's header is copied into the tail and its payload
//! queued as a chunk of its own (`Encoder::encode_split`), so header and payload must stay
//! together and in order among the raw writes.

mod common;

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect, connect_with_recv_buffer, watchdog, Running, STEP};
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{Handler, Session, SessionOptions, SocketOptions};

const LIMIT: Duration = Duration::from_secs(60);

/// One write of a plan.
#[derive(Clone)]
enum Piece {
    /// `write_bytes`: the bytes go out as they are.
    Raw(Bytes),
    /// `write` through the session's `LengthFieldCodec`: a 4-byte length, then the bytes.
    Framed(Bytes),
}

impl Piece {
    /// What the peer receives for it.
    fn wire(&self) -> Bytes {
        match self {
            Piece::Raw(bytes) => bytes.clone(),
            Piece::Framed(bytes) => {
                let mut frame = (bytes.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(bytes);
                frame.into()
            }
        }
    }
}

/// Writes every piece of `plan` from its first `on_message`, then closes gracefully
/// (flush, FIN). A refused write is reported to the test.
struct Burst {
    plan: Arc<[Piece]>,
    sent: bool,
    failures: Sender<String>,
}

impl Handler<LengthFieldCodec> for Burst {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, _: Bytes) {
        if std::mem::replace(&mut self.sent, true) {
            return;
        }
        for (i, piece) in self.plan.iter().enumerate() {
            let (written, len) = match piece {
                Piece::Raw(bytes) => (s.write_bytes(bytes.clone()), bytes.len()),
                Piece::Framed(bytes) => (s.write(bytes.clone()), bytes.len()),
            };
            if let Err(e) = written {
                let _ = self
                    .failures
                    .send(format!("write {i} ({len} B) refused: {e}"));
                break;
            }
        }
        s.close();
    }
}

/// How the test's client reads.
#[derive(Debug, Clone, Copy)]
enum Reader {
    /// Default socket buffers, 64 KiB reads.
    Fast,
    /// A 4 KiB SO_RCVBUF (set before connecting), nothing read for 300 ms, then 200 reads
    /// of 512 bytes 2 ms apart, then the rest in 64 KiB reads: once the server's send
    /// buffer is full (megabytes on loopback, unless the test makes it small), its writes
    /// are cut short and resume on writable events.
    Slow,
}

/// Serves `plan` to one client and returns every byte the client received until EOF.
/// `send_buffer` sets the server's SO_SNDBUF (the kernel doubles it); by default it grows
/// to megabytes on loopback, so that one `writev` takes dozens of chunks.
fn fetch(plan: Vec<Piece>, reader: Reader, send_buffer: Option<usize>) -> Vec<u8> {
    let total: usize = plan.iter().map(|p| p.wire().len()).sum();
    let plan: Arc<[Piece]> = plan.into();
    let (failures_tx, failures) = mpsc::channel();
    let server = TcpServer::builder()
        .socket_options(SocketOptions::default().send_buffer_size(send_buffer))
        .session_options(SessionOptions::default().max_outbound(total + (1 << 20)))
        .bind("127.0.0.1:0", move |_| {
            Ok((
                LengthFieldCodec::default(),
                Burst {
                    plan: plan.clone(),
                    sent: false,
                    failures: failures_tx.clone(),
                },
            ))
        })
        .unwrap();
    let addr = server.local_addr();
    let reactor = Running::serve("byte-path", server);
    let got = read_all(addr, reader, total);
    reactor.stop();
    if let Ok(failure) = failures.try_recv() {
        panic!("the server could not queue its writes: {failure}");
    }
    got
}

fn read_all(addr: SocketAddr, reader: Reader, expected: usize) -> Vec<u8> {
    let mut client: TcpStream = match reader {
        Reader::Fast => connect(addr),
        Reader::Slow => connect_with_recv_buffer(addr, 4096),
    };
    client.write_all(b"\x00\x00\x00\x02go").unwrap();
    let mut got = Vec::with_capacity(expected);
    let mut buf = vec![0u8; 64 * 1024];
    if let Reader::Slow = reader {
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..200 {
            match client.read(&mut buf[..512]) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read after {} bytes: {e}", got.len()),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let deadline = Instant::now() + STEP;
    loop {
        match client.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read after {} of {expected} bytes: {e}", got.len()),
        }
        // A server that keeps sending past what was planned must not keep the test alive.
        assert!(
            got.len() <= expected + (1 << 20) && Instant::now() < deadline,
            "still reading after {} of {expected} bytes",
            got.len()
        );
    }
}

/// Checks `got` against the wire form of `plan`; on a difference, says which write it fell
/// in and where the last write's bytes turned up instead (no megabyte dumps).
fn check(plan: &[Piece], got: &[u8], what: &str) {
    let plan: Vec<Bytes> = plan.iter().map(Piece::wire).collect();
    let expected: Vec<u8> = plan.iter().flat_map(|b| b.iter().copied()).collect();
    if got == expected.as_slice() {
        return;
    }
    let mut report = format!(
        "{what}: received {} bytes, expected {}",
        got.len(),
        expected.len()
    );
    let first = got
        .iter()
        .zip(&expected)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(expected.len()));
    let mut start = 0;
    for (i, piece) in plan.iter().enumerate() {
        if first < start + piece.len() {
            let _ = write!(
                report,
                "; first difference at byte {first}: write {i} of {} ({} B, starting at {start}), offset {}",
                plan.len(),
                piece.len(),
                first - start
            );
            break;
        }
        start += piece.len();
    }
    if let Some(last) = plan.last().filter(|l| !l.is_empty()) {
        let at = got.windows(last.len()).position(|w| w == &last[..]);
        let _ = write!(
            report,
            "; the last write ({} B) found at {at:?}, expected at {}",
            last.len(),
            expected.len() - last.len()
        );
    }
    panic!("{report}");
}

/// `chunks` buffers of 8 KiB, the i-th filled with `i`, then `END\n`: the reproduction.
fn chunks_then_end(chunks: usize) -> Vec<Piece> {
    let mut plan: Vec<Piece> = (0..chunks)
        .map(|i| Piece::Raw(Bytes::from(vec![i as u8; 8192])))
        .collect();
    plan.push(Piece::Raw(Bytes::from_static(b"END\n")));
    plan
}

fn run_chunks(chunks: usize, reader: Reader, send_buffer: Option<usize>) {
    watchdog(LIMIT, move || {
        let plan = chunks_then_end(chunks);
        let got = fetch(plan.clone(), reader, send_buffer);
        check(
            &plan,
            &got,
            &format!(
                "{chunks} chunks of 8 KiB then END, {reader:?} reader, SO_SNDBUF {send_buffer:?}"
            ),
        );
        assert!(got.ends_with(b"END\n"));
    });
}

/// The reproduction of issue #11: `END\n` arrived at byte 516,096 and chunk 63 was cut.
#[test]
fn sixty_four_chunks_then_a_small_write_arrive_in_order() {
    run_chunks(64, Reader::Fast, None);
}

#[test]
fn sixty_four_chunks_then_a_small_write_reach_a_slow_reader_in_order() {
    run_chunks(64, Reader::Slow, None);
}

#[test]
fn two_hundred_chunks_then_a_small_write_arrive_in_order() {
    run_chunks(200, Reader::Fast, None);
}

#[test]
fn two_hundred_chunks_then_a_small_write_reach_a_slow_reader_in_order() {
    run_chunks(200, Reader::Slow, None);
}

/// 8 MB: more than the send buffer ever holds, so once the reader lags, the server's
/// writes are cut short and resumed on writable events.
#[test]
fn a_thousand_chunks_then_a_small_write_reach_a_slow_reader_in_order() {
    run_chunks(1000, Reader::Slow, None);
}

/// A small send buffer: every `writev` is cut short, mostly inside a chunk. (A `writev`
/// here never takes 63 chunks, so this one passed before the fix too: it guards the
/// bookkeeping of partial writes.)
#[test]
fn two_hundred_chunks_then_a_small_write_survive_short_writes() {
    run_chunks(200, Reader::Slow, Some(16 * 1024));
}

/// A random mix from one `on_message`: runs of small writes (copied into the tail, 0 to
/// 4095 bytes) and of large ones (queued as chunks: mostly 4 to 16 KiB, so that one
/// `writev` can carry dozens of them; one in ten up to 256 KiB), random bytes in each,
/// about `budget` bytes in all, ending with a run of small writes (a tail behind chunks).
/// Each goes out raw or as a length-prefixed message through the codec, at random.
fn random_mix(seed: u64, budget: usize) -> Vec<Piece> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut plan = Vec::new();
    let mut total = 0;
    let mut large = rng.bool();
    while total < budget || large {
        large = !large && total < budget;
        for _ in 0..rng.usize(1..=40) {
            let len = match (large, rng.u8(..10)) {
                (false, _) => rng.usize(0..4096),
                (true, 0) => rng.usize(16 * 1024..=256 * 1024),
                (true, _) => rng.usize(4096..=16 * 1024),
            };
            let mut piece = vec![0u8; len];
            rng.fill(&mut piece);
            total += len;
            let piece = Bytes::from(piece);
            plan.push(if rng.bool() {
                Piece::Framed(piece)
            } else {
                Piece::Raw(piece)
            });
        }
    }
    plan
}

/// Seeds to run: `BYTE_PATH_SEED` (to replay a failure), else a few fixed and one fresh.
fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("BYTE_PATH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    vec![1, 2, 3, fastrand::u64(..)]
}

fn run_mix(reader: Reader, send_buffer: Option<usize>) {
    watchdog(LIMIT * 2, move || {
        for seed in seeds() {
            let plan = random_mix(seed, 3 << 20);
            let got = fetch(plan.clone(), reader, send_buffer);
            check(
                &plan,
                &got,
                &format!(
                    "random mix of {} writes, {reader:?} reader, SO_SNDBUF {send_buffer:?}, seed {seed} (BYTE_PATH_SEED={seed} replays it)",
                    plan.len()
                ),
            );
        }
    });
}

#[test]
fn a_random_mix_of_small_and_large_writes_arrives_byte_for_byte() {
    run_mix(Reader::Fast, None);
}

#[test]
fn a_random_mix_of_small_and_large_writes_reaches_a_slow_reader_byte_for_byte() {
    run_mix(Reader::Slow, None);
}

/// Short writes throughout (see `two_hundred_chunks_then_a_small_write_survive_short_writes`).
#[test]
fn a_random_mix_of_small_and_large_writes_survives_short_writes() {
    run_mix(Reader::Slow, Some(16 * 1024));
}

/// Writes a message just past the outbound bound through the codec (refused: its header
/// must not stay queued without its payload), then two that fit, and closes.
struct PastTheBound {
    bound: usize,
    results: Sender<Result<(), String>>,
}

impl Handler<LengthFieldCodec> for PastTheBound {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, _: Bytes) {
        let too_big = Bytes::from(vec![1u8; self.bound]);
        let fits = Bytes::from(vec![2u8; self.bound / 2]);
        for message in [too_big, Bytes::from_static(b"after"), fits] {
            let _ = self
                .results
                .send(s.write(message).map_err(|e| e.to_string()));
        }
        s.close();
    }
}

#[test]
fn a_large_message_past_the_bound_leaves_nothing_queued() {
    watchdog(LIMIT, || {
        let bound = 64 * 1024;
        let (results_tx, results) = mpsc::channel();
        let server = TcpServer::builder()
            .session_options(SessionOptions::default().max_outbound(bound))
            .bind("127.0.0.1:0", move |_| {
                let results = results_tx.clone();
                Ok((LengthFieldCodec::default(), PastTheBound { bound, results }))
            })
            .unwrap();
        let addr = server.local_addr();
        let reactor = Running::serve("past-the-bound", server);
        let expected = [
            Piece::Framed(Bytes::from_static(b"after")),
            Piece::Framed(Bytes::from(vec![2u8; bound / 2])),
        ];
        let total = expected.iter().map(|p| p.wire().len()).sum();
        let got = read_all(addr, Reader::Fast, total);
        reactor.stop();
        let results: Vec<_> = results.try_iter().collect();
        assert!(results.len() == 3 && results[0].is_err(), "{results:?}");
        assert!(results[1..].iter().all(Result::is_ok), "{results:?}");
        check(
            &expected,
            &got,
            "a refused large message, then two that fit",
        );
    });
}
