//! Hostile peers on real sockets, each beside a well-behaved bystander whose echoes are
//! checked byte for byte while the attack runs: slowloris on the WebSocket upgrade and on
//! the TLS handshake, lying length headers, half-closed peers, connection churn, and UDP
//! floods of random datagrams. Every test prints its figures (time to close, latency,
//! descriptors, RSS); the bounds are generous, since they catch hangs, leaks and lost
//! bytes, not speed.
#![cfg(target_os = "linux")]

mod common;

use std::io::Write;
#[cfg(any(feature = "ws", feature = "tls"))]
use std::io::{self, Read};
#[cfg(any(feature = "ws", feature = "tls"))]
use std::net::TcpStream;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, LengthFieldCodec};
#[cfg(feature = "ws")]
use getty::codec::{Message, MessageCodec};
use getty::tcp::TcpServer;
use getty::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
#[cfg(feature = "ws")]
use getty::ws::{Ws, WsServer};
use getty::SessionOptions;
#[cfg(feature = "ws")]
use getty::{Handler, Session};

const TEST_LIMIT: Duration = Duration::from_secs(120);

/// The handshake timeout the slowloris tests give their servers.
#[cfg(any(feature = "ws", feature = "tls"))]
const HANDSHAKE: Duration = Duration::from_millis(1500);

/// Slow peers per slowloris test: many more than a server has handshakes in flight
/// normally, few enough for the test's own descriptor limit.
#[cfg(any(feature = "ws", feature = "tls"))]
const SLOW_PEERS: usize = 300;

#[cfg(feature = "ws")]
struct WsEcho;

#[cfg(feature = "ws")]
impl Handler<MessageCodec, Ws> for WsEcho {
    fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
        let _ = s.write(msg);
    }
}

