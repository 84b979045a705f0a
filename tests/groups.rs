//! Session groups on real sockets: every member gets every broadcast whole and in order,
//! whatever the mix of sizes; members leave when they end; each slow-consumer policy keeps a
//! member that never reads bounded while the others carry on; a WebSocket group frames one
//! broadcast for a compressing member and a plain one alike.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{Error, GroupStats, Handler, Session, SessionGroup, SessionOptions, SlowConsumer};

const TEST_LIMIT: Duration = Duration::from_secs(120);

/// What the server's group looked like after its last broadcast or membership change.
#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    members: usize,
    stats: GroupStats,
}

/// A member of the one group of its server: every message it gets goes to the others.
struct Relay {
    group: SessionGroup<LengthFieldCodec>,
    seen: Arc<Mutex<Snapshot>>,
    tx: Sender<Ev>,
}

impl Relay {
    fn note(&self) {
        *self.seen.lock().unwrap() = Snapshot {
            members: self.group.len(),
            stats: self.group.stats(),
        };
    }
}

impl Handler<LengthFieldCodec> for Relay {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        assert!(self.group.join(s).unwrap(), "joined once");
        assert!(!self.group.join(s).unwrap(), "a second join is a no-op");
        if s.peer_addr().ip() == std::net::Ipv4Addr::new(127, 0, 0, 2) {
            // Refused after joining: the group must forget it.
            return Err(std::io::Error::other("127.0.0.2 is refused"));
        }
        self.note();
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        self.group.broadcast_except(msg, s.id()).unwrap();
        self.note();
    }

    fn on_error(&mut self, s: &mut Session<LengthFieldCodec>, error: &Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }

    fn on_close(&mut self, s: &mut Session<LengthFieldCodec>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

struct Relayed {
    server: Running,
    addr: SocketAddr,
    seen: Arc<Mutex<Snapshot>>,
    events: Events,
}

impl Relayed {
    /// A relay server whose group has `policy` and `max_pending`, its sessions `options`.
    fn start(policy: SlowConsumer, max_pending: usize, options: SessionOptions) -> Relayed {
        let group = SessionGroup::builder(LengthFieldCodec::default())
            .slow_consumer(policy)
            .max_pending(max_pending)
            .build();
        Relayed::serve(group, options)
    }

    /// A relay server, on a reactor of its own, for the members of `group`.
    fn serve(group: SessionGroup<LengthFieldCodec>, options: SessionOptions) -> Relayed {
        Relayed::serve_on("group-relay", group, options)
    }

    /// As [`serve`](Self::serve), on a reactor thread named `thread`.
    fn serve_on(
        thread: &str,
        group: SessionGroup<LengthFieldCodec>,
        options: SessionOptions,
    ) -> Relayed {
        let seen = Arc::new(Mutex::new(Snapshot::default()));
        let (tx, events) = Events::new();
        let snapshot = seen.clone();
        let server = TcpServer::builder()
            .session_options(options)
            .bind("127.0.0.1:0", move |_| {
                let relay = Relay {
                    group: group.clone(),
                    seen: snapshot.clone(),
                    tx: tx.clone(),
                };
                Ok((LengthFieldCodec::default(), relay))
            })
            .unwrap();
        let addr = server.local_addr();
        Relayed {
            server: Running::serve(thread, server),
            addr,
            seen,
            events,
        }
    }

    fn snapshot(&self) -> Snapshot {
        *self.seen.lock().unwrap()
    }

    /// Connects `n` members and waits until all have joined.
    fn join(&mut self, n: usize) -> Vec<TcpStream> {
        let streams: Vec<_> = (0..n).map(|_| connect(self.addr)).collect();
        for s in &streams {
            self.events.wait_open(s.local_addr().unwrap());
        }
        streams
    }
}

/// Message `seq` of `sender`, `len` bytes long (at least 8): the sender, the sequence
/// number, then bytes that depend on both, so a byte out of place shows.
fn message(sender: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(len);
    m.push(sender);
    m.extend_from_slice(&seq.to_be_bytes());
    let mut x = u32::from(sender) * 7919 + seq;
    while m.len() < len.max(8) {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        m.push((x >> 16) as u8);
    }
    m
}

/// Checks a message is whole and returns (sender, seq).
fn check(m: &[u8]) -> (u8, u32) {
    let sender = m[0];
    let seq = u32::from_be_bytes(m[1..5].try_into().unwrap());
    assert_eq!(
        m,
        message(sender, seq, m.len()),
        "message {sender}/{seq} is damaged"
    );
    (sender, seq)
}

/// Sizes that mix small writes (copied into the queue's tail) and large ones (queued as
/// shared chunks), deterministic per sender.
fn size(sender: u8, seq: u32) -> usize {
    match (u32::from(sender) * 31 + seq * 17) % 10 {
        0 => 20_000 + (seq as usize * 13) % 50_000,
        1 | 2 => 4_096 + (seq as usize * 7) % 4_000,
        _ => 8 + (seq as usize * 11) % 500,
    }
}

#[test]
fn every_member_gets_every_broadcast_whole_and_in_order() {
    watchdog(TEST_LIMIT, || {
        const MEMBERS: usize = 4;
        const EACH: u32 = 300;
        let mut relay = Relayed::start(SlowConsumer::Close, 64 << 20, SessionOptions::default());
        let streams = relay.join(MEMBERS);
        assert_eq!(relay.snapshot().members, MEMBERS);
        let began = Instant::now();
        let readers: Vec<_> = streams
            .iter()
            .enumerate()
            .map(|(me, s)| {
                let mut r = s.try_clone().unwrap();
                std::thread::spawn(move || {
                    let mut next = [0u32; MEMBERS];
                    let expected = (MEMBERS as u32 - 1) * EACH;
                    for _ in 0..expected {
                        let (sender, seq) = check(&read_frame(&mut r));
                        assert_ne!(sender as usize, me, "a member heard itself");
                        assert_eq!(seq, next[sender as usize], "from {sender}: out of order");
                        next[sender as usize] += 1;
                    }
                    expected
                })
            })
            .collect();
        let writers: Vec<_> = streams
            .iter()
            .enumerate()
            .map(|(me, s)| {
                let mut w = s.try_clone().unwrap();
                std::thread::spawn(move || {
                    for seq in 0..EACH {
                        let m = message(me as u8, seq, size(me as u8, seq));
                        w.write_all(&frame(&m)).unwrap();
                    }
                })
            })
            .collect();
        writers.into_iter().for_each(|w| w.join().unwrap());
        let got: u32 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        let stats = relay.snapshot().stats;
        println!(
            "{MEMBERS} members × {EACH} messages: {got} broadcasts received whole and in order \
             in {:?}; {stats:?}",
            began.elapsed()
        );
        assert_eq!(stats.broadcasts, u64::from(EACH) * MEMBERS as u64);
        assert_eq!(stats.delivered, u64::from(got));
        assert_eq!((stats.skipped, stats.dropped, stats.closed), (0, 0, 0));
        relay.server.stop();
    });
}

#[test]
fn one_group_spans_two_reactors() {
    watchdog(TEST_LIMIT, || {
        const EACH: u32 = 200;
        let group = SessionGroup::new(LengthFieldCodec::default());
        let mut left = Relayed::serve(group.clone(), SessionOptions::default());
        let mut right = Relayed::serve(group, SessionOptions::default());
        let mut here = left.join(2);
        let mut there = right.join(1);
        let began = Instant::now();
        let mut sender = here.remove(0);
        let writer = std::thread::spawn(move || {
            for seq in 0..EACH {
                sender
                    .write_all(&frame(&message(0, seq, size(0, seq))))
                    .unwrap();
            }
            sender
        });
        for seq in 0..EACH {
            assert_eq!(check(&read_frame(&mut here[0])), (0, seq), "same reactor");
            assert_eq!(check(&read_frame(&mut there[0])), (0, seq), "other reactor");
        }
        let mut sender = writer.join().unwrap();
        // And back: the right reactor's member reaches both on the left.
        there[0].write_all(&frame(&message(1, 0, 9_000))).unwrap();
        assert_eq!(check(&read_frame(&mut sender)), (1, 0));
        assert_eq!(check(&read_frame(&mut here[0])), (1, 0));
        // The right reactor notes its stats after its broadcast returns, which the left
        // may deliver first: wait (bounded) for the note.
        let deadline = Instant::now() + STEP;
        while right.snapshot().stats.broadcasts <= u64::from(EACH) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (l, r) = (left.snapshot(), right.snapshot());
        println!(
            "two reactors: {EACH} broadcasts reached a member on each in order in {:?}; \
             left {l:?}, right {r:?}",
            began.elapsed()
        );
        assert_eq!(
            (l.members, r.members),
            (2, 1),
            "each reactor counts its own"
        );
        // The right reactor counts the left's broadcasts it delivered, and its own (to
        // nobody there but the sender).
        assert_eq!(r.stats.broadcasts, u64::from(EACH) + 1);
        assert_eq!(r.stats.delivered, u64::from(EACH));
        left.server.stop();
        right.server.stop();
    });
}

/// A member whose hard bound (`max_outbound`) is below its high watermark plus a message:
/// a broadcast that does not fit waits while the member is still writable. It must wait
/// for the socket to drain, not spin (the reactor would never poll again), and then go out.
#[test]
fn a_broadcast_that_does_not_fit_yet_waits_for_the_socket_without_spinning() {
    watchdog(TEST_LIMIT, || {
        // 18 MiB: more than the kernel's socket buffers take while the receiver waits.
        const MESSAGES: u32 = 300;
        const LEN: usize = 60 * 1024;
        // One message (and its 4-byte header) fills the hard bound: whenever the socket
        // holds back part of one, the next does not fit, with the member still writable.
        let options = SessionOptions::default()
            .watermarks(64 * 1024, 32 * 1024)
            .max_outbound(LEN + 4);
        // Its own reactor thread, whose CPU alone is measured (tests run side by side).
        let thread = "group-nofit";
        let group = SessionGroup::builder(LengthFieldCodec::default())
            .max_pending(64 << 20)
            .build();
        let mut relay = Relayed::serve_on(thread, group, options);
        let mut streams = relay.join(2);
        let mut sender = streams.remove(0);
        let mut receiver = streams.remove(0);
        let writer = std::thread::spawn(move || {
            for seq in 0..MESSAGES {
                sender.write_all(&frame(&message(0, seq, LEN))).unwrap();
            }
            sender
        });
        // The server fills the receiver's socket and reaches the hard bound; while nothing
        // reads, it has nothing to do (a spinning reactor would burn the whole window).
        std::thread::sleep(Duration::from_millis(300));
        let reactor_cpu = || cpu_of_thread(thread).expect("the reactor thread");
        let (cpu_before, window) = (reactor_cpu(), Duration::from_millis(600));
        std::thread::sleep(window);
        let idle_cpu = reactor_cpu() - cpu_before;
        let began = Instant::now();
        for seq in 0..MESSAGES {
            assert_eq!(check(&read_frame(&mut receiver)), (0, seq));
        }
        let _sender = writer.join().unwrap();
        println!(
            "{MESSAGES} x {LEN} B through a member whose hard bound is below its watermark \
             plus a message: {idle_cpu:?} of CPU in {window:?} while it did not read, then \
             all read in {:?}",
            began.elapsed()
        );
        assert!(
            idle_cpu < window / 3,
            "the server spun: {idle_cpu:?} of CPU"
        );
        relay.server.stop();
    });
}

#[test]
fn a_member_that_ends_leaves_and_the_rest_carry_on() {
    watchdog(TEST_LIMIT, || {
        let mut relay = Relayed::start(SlowConsumer::Close, 1 << 20, SessionOptions::default());
        let mut streams = relay.join(3);
        // A session that joined in on_open, then refused itself.
        let refused =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let from: SocketAddr = "127.0.0.2:0".parse().unwrap();
        refused.bind(&from.into()).unwrap();
        refused.connect(&relay.addr.into()).unwrap();
        let mut refused: TcpStream = refused.into();
        refused.set_read_timeout(Some(STEP)).unwrap();
        assert_eq!(refused.read(&mut [0u8; 16]).unwrap_or(0), 0, "not refused");
        let gone = streams.pop().unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        // Its close is heard; the next broadcast finds it gone.
        relay
            .events
            .wait("the member's close", |e| matches!(e, Ev::Close { .. }));
        streams[0].write_all(&frame(&message(0, 0, 100))).unwrap();
        assert_eq!(check(&read_frame(&mut streams[1])), (0, 0));
        let snapshot = relay.snapshot();
        println!("after {gone_addr} left: {snapshot:?}");
        assert_eq!(snapshot.members, 2);
        assert_eq!(snapshot.stats.delivered, 1);
        relay.server.stop();
    });
}

/// What a member that did not read got once it did.
struct Slept {
    /// Sequence numbers, in order, every message whole.
    got: Vec<u32>,
    /// Why its reading stopped: EOF (`UnexpectedEof`) or silence.
    ended: std::io::ErrorKind,
}

/// One member never reads while another reads everything a third sends: the policy keeps
/// the sleeper bounded and the reader gets every message. Returns what the sleeper got
/// once it reads, the group's stats and the server.
fn slow_consumer(policy: SlowConsumer) -> (Slept, GroupStats, Relayed) {
    const MESSAGES: u32 = 2_500;
    const LEN: usize = 8 * 1024;
    let options = SessionOptions::default().watermarks(32 * 1024, 16 * 1024);
    // The bound is above what one callback broadcasts (a read budget of the sender's
    // messages, 256 KiB), so only a member that does not read falls behind it.
    let mut relay = Relayed::start(policy, 1 << 20, options);
    let mut streams = relay.join(3);
    let (mut sender, mut reader, mut sleeper) =
        (streams.remove(0), streams.remove(0), streams.remove(0));
    // The sender keeps at most WINDOW messages ahead of the reader, so the reader keeps up
    // however the test's threads are scheduled; the sleeper falls behind without bound.
    const WINDOW: u32 = 64;
    let read = Arc::new(AtomicU32::new(0));
    let progress = read.clone();
    let writer = std::thread::spawn(move || {
        let deadline = Instant::now() + STEP * 4;
        for seq in 0..MESSAGES {
            while seq >= progress.load(Ordering::Acquire) + WINDOW {
                assert!(Instant::now() < deadline, "the reader stopped reading");
                std::thread::sleep(Duration::from_micros(100));
            }
            sender.write_all(&frame(&message(0, seq, LEN))).unwrap();
        }
        sender
    });
    for seq in 0..MESSAGES {
        assert_eq!(
            check(&read_frame(&mut reader)),
            (0, seq),
            "the reader lost a message"
        );
        read.store(seq + 1, Ordering::Release);
    }
    let _sender = writer.join().unwrap();
    let stats = relay.snapshot().stats;
    // Now the sleeper reads what reached it, until it is quiet (or closed).
    sleeper
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut got = Vec::new();
    let ended = loop {
        let mut header = [0u8; 4];
        if let Err(e) = sleeper.read_exact(&mut header) {
            break e.kind();
        }
        let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
        sleeper
            .read_exact(&mut body)
            .expect("a frame the sleeper started arrives whole");
        got.push(check(&body).1);
    };
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "the sleeper's messages are out of order"
    );
    println!(
        "{policy:?}: the sleeper got {} of {MESSAGES} ({}..={}, then {ended:?}), the reader \
         all; {stats:?}",
        got.len(),
        got.first().copied().unwrap_or(0),
        got.last().copied().unwrap_or(0),
    );
    (Slept { got, ended }, stats, relay)
}

