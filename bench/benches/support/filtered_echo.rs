//! An echo round trip through getty-rs on both ends (server and client each on a reactor
//! thread), over TCP with whatever filters the session options and TLS settings ask for, or
//! over WebSocket with or without permessage-deflate. Shared by the compression and TLS
//! benches.
//!
//! Over TCP each message is framed by a 4-byte length prefix (`LengthFieldCodec`); over
//! WebSocket each message is one binary WebSocket message (`RawCodec`).
//!
//! The wire/plain ratio ([`Outcome::wire_ratio`]) is the same measure on every transport:
//! the bytes the client wrote to its socket (`Stats::bytes_out`: framing, TLS records,
//! compression and the one-off handshake or upgrade request included) over the payload
//! bytes it sent (counted by the client's handler, framing excluded). 1.000 means the wire
//! carried exactly the payload.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use getty::codec::rustls::{ClientConfig, ServerConfig};
use getty::codec::ws::DeflateConfig;
use getty::codec::{Bytes, Decoder, Encoder, LengthFieldCodec, RawCodec};
use getty::reactor::ReactorThread;
use getty::tcp::{TcpClient, TcpServer};
use getty::ws::{Ws, WsClient, WsServer};
use getty::{Handler, Reactor, Session, SessionOptions, Stats, Tcp};

/// How the two ends talk.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Transport {
    /// Length-prefixed messages over TCP; the session options' filters (compression) and
    /// `Ends::tls` apply.
    #[default]
    Tcp,
    /// One WebSocket message per message (`ws://`), with permessage-deflate on these terms
    /// on both ends (`None`: not offered, not accepted). The run checks that the handshake
    /// agreed on exactly this (a `Some` that was not negotiated fails the run).
    #[allow(dead_code)] // The TLS bench, which shares this file, runs TCP only.
    WebSocket { deflate: Option<DeflateConfig> },
}

/// One configuration of the two ends.
#[derive(Clone, Default)]
pub struct Ends {
    pub options: SessionOptions,
    /// TLS for a TCP run (WebSocket runs are plain `ws://`).
    pub tls: Option<(Arc<ServerConfig>, Arc<ClientConfig>)>,
    pub transport: Transport,
}

/// What one run measured.
pub struct Outcome {
    pub elapsed: Duration,
    pub messages: u64,
    /// Payload bytes the client sent (framing excluded).
    pub payload_bytes_out: u64,
    /// The client's counters (`bytes_out`: what it wrote to the socket).
    pub client: Stats,
    pub server_cpu: Duration,
}

impl Outcome {
    pub fn messages_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
    /// Payload MB (10^6 bytes) per second, client to server.
    pub fn payload_mb_per_sec(&self) -> f64 {
        self.payload_bytes_out as f64 / self.elapsed.as_secs_f64() / 1e6
    }
    /// Wire bytes per payload byte, client to server: `Stats::bytes_out` of the client
    /// over the payload bytes it sent (see the module's doc).
    pub fn wire_ratio(&self) -> f64 {
        self.client.bytes_out as f64 / self.payload_bytes_out.max(1) as f64
    }
    pub fn messages_per_server_cpu_sec(&self) -> f64 {
        self.messages as f64 / self.server_cpu.as_secs_f64().max(1e-9)
    }
}

struct Echo;

impl<C, T> Handler<C, T> for Echo
where
    C: Decoder<Item = Bytes> + Encoder<Bytes>,
    T: getty::Transport,
{
    fn on_message(&mut self, s: &mut Session<C, T>, msg: Bytes) {
        let _ = s.write(msg);
    }
}

/// What the client reports when its last echo is back.
struct Finished {
    elapsed: Duration,
    stats: Stats,
    payload_bytes_out: u64,
    /// The permessage-deflate terms the WebSocket handshake agreed (`None` over TCP).
    ws_deflate: Option<DeflateConfig>,
}

/// What every client session's `Driver` is made from.
#[derive(Clone)]
struct Plan {
    payloads: Arc<Vec<Bytes>>,
    count: u64,
    window: u64,
    done: mpsc::Sender<Finished>,
}

impl Plan {
    fn driver(&self) -> Driver {
        Driver {
            plan: self.clone(),
            sent: 0,
            received: 0,
            payload_bytes_out: 0,
            ws_deflate: None,
            started: Instant::now(),
        }
    }
}

/// Keeps `window` messages in flight until `count` have come back, then reports.
struct Driver {
    plan: Plan,
    sent: u64,
    received: u64,
    payload_bytes_out: u64,
    ws_deflate: Option<DeflateConfig>,
    started: Instant,
}

impl Driver {
    fn send_next<C: Encoder<Bytes>, T: getty::Transport>(&mut self, s: &mut Session<C, T>) {
        let payloads = &self.plan.payloads;
        let payload = &payloads[self.sent as usize % payloads.len()];
        s.write(payload.clone()).expect("the window fits the queue");
        self.payload_bytes_out += payload.len() as u64;
        self.sent += 1;
    }
}

/// What a transport's handshake agreed on compression: only a WebSocket negotiates it.
trait DeflateTerms: getty::Transport {
    fn deflate_terms<C>(s: &Session<C, Self>) -> Option<DeflateConfig>;
}

impl DeflateTerms for Tcp {
    fn deflate_terms<C>(_: &Session<C, Tcp>) -> Option<DeflateConfig> {
        None
    }
}

impl DeflateTerms for Ws {
    fn deflate_terms<C>(s: &Session<C, Ws>) -> Option<DeflateConfig> {
        s.deflate().copied()
    }
}

