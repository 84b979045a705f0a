//! Hostile checks at the edges of several parts, over real loopback sockets: a WebSocket
//! upgrade head paced as it arrives, TLS clients whose dials the server refuses, UDP payload
//! limits of a dual-stack endpoint, datagrams dropped when a session ends, the release of
//! the spare session boxes, and the kv example's backlog of a large reply.

mod common;

#[allow(dead_code)]
#[path = "../examples/kv/commands.rs"]
mod commands;
#[allow(dead_code)]
#[path = "../examples/kv/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "../examples/kv/store.rs"]
mod store;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use getty::codec::LengthFieldCodec;
use getty::tcp::TcpClient;
use getty::tls;

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Waits (at most `limit`) until `running` has no entry left; true if it got there.
fn emptied_within(running: &Running, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while running.entry_count() > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// A client of three connections whose certificate a TLS 1.3 server refuses every time:
/// each dial is done on the client's side before the server's alert comes, so each counts
/// as good, then is taken back. The three connections dial together, so a second dial is
/// counted good before the first one's refusal arrives: the success taken back must not
/// be the count the second one wiped (0). Allowed four consecutive failed dials, the
/// client must give up after a few sessions (it made hundreds, or never gave up).
#[test]
fn a_client_of_three_connections_whose_certificate_is_refused_gives_up() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (server, addr, client_config, _server_events) = server_refusing_client_certificates();
        let (tx, mut events) = Events::new();
        let client = TcpClient::builder()
            .tls(client_config, "localhost")
            .connection_number(3)
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
            .max_consecutive_failures(Some(4))
            .build(addr, move |_| {
                Ok((LengthFieldCodec::default(), Probe::silent(&tx)))
            })
            .unwrap();
        let client = Running::serve("mtls-client", client);
        let gave_up = emptied_within(&client, Duration::from_secs(5));
        client.stop();
        server.stop();
        let sessions = events.count(|e| matches!(e, Ev::Open { .. }));
        assert!(gave_up, "the client never gave up: {sessions} sessions");
        // Four refusals, and at most the two other connections' dials then in flight.
        assert!(sessions <= 8, "{sessions} sessions before giving up");
    });
}

/// The same under TLS 1.2, where the server refuses the certificate before its Finished:
/// the client is still handshaking, each dial fails at once, and the client gives up.
#[test]
fn a_tls12_client_of_three_connections_whose_certificate_is_refused_gives_up() {
    use getty::codec::rustls;
    use std::sync::Arc;
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let make = |name: &str| rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let (server_id, trusted, impostor) = (make("localhost"), make("client"), make("client"));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(trusted.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_id.signing_key.serialize_der().into());
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![server_id.cert.der().clone()], key)
            .unwrap();
        let (stx, _server_events) = Events::new();
        let server = getty::tcp::TcpServer::builder()
            .tls(Arc::new(server_config))
            .bind("127.0.0.1:0", move |_| {
                Ok((LengthFieldCodec::default(), Probe::echo(&stx)))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("mtls12-server", server);
        let client_config = tls::client_config_with_certificate(
            server_id.cert.pem().as_bytes(),
            impostor.cert.pem().as_bytes(),
            impostor.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap();
        let (tx, mut events) = Events::new();
        let client = TcpClient::builder()
            .tls(client_config, "localhost")
            .connection_number(3)
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
            .max_consecutive_failures(Some(4))
            .build(addr, move |_| {
                Ok((LengthFieldCodec::default(), Probe::silent(&tx)))
            })
            .unwrap();
        let client = Running::serve("mtls12-client", client);
        let gave_up = emptied_within(&client, Duration::from_secs(5));
        client.stop();
        server.stop();
        let sessions = events.count(|e| matches!(e, Ev::Open { .. }));
        assert!(gave_up, "the client never gave up: {sessions} sessions");
        assert!(sessions <= 8, "{sessions} sessions before giving up");
    });
}

