//! The getty-rs echo: a server and a client on loopback, every echo checked byte for byte.
//!
//! ```text
//! cargo run --release --example echo                          # both sides, one process
//! cargo run --release --example echo -- --server 127.0.0.1:7000
//! cargo run --release --example echo -- --client 127.0.0.1:7000
//! cargo run --release --example echo -- --codec raw --server 127.0.0.1:7000   # then: nc 127.0.0.1 7000
//! cargo run --release --example echo -- --reactors 2                           # TCP server on 2 reactors
//! cargo run --release --example echo -- --transport udp                        # UDP, connected clients
//! cargo run --release --example echo -- --transport udp --udp-mode unconnected
//! cargo run --release --example echo -- --transport ws                         # WebSocket
//! cargo run --release --example echo -- --transport ws --compress --server 127.0.0.1:7000
//! cargo run --release --example echo -- --transport tls --compress              # TLS, then deflate
//! cargo run --release --example echo -- --transport wss --server 127.0.0.1:7001
//! cargo run --release --example echo -- --transport wss --client 127.0.0.1:7001 --ca /tmp/getty-echo-ca.pem
//! cargo run --release --example echo -- --transport unix                       # a unix socket file
//! cargo run --release --example echo -- --transport unix --server /tmp/echo.sock
//! ```
//!
//! Options: `--transport tcp|tls|udp|ws|wss` (default `tcp`), `--reactors N` reactor threads for the
//! TCP server (1; one `SO_REUSEPORT` listener each), `--codec length|lines|raw` (default
//! `length`, a 4-byte big-endian length prefix), `--connections N` (8), `--messages N` per
//! connection (1000), `--window N` messages in flight per connection (4), `--max-size BYTES`
//! (4096).
//!
//! With `--codec raw` the server echoes the byte stream as it comes; the client still
//! frames its messages with a length prefix so it can check every echo.
//!
//! With `--transport udp` the server is a `UdpEndpoint` (one unconnected socket) and each
//! message is one datagram. `--udp-mode connected` (the default) runs the clients as one
//! `UdpClient` keeping N connected sockets, each dial verified by a probe;
//! `--udp-mode unconnected` runs N `UdpEndpoint`s that name the server on every send. UDP
//! may lose datagrams: a client sends again what is still in flight after a second of
//! silence, and says how many it resent.
//!
//! With `--transport ws` the server is a `WsServer` serving the path `/` (text echoed as text, binary as binary, so any WebSocket client can talk to it:
//! `python3 -m websockets ws://127.0.0.1:7000/`), and the clients are one `WsClient`
//! keeping N connections, one message per WebSocket message. `--compress` offers and
//! accepts permessage-deflate; `--max-message BYTES` raises the message limit (1 MiB) and
//! the outbound bound with it, for peers that send huge messages (the Autobahn suite).
//!
//! With `--compress` on TCP (or TLS) both ends compress their byte stream with one deflate
//! stream per direction, sync-flushed per write batch.
//!
//! With `--transport unix`, `--server` and `--client` take a socket path (alone, the run
//! uses one in the temporary directory); the framing is the same as over TCP.
//!
//! `--transport tls` and `--transport wss` make a self-signed certificate (for localhost and
//! 127.0.0.1) at start-up; the client trusts it as its CA, so certificates are verified as
//! in production. A server alone writes that CA to `$TMPDIR/getty-echo-ca.pem` for a client
//! alone (`--ca`), or for `openssl s_client -CAfile`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use getty::codec::rustls::{ClientConfig, ServerConfig};
use getty::codec::{Bytes, Decoder, Encoder, LengthFieldCodec, LinesCodec, RawCodec};
use getty::tcp::{Setup, TcpClient, TcpServer, TcpServerPool};
use getty::{Address, Handler, Reactor, Session, SessionOptions};
use hdrhistogram::Histogram;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq)]
enum CodecKind {
    Length,
    Lines,
    Raw,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    Tcp,
    Tls,
    Udp,
    Ws,
    Wss,
    Unix,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum UdpMode {
    Connected,
    Unconnected,
}

#[derive(Debug)]
struct Args {
    transport: Transport,
    /// Reactor threads for the TCP server (one reactor per core).
    reactors: usize,
    udp_mode: UdpMode,
    server: Option<SocketAddr>,
    client: Option<SocketAddr>,
    /// `--transport unix`: the socket path of `--server` or `--client`.
    unix_server: Option<std::path::PathBuf>,
    unix_client: Option<std::path::PathBuf>,
    codec: CodecKind,
    connections: usize,
    messages: usize,
    window: usize,
    max_size: usize,
    compress: bool,
    max_message: Option<usize>,
    /// The CA that signed the server's certificate (`--client` alone over TLS).
    ca: Option<std::path::PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        transport: Transport::Tcp,
        reactors: 1,
        udp_mode: UdpMode::Connected,
        server: None,
        client: None,
        unix_server: None,
        unix_client: None,
        codec: CodecKind::Length,
        connections: 8,
        messages: 1000,
        window: 4,
        max_size: 4096,
        compress: false,
        max_message: None,
        ca: None,
    };
    let (mut server, mut client) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--transport" => {
                args.transport = match value()?.as_str() {
                    "tcp" => Transport::Tcp,
                    "tls" => Transport::Tls,
                    "udp" => Transport::Udp,
                    "ws" => Transport::Ws,
                    "wss" => Transport::Wss,
                    "unix" => Transport::Unix,
                    other => {
                        return Err(format!(
                            "unknown transport {other:?} (tcp|tls|udp|ws|wss|unix)"
                        ))
                    }
                }
            }
            "--reactors" => args.reactors = parse(&value()?)?,
            "--udp-mode" => {
                args.udp_mode = match value()?.as_str() {
                    "connected" => UdpMode::Connected,
                    "unconnected" => UdpMode::Unconnected,
                    other => {
                        return Err(format!(
                            "unknown UDP mode {other:?} (connected|unconnected)"
                        ))
                    }
                }
            }
            "--server" => server = Some(value()?),
            "--client" => client = Some(value()?),
            "--codec" => {
                args.codec = match value()?.as_str() {
                    "length" => CodecKind::Length,
                    "lines" => CodecKind::Lines,
                    "raw" => CodecKind::Raw,
                    other => return Err(format!("unknown codec {other:?} (length|lines|raw)")),
                }
            }
            "--connections" => args.connections = parse(&value()?)?,
            "--messages" => args.messages = parse(&value()?)?,
            "--window" => args.window = parse(&value()?)?,
            "--max-size" => args.max_size = parse(&value()?)?,
            "--compress" => args.compress = true,
            "--max-message" => args.max_message = Some(parse(&value()?)?),
            "--ca" => args.ca = Some(value()?.into()),
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    // A unix socket's address is a path; the others' a host and port.
    if args.transport == Transport::Unix {
        args.unix_server = server.map(Into::into);
        args.unix_client = client.map(Into::into);
    } else {
        args.server = server.map(|s| parse(&s)).transpose()?;
        args.client = client.map(|s| parse(&s)).transpose()?;
    }
    if args.reactors == 0 {
        return Err("--reactors must be > 0".into());
    }
    if args.connections == 0 || args.messages == 0 || args.window == 0 || args.max_size < 16 {
        return Err("--connections, --messages and --window must be > 0, --max-size >= 16".into());
    }
    if args.transport == Transport::Udp && args.max_size > udp::MAX_PAYLOAD {
        return Err(format!(
            "--max-size must be at most {} with UDP (one message is one datagram)",
            udp::MAX_PAYLOAD
        ));
    }
    Ok(args)
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("cannot parse {s:?}"))
}

