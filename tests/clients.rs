//! Clients and handshakes over loopback (issue 12, items 17, 18, 19, 21 and 22): an EOF
//! that arrives with the `101`, every resolved address tried in turn, the upgrade request
//! refusing what would inject headers, the handshake's leniencies, TLS server names and
//! text messages checked before anything is dialled or sent.

mod common;

#[cfg(feature = "ws")]
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::Sender;
use std::time::Duration;

use common::*;
#[cfg(feature = "ws")]
use getty::codec::ws::{InvalidRequest, RequestPart};
use getty::codec::Bytes;
#[cfg(feature = "ws")]
use getty::codec::{Message, MessageCodec};
#[cfg(feature = "ws")]
use getty::ws::{Ws, WsClient};
#[cfg(feature = "ws")]
use getty::{Error, Handler, Session};

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// A WebSocket client handler that reports every callback (a message as its payload).
#[cfg(feature = "ws")]
struct WsProbe {
    tx: Sender<Ev>,
}

#[cfg(feature = "ws")]
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

/// Reads an HTTP head (to the blank line) byte by byte, so nothing past it is taken.
#[cfg(feature = "ws")]
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

/// The value of the header `name` in a raw head.
#[cfg(feature = "ws")]
fn head_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The `101` that answers `request` (a client's upgrade head).
#[cfg(feature = "ws")]
fn switching_protocols(request: &str) -> String {
    let key = head_value(request, "Sec-WebSocket-Key").expect("a key");
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// Accepts one connection, failing the test after [`STEP`] (a blocking accept would wait
/// for the watchdog).
fn accept_within(listener: &TcpListener, what: &str) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + STEP;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(std::time::Instant::now() < deadline, "timed out: {what}");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Item 17: an EOF that comes with the 101
// ---------------------------------------------------------------------------------------

/// A server that answers the upgrade, sends one text frame and closes, all in one write:
/// the client reads the `101`, the frame and the EOF in one go. It must deliver the frame,
/// end the session (`on_close`) and redial. Before the fix the EOF was noted and dropped:
/// the session stayed open with no `on_close`, and the client never redialled (seen in
/// most rounds, so several rounds make the test fail reliably).
#[cfg(feature = "ws")]
#[test]
fn an_eof_that_comes_with_the_101_ends_the_session_and_the_client_redials() {
    watchdog(TEST_LIMIT, || {
        const ROUNDS: usize = 5;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..ROUNDS {
                let (mut stream, _) = listener.accept().expect("the client dials");
                stream.set_read_timeout(Some(STEP)).unwrap();
                let request = read_head(&mut stream);
                let mut reply = switching_protocols(&request).into_bytes();
                reply.extend_from_slice(b"\x81\x02hi");
                stream.write_all(&reply).unwrap();
                // FIN right behind the frame; dropping the socket closes it.
                stream.shutdown(std::net::Shutdown::Write).unwrap();
                // Wait for the client's side to end before the next round.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
            }
        });
        let (tx, mut events) = Events::new();
        let client = WsClient::builder()
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
            .build(&format!("ws://{addr}/"), move |_| {
                Ok((MessageCodec, WsProbe { tx: tx.clone() }))
            })
            .unwrap();
        let client = Running::serve("ws-eof-client", client);
        let closes = events.wait_n("on_close of every round", ROUNDS, |e| {
            matches!(e, Ev::Close { .. })
        });
        for close in closes {
            let got = events.of(close.sid());
            assert!(
                got.iter()
                    .any(|e| matches!(e, Ev::Msg { msg, .. } if msg == "hi")),
                "the frame that came with the 101 was not delivered: {got:?}"
            );
        }
        server.join().expect("the raw server");
        client.stop();
        events.check_contract();
    });
}

