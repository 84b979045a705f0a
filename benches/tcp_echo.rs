//! TCP echo: getty-rs against a tokio current-thread echo, under the same load generator.
//!
//! Both servers speak 4-byte big-endian length-prefixed frames and run on a thread of their
//! own, one after the other, in this one process:
//!
//! - **getty-rs**: `TcpServer` with `LengthFieldCodec::default()` and a handler whose
//!   `on_message` writes the message back (`session.write(msg)`), on one reactor thread.
//! - **tokio**: a current-thread runtime, one task per connection. The default (`framed`)
//!   task wraps the socket in an 8 KiB `BufReader`, reads each frame with `read_exact`
//!   (header, then body) and answers with one `write_all` per batch: it writes when the
//!   bytes already buffered hold no further whole frame. That is what a tuned tokio echo
//!   does (a strawman would `write_all` every frame). `GETTY_BENCH_TOKIO=raw` switches to
//!   the minimal "read into an 8 KiB buffer, `write_all` what was read" echo, which does no
//!   framing at all (cheaper per 64 B message, but more syscalls per 16 KiB one). The
//!   listener gets getty-rs's backlog (1024), and accepted sockets get TCP_NODELAY, which
//!   getty-rs sets by default.
//!
//! The load generator is one mio thread that keeps N connections x K messages in flight and
//! records every round trip in an HDR histogram. A run warms up (not measured), then
//! measures for a fixed time. "Server CPU" is the server thread's own CPU time (its
//! `CLOCK_THREAD_CPUTIME_ID` clock, read through `pthread_getcpuclockid` at the start and
//! the end of the measured window), so "msgs per server CPU-second" is the server's cost per
//! echoed message whatever the load generator managed to offer.
//!
//! Scenarios: (a) 1 connection x 1 in flight x 64 B, client and server pinned to one CPU;
//! (b) 50 x 16 x 64 B; (c) 10 x 4 x 16 KiB. Then the idle-connection test: 10,000 idle
//! connections (fewer if RLIMIT_NOFILE is too low) to each server, each in a child process
//! of its own (this binary re-executed) so that neither sees the other's freed heap, and the
//! growth of VmRSS per connection.
//!
//! Environment:
//! - `GETTY_BENCH_SECS` (default 5): measured seconds per run;
//! - `GETTY_BENCH_WARMUP_SECS` (default 3, at most `GETTY_BENCH_SECS`): warm-up seconds;
//! - `GETTY_BENCH_ROUNDS` (default 1): runs per server and scenario, alternating the order;
//!   the table shows the median of each figure;
//! - `GETTY_BENCH_CONNS` (default 10000): idle connections for the RSS test;
//! - `GETTY_BENCH_SCENARIOS` (default `abcr`): which of a, b, c and r (the RSS test) to run;
//! - `GETTY_BENCH_ONLY` (`getty` or `tokio`): run one server only (for profiling);
//! - `GETTY_BENCH_TOKIO` (`framed` or `raw`): the tokio echo variant;
//! - `GETTY_BENCH_TOKIO_BUF` (default 8192): the framed tokio echo's `BufReader` capacity
//!   (scenario (c) depends on it: with 8 KiB tokio spends about three syscalls a message);
//! - `GETTY_BENCH_QUICK=1`: smoke mode (0.2 s warm-up, 0.5 s runs, 200 idle connections).
//!   Quick mode is also what runs when the binary is started without `--bench` (as
//!   `cargo test --benches` does), so CI only smoke-tests it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use getty::codec::{Bytes, LengthFieldCodec};
use getty::reactor::ReactorThread;
use getty::tcp::TcpServer;
use getty::{Handler, Reactor, Session};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

/// Largest frame body either server accepts.
const MAX_BODY: usize = 1 << 20;

/// Idle connections opened (and kept) before the RSS baseline is read, so one-time costs
/// (the first pooled buffer, the first slab pages) are not charged to the measured ones.
const RSS_WARM_CONNS: usize = 16;

/// File descriptors kept free for everything but the idle connections.
const RESERVED_FDS: usize = 64;