// ---------------------------------------------------------------------------------------
// The server: write every message back.

struct Echo;

impl<C, A> Handler<C, A> for Echo
where
    C: Decoder<Item = Bytes> + Encoder<Bytes> + 'static,
    A: Address,
{
    fn on_message(&mut self, session: &mut Session<C, A>, message: Bytes) {
        if let Err(e) = session.write(message) {
            log::warn!("session {}: echo failed: {e}", session.id());
            session.close();
        }
    }

    fn on_error(&mut self, session: &mut Session<C, A>, error: &getty::Error) {
        log::info!(
            "session {} from {} failed: {error}",
            session.id(),
            session.peer_addr()
        );
    }
}

/// The session options both ends use: deflate on the byte stream with `--compress`, and the
/// limits `--max-message` asks for.
fn session_options(args: &Args) -> SessionOptions {
    let options = SessionOptions::default();
    let options = match args.max_message {
        Some(max) => options
            .max_message_len(max)
            .max_outbound(max.saturating_mul(2)),
        None => options,
    };
    let stream_compression =
        args.compress && !matches!(args.transport, Transport::Ws | Transport::Wss);
    options.compression(stream_compression.then_some(getty::codec::Compression::Default))
}

/// Starts the echo server on `reactors` reactor threads (one `SO_REUSEPORT` listener each).
fn start_server(
    addr: SocketAddr,
    args: &Args,
    tls: Option<Arc<ServerConfig>>,
) -> io::Result<TcpServerPool> {
    let mut builder = TcpServer::builder().session_options(session_options(args));
    if let Some(config) = tls {
        builder = builder.tls(config);
    }
    let reactors = args.reactors;
    match args.codec {
        CodecKind::Length => builder.start_pool(reactors, addr, |_| {
            |_: &mut Setup<'_>| Ok((LengthFieldCodec::default(), Echo))
        }),
        CodecKind::Lines => builder.start_pool(reactors, addr, |_| {
            |_: &mut Setup<'_>| Ok((LinesCodec::default(), Echo))
        }),
        CodecKind::Raw => {
            builder.start_pool(reactors, addr, |_| |_: &mut Setup<'_>| Ok((RawCodec, Echo)))
        }
    }
}

// ---------------------------------------------------------------------------------------
// TLS: a self-signed certificate made at start-up; the client trusts it as its CA.

/// The two ends' TLS configurations (each `None` when that end is not run here).
struct Security {
    server: Option<Arc<ServerConfig>>,
    client: Option<Arc<ClientConfig>>,
}

/// Makes what `--transport tls|wss` needs: a certificate for localhost and 127.0.0.1 (its
/// own CA) for a server run here, and a client configuration that trusts it, or the CA of
/// `--ca` for a client alone. A server alone writes its CA where a client can find it.
fn security(args: &Args) -> io::Result<Security> {
    if !matches!(args.transport, Transport::Tls | Transport::Wss) {
        return Ok(Security {
            server: None,
            client: None,
        });
    }
    let mut ca_pem = None;
    let mut server = None;
    if args.client.is_none() {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let made = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        server = Some(getty::tls::server_config(chain.as_bytes(), key.as_bytes())?);
        ca_pem = Some(chain);
    }
    if args.server.is_some() {
        let path = std::env::temp_dir().join("getty-echo-ca.pem");
        std::fs::write(&path, ca_pem.as_deref().unwrap_or_default())?;
        println!("the server's CA certificate is in {}", path.display());
    }
    let client = match (&args.ca, ca_pem) {
        _ if args.server.is_some() => None,
        (Some(path), _) => Some(getty::tls::client_config(&std::fs::read(path)?)?),
        (None, Some(pem)) => Some(getty::tls::client_config(pem.as_bytes())?),
        (None, None) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--client over TLS needs --ca PEM (the server prints where its CA is)",
            ))
        }
    };
    Ok(Security { server, client })
}

