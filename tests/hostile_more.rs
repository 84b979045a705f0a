//! More hostile peers on real sockets, each beside a well-behaved bystander whose echoes are
//! checked byte for byte while the attack runs: peers that never read, WebSocket floods of
//! pings, pongs and empty continuations, deflate bombs over both compression paths,
//! thousands of concurrent sessions with random write splits, and a server out of
//! descriptors (in a child process, under a low `RLIMIT_NOFILE`). Every test prints its
//! figures (time to close, RSS delta, descriptors, counts); the bounds are generous, since
//! they catch hangs, leaks, lost bytes and spins, not speed.
#![cfg(target_os = "linux")]

mod common;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, Decoder, Encoder, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{Error, Handler, Session, SessionOptions, Transport};

const TEST_LIMIT: Duration = Duration::from_secs(180);

/// An echo handler that reports opens, errors and closes (never messages: the floods here
/// would fill the test's channel) and counts the bytes it was handed.
struct Quiet {
    tx: Sender<Ev>,
    received: Arc<AtomicU64>,
}

impl Quiet {
    fn new(tx: &Sender<Ev>, received: &Arc<AtomicU64>) -> Quiet {
        Quiet {
            tx: tx.clone(),
            received: received.clone(),
        }
    }
}

impl<C, T> Handler<C, T> for Quiet
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
        self.received.fetch_add(msg.len() as u64, Ordering::Relaxed);
        let _ = s.write(msg);
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

/// Descriptors open in this process.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A payload for bystander round `round`: its size and bytes vary with the round, so a
/// lost, repeated or shifted byte shows.
fn bystander_payload(round: u32) -> Vec<u8> {
    let len = 1 + (round as usize * 97) % 3000;
    (0..len)
        .map(|i| (i as u32 ^ round.wrapping_mul(31)) as u8)
        .collect()
}

/// Percentiles of `samples` (sorted here), as "p50 / max".
fn spread(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    samples.sort();
    format!(
        "p50 {:?} / max {:?}",
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    )
}

fn tcp_echo_server(
    name: &str,
    options: SessionOptions,
    tx: &Sender<Ev>,
    received: &Arc<AtomicU64>,
) -> (Running, SocketAddr) {
    let (tx, received) = (tx.clone(), received.clone());
    let server = TcpServer::builder()
        .session_options(options)
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), Quiet::new(&tx, &received)))
        })
        .unwrap();
    let addr = server.local_addr();
    (Running::serve(name, server), addr)
}

