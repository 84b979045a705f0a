//! Hostile peers and handlers of the session lifecycle on TCP and TLS: how a session ends
//! when the peer's end of input (TLS `close_notify`, a FIN) comes while delivery is held
//! back, or before the TLS handshake is done; callbacks that close, panic or make handles
//! as the session ends; a group member closing with a backlog; and handle writes that
//! heed backpressure while the reactor falls behind.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use getty::codec::filter::{Filter, TlsFilter};
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{tls, Handler, Session, SessionOptions};

const LIMIT: Duration = Duration::from_secs(90);

/// The size of the reply to every request in the pipelining tests: two of them take the
/// queue past the default 64 KiB high watermark.
const REPLY: usize = 48 * 1024;

/// What a handler saw, as text: `msg <payload>`, `error <error>`, `close`.
fn report(tx: &Sender<String>, what: String) {
    let _ = tx.send(what);
}

/// Answers every request with a `REPLY`-byte payload that starts with the request.
struct BigReplies(Sender<String>);

impl Handler<LengthFieldCodec> for BigReplies {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        report(&self.0, format!("msg {}", String::from_utf8_lossy(&msg)));
        let mut reply = vec![b'.'; REPLY];
        reply[..msg.len()].copy_from_slice(&msg);
        s.write(Bytes::from(reply)).unwrap();
    }
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        report(&self.0, format!("error {error}"));
    }
    fn on_close(&mut self, _: &mut Session<LengthFieldCodec>) {
        report(&self.0, "close".into());
    }
}

/// Echoes, pauses reading on "pause" and hands out a handle to resume it.
struct Pausing {
    events: Sender<String>,
    handles: Sender<getty::SessionHandle<LengthFieldCodec>>,
}

impl Handler<LengthFieldCodec> for Pausing {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        report(
            &self.events,
            format!("msg {}", String::from_utf8_lossy(&msg)),
        );
        s.write(msg.clone()).unwrap();
        if &msg[..] == b"pause" {
            s.pause_reading();
            let _ = self.handles.send(s.handle().unwrap());
        }
    }
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        report(&self.events, format!("error {error}"));
    }
    fn on_close(&mut self, _: &mut Session<LengthFieldCodec>) {
        report(&self.events, "close".into());
    }
}

/// Writes a banner in `on_open` (queued until the TLS handshake is done).
struct Banner(Sender<String>);

impl Handler<LengthFieldCodec> for Banner {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        report(&self.0, "open".into());
        s.write(Bytes::from_static(b"hello")).unwrap();
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, msg: Bytes) {
        report(&self.0, format!("msg {}", String::from_utf8_lossy(&msg)));
    }
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        report(&self.0, format!("error {error}"));
    }
    fn on_close(&mut self, _: &mut Session<LengthFieldCodec>) {
        report(&self.0, "close".into());
    }
}

struct Certs {
    chain: String,
    key: String,
}

fn certs() -> Certs {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Certs {
        chain: made.cert.pem(),
        key: made.signing_key.serialize_pem(),
    }
}

impl Certs {
    fn server_config(&self) -> std::sync::Arc<getty::codec::rustls::ServerConfig> {
        tls::server_config(self.chain.as_bytes(), self.key.as_bytes()).unwrap()
    }

    fn client(&self) -> TlsFilter {
        let config = tls::client_config(self.chain.as_bytes()).unwrap();
        TlsFilter::client(config, "localhost").unwrap()
    }
}

/// Waits for the next event of a session, at most `STEP`.
fn next(events: &Receiver<String>, waiting_for: &str) -> String {
    events
        .recv_timeout(STEP)
        .unwrap_or_else(|_| panic!("no event within {STEP:?} while waiting for {waiting_for}"))
}

/// The events that come until `close` (included), at most `STEP` apart.
fn events_until_close(events: &Receiver<String>, seen: &mut Vec<String>) {
    while !seen.iter().any(|e| e == "close") {
        match events.recv_timeout(STEP) {
            Ok(e) => seen.push(e),
            Err(_) => panic!("no on_close within {STEP:?}; events so far: {seen:?}"),
        }
    }
}

/// The length-prefixed frames of `payloads`, one after the other.
fn frames(payloads: &[&str]) -> Vec<u8> {
    payloads.iter().flat_map(|p| frame(p.as_bytes())).collect()
}

