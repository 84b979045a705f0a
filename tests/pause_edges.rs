//! The edges of reading and pausing, over real sockets: pause and resume by a handle,
//! frames already read when the handler pauses (plain, TLS, deflate), EOF while paused,
//! first frames that arrive with a TLS handshake or a WebSocket upgrade, keep-alive while
//! paused, a TLS handshake under a pause, a close or a timeout before a TLS handshake is
//! done, a resume after a burst of handle writes, and held sessions that cost no CPU. Most
//! once failed (found by hostile reviews of the flow-control change).

mod common;

#[cfg(any(feature = "tls", feature = "ws"))]
use std::io::Read;
use std::io::Write;
#[cfg(feature = "tls")]
use std::net::TcpStream;
use std::sync::mpsc::{self, Sender};
#[cfg(any(feature = "tls", feature = "deflate"))]
use std::sync::Arc;
use std::time::Duration;

use common::*;
#[cfg(feature = "tls")]
use getty::codec::rustls;
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::TcpServer;
#[cfg(feature = "tls")]
use getty::tls;
#[cfg(feature = "ws")]
use getty::ws::Ws;
use getty::{Handler, Session, SessionOptions};

const LIMIT: Duration = Duration::from_secs(60);

struct Pausing {
    messages: Sender<Vec<u8>>,
    handles: Sender<getty::SessionHandle<LengthFieldCodec>>,
}

impl Handler<LengthFieldCodec> for Pausing {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = self.messages.send(msg.to_vec());
        s.write(msg.clone()).unwrap();
        if &msg[..] == b"pause" {
            s.pause_reading();
            let _ = self.handles.send(s.handle().unwrap());
        }
    }
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        let _ = self.messages.send(format!("error: {error}").into_bytes());
    }
}

#[cfg(feature = "tls")]
fn certs() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

#[cfg(feature = "tls")]
type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

#[cfg(feature = "tls")]
fn tls_connect(addr: std::net::SocketAddr, chain: &str) -> TlsStream {
    let config: Arc<rustls::ClientConfig> = tls::client_config(chain.as_bytes()).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    rustls::StreamOwned::new(conn, connect(addr))
}

