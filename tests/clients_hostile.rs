//! Hostile checks of the client side: dials, redials, handshakes a client waits for, and
//! many clients on one reactor, each over real loopback sockets.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::LengthFieldCodec;
use getty::tcp::TcpClient;
use getty::tls;

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// A loopback server that accepts every connection and answers it with `reply` (then
/// closes it), until the returned flag is set or 30 s pass; it counts what it accepted.
fn answering_server(reply: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (count, done) = (accepted.clone(), stop.clone());
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(30);
        while !done.load(Ordering::Relaxed) && Instant::now() < until {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    count.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                    let _ = stream.write_all(reply);
                    let mut sink = [0u8; 4096];
                    let _ = stream.read(&mut sink);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    (addr, accepted, stop)
}

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

/// A TLS client (plain TCP with `.tls(..)`) whose server answers the ClientHello with
/// bytes that are not TLS: every handshake fails. The builder's documentation says a failed
/// handshake "counts as a failed dial", so a client allowed two consecutive failures must
/// give up after two connections. Each handshake failure also reaches the handler once
/// (`on_error`, then `on_close`).
#[test]
fn a_tls_client_whose_handshakes_fail_gives_up_after_its_failure_limit() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (addr, accepted, stop) = answering_server(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let config = tls::client_config(ca.cert.pem().as_bytes()).unwrap();
        let (tx, mut events) = Events::new();
        let client = TcpClient::builder()
            .tls(config, "localhost")
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
            .max_consecutive_failures(Some(2))
            .build(addr, move |_| {
                Ok((LengthFieldCodec::default(), Probe::silent(&tx)))
            })
            .unwrap();
        let client = Running::serve("tls-failing-client", client);
        let gave_up = emptied_within(&client, Duration::from_secs(5));
        stop.store(true, Ordering::Relaxed);
        let dials = accepted.load(Ordering::Relaxed);
        client.stop();
        events.pump();
        let errors = events.count(|e| matches!(e, Ev::Error { .. }));
        assert!(
            gave_up,
            "the client never gave up: {dials} connections, {errors} handshake errors"
        );
        assert_eq!(dials, 2, "connections made before giving up");
        assert_eq!(errors, 2, "one on_error per failed handshake");
    });
}

/// A loopback server that accepts every connection and holds it open, silent, until the
/// returned flag is set (or 30 s pass); it counts what it accepted.
fn silent_server() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (count, done) = (accepted.clone(), stop.clone());
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(30);
        let mut held = Vec::new();
        while !done.load(Ordering::Relaxed) && Instant::now() < until {
            match listener.accept() {
                Ok((stream, _)) => {
                    count.fetch_add(1, Ordering::Relaxed);
                    held.push(stream);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    (addr, accepted, stop)
}

/// A TLS client whose server never answers the ClientHello: each session hears the
/// handshake timeout once (`on_error`, then `on_close`), and the client, allowed two failed
/// dials, gives up after two connections and leaves no entry behind.
#[test]
fn a_tls_client_of_a_silent_server_times_out_each_handshake_once_and_gives_up() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (addr, accepted, stop) = silent_server();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let config = tls::client_config(ca.cert.pem().as_bytes()).unwrap();
        let (tx, mut events) = Events::new();
        let options =
            getty::SessionOptions::default().handshake_timeout(Duration::from_millis(100));
        let client = TcpClient::builder()
            .tls(config, "localhost")
            .session_options(options)
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
            .max_consecutive_failures(Some(2))
            .build(addr, move |_| {
                Ok((LengthFieldCodec::default(), Probe::silent(&tx)))
            })
            .unwrap();
        let client = Running::serve("tls-silent-client", client);
        let gave_up = emptied_within(&client, STEP);
        stop.store(true, Ordering::Relaxed);
        client.stop();
        events.check_contract();
        let timeouts = events.count(
            |e| matches!(e, Ev::Error { err: ErrKind::Other(text), .. } if text.contains("handshake")),
        );
        let opened = events.count(|e| matches!(e, Ev::Open { .. }));
        assert!(gave_up, "the client never gave up: {:?}", events.all);
        assert_eq!(accepted.load(Ordering::Relaxed), 2, "connections");
        assert_eq!((opened, timeouts), (2, 2), "{:?}", events.all);
    });
}

