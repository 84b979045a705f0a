//! TCP echo: getty-rs against a hand-written mio echo and a tokio current-thread echo, under
//! the same load generator.
//!
//! The servers speak 4-byte big-endian length-prefixed frames and run on a thread of their
//! own, one after the other, in this one process:
//!
//! - **getty-rs**: `TcpServer` with `LengthFieldCodec::default()` and a handler whose
//!   `on_message` writes the message back (`session.write(msg)`), on one reactor thread.
//! - **mio**: the hand-written baseline (`support/mio_echo.rs`): one poll loop, shared read
//!   and output buffers, whole frames copied to the output and written once per batch. It
//!   is the cost floor; the ratio rows show getty-rs against it and against the others.
//! - **message-io**: a peer library on mio (`support/message_io_echo.rs`): its raw TCP
//!   transport echoes each read with one `send`, with message-io's defaults (no
//!   TCP_NODELAY, so Nagle's algorithm holds back small echoes in (b)).
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
//! (b) 50 x 16 x 64 B; (c) 10 x 4 x 16 KiB; (d) 100 x 16 x 64 B against servers on one and
//! on two threads (see below). Then the idle-connection test (r): 10,000, then 50,000 idle
//! connections to each server, each count and server in a child process of its own (this
//! binary re-executed) so that none sees another's freed heap, and the growth of VmRSS per
//! connection. The clients run in a process of their own (the child, re-executed again), so
//! the server's process holds one descriptor per connection; both raise RLIMIT_NOFILE (the
//! hard limit too, where the process may: that takes CAP_SYS_RESOURCE), and the clients
//! spread over the source addresses 127.0.0.2, 127.0.0.3, ... (bound before connecting),
//! since one source address has only the ~28,000 ports of the ephemeral range towards one
//! server. A count is lowered, and the table says so, when the limit cannot be raised that
//! far.
//!
//! Scenario (d), one reactor per core: the same load (one client thread, 100 x 16 x 64 B)
//! against four servers:
//! - `getty 1 reactor`: the single-reactor server above;
//! - `getty 2 reuseport`: `TcpServer::builder().start_pool(2, ..)`, one `SO_REUSEPORT`
//!   listener per reactor, so the kernel hashes each connection to a reactor;
//! - `getty 2 handoff`: a `ReactorPool` of 2 reactors with no listener, plus an acceptor
//!   thread (blocking std listener, backlog 1024) that hands each accepted connection
//!   round-robin to a reactor with `handle.execute(|spawner| tcp::adopt(spawner, ..))`;
//! - `tokio mt 2`: tokio's multi-thread runtime with 2 workers and the same task-per-
//!   connection echo (the accept loop is a task too).
//!
//! "Server CPU" is then the sum over all the server's threads (reactors and acceptor, or
//! tokio's workers), each read through its own CPU clock. The machine has only as many
//! CPUs as there are reactors, and the load generator needs one of its own, so a second
//! reactor buys CPU only if the client leaves some: the table shows the client's share and
//! "other CPU", the CPU time the rest of the machine used during the window (another
//! benchmark, a build): above 0.1 CPU the run is flagged as noisy, and with several rounds
//! the figures are the medians of the quiet runs. It also shows how each run spread its 100
//! sessions (and the messages) over the reactors.
//!
//! Environment:
//! - `GETTY_BENCH_SECS` (default 5): measured seconds per run;
//! - `GETTY_BENCH_WARMUP_SECS` (default 3, at most `GETTY_BENCH_SECS`): warm-up seconds;
//! - `GETTY_BENCH_ROUNDS` (default 1): runs per server and scenario, alternating the order;
//!   the table shows the median of each figure;
//! - `GETTY_BENCH_CONNS` (default `10000,50000`): the idle-connection counts of the RSS test,
//!   one run per count and server;
//! - `GETTY_BENCH_RSS_USED=1`: each idle connection first echoes one 64-byte message (what a
//!   connection that worked and went quiet costs; by default none sends a byte);
//! - `GETTY_BENCH_SCENARIOS` (default `abcdr`): which of a, b, c, d and r (the RSS test) to
//!   run;
//! - `GETTY_BENCH_ONLY` (`getty`, `mio` or `tokio`): run one server only (for profiling; in
//!   (d), the getty-rs servers or tokio's);
//! - `GETTY_BENCH_TOKIO` (`framed` or `raw`): the tokio echo variant;
//! - `GETTY_BENCH_TOKIO_BUF` (default 8192): the framed tokio echo's `BufReader` capacity
//!   (scenario (c) depends on it: with 8 KiB tokio spends about three syscalls a message);
//! - `GETTY_BENCH_CHART_DIR`: where each scenario's latency chart goes (default
//!   `bench-charts/` in the target directory);
//! - `GETTY_BENCH_QUICK=1`: smoke mode (0.2 s warm-up, 0.5 s runs, 200 idle connections).
//!   Quick mode is also what runs when the binary is started without `--bench` (as
//!   `cargo test --benches` does: a smoke test; CI only builds the benches).

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use getty::codec::{Bytes, LengthFieldCodec};
use getty::reactor::ReactorThread;
use getty::tcp::{self, Setup, TcpServer, TcpServerPool};
use getty::{Handler, Metrics, ReactorHandle, ReactorPool, Session, SessionOptions, SocketOptions};
use socket2::{Domain, Protocol, Socket, Type};

/// Settings, CPU clocks, server plumbing, the load generator and the rounds, shared with the
/// WebSocket echo bench.
#[path = "support/chart.rs"]
mod chart;
#[path = "support/echo_bench.rs"]
mod echo_bench;
#[path = "support/length_prefixed.rs"]
mod length_prefixed;
#[path = "support/message_io_echo.rs"]
mod message_io_echo;
#[path = "support/mio_echo.rs"]
mod mio_echo;

use echo_bench::{
    allowed_cpus, clock_now, current_thread_ids, env_f64, kinds_from_env, load_average,
    measured_secs, median, on_load_thread, quick_mode_requested, rounds_from_env, run_rounds,
    scenario_keys, start_reactor_thread, start_tokio_thread, thread_user_sys_ticks, verdict,
    AcceptThread, Kind, LoadGenerator, Placement, Scenario, ThreadIds, Window, CHART_PERCENTILES,
    NOISY_OTHER_CPUS,
};
use length_prefixed::{connect_plain, thread_ids_by_index, LengthPrefixed, TokioEcho};
use mio_echo::{start_mio_thread, LengthPrefixedEcho};

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

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Getty => "getty-rs",
            Kind::Mio => "mio",
            Kind::MessageIo => "message-io",
            Kind::Tokio => "tokio",
        }
    }

    fn opened(self) -> &'static AtomicUsize {
        match self {
            Kind::Getty => &GETTY_OPENED,
            Kind::Mio => &mio_echo::MIO_OPENED,
            Kind::MessageIo => &message_io_echo::MESSAGE_IO_OPENED,
            Kind::Tokio => &TOKIO_OPENED,
        }
    }
}