/// Sessions opened by the getty-rs server (counted in `on_open`).
static GETTY_OPENED: AtomicUsize = AtomicUsize::new(0);
/// Connections accepted by the tokio server.
static TOKIO_OPENED: AtomicUsize = AtomicUsize::new(0);

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
            Kind::Tokio => "tokio",
        }
    }

    fn opened(self) -> &'static AtomicUsize {
        match self {
            Kind::Getty => &GETTY_OPENED,
            Kind::Tokio => &TOKIO_OPENED,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokioEcho {
    /// BufReader of `buf` bytes + read_exact(header) + read_exact(body), one write_all per
    /// batch.
    Framed { buf: usize },
    /// read into an 8 KiB buffer, write_all what was read.
    Raw,
}

#[derive(Debug, Clone)]
struct Config {
    warmup: Duration,
    measure: Duration,
    rounds: usize,
    rss_conns: usize,
    scenarios: String,
    only: Option<Kind>,
    tokio_echo: TokioEcho,
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
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = std::env::var("GETTY_BENCH_QUICK").is_ok_and(|v| v != "0")
            || args.iter().any(|a| a == "--quick" || a == "quick")
            || !args.iter().any(|a| a == "--bench");
        let (default_measure, default_warmup, default_conns): (f64, f64, f64) = if quick {
            (0.5, 0.2, 200.0)
        } else {
            (5.0, 3.0, 10_000.0)
        };
        let measure = env_f64("GETTY_BENCH_SECS")
            .unwrap_or(default_measure)
            .max(0.05);
        let warmup = env_f64("GETTY_BENCH_WARMUP_SECS").unwrap_or(default_warmup.min(measure));
        let only = match std::env::var("GETTY_BENCH_ONLY").as_deref() {
            Ok("getty") | Ok("getty-rs") => Some(Kind::Getty),
            Ok("tokio") => Some(Kind::Tokio),
            _ => None,
        };
        let tokio_echo = match std::env::var("GETTY_BENCH_TOKIO").as_deref() {
            Ok("raw") => TokioEcho::Raw,
            _ => TokioEcho::Framed {
                buf: env_f64("GETTY_BENCH_TOKIO_BUF").map_or(8 * 1024, |b| (b as usize).max(64)),
            },
        };
        Config {
            warmup: Duration::from_secs_f64(warmup),
            measure: Duration::from_secs_f64(measure),
            rounds: env_f64("GETTY_BENCH_ROUNDS").map_or(1, |r| (r as usize).max(1)),
            rss_conns: env_f64("GETTY_BENCH_CONNS").map_or(default_conns, |c| c.max(1.0)) as usize,
            scenarios: std::env::var("GETTY_BENCH_SCENARIOS")
                .unwrap_or_else(|_| "abcr".to_owned())
                .to_ascii_lowercase(),
            only,
            tokio_echo,
            quick,
        }
    }

    fn kinds(&self) -> Vec<Kind> {
        match self.only {
            Some(kind) => vec![kind],
            None => vec![Kind::Getty, Kind::Tokio],
        }
    }

    fn tokio_description(&self) -> String {
        match self.tokio_echo {
            TokioEcho::Framed { buf } => format!(
                "current-thread runtime, task per connection: BufReader({buf} B), \
                 read_exact(4-byte header) + read_exact(body), one write_all per batch of \
                 buffered whole frames"
            ),
            TokioEcho::Raw => "current-thread runtime, task per connection: raw echo, read \
                               into an 8 KiB buffer and write_all what was read (no framing)"
                .to_owned(),
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
    pin: bool,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            key: 'a',
            label: "(a) 1 conn x 1 x 64 B, pinned",
            conns: 1,
            in_flight: 1,
            size: 64,
            pin: true,
        },
        Scenario {
            key: 'b',
            label: "(b) 50 conns x 16 x 64 B",
            conns: 50,
            in_flight: 16,
            size: 64,
            pin: false,
        },
        Scenario {
            key: 'c',
            label: "(c) 10 conns x 4 x 16 KiB",
            conns: 10,
            in_flight: 4,
            size: 16 * 1024,
            pin: false,
        },
    ]
}

// ---------------------------------------------------------------------------------------
// OS helpers
// ---------------------------------------------------------------------------------------

/// The kernel id of a thread and its CPU-time clock (readable from any thread).
#[derive(Debug, Clone, Copy)]
struct ThreadIds {
    tid: libc::pid_t,
    cpu_clock: libc::clockid_t,
}

fn current_thread_ids() -> ThreadIds {
    // SAFETY: plain syscalls on the calling thread; `cpu_clock` is a valid out-pointer.
    unsafe {
        let tid = libc::gettid();
        let mut cpu_clock: libc::clockid_t = 0;
        let rc = libc::pthread_getcpuclockid(libc::pthread_self(), &mut cpu_clock);
        assert_eq!(rc, 0, "pthread_getcpuclockid failed");
        ThreadIds { tid, cpu_clock }
    }
}

fn clock_now(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(
        rc,
        0,
        "clock_gettime({clock}): {}",
        io::Error::last_os_error()
    );
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// (user, system) CPU time of thread `tid` of this process, in clock ticks.
fn thread_user_sys_ticks(tid: libc::pid_t) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // The command name may contain spaces: the fields that matter follow its closing ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // After ')' comes field 3 (state); utime and stime are fields 14 and 15 (see proc(5)).
    let get = |i: usize| fields.get(i - 3).and_then(|v| v.parse().ok()).unwrap_or(0);
    (get(14), get(15))
}

