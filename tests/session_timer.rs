//! The session's one timer and its watermark reports, as a handler sees them on real
//! loopback sockets (TCP, TLS, UDP, unix datagrams): which deadline ends a session, no
//! read-idle while reading is held, no cron burst after a stall, no busy loop while closing
//! or lingering, crossings told in pairs and in order, and an idle session without
//! timeouts allocating no extras and arming no timer. Each test prints its measurements
//! (`--nocapture`); the bounds are generous, since they catch spins and bursts, not speed.
#![cfg(target_os = "linux")]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram as StdUnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, RawCodec};
use getty::reactor::{Context, Entry, NoCommand, Ready, Status};
use getty::tcp::TcpServer;
use getty::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
use getty::unix::UnixDatagramEndpoint;
use getty::{Error, Handler, Session, SessionOptions, SocketOptions, UnixAddr};

const TEST_LIMIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------
// Allocation counting on the reactor thread only
// ---------------------------------------------------------------------------------------

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

fn counting() -> bool {
    COUNTING.try_with(|c| c.get()).unwrap_or(false)
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counting() {
            LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Only one allocation-measuring test at a time (the counters are global).
static MEASURE: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------------------

/// An entry that reports the reactor's armed timers and ends at once.
struct TimerProbe(Sender<usize>);

impl Entry for TimerProbe {
    type Command = NoCommand;
    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        let _ = self.0.send(cx.armed_timers());
        Status::Done
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Done
    }
}

fn armed_timers(running: &Running) -> usize {
    let (tx, rx) = mpsc::channel();
    running.run_on(move |s| {
        s.spawn(TimerProbe(tx));
    });
    rx.recv_timeout(STEP).expect("the probe reported")
}

fn turns(running: &Running) -> u64 {
    running.run_on(|s| s.loop_metrics().turns)
}

/// Reactor turns over `window`, and how long the window really took.
fn turns_over(running: &Running, window: Duration) -> (u64, Duration) {
    let before = turns(running);
    let started = Instant::now();
    std::thread::sleep(window);
    (turns(running) - before, started.elapsed())
}

/// A TCP server with these options whose sessions report through `Probe` (silent).
fn probe_server(tx: &Sender<Ev>, options: SessionOptions) -> (Running, SocketAddr) {
    let tx = tx.clone();
    let server = TcpServer::builder()
        .session_options(options)
        .bind("127.0.0.1:0", move |_| Ok((RawCodec, Probe::silent(&tx))))
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("timer-probe", server), addr)
}

// ---------------------------------------------------------------------------------------
// 1. An idle TCP session with no cron and no idle timeout: no timer, no extras
// ---------------------------------------------------------------------------------------

#[test]
fn idle_tcp_sessions_without_timeouts_arm_no_timer() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        for (name, options, per_session) in [
            ("no timeouts", SessionOptions::default(), 0),
            (
                "read idle 60 s",
                SessionOptions::default().read_idle_timeout(Some(Duration::from_secs(60))),
                1,
            ),
            (
                "cron 60 s",
                SessionOptions::default().cron_period(Some(Duration::from_secs(60))),
                1,
            ),
        ] {
            let (tx, mut events) = Events::new();
            let (running, addr) = probe_server(&tx, options);
            let before = armed_timers(&running);
            let clients: Vec<_> = (0..8).map(|_| connect(addr)).collect();
            for c in &clients {
                events.wait_open(c.local_addr().unwrap());
            }
            // A few turns so that every session settled.
            std::thread::sleep(Duration::from_millis(50));
            let after = armed_timers(&running);
            eprintln!("{name}: armed timers {before} -> {after} for 8 sessions");
            assert_eq!(after - before, 8 * per_session, "{name}");
            drop(clients);
            running.stop();
        }
    });
}

/// Live bytes the reactor thread holds per session, for sessions opened with `options`.
fn live_bytes_per_session(options: SessionOptions, sessions: usize) -> (f64, f64) {
    let (tx, mut events) = Events::new();
    let (running, addr) = probe_server(&tx, options);
    // Warm up: one session opened and closed (pools, slab, the allocator).
    {
        let c = connect(addr);
        let sid = events.wait_open(c.local_addr().unwrap());
        drop(c);
        events.wait_close(sid);
    }
    running.run_on(|_| COUNTING.with(|c| c.set(true)));
    let snapshot = |running: &Running| {
        running.run_on(|_| {
            (
                LIVE_BYTES.load(Ordering::Relaxed),
                ALLOCS.load(Ordering::Relaxed),
            )
        })
    };
    let (bytes0, allocs0) = snapshot(&running);
    let clients: Vec<_> = (0..sessions).map(|_| connect(addr)).collect();
    for c in &clients {
        events.wait_open(c.local_addr().unwrap());
    }
    std::thread::sleep(Duration::from_millis(100));
    let (bytes1, allocs1) = snapshot(&running);
    running.run_on(|_| COUNTING.with(|c| c.set(false)));
    drop(clients);
    running.stop();
    let n = sessions as f64;
    ((bytes1 - bytes0) as f64 / n, (allocs1 - allocs0) as f64 / n)
}