// ---------------------------------------------------------------------------------------
// The client: keep a window of messages in flight per connection, check every echo.

/// What all client sessions add up to.
struct Totals {
    histogram: Histogram<u64>,
    messages: u64,
    bytes: u64,
    mismatches: u64,
    sessions_done: usize,
    sessions_failed: usize,
    started: Instant,
}

/// The report the client sends back to `main`.
struct Report {
    messages: u64,
    bytes: u64,
    mismatches: u64,
    failed: usize,
    elapsed: Duration,
    histogram: Histogram<u64>,
}

struct Plan {
    connections: usize,
    messages: usize,
    window: usize,
    max_size: usize,
    codec: CodecKind,
}

struct Sender {
    plan: Rc<Plan>,
    totals: Rc<RefCell<Totals>>,
    done_tx: mpsc::Sender<Report>,
    rng: fastrand::Rng,
    /// Payloads sent and not yet echoed, with their send time.
    in_flight: VecDeque<(Instant, Bytes)>,
    sent: usize,
    received: usize,
}

impl Sender {
    fn payload(&mut self) -> Bytes {
        let len = self.rng.usize(1..=self.plan.max_size);
        let bytes: Vec<u8> = if self.plan.codec == CodecKind::Lines {
            (0..len).map(|_| self.rng.u8(b' '..=b'~')).collect()
        } else {
            (0..len).map(|_| self.rng.u8(..)).collect()
        };
        Bytes::from(bytes)
    }

    fn send_next<C: Encoder<Bytes>, A: Address>(&mut self, session: &mut Session<C, A>) {
        while self.sent < self.plan.messages && self.in_flight.len() < self.plan.window {
            let payload = self.payload();
            if let Err(e) = session.write(payload.clone()) {
                log::error!("write failed: {e}");
                session.close();
                return;
            }
            self.in_flight.push_back((Instant::now(), payload));
            self.sent += 1;
        }
    }

    fn check_echo(&mut self, echo: &Bytes) -> bool {
        let Some((sent_at, expected)) = self.in_flight.pop_front() else {
            return false;
        };
        let rtt = sent_at.elapsed().as_micros() as u64;
        let mut totals = self.totals.borrow_mut();
        totals.histogram.saturating_record(rtt.max(1));
        totals.messages += 1;
        totals.bytes += echo.len() as u64;
        if *echo != expected {
            totals.mismatches += 1;
            return false;
        }
        true
    }

    fn finish(&mut self, failed: bool) {
        let mut totals = self.totals.borrow_mut();
        totals.sessions_done += 1;
        if failed {
            totals.sessions_failed += 1;
        }
        if totals.sessions_done == self.plan.connections {
            let histogram = std::mem::replace(&mut totals.histogram, round_trip_histogram());
            let _ = self.done_tx.send(Report {
                messages: totals.messages,
                bytes: totals.bytes,
                mismatches: totals.mismatches,
                failed: totals.sessions_failed,
                elapsed: totals.started.elapsed(),
                histogram,
            });
        }
    }
}

impl<C, A> Handler<C, A> for Sender
where
    C: Decoder<Item = Bytes> + Encoder<Bytes> + 'static,
    A: Address,
{
    fn on_open(&mut self, session: &mut Session<C, A>) -> io::Result<()> {
        self.send_next(session);
        Ok(())
    }

    fn on_message(&mut self, session: &mut Session<C, A>, echo: Bytes) {
        on_echo(self, session, echo)
    }

    fn on_error(&mut self, _: &mut Session<C, A>, error: &getty::Error) {
        log::error!("client session failed: {error}");
    }

    fn on_close(&mut self, _: &mut Session<C, A>) {
        let failed = self.received < self.plan.messages;
        self.finish(failed);
    }
}

fn on_echo<C: Encoder<Bytes>, A: Address>(
    sender: &mut Sender,
    session: &mut Session<C, A>,
    echo: Bytes,
) {
    if !sender.check_echo(&echo) {
        log::error!(
            "session {}: echo does not match what was sent",
            session.id()
        );
        session.close();
        return;
    }
    sender.received += 1;
    if sender.received == sender.plan.messages {
        session.close();
    } else {
        sender.send_next(session);
    }
}

