//! Hostile peers of the write path's flow control: queues that cannot drain, readers that
//! are slow but steady, and writers on other threads that heed `Backpressure`. Every test
//! uses real loopback sockets and bounded waits.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
#[cfg(any(feature = "tls", feature = "ws"))]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
#[cfg(any(feature = "tls", feature = "ws"))]
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, LengthFieldCodec, RawCodec};
use getty::tcp::TcpServer;
use getty::{Handler, Session, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Queues a banner of `banner` bytes in `on_open` and counts the writability changes it
/// hears (writing nothing more on hearing them).
#[cfg(feature = "tls")]
struct Banner {
    banner: usize,
    changes: Arc<AtomicUsize>,
}

#[cfg(feature = "tls")]
impl Handler<RawCodec> for Banner {
    fn on_open(&mut self, s: &mut Session<RawCodec>) -> io::Result<()> {
        s.write_bytes(vec![b'b'; self.banner])
            .expect("queue the banner");
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {}
    fn on_writability_changed(&mut self, _: &mut Session<RawCodec>, _: bool) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Equal watermarks (which the options allowed) and a queue of exactly that size that
/// cannot drain (a TLS session whose peer has not sent its ClientHello): the writability
/// was reported unwritable and writable in turn, round after round, and the reactor spun
/// a whole core, telling the handler millions of changes, until the handshake timeout.
#[cfg(feature = "tls")]
#[test]
fn a_queue_stuck_at_equal_watermarks_does_not_spin_the_reactor() {
    use getty::tls;
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let config = tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
        let changes = Arc::new(AtomicUsize::new(0));
        let seen = changes.clone();
        const H: usize = 4096;
        let server = TcpServer::builder()
            .session_options(
                SessionOptions::default()
                    .watermarks(H, H)
                    .handshake_timeout(Duration::from_secs(20)),
            )
            .tls(config)
            .bind("127.0.0.1:0", move |_| {
                let changes = seen.clone();
                Ok((RawCodec, Banner { banner: H, changes }))
            })
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("equal-marks", server);
        let peer = connect(addr); // says nothing (yet)
        std::thread::sleep(Duration::from_millis(300));
        let cpu_before = cpu_of_thread("equal-marks").expect("the reactor thread");
        let changes_before = changes.load(Ordering::Relaxed);
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        let elapsed = started.elapsed();
        let cpu = cpu_of_thread("equal-marks").expect("the reactor thread") - cpu_before;
        let told = changes.load(Ordering::Relaxed) - changes_before;
        drop(peer);
        running.stop();
        println!("reactor CPU {cpu:?} in {elapsed:?}; {told} writability changes told");
        assert!(told <= 2, "{told} writability changes told in {elapsed:?}");
        assert!(
            cpu < elapsed / 10,
            "the reactor used {cpu:?} in {elapsed:?}"
        );
    });
}

/// Streams numbered bytes for as long as its session is writable, again on hearing it is
/// writable, and reports how the session ended.
struct Pump {
    next: u64,
    errors: std::sync::mpsc::Sender<String>,
}

impl Pump {
    fn pump(&mut self, s: &mut Session<RawCodec>) {
        while s.is_writable() && !s.is_closing() {
            let chunk: Vec<u8> = (0..16 * 1024u64)
                .map(|i| ((self.next + i) % 251) as u8)
                .collect();
            self.next += chunk.len() as u64;
            if s.write_bytes(chunk).is_err() {
                return;
            }
        }
    }
}

impl Handler<RawCodec> for Pump {
    fn on_message(&mut self, s: &mut Session<RawCodec>, _: Bytes) {
        self.pump(s);
    }
    fn on_writability_changed(&mut self, s: &mut Session<RawCodec>, writable: bool) {
        if writable {
            self.pump(s);
        }
    }
    fn on_error(&mut self, _: &mut Session<RawCodec>, error: &getty::Error) {
        let _ = self.errors.send(error.to_string());
    }
}

/// A peer that reads steadily (`chunk` bytes every `every`), never pausing longer than
/// `every`, for `total`; returns the bytes it read and whether the stream ended early.
fn read_steadily(
    peer: &mut TcpStream,
    chunk: usize,
    every: Duration,
    total: Duration,
) -> (u64, Option<String>, Duration) {
    let mut buf = vec![0u8; chunk];
    let mut read = 0u64;
    let started = Instant::now();
    while started.elapsed() < total {
        match peer.read(&mut buf) {
            Ok(0) => return (read, Some("EOF".into()), started.elapsed()),
            Ok(n) => {
                for (i, &b) in buf[..n].iter().enumerate() {
                    assert_eq!(
                        b,
                        ((read + i as u64) % 251) as u8,
                        "byte {}",
                        read + i as u64
                    );
                }
                read += n as u64;
            }
            Err(e) => return (read, Some(e.to_string()), started.elapsed()),
        }
        std::thread::sleep(every);
    }
    (read, None, started.elapsed())
}

/// A peer that reads 4 KiB every 20 ms (about 200 KB/s, never idle for more than 20 ms)
/// was ended with `WriteStalled` at the 2 s write-stall timeout, although the socket had
/// room for more all along: once it fills, the kernel raises the writable edge only when a
/// third of its (autotuned, megabytes) send buffer has drained, and the stall deadline
/// failed the session without trying the socket once more.
#[test]
fn a_peer_that_reads_steadily_but_slowly_is_not_killed_as_stalled() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let (tx, rx) = std::sync::mpsc::channel();
        let stall = Duration::from_secs(2);
        let server = TcpServer::builder()
            .session_options(SessionOptions::default().write_stall_timeout(stall))
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    RawCodec,
                    Pump {
                        next: 0,
                        errors: tx.clone(),
                    },
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("slow-reader", server);
        let mut peer = connect(addr);
        peer.write_all(b"go").unwrap();
        let (read, ended, lasted) = read_steadily(
            &mut peer,
            4 * 1024,
            Duration::from_millis(20),
            Duration::from_secs(7),
        );
        let errors: Vec<String> = rx.try_iter().collect();
        running.stop();
        eprintln!("read {read} bytes in {lasted:?}; ended: {ended:?}; server errors: {errors:?}");
        assert!(
            ended.is_none() && errors.is_empty(),
            "a peer that read {read} bytes steadily (a read every 20 ms) was cut off after \
             {lasted:?} ({ended:?}); the server said {errors:?}"
        );
    });
}