/// Sends `plain` and then `close_notify`, all in one write on the socket, so that the
/// server reads the requests and the end of the stream together.
fn send_then_close_notify(peer: &mut TcpStream, client: &mut TlsFilter, plain: &[u8]) {
    let mut wire = BytesMut::new();
    client.encode(plain, &mut wire).unwrap();
    client.close(&mut wire);
    peer.write_all(&wire).unwrap();
}

/// A TLS peer pipelines requests whose replies take the queue past the high watermark,
/// then ends its stream with `close_notify`, all in one write. Flow control holds the
/// later requests back until the queue drains; they are whole, and the peer closed
/// cleanly, so each must still be answered (as over plain TCP, see the next test), with
/// no `on_error`. They used to be reported as a truncated frame
/// (`UnexpectedEof { buffered }`) and never answered.
#[test]
fn tls_close_notify_behind_requests_held_by_flow_control_still_answers_them() {
    watchdog(LIMIT, || {
        let certs = certs();
        let (tx, events) = mpsc::channel();
        let server = TcpServer::builder()
            .tls(certs.server_config())
            .bind("127.0.0.1:0", move |_| {
                Ok((LengthFieldCodec::default(), BigReplies(tx.clone())))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-tls-held-close-notify", server);
        let mut client = certs.client();
        let mut peer = connect(addr);
        tls_exchange(&mut peer, &mut client, &[], 0);
        let requests = ["r0", "r1", "r2", "r3", "r4", "r5"];
        send_then_close_notify(&mut peer, &mut client, &frames(&requests));

        let (plain, close_notify) = tls_read_to_end(&mut peer, &mut client);
        let mut seen = Vec::new();
        events_until_close(&events, &mut seen);
        let expected: Vec<String> = requests
            .iter()
            .map(|r| format!("msg {r}"))
            .chain(["close".to_string()])
            .collect();
        assert_eq!(seen, expected, "every request answered, then a clean close");
        assert_eq!(
            plain.len(),
            requests.len() * (4 + REPLY),
            "every reply whole"
        );
        assert!(close_notify, "the server answers close_notify with its own");
        server.stop();
    });
}

/// The same pipeline over plain TCP, ended by a FIN: every request is answered. (A
/// control for the test above: it passes.)
#[test]
fn tcp_fin_behind_requests_held_by_flow_control_still_answers_them() {
    watchdog(LIMIT, || {
        let (tx, events) = mpsc::channel();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), BigReplies(tx.clone())))
        })
        .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-tcp-held-fin", server);
        let mut peer = connect(addr);
        let requests = ["r0", "r1", "r2", "r3", "r4", "r5"];
        peer.write_all(&frames(&requests)).unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let (got, ended) = read_to_end(&mut peer);
        let mut seen = Vec::new();
        events_until_close(&events, &mut seen);
        let expected: Vec<String> = requests
            .iter()
            .map(|r| format!("msg {r}"))
            .chain(["close".to_string()])
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(got.len(), requests.len() * (4 + REPLY));
        assert_eq!(ended, Ended::Eof);
        server.stop();
    });
}

