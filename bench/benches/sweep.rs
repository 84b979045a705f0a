//! How the cost of a TCP echo grows with load, and with cores: getty-rs against the
//! hand-written mio echo (the baseline) and tokio, under the same load generator.
//!
//! Every server speaks 4-byte big-endian length-prefixed frames and echoes each one:
//!
//! - **getty-rs**: `TcpServer` with `LengthFieldCodec::default()` and a handler whose
//!   `on_message` writes the message back, on one reactor thread (as in `tcp_echo`);
//! - **mio**: the hand-written single-threaded mio echo of `bench/benches/support/mio_echo.rs`
//!   (`LengthPrefixedEcho`), the "hand-written limit" issue 16 measures against;
//! - **tokio**: `tcp_echo`'s framed tokio echo (`bench/benches/support/length_prefixed.rs`) on a
//!   current-thread runtime, one task per connection.
//!
//! The load generator is `echo_bench`'s mio client: one thread keeps N connections x K
//! messages in flight and records every round trip in an HDR histogram. A run warms up
//! (not measured), then measures for a fixed time. "Server CPU" is the CPU time of the
//! server's threads (their `CLOCK_THREAD_CPUTIME_ID` clocks), so "msgs per server
//! CPU-second" is the server's cost per echoed message, whatever the client managed to
//! offer. The rest of the machine's load is shown as "other" (CPUs busy outside this
//! process): above 0.1 a point is flagged noisy.
//!
//! The parts, selected by `GETTY_BENCH_PARTS` (a comma-separated list, default all):
//!
//! 1. `conns`: 1, 100, 1,000 and 10,000 connections, each with 1 message of 64 B in flight.
//!    The load generator runs in a child process (this binary re-executed with
//!    `GETTY_BENCH_LOAD_CHILD`; it starts its window when told, as this process starts
//!    reading the server's clocks): with both ends in one process, 10,000 connections
//!    would need 20,000 descriptors, and the hard limit may not be raised (it is 20,000
//!    here and the container lacks CAP_SYS_RESOURCE). Past 10,000 connections the client
//!    spreads its sockets over source addresses 127.0.0.2, 127.0.0.3, ... (one address
//!    has ~28,000 ports towards one server port, and `connect` slows as they fill).
//!    With one message in flight per connection, a round trip lasts about connections /
//!    (msgs/s): at 1,000 and more, latency measures how fast the client goes around its
//!    connections as much as the server.
//! 2. `sizes`: 16 connections x 1 in flight, messages of 64 B, 1 KiB, 16 KiB, 256 KiB and
//!    1 MiB.
//!
//!    For each point and server: msgs/s, p50/p99/p99.9 round trip, msgs per server
//!    CPU-second, and the ratios getty-rs/mio (CPU efficiency: the target is >= 0.90 at
//!    every point) and getty-rs/tokio (p99: the target at 10,000 connections is <= 1).
//!    Each sweep is drawn as `sweep-conns.svg` / `sweep-sizes.svg` (msgs per server
//!    CPU-second and p99 against the swept value) under the chart directory.
//! 3. `timers`: 10,000 and 100,000 idle TCP sessions on one getty-rs reactor, each with a
//!    read-idle timeout (600 s: it never fires) and a 1 s cron, against the same sessions
//!    without timers. The clients live in a child process (this binary re-executed with
//!    `GETTY_BENCH_TIMER_CHILD`), spread over source addresses, so that neither process
//!    needs 200,000 descriptors; the server still needs one per session, so a count over
//!    the descriptor limit is reduced to fit (and flagged REDUCED). Measured: the reactor thread's CPU time per second of
//!    wall time over a window (default 5 s) once every session is open, the cron ticks
//!    fired, and the difference per session per second and per tick. A session keeps one
//!    reactor timer armed for its earliest deadline; each tick is one heap pop and one
//!    push (O(log n)), and reads only note the time, so the cost is per timer operation,
//!    never per message.
//! 4. `scale` (more than one core): a load of 100 conns x 16 in flight x 64 B against
//!    getty-rs on 1..N reactors (`TcpServer::builder().start_pool(n, ..)`, one
//!    `SO_REUSEPORT` listener per reactor) and tokio's multi-thread runtime with n
//!    workers; the table shows msgs/s, server CPU, msgs per server CPU-second, the
//!    speed-up over 1 reactor (worker), and getty-rs's messages per reactor over the whole
//!    run (warm-up included: divide a callgrind per-thread total by it). On a machine
//!    with fewer CPUs than reactors + client the speed-up is capped by the CPUs, not by
//!    the server: pin (below) and read msgs per server CPU-second too.
//!
//! Run it with `cargo bench -p getty-bench --bench sweep`: about 3 minutes with the defaults, 8 with
//! `GETTY_BENCH_ROUNDS=3` (the medians of three runs per point). On a big machine, for
//! example:
//! `GETTY_BENCH_PARTS=scale GETTY_BENCH_CLIENT_CPUS=0,1,2,3 GETTY_BENCH_REACTOR_CPUS=4,5,6,7,8,9,10,11 GETTY_BENCH_MAX_REACTORS=8 cargo bench -p getty-bench --bench sweep`.
//! Instructions per message for 1 and 2 reactors (callgrind counts repeatably):
//! `GETTY_BENCH_PARTS=scale GETTY_BENCH_ONLY=getty GETTY_BENCH_REACTORS=2
//! valgrind --tool=callgrind --separate-threads=yes <target>/release/deps/sweep-<hash> --bench`
//! (one reactor count per process: valgrind reuses the thread numbers of ended threads),
//! then each reactor thread's total (`totals:` in `callgrind.out.<pid>-<thread>`; threads 2
//! to n+1 are the reactors) divided by that reactor's "msgs per reactor (run)". Two runs of
//! different `GETTY_BENCH_SECS` and the differences of both take the fixed costs out.
//!
//! Environment:
//! - `GETTY_BENCH_PARTS` (default `conns,sizes,timers,scale`): the parts to run;
//! - `GETTY_BENCH_ONLY` (comma-separated `getty`, `mio`, `tokio`): the servers to run
//!   (default all; in `scale`, `getty` and `tokio` pick the pools);
//! - `GETTY_BENCH_SECS` (default 3): measured seconds per point;
//! - `GETTY_BENCH_WARMUP_SECS` (default 1, at most `GETTY_BENCH_SECS`): warm-up seconds;
//! - `GETTY_BENCH_ROUNDS` (default 1): runs per server and point, alternating the order;
//!   the tables show the median of each figure;
//! - `GETTY_BENCH_SWEEP_CONNS` (default `1,100,1000,10000`): the connection counts of
//!   `conns`;
//! - `GETTY_BENCH_SWEEP_SIZES` (default `64,1024,16384,262144,1048576`): the message sizes
//!   of `sizes`, in bytes (at most 1 MiB, the servers' max message length);
//! - `GETTY_BENCH_SIZE_CONNS` (default 16): the connections of `sizes`;
//! - `GETTY_BENCH_TIMER_SESSIONS` (default `10000,100000`) and `GETTY_BENCH_TIMER_SECS`
//!   (default 5): the idle session counts and the measured window of `timers`; a count the
//!   descriptor limit cannot hold (the server holds one per session) is reduced to fit,
//!   and the table says so;
//! - `GETTY_BENCH_REACTORS` (e.g. `1,2,4`, or `2` alone): the reactor counts of `scale`;
//!   without it, 1, 2, 4, ... up to `GETTY_BENCH_MAX_REACTORS` (default: the CPUs allowed,
//!   at least 2; `8` gives 1, 2, 4, 8);
//! - `GETTY_BENCH_REACTOR_CPUS` (e.g. `1,2,3`): pin reactor (tokio worker) i of `scale` to
//!   the i-th CPU of the list, modulo its length (default: not pinned);
//! - `GETTY_BENCH_CLIENT_CPUS` (e.g. `0`): run one load-generator thread per CPU of the
//!   list in `scale`, each pinned to its CPU and driving its share of the connections
//!   (default: one thread, not pinned); `GETTY_BENCH_CLIENT_THREADS` sets the count of
//!   threads instead (pinned round-robin when CPUs are given too);
//! - `GETTY_BENCH_SCALE_CONNS` (default 100) and `GETTY_BENCH_SCALE_IN_FLIGHT` (default
//!   16): the load of `scale` (64 B messages);
//! - `GETTY_BENCH_TOKIO` (`framed`, the default, or `raw`) and `GETTY_BENCH_TOKIO_BUF`
//!   (default 8192): the tokio echo variant and its `BufReader` capacity, as in `tcp_echo`;
//! - `GETTY_BENCH_CHART_DIR`: where the charts go (default `bench-charts/` in the target
//!   directory);
//! - `GETTY_BENCH_QUICK=1`: smoke mode (0.1 s warm-up, 0.2 s points, 1 and 20 connections,
//!   64 B and 16 KiB, 200 timer sessions with a 0.1 s cron for 0.3 s, 1 and 2 reactors): every server runs
//!   once, in a few seconds. Quick mode is also what runs when the binary is started
//!   without `--bench` (as `cargo test --benches` does: a smoke test; CI only builds the benches).

