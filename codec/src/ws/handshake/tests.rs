use super::*;
use crate::ws::DeflateConfig;

fn request(extra: &str) -> BytesMut {
    BytesMut::from(
            format!(
                "GET /p HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            )
            .as_bytes(),
        )
}

#[test]
fn rfc_sample_accept_key() {
    let req = parse_request(&mut request(""), 8192).unwrap().unwrap();
    let mut out = BytesMut::new();
    req.accept(None, None, &mut out).unwrap();
    let text = std::str::from_utf8(&out).unwrap();
    assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
}

#[test]
fn request_split_anywhere_parses_alike_and_keeps_leftovers() {
    let mut whole = request("");
    whole.extend_from_slice(b"\x81\x80");
    let total = whole.len();
    for cut in 0..total {
        let mut buf = BytesMut::from(&whole[..cut]);
        let first = parse_request(&mut buf, 8192).unwrap();
        if cut < total - 2 {
            assert!(first.is_none(), "cut {cut}");
            buf.extend_from_slice(&whole[cut..]);
            let req = parse_request(&mut buf, 8192).unwrap().unwrap();
            assert_eq!(req.path(), "/p");
        } else {
            assert!(first.is_some());
            buf.extend_from_slice(&whole[cut..]);
        }
        assert_eq!(&buf[..], b"\x81\x80", "cut {cut}");
    }
}

#[test]
fn refusals_carry_their_status() {
    let cases: [(&[u8], u16); 8] = [
            (b"POST / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET / HTTP/1.0\r\nHost: h\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 426),
            (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n", 426),
            (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n", 400),
            (b"\x00\x01\x02 garbage\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        ];
    for (bytes, status) in cases {
        let err = parse_request(&mut BytesMut::from(bytes), 8192).unwrap_err();
        assert_eq!(err.status(), status, "{}", String::from_utf8_lossy(bytes));
    }
}

#[test]
fn repeated_keys_and_empty_or_repeated_hosts_are_refused() {
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
    for (headers, what) in [
        (format!("Host: h\r\n{upgrade}{key}{key}"), "two keys"),
        (format!("Host: \r\n{upgrade}{key}"), "an empty Host"),
        (format!("Host: h\r\nHost: i\r\n{upgrade}{key}"), "two Hosts"),
    ] {
        let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\n{headers}\r\n").as_bytes());
        assert_eq!(
            parse_request(&mut buf, 8192).unwrap_err().status(),
            400,
            "{what}"
        );
    }
}

#[test]
fn absolute_form_targets_are_taken_for_their_path() {
    let upgrade = "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for (target, path) in [
        ("/chat?x", Some("/chat?x")),
        ("ws://h/chat", Some("/chat")),
        ("WSS://h:443/chat?x=1#f", Some("/chat?x=1")),
        ("http://h", Some("/")),
        ("https://h?q", Some("/?q")),
        ("*", None),
        ("h:80", None),
        ("chat", None),
        ("ftp://h/chat", None),
        ("ws:///chat", None),
    ] {
        let mut buf = BytesMut::from(format!("GET {target} HTTP/1.1\r\n{upgrade}\r\n").as_bytes());
        match (parse_request(&mut buf, 8192), path) {
            (Ok(Some(req)), Some(path)) => assert_eq!(req.path(), path, "{target}"),
            (Err(e), None) => assert_eq!(e.status(), 400, "{target}"),
            (other, _) => panic!("{target}: {other:?}"),
        }
    }
}

#[test]
fn a_101_over_http_1_0_is_refused() {
    let mut wire = BytesMut::new();
    let hs = ClientRequest::new("h", "/").write(&mut wire);
    let req = parse_request(&mut wire, 8192).unwrap().unwrap();
    let mut back = BytesMut::new();
    req.accept(None, None, &mut back).unwrap();
    let old = String::from_utf8(back.to_vec())
        .unwrap()
        .replace("HTTP/1.1 101", "HTTP/1.0 101");
    let err = hs
        .parse_response(&mut BytesMut::from(old.as_bytes()), 8192)
        .unwrap_err();
    assert_eq!(err.status(), 101);
}

#[test]
fn malformed_extension_parameters_are_declined_or_refused() {
    let ours = DeflateConfig::default();
    for bad in [
        "permessage-deflate; server_max_window_bits=09",
        "permessage-deflate; client_max_window_bits=010",
        "permessage-deflate; client_max_window_bits=\"10",
        "permessage-deflate; client_max_window_bits=10\"",
        "permessage-deflate; client_max_window_bits=\"1\"0\"",
        "permessage-deflate; client_max_window_bits=\"\"",
        "permessage-deflate; server_max_window_bits=1 0",
        "permessage-deflate; bad name=10",
    ] {
        assert!(ours.accept_offer([bad]).is_none(), "offer {bad}");
        assert!(ours.accept_response(bad).is_err(), "response {bad}");
    }
    let (agreed, _) = ours
        .accept_offer(["permessage-deflate; client_max_window_bits=\"1\\0\""])
        .unwrap();
    assert_eq!(agreed.client_max_window_bits, 10);
    assert_eq!(
        ours.accept_response("permessage-deflate; server_max_window_bits=\"9\"")
            .unwrap()
            .server_max_window_bits,
        9
    );
}

#[test]
fn requests_that_would_inject_headers_are_refused() {
    let ok = ClientRequest::new("[::1]:9000", "/a/b%2F?q=1&r=%7E")
        .header("Authorization", "Bearer a.b c\tfoo")
        .header("X-Utf8", "héllo")
        .protocol("chat.v2");
    assert_eq!(ok.check(), Ok(()));
    let cases = [
        (
            ClientRequest::new("h", "/x HTTP/1.1\r\nX: 1\r\nY:"),
            RequestPart::Path,
        ),
        (ClientRequest::new("h", "x"), RequestPart::Path),
        (ClientRequest::new("h", "/\u{7f}"), RequestPart::Path),
        (ClientRequest::new("h", "/é"), RequestPart::Path),
        (ClientRequest::new("h", "/a#b"), RequestPart::Path),
        (ClientRequest::new("h", "/?a=\tb"), RequestPart::Path),
        (ClientRequest::new("[fe80::1%eth0]", "/"), RequestPart::Host),
        (ClientRequest::new("[fe80::1%25]", "/"), RequestPart::Host),
        (ClientRequest::new("[%25eth0]", "/"), RequestPart::Host),
        (ClientRequest::new("h h", "/"), RequestPart::Host),
        (ClientRequest::new("h:8x", "/"), RequestPart::Host),
        (ClientRequest::new("[::1", "/"), RequestPart::Host),
        (ClientRequest::new("", "/"), RequestPart::Host),
        (
            ClientRequest::new("h", "/").header("", "v"),
            RequestPart::HeaderName,
        ),
        (
            ClientRequest::new("h", "/").header("X:Y", "v"),
            RequestPart::HeaderName,
        ),
        (
            ClientRequest::new("h", "/").header("host", "v"),
            RequestPart::HeaderName,
        ),
        (
            ClientRequest::new("h", "/").header("X", "a\nb"),
            RequestPart::HeaderValue,
        ),
        (
            ClientRequest::new("h", "/").header("X", "a\rb"),
            RequestPart::HeaderValue,
        ),
        (
            ClientRequest::new("h", "/").protocol(""),
            RequestPart::Protocol,
        ),
        (
            ClientRequest::new("h", "/").protocol("a,b"),
            RequestPart::Protocol,
        ),
    ];
    for (request, part) in cases {
        let err = request.clone().check().unwrap_err();
        assert_eq!(err.part(), part, "{request:?}");
        let mut out = BytesMut::new();
        assert!(request.try_write(&mut out).is_err());
        assert!(out.is_empty());
    }
}

/// What browsers and tungstenite send raw is sent raw; what is refused is named as the
/// character it is, with its escape.
#[test]
fn paths_take_what_browsers_send_and_hosts_take_zones_and_empty_ports() {
    for path in [
        "/chat?a[]=1",
        "/q?filter={\"a\":1}",
        "/x?sym=A|B",
        "/p?x=^",
        "/caf%C3%A9",
        "/%zz",
        "/a\\b?<x>`y`",
    ] {
        assert_eq!(ClientRequest::new("h", path).check(), Ok(()), "{path}");
    }
    for host in ["h:", "[::1]:", "[fe80::1%25eth0]:80", "[fe80::1%25en%2D1]"] {
        assert_eq!(ClientRequest::new(host, "/").check(), Ok(()), "{host}");
    }
    let why = |path: &str| {
        ClientRequest::new("h", path)
            .check()
            .unwrap_err()
            .to_string()
    };
    let cafe = why("/café");
    assert!(
        cafe.contains("the non-ASCII character 'é' at byte 4 (percent-encode it: %C3%A9)"),
        "{cafe}"
    );
    assert!(why("/a b").contains("a space at byte 2 (percent-encode it: %20)"));
    assert!(why("/a\nb").contains("the control character 0x0a at byte 2"));
    assert!(why("/a#b").contains("'#'"));
}

#[test]
fn oversized_heads_are_refused_before_completion() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nX-Long: "[..]);
    buf.extend_from_slice(&[b'a'; 9000]);
    assert_eq!(parse_request(&mut buf, 8192).unwrap_err().status(), 431);
    let mut many = String::from("GET / HTTP/1.1\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let err = parse_request(&mut BytesMut::from(many.as_bytes()), 1 << 20).unwrap_err();
    assert_eq!(err.status(), 431);
}

#[test]
fn error_responses_are_complete_http() {
    for status in [400, 403, 404, 426, 431] {
        let mut out = BytesMut::new();
        reject(status, &mut out);
        let mut raw = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut raw);
        let httparse::Status::Complete(len) = resp.parse(&out).unwrap() else {
            panic!("incomplete response");
        };
        assert_eq!(resp.code, Some(status));
        let body_len: usize = resp
            .headers
            .iter()
            .find(|h| h.name == "Content-Length")
            .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
            .unwrap();
        assert_eq!(out.len() - len, body_len);
    }
}

#[test]
fn unoffered_subprotocol_is_refused_on_both_sides() {
    let req = parse_request(&mut request("Sec-WebSocket-Protocol: a\r\n"), 8192)
        .unwrap()
        .unwrap();
    let mut out = BytesMut::new();
    assert_eq!(
        req.accept(Some("b"), None, &mut out).unwrap_err().status(),
        400
    );
    assert!(out.is_empty());

    let mut wire = BytesMut::new();
    let hs = ClientRequest::new("h", "/").protocol("a").write(&mut wire);
    let req = parse_request(&mut wire, 8192).unwrap().unwrap();
    let mut back = BytesMut::new();
    req.accept(Some("a"), None, &mut back).unwrap();
    let forged = String::from_utf8(back.to_vec())
        .unwrap()
        .replace("Protocol: a", "Protocol: z");
    let err = hs
        .parse_response(&mut BytesMut::from(forged.as_bytes()), 8192)
        .unwrap_err();
    assert_eq!(err.status(), 101);
}

#[test]
fn client_rejects_a_wrong_accept_key_and_unoffered_extensions() {
    let mut wire = BytesMut::new();
    let hs = ClientRequest::new("h", "/").write(&mut wire);
    let mut bad = BytesMut::from(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    );
    assert!(hs.parse_response(&mut bad, 8192).is_err());

    let req = parse_request(&mut wire, 8192).unwrap().unwrap();
    let mut back = BytesMut::new();
    req.accept(None, None, &mut back).unwrap();
    let with_ext = String::from_utf8(back.to_vec()).unwrap().replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
    );
    assert!(hs
        .parse_response(&mut BytesMut::from(with_ext.as_bytes()), 8192)
        .is_err());
}

/// Without the deflate feature a client offers nothing and a server declines every offer
/// (RFC 7692 lets it), so both ends run uncompressed.
#[cfg(not(feature = "deflate"))]
#[test]
fn without_the_deflate_feature_nothing_is_offered_or_accepted() {
    let mut wire = BytesMut::new();
    let hs = ClientRequest::new("h", "/")
        .deflate(DeflateConfig::default())
        .write(&mut wire);
    assert!(!std::str::from_utf8(&wire)
        .unwrap()
        .contains("permessage-deflate"));
    let offer = format!(
        "Sec-WebSocket-Extensions: {}\r\n",
        DeflateConfig::default().offer()
    );
    let mut offered = request(&offer);
    let req = parse_request(&mut offered, 8192).unwrap().unwrap();
    assert_eq!(req.extensions().count(), 1);
    let mut back = BytesMut::new();
    let accepted = req
        .accept(None, Some(&DeflateConfig::default()), &mut back)
        .unwrap();
    assert!(accepted.deflate().is_none());
    assert!(!std::str::from_utf8(&back)
        .unwrap()
        .contains("Sec-WebSocket-Extensions"));
    let req = parse_request(&mut wire, 8192).unwrap().unwrap();
    let mut back = BytesMut::new();
    req.accept(None, Some(&DeflateConfig::default()), &mut back)
        .unwrap();
    let resp = hs.parse_response(&mut back, 8192).unwrap().unwrap();
    assert!(resp.deflate().is_none());
}

#[cfg(feature = "deflate")]
#[test]
fn deflate_negotiation_end_to_end() {
    let offer = DeflateConfig {
        client_no_context_takeover: true,
        server_max_window_bits: 12,
        ..DeflateConfig::default()
    };
    let mut wire = BytesMut::new();
    let hs = ClientRequest::new("h", "/").deflate(offer).write(&mut wire);
    let req = parse_request(&mut wire, 8192).unwrap().unwrap();
    let server_side = DeflateConfig {
        server_no_context_takeover: true,
        ..DeflateConfig::default()
    };
    let mut back = BytesMut::new();
    let accepted = req.accept(None, Some(&server_side), &mut back).unwrap();
    let resp = hs.parse_response(&mut back, 8192).unwrap().unwrap();
    let (s, c) = (accepted.deflate().unwrap(), resp.deflate().unwrap());
    for d in [s, c] {
        assert!(d.server_no_context_takeover && d.client_no_context_takeover);
        assert_eq!(d.server_max_window_bits, 12);
    }
}

#[test]
fn garbage_never_panics() {
    for seed in 0..2000u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let len = rng.usize(0..200);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if seed % 2 == 0 {
            bytes.splice(0..0, b"GET / HTTP/1.1\r\n".iter().copied());
            bytes.extend_from_slice(b"\r\n\r\n");
        }
        let _ = parse_request(&mut BytesMut::from(&bytes[..]), 8192);
        let hs = ClientRequest::new("h", "/").write(&mut BytesMut::new());
        let _ = hs.parse_response(&mut BytesMut::from(&bytes[..]), 8192);
    }
}
