//! WebSocket echo: getty-rs against a tokio-tungstenite echo, under the same load generator.
//!
//! Both servers run in this one process, each on a thread of its own, one after the other:
//!
//! - **getty-rs**: `WsServer::builder().route("/", |_| Ok((RawCodec, Echo)))` on one reactor
//!   thread (`Reactor::start_thread`), default options. `RawCodec` over WebSocket hands the
//!   handler one `Bytes` per message, and `Echo::on_message` answers with
//!   `session.write(msg)`: one binary message back.
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
//! The load generator is one mio thread, the same code for both servers. Each of its N
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
//! "other" is the CPU the rest of the machine used during the window (from /proc/stat, less
//! this process): above [`NOISY_OTHER_CPUS`] a run is flagged as noisy.
//!
//! Scenarios: (a) 1 conn x 1 in flight x 64 B; (b) 50 x 16 x 64 B; (c) 1 x 1 x 16 KiB;
//! (d) 50 x 4 x 16 KiB. In (a) and (c) client and server take turns (one message in
//! flight), and their cost per message depends on whether the scheduler puts them on one CPU
//! or on two (a cross-CPU wake-up costs more, in a VM much more): unpinned, runs of the same
//! server differed up to 4x. So there both threads are pinned to one CPU, the least busy one
//! (`GETTY_BENCH_PIN=0` turns that off). (b) and (d) pin nothing. The targets, per scenario: getty-rs serves at least 1.5x
//! the messages per server CPU-second of tokio-tungstenite, with a lower p50 and p99.
//!
//! Run it with `cargo bench --bench ws_echo`. Environment:
//! - `GETTY_BENCH_SECS` (default 5): measured seconds per run;
//! - `GETTY_BENCH_WARMUP_SECS` (default 2, at most `GETTY_BENCH_SECS`): warm-up seconds;
//! - `GETTY_BENCH_ROUNDS` (default 1): runs per server and scenario, alternating which
//!   server goes first; the table shows the median of each figure, over the quiet runs only
//!   when every server had one (then "other" is under the noise threshold);
//! - `GETTY_BENCH_SCENARIOS` (default `abcd`): which scenarios to run;
//! - `GETTY_BENCH_ONLY` (`getty` or `tokio`): one server only (for profiling);
//! - `GETTY_BENCH_TOKIO_READ_BUF` (bytes): the tokio echo's `read_buffer_size` in every
//!   scenario (131072 is tungstenite's default);
//! - `GETTY_BENCH_PIN=0`: do not pin (a) and (c);
//! - `GETTY_BENCH_QUICK=1`: smoke mode (0.2 s warm-up, 0.5 s runs). Quick mode is also what
//!   runs when the binary is started without `--bench` (as `cargo test --benches` does).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use getty::codec::{Bytes, RawCodec};
use getty::reactor::ReactorThread;
use getty::ws::WsServer;
use getty::{Handler, Reactor, Session};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

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

/// A client connection's read buffer never needs to grow this large: it holds at most the
/// echoes of the messages in flight.
const MAX_CLIENT_READ_BUF: usize = 64 << 20;

/// Bounds every blocking step of a connection's upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most messages the tokio echo feeds before it flushes (tokio's cooperative budget would
/// stop it a little later anyway).
const TOKIO_BATCH: usize = 64;

/// The smallest tungstenite `read_buffer_size` the tokio echo gets (see
/// [`tokio_read_buf`]).
const TOKIO_MIN_READ_BUF: usize = 4 * 1024;

/// Above this many CPUs busy outside this process during a window, a run is noisy.
const NOISY_OTHER_CPUS: f64 = 0.1;

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Getty,
    Tokio,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Getty => "getty-rs",
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
    /// Pin the single-connection scenarios' client and server to one CPU.
    pin: bool,
    quick: bool,
}

fn env_f64(name: &str) -> Option<f64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Some(v),
        _ => {
            eprintln!("ignoring {name}={value:?}: not a non-negative number");
            None
        }
    }
}

