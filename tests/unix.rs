//! Unix-domain sockets: stream echo over a socket file and the abstract namespace, the
//! socket file's life (stale files, removal on stop), bad input, and datagrams: 100,000
//! through a slow reader with none lost or reordered, and the kernel's size limit.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram as StdUnixDatagram, UnixStream as StdUnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, LengthFieldCodec, RawCodec};
use getty::udp::{DatagramHandler, DatagramSession};
use getty::unix::{UnixClient, UnixDatagramEndpoint, UnixServer};
use getty::{Error, Handler, Session, SessionOptions, Unix, UnixAddr};

const TEST_LIMIT: Duration = Duration::from_secs(120);

/// A socket path of this test process, removed first if a failed run left it.
fn socket_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("getty-test-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Echoes every frame; counts errors and closes.
struct Echo {
    errors: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
    errors_tx: Sender<String>,
}

impl Handler<LengthFieldCodec, Unix> for Echo {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec, Unix>, msg: Bytes) {
        s.write(msg).unwrap();
    }
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec, Unix>, error: &Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let _ = self.errors_tx.send(error.to_string());
    }
    fn on_close(&mut self, _: &mut Session<LengthFieldCodec, Unix>) {
        self.closes.fetch_add(1, Ordering::Relaxed);
    }
}

struct EchoServer {
    running: Running,
    errors: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
    error_texts: mpsc::Receiver<String>,
}

fn echo_server(addr: UnixAddr, options: SessionOptions) -> EchoServer {
    let (errors, closes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (errors_tx, error_texts) = mpsc::channel();
    let (e, c) = (errors.clone(), closes.clone());
    let server = UnixServer::builder()
        .session_options(options)
        .bind(addr, move |setup| {
            assert_eq!(setup.peer_addr(), UnixAddr::Unnamed, "clients are unbound");
            Ok((
                LengthFieldCodec::default(),
                Echo {
                    errors: e.clone(),
                    closes: c.clone(),
                    errors_tx: errors_tx.clone(),
                },
            ))
        })
        .unwrap();
    EchoServer {
        running: Running::serve("unix-echo", server),
        errors,
        closes,
        error_texts,
    }
}

/// Sends `count` frames of random sizes (1 B to 64 KiB), cut into writes at random
/// points, and checks every echo byte for byte.
fn random_echoes(mut stream: StdUnixStream, seed: u64, count: usize) -> usize {
    stream.set_read_timeout(Some(STEP)).unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bytes = 0;
    for _ in 0..count {
        let len = rng.usize(1..=64 * 1024);
        let payload: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let wire = frame(&payload);
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let piece = rng.usize(1..=rest.len());
            stream.write_all(&rest[..piece]).unwrap();
            rest = &rest[piece..];
        }
        assert_eq!(read_frame(&mut stream), payload, "an echo differs");
        bytes += len;
    }
    bytes
}

/// Twenty clients at once each send 300 frames of random sizes, cut at random points;
/// every echo comes back whole and in order.
#[test]
fn echo_over_a_socket_file_with_random_sizes_and_splits() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let path = socket_path("echo");
        let server = echo_server(UnixAddr::path(&path), SessionOptions::default());
        let clients: Vec<_> = (0..20u64)
            .map(|i| {
                let stream = StdUnixStream::connect(&path).unwrap();
                std::thread::spawn(move || random_echoes(stream, i, 300))
            })
            .collect();
        let bytes: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
        assert!(bytes > 20 * 300 * 16 * 1024, "{bytes} bytes echoed");
        server.running.stop();
        assert_eq!(server.errors.load(Ordering::Relaxed), 0);
        assert_eq!(server.closes.load(Ordering::Relaxed), 20);
    });
}

/// Sends a few frames once open and reports their echoes.
struct Hello {
    tx: Sender<Bytes>,
}