/// A client with a certificate the server does not accept (mutual TLS; an expired or
/// wrong client certificate): under TLS 1.3 the client's side of the handshake is done
/// before the server checks the certificate, and the server's alert comes after. Every
/// connection still ends before any application data, so the client, allowed two failed
/// dials, must give up rather than redial at its shortest backoff for ever.
#[test]
fn a_client_whose_certificate_is_refused_gives_up_after_its_failure_limit() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (server, addr, client_config, _server_events) = server_refusing_client_certificates();
        let (tx, mut events) = Events::new();
        let client = TcpClient::builder()
            .tls(client_config, "localhost")
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
            .max_consecutive_failures(Some(2))
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
        assert_eq!(sessions, 2, "sessions before giving up");
    });
}

/// Sends its local port in `on_open`, checks that the echo is its own, then closes its
/// client; reports "echo ok" or "echo wrong" as a note.
struct OwnEcho {
    tx: std::sync::mpsc::Sender<Ev>,
    sent: Vec<u8>,
}

impl getty::Handler<LengthFieldCodec> for OwnEcho {
    fn on_open(&mut self, s: &mut getty::Session<LengthFieldCodec>) -> std::io::Result<()> {
        let port = s.local_addr()?.port();
        self.sent = format!("from {port} as {}", s.id()).into_bytes();
        s.write(getty::codec::Bytes::from(self.sent.clone()))?;
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        Ok(())
    }

    fn on_message(&mut self, s: &mut getty::Session<LengthFieldCodec>, msg: getty::codec::Bytes) {
        let what = if msg[..] == self.sent[..] {
            "echo ok"
        } else {
            "echo wrong"
        };
        let _ = self.tx.send(Ev::Note {
            sid: s.id(),
            what: what.to_string(),
        });
        s.close_client();
    }

    fn on_error(&mut self, s: &mut getty::Session<LengthFieldCodec>, error: &getty::Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }

    fn on_close(&mut self, s: &mut getty::Session<LengthFieldCodec>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

/// Three rounds of a hundred clients on one reactor, each sending its own message to an
/// echo server and closing once the echo is back: slab slots are reused round after round,
/// and every session gets its own echo and nothing else, hears `on_open` and `on_close`
/// once, and both reactors end with no entry but the listener.
#[test]
fn hundreds_of_clients_on_one_reactor_each_get_their_own_echo() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (stx, _server_events) = Events::new();
        let server = getty::tcp::TcpServer::builder()
            .bind("127.0.0.1:0", move |_| {
                Ok((LengthFieldCodec::default(), Probe::echo(&stx)))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("many-server", server);
        let (tx, mut events) = Events::new();
        // The clients' reactor starts with an idle listener of its own: one entry that
        // stays, so "no client left" is an entry count of one.
        let (running, _) = Running::spawn(
            "many-clients",
            getty::tcp::TcpServer::builder()
                .bind("127.0.0.1:0", |_| {
                    Ok((
                        LengthFieldCodec::default(),
                        OwnEcho {
                            tx: std::sync::mpsc::channel().0,
                            sent: Vec::new(),
                        },
                    ))
                })
                .unwrap(),
        );
        for round in 1..=3 {
            for _ in 0..100 {
                let tx = tx.clone();
                let client = TcpClient::builder()
                    .build(addr, move |_| {
                        Ok((
                            LengthFieldCodec::default(),
                            OwnEcho {
                                tx: tx.clone(),
                                sent: Vec::new(),
                            },
                        ))
                    })
                    .unwrap();
                running.run_on(move |s| {
                    s.spawn(client);
                });
            }
            events.wait_n("closes", round * 100, |e| matches!(e, Ev::Close { .. }));
            let deadline = Instant::now() + STEP;
            while running.entry_count() > 1 {
                assert!(Instant::now() < deadline, "round {round}: clients left");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let deadline = Instant::now() + STEP;
        while server.entry_count() > 1 {
            assert!(Instant::now() < deadline, "server sessions left");
            std::thread::sleep(Duration::from_millis(5));
        }
        running.stop();
        server.stop();
        events.check_contract();
        let ok = events.count(|e| matches!(e, Ev::Note { what, .. } if what == "echo ok"));
        let notes = events.count(|e| matches!(e, Ev::Note { .. }));
        assert_eq!((ok, notes), (300, 300), "echoes");
        assert_eq!(events.count(|e| matches!(e, Ev::Error { .. })), 0);
    });
}

/// `Metrics` says `errors_io` counts "reset, refused, ..." and `errors_timeout` counts
/// "read idle, write stall, connect". A client of a closed port and one of a listener
/// whose accept queue is full (each allowed two failed dials) fail with `ECONNREFUSED` and
/// `ConnectTimeout`: the reactor's metrics must count them, as nothing else (no handler,
/// no hook) hears of a failed TCP dial.
#[test]
fn refused_and_timed_out_dials_are_counted_in_the_metrics() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let closed = dead_port();
        let full =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        full.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        full.listen(0).unwrap();
        let full_addr = full.local_addr().unwrap().as_socket().unwrap();
        let _queued = std::net::TcpStream::connect(full_addr).unwrap();
        let (tx, _events) = Events::new();
        let make = |addr: SocketAddr| {
            let tx = tx.clone();
            TcpClient::builder()
                .connect_timeout(Duration::from_millis(50))
                .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
                .max_consecutive_failures(Some(2))
                .build(addr, move |_| {
                    Ok((LengthFieldCodec::default(), Probe::silent(&tx)))
                })
                .unwrap()
        };
        let (running, _) = Running::spawn("rv-metrics", make(closed));
        let timing_out = make(full_addr);
        running.run_on(move |s| {
            s.spawn(timing_out);
        });
        running.wait_until_empty("the clients did not give up");
        let metrics = getty::Metrics::of(running.handle()).unwrap();
        running.stop();
        assert_eq!(
            (metrics.errors_io, metrics.errors_timeout),
            (2, 2),
            "refused and timed-out dials counted: {metrics:?}"
        );
    });
}

/// Counts datagram sessions as they open.
struct UdpCount(Arc<AtomicUsize>);

impl getty::udp::DatagramHandler<getty::codec::RawCodec> for UdpCount {
    fn on_open(
        &mut self,
        _: &mut getty::udp::DatagramSession<getty::codec::RawCodec>,
    ) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn on_message(
        &mut self,
        _: &mut getty::udp::DatagramSession<getty::codec::RawCodec>,
        _: getty::codec::Bytes,
        _: SocketAddr,
    ) {
    }
}

/// A UDP client asked for two connections from one fixed local address: the second socket
/// cannot bind it (`EADDRINUSE`), so either the build refuses the combination or both
/// sessions open; what must not happen is one session and a dial that fails for ever.
#[test]
fn a_udp_client_of_two_connections_from_one_local_address_opens_both_or_refuses() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let opened = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let (count, failures) = (opened.clone(), failed.clone());
        let built = getty::udp::UdpClient::builder()
            .connection_number(2)
            .local_addr(Some(local))
            .probe_wait(Duration::from_millis(20))
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
            .build(peer.local_addr().unwrap(), move |_| {
                Ok((getty::codec::RawCodec, UdpCount(count.clone())))
            });
        let client = match built {
            Ok(client) => client,
            Err(e) => {
                // Refused when built: a clear error.
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
                return;
            }
        };
        let client = client.on_dial_error(move |_, _| {
            failures.fetch_add(1, Ordering::Relaxed);
        });
        let running = Running::serve("udp-local-client", client);
        let deadline = Instant::now() + Duration::from_secs(3);
        while opened.load(Ordering::Relaxed) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        running.stop();
        assert_eq!(
            opened.load(Ordering::Relaxed),
            2,
            "sessions opened ({} dials failed)",
            failed.load(Ordering::Relaxed)
        );
    });
}