#[derive(Debug, Clone)]
struct Config {
    warmup: Duration,
    measure: Duration,
    rounds: usize,
    /// The idle-connection counts of the RSS test.
    rss_conns: Vec<usize>,
    scenarios: String,
    kinds: Vec<Kind>,
    tokio_echo: TokioEcho,
    quick: bool,
}

impl Config {
    fn from_env() -> Config {
        let quick =
            quick_mode_requested() || std::env::args().any(|a| a == "--quick" || a == "quick");
        let (default_measure, default_warmup, default_conns): (f64, f64, &[usize]) = if quick {
            (0.5, 0.2, &[200])
        } else {
            (5.0, 3.0, &[10_000, 50_000])
        };
        let measure = measured_secs(default_measure);
        let warmup = env_f64("GETTY_BENCH_WARMUP_SECS").unwrap_or(default_warmup.min(measure));
        let tokio_echo = match std::env::var("GETTY_BENCH_TOKIO").as_deref() {
            Ok("raw") => TokioEcho::Raw,
            _ => TokioEcho::Framed {
                buf: env_f64("GETTY_BENCH_TOKIO_BUF").map_or(8 * 1024, |b| (b as usize).max(64)),
            },
        };
        Config {
            warmup: Duration::from_secs_f64(warmup),
            measure: Duration::from_secs_f64(measure),
            rounds: rounds_from_env(),
            rss_conns: rss_conns_from_env(default_conns),
            scenarios: scenario_keys("abcdr"),
            kinds: kinds_from_env(&[Kind::Getty, Kind::Mio, Kind::MessageIo, Kind::Tokio]),
            tokio_echo,
            quick,
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

/// Scenario (d): the load the "one reactor per core" target is set at.
fn scenario_d() -> Scenario {
    Scenario {
        key: 'd',
        label: "(d) 100 conns x 16 x 64 B",
        conns: 100,
        in_flight: 16,
        size: 64,
        pin: false,
    }
}

/// Worker threads (reactors, tokio workers) of the multi-threaded servers in scenario (d).
const POOL_THREADS: usize = 2;

/// The servers of scenario (d).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Multi {
    /// The single-reactor getty-rs server of the other scenarios.
    Getty1,
    /// `start_pool(2, ..)`: one SO_REUSEPORT listener per reactor.
    GettyReusePort,
    /// One acceptor thread handing connections round-robin to 2 reactors.
    GettyHandoff,
    /// tokio's multi-thread runtime with 2 workers.
    TokioMt,
}

impl Multi {
    const ALL: [Multi; 4] = [
        Multi::Getty1,
        Multi::GettyReusePort,
        Multi::GettyHandoff,
        Multi::TokioMt,
    ];

    /// A name for the targets, without the "getty".
    fn short(self) -> &'static str {
        match self {
            Multi::Getty1 => "1 reactor",
            Multi::GettyReusePort => "2R reuseport",
            Multi::GettyHandoff => "2R handoff",
            Multi::TokioMt => "tokio mt",
        }
    }

    /// Threads that do the server's work (the handoff acceptor aside: it only accepts).
    fn workers(self) -> usize {
        match self {
            Multi::Getty1 => 1,
            _ => POOL_THREADS,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Multi::Getty1 => "getty 1 reactor",
            Multi::GettyReusePort => "getty 2 reuseport",
            Multi::GettyHandoff => "getty 2 handoff",
            Multi::TokioMt => "tokio mt 2",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Multi::TokioMt => Kind::Tokio,
            _ => Kind::Getty,
        }
    }

    fn start(self, tokio_echo: TokioEcho) -> io::Result<ServerThread> {
        let mut server = match self {
            Multi::Getty1 => start_getty()?,
            Multi::GettyReusePort => start_getty_reuseport(POOL_THREADS)?,
            Multi::GettyHandoff => start_getty_handoff(POOL_THREADS)?,
            Multi::TokioMt => start_tokio_mt(POOL_THREADS, tokio_echo)?,
        };
        server.name = self.name();
        Ok(server)
    }
}

// ---------------------------------------------------------------------------------------
// OS helpers
// ---------------------------------------------------------------------------------------

/// Nanoseconds thread `tid` of this process spent runnable but waiting for a CPU (the
/// second field of its schedstat): high when other processes compete for the CPUs.
fn thread_run_delay_ns(tid: libc::pid_t) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Raises RLIMIT_NOFILE to at least `wanted` descriptors: the hard limit too where the
/// process may (as root, up to the kernel's `nr_open`), else the soft limit to the hard one.
/// Returns (old soft, new soft, hard).
fn raise_nofile_limit(wanted: usize) -> (libc::rlim_t, libc::rlim_t, libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid in/out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return (0, 0, 0);
    }
    let old = lim;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|v| v.trim().parse::<libc::rlim_t>().ok())
        .unwrap_or(lim.rlim_max);
    let wanted = (wanted as libc::rlim_t).min(nr_open);
    if wanted > lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: wanted,
        };
        // SAFETY: `raised` is a valid pointer. Only a privileged process may raise the hard
        // limit; for others this fails and the soft limit is raised below.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return (old.rlim_cur, raised.rlim_cur, raised.rlim_max);
        }
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            lim.rlim_cur = old.rlim_cur;
        }
    }
    (old.rlim_cur, lim.rlim_cur, lim.rlim_max)
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
    Pool(TcpServerPool),
    Handoff {
        reactors: ReactorPool,
        acceptor: AcceptThread,
    },
    /// The tokio or the hand-written server.
    Thread(AcceptThread),
}

/// A server running on threads of its own.
struct ServerThread {
    name: &'static str,
    addr: SocketAddr,
    /// Every thread that does the server's work: their CPU time is the server's.
    threads: Vec<ThreadIds>,
    /// The server's reactors, in order (none for tokio).
    reactors: Vec<ReactorHandle>,
    running: Running,
}