/// Reads from `stream` until EOF, an error, or `limit` bytes; returns what it read.
fn read_to_end_within(stream: &mut TcpStream, limit: usize) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (mut got, mut buf) = (Vec::new(), vec![0u8; 1 << 20]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < limit && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// What a WebSocket server answers a head that is not HTTP (`GET ` then bytes no request
/// line holds) followed by the client's half-close: sent in one write, or in two (the junk
/// after a pause, too short to double the head).
fn answer_to_junk_then_eof(split: bool) -> String {
    use getty::codec::{Message, MessageCodec};
    use getty::ws::{Ws, WsServer};
    struct Echo;
    impl getty::Handler<MessageCodec, Ws> for Echo {
        fn on_message(&mut self, s: &mut getty::Session<MessageCodec, Ws>, msg: Message) {
            let _ = s.write(msg);
        }
    }
    let server = WsServer::builder()
        .route("/echo", |_| Ok((MessageCodec, Echo)))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    let server = Running::serve("ws-junk-eof", server);
    let mut peer = connect(addr);
    if split {
        peer.write_all(b"GET ").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        peer.write_all(b"\x01\x02\x03").unwrap();
        std::thread::sleep(Duration::from_millis(100));
    } else {
        peer.write_all(b"GET \x01\x02\x03").unwrap();
    }
    peer.shutdown(Shutdown::Write).unwrap();
    let got = read_to_end_within(&mut peer, 4096);
    server.stop();
    String::from_utf8_lossy(&got).into_owned()
}

/// A head that is not HTTP gets a 400 however it was split: the pacing of the parses must
/// not leave the last bytes unparsed when the peer's input ends (a head that ended is
/// parsed whole, at once).
#[test]
fn a_bad_head_then_eof_is_refused_with_400_however_it_was_split() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let whole = answer_to_junk_then_eof(false);
        assert!(whole.starts_with("HTTP/1.1 400"), "in one write: {whole:?}");
        let split = answer_to_junk_then_eof(true);
        assert!(
            split.starts_with("HTTP/1.1 400"),
            "in two writes: {split:?}"
        );
    });
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// An MGET whose reply is far above the high watermark, sent with the client's half-close
/// right behind it (`redis-cli < file`, `nc -N`): kv answers what was asked before the
/// EOF, so the reply must come whole (then EOF), not cut off at what was queued when the
/// EOF was read.
#[test]
fn kv_answers_a_large_mget_whole_to_a_client_that_half_closed() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (pool, addr) = server::serve_tcp("127.0.0.1:0".parse().unwrap(), 1).expect("kv");
        let mut s = connect(addr);
        let value = vec![b'v'; 1 << 20];
        s.write_all(&command(&[b"SET", b"big", &value])).unwrap();
        let mut ok = [0u8; 5];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"+OK\r\n");
        let count = 24;
        let mut mget: Vec<&[u8]> = vec![b"MGET"];
        mget.extend(std::iter::repeat_n(&b"big"[..], count));
        let mut input = command(&mget);
        input.extend_from_slice(&command(&[b"PING"]));
        s.write_all(&input).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let header = format!("*{count}\r\n");
        let bulk_len = format!("${}\r\n", value.len()).len() + value.len() + 2;
        let want = header.len() + count * bulk_len + b"+PONG\r\n".len();
        let got = read_to_end_within(&mut s, want + 1);
        pool.shutdown();
        let _ = pool.join();
        assert_eq!(
            got.len(),
            want,
            "bytes of the reply before EOF ({} whole values of {count})",
            got.len().saturating_sub(header.len()) / bulk_len
        );
        assert!(got.ends_with(b"+PONG\r\n"));
    });
}

mod udp {
    use std::net::{SocketAddr, UdpSocket};
    use std::sync::mpsc::{self, Sender};
    use std::time::Duration;

    use getty::codec::{Bytes, RawCodec};
    use getty::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
    use getty::Error;

    use super::{watchdog, Running, TEST_LIMIT};

    /// On "go", writes five datagrams back, then panics (or, on "abort", aborts); on_close
    /// reports `messages_out datagrams_out dropped_out`.
    struct Faulty {
        tx: Sender<String>,
    }

