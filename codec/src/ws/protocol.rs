//! The frame and message machine of one WebSocket connection.

use std::io::Cursor;
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::deflate::{too_big, Deflate};
use super::utf8::Utf8Validator;
use super::{apply_mask, close_code, CloseFrame, Config, DeflateConfig, Event, Role, WsError};
use crate::MessageKind;

mod write;

#[cfg(test)]
pub(crate) use write::format_header;

/// The data frame being received. Its header has been removed from the input buffer.
#[derive(Debug)]
struct InFrame {
    fin: bool,
    mask: Option<[u8; 4]>,
    len: usize,
    /// Payload bytes processed so far: for an uncompressed frame they are still at the front
    /// of the input buffer (unmasked and checked in place); a compressed frame's are
    /// consumed as they are inflated.
    done: usize,
}

/// The data message being received.
#[derive(Debug)]
struct InMessage {
    kind: MessageKind,
    compressed: bool,
    /// Uncompressed: the payload of the frames so far.
    buf: BytesMut,
    /// Compressed: the inflated payload so far.
    inflated: Vec<u8>,
}

/// The sans-IO WebSocket machine of one connection, after the handshake: frames in, events
/// out; messages in, frames out. See the [module documentation](super) for how a transport
/// drives it.
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::ws::{Config, Event, Protocol, Role};
///
/// let mut server = Protocol::new(Role::Server, Config::default(), None);
/// // A masked ping from a client, split across two reads.
/// let mut input = BytesMut::from(&b"\x89\x82\x00\x00\x00\x00"[..]);
/// let mut control = BytesMut::new();
/// assert_eq!(server.decode(&mut input, &mut control).unwrap(), None);
/// input.extend_from_slice(b"hi");
/// let event = server.decode(&mut input, &mut control).unwrap();
/// assert_eq!(event, Some(Event::Ping("hi".into())));
/// assert_eq!(&control[..], b"\x8a\x02hi"); // the pong to send
/// ```
#[derive(Debug)]
pub struct Protocol {
    role: Role,
    config: Config,
    deflate: Option<Deflate>,
    agreed: Option<DeflateConfig>,
    frame: Option<InFrame>,
    message: Option<InMessage>,
    utf8: Utf8Validator,
    sent_close: bool,
    received_close: bool,
    /// While set, one pong answers a run of pings (see `coalesce_pongs`).
    coalescing_pongs: bool,
    /// While set, that pong waits past the end of the input (see `hold_pongs`).
    holding_pongs: bool,
    /// The payload of the latest ping not answered yet, while coalescing.
    pending_pong: Option<Bytes>,
    error: Option<WsError>,
    /// The header size of the last message sent: the room `reserve_header` leaves.
    header_guess: usize,
}

/// What [`Protocol::decode_in_place`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InPlace {
    /// A whole message, unmasked and checked, lies in the input behind its frame header:
    /// take the input up to its end off before decoding again.
    Message {
        /// Text (valid UTF-8) or binary.
        kind: MessageKind,
        /// Where the payload lies in the input, after its frame header.
        payload: Range<usize>,
    },
    /// Anything else, as [`Protocol::decode`] reports it.
    Event(Event),
}

/// Close code 1007 for a text message that is not UTF-8.
fn invalid_utf8() -> WsError {
    WsError::new(
        close_code::INVALID_PAYLOAD,
        "invalid UTF-8 in a text message",
    )
}

/// Room [`Protocol::reserve_header`] left in a buffer for a frame header.
///
/// See [`Protocol::reserve_header`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRoom {
    frame_start: usize,
    len: usize,
}

impl HeaderRoom {
    /// Where the frame begins in the buffer (where the room begins): truncating the buffer
    /// there takes the message back.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    ///
    /// let server = Protocol::new(Role::Server, Config::default(), None);
    /// let mut out = BytesMut::from(&b"earlier"[..]);
    /// let room = server.reserve_header(&mut out);
    /// out.extend_from_slice(b"a message that will not be sent after all");
    /// out.truncate(room.frame_start());
    /// assert_eq!(&out[..], b"earlier");
    /// ```
    pub fn frame_start(&self) -> usize {
        self.frame_start
    }

