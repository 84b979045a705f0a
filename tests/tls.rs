//! TLS sessions over loopback with certificates made at test time: echo, the checks a client
//! must make (name, CA), mutual TLS, plaintext to a TLS port, the handshake timeout, and
//! interop with Python's `ssl` module.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use getty::codec::filter::TlsFilter;
use getty::codec::rustls;
use getty::codec::{Bytes, LengthFieldCodec, LinesCodec};
#[cfg(feature = "ws")]
use getty::codec::{Message, MessageCodec};
use getty::tcp::{TcpClient, TcpServer};
#[cfg(feature = "ws")]
use getty::ws::{Ws, WsClient, WsServer};
use getty::{tls, Handler, Session, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// A self-signed certificate (its own CA) for `name`, as PEM chain and key.
struct Identity {
    chain: String,
    key: String,
}

fn identity(name: &str) -> Identity {
    let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    Identity {
        chain: made.cert.pem(),
        key: made.signing_key.serialize_pem(),
    }
}

fn tls_echo_server(
    config: Arc<rustls::ServerConfig>,
    options: SessionOptions,
    tx: &Sender<Ev>,
) -> (Running, SocketAddr) {
    let tx = tx.clone();
    let server = TcpServer::builder()
        .tls(config)
        .session_options(options)
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), Probe::echo(&tx)))
        })
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("tls-server", server), addr)
}

/// Sends `count` messages of growing size once open and reports what comes back.
struct Pinger {
    count: usize,
    tx: Sender<Ev>,
}

impl Handler<LengthFieldCodec> for Pinger {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        for i in 0..self.count {
            s.write(message(i)).unwrap();
        }
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = self.tx.send(Ev::Msg { sid: s.id(), msg });
    }
    fn on_error(&mut self, s: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }
}

fn message(i: usize) -> Vec<u8> {
    let len = (i * 7919) % 70_000;
    (0..len).map(|b| (b * 31 + i) as u8).collect()
}

fn tls_client(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
    count: usize,
    tx: &Sender<Ev>,
) -> Running {
    let tx = tx.clone();
    let client = TcpClient::builder()
        .tls(config, name)
        .max_consecutive_failures(Some(1))
        .build(addr, move |_| {
            Ok((
                LengthFieldCodec::default(),
                Pinger {
                    count,
                    tx: tx.clone(),
                },
            ))
        })
        .unwrap();
    Running::serve("tls-client", client)
}

fn is_tls_error(e: &Ev) -> bool {
    matches!(e, Ev::Error { err: ErrKind::Other(text), .. } if text.contains("tls"))
}

#[test]
fn echo_over_tls_is_encrypted_and_complete() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let id = identity("localhost");
        let (tx, mut events) = Events::new();
        let server_config = tls::server_config(id.chain.as_bytes(), id.key.as_bytes()).unwrap();
        let (server, addr) = tls_echo_server(server_config, SessionOptions::default(), &tx);
        let (ctx, mut client_events) = Events::new();
        let client_config = tls::client_config(id.chain.as_bytes()).unwrap();
        let client = tls_client(addr, client_config, "localhost", 100, &ctx);
        let got = client_events.wait_n("100 echoes", 100, |e| matches!(e, Ev::Msg { .. }));
        for (i, ev) in got.iter().enumerate() {
            let Ev::Msg { msg, .. } = ev else {
                unreachable!()
            };
            assert_eq!(&msg[..], &message(i)[..], "echo {i}");
        }
        client.stop();
        server.stop();
        events.pump();
        events.check_contract();
        assert_eq!(events.count(|e| matches!(e, Ev::Error { .. })), 0);
    });
}

#[test]
fn a_wrong_host_name_is_rejected() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let id = identity("localhost");
        let (tx, _events) = Events::new();
        let config = tls::server_config(id.chain.as_bytes(), id.key.as_bytes()).unwrap();
        let (server, addr) = tls_echo_server(config, SessionOptions::default(), &tx);
        let (ctx, mut client_events) = Events::new();
        let client_config = tls::client_config(id.chain.as_bytes()).unwrap();
        let client = tls_client(addr, client_config, "other.example", 1, &ctx);
        let err = client_events.wait("a name mismatch", is_tls_error);
        assert!(format!("{err:?}").contains("not valid for name"), "{err:?}");
        assert_eq!(client_events.count(|e| matches!(e, Ev::Msg { .. })), 0);
        client.stop();
        server.stop();
    });
}

