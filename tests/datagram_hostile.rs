//! Hostile peers of the datagram transports and unix sockets: a unix stream peer that
//! half-closes behind a paused session, replies to autobound and abstract unix datagram
//! peers, destinations a UDP socket cannot reach (another family, too long for IPv4 on a
//! dual-stack socket), and what an idle datagram endpoint costs.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram as StdUnixDatagram, UnixStream as StdUnixStream};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use common::*;
use getty::codec::{Bytes, LengthFieldCodec, RawCodec};
use getty::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
use getty::unix::{UnixDatagramEndpoint, UnixServer};
use getty::{Error, Handler, Metrics, Session, Unix, UnixAddr};

const TEST_LIMIT: Duration = Duration::from_secs(90);

fn unique(name: &str) -> String {
    format!("getty-review-dgram-{}-{name}", std::process::id())
}

// ---------------------------------------------------------------------------------------
// Unix stream: half-close behind a paused session
// ---------------------------------------------------------------------------------------

struct StreamEcho;

impl Handler<LengthFieldCodec, Unix> for StreamEcho {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec, Unix>, msg: Bytes) {
        s.write(msg).unwrap();
    }
}

/// A peer writes 600 requests (replies 1 B to 48 KiB, about 14 MB in all, far past the
/// watermarks, so the session pauses reading), then shuts its write side: it must get
/// every reply, whole and in order, then EOF.
fn half_close_gets_every_reply(addr: UnixAddr, connect: impl Fn() -> StdUnixStream) {
    let server = UnixServer::bind(addr, |_| Ok((LengthFieldCodec::default(), StreamEcho)))
        .expect("bind the unix server");
    let running = Running::serve("review-unix-half", server);
    for round in 0..3usize {
        let mut peer = connect();
        peer.set_read_timeout(Some(STEP)).unwrap();
        peer.set_write_timeout(Some(STEP)).unwrap();
        let mut wire = Vec::new();
        for i in 0..600usize {
            let len = 1 + (i * 7919 + round * 13) % (48 * 1024);
            let payload: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
            wire.extend_from_slice(&frame(&payload));
        }
        let expected = wire.clone();
        let mut writer = peer.try_clone().unwrap();
        let write_side = std::thread::spawn(move || {
            writer.write_all(&wire).expect("write the requests");
            writer.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("round {round}: after {} bytes: {e}", got.len()),
            }
        }
        write_side.join().unwrap();
        assert_eq!(
            got.len(),
            expected.len(),
            "round {round}: every reply, whole"
        );
        assert!(
            got == expected,
            "round {round}: replies in order, byte for byte"
        );
    }
    running.stop();
}

#[test]
fn a_half_closed_unix_stream_peer_behind_a_paused_session_gets_every_reply() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let dir = TempDir::new("review-half");
        let path = dir.path("s.sock");
        let at = path.clone();
        half_close_gets_every_reply(UnixAddr::path(&path), move || {
            StdUnixStream::connect(&at).expect("connect")
        });
    });
}

#[test]
fn a_half_closed_abstract_unix_stream_peer_gets_every_reply() {
    use std::os::linux::net::SocketAddrExt;
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let name = unique("half");
        let n2 = name.clone();
        half_close_gets_every_reply(UnixAddr::abstract_name(&name), move || {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(n2.as_bytes()).unwrap();
            StdUnixStream::connect_addr(&addr).expect("connect")
        });
    });
}

// ---------------------------------------------------------------------------------------
// Unix datagram: replies to autobound and abstract peers
// ---------------------------------------------------------------------------------------

struct DgramEcho(Sender<String>);

impl DatagramHandler<RawCodec, UnixAddr> for DgramEcho {
    fn on_message(
        &mut self,
        s: &mut DatagramSession<RawCodec, UnixAddr>,
        msg: Bytes,
        peer: UnixAddr,
    ) {
        if let Err(e) = s.write_to(peer, msg) {
            let _ = self.0.send(format!("write_to: {e}"));
        }
    }
    fn on_error(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, error: &Error) {
        let _ = self.0.send(format!("on_error: {error}"));
    }
}

/// Binds `sock` with an address of the family alone: Linux gives it a name of its own in
/// the abstract namespace (autobind), as `bind("")` does in Python.
fn autobind(sock: &StdUnixDatagram) {
    // SAFETY: a zeroed sockaddr_un with the family set; the length covers the family only.
    let r = unsafe {
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sa_family_t>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "autobind: {}", std::io::Error::last_os_error());
}

#[test]
fn autobound_and_abstract_unix_datagram_peers_get_their_replies() {
    use std::os::linux::net::SocketAddrExt;
    watchdog(TEST_LIMIT, || {
        let (tx, errors) = mpsc::channel();
        let name = unique("dgram");
        let endpoint = UnixDatagramEndpoint::builder()
            .bind(UnixAddr::abstract_name(&name), move |_| {
                Ok((RawCodec, DgramEcho(tx.clone())))
            })
            .expect("bind the endpoint");
        let running = Running::serve("review-unix-dgram", endpoint);
        let to = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();

        let auto = StdUnixDatagram::unbound().unwrap();
        autobind(&auto);
        auto.set_read_timeout(Some(STEP)).unwrap();
        // An abstract name with a NUL byte inside and bytes that are not UTF-8.
        let odd = format!("{}\0\u{1}", unique("odd")).into_bytes();
        let mut odd = odd;
        odd.push(0xff);
        let named = StdUnixDatagram::bind_addr(
            &std::os::unix::net::SocketAddr::from_abstract_name(&odd).unwrap(),
        )
        .unwrap();
        named.set_read_timeout(Some(STEP)).unwrap();
        for (which, sock) in [("autobound", &auto), ("odd abstract", &named)] {
            for i in 0..20u8 {
                let msg = vec![i; 1 + i as usize * 100];
                sock.send_to_addr(&msg, &to).unwrap();
                let mut buf = vec![0u8; 4096];
                let n = sock.recv(&mut buf).unwrap_or_else(|e| {
                    panic!(
                        "{which}: reply {i}: {e}; {:?}",
                        errors.try_iter().collect::<Vec<_>>()
                    )
                });
                assert_eq!(&buf[..n], &msg[..], "{which}: reply {i}");
            }
        }
        running.stop();
        let seen: Vec<String> = errors.try_iter().collect();
        assert!(seen.is_empty(), "errors: {seen:?}");
    });
}

// ---------------------------------------------------------------------------------------
// UDP: destinations the socket cannot reach
// ---------------------------------------------------------------------------------------

/// "to:<addr>:<len>" writes `len` bytes to that address, then "ok" to the sender;
/// anything else is echoed. Reports write results and errors.
struct Director(Sender<String>);

