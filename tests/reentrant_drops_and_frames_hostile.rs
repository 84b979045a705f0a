//! User values the framework drops may call back into it: a refused offload job, a job
//! posted to a stopped reactor, a broadcast message whose drop broadcasts again. None may
//! deadlock or panic. And WebSocket frames as they leave, on every write path: byte-exact
//! at each header-size boundary, compressed under permessage-deflate, masked by a client,
//! in order when pipelined.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use getty::codec::ws::{Config, DeflateConfig, Event, Protocol, Role};
use getty::codec::{Message, MessageCodec, MessageKind};
use getty::transports::{Error, Offload};
use getty::ws::{Ws, WsServer};
use getty::{Handler, Session, SessionOptions};

/// A job whose drop runs `on_drop`.
struct OnDrop<F: FnMut()>(F);
impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

#[test]
fn a_job_refused_as_closed_whose_drop_shuts_down_and_resubmits_does_not_deadlock() {
    watchdog(Duration::from_secs(20), || {
        let pool = Offload::new(1, 1).unwrap();
        pool.shutdown();
        let dropped = Arc::new(AtomicUsize::new(0));
        let (p, d) = (pool.clone(), dropped.clone());
        let guard = OnDrop(move || {
            d.fetch_add(1, Ordering::SeqCst);
            p.shutdown(); // takes the write lock
            assert!(matches!(p.submit(1, || {}), Err(Error::Closed))); // the read lock
        });
        let r = pool.submit(1, move || drop(guard));
        assert!(matches!(r, Err(Error::Closed)));
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn a_job_refused_for_backpressure_whose_drop_resubmits_does_not_deadlock() {
    watchdog(Duration::from_secs(20), || {
        let pool = Offload::new(1, 1).unwrap();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        pool.submit(0, move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(10));
        })
        .unwrap();
        started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        pool.submit(0, || {}).unwrap(); // fills the queue of 1
        let p = pool.clone();
        let guard = OnDrop(move || {
            // Re-entry from the refused job's drop: refused again, no deadlock.
            assert!(matches!(p.submit(0, || {}), Err(Error::Backpressure)));
        });
        assert!(matches!(
            pool.submit(0, move || drop(guard)),
            Err(Error::Backpressure)
        ));
        release_tx.send(()).unwrap();
        pool.shutdown();
    });
}

#[test]
fn a_job_posted_to_a_stopped_reactor_whose_drop_posts_again_does_not_deadlock() {
    watchdog(Duration::from_secs(20), || {
        let thread = getty::Reactor::start_thread("r29", |_| Ok(())).unwrap();
        let handle = thread.handle().clone();
        handle.shutdown();
        thread.join().unwrap();
        let h = handle.clone();
        let guard = OnDrop(move || {
            assert!(h.execute(|_| {}).is_err());
        });
        assert!(handle.execute(move |_| drop(guard)).is_err());
    });
}

/// Answers "<mode> <n>" with a message of `n` patterned bytes, written the `mode` way.
struct Gen;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 23) as u8).collect()
}

impl Handler<MessageCodec, Ws> for Gen {
    fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
        let text = std::str::from_utf8(msg.payload()).unwrap().to_owned();
        let mut words = text.split(' ');
        let mode = words.next().unwrap();
        let n: usize = words.next().unwrap().parse().unwrap();
        let body = pattern(n);
        match mode {
            "text" => s.write(Message::text(String::from_utf8(body).unwrap())),
            "bin" => s.write(Message::binary(Bytes::from(body))),
            "vec" => s.write(body),
            "bytes" => s.write_bytes(body),
            "vectored" => {
                let b = Bytes::from(body);
                let (a, rest) = (b.slice(..n / 3), b.slice(n / 3..));
                let (c, d) = (rest.slice(..rest.len() / 2), rest.slice(rest.len() / 2..));
                s.write_vectored(&[a, Bytes::new(), c, d])
            }
            other => panic!("mode {other}"),
        }
        .unwrap();
    }
}

fn server(deflate: bool) -> (Running, SocketAddr) {
    let mut builder = WsServer::builder()
        .session_options(SessionOptions::default())
        .route("/gen", |_| Ok((MessageCodec, Gen)));
    builder = builder.deflate(deflate.then(DeflateConfig::default));
    let server = builder.bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    (Running::serve("review29", server), addr)
}