#[test]
fn an_untrusted_ca_is_rejected() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (real, impostor) = (identity("localhost"), identity("localhost"));
        let (tx, _events) = Events::new();
        let config = tls::server_config(impostor.chain.as_bytes(), impostor.key.as_bytes());
        let (server, addr) = tls_echo_server(config.unwrap(), SessionOptions::default(), &tx);
        let (ctx, mut client_events) = Events::new();
        let client_config = tls::client_config(real.chain.as_bytes()).unwrap();
        let client = tls_client(addr, client_config, "localhost", 1, &ctx);
        let err = client_events.wait("an unknown issuer", is_tls_error);
        assert!(
            format!("{err:?}").contains("invalid peer certificate"),
            "{err:?}"
        );
        client.stop();
        server.stop();
    });
}

#[test]
fn mutual_tls_requires_a_client_certificate() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (server_id, client_id) = (identity("localhost"), identity("client"));
        let (tx, mut events) = Events::new();
        let config = tls::server_config_with_client_auth(
            server_id.chain.as_bytes(),
            server_id.key.as_bytes(),
            client_id.chain.as_bytes(),
        )
        .unwrap();
        let (server, addr) = tls_echo_server(config, SessionOptions::default(), &tx);

        let (ctx, mut with_cert) = Events::new();
        let config = tls::client_config_with_certificate(
            server_id.chain.as_bytes(),
            client_id.chain.as_bytes(),
            client_id.key.as_bytes(),
        )
        .unwrap();
        let client = tls_client(addr, config, "localhost", 5, &ctx);
        with_cert.wait_n("echoes with a certificate", 5, |e| {
            matches!(e, Ev::Msg { .. })
        });
        client.stop();

        let (ctx, mut without) = Events::new();
        let config = tls::client_config(server_id.chain.as_bytes()).unwrap();
        let client = tls_client(addr, config, "localhost", 1, &ctx);
        events.wait(
            "the server refuses a client without a certificate",
            is_tls_error,
        );
        assert_eq!(without.count(|e| matches!(e, Ev::Msg { .. })), 0);
        client.stop();
        server.stop();
    });
}

#[test]
fn plaintext_to_a_tls_port_closes_only_that_session() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let id = identity("localhost");
        let (tx, mut events) = Events::new();
        let config = tls::server_config(id.chain.as_bytes(), id.key.as_bytes()).unwrap();
        let (server, addr) = tls_echo_server(config, SessionOptions::default(), &tx);
        let mut plain = connect(addr);
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        // RFC 8446 §6: a fatal alert (a record of content type 21, level 2), then FIN.
        let (got, ended) = read_to_end(&mut plain);
        assert_eq!(ended, Ended::Eof, "closed after the alert, not reset");
        assert!(
            got.len() == 7 && got[0] == 21 && got[5] == 2,
            "expected one fatal alert record, got {got:?}"
        );
        let err = events.wait("a TLS error", is_tls_error);
        events.wait_close(err.sid());

        let (ctx, mut client_events) = Events::new();
        let client_config = tls::client_config(id.chain.as_bytes()).unwrap();
        let client = tls_client(addr, client_config, "localhost", 3, &ctx);
        client_events.wait_n("echoes after the bad peer", 3, |e| {
            matches!(e, Ev::Msg { .. })
        });
        client.stop();
        server.stop();
        events.pump();
        events.check_contract();
    });
}

#[test]
fn a_silent_peer_hits_the_handshake_timeout() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let id = identity("localhost");
        let (tx, mut events) = Events::new();
        let config = tls::server_config(id.chain.as_bytes(), id.key.as_bytes()).unwrap();
        let options = SessionOptions::default().handshake_timeout(Duration::from_millis(300));
        let (server, addr) = tls_echo_server(config, options, &tx);
        let mut silent = connect(addr);
        let err = events.wait("the handshake timeout", |e| matches!(e, Ev::Error { .. }));
        assert!(
            matches!(&err, Ev::Error { err: ErrKind::Other(t), .. } if t.contains("handshake not done")),
            "{err:?}"
        );
        expect_closed(&mut silent);
        server.stop();
        events.pump();
        events.check_contract();
    });
}

