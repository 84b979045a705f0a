//! Compressed TCP sessions over loopback: a getty-rs server with a deflate filter, and
//! blocking clients that compress with the same sans-IO filter by hand (so the wire format
//! is checked independently of the session machinery), or a getty-rs client.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use getty::codec::filter::{DeflateFilter, Filter};
use getty::codec::{Bytes, Compression, LengthFieldCodec, LinesCodec};
use getty::tcp::{TcpClient, TcpServer};
use getty::{Handler, Session, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(60);

const LEVELS: [Compression; 4] = [
    Compression::Default,
    Compression::Fast,
    Compression::Best,
    Compression::HuffmanOnly,
];

fn compressed(level: Compression) -> SessionOptions {
    SessionOptions::default().compression(Some(level))
}

fn echo_server(options: SessionOptions, tx: &Sender<Ev>) -> (Running, SocketAddr) {
    let tx = tx.clone();
    let server = TcpServer::builder()
        .session_options(options)
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), Probe::echo(&tx)))
        })
        .expect("bind");
    let addr = server.local_addr();
    (Running::serve("deflate-server", server), addr)
}

/// A blocking client that speaks length-prefixed frames through a deflate filter.
struct DeflateClient {
    stream: TcpStream,
    filter: DeflateFilter,
    wire_in: BytesMut,
    plain_in: BytesMut,
}

impl DeflateClient {
    fn connect(addr: SocketAddr, level: Compression) -> Self {
        DeflateClient {
            stream: connect(addr),
            filter: DeflateFilter::new(level),
            wire_in: BytesMut::new(),
            plain_in: BytesMut::new(),
        }
    }

    /// Compresses `frames` as one batch (one sync flush) and writes the wire bytes in
    /// random pieces.
    fn send(&mut self, frames: &[Vec<u8>], rng: &mut fastrand::Rng) {
        let mut wire = BytesMut::new();
        for f in frames {
            self.filter.encode(&frame(f), &mut wire).unwrap();
        }
        self.filter.flush(&mut wire).unwrap();
        while !wire.is_empty() {
            let n = rng.usize(1..=wire.len().min(9000));
            self.stream.write_all(&wire.split_to(n)).unwrap();
        }
    }

    fn receive(&mut self) -> Vec<u8> {
        loop {
            if self.plain_in.len() >= 4 {
                let len = u32::from_be_bytes(self.plain_in[..4].try_into().unwrap()) as usize;
                if self.plain_in.len() >= 4 + len {
                    let whole = self.plain_in.split_to(4 + len);
                    return whole[4..].to_vec();
                }
            }
            let mut buf = [0u8; 16 * 1024];
            let n = self.stream.read(&mut buf).expect("read the echo");
            assert!(n > 0, "server closed early");
            self.wire_in.extend_from_slice(&buf[..n]);
            self.filter
                .decode(&mut self.wire_in, &mut self.plain_in, usize::MAX)
                .unwrap();
        }
    }
}

fn payload(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    let len = (max as f64).powf(rng.f64()) as usize;
    // Compressible text with some noise, so every level has work to do.
    let words = [&b"getty "[..], b"session ", b"deflate ", b"{\"id\":42} "];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        if rng.u8(..) < 16 {
            out.push(rng.u8(..));
        } else {
            out.extend_from_slice(words[rng.usize(..words.len())]);
        }
    }
    out.truncate(len);
    out
}

#[test]
fn every_level_echoes_random_sizes_and_splits() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        for (i, level) in LEVELS.into_iter().enumerate() {
            let (tx, mut events) = Events::new();
            let (server, addr) = echo_server(compressed(level), &tx);
            let mut rng = fastrand::Rng::with_seed(7 + i as u64);
            for _ in 0..4 {
                let mut client = DeflateClient::connect(addr, level);
                for _ in 0..40 {
                    let batch: Vec<Vec<u8>> = (0..rng.usize(1..4))
                        .map(|_| payload(&mut rng, 64 * 1024))
                        .collect();
                    client.send(&batch, &mut rng);
                    for sent in &batch {
                        assert_eq!(&client.receive(), sent, "{level:?}");
                    }
                }
            }
            server.stop();
            events.pump();
            events.check_contract();
            assert!(
                events.count(|e| matches!(e, Ev::Error { .. })) == 0,
                "{level:?}"
            );
        }
    });
}

