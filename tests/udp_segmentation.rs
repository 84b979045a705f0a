//! UDP segmentation offload (runs of equal datagrams to one destination sent as
//! one `sendmmsg` message with `UDP_SEGMENT`) over loopback, IPv4 and IPv6: an unconnected
//! endpoint answers several peers at once with interleaved blocks of every shape a run can
//! take (more than 64 segments, a total over 65,000 bytes, a last datagram larger than
//! the rest, empty datagrams, 1,232 against 1,233 bytes, one datagram of 60,000 bytes).
//! Every peer must get exactly its datagrams, in order, and the endpoint's stats must count
//! datagrams, not `sendmmsg` messages.

mod common;

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, RawCodec};
use getty::udp::{DatagramHandler, DatagramSession, UdpEndpoint, UdpOptions};
use getty::{Error, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// The sizes of one block of datagrams to one peer, by block number.
fn block(round: usize) -> Vec<usize> {
    let mut sizes = vec![1000; 70]; // over 64 segments
    sizes.extend([500, 500, 500, 600]); // the last one larger
    sizes.extend([0, 10, 10, 0, 0, 10]); // empty ones inside a run
    sizes.extend([1232, 1232, 1232, 1233, 1233, 1232]); // at and over the segment limit
    sizes.extend(vec![8; 100]); // many tiny ones, then a shorter one
    sizes.push(7);
    sizes.extend(vec![1100; 60]); // a total over 65,000 bytes
    sizes.extend([300, 200, 300]); // shorter, then longer again
    if round == 0 {
        sizes.push(60_000); // one datagram far over a segment
    }
    sizes
}

/// Datagram number `seq` to a peer, of `size` bytes: it says which it is.
fn payload(peer: usize, seq: usize, size: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..size).map(|i| (i + seq * 7 + peer) as u8).collect();
    if size >= 4 {
        p[..4].copy_from_slice(&(seq as u32).to_be_bytes());
    }
    p
}

const ROUNDS: usize = 3;

/// Every datagram peer `peer` must get, in order.
fn expected(peer: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for round in 0..ROUNDS {
        for size in block(round) {
            let seq = out.len();
            out.push(payload(peer, seq, size));
        }
    }
    out
}

/// "join" registers the sender (answered "ok"); "go" writes every block to every peer
/// joined, interleaved by block; "stats" answers the endpoint's stats as text.
struct Fanout {
    peers: Vec<SocketAddr>,
    errors: mpsc::Sender<String>,
}

impl DatagramHandler<RawCodec> for Fanout {
    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, peer: SocketAddr) {
        match &msg[..] {
            b"join" => {
                self.peers.push(peer);
                s.write_to(peer, Bytes::from_static(b"ok")).unwrap();
            }
            b"go" => {
                let mut seq = vec![0usize; self.peers.len()];
                for round in 0..ROUNDS {
                    for (i, &to) in self.peers.iter().enumerate() {
                        for size in block(round) {
                            let p = payload(i, seq[i], size);
                            seq[i] += 1;
                            if let Err(e) = s.write_to(to, Bytes::from(p)) {
                                let _ = self.errors.send(format!("write_to: {e}"));
                            }
                        }
                    }
                }
            }
            b"stats" => {
                let st = s.stats();
                let text = format!(
                    "{} {} {} {}",
                    st.datagrams_out, st.messages_out, st.bytes_out, st.dropped_out
                );
                s.write_to(peer, Bytes::from(text)).unwrap();
            }
            _ => {}
        }
    }

    fn on_error(&mut self, _: &mut DatagramSession<RawCodec>, error: &Error) {
        let _ = self.errors.send(format!("on_error: {error}"));
    }
}

/// A peer socket on `ip` with a receive buffer large enough for its share.
fn peer(ip: &str) -> StdUdpSocket {
    let socket = StdUdpSocket::bind(format!("{ip}:0")).expect("bind a peer");
    let size: libc::c_int = 4 << 20;
    // SAFETY: a valid socket and a c_int option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF: {}", io::Error::last_os_error());
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket
}

