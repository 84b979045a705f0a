//! Hostile peers of TLS sessions: what a misbehaving peer can make a TLS session do.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use getty::codec::filter::{DeflateFilter, Filter, Layered, TlsFilter};
use getty::codec::{Bytes, Compression, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{tls, Handler, Session, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Echoes, and reports errors and the close.
struct Reporter(Sender<String>);

impl Handler<LengthFieldCodec> for Reporter {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = s.write(msg);
    }
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        let _ = self.0.send(format!("error: {error}"));
    }
    fn on_close(&mut self, _: &mut Session<LengthFieldCodec>) {
        let _ = self.0.send("close".into());
    }
}

/// A certificate for "localhost": the server's config and a client config trusting it.
fn configs() -> (
    std::sync::Arc<getty::codec::rustls::ServerConfig>,
    std::sync::Arc<getty::codec::rustls::ClientConfig>,
) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
    (
        tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap(),
        tls::client_config(chain.as_bytes()).unwrap(),
    )
}

/// A TLS echo server with `options`; its events, and a client config that trusts it.
fn server(
    options: SessionOptions,
) -> (
    Running,
    SocketAddr,
    Receiver<String>,
    std::sync::Arc<getty::codec::rustls::ClientConfig>,
) {
    let (server_config, client_config) = configs();
    let (tx, events) = mpsc::channel();
    let server = TcpServer::builder()
        .tls(server_config)
        .session_options(options)
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), Reporter(tx.clone())))
        })
        .unwrap();
    let addr = server.local_addr();
    (
        Running::serve("review-tls", server),
        addr,
        events,
        client_config,
    )
}

/// Drives any client filter stack over the blocking `peer`: the handshake, `send`, then
/// reads until `want` plain bytes came back. Returns the plain bytes.
fn exchange<F: Filter>(peer: &mut TcpStream, client: &mut F, send: &[u8], want: usize) -> BytesMut {
    let (mut wire_out, mut wire_in, mut plain) =
        (BytesMut::new(), BytesMut::new(), BytesMut::new());
    client.encode(send, &mut wire_out).unwrap();
    let mut chunk = [0u8; 16 * 1024];
    for _ in 0..10_000 {
        if !client.is_handshaking() && plain.len() >= want {
            break;
        }
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
    plain
}

/// With stream compression on a TLS server the session's filter is a stack of boxed
/// filters, and `Box<dyn Filter>` did not pass `peer_closed`/`can_send`/
/// `holds_partial_input` on: a FIN without close_notify (a truncation an attacker can
/// forge) closed the session as cleanly as a real close_notify.
#[test]
fn a_truncation_is_reported_under_tls_with_compression() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let options = SessionOptions::default().compression(Some(Compression::Default));
        let (server, addr, events, config) = server(options);
        let mut client = Layered::new(
            TlsFilter::client(config, "localhost").unwrap(),
            DeflateFilter::new(Compression::Default),
        );
        let mut peer = connect(addr);
        let plain = exchange(&mut peer, &mut client, &frame(b"ping"), 8);
        assert_eq!(&plain[..], &frame(b"ping")[..]);
        peer.shutdown(Shutdown::Write).unwrap();
        let _ = read_to_end(&mut peer);
        let first = events.recv_timeout(STEP).unwrap();
        assert!(first.contains("without close_notify"), "{first}");
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        server.stop();
    });
}

/// The same through the codec crate's public API: a boxed filter keeps what its filter says.
#[test]
fn a_boxed_tls_filter_reports_what_the_filter_says() {
    let _gate = shared_gate();
    let (_, client_config) = configs();
    let tls = TlsFilter::client(client_config, "localhost").unwrap();
    let direct = (tls.peer_closed(), tls.can_send());
    let boxed: Box<dyn Filter> = Box::new(tls);
    assert_eq!((boxed.peer_closed(), boxed.can_send()), direct);
    assert_eq!(direct, (Some(false), true));
}

/// Reads the server's records until its EOF and decodes them; returns the plain bytes and
/// whether its close_notify came.
fn read_rest<F: Filter>(
    peer: &mut TcpStream,
    client: &mut F,
    mut wire: BytesMut,
) -> (BytesMut, bool) {
    let (got, _) = read_to_end(peer);
    wire.extend_from_slice(&got);
    let mut plain = BytesMut::new();
    for _ in 0..100_000 {
        let before = (wire.len(), plain.len());
        if client.decode(&mut wire, &mut plain, 64 << 20).is_err() {
            break;
        }
        if (wire.len(), plain.len()) == before {
            break;
        }
    }
    (plain, client.peer_closed() == Some(true))
}