impl Config {
    fn from_env() -> Config {
        // `cargo bench` passes `--bench`; anything else (`cargo test --benches`) smoke-tests.
        let quick = std::env::var("GETTY_BENCH_QUICK").is_ok_and(|v| v != "0")
            || !std::env::args().any(|a| a == "--bench");
        let (default_measure, default_warmup) = if quick { (0.5, 0.2) } else { (5.0, 2.0) };
        let measure = env_f64("GETTY_BENCH_SECS")
            .unwrap_or(default_measure)
            .max(0.05);
        let warmup = env_f64("GETTY_BENCH_WARMUP_SECS")
            .unwrap_or(default_warmup)
            .min(measure);
        let kinds = match std::env::var("GETTY_BENCH_ONLY").as_deref() {
            Ok("getty") | Ok("getty-rs") => vec![Kind::Getty],
            Ok("tokio") => vec![Kind::Tokio],
            _ => vec![Kind::Getty, Kind::Tokio],
        };
        Config {
            warmup: Duration::from_secs_f64(warmup),
            measure: Duration::from_secs_f64(measure),
            rounds: env_f64("GETTY_BENCH_ROUNDS").map_or(1, |r| (r as usize).max(1)),
            scenarios: std::env::var("GETTY_BENCH_SCENARIOS")
                .unwrap_or_else(|_| "abcd".to_owned())
                .to_ascii_lowercase(),
            kinds,
            tokio_read_buf: env_f64("GETTY_BENCH_TOKIO_READ_BUF").map(|b| (b as usize).max(64)),
            pin: std::env::var("GETTY_BENCH_PIN").map_or(true, |v| v != "0"),
            quick,
        }
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    key: char,
    label: &'static str,
    conns: usize,
    in_flight: usize,
    size: usize,
    /// Client and server share one CPU (see the module documentation).
    pin: bool,
}

impl Scenario {
    /// The label, and whether client and server share a pinned CPU.
    fn title(&self, cfg: &Config) -> String {
        let pinned = if self.pin && cfg.pin { ", pinned" } else { "" };
        format!("{}{pinned}", self.label)
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
// CPU clocks and machine load
// ---------------------------------------------------------------------------------------

/// A thread's kernel id (to pin it) and its CPU-time clock (readable from any thread).
#[derive(Debug, Clone, Copy)]
struct ThreadIds {
    tid: libc::pid_t,
    cpu_clock: libc::clockid_t,
}

fn current_thread_ids() -> ThreadIds {
    let mut cpu_clock: libc::clockid_t = 0;
    // SAFETY: `cpu_clock` is a valid out-pointer; pthread_self is always a live thread.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut cpu_clock) };
    assert_eq!(rc, 0, "pthread_getcpuclockid failed");
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    ThreadIds { tid, cpu_clock }
}

/// Pins thread `tid` (0: the calling thread) to `cpu`.
fn pin_thread(tid: libc::pid_t, cpu: usize) -> io::Result<()> {
    // SAFETY: `set` is a plain bit set, zeroed and then filled by CPU_SET.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a valid out-pointer of the size passed.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// The allowed CPU that was the least busy over the last 200 ms: a CPU that other
/// processes keep busy would starve the pinned client and server.
fn idlest_cpu() -> usize {
    let before = cpu_jiffies();
    std::thread::sleep(Duration::from_millis(200));
    let after = cpu_jiffies();
    let busy_share = |cpu: usize| {
        let b = before.iter().find(|c| c.cpu == cpu)?;
        let a = after.iter().find(|c| c.cpu == cpu)?;
        let total = a.total.saturating_sub(b.total).max(1);
        Some(a.busy.saturating_sub(b.busy) as f64 / total as f64)
    };
    allowed_cpus()
        .into_iter()
        .min_by(|&x, &y| {
            let share = |cpu| busy_share(cpu).unwrap_or(1.0);
            // Ties go to the higher CPU, away from CPU 0 and its interrupts.
            share(x).total_cmp(&share(y)).then(y.cmp(&x))
        })
        .unwrap_or(0)
}

fn clock_now(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", io::Error::last_os_error());
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The busy and total jiffies of one CPU since boot.
struct CpuJiffies {
    cpu: usize,
    busy: u64,
    total: u64,
}

/// Every CPU's jiffies, from /proc/stat.
fn cpu_jiffies() -> Vec<CpuJiffies> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let cpu = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
            let values: Vec<u64> = fields.filter_map(|v| v.parse().ok()).collect();
            let total: u64 = values.iter().sum();
            // idle and iowait are the 4th and 5th values.
            let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
            Some(CpuJiffies {
                cpu,
                busy: total - idle,
                total,
            })
        })
        .collect()
}

/// Busy and total jiffies summed over every CPU, and the number of CPUs.
fn machine_jiffies() -> (u64, u64, usize) {
    let cpus = cpu_jiffies();
    let busy = cpus.iter().map(|c| c.busy).sum();
    let total = cpus.iter().map(|c| c.total).sum();
    (busy, total, cpus.len())
}

/// User plus system jiffies of this whole process (fields 14 and 15 of /proc/self/stat).
fn process_jiffies() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name may contain spaces: count fields from its closing ')', after which
    // comes field 3.
    let fields: Vec<u64> = stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| {
        rest.split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect()
    });
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}

