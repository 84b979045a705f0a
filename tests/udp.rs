//! Integration tests of UDP: unconnected endpoints, connected clients with a verified dial,
//! and the one-datagram-one-message rule, over loopback with real sockets.
//!
//! Every port is ephemeral, every wait is bounded (socket timeouts, `recv_timeout`, a
//! watchdog per test), and no test asserts on timing.

mod common;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, CodecErrorKind, Decoder, Encoder, LengthFieldCodec, RawCodec};
use getty::udp::{
    DatagramHandler, DatagramSession, DatagramStats, UdpClient, UdpEndpoint, UdpOptions,
    DEFAULT_PROBE,
};
use getty::{Error, SessionOptions};

/// Most tests finish in well under a second; this only catches hangs.
const TEST_LIMIT: Duration = Duration::from_secs(90);

/// The latest stats of every session a [`Recorder`] saw, by session id.
type StatsBoard = Arc<Mutex<HashMap<u64, DatagramStats>>>;

/// A datagram handler that reports every callback (and its session's stats); it echoes
/// messages to their sender when `echo` is set.
struct Recorder {
    tx: Sender<Ev>,
    echo: bool,
    stats: StatsBoard,
    /// Send this to the connected peer on every cron tick.
    ping: Option<&'static [u8]>,
    cron: Option<Duration>,
}

impl Recorder {
    fn new(tx: &Sender<Ev>, echo: bool, stats: &StatsBoard) -> Recorder {
        Recorder {
            tx: tx.clone(),
            echo,
            stats: stats.clone(),
            ping: None,
            cron: None,
        }
    }

    fn pinging(mut self, every: Duration, ping: &'static [u8]) -> Recorder {
        self.cron = Some(every);
        self.ping = Some(ping);
        self
    }

    fn note<C>(&self, s: &DatagramSession<C>) {
        self.stats.lock().unwrap().insert(s.id(), s.stats());
    }
}

impl<C> DatagramHandler<C> for Recorder
where
    C: Decoder<Item = Bytes> + Encoder<Bytes> + 'static,
{
    fn on_open(&mut self, s: &mut DatagramSession<C>) -> io::Result<()> {
        if self.cron.is_some() {
            s.set_cron_period(self.cron);
        }
        self.note(s);
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.local_addr(),
        });
        Ok(())
    }

    fn on_message(&mut self, s: &mut DatagramSession<C>, msg: Bytes, peer: SocketAddr) {
        self.note(s);
        let _ = self.tx.send(Ev::Msg {
            sid: s.id(),
            msg: msg.clone(),
        });
        if self.echo {
            if let Err(e) = s.write_to(peer, msg) {
                let _ = self.tx.send(Ev::Note {
                    sid: s.id(),
                    what: format!("echo failed: {e}"),
                });
            }
        }
    }

    fn on_cron(&mut self, s: &mut DatagramSession<C>) {
        self.note(s);
        if let Some(ping) = self.ping {
            let _ = s.write(Bytes::from_static(ping));
        }
    }

    fn on_writability_changed(&mut self, s: &mut DatagramSession<C>, writable: bool) {
        let _ = self.tx.send(Ev::Writable {
            sid: s.id(),
            writable,
        });
    }

    fn on_error(&mut self, s: &mut DatagramSession<C>, error: &Error) {
        self.note(s);
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }

    fn on_close(&mut self, s: &mut DatagramSession<C>) {
        self.note(s);
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

/// The datagram handler contract for every session seen: `on_open` first, `on_close`
/// exactly once and last. (`on_error` may come any number of times: a dropped datagram or
/// an ICMP error does not end a datagram session.) Call it once the reactors have stopped.
fn check_datagram_contract(events: &mut Events) {
    events.pump();
    let mut by_sid: HashMap<u64, Vec<&Ev>> = HashMap::new();
    for ev in &events.all {
        by_sid.entry(ev.sid()).or_default().push(ev);
    }
    for (sid, evs) in by_sid {
        assert!(
            matches!(evs[0], Ev::Open { .. }),
            "session {sid}: first event is not on_open: {evs:?}"
        );
        let opens = evs.iter().filter(|e| matches!(e, Ev::Open { .. })).count();
        assert_eq!(opens, 1, "session {sid}: on_open {opens} times");
        let closes = evs.iter().filter(|e| matches!(e, Ev::Close { .. })).count();
        assert_eq!(closes, 1, "session {sid}: on_close {closes} times: {evs:?}");
        assert!(
            matches!(evs.last(), Some(Ev::Close { .. })),
            "session {sid}: on_close is not the last event"
        );
    }
}

fn stats_of(board: &StatsBoard, sid: u64) -> DatagramStats {
    *board
        .lock()
        .unwrap()
        .get(&sid)
        .unwrap_or_else(|| panic!("no stats for session {sid}"))
}

/// An echo endpoint on loopback whose handler reports to `tx`.
fn echo_endpoint(
    udp: UdpOptions,
    options: SessionOptions,
    tx: &Sender<Ev>,
    board: &StatsBoard,
) -> (Running, SocketAddr) {
    let (tx, board) = (tx.clone(), board.clone());
    let endpoint = UdpEndpoint::builder()
        .udp_options(udp)
        .session_options(options)
        .bind("127.0.0.1:0", move |_| {
            Ok((RawCodec, Recorder::new(&tx, true, &board)))
        })
        .expect("bind the echo endpoint");
    let addr = endpoint.local_addr();
    (Running::serve("udp-echo", endpoint), addr)
}

/// A blocking std socket on loopback with a read timeout.
fn peer_socket() -> StdUdpSocket {
    let socket = StdUdpSocket::bind("127.0.0.1:0").expect("bind a peer");
    socket.set_read_timeout(Some(STEP)).unwrap();
    socket
}

fn recv_datagram(socket: &StdUdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65_536];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no datagram arrived: {e}"));
    buf.truncate(n);
    buf
}

