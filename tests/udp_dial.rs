//! The UDP client's dial over loopback: it opens as soon as the peer proves alive (the
//! probe's answer, or any datagram), fails on `ECONNREFUSED` and tells `on_dial_error`,
//! and opens a silent peer once the (default) probe wait has passed.
//!
//! A dial that must not wait out the probe wait is given one of ten minutes, far past the
//! watchdog: the session opening at all proves it did not wait. Every socket read and
//! every wait for an event is bounded; no test asserts on timing.

mod common;

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use common::*;
use getty::codec::{Bytes, RawCodec};
use getty::udp::{DatagramHandler, DatagramSession, UdpClient, UdpClientBuilder, DEFAULT_PROBE};
use getty::{Error, ReactorHandle};

/// Only catches hangs; far shorter than [`NEVER`].
const TEST_LIMIT: Duration = Duration::from_secs(90);

/// A probe wait no test may see run out.
const NEVER: Duration = Duration::from_secs(600);

/// The answer to the probe, as documented ([`UdpClient::PROBE_ANSWER`]), spelled out so
/// that a change of the bytes shows here.
const ANSWER: &[u8] = b"getty-rs:udp-dial-alive";

/// Reports every callback of a client session.
struct Recorder(Sender<Ev>);

impl DatagramHandler<RawCodec> for Recorder {
    fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> io::Result<()> {
        let peer = s.peer_addr().expect("a connected session");
        let _ = self.0.send(Ev::Open { sid: s.id(), peer });
        Ok(())
    }

    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, _: SocketAddr) {
        let _ = self.0.send(Ev::Msg { sid: s.id(), msg });
    }

    fn on_error(&mut self, s: &mut DatagramSession<RawCodec>, error: &Error) {
        let err = classify(error);
        let _ = self.0.send(Ev::Error { sid: s.id(), err });
    }

    fn on_close(&mut self, s: &mut DatagramSession<RawCodec>) {
        let _ = self.0.send(Ev::Close { sid: s.id() });
    }
}

/// Failed dials, as `on_dial_error` heard them.
type DialErrors = Receiver<(SocketAddr, ErrKind)>;

/// A client of `addr` on its own reactor whose sessions get the handlers `handler` makes,
/// and whose failed dials go to the returned receiver.
fn client<H>(
    addr: SocketAddr,
    builder: UdpClientBuilder,
    mut handler: impl FnMut() -> H + Send + 'static,
) -> (Running, DialErrors)
where
    H: DatagramHandler<RawCodec> + 'static,
{
    let (err_tx, err_rx) = mpsc::channel();
    let client = builder
        .build(addr, move |_| Ok((RawCodec, handler())))
        .expect("build the client")
        .on_dial_error(move |addr, error| {
            let _ = err_tx.send((addr, classify(error)));
        });
    (Running::serve("udp-dial-client", client), err_rx)
}

/// A client dialling a raw peer on loopback, once its probe has reached the peer; its
/// sessions report like [`Recorder`].
struct Dial {
    events: Events,
    /// Kept for as long as the test runs, like the clones the handlers hold.
    _tx: Sender<Ev>,
    peer: StdUdpSocket,
    /// Where the probe came from: the socket of the session being dialled.
    from: SocketAddr,
    /// `None` once stopped.
    client: Option<Running>,
    dial_errors: DialErrors,
}

impl Dial {
    /// Starts a client (made by `builder`) of a fresh raw peer and receives its probe.
    fn start(builder: UdpClientBuilder) -> Dial {
        let (tx, events) = Events::new();
        let peer = udp_socket();
        let recorder_tx = tx.clone();
        let (client, dial_errors) = client(peer.local_addr().unwrap(), builder, move || {
            Recorder(recorder_tx.clone())
        });
        let from = recv_probe(&peer);
        Dial {
            events,
            _tx: tx,
            peer,
            from,
            client: Some(client),
            dial_errors,
        }
    }

    /// The peer sends `datagram` to the session being dialled.
    fn send(&self, datagram: &[u8]) {
        self.peer.send_to(datagram, self.from).unwrap();
    }