    impl DatagramHandler<RawCodec> for Faulty {
        fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, peer: SocketAddr) {
            for _ in 0..5 {
                s.write_to(peer, Bytes::from_static(b"reply")).unwrap();
            }
            match &msg[..] {
                b"panic" => panic!("a handler's bug, with five replies queued"),
                b"close" => s.close(),
                _ => s.abort(),
            }
        }
        fn on_close(&mut self, s: &mut DatagramSession<RawCodec>) {
            let st = s.stats();
            let _ = self.tx.send(format!(
                "{} {} {}",
                st.messages_out, st.datagrams_out, st.dropped_out
            ));
        }
    }

    /// What on_close saw of an endpoint whose handler queues five replies, then `how`.
    fn counters_at_close(how: &'static [u8]) -> Vec<u64> {
        let (tx, rx) = mpsc::channel();
        let endpoint = UdpEndpoint::bind("127.0.0.1:0", move |_| {
            Ok((RawCodec, Faulty { tx: tx.clone() }))
        })
        .unwrap();
        let to = endpoint.local_addr();
        let running = Running::serve("udp-faulty", endpoint);
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(how, to).unwrap();
        let seen = rx.recv_timeout(Duration::from_secs(5)).expect("on_close");
        running.stop();
        seen.split(' ').map(|n| n.parse().unwrap()).collect()
    }

    /// The stats' promise: when on_close reads them, every datagram written was either sent
    /// or dropped (`messages_out == datagrams_out + dropped_out`), also when the session
    /// ends on a panic in a callback with datagrams still queued.
    #[test]
    fn datagrams_queued_when_a_handler_panics_count_as_dropped() {
        watchdog(TEST_LIMIT, || {
            let closed = counters_at_close(b"close");
            assert_eq!(
                closed,
                [5, 5, 0],
                "a graceful close sends what was queued first"
            );
            let aborted = counters_at_close(b"abort");
            assert_eq!(aborted[0], aborted[1] + aborted[2], "abort: {aborted:?}");
            let panicked = counters_at_close(b"panic");
            assert_eq!(
                panicked[0],
                panicked[1] + panicked[2],
                "panic: written, sent, dropped: {panicked:?}"
            );
        });
    }

    /// Answers each datagram with the outcome of writes of 65,508 and 65,507 bytes back to
    /// its source, from the session and through a handle.
    struct Sizer {
        tx: Sender<String>,
    }

    impl DatagramHandler<RawCodec> for Sizer {
        fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, _: Bytes, peer: SocketAddr) {
            let outcome = |r: Result<(), Error>| match r {
                Ok(()) => "ok".to_owned(),
                Err(Error::MessageTooLong { max, .. }) => format!("too long (max {max})"),
                Err(e) => format!("{e}"),
            };
            let big = outcome(s.write_bytes_to(peer, vec![1u8; 65_508]));
            let handle = s.handle().expect("a handle");
            let by_handle = outcome(handle.write_bytes_to(peer, Bytes::from(vec![2u8; 65_508])));
            let fits = outcome(s.write_to(peer, Bytes::from(vec![3u8; 65_507])));
            let _ = self.tx.send(format!("{big}; {by_handle}; {fits}"));
        }
    }

    /// On open, writes 65,508 then 65,507 bytes to its connected peer; reports both.
    struct OpenSizer {
        tx: Sender<String>,
    }

    impl DatagramHandler<RawCodec> for OpenSizer {
        fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> std::io::Result<()> {
            let outcome = |r: Result<(), Error>| match r {
                Ok(()) => "ok".to_owned(),
                Err(Error::MessageTooLong { max, .. }) => format!("too long (max {max})"),
                Err(e) => format!("{e}"),
            };
            let big = outcome(s.write(Bytes::from(vec![1u8; 65_508])));
            let fits = outcome(s.write(Bytes::from(vec![3u8; 65_507])));
            let _ = self
                .tx
                .send(format!("{big}; {fits}; max {}", s.max_datagram_len()));
            Ok(())
        }
        fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: Bytes, _: SocketAddr) {}
    }

    /// A UDP client bound to `[::]` dialling 127.0.0.1: its socket sends IPv4, so 65,508
    /// bytes are refused and 65,507 go out whole.
    #[test]
    fn a_dual_stack_client_of_an_ipv4_peer_sends_ipv4_payloads() {
        watchdog(TEST_LIMIT, || {
            let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (tx, rx) = mpsc::channel();
            let client = getty::udp::UdpClient::builder()
                .local_addr(Some("[::]:0".parse().unwrap()))
                .probe_wait(Duration::from_secs(600))
                .build(peer.local_addr().unwrap(), move |_| {
                    Ok((RawCodec, OpenSizer { tx: tx.clone() }))
                });
            let client = match client {
                Ok(client) => client,
                Err(e) => return eprintln!("no IPv6 here ({e}): skipped"),
            };
            let running = Running::serve("udp-dual-stack-client", client);
            let mut buf = vec![0u8; 70_000];
            let (_, from) = peer.recv_from(&mut buf).expect("the probe");
            peer.send_to(getty::udp::UdpClient::PROBE_ANSWER, from)
                .unwrap();
            let seen = rx.recv_timeout(Duration::from_secs(5)).expect("on_open");
            let got = peer.recv(&mut buf);
            running.stop();
            assert_eq!(seen, "too long (max 65507); ok; max 65507");
            assert_eq!(got.ok(), Some(65_507), "the datagram that fits");
        });
    }

    /// A dual-stack endpoint answering an IPv4 peer: 65,508 bytes are refused, 65,507 go
    /// out whole.
    #[test]
    fn a_dual_stack_endpoint_holds_an_ipv4_peer_to_ipv4_payloads() {
        watchdog(TEST_LIMIT, || {
            let (tx, rx) = mpsc::channel();
            let endpoint = match UdpEndpoint::bind("[::]:0", move |_| {
                Ok((RawCodec, Sizer { tx: tx.clone() }))
            }) {
                Ok(endpoint) => endpoint,
                Err(e) => return eprintln!("no IPv6 here ({e}): skipped"),
            };
            let port = endpoint.local_addr().port();
            let running = Running::serve("udp-dual-stack", endpoint);
            let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            peer.send_to(b"size?", ("127.0.0.1", port)).unwrap();
            let seen = rx.recv_timeout(Duration::from_secs(5)).expect("answer");
            let mut buf = vec![0u8; 70_000];
            let got = peer.recv(&mut buf);
            running.stop();
            assert_eq!(
                seen, "too long (max 65507); ok; ok",
                "session; handle; fits"
            );
            assert_eq!(got.ok(), Some(65_507), "the datagram that fits");
        });
    }
}