/// Runs the client on its own reactor and waits for its report.
fn run_client(
    addr: SocketAddr,
    args: &Args,
    plan: Plan,
    tls: Option<Arc<ClientConfig>>,
) -> io::Result<Report> {
    let lines = plan.codec == CodecKind::Lines;
    let mut builder = TcpClient::builder()
        .connection_number(plan.connections)
        .session_options(session_options(args));
    if let Some(config) = tls {
        // The certificate names 127.0.0.1 (and localhost).
        builder = builder.tls(config, addr.ip().to_string());
    }
    run_senders(plan, move |reactor, mut make_sender| {
        // Raw servers echo the stream as it comes, so the client frames with lengths.
        if lines {
            reactor.spawn(Box::new(
                builder.build(addr, move |_| Ok((LinesCodec::default(), make_sender())))?,
            ));
        } else {
            reactor.spawn(Box::new(builder.build(addr, move |_| {
                Ok((LengthFieldCodec::default(), make_sender()))
            })?));
        }
        Ok(())
    })
}

/// Makes the client's handlers; each gets its own seed.
type MakeSender = Box<dyn FnMut() -> Sender>;

/// Runs a client on its own reactor and waits for its report: `spawn_client` spawns the
/// client entry, making a handler per session with the `MakeSender` it is given.
fn run_senders<F>(plan: Plan, spawn_client: F) -> io::Result<Report>
where
    F: FnOnce(&mut Reactor, MakeSender) -> io::Result<()> + Send + 'static,
{
    let (done_tx, done_rx) = mpsc::channel();
    let client = Reactor::start_thread("echo-client", move |reactor| {
        let plan = Rc::new(plan);
        let totals = Rc::new(RefCell::new(Totals {
            histogram: round_trip_histogram(),
            messages: 0,
            bytes: 0,
            mismatches: 0,
            sessions_done: 0,
            sessions_failed: 0,
            started: Instant::now(),
        }));
        let mut seed = 0u64;
        let make_sender = move || {
            seed += 1;
            Sender {
                plan: plan.clone(),
                totals: totals.clone(),
                done_tx: done_tx.clone(),
                rng: fastrand::Rng::with_seed(seed),
                in_flight: VecDeque::new(),
                sent: 0,
                received: 0,
            }
        };
        spawn_client(reactor, Box::new(make_sender))
    })?;
    let report = done_rx.recv_timeout(Duration::from_secs(120));
    client.handle().shutdown();
    client.join()?;
    report.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not finish in 120 s",
        )
    })
}