/// Hands out its session's handle; reports errors.
struct HandOut {
    handles: std::sync::mpsc::Sender<getty::SessionHandle<getty::codec::LengthFieldCodec>>,
    events: std::sync::mpsc::Sender<String>,
}

impl Handler<getty::codec::LengthFieldCodec> for HandOut {
    fn on_open(&mut self, s: &mut Session<getty::codec::LengthFieldCodec>) -> io::Result<()> {
        let _ = self.handles.send(s.handle().expect("in a callback"));
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<getty::codec::LengthFieldCodec>, _: Bytes) {}
    fn on_error(&mut self, _: &mut Session<getty::codec::LengthFieldCodec>, e: &getty::Error) {
        let _ = self.events.send(format!("on_error: {e}"));
    }
}

/// A length-prefixed TCP server with a 16 KiB send buffer and `options`, whose sessions
/// get the handler `make` builds, on a reactor thread called `name`; and a peer of it with
/// a 4 KiB receive buffer, so that the server's queue backs up after a few KiB.
fn server_and_slow_reader<H>(
    name: &str,
    options: SessionOptions,
    make: impl Fn() -> H + Send + Sync + 'static,
) -> (Running, TcpStream)
where
    H: getty::Handler<LengthFieldCodec> + Send + 'static,
{
    let server = TcpServer::builder()
        .session_options(options)
        .socket_options(getty::SocketOptions::default().send_buffer_size(Some(16 * 1024)))
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), make()))
        })
        .unwrap();
    let addr = server.local_addr();
    let running = Running::serve(name, server);
    (running, connect_with_recv_buffer(addr, 4096))
}