/// The handler pauses on the first of four requests that came in one read together with
/// the peer's `close_notify`; a handle resumes. The three whole requests read before the
/// pause must be delivered on resume and the session end cleanly. (With the close_notify
/// in a later read this works: `tls_eof_after_a_pause_drops_complete_frames`.)
#[test]
fn tls_close_notify_read_with_requests_before_a_pause_still_delivers_them() {
    watchdog(LIMIT, || {
        let certs = certs();
        let (tx, events) = mpsc::channel();
        let (handles_tx, handles) = mpsc::channel();
        let server = TcpServer::builder()
            .tls(certs.server_config())
            .bind("127.0.0.1:0", move |_| {
                let handler = Pausing {
                    events: tx.clone(),
                    handles: handles_tx.clone(),
                };
                Ok((LengthFieldCodec::default(), handler))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-tls-paused-close-notify", server);
        let mut client = certs.client();
        let mut peer = connect(addr);
        tls_exchange(&mut peer, &mut client, &[], 0);
        let requests = ["pause", "held 0", "held 1", "held 2"];
        send_then_close_notify(&mut peer, &mut client, &frames(&requests));

        assert_eq!(next(&events, "the first request"), "msg pause");
        let handle = handles.recv_timeout(STEP).expect("a handle");
        std::thread::sleep(Duration::from_millis(200));
        // Refused only if the session has already ended.
        let resumed = handle.resume_reading();
        let mut seen = vec!["msg pause".to_string()];
        events_until_close(&events, &mut seen);
        let expected: Vec<String> = requests
            .iter()
            .map(|r| format!("msg {r}"))
            .chain(["close".to_string()])
            .collect();
        assert_eq!(seen, expected, "resume: {resumed:?}");
        let (plain, close_notify) = tls_read_to_end(&mut peer, &mut client);
        assert_eq!(&plain[..], &frames(&requests)[..], "every echo");
        assert!(close_notify);
        server.stop();
    });
}

/// A TLS session that wrote a banner in `on_open` (it waits for the handshake) sees its
/// peer close before sending a ClientHello. Nothing more can happen on that connection:
/// the session must end then (the peer's end before the handshake is an error the handler
/// hears, as it is for a session closing during its handshake), not sit out its
/// handshake timeout (here a minute) with the socket and the banner held.
#[test]
fn tls_peer_fin_before_the_handshake_ends_a_session_with_queued_output_at_once() {
    watchdog(LIMIT, || {
        let certs = certs();
        let (tx, events) = mpsc::channel();
        let options = SessionOptions::default()
            .handshake_timeout(Duration::from_secs(60))
            .write_stall_timeout(Duration::from_secs(60));
        let server = TcpServer::builder()
            .tls(certs.server_config())
            .session_options(options)
            .bind("127.0.0.1:0", move |_| {
                Ok((LengthFieldCodec::default(), Banner(tx.clone())))
            })
            .unwrap();
        let addr: SocketAddr = server.local_addr();
        let server = Running::serve("review-tls-fin-in-handshake", server);
        let mut peer = connect(addr);
        assert_eq!(next(&events, "on_open"), "open");
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let mut seen = vec!["open".to_string()];
        events_until_close(&events, &mut seen);
        assert_eq!(seen.len(), 3, "open, error, close: {seen:?}");
        assert!(seen[1].starts_with("error "), "{seen:?}");
        let _ = read_to_end(&mut peer);
        server.stop();
    });
}

/// Acts on the requests it gets and reports every callback, and what its writes return:
/// "close" closes, then writes; "big" queues 3 MiB; "cron" starts a 20 ms cron whose
/// first tick writes "tick" and closes. Every other request is echoed. `on_close` writes
/// too, and reports what that returned.
struct Scripted(Sender<String>);

impl Scripted {
    fn write(&self, s: &mut Session<LengthFieldCodec>, what: &str, msg: Bytes) {
        let result = s.write(msg);
        report(&self.0, format!("{what} {}", result.is_ok()));
    }
}

impl Handler<LengthFieldCodec> for Scripted {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        report(&self.0, format!("msg {}", String::from_utf8_lossy(&msg)));
        match &msg[..] {
            b"close" => {
                s.close();
                self.write(s, "write-after-close", msg);
            }
            b"big" => self.write(s, "big", Bytes::from(vec![7u8; 3 << 20])),
            b"cron" => s.set_cron_period(Some(Duration::from_millis(20))),
            _ => self.write(s, "echo", msg),
        }
    }
    fn on_cron(&mut self, s: &mut Session<LengthFieldCodec>) {
        report(&self.0, "cron".into());
        self.write(s, "tick", Bytes::from_static(b"tick"));
        s.close();
    }
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        report(&self.0, format!("error {error}"));
    }
    fn on_close(&mut self, s: &mut Session<LengthFieldCodec>) {
        report(&self.0, "close".into());
        self.write(s, "write-in-close", Bytes::from_static(b"late"));
    }
}

fn scripted_server(name: &str, options: SessionOptions) -> (Running, SocketAddr, Receiver<String>) {
    let (tx, events) = mpsc::channel();
    let server = TcpServer::builder()
        .session_options(options)
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), Scripted(tx.clone())))
        })
        .unwrap();
    let addr = server.local_addr();
    (Running::serve(name, server), addr, events)
}

/// The events until `close`, then whatever follows within a short while (which must be
/// only what on_close itself reports).
fn events_through_close(events: &Receiver<String>) -> Vec<String> {
    let mut seen = Vec::new();
    events_until_close(events, &mut seen);
    while let Ok(e) = events.recv_timeout(Duration::from_millis(300)) {
        seen.push(e);
    }
    seen
}

