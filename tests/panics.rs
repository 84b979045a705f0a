//! A panic in one handler ends that session alone (issue 12, item 2), over real loopback
//! sockets: the session's handler hears `on_error(Panicked)` and `on_close` (or nothing
//! more, for a panic in `on_open` or a second panic in `on_error`), its peer sees the
//! connection end, and every other session, the listener and other endpoints on the same
//! reactor carry on byte for byte. Every wait is bounded; nothing asserts on speed.

mod common;

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket as StdUdpSocket};
use std::panic::PanicHookInfo;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    connect, echo_roundtrip, expect_closed, frame, read_frame, read_to_end, watchdog, ErrKind, Ev,
    Events, Running, STEP,
};
use getty::codec::{Bytes, LengthFieldCodec, RawCodec};
use getty::tcp::TcpServer;
use getty::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
use getty::{Error, Handler, Session, SessionHandle, SessionOptions};

const LIMIT: Duration = Duration::from_secs(120);

/// The mark of the panics these tests cause on purpose (their messages are silenced).
const DELIBERATE: &str = "deliberate panic";

type Codec = LengthFieldCodec;

// ---------------------------------------------------------------------------------------
// A quiet panic hook
// ---------------------------------------------------------------------------------------

type Hook = Arc<Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>>;

/// Guards installed, and the hook that was there before the first.
static QUIET: Mutex<(usize, Option<Hook>)> = Mutex::new((0, None));

/// While alive, the panic hook stays silent about the deliberate panics (their message
/// holds [`DELIBERATE`]) and passes every other panic to the hook installed before; the
/// last guard to go puts that hook back.
struct QuietPanics;

