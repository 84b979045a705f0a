//! Hostile checks of `SessionGroup`, over loopback sockets: the promises its rustdoc
//! makes (no busy loop, members reached whatever their entry, the reactor stays live while
//! a member is slow, bounded memory) checked where they are most likely to break.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{Error, Handler, Session, SessionGroup, SessionOptions, SocketOptions};

const TEST_LIMIT: Duration = Duration::from_secs(120);

/// How long a healthy reactor may take to answer a ping on loopback, generously.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A member of one group whose messages say what to do, by their first byte:
/// `F` fill its own queue (report what its last flush left queued, and write 48 KiB if
/// nothing was), `B` broadcast the message to the others, `P` echo it.
struct Commanded {
    group: SessionGroup<LengthFieldCodec>,
    tx: Sender<Ev>,
}

/// The bytes a member writes to itself when told to fill: below the high watermark
/// (64 KiB), so the member stays writable with them partly queued.
const FILL: usize = 48 * 1024;

impl Handler<LengthFieldCodec> for Commanded {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        self.group.join(s).map_err(std::io::Error::other)?;
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        match msg.first() {
            Some(b'F') => {
                let left = s.queued_bytes();
                let _ = self.tx.send(Ev::Note {
                    sid: s.id(),
                    what: format!("{left}"),
                });
                if left == 0 {
                    let _ = s.write(Bytes::from(vec![b'f'; FILL]));
                }
            }
            Some(b'B') => {
                let _ = self.group.broadcast_except(msg, s.id());
            }
            Some(b'P') => {
                let _ = s.write(msg);
            }
            _ => {}
        }
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

struct CommandedServer {
    server: Running,
    addr: SocketAddr,
    events: Events,
}

impl CommandedServer {
    /// A server on a reactor thread named `name`, its sessions with `options` and small
    /// kernel send buffers (so a member that does not read fills its socket fast).
    fn start(name: &str, options: SessionOptions) -> CommandedServer {
        let group = SessionGroup::new(LengthFieldCodec::default());
        let (tx, events) = Events::new();
        let server = TcpServer::builder()
            .session_options(options)
            .socket_options(SocketOptions::default().send_buffer_size(Some(8 * 1024)))
            .bind("127.0.0.1:0", move |_| {
                let member = Commanded {
                    group: group.clone(),
                    tx: tx.clone(),
                };
                Ok((LengthFieldCodec::default(), member))
            })
            .unwrap();
        let addr = server.local_addr();
        CommandedServer {
            server: Running::serve(name, server),
            addr,
            events,
        }
    }

    fn member(&mut self, stream: TcpStream) -> (TcpStream, u64) {
        let sid = self.events.wait_open(stream.local_addr().unwrap());
        (stream, sid)
    }

    /// Tells the member behind `sleeper` (which never reads) to fill its queue until a
    /// flush leaves bytes queued: its socket is full, yet it is still writable. Returns
    /// those bytes.
    fn fill_until_stuck(&mut self, sleeper: &mut TcpStream, sid: u64) -> usize {
        for round in 0..400 {
            sleeper.write_all(&frame(b"F")).unwrap();
            let notes = self.events.wait_n(
                "a fill report",
                round + 1,
                |e| matches!(e, Ev::Note { sid: s, .. } if *s == sid),
            );
            let Some(Ev::Note { what, .. }) = notes.last() else {
                unreachable!()
            };
            let left: usize = what.parse().unwrap();
            if left > 0 {
                return left;
            }
        }
        panic!("the sleeper's socket never filled");
    }
}

/// Sends a ping on `probe` and waits for its echo, reading past the broadcasts before it.
/// Returns how long the echo took, or None if it did not come within `limit`.
fn ping(probe: &mut TcpStream, limit: Duration) -> Option<Duration> {
    probe.set_read_timeout(Some(limit)).unwrap();
    let began = Instant::now();
    probe.write_all(&frame(b"Pping")).unwrap();
    loop {
        let mut header = [0u8; 4];
        if probe.read_exact(&mut header).is_err() {
            return None;
        }
        let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
        if probe.read_exact(&mut body).is_err() {
            return None;
        }
        if body == b"Pping" {
            return Some(began.elapsed());
        }
        if began.elapsed() > limit {
            return None;
        }
    }
}

/// A broadcast that does not fit a member's outbound queue next to what is already queued
/// there (`QueueFull` with bytes queued: "it fits once the queue drains") is put back in
/// the inbox, and the member wakes itself again because it is still writable
/// (`rewake_for_broadcasts`). If its peer does not read, nothing drains: the member must
/// wait for a writable edge, not wake itself again in the same turn. Here the reactor must
/// still answer another member's ping while such a broadcast waits.
#[cfg(target_os = "linux")]
#[test]
fn a_broadcast_that_must_wait_for_the_queue_to_drain_does_not_hang_the_reactor() {
    watchdog(TEST_LIMIT, || {
        const MAX_OUTBOUND: usize = 256 * 1024;
        let options = SessionOptions::default().max_outbound(MAX_OUTBOUND);
        let name = "rv-queuefull";
        let mut server = CommandedServer::start(name, options);
        let (mut sender, _) = server.member(connect(server.addr));
        let (mut probe, _) = server.member(connect(server.addr));
        let sleeper = connect_with_recv_buffer(server.addr, 4096);
        let (mut sleeper, sleeper_sid) = server.member(sleeper);
        let left = server.fill_until_stuck(&mut sleeper, sleeper_sid);
        // Fits the queue alone (so it is put back, not refused), not next to `left`.
        let mut big = vec![b'B'; MAX_OUTBOUND - 16];
        big[1..9].copy_from_slice(&0u64.to_be_bytes());
        assert!(big.len() + 4 + left > MAX_OUTBOUND && big.len() + 4 <= MAX_OUTBOUND);
        let cpu_before = cpu_of_thread(name).expect("the reactor thread");
        sender.write_all(&frame(&big)).unwrap();
        // The probe gets the broadcast (so it has been made), then its ping's echo.
        probe.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
        let mut header = [0u8; 4];
        let broadcast_arrived = probe.read_exact(&mut header).is_ok() && {
            let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
            probe.read_exact(&mut body).is_ok() && body == big
        };
        let answered = ping(&mut probe, ANSWER_WITHIN);
        std::thread::sleep(Duration::from_millis(500));
        let cpu = cpu_of_thread(name).expect("the reactor thread") - cpu_before;
        println!(
            "sleeper stuck with {left} bytes queued; a {} byte broadcast for it; the probe \
             got it whole: {broadcast_arrived}; the probe's ping was answered in \
             {answered:?}; the reactor thread used {cpu:?} of CPU meanwhile",
            big.len()
        );
        // Let the sleeper drain, so that a stuck reactor can get out of its loop and stop.
        sleeper
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut sink = vec![0u8; 64 * 1024];
        let drain_until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < drain_until && sleeper.read(&mut sink).is_ok_and(|n| n > 0) {}
        assert!(
            answered.is_some(),
            "the reactor did not answer a ping within {ANSWER_WITHIN:?} while a broadcast \
             waited for a full member's queue to drain (reactor CPU {cpu:?})"
        );
        assert!(
            cpu < Duration::from_millis(1500),
            "the reactor thread spun: {cpu:?} of CPU"
        );
        server.server.stop();
    });
}

/// Records what it hears; joins the group it is given, if any.
struct Listener {
    group: Option<SessionGroup<LengthFieldCodec>>,
    tx: Sender<Ev>,
}

impl Handler<LengthFieldCodec> for Listener {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        if let Some(group) = &self.group {
            group.join(s).map_err(std::io::Error::other)?;
        }
        let _ = self.tx.send(Ev::Note {
            sid: s.id(),
            what: "open".into(),
        });
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = self.tx.send(Ev::Msg { sid: s.id(), msg });
    }

