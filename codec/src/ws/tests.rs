//! Tests of the frame/message machine against frames built by hand.

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;
use crate::MessageKind;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame built independently of the machine's encoder.
fn frame(first: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let start = out.len();
    if let Some(k) = mask {
        out.extend_from_slice(&k);
    }
    let body = out.len();
    out.extend_from_slice(payload);
    if let Some(k) = mask {
        for (i, b) in out[body..].iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    debug_assert!(start <= body);
    out
}

/// A masked frame, as a client sends.
fn cframe(first: u8, payload: &[u8]) -> Vec<u8> {
    frame(first, Some(MASK), payload)
}

fn server() -> Protocol {
    Protocol::new(Role::Server, Config::default(), None)
}

fn small_server(max_message: usize, max_frame: usize, deflate: Option<DeflateConfig>) -> Protocol {
    let config = Config {
        max_message_size: max_message,
        max_frame_size: max_frame,
    };
    Protocol::new(Role::Server, config, deflate)
}

/// Decodes everything; stops at the first error.
fn decode_all(
    p: &mut Protocol,
    wire: &mut BytesMut,
    control: &mut BytesMut,
) -> Result<Vec<Event>, WsError> {
    let mut events = Vec::new();
    while let Some(e) = p.decode(wire, control)? {
        events.push(e);
    }
    Ok(events)
}

/// Feeds `wire` in pieces cut at `cuts`, decoding after each piece.
fn decode_split(
    p: &mut Protocol,
    wire: &[u8],
    cuts: &[usize],
) -> (Result<Vec<Event>, WsError>, BytesMut) {
    let mut buf = BytesMut::new();
    let mut control = BytesMut::new();
    let mut events = Vec::new();
    let mut last = 0;
    for &c in cuts.iter().chain(std::iter::once(&wire.len())) {
        let c = c.clamp(last, wire.len());
        buf.extend_from_slice(&wire[last..c]);
        last = c;
        match decode_all(p, &mut buf, &mut control) {
            Ok(mut e) => events.append(&mut e),
            Err(e) => return (Err(e), control),
        }
    }
    (Ok(events), control)
}

fn message(kind: MessageKind, payload: &[u8]) -> Event {
    Event::Message {
        kind,
        payload: BytesMut::from(payload),
    }
}

fn error_code(wire: &[u8]) -> u16 {
    error_code_with(&mut server(), wire)
}

fn error_code_with(p: &mut Protocol, wire: &[u8]) -> u16 {
    match decode_split(p, wire, &[]).0 {
        Err(e) => e.close_code(),
        Ok(events) => panic!("expected an error, got {events:?}"),
    }
}

/// A stream with every kind of frame: fragmented text with an interleaved ping, binary of
/// each length encoding, a pong, and a close.
fn mixed_stream() -> (Vec<u8>, Vec<Event>) {
    let big = vec![7u8; 70_000];
    let mid = vec![9u8; 300];
    let mut wire = Vec::new();
    wire.extend(cframe(0x01, "héll".as_bytes()));
    wire.extend(cframe(0x89, b"p"));
    wire.extend(cframe(0x00, "o wo".as_bytes()));
    wire.extend(cframe(0x80, "rld ☃".as_bytes()));
    wire.extend(cframe(0x82, &[]));
    wire.extend(cframe(0x82, &mid));
    wire.extend(cframe(0x82, &big));
    wire.extend(cframe(0x8a, b"pong"));
    wire.extend(cframe(0x88, &[0x03, 0xe8, b'o', b'k']));
    let events = vec![
        Event::Ping("p".into()),
        message(MessageKind::Text, "héllo world ☃".as_bytes()),
        message(MessageKind::Binary, &[]),
        message(MessageKind::Binary, &mid),
        message(MessageKind::Binary, &big),
        Event::Pong("pong".into()),
        Event::Close(Some(CloseFrame {
            code: 1000,
            reason: "ok".into(),
        })),
    ];
    (wire, events)
}

#[test]
fn every_two_piece_split_decodes_alike() {
    let (wire, expected) = mixed_stream();
    let (whole, control) = decode_split(&mut server(), &wire, &[]);
    assert_eq!(whole.unwrap(), expected);
    assert_eq!(&control[..], b"\x8a\x01p\x88\x02\x03\xe8");
    // Cutting inside the big frame's payload is covered by the byte-by-byte run below.
    let big_start = wire.len() - (14 + 70_000) - 10 - 10; // the big frame, a pong, a close
    for cut in (0..big_start + 20).chain(wire.len() - 40..wire.len()) {
        let (events, ctl) = decode_split(&mut server(), &wire, &[cut]);
        assert_eq!(events.unwrap(), expected, "cut at {cut}");
        assert_eq!(ctl, control, "cut at {cut}");
    }
}

#[test]
fn byte_by_byte_decodes_alike() {
    let (wire, expected) = mixed_stream();
    let cuts: Vec<usize> = (1..wire.len()).collect();
    let (events, _) = decode_split(&mut server(), &wire, &cuts);
    assert_eq!(events.unwrap(), expected);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_splits_decode_alike(cuts in proptest::collection::vec(0usize..70_500, 0..12)) {
        let (wire, expected) = mixed_stream();
        let mut cuts = cuts;
        cuts.sort_unstable();
        let (events, _) = decode_split(&mut server(), &wire, &cuts);
        prop_assert_eq!(events.unwrap(), expected);
    }

    #[test]
    fn encoded_messages_round_trip_both_ways(
        msgs in proptest::collection::vec((any::<bool>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..70_000)), 1..4),
        cut in any::<prop::sample::Index>(),
        deflate in any::<bool>(),
    ) {
        let agreed = deflate.then(DeflateConfig::default);
        for role in [Role::Client, Role::Server] {
            let other = if role == Role::Client { Role::Server } else { Role::Client };
            let mut tx = Protocol::new(role, Config::default(), agreed);
            let mut rx = Protocol::new(other, Config::default(), agreed);
            let mut wire = BytesMut::new();
            let mut expected = Vec::new();
            for (text, reserve, bytes) in &msgs {
                let (kind, payload) = if *text {
                    (MessageKind::Text, String::from_utf8_lossy(bytes).into_owned().into_bytes())
                } else {
                    (MessageKind::Binary, bytes.clone())
                };
                let start = wire.len();
                if *reserve {
                    let room = tx.reserve_header(&mut wire);
                    wire.extend_from_slice(&payload);
                    tx.encode_reserved(kind, &mut wire, room).unwrap();
                } else {
                    wire.extend_from_slice(&payload);
                    tx.encode_message(kind, &mut wire, start).unwrap();
                }
                prop_assert_eq!(wire[start + 1] & 0x80 != 0, role == Role::Client, "mask bit");
                expected.push(message(kind, &payload));
            }
            let at = cut.index(wire.len() + 1);
            let (events, _) = decode_split(&mut rx, &wire, &[at]);
            prop_assert_eq!(events.unwrap(), expected);
        }
    }
}