    /// Waits for the session with the peer to open; returns its id.
    fn wait_open(&mut self) -> u64 {
        self.events.wait_open(self.peer.local_addr().unwrap())
    }

    /// The client's reactor.
    fn reactor(&self) -> &ReactorHandle {
        self.client.as_ref().expect("the client runs").handle()
    }

    /// Stops the client, waits for session `sid` to close, and returns the messages it
    /// got, in order.
    fn stop(&mut self, sid: u64) -> Vec<Bytes> {
        self.client.take().expect("the client runs").stop();
        self.events.wait_close(sid);
        messages(&mut self.events, sid)
    }

    /// Checks that no dial failed.
    fn assert_no_dial_error(&self) {
        assert!(
            self.dial_errors.try_recv().is_err(),
            "the dial must not fail"
        );
    }
}

/// Receives the client's probe and says where it came from.
fn recv_probe(peer: &StdUdpSocket) -> SocketAddr {
    let mut buf = [0u8; 256];
    let (n, from) = peer.recv_from(&mut buf).expect("the probe");
    assert_eq!(&buf[..n], DEFAULT_PROBE);
    from
}

/// The messages session `sid` got, in order.
fn messages(events: &mut Events, sid: u64) -> Vec<Bytes> {
    events
        .of(sid)
        .into_iter()
        .filter_map(|e| match e {
            Ev::Msg { msg, .. } => Some(msg),
            _ => None,
        })
        .collect()
}

/// Fails on the code before the probe answer: the answer opened the session but was
/// delivered to the handler as its first message.
#[test]
fn a_peer_that_answers_the_probe_opens_at_once_and_the_answer_is_no_message() {
    assert_eq!(UdpClient::PROBE_ANSWER, ANSWER);
    watchdog(TEST_LIMIT, || {
        let mut dial = Dial::start(UdpClient::builder().probe_wait(NEVER));
        dial.send(ANSWER);
        let sid = dial.wait_open();
        // What comes after the answer is the peer's own, even when it starts alike.
        let alike = [ANSWER, b"!"].concat();
        dial.send(b"welcome");
        dial.send(&alike);
        dial.events
            .wait_n("two messages", 2, |e| matches!(e, Ev::Msg { .. }));
        assert_eq!(
            dial.stop(sid),
            [&b"welcome"[..], &alike],
            "the answer to the probe reached the handler"
        );
        dial.assert_no_dial_error();
        dial.events.check_contract();
    });
}

/// The answer and a first message queued together (the peer answered and spoke before the
/// dialer looked): the dial takes the answer only, and the message comes after `on_open`.
/// Fails on the code before the probe answer (the answer was the first message).
#[test]
fn an_answer_and_a_message_queued_together_open_with_the_message_first() {
    watchdog(TEST_LIMIT, || {
        let mut dial = Dial::start(UdpClient::builder().probe_wait(NEVER));
        // Blocks the client's reactor until both datagrams are queued on its socket.
        let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
        let held = std::sync::Arc::clone(&gate);
        dial.reactor()
            .execute(move |_| {
                held.wait();
                held.wait();
            })
            .expect("the reactor runs");
        gate.wait(); // the reactor is held
        dial.send(ANSWER);
        dial.send(b"first");
        // Loopback delivers at once; give the kernel a moment all the same before the
        // reactor looks (no assertion rests on it: either order of arrival passes).
        std::thread::sleep(Duration::from_millis(20));
        gate.wait(); // let the reactor go
        let sid = dial.wait_open();
        dial.events
            .wait("the first message", |e| matches!(e, Ev::Msg { .. }));
        assert_eq!(dial.stop(sid), [&b"first"[..]]);
        dial.events.check_contract();
    });
}

/// Any datagram from the peer opens the session at once and is not lost: it is the
/// session's first message, delivered after `on_open`. (Held before this change too: a
/// guard for the rework of the dial.)
#[test]
fn a_datagram_during_the_wait_opens_the_session_and_is_its_first_message() {
    watchdog(TEST_LIMIT, || {
        let mut dial = Dial::start(UdpClient::builder().probe_wait(NEVER));
        dial.send(b"hello first");
        let sid = dial.wait_open();
        dial.events
            .wait("the first message", |e| matches!(e, Ev::Msg { .. }));
        assert_eq!(dial.stop(sid), [&b"hello first"[..]]);
        let evs = dial.events.of(sid);
        assert!(matches!(evs[0], Ev::Open { .. }), "{evs:?}");
        dial.assert_no_dial_error();
        dial.events.check_contract();
    });
}

