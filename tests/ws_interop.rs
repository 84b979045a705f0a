//! WebSocket interop with an implementation no one here wrote: the Python `websockets`
//! package (installed into `target/interop-venv` by `tests/interop/install.sh`), as a client
//! of the getty-rs server and as a server for the getty-rs client, with and without
//! permessage-deflate.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use common::*;
use getty::codec::ws::DeflateConfig;
use getty::codec::{Message, MessageCodec};
use getty::ws::{Ws, WsClient, WsServer};
use getty::{Handler, Session};

const TEST_LIMIT: Duration = Duration::from_secs(120);

/// Echoes every message with its kind; on close, reports the session's wire bytes in, the
/// message bytes in, and the agreed compression.
struct Recorder {
    tx: Sender<(u64, usize, bool)>,
    payload_in: usize,
}

impl Handler<MessageCodec, Ws> for Recorder {
    fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
        self.payload_in += msg.payload().len();
        s.write(msg).unwrap();
    }
    fn on_close(&mut self, s: &mut Session<MessageCodec, Ws>) {
        let deflate = s.deflate().is_some();
        let _ = self.tx.send((s.stats().bytes_in, self.payload_in, deflate));
    }
}

fn python_client_against_getty(compress: bool) {
    let (tx, rx) = mpsc::channel();
    let server = WsServer::builder()
        .deflate(compress.then(DeflateConfig::default))
        .route("/", move |_| {
            Ok((
                MessageCodec,
                Recorder {
                    tx: tx.clone(),
                    payload_in: 0,
                },
            ))
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let server = Running::serve("ws-interop-server", server);
    let mut command = Command::new(interop_python());
    command.arg(ws_peer_script()).arg("client").arg(&url);
    if compress {
        command.arg("--compress");
    }
    let child = command.stdout(Stdio::piped()).spawn().unwrap();
    let out = finish_child(Reaped(child), TEST_LIMIT / 2);
    assert!(out.starts_with("OK 57 "), "{out}");
    let (wire_in, payload_in, deflate) = rx.recv_timeout(STEP).unwrap();
    assert_eq!(deflate, compress);
    if compress {
        assert!(out.contains("permessage-deflate"), "{out}");
        // The messages are mostly repetitive: compressed, they cross the wire much smaller.
        assert!(
            wire_in * 4 < payload_in as u64,
            "{wire_in} wire bytes for {payload_in} bytes of messages"
        );
    } else {
        assert!(wire_in > payload_in as u64);
    }
    server.stop();
}

#[test]
fn a_python_websockets_client_talks_to_the_getty_server() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        python_client_against_getty(false);
    });
}

#[cfg(feature = "deflate")]
#[test]
fn a_compressing_python_websockets_client_talks_to_the_getty_server() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        python_client_against_getty(true);
    });
}

/// Sends a fixed set of messages once open and checks the echoes in order.
struct Checker {
    sent: Vec<Message>,
    next: usize,
    tx: Sender<Result<bool, String>>,
}

fn checker_messages() -> Vec<Message> {
    let mut out = vec![
        Message::text(""),
        Message::text("héllo wörld ✓"),
        Message::text("json ".repeat(10_000)),
        Message::binary(vec![0u8; 100_000]),
    ];
    out.push(Message::binary(
        (0..200_000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<u8>>(),
    ));
    out
}

impl Handler<MessageCodec, Ws> for Checker {
    fn on_open(&mut self, s: &mut Session<MessageCodec, Ws>) -> std::io::Result<()> {
        for m in &self.sent {
            s.write(m).map_err(std::io::Error::from)?;
        }
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
        if self.sent.get(self.next) != Some(&msg) {
            let _ = self.tx.send(Err(format!("echo {} differs", self.next)));
            s.close();
            return;
        }
        self.next += 1;
        if self.next == self.sent.len() {
            let _ = self.tx.send(Ok(s.deflate().is_some()));
            s.close();
        }
    }
    fn on_error(&mut self, _: &mut Session<MessageCodec, Ws>, error: &getty::Error) {
        let _ = self.tx.send(Err(error.to_string()));
    }
}

fn getty_client_against_python(compress: bool) {
    let mut command = Command::new(interop_python());
    command.arg(ws_peer_script()).arg("server");
    if compress {
        command.arg("--compress");
    }
    let mut peer = Reaped(
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(peer.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the python server said {line:?}"));

    let (tx, rx) = mpsc::channel();
    let client = WsClient::builder()
        .deflate(compress.then(DeflateConfig::default))
        .max_consecutive_failures(Some(1))
        .build(&format!("ws://127.0.0.1:{port}/"), move |_| {
            Ok((
                MessageCodec,
                Checker {
                    sent: checker_messages(),
                    next: 0,
                    tx: tx.clone(),
                },
            ))
        })
        .unwrap();
    let client = Running::serve("ws-interop-client", client);
    let negotiated = rx.recv_timeout(STEP).unwrap().unwrap();
    assert_eq!(negotiated, compress);
    client.stop();
    // Closing its stdin stops the python server.
    let _ = peer.0.stdin.take().map(|mut stdin| stdin.flush());
    let _ = finish_child(peer, STEP);
}

#[test]
fn the_getty_client_talks_to_a_python_websockets_server() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        getty_client_against_python(false);
    });
}

#[cfg(feature = "deflate")]
#[test]
fn the_compressing_getty_client_talks_to_a_python_websockets_server() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        getty_client_against_python(true);
    });
}