/// One frame of [`fast_and_general_paths_agree`]'s random streams: a first byte from a
/// set that covers data, control, continuation, RSV bits and FIN, masked or not, and a
/// payload that may not be UTF-8.
fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    let firsts = prop::sample::select(vec![
        0x82u8, 0x81, 0x02, 0x01, 0x80, 0x00, 0x89, 0x8a, 0xc2, 0xa2, 0x92, 0x83,
    ]);
    let lens = prop_oneof![
        0usize..8,
        120usize..132,
        250usize..260,
        Just(65_535),
        Just(65_536)
    ];
    (firsts, any::<bool>(), lens, any::<u8>(), any::<bool>()).prop_map(
        |(first, masked, len, byte, ascii)| {
            let fill = if ascii { byte & 0x7f } else { byte };
            frame(first, masked.then_some(MASK), &vec![fill; len])
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whole frames in one buffer take the fast path; fed a byte at a time, the same
    /// stream takes the general one. Both find the same events, control output and error
    /// (close code), under tight limits too.
    #[test]
    fn fast_and_general_paths_agree(
        frames in proptest::collection::vec(any_frame(), 1..6),
        limit in prop::sample::select(vec![100usize, 130, 65_535, 1 << 20]),
        role in prop::sample::select(vec![Role::Server, Role::Client]),
    ) {
        let wire: Vec<u8> = frames.concat();
        let make = || {
            let config = Config { max_message_size: limit, max_frame_size: limit };
            Protocol::new(role, config, None)
        };
        let (whole, whole_control) = decode_split(&mut make(), &wire, &[]);
        let cuts: Vec<usize> = (1..wire.len()).collect();
        let (bytewise, bytewise_control) = decode_split(&mut make(), &wire, &cuts);
        match (whole, bytewise) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.close_code(), b.close_code()),
            (a, b) => prop_assert!(false, "whole: {:?}, byte by byte: {:?}", a, b),
        }
        // A client masks its pongs with fresh keys: only their sizes can match.
        if role == Role::Server {
            prop_assert_eq!(whole_control, bytewise_control);
        } else {
            prop_assert_eq!(whole_control.len(), bytewise_control.len());
        }
    }

    /// The hand-written header writer matches tungstenite's, for every size class, both
    /// masking choices and RSV1.
    #[test]
    fn frame_headers_match_tungstenites(
        len in prop_oneof![0usize..300, 65_000usize..66_000, Just(u32::MAX as usize + 7)],
        rsv1 in any::<bool>(),
        mask in any::<Option<[u8; 4]>>(),
        binary in any::<bool>(),
    ) {
        use tungstenite::protocol::frame::coding::{Data, OpCode};
        use tungstenite::protocol::frame::FrameHeader;
        let data = if binary { Data::Binary } else { Data::Text };
        let header = FrameHeader {
            is_final: true,
            rsv1,
            rsv2: false,
            rsv3: false,
            opcode: OpCode::Data(data),
            mask,
        };
        let mut theirs = Vec::new();
        header.format(len as u64, &mut theirs).unwrap();
        let first = 0x80 | if rsv1 { 0x40 } else { 0 } | u8::from(OpCode::Data(data));
        let (ours, n) = protocol::format_header(first, len, mask);
        prop_assert_eq!(&ours[..n], &theirs[..]);
    }
}