/// What the rest of the machine does during a window: read at its start, then asked how
/// many CPUs it kept busy on average.
struct OtherLoad {
    machine: (u64, u64, usize),
    process: u64,
}

impl OtherLoad {
    fn start() -> OtherLoad {
        OtherLoad {
            machine: machine_jiffies(),
            process: process_jiffies(),
        }
    }

    fn cpus_since(&self) -> f64 {
        let (busy, total, cpus) = machine_jiffies();
        let ours = process_jiffies().saturating_sub(self.process) as f64;
        let others = busy.saturating_sub(self.machine.0) as f64 - ours;
        let wall = total.saturating_sub(self.machine.1) as f64 / cpus.max(1) as f64;
        (others / wall.max(1.0)).max(0.0)
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

/// The getty-rs echo: every message goes back as one binary message.
struct Echo;

impl Handler<RawCodec> for Echo {
    fn on_message(&mut self, session: &mut Session<RawCodec>, message: Bytes) {
        let _ = session.write(message);
    }
}

enum Running {
    Getty(ReactorThread),
    Tokio {
        stop: Arc<AtomicBool>,
        thread: JoinHandle<io::Result<()>>,
    },
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
        }
    }

    fn stop(self) -> io::Result<()> {
        match self.running {
            Running::Getty(reactor) => {
                reactor.handle().shutdown();
                reactor.join()
            }
            Running::Tokio { stop, thread } => {
                stop.store(true, Ordering::Release);
                // The accept loop only looks at the flag when a connection wakes it.
                let _ = StdTcpStream::connect(self.addr);
                thread
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("the tokio server panicked")))
            }
        }
    }
}

fn start_getty() -> io::Result<ServerThread> {
    let server = WsServer::builder()
        .route("/", |_| Ok((RawCodec, Echo)))
        .bind("127.0.0.1:0")?;
    let addr = server.local_addr();
    let (ids_tx, ids_rx) = mpsc::channel();
    let reactor = Reactor::start_thread("getty-ws-echo", move |reactor| {
        let _ = ids_tx.send(current_thread_ids());
        reactor.spawn(Box::new(server));
        Ok(())
    })?;
    let thread = ids_rx
        .recv()
        .map_err(|_| io::Error::other("the getty-rs server thread is gone"))?;
    Ok(ServerThread {
        addr,
        thread,
        running: Running::Getty(reactor),
    })
}

fn start_tokio(config: WebSocketConfig) -> io::Result<ServerThread> {
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<(SocketAddr, ThreadIds)>>();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let server = std::thread::Builder::new()
        .name("tokio-ws-echo".to_owned())
        .spawn(move || -> io::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = match tokio_listener() {
                    Ok(listener) => listener,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let ready = listener.local_addr().map(|a| (a, current_thread_ids()));
                let _ = ready_tx.send(ready);
                tokio_accept_loop(listener, stop_flag, config).await
            })
        })?;
    let (addr, thread) = ready_rx
        .recv()
        .map_err(|_| io::Error::other("the tokio server thread is gone"))??;
    Ok(ServerThread {
        addr,
        thread,
        running: Running::Tokio {
            stop,
            thread: server,
        },
    })
}

/// A listener with getty-rs's backlog: `tokio::net::TcpListener::bind` listens with 128,
/// and a burst of 50 connects could overflow it into one-second SYN retransmits.
fn tokio_listener() -> io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.listen(1024)
}