impl DatagramHandler<RawCodec> for Director {
    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, peer: SocketAddr) {
        if let Some(rest) = msg.strip_prefix(b"to:") {
            let text = std::str::from_utf8(rest).unwrap();
            let (addr, len) = text.rsplit_once(':').unwrap();
            let addr: SocketAddr = addr.parse().unwrap();
            let len: usize = len.parse().unwrap();
            for _ in 0..3 {
                let r = s.write_to(addr, Bytes::from(vec![7u8; len]));
                let _ = self.0.send(format!("write_to {addr}: {r:?}"));
            }
            s.write_to(peer, Bytes::from_static(b"ok")).unwrap();
            return;
        }
        s.write_to(peer, msg).unwrap();
    }
    fn on_error(&mut self, s: &mut DatagramSession<RawCodec>, error: &Error) {
        let _ = self.0.send(format!(
            "on_error: {error} (dropped_out {})",
            s.stats().dropped_out
        ));
    }
}

fn bystander_roundtrips(peer: &StdUdpSocket, to: SocketAddr, n: usize) {
    for i in 0..n {
        let msg = format!("hello {i}");
        peer.send_to(msg.as_bytes(), to).unwrap();
        let mut buf = [0u8; 64];
        let (len, _) = peer.recv_from(&mut buf).expect("the echo");
        assert_eq!(&buf[..len], msg.as_bytes());
    }
}

/// On a dual-stack endpoint (`[::]`), `max_datagram_len` says 65,527 (IPv6), but an IPv4
/// peer (seen as `::ffff:a.b.c.d`) takes at most 65,507: what happens to a write of 65,510
/// bytes to it? Expected: a clear error (at `write_to` or in `on_error`), once per
/// datagram, and the endpoint serves everyone on.
#[test]
fn a_datagram_too_long_for_an_ipv4_peer_of_a_dual_stack_endpoint_fails_clearly() {
    watchdog(TEST_LIMIT, || {
        let (tx, events) = mpsc::channel();
        let endpoint =
            match UdpEndpoint::bind("[::]:0", move |_| Ok((RawCodec, Director(tx.clone())))) {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("no IPv6 here ({e}): skipped");
                    return;
                }
            };
        let port = endpoint.local_addr().port();
        let running = Running::serve("review-udp-dual", endpoint);
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let victim = udp_socket();
        let control = udp_socket();
        let mapped = match victim.local_addr().unwrap() {
            SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
            other => other,
        };
        control
            .send_to(format!("to:{mapped}:65510").as_bytes(), to)
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = control.recv_from(&mut buf).expect("ok");
        assert_eq!(&buf[..n], b"ok");
        bystander_roundtrips(&control, to, 20);
        running.stop();
        let seen: Vec<String> = events.try_iter().collect();
        eprintln!("{seen:#?}");
        let refused_at_write = seen.iter().filter(|e| e.contains("Err(")).count();
        let reported = seen.iter().filter(|e| e.starts_with("on_error")).count();
        assert_eq!(
            refused_at_write + reported,
            3,
            "each of the three datagrams refused or reported once: {seen:#?}"
        );
    });
}

