//! Hostile checks of the reactor core and its lifecycle: graceful and hard shutdown with
//! sessions in every state, timers at scale, commands from other threads, panics in
//! destructors, and accept bursts. Every test uses real loopback sockets and bounded
//! waits; none asserts on speed (latencies are printed, for the report).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, RawCodec};
use getty::reactor::{Context, Entry, Ready, Status};
use getty::tcp::TcpServer;
use getty::{Error, Handler, Session, SessionHandle, SessionOptions};

/// One test at a time: some count the process's descriptors or the loop's turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[derive(Default)]
struct Counts {
    opened: AtomicUsize,
    closed: AtomicUsize,
    errors: AtomicUsize,
    crons: AtomicUsize,
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, STEP).expect("connect");
    s.set_read_timeout(Some(STEP)).unwrap();
    s
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP * 2;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------
// Graceful shutdown with large backlogs
// ---------------------------------------------------------------------------------------

const BACKLOG: usize = 4 << 20;

struct Pusher {
    counts: Arc<Counts>,
}

impl Handler<RawCodec> for Pusher {
    fn on_open(&mut self, s: &mut Session<RawCodec>) -> std::io::Result<()> {
        self.counts.opened.fetch_add(1, Ordering::SeqCst);
        s.write_bytes(Bytes::from(vec![7u8; BACKLOG]))
            .map_err(std::io::Error::other)
    }
    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {}
    fn on_close(&mut self, _: &mut Session<RawCodec>) {
        self.counts.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// Readers that read their 4 MiB backlog within the grace get all of it then EOF; a peer
/// that never reads does not hold the reactor past its deadline; every session hears
/// on_close once.
#[test]
fn graceful_shutdown_flushes_backlogs_and_ends_by_its_deadline() {
    let _g = serial();
    watchdog(STEP * 4, || {
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let server = TcpServer::builder()
            .session_options(SessionOptions::default().max_outbound(2 * BACKLOG))
            .bind("127.0.0.1:0", move |_| {
                Ok((RawCodec, Pusher { counts: c.clone() }))
            })
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("graceful-backlog", server);
        let readers: Vec<TcpStream> = (0..8).map(|_| connect(addr)).collect();
        let _never = connect(addr);
        wait_for("9 opens", || counts.opened.load(Ordering::SeqCst) == 9);
        let grace = Duration::from_secs(5);
        let began = Instant::now();
        running.handle().shutdown_graceful(grace).unwrap();
        let mut threads = Vec::new();
        for mut r in readers {
            threads.push(std::thread::spawn(move || {
                let mut total = 0usize;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) => return Ok(total),
                        Ok(n) => total += n,
                        Err(e) => return Err((total, e.kind())),
                    }
                }
            }));
        }
        for t in threads {
            let got = t.join().unwrap();
            assert_eq!(got, Ok(BACKLOG), "a reader got its whole backlog, then EOF");
        }
        running.join(grace + STEP);
        let took = began.elapsed();
        println!("graceful shutdown with a never-reading peer took {took:?} (grace {grace:?})");
        assert!(
            took < grace + Duration::from_secs(3),
            "the reactor outlived its grace: {took:?}"
        );
        assert_eq!(
            counts.closed.load(Ordering::SeqCst),
            9,
            "on_close once each"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Idle reactor with many armed timers
// ---------------------------------------------------------------------------------------

struct Quiet {
    counts: Arc<Counts>,
}

impl<T: getty::Transport> Handler<RawCodec, T> for Quiet {
    fn on_open(&mut self, _: &mut Session<RawCodec, T>) -> std::io::Result<()> {
        self.counts.opened.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec, T>, _: Bytes) {}
    fn on_cron(&mut self, _: &mut Session<RawCodec, T>) {
        self.counts.crons.fetch_add(1, Ordering::SeqCst);
    }
    fn on_error(&mut self, _: &mut Session<RawCodec, T>, _: &Error) {
        self.counts.errors.fetch_add(1, Ordering::SeqCst);
    }
    fn on_close(&mut self, _: &mut Session<RawCodec, T>) {
        self.counts.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// 2,000 idle sessions, each with a 60 s read-idle timeout and a 60 s cron: over two
/// seconds the loop must not turn but for the jobs that ask it how often it turned.
#[test]
fn an_idle_reactor_with_many_armed_timers_does_not_wake() {
    let _g = serial();
    watchdog(STEP * 4, || {
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let server = TcpServer::builder()
            .session_options(
                SessionOptions::default()
                    .cron_period(Some(Duration::from_secs(60)))
                    .read_idle_timeout(Some(Duration::from_secs(60))),
            )
            .bind("127.0.0.1:0", move |_| {
                Ok((RawCodec, Quiet { counts: c.clone() }))
            })
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("idle-timers", server);
        let peers: Vec<TcpStream> = (0..2000).map(|_| connect(addr)).collect();
        wait_for("2000 opens", || {
            counts.opened.load(Ordering::SeqCst) == 2000
        });
        std::thread::sleep(Duration::from_millis(200));
        let before = running.run_on(|s| s.loop_metrics().turns);
        std::thread::sleep(Duration::from_secs(2));
        let after = running.run_on(|s| s.loop_metrics().turns);
        let armed = running.run_on(|s| s.armed_timers());
        println!(
            "idle loop: {} turns in 2 s, {armed} timers armed",
            after - before
        );
        assert!(armed >= 2000, "every session keeps a timer armed ({armed})");
        assert!(
            after - before <= 4,
            "an idle loop turned {} times in 2 s",
            after - before
        );
        drop(peers);
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// Timers at scale
// ---------------------------------------------------------------------------------------

struct Timed {
    counts: Arc<Counts>,
    opened_at: Option<Instant>,
    ticks: u32,
    /// (lateness of the tick or the idle timeout, which)
    report: mpsc::Sender<(Duration, &'static str)>,
    period: Option<Duration>,
    idle: Option<Duration>,
}

impl Handler<RawCodec> for Timed {
    fn on_open(&mut self, s: &mut Session<RawCodec>) -> std::io::Result<()> {
        self.opened_at = Some(Instant::now());
        if s.id() % 2 == 0 {
            s.set_cron_period(self.period);
        } else {
            s.set_read_idle_timeout(self.idle);
        }
        self.counts.opened.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {}
    fn on_cron(&mut self, s: &mut Session<RawCodec>) {
        self.ticks += 1;
        self.counts.crons.fetch_add(1, Ordering::SeqCst);
        let period = self.period.unwrap();
        let due = self.opened_at.unwrap() + period * self.ticks;
        let _ = self
            .report
            .send((Instant::now().saturating_duration_since(due), "cron"));
        if self.ticks == 3 {
            s.close(); // closed in its own cron
        }
    }
    fn on_error(&mut self, _: &mut Session<RawCodec>, e: &Error) {
        assert!(matches!(e, Error::ReadIdle(_)), "unexpected error {e}");
        let due = self.opened_at.unwrap() + self.idle.unwrap();
        let _ = self
            .report
            .send((Instant::now().saturating_duration_since(due), "idle"));
        self.counts.errors.fetch_add(1, Ordering::SeqCst);
    }
    fn on_close(&mut self, _: &mut Session<RawCodec>) {
        self.counts.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// 5,000 sessions (10,000 descriptors in this process): half tick a 500 ms cron and close
/// themselves in their third tick, half end on a 1.5 s read-idle timeout. Each cron
/// session ticks exactly three times; each idle session hears ReadIdle once and no cron;
/// every session hears on_close once.
#[test]
fn timers_at_scale_fire_once_each() {
    let _g = serial();
    watchdog(STEP * 6, || {
        const N: usize = 5000;
        let counts = Arc::new(Counts::default());
        let (tx, rx) = mpsc::channel();
        let c = counts.clone();
        let server = TcpServer::builder()
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    RawCodec,
                    Timed {
                        counts: c.clone(),
                        opened_at: None,
                        ticks: 0,
                        report: tx.clone(),
                        period: Some(Duration::from_millis(500)),
                        idle: Some(Duration::from_millis(1500)),
                    },
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("timers-at-scale", server);
        let peers: Vec<TcpStream> = (0..N).map(|_| connect(addr)).collect();
        wait_for("all closed", || counts.closed.load(Ordering::SeqCst) >= N);
        std::thread::sleep(Duration::from_millis(1200)); // any extra firing would show
        let late: Vec<(Duration, &str)> = rx.try_iter().collect();
        let worst = |what| late.iter().filter(|l| l.1 == what).map(|l| l.0).max();
        println!(
            "worst lateness: cron {:?}, idle {:?}",
            worst("cron"),
            worst("idle")
        );
        assert_eq!(counts.opened.load(Ordering::SeqCst), N);
        assert_eq!(
            counts.crons.load(Ordering::SeqCst),
            3 * N / 2,
            "3 ticks each"
        );
        assert_eq!(
            counts.errors.load(Ordering::SeqCst),
            N / 2,
            "ReadIdle once each"
        );
        assert_eq!(
            counts.closed.load(Ordering::SeqCst),
            N,
            "on_close once each"
        );
        drop(peers);
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// Hard shutdown while other threads write
// ---------------------------------------------------------------------------------------

struct Handed {
    counts: Arc<Counts>,
    handles: mpsc::Sender<SessionHandle<RawCodec>>,
}

impl Handler<RawCodec> for Handed {
    fn on_open(&mut self, s: &mut Session<RawCodec>) -> std::io::Result<()> {
        let _ = self.handles.send(s.handle().expect("a handle"));
        self.counts.opened.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {}
    fn on_close(&mut self, _: &mut Session<RawCodec>) {
        self.counts.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// Four threads write through session handles as fast as the handles take it while the
/// reactor is shut down at once: no panic, on_close once each, every handle then reports
/// the session closed and refuses writes, and the descriptors are all closed.
#[test]
fn hard_shutdown_under_a_flood_of_handle_writes() {
    let _g = serial();
    watchdog(STEP * 4, || {
        let baseline = open_fds();
        let counts = Arc::new(Counts::default());
        let (htx, hrx) = mpsc::channel();
        let c = counts.clone();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((
                RawCodec,
                Handed {
                    counts: c.clone(),
                    handles: htx.clone(),
                },
            ))
        })
        .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("hard-flood", server);
        let peers: Vec<TcpStream> = (0..40).map(|_| connect(addr)).collect();
        wait_for("40 opens", || counts.opened.load(Ordering::SeqCst) == 40);
        let handles: Vec<SessionHandle<RawCodec>> = hrx.try_iter().collect();
        assert_eq!(handles.len(), 40);
        let handles = Arc::new(handles);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let handles = handles.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut i = 0usize;
                    while !stop.load(Ordering::SeqCst) && i < 2_000_000 {
                        let h = &handles[(i * 4 + w) % handles.len()];
                        let _ = h.write_bytes(Bytes::from_static(b"0123456789abcdef"));
                        i += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150));
        running.stop();
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().expect("a writer thread panicked");
        }
        assert_eq!(
            counts.closed.load(Ordering::SeqCst),
            40,
            "on_close once each"
        );
        for h in handles.iter() {
            assert!(h.is_closed(), "a handle still reports its session open");
            assert!(h.write_bytes(Bytes::from_static(b"x")).is_err());
        }
        drop(peers);
        drop(handles);
        std::thread::sleep(Duration::from_millis(100));
        let now = open_fds();
        assert!(
            now <= baseline + 2,
            "descriptors leaked: {baseline} -> {now}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Panics in handler destructors
// ---------------------------------------------------------------------------------------

struct DropBomb {
    counts: Arc<Counts>,
}

impl Handler<RawCodec> for DropBomb {
    fn on_open(&mut self, _: &mut Session<RawCodec>) -> std::io::Result<()> {
        self.counts.opened.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<RawCodec>, m: Bytes) {
        let _ = s.write_bytes(m);
    }
    fn on_close(&mut self, _: &mut Session<RawCodec>) {
        self.counts.closed.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for DropBomb {
    fn drop(&mut self) {
        panic!("a handler's destructor panicked on purpose");
    }
}

/// Handlers whose Drop panics: each session still closes its socket (the descriptor count
/// returns to its baseline), on_close runs once each, and other sessions carry on.
#[test]
fn a_panicking_handler_destructor_leaks_no_descriptor() {
    let _g = serial();
    watchdog(STEP * 4, || {
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((RawCodec, DropBomb { counts: c.clone() }))
        })
        .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("drop-bomb", server);
        let mut bystander = connect(addr);
        wait_for("the bystander", || {
            counts.opened.load(Ordering::SeqCst) == 1
        });
        let baseline = open_fds();
        for round in 0..20 {
            let mut p = connect(addr);
            p.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            p.read_exact(&mut buf).unwrap();
            drop(p); // EOF: the session closes, its handler is dropped, and panics
            wait_for("the close", || {
                counts.closed.load(Ordering::SeqCst) == round + 1
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        let now = open_fds();
        assert!(
            now <= baseline + 1,
            "descriptors leaked: {baseline} -> {now}"
        );
        bystander.write_all(b"still").unwrap();
        let mut buf = [0u8; 5];
        bystander.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"still");
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// Commands from other threads
// ---------------------------------------------------------------------------------------

struct Sink {
    seen: Vec<Vec<u64>>,
    expect: u64,
    done: mpsc::Sender<Vec<Vec<u64>>>,
}

impl Entry for Sink {
    type Command = (usize, u64);
    fn on_start(&mut self, _: &mut Context<'_>) -> Status {
        Status::Continue
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
    fn on_command(&mut self, _: &mut Context<'_>, (from, n): (usize, u64)) -> Status {
        self.seen[from].push(n);
        if self.seen.iter().all(|s| s.len() as u64 == self.expect) {
            let _ = self.done.send(std::mem::take(&mut self.seen));
            return Status::Done;
        }
        Status::Continue
    }
}

/// Four threads each send 50,000 numbered commands: all arrive, in each sender's order.
#[test]
fn a_flood_of_commands_arrives_whole_and_in_order_per_sender() {
    let _g = serial();
    watchdog(STEP * 4, || {
        const PER: u64 = 50_000;
        let (tx, rx) = mpsc::channel();
        let (running, to) = Running::spawn(
            "flood",
            Sink {
                seen: vec![Vec::new(); 4],
                expect: PER,
                done: tx,
            },
        );
        let senders: Vec<_> = (0..4)
            .map(|from| {
                let h = running.handle().clone();
                std::thread::spawn(move || {
                    for n in 0..PER {
                        h.send(to, (from, n)).unwrap();
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        let seen = rx.recv_timeout(STEP).expect("all commands arrived");
        for s in seen {
            assert!(s.iter().copied().eq(0..PER), "a sender's order was broken");
        }
        running.stop();
    });
}

struct Slot {
    got: mpsc::Sender<&'static str>,
    name: &'static str,
}

impl Entry for Slot {
    type Command = u32;
    fn on_start(&mut self, _: &mut Context<'_>) -> Status {
        Status::Continue
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
    fn on_command(&mut self, _: &mut Context<'_>, n: u32) -> Status {
        let _ = self.got.send(self.name);
        if n == 0 {
            Status::Done
        } else {
            Status::Continue
        }
    }
}

/// A command to an entry that ended, whose slab slot a new entry took, never reaches the
/// new entry.
#[test]
fn a_command_to_an_ended_entry_never_reaches_the_slots_next_tenant() {
    let _g = serial();
    watchdog(STEP, || {
        let (tx, rx) = mpsc::channel();
        let (running, old) = Running::spawn(
            "slot-reuse",
            Slot {
                got: tx.clone(),
                name: "old",
            },
        );
        running.handle().send(old, 0u32).unwrap(); // it ends
        assert_eq!(rx.recv_timeout(STEP).unwrap(), "old");
        let new = running.run_on(move |s| {
            s.spawn(Slot {
                got: tx,
                name: "new",
            })
        });
        assert_eq!(new.id().token(), old.id().token(), "the slot was reused");
        running.handle().send(old, 1u32).unwrap();
        running.handle().send(new, 1u32).unwrap();
        assert_eq!(rx.recv_timeout(STEP).unwrap(), "new");
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// Accept burst
// ---------------------------------------------------------------------------------------

/// 2,000 connections dialled at once at a listener with a 1,024 backlog: every one is
/// accepted and opens a session.
#[test]
fn an_accept_burst_past_the_backlog_is_all_served() {
    let _g = serial();
    watchdog(STEP * 6, || {
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((RawCodec, Quiet { counts: c.clone() }))
        })
        .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("burst", server);
        let dialers: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..250)
                        .map(|_| {
                            let s = socket2::Socket::new(
                                socket2::Domain::IPV4,
                                socket2::Type::STREAM,
                                None,
                            )
                            .unwrap();
                            s.set_nonblocking(true).unwrap();
                            match s.connect(&addr.into()) {
                                Ok(()) => {}
                                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                                Err(e) => panic!("connect: {e}"),
                            }
                            s
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let socks: Vec<_> = dialers
            .into_iter()
            .flat_map(|d| d.join().unwrap())
            .collect();
        wait_for("2000 opens", || {
            counts.opened.load(Ordering::SeqCst) == 2000
        });
        drop(socks);
        wait_for("2000 closes", || {
            counts.closed.load(Ordering::SeqCst) == 2000
        });
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// Graceful shutdown of sessions in other states
// ---------------------------------------------------------------------------------------

/// Reads until EOF or reset (at most `STEP` per read); returns what came and how it ended.
fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, Option<ErrorKind>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Some(e.kind())),
        }
    }
}

const LONG_GRACE: Duration = Duration::from_secs(60);

/// A WebSocket session hears a graceful shutdown: the peer gets a close frame (1001, going
/// away) and, once it answers with its own, EOF; on_close runs once; the reactor ends
/// without waiting out its grace. A peer mid-upgrade (half a request) does not hold it.
#[test]
fn graceful_shutdown_sends_websocket_close_frames() {
    let _g = serial();
    watchdog(STEP * 4, || {
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let server = getty::ws::WsServer::builder()
            .route("/echo", move |_| {
                Ok((RawCodec, Quiet { counts: c.clone() }))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("ws-graceful", server);
        let mut ws = connect(addr);
        ws_upgrade(&mut ws);
        let mut half = connect(addr);
        half.write_all(b"GET /echo HTTP/1.1\r\nHost: loc").unwrap();
        wait_for("the ws open", || counts.opened.load(Ordering::SeqCst) == 1);
        let began = Instant::now();
        running.handle().shutdown_graceful(LONG_GRACE).unwrap();
        let mut head = [0u8; 4];
        ws.read_exact(&mut head).expect("a close frame");
        assert_eq!(head, [0x88, 2, 0x03, 0xE9], "a close frame with 1001");
        // Our close frame back (masked with key 0).
        ws.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE9]).unwrap();
        let (rest, how) = read_to_end(&mut ws);
        assert!(
            rest.is_empty() && how.is_none(),
            "EOF after the close frame"
        );
        let (_, _) = read_to_end(&mut half);
        running.join(STEP);
        let took = began.elapsed();
        println!("ws graceful shutdown took {took:?}");
        assert!(took < LONG_GRACE / 2, "the reactor waited out its grace");
        assert_eq!(counts.closed.load(Ordering::SeqCst), 1);
    });
}

/// A TLS session whose peer connected and never said hello: a graceful shutdown with a
/// long grace ends it (without waiting for the grace or a handshake that never comes)
/// and its handler hears on_close once.
#[test]
fn graceful_shutdown_ends_sessions_mid_tls_handshake() {
    let _g = serial();
    watchdog(STEP * 6, || {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let server = TcpServer::builder()
            .tls(getty::tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
            .bind("127.0.0.1:0", move |_| {
                Ok((RawCodec, Quiet { counts: c.clone() }))
            })
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("tls-graceful", server);
        let mut silent = connect(addr);
        let mut partial = connect(addr);
        partial
            .write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01])
            .unwrap();
        wait_for("2 opens", || counts.opened.load(Ordering::SeqCst) == 2);
        let began = Instant::now();
        running.handle().shutdown_graceful(LONG_GRACE).unwrap();
        let _ = read_to_end(&mut silent);
        let _ = read_to_end(&mut partial);
        running.join(LONG_GRACE + STEP);
        let took = began.elapsed();
        println!("tls mid-handshake graceful shutdown took {took:?}");
        assert!(
            took < LONG_GRACE / 2,
            "peers that never finish their handshake held the shutdown for {took:?}"
        );
        assert_eq!(
            counts.closed.load(Ordering::SeqCst),
            2,
            "on_close once each"
        );
    });
}

/// A client keeping 4 sessions to a server on another reactor: a graceful shutdown of the
/// client's reactor closes its sessions, dials nothing more, and ends.
#[test]
fn graceful_shutdown_of_a_client_redials_nothing() {
    let _g = serial();
    watchdog(STEP * 4, || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let client = getty::tcp::TcpClient::builder()
            .connection_number(4)
            .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(2))
            .build(listener.local_addr().unwrap(), move |_| {
                Ok((RawCodec, Quiet { counts: c.clone() }))
            })
            .unwrap();
        let running = Running::serve("client-graceful", client);
        let mut accepted = Vec::new();
        wait_for("4 dials", || {
            if let Ok((s, _)) = listener.accept() {
                accepted.push(s);
            }
            accepted.len() == 4
        });
        wait_for("4 opens", || counts.opened.load(Ordering::SeqCst) == 4);
        running.handle().shutdown_graceful(LONG_GRACE).unwrap();
        for s in &mut accepted {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(STEP)).unwrap();
            let (_, how) = read_to_end(s);
            assert!(how.is_none(), "a FIN, not {how:?}");
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        running.join(STEP);
        let mut late = 0;
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            if listener.accept().is_ok() {
                late += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(late, 0, "the client redialled while shutting down");
        assert_eq!(counts.closed.load(Ordering::SeqCst), 4);
    });
}

// ---------------------------------------------------------------------------------------
// The clock of entries spawned before the loop runs
// ---------------------------------------------------------------------------------------

/// Arms a timer for `delay` in `on_start` and reports how long after its spawn it fired.
struct Delayed {
    delay: Duration,
    spawned: Instant,
    fired: mpsc::Sender<Duration>,
}

impl Entry for Delayed {
    type Command = getty::reactor::NoCommand;
    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        cx.set_timer(self.delay, 0);
        Status::Continue
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, _: u64) -> Status {
        let _ = self.fired.send(self.spawned.elapsed());
        cx.handle().shutdown();
        Status::Done
    }
}

/// An entry spawned with `Reactor::spawn` a while after the reactor was built (a slow
/// `start_thread` setup: certificates read, names resolved) arms a 1 s timer in its
/// `on_start`: it must not fire before 1 s has passed. It used to fire at the loop's first
/// turn, as the deadline was counted from the clock read when the reactor was built.
#[test]
fn a_timer_armed_before_the_loop_runs_does_not_fire_early() {
    let _g = serial();
    watchdog(STEP, || {
        let (tx, rx) = mpsc::channel();
        let thread = getty::Reactor::start_thread("stale-clock", move |reactor| {
            std::thread::sleep(Duration::from_millis(1500)); // a slow setup
            reactor.spawn(Delayed {
                delay: Duration::from_secs(1),
                spawned: Instant::now(),
                fired: tx,
            });
            Ok(())
        })
        .unwrap();
        let after = rx.recv_timeout(STEP).expect("the timer fired");
        let _ = thread.join();
        println!("a 1 s timer armed at spawn fired after {after:?}");
        assert!(
            after >= Duration::from_secs(1),
            "a 1 s timer fired {after:?} after it was armed"
        );
    });
}

/// TLS sessions with a 4 MiB backlog each, whose peers read: a graceful shutdown sends the
/// whole backlog, then close_notify, then EOF; on_close once each.
#[test]
fn graceful_shutdown_flushes_tls_backlogs_with_close_notify() {
    let _g = serial();
    watchdog(STEP * 4, || {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let server = TcpServer::builder()
            .tls(getty::tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
            .session_options(SessionOptions::default().max_outbound(2 * BACKLOG))
            .bind("127.0.0.1:0", move |_| {
                Ok((RawCodec, Pusher { counts: c.clone() }))
            })
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("tls-backlog", server);
        let config = getty::tls::client_config(chain.as_bytes()).unwrap();
        let mut peers = Vec::new();
        for _ in 0..3 {
            let mut p = connect(addr);
            let mut client =
                getty::codec::filter::TlsFilter::client(config.clone(), "localhost").unwrap();
            let (plain, wire_in) = tls_exchange(&mut p, &mut client, b"", 1);
            peers.push((p, client, plain.len(), wire_in));
        }
        wait_for("3 opens", || counts.opened.load(Ordering::SeqCst) == 3);
        running
            .handle()
            .shutdown_graceful(Duration::from_secs(10))
            .unwrap();
        let readers: Vec<_> = peers
            .into_iter()
            .map(|(mut p, mut client, before, wire_in)| {
                std::thread::spawn(move || {
                    use getty::codec::filter::Filter;
                    let mut wire_in = wire_in;
                    let mut plain = bytes::BytesMut::new();
                    client.decode(&mut wire_in, &mut plain, 1 << 30).unwrap();
                    let (rest, notified) = tls_read_to_end(&mut p, &mut client);
                    (before + plain.len() + rest.len(), notified)
                })
            })
            .collect();
        for r in readers {
            let (got, notified) = r.join().unwrap();
            println!("tls reader: {got} bytes, close_notify {notified}");
            assert_eq!(got, BACKLOG, "a TLS reader got its whole backlog");
            assert!(notified, "close_notify after the backlog");
        }
        running.join(STEP);
        assert_eq!(counts.closed.load(Ordering::SeqCst), 3);
    });
}

// ---------------------------------------------------------------------------------------
// Timers changed in their own callbacks
// ---------------------------------------------------------------------------------------

/// Ticks at 50 ms, changes its period to 150 ms at the first tick, and turns the cron off
/// (and the idle timeout it had) at the third; reports each tick's time since open.
struct Retimed {
    opened: Option<Instant>,
    ticks: mpsc::Sender<Duration>,
    n: u32,
}

impl Handler<RawCodec> for Retimed {
    fn on_open(&mut self, s: &mut Session<RawCodec>) -> std::io::Result<()> {
        self.opened = Some(Instant::now());
        s.set_cron_period(Some(Duration::from_millis(50)));
        s.set_read_idle_timeout(Some(Duration::from_millis(400)));
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {}
    fn on_cron(&mut self, s: &mut Session<RawCodec>) {
        self.n += 1;
        let _ = self.ticks.send(self.opened.unwrap().elapsed());
        match self.n {
            1 => s.set_cron_period(Some(Duration::from_millis(150))),
            3 => {
                s.set_cron_period(None);
                s.set_read_idle_timeout(None);
            }
            _ => {}
        }
    }
    fn on_error(&mut self, _: &mut Session<RawCodec>, e: &Error) {
        panic!("no error expected: {e}");
    }
}

/// A cron re-armed with a new period in its own callback ticks at the new period; a cron
/// and an idle timeout turned off in a callback never fire again.
#[test]
fn timers_changed_in_their_own_callback_take_effect() {
    let _g = serial();
    watchdog(STEP * 2, || {
        let (tx, rx) = mpsc::channel();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((
                RawCodec,
                Retimed {
                    opened: None,
                    ticks: tx.clone(),
                    n: 0,
                },
            ))
        })
        .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("retimed", server);
        let mut peer = connect(addr);
        let ticks: Vec<Duration> = (0..3)
            .map(|_| rx.recv_timeout(STEP).expect("a tick"))
            .collect();
        println!("ticks at {ticks:?}");
        assert!(
            ticks[1] - ticks[0] >= Duration::from_millis(150),
            "{ticks:?}"
        );
        // The cron runs at a fixed rate from its first tick at the new period: two ticks as
        // the handler sees them can be closer than the period by the first one's wake-up
        // latency (149.55 ms in one loaded CI run), never by a whole 50 ms period.
        assert!(
            ticks[2] - ticks[1] >= Duration::from_millis(140),
            "{ticks:?}"
        );
        assert!(
            rx.recv_timeout(Duration::from_millis(800)).is_err(),
            "a tick after the cron was turned off"
        );
        // The idle timeout (400 ms) was turned off too: the session is still open.
        peer.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 1];
        let still_open = matches!(peer.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut);
        assert!(
            still_open,
            "the session ended after its idle timeout was turned off"
        );
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// Panics everywhere: descriptors and bystanders
// ---------------------------------------------------------------------------------------

/// Echoes; panics in on_open for every third connection, in on_message on "m", in on_close
/// after "c" (which closes), in on_cron after "t" (which starts a cron).
struct Bomb {
    counts: Arc<Counts>,
    close_bomb: bool,
    refuse: bool,
}

impl Handler<RawCodec> for Bomb {
    fn on_open(&mut self, _: &mut Session<RawCodec>) -> std::io::Result<()> {
        if self.refuse {
            panic!("on_open panicked on purpose");
        }
        self.counts.opened.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<RawCodec>, m: Bytes) {
        match &m[..] {
            b"m" => panic!("on_message panicked on purpose"),
            b"c" => {
                self.close_bomb = true;
                s.close();
            }
            b"t" => s.set_cron_period(Some(Duration::from_millis(10))),
            _ => {
                let _ = s.write_bytes(m);
            }
        }
    }
    fn on_cron(&mut self, _: &mut Session<RawCodec>) {
        panic!("on_cron panicked on purpose");
    }
    fn on_close(&mut self, _: &mut Session<RawCodec>) {
        self.counts.closed.fetch_add(1, Ordering::SeqCst);
        if self.close_bomb {
            panic!("on_close panicked on purpose");
        }
    }
}

/// Sessions ended by panics in every callback, and jobs that panic: the descriptor count
/// of the process returns to its baseline, every opened session hears on_close once, and a
/// bystander session still echoes.
#[test]
fn panics_in_every_callback_leave_no_descriptor_behind() {
    let _g = serial();
    watchdog(STEP * 4, || {
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            let n = accepted.fetch_add(1, Ordering::SeqCst);
            Ok((
                RawCodec,
                Bomb {
                    counts: c.clone(),
                    close_bomb: false,
                    refuse: n > 0 && n % 3 == 0,
                },
            ))
        })
        .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("bombs", server);
        let mut bystander = connect(addr); // connection 0: never refused
        wait_for("the bystander", || {
            counts.opened.load(Ordering::SeqCst) == 1
        });
        let baseline = open_fds();
        for round in 1..=30usize {
            let refused = round % 3 == 0; // the accept count is the round: 0 was the bystander
            let mut p = match TcpStream::connect_timeout(&addr, STEP) {
                Ok(p) => p,
                // A refused connection is reset as soon as it is accepted, which can be
                // before this end sees its connect complete.
                Err(e) if refused && e.kind() == ErrorKind::ConnectionReset => {
                    post_a_panicking_job(&running);
                    continue;
                }
                Err(e) => panic!("connect in round {round}: {e}"),
            };
            p.set_read_timeout(Some(STEP)).unwrap();
            if !refused {
                let what: &[u8] = [b"m".as_slice(), b"c", b"t"][(round / 3) % 3];
                p.write_all(what).unwrap();
            }
            let _ = read_to_end(&mut p); // the server ends it, one way or another
            post_a_panicking_job(&running);
        }
        let opened = counts.opened.load(Ordering::SeqCst);
        wait_for("every on_close", || {
            counts.closed.load(Ordering::SeqCst) == opened - 1
        });
        std::thread::sleep(Duration::from_millis(200));
        let now = open_fds();
        assert!(now <= baseline, "descriptors leaked: {baseline} -> {now}");
        assert_eq!(
            running.entry_count(),
            2,
            "the server and the bystander are left"
        );
        bystander.write_all(b"alive").unwrap();
        let mut buf = [0u8; 5];
        bystander.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"alive");
        running.stop();
        assert_eq!(counts.closed.load(Ordering::SeqCst), opened);
    });
}

fn post_a_panicking_job(running: &Running) {
    running
        .handle()
        .execute(|_| panic!("a posted job panicked on purpose"))
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// A reactor run and dropped on a thread that lives on
// ---------------------------------------------------------------------------------------

/// A long-lived thread that builds, runs and drops reactors gets all their descriptors
/// back: the poll and its waker. The thread's "current reactor" used to keep the last
/// one's waker (an eventfd) open for as long as the thread lived.
#[test]
fn a_dropped_reactor_leaves_no_descriptor_on_its_thread() {
    let _g = serial();
    watchdog(STEP, || {
        let baseline = open_fds();
        for _ in 0..3 {
            let mut reactor = getty::Reactor::new().unwrap();
            reactor.handle().shutdown();
            reactor.run().unwrap();
            drop(reactor);
        }
        let now = open_fds();
        assert_eq!(now, baseline, "descriptors left by dropped reactors");
    });
}

/// A WebSocket peer that never answers the close frame a graceful shutdown sends (and
/// never closes its socket) holds the reactor no longer than a lingering close would.
#[test]
fn a_websocket_peer_that_never_answers_the_close_frame_does_not_hold_the_shutdown() {
    let _g = serial();
    watchdog(STEP * 6, || {
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let server = getty::ws::WsServer::builder()
            .route("/echo", move |_| {
                Ok((RawCodec, Quiet { counts: c.clone() }))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("ws-silent", server);
        let mut ws = connect(addr);
        ws_upgrade(&mut ws);
        wait_for("the ws open", || counts.opened.load(Ordering::SeqCst) == 1);
        let began = Instant::now();
        running.handle().shutdown_graceful(LONG_GRACE).unwrap();
        let mut head = [0u8; 4];
        ws.read_exact(&mut head).expect("a close frame");
        assert_eq!(head, [0x88, 2, 0x03, 0xE9], "a close frame with 1001");
        running.join(LONG_GRACE + STEP);
        let took = began.elapsed();
        println!("ws graceful shutdown with a silent peer took {took:?}");
        assert!(
            took < LONG_GRACE / 2,
            "a silent WebSocket peer held the shutdown for {took:?}"
        );
        assert_eq!(counts.closed.load(Ordering::SeqCst), 1);
        drop(ws);
    });
}

// ---------------------------------------------------------------------------------------
// A pool whose reactor ends early
// ---------------------------------------------------------------------------------------

/// A TCP server on two reactors; one of them is shut down on its own: its sessions end,
/// and every new connection is served by the other.
#[test]
fn a_pool_reactor_that_ends_early_leaves_the_others_serving() {
    let _g = serial();
    watchdog(STEP * 4, || {
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let pool = TcpServer::builder()
            .start_pool(2, "127.0.0.1:0", move |_| {
                let c = c.clone();
                move |_: &mut getty::tcp::Setup<'_>| {
                    Ok((RawCodec, DropBombless { counts: c.clone() }))
                }
            })
            .unwrap();
        let addr = pool.local_addr();
        let handles = pool.reactors().handles();
        handles[0].shutdown();
        let deadline = Instant::now() + STEP;
        while !handles[0].is_stopped() {
            assert!(Instant::now() < deadline, "reactor 0 did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
        for i in 0..50u8 {
            let mut p = connect(addr);
            p.write_all(&[i]).unwrap();
            let mut b = [0u8; 1];
            p.read_exact(&mut b).expect("served by the reactor left");
            assert_eq!(b[0], i);
        }
        pool.shutdown();
        pool.join().unwrap();
    });
}

struct DropBombless {
    counts: Arc<Counts>,
}

impl Handler<RawCodec> for DropBombless {
    fn on_open(&mut self, _: &mut Session<RawCodec>) -> std::io::Result<()> {
        self.counts.opened.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<RawCodec>, m: Bytes) {
        let _ = s.write_bytes(m);
    }
}

/// Eight threads query a reactor in a loop while it is shut down: every query is answered
/// or fails with NotConnected; none hangs.
#[test]
fn queries_in_flight_at_a_hard_shutdown_never_hang() {
    let _g = serial();
    watchdog(STEP * 2, || {
        let thread = getty::Reactor::start_thread("queried", |_| Ok(())).unwrap();
        let askers: Vec<_> = (0..8)
            .map(|_| {
                let h = thread.handle().clone();
                std::thread::spawn(move || {
                    for n in 0..1_000_000u64 {
                        match h.query(move |_| n) {
                            Ok(m) => assert_eq!(m, n),
                            Err(e) => {
                                assert_eq!(e.kind(), ErrorKind::NotConnected, "{e}");
                                return n;
                            }
                        }
                    }
                    panic!("the reactor never stopped");
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        thread.handle().shutdown();
        thread.join().unwrap();
        for a in askers {
            let answered = a.join().expect("an asker panicked");
            assert!(answered > 0);
        }
    });
}

// ---------------------------------------------------------------------------------------
// Read-idle timeouts that move with traffic, at scale
// ---------------------------------------------------------------------------------------

struct IdleWatch {
    last: Option<Instant>,
    report: mpsc::Sender<(u64, Duration)>,
    closed: Arc<Counts>,
}

impl Handler<RawCodec> for IdleWatch {
    fn on_open(&mut self, _: &mut Session<RawCodec>) -> std::io::Result<()> {
        self.last = Some(Instant::now());
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {
        self.last = Some(Instant::now());
    }
    fn on_error(&mut self, s: &mut Session<RawCodec>, e: &Error) {
        assert!(matches!(e, Error::ReadIdle(_)), "unexpected {e}");
        let _ = self.report.send((s.id(), self.last.unwrap().elapsed()));
    }
    fn on_close(&mut self, _: &mut Session<RawCodec>) {
        self.closed.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// 2,000 sessions with a 1 s read-idle timeout; half of them hear a byte every 300 ms for
/// 1.5 s, then silence. Every session ends on ReadIdle exactly once, and none after much
/// less than a second of silence: the loop reads its clock once per turn, so a read is
/// stamped with its turn's start and the timeout may come a turn's length early (about
/// 30 ms here with a thousand reads a turn); a deadline that did not move with traffic
/// would come 700 ms early or more.
#[test]
fn read_idle_timeouts_moved_by_traffic_never_fire_early() {
    let _g = serial();
    watchdog(STEP * 4, || {
        const N: usize = 2000;
        let counts = Arc::new(Counts::default());
        let (tx, rx) = mpsc::channel();
        let c = counts.clone();
        let server = TcpServer::builder()
            .session_options(
                SessionOptions::default().read_idle_timeout(Some(Duration::from_secs(1))),
            )
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    RawCodec,
                    IdleWatch {
                        last: None,
                        report: tx.clone(),
                        closed: c.clone(),
                    },
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("idle-moves", server);
        let mut peers: Vec<TcpStream> = (0..N).map(|_| connect(addr)).collect();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(300));
            for p in peers.iter_mut().step_by(2) {
                let _ = p.write_all(b"x");
            }
        }
        wait_for("every session to end", || {
            counts.closed.load(Ordering::SeqCst) == N
        });
        let reports: Vec<(u64, Duration)> = rx.try_iter().collect();
        assert_eq!(reports.len(), N, "ReadIdle once each");
        let mut ids: Vec<u64> = reports.iter().map(|r| r.0).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), N, "ReadIdle once each");
        let earliest = reports.iter().map(|r| r.1).min().unwrap();
        let latest = reports.iter().map(|r| r.1).max().unwrap();
        println!("read-idle after {earliest:?} .. {latest:?} of silence");
        assert!(
            earliest >= Duration::from_millis(500),
            "a read-idle timeout fired after {earliest:?} of silence"
        );
        drop(peers);
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// A hard shutdown of a session whose reply is all in the kernel
// ---------------------------------------------------------------------------------------

const REPLY: usize = 1 << 20;

/// On "big": replies 1 MiB and stops reading (what the peer sends next stays unread).
struct BigThenPause {
    flushed: Arc<Counts>,
}

impl Handler<RawCodec> for BigThenPause {
    fn on_message(&mut self, s: &mut Session<RawCodec>, m: Bytes) {
        if &m[..] == b"big" {
            s.write_bytes(Bytes::from(vec![5u8; REPLY])).unwrap();
            s.pause_reading();
        }
    }
    fn on_writability_changed(&mut self, _: &mut Session<RawCodec>, _: bool) {}
    fn on_close(&mut self, _: &mut Session<RawCodec>) {
        self.flushed.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// A session whose whole reply went into the kernel (nothing left queued), its peer slow to
/// read and with a few bytes the session has not read yet, is stopped by a hard shutdown:
/// as nothing is left unsent the session closes without a reset (the code says so), so
/// the peer must get the whole reply, then EOF. Closing a socket with unread input makes
/// the kernel reset instead, dropping what it had yet to send: the peer got a fraction of
/// the reply (127 KiB of 1 MiB), then ECONNRESET. Without the 6 unread bytes the same
/// test got the whole reply and EOF.
#[test]
fn a_hard_shutdown_after_a_full_flush_does_not_reset_over_unread_input() {
    let _g = serial();
    watchdog(STEP * 2, || {
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let server = TcpServer::builder()
            .socket_options(getty::SocketOptions::default().send_buffer_size(Some(4 << 20)))
            .bind("127.0.0.1:0", move |_| {
                Ok((RawCodec, BigThenPause { flushed: c.clone() }))
            })
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("hard-unread", server);
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut peer: TcpStream = socket.into();
        peer.set_read_timeout(Some(STEP)).unwrap();
        peer.write_all(b"big").unwrap();
        // The reply is written (into the kernel: 4 MiB of send buffer) and reading paused.
        std::thread::sleep(Duration::from_millis(300));
        running.run_on(|_| ()); // a barrier: the reactor is idle
        assert_eq!(counts.closed.load(Ordering::SeqCst), 0);
        peer.write_all(b"unread").unwrap(); // input the paused session never reads
        std::thread::sleep(Duration::from_millis(200));
        running.stop(); // hard
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        let ended = loop {
            match peer.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => got += n,
                Err(e) => break Some(e.kind()),
            }
        };
        println!("after a hard shutdown the peer got {got} of {REPLY} bytes, then {ended:?}");
        assert_eq!(counts.closed.load(Ordering::SeqCst), 1);
        assert_eq!((got, ended), (REPLY, None), "the whole reply, then EOF");
    });
}

// ---------------------------------------------------------------------------------------
// A recipient used on another reactor
// ---------------------------------------------------------------------------------------

/// Two reactors each spawn one entry of the same type, at the same slab key. A command sent
/// to reactor A's entry through reactor B's handle (a pool user mixing up handles) must not
/// reach B's unrelated entry: the documentation says a command never reaches another
/// entry. Before serials were drawn from one counter for the process, both ids were (key 0,
/// serial 0) and it did.
#[test]
fn a_recipient_from_one_reactor_never_reaches_an_entry_of_another() {
    let _g = serial();
    watchdog(STEP, || {
        let (tx, rx) = mpsc::channel();
        let (a, on_a) = Running::spawn(
            "recipient-a",
            Slot {
                got: tx.clone(),
                name: "a",
            },
        );
        let (b, on_b) = Running::spawn("recipient-b", Slot { got: tx, name: "b" });
        println!("ids: {:?} on A, {:?} on B", on_a.id(), on_b.id());
        b.handle().send(on_a, 1u32).unwrap(); // A's recipient, B's handle
        let reached = rx.recv_timeout(Duration::from_millis(500)).ok();
        a.stop();
        b.stop();
        assert_eq!(reached, None, "a command for A's entry reached B's entry");
    });
}
