//! What the TCP and WebSocket echo benches (`tcp_echo`, `ws_echo`) share: the settings they
//! read alike from `GETTY_BENCH_*`, the CPU clocks and the "other CPU" noise measure, the
//! plumbing of their getty-rs and tokio servers, the mio load generator (which leaves the
//! framing of a message and of its echo to the bench) and the rounds that alternate the
//! servers.
//!
//! Each bench keeps what differs: its framing, its servers' echo, its scenarios, its figures
//! and tables.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use getty::reactor::{Entry, ReactorThread};
use getty::Reactor;
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

/// Above this many CPUs busy outside this process during a measured window, a run is noisy:
/// other load changes how much work each wake-up of a server finds.
pub const NOISY_OTHER_CPUS: f64 = 0.1;

/// A client connection's read buffer never needs to grow this large: it holds at most the
/// echoes of the messages in flight.
const MAX_CLIENT_READ_BUF: usize = 64 << 20;

/// The seed of every run's message bytes, so that each run sends the same message.
const PAYLOAD_SEED: u64 = 0x0067_6574_7479;

/// The round-trip percentiles each echo bench charts after its table.
pub const CHART_PERCENTILES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

// ---------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------

/// The servers the benches compare. Each bench names them in its tables (its own
/// `impl Kind { fn name }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Getty,
    /// The hand-written baseline (`support/mio_echo.rs`).
    Mio,
    /// message-io (`support/message_io_echo.rs`), a peer library, in the TCP echo only.
    MessageIo,
    Tokio,
}

/// The value of the environment variable `name`, if it is a non-negative number.
pub fn env_f64(name: &str) -> Option<f64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Some(v),
        _ => {
            eprintln!("ignoring {name}={value:?}: not a non-negative number");
            None
        }
    }
}

/// `GETTY_BENCH_QUICK` (anything but `0`) asks for smoke mode, and so does a start without
/// `--bench`: `cargo bench` passes it, `cargo test --benches` does not.
pub fn quick_mode_requested() -> bool {
    std::env::var("GETTY_BENCH_QUICK").is_ok_and(|v| v != "0")
        || !std::env::args().any(|a| a == "--bench")
}

/// `GETTY_BENCH_SECS`: the measured seconds per run (at least 0.05).
pub fn measured_secs(default: f64) -> f64 {
    env_f64("GETTY_BENCH_SECS").unwrap_or(default).max(0.05)
}

/// `GETTY_BENCH_ROUNDS`: the runs per server and scenario (at least one).
pub fn rounds_from_env() -> usize {
    env_f64("GETTY_BENCH_ROUNDS").map_or(1, |r| (r as usize).max(1))
}

/// `GETTY_BENCH_SCENARIOS`: the keys of the scenarios to run, in lower case.
pub fn scenario_keys(default: &str) -> String {
    std::env::var("GETTY_BENCH_SCENARIOS")
        .unwrap_or_else(|_| default.to_owned())
        .to_ascii_lowercase()
}

/// `GETTY_BENCH_ONLY` (`getty`, `mio`, `message-io` or `tokio`): the one server to run of the bench's
/// `servers`, all of them when it is unset.
pub fn kinds_from_env(servers: &[Kind]) -> Vec<Kind> {
    let only = match std::env::var("GETTY_BENCH_ONLY").as_deref() {
        Ok("getty") | Ok("getty-rs") => Kind::Getty,
        Ok("mio") => Kind::Mio,
        Ok("message-io") => Kind::MessageIo,
        Ok("tokio") => Kind::Tokio,
        _ => return servers.to_vec(),
    };
    servers.iter().copied().filter(|&k| k == only).collect()
}

/// One load: `conns` connections, each with `in_flight` messages of `size` bytes in flight.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The letter `GETTY_BENCH_SCENARIOS` selects it by.
    pub key: char,
    pub label: &'static str,
    pub conns: usize,
    pub in_flight: usize,
    pub size: usize,
    /// Client and server share one CPU (see each bench's documentation).
    pub pin: bool,
}