/// Python's `ssl` module (OpenSSL underneath; not ours) verifies the server against the
/// test CA and the name "localhost", then exchanges lines with the echo server.
#[test]
fn python_ssl_client_talks_to_the_tls_server() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let id = identity("localhost");
        let dir = std::env::temp_dir().join(format!("getty-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, &id.chain).unwrap();
        let (tx, mut events) = Events::new();
        let config = tls::server_config(id.chain.as_bytes(), id.key.as_bytes()).unwrap();
        let server = {
            let tx = tx.clone();
            TcpServer::builder()
                .tls(config)
                .bind("127.0.0.1:0", move |_| {
                    Ok((LinesCodec::default(), Probe::echo(&tx)))
                })
                .unwrap()
        };
        let addr = server.local_addr();
        let running = Running::serve("tls-lines", server);
        let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"hello from python\nsecond line\n")
        got = b""
        while not got.endswith(b"second line\n"):
            chunk = tls.recv(4096)
            if not chunk:
                break
            got += chunk
        sys.stdout.write(got.decode() + "|" + tls.version())
"#;
        let output = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(&ca)
            .output();
        let output = output.expect("python3 runs (the interop check needs it)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(stdout, "hello from python\nsecond line\n|TLSv1.3");
        running.stop();
        let _ = std::fs::remove_dir_all(&dir);
        events.pump();
        events.check_contract();
    });
}

/// Tells what the TLS layer of its session negotiated, once a line arrives.
struct Negotiated(Sender<String>);

impl Handler<LinesCodec> for Negotiated {
    fn on_message(&mut self, s: &mut Session<LinesCodec>, _: Bytes) {
        let tls = s.filter::<TlsFilter>().expect("a TLS session").connection();
        let sni = match tls {
            rustls::Connection::Server(server) => server.server_name().map(String::from),
            rustls::Connection::Client(_) => None,
        };
        let alpn = tls
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let _ = self.0.send(format!("sni {sni:?} alpn {alpn:?}"));
    }
}

/// ALPN is negotiated from the rustls configurations (the server's preference among the
/// client's offers), and the server's session sees the name the client sent as SNI.
#[test]
fn alpn_and_sni_reach_the_session() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let id = identity("localhost");
        let mut server_config =
            (*tls::server_config(id.chain.as_bytes(), id.key.as_bytes()).unwrap()).clone();
        server_config.alpn_protocols = vec![b"getty/2".to_vec(), b"getty/1".to_vec()];
        let (tx, rx) = std::sync::mpsc::channel();
        let server = TcpServer::builder()
            .tls(Arc::new(server_config))
            .bind("127.0.0.1:0", move |_| {
                Ok((LinesCodec::default(), Negotiated(tx.clone())))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("tls-alpn", server);

        let mut client_config = (*tls::client_config(id.chain.as_bytes()).unwrap()).clone();
        client_config.alpn_protocols = vec![b"getty/1".to_vec(), b"getty/2".to_vec()];
        struct Hello;
        impl Handler<LinesCodec> for Hello {
            fn on_open(&mut self, s: &mut Session<LinesCodec>) -> std::io::Result<()> {
                s.write("hello").map_err(std::io::Error::from)
            }
            fn on_message(&mut self, _: &mut Session<LinesCodec>, _: Bytes) {}
        }
        let client = TcpClient::builder()
            .tls(Arc::new(client_config), "localhost")
            .build(addr, |_| Ok((LinesCodec::default(), Hello)))
            .unwrap();
        let client = Running::serve("tls-alpn-client", client);
        assert_eq!(
            rx.recv_timeout(STEP).unwrap(),
            "sni Some(\"localhost\") alpn Some(\"getty/2\")"
        );
        client.stop();
        server.stop();
    });
}

// ---------------------------------------------------------------------------------------
// wss://: WebSocket over TLS
// ---------------------------------------------------------------------------------------

/// Echoes every WebSocket message with its kind.
#[cfg(feature = "ws")]
struct WsEcho;

#[cfg(feature = "ws")]
impl Handler<MessageCodec, Ws> for WsEcho {
    fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
        s.write(msg).unwrap();
    }
}

/// A `wss://` echo server for `id` (bound to 127.0.0.1), with `options`.
#[cfg(feature = "ws")]
fn wss_server(id: &Identity, options: SessionOptions) -> (Running, SocketAddr) {
    let config = tls::server_config(id.chain.as_bytes(), id.key.as_bytes()).unwrap();
    let server = WsServer::builder()
        .tls(config)
        .session_options(options)
        .route("/echo", |_| Ok((MessageCodec, WsEcho)))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("wss-server", server), addr)
}

/// Sends three messages once open, reports the echoes (or the error).
#[cfg(feature = "ws")]
struct WsPinger {
    tx: Sender<Result<Message, String>>,
}