#[test]
fn idle_tcp_sessions_without_timeouts_allocate_no_extras() {
    let _gate = shared_gate();
    let _measure = MEASURE.lock().unwrap_or_else(|p| p.into_inner());
    watchdog(TEST_LIMIT, || {
        let plain = live_bytes_per_session(SessionOptions::default(), 64);
        let cron = live_bytes_per_session(
            SessionOptions::default().cron_period(Some(Duration::from_secs(60))),
            64,
        );
        let idle = live_bytes_per_session(
            SessionOptions::default().read_idle_timeout(Some(Duration::from_secs(60))),
            64,
        );
        eprintln!("per session (live bytes, allocations): plain {plain:?}, cron {cron:?}, read idle {idle:?}");
        // Extras are one allocation of well over 64 bytes: the cron session holds it, the
        // plain one must not.
        assert!(
            cron.0 - plain.0 >= 64.0,
            "a plain idle session holds about as much as one with a cron: {plain:?} vs {cron:?}"
        );
        assert!(cron.1 - plain.1 >= 0.9, "{plain:?} vs {cron:?}");
    });
}

// ---------------------------------------------------------------------------------------
// 2. Read idle does not count while reading is paused; no busy loop meanwhile
// ---------------------------------------------------------------------------------------

/// Floods its peer at open (past the high watermark: flow control holds reading) or
/// pauses reading by hand, and reports what happens.
struct Holder {
    tx: Sender<Ev>,
    flood: bool,
}

impl Handler<RawCodec> for Holder {
    fn on_open(&mut self, s: &mut Session<RawCodec>) -> io::Result<()> {
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        if self.flood {
            s.write_bytes(vec![0x5a; 1 << 20]).unwrap();
        } else {
            s.pause_reading();
        }
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<RawCodec>, msg: Bytes) {
        let _ = self.tx.send(Ev::Msg { sid: s.id(), msg });
    }
    fn on_cron(&mut self, s: &mut Session<RawCodec>) {
        let _ = self.tx.send(Ev::Cron { sid: s.id() });
    }
    fn on_error(&mut self, s: &mut Session<RawCodec>, error: &Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }
    fn on_close(&mut self, s: &mut Session<RawCodec>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

fn held_session_outlives_read_idle(flood: bool) {
    let (tx, mut events) = Events::new();
    let idle = Duration::from_millis(500);
    let options = SessionOptions::default()
        .read_idle_timeout(Some(idle))
        .write_stall_timeout(Duration::from_secs(60));
    let server = {
        let tx = tx.clone();
        TcpServer::builder()
            .socket_options(SocketOptions::default().send_buffer_size(Some(4096)))
            .session_options(options)
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    RawCodec,
                    Holder {
                        tx: tx.clone(),
                        flood,
                    },
                ))
            })
            .unwrap()
    };
    let addr = server.local_addr();
    let running = Running::serve("timer-held", server);
    let client = connect_with_recv_buffer(addr, 4096);
    let sid = events.wait_open(client.local_addr().unwrap());
    std::thread::sleep(Duration::from_millis(600));
    let (turns, took) = turns_over(&running, Duration::from_secs(1));
    eprintln!(
        "held ({}) with read idle {idle:?}: {turns} turns in {took:?}",
        if flood {
            "flow control"
        } else {
            "pause_reading"
        }
    );
    std::thread::sleep(Duration::from_millis(400));
    let evs = events.of(sid);
    assert!(
        !evs.iter()
            .any(|e| matches!(e, Ev::Error { .. } | Ev::Close { .. })),
        "a held session timed out: {evs:?}"
    );
    let allowed = 10 + (20.0 * took.as_secs_f64()).ceil() as u64;
    assert!(
        turns <= allowed,
        "{turns} turns in {took:?} (at most {allowed})"
    );
    drop(client);
    running.stop();
}

#[test]
fn a_session_held_by_flow_control_does_not_time_out_on_read_idle_nor_spin() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || held_session_outlives_read_idle(true));
}

#[test]
fn a_session_paused_by_its_handler_does_not_time_out_on_read_idle_nor_spin() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || held_session_outlives_read_idle(false));
}

/// The control: the same session, reading, does time out.
#[test]
fn a_reading_session_times_out_on_read_idle() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let (tx, mut events) = Events::new();
        let idle = Duration::from_millis(300);
        let (running, addr) = probe_server(
            &tx,
            SessionOptions::default()
                .read_idle_timeout(Some(idle))
                .cron_period(Some(Duration::from_millis(100))),
        );
        let client = connect(addr);
        let sid = events.wait_open(client.local_addr().unwrap());
        events.wait_close(sid);
        let errors = events.errors_of(sid);
        let crons = events.count(|e| matches!(e, Ev::Cron { sid: s } if *s == sid));
        eprintln!("reading session: errors {errors:?}, {crons} crons before");
        assert_eq!(errors, vec![ErrKind::ReadIdle(idle)]);
        assert!(crons >= 1, "cron ticks before the idle timeout");
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// 3. No busy loop for an idle session with a 1 s cron (TCP and UDP)
// ---------------------------------------------------------------------------------------

