//! Shared helpers for the integration tests: reactors on their own threads that are always
//! stopped, handlers that report what happens to the test thread, blocking loopback clients
//! with timeouts, and a watchdog so that no test can hang.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use getty::codec::{Bytes, CodecErrorKind, Decoder, Encoder};
use getty::reactor::{Entry, ReactorThread, Recipient, Spawner};
use getty::{Error, Handler, Reactor, ReactorHandle, Session, Transport};

mod datagram;
#[allow(unused_imports)] // each test binary uses a different subset
pub use datagram::*;

/// The longest any single expected thing (an event, a read, a reactor stopping) may take.
/// Generous on purpose: it only bounds a failing test, it is never a speed requirement.
pub const STEP: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// Watchdog and test isolation
// ---------------------------------------------------------------------------------------

/// Runs `body` on its own thread and fails the test if it has not finished within `limit`
/// (a hung test fails instead of hanging the suite). A panic in `body` is re-raised here.
pub fn watchdog<F: FnOnce() + Send + 'static>(limit: Duration, body: F) {
    let (done_tx, done_rx) = mpsc::channel();
    let name = std::thread::current().name().unwrap_or("test").to_owned();
    let body_thread = std::thread::Builder::new()
        .name(format!("{name}-body"))
        .spawn(move || {
            body();
            let _ = done_tx.send(());
        })
        .expect("spawn the test body");
    match done_rx.recv_timeout(limit) {
        Ok(()) => body_thread.join().expect("body finished"),
        Err(RecvTimeoutError::Disconnected) => {
            // The body panicked; re-raise its panic with its message.
            if let Err(panic) = body_thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("watchdog: the test did not finish within {limit:?}")
        }
    }
}

static GATE: RwLock<()> = RwLock::new(());

/// Taken by the tests with loose timing expectations (cron, idle timeouts): they run
/// alongside each other but never alongside the bulk traffic test, which can starve a
/// 2-core machine for long stretches.
pub fn shared_gate() -> RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(|poison| poison.into_inner())
}

/// Taken by the bulk traffic test.
pub fn exclusive_gate() -> RwLockWriteGuard<'static, ()> {
    GATE.write().unwrap_or_else(|poison| poison.into_inner())
}

// ---------------------------------------------------------------------------------------
// Reactors on threads
// ---------------------------------------------------------------------------------------

/// A reactor on its own thread that is shut down when dropped (so a failing test does not
/// leave it running), and stopped with a deadline by [`Running::stop`].
pub struct Running {
    thread: Option<ReactorThread>,
    handle: ReactorHandle,
}

impl Running {
    /// Starts a reactor thread that spawns `entry` (a server or client) and returns its
    /// address.
    pub fn spawn<E: Entry + Send>(name: &str, entry: E) -> (Running, Recipient<E::Command>) {
        let (id_tx, id_rx) = mpsc::channel();
        let thread = Reactor::start_thread(name, move |reactor| {
            let id = reactor.spawn(entry);
            id_tx.send(id).map_err(io::Error::other)
        })
        .expect("start the reactor thread");
        let id = id_rx.recv_timeout(STEP).expect("the entry's address");
        let handle = thread.handle().clone();
        (
            Running {
                thread: Some(thread),
                handle,
            },
            id,
        )
    }

    /// Starts a reactor thread that runs `entry`.
    pub fn serve<E: Entry + Send>(name: &str, entry: E) -> Running {
        Running::spawn(name, entry).0
    }

    pub fn handle(&self) -> &ReactorHandle {
        &self.handle
    }

    /// Runs `job` on the reactor thread and waits for its result. Doubles as a barrier:
    /// everything the reactor was doing before the job has finished when this returns.
    pub fn run_on<T, F>(&self, job: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Spawner<'_>) -> T + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.handle
            .execute(move |spawner| {
                let _ = tx.send(job(spawner));
            })
            .expect("the reactor is running");
        rx.recv_timeout(STEP)
            .expect("the reactor ran the job in time")
    }

    /// Entries alive on the reactor.
    pub fn entry_count(&self) -> usize {
        self.run_on(|s| s.entry_count())
    }