#![cfg(target_os = "linux")]

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use getty::codec::{Bytes, LengthFieldCodec};
use getty::reactor::ReactorThread;
use getty::tcp::{Setup, TcpServer, TcpServerPool};
use getty::{Handler, Metrics, ReactorHandle, Session, SessionOptions};
use hdrhistogram::Histogram;

#[allow(dead_code)] // The sweep draws no bars.
#[path = "support/chart.rs"]
mod chart;
#[allow(dead_code)] // The sweep uses part of what the echo benches share.
#[path = "support/echo_bench.rs"]
mod echo_bench;
#[path = "support/length_prefixed.rs"]
mod length_prefixed;
#[path = "support/mio_echo.rs"]
mod mio_echo;

use echo_bench::{
    allowed_cpus, clock_now, current_thread_ids, env_f64, load_average, measured_secs, median,
    quick_mode_requested, rounds_from_env, run_rounds, start_reactor_thread, start_tokio_thread,
    verdict, AcceptThread, LoadGenerator, Scenario, ThreadIds, Window, NOISY_OTHER_CPUS,
};
use length_prefixed::{
    connect_spread, start_tokio_mt, thread_ids_by_index, tokio_echo_task, LengthPrefixed, TokioEcho,
};
use mio_echo::{start_mio_thread, LengthPrefixedEcho};

/// Connections accepted by the tokio servers.
static TOKIO_OPENED: AtomicUsize = AtomicUsize::new(0);
/// Sessions opened by the timer part's getty-rs server.
static TIMER_SESSIONS_OPENED: AtomicUsize = AtomicUsize::new(0);
/// Cron ticks heard by the timer part's sessions.
static CRON_TICKS: AtomicU64 = AtomicU64::new(0);

/// getty-rs's CPU efficiency must stay within this share of the baseline's.
const CPU_EFFICIENCY_FLOOR: f64 = 0.90;

/// The timer part's read-idle timeout: long enough never to fire in the window, so that
/// what it costs is what arming it costs.
const TIMER_READ_IDLE: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// The servers of the sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Getty,
    Mio,
    Tokio,
}

impl Server {
    const ALL: [Server; 3] = [Server::Getty, Server::Mio, Server::Tokio];

    fn name(self) -> &'static str {
        match self {
            Server::Getty => "getty-rs",
            Server::Mio => "mio",
            Server::Tokio => "tokio",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Server::Getty => "getty",
            Server::Mio => "mio",
            Server::Tokio => "tokio",
        }
    }
}

/// The servers of the scaling part, each on `n` threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Getty(usize),
    TokioMt(usize),
}

impl Pool {
    fn name(self) -> String {
        match self {
            Pool::Getty(n) => format!("getty-rs {n} reactor{}", if n == 1 { "" } else { "s" }),
            Pool::TokioMt(n) => format!("tokio mt {n}"),
        }
    }

    fn threads(self) -> usize {
        match self {
            Pool::Getty(n) | Pool::TokioMt(n) => n,
        }
    }
}

#[derive(Debug, Clone)]
struct Config {
    quick: bool,
    parts: String,
    servers: Vec<Server>,
    warmup: Duration,
    measure: Duration,
    rounds: usize,
    sweep_conns: Vec<usize>,
    sweep_sizes: Vec<usize>,
    size_conns: usize,
    timer_sessions: Vec<usize>,
    timer_window: Duration,
    /// The cron period of the timer part: 1 s, but 0.1 s in quick mode, so that its short
    /// window still sees ticks.
    timer_cron: Duration,
    reactors: Vec<usize>,
    reactor_cpus: Vec<usize>,
    client_cpus: Vec<usize>,
    client_threads: usize,
    scale_conns: usize,
    scale_in_flight: usize,
    tokio_echo: TokioEcho,
}

/// A comma-separated list of numbers from `name`, or `default` when it is unset or holds
/// none.
fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    let Ok(value) = std::env::var(name) else {
        return default.to_vec();
    };
    let list: Vec<usize> = value
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    if list.is_empty() {
        eprintln!("ignoring {name}={value:?}: no numbers");
        return default.to_vec();
    }
    list
}

/// 1, 2, 4, ... up to `max`, and `max` itself.
fn doubling_up_to(max: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2))
        .take_while(|&n| n < max)
        .collect();
    counts.push(max.max(1));
    counts
}