/// Waits (at most `STEP`) until `peer`'s connection is reset or hung up, without reading
/// from it: POLLERR and POLLHUP are reported whatever events are asked for.
fn wait_for_hangup(peer: &TcpStream) -> bool {
    let mut pfd = libc::pollfd {
        fd: peer.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        // SAFETY: one valid pollfd for a descriptor `peer` owns.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n > 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------
// 1. Peers that never read
// ---------------------------------------------------------------------------------------

const NEVER_READERS: usize = 20;
const NEVER_READER_BYTES: usize = 8 << 20;

/// What one peer that never reads saw: bytes the kernel took from it, and how long after
/// its last progress the server ended the connection.
struct Unread {
    sent: usize,
    closed_after_stall: Duration,
}

/// Sends `total` bytes of `wire` frames, never reading, until the kernel stops taking them
/// and the server ends the connection.
fn never_read(addr: SocketAddr, wire: &[u8], total: usize) -> Unread {
    let mut peer = connect(addr);
    let (mut sent, mut last_progress) = (0usize, Instant::now());
    let mut failed = false;
    while sent < total && !failed {
        let mut pending = wire;
        while !pending.is_empty() {
            match peer.write(pending) {
                Ok(n) => {
                    pending = &pending[n..];
                    sent += n;
                    last_progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    assert!(
                        matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                        ),
                        "a never-reading peer's write failed with {e} after {sent} bytes"
                    );
                    failed = true;
                    break;
                }
            }
        }
    }
    if !failed {
        assert!(
            wait_for_hangup(&peer),
            "the server never ended a peer that never reads (all {sent} bytes taken)"
        );
    }
    Unread {
        sent,
        closed_after_stall: last_progress.elapsed(),
    }
}

/// Twenty peers each send 8 MiB of frames and never read. The server stops reading them
/// once their echoes pass the watermark (so it holds a bounded amount for each), ends each
/// at the write-stall timeout, and the bystander's echoes keep flowing meanwhile.
#[test]
fn peers_that_never_read_are_held_then_ended_at_the_write_stall() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let stall = Duration::from_secs(1);
        let (tx, mut events) = Events::new();
        let received = Arc::new(AtomicU64::new(0));
        let options = SessionOptions::default().write_stall_timeout(stall);
        let (server, addr) = tcp_echo_server("hostile-never-read", options, &tx, &received);
        let mut bystander = connect(addr);
        echo_roundtrip(&mut bystander, b"warm");
        let (fds, entries, baseline) = (open_descriptors(), server.entry_count(), resident_bytes());
        let bystander_bytes = received.load(Ordering::Relaxed);

        let wire: Arc<Vec<u8>> = Arc::new(frame(&[0xa5; 64 * 1024 - 4]));
        let began = Instant::now();
        let peers: Vec<_> = (0..NEVER_READERS)
            .map(|_| {
                let wire = wire.clone();
                std::thread::spawn(move || never_read(addr, &wire, NEVER_READER_BYTES))
            })
            .collect();
        let (mut rounds, mut peak) = (0u32, baseline);
        while peers.iter().any(|p| !p.is_finished()) {
            echo_roundtrip(&mut bystander, &bystander_payload(rounds));
            rounds += 1;
            peak = peak.max(resident_bytes());
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = began.elapsed();
        let unread: Vec<Unread> = peers.into_iter().map(|p| p.join().unwrap()).collect();
        let stalls = events.wait_n("a write stall per peer", NEVER_READERS, |e| {
            matches!(
                e,
                Ev::Error {
                    err: ErrKind::WriteStalled(_),
                    ..
                }
            )
        });
        let deadline = Instant::now() + STEP;
        while server.entry_count() > entries && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (fds_after, entries_after) = (open_descriptors(), server.entry_count());
        let read_by_server = received.load(Ordering::Relaxed) - bystander_bytes;
        let taken: usize = unread.iter().map(|u| u.sent).sum();
        let mut closes: Vec<Duration> = unread.iter().map(|u| u.closed_after_stall).collect();
        let growth = peak.saturating_sub(baseline);
        println!(
            "never-reading peers: {NEVER_READERS} x {} MiB offered; the kernel took {} MiB, \
             the server read {} MiB (its echoes unread); {} write stalls; closed after the \
             peer's last progress: {}; all done in {took:?}; peak RSS +{} KiB; descriptors \
             {fds} -> {fds_after}, sessions {entries} -> {entries_after}; {rounds} bystander \
             echoes meanwhile",
            NEVER_READER_BYTES >> 20,
            taken >> 20,
            read_by_server >> 20,
            stalls.len(),
            spread(&mut closes),
            growth >> 10,
        );
        // A server that kept reading would have read everything the kernel took from the
        // peers: nothing moves in a stalled second. What it left in its receive buffers
        // is what flow control held back (how much depends on the kernel's buffer sizes).
        let held_back = (taken as u64).saturating_sub(read_by_server);
        assert!(
            held_back >= NEVER_READERS as u64 * 64 * 1024,
            "the server kept reading peers whose echoes pile up: read {read_by_server} of \
             {taken} bytes"
        );
        assert!(
            growth < 64 << 20,
            "RSS grew by {} KiB holding peers that never read",
            growth >> 10
        );
        assert_eq!(entries_after, entries, "every stalled session ended");
        assert!(
            fds_after <= fds + 2,
            "descriptors leaked: {fds} -> {fds_after}"
        );
        echo_roundtrip(&mut bystander, b"after");
        server.stop();
        events.check_contract();
    });
}