/// Over TLS: the handler pauses on the first of four frames that arrived in one record;
/// a handle resumes. The three frames already decrypted into the read buffer must be
/// delivered on resume, without the peer sending anything more.
#[cfg(feature = "tls")]
#[test]
fn tls_frames_read_before_a_pause_are_delivered_on_resume() {
    watchdog(LIMIT, || {
        let (chain, key) = certs();
        let config = tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
        let (messages_tx, messages) = mpsc::channel();
        let (handles_tx, handles) = mpsc::channel();
        let server = TcpServer::builder()
            .tls(config)
            .bind("127.0.0.1:0", move |_| {
                let handler = Pausing {
                    messages: messages_tx.clone(),
                    handles: handles_tx.clone(),
                };
                Ok((LengthFieldCodec::default(), handler))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("edge-tls-pausing", server);
        let mut peer = tls_connect(addr, &chain);
        let mut input = frame(b"pause");
        for i in 0..3 {
            input.extend_from_slice(&frame(format!("held {i}").as_bytes()));
        }
        peer.write_all(&input).unwrap(); // one TLS record
        peer.flush().unwrap();
        assert_eq!(messages.recv_timeout(STEP).unwrap(), b"pause");
        assert_eq!(read_frame(&mut peer), b"pause");
        let handle = handles.recv_timeout(STEP).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        handle.resume_reading().unwrap();
        for expected in ["held 0", "held 1", "held 2"] {
            let got = messages
                .recv_timeout(Duration::from_secs(3))
                .unwrap_or_else(|_| panic!("{expected} never delivered after resume"));
            assert_eq!(got, expected.as_bytes());
        }
        server.stop();
    });
}

/// Same, but the peer then ends its side (close_notify + FIN) while the session is paused:
/// on resume the three complete frames must be delivered and the session end cleanly (they
/// were once reported as a truncated frame).
#[cfg(feature = "tls")]
#[test]
fn tls_eof_after_a_pause_drops_complete_frames() {
    watchdog(LIMIT, || {
        let (chain, key) = certs();
        let config = tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
        let (messages_tx, messages) = mpsc::channel();
        let (handles_tx, handles) = mpsc::channel();
        let server = TcpServer::builder()
            .tls(config)
            .bind("127.0.0.1:0", move |_| {
                let handler = Pausing {
                    messages: messages_tx.clone(),
                    handles: handles_tx.clone(),
                };
                Ok((LengthFieldCodec::default(), handler))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("edge-tls-pausing-eof", server);
        let mut peer = tls_connect(addr, &chain);
        let mut input = frame(b"pause");
        for i in 0..3 {
            input.extend_from_slice(&frame(format!("held {i}").as_bytes()));
        }
        peer.write_all(&input).unwrap();
        peer.flush().unwrap();
        assert_eq!(messages.recv_timeout(STEP).unwrap(), b"pause");
        assert_eq!(read_frame(&mut peer), b"pause");
        let handle = handles.recv_timeout(STEP).unwrap();
        peer.conn.send_close_notify();
        peer.flush().unwrap();
        peer.sock.shutdown(std::net::Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        handle.resume_reading().unwrap();
        for expected in ["held 0", "held 1", "held 2"] {
            let got = messages.recv_timeout(Duration::from_secs(3)).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&got),
                expected,
                "after resume with the peer's EOF"
            );
        }
        server.stop();
    });
}

#[cfg(all(feature = "tls", feature = "ws"))]
struct WsEcho(Sender<Vec<u8>>);
#[cfg(all(feature = "tls", feature = "ws"))]
impl Handler<getty::codec::MessageCodec, Ws> for WsEcho {
    fn on_message(
        &mut self,
        s: &mut Session<getty::codec::MessageCodec, Ws>,
        msg: getty::codec::Message,
    ) {
        let _ = self.0.send(b"msg".to_vec());
        let _ = s.write(msg);
    }
}

/// WSS server: the client sends its upgrade request and its first message in one TLS
/// record (legal: the client may send right after the request). The message lands in the
/// session's plain read buffer as "leftover" and must be delivered at open.
#[cfg(all(feature = "tls", feature = "ws"))]
#[test]
fn wss_first_message_pipelined_with_the_upgrade_is_delivered() {
    use getty::codec::ws::{Config, Protocol, Role};
    use getty::codec::MessageKind;
    watchdog(LIMIT, || {
        let (chain, key) = certs();
        let config = tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
        let (tx, messages) = mpsc::channel();
        let server = getty::ws::WsServer::builder()
            .tls(config)
            .route("/echo", move |_| {
                Ok((getty::codec::MessageCodec, WsEcho(tx.clone())))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("edge-wss", server);
        let mut peer = tls_connect(addr, &chain);
        let mut out = Vec::new();
        out.extend_from_slice(
            b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        );
        let mut client = Protocol::new(Role::Client, Config::default(), None);
        let mut msg = bytes::BytesMut::from(&b"first"[..]);
        client
            .encode_message(MessageKind::Binary, &mut msg, 0)
            .unwrap();
        out.extend_from_slice(&msg);
        peer.write_all(&out).unwrap();
        peer.flush().unwrap();
        let got = messages.recv_timeout(Duration::from_secs(3));
        assert!(got.is_ok(), "the first message was never delivered");
        server.stop();
    });
}

#[cfg(feature = "ws")]
struct WsPausing {
    events: Sender<String>,
    handles: Sender<getty::SessionHandle<getty::codec::MessageCodec, Ws>>,
}
#[cfg(feature = "ws")]
impl Handler<getty::codec::MessageCodec, Ws> for WsPausing {
    fn on_message(
        &mut self,
        s: &mut Session<getty::codec::MessageCodec, Ws>,
        msg: getty::codec::Message,
    ) {
        let text = String::from_utf8_lossy(msg.payload()).into_owned();
        let _ = self.events.send(format!("msg {text}"));
        let _ = s.write(msg);
        if text == "pause" {
            s.pause_reading();
            let _ = self.handles.send(s.handle().unwrap());
        }
    }
    fn on_error(&mut self, _: &mut Session<getty::codec::MessageCodec, Ws>, e: &getty::Error) {
        let _ = self.events.send(format!("error {e}"));
    }
}

/// A WebSocket session with keep-alive whose handler paused reading (offloaded work): the
/// peer answers every ping at once, but a paused session cannot read the pongs. As it is
/// not read-idle while paused, it is not pong-idle either.
#[cfg(feature = "ws")]
#[test]
fn ws_paused_session_dies_of_pong_timeout_though_the_peer_answers() {
    use getty::codec::ws::{Config, Event, Protocol, Role};
    use getty::codec::MessageKind;
    watchdog(LIMIT, || {
        let (tx, events) = mpsc::channel();
        let (htx, handles) = mpsc::channel();
        let server = getty::ws::WsServer::builder()
            .ping_on_cron(true)
            .pong_timeout(Some(Duration::from_millis(300)))
            .session_options(
                getty::SessionOptions::default().cron_period(Some(Duration::from_millis(100))),
            )
            .route("/echo", move |_| {
                Ok((
                    getty::codec::MessageCodec,
                    WsPausing {
                        events: tx.clone(),
                        handles: htx.clone(),
                    },
                ))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("edge-ws-pong", server);
        let mut peer = connect(addr);
        peer.write_all(
            b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            peer.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let mut client = Protocol::new(Role::Client, Config::default(), None);
        let mut m = bytes::BytesMut::from(&b"pause"[..]);
        client.encode_message(MessageKind::Text, &mut m, 0).unwrap();
        peer.write_all(&m).unwrap();
        assert_eq!(events.recv_timeout(STEP).unwrap(), "msg pause");
        let handle = handles.recv_timeout(STEP).unwrap();
        // A responsive peer: answers every ping for 1.5 s.
        peer.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let (mut wire, mut control, mut chunk) =
            (bytes::BytesMut::new(), bytes::BytesMut::new(), [0u8; 4096]);
        let until = std::time::Instant::now() + Duration::from_millis(1500);
        let mut pings = 0;
        while std::time::Instant::now() < until {
            match peer.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => wire.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
            while let Some(ev) = client.decode(&mut wire, &mut control).unwrap() {
                if matches!(ev, Event::Ping(_)) {
                    pings += 1;
                }
            }
            if !control.is_empty() {
                let _ = peer.write_all(&control);
                control.clear();
            }
        }
        eprintln!("pings answered: {pings}");
        let _ = handle.resume_reading();
        if let Ok(ev) = events.recv_timeout(Duration::from_millis(300)) {
            panic!("the paused session ended: {ev}");
        }
        server.stop();
    });
}

/// The first test with the deflate filter instead of TLS.
#[cfg(feature = "deflate")]
#[test]
fn deflate_frames_read_before_a_pause_are_delivered_on_resume() {
    use getty::codec::filter::{DeflateFilter, Filter};
    use getty::codec::Compression;
    watchdog(LIMIT, || {
        let (messages_tx, messages) = mpsc::channel();
        let (handles_tx, handles) = mpsc::channel();
        let server = TcpServer::builder()
            .session_options(getty::SessionOptions::default().compression(Some(Compression::Fast)))
            .bind("127.0.0.1:0", move |_| {
                let handler = Pausing {
                    messages: messages_tx.clone(),
                    handles: handles_tx.clone(),
                };
                Ok((LengthFieldCodec::default(), handler))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("edge-deflate-pausing", server);
        let mut peer = connect(addr);
        let mut filter = DeflateFilter::new(Compression::Fast);
        let mut input = frame(b"pause");
        for i in 0..3 {
            input.extend_from_slice(&frame(format!("held {i}").as_bytes()));
        }
        let mut wire = bytes::BytesMut::new();
        filter.encode(&input, &mut wire).unwrap();
        filter.flush(&mut wire).unwrap();
        peer.write_all(&wire).unwrap();
        assert_eq!(messages.recv_timeout(STEP).unwrap(), b"pause");
        let handle = handles.recv_timeout(STEP).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        handle.resume_reading().unwrap();
        for expected in ["held 0", "held 1", "held 2"] {
            let got = messages
                .recv_timeout(Duration::from_secs(3))
                .unwrap_or_else(|_| panic!("{expected} never delivered after resume"));
            assert_eq!(got, expected.as_bytes());
        }
        server.stop();
    });
}

#[cfg(feature = "tls")]
struct Echo;
#[cfg(feature = "tls")]
impl Handler<LengthFieldCodec> for Echo {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = s.write(msg);
    }
}

/// Reactor CPU while sessions sit held: a plain and a TLS session held by flow control
/// (peer never reads), a handler-paused session whose peer sent its FIN.
#[cfg(feature = "tls")]
#[test]
fn held_sessions_cost_no_cpu() {
    watchdog(LIMIT, || {
        let (chain, key) = certs();
        let config = tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
        let plain = TcpServer::builder()
            .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
            .unwrap();
        let plain_addr = plain.local_addr();
        let server = Running::serve("edge-cpu", plain);
        let tls_server = TcpServer::builder()
            .tls(config)
            .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
            .unwrap();
        let tls_addr = tls_server.local_addr();
        let tls_running = Running::serve("edge-cpu-tls", tls_server);
        // Plain: write until the kernel refuses.
        let mut p = connect(plain_addr);
        p.set_nonblocking(true).unwrap();
        let chunk = frame(&[1u8; 16 * 1024]);
        let (mut stuck, mut offset) = (0, 0);
        while stuck < 50 {
            match p.write(&chunk[offset..]) {
                Ok(n) => {
                    offset = (offset + n) % chunk.len();
                    stuck = 0;
                }
                Err(_) => {
                    stuck += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        // TLS: same.
        let mut t = tls_connect(tls_addr, &chain);
        t.write_all(&frame(b"x")).unwrap();
        t.flush().unwrap();
        assert_eq!(read_frame(&mut t), b"x");
        t.sock.set_nonblocking(true).unwrap();
        let mut stuck = 0;
        while stuck < 50 {
            if t.conn.wants_write() {
                match t.conn.write_tls(&mut t.sock) {
                    Ok(_) => stuck = 0,
                    Err(_) => {
                        stuck += 1;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            } else {
                t.conn.writer().write_all(&chunk).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let c0 = server.run_on(|_| thread_cpu_time());
        let t0 = tls_running.run_on(|_| thread_cpu_time());
        std::thread::sleep(Duration::from_secs(1));
        let c1 = server.run_on(|_| thread_cpu_time());
        let t1 = tls_running.run_on(|_| thread_cpu_time());
        eprintln!(
            "plain reactor cpu over 1 s: {:?}; tls: {:?}",
            c1 - c0,
            t1 - t0
        );
        assert!(c1 - c0 < Duration::from_millis(100));
        assert!(t1 - t0 < Duration::from_millis(100));
        server.stop();
        tls_running.stop();
    });
}

#[cfg(feature = "deflate")]
struct PeakEcho(Arc<std::sync::atomic::AtomicUsize>);
#[cfg(feature = "deflate")]
impl Handler<LengthFieldCodec> for PeakEcho {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = s.write(msg);
        self.0
            .fetch_max(s.queued_bytes(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// How far above the 64 KiB high watermark the queue gets when a deflate peer pipelines
/// highly compressible frames and never reads: flow control is checked every 64 KiB of
/// inflated bytes, so about a step's worth of echoes (it was 1 MiB, a max message's worth).
#[cfg(feature = "deflate")]
#[test]
fn deflate_queue_peak_above_watermark() {
    use getty::codec::filter::{DeflateFilter, Filter};
    use getty::codec::Compression;
    watchdog(LIMIT, || {
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p2 = peak.clone();
        let server = TcpServer::builder()
            .session_options(getty::SessionOptions::default().compression(Some(Compression::Fast)))
            .bind("127.0.0.1:0", move |_| {
                Ok((LengthFieldCodec::default(), PeakEcho(p2.clone())))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("edge-deflate-peak", server);
        let mut peer = connect(addr);
        peer.set_nonblocking(true).unwrap();
        let mut filter = DeflateFilter::new(Compression::Fast);
        let mut wire = bytes::BytesMut::new();
        let payload = vec![0u8; 64 * 1024];
        let started = std::time::Instant::now();
        let mut stuck = 0;
        while stuck < 100 && started.elapsed() < Duration::from_secs(10) {
            if wire.len() < 64 * 1024 {
                for _ in 0..64 {
                    filter.encode(&frame(&payload), &mut wire).unwrap();
                }
                filter.flush(&mut wire).unwrap();
            }
            match peer.write(&wire) {
                Ok(n) => {
                    let _ = wire.split_to(n);
                    stuck = 0;
                }
                Err(_) => {
                    stuck += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "peak queued bytes: {} KiB (high watermark 64 KiB)",
            peak >> 10
        );
        assert!(peak <= 256 * 1024, "the queue peaked at {} KiB", peak >> 10);
        server.stop();
    });
}

#[cfg(feature = "tls")]
struct PauseAtOpen {
    handles: Sender<getty::SessionHandle<LengthFieldCodec>>,
    messages: Sender<Vec<u8>>,
}
#[cfg(feature = "tls")]
impl Handler<LengthFieldCodec> for PauseAtOpen {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        s.pause_reading();
        let _ = self.handles.send(s.handle().unwrap());
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = self.messages.send(msg.to_vec());
        let _ = s.write(msg);
    }
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, e: &getty::Error) {
        let _ = self.messages.send(format!("error {e}").into_bytes());
    }
}

/// Paused in on_open (plain and TLS); a handle resumes 300 ms later. Data sent while
/// paused (and, for TLS, the whole handshake) must then go through.
#[cfg(feature = "tls")]
#[test]
fn pause_in_on_open_then_resume_by_handle() {
    watchdog(LIMIT, || {
        let (chain, key) = certs();
        for use_tls in [false, true] {
            let (htx, handles) = mpsc::channel();
            let (mtx, messages) = mpsc::channel();
            let mut b = TcpServer::builder();
            if use_tls {
                b = b.tls(tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap());
            }
            let server = b
                .bind("127.0.0.1:0", move |_| {
                    Ok((
                        LengthFieldCodec::default(),
                        PauseAtOpen {
                            handles: htx.clone(),
                            messages: mtx.clone(),
                        },
                    ))
                })
                .unwrap();
            let addr = server.local_addr();
            let server = Running::serve("edge-open-pause", server);
            let chain2 = chain.clone();
            let client = std::thread::spawn(move || {
                if use_tls {
                    let mut t = tls_connect(addr, &chain2);
                    t.write_all(&frame(b"hello")).unwrap();
                    t.flush().unwrap();
                    read_frame(&mut t)
                } else {
                    let mut p = connect(addr);
                    p.write_all(&frame(b"hello")).unwrap();
                    read_frame(&mut p)
                }
            });
            let handle = handles.recv_timeout(STEP).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            assert!(messages.try_recv().is_err(), "delivered while paused");
            handle.resume_reading().unwrap();
            assert_eq!(
                messages.recv_timeout(Duration::from_secs(5)).unwrap(),
                b"hello"
            );
            assert_eq!(client.join().unwrap(), b"hello", "tls={use_tls}");
            server.stop();
        }
    });
}

#[cfg(feature = "tls")]
struct Farewell(Sender<(String, bool)>);
#[cfg(feature = "tls")]
impl Handler<LengthFieldCodec> for Farewell {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = s.write(msg);
    }
    fn on_error(&mut self, s: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        let accepted = s.write(Bytes::from_static(b"goodbye")).is_ok();
        let _ = self.0.send((error.to_string(), accepted));
    }
}

/// A TLS session whose peer stalls in the handshake hits the read-idle timeout: a goodbye
/// written in on_error can never be sent (no keys yet), so the write is refused, and the
/// close ends at once with a FIN (it used to wait for the handshake timeout, then reset).
#[cfg(feature = "tls")]
#[test]
fn tls_idle_during_handshake_accepts_goodbye_then_resets() {
    watchdog(LIMIT, || {
        let (chain, key) = certs();
        let config = tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
        let (tx, errors) = mpsc::channel();
        let options = getty::SessionOptions::default()
            .read_idle_timeout(Some(Duration::from_millis(200)))
            .handshake_timeout(Duration::from_secs(3));
        let server = TcpServer::builder()
            .tls(config)
            .session_options(options)
            .bind("127.0.0.1:0", move |_| {
                Ok((LengthFieldCodec::default(), Farewell(tx.clone())))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("edge-tls-idle", server);
        let mut peer = connect(addr); // never sends a ClientHello
        let started = std::time::Instant::now();
        let (got, ended) = read_to_end(&mut peer);
        let took = started.elapsed();
        let (error, accepted) = errors.recv_timeout(STEP).unwrap();
        eprintln!(
            "error {error}; goodbye accepted: {accepted}; ended {ended:?} after {took:?} with {} bytes",
            got.len()
        );
        assert!(
            !(accepted && ended == Ended::Reset),
            "a goodbye accepted in on_error was dropped by a reset after {took:?}"
        );
        assert_eq!(ended, Ended::Eof, "an idle timeout ends with a FIN");
        server.stop();
    });
}

#[cfg(feature = "ws")]
struct Welcomer;
#[cfg(feature = "ws")]
impl Handler<getty::codec::MessageCodec, Ws> for Welcomer {
    fn on_open(&mut self, s: &mut Session<getty::codec::MessageCodec, Ws>) -> std::io::Result<()> {
        s.write(getty::codec::Message::text("welcome"))
            .map_err(std::io::Error::from)
    }
    fn on_message(
        &mut self,
        _: &mut Session<getty::codec::MessageCodec, Ws>,
        _: getty::codec::Message,
    ) {
    }
}

#[cfg(feature = "ws")]
struct Listener(Sender<String>);
#[cfg(feature = "ws")]
impl Handler<getty::codec::MessageCodec, Ws> for Listener {
    fn on_open(&mut self, _: &mut Session<getty::codec::MessageCodec, Ws>) -> std::io::Result<()> {
        let _ = self.0.send("open".into());
        Ok(())
    }
    fn on_message(
        &mut self,
        _: &mut Session<getty::codec::MessageCodec, Ws>,
        msg: getty::codec::Message,
    ) {
        let _ = self
            .0
            .send(String::from_utf8_lossy(msg.payload()).into_owned());
    }
}

/// A getty WSS server greets in on_open; a getty WSS client sends nothing. The 101 and the
/// greeting often arrive in one read, so the greeting is decrypted into the client's read
/// buffer with the head and must be decoded from there.
#[cfg(all(feature = "tls", feature = "ws"))]
#[test]
fn wss_client_gets_the_greeting_sent_with_the_101() {
    watchdog(LIMIT, || {
        let (chain, key) = certs();
        let mut missed = 0;
        for round in 0..5 {
            let config = tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
            let server = getty::ws::WsServer::builder()
                .tls(config)
                .route("/", |_| Ok((getty::codec::MessageCodec, Welcomer)))
                .bind("127.0.0.1:0")
                .unwrap();
            let addr = server.local_addr();
            let server = Running::serve("edge-wss-greet", server);
            let (tx, got) = mpsc::channel();
            let client = getty::ws::WsClient::builder()
                .tls(tls::client_config(chain.as_bytes()).unwrap())
                .build(&format!("wss://localhost:{}/", addr.port()), move |_| {
                    Ok((getty::codec::MessageCodec, Listener(tx.clone())))
                })
                .unwrap();
            let client = Running::serve("edge-wss-greet-client", client);
            assert_eq!(got.recv_timeout(STEP).unwrap(), "open", "the client opened");
            match got.recv_timeout(Duration::from_secs(3)) {
                Ok(m) => assert_eq!(m, "welcome"),
                Err(_) => {
                    eprintln!("round {round}: greeting never delivered");
                    missed += 1;
                }
            }
            client.stop();
            server.stop();
        }
        assert_eq!(missed, 0, "{missed} of 5 greetings never delivered");
    });
}

/// The same over plain ws://.
#[cfg(feature = "ws")]
#[test]
fn ws_plain_client_gets_the_greeting_control() {
    watchdog(LIMIT, || {
        for _ in 0..5 {
            let server = getty::ws::WsServer::builder()
                .route("/", |_| Ok((getty::codec::MessageCodec, Welcomer)))
                .bind("127.0.0.1:0")
                .unwrap();
            let addr = server.local_addr();
            let server = Running::serve("edge-ws-greet", server);
            let (tx, got) = mpsc::channel();
            let client = getty::ws::WsClient::builder()
                .build(&format!("ws://{addr}/"), move |_| {
                    Ok((getty::codec::MessageCodec, Listener(tx.clone())))
                })
                .unwrap();
            let client = Running::serve("edge-ws-greet-client", client);
            assert_eq!(got.recv_timeout(STEP).unwrap(), "open");
            assert_eq!(got.recv_timeout(Duration::from_secs(3)).unwrap(), "welcome");
            client.stop();
            server.stop();
        }
    });
}

#[cfg(feature = "tls")]
struct BannerAndClose;
#[cfg(feature = "tls")]
impl Handler<LengthFieldCodec> for BannerAndClose {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        s.write(Bytes::from_static(b"busy, bye")).unwrap();
        s.close();
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, _: Bytes) {}
}

/// TLS: on_open writes a banner and closes (the "too busy, bye" pattern) before the
/// handshake is done: the closing session reads on until the handshake completes, so the
/// banner goes out, then a FIN.
#[cfg(feature = "tls")]
#[test]
fn tls_banner_and_close_in_on_open() {
    watchdog(LIMIT, || {
        let (chain, key) = certs();
        let config = tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
        let server = TcpServer::builder()
            .tls(config)
            .session_options(
                getty::SessionOptions::default().handshake_timeout(Duration::from_secs(2)),
            )
            .bind("127.0.0.1:0", |_| {
                Ok((LengthFieldCodec::default(), BannerAndClose))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("edge-tls-banner", server);
        let mut t = tls_connect(addr, &chain);
        let started = std::time::Instant::now();
        let mut got = Vec::new();
        let result = t.read_to_end(&mut got);
        eprintln!(
            "after {:?}: {result:?}, {} bytes",
            started.elapsed(),
            got.len()
        );
        assert_eq!(
            got,
            frame(b"busy, bye"),
            "the banner arrives before the close"
        );
        server.stop();
    });
}

/// Plain TCP: paused with frames buffered, the peer FINs while paused; resuming delivers
/// them all and the session closes cleanly.
#[test]
fn plain_eof_while_paused_control() {
    watchdog(LIMIT, || {
        let (messages_tx, messages) = mpsc::channel();
        let (handles_tx, handles) = mpsc::channel();
        let server = TcpServer::builder()
            .bind("127.0.0.1:0", move |_| {
                let handler = Pausing {
                    messages: messages_tx.clone(),
                    handles: handles_tx.clone(),
                };
                Ok((LengthFieldCodec::default(), handler))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("edge-plain-eof", server);
        let mut peer = connect(addr);
        let mut input = frame(b"pause");
        for i in 0..3 {
            input.extend_from_slice(&frame(format!("held {i}").as_bytes()));
        }
        peer.write_all(&input).unwrap();
        assert_eq!(messages.recv_timeout(STEP).unwrap(), b"pause");
        let handle = handles.recv_timeout(STEP).unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        handle.resume_reading().unwrap();
        for expected in ["held 0", "held 1", "held 2"] {
            assert_eq!(messages.recv_timeout(STEP).unwrap(), expected.as_bytes());
        }
        let (got, ended) = read_to_end(&mut peer);
        assert_eq!(ended, Ended::Eof);
        assert_eq!(got.len(), 4 * 4 + 5 + 3 * 6);
        server.stop();
    });
}

/// `pause_reading` stops delivery (even of frames already read) until a cross-thread
/// `resume_reading`; the paused session is not read-idle meanwhile.
#[test]
fn the_handler_pauses_and_a_handle_resumes_reading() {
    watchdog(LIMIT, || {
        let _gate = shared_gate();
        let (messages_tx, messages) = mpsc::channel();
        let (handles_tx, handles) = mpsc::channel();
        let idle = Duration::from_millis(300);
        let server = TcpServer::builder()
            .session_options(SessionOptions::default().read_idle_timeout(Some(idle)))
            .bind("127.0.0.1:0", move |_| {
                let handler = Pausing {
                    messages: messages_tx.clone(),
                    handles: handles_tx.clone(),
                };
                Ok((LengthFieldCodec::default(), handler))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("pausing-server", server);
        let mut peer = connect(addr);
        // "pause" and three more frames in one write: the three are read with it.
        let mut input = frame(b"pause");
        for i in 0..3 {
            input.extend_from_slice(&frame(format!("held {i}").as_bytes()));
        }
        peer.write_all(&input).unwrap();
        assert_eq!(messages.recv_timeout(STEP).unwrap(), b"pause");
        assert_eq!(read_frame(&mut peer), b"pause");
        let handle = handles.recv_timeout(STEP).unwrap();
        peer.write_all(&frame(b"later")).unwrap();
        // Paused for three idle timeouts: nothing delivered, and no read-idle error.
        if let Ok(early) = messages.recv_timeout(idle * 3) {
            panic!(
                "delivered while paused: {}",
                String::from_utf8_lossy(&early)
            );
        }
        handle.resume_reading().unwrap();
        for expected in ["held 0", "held 1", "held 2", "later"] {
            assert_eq!(messages.recv_timeout(STEP).unwrap(), expected.as_bytes());
            assert_eq!(read_frame(&mut peer), expected.as_bytes());
        }
        server.stop();
    });
}

/// A handler that pauses in on_open (waiting for offloaded work) still lets the TLS
/// handshake complete: only delivery waits for the resume.
#[cfg(feature = "tls")]
#[test]
fn tls_handshake_completes_while_the_handler_paused() {
    watchdog(LIMIT, || {
        let (chain, key) = certs();
        let (htx, handles) = mpsc::channel();
        let (mtx, messages) = mpsc::channel();
        let server = TcpServer::builder()
            .tls(tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
            .session_options(
                getty::SessionOptions::default().handshake_timeout(Duration::from_secs(2)),
            )
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    LengthFieldCodec::default(),
                    PauseAtOpen {
                        handles: htx.clone(),
                        messages: mtx.clone(),
                    },
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("pause-tls-pause", server);
        let config: Arc<rustls::ClientConfig> = tls::client_config(chain.as_bytes()).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut sock: TcpStream = connect(addr);
        sock.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
        let handle = handles.recv_timeout(STEP).unwrap();
        // The handshake, while the server's handler holds its pause (never resumed here
        // until the handshake is done or has failed).
        let mut outcome = Ok(());
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                outcome = Err(e);
                break;
            }
        }
        let seen: Vec<String> = messages
            .try_iter()
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .collect();
        let _ = handle.resume_reading();
        eprintln!("handshake outcome while paused: {outcome:?}; server events: {seen:?}");
        assert!(
            outcome.is_ok(),
            "the TLS handshake did not complete while the handler paused: {outcome:?}, server: {seen:?}"
        );
        server.stop();
    });
}

struct PauseOnGo {
    handles: Sender<getty::SessionHandle<LengthFieldCodec>>,
    messages: Sender<Vec<u8>>,
}
impl Handler<LengthFieldCodec> for PauseOnGo {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        if &msg[..] == b"go" {
            s.pause_reading();
            let _ = self.handles.send(s.handle().unwrap());
        } else {
            let _ = self.messages.send(msg.to_vec());
            let _ = s.write(msg);
        }
    }
}

/// The pattern of `Session::pause_reading`'s own doc example: pause in on_message, write
/// the results from another thread through the handle, then `let _ =
/// handle.resume_reading()`. With the reactor behind the writer (4,096 writes in flight),
/// the resume must still arrive: refused, it would leave the session paused for ever (a
/// paused session is not read-idle, so nothing would end it).
#[test]
fn resume_after_a_burst_of_handle_writes_is_not_lost() {
    watchdog(LIMIT, || {
        let (htx, handles) = mpsc::channel();
        let (mtx, messages) = mpsc::channel();
        let server = TcpServer::builder()
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    LengthFieldCodec::default(),
                    PauseOnGo {
                        handles: htx.clone(),
                        messages: mtx.clone(),
                    },
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("pause-resume", server);
        let mut peer = connect(addr);
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::io::Write::write_all(&mut peer, &frame(b"go")).unwrap();
        let handle = handles.recv_timeout(STEP).unwrap();
        // The reactor is busy for a moment (other sessions' work), as the worker finishes.
        server
            .handle()
            .execute(|_| std::thread::sleep(Duration::from_millis(500)))
            .unwrap();
        let mut written = 0;
        for _ in 0..4096 {
            if handle.write(Bytes::from_static(b"w")).is_ok() {
                written += 1;
            }
        }
        let resumed = handle.resume_reading(); // the doc example ignores this result
        eprintln!("{written} writes posted; resume_reading: {resumed:?}");
        for _ in 0..written {
            assert_eq!(read_frame(&mut peer), b"w");
        }
        std::io::Write::write_all(&mut peer, &frame(b"next")).unwrap();
        let mut header = [0u8; 4];
        let got = std::io::Read::read_exact(&mut peer, &mut header);
        assert!(
            got.is_ok(),
            "the session stayed paused after the worker's resume ({resumed:?}): {got:?}; \
             server events: {:?}",
            messages.try_iter().collect::<Vec<_>>()
        );
        server.stop();
    });
}