#[test]
fn a_slow_consumer_is_closed_under_the_close_policy_and_told_why() {
    watchdog(TEST_LIMIT, || {
        let (slept, stats, mut relay) = slow_consumer(SlowConsumer::Close);
        assert_eq!(stats.closed, 1);
        // What was queued before the close still went out, then a FIN: no reset.
        assert_eq!(slept.ended, std::io::ErrorKind::UnexpectedEof);
        let n = slept.got.len() as u32;
        assert!(n > 0 && n < 2_500, "the sleeper got {n}");
        assert_eq!(
            slept.got,
            (0..n).collect::<Vec<_>>(),
            "a gap before the close"
        );
        let error = relay
            .events
            .wait("the sleeper's error", |e| matches!(e, Ev::Error { .. }));
        assert!(
            matches!(&error, Ev::Error { err: ErrKind::SlowConsumer { max, .. }, .. } if *max == 1 << 20),
            "{error:?}"
        );
        relay
            .events
            .wait("the sleeper's close", |e| matches!(e, Ev::Close { .. }));
        assert_eq!(relay.snapshot().members, 2);
        relay.server.stop();
    });
}

#[test]
fn a_slow_consumer_loses_its_oldest_broadcasts_under_drop_oldest() {
    watchdog(TEST_LIMIT, || {
        let (Slept { got, ended }, stats, relay) = slow_consumer(SlowConsumer::DropOldest);
        assert_ne!(ended, std::io::ErrorKind::UnexpectedEof, "closed");
        assert!(stats.dropped > 0, "nothing was dropped");
        assert_eq!(stats.closed, 0);
        assert_eq!(got.last(), Some(&2_499), "the newest broadcast was lost");
        assert_eq!(
            got.len() as u64 + stats.dropped,
            2_500,
            "lost without being counted"
        );
        relay.server.stop();
    });
}