// ---------------------------------------------------------------------------------------
// Threads, CPUs and clocks
// ---------------------------------------------------------------------------------------

/// A thread's kernel id (to pin it) and its CPU-time clock (readable from any thread).
#[derive(Debug, Clone, Copy)]
pub struct ThreadIds {
    pub tid: libc::pid_t,
    pub cpu_clock: libc::clockid_t,
}

pub fn current_thread_ids() -> ThreadIds {
    let mut cpu_clock: libc::clockid_t = 0;
    // SAFETY: `cpu_clock` is a valid out-pointer; pthread_self is always a live thread.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut cpu_clock) };
    assert_eq!(rc, 0, "pthread_getcpuclockid failed");
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    ThreadIds { tid, cpu_clock }
}

pub fn clock_now(clock: libc::clockid_t) -> Duration {
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

fn this_thread_cpu() -> Duration {
    clock_now(libc::CLOCK_THREAD_CPUTIME_ID)
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
pub fn allowed_cpus() -> Vec<usize> {
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

/// The allowed CPUs, the least busy over the last 200 ms first: a CPU that other processes
/// keep busy would starve a pinned client or server.
fn cpus_by_idleness() -> Vec<usize> {
    let before = cpu_jiffies();
    std::thread::sleep(Duration::from_millis(200));
    let after = cpu_jiffies();
    let busy_share = |cpu: usize| {
        let b = before.iter().find(|c| c.cpu == cpu)?;
        let a = after.iter().find(|c| c.cpu == cpu)?;
        let total = a.total.saturating_sub(b.total).max(1);
        Some(a.busy.saturating_sub(b.busy) as f64 / total as f64)
    };
    let mut cpus = allowed_cpus();
    let share = |cpu| busy_share(cpu).unwrap_or(1.0);
    // Ties go to the higher CPU, away from CPU 0 and its interrupts.
    cpus.sort_by(|&x, &y| share(x).total_cmp(&share(y)).then(y.cmp(&x)));
    cpus
}

// ---------------------------------------------------------------------------------------
// Machine load
// ---------------------------------------------------------------------------------------

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

/// (user, system) clock ticks from a `stat` file of proc(5): `/proc/self/stat` for the
/// whole process, `/proc/self/task/<tid>/stat` for one of its threads.
pub fn user_sys_ticks(path: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The command name may contain spaces: the fields that matter follow its closing ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // After ')' comes field 3 (state); utime and stime are fields 14 and 15 (see proc(5)).
    let get = |i: usize| fields.get(i - 3).and_then(|v| v.parse().ok()).unwrap_or(0);
    (get(14), get(15))
}

/// (user, system) CPU time of thread `tid` of this process, in clock ticks.
pub fn thread_user_sys_ticks(tid: libc::pid_t) -> (u64, u64) {
    user_sys_ticks(&format!("/proc/self/task/{tid}/stat"))
}

/// User plus system ticks of this whole process (all its threads).
fn process_ticks() -> u64 {
    let (user, sys) = user_sys_ticks("/proc/self/stat");
    user + sys
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
            process: process_ticks(),
        }
    }

    /// CPUs (on average over the window) busy with anything but this process: other
    /// processes, and interrupt work the kernel charged to no one.
    fn cpus_since(&self) -> f64 {
        let (busy, total, cpus) = machine_jiffies();
        let ours = process_ticks().saturating_sub(self.process) as f64;
        let others = busy.saturating_sub(self.machine.0) as f64 - ours;
        let wall = total.saturating_sub(self.machine.1) as f64 / cpus.max(1) as f64;
        (others / wall.max(1.0)).max(0.0)
    }
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

/// Starts a reactor on a thread named `name` with `server` as its first entry. Returns the
/// thread and its ids.
pub fn start_reactor_thread(
    name: &str,
    server: impl Entry + Send,
) -> io::Result<(ReactorThread, ThreadIds)> {
    let (ids_tx, ids_rx) = mpsc::channel();
    let reactor = Reactor::start_thread(name, move |reactor| {
        let _ = ids_tx.send(current_thread_ids());
        reactor.spawn(server);
        Ok(())
    })?;
    let ids = ids_rx
        .recv()
        .map_err(|_| io::Error::other(format!("the {name} thread is gone")))?;
    Ok((reactor, ids))
}

/// A thread that accepts on `addr` until `stop` is set.
pub struct AcceptThread {
    pub addr: SocketAddr,
    pub stop: Arc<AtomicBool>,
    pub thread: JoinHandle<io::Result<()>>,
}

impl AcceptThread {
    pub fn stop(self) -> io::Result<()> {
        self.stop.store(true, Ordering::Release);
        // A blocked accept only looks at the flag when a connection wakes it.
        let _ = StdTcpStream::connect(self.addr);
        let name = self.thread.thread().name().unwrap_or("accept").to_owned();
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other(format!("the {name} thread panicked"))))
    }
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

/// Accepts connections and hands each to `serve` (which spawns its task), until `stop` is
/// set (and a connection wakes the loop).
pub async fn tokio_accept_loop(
    listener: tokio::net::TcpListener,
    stop: Arc<AtomicBool>,
    mut serve: impl FnMut(tokio::net::TcpStream),
) -> io::Result<()> {
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
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        // getty-rs sets TCP_NODELAY on every session by default; so does this.
        let _ = stream.set_nodelay(true);
        serve(stream);
    }
}

