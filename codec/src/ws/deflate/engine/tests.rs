use super::*;
use crate::ws::{Config, Event, Protocol};
use crate::MessageKind;
use bytes::BytesMut;

/// JSON that compresses well against the messages before it, and differs from one to
/// the next in words and length.
fn json(seq: usize) -> Vec<u8> {
    const WORDS: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];
    let words: Vec<&str> = (0..seq % 4 + 8)
        .map(|k| WORDS[(seq * 3 + k * 2) % 5])
        .collect();
    format!(
        "{{\"seq\":{seq},\"room\":\"lobby\",\"text\":\"{}\",\"tags\":\"{}\"}}",
        words.join(" "),
        words.join("/")
    )
    .into_bytes()
}

fn agreed(no_context: bool) -> DeflateConfig {
    DeflateConfig {
        server_no_context_takeover: no_context,
        client_no_context_takeover: no_context,
        ..DeflateConfig::default()
    }
}

/// Every event `rx` decodes from `wire`, or its error.
fn decode_all(rx: &mut Protocol, mut wire: BytesMut) -> Result<Vec<Vec<u8>>, WsError> {
    let mut out = Vec::new();
    while let Some(event) = rx.decode(&mut wire, &mut BytesMut::new())? {
        match event {
            Event::Message { payload, .. } => out.push(payload.to_vec()),
            other => panic!("unexpected {other:?}"),
        }
    }
    Ok(out)
}

/// Issue 11 part 6: nothing is allocated until a message needs it; without context
/// takeover the engines go again after each message.
#[test]
fn the_engines_are_made_on_first_use_and_given_back_without_context_takeover() {
    for no_context in [false, true] {
        let mut server = Deflate::new(agreed(no_context), Role::Server);
        let mut client = Deflate::new(agreed(no_context), Role::Client);
        assert_eq!(server.engines(), (false, false));
        assert_eq!(client.engines(), (false, false));
        for seq in 0..3 {
            let mut z = Vec::new();
            client.compress(&json(seq), &mut z).unwrap();
            assert_eq!(client.engines(), (!no_context, false));
            let mut inflated = Vec::new();
            server.inflate(&z, &mut inflated, 1 << 20, None).unwrap();
            assert_eq!(server.engines(), (false, true));
            server.finish_message(&mut inflated, 1 << 20, None).unwrap();
            assert_eq!(inflated, json(seq));
            assert_eq!(
                server.engines(),
                (false, !no_context),
                "after message {seq}"
            );
        }
    }
}

/// Issue 11 part 4: a message framed and then cut out of the queue must not stay in the
/// compressor's window, or the messages after it inflate to other bytes.
#[test]
fn a_retracted_message_leaves_the_peer_in_step() {
    for retract in [true, false] {
        let mut server = Protocol::new(Role::Server, Config::default(), Some(agreed(false)));
        let mut client = Protocol::new(Role::Client, Config::default(), Some(agreed(false)));
        let mut queue = BytesMut::new();
        let mut expected = Vec::new();
        for seq in 0..6 {
            let start = queue.len();
            queue.extend_from_slice(&json(seq));
            server
                .encode_message(MessageKind::Text, &mut queue, start)
                .unwrap();
            assert!(queue[start] & 0x40 != 0, "message {seq} is compressed");
            if seq % 2 == 1 {
                queue.truncate(start); // no room for it
                if retract {
                    assert!(server.retract_last_message());
                }
            } else {
                expected.push(json(seq));
            }
        }
        match decode_all(&mut client, queue) {
            Ok(got) if retract => assert_eq!(got, expected),
            Ok(got) => assert_ne!(got, expected, "the test cannot tell"),
            Err(e) => assert!(!retract, "{e}"),
        }
    }
}