/// A frame over max_message_len whose header and body come in separate TLS records, after a
/// good frame in the same write: the good one is answered, the handler hears
/// MessageTooLong then the close, and the server's close_notify follows the answer.
#[test]
fn an_oversized_frame_across_records_ends_after_the_replies() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let options = SessionOptions::default().max_message_len(1024);
        let (server, addr, events, config) = server(options);
        let mut client = TlsFilter::client(config, "localhost").unwrap();
        let mut peer = connect(addr);
        tls_exchange(&mut peer, &mut client, b"", 0);
        let mut wire = BytesMut::new();
        client.encode(&frame(b"hello"), &mut wire).unwrap();
        client
            .encode(&(1u32 << 20).to_be_bytes(), &mut wire)
            .unwrap();
        for _ in 0..4 {
            client.encode(&[7u8; 4096], &mut wire).unwrap();
        }
        client.flush(&mut wire).unwrap();
        peer.write_all(&wire).unwrap();
        let error = events.recv_timeout(STEP).unwrap();
        assert!(
            error.starts_with("error:") && error.contains("1048576"),
            "{error}"
        );
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        let (plain, notified) = read_rest(&mut peer, &mut client, BytesMut::new());
        assert_eq!(
            &plain[..],
            &frame(b"hello")[..],
            "the reply to the good frame"
        );
        assert!(notified, "no close_notify after the reply");
        server.stop();
    });
}

/// Data and close_notify in one segment, right after the handshake: the data is answered,
/// then close_notify, and the session closes without an error.
#[test]
fn data_with_close_notify_in_one_segment_is_answered() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let (server, addr, events, config) = server(SessionOptions::default());
        let mut client = TlsFilter::client(config, "localhost").unwrap();
        let mut peer = connect(addr);
        let (_, rest) = tls_exchange(&mut peer, &mut client, b"", 0);
        let mut wire = BytesMut::new();
        client.encode(&frame(b"last words"), &mut wire).unwrap();
        client.close(&mut wire);
        peer.write_all(&wire).unwrap();
        let (plain, notified) = read_rest(&mut peer, &mut client, rest);
        assert_eq!(&plain[..], &frame(b"last words")[..]);
        assert!(notified, "no close_notify back");
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        server.stop();
    });
}

/// A ClientHello sent a byte per segment still completes the handshake.
#[test]
fn a_client_hello_in_one_byte_segments_completes() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let (server, addr, events, config) = server(SessionOptions::default());
        let mut client = TlsFilter::client(config, "localhost").unwrap();
        let mut peer = connect(addr);
        let mut hello = BytesMut::new();
        client.flush(&mut hello).unwrap();
        assert!(hello.len() > 100, "a ClientHello");
        for byte in hello.iter() {
            peer.write_all(&[*byte]).unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
        let (plain, _) = tls_exchange(&mut peer, &mut client, &frame(b"ping"), 8);
        assert_eq!(&plain[..], &frame(b"ping")[..]);
        assert!(events.try_recv().is_err(), "no error");
        server.stop();
    });
}

/// A handshake that stalls after the ClientHello: the handshake timeout fires once, and the
/// reactor sleeps meanwhile (no busy loop).
#[test]
fn a_handshake_stalled_half_way_times_out_without_spinning() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let options = SessionOptions::default().handshake_timeout(Duration::from_millis(1500));
        let (server, addr, events, config) = server(options);
        let mut client = TlsFilter::client(config, "localhost").unwrap();
        let mut peer = connect(addr);
        let mut hello = BytesMut::new();
        client.flush(&mut hello).unwrap();
        peer.write_all(&hello).unwrap();
        // The server's flight comes back; the client never answers it.
        let mut chunk = [0u8; 16 * 1024];
        let n = peer.read(&mut chunk).unwrap();
        assert!(n > 0);
        let cpu_before = cpu_of_thread("review-tls").expect("the reactor thread");
        let started = Instant::now();
        let error = events.recv_timeout(STEP).unwrap();
        let waited = started.elapsed();
        let cpu = cpu_of_thread("review-tls").unwrap() - cpu_before;
        assert!(error.contains("handshake"), "{error}");
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        assert!(
            events.recv_timeout(Duration::from_millis(300)).is_err(),
            "one error, one close"
        );
        assert!(
            waited > Duration::from_millis(500),
            "fired after {waited:?}"
        );
        assert!(
            cpu < waited / 4,
            "the reactor used {cpu:?} of CPU in {waited:?}"
        );
        let _ = read_to_end(&mut peer);
        server.stop();
    });
}