#[test]
fn an_idle_tcp_session_with_a_one_second_cron_does_not_spin() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let (tx, mut events) = Events::new();
        let (running, addr) = probe_server(
            &tx,
            SessionOptions::default().cron_period(Some(Duration::from_secs(1))),
        );
        let client = connect(addr);
        let sid = events.wait_open(client.local_addr().unwrap());
        let (turns, took) = turns_over(&running, Duration::from_millis(2500));
        let crons = events.count(|e| matches!(e, Ev::Cron { sid: s } if *s == sid));
        eprintln!("tcp cron 1 s: {turns} turns, {crons} crons in {took:?}");
        assert!(turns <= 15, "{turns} turns in {took:?}");
        assert!((1..=3).contains(&crons), "{crons} crons in {took:?}");
        drop(client);
        running.stop();
    });
}

/// Reports cron ticks (their times) of a datagram session; writes nothing.
struct DatagramTicks {
    ticks: Arc<Mutex<Vec<Instant>>>,
    stall_at: Option<usize>,
}

impl<A: Clone + PartialEq + std::fmt::Debug + Send + 'static> DatagramHandler<RawCodec, A>
    for DatagramTicks
{
    fn on_message(&mut self, _: &mut DatagramSession<RawCodec, A>, _: Bytes, _: A) {}
    fn on_cron(&mut self, _: &mut DatagramSession<RawCodec, A>) {
        let n = {
            let mut ticks = self.ticks.lock().unwrap();
            ticks.push(Instant::now());
            ticks.len()
        };
        if Some(n) == self.stall_at {
            std::thread::sleep(STALL);
        }
    }
}

#[test]
fn an_idle_udp_endpoint_with_a_one_second_cron_does_not_spin() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let endpoint = {
            let ticks = ticks.clone();
            UdpEndpoint::builder()
                .session_options(
                    SessionOptions::default().cron_period(Some(Duration::from_secs(1))),
                )
                .bind("127.0.0.1:0", move |_| {
                    Ok((
                        RawCodec,
                        DatagramTicks {
                            ticks,
                            stall_at: None,
                        },
                    ))
                })
                .unwrap()
        };
        let running = Running::serve("timer-udp-cron", endpoint);
        std::thread::sleep(Duration::from_millis(100));
        let (turns, took) = turns_over(&running, Duration::from_millis(2500));
        let crons = ticks.lock().unwrap().len();
        eprintln!("udp cron 1 s: {turns} turns, {crons} crons in {took:?}");
        assert!(turns <= 15, "{turns} turns in {took:?}");
        assert!((1..=3).contains(&crons), "{crons} crons");
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// 4. A 1 ms cron does not burst after a stall of the loop
// ---------------------------------------------------------------------------------------

const STALL: Duration = Duration::from_millis(150);

/// The ticks that came within `window` after the stalling tick (number `stall_at`) ended.
fn ticks_after_stall(ticks: &[Instant], stall_at: usize, window: Duration) -> usize {
    let stall_end = ticks[stall_at - 1] + STALL;
    ticks[stall_at..]
        .iter()
        .filter(|t| **t < stall_end + window)
        .count()
}

/// Records its cron ticks; stalls the loop inside the `stall_at`th.
struct Ticker {
    ticks: Arc<Mutex<Vec<Instant>>>,
    stall_at: usize,
}

impl Handler<RawCodec> for Ticker {
    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {}
    fn on_cron(&mut self, _: &mut Session<RawCodec>) {
        let n = {
            let mut ticks = self.ticks.lock().unwrap();
            ticks.push(Instant::now());
            ticks.len()
        };
        if n == self.stall_at {
            std::thread::sleep(STALL);
        }
    }
}

#[test]
fn a_one_ms_tcp_cron_does_not_burst_after_a_stall() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let stall_at = 20;
        let server = {
            let ticks = ticks.clone();
            TcpServer::builder()
                .session_options(
                    SessionOptions::default().cron_period(Some(Duration::from_millis(1))),
                )
                .bind("127.0.0.1:0", move |_| {
                    Ok((
                        RawCodec,
                        Ticker {
                            ticks: ticks.clone(),
                            stall_at,
                        },
                    ))
                })
                .unwrap()
        };
        let addr = server.local_addr();
        let running = Running::serve("timer-burst", server);
        let client = connect(addr);
        let deadline = Instant::now() + STEP;
        while ticks.lock().unwrap().len() < stall_at + 40 {
            assert!(Instant::now() < deadline, "the cron stopped ticking");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(client);
        running.stop();
        let ticks = ticks.lock().unwrap();
        let burst = ticks_after_stall(&ticks, stall_at, Duration::from_millis(10));
        eprintln!("tcp 1 ms cron: {burst} ticks in the 10 ms after a {STALL:?} stall");
        assert!(burst <= 40, "{burst} ticks right after the stall: a burst");
    });
}