/// Round trips in microseconds, up to a minute: `saturating_record` never grows a histogram,
/// so its bounds must cover every round trip (a default one would clamp slow echoes to 2).
fn round_trip_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn print_report(report: &Report) {
    let secs = report.elapsed.as_secs_f64();
    let h = &report.histogram;
    println!(
        "echoed {} messages ({:.1} MB) in {:.2} s: {:.0} msg/s, {:.1} MB/s; round trip p50 {} µs, p99 {} µs",
        report.messages,
        report.bytes as f64 / 1e6,
        secs,
        report.messages as f64 / secs,
        report.bytes as f64 / 1e6 / secs,
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
    );
    if report.mismatches == 0 && report.failed == 0 {
        println!("every echo matched byte for byte");
    } else {
        println!(
            "FAILED: {} mismatched echoes, {} sessions did not finish",
            report.mismatches, report.failed
        );
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("echo: {msg}");
            }
            eprintln!("usage: echo [--transport tcp|tls|udp|ws|wss|unix] [--compress] [--max-message BYTES] [--ca PEM] [--reactors N] [--udp-mode connected|unconnected] [--server ADDR | --client ADDR] [--codec length|lines|raw] [--connections N] [--messages N] [--window N] [--max-size BYTES]");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("echo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the transport adds below the codec, for the banner.
fn layers(args: &Args) -> String {
    let mut layers = String::new();
    if matches!(args.transport, Transport::Tls | Transport::Wss) {
        layers.push_str(", TLS");
    }
    if args.compress {
        layers.push_str(
            if matches!(args.transport, Transport::Ws | Transport::Wss) {
                ", permessage-deflate"
            } else {
                ", deflate"
            },
        );
    }
    layers
}

fn run(args: Args) -> io::Result<bool> {
    let security = security(&args)?;
    match args.transport {
        Transport::Udp => return udp::run(args),
        Transport::Ws | Transport::Wss => return ws::run(args, security),
        Transport::Unix => return unix::run(args),
        Transport::Tcp | Transport::Tls => {}
    }
    let plan = Plan {
        connections: args.connections,
        messages: args.messages,
        window: args.window,
        max_size: args.max_size,
        codec: args.codec,
    };
    let layers = layers(&args);
    if let Some(addr) = args.server {
        let server = start_server(addr, &args, security.server)?;
        println!(
            "echo server ({:?} codec{layers}, {} reactors) listening on {}; Ctrl-C to stop",
            args.codec,
            args.reactors,
            server.local_addr()
        );
        server.join()?;
        return Ok(true);
    }
    if let Some(addr) = args.client {
        let report = run_client(addr, &args, plan, security.client)?;
        print_report(&report);
        return Ok(report.mismatches == 0 && report.failed == 0);
    }
    let any_port = "127.0.0.1:0".parse().expect("literal");
    let server = start_server(any_port, &args, security.server)?;
    let addr = server.local_addr();
    println!(
        "echo server on {addr} ({:?} codec{layers}, {} reactors); client: {} connections x {} messages, {} in flight each, 1..={} bytes",
        args.codec, args.reactors, args.connections, args.messages, args.window, args.max_size
    );
    let report = run_client(addr, &args, plan, security.client);
    server.shutdown();
    server.join()?;
    let report = report?;
    print_report(&report);
    Ok(report.mismatches == 0 && report.failed == 0)
}

// ---------------------------------------------------------------------------------------
// UDP: the same echo over datagrams, one message per datagram.

mod udp {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use getty::udp::{DatagramHandler, DatagramSession, UdpClient, UdpEndpoint, UdpOptions};

    /// The largest message the client sends: a 4-byte length prefix and the payload fit
    /// one IPv4 UDP datagram.
    pub const MAX_PAYLOAD: usize = 65_507 - 4;

    /// A client resends what is in flight after this long without an echo.
    const RESEND_AFTER: Duration = Duration::from_secs(1);

    /// Big enough that a burst of a window of large datagrams per client fits.
    fn udp_options() -> UdpOptions {
        UdpOptions::default()
            .recv_buffer_size(Some(4 << 20))
            .send_buffer_size(Some(4 << 20))
    }

    /// The server: every datagram goes back to its sender.
    struct Echo;

    impl<C> DatagramHandler<C> for Echo
    where
        C: Decoder<Item = Bytes> + Encoder<Bytes> + 'static,
    {
        fn on_message(
            &mut self,
            session: &mut DatagramSession<C>,
            message: Bytes,
            peer: SocketAddr,
        ) {
            if let Err(e) = session.write_to(peer, message) {
                log::warn!("echo to {peer} failed: {e}");
            }
        }

        fn on_error(&mut self, _: &mut DatagramSession<C>, error: &getty::Error) {
            log::info!("udp echo: {error}");
        }
    }

    fn start_server(
        addr: SocketAddr,
        codec: CodecKind,
    ) -> io::Result<(SocketAddr, getty::reactor::ReactorThread)> {
        let (addr_tx, addr_rx) = mpsc::channel();
        let thread = Reactor::start_thread("udp-echo-server", move |reactor| {
            let builder = UdpEndpoint::builder().udp_options(udp_options());
            match codec {
                CodecKind::Length => {
                    let server = builder.bind(addr, |_| Ok((LengthFieldCodec::default(), Echo)))?;
                    let _ = addr_tx.send(server.local_addr());
                    reactor.spawn(Box::new(server))
                }
                CodecKind::Lines => {
                    let server = builder.bind(addr, |_| Ok((LinesCodec::default(), Echo)))?;
                    let _ = addr_tx.send(server.local_addr());
                    reactor.spawn(Box::new(server))
                }
                CodecKind::Raw => {
                    let server = builder.bind(addr, |_| Ok((RawCodec, Echo)))?;
                    let _ = addr_tx.send(server.local_addr());
                    reactor.spawn(Box::new(server))
                }
            };
            Ok(())
        })?;
        let bound = addr_rx
            .recv()
            .map_err(|_| io::Error::other("server did not report its address"))?;
        Ok((bound, thread))
    }

    /// One client socket: a window of messages in flight, every echo checked.
    struct UdpSender {
        plan: Rc<Plan>,
        totals: Rc<RefCell<Totals>>,
        resent: Arc<AtomicU64>,
        done_tx: mpsc::Sender<Report>,
        rng: fastrand::Rng,
        /// `None` for a connected socket.
        to: Option<SocketAddr>,
        in_flight: VecDeque<(Instant, Bytes)>,
        /// The last echoes matched, to tell a late copy of a resent datagram from garbage.
        recent: VecDeque<Bytes>,
        sent: usize,
        received: usize,
        last_progress: Instant,
        finished: bool,
    }

    impl UdpSender {
        fn payload(&mut self) -> Bytes {
            let len = self.rng.usize(1..=self.plan.max_size);
            let bytes: Vec<u8> = if self.plan.codec == CodecKind::Lines {
                (0..len).map(|_| self.rng.u8(b' '..=b'~')).collect()
            } else {
                (0..len).map(|_| self.rng.u8(..)).collect()
            };
            Bytes::from(bytes)
        }

        fn send<C: Encoder<Bytes>>(&self, session: &mut DatagramSession<C>, payload: Bytes) {
            let result = match self.to {
                Some(to) => session.write_to(to, payload),
                None => session.write(payload),
            };
            if let Err(e) = result {
                log::error!("write failed: {e}");
            }
        }

        fn send_next<C: Encoder<Bytes>>(&mut self, session: &mut DatagramSession<C>) {
            while self.sent < self.plan.messages && self.in_flight.len() < self.plan.window {
                let payload = self.payload();
                self.send(session, payload.clone());
                self.in_flight.push_back((Instant::now(), payload));
                self.sent += 1;
            }
        }

        /// Reports this socket's part once; `main` then stops the client's reactor.
        fn finish(&mut self, failed: bool) {
            if std::mem::replace(&mut self.finished, true) {
                return;
            }
            let mut totals = self.totals.borrow_mut();
            totals.sessions_done += 1;
            if failed {
                totals.sessions_failed += 1;
            }
            if totals.sessions_done == self.plan.connections {
                let histogram = std::mem::replace(&mut totals.histogram, round_trip_histogram());
                let _ = self.done_tx.send(Report {
                    messages: totals.messages,
                    bytes: totals.bytes,
                    mismatches: totals.mismatches,
                    failed: totals.sessions_failed,
                    elapsed: totals.started.elapsed(),
                    histogram,
                });
            }
        }
    }

    impl<C> DatagramHandler<C> for UdpSender
    where
        C: Decoder<Item = Bytes> + Encoder<Bytes> + 'static,
    {
        fn on_open(&mut self, session: &mut DatagramSession<C>) -> io::Result<()> {
            let mut totals = self.totals.borrow_mut();
            if totals.messages == 0 {
                // Time the echo, not the dial verification (the probe wait) before it.
                totals.started = Instant::now();
            }
            drop(totals);
            session.set_cron_period(Some(Duration::from_millis(100)));
            self.last_progress = Instant::now();
            self.send_next(session);
            Ok(())
        }

        fn on_message(&mut self, session: &mut DatagramSession<C>, echo: Bytes, _: SocketAddr) {
            if self.finished {
                return;
            }
            let Some(pos) = self.in_flight.iter().position(|(_, p)| *p == echo) else {
                if !self.recent.contains(&echo) {
                    log::error!("an echo does not match anything sent");
                    self.totals.borrow_mut().mismatches += 1;
                }
                return; // else a late copy of a datagram that was sent again
            };
            // Datagrams stay in order on one path: those before the echoed one were lost.
            for _ in 0..pos {
                let lost = self.in_flight.pop_front().expect("counted");
                self.resent.fetch_add(1, Ordering::Relaxed);
                self.send(session, lost.1.clone());
                self.in_flight.push_back(lost);
            }
            let (sent_at, payload) = self.in_flight.pop_front().expect("found");
            self.recent.push_back(payload);
            if self.recent.len() > 64 {
                self.recent.pop_front();
            }
            let mut totals = self.totals.borrow_mut();
            totals
                .histogram
                .saturating_record((sent_at.elapsed().as_micros() as u64).max(1));
            totals.messages += 1;
            totals.bytes += echo.len() as u64;
            drop(totals);
            self.received += 1;
            self.last_progress = Instant::now();
            if self.received == self.plan.messages {
                self.finish(false);
            } else {
                self.send_next(session);
            }
        }

        fn on_cron(&mut self, session: &mut DatagramSession<C>) {
            if self.finished || self.in_flight.is_empty() {
                return;
            }
            if self.last_progress.elapsed() >= RESEND_AFTER {
                for (_, payload) in self.in_flight.clone() {
                    self.resent.fetch_add(1, Ordering::Relaxed);
                    self.send(session, payload);
                }
                self.last_progress = Instant::now();
            }
        }

        fn on_error(&mut self, _: &mut DatagramSession<C>, error: &getty::Error) {
            log::warn!("udp client: {error}");
        }

        fn on_close(&mut self, _: &mut DatagramSession<C>) {
            let failed = self.received < self.plan.messages;
            self.finish(failed);
        }
    }

    fn run_client(addr: SocketAddr, plan: Plan, mode: UdpMode) -> io::Result<(Report, u64)> {
        let (done_tx, done_rx) = mpsc::channel();
        let resent = Arc::new(AtomicU64::new(0));
        let resent_in = resent.clone();
        let connections = plan.connections;
        let lines = plan.codec == CodecKind::Lines;
        let client = Reactor::start_thread("udp-echo-client", move |reactor| {
            let plan = Rc::new(plan);
            let totals = Rc::new(RefCell::new(Totals {
                histogram: round_trip_histogram(),
                messages: 0,
                bytes: 0,
                mismatches: 0,
                sessions_done: 0,
                sessions_failed: 0,
                started: Instant::now(),
            }));
            let mut seed = 0u64;
            let to = (mode == UdpMode::Unconnected).then_some(addr);
            let mut make_sender = move || {
                seed += 1;
                UdpSender {
                    plan: plan.clone(),
                    totals: totals.clone(),
                    resent: resent_in.clone(),
                    done_tx: done_tx.clone(),
                    rng: fastrand::Rng::with_seed(seed),
                    to,
                    in_flight: VecDeque::new(),
                    recent: VecDeque::new(),
                    sent: 0,
                    received: 0,
                    last_progress: Instant::now(),
                    finished: false,
                }
            };
            // Raw servers echo each datagram as it is, so the client frames with lengths.
            match mode {
                UdpMode::Connected => {
                    let builder = UdpClient::builder()
                        .connection_number(connections)
                        // Loopback answers a probe to a closed port in microseconds.
                        .probe_wait(Duration::from_millis(100))
                        .udp_options(udp_options());
                    if lines {
                        reactor
                            .spawn(Box::new(builder.build(addr, move |_| {
                                Ok((LinesCodec::default(), make_sender()))
                            })?));
                    } else {
                        reactor.spawn(Box::new(builder.build(addr, move |_| {
                            Ok((LengthFieldCodec::default(), make_sender()))
                        })?));
                    }
                }
                UdpMode::Unconnected => {
                    for _ in 0..connections {
                        let sender = make_sender();
                        let builder = UdpEndpoint::builder().udp_options(udp_options());
                        if lines {
                            reactor.spawn(Box::new(builder.bind("127.0.0.1:0", move |_| {
                                Ok((LinesCodec::default(), sender))
                            })?));
                        } else {
                            reactor.spawn(Box::new(builder.bind("127.0.0.1:0", move |_| {
                                Ok((LengthFieldCodec::default(), sender))
                            })?));
                        }
                    }
                }
            }
            Ok(())
        })?;
        let report = done_rx.recv_timeout(Duration::from_secs(120));
        let resent = resent.load(Ordering::Relaxed);
        client.handle().shutdown();
        client.join()?;
        let report = report.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not finish in 120 s",
            )
        })?;
        Ok((report, resent))
    }

    pub fn run(args: Args) -> io::Result<bool> {
        let plan = Plan {
            connections: args.connections,
            messages: args.messages,
            window: args.window,
            max_size: args.max_size,
            codec: args.codec,
        };
        if let Some(addr) = args.server {
            let (bound, server) = start_server(addr, args.codec)?;
            println!(
                "udp echo endpoint ({:?} codec) on {bound}; Ctrl-C to stop",
                args.codec
            );
            server.join()?;
            return Ok(true);
        }
        let finish = |(report, resent): (Report, u64)| {
            print_report(&report);
            if resent > 0 {
                println!("{resent} datagrams were lost on the way and sent again");
            }
            report.mismatches == 0 && report.failed == 0
        };
        if let Some(addr) = args.client {
            return Ok(finish(run_client(addr, plan, args.udp_mode)?));
        }
        let (addr, server) = start_server("127.0.0.1:0".parse().expect("literal"), args.codec)?;
        println!(
            "udp echo endpoint on {addr} ({:?} codec); {} {:?} clients x {} messages, {} in flight each, 1..={} bytes",
            args.codec, args.connections, args.udp_mode, args.messages, args.window, args.max_size
        );
        let result = run_client(addr, plan, args.udp_mode);
        server.handle().shutdown();
        server.join()?;
        Ok(finish(result?))
    }
}

