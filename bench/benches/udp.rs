//! The UDP bench: getty's connected-vs-unconnected experiment, reproduced and extended.
//!
//! ```text
//! cargo bench -p getty-bench --bench udp                      # the full run (about 3 minutes)
//! GETTY_BENCH_QUICK=1 cargo bench -p getty-bench --bench udp  # a smoke run (seconds; also without --bench)
//! GETTY_BENCH_SECS=2 GETTY_BENCH_RUNS=5 cargo bench -p getty-bench --bench udp
//! GETTY_BENCH_PART=plain cargo bench -p getty-bench --bench udp   # parts 1 and 2 only (or `echo`: part 3)
//! GETTY_BENCH_PART=echo GETTY_BENCH_CLIENT=syscall GETTY_BENCH_SERVER="batch 32" \
//!     GETTY_BENCH_IN_FLIGHT=1 cargo bench -p getty-bench --bench udp   # part 3, only the loads named
//! ```
//!
//! (The client and server filters match part of the client's and the server's label in the
//! table; a ratio whose reference server was filtered out shows "–". `GETTY_BENCH_IN_FLIGHT`
//! lists the windows, comma-separated. They let a profiler watch one server under one
//! load.)
//!
//! Instructions per datagram of one server (callgrind counts repeatably on a noisy
//! machine): run one server under the one-datagram-per-syscall client (the only client
//! with no getty-rs code of its own), once, with `GETTY_BENCH_TOTALS=1`, which prints the
//! messages the server handled since it started, warm-up included:
//!
//! ```text
//! GETTY_BENCH_PART=echo GETTY_BENCH_CLIENT=syscall GETTY_BENCH_SERVER="batch 32" \
//!     GETTY_BENCH_IN_FLIGHT=32 GETTY_BENCH_RUNS=1 GETTY_BENCH_TOTALS=1 \
//!     valgrind --tool=callgrind --separate-threads=yes <target>/release/deps/udp-<hash> --bench
//! ```
//!
//! and divide the server thread's total (`totals:` in its `callgrind.out.<pid>-<thread>`,
//! the file whose functions include `DatagramEntry`) by that count.
//!
//! 1. **Plain sockets, one datagram per syscall.** 100,000 datagrams (64 B, and 1,400 B)
//!    from a client socket to a server socket on loopback: unconnected `send_to` vs
//!    connected `send`, with no socket timeout, with one set once (`SO_SNDTIMEO`), and with
//!    one set before every send (as getty sets a write deadline before every write). The
//!    wall time is the sender's; a receiver thread drains the server socket (with
//!    `recvmmsg`) and counts what arrived. The ratio is connected time / unconnected time:
//!    getty's development log measured 11/13 ≈ 0.85 (connected took 2/13 less time).
//! 2. **The same with `sendmmsg`**, 32 datagrams per call.
//! 3. **Echo servers side by side**: round trips per second of 64 B datagrams, 1 and 32 in
//!    flight, under three load generators: a plain connected socket that sends and receives
//!    **one datagram per syscall** (so datagrams reach the server one at a time), and two
//!    getty-rs clients, which send the echoes of one wake-up with one `sendmmsg` (a run to
//!    one destination as one segmented message, `UDP_SEGMENT`): a connected `UdpClient`
//!    and an unconnected client `UdpEndpoint`. Five servers echo each load: a blocking
//!    `recv_from`/`send_to` loop, a blocking `recvmmsg`/`sendmmsg` loop (32 per call,
//!    `MSG_WAITFORONE`), the same loop with its replies merged by sender (`UDP_SEGMENT`,
//!    as getty-rs does: the reference for what the kernel feature alone gives), and a
//!    getty-rs `UdpEndpoint` with batching off (`batch_size(1)`) and on (32, the default;
//!    its replies are segmented). Each server measures its own thread's CPU time
//!    (`CLOCK_THREAD_CPUTIME_ID`), so the table gives messages per server CPU-second (on a
//!    2-core machine the client saturates a core first, so rates alone cannot rank
//!    servers), and that efficiency over the plain loop's and over the plain mmsg loop's,
//!    each ratio taken within a round. "msgs per wakeup" is messages per poll event for
//!    getty-rs, per receive call for the plain servers.
//!
//! Every figure is the median of several runs (`GETTY_BENCH_RUNS`, default 5); the variants
//! compared in one table run in turn within each round, so that drift in the machine's
//! speed touches them alike, and ratios are taken within a round. Part 3 measures
//! `GETTY_BENCH_SECS` (default 0.6) per run after a warm-up. Quick mode
//! (`GETTY_BENCH_QUICK=1`, or a start without `--bench`) runs once, 0.2 s, 20,000
//! datagrams, and only the loads of 32 in flight. Servers are pinned to one CPU
//! and clients to another. Socket timeouts appear here only as the subject of part 1; getty-rs itself
//! never sets one.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use getty::codec::{Bytes, RawCodec};
use getty::reactor::ReactorThread;
use getty::udp::{DatagramHandler, DatagramSession, UdpClient, UdpEndpoint, UdpOptions};
use getty::{Metrics, Reactor};

