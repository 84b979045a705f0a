//! WebSocket echo: getty-rs against a hand-written WebSocket echo on mio (the baseline) and a
//! tokio-tungstenite echo, under the same load generator.
//!
//! The servers run in this one process, each on a thread of its own, one after the other:
//!
//! - **getty-rs**: `WsServer::builder().route("/", |_| Ok((RawCodec, Echo)))` on one reactor
//!   thread (`Reactor::start_thread`), default options. `RawCodec` over WebSocket hands the
//!   handler one `Bytes` per message, and `Echo::on_message` answers with
//!   `session.write(msg)`: one binary message back.
//! - **hand-written** (the baseline: `support/ws_baseline.rs` on the loop of
//!   `support/mio_echo.rs`): one `read` per readiness into a buffer shared by all
//!   connections; the upgrade answered from the request's key; masked client frames parsed
//!   where they lie, each payload copied to the output behind an unmasked server header and
//!   unmasked there (eight bytes at a time); one `write` per batch. It skips what a framework
//!   must do (UTF-8 of text, reassembly, limits, deflate, flow control, a message a handler
//!   owns); none of it changes this traffic.
//! - **tokio**: a current-thread runtime, one task per connection. The listener has
//!   getty-rs's backlog (1024) and every accepted socket gets TCP_NODELAY (getty-rs's
//!   default). The task runs `tokio_tungstenite::accept_async_with_config`, with tungstenite's
//!   defaults except `read_buffer_size`, sized to the messages (see [`tokio_read_buf`]: the
//!   default, 128 KiB, makes tungstenite zero-fill 128 KiB before every read). Then it
//!   loops: await the next message; `feed` it back if it is binary or text (`feed` only
//!   queues the frame in tungstenite's write buffer); keep taking messages that are ready at
//!   once (`next().now_or_never()`, at most [`TOKIO_BATCH`]) and `feed` those too; then
//!   `flush`, one write for the whole batch. That is what `StreamExt::forward` does (the
//!   idiom of tokio-tungstenite's own echo example), without `split`'s lock. Pings are
//!   answered by tungstenite itself.
//!
//! The load generator is one mio thread, the same code for every server. Each of its N
//! connections upgrades with a fixed HTTP request (constant `Sec-WebSocket-Key`; the answer
//! must be a `101` with the matching accept key), then keeps K messages in flight: masked
//! binary frames (RFC 6455 requires clients to mask; the frame is masked once, with a
//! constant key, and the same bytes are sent every time), answered by unmasked frames that
//! it parses and spot-checks. Each round trip goes into an HDR histogram (ns).
//!
//! A run warms up (not measured), then measures for a fixed time. "Server CPU" is the
//! server thread's own CPU time (its `CLOCK_THREAD_CPUTIME_ID` clock, read through
//! `pthread_getcpuclockid` at the start and the end of the window), so "msgs per server
//! CPU-second" is the server's cost per echoed message whatever rate the client offered.
//! That cost is also split into user space and kernel (the thread's user and system clock
//! ticks in /proc over the window, 10 ms each): whether a gap lies in the server's own code
//! or in the syscalls and TCP stack it drives. "other" is the CPU the rest of the machine
//! used during the window (from /proc/stat, less this process): above
//! [`NOISY_OTHER_CPUS`] a run is flagged as noisy.
//!
//! Scenarios: (a) 1 conn x 1 in flight x 64 B; (b) 50 x 16 x 64 B; (c) 1 x 1 x 16 KiB;
//! (d) 50 x 4 x 16 KiB. In (a) and (c) client and server take turns (one message in
//! flight), and their cost per message depends on whether the scheduler puts them on one CPU
//! or on two (a cross-CPU wake-up costs more, in a VM much more): unpinned, runs of the same
//! server differed up to 4x. So there both threads are pinned to one CPU, the least busy one.
//! In (b) and (d) both stay busy: the server is pinned to the least busy CPU and the load
//! generator to the next ("spread"), so that no round runs with the two sharing a CPU, or
//! with the server moved mid-window (unpinned, the getty-rs/hand-written ratio of (b) varied
//! from 0.76 to 0.98 between runs of the same code). `GETTY_BENCH_PIN=0` pins nothing.
//! Targets, per scenario:
//! getty-rs serves at least 1.5x the messages per server CPU-second of tokio-tungstenite,
//! with a lower p50 and p99; and (issue 16) in (b) at least 0.95 of the hand-written
//! baseline's messages per server CPU-second. Each table shows the ratios getty-rs /
//! hand-written and getty-rs / tokio.
//!
//! Run it with `cargo bench -p getty-bench --bench ws_echo`. Environment:
//! - `GETTY_BENCH_SECS` (default 5): measured seconds per run;
//! - `GETTY_BENCH_WARMUP_SECS` (default 2, at most `GETTY_BENCH_SECS`): warm-up seconds;
//! - `GETTY_BENCH_ROUNDS` (default 1): runs per server and scenario, alternating which
//!   server goes first; the table shows the median of each figure, over the quiet runs only
//!   when every server had one (then "other" is under the noise threshold);
//! - `GETTY_BENCH_SCENARIOS` (default `abcd`): which scenarios to run;
//! - `GETTY_BENCH_ONLY` (`getty`, `mio` for the hand-written one, or `tokio`): one server
//!   only (for profiling, e.g. under callgrind: instructions per message are the reactor
//!   thread's total over the number of `Echo::on_message` calls);
//! - `GETTY_BENCH_TOKIO_READ_BUF` (bytes): the tokio echo's `read_buffer_size` in every
//!   scenario (131072 is tungstenite's default);
//! - `GETTY_BENCH_PIN=0`: pin no thread in any scenario;
//! - `GETTY_BENCH_CHART_DIR`: where each scenario's latency chart goes (default
//!   `bench-charts/` in the target directory);
//! - `GETTY_BENCH_QUICK=1`: smoke mode (0.2 s warm-up, 0.5 s runs). Quick mode is also what
//!   runs when the binary is started without `--bench` (as `cargo test --benches` does).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use getty::codec::{Bytes, RawCodec};
use getty::reactor::ReactorThread;
use getty::ws::{Ws, WsServer};
use getty::{Handler, Session};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Settings, CPU clocks, server plumbing, the load generator and the rounds, shared with the
/// TCP echo bench.
#[path = "support/chart.rs"]
mod chart;
#[path = "support/echo_bench.rs"]
mod echo_bench;
// Its length-prefixed protocol is the TCP bench's; this bench brings its own.
#[allow(dead_code)]
#[path = "support/mio_echo.rs"]
mod mio_echo;
#[path = "support/ws_baseline.rs"]
mod ws_baseline;