/// An IPv4 endpoint asked to write to an IPv6 address: a clear error per datagram, and
/// the endpoint serves everyone on.
#[test]
fn a_write_to_an_address_of_another_family_fails_clearly_and_alone() {
    watchdog(TEST_LIMIT, || {
        let (tx, events) = mpsc::channel();
        let endpoint =
            UdpEndpoint::bind("127.0.0.1:0", move |_| Ok((RawCodec, Director(tx.clone()))))
                .unwrap();
        let to = endpoint.local_addr();
        let running = Running::serve("review-udp-family", endpoint);
        let control = udp_socket();
        control.send_to(b"to:[::1]:4000:100", to).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = control.recv_from(&mut buf).expect("ok");
        assert_eq!(&buf[..n], b"ok");
        bystander_roundtrips(&control, to, 20);
        running.stop();
        let seen: Vec<String> = events.try_iter().collect();
        eprintln!("{seen:#?}");
        let refused_at_write = seen.iter().filter(|e| e.contains("Err(")).count();
        let reported = seen.iter().filter(|e| e.starts_with("on_error")).count();
        assert_eq!(
            refused_at_write + reported,
            3,
            "each of the three datagrams refused or reported once: {seen:#?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Idle cost
// ---------------------------------------------------------------------------------------

/// After traffic, an endpoint nobody writes to makes the loop turn no more: counted over a
/// second with the reactor's own turn counter.
#[test]
fn idle_datagram_endpoints_cost_no_wakeups() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, _events) = mpsc::channel();
        let tx2 = tx.clone();
        let udp = UdpEndpoint::bind("127.0.0.1:0", move |_| Ok((RawCodec, Director(tx.clone()))))
            .unwrap();
        let udp_addr = udp.local_addr();
        let running = Running::serve("review-idle", udp);
        let name = unique("idle");
        let unix = UnixDatagramEndpoint::builder()
            .bind(UnixAddr::abstract_name(&name), move |_| {
                Ok((RawCodec, DgramEcho(tx2.clone())))
            })
            .unwrap();
        running.run_on(move |s| {
            s.spawn(unix);
        });
        // Traffic on both, including a unix receiver that fills up and then goes away.
        let peer = udp_socket();
        bystander_roundtrips(&peer, udp_addr, 50);
        {
            use std::os::linux::net::SocketAddrExt;
            let to = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let silent = StdUnixDatagram::unbound().unwrap();
            autobind(&silent);
            silent.set_nonblocking(true).unwrap();
            for i in 0..40u8 {
                let _ = silent.send_to_addr(&[i; 100], &to);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Let the parked receiver's retries and drops run out (the receiver closed).
        std::thread::sleep(Duration::from_millis(500));
        let turns = |r: &Running| Metrics::of(r.handle()).unwrap().reactor.turns;
        let before = turns(&running);
        std::thread::sleep(Duration::from_secs(1));
        let spent = turns(&running) - before;
        // The metrics query itself costs a turn or two.
        assert!(spent <= 4, "the idle loop turned {spent} times in a second");
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// UDP with pooled buffers smaller than a datagram
// ---------------------------------------------------------------------------------------

struct UdpEcho(Sender<String>);

impl DatagramHandler<RawCodec> for UdpEcho {
    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, peer: SocketAddr) {
        if let Err(e) = s.write_to(peer, msg) {
            let _ = self.0.send(format!("write_to: {e}"));
        }
    }
    fn on_error(&mut self, _: &mut DatagramSession<RawCodec>, error: &Error) {
        let _ = self.0.send(format!("on_error: {error}"));
    }
}

/// A reactor whose pooled buffers (4 KiB) are smaller than the datagrams: the receive
/// slots take the first 4 KiB, overflow regions the rest. Datagrams queued before the
/// endpoint reads come in one batch, large ones at several slots of it; every one must be
/// echoed whole, the largest UDP datagram included, and one over `max_message_len`
/// reported with its real length.
#[test]
fn udp_datagrams_larger_than_the_pooled_buffers_arrive_whole() {
    use getty::reactor::BufPool;
    use getty::Reactor;
    watchdog(TEST_LIMIT, || {
        let (tx, errors) = mpsc::channel();
        let endpoint = UdpEndpoint::builder()
            .udp_options(getty::udp::UdpOptions::default().recv_buffer_size(Some(4 << 20)))
            .session_options(getty::SessionOptions::default().max_message_len(60_000))
            .bind("127.0.0.1:0", move |_| Ok((RawCodec, UdpEcho(tx.clone()))))
            .unwrap();
        let to = endpoint.local_addr();
        let peer = udp_socket();
        socket2::SockRef::from(&peer)
            .set_recv_buffer_size(4 << 20)
            .unwrap();
        let sizes = [
            60_000usize,
            10,
            5_000,
            60_001,
            4_096,
            4_097,
            1,
            4_095,
            59_999,
            65_507,
            3,
        ];
        let sent: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (j * 31 + i * 7 + j / 251) as u8).collect())
            .collect();
        for d in &sent {
            peer.send_to(d, to).unwrap();
        }
        let reactor = Reactor::start_thread("review-small-pool", move |r| {
            *r = Reactor::builder()
                .buffer_pool(BufPool::new(4096, 8))
                .build()?;
            r.spawn(endpoint);
            Ok(())
        })
        .unwrap();
        let mut buf = vec![0u8; 70_000];
        for (i, want) in sent.iter().enumerate() {
            if want.len() > 60_000 {
                continue;
            }
            let n = peer.recv(&mut buf).unwrap_or_else(|e| {
                panic!("echo {i}: {e}; {:?}", errors.try_iter().collect::<Vec<_>>())
            });
            assert_eq!(n, want.len(), "echo {i}");
            assert!(buf[..n] == want[..], "echo {i} came back changed");
        }
        reactor.handle().shutdown();
        reactor.join().unwrap();
        let seen: Vec<String> = errors.try_iter().collect();
        assert_eq!(
            seen,
            vec![
                "on_error: message of 60001 bytes exceeds the maximum of 60000".to_string(),
                "on_error: message of 65507 bytes exceeds the maximum of 60000".to_string(),
            ]
        );
    });
}

// ---------------------------------------------------------------------------------------
// Unix datagram fan-out: order and no duplicates per peer through every send path
// ---------------------------------------------------------------------------------------

/// Datagram `seq` to peer `who`: its length is a function of both, most small (in the
/// queue's shared buffer), every seventh large (queued as a buffer of its own), and it says
/// which it is in its first 8 bytes.
fn fan_payload(who: u32, seq: u32) -> Vec<u8> {
    let len = if seq % 7 == 3 {
        4096 + ((seq as usize * 2654) % 16_000)
    } else {
        8 + ((seq as usize * 37 + who as usize * 11) % 300)
    };
    let mut p: Vec<u8> = (0..len)
        .map(|j| (j as u32 ^ seq.wrapping_mul(31) ^ who) as u8)
        .collect();
    p[..4].copy_from_slice(&who.to_be_bytes());
    p[4..8].copy_from_slice(&seq.to_be_bytes());
    p
}

type Accepted = std::sync::Arc<std::sync::Mutex<Vec<u32>>>;

/// "join" registers the sender; "go" writes `PER_GO` datagrams to every peer joined,
/// interleaved; what was accepted is counted per peer in `accepted`.
struct Fan {
    peers: Vec<UnixAddr>,
    accepted: Accepted,
    errors: Sender<String>,
}

const PER_GO: u32 = 200;

impl DatagramHandler<RawCodec, UnixAddr> for Fan {
    fn on_message(
        &mut self,
        s: &mut DatagramSession<RawCodec, UnixAddr>,
        msg: Bytes,
        peer: UnixAddr,
    ) {
        match &msg[..] {
            b"join" => {
                self.peers.push(peer.clone());
                self.accepted.lock().unwrap().push(0);
                s.write_to(peer, Bytes::from_static(b"ok")).unwrap();
            }
            b"go" => {
                for _ in 0..PER_GO {
                    for (who, to) in self.peers.iter().enumerate() {
                        let mut accepted = self.accepted.lock().unwrap();
                        let seq = accepted[who];
                        match s.write_to(to.clone(), Bytes::from(fan_payload(who as u32, seq))) {
                            Ok(()) => accepted[who] += 1,
                            Err(e) => {
                                let _ = self.errors.send(format!("write_to {who}: {e}"));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    fn on_error(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, error: &Error) {
        let _ = self.errors.send(format!("on_error: {error}"));
    }
}

/// Reads datagrams until `idle` passes without one (or `limit` are read), pausing
/// `pause` every 50; returns them. `stop_after`: read that many, then close.
fn fan_reader(
    sock: StdUnixDatagram,
    pause: Duration,
    stop_after: Option<usize>,
) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(buf[..n].to_vec());
            if stop_after == Some(got.len()) {
                break;
            }
            if got.len() % 50 == 0 && !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        got
    })
}

/// An unconnected unix endpoint with a small send buffer writes interleaved small and
/// large datagrams to four peers: two fast readers (one of them autobound), a slow one,
/// and one that closes after 150. Parking is bounded generously, so that only the closed
/// one may lose datagrams. Every peer must see its datagrams whole, in the order written,
/// none twice; those that stay must see all that were accepted for them.
#[test]
fn unix_fan_out_keeps_each_peers_datagrams_whole_in_order_and_once() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let dir = TempDir::new("review-fan");
        let at = dir.path("endpoint.sock");
        let (tx, errors) = mpsc::channel();
        let accepted: Accepted = Default::default();
        let acc = accepted.clone();
        let endpoint = UnixDatagramEndpoint::builder()
            .send_buffer_size(Some(48 * 1024))
            .max_parked_per_peer(32 << 20)
            .max_parked(128 << 20)
            .session_options(getty::SessionOptions::default().max_outbound(64 << 20))
            .bind(at.as_path(), move |_| {
                Ok((
                    RawCodec,
                    Fan {
                        peers: Vec::new(),
                        accepted: acc.clone(),
                        errors: tx.clone(),
                    },
                ))
            })
            .unwrap();
        let running = Running::serve("review-fan", endpoint);

        let fast = StdUnixDatagram::bind(dir.path("fast.sock")).unwrap();
        let auto = StdUnixDatagram::unbound().unwrap();
        autobind(&auto);
        let slow = StdUnixDatagram::bind(dir.path("slow.sock")).unwrap();
        let closer = StdUnixDatagram::bind(dir.path("closer.sock")).unwrap();
        let mut buf = [0u8; 16];
        for s in [&fast, &auto, &slow, &closer] {
            s.set_read_timeout(Some(STEP)).unwrap();
            s.send_to(b"join", &at).unwrap();
            let n = s.recv(&mut buf).expect("the join answer");
            assert_eq!(&buf[..n], b"ok");
        }
        let readers = vec![
            ("fast", fan_reader(fast, Duration::ZERO, None)),
            ("autobound", fan_reader(auto, Duration::ZERO, None)),
            ("slow", fan_reader(slow, Duration::from_millis(2), None)),
            ("closer", fan_reader(closer, Duration::ZERO, Some(150))),
        ];
        let control = StdUnixDatagram::unbound().unwrap();
        for _ in 0..15 {
            control.send_to(b"go", &at).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut results = Vec::new();
        for (name, r) in readers {
            results.push((name, r.join().unwrap()));
        }
        running.stop();
        let accepted = accepted.lock().unwrap().clone();
        let seen: Vec<String> = errors.try_iter().collect();
        for (who, (name, got)) in results.iter().enumerate() {
            let mut last: Option<u32> = None;
            for (i, d) in got.iter().enumerate() {
                assert!(d.len() >= 8, "{name}: datagram {i} of {} bytes", d.len());
                let w = u32::from_be_bytes(d[..4].try_into().unwrap());
                let seq = u32::from_be_bytes(d[4..8].try_into().unwrap());
                assert_eq!(w as usize, who, "{name}: datagram {i} was for peer {w}");
                if let Some(last) = last {
                    assert!(
                        seq > last,
                        "{name}: datagram {i} is seq {seq} after {last} (twice or out of order)"
                    );
                }
                assert!(
                    d[..] == fan_payload(w, seq)[..],
                    "{name}: seq {seq} came out changed"
                );
                last = Some(seq);
            }
            if *name != "closer" {
                assert_eq!(
                    got.len() as u32,
                    accepted[who],
                    "{name}: {} of {} accepted datagrams arrived; errors: {:?}",
                    got.len(),
                    accepted[who],
                    &seen[..seen.len().min(10)]
                );
            }
        }
        // Every datagram accepted for the closed peer is either one it read, one the
        // kernel held in its queue when it closed (at most its queue length, 11 by
        // default), or one reported dropped.
        let reported: u64 = seen
            .iter()
            .filter(|e| e.contains("closer.sock"))
            .map(|e| {
                let after = e.split("dropped ").nth(1).expect("a count");
                after.split(' ').next().unwrap().parse::<u64>().unwrap()
            })
            .sum();
        let lost = u64::from(accepted[3]) - results[3].1.len() as u64;
        assert!(
            reported <= lost && lost - reported <= 11,
            "the closed peer lost {lost} datagrams, {reported} reported: {seen:#?}"
        );
        eprintln!(
            "accepted {accepted:?}; received {:?}; {} errors, first: {:?}",
            results.iter().map(|(_, g)| g.len()).collect::<Vec<_>>(),
            seen.len(),
            seen.first()
        );
    });
}

// ---------------------------------------------------------------------------------------
// Closing an unconnected unix endpoint with a parked destination
// ---------------------------------------------------------------------------------------

/// Hands out its handle; "fill:<path>" writes 60 datagrams there and 5 back to the sender.
struct Parker {
    handles: Sender<getty::udp::DatagramHandle<RawCodec, UnixAddr>>,
    events: Sender<String>,
}

impl DatagramHandler<RawCodec, UnixAddr> for Parker {
    fn on_open(&mut self, s: &mut DatagramSession<RawCodec, UnixAddr>) -> std::io::Result<()> {
        let _ = self.handles.send(s.handle().expect("in a callback"));
        Ok(())
    }
    fn on_message(
        &mut self,
        s: &mut DatagramSession<RawCodec, UnixAddr>,
        msg: Bytes,
        peer: UnixAddr,
    ) {
        let path = std::str::from_utf8(&msg[5..]).unwrap().to_owned();
        for i in 0..60u8 {
            s.write_to(UnixAddr::path(&path), Bytes::from(vec![i; 100]))
                .unwrap();
        }
        for i in 0..5u8 {
            s.write_to(peer.clone(), Bytes::from(vec![i; 10])).unwrap();
        }
    }
    fn on_error(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, error: &Error) {
        let _ = self.events.send(format!("on_error: {error}"));
    }
    fn on_close(&mut self, s: &mut DatagramSession<RawCodec, UnixAddr>) {
        let _ = self
            .events
            .send(format!("on_close: dropped_out {}", s.stats().dropped_out));
    }
}

/// A graceful close of an endpoint that holds datagrams for a receiver that never reads
/// ends within the write-stall timeout, with the drop reported (by count and peer) before
/// `on_close`; the bystander got its replies.
#[test]
fn closing_a_unix_endpoint_with_a_parked_receiver_reports_the_drop_and_ends() {
    watchdog(TEST_LIMIT, || {
        let dir = TempDir::new("review-park-close");
        let at = dir.path("endpoint.sock");
        let (handles_tx, handles) = mpsc::channel();
        let (events_tx, events) = mpsc::channel();
        let endpoint = UnixDatagramEndpoint::builder()
            .session_options(
                getty::SessionOptions::default().write_stall_timeout(Duration::from_millis(300)),
            )
            .bind(at.as_path(), move |_| {
                Ok((
                    RawCodec,
                    Parker {
                        handles: handles_tx.clone(),
                        events: events_tx.clone(),
                    },
                ))
            })
            .unwrap();
        let running = Running::serve("review-park-close", endpoint);
        let handle = handles.recv_timeout(STEP).unwrap();
        let silent_path = dir.path("silent.sock");
        let silent = StdUnixDatagram::bind(&silent_path).unwrap();
        let bystander = StdUnixDatagram::bind(dir.path("bystander.sock")).unwrap();
        bystander.set_read_timeout(Some(STEP)).unwrap();
        bystander
            .send_to(format!("fill:{}", silent_path.display()).as_bytes(), &at)
            .unwrap();
        let mut buf = [0u8; 64];
        for i in 0..5u8 {
            let n = bystander.recv(&mut buf).expect("a reply to the bystander");
            assert_eq!(&buf[..n], &[i; 10][..]);
        }
        handle.close().unwrap();
        let mut seen = Vec::new();
        loop {
            let e = events
                .recv_timeout(STEP)
                .unwrap_or_else(|_| panic!("no on_close; so far: {seen:#?}"));
            seen.push(e.clone());
            if e.starts_with("on_close") {
                break;
            }
        }
        // What the silent receiver's queue held (its kernel queue length) was sent; the
        // rest was dropped and reported.
        let mut queued = 0;
        silent.set_nonblocking(true).unwrap();
        while silent.recv(&mut buf).is_ok() {
            queued += 1;
        }
        let want = 60 - queued;
        assert_eq!(
            seen.last().unwrap(),
            &format!("on_close: dropped_out {want}"),
            "{seen:#?}"
        );
        assert!(
            seen.iter()
                .any(|e| e.contains(&format!("dropped {want} datagrams"))
                    && e.contains("silent.sock")),
            "{seen:#?}"
        );
        running.stop();
    });
}

// ---------------------------------------------------------------------------------------
// UDP through a full send buffer (a rate-limited loopback in a namespace of the test's own)
// ---------------------------------------------------------------------------------------

/// Moves the calling thread into a network namespace of its own, whose loopback (up) is
/// rate-limited by a token bucket: datagrams wait in its queue charged to their socket's
/// send buffer, so that a UDP socket on it finds its buffer full (`EAGAIN`), which loopback
/// never does otherwise. The traffic stays on this namespace's loopback. False where the
/// test may not do that (not root, no `tc`).
///
/// The thread is also pinned to the CPU it runs on, and so are the threads it starts (the
/// reactor, the readers): the queue is drained both by senders and by its timer, each
/// handing packets to its own CPU's backlog, so on two CPUs the kernel itself can swap
/// two datagrams. On one, the order the peer sees is the order getty-rs sent.
fn rate_limited_loopback(rate: &str) -> bool {
    pin_to_this_cpu();
    // SAFETY: unshare with a namespace flag only affects the calling thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "no network namespace ({}): skipped",
            std::io::Error::last_os_error()
        );
        return false;
    }
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !run("ip", &["link", "set", "lo", "up"])
        || !run(
            "tc",
            &[
                "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate, "burst", "64kb",
                "latency", "20s",
            ],
        )
    {
        eprintln!("no ip or tc here: skipped");
        return false;
    }
    true
}

/// Pins the calling thread (and the threads it starts from now on) to its current CPU.
fn pin_to_this_cpu() {
    // SAFETY: plain libc calls on a zeroed cpu_set_t, for the calling thread (0).
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// "go" writes `PER_GO` datagrams to every peer joined (as [`Fan`] does, over UDP).
struct UdpFan {
    peers: Vec<SocketAddr>,
    accepted: Accepted,
    errors: Sender<String>,
    payload: fn(u32, u32) -> Vec<u8>,
    /// Datagrams written to one peer before the next.
    block: u32,
}

/// Datagram `seq` to peer `who`, all of 1,000 bytes: runs of them merge (`UDP_SEGMENT`).
fn equal_payload(who: u32, seq: u32) -> Vec<u8> {
    let mut p: Vec<u8> = (0..1000u32).map(|j| (j ^ seq ^ (who << 3)) as u8).collect();
    p[..4].copy_from_slice(&who.to_be_bytes());
    p[4..8].copy_from_slice(&seq.to_be_bytes());
    p
}

impl DatagramHandler<RawCodec> for UdpFan {
    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, peer: SocketAddr) {
        match &msg[..] {
            b"join" => {
                self.peers.push(peer);
                self.accepted.lock().unwrap().push(0);
                s.write_to(peer, Bytes::from_static(b"ok")).unwrap();
            }
            b"go" => {
                // Equal datagrams go in blocks of 25 per peer, so that they make runs.
                let block = self.block;
                for _ in 0..PER_GO / block {
                    for (who, &to) in self.peers.iter().enumerate() {
                        let mut accepted = self.accepted.lock().unwrap();
                        for _ in 0..block {
                            let seq = accepted[who];
                            match s.write_to(to, Bytes::from((self.payload)(who as u32, seq))) {
                                Ok(()) => accepted[who] += 1,
                                Err(e) => {
                                    let _ = self.errors.send(format!("write_to {who}: {e}"));
                                }
                            }
                        }
                    }
                }
            }
            b"close" => s.close(),
            _ => {}
        }
    }
    fn on_error(&mut self, _: &mut DatagramSession<RawCodec>, error: &Error) {
        let _ = self.errors.send(format!("on_error: {error}"));
    }
    fn on_close(&mut self, s: &mut DatagramSession<RawCodec>) {
        let st = s.stats();
        let _ = self.errors.send(format!(
            "on_close: {} datagrams out, {} queued, {} dropped, of {} written",
            st.datagrams_out,
            s.queued_datagrams(),
            st.dropped_out,
            st.messages_out
        ));
    }
}

/// An endpoint whose send buffer fills again and again (its datagrams wait in a rate-limited
/// loopback queue) answers two peers with interleaved small and large datagrams: each peer
/// gets every datagram accepted for it, whole, in order, once; and the reactor waits for
/// room instead of spinning (its thread's CPU time stays well under the time it took).
fn udp_through_a_full_send_buffer(
    name: &str,
    rate: &str,
    stall: Duration,
    payload: fn(u32, u32) -> Vec<u8>,
    close: bool,
) {
    {
        if !rate_limited_loopback(rate) {
            return;
        }
        let (tx, errors) = mpsc::channel();
        let accepted: Accepted = Default::default();
        let acc = accepted.clone();
        // Equal datagrams go in blocks of 25 per peer, so that they make runs.
        let equal = payload(0, 0).len() == equal_payload(0, 0).len();
        let endpoint = UdpEndpoint::builder()
            .udp_options(getty::udp::UdpOptions::default().send_buffer_size(Some(16 * 1024)))
            .session_options(
                getty::SessionOptions::default()
                    .max_outbound(64 << 20)
                    .write_stall_timeout(stall),
            )
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    RawCodec,
                    UdpFan {
                        peers: Vec::new(),
                        accepted: acc.clone(),
                        errors: tx.clone(),
                        payload,
                        block: if equal { 25 } else { 1 },
                    },
                ))
            })
            .unwrap();
        let to = endpoint.local_addr();
        let running = Running::serve(name, endpoint);
        let mut readers = Vec::new();
        for _ in 0..2 {
            let s = udp_socket();
            socket2::SockRef::from(&s)
                .set_recv_buffer_size(8 << 20)
                .unwrap();
            s.send_to(b"join", to).unwrap();
            let mut buf = [0u8; 16];
            let n = s.recv(&mut buf).expect("the join answer");
            assert_eq!(&buf[..n], b"ok");
            readers.push(std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.recv(&mut buf) {
                    got.push(buf[..n].to_vec());
                }
                got
            }));
        }
        let cpu_before = cpu_of_thread(name).expect("the reactor thread");
        let started = std::time::Instant::now();
        let control = udp_socket();
        for _ in 0..5 {
            control.send_to(b"go", to).unwrap();
        }
        if close {
            control.send_to(b"close", to).unwrap();
        }
        let results: Vec<Vec<Vec<u8>>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        let took = started.elapsed();
        let cpu = cpu_of_thread(name).unwrap() - cpu_before;
        running.stop();
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default();
        let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
        let qdisc = std::process::Command::new("tc")
            .args(["-s", "qdisc", "show", "dev", "lo"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        eprintln!("{udp:#?}\n{qdisc}");
        let accepted = accepted.lock().unwrap().clone();
        let seen: Vec<String> = errors.try_iter().collect();
        eprintln!(
            "accepted {accepted:?}, received {:?} in {took:?}, reactor CPU {cpu:?}; errors: {:?}",
            results.iter().map(Vec::len).collect::<Vec<_>>(),
            &seen[..seen.len().min(5)]
        );
        for (who, got) in results.iter().enumerate() {
            let mut last: Option<u32> = None;
            for (i, d) in got.iter().enumerate() {
                let w = u32::from_be_bytes(d[..4].try_into().unwrap());
                let seq = u32::from_be_bytes(d[4..8].try_into().unwrap());
                assert_eq!(w as usize, who, "peer {who}: datagram {i} was for {w}");
                if let Some(last) = last {
                    assert!(seq > last, "peer {who}: seq {seq} after {last}");
                }
                assert!(
                    d[..] == payload(w, seq)[..],
                    "peer {who}: seq {seq} changed"
                );
                last = Some(seq);
            }
            assert_eq!(
                got.len() as u32,
                accepted[who],
                "peer {who}: {} of {} arrived; errors {seen:?}",
                got.len(),
                accepted[who]
            );
        }
        let sent = 2 + accepted.iter().sum::<u32>();
        let want_close =
            format!("on_close: {sent} datagrams out, 0 queued, 0 dropped, of {sent} written");
        if close {
            assert_eq!(
                seen,
                vec![want_close],
                "a graceful close sends everything first"
            );
        } else {
            // Only the `on_close` of the reactor's stop.
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert!(seen[0].starts_with("on_close"), "{seen:?}");
        }
        assert!(
            cpu < took / 2,
            "the reactor spent {cpu:?} of CPU in {took:?} waiting for room"
        );
    }
}