impl ServerThread {
    fn start(kind: Kind, tokio_echo: TokioEcho) -> io::Result<ServerThread> {
        match kind {
            Kind::Getty => start_getty(),
            Kind::Mio => start_mio(),
            Kind::MessageIo => start_message_io(),
            Kind::Tokio => start_tokio(tokio_echo),
        }
    }

    /// A metrics snapshot of each reactor, in order.
    fn reactor_metrics(&self) -> io::Result<Vec<Metrics>> {
        self.reactors.iter().map(Metrics::of).collect()
    }

    fn stop(self) -> io::Result<()> {
        match self.running {
            Running::Getty(thread) => {
                thread.handle().shutdown();
                thread.join()
            }
            Running::Pool(pool) => {
                pool.shutdown();
                pool.join()
            }
            Running::Handoff { reactors, acceptor } => {
                let accepted = acceptor.stop();
                reactors.shutdown();
                accepted.and(reactors.join())
            }
            Running::Thread(accept_loop) => accept_loop.stop(),
        }
    }
}

/// The getty-rs server's setup hook: length-prefixed frames, the echo handler.
fn getty_echo_setup(_: &mut Setup<'_>) -> io::Result<(LengthFieldCodec, GettyEcho)> {
    Ok((LengthFieldCodec::default(), GettyEcho))
}

fn start_getty() -> io::Result<ServerThread> {
    let server = TcpServer::bind("127.0.0.1:0", getty_echo_setup)?;
    let addr = server.local_addr();
    let (thread, ids) = start_reactor_thread("getty-echo", server)?;
    Ok(ServerThread {
        name: Kind::Getty.name(),
        addr,
        threads: vec![ids],
        reactors: vec![thread.handle().clone()],
        running: Running::Getty(thread),
    })
}

/// `reactors` reactors, each with its own SO_REUSEPORT listener (`start_pool`).
fn start_getty_reuseport(reactors: usize) -> io::Result<ServerThread> {
    let (tx, rx) = mpsc::channel();
    // `make_setup(i)` runs on reactor i's own thread: a good place to learn its ids.
    let pool = TcpServer::builder().start_pool(reactors, "127.0.0.1:0", move |index| {
        let _ = tx.send((index, current_thread_ids()));
        getty_echo_setup
    })?;
    let threads = thread_ids_by_index(&rx, pool.reactors().len())?;
    Ok(ServerThread {
        name: Kind::Getty.name(),
        addr: pool.local_addr(),
        threads,
        reactors: pool.reactors().handles(),
        running: Running::Pool(pool),
    })
}

/// `reactors` reactors without listeners, and one acceptor thread that hands each accepted
/// connection to the next reactor in turn, where `tcp::adopt` makes it a session.
fn start_getty_handoff(reactors: usize) -> io::Result<ServerThread> {
    let (tx, rx) = mpsc::channel();
    let pool = ReactorPool::start(reactors, move |index, _reactor| {
        let _ = tx.send((index, current_thread_ids()));
        Ok(())
    })?;
    let mut threads = thread_ids_by_index(&rx, pool.len())?;
    let handles = pool.handles();

    // A blocking listener with getty-rs's backlog: the acceptor has nothing else to do.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(1024)?;
    let listener: StdTcpListener = socket.into();
    let addr = listener.local_addr()?;

    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let workers = handles.clone();
    let (ids_tx, ids_rx) = mpsc::channel();
    let acceptor = std::thread::Builder::new()
        .name("getty-acceptor".to_owned())
        .spawn(move || -> io::Result<()> {
            let _ = ids_tx.send(current_thread_ids());
            for next in 0.. {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        eprintln!("handoff accept: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if stop_flag.load(Ordering::Acquire) {
                    break;
                }
                workers[next % workers.len()].execute(move |spawner| {
                    let (sockets, sessions) = (SocketOptions::default(), SessionOptions::default());
                    let mut setup = getty_echo_setup;
                    if let Err(e) = tcp::adopt(spawner, stream, &sockets, &sessions, &mut setup) {
                        eprintln!("adopting a connection: {e}");
                    }
                })?;
            }
            Ok(())
        });
    let acceptor = match acceptor {
        Ok(acceptor) => acceptor,
        Err(e) => {
            pool.shutdown();
            let _ = pool.join();
            return Err(e);
        }
    };
    threads.push(
        ids_rx
            .recv()
            .map_err(|_| io::Error::other("acceptor thread gone"))?,
    );
    Ok(ServerThread {
        name: Kind::Getty.name(),
        addr,
        threads,
        reactors: handles,
        running: Running::Handoff {
            reactors: pool,
            acceptor: AcceptThread {
                addr,
                stop,
                thread: acceptor,
            },
        },
    })
}

/// What the tokio servers do with each accepted connection: count it and spawn its echo
/// task.
fn tokio_echo_task(variant: TokioEcho) -> impl FnMut(tokio::net::TcpStream) + Send + 'static {
    length_prefixed::tokio_echo_task(variant, &TOKIO_OPENED)
}

fn start_tokio(variant: TokioEcho) -> io::Result<ServerThread> {
    let (accept_loop, ids) = start_tokio_thread("tokio-echo", tokio_echo_task(variant))?;
    Ok(ServerThread {
        name: Kind::Tokio.name(),
        addr: accept_loop.addr,
        threads: vec![ids],
        reactors: Vec::new(),
        running: Running::Thread(accept_loop),
    })
}

/// message-io's raw TCP transport, echoing each read.
fn start_message_io() -> io::Result<ServerThread> {
    let (accept_loop, ids) = message_io_echo::start_message_io_thread("message-io-echo")?;
    Ok(ServerThread {
        name: Kind::MessageIo.name(),
        addr: accept_loop.addr,
        threads: vec![ids],
        reactors: Vec::new(),
        running: Running::Thread(accept_loop),
    })
}

/// The hand-written baseline: a mio loop echoing whole length-prefixed frames.
fn start_mio() -> io::Result<ServerThread> {
    let (accept_loop, ids) = start_mio_thread::<LengthPrefixedEcho>("mio-echo")?;
    Ok(ServerThread {
        name: Kind::Mio.name(),
        addr: accept_loop.addr,
        threads: vec![ids],
        reactors: Vec::new(),
        running: Running::Thread(accept_loop),
    })
}

