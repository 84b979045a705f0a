//! What every transport's part of the echo shares: the codec the command line picked, the
//! client's plan and report, and the three ways to run (a server alone until Ctrl-C, a
//! client alone, or both sides in this process).

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use getty::codec::Bytes;
use getty::reactor::ReactorThread;
use getty::{ReactorHandle, ReactorPool};
use hdrhistogram::Histogram;

use crate::args::{Args, CodecKind, Transport};

/// Runs `$body` with `$codec` bound to a function that makes a codec of kind `$kind`. The
/// codecs are types of their own, so the body is compiled once per kind.
macro_rules! with_codec {
    ($kind:expr, |$codec:ident| $body:expr) => {
        match $kind {
            $crate::args::CodecKind::Length => {
                let $codec = ::getty::codec::LengthFieldCodec::default;
                $body
            }
            $crate::args::CodecKind::Lines => {
                let $codec = ::getty::codec::LinesCodec::default;
                $body
            }
            $crate::args::CodecKind::Raw => {
                let $codec = || ::getty::codec::RawCodec;
                $body
            }
        }
    };
}
pub(crate) use with_codec;

/// What the client does: `connections` sessions (or sockets), each sending `messages`
/// messages of 1..=`max_size` random bytes with up to `window` in flight.
pub(crate) struct Plan {
    pub(crate) connections: usize,
    pub(crate) messages: usize,
    pub(crate) window: usize,
    pub(crate) max_size: usize,
    pub(crate) codec: CodecKind,
}

impl Plan {
    /// The plan the command line asks for.
    pub(crate) fn new(args: &Args) -> Plan {
        Plan {
            connections: args.connections,
            messages: args.messages,
            window: args.window,
            max_size: args.max_size,
            codec: args.codec,
        }
    }

    /// The codec the client frames with: a raw server echoes the stream as it comes, so
    /// the client of one still frames with lengths.
    pub(crate) fn client_codec(&self) -> CodecKind {
        match self.codec {
            CodecKind::Lines => CodecKind::Lines,
            CodecKind::Length | CodecKind::Raw => CodecKind::Length,
        }
    }

    /// A message to send: 1..=`max_size` random bytes, printable ones for the lines codec.
    pub(crate) fn payload(&self, rng: &mut fastrand::Rng) -> Bytes {
        let len = rng.usize(1..=self.max_size);
        let bytes: Vec<u8> = if self.codec == CodecKind::Lines {
            (0..len).map(|_| rng.u8(b' '..=b'~')).collect()
        } else {
            (0..len).map(|_| rng.u8(..)).collect()
        };
        Bytes::from(bytes)
    }
}

/// What all client sessions add up to.
pub(crate) struct Totals {
    pub(crate) histogram: Histogram<u64>,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) mismatches: u64,
    sessions_done: usize,
    sessions_failed: usize,
    pub(crate) started: Instant,
}

impl Totals {
    pub(crate) fn new() -> Totals {
        Totals {
            histogram: round_trip_histogram(),
            messages: 0,
            bytes: 0,
            mismatches: 0,
            sessions_done: 0,
            sessions_failed: 0,
            started: Instant::now(),
        }
    }

    /// One session's part is done: counts it, and once every session's is, sends the
    /// report to `main`.
    pub(crate) fn session_done(
        &mut self,
        failed: bool,
        connections: usize,
        done: &mpsc::Sender<Report>,
    ) {
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
                resent: 0,
                elapsed: self.started.elapsed(),
                histogram,
            });
        }
    }
}

/// The report the client sends back to `main`.
pub(crate) struct Report {
    messages: u64,
    bytes: u64,
    mismatches: u64,
    failed: usize,
    /// Datagrams sent again after they were lost (UDP only).
    pub(crate) resent: u64,
    elapsed: Duration,
    histogram: Histogram<u64>,
}

impl Report {
    /// Prints the report; says whether every echo matched and every session finished.
    fn print(&self) -> bool {
        let secs = self.elapsed.as_secs_f64();
        let h = &self.histogram;
        println!(
            "echoed {} messages ({:.1} MB) in {:.2} s: {:.0} msg/s, {:.1} MB/s; round trip p50 {} µs, p99 {} µs",
            self.messages,
            self.bytes as f64 / 1e6,
            secs,
            self.messages as f64 / secs,
            self.bytes as f64 / 1e6 / secs,
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.99),
        );
        let passed = self.mismatches == 0 && self.failed == 0;
        if passed {
            println!("every echo matched byte for byte");
        } else {
            println!(
                "FAILED: {} mismatched echoes, {} sessions did not finish",
                self.mismatches, self.failed
            );
        }
        if self.resent > 0 {
            println!(
                "{} datagrams were lost on the way and sent again",
                self.resent
            );
        }
        passed
    }
}

