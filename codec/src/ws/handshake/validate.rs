//! What a client may put in its request: the checks that keep it valid HTTP.

use std::fmt;

/// Which part of a client's upgrade request is not valid (see [`InvalidRequest`]).
///
/// ```
/// use getty_codec::ws::{ClientRequest, RequestPart};
/// let err = ClientRequest::new("h", "/a b").check().unwrap_err();
/// assert_eq!(err.part(), RequestPart::Path);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestPart {
    /// The `Host` header: a host name or address and an optional port (RFC 3986 §3.2.2).
    Host,
    /// The request target: an absolute path and an optional query (RFC 3986 §3.3, §3.4).
    Path,
    /// A header name: an RFC 7230 token, and not one the request sets itself.
    HeaderName,
    /// A header value: no control characters but tab (RFC 7230 §3.2).
    HeaderValue,
    /// A subprotocol: an RFC 7230 token (RFC 6455 §4.1).
    Protocol,
}

/// A client's upgrade request that would not be valid HTTP: a control character, a space
/// or another character the RFCs forbid where it stands (a CR LF in a path or a header
/// value would inject headers of its own). Found by [`ClientRequest::check`](crate::ws::ClientRequest::check) before
/// anything is written.
///
/// ```
/// use getty_codec::ws::{ClientRequest, RequestPart};
/// let err = ClientRequest::new("h", "/")
///     .header("X-Token", "t\r\nX-Injected: 1")
///     .check()
///     .unwrap_err();
/// assert_eq!(err.part(), RequestPart::HeaderValue);
/// assert!(err.to_string().contains("X-Token"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRequest {
    part: RequestPart,
    detail: String,
}

impl InvalidRequest {
    pub(super) fn new(part: RequestPart, detail: String) -> Self {
        InvalidRequest { part, detail }
    }

    /// The part of the request that is not valid.
    ///
    /// ```
    /// use getty_codec::ws::{ClientRequest, RequestPart};
    /// let err = ClientRequest::new("h", "/").protocol("a b").check().unwrap_err();
    /// assert_eq!(err.part(), RequestPart::Protocol);
    /// ```
    pub fn part(&self) -> RequestPart {
        self.part
    }
}

impl fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid WebSocket upgrade request: {}", self.detail)
    }
}

impl std::error::Error for InvalidRequest {}

/// RFC 7230 `tchar`: what a token (a header name, a subprotocol) is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// RFC 3986 `unreserved` and `sub-delims`.
fn is_unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
}

/// The first byte of `s` outside `allowed`, where `%` must start a `%HH` escape; `None`
/// when every byte is allowed.
fn first_bad(s: &str, allowed: impl Fn(u8) -> bool) -> Option<(usize, u8)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Some((i, b));
            }
            i += 3;
            continue;
        }
        if !allowed(b) {
            return Some((i, b));
        }
        i += 1;
    }
    None
}

/// A request target in origin form: `/path[?query]`. Refused: what would break the request
/// line or change what the target means — control characters, space, DEL and `#` (a
/// fragment is never sent) — and non-ASCII, which browsers percent-encode (so must the
/// caller). Everything else printable goes out as given, as browsers and tungstenite send
/// it: `[`, `]`, `{`, `}`, `|`, `^`, quotes, backslashes and a `%` that starts no escape
/// are for the server to judge.
pub(super) fn check_path(path: &str) -> Result<(), InvalidRequest> {
    let bad = |why: String| Err(InvalidRequest::new(RequestPart::Path, why));
    if !path.starts_with('/') {
        return bad(format!("the path {path:?} does not start with '/'"));
    }
    let Some((at, c)) = path
        .char_indices()
        .find(|&(_, c)| !c.is_ascii_graphic() || c == '#')
    else {
        return Ok(());
    };
    let mut utf8 = [0u8; 4];
    let escaped: String = c
        .encode_utf8(&mut utf8)
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    let what = match c {
        ' ' => "a space".to_string(),
        '#' => "'#' (a fragment is never sent)".to_string(),
        c if c.is_ascii() => format!("the control character {:#04x}", c as u32),
        c => format!("the non-ASCII character {c:?}"),
    };
    bad(format!(
        "the path {path:?} has {what} at byte {at} (percent-encode it: {escaped})"
    ))
}

/// The `Host` header: `host[:port]`, where host is a registered name, an IPv4 address or
/// a bracketed IP literal, which may carry an RFC 6874 zone (`[fe80::1%25eth0]`), and the
/// port may be empty (RFC 3986 §3.2.3: the scheme's default).
pub(super) fn check_host(host: &str) -> Result<(), InvalidRequest> {
    let bad = || {
        Err(InvalidRequest::new(
            RequestPart::Host,
            format!("the host {host:?} is not a valid URI host[:port]"),
        ))
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => (name, Some(port)),
        _ => (host, None),
    };
    if port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
        return bad();
    }
    let ok = if let Some(inner) = name.strip_prefix('[') {
        inner.strip_suffix(']').is_some_and(|literal| {
            // IPv6address [ "%25" ZoneID ] (RFC 6874), or an IPvFuture.
            let (address, zone) = match literal.split_once('%') {
                Some((address, zone)) => (address, Some(zone)),
                None => (literal, None),
            };
            let is_unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
            !address.is_empty()
                && address
                    .bytes()
                    .all(|b| is_unreserved_or_sub_delim(b) || b == b':')
                && zone.is_none_or(|zone| {
                    zone.strip_prefix("25")
                        .is_some_and(|id| !id.is_empty() && first_bad(id, is_unreserved).is_none())
                })
        })
    } else {
        !name.is_empty() && first_bad(name, is_unreserved_or_sub_delim).is_none()
    };
    if ok {
        Ok(())
    } else {
        bad()
    }
}

/// Headers the request writes itself: a second copy would contradict it.
const OWN_HEADERS: [&str; 7] = [
    "Host",
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
];

pub(super) fn check_header(name: &str, value: &str) -> Result<(), InvalidRequest> {
    if !is_token(name) {
        return Err(InvalidRequest::new(
            RequestPart::HeaderName,
            format!("the header name {name:?} is not an HTTP token"),
        ));
    }
    if OWN_HEADERS.iter().any(|own| own.eq_ignore_ascii_case(name)) {
        return Err(InvalidRequest::new(
            RequestPart::HeaderName,
            format!(
                "the header {name:?} is set by the upgrade request itself \
                 (subprotocols and extensions have their own settings)"
            ),
        ));
    }
    // field-value: visible characters, spaces and tabs, and obs-text (bytes >= 0x80).
    if let Some(b) = value
        .bytes()
        .find(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(InvalidRequest::new(
            RequestPart::HeaderValue,
            format!("the value of the header {name:?} has the control character {b:#04x}"),
        ));
    }
    Ok(())
}
