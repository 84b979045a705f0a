//! The WebSocket `Protocol` fed arbitrary bytes as either role, with or without
//! permessage-deflate (every window size), with any message and frame limits, pongs
//! coalesced or not.
//!
//! Oracles:
//! - split invariance: the input fed in arbitrary pieces gives the same events and the same
//!   failure as fed whole (and, without pong coalescing, the same control frames; a
//!   compressed message both too big and corrupt may fail with 1009 or 1007);
//! - limits: no message is longer than `max_message_size` (the inflater's cap holds), a
//!   text message is UTF-8;
//! - replies: what the machine writes back decodes cleanly at the peer (the other role) as
//!   pongs echoing the pings in order (the latest, when coalescing), then at most one
//!   close: the echo of the peer's close code, or the code of the error that failed it.
#![no_main]

use arbitrary::Arbitrary;
use getty_codec::ws::{close_code, Config, Event, Protocol, Role};
use getty_codec::MessageKind;
use getty_fuzz::pieces;
use getty_fuzz::ws::{drive, Deflate, WsOutcome};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    server: bool,
    deflate: Option<Deflate>,
    max_message_size: u16,
    max_frame_size: u16,
    coalesce_pongs: bool,
    sizes: Vec<u8>,
    wire: Vec<u8>,
}

fn machine(input: &Input, role: Role) -> Protocol {
    let config = Config {
        max_message_size: usize::from(input.max_message_size),
        max_frame_size: usize::from(input.max_frame_size),
    };
    let mut p = Protocol::new(role, config, input.deflate.map(Deflate::config));
    p.coalesce_pongs(input.coalesce_pongs);
    p
}

/// What the peer reads in our replies: pong payloads, and the close code if any.
fn replies(role: Role, out: &WsOutcome) -> (Vec<Vec<u8>>, Option<u16>) {
    let peer_role = if role == Role::Server {
        Role::Client
    } else {
        Role::Server
    };
    let mut peer = Protocol::new(peer_role, Config::default(), None);
    let read = drive(&mut peer, &[&out.control_out[..]]);
    assert_eq!(read.error, None, "the peer cannot read our replies");
    let mut pongs = Vec::new();
    let mut close = None;
    for event in read.events {
        assert!(close.is_none(), "a frame after our close");
        match event {
            Event::Pong(p) => pongs.push(p.to_vec()),
            Event::Close(frame) => close = Some(frame.map_or(0, |f| f.code)),
            other => panic!("unexpected reply {other:?}"),
        }
    }
    (pongs, close)
}

fuzz_target!(|input: Input| {
    let role = if input.server {
        Role::Server
    } else {
        Role::Client
    };
    let whole = drive(&mut machine(&input, role), &[&input.wire[..]]);
    let split = drive(
        &mut machine(&input, role),
        &pieces(&input.wire, &input.sizes),
    );
    assert_eq!(whole.events, split.events, "split input gave other events");
    // A compressed message that is both over the limit and corrupt may be found out either
    // way first, depending on where the reads end: 1009 one way, 1007 the other.
    let either = [Some(close_code::TOO_BIG), Some(close_code::INVALID_PAYLOAD)];
    assert!(
        whole.error == split.error
            || (either.contains(&whole.error) && either.contains(&split.error)),
        "split input failed otherwise: {:?} whole, {:?} split",
        whole.error,
        split.error
    );
    if role == Role::Server && !input.coalesce_pongs && whole.error == split.error {
        assert_eq!(
            whole.control_out, split.control_out,
            "split input: other replies"
        );
    }

    let mut pings = Vec::new();
    let mut received_close = None;
    for event in &whole.events {
        assert!(received_close.is_none(), "an event after the close");
        match event {
            Event::Message { kind, payload } => {
                assert!(payload.len() <= usize::from(input.max_message_size));
                if *kind == MessageKind::Text {
                    assert!(
                        std::str::from_utf8(payload).is_ok(),
                        "text that is not UTF-8"
                    );
                }
            }
            Event::Ping(p) => pings.push(p.to_vec()),
            Event::Pong(_) => {}
            Event::Close(frame) => {
                received_close = Some(frame.as_ref().map_or(close_code::NORMAL, |f| f.code))
            }
        }
    }

    for out in [&whole, &split] {
        let (pongs, close) = replies(role, out);
        if input.coalesce_pongs {
            // Each pong answers a ping, in order; the last ping is answered unless the
            // connection failed.
            let mut rest = pings.iter();
            for pong in &pongs {
                assert!(rest.any(|p| p == pong), "a pong that answers no ping");
            }
            if out.error.is_none() {
                assert_eq!(pongs.last(), pings.last(), "the latest ping is unanswered");
            }
        } else {
            assert_eq!(pongs, pings, "pongs do not echo the pings");
        }
        match (received_close, out.error) {
            (Some(code), None) => assert_eq!(close, Some(code), "the close was not echoed"),
            (None, Some(code)) => {
                let expected = if close_code::is_valid(code) {
                    code
                } else {
                    close_code::PROTOCOL_ERROR
                };
                assert_eq!(close, Some(expected), "the failure's close frame is wrong");
            }
            (None, None) => assert_eq!(close, None, "a close nobody asked for"),
            (Some(_), Some(_)) => panic!("an error after the close"),
        }
    }
});