/// Nanoseconds thread `tid` of this process spent runnable but waiting for a CPU (the
/// second field of its schedstat): high when other processes compete for the CPUs.
fn thread_run_delay_ns(tid: libc::pid_t) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn this_thread_cpu() -> Duration {
    clock_now(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit. Returns (old soft, new soft, hard).
fn raise_nofile_limit() -> (libc::rlim_t, libc::rlim_t, libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid in/out pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0, 0);
        }
        let old = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                lim.rlim_cur = old;
            }
        }
        (old, lim.rlim_cur, lim.rlim_max)
    }
}

/// Pins thread `tid` (0: the calling thread) to `cpu`.
fn pin_thread(tid: libc::pid_t, cpu: usize) -> io::Result<()> {
    // SAFETY: `set` is a plain bit set, zero-initialised and then filled by CPU_SET.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Busy and total jiffies of each CPU, from /proc/stat.
fn cpu_jiffies() -> Vec<(usize, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let cpu = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
            let values: Vec<u64> = fields.filter_map(|v| v.parse().ok()).collect();
            let total: u64 = values.iter().sum();
            // idle and iowait are the 4th and 5th values.
            let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
            Some((cpu, total - idle, total))
        })
        .collect()
}

/// The allowed CPU that was the least busy over the last 200 ms: pinning the single
/// connection scenario to a CPU that other processes keep busy would starve it.
fn idlest_cpu() -> usize {
    let allowed = allowed_cpus();
    let before = cpu_jiffies();
    std::thread::sleep(Duration::from_millis(200));
    let after = cpu_jiffies();
    let busy_share = |cpu: usize| {
        let b = before.iter().find(|c| c.0 == cpu)?;
        let a = after.iter().find(|c| c.0 == cpu)?;
        let total = a.2.saturating_sub(b.2).max(1);
        Some(a.1.saturating_sub(b.1) as f64 / total as f64)
    };
    allowed
        .iter()
        .copied()
        .min_by(|&x, &y| {
            let (bx, by) = (busy_share(x).unwrap_or(1.0), busy_share(y).unwrap_or(1.0));
            // Ties go to the last CPU, away from CPU 0 and its interrupts.
            bx.total_cmp(&by).then(y.cmp(&x))
        })
        .unwrap_or(0)
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
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// VmRSS of this process in KiB.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes handed out by malloc and not freed, over all arenas.
fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads allocator statistics.
    unsafe { libc::mallinfo2().uordblks as u64 }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

/// The getty-rs echo handler: every message goes back with the session's codec.
struct GettyEcho;

impl Handler<LengthFieldCodec> for GettyEcho {
    fn on_open(&mut self, _session: &mut Session<LengthFieldCodec>) -> io::Result<()> {
        GETTY_OPENED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn on_message(&mut self, session: &mut Session<LengthFieldCodec>, message: Bytes) {
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

/// A server running on a thread of its own.
struct ServerThread {
    kind: Kind,
    addr: SocketAddr,
    ids: ThreadIds,
    running: Running,
}

impl ServerThread {
    fn start(kind: Kind, tokio_echo: TokioEcho) -> io::Result<ServerThread> {
        match kind {
            Kind::Getty => start_getty(),
            Kind::Tokio => start_tokio(tokio_echo),
        }
    }

    fn stop(self) -> io::Result<()> {
        match self.running {
            Running::Getty(thread) => {
                thread.handle().shutdown();
                thread.join()
            }
            Running::Tokio { stop, thread } => {
                stop.store(true, Ordering::Release);
                // Wake the accept loop so it sees the flag.
                let _ = StdTcpStream::connect(self.addr);
                thread
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("tokio server panicked")))
            }
        }
    }
}

fn start_getty() -> io::Result<ServerThread> {
    let server = TcpServer::bind("127.0.0.1:0", |_| {
        Ok((LengthFieldCodec::default(), GettyEcho))
    })?;
    let addr = server.local_addr();
    let (tx, rx) = mpsc::channel();
    let thread = Reactor::start_thread("getty-echo", move |reactor| {
        let _ = tx.send(current_thread_ids());
        reactor.spawn(Box::new(server));
        Ok(())
    })?;
    let ids = rx
        .recv()
        .map_err(|_| io::Error::other("getty server thread gone"))?;
    Ok(ServerThread {
        kind: Kind::Getty,
        addr,
        ids,
        running: Running::Getty(thread),
    })
}

fn start_tokio(variant: TokioEcho) -> io::Result<ServerThread> {
    let (tx, rx) = mpsc::channel::<io::Result<(SocketAddr, ThreadIds)>>();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("tokio-echo".to_owned())
        .spawn(move || -> io::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = match tokio_listener() {
                    Ok(listener) => listener,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return Ok(());
                    }
                };
                let _ = tx.send(listener.local_addr().map(|a| (a, current_thread_ids())));
                loop {
                    let stream = match listener.accept().await {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // Out of descriptors or an aborted handshake: back off a little.
                            eprintln!("tokio accept: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    if stop_flag.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    // getty-rs sets TCP_NODELAY on every session by default; so does this.
                    let _ = stream.set_nodelay(true);
                    TOKIO_OPENED.fetch_add(1, Ordering::Relaxed);
                    match variant {
                        TokioEcho::Framed { buf } => {
                            tokio::spawn(async move {
                                let _ = tokio_framed_echo(stream, buf).await;
                            });
                        }
                        TokioEcho::Raw => {
                            tokio::spawn(async move {
                                let _ = tokio_raw_echo(stream).await;
                            });
                        }
                    }
                }
            })
        })?;
    let (addr, ids) = rx
        .recv()
        .map_err(|_| io::Error::other("tokio server thread gone"))??;
    Ok(ServerThread {
        kind: Kind::Tokio,
        addr,
        ids,
        running: Running::Tokio { stop, thread },
    })
}