impl QuietPanics {
    fn new() -> QuietPanics {
        let mut quiet = QUIET.lock().unwrap_or_else(|p| p.into_inner());
        if quiet.0 == 0 {
            let previous: Hook = Arc::new(std::panic::take_hook());
            quiet.1 = Some(previous.clone());
            std::panic::set_hook(Box::new(move |info| {
                let payload = info.payload();
                let message = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("");
                if !message.contains(DELIBERATE) {
                    previous(info);
                }
            }));
        }
        quiet.0 += 1;
        QuietPanics
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        let mut quiet = QUIET.lock().unwrap_or_else(|p| p.into_inner());
        quiet.0 -= 1;
        // The hook cannot change while this thread unwinds (a failing test): it stays,
        // passing every other panic on.
        if quiet.0 == 0 && !std::thread::panicking() {
            let _ = std::panic::take_hook();
            if let Some(previous) = quiet.1.take() {
                std::panic::set_hook(Box::new(move |info| previous(info)));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A TCP echo server whose handlers panic where they are told to
// ---------------------------------------------------------------------------------------

/// Where the next session's handler panics (the server hands these to one session).
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// In the setup hook, before there is a handler.
    setup: bool,
    /// In `on_open` (after reporting `Rejected`: it did not accept the session).
    open: bool,
    /// In `on_close`, after reporting it.
    close: bool,
    /// In `on_error` too, after reporting it.
    error: bool,
}

/// Echoes every message; panics in `on_message` on `PANIC`, and in the next `on_cron`
/// after `ARM`; panics elsewhere as its `Faults` say.
struct Fragile {
    tx: Sender<Ev>,
    faults: Faults,
    armed: bool,
}

impl Handler<Codec> for Fragile {
    fn on_open(&mut self, s: &mut Session<Codec>) -> std::io::Result<()> {
        let (sid, peer) = (s.id(), s.peer_addr());
        if self.faults.open {
            let _ = self.tx.send(Ev::Rejected { sid, peer });
            panic!("{DELIBERATE} in on_open");
        }
        let _ = self.tx.send(Ev::Open { sid, peer });
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<Codec>, msg: Bytes) {
        match &msg[..] {
            b"PANIC" => panic!("{DELIBERATE} in on_message"),
            b"ARM" => self.armed = true,
            _ => {}
        }
        if let Err(e) = s.write(msg) {
            let what = format!("echo failed: {e}");
            let _ = self.tx.send(Ev::Note { sid: s.id(), what });
        }
    }

    fn on_cron(&mut self, _: &mut Session<Codec>) {
        if self.armed {
            panic!("{DELIBERATE} in on_cron");
        }
    }

    fn on_error(&mut self, s: &mut Session<Codec>, error: &Error) {
        let err = common::classify(error);
        let _ = self.tx.send(Ev::Error { sid: s.id(), err });
        if self.faults.error {
            panic!("{DELIBERATE} in on_error");
        }
    }

    fn on_close(&mut self, s: &mut Session<Codec>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
        if self.faults.close {
            panic!("{DELIBERATE} in on_close");
        }
    }
}

/// A fragile echo server on its own reactor; `next` holds the faults of the next session.
struct Fixture {
    running: Running,
    addr: SocketAddr,
    next: Arc<Mutex<Faults>>,
    events: Events,
}

impl Fixture {
    fn start(options: SessionOptions) -> Fixture {
        let (tx, events) = Events::new();
        let next = Arc::new(Mutex::new(Faults::default()));
        let next_in = next.clone();
        let server = TcpServer::builder()
            .session_options(options)
            .bind("127.0.0.1:0", move |_| {
                let faults = std::mem::take(&mut *next_in.lock().unwrap());
                if faults.setup {
                    panic!("{DELIBERATE} in the setup hook");
                }
                let handler = Fragile {
                    tx: tx.clone(),
                    faults,
                    armed: false,
                };
                Ok((Codec::default(), handler))
            })
            .expect("bind the server");
        let addr = server.local_addr();
        Fixture {
            running: Running::serve("fragile", server),
            addr,
            next,
            events,
        }
    }

    /// Connects a peer whose session gets `faults`, and waits for its `on_open`.
    fn open(&mut self, faults: Faults) -> (TcpStream, u64) {
        *self.next.lock().unwrap() = faults;
        let peer = connect(self.addr);
        let sid = self.events.wait_open(peer.local_addr().unwrap());
        (peer, sid)
    }

    /// Panics caught on the server's reactor so far.
    fn panics(&self) -> u64 {
        self.running.run_on(|s| s.loop_metrics().panics)
    }
}

/// Sessions that must carry on: each echoes a small and a large message byte for byte,
/// then a pipelined burst.
fn keep_echoing(peers: &mut [TcpStream], round: u8) {
    for (i, peer) in peers.iter_mut().enumerate() {
        echo_roundtrip(peer, format!("still here {i}").as_bytes());
        let big: Vec<u8> = (0..200_000u32)
            .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8 ^ round))
            .collect();
        echo_roundtrip(peer, &big);
        let burst: Vec<Vec<u8>> = (0..20u8).map(|k| vec![k ^ round; 1 + k as usize]).collect();
        let wire: Vec<u8> = burst.iter().flat_map(|m| frame(m)).collect();
        peer.write_all(&wire).unwrap();
        for m in &burst {
            assert_eq!(&read_frame(peer), m, "a pipelined echo differs");
        }
    }
}

fn is_panicked(err: &ErrKind, callback: &str) -> bool {
    matches!(err, ErrKind::Other(text)
        if text.starts_with("a handler panicked") && text.contains(DELIBERATE)
            && text.contains(callback))
}

/// The peer sees its connection end (a FIN or a reset: the session was reset).
fn expect_ended(peer: &mut TcpStream) {
    let _ = read_to_end(peer);
}

/// Opens `n` sessions that echo.
fn open_bystanders(fx: &mut Fixture, n: usize) -> Vec<TcpStream> {
    let mut peers: Vec<TcpStream> = (0..n).map(|_| fx.open(Faults::default()).0).collect();
    keep_echoing(&mut peers, 0);
    peers
}

/// A late connection is still accepted and echoes.
fn listener_still_accepts(fx: &mut Fixture) {
    let (mut late, _) = fx.open(Faults::default());
    echo_roundtrip(&mut late, b"accepted after the panic");
}

#[test]
fn a_panic_in_on_message_ends_only_that_session() {
    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let mut fx = Fixture::start(SessionOptions::default());
        let mut bystanders = open_bystanders(&mut fx, 3);
        let (mut victim, sid) = fx.open(Faults::default());
        echo_roundtrip(&mut victim, b"fine so far");

        victim.write_all(&frame(b"PANIC")).unwrap();
        expect_ended(&mut victim);
        fx.events.wait_close(sid);
        let errors = fx.events.errors_of(sid);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(is_panicked(&errors[0], "on_message"), "{errors:?}");

        keep_echoing(&mut bystanders, 1);
        listener_still_accepts(&mut fx);
        assert_eq!(fx.panics(), 1);
        drop(bystanders);
        fx.running.stop();
        fx.events.check_contract();
    });
}