    /// Waits (at most `STEP`) until no entry is left on the reactor, as when a client gave
    /// up or was closed; past that, fails with `failure`.
    pub fn wait_until_empty(&self, failure: &str) {
        let deadline = Instant::now() + STEP;
        while self.entry_count() > 0 {
            assert!(Instant::now() < deadline, "{failure}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Shuts the reactor down now and waits (with a deadline) for its thread to end.
    pub fn stop(mut self) {
        self.handle.shutdown();
        join_within(self.thread.take().expect("running"), STEP);
    }

    /// Waits (with a deadline) for the reactor's thread to end, after a shutdown was asked
    /// for through its handle.
    pub fn join(mut self, limit: Duration) {
        join_within(self.thread.take().expect("running"), limit);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // Only reached when a test failed part-way: stop the reactor, do not wait.
            self.handle.shutdown();
        }
    }
}

fn join_within(thread: ReactorThread, limit: Duration) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(thread.join().map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the reactor failed: {e}"),
        Err(_) => panic!("the reactor did not stop within {limit:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Events reported by handlers
// ---------------------------------------------------------------------------------------

/// An [`Error`] reduced to what tests compare (`Error` holds an `io::Error`, so it is not
/// `Clone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrKind {
    Io(io::ErrorKind),
    Codec(CodecErrorKind),
    MessageTooLong {
        len: usize,
        max: usize,
    },
    CodecConsumedNothing,
    UnexpectedEof {
        buffered: usize,
    },
    ReadIdle(Duration),
    WriteStalled(Duration),
    ConnectTimeout(Duration),
    QueueFull {
        queued: usize,
        adding: usize,
        max: usize,
    },
    Closed,
    Other(String),
}

pub fn classify(error: &Error) -> ErrKind {
    match error {
        Error::Io(e) => ErrKind::Io(e.kind()),
        Error::Codec(e) => ErrKind::Codec(e.kind()),
        Error::MessageTooLong { len, max } => ErrKind::MessageTooLong {
            len: *len,
            max: *max,
        },
        Error::CodecConsumedNothing => ErrKind::CodecConsumedNothing,
        Error::UnexpectedEof { buffered } => ErrKind::UnexpectedEof {
            buffered: *buffered,
        },
        Error::ReadIdle(d) => ErrKind::ReadIdle(*d),
        Error::WriteStalled(d) => ErrKind::WriteStalled(*d),
        Error::ConnectTimeout(d) => ErrKind::ConnectTimeout(*d),
        Error::QueueFull {
            queued,
            adding,
            max,
        } => ErrKind::QueueFull {
            queued: *queued,
            adding: *adding,
            max: *max,
        },
        Error::Closed => ErrKind::Closed,
        other => ErrKind::Other(other.to_string()),
    }
}

/// What a handler saw, tagged with the session id.
#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Open {
        sid: u64,
        peer: SocketAddr,
    },
    /// `on_open` was called and refused the session.
    Rejected {
        sid: u64,
        peer: SocketAddr,
    },
    Msg {
        sid: u64,
        msg: Bytes,
    },
    Error {
        sid: u64,
        err: ErrKind,
    },
    Close {
        sid: u64,
    },
    Writable {
        sid: u64,
        writable: bool,
    },
    Cron {
        sid: u64,
    },
    /// Anything else a test handler wants to say.
    Note {
        sid: u64,
        what: String,
    },
}

impl Ev {
    pub fn sid(&self) -> u64 {
        match self {
            Ev::Open { sid, .. }
            | Ev::Rejected { sid, .. }
            | Ev::Msg { sid, .. }
            | Ev::Error { sid, .. }
            | Ev::Close { sid }
            | Ev::Writable { sid, .. }
            | Ev::Cron { sid }
            | Ev::Note { sid, .. } => *sid,
        }
    }
}

/// Receives the events of one test's handlers and keeps all of them, in order.
pub struct Events {
    rx: Receiver<Ev>,
    pub all: Vec<Ev>,
}

impl Events {
    pub fn new() -> (Sender<Ev>, Events) {
        let (tx, rx) = mpsc::channel();
        (
            tx,
            Events {
                rx,
                all: Vec::new(),
            },
        )
    }

    /// Takes in whatever has arrived.
    pub fn pump(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            self.all.push(ev);
        }
    }

    /// Waits until at least `n` of the events seen so far match `pred`, and returns them.
    pub fn wait_n(&mut self, what: &str, n: usize, mut pred: impl FnMut(&Ev) -> bool) -> Vec<Ev> {
        let deadline = Instant::now() + STEP;
        loop {
            self.pump();
            let found: Vec<Ev> = self.all.iter().filter(|e| pred(e)).cloned().collect();
            if found.len() >= n {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(ev) => self.all.push(ev),
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => panic!(
                    "timed out waiting for {n} x {what} (have {}); events so far: {:#?}",
                    found.len(),
                    self.all
                ),
            }
        }
    }