/// The session's stats count wire and plain bytes apart, and text shrinks on the wire.
#[test]
fn stats_count_wire_and_plain_bytes() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut events) = Events::new();
        let (stats_tx, stats_rx) = std::sync::mpsc::channel();
        struct Report(Sender<getty::Stats>);
        impl Handler<LengthFieldCodec> for Report {
            fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
                s.write(msg).unwrap();
            }
            fn on_close(&mut self, s: &mut Session<LengthFieldCodec>) {
                let _ = self.0.send(s.stats());
            }
        }
        let server = TcpServer::builder()
            .session_options(compressed(Compression::Default))
            .bind("127.0.0.1:0", move |_| {
                Ok((LengthFieldCodec::default(), Report(stats_tx.clone())))
            })
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("stats", server);
        let mut client = DeflateClient::connect(addr, Compression::Default);
        let text = b"the same words again and again ".repeat(300);
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..10 {
            client.send(std::slice::from_ref(&text), &mut rng);
            assert_eq!(client.receive(), text);
        }
        drop(client);
        let stats = stats_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let plain = 10 * (text.len() as u64 + 4);
        assert_eq!(stats.plain_bytes_in, plain);
        assert_eq!(stats.plain_bytes_out, plain);
        assert!(stats.bytes_in * 20 < plain, "{stats:?}");
        assert!(stats.bytes_out * 20 < plain, "{stats:?}");
        running.stop();
        drop(tx);
        events.pump();
    });
}

/// Garbage where deflate data belongs ends that session with a filter error; a compressed
/// session next to it carries on.
#[test]
fn garbage_closes_only_that_session() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut events) = Events::new();
        let (server, addr) = echo_server(compressed(Compression::Fast), &tx);
        let mut good = DeflateClient::connect(addr, Compression::Fast);
        let mut rng = fastrand::Rng::with_seed(3);
        good.send(&[b"before".to_vec()], &mut rng);
        assert_eq!(good.receive(), b"before");

        let mut bad = connect(addr);
        bad.write_all(&[0xff; 64]).unwrap();
        expect_closed(&mut bad);
        let errors = events.wait("a filter error", |e| {
            matches!(e, Ev::Error { err: ErrKind::Other(text), .. } if text.contains("deflate"))
        });
        let sid = errors.sid();
        events.wait_close(sid);

        good.send(&[b"after".to_vec()], &mut rng);
        assert_eq!(good.receive(), b"after");
        server.stop();
        events.pump();
        events.check_contract();
    });
}

/// A deflate bomb: a megabyte on the wire that inflates to a gigabyte of bytes without a
/// line break. The session holds at most its max message length (plus one read's worth)
/// and then ends with `MessageTooLong`; it never inflates the rest.
#[test]
fn a_bomb_is_refused_within_the_message_limit() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut events) = Events::new();
        let max = 256 * 1024;
        let server = {
            let tx = tx.clone();
            TcpServer::builder()
                .session_options(compressed(Compression::Default).max_message_len(max))
                .bind("127.0.0.1:0", move |_| {
                    Ok((LinesCodec::new(64 << 20), Probe::echo(&tx)))
                })
                .unwrap()
        };
        let addr = server.local_addr();
        let running = Running::serve("bomb", server);

        let (head, block) = zeros_bomb();
        let mut stream = connect(addr);
        stream.write_all(&head).unwrap();
        let mut sent = head.len() as u64;
        let started = Instant::now();
        // A GiB of zeros (1024 blocks of a MiB each); the server gives up long before.
        for _ in 0..1024 {
            if stream.write_all(&block).is_err() {
                break;
            }
            sent += block.len() as u64;
        }
        let err = events.wait("the bomb's error", |e| matches!(e, Ev::Error { .. }));
        match err {
            Ev::Error {
                err: ErrKind::MessageTooLong { len, max: m },
                ..
            } => {
                assert_eq!(m, max);
                assert!(len <= max + 64 * 1024 + 1, "buffered {len} bytes");
            }
            other => panic!("expected MessageTooLong, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(20));
        let _ = sent;
        running.stop();
        events.pump();
        events.check_contract();
    });
}

/// The first block of a stream of zeros and a block that repeats: after a MiB of zeros the
/// compressor's state is the same at every MiB, so each further MiB compresses to the same
/// bytes and the bomb can be sent without compressing a gigabyte.
fn zeros_bomb() -> (Vec<u8>, Vec<u8>) {
    let zeros = vec![0u8; 1 << 20];
    let mut filter = DeflateFilter::new(Compression::Best);
    let mut blocks = Vec::new();
    for _ in 0..3 {
        let mut wire = BytesMut::new();
        filter.encode(&zeros, &mut wire).unwrap();
        filter.flush(&mut wire).unwrap();
        blocks.push(wire.to_vec());
    }
    assert_eq!(blocks[1], blocks[2], "the repeating block");
    let mut head = blocks[0].clone();
    head.extend_from_slice(&blocks[1]);
    (head, blocks[1].clone())
}