fn upgrade(addr: SocketAddr, deflate: bool) -> TcpStream {
    let mut stream = connect(addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let ext = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET /gen HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(head.contains("permessage-deflate"), deflate, "{head}");
    stream
}

/// A masked client text frame.
fn send_text(stream: &mut TcpStream, text: &str) {
    let p = text.as_bytes();
    assert!(p.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x81, 0x80 | p.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&f).unwrap();
}

const SIZES: &[usize] = &[
    0, 1, 125, 126, 127, 4095, 4096, 4097, 16383, 16384, 16385, 65535, 65536, 65537, 200_000,
];
const MODES: &[&str] = &["text", "bin", "vec", "bytes", "vectored"];

#[test]
fn a_servers_frames_are_byte_exact_at_every_header_boundary_and_every_write_path() {
    let (_server, addr) = server(false);
    let mut stream = upgrade(addr, false);
    for &mode in MODES {
        for &n in SIZES {
            send_text(&mut stream, &format!("{mode} {n}"));
            let (head, payload) = read_server_frame(&mut stream);
            let first = if mode == "text" { 0x81 } else { 0x82 };
            assert_eq!(head, shortest_server_header(first, n), "{mode} {n}: header");
            assert!(payload == pattern(n), "{mode} {n}: payload differs");
        }
    }
}

#[test]
fn a_deflate_sessions_large_messages_are_compressed_and_inflate_to_what_was_written() {
    let (_server, addr) = server(true);
    let mut stream = upgrade(addr, true);
    let mut peer = Protocol::new(
        Role::Client,
        Config::default(),
        Some(DeflateConfig::default()),
    );
    for &mode in MODES {
        for &n in SIZES {
            send_text(&mut stream, &format!("{mode} {n}"));
            let (head, payload) = read_server_frame(&mut stream);
            let rsv1 = head[0] & 0x40 != 0;
            // DeflateConfig::default().min_size is 32: every patterned message above it
            // compresses (the pattern is very compressible).
            assert_eq!(rsv1, n >= 32, "{mode} {n}: RSV1 (compressed) {head:02x?}");
            if rsv1 {
                assert!(payload.len() < n, "{mode} {n}: compressed is not smaller");
            }
            let mut wire = BytesMut::from(&head[..]);
            wire.extend_from_slice(&payload);
            let mut control = BytesMut::new();
            match peer.decode(&mut wire, &mut control).unwrap() {
                Some(Event::Message { kind, payload }) => {
                    let want = if mode == "text" {
                        MessageKind::Text
                    } else {
                        MessageKind::Binary
                    };
                    assert_eq!(kind, want, "{mode} {n}");
                    assert!(
                        payload[..] == pattern(n)[..],
                        "{mode} {n}: inflated differs"
                    );
                }
                other => panic!("{mode} {n}: {other:?}"),
            }
        }
    }
}

/// A client session writes large messages every way in `on_open`.
struct ClientWrites;

impl Handler<MessageCodec, Ws> for ClientWrites {
    fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
        let n = 70_000;
        s.write(Message::text(String::from_utf8(pattern(n)).unwrap()))
            .unwrap();
        s.write(Message::binary(Bytes::from(pattern(n)))).unwrap();
        s.write(pattern(n)).unwrap();
        s.write_bytes(pattern(n)).unwrap();
        let b = Bytes::from(pattern(n));
        s.write_vectored(&[b.slice(..30_000), b.slice(30_000..)])
            .unwrap();
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {}
}

#[test]
fn a_clients_large_messages_are_masked_whatever_the_write_path() {
    use getty::ws::WsClient;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = WsClient::builder()
        .build(&format!("ws://{addr}/"), |_| {
            Ok((MessageCodec, ClientWrites))
        })
        .unwrap();
    let client = Running::serve("review29-client", client);
    let (mut stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let response = accept_ws_request(&mut stream);
    stream.write_all(&response).unwrap();
    // The client sends nothing before the `101`, so no byte past its request was read.
    let mut buf = BytesMut::new();
    let mut peer = Protocol::new(Role::Server, Config::default(), None);
    let want = pattern(70_000);
    for (i, kind) in [
        MessageKind::Text,
        MessageKind::Binary,
        MessageKind::Binary,
        MessageKind::Binary,
        MessageKind::Binary,
    ]
    .into_iter()
    .enumerate()
    {
        // Enough bytes for one frame (header 10 + mask 4 + payload), read whole.
        while buf.len() < 14 + want.len() {
            let mut chunk = [0u8; 65536];
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "message {i}: EOF");
            buf.extend_from_slice(&chunk[..n]);
        }
        assert_ne!(
            buf[1] & 0x80,
            0,
            "message {i}: a client frame must be masked"
        );
        let mut control = BytesMut::new();
        match peer.decode(&mut buf, &mut control).unwrap() {
            Some(Event::Message { kind: k, payload }) => {
                assert_eq!(k, kind, "message {i}");
                assert!(payload[..] == want[..], "message {i}: payload differs");
            }
            other => panic!("message {i}: {other:?}"),
        }
    }
    client.stop();
}

/// A codec for `Noisy` messages and plain strings.
#[derive(Clone)]
struct NoisyCodec;

/// A message whose drop broadcasts on its group (a user value with a re-entrant drop, as
/// the offload fix's job whose drop shuts the pool down).
struct Noisy(Option<getty::SessionGroup<NoisyCodec>>);

impl Drop for Noisy {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            let _ = group.broadcast("dropped");
        }
    }
}

