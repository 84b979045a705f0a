//! One meaning of `max_message_len` on every transport: the message the handler gets (the
//! payload, after the codec strips its length header or line terminator), tested at the
//! boundary over real sockets. The largest message is accepted; one byte more is refused,
//! against the session's limit, as soon as its length is known.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use common::*;
use getty::codec::{Bytes, CodecErrorKind, LengthFieldCodec, LinesCodec, RawCodec};
use getty::tcp::TcpServer;
use getty::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
#[cfg(feature = "ws")]
use getty::ws::WsServer;
use getty::{Error, SessionOptions};
#[cfg(feature = "ws")]
use tungstenite::protocol::frame::coding::CloseCode;
#[cfg(feature = "ws")]
use tungstenite::Message as TMessage;

const TEST_LIMIT: Duration = Duration::from_secs(120);
const MIB: usize = 1 << 20;

fn length_server(options: SessionOptions, tx: &Sender<Ev>) -> (Running, SocketAddr) {
    let tx = tx.clone();
    let server = TcpServer::builder()
        .session_options(options)
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), Probe::echo(&tx)))
        })
        .expect("bind");
    let addr = server.local_addr();
    (Running::serve("limits-length", server), addr)
}

/// Sends `wire` on a new connection and waits for the session it opened to end; returns
/// its errors.
fn refused(addr: SocketAddr, events: &mut Events, wire: &[u8]) -> Vec<ErrKind> {
    let mut peer = connect(addr);
    let sid = events.wait_open(peer.local_addr().unwrap());
    peer.write_all(wire).unwrap();
    // How it closes (FIN or reset) is not what this file is about.
    let _ = read_to_end(&mut peer);
    events.wait_close(sid);
    assert_eq!(
        events.count(|e| matches!(e, Ev::Msg { sid: s, .. } if *s == sid)),
        0,
        "nothing of a refused message reaches the handler"
    );
    events.errors_of(sid)
}

/// The figures: with the default 1 MiB limit, a 1,048,576-byte payload is echoed
/// (it was refused: the 4-byte header counted), 1,048,577 is refused from its header, and a
/// 0xFFFFFFFF header is reported against the session's 1 MiB (it was the codec's 8 MiB).
#[test]
fn tcp_length_field_limit_is_the_payload() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut events) = Events::new();
        let (server, addr) = length_server(SessionOptions::default(), &tx);

        let mut good = connect(addr);
        let largest: Vec<u8> = (0..MIB).map(|i| i as u8).collect();
        echo_roundtrip(&mut good, &largest);

        let over = refused(addr, &mut events, &((MIB + 1) as u32).to_be_bytes());
        assert_eq!(
            over,
            [ErrKind::MessageTooLong {
                len: MIB + 1,
                max: MIB
            }]
        );
        let huge = refused(addr, &mut events, b"\xff\xff\xff\xff");
        assert_eq!(
            huge,
            [ErrKind::MessageTooLong {
                len: 0xFFFF_FFFF,
                max: MIB
            }]
        );

        echo_roundtrip(&mut good, b"still here");
        drop(good);
        server.stop();
        events.check_contract();
    });
}

/// A session limit above the length codec's built-in 8 MiB governs: a 9 MiB message is
/// echoed (the codec's own safety limit is for the codec used on its own).
#[test]
fn tcp_session_limit_above_the_codecs_built_in_one_governs() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut events) = Events::new();
        let options = SessionOptions::default()
            .max_message_len(16 * MIB)
            .max_outbound(32 * MIB);
        let (server, addr) = length_server(options, &tx);
        let mut peer = connect(addr);
        let big = vec![0x5a; 9 * MIB];
        let writer = {
            let mut w = peer.try_clone().unwrap();
            let wire = frame(&big);
            std::thread::spawn(move || w.write_all(&wire).unwrap())
        };
        assert!(read_frame(&mut peer) == big, "the 9 MiB echo differs");
        writer.join().unwrap();
        drop(peer);
        server.stop();
        events.check_contract();
        assert_eq!(events.count(|e| matches!(e, Ev::Error { .. })), 0);
    });
}