fn recv(socket: &StdUdpSocket) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 65_536];
    let n = socket.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Runs the fan-out to `peers` peers on `ip` (a loopback address literal), the endpoint's
/// send buffer `send_buffer` bytes.
fn fanout(ip: &str, host: &str, peers: usize, send_buffer: usize) {
    fanout_batched(ip, host, peers, send_buffer, 32)
}

/// [`fanout`] with `batch` datagrams per `sendmmsg`.
fn fanout_batched(ip: &str, host: &str, peers: usize, send_buffer: usize, batch: usize) {
    let (err_tx, err_rx) = mpsc::channel();
    let endpoint = UdpEndpoint::builder()
        .udp_options(
            UdpOptions::default()
                .recv_buffer_size(Some(4 << 20))
                .send_buffer_size(Some(send_buffer))
                .batch_size(batch),
        )
        .session_options(SessionOptions::default().max_outbound(16 << 20))
        .bind(format!("{host}:0"), move |_| {
            Ok((
                RawCodec,
                Fanout {
                    peers: Vec::new(),
                    errors: err_tx,
                },
            ))
        })
        .expect("bind the endpoint");
    let mut addr = endpoint.local_addr();
    if addr.ip().is_unspecified() {
        // A dual-stack endpoint: the peers reach it at the loopback of their family.
        addr.set_ip(ip.trim_matches(['[', ']']).parse().unwrap());
    }
    let server = Running::serve("udp-fanout", endpoint);

    let sockets: Vec<StdUdpSocket> = (0..peers).map(|_| peer(ip)).collect();
    for s in &sockets {
        s.send_to(b"join", addr).unwrap();
        assert_eq!(recv(s).expect("the join answer"), b"ok");
    }
    // Each peer reads on its own thread, so no buffer overflows while the others wait.
    let readers: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            thread::spawn(move || {
                let want = expected(i);
                let mut got = Vec::with_capacity(want.len());
                let deadline = Instant::now() + Duration::from_secs(20);
                while got.len() < want.len() && Instant::now() < deadline {
                    match recv(&s) {
                        Ok(d) => got.push(d),
                        Err(_) => break,
                    }
                }
                (s, want, got)
            })
        })
        .collect();
    let control = peer(ip);
    control.send_to(b"go", addr).unwrap();
    let mut total = 2 * peers as u64; // the "ok"s
    let mut sockets = Vec::new();
    for (i, r) in readers.into_iter().enumerate() {
        let (s, want, got) = r.join().unwrap();
        total += want.len() as u64;
        assert_eq!(got.len(), want.len(), "peer {i}: datagrams received");
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g == w,
                "peer {i}: datagram {k} is {} bytes starting {:02x?}, not the {} bytes sent",
                g.len(),
                &g[..g.len().min(8)],
                w.len()
            );
        }
        sockets.push(s);
    }
    // Nothing more for anyone: no datagram was split, merged or sent twice.
    for (i, s) in sockets.iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(d) = recv(s) {
            panic!("peer {i}: a datagram too many, of {} bytes", d.len());
        }
    }
    control.send_to(b"stats", addr).unwrap();
    let stats = String::from_utf8(recv(&control).expect("the stats")).unwrap();
    let fields: Vec<u64> = stats.split(' ').map(|f| f.parse().unwrap()).collect();
    total -= peers as u64; // the "ok"s were counted twice above
    assert_eq!(fields[0], total, "datagrams_out (stats: {stats})");
    assert_eq!(fields[1], total, "messages_out (stats: {stats})");
    assert_eq!(fields[3], 0, "dropped_out (stats: {stats})");
    server.stop();
    let errors: Vec<String> = err_rx.try_iter().collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn an_endpoint_fanning_out_to_many_peers_over_ipv4_keeps_every_datagram_in_order() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        fanout("127.0.0.1", "127.0.0.1", 4, 4 << 20);
    });
}