// ---------------------------------------------------------------------------------------
// WebSocket: the same echo, one message per WebSocket message.

mod ws {
    use super::*;
    use getty::codec::ws::DeflateConfig;
    use getty::codec::{Message, MessageCodec};
    use getty::ws::{WsClient, WsServer};
    use getty::ReactorPool;

    /// Echoes every message with its kind (text as text, binary as binary), so that any
    /// WebSocket client can talk to it.
    struct WsEcho;

    impl Handler<MessageCodec> for WsEcho {
        fn on_message(&mut self, session: &mut Session<MessageCodec>, message: Message) {
            if let Err(e) = session.write(message) {
                log::warn!("session {}: echo failed: {e}", session.id());
                let _ = session.close_with(1011, "echo failed");
            }
        }

        fn on_error(&mut self, session: &mut Session<MessageCodec>, error: &getty::Error) {
            log::info!(
                "session {} from {} failed: {error}",
                session.id(),
                session.peer_addr()
            );
        }
    }

    fn deflate(args: &Args) -> Option<DeflateConfig> {
        args.compress.then(DeflateConfig::default)
    }

    /// The echo server on `reactors` reactor threads, each with its own `SO_REUSEPORT`
    /// listener; returns the pool and the address they listen on.
    fn start_server(
        addr: SocketAddr,
        args: &Args,
        tls: Option<Arc<ServerConfig>>,
    ) -> io::Result<(ReactorPool, SocketAddr)> {
        let (options, deflate) = (session_options(args), deflate(args));
        let bound = std::sync::Arc::new(std::sync::Mutex::new(addr));
        let bound_in = bound.clone();
        let pool = ReactorPool::start(args.reactors, move |_, reactor| {
            let mut at = bound_in.lock().map_err(|_| io::Error::other("poisoned"))?;
            let mut builder = WsServer::builder()
                .reuse_port(true)
                .session_options(options.clone())
                .deflate(deflate)
                .route("/", |_| Ok((MessageCodec, WsEcho)));
            if let Some(config) = &tls {
                builder = builder.tls(config.clone());
            }
            let server = builder.bind(*at)?;
            *at = server.local_addr();
            reactor.spawn(Box::new(server));
            Ok(())
        })?;
        let addr = *bound.lock().map_err(|_| io::Error::other("poisoned"))?;
        Ok((pool, addr))
    }

