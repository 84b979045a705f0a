//! Two WebSocket `Protocol`s, one per role, talking: one end sends a script of messages,
//! pings, pongs and a close (framing each message one of the three ways the transports do:
//! in place, into a reserved header, or header only; some messages framed and then taken
//! back), the other reads the bytes in arbitrary pieces. permessage-deflate, when on, is
//! negotiated from each end's settings (every window size, level and threshold).
//!
//! Oracles:
//! - negotiation: our client's offer is acceptable to our server, and both ends agree on
//!   the same parameters;
//! - delivery: the reader gets exactly what was sent, in order (a retracted message never
//!   arrives, and later compressed messages still inflate right), until the first message
//!   over its `max_message_size`, which fails with close code 1009;
//! - the sender refuses exactly what it must (control payloads over 125 bytes, invalid
//!   close codes or reasons, anything after its close), leaving its buffer as it was;
//! - the close handshake: the reader echoes the sender's close code and the pongs for the
//!   pings; once the sender reads that, both ends are closed.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use getty_codec::ws::{close_code, CloseFrame, Config, DeflateConfig, Event, Protocol, Role};
use getty_codec::MessageKind;
use getty_fuzz::pieces;
use getty_fuzz::ws::{drive, Deflate};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Text(String, u8),
    Binary(Vec<u8>, u8),
    Retracted(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    client_sends: bool,
    /// Each end's settings: (client, server).
    deflate: Option<(Deflate, Deflate)>,
    max_message_size: u16,
    sizes: Vec<u8>,
    ops: Vec<Op>,
}

/// Runs the handshake's negotiation: (client's agreed settings, server's).
fn negotiate(client: DeflateConfig, server: DeflateConfig) -> (DeflateConfig, DeflateConfig) {
    let offer = client.offer();
    let (server_agreed, response) = server
        .accept_offer([offer.as_str()])
        .unwrap_or_else(|| panic!("our server refused our offer {offer:?}"));
    let client_agreed = client
        .accept_response(&response)
        .unwrap_or_else(|e| panic!("our client refused our answer {response:?}: {e}"));
    let negotiated = |d: DeflateConfig| {
        (
            d.server_no_context_takeover,
            d.client_no_context_takeover,
            d.server_max_window_bits,
            d.client_max_window_bits,
        )
    };
    assert_eq!(
        negotiated(client_agreed),
        negotiated(server_agreed),
        "{response:?}"
    );
    (client_agreed, server_agreed)
}

/// Frames `payload` as a data message in one of the transports' three ways.
fn send_message(
    sender: &mut Protocol,
    kind: MessageKind,
    payload: &[u8],
    how: u8,
    wire: &mut BytesMut,
) -> bool {
    let start = wire.len();
    let sent = match how % 3 {
        0 => {
            wire.extend_from_slice(payload);
            sender.encode_message(kind, wire, start).is_ok()
        }
        1 => {
            let room = sender.reserve_header(wire);
            wire.extend_from_slice(payload);
            sender.encode_reserved(kind, wire, room).is_ok()
        }
        _ => match sender.put_plain_header(kind, payload.len(), wire) {
            Ok(true) => {
                wire.extend_from_slice(payload);
                true
            }
            Ok(false) => {
                assert_eq!(wire.len(), start, "no header, yet bytes were written");
                wire.extend_from_slice(payload);
                sender.encode_message(kind, wire, start).is_ok()
            }
            Err(_) => false,
        },
    };
    if !sent {
        wire.truncate(start);
    }
    sent
}