    /// Waits for one event matching `pred` and returns the first such event.
    pub fn wait(&mut self, what: &str, pred: impl FnMut(&Ev) -> bool) -> Ev {
        self.wait_n(what, 1, pred).remove(0)
    }

    /// Waits for the `Open` of the session whose peer is `peer` and returns its id.
    pub fn wait_open(&mut self, peer: SocketAddr) -> u64 {
        self.wait(
            &format!("on_open of {peer}"),
            |e| matches!(e, Ev::Open { peer: p, .. } if *p == peer),
        )
        .sid()
    }

    /// Waits for the `Close` of session `sid`.
    pub fn wait_close(&mut self, sid: u64) {
        self.wait(
            &format!("on_close of session {sid}"),
            |e| matches!(e, Ev::Close { sid: s } if *s == sid),
        );
    }

    pub fn count(&mut self, mut pred: impl FnMut(&Ev) -> bool) -> usize {
        self.pump();
        self.all.iter().filter(|e| pred(e)).count()
    }

    /// The events of one session, in order.
    pub fn of(&mut self, sid: u64) -> Vec<Ev> {
        self.pump();
        self.all
            .iter()
            .filter(|e| e.sid() == sid)
            .cloned()
            .collect()
    }

    /// The errors reported for one session.
    pub fn errors_of(&mut self, sid: u64) -> Vec<ErrKind> {
        self.of(sid)
            .into_iter()
            .filter_map(|e| match e {
                Ev::Error { err, .. } => Some(err),
                _ => None,
            })
            .collect()
    }

    /// Checks the Handler contract for every session seen: `on_open` first; a session
    /// rejected by `on_open` hears nothing else; an opened one hears `on_close` exactly
    /// once and last, and `on_error` at most once, right before `on_close`.
    /// Call it after the reactors have stopped, when no more events can come.
    pub fn check_contract(&mut self) {
        self.pump();
        let mut by_sid: BTreeMap<u64, Vec<&Ev>> = BTreeMap::new();
        for ev in &self.all {
            by_sid.entry(ev.sid()).or_default().push(ev);
        }
        for (sid, evs) in by_sid {
            match evs[0] {
                Ev::Rejected { .. } => {
                    assert_eq!(
                        evs.len(),
                        1,
                        "session {sid} was rejected by on_open, yet heard more: {evs:?}"
                    );
                    continue;
                }
                Ev::Open { .. } => {}
                _ => panic!("session {sid}: first event is not on_open: {evs:?}"),
            }
            let opens = evs.iter().filter(|e| matches!(e, Ev::Open { .. })).count();
            assert_eq!(opens, 1, "session {sid}: on_open {opens} times: {evs:?}");
            let closes = evs.iter().filter(|e| matches!(e, Ev::Close { .. })).count();
            assert_eq!(closes, 1, "session {sid}: on_close {closes} times: {evs:?}");
            assert!(
                matches!(evs.last(), Some(Ev::Close { .. })),
                "session {sid}: on_close is not the last event: {evs:?}"
            );
            let errors: Vec<usize> = evs
                .iter()
                .enumerate()
                .filter(|(_, e)| matches!(e, Ev::Error { .. }))
                .map(|(i, _)| i)
                .collect();
            assert!(
                errors.len() <= 1,
                "session {sid}: on_error {} times: {evs:?}",
                errors.len()
            );
            if let Some(&i) = errors.first() {
                assert_eq!(
                    i,
                    evs.len() - 2,
                    "session {sid}: on_error is not right before on_close: {evs:?}"
                );
            }
        }
    }
}

/// A handler that reports every callback; it echoes messages when `echo` is set.
pub struct Probe {
    pub tx: Sender<Ev>,
    pub echo: bool,
}

impl Probe {
    pub fn echo(tx: &Sender<Ev>) -> Probe {
        Probe {
            tx: tx.clone(),
            echo: true,
        }
    }

    pub fn silent(tx: &Sender<Ev>) -> Probe {
        Probe {
            tx: tx.clone(),
            echo: false,
        }
    }
}