// ---------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------

struct Settings {
    datagrams: usize,
    plain_runs: usize,
    echo_runs: usize,
    window: Duration,
    warmup: Duration,
    /// Part 3's loads: which client, and how many datagrams it keeps in flight.
    echo_loads: Vec<(ClientKind, usize)>,
    /// Part 3 runs only the servers whose label contains this (`GETTY_BENCH_SERVER`).
    server_filter: Option<&'static str>,
}

impl Settings {
    fn from_env() -> Settings {
        // Started without `--bench` (as `cargo test --benches` does): a smoke run.
        let quick = std::env::var("GETTY_BENCH_QUICK").is_ok_and(|v| v != "0")
            || !std::env::args().any(|a| a == "--bench");
        let secs: f64 = env_or("GETTY_BENCH_SECS", if quick { 0.2 } else { 0.6 });
        let runs: Option<usize> = std::env::var("GETTY_BENCH_RUNS")
            .ok()
            .and_then(|v| v.parse().ok());
        let window = Duration::from_secs_f64(secs.max(0.05));
        let clients = [
            ClientKind::OnePerSyscall,
            ClientKind::GettyConnected,
            ClientKind::GettyUnconnected,
        ];
        let in_flight: Vec<usize> = match std::env::var("GETTY_BENCH_IN_FLIGHT") {
            Ok(list) => list
                .split(',')
                .filter_map(|w| w.trim().parse().ok())
                .collect(),
            Err(_) if quick => vec![32],
            Err(_) => vec![1, 32],
        };
        let client_filter = std::env::var("GETTY_BENCH_CLIENT").ok();
        let echo_loads = clients
            .iter()
            .filter(|c| {
                client_filter
                    .as_ref()
                    .is_none_or(|f| c.label().contains(f.as_str()))
            })
            .flat_map(|&c| in_flight.iter().map(move |&w| (c, w)))
            .collect();
        Settings {
            datagrams: if quick { 20_000 } else { 100_000 },
            plain_runs: runs.unwrap_or(if quick { 1 } else { 5 }).max(1),
            echo_runs: runs.unwrap_or(if quick { 1 } else { 5 }).max(1),
            window,
            warmup: (window / 4).max(Duration::from_millis(100)),
            echo_loads,
            server_filter: std::env::var("GETTY_BENCH_SERVER")
                .ok()
                .map(|f| &*Box::leak(f.into_boxed_str())),
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; the kernel fills it in.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Which side of the bench a thread belongs to: servers get the first CPU, clients the
/// second. Pinning keeps the two sides from sharing a core in some runs and not in others
/// (which otherwise makes one-in-flight round trips bimodal).
#[derive(Clone, Copy)]
enum Side {
    Server,
    Client,
}

/// Pins the calling thread to its side's CPU (when the machine has two or more).
fn pin(side: Side) {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        return;
    }
    let cpu = match side {
        Side::Server => cpus[0],
        Side::Client => cpus[1],
    };
    // SAFETY: a zeroed cpu_set_t is valid; `cpu` is below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn big_buffers(socket: &UdpSocket) {
    let fd = socket.as_raw_fd();
    let size: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: a valid socket and a c_int option value.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// mmsg helpers for the plain-socket sides (the library has its own, inside)
// ---------------------------------------------------------------------------------------

const MMSG: usize = 32;

/// Headers, iovecs and addresses for `MMSG` datagrams over `bufs`, reused call after call.
struct MmsgArrays {
    bufs: Vec<Vec<u8>>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    hdrs: Vec<libc::mmsghdr>,
}

impl MmsgArrays {
    fn new(buf_size: usize) -> Box<MmsgArrays> {
        // SAFETY: all-zero is a valid sockaddr_storage and mmsghdr.
        let mut a = Box::new(MmsgArrays {
            bufs: vec![vec![0u8; buf_size]; MMSG],
            iovs: Vec::with_capacity(MMSG),
            names: vec![unsafe { std::mem::zeroed() }; MMSG],
            hdrs: vec![unsafe { std::mem::zeroed() }; MMSG],
        });
        for i in 0..MMSG {
            let iov = libc::iovec {
                iov_base: a.bufs[i].as_mut_ptr().cast(),
                iov_len: buf_size,
            };
            a.iovs.push(iov);
        }
        for i in 0..MMSG {
            a.hdrs[i].msg_hdr.msg_iov = &mut a.iovs[i];
            a.hdrs[i].msg_hdr.msg_iovlen = 1;
            a.hdrs[i].msg_hdr.msg_name = (&mut a.names[i] as *mut libc::sockaddr_storage).cast();
        }
        a.reset(buf_size);
        a
    }

    /// Ready for a receive: full-size buffers, room for any address.
    fn reset(&mut self, buf_size: usize) {
        for i in 0..MMSG {
            self.iovs[i].iov_len = buf_size;
            self.hdrs[i].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            self.hdrs[i].msg_len = 0;
        }
    }

    /// Blocking `recvmmsg` that returns as soon as one datagram is in.
    fn recv(&mut self, fd: libc::c_int) -> io::Result<usize> {
        // SAFETY: the headers point at live buffers, iovecs and address storage.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                MMSG as _,
                libc::MSG_WAITFORONE as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sends the first `n` headers (all of them, looping on partial sends).
    fn send(&mut self, fd: libc::c_int, n: usize) -> io::Result<()> {
        let mut sent = 0;
        while sent < n {
            // SAFETY: as above; the kernel only reads.
            let r =
                unsafe { libc::sendmmsg(fd, self.hdrs[sent..].as_mut_ptr(), (n - sent) as _, 0) };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            sent += r as usize;
        }
        Ok(())
    }
}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let SocketAddr::V4(v4) = addr else {
        panic!("the bench runs on IPv4 loopback")
    };
    // SAFETY: all-zero is valid; sockaddr_in fits in sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let sin =
        unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = v4.port().to_be();
    sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
    (
        storage,
        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
    )
}

// ---------------------------------------------------------------------------------------
// Parts 1 and 2: plain sockets, client → server
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Api {
    Send,
    Sendmmsg,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Timeout {
    None,
    Once,
    PerSend,
}

impl Timeout {
    fn label(self) -> &'static str {
        match self {
            Timeout::None => "none",
            Timeout::Once => "set once",
            Timeout::PerSend => "per send",
        }
    }
}

/// Drains `socket` until `stop` is set and the socket stays quiet; returns the count.
fn drain(socket: UdpSocket, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        pin(Side::Server);
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let fd = socket.as_raw_fd();
        let mut arrays = MmsgArrays::new(2048);
        let mut count = 0u64;
        loop {
            arrays.reset(2048);
            match arrays.recv(fd) {
                Ok(n) => count += n as u64,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) {
                        return count;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("receiver: {e}"),
            }
        }
    })
}

/// Sends `n` datagrams of `size` bytes; returns the sender's wall time and how many the
/// server socket received.
fn plain_send(
    n: usize,
    size: usize,
    connected: bool,
    api: Api,
    timeout: Timeout,
) -> (Duration, u64) {
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind server");
    big_buffers(&server);
    let to = server.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = drain(server, stop.clone());

    let client = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    big_buffers(&client);
    if connected {
        client.connect(to).expect("connect");
    }
    let deadline = Some(Duration::from_secs(1));
    if timeout == Timeout::Once {
        client.set_write_timeout(deadline).unwrap();
    }
    let payload = vec![0x5au8; size];
    let fd = client.as_raw_fd();
    let (name, namelen) = sockaddr_of(to);
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: size,
    };
    // SAFETY: all-zero is a valid mmsghdr.
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; MMSG];
    for h in &mut hdrs {
        h.msg_hdr.msg_iov = &mut iov;
        h.msg_hdr.msg_iovlen = 1;
        if !connected {
            h.msg_hdr.msg_name = (&name as *const libc::sockaddr_storage).cast_mut().cast();
            h.msg_hdr.msg_namelen = namelen;
        }
    }

    let started = Instant::now();
    let mut sent = 0;
    while sent < n {
        if timeout == Timeout::PerSend {
            client.set_write_timeout(deadline).unwrap();
        }
        match api {
            Api::Send => {
                if connected {
                    client.send(&payload).expect("send");
                } else {
                    client.send_to(&payload, to).expect("send_to");
                }
                sent += 1;
            }
            Api::Sendmmsg => {
                let k = (n - sent).min(MMSG);
                // SAFETY: the headers point at the payload (and the address), alive here.
                let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), k as _, 0) };
                assert!(r > 0, "sendmmsg: {}", io::Error::last_os_error());
                sent += r as usize;
            }
        }
    }
    let wall = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let received = receiver.join().expect("receiver");
    (wall, received)
}