/// A text message with invalid UTF-8 that arrives whole is refused as one that arrives in
/// pieces is: 1007, and nothing goes up.
#[test]
fn whole_frames_are_checked_like_pieces() {
    let bad = cframe(0x81, b"ok \xff");
    assert_eq!(error_code(&bad), 1007);
    let mut p = server();
    let mut input = BytesMut::from(&bad[..]);
    let err = p
        .decode_in_place(&mut input, &mut BytesMut::new())
        .unwrap_err();
    assert_eq!(err.close_code(), 1007);
    // Unmasked from a client, over the limit: the general path reports them.
    assert_eq!(error_code(&frame(0x82, None, b"x")), 1002);
    assert_eq!(
        error_code_with(&mut small_server(4, 4, None), &cframe(0x82, b"12345")),
        1009
    );
}

/// Reserved header room fits when the size class repeats and the payload moves (once)
/// when it changes, in both directions, for both roles: every frame still decodes.
#[test]
fn reserved_headers_survive_every_change_of_size_class() {
    let sizes = [0, 125, 126, 65_535, 65_536, 5, 70_000, 3, 126, 126];
    for role in [Role::Client, Role::Server] {
        let other = if role == Role::Client {
            Role::Server
        } else {
            Role::Client
        };
        let mut tx = Protocol::new(role, Config::default(), None);
        let mut rx = Protocol::new(other, Config::default(), None);
        let mut wire = BytesMut::from(&b""[..]);
        let mut expected = Vec::new();
        for (i, len) in sizes.into_iter().enumerate() {
            let payload: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            let room = tx.reserve_header(&mut wire);
            wire.extend_from_slice(&payload);
            tx.encode_reserved(MessageKind::Binary, &mut wire, room)
                .unwrap();
            expected.push(message(MessageKind::Binary, &payload));
        }
        let (events, _) = decode_split(&mut rx, &wire, &[]);
        assert_eq!(events.unwrap(), expected, "{role:?}");
    }
}

