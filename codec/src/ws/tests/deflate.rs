//! permessage-deflate through the machine: round trips, context takeover, bombs.

use flate2::{Compress, Compression, FlushCompress};

use super::*;

fn agreed(bits: u8, no_context: bool) -> DeflateConfig {
    DeflateConfig {
        server_no_context_takeover: no_context,
        client_no_context_takeover: no_context,
        server_max_window_bits: bits,
        client_max_window_bits: bits,
        ..DeflateConfig::default()
    }
}

fn text_payload(i: usize) -> Vec<u8> {
    format!(
        "{{\"seq\":{i},\"name\":\"getty\",\"tags\":[\"a\",\"b\",\"c\"],\"pad\":\"{}\"}}",
        "xyz".repeat(40 + i)
    )
    .into_bytes()
}

#[test]
fn deflate_round_trips_for_every_window_and_takeover() {
    for bits in 8..=15u8 {
        for no_context in [false, true] {
            for role in [Role::Client, Role::Server] {
                let other = if role == Role::Client {
                    Role::Server
                } else {
                    Role::Client
                };
                let d = Some(agreed(bits, no_context));
                let mut tx = Protocol::new(role, Config::default(), d);
                let mut rx = Protocol::new(other, Config::default(), d);
                let mut random = vec![0u8; 5000];
                fastrand::Rng::with_seed(u64::from(bits)).fill(&mut random);
                // (kind, payload, whether deflate shrinks it)
                let msgs: Vec<(MessageKind, Vec<u8>, bool)> = vec![
                    (MessageKind::Text, text_payload(1), true),
                    (MessageKind::Text, text_payload(2), true),
                    (MessageKind::Binary, random, false),
                    (MessageKind::Binary, vec![], false),
                    (MessageKind::Text, b"tiny".to_vec(), false),
                    (MessageKind::Binary, vec![0; 200_000], true),
                ];
                for (kind, payload, shrinks) in &msgs {
                    let mut wire = BytesMut::from(&payload[..]);
                    tx.encode_message(*kind, &mut wire, 0).unwrap();
                    let compressed = wire[0] & 0x40 != 0;
                    let expect_compressed = bits >= 9 && payload.len() >= 32 && *shrinks;
                    assert_eq!(
                        compressed,
                        expect_compressed,
                        "bits {bits} len {}",
                        payload.len()
                    );
                    let cut = wire.len() / 2;
                    let (events, _) = decode_split(&mut rx, &wire, &[cut]);
                    assert_eq!(
                        events.unwrap(),
                        vec![message(*kind, payload)],
                        "bits {bits} ctx {no_context}"
                    );
                }
            }
        }
    }
}

#[test]
fn context_takeover_shrinks_repeated_messages() {
    let sizes = |no_context: bool| {
        let mut tx = Protocol::new(
            Role::Server,
            Config::default(),
            Some(agreed(15, no_context)),
        );
        let payload = text_payload(7);
        (0..2)
            .map(|_| {
                let mut wire = BytesMut::from(&payload[..]);
                tx.encode_message(MessageKind::Text, &mut wire, 0).unwrap();
                wire.len()
            })
            .collect::<Vec<_>>()
    };
    let with = sizes(false);
    let without = sizes(true);
    assert!(with[1] < with[0] / 2, "{with:?}");
    assert_eq!(without[0], without[1]);
}