impl<C, T> Handler<C, T> for Driver
where
    C: Decoder<Item = Bytes> + Encoder<Bytes>,
    T: DeflateTerms,
{
    fn on_open(&mut self, s: &mut Session<C, T>) -> std::io::Result<()> {
        self.ws_deflate = T::deflate_terms(s);
        self.started = Instant::now();
        while self.sent < self.plan.window.min(self.plan.count) {
            self.send_next(s);
        }
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<C, T>, _echo: Bytes) {
        self.received += 1;
        if self.received == self.plan.count {
            let _ = self.plan.done.send(Finished {
                elapsed: self.started.elapsed(),
                stats: s.stats(),
                payload_bytes_out: self.payload_bytes_out,
                ws_deflate: self.ws_deflate,
            });
            s.close();
        } else if self.sent < self.plan.count {
            self.send_next(s);
        }
    }

    fn on_error(&mut self, _: &mut Session<C, T>, error: &getty::Error) {
        panic!("bench client failed: {error}");
    }
}

fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime fills the timespec it is given.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn cpu_of(reactor: &ReactorThread) -> Duration {
    reactor
        .handle()
        .query(|_| thread_cpu())
        .expect("reactor running")
}

/// Starts the echo server on its reactor thread; returns it and its address.
fn start_server(ends: &Ends, options: &SessionOptions) -> (ReactorThread, std::net::SocketAddr) {
    let (addr, thread) = match ends.transport {
        Transport::Tcp => {
            let mut server = TcpServer::builder().session_options(options.clone());
            if let Some((config, _)) = &ends.tls {
                server = server.tls(Arc::clone(config));
            }
            let server = server
                .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
                .expect("bind");
            let addr = server.local_addr();
            let thread = Reactor::start_thread("bench-server", move |r| {
                r.spawn(server);
                Ok(())
            });
            (addr, thread)
        }
        Transport::WebSocket { deflate } => {
            let server = WsServer::builder()
                .session_options(options.clone())
                .deflate(deflate)
                .route("/", |_| Ok((RawCodec, Echo)))
                .bind("127.0.0.1:0")
                .expect("bind");
            let addr = server.local_addr();
            let thread = Reactor::start_thread("bench-server", move |r| {
                r.spawn(server);
                Ok(())
            });
            (addr, thread)
        }
    };
    (thread.expect("server reactor"), addr)
}

/// Starts the client (one session driven by `plan`) on its reactor thread.
fn start_client(
    ends: &Ends,
    options: SessionOptions,
    addr: std::net::SocketAddr,
    plan: Plan,
) -> ReactorThread {
    let thread = match ends.transport {
        Transport::Tcp => {
            let mut client = TcpClient::builder()
                .session_options(options)
                .max_consecutive_failures(Some(1));
            if let Some((_, config)) = &ends.tls {
                client = client.tls(Arc::clone(config), "localhost");
            }
            let client = client
                .build(addr, move |_| {
                    Ok((LengthFieldCodec::default(), plan.driver()))
                })
                .expect("client");
            Reactor::start_thread("bench-client", move |r| {
                r.spawn(client);
                Ok(())
            })
        }
        Transport::WebSocket { deflate } => {
            let client = WsClient::builder()
                .session_options(options)
                .max_consecutive_failures(Some(1))
                .deflate(deflate)
                .build(&format!("ws://{addr}/"), move |_| {
                    Ok((RawCodec, plan.driver()))
                })
                .expect("client");
            Reactor::start_thread("bench-client", move |r| {
                r.spawn(client);
                Ok(())
            })
        }
    };
    thread.expect("client reactor")
}

/// Echoes `count` messages (cycling through `payloads`) with `window` in flight.
pub fn run(ends: &Ends, payloads: Arc<Vec<Bytes>>, count: u64, window: u64) -> Outcome {
    assert!(
        ends.tls.is_none() || ends.transport == Transport::Tcp,
        "WebSocket runs are plain ws://"
    );
    let options = ends.options.clone().max_message_len(8 << 20);
    let (server_thread, addr) = start_server(ends, &options);
    let (done_tx, done_rx) = mpsc::channel();
    let plan = Plan {
        payloads,
        count,
        window,
        done: done_tx,
    };
    let cpu_before = cpu_of(&server_thread);
    let client_thread = start_client(ends, options, addr, plan);
    let finished = done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the run finished in time");
    let server_cpu = cpu_of(&server_thread) - cpu_before;
    client_thread.handle().shutdown();
    client_thread.join().expect("client reactor");
    server_thread.handle().shutdown();
    server_thread.join().expect("server reactor");
    if let Transport::WebSocket { deflate } = ends.transport {
        // Compare the local settings too (the level is not negotiated, but it must be the
        // one asked for, or the numbers would belong to another level).
        assert_eq!(
            finished.ws_deflate.map(|d| d.level),
            deflate.map(|d| d.level),
            "permessage-deflate was not negotiated as asked"
        );
    }
    Outcome {
        elapsed: finished.elapsed,
        messages: count,
        payload_bytes_out: finished.payload_bytes_out,
        client: finished.stats,
        server_cpu,
    }
}

/// The median of `runs` runs by elapsed time.
pub fn median_of(runs: usize, mut one: impl FnMut() -> Outcome) -> Outcome {
    let mut all: Vec<Outcome> = (0..runs.max(1)).map(|_| one()).collect();
    all.sort_by_key(|o| o.elapsed);
    all.swap_remove(all.len() / 2)
}

/// Smoke mode: `GETTY_BENCH_QUICK=1`, or a run without `--bench` (`cargo bench` passes it;
/// `cargo test --benches` does not).
pub fn quick() -> bool {
    std::env::var("GETTY_BENCH_QUICK").is_ok_and(|v| v != "0")
        || !std::env::args().any(|a| a == "--bench")
}