/// A raw rustls client over a non-blocking socket, for peers that misbehave.
struct RawClient {
    conn: getty::codec::rustls::ClientConnection,
    sock: TcpStream,
    pending: Vec<u8>,
}

impl RawClient {
    fn connect(
        addr: SocketAddr,
        config: std::sync::Arc<getty::codec::rustls::ClientConfig>,
    ) -> RawClient {
        let name = "localhost".try_into().unwrap();
        let mut conn = getty::codec::rustls::ClientConnection::new(config, name).unwrap();
        let mut sock = connect(addr);
        let deadline = Instant::now() + STEP;
        while conn.is_handshaking() {
            assert!(Instant::now() < deadline, "handshake");
            while conn.wants_write() {
                conn.write_tls(&mut sock).unwrap();
            }
            if conn.is_handshaking() {
                conn.read_tls(&mut sock).unwrap();
                conn.process_new_packets().unwrap();
            }
        }
        while conn.wants_write() {
            conn.write_tls(&mut sock).unwrap();
        }
        sock.set_nonblocking(true).unwrap();
        RawClient {
            conn,
            sock,
            pending: Vec::new(),
        }
    }

    /// Moves rustls's records into `pending`.
    fn take_records(&mut self) {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.pending).unwrap();
        }
    }

    /// Writes what it can of `pending`; true when the socket took nothing.
    fn push(&mut self) -> bool {
        let mut blocked = false;
        while !self.pending.is_empty() {
            match self.sock.write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        blocked
    }

    /// Reads what is there and returns the plain bytes.
    fn pull(&mut self) -> Vec<u8> {
        let mut plain = Vec::new();
        loop {
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => panic!("the server closed"),
                Ok(_) => {
                    self.conn.process_new_packets().unwrap();
                    let _ = self.conn.reader().read_to_end(&mut plain);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        plain
    }
}

/// Pipelines requests, each after a KeyUpdate(update_requested) (so the server owes a
/// KeyUpdate of its own every time), and never reads: the server must stop reading at its
/// high watermark, keep its memory bounded and the session open, and answer everything once
/// the peer reads.
fn flood_without_reading(options: SessionOptions, key_updates: bool, payload: usize) {
    let (server, addr, events, config) = server(options);
    let mut client = RawClient::connect(addr, config);
    let baseline = resident_bytes();
    let one = frame(&vec![0x5a; payload]);
    let (mut sent, mut blocked_since, started) = (0usize, None::<Instant>, Instant::now());
    while started.elapsed() < Duration::from_secs(20) && sent < 4_000_000 {
        // A batch of requests, each in a record of its own.
        for _ in 0..64.min(1 + (256 << 10) / one.len()) {
            if client.pending.len() > 256 << 10 {
                break;
            }
            if key_updates {
                client.conn.refresh_traffic_keys().unwrap();
            }
            client.conn.writer().write_all(&one).unwrap();
            client.take_records();
            sent += 1;
        }
        if client.push() {
            let since = *blocked_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(1) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        } else {
            blocked_since = None;
        }
    }
    assert!(
        blocked_since.is_some(),
        "the server never stopped reading ({sent} sent)"
    );
    let growth = resident_bytes().saturating_sub(baseline);
    assert!(
        growth < 16 << 20,
        "RSS grew by {} KiB with {sent} requests",
        growth >> 10
    );
    assert!(
        events.try_recv().is_err(),
        "the session ended while the peer was within limits"
    );
    // Now read: every answer comes back, in order.
    let want = sent * one.len();
    let mut got = Vec::new();
    let started = Instant::now();
    while got.len() < want && started.elapsed() < Duration::from_secs(30) {
        client.push();
        let more = client.pull();
        if more.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
        got.extend_from_slice(&more);
    }
    assert_eq!(got.len(), want, "answers missing");
    assert!(
        got.chunks(one.len()).all(|c| c == &one[..]),
        "answers differ"
    );
    assert!(events.try_recv().is_err(), "the session ended");
    server.stop();
}

#[test]
fn a_key_update_flood_from_a_peer_that_never_reads_is_slowed_down() {
    // Measures the process's resident memory: runs alone.
    let _gate = exclusive_gate();
    watchdog(Duration::from_secs(90), || {
        flood_without_reading(SessionOptions::default(), true, 1000);
    });
}

#[test]
fn tiny_requests_from_a_peer_that_never_reads_are_slowed_down() {
    // Measures the process's resident memory: runs alone.
    let _gate = exclusive_gate();
    watchdog(Duration::from_secs(90), || {
        flood_without_reading(SessionOptions::default(), false, 1);
    });
}

#[test]
fn maximal_records_from_a_peer_that_never_reads_are_slowed_down() {
    // Measures the process's resident memory: runs alone.
    let _gate = exclusive_gate();
    watchdog(Duration::from_secs(90), || {
        flood_without_reading(SessionOptions::default(), false, 16 * 1024 - 4);
    });
}

/// A hostile TLS server on a thread: accepts one connection and runs `act` on it.
fn hostile_server(
    act: impl FnOnce(TcpStream) + Send + 'static,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(STEP)).unwrap();
        sock.set_write_timeout(Some(STEP)).unwrap();
        act(sock);
    });
    (addr, thread)
}

