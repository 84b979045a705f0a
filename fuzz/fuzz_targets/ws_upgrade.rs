//! Both ends of the WebSocket upgrade: a client request built from arbitrary parts, the
//! server's parse and answer, and the client's check of that answer and of the answer with
//! arbitrary bytes spliced in anywhere (so the fuzzer works near valid responses, with the
//! right `Sec-WebSocket-Accept`).
//!
//! Oracles:
//! - every request our client agrees to write, our server parses (unless it has more header
//!   lines than the server's limit of 64, a 431), with the same path and
//!   subprotocols, and our client accepts the server's `101` with the same subprotocol and
//!   permessage-deflate settings as the server agreed;
//! - the client's check of a mangled response, fed in arbitrary pieces, answers
//!   `Ok(None)` until the head is complete and then as it does fed whole; what it accepts
//!   is a subprotocol it offered and settings within its offer, which the frame machine
//!   takes; the bytes after the head are left for the frames.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use getty_codec::ws::{
    parse_request, ClientHandshake, ClientRequest, Config, HandshakeError, Protocol, Response, Role,
};
use getty_fuzz::pieces;
use getty_fuzz::ws::Deflate;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    host: String,
    path: String,
    protocols: Vec<String>,
    headers: Vec<(String, String)>,
    client_deflate: Option<Deflate>,
    server_deflate: Option<Deflate>,
    choose_protocol: Option<u8>,
    max_len: u16,
    sizes: Vec<u8>,
    /// The server's answer with `answer[at..at + len]` replaced by `splice`.
    at: u16,
    len: u16,
    splice: Vec<u8>,
}

/// The most header lines `parse_request` takes.
const MAX_HEADERS: usize = 64;

/// How many header lines the request writes itself.
fn own_headers(input: &Input) -> usize {
    5 + usize::from(!input.protocols.is_empty()) + usize::from(input.client_deflate.is_some())
}

fn check_response(
    handshake: &ClientHandshake,
    chunks: &[&[u8]],
    max_len: usize,
) -> (Result<Option<Response>, HandshakeError>, BytesMut) {
    let mut src = BytesMut::new();
    for (i, chunk) in chunks.iter().enumerate() {
        src.extend_from_slice(chunk);
        match handshake.parse_response(&mut src, max_len) {
            Ok(None) => continue,
            answer => {
                // What was not read yet is left too, for the frames.
                chunks[i + 1..]
                    .iter()
                    .for_each(|c| src.extend_from_slice(c));
                return (answer, src);
            }
        }
    }
    (Ok(None), src)
}

fuzz_target!(|input: Input| {
    let mut request = ClientRequest::new(input.host.clone(), input.path.clone());
    for p in &input.protocols {
        request = request.protocol(p.clone());
    }
    for (name, value) in &input.headers {
        request = request.header(name.clone(), value.clone());
    }
    let offer = input.client_deflate.map(Deflate::config);
    if let Some(d) = offer {
        request = request.deflate(d);
    }
    let mut wire = BytesMut::new();
    let Ok(handshake) = request.try_write(&mut wire) else {
        assert!(wire.is_empty(), "a refused request wrote bytes");
        return;
    };

    // Our server takes what our client wrote.
    wire.extend_from_slice(b"\x81\x00");
    let parsed = match parse_request(&mut wire, usize::MAX) {
        Ok(parsed) => parsed.expect("a whole request"),
        // The server takes at most 64 header lines; the request's own are up to 7.
        Err(e) if e.status() == 431 && own_headers(&input) + input.headers.len() > MAX_HEADERS => {
            return
        }
        Err(e) => panic!("our server refused our request: {e:?}"),
    };
    assert_eq!(&wire[..], b"\x81\x00", "the bytes after the head");
    let expected_path = if input.path.is_empty() {
        "/"
    } else {
        &input.path
    };
    assert_eq!(parsed.path(), expected_path);
    assert_eq!(parsed.protocols(), &input.protocols[..]);
    let chosen = input.choose_protocol.and_then(|i| {
        input
            .protocols
            .get(usize::from(i) % input.protocols.len().max(1))
    });
    let mut answer = BytesMut::new();
    let server_config = input.server_deflate.map(Deflate::config);
    let accepted = parsed
        .accept(
            chosen.map(String::as_str),
            server_config.as_ref(),
            &mut answer,
        )
        .expect("accepting an offered subprotocol");
    let mut back = answer.clone();
    let response = handshake
        .parse_response(&mut back, usize::MAX)
        .unwrap_or_else(|e| panic!("our client refused our server's answer: {e:?}"))
        .expect("a whole response");
    assert!(back.is_empty());
    assert_eq!(response.protocol(), accepted.protocol());
    assert_eq!(response.deflate().is_some(), accepted.deflate().is_some());

    // The answer, mangled: a splice of arbitrary bytes anywhere in it (none: the answer).
    let at = usize::from(input.at) % (answer.len() + 1);
    let end = (at + usize::from(input.len)).min(answer.len());
    let mut bytes = answer[..at].to_vec();
    bytes.extend_from_slice(&input.splice);
    bytes.extend_from_slice(&answer[end..]);
    bytes.extend_from_slice(b"\x81\x00");
    let max_len = usize::from(input.max_len);
    let (whole, whole_rest) = check_response(&handshake, &[&bytes[..]], max_len);
    let (split, split_rest) = check_response(&handshake, &pieces(&bytes, &input.sizes), max_len);
    match (&whole, &split) {
        (Err(_), Err(_)) => {}
        _ => {
            assert_eq!(whole, split, "split response checked otherwise");
            assert_eq!(whole_rest, split_rest);
        }
    }
    let Ok(Some(response)) = whole else {
        return;
    };
    assert!(bytes.ends_with(&whole_rest));
    if let Some(p) = response.protocol() {
        assert!(
            input.protocols.iter().any(|o| o == p),
            "subprotocol {p:?} was not offered"
        );
    }
    if let Some(agreed) = response.deflate() {
        let offer = offer.expect("deflate agreed without an offer");
        assert!(agreed.server_max_window_bits <= offer.server_max_window_bits);
        assert!(agreed.client_max_window_bits <= offer.client_max_window_bits);
        assert!(agreed.server_no_context_takeover >= offer.server_no_context_takeover);
        Protocol::new(Role::Client, Config::default(), Some(agreed));
    }
});