#[test]
fn a_one_ms_udp_cron_does_not_burst_after_a_stall() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let stall_at = 20;
        let endpoint = {
            let ticks = ticks.clone();
            UdpEndpoint::builder()
                .session_options(
                    SessionOptions::default().cron_period(Some(Duration::from_millis(1))),
                )
                .bind("127.0.0.1:0", move |_| {
                    Ok((
                        RawCodec,
                        DatagramTicks {
                            ticks,
                            stall_at: Some(stall_at),
                        },
                    ))
                })
                .unwrap()
        };
        let running = Running::serve("timer-udp-burst", endpoint);
        let deadline = Instant::now() + STEP;
        while ticks.lock().unwrap().len() < stall_at + 40 {
            assert!(Instant::now() < deadline, "the cron stopped ticking");
            std::thread::sleep(Duration::from_millis(10));
        }
        running.stop();
        let ticks = ticks.lock().unwrap();
        let burst = ticks_after_stall(&ticks, stall_at, Duration::from_millis(10));
        eprintln!("udp 1 ms cron: {burst} ticks in the 10 ms after a {STALL:?} stall");
        assert!(burst <= 40, "{burst} ticks right after the stall: a burst");
    });
}

// ---------------------------------------------------------------------------------------
// 5. Writability crossings pair up under a fast writer to a slow reader
// ---------------------------------------------------------------------------------------

/// Checks a handler's writability reports: alternating, starting with `false`; every
/// `false` but possibly the last (the session may close before it drains) has its `true`.
fn check_pairs(what: &str, seen: &[bool], at_least: usize) {
    eprintln!(
        "{what}: {} reports ({} false, {} true)",
        seen.len(),
        seen.iter().filter(|w| !**w).count(),
        seen.iter().filter(|w| **w).count()
    );
    for (i, w) in seen.iter().enumerate() {
        assert_eq!(*w, i % 2 == 1, "{what}: report {i} out of order: {seen:?}");
    }
    assert!(
        seen.len() >= 2 * at_least,
        "{what}: only {} reports: {seen:?}",
        seen.len()
    );
}

/// Writes 16 KiB chunks until unwritable, again on every `true`, until `total` bytes;
/// then closes gracefully.
struct Pump {
    tx: Sender<Ev>,
    written: usize,
    total: usize,
    /// Reports whose `writable` disagreed with `is_writable()` inside the callback.
    mismatches: Arc<AtomicUsize>,
}

impl Pump {
    fn pump(&mut self, s: &mut Session<RawCodec>) {
        while s.is_writable() && self.written < self.total {
            s.write_bytes(vec![0x5a; 16 * 1024]).unwrap();
            self.written += 16 * 1024;
        }
        if self.written >= self.total {
            s.close();
        }
    }
}

impl Handler<RawCodec> for Pump {
    fn on_open(&mut self, s: &mut Session<RawCodec>) -> io::Result<()> {
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        self.pump(s);
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {}
    fn on_writability_changed(&mut self, s: &mut Session<RawCodec>, writable: bool) {
        let _ = self.tx.send(Ev::Writable {
            sid: s.id(),
            writable,
        });
        if s.is_writable() != writable {
            self.mismatches.fetch_add(1, Ordering::Relaxed);
        }
        if writable {
            self.pump(s);
        }
    }
    fn on_error(&mut self, s: &mut Session<RawCodec>, error: &Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }
    fn on_close(&mut self, s: &mut Session<RawCodec>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

fn writability_of(events: &mut Events, sid: u64) -> Vec<bool> {
    events
        .of(sid)
        .into_iter()
        .filter_map(|e| match e {
            Ev::Writable { writable, .. } => Some(writable),
            _ => None,
        })
        .collect()
}

#[test]
fn tcp_writability_reports_pair_up_under_a_fast_writer_and_a_slow_reader() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let (tx, mut events) = Events::new();
        let total = 4 << 20;
        let mismatches = Arc::new(AtomicUsize::new(0));
        let server = {
            let (tx, mismatches) = (tx.clone(), mismatches.clone());
            TcpServer::builder()
                .socket_options(SocketOptions::default().send_buffer_size(Some(8192)))
                .session_options(SessionOptions::default().watermarks(64 * 1024, 32 * 1024))
                .bind("127.0.0.1:0", move |_| {
                    Ok((
                        RawCodec,
                        Pump {
                            tx: tx.clone(),
                            written: 0,
                            total,
                            mismatches: mismatches.clone(),
                        },
                    ))
                })
                .unwrap()
        };
        let addr = server.local_addr();
        let running = Running::serve("timer-pump", server);
        let mut slow = connect_with_recv_buffer(addr, 8192);
        let sid = events.wait_open(slow.local_addr().unwrap());
        let mut buf = vec![0u8; 16 * 1024];
        let mut read = 0usize;
        let mut reads = 0usize;
        loop {
            let n = slow.read(&mut buf).expect("read the pump");
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|&b| b == 0x5a));
            read += n;
            reads += 1;
            if reads % 16 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(read, total, "every byte written arrived");
        events.wait_close(sid);
        let seen = writability_of(&mut events, sid);
        check_pairs("tcp", &seen, 8);
        assert_eq!(
            mismatches.load(Ordering::Relaxed),
            0,
            "is_writable disagreed"
        );
        assert!(events.errors_of(sid).is_empty());
        running.stop();
    });
}

