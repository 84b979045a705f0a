//! permessage-deflate (RFC 7692): negotiation and the per-message compressor/decompressor.

use std::cell::Cell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::utf8::Utf8Validator;
use super::{close_code, Role, WsError};

const NAME: &str = "permessage-deflate";
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

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

/// The compressor and decompressor of one connection.
///
/// Neither engine exists until it is needed: the compressor is made for the first message
/// this end compresses, the decompressor for the first compressed message the peer sends
/// (together about 320 KiB with 15-bit windows, most of it the compressor's). Where the
/// agreement says a direction starts every message with an empty window (its
/// `*_no_context_takeover`), that engine is dropped again after each message, so an idle
/// connection holds neither. With context takeover the engine carries the window from
/// message to message and lives as long as the connection.
pub(crate) struct Deflate {
    config: DeflateConfig,
    local_bits: u8,
    /// The decompressor's window: the peer's agreed window, but at least 9 bits (zlib
    /// cannot make a 256-byte window: asked for 8 bits, it deflates with 9, and RFC 7692
    /// peers built on it do; flate2 takes 9 to 15 only). zlib-rs, as of 0.6, keeps a
    /// 32 KiB window for raw streams whatever it is given (allocated with its state, its
    /// pages touched only as it fills); a backend that honours the bits saves memory.
    remote_bits: u8,
    local_no_context: bool,
    remote_no_context: bool,
    compress: Option<Compress>,
    decompress: Option<Decompress>,
    /// The last message encoded is in the compressor's window (see `forget_last`).
    last_in_window: bool,
    /// The peer ended a deflate stream (BFINAL): start afresh with the next message.
    stream_ended: bool,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("config", &self.config)
            .field("compressor", &self.compress.is_some())
            .field("decompressor", &self.decompress.is_some())
            .finish_non_exhaustive()
    }
}

impl Deflate {
    pub(crate) fn new(config: DeflateConfig, role: Role) -> Self {
        config.check();
        let (local_bits, remote_bits, local_no_context, remote_no_context) = match role {
            Role::Server => (
                config.server_max_window_bits,
                config.client_max_window_bits,
                config.server_no_context_takeover,
                config.client_no_context_takeover,
            ),
            Role::Client => (
                config.client_max_window_bits,
                config.server_max_window_bits,
                config.client_no_context_takeover,
                config.server_no_context_takeover,
            ),
        };
        Deflate {
            config,
            local_bits,
            remote_bits: remote_bits.max(9),
            local_no_context,
            remote_no_context,
            compress: None,
            decompress: None,
            last_in_window: false,
            stream_ended: false,
        }
    }

    /// Whether a message of `len` bytes should go out compressed.
    pub(crate) fn wants(&self, len: usize) -> bool {
        len >= self.config.min_size && self.local_bits >= 9
    }

    /// Whether the engines exist: (compressor, decompressor).
    #[cfg(test)]
    pub(crate) fn engines(&self) -> (bool, bool) {
        (self.compress.is_some(), self.decompress.is_some())
    }

    /// Compresses one whole message into `out` (cleared first), without the sync-flush tail.
    /// The message is then in the compressor's window (with context takeover), unless the
    /// caller sends it uncompressed after all and calls [`forget_context`](Self::forget_context).
    pub(crate) fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), WsError> {
        let result = self.compress_inner(input, out);
        // Without context takeover, or after a failure (the engine's state is unknown), the
        // next message starts with an empty window: give the engine back meanwhile.
        if self.local_no_context || result.is_err() {
            self.compress = None;
        }
        self.last_in_window = self.compress.is_some();
        result
    }

    fn compress_inner(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), WsError> {
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
        Ok(())
    }

    /// Drops the compressor's window: the next message compresses as if it were the first,
    /// so it never refers to bytes the peer did not inflate.
    ///
    /// This is sound at any message boundary, whatever was agreed: every compressed message
    /// ends with a sync flush, so the peer's inflater stands at a block boundary, and a
    /// fresh raw deflate stream is a run of blocks whose back-references reach only into
    /// its own output, which the peer's inflater puts in its window like any other (RFC
    /// 7692 section 7.2.1: a sender *may* take over its window, it never has to). The
    /// peer's window keeps the older bytes; nothing refers to them any more.
    ///
    /// The engine is reset, not dropped: with context takeover the connection is sending,
    /// and incompressible messages (each of which lands here) would otherwise cost a new
    /// engine apiece.
    pub(crate) fn forget_context(&mut self) {
        if let Some(c) = self.compress.as_mut() {
            c.reset();
        }
        self.last_in_window = false;
    }

    /// The last message encoded will not be sent after all: if it went into the
    /// compressor's window, the window is dropped (see [`forget_context`](Self::forget_context)).
    /// Answers whether it was.
    pub(crate) fn forget_last(&mut self) -> bool {
        let was = self.last_in_window;
        if was {
            self.forget_context();
        }
        was
    }

    /// A message went out uncompressed: the compressor's window does not hold it.
    pub(crate) fn sent_plain(&mut self) {
        self.last_in_window = false;
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
        let bits = self.remote_bits;
        let decompress = self
            .decompress
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, bits));
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                let room = (max + 1).saturating_sub(out.len());
                if room == 0 {
                    return Err(too_big(out.len(), max));
                }
                out.reserve_exact(room.min(out.len().max(4096)));
            }
            let (in0, out0) = (decompress.total_in(), out.len());
            if self.stream_ended {
                if consumed < input.len() {
                    return Err(WsError::new(
                        close_code::INVALID_PAYLOAD,
                        "compressed data after the end of the deflate stream",
                    ));
                }
                return Ok(());
            }
            let status = decompress
                .decompress_vec(&input[consumed..], out, FlushDecompress::None)
                .map_err(|e| WsError::new(close_code::INVALID_PAYLOAD, format!("inflate: {e}")))?;
            consumed += (decompress.total_in() - in0) as usize;
            if let Some(v) = utf8.as_deref_mut() {
                v.feed(&out[out0..]).map_err(|()| {
                    WsError::new(
                        close_code::INVALID_PAYLOAD,
                        "invalid UTF-8 in a text message",
                    )
                })?;
            }
            if out.len() > max {
                return Err(too_big(out.len(), max));
            }
            if status == Status::StreamEnd {
                self.stream_ended = true;
            }
            let progress = decompress.total_in() > in0 || out.len() > out0;
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

    /// Ends an inflated message: feeds the sync-flush tail, then drops the decompressor when
    /// the peer does not keep its context (or ended its stream): the next compressed message
    /// makes a fresh one.
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
            self.decompress = None;
            self.stream_ended = false;
        }
        Ok(())
    }
}

pub(crate) fn too_big(len: usize, max: usize) -> WsError {
    WsError::too_long(len, max)
}

#[cfg(test)]
mod tests;