mod pool {
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use getty::codec::{Bytes, LengthFieldCodec};
    use getty::reactor::{BufPool, Reactor};
    use getty::tcp::TcpServer;
    use getty::{Handler, Session};

    use super::{connect, echo_roundtrip, watchdog, Running, TEST_LIMIT};

    struct Echo;

    impl Handler<LengthFieldCodec> for Echo {
        fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, message: Bytes) {
            let _ = s.write(message);
        }
    }

    fn holds(reactor: &Running) -> (usize, usize, usize) {
        reactor.run_on(|s| {
            let pool = s.buffers();
            (
                pool.idle(),
                pool.large_idle_bytes(),
                pool.thread_cache_bytes(),
            )
        })
    }

    /// A pool that frees what went unused through an interval of `interval`: sessions that
    /// take and hand back boxes between (and during) releases echo byte for byte, the pool
    /// ends up empty once they are idle, and the idle reactor no longer turns.
    fn echo_then_idle(interval: Duration) {
        let server = TcpServer::builder()
            .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
            .unwrap();
        let addr = server.local_addr();
        let pool = BufPool::default().release_unused_after(Some(interval));
        let reactor = Running::serve_with("release-interval", server, move || {
            Reactor::builder().buffer_pool(pool).build()
        });
        let mut streams: Vec<TcpStream> = (0..12).map(|_| connect(addr)).collect();
        std::thread::scope(|scope| {
            for (who, stream) in streams.iter_mut().enumerate() {
                scope.spawn(move || {
                    for round in 0..20usize {
                        let len = [1, 300, 5000, 70_000][(who + round) % 4];
                        let payload: Vec<u8> =
                            (0..len).map(|k| (who * 31 + round * 7 + k) as u8).collect();
                        echo_roundtrip(stream, &payload);
                    }
                });
            }
        });
        let wait = interval.min(Duration::from_millis(200));
        let deadline = Instant::now() + Duration::from_secs(10);
        while holds(&reactor) != (0, 0, 0) {
            assert!(
                Instant::now() < deadline,
                "still held: {:?}",
                holds(&reactor)
            );
            std::thread::sleep(wait / 5 + Duration::from_millis(1));
        }
        let turns = || reactor.run_on(|s| s.loop_metrics().turns);
        let before = turns();
        std::thread::sleep(Duration::from_millis(500));
        let woke = turns() - before;
        assert!(woke <= 2, "an idle reactor turned {woke} times in 500 ms");
        for (who, stream) in streams.iter_mut().enumerate() {
            echo_roundtrip(stream, &vec![who as u8; 9000]);
        }
        drop(streams);
        reactor.stop();
    }

    #[test]
    fn a_release_interval_of_zero_frees_everything_and_sleeps() {
        watchdog(TEST_LIMIT, || echo_then_idle(Duration::ZERO));
    }

    #[test]
    fn a_short_release_interval_frees_everything_and_sleeps() {
        watchdog(TEST_LIMIT, || echo_then_idle(Duration::from_millis(20)));
    }

    /// An interval too long for the clock: nothing is freed, and nothing wakes for it.
    #[test]
    fn a_release_interval_of_duration_max_never_wakes() {
        watchdog(TEST_LIMIT, || {
            let server = TcpServer::builder()
                .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
                .unwrap();
            let addr = server.local_addr();
            let pool = BufPool::default().release_unused_after(Some(Duration::MAX));
            let reactor = Running::serve_with("release-max", server, move || {
                Reactor::builder().buffer_pool(pool).build()
            });
            let mut stream = connect(addr);
            echo_roundtrip(&mut stream, &[7u8; 70_000]);
            let turns = || reactor.run_on(|s| s.loop_metrics().turns);
            let before = turns();
            std::thread::sleep(Duration::from_millis(300));
            let woke = turns() - before;
            echo_roundtrip(&mut stream, &[8u8; 5000]);
            reactor.stop();
            assert!(woke <= 2, "an idle reactor turned {woke} times in 300 ms");
        });
    }
}

