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
use getty::codec::{Bytes, Decoder, Encoder};
use getty::tcp::{Setup, TcpClient, TcpServer};
use getty::{Handler, Reactor, Session, SessionOptions};
use std::sync::Arc;

use args::{parse_args, Args, CodecKind, Transport, UdpMode};
use harness::{
    layers, wait_for_report, with_codec, Plan, Report, Server, Side, Totals, MAX_DIAL_FAILURES,
};

mod args; // the command line
mod harness; // what every transport shares: the plan, the report, the ways to run
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

/// Starts the echo server on `reactors` reactor threads (one `SO_REUSEPORT` listener each);
/// returns it with the address it listens on.
fn start_server(
    addr: SocketAddr,
    args: &Args,
    tls: Option<Arc<ServerConfig>>,
) -> io::Result<(Server, SocketAddr)> {
    let mut builder = TcpServer::builder().session_options(session_options(args));
    if let Some(config) = tls {
        builder = builder.tls(config);
    }
    let reactors = args.reactors;
    let pool = with_codec!(args.codec, |codec| {
        builder.start_pool(reactors, addr, move |_| {
            move |_: &mut Setup<'_>| Ok((codec(), Echo))
        })
    })?;
    let addr = pool.local_addr();
    let handles = pool.reactors().handles();
    Ok((Server::new(handles, move || pool.join()), addr))
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
    fn send_next<C: Encoder<Bytes>, T: getty::Transport>(&mut self, session: &mut Session<C, T>) {
        while self.sent < self.plan.messages && self.in_flight.len() < self.plan.window {
            let payload = self.plan.payload(&mut self.rng);
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
    let codec = plan.client_codec();
    let mut builder = TcpClient::builder()
        .connection_number(plan.connections)
        .max_consecutive_failures(Some(MAX_DIAL_FAILURES))
        .session_options(session_options(args));
    if let Some(config) = tls {
        // The certificate names 127.0.0.1 (and localhost).
        builder = builder.tls(config, addr.ip().to_string());
    }
    run_senders(plan, move |reactor, mut make_sender| {
        with_codec!(codec, |codec| reactor
            .spawn(builder.build(addr, move |_| Ok((codec(), make_sender())))?));
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
        let totals = Rc::new(RefCell::new(Totals::new()));
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

fn run(args: Args) -> io::Result<bool> {
    let security = security(&args)?;
    match args.transport {
        Transport::Udp => return udp::run(args),
        Transport::Ws | Transport::Wss => return ws::run(args, security),
        Transport::Unix => return unix::run(args),
        Transport::Tcp | Transport::Tls => {}
    }
    let plan = Plan::new(&args);
    let layers = layers(&args);
    Side::of_socket(&args).run(
        |at| start_server(at, &args, security.server),
        |at| run_client(*at, &args, plan, security.client),
        |at| {
            format!(
                "echo server ({:?} codec{layers}, {} reactors) listening on {at}; Ctrl-C to stop",
                args.codec, args.reactors,
            )
        },
        |at| {
            format!(
                "echo server on {at} ({:?} codec{layers}, {} reactors); client: {} connections x {} messages, {} in flight each, 1..={} bytes",
                args.codec, args.reactors, args.connections, args.messages, args.window, args.max_size
            )
        },
    )
}