/// `close()` in `on_message` with more requests read in the same batch: nothing is
/// delivered after it, a write after it and one in `on_close` are refused, what was
/// queued before it goes out, then a FIN.
#[test]
fn close_in_on_message_stops_delivery_and_refuses_later_writes() {
    watchdog(LIMIT, || {
        let (server, addr, events) =
            scripted_server("review-close-in-msg", SessionOptions::default());
        let mut peer = connect(addr);
        peer.write_all(&frames(&["a", "close", "b", "c"])).unwrap();
        let (got, ended) = read_to_end(&mut peer);
        let seen = events_through_close(&events);
        assert_eq!(
            seen,
            [
                "msg a",
                "echo true",
                "msg close",
                "write-after-close false",
                "close",
                "write-in-close false"
            ]
        );
        assert_eq!(got, frame(b"a"));
        assert_eq!(ended, Ended::Eof);
        server.stop();
    });
}

/// `close()` in `on_cron`: one tick, its write goes out, then FIN; no tick after it,
/// though the peer keeps the connection open through the linger.
#[test]
fn close_in_on_cron_ticks_once() {
    watchdog(LIMIT, || {
        let (server, addr, events) =
            scripted_server("review-close-in-cron", SessionOptions::default());
        let mut peer = connect(addr);
        peer.write_all(&frame(b"cron")).unwrap();
        let mut buf = [0u8; 8];
        std::io::Read::read_exact(&mut peer, &mut buf).unwrap();
        assert_eq!(&buf[..], &frame(b"tick")[..]);
        assert_eq!(std::io::Read::read(&mut peer, &mut buf).unwrap(), 0, "FIN");
        std::thread::sleep(Duration::from_millis(200)); // ten cron periods, lingering
        let seen = events_through_close(&events);
        assert_eq!(
            seen,
            [
                "msg cron",
                "cron",
                "tick true",
                "close",
                "write-in-close false"
            ]
        );
        drop(peer);
        server.stop();
    });
}

/// `close()` with 3 MiB queued and a peer that reads slowly: every byte goes out, then
/// the FIN, and no error.
#[test]
fn close_with_a_large_backlog_and_a_slow_reader_sends_it_all_then_fin() {
    watchdog(LIMIT, || {
        let (server, addr, events) =
            scripted_server("review-close-backlog", SessionOptions::default());
        let mut peer = connect_with_recv_buffer(addr, 16 * 1024);
        peer.set_read_timeout(Some(STEP)).unwrap();
        peer.write_all(&frames(&["big", "close"])).unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        let mut reads = 0;
        loop {
            match std::io::Read::read(&mut peer, &mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => panic!("after {got} bytes: {e}"),
            }
            reads += 1;
            if reads % 16 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(reads < 1_000_000, "bounded");
        }
        assert_eq!(got, 4 + (3 << 20));
        let seen = events_through_close(&events);
        assert_eq!(
            seen,
            [
                "msg big",
                "big true",
                "msg close",
                "write-after-close false",
                "close",
                "write-in-close false"
            ]
        );
        server.stop();
    });
}

/// The peer resets while 3 MiB are queued for it: `on_error` then `on_close`, once each,
/// and nothing after.
#[test]
fn a_peer_reset_mid_write_is_heard_once() {
    watchdog(LIMIT, || {
        let (server, addr, events) =
            scripted_server("review-rst-mid-write", SessionOptions::default());
        let mut peer = connect_with_recv_buffer(addr, 16 * 1024);
        peer.write_all(&frame(b"big")).unwrap();
        let mut buf = vec![0u8; 4096];
        std::io::Read::read_exact(&mut peer, &mut buf).unwrap();
        set_linger_zero(&peer);
        drop(peer);
        let seen = events_through_close(&events);
        assert_eq!(seen.len(), 5, "{seen:?}");
        assert_eq!(&seen[..2], ["msg big", "big true"]);
        assert!(seen[2].starts_with("error "), "{seen:?}");
        assert_eq!(&seen[3..], ["close", "write-in-close false"]);
        server.stop();
    });
}

