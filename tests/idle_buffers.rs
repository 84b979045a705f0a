//! The idle-memory change (a stream session's read buffer and outbound queue live
//! in one box taken on first use and handed back to a per-thread spare list once both have
//! drained; its counters are boxed at the first byte). Over real sockets:
//!
//! - partial frames of many sessions, interleaved a few bytes at a time, never cross from
//!   one session to another while boxes go back and forth through the spare list (more
//!   sessions than the list holds, so it overflows too);
//! - a session's stats tell the same before and after its counters are boxed;
//! - the read-idle timeout ends a session that holds no box (silent), one that holds a
//!   partial frame, and one that went idle after a message, and spares one that reads;
//! - a reactor that has gone idle frees the buffers its pool kept from a burst, then no
//!   longer wakes, and its sessions echo as before once traffic comes back.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use common::{connect, echo_roundtrip, expect_closed, frame, read_frame, watchdog, Running, STEP};
use getty::codec::{Bytes, LengthFieldCodec};
use getty::reactor::{BufPool, Reactor};
use getty::tcp::TcpServer;
use getty::{Handler, Session, SessionOptions, Stats};

const LIMIT: Duration = Duration::from_secs(120);

/// Echoes every frame back.
struct Echo;

impl Handler<LengthFieldCodec> for Echo {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, message: Bytes) {
        let _ = s.write(message);
    }
}

fn echo_server(options: SessionOptions) -> (SocketAddr, Running) {
    let server = TcpServer::builder()
        .session_options(options)
        .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
        .unwrap();
    let addr = server.local_addr();
    (addr, Running::serve("idle-buffers", server))
}

/// Payload sizes around the thresholds of the change: empty, the compaction bound (256),
/// the copy threshold (4096), and more than a pooled buffer.
const SIZES: [usize; 9] = [0, 1, 255, 256, 257, 3000, 4096, 5000, 70_000];

/// Bytes written per step, cycled: single bytes cut headers, larger steps end frames
/// mid-body or carry several frames at once.
const STEPS: [usize; 8] = [1, 2, 3, 5, 250, 4096, 7, 9000];

/// Session `who`'s payloads: every byte tells the session and the frame, so a byte that
/// lands in another session's frame shows.
fn payloads(who: usize) -> Vec<Vec<u8>> {
    SIZES
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            (0..len)
                .map(|k| (who * 31 + i * 7 + k % 251) as u8)
                .collect()
        })
        .collect()
}

#[test]
fn interleaved_partial_frames_never_cross_sessions() {
    watchdog(LIMIT, || {
        const SESSIONS: usize = 24; // three times the spare list
        let options = SessionOptions::default().max_outbound(4 << 20);
        let (addr, reactor) = echo_server(options);
        let mut streams: Vec<TcpStream> = (0..SESSIONS).map(|_| connect(addr)).collect();
        let wires: Vec<Vec<u8>> = (0..SESSIONS)
            .map(|who| payloads(who).iter().flat_map(|p| frame(p)).collect())
            .collect();
        let mut sent = [0usize; SESSIONS];
        let mut step = 0;
        let mut rounds = 0;
        while sent.iter().zip(&wires).any(|(s, w)| s < &w.len()) {
            rounds += 1;
            assert!(rounds < 10_000, "bounded");
            for who in 0..SESSIONS {
                let take = STEPS[(step + who) % STEPS.len()].min(wires[who].len() - sent[who]);
                streams[who]
                    .write_all(&wires[who][sent[who]..sent[who] + take])
                    .unwrap();
                sent[who] += take;
            }
            step += 1;
            // Let the reactor take each round on its own, so that sessions hand their
            // boxes back between the pieces.
            std::thread::sleep(Duration::from_micros(300));
        }
        for (who, stream) in streams.iter_mut().enumerate() {
            for (i, expected) in payloads(who).iter().enumerate() {
                let got = read_frame(stream);
                assert!(
                    got == *expected,
                    "session {who}, frame {i} ({} B): echoed {} B that differ",
                    expected.len(),
                    got.len()
                );
            }
        }
        reactor.stop();
    });
}

/// Reports the session's stats when it opens and with each message (before it echoes it).
struct StatsProbe {
    seen: Sender<Stats>,
}

impl Handler<LengthFieldCodec> for StatsProbe {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        let _ = self.seen.send(s.stats());
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, message: Bytes) {
        let _ = self.seen.send(s.stats());
        let _ = s.write(message);
    }
}