/// "A writer that heeds `Backpressure` never overruns `max_outbound`": a producer thread
/// writes frames of 240 KiB (each within the 256 KiB `max_outbound`) through a handle,
/// waiting with `wait_writable` whenever it is told `Backpressure`, to a peer that reads
/// slowly. The session applied a write as soon as it was writable, with a few KiB of the
/// previous frame still queued: it failed with `QueueFull` and, as a handle's write may
/// not leave a hole, the session was ended after one frame of 20.
#[test]
fn a_producer_that_heeds_backpressure_keeps_its_session_whatever_the_frame_size() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let (handles_tx, handles) = std::sync::mpsc::channel();
        let (events_tx, events) = std::sync::mpsc::channel();
        const MAX_OUTBOUND: usize = 256 * 1024;
        const FRAME: usize = 240 * 1024;
        const FRAMES: u32 = 20;
        let options = SessionOptions::default()
            .watermarks(64 * 1024, 32 * 1024)
            .max_outbound(MAX_OUTBOUND);
        let (running, mut peer) = server_and_slow_reader("big-frames", options, move || HandOut {
            handles: handles_tx.clone(),
            events: events_tx.clone(),
        });
        let handle = handles.recv_timeout(STEP).unwrap();
        let producer = std::thread::spawn(move || {
            let mut accepted = 0u32;
            while accepted < FRAMES {
                let mut d = vec![accepted as u8; FRAME];
                d[..4].copy_from_slice(&accepted.to_be_bytes());
                match handle.write(Bytes::from(d)) {
                    Ok(()) => accepted += 1,
                    Err(getty::Error::Backpressure) => {
                        if let Err(e) = handle.wait_writable(STEP) {
                            return (accepted, Some(e.to_string()));
                        }
                    }
                    Err(e) => return (accepted, Some(e.to_string())),
                }
            }
            (accepted, None)
        });
        // A slow reader: 4 KiB at a time, a short pause every 16 reads.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        let mut reads = 0usize;
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while got.len() < FRAMES as usize * (4 + FRAME) {
            match peer.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            reads += 1;
            if reads % 16 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let (accepted, stopped) = producer.join().unwrap();
        running.stop();
        let seen: Vec<String> = events.try_iter().collect();
        let frames = got.len() / (4 + FRAME);
        eprintln!("accepted {accepted}, stopped by {stopped:?}, the peer got {frames}; {seen:?}");
        assert!(
            seen.is_empty() && stopped.is_none(),
            "a producer that heeded Backpressure with {FRAME}-byte frames (max_outbound \
             {MAX_OUTBOUND}) lost its session after {frames} frames: {seen:?}; it was \
             stopped by {stopped:?}"
        );
        assert_eq!(frames as u32, FRAMES);
    });
}

/// Records the most bytes its session ever held queued, sampled on every cron tick and
/// every event it hears.
#[cfg(feature = "ws")]
struct QueueWatch {
    most: Arc<AtomicUsize>,
}

#[cfg(feature = "ws")]
impl QueueWatch {
    fn sample(&self, s: &Session<RawCodec, getty::ws::Ws>) {
        self.most.fetch_max(s.queued_bytes(), Ordering::Relaxed);
    }
}

#[cfg(feature = "ws")]
impl Handler<RawCodec, getty::ws::Ws> for QueueWatch {
    fn on_message(&mut self, s: &mut Session<RawCodec, getty::ws::Ws>, _: Bytes) {
        self.sample(s);
    }
    fn on_cron(&mut self, s: &mut Session<RawCodec, getty::ws::Ws>) {
        self.sample(s);
    }
    fn on_writability_changed(&mut self, s: &mut Session<RawCodec, getty::ws::Ws>, _: bool) {
        self.sample(s);
    }
}

/// A `WsClient` that reads on above its high watermark
/// (`pause_reading_when_unwritable(false)`, as a pipelining client is told to) and a
/// server that sends 125-byte pings, one per write, and never reads: one pong was queued
/// per read (pongs coalesced only within a read), past `max_outbound` (1 MiB) within
/// 2 to 4 s, bounded only by the write-stall timeout.
#[cfg(feature = "ws")]
#[test]
fn pongs_to_a_ping_flood_stay_within_the_bounds_when_reading_does_not_pause() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        const MAX_OUTBOUND: usize = 1 << 20;
        let most = Arc::new(AtomicUsize::new(0));
        let seen = most.clone();
        let client = getty::ws::WsClient::builder()
            .session_options(
                SessionOptions::default()
                    .pause_reading_when_unwritable(false)
                    .max_outbound(MAX_OUTBOUND)
                    .cron_period(Some(Duration::from_millis(20))),
            )
            .build(&format!("ws://{addr}/"), move |_| {
                Ok((RawCodec, QueueWatch { most: seen.clone() }))
            })
            .unwrap();
        let running = Running::serve("ping-flood", client);
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(STEP)).unwrap();
        let response = accept_ws_request(&mut sock);
        sock.write_all(&response).unwrap();
        sock.set_nodelay(true).unwrap();
        // Pings, one per write, for 4 s (or until the client's queue holds twice its
        // bound); never a read.
        let mut ping = vec![0x89u8, 125];
        ping.extend_from_slice(&[b'p'; 125]);
        let started = Instant::now();
        let mut sent = 0usize;
        sock.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while started.elapsed() < Duration::from_secs(4)
            && most.load(Ordering::Relaxed) < 2 * MAX_OUTBOUND
        {
            match sock.write(&ping) {
                Ok(n) => assert_eq!(n, ping.len(), "a short write of a ping"),
                Err(_) => break, // our socket is full: the client stopped reading
            }
            sent += 1;
            if sent % 64 == 0 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let most = most.load(Ordering::Relaxed);
        drop(sock);
        running.stop();
        eprintln!(
            "{sent} pings sent in {:?}; the client's queue peaked at {most} bytes",
            started.elapsed()
        );
        assert!(
            most <= MAX_OUTBOUND,
            "{sent} pings from a peer that never reads grew the queue to {most} bytes, past \
             max_outbound ({MAX_OUTBOUND})"
        );
    });
}

