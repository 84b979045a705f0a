//! Hostile peers during a WebSocket upgrade: a head that never ends, and a TLS ClientHello
//! followed by a stream of junk. The upgrade reads within a budget per turn and caps what
//! it buffers, so such a peer is dropped with bounded memory, and the server goes on
//! echoing and handshaking for everyone else.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[cfg(feature = "tls")]
use bytes::BytesMut;
use common::*;
#[cfg(feature = "tls")]
use getty::codec::filter::{Filter, TlsFilter};
use getty::codec::{Message, MessageCodec};
#[cfg(feature = "tls")]
use getty::tls;
use getty::ws::{Ws, WsServer};
use getty::{Handler, Session};

const TEST_LIMIT: Duration = Duration::from_secs(90);

struct Echo;

impl Handler<MessageCodec, Ws> for Echo {
    fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
        let _ = s.write(msg);
    }
}

/// Streams `junk` repeatedly after `prefix` until the server stops taking it (it closed or
/// reset the connection), for at most `limit` bytes or 10 s. Returns the bytes sent.
fn stream_junk(mut peer: TcpStream, prefix: &[u8], limit: usize) -> usize {
    peer.write_all(prefix).unwrap();
    peer.set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let junk: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 + 3) as u8).collect();
    let (mut sent, started) = (0, Instant::now());
    while sent < limit && started.elapsed() < Duration::from_secs(10) {
        match peer.write(&junk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break, // timed out: held
            Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
            Err(_) => return sent, // dropped by the server
        }
    }
    // Not dropped yet: it must be soon (a refusal, a handshake error or the timeout).
    let mut sink = [0u8; 4096];
    peer.set_read_timeout(Some(STEP)).unwrap();
    loop {
        match peer.read(&mut sink) {
            Ok(0) | Err(_) => return sent,
            Ok(_) => {}
        }
    }
}

fn upgraded(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr);
    ws_upgrade(&mut stream);
    stream
}

#[test]
fn a_head_that_never_ends_is_refused_and_others_carry_on() {
    watchdog(TEST_LIMIT, || {
        let server = WsServer::builder()
            .route("/echo", |_| Ok((MessageCodec, Echo)))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("ws-hostile-head", server);
        let mut bystander = upgraded(addr);
        ws_echo_roundtrip(&mut bystander, b"before");
        let baseline = resident_bytes();
        let sent = stream_junk(connect(addr), b"GET /echo HTTP/1.1\r\nX-Junk: ", 64 << 20);
        let growth = resident_bytes().saturating_sub(baseline);
        assert!(
            sent < 64 << 20,
            "the server kept taking a head of {sent} bytes"
        );
        assert!(growth < 8 << 20, "RSS grew by {} KiB", growth >> 10);
        ws_echo_roundtrip(&mut bystander, b"after");
        server.stop();
    });
}

#[cfg(feature = "tls")]
#[test]
fn junk_after_a_client_hello_is_cut_off_and_others_carry_on() {
    watchdog(TEST_LIMIT, || {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let server = WsServer::builder()
            .tls(tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
            .route("/echo", |_| Ok((MessageCodec, Echo)))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("wss-hostile-hello", server);
        let config = tls::client_config(chain.as_bytes()).unwrap();
        let mut hello = BytesMut::new();
        TlsFilter::client(config, "localhost")
            .unwrap()
            .flush(&mut hello)
            .unwrap();
        let baseline = resident_bytes();
        for _ in 0..3 {
            let sent = stream_junk(connect(addr), &hello, 64 << 20);
            assert!(
                sent < 64 << 20,
                "the server kept taking {sent} bytes of junk"
            );
        }
        let growth = resident_bytes().saturating_sub(baseline);
        assert!(growth < 8 << 20, "RSS grew by {} KiB", growth >> 10);
        // The server still completes a real handshake.
        let config = tls::client_config(chain.as_bytes()).unwrap();
        let mut client = TlsFilter::client(config, "localhost").unwrap();
        let mut peer = connect(addr);
        tls_exchange(&mut peer, &mut client, b"", 0);
        server.stop();
    });
}