/// A loopback port with nobody listening on it (it was free a moment ago).
fn closed_port() -> SocketAddr {
    let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn length_frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

// ---------------------------------------------------------------------------------------
// 1. Echo of 10,000 datagrams of random sizes, for both client kinds
// ---------------------------------------------------------------------------------------

const ECHO_DATAGRAMS: usize = 10_000;
const ECHO_MAX: usize = 60 * 1024;
/// Datagrams in flight per client: a few of the largest fit the kernel's default receive
/// buffer, so that the kernel has no reason to drop any.
const ECHO_WINDOW: usize = 4;
/// Without an echo for this long, the client sends what is in flight again (a datagram the
/// kernel dropped is not the endpoint's fault, and must not hang the test).
const RESEND_AFTER: Duration = Duration::from_millis(500);

/// What an echo client found.
#[derive(Debug)]
struct EchoReport {
    verified: usize,
    errors: Vec<String>,
    mismatches: usize,
    duplicates: usize,
    resent: usize,
    client_stats: DatagramStats,
}

/// Sends `total` datagrams of log-uniform random sizes (the first 1 B, the second
/// [`ECHO_MAX`]) with a window in flight, and checks every echo byte for byte. Loopback
/// keeps datagrams in order, so an echo that matches a later datagram in flight means the
/// earlier ones were lost: they are sent again (and counted).
struct EchoClient {
    to: Option<SocketAddr>,
    total: usize,
    window: usize,
    next: usize,
    in_flight: VecDeque<Bytes>,
    recent: VecDeque<Bytes>,
    verified: usize,
    mismatches: usize,
    duplicates: usize,
    resent: usize,
    errors: Vec<String>,
    last_progress: Instant,
    done: Option<Sender<EchoReport>>,
}

impl EchoClient {
    fn new(to: Option<SocketAddr>, total: usize, done: Sender<EchoReport>) -> EchoClient {
        EchoClient {
            to,
            total,
            window: ECHO_WINDOW,
            next: 0,
            in_flight: VecDeque::new(),
            recent: VecDeque::new(),
            verified: 0,
            mismatches: 0,
            duplicates: 0,
            resent: 0,
            errors: Vec::new(),
            last_progress: Instant::now(),
            done: Some(done),
        }
    }

    fn payload(seq: usize) -> Bytes {
        let mut rng = fastrand::Rng::with_seed(0x7564_7030 + seq as u64);
        let len = match seq {
            0 => 1,
            1 => ECHO_MAX,
            _ => ((ECHO_MAX as f64).powf(rng.f64()) as usize).clamp(1, ECHO_MAX),
        };
        let mut v = vec![0u8; len];
        rng.fill(&mut v);
        Bytes::from(v)
    }

    fn send(&self, s: &mut DatagramSession<RawCodec>, payload: Bytes) {
        let result = match self.to {
            Some(to) => s.write_to(to, payload),
            None => s.write(payload),
        };
        result.expect("the client's queue has room for its window");
    }

    fn fill(&mut self, s: &mut DatagramSession<RawCodec>) {
        while self.in_flight.len() < self.window && self.next < self.total {
            let payload = Self::payload(self.next);
            self.next += 1;
            self.send(s, payload.clone());
            self.in_flight.push_back(payload);
        }
    }

    /// Reports; the test then stops the client's reactor (closing the session here would
    /// make a `UdpClient` redial).
    fn finish(&mut self, s: &mut DatagramSession<RawCodec>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(EchoReport {
                verified: self.verified,
                errors: std::mem::take(&mut self.errors),
                mismatches: self.mismatches,
                duplicates: self.duplicates,
                resent: self.resent,
                client_stats: s.stats(),
            });
        }
    }
}