/// A listener with the backlog getty-rs uses (1024): `tokio::net::TcpListener::bind` goes
/// through mio's `bind`, which listens with a backlog of only 128, and a burst of connects
/// then overflows the accept queue and waits out one-second SYN retransmits.
fn tokio_listener() -> io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.listen(1024)
}

/// True when `buf` starts with a whole length-prefixed frame.
fn holds_whole_frame(buf: &[u8]) -> bool {
    buf.len() >= 4 && buf.len() - 4 >= u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
}

/// The idiomatic framed tokio echo: buffered reads, `read_exact` header then body, and one
/// `write_all` for all the frames that were already buffered.
async fn tokio_framed_echo(stream: tokio::net::TcpStream, buf: usize) -> io::Result<()> {
    let mut conn = BufReader::with_capacity(buf, stream);
    let mut out: Vec<u8> = Vec::new();
    loop {
        let mut header = [0u8; 4];
        match conn.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
        }
        let start = out.len();
        out.extend_from_slice(&header);
        out.resize(start + 4 + len, 0);
        conn.read_exact(&mut out[start + 4..]).await?;
        if !holds_whole_frame(conn.buffer()) || out.len() >= 64 * 1024 {
            conn.write_all(&out).await?;
            out.clear();
        }
    }
}

/// The minimal tokio echo: whatever arrives goes back.
async fn tokio_raw_echo(mut stream: tokio::net::TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

// ---------------------------------------------------------------------------------------
// Load generator
// ---------------------------------------------------------------------------------------

/// One client connection: a read buffer, a write buffer and the send times of the
/// messages in flight (the echo keeps their order).
struct ClientConn {
    sock: mio::net::TcpStream,
    rbuf: Vec<u8>,
    rlo: usize,
    rhi: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    sent: VecDeque<Instant>,
}

/// What one measured run produced.
#[derive(Debug, Clone, Copy)]
struct Measurement {
    messages: u64,
    elapsed: Duration,
    server_cpu: Duration,
    client_cpu: Duration,
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    /// Share of the server thread's CPU time spent in the kernel (from /proc ticks).
    server_sys_share: f64,
    /// Time the server thread was runnable but not running (other load on the machine).
    server_run_delay: Duration,
}

impl Measurement {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    fn per_server_cpu_sec(&self) -> f64 {
        self.messages as f64 / self.server_cpu.as_secs_f64().max(1e-9)
    }

    fn server_util(&self) -> f64 {
        self.server_cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }

    fn server_wait(&self) -> f64 {
        self.server_run_delay.as_secs_f64() / self.elapsed.as_secs_f64()
    }

    fn client_util(&self) -> f64 {
        self.client_cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

impl ClientConn {
    fn connect(
        addr: SocketAddr,
        registry: &mio::Registry,
        token: Token,
        rbuf_len: usize,
    ) -> io::Result<ClientConn> {
        let std = StdTcpStream::connect(addr)?;
        std.set_nodelay(true)?;
        std.set_nonblocking(true)?;
        let mut sock = mio::net::TcpStream::from_std(std);
        registry.register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(ClientConn {
            sock,
            rbuf: vec![0; rbuf_len],
            rlo: 0,
            rhi: 0,
            wbuf: Vec::with_capacity(rbuf_len),
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

    /// Reads what arrived, records a round trip per echoed frame and sends a new message
    /// for each one (unless the run is over).
    fn on_readable(
        &mut self,
        frame: &[u8],
        hist: Option<&mut Histogram<u64>>,
        done: &mut u64,
    ) -> io::Result<()> {
        loop {
            if self.rhi == self.rbuf.len() {
                if self.rlo > 0 {
                    self.rbuf.copy_within(self.rlo..self.rhi, 0);
                    self.rhi -= self.rlo;
                    self.rlo = 0;
                } else {
                    let len = self.rbuf.len();
                    self.rbuf.resize(len * 2, 0);
                }
            }
            match self.sock.read(&mut self.rbuf[self.rhi..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed a connection",
                    ))
                }
                Ok(n) => self.rhi += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let now = Instant::now();
        let mut hist = hist;
        while holds_whole_frame(&self.rbuf[self.rlo..self.rhi]) {
            let got = &self.rbuf[self.rlo..self.rlo + frame.len()];
            // The length is checked by holds_whole_frame plus this; spot-check the payload.
            if got.len() != frame.len()
                || got[..4] != frame[..4]
                || got[got.len() - 8..] != frame[frame.len() - 8..]
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the echo does not match what was sent",
                ));
            }
            self.rlo += frame.len();
            let sent = self.sent.pop_front().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "an echo nobody asked for")
            })?;
            if let Some(h) = hist.as_deref_mut() {
                h.saturating_record((now - sent).as_nanos().max(1) as u64);
                *done += 1;
            }
            self.queue(frame, now);
        }
        if self.rlo == self.rhi {
            self.rlo = 0;
            self.rhi = 0;
        }
        Ok(())
    }
}

