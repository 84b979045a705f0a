//! Hostile review of the session lifecycle on TCP and TLS: how a session ends when the
//! peer's end of input (TLS `close_notify`, a FIN) comes while delivery is held back, or
//! before the TLS handshake is done.

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

/// Reads the server's records until its EOF (bounded by the socket's read timeout);
/// returns the plain bytes and whether its close_notify came.
fn tls_read_to_end(peer: &mut TcpStream, client: &mut TlsFilter) -> (BytesMut, bool) {
    let (wire, _) = read_to_end(peer);
    let mut wire = BytesMut::from(&wire[..]);
    let mut plain = BytesMut::new();
    // One call stops when rustls holds as much plaintext as it buffers: call again while
    // it makes progress.
    for _ in 0..10_000 {
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