/// Commands pipelined behind a QUIT are not run (redis-server: the client closes after
/// the reply to QUIT), also when a large MGET before the QUIT is still leaving in steps.
#[test]
fn kv_runs_nothing_pipelined_after_a_quit_behind_a_large_mget() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (pool, addr) = server::serve_tcp("127.0.0.1:0".parse().unwrap(), 1).expect("kv");
        let mut s = connect(addr);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let value = vec![b'v'; 1 << 20];
        s.write_all(&command(&[b"SET", b"big", &value])).unwrap();
        let mut ok = [0u8; 5];
        s.read_exact(&mut ok).unwrap();
        let count = 24;
        let mut mget: Vec<&[u8]> = vec![b"MGET"];
        mget.extend(std::iter::repeat_n(&b"big"[..], count));
        let mut input = command(&mget);
        input.extend_from_slice(&command(&[b"QUIT"]));
        input.extend_from_slice(&command(&[b"SET", b"after", b"quit"]));
        s.write_all(&input).unwrap();
        let header = format!("*{count}\r\n");
        let bulk_len = format!("${}\r\n", value.len()).len() + value.len() + 2;
        let want = header.len() + count * bulk_len + b"+OK\r\n".len();
        let got = read_to_end_within(&mut s, want + 100);
        let mut check = connect(addr);
        check
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        check.write_all(&command(&[b"GET", b"after"])).unwrap();
        let mut reply = [0u8; 5];
        let read = check.read_exact(&mut reply);
        pool.shutdown();
        let _ = pool.join();
        assert_eq!(got.len(), want, "bytes before EOF");
        assert!(got.ends_with(b"+OK\r\n"));
        assert_eq!(
            reply.escape_ascii().to_string(),
            "$-1\\r\\n",
            "GET after ({read:?}): the SET behind the QUIT ran"
        );
    });
}

mod trickle {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    use getty::codec::{Message, MessageCodec};
    use getty::ws::{Ws, WsServer};
    use getty::{Handler, Session};

    use super::{connect, watchdog, Running, TEST_LIMIT};

    struct Echo;