impl<C, T> Handler<C, T> for Probe
where
    C: Decoder<Item = Bytes> + Encoder<Bytes> + 'static,
    T: Transport<Addr = SocketAddr>,
{
    fn on_open(&mut self, s: &mut Session<C, T>) -> io::Result<()> {
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<C, T>, msg: Bytes) {
        let _ = self.tx.send(Ev::Msg {
            sid: s.id(),
            msg: msg.clone(),
        });
        if self.echo {
            if let Err(e) = s.write(msg) {
                let _ = self.tx.send(Ev::Note {
                    sid: s.id(),
                    what: format!("echo failed: {e}"),
                });
            }
        }
    }

    fn on_cron(&mut self, s: &mut Session<C, T>) {
        let _ = self.tx.send(Ev::Cron { sid: s.id() });
    }

    fn on_writability_changed(&mut self, s: &mut Session<C, T>, writable: bool) {
        let _ = self.tx.send(Ev::Writable {
            sid: s.id(),
            writable,
        });
    }

    fn on_error(&mut self, s: &mut Session<C, T>, error: &Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }

    fn on_close(&mut self, s: &mut Session<C, T>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

// ---------------------------------------------------------------------------------------
// Blocking test clients
// ---------------------------------------------------------------------------------------

/// A blocking client socket with read and write timeouts, Nagle off.
pub fn connect(addr: SocketAddr) -> TcpStream {
    try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

pub fn try_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, STEP)?;
    stream.set_read_timeout(Some(STEP))?;
    stream.set_write_timeout(Some(STEP))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects to a server expected to close the connection at once, and waits until it has.
/// The close may come so fast that it is the connect itself that reports the reset.
pub fn connect_expect_closed(addr: SocketAddr) -> Ended {
    match try_connect(addr) {
        Ok(mut stream) => {
            // A write may race with the close; the read below tells how it ended.
            let _ = stream.write_all(&frame(b"anyone there?"));
            expect_closed(&mut stream)
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ended::Reset,
        Err(e) => panic!("connect to {addr}: {e}"),
    }
}

/// A frame of the default `LengthFieldCodec`: 4-byte big-endian length, then the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads one length-prefixed frame and returns its payload.
pub fn read_frame(r: &mut impl Read) -> Vec<u8> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)
        .unwrap_or_else(|e| panic!("reading a frame header: {e}"));
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    r.read_exact(&mut payload)
        .unwrap_or_else(|e| panic!("reading a {}-byte frame body: {e}", payload.len()));
    payload
}

/// Sends `payload` as one frame and checks the echo.
pub fn echo_roundtrip(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(&frame(payload)).expect("send a frame");
    assert_eq!(read_frame(stream), payload, "echo differs");
}

/// How the peer ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// A FIN: `read` returned 0.
    Eof,
    /// A RST: `read` failed with ECONNRESET (or ECONNABORTED).
    Reset,
}

/// Waits (bounded by the read timeout) until the peer ends the connection; returns how,
/// and the bytes that arrived before the end.
pub fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, Ended) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, Ended::Eof),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return (got, Ended::Reset)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "waiting for the peer to close (after {} bytes): {e}",
                got.len()
            ),
        }
    }
}

/// Waits until the peer ends the connection, and checks it sent nothing before.
pub fn expect_closed(stream: &mut TcpStream) -> Ended {
    let (got, ended) = read_to_end(stream);
    assert!(
        got.is_empty(),
        "expected the connection to close, got {} bytes first",
        got.len()
    );
    ended
}

#[cfg(unix)]
fn set_int_option(stream: &TcpStream, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor and a pointer to a c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
}