/// The framework as a TLS client of `addr`, giving up after one failure.
fn tls_client_of(
    addr: SocketAddr,
    config: std::sync::Arc<getty::codec::rustls::ClientConfig>,
    options: SessionOptions,
) -> (Running, Receiver<String>) {
    let (tx, events) = mpsc::channel();
    let client = getty::tcp::TcpClient::builder()
        .tls(config, "localhost")
        .max_consecutive_failures(Some(1))
        .session_options(options)
        .build(addr, move |_| {
            Ok((LengthFieldCodec::default(), Reporter(tx.clone())))
        })
        .unwrap();
    (Running::serve("rv-tls-client", client), events)
}

/// Reads the ClientHello's first record (header and body).
fn read_client_hello(sock: &mut TcpStream) {
    let mut head = [0u8; 5];
    sock.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x16, "a handshake record");
    let mut body = vec![0u8; u16::from_be_bytes([head[3], head[4]]) as usize];
    sock.read_exact(&mut body).unwrap();
}

/// A server that takes the ClientHello and says nothing: the client's handshake timeout
/// fires, once, with the reactor asleep meanwhile.
#[test]
fn a_tls_client_against_a_stalled_server_times_out_without_spinning() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let (_, config) = configs();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (addr, thread) = hostile_server(move |mut sock| {
            read_client_hello(&mut sock);
            let _ = done_rx.recv_timeout(STEP);
        });
        let options = SessionOptions::default().handshake_timeout(Duration::from_millis(1500));
        let started = Instant::now();
        let (client, events) = tls_client_of(addr, config, options);
        std::thread::sleep(Duration::from_millis(200));
        let cpu_before = cpu_of_thread("rv-tls-client").expect("the reactor thread");
        let error = events.recv_timeout(STEP).unwrap();
        let cpu = cpu_of_thread("rv-tls-client").unwrap() - cpu_before;
        let waited = started.elapsed();
        assert!(error.contains("handshake"), "{error}");
        assert!(
            waited > Duration::from_millis(1000),
            "fired after {waited:?}"
        );
        assert!(
            cpu < Duration::from_millis(300),
            "the reactor used {cpu:?} of CPU"
        );
        let _ = done_tx.send(());
        thread.join().unwrap();
        client.stop();
    });
}

/// A server that answers the ClientHello with application data: a clear TLS error at once.
#[test]
fn a_tls_client_gets_application_data_before_the_handshake() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let (_, config) = configs();
        let (addr, thread) = hostile_server(move |mut sock| {
            read_client_hello(&mut sock);
            let _ = sock.write_all(b"\x17\x03\x03\x00\x05hello");
            let _ = read_to_end(&mut sock);
        });
        let (client, events) = tls_client_of(addr, config, SessionOptions::default());
        let error = events.recv_timeout(STEP).unwrap();
        assert!(
            error.starts_with("error:") && error.contains("tls"),
            "{error}"
        );
        thread.join().unwrap();
        client.stop();
    });
}