#[test]
fn a_panic_in_on_open_refuses_only_that_session() {
    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let mut fx = Fixture::start(SessionOptions::default());
        let mut bystanders = open_bystanders(&mut fx, 2);

        *fx.next.lock().unwrap() = Faults {
            open: true,
            ..Faults::default()
        };
        // The reset may come so fast that it is the connect itself that reports it.
        match common::try_connect(fx.addr) {
            Ok(mut victim) => expect_ended(&mut victim),
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        }
        let rejected = fx
            .events
            .wait("the refusal", |e| matches!(e, Ev::Rejected { .. }));

        keep_echoing(&mut bystanders, 1);
        listener_still_accepts(&mut fx);
        assert_eq!(fx.panics(), 1);
        // A panic in on_open is a refusal: no on_error, no on_close.
        assert_eq!(fx.events.of(rejected.sid()).len(), 1);
        drop(bystanders);
        fx.running.stop();
        fx.events.check_contract();
    });
}

#[test]
fn a_panic_in_on_cron_ends_only_that_session() {
    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let options = SessionOptions::default().cron_period(Some(Duration::from_millis(10)));
        let mut fx = Fixture::start(options);
        let mut bystanders = open_bystanders(&mut fx, 2);
        let (mut victim, sid) = fx.open(Faults::default());

        echo_roundtrip(&mut victim, b"ARM"); // the next cron tick panics
        expect_ended(&mut victim);
        fx.events.wait_close(sid);
        let errors = fx.events.errors_of(sid);
        assert!(
            errors.len() == 1 && is_panicked(&errors[0], "on_cron"),
            "{errors:?}"
        );

        keep_echoing(&mut bystanders, 1);
        listener_still_accepts(&mut fx);
        assert_eq!(fx.panics(), 1);
        drop(bystanders);
        fx.running.stop();
        fx.events.check_contract();
    });
}

#[test]
fn a_panic_in_on_close_is_contained() {
    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let mut fx = Fixture::start(SessionOptions::default());
        let mut bystanders = open_bystanders(&mut fx, 2);
        let (mut victim, sid) = fx.open(Faults {
            close: true,
            ..Faults::default()
        });
        echo_roundtrip(&mut victim, b"goodbye soon");

        victim.shutdown(Shutdown::Write).unwrap(); // a clean close: on_close panics
        let _ = expect_closed(&mut victim);
        fx.events.wait_close(sid);

        keep_echoing(&mut bystanders, 1);
        listener_still_accepts(&mut fx);
        assert_eq!(fx.panics(), 1);
        // on_close ran once, and nothing followed it.
        assert_eq!(fx.events.of(sid).len(), 2, "{:?}", fx.events.of(sid));
        drop(bystanders);
        fx.running.stop();
        fx.events.check_contract();
    });
}

#[test]
fn a_second_panic_in_on_error_drops_the_session_without_another_call() {
    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let mut fx = Fixture::start(SessionOptions::default());
        let mut bystanders = open_bystanders(&mut fx, 2);
        let (mut victim, sid) = fx.open(Faults {
            error: true,
            ..Faults::default()
        });

        victim.write_all(&frame(b"PANIC")).unwrap();
        expect_ended(&mut victim);
        keep_echoing(&mut bystanders, 1); // also a barrier: the reactor is past the panics
        listener_still_accepts(&mut fx);
        assert_eq!(fx.panics(), 2);
        let heard = fx.events.of(sid);
        assert_eq!(heard.len(), 2, "on_open and on_error only: {heard:?}");
        assert!(
            matches!(&heard[1], Ev::Error { err, .. } if is_panicked(err, "on_message")),
            "{heard:?}"
        );
        drop(bystanders);
        fx.running.stop();
        fx.events.all.retain(|e| e.sid() != sid);
        fx.events.check_contract();
    });
}