#[test]
fn retracting_a_message_outside_the_window_keeps_the_window() {
    // Uncompressed (below min_size): the window does not hold it.
    let mut p = Protocol::new(Role::Server, Config::default(), Some(agreed(false)));
    let mut queue = BytesMut::from(&json(1)[..]);
    p.encode_message(MessageKind::Text, &mut queue, 0).unwrap();
    let mut tiny = BytesMut::from(&b"tiny"[..]);
    p.encode_message(MessageKind::Text, &mut tiny, 0).unwrap();
    assert!(!p.retract_last_message());
    // The window still holds message 1: message 2 refers to it and is much smaller.
    let mut again = BytesMut::from(&json(1)[..]);
    p.encode_message(MessageKind::Text, &mut again, 0).unwrap();
    assert!(
        again.len() < queue.len() / 2,
        "{} vs {}",
        again.len(),
        queue.len()
    );
    // Without context takeover, or without compression, there is nothing to forget.
    let mut p = Protocol::new(Role::Server, Config::default(), Some(agreed(true)));
    p.encode_message(MessageKind::Text, &mut BytesMut::from(&json(1)[..]), 0)
        .unwrap();
    assert!(!p.retract_last_message());
    let mut p = Protocol::new(Role::Server, Config::default(), None);
    p.encode_message(MessageKind::Text, &mut BytesMut::from(&json(1)[..]), 0)
        .unwrap();
    assert!(!p.retract_last_message());
}

/// The inflater is made for the window the peer agreed to, at least 9 bits: zlib
/// deflates with a 9-bit window when asked for 8, and flate2 takes 9 to 15 only.
/// (zlib-rs keeps a 32 KiB window for raw streams whatever it is given, so a peer that
/// goes beyond its window is not caught; this checks that agreed windows work.)
#[test]
fn the_inflater_takes_every_agreed_window() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..600)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            b'a' + (rng % 26) as u8
        })
        .collect();
    // The peer sends `messages` compressed with a `peer_bits` window and context
    // takeover; we agreed to `agreed_bits`.
    let exchange = |agreed_bits: u8, peer_bits: u8, messages: &[&[u8]]| {
        let config = DeflateConfig {
            client_max_window_bits: agreed_bits,
            ..DeflateConfig::default()
        };
        let mut server = Deflate::new(config, Role::Server);
        let mut peer = Compress::new_with_window_bits(Compression::new(9), false, peer_bits);
        for m in messages {
            let mut z = Vec::with_capacity(m.len() + 64);
            peer.compress_vec(m, &mut z, FlushCompress::Sync).unwrap();
            z.truncate(z.len() - TAIL.len());
            let mut out = Vec::new();
            server.inflate(&z, &mut out, 1 << 20, None)?;
            server.finish_message(&mut out, 1 << 20, None)?;
            assert_eq!(&out, m);
        }
        Ok::<_, WsError>(())
    };
    // The second message repeats the first: a reference into the previous message.
    let far: [&[u8]; 2] = [&noise, &noise];
    for bits in 10..=15 {
        exchange(bits, bits, &far).unwrap();
    }
    let near: [&[u8]; 2] = [&noise[..200], &noise[..200]];
    for agreed in [8, 9] {
        exchange(agreed, 9, &near).unwrap();
    }
}

/// Found by the `ws_roundtrip` fuzz target: with `min_size` 0 and context takeover, an
/// empty message after a compressed one failed with 1011 ("sync flush did not end with the
/// empty block"). Empty messages now go out uncompressed, and arrive empty.
#[test]
fn an_empty_message_after_a_compressed_one_goes_out_plain() {
    let config = DeflateConfig {
        min_size: 0,
        ..DeflateConfig::default()
    };
    for (tx_role, rx_role) in [(Role::Client, Role::Server), (Role::Server, Role::Client)] {
        let mut tx = Protocol::new(tx_role, Config::default(), Some(config));
        let mut rx = Protocol::new(rx_role, Config::default(), Some(config));
        let mut wire = BytesMut::new();
        for msg in [&json(1)[..], b"", b"", &json(2)[..], b""] {
            let start = wire.len();
            wire.extend_from_slice(msg);
            tx.encode_message(MessageKind::Binary, &mut wire, start)
                .unwrap();
        }
        let got = decode_all(&mut rx, wire).unwrap();
        assert_eq!(
            got,
            [json(1), vec![], vec![], json(2), vec![]],
            "{tx_role:?}"
        );
    }
}