/// Runs one scenario against the server at `addr` on the calling thread.
fn drive(
    addr: SocketAddr,
    scenario: &Scenario,
    cfg: &Config,
    server: ThreadIds,
) -> io::Result<Measurement> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut frame = Vec::with_capacity(4 + scenario.size);
    frame.extend_from_slice(&(scenario.size as u32).to_be_bytes());
    let mut rng = fastrand::Rng::with_seed(0x0067_6574_7479);
    frame.extend((0..scenario.size).map(|_| rng.u8(..)));

    let in_flight_bytes = scenario.in_flight * frame.len();
    let rbuf_len = (2 * in_flight_bytes).max(64 * 1024);
    let mut conns = Vec::with_capacity(scenario.conns);
    for i in 0..scenario.conns {
        conns.push(ClientConn::connect(
            addr,
            poll.registry(),
            Token(i),
            rbuf_len,
        )?);
    }

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| io::Error::other(format!("histogram: {e}")))?;
    let mut done = 0u64;
    let start = Instant::now();
    for conn in &mut conns {
        for _ in 0..scenario.in_flight {
            conn.queue(&frame, start);
        }
        conn.flush()?;
    }

    let warm_end = start + cfg.warmup;
    // (start of the measured window, server CPU then, client CPU then)
    let mut window: Option<(Instant, Duration, Duration)> = None;
    let mut ticks0 = (0, 0);
    let mut delay0 = 0;
    loop {
        let now = Instant::now();
        match window {
            None if now >= warm_end => {
                hist.reset();
                done = 0;
                window = Some((now, clock_now(server.cpu_clock), this_thread_cpu()));
                ticks0 = thread_user_sys_ticks(server.tid);
                delay0 = thread_run_delay_ns(server.tid);
            }
            Some((t0, server0, client0)) if now >= t0 + cfg.measure => {
                let server_cpu = clock_now(server.cpu_clock) - server0;
                let ticks1 = thread_user_sys_ticks(server.tid);
                let delay = thread_run_delay_ns(server.tid).saturating_sub(delay0);
                let (user, sys) = (ticks1.0 - ticks0.0, ticks1.1 - ticks0.1);
                let client_cpu = this_thread_cpu() - client0;
                return Ok(Measurement {
                    messages: done,
                    elapsed: now - t0,
                    server_cpu,
                    client_cpu,
                    p50_ns: hist.value_at_quantile(0.50),
                    p99_ns: hist.value_at_quantile(0.99),
                    p999_ns: hist.value_at_quantile(0.999),
                    server_sys_share: sys as f64 / (user + sys).max(1) as f64,
                    server_run_delay: Duration::from_nanos(delay),
                });
            }
            _ => {}
        }
        match poll.poll(&mut events, Some(Duration::from_millis(5))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let measuring = window.is_some();
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let h = if measuring { Some(&mut hist) } else { None };
                conn.on_readable(&frame, h, &mut done)?;
            }
            conn.flush()?;
        }
    }
}