/// Lines: the limit counts the line without its terminator (`\n` or `\r\n`).
#[test]
fn tcp_lines_limit_is_the_line() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let max = 1000;
        let (tx, mut events) = Events::new();
        let server = {
            let tx = tx.clone();
            TcpServer::builder()
                .session_options(SessionOptions::default().max_message_len(max))
                .bind("127.0.0.1:0", move |_| {
                    Ok((LinesCodec::default(), Probe::echo(&tx)))
                })
                .unwrap()
        };
        let addr = server.local_addr();
        let running = Running::serve("limits-lines", server);

        let good = connect(addr);
        let mut reader = BufReader::new(good.try_clone().unwrap());
        let mut writer = good;
        for terminator in ["\n", "\r\n"] {
            let line = "l".repeat(max);
            writer
                .write_all(format!("{line}{terminator}").as_bytes())
                .unwrap();
            let mut echoed = String::new();
            reader.read_line(&mut echoed).unwrap();
            assert_eq!(echoed, format!("{line}\n"));
        }
        for terminator in ["\n", "\r\n"] {
            let line = "o".repeat(max + 1);
            let errors = refused(addr, &mut events, format!("{line}{terminator}").as_bytes());
            assert_eq!(errors, [ErrKind::MessageTooLong { len: max + 1, max }]);
        }
        // No terminator in sight: refused once max + 1 bytes of line are buffered.
        let errors = refused(addr, &mut events, "u".repeat(3 * max).as_bytes());
        assert!(
            matches!(errors[..], [ErrKind::MessageTooLong { len, max: m }] if len > max && m == max),
            "{errors:?}"
        );
        drop((reader, writer));
        running.stop();
        events.check_contract();
    });
}

/// WebSocket counts the payload: the largest message is echoed, one byte more fails the
/// session with `MessageTooLong` against the session's limit (and close code 1009).
#[test]
#[cfg(feature = "ws")]
fn websocket_limit_is_the_payload() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let max = 64 * 1024;
        let (tx, mut events) = Events::new();
        let server = {
            let tx = tx.clone();
            WsServer::builder()
                .session_options(SessionOptions::default().max_message_len(max))
                .route("/", move |_| Ok((RawCodec, Probe::echo(&tx))))
                .bind("127.0.0.1:0")
                .unwrap()
        };
        let addr = server.local_addr();
        let running = Running::serve("limits-ws", server);

        let (mut ws, _) =
            tungstenite::client::client(format!("ws://{addr}/"), connect(addr)).unwrap();
        let largest: Vec<u8> = (0..max).map(|i| (i * 7) as u8).collect();
        ws.send(TMessage::binary(largest.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), TMessage::binary(largest));

        ws.send(TMessage::binary(vec![1u8; max + 1])).unwrap();
        let close = match ws.read() {
            Ok(TMessage::Close(frame)) => frame,
            Ok(other) => panic!("expected a close, got {other:?}"),
            Err(e) => panic!("expected a close frame: {e}"),
        };
        assert_eq!(close.map(|f| f.code), Some(CloseCode::Size));
        let sid = events
            .wait("the close", |e| matches!(e, Ev::Close { .. }))
            .sid();
        let errors = events.errors_of(sid);
        assert!(
            matches!(&errors[..], [ErrKind::MessageTooLong { len, max: m }] if *len == max + 1 && *m == max),
            "{errors:?}"
        );
        assert_eq!(
            events.count(|e| matches!(e, Ev::Msg { msg, .. } if msg.len() > max)),
            0
        );
        running.stop();
    });
}

/// Records what a datagram endpoint receives and the errors it reports.
struct DatagramProbe {
    messages: Sender<usize>,
    errors: Sender<ErrKind>,
}

impl DatagramHandler<RawCodec> for DatagramProbe {
    fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, msg: Bytes, _: SocketAddr) {
        let _ = self.messages.send(msg.len());
    }

    fn on_error(&mut self, _: &mut DatagramSession<RawCodec>, error: &Error) {
        let _ = self.errors.send(classify(error));
    }
}