/// A peer that never answers still opens, once the default probe wait has passed, and the
/// session works. (Held before this change too, after a longer wait.)
#[test]
fn a_silent_peer_opens_after_the_default_wait() {
    watchdog(TEST_LIMIT, || {
        let mut dial = Dial::start(UdpClient::builder());
        let sid = dial.wait_open();
        dial.send(b"late hello");
        dial.events
            .wait("a message", |e| matches!(e, Ev::Msg { .. }));
        assert_eq!(dial.stop(sid), [&b"late hello"[..]]);
        dial.assert_no_dial_error();
        dial.events.check_contract();
    });
}

/// Nothing listens: with the default wait, each dial fails on the refusal and tells
/// `on_dial_error`; no session opens, and the client gives up as told. (Held before this
/// change too: a guard for the shorter default wait, which must not outrun the refusal.)
#[test]
fn a_closed_port_fails_every_dial_and_tells_on_dial_error() {
    watchdog(TEST_LIMIT, || {
        let (tx, mut events) = Events::new();
        let closed = udp_socket().local_addr().unwrap(); // bound, then closed
        let builder = UdpClient::builder()
            .max_consecutive_failures(Some(3))
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10));
        let (client, dial_errors) = client(closed, builder, move || Recorder(tx.clone()));
        for attempt in 0..3 {
            let (addr, err) = dial_errors
                .recv_timeout(STEP)
                .unwrap_or_else(|e| panic!("dial {attempt} was not reported: {e}"));
            assert_eq!(addr, closed);
            assert_eq!(err, ErrKind::Io(io::ErrorKind::ConnectionRefused));
        }
        // It gave up after three: the reactor is left with no entry.
        client.wait_until_empty("the client did not give up");
        client.stop();
        assert_eq!(events.count(|_| true), 0, "no session may open");
        assert!(dial_errors.try_recv().is_err(), "no dial after giving up");
    });
}

/// An echo endpoint: what comes in goes back to its sender, and reports to `tx`.
struct Echo(Sender<Ev>);

impl DatagramHandler<RawCodec> for Echo {
    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, from: SocketAddr) {
        let _ = self.0.send(Ev::Msg {
            sid: s.id(),
            msg: msg.clone(),
        });
        let _ = s.write_to(from, msg);
    }
}

/// Writes `hello` when it opens; reports like [`Recorder`].
struct Hello(Recorder);

impl DatagramHandler<RawCodec> for Hello {
    fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> io::Result<()> {
        self.0.on_open(s)?;
        s.write(&b"hello"[..]).map_err(io::Error::from)
    }
    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, from: SocketAddr) {
        self.0.on_message(s, msg, from)
    }
    fn on_close(&mut self, s: &mut DatagramSession<RawCodec>) {
        self.0.on_close(s)
    }
}