#[test]
fn a_panic_in_the_setup_hook_refuses_only_that_connection() {
    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let mut fx = Fixture::start(SessionOptions::default());
        let mut bystanders = open_bystanders(&mut fx, 2);

        *fx.next.lock().unwrap() = Faults {
            setup: true,
            ..Faults::default()
        };
        match common::try_connect(fx.addr) {
            Ok(mut victim) => expect_ended(&mut victim),
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        }

        keep_echoing(&mut bystanders, 1);
        listener_still_accepts(&mut fx);
        assert_eq!(fx.panics(), 1);
        drop(bystanders);
        fx.running.stop();
        fx.events.check_contract();
    });
}

// ---------------------------------------------------------------------------------------
// UDP endpoints
// ---------------------------------------------------------------------------------------

/// Echoes every datagram; panics on `PANIC`.
struct FragileDatagrams {
    tx: Sender<Ev>,
}

impl DatagramHandler<RawCodec> for FragileDatagrams {
    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, peer: SocketAddr) {
        if &msg[..] == b"PANIC" {
            panic!("{DELIBERATE} in a datagram on_message");
        }
        if let Err(e) = s.write_to(peer, msg) {
            let what = format!("echo failed: {e}");
            let _ = self.tx.send(Ev::Note { sid: s.id(), what });
        }
    }

    fn on_error(&mut self, s: &mut DatagramSession<RawCodec>, error: &Error) {
        let err = common::classify(error);
        let _ = self.tx.send(Ev::Error { sid: s.id(), err });
    }

    fn on_close(&mut self, s: &mut DatagramSession<RawCodec>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

fn udp_peer(to: SocketAddr) -> StdUdpSocket {
    let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(STEP)).unwrap();
    socket.connect(to).unwrap();
    socket
}

fn udp_echo(socket: &StdUdpSocket, payload: &[u8]) {
    socket.send(payload).unwrap();
    let mut buf = vec![0u8; 65_536];
    let n = socket.recv(&mut buf).expect("an echo");
    assert_eq!(&buf[..n], payload, "the echo differs");
}

#[test]
fn a_panic_in_a_udp_handler_ends_only_that_endpoint() {
    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let (tx, mut events) = Events::new();
        let endpoint = |tx: &Sender<Ev>| {
            let tx = tx.clone();
            UdpEndpoint::bind("127.0.0.1:0", move |_| {
                Ok((RawCodec, FragileDatagrams { tx }))
            })
            .expect("bind an endpoint")
        };
        let fragile = endpoint(&tx);
        let sturdy = endpoint(&tx);
        let (fragile_addr, sturdy_addr) = (fragile.local_addr(), sturdy.local_addr());
        let running = Running::serve("udp-fragile", fragile);
        running.run_on(move |s| {
            s.spawn(sturdy);
        });
        let to_fragile = udp_peer(fragile_addr);
        let to_sturdy = udp_peer(sturdy_addr);
        udp_echo(&to_fragile, b"ping");
        udp_echo(&to_sturdy, b"ping");

        to_fragile.send(b"PANIC").unwrap();
        let error = events.wait("the endpoint's on_error", |e| matches!(e, Ev::Error { .. }));
        let sid = error.sid();
        events.wait_close(sid);
        assert!(
            matches!(&error, Ev::Error { err, .. } if is_panicked(err, "datagram on_message")),
            "{error:?}"
        );
        // Its socket is closed: a datagram to it is refused (ICMP port unreachable).
        let mut refused = false;
        to_fragile
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        for _ in 0..100 {
            let mut buf = [0u8; 64];
            let result = to_fragile
                .send(b"anyone?")
                .and_then(|_| to_fragile.recv(&mut buf));
            match result {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    refused = true;
                    break;
                }
                Ok(_) => panic!("the endpoint answered after it panicked"),
                Err(_) => {}
            }
        }
        assert!(
            refused,
            "the panicked endpoint's port still takes datagrams"
        );

        // The other endpoint on the same reactor carries on.
        for i in 0..20u8 {
            udp_echo(&to_sturdy, &vec![i; 1 + 50 * i as usize]);
        }
        assert_eq!(running.run_on(|s| s.loop_metrics().panics), 1);
        assert_eq!(running.entry_count(), 1);
        running.stop();
        assert_eq!(events.of(sid).len(), 2, "on_error, then on_close");
    });
}

