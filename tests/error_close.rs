//! Sessions that end on an error still say what they can: replies queued before bad input
//! go out, a timeout ends with a goodbye and a FIN (never a reset), a TLS session answers a
//! bad record with the alert RFC 8446 asks for, and a write to a session that can no longer
//! send is refused instead of silently dropped.

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use common::*;
#[cfg(feature = "tls")]
use getty::codec::filter::{Filter, TlsFilter};
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::TcpServer;
#[cfg(feature = "tls")]
use getty::tls;
use getty::{Handler, Session, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(90);

/// Echoes frames; in `on_error` writes a goodbye and reports the error and whether the
/// goodbye was accepted.
struct Farewell(Sender<(ErrKind, bool)>);

impl Handler<LengthFieldCodec> for Farewell {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        s.write(msg).expect("echo");
    }
    fn on_error(&mut self, s: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        let accepted = s.write(Bytes::from_static(b"goodbye")).is_ok();
        let _ = self.0.send((classify(error), accepted));
    }
}

fn farewell_server(
    options: SessionOptions,
) -> (Running, SocketAddr, mpsc::Receiver<(ErrKind, bool)>) {
    let (tx, rx) = mpsc::channel();
    let server = TcpServer::builder()
        .session_options(options)
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), Farewell(tx.clone())))
        })
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("farewell-server", server), addr, rx)
}

/// Splits what arrived into length-prefixed frames.
fn frames_of(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert!(bytes.len() >= 4 + len, "a cut frame at the end");
        out.push(bytes[4..4 + len].to_vec());
        bytes = &bytes[4 + len..];
    }
    assert!(bytes.is_empty(), "{} stray bytes at the end", bytes.len());
    out
}

/// The scenario: 300 complete frames, 14 bytes of a truncated one, then the peer
/// shuts down its write side. The truncation is an error, but the 300 replies (about
/// 780 KB) must all arrive before a FIN; they used to be lost to a reset in most runs.
#[test]
fn replies_before_a_truncated_frame_all_arrive() {
    watchdog(TEST_LIMIT, || {
        let (server, addr, errors) = farewell_server(SessionOptions::default());
        let payload = |i: usize| vec![(i % 251) as u8; 2600];
        for round in 0..5 {
            let mut peer = connect(addr);
            let mut input = Vec::new();
            for i in 0..300 {
                input.extend_from_slice(&frame(&payload(i)));
            }
            input.extend_from_slice(&[0, 0, 0x10, 0]); // a 4 KiB frame announced...
            input.extend_from_slice(&[9; 10]); // ...and 10 of its bytes
            peer.write_all(&input).unwrap();
            peer.shutdown(Shutdown::Write).unwrap();
            let (got, ended) = read_to_end(&mut peer);
            assert_eq!(ended, Ended::Eof, "round {round}: FIN, not a reset");
            let frames = frames_of(&got);
            assert_eq!(
                frames.len(),
                301,
                "round {round}: 300 echoes and the goodbye"
            );
            for (i, f) in frames[..300].iter().enumerate() {
                assert_eq!(f, &payload(i), "round {round}: echo {i}");
            }
            assert_eq!(frames[300], b"goodbye");
            let (error, accepted) = errors.recv_timeout(STEP).unwrap();
            assert_eq!(error, ErrKind::UnexpectedEof { buffered: 14 });
            assert!(accepted, "a goodbye written in on_error is sent");
        }
        server.stop();
    });
}

/// A read-idle timeout ends the session gracefully: the handler's goodbye arrives, then a
/// FIN.
#[test]
fn a_read_idle_timeout_says_goodbye_and_closes_gracefully() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let idle = Duration::from_millis(200);
        let options = SessionOptions::default().read_idle_timeout(Some(idle));
        let (server, addr, errors) = farewell_server(options);
        let mut peer = connect(addr);
        echo_roundtrip(&mut peer, b"hello");
        let (got, ended) = read_to_end(&mut peer);
        assert_eq!(ended, Ended::Eof);
        assert_eq!(frames_of(&got), vec![b"goodbye".to_vec()]);
        assert_eq!(
            errors.recv_timeout(STEP).unwrap(),
            (ErrKind::ReadIdle(idle), true)
        );
        server.stop();
    });
}

/// A session whose socket failed cannot send: a write in `on_error` is refused, not
/// accepted and thrown away.
#[test]
fn a_write_to_a_session_that_cannot_send_is_refused() {
    watchdog(TEST_LIMIT, || {
        let (server, addr, errors) = farewell_server(SessionOptions::default());
        let peer = connect_with_recv_buffer(addr, 4096);
        let mut writer = peer.try_clone().unwrap();
        // Ask for far more than the socket buffers hold, then reset the connection.
        for _ in 0..64 {
            writer.write_all(&frame(&[7u8; 32 * 1024])).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
        set_linger_zero(&peer);
        drop(peer);
        drop(writer);
        let (error, accepted) = errors.recv_timeout(STEP).unwrap();
        assert!(matches!(error, ErrKind::Io(_)), "{error:?}");
        assert!(!accepted, "a write after the socket failed must fail");
        server.stop();
    });
}

/// TLS: a record that fails to decrypt gets the `bad_record_mac` alert before the
/// connection closes (with a FIN), where it used to get a bare reset.
#[test]
#[cfg(feature = "tls")]
fn a_bad_tls_record_gets_an_alert() {
    watchdog(TEST_LIMIT, || {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let (tx, errors) = mpsc::channel();
        let server = TcpServer::builder()
            .tls(tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
            .bind("127.0.0.1:0", move |_| {
                Ok((LengthFieldCodec::default(), Farewell(tx.clone())))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("tls-alert-server", server);

        let config = tls::client_config(chain.as_bytes()).unwrap();
        let mut client = TlsFilter::client(config, "localhost").unwrap();
        let mut peer = connect(addr);
        // The handshake, then one echo to be sure the session is up.
        let (mut plain, mut wire_in) = tls_exchange(&mut peer, &mut client, &frame(b"ping"), 8);
        assert_eq!(&plain[..], &frame(b"ping")[..]);

        // An application-data record whose contents cannot authenticate.
        let mut bogus = vec![23, 3, 3, 0, 40];
        bogus.extend((0..40u8).map(|b| b.wrapping_mul(37)));
        peer.write_all(&bogus).unwrap();
        let (got, ended) = read_to_end(&mut peer);
        assert_eq!(ended, Ended::Eof, "closed after the alert, not reset");
        wire_in.extend_from_slice(&got);
        let err = client
            .decode(&mut wire_in, &mut plain, 1 << 20)
            .expect_err("the server's alert");
        assert!(
            format!("{err:?}").contains("BadRecordMac"),
            "expected a bad_record_mac alert, got {err:?}"
        );
        let (error, accepted) = errors.recv_timeout(STEP).unwrap();
        assert!(
            matches!(error, ErrKind::Other(ref t) if t.contains("tls")),
            "{error:?}"
        );
        assert!(!accepted, "no application data may follow a fatal alert");
        server.stop();
    });
}