/// Round trips in microseconds, up to a minute: `saturating_record` never grows a histogram,
/// so its bounds must cover every round trip (a default one would clamp slow echoes to 2).
pub(crate) fn round_trip_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Failed dials in a row after which a client run by hand gives up (the library's default is
/// to keep redialling, as a long-running service wants).
pub(crate) const MAX_DIAL_FAILURES: u32 = 5;

/// Waits for the client's report; fails when the client has given up dialling (it has left
/// its reactor) or after two minutes.
pub(crate) fn wait_for_report(
    done: &mpsc::Receiver<Report>,
    client: &ReactorHandle,
) -> io::Result<Report> {
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

/// Which side of the echo runs here, and at which address (a socket address, or a unix
/// socket's path).
pub(crate) enum Side<A> {
    /// `--server`: a server alone, until Ctrl-C.
    Server(A),
    /// `--client`: a client alone, of a server elsewhere.
    Client(A),
    /// Neither: both, the server at the address given (any free port, or a fresh path).
    Both(A),
}

impl Side<SocketAddr> {
    /// The side `--server ADDR` and `--client ADDR` ask for; with neither, both run on
    /// loopback, the server at any free port.
    pub(crate) fn of_socket(args: &Args) -> Side<SocketAddr> {
        let any_port = || "127.0.0.1:0".parse().expect("literal");
        Side::of(args.server, args.client, any_port)
    }
}

impl<A> Side<A> {
    /// The side the command line's `--server` and `--client` ask for; `both_at` says
    /// where the server of both listens.
    pub(crate) fn of(server: Option<A>, client: Option<A>, both_at: impl FnOnce() -> A) -> Side<A> {
        match (server, client) {
            (Some(at), _) => Side::Server(at),
            (None, Some(at)) => Side::Client(at),
            (None, None) => Side::Both(both_at()),
        }
    }

    /// Runs this side: `start_server` starts a server at an address and says where it
    /// listens, `run_client` runs the client of a server there; `alone` is the banner of a
    /// server alone, `both` that of a server with its client here. Says whether every echo
    /// matched.
    pub(crate) fn run(
        self,
        start_server: impl FnOnce(A) -> io::Result<(Server, A)>,
        run_client: impl FnOnce(&A) -> io::Result<Report>,
        alone: impl FnOnce(&A) -> String,
        both: impl FnOnce(&A) -> String,
    ) -> io::Result<bool> {
        match self {
            Side::Server(at) => {
                let (server, at) = start_server(at)?;
                server.serve_until_signal(&alone(&at))
            }
            Side::Client(at) => Ok(run_client(&at)?.print()),
            Side::Both(at) => {
                let (server, at) = start_server(at)?;
                server.serve_client(&both(&at), || run_client(&at))
            }
        }
    }
}

/// How long a server alone gives its sessions to finish after Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A server one transport's part started, on one reactor thread or a pool of them.
pub(crate) struct Server {
    reactors: Vec<ReactorHandle>,
    join: Box<dyn FnOnce() -> io::Result<()>>,
}

impl Server {
    /// A server on the reactors of `handles`, whose threads `join` waits for.
    pub(crate) fn new(
        handles: Vec<ReactorHandle>,
        join: impl FnOnce() -> io::Result<()> + 'static,
    ) -> Server {
        Server {
            reactors: handles,
            join: Box::new(join),
        }
    }

    /// A server on one reactor thread.
    pub(crate) fn on_thread(thread: ReactorThread) -> Server {
        Server::new(vec![thread.handle().clone()], move || thread.join())
    }

    /// A server on a pool of reactor threads.
    pub(crate) fn on_pool(pool: ReactorPool) -> Server {
        Server::new(pool.handles(), move || pool.join())
    }

    /// A server alone: prints `banner` and serves until Ctrl-C (or SIGTERM), which closes
    /// every session gracefully (a second one stops at once); says how it stopped.
    fn serve_until_signal(self, banner: &str) -> io::Result<bool> {
        for reactor in &self.reactors {
            reactor.shutdown_on_signals(SHUTDOWN_GRACE)?;
        }
        println!("{banner}");
        (self.join)()?;
        report_stop(&self.reactors);
        Ok(true)
    }

    /// Both sides in this process: prints `banner`, runs `client` against this server,
    /// then stops the server and prints the client's report; says whether every echo
    /// matched.
    fn serve_client(
        self,
        banner: &str,
        client: impl FnOnce() -> io::Result<Report>,
    ) -> io::Result<bool> {
        println!("{banner}");
        let report = client();
        for reactor in &self.reactors {
            reactor.shutdown();
        }
        (self.join)()?;
        Ok(report?.print())
    }
}

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

/// What the transport adds below the codec, for the banner.
pub(crate) fn layers(args: &Args) -> String {
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