#[test]
fn udp_through_a_full_send_buffer_loses_nothing_and_does_not_spin() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        udp_through_a_full_send_buffer(
            "rv-full",
            "40mbit",
            Duration::from_secs(30),
            fan_payload,
            false,
        );
    });
}

/// The same through a link that takes about four seconds to drain the replies, with a
/// write-stall timeout of one: the socket is full all along, but datagrams keep leaving,
/// so the endpoint is not stalled.
#[test]
fn a_udp_endpoint_that_drains_slowly_but_steadily_is_not_stalled() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        udp_through_a_full_send_buffer(
            "rv-slow",
            "8mbit",
            Duration::from_secs(1),
            fan_payload,
            false,
        );
    });
}

/// Equal datagrams, which go as merged runs (`UDP_SEGMENT`) cut short by a full buffer.
#[test]
fn merged_udp_runs_through_a_full_send_buffer_lose_nothing() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        udp_through_a_full_send_buffer(
            "rv-merged",
            "40mbit",
            Duration::from_secs(30),
            equal_payload,
            false,
        );
    });
}

/// A graceful close asked while the socket is full sends everything queued first.
#[test]
fn a_graceful_close_of_a_blocked_udp_endpoint_sends_everything_first() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        udp_through_a_full_send_buffer(
            "rv-close",
            "40mbit",
            Duration::from_secs(30),
            fan_payload,
            true,
        );
    });
}