use mio_echo::start_mio_thread;
use ws_baseline::WsEcho;

use echo_bench::{
    allowed_cpus, clock_now, env_f64, kinds_from_env, load_average, measured_secs, median,
    on_load_thread, quick_mode_requested, random_payload, rounds_from_env, run_rounds,
    scenario_keys, start_reactor_thread, start_tokio_thread, thread_user_sys_ticks, verdict,
    AcceptThread, Framing, Kind, LoadGenerator, Placement, Scenario, ThreadIds, CHART_PERCENTILES,
    NOISY_OTHER_CPUS,
};

/// The client's upgrade request; the key is the sample nonce of RFC 6455, section 1.3.
const UPGRADE_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// The `Sec-WebSocket-Accept` value RFC 6455 derives from that key.
const EXPECTED_ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The mask of every client frame: RFC 6455 wants it unpredictable to defeat cache
/// poisoning through proxies, which does not apply on loopback.
const MASK_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// First byte of an unfragmented binary frame: FIN and opcode 2.
const FIN_BINARY: u8 = 0x82;

/// The bit of a frame's second byte that says its payload is masked.
const MASK_BIT: u8 = 0x80;

/// A longer upgrade response means something is wrong.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Bounds every blocking step of a connection's upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most messages the tokio echo feeds before it flushes (tokio's cooperative budget would
/// stop it a little later anyway).
const TOKIO_BATCH: usize = 64;

/// The smallest tungstenite `read_buffer_size` the tokio echo gets (see
/// [`tokio_read_buf`]).
const TOKIO_MIN_READ_BUF: usize = 4 * 1024;

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Getty => "getty-rs",
            Kind::Mio => "hand-written",
            Kind::MessageIo => "message-io",
            Kind::Tokio => "tokio-tung",
        }
    }
}