/// Writes datagrams of 1000 bytes (to `to`, or its connected peer) until unwritable,
/// again on every `true`, `rounds` times; counts every datagram written.
struct DatagramPump<A> {
    tx: Sender<Ev>,
    to: Option<A>,
    rounds: usize,
    written: u32,
    done: Arc<AtomicBool>,
}

impl<A: Clone + PartialEq + std::fmt::Debug + Send + 'static> DatagramPump<A> {
    fn pump(&mut self, s: &mut DatagramSession<RawCodec, A>) {
        if self.rounds == 0 {
            self.done.store(true, Ordering::Relaxed);
            return;
        }
        self.rounds -= 1;
        while s.is_writable() {
            let mut datagram = vec![0u8; 1000];
            datagram[..4].copy_from_slice(&self.written.to_be_bytes());
            let result = match &self.to {
                Some(to) => s.write_bytes_to(to.clone(), datagram),
                None => s.write_bytes(datagram),
            };
            result.unwrap();
            self.written += 1;
        }
    }
}

impl<A: Clone + PartialEq + std::fmt::Debug + Send + 'static> DatagramHandler<RawCodec, A>
    for DatagramPump<A>
{
    fn on_open(&mut self, s: &mut DatagramSession<RawCodec, A>) -> io::Result<()> {
        let _ = self.tx.send(Ev::Note {
            sid: s.id(),
            what: "open".into(),
        });
        self.pump(s);
        Ok(())
    }
    fn on_message(&mut self, _: &mut DatagramSession<RawCodec, A>, _: Bytes, _: A) {}
    fn on_writability_changed(&mut self, s: &mut DatagramSession<RawCodec, A>, writable: bool) {
        let _ = self.tx.send(Ev::Writable {
            sid: s.id(),
            writable,
        });
        assert_eq!(s.is_writable(), writable);
        if writable {
            self.pump(s);
        }
    }
    fn on_error(&mut self, s: &mut DatagramSession<RawCodec, A>, error: &Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }
    fn on_close(&mut self, s: &mut DatagramSession<RawCodec, A>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

#[test]
fn udp_writability_reports_pair_up_under_a_fast_writer() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let (tx, mut events) = Events::new();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let to = peer.local_addr().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let rounds = 50;
        let endpoint = {
            let (tx, done) = (tx.clone(), done.clone());
            UdpEndpoint::builder()
                .session_options(SessionOptions::default().watermarks(10_000, 5_000))
                .bind("127.0.0.1:0", move |_| {
                    Ok((
                        RawCodec,
                        DatagramPump {
                            tx,
                            to: Some(to),
                            rounds,
                            written: 0,
                            done,
                        },
                    ))
                })
                .unwrap()
        };
        let running = Running::serve("timer-udp-pump", endpoint);
        let sid = events
            .wait(
                "open",
                |e| matches!(e, Ev::Note { what, .. } if what == "open"),
            )
            .sid();
        // The peer reads some, slowly (what it does not read the kernel drops).
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + STEP;
        while !done.load(Ordering::Relaxed) {
            assert!(Instant::now() < deadline, "the pump did not finish");
            let _ = peer.recv(&mut buf);
        }
        std::thread::sleep(Duration::from_millis(100));
        let seen = writability_of(&mut events, sid);
        check_pairs("udp", &seen, rounds);
        assert_eq!(seen.last(), Some(&true), "the last crossing was told");
        running.stop();
    });
}