/// A getty-rs client and server that both compress: every level round trips.
#[test]
fn getty_client_and_server_agree_on_every_level() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        for level in LEVELS {
            let (tx, mut events) = Events::new();
            let (server, addr) = echo_server(compressed(level), &tx);
            let (got_tx, got_rx) = std::sync::mpsc::channel::<Bytes>();
            struct Sender100(std::sync::mpsc::Sender<Bytes>);
            impl Handler<LengthFieldCodec> for Sender100 {
                fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
                    for i in 0..100u32 {
                        s.write(format!("message {i} ").repeat(i as usize + 1).as_str())
                            .unwrap();
                    }
                    Ok(())
                }
                fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, msg: Bytes) {
                    let _ = self.0.send(msg);
                }
            }
            let client = TcpClient::builder()
                .session_options(compressed(level))
                .build(addr, move |_| {
                    Ok((LengthFieldCodec::default(), Sender100(got_tx.clone())))
                })
                .unwrap();
            let client = Running::serve("deflate-client", client);
            for i in 0..100u32 {
                let msg = got_rx.recv_timeout(Duration::from_secs(10)).unwrap();
                assert_eq!(
                    msg,
                    format!("message {i} ").repeat(i as usize + 1),
                    "{level:?}"
                );
            }
            client.stop();
            server.stop();
            events.pump();
            events.check_contract();
        }
    });
}

/// getty's 100% CPU bug came from compression meeting socket deadlines. Here an idle
/// compressed session costs nothing: a thousand of them, held open for three seconds,
/// leave the reactor thread's CPU time all but unchanged.
#[cfg(target_os = "linux")]
#[test]
fn a_thousand_idle_compressed_sessions_cost_no_cpu() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut events) = Events::new();
        let (server, addr) = echo_server(compressed(Compression::Default), &tx);
        let mut rng = fastrand::Rng::with_seed(9);
        let mut clients: Vec<DeflateClient> = (0..1000)
            .map(|_| DeflateClient::connect(addr, Compression::Default))
            .collect();
        for client in clients.iter_mut() {
            client.send(&[b"hello".to_vec()], &mut rng);
        }
        for client in clients.iter_mut() {
            assert_eq!(client.receive(), b"hello");
        }
        let before = server.run_on(|_| thread_cpu_time());
        std::thread::sleep(Duration::from_secs(3));
        let after = server.run_on(|_| thread_cpu_time());
        let used = after - before;
        assert!(
            used < Duration::from_millis(50),
            "idle sessions used {used:?} of CPU"
        );
        drop(clients);
        server.stop();
        events.pump();
    });
}

/// The same for WebSocket with permessage-deflate, getty-rs on both ends: a thousand idle
/// compressed sessions (each has sent a compressed message and had it echoed) leave both
/// reactors' CPU time all but unchanged over three seconds.
#[cfg(target_os = "linux")]
#[test]
fn a_thousand_idle_compressed_websocket_sessions_cost_no_cpu() {
    use getty::codec::ws::DeflateConfig;
    use getty::codec::{Message, MessageCodec};
    use getty::ws::{WsClient, WsServer};

    struct Echo;
    impl Handler<MessageCodec> for Echo {
        fn on_message(&mut self, s: &mut Session<MessageCodec>, msg: Message) {
            s.write(msg).unwrap();
        }
    }
    /// Sends one compressible message and reports whether its echo came back compressed.
    struct Hello(Sender<bool>);
    impl Handler<MessageCodec> for Hello {
        fn on_open(&mut self, s: &mut Session<MessageCodec>) -> std::io::Result<()> {
            s.write(Message::text("hello idle world ".repeat(8)))?;
            Ok(())
        }
        fn on_message(&mut self, s: &mut Session<MessageCodec>, _: Message) {
            let _ = self.0.send(s.websocket_deflate().is_some());
        }
    }

    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let server = WsServer::builder()
            .deflate(Some(DeflateConfig::default()))
            .route("/", |_| Ok((MessageCodec, Echo)))
            .bind("127.0.0.1:0")
            .unwrap();
        let url = format!("ws://{}/", server.local_addr());
        let server = Running::serve("ws-idle-server", server);
        let (tx, rx) = std::sync::mpsc::channel();
        let client = WsClient::builder()
            .connection_number(1000)
            .deflate(Some(DeflateConfig::default()))
            .build(&url, move |_| Ok((MessageCodec, Hello(tx.clone()))))
            .unwrap();
        let client = Running::serve("ws-idle-clients", client);
        for _ in 0..1000 {
            assert!(rx.recv_timeout(STEP).unwrap(), "deflate was negotiated");
        }
        let cpu = |r: &Running| r.run_on(|_| thread_cpu_time());
        let before = (cpu(&server), cpu(&client));
        std::thread::sleep(Duration::from_secs(3));
        let used = (cpu(&server) - before.0, cpu(&client) - before.1);
        assert!(
            used.0 < Duration::from_millis(50) && used.1 < Duration::from_millis(50),
            "idle sessions used {:?} (server) and {:?} (client) of CPU",
            used.0,
            used.1
        );
        client.stop();
        server.stop();
    });
}