    fn run_client(
        addr: SocketAddr,
        args: &Args,
        plan: Plan,
        tls: Option<Arc<ClientConfig>>,
    ) -> io::Result<Report> {
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let url = format!("{scheme}://{addr}/");
        let mut builder = WsClient::builder()
            .connection_number(plan.connections)
            .session_options(session_options(args))
            .deflate(deflate(args));
        if let Some(config) = tls {
            builder = builder.tls(config);
        }
        run_senders(plan, move |reactor, mut make_sender| {
            // Raw bytes, one WebSocket message per echo message.
            let client = builder.build(&url, move |_| Ok((RawCodec, make_sender())))?;
            reactor.spawn(Box::new(client));
            Ok(())
        })
    }

    pub fn run(args: Args, security: Security) -> io::Result<bool> {
        let plan = Plan {
            connections: args.connections,
            messages: args.messages,
            window: args.window,
            max_size: args.max_size,
            codec: CodecKind::Raw,
        };
        let layers = layers(&args);
        let scheme = if args.transport == Transport::Wss {
            "wss"
        } else {
            "ws"
        };
        if let Some(addr) = args.server {
            let (server, addr) = start_server(addr, &args, security.server)?;
            println!(
                "WebSocket echo server ({} reactors{layers}) on {scheme}://{addr}/; Ctrl-C to stop",
                args.reactors
            );
            server.join()?;
            return Ok(true);
        }
        if let Some(addr) = args.client {
            let report = run_client(addr, &args, plan, security.client)?;
            print_report(&report);
            return Ok(report.mismatches == 0 && report.failed == 0);
        }
        let any_port = "127.0.0.1:0".parse().expect("literal");
        let (server, addr) = start_server(any_port, &args, security.server)?;
        println!(
            "WebSocket echo server on {scheme}://{addr}/ ({} reactors{layers}); client: {} connections x {} messages, {} in flight each, 1..={} bytes",
            args.reactors, args.connections, args.messages, args.window, args.max_size
        );
        let report = run_client(addr, &args, plan, security.client);
        server.shutdown();
        server.join()?;
        let report = report?;
        print_report(&report);
        Ok(report.mismatches == 0 && report.failed == 0)
    }
}