    fn on_error(&mut self, s: &mut Session<LengthFieldCodec>, error: &Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }
}

/// Broadcast `seq` of a run: its number, then bytes that depend on it, of a size that
/// mixes small writes and ones past a TLS record.
fn numbered(seq: u32) -> Vec<u8> {
    let len = 4 + (seq as usize * 7_919) % 40_000;
    let mut m = seq.to_be_bytes().to_vec();
    m.extend((4..len).map(|i| (i as u32 ^ seq.wrapping_mul(31)) as u8));
    m
}

/// Waits for `n` messages to each of `sids` and checks they are `numbered(0..n)`, in order.
#[cfg(feature = "tls")]
fn expect_numbered(events: &mut Events, sids: &[u64], n: u32) {
    for &sid in sids {
        let got = events.wait_n(
            "the broadcasts",
            n as usize,
            |e| matches!(e, Ev::Msg { sid: s, .. } if *s == sid),
        );
        for (seq, ev) in (0..n).zip(&got) {
            let Ev::Msg { msg, .. } = ev else {
                unreachable!()
            };
            assert!(
                msg[..] == numbered(seq)[..],
                "session {sid}: broadcast {seq} differs"
            );
        }
    }
}

/// TLS members: a broadcast's bytes go through each member's own TLS filter; three TLS
/// clients get every broadcast whole and in order. The broadcasts are made from jobs on
/// the server's reactor (no callback of a member is running).
#[cfg(feature = "tls")]
#[test]
fn tls_members_get_every_broadcast_whole_and_in_order() {
    use getty::tcp::TcpClient;
    use getty::tls;
    watchdog(TEST_LIMIT, || {
        const N: u32 = 150;
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let group = SessionGroup::new(LengthFieldCodec::default());
        let (tx, mut server_events) = Events::new();
        let members = group.clone();
        let server = TcpServer::builder()
            .tls(tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
            .bind("127.0.0.1:0", move |_| {
                let member = Listener {
                    group: Some(members.clone()),
                    tx: tx.clone(),
                };
                Ok((LengthFieldCodec::default(), member))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("rv-tls-server", server);
        let (ctx, mut client_events) = Events::new();
        let client = TcpClient::builder()
            .tls(tls::client_config(chain.as_bytes()).unwrap(), "localhost")
            .connection_number(3)
            .build(addr, move |_| {
                let listener = Listener {
                    group: None,
                    tx: ctx.clone(),
                };
                Ok((LengthFieldCodec::default(), listener))
            })
            .unwrap();
        let client = Running::serve("rv-tls-client", client);
        server_events.wait_n("three members", 3, |e| matches!(e, Ev::Note { .. }));
        let opened = client_events.wait_n("three clients", 3, |e| matches!(e, Ev::Note { .. }));
        let sids: Vec<u64> = opened.iter().map(Ev::sid).collect();
        for seq in 0..N {
            let group = group.clone();
            let reached = server.run_on(move |_| group.broadcast(Bytes::from(numbered(seq))));
            assert_eq!(reached.unwrap(), 3, "broadcast {seq}");
        }
        expect_numbered(&mut client_events, &sids, N);
        println!("TLS: {N} broadcasts (4 B..40 KB) reached 3 TLS members whole and in order");
        client.stop();
        server.stop();
    });
}

/// WebSocket clients as members: a client-side group (a bot fanning out to the servers it
/// dialled). `WsClient`'s entry wraps the session in its own entry type: a broadcast's
/// wake must reach the session all the same, without waiting for a socket event.
#[cfg(feature = "ws")]
mod websocket_clients {
    use super::*;
    use getty::codec::{Message, MessageCodec};
    use getty::ws::{Ws, WsClient, WsServer};

    /// Reports what the server hears; never writes.
    struct Heard(Sender<Ev>);

    impl Handler<MessageCodec, Ws> for Heard {
        fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
            let _ = self.0.send(Ev::Note {
                sid: s.id(),
                what: "open".into(),
            });
            Ok(())
        }

        fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
            let _ = self.0.send(Ev::Msg {
                sid: s.id(),
                msg: msg.into_payload(),
            });
        }
    }

    /// Joins the client-side group on open.
    struct Fan {
        group: SessionGroup<MessageCodec, Ws>,
        tx: Sender<Ev>,
    }

    impl Handler<MessageCodec, Ws> for Fan {
        fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
            self.group.join(s).map_err(std::io::Error::other)?;
            let _ = self.tx.send(Ev::Note {
                sid: s.id(),
                what: "joined".into(),
            });
            Ok(())
        }

        fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {}
    }

    #[test]
    fn a_broadcast_to_websocket_client_members_goes_out_without_another_event() {
        watchdog(TEST_LIMIT, || {
            let (tx, mut heard) = Events::new();
            let server = WsServer::builder()
                .route("/", move |_| Ok((MessageCodec, Heard(tx.clone()))))
                .bind("127.0.0.1:0")
                .unwrap();
            let url = format!("ws://{}/", server.local_addr());
            let server = Running::serve("rv-ws-server", server);
            let group: SessionGroup<MessageCodec, Ws> = SessionGroup::new(MessageCodec);
            let (ctx, mut joined) = Events::new();
            let members = group.clone();
            let client = WsClient::builder()
                .connection_number(2)
                .build(&url, move |_| {
                    let fan = Fan {
                        group: members.clone(),
                        tx: ctx.clone(),
                    };
                    Ok((MessageCodec, fan))
                })
                .unwrap();
            let client = Running::serve("rv-ws-client", client);
            joined.wait_n("two joined clients", 2, |e| matches!(e, Ev::Note { .. }));
            heard.wait_n("two server sessions", 2, |e| matches!(e, Ev::Note { .. }));
            let reached = client
                .run_on(move |_| group.broadcast(Message::text("to every server")))
                .unwrap();
            assert_eq!(reached, 2, "both client sessions are members");
            let deadline = Instant::now() + ANSWER_WITHIN;
            let mut got = 0;
            while Instant::now() < deadline && got < 2 {
                std::thread::sleep(Duration::from_millis(50));
                got = heard.count(|e| matches!(e, Ev::Msg { .. }));
            }
            println!("2 WsClient members took the broadcast; the server heard {got} of 2");
            // What arrived was masked by each client and unmasked by the server intact.
            heard.pump();
            for ev in &heard.all {
                if let Ev::Msg { msg, .. } = ev {
                    assert_eq!(&msg[..], b"to every server", "a client's masking");
                }
            }
            assert_eq!(
                got, 2,
                "the broadcast waits in the WsClient sessions' inboxes: their entry does \
                 not pass on_wake to the session"
            );
            client.stop();
            server.stop();
        });
    }
}