/// Percentiles of `samples` (sorted here), as "p50 / p99 / max" in microseconds.
fn percentiles(samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_micros();
    format!(
        "p50 {} µs / p99 {} µs / max {} µs",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

/// Slow peers that connect, send `opening`, then one more byte of `trickle` every 100 ms,
/// never finishing their handshake. Returns, per peer, how long after connecting the
/// server closed it (`None`: still open at `give_up`), while `bystander` runs one round trip
/// per 10 ms in between and its latencies are collected.
#[cfg(any(feature = "ws", feature = "tls"))]
fn slowloris(
    addr: SocketAddr,
    opening: &[u8],
    trickle: &[u8],
    give_up: Duration,
    mut bystander: impl FnMut() -> Duration,
) -> (Vec<Option<Duration>>, Vec<Duration>) {
    let started = Instant::now();
    let mut peers: Vec<(TcpStream, Option<Duration>)> = (0..SLOW_PEERS)
        .map(|_| {
            let mut peer = connect(addr);
            peer.write_all(opening).unwrap();
            peer.set_nonblocking(true).unwrap();
            (peer, None)
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut next_byte, mut sent) = (Instant::now(), 0);
    while started.elapsed() < give_up && peers.iter().any(|(_, closed)| closed.is_none()) {
        if Instant::now() >= next_byte {
            let byte = &trickle[sent % trickle.len()..][..1];
            sent += 1;
            next_byte += Duration::from_millis(100);
            for (peer, closed) in peers.iter_mut().filter(|(_, c)| c.is_none()) {
                if peer.write(byte).is_err() {
                    *closed = Some(started.elapsed());
                }
            }
        }
        for (peer, closed) in peers.iter_mut().filter(|(_, c)| c.is_none()) {
            let mut buf = [0u8; 512];
            match peer.read(&mut buf) {
                Ok(0) => *closed = Some(started.elapsed()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => *closed = Some(started.elapsed()),
                Ok(_) => {} // an error answer (a 408 or an alert); the close follows
            }
        }
        latencies.push(bystander());
        std::thread::sleep(Duration::from_millis(10));
    }
    (
        peers.into_iter().map(|(_, closed)| closed).collect(),
        latencies,
    )
}

/// Checks every slow peer was dropped at the handshake timeout, not before it and not much
/// after, and prints the figures.
#[cfg(any(feature = "ws", feature = "tls"))]
fn check_dropped_on_time(what: &str, closed: &[Option<Duration>], latencies: &mut [Duration]) {
    let still_open = closed.iter().filter(|c| c.is_none()).count();
    let mut times: Vec<Duration> = closed.iter().flatten().copied().collect();
    println!(
        "{what}: {} slow peers, closed after {}; {still_open} still open; bystander round trips: {} ({})",
        closed.len(),
        if times.is_empty() { "-".into() } else { percentiles(&mut times) },
        latencies.len(),
        percentiles(latencies),
    );
    assert_eq!(
        still_open, 0,
        "{what}: slow peers outlived the handshake timeout"
    );
    let early = times.iter().filter(|t| **t < HANDSHAKE).count();
    assert_eq!(
        early, 0,
        "{what}: {early} slow peers were dropped before the timeout"
    );
}

#[cfg(feature = "ws")]
#[test]
fn slowloris_on_the_websocket_upgrade_is_dropped_at_the_handshake_timeout() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let server = WsServer::builder()
            .session_options(SessionOptions::default().handshake_timeout(HANDSHAKE))
            .route("/echo", |_| Ok((MessageCodec, WsEcho)))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("hostile-ws-slowloris", server);
        let mut bystander = connect(addr);
        ws_upgrade(&mut bystander);
        let mut round = 0u32;
        let (closed, mut latencies) = slowloris(
            addr,
            b"GET /echo HTTP/1.1\r\nHost: x\r\n",
            b"X-Slow: yes\r\n",
            HANDSHAKE * 4,
            || {
                round += 1;
                let payload = round.to_be_bytes();
                let began = Instant::now();
                ws_echo_roundtrip(&mut bystander, &payload);
                began.elapsed()
            },
        );
        check_dropped_on_time("ws upgrade slowloris", &closed, &mut latencies);
        ws_echo_roundtrip(&mut bystander, b"still here");
        server.stop();
    });
}

#[cfg(feature = "tls")]
#[test]
fn slowloris_on_the_tls_handshake_is_dropped_at_the_handshake_timeout() {
    use getty::codec::filter::{Filter, TlsFilter};
    use getty::tls;
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let (tx, _events) = Events::new();
        let server = TcpServer::builder()
            .tls(tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
            .session_options(SessionOptions::default().handshake_timeout(HANDSHAKE))
            .bind("127.0.0.1:0", move |_| {
                Ok((LengthFieldCodec::default(), Probe::echo(&tx)))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("hostile-tls-slowloris", server);
        // A real ClientHello, of which the slow peers send the record header and trickle
        // the rest.
        let mut hello = bytes::BytesMut::new();
        let config = tls::client_config(chain.as_bytes()).unwrap();
        TlsFilter::client(config.clone(), "localhost")
            .unwrap()
            .flush(&mut hello)
            .unwrap();
        let mut client = TlsFilter::client(config, "localhost").unwrap();
        let mut bystander = connect(addr);
        tls_exchange(&mut bystander, &mut client, b"", 0);
        let mut round = 0u32;
        let (closed, mut latencies) =
            slowloris(addr, &hello[..5], &hello[5..], HANDSHAKE * 4, || {
                round += 1;
                let payload = round.to_be_bytes();
                let began = Instant::now();
                let (plain, _) = tls_exchange(&mut bystander, &mut client, &frame(&payload), 8);
                assert_eq!(&plain[..], &frame(&payload)[..], "the bystander's echo");
                began.elapsed()
            });
        check_dropped_on_time("tls handshake slowloris", &closed, &mut latencies);
        server.stop();
    });
}

fn length_echo_server(
    options: SessionOptions,
    tx: &std::sync::mpsc::Sender<Ev>,
) -> (Running, SocketAddr) {
    let tx = tx.clone();
    let server = TcpServer::builder()
        .session_options(options)
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), Probe::echo(&tx)))
        })
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("hostile-length", server), addr)
}