fn part_plain(settings: &Settings) {
    let n = settings.datagrams;
    println!(
        "\n## 1-2. Plain sockets: {n} datagrams client → server on loopback (median of {} interleaved runs)\n",
        settings.plain_runs
    );
    println!("| size | api | socket timeout | unconnected send_to: ms | datagrams/s | connected send: ms | datagrams/s | connected/unconnected time | received |");
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|");
    let timeouts = [Timeout::None, Timeout::Once, Timeout::PerSend];
    for api in [Api::Send, Api::Sendmmsg] {
        for size in [64, 1400] {
            // walls[timeout][connected]; ratios[timeout]: connected/unconnected per round.
            let mut walls = vec![[Vec::new(), Vec::new()]; timeouts.len()];
            let mut ratios = vec![Vec::new(); timeouts.len()];
            let mut least_received = vec![u64::MAX; timeouts.len()];
            // Every round runs every variant once, so that drift in the machine's speed
            // affects them all alike.
            for _ in 0..settings.plain_runs {
                for (t, &timeout) in timeouts.iter().enumerate() {
                    let mut pair = [0.0; 2];
                    for connected in [false, true] {
                        let (wall, received) = plain_send(n, size, connected, api, timeout);
                        pair[usize::from(connected)] = wall.as_secs_f64();
                        walls[t][usize::from(connected)].push(wall.as_secs_f64());
                        least_received[t] = least_received[t].min(received);
                    }
                    ratios[t].push(pair[1] / pair[0]);
                }
            }
            for (t, timeout) in timeouts.iter().enumerate() {
                let unconnected = median(walls[t][0].clone());
                let connected = median(walls[t][1].clone());
                let api_label = match api {
                    Api::Send => "send/send_to",
                    Api::Sendmmsg => "sendmmsg ×32",
                };
                println!(
                    "| {size} B | {api_label} | {} | {:.1} | {:.0} | {:.1} | {:.0} | {:.3} | ≥ {:.1} % |",
                    timeout.label(),
                    unconnected * 1e3,
                    n as f64 / unconnected,
                    connected * 1e3,
                    n as f64 / connected,
                    median(ratios[t].clone()),
                    100.0 * least_received[t] as f64 / n as f64,
                );
            }
        }
    }
    println!("\n(getty's log: connected took 2/13 less time than unconnected, a ratio of 0.846.)");
}

