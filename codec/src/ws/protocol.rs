//! The frame and message machine of one WebSocket connection.

use std::io::Cursor;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::deflate::{give_back_scratch, take_scratch, too_big, Deflate};
use super::utf8::Utf8Validator;
use super::{apply_mask, close_code, CloseFrame, Config, DeflateConfig, Event, Role, WsError};
use crate::MessageKind;

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
    /// The payload of the latest ping not answered yet, while coalescing.
    pending_pong: Option<Bytes>,
    error: Option<WsError>,
    /// The header size of the last message sent: the room `reserve_header` leaves.
    header_guess: usize,
}

/// Room [`Protocol::reserve_header`] left in a buffer for a frame header.
///
/// See [`Protocol::reserve_header`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRoom {
    frame_start: usize,
    len: usize,
}

impl Protocol {
    /// A machine for `role` with `config`'s limits and the permessage-deflate settings the
    /// handshake agreed (`None`: no compression; RSV1 is then a protocol error).
    ///
    /// ```
    /// use getty_codec::ws::{Config, DeflateConfig, Protocol, Role};
    /// let p = Protocol::new(Role::Client, Config::default(), Some(DeflateConfig::default()));
    /// assert_eq!(p.role(), Role::Client);
    /// ```
    pub fn new(role: Role, config: Config, deflate: Option<DeflateConfig>) -> Self {
        Protocol {
            role,
            config,
            deflate: deflate.map(|d| Deflate::new(d, role)),
            agreed: deflate,
            frame: None,
            message: None,
            utf8: Utf8Validator::default(),
            sent_close: false,
            received_close: false,
            coalescing_pongs: false,
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
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.decode_inner(src, control_out);
        match &result {
            Err(e) => self.error = Some(e.clone()),
            // Before a message goes up (its reply may follow at once) and at the end of the
            // input: a pong keeps its place among the replies, one per run of pings.
            Ok(None | Some(Event::Message { .. })) => self.put_pending_pong(control_out),
            Ok(Some(_)) => {}
        }
        result
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
                    let max = self.config.max_frame_size;
                    let len = usize::try_from(len)
                        .ok()
                        .filter(|&l| l <= max)
                        .ok_or_else(|| too_big(usize::try_from(len).unwrap_or(usize::MAX), max))?;
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
        let bad_utf8 = |()| {
            WsError::new(
                close_code::INVALID_PAYLOAD,
                "invalid UTF-8 in a text message",
            )
        };
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
            let data = src.split_to(f.len);
            if msg.buf.is_empty() {
                msg.buf = data;
            } else {
                msg.buf.extend_from_slice(&data);
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
                if self.coalescing_pongs {
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

    /// The header of an outgoing frame, and the mask its payload needs (client role).
    fn header(&self, opcode: OpCode, rsv1: bool, len: usize) -> ([u8; 14], usize, Option<[u8; 4]>) {
        let mask = match self.role {
            Role::Client => Some(Self::mask_key()),
            Role::Server => None,
        };
        let header = FrameHeader {
            is_final: true,
            rsv1,
            rsv2: false,
            rsv3: false,
            opcode,
            mask,
        };
        let mut bytes = [0u8; 14];
        let mut w = &mut bytes[..];
        header
            .format(len as u64, &mut w)
            .expect("14 bytes hold any frame header");
        let n = 14 - w.len();
        (bytes, n, mask)
    }

    /// A fresh masking key for a client frame. RFC 6455 §5.3 asks for a strong source of
    /// entropy, so that a script cannot predict the bytes its frames put on the wire (the
    /// cache-poisoning attack the mask exists to stop): the key comes from `rand`'s
    /// thread-local ChaCha12 generator, seeded from the operating system and reseeded from it
    /// every 64 KiB of output. A key costs a few nanoseconds (16 keys per ChaCha block),
    /// cheap enough for every frame; a reactor thread keeps its own generator, with no lock.
    fn mask_key() -> [u8; 4] {
        use rand::Rng;
        rand::rng().next_u32().to_ne_bytes()
    }

    /// Appends a whole frame with a copy of `payload`.
    fn put_frame(&self, opcode: OpCode, rsv1: bool, payload: &[u8], out: &mut BytesMut) {
        let (header, n, mask) = self.header(opcode, rsv1, payload.len());
        out.reserve(n + payload.len());
        out.extend_from_slice(&header[..n]);
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(mask) = mask {
            apply_mask(&mut out[start..], mask, 0);
        }
    }

    /// The capacity of the inflate buffer of the message in progress, if any.
    #[cfg(test)]
    pub(crate) fn inflated_capacity(&self) -> Option<usize> {
        self.message.as_ref().map(|m| m.inflated.capacity())
    }

    fn check_open(&self) -> Result<(), WsError> {
        if self.sent_close {
            return Err(WsError::new(
                close_code::NORMAL,
                "the close frame was sent; nothing may follow it",
            ));
        }
        Ok(())
    }

    /// Turns `buf[start..]`, one whole message's payload that a codec just appended, into a
    /// frame **in place**: the header goes before the payload (which moves up by 2 to 14
    /// bytes), a client masks it, and with permessage-deflate a payload of at least
    /// [`DeflateConfig::min_size`] bytes is compressed (RSV1 set) unless deflate would make
    /// it longer (random bytes, already compressed data): that one goes out as it is, and
    /// the compressor starts afresh. Bytes before `start` are left alone. Fails (leaving
    /// `buf` as it was) after a close frame was sent.
    /// [`reserve_header`](Self::reserve_header) saves moving the payload.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// use getty_codec::MessageKind;
    ///
    /// let mut server = Protocol::new(Role::Server, Config::default(), None);
    /// let mut out = BytesMut::from(&b"earlier"[..]);
    /// out.extend_from_slice(b"hi");
    /// server.encode_message(MessageKind::Text, &mut out, 7).unwrap();
    /// assert_eq!(&out[..], b"earlier\x81\x02hi");
    /// ```
    pub fn encode_message(
        &mut self,
        kind: MessageKind,
        buf: &mut BytesMut,
        start: usize,
    ) -> Result<(), WsError> {
        assert!(
            start <= buf.len(),
            "encode_message: start {start} past the end of the buffer"
        );
        self.frame_in_place(kind, buf, start, 0)
    }

    /// Leaves room at the end of `buf` for the header of the message a codec is about to
    /// append; [`encode_reserved`](Self::encode_reserved) then writes the header there, so
    /// the payload does not move. The room is the size of the previous message's header
    /// (messages on a connection tend to be alike); when the new header needs another size,
    /// the payload moves once, as with [`encode_message`](Self::encode_message).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// use getty_codec::MessageKind;
    ///
    /// let mut server = Protocol::new(Role::Server, Config::default(), None);
    /// let mut out = BytesMut::from(&b"earlier"[..]);
    /// let room = server.reserve_header(&mut out);
    /// out.extend_from_slice(b"hi"); // what the codec appends
    /// server.encode_reserved(MessageKind::Text, &mut out, room).unwrap();
    /// assert_eq!(&out[..], b"earlier\x81\x02hi");
    /// ```
    pub fn reserve_header(&self, buf: &mut BytesMut) -> HeaderRoom {
        let room = HeaderRoom {
            frame_start: buf.len(),
            len: self.header_guess,
        };
        buf.put_bytes(0, room.len);
        room
    }

    /// Frames the payload appended after [`reserve_header`](Self::reserve_header)'s room,
    /// as [`encode_message`](Self::encode_message) does. On failure `buf` still holds the
    /// room and the payload: truncate it to where the room began.
    ///
    /// See [`reserve_header`](Self::reserve_header) for an example.
    pub fn encode_reserved(
        &mut self,
        kind: MessageKind,
        buf: &mut BytesMut,
        room: HeaderRoom,
    ) -> Result<(), WsError> {
        assert!(
            room.frame_start + room.len <= buf.len(),
            "encode_reserved: the buffer lost its reserved room"
        );
        self.frame_in_place(kind, buf, room.frame_start, room.len)
    }

    /// For a payload sent as it is, appends only its frame header to `out` and answers
    /// `Ok(true)`: the caller sends the `len` payload bytes right after it, unchanged (so a
    /// large payload need not be copied). Answers `Ok(false)` and appends nothing when the
    /// payload must be transformed: a client masks it, and permessage-deflate compresses a
    /// payload of at least [`DeflateConfig::min_size`] bytes.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// use getty_codec::MessageKind;
    ///
    /// let mut server = Protocol::new(Role::Server, Config::default(), None);
    /// let mut out = BytesMut::new();
    /// assert!(server.put_plain_header(MessageKind::Binary, 300, &mut out).unwrap());
    /// assert_eq!(&out[..], b"\x82\x7e\x01\x2c"); // then the 300 bytes
    /// let mut client = Protocol::new(Role::Client, Config::default(), None);
    /// assert!(!client.put_plain_header(MessageKind::Binary, 300, &mut out).unwrap());
    /// ```
    pub fn put_plain_header(
        &mut self,
        kind: MessageKind,
        len: usize,
        out: &mut BytesMut,
    ) -> Result<bool, WsError> {
        self.check_open()?;
        let compressed = self.deflate.as_ref().is_some_and(|d| d.wants(len));
        if self.role == Role::Client || compressed {
            return Ok(false);
        }
        if let Some(deflate) = self.deflate.as_mut() {
            deflate.sent_plain();
        }
        let (header, n, _) = self.header(data_opcode(kind), false, len);
        out.extend_from_slice(&header[..n]);
        Ok(true)
    }

    /// Takes back the message framed last: the caller cut its frame out of its buffer and
    /// will not send it (typically because its outbound queue was full). Call it before
    /// framing the next message; frames written before that one are not affected.
    ///
    /// Only permessage-deflate cares. With context takeover a compressed message stays in
    /// the compressor's window, and later messages would refer to its bytes, which the
    /// peer never got: they would inflate to the wrong bytes (or to invalid UTF-8). So
    /// the compressor drops its window and the next message starts afresh, which RFC 7692
    /// allows at any message boundary; the peer notices nothing but a lower ratio for a
    /// message or two. Answers whether the window was dropped (false without compression,
    /// without context takeover, or when that message went out uncompressed).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, DeflateConfig, Event, Protocol, Role};
    /// use getty_codec::MessageKind;
    ///
    /// let deflate = Some(DeflateConfig::default());
    /// let mut server = Protocol::new(Role::Server, Config::default(), deflate);
    /// let mut client = Protocol::new(Role::Client, Config::default(), deflate);
    /// let mut queue = BytesMut::new();
    /// for (i, sent) in ["{\"seq\": 1, \"text\": \"hello hello\"}", "{\"seq\": 2, \"text\": \"hello hello\"}"]
    ///     .iter()
    ///     .enumerate()
    /// {
    ///     let start = queue.len();
    ///     queue.extend_from_slice(sent.as_bytes());
    ///     server.encode_message(MessageKind::Text, &mut queue, start).unwrap();
    ///     if i == 0 {
    ///         // No room for it after all: cut the frame out and take the message back.
    ///         queue.truncate(start);
    ///         assert!(server.retract_last_message());
    ///     }
    /// }
    /// // The peer inflates the second message without having seen the first.
    /// let event = client.decode(&mut queue, &mut BytesMut::new()).unwrap();
    /// match event {
    ///     Some(Event::Message { payload, .. }) => {
    ///         assert_eq!(&payload[..], b"{\"seq\": 2, \"text\": \"hello hello\"}")
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn retract_last_message(&mut self) -> bool {
        self.deflate.as_mut().is_some_and(Deflate::forget_last)
    }

    /// Frames `buf[frame_start + room..]` in place, its header written over the `room`
    /// bytes before it (the payload moves only when the header needs another size).
    fn frame_in_place(
        &mut self,
        kind: MessageKind,
        buf: &mut BytesMut,
        frame_start: usize,
        room: usize,
    ) -> Result<(), WsError> {
        self.check_open()?;
        let payload_start = frame_start + room;
        let len = buf.len() - payload_start;
        let opcode = data_opcode(kind);
        if let Some(deflate) = self.deflate.as_mut() {
            if deflate.wants(len) {
                let mut scratch = take_scratch();
                let result = deflate.compress(&buf[payload_start..], &mut scratch);
                let smaller = result.is_ok() && scratch.len() < len;
                if smaller {
                    buf.truncate(frame_start);
                    self.put_frame(opcode, true, &scratch, buf);
                } else if result.is_ok() {
                    // Incompressible: deflate made it longer. RFC 7692 lets any message go
                    // uncompressed, but the compressor's window now holds bytes the peer's
                    // inflater never sees, so it starts afresh.
                    deflate.forget_context();
                }
                give_back_scratch(scratch);
                if smaller || result.is_err() {
                    return result;
                }
            } else {
                deflate.sent_plain();
            }
        }
        let (header, n, mask) = self.header(opcode, false, len);
        if n > room {
            buf.put_bytes(0, n - room);
        }
        if n != room {
            buf.copy_within(payload_start..payload_start + len, frame_start + n);
            buf.truncate(frame_start + n + len);
        }
        buf[frame_start..frame_start + n].copy_from_slice(&header[..n]);
        if let Some(mask) = mask {
            apply_mask(&mut buf[frame_start + n..], mask, 0);
        }
        self.header_guess = n;
        Ok(())
    }

    /// Appends a ping frame (payload at most 125 bytes) to `out`.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// let mut p = Protocol::new(Role::Server, Config::default(), None);
    /// let mut out = BytesMut::new();
    /// p.ping(b"t", &mut out).unwrap();
    /// assert_eq!(&out[..], b"\x89\x01t");
    /// assert!(p.ping(&[0; 126], &mut out).is_err());
    /// ```
    pub fn ping(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<(), WsError> {
        self.control_frame(Control::Ping, payload, out)
    }

    /// Appends an unsolicited pong frame (payload at most 125 bytes) to `out`; pongs to
    /// pings are written by [`decode`](Protocol::decode).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// let mut p = Protocol::new(Role::Server, Config::default(), None);
    /// let mut out = BytesMut::new();
    /// p.pong(b"", &mut out).unwrap();
    /// assert_eq!(&out[..], b"\x8a\x00");
    /// ```
    pub fn pong(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<(), WsError> {
        self.control_frame(Control::Pong, payload, out)
    }

    fn control_frame(
        &mut self,
        control: Control,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), WsError> {
        self.check_open()?;
        if payload.len() > 125 {
            return Err(WsError::protocol("control frame payload over 125 bytes"));
        }
        self.put_frame(OpCode::Control(control), false, payload, out);
        Ok(())
    }

    /// Starts (or answers) the close handshake: appends a close frame with `code` and
    /// `reason` (at most 123 bytes) to `out`. Answers `Ok(false)` and writes nothing when a
    /// close frame was sent already. After it, keep decoding until the peer's close arrives
    /// ([`is_closed`](Protocol::is_closed)), within a timeout.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// let mut p = Protocol::new(Role::Server, Config::default(), None);
    /// let mut out = BytesMut::new();
    /// assert!(p.close(1000, "bye", &mut out).unwrap());
    /// assert_eq!(&out[..], b"\x88\x05\x03\xe8bye");
    /// assert!(!p.close(1000, "", &mut out).unwrap());
    /// assert!(p.close(1005, "", &mut BytesMut::new()).is_ok()); // nothing more is sent
    /// ```
    pub fn close(&mut self, code: u16, reason: &str, out: &mut BytesMut) -> Result<bool, WsError> {
        if self.sent_close {
            return Ok(false);
        }
        self.put_pending_pong(out);
        if !close_code::is_valid(code) {
            return Err(WsError::protocol(format!(
                "close code {code} may not be sent"
            )));
        }
        if reason.len() > 123 {
            return Err(WsError::protocol("close reason over 123 bytes"));
        }
        let mut payload = [0u8; 125];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
        self.put_frame(
            OpCode::Control(Control::Close),
            false,
            &payload[..2 + reason.len()],
            out,
        );
        self.sent_close = true;
        Ok(true)
    }

    /// Fails the connection after `error`: appends a close frame with its close code (unless
    /// a close frame was sent already) and answers whether it wrote one. Flush `out`, then
    /// close the connection; [`is_closed`](Protocol::is_closed) is true from now on.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use getty_codec::ws::{Config, Protocol, Role};
    /// let mut p = Protocol::new(Role::Server, Config::default(), None);
    /// let mut input = BytesMut::from(&b"\x81\x05hello"[..]); // unmasked: a protocol error
    /// let err = p.decode(&mut input, &mut BytesMut::new()).unwrap_err();
    /// let mut out = BytesMut::new();
    /// assert!(p.fail(&err, &mut out));
    /// assert_eq!(&out[..], b"\x88\x02\x03\xea"); // close 1002
    /// assert!(p.is_closed());
    /// ```
    pub fn fail(&mut self, error: &WsError, out: &mut BytesMut) -> bool {
        if self.error.is_none() {
            self.error = Some(error.clone());
        }
        if self.sent_close {
            return false;
        }
        let code = if close_code::is_valid(error.close_code()) {
            error.close_code()
        } else {
            close_code::PROTOCOL_ERROR
        };
        let mut payload = [0u8; 2];
        payload.copy_from_slice(&code.to_be_bytes());
        self.put_frame(OpCode::Control(Control::Close), false, &payload, out);
        self.sent_close = true;
        true
    }
}

/// The opcode of a data frame of `kind`.
fn data_opcode(kind: MessageKind) -> OpCode {
    OpCode::Data(match kind {
        MessageKind::Text => Data::Text,
        MessageKind::Binary => Data::Binary,
    })
}
