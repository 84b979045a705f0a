//! Network faults on a link the test builds: a veth pair into a network namespace of its
//! own, with the server in a child process inside the namespace. Taking the namespace's
//! end of the link down makes the server vanish without a FIN or a reset (the kernel here
//! has no `netem`; a link that is down drops every packet silently), and bringing it up
//! again lets the client redial. Needs `ip` and the right to create namespaces (root): where
//! either is missing, each test says so and passes without running.
#![cfg(target_os = "linux")]

mod common;

use std::io;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, LengthFieldCodec};
#[cfg(feature = "ws")]
use getty::codec::{Message, MessageCodec};
use getty::tcp::{TcpClient, TcpServer};
#[cfg(feature = "ws")]
use getty::ws::{Ws, WsClient, WsServer};
use getty::{Error, Handler, Session, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(90);

/// The environment variable that makes `server_in_namespace` serve (at this address).
const SERVE_AT: &str = "GETTY_NETFAULTS_SERVE_AT";

/// The environment variable that picks the server `server_in_namespace` runs: `ws` for a
/// WebSocket echo, anything else for a length-prefixed TCP echo.
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

/// Not a test of its own: the server half of the tests below, which run it in their
/// namespace. It serves until its standard input closes (the test ended) or for a minute.
#[test]
#[ignore]
fn server_in_namespace() {
    let Ok(addr) = std::env::var(SERVE_AT) else {
        return;
    };
    let running = serve_in_namespace(&addr, std::env::var(SERVE_KIND).as_deref() == Ok("ws"));
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

/// The echo server `server_in_namespace` runs: WebSocket (`ws`) or length-prefixed TCP.
fn serve_in_namespace(addr: &str, ws: bool) -> Running {
    #[cfg(feature = "ws")]
    if ws {
        let server = WsServer::builder()
            .route("/echo", |_| Ok((MessageCodec, WsEcho)))
            .bind(addr)
            .unwrap();
        return Running::serve("netns-ws-echo", server);
    }
    assert!(!ws, "a WebSocket server needs the ws feature");
    let server = TcpServer::builder()
        .bind(addr, |_| Ok((LengthFieldCodec::default(), Echo)))
        .unwrap();
    Running::serve("netns-echo", server)
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
        assert!(closed >= pong, "closed before the pong timeout: {closed:?}");
        assert!(
            closed < Duration::from_secs(10),
            "closed only after {closed:?}"
        );
        client.stop();
    });
}
