//! Network faults on a link the test builds: a veth pair into a network namespace of its
//! own, with the server in a child process inside the namespace. Taking the namespace's
//! end of the link down makes the server vanish without a FIN or a reset (the kernel here
//! has no `netem`; a link that is down drops every packet silently), and bringing it up
//! again lets the client redial. Needs `ip` and the right to create namespaces (root): where
//! either is missing, each test says so and passes without running.
//!
//! The connected UDP client's tests also kill the server: its port closes, and the
//! namespace's kernel answers each datagram with an ICMP "port unreachable". Over a real
//! link (unlike loopback) the kernel rate-limits those answers to one host (a burst of six,
//! then one a second, by default), so these tests send few datagrams to a dead port.
#![cfg(target_os = "linux")]

mod common;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, LengthFieldCodec, RawCodec};
#[cfg(feature = "ws")]
use getty::codec::{Message, MessageCodec};
use getty::tcp::{TcpClient, TcpServer};
use getty::udp::{
    DatagramHandle, DatagramHandler, DatagramSession, UdpClient, UdpClientBuilder, UdpEndpoint,
    DEFAULT_PROBE,
};
#[cfg(feature = "ws")]
use getty::ws::{Ws, WsClient, WsServer};
use getty::{Error, Handler, Session, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(90);

/// The environment variable that makes `server_in_namespace` serve (at this address).
const SERVE_AT: &str = "GETTY_NETFAULTS_SERVE_AT";

/// The environment variable that picks the server `server_in_namespace` runs: `ws` for a
/// WebSocket echo, `udp` for a UDP echo endpoint (which answers dial probes), anything else
/// for a length-prefixed TCP echo.
const SERVE_KIND: &str = "GETTY_NETFAULTS_SERVE_KIND";

/// A network namespace with a veth pair into it, on a /30 of `10.213.0.0/16` picked by the
/// process id and `index` (so that tests and runs at once never share one): `.1` on the
/// host's end, `.2` on the namespace's. Removed, with the pair, when dropped.
struct Netns {
    name: String,
    outer_if: String,
    inner_if: String,
    /// The subnet's third octet and the base of its fourth.
    subnet: (u8, u8),
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Netns {
    /// A new namespace and link, or why not (the test then skips).
    fn create(index: u8) -> Result<Netns, io::Error> {
        let pid = std::process::id();
        let tag = format!("{}{index}", pid % 100_000);
        let ns = Netns {
            name: format!("getty-nf{tag}"),
            outer_if: format!("gnfo{tag}"),
            inner_if: format!("gnfi{tag}"),
            subnet: ((pid % 256) as u8, index.wrapping_mul(4) % 252),
        };
        ip(&["netns", "add", &ns.name])?;
        // From here on, dropping `ns` cleans up whatever was made.
        let (outer_if, inner_if) = (ns.outer_if.as_str(), ns.inner_if.as_str());
        ip(&[
            "link", "add", outer_if, "type", "veth", "peer", "name", inner_if,
        ])?;
        ip(&["link", "set", inner_if, "netns", &ns.name])?;
        let outer = format!("{}/30", ns.addr(1));
        ip(&["addr", "add", &outer, "dev", outer_if])?;
        ip(&["link", "set", outer_if, "up"])?;
        let inner = format!("{}/30", ns.addr(2));
        ns.exec(&["addr", "add", &inner, "dev", &ns.inner_if])?;
        ns.exec(&["link", "set", "lo", "up"])?;
        ns.set_link(true)?;
        Ok(ns)
    }

    /// `ip` inside the namespace.
    fn exec(&self, args: &[&str]) -> io::Result<()> {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Takes the namespace's end of the link down (every packet to it is dropped) or up.
    fn set_link(&self, up: bool) -> io::Result<()> {
        self.exec(&[
            "link",
            "set",
            &self.inner_if,
            if up { "up" } else { "down" },
        ])
    }

    /// Host `host` of the subnet (1: ours, 2: the namespace's).
    fn addr(&self, host: u8) -> String {
        let (x, y) = self.subnet;
        format!("10.213.{x}.{}", y + host)
    }

    fn server_addr(&self, port: u16) -> SocketAddr {
        format!("{}:{port}", self.addr(2)).parse().unwrap()
    }

    /// This test binary, re-run inside the namespace as the echo server at `addr` (`kind`:
    /// see [`SERVE_KIND`]).
    fn spawn_server(&self, addr: SocketAddr, kind: &str) -> Reaped {
        let me = std::env::current_exe().unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(me)
            .args(["--exact", "server_in_namespace", "--ignored", "--nocapture"])
            .env(SERVE_AT, addr.to_string())
            .env(SERVE_KIND, kind)
            .stdin(Stdio::piped()) // the server ends when this pipe closes with the test
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Reaped(child)
    }

    /// Waits (bounded) until something at `addr` answers a dial probe as a getty-rs UDP
    /// endpoint does. The asking socket is unconnected, so a refusal (the port not bound
    /// yet) reaches it as silence, and it asks again.
    fn wait_answering(&self, addr: SocketAddr) {
        let asker =
            UdpSocket::bind(format!("{}:0", self.addr(1))).expect("bind on our end of the link");
        asker
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + STEP;
        let mut buf = [0u8; 64];
        loop {
            assert!(
                Instant::now() < deadline,
                "the UDP server in the namespace never answered"
            );
            asker.send_to(DEFAULT_PROBE, addr).unwrap();
            if let Ok((n, from)) = asker.recv_from(&mut buf) {
                if from == addr && buf[..n] == *UdpClient::PROBE_ANSWER {
                    return;
                }
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The pair first: the namespace itself lives on in the kernel for as long as a
        // socket of the killed server is still closing over a link that is down, and with
        // it the pair and its addresses, in the way of the next test.
        let _ = ip(&["link", "del", &self.outer_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Makes the namespace, or prints why this test cannot run here.
fn netns_or_skip(test: &str, index: u8) -> Option<Netns> {
    match Netns::create(index) {
        Ok(ns) => Some(ns),
        Err(e) => {
            println!("{test}: skipped, no network namespace here ({e})");
            None
        }
    }
}

struct Echo;

impl Handler<LengthFieldCodec> for Echo {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = s.write(msg);
    }
}

#[cfg(feature = "ws")]
struct WsEcho;

#[cfg(feature = "ws")]
impl Handler<MessageCodec, Ws> for WsEcho {
    fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
        let _ = s.write(msg);
    }
}

/// Echoes every datagram to its sender. The endpoint itself answers dial probes
/// ([`UdpClient::PROBE_ANSWER`]) and keeps them from the handler.
struct UdpEcho;

impl DatagramHandler<RawCodec> for UdpEcho {
    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, from: SocketAddr) {
        let _ = s.write_to(from, msg);
    }
}

/// Not a test of its own: the server half of the tests below, which run it in their
/// namespace. It serves until its standard input closes (the test ended) or for a minute.
#[test]
#[ignore]
fn server_in_namespace() {
    let Ok(addr) = std::env::var(SERVE_AT) else {
        return;
    };
    let kind = std::env::var(SERVE_KIND).unwrap_or_default();
    let running = serve_in_namespace(&addr, &kind);
    let stdin_closed = std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = io::Read::read_to_end(&mut io::stdin(), &mut sink);
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stdin_closed.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    running.stop();
}

/// The echo server `server_in_namespace` runs, by `kind` (see [`SERVE_KIND`]).
fn serve_in_namespace(addr: &str, kind: &str) -> Running {
    match kind {
        "udp" => {
            let endpoint = UdpEndpoint::bind(addr, |_| Ok((RawCodec, UdpEcho))).unwrap();
            Running::serve("netns-udp-echo", endpoint)
        }
        "ws" => serve_ws_echo(addr),
        _ => {
            let server = TcpServer::builder()
                .bind(addr, |_| Ok((LengthFieldCodec::default(), Echo)))
                .unwrap();
            Running::serve("netns-echo", server)
        }
    }
}

#[cfg(feature = "ws")]
fn serve_ws_echo(addr: &str) -> Running {
    let server = WsServer::builder()
        .route("/echo", |_| Ok((MessageCodec, WsEcho)))
        .bind(addr)
        .unwrap();
    Running::serve("netns-ws-echo", server)
}

#[cfg(not(feature = "ws"))]
fn serve_ws_echo(_: &str) -> Running {
    panic!("a WebSocket server needs the ws feature")
}

/// A client handler that writes a heartbeat on every cron tick (the server echoes it), so
/// a server gone silent shows as a read-idle timeout.
struct Heartbeat {
    tx: Sender<Ev>,
}

impl Handler<LengthFieldCodec> for Heartbeat {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> io::Result<()> {
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = self.tx.send(Ev::Msg { sid: s.id(), msg });
    }

    fn on_cron(&mut self, s: &mut Session<LengthFieldCodec>) {
        let _ = s.write(Bytes::from_static(b"heartbeat"));
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

/// Waits (bounded) until something accepts connections at `addr`.
fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + STEP;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the server in the namespace never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_client_notices_a_silently_vanished_server_and_redials_once_the_link_is_back() {
    watchdog(TEST_LIMIT, || {
        let test = "vanished server";
        let Some(ns) = netns_or_skip(test, 1) else {
            return;
        };
        let addr = ns.server_addr(7000);
        let _server = ns.spawn_server(addr, "tcp");
        wait_listening(addr);

        let idle = Duration::from_millis(1000);
        let (tx, mut events) = Events::new();
        let client = TcpClient::builder()
            .session_options(
                SessionOptions::default()
                    .cron_period(Some(Duration::from_millis(200)))
                    .read_idle_timeout(Some(idle)),
            )
            .connect_timeout(Duration::from_millis(500))
            .reconnect_backoff(Duration::from_millis(100), Duration::from_millis(400))
            .build(addr, move |_| {
                Ok((LengthFieldCodec::default(), Heartbeat { tx: tx.clone() }))
            })
            .unwrap();
        let client = Running::serve("netns-client", client);
        let first = events.wait_open(addr);
        events.wait(
            "a heartbeat echoed",
            |e| matches!(e, Ev::Msg { sid, .. } if *sid == first),
        );

        // The server vanishes: no FIN, no reset, every packet dropped.
        ns.set_link(false).unwrap();
        let down = Instant::now();
        let error = events.wait(
            "the client notices",
            |e| matches!(e, Ev::Error { sid, .. } if *sid == first),
        );
        let noticed = down.elapsed();
        events.wait_close(first);
        assert_eq!(
            error,
            Ev::Error {
                sid: first,
                err: ErrKind::ReadIdle(idle)
            }
        );

        // Redials fail (their SYNs are dropped) until the link is back.
        std::thread::sleep(Duration::from_millis(1500));
        let opened = |e: &Ev| matches!(e, Ev::Open { .. });
        assert_eq!(
            events.count(opened),
            1,
            "a redial got through a link that was down"
        );
        ns.set_link(true).unwrap();
        let up = Instant::now();
        let second = events
            .wait(
                "the client reopens",
                |e| matches!(e, Ev::Open { sid, .. } if *sid != first),
            )
            .sid();
        let reopened = up.elapsed();
        events.wait(
            "a heartbeat echoed again",
            |e| matches!(e, Ev::Msg { sid, .. } if *sid == second),
        );
        println!(
            "{test}: the client noticed after {noticed:?} (read idle {idle:?}, heartbeat every \
             200 ms) and reopened {reopened:?} after the link came back"
        );
        assert!(noticed < idle * 3, "noticed only after {noticed:?}");
        assert!(
            reopened < Duration::from_secs(5),
            "reopened only after {reopened:?}"
        );
        client.stop();
    });
}

/// A WebSocket client handler that reports what happens to it.
#[cfg(feature = "ws")]
struct WsWatcher {
    tx: Sender<Ev>,
}

#[cfg(feature = "ws")]
impl Handler<MessageCodec, Ws> for WsWatcher {
    fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> io::Result<()> {
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
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

    fn on_close(&mut self, s: &mut Session<MessageCodec, Ws>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

#[cfg(feature = "ws")]
#[test]
fn a_websocket_client_with_a_pong_timeout_closes_a_silently_dead_peer_on_time() {
    watchdog(TEST_LIMIT, || {
        let test = "dead websocket peer";
        let Some(ns) = netns_or_skip(test, 2) else {
            return;
        };
        let addr = ns.server_addr(7001);
        let _server = ns.spawn_server(addr, "ws");
        wait_listening(addr);

        let (cron, pong) = (Duration::from_millis(200), Duration::from_millis(600));
        let (tx, mut events) = Events::new();
        let client = WsClient::builder()
            .ping_on_cron(true)
            .pong_timeout(Some(pong))
            .session_options(SessionOptions::default().cron_period(Some(cron)))
            .reconnect_backoff(Duration::from_secs(30), Duration::from_secs(30))
            .build(&format!("ws://{addr}/echo"), move |_| {
                Ok((MessageCodec, WsWatcher { tx: tx.clone() }))
            })
            .unwrap();
        let client = Running::serve("netns-ws-client", client);
        let sid = events.wait_open(addr);
        // Pings answered for a while: the session stays open.
        std::thread::sleep(pong * 2);
        assert_eq!(
            events.count(|e| matches!(e, Ev::Close { .. })),
            0,
            "closed while alive"
        );

        ns.set_link(false).unwrap();
        let down = Instant::now();
        events.wait_close(sid);
        let closed = down.elapsed();
        let errors = events.errors_of(sid);
        println!(
            "{test}: closed {closed:?} after the link went down (cron {cron:?}, pong timeout \
             {pong:?}); errors heard: {errors:?}"
        );
        // The ping left unanswered may have gone out just before the link went down (its
        // pong then never came back): the timeout runs from that ping, up to one cron
        // period before `down`.
        assert!(
            closed + cron >= pong,
            "closed before the pong timeout: {closed:?}"
        );
        assert!(
            closed < Duration::from_secs(10),
            "closed only after {closed:?}"
        );
        client.stop();
    });
}

/// A probe wait no UDP test may see run out: a dial that opens at all under it was answered.
const NEVER: Duration = Duration::from_secs(600);

/// What a [`UdpWatcher`] writes on every cron tick.
const HEARTBEAT: &[u8] = b"heartbeat";

/// A connected UDP client's handler: reports every callback, hands each session's handle
/// to the test (which writes through it), and writes a heartbeat on every cron tick. Before
/// each error it notes what the session then says of itself: its ICMP errors counted so
/// far, and whether it is closing (as `peer_errors=N closing=B`).
struct UdpWatcher {
    tx: Sender<Ev>,
    handles: Sender<DatagramHandle<RawCodec>>,
}

impl DatagramHandler<RawCodec> for UdpWatcher {
    fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> io::Result<()> {
        let peer = s.peer_addr().expect("a connected session");
        let _ = self.tx.send(Ev::Open { sid: s.id(), peer });
        let _ = self.handles.send(s.handle().expect("inside a callback"));
        Ok(())
    }

    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, _: SocketAddr) {
        let _ = self.tx.send(Ev::Msg { sid: s.id(), msg });
    }

    fn on_cron(&mut self, s: &mut DatagramSession<RawCodec>) {
        let _ = s.write(HEARTBEAT);
    }

    fn on_error(&mut self, s: &mut DatagramSession<RawCodec>, error: &Error) {
        let what = format!(
            "peer_errors={} closing={}",
            s.stats().peer_errors,
            s.is_closing()
        );
        let _ = self.tx.send(Ev::Note { sid: s.id(), what });
        let err = classify(error);
        let _ = self.tx.send(Ev::Error { sid: s.id(), err });
    }

    fn on_close(&mut self, s: &mut DatagramSession<RawCodec>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

/// A connected UDP client of the server in a namespace, on its own reactor, with what its
/// sessions and its failed dials report.
struct UdpRig {
    client: Option<Running>,
    events: Events,
    handles: Receiver<DatagramHandle<RawCodec>>,
    /// Failed dials, as `on_dial_error` heard them.
    dial_errors: Receiver<(SocketAddr, ErrKind)>,
}

impl UdpRig {
    fn start(addr: SocketAddr, builder: UdpClientBuilder) -> UdpRig {
        let (tx, events) = Events::new();
        let (handle_tx, handles) = mpsc::channel();
        let (dial_tx, dial_errors) = mpsc::channel();
        let client = builder
            .build(addr, move |_| {
                let (tx, handles) = (tx.clone(), handle_tx.clone());
                Ok((RawCodec, UdpWatcher { tx, handles }))
            })
            .expect("build the UDP client")
            .on_dial_error(move |addr, error| {
                let _ = dial_tx.send((addr, classify(error)));
            });
        UdpRig {
            client: Some(Running::serve("netns-udp-client", client)),
            events,
            handles,
            dial_errors,
        }
    }

    /// The handle of session `sid`, which has opened.
    fn handle(&self, sid: u64) -> DatagramHandle<RawCodec> {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let handle = self
                .handles
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no handle of session {sid}"));
            if handle.session_id() == sid {
                return handle;
            }
        }
    }

    /// The messages session `sid` got so far, in order.
    fn messages(&mut self, sid: u64) -> Vec<Bytes> {
        self.events
            .of(sid)
            .into_iter()
            .filter_map(|e| match e {
                Ev::Msg { msg, .. } => Some(msg),
                _ => None,
            })
            .collect()
    }

    /// Writes `payload` through `handle` and checks that its echo comes back byte for byte
    /// as the session's next message; returns the round trip.
    fn echo(&mut self, handle: &DatagramHandle<RawCodec>, payload: &[u8]) -> Duration {
        let sid = handle.session_id();
        let before = self.messages(sid).len();
        let sent = Instant::now();
        handle
            .write(Bytes::copy_from_slice(payload))
            .expect("the session takes the write");
        let got = self.events.wait_n(
            "the echo",
            before + 1,
            |e| matches!(e, Ev::Msg { sid: s, .. } if *s == sid),
        );
        let round_trip = sent.elapsed();
        let Ev::Msg { msg, .. } = &got[before] else {
            unreachable!("only messages were waited for")
        };
        assert!(
            msg[..] == *payload,
            "the echo of {} bytes differs: {} bytes came back",
            payload.len(),
            msg.len()
        );
        round_trip
    }

    /// Waits for the `n`th error of session `sid`; returns it with what the session noted
    /// of itself just before (see [`UdpWatcher`]).
    fn wait_error(&mut self, sid: u64, n: usize) -> (ErrKind, String) {
        let errors = self.events.wait_n(
            "an error",
            n,
            |e| matches!(e, Ev::Error { sid: s, .. } if *s == sid),
        );
        let Ev::Error { err, .. } = &errors[n - 1] else {
            unreachable!("only errors were waited for")
        };
        let notes: Vec<String> = self
            .events
            .of(sid)
            .into_iter()
            .filter_map(|e| match e {
                Ev::Note { what, .. } => Some(what),
                _ => None,
            })
            .collect();
        (err.clone(), notes[n - 1].clone())
    }

    /// The opens seen so far.
    fn opens(&mut self) -> usize {
        self.events.count(|e| matches!(e, Ev::Open { .. }))
    }

    /// The failed dials reported so far.
    fn dial_errors_so_far(&self) -> Vec<(SocketAddr, ErrKind)> {
        self.dial_errors.try_iter().collect()
    }

    /// Stops the client's reactor, which closes its sessions.
    fn stop(&mut self) {
        self.client.take().expect("the client runs").stop();
    }
}

/// Matches the echo of a heartbeat on session `sid`.
fn heartbeat_of(sid: u64) -> impl FnMut(&Ev) -> bool {
    move |e| matches!(e, Ev::Msg { sid: s, msg } if *s == sid && msg[..] == *HEARTBEAT)
}

/// A datagram of `len` bytes, each set by its offset, so that an echo with bytes moved,
/// lost or changed differs from it.
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// The echo server in the namespace answers the dial's probe, so the session opens at once
/// (its probe wait is ten minutes), and datagrams of every size, fragmented or not, come
/// back byte for byte over the link. Fails if the dial stops taking the answer (or the
/// endpoint stops giving it): the open is waited for 15 s, far short of ten minutes.
#[test]
fn a_udp_client_dialling_through_the_link_opens_on_the_answer_and_echoes() {
    watchdog(TEST_LIMIT, || {
        let test = "udp dial over the link";
        let Some(ns) = netns_or_skip(test, 3) else {
            return;
        };
        let addr = ns.server_addr(7002);
        let _server = ns.spawn_server(addr, "udp");
        ns.wait_answering(addr);

        let dialled = Instant::now();
        let mut rig = UdpRig::start(addr, UdpClient::builder().probe_wait(NEVER));
        let sid = rig.events.wait_open(addr);
        let opened = dialled.elapsed();
        let handle = rig.handle(sid);
        // One byte; a full Ethernet frame; one byte past it (two fragments); many
        // fragments; the largest UDP payload.
        let sizes = [1, 1472, 1473, 9000, 65_507];
        let round_trips: Vec<Duration> = sizes
            .iter()
            .map(|&len| rig.echo(&handle, &patterned(len)))
            .collect();
        println!(
            "{test}: opened {opened:?} after the dial (probe wait {NEVER:?}); echoes of \
             {sizes:?} bytes took {round_trips:?}"
        );
        assert_eq!(
            rig.messages(sid).len(),
            sizes.len(),
            "the answer was a message"
        );
        assert_eq!(rig.dial_errors_so_far(), []);
        rig.stop();
        rig.events.wait_close(sid);
        rig.events.check_contract();
    });
}

/// The server is killed: its port closes, and the namespace's kernel answers the client's
/// next datagram with an ICMP "port unreachable". With `close_on_icmp_error(true)` the
/// session hears the refusal in `on_error` (already closing, as `DatagramHandler`
/// documents), then `on_close`; every redial's probe is refused and reported to
/// `on_dial_error` while the server is gone; a server started again at the same address
/// answers the next probe, and the new session echoes.
#[test]
fn a_udp_client_closing_on_icmp_errors_leaves_a_killed_server_and_reopens_when_it_is_back() {
    watchdog(TEST_LIMIT, || {
        let test = "udp server killed, close_on_icmp_error";
        let Some(ns) = netns_or_skip(test, 4) else {
            return;
        };
        let addr = ns.server_addr(7003);
        let server = ns.spawn_server(addr, "udp");
        ns.wait_answering(addr);
        // A probe wait far past the time the server is gone: a redial that opened on
        // silence instead of being refused would show as an open while it is gone.
        let probe_wait = Duration::from_secs(5);
        let builder = UdpClient::builder()
            .close_on_icmp_error(true)
            .probe_wait(probe_wait)
            .reconnect_backoff(Duration::from_millis(200), Duration::from_millis(400));
        let mut rig = UdpRig::start(addr, builder);
        let first = rig.events.wait_open(addr);
        let handle = rig.handle(first);
        rig.echo(&handle, b"before");

        drop(server); // killed and reaped: its socket is closed
        let written = Instant::now();
        handle.write(&b"to nobody"[..]).expect("still open");
        let (err, noted) = rig.wait_error(first, 1);
        let noticed = written.elapsed();
        rig.events.wait_close(first);
        let closed = written.elapsed();
        assert_eq!(err, ErrKind::Io(io::ErrorKind::ConnectionRefused));
        assert_eq!(noted, "peer_errors=1 closing=true");

        // Two redials refused in a row: the port is still closed.
        let mut refused = Vec::new();
        while refused.len() < 2 {
            let (at, err) = rig
                .dial_errors
                .recv_timeout(STEP)
                .expect("a redial refused");
            assert_eq!(
                (at, err),
                (addr, ErrKind::Io(io::ErrorKind::ConnectionRefused))
            );
            refused.push(written.elapsed());
        }
        assert_eq!(rig.opens(), 1, "a redial opened while the server was gone");

        let _server = ns.spawn_server(addr, "udp");
        let restarted = Instant::now();
        let second = rig
            .events
            .wait(
                "a session reopens",
                |e| matches!(e, Ev::Open { sid, .. } if *sid != first),
            )
            .sid();
        let reopened = restarted.elapsed();
        let handle = rig.handle(second);
        rig.echo(&handle, b"after");
        let more_refused = rig.dial_errors_so_far().len();
        println!(
            "{test}: the write drew the refusal in {noticed:?} (on_close {closed:?}); \
             redials refused at {refused:?} after the write, and {more_refused} more before \
             the restart took; reopened {reopened:?} after the restart (probe wait \
             {probe_wait:?})"
        );
        assert!(
            reopened < probe_wait,
            "the reopening dial waited out its probe: {reopened:?}"
        );
        rig.stop();
        rig.events.wait_close(second);
        rig.events.check_contract();
    });
}

/// By default (`close_on_icmp_error(false)`) a killed server's refusals are counted and
/// reported, and the session stays open: once the server is back at the same address, the
/// same session echoes again, and the client never redialled.
#[test]
fn a_udp_client_keeps_its_session_through_icmp_errors_and_echoes_once_the_server_is_back() {
    watchdog(TEST_LIMIT, || {
        let test = "udp server killed, session kept";
        let Some(ns) = netns_or_skip(test, 5) else {
            return;
        };
        let addr = ns.server_addr(7004);
        let server = ns.spawn_server(addr, "udp");
        ns.wait_answering(addr);
        let mut rig = UdpRig::start(addr, UdpClient::builder().probe_wait(NEVER));
        let sid = rig.events.wait_open(addr);
        let handle = rig.handle(sid);
        rig.echo(&handle, b"before");

        drop(server);
        let mut noticed = Vec::new();
        for n in 1..=3 {
            let written = Instant::now();
            handle.write(&b"to nobody"[..]).expect("still open");
            let (err, noted) = rig.wait_error(sid, n);
            noticed.push(written.elapsed());
            assert_eq!(err, ErrKind::Io(io::ErrorKind::ConnectionRefused));
            assert_eq!(noted, format!("peer_errors={n} closing=false"));
        }

        let _server = ns.spawn_server(addr, "udp");
        ns.wait_answering(addr);
        let round_trip = rig.echo(&handle, b"after");
        println!(
            "{test}: three writes drew their refusals in {noticed:?}, counted in \
             peer_errors; the same session echoed in {round_trip:?} once the server was back"
        );
        let closes = rig.events.count(|e| matches!(e, Ev::Close { .. }));
        assert_eq!((rig.opens(), closes), (1, 0), "the session did not stay");
        assert_eq!(rig.dial_errors_so_far(), []);
        assert_eq!(rig.messages(sid), [&b"before"[..], b"after"]);
        rig.stop();
        // No `check_contract`: its one error per session is the stream's rule; a datagram
        // session hears every ICMP error and carries on.
        rig.events.wait_close(sid);
    });
}

/// The link goes down: no datagram and no ICMP error comes back. An open session with a
/// heartbeat and a read-idle timeout notices the silence (`on_error(ReadIdle)`, then
/// `on_close`); the redial's probe is neither answered nor refused, so it opens only once
/// its probe wait has passed, as documented, and reports no failed dial; once the link is
/// back, that session's heartbeats are echoed. The first dial, answered, opened at once.
#[test]
fn a_udp_client_over_a_dead_link_goes_read_idle_and_redials_only_after_the_probe_wait() {
    watchdog(TEST_LIMIT, || {
        let test = "udp link down";
        let Some(ns) = netns_or_skip(test, 6) else {
            return;
        };
        let addr = ns.server_addr(7005);
        let _server = ns.spawn_server(addr, "udp");
        ns.wait_answering(addr);
        let (idle, probe_wait) = (Duration::from_millis(1000), Duration::from_millis(1000));
        let cron = Duration::from_millis(200);
        let builder = UdpClient::builder()
            .probe_wait(probe_wait)
            .reconnect_backoff(Duration::from_millis(100), Duration::from_millis(400))
            .session_options(
                SessionOptions::default()
                    .cron_period(Some(cron))
                    .read_idle_timeout(Some(idle)),
            );
        let dialled = Instant::now();
        let mut rig = UdpRig::start(addr, builder);
        let first = rig.events.wait_open(addr);
        let answered = dialled.elapsed();
        rig.events.wait("a heartbeat echoed", heartbeat_of(first));

        ns.set_link(false).unwrap();
        let down = Instant::now();
        let (err, _) = rig.wait_error(first, 1);
        let noticed = down.elapsed();
        assert_eq!(err, ErrKind::ReadIdle(idle));
        rig.events.wait_close(first);
        let closed = Instant::now();
        let second = rig
            .events
            .wait(
                "the redial opens",
                |e| matches!(e, Ev::Open { sid, .. } if *sid != first),
            )
            .sid();
        let blind = closed.elapsed();
        assert_eq!(
            rig.dial_errors_so_far(),
            [],
            "a dial over a dead link failed"
        );

        ns.set_link(true).unwrap();
        let up = Instant::now();
        rig.events
            .wait("a heartbeat echoed again", heartbeat_of(second));
        let echoed = up.elapsed();
        println!(
            "{test}: the answered dial opened in {answered:?}; the silence was noticed \
             {noticed:?} after the link went down (read idle {idle:?}, heartbeat every \
             {cron:?}); the redial opened {blind:?} after the close (probe wait \
             {probe_wait:?}); heartbeats echoed {echoed:?} after the link came back"
        );
        assert!(
            answered < probe_wait,
            "the answered dial waited: {answered:?}"
        );
        assert!(
            blind >= probe_wait,
            "the blind redial opened early: {blind:?}"
        );
        // Idle counts from the last echo, up to a heartbeat before the link went down.
        assert!(
            noticed >= idle / 2 && noticed < idle * 3,
            "noticed after {noticed:?}"
        );
        rig.stop();
        rig.events.wait_close(second);
        rig.events.check_contract();
    });
}