/// Closing a WebSocket client while its connection waits for the `101` ends that connection
/// as a session's close does: the upgrade never opens (no `on_open`), the server reads a
/// FIN, and a `101` that comes after is read and dropped by the client, not answered with a
/// reset.
#[cfg(feature = "ws")]
#[test]
fn closing_a_client_before_its_101_ends_the_upgrade_with_a_fin() {
    watchdog(TEST_LIMIT, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut events) = Events::new();
        let client = WsClient::builder()
            .build(&format!("ws://{addr}/"), move |_| {
                Ok((MessageCodec, WsProbe { tx: tx.clone() }))
            })
            .unwrap();
        let (client, id) = Running::spawn("ws-close-upgrading", client);
        let mut stream = accept_within(&listener, "the client dials");
        stream.set_read_timeout(Some(STEP)).unwrap();
        let request = read_head(&mut stream);
        client.handle().send(id, getty::Close).unwrap();
        // The client's barrier: the Close has been applied once this returns.
        client.run_on(|_| ());
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        assert!(
            matches!(read, Ok(0)),
            "the server should read a FIN and nothing else: {read:?} {rest:?}"
        );
        // The client still reads (and drops) what comes: a socket it had closed would
        // answer the first write with a reset, and a later write would fail.
        let answer = switching_protocols(&request);
        for round in 0..10 {
            if let Err(e) = stream.write_all(answer.as_bytes()) {
                panic!("write {round} after the client's FIN failed: {e}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(stream); // the client's linger ends at this EOF
        client.stop();
        assert_eq!(events.count(|_| true), 0, "a session that never opened");
    });
}

// ---------------------------------------------------------------------------------------
// Item 19: no header injection through the upgrade request
// ---------------------------------------------------------------------------------------

/// Why `build` refused, if it refused with the codec's typed error.
#[cfg(feature = "ws")]
fn refused_part<T>(built: std::io::Result<T>) -> Option<RequestPart> {
    let err = built.err()?;
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    let why = err.get_ref()?.downcast_ref::<InvalidRequest>()?;
    Some(why.part())
}

/// Paths, queries, header names and values and subprotocols that would put bytes of their
/// own on the wire (a CR LF, a space in the request line) are refused when the client is
/// built, with a typed error; before the fix they were written as they were (a path of
/// `/x HTTP/1.1\r\nX-Injected: 1\r\nY:` put an extra header on the wire). What is valid
/// still goes out byte for byte, to a raw server that records the request.
#[cfg(feature = "ws")]
#[test]
fn the_upgrade_request_refuses_what_would_inject_headers() {
    watchdog(TEST_LIMIT, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = |_: &mut getty::tcp::Setup<'_>| Ok((MessageCodec, Silent));
        let base = format!("ws://{addr}");
        let cases: Vec<(getty::ws::WsClientBuilder, String, RequestPart)> = vec![
            (
                WsClient::builder(),
                format!("{base}/x HTTP/1.1\r\nX-Injected: 1\r\nY:"),
                RequestPart::Path,
            ),
            (
                WsClient::builder(),
                format!("{base}/a b"),
                RequestPart::Path,
            ),
            (
                WsClient::builder(),
                format!("{base}/?q=\n"),
                RequestPart::Path,
            ),
            (
                WsClient::builder(),
                format!("{base}/caf\u{e9}"),
                RequestPart::Path,
            ),
            (
                WsClient::builder().header("X-Token", "t\r\nX-Injected: 1"),
                format!("{base}/"),
                RequestPart::HeaderValue,
            ),
            (
                WsClient::builder().header("X-Token", "t\0"),
                format!("{base}/"),
                RequestPart::HeaderValue,
            ),
            (
                WsClient::builder().header("X Token", "t"),
                format!("{base}/"),
                RequestPart::HeaderName,
            ),
            (
                WsClient::builder().header("X-Token\r\nX-Injected", "1"),
                format!("{base}/"),
                RequestPart::HeaderName,
            ),
            (
                WsClient::builder().header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                format!("{base}/"),
                RequestPart::HeaderName,
            ),
            (
                WsClient::builder().protocol("chat\r\nX-Injected: 1"),
                format!("{base}/"),
                RequestPart::Protocol,
            ),
            (
                WsClient::builder(),
                "ws://h\r\nX-Injected: 1\r\n:80/".to_string(),
                RequestPart::Host,
            ),
        ];
        for (builder, url, part) in cases {
            assert_eq!(
                refused_part(builder.build(&url, sink)),
                Some(part),
                "{url:?} was not refused as it should be"
            );
        }

        // What is valid goes out as it was given.
        let client = WsClient::builder()
            .header("X-Token", "v\tw x")
            .protocol("chat.v2")
            .build(&format!("{base}/a%20b/c;d@e?q=1&r=~"), sink)
            .unwrap();
        let client = Running::serve("ws-request-client", client);
        let mut stream = accept_within(&listener, "the client dials");
        stream.set_read_timeout(Some(STEP)).unwrap();
        let request = read_head(&mut stream);
        assert!(
            request.starts_with("GET /a%20b/c;d@e?q=1&r=~ HTTP/1.1\r\n"),
            "{request}"
        );
        assert_eq!(head_value(&request, "X-Token"), Some("v\tw x"));
        assert_eq!(
            head_value(&request, "Sec-WebSocket-Protocol"),
            Some("chat.v2")
        );
        assert_eq!(request.matches("\r\n").count(), 9, "{request}");
        client.stop();
    });
}

