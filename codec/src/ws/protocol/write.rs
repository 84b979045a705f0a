//! The writing half of [`Protocol`]: frames out (data in place, control, close).

use bytes::{BufMut, BytesMut};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::{HeaderRoom, Protocol};
use crate::ws::deflate::{give_back_scratch, take_scratch, Deflate};
use crate::ws::{apply_mask, close_code, Role, WsError};
use crate::MessageKind;

impl Protocol {
    /// The header of an outgoing frame, and the mask its payload needs (client role).
    #[inline]
    fn header(&self, opcode: OpCode, rsv1: bool, len: usize) -> ([u8; 14], usize, Option<[u8; 4]>) {
        let mask = match self.role {
            Role::Client => Some(Self::mask_key()),
            Role::Server => None,
        };
        let first = 0x80 | if rsv1 { 0x40 } else { 0 } | u8::from(opcode);
        let (bytes, n) = format_header(first, len, mask);
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
    pub(super) fn put_frame(&self, opcode: OpCode, rsv1: bool, payload: &[u8], out: &mut BytesMut) {
        let (header, n, mask) = self.header(opcode, rsv1, payload.len());
        out.reserve(n + payload.len());
        out.extend_from_slice(&header[..n]);
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(mask) = mask {
            apply_mask(&mut out[start..], mask, 0);
        }
    }

    #[inline]
    fn check_open(&self) -> Result<(), WsError> {
        if self.sent_close {
            return Err(closed_already());
        }
        Ok(())
    }

    /// Turns `buf[start..]`, one whole message's payload that a codec just appended, into a
    /// frame **in place**: the header goes before the payload (which moves up by 2 to 14
    /// bytes), a client masks it, and with permessage-deflate a payload of at least
    /// [`DeflateConfig::min_size`](crate::ws::DeflateConfig::min_size) bytes is compressed (RSV1 set) unless deflate would make
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
    #[inline]
    pub fn reserve_header(&self, buf: &mut BytesMut) -> HeaderRoom {
        let room = HeaderRoom {
            frame_start: buf.len(),
            len: self.header_guess,
        };
        // A server's short message, the usual case, without a call to `memset`.
        if room.len == 2 {
            buf.put_u16(0);
        } else {
            buf.put_bytes(0, room.len);
        }
        room
    }

    /// Frames the payload appended after [`reserve_header`](Self::reserve_header)'s room,
    /// as [`encode_message`](Self::encode_message) does. On failure `buf` still holds the
    /// room and the payload: truncate it to where the room began.
    ///
    /// See [`reserve_header`](Self::reserve_header) for an example.
    #[inline]
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

    /// How many bytes framing a data message of `len` payload bytes adds (its header, and a
    /// client's masking key), or `None` when permessage-deflate compresses it: then the
    /// frame's size is known only once it is made. What a session counts against its
    /// outbound bound before it queues raw bytes.
    ///
    /// ```
    /// use getty_codec::ws::{Config, Protocol, Role};
    ///
    /// let server = Protocol::new(Role::Server, Config::default(), None);
    /// assert_eq!(server.frame_overhead(125), Some(2));
    /// assert_eq!(server.frame_overhead(990), Some(4));
    /// assert_eq!(server.frame_overhead(70_000), Some(10));
    /// let client = Protocol::new(Role::Client, Config::default(), None);
    /// assert_eq!(client.frame_overhead(990), Some(8)); // and the masking key
    /// ```
    pub fn frame_overhead(&self, len: usize) -> Option<usize> {
        if self.deflate.as_ref().is_some_and(|d| d.wants(len)) {
            return None;
        }
        let mask = (self.role == Role::Client).then_some([0; 4]);
        Some(format_header(0, len, mask).1)
    }

    /// For a payload sent as it is, appends only its frame header to `out` and answers
    /// `Ok(true)`: the caller sends the `len` payload bytes right after it, unchanged (so a
    /// large payload need not be copied). Answers `Ok(false)` and appends nothing when the
    /// payload must be transformed: a client masks it, and permessage-deflate compresses a
    /// payload of at least [`DeflateConfig::min_size`](crate::ws::DeflateConfig::min_size) bytes.
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
    ///         // The window was dropped (only a compressing machine has one).
    ///         assert_eq!(server.retract_last_message(), cfg!(feature = "deflate"));
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
    #[inline]
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
        // The usual message of a server without compression: short, behind the two bytes
        // `reserve_header` guessed, sent as it is. Its header is written in place and
        // nothing else changes (the guess stays right).
        if room == 2 && len < 126 && self.role == Role::Server && self.deflate.is_none() {
            if let [first, second] = &mut buf[frame_start..payload_start] {
                (*first, *second) = (0x80 | data_opcode_bits(kind), len as u8);
                return Ok(());
            }
        }
        if self.deflate.is_some() {
            if let Some(compressed) = self.compress_in_place(kind, buf, frame_start, room) {
                return compressed;
            }
        }
        let mask = match self.role {
            Role::Client => Some(Self::mask_key()),
            Role::Server => None,
        };
        let (header, n) = format_header(0x80 | data_opcode_bits(kind), len, mask);
        if n != room {
            if n > room {
                buf.put_bytes(0, n - room);
            }
            buf.copy_within(payload_start..payload_start + len, frame_start + n);
            buf.truncate(frame_start + n + len);
        }
        match &mut buf[frame_start..frame_start + n] {
            // A server's short message: two stores rather than a call to `memcpy`.
            [first, second] => (*first, *second) = (header[0], header[1]),
            head => head.copy_from_slice(&header[..n]),
        }
        if let Some(mask) = mask {
            apply_mask(&mut buf[frame_start + n..], mask, 0);
        }
        self.header_guess = n;
        Ok(())
    }