/// A real TLS server whose certificate chain is far larger than a handshake message may be:
/// the client refuses it with a clear error and holds no more than its handshake bound.
#[test]
fn a_tls_client_refuses_a_huge_certificate_chain() {
    // Measures the process's resident memory: runs alone.
    let _gate = exclusive_gate();
    watchdog(TEST_LIMIT, || {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let leaf = getty::codec::rustls::pki_types::CertificateDer::from(made.cert.der().to_vec());
        let key = getty::codec::rustls::pki_types::PrivateKeyDer::Pkcs8(
            getty::codec::rustls::pki_types::PrivatePkcs8KeyDer::from(
                made.signing_key.serialize_der(),
            ),
        );
        let filler = rcgen::generate_simple_self_signed(
            (0..40)
                .map(|i| format!("filler-{i:04}.example"))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let filler =
            getty::codec::rustls::pki_types::CertificateDer::from(filler.cert.der().to_vec());
        let mut chain = vec![leaf];
        while chain.iter().map(|c| c.len()).sum::<usize>() < 1 << 20 {
            chain.push(filler.clone());
        }
        let server_config = std::sync::Arc::new(
            getty::codec::rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let client_config = tls::client_config(made.cert.pem().as_bytes()).unwrap();
        let (addr, thread) = hostile_server(move |mut sock| {
            let mut conn = getty::codec::rustls::ServerConnection::new(server_config).unwrap();
            let _ = conn.complete_io(&mut sock);
            let _ = read_to_end(&mut sock);
        });
        let baseline = resident_bytes();
        let (client, events) = tls_client_of(addr, client_config, SessionOptions::default());
        let error = events.recv_timeout(STEP).unwrap();
        let growth = resident_bytes().saturating_sub(baseline);
        assert!(
            error.starts_with("error:") && error.contains("tls"),
            "{error}"
        );
        assert!(growth < 8 << 20, "RSS grew by {} KiB", growth >> 10);
        thread.join().unwrap();
        client.stop();
    });
}

/// A ClientHello near the largest a handshake message may be (64 KiB of ALPN names), sent
/// as one record per byte of it: the server answers with its flight, or refuses it with a
/// clear error, and the reactor spends no more than it would on the bytes themselves.
#[test]
fn a_huge_client_hello_in_one_byte_records_is_handled_in_linear_time() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let (server, addr, events, config) = server(SessionOptions::default());
        let mut config = (*config).clone();
        config.alpn_protocols = (0..250u32)
            .map(|i| vec![b'a' + (i % 26) as u8; 250])
            .collect();
        let name = "localhost".try_into().unwrap();
        let mut conn =
            getty::codec::rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut hello = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut hello).unwrap();
        }
        // Unwrap the records into the handshake message, then one record per byte.
        let mut message = Vec::new();
        let mut rest = &hello[..];
        while rest.len() >= 5 {
            let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
            message.extend_from_slice(&rest[5..5 + len]);
            rest = &rest[5 + len..];
        }
        assert!(
            message.len() > 60_000,
            "a ClientHello of {} bytes",
            message.len()
        );
        let mut wire = Vec::with_capacity(message.len() * 6);
        for byte in &message {
            wire.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x01, *byte]);
        }
        let mut peer = connect(addr);
        let cpu_before = cpu_of_thread("review-tls").unwrap();
        let writer = {
            let mut peer = peer.try_clone().unwrap();
            std::thread::spawn(move || {
                let _ = peer.write_all(&wire);
            })
        };
        let mut head = [0u8; 5];
        let answer = peer.read_exact(&mut head);
        let cpu = cpu_of_thread("review-tls").unwrap() - cpu_before;
        eprintln!(
            "answer {answer:?} {head:?} cpu {cpu:?} events {:?}",
            events.try_recv()
        );
        writer.join().unwrap();
        assert!(
            cpu < Duration::from_secs(2),
            "the reactor used {cpu:?} on one ClientHello"
        );
        drop(peer);
        server.stop();
    });
}

/// Reports messages too.
struct Recorder(Sender<String>);

impl Handler<LengthFieldCodec> for Recorder {
    fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = self
            .0
            .send(format!("msg: {}", String::from_utf8_lossy(&msg)));
    }
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        let _ = self.0.send(format!("error: {error}"));
    }
    fn on_close(&mut self, _: &mut Session<LengthFieldCodec>) {
        let _ = self.0.send("close".into());
    }
}