impl Handler<LengthFieldCodec, Unix> for Hello {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec, Unix>) -> std::io::Result<()> {
        assert!(matches!(s.peer_addr(), UnixAddr::Abstract(_)));
        for i in 0..3u8 {
            s.write(Bytes::from(vec![i; 1000 * (i as usize + 1)]))?;
        }
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<LengthFieldCodec, Unix>, msg: Bytes) {
        let _ = self.tx.send(msg);
    }
}

/// A getty-rs unix client and server meet in Linux's abstract namespace (no file).
#[test]
fn a_unix_client_and_server_in_the_abstract_namespace() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let name = format!("getty-test-{}-abstract", std::process::id());
        let server = echo_server(UnixAddr::abstract_name(&name), SessionOptions::default());
        let (tx, rx) = mpsc::channel();
        let client = UnixClient::builder()
            .max_consecutive_failures(Some(1))
            .build(UnixAddr::abstract_name(&name), move |_| {
                Ok((LengthFieldCodec::default(), Hello { tx: tx.clone() }))
            })
            .unwrap();
        let client = Running::serve("unix-client", client);
        for i in 0..3u8 {
            let echo = rx.recv_timeout(STEP).unwrap();
            assert_eq!(echo, vec![i; 1000 * (i as usize + 1)]);
        }
        client.stop();
        server.running.stop();
    });
}

/// A socket file left by an earlier run is removed before binding; a live server's file
/// and a file that is not a socket are not, and the bind fails; a server removes its own
/// file when it stops.
#[test]
fn socket_files_stale_live_and_our_own() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let path = socket_path("stale");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "a stale socket file");
        let refuse = |_: &mut getty::Setup<'_, UnixAddr>| -> std::io::Result<(RawCodec, Sink)> {
            Err(std::io::Error::other("unused"))
        };
        let kept = UnixServer::builder()
            .remove_stale_socket(false)
            .bind(path.as_path(), refuse);
        assert_eq!(
            kept.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::AddrInUse)
        );

        let server = echo_server(UnixAddr::path(&path), SessionOptions::default());
        let mut client = StdUnixStream::connect(&path).unwrap();
        client.set_read_timeout(Some(STEP)).unwrap();
        client.write_all(&frame(b"over a reclaimed path")).unwrap();
        assert_eq!(read_frame(&mut client), b"over a reclaimed path");

        let live = UnixServer::bind(path.as_path(), refuse);
        assert_eq!(
            live.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::AddrInUse)
        );
        assert!(path.exists(), "the live server's file stays");

        server.running.stop();
        assert!(!path.exists(), "a stopped server removes its socket file");

        std::fs::write(&path, b"not a socket").unwrap();
        let not_socket = UnixServer::bind(path.as_path(), refuse);
        assert!(not_socket.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
        std::fs::remove_file(&path).unwrap();
    });
}

struct Sink;
impl Handler<RawCodec, Unix> for Sink {
    fn on_message(&mut self, _: &mut Session<RawCodec, Unix>, _: Bytes) {}
}

/// An oversized frame closes that one session with an error the handler sees; the others
/// carry on.
#[test]
fn an_oversized_frame_closes_only_its_session() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let path = socket_path("oversized");
        let options = SessionOptions::default().max_message_len(1024);
        let server = echo_server(UnixAddr::path(&path), options);
        let mut good = StdUnixStream::connect(&path).unwrap();
        good.set_read_timeout(Some(STEP)).unwrap();
        let mut bad = StdUnixStream::connect(&path).unwrap();
        bad.set_read_timeout(Some(STEP)).unwrap();
        bad.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
        let mut buf = [0u8; 16];
        assert!(
            matches!(bad.read(&mut buf), Ok(0) | Err(_)),
            "the bad session closes"
        );
        let text = server.error_texts.recv_timeout(STEP).unwrap();
        assert!(text.contains("exceeds the maximum of 1024"), "{text}");
        good.write_all(&frame(b"still fine")).unwrap();
        assert_eq!(read_frame(&mut good), b"still fine");
        server.running.stop();
        assert_eq!(server.errors.load(Ordering::Relaxed), 1);
    });
}

// ---------------------------------------------------------------------------------------
// Datagrams
// ---------------------------------------------------------------------------------------

