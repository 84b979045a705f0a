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
//! A client gives up after 5 failed dials in a row and exits with status 1 (the library
//! itself keeps redialling unless told otherwise: `max_consecutive_failures`).
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
use getty::{Handler, Reactor, ReactorHandle, Session, SessionOptions};
use hdrhistogram::Histogram;
use std::sync::Arc;

use args::{parse_args, Args, CodecKind, Transport, UdpMode};

mod args; // the command line
mod udp; // the same echo over datagrams, one message per datagram
mod unix; // the TCP echo over a unix socket file
mod ws; // the same echo, one message per WebSocket message

// ---------------------------------------------------------------------------------------
// The server: write every message back.

struct Echo;

impl<C, T> Handler<C, T> for Echo
where
    C: Decoder<Item = Bytes> + Encoder<Bytes> + 'static,
    T: getty::Transport,
{
    fn on_message(&mut self, session: &mut Session<C, T>, message: Bytes) {
        if let Err(e) = session.write(message) {
            log::warn!("session {}: echo failed: {e}", session.id());
            session.close();
        }
    }

    fn on_error(&mut self, session: &mut Session<C, T>, error: &getty::Error) {
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

impl Totals {
    /// One session's part is done: counts it, and once every session's is, sends the
    /// report to `main`.
    fn session_done(&mut self, failed: bool, connections: usize, done: &mpsc::Sender<Report>) {
        self.sessions_done += 1;
        if failed {
            self.sessions_failed += 1;
        }
        if self.sessions_done == connections {
            let histogram = std::mem::replace(&mut self.histogram, round_trip_histogram());
            let _ = done.send(Report {
                messages: self.messages,
                bytes: self.bytes,
                mismatches: self.mismatches,
                failed: self.sessions_failed,
                elapsed: self.started.elapsed(),
                histogram,
            });
        }
    }
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

    fn send_next<C: Encoder<Bytes>, T: getty::Transport>(&mut self, session: &mut Session<C, T>) {
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
        let connections = self.plan.connections;
        self.totals
            .borrow_mut()
            .session_done(failed, connections, &self.done_tx);
    }
}

impl<C, T> Handler<C, T> for Sender
where
    C: Decoder<Item = Bytes> + Encoder<Bytes> + 'static,
    T: getty::Transport,
{
    fn on_open(&mut self, session: &mut Session<C, T>) -> io::Result<()> {
        self.send_next(session);
        Ok(())
    }

    fn on_message(&mut self, session: &mut Session<C, T>, echo: Bytes) {
        on_echo(self, session, echo)
    }

    fn on_error(&mut self, _: &mut Session<C, T>, error: &getty::Error) {
        log::error!("client session failed: {error}");
    }

    fn on_close(&mut self, _: &mut Session<C, T>) {
        let failed = self.received < self.plan.messages;
        self.finish(failed);
    }
}

fn on_echo<C: Encoder<Bytes>, T: getty::Transport>(
    sender: &mut Sender,
    session: &mut Session<C, T>,
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
        .max_consecutive_failures(Some(MAX_DIAL_FAILURES))
        .session_options(session_options(args));
    if let Some(config) = tls {
        // The certificate names 127.0.0.1 (and localhost).
        builder = builder.tls(config, addr.ip().to_string());
    }
    run_senders(plan, move |reactor, mut make_sender| {
        // Raw servers echo the stream as it comes, so the client frames with lengths.
        if lines {
            reactor
                .spawn(builder.build(addr, move |_| Ok((LinesCodec::default(), make_sender())))?);
        } else {
            reactor.spawn(builder.build(addr, move |_| {
                Ok((LengthFieldCodec::default(), make_sender()))
            })?);
        }
        Ok(())
    })
}

/// Failed dials in a row after which a client run by hand gives up (the library's default is
/// to keep redialling, as a long-running service wants).
const MAX_DIAL_FAILURES: u32 = 5;

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
    let report = wait_for_report(&done_rx, client.handle());
    client.handle().shutdown();
    client.join()?;
    report
}

/// Waits for the client's report; fails when the client has given up dialling (it has left
/// its reactor) or after two minutes.
fn wait_for_report(done: &mpsc::Receiver<Report>, client: &ReactorHandle) -> io::Result<Report> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match done.recv_timeout(Duration::from_millis(100)) {
            Ok(report) => return Ok(report),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                if client.query(|reactor| reactor.entry_count()).ok() == Some(0) {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let detail = "the client did not finish in 120 s";
                return Err(io::Error::new(io::ErrorKind::TimedOut, detail));
            }
        }
    }
    let detail = format!("the client gave up after {MAX_DIAL_FAILURES} failed dials in a row");
    Err(io::Error::new(io::ErrorKind::NotConnected, detail))
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

/// How long a server alone gives its sessions to finish after Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Says how a server alone stopped: gracefully on a signal, or cut short by a second one.
fn report_stop(reactors: &[ReactorHandle]) {
    match reactors.iter().find_map(ReactorHandle::signal_shutdown) {
        Some(how) if how.forced() => {
            println!("echo server: {}, then another: stopped at once", how.name())
        }
        Some(how) => println!(
            "echo server: {}: sessions closed gracefully (given up to {SHUTDOWN_GRACE:?}); stopped",
            how.name()
        ),
        None => println!("echo server: stopped"),
    }
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
        // Ctrl-C (or SIGTERM) closes every session gracefully; a second one stops at once.
        server.reactors().shutdown_on_signals(SHUTDOWN_GRACE)?;
        println!(
            "echo server ({:?} codec{layers}, {} reactors) listening on {}; Ctrl-C to stop",
            args.codec,
            args.reactors,
            server.local_addr()
        );
        let reactors = server.reactors().handles();
        server.join()?;
        report_stop(&reactors);
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
