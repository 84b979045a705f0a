//! Hostile checks of the read-ahead cap (`READ_AHEAD`): a frame whose header claims a
//! large length grows the read buffer only as its body arrives. A real large frame must
//! still arrive whole. The tests print the time for each size beside a plain blocking read
//! of the same bytes over loopback, to show at a glance that the copying does not grow
//! with the square of the size; they assert only that every byte arrives (speed belongs
//! in the benches). Best read in release (`cargo test --release --test read_ahead --
//! --nocapture`).

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{Handler, Session, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(300);
const MAX_MESSAGE: usize = 64 << 20;

/// Reports each message's length and a checksum of it, and when it arrived.
struct Sizer(Sender<Ev>);

fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |h, &b| h.rotate_left(5) ^ u64::from(b))
}

impl Handler<LengthFieldCodec> for Sizer {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let what = format!("{} {}", msg.len(), checksum(&msg));
        let _ = self.0.send(Ev::Note { sid: s.id(), what });
    }
}

/// A payload of `len` bytes that is not all one byte.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 + i / 4099) as u8).collect()
}

/// Sends `wire` on `stream` from another thread and waits for the server's note; returns
/// the time from the first byte sent to the note.
fn timed_send(stream: &TcpStream, wire: Vec<u8>, events: &mut Events, expect: &str) -> Duration {
    let mut w = stream.try_clone().unwrap();
    // Counted before sending: a small message's note may come before the next line runs.
    let before = events.count(|e| matches!(e, Ev::Note { .. }));
    let began = Instant::now();
    let writer = std::thread::spawn(move || w.write_all(&wire).unwrap());
    let notes = events.wait_n("the large message", before + 1, |e| {
        matches!(e, Ev::Note { .. })
    });
    let took = began.elapsed();
    writer.join().unwrap();
    let Some(Ev::Note { what, .. }) = notes.last() else {
        unreachable!()
    };
    assert_eq!(what, expect, "the message arrived damaged");
    took
}

/// The fastest of `runs` sends of one `len`-byte message through `send_one`.
fn best_of(runs: usize, mut send_one: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| send_one()).min().unwrap()
}

fn tcp_server() -> (Running, SocketAddr, Events) {
    let (tx, events) = Events::new();
    let server = TcpServer::builder()
        .session_options(SessionOptions::default().max_message_len(MAX_MESSAGE))
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), Sizer(tx.clone())))
        })
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("rv-read-ahead", server), addr, events)
}

#[test]
fn a_32_mib_frame_arrives_whole_about_as_fast_as_a_plain_read() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let (server, addr, mut events) = tcp_server();
        let stream = connect(addr);
        let mut time = |len: usize| {
            let body = payload(len);
            let expect = format!("{len} {}", checksum(&body));
            let wire = frame(&body);
            let getty = best_of(3, || {
                timed_send(&stream, wire.clone(), &mut events, &expect)
            });
            (getty, best_of(3, || plain_loopback(&wire)))
        };
        let (small, _) = time(8 << 20);
        let (large, plain) = time(32 << 20);
        let ratio = large.as_secs_f64() / small.as_secs_f64();
        println!(
            "TCP: 8 MiB frame in {small:?}, 32 MiB in {large:?} (ratio {ratio:.2}); a \
             plain blocking read of 32 MiB {plain:?}"
        );
        server.stop();
    });
}

#[cfg(feature = "ws")]
mod websocket {
    use super::*;
    use getty::codec::{Message, MessageCodec};
    use getty::ws::{Ws, WsServer};

    struct WsSizer(Sender<Ev>);

    impl Handler<MessageCodec, Ws> for WsSizer {
        fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
            let msg = msg.into_payload();
            let what = format!("{} {}", msg.len(), checksum(&msg));
            let _ = self.0.send(Ev::Note { sid: s.id(), what });
        }
    }

    /// One masked binary frame (mask key 0: the payload goes as it is).
    fn ws_frame(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x82, 0x80 | 127];
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_32_mib_websocket_frame_arrives_whole_about_as_fast_as_a_plain_read() {
        watchdog(TEST_LIMIT, || {
            let _gate = exclusive_gate();
            let (tx, mut events) = Events::new();
            let server = WsServer::builder()
                .session_options(SessionOptions::default().max_message_len(MAX_MESSAGE))
                .route("/echo", move |_| Ok((MessageCodec, WsSizer(tx.clone()))))
                .bind("127.0.0.1:0")
                .unwrap();
            let addr = server.local_addr();
            let server = Running::serve("rv-ws-read-ahead", server);
            let mut stream = connect(addr);
            ws_upgrade(&mut stream);
            let mut time = |len: usize| {
                let body = payload(len);
                let expect = format!("{len} {}", checksum(&body));
                let wire = ws_frame(&body);
                let getty = best_of(3, || {
                    timed_send(&stream, wire.clone(), &mut events, &expect)
                });
                (getty, best_of(3, || plain_loopback(&wire)))
            };
            let (small, _) = time(8 << 20);
            let (large, plain) = time(32 << 20);
            let ratio = large.as_secs_f64() / small.as_secs_f64();
            println!(
                "WebSocket: 8 MiB frame in {small:?}, 32 MiB in {large:?} (ratio {ratio:.2}); a \
                 plain blocking read of 32 MiB {plain:?}"
            );
            server.stop();
        });
    }
}