/// A WebSocket client handler that does nothing.
#[cfg(feature = "ws")]
struct Silent;

#[cfg(feature = "ws")]
impl Handler<MessageCodec, Ws> for Silent {
    fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {}
}

// ---------------------------------------------------------------------------------------
// Item 21: the handshake's leniencies
// ---------------------------------------------------------------------------------------

/// Sends a raw upgrade request (`target`, then `headers`, each line ending in CR LF) and
/// returns the response head.
#[cfg(all(feature = "ws", feature = "deflate"))]
fn raw_request(addr: SocketAddr, target: &str, headers: &str) -> String {
    let mut stream = connect(addr);
    let request = format!("GET {target} HTTP/1.1\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => head.push(byte[0]),
            Err(e) => panic!("reading the response to {target}: {e}"),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[cfg(all(feature = "ws", feature = "deflate"))]
const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
#[cfg(all(feature = "ws", feature = "deflate"))]
const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// The server side of RFC 6455 §4 and RFC 7692 §7: a repeated `Sec-WebSocket-Key`, a
/// repeated or empty `Host` get a 400; an absolute-form target is routed by its path;
/// a permessage-deflate offer with window bits written with a leading zero or a value with
/// an unbalanced quote is declined (the connection runs uncompressed). Before the fix the
/// first three were upgraded, the absolute form got a 404 and both offers were accepted.
// It checks the negotiated permessage-deflate parameters too.
#[cfg(all(feature = "ws", feature = "deflate"))]
#[test]
fn the_server_refuses_repeated_keys_and_empty_hosts_and_routes_absolute_targets() {
    watchdog(TEST_LIMIT, || {
        let server = getty::ws::WsServer::builder()
            .deflate(Some(getty::codec::ws::DeflateConfig::default()))
            .route("/chat", |_| Ok((MessageCodec, Silent)))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("ws-handshake-server", server);
        let host = "Host: localhost\r\n";
        let two_keys =
            format!("{host}{UPGRADE}{KEY}Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n");
        let head = raw_request(addr, "/chat", &two_keys);
        assert!(head.starts_with("HTTP/1.1 400 "), "two keys: {head}");
        let head = raw_request(addr, "/chat", &format!("Host: \r\n{UPGRADE}{KEY}"));
        assert!(head.starts_with("HTTP/1.1 400 "), "an empty Host: {head}");
        let two_hosts = format!("{host}Host: elsewhere\r\n{UPGRADE}{KEY}");
        let head = raw_request(addr, "/chat", &two_hosts);
        assert!(head.starts_with("HTTP/1.1 400 "), "two Hosts: {head}");

        let plain = format!("{host}{UPGRADE}{KEY}");
        for target in ["ws://localhost/chat", "http://localhost:80/chat?x=1"] {
            let head = raw_request(addr, target, &plain);
            assert!(head.starts_with("HTTP/1.1 101 "), "{target}: {head}");
        }
        let head = raw_request(addr, "ws://localhost/elsewhere", &plain);
        assert!(head.starts_with("HTTP/1.1 404 "), "{head}");
        let head = raw_request(addr, "chat", &plain);
        assert!(head.starts_with("HTTP/1.1 400 "), "{head}");

        for offer in [
            "permessage-deflate; client_max_window_bits=09",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=\"10",
            "permessage-deflate; client_max_window_bits=10\"",
        ] {
            let offered = format!("{plain}Sec-WebSocket-Extensions: {offer}\r\n");
            let head = raw_request(addr, "/chat", &offered);
            assert!(head.starts_with("HTTP/1.1 101 "), "{offer}: {head}");
            assert_eq!(
                head_value(&head, "Sec-WebSocket-Extensions"),
                None,
                "the malformed offer {offer:?} was accepted"
            );
        }
        // A well-formed one (a quoted value included) is still accepted.
        let offered =
            format!("{plain}Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=\"10\"\r\n");
        let head = raw_request(addr, "/chat", &offered);
        assert_eq!(
            head_value(&head, "Sec-WebSocket-Extensions"),
            Some("permessage-deflate; client_max_window_bits=10"),
            "{head}"
        );
        server.stop();
    });
}

/// The client side: a `101` over HTTP/1.0, or one agreeing to permessage-deflate with window
/// bits written with a leading zero, fails the dial (no `on_open`), and a client allowed two
/// failures gives up. Before the fix both were accepted and the sessions opened.
#[cfg(feature = "ws")]
#[test]
fn the_client_refuses_an_http_1_0_101_and_malformed_extension_responses() {
    watchdog(TEST_LIMIT, || {
        let answers = [
            ("HTTP/1.0 101 Switching Protocols", ""),
            (
                "HTTP/1.1 101 Switching Protocols",
                "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=09\r\n",
            ),
            (
                "HTTP/1.1 101 Switching Protocols",
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=\"9\r\n",
            ),
        ];
        for (status, extra) in answers {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = std::thread::spawn(move || {
                for _ in 0..2 {
                    let (mut stream, _) = listener.accept().expect("the client dials");
                    stream.set_read_timeout(Some(STEP)).unwrap();
                    let request = read_head(&mut stream);
                    let accept = switching_protocols(&request)
                        .replace("HTTP/1.1 101 Switching Protocols", status)
                        .replace("\r\n\r\n", &format!("\r\n{extra}\r\n"));
                    stream.write_all(accept.as_bytes()).unwrap();
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest);
                }
            });
            let (tx, mut events) = Events::new();
            let client = WsClient::builder()
                .deflate(Some(getty::codec::ws::DeflateConfig::default()))
                .max_consecutive_failures(Some(2))
                .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
                .build(&format!("ws://{addr}/"), move |_| {
                    Ok((MessageCodec, WsProbe { tx: tx.clone() }))
                })
                .unwrap();
            let client = Running::serve("ws-strict-client", client);
            server.join().expect("the raw server");
            // The client gives up after its second failed dial and leaves the reactor.
            let mut left = usize::MAX;
            for _ in 0..300 {
                left = client.entry_count();
                if left == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(left, 0, "{status} {extra:?}: the client did not give up");
            assert_eq!(
                events.count(|e| matches!(e, Ev::Open { .. })),
                0,
                "{status} {extra:?} was accepted: {:?}",
                events.all
            );
            client.stop();
        }
    });
}

// ---------------------------------------------------------------------------------------
// Item 22: TLS server names and text messages checked up front
// ---------------------------------------------------------------------------------------

/// A TLS server name that is not a DNS name or an IP address fails `build` with a typed
/// error, for the TCP and the WebSocket client alike. Before the fix it was found at every
/// connect, and the client redialled forever with a warning.
#[cfg(all(feature = "tls", feature = "ws"))]
#[test]
fn a_bad_tls_server_name_fails_the_build() {
    use getty::codec::rustls::pki_types::InvalidDnsNameError;
    use getty::codec::RawCodec;
    use getty::tcp::TcpClient;

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let config = getty::tls::client_config(cert.cert.pem().as_bytes()).unwrap();
    let typed = |err: std::io::Error| {
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        assert!(
            err.get_ref()
                .is_some_and(|e| e.downcast_ref::<InvalidDnsNameError>().is_some()),
            "not an InvalidDnsNameError: {err:?}"
        );
    };
    for name in ["not a host name!", "", "bad..dots", "trailing-\r\n"] {
        let built = TcpClient::builder()
            .tls(config.clone(), name)
            .build(dead_port(), |_| {
                Ok((RawCodec, Probe::silent(&Events::new().0)))
            });
        typed(built.err().unwrap_or_else(|| panic!("{name:?} was taken")));
    }
    let built = WsClient::builder()
        .tls(config.clone())
        .build("wss://bad_name!:9/", |_| Ok((MessageCodec, Silent)));
    typed(built.err().expect("wss://bad_name! was taken"));
    // Names and addresses that are valid still build.
    for name in ["localhost", "127.0.0.1", "::1", "a-b.example"] {
        let built = TcpClient::builder()
            .tls(config.clone(), name)
            .build(dead_port(), |_| {
                Ok((RawCodec, Probe::silent(&Events::new().0)))
            });
        assert!(built.is_ok(), "{name}");
    }
}

/// Text from bytes is checked when the message is made: bytes that are not UTF-8 make no
/// message (before the fix `Message::Text` took any bytes and went out as a text frame the
/// peer refused with 1007), and text made from checked bytes goes out as a text frame.
#[cfg(feature = "ws")]
#[test]
fn text_messages_are_utf8_by_construction() {
    struct SendsText;
    impl Handler<MessageCodec, Ws> for SendsText {
        fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
            s.write(Message::text_from_utf8(&b"caf\xc3\xa9"[..]).unwrap())?;
            Ok(())
        }
        fn on_message(&mut self, _: &mut Session<MessageCodec, Ws>, _: Message) {}
    }
    // Checked on the test's thread: a failed assert in a callback would only end that
    // session (a panic there is isolated) and show as a read failure.
    assert!(Message::text_from_utf8(&b"caf\xc3"[..]).is_err());
    assert!(getty::codec::Utf8Bytes::try_from(vec![0xffu8]).is_err());
    watchdog(TEST_LIMIT, || {
        let server = getty::ws::WsServer::builder()
            .route("/echo", |_| Ok((MessageCodec, SendsText)))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("ws-text-server", server);
        let mut peer = connect(addr);
        ws_upgrade(&mut peer);
        let mut frame = [0u8; 7];
        peer.read_exact(&mut frame).unwrap();
        assert_eq!(frame, *b"\x81\x05caf\xc3\xa9", "a text frame with the text");
        server.stop();
    });
}

// ---------------------------------------------------------------------------------------
// Item 18: every resolved address, resolved again on redial
// ---------------------------------------------------------------------------------------

/// A closed port on 127.0.0.1, then the live one: the address list the issue's
/// `ws://localhost:PORT` made where `localhost` is `::1` first (here `localhost` is only
/// 127.0.0.1 in /etc/hosts, so the list is built by hand). The client falls through to
/// the second address and opens there, without waiting for a redial. Before the fix it
/// dialled the first address only, forever.
#[test]
fn a_tcp_client_falls_through_to_the_next_address() {
    use getty::codec::RawCodec;
    use getty::tcp::TcpClient;

    watchdog(TEST_LIMIT, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let live = listener.local_addr().unwrap();
        let addrs = [dead_port(), live];
        let (tx, mut events) = Events::new();
        let client = TcpClient::builder()
            .reconnect_backoff(Duration::from_secs(30), Duration::from_secs(30))
            .build(&addrs[..], move |_| Ok((RawCodec, Probe::silent(&tx))))
            .unwrap();
        assert_eq!(client.peer_addr(), addrs[0]);
        let client = Running::serve("fall-through-client", client);
        let _peer = accept_within(&listener, "the client reaches the live address");
        // Opened with the address it reached, in the first round (the redial is 30 s off).
        events.wait_open(live);
        client.stop();
    });
}