fuzz_target!(|input: Input| {
    let (client_deflate, server_deflate) = match input.deflate {
        Some((c, s)) => {
            let (c, s) = negotiate(c.config(), s.config());
            (Some(c), Some(s))
        }
        None => (None, None),
    };
    let mut client = Protocol::new(Role::Client, Config::default(), client_deflate);
    let reader_config = Config {
        max_message_size: usize::from(input.max_message_size),
        ..Config::default()
    };
    let mut server = Protocol::new(Role::Server, reader_config, server_deflate);
    let (sender, reader) = if input.client_sends {
        (&mut client, &mut server)
    } else {
        server = Protocol::new(Role::Server, Config::default(), server_deflate);
        client = Protocol::new(Role::Client, reader_config, client_deflate);
        (&mut server, &mut client)
    };

    // The sender's script, and what the reader should see.
    let mut wire = BytesMut::new();
    let mut expected = Vec::new();
    let mut pings = Vec::new();
    for op in &input.ops {
        let closed = sender.close_sent();
        let before = wire.len();
        match op {
            Op::Text(text, how) => {
                let sent =
                    send_message(sender, MessageKind::Text, text.as_bytes(), *how, &mut wire);
                assert_eq!(
                    sent, !closed,
                    "text message refused while open, or sent after close"
                );
                if sent {
                    expected.push(Event::Message {
                        kind: MessageKind::Text,
                        payload: text.as_bytes().into(),
                    });
                }
            }
            Op::Binary(data, how) => {
                let sent = send_message(sender, MessageKind::Binary, data, *how, &mut wire);
                assert_eq!(
                    sent, !closed,
                    "binary message refused while open, or sent after close"
                );
                if sent {
                    expected.push(Event::Message {
                        kind: MessageKind::Binary,
                        payload: data[..].into(),
                    });
                }
            }
            Op::Retracted(data) => {
                if send_message(sender, MessageKind::Binary, data, 0, &mut wire) {
                    wire.truncate(before);
                    let dropped = sender.retract_last_message();
                    assert!(!dropped || sender.deflate().is_some());
                }
            }
            Op::Ping(p) | Op::Pong(p) => {
                let result = match op {
                    Op::Ping(_) => sender.ping(p, &mut wire),
                    _ => sender.pong(p, &mut wire),
                };
                assert_eq!(
                    result.is_ok(),
                    !closed && p.len() <= 125,
                    "control frame of {}",
                    p.len()
                );
                if result.is_ok() {
                    let payload = p[..].to_vec().into();
                    expected.push(match op {
                        Op::Ping(_) => Event::Ping(payload),
                        _ => Event::Pong(payload),
                    });
                    if matches!(op, Op::Ping(_)) {
                        pings.push(p.clone());
                    }
                }
            }
            Op::Close(code, reason) => {
                let result = sender.close(*code, reason, &mut wire);
                let valid = close_code::is_valid(*code) && reason.len() <= 123;
                match result {
                    Ok(true) => {
                        assert!(valid && !closed);
                        let frame = CloseFrame {
                            code: *code,
                            reason: reason.clone(),
                        };
                        expected.push(Event::Close(Some(frame)));
                    }
                    Ok(false) => assert!(closed),
                    Err(_) => assert!(!valid && !closed),
                }
            }
        }
        if wire.len() != before {
            assert!(!closed, "bytes after the close frame");
        }
    }

    // The reader reads the bytes as they come.
    let read = drive(reader, &pieces(&wire, &input.sizes));
    let max = usize::from(input.max_message_size);
    let too_big = expected
        .iter()
        .position(|e| matches!(e, Event::Message { payload, .. } if payload.len() > max));
    match too_big {
        Some(i) => {
            assert_eq!(
                read.error,
                Some(close_code::TOO_BIG),
                "message {i} is over the limit"
            );
            assert_eq!(
                read.events,
                expected[..i],
                "what came before the big message"
            );
            return;
        }
        None => {
            assert_eq!(read.error, None);
            assert_eq!(read.events, expected, "the reader got something else");
        }
    }

    // The reader's replies go back: pongs, then the close echo.
    let back = drive(sender, &[&read.control_out[..]]);
    assert_eq!(back.error, None, "the sender cannot read the replies");
    let mut replies = Vec::new();
    for ping in pings {
        replies.push(Event::Pong(ping.into()));
    }
    if let Some(Event::Close(Some(frame))) = expected.last() {
        replies.push(Event::Close(Some(CloseFrame {
            code: frame.code,
            reason: String::new(),
        })));
        assert!(
            reader.is_closed() && sender.is_closed(),
            "the close handshake did not finish"
        );
    } else {
        assert!(!reader.is_closed() && !sender.is_closed());
    }
    assert_eq!(back.events, replies, "the replies are wrong");
});