/// Writes from another thread through a handle race the session's close (the peer asks
/// for it): what arrives is the writer's frames in order with no gap, and once a write
/// is refused, every later one is too.
#[test]
fn handle_writes_racing_the_close_arrive_in_order_without_gaps() {
    watchdog(LIMIT, || {
        struct Publish {
            handles: Sender<getty::SessionHandle<LengthFieldCodec>>,
        }
        impl Handler<LengthFieldCodec> for Publish {
            fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
                let _ = self.handles.send(s.handle().unwrap());
                Ok(())
            }
            fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, _: Bytes) {
                s.close();
            }
        }
        let (handles_tx, handles) = mpsc::channel();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            let handler = Publish {
                handles: handles_tx.clone(),
            };
            Ok((LengthFieldCodec::default(), handler))
        })
        .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-handle-race", server);
        let mut peer = connect(addr);
        let handle = handles.recv_timeout(STEP).unwrap();
        let writer = std::thread::spawn(move || {
            let mut refused_at = None;
            let give_up = std::time::Instant::now() + STEP;
            for i in 0u32..200_000 {
                let payload = Bytes::from(i.to_be_bytes().to_vec());
                let mut result = handle.write(payload.clone());
                // Backpressure is not a refusal: wait (bounded) and try again.
                while matches!(result, Err(getty::Error::Backpressure))
                    && std::time::Instant::now() < give_up
                {
                    let _ = handle.wait_writable(Duration::from_millis(10));
                    std::thread::sleep(Duration::from_micros(100));
                    result = handle.write(payload.clone());
                }
                match (result, refused_at) {
                    (Ok(()), Some(at)) => {
                        panic!("write {i} accepted after write {at} was refused")
                    }
                    (Ok(()), None) => {}
                    (Err(getty::Error::Closed), None) => refused_at = Some(i),
                    (Err(getty::Error::Closed), Some(_)) => {}
                    (Err(e), _) => panic!("write {i}: {e}"),
                }
                if refused_at.is_some_and(|at| i > at + 1000) {
                    break;
                }
            }
            refused_at
        });
        // Let some frames through, then ask the server to close.
        for expected in 0u32..100 {
            assert_eq!(read_frame(&mut peer), expected.to_be_bytes());
        }
        peer.write_all(&frame(b"close")).unwrap();
        let (rest, ended) = read_to_end(&mut peer);
        assert_eq!(ended, Ended::Eof);
        assert_eq!(rest.len() % 8, 0, "whole frames only");
        for (expected, chunk) in (100u32..).zip(rest.chunks(8)) {
            assert_eq!(&chunk[..4], &4u32.to_be_bytes());
            let n = u32::from_be_bytes(chunk[4..].try_into().unwrap());
            assert_eq!(n, expected, "a gap or reordering");
        }
        let refused_at = writer.join().unwrap();
        assert!(
            refused_at.is_some(),
            "the close was never seen by the writer"
        );
        server.stop();
    });
}

/// A handle refuses writes with `Backpressure` once 4096 are in flight (the reactor is
/// behind), though the session is writable. The documented answer is to wait with
/// `wait_writable`: it must not return `Ok` while a write would still be refused, or a
/// writer that follows the documentation spins on the CPU for as long as the reactor is
/// behind. Once the reactor catches up, it returns `Ok` and writes are taken again.
#[test]
fn wait_writable_waits_while_too_many_writes_are_in_flight() {
    watchdog(LIMIT, || {
        struct Publish(Sender<getty::SessionHandle<LengthFieldCodec>>);
        impl Handler<LengthFieldCodec> for Publish {
            fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
                let _ = self.0.send(s.handle().unwrap());
                Ok(())
            }
            fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, _: Bytes) {}
        }
        let (handles_tx, handles) = mpsc::channel();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), Publish(handles_tx.clone())))
        })
        .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-in-flight", server);
        let mut peer = connect(addr);
        let handle = handles.recv_timeout(STEP).unwrap();

        // Hold the reactor thread, so that nothing posted is applied.
        let (release_tx, release) = mpsc::channel::<()>();
        let (held_tx, held) = mpsc::channel();
        server
            .handle()
            .execute(move |_| {
                let _ = held_tx.send(());
                let _ = release.recv_timeout(STEP);
            })
            .unwrap();
        held.recv_timeout(STEP).unwrap();

        let mut accepted = 0u32;
        let refused = loop {
            match handle.write(Bytes::from_static(b"x")) {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
            assert!(accepted <= 100_000, "never refused");
        };
        assert!(
            matches!(refused, getty::Error::Backpressure),
            "after {accepted}: {refused}"
        );
        assert!(handle.is_writable(), "the watermarks were not reached");
        let waited = handle.wait_writable(Duration::from_millis(300));
        let next = handle.write(Bytes::from_static(b"x"));
        release_tx.send(()).unwrap();
        assert!(
            !(waited.is_ok() && matches!(next, Err(getty::Error::Backpressure))),
            "wait_writable returned Ok, yet the next write was refused for backpressure"
        );
        // Once the reactor has caught up, waiting ends and writes are taken.
        handle
            .wait_writable(STEP)
            .expect("writable once the reactor caught up");
        handle.write(Bytes::from_static(b"y")).unwrap();
        let mut got = 0;
        while got < accepted as usize {
            assert_eq!(read_frame(&mut peer), b"x");
            got += 1;
        }
        server.stop();
    });
}