// ---------------------------------------------------------------------------------------
// Timeouts too long for an Instant (issue 12, item 11)
// ---------------------------------------------------------------------------------------

/// Hands every session's handle to the test thread.
struct Publish(Sender<SessionHandle<Codec>>);

impl Handler<Codec> for Publish {
    fn on_open(&mut self, s: &mut Session<Codec>) -> std::io::Result<()> {
        let _ = self.0.send(s.handle().expect("inside a callback"));
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<Codec>, _: Bytes) {}
}

/// `wait_writable(Duration::MAX)` means "as long as it takes": it used to overflow the
/// deadline and panic the caller.
#[test]
fn wait_writable_for_duration_max_does_not_panic() {
    watchdog(LIMIT, || {
        let (tx, handles) = std::sync::mpsc::channel();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((Codec::default(), Publish(tx.clone())))
        })
        .expect("bind the server");
        let addr = server.local_addr();
        let running = Running::serve("wait-writable", server);
        let mut peer = connect(addr);
        let handle = handles.recv_timeout(STEP).expect("the session opened");
        assert!(
            handle.wait_writable(Duration::MAX).is_ok(),
            "writable at once"
        );

        peer.shutdown(Shutdown::Write).unwrap();
        let _ = read_to_end(&mut peer);
        let deadline = std::time::Instant::now() + STEP;
        while !handle.is_closed() {
            assert!(
                std::time::Instant::now() < deadline,
                "the session never closed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(matches!(
            handle.wait_writable(Duration::MAX),
            Err(Error::Closed)
        ));
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// A setup hook that panics the first time it is called, then makes a silent session.
fn panics_once<T>(make: impl Fn() -> T) -> impl FnMut() -> T {
    let mut calls = 0;
    move || {
        calls += 1;
        if calls == 1 {
            panic!("{DELIBERATE} in a client's setup hook");
        }
        make()
    }
}

/// A client's setup hook that panics costs one dial: the client redials and opens the
/// next session; the reactor is untouched.
#[test]
fn a_panic_in_a_clients_setup_hook_costs_one_dial() {
    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (tx, mut events) = Events::new();
        let mut make = panics_once(move || common::Probe::silent(&tx));
        let client = getty::tcp::TcpClient::builder()
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
            .build(listener.local_addr().unwrap(), move |_| {
                Ok((RawCodec, make()))
            })
            .unwrap();
        let running = Running::serve("fragile-tcp-client", client);
        let (first, _) = listener.accept().unwrap();
        let (second, _) = listener.accept().unwrap();
        events.wait_open(listener.local_addr().unwrap());
        assert_eq!(running.run_on(|s| s.loop_metrics().panics), 1);
        assert_eq!(running.entry_count(), 2, "the client and its session");
        drop((first, second));
        running.stop();
    });
}

/// The same for a UDP client.
#[test]
fn a_panic_in_a_udp_clients_setup_hook_costs_one_dial() {
    /// Reports its `on_open` and any error.
    struct Opens(Sender<String>);
    impl DatagramHandler<RawCodec> for Opens {
        fn on_open(&mut self, _: &mut DatagramSession<RawCodec>) -> std::io::Result<()> {
            let _ = self.0.send("open".into());
            Ok(())
        }
        fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: Bytes, _: SocketAddr) {}
        fn on_error(&mut self, _: &mut DatagramSession<RawCodec>, error: &Error) {
            let _ = self.0.send(format!("error: {error}"));
        }
    }

    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let peer = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut make = panics_once(move || Opens(tx.clone()));
        let client = getty::udp::UdpClient::builder()
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
            .build(peer.local_addr().unwrap(), move |_| Ok((RawCodec, make())))
            .unwrap();
        let running = Running::serve("fragile-udp-client", client);
        assert_eq!(rx.recv_timeout(STEP).as_deref(), Ok("open"));
        assert_eq!(running.run_on(|s| s.loop_metrics().panics), 1);
        assert!(rx.try_recv().is_err(), "the session heard nothing more");
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// Around a session's end: panicking destructors, `on_close`, a graceful close
// ---------------------------------------------------------------------------------------

/// The owner of a message's bytes whose destructor panics (a user's message type might).
struct Bomb;