#[test]
fn stats_tell_the_same_before_and_after_the_counters_are_boxed() {
    watchdog(LIMIT, || {
        let (seen_tx, seen) = mpsc::channel();
        let server = TcpServer::builder()
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    LengthFieldCodec::default(),
                    StatsProbe {
                        seen: seen_tx.clone(),
                    },
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let reactor = Running::serve("idle-stats", server);
        let mut stream = connect(addr);
        let opened = seen.recv_timeout(STEP).expect("on_open");
        assert_eq!(
            (
                opened.bytes_in,
                opened.bytes_out,
                opened.messages_in,
                opened.messages_out
            ),
            (0, 0, 0, 0)
        );
        assert_eq!(
            opened.last_read, opened.last_write,
            "both are the open time"
        );
        let open_time = opened.last_read;

        std::thread::sleep(Duration::from_millis(40));
        stream.write_all(&frame(b"hello")).unwrap();
        let first = seen.recv_timeout(STEP).expect("first message");
        assert_eq!((first.bytes_in, first.messages_in), (9, 1));
        assert_eq!((first.bytes_out, first.messages_out), (0, 0));
        assert_eq!(first.last_write, open_time, "nothing written yet");
        assert!(
            first.last_read >= open_time + Duration::from_millis(35),
            "the read moved last_read"
        );
        assert_eq!(read_frame(&mut stream), b"hello");

        std::thread::sleep(Duration::from_millis(40));
        stream.write_all(&frame(b"again")).unwrap();
        let second = seen.recv_timeout(STEP).expect("second message");
        assert_eq!((second.bytes_in, second.messages_in), (18, 2));
        assert_eq!((second.bytes_out, second.messages_out), (9, 1));
        assert!(second.last_write > open_time, "the echo moved last_write");
        assert!(second.last_read >= first.last_read + Duration::from_millis(35));
        assert_eq!(read_frame(&mut stream), b"again");
        drop(stream);
        reactor.stop();
    });
}

/// How long the server took to end `stream`, from `since`.
fn time_to_close(stream: &mut TcpStream, since: Instant) -> Duration {
    expect_closed(stream);
    since.elapsed()
}