#[test]
fn unix_datagram_writability_reports_pair_up_under_a_slow_reader() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let dir = TempDir::new("timer-uds-pump");
        let at = dir.path("slow.sock");
        let slow = StdUnixDatagram::bind(&at).unwrap();
        slow.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let (tx, mut events) = Events::new();
        let done = Arc::new(AtomicBool::new(false));
        let rounds = 30;
        let endpoint = {
            let (tx, done) = (tx.clone(), done.clone());
            UnixDatagramEndpoint::builder()
                .session_options(
                    SessionOptions::default()
                        .watermarks(20_000, 10_000)
                        .write_stall_timeout(Duration::from_secs(60)),
                )
                .connect(UnixAddr::path(&at), move |_| {
                    Ok((
                        RawCodec,
                        DatagramPump::<UnixAddr> {
                            tx,
                            to: None,
                            rounds,
                            written: 0,
                            done,
                        },
                    ))
                })
                .unwrap()
        };
        let running = Running::serve("timer-uds-pump", endpoint);
        let sid = events
            .wait(
                "open",
                |e| matches!(e, Ev::Note { what, .. } if what == "open"),
            )
            .sid();
        // Read slowly, checking order, until the pump is done and the queue drained.
        let mut buf = [0u8; 2048];
        let mut next = 0u32;
        let deadline = Instant::now() + STEP;
        loop {
            assert!(Instant::now() < deadline, "the pump did not finish");
            match slow.recv(&mut buf) {
                Ok(n) => {
                    assert_eq!(n, 1000);
                    let i = u32::from_be_bytes(buf[..4].try_into().unwrap());
                    assert_eq!(i, next, "datagrams in order, none lost");
                    next += 1;
                    if next % 8 == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        let seen = writability_of(&mut events, sid);
        check_pairs("unix datagram", &seen, rounds);
        assert_eq!(seen.last(), Some(&true));
        assert!(events.errors_of(sid).is_empty(), "{:?}", events.of(sid));
        eprintln!("unix datagram: {next} datagrams read in order");
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// 6. Changing a timer option restarts the cron period (documented; must stay so)
// ---------------------------------------------------------------------------------------

/// Sets its read-idle timeout (to the same value) on every message.
struct Resetter {
    tx: Sender<Ev>,
}

impl Handler<RawCodec> for Resetter {
    fn on_open(&mut self, s: &mut Session<RawCodec>) -> io::Result<()> {
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<RawCodec>, _: Bytes) {
        s.set_read_idle_timeout(Some(Duration::from_secs(60)));
    }
    fn on_cron(&mut self, s: &mut Session<RawCodec>) {
        let _ = self.tx.send(Ev::Cron { sid: s.id() });
    }
}

#[test]
fn changing_a_timer_option_restarts_the_cron_period() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let (tx, mut events) = Events::new();
        let server = {
            let tx = tx.clone();
            TcpServer::builder()
                .session_options(
                    SessionOptions::default().cron_period(Some(Duration::from_millis(300))),
                )
                .bind("127.0.0.1:0", move |_| {
                    Ok((RawCodec, Resetter { tx: tx.clone() }))
                })
                .unwrap()
        };
        let addr = server.local_addr();
        let running = Running::serve("timer-reset", server);
        let mut client = connect(addr);
        let sid = events.wait_open(client.local_addr().unwrap());
        // A message every 50 ms for 1.2 s: each one restarts the 300 ms period.
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1200) {
            client.write_all(b"x").unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        let during = events.count(|e| matches!(e, Ev::Cron { sid: s } if *s == sid));
        // Then quiet: the cron ticks again.
        events.wait(
            "a cron tick once quiet",
            |e| matches!(e, Ev::Cron { sid: s } if *s == sid),
        );
        eprintln!("cron 300 ms restarted every 50 ms: {during} ticks in 1.2 s");
        assert!(
            during <= 1,
            "{during} ticks while the period kept restarting"
        );
        drop(client);
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// 7. Which error wins when the write stall and the read idle are both due
// ---------------------------------------------------------------------------------------

fn stalled_and_idle(stall: Duration, idle: Duration) -> Vec<ErrKind> {
    let (tx, mut events) = Events::new();
    // High watermarks well above what is written: the session keeps reading (read idle
    // counts) while its output is blocked by a peer that does not read.
    let options = SessionOptions::default()
        .watermarks(8 << 20, 4 << 20)
        .max_outbound(16 << 20)
        .read_idle_timeout(Some(idle))
        .write_stall_timeout(stall);
    let server = {
        let tx = tx.clone();
        TcpServer::builder()
            .socket_options(SocketOptions::default().send_buffer_size(Some(4096)))
            .session_options(options)
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    RawCodec,
                    Holder {
                        tx: tx.clone(),
                        flood: true,
                    },
                ))
            })
            .unwrap()
    };
    let addr = server.local_addr();
    let running = Running::serve("timer-stall-idle", server);
    let client = connect_with_recv_buffer(addr, 4096);
    let sid = events.wait_open(client.local_addr().unwrap());
    events.wait_close(sid);
    let errors = events.errors_of(sid);
    drop(client);
    running.stop();
    errors
}

#[test]
fn the_earlier_of_write_stall_and_read_idle_ends_the_session() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let (short, long) = (Duration::from_millis(300), Duration::from_millis(900));
        let a = stalled_and_idle(short, long);
        let b = stalled_and_idle(long, short);
        eprintln!("stall first: {a:?}; idle first: {b:?}");
        assert_eq!(a, vec![ErrKind::WriteStalled(short)]);
        assert_eq!(b, vec![ErrKind::ReadIdle(short)]);
    });
}

// ---------------------------------------------------------------------------------------
// 8. No spin while closing (output blocked) or lingering, though cron and read idle are
//    long past due
// ---------------------------------------------------------------------------------------