impl AsRef<[u8]> for Bomb {
    fn as_ref(&self) -> &[u8] {
        b"bomb"
    }
}

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("{DELIBERATE} in the destructor of a message");
    }
}

/// Echoes; on `BOMB`, writes a message whose destructor panics through a handle (it goes
/// through the reactor's queue) and aborts the session before the queue is drained.
struct Bomber;

impl Handler<Codec> for Bomber {
    fn on_message(&mut self, s: &mut Session<Codec>, msg: Bytes) {
        if &msg[..] == b"BOMB" {
            let handle = s.handle().expect("inside a callback");
            let _ = handle.write(Bytes::from_owner(Bomb));
            s.abort();
        } else {
            let _ = s.write(msg);
        }
    }
}

/// A message for a session that ended before it was delivered is dropped by the reactor;
/// a panic in its destructor used to unwind out of the loop and end every session on it.
#[test]
fn a_message_whose_destructor_panics_does_not_end_the_reactor() {
    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let server = TcpServer::bind("127.0.0.1:0", |_| Ok((Codec::default(), Bomber)))
            .expect("bind the server");
        let addr = server.local_addr();
        let running = Running::serve("bomber", server);
        let mut bystander = connect(addr);
        echo_roundtrip(&mut bystander, b"before");

        let mut victim = connect(addr);
        victim.write_all(&frame(b"BOMB")).unwrap();
        expect_ended(&mut victim);
        let deadline = std::time::Instant::now() + STEP;
        while running.run_on(|s| s.loop_metrics().panics) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the message was never dropped"
            );
            std::thread::sleep(Duration::from_millis(2));
        }

        echo_roundtrip(&mut bystander, b"after");
        let mut late = connect(addr);
        echo_roundtrip(&mut late, b"accepted after the panic");
        assert_eq!(running.run_on(|s| s.loop_metrics().panics), 1);
        drop((bystander, late));
        running.stop();
    });
}

/// Hands its handle to the test and tells its errors and its close.
struct PublishAndTell(Sender<SessionHandle<Codec>>, Sender<String>);

impl Handler<Codec> for PublishAndTell {
    fn on_open(&mut self, s: &mut Session<Codec>) -> std::io::Result<()> {
        let _ = self.0.send(s.handle().expect("inside a callback"));
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<Codec>, _: Bytes) {}
    fn on_error(&mut self, _: &mut Session<Codec>, error: &Error) {
        let _ = self.1.send(format!("error {error}"));
    }
    fn on_close(&mut self, _: &mut Session<Codec>) {
        let _ = self.1.send("close".into());
    }
}

/// A session whose peer does not read, with `bombs` messages whose destructors panic held
/// behind its high watermark: its handle wrote 256 KiB, then them, while the reactor was
/// busy, so all were accepted and reached it at once. Returns the server, the peer, the
/// handle and the handler's events.
fn session_holding_bombs(
    bombs: usize,
) -> (
    Running,
    TcpStream,
    SessionHandle<Codec>,
    std::sync::mpsc::Receiver<String>,
) {
    let (handles_tx, handles) = std::sync::mpsc::channel();
    let (tx, events) = std::sync::mpsc::channel();
    // A small send buffer, so that the kernel takes little of what is queued.
    let sockets = getty::SocketOptions::default().send_buffer_size(Some(8 * 1024));
    let server = TcpServer::builder()
        .socket_options(sockets)
        .bind("127.0.0.1:0", move |_| {
            Ok((
                Codec::default(),
                PublishAndTell(handles_tx.clone(), tx.clone()),
            ))
        })
        .expect("bind the server");
    let addr = server.local_addr();
    let running = Running::serve("held-bombs", server);
    let peer = common::connect_with_recv_buffer(addr, 16 * 1024);
    let handle = handles.recv_timeout(STEP).unwrap();
    running.while_busy(|| {
        for _ in 0..8 {
            handle.write(Bytes::from(vec![b'x'; 32 * 1024])).unwrap();
        }
        for _ in 0..bombs {
            handle.write(Bytes::from_owner(Bomb)).unwrap();
        }
    });
    running.run_on(|_| ());
    assert!(!handle.is_writable(), "the bombs are held");
    assert_eq!(running.run_on(|s| s.loop_metrics().panics), 0);
    (running, peer, handle, events)
}