/// tokio's multi-thread runtime with `workers` worker threads; the accept loop is a task
/// like the connections, so all of the server's work happens on the workers (the thread
/// that owns the runtime only waits for the accept loop to end).
fn start_tokio_mt(workers: usize, variant: TokioEcho) -> io::Result<ServerThread> {
    let (accept_loop, threads) =
        length_prefixed::start_tokio_mt("tokio-mt", workers, tokio_echo_task(variant))?;
    Ok(ServerThread {
        name: "tokio mt",
        addr: accept_loop.addr,
        threads,
        reactors: Vec::new(),
        running: Running::Thread(accept_loop),
    })
}

// ---------------------------------------------------------------------------------------
// Load generator
// ---------------------------------------------------------------------------------------

/// What the load generator reads from the server's threads at the start and the end of the
/// measured window.
struct ServerReading {
    /// CPU time of each thread, in `ServerThread::threads` order.
    cpu: Vec<Duration>,
    /// (user, system) clock ticks, summed over the threads.
    ticks: (u64, u64),
    /// Time runnable but waiting for a CPU, summed over the threads.
    run_delay_ns: u64,
}

impl ServerReading {
    fn of(server: &[ThreadIds]) -> ServerReading {
        let ticks = server.iter().fold((0, 0), |(u, s), t| {
            let (user, sys) = thread_user_sys_ticks(t.tid);
            (u + user, s + sys)
        });
        ServerReading {
            cpu: server.iter().map(|t| clock_now(t.cpu_clock)).collect(),
            ticks,
            run_delay_ns: server.iter().map(|t| thread_run_delay_ns(t.tid)).sum(),
        }
    }
}

/// What one reactor of a server did over a whole run (warm-up included).
#[derive(Debug, Clone, Copy)]
struct ReactorShare {
    sessions: u64,
    messages: u64,
    /// Loop turns (one poll each): messages per turn is how much each wake-up batches.
    turns: u64,
}

/// What one measured run produced.
#[derive(Debug, Clone)]
struct Measurement {
    messages: u64,
    elapsed: Duration,
    /// CPU time of all the server's threads.
    server_cpu: Duration,
    /// CPU time of each of the server's threads, in `ServerThread::threads` order.
    thread_cpu: Vec<Duration>,
    client_cpu: Duration,
    /// CPUs kept busy by anything but this process, on average over the window.
    other_cpus: f64,
    /// Sessions and messages of each reactor (filled in after the run; none for tokio).
    reactors: Vec<ReactorShare>,
    p50_ns: u64,
    p90_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
    /// Share of the server thread's CPU time spent in the kernel (from /proc ticks).
    server_sys_share: f64,
    /// Time the server threads were runnable but not running (summed over the threads).
    server_run_delay: Duration,
}

impl Measurement {
    fn of(window: &Window<ServerReading>) -> Measurement {
        let (start, end) = (&window.server_start, &window.server_end);
        let thread_cpu: Vec<Duration> = end
            .cpu
            .iter()
            .zip(&start.cpu)
            .map(|(c1, c0)| c1.saturating_sub(*c0))
            .collect();
        let (user, sys) = (end.ticks.0 - start.ticks.0, end.ticks.1 - start.ticks.1);
        let delay = end.run_delay_ns.saturating_sub(start.run_delay_ns);
        Measurement {
            messages: window.messages,
            elapsed: window.elapsed,
            server_cpu: thread_cpu.iter().sum(),
            thread_cpu,
            client_cpu: window.client_cpu,
            other_cpus: window.other_cpus,
            reactors: Vec::new(),
            p50_ns: window.latency.value_at_quantile(0.50),
            p90_ns: window.latency.value_at_quantile(0.90),
            p99_ns: window.latency.value_at_quantile(0.99),
            p999_ns: window.latency.value_at_quantile(0.999),
            max_ns: window.latency.max(),
            server_sys_share: sys as f64 / (user + sys).max(1) as f64,
            server_run_delay: Duration::from_nanos(delay),
        }
    }

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

    /// The share of the server's CPU time each of its threads used.
    fn thread_util(&self) -> Vec<f64> {
        self.thread_cpu
            .iter()
            .map(|c| c.as_secs_f64() / self.elapsed.as_secs_f64())
            .collect()
    }
}

/// Runs one scenario against the server at `addr` (whose threads are `server`) on the
/// calling thread.
fn drive(
    addr: SocketAddr,
    scenario: &Scenario,
    cfg: &Config,
    server: &[ThreadIds],
) -> io::Result<Measurement> {
    let framing = LengthPrefixed::random(scenario.size);
    let load = LoadGenerator::connect(scenario, framing, || connect_plain(addr))?;
    let window = load.run(cfg.warmup, cfg.measure, || ServerReading::of(server))?;
    Ok(Measurement::of(&window))
}

/// Starts a server, runs one scenario against it from a load-generator thread, stops it.
fn run_one(kind: Kind, scenario: &Scenario, cfg: &Config) -> io::Result<Measurement> {
    run_against(ServerThread::start(kind, cfg.tokio_echo)?, scenario, cfg)
}

