//! Compressed TCP sessions over loopback: a getty-rs server with a deflate filter, and
//! blocking clients that compress with the same sans-IO filter by hand (so the wire format
//! is checked independently of the session machinery), or a getty-rs client.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use getty::codec::filter::{DeflateFilter, Filter};
use getty::codec::{Bytes, Compression, LengthFieldCodec, LinesCodec};
use getty::tcp::{TcpClient, TcpServer};
#[cfg(feature = "ws")]
use getty::ws::Ws;
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

/// A compressed stream cut inside a batch (the peer's inflater has taken the start of a
/// block and produced nothing yet) is a truncation, reported like a frame cut short; a FIN
/// after a whole batch is a clean close. Replies to whole frames go out either way.
#[test]
fn a_stream_cut_inside_a_batch_is_a_truncation() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut events) = Events::new();
        let (server, addr) = echo_server(compressed(Compression::Default), &tx);
        let mut rng = fastrand::Rng::with_seed(20);
        let mut whole_then = |cut: Option<usize>| {
            let mut client = DeflateClient::connect(addr, Compression::Default);
            let sid = events.wait_open(client.stream.local_addr().unwrap());
            client.send(&[b"whole".to_vec()], &mut rng);
            assert_eq!(client.receive(), b"whole");
            if let Some(cut) = cut {
                let mut wire = BytesMut::new();
                let text = payload(&mut rng, 4000).repeat(4);
                client.filter.encode(&frame(&text), &mut wire).unwrap();
                client.filter.flush(&mut wire).unwrap();
                client.stream.write_all(&wire[..cut]).unwrap();
            }
            client.stream.shutdown(std::net::Shutdown::Write).unwrap();
            expect_closed(&mut client.stream);
            events.wait_close(sid);
            events.errors_of(sid)
        };
        assert_eq!(whole_then(None), vec![]);
        // The first bytes hold a block header and no output; later cuts leave part of a
        // frame. Where the inflater took every byte, no buffer shows the cut.
        for cut in [1, 2, 3, 5, 8, 100] {
            let errors = whole_then(Some(cut));
            let truncated = matches!(errors[..], [ErrKind::UnexpectedEof { .. }]);
            assert!(truncated, "cut after {cut} bytes: {errors:?}");
        }
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
#[cfg(feature = "ws")]
#[cfg(target_os = "linux")]
#[test]
fn a_thousand_idle_compressed_websocket_sessions_cost_no_cpu() {
    use getty::codec::ws::DeflateConfig;
    use getty::codec::{Message, MessageCodec};
    use getty::ws::{WsClient, WsServer};

    struct Echo;
    impl Handler<MessageCodec, Ws> for Echo {
        fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
            s.write(msg).unwrap();
        }
    }
    /// Sends one compressible message and reports whether its echo came back compressed.
    struct Hello(Sender<bool>);
    impl Handler<MessageCodec, Ws> for Hello {
        fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
            s.write(Message::text("hello idle world ".repeat(8)))?;
            Ok(())
        }
        fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, _: Message) {
            let _ = self.0.send(s.deflate().is_some());
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

// ---------------------------------------------------------------------------------------
// permessage-deflate and a handler that drops what does not fit (issue 11, part 4)
// ---------------------------------------------------------------------------------------

/// Messages the feed server offers per cron tick (every 10 ms), and in all.
#[cfg(feature = "ws")]
const FEED_PER_TICK: u64 = 40;
#[cfg(feature = "ws")]
const FEED_TOTAL: u64 = 16_000;

/// The feed's messages: JSON that compresses well against the messages before it, with
/// enough that differs from one to the next (the seq, a token, the words) that a
/// back-reference into a message the reader never got inflates to other text.
/// `tests/interop/ws_feed_reader.py` makes the same text.
#[cfg(feature = "ws")]
fn feed_message(seq: u64) -> String {
    const WORDS: [&str; 7] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
    ];
    let words: Vec<&str> = (0..seq % 11 + 5)
        .map(|k| WORDS[((seq * 7 + k * 3) % 7) as usize])
        .collect();
    let token = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 8;
    format!(
        "{{\"seq\":{seq},\"user\":\"user-{}\",\"room\":\"lobby\",\"token\":\"{token:014x}\",\"text\":\"{}\",\"body\":\"{}\"}}",
        seq % 97,
        words.join(" "),
        words.join("/").repeat(4)
    )
}