// ---------------------------------------------------------------------------------------
// A producer thread that obeys the handle's backpressure
// ---------------------------------------------------------------------------------------

/// Hands out its handle; counts what it is told.
struct Produced {
    handles: Sender<getty::udp::DatagramHandle<RawCodec>>,
    errors: Sender<String>,
}

impl DatagramHandler<RawCodec> for Produced {
    fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> std::io::Result<()> {
        let _ = self.handles.send(s.handle().expect("in a callback"));
        Ok(())
    }
    fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: Bytes, _: SocketAddr) {}
    fn on_error(&mut self, _: &mut DatagramSession<RawCodec>, error: &Error) {
        let _ = self.errors.send(format!("on_error: {error}"));
    }
}

/// A producer on another thread writes 8 KiB datagrams through a `DatagramHandle` as fast
/// as the handle lets it, and waits (`wait_writable`) whenever it answers `Backpressure`,
/// as documented. The socket is full (a rate-limited loopback), and the reactor is busy
/// for a moment (another entry's long callback), which is when a producer outruns it.
/// A producer that obeys the backpressure must not have writes the handle accepted
/// dropped: every datagram accepted must reach the peer.
#[test]
fn a_producer_that_obeys_handle_backpressure_loses_no_accepted_datagram() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        if !rate_limited_loopback("40mbit") {
            return;
        }
        let (handles_tx, handles) = mpsc::channel();
        let (errors_tx, errors) = mpsc::channel();
        let endpoint = UdpEndpoint::builder()
            .udp_options(getty::udp::UdpOptions::default().send_buffer_size(Some(16 * 1024)))
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    RawCodec,
                    Produced {
                        handles: handles_tx.clone(),
                        errors: errors_tx.clone(),
                    },
                ))
            })
            .unwrap();
        let running = Running::serve("review-producer", endpoint);
        let handle = handles.recv_timeout(STEP).unwrap();
        let peer = udp_socket();
        socket2::SockRef::from(&peer)
            .set_recv_buffer_size(8 << 20)
            .unwrap();
        let to = peer.local_addr().unwrap();
        // Reads until it has every datagram the handle accepted (known once the writes
        // are done), or until 3 s pass without one.
        let all_accepted = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(u32::MAX));
        let expected = all_accepted.clone();
        let reader = std::thread::spawn(move || {
            peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut seqs = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            while (seqs.len() as u32) < expected.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok(n) = peer.recv(&mut buf) else { break };
                assert_eq!(n, 8192);
                seqs.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
            }
            seqs
        });
        // The reactor is busy with something else for a moment.
        running
            .handle()
            .execute(|_| std::thread::sleep(Duration::from_millis(300)))
            .unwrap();
        let mut accepted = 0u32;
        let mut refusals = 0u32;
        while accepted < 6000 {
            let mut d = vec![0u8; 8192];
            d[..4].copy_from_slice(&accepted.to_be_bytes());
            match handle.write_to(to, Bytes::from(d)) {
                Ok(()) => accepted += 1,
                Err(Error::Backpressure) => {
                    refusals += 1;
                    handle
                        .wait_writable(STEP)
                        .expect("writable again within STEP");
                }
                Err(e) => panic!("write_to: {e}"),
            }
        }
        all_accepted.store(accepted, std::sync::atomic::Ordering::SeqCst);
        let seqs = reader.join().unwrap();
        running.stop();
        let seen: Vec<String> = errors.try_iter().collect();
        let disorder = seqs.windows(2).position(|w| w[0] >= w[1]);
        assert!(
            disorder.is_none(),
            "reordered or repeated at {disorder:?}: {:?}",
            disorder.map(|at| &seqs[at.saturating_sub(3)..(at + 5).min(seqs.len())])
        );
        let got = seqs.len() as u32;
        let first_hole = seqs.iter().enumerate().find(|&(i, &s)| s != i as u32);
        eprintln!(
            "accepted {accepted}, refused {refusals} times, the peer got {got}, first hole at \
             {first_hole:?}; {} errors, first {:?}",
            seen.len(),
            seen.first()
        );
        assert_eq!(
            got,
            accepted,
            "{} datagrams the handle accepted were dropped (the first missing is seq {:?}); \
             {} errors, the first: {:?}",
            accepted - got,
            first_hole.map(|(i, _)| i),
            seen.len(),
            seen.first()
        );
    });
}