/// A handle made in `on_close` (to hand the session's end to another thread, say) is a
/// handle to a session that has ended: it must say so, and refuse writes with `Closed`,
/// rather than accept them for good and drop them unseen.
#[test]
fn a_handle_made_in_on_close_is_closed() {
    watchdog(LIMIT, || {
        struct HandleAtClose(Sender<getty::SessionHandle<LengthFieldCodec>>);
        impl Handler<LengthFieldCodec> for HandleAtClose {
            fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, _: Bytes) {}
            fn on_close(&mut self, s: &mut Session<LengthFieldCodec>) {
                let _ = self.0.send(s.handle().expect("in a callback"));
            }
        }
        let (handles_tx, handles) = mpsc::channel();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((
                LengthFieldCodec::default(),
                HandleAtClose(handles_tx.clone()),
            ))
        })
        .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-handle-at-close", server);
        let peer = connect(addr);
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        let handle = handles.recv_timeout(STEP).expect("on_close ran");
        // The reactor is done with the session once it has run a job posted after it.
        server.run_on(|_| ());
        assert!(handle.is_closed(), "the session has ended");
        assert!(
            matches!(
                handle.write(Bytes::from_static(b"late")),
                Err(getty::Error::Closed)
            ),
            "a write to an ended session must be refused"
        );
        server.stop();
    });
}

/// A group member that closes itself with a backlog its peer is slow to read stays in its
/// groups until it ends: the broadcasts made meanwhile pile up in its inbox (it takes no
/// more once closing), and past the group's bound the `Close` policy fails it with
/// `SlowConsumer`. Its handler, which closed it gracefully, then hears `on_error`, which
/// the contract rules out for a local close, for broadcasts that could never have gone
/// out anyway.
#[test]
fn a_member_closing_with_a_backlog_is_not_failed_as_a_slow_consumer() {
    watchdog(LIMIT, || {
        struct Member {
            group: getty::SessionGroup<LengthFieldCodec>,
            tx: Sender<(u64, String)>,
        }
        impl Member {
            fn report(&self, s: &Session<LengthFieldCodec>, what: String) {
                let _ = self.tx.send((s.id(), what));
            }
        }
        impl Handler<LengthFieldCodec> for Member {
            fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
                self.group.join(s).map_err(std::io::Error::other)?;
                self.report(s, "open".into());
                Ok(())
            }
            fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
                self.report(s, format!("msg {}", String::from_utf8_lossy(&msg)));
                if &msg[..] == b"bye" {
                    // A small send buffer, so that the backlog stays in the session.
                    s.socket().set_send_buffer_size(16 * 1024).unwrap();
                    s.write(Bytes::from(vec![7u8; 3 << 20])).unwrap();
                    s.close();
                } else {
                    let reached = self
                        .group
                        .broadcast_except(Bytes::from(vec![1u8; 300]), s.id());
                    self.report(s, format!("reached {reached:?}"));
                }
            }
            fn on_error(&mut self, s: &mut Session<LengthFieldCodec>, error: &getty::Error) {
                self.report(s, format!("error {error}"));
            }
            fn on_close(&mut self, s: &mut Session<LengthFieldCodec>) {
                self.report(s, "close".into());
            }
        }
        let group = getty::SessionGroup::builder(LengthFieldCodec::default())
            .max_pending(1024)
            .build();
        let (tx, events) = mpsc::channel::<(u64, String)>();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            let member = Member {
                group: group.clone(),
                tx: tx.clone(),
            };
            Ok((LengthFieldCodec::default(), member))
        })
        .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-closing-member", server);
        let mut a = connect_with_recv_buffer(addr, 16 * 1024);
        a.set_read_timeout(Some(STEP)).unwrap();
        let (a_id, opened) = events.recv_timeout(STEP).unwrap();
        assert_eq!(opened, "open");
        let mut b = connect(addr);
        let (b_id, opened) = events.recv_timeout(STEP).unwrap();
        assert_eq!(opened, "open");
        a.write_all(&frame(b"bye")).unwrap();
        assert_eq!(events.recv_timeout(STEP).unwrap(), (a_id, "msg bye".into()));
        // One broadcast per read, so that an open member would take each in turn.
        for _ in 0..5 {
            b.write_all(&frame(b"news")).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        let (got, ended) = read_to_end(&mut a);
        assert_eq!(ended, Ended::Eof);
        let mut of_a = vec!["msg bye".to_string()];
        let mut of_b = Vec::new();
        while !of_a.iter().any(|e| e == "close") {
            let (sid, what) = events
                .recv_timeout(STEP)
                .unwrap_or_else(|_| panic!("no on_close of A: {of_a:?}"));
            if sid == a_id {
                of_a.push(what);
            } else if sid == b_id {
                of_b.push(what);
            }
        }
        while let Ok((sid, what)) = events.recv_timeout(Duration::from_millis(300)) {
            if sid == b_id {
                of_b.push(what);
            }
        }
        eprintln!("A: {of_a:?}; B: {of_b:?}");
        assert_eq!(got.len(), 4 + (3 << 20), "A's backlog, whole");
        assert_eq!(of_a, ["msg bye", "close"], "A closed itself: no on_error");
        let reached: Vec<&String> = of_b.iter().filter(|e| e.starts_with("reached")).collect();
        assert!(
            reached.iter().all(|r| *r == "reached Ok(0)"),
            "broadcasts counted as taken by a member that could no longer send them: {of_b:?}"
        );
        drop(b);
        server.stop();
    });
}

