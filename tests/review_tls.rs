//! Hostile-peer review of TLS sessions: what a misbehaving peer can make a TLS session do.

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
    let (_, client_config) = configs();
    let tls = TlsFilter::client(client_config, "localhost").unwrap();
    let direct = (tls.peer_closed(), tls.can_send());
    let boxed: Box<dyn Filter> = Box::new(tls);
    assert_eq!((boxed.peer_closed(), boxed.can_send()), direct);
    assert_eq!(direct, (Some(false), true));
}