impl DatagramHandler<RawCodec> for EchoClient {
    fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> io::Result<()> {
        s.set_cron_period(Some(Duration::from_millis(100)));
        self.fill(s);
        Ok(())
    }

    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, echo: Bytes, _: SocketAddr) {
        match self.in_flight.iter().position(|p| *p == echo) {
            Some(lost_before) => {
                // Everything sent before the echoed datagram was lost on the way.
                for _ in 0..lost_before {
                    let lost = self.in_flight.pop_front().expect("counted");
                    self.resent += 1;
                    self.send(s, lost.clone());
                    self.in_flight.push_back(lost);
                }
                let echoed = self.in_flight.pop_front().expect("found");
                self.verified += 1;
                self.recent.push_back(echoed);
                if self.recent.len() > 64 {
                    self.recent.pop_front();
                }
                self.last_progress = Instant::now();
            }
            None if self.recent.contains(&echo) => self.duplicates += 1,
            None => self.mismatches += 1,
        }
        if self.done.is_none() {
            return;
        }
        if self.verified == self.total || self.mismatches > 0 || !self.errors.is_empty() {
            self.finish(s);
        } else {
            self.fill(s);
        }
    }

    fn on_cron(&mut self, s: &mut DatagramSession<RawCodec>) {
        if self.done.is_some()
            && !self.in_flight.is_empty()
            && self.last_progress.elapsed() >= RESEND_AFTER
        {
            for payload in self.in_flight.clone() {
                self.resent += 1;
                self.send(s, payload);
            }
            self.last_progress = Instant::now();
        }
    }

    fn on_error(&mut self, _: &mut DatagramSession<RawCodec>, error: &Error) {
        self.errors.push(error.to_string());
    }
}

fn big_buffers() -> UdpOptions {
    UdpOptions::default()
        .recv_buffer_size(Some(4 << 20))
        .send_buffer_size(Some(4 << 20))
}

/// Runs the echo of `total` datagrams with the given client kind and checks everything.
fn echo_test(connected: bool, total: usize, udp: UdpOptions) {
    let (tx, mut events) = Events::new();
    let board = StatsBoard::default();
    let (server, addr) = echo_endpoint(udp.clone(), SessionOptions::default(), &tx, &board);
    let server_sid = events.wait("the endpoint's on_open", |e| matches!(e, Ev::Open { .. }));
    let server_sid = server_sid.sid();

    let (done_tx, done_rx) = mpsc::channel();
    let client = if connected {
        let client = UdpClient::builder()
            .probe_wait(Duration::from_millis(50))
            .udp_options(udp)
            .build(addr, move |_| {
                Ok((RawCodec, EchoClient::new(None, total, done_tx.clone())))
            })
            .expect("build the client");
        Running::serve("udp-client", client)
    } else {
        let endpoint = UdpEndpoint::builder()
            .udp_options(udp)
            .bind("127.0.0.1:0", move |_| {
                Ok((RawCodec, EchoClient::new(Some(addr), total, done_tx)))
            })
            .expect("bind the client endpoint");
        Running::serve("udp-client", endpoint)
    };
    let report = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the echo client finished");
    client.stop();
    server.stop();

    println!("echo (connected: {connected}): {report:?}");
    let _ = report.duplicates; // loopback may deliver a resent datagram twice: harmless
    assert_eq!(report.errors, Vec::<String>::new());
    assert_eq!(report.mismatches, 0, "an echo differed from what was sent");
    assert_eq!(report.verified, total);
    assert_eq!(report.client_stats.dropped_in, 0);
    assert_eq!(report.client_stats.dropped_out, 0);
    // Datagrams lost in the kernel are sent again, but the endpoint must not lose any: it
    // echoed everything it received, and every datagram it accepted went out.
    let server = stats_of(&board, server_sid);
    assert_eq!(server.dropped_in, 0, "{server:?}");
    assert_eq!(server.dropped_out, 0, "{server:?}");
    assert_eq!(server.probes_dropped, u64::from(connected), "{server:?}");
    assert_eq!(server.probes_answered, server.probes_dropped, "{server:?}");
    assert_eq!(
        server.datagrams_out - server.probes_answered,
        server.datagrams_in - server.probes_dropped,
        "the endpoint did not echo every datagram it received: {server:?}"
    );
    assert_eq!(server.messages_in, server.messages_out);
    assert!(
        report.resent <= total / 100,
        "{} datagrams had to be sent again: far more than loopback should lose",
        report.resent
    );
    check_datagram_contract(&mut events);
}

#[test]
fn echo_10000_random_datagrams_with_an_unconnected_client() {
    watchdog(TEST_LIMIT, || {
        echo_test(false, ECHO_DATAGRAMS, big_buffers())
    });
}

#[test]
fn echo_10000_random_datagrams_with_a_connected_client() {
    watchdog(TEST_LIMIT, || {
        echo_test(true, ECHO_DATAGRAMS, big_buffers())
    });
}

#[test]
fn echo_one_datagram_per_syscall_when_batching_is_off() {
    watchdog(TEST_LIMIT, || {
        echo_test(false, 2_000, big_buffers().batch_size(1));
        echo_test(true, 2_000, big_buffers().batch_size(1));
    });
}

// ---------------------------------------------------------------------------------------
// 2. The verified dial
// ---------------------------------------------------------------------------------------