/// A handler whose `on_error` panics (once) has heard `on_error` already: it must not
/// hear it a second time (`Panicked`), for the contract is at most one `on_error`, then
/// `on_close`.
#[test]
fn a_panic_in_on_error_is_not_followed_by_a_second_on_error() {
    watchdog(LIMIT, || {
        struct PanicsInOnError(Sender<String>);
        impl Handler<LengthFieldCodec> for PanicsInOnError {
            fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, _: Bytes) {}
            fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, error: &getty::Error) {
                report(&self.0, format!("error {error}"));
                if matches!(error, getty::Error::ReadIdle(_)) {
                    panic!("a handler bug in on_error");
                }
            }
            fn on_close(&mut self, _: &mut Session<LengthFieldCodec>) {
                report(&self.0, "close".into());
            }
        }
        let (tx, events) = mpsc::channel();
        let options = SessionOptions::default().read_idle_timeout(Some(Duration::from_millis(100)));
        let server = TcpServer::builder()
            .session_options(options)
            .bind("127.0.0.1:0", move |_| {
                Ok((LengthFieldCodec::default(), PanicsInOnError(tx.clone())))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-panic-in-on-error", server);
        let mut peer = connect(addr);
        let _ = read_to_end(&mut peer);
        let seen = events_through_close(&events);
        assert_eq!(seen.len(), 2, "one on_error, then on_close: {seen:?}");
        assert!(!seen[0].contains("panicked"), "{seen:?}");
        assert_eq!(seen[1], "close");
        server.stop();
    });
}

/// Answers "go <n>" with `n` bytes from a small send buffer, then closes.
struct SendAndClose;

impl Handler<LengthFieldCodec> for SendAndClose {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let n: usize = String::from_utf8_lossy(&msg[3..]).parse().unwrap();
        s.socket().set_send_buffer_size(4096).unwrap();
        s.write_bytes(Bytes::from(vec![9u8; n])).unwrap();
        s.close();
    }
}

