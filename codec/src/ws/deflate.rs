//! permessage-deflate (RFC 7692): negotiation and the per-message compressor/decompressor.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::utf8::Utf8Validator;
use super::{close_code, Role, WsError};

const NAME: &str = "permessage-deflate";
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

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

type Params<'a> = Vec<(&'a str, Option<&'a str>)>;

/// Splits a `Sec-WebSocket-Extensions` value into extensions and their parameters.
fn parse_extensions(value: &str) -> Vec<(&str, Params<'_>)> {
    value
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .map(|ext| {
            let mut parts = ext.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let params = parts
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                    None => (p, None),
                })
                .collect();
            (name, params)
        })
        .collect()
}

fn window_bits(value: Option<&str>) -> Option<u8> {
    let v = value?;
    if v.is_empty() || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
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
    for &(name, value) in params {
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
                let Some(seen) = read_params(&params) else {
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
        let seen = read_params(params)
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

/// The compressor and decompressor of one connection.
pub(crate) struct Deflate {
    config: DeflateConfig,
    local_bits: u8,
    local_no_context: bool,
    remote_no_context: bool,
    compress: Option<Compress>,
    decompress: Decompress,
    /// The peer ended a deflate stream (BFINAL): start afresh with the next message.
    stream_ended: bool,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Deflate {
    pub(crate) fn new(config: DeflateConfig, role: Role) -> Self {
        config.check();
        let (local_bits, local_no_context, remote_no_context) = match role {
            Role::Server => (
                config.server_max_window_bits,
                config.server_no_context_takeover,
                config.client_no_context_takeover,
            ),
            Role::Client => (
                config.client_max_window_bits,
                config.client_no_context_takeover,
                config.server_no_context_takeover,
            ),
        };
        Deflate {
            config,
            local_bits,
            local_no_context,
            remote_no_context,
            compress: None,
            // A 32 KiB window inflates whatever window the peer used.
            decompress: Decompress::new_with_window_bits(false, 15),
            stream_ended: false,
        }
    }

    /// Whether a message of `len` bytes should go out compressed.
    pub(crate) fn wants(&self, len: usize) -> bool {
        len >= self.config.min_size && self.local_bits >= 9
    }

    /// Compresses one whole message into `out` (cleared first), without the sync-flush tail.
    pub(crate) fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), WsError> {
        let (level, bits) = (self.config.level, self.local_bits);
        let c = self.compress.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(level), false, bits)
        });
        out.clear();
        let start_in = c.total_in();
        loop {
            let consumed = (c.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve((input.len() - consumed) / 2 + 256);
            }
            c.compress_vec(&input[consumed..], out, FlushCompress::Sync)
                .map_err(|e| WsError::new(close_code::INTERNAL_ERROR, format!("deflate: {e}")))?;
            let consumed = (c.total_in() - start_in) as usize;
            if consumed == input.len() && out.len() < out.capacity() {
                break;
            }
        }
        if !out.ends_with(&TAIL) {
            return Err(WsError::new(
                close_code::INTERNAL_ERROR,
                "deflate: sync flush did not end with the empty block",
            ));
        }
        out.truncate(out.len() - TAIL.len());
        if self.local_no_context {
            c.reset();
        }
        Ok(())
    }

    /// Drops the compressor's history: the next message compresses as if it were the
    /// first, so it never refers to bytes the peer did not inflate.
    pub(crate) fn forget_context(&mut self) {
        if let Some(c) = self.compress.as_mut() {
            c.reset();
        }
    }

    /// Inflates the next piece of a compressed message, appending to `out`, which may not
    /// grow past `max` bytes (error 1009 as soon as it would). New text is fed to `utf8`.
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
        mut utf8: Option<&mut Utf8Validator>,
    ) -> Result<(), WsError> {
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                let room = (max + 1).saturating_sub(out.len());
                if room == 0 {
                    return Err(too_big(max));
                }
                out.reserve_exact(room.min(out.len().max(4096)));
            }
            let (in0, out0) = (self.decompress.total_in(), out.len());
            if self.stream_ended {
                if consumed < input.len() {
                    return Err(WsError::new(
                        close_code::INVALID_PAYLOAD,
                        "compressed data after the end of the deflate stream",
                    ));
                }
                return Ok(());
            }
            let status = self
                .decompress
                .decompress_vec(&input[consumed..], out, FlushDecompress::None)
                .map_err(|e| WsError::new(close_code::INVALID_PAYLOAD, format!("inflate: {e}")))?;
            consumed += (self.decompress.total_in() - in0) as usize;
            if let Some(v) = utf8.as_deref_mut() {
                v.feed(&out[out0..]).map_err(|()| {
                    WsError::new(
                        close_code::INVALID_PAYLOAD,
                        "invalid UTF-8 in a text message",
                    )
                })?;
            }
            if out.len() > max {
                return Err(too_big(max));
            }
            if status == Status::StreamEnd {
                self.stream_ended = true;
            }
            let progress = self.decompress.total_in() > in0 || out.len() > out0;
            if consumed == input.len() && out.len() < out.capacity() {
                return Ok(());
            }
            if !progress && out.len() < out.capacity() {
                return Err(WsError::new(
                    close_code::INVALID_PAYLOAD,
                    "inflate made no progress",
                ));
            }
        }
    }

    /// Ends an inflated message: feeds the sync-flush tail, then resets the decompressor when
    /// the peer does not keep its context (or ended its stream).
    pub(crate) fn finish_message(
        &mut self,
        out: &mut Vec<u8>,
        max: usize,
        utf8: Option<&mut Utf8Validator>,
    ) -> Result<(), WsError> {
        if !self.stream_ended {
            self.inflate(&TAIL, out, max, utf8)?;
        }
        if self.remote_no_context || self.stream_ended {
            self.decompress.reset(false);
            self.stream_ended = false;
        }
        Ok(())
    }
}

