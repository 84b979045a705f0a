//! Review of the WebSocket fast path (`Protocol::decode_in_place`): hostile frame
//! sequences decoded from one buffer (whole frames take the fast path) must give exactly
//! what the same bytes give fed one at a time and at random cuts (where the general,
//! tungstenite-parsed path decides): the same events, the same control output, the same
//! error and close code.

use bytes::BytesMut;
use getty_codec::ws::{apply_mask, Config, DeflateConfig, Event, Protocol, Role};

/// What a machine made of an input: its events, its control output, and the close code of
/// the error that ended it (if any).
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Event>,
    /// The control frames written, as the peer decodes them (a client's are masked with
    /// random keys, so its bytes differ from run to run).
    control: Vec<Event>,
    error: Option<u16>,
}

/// The frames `control` holds, decoded by the peer of `role`.
fn control_frames(role: Role, control: &[u8]) -> Vec<Event> {
    let peer = if role == Role::Server {
        Role::Client
    } else {
        Role::Server
    };
    let mut p = Protocol::new(peer, Config::default(), None);
    let mut buf = BytesMut::from(control);
    let mut out = BytesMut::new();
    let mut events = Vec::new();
    for _ in 0..=control.len() {
        match p.decode(&mut buf, &mut out) {
            Ok(Some(e)) => events.push(e),
            Ok(None) => break,
            Err(e) => panic!("the machine wrote a bad control frame: {e}"),
        }
    }
    assert!(buf.is_empty(), "a partial control frame: {buf:02x?}");
    events
}

fn machine(role: Role, deflate: bool) -> Protocol {
    let config = Config {
        max_message_size: 300,
        max_frame_size: 200,
    };
    Protocol::new(role, config, deflate.then(DeflateConfig::default))
}

/// Decodes `input` fed in pieces of the given lengths (the rest in one piece at the end).
fn run(role: Role, deflate: bool, input: &[u8], cuts: &[usize]) -> Outcome {
    let mut p = machine(role, deflate);
    let mut buf = BytesMut::new();
    let mut control = BytesMut::new();
    let mut events = Vec::new();
    let mut at = 0;
    let mut pieces: Vec<usize> = cuts.to_vec();
    pieces.push(input.len());
    for piece in pieces {
        let end = (at + piece).min(input.len());
        buf.extend_from_slice(&input[at..end]);
        at = end;
        // Bounded: every event consumes at least one byte.
        for _ in 0..=input.len() + 1 {
            match p.decode(&mut buf, &mut control) {
                Ok(Some(e)) => events.push(e),
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        events,
                        control: control_frames(role, &control),
                        error: Some(e.close_code()),
                    }
                }
            }
        }
    }
    Outcome {
        events,
        control: control_frames(role, &control),
        error: None,
    }
}