impl getty::codec::Encoder<Noisy> for NoisyCodec {
    fn encode(&mut self, _: Noisy, dst: &mut BytesMut) -> Result<(), getty::codec::CodecError> {
        dst.extend_from_slice(b"noisy");
        Ok(()) // the message drops here, inside the codec
    }
}

impl getty::codec::Encoder<&'static str> for NoisyCodec {
    fn encode(
        &mut self,
        s: &'static str,
        dst: &mut BytesMut,
    ) -> Result<(), getty::codec::CodecError> {
        dst.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[test]
fn a_broadcast_message_whose_drop_broadcasts_again_does_not_deadlock_off_a_reactor() {
    watchdog(Duration::from_secs(10), || {
        let group = getty::SessionGroup::<NoisyCodec>::new(NoisyCodec);
        let reached = group.broadcast(Noisy(Some(group.clone()))).unwrap();
        assert_eq!(reached, 0);
    });
}

/// Joins every session to the group and broadcasts a `Noisy` message from `on_open`.
struct JoinAndBroadcast(getty::SessionGroup<NoisyCodec>);

impl Handler<getty::codec::RawCodec> for JoinAndBroadcast {
    fn on_open(&mut self, s: &mut Session<getty::codec::RawCodec>) -> std::io::Result<()> {
        self.0.join(s).unwrap();
        self.0.broadcast(Noisy(Some(self.0.clone()))).unwrap();
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<getty::codec::RawCodec>, _: Bytes) {}
}

#[test]
fn a_broadcast_message_whose_drop_broadcasts_again_does_not_panic_on_a_reactor() {
    let group = getty::SessionGroup::<NoisyCodec>::new(NoisyCodec);
    let server = getty::tcp::TcpServer::bind("127.0.0.1:0", move |_| {
        Ok((getty::codec::RawCodec, JoinAndBroadcast(group.clone())))
    })
    .unwrap();
    let addr = server.local_addr();
    let _server = Running::serve("review29-group", server);
    let mut stream = connect(addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < b"droppednoisy".len() {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    assert_eq!(String::from_utf8_lossy(&got), "droppednoisy");
}

/// Every request pipelined in one write: the answers queue behind each other in one tail
/// (headers after views, views after copied frames), compressed or not.
#[test]
fn pipelined_answers_of_every_size_and_path_queue_in_order() {
    for deflate in [false, true] {
        let (_server, addr) = server(deflate);
        let mut stream = upgrade(addr, deflate);
        let mut peer = Protocol::new(
            Role::Client,
            Config::default(),
            deflate.then(DeflateConfig::default),
        );
        let mut wire = Vec::new();
        let mut asked = Vec::new();
        for &n in SIZES {
            for &mode in MODES {
                let text = format!("{mode} {n}");
                let mask = [9u8, 8, 7, 6];
                wire.extend_from_slice(&[0x81, 0x80 | text.len() as u8]);
                wire.extend_from_slice(&mask);
                wire.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
                asked.push((mode, n));
            }
        }
        stream.write_all(&wire).unwrap();
        for (mode, n) in asked {
            let (head, payload) = read_server_frame(&mut stream);
            if !deflate {
                let first = if mode == "text" { 0x81 } else { 0x82 };
                assert_eq!(head, shortest_server_header(first, n), "{mode} {n}: header");
            }
            let mut frame = BytesMut::from(&head[..]);
            frame.extend_from_slice(&payload);
            match peer.decode(&mut frame, &mut BytesMut::new()).unwrap() {
                Some(Event::Message { payload, .. }) => {
                    assert!(
                        payload[..] == pattern(n)[..],
                        "deflate {deflate} {mode} {n}"
                    )
                }
                other => panic!("{mode} {n}: {other:?}"),
            }
        }
    }
}