/// Starts a server, runs one scenario against it from a load-generator thread, stops it.
fn run_one(kind: Kind, scenario: &Scenario, cfg: &Config) -> io::Result<Measurement> {
    let server = ServerThread::start(kind, cfg.tokio_echo)?;
    let (addr, ids) = (server.addr, server.ids);
    let pin_cpu = scenario.pin.then(idlest_cpu);
    let (scenario_copy, cfg_copy) = (scenario.clone(), cfg.clone());
    let client = std::thread::Builder::new().name("load".to_owned()).spawn(
        move || -> io::Result<Measurement> {
            if let Some(cpu) = pin_cpu {
                pin_thread(0, cpu)?;
                pin_thread(ids.tid, cpu)?;
            }
            drive(addr, &scenario_copy, &cfg_copy, ids)
        },
    )?;
    let result = client
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("load generator panicked")));
    let kind_name = server.kind.name();
    if let Err(e) = server.stop() {
        eprintln!("stopping the {kind_name} server: {e}");
    }
    result
}

// ---------------------------------------------------------------------------------------
// Idle connections and RSS
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct RssResult {
    conns: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    heap_before: u64,
    heap_after: u64,
    open_ms: u64,
}

impl RssResult {
    fn rss_per_conn(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) * 1024.0 / self.conns as f64
    }

    fn heap_per_conn(&self) -> f64 {
        (self.heap_after as f64 - self.heap_before as f64) / self.conns as f64
    }
}

/// How many idle connections fit in the descriptor limit (two descriptors each: both
/// ends live in this process).
fn idle_conn_count(wanted: usize, soft_limit: libc::rlim_t) -> usize {
    let room = (soft_limit as usize).saturating_sub(RESERVED_FDS + 2 * RSS_WARM_CONNS) / 2;
    wanted.min(room)
}

