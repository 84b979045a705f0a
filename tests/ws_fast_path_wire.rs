//! Review of the WebSocket fast path over loopback: a hostile client's frames (whole ones
//! the fast path takes, fragments, interleaved control frames, every length encoding,
//! non-minimal lengths, split code points) written at once, dripped at random cuts, and
//! pipelined ahead of a bad frame. The echoes must be the messages sent, in order, with
//! headers of the shortest length field, and a bad frame must close with the RFC's code
//! after every message before it was echoed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use getty::codec::{Message, MessageCodec, RawCodec};
use getty::ws::{Ws, WsServer};
use getty::{Handler, Session, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Echoes every message with its kind.
struct KindEcho;

impl Handler<MessageCodec, Ws> for KindEcho {
    fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
        s.write(msg).unwrap();
    }
}

/// Echoes every message's bytes (as binary).
struct RawEcho;

impl Handler<RawCodec, Ws> for RawEcho {
    fn on_message(&mut self, s: &mut Session<RawCodec, Ws>, msg: bytes::Bytes) {
        s.write(msg).unwrap();
    }
}

fn servers(options: SessionOptions) -> (Running, SocketAddr) {
    let server = WsServer::builder()
        .session_options(options)
        .route("/kind", |_| Ok((MessageCodec, KindEcho)))
        .route("/raw", |_| Ok((RawCodec, RawEcho)))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("ws-fast-path", server), addr)
}

fn upgrade(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = connect(addr);
    stream.set_nodelay(true).unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "the response head ended"
        );
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{head:?}");
    stream
}

/// How a frame's length is written.
#[derive(Clone, Copy)]
enum LenField {
    Shortest,
    /// 16 bits even for a payload under 126 bytes.
    Wide16,
    /// 64 bits whatever the length.
    Wide64,
}