#[cfg(feature = "ws")]
impl Handler<MessageCodec, Ws> for WsPinger {
    fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
        assert!(
            s.filter::<TlsFilter>().is_some(),
            "a wss session runs over TLS"
        );
        s.write(Message::text("one"))?;
        s.write(Message::binary(vec![2u8; 100_000]))?;
        s.write(Message::text("three"))?;
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, msg: Message) {
        let _ = self.tx.send(Ok(msg));
    }
    fn on_error(&mut self, _: &mut Session<MessageCodec, Ws>, error: &getty::Error) {
        let _ = self.tx.send(Err(error.to_string()));
    }
}

/// A getty-rs `wss://` client and server: the client checks the server's certificate
/// (issued for 127.0.0.1) and the messages echo through TLS.
#[cfg(feature = "ws")]
#[test]
fn wss_echo_between_getty_client_and_server() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let id = identity("127.0.0.1");
        let (server, addr) = wss_server(&id, SessionOptions::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let client = WsClient::builder()
            .tls(tls::client_config(id.chain.as_bytes()).unwrap())
            .max_consecutive_failures(Some(1))
            .build(&format!("wss://{addr}/echo"), move |_| {
                Ok((MessageCodec, WsPinger { tx: tx.clone() }))
            })
            .unwrap();
        let client = Running::serve("wss-client", client);
        let got: Vec<Message> = (0..3)
            .map(|_| rx.recv_timeout(STEP).unwrap().unwrap())
            .collect();
        assert_eq!(
            got,
            [
                Message::text("one"),
                Message::binary(vec![2u8; 100_000]),
                Message::text("three")
            ]
        );
        client.stop();
        server.stop();
    });
}

/// A `wss://` client that does not trust the server's CA never opens a session; a
/// `wss://` URL without a TLS configuration is refused when the client is built.
#[cfg(feature = "ws")]
#[test]
fn a_wss_client_refuses_an_untrusted_server() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (real, impostor) = (identity("127.0.0.1"), identity("127.0.0.1"));
        let (server, addr) = wss_server(&impostor, SessionOptions::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let url = format!("wss://{addr}/echo");
        let client = WsClient::builder()
            .tls(tls::client_config(real.chain.as_bytes()).unwrap())
            .max_consecutive_failures(Some(1))
            .build(&url, move |_| {
                Ok((MessageCodec, WsPinger { tx: tx.clone() }))
            })
            .unwrap();
        let client = Running::serve("wss-untrusting-client", client);
        let deadline = std::time::Instant::now() + STEP;
        while client.entry_count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the client did not give up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(rx.try_recv().is_err(), "no session opened");
        let no_tls = WsClient::builder().build(&url, |_| Ok((MessageCodec, WsEcho)));
        assert!(no_tls.is_err());
        client.stop();
        server.stop();
    });
}

/// On a `wss://` port the handshake timeout covers the TLS handshake (and the upgrade after
/// it): a silent client is dropped and counted as a timeout.
#[cfg(feature = "ws")]
#[test]
fn a_stalled_wss_handshake_is_dropped() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let id = identity("127.0.0.1");
        let options = SessionOptions::default().handshake_timeout(Duration::from_millis(300));
        let (server, addr) = wss_server(&id, options);
        let mut silent = connect(addr);
        expect_closed(&mut silent);
        let metrics = getty::Metrics::of(server.handle()).unwrap();
        assert_eq!(metrics.errors_timeout, 1);
        server.stop();
    });
}

/// Python's `websockets` (over its `ssl` module) talks to the getty-rs `wss://` server,
/// verifying it against the test CA, with permessage-deflate.
#[cfg(feature = "ws")]
#[test]
fn a_python_websockets_client_talks_to_the_wss_server() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let id = identity("127.0.0.1");
        let dir = std::env::temp_dir().join(format!("getty-wss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, &id.chain).unwrap();
        let config = tls::server_config(id.chain.as_bytes(), id.key.as_bytes()).unwrap();
        let server = WsServer::builder()
            .tls(config)
            .deflate(Some(getty::codec::ws::DeflateConfig::default()))
            .route("/", |_| Ok((MessageCodec, WsEcho)))
            .bind("127.0.0.1:0")
            .unwrap();
        let url = format!("wss://{}/", server.local_addr());
        let server = Running::serve("wss-python", server);
        let child = std::process::Command::new(interop_python())
            .arg(ws_peer_script())
            .args(["client", &url, "--compress", "--ca"])
            .arg(&ca)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = finish_child(Reaped(child), TEST_LIMIT / 2);
        assert!(out.starts_with("OK 57 permessage-deflate"), "{out}");
        server.stop();
        let _ = std::fs::remove_dir_all(&dir);
    });
}
