//! The per-message compressor and decompressor of one connection (flate2).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{too_big, DeflateConfig};
use crate::ws::utf8::Utf8Validator;
use crate::ws::{close_code, Role, WsError};

#[cfg(test)]
mod tests;

/// The sync-flush tail that RFC 7692 strips from each compressed message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The decompressor's window, whatever the peer agreed to compress with (see `inflate`).
const MAX_WINDOW_BITS: u8 = 15;

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
            decompress: None,
            last_in_window: false,
            stream_ended: false,
        }
    }

    /// Whether a message of `len` bytes should go out compressed. Never an empty one: it
    /// cannot shrink, and after an earlier message's sync flush zlib emits nothing for it
    /// (no empty block to strip), which would fail the connection.
    pub(crate) fn wants(&self, len: usize) -> bool {
        len > 0 && len >= self.config.min_size && self.local_bits >= 9
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
        // Always a 15-bit window, whatever the peer agreed to compress with. zlib checks a
        // back-reference only against the window it was given, and only once the bytes
        // referred to came out of an earlier call: with the agreed (smaller) window, a peer
        // that refers further back than it promised was refused or not depending on where
        // the reads split its message (found by fuzzing). A compliant peer never does, and
        // zlib-rs keeps a 32 KiB window for raw streams whatever it is asked for.
        let decompress = self
            .decompress
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, MAX_WINDOW_BITS));
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
