//! Helpers shared by the fuzz targets: cutting input into the pieces a socket might deliver,
//! and driving a decoder the way a stream transport does.

use bytes::BytesMut;
use getty_codec::{CodecError, CodecErrorKind, Decoded, Decoder};

/// Cuts `data` into consecutive pieces whose lengths come from `sizes` (cycled; a size of
/// 0 counts as 1); the last piece takes the rest. No sizes: one piece.
pub fn pieces<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut rest = data;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = usize::from(size).max(1).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        out.push(piece);
        rest = tail;
    }
    out
}

/// What a decoder made of a byte stream: its frames, then the error that ended it, if any.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome<T> {
    /// Every frame, in order.
    pub frames: Vec<T>,
    /// The first error; nothing is decoded after it.
    pub error: Option<ErrorKey>,
}

/// The part of a [`CodecError`] that must not depend on how the input was cut: its kind and
/// the limit it names. (The length an error reports is "at least": it may grow with what
/// happens to be buffered when the frame is found too long.)
#[derive(Debug, PartialEq, Eq)]
pub struct ErrorKey {
    /// The class of error.
    pub kind: CodecErrorKind,
    /// The session limit exceeded, for a message over it.
    pub limit: Option<usize>,
}

impl From<&CodecError> for ErrorKey {
    fn from(e: &CodecError) -> Self {
        ErrorKey {
            kind: e.kind(),
            limit: e.limit_exceeded().map(|(_, max)| max),
        }
    }
}

/// Feeds `chunks` to `decoder` one read at a time, decoding after each until it asks for
/// more, as a stream transport does (with its session's `limit`, if any). Checks what must
/// hold on every call: a frame consumes input, and a length hint is more than is buffered.
pub fn decode_stream<D: Decoder>(
    decoder: &mut D,
    chunks: &[&[u8]],
    limit: Option<usize>,
) -> Outcome<D::Item> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            let decoded = match limit {
                Some(max) => decoder.decode_limited(&mut buf, max),
                None => decoder.decode(&mut buf),
            };
            match decoded {
                Ok(Decoded::Frame(item)) => {
                    assert!(buf.len() < before, "a frame consumed no input");
                    frames.push(item);
                }
                Ok(Decoded::NeedMore(hint)) => {
                    assert_eq!(buf.len(), before, "NeedMore consumed input");
                    if let Some(frame_len) = hint {
                        assert!(
                            frame_len > buf.len(),
                            "NeedMore(Some({frame_len})) with {} bytes buffered",
                            buf.len()
                        );
                    }
                    break;
                }
                Err(e) => {
                    return Outcome {
                        frames,
                        error: Some(ErrorKey::from(&e)),
                    }
                }
            }
        }
    }
    Outcome {
        frames,
        error: None,
    }
}

/// Helpers for the WebSocket targets.
pub mod ws {
    use arbitrary::Arbitrary;
    use bytes::BytesMut;
    use getty_codec::ws::{DeflateConfig, Event, Protocol};

    /// permessage-deflate settings from fuzz input: every window size (8–15), level and
    /// threshold, either end with or without context takeover.
    #[derive(Arbitrary, Debug, Clone, Copy)]
    pub struct Deflate {
        server_no_context_takeover: bool,
        client_no_context_takeover: bool,
        server_max_window_bits: u8,
        client_max_window_bits: u8,
        level: u8,
        min_size: u8,
    }

    impl Deflate {
        /// The settings, brought into their valid ranges.
        pub fn config(self) -> DeflateConfig {
            DeflateConfig {
                server_no_context_takeover: self.server_no_context_takeover,
                client_no_context_takeover: self.client_no_context_takeover,
                server_max_window_bits: 8 + self.server_max_window_bits % 8,
                client_max_window_bits: 8 + self.client_max_window_bits % 8,
                level: u32::from(self.level % 10),
                min_size: usize::from(self.min_size),
            }
        }
    }

    /// What a [`Protocol`] made of its input: events, the close code of the error that
    /// ended it (if any), and the control frames it wrote (pongs, the close echo, and the
    /// close frame [`Protocol::fail`] wrote after an error).
    #[derive(Debug)]
    pub struct WsOutcome {
        /// Every event, in order.
        pub events: Vec<Event>,
        /// The close code of the error that failed the connection.
        pub error: Option<u16>,
        /// That error, as its `Display` says it.
        pub detail: Option<String>,
        /// What the machine wrote for the peer.
        pub control_out: BytesMut,
    }

    /// Feeds `chunks` to `protocol` one read at a time, decoding after each until it asks
    /// for more, as the WebSocket transport does; on an error, fails the connection.
    pub fn drive(protocol: &mut Protocol, chunks: &[&[u8]]) -> WsOutcome {
        let mut src = BytesMut::new();
        let mut control_out = BytesMut::new();
        let mut events = Vec::new();
        for chunk in chunks {
            src.extend_from_slice(chunk);
            loop {
                match protocol.decode(&mut src, &mut control_out) {
                    Ok(Some(event)) => events.push(event),
                    Ok(None) => break,
                    Err(e) => {
                        let had_sent_close = protocol.close_sent();
                        assert_eq!(protocol.fail(&e, &mut control_out), !had_sent_close);
                        assert!(protocol.is_closed(), "failed but not closed");
                        return WsOutcome {
                            events,
                            error: Some(e.close_code()),
                            detail: Some(e.to_string()),
                            control_out,
                        };
                    }
                }
            }
        }
        WsOutcome {
            events,
            error: None,
            detail: None,
            control_out,
        }
    }
}