/// UDP: the limit is a datagram's payload.
#[test]
fn udp_limit_is_the_datagram_payload() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let max = 1200;
        let (messages_tx, messages) = mpsc::channel();
        let (errors_tx, errors) = mpsc::channel();
        let endpoint = UdpEndpoint::builder()
            .session_options(SessionOptions::default().max_message_len(max))
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    RawCodec,
                    DatagramProbe {
                        messages: messages_tx.clone(),
                        errors: errors_tx.clone(),
                    },
                ))
            })
            .unwrap();
        let addr = endpoint.local_addr();
        let running = Running::serve("limits-udp", endpoint);

        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(&vec![1u8; max], addr).unwrap();
        assert_eq!(messages.recv_timeout(STEP).unwrap(), max);
        peer.send_to(&vec![2u8; max + 1], addr).unwrap();
        assert_eq!(
            errors.recv_timeout(STEP).unwrap(),
            ErrKind::MessageTooLong { len: max + 1, max }
        );
        peer.send_to(b"after", addr).unwrap();
        assert_eq!(messages.recv_timeout(STEP).unwrap(), 5);
        running.stop();
        assert!(
            messages.try_recv().is_err(),
            "the oversized datagram arrived"
        );
    });
}

/// Unix streams share the TCP session: the length codec's limit is the payload there too.
#[cfg(target_os = "linux")]
#[test]
fn unix_stream_limit_is_the_payload() {
    use getty::unix::UnixServer;
    use getty::{Handler, Session, Unix, UnixAddr};
    use std::os::unix::net::UnixStream;

    struct Echo(Sender<ErrKind>);
    impl Handler<LengthFieldCodec, Unix> for Echo {
        fn on_message(&mut self, s: &mut Session<LengthFieldCodec, Unix>, msg: Bytes) {
            s.write(msg).unwrap();
        }
        fn on_error(&mut self, _: &mut Session<LengthFieldCodec, Unix>, error: &Error) {
            let _ = self.0.send(classify(error));
        }
    }

    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let max = 100_000;
        let path =
            std::env::temp_dir().join(format!("getty-test-{}-limits.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let (errors_tx, errors) = mpsc::channel();
        let server = UnixServer::builder()
            .session_options(SessionOptions::default().max_message_len(max))
            .bind(UnixAddr::path(&path), move |_| {
                Ok((LengthFieldCodec::default(), Echo(errors_tx.clone())))
            })
            .unwrap();
        let running = Running::serve("limits-unix", server);

        let mut good = UnixStream::connect(&path).unwrap();
        good.set_read_timeout(Some(STEP)).unwrap();
        let largest = vec![3u8; max];
        good.write_all(&frame(&largest)).unwrap();
        assert!(read_frame(&mut good) == largest, "the echo differs");

        let mut bad = UnixStream::connect(&path).unwrap();
        bad.set_read_timeout(Some(STEP)).unwrap();
        bad.write_all(&((max + 1) as u32).to_be_bytes()).unwrap();
        assert_eq!(
            errors.recv_timeout(STEP).unwrap(),
            ErrKind::MessageTooLong { len: max + 1, max }
        );
        let mut rest = Vec::new();
        bad.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        running.stop();
        assert!(errors.try_recv().is_err());
        let _ = std::fs::remove_file(&path);
    });
}

/// The codec's own limit still applies where it says so: a `LinesCodec`'s line length below
/// the session's limit refuses with the codec's error.
#[test]
fn a_lines_codecs_own_smaller_limit_applies_in_a_session() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut events) = Events::new();
        let server = {
            let tx = tx.clone();
            TcpServer::bind("127.0.0.1:0", move |_| {
                Ok((LinesCodec::new(10), Probe::echo(&tx)))
            })
            .unwrap()
        };
        let addr = server.local_addr();
        let running = Running::serve("limits-lines-own", server);
        let errors = refused(addr, &mut events, b"01234567890\n");
        assert_eq!(errors, [ErrKind::Codec(CodecErrorKind::FrameTooLong)]);
        let mut ok = connect(addr);
        ok.write_all(b"0123456789\n").unwrap();
        let mut line = String::new();
        BufReader::new(&mut ok as &mut TcpStream)
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "0123456789\n");
        running.stop();
    });
}