// ---------------------------------------------------------------------------------------
// Part 3: echo servers under the same getty-rs client load
// ---------------------------------------------------------------------------------------

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// What a server measured about itself over the window.
#[derive(Debug, Clone, Copy)]
struct ServerSample {
    messages: u64,
    /// Messages since the server started, warm-up included (to divide a callgrind count of
    /// the server thread by).
    total: u64,
    /// Receive calls (plain servers) that brought those messages in.
    calls: u64,
    cpu: Duration,
    wall: Duration,
}

/// Shared between the bench driver and a server thread: the phase the driver sets, and the
/// sample the server records at the phase changes it sees.
#[derive(Default)]
struct Meter {
    phase: AtomicU8,
    sample: Mutex<Option<ServerSample>>,
}

/// A server thread's view of its meter: checked once per message (or batch).
struct Gauge {
    meter: Arc<Meter>,
    seen: u8,
    messages: u64,
    calls: u64,
    start: Option<(u64, u64, Duration, Instant)>,
}

impl Gauge {
    fn new(meter: Arc<Meter>) -> Gauge {
        Gauge {
            meter,
            seen: WARMUP,
            messages: 0,
            calls: 0,
            start: None,
        }
    }

    /// Counts `n` messages; returns true once the driver said stop.
    fn tick(&mut self, n: u64) -> bool {
        self.messages += n;
        self.calls += 1;
        let phase = self.meter.phase.load(Ordering::Relaxed);
        if phase == self.seen {
            return false;
        }
        self.seen = phase;
        if phase >= MEASURE && self.start.is_none() {
            self.start = Some((self.messages, self.calls, thread_cpu(), Instant::now()));
        }
        if phase == STOP {
            let (m0, n0, c0, w0) = self.start.expect("started");
            *self.meter.sample.lock().unwrap() = Some(ServerSample {
                messages: self.messages - m0,
                total: self.messages,
                calls: self.calls - n0,
                cpu: thread_cpu() - c0,
                wall: w0.elapsed(),
            });
            return true;
        }
        false
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ServerKind {
    Plain,
    PlainMmsg,
    /// The plain mmsg loop, its replies merged by destination (`UDP_SEGMENT`).
    PlainMmsgSegmented,
    Getty {
        batch: usize,
    },
}

impl ServerKind {
    fn label(self) -> String {
        match self {
            ServerKind::Plain => "plain recv_from/send_to".into(),
            ServerKind::PlainMmsg => "plain recvmmsg/sendmmsg ×32".into(),
            ServerKind::PlainMmsgSegmented => "plain recvmmsg/sendmmsg ×32 + UDP_SEGMENT".into(),
            ServerKind::Getty { batch: 1 } => "getty-rs UdpEndpoint, batch 1".into(),
            ServerKind::Getty { batch } => format!("getty-rs UdpEndpoint, batch {batch} (mmsg)"),
        }
    }
}

/// A running echo server of some kind.
enum Server {
    Plain(JoinHandle<()>),
    Getty(ReactorThread),
}

fn start_server(kind: ServerKind, meter: Arc<Meter>) -> (Server, SocketAddr) {
    match kind {
        ServerKind::Plain | ServerKind::PlainMmsg | ServerKind::PlainMmsgSegmented => {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            big_buffers(&socket);
            let addr = socket.local_addr().unwrap();
            let handle = std::thread::Builder::new()
                .name("plain-echo".into())
                .spawn(move || {
                    pin(Side::Server);
                    let gauge = Gauge::new(meter);
                    match kind {
                        ServerKind::Plain => plain_echo(socket, gauge),
                        _ => plain_mmsg_echo(socket, gauge, kind != ServerKind::PlainMmsg),
                    }
                })
                .expect("spawn");
            (Server::Plain(handle), addr)
        }
        ServerKind::Getty { batch } => {
            let (tx, rx) = std::sync::mpsc::channel();
            let thread = Reactor::start_thread("getty-echo", move |reactor| {
                pin(Side::Server);
                let endpoint = UdpEndpoint::builder()
                    .udp_options(
                        UdpOptions::default()
                            .batch_size(batch)
                            .recv_buffer_size(Some(4 << 20))
                            .send_buffer_size(Some(4 << 20)),
                    )
                    .bind("127.0.0.1:0", move |_| {
                        Ok((
                            RawCodec,
                            GettyEcho {
                                gauge: Gauge::new(meter),
                            },
                        ))
                    })?;
                let _ = tx.send(endpoint.local_addr());
                reactor.spawn(endpoint);
                Ok(())
            })
            .expect("start the getty server");
            let addr = rx.recv().expect("the server's address");
            (Server::Getty(thread), addr)
        }
    }
}

fn plain_echo(socket: UdpSocket, mut gauge: Gauge) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("plain echo: {e}"),
        };
        if gauge.tick(1) {
            return;
        }
        let _ = socket.send_to(&buf[..n], from);
    }
}