#[cfg(feature = "ws")]
fn feed_seq(text: &str) -> Option<u64> {
    text.strip_prefix("{\"seq\":")?
        .split(',')
        .next()?
        .parse()
        .ok()
}

/// What the feed server did with its messages.
#[cfg(feature = "ws")]
#[derive(Debug, Clone, Default)]
struct FeedReport {
    accepted: u64,
    refused: u64,
    /// Messages queued after at least one was refused: the ones that could refer to a
    /// refused message.
    accepted_after_refusal: u64,
}

/// The usual fan-out to a slow consumer: on every cron tick it offers messages and drops
/// the ones that do not fit in the session's outbound queue (`QueueFull`); at the end it
/// says how many it queued.
#[cfg(feature = "ws")]
struct Feed {
    next: u64,
    report: FeedReport,
    done: bool,
    tx: Sender<Result<FeedReport, String>>,
}

#[cfg(feature = "ws")]
impl Handler<getty::codec::MessageCodec, Ws> for Feed {
    fn on_message(
        &mut self,
        _: &mut Session<getty::codec::MessageCodec, Ws>,
        _: getty::codec::Message,
    ) {
    }

    fn on_cron(&mut self, s: &mut Session<getty::codec::MessageCodec, Ws>) {
        use getty::codec::Message;
        if self.done {
            return;
        }
        for _ in 0..FEED_PER_TICK {
            if self.next == FEED_TOTAL {
                break;
            }
            let seq = self.next;
            self.next += 1;
            match s.write(Message::text(feed_message(seq))) {
                Ok(()) => {
                    self.report.accepted += 1;
                    if self.report.refused > 0 {
                        self.report.accepted_after_refusal += 1;
                    }
                }
                Err(getty::Error::QueueFull { .. }) => self.report.refused += 1,
                Err(e) => {
                    self.done = true;
                    let _ = self.tx.send(Err(format!("writing message {seq}: {e}")));
                    return;
                }
            }
        }
        if self.next == FEED_TOTAL {
            let end = format!("{{\"end\":true,\"accepted\":{}}}", self.report.accepted);
            if s.write(Message::text(end)).is_ok() {
                self.done = true;
                let _ = self.tx.send(Ok(self.report.clone()));
            }
        }
    }

    fn on_error(&mut self, _: &mut Session<getty::codec::MessageCodec, Ws>, error: &getty::Error) {
        let _ = self.tx.send(Err(format!("feed session failed: {error}")));
    }
}

/// A compressing WebSocket server whose sessions run the feed, with a 64 KiB bound on the
/// outbound queue and a small socket send buffer, so a reader that pauses makes it drop.
#[cfg(feature = "ws")]
fn feed_server(tx: Sender<Result<FeedReport, String>>) -> (Running, String) {
    use getty::codec::ws::DeflateConfig;
    use getty::codec::MessageCodec;
    use getty::ws::WsServer;
    let server = WsServer::builder()
        .deflate(Some(DeflateConfig::default()))
        .socket_options(getty::SocketOptions::default().send_buffer_size(Some(4096)))
        .session_options(
            SessionOptions::default()
                .cron_period(Some(Duration::from_millis(10)))
                .watermarks(32 * 1024, 16 * 1024)
                .max_outbound(64 * 1024),
        )
        .route("/", move |_| {
            Ok((
                MessageCodec,
                Feed {
                    next: 0,
                    report: FeedReport::default(),
                    done: false,
                    tx: tx.clone(),
                },
            ))
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let url = format!("ws://{}/", server.local_addr());
    (Running::serve("ws-feed-server", server), url)
}

#[cfg(feature = "ws")]
fn check_feed_report(report: &FeedReport) {
    println!("feed: {report:?}");
    assert!(
        report.refused > 0 && report.accepted_after_refusal > 0,
        "the feed never dropped a message and went on, so nothing was tested: {report:?}"
    );
}

/// Issue 11 part 4: with context takeover, a message the compressor had taken into its
/// window was cut out of the queue on `QueueFull`, and later messages referred to bytes the
/// reader never got. A Python `websockets` reader with a small receive buffer pauses for
/// two seconds, then reads on: every message must inflate to exactly a message the feed
/// sent, in order, and every one the feed queued must arrive.
#[cfg(feature = "ws")]
#[test]
fn a_python_reader_of_a_compressed_feed_that_drops_gets_exactly_what_was_queued() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, rx) = std::sync::mpsc::channel();
        let (server, url) = feed_server(tx);
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/ws_feed_reader.py"
        );
        let child = std::process::Command::new(interop_python())
            .arg(script)
            .arg(&url)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = finish_child(Reaped(child), Duration::from_secs(45));
        assert!(out.starts_with("OK "), "{out}");
        let report = rx.recv_timeout(STEP).unwrap().unwrap();
        check_feed_report(&report);
        server.stop();
    });
}