/// A getty-rs endpoint answers the probe: the client's dial opens without waiting out its
/// ten-minute probe wait, its first message is the echo of its own, and neither side's
/// handler sees the probe or the answer. Fails on the code before (the dial waited).
#[test]
fn a_getty_rs_endpoint_answers_the_probe_and_the_dial_opens_at_once() {
    watchdog(TEST_LIMIT, || {
        let (server_tx, mut server_events) = Events::new();
        let endpoint =
            getty::udp::UdpEndpoint::bind("127.0.0.1:0", move |_| Ok((RawCodec, Echo(server_tx))))
                .unwrap();
        let addr = endpoint.local_addr();
        let server = Running::serve("udp-dial-endpoint", endpoint);
        let (tx, mut events) = Events::new();
        let hello_tx = tx.clone();
        let builder = UdpClient::builder().probe_wait(NEVER);
        let (client, dial_errors) =
            client(addr, builder, move || Hello(Recorder(hello_tx.clone())));
        let sid = events.wait_open(addr);
        events.wait("the echo", |e| matches!(e, Ev::Msg { .. }));
        client.stop();
        server.stop();
        events.wait_close(sid);
        assert_eq!(messages(&mut events, sid), [&b"hello"[..]]);
        server_events.pump();
        let seen: Vec<_> = server_events
            .all
            .iter()
            .filter_map(|e| match e {
                Ev::Msg { msg, .. } => Some(msg.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(seen, [&b"hello"[..]]);
        assert!(dial_errors.try_recv().is_err());
    });
}

/// An answer that arrives after the dial opened on silence is dropped by the session, not
/// delivered. Fails on the code before (it was the first message).
#[test]
fn a_late_answer_is_not_a_message() {
    watchdog(TEST_LIMIT, || {
        let mut dial = Dial::start(UdpClient::builder().probe_wait(Duration::from_millis(1)));
        let sid = dial.wait_open();
        dial.send(ANSWER);
        dial.send(b"hi");
        dial.events
            .wait("a message", |e| matches!(e, Ev::Msg { .. }));
        assert_eq!(dial.stop(sid), [&b"hi"[..]]);
    });
}

/// Sends `ANSWER` to itself on any datagram; tells its counters on "stats".
struct SelfAnswering;

impl DatagramHandler<RawCodec> for SelfAnswering {
    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, peer: SocketAddr) {
        if &msg[..] == b"stats" {
            let st = s.stats();
            let text = format!("{} {}", st.probes_answered, st.refused_out);
            let _ = s.write_bytes_to(peer, Bytes::from(text));
        } else {
            let me = s.local_addr();
            s.write_bytes_to(me, Bytes::from_static(ANSWER)).unwrap();
        }
    }
}

/// Asks an endpoint for (probes answered, writes refused).
fn endpoint_stats(asker: &StdUdpSocket, at: SocketAddr) -> (u64, u64) {
    asker.send_to(b"stats", at).unwrap();
    let mut buf = [0u8; 64];
    let n = asker.recv(&mut buf).expect("the stats");
    let text = std::str::from_utf8(&buf[..n]).unwrap();
    let (answered, refused) = text.split_once(' ').unwrap();
    (answered.parse().unwrap(), refused.parse().unwrap())
}

/// An answer is never answered, even by an endpoint whose probe is set to the answer's
/// bytes: otherwise one datagram to itself (or between two such endpoints) would loop
/// for ever.
#[test]
fn an_answer_is_never_answered() {
    watchdog(TEST_LIMIT, || {
        let options =
            getty::udp::UdpOptions::default().drop_probe(Some(Bytes::from_static(ANSWER)));
        let endpoint = getty::udp::UdpEndpoint::builder()
            .udp_options(options)
            .bind("127.0.0.1:0", |_| Ok((RawCodec, SelfAnswering)))
            .unwrap();
        let at = endpoint.local_addr();
        let running = Running::serve("self-answering", endpoint);
        let asker = udp_socket();
        asker.send_to(b"kick", at).unwrap();
        // A barrier: the kick and the answer it sent itself have been handled.
        running.run_on(|_| ());
        running.run_on(|_| ());
        assert_eq!(endpoint_stats(&asker, at), (0, 0));
        running.stop();
    });
}

/// Probes a queue cannot take go unanswered without counting as the handler's refused
/// writes (`refused_out` is the application's figure).
#[test]
fn unanswered_probes_are_not_refused_writes() {
    watchdog(TEST_LIMIT, || {
        let endpoint = getty::udp::UdpEndpoint::builder()
            .session_options(getty::SessionOptions::default().max_outbound(80))
            .bind("127.0.0.1:0", |_| Ok((RawCodec, SelfAnswering)))
            .unwrap();
        let at = endpoint.local_addr();
        let running = Running::serve("probe-flooded", endpoint);
        let asker = udp_socket();
        for _ in 0..5 {
            asker.send_to(DEFAULT_PROBE, at).unwrap();
        }
        assert_eq!(endpoint_stats(&asker, at), (0, 0));
        running.stop();
    });
}