fn plain_mmsg_echo(socket: UdpSocket, mut gauge: Gauge, segmented: bool) {
    const SIZE: usize = 65_536;
    let fd = socket.as_raw_fd();
    let mut arrays = MmsgArrays::new(SIZE);
    let mut merged = Merged::new();
    loop {
        arrays.reset(SIZE);
        let n = match arrays.recv(fd) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("plain mmsg echo: {e}"),
        };
        if gauge.tick(n as u64) {
            return;
        }
        for i in 0..n {
            arrays.iovs[i].iov_len = arrays.hdrs[i].msg_len as usize;
        }
        let _ = if segmented {
            merged.send(fd, &mut arrays, n)
        } else {
            arrays.send(fd, n)
        };
    }
}

/// `UDP_SEGMENT` (`SOL_UDP`): the segment size of a merged send.
const UDP_SEGMENT: libc::c_int = 103;

/// Send headers for runs of received datagrams to one peer, each run one message that
/// the kernel cuts back into its datagrams (`UDP_SEGMENT`).
struct Merged {
    hdrs: Vec<libc::mmsghdr>,
    /// One control message per run: `CMSG_SPACE(2)` bytes, 8-aligned.
    cmsgs: Vec<[u64; 3]>,
}

impl Merged {
    fn new() -> Merged {
        // SAFETY: all-zero is a valid mmsghdr.
        Merged {
            hdrs: vec![unsafe { std::mem::zeroed() }; MMSG],
            cmsgs: vec![[0; 3]; MMSG],
        }
    }

