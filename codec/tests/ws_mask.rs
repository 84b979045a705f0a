//! Client masking keys (RFC 6455 §5.3): unpredictable, fresh for every frame.

use std::collections::HashSet;

use bytes::BytesMut;
use getty_codec::ws::{apply_mask, Config, Protocol, Role};

/// The masking key of the ping frame `client` writes, after checking that the payload on
/// the wire is `payload` masked with that key.
fn ping_mask(client: &mut Protocol, payload: &[u8]) -> [u8; 4] {
    let mut out = BytesMut::new();
    client.ping(payload, &mut out).unwrap();
    assert_eq!(out[0], 0x89, "a final ping frame");
    assert_eq!(
        out[1] as usize,
        0x80 | payload.len(),
        "masked, short length"
    );
    let mask: [u8; 4] = out[2..6].try_into().unwrap();
    let mut body = out[6..].to_vec();
    apply_mask(&mut body, mask, 0);
    assert_eq!(body, payload);
    mask
}

fn masks(client: &mut Protocol, n: usize) -> Vec<[u8; 4]> {
    (0..n).map(|_| ping_mask(client, b"mask me")).collect()
}

/// Nothing the process can seed decides the keys: the thread's `fastrand` generator (where
/// keys used to come from, so anyone who learned or set its seed could predict every key),
/// seeded twice alike, must not make the keys repeat or follow its sequence.
#[test]
fn keys_do_not_follow_a_seedable_generator() {
    let mut client = Protocol::new(Role::Client, Config::default(), None);
    for seed in [0u64, 1, 42, 0x5eed_0b0e] {
        fastrand::seed(seed);
        let first = masks(&mut client, 8);
        fastrand::seed(seed);
        let second = masks(&mut client, 8);
        assert_ne!(
            first, second,
            "reseeding fastrand({seed}) replayed the keys"
        );

        let mut rng = fastrand::Rng::with_seed(seed);
        let predicted: Vec<[u8; 4]> = (0..8).map(|_| rng.u32(..).to_ne_bytes()).collect();
        assert_ne!(
            first, predicted,
            "the keys are fastrand's sequence for seed {seed}"
        );
    }
}

/// Two client connections get different keys, and one connection's keys do not repeat.
#[test]
fn keys_differ_across_frames_and_connections() {
    let mut a = Protocol::new(Role::Client, Config::default(), None);
    let mut b = Protocol::new(Role::Client, Config::default(), None);
    let (ka, kb) = (masks(&mut a, 16), masks(&mut b, 16));
    assert_ne!(ka, kb);

    let keys = masks(&mut a, 1000);
    let distinct: HashSet<[u8; 4]> = keys.iter().copied().collect();
    // 1,000 uniform 32-bit keys collide with probability about 1e-4; allow two collisions.
    assert!(
        distinct.len() >= 998,
        "{} distinct keys of 1000",
        distinct.len()
    );
    // Every key bit is set about half the time (500 ± 16 for a fair bit; ±150 is far
    // outside chance, but catches a stuck or biased bit).
    for bit in 0..32 {
        let set = keys
            .iter()
            .filter(|k| u32::from_ne_bytes(**k) >> bit & 1 == 1)
            .count();
        assert!(
            (350..=650).contains(&set),
            "key bit {bit} set {set} times of 1000"
        );
    }
}

/// A server never masks.
#[test]
fn server_frames_are_unmasked() {
    let mut server = Protocol::new(Role::Server, Config::default(), None);
    let mut out = BytesMut::new();
    server.ping(b"x", &mut out).unwrap();
    assert_eq!(&out[..], b"\x89\x01x");
}