#[test]
fn a_slow_consumer_misses_broadcasts_under_skip() {
    watchdog(TEST_LIMIT, || {
        let (Slept { got, ended }, stats, relay) = slow_consumer(SlowConsumer::Skip);
        assert_ne!(ended, std::io::ErrorKind::UnexpectedEof, "closed");
        assert!(stats.skipped > 0, "nothing was skipped");
        assert_eq!(stats.closed, 0);
        assert_eq!(got.first(), Some(&0), "the first broadcasts reached it");
        assert_eq!(
            got.len() as u64 + stats.skipped,
            2_500,
            "lost without being counted"
        );
        relay.server.stop();
    });
}

#[cfg(all(feature = "ws", feature = "deflate"))]
mod websocket {
    use super::*;
    use getty::codec::ws::DeflateConfig;
    use getty::codec::{Message, MessageCodec};
    use getty::ws::{Ws, WsClient, WsServer};

    struct Room(SessionGroup<MessageCodec, Ws>);

    impl Handler<MessageCodec, Ws> for Room {
        fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
            self.0.join(s).map_err(std::io::Error::other)?;
            Ok(())
        }

        fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
            self.0.broadcast_except(msg, s.id()).unwrap();
        }
    }

    /// A client that reports what it negotiated and hears, and sends `script` once open.
    struct Peer {
        tx: Sender<Ev>,
        script: Vec<Message>,
    }

    impl Handler<MessageCodec, Ws> for Peer {
        fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
            let what = format!("deflate={}", s.deflate().is_some());
            let _ = self.tx.send(Ev::Note { sid: s.id(), what });
            for m in self.script.drain(..) {
                s.write(m).unwrap();
            }
            Ok(())
        }

        fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
            let _ = self.tx.send(Ev::Msg {
                sid: s.id(),
                msg: msg.into_payload(),
            });
        }
    }

    fn client(url: &str, deflate: bool, script: Vec<Message>) -> (Running, Events, u64) {
        let (tx, mut events) = Events::new();
        let client = WsClient::builder()
            .deflate(deflate.then(DeflateConfig::default))
            .build(url, move |_| {
                let script = script.clone();
                Ok((
                    MessageCodec,
                    Peer {
                        tx: tx.clone(),
                        script,
                    },
                ))
            })
            .unwrap();
        let running = Running::serve("group-ws-client", client);
        let note = events.wait("the client's open", |e| matches!(e, Ev::Note { .. }));
        assert_eq!(
            note,
            Ev::Note {
                sid: note.sid(),
                what: format!("deflate={deflate}")
            }
        );
        (running, events, note.sid())
    }

    /// Text of `len` bytes that differs for each `seq` (and compresses).
    fn text(seq: usize, len: usize) -> String {
        let word = format!("message {seq} ");
        word.repeat(len / word.len() + 1)[..len].to_owned()
    }

    #[test]
    fn one_broadcast_reaches_a_compressing_member_and_a_plain_one() {
        watchdog(TEST_LIMIT, || {
            let room = SessionGroup::new(MessageCodec);
            let server = WsServer::builder()
                .deflate(Some(DeflateConfig::default()))
                .route("/", move |_| Ok((MessageCodec, Room(room.clone()))))
                .bind("127.0.0.1:0")
                .unwrap();
            let url = format!("ws://{}/", server.local_addr());
            let server = Running::serve("group-ws", server);
            let (_c, mut compressing, c_sid) = client(&url, true, Vec::new());
            let (_p, mut plain, p_sid) = client(&url, false, Vec::new());
            let sizes = [1, 100, 5_000, 70_000, 200_000, 0, 64 * 1024];
            let script: Vec<Message> = (0..70)
                .map(|i| {
                    let t = text(i, sizes[i % sizes.len()]);
                    if i % 3 == 0 {
                        Message::binary(t.into_bytes())
                    } else {
                        Message::text(t)
                    }
                })
                .collect();
            let expected: Vec<Bytes> = script.iter().map(|m| m.clone().into_payload()).collect();
            let (_s, _sender_events, _) = client(&url, false, script);
            for (events, sid, who) in [
                (&mut compressing, c_sid, "compressing"),
                (&mut plain, p_sid, "plain"),
            ] {
                let got = events.wait_n(
                    &format!("the {who} member's messages"),
                    expected.len(),
                    |e| matches!(e, Ev::Msg { sid: s, .. } if *s == sid),
                );
                for (i, (ev, want)) in got.iter().zip(&expected).enumerate() {
                    let Ev::Msg { msg, .. } = ev else {
                        unreachable!()
                    };
                    assert!(msg == want, "the {who} member's message {i} differs");
                }
            }
            println!(
                "websocket group: {} broadcasts (up to 200 KiB, text and binary) reached a \
                 compressing and a plain member whole and in order",
                expected.len()
            );
            server.stop();
        });
    }
}