/// A handle write held behind the high watermark when its session ends is dropped with
/// it; a panic in that drop used to cut the end short, before `on_close` and before a
/// client heard of it (so it never redialled). Now it is reported, and the end goes on.
#[test]
fn a_held_message_whose_destructor_panics_does_not_cut_the_sessions_end_short() {
    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let (running, peer, handle, events) = session_holding_bombs(1);
        common::set_linger_zero(&peer);
        drop(peer);
        let mut told = vec![events.recv_timeout(STEP).unwrap()];
        if told[0].starts_with("error") {
            // The reset, if the session saw it as one.
            told.push(events.recv_timeout(STEP).unwrap());
        }
        assert_eq!(told.last().map(String::as_str), Some("close"), "{told:?}");
        assert_eq!(running.run_on(|s| s.loop_metrics().panics), 1);
        assert!(handle.is_closed());
        running.stop();
    });
}

/// A handle's abort discards the writes held behind the high watermark. They were
/// dropped all at once, outside any guard: one destructor that panicked was reported to
/// the session as its handler's panic, and two aborted the process (a panic while
/// unwinding, review s35-d). Each is now dropped under guard: reported, counted, and the
/// abort goes on, with no error told to the handler.
#[test]
fn held_messages_whose_destructors_panic_do_not_upset_a_handles_abort() {
    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let (running, _peer, handle, events) = session_holding_bombs(2);
        handle.abort().unwrap();
        assert_eq!(
            events.recv_timeout(STEP).unwrap(),
            "close",
            "no error, then on_close"
        );
        assert_eq!(running.run_on(|s| s.loop_metrics().panics), 2);
        running.stop();
    });
}

/// Hands its handle to the test and reports `on_open`/`on_close`; the first session's
/// `on_close` panics.
struct PanicsOnFirstClose {
    tx: Sender<Ev>,
    handles: Sender<SessionHandle<Codec>>,
    first: bool,
}

impl Handler<Codec> for PanicsOnFirstClose {
    fn on_open(&mut self, s: &mut Session<Codec>) -> std::io::Result<()> {
        let _ = self.handles.send(s.handle().expect("inside a callback"));
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<Codec>, _: Bytes) {}
    fn on_close(&mut self, s: &mut Session<Codec>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
        if self.first {
            panic!("{DELIBERATE} in on_close");
        }
    }
}

/// Accepts one connection within `STEP`.
fn accept_within(listener: &std::net::TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + STEP;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(std::time::Instant::now() < deadline, "no connection came");
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// A panic in a client session's `on_close` still ends the session for everyone else:
/// its handles refuse writes, the client hears of it and redials, the metrics count it.
/// The framework's side of the end used to come after `on_close`, so the panic skipped
/// it: the client never redialled, and writes through the handle were taken and lost.
#[test]
fn a_panic_in_on_close_still_ends_the_session_for_its_client() {
    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (tx, mut events) = Events::new();
        let (handles_tx, handles) = std::sync::mpsc::channel();
        let mut sessions = 0;
        let client = getty::tcp::TcpClient::builder()
            .connection_number(1)
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
            .build(listener.local_addr().unwrap(), move |_| {
                sessions += 1;
                let handler = PanicsOnFirstClose {
                    tx: tx.clone(),
                    handles: handles_tx.clone(),
                    first: sessions == 1,
                };
                Ok((Codec::default(), handler))
            })
            .unwrap();
        let running = Running::serve("client-close-panic", client);
        let first_peer = accept_within(&listener);
        let first = handles
            .recv_timeout(STEP)
            .expect("the first session opened");
        drop(first_peer); // the peer closes: the session ends, and its on_close panics

        let second_peer = accept_within(&listener); // the client redialled
        let second = handles
            .recv_timeout(STEP)
            .expect("the second session opened");
        assert!(first.is_closed());
        assert!(matches!(
            first.write(Bytes::from_static(b"x")),
            Err(Error::Closed)
        ));
        assert!(matches!(
            first.wait_writable(Duration::from_secs(1)),
            Err(Error::Closed)
        ));
        assert!(!second.is_closed());
        let m = getty::Metrics::of(running.handle()).unwrap();
        assert_eq!((m.sessions_opened, m.sessions_closed), (2, 1), "{m:?}");
        assert_eq!(m.reactor.panics, 1);
        events.pump();
        let closes = events.count(|e| matches!(e, Ev::Close { .. }));
        assert_eq!(closes, 1, "{:?}", events.all);
        drop(second_peer);
        running.stop();
    });
}