/// A server that accepts and closes every connection at once (overloaded, at its
/// connection limit, or hostile) is redialled with backoff: with the default backoff (100 ms
/// doubling to 5 s), the client dials it 3 to 6 times in 3 s. Such sessions are not failed
/// dials, so a limit of 2 does not end the client. Before, each ended session made the next
/// redial wait 50 to 100 ms, for ever: 30 to 60 dials in 3 s.
#[test]
fn a_client_backs_off_from_a_server_that_closes_every_connection_at_once() {
    use getty::codec::RawCodec;
    use getty::tcp::TcpClient;

    watchdog(TEST_LIMIT, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (tx, _events) = Events::new();
        let client = TcpClient::builder()
            .max_consecutive_failures(Some(2))
            .build(addr, move |_| Ok((RawCodec, Probe::silent(&tx))))
            .unwrap();
        let client = Running::serve("quick-close-client", client);
        let until = std::time::Instant::now() + Duration::from_secs(3);
        let mut dials = 0;
        while std::time::Instant::now() < until {
            match listener.accept() {
                Ok((stream, _)) => {
                    dials += 1;
                    drop(stream);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        client.stop();
        assert!((3..=6).contains(&dials), "{dials} dials in 3 s");
    });
}

/// The same over WebSocket, with the name the issue used: `ws://localhost:PORT` against a
/// server bound to 127.0.0.1 only.
#[cfg(feature = "ws")]
#[test]
fn a_websocket_client_of_localhost_reaches_a_server_on_127_0_0_1() {
    watchdog(TEST_LIMIT, || {
        let server = getty::ws::WsServer::builder()
            .route("/", |_| Ok((MessageCodec, Silent)))
            .bind("127.0.0.1:0")
            .unwrap();
        let port = server.local_addr().port();
        let server = Running::serve("ws-localhost-server", server);
        let (tx, mut events) = Events::new();
        let client = WsClient::builder()
            .build(&format!("ws://localhost:{port}/"), move |_| {
                Ok((MessageCodec, WsProbe { tx: tx.clone() }))
            })
            .unwrap();
        let client = Running::serve("ws-localhost-client", client);
        events.wait_open(SocketAddr::from(([127, 0, 0, 1], port)));
        client.stop();
        server.stop();
    });
}

/// A UDP client's first address refuses the probe (`ECONNREFUSED`); the client goes on to
/// the next one, whose peer gets the probe, and opens there. Before the fix it redialled
/// the first address forever.
#[test]
fn a_udp_client_falls_through_to_the_next_address() {
    use getty::codec::RawCodec;
    use getty::udp::{DatagramHandler, DatagramSession, UdpClient, DEFAULT_PROBE};

    struct Opened(Sender<SocketAddr>);
    impl DatagramHandler<RawCodec> for Opened {
        fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> std::io::Result<()> {
            let _ = self.0.send(s.peer_addr().expect("a connected session"));
            Ok(())
        }
        fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: Bytes, _: SocketAddr) {}
    }

    watchdog(TEST_LIMIT, || {
        let closed = {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap()
        };
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(STEP)).unwrap();
        let live = peer.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (dial_tx, dial_rx) = std::sync::mpsc::channel();
        let client = UdpClient::builder()
            .probe_wait(Duration::from_millis(300))
            .reconnect_backoff(Duration::from_secs(30), Duration::from_secs(30))
            .build(vec![closed, live], move |_| {
                Ok((RawCodec, Opened(tx.clone())))
            })
            .unwrap()
            .on_dial_error(move |addr, e| {
                let _ = dial_tx.send((addr, e.to_string()));
            });
        let client = Running::serve("udp-fall-through-client", client);
        let mut probe = [0u8; 64];
        let (n, _) = peer
            .recv_from(&mut probe)
            .expect("the probe reaches the live peer");
        assert_eq!(&probe[..n], DEFAULT_PROBE);
        assert_eq!(rx.recv_timeout(STEP).expect("the session opens"), live);
        let (failed, why) = dial_rx.recv_timeout(STEP).expect("the refused address");
        assert_eq!(failed, closed, "{why}");
        client.stop();
    });
}