/// Spawns an echo task per connection until `stop` is set (and a connection wakes it).
async fn tokio_accept_loop(
    listener: tokio::net::TcpListener,
    stop: Arc<AtomicBool>,
    config: WebSocketConfig,
) -> io::Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // An aborted connection or no descriptors left: back off a little.
                eprintln!("tokio accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = tokio_echo(stream, config).await;
        });
    }
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
        let mut rng = fastrand::Rng::with_seed(0x0067_6574_7479);
        let clear: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
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

/// One client connection: buffered reads, buffered writes, and the send time of each
/// message in flight (echoes come back in order).
struct ClientConn {
    sock: mio::net::TcpStream,
    rbuf: Vec<u8>,
    rlo: usize,
    rhi: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    sent: VecDeque<Instant>,
}

impl ClientConn {
    fn open(
        addr: SocketAddr,
        registry: &mio::Registry,
        token: Token,
        buf_len: usize,
    ) -> io::Result<Self> {
        let (stream, early) = upgrade(addr)?;
        stream.set_nonblocking(true)?;
        let mut sock = mio::net::TcpStream::from_std(stream);
        registry.register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)?;
        let mut rbuf = vec![0; buf_len.max(early.len())];
        rbuf[..early.len()].copy_from_slice(&early);
        Ok(ClientConn {
            sock,
            rbuf,
            rlo: 0,
            rhi: early.len(),
            wbuf: Vec::with_capacity(buf_len),
            wpos: 0,
            sent: VecDeque::new(),
        })
    }

    fn queue(&mut self, frame: &[u8], at: Instant) {
        self.wbuf.extend_from_slice(frame);
        self.sent.push_back(at);
    }

    /// Writes until the buffer is empty or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match self.sock.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        Ok(())
    }

    /// Reads until the socket is drained, making room as needed.
    fn fill(&mut self) -> io::Result<()> {
        loop {
            if self.rhi == self.rbuf.len() {
                self.make_room()?;
            }
            match self.sock.read(&mut self.rbuf[self.rhi..]) {
                Ok(0) => return Err(invalid("the server closed a connection")),
                Ok(n) => self.rhi += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves unparsed bytes to the front, or grows the buffer when it is all unparsed (up
    /// to [`MAX_CLIENT_READ_BUF`]: more means the server sends what nobody asked for).
    fn make_room(&mut self) -> io::Result<()> {
        if self.rlo > 0 {
            self.rbuf.copy_within(self.rlo..self.rhi, 0);
            self.rhi -= self.rlo;
            self.rlo = 0;
        } else if self.rbuf.len() < MAX_CLIENT_READ_BUF {
            self.rbuf.resize(self.rbuf.len() * 2, 0);
        } else {
            return Err(invalid("the server sent more than was asked for"));
        }
        Ok(())
    }

    /// Takes every whole echo that arrived, records its round trip (when a histogram is
    /// given) and sends a new message for each.
    fn on_readable(
        &mut self,
        payload: &Payload,
        mut hist: Option<&mut Histogram<u64>>,
    ) -> io::Result<u64> {
        self.fill()?;
        let now = Instant::now();
        let mut echoes = 0;
        while let Some((header, len)) = whole_server_frame(&self.rbuf[self.rlo..self.rhi])? {
            let start = self.rlo + header;
            if !payload.matches(&self.rbuf[start..start + len]) {
                return Err(invalid("the echo does not match what was sent"));
            }
            self.rlo = start + len;
            let sent = self
                .sent
                .pop_front()
                .ok_or_else(|| invalid("an echo nobody asked for"))?;
            if let Some(h) = hist.as_deref_mut() {
                h.saturating_record((now - sent).as_nanos().max(1) as u64);
            }
            echoes += 1;
            self.queue(&payload.frame, now);
        }
        if self.rlo == self.rhi {
            (self.rlo, self.rhi) = (0, 0);
        }
        Ok(echoes)
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
    client_cpu: Duration,
    other_cpus: f64,
    p50_ns: u64,
    p99_ns: u64,
}

impl Measurement {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    fn per_server_cpu_sec(&self) -> f64 {
        self.messages as f64 / self.server_cpu.as_secs_f64().max(1e-9)
    }

    fn noisy(&self) -> bool {
        self.other_cpus > NOISY_OTHER_CPUS
    }
}

/// Where the measured window started: the time and both CPU clocks then.
struct Window {
    start: Instant,
    server_cpu: Duration,
    client_cpu: Duration,
    other: OtherLoad,
}

impl Window {
    fn open(server_clock: libc::clockid_t) -> Window {
        Window {
            start: Instant::now(),
            server_cpu: clock_now(server_clock),
            client_cpu: clock_now(libc::CLOCK_THREAD_CPUTIME_ID),
            other: OtherLoad::start(),
        }
    }

    fn close(
        &self,
        server_clock: libc::clockid_t,
        hist: &Histogram<u64>,
        messages: u64,
    ) -> Measurement {
        Measurement {
            messages,
            elapsed: self.start.elapsed(),
            server_cpu: clock_now(server_clock).saturating_sub(self.server_cpu),
            client_cpu: clock_now(libc::CLOCK_THREAD_CPUTIME_ID).saturating_sub(self.client_cpu),
            other_cpus: self.other.cpus_since(),
            p50_ns: hist.value_at_quantile(0.50),
            p99_ns: hist.value_at_quantile(0.99),
        }
    }
}

/// Drives one scenario against the server at `addr` from the calling thread: warm-up, then
/// the measured window. Ends after warm-up + measure, whatever the server does.
fn drive(
    addr: SocketAddr,
    server_clock: libc::clockid_t,
    scenario: &Scenario,
    cfg: &Config,
) -> io::Result<Measurement> {
    let payload = Payload::random(scenario.size);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let buf_len = (2 * scenario.in_flight * payload.frame.len()).max(64 * 1024);
    let mut conns = (0..scenario.conns)
        .map(|i| ClientConn::open(addr, poll.registry(), Token(i), buf_len))
        .collect::<io::Result<Vec<_>>>()?;

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| io::Error::other(format!("histogram: {e}")))?;
    let start = Instant::now();
    for conn in &mut conns {
        for _ in 0..scenario.in_flight {
            conn.queue(&payload.frame, start);
        }
        conn.flush()?;
    }
    let warm_end = start + cfg.warmup;
    let mut window: Option<Window> = None;
    let mut messages = 0;
    loop {
        match &window {
            None if Instant::now() >= warm_end => window = Some(Window::open(server_clock)),
            Some(w) if w.start.elapsed() >= cfg.measure => {
                return Ok(w.close(server_clock, &hist, messages))
            }
            _ => {}
        }
        // A short timeout, so that the clock is checked even if the server stalls.
        match poll.poll(&mut events, Some(Duration::from_millis(5))) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => result?,
        }
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let measuring = window.as_ref().map(|_| &mut hist);
                let echoes = conn.on_readable(&payload, measuring)?;
                if window.is_some() {
                    messages += echoes;
                }
            }
            conn.flush()?;
        }
    }
}