impl Config {
    fn from_env() -> Config {
        let quick = quick_mode_requested();
        let (measure, warmup): (f64, f64) = if quick { (0.2, 0.1) } else { (3.0, 1.0) };
        let measure = measured_secs(measure);
        let warmup = env_f64("GETTY_BENCH_WARMUP_SECS").unwrap_or(warmup.min(measure));
        let servers = match std::env::var("GETTY_BENCH_ONLY") {
            Ok(only) => Server::ALL
                .into_iter()
                .filter(|s| only.split(',').any(|o| o.trim().starts_with(s.key())))
                .collect(),
            Err(_) => Server::ALL.to_vec(),
        };
        // A list, else the doubling series up to a maximum, else up to the CPUs allowed.
        let reactors = match std::env::var("GETTY_BENCH_REACTORS") {
            Ok(_) => env_list("GETTY_BENCH_REACTORS", &[1, 2]),
            Err(_) => doubling_up_to(
                env_f64("GETTY_BENCH_MAX_REACTORS")
                    .map_or(allowed_cpus().len().max(2), |n| (n as usize).max(1)),
            ),
        };
        let client_cpus = env_list("GETTY_BENCH_CLIENT_CPUS", &[]);
        let client_threads = env_f64("GETTY_BENCH_CLIENT_THREADS")
            .map_or(client_cpus.len(), |n| n as usize)
            .max(1);
        Config {
            quick,
            parts: std::env::var("GETTY_BENCH_PARTS")
                .unwrap_or_else(|_| "conns,sizes,timers,scale".to_owned())
                .to_ascii_lowercase(),
            servers,
            warmup: Duration::from_secs_f64(warmup),
            measure: Duration::from_secs_f64(measure),
            rounds: rounds_from_env(),
            sweep_conns: env_list(
                "GETTY_BENCH_SWEEP_CONNS",
                if quick {
                    &[1, 20]
                } else {
                    &[1, 100, 1000, 10_000]
                },
            ),
            sweep_sizes: env_list(
                "GETTY_BENCH_SWEEP_SIZES",
                if quick {
                    &[64, 16 << 10]
                } else {
                    &[64, 1 << 10, 16 << 10, 256 << 10, 1 << 20]
                },
            )
            .into_iter()
            .map(|s| s.clamp(8, length_prefixed::MAX_BODY))
            .collect(),
            size_conns: env_f64("GETTY_BENCH_SIZE_CONNS").map_or(16, |n| (n as usize).max(1)),
            timer_sessions: env_list(
                "GETTY_BENCH_TIMER_SESSIONS",
                if quick { &[200] } else { &[10_000, 100_000] },
            ),
            timer_window: Duration::from_secs_f64(
                env_f64("GETTY_BENCH_TIMER_SECS")
                    .unwrap_or(if quick { 0.3 } else { 5.0 })
                    .max(0.1),
            ),
            timer_cron: Duration::from_millis(if quick { 100 } else { 1000 }),
            reactors: reactors.into_iter().map(|n| n.max(1)).collect(),
            reactor_cpus: env_list("GETTY_BENCH_REACTOR_CPUS", &[]),
            client_cpus,
            client_threads,
            scale_conns: env_f64("GETTY_BENCH_SCALE_CONNS").map_or(100, |n| (n as usize).max(1)),
            scale_in_flight: env_f64("GETTY_BENCH_SCALE_IN_FLIGHT")
                .map_or(16, |n| (n as usize).max(1)),
            tokio_echo: match std::env::var("GETTY_BENCH_TOKIO").as_deref() {
                Ok("raw") => TokioEcho::Raw,
                _ => TokioEcho::Framed {
                    buf: env_f64("GETTY_BENCH_TOKIO_BUF")
                        .map_or(8 * 1024, |b| (b as usize).max(64)),
                },
            },
        }
    }

    fn runs(&self, part: &str) -> bool {
        self.parts.split(',').any(|p| p.trim() == part)
    }
}

// ---------------------------------------------------------------------------------------
// OS helpers
// ---------------------------------------------------------------------------------------

/// Raises RLIMIT_NOFILE to `wanted` (the hard limit too: a root process may, up to
/// fs.nr_open), or as high as it may go. Returns the soft limit in force.
fn raise_nofile_limit(wanted: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid in/out pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur >= wanted {
            return lim.rlim_cur;
        }
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: lim.rlim_max.max(wanted),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return wanted;
        }
        // Not root: the soft limit may still go up to the hard one.
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}

/// The most descriptors a process may have (fs.nr_open).
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

/// Pins thread `tid` (0: the calling thread) to `cpu`.
fn pin_thread(tid: libc::pid_t, cpu: usize) -> io::Result<()> {
    // SAFETY: `set` is a plain bit set, zeroed and then filled by CPU_SET.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::other(format!(
                "pinning thread {tid} to CPU {cpu}: {}",
                io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// Busy and total jiffies summed over every CPU, and this process's ticks.
fn machine_and_process_ticks() -> (u64, u64, usize, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let (mut busy, mut total, mut cpus) = (0, 0, 0);
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else { continue };
        if !name.starts_with("cpu") || name == "cpu" {
            continue;
        }
        let values: Vec<u64> = fields.filter_map(|v| v.parse().ok()).collect();
        let sum: u64 = values.iter().sum();
        let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
        busy += sum - idle;
        total += sum;
        cpus += 1;
    }
    let (user, sys) = echo_bench::user_sys_ticks("/proc/self/stat");
    (busy, total, cpus, user + sys)
}

/// CPUs kept busy by anything but this process (and its children, `children_ticks` of
/// them) between two readings of [`machine_and_process_ticks`].
fn other_cpus(
    before: (u64, u64, usize, u64),
    after: (u64, u64, usize, u64),
    children_ticks: u64,
) -> f64 {
    let ours = after.3.saturating_sub(before.3) + children_ticks;
    let others = after.0.saturating_sub(before.0) as f64 - ours as f64;
    let wall = after.1.saturating_sub(before.1) as f64 / after.2.max(1) as f64;
    (others / wall.max(1.0)).max(0.0)
}

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

/// The getty-rs echo handler: every message goes back with the session's codec.
struct GettyEcho;

impl Handler<LengthFieldCodec> for GettyEcho {
    fn on_message(&mut self, session: &mut Session<LengthFieldCodec>, message: Bytes) {
        let _ = session.write(message);
    }
}

fn getty_echo_setup(_: &mut Setup<'_>) -> io::Result<(LengthFieldCodec, GettyEcho)> {
    Ok((LengthFieldCodec::default(), GettyEcho))
}

enum Stopper {
    Reactor(ReactorThread),
    Pool(TcpServerPool),
    Accept(AcceptThread),
}

/// A server running on threads of its own.
struct Running {
    addr: SocketAddr,
    /// Every thread that does the server's work: their CPU time is the server's.
    threads: Vec<ThreadIds>,
    /// getty-rs's reactors, in order (none for the others).
    reactors: Vec<ReactorHandle>,
    stopper: Stopper,
}

impl Running {
    fn stop(self) -> io::Result<()> {
        match self.stopper {
            Stopper::Reactor(thread) => {
                thread.handle().shutdown();
                thread.join()
            }
            Stopper::Pool(pool) => {
                pool.shutdown();
                pool.join()
            }
            Stopper::Accept(accept) => accept.stop(),
        }
    }

    /// Messages each reactor handled since it started.
    fn reactor_messages(&self) -> Vec<u64> {
        self.reactors
            .iter()
            .map(|r| Metrics::of(r).map_or(0, |m| m.messages_in))
            .collect()
    }
}