/// `Backpressure` says to wait with `wait_writable`. When the handle refuses because 4,096
/// writes are in flight (the reactor has not applied them yet: it is busy for a moment),
/// the session is still writable, so `wait_writable` returns at once and the next write is
/// refused again: a producer that does as documented must not spin (its thread's CPU time
/// stays well under the time it waited).
#[test]
fn waiting_on_a_handle_that_refuses_for_writes_in_flight_does_not_spin() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (handles_tx, handles) = mpsc::channel();
        let (errors_tx, _errors) = mpsc::channel();
        let endpoint = UdpEndpoint::bind("127.0.0.1:0", move |_| {
            Ok((
                RawCodec,
                Produced {
                    handles: handles_tx.clone(),
                    errors: errors_tx.clone(),
                },
            ))
        })
        .unwrap();
        let running = Running::serve("review-inflight", endpoint);
        let handle = handles.recv_timeout(STEP).unwrap();
        let peer = udp_socket();
        let to = peer.local_addr().unwrap();
        // The reactor is busy with something else for half a second.
        running
            .handle()
            .execute(|_| std::thread::sleep(Duration::from_millis(500)))
            .unwrap();
        let mut accepted = 0u32;
        let mut refusals = 0u64;
        let mut waiting: Option<(std::time::Instant, Duration)> = None;
        while accepted < 5000 {
            match handle.write_to(to, Bytes::from_static(&[1u8; 100])) {
                Ok(()) => accepted += 1,
                Err(Error::Backpressure) => {
                    refusals += 1;
                    waiting.get_or_insert_with(|| (std::time::Instant::now(), thread_cpu_time()));
                    handle
                        .wait_writable(STEP)
                        .expect("writable again within STEP");
                }
                Err(e) => panic!("write_to: {e}"),
            }
        }
        running.stop();
        let (since, cpu_then) =
            waiting.expect("the handle refused once 4,096 writes were in flight");
        let (wall, cpu) = (since.elapsed(), thread_cpu_time() - cpu_then);
        eprintln!("{refusals} refusals; the producer spent {cpu:?} of CPU in {wall:?}");
        assert!(
            cpu < wall / 2,
            "the producer spun: {refusals} refusals, {cpu:?} of CPU in {wall:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------
// The same producer on a unix stream session
// ---------------------------------------------------------------------------------------

/// Hands out its handle; reports errors and the close.
struct StreamProduced {
    handles: Sender<getty::SessionHandle<LengthFieldCodec, Unix>>,
    events: Sender<String>,
}

impl Handler<LengthFieldCodec, Unix> for StreamProduced {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec, Unix>) -> std::io::Result<()> {
        let _ = self.handles.send(s.handle().expect("in a callback"));
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<LengthFieldCodec, Unix>, _: Bytes) {}
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec, Unix>, error: &Error) {
        let _ = self.events.send(format!("on_error: {error}"));
    }
}