/// A TLS session closing after a backlog that a slow peer drains: every byte, then the
/// server's close_notify (its goodbye is written when the queue has just drained, into a
/// socket that may be full), then the FIN. Tried with many sizes.
#[test]
fn tls_close_after_a_backlog_always_ends_with_close_notify() {
    watchdog(Duration::from_secs(240), || {
        let certs = certs();
        let server = TcpServer::builder()
            .tls(certs.server_config())
            .bind("127.0.0.1:0", |_| {
                Ok((LengthFieldCodec::default(), SendAndClose))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-tls-goodbye", server);
        let mut missing = Vec::new();
        for round in 0..40usize {
            let n = 200_000 + round * 7_919;
            let mut client = certs.client();
            let mut peer = connect_with_recv_buffer(addr, 4096);
            peer.set_read_timeout(Some(STEP)).unwrap();
            peer.set_write_timeout(Some(STEP)).unwrap();
            tls_exchange(
                &mut peer,
                &mut client,
                &frame(format!("go {n}").as_bytes()),
                0,
            );
            let mut wire = BytesMut::new();
            let mut plain = BytesMut::new();
            let mut chunk = [0u8; 2048];
            loop {
                match std::io::Read::read(&mut peer, &mut chunk) {
                    Ok(0) => break,
                    Ok(k) => wire.extend_from_slice(&chunk[..k]),
                    Err(e) => panic!("round {round}: {e}"),
                }
                let _ = client.decode(&mut wire, &mut plain, 64 << 20);
                if plain.len() % 65_536 < 2048 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            for _ in 0..1000 {
                let before = (wire.len(), plain.len());
                let _ = client.decode(&mut wire, &mut plain, 64 << 20);
                if (wire.len(), plain.len()) == before {
                    break;
                }
            }
            assert_eq!(plain.len(), n, "round {round}: every byte");
            if client.peer_closed() != Some(true) {
                missing.push((n, wire.len()));
            }
        }
        assert!(missing.is_empty(), "no close_notify after {missing:?}");
        server.stop();
    });
}

/// A thread writes through a handle as documented: until `Backpressure`, then it waits.
/// The handle refuses only once the session is unwritable or 4096 writes are in flight,
/// whatever their size: when the reactor is behind (here: held), 4096 writes of 2 KiB
/// (8 MiB) are accepted, and applied they pass the session's 4 MiB `max_outbound`, which
/// ends the session with `QueueFull`. A writer that obeyed backpressure gets its
/// connection killed, where flow control should have slowed it down.
#[test]
fn handle_writes_that_obeyed_backpressure_do_not_kill_the_session() {
    watchdog(LIMIT, || {
        struct Publish(
            Sender<getty::SessionHandle<LengthFieldCodec>>,
            Sender<String>,
        );
        impl Handler<LengthFieldCodec> for Publish {
            fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
                let _ = self.0.send(s.handle().unwrap());
                Ok(())
            }
            fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, _: Bytes) {}
            fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, error: &getty::Error) {
                report(&self.1, format!("error {error}"));
            }
            fn on_close(&mut self, _: &mut Session<LengthFieldCodec>) {
                report(&self.1, "close".into());
            }
        }
        let (handles_tx, handles) = mpsc::channel();
        let (tx, events) = mpsc::channel();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((
                LengthFieldCodec::default(),
                Publish(handles_tx.clone(), tx.clone()),
            ))
        })
        .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-handle-bytes", server);
        let mut peer = connect_with_recv_buffer(addr, 16 * 1024);
        peer.set_read_timeout(Some(STEP)).unwrap();
        let handle = handles.recv_timeout(STEP).unwrap();

        let (release_tx, release) = mpsc::channel::<()>();
        let (held_tx, held) = mpsc::channel();
        server
            .handle()
            .execute(move |_| {
                let _ = held_tx.send(());
                let _ = release.recv_timeout(STEP);
            })
            .unwrap();
        held.recv_timeout(STEP).unwrap();
        let payload = Bytes::from(vec![5u8; 2048]);
        let mut accepted = 0usize;
        while handle.write(payload.clone()).is_ok() {
            accepted += 1;
            assert!(accepted <= 100_000, "never refused");
        }
        release_tx.send(()).unwrap();
        // The peer reads it all, slowly enough that the queue builds up first.
        std::thread::sleep(Duration::from_millis(300));
        let (got, _) = read_to_end_or_quiet(&mut peer);
        let mut seen = Vec::new();
        while let Ok(e) = events.recv_timeout(Duration::from_millis(300)) {
            seen.push(e);
        }
        assert!(
            seen.iter().all(|e| !e.starts_with("error")),
            "{accepted} writes accepted ({} bytes), {} received: {seen:?}",
            accepted * 2048,
            got
        );
        assert_eq!(got, accepted * (4 + 2048), "every accepted write arrives");
        server.stop();
    });
}

/// Reads until the peer's end or until nothing comes for a second; returns the bytes and
/// whether the peer ended the connection.
fn read_to_end_or_quiet(peer: &mut TcpStream) -> (usize, bool) {
    peer.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match std::io::Read::read(peer, &mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (got, false)
            }
            Err(_) => return (got, true),
        }
    }
}