/// Streams 16 KiB frames of `a` for as long as its session is writable (again on hearing
/// it is writable, as netty's `channelWritabilityChanged` idiom goes), and hands out its
/// handle.
struct Streamer {
    handles: Sender<getty::SessionHandle<LengthFieldCodec>>,
    errors: Sender<String>,
}

impl Streamer {
    fn pump(&mut self, s: &mut Session<LengthFieldCodec>) {
        while s.is_writable() && !s.is_closing() {
            if s.write(Bytes::from(vec![b'a'; 16 * 1024])).is_err() {
                return;
            }
        }
    }
}

impl Handler<LengthFieldCodec> for Streamer {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        let _ = self.handles.send(s.handle().expect("in a callback"));
        self.pump(s);
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, _: Bytes) {}
    fn on_writability_changed(&mut self, s: &mut Session<LengthFieldCodec>, writable: bool) {
        if writable {
            self.pump(s);
        }
    }
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, e: &getty::Error) {
        let _ = self.errors.send(format!("on_error: {e}"));
    }
}

/// A handler that refills its queue whenever it hears it is writable (at the low
/// watermark, 32 KiB) kept it from ever draining far enough for a 250 KiB handle write
/// under a 256 KiB `max_outbound` (5.7 KiB queued at most): the write, accepted, never
/// went out while the handler streamed megabytes. The watermarks now count held writes,
/// so the handler hears the session is not writable until the write has gone.
#[test]
fn a_held_handle_write_is_not_starved_by_the_handlers_own_stream() {
    watchdog(Duration::from_secs(60), || {
        let _gate = exclusive_gate();
        let (handles_tx, handles) = std::sync::mpsc::channel();
        let (errors_tx, errors) = std::sync::mpsc::channel();
        const MAX_OUTBOUND: usize = 256 * 1024;
        const PUSH: usize = 250 * 1024;
        let options = SessionOptions::default().max_outbound(MAX_OUTBOUND);
        let (running, mut peer) = server_and_slow_reader("held-push", options, move || Streamer {
            handles: handles_tx.clone(),
            errors: errors_tx.clone(),
        });
        let handle = handles.recv_timeout(STEP).unwrap();
        // A steady reader, for four seconds: frames of `a` and, somewhere, the push.
        let reader = std::thread::spawn(move || {
            let began = Instant::now();
            let (mut streamed, mut push_after) = (0usize, None);
            while began.elapsed() < Duration::from_secs(4) {
                let frame = read_frame(&mut peer);
                if frame.len() == PUSH && frame.iter().all(|&b| b == b'Z') {
                    push_after = Some(began.elapsed());
                    break;
                }
                assert!(frame.iter().all(|&b| b == b'a'), "a damaged frame");
                streamed += frame.len();
                // Slow but steady: about 3 MB/s, never idle for more than 5 ms.
                std::thread::sleep(Duration::from_millis(5));
            }
            (streamed, push_after, began.elapsed(), peer)
        });
        // The push: one write, retried after Backpressure as documented.
        let began = Instant::now();
        let mut refusals = 0u32;
        let pushed = loop {
            match handle.write(Bytes::from(vec![b'Z'; PUSH])) {
                Ok(()) => break Ok(began.elapsed()),
                Err(getty::Error::Backpressure) if began.elapsed() < Duration::from_secs(3) => {
                    refusals += 1;
                    let _ = handle.wait_writable(Duration::from_millis(100));
                }
                Err(e) => break Err(e.to_string()),
            }
        };
        let (streamed, push_after, read_for, peer) = reader.join().unwrap();
        // Errors before the peer goes (its close would reset the stream).
        let seen: Vec<String> = errors.try_iter().collect();
        drop(handle);
        running.stop();
        drop(peer);
        println!(
            "the handle took the push: {pushed:?} (after {refusals} refusals); the handler \
             streamed {} KiB in {read_for:?}; the {} KiB push arrived after {push_after:?}; \
             errors {seen:?}",
            streamed >> 10,
            PUSH >> 10
        );
        assert!(seen.is_empty(), "the session failed: {seen:?}");
        assert!(pushed.is_ok(), "the handle never took the push: {pushed:?}");
        assert!(
            push_after.is_some(),
            "a {} KiB handle write accepted under a {} KiB max_outbound never went out in 4 s \
             while the handler streamed {} KiB on the same session",
            PUSH >> 10,
            MAX_OUTBOUND >> 10,
            streamed >> 10
        );
    });
}