#[derive(Debug, Clone)]
struct Config {
    warmup: Duration,
    measure: Duration,
    rounds: usize,
    scenarios: String,
    kinds: Vec<Kind>,
    /// tungstenite's `read_buffer_size` for the tokio echo, if set by hand.
    tokio_read_buf: Option<usize>,
    /// Pin client and server (see `Scenario::placement`).
    pin: bool,
    quick: bool,
}

impl Config {
    fn from_env() -> Config {
        let quick = quick_mode_requested();
        let (default_measure, default_warmup) = if quick { (0.5, 0.2) } else { (5.0, 2.0) };
        let measure = measured_secs(default_measure);
        let warmup = env_f64("GETTY_BENCH_WARMUP_SECS")
            .unwrap_or(default_warmup)
            .min(measure);
        Config {
            warmup: Duration::from_secs_f64(warmup),
            measure: Duration::from_secs_f64(measure),
            rounds: rounds_from_env(),
            scenarios: scenario_keys("abcd"),
            kinds: kinds_from_env(&[Kind::Getty, Kind::Mio, Kind::Tokio]),
            tokio_read_buf: env_f64("GETTY_BENCH_TOKIO_READ_BUF").map(|b| (b as usize).max(64)),
            pin: std::env::var("GETTY_BENCH_PIN").map_or(true, |v| v != "0"),
            quick,
        }
    }
}

impl Scenario {
    /// The label, and where client and server run.
    fn title(&self, cfg: &Config) -> String {
        format!("{}{}", self.label, self.placement(cfg).label())
    }

    /// One message in flight: client and server share a CPU (they take turns). More: each
    /// has a CPU of its own, given two.
    fn placement(&self, cfg: &Config) -> Placement {
        match (cfg.pin, self.pin) {
            (false, _) => Placement::Free,
            (true, false) if allowed_cpus().len() >= 2 => Placement::Spread,
            (true, _) => Placement::Shared,
        }
    }
}

fn scenarios() -> [Scenario; 4] {
    let scenario = |key, label, conns, in_flight, size| Scenario {
        key,
        label,
        conns,
        in_flight,
        size,
        // One message in flight: client and server take turns, so one CPU is enough.
        pin: conns == 1 && in_flight == 1,
    };
    [
        scenario('a', "(a) 1 conn x 1 x 64 B", 1, 1, 64),
        scenario('b', "(b) 50 conns x 16 x 64 B", 50, 16, 64),
        scenario('c', "(c) 1 conn x 1 x 16 KiB", 1, 1, 16 * 1024),
        scenario('d', "(d) 50 conns x 4 x 16 KiB", 50, 4, 16 * 1024),
    ]
}

/// tungstenite's `read_buffer_size` for the tokio echo in `scenario`: the smallest power of
/// two that holds one whole client frame, at least [`TOKIO_MIN_READ_BUF`] (4 KiB for 64 B
/// messages, 32 KiB for 16 KiB ones), unless `GETTY_BENCH_TOKIO_READ_BUF` says otherwise.
///
/// tungstenite zero-fills that many bytes before every read (tungstenite-rs issue #547), so
/// its default of 128 KiB costs a 128 KiB `memset` per read: a tuned server sizes the buffer
/// to its messages.
fn tokio_read_buf(scenario: &Scenario, cfg: &Config) -> usize {
    let frame = masked_frame_len(scenario.size);
    cfg.tokio_read_buf
        .unwrap_or_else(|| frame.next_power_of_two().max(TOKIO_MIN_READ_BUF))
}

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

/// The getty-rs echo: every message goes back as one binary message.
struct Echo;

impl Handler<RawCodec, Ws> for Echo {
    fn on_message(&mut self, session: &mut Session<RawCodec, Ws>, message: Bytes) {
        let _ = session.write(message);
    }
}

enum Running {
    Getty(ReactorThread),
    /// The hand-written baseline and the tokio echo: both stop like an accept loop.
    AcceptLoop(AcceptThread),
}

/// A server on a thread of its own, and that thread's ids.
struct ServerThread {
    addr: SocketAddr,
    thread: ThreadIds,
    running: Running,
}

impl ServerThread {
    fn start(kind: Kind, tokio_read_buf: usize) -> io::Result<ServerThread> {
        match kind {
            Kind::Getty => start_getty(),
            Kind::Tokio => start_tokio(WebSocketConfig::default().read_buffer_size(tokio_read_buf)),
            Kind::Mio => start_baseline(),
            // `Config::from_env` does not offer it: message-io is in the TCP echo only.
            Kind::MessageIo => Err(io::Error::other("not a WebSocket echo")),
        }
    }

