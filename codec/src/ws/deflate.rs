//! permessage-deflate (RFC 7692): negotiation and the per-message compressor/decompressor.

use std::cell::Cell;

use super::WsError;

#[cfg(feature = "deflate")]
mod engine;
#[cfg(not(feature = "deflate"))]
mod no_engine;

#[cfg(feature = "deflate")]
pub(crate) use engine::Deflate;
#[cfg(not(feature = "deflate"))]
pub(crate) use no_engine::Deflate;

const NAME: &str = "permessage-deflate";

/// Keep at most this much compression scratch space between messages.
const SCRATCH_KEEP: usize = 256 << 10;

thread_local! {
    /// Where messages are compressed before they are framed: one per thread (a reactor
    /// frames one message at a time), so a connection holds none between messages.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Borrows the thread's compression scratch space (empty when it is lent out already).
pub(crate) fn take_scratch() -> Vec<u8> {
    SCRATCH.try_with(Cell::take).unwrap_or_default()
}

/// Gives back what [`take_scratch`] lent, unless it grew too large to keep.
pub(crate) fn give_back_scratch(mut scratch: Vec<u8>) {
    if scratch.capacity() <= SCRATCH_KEEP {
        scratch.clear();
        let _ = SCRATCH.try_with(|s| s.set(scratch));
    }
}

/// permessage-deflate settings: what an endpoint offers or accepts before the handshake,
/// and what was agreed after it (the handshake functions return the agreed settings, which
/// [`Protocol::new`](super::Protocol::new) takes).
///
/// Before the handshake, on a **client**: `*_no_context_takeover` and `server_max_window_bits`
/// below 15 are requested in the offer; `client_max_window_bits` below 15 limits our own
/// compressor. On a **server**: `*_no_context_takeover` are imposed even when the client did
/// not ask, and the window bits are the largest the server allows (a client's request for a
/// smaller `server_max_window_bits` is honored).
///
/// `level` (0–9) and `min_size` are local: messages shorter than `min_size` are sent
/// uncompressed (RFC 7692 allows any message to be sent uncompressed). zlib cannot deflate
/// with a 256-byte window, so when 8 window bits are agreed for our side, our messages are
/// sent uncompressed; we still inflate whatever the peer sends.
///
/// ```
/// use getty_codec::ws::DeflateConfig;
/// let config = DeflateConfig { server_no_context_takeover: true, ..DeflateConfig::default() };
/// assert_eq!(config.offer(), "permessage-deflate; server_no_context_takeover; client_max_window_bits");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeflateConfig {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// log2 of the server's compression window, 8–15.
    pub server_max_window_bits: u8,
    /// log2 of the client's compression window, 8–15.
    pub client_max_window_bits: u8,
    /// Compression level, 0–9 (default 6).
    pub level: u32,
    /// Messages shorter than this are sent uncompressed (default 32 bytes).
    pub min_size: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 6,
            min_size: 32,
        }
    }
}

type Params<'a> = Vec<(&'a str, Option<std::borrow::Cow<'a, str>>)>;

/// Splits a `Sec-WebSocket-Extensions` value into extensions and their parameters. The
/// parameters of an extension are `None` when they are malformed (RFC 6455 §9.1: a name is
/// a token; a value is a token or a quoted string whose content is one, so an unbalanced
/// quote is malformed).
fn parse_extensions(value: &str) -> Vec<(&str, Option<Params<'_>>)> {
    value
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .map(|ext| {
            let mut parts = ext.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let params = parts
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => Some((token(k.trim())?, Some(param_value(v.trim())?))),
                    None => Some((token(p)?, None)),
                })
                .collect();
            (name, params)
        })
        .collect()
}

fn token(s: &str) -> Option<&str> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    (!s.is_empty() && s.bytes().all(tchar)).then_some(s)
}

/// A parameter value: a token, or a quoted string (escapes undone) whose content is one.
fn param_value(v: &str) -> Option<std::borrow::Cow<'_, str>> {
    let Some(quoted) = v.strip_prefix('"') else {
        return token(v).map(std::borrow::Cow::Borrowed);
    };
    let inner = quoted.strip_suffix('"')?;
    let mut unescaped = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => unescaped.push(chars.next()?),
            '"' => return None,
            c => unescaped.push(c),
        }
    }
    token(&unescaped)?;
    Some(std::borrow::Cow::Owned(unescaped))
}