fn start_server(server: Server, cfg: &Config) -> io::Result<Running> {
    match server {
        Server::Getty => {
            let listener = TcpServer::bind("127.0.0.1:0", getty_echo_setup)?;
            let addr = listener.local_addr();
            let (thread, ids) = start_reactor_thread("getty-echo", listener)?;
            Ok(Running {
                addr,
                threads: vec![ids],
                reactors: vec![thread.handle().clone()],
                stopper: Stopper::Reactor(thread),
            })
        }
        Server::Mio => {
            let (accept, ids) = start_mio_thread::<LengthPrefixedEcho>("mio-echo")?;
            Ok(Running {
                addr: accept.addr,
                threads: vec![ids],
                reactors: Vec::new(),
                stopper: Stopper::Accept(accept),
            })
        }
        Server::Tokio => {
            let task = tokio_echo_task(cfg.tokio_echo, &TOKIO_OPENED);
            let (accept, ids) = start_tokio_thread("tokio-echo", task)?;
            Ok(Running {
                addr: accept.addr,
                threads: vec![ids],
                reactors: Vec::new(),
                stopper: Stopper::Accept(accept),
            })
        }
    }
}

fn start_pool(pool: Pool, cfg: &Config) -> io::Result<Running> {
    let running = match pool {
        Pool::Getty(n) => {
            let (tx, rx) = std::sync::mpsc::channel();
            // `make_setup(i)` runs on reactor i's own thread: a good place to learn its ids.
            let servers = TcpServer::builder().start_pool(n, "127.0.0.1:0", move |index| {
                let _ = tx.send((index, current_thread_ids()));
                getty_echo_setup
            })?;
            Running {
                addr: servers.local_addr(),
                threads: thread_ids_by_index(&rx, n)?,
                reactors: servers.reactors().handles(),
                stopper: Stopper::Pool(servers),
            }
        }
        Pool::TokioMt(n) => {
            let task = tokio_echo_task(cfg.tokio_echo, &TOKIO_OPENED);
            let (accept, threads) = start_tokio_mt("tokio-mt", n, task)?;
            Running {
                addr: accept.addr,
                threads,
                reactors: Vec::new(),
                stopper: Stopper::Accept(accept),
            }
        }
    };
    if !cfg.reactor_cpus.is_empty() {
        for (i, t) in running.threads.iter().enumerate() {
            pin_thread(t.tid, cfg.reactor_cpus[i % cfg.reactor_cpus.len()])?;
        }
    }
    Ok(running)
}

// ---------------------------------------------------------------------------------------
// Load and measurement
// ---------------------------------------------------------------------------------------

/// One load: `conns` connections, each with `in_flight` messages of `size` bytes.
#[derive(Debug, Clone, Copy)]
struct Load {
    conns: usize,
    in_flight: usize,
    size: usize,
}

/// What one measured run produced.
#[derive(Debug, Clone)]
struct Measurement {
    messages: u64,
    elapsed: Duration,
    server_cpu: Duration,
    client_cpu: Duration,
    other_cpus: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    /// Messages of each getty-rs reactor over the whole run (warm-up included).
    reactor_messages: Vec<u64>,
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

    fn client_util(&self) -> f64 {
        self.client_cpu.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

/// The server's CPU time, summed over its threads.
fn server_cpu(threads: &[ThreadIds]) -> Duration {
    threads.iter().map(|t| clock_now(t.cpu_clock)).sum()
}

/// Runs `load` against `running` from `client_threads` load-generator threads (thread i
/// pinned to `client_cpus[i % len]` when any are given), each with its share of the
/// connections; the first one reads the server's CPU clocks at its window's start and end.
fn drive(
    running: &Running,
    load: Load,
    cfg: &Config,
    client_threads: usize,
) -> io::Result<Measurement> {
    let threads = client_threads.clamp(1, load.conns);
    let barrier = Arc::new(Barrier::new(threads));
    let next_conn = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads {
        let conns = load.conns / threads + usize::from(i < load.conns % threads);
        let scenario = Scenario {
            key: 's',
            label: "sweep",
            conns,
            in_flight: load.in_flight,
            size: load.size,
            pin: false,
        };
        let cpu = (!cfg.client_cpus.is_empty()).then(|| cfg.client_cpus[i % cfg.client_cpus.len()]);
        let (addr, server, barrier, next_conn) = (
            running.addr,
            if i == 0 {
                running.threads.clone()
            } else {
                Vec::new()
            },
            barrier.clone(),
            next_conn.clone(),
        );
        let (warmup, measure) = (cfg.warmup, cfg.measure);
        let handle = std::thread::Builder::new()
            .name(format!("load-{i}"))
            .spawn(move || -> io::Result<Window<Duration>> {
                if let Some(cpu) = cpu {
                    pin_thread(0, cpu)?;
                }
                let framing = LengthPrefixed::random(scenario.size);
                let connected = LoadGenerator::connect(&scenario, framing, || {
                    connect_spread(addr, next_conn.fetch_add(1, Ordering::Relaxed))
                });
                // Every thread waits here, connected or not, so none waits for ever.
                barrier.wait();
                connected?.run(warmup, measure, || server_cpu(&server))
            })?;
        handles.push(handle);
    }
    let windows: Vec<io::Result<Window<Duration>>> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("a load generator panicked")))
        })
        .collect();
    let windows = windows.into_iter().collect::<io::Result<Vec<_>>>()?;
    let first = &windows[0];
    let mut latency = first.latency.clone();
    for w in &windows[1..] {
        latency
            .add(&w.latency)
            .map_err(|e| io::Error::other(format!("histogram: {e}")))?;
    }
    Ok(Measurement {
        messages: windows.iter().map(|w| w.messages).sum(),
        elapsed: first.elapsed,
        server_cpu: first.server_end.saturating_sub(first.server_start),
        client_cpu: windows.iter().map(|w| w.client_cpu).sum(),
        other_cpus: first.other_cpus,
        p50_us: quantile_us(&latency, 0.50),
        p99_us: quantile_us(&latency, 0.99),
        p999_us: quantile_us(&latency, 0.999),
        reactor_messages: running.reactor_messages(),
    })
}

