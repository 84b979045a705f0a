//! How TLS sessions end (issue 12, A3 and A4): the peer's `close_notify` is answered with
//! ours and nothing sent after it is buffered; a FIN without `close_notify` (a truncation)
//! is reported to the handler.

mod common;

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use getty::codec::filter::{Filter, TlsFilter};
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{tls, Handler, Session};

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

/// A TLS echo server, and a client filter that trusts it.
fn server() -> (Running, SocketAddr, Receiver<String>, TlsFilter) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
    let (tx, events) = mpsc::channel();
    let server = TcpServer::builder()
        .tls(tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), Reporter(tx.clone())))
        })
        .unwrap();
    let addr = server.local_addr();
    let config = tls::client_config(chain.as_bytes()).unwrap();
    let client = TlsFilter::client(config, "localhost").unwrap();
    (Running::serve("tls-endings", server), addr, events, client)
}

/// Handshakes and checks one echo; returns the socket and what was read past it.
fn echo_once(addr: SocketAddr, client: &mut TlsFilter) -> (TcpStream, BytesMut) {
    let mut peer = connect(addr);
    let (plain, wire_in) = tls_exchange(&mut peer, client, &frame(b"ping"), 8);
    assert_eq!(&plain[..], &frame(b"ping")[..]);
    (peer, wire_in)
}

/// Reads to the end and feeds it all to the client filter.
fn read_rest(peer: &mut TcpStream, client: &mut TlsFilter, mut wire_in: BytesMut) -> Ended {
    let (got, ended) = read_to_end(peer);
    wire_in.extend_from_slice(&got);
    client
        .decode(&mut wire_in, &mut BytesMut::new(), 1 << 20)
        .unwrap();
    ended
}

#[test]
fn close_notify_is_answered_with_close_notify() {
    watchdog(TEST_LIMIT, || {
        let (server, addr, events, mut client) = server();
        let (mut peer, wire_in) = echo_once(addr, &mut client);
        let mut bye = BytesMut::new();
        client.close(&mut bye);
        peer.write_all(&bye).unwrap();
        // The peer waits for the two-way shutdown before it sends its FIN.
        let ended = read_rest(&mut peer, &mut client, wire_in);
        assert_eq!(ended, Ended::Eof);
        assert_eq!(
            client.peer_closed(),
            Some(true),
            "no close_notify came back"
        );
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close", "a clean close");
        server.stop();
    });
}

/// 256 MiB sent after close_notify once grew the server by as much, with the session open.
#[test]
fn bytes_after_close_notify_are_not_kept() {
    watchdog(TEST_LIMIT, || {
        let (server, addr, events, mut client) = server();
        let (mut peer, _) = echo_once(addr, &mut client);
        let baseline = resident_bytes();
        let mut bye = BytesMut::new();
        client.close(&mut bye);
        peer.write_all(&bye).unwrap();
        peer.set_write_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let junk = vec![0x17u8; 64 * 1024];
        let (mut sent, started) = (0usize, Instant::now());
        while sent < 64 << 20 && started.elapsed() < Duration::from_secs(10) {
            match peer.write(&junk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break, // closed by the server, or held
            }
        }
        let growth = resident_bytes().saturating_sub(baseline);
        assert!(growth < 8 << 20, "RSS grew by {} KiB", growth >> 10);
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        drop(peer);
        server.stop();
    });
}

#[test]
fn a_fin_without_close_notify_is_reported_as_a_truncation() {
    watchdog(TEST_LIMIT, || {
        let (server, addr, events, mut client) = server();
        let (mut peer, wire_in) = echo_once(addr, &mut client);
        peer.shutdown(Shutdown::Write).unwrap();
        let ended = read_rest(&mut peer, &mut client, wire_in);
        assert_eq!(ended, Ended::Eof, "the session still closes gracefully");
        let error = events.recv_timeout(STEP).unwrap();
        assert!(error.contains("without close_notify"), "{error}");
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        server.stop();
    });
}