#[test]
fn an_endpoint_fanning_out_to_many_peers_over_ipv6_keeps_every_datagram_in_order() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        if StdUdpSocket::bind("[::1]:0").is_err() {
            eprintln!("no IPv6 loopback here: skipped");
            return;
        }
        fanout("[::1]", "[::1]", 3, 4 << 20);
    });
}

/// A dual-stack endpoint (bound on `::`) answering IPv4 peers: its replies go to
/// IPv4-mapped addresses, through the IPv4 half of an IPv6 socket.
#[test]
fn a_dual_stack_endpoint_fanning_out_to_ipv4_peers_keeps_every_datagram_in_order() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        if StdUdpSocket::bind("[::]:0").is_err() {
            eprintln!("no IPv6 here: skipped");
            return;
        }
        fanout("127.0.0.1", "[::]", 3, 4 << 20);
    });
}

/// With 64 datagrams per `sendmmsg`, a run reaches the kernel's 64 segments.
#[test]
fn runs_of_64_segments_keep_every_datagram_in_order() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        fanout_batched("127.0.0.1", "127.0.0.1", 3, 4 << 20, 64);
    });
}

/// A send buffer of a few KiB: `sendmmsg` sends some messages (one merged run fills it)
/// and stops, over and over. Nothing may be lost, repeated or reordered, and the stats
/// still count datagrams.
#[test]
fn a_tiny_send_buffer_cuts_batches_short_and_loses_nothing() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        fanout("127.0.0.1", "127.0.0.1", 3, 4096);
    });
}

/// `UDP_GRO` on a receiving socket (Linux): a run the sender segmented reaches it in one
/// piece, so the receiver can tell whether the sender merged it.
const UDP_GRO: libc::c_int = 104;

/// Writes a run of `count` datagrams of `size` bytes to the peer named in the request
/// ("run <addr>"), after a run of the same shape to `127.0.0.1:0` (which no datagram may
/// be sent to: `EINVAL`) when the request says "bad-then-run <addr>".
struct Runs;

impl DatagramHandler<RawCodec> for Runs {
    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, _: SocketAddr) {
        let text = String::from_utf8_lossy(&msg).into_owned();
        let mut words = text.split(' ');
        let (Some(what), Some(to)) = (words.next(), words.next()) else {
            return;
        };
        let to: SocketAddr = to.parse().unwrap();
        if what == "bad-then-run" {
            let nowhere: SocketAddr = "127.0.0.1:0".parse().unwrap();
            for _ in 0..5 {
                let _ = s.write_to(nowhere, Bytes::from(vec![1u8; 100]));
            }
        }
        for i in 0..20u8 {
            s.write_to(to, Bytes::from(vec![i; 100])).unwrap();
        }
    }
}

/// The lengths of what a `UDP_GRO` socket reads until 20 datagrams of 100 bytes are in.
fn gro_reads(socket: &StdUdpSocket) -> Vec<usize> {
    let mut lens = Vec::new();
    let mut total = 0;
    while total < 2000 {
        let n = recv(socket).expect("the run").len();
        assert!(n > 0 && n % 100 == 0, "a read of {n} bytes");
        total += n;
        lens.push(n);
    }
    lens
}

/// A write to a destination the kernel refuses outright (`EINVAL`: port 0; the same goes
/// for an IPv6 link-local address without a scope) is the app's mistake, not the path
/// refusing segmentation: it must not turn segmentation off for every later run to every
/// other peer. The receiver tells merged runs apart with `UDP_GRO`.
#[test]
fn a_refused_destination_does_not_turn_segmentation_off_for_everyone() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let endpoint = UdpEndpoint::builder()
            .bind("127.0.0.1:0", |_| Ok((RawCodec, Runs)))
            .expect("bind the endpoint");
        let addr = endpoint.local_addr();
        let server = Running::serve("udp-runs", endpoint);
        let receiver = peer("127.0.0.1");
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and a c_int option value of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                receiver.as_raw_fd(),
                libc::SOL_UDP,
                UDP_GRO,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            eprintln!("no UDP_GRO here: skipped");
            server.stop();
            return;
        }
        let to = receiver.local_addr().unwrap();
        let control = peer("127.0.0.1");
        control
            .send_to(format!("run {to}").as_bytes(), addr)
            .unwrap();
        let before = gro_reads(&receiver);
        if before.len() == 20 {
            eprintln!("runs are not merged on this kernel: skipped");
            server.stop();
            return;
        }
        control
            .send_to(format!("bad-then-run {to}").as_bytes(), addr)
            .unwrap();
        let during = gro_reads(&receiver);
        control
            .send_to(format!("run {to}").as_bytes(), addr)
            .unwrap();
        let after = gro_reads(&receiver);
        server.stop();
        println!("reads: before {before:?}, during {during:?}, after {after:?}");
        assert!(
            after.len() < 20,
            "after one write to a refused destination every run goes datagram by datagram \
             (reads before: {before:?}, during: {during:?}, after: {after:?})"
        );
    });
}