/// The load generator in a child process (this binary, re-executed with
/// `GETTY_BENCH_LOAD_CHILD`): it connects, says `READY`, waits for a line on its stdin, runs
/// the warm-up and the window, and prints one `RESULT` line. This process reads the
/// server's CPU clocks over the same window (started when it sends that line).
fn drive_from_child(running: &Running, load: Load, cfg: &Config) -> io::Result<Measurement> {
    let spec = format!(
        "{} {} {} {} {} {}",
        running.addr,
        load.conns,
        load.in_flight,
        load.size,
        cfg.warmup.as_secs_f64(),
        cfg.measure.as_secs_f64()
    );
    let mut child = ChildClients(
        Command::new(std::env::current_exe()?)
            .env("GETTY_BENCH_LOAD_CHILD", spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let child_pid = child.0.id();
    let stdout = child
        .0
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut next_line = |what: &str| -> io::Result<String> {
        lines.next().unwrap_or_else(|| {
            Err(io::Error::other(format!(
                "the load child ended before {what}"
            )))
        })
    };
    if next_line("connecting")? != "READY" {
        return Err(io::Error::other("the load child did not connect"));
    }
    let stdin = child
        .0
        .stdin
        .as_mut()
        .ok_or_else(|| io::Error::other("no stdin"))?;
    stdin.write_all(b"GO\n")?;
    stdin.flush()?;
    std::thread::sleep(cfg.warmup);
    let (machine0, child0) = (machine_and_process_ticks(), process_ticks(child_pid));
    let cpu0 = server_cpu(&running.threads);
    std::thread::sleep(cfg.measure);
    let cpu1 = server_cpu(&running.threads);
    let other = other_cpus(
        machine0,
        machine_and_process_ticks(),
        process_ticks(child_pid).saturating_sub(child0),
    );
    let result = next_line("its result")?;
    let f: Vec<f64> = result
        .strip_prefix("RESULT ")
        .ok_or_else(|| io::Error::other(format!("the load child said {result:?}")))?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let [messages, elapsed, client_cpu, p50, p99, p999] = f[..] else {
        return Err(io::Error::other(format!("bad RESULT line: {result}")));
    };
    Ok(Measurement {
        messages: messages as u64,
        elapsed: Duration::from_secs_f64(elapsed),
        server_cpu: cpu1.saturating_sub(cpu0),
        client_cpu: Duration::from_secs_f64(client_cpu),
        other_cpus: other,
        p50_us: p50,
        p99_us: p99,
        p999_us: p999,
        reactor_messages: running.reactor_messages(),
    })
}

/// The child's side of [`drive_from_child`]; `spec` is `addr conns in_flight size
/// warmup_secs measure_secs`.
fn load_child(spec: &str) -> io::Result<()> {
    let bad = || io::Error::other(format!("bad GETTY_BENCH_LOAD_CHILD: {spec:?}"));
    let fields: Vec<&str> = spec.split_whitespace().collect();
    let [addr, conns, in_flight, size, warmup, measure] = fields[..] else {
        return Err(bad());
    };
    let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
    let number = |v: &str| v.parse::<usize>().map_err(|_| bad());
    let secs = |v: &str| {
        v.parse::<f64>()
            .map(Duration::from_secs_f64)
            .map_err(|_| bad())
    };
    let scenario = Scenario {
        key: 's',
        label: "sweep",
        conns: number(conns)?,
        in_flight: number(in_flight)?,
        size: number(size)?,
        pin: false,
    };
    raise_nofile_limit((scenario.conns as u64 + 1024).min(nr_open()));
    let mut next = 0;
    let load = LoadGenerator::connect(&scenario, LengthPrefixed::random(scenario.size), || {
        next += 1;
        connect_spread(addr, next - 1)
    })?;
    println!("READY");
    io::stdout().flush()?;
    let mut go = String::new();
    io::stdin().lock().read_line(&mut go)?;
    let window = load.run(secs(warmup)?, secs(measure)?, || ())?;
    println!(
        "RESULT {} {} {} {} {} {}",
        window.messages,
        window.elapsed.as_secs_f64(),
        window.client_cpu.as_secs_f64(),
        quantile_us(&window.latency, 0.50),
        quantile_us(&window.latency, 0.99),
        quantile_us(&window.latency, 0.999),
    );
    io::stdout().flush()
}

/// User plus system clock ticks of process `pid`.
fn process_ticks(pid: u32) -> u64 {
    let (user, sys) = echo_bench::user_sys_ticks(&format!("/proc/{pid}/stat"));
    user + sys
}

fn quantile_us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

/// Where the load generator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clients {
    /// This many threads of this process.
    Threads(usize),
    /// One thread of a child process.
    Child,
}

/// Starts a server, runs `load` against it, stops it.
fn run_point(
    running: io::Result<Running>,
    load: Load,
    cfg: &Config,
    clients: Clients,
) -> io::Result<Measurement> {
    let running = running?;
    let result = match clients {
        Clients::Threads(n) => drive(&running, load, cfg, n),
        Clients::Child => drive_from_child(&running, load, cfg),
    };
    let stopped = running.stop();
    let m = result?;
    stopped?;
    Ok(m)
}

/// The median of each figure over the rounds of one server and point.
#[derive(Debug, Clone, Copy)]
struct Figures {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    per_cpu: f64,
    server_util: f64,
    client_util: f64,
    other_cpus: f64,
}

impl Figures {
    fn of(runs: &[Measurement]) -> Figures {
        let m = |f: &dyn Fn(&Measurement) -> f64| median(runs.iter().map(f).collect());
        Figures {
            rate: m(&|r| r.rate()),
            p50_us: m(&|r| r.p50_us),
            p99_us: m(&|r| r.p99_us),
            p999_us: m(&|r| r.p999_us),
            per_cpu: m(&|r| r.per_server_cpu_sec()),
            server_util: m(&|r| r.server_util()),
            client_util: m(&|r| r.client_util()),
            other_cpus: m(&|r| r.other_cpus),
        }
    }

    fn noisy(&self) -> bool {
        self.other_cpus > NOISY_OTHER_CPUS
    }
}

// ---------------------------------------------------------------------------------------
// Parts 1 and 2: the sweeps
// ---------------------------------------------------------------------------------------

/// One swept value and each server's figures there.
struct Point {
    label: String,
    figures: Vec<(Server, Figures)>,
}

impl Point {
    fn of(&self, server: Server) -> Option<&Figures> {
        self.figures
            .iter()
            .find(|(s, _)| *s == server)
            .map(|(_, f)| f)
    }
}

struct Sweep {
    key: &'static str,
    title: String,
    x_desc: &'static str,
    points: Vec<Point>,
}

fn run_sweep(
    cfg: &Config,
    loads: &[(String, Load)],
    clients: Clients,
    failures: &mut usize,
) -> Vec<Point> {
    loads
        .iter()
        .map(|(label, load)| {
            let runs = run_rounds(
                &cfg.servers,
                cfg.rounds,
                |server| run_point(start_server(server, cfg), *load, cfg, clients),
                |server, e| {
                    *failures += 1;
                    eprintln!("{label} {}: {e}", server.name());
                },
            );
            let figures: Vec<(Server, Figures)> = runs
                .iter()
                .map(|(server, mine)| (*server, Figures::of(mine)))
                .collect();
            let point = Point {
                label: label.clone(),
                figures,
            };
            print_point(&point);
            point
        })
        .collect()
}

const SWEEP_HEADER: &str = "point      server       msgs/s   p50 µs   p99 µs p99.9 µs  msgs/srv-CPU-s  srv CPU  cli CPU  other";

fn print_point(point: &Point) {
    for (server, f) in &point.figures {
        println!(
            "{:<10} {:<9} {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>15.0} {:>7.0}% {:>7.0}%  {:>5.2}{}",
            point.label,
            server.name(),
            f.rate,
            f.p50_us,
            f.p99_us,
            f.p999_us,
            f.per_cpu,
            f.server_util * 100.0,
            f.client_util * 100.0,
            f.other_cpus,
            if f.noisy() { "  NOISY" } else { "" }
        );
    }
    for other in [Server::Mio, Server::Tokio] {
        if let (Some(g), Some(o)) = (point.of(Server::Getty), point.of(other)) {
            println!(
                "{:<10} {:<9} {:>9.2}x {:>7.2}x {:>7.2}x {:>7.2}x {:>14.2}x",
                point.label,
                format!("getty/{}", other.name()),
                g.rate / o.rate,
                g.p50_us / o.p50_us,
                g.p99_us / o.p99_us,
                g.p999_us / o.p999_us,
                g.per_cpu / o.per_cpu,
            );
        }
    }
}

fn print_sweep_summary(sweep: &Sweep) {
    println!();
    println!(
        "{} — summary (ratios: getty-rs / other server)",
        sweep.title
    );
    println!(
        "{:<10} {:>16} {:>16} {:>16} {:>13} {:>13}",
        sweep.x_desc,
        "getty msgs/CPU-s",
        "CPU eff. / mio",
        "CPU eff. / tokio",
        "p99 / mio",
        "p99 / tokio"
    );
    let ratio = |g: Option<&Figures>, o: Option<&Figures>, f: fn(&Figures) -> f64| match (g, o) {
        (Some(g), Some(o)) => format!("{:.2}x", f(g) / f(o)),
        _ => "-".to_owned(),
    };
    for p in &sweep.points {
        let g = p.of(Server::Getty);
        println!(
            "{:<10} {:>16} {:>16} {:>16} {:>13} {:>13}",
            p.label,
            g.map_or("-".to_owned(), |g| format!("{:.0}", g.per_cpu)),
            ratio(g, p.of(Server::Mio), |f| f.per_cpu),
            ratio(g, p.of(Server::Tokio), |f| f.per_cpu),
            ratio(g, p.of(Server::Mio), |f| f.p99_us),
            ratio(g, p.of(Server::Tokio), |f| f.p99_us),
        );
    }
    chart_sweep(sweep);
}

fn chart_sweep(sweep: &Sweep) {
    let x_labels: Vec<String> = sweep.points.iter().map(|p| p.label.clone()).collect();
    let servers: Vec<Server> = Server::ALL
        .into_iter()
        .filter(|s| sweep.points.iter().any(|p| p.of(*s).is_some()))
        .collect();
    let panel = |y_desc: &str, f: fn(&Figures) -> f64| chart::Panel {
        y_desc: y_desc.to_owned(),
        lines: servers
            .iter()
            .map(|&s| chart::Line {
                name: s.name().to_owned(),
                values: sweep
                    .points
                    .iter()
                    .map(|p| p.of(s).map_or(f64::NAN, f))
                    .collect(),
            })
            .collect(),
    };
    chart::LineChart {
        bench: "sweep",
        name: sweep.key,
        title: &sweep.title,
        x_desc: sweep.x_desc,
        x_labels: &x_labels,
        panels: vec![
            panel("msgs per server CPU-second", |f| f.per_cpu),
            panel("p99 round trip, µs", |f| f.p99_us),
            panel("msgs/s", |f| f.rate),
        ],
    }
    .report();
}

/// The targets for the sweeps; returns them as printable lines.
fn sweep_verdicts(sweeps: &[Sweep], cfg: &Config) -> Vec<String> {
    let mut lines = Vec::new();
    for sweep in sweeps {
        for p in &sweep.points {
            let (Some(g), Some(m)) = (p.of(Server::Getty), p.of(Server::Mio)) else {
                continue;
            };
            let ratio = g.per_cpu / m.per_cpu;
            lines.push(format!(
                "{:<56} {:>6.2}x     {}{}",
                format!(
                    "{} {}: CPU efficiency >= {CPU_EFFICIENCY_FLOOR:.2}x mio",
                    sweep.key, p.label
                ),
                ratio,
                verdict(ratio >= CPU_EFFICIENCY_FLOOR),
                if g.noisy() || m.noisy() {
                    " (noisy)"
                } else {
                    ""
                }
            ));
        }
    }
    let most = cfg.sweep_conns.iter().copied().max().unwrap_or(0);
    if let Some(sweep) = sweeps.iter().find(|s| s.key == "conns") {
        let label = conns_label(most);
        if let Some(p) = sweep.points.iter().find(|p| p.label == label) {
            if let (Some(g), Some(t)) = (p.of(Server::Getty), p.of(Server::Tokio)) {
                let ratio = g.p99_us / t.p99_us;
                lines.push(format!(
                    "{:<56} {:>6.2}x     {}{}",
                    format!("conns {label}: p99 no worse than tokio's"),
                    ratio,
                    verdict(ratio <= 1.0),
                    if g.noisy() || t.noisy() {
                        " (noisy)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    lines
}

fn conns_label(conns: usize) -> String {
    conns.to_string()
}

fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn run_conns_sweep(cfg: &Config, failures: &mut usize) -> Sweep {
    let title = "connections sweep: N conns x 1 in flight x 64 B".to_owned();
    println!();
    println!("{title}");
    println!("{SWEEP_HEADER}");
    let loads: Vec<(String, Load)> = cfg
        .sweep_conns
        .iter()
        .map(|&conns| {
            let load = Load {
                conns,
                in_flight: 1,
                size: 64,
            };
            (conns_label(conns), load)
        })
        .collect();
    Sweep {
        key: "conns",
        title,
        x_desc: "connections",
        // In a child: with both ends here, 10,000 connections would need 20,000
        // descriptors, and a process may not always raise its hard limit.
        points: run_sweep(cfg, &loads, Clients::Child, failures),
    }
}

fn run_sizes_sweep(cfg: &Config, failures: &mut usize) -> Sweep {
    let title = format!(
        "size sweep: {} conns x 1 in flight x N bytes",
        cfg.size_conns
    );
    println!();
    println!("{title}");
    println!("{SWEEP_HEADER}");
    let loads: Vec<(String, Load)> = cfg
        .sweep_sizes
        .iter()
        .map(|&size| {
            let load = Load {
                conns: cfg.size_conns,
                in_flight: 1,
                size,
            };
            (size_label(size), load)
        })
        .collect();
    Sweep {
        key: "sizes",
        title,
        x_desc: "message size",
        points: run_sweep(cfg, &loads, Clients::Threads(1), failures),
    }
}

// ---------------------------------------------------------------------------------------
// Part 3: timer cost
// ---------------------------------------------------------------------------------------

/// The timer part's handler: counts openings and cron ticks, echoes what arrives (nothing
/// does: the sessions are idle).
struct IdleSession;

impl Handler<LengthFieldCodec> for IdleSession {
    fn on_open(&mut self, _session: &mut Session<LengthFieldCodec>) -> io::Result<()> {
        TIMER_SESSIONS_OPENED.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn on_message(&mut self, session: &mut Session<LengthFieldCodec>, message: Bytes) {
        let _ = session.write(message);
    }

    fn on_cron(&mut self, _session: &mut Session<LengthFieldCodec>) {
        CRON_TICKS.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one timer run measured.
#[derive(Debug, Clone, Copy)]
struct TimerRun {
    sessions: usize,
    window: Duration,
    reactor_cpu: Duration,
    cron_ticks: u64,
    /// Cron ticks over the whole run, opening and settling included (to divide a
    /// profile's count by).
    run_ticks: u64,
    other_cpus: f64,
    open_secs: f64,
}

impl TimerRun {
    /// The reactor's CPU time per second of wall time (CPU-ms/s).
    fn cpu_ms_per_sec(&self) -> f64 {
        self.reactor_cpu.as_secs_f64() * 1e3 / self.window.as_secs_f64()
    }

    fn ticks_per_sec(&self) -> f64 {
        self.cron_ticks as f64 / self.window.as_secs_f64()
    }
}

/// The child of the timer part: opens `sessions` connections to `addr` spread over source
/// addresses, says `OPEN <n>` on stdout, then holds them until stdin closes.
fn timer_child(addr: SocketAddr, sessions: usize) -> io::Result<()> {
    raise_nofile_limit((sessions as u64 + 1024).min(nr_open()));
    let mut conns: Vec<StdTcpStream> = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let (stream, _) = connect_spread(addr, i)?;
        // Closed with a reset, not through TIME_WAIT: the next run reuses the ports.
        socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
        conns.push(stream);
    }
    println!("OPEN {}", conns.len());
    io::stdout().flush()?;
    let mut line = String::new();
    // Blocks until the parent closes our stdin (or dies).
    let _ = io::stdin().lock().read_line(&mut line);
    drop(conns);
    Ok(())
}

/// The client process of one timer run, killed if still alive when dropped.
struct ChildClients(Child);

impl Drop for ChildClients {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Children's CPU ticks (utime + stime of the reaped ones), from /proc/self/stat fields
/// 16 and 17.
fn children_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let get = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(16) + get(17)
}

fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) -> io::Result<()> {
    let until = Instant::now() + deadline;
    while !done() {
        if Instant::now() > until {
            return Err(io::Error::new(io::ErrorKind::TimedOut, what.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// One timer run: a getty-rs server whose sessions have `options`, `sessions` idle
/// clients in a child process, and the reactor's CPU over the window.
fn timer_run(cfg: &Config, sessions: usize, options: SessionOptions) -> io::Result<TimerRun> {
    let server = TcpServer::builder()
        .session_options(options)
        .bind("127.0.0.1:0", |_| {
            Ok((LengthFieldCodec::default(), IdleSession))
        })?;
    let addr = server.local_addr();
    let (reactor, ids) = start_reactor_thread("getty-timers", server)?;
    let result = (|| {
        let opened_before = TIMER_SESSIONS_OPENED.load(Ordering::Relaxed);
        let run_ticks0 = CRON_TICKS.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let mut child = ChildClients(
            Command::new(std::env::current_exe()?)
                .env("GETTY_BENCH_TIMER_CHILD", addr.to_string())
                .env("GETTY_BENCH_TIMER_SESSIONS", sessions.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?,
        );
        let stdout = child
            .0
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let mut line = String::new();
        // The child prints one line when its connections are open, or exits.
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("OPEN ") {
            return Err(io::Error::other(format!(
                "the timer child failed to open its connections ({:?})",
                child.0.try_wait()
            )));
        }
        let opened = || TIMER_SESSIONS_OPENED.load(Ordering::Relaxed) - opened_before;
        wait_until(
            &format!("the server opened fewer than {sessions} sessions"),
            Duration::from_secs(120),
            || opened() >= sessions,
        )?;
        let open_secs = t0.elapsed().as_secs_f64();
        // Past the first cron period, so every session's timer has settled into its
        // steady tick.
        std::thread::sleep(cfg.timer_cron + cfg.timer_cron / 2);
        let machine0 = machine_and_process_ticks();
        let children0 = children_ticks();
        let (cpu0, ticks0, at0) = (
            clock_now(ids.cpu_clock),
            CRON_TICKS.load(Ordering::Relaxed),
            Instant::now(),
        );
        std::thread::sleep(cfg.timer_window);
        let (cpu1, ticks1, at1) = (
            clock_now(ids.cpu_clock),
            CRON_TICKS.load(Ordering::Relaxed),
            Instant::now(),
        );
        let other = other_cpus(
            machine0,
            machine_and_process_ticks(),
            children_ticks() - children0,
        );
        drop(child);
        Ok(TimerRun {
            sessions: opened(),
            window: at1 - at0,
            reactor_cpu: cpu1.saturating_sub(cpu0),
            cron_ticks: ticks1 - ticks0,
            run_ticks: CRON_TICKS.load(Ordering::Relaxed) - run_ticks0,
            other_cpus: other,
            open_secs,
        })
    })();
    reactor.handle().shutdown();
    let joined = reactor.join();
    let run = result?;
    joined?;
    Ok(run)
}

/// Descriptors kept free for everything but the timer part's sessions.
const RESERVED_FDS: usize = 512;

fn run_timer_part(cfg: &Config, failures: &mut usize) -> Vec<String> {
    let most = cfg.timer_sessions.iter().copied().max().unwrap_or(1);
    let limit = raise_nofile_limit((most + RESERVED_FDS) as u64).min(nr_open()) as usize;
    let room = limit.saturating_sub(RESERVED_FDS).max(1);
    let mut counts: Vec<usize> = cfg.timer_sessions.iter().map(|&n| n.min(room)).collect();
    counts.dedup();
    println!();
    println!(
        "timer cost: idle sessions on one getty-rs reactor, with (read-idle {} s + cron {:.1} s) \
         and without timers; reactor CPU over {:.1} s",
        TIMER_READ_IDLE.as_secs(),
        cfg.timer_cron.as_secs_f64(),
        cfg.timer_window.as_secs_f64()
    );
    if most > room {
        println!(
            "  REDUCED: {most} sessions asked, {room} fit: this process may hold {limit} \
             descriptors (RLIMIT_NOFILE; raising the hard limit needs CAP_SYS_RESOURCE)"
        );
    }
    println!("sessions variant         open s  reactor CPU-ms/s  cron ticks/s  other  ticks (run)");
    let mut lines = Vec::new();
    for sessions in counts {
        let with = SessionOptions::default()
            .read_idle_timeout(Some(TIMER_READ_IDLE))
            .cron_period(Some(cfg.timer_cron));
        let variants = [
            ("with timers", with),
            ("without timers", SessionOptions::default()),
        ];
        let runs = run_rounds(
            &[0usize, 1],
            cfg.rounds,
            |i| timer_run(cfg, sessions, variants[i].1.clone()),
            |i, e| {
                *failures += 1;
                eprintln!("timer part, {sessions} sessions {}: {e}", variants[i].0);
            },
        );
        let mut cpu = [f64::NAN; 2];
        let mut ticks = [f64::NAN; 2];
        for (i, mine) in &runs {
            let m = |f: &dyn Fn(&TimerRun) -> f64| median(mine.iter().map(f).collect());
            cpu[*i] = m(&|r| r.cpu_ms_per_sec());
            ticks[*i] = m(&|r| r.ticks_per_sec());
            println!(
                "{:>8} {:<15} {:>6.1} {:>17.2} {:>13.0} {:>6.2}  {:>11}",
                mine[0].sessions,
                variants[*i].0,
                m(&|r| r.open_secs),
                cpu[*i],
                ticks[*i],
                m(&|r| r.other_cpus),
                mine[0].run_ticks,
            );
        }
        if cpu.iter().all(|c| c.is_finite()) {
            let extra_ms = cpu[0] - cpu[1];
            let per_session_ns = extra_ms * 1e6 / sessions as f64;
            let per_tick_ns = extra_ms * 1e6 / ticks[0].max(1.0);
            println!(
                "{sessions:>8} timers cost {extra_ms:.2} CPU-ms per second: {per_session_ns:.0} ns \
                 per session per second, {per_tick_ns:.0} ns per cron tick"
            );
            lines.push(format!(
                "{:<56} {:>6.0} ns     (for reference)",
                format!("timers, {sessions} sessions: reactor CPU per cron tick"),
                per_tick_ns
            ));
        }
    }
    println!(
        "  a tick is one timer fired and one re-armed in the reactor's heap (O(log n)); reads \
         only note the time and the read-idle deadline rides on the same timer, so nothing \
         is paid per message"
    );
    lines
}

// ---------------------------------------------------------------------------------------
// Part 4: scaling
// ---------------------------------------------------------------------------------------

fn run_scale_part(cfg: &Config, failures: &mut usize) {
    let load = Load {
        conns: cfg.scale_conns,
        in_flight: cfg.scale_in_flight,
        size: 64,
    };
    println!();
    println!(
        "scaling: {} conns x {} in flight x 64 B from {} client thread(s){}; reactors {:?}{}",
        load.conns,
        load.in_flight,
        cfg.client_threads,
        if cfg.client_cpus.is_empty() {
            String::new()
        } else {
            format!(" on CPUs {:?}", cfg.client_cpus)
        },
        cfg.reactors,
        if cfg.reactor_cpus.is_empty() {
            " (not pinned)".to_owned()
        } else {
            format!(" on CPUs {:?}", cfg.reactor_cpus)
        },
    );
    println!(
        "server              msgs/s   p50 µs   p99 µs  srv CPU  msgs/srv-CPU-s  speed-up  \
         CPU-eff. vs 1  cli CPU  other  msgs per reactor (run)"
    );
    let families: Vec<fn(usize) -> Pool> = [
        (Server::Getty, Pool::Getty as fn(usize) -> Pool),
        (Server::Tokio, Pool::TokioMt as fn(usize) -> Pool),
    ]
    .into_iter()
    .filter(|(s, _)| cfg.servers.contains(s))
    .map(|(_, f)| f)
    .collect();
    for family in families {
        let pools: Vec<Pool> = cfg.reactors.iter().map(|&n| family(n)).collect();
        let runs = run_rounds(
            &pools,
            cfg.rounds,
            |pool| {
                run_point(
                    start_pool(pool, cfg),
                    load,
                    cfg,
                    Clients::Threads(cfg.client_threads),
                )
            },
            |pool, e| {
                *failures += 1;
                eprintln!("scaling, {}: {e}", pool.name());
            },
        );
        let base = runs
            .iter()
            .find(|(p, _)| p.threads() == 1)
            .map(|(_, mine)| Figures::of(mine));
        for (pool, mine) in &runs {
            let f = Figures::of(mine);
            let vs_one = |g: fn(&Figures) -> f64| {
                base.map_or("-".to_owned(), |b| format!("{:.2}x", g(&f) / g(&b)))
            };
            let per_reactor = mine
                .last()
                .map(|m| {
                    m.reactor_messages
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .unwrap_or_default();
            println!(
                "{:<17} {:>9.0} {:>8.1} {:>8.1} {:>7.0}% {:>15.0} {:>9} {:>14} {:>7.0}% {:>6.2}  {}{}",
                pool.name(),
                f.rate,
                f.p50_us,
                f.p99_us,
                f.server_util * 100.0,
                f.per_cpu,
                vs_one(|f| f.rate),
                vs_one(|f| f.per_cpu),
                f.client_util * 100.0,
                f.other_cpus,
                if per_reactor.is_empty() { "-" } else { &per_reactor },
                if f.noisy() { "  NOISY" } else { "" }
            );
        }
    }
    let cpus = allowed_cpus().len();
    let most = cfg.reactors.iter().copied().max().unwrap_or(1);
    if most + cfg.client_threads > cpus {
        println!(
            "  note: {most} reactor(s) + {} client thread(s) on {cpus} CPUs: the speed-up is \
             capped by the machine; compare msgs/srv-CPU-s (or count instructions with \
             callgrind, see the file's documentation)",
            cfg.client_threads
        );
    }
}

// ---------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------

fn main() {
    if let Ok(spec) = std::env::var("GETTY_BENCH_LOAD_CHILD") {
        if let Err(e) = load_child(&spec) {
            eprintln!("load child: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Ok(addr) = std::env::var("GETTY_BENCH_TIMER_CHILD") {
        let sessions = env_f64("GETTY_BENCH_TIMER_SESSIONS").map_or(1, |n| n as usize);
        let result = addr
            .parse()
            .map_err(|e| io::Error::other(format!("{addr}: {e}")))
            .and_then(|addr| timer_child(addr, sessions));
        if let Err(e) = result {
            eprintln!("timer child: {e}");
            std::process::exit(1);
        }
        return;
    }

    let cfg = Config::from_env();
    let most_conns = cfg.sweep_conns.iter().copied().max().unwrap_or(0);
    // The servers' ends of the connections sweep's connections (their clients are in a
    // child process).
    let fds = raise_nofile_limit((most_conns as u64 + 4096).min(nr_open()));
    println!(
        "getty-rs sweep{}: warm-up {:.1} s + {:.1} s measured per point, {} round(s); {} CPUs; \
         load average {}; RLIMIT_NOFILE {fds}",
        if cfg.quick { " (QUICK smoke mode)" } else { "" },
        cfg.warmup.as_secs_f64(),
        cfg.measure.as_secs_f64(),
        cfg.rounds,
        allowed_cpus().len(),
        load_average()
    );
    println!(
        "servers: getty-rs (TcpServer + LengthFieldCodec, on_message -> write), mio \
         (hand-written LengthPrefixedEcho), tokio (current-thread, framed echo with BufReader, \
         one write_all per batch); ratio rows are getty-rs / the other: higher is better for \
         msgs/s and msgs/srv-CPU-s, lower for latencies"
    );

    let mut failures = 0;
    let mut sweeps = Vec::new();
    if cfg.runs("conns") {
        sweeps.push(run_conns_sweep(&cfg, &mut failures));
    }
    if cfg.runs("sizes") {
        sweeps.push(run_sizes_sweep(&cfg, &mut failures));
    }
    for sweep in &sweeps {
        print_sweep_summary(sweep);
    }
    let mut verdicts = sweep_verdicts(&sweeps, &cfg);
    if cfg.runs("timers") {
        verdicts.extend(run_timer_part(&cfg, &mut failures));
    }
    if cfg.runs("scale") {
        run_scale_part(&cfg, &mut failures);
    }

    println!();
    println!("targets (issue 16, 5 and 6)                              measured     verdict");
    if cfg.quick {
        println!("(quick smoke mode: the runs are too short for these verdicts to mean much)");
    }
    for line in verdicts {
        println!("{line}");
    }
    if failures > 0 {
        eprintln!("{failures} run(s) failed");
        std::process::exit(1);
    }
}