/// A client whose setup hook reports opens to `tx` and whose dial errors go to `errors`.
fn dialling_client(
    addr: SocketAddr,
    builder: getty::udp::UdpClientBuilder,
    tx: &Sender<Ev>,
    board: &StatsBoard,
    errors: Sender<(SocketAddr, ErrKind)>,
) -> Running {
    let (tx, board) = (tx.clone(), board.clone());
    let client = builder
        .build(addr, move |_| {
            Ok((RawCodec, Recorder::new(&tx, false, &board)))
        })
        .expect("build the client")
        .on_dial_error(move |addr, error| {
            let _ = errors.send((addr, classify(error)));
        });
    Running::serve("udp-dialler", client)
}

/// Waits until the reactor has no entry left (the client gave up).
fn wait_until_empty(running: &Running) {
    let deadline = Instant::now() + STEP;
    while running.entry_count() > 0 {
        assert!(Instant::now() < deadline, "the client did not end");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn dialling_a_port_with_no_listener_fails_with_connection_refused() {
    watchdog(TEST_LIMIT, || {
        let (tx, mut events) = Events::new();
        let board = StatsBoard::default();
        let (err_tx, err_rx) = mpsc::channel();
        let addr = closed_port();
        // The wait is far longer than the test may take: the failure must come from the
        // ICMP error, not from the wait running out.
        let builder = UdpClient::builder()
            .probe_wait(Duration::from_secs(600))
            .max_consecutive_failures(Some(1));
        let client = dialling_client(addr, builder, &tx, &board, err_tx);
        let (to, err) = err_rx.recv_timeout(STEP).expect("the dial failed");
        assert_eq!(to, addr);
        assert_eq!(err, ErrKind::Io(io::ErrorKind::ConnectionRefused));
        wait_until_empty(&client); // it gave up after one failure, as told
        client.stop();
        assert_eq!(events.count(|_| true), 0, "no session may open");
    });
}

#[test]
fn dialling_oneself_is_refused() {
    watchdog(TEST_LIMIT, || {
        let (tx, mut events) = Events::new();
        let board = StatsBoard::default();
        let (err_tx, err_rx) = mpsc::channel();
        let addr = closed_port();
        // Bound to the very address it dials, the socket is connected to itself: the probe
        // would come back to it and the dial "succeed" after the wait, without the check.
        let builder = UdpClient::builder()
            .local_addr(Some(addr))
            .probe_wait(Duration::from_secs(600))
            .max_consecutive_failures(Some(1));
        let client = dialling_client(addr, builder, &tx, &board, err_tx);
        let (_, err) = err_rx.recv_timeout(STEP).expect("the dial failed");
        assert_eq!(err, ErrKind::Io(io::ErrorKind::AddrInUse));
        wait_until_empty(&client);
        client.stop();
        assert_eq!(events.count(|_| true), 0, "no session may open");
    });
}

#[test]
fn a_silent_live_peer_counts_as_success() {
    watchdog(TEST_LIMIT, || {
        let (tx, mut events) = Events::new();
        let board = StatsBoard::default();
        let (err_tx, err_rx) = mpsc::channel();
        let peer = peer_socket();
        let builder = UdpClient::builder()
            .probe(Bytes::from_static(b"anyone home?"))
            .probe_wait(Duration::from_millis(100));
        let (tx2, board2) = (tx.clone(), board.clone());
        let client = builder
            .build(peer.local_addr().unwrap(), move |setup| {
                assert!(setup.peer_addr().is_some());
                Ok((
                    RawCodec,
                    Recorder::new(&tx2, false, &board2).pinging(Duration::from_millis(20), b"hi"),
                ))
            })
            .unwrap()
            .on_dial_error(move |addr, error| {
                let _ = err_tx.send((addr, classify(error)));
            });
        let client = Running::serve("udp-client", client);
        assert_eq!(recv_datagram(&peer), b"anyone home?");
        // The peer never answers; the session opens once the wait has passed in silence.
        let sid = events
            .wait("on_open", |e| matches!(e, Ev::Open { .. }))
            .sid();
        assert_eq!(recv_datagram(&peer), b"hi");
        client.stop();
        assert!(err_rx.try_recv().is_err(), "the dial must not have failed");
        events.wait_close(sid);
        check_datagram_contract(&mut events);
    });
}

#[test]
fn a_peer_that_answers_the_probe_is_verified_at_once() {
    watchdog(TEST_LIMIT, || {
        let (tx, mut events) = Events::new();
        let board = StatsBoard::default();
        let (err_tx, _err_rx) = mpsc::channel();
        let peer = peer_socket();
        // The wait is far longer than the test may take: the session must open because the
        // peer answered.
        let builder = UdpClient::builder().probe_wait(Duration::from_secs(600));
        let client = dialling_client(peer.local_addr().unwrap(), builder, &tx, &board, err_tx);
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).expect("the probe");
        assert_eq!(&buf[..n], DEFAULT_PROBE);
        peer.send_to(&buf[..n], from).unwrap(); // echo the probe back
        peer.send_to(b"welcome", from).unwrap();
        let sid = events
            .wait("on_open", |e| matches!(e, Ev::Open { .. }))
            .sid();
        // The echoed probe is dropped (and counted); the next datagram is a message.
        let msg = events.wait("a message", |e| matches!(e, Ev::Msg { .. }));
        assert_eq!(
            msg,
            Ev::Msg {
                sid,
                msg: Bytes::from_static(b"welcome")
            }
        );
        assert_eq!(stats_of(&board, sid).probes_dropped, 1);
        client.stop();
        events.wait_close(sid);
        check_datagram_contract(&mut events);
    });
}

// ---------------------------------------------------------------------------------------
// 3. ICMP errors after the dial
// ---------------------------------------------------------------------------------------

/// Starts a connected client to `addr` that pings every 20 ms.
fn pinging_client(
    addr: SocketAddr,
    close_on_icmp: bool,
    tx: &Sender<Ev>,
    board: &StatsBoard,
    errors: Sender<(SocketAddr, ErrKind)>,
) -> Running {
    let (tx, board) = (tx.clone(), board.clone());
    let client = UdpClient::builder()
        .probe_wait(Duration::from_millis(50))
        .close_on_icmp_error(close_on_icmp)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .build(addr, move |_| {
            Ok((
                RawCodec,
                Recorder::new(&tx, false, &board).pinging(Duration::from_millis(20), b"ping"),
            ))
        })
        .expect("build the client")
        .on_dial_error(move |addr, error| {
            let _ = errors.send((addr, classify(error)));
        });
    Running::serve("udp-pinger", client)
}

#[test]
fn after_the_server_goes_away_the_connected_client_sees_icmp_errors() {
    watchdog(TEST_LIMIT, || {
        let (server_tx, mut server_events) = Events::new();
        let (tx, mut events) = Events::new();
        let board = StatsBoard::default();
        let (server, addr) = echo_endpoint(
            UdpOptions::default(),
            SessionOptions::default(),
            &server_tx,
            &board,
        );
        let (err_tx, _err_rx) = mpsc::channel();
        let client = pinging_client(addr, false, &tx, &board, err_tx);
        let sid = events
            .wait("on_open", |e| matches!(e, Ev::Open { .. }))
            .sid();
        events.wait("an echoed ping", |e| matches!(e, Ev::Msg { .. }));

        server.stop();
        server_events.pump();
        // Each ping now draws an ICMP port unreachable: reported, and the session stays.
        let refused = ErrKind::Io(io::ErrorKind::ConnectionRefused);
        events.wait_n(
            "ICMP errors",
            3,
            |e| matches!(e, Ev::Error { sid: s, err } if *s == sid && *err == refused),
        );
        assert_eq!(
            events.count(|e| matches!(e, Ev::Close { .. })),
            0,
            "by default an ICMP error keeps the session"
        );
        assert!(stats_of(&board, sid).peer_errors >= 3);
        client.stop();
        events.wait_close(sid);
        check_datagram_contract(&mut events);
    });
}

#[test]
fn close_on_icmp_error_closes_and_redials_until_the_server_is_back() {
    watchdog(TEST_LIMIT, || {
        let (server_tx, _server_events) = Events::new();
        let (tx, mut events) = Events::new();
        let board = StatsBoard::default();
        let (server, addr) = echo_endpoint(
            UdpOptions::default(),
            SessionOptions::default(),
            &server_tx,
            &board,
        );
        let (err_tx, err_rx) = mpsc::channel();
        let client = pinging_client(addr, true, &tx, &board, err_tx);
        let first = events
            .wait("on_open", |e| matches!(e, Ev::Open { .. }))
            .sid();
        events.wait("an echoed ping", |e| matches!(e, Ev::Msg { .. }));

        server.stop();
        events.wait_close(first);
        let errors = events.errors_of(first);
        assert_eq!(errors, vec![ErrKind::Io(io::ErrorKind::ConnectionRefused)]);
        // Redials fail while nobody listens...
        let (_, err) = err_rx.recv_timeout(STEP).expect("a failed redial");
        assert_eq!(err, ErrKind::Io(io::ErrorKind::ConnectionRefused));

        // ...and succeed once an endpoint is back on the same port.
        let (back_tx, _back_events) = Events::new();
        let (back_tx2, board2) = (back_tx.clone(), board.clone());
        let endpoint = UdpEndpoint::bind(addr, move |_| {
            Ok((RawCodec, Recorder::new(&back_tx2, true, &board2)))
        })
        .expect("rebind the server's port");
        let server = Running::serve("udp-echo-again", endpoint);
        let second = events
            .wait(
                "a new session",
                |e| matches!(e, Ev::Open { sid, .. } if *sid != first),
            )
            .sid();
        events.wait(
            "an echo on the new session",
            |e| matches!(e, Ev::Msg { sid, .. } if *sid == second),
        );
        client.stop();
        server.stop();
        events.wait_close(second);
        check_datagram_contract(&mut events);
    });
}

// ---------------------------------------------------------------------------------------
// 4. One datagram, one message: bad ones are dropped, counted and reported
// ---------------------------------------------------------------------------------------

#[test]
fn oversized_and_garbage_datagrams_are_dropped_and_counted_while_the_endpoint_lives() {
    watchdog(TEST_LIMIT, || {
        let (tx, mut events) = Events::new();
        let board = StatsBoard::default();
        let (tx2, board2) = (tx.clone(), board.clone());
        let endpoint = UdpEndpoint::builder()
            .session_options(SessionOptions::default().max_message_len(1000))
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    LengthFieldCodec::default(),
                    Recorder::new(&tx2, true, &board2),
                ))
            })
            .unwrap();
        let addr = endpoint.local_addr();
        let server = Running::serve("udp-strict", endpoint);
        let sid = events
            .wait("on_open", |e| matches!(e, Ev::Open { .. }))
            .sid();

        let peer = peer_socket();
        let mut frame_and_junk = length_frame(b"ok");
        frame_and_junk.extend_from_slice(b"junk");
        let bad: Vec<Vec<u8>> = vec![
            vec![0u8; 2000],                 // over max_message_len
            b"\x00\x00\x00\x09abc".to_vec(), // ends inside its message
            frame_and_junk,                  // bytes after the message
            Vec::new(),                      // empty
            vec![0u8; 1001],                 // one byte over
            b"\xff\xff\xff\xffxx".to_vec(),  // declares a 4 GiB frame
        ];
        for datagram in &bad {
            peer.send_to(datagram, addr).unwrap();
        }
        peer.send_to(&length_frame(b"alive"), addr).unwrap();
        assert_eq!(recv_datagram(&peer), length_frame(b"alive"));

        let malformed = ErrKind::Codec(CodecErrorKind::Malformed);
        let errors = events.errors_of(sid);
        assert_eq!(errors.len(), bad.len(), "{errors:?}");
        // Linux reports the real length of a datagram too long for its buffer.
        let len = if cfg!(target_os = "linux") {
            2000
        } else {
            1001
        };
        assert_eq!(errors[0], ErrKind::MessageTooLong { len, max: 1000 });
        assert_eq!(
            errors[1..4],
            [malformed.clone(), malformed.clone(), malformed]
        );
        assert_eq!(
            errors[4],
            ErrKind::MessageTooLong {
                len: 1001,
                max: 1000
            }
        );
        // A declared length is held to the session's limit, as on a stream.
        assert_eq!(
            errors[5],
            ErrKind::MessageTooLong {
                len: 0xFFFF_FFFF,
                max: 1000
            }
        );
        let stats = stats_of(&board, sid);
        assert_eq!(stats.dropped_in, bad.len() as u64);
        assert_eq!(stats.datagrams_in, bad.len() as u64 + 1);
        assert_eq!(stats.messages_in, 1);
        assert_eq!(
            events.count(|e| matches!(e, Ev::Close { .. })),
            0,
            "the endpoint lives"
        );

        // And it keeps serving.
        peer.send_to(&length_frame(b"still here"), addr).unwrap();
        assert_eq!(recv_datagram(&peer), length_frame(b"still here"));
        server.stop();
        events.wait_close(sid);
        check_datagram_contract(&mut events);
    });
}