#[test]
fn lying_length_headers_end_only_their_own_session() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let idle = Duration::from_millis(500);
        let options = SessionOptions::default()
            .max_message_len(1 << 20)
            .read_idle_timeout(Some(idle));
        let (tx, mut events) = Events::new();
        let (server, addr) = length_echo_server(options, &tx);
        let mut bystander = connect(addr);
        echo_roundtrip(&mut bystander, b"before");

        // The liars run on their own thread, while the bystander keeps talking (its own
        // read-idle timeout must not end it meanwhile).
        let liars = std::thread::spawn(move || {
            // A header that claims 2 GiB: refused at the header, nothing allocated for it.
            let baseline = resident_bytes();
            let began = Instant::now();
            let mut liar = connect(addr);
            liar.write_all(&(2u32 << 30).to_be_bytes()).unwrap();
            liar.write_all(&[0u8; 1000]).unwrap();
            let ended = expect_closed(&mut liar);
            let huge_took = began.elapsed();
            let growth = resident_bytes().saturating_sub(baseline);
            // A header that claims 100 bytes, then 10 bytes and silence: read idle ends it.
            let began = Instant::now();
            let mut staller = connect(addr);
            staller.write_all(&100u32.to_be_bytes()).unwrap();
            staller.write_all(&[7u8; 10]).unwrap();
            let stalled_end = expect_closed(&mut staller);
            (huge_took, ended, growth, began.elapsed(), stalled_end)
        });
        let mut rounds = 0u32;
        while !liars.is_finished() {
            echo_roundtrip(&mut bystander, &rounds.to_be_bytes());
            rounds += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        let (huge_took, ended, growth, stall_took, stalled_end) = liars.join().unwrap();
        println!(
            "lying headers: 2 GiB claim closed in {huge_took:?} ({ended:?}, RSS +{} KiB); \
             100-byte claim with 10 sent closed in {stall_took:?} ({stalled_end:?}); \
             {rounds} bystander echoes meanwhile",
            growth >> 10
        );
        assert!(
            growth < 8 << 20,
            "RSS grew by {} KiB for a lie",
            growth >> 10
        );
        assert!(stall_took >= idle, "closed before the read-idle timeout");
        let too_long = events.count(|e| {
            matches!(
                e,
                Ev::Error {
                    err: ErrKind::MessageTooLong { .. },
                    ..
                }
            )
        });
        let idle_errors = events.count(|e| {
            matches!(
                e,
                Ev::Error {
                    err: ErrKind::ReadIdle(_),
                    ..
                }
            )
        });
        assert!(too_long + idle_errors >= 1, "the handler heard why");
        echo_roundtrip(&mut bystander, b"after");
        server.stop();
    });
}

/// The environment variable that makes `length_server_child` serve.
const CHILD_SERVER: &str = "GETTY_HOSTILE_CHILD_SERVER";

/// Not a test of its own: the server of the test below, run as a child process so that its
/// address space is its own to measure. It prints its address, then serves a
/// length-prefixed echo (64 MiB messages allowed) until its standard input closes.
#[test]
#[ignore]
fn length_server_child() {
    if std::env::var_os(CHILD_SERVER).is_none() {
        return;
    }
    let (tx, _unheard) = Events::new();
    let server = TcpServer::builder()
        .session_options(SessionOptions::default().max_message_len(64 << 20))
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), Probe::echo(&tx)))
        })
        .unwrap();
    println!("listening on {}", server.local_addr());
    let running = Running::serve("hostile-child", server);
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    running.stop();
}

/// The virtual memory size of process `pid` (what it has reserved, touched or not).
fn virtual_bytes(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/PID/status");
    kib << 10
}