/// A masked client frame; the mask varies with `seed`.
fn frame(opcode: u8, fin: bool, payload: &[u8], field: LenField, seed: u8) -> Vec<u8> {
    let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
    let n = payload.len();
    match (field, n) {
        (LenField::Shortest, 0..=125) => out.push(0x80 | n as u8),
        (LenField::Shortest | LenField::Wide16, 0..=0xffff) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [
        seed,
        seed.wrapping_mul(7) ^ 0x5a,
        0xa5 ^ seed,
        seed.wrapping_add(91),
    ];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Messages as (opcode, payload).
type Messages = Vec<(u8, Vec<u8>)>;

/// The client's byte stream and the messages it carries, with the number of pings among
/// them.
fn script() -> (Vec<u8>, Messages, usize) {
    let mut wire = Vec::new();
    let mut messages = Vec::new();
    let mut pings = 0;
    let mut seed = 0u8;
    let mut next_seed = || {
        seed = seed.wrapping_add(37);
        seed
    };
    let text = "añ€😀".repeat(40);
    // Whole frames of every length class, each length field.
    for len in [
        0usize, 1, 2, 3, 4, 5, 15, 16, 17, 31, 33, 125, 126, 127, 300, 65_535, 65_536,
    ] {
        for field in [LenField::Shortest, LenField::Wide16, LenField::Wide64] {
            if matches!(field, LenField::Wide16) && len > 0xffff {
                continue;
            }
            let payload: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
            wire.extend(frame(2, true, &payload, field, next_seed()));
            messages.push((2, payload));
        }
    }
    for cut in [0usize, 1, 2, 3, 5, 10] {
        let t = text.as_bytes()[..text.len() - cut].to_vec();
        // Only whole code points make valid text: trim to a boundary.
        let s = String::from_utf8_lossy(&t);
        let t = if s.contains('\u{fffd}') {
            let mut end = t.len();
            while std::str::from_utf8(&t[..end]).is_err() {
                end -= 1;
            }
            t[..end].to_vec()
        } else {
            t
        };
        wire.extend(frame(1, true, &t, LenField::Shortest, next_seed()));
        messages.push((1, t));
    }
    // A text message cut inside a four-byte code point, with control frames between its
    // fragments, then a whole frame right after.
    let emoji = "x😀y".as_bytes().to_vec();
    wire.extend(frame(
        1,
        false,
        &emoji[..2],
        LenField::Shortest,
        next_seed(),
    ));
    wire.extend(frame(9, true, b"p1", LenField::Shortest, next_seed()));
    pings += 1;
    wire.extend(frame(0, false, &emoji[2..4], LenField::Wide64, next_seed()));
    wire.extend(frame(
        10,
        true,
        b"unsolicited",
        LenField::Shortest,
        next_seed(),
    ));
    wire.extend(frame(0, true, &emoji[4..], LenField::Shortest, next_seed()));
    messages.push((1, emoji));
    wire.extend(frame(2, true, b"after", LenField::Shortest, next_seed()));
    messages.push((2, b"after".to_vec()));
    // A binary message in many empty and short fragments.
    let mut joined = Vec::new();
    for i in 0..10u8 {
        let piece = vec![i; usize::from(i % 3)];
        joined.extend_from_slice(&piece);
        let opcode = if i == 0 { 2 } else { 0 };
        wire.extend(frame(
            opcode,
            i == 9,
            &piece,
            LenField::Shortest,
            next_seed(),
        ));
    }
    messages.push((2, joined));
    (wire, messages, pings)
}

/// Writes `wire` in pieces of random sizes (a pause now and then lets the server read
/// between them, so frames straddle its reads).
fn drip(stream: &mut TcpStream, wire: &[u8], rng: &mut fastrand::Rng) {
    let mut at = 0;
    let mut writes = 0;
    while at < wire.len() {
        let n = *rng.choice(&[1usize, 1, 2, 3, 5, 7, 13, 100, 4000]).unwrap();
        let end = (at + n).min(wire.len());
        stream.write_all(&wire[at..end]).unwrap();
        at = end;
        writes += 1;
        if writes % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Reads the echoes of `messages` (and `pings` pongs, in any place) and checks them.
fn expect_echoes(stream: &mut TcpStream, messages: &[(u8, Vec<u8>)], pings: usize, raw: bool) {
    let mut pongs = 0;
    for (i, (opcode, payload)) in messages.iter().enumerate() {
        let (head, got) = loop {
            let (head, payload) = read_server_frame(stream);
            if head[0] == 0x8a {
                assert_eq!(payload, b"p1");
                pongs += 1;
                continue;
            }
            break (head, payload);
        };
        let first = head[0];
        let want_first = 0x80 | if raw { 2 } else { *opcode };
        assert_eq!(first, want_first, "message {i}: first byte");
        assert_eq!(
            head,
            shortest_server_header(first, payload.len()),
            "message {i}: header"
        );
        assert!(
            got == *payload,
            "message {i} of {} bytes came back changed",
            payload.len()
        );
    }
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while pongs < pings {
        let (head, _) = read_server_frame(stream);
        assert_eq!(head[0], 0x8a, "only pongs may follow");
        pongs += 1;
    }
    assert_eq!(pongs, pings);
}

#[test]
fn echoes_of_every_frame_shape_written_at_once_and_dripped() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (server, addr) = servers(SessionOptions::default());
        let (wire, messages, pings) = script();
        let mut rng = fastrand::Rng::with_seed(16);
        for (path, raw) in [("/kind", false), ("/raw", true)] {
            let mut whole = upgrade(addr, path);
            whole.write_all(&wire).unwrap();
            expect_echoes(&mut whole, &messages, pings, raw);
            for _ in 0..3 {
                let mut dripped = upgrade(addr, path);
                drip(&mut dripped, &wire, &mut rng);
                expect_echoes(&mut dripped, &messages, pings, raw);
            }
        }
        server.stop();
    });
}

/// Reads server frames until a close: the data payloads before it, and its code.
fn read_until_close(stream: &mut TcpStream) -> (Vec<Vec<u8>>, u16) {
    let mut data = Vec::new();
    for _ in 0..10_000 {
        let (head, payload) = read_server_frame(stream);
        match head[0] & 0x0f {
            8 => return (data, u16::from_be_bytes([payload[0], payload[1]])),
            1 | 2 => data.push(payload),
            _ => {}
        }
    }
    panic!("no close frame");
}

/// Good whole frames pipelined in one write ahead of a bad one: every good one is echoed,
/// then the close carries the bad one's code; the same when the bytes are dripped.
#[test]
fn a_bad_frame_after_pipelined_good_ones_closes_with_its_code() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let options = SessionOptions::default().max_message_len(4096);
        let (server, addr) = servers(options);
        let mut unmasked = vec![0x82, 0x03];
        unmasked.extend_from_slice(b"abc");
        let mut rsv1 = frame(2, true, b"x", LenField::Shortest, 3);
        rsv1[0] |= 0x40;
        let mut rsv3 = frame(1, true, b"x", LenField::Shortest, 3);
        rsv3[0] |= 0x10;
        let mut open_text = frame(1, false, b"part", LenField::Shortest, 4);
        open_text.extend(frame(1, true, b"whole", LenField::Shortest, 5));
        let mut open_binary = frame(2, false, b"part", LenField::Shortest, 4);
        open_binary.extend(frame(2, true, b"whole", LenField::Shortest, 5));
        let ping_126 = frame(9, true, &[0; 126], LenField::Shortest, 6);
        let euro = "€".as_bytes();
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            (
                "invalid UTF-8",
                frame(1, true, b"ok \xff", LenField::Shortest, 1),
                1007,
            ),
            (
                "a cut code point",
                frame(1, true, &euro[..2], LenField::Shortest, 1),
                1007,
            ),
            (
                "a surrogate",
                frame(1, true, b"\xed\xa0\x80", LenField::Wide16, 1),
                1007,
            ),
            (
                "overlong",
                frame(1, true, b"\xc0\xaf", LenField::Shortest, 1),
                1007,
            ),
            (
                "too big (16-bit)",
                frame(2, true, &[7; 4097], LenField::Shortest, 1),
                1009,
            ),
            (
                "too big (64-bit)",
                frame(2, true, &[7; 5000], LenField::Wide64, 1),
                1009,
            ),
            ("unmasked", unmasked, 1002),
            ("RSV1 without deflate", rsv1, 1002),
            ("RSV3", rsv3, 1002),
            (
                "reserved opcode",
                frame(3, true, b"", LenField::Shortest, 1),
                1002,
            ),
            ("text inside a fragmented text", open_text, 1002),
            ("binary inside a fragmented binary", open_binary, 1002),
            (
                "fragmented ping",
                frame(9, false, b"", LenField::Shortest, 1),
                1002,
            ),
            ("ping of 126 bytes", ping_126, 1002),
            (
                "close code 1005",
                frame(8, true, &1005u16.to_be_bytes(), LenField::Shortest, 1),
                1002,
            ),
            (
                "close of one byte",
                frame(8, true, b"\x03", LenField::Shortest, 1),
                1002,
            ),
            (
                "close reason not UTF-8",
                frame(8, true, b"\x03\xe8\xff", LenField::Shortest, 1),
                1007,
            ),
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for (what, bad, code) in cases {
            let good: Vec<Vec<u8>> = (0..20usize)
                .map(|i| (0..(i * 17) % 300).map(|j| (i + j) as u8).collect())
                .collect();
            let mut wire: Vec<u8> = good
                .iter()
                .enumerate()
                .flat_map(|(i, g)| frame(2, true, g, LenField::Shortest, i as u8))
                .collect();
            wire.extend_from_slice(&bad);
            for dripped in [false, true] {
                let mut stream = upgrade(addr, "/raw");
                if dripped {
                    drip(&mut stream, &wire, &mut rng);
                } else {
                    stream.write_all(&wire).unwrap();
                }
                let (echoed, got) = read_until_close(&mut stream);
                assert!(
                    echoed == good,
                    "{what} (dripped {dripped}): the echoes before it"
                );
                assert_eq!(got, code, "{what} (dripped {dripped})");
            }
        }
        server.stop();
    });
}