/// A server's large uncompressed payload can go out behind a header written on its own.
#[test]
fn plain_headers_frame_payloads_sent_apart() {
    let mut srv = server();
    let mut wire = BytesMut::new();
    let payload = vec![9u8; 70_000];
    assert!(srv
        .put_plain_header(MessageKind::Binary, payload.len(), &mut wire)
        .unwrap());
    wire.extend_from_slice(&payload);
    let mut client = Protocol::new(Role::Client, Config::default(), None);
    let (events, _) = decode_split(&mut client, &wire, &[]);
    assert_eq!(events.unwrap(), [message(MessageKind::Binary, &payload)]);
    // A compressing server cannot write a header before it has seen the payload; without
    // the deflate feature the settings are dropped and the server does not compress.
    let mut compressing = small_server(1 << 20, 1 << 20, Some(DeflateConfig::default()));
    let plain = compressing
        .put_plain_header(MessageKind::Binary, 70_000, &mut wire)
        .unwrap();
    assert_eq!(plain, !cfg!(feature = "deflate"));
}

#[test]
fn client_frames_are_masked_and_server_frames_are_not() {
    let mut client = Protocol::new(Role::Client, Config::default(), None);
    let mut buf = BytesMut::from(&b"abcdefgh"[..]);
    client
        .encode_message(MessageKind::Binary, &mut buf, 0)
        .unwrap();
    assert_eq!(buf[0], 0x82);
    assert_eq!(buf[1], 0x80 | 8);
    let mask = [buf[2], buf[3], buf[4], buf[5]];
    let mut payload = buf[6..].to_vec();
    apply_mask(&mut payload, mask, 0);
    assert_eq!(payload, b"abcdefgh");

    let mut srv = server();
    let mut buf = BytesMut::from(&b"abc"[..]);
    srv.encode_message(MessageKind::Binary, &mut buf, 0)
        .unwrap();
    assert_eq!(&buf[..], b"\x82\x03abc");
}

#[test]
fn encoding_in_place_does_not_reallocate_when_there_is_room() {
    let mut srv = server();
    let mut buf = BytesMut::with_capacity(100_000);
    buf.extend_from_slice(b"prefix");
    buf.extend_from_slice(&[5u8; 70_000]);
    let addr = buf.as_ptr();
    srv.encode_message(MessageKind::Binary, &mut buf, 6)
        .unwrap();
    assert_eq!(buf.as_ptr(), addr);
    assert_eq!(&buf[..6], b"prefix");
    assert_eq!(&buf[6..16], b"\x82\x7f\x00\x00\x00\x00\x00\x01\x11\x70");
    assert!(buf[16..].iter().all(|&b| b == 5));
}

#[test]
fn uncompressed_single_frames_are_not_copied() {
    let mut srv = server();
    let mut wire = BytesMut::from(&cframe(0x82, &[1, 2, 3, 4, 5])[..]);
    let payload_addr = wire[6..].as_ptr();
    let Some(Event::Message { payload, .. }) = srv.decode(&mut wire, &mut BytesMut::new()).unwrap()
    else {
        panic!("expected a message");
    };
    assert_eq!(payload.as_ptr(), payload_addr);
    assert_eq!(&payload[..], [1, 2, 3, 4, 5]);
}