#[test]
fn dial_probes_are_dropped_by_default_and_can_be_kept() {
    watchdog(TEST_LIMIT, || {
        for keep in [false, true] {
            let (tx, mut events) = Events::new();
            let board = StatsBoard::default();
            let udp = if keep {
                UdpOptions::default().drop_probe(None)
            } else {
                UdpOptions::default()
            };
            let (server, addr) = echo_endpoint(udp, SessionOptions::default(), &tx, &board);
            let sid = events
                .wait("on_open", |e| matches!(e, Ev::Open { .. }))
                .sid();
            let peer = peer_socket();
            peer.send_to(DEFAULT_PROBE, addr).unwrap();
            peer.send_to(b"x", addr).unwrap();
            // A probe dropped is answered; one kept is a message (here echoed).
            let first: &[u8] = if keep {
                DEFAULT_PROBE
            } else {
                UdpClient::PROBE_ANSWER
            };
            assert_eq!(recv_datagram(&peer), first);
            assert_eq!(recv_datagram(&peer), b"x");
            let stats = stats_of(&board, sid);
            assert_eq!(stats.probes_dropped, u64::from(!keep), "keep {keep}");
            assert_eq!(stats.messages_in, 1 + u64::from(keep));
            assert_eq!(stats.dropped_in, 0);
            server.stop();
            check_datagram_contract(&mut events);
        }
    });
}