    /// Where the payload begins: the end of the room. A codec that appended nothing left
    /// the buffer this long.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    ///
    /// let server = Protocol::new(Role::Server, Config::default(), None);
    /// let mut out = BytesMut::from(&b"earlier"[..]);
    /// let room = server.reserve_header(&mut out);
    /// assert_eq!(room.payload_start(), out.len()); // 7 bytes, and 2 for a short header
    /// assert_eq!(room.payload_start() - room.frame_start(), 2);
    /// ```
    pub fn payload_start(&self) -> usize {
        self.frame_start + self.len
    }
}

impl Protocol {
    /// A machine for `role` with `config`'s limits and the permessage-deflate settings the
    /// handshake agreed (`None`: no compression; RSV1 is then a protocol error).
    ///
    /// Without the `deflate` feature the handshake never agrees to permessage-deflate, and
    /// settings passed here anyway are dropped: the machine runs uncompressed, as with `None`.
    ///
    /// ```
    /// use getty_codec::ws::{Config, DeflateConfig, Protocol, Role};
    /// let p = Protocol::new(Role::Client, Config::default(), Some(DeflateConfig::default()));
    /// assert_eq!(p.role(), Role::Client);
    /// assert_eq!(p.deflate().is_some(), cfg!(feature = "deflate"));
    /// ```
    pub fn new(role: Role, config: Config, deflate: Option<DeflateConfig>) -> Self {
        #[cfg(feature = "deflate")]
        let engine = deflate.map(|d| Deflate::new(d, role));
        #[cfg(not(feature = "deflate"))]
        let (deflate, engine) = {
            let _ = deflate;
            (None, None)
        };
        Protocol {
            role,
            config,
            deflate: engine,
            agreed: deflate,
            frame: None,
            message: None,
            utf8: Utf8Validator::default(),
            sent_close: false,
            received_close: false,
            coalescing_pongs: false,
            holding_pongs: false,
            pending_pong: None,
            error: None,
            // A short message's header: 2 bytes, and a client's 4-byte mask.
            header_guess: if role == Role::Client { 6 } else { 2 },
        }
    }

    /// Server or client.
    ///
    /// ```
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// assert_eq!(Protocol::new(Role::Server, Config::default(), None).role(), Role::Server);
    /// ```
    pub fn role(&self) -> Role {
        self.role
    }

    /// The limits.
    ///
    /// ```
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// let p = Protocol::new(Role::Server, Config::default(), None);
    /// assert_eq!(p.config().max_message_size, 16 << 20);
    /// ```
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The agreed permessage-deflate settings, if any.
    ///
    /// ```
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// assert!(Protocol::new(Role::Server, Config::default(), None).deflate().is_none());
    /// ```
    pub fn deflate(&self) -> Option<&DeflateConfig> {
        self.agreed.as_ref()
    }

    /// While `on`, one pong answers a run of pings instead of one pong each (RFC 6455
    /// §5.5.3 lets an endpoint answer only the most recent ping): the pong for the latest
    /// ping is written before the next message goes up, and when the input is used up. A
    /// transport turns it on while its outbound queue is above its high watermark, so a
    /// peer flooding pings without reading cannot make it queue a pong per ping; otherwise
    /// every ping gets its pong, as peers (and the Autobahn suite) expect.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    ///
    /// let mut server = Protocol::new(Role::Server, Config::default(), None);
    /// server.coalesce_pongs(true);
    /// // Three masked pings ("a", "b", "c") in one read.
    /// let mut input = BytesMut::new();
    /// for p in [b'a', b'b', b'c'] {
    ///     input.extend_from_slice(&[0x89, 0x81, 0, 0, 0, 0, p]);
    /// }
    /// let mut pongs = BytesMut::new();
    /// while server.decode(&mut input, &mut pongs).unwrap().is_some() {}
    /// assert_eq!(&pongs[..], b"\x8a\x01c"); // one pong, for the latest
    /// ```
    pub fn coalesce_pongs(&mut self, on: bool) {
        self.coalescing_pongs = on;
    }