/// Binds a [`tokio_listener`] (on a runtime) and reports its address, or why it could not
/// bind, to `report`: the thread that starts the server waits for that.
pub fn bind_tokio_listener(
    report: impl FnOnce(io::Result<SocketAddr>),
) -> Option<tokio::net::TcpListener> {
    match tokio_listener() {
        Ok(listener) => {
            report(listener.local_addr());
            Some(listener)
        }
        Err(e) => {
            report(Err(e));
            None
        }
    }
}

/// A tokio current-thread runtime on a thread named `name`, accepting with
/// [`tokio_accept_loop`]. Returns that thread and its ids.
pub fn start_tokio_thread(
    name: &str,
    serve: impl FnMut(tokio::net::TcpStream) + Send + 'static,
) -> io::Result<(AcceptThread, ThreadIds)> {
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<(SocketAddr, ThreadIds)>>();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let run = move || -> io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let report = |addr: io::Result<SocketAddr>| {
                let _ = ready_tx.send(addr.map(|a| (a, current_thread_ids())));
            };
            let Some(listener) = bind_tokio_listener(report) else {
                return Ok(());
            };
            tokio_accept_loop(listener, stop_flag, serve).await
        })
    };
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(run)?;
    let (addr, ids) = ready_rx
        .recv()
        .map_err(|_| io::Error::other(format!("the {name} thread is gone")))??;
    Ok((AcceptThread { addr, stop, thread }, ids))
}

// ---------------------------------------------------------------------------------------
// Load generator
// ---------------------------------------------------------------------------------------

/// `size` random bytes, the same in every run.
pub fn random_payload(size: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(PAYLOAD_SEED);
    (0..size).map(|_| rng.u8(..)).collect()
}

/// How a bench frames its message and recognises the echo.
pub trait Framing {
    /// One message as the client writes it, the same bytes every time.
    fn message(&self) -> &[u8];