    impl Handler<MessageCodec, Ws> for Echo {
        fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
            let _ = s.write(msg);
        }
    }

    /// A WebSocket echo server; with `tls` (chain, key), a wss:// one.
    fn serve(tls: Option<(&[u8], &[u8])>) -> (SocketAddr, Running) {
        let mut builder = WsServer::builder();
        if let Some((chain, key)) = tls {
            builder = builder.tls(getty::tls::server_config(chain, key).unwrap());
        }
        let server = builder
            .route("/echo", |_| Ok((MessageCodec, Echo)))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        (addr, Running::serve("ws-trickle", server))
    }

    const HEAD_LF: &[u8] = b"GET /echo HTTP/1.1\nHost: localhost\nUpgrade: websocket\n\
        Connection: Upgrade\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n\
        Sec-WebSocket-Version: 13\n\n";

    const HEAD_CRLF: &[u8] = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    /// Reads a response head (CRLF CRLF) byte by byte, nothing past it.
    fn read_head(stream: &mut TcpStream) -> String {
        let (mut head, mut byte) = (Vec::new(), [0u8; 1]);
        while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
            if stream.read_exact(&mut byte).is_err() {
                break;
            }
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// A masked binary frame of `payload` (mask key 0), and its echo.
    fn frame(payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut out = vec![0x82, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        out.extend_from_slice(payload);
        let mut back = vec![0x82, payload.len() as u8];
        back.extend_from_slice(payload);
        (out, back)
    }

    /// A head (bare LF, then CRLF) trickled in odd splits, each write its own segment,
    /// with its last bytes apart: the upgrade answers 101 and the session echoes.
    #[test]
    fn a_trickled_head_with_bare_lf_or_crlf_is_upgraded() {
        watchdog(TEST_LIMIT, || {
            let (addr, running) = serve(None);
            // Empty lines before a request line are skipped (RFC 9112 §2.2).
            let after_empty_lines = [&b"\r\n\n\r\n"[..], HEAD_CRLF].concat();
            for head in [HEAD_LF, HEAD_CRLF, &after_empty_lines] {
                for splits in [&[1usize][..], &[2, 3, 5, 7], &[13, 1, 1]] {
                    let mut peer = connect(addr);
                    peer.set_nodelay(true).unwrap();
                    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let (mut at, mut k) = (0, 0);
                    while at < head.len() {
                        let n = splits[k % splits.len()].min(head.len() - at);
                        peer.write_all(&head[at..at + n]).unwrap();
                        at += n;
                        k += 1;
                        if k % 16 == 0 || head.len() - at < 3 {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                    let response = read_head(&mut peer);
                    assert!(
                        response.starts_with("HTTP/1.1 101"),
                        "splits {splits:?}: {response:?}"
                    );
                    let (out, back) = frame(b"after a trickle");
                    peer.write_all(&out).unwrap();
                    let mut got = vec![0u8; back.len()];
                    peer.read_exact(&mut got).unwrap();
                    assert_eq!(got, back);
                }
            }
            running.stop();
        });
    }

    /// A wss:// upgrade whose head comes one byte per TLS record: 101, then an echo.
    #[test]
    fn a_wss_head_one_byte_per_record_is_upgraded() {
        use getty::codec::filter::{Filter, TlsFilter};
        watchdog(TEST_LIMIT, || {
            let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
            let (addr, running) = serve(Some((chain.as_bytes(), key.as_bytes())));
            let mut peer = connect(addr);
            peer.set_nodelay(true).unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let config = getty::tls::client_config(chain.as_bytes()).unwrap();
            let mut client = TlsFilter::client(config, "localhost").unwrap();
            let (_, mut wire_in) = super::tls_exchange(&mut peer, &mut client, b"", 0);
            let mut wire = bytes::BytesMut::new();
            for (k, byte) in HEAD_CRLF.iter().enumerate() {
                client.encode(&[*byte], &mut wire).unwrap();
                client.flush(&mut wire).unwrap();
                peer.write_all(&wire).unwrap();
                wire.clear();
                if k % 32 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let mut plain = bytes::BytesMut::new();
            let mut chunk = [0u8; 4096];
            while !plain.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = peer.read(&mut chunk).expect("the response");
                assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&plain));
                wire_in.extend_from_slice(&chunk[..n]);
                client.decode(&mut wire_in, &mut plain, 1 << 20).unwrap();
            }
            assert!(
                plain.starts_with(b"HTTP/1.1 101"),
                "{}",
                String::from_utf8_lossy(&plain)
            );
            running.stop();
        });
    }

    /// A TLS ClientHello sent to a plain ws:// port gets its 400 at once (not at the
    /// handshake timeout), whole or with its first byte apart.
    #[test]
    fn a_client_hello_to_a_plain_port_gets_a_400_at_once() {
        use getty::codec::filter::{Filter, TlsFilter};
        watchdog(TEST_LIMIT, || {
            let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            let config = getty::tls::client_config(made.cert.pem().as_bytes()).unwrap();
            let mut hello = bytes::BytesMut::new();
            TlsFilter::client(config, "localhost")
                .unwrap()
                .flush(&mut hello)
                .unwrap();
            let (addr, running) = serve(None);
            for first in [hello.len(), 1] {
                let mut peer = connect(addr);
                peer.set_nodelay(true).unwrap();
                peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                peer.write_all(&hello[..first]).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                let _ = peer.write_all(&hello[first..]);
                let response = read_head(&mut peer);
                assert!(
                    response.starts_with("HTTP/1.1 400"),
                    "{first}: {response:?}"
                );
            }
            running.stop();
        });
    }
}

/// Eight clients each send an MGET whose reply is 32 MiB and read none of it for a while:
/// each session holds about its high watermark (and one value) of the reply, not the
/// reply, so the server's memory grows by a few MiB per client; then each reads its
/// reply whole, in order, and a PING behind it.
#[test]
fn kv_holds_little_for_many_unread_large_mgets_then_answers_each_whole() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let (pool, addr) = server::serve_tcp("127.0.0.1:0".parse().unwrap(), 1).expect("kv");
        let value = vec![b'v'; 1 << 20];
        let mut first = connect(addr);
        first
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        first
            .write_all(&command(&[b"SET", b"big", &value]))
            .unwrap();
        let mut ok = [0u8; 5];
        first.read_exact(&mut ok).unwrap();
        let count = 32;
        let mut mget: Vec<&[u8]> = vec![b"MGET"];
        mget.extend(std::iter::repeat_n(&b"big"[..], count));
        let mut input = command(&mget);
        input.extend_from_slice(&command(&[b"PING"]));
        let baseline = resident_bytes();
        let mut clients: Vec<TcpStream> = (0..8).map(|_| connect(addr)).collect();
        for client in &mut clients {
            client.write_all(&input).unwrap();
        }
        std::thread::sleep(Duration::from_millis(500));
        let growth = resident_bytes().saturating_sub(baseline);
        let header = format!("*{count}\r\n");
        let bulk_len = format!("${}\r\n", value.len()).len() + value.len() + 2;
        let want = header.len() + count * bulk_len + b"+PONG\r\n".len();
        let mut short = Vec::new();
        for (who, client) in clients.iter_mut().enumerate() {
            client.shutdown(Shutdown::Write).unwrap();
            let got = read_to_end_within(client, want + 1);
            if got.len() != want || !got.ends_with(b"+PONG\r\n") {
                short.push((who, got.len()));
            }
        }
        pool.shutdown();
        let _ = pool.join();
        assert!(
            short.is_empty(),
            "replies cut short (want {want}): {short:?}"
        );
        assert!(
            growth < 96 << 20,
            "RSS grew by {} MiB for 8 unread replies of 32 MiB",
            growth >> 20
        );
    });
}