/// Closes its socket on `CLOSE` (and on_close panics).
struct DatagramPanicsOnClose {
    tx: Sender<Ev>,
}

impl DatagramHandler<RawCodec> for DatagramPanicsOnClose {
    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, _: SocketAddr) {
        if &msg[..] == b"CLOSE" {
            s.close();
        }
    }
    fn on_error(&mut self, s: &mut DatagramSession<RawCodec>, error: &Error) {
        let err = common::classify(error);
        let _ = self.tx.send(Ev::Error { sid: s.id(), err });
    }
    fn on_close(&mut self, s: &mut DatagramSession<RawCodec>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
        panic!("{DELIBERATE} in a datagram on_close");
    }
}

/// A datagram `on_close` that panics ran twice, with `on_error` in between: the endpoint
/// was still open while the handler heard it. Now it runs once, and nothing follows.
#[test]
fn a_panic_in_a_datagram_on_close_is_heard_once() {
    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let (tx, mut events) = Events::new();
        let endpoint = UdpEndpoint::bind("127.0.0.1:0", move |_| {
            Ok((RawCodec, DatagramPanicsOnClose { tx: tx.clone() }))
        })
        .expect("bind an endpoint");
        let addr = endpoint.local_addr();
        let running = Running::serve("udp-close-panic", endpoint);
        udp_peer(addr).send(b"CLOSE").unwrap();
        let sid = events
            .wait("on_close", |e| matches!(e, Ev::Close { .. }))
            .sid();
        // The query runs after the call that closed the endpoint (and its on_panic).
        assert_eq!(running.run_on(|s| s.loop_metrics().panics), 1);
        assert_eq!(running.entry_count(), 0);
        let m = getty::Metrics::of(running.handle()).unwrap();
        assert_eq!((m.sessions_opened, m.sessions_closed), (1, 1), "{m:?}");
        events.pump();
        assert_eq!(
            events.of(sid),
            vec![Ev::Close { sid }],
            "on_close once, alone"
        );
        running.stop();
    });
}

/// Replies with 900,000 bytes and closes gracefully; its `on_close` panics.
struct ReplyAndClose;

impl Handler<Codec> for ReplyAndClose {
    fn on_message(&mut self, s: &mut Session<Codec>, _: Bytes) {
        let _ = s.write(Bytes::from(vec![7u8; 900_000]));
        s.close();
    }
    fn on_close(&mut self, _: &mut Session<Codec>) {
        panic!("{DELIBERATE} in on_close");
    }
}

/// A panic in `on_close` after a graceful close used to reset the connection, and the
/// reset threw away the reply the kernel still held for a slow peer. Once the write side
/// is shut down nothing is half-written: the socket closes normally, and the peer gets
/// the whole reply, then EOF.
#[test]
fn a_panic_in_on_close_after_a_graceful_close_keeps_the_flushed_reply() {
    watchdog(LIMIT, || {
        let _quiet = QuietPanics::new();
        let server = TcpServer::bind("127.0.0.1:0", |_| Ok((Codec::default(), ReplyAndClose)))
            .expect("bind the server");
        let addr = server.local_addr();
        let running = Running::serve("close-panic-reply", server);
        // A small receive buffer: most of the reply waits in the server's kernel.
        let mut peer = common::connect_with_recv_buffer(addr, 32 * 1024);
        peer.write_all(&frame(b"?")).unwrap();
        std::thread::sleep(Duration::from_millis(300)); // a slow reader
        let (got, ended) = read_to_end(&mut peer);
        assert_eq!(got.len(), 900_004, "the whole reply");
        assert_eq!(&got[..4], &900_000u32.to_be_bytes());
        assert!(got[4..].iter().all(|&b| b == 7));
        assert_eq!(ended, common::Ended::Eof, "a clean end, not a reset");
        assert_eq!(running.run_on(|s| s.loop_metrics().panics), 1);
        running.stop();
    });
}