/// RFC 7692 §7.1.2: a decimal integer from 8 to 15 with no leading zeros.
fn window_bits(value: Option<&str>) -> Option<u8> {
    let v = value?;
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// The parameters of one offer or response, each at most once.
#[derive(Default)]
struct Seen {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

fn read_params(params: &Params<'_>) -> Option<Seen> {
    let mut seen = Seen::default();
    for (name, value) in params {
        let value = value.as_deref();
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() && !seen.server_no_context_takeover => {
                seen.server_no_context_takeover = true
            }
            "client_no_context_takeover" if value.is_none() && !seen.client_no_context_takeover => {
                seen.client_no_context_takeover = true
            }
            "server_max_window_bits" if seen.server_max_window_bits.is_none() => {
                seen.server_max_window_bits = Some(window_bits(value)?)
            }
            "client_max_window_bits" if seen.client_max_window_bits.is_none() => {
                seen.client_max_window_bits = Some(match value {
                    None => None,
                    Some(_) => Some(window_bits(value)?),
                })
            }
            _ => return None,
        }
    }
    Some(seen)
}

impl DeflateConfig {
    fn check(&self) {
        assert!(
            (8..=15).contains(&self.server_max_window_bits)
                && (8..=15).contains(&self.client_max_window_bits)
                && self.level <= 9,
            "DeflateConfig: window bits must be 8..=15 and the level 0..=9"
        );
    }

    /// The client's offer, the value of its `Sec-WebSocket-Extensions` header.
    ///
    /// ```
    /// use getty_codec::ws::DeflateConfig;
    /// let c = DeflateConfig { server_max_window_bits: 10, client_max_window_bits: 12, ..Default::default() };
    /// assert_eq!(c.offer(), "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12");
    /// ```
    pub fn offer(&self) -> String {
        self.check();
        let mut s = String::from(NAME);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            s.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        if self.client_max_window_bits < 15 {
            s.push_str(&format!(
                "; client_max_window_bits={}",
                self.client_max_window_bits
            ));
        } else {
            s.push_str("; client_max_window_bits");
        }
        s
    }

    /// Server side: picks the first acceptable permessage-deflate offer among the client's
    /// `Sec-WebSocket-Extensions` values, and returns the agreed settings and the response
    /// header value. `None` when no offer is acceptable (an offer with an unknown, repeated
    /// or malformed parameter is declined, as RFC 7692 requires).
    ///
    /// ```
    /// use getty_codec::ws::DeflateConfig;
    /// let ours = DeflateConfig::default();
    /// let (agreed, header) = ours
    ///     .accept_offer(["x-unknown, permessage-deflate; server_max_window_bits=10"])
    ///     .unwrap();
    /// assert_eq!(agreed.server_max_window_bits, 10);
    /// assert_eq!(header, "permessage-deflate; server_max_window_bits=10");
    /// assert!(ours.accept_offer(["permessage-deflate; bogus"]).is_none());
    /// ```
    pub fn accept_offer<'a>(
        &self,
        header_values: impl IntoIterator<Item = &'a str>,
    ) -> Option<(DeflateConfig, String)> {
        self.check();
        for value in header_values {
            for (name, params) in parse_extensions(value) {
                if !name.eq_ignore_ascii_case(NAME) {
                    continue;
                }
                let Some(seen) = params.as_ref().and_then(read_params) else {
                    continue;
                };
                let mut agreed = *self;
                agreed.server_no_context_takeover |= seen.server_no_context_takeover;
                agreed.client_no_context_takeover |= seen.client_no_context_takeover;
                let requested = seen.server_max_window_bits.unwrap_or(15);
                agreed.server_max_window_bits = requested.min(self.server_max_window_bits);
                let mut response = String::from(NAME);
                if agreed.server_no_context_takeover {
                    response.push_str("; server_no_context_takeover");
                }
                if agreed.client_no_context_takeover {
                    response.push_str("; client_no_context_takeover");
                }
                if agreed.server_max_window_bits < 15 || seen.server_max_window_bits.is_some() {
                    response.push_str(&format!(
                        "; server_max_window_bits={}",
                        agreed.server_max_window_bits
                    ));
                }
                match seen.client_max_window_bits {
                    Some(offered) => {
                        let bits = offered.unwrap_or(15).min(self.client_max_window_bits);
                        agreed.client_max_window_bits = bits;
                        if bits < 15 || offered.is_some() {
                            response.push_str(&format!("; client_max_window_bits={bits}"));
                        }
                    }
                    // The client cannot be limited; our inflater takes any window.
                    None => agreed.client_max_window_bits = 15,
                }
                return Some((agreed, response));
            }
        }
        None
    }

    /// Client side: checks the server's `Sec-WebSocket-Extensions` response against this
    /// offer and returns the agreed settings, or why the response is unacceptable.
    ///
    /// ```
    /// use getty_codec::ws::DeflateConfig;
    /// let ours = DeflateConfig::default();
    /// let agreed = ours
    ///     .accept_response("permessage-deflate; client_no_context_takeover; client_max_window_bits=9")
    ///     .unwrap();
    /// assert!(agreed.client_no_context_takeover);
    /// assert_eq!(agreed.client_max_window_bits, 9);
    /// assert!(ours.accept_response("permessage-deflate; server_max_window_bits=16").is_err());
    /// ```
    pub fn accept_response(&self, value: &str) -> Result<DeflateConfig, String> {
        self.check();
        let exts = parse_extensions(value);
        let [(name, params)] = &exts[..] else {
            return Err(format!("unexpected extensions {value:?}"));
        };
        if !name.eq_ignore_ascii_case(NAME) {
            return Err(format!("extension {name:?} was not offered"));
        }
        let seen = params
            .as_ref()
            .and_then(read_params)
            .ok_or_else(|| format!("bad permessage-deflate response {value:?}"))?;
        if self.server_no_context_takeover && !seen.server_no_context_takeover {
            return Err("server_no_context_takeover was requested but not agreed".into());
        }
        let mut agreed = *self;
        agreed.server_no_context_takeover = seen.server_no_context_takeover;
        agreed.client_no_context_takeover |= seen.client_no_context_takeover;
        agreed.server_max_window_bits = match seen.server_max_window_bits {
            Some(bits) if bits > self.server_max_window_bits => {
                return Err(format!("server_max_window_bits={bits} exceeds the offer"))
            }
            Some(bits) => bits,
            None if self.server_max_window_bits < 15 => {
                return Err("server_max_window_bits was requested but not agreed".into())
            }
            None => 15,
        };
        agreed.client_max_window_bits = match seen.client_max_window_bits {
            Some(None) => return Err("client_max_window_bits needs a value in a response".into()),
            Some(Some(bits)) => bits.min(self.client_max_window_bits),
            None => self.client_max_window_bits,
        };
        Ok(agreed)
    }
}

pub(crate) fn too_big(len: usize, max: usize) -> WsError {
    WsError::too_long(len, max)
}