#[test]
fn protocol_errors_say_1002() {
    let deflate = Some(DeflateConfig::default());
    let cases: Vec<(&str, Vec<u8>, Option<DeflateConfig>)> = vec![
        ("rsv2", cframe(0xa2, b"x"), None),
        ("rsv3", cframe(0x92, b"x"), None),
        ("rsv1 without deflate", cframe(0xc2, b"x"), None),
        (
            "rsv1 on a continuation",
            [cframe(0x42, b"\x00"), cframe(0xc0, b"\x00")].concat(),
            deflate,
        ),
        ("rsv1 on a ping", cframe(0xc9, b""), deflate),
        ("fragmented ping", cframe(0x09, b""), None),
        ("long ping", cframe(0x89, &[0; 126]), None),
        ("continuation first", cframe(0x80, b"x"), None),
        (
            "text inside a fragmented message",
            [cframe(0x01, b"a"), cframe(0x81, b"b")].concat(),
            None,
        ),
        (
            "binary inside a fragmented message",
            [cframe(0x02, b"a"), cframe(0x02, b"b")].concat(),
            None,
        ),
        ("unmasked to a server", frame(0x82, None, b"x"), None),
        ("close with one byte", cframe(0x88, b"\x03"), None),
        ("close code 1005", cframe(0x88, b"\x03\xed"), None),
        ("close code 999", cframe(0x88, b"\x03\xe7"), None),
        ("close code 2000", cframe(0x88, b"\x07\xd0"), None),
        ("close code 5000", cframe(0x88, b"\x13\x88"), None),
        (
            "64-bit length with its top bit set",
            {
                let mut f = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1];
                f.extend_from_slice(&MASK);
                f
            },
            None,
        ),
    ];
    for (name, wire, deflate) in cases {
        let mut p = Protocol::new(Role::Server, Config::default(), deflate);
        assert_eq!(error_code_with(&mut p, &wire), 1002, "{name}");
    }
    for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
        assert_eq!(error_code(&cframe(0x80 | op, b"")), 1002, "opcode {op}");
    }
    let mut client = Protocol::new(Role::Client, Config::default(), None);
    assert_eq!(
        error_code_with(&mut client, &cframe(0x82, b"x")),
        1002,
        "masked to a client"
    );
}

#[test]
fn invalid_utf8_says_1007_and_fails_fast() {
    assert_eq!(error_code(&cframe(0x81, b"ok\xff")), 1007);
    assert_eq!(error_code(&cframe(0x81, b"ends inside \xe2\x82")), 1007);
    assert_eq!(
        error_code(&cframe(0x88, b"\x03\xe8\xff")),
        1007,
        "close reason"
    );
    // A first fragment with an invalid sequence fails before the rest arrives.
    assert_eq!(error_code(&cframe(0x01, b"\xce\xba\xf4\x90")), 1007);
    // So does an invalid sequence in the received part of an incomplete frame.
    let whole = cframe(0x81, b"\xce\xbao\xed\xa0\x80 and more text after it");
    let mut p = server();
    let mut buf = BytesMut::from(&whole[..6 + 5]);
    let err = p.decode(&mut buf, &mut BytesMut::new()).unwrap_err();
    assert_eq!(err.close_code(), 1007);
    // A character split across fragments is fine.
    let ok = [cframe(0x01, b"\xe2\x82"), cframe(0x80, b"\xac")].concat();
    let (events, _) = decode_split(&mut server(), &ok, &[]);
    assert_eq!(
        events.unwrap(),
        vec![message(MessageKind::Text, "€".as_bytes())]
    );
    // Binary is not checked.
    let (events, _) = decode_split(&mut server(), &cframe(0x82, b"\xff"), &[]);
    assert_eq!(events.unwrap(), vec![message(MessageKind::Binary, b"\xff")]);
}