/// Runs one scenario against `server` from a load-generator thread, then stops it.
fn run_against(server: ServerThread, scenario: &Scenario, cfg: &Config) -> io::Result<Measurement> {
    let (addr, threads) = (server.addr, server.threads.clone());
    let (scenario_copy, cfg_copy) = (scenario.clone(), cfg.clone());
    let placement = if scenario.pin {
        Placement::Shared
    } else {
        Placement::Free
    };
    let mut result = on_load_thread("load", placement, &server.threads, move || {
        drive(addr, &scenario_copy, &cfg_copy, &threads)
    });
    if let Ok(m) = &mut result {
        // Counted since the server started: each run has a fresh server.
        match server.reactor_metrics() {
            Ok(metrics) => {
                m.reactors = metrics
                    .iter()
                    .map(|r| ReactorShare {
                        sessions: r.sessions_opened,
                        messages: r.messages_in,
                        turns: r.reactor.turns,
                    })
                    .collect()
            }
            Err(e) => eprintln!("metrics of the {} server: {e}", server.name),
        }
    }
    let name = server.name;
    if let Err(e) = server.stop() {
        eprintln!("stopping the {name} server: {e}");
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

/// The idle-connection counts from `GETTY_BENCH_CONNS` (comma-separated), or `default`.
fn rss_conns_from_env(default: &[usize]) -> Vec<usize> {
    let parsed: Vec<usize> = std::env::var("GETTY_BENCH_CONNS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|c| c.trim().parse::<f64>().ok())
        .map(|c| c.max(1.0) as usize)
        .collect();
    if parsed.is_empty() {
        default.to_vec()
    } else {
        parsed
    }
}

/// The descriptors a process holding one end of `conns` idle connections needs, with the
/// warm-up connections and some to spare.
fn nofile_needed(conns: usize) -> usize {
    RESERVED_FDS + RSS_WARM_CONNS + conns
}

/// How many idle connections fit in the descriptor limit (one descriptor each in the
/// server's process and in the clients').
fn idle_conn_count(wanted: usize, soft_limit: libc::rlim_t) -> usize {
    let room = (soft_limit as usize).saturating_sub(RESERVED_FDS + RSS_WARM_CONNS);
    wanted.min(room)
}

/// Client connections per source address: below the ~28,000 ports of Linux's default
/// ephemeral range (32768-60999), which bound the connections from one address to one
/// server.
const CONNS_PER_SOURCE: usize = 20_000;

/// Opens the `index`th idle client connection to `addr`, from 127.0.0.2 for the first
/// `CONNS_PER_SOURCE`, then 127.0.0.3, and so on (the whole 127/8 block is loopback).
fn connect_idle(addr: SocketAddr, index: usize) -> io::Result<OwnedFd> {
    let host = 2 + index / CONNS_PER_SOURCE;
    let source = std::net::Ipv4Addr::new(127, 0, (host >> 8) as u8, host as u8);
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    // The port is chosen at connect, for the whole 4-tuple, not at bind for the address.
    // SAFETY: setsockopt with a valid int option value.
    unsafe {
        let on: libc::c_int = 1;
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect(&addr.into())?;
    Ok(socket.into())
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

/// The child-process side of the RSS test: runs the server, has a process of its own open
/// the idle connections (so that this one holds only the server's end, and its descriptor
/// limit goes to them), and prints one `RSS_RESULT` line.
fn rss_child(kind: Kind, wanted: usize, cfg: &Config) -> io::Result<()> {
    let (_, soft, _) = raise_nofile_limit(nofile_needed(wanted));
    let conns = idle_conn_count(wanted, soft);
    let server = ServerThread::start(kind, cfg.tokio_echo)?;
    let base = kind.opened().load(Ordering::Relaxed);
    let mut clients = std::process::Command::new(std::env::current_exe()?)
        .env(
            "GETTY_BENCH_RSS_CLIENTS",
            format!("{} {conns}", server.addr),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let result = measure_idle(kind, base, conns, &mut clients);
    // Closing its stdin ends the clients' process, and with it the connections.
    drop(clients.stdin.take());
    let _ = clients.wait();
    if let Ok(line) = &result {
        println!("RSS_RESULT {line}");
    }
    server.stop().and(result.map(drop))
}

/// Reads VmRSS (and the heap) with the warm-up connections open, then with all of them;
/// returns the figures of an `RSS_RESULT` line.
fn measure_idle(
    kind: Kind,
    base: usize,
    conns: usize,
    clients: &mut std::process::Child,
) -> io::Result<String> {
    use std::io::{BufRead, Write};
    let mut said = io::BufReader::new(clients.stdout.take().expect("piped"));
    let mut expect = |word: &str| -> io::Result<()> {
        let mut line = String::new();
        said.read_line(&mut line)?;
        if line.trim() == word {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "the clients' process failed before {word}"
            )))
        }
    };
    expect("WARM")?;
    wait_opened(kind, base + RSS_WARM_CONNS, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(200));
    let rss_before_kib = vm_rss_kib();
    let heap_before = heap_in_use();

    let t0 = Instant::now();
    writeln!(clients.stdin.as_mut().expect("piped"), "GO")?;
    expect("OPENED")?;
    wait_opened(
        kind,
        base + RSS_WARM_CONNS + conns,
        Duration::from_secs(120),
    )?;
    let open_ms = t0.elapsed().as_millis() as u64;
    std::thread::sleep(Duration::from_millis(300));
    let rss_after_kib = vm_rss_kib();
    let heap_after = heap_in_use();
    Ok(format!(
        "{conns} {rss_before_kib} {rss_after_kib} {heap_before} {heap_after} {open_ms}"
    ))
}

/// Whether each idle connection first echoes one message (`GETTY_BENCH_RSS_USED=1`): the
/// cost of a connection that did some work and then went quiet, rather than of one that
/// never sent a byte.
fn rss_used() -> bool {
    std::env::var("GETTY_BENCH_RSS_USED").is_ok_and(|v| v == "1")
}

/// Sends one 64-byte message on a new connection and reads its echo.
fn echo_once(connection: OwnedFd) -> io::Result<OwnedFd> {
    use std::io::{Read, Write};
    let mut stream = StdTcpStream::from(connection);
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut frame = [7u8; 4 + 64];
    frame[..4].copy_from_slice(&64u32.to_be_bytes());
    stream.write_all(&frame)?;
    stream.read_exact(&mut frame)?;
    Ok(stream.into())
}

/// The clients' process of the RSS test (`GETTY_BENCH_RSS_CLIENTS` is "address count"):
/// opens the warm-up connections and says `WARM`; on `GO` opens `count` more and says
/// `OPENED`; holds them all until its stdin closes.
fn rss_clients(spec: &str) -> io::Result<()> {
    use std::io::{BufRead, Write};
    let mut words = spec.split_whitespace();
    let addr: SocketAddr = words
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| io::Error::other("no server address"))?;
    let conns: usize = words.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    raise_nofile_limit(nofile_needed(conns));
    let used = rss_used();
    let open = |index| match connect_idle(addr, index) {
        Ok(connection) if used => echo_once(connection),
        opened => opened,
    };
    let mut held: Vec<OwnedFd> = Vec::with_capacity(RSS_WARM_CONNS + conns);
    for index in 0..RSS_WARM_CONNS {
        held.push(open(index)?);
    }
    let mut out = io::stdout();
    writeln!(out, "WARM")?;
    out.flush()?;
    let mut stdin = io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line)?;
    for index in RSS_WARM_CONNS..RSS_WARM_CONNS + conns {
        held.push(open(index)?);
    }
    writeln!(out, "OPENED")?;
    out.flush()?;
    // Until the server's process closes the pipe (or exits).
    while stdin.read_line(&mut line)? > 0 {}
    drop(held);
    Ok(())
}

/// Runs the RSS test for `kind` with `conns` idle connections in a child process (this
/// binary, re-executed).
fn rss_test(kind: Kind, conns: usize, cfg: &Config) -> io::Result<RssResult> {
    let exe = std::env::current_exe()?;
    let child_kind = match kind {
        Kind::Getty => "getty",
        Kind::Mio => "mio",
        Kind::MessageIo => "message-io",
        Kind::Tokio => "tokio",
    };
    let output = std::process::Command::new(exe)
        .env("GETTY_BENCH_RSS_CHILD", child_kind)
        .env("GETTY_BENCH_CONNS", conns.to_string())
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

/// The RSS test: every count of idle connections against every server, one child each,
/// printed as a table. `nofile` is (old soft, soft, hard) RLIMIT_NOFILE.
fn run_rss(
    cfg: &Config,
    nofile: (libc::rlim_t, libc::rlim_t, libc::rlim_t),
    failures: &mut usize,
) -> Vec<(Kind, RssResult)> {
    let (old_soft, soft, hard) = nofile;
    println!();
    println!(
        "idle connections: RLIMIT_NOFILE soft {old_soft} -> {soft} (hard {hard}); clients \
         from 127.0.0.2, 127.0.0.3, ... ({CONNS_PER_SOURCE} per address){}",
        if rss_used() {
            "; each echoed one 64-byte message first"
        } else {
            "; none has sent a byte"
        }
    );
    println!("server      conns   open ms  VmRSS before   VmRSS after   RSS B/conn   heap B/conn");
    let mut rss = Vec::new();
    for &wanted in &cfg.rss_conns {
        let count = idle_conn_count(wanted, soft);
        if count < wanted {
            println!(
                "  (reduced from {wanted} to {count}: RLIMIT_NOFILE's hard limit could not be \
                 raised; raising it takes CAP_SYS_RESOURCE)"
            );
        }
        for &kind in &cfg.kinds {
            match rss_test(kind, count, cfg) {
                Ok(r) => {
                    println!(
                        "{:<10} {:>6} {:>9} {:>9} KiB {:>9} KiB {:>12.0} {:>13.0}",
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
                    *failures += 1;
                    eprintln!("RSS test for {} ({count} connections): {e}", kind.name());
                }
            }
        }
    }
    rss
}

/// The target for the RSS test, at every count measured, with the others for
/// reference.
fn print_rss_targets(rss: &[(Kind, RssResult)]) {
    for (kind, r) in rss {
        let per = r.rss_per_conn();
        let conns = r.conns;
        match kind {
            Kind::Getty => println!(
                "{:<48} {:>6.0} B     {}",
                format!("RSS per idle connection <= 160 B ({conns})"),
                per,
                verdict(per <= 160.0)
            ),
            Kind::Mio => println!(
                "{:<48} {:>6.0} B     (for reference)",
                format!("hand-written RSS per idle connection ({conns})"),
                per
            ),
            Kind::MessageIo => println!(
                "{:<48} {:>6.0} B     (for reference)",
                format!("message-io RSS per idle connection ({conns})"),
                per
            ),
            Kind::Tokio => println!(
                "{:<48} {:>6.0} B     (expected 2-9 KiB)",
                format!("tokio RSS per idle connection ({conns})"),
                per
            ),
        }
    }
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
            p90_us: m(&|r| r.p90_ns as f64 / 1e3),
            p99_us: m(&|r| r.p99_ns as f64 / 1e3),
            p999_us: m(&|r| r.p999_ns as f64 / 1e3),
            max_us: m(&|r| r.max_ns as f64 / 1e3),
            per_cpu: m(&|r| r.per_server_cpu_sec()),
            server_util: m(&|r| r.server_util()),
            server_sys_share: m(&|r| r.server_sys_share),
            server_wait: m(&|r| r.server_wait()),
            client_util: m(&|r| r.client_util()),
        }
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
fn chart_scenario(scenario: &Scenario, servers: Vec<chart::Series>) {
    chart::LatencyChart {
        bench: "tcp_echo",
        scenario: &scenario.key.to_string(),
        title: &format!("tcp_echo {}: round-trip latency", scenario.label),
        percentiles: &CHART_PERCENTILES,
        series: servers,
    }
    .report();
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

/// One ratio row: getty-rs's figures over those of the server `other` names.
fn print_ratio(label: &str, other: &str, g: &Figures, t: &Figures, noisy: bool) {
    println!(
        "{label:<31} {:<9} {:>10.2}x {:>7.2}x {:>7.2}x {:>7.2}x {:>14.2}x{}",
        format!("getty/{other}"),
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

/// The figures of one of scenarios (a) to (c), for its targets.
struct ScenarioResult {
    scenario: Scenario,
    getty: Figures,
    mio: Option<Figures>,
    message_io: Option<Figures>,
    tokio: Option<Figures>,
}

impl ScenarioResult {
    /// The issues' targets for this scenario, each with its verdict.
    fn print_targets(&self) {
        let (scenario, g) = (&self.scenario, &self.getty);
        let key = &scenario.label[..3];
        let line = |what: &str, ratio: f64, ok: bool, other: &Figures| {
            let noisy = if is_noisy(scenario, g, other) {
                " (noisy run)"
            } else {
                ""
            };
            println!(
                "{:<48} {:>7.2}x     {}{noisy}",
                format!("{key} {what}"),
                ratio,
                verdict(ok)
            );
        };
        if let Some(m) = &self.mio {
            let cpu = g.per_cpu / m.per_cpu;
            line(
                "CPU efficiency within 10% of hand-written",
                cpu,
                cpu >= 0.9,
                m,
            );
        }
        if let Some(t) = &self.tokio {
            let cpu = g.per_cpu / t.per_cpu;
            let (want, what) = if scenario.size >= 16 * 1024 {
                (2.0, "CPU efficiency >= 2x tokio at 16 KiB")
            } else {
                (1.0, "CPU efficiency >= 1x tokio at 64 B")
            };
            line(what, cpu, cpu >= want, t);
            let p99 = g.p99_us / t.p99_us;
            line("p99 no worse than tokio's", p99, p99 <= 1.0, t);
        }
        if scenario.size >= 16 * 1024 {
            // Issue 16: large messages cost no more than in the best other server.
            let best = [&self.mio, &self.message_io, &self.tokio]
                .into_iter()
                .flatten()
                .max_by(|a, b| a.per_cpu.total_cmp(&b.per_cpu));
            if let Some(best) = best {
                let cpu = g.per_cpu / best.per_cpu;
                line(
                    "CPU efficiency >= the best other server",
                    cpu,
                    cpu >= 1.0,
                    best,
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scenario (d): one reactor per core
// ---------------------------------------------------------------------------------------

/// The runs of one server of scenario (d), summed up.
struct MultiResult {
    server: Multi,
    /// The medians over the quiet runs (over all of them if none was quiet).
    figures: Figures,
    /// Every run, quiet or not.
    runs: Vec<Measurement>,
    /// How many runs were quiet.
    quiet: usize,
    /// The median other load of the runs the figures come from.
    other_cpus: f64,
}

impl MultiResult {
    /// Other load above [`NOISY_OTHER_CPUS`]. Not the wait for a CPU, as in (a) to (c): the
    /// servers of (d) already share the machine with the load generator, so their threads'
    /// wait for a CPU says nothing about other load.
    fn noisy(&self) -> bool {
        self.other_cpus > NOISY_OTHER_CPUS
    }

    /// Per-message CPU cost of the client, as the msgs/s it could drive with a whole CPU.
    fn client_cap(&self) -> f64 {
        self.figures.rate / self.figures.client_util.max(1e-9)
    }

    /// The msgs/s the server would reach with each worker thread busy on a CPU of its own,
    /// at the cost per message measured here (a projection: batching changes with load).
    fn server_cap(&self) -> f64 {
        self.server.workers() as f64 * self.figures.per_cpu
    }

    /// The msgs/s at which the client and this server, at their measured costs per
    /// message, would use every CPU not taken by other load.
    fn machine_cap(&self, cpus: usize) -> f64 {
        let f = &self.figures;
        let room = (cpus as f64 - self.other_cpus).max(0.1);
        room * f.rate / (f.server_util + f.client_util).max(1e-9)
    }
}

/// Joins per-reactor figures as "a/b".
fn per_reactor<T: std::fmt::Display>(values: impl Iterator<Item = T>) -> String {
    values.map(|v| v.to_string()).collect::<Vec<_>>().join("/")
}

/// How one run spread sessions, messages and CPU over the server's threads: sessions,
/// share of the messages (%), messages per loop turn, CPU of each thread (%).
fn spread_of(m: &Measurement) -> (String, String, String, String) {
    let util = m.thread_util();
    let threads = per_reactor(util.iter().map(|u| format!("{:.0}", u * 100.0)));
    if m.reactors.is_empty() {
        return ("-".to_owned(), "-".to_owned(), "-".to_owned(), threads);
    }
    let per_turn = per_reactor(
        m.reactors
            .iter()
            .map(|r| format!("{:.0}", r.messages as f64 / r.turns.max(1) as f64)),
    );
    let total = m.reactors.iter().map(|r| r.messages).sum::<u64>().max(1) as f64;
    let sessions = per_reactor(m.reactors.iter().map(|r| r.sessions));
    let messages = per_reactor(
        m.reactors
            .iter()
            .map(|r| format!("{:.0}", r.messages as f64 * 100.0 / total)),
    );
    (sessions, messages, per_turn, threads)
}

fn run_multi(cfg: &Config, failures: &mut usize) -> Vec<MultiResult> {
    let scenario = scenario_d();
    let servers: Vec<Multi> = Multi::ALL
        .into_iter()
        .filter(|m| cfg.kinds.contains(&m.kind()))
        .collect();
    let runs = run_rounds(
        &servers,
        cfg.rounds,
        |server| run_against(server.start(cfg.tokio_echo)?, &scenario, cfg),
        |server, e| {
            *failures += 1;
            eprintln!("{} {}: {e}", scenario.label, server.name());
        },
    );
    runs.into_iter()
        .map(|(server, mine)| {
            // The figures come from the quiet runs when there are any.
            let quiet: Vec<Measurement> = mine
                .iter()
                .filter(|m| m.other_cpus <= NOISY_OTHER_CPUS)
                .cloned()
                .collect();
            let used = if quiet.is_empty() { &mine } else { &quiet };
            MultiResult {
                server,
                figures: Figures::of(used),
                other_cpus: median(used.iter().map(|m| m.other_cpus).collect()),
                quiet: quiet.len(),
                runs: mine,
            }
        })
        .collect()
}

fn print_multi(results: &[MultiResult], cpus: usize) {
    let scenario = scenario_d();
    println!();
    println!(
        "{}: one client thread; getty-rs on 1 and {POOL_THREADS} reactors, tokio's \
         multi-thread runtime with {POOL_THREADS} workers",
        scenario.label
    );
    println!(
        "server              msgs/s   p50 µs   p99 µs p99.9 µs  msgs/srv-CPU-s  srv CPU (sys) \
         srv wait  cli CPU  other  client cap  machine cap  srv cap  sessions  msgs %  msgs/turn  thread CPU %"
    );
    for r in results {
        let f = &r.figures;
        // The run whose rate is the median (or just above it) stands for the spread.
        let mut by_rate: Vec<&Measurement> = r
            .runs
            .iter()
            .filter(|m| r.quiet == 0 || m.other_cpus <= NOISY_OTHER_CPUS)
            .collect();
        by_rate.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        let (sessions, messages, per_turn, threads) = spread_of(by_rate[by_rate.len() / 2]);
        println!(
            "{:<17} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>15.0} {:>7.0}% ({:>3.0}%) {:>7.1}% {:>7.0}% \
             {:>5.2} {:>11.0} {:>12.0} {:>8.0}  {:>8} {:>7} {:>10}  {}{}",
            r.server.name(),
            f.rate,
            f.p50_us,
            f.p99_us,
            f.p999_us,
            f.per_cpu,
            f.server_util * 100.0,
            f.server_sys_share * 100.0,
            f.server_wait * 100.0,
            f.client_util * 100.0,
            r.other_cpus,
            r.client_cap(),
            r.machine_cap(cpus),
            r.server_cap(),
            sessions,
            messages,
            per_turn,
            threads,
            if r.noisy() {
                "   NOISY: other load, rerun"
            } else {
                ""
            }
        );
    }
    if results.iter().any(|r| r.runs.len() > 1) {
        for r in results {
            let each: Vec<String> = r
                .runs
                .iter()
                .map(|m| {
                    let (sessions, _, _, _) = spread_of(m);
                    format!(
                        "{:.0}k/s {:.0}k/CPU-s {sessions}{}",
                        m.rate() / 1e3,
                        m.per_server_cpu_sec() / 1e3,
                        if m.other_cpus > NOISY_OTHER_CPUS {
                            format!(" (noisy: other {:.2})", m.other_cpus)
                        } else {
                            String::new()
                        }
                    )
                })
                .collect();
            println!(
                "  each run, {} ({} quiet): {}",
                r.server.name(),
                r.quiet,
                each.join("; ")
            );
        }
    }

    let find = |s: Multi| results.iter().find(|r| r.server == s);
    println!("ratios                                   msgs/s   p50 µs   p99 µs  msgs/srv-CPU-s");
    let pairs = [
        (Multi::GettyReusePort, Multi::Getty1),
        (Multi::GettyReusePort, Multi::TokioMt),
        (Multi::GettyHandoff, Multi::Getty1),
        (Multi::GettyHandoff, Multi::TokioMt),
        (Multi::GettyHandoff, Multi::GettyReusePort),
    ];
    for (a, b) in pairs {
        if let (Some(x), Some(y)) = (find(a), find(b)) {
            let (f, g) = (&x.figures, &y.figures);
            println!(
                "{:<38} {:>7.2}x {:>7.2}x {:>7.2}x {:>14.2}x{}",
                format!("{} / {}", a.name(), b.name()),
                f.rate / g.rate,
                f.p50_us / g.p50_us,
                f.p99_us / g.p99_us,
                f.per_cpu / g.per_cpu,
                if x.noisy() || y.noisy() {
                    "   (noisy)"
                } else {
                    ""
                }
            );
        }
    }
    println!(
        "  srv CPU: all server threads (reactors + acceptor, or tokio's workers) / wall time; \
         srv wait: summed over them (the client competes for the same {cpus} CPUs); other: \
         CPUs busy outside this process; client cap: msgs/s the one client thread could drive \
         with a whole CPU; machine cap: msgs/s if client + server used all {cpus} CPUs (less \
         other) at their measured costs; srv cap: msgs/s with each of the server's worker \
         threads on a CPU of its own at the measured msgs/srv-CPU-s (a projection); \
         sessions, msgs %, msgs/turn (messages per poll, warm-up included), thread CPU %: \
         per reactor (then the acceptor), in the median run; with several rounds, the figures are the medians of \
         the quiet runs"
    );
}

/// The targets for scenario (d): 2 reactors >= 1.6x one reactor and >= 1.2x tokio
/// multi-thread, in msgs/s; CPU efficiency is shown alongside.
fn print_multi_targets(results: &[MultiResult]) {
    let find = |s: Multi| results.iter().find(|r| r.server == s);
    for two in [Multi::GettyReusePort, Multi::GettyHandoff] {
        let Some(x) = find(two) else { continue };
        for (base, want) in [(Multi::Getty1, 1.6), (Multi::TokioMt, 1.2)] {
            let Some(y) = find(base) else { continue };
            let noisy = if x.noisy() || y.noisy() {
                " (noisy run)"
            } else {
                ""
            };
            let rate = x.figures.rate / y.figures.rate;
            println!(
                "{:<48} {:>7.2}x     {}{noisy}",
                format!("(d) {} msgs/s >= {want}x {}", two.short(), base.short()),
                rate,
                verdict(rate >= want)
            );
            println!(
                "{:<48} {:>7.2}x     (for reference)",
                format!("(d) {} msgs/srv-CPU-s vs {}", two.short(), base.short()),
                x.figures.per_cpu / y.figures.per_cpu,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------

fn main() {
    let cfg = Config::from_env();
    if let Ok(spec) = std::env::var("GETTY_BENCH_RSS_CLIENTS") {
        if let Err(e) = rss_clients(&spec) {
            eprintln!("RSS clients: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Ok(child) = std::env::var("GETTY_BENCH_RSS_CHILD") {
        let kind = match child.as_str() {
            "tokio" => Kind::Tokio,
            "mio" => Kind::Mio,
            "message-io" => Kind::MessageIo,
            _ => Kind::Getty,
        };
        let conns = cfg.rss_conns.iter().copied().max().unwrap_or(1);
        if let Err(e) = rss_child(kind, conns, &cfg) {
            eprintln!("RSS child ({}): {e}", kind.name());
            std::process::exit(1);
        }
        return;
    }

    let most_conns = cfg.rss_conns.iter().copied().max().unwrap_or(1);
    let (old_soft, soft, hard) = raise_nofile_limit(nofile_needed(most_conns));
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

    let mut results: Vec<ScenarioResult> = Vec::new();
    let mut failures = 0;
    let kinds = &cfg.kinds;
    for scenario in scenarios() {
        if !cfg.scenarios.contains(scenario.key) {
            continue;
        }
        let runs = run_rounds(
            kinds,
            cfg.rounds,
            |kind| run_one(kind, &scenario, &cfg),
            |kind, e| {
                failures += 1;
                eprintln!("{} {}: {e}", scenario.label, kind.name());
            },
        );
        println!();
        println!("{TABLE_HEADER}");
        let mut figures = Vec::new();
        let mut spread = Vec::new();
        for (kind, mine) in runs {
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
        let of = |kind: Kind| figures.iter().find(|(k, _)| *k == kind).map(|(_, f)| *f);
        if let Some(g) = of(Kind::Getty) {
            for (kind, other) in figures.iter().filter(|(k, _)| *k != Kind::Getty) {
                let noisy = is_noisy(&scenario, &g, other);
                let short = match kind {
                    Kind::MessageIo => "m-io",
                    Kind::Tokio => "tok",
                    _ => kind.name(),
                };
                print_ratio(scenario.label, short, &g, other, noisy);
            }
            results.push(ScenarioResult {
                scenario: scenario.clone(),
                getty: g,
                mio: of(Kind::Mio),
                message_io: of(Kind::MessageIo),
                tokio: of(Kind::Tokio),
            });
        }
        let bars = figures.iter().map(|(kind, f)| f.chart_series(kind.name()));
        chart_scenario(&scenario, bars.collect());
    }

    let multi = if cfg.scenarios.contains('d') {
        let multi = run_multi(&cfg, &mut failures);
        print_multi(&multi, allowed_cpus().len());
        let bars = multi
            .iter()
            .map(|r| r.figures.chart_series(r.server.name()));
        chart_scenario(&scenario_d(), bars.collect());
        multi
    } else {
        Vec::new()
    };

    let rss = if cfg.scenarios.contains('r') {
        run_rss(&cfg, (old_soft, soft, hard), &mut failures)
    } else {
        Vec::new()
    };

    println!();
    println!("targets (from the issue)                         measured     verdict");
    if cfg.quick {
        println!("(quick smoke mode: the runs are too short for these verdicts to mean much)");
    }
    for result in &results {
        result.print_targets();
    }
    print_multi_targets(&multi);
    print_rss_targets(&rss);
    if failures > 0 {
        eprintln!("{failures} run(s) failed");
        std::process::exit(1);
    }
}