/// Floods `flood` bytes at open (nothing if 0), then closes gracefully at once.
struct Closer {
    tx: Sender<Ev>,
    flood: usize,
}

impl Handler<RawCodec> for Closer {
    fn on_open(&mut self, s: &mut Session<RawCodec>) -> io::Result<()> {
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        if self.flood > 0 {
            s.write_bytes(vec![0x5a; self.flood]).unwrap();
        }
        s.close();
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {}
    fn on_cron(&mut self, s: &mut Session<RawCodec>) {
        let _ = self.tx.send(Ev::Cron { sid: s.id() });
    }
    fn on_error(&mut self, s: &mut Session<RawCodec>, error: &Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }
    fn on_close(&mut self, s: &mut Session<RawCodec>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

fn closer_server(tx: &Sender<Ev>, options: SessionOptions, flood: usize) -> (Running, SocketAddr) {
    let tx = tx.clone();
    let server = TcpServer::builder()
        .socket_options(SocketOptions::default().send_buffer_size(Some(4096)))
        .session_options(
            options
                .cron_period(Some(Duration::from_millis(1)))
                .read_idle_timeout(Some(Duration::from_millis(20))),
        )
        .bind("127.0.0.1:0", move |_| {
            Ok((
                RawCodec,
                Closer {
                    tx: tx.clone(),
                    flood,
                },
            ))
        })
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("timer-closer", server), addr)
}

#[test]
fn a_closing_tcp_session_with_blocked_output_does_not_spin_and_stalls() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let (tx, mut events) = Events::new();
        let stall = Duration::from_millis(1800);
        let (running, addr) = closer_server(
            &tx,
            SessionOptions::default().write_stall_timeout(stall),
            1 << 20,
        );
        let client = connect_with_recv_buffer(addr, 4096);
        let sid = events.wait_open(client.local_addr().unwrap());
        std::thread::sleep(Duration::from_millis(200));
        let (turns, took) = turns_over(&running, Duration::from_secs(1));
        events.wait_close(sid);
        let errors = events.errors_of(sid);
        let crons = events.count(|e| matches!(e, Ev::Cron { sid: s } if *s == sid));
        eprintln!("closing, blocked: {turns} turns in {took:?}; errors {errors:?}; {crons} crons");
        assert!(turns <= 20, "{turns} turns in {took:?} while closing");
        assert_eq!(errors, vec![ErrKind::WriteStalled(stall)]);
        assert_eq!(crons, 0, "no cron once closing");
        drop(client);
        running.stop();
    });
}

#[test]
fn a_lingering_tcp_session_does_not_spin_and_ends_at_the_linger_timeout() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let (tx, mut events) = Events::new();
        let linger = Duration::from_millis(1500);
        let (running, addr) =
            closer_server(&tx, SessionOptions::default().linger_timeout(linger), 0);
        let before = running.entry_count();
        let mut client = connect(addr);
        let sid = events.wait_open(client.local_addr().unwrap());
        // The server's FIN arrives; the client keeps its side open and says nothing.
        let mut buf = [0u8; 16];
        assert_eq!(client.read(&mut buf).unwrap(), 0, "EOF from the server");
        events.wait_close(sid);
        let started = Instant::now();
        let (turns, took) = turns_over(&running, Duration::from_millis(1000));
        assert_eq!(running.entry_count(), before + 1, "still lingering");
        running.wait_until_empty_of(before);
        let ended = started.elapsed();
        eprintln!("lingering: {turns} turns in {took:?}; ended {ended:?} after on_close");
        assert!(turns <= 20, "{turns} turns in {took:?} while lingering");
        assert!(events.errors_of(sid).is_empty());
        drop(client);
        running.stop();
    });
}

trait WaitEntries {
    fn wait_until_empty_of(&self, count: usize);
}