    /// Sends the first `n` received datagrams back to their senders, a run of equal sizes
    /// (the last may be shorter) to one sender as one message.
    fn send(&mut self, fd: libc::c_int, a: &mut MmsgArrays, n: usize) -> io::Result<()> {
        let same_peer = |a: &MmsgArrays, i: usize, j: usize| {
            let len = a.hdrs[i].msg_hdr.msg_namelen as usize;
            let bytes = |k: usize| {
                let name = (&a.names[k] as *const libc::sockaddr_storage).cast::<u8>();
                // SAFETY: the kernel wrote `msg_namelen` bytes of address there.
                unsafe { std::slice::from_raw_parts(name, len) }
            };
            a.hdrs[j].msg_hdr.msg_namelen as usize == len && bytes(i) == bytes(j)
        };
        let mut runs = 0;
        let mut at = 0;
        while at < n {
            let size = a.iovs[at].iov_len;
            // Segments that fit any IPv6 path; none empty.
            let mergeable = size > 0 && size <= 1_232;
            let mut end = at + 1;
            while end < n && size > 0 && a.iovs[end].iov_len == size && same_peer(a, at, end) {
                end += 1;
            }
            if end < n && mergeable && a.iovs[end].iov_len < size && same_peer(a, at, end) {
                end += 1; // a shorter last segment
            }
            let hdr = &mut self.hdrs[runs];
            hdr.msg_hdr = a.hdrs[at].msg_hdr;
            hdr.msg_hdr.msg_iov = &mut a.iovs[at];
            hdr.msg_hdr.msg_iovlen = end - at;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            if end - at > 1 {
                let cmsg = self.cmsgs[runs].as_mut_ptr().cast::<libc::cmsghdr>();
                // SAFETY: 24 bytes, 8-aligned: a cmsghdr and a u16 fit.
                unsafe {
                    (*cmsg).cmsg_len = libc::CMSG_LEN(2) as _;
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = UDP_SEGMENT;
                    libc::CMSG_DATA(cmsg)
                        .cast::<u16>()
                        .write_unaligned(size as u16);
                }
                hdr.msg_hdr.msg_control = cmsg.cast();
                hdr.msg_hdr.msg_controllen = std::mem::size_of::<[u64; 3]>() as _;
            }
            runs += 1;
            at = end;
        }
        let mut sent = 0;
        while sent < runs {
            // SAFETY: the headers point at live buffers, addresses and control messages.
            let r = unsafe {
                libc::sendmmsg(fd, self.hdrs[sent..].as_mut_ptr(), (runs - sent) as _, 0)
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            sent += r as usize;
        }
        Ok(())
    }
}

struct GettyEcho {
    gauge: Gauge,
}

impl DatagramHandler<RawCodec> for GettyEcho {
    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, peer: SocketAddr) {
        if self.gauge.tick(1) {
            return; // measured; the driver shuts the reactor down
        }
        let _ = s.write_to(peer, msg);
    }
}

/// The load: `window` datagrams of 64 B in flight, one more sent per echo.
struct LoadClient {
    to: Option<SocketAddr>,
    window: usize,
    payload: Bytes,
    echoes: Arc<AtomicU64>,
    resent: Arc<AtomicU64>,
    at_last_tick: u64,
}

impl LoadClient {
    fn send(&self, s: &mut DatagramSession<RawCodec>) {
        let _ = match self.to {
            Some(to) => s.write_to(to, self.payload.clone()),
            None => s.write(self.payload.clone()),
        };
    }
}

impl DatagramHandler<RawCodec> for LoadClient {
    fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> io::Result<()> {
        s.set_cron_period(Some(Duration::from_millis(50)));
        for _ in 0..self.window {
            self.send(s);
        }
        Ok(())
    }

    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, _: Bytes, _: SocketAddr) {
        self.echoes.fetch_add(1, Ordering::Relaxed);
        self.send(s);
    }

    /// No echo for a whole tick: the window was lost (or the server was busy); refill it.
    fn on_cron(&mut self, s: &mut DatagramSession<RawCodec>) {
        let now = self.echoes.load(Ordering::Relaxed);
        if now == self.at_last_tick {
            self.resent.fetch_add(self.window as u64, Ordering::Relaxed);
            for _ in 0..self.window {
                self.send(s);
            }
        }
        self.at_last_tick = now;
    }
}

/// The load generator of part 3.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ClientKind {
    /// A getty-rs `UdpClient` (one connected socket): the echoes it gets in one wake-up
    /// are answered with one `sendmmsg`.
    GettyConnected,
    /// A getty-rs client `UdpEndpoint` (unconnected), batching alike.
    GettyUnconnected,
    /// A plain connected socket on its own thread: one blocking `recv` per echo, one
    /// `send` per datagram, so datagrams reach the server one at a time.
    OnePerSyscall,
}

impl ClientKind {
    fn label(self) -> &'static str {
        match self {
            ClientKind::GettyConnected => "connected UdpClient (sends batched)",
            ClientKind::GettyUnconnected => "unconnected UdpEndpoint (sends batched)",
            ClientKind::OnePerSyscall => "connected socket, one datagram per syscall",
        }
    }
}

/// A running load generator.
enum Client {
    Getty(ReactorThread),
    Plain(JoinHandle<()>, Arc<AtomicBool>),
}

impl Client {
    fn stop(self) {
        match self {
            Client::Getty(thread) => {
                thread.handle().shutdown();
                thread.join().expect("client");
            }
            Client::Plain(handle, stop) => {
                stop.store(true, Ordering::Relaxed);
                handle.join().expect("client");
            }
        }
    }
}