    /// The length of the echo at the start of `buf` once all of it has arrived (`None`
    /// before); an error if what is there is not an echo of [`Framing::message`].
    fn whole_echo(&self, buf: &[u8]) -> io::Result<Option<usize>>;
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
    /// Takes over a connected socket and whatever arrived on it during a handshake.
    fn open(
        (stream, early): (StdTcpStream, Vec<u8>),
        registry: &mio::Registry,
        token: Token,
        buf_len: usize,
    ) -> io::Result<ClientConn> {
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

    fn queue(&mut self, message: &[u8], at: Instant) {
        self.wbuf.extend_from_slice(message);
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
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed a connection",
                    ))
                }
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
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server sent more than was asked for",
            ));
        }
        Ok(())
    }

    /// Takes every whole echo that arrived, records its round trip (when a histogram is
    /// given) and sends a new message for each. Returns how many echoes it took.
    fn on_readable(
        &mut self,
        framing: &impl Framing,
        mut latency: Option<&mut Histogram<u64>>,
    ) -> io::Result<u64> {
        self.fill()?;
        let now = Instant::now();
        let mut echoes = 0;
        while let Some(len) = framing.whole_echo(&self.rbuf[self.rlo..self.rhi])? {
            self.rlo += len;
            let sent = self.sent.pop_front().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "an echo nobody asked for")
            })?;
            if let Some(h) = latency.as_deref_mut() {
                h.saturating_record((now - sent).as_nanos().max(1) as u64);
            }
            echoes += 1;
            self.queue(framing.message(), now);
        }
        if self.rlo == self.rhi {
            (self.rlo, self.rhi) = (0, 0);
        }
        Ok(echoes)
    }
}

/// What one measured window saw. `R` is what the bench reads from its server (CPU clocks,
/// ticks) at the window's start and end.
pub struct Window<R> {
    /// Echoes received in the window.
    pub messages: u64,
    pub elapsed: Duration,
    /// CPU time of the load generator's thread.
    pub client_cpu: Duration,
    /// CPUs kept busy by anything but this process, on average over the window.
    pub other_cpus: f64,
    /// The round trips of those echoes, in ns.
    pub latency: Histogram<u64>,
    pub server_start: R,
    pub server_end: R,
}

/// The readings taken when the measured window opens.
struct WindowStart<R> {
    at: Instant,
    client_cpu: Duration,
    other: OtherLoad,
    server: R,
}

impl<R> WindowStart<R> {
    fn open(at: Instant, read_server: impl Fn() -> R) -> WindowStart<R> {
        WindowStart {
            at,
            server: read_server(),
            client_cpu: this_thread_cpu(),
            other: OtherLoad::start(),
        }
    }

    fn close(
        self,
        now: Instant,
        messages: u64,
        latency: Histogram<u64>,
        read_server: impl Fn() -> R,
    ) -> Window<R> {
        Window {
            messages,
            elapsed: now - self.at,
            server_end: read_server(),
            client_cpu: this_thread_cpu().saturating_sub(self.client_cpu),
            other_cpus: self.other.cpus_since(),
            latency,
            server_start: self.server,
        }
    }
}

/// One mio thread's connections to a server, each keeping the scenario's messages in
/// flight.
pub struct LoadGenerator<F> {
    poll: Poll,
    conns: Vec<ClientConn>,
    in_flight: usize,
    framing: F,
}

impl<F: Framing> LoadGenerator<F> {
    /// Opens the scenario's connections, each with `connect` (which returns a connected
    /// socket and whatever arrived on it during a handshake).
    pub fn connect(
        scenario: &Scenario,
        framing: F,
        mut connect: impl FnMut() -> io::Result<(StdTcpStream, Vec<u8>)>,
    ) -> io::Result<LoadGenerator<F>> {
        let poll = Poll::new()?;
        let buf_len = (2 * scenario.in_flight * framing.message().len()).max(64 * 1024);
        let conns = (0..scenario.conns)
            .map(|i| ClientConn::open(connect()?, poll.registry(), Token(i), buf_len))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(LoadGenerator {
            poll,
            conns,
            in_flight: scenario.in_flight,
            framing,
        })
    }