/// Deflates `data` with a sync flush and strips the tail, as a peer would.
fn deflate_raw(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

#[test]
fn fragmented_compressed_message_with_interleaved_ping() {
    let text = "fragmented and compressed ".repeat(20);
    let z = deflate_raw(text.as_bytes());
    let (a, rest) = z.split_at(z.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let wire = [
        cframe(0x41, a),
        cframe(0x00, b),
        cframe(0x89, b"x"),
        cframe(0x80, c),
    ]
    .concat();
    let mut p = Protocol::new(
        Role::Server,
        Config::default(),
        Some(DeflateConfig::default()),
    );
    let cuts: Vec<usize> = (1..wire.len()).step_by(7).collect();
    let (events, _) = decode_split(&mut p, &wire, &cuts);
    assert_eq!(
        events.unwrap(),
        vec![
            Event::Ping("x".into()),
            message(MessageKind::Text, text.as_bytes())
        ]
    );
}

/// A message deflate would make longer goes out uncompressed (RSV1 clear), and the
/// compressor starts afresh, so the compressed messages after it still inflate.
#[test]
fn incompressible_messages_go_out_uncompressed() {
    let mut tx = Protocol::new(Role::Server, Config::default(), Some(agreed(15, false)));
    let mut rx = Protocol::new(Role::Client, Config::default(), Some(agreed(15, false)));
    let mut rng = fastrand::Rng::with_seed(3);
    let noise: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
    let mut wire = BytesMut::new();
    let mut expected = Vec::new();
    for (i, payload) in [
        text_payload(1),
        noise.clone(),
        text_payload(1),
        noise,
        text_payload(2),
    ]
    .iter()
    .enumerate()
    {
        let start = wire.len();
        wire.extend_from_slice(payload);
        tx.encode_message(MessageKind::Binary, &mut wire, start)
            .unwrap();
        let rsv1 = wire[start] & 0x40 != 0;
        assert_eq!(
            rsv1,
            i % 2 == 0,
            "message {i}: compressed only when it helps"
        );
        expected.push(message(MessageKind::Binary, payload));
    }
    let (events, _) = decode_split(&mut rx, &wire, &[]);
    assert_eq!(events.unwrap(), expected);
}

#[test]
fn bad_compressed_data_says_1007() {
    let d = Some(DeflateConfig::default());
    let mut p = Protocol::new(Role::Server, Config::default(), d);
    assert_eq!(error_code_with(&mut p, &cframe(0xc2, &[0xff; 20])), 1007);
    let mut p = Protocol::new(Role::Server, Config::default(), d);
    assert_eq!(
        error_code_with(&mut p, &cframe(0xc1, &deflate_raw(b"bad \xff text"))),
        1007
    );
}

/// Writes deflate bits least-significant first; Huffman codes go most-significant first.
struct Bits {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u32, count: u32) {
        self.acc |= value << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    fn code(&mut self, code: u32, len: u32) {
        let reversed = code.reverse_bits() >> (32 - len);
        self.put(reversed, len);
    }
}

/// A fixed-Huffman deflate block: one zero byte, then `repeats` matches of 258 bytes at
/// distance 1. `repeats` = 4.2 million inflates to over a gigabyte from about 6.8 MB.
fn bomb(repeats: usize) -> Vec<u8> {
    let mut bits = Bits {
        out: Vec::with_capacity(repeats * 13 / 8 + 16),
        acc: 0,
        n: 0,
    };
    bits.put(0, 1); // not the final block
    bits.put(1, 2); // fixed Huffman codes
    bits.code(0x30, 8); // literal 0
    for _ in 0..repeats {
        bits.code(0xc5, 8); // length 258 (symbol 285)
        bits.code(0, 5); // distance 1
    }
    bits.put(0, 7);
    bits.out
}

#[test]
fn the_bomb_inflates_as_claimed_when_allowed() {
    let z = bomb(1000);
    let mut p = Protocol::new(
        Role::Server,
        Config::default(),
        Some(DeflateConfig::default()),
    );
    let (events, _) = decode_split(&mut p, &cframe(0xc2, &z), &[]);
    let events = events.unwrap();
    let [Event::Message { payload, .. }] = &events[..] else {
        panic!("expected one message");
    };
    assert_eq!(payload.len(), 1 + 258 * 1000);
    assert!(payload.iter().all(|&b| b == 0));
}

#[test]
fn a_gigabyte_bomb_is_refused_after_a_few_kib_with_bounded_memory() {
    let repeats = 4_200_000; // 1 + 258 * 4.2M bytes: over a gigabyte inflated
    let z = bomb(repeats);
    assert!(z.len() < 7 << 20);
    let wire = cframe(0xc2, &z);
    let max = 1 << 20;
    let mut p = small_server(max, 16 << 20, Some(DeflateConfig::default()));
    // Only the first 16 KiB of the 6.8 MB frame arrive: enough to know it is too big.
    let mut buf = BytesMut::from(&wire[..16 << 10]);
    let started = std::time::Instant::now();
    let err = p.decode(&mut buf, &mut BytesMut::new()).unwrap_err();
    assert_eq!(err.close_code(), 1009);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Memory: the inflated part of the message never exceeded the limit.
    let inflated = p
        .inflated_capacity()
        .expect("the refused message is still the one in progress");
    assert!(inflated <= max + 1, "inflate buffer grew to {inflated}");
}

/// The limit is on the inflated message: deflate makes incompressible data a few bytes
/// longer, and a compressed frame of such a message at exactly the limit is taken (a peer
/// such as a browser compresses every message); one byte more inflated is refused, 1009.
#[test]
fn a_compressed_frame_longer_than_the_limit_is_taken_when_it_inflates_within_it() {
    let max = 4096;
    let mut random = vec![0u8; max + 1];
    fastrand::Rng::with_seed(5).fill(&mut random);
    for (len, fits) in [(max, true), (max + 1, false)] {
        let compressed = deflate_raw(&random[..len]);
        assert!(compressed.len() > len, "incompressible input grows");
        let wire = cframe(0xc2, &compressed);
        let mut p = small_server(max, max, Some(agreed(15, false)));
        let (events, _) = decode_split(&mut p, &wire, &[]);
        match events {
            Ok(events) if fits => {
                assert_eq!(events, [message(MessageKind::Binary, &random[..len])])
            }
            Err(e) if !fits => assert_eq!(
                (e.close_code(), e.limit_exceeded().map(|l| l.1)),
                (1009, Some(max))
            ),
            other => panic!("{len} B inflated: {other:?}"),
        }
    }
}