/// A member that broadcasts from every callback it is told to: `C` on its next cron tick,
/// `W` fills its own queue past the high watermark (it broadcasts from
/// `on_writability_changed` both ways), `X` broadcasts then panics, `L` answers with the
/// group's size; `on_error` and `on_close` always broadcast.
struct Loud {
    group: SessionGroup<LengthFieldCodec>,
    cron_due: bool,
    tx: Sender<Ev>,
}

impl Loud {
    fn say(&self, s: &Session<LengthFieldCodec>, what: &str) {
        let _ = self
            .group
            .broadcast_except(Bytes::from(format!("{what} {}", s.id())), s.id());
    }
}

impl Handler<LengthFieldCodec> for Loud {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        self.group.join(s).map_err(std::io::Error::other)?;
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        match msg.first() {
            Some(b'C') => self.cron_due = true,
            Some(b'W') => {
                for _ in 0..4 {
                    let _ = s.write(Bytes::from(vec![b'w'; 32 * 1024]));
                }
            }
            Some(b'X') => {
                self.say(s, "before-panic");
                panic!("review: a handler panics after broadcasting");
            }
            Some(b'L') => {
                let _ = s.write(Bytes::from(format!("len {}", self.group.len())));
            }
            _ => {}
        }
    }

    fn on_cron(&mut self, s: &mut Session<LengthFieldCodec>) {
        if std::mem::take(&mut self.cron_due) {
            self.say(s, "cron");
        }
    }

    fn on_writability_changed(&mut self, s: &mut Session<LengthFieldCodec>, writable: bool) {
        self.say(s, if writable { "writable" } else { "unwritable" });
    }

    fn on_error(&mut self, s: &mut Session<LengthFieldCodec>, _: &Error) {
        self.say(s, "error");
    }

    fn on_close(&mut self, s: &mut Session<LengthFieldCodec>) {
        self.say(s, "close");
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

/// Reads frames from `r` until one is `want`; fails on anything else first, or silence.
fn expect_line(r: &mut TcpStream, want: &str) {
    r.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    let got = read_frame(r);
    assert_eq!(
        String::from_utf8_lossy(&got),
        want,
        "the observer's next line"
    );
}

/// Broadcasts from `on_cron`, `on_writability_changed` (both ways), `on_error`, `on_close`
/// and right before a panic all reach another member whole and in order; a member that
/// panicked leaves the group.
#[test]
fn broadcasts_from_every_callback_and_before_a_panic_arrive_and_the_panicked_member_leaves() {
    watchdog(TEST_LIMIT, || {
        let group = SessionGroup::new(LengthFieldCodec::default());
        let (tx, mut events) = Events::new();
        let options = SessionOptions::default()
            .cron_period(Some(Duration::from_millis(50)))
            .max_message_len(1024);
        let server = TcpServer::builder()
            .session_options(options)
            .bind("127.0.0.1:0", move |_| {
                let loud = Loud {
                    group: group.clone(),
                    cron_due: false,
                    tx: tx.clone(),
                };
                Ok((LengthFieldCodec::default(), loud))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("rv-loud", server);
        let mut observer = connect(addr);
        let observer_sid = events.wait_open(observer.local_addr().unwrap());
        let mut actor = connect(addr);
        let actor_sid = events.wait_open(actor.local_addr().unwrap());

        actor.write_all(&frame(b"C")).unwrap();
        expect_line(&mut observer, &format!("cron {actor_sid}"));

        actor.write_all(&frame(b"W")).unwrap();
        expect_line(&mut observer, &format!("unwritable {actor_sid}"));
        let mut sink = vec![0u8; 4 * (4 + 32 * 1024)];
        actor.read_exact(&mut sink).unwrap();
        expect_line(&mut observer, &format!("writable {actor_sid}"));

        // A header over max_message_len: on_error, then on_close.
        actor.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
        expect_line(&mut observer, &format!("error {actor_sid}"));
        expect_line(&mut observer, &format!("close {actor_sid}"));
        events.wait_close(actor_sid);

        let mut panicker = connect(addr);
        let panicker_sid = events.wait_open(panicker.local_addr().unwrap());
        panicker.write_all(&frame(b"X")).unwrap();
        expect_line(&mut observer, &format!("before-panic {panicker_sid}"));
        expect_line(&mut observer, &format!("error {panicker_sid}"));
        expect_line(&mut observer, &format!("close {panicker_sid}"));
        observer.write_all(&frame(b"L")).unwrap();
        expect_line(&mut observer, "len 1");
        println!(
            "observer {observer_sid} heard cron, unwritable, writable, error and close \
             broadcasts, the one before a panic, and the panicked member left"
        );
        server.stop();
    });
}

/// Every session joins both groups, `feed` and `alerts`; a controller (it sends `ctl`
/// first) leaves them and drives them: `A<n>` broadcasts n numbered 8 KiB messages to the
/// feed, `B` one short alert.
struct TwoGroups {
    feed: SessionGroup<LengthFieldCodec>,
    alerts: SessionGroup<LengthFieldCodec>,
    sent: u32,
    tx: Sender<Ev>,
}

impl Handler<LengthFieldCodec> for TwoGroups {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        self.feed.join(s).map_err(std::io::Error::other)?;
        self.alerts.join(s).map_err(std::io::Error::other)?;
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        match msg.first() {
            Some(b'c') => {
                self.feed.leave(s);
                self.alerts.leave(s);
            }
            Some(b'A') => {
                let n: u32 = std::str::from_utf8(&msg[1..]).unwrap().parse().unwrap();
                for _ in 0..n {
                    let mut m = vec![b'f'; 8 * 1024];
                    m[1..5].copy_from_slice(&self.sent.to_be_bytes());
                    self.sent += 1;
                    let _ = self.feed.broadcast(Bytes::from(m));
                }
            }
            Some(b'B') => {
                let _ = self.alerts.broadcast(Bytes::from_static(b"ALERT"));
            }
            Some(b'S') => {
                let line = format!(
                    "feed {:?} alerts {:?}",
                    self.feed.stats(),
                    self.alerts.stats()
                );
                let _ = s.write(Bytes::from(line));
            }
            _ => {}
        }
    }

    fn on_error(&mut self, s: &mut Session<LengthFieldCodec>, error: &Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }
}

/// A session in two groups has one inbox. The alerts group keeps the default policy,
/// `Close` ("nothing is lost without the member being told"); the feed drops its oldest
/// broadcasts for a slow member. The feed's drops must not take the alert with them.
#[test]
fn a_drop_oldest_group_does_not_drop_another_groups_broadcast() {
    use getty::SlowConsumer;
    watchdog(TEST_LIMIT, || {
        let feed = SessionGroup::builder(LengthFieldCodec::default())
            .slow_consumer(SlowConsumer::DropOldest)
            .max_pending(64 * 1024)
            .build();
        let alerts = SessionGroup::new(LengthFieldCodec::default());
        let (tx, mut events) = Events::new();
        let server = TcpServer::builder()
            .socket_options(SocketOptions::default().send_buffer_size(Some(8 * 1024)))
            .bind("127.0.0.1:0", move |_| {
                let member = TwoGroups {
                    feed: feed.clone(),
                    alerts: alerts.clone(),
                    sent: 0,
                    tx: tx.clone(),
                };
                Ok((LengthFieldCodec::default(), member))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("rv-two-groups", server);
        let mut ctl = connect(addr);
        events.wait_open(ctl.local_addr().unwrap());
        ctl.write_all(&frame(b"ctl")).unwrap();
        let mut slow = connect_with_recv_buffer(addr, 4096);
        let slow_sid = events.wait_open(slow.local_addr().unwrap());
        // Fill the slow member's socket and queue, then its inbox; the alert goes behind;
        // then more of the feed.
        for command in ["A200", "A200", "B", "A16", "S"] {
            ctl.write_all(&frame(command.as_bytes())).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        let stats = String::from_utf8(read_frame(&mut ctl)).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let (mut feed_seen, mut alert_seen) = (0, false);
        let mut header = [0u8; 4];
        while slow.read_exact(&mut header).is_ok() {
            let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
            slow.read_exact(&mut body).unwrap();
            match body.first() {
                Some(b'f') => feed_seen += 1,
                _ => alert_seen |= body == b"ALERT",
            }
        }
        let errors = events.errors_of(slow_sid);
        println!(
            "the slow member got {feed_seen} feed messages, the alert: {alert_seen}, errors \
             {errors:?}; {stats}"
        );
        server.stop();
        assert!(
            alert_seen || !errors.is_empty(),
            "the alerts group (policy Close) lost a broadcast without telling the member: \
             the feed's DropOldest dropped it from their shared inbox"
        );
    });
}

/// Joins the group on open and keeps no clone of it: the group lives only as long as
/// whoever else holds it.
struct JoinAndForget(Option<SessionGroup<LengthFieldCodec>>, Sender<Ev>);

impl Handler<LengthFieldCodec> for JoinAndForget {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        if let Some(group) = self.0.take() {
            group.join(s).map_err(std::io::Error::other)?;
        }
        let _ = self.1.send(Ev::Note {
            sid: s.id(),
            what: "open".into(),
        });
        Ok(())
    }

    fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, _: Bytes) {}
}

/// A server on its own reactor whose first `members` sessions join `group` and forget
/// it; once they have, the server holds no clone either.
fn forgetful_server(
    name: &str,
    group: &SessionGroup<LengthFieldCodec>,
    members: usize,
) -> (Running, SocketAddr, Events) {
    let (tx, events) = Events::new();
    let mut holder = Some(group.clone());
    let mut left = members;
    let server = TcpServer::builder()
        .bind("127.0.0.1:0", move |_| {
            left = left.saturating_sub(1);
            let group = if left == 0 {
                holder.take()
            } else {
                holder.clone()
            };
            Ok((
                LengthFieldCodec::default(),
                JoinAndForget(group, tx.clone()),
            ))
        })
        .unwrap();
    let addr = server.local_addr();
    (Running::serve(name, server), addr, events)
}

/// The last clone of a group is dropped right after it broadcast, on the reactor's
/// thread, while members remain: what was broadcast still reaches them, whole and in
/// order, and the reactor carries on.
#[test]
fn a_group_dropped_while_members_remain_still_delivers_what_it_broadcast() {
    watchdog(TEST_LIMIT, || {
        const N: u32 = 100;
        let group = SessionGroup::new(LengthFieldCodec::default());
        let (server, addr, mut events) = forgetful_server("rv-dropped", &group, 3);
        let mut streams: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
        let opened = events.wait_n("three members", 3, |e| matches!(e, Ev::Note { .. }));
        assert_eq!(opened.len(), 3);
        // The members and the server hold no clone: this is the last, dropped on the
        // reactor's thread right after the broadcasts.
        let reached = server.run_on(move |_| {
            let mut reached = 0;
            for seq in 0..N {
                reached += group.broadcast(Bytes::from(numbered(seq))).unwrap();
            }
            drop(group);
            reached
        });
        assert_eq!(reached, 3 * N as usize);
        for s in &mut streams {
            for seq in 0..N {
                assert!(read_frame(s) == numbered(seq), "broadcast {seq} differs");
            }
        }
        // The reactor is still alive.
        assert_eq!(server.run_on(|_| 7), 7);
        println!("{N} broadcasts reached 3 members after the group was dropped");
        server.stop();
    });
}

/// A group spans two reactors and one of them stops: the other's members still get its
/// broadcasts (posting to the stopped reactor fails quietly), and dropping the group later
/// is harmless.
#[test]
fn a_group_outlives_one_of_its_two_reactors() {
    watchdog(TEST_LIMIT, || {
        let group = SessionGroup::new(LengthFieldCodec::default());
        let (left, left_addr, mut left_events) = forgetful_server("rv-left", &group, 1);
        let (right, right_addr, mut right_events) = forgetful_server("rv-right", &group, 1);
        let _gone = connect(left_addr);
        left_events.wait("a left member", |e| matches!(e, Ev::Note { .. }));
        let mut stays = connect(right_addr);
        right_events.wait("a right member", |e| matches!(e, Ev::Note { .. }));
        left.stop();
        for seq in 0..20 {
            let group = group.clone();
            let reached = right
                .run_on(move |_| group.broadcast(Bytes::from(numbered(seq))))
                .unwrap();
            assert_eq!(reached, 1);
        }
        for seq in 0..20 {
            assert!(
                read_frame(&mut stays) == numbered(seq),
                "broadcast {seq} differs"
            );
        }
        // Broadcast off every reactor (encoded with the group's own codec), then drop it.
        assert_eq!(group.broadcast(Bytes::from(numbered(20))).unwrap(), 0);
        assert!(read_frame(&mut stays) == numbered(20));
        drop(group);
        assert_eq!(right.run_on(|_| 7), 7);
        println!("after one reactor stopped, 21 broadcasts reached the other's member");
        right.stop();
    });
}

/// Compressing WebSocket members whose handler writes its own replies in the same
/// callbacks that broadcast: the member's own messages and the broadcasts share one
/// permessage-deflate context and one queue, and must neither interleave nor corrupt each
/// other.
#[cfg(all(feature = "ws", feature = "deflate"))]
mod websocket_deflate {
    use super::*;
    use getty::codec::ws::DeflateConfig;
    use getty::codec::{Message, MessageCodec};
    use getty::ws::{Ws, WsClient, WsServer};

    /// Echoes every message to its sender (`echo ...`) and broadcasts it to every member,
    /// the sender included (`from <sid> ...`).
    struct EchoAndTell(SessionGroup<MessageCodec, Ws>);

    impl Handler<MessageCodec, Ws> for EchoAndTell {
        fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
            self.0.join(s).map_err(std::io::Error::other)?;
            Ok(())
        }

        fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
            let payload = msg.into_payload();
            let mut echo = b"echo ".to_vec();
            echo.extend_from_slice(&payload);
            s.write(Message::binary(echo)).unwrap();
            let mut told = format!("from {} ", s.id()).into_bytes();
            told.extend_from_slice(&payload);
            self.0.broadcast(Message::binary(told)).unwrap();
        }
    }

    /// Sends `script` once open; reports what it hears and any error.
    struct Talker {
        script: Vec<Vec<u8>>,
        tx: Sender<Ev>,
    }

    impl Handler<MessageCodec, Ws> for Talker {
        fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
            let _ = self.tx.send(Ev::Note {
                sid: s.id(),
                what: format!("deflate={}", s.deflate().is_some()),
            });
            for m in self.script.drain(..) {
                s.write(Message::binary(m)).unwrap();
            }
            Ok(())
        }

        fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
            let _ = self.tx.send(Ev::Msg {
                sid: s.id(),
                msg: msg.into_payload(),
            });
        }

        fn on_error(&mut self, s: &mut Session<MessageCodec, Ws>, error: &Error) {
            let _ = self.tx.send(Ev::Error {
                sid: s.id(),
                err: classify(error),
            });
        }
    }

    /// Message `i` of talker `who`: compressible text or incompressible bytes, up to
    /// 150 KB.
    fn scripted(who: u8, i: usize) -> Vec<u8> {
        let len = [10, 3_000, 70_000, 150_000, 0, 20_000][i % 6];
        let mut m = format!("{who}:{i}:").into_bytes();
        if i % 2 == 0 {
            m.extend(std::iter::repeat_n(b'a' + who, len));
        } else {
            let mut x = (i as u32 + 1).wrapping_mul(2_654_435_761) ^ u32::from(who);
            m.extend((0..len).map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            }));
        }
        m
    }

    #[test]
    fn own_replies_and_broadcasts_to_compressing_members_stay_whole_and_in_order() {
        watchdog(TEST_LIMIT, || {
            const EACH: usize = 40;
            let room = SessionGroup::new(MessageCodec);
            let server = WsServer::builder()
                .deflate(Some(DeflateConfig::default()))
                .route("/", move |_| Ok((MessageCodec, EchoAndTell(room.clone()))))
                .bind("127.0.0.1:0")
                .unwrap();
            let url = format!("ws://{}/", server.local_addr());
            let server = Running::serve("rv-ws-deflate", server);
            let (tx, mut events) = Events::new();
            let mut clients = Vec::new();
            for who in 0..2u8 {
                let tx = tx.clone();
                let client = WsClient::builder()
                    .deflate(Some(DeflateConfig::default()))
                    .build(&url, move |_| {
                        let script = (0..EACH).map(|i| scripted(who, i)).collect();
                        Ok((
                            MessageCodec,
                            Talker {
                                script,
                                tx: tx.clone(),
                            },
                        ))
                    })
                    .unwrap();
                clients.push(Running::serve(&format!("rv-ws-talker{who}"), client));
                // One at a time, so that the first has joined before the second talks.
                events.wait_n("the talker's open", usize::from(who) + 1, |e| {
                    matches!(e, Ev::Note { .. })
                });
            }
            // Talker 0 hears its echoes and both talkers' broadcasts (it joined before
            // talker 1 talked); talker 1 hears its echoes and at least its own broadcasts.
            let opened: Vec<u64> = events
                .wait_n("opens", 2, |e| matches!(e, Ev::Note { .. }))
                .iter()
                .map(Ev::sid)
                .collect();
            let first = opened[0];
            let heard = events.wait_n(
                "talker 0's messages",
                3 * EACH,
                |e| matches!(e, Ev::Msg { sid, .. } if *sid == first),
            );
            let (mut echoes, mut told) = (0usize, [0usize; 2]);
            for ev in &heard {
                let Ev::Msg { msg, .. } = ev else {
                    unreachable!()
                };
                if let Some(rest) = msg.strip_prefix(b"echo ") {
                    assert!(rest == scripted(0, echoes), "echo {echoes} damaged");
                    echoes += 1;
                } else {
                    let text = &msg[..msg.len().min(40)];
                    let rest = msg
                        .splitn(3, |&b| b == b' ')
                        .nth(2)
                        .expect("from <sid> ...");
                    let who = usize::from(rest[0] - b'0');
                    assert!(
                        rest == scripted(who as u8, told[who]),
                        "broadcast {} of talker {who} damaged: {:?}",
                        told[who],
                        String::from_utf8_lossy(text)
                    );
                    told[who] += 1;
                }
            }
            assert!(
                events.all.iter().all(|e| !matches!(e, Ev::Error { .. })),
                "an error"
            );
            println!(
                "compressing member: {echoes} own replies and {told:?} broadcasts (up to \
                 150 KB, compressible and not), whole and in order"
            );
            for c in clients {
                c.stop();
            }
            server.stop();
        });
    }
}