/// A producer thread writes 8 KiB frames through a unix stream session's handle, waiting
/// whenever the handle says `Backpressure`, to a peer that reads nothing for a second and
/// then everything. Obeying the backpressure, it must neither lose a frame nor get its
/// session ended: every frame accepted reaches the peer.
#[test]
fn a_stream_producer_that_obeys_handle_backpressure_keeps_its_session() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let name = unique("producer");
        let (handles_tx, handles) = mpsc::channel();
        let (events_tx, events) = mpsc::channel();
        let server = UnixServer::bind(UnixAddr::abstract_name(&name), move |_| {
            Ok((
                LengthFieldCodec::default(),
                StreamProduced {
                    handles: handles_tx.clone(),
                    events: events_tx.clone(),
                },
            ))
        })
        .unwrap();
        let running = Running::serve("review-stream-producer", server);
        let peer = {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            StdUnixStream::connect_addr(&addr).unwrap()
        };
        let handle = handles.recv_timeout(STEP).unwrap();
        const FRAMES: u32 = 3000;
        let producer = std::thread::spawn(move || {
            let mut accepted = 0u32;
            while accepted < FRAMES {
                let mut d = vec![0u8; 8192];
                d[..4].copy_from_slice(&accepted.to_be_bytes());
                match handle.write(Bytes::from(d)) {
                    Ok(()) => accepted += 1,
                    Err(Error::Backpressure) => match handle.wait_writable(STEP) {
                        Ok(()) => {}
                        Err(e) => return (accepted, Some(e.to_string())),
                    },
                    Err(e) => return (accepted, Some(e.to_string())),
                }
            }
            (accepted, None)
        });
        std::thread::sleep(Duration::from_secs(1));
        let mut peer = peer;
        peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        let (accepted, stopped) = producer.join().unwrap();
        running.stop();
        let seen: Vec<String> = events.try_iter().collect();
        let frames = got.len() / (4 + 8192);
        eprintln!(
            "accepted {accepted}, stopped by {stopped:?}, the peer got {frames} frames; {seen:?}"
        );
        assert!(
            stopped.is_none(),
            "the producer was stopped: {stopped:?}; {seen:?}"
        );
        assert_eq!(frames as u32, accepted, "frames lost; {seen:?}");
    });
}

