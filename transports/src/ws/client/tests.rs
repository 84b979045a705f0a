use super::WsUrl;

#[test]
fn urls_parse_into_host_port_and_path() {
    let cases = [
        ("ws://h", false, "h", 80, "/", "h"),
        ("wss://h", true, "h", 443, "/", "h"),
        (
            "ws://h:9000/a/b?c=d#frag",
            false,
            "h",
            9000,
            "/a/b?c=d",
            "h:9000",
        ),
        ("WS://H:80?x", false, "H", 80, "/?x", "H"),
        (
            "ws://[::1]:7000/p",
            false,
            "[::1]",
            7000,
            "/p",
            "[::1]:7000",
        ),
        ("wss://[::1]/", true, "[::1]", 443, "/", "[::1]"),
    ];
    for (url, secure, host, port, path, host_header) in cases {
        let u = WsUrl::parse(url).unwrap();
        assert_eq!(
            (u.secure, u.host.as_str(), u.port, u.path.as_str()),
            (secure, host, port, path),
            "{url}"
        );
        assert_eq!(u.host_header(), host_header, "{url}");
    }
    assert_eq!(WsUrl::parse("ws://[::1]:1/").unwrap().bare_host(), "::1");
}

#[test]
fn bad_urls_are_refused() {
    for url in [
        "http://h/",
        "ws://",
        "ws://:80/",
        "ws://h:port/",
        "ws://h:99999/",
        "ws://u:p@h/",
        "h:80",
    ] {
        assert!(WsUrl::parse(url).is_err(), "{url}");
    }
}