/// Fifty clients of a closed port (ECONNREFUSED at every dial) and ten of a listener whose
/// accept queue is full (every connect hangs until the connect timeout), all with the
/// default backoff, on one reactor: they redial on timers, so over two seconds the reactor
/// thread is mostly asleep (no busy loop), and `Close` stops every one of them.
#[cfg(target_os = "linux")]
#[test]
fn refused_and_hanging_redials_sleep_between_dials_and_stop_when_told() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let closed = dead_port();
        let full =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        full.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        full.listen(0).unwrap();
        let full_addr = full.local_addr().unwrap().as_socket().unwrap();
        let _queued = std::net::TcpStream::connect(full_addr).unwrap();
        let (tx, mut events) = Events::new();
        let make = |addr: SocketAddr, tx: &std::sync::mpsc::Sender<Ev>| {
            let tx = tx.clone();
            TcpClient::builder()
                .connect_timeout(Duration::from_millis(100))
                .build(addr, move |_| {
                    Ok((LengthFieldCodec::default(), Probe::silent(&tx)))
                })
                .unwrap()
        };
        let (running, first) = Running::spawn("rv-redial", make(closed, &tx));
        let mut ids = vec![first];
        for i in 1..60 {
            let client = make(if i < 50 { closed } else { full_addr }, &tx);
            ids.push(running.run_on(move |s| s.spawn(client)));
        }
        std::thread::sleep(Duration::from_millis(200));
        let before = cpu_of_thread("rv-redial").expect("the reactor thread");
        std::thread::sleep(Duration::from_secs(2));
        let cpu = cpu_of_thread("rv-redial").unwrap() - before;
        assert!(
            cpu < Duration::from_secs(1),
            "the reactor spent {cpu:?} of 2 s redialling"
        );
        for id in ids {
            running.handle().send(id, getty::Close).unwrap();
        }
        running.wait_until_empty("the clients did not stop");
        running.stop();
        assert_eq!(events.count(|_| true), 0, "no session opened");
    });
}

// ---------------------------------------------------------------------------------------
// WebSocket clients against scripted servers
// ---------------------------------------------------------------------------------------

#[cfg(feature = "ws")]
mod ws {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc::Sender;
    use std::time::{Duration, Instant};

    use super::*;
    use getty::codec::{Message, MessageCodec};
    use getty::ws::{Ws, WsClient};
    use getty::{Error, Handler, Session, SessionOptions};

    /// Reports every callback (a message as its payload).
    struct WsProbe {
        tx: Sender<Ev>,
    }

    impl Handler<MessageCodec, Ws> for WsProbe {
        fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
            let _ = self.tx.send(Ev::Open {
                sid: s.id(),
                peer: s.peer_addr(),
            });
            Ok(())
        }

        fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
            let _ = self.tx.send(Ev::Msg {
                sid: s.id(),
                msg: msg.into_payload(),
            });
        }

        fn on_error(&mut self, s: &mut Session<MessageCodec, Ws>, error: &Error) {
            let _ = self.tx.send(Ev::Error {
                sid: s.id(),
                err: classify(error),
            });
        }

        fn on_close(&mut self, s: &mut Session<MessageCodec, Ws>) {
            let _ = self.tx.send(Ev::Close { sid: s.id() });
        }
    }

    /// Reads a request head byte by byte (nothing past it is taken).
    fn read_head(stream: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).expect("the request head");
            head.push(byte[0]);
            assert!(head.len() < 16 * 1024, "an overlong head");
        }
        String::from_utf8(head).expect("an ASCII head")
    }

    /// The `Sec-WebSocket-Accept` that answers `request`.
    fn accept_of(request: &str) -> String {
        let key = request
            .split("\r\n")
            .find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| v.trim())
            })
            .expect("a key");
        tungstenite::handshake::derive_accept_key(key.as_bytes())
    }

    fn good_101(request: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_of(request)
        )
        .into_bytes()
    }

    /// A listener whose first connection (accepted within `STEP`) gets `script` run on it
    /// with the request head; the connection stays open until the test ends (or 30 s).
    fn scripted(
        script: impl FnOnce(&mut TcpStream, &str) + Send + 'static,
    ) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let deadline = Instant::now() + STEP;
            let mut stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => return,
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(STEP)).unwrap();
            let request = read_head(&mut stream);
            script(&mut stream, &request);
            // Keep the connection (and the listener) open: the client must decide alone.
            let mut sink = [0u8; 4096];
            let until = Instant::now() + Duration::from_secs(30);
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            while Instant::now() < until {
                match stream.read(&mut sink) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => return,
                }
            }
            drop(listener);
        });
        addr
    }

    /// A client of `addr` allowed one failed dial, with a handshake timeout far longer than
    /// the test waits: a refusal must come from the response itself, not the timer.
    fn client_of(addr: std::net::SocketAddr, tx: &Sender<Ev>) -> Running {
        let tx = tx.clone();
        let options = SessionOptions::default().handshake_timeout(Duration::from_secs(120));
        let client = WsClient::builder()
            .session_options(options)
            .max_consecutive_failures(Some(1))
            .build(&format!("ws://{addr}/"), move |_| {
                Ok((MessageCodec, WsProbe { tx: tx.clone() }))
            })
            .unwrap();
        Running::serve("ws-review-client", client)
    }

    /// Responses a client must refuse at once, without opening a session: a 200, a `101`
    /// with a wrong `Sec-WebSocket-Accept`, a head that never ends within 8 KiB (the
    /// server keeps the connection open), and a complete head longer than 8 KiB.
    #[test]
    fn a_websocket_client_refuses_bad_responses_at_once() {
        type Script = fn(&mut TcpStream, &str);
        let cases: [(&str, Script); 4] = [
            ("a 200", |s, _| {
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .unwrap();
            }),
            ("a wrong accept", |s, _| {
                s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
                )
                .unwrap();
            }),
            ("an endless head", |s, _| {
                let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nX-Long: ");
                let _ = s.write_all(&[b'a'; 20 * 1024]);
            }),
            ("a long complete head", |s, request| {
                let mut head = good_101(request);
                head.truncate(head.len() - 2);
                head.extend_from_slice(b"X-Pad: ");
                head.extend_from_slice(&[b'a'; 9 * 1024]);
                head.extend_from_slice(b"\r\n\r\n");
                let _ = s.write_all(&head);
            }),
        ];
        watchdog(TEST_LIMIT, move || {
            let _gate = shared_gate();
            for (what, script) in cases {
                let addr = scripted(script);
                let (tx, mut events) = Events::new();
                let client = client_of(addr, &tx);
                let gave_up = emptied_within(&client, STEP);
                client.stop();
                events.pump();
                assert!(gave_up, "{what}: the client did not refuse it");
                assert_eq!(events.all, vec![], "{what}: no session opened");
            }
        });
    }

    /// A masked text frame.
    fn masked_text(payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    /// A `101` split across two writes, then an unmasked text frame: delivered. Then a
    /// masked frame (RFC 6455 §5.1: a client must fail the connection): `on_error`, then
    /// `on_close`, and no message from it.
    #[test]
    fn a_websocket_client_reads_a_split_101_and_refuses_masked_frames() {
        watchdog(TEST_LIMIT, || {
            let _gate = shared_gate();
            let addr = scripted(|s, request| {
                let head = good_101(request);
                let (a, b) = head.split_at(20);
                s.write_all(a).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                s.write_all(b).unwrap();
                s.write_all(&[0x81, 2, b'h', b'i']).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                s.write_all(&masked_text(b"no")).unwrap();
            });
            let (tx, mut events) = Events::new();
            let client = client_of(addr, &tx);
            let sid = events
                .wait("on_open", |e| matches!(e, Ev::Open { .. }))
                .sid();
            events.wait_close(sid);
            client.stop();
            let seen = events.of(sid);
            assert!(
                matches!(&seen[..], [Ev::Open { .. }, Ev::Msg { msg, .. }, Ev::Error { .. }, Ev::Close { .. }] if &msg[..] == b"hi"),
                "{seen:?}"
            );
        });
    }
}