/// A length header below the limit that the body never follows: the server grows its
/// read buffer with the bytes that come, not by what the header claims. (It once reserved
/// the whole claim at once: a hundred 60 MiB lies reserved 6 GiB.)
#[test]
fn lying_headers_below_the_limit_reserve_what_was_sent_not_what_was_claimed() {
    watchdog(TEST_LIMIT, || {
        let me = std::env::current_exe().unwrap();
        let mut child = std::process::Command::new(me)
            .args(["--exact", "length_server_child", "--ignored", "--nocapture"])
            .env(CHILD_SERVER, "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let _child = Reaped(child);
        let addr: SocketAddr = lines
            .find_map(|l| l.ok()?.strip_prefix("listening on ")?.parse().ok())
            .expect("the child's address");
        let mut bystander = connect(addr);
        echo_roundtrip(&mut bystander, b"before");

        const LIARS: usize = 100;
        const CLAIM: u32 = 60 << 20;
        let baseline = virtual_bytes(pid);
        let mut liars: Vec<_> = (0..LIARS).map(|_| connect(addr)).collect();
        for liar in &mut liars {
            liar.write_all(&CLAIM.to_be_bytes()).unwrap();
            liar.write_all(&[1u8; 1000]).unwrap();
        }
        // Every liar's bytes were read once the bystander, connected first, is answered
        // after them (one reactor, sessions served in turn).
        std::thread::sleep(Duration::from_millis(200));
        echo_roundtrip(&mut bystander, b"during");
        let growth = virtual_bytes(pid).saturating_sub(baseline);
        println!(
            "lying headers below the limit: {LIARS} claims of {} MiB with 1000 bytes each \
             grew the server's address space by {} KiB",
            CLAIM >> 20,
            growth >> 10
        );
        assert!(
            growth < 256 << 20,
            "the server reserved {} MiB for {LIARS} lies",
            growth >> 20
        );
        drop(liars);
        echo_roundtrip(&mut bystander, b"after");
    });
}

#[test]
fn a_half_closed_peer_gets_every_reply_then_eof() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, _events) = Events::new();
        let (server, addr) = length_echo_server(SessionOptions::default(), &tx);
        let mut bystander = connect(addr);
        let mut ends = Vec::new();
        for round in 0..20u32 {
            let mut peer = connect(addr);
            // Frames of growing size in one write, the last one cut short: every complete
            // frame is answered, then the connection ends.
            let count = 50 + round as usize * 10;
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for i in 0..count {
                let payload = vec![(i % 251) as u8; 1 + i * 37 % 3000];
                wire.extend_from_slice(&frame(&payload));
                expected.extend_from_slice(&frame(&payload));
            }
            wire.extend_from_slice(&frame(b"never finished")[..6]);
            peer.write_all(&wire).unwrap();
            peer.shutdown(std::net::Shutdown::Write).unwrap();
            let (got, ended) = read_to_end(&mut peer);
            assert_eq!(
                got.len(),
                expected.len(),
                "round {round}: every reply, whole"
            );
            assert!(
                got == expected,
                "round {round}: replies in order, byte for byte"
            );
            ends.push(ended);
            echo_roundtrip(&mut bystander, &round.to_be_bytes());
        }
        let resets = ends.iter().filter(|e| **e == Ended::Reset).count();
        println!(
            "half-closed peers: 20 rounds of 50..240 frames and a cut one, every reply whole, \
             then {} FINs and {resets} resets",
            ends.len() - resets
        );
        server.stop();
    });
}

struct UdpEcho;

impl DatagramHandler<LengthFieldCodec> for UdpEcho {
    fn on_message(
        &mut self,
        s: &mut DatagramSession<LengthFieldCodec>,
        msg: Bytes,
        peer: SocketAddr,
    ) {
        let _ = s.write_to(peer, msg);
    }
}