#[test]
fn read_idle_timeout_holds_with_and_without_a_box() {
    watchdog(LIMIT, || {
        const IDLE: Duration = Duration::from_millis(500);
        let options = SessionOptions::default().read_idle_timeout(Some(IDLE));
        let (addr, reactor) = echo_server(options);

        // Each clock starts before the server can have seen what it times from (the
        // accept, the last byte read): started after, it would let a close that came in
        // time look early (the echo's round trip made one 1.6 ms early once).
        let silent_since = Instant::now();
        let mut silent = connect(addr);

        let partial_since = Instant::now();
        let mut partial = connect(addr);
        partial.write_all(&[0, 0]).unwrap(); // half a header

        let answered_since = Instant::now();
        let mut answered = connect(addr);
        answered.write_all(&frame(b"ping")).unwrap();
        assert_eq!(read_frame(&mut answered), b"ping");

        // A session that sends a byte of a long frame every 100 ms is not idle.
        let mut trickle = connect(addr);
        let trickler = std::thread::spawn(move || {
            let long = frame(&[9u8; 40]);
            for &byte in &long[..20] {
                trickle.write_all(&[byte]).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
            trickle.write_all(&long[20..]).unwrap();
            assert_eq!(read_frame(&mut trickle), [9u8; 40], "the trickler was kept");
            trickle
        });

        for (name, stream, since) in [
            ("silent", &mut silent, silent_since),
            ("partial", &mut partial, partial_since),
            ("answered", &mut answered, answered_since),
        ] {
            let took = time_to_close(stream, since);
            assert!(
                took >= IDLE,
                "{name}: ended after {took:?}, before {IDLE:?}"
            );
        }
        // Closing early is the failure that matters; a late close shows up here only when
        // it is very late.
        let late_since = Instant::now();
        let mut late = connect(addr);
        let took = time_to_close(&mut late, late_since);
        assert!(
            took >= IDLE && took < IDLE + Duration::from_secs(10),
            "an idle session ended after {took:?}"
        );
        let mut trickle = trickler.join().expect("the trickler");
        let mut buf = [0u8; 1];
        assert_eq!(
            trickle.read(&mut buf).unwrap_or(0),
            0,
            "the trickler ends too"
        );
        reactor.stop();
    });
}

/// The same through TLS: each piece is a record of its own, and the records' wire bytes
/// are cut a few bytes at a time, so the filter's wire buffer, its plaintext and the
/// session's read buffer all hold partial units between events.
#[cfg(feature = "tls")]
#[test]
fn interleaved_partial_tls_records_never_cross_sessions() {
    use getty::codec::filter::{Filter, TlsFilter};
    use getty::tls;

    watchdog(LIMIT, || {
        const SESSIONS: usize = 12;
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let server = TcpServer::builder()
            .tls(tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
            .session_options(SessionOptions::default().max_outbound(4 << 20))
            .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
            .unwrap();
        let addr = server.local_addr();
        let reactor = Running::serve("idle-buffers-tls", server);
        let client_config = tls::client_config(chain.as_bytes()).unwrap();
        let mut peers: Vec<(TcpStream, TlsFilter)> = (0..SESSIONS)
            .map(|_| {
                let mut stream = connect(addr);
                let mut client = TlsFilter::client(client_config.clone(), "localhost").unwrap();
                common::tls_exchange(&mut stream, &mut client, &[], 0);
                (stream, client)
            })
            .collect();
        let wires: Vec<Vec<u8>> = peers
            .iter_mut()
            .enumerate()
            .map(|(who, (_, client))| {
                let plain: Vec<u8> = payloads(who).iter().flat_map(|p| frame(p)).collect();
                let mut wire = bytes::BytesMut::new();
                let mut at = 0;
                let mut step = who;
                while at < plain.len() {
                    let take = STEPS[step % STEPS.len()].min(plain.len() - at);
                    client.encode(&plain[at..at + take], &mut wire).unwrap();
                    client.flush(&mut wire).unwrap();
                    at += take;
                    step += 1;
                }
                wire.to_vec()
            })
            .collect();
        let mut sent = [0usize; SESSIONS];
        let mut step = 0;
        let mut rounds = 0;
        while sent.iter().zip(&wires).any(|(s, w)| s < &w.len()) {
            rounds += 1;
            assert!(rounds < 20_000, "bounded");
            for who in 0..SESSIONS {
                let take = STEPS[(step + 3 * who) % STEPS.len()].min(wires[who].len() - sent[who]);
                peers[who]
                    .0
                    .write_all(&wires[who][sent[who]..sent[who] + take])
                    .unwrap();
                sent[who] += take;
            }
            step += 1;
            std::thread::sleep(Duration::from_micros(300));
        }
        for (who, (stream, client)) in peers.iter_mut().enumerate() {
            let expected: Vec<u8> = payloads(who).iter().flat_map(|p| frame(p)).collect();
            let (plain, _) = common::tls_exchange(stream, client, &[], expected.len());
            assert_eq!(plain.len(), expected.len(), "session {who}: echoed length");
            let first_difference = plain.iter().zip(&expected).position(|(a, b)| a != b);
            assert_eq!(first_difference, None, "session {who}: echoed bytes differ");
        }
        reactor.stop();
    });
}

/// How long the pool of `an_idle_reactor_frees_its_pool_then_sleeps` keeps a buffer unused.
const RELEASE_AFTER: Duration = Duration::from_millis(500);

/// What the pool holds: ordinary buffers, bytes of large ones, and bytes of the buffers
/// the transports keep beside it (their spare session boxes).
fn pool_holds(reactor: &Running) -> (usize, usize, usize) {
    reactor.run_on(|s| {
        let pool = s.buffers();
        (
            pool.idle(),
            pool.large_idle_bytes(),
            pool.thread_cache_bytes(),
        )
    })
}

#[test]
fn an_idle_reactor_frees_its_pool_then_sleeps() {
    watchdog(LIMIT, || {
        let server = TcpServer::builder()
            .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
            .unwrap();
        let addr = server.local_addr();
        let pool = BufPool::default().release_unused_after(Some(RELEASE_AFTER));
        let reactor = Running::serve_with("idle-pool", server, move || {
            Reactor::builder().buffer_pool(pool).build()
        });
        // A burst: four sessions at once, each echoing frames larger than a pooled buffer
        // (kept apart as large buffers) and small ones.
        let mut streams: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
        let burst = |streams: &mut Vec<TcpStream>| {
            std::thread::scope(|scope| {
                for (who, stream) in streams.iter_mut().enumerate() {
                    scope.spawn(move || {
                        for round in 0..3 {
                            let large: Vec<u8> = (0..300_000)
                                .map(|k| (who * 7 + round + k % 253) as u8)
                                .collect();
                            echo_roundtrip(stream, &large);
                            echo_roundtrip(stream, &[who as u8; 100]);
                        }
                    });
                }
            });
        };
        burst(&mut streams);
        // (Ordinary buffers mostly wait in the sessions' spare boxes, a short list beside
        // the pool; the large ones always come back to the pool.)
        let (idle, large, spare) = pool_holds(&reactor);
        assert!(
            large > 0 && spare > 0,
            "the burst left {idle} ordinary buffers, {large} B of large ones and {spare} B \
             in spare boxes"
        );

        // Unused for two intervals at most, then freed, while the sessions stay open.
        let deadline = Instant::now() + STEP;
        while pool_holds(&reactor) != (0, 0, 0) {
            assert!(
                Instant::now() < deadline,
                "the pool still holds {:?}",
                pool_holds(&reactor)
            );
            std::thread::sleep(RELEASE_AFTER / 5);
        }
        // An empty pool is no reason to wake: over four intervals the loop turns only for
        // the two queries (with a pool still holding buffers it would turn four times more).
        let turns = || reactor.run_on(|s| s.loop_metrics().turns);
        let before = turns();
        std::thread::sleep(4 * RELEASE_AFTER);
        let woke = turns() - before;
        assert!(
            woke <= 2,
            "an idle reactor with an empty pool turned {woke} times"
        );

        // The same sessions carry on with fresh buffers, byte for byte.
        burst(&mut streams);
        drop(streams);
        reactor.stop();
    });
}