impl WaitEntries for Running {
    fn wait_until_empty_of(&self, count: usize) {
        let deadline = Instant::now() + STEP;
        while self.entry_count() > count {
            assert!(Instant::now() < deadline, "the session never ended");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A connected unix datagram endpoint whose peer does not read: it fills the peer's queue,
/// closes, and must neither spin on its long-due cron and read idle while closing nor end
/// before the write-stall timeout (then with `WriteStalled`).
#[test]
fn a_closing_unix_datagram_endpoint_with_blocked_output_does_not_spin_and_stalls() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let dir = TempDir::new("timer-uds-closing");
        let at = dir.path("deaf.sock");
        let _deaf = StdUnixDatagram::bind(&at).unwrap();
        let (tx, mut events) = Events::new();
        let stall = Duration::from_millis(1800);
        struct FillAndClose(Sender<Ev>);
        impl DatagramHandler<RawCodec, UnixAddr> for FillAndClose {
            fn on_open(&mut self, s: &mut DatagramSession<RawCodec, UnixAddr>) -> io::Result<()> {
                let _ = self.0.send(Ev::Note {
                    sid: s.id(),
                    what: "open".into(),
                });
                for _ in 0..200 {
                    s.write_bytes(vec![0u8; 1000]).unwrap();
                }
                s.close();
                Ok(())
            }
            fn on_message(
                &mut self,
                _: &mut DatagramSession<RawCodec, UnixAddr>,
                _: Bytes,
                _: UnixAddr,
            ) {
            }
            fn on_cron(&mut self, s: &mut DatagramSession<RawCodec, UnixAddr>) {
                let _ = self.0.send(Ev::Cron { sid: s.id() });
            }
            fn on_error(&mut self, s: &mut DatagramSession<RawCodec, UnixAddr>, error: &Error) {
                let _ = self.0.send(Ev::Error {
                    sid: s.id(),
                    err: classify(error),
                });
            }
            fn on_close(&mut self, s: &mut DatagramSession<RawCodec, UnixAddr>) {
                let _ = self.0.send(Ev::Close { sid: s.id() });
            }
        }
        let endpoint = UnixDatagramEndpoint::builder()
            .session_options(
                SessionOptions::default()
                    .write_stall_timeout(stall)
                    .cron_period(Some(Duration::from_millis(1)))
                    .read_idle_timeout(Some(Duration::from_millis(20))),
            )
            .connect(UnixAddr::path(&at), move |_| {
                Ok((RawCodec, FillAndClose(tx)))
            })
            .unwrap();
        let running = Running::serve("timer-uds-closing", endpoint);
        let sid = events
            .wait(
                "open",
                |e| matches!(e, Ev::Note { what, .. } if what == "open"),
            )
            .sid();
        let asked = Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        let (turns, took) = turns_over(&running, Duration::from_secs(1));
        events.wait_close(sid);
        let lasted = asked.elapsed();
        let errors = events.errors_of(sid);
        let crons = events.count(|e| matches!(e, Ev::Cron { sid: s } if *s == sid));
        eprintln!(
            "uds closing, blocked: {turns} turns in {took:?}; ended after {lasted:?} with {errors:?}; {crons} crons"
        );
        assert!(turns <= 60, "{turns} turns in {took:?} while closing");
        assert_eq!(
            errors.last(),
            Some(&ErrKind::WriteStalled(stall)),
            "{errors:?}"
        );
        assert_eq!(crons, 0, "no cron once closing");
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// 9. An idle TLS session (extras held for the filter) arms no timer once its handshake is
//    done, and does not spin
// ---------------------------------------------------------------------------------------

#[cfg(feature = "tls")]
#[test]
fn an_idle_tls_session_arms_no_timer_after_its_handshake() {
    use getty::codec::LengthFieldCodec;
    use getty::tcp::TcpClient;
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let server_config = getty::tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
        let client_config = getty::tls::client_config(chain.as_bytes()).unwrap();
        let (tx, mut events) = Events::new();
        let server = {
            let tx = tx.clone();
            TcpServer::builder()
                .tls(server_config)
                .session_options(
                    SessionOptions::default().handshake_timeout(Duration::from_millis(400)),
                )
                .bind("127.0.0.1:0", move |_| {
                    Ok((LengthFieldCodec::default(), Probe::echo(&tx)))
                })
                .unwrap()
        };
        let addr = server.local_addr();
        let running = Running::serve("timer-tls", server);
        let before = armed_timers(&running);
        struct Hello(Sender<Ev>);
        impl Handler<LengthFieldCodec> for Hello {
            fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> io::Result<()> {
                s.write(b"hello".to_vec()).unwrap();
                Ok(())
            }
            fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
                let _ = self.0.send(Ev::Note {
                    sid: s.id(),
                    what: format!("echo {}", msg.len()),
                });
            }
        }
        let client = {
            let tx = tx.clone();
            TcpClient::builder()
                .tls(client_config, "localhost")
                .build(addr, move |_| {
                    Ok((LengthFieldCodec::default(), Hello(tx.clone())))
                })
                .unwrap()
        };
        let client = Running::serve("timer-tls-client", client);
        events.wait(
            "the echo",
            |e| matches!(e, Ev::Note { what, .. } if what == "echo 5"),
        );
        // Past the handshake timeout: nothing may fire or stay armed for it.
        std::thread::sleep(Duration::from_millis(600));
        let after = armed_timers(&running);
        let (turns, took) = turns_over(&running, Duration::from_secs(1));
        events.pump();
        let errors: Vec<_> = events
            .all
            .iter()
            .filter(|e| matches!(e, Ev::Error { .. } | Ev::Close { .. }))
            .cloned()
            .collect();
        eprintln!(
            "idle tls: armed timers {before} -> {after}; {turns} turns in {took:?}; {errors:?}"
        );
        assert_eq!(after, before, "an idle TLS session keeps a timer armed");
        assert!(turns <= 10, "{turns} turns in {took:?}");
        assert!(errors.is_empty(), "{errors:?}");
        client.stop();
        running.stop();
    });
}