    /// Warms up for `warmup` (not measured), then measures for `measure`, reading the server
    /// with `read_server` at the start and the end of that window. Ends after warm-up +
    /// measure, whatever the server does.
    pub fn run<R>(
        mut self,
        warmup: Duration,
        measure: Duration,
        read_server: impl Fn() -> R,
    ) -> io::Result<Window<R>> {
        let mut events = Events::with_capacity(1024);
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
            .map_err(|e| io::Error::other(format!("histogram: {e}")))?;
        let start = Instant::now();
        for conn in &mut self.conns {
            for _ in 0..self.in_flight {
                conn.queue(self.framing.message(), start);
            }
            conn.flush()?;
        }
        let warm_end = start + warmup;
        let mut window: Option<WindowStart<R>> = None;
        let mut messages = 0;
        loop {
            let now = Instant::now();
            match window {
                None if now >= warm_end => window = Some(WindowStart::open(now, &read_server)),
                Some(w) if now >= w.at + measure => {
                    return Ok(w.close(now, messages, latency, &read_server))
                }
                _ => {}
            }
            // A short timeout, so that the clock is checked even if the server stalls.
            match self.poll.poll(&mut events, Some(Duration::from_millis(5))) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => result?,
            }
            let measuring = window.is_some();
            for event in events.iter() {
                let conn = &mut self.conns[event.token().0];
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    let hist = measuring.then_some(&mut latency);
                    let echoes = conn.on_readable(&self.framing, hist)?;
                    if measuring {
                        messages += echoes;
                    }
                }
                conn.flush()?;
            }
        }
    }
}

/// Where the load generator and the server threads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Wherever the scheduler puts them.
    Free,
    /// All on the CPU that was the least busy: client and server take turns on it, as
    /// they do anyway with one message in flight (a cross-CPU wake-up per message would
    /// cost more than the work, and vary with where the scheduler puts them).
    Shared,
    /// The server threads on the least busy CPU, the load generator on the next: both
    /// stay busy, each on a CPU of its own, and no migration between rounds makes one
    /// server's round cheaper than another's. On a machine with one CPU, as `Shared`.
    /// (The WebSocket bench's; the TCP bench leaves its busy scenarios free.)
    #[allow(dead_code)]
    Spread,
}

impl Placement {
    /// The placement's name in a scenario's title ("" when free).
    #[allow(dead_code)]
    pub fn label(self) -> &'static str {
        match self {
            Placement::Free => "",
            Placement::Shared => ", pinned",
            Placement::Spread => ", spread",
        }
    }
}

/// Runs `drive` on a load-generator thread named `name` and returns what it measured, with
/// that thread and the `server` threads placed as `placement` says.
pub fn on_load_thread<M: Send + 'static>(
    name: &str,
    placement: Placement,
    server: &[ThreadIds],
    drive: impl FnOnce() -> io::Result<M> + Send + 'static,
) -> io::Result<M> {
    let cpus = match placement {
        Placement::Free => None,
        _ => Some(cpus_by_idleness()),
    };
    // (server CPU, client CPU)
    let pinned = cpus.map(|cpus| {
        let server_cpu = cpus.first().copied().unwrap_or(0);
        let client_cpu = match (placement, cpus.get(1)) {
            (Placement::Spread, Some(&other)) => other,
            _ => server_cpu,
        };
        (server_cpu, client_cpu)
    });
    let server_tids: Vec<libc::pid_t> = server.iter().map(|t| t.tid).collect();
    let client = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if let Some((server_cpu, client_cpu)) = pinned {
                pin_thread(0, client_cpu)?;
                for tid in server_tids {
                    pin_thread(tid, server_cpu)?;
                }
            }
            drive()
        })?;
    client
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the load generator panicked")))
}

// ---------------------------------------------------------------------------------------
// Rounds and reporting
// ---------------------------------------------------------------------------------------

/// Runs each of `servers` once per round, a different server going first each round (with
/// two, they alternate), and returns the measurements of each server that completed a run,
/// in `servers` order. A failed run goes to `failed`.
pub fn run_rounds<S: Copy, M>(
    servers: &[S],
    rounds: usize,
    mut run: impl FnMut(S) -> io::Result<M>,
    mut failed: impl FnMut(S, io::Error),
) -> Vec<(S, Vec<M>)> {
    let mut measured: Vec<Vec<M>> = servers.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for turn in 0..servers.len() {
            let index = (round + turn) % servers.len();
            match run(servers[index]) {
                Ok(m) => measured[index].push(m),
                Err(e) => failed(servers[index], e),
            }
        }
    }
    servers
        .iter()
        .copied()
        .zip(measured)
        .filter(|(_, runs)| !runs.is_empty())
        .collect()
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}