/// What the bursting client saw at each cron tick: datagrams written so far, and the
/// session's `datagrams_out` and `dropped_out`.
type Ledger = std::sync::Arc<std::sync::Mutex<Vec<(u64, u64, u64)>>>;

/// Writes a burst of 20 datagrams of 100 bytes (numbered) to its connected peer on every
/// cron tick, noting the ledger first.
struct Burster {
    written: u64,
    ledger: Ledger,
}

impl DatagramHandler<RawCodec> for Burster {
    fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: Bytes, _: SocketAddr) {}

    fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> io::Result<()> {
        s.set_cron_period(Some(Duration::from_millis(10)));
        Ok(())
    }

    fn on_cron(&mut self, s: &mut DatagramSession<RawCodec>) {
        let st = s.stats();
        self.ledger
            .lock()
            .unwrap()
            .push((self.written, st.datagrams_out, st.dropped_out));
        for _ in 0..20 {
            let mut p = vec![0u8; 100];
            p[..8].copy_from_slice(&self.written.to_be_bytes());
            self.written += 1;
            let _ = s.write(Bytes::from(p));
        }
    }
}

/// A connected client's peer goes away mid-stream and comes back: the ICMP errors cut
/// merged runs, yet every datagram is either sent or counted dropped, and what the peer
/// gets is in order with no repeats.
#[test]
fn refused_runs_on_a_connected_socket_are_counted_and_the_rest_go_in_order() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let first = peer("127.0.0.1");
        let at = first.local_addr().unwrap();
        let ledger = Ledger::default();
        let for_client = ledger.clone();
        let client = getty::udp::UdpClient::builder()
            .probe_wait(Duration::from_millis(50))
            .build(at, move |_| {
                Ok((
                    RawCodec,
                    Burster {
                        written: 0,
                        ledger: for_client.clone(),
                    },
                ))
            })
            .expect("build the client");
        let running = Running::serve("udp-burster", client);
        let mut seqs = Vec::new();
        let mut read_some = |s: &StdUdpSocket, n: usize| {
            for _ in 0..n {
                match recv(s) {
                    Ok(d) if d.len() == 100 => {
                        seqs.push(u64::from_be_bytes(d[..8].try_into().unwrap()))
                    }
                    Ok(_) => {} // the dial's probe
                    Err(e) => panic!("no datagram: {e}"),
                }
            }
        };
        read_some(&first, 100);
        drop(first);
        thread::sleep(Duration::from_millis(150));
        let again = StdUdpSocket::bind(at).expect("the same port again");
        again
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        read_some(&again, 100);
        running.stop();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "out of order or repeated: {seqs:?}"
        );
        let ledger = ledger.lock().unwrap();
        let mut checked = 0;
        for &(written, out, dropped) in ledger.iter() {
            // Between bursts the queue is empty on loopback: every datagram is accounted.
            assert_eq!(out + dropped, written, "ledger {ledger:?}");
            checked += 1;
        }
        assert!(checked > 10);
        // The kernel reports a refusal to whichever call comes first: often the receive.
        let dropped = ledger.last().map_or(0, |l| l.2);
        println!("datagrams dropped on a refused send: {dropped}");
    });
}