// ---------------------------------------------------------------------------------------
// Unix stream sockets: the TCP echo over a socket file.

mod unix {
    use super::*;
    use getty::reactor::ReactorThread;
    use getty::unix::{UnixClient, UnixServer};
    use getty::UnixAddr;
    use std::path::{Path, PathBuf};

    fn start_server(path: &Path, args: &Args) -> io::Result<ReactorThread> {
        let options = session_options(args);
        let (path, codec) = (path.to_path_buf(), args.codec);
        Reactor::start_thread("echo-unix-server", move |reactor| {
            let builder = UnixServer::builder().session_options(options);
            match codec {
                CodecKind::Length => reactor.spawn(Box::new(
                    builder.bind(path, |_| Ok((LengthFieldCodec::default(), Echo)))?,
                )),
                CodecKind::Lines => reactor.spawn(Box::new(
                    builder.bind(path, |_| Ok((LinesCodec::default(), Echo)))?,
                )),
                CodecKind::Raw => {
                    reactor.spawn(Box::new(builder.bind(path, |_| Ok((RawCodec, Echo)))?))
                }
            };
            Ok(())
        })
    }

    fn run_client(path: &Path, args: &Args, plan: Plan) -> io::Result<Report> {
        let lines = plan.codec == CodecKind::Lines;
        let builder = UnixClient::builder()
            .connection_number(plan.connections)
            .session_options(session_options(args));
        let addr = UnixAddr::path(path);
        run_senders(plan, move |reactor, mut make_sender| {
            // Raw servers echo the stream as it comes, so the client frames with lengths.
            if lines {
                reactor.spawn(Box::new(
                    builder.build(addr, move |_| Ok((LinesCodec::default(), make_sender())))?,
                ));
            } else {
                reactor.spawn(Box::new(builder.build(addr, move |_| {
                    Ok((LengthFieldCodec::default(), make_sender()))
                })?));
            }
            Ok(())
        })
    }

    pub fn run(args: Args) -> io::Result<bool> {
        let plan = Plan {
            connections: args.connections,
            messages: args.messages,
            window: args.window,
            max_size: args.max_size,
            codec: args.codec,
        };
        let layers = layers(&args);
        if let Some(path) = &args.unix_server {
            let server = start_server(path, &args)?;
            println!(
                "echo server ({:?} codec{layers}) on the unix socket {}; Ctrl-C to stop",
                args.codec,
                path.display()
            );
            server.join()?;
            return Ok(true);
        }
        if let Some(path) = &args.unix_client {
            let report = run_client(path, &args, plan)?;
            print_report(&report);
            return Ok(report.mismatches == 0 && report.failed == 0);
        }
        let path: PathBuf =
            std::env::temp_dir().join(format!("getty-echo-{}.sock", std::process::id()));
        let server = start_server(&path, &args)?;
        println!(
            "echo server on the unix socket {} ({:?} codec{layers}); client: {} connections x {} messages, {} in flight each, 1..={} bytes",
            path.display(), args.codec, args.connections, args.messages, args.window, args.max_size
        );
        let report = run_client(&path, &args, plan);
        server.handle().shutdown();
        server.join()?;
        let report = report?;
        print_report(&report);
        Ok(report.mismatches == 0 && report.failed == 0)
    }
}