fn start_client(
    to: SocketAddr,
    kind: ClientKind,
    window: usize,
    echoes: Arc<AtomicU64>,
    resent: Arc<AtomicU64>,
) -> Client {
    if kind == ClientKind::OnePerSyscall {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::Builder::new()
            .name("udp-load-plain".into())
            .spawn(move || one_per_syscall_load(to, window, &echoes, &resent, &stopped))
            .expect("spawn");
        return Client::Plain(handle, stop);
    }
    let connected = kind == ClientKind::GettyConnected;
    let thread = Reactor::start_thread("udp-load", move |reactor| {
        pin(Side::Client);
        let client = move |to: Option<SocketAddr>| LoadClient {
            to,
            window,
            payload: Bytes::from(vec![0x42u8; 64]),
            echoes: echoes.clone(),
            resent: resent.clone(),
            at_last_tick: 0,
        };
        let udp = UdpOptions::default()
            .recv_buffer_size(Some(4 << 20))
            .send_buffer_size(Some(4 << 20));
        if connected {
            let c = UdpClient::builder()
                .probe_wait(Duration::from_millis(20))
                .udp_options(udp)
                .build(to, move |_| Ok((RawCodec, client(None))))?;
            reactor.spawn(c);
        } else {
            let e = UdpEndpoint::builder()
                .udp_options(udp)
                .bind("127.0.0.1:0", move |_| Ok((RawCodec, client(Some(to)))))?;
            reactor.spawn(e);
        }
        Ok(())
    })
    .expect("start the client");
    Client::Getty(thread)
}

/// The one-datagram-per-syscall load: `window` datagrams of 64 B in flight on one connected
/// socket, one more sent per echo received; a 50 ms wait without any echo refills the
/// window (as `LoadClient::on_cron` does).
fn one_per_syscall_load(
    to: SocketAddr,
    window: usize,
    echoes: &AtomicU64,
    resent: &AtomicU64,
    stop: &AtomicBool,
) {
    pin(Side::Client);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    big_buffers(&socket);
    socket.connect(to).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    let payload = [0x42u8; 64];
    let mut buf = [0u8; 2048];
    // A refused send (the server gone at the end) is lost like any datagram: ignored.
    let send_window = || {
        for _ in 0..window {
            let _ = socket.send(&payload);
        }
    };
    send_window();
    while !stop.load(Ordering::Relaxed) {
        match socket.recv(&mut buf) {
            Ok(_) => {
                echoes.fetch_add(1, Ordering::Relaxed);
                let _ = socket.send(&payload);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // Silence for a whole wait: whatever was in flight is lost; start again.
                resent.fetch_add(window as u64, Ordering::Relaxed);
                send_window();
            }
            // ECONNREFUSED (an ICMP error from an earlier send) and EINTR: go on.
            Err(_) => {}
        }
    }
}

/// One run: round trips per second seen by the client, and the server's own sample.
fn echo_run(
    settings: &Settings,
    kind: ServerKind,
    client_kind: ClientKind,
    window: usize,
) -> (f64, ServerSample, u64, f64) {
    let meter = Arc::new(Meter::default());
    let (server, addr) = start_server(kind, meter.clone());
    let echoes = Arc::new(AtomicU64::new(0));
    let resent = Arc::new(AtomicU64::new(0));
    let client = start_client(addr, client_kind, window, echoes.clone(), resent.clone());

    // Poll wakeups of a getty-rs server, from its reactor's own counters.
    let reactor_counts = || match &server {
        Server::Getty(thread) => Metrics::of(thread.handle())
            .map(|m| (m.reactor.events, m.messages_in))
            .ok(),
        Server::Plain(_) => None,
    };
    std::thread::sleep(settings.warmup);
    meter.phase.store(MEASURE, Ordering::Relaxed);
    let (e0, t0) = (echoes.load(Ordering::Relaxed), Instant::now());
    let counts0 = reactor_counts();
    std::thread::sleep(settings.window);
    let (e1, t1) = (echoes.load(Ordering::Relaxed), Instant::now());
    let counts1 = reactor_counts();
    // Refills after the window (a plain server stops answering at the stop) do not count.
    let resent_in_window = resent.load(Ordering::Relaxed);
    meter.phase.store(STOP, Ordering::Relaxed);

    // The server notices the stop at its next datagram; the load keeps coming until then.
    let deadline = Instant::now() + Duration::from_secs(10);
    let sample = loop {
        if let Some(sample) = *meter.sample.lock().unwrap() {
            break sample;
        }
        assert!(Instant::now() < deadline, "the server never saw the stop");
        std::thread::sleep(Duration::from_millis(1));
    };
    client.stop();
    match server {
        Server::Plain(handle) => handle.join().expect("plain server"),
        Server::Getty(thread) => {
            thread.handle().shutdown();
            thread.join().expect("getty server");
        }
    }
    if std::env::var("GETTY_BENCH_TOTALS").is_ok_and(|v| v != "0") {
        eprintln!(
            "{} under {} x {window}: {} messages since the server started",
            kind.label(),
            client_kind.label(),
            sample.total
        );
    }
    let rate = (e1 - e0) as f64 / (t1 - t0).as_secs_f64();
    let per_wakeup = match (counts0, counts1) {
        (Some((ev0, m0)), Some((ev1, m1))) => (m1 - m0) as f64 / (ev1 - ev0).max(1) as f64,
        _ => sample.messages as f64 / sample.calls.max(1) as f64,
    };
    (rate, sample, resent_in_window, per_wakeup)
}