// ---------------------------------------------------------------------------------------
// 5. The write queue: bound, watermarks, graceful close
// ---------------------------------------------------------------------------------------

/// Writes 1,000-byte datagrams to `to` in `on_open` until the queue refuses, then closes.
struct Filler {
    to: SocketAddr,
    tx: Sender<Ev>,
}

impl DatagramHandler<RawCodec> for Filler {
    fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> io::Result<()> {
        let sid = s.id();
        let _ = self.tx.send(Ev::Open {
            sid,
            peer: s.local_addr(),
        });
        let mut accepted = 0u32;
        let refusal = loop {
            let mut datagram = vec![0u8; 1000];
            datagram[..4].copy_from_slice(&accepted.to_be_bytes());
            match s.write_to(self.to, Bytes::from(datagram)) {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
        };
        let note = |what: String| Ev::Note { sid, what };
        let _ = self.tx.send(note(format!("accepted {accepted}")));
        let _ = self
            .tx
            .send(note(format!("refused {:?}", classify(&refusal))));
        let _ = self.tx.send(note(format!("writable {}", s.is_writable())));
        assert_eq!(s.stats().refused_out, 1, "the refusal is counted");
        let too_big = s.write_to(self.to, Bytes::from(vec![0u8; 70_000]));
        let _ = self.tx.send(note(format!(
            "too big {:?}",
            too_big.map_err(|e| classify(&e))
        )));
        let unconnected = s.write(Bytes::from_static(b"where to?"));
        let _ = self.tx.send(note(format!(
            "no peer {:?}",
            unconnected.map_err(|e| classify(&e))
        )));
        s.close(); // everything accepted still goes out
        let late = s.write_to(self.to, Bytes::from_static(b"late"));
        let _ = self
            .tx
            .send(note(format!("late {:?}", late.map_err(|e| classify(&e)))));
        Ok(())
    }

    fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: Bytes, _: SocketAddr) {}