/// The time per MiB for frames from 2 to 48 MiB, against a plain blocking loopback read
/// of the same bytes: copying that grows with the square of the frame shows as a time per
/// MiB that keeps growing with the size, well past the plain read's.
#[test]
fn time_per_mib_stays_flat_as_frames_grow() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let (server, addr, mut events) = tcp_server();
        let stream = connect(addr);
        let mut rows = Vec::new();
        for mib in [2usize, 8, 32, 48] {
            let body = payload(mib << 20);
            let expect = format!("{} {}", body.len(), checksum(&body));
            let wire = frame(&body);
            let getty = best_of(2, || {
                timed_send(&stream, wire.clone(), &mut events, &expect)
            });
            let plain = best_of(2, || plain_loopback(&wire));
            rows.push((mib, getty, plain));
        }
        for (mib, getty, plain) in &rows {
            println!(
                "{mib:>2} MiB: getty {getty:?} ({:.2} ms/MiB), plain read {plain:?} ({:.2} ms/MiB)",
                getty.as_secs_f64() * 1e3 / *mib as f64,
                plain.as_secs_f64() * 1e3 / *mib as f64
            );
        }
        let per_mib = |row: &(usize, Duration, Duration)| row.1.as_secs_f64() / row.0 as f64;
        let growth = per_mib(&rows[3]) / per_mib(&rows[1]);
        println!("time per MiB, 48 MiB vs 8 MiB: x{growth:.2}");
        // For the reader: this machine's own time per MiB grows between 8 and 48 MiB too
        // (about x1.5); copying the buffer on every growth step made it x11.
        server.stop();
    });
}

/// The same bytes sent over a fresh loopback connection to a blocking reader that keeps
/// them in one buffer sized up front, and checksums them: the baseline.
fn plain_loopback(wire: &[u8]) -> Duration {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let len = wire.len();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; len];
        std::io::Read::read_exact(&mut s, &mut buf).unwrap();
        checksum(&buf[4..])
    });
    let mut w = connect(addr);
    let began = Instant::now();
    w.write_all(wire).unwrap();
    let _ = reader.join().unwrap();
    began.elapsed()
}

/// Writes back every message.
struct Echo;

impl Handler<LengthFieldCodec> for Echo {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = s.write(msg);
    }
}

/// Frames of mixed sizes, around the pool's buffer size, twice it, and up to the default
/// 1 MiB limit, pipelined by several peers at once in random cuts: every echo comes back
/// whole and in order while the read buffers grow, go back to the pool, and are taken
/// again by other sessions for frames of other sizes.
#[test]
fn mixed_large_frames_pass_through_the_pool_whole_and_in_order() {
    const SIZES: [usize; 12] = [
        0, 1, 1000, 65_532, 65_536, 131_068, 131_079, 200_000, 262_140, 262_148, 700_000, 1_048_572,
    ];
    watchdog(TEST_LIMIT, || {
        let server = TcpServer::builder()
            .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("rv-mixed-frames", server);
        let peers: Vec<_> = (0..4u64)
            .map(|seed| {
                std::thread::spawn(move || {
                    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                    let mut next = move |below: usize| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        (rng % below as u64) as usize
                    };
                    let sizes: Vec<usize> = (0..40).map(|_| SIZES[next(SIZES.len())]).collect();
                    let wire: Vec<u8> = sizes.iter().flat_map(|&n| frame(&payload(n))).collect();
                    let cuts: Vec<usize> = (0..200).map(|_| 1 + next(300_000)).collect();
                    let stream = connect(addr);
                    let mut w = stream.try_clone().unwrap();
                    let writer = std::thread::spawn(move || {
                        let mut rest = &wire[..];
                        for cut in cuts.iter().cycle() {
                            if rest.is_empty() {
                                break;
                            }
                            let (now, later) = rest.split_at((*cut).min(rest.len()));
                            w.write_all(now).unwrap();
                            rest = later;
                        }
                    });
                    let mut r = stream;
                    for (i, &n) in sizes.iter().enumerate() {
                        let echo = read_frame(&mut r);
                        assert!(echo == payload(n), "peer {seed}: echo {i} ({n} B) differs");
                    }
                    writer.join().unwrap();
                })
            })
            .collect();
        for peer in peers {
            peer.join().expect("a peer");
        }
        server.stop();
    });
}