/// A host name (here a resolver of the test's own, as a name whose records change) is
/// resolved again before every redial, on a thread that is not the reactor's: the first
/// resolution names a closed port, the later ones the live listener, and the client gets
/// there on a redial. Before the fix the client kept what it resolved when it was built.
#[test]
fn a_client_resolves_again_off_the_reactor_before_redialling() {
    use getty::codec::RawCodec;
    use getty::tcp::TcpClient;
    use getty::transports::DialTarget;
    use std::sync::{Arc, Mutex};

    watchdog(TEST_LIMIT, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let live = listener.local_addr().unwrap();
        let dead = dead_port();
        let threads = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = Arc::clone(&threads);
        let target = DialTarget::resolve_with("moving-record", move || {
            let mut seen = seen.lock().unwrap();
            let name = std::thread::current().name().unwrap_or("?").to_string();
            seen.push(name);
            Ok(vec![if seen.len() == 1 { dead } else { live }])
        });
        let (tx, mut events) = Events::new();
        let client = TcpClient::builder()
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
            .build(target, move |_| Ok((RawCodec, Probe::silent(&tx))))
            .unwrap();
        assert_eq!(client.peer_addr(), dead, "resolved when built");
        let client = Running::serve("re-resolving-client", client);
        let _peer = accept_within(&listener, "the client follows the new record");
        events.wait_open(live);
        client.stop();
        let threads = threads.lock().unwrap().clone();
        assert!(threads.len() >= 2, "{threads:?}");
        assert!(
            threads[1..].iter().all(|t| t == "getty-resolver"),
            "resolved again on {threads:?}, not off the reactor"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Item 18 (review): lookups with a deadline, on a shared resolver; rounds start where the
// last session opened
// ---------------------------------------------------------------------------------------

/// A loopback server that accepts and drops every connection (each client session ends at
/// once, so the client redials), until the returned flag is set or 30 s pass.
fn dropping_server() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let stopped = std::sync::Arc::clone(&stop);
    std::thread::spawn(move || {
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while !stopped.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            match listener.accept() {
                Ok((stream, _)) => drop(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    (addr, stop)
}

/// A resolver of the test's own: answers `addr` until `hang` is set, then blocks (a DNS
/// server that does not answer) until the returned sender is dropped, and counts the
/// lookups made while hanging.
struct Hanging {
    hang: std::sync::Arc<std::sync::atomic::AtomicBool>,
    hung_calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    release: std::sync::mpsc::Sender<()>,
}

fn hanging_target(addr: SocketAddr) -> (getty::transports::DialTarget, Hanging) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Mutex::new(released);
    let hanging = Hanging {
        hang: Arc::new(AtomicBool::new(false)),
        hung_calls: Arc::new(AtomicUsize::new(0)),
        release,
    };
    let (hang, calls) = (Arc::clone(&hanging.hang), Arc::clone(&hanging.hung_calls));
    let target = getty::transports::DialTarget::resolve_with("hanging-dns", move || {
        if hang.load(Ordering::SeqCst) {
            calls.fetch_add(1, Ordering::SeqCst);
            // Bounded: the test drops the sender when it ends.
            let _ = released
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
        }
        Ok(vec![addr])
    });
    (target, hanging)
}

/// Threads of this process named `prefix...` (from /proc/self/task/*/comm).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// A re-resolution that hangs (a DNS server that does not answer) holds a redial for the
/// lookup's deadline (the connect timeout) only: then the client dials the address it
/// has, which still works, and it keeps redialling without asking again while the lookup
/// is out. Before the fix the client waited for the answer forever and never redialled.
#[test]
fn a_hanging_re_resolution_delays_a_redial_by_its_deadline_only() {
    use getty::codec::RawCodec;
    use getty::tcp::TcpClient;
    use std::sync::atomic::Ordering;

    watchdog(TEST_LIMIT, || {
        let (live, stop) = dropping_server();
        let (target, hanging) = hanging_target(live);
        let (tx, mut events) = Events::new();
        let client = TcpClient::builder()
            .connect_timeout(Duration::from_millis(200))
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
            .build(target, move |_| Ok((RawCodec, Probe::silent(&tx))))
            .unwrap();
        hanging.hang.store(true, Ordering::SeqCst);
        let client = Running::serve("hung-lookup-client", client);
        events.wait_n("sessions opened past a hung lookup", 4, |e| {
            matches!(e, Ev::Open { .. })
        });
        // The one hung lookup is not asked for again while it is out.
        assert_eq!(hanging.hung_calls.load(Ordering::SeqCst), 1);
        client.stop();
        stop.store(true, Ordering::SeqCst);
        drop(hanging.release);
    });
}

/// The same for a UDP client (its lookup's deadline is the probe wait): each session
/// closes as it opens, and the client redials past the hung lookup. Before the fix it
/// opened once and never again.
#[test]
fn a_udp_client_redials_past_a_hanging_re_resolution() {
    use getty::codec::RawCodec;
    use getty::udp::{DatagramHandler, DatagramSession, UdpClient};
    use std::sync::atomic::Ordering;

    struct OpenAndClose(Sender<SocketAddr>);
    impl DatagramHandler<RawCodec> for OpenAndClose {
        fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> std::io::Result<()> {
            let _ = self.0.send(s.peer_addr().expect("a connected session"));
            s.close();
            Ok(())
        }
        fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: Bytes, _: SocketAddr) {}
    }

    watchdog(TEST_LIMIT, || {
        // A silent peer: every probe goes unanswered, so every dial succeeds.
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let live = peer.local_addr().unwrap();
        let (target, hanging) = hanging_target(live);
        let (tx, rx) = std::sync::mpsc::channel();
        let client = UdpClient::builder()
            .probe_wait(Duration::from_millis(100))
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
            .build(target, move |_| Ok((RawCodec, OpenAndClose(tx.clone()))))
            .unwrap();
        hanging.hang.store(true, Ordering::SeqCst);
        let client = Running::serve("udp-hung-lookup-client", client);
        for round in 0..3 {
            let opened = rx.recv_timeout(STEP);
            assert_eq!(opened, Ok(live), "session {round}");
        }
        assert_eq!(hanging.hung_calls.load(Ordering::SeqCst), 1);
        client.stop();
        drop(hanging.release);
    });
}

/// A resolver that panics is answered (the client dials the addresses it had) and its
/// panic is reported on the client's reactor, counted in `LoopMetrics::panics`. Before the
/// fix the panic killed the resolver thread unreported and the client never redialled.
#[test]
fn a_panicking_resolver_is_answered_and_counted_on_the_reactor() {
    use getty::codec::RawCodec;
    use getty::tcp::TcpClient;
    use getty::transports::DialTarget;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    watchdog(TEST_LIMIT, || {
        let (live, stop) = dropping_server();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let target = DialTarget::resolve_with("panicking-dns", move || {
            if counted.fetch_add(1, Ordering::SeqCst) > 0 {
                panic!("a resolver bug");
            }
            Ok(vec![live])
        });
        let (tx, mut events) = Events::new();
        let client = TcpClient::builder()
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
            .build(target, move |_| Ok((RawCodec, Probe::silent(&tx))))
            .unwrap();
        let client = Running::serve("panicking-lookup-client", client);
        events.wait_n("sessions opened past panicking lookups", 3, |e| {
            matches!(e, Ev::Open { .. })
        });
        assert!(
            calls.load(Ordering::SeqCst) >= 3,
            "resolved again each round"
        );
        let panics = client.run_on(|s| s.loop_metrics().panics);
        assert!(panics >= 2, "{panics} panics counted");
        client.stop();
        stop.store(true, Ordering::SeqCst);
    });
}

/// Forty clients of one target whose lookups hang: one lookup is made for all of them
/// (merged while in flight) on the shared resolver, which never runs more than 4 threads
/// in the process, and every client still redials past it. Before the fix every redial of
/// every client started a thread of its own, blocked in the lookup.
#[test]
fn many_clients_of_one_name_share_one_lookup_on_a_few_threads() {
    use getty::codec::RawCodec;
    use getty::tcp::TcpClient;
    use std::sync::atomic::Ordering;

    const CLIENTS: usize = 40;
    watchdog(TEST_LIMIT, || {
        let (live, stop) = dropping_server();
        let (target, hanging) = hanging_target(live);
        let (tx, mut events) = Events::new();
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let tx = tx.clone();
            let client = TcpClient::builder()
                .connect_timeout(Duration::from_millis(300))
                .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
                .build(target.clone(), move |_| Ok((RawCodec, Probe::silent(&tx))))
                .unwrap();
            clients.push(client);
        }
        hanging.hang.store(true, Ordering::SeqCst);
        let mut clients = clients.into_iter();
        let first = clients.next().expect("a client");
        let running = Running::serve("many-clients", first);
        running.run_on(move |s| {
            for client in clients {
                s.spawn(client);
            }
        });
        let mut most = 0;
        // Each client opens, loses its session, waits out the hung lookup and opens again.
        for opened in 1..=2 * CLIENTS {
            events.wait_n("sessions opened", opened, |e| matches!(e, Ev::Open { .. }));
            most = most.max(threads_named("getty-resolver"));
        }
        assert!(most <= 4, "{most} resolver threads");
        assert_eq!(hanging.hung_calls.load(Ordering::SeqCst), 1, "merged");
        running.stop();
        stop.store(true, Ordering::SeqCst);
        drop(hanging.release);
    });
}

/// A client of [A, B] where A refused and B answered: when A starts to answer too, the
/// next round still starts at B, where the last session opened (so a black-holed first
/// address costs its connect timeout once, not on every reconnect). Before the fix every
/// round started at A.
#[test]
fn a_round_starts_at_the_address_that_last_worked() {
    use getty::codec::RawCodec;
    use getty::tcp::TcpClient;

    watchdog(TEST_LIMIT, || {
        let first = dead_port();
        let second = TcpListener::bind("127.0.0.1:0").unwrap();
        let live = second.local_addr().unwrap();
        let (tx, mut events) = Events::new();
        let client = TcpClient::builder()
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
            .build(vec![first, live], move |_| {
                Ok((RawCodec, Probe::silent(&tx)))
            })
            .unwrap();
        let client = Running::serve("last-good-client", client);
        let peer = accept_within(&second, "the client falls through to the second address");
        events.wait_open(live);
        // The first address answers from now on; the session at the second ends.
        let revived = TcpListener::bind(first).expect("the first port again");
        revived.set_nonblocking(true).unwrap();
        drop(peer);
        let _again = accept_within(&second, "the client redials where it last opened");
        let opened = events.wait_n("the session reopens", 2, |e| matches!(e, Ev::Open { .. }));
        assert!(matches!(opened[1], Ev::Open { peer, .. } if peer == live));
        assert!(
            revived.accept().is_err(),
            "the first address was dialled first"
        );
        client.stop();
    });
}

/// Brackets, braces, pipes and carets in a query go out raw, as browsers and tungstenite
/// send them, and the request reaches the server. Before the fix the build refused them.
#[cfg(feature = "ws")]
#[test]
fn a_websocket_client_sends_brackets_and_braces_in_its_query_raw() {
    watchdog(TEST_LIMIT, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let target = "/feed?a[]=1&q={\"k\":1}&s=A|B&x=^";
        let client = WsClient::builder()
            .build(&format!("ws://{addr}{target}"), |_| {
                Ok((MessageCodec, Silent))
            })
            .unwrap();
        let client = Running::serve("ws-raw-query-client", client);
        let mut stream = accept_within(&listener, "the client dials");
        stream.set_read_timeout(Some(STEP)).unwrap();
        let request = read_head(&mut stream);
        assert!(
            request.starts_with(&format!("GET {target} HTTP/1.1\r\n")),
            "{request}"
        );
        client.stop();
    });
}