const DATAGRAMS: u64 = 100_000;

/// Sends `DATAGRAMS` numbered datagrams of 100 bytes as fast as the receiver takes them,
/// writing while the session is writable; reports its stats when done.
struct Numbered {
    next: u64,
    to: Option<UnixAddr>,
    done: Sender<(u64, u64)>,
}

impl Numbered {
    fn produce(&mut self, s: &mut DatagramSession<RawCodec, UnixAddr>) {
        // Unconnected, datagrams held for a full receiver (parked) are not in the queue the
        // watermarks count: a producer for one receiver keeps what it queued and what is
        // parked under what a parked destination may hold (64 KiB), and its cron tick
        // resumes it.
        while self.next < DATAGRAMS
            && s.is_writable()
            && s.queued_bytes() + s.parked_bytes() < 32 * 1024
        {
            let mut datagram = [0u8; 100];
            datagram[..8].copy_from_slice(&self.next.to_be_bytes());
            let queued = match &self.to {
                Some(peer) => s.write_to(peer.clone(), &datagram[..]),
                None => s.write(&datagram[..]),
            };
            queued.unwrap();
            self.next += 1;
        }
        if self.next == DATAGRAMS {
            let stats = s.stats();
            let _ = self.done.send((stats.dropped_out, s.queued_bytes() as u64));
            self.next += 1;
        }
    }
}

impl DatagramHandler<RawCodec, UnixAddr> for Numbered {
    fn on_open(&mut self, s: &mut DatagramSession<RawCodec, UnixAddr>) -> std::io::Result<()> {
        s.set_cron_period(Some(Duration::from_millis(2)));
        self.produce(s);
        Ok(())
    }
    fn on_message(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, _: Bytes, _: UnixAddr) {}
    fn on_cron(&mut self, s: &mut DatagramSession<RawCodec, UnixAddr>) {
        if s.is_writable() {
            self.produce(s);
        }
    }
    fn on_writability_changed(
        &mut self,
        s: &mut DatagramSession<RawCodec, UnixAddr>,
        writable: bool,
    ) {
        if writable {
            self.produce(s);
        }
    }
}

/// Reads `DATAGRAMS` datagrams, pausing now and then (a slow reader: the sender's
/// datagrams pile up and it must wait), and checks that each is the next in order.
fn slow_reader(receiver: StdUnixDatagram) {
    receiver.set_read_timeout(Some(STEP)).unwrap();
    let mut buf = [0u8; 256];
    for expected in 0..DATAGRAMS {
        let n = receiver
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {expected}: {e}"));
        assert_eq!(n, 100);
        let got = u64::from_be_bytes(buf[..8].try_into().unwrap());
        assert_eq!(got, expected, "lost or reordered");
        if expected % 5_000 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn datagrams_through_a_slow_reader(connected: bool) {
    let path = socket_path(if connected {
        "dgram-connected"
    } else {
        "dgram-bound"
    });
    let receiver = StdUnixDatagram::bind(&path).unwrap();
    let reader = std::thread::spawn(move || slow_reader(receiver));
    let (done_tx, done_rx) = mpsc::channel();
    let options = SessionOptions::default().watermarks(64 * 1024, 16 * 1024);
    let builder = UnixDatagramEndpoint::builder().session_options(options);
    let started = Instant::now();
    let endpoint = if connected {
        let numbered = Numbered {
            next: 0,
            to: None,
            done: done_tx,
        };
        builder.connect(path.as_path(), move |_| Ok((RawCodec, numbered)))
    } else {
        let numbered = Numbered {
            next: 0,
            to: Some(UnixAddr::path(&path)),
            done: done_tx,
        };
        let me = socket_path("dgram-sender");
        builder.bind(me.as_path(), move |_| Ok((RawCodec, numbered)))
    }
    .unwrap();
    let running = Running::serve("unix-dgram", endpoint);
    let (dropped, queued) = done_rx.recv_timeout(TEST_LIMIT / 2).unwrap();
    assert_eq!(dropped, 0, "a datagram was dropped");
    assert!(
        queued <= 64 * 1024 + 100,
        "{queued} bytes queued past the high watermark"
    );
    reader.join().unwrap();
    eprintln!(
        "{} unix datagrams ({}) through a slow reader in {:?}",
        DATAGRAMS,
        if connected {
            "connected"
        } else {
            "unconnected"
        },
        started.elapsed()
    );
    running.stop();
    let _ = std::fs::remove_file(&path);
}

/// 100,000 datagrams from a connected sender reach a reader that keeps pausing: none lost,
/// none reordered, and the sender's queue never grew past its high watermark.
#[test]
fn datagrams_through_a_slow_reader_connected() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        datagrams_through_a_slow_reader(true);
    });
}