fn part_echo(settings: &Settings) {
    println!(
        "\n## 3. Echo of 64 B datagrams over loopback: round trips/s at the client, messages per server CPU-second (median of {} interleaved runs of {:.1} s)\n",
        settings.echo_runs,
        settings.window.as_secs_f64()
    );
    println!("| client | in flight | server | round trips/s | server CPU busy | msgs per wakeup | msgs per server CPU-s | vs plain | vs plain mmsg |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
    let kinds: Vec<ServerKind> = [
        ServerKind::Plain,
        ServerKind::PlainMmsg,
        ServerKind::PlainMmsgSegmented,
        ServerKind::Getty { batch: 1 },
        ServerKind::Getty { batch: 32 },
    ]
    .into_iter()
    .filter(|k| settings.server_filter.is_none_or(|f| k.label().contains(f)))
    .collect();
    let index_of = |kind| kinds.iter().position(|&k| k == kind);
    let (plain_at, mmsg_at) = (index_of(ServerKind::Plain), index_of(ServerKind::PlainMmsg));
    let ratio = |v: Vec<f64>| {
        if v.is_empty() {
            "–".to_string()
        } else {
            format!("{:.2}×", median(v))
        }
    };
    #[derive(Default, Clone)]
    struct Runs {
        rates: Vec<f64>,
        busy: Vec<f64>,
        per_wakeup: Vec<f64>,
        efficiency: Vec<f64>,
        /// Efficiency over the plain server's in the same round.
        vs_plain: Vec<f64>,
        /// Efficiency over the plain mmsg server's in the same round.
        vs_mmsg: Vec<f64>,
        resent: u64,
    }
    for &(client_kind, window) in &settings.echo_loads {
        let mut runs = vec![Runs::default(); kinds.len()];
        // Every round runs every server once, so that drift in the machine's speed
        // affects them all alike.
        for _ in 0..settings.echo_runs {
            let mut round = Vec::with_capacity(kinds.len());
            for &kind in &kinds {
                round.push(echo_run(settings, kind, client_kind, window));
            }
            let efficiency = |&(_, sample, _, _): &(f64, ServerSample, u64, f64)| {
                sample.messages as f64 / sample.cpu.as_secs_f64().max(1e-9)
            };
            let plain = plain_at.map(|i| efficiency(&round[i]));
            let mmsg = mmsg_at.map(|i| efficiency(&round[i]));
            for (r, run) in runs.iter_mut().zip(&round) {
                let (rate, sample, lost, per_wakeup) = *run;
                let eff = efficiency(run);
                r.rates.push(rate);
                r.busy
                    .push(sample.cpu.as_secs_f64() / sample.wall.as_secs_f64().max(1e-9));
                r.per_wakeup.push(per_wakeup);
                r.efficiency.push(eff);
                r.vs_plain.extend(plain.map(|p| eff / p));
                r.vs_mmsg.extend(mmsg.map(|m| eff / m));
                r.resent += lost;
            }
        }
        for (kind, r) in kinds.iter().zip(runs) {
            let note = if r.resent > 0 {
                format!(" ({} resent)", r.resent)
            } else {
                String::new()
            };
            println!(
                "| {} | {window} | {} | {:.0}{note} | {:.0} % | {:.1} | {:.0} | {} | {} |",
                client_kind.label(),
                kind.label(),
                median(r.rates),
                100.0 * median(r.busy),
                median(r.per_wakeup),
                median(r.efficiency),
                ratio(r.vs_plain),
                ratio(r.vs_mmsg),
            );
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported (run it whole).
    let settings = Settings::from_env();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let pinned = if allowed_cpus().len() >= 2 {
        "servers pinned to one CPU, clients to another"
    } else {
        "not pinned"
    };
    println!(
        "# getty-rs UDP bench ({cores} cores, {pinned}; {} datagrams per plain run; set GETTY_BENCH_QUICK=1, GETTY_BENCH_SECS, GETTY_BENCH_RUNS to change)",
        settings.datagrams
    );
    // The plain senders of parts 1 and 2 run on this thread.
    pin(Side::Client);
    let started = Instant::now();
    let part = std::env::var("GETTY_BENCH_PART").unwrap_or_default();
    if part.is_empty() || part == "plain" {
        part_plain(&settings);
    }
    if part.is_empty() || part == "echo" {
        part_echo(&settings);
    }
    println!(
        "\n(total bench time {:.0} s)",
        started.elapsed().as_secs_f64()
    );
}