    /// While `on`, pongs coalesce (as [`coalesce_pongs`](Protocol::coalesce_pongs)) and the
    /// one for the latest ping waits, past the end of the input, until
    /// [`release_pongs`](Protocol::release_pongs) (or a close frame, which it precedes). A
    /// transport that goes on reading above its high watermark holds them there, so that a
    /// peer that floods pings without reading gets at most one pong queued, whatever its
    /// reads, where one per read would grow the queue without bound.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    ///
    /// let mut server = Protocol::new(Role::Server, Config::default(), None);
    /// server.hold_pongs(true);
    /// let mut pongs = BytesMut::new();
    /// for p in [b'a', b'b', b'c'] {
    ///     // One masked ping a read.
    ///     let mut input = BytesMut::from(&[0x89, 0x81, 0, 0, 0, 0, p][..]);
    ///     while server.decode(&mut input, &mut pongs).unwrap().is_some() {}
    /// }
    /// assert!(pongs.is_empty());
    /// server.release_pongs(&mut pongs); // the queue drained
    /// assert_eq!(&pongs[..], b"\x8a\x01c"); // one pong, for the latest
    /// ```
    pub fn hold_pongs(&mut self, on: bool) {
        self.holding_pongs = on;
    }

    /// A pong waits to be written (held, or not yet written at the end of the input).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// let mut server = Protocol::new(Role::Server, Config::default(), None);
    /// server.hold_pongs(true);
    /// let mut ping = BytesMut::from(&[0x89, 0x80, 0, 0, 0, 0][..]);
    /// server.decode(&mut ping, &mut BytesMut::new()).unwrap();
    /// assert!(server.holds_pong());
    /// ```
    pub fn holds_pong(&self) -> bool {
        self.pending_pong.is_some()
    }

    /// Stops holding pongs, and writes the one held, if any, to `out`.
    pub fn release_pongs(&mut self, out: &mut BytesMut) {
        self.holding_pongs = false;
        self.put_pending_pong(out);
    }

    /// Whether this end has sent its close frame.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// let mut p = Protocol::new(Role::Server, Config::default(), None);
    /// p.close(1000, "", &mut BytesMut::new()).unwrap();
    /// assert!(p.close_sent() && !p.close_received());
    /// ```
    pub fn close_sent(&self) -> bool {
        self.sent_close
    }

    /// Whether the peer's close frame has arrived.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// let mut p = Protocol::new(Role::Client, Config::default(), None);
    /// p.decode(&mut BytesMut::from(&b"\x88\x00"[..]), &mut BytesMut::new()).unwrap();
    /// assert!(p.close_received());
    /// ```
    pub fn close_received(&self) -> bool {
        self.received_close
    }

    /// Whether a data message has begun and not ended: a frame's header was taken and its
    /// payload is still coming, or a fragmented message awaits its final fragment. Input
    /// that ends here is cut inside a message, though no unread byte shows it.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// let mut p = Protocol::new(Role::Server, Config::default(), None);
    /// // The first fragment of a binary message, masked with 0 0 0 0.
    /// let mut input = BytesMut::from(&b"\x02\x82\0\0\0\0hi"[..]);
    /// assert_eq!(p.decode(&mut input, &mut BytesMut::new()).unwrap(), None);
    /// assert!(input.is_empty() && p.in_message());
    /// ```
    pub fn in_message(&self) -> bool {
        self.frame.is_some() || self.message.is_some()
    }