/// A server that sends its whole flight, application data and close_notify in one segment,
/// before it has the client's Finished: the framework's client delivers the data, then
/// closes cleanly (the server's close_notify ended its input).
#[test]
fn a_tls_client_gets_data_and_close_notify_with_the_server_flight() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let mut server_config =
            (*tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap()).clone();
        // Half-RTT data: sent right after the server's Finished.
        server_config.send_half_rtt_data = true;
        let server_config = std::sync::Arc::new(server_config);
        let client_config = tls::client_config(chain.as_bytes()).unwrap();
        let (addr, thread) = hostile_server(move |mut sock| {
            let mut conn = getty::codec::rustls::ServerConnection::new(server_config).unwrap();
            while conn.is_handshaking() && !conn.wants_write() {
                conn.read_tls(&mut sock).unwrap();
                conn.process_new_packets().unwrap();
            }
            conn.writer().write_all(&frame(b"early")).unwrap();
            conn.send_close_notify();
            let mut flight = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut flight).unwrap();
            }
            sock.write_all(&flight).unwrap();
            let _ = read_to_end(&mut sock);
        });
        let (tx, events) = mpsc::channel();
        let client = getty::tcp::TcpClient::builder()
            .tls(client_config, "localhost")
            .max_consecutive_failures(Some(1))
            .build(addr, move |_| {
                Ok((LengthFieldCodec::default(), Recorder(tx.clone())))
            })
            .unwrap();
        let client = Running::serve("rv-tls-client", client);
        let first = events.recv_timeout(STEP).unwrap();
        assert_eq!(first, "msg: early");
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        thread.join().unwrap();
        client.stop();
    });
}

/// A record that fails to decrypt, under TLS with compression: the server sends its alert
/// and ends with a FIN, as it does under TLS alone.
#[test]
fn a_corrupt_record_under_tls_with_compression_is_answered_with_an_alert() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let options = SessionOptions::default().compression(Some(Compression::Default));
        let (server, addr, events, config) = server(options);
        let mut client = Layered::new(
            TlsFilter::client(config, "localhost").unwrap(),
            DeflateFilter::new(Compression::Default),
        );
        let mut peer = connect(addr);
        let plain = exchange(&mut peer, &mut client, &frame(b"ping"), 8);
        assert_eq!(&plain[..], &frame(b"ping")[..]);
        let mut bad = vec![0x17, 0x03, 0x03, 0x00, 0x40];
        bad.extend_from_slice(&[0xee; 0x40]);
        peer.write_all(&bad).unwrap();
        let (wire, ended) = read_to_end(&mut peer);
        assert_eq!(ended, Ended::Eof, "the session was reset");
        let mut wire = BytesMut::from(&wire[..]);
        let answer = client.decode(&mut wire, &mut BytesMut::new(), 1 << 20);
        let answer = format!("{answer:?}");
        assert!(answer.contains("BadRecordMac"), "no alert: {answer}");
        let error = events.recv_timeout(STEP).unwrap();
        assert!(error.contains("tls"), "{error}");
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        server.stop();
    });
}

/// Writes a mix of small and large frames in `on_open`.
struct Mixer(Vec<usize>);

impl Handler<LengthFieldCodec> for Mixer {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        for (i, len) in self.0.iter().enumerate() {
            s.write(mixed(i, *len)).unwrap();
        }
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, _: Bytes) {}
}

fn mixed(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|b| (b * 7 + i * 13) as u8).collect()
}

/// Small and large writes, on both sides of the outbound queue's copy threshold and of the
/// record and batch sizes, queued before the handshake is done: all leave whole, in order.
#[test]
fn mixed_writes_before_the_handshake_arrive_whole_and_in_order() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let sizes = vec![
            1,
            16 * 1024 - 1,
            16 * 1024,
            16 * 1024 + 1,
            3,
            64 * 1024 - 1,
            64 * 1024,
            64 * 1024 + 5,
            0,
            1 << 20,
            7,
            200_000,
            2,
        ];
        let (server_config, client_config) = configs();
        let sizes2 = sizes.clone();
        let server = TcpServer::builder()
            .tls(server_config)
            .bind("127.0.0.1:0", move |_| {
                Ok((LengthFieldCodec::default(), Mixer(sizes2.clone())))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-tls", server);
        let mut client = TlsFilter::client(client_config, "localhost").unwrap();
        let mut peer = connect(addr);
        let want: usize = sizes.iter().map(|n| n + 4).sum();
        let (plain, _) = tls_exchange(&mut peer, &mut client, b"", want);
        let mut expected = Vec::with_capacity(want);
        for (i, len) in sizes.iter().enumerate() {
            expected.extend_from_slice(&frame(&mixed(i, *len)));
        }
        assert_eq!(plain.len(), want);
        assert!(plain[..] == expected[..], "the bytes differ");
        server.stop();
    });
}

