//! Clients and handshakes over loopback (issue 12, items 17, 18, 19, 21 and 22): an EOF
//! that arrives with the `101`, every resolved address tried in turn, the upgrade request
//! refusing what would inject headers, the handshake's leniencies, TLS server names and
//! text messages checked before anything is dialled or sent.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::Sender;
use std::time::Duration;

use common::*;
use getty::codec::ws::{InvalidRequest, RequestPart};
use getty::codec::{Message, MessageCodec};
use getty::ws::WsClient;
use getty::{Error, Handler, Session};

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// A WebSocket client handler that reports every callback (a message as its payload).
struct WsProbe {
    tx: Sender<Ev>,
}

impl Handler<MessageCodec> for WsProbe {
    fn on_open(&mut self, s: &mut Session<MessageCodec>) -> std::io::Result<()> {
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<MessageCodec>, msg: Message) {
        let _ = self.tx.send(Ev::Msg {
            sid: s.id(),
            msg: msg.into_payload(),
        });
    }

    fn on_error(&mut self, s: &mut Session<MessageCodec>, error: &Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }

    fn on_close(&mut self, s: &mut Session<MessageCodec>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

/// Reads an HTTP head (to the blank line) byte by byte, so nothing past it is taken.
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
fn head_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The `101` that answers `request` (a client's upgrade head).
fn switching_protocols(request: &str) -> String {
    let key = head_value(request, "Sec-WebSocket-Key").expect("a key");
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

// ---------------------------------------------------------------------------------------
// Item 17: an EOF that comes with the 101
// ---------------------------------------------------------------------------------------

/// A server that answers the upgrade, sends one text frame and closes, all in one write:
/// the client reads the `101`, the frame and the EOF in one go. It must deliver the frame,
/// end the session (`on_close`) and redial. Before the fix the EOF was noted and dropped:
/// the session stayed open with no `on_close`, and the client never redialled (seen in
/// most rounds, so several rounds make the test fail reliably).
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

// ---------------------------------------------------------------------------------------
// Item 19: no header injection through the upgrade request
// ---------------------------------------------------------------------------------------

/// Why `build` refused, if it refused with the codec's typed error.
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
                format!("{base}/%zz"),
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
        let (mut stream, _) = listener.accept().unwrap();
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
struct Silent;

impl Handler<MessageCodec> for Silent {
    fn on_message(&mut self, _: &mut Session<MessageCodec>, _: Message) {}
}