    fn on_writability_changed(&mut self, s: &mut DatagramSession<RawCodec>, writable: bool) {
        let _ = self.tx.send(Ev::Writable {
            sid: s.id(),
            writable,
        });
    }

    fn on_close(&mut self, s: &mut DatagramSession<RawCodec>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

#[test]
fn the_write_queue_is_bounded_reports_watermarks_and_loses_nothing_it_accepted() {
    watchdog(TEST_LIMIT, || {
        let (tx, mut events) = Events::new();
        let peer = peer_socket();
        let to = peer.local_addr().unwrap();
        let tx2 = tx.clone();
        // Each datagram is charged its 1,000 bytes and 64 of overhead: 50 fit.
        let options = SessionOptions::default()
            .watermarks(10_000, 5_000)
            .max_outbound(50 * 1064);
        let endpoint = UdpEndpoint::builder()
            .session_options(options)
            .bind("127.0.0.1:0", move |_| {
                Ok((RawCodec, Filler { to, tx: tx2 }))
            })
            .unwrap();
        let server = Running::serve("udp-filler", endpoint);
        let sid = events
            .wait("on_open", |e| matches!(e, Ev::Open { .. }))
            .sid();
        let notes: Vec<String> = events
            .wait_n("the filler's notes", 6, |e| matches!(e, Ev::Note { .. }))
            .into_iter()
            .filter_map(|e| match e {
                Ev::Note { what, .. } => Some(what),
                _ => None,
            })
            .collect();
        let queue_full = ErrKind::QueueFull {
            queued: 50 * 1064,
            adding: 1064,
            max: 50 * 1064,
        };
        let too_long = ErrKind::MessageTooLong {
            len: 70_000,
            max: 65_507,
        };
        assert_eq!(
            notes,
            vec![
                "accepted 50".to_owned(),
                format!("refused {queue_full:?}"),
                "writable false".to_owned(),
                format!("too big Err({too_long:?})"),
                format!(
                    "no peer Err({:?})",
                    ErrKind::Io(io::ErrorKind::NotConnected)
                ),
                format!("late Err({:?})", ErrKind::Closed),
            ]
        );
        // Every accepted datagram arrives, in order.
        for i in 0..50u32 {
            let datagram = recv_datagram(&peer);
            assert_eq!(datagram.len(), 1000);
            assert_eq!(datagram[..4], i.to_be_bytes(), "datagram {i}");
        }
        events.wait_close(sid);
        // The graceful close sent everything first, so the queue drained below the low
        // watermark: the handler heard both crossings (the second may come as the session
        // closes; none is reported after on_close).
        let writability: Vec<bool> = events
            .of(sid)
            .into_iter()
            .filter_map(|e| match e {
                Ev::Writable { writable, .. } => Some(writable),
                _ => None,
            })
            .collect();
        assert!(
            writability == [false] || writability == [false, true],
            "{writability:?}"
        );
        server.stop();
        check_datagram_contract(&mut events);
    });
}

// ---------------------------------------------------------------------------------------
// 6. The read loop holds back the replies to one batch at most
// ---------------------------------------------------------------------------------------

/// A burst read in several receives is answered whole, with no write refused and no
/// unwritable session, when `max_outbound` and the high watermark hold exactly the replies
/// to one batch (32 replies of 500 bytes, each charged 64 more). The entry may hold a
/// receive's replies back to send them with the next receive's, but never past the replies
/// to one batch: before, the replies to the wake-up's first receive (2 slots) waited while
/// the next one read a whole batch, and the 33rd reply was refused with `QueueFull`, which
/// a handler that ignores a write's result never hears of (a unix endpoint's slow receivers
/// lost replies that way, without an error).
///
/// The reactor is held in a job while the burst is sent, so that one wake-up reads it all.
#[test]
fn a_burst_is_answered_whole_when_the_bounds_hold_one_batch_of_replies() {
    watchdog(TEST_LIMIT, || {
        const BATCH: usize = 32;
        const REQUESTS: usize = 3 * BATCH;
        let (tx, mut events) = Events::new();
        let board = StatsBoard::default();
        let one_batch = BATCH * (500 + 64);
        let options = SessionOptions::default()
            .watermarks(one_batch + 1, one_batch / 2)
            .max_outbound(one_batch);
        let (server, addr) = echo_endpoint(big_buffers().batch_size(BATCH), options, &tx, &board);
        let sid = events
            .wait("on_open", |e| matches!(e, Ev::Open { .. }))
            .sid();
        let peer = peer_socket();
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        server
            .handle()
            .execute(move |_| {
                let _ = held_tx.send(());
                let _ = release_rx.recv_timeout(STEP);
            })
            .expect("the reactor is running");
        held_rx.recv_timeout(STEP).expect("the reactor is held");
        let requests: Vec<Vec<u8>> = (0..REQUESTS)
            .map(|i| {
                let mut request = vec![i as u8; 500];
                request[..4].copy_from_slice(&(i as u32).to_be_bytes());
                request
            })
            .collect();
        for request in &requests {
            peer.send_to(request, addr).expect("send a request");
        }
        release_tx.send(()).expect("release the reactor");
        // Until every reply is in, or none comes for `STEP` (then the events say why).
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 2048];
        while replies.len() < REQUESTS {
            match peer.recv(&mut buf) {
                Ok(n) => replies.push(buf[..n].to_vec()),
                Err(_) => break,
            }
        }
        server.stop();
        let refused: Vec<Ev> = events
            .of(sid)
            .into_iter()
            .filter(|e| matches!(e, Ev::Note { .. } | Ev::Writable { .. } | Ev::Error { .. }))
            .collect();
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(stats_of(&board, sid).refused_out, 0);
        assert_eq!(replies.len(), REQUESTS, "replies");
        for (i, (reply, request)) in replies.iter().zip(&requests).enumerate() {
            assert_eq!(reply, request, "reply {i}");
        }
        check_datagram_contract(&mut events);
    });
}

/// Answers every datagram with one just over IPv4's largest UDP payload, then one of
/// exactly it, and reports what each `write_to` said.
struct LargestAnswers(Sender<(Result<(), String>, Result<(), String>)>);

impl DatagramHandler<RawCodec> for LargestAnswers {
    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, _: Bytes, peer: SocketAddr) {
        let over = s
            .write_to(peer, vec![1u8; 65_508])
            .map_err(|e| e.to_string());
        let largest = s
            .write_to(peer, vec![2u8; 65_507])
            .map_err(|e| e.to_string());
        let _ = self.0.send((over, largest));
    }
}