mod trickled_101 {
    use std::io::{Read, Write};
    use std::time::Duration;

    use getty::codec::{Message, MessageCodec};
    use getty::ws::Ws;
    use getty::{Handler, Session};

    use super::{watchdog, Running, TEST_LIMIT};

    /// A getty WsClient whose server trickles the 101 a byte per segment (then a text
    /// frame): the client opens and reads the frame.
    #[test]
    fn a_ws_client_reads_a_101_trickled_byte_by_byte() {
        use getty::ws::WsClient;
        use std::net::TcpListener;
        use std::sync::mpsc;
        watchdog(TEST_LIMIT, || {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            std::thread::spawn(move || {
                let Ok((mut s, _)) = listener.accept() else {
                    return;
                };
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let (mut head, mut byte) = (Vec::new(), [0u8; 1]);
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if s.read_exact(&mut byte).is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let key = head
                    .split("\r\n")
                    .find_map(|line| {
                        let (n, v) = line.split_once(':')?;
                        n.trim()
                            .eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default();
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    tungstenite::handshake::derive_accept_key(key.as_bytes())
                );
                for b in response.bytes() {
                    if s.write_all(&[b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = s.write_all(&[0x81, 2, b'h', b'i']);
                std::thread::sleep(Duration::from_secs(3));
            });
            struct Probe(mpsc::Sender<Vec<u8>>);
            impl Handler<MessageCodec, Ws> for Probe {
                fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, msg: Message) {
                    let _ = self.0.send(msg.into_payload().to_vec());
                }
            }
            let (tx, rx) = mpsc::channel();
            let client = WsClient::builder()
                .max_consecutive_failures(Some(1))
                .build(&format!("ws://{addr}/"), move |_| {
                    Ok((MessageCodec, Probe(tx.clone())))
                })
                .unwrap();
            let running = Running::serve("ws-trickled-101", client);
            let got = rx.recv_timeout(Duration::from_secs(5));
            running.stop();
            assert_eq!(got.ok().as_deref(), Some(&b"hi"[..]));
        });
    }
}

mod unix_park {
    use std::os::unix::net::UnixDatagram as StdUnixDatagram;
    use std::sync::mpsc::{self, Sender};
    use std::time::Duration;

    use getty::codec::{Bytes, RawCodec};
    use getty::udp::{DatagramHandler, DatagramSession};
    use getty::unix::UnixDatagramEndpoint;
    use getty::UnixAddr;

    use super::{watchdog, Running, TempDir, TEST_LIMIT};

    /// "fill:<path>" writes 60 datagrams there (a receiver that never reads), then 5 back;
    /// "abort" aborts. on_close reports `messages_out datagrams_out dropped_out`.
    struct Parker {
        events: Sender<String>,
    }

    impl DatagramHandler<RawCodec, UnixAddr> for Parker {
        fn on_message(
            &mut self,
            s: &mut DatagramSession<RawCodec, UnixAddr>,
            msg: Bytes,
            peer: UnixAddr,
        ) {
            if &msg[..] == b"abort" {
                return s.abort();
            }
            let path = std::str::from_utf8(&msg[5..]).unwrap().to_owned();
            for i in 0..60u8 {
                s.write_to(UnixAddr::path(&path), Bytes::from(vec![i; 4000]))
                    .unwrap();
            }
            for i in 0..5u8 {
                s.write_to(peer.clone(), Bytes::from(vec![i; 10])).unwrap();
            }
        }
        fn on_close(&mut self, s: &mut DatagramSession<RawCodec, UnixAddr>) {
            let st = s.stats();
            let _ = self.events.send(format!(
                "{} {} {}",
                st.messages_out, st.datagrams_out, st.dropped_out
            ));
        }
    }

    /// An unconnected unix endpoint aborted while a destination is parked (its receiver
    /// never reads): what was parked counts as dropped, once, before on_close.
    #[test]
    fn an_abort_with_a_parked_destination_counts_each_datagram_once() {
        watchdog(TEST_LIMIT, || {
            let dir = TempDir::new("review-today-park-abort");
            let at = dir.path("endpoint.sock");
            let (events_tx, events) = mpsc::channel();
            let endpoint = UnixDatagramEndpoint::builder()
                .bind(at.as_path(), move |_| {
                    Ok((
                        RawCodec,
                        Parker {
                            events: events_tx.clone(),
                        },
                    ))
                })
                .unwrap();
            let running = Running::serve("review-today-park-abort", endpoint);
            let silent_path = dir.path("silent.sock");
            let silent = StdUnixDatagram::bind(&silent_path).unwrap();
            let bystander = StdUnixDatagram::bind(dir.path("bystander.sock")).unwrap();
            bystander
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            bystander
                .send_to(format!("fill:{}", silent_path.display()).as_bytes(), &at)
                .unwrap();
            let mut buf = vec![0u8; 8192];
            for i in 0..5u8 {
                let n = bystander.recv(&mut buf).expect("a reply to the bystander");
                assert_eq!(&buf[..n], &[i; 10][..]);
            }
            bystander.send_to(b"abort", &at).unwrap();
            let seen = events
                .recv_timeout(Duration::from_secs(5))
                .expect("on_close");
            running.stop();
            let mut queued = 0;
            silent.set_nonblocking(true).unwrap();
            while silent.recv(&mut buf).is_ok() {
                queued += 1;
            }
            let n: Vec<u64> = seen.split(' ').map(|n| n.parse().unwrap()).collect();
            assert_eq!(n[0], 65, "written: {seen}");
            assert_eq!(n[1], queued + 5, "sent: {seen}");
            assert_eq!(n[2], 60 - queued, "dropped: {seen}");
        });
    }
}