#[test]
fn oversize_says_1009_before_the_payload_arrives() {
    // The header alone of a frame over the frame limit is enough.
    let mut p = small_server(1 << 20, 1000, None);
    let wire = cframe(0x82, &[0; 1001]);
    let err = p
        .decode(&mut BytesMut::from(&wire[..8]), &mut BytesMut::new())
        .unwrap_err();
    assert_eq!(err.close_code(), 1009);
    // Fragments that add up to more than the message limit.
    let mut p = small_server(1000, 1000, None);
    let wire = [cframe(0x02, &[0; 600]), cframe(0x80, &[0; 600])].concat();
    assert_eq!(error_code_with(&mut p, &wire), 1009);
    let mut p = small_server(1000, 1000, None);
    let wire = [cframe(0x02, &[0; 600]), cframe(0x80, &[0; 400])].concat();
    assert_eq!(decode_split(&mut p, &wire, &[]).0.unwrap().len(), 1);
    // A frame length that does not fit in memory.
    let mut huge = vec![0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    huge.extend_from_slice(&MASK);
    assert_eq!(error_code(&huge), 1009);
}

#[test]
fn errors_repeat_and_fail_writes_the_close_once() {
    let mut p = server();
    let mut wire = BytesMut::from(&cframe(0xa2, b"x")[..]);
    let err = p.decode(&mut wire, &mut BytesMut::new()).unwrap_err();
    let again = p.decode(
        &mut BytesMut::from(&cframe(0x82, b"ok")[..]),
        &mut BytesMut::new(),
    );
    assert_eq!(again.unwrap_err(), err);
    let mut out = BytesMut::new();
    assert!(p.fail(&err, &mut out));
    assert_eq!(&out[..], b"\x88\x02\x03\xea");
    assert!(!p.fail(&err, &mut out));
    assert!(p.is_closed());
    assert!(p
        .encode_message(MessageKind::Text, &mut BytesMut::from("x"), 0)
        .is_err());
}

#[test]
fn peer_initiated_close_is_echoed_and_ends_decoding() {
    let mut p = server();
    let mut wire =
        BytesMut::from(&[cframe(0x88, b"\x0f\xa0bye"), cframe(0x81, b"late")].concat()[..]);
    let mut out = BytesMut::new();
    let events = decode_all(&mut p, &mut wire, &mut out).unwrap();
    assert_eq!(
        events,
        vec![Event::Close(Some(CloseFrame {
            code: 4000,
            reason: "bye".into()
        }))]
    );
    assert_eq!(&out[..], b"\x88\x02\x0f\xa0", "echoes the code");
    assert!(wire.is_empty(), "input after the close is dropped");
    assert!(p.is_closed());

    let mut p = server();
    let mut out = BytesMut::new();
    let events = decode_all(
        &mut p,
        &mut BytesMut::from(&cframe(0x88, b"")[..]),
        &mut out,
    )
    .unwrap();
    assert_eq!(events, vec![Event::Close(None)]);
    assert_eq!(
        &out[..],
        b"\x88\x02\x03\xe8",
        "1000 when the peer gave no code"
    );
}

#[test]
fn locally_initiated_close_waits_for_the_peer() {
    let mut srv = server();
    let mut cli = Protocol::new(Role::Client, Config::default(), None);
    let mut to_client = BytesMut::new();
    assert!(srv.close(1001, "going", &mut to_client).unwrap());
    assert!(!srv.is_closed());
    // A ping after our close gets no pong; data is still delivered.
    let mut out = BytesMut::new();
    let wire = [cframe(0x89, b""), cframe(0x81, b"hi")].concat();
    let events = decode_all(&mut srv, &mut BytesMut::from(&wire[..]), &mut out).unwrap();
    assert_eq!(events.len(), 2);
    assert!(out.is_empty());
    // The client echoes; the server sees the echo and is done.
    let mut to_server = BytesMut::new();
    let events = decode_all(&mut cli, &mut to_client, &mut to_server).unwrap();
    assert_eq!(
        events,
        vec![Event::Close(Some(CloseFrame {
            code: 1001,
            reason: "going".into()
        }))]
    );
    assert!(cli.is_closed());
    let events = decode_all(&mut srv, &mut to_server, &mut out).unwrap();
    assert_eq!(events.len(), 1);
    assert!(srv.is_closed());
    assert!(out.is_empty(), "no second close");
}

#[test]
fn close_refuses_codes_that_may_not_be_sent() {
    let mut p = server();
    let mut out = BytesMut::new();
    assert!(p.close(1006, "", &mut out).is_err());
    assert!(p.close(1000, &"x".repeat(124), &mut out).is_err());
    assert!(out.is_empty());
    assert!(!p.close_sent());
}

#[cfg(feature = "deflate")]
mod deflate;