fn wait_opened(kind: Kind, target: usize, deadline: Duration) -> io::Result<()> {
    let until = Instant::now() + deadline;
    while kind.opened().load(Ordering::Relaxed) < target {
        if Instant::now() > until {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} accepted {} of {target} connections",
                    kind.name(),
                    kind.opened().load(Ordering::Relaxed)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The child-process side of the RSS test: opens the idle connections and prints one
/// `RSS_RESULT` line.
fn rss_child(kind: Kind, cfg: &Config) -> io::Result<()> {
    let (_, soft, _) = raise_nofile_limit();
    let conns = idle_conn_count(cfg.rss_conns, soft);
    let server = ServerThread::start(kind, cfg.tokio_echo)?;
    let addr = server.addr;
    // Every slot is written now, so the vector's pages are resident before the baseline.
    let mut fds: Vec<RawFd> = vec![-1; RSS_WARM_CONNS + conns];
    let base = kind.opened().load(Ordering::Relaxed);
    for fd in fds.iter_mut().take(RSS_WARM_CONNS) {
        *fd = StdTcpStream::connect(addr)?.into_raw_fd();
    }
    wait_opened(kind, base + RSS_WARM_CONNS, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(200));
    let rss_before_kib = vm_rss_kib();
    let heap_before = heap_in_use();

    let t0 = Instant::now();
    for fd in fds.iter_mut().skip(RSS_WARM_CONNS) {
        *fd = StdTcpStream::connect(addr)?.into_raw_fd();
    }
    wait_opened(kind, base + RSS_WARM_CONNS + conns, Duration::from_secs(60))?;
    let open_ms = t0.elapsed().as_millis() as u64;
    std::thread::sleep(Duration::from_millis(300));
    let rss_after_kib = vm_rss_kib();
    let heap_after = heap_in_use();
    println!(
        "RSS_RESULT {conns} {rss_before_kib} {rss_after_kib} {heap_before} {heap_after} {open_ms}"
    );

    for fd in fds {
        // SAFETY: every descriptor came from into_raw_fd above and is closed only here.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    server.stop()
}

/// Runs the RSS test for `kind` in a child process (this binary, re-executed).
fn rss_test(kind: Kind, cfg: &Config) -> io::Result<RssResult> {
    let exe = std::env::current_exe()?;
    let child_kind = match kind {
        Kind::Getty => "getty",
        Kind::Tokio => "tokio",
    };
    let output = std::process::Command::new(exe)
        .env("GETTY_BENCH_RSS_CHILD", child_kind)
        .env("GETTY_BENCH_CONNS", cfg.rss_conns.to_string())
        .env(
            "GETTY_BENCH_TOKIO",
            match cfg.tokio_echo {
                TokioEcho::Framed { .. } => "framed",
                TokioEcho::Raw => "raw",
            },
        )
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RSS_RESULT "))
        .ok_or_else(|| {
            io::Error::other(format!(
                "the RSS child for {} failed ({}): {}",
                kind.name(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        })?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    if f.len() != 6 {
        return Err(io::Error::other(format!("bad RSS_RESULT line: {line}")));
    }
    Ok(RssResult {
        conns: f[0] as usize,
        rss_before_kib: f[1],
        rss_after_kib: f[2],
        heap_before: f[3],
        heap_after: f[4],
        open_ms: f[5],
    })
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The median of each figure over the rounds of one server and scenario.
#[derive(Debug, Clone, Copy)]
struct Figures {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    per_cpu: f64,
    server_util: f64,
    server_sys_share: f64,
    server_wait: f64,
    client_util: f64,
}

impl Figures {
    fn of(runs: &[Measurement]) -> Figures {
        let m = |f: &dyn Fn(&Measurement) -> f64| median(runs.iter().map(f).collect());
        Figures {
            rate: m(&|r| r.rate()),
            p50_us: m(&|r| r.p50_ns as f64 / 1e3),
            p99_us: m(&|r| r.p99_ns as f64 / 1e3),
            p999_us: m(&|r| r.p999_ns as f64 / 1e3),
            per_cpu: m(&|r| r.per_server_cpu_sec()),
            server_util: m(&|r| r.server_util()),
            server_sys_share: m(&|r| r.server_sys_share),
            server_wait: m(&|r| r.server_wait()),
            client_util: m(&|r| r.client_util()),
        }
    }
}

const TABLE_HEADER: &str = "scenario                        server         msgs/s   p50 µs   p99 µs p99.9 µs  msgs/srv-CPU-s  srv CPU (sys) srv wait  cli CPU";

fn print_row(label: &str, server: &str, f: &Figures) {
    println!(
        "{label:<31} {server:<9} {:>11.0} {:>8.1} {:>8.1} {:>8.1} {:>15.0} {:>7.0}% ({:>3.0}%) {:>7.1}% {:>7.0}%",
        f.rate,
        f.p50_us,
        f.p99_us,
        f.p999_us,
        f.per_cpu,
        f.server_util * 100.0,
        f.server_sys_share * 100.0,
        f.server_wait * 100.0,
        f.client_util * 100.0
    );
}

/// Server threads that waited this long for a CPU shared the machine with other load, and
/// contention changes how much work each wake-up batches: such a comparison is not fair.
/// (The pinned scenario's client and server take turns on one CPU by design; there, other
/// load shows as the two of them not keeping that CPU busy.)
const NOISY_WAIT: f64 = 0.05;

fn is_noisy(scenario: &Scenario, g: &Figures, t: &Figures) -> bool {
    if scenario.pin {
        // Client and server take turns on their CPU: together they should keep it busy.
        let starved = |f: &Figures| f.server_util + f.client_util < 0.9;
        return starved(g) || starved(t);
    }
    g.server_wait > NOISY_WAIT || t.server_wait > NOISY_WAIT
}

fn print_ratio(label: &str, g: &Figures, t: &Figures, noisy: bool) {
    println!(
        "{label:<31} {:<9} {:>10.2}x {:>7.2}x {:>7.2}x {:>7.2}x {:>14.2}x{}",
        "getty/tok",
        g.rate / t.rate,
        g.p50_us / t.p50_us,
        g.p99_us / t.p99_us,
        g.p999_us / t.p999_us,
        g.per_cpu / t.per_cpu,
        if noisy {
            "   NOISY: a server waited for a CPU, rerun"
        } else {
            ""
        }
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

// ---------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------

fn main() {
    let cfg = Config::from_env();
    if let Ok(child) = std::env::var("GETTY_BENCH_RSS_CHILD") {
        let kind = if child == "tokio" {
            Kind::Tokio
        } else {
            Kind::Getty
        };
        if let Err(e) = rss_child(kind, &cfg) {
            eprintln!("RSS child ({}): {e}", kind.name());
            std::process::exit(1);
        }
        return;
    }

    let (old_soft, soft, hard) = raise_nofile_limit();
    println!(
        "getty-rs tcp_echo{}: warm-up {:.1} s + {:.1} s measured per run, {} round(s); \
         {} CPUs; load average {}",
        if cfg.quick { " (QUICK smoke mode)" } else { "" },
        cfg.warmup.as_secs_f64(),
        cfg.measure.as_secs_f64(),
        cfg.rounds,
        allowed_cpus().len(),
        load_average()
    );
    println!("tokio echo: {}", cfg.tokio_description());
    println!(
        "getty-rs echo: TcpServer + LengthFieldCodec::default(), on_message -> session.write(msg)"
    );
    println!(
        "srv CPU = server thread CPU time / wall time, (sys) = the kernel's share of it; \
         srv wait = time it was runnable but waited for a CPU (other load: a noisy run); \
         ratio rows are getty-rs/tokio: higher is better for msgs/s and msgs/srv-CPU-s, \
         lower is better for latencies"
    );

    let mut results: Vec<(Scenario, Figures, Figures)> = Vec::new();
    let mut failures = 0;
    let kinds = cfg.kinds();
    for scenario in scenarios() {
        if !cfg.scenarios.contains(scenario.key) {
            continue;
        }
        let mut runs: Vec<(Kind, Measurement)> = Vec::new();
        for round in 0..cfg.rounds {
            let mut order = kinds.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for kind in order {
                match run_one(kind, &scenario, &cfg) {
                    Ok(m) => runs.push((kind, m)),
                    Err(e) => {
                        failures += 1;
                        eprintln!("{} {}: {e}", scenario.label, kind.name());
                    }
                }
            }
        }
        println!();
        println!("{TABLE_HEADER}");
        let mut figures = Vec::new();
        let mut spread = Vec::new();
        for &kind in &kinds {
            let mine: Vec<Measurement> = runs
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, m)| *m)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let f = Figures::of(&mine);
            print_row(scenario.label, kind.name(), &f);
            figures.push((kind, f));
            if mine.len() > 1 {
                let each: Vec<String> = mine
                    .iter()
                    .map(|m| format!("{:.0}k", m.per_server_cpu_sec() / 1e3))
                    .collect();
                spread.push(format!("{} {}", kind.name(), each.join(" ")));
            }
        }
        if !spread.is_empty() {
            println!("  msgs/srv-CPU-s of each run: {}", spread.join("; "));
        }
        if let [(Kind::Getty, g), (Kind::Tokio, t)] = figures[..] {
            print_ratio(scenario.label, &g, &t, is_noisy(&scenario, &g, &t));
            results.push((scenario.clone(), g, t));
        }
    }

    let mut rss: Vec<(Kind, RssResult)> = Vec::new();
    if cfg.scenarios.contains('r') {
        println!();
        let count = idle_conn_count(cfg.rss_conns, soft);
        println!(
            "idle connections: RLIMIT_NOFILE soft {old_soft} -> {soft} (hard {hard}); \
             {count} idle connections per server{}",
            if count < cfg.rss_conns {
                format!(
                    " (reduced from {}: both ends live in this process, 2 fds each)",
                    cfg.rss_conns
                )
            } else {
                String::new()
            }
        );
        println!(
            "server    conns   open ms  VmRSS before   VmRSS after   RSS B/conn   heap B/conn"
        );
        for &kind in &kinds {
            match rss_test(kind, &cfg) {
                Ok(r) => {
                    println!(
                        "{:<9} {:>5} {:>9} {:>9} KiB {:>9} KiB {:>12.0} {:>13.0}",
                        kind.name(),
                        r.conns,
                        r.open_ms,
                        r.rss_before_kib,
                        r.rss_after_kib,
                        r.rss_per_conn(),
                        r.heap_per_conn()
                    );
                    rss.push((kind, r));
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("RSS test for {}: {e}", kind.name());
                }
            }
        }
    }

    println!();
    println!("targets (from the issue)                         measured     verdict");
    if cfg.quick {
        println!("(quick smoke mode: the runs are too short for these verdicts to mean much)");
    }
    for (scenario, g, t) in &results {
        let noisy = if is_noisy(scenario, g, t) {
            " (noisy run)"
        } else {
            ""
        };
        let cpu = g.per_cpu / t.per_cpu;
        let (want, what) = if scenario.size >= 16 * 1024 {
            (2.0, "CPU efficiency >= 2x tokio at 16 KiB")
        } else {
            (1.0, "CPU efficiency >= 1x tokio at 64 B")
        };
        println!(
            "{:<48} {:>7.2}x     {}{noisy}",
            format!("{} {what}", &scenario.label[..3]),
            cpu,
            verdict(cpu >= want)
        );
        let p99 = g.p99_us / t.p99_us;
        println!(
            "{:<48} {:>7.2}x     {}{noisy}",
            format!("{} p99 no worse than tokio's", &scenario.label[..3]),
            p99,
            verdict(p99 <= 1.0)
        );
    }
    for (kind, r) in &rss {
        let per = r.rss_per_conn();
        if *kind == Kind::Getty {
            println!(
                "{:<48} {:>6.0} B     {}",
                "RSS per idle connection <= 256 B",
                per,
                verdict(per <= 256.0)
            );
        } else {
            println!(
                "{:<48} {:>6.0} B     (expected 2-9 KiB)",
                "tokio RSS per idle connection, for reference", per
            );
        }
    }
    if failures > 0 {
        eprintln!("{failures} run(s) failed");
        std::process::exit(1);
    }
}