/// The same from an unconnected (bound) sender, which the kernel gives no writable signal
/// for a full receiver: it retries on a timer, and still loses nothing.
#[test]
fn datagrams_through_a_slow_reader_unconnected() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        datagrams_through_a_slow_reader(false);
    });
}

/// The longest datagram a fresh unix datagram socket can send, found by trying.
fn kernel_datagram_limit() -> usize {
    let (a, b) = StdUnixDatagram::pair().unwrap();
    socket2::SockRef::from(&b)
        .set_recv_buffer_size(4 << 20)
        .unwrap();
    let (mut fits, mut too_big) = (0usize, 4 << 20);
    let mut buf = vec![0u8; 4 << 20];
    while too_big - fits > 1 {
        let len = (fits + too_big) / 2;
        if a.send(&buf[..len]).is_ok() {
            fits = len;
            b.recv(&mut buf).unwrap();
        } else {
            too_big = len;
        }
    }
    fits
}

/// Tries a datagram one byte over the limit and one at it, then a small one.
struct AtTheLimit {
    limit: usize,
    tx: Sender<String>,
}

impl DatagramHandler<RawCodec, UnixAddr> for AtTheLimit {
    fn on_open(&mut self, s: &mut DatagramSession<RawCodec, UnixAddr>) -> std::io::Result<()> {
        let _ = self.tx.send(format!("max {}", s.max_datagram_len()));
        let over = s.write_bytes(vec![1u8; self.limit + 1]);
        let _ = self
            .tx
            .send(format!("over: {:?}", over.map_err(|e| e.to_string())));
        s.write_bytes(vec![2u8; self.limit])?;
        s.write(&b"after"[..])?;
        Ok(())
    }
    fn on_message(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, _: Bytes, _: UnixAddr) {}
}

/// A datagram over the kernel's limit (measured here, not assumed) fails at `write` with
/// the limit in the error; one at the limit goes through, and the session carries on.
#[test]
fn the_datagram_size_limit_is_the_kernels() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let limit = kernel_datagram_limit();
        assert!(limit > 64 * 1024, "limit {limit}");
        let path = socket_path("dgram-limit");
        let receiver = StdUnixDatagram::bind(&path).unwrap();
        socket2::SockRef::from(&receiver)
            .set_recv_buffer_size(4 << 20)
            .unwrap();
        receiver.set_read_timeout(Some(STEP)).unwrap();
        let (tx, rx) = mpsc::channel();
        let endpoint = UnixDatagramEndpoint::builder()
            .connect(path.as_path(), move |_| {
                Ok((RawCodec, AtTheLimit { limit, tx }))
            })
            .unwrap();
        let running = Running::serve("unix-dgram-limit", endpoint);
        assert_eq!(rx.recv_timeout(STEP).unwrap(), format!("max {limit}"));
        let over = rx.recv_timeout(STEP).unwrap();
        assert!(
            over.contains(&format!("exceeds the maximum of {limit}")),
            "{over}"
        );
        let mut buf = vec![0u8; limit + 1];
        assert_eq!(receiver.recv(&mut buf).unwrap(), limit);
        assert!(buf[..limit].iter().all(|&b| b == 2));
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after");
        running.stop();
        let _ = std::fs::remove_file(&path);
    });
}