/// A WebSocket server on `/echo` whose sessions report to `tx` and write nothing.
#[cfg(feature = "ws")]
fn silent_ws_server(options: SessionOptions, tx: &Sender<Ev>) -> (Running, std::net::SocketAddr) {
    let tx = tx.clone();
    let server = getty::ws::WsServer::builder()
        .session_options(options)
        .route("/echo", move |_| Ok((RawCodec, Probe::silent(&tx))))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("ping-burst", server), addr)
}

#[cfg(feature = "ws")]
/// A masked ping (mask key 0) with `payload` (at most 125 bytes).
fn ping(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= 125);
    let mut f = vec![0x89, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

#[cfg(feature = "ws")]
/// The payloads of the pongs that come within `quiet` of each other (until nothing comes
/// for `quiet`, or the peer ends); panics on any frame that is not a pong.
fn pongs_until_quiet(sock: &mut TcpStream, quiet: Duration, most: usize) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(quiet)).unwrap();
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let started = Instant::now();
    while got.len() < most && started.elapsed() < STEP {
        match sock.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        // Cut whole short frames.
        loop {
            if buf.len() < 2 {
                break;
            }
            let len = (buf[1] & 0x7f) as usize;
            assert!(len <= 125, "a control frame");
            if buf.len() < 2 + len {
                break;
            }
            assert_eq!(buf[0], 0x8a, "only pongs are expected, got {:#x}", buf[0]);
            got.push(buf[2..2 + len].to_vec());
            buf.drain(..2 + len);
        }
    }
    got
}

#[cfg(feature = "ws")]
/// The peer's pings, sent in one write to a WebSocket server that reads on above its high
/// watermark (`pause_reading_when_unwritable(false)`): the pongs answering the first ones
/// reach the high watermark by themselves (framework output: the handler is never told
/// the session is unwritable), so the pong for the latest ping is held. The queue then
/// drained without a crossing to tell, and the held pong waited for a next read, which a
/// peer waiting for its pong never sends. RFC 6455 §5.5.3 lets an endpoint answer only
/// the latest ping, never none of them.
fn latest_ping_is_answered(options: SessionOptions, pings: usize) {
    let (tx, _events) = Events::new();
    let (server, addr) = silent_ws_server(options.pause_reading_when_unwritable(false), &tx);
    let mut sock = connect(addr);
    ws_upgrade(&mut sock);
    let mut burst = Vec::new();
    for i in 0..pings {
        let mut payload = format!("ping {i:06} ").into_bytes();
        payload.resize(125, b'.');
        burst.extend_from_slice(&ping(&payload));
    }
    sock.write_all(&burst).unwrap();
    let last = {
        let mut p = format!("ping {:06} ", pings - 1).into_bytes();
        p.resize(125, b'.');
        p
    };
    // The queue drains at once (this peer reads everything): 1 s is far past the drain.
    let pongs = pongs_until_quiet(&mut sock, Duration::from_secs(1), pings);
    // Held, not lost: any later frame from the peer (an empty binary message here) is a
    // read below the high watermark, which lets the held pong go.
    let answered_late = if pongs.contains(&last) {
        false
    } else {
        sock.write_all(&[0x82, 0x80, 0, 0, 0, 0]).unwrap();
        pongs_until_quiet(&mut sock, Duration::from_secs(1), 1).contains(&last)
    };
    drop(sock);
    server.stop();
    let answered_last = pongs.contains(&last);
    let last_answered = pongs
        .last()
        .map(|p| String::from_utf8_lossy(&p[..12]).into_owned());
    assert!(
        answered_last,
        "{pings} pings in one write: {} pongs came, the last for {:?}; the latest ping \
         (ping {:06}) was not answered within 1 s, though the queue drained (answered once \
         the peer sent another frame: {answered_late})",
        pongs.len(),
        last_answered,
        pings - 1
    );
}