    /// How many bytes from the front of the input the data frame being read spans, once its
    /// header is taken and its payload has not all come: a transport makes room for that
    /// much, rather than growing its buffer a step per read past the frame's end. `None`
    /// between frames (a header or a control frame is short).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// let mut p = Protocol::new(Role::Server, Config::default(), None);
    /// // The header of a 300-byte binary frame (masked with 0 0 0 0) and 10 of its bytes.
    /// let mut input = BytesMut::from(&b"\x82\xfe\x01\x2c\0\0\0\0"[..]);
    /// input.extend_from_slice(&[7; 10]);
    /// assert_eq!(p.decode(&mut input, &mut BytesMut::new()).unwrap(), None);
    /// assert_eq!(p.awaited_len(), Some(300)); // its payload is at the front of `input`
    /// ```
    pub fn awaited_len(&self) -> Option<usize> {
        let frame = self.frame.as_ref()?;
        let compressed = self.message.as_ref().is_some_and(|m| m.compressed);
        // A compressed frame's payload is taken off the input as it is inflated.
        Some(if compressed {
            frame.len - frame.done
        } else {
            frame.len
        })
    }

    /// Whether the close handshake is complete (sent and received) or the connection failed:
    /// once the queued output is flushed, the connection may be dropped. RFC 6455 wants the
    /// server to close the TCP connection first; a client waits (within a timeout) for the
    /// server's EOF.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// let mut p = Protocol::new(Role::Server, Config::default(), None);
    /// let mut out = BytesMut::new();
    /// p.decode(&mut BytesMut::from(&b"\x88\x80\x00\x00\x00\x00"[..]), &mut out).unwrap();
    /// assert!(p.is_closed()); // the echo of the close is in `out`
    /// ```
    pub fn is_closed(&self) -> bool {
        (self.sent_close && self.received_close) || self.error.is_some()
    }

    /// Decodes the next event from the front of `src`, which holds the bytes read from the
    /// peer. Call it after every read until it answers `Ok(None)` (more bytes needed).
    ///
    /// Between calls the transport may only append to `src`: the payload of a frame being
    /// received is unmasked and checked in place at the front of the buffer. Replies the
    /// protocol requires (the pong to a ping, the echo of a close) are appended to
    /// `control_out`; send them in order with the other output.
    ///
    /// An error means the connection has failed: write its close frame with
    /// [`fail`](Protocol::fail), flush, and close the connection. Later calls repeat the
    /// error. After the peer's close frame, the rest of the input is discarded.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    ///
    /// let mut client = Protocol::new(Role::Client, Config::default(), None);
    /// // RSV2 set: a protocol error (close code 1002).
    /// let err = client.decode(&mut BytesMut::from(&b"\xa1\x00"[..]), &mut BytesMut::new()).unwrap_err();
    /// assert_eq!(err.close_code(), 1002);
    /// ```
    pub fn decode(
        &mut self,
        src: &mut BytesMut,
        control_out: &mut BytesMut,
    ) -> Result<Option<Event>, WsError> {
        Ok(match self.decode_in_place(src, control_out)? {
            Some(InPlace::Message { kind, payload }) => {
                src.advance(payload.start);
                Some(Event::Message {
                    kind,
                    payload: src.split_to(payload.len()),
                })
            }
            Some(InPlace::Event(event)) => Some(event),
            None => None,
        })
    }

    /// [`decode`](Protocol::decode), except that a message which came whole in one frame
    /// is left where it lies: [`InPlace::Message`] says that `src[payload]` is its payload,
    /// unmasked and checked (UTF-8 for text, the size limits), behind its frame header. The
    /// caller must take `src[..payload.end]` off before it decodes again. This saves a
    /// transport cutting a buffer of its own for each small message it copies out anyway.
    ///
    /// ```
    /// use bytes::{Buf, BytesMut};
    /// use getty_codec::ws::{Config, InPlace, Protocol, Role};
    /// use getty_codec::MessageKind;
    ///
    /// let mut server = Protocol::new(Role::Server, Config::default(), None);
    /// // A masked binary frame "hi" (mask 1 2 3 4), then the start of another.
    /// let mut input = BytesMut::from(&b"\x82\x82\x01\x02\x03\x04\x69\x6b\x82"[..]);
    /// let mut control = BytesMut::new();
    /// let found = server.decode_in_place(&mut input, &mut control).unwrap();
    /// assert_eq!(found, Some(InPlace::Message { kind: MessageKind::Binary, payload: 6..8 }));
    /// assert_eq!(&input[6..8], b"hi");
    /// input.advance(8);
    /// assert_eq!(server.decode_in_place(&mut input, &mut control).unwrap(), None);
    /// ```
    #[inline]
    pub fn decode_in_place(
        &mut self,
        src: &mut BytesMut,
        control_out: &mut BytesMut,
    ) -> Result<Option<InPlace>, WsError> {
        if let Some((kind, payload)) = self.front_message(src) {
            return Ok(Some(InPlace::Message { kind, payload }));
        }
        self.decode_event(src, control_out)
    }