    fn stop(self) -> io::Result<()> {
        match self.running {
            Running::Getty(reactor) => {
                reactor.handle().shutdown();
                reactor.join()
            }
            Running::AcceptLoop(accept_loop) => accept_loop.stop(),
        }
    }
}

fn start_getty() -> io::Result<ServerThread> {
    let server = WsServer::builder()
        .route("/", |_| Ok((RawCodec, Echo)))
        .bind("127.0.0.1:0")?;
    let addr = server.local_addr();
    let (reactor, thread) = start_reactor_thread("getty-ws-echo", server)?;
    Ok(ServerThread {
        addr,
        thread,
        running: Running::Getty(reactor),
    })
}

fn start_tokio(config: WebSocketConfig) -> io::Result<ServerThread> {
    let serve = move |stream| {
        tokio::spawn(async move {
            let _ = tokio_echo(stream, config).await;
        });
    };
    let (accept_loop, thread) = start_tokio_thread("tokio-ws-echo", serve)?;
    Ok(ServerThread {
        addr: accept_loop.addr,
        thread,
        running: Running::AcceptLoop(accept_loop),
    })
}

fn start_baseline() -> io::Result<ServerThread> {
    let (accept_loop, thread) = start_mio_thread::<WsEcho>("ws-baseline")?;
    Ok(ServerThread {
        addr: accept_loop.addr,
        thread,
        running: Running::AcceptLoop(accept_loop),
    })
}

type TokioWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The tokio-tungstenite echo: feeds back every message that is ready, then flushes once.
async fn tokio_echo(stream: tokio::net::TcpStream, config: WebSocketConfig) -> Result<(), WsError> {
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    while let Some(first) = ws.next().await {
        feed_echo(&mut ws, first?).await?;
        for _ in 1..TOKIO_BATCH {
            match ws.next().now_or_never() {
                Some(Some(message)) => feed_echo(&mut ws, message?).await?,
                // The peer is gone: what is queued cannot reach it.
                Some(None) => return Ok(()),
                None => break,
            }
        }
        ws.flush().await?;
    }
    Ok(())
}

