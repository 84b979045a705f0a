//! The server's parser of the HTTP upgrade request (`parse_request`) on arbitrary bytes,
//! with any head limit, and its `101` answer to what it accepts.
//!
//! Oracles:
//! - split invariance: the request fed in arbitrary pieces answers `Ok(None)` until it is
//!   complete and then the same request as fed whole, leaving the same bytes behind (the
//!   first frames); a refusal is a refusal either way (the status may differ only in that
//!   a head found over the limit before its garbage is seen is a 431);
//! - an accepted request has an origin-form path, and its `101` answer (with the first
//!   offered subprotocol and our permessage-deflate settings) is exactly one well-formed
//!   HTTP response head; the settings agreed from the client's offer are valid (the frame
//!   machine takes them).
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use getty_codec::ws::{parse_request, Config, HandshakeError, Protocol, Request, Role};
use getty_fuzz::pieces;
use getty_fuzz::ws::Deflate;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    max_len: u16,
    deflate: Option<Deflate>,
    sizes: Vec<u8>,
    wire: Vec<u8>,
}

/// Feeds the pieces until the parser answers; returns the answer and the bytes after the
/// head (what it left, and the pieces not fed).
fn parse(chunks: &[&[u8]], max_len: usize) -> (Result<Option<Request>, HandshakeError>, BytesMut) {
    let mut src = BytesMut::new();
    for (i, chunk) in chunks.iter().enumerate() {
        src.extend_from_slice(chunk);
        match parse_request(&mut src, max_len) {
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
    let max_len = usize::from(input.max_len);
    let (whole, whole_rest) = parse(&[&input.wire[..]], max_len);
    let (split, split_rest) = parse(&pieces(&input.wire, &input.sizes), max_len);
    match (&whole, &split) {
        (Err(a), Err(b)) => assert!(
            a.status() == b.status() || a.status() == 431 || b.status() == 431,
            "refused with {} whole, {} split",
            a.status(),
            b.status()
        ),
        _ => {
            assert_eq!(whole, split, "split input parsed otherwise");
            assert_eq!(whole_rest, split_rest, "split input left other bytes");
        }
    }
    let Ok(Some(request)) = whole else {
        return;
    };
    assert!(request.path().starts_with('/'), "path {:?}", request.path());
    assert!(
        input.wire.ends_with(&whole_rest),
        "the rest is not the input's tail"
    );

    let protocol = request.protocols().first().map(String::as_str);
    let ours = input.deflate.map(Deflate::config);
    let mut out = BytesMut::new();
    let accepted = request
        .accept(protocol, ours.as_ref(), &mut out)
        .expect("accepting an offered subprotocol");
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    assert_eq!(
        response.parse(&out),
        Ok(httparse::Status::Complete(out.len())),
        "the 101 is not one response head: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(response.code, Some(101));
    assert_eq!(accepted.protocol(), protocol);
    if let Some(agreed) = accepted.deflate() {
        let ours = ours.expect("agreed without settings");
        assert!(agreed.server_max_window_bits <= ours.server_max_window_bits);
        assert!(agreed.client_max_window_bits <= ours.client_max_window_bits);
        assert!(agreed.server_no_context_takeover >= ours.server_no_context_takeover);
        assert!(agreed.client_no_context_takeover >= ours.client_no_context_takeover);
        Protocol::new(Role::Server, Config::default(), Some(agreed));
    }
});