/// Small watermarks (256/128): the third pong reaches the high watermark, the fourth ping's
/// pong is held for good.
#[cfg(feature = "ws")]
#[test]
fn the_latest_ping_is_answered_when_pongs_alone_reach_the_high_watermark() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        latest_ping_is_answered(SessionOptions::default().watermarks(256, 128), 4);
    });
}

/// The default watermarks (64 KiB / 32 KiB): a burst of 1,000 pings (131 KB).
#[cfg(feature = "ws")]
#[test]
fn the_latest_ping_of_a_burst_is_answered_at_the_default_watermarks() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        latest_ping_is_answered(SessionOptions::default(), 1000);
    });
}

/// A `WsClient` handler that streams 4 KiB chunks on its 5 ms cron: while writable, until
/// it is not; while not, it tops its queue up to `target` (below the high watermark) and
/// no further, so the queue stays between the watermarks for as long as the peer reads.
#[cfg(feature = "ws")]
struct TopUp {
    target: usize,
}

#[cfg(feature = "ws")]
impl Handler<RawCodec, getty::ws::Ws> for TopUp {
    fn on_message(&mut self, _: &mut Session<RawCodec, getty::ws::Ws>, _: Bytes) {}
    fn on_cron(&mut self, s: &mut Session<RawCodec, getty::ws::Ws>) {
        let writable = s.is_writable();
        for _ in 0..4096 {
            let full = if writable {
                !s.is_writable()
            } else {
                s.queued_bytes() >= self.target
            };
            if full || s.write_bytes(vec![b'd'; 4096]).is_err() {
                break;
            }
        }
    }
}

/// Counts what it receives, slowly (250 µs a message), and reports its errors.
#[cfg(feature = "ws")]
struct SlowSink {
    errors: Sender<String>,
}

#[cfg(feature = "ws")]
impl Handler<RawCodec, getty::ws::Ws> for SlowSink {
    fn on_message(&mut self, _: &mut Session<RawCodec, getty::ws::Ws>, _: Bytes) {
        std::thread::sleep(Duration::from_micros(250));
    }
    fn on_error(&mut self, _: &mut Session<RawCodec, getty::ws::Ws>, error: &getty::Error) {
        let _ = self.errors.send(error.to_string());
    }
}

/// getty at both ends: a server that pings on its cron and gives a pong 3 s, and a client
/// that reads on above its high watermark and keeps its queue between the watermarks while
/// the server reads it steadily. The client's pongs were held until its queue drained to
/// the low watermark, which it never did: the server timed the live client out after
/// 3.2 s. A held pong now goes once the queue is below the high watermark.
#[cfg(feature = "ws")]
#[test]
fn a_busy_client_with_its_queue_between_the_watermarks_still_answers_pings() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let (tx, errors) = std::sync::mpsc::channel();
        let server = getty::ws::WsServer::builder()
            .session_options(
                SessionOptions::default()
                    .cron_period(Some(Duration::from_millis(200)))
                    .max_message_len(64 * 1024),
            )
            .ping_on_cron(true)
            .pong_timeout(Some(Duration::from_secs(3)))
            .route("/echo", move |_| {
                let errors = tx.clone();
                Ok((RawCodec, SlowSink { errors }))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("keepalive-server", server);
        const HIGH: usize = 2 << 20;
        let client = getty::ws::WsClient::builder()
            .session_options(
                SessionOptions::default()
                    .pause_reading_when_unwritable(false)
                    .watermarks(HIGH, 64 * 1024)
                    .max_outbound(16 << 20)
                    .cron_period(Some(Duration::from_millis(5))),
            )
            .build(&format!("ws://{addr}/echo"), |_| {
                Ok((
                    RawCodec,
                    TopUp {
                        target: 3 * HIGH / 4,
                    },
                ))
            })
            .unwrap();
        let client = Running::serve("keepalive-client", client);
        let ended = errors.recv_timeout(Duration::from_secs(5));
        client.stop();
        server.stop();
        assert!(ended.is_err(), "the server ended a live client: {ended:?}");
    });
}