async fn feed_echo(ws: &mut TokioWs, message: Message) -> Result<(), WsError> {
    if message.is_binary() || message.is_text() {
        ws.feed(message).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The load generator's WebSocket client
// ---------------------------------------------------------------------------------------

/// The length of a masked client frame with a payload of `len` bytes.
fn masked_frame_len(len: usize) -> usize {
    let length_field = match len {
        0..126 => 0,
        126..=0xffff => 2,
        _ => 8,
    };
    2 + length_field + MASK_KEY.len() + len
}

/// One masked binary frame carrying `payload`.
fn masked_binary_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(masked_frame_len(payload.len()));
    frame.push(FIN_BINARY);
    match payload.len() {
        len if len < 126 => frame.push(MASK_BIT | len as u8),
        len if len <= usize::from(u16::MAX) => {
            frame.push(MASK_BIT | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(MASK_BIT | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK_KEY);
    let masked = payload.iter().zip(MASK_KEY.iter().cycle());
    frame.extend(masked.map(|(byte, mask)| byte ^ mask));
    debug_assert_eq!(frame.len(), masked_frame_len(payload.len()));
    frame
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The (header length, payload length) of the server frame at the start of `buf` once all
/// of it is there; an error if it is not an unmasked, unfragmented binary frame.
fn whole_server_frame(buf: &[u8]) -> io::Result<Option<(usize, usize)>> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first != FIN_BINARY || second & MASK_BIT != 0 {
        return Err(invalid(format!(
            "expected an unmasked binary frame, got {first:#04x} {second:#04x}"
        )));
    }
    let (header, payload) = match second & !MASK_BIT {
        126 if buf.len() >= 4 => (4, u64::from(u16::from_be_bytes([buf[2], buf[3]]))),
        127 if buf.len() >= 10 => {
            let bytes: [u8; 8] = buf[2..10].try_into().expect("eight bytes");
            (10, u64::from_be_bytes(bytes))
        }
        126 | 127 => return Ok(None),
        len => (2, u64::from(len)),
    };
    let payload = usize::try_from(payload).map_err(|_| invalid("frame too long"))?;
    Ok((buf.len() - header >= payload).then_some((header, payload)))
}

/// Connects and upgrades (blocking, each step within [`HANDSHAKE_TIMEOUT`]). Returns the
/// socket and whatever arrived after the response head.
fn upgrade(addr: SocketAddr) -> io::Result<(StdTcpStream, Vec<u8>)> {
    let mut stream = StdTcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.write_all(UPGRADE_REQUEST)?;
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    // Each pass reads at least one byte (or fails), and the head is bounded.
    while received.len() <= MAX_RESPONSE_HEAD {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            check_upgrade_response(&received[..end])?;
            return Ok((stream, received.split_off(end + 4)));
        }
        match stream.read(&mut chunk)? {
            0 => {
                return Err(invalid(
                    "the server closed the connection during the upgrade",
                ))
            }
            n => received.extend_from_slice(&chunk[..n]),
        }
    }
    Err(invalid("the upgrade response head is too long"))
}

fn check_upgrade_response(head: &[u8]) -> io::Result<()> {
    let switched = head.starts_with(b"HTTP/1.1 101");
    let accepted = head
        .windows(EXPECTED_ACCEPT.len())
        .any(|w| w == EXPECTED_ACCEPT);
    if switched && accepted {
        return Ok(());
    }
    Err(invalid(format!(
        "not a valid upgrade response: {:?}",
        String::from_utf8_lossy(head)
    )))
}

/// What every message of a run sends and expects back.
struct Payload {
    /// The masked frame, sent as it is.
    frame: Vec<u8>,
    /// The payload in clear, for the spot-check of each echo.
    clear: Vec<u8>,
}

impl Payload {
    fn random(size: usize) -> Payload {
        let clear = random_payload(size);
        Payload {
            frame: masked_binary_frame(&clear),
            clear,
        }
    }

    /// Compares the length and the first and last bytes: enough to catch a mix-up without
    /// charging the client a full comparison per message.
    fn matches(&self, echoed: &[u8]) -> bool {
        let edge = self.clear.len().min(8);
        echoed.len() == self.clear.len()
            && echoed[..edge] == self.clear[..edge]
            && echoed[echoed.len() - edge..] == self.clear[self.clear.len() - edge..]
    }
}

impl Framing for Payload {
    fn message(&self) -> &[u8] {
        &self.frame
    }

    fn whole_echo(&self, buf: &[u8]) -> io::Result<Option<usize>> {
        let Some((header, len)) = whole_server_frame(buf)? else {
            return Ok(None);
        };
        if !self.matches(&buf[header..header + len]) {
            return Err(invalid("the echo does not match what was sent"));
        }
        Ok(Some(header + len))
    }
}

// ---------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------

/// What one measured window produced.
#[derive(Debug, Clone, Copy)]
struct Measurement {
    messages: u64,
    elapsed: Duration,
    server_cpu: Duration,
    /// The kernel's share of the server thread's CPU time (from its clock ticks).
    server_sys_share: f64,
    client_cpu: Duration,
    other_cpus: f64,
    p50_ns: u64,
    p90_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
}

impl Measurement {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    fn per_server_cpu_sec(&self) -> f64 {
        self.messages as f64 / self.server_cpu.as_secs_f64().max(1e-9)
    }

    /// The server's CPU time per message, in user space and in the kernel (ns).
    fn user_sys_ns(&self) -> (f64, f64) {
        let per_message = self.server_cpu.as_secs_f64() * 1e9 / self.messages.max(1) as f64;
        let sys = per_message * self.server_sys_share;
        (per_message - sys, sys)
    }

    fn noisy(&self) -> bool {
        self.other_cpus > NOISY_OTHER_CPUS
    }
}

/// Drives one scenario against the server at `addr` (its thread: `server`) from the calling
/// thread: warm-up, then the measured window. Ends after warm-up + measure, whatever the
/// server does.
fn drive(
    addr: SocketAddr,
    server: ThreadIds,
    scenario: &Scenario,
    cfg: &Config,
) -> io::Result<Measurement> {
    let payload = Payload::random(scenario.size);
    let load = LoadGenerator::connect(scenario, payload, || upgrade(addr))?;
    let read_server = || {
        (
            clock_now(server.cpu_clock),
            thread_user_sys_ticks(server.tid),
        )
    };
    let window = load.run(cfg.warmup, cfg.measure, read_server)?;
    let ((cpu_start, (user_start, sys_start)), (cpu_end, (user_end, sys_end))) =
        (window.server_start, window.server_end);
    let (user, sys) = (user_end - user_start, sys_end - sys_start);
    Ok(Measurement {
        messages: window.messages,
        elapsed: window.elapsed,
        server_cpu: cpu_end.saturating_sub(cpu_start),
        server_sys_share: sys as f64 / (user + sys).max(1) as f64,
        client_cpu: window.client_cpu,
        other_cpus: window.other_cpus,
        p50_ns: window.latency.value_at_quantile(0.50),
        p90_ns: window.latency.value_at_quantile(0.90),
        p99_ns: window.latency.value_at_quantile(0.99),
        p999_ns: window.latency.value_at_quantile(0.999),
        max_ns: window.latency.max(),
    })
}

/// Starts a server, drives one scenario against it from a load-generator thread, stops it.
fn run_one(kind: Kind, scenario: &Scenario, cfg: &Config) -> io::Result<Measurement> {
    let server = ServerThread::start(kind, tokio_read_buf(scenario, cfg))?;
    let (addr, ids) = (server.addr, server.thread);
    let placement = scenario.placement(cfg);
    let (scenario, cfg) = (scenario.clone(), cfg.clone());
    let measured = on_load_thread("ws-load", placement, &[ids], move || {
        drive(addr, ids, &scenario, &cfg)
    });
    if let Err(e) = server.stop() {
        eprintln!("stopping the {} server: {e}", kind.name());
    }
    measured
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

/// The median of each figure over the rounds of one server and scenario.
#[derive(Debug, Clone, Copy)]
struct Figures {
    rate: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    server_cpu_secs: f64,
    server_util: f64,
    per_cpu: f64,
    /// The server's CPU time per message in user space and in the kernel (ns).
    user_ns: f64,
    sys_ns: f64,
    client_util: f64,
    other_cpus: f64,
}

impl Figures {
    fn of(runs: &[Measurement]) -> Figures {
        let m = |f: fn(&Measurement) -> f64| median(runs.iter().map(f).collect());
        Figures {
            rate: m(Measurement::rate),
            p50_us: m(|r| r.p50_ns as f64 / 1e3),
            p90_us: m(|r| r.p90_ns as f64 / 1e3),
            p99_us: m(|r| r.p99_ns as f64 / 1e3),
            p999_us: m(|r| r.p999_ns as f64 / 1e3),
            max_us: m(|r| r.max_ns as f64 / 1e3),
            server_cpu_secs: m(|r| r.server_cpu.as_secs_f64()),
            server_util: m(|r| r.server_cpu.as_secs_f64() / r.elapsed.as_secs_f64()),
            per_cpu: m(Measurement::per_server_cpu_sec),
            user_ns: m(|r| r.user_sys_ns().0),
            sys_ns: m(|r| r.user_sys_ns().1),
            client_util: m(|r| r.client_cpu.as_secs_f64() / r.elapsed.as_secs_f64()),
            other_cpus: m(|r| r.other_cpus),
        }
    }

    fn noisy(&self) -> bool {
        self.other_cpus > NOISY_OTHER_CPUS
    }

    /// One server's bars in a latency chart, in the order of [`CHART_PERCENTILES`].
    fn chart_series(&self, server: &str) -> chart::Series {
        chart::Series {
            name: server.to_owned(),
            micros: vec![
                self.p50_us,
                self.p90_us,
                self.p99_us,
                self.p999_us,
                self.max_us,
            ],
        }
    }
}

/// Draws the latency percentiles of one scenario's servers and prints the chart's path.
fn chart_scenario(scenario: &Scenario, title: &str, figures: &[(Kind, Figures)]) {
    chart::LatencyChart {
        bench: "ws_echo",
        scenario: &scenario.key.to_string(),
        title: &format!("ws_echo {title}: round-trip latency"),
        percentiles: &CHART_PERCENTILES,
        series: figures
            .iter()
            .map(|(kind, f)| f.chart_series(kind.name()))
            .collect(),
    }
    .report();
}

fn print_header() {
    println!(
        "{:<33} {:<12} {:>10} {:>8} {:>8} {:>10} {:>8} {:>15} {:>8} {:>6}",
        "scenario",
        "server",
        "msgs/s",
        "p50 µs",
        "p99 µs",
        "srv CPU s",
        "srv CPU",
        "msgs/srv-CPU-s",
        "cli CPU",
        "other"
    );
}

fn print_row(label: &str, server: &str, f: &Figures) {
    println!(
        "{label:<33} {server:<12} {:>10.0} {:>8.1} {:>8.1} {:>10.2} {:>7.0}% {:>15.0} {:>7.0}% {:>6.2}{}",
        f.rate,
        f.p50_us,
        f.p99_us,
        f.server_cpu_secs,
        f.server_util * 100.0,
        f.per_cpu,
        f.client_util * 100.0,
        f.other_cpus,
        if f.noisy() { "  NOISY" } else { "" }
    );
}

/// getty-rs over another server (`name`): higher is better for msgs/s and msgs/srv-CPU-s,
/// lower for latency.
fn print_ratio_row(label: &str, name: &str, g: &Figures, t: &Figures) {
    println!(
        "{label:<33} {:<12} {:>9.2}x {:>7.2}x {:>7.2}x {:>9.2}x {:>8} {:>14.2}x",
        name,
        g.rate / t.rate,
        g.p50_us / t.p50_us,
        g.p99_us / t.p99_us,
        g.server_cpu_secs / t.server_cpu_secs,
        "",
        g.per_cpu / t.per_cpu,
    );
}

/// The medians of each server. Other load changes how much work each wake-up of a server
/// finds, so a quiet run and a noisy one do not compare: when every server has a quiet run,
/// only the quiet runs count.
fn figures_of(runs: &[(Kind, Vec<Measurement>)]) -> Vec<(Kind, Figures)> {
    let quiet_everywhere = runs.iter().all(|(_, each)| each.iter().any(|m| !m.noisy()));
    runs.iter()
        .map(|(kind, each)| {
            let counted: Vec<Measurement> = each
                .iter()
                .filter(|m| !quiet_everywhere || !m.noisy())
                .copied()
                .collect();
            (*kind, Figures::of(&counted))
        })
        .collect()
}

/// The spread behind the medians: msgs/srv-CPU-s and p50 of every run.
fn print_each_run(runs: &[(Kind, Vec<Measurement>)]) {
    let servers: Vec<String> = runs
        .iter()
        .map(|(kind, each)| {
            let figures: Vec<String> = each
                .iter()
                .map(|m| {
                    format!(
                        "{:.0}k/{:.1}{}",
                        m.per_server_cpu_sec() / 1e3,
                        m.p50_ns as f64 / 1e3,
                        if m.noisy() { "(noisy)" } else { "" }
                    )
                })
                .collect();
            format!("{} {}", kind.name(), figures.join(" "))
        })
        .collect();
    println!(
        "  each run (msgs/srv-CPU-s / p50 µs): {}",
        servers.join("; ")
    );
}

/// Where each server's CPU time per message goes: its own code and the libraries it calls
/// (user), or the kernel (sys: the syscalls and the TCP stack).
fn print_user_sys(figures: &[(Kind, Figures)]) {
    let servers: Vec<String> = figures
        .iter()
        .map(|(kind, f)| format!("{} {:.0} + {:.0}", kind.name(), f.user_ns, f.sys_ns))
        .collect();
    println!(
        "  server CPU per message, user + sys ns (medians): {}",
        servers.join("; ")
    );
}

/// The scenario whose CPU efficiency issue 16 holds against the hand-written baseline.
const BASELINE_TARGET_SCENARIO: char = 'b';

/// getty-rs's share of the hand-written baseline's msgs/srv-CPU-s that issue 16 asks for.
const BASELINE_TARGET: f64 = 0.95;

/// One scenario's figures for the verdicts: getty-rs's and, when they ran, the others'.
struct Verdicts {
    scenario: Scenario,
    getty: Figures,
    baseline: Option<Figures>,
    tokio: Option<Figures>,
}

/// The targets for one scenario: against tokio, CPU efficiency >= 1.5x and p50 and p99
/// below tokio's; in (b), CPU efficiency >= 0.95 of the hand-written baseline's.
fn print_targets(v: &Verdicts) {
    let key = &v.scenario.label[..3];
    let g = &v.getty;
    let mut checks = Vec::new();
    if let Some(b) = &v.baseline {
        if v.scenario.key == BASELINE_TARGET_SCENARIO {
            let what = format!("CPU efficiency >= {BASELINE_TARGET} of hand-written");
            checks.push((
                what,
                g.per_cpu / b.per_cpu,
                BASELINE_TARGET,
                true,
                b.noisy(),
            ));
        }
    }
    if let Some(t) = &v.tokio {
        let noisy = t.noisy();
        checks.push((
            "CPU efficiency >= 1.5x tokio".into(),
            g.per_cpu / t.per_cpu,
            1.5,
            true,
            noisy,
        ));
        checks.push((
            "p50 below tokio's".into(),
            g.p50_us / t.p50_us,
            1.0,
            false,
            noisy,
        ));
        checks.push((
            "p99 below tokio's".into(),
            g.p99_us / t.p99_us,
            1.0,
            false,
            noisy,
        ));
    }
    for (what, ratio, bound, at_least, other_noisy) in checks {
        let ok = if at_least {
            ratio >= bound
        } else {
            ratio < bound
        };
        let noisy = if g.noisy() || other_noisy {
            " (noisy run)"
        } else {
            ""
        };
        println!(
            "{:<48} {:>7.2}x   {}{noisy}",
            format!("{key} {what}"),
            ratio,
            verdict(ok)
        );
    }
}

fn main() {
    let cfg = Config::from_env();
    println!(
        "getty-rs ws_echo{}: warm-up {:.1} s + {:.1} s measured per run, {} round(s); \
         load average {} at start",
        if cfg.quick { " (QUICK smoke mode)" } else { "" },
        cfg.warmup.as_secs_f64(),
        cfg.measure.as_secs_f64(),
        cfg.rounds,
        load_average()
    );
    println!("getty-rs: WsServer + RawCodec, on_message -> session.write(msg), one reactor thread");
    println!(
        "hand-written: mio loop, one read per readiness, frames unmasked into one output \
         buffer, one write per batch (support/ws_baseline.rs)"
    );
    let read_buf = match cfg.tokio_read_buf {
        Some(bytes) => format!("{bytes} B (GETTY_BENCH_TOKIO_READ_BUF)"),
        None => "sized to the messages: 4 KiB at 64 B, 32 KiB at 16 KiB".to_owned(),
    };
    println!(
        "tokio-tung: current-thread runtime, task per connection, accept_async_with_config \
         (read_buffer_size {read_buf}); feed each ready message (at most {TOKIO_BATCH}), then \
         one flush"
    );
    println!(
        "srv CPU s: server thread CPU time in the window; srv CPU / cli CPU: share of a CPU \
         used by the server / the load generator; other: CPUs busy outside this process"
    );

    let mut verdicts = Vec::new();
    let mut failures = 0;
    println!();
    print_header();
    for scenario in scenarios() {
        if !cfg.scenarios.contains(scenario.key) {
            continue;
        }
        let title = scenario.title(&cfg);
        let runs = run_rounds(
            &cfg.kinds,
            cfg.rounds,
            |kind| run_one(kind, &scenario, &cfg),
            |kind, e| {
                failures += 1;
                eprintln!("{} {}: {e}", scenario.label, kind.name());
            },
        );
        let figures = figures_of(&runs);
        for (kind, f) in &figures {
            print_row(&title, kind.name(), f);
        }
        if cfg.rounds > 1 {
            print_each_run(&runs);
        }
        print_user_sys(&figures);
        let of = |kind| figures.iter().find(|(k, _)| *k == kind).map(|(_, f)| *f);
        if let Some(getty) = of(Kind::Getty) {
            let (baseline, tokio) = (of(Kind::Mio), of(Kind::Tokio));
            if let Some(b) = &baseline {
                print_ratio_row(&title, "getty/hand", &getty, b);
            }
            if let Some(t) = &tokio {
                print_ratio_row(&title, "getty/tokio", &getty, t);
            }
            verdicts.push(Verdicts {
                scenario: scenario.clone(),
                getty,
                baseline,
                tokio,
            });
        }
        chart_scenario(&scenario, &title, &figures);
    }

    println!();
    println!("targets (from the issues)                                 ratio   verdict");
    if cfg.quick {
        println!("(quick smoke mode: the runs are too short for these verdicts to mean much)");
    }
    for v in &verdicts {
        print_targets(v);
    }
    println!("load average {} at the end", load_average());
    if failures > 0 {
        eprintln!("{failures} run(s) failed");
        std::process::exit(1);
    }
}