/// Descriptors open in this process.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn connection_churn_leaves_descriptors_and_sessions_at_baseline() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let (tx, _events) = Events::new();
        let (server, addr) = length_echo_server(SessionOptions::default(), &tx);
        let mut bystander = connect(addr);
        echo_roundtrip(&mut bystander, b"warm");
        let (fds, entries, rss) = (open_descriptors(), server.entry_count(), resident_bytes());
        let cycles = 20_000;
        let began = Instant::now();
        for i in 0..cycles {
            let peer = match try_connect(addr) {
                Ok(peer) => peer,
                Err(e) => panic!("connect {i} failed: {e}"),
            };
            if i % 2 == 0 {
                let _ = (&peer).write_all(&frame(b"hello"));
            }
            set_linger_zero(&peer); // a reset, not a FIN: no TIME_WAIT on either side
            drop(peer);
            if i % 1000 == 999 {
                echo_roundtrip(&mut bystander, &(i as u32).to_be_bytes());
            }
        }
        let took = began.elapsed();
        let deadline = Instant::now() + STEP;
        while server.entry_count() > entries && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (fds_after, entries_after) = (open_descriptors(), server.entry_count());
        let growth = resident_bytes().saturating_sub(rss);
        println!(
            "churn: {cycles} connect/reset cycles in {took:?}; descriptors {fds} -> {fds_after}, \
             sessions {entries} -> {entries_after}, RSS +{} KiB",
            growth >> 10
        );
        assert_eq!(entries_after, entries, "every churned session ended");
        assert!(
            fds_after <= fds + 2,
            "descriptors leaked: {fds} -> {fds_after}"
        );
        assert!(growth < 16 << 20, "RSS grew by {} KiB", growth >> 10);
        echo_roundtrip(&mut bystander, b"after");
        server.stop();
    });
}

#[test]
fn a_udp_flood_of_random_datagrams_costs_no_bystander_an_echo() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let endpoint = UdpEndpoint::builder()
            .bind("127.0.0.1:0", |_| {
                Ok((LengthFieldCodec::default(), UdpEcho))
            })
            .unwrap();
        let addr = endpoint.local_addr();
        let server = Running::serve("hostile-udp-flood", endpoint);
        let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
        let bystander = udp_socket();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut flood, mut echoed, mut lost) = (0usize, 0usize, 0usize);
        let mut latencies = Vec::new();
        let began = Instant::now();
        for round in 0..200u32 {
            // Paced in bursts of 50, about what the socket's default receive buffer holds:
            // a flood faster than that is dropped by the kernel, bystander and all, which
            // says nothing about the endpoint.
            for burst in 0..5 {
                for _ in 0..50 {
                    let len = (random() % 1400) as usize;
                    let junk: Vec<u8> = (0..len).map(|_| random() as u8).collect();
                    if flooder.send_to(&junk, addr).is_ok() {
                        flood += 1;
                    }
                }
                if burst < 4 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            let payload = frame(&round.to_be_bytes());
            let sent_at = Instant::now();
            bystander.send_to(&payload, addr).unwrap();
            let mut buf = [0u8; 2048];
            // The kernel may drop a datagram under a flood: a lost echo is counted, a
            // wrong one fails the test.
            bystander
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            match bystander.recv_from(&mut buf) {
                Ok((n, _)) => {
                    assert_eq!(&buf[..n], &payload[..], "round {round}: the echo");
                    latencies.push(sent_at.elapsed());
                    echoed += 1;
                }
                Err(_) => lost += 1,
            }
        }
        println!(
            "udp flood: {flood} random datagrams in {:?}; bystander {echoed} echoed, {lost} lost \
             ({})",
            began.elapsed(),
            percentiles(&mut latencies)
        );
        assert!(echoed >= 190, "the bystander lost {lost} of 200 echoes");
        // The endpoint is alive and answers at once once the flood stops.
        bystander.set_read_timeout(Some(STEP)).unwrap();
        let payload = frame(b"after");
        bystander.send_to(&payload, addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = bystander.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &payload[..]);
        server.stop();
    });
}