/// Starts a server, drives one scenario against it from a load-generator thread, stops it.
fn run_one(kind: Kind, scenario: &Scenario, cfg: &Config) -> io::Result<Measurement> {
    let server = ServerThread::start(kind, tokio_read_buf(scenario, cfg))?;
    let (addr, ids) = (server.addr, server.thread);
    let pin_cpu = (scenario.pin && cfg.pin).then(idlest_cpu);
    let (scenario, cfg) = (scenario.clone(), cfg.clone());
    let client = std::thread::Builder::new()
        .name("ws-load".to_owned())
        .spawn(move || {
            if let Some(cpu) = pin_cpu {
                pin_thread(0, cpu)?;
                pin_thread(ids.tid, cpu)?;
            }
            drive(addr, ids.cpu_clock, &scenario, &cfg)
        })?;
    let measured = client
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the load generator panicked")));
    if let Err(e) = server.stop() {
        eprintln!("stopping the {} server: {e}", kind.name());
    }
    measured
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The median of each figure over the rounds of one server and scenario.
#[derive(Debug, Clone, Copy)]
struct Figures {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    server_cpu_secs: f64,
    server_util: f64,
    per_cpu: f64,
    client_util: f64,
    other_cpus: f64,
}

impl Figures {
    fn of(runs: &[Measurement]) -> Figures {
        let m = |f: fn(&Measurement) -> f64| median(runs.iter().map(f).collect());
        Figures {
            rate: m(Measurement::rate),
            p50_us: m(|r| r.p50_ns as f64 / 1e3),
            p99_us: m(|r| r.p99_ns as f64 / 1e3),
            server_cpu_secs: m(|r| r.server_cpu.as_secs_f64()),
            server_util: m(|r| r.server_cpu.as_secs_f64() / r.elapsed.as_secs_f64()),
            per_cpu: m(Measurement::per_server_cpu_sec),
            client_util: m(|r| r.client_cpu.as_secs_f64() / r.elapsed.as_secs_f64()),
            other_cpus: m(|r| r.other_cpus),
        }
    }

    fn noisy(&self) -> bool {
        self.other_cpus > NOISY_OTHER_CPUS
    }
}

fn print_header() {
    println!(
        "{:<31} {:<11} {:>10} {:>8} {:>8} {:>10} {:>8} {:>15} {:>8} {:>6}",
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
        "{label:<31} {server:<11} {:>10.0} {:>8.1} {:>8.1} {:>10.2} {:>7.0}% {:>15.0} {:>7.0}% {:>6.2}{}",
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

/// getty-rs over tokio: higher is better for msgs/s and msgs/srv-CPU-s, lower for latency.
fn print_ratio_row(label: &str, g: &Figures, t: &Figures) {
    println!(
        "{label:<31} {:<11} {:>9.2}x {:>7.2}x {:>7.2}x {:>9.2}x {:>8} {:>14.2}x",
        "getty/tokio",
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

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// The targets for one scenario: CPU efficiency >= 1.5x, p50 and p99 below tokio's.
fn print_targets(scenario: &Scenario, g: &Figures, t: &Figures) {
    let noisy = if g.noisy() || t.noisy() {
        " (noisy run)"
    } else {
        ""
    };
    let key = &scenario.label[..3];
    let checks = [
        ("CPU efficiency >= 1.5x", g.per_cpu / t.per_cpu, 1.5, true),
        ("p50 below tokio's", g.p50_us / t.p50_us, 1.0, false),
        ("p99 below tokio's", g.p99_us / t.p99_us, 1.0, false),
    ];
    for (what, ratio, bound, at_least) in checks {
        let ok = if at_least {
            ratio >= bound
        } else {
            ratio < bound
        };
        println!(
            "{:<40} {:>7.2}x   {}{noisy}",
            format!("{key} {what}"),
            ratio,
            verdict(ok)
        );
    }
}

/// Runs every round of one scenario (alternating which server goes first) and returns the
/// measurements of each server that completed a run.
fn run_scenario(
    scenario: &Scenario,
    cfg: &Config,
    failures: &mut usize,
) -> Vec<(Kind, Vec<Measurement>)> {
    let mut runs: Vec<(Kind, Measurement)> = Vec::new();
    for round in 0..cfg.rounds {
        let mut order = cfg.kinds.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for kind in order {
            match run_one(kind, scenario, cfg) {
                Ok(m) => runs.push((kind, m)),
                Err(e) => {
                    *failures += 1;
                    eprintln!("{} {}: {e}", scenario.label, kind.name());
                }
            }
        }
    }
    cfg.kinds
        .iter()
        .filter_map(|&kind| {
            let mine: Vec<Measurement> = runs
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, m)| *m)
                .collect();
            (!mine.is_empty()).then_some((kind, mine))
        })
        .collect()
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
        let runs = run_scenario(&scenario, &cfg, &mut failures);
        let figures = figures_of(&runs);
        for (kind, f) in &figures {
            print_row(&title, kind.name(), f);
        }
        if cfg.rounds > 1 {
            print_each_run(&runs);
        }
        if let [(Kind::Getty, g), (Kind::Tokio, t)] = figures[..] {
            print_ratio_row(&title, &g, &t);
            verdicts.push((scenario, g, t));
        }
    }

    println!();
    println!("targets (from the issue)                 getty/tokio  verdict");
    if cfg.quick {
        println!("(quick smoke mode: the runs are too short for these verdicts to mean much)");
    }
    for (scenario, g, t) in &verdicts {
        print_targets(scenario, g, t);
    }
    println!("load average {} at the end", load_average());
    if failures > 0 {
        eprintln!("{failures} run(s) failed");
        std::process::exit(1);
    }
}