/// The same with a getty-rs client as the reader: its reactor thread sleeps two seconds in
/// the first `on_message`, so it reads nothing meanwhile.
#[cfg(feature = "ws")]
#[test]
fn a_getty_reader_of_a_compressed_feed_that_drops_gets_exactly_what_was_queued() {
    use getty::codec::ws::DeflateConfig;
    use getty::codec::{Message, MessageCodec};
    use getty::ws::WsClient;

    struct Reader {
        slept: bool,
        last: Option<u64>,
        received: u64,
        tx: Sender<Result<u64, String>>,
    }
    impl Reader {
        fn check(&mut self, msg: &Message) -> Result<Option<u64>, String> {
            let text = msg.as_text().ok_or("a binary message")?;
            if let Some(end) = text.strip_prefix("{\"end\":true,\"accepted\":") {
                let accepted: u64 = end.trim_end_matches('}').parse().map_err(|_| text)?;
                if accepted != self.received {
                    return Err(format!(
                        "the server queued {accepted} messages, {} arrived",
                        self.received
                    ));
                }
                return Ok(Some(accepted));
            }
            let differs = || {
                format!(
                    "message {} (after seq {:?}) differs from what was sent: {:.200}",
                    self.received, self.last, text
                )
            };
            let seq = feed_seq(text).ok_or_else(differs)?;
            if self.last.is_some_and(|last| seq <= last) || text != feed_message(seq) {
                return Err(differs());
            }
            self.last = Some(seq);
            self.received += 1;
            Ok(None)
        }
    }
    impl Handler<MessageCodec, Ws> for Reader {
        fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
            if !std::mem::replace(&mut self.slept, true) {
                std::thread::sleep(Duration::from_secs(2));
            }
            match self.check(&msg) {
                Ok(None) => {}
                Ok(Some(n)) => {
                    let _ = self.tx.send(Ok(n));
                    s.close();
                }
                Err(e) => {
                    let _ = self.tx.send(Err(e));
                    s.close();
                }
            }
        }
        fn on_error(&mut self, _: &mut Session<MessageCodec, Ws>, error: &getty::Error) {
            let _ = self.tx.send(Err(format!("the reader failed: {error}")));
        }
    }

    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, rx) = std::sync::mpsc::channel();
        let (server, url) = feed_server(tx);
        let (reader_tx, reader_rx) = std::sync::mpsc::channel();
        // A small receive buffer, as the Python reader's: the kernel must not absorb the
        // whole feed while the reader sleeps, however slowly a loaded machine runs it.
        let client = WsClient::builder()
            .deflate(Some(DeflateConfig::default()))
            .socket_options(getty::SocketOptions::default().recv_buffer_size(Some(4096)))
            .max_consecutive_failures(Some(1))
            .build(&url, move |_| {
                Ok((
                    MessageCodec,
                    Reader {
                        slept: false,
                        last: None,
                        received: 0,
                        tx: reader_tx.clone(),
                    },
                ))
            })
            .unwrap();
        let client = Running::serve("ws-feed-reader", client);
        let received = reader_rx
            .recv_timeout(Duration::from_secs(40))
            .expect("the reader's verdict")
            .unwrap_or_else(|e| panic!("{e}"));
        let report = rx.recv_timeout(STEP).unwrap().unwrap();
        assert_eq!(received, report.accepted);
        check_feed_report(&report);
        client.stop();
        server.stop();
    });
}