pub(crate) fn too_big(max: usize) -> WsError {
    WsError::new(
        close_code::TOO_BIG,
        format!("message exceeds the maximum of {max} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zlib_rs_deflates_with_small_windows() {
        for bits in 9..=15u8 {
            let mut c = Compress::new_with_window_bits(Compression::default(), false, bits);
            let mut out = Vec::with_capacity(1024);
            c.compress_vec(b"hello hello hello", &mut out, FlushCompress::Sync)
                .unwrap();
            assert!(out.ends_with(&TAIL), "bits {bits}");
        }
    }

    #[test]
    fn server_declines_bad_offers_and_takes_the_next() {
        let ours = DeflateConfig::default();
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=0x9",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            "x-webkit-deflate-frame",
        ] {
            assert!(ours.accept_offer([bad]).is_none(), "{bad}");
        }
        let (agreed, header) = ours
            .accept_offer([
                "permessage-deflate; foo, permessage-deflate; client_no_context_takeover; client_max_window_bits=\"10\"",
            ])
            .unwrap();
        assert!(agreed.client_no_context_takeover);
        assert_eq!(agreed.client_max_window_bits, 10);
        assert_eq!(
            header,
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=10"
        );
    }

    #[test]
    fn server_imposes_its_own_limits() {
        let ours = DeflateConfig {
            server_no_context_takeover: true,
            server_max_window_bits: 11,
            client_max_window_bits: 12,
            ..DeflateConfig::default()
        };
        let (agreed, header) = ours
            .accept_offer(["permessage-deflate; client_max_window_bits"])
            .unwrap();
        assert_eq!(
            header,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=11; client_max_window_bits=12"
        );
        assert_eq!(agreed.client_max_window_bits, 12);
        // Without client_max_window_bits in the offer the client cannot be limited.
        let (agreed, header) = ours.accept_offer(["permessage-deflate"]).unwrap();
        assert_eq!(agreed.client_max_window_bits, 15);
        assert!(!header.contains("client_max_window_bits"));
    }

    #[test]
    fn client_checks_the_response() {
        let ours = DeflateConfig {
            server_no_context_takeover: true,
            server_max_window_bits: 10,
            ..DeflateConfig::default()
        };
        let ok = "permessage-deflate; server_no_context_takeover; server_max_window_bits=9";
        let agreed = ours.accept_response(ok).unwrap();
        assert_eq!(agreed.server_max_window_bits, 9);
        for bad in [
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=11",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9; x=1",
            "x-other",
            "permessage-deflate, permessage-deflate",
        ] {
            assert!(ours.accept_response(bad).is_err(), "{bad}");
        }
    }
}