/// SO_LINGER {on, 0}: closing the socket then sends a RST.
#[cfg(unix)]
pub fn set_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid descriptor and a pointer to a linger struct of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// Connects to an IPv4 `addr` with SO_RCVBUF set to `bytes` before the handshake (the
/// kernel doubles it and applies its minimum). Shrinking the buffer of an established
/// connection instead makes the kernel drop segments it already advertised room for, and
/// the retransmission timeouts that follow look like write stalls.
#[cfg(target_os = "linux")]
pub fn connect_with_recv_buffer(addr: SocketAddr, bytes: usize) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only: {addr}");
    };
    // SAFETY: plain socket calls on a descriptor this function owns until it is handed to
    // TcpStream (which then closes it); the sockaddr is fully initialised.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        set_int_option(
            &stream,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            bytes as libc::c_int,
        );
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = v4.port().to_be();
        sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
        let rc = libc::connect(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect to {addr}: {}", io::Error::last_os_error());
        stream
    };
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream.set_write_timeout(Some(STEP)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// CPU time used by the calling thread.
#[cfg(target_os = "linux")]
pub fn thread_cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Resident memory of this process, in bytes (the servers under test run in it).
#[cfg(target_os = "linux")]
pub fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages in /proc/self/statm");
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// Upgrades a plain socket to a WebSocket at `/echo` by hand (fixed key) and checks the
/// `101`; no byte past the response head is read.
pub fn ws_upgrade(stream: &mut TcpStream) {
    stream
        .write_all(
            b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("the upgrade response");
        head.push(byte[0]);
        assert!(head.len() < 4096, "an overlong response head");
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

/// Drives the TLS filter `client` over the blocking `peer`: the handshake, `send` (plain
/// bytes, sent once it is done), then reads until at least `want` plain bytes came back
/// (with `want` 0, until the handshake is done). Returns the plain bytes and the wire bytes
/// read but not decoded. Bounded by the socket's read timeout.
#[cfg(feature = "tls")]
pub fn tls_exchange(
    peer: &mut TcpStream,
    client: &mut getty::codec::filter::TlsFilter,
    send: &[u8],
    want: usize,
) -> (bytes::BytesMut, bytes::BytesMut) {
    use getty::codec::filter::Filter;
    let mut wire_out = bytes::BytesMut::new();
    let mut wire_in = bytes::BytesMut::new();
    let mut plain = bytes::BytesMut::new();
    client
        .encode(send, &mut wire_out)
        .expect("queue the plain bytes");
    let mut chunk = [0u8; 16 * 1024];
    while client.is_handshaking() || plain.len() < want {
        client.flush(&mut wire_out).unwrap();
        peer.write_all(&wire_out).unwrap();
        wire_out.clear();
        let n = peer.read(&mut chunk).expect("read from the TLS server");
        assert!(n > 0, "the server closed after {} plain bytes", plain.len());
        wire_in.extend_from_slice(&chunk[..n]);
        client.decode(&mut wire_in, &mut plain, 1 << 20).unwrap();
    }
    client.flush(&mut wire_out).unwrap();
    peer.write_all(&wire_out).unwrap();
    (plain, wire_in)
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn dead_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

// ---------------------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------------------

/// Keeps the log lines of the TCP client, so a test can count dial attempts (the client
/// logs every failed dial). Installed once per test binary; records of other targets
/// are dropped.
pub struct ClientLog {
    lines: Mutex<Vec<String>>,
}

impl log::Log for ClientLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target().starts_with("getty_transports::client")
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

impl ClientLog {
    /// Installs the capture (once) and returns it.
    pub fn install() -> &'static ClientLog {
        static LOG: OnceLock<&'static ClientLog> = OnceLock::new();
        LOG.get_or_init(|| {
            let log: &'static ClientLog = Box::leak(Box::new(ClientLog {
                lines: Mutex::new(Vec::new()),
            }));
            log::set_logger(log).expect("no other logger in this test binary");
            log::set_max_level(log::LevelFilter::Debug);
            log
        })
    }

    /// How many captured lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

// ---------------------------------------------------------------------------------------
// Interop peers (Python websockets)
// ---------------------------------------------------------------------------------------

/// The python of the interop venv (with the `websockets` package), installed once per test
/// binary by `tests/interop/install.sh`.
pub fn interop_python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/install.sh");
        let out = Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/interop/install.sh");
        assert!(
            out.status.success(),
            "installing Python websockets failed (needs python3 and access to PyPI)"
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

pub fn ws_peer_script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/ws_peer.py")
}

/// Kills the child when dropped (a failing test leaves no process behind).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child` to exit within `limit` and returns its stdout.
pub fn finish_child(mut child: Reaped, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut out = String::new();
            std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
            assert!(status.success(), "the python peer failed ({status}): {out}");
            return out;
        }
        assert!(Instant::now() < deadline, "the python peer did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Socket files
// ---------------------------------------------------------------------------------------

/// A fresh directory of one test (its unix sockets live there), removed with everything in
/// it when dropped. Named by the process, a sequence number and `name`, so tests running
/// at once never share one.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("getty-{}-{seq}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test's directory");
        TempDir(dir)
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