    /// Under permessage-deflate: compresses the payload `frame_in_place` was given and
    /// frames it, when that is worth it (`Some`, with the outcome); `None` when the payload
    /// goes out as it is (too short, or incompressible), the compressor told so.
    #[cold]
    fn compress_in_place(
        &mut self,
        kind: MessageKind,
        buf: &mut BytesMut,
        frame_start: usize,
        room: usize,
    ) -> Option<Result<(), WsError>> {
        let payload_start = frame_start + room;
        let len = buf.len() - payload_start;
        let deflate = self.deflate.as_mut()?;
        if !deflate.wants(len) {
            deflate.sent_plain();
            return None;
        }
        let mut scratch = take_scratch();
        let result = deflate.compress(&buf[payload_start..], &mut scratch);
        let smaller = result.is_ok() && scratch.len() < len;
        if smaller {
            buf.truncate(frame_start);
            self.put_frame(data_opcode(kind), true, &scratch, buf);
        } else if result.is_ok() {
            // Incompressible: deflate made it longer. RFC 7692 lets any message go
            // uncompressed, but the compressor's window now holds bytes the peer's
            // inflater never sees, so it starts afresh.
            deflate.forget_context();
        }
        give_back_scratch(scratch);
        (smaller || result.is_err()).then_some(result)
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

/// A frame header (RFC 6455 section 5.2) with `first` as its first byte (FIN, RSV bits,
/// opcode), the shortest length field for `len`, and `mask` if any; and its length.
#[inline]
pub(crate) fn format_header(first: u8, len: usize, mask: Option<[u8; 4]>) -> ([u8; 14], usize) {
    let mut bytes = [0u8; 14];
    bytes[0] = first;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut n = match len {
        0..126 => {
            bytes[1] = mask_bit | len as u8;
            2
        }
        126..=0xffff => {
            bytes[1] = mask_bit | 126;
            bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            bytes[1] = mask_bit | 127;
            bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    if let Some(mask) = mask {
        bytes[n..n + 4].copy_from_slice(&mask);
        n += 4;
    }
    (bytes, n)
}

/// Nothing may follow a close frame.
#[cold]
fn closed_already() -> WsError {
    WsError::new(
        close_code::NORMAL,
        "the close frame was sent; nothing may follow it",
    )
}

/// The opcode bits of a data frame of `kind`, for its first byte.
#[inline]
fn data_opcode_bits(kind: MessageKind) -> u8 {
    match kind {
        MessageKind::Text => 0x1,
        MessageKind::Binary => 0x2,
    }
}

/// The opcode of a data frame of `kind`.
fn data_opcode(kind: MessageKind) -> OpCode {
    OpCode::Data(match kind {
        MessageKind::Text => Data::Text,
        MessageKind::Binary => Data::Binary,
    })
}