/// A broadcast longer than a member's `max_outbound` can never be queued on it. A
/// session's own write of it fails with `QueueFull` and the session carries on; a
/// broadcast of it is accepted (`broadcast` reports every member reached) and then closes
/// every member of the group with `QueueFull`: one oversized message empties the room.
#[test]
fn one_broadcast_longer_than_max_outbound_does_not_close_every_member() {
    watchdog(TEST_LIMIT, || {
        const MAX_OUTBOUND: usize = 64 * 1024;
        let group = SessionGroup::new(LengthFieldCodec::default());
        let (tx, mut events) = Events::new();
        let members = group.clone();
        let server = TcpServer::builder()
            .session_options(SessionOptions::default().max_outbound(MAX_OUTBOUND))
            .bind("127.0.0.1:0", move |_| {
                let member = Listener {
                    group: Some(members.clone()),
                    tx: tx.clone(),
                };
                Ok((LengthFieldCodec::default(), member))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("rv-oversized", server);
        let mut streams: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
        events.wait_n("three members", 3, |e| matches!(e, Ev::Note { .. }));
        let reached = server
            .run_on(move |_| group.broadcast(Bytes::from(vec![7u8; MAX_OUTBOUND + 1])))
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        events.pump();
        let errors: Vec<&Ev> = events
            .all
            .iter()
            .filter(|e| matches!(e, Ev::Error { .. }))
            .collect();
        let mut ended = 0;
        for s in &mut streams {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let silent = |e: &std::io::Error| {
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            };
            match s.read(&mut [0u8; 16]) {
                Err(e) if silent(&e) => {}
                _ => ended += 1,
            }
        }
        println!(
            "a {} byte broadcast 'reached' {reached} members; errors: {errors:?}; \
             {ended} of 3 connections ended",
            MAX_OUTBOUND + 1
        );
        server.stop();
        assert!(
            errors.is_empty(),
            "one oversized broadcast closed the members that 'took' it: {errors:?}"
        );
    });
}

/// `LengthFieldCodec`, except that it panics on a message that starts with `boom`, after
/// writing part of it (as a codec with an assertion deep in its encoder would).
#[derive(Clone, Default)]
struct Brittle(LengthFieldCodec);

impl getty::codec::Decoder for Brittle {
    type Item = Bytes;

    fn decode(
        &mut self,
        src: &mut bytes::BytesMut,
    ) -> Result<getty::codec::Decoded<Bytes>, getty::codec::CodecError> {
        self.0.decode(src)
    }
}

impl getty::codec::Encoder<Bytes> for Brittle {
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut bytes::BytesMut,
    ) -> Result<(), getty::codec::CodecError> {
        if item.starts_with(b"boom") {
            dst.extend_from_slice(b"half-written");
            panic!("review: the codec panics mid-encode");
        }
        self.0.encode(item, dst)
    }
}

/// Relays every message to the other members, through a group whose codec is `Brittle`.
struct BrittleRelay(SessionGroup<Brittle>, Sender<Ev>);

impl Handler<Brittle> for BrittleRelay {
    fn on_open(&mut self, s: &mut Session<Brittle>) -> std::io::Result<()> {
        self.0.join(s).map_err(std::io::Error::other)?;
        let _ = self.1.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<Brittle>, msg: Bytes) {
        let _ = self.0.broadcast_except(msg, s.id());
    }
}

/// A group encodes every broadcast into one buffer of its own, shared by all its
/// broadcasts on that reactor. A codec that panics halfway (the panic is caught: only the
/// session whose callback broadcast is reset) must not leave its half-written bytes to be
/// sent in front of the group's next broadcast, to every member.
#[test]
fn a_codec_panic_mid_broadcast_does_not_corrupt_the_next_broadcast() {
    watchdog(TEST_LIMIT, || {
        let group = SessionGroup::new(Brittle::default());
        let (tx, mut events) = Events::new();
        let server = TcpServer::builder()
            .bind("127.0.0.1:0", move |_| {
                Ok((Brittle::default(), BrittleRelay(group.clone(), tx.clone())))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("rv-brittle", server);
        let mut members: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
        for m in &members {
            events.wait_open(m.local_addr().unwrap());
        }
        members[0].write_all(&frame(b"boom")).unwrap();
        // The panicking member is reset; the others carry on.
        assert!(matches!(
            expect_closed(&mut members[0]),
            Ended::Reset | Ended::Eof
        ));
        members[1].write_all(&frame(b"hello")).unwrap();
        members[2].set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
        let mut got = vec![0u8; 4 + 5];
        members[2].read_exact(&mut got).unwrap();
        println!(
            "after the codec's panic, the next broadcast arrived as {:?}",
            String::from_utf8_lossy(&got)
        );
        server.stop();
        assert_eq!(got, frame(b"hello"), "the next broadcast is corrupted");
    });
}

/// The TCP counterpart of the WebSocket-client case: `TcpClient` sessions in a client-side
/// group take a broadcast made from a job at once.
#[test]
fn a_broadcast_to_tcp_client_members_goes_out_without_another_event() {
    use getty::tcp::TcpClient;
    watchdog(TEST_LIMIT, || {
        let (tx, mut heard) = Events::new();
        let server = TcpServer::builder()
            .bind("127.0.0.1:0", move |_| {
                let listener = Listener {
                    group: None,
                    tx: tx.clone(),
                };
                Ok((LengthFieldCodec::default(), listener))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("rv-tcp-server", server);
        let group = SessionGroup::new(LengthFieldCodec::default());
        let (ctx, mut joined) = Events::new();
        let members = group.clone();
        let client = TcpClient::builder()
            .connection_number(2)
            .build(addr, move |_| {
                let listener = Listener {
                    group: Some(members.clone()),
                    tx: ctx.clone(),
                };
                Ok((LengthFieldCodec::default(), listener))
            })
            .unwrap();
        let client = Running::serve("rv-tcp-client", client);
        joined.wait_n("two joined clients", 2, |e| matches!(e, Ev::Note { .. }));
        heard.wait_n("two server sessions", 2, |e| matches!(e, Ev::Note { .. }));
        let reached = client
            .run_on(move |_| group.broadcast(Bytes::from_static(b"to every server")))
            .unwrap();
        assert_eq!(reached, 2);
        let got = heard.wait_n("the broadcast, twice", 2, |e| matches!(e, Ev::Msg { .. }));
        for ev in got {
            let Ev::Msg { msg, .. } = ev else {
                unreachable!()
            };
            assert_eq!(&msg[..], b"to every server");
        }
        println!("2 TcpClient members sent the broadcast at once");
        client.stop();
        server.stop();
    });
}

/// The natural way to end a room: broadcast a goodbye, then `close_all`. The goodbye is
/// made first, so it must reach every member before its close ("what is queued goes out
/// first").
#[test]
fn a_goodbye_broadcast_right_before_close_all_reaches_every_member() {
    watchdog(TEST_LIMIT, || {
        let group = SessionGroup::new(LengthFieldCodec::default());
        let (tx, mut events) = Events::new();
        let members = group.clone();
        let server = TcpServer::builder()
            .bind("127.0.0.1:0", move |_| {
                let listener = Listener {
                    group: Some(members.clone()),
                    tx: tx.clone(),
                };
                Ok((LengthFieldCodec::default(), listener))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("rv-goodbye", server);
        let mut streams: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
        events.wait_n("three members", 3, |e| matches!(e, Ev::Note { .. }));
        let reached = server
            .run_on(move |_| {
                let reached = group.broadcast(Bytes::from_static(b"goodbye"));
                group.close_all();
                reached
            })
            .unwrap();
        assert_eq!(reached, 3);
        let mut got = Vec::new();
        for s in &mut streams {
            let (bytes, ended) = read_to_end(s);
            got.push((bytes == frame(b"goodbye"), ended));
        }
        println!("after broadcast(goodbye) + close_all: (got the goodbye, how it ended) {got:?}");
        server.stop();
        assert!(
            got.iter().all(|(goodbye, _)| *goodbye),
            "the goodbye broadcast before close_all was lost: {got:?}"
        );
    });
}

/// The other face of the shared inbox: a quiet group with a small bound closes a member
/// for the backlog another group (a feed with `Skip` and a large bound) left in its inbox,
/// though only a few bytes of its own wait.
#[test]
fn a_quiet_groups_bound_does_not_count_another_groups_backlog() {
    use getty::SlowConsumer;
    watchdog(TEST_LIMIT, || {
        let feed = SessionGroup::builder(LengthFieldCodec::default())
            .slow_consumer(SlowConsumer::Skip)
            .max_pending(1 << 20)
            .build();
        let alerts = SessionGroup::builder(LengthFieldCodec::default())
            .max_pending(64 * 1024)
            .build();
        let (tx, mut events) = Events::new();
        let server = TcpServer::builder()
            .socket_options(SocketOptions::default().send_buffer_size(Some(8 * 1024)))
            .bind("127.0.0.1:0", move |_| {
                let member = TwoGroups {
                    feed: feed.clone(),
                    alerts: alerts.clone(),
                    sent: 0,
                    tx: tx.clone(),
                };
                Ok((LengthFieldCodec::default(), member))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("rv-quiet-bound", server);
        let mut ctl = connect(addr);
        events.wait_open(ctl.local_addr().unwrap());
        ctl.write_all(&frame(b"ctl")).unwrap();
        let slow = connect_with_recv_buffer(addr, 4096);
        let slow_sid = events.wait_open(slow.local_addr().unwrap());
        for command in ["A200", "A200", "B", "S"] {
            ctl.write_all(&frame(command.as_bytes())).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        let stats = String::from_utf8(read_frame(&mut ctl)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let errors = events.errors_of(slow_sid);
        println!("the slow member's errors: {errors:?}; {stats}");
        server.stop();
        drop(slow);
        assert!(
            errors.is_empty(),
            "closed by the alerts group (5 bytes of alerts pending, bound 64 KiB) for the \
             feed's backlog: {errors:?}"
        );
    });
}

/// Joins its group and hands its session's handle out.
struct JoinsAndHandsOut(
    SessionGroup<LengthFieldCodec>,
    Sender<getty::SessionHandle<LengthFieldCodec>>,
);

impl Handler<LengthFieldCodec> for JoinsAndHandsOut {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        self.0.join(s).map_err(std::io::Error::other)?;
        let _ = self.1.send(s.handle().unwrap());
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, _: Bytes) {}
}

/// One thread broadcasts, writes to a member through its handle, broadcasts, closes all
/// and broadcasts again: each member gets what came before `close_all`, in the thread's
/// order, and nothing after it (review s35-c: a ledger that let a broadcast join a job
/// already on its way reordered both).
#[test]
fn a_threads_broadcasts_keep_their_order_with_its_handle_writes_and_close_all() {
    watchdog(TEST_LIMIT, || {
        let group = SessionGroup::new(LengthFieldCodec::default());
        let (tx, handles) = std::sync::mpsc::channel();
        let g = group.clone();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((
                LengthFieldCodec::default(),
                JoinsAndHandsOut(g.clone(), tx.clone()),
            ))
        })
        .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("group-order", server);
        let mut peers: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let first = handles.recv_timeout(ANSWER_WITHIN).unwrap();
        let _second = handles.recv_timeout(ANSWER_WITHIN).unwrap();
        server.while_busy(|| {
            group.broadcast(Bytes::from_static(b"b0")).unwrap();
            first.write(Bytes::from_static(b"w")).unwrap();
            group.broadcast(Bytes::from_static(b"b1")).unwrap();
            group.close_all();
            group.broadcast(Bytes::from_static(b"b2")).unwrap();
        });
        let mut seen = Vec::new();
        for peer in &mut peers {
            peer.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
            let mut got = Vec::new();
            peer.read_to_end(&mut got).expect("closed by close_all");
            let mut frames = Vec::new();
            let mut at = 0;
            while at + 4 <= got.len() {
                let len = u32::from_be_bytes(got[at..at + 4].try_into().unwrap()) as usize;
                frames.push(String::from_utf8_lossy(&got[at + 4..at + 4 + len]).into_owned());
                at += 4 + len;
            }
            seen.push(frames);
        }
        // Which peer is the first session's is not known: one got the write.
        seen.sort_by_key(|frames| frames.len());
        assert_eq!(seen, [vec!["b0", "b1"], vec!["b0", "w", "b1"]]);
        server.stop();
    });
}