    /// What is not a whole message in one frame: the general path of `decode_in_place`.
    fn decode_event(
        &mut self,
        src: &mut BytesMut,
        control_out: &mut BytesMut,
    ) -> Result<Option<InPlace>, WsError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.decode_inner(src, control_out);
        match &result {
            Err(e) => self.error = Some(e.clone()),
            // Before a message goes up (its reply may follow at once) and at the end of the
            // input: a pong keeps its place among the replies, one per run of pings.
            Ok(None | Some(Event::Message { .. })) if !self.holding_pongs => {
                self.put_pending_pong(control_out)
            }
            Ok(_) => {}
        }
        result.map(|event| event.map(InPlace::Event))
    }

    /// The common case of [`decode_in_place`](Protocol::decode_in_place), which it checks
    /// first, on its own: a whole unfragmented, uncompressed text or binary frame at the
    /// front of `src`, between messages, within the limits, with no pong pending. It is
    /// unmasked and checked in place, and its kind and where its payload lies are returned;
    /// take `src[..payload.end]` off before decoding again (the unmasking is done in
    /// place: asked again about the same bytes, it would unmask them a second time and
    /// answer garbage). Anything else (a partial frame,
    /// a fragment, a control frame, RSV bits, a 64-bit length, a frame over a limit, the
    /// wrong masking for the role, text that is not UTF-8) answers `None` with `src` as it
    /// was: then call `decode_in_place`, which decides and reports any error. A transport
    /// that calls this first saves building an event for each such message.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// use getty_codec::MessageKind;
    ///
    /// let mut server = Protocol::new(Role::Server, Config::default(), None);
    /// // A masked binary frame "hi" (mask 1 2 3 4), then a ping.
    /// let mut input = BytesMut::from(&b"\x82\x82\x01\x02\x03\x04\x69\x6b\x89\x80\0\0\0\0"[..]);
    /// assert_eq!(server.front_message(&mut input), Some((MessageKind::Binary, 6..8)));
    /// assert_eq!(&input[6..8], b"hi");
    /// let _ = input.split_to(8);
    /// assert_eq!(server.front_message(&mut input), None); // decode_in_place answers it
    /// ```
    // Always inlined: it runs once per message, and out of line (it has two callers) its
    // call, and apply_mask's, cost about 40 instructions per echoed message in callgrind.
    #[inline(always)]
    pub fn front_message(&mut self, src: &mut BytesMut) -> Option<(MessageKind, Range<usize>)> {
        self.front_message_within(&mut src[..], usize::MAX)
    }

    /// [`front_message`](Protocol::front_message) of the bytes `src` holds, declining (with
    /// `src` as it was) a frame longer than `max_frame` bytes, header included: a transport
    /// taking a run of small messages at once asks for each next one within the room its
    /// run has left.
    ///
    /// ```
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// use getty_codec::MessageKind;
    ///
    /// let mut client = Protocol::new(Role::Client, Config::default(), None);
    /// // Two unmasked binary frames from a server: "abc", then "de".
    /// let mut input = *b"\x82\x03abc\x82\x02de";
    /// let first = client.front_message_within(&mut input, 5);
    /// assert_eq!(first, Some((MessageKind::Binary, 2..5)));
    /// // The next frame takes 4 bytes: with room for 3 it is declined, and left as it came.
    /// assert_eq!(client.front_message_within(&mut input[5..], 3), None);
    /// assert_eq!(client.front_message_within(&mut input[5..], 4), Some((MessageKind::Binary, 2..4)));
    /// ```
    #[inline(always)]
    pub fn front_message_within(
        &mut self,
        src: &mut [u8],
        max_frame: usize,
    ) -> Option<(MessageKind, Range<usize>)> {
        let between_messages = self.frame.is_none() && self.message.is_none();
        let quiet = !self.received_close && self.error.is_none() && self.pending_pong.is_none();
        if !(between_messages && quiet) {
            return None;
        }
        let [first, second, ..] = *src else {
            return None;
        };
        // FIN set, RSV1-3 clear.
        let kind = match first {
            0x82 => MessageKind::Binary,
            0x81 => MessageKind::Text,
            _ => return None,
        };
        let masked = second & 0x80 != 0;
        if masked != (self.role == Role::Server) {
            return None;
        }
        let (len_field, len) = match second & 0x7f {
            127 => return None,
            126 => match src.get(2..4) {
                Some(&[hi, lo]) => (2, usize::from(u16::from_be_bytes([hi, lo]))),
                _ => return None,
            },
            short => (0, usize::from(short)),
        };
        let header = 2 + len_field + if masked { 4 } else { 0 };
        let config = &self.config;
        let within_limits = len <= config.max_frame_size && len <= config.max_message_size;
        if src.len() < header + len || !within_limits || header + len > max_frame {
            return None;
        }
        let payload = header..header + len;
        let (head, rest) = src.split_at_mut(header);
        let body = &mut rest[..len];
        let mask = if masked {
            head.last_chunk::<4>().copied()
        } else {
            None
        };
        if let Some(mask) = mask {
            apply_mask(body, mask, 0);
        }
        if kind == MessageKind::Text && std::str::from_utf8(body).is_err() {
            // Masked again, as it came: the general path reports the error.
            if let Some(mask) = mask {
                apply_mask(body, mask, 0);
            }
            return None;
        }
        Some((kind, payload))
    }

    /// Answers the latest ping, unless a close frame was sent (no frame may follow it).
    fn put_pending_pong(&mut self, out: &mut BytesMut) {
        if let Some(payload) = self.pending_pong.take() {
            if !self.sent_close {
                self.put_frame(OpCode::Control(Control::Pong), false, &payload, out);
            }
        }
    }

    fn decode_inner(
        &mut self,
        src: &mut BytesMut,
        control_out: &mut BytesMut,
    ) -> Result<Option<Event>, WsError> {
        loop {
            if self.received_close {
                src.clear();
                return Ok(None);
            }
            if self.frame.is_some() {
                if let Some(event) = self.continue_frame(src)? {
                    return Ok(Some(event));
                }
                if self.frame.is_some() {
                    return Ok(None);
                }
                continue;
            }
            // No header is shorter (the usual end of a read: the input used up).
            if src.len() < 2 {
                return Ok(None);
            }
            let mut cursor = Cursor::new(&src[..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(None),
                Err(e) => return Err(WsError::protocol(e.to_string())),
            };
            let header_len = cursor.position() as usize;
            if header.rsv2 || header.rsv3 {
                return Err(WsError::protocol("reserved bits set"));
            }
            match (self.role, header.mask) {
                (Role::Server, None) => {
                    return Err(WsError::protocol("unmasked frame from a client"))
                }
                (Role::Client, Some(_)) => {
                    return Err(WsError::protocol("masked frame from a server"))
                }
                _ => {}
            }
            if len > i64::MAX as u64 {
                return Err(WsError::protocol("frame length has its top bit set"));
            }
            match header.opcode {
                OpCode::Control(control) => {
                    if header.rsv1 {
                        return Err(WsError::protocol("RSV1 set on a control frame"));
                    }
                    if !header.is_final {
                        return Err(WsError::protocol("fragmented control frame"));
                    }
                    if len > 125 {
                        return Err(WsError::protocol("control frame payload over 125 bytes"));
                    }
                    let len = len as usize;
                    if src.len() < header_len + len {
                        return Ok(None);
                    }
                    src.advance(header_len);
                    let mut payload = src.split_to(len);
                    if let Some(mask) = header.mask {
                        apply_mask(&mut payload, mask, 0);
                    }
                    return self
                        .control(control, payload.freeze(), control_out)
                        .map(Some);
                }
                OpCode::Data(data) => {
                    let max = self.frame_limit(data, header.rsv1);
                    // Refused against the configured limit: the slack a compressed frame
                    // gets (`frame_limit`) is no limit of the user's.
                    let configured = self.config.max_frame_size;
                    let len = usize::try_from(len)
                        .ok()
                        .filter(|&l| l <= max)
                        .ok_or_else(|| {
                            too_big(usize::try_from(len).unwrap_or(usize::MAX), configured)
                        })?;
                    self.start_frame(data, header.rsv1, len)?;
                    src.advance(header_len);
                    self.frame = Some(InFrame {
                        fin: header.is_final,
                        mask: header.mask,
                        len,
                        done: 0,
                    });
                }
            }
        }
    }

    /// The longest data frame accepted: the frame size limit, or for a compressed frame
    /// what deflate may make of that many bytes (incompressible data grows by a few bytes
    /// per block): the limit on a compressed message is on its inflated size, which
    /// `inflate` checks as it goes, so a message of exactly the limit is not refused for
    /// the bytes deflate added to it.
    fn frame_limit(&self, data: Data, rsv1: bool) -> usize {
        let max = self.config.max_frame_size;
        let compressed = match data {
            Data::Continue => self.message.as_ref().is_some_and(|m| m.compressed),
            Data::Text | Data::Binary => rsv1 && self.deflate.is_some(),
            Data::Reserved(_) => false,
        };
        if !compressed {
            return max;
        }
        // zlib's compressBound, which covers raw deflate as permessage-deflate sends it.
        max.saturating_add(max >> 12)
            .saturating_add(max >> 14)
            .saturating_add(max >> 25)
            .saturating_add(13)
    }

    /// Checks a data frame's header against the message state; starts a message.
    fn start_frame(&mut self, data: Data, rsv1: bool, len: usize) -> Result<(), WsError> {
        let kind = match data {
            Data::Continue => {
                if rsv1 {
                    return Err(WsError::protocol("RSV1 set on a continuation frame"));
                }
                None
            }
            Data::Text => Some(MessageKind::Text),
            Data::Binary => Some(MessageKind::Binary),
            Data::Reserved(op) => return Err(WsError::protocol(format!("reserved opcode {op}"))),
        };
        match (kind, &self.message) {
            (None, None) => return Err(WsError::protocol("continuation frame without a message")),
            (Some(_), Some(_)) => {
                return Err(WsError::protocol(
                    "new data message while a fragmented one is incomplete",
                ))
            }
            (Some(kind), None) => {
                if rsv1 && self.deflate.is_none() {
                    return Err(WsError::protocol("RSV1 set without permessage-deflate"));
                }
                self.utf8.reset();
                self.message = Some(InMessage {
                    kind,
                    compressed: rsv1,
                    buf: BytesMut::new(),
                    inflated: Vec::new(),
                });
            }
            (None, Some(_)) => {}
        }
        let max = self.config.max_message_size;
        match &self.message {
            Some(m) if !m.compressed && m.buf.len().saturating_add(len) > max => {
                Err(too_big(m.buf.len().saturating_add(len), max))
            }
            _ => Ok(()),
        }
    }

    /// Processes the payload of the data frame in progress; returns a message when this
    /// frame completed one.
    fn continue_frame(&mut self, src: &mut BytesMut) -> Result<Option<Event>, WsError> {
        let Protocol {
            config,
            deflate,
            frame,
            message,
            utf8,
            ..
        } = self;
        let (Some(f), Some(msg)) = (frame.as_mut(), message.as_mut()) else {
            return Ok(None);
        };
        let text = msg.kind == MessageKind::Text;
        let max = config.max_message_size;
        let bad_utf8 = |()| invalid_utf8();
        if msg.compressed {
            let deflate = deflate.as_mut().expect("compressed messages need deflate");
            let take = src.len().min(f.len - f.done);
            if take > 0 {
                let piece = &mut src[..take];
                if let Some(mask) = f.mask {
                    apply_mask(piece, mask, f.done);
                }
                deflate.inflate(piece, &mut msg.inflated, max, text.then_some(&mut *utf8))?;
                src.advance(take);
                f.done += take;
            }
            if f.done < f.len {
                return Ok(None);
            }
        } else {
            let have = src.len().min(f.len);
            if have > f.done {
                let piece = &mut src[f.done..have];
                if let Some(mask) = f.mask {
                    apply_mask(piece, mask, f.done);
                }
                if text {
                    utf8.feed(piece).map_err(bad_utf8)?;
                }
                f.done = have;
            }
            if f.done < f.len {
                return Ok(None);
            }
            if msg.buf.is_empty() && f.fin {
                // The whole message: handed on as a view of the input.
                msg.buf = src.split_to(f.len);
            } else {
                // A fragment waits for the rest of its message, for as long as the peer
                // takes: copied, so that it does not pin the (pooled) buffer it was read
                // into, as a tiny partial frame is moved out of one.
                msg.buf.extend_from_slice(&src[..f.len]);
                src.advance(f.len);
            }
        }
        let fin = f.fin;
        *frame = None;
        if !fin {
            return Ok(None);
        }
        let Some(mut msg) = message.take() else {
            return Ok(None);
        };
        let payload = if msg.compressed {
            let deflate = deflate.as_mut().expect("compressed messages need deflate");
            deflate.finish_message(&mut msg.inflated, max, text.then_some(&mut *utf8))?;
            BytesMut::from(Bytes::from(msg.inflated))
        } else {
            msg.buf
        };
        if text {
            utf8.finish().map_err(bad_utf8)?;
        }
        Ok(Some(Event::Message {
            kind: msg.kind,
            payload,
        }))
    }

    fn control(
        &mut self,
        control: Control,
        payload: Bytes,
        out: &mut BytesMut,
    ) -> Result<Event, WsError> {
        match control {
            Control::Ping => {
                if self.coalescing_pongs || self.holding_pongs {
                    self.pending_pong = Some(payload.clone());
                } else {
                    self.put_pending_pong(out);
                    if !self.sent_close {
                        self.put_frame(OpCode::Control(Control::Pong), false, &payload, out);
                    }
                }
                Ok(Event::Ping(payload))
            }
            Control::Pong => Ok(Event::Pong(payload)),
            Control::Close => {
                let frame = match payload.len() {
                    0 => None,
                    1 => return Err(WsError::protocol("close frame with a 1-byte payload")),
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        if !close_code::is_valid(code) {
                            return Err(WsError::protocol(format!("invalid close code {code}")));
                        }
                        let reason = std::str::from_utf8(&payload[2..]).map_err(|_| {
                            WsError::new(close_code::INVALID_PAYLOAD, "close reason is not UTF-8")
                        })?;
                        Some(CloseFrame {
                            code,
                            reason: reason.to_string(),
                        })
                    }
                };
                self.received_close = true;
                self.put_pending_pong(out);
                if !self.sent_close {
                    let code = frame.as_ref().map_or(close_code::NORMAL, |f| f.code);
                    self.put_frame(
                        OpCode::Control(Control::Close),
                        false,
                        &code.to_be_bytes(),
                        out,
                    );
                    self.sent_close = true;
                }
                Ok(Event::Close(frame))
            }
            Control::Reserved(op) => Err(WsError::protocol(format!("reserved opcode {op}"))),
        }
    }

    /// The capacity of the inflate buffer of the message in progress, if any.
    #[cfg(all(test, feature = "deflate"))]
    pub(crate) fn inflated_capacity(&self) -> Option<usize> {
        self.message.as_ref().map(|m| m.inflated.capacity())
    }
}