/// One frame as a hostile peer may write it.
fn frame(rng: &mut fastrand::Rng, role: Role) -> Vec<u8> {
    let opcode = *rng.choice(&[0u8, 1, 1, 2, 2, 2, 3, 8, 9, 10, 0xb]).unwrap();
    let fin = rng.u8(..) % 5 != 0;
    let rsv = match rng.u8(..10) {
        0 => 0x40,
        1 => 0x20,
        2 => 0x10,
        _ => 0,
    };
    let len = match rng.u8(..10) {
        0 => 0,
        1..=5 => rng.usize(..130),
        6 | 7 => rng.usize(120..260),
        _ => rng.usize(260..400),
    };
    let mut payload: Vec<u8> = match rng.u8(..4) {
        // ASCII, and UTF-8 with multi-byte code points (a cut may split one).
        0 => (0..len).map(|_| rng.u8(b'a'..=b'z')).collect(),
        1 => "añ€😀".repeat(len / 10 + 1).into_bytes()[..len].to_vec(),
        _ => (0..len).map(|_| rng.u8(..)).collect(),
    };
    if opcode == 8 && len >= 2 && rng.bool() {
        let code = *rng
            .choice(&[1000u16, 1005, 1006, 999, 1016, 2999, 3000, 4999, 5000])
            .unwrap();
        payload[..2].copy_from_slice(&code.to_be_bytes());
    }
    let correct_mask = role == Role::Server;
    let masked = if rng.u8(..20) == 0 {
        !correct_mask
    } else {
        correct_mask
    };
    let mut out = vec![u8::from(fin) << 7 | rsv | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    // The length field: minimal or not, at random.
    match (len, rng.u8(..6)) {
        (0..=125, 0) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (_, 1) => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        (0..=125, _) => out.push(mask_bit | len as u8),
        _ => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    if masked {
        let key = rng.u32(..).to_ne_bytes();
        out.extend_from_slice(&key);
        apply_mask(&mut payload, key, 0);
    }
    out.extend_from_slice(&payload);
    out
}

#[test]
fn whole_frames_decode_as_the_general_path_decodes_them() {
    let seed = std::env::var("WS_FAST_PATH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = fastrand::Rng::with_seed(seed);
    for case in 0..3000 {
        let role = if rng.bool() {
            Role::Server
        } else {
            Role::Client
        };
        let deflate = rng.u8(..4) == 0;
        let frames = rng.usize(1..6);
        let input: Vec<u8> = (0..frames).flat_map(|_| frame(&mut rng, role)).collect();
        let whole = run(role, deflate, &input, &[]);
        let bytewise = run(role, deflate, &input, &vec![1; input.len()]);
        let cuts: Vec<usize> = (0..rng.usize(1..8))
            .map(|_| rng.usize(1..input.len().max(2)))
            .collect();
        let cut = run(role, deflate, &input, &cuts);
        assert_eq!(
            whole, bytewise,
            "case {case}: {role:?} deflate {deflate}, input {input:02x?}"
        );
        assert_eq!(
            whole, cut,
            "case {case}: {role:?} deflate {deflate}, cuts {cuts:?}, input {input:02x?}"
        );
    }
}

/// Under permessage-deflate with context takeover, compressed messages (the general path)
/// and uncompressed whole frames (the fast path) interleave: every message comes out as
/// sent, whole or fed a byte at a time, so the fast path leaves the inflater's window
/// alone. (Without the `deflate` feature a session never negotiates compression.)
#[cfg(feature = "deflate")]
#[test]
fn uncompressed_frames_between_compressed_ones_keep_the_window() {
    let mut rng = fastrand::Rng::with_seed(0xdef1a7e);
    let deflate = Some(DeflateConfig::default());
    let mut compressed = 0;
    for _ in 0..50 {
        let mut client = Protocol::new(Role::Client, Config::default(), deflate);
        let mut wire = BytesMut::new();
        let mut sent = Vec::new();
        for i in 0..rng.usize(2..12) {
            let text = format!(
                "{{\"seq\": {i}, \"words\": \"{}\"}}",
                "hello ".repeat(rng.usize(0..25))
            );
            if rng.bool() {
                // Through the client's machine: compressed when long enough.
                let start = wire.len();
                wire.extend_from_slice(text.as_bytes());
                client
                    .encode_message(getty_codec::MessageKind::Text, &mut wire, start)
                    .unwrap();
                compressed += usize::from(wire[start] & 0x40 != 0);
            } else {
                // By hand, uncompressed (RSV1 clear), masked.
                let mut payload = text.clone().into_bytes();
                let key = rng.u32(..).to_ne_bytes();
                apply_mask(&mut payload, key, 0);
                let mut head = vec![0x81];
                match payload.len() {
                    n @ 0..=125 => head.push(0x80 | n as u8),
                    n => {
                        head.push(0x80 | 126);
                        head.extend_from_slice(&(n as u16).to_be_bytes());
                    }
                }
                head.extend_from_slice(&key);
                wire.extend_from_slice(&head);
                wire.extend_from_slice(&payload);
            }
            sent.push(text);
        }
        let whole = run(Role::Server, true, &wire, &[]);
        let bytewise = run(Role::Server, true, &wire, &vec![1; wire.len()]);
        assert_eq!(whole, bytewise);
        assert_eq!(whole.error, None);
        let got: Vec<String> = whole
            .events
            .iter()
            .map(|e| match e {
                Event::Message { payload, .. } => String::from_utf8(payload.to_vec()).unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, sent);
    }
    assert!(compressed > 20, "only {compressed} compressed messages");
}

/// `apply_mask` against the byte-at-a-time definition (RFC 6455 §5.3), for every start
/// alignment of the slice in memory, every offset into the payload, and lengths 0..300
/// plus some large ones.
#[test]
fn unmasking_matches_the_definition_at_every_alignment_and_length() {
    let mask = [0x9d, 0x01, 0xfe, 0x37];
    let lens = (0..300).chain([1023, 1024, 1025, 4095, 4096, 4097, 65_535, 65_536, 65_537]);
    for len in lens {
        let base: Vec<u8> = (0..len + 16).map(|i| (i * 29 + 3) as u8).collect();
        for align in 0..16 {
            for offset in [0usize, 1, 2, 3, 4, 5, 7, 1 << 20] {
                let mut fast = base.clone();
                apply_mask(&mut fast[align..align + len], mask, offset);
                let mut slow = base.clone();
                for (i, b) in slow[align..align + len].iter_mut().enumerate() {
                    *b ^= mask[(offset + i) % 4];
                }
                assert!(fast == slow, "len {len}, align {align}, offset {offset}");
            }
            if len > 5000 {
                break; // large lengths: one alignment is enough to keep this quick
            }
        }
    }
}