/// An unmasked server frame; its length written with `field`.
fn server_frame(first: u8, payload: &[u8], field: LenField) -> Vec<u8> {
    let mut f = frame(first & 0x0f, first & 0x80 != 0, payload, field, 0);
    // Drop the mask: the key (bytes after the length) and the masking of the payload.
    let head = f.len() - payload.len() - 4;
    f[1] &= 0x7f;
    f.truncate(head);
    f.extend_from_slice(payload);
    f
}

/// Reports every message (kind, bytes) and error of a client session.
struct Collector {
    tx: std::sync::mpsc::Sender<String>,
}

impl Handler<MessageCodec, Ws> for Collector {
    fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, msg: Message) {
        let _ = self.tx.send(match msg.as_text() {
            Some(t) => format!("text {t}"),
            None => format!("binary {}", msg.payload().len()),
        });
    }

    fn on_error(&mut self, _: &mut Session<MessageCodec, Ws>, error: &getty::Error) {
        let _ = self.tx.send(format!("error {error}"));
    }
}

/// The client role: a hostile server's frames arrive in the same write as its `101`
/// (unmasked, non-minimal lengths, a fragmented text cut inside a code point with a ping
/// between the pieces), then a masked frame, which a client must refuse with 1002.
#[test]
fn a_client_takes_server_frames_whole_and_refuses_a_masked_one() {
    use std::net::TcpListener;
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let emoji = "x😀".as_bytes();
            let mut wire = accept_ws_request(&mut stream);
            wire.extend(server_frame(0x82, b"a", LenField::Shortest));
            wire.extend(server_frame(0x81, "héllo".as_bytes(), LenField::Wide16));
            wire.extend(server_frame(0x82, &[9; 200], LenField::Wide64));
            wire.extend(server_frame(0x82, &[8; 65_536], LenField::Shortest));
            wire.extend(server_frame(0x01, &emoji[..2], LenField::Shortest));
            wire.extend(server_frame(0x89, b"p", LenField::Shortest));
            wire.extend(server_frame(0x80, &emoji[2..], LenField::Shortest));
            wire.extend(server_frame(0x81, b"last", LenField::Shortest));
            // Masked, from a server: a protocol error.
            wire.extend(frame(2, true, b"masked", LenField::Shortest, 9));
            stream.write_all(&wire).unwrap();
            // The client's frames: (opcode, unmasked payload), until its close.
            let mut got = Vec::new();
            for _ in 0..10 {
                let mut head = [0u8; 2];
                if stream.read_exact(&mut head).is_err() {
                    break;
                }
                assert_eq!(head[1] & 0x80, 0x80, "a client frame must be masked");
                let len = usize::from(head[1] & 0x7f);
                assert!(len < 126, "a control frame");
                let mut key = [0u8; 4];
                stream.read_exact(&mut key).unwrap();
                let mut payload = vec![0u8; len];
                stream.read_exact(&mut payload).unwrap();
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= key[i % 4];
                }
                let opcode = head[0] & 0x0f;
                got.push((opcode, payload));
                if opcode == 8 {
                    break;
                }
            }
            got
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let client = getty::ws::WsClient::builder()
            .build(&format!("ws://{addr}/"), move |_| {
                Ok((MessageCodec, Collector { tx: tx.clone() }))
            })
            .unwrap();
        let client = Running::serve("ws-hostile-server-client", client);
        let mut seen = Vec::new();
        while seen.len() < 7 {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(s) => seen.push(s),
                Err(_) => break,
            }
        }
        let frames = server.join().unwrap();
        client.stop();
        println!("client saw {seen:?}; sent {frames:?}");
        assert_eq!(
            seen[..6],
            [
                "binary 1",
                "text héllo",
                "binary 200",
                "binary 65536",
                "text x😀",
                "text last"
            ],
            "{seen:?}"
        );
        assert!(
            seen.get(6).is_some_and(|e| e.starts_with("error")),
            "{seen:?}"
        );
        let pong = frames.iter().find(|f| f.0 == 10);
        assert_eq!(pong.map(|f| &f.1[..]), Some(&b"p"[..]), "{frames:?}");
        let close = frames.last().filter(|f| f.0 == 8).expect("a close frame");
        assert_eq!(u16::from_be_bytes([close.1[0], close.1[1]]), 1002);
    });
}