// ---------------------------------------------------------------------------------------
// What an idle compressed session costs (issue 11, part 6)
// ---------------------------------------------------------------------------------------

/// Sessions held open per measurement, and what each may cost the process at most.
const IDLE_SESSIONS: usize = 2_000;
const IDLE_SESSION_BUDGET: usize = 8 * 1024;

/// Counts the sessions open on a server and echoes what they receive.
struct Counted(Arc<AtomicUsize>);

impl<C, T> Handler<C, T> for Counted
where
    C: getty::codec::Decoder + getty::codec::Encoder<<C as getty::codec::Decoder>::Item> + 'static,
    T: getty::Transport,
{
    fn on_open(&mut self, _: &mut Session<C, T>) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<C, T>, msg: C::Item) {
        let _ = s.write(msg);
    }
    fn on_close(&mut self, _: &mut Session<C, T>) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn wait_for_sessions(open: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + STEP;
    while open.load(Ordering::SeqCst) != n {
        assert!(
            Instant::now() < deadline,
            "{} sessions open, waiting for {n}",
            open.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The resident memory `IDLE_SESSIONS` idle sessions add to this process (the server's
/// sessions and the client sockets, which cost the process nothing but a descriptor), per
/// session. `connect` opens one connection and returns once it is ready; 100 sessions are
/// opened and closed first, so the one-time costs (pools, tables) are paid before.
#[cfg(target_os = "linux")]
fn idle_session_cost(
    server: &Running,
    open: &AtomicUsize,
    mut connect: impl FnMut() -> TcpStream,
) -> usize {
    let warm: Vec<TcpStream> = (0..100).map(|_| connect()).collect();
    wait_for_sessions(open, 100);
    drop(warm);
    wait_for_sessions(open, 0);
    server.run_on(|_| ());
    let before = resident_bytes();
    let held: Vec<TcpStream> = (0..IDLE_SESSIONS).map(|_| connect()).collect();
    wait_for_sessions(open, IDLE_SESSIONS);
    server.run_on(|_| ()); // everything the sessions had to do is done
    let after = resident_bytes();
    drop(held);
    wait_for_sessions(open, 0);
    after.saturating_sub(before) / IDLE_SESSIONS
}

fn check_idle_cost(what: &str, per_session: usize) {
    println!("{what}: {per_session} bytes per idle session");
    assert!(
        per_session < IDLE_SESSION_BUDGET,
        "{what}: {IDLE_SESSIONS} idle sessions cost {per_session} bytes each, over the \
         {IDLE_SESSION_BUDGET}-byte budget (is compression state allocated before it is used?)"
    );
}

/// Opens a WebSocket connection offering `offer` and returns it with the agreed settings.
#[cfg(feature = "ws")]
fn ws_upgrade(
    addr: SocketAddr,
    offer: getty::codec::ws::DeflateConfig,
) -> (TcpStream, getty::codec::ws::DeflateConfig, BytesMut) {
    use getty::codec::ws::ClientRequest;
    let mut stream = connect(addr);
    let mut request = BytesMut::new();
    let handshake = ClientRequest::new(addr.to_string(), "/")
        .deflate(offer)
        .write(&mut request);
    stream.write_all(&request).unwrap();
    let mut input = BytesMut::new();
    loop {
        let mut buf = [0u8; 2048];
        let n = stream.read(&mut buf).expect("read the 101");
        assert!(n > 0, "the server closed during the handshake");
        input.extend_from_slice(&buf[..n]);
        if let Some(response) = handshake.parse_response(&mut input, 8192).unwrap() {
            let agreed = response.deflate().expect("permessage-deflate was agreed");
            return (stream, agreed, input);
        }
    }
}

#[cfg(feature = "ws")]
fn idle_ws_server(open: &Arc<AtomicUsize>) -> (Running, SocketAddr) {
    use getty::codec::ws::DeflateConfig;
    use getty::codec::MessageCodec;
    let open = open.clone();
    let server = getty::ws::WsServer::builder()
        .deflate(Some(DeflateConfig::default()))
        .route("/", move |_| Ok((MessageCodec, Counted(open.clone()))))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("ws-idle-memory", server), addr)
}

/// Issue 11 part 6: a WebSocket session that agreed on permessage-deflate allocates
/// neither the compressor nor the decompressor until a message needs one, so a server
/// full of idle compressed connections stays small.
#[cfg(feature = "ws")]
#[cfg(target_os = "linux")]
#[test]
fn idle_websocket_sessions_with_deflate_agreed_cost_under_8_kib_each() {
    use getty::codec::ws::DeflateConfig;
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let open = Arc::new(AtomicUsize::new(0));
        let (server, addr) = idle_ws_server(&open);
        let per_session = idle_session_cost(&server, &open, || {
            ws_upgrade(addr, DeflateConfig::default()).0
        });
        check_idle_cost("WebSocket, permessage-deflate agreed", per_session);
        server.stop();
    });
}

/// Without context takeover, the engines go back after each message: sessions that have
/// each received and sent one compressed message cost no more than fresh ones once idle.
#[cfg(feature = "ws")]
#[cfg(target_os = "linux")]
#[test]
fn websocket_sessions_without_context_takeover_give_their_engines_back_when_idle() {
    use getty::codec::ws::{Config, DeflateConfig, Event, Protocol, Role};
    use getty::codec::MessageKind;
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let open = Arc::new(AtomicUsize::new(0));
        let (server, addr) = idle_ws_server(&open);
        let offer = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let text =
            "{\"greeting\":\"hello, compressed world\",\"again\":\"hello, compressed world\"}";
        let per_session = idle_session_cost(&server, &open, || {
            let (mut stream, agreed, mut input) = ws_upgrade(addr, offer);
            assert!(agreed.server_no_context_takeover && agreed.client_no_context_takeover);
            let mut client = Protocol::new(Role::Client, Config::default(), Some(agreed));
            let mut out = BytesMut::from(text.as_bytes());
            client
                .encode_message(MessageKind::Text, &mut out, 0)
                .unwrap();
            assert!(out[0] & 0x40 != 0, "the message went out compressed");
            stream.write_all(&out).unwrap();
            loop {
                match client.decode(&mut input, &mut BytesMut::new()).unwrap() {
                    Some(Event::Message { payload, .. }) => {
                        assert_eq!(&payload[..], text.as_bytes());
                        break;
                    }
                    Some(other) => panic!("unexpected {other:?}"),
                    None => {
                        let mut buf = [0u8; 2048];
                        let n = stream.read(&mut buf).expect("read the echo");
                        assert!(n > 0, "the server closed");
                        assert!(input.is_empty() || n > 0);
                        if input.is_empty() {
                            assert!(buf[0] & 0x40 != 0, "the echo came back compressed");
                        }
                        input.extend_from_slice(&buf[..n]);
                    }
                }
            }
            stream
        });
        check_idle_cost(
            "WebSocket, no context takeover, after one message each way",
            per_session,
        );
        server.stop();
    });
}

/// The same for compressed TCP sessions (`SessionOptions::compression`): one deflate
/// stream per direction, made when the first byte needs it.
#[cfg(target_os = "linux")]
#[test]
fn idle_compressed_tcp_sessions_cost_under_8_kib_each() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        for level in [Compression::Default, Compression::Fast] {
            let open = Arc::new(AtomicUsize::new(0));
            let server = {
                let open = open.clone();
                TcpServer::builder()
                    .session_options(compressed(level))
                    .bind("127.0.0.1:0", move |_| {
                        Ok((LengthFieldCodec::default(), Counted(open.clone())))
                    })
                    .unwrap()
            };
            let addr = server.local_addr();
            let server = Running::serve("tcp-idle-memory", server);
            let per_session = idle_session_cost(&server, &open, || connect(addr));
            check_idle_cost(&format!("TCP, compression {level:?}"), per_session);
            server.stop();
        }
    });
}