/// Under TLS with compression, close_notify right after the first byte of a deflate batch:
/// the input ended inside a unit the peer's compressor started, which the handler must hear
/// as a truncation (the deflate layer's `holds_partial_input` was lost in the boxed stack).
#[test]
fn close_notify_inside_a_deflate_batch_is_a_truncation() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let options = SessionOptions::default().compression(Some(Compression::Default));
        let (server, addr, events, config) = server(options);
        let mut tls = TlsFilter::client(config, "localhost").unwrap();
        let mut peer = connect(addr);
        tls_exchange(&mut peer, &mut tls, b"", 0);
        let mut deflate = DeflateFilter::new(Compression::Default);
        let mut batch = BytesMut::new();
        deflate
            .encode(&frame(b"a message cut short"), &mut batch)
            .unwrap();
        deflate.flush(&mut batch).unwrap();
        assert!(batch.len() > 2);
        let mut wire = BytesMut::new();
        tls.encode(&batch[..1], &mut wire).unwrap();
        tls.close(&mut wire);
        peer.write_all(&wire).unwrap();
        let _ = read_to_end(&mut peer);
        let first = events.recv_timeout(STEP).unwrap();
        assert!(first.starts_with("error:"), "a clean close: {first}");
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        server.stop();
    });
}

/// Under TLS with compression the peer's close_notify went unseen (the boxed stack said
/// the TLS layer has no closing message): the server neither answered it nor closed, and
/// waited for a FIN the peer, waiting for close_notify, never sent.
#[test]
fn close_notify_under_tls_with_compression_is_answered() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let options = SessionOptions::default().compression(Some(Compression::Default));
        let (server, addr, events, config) = server(options);
        let mut client = Layered::new(
            TlsFilter::client(config, "localhost").unwrap(),
            DeflateFilter::new(Compression::Default),
        );
        let mut peer = connect(addr);
        let plain = exchange(&mut peer, &mut client, &frame(b"ping"), 8);
        assert_eq!(&plain[..], &frame(b"ping")[..]);
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut bye = BytesMut::new();
        client.close(&mut bye);
        peer.write_all(&bye).unwrap();
        let (_, notified) = read_rest(&mut peer, &mut client, BytesMut::new());
        assert!(notified, "no close_notify back");
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close", "a clean close");
        server.stop();
    });
}

/// A codec whose header is longer than the session's limit and a read's worth (a length
/// field 70,000 bytes in, under a 1,000-byte limit): the TLS session decrypts at most that
/// much ahead of the codec, so it stopped decoding for good, silently, and every further
/// byte the peer sent piled up undecrypted (16 MiB held). It ends with `MessageTooLong`.
#[test]
fn a_header_longer_than_the_plain_bytes_a_tls_session_holds_is_too_long() {
    let _gate = shared_gate();
    watchdog(TEST_LIMIT, || {
        let (server_config, client_config) = configs();
        let (tx, events) = mpsc::channel();
        let long_header = || {
            LengthFieldCodec::builder()
                .length_field_offset(70_000)
                .build()
                .unwrap()
        };
        let server = TcpServer::builder()
            .tls(server_config)
            .session_options(SessionOptions::default().max_message_len(1000))
            .bind("127.0.0.1:0", move |_| {
                Ok((long_header(), Reporter(tx.clone())))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("long-header", server);
        let mut client = TlsFilter::client(client_config, "localhost").unwrap();
        let mut peer = connect(addr);
        exchange(&mut peer, &mut client, b"", 0);
        let mut frame = vec![0u8; 70_000];
        frame.extend_from_slice(&1000u32.to_be_bytes());
        frame.resize(frame.len() + 1000, 7);
        let mut wire = BytesMut::new();
        client.encode(&frame, &mut wire).unwrap();
        client.flush(&mut wire).unwrap();
        peer.write_all(&wire).unwrap();
        let first = events.recv_timeout(STEP).expect("an error, not a stall");
        server.stop();
        assert!(first.contains("exceeds the maximum of 1000"), "{first}");
    });
}