/// A dual-stack endpoint (`[::]`) sends to an IPv4 peer as IPv4, which carries 20 bytes
/// less per datagram than IPv6: a write over that is refused at once with the limit that
/// applies (before, it was queued against IPv6's limit and failed in the kernel with
/// `EMSGSIZE`, naming no peer), and one of exactly the limit arrives whole.
#[test]
fn a_dual_stack_endpoint_holds_an_ipv4_peer_to_the_ipv4_limit() {
    watchdog(TEST_LIMIT, || {
        if std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").is_ok_and(|v| v.trim() != "0") {
            eprintln!("skipped: sockets bound to [::] are IPv6-only on this host");
            return;
        }
        let (tx, rx) = mpsc::channel();
        let endpoint = UdpEndpoint::builder()
            .bind("[::]:0", move |_| {
                Ok((RawCodec, LargestAnswers(tx.clone())))
            })
            .expect("bind a dual-stack endpoint");
        assert_eq!(
            endpoint.local_addr().ip(),
            "::".parse::<std::net::IpAddr>().unwrap()
        );
        let port = endpoint.local_addr().port();
        let running = Running::serve("udp-dual-stack", endpoint);
        let peer = peer_socket();
        peer.send_to(b"hi", ("127.0.0.1", port)).unwrap();
        let (over, largest) = rx.recv_timeout(STEP).expect("the handler answered");
        let refusal = over.expect_err("a datagram over the IPv4 limit to an IPv4 peer");
        assert!(refusal.contains("65507"), "{refusal}");
        assert_eq!(largest, Ok(()));
        assert_eq!(recv_datagram(&peer), vec![2u8; 65_507]);
        running.stop();
    });
}