/// A socket that takes nothing for the write-stall timeout (its link all but stopped): the
/// endpoint ends with `WriteStalled` (`on_error`, then `on_close`), on time, without
/// spinning while it waited.
#[test]
fn a_udp_endpoint_whose_socket_takes_nothing_ends_with_write_stalled() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        if !rate_limited_loopback("1kbit") {
            return;
        }
        let (tx, events) = mpsc::channel();
        let accepted: Accepted = Default::default();
        let acc = accepted.clone();
        let endpoint = UdpEndpoint::builder()
            .udp_options(getty::udp::UdpOptions::default().send_buffer_size(Some(16 * 1024)))
            .session_options(
                getty::SessionOptions::default()
                    .max_outbound(64 << 20)
                    .write_stall_timeout(Duration::from_millis(700)),
            )
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    RawCodec,
                    UdpFan {
                        peers: Vec::new(),
                        accepted: acc.clone(),
                        errors: tx.clone(),
                        payload: fan_payload,
                        block: 1,
                    },
                ))
            })
            .unwrap();
        let to = endpoint.local_addr();
        let running = Running::serve("review-stall", endpoint);
        let peer = udp_socket();
        peer.send_to(b"join", to).unwrap();
        let mut buf = [0u8; 16];
        let n = peer.recv(&mut buf).expect("the join answer");
        assert_eq!(&buf[..n], b"ok");
        let cpu_before = cpu_of_thread("review-stall").expect("the reactor thread");
        let started = std::time::Instant::now();
        peer.send_to(b"go", to).unwrap();
        let mut seen = Vec::new();
        while !seen.iter().any(|e: &String| e.starts_with("on_close")) {
            seen.push(
                events
                    .recv_timeout(STEP)
                    .unwrap_or_else(|_| panic!("the endpoint never ended: {seen:?}")),
            );
        }
        let took = started.elapsed();
        let cpu = cpu_of_thread("review-stall").expect("the reactor thread") - cpu_before;
        running.stop();
        eprintln!("{seen:?} after {took:?}, reactor CPU {cpu:?}");
        assert!(seen[0].contains("write stall"), "{seen:?}");
        assert!(seen.len() == 2, "{seen:?}");
        // What was still queued when it ended counts as dropped: every datagram written
        // was either sent or dropped.
        let figures: Vec<u64> = seen[1]
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        let [sent, queued, dropped, written] = figures[..] else {
            panic!("{seen:?}")
        };
        assert_eq!(queued, 0, "{seen:?}");
        assert!(dropped > 0, "nothing was dropped: {seen:?}");
        assert_eq!(sent + dropped, written, "{seen:?}");
        assert!(
            cpu < took / 2,
            "the reactor spent {cpu:?} of CPU in {took:?}"
        );
    });
}

/// A handle made in `on_close` of a datagram endpoint (to hand its end to another
/// thread, say) is a handle to a session that has ended: it says so and refuses writes
/// with `Closed`, as a stream session's does, rather than accept them and drop them
/// unseen. Both ways to end: a close, and a panic in a callback.
#[test]
fn a_datagram_handle_made_in_on_close_is_closed() {
    watchdog(TEST_LIMIT, || {
        struct HandleAtClose {
            handles: Sender<getty::udp::DatagramHandle<RawCodec>>,
        }
        impl DatagramHandler<RawCodec> for HandleAtClose {
            fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, m: Bytes, _: SocketAddr) {
                match &m[..] {
                    b"close" => s.close(),
                    b"panic" => panic!("a handler that panics, on purpose"),
                    _ => {}
                }
            }
            fn on_close(&mut self, s: &mut DatagramSession<RawCodec>) {
                let _ = self.handles.send(s.handle().expect("in a callback"));
            }
        }
        for ending in ["close", "panic"] {
            let (handles_tx, handles) = mpsc::channel();
            let endpoint = UdpEndpoint::bind("127.0.0.1:0", move |_| {
                Ok((
                    RawCodec,
                    HandleAtClose {
                        handles: handles_tx.clone(),
                    },
                ))
            })
            .unwrap();
            let addr = endpoint.local_addr();
            let running = Running::serve("dgram-handle-close", endpoint);
            let peer = udp_socket();
            peer.send_to(ending.as_bytes(), addr).unwrap();
            let handle = handles.recv_timeout(STEP).expect("on_close ran");
            // The reactor is done with the session once it has run a job posted after it.
            running.run_on(|_| ());
            assert!(handle.is_closed(), "{ending}: the session has ended");
            assert!(
                matches!(
                    handle.write_to(peer.local_addr().unwrap(), Bytes::from_static(b"late")),
                    Err(Error::Closed)
                ),
                "{ending}: a write to an ended session must be refused"
            );
            running.stop();
        }
    });
}

/// Hands the endpoint's handle out, then refuses the endpoint.
struct RefusesAfterHanding(Sender<getty::udp::DatagramHandle<RawCodec>>);

impl DatagramHandler<RawCodec> for RefusesAfterHanding {
    fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> std::io::Result<()> {
        let _ = self.0.send(s.handle().unwrap());
        Err(std::io::Error::other("refused"))
    }
    fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: Bytes, _: SocketAddr) {}
}

/// A datagram session refused in `on_open` left a handle made there open for good: its
/// writes were accepted and vanished with the entry (a stream's refusal marks them). Now
/// the handle says closed and refuses (review s35-c).
#[test]
fn a_refused_datagram_sessions_handle_is_closed() {
    watchdog(TEST_LIMIT, || {
        let (tx, handles) = mpsc::channel();
        let endpoint = UdpEndpoint::builder()
            .bind("127.0.0.1:0", move |_| {
                Ok((RawCodec, RefusesAfterHanding(tx.clone())))
            })
            .unwrap();
        let server = Running::serve("refused-udp", endpoint);
        let handle = handles.recv_timeout(STEP).unwrap();
        assert_eq!(server.run_on(|s| s.entry_count()), 0, "refused");
        assert!(handle.is_closed());
        let peer = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let written = handle.write_to(peer.local_addr().unwrap(), Bytes::from_static(b"x"));
        assert!(matches!(written, Err(getty::Error::Closed)), "{written:?}");
        server.stop();
    });
}
