//! The WebSocket framing: a session's messages as RFC 6455 frames, with the protocol's own
//! traffic (pongs, close frames, keep-alive pings and their timeout) kept here, out of the
//! stream machine.

use std::ops::Range;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use getty_codec::ws::{close_code, Event, InPlace, Protocol, WsError};
use getty_codec::{CodecError, Decoder, Encoder, MessageKind, COPY_BELOW, SPLIT_FROM};

use crate::framing::{DecodeLimits, Framing, Next};
use crate::outbound::Outbound;
use crate::ws::WsState;
use crate::Error;

/// A binary WebSocket payload at least this long that goes out as it is (a server's, not
/// compressed) is queued behind its header without a copy, as `write_bytes` does on TCP.
const ZERO_COPY_PAYLOAD: usize = 4096;

/// The framing of a WebSocket session: its protocol state, boxed (a session holds one
/// pointer for it).
pub struct WsFraming(Box<WsState>);

impl WsFraming {
    pub(crate) fn new(state: WsState) -> Self {
        WsFraming(Box::new(state))
    }

    pub(crate) fn state(&self) -> &WsState {
        &self.0
    }

    pub(crate) fn state_mut(&mut self) -> &mut WsState {
        &mut self.0
    }

    /// `buffers` as one message of `kind`. A server sends a large payload that stays as it
    /// is (not compressed) behind its header without copying it, when `keep_views`;
    /// otherwise the payload is copied into the outbound buffer and framed there (masked by
    /// a client, compressed under permessage-deflate).
    fn write_message(
        &mut self,
        kind: MessageKind,
        buffers: &[Bytes],
        keep_views: bool,
        out: &mut Outbound,
    ) -> Result<(), Error> {
        let len: usize = buffers.iter().map(Bytes::len).sum();
        let start = out.tail.len();
        let may_follow = len >= ZERO_COPY_PAYLOAD && keep_views;
        match frame_payload(
            &mut self.0.protocol,
            kind,
            buffers,
            may_follow,
            &mut out.tail,
        ) {
            Ok(Framed::HeaderOnly) => {
                for b in buffers {
                    out.push(b.clone());
                }
                Ok(())
            }
            Ok(Framed::Whole) => Ok(()),
            Err(e) => {
                out.tail.truncate(start);
                Err(Error::WebSocket(e))
            }
        }
    }
}

/// What [`frame_payload`] put in the buffer.
enum Framed {
    /// The frame's header alone: the payload is to follow it as it is, uncopied.
    HeaderOnly,
    /// The whole frame, the payload copied in.
    Whole,
}

/// Frames `payload` as one message of `kind` at the end of `out`. When the payload `may
/// follow` its header uncopied and the frame carries it as it is (a server's, not
/// compressed), only the header is written; else the payload is copied in and framed in
/// place (masked by a client, compressed under permessage-deflate).
fn frame_payload(
    protocol: &mut Protocol,
    kind: MessageKind,
    payload: &[Bytes],
    may_follow: bool,
    out: &mut BytesMut,
) -> Result<Framed, WsError> {
    let len: usize = payload.iter().map(Bytes::len).sum();
    if may_follow && protocol.put_plain_header(kind, len, out)? {
        return Ok(Framed::HeaderOnly);
    }
    let room = protocol.reserve_header(out);
    for b in payload {
        out.extend_from_slice(b);
    }
    protocol.encode_reserved(kind, out, room)?;
    Ok(Framed::Whole)
}

/// The message at `payload` in `input`, decoded by `codec`, which must take exactly
/// `input[..payload.end]` off: the next frame starts right after it.
// Always inlined, as `Protocol::front_message` is: it runs once per message, and with a
// plain `#[inline]` LLVM moved such functions out of line as their callers grew, at 10 to
// 45 instructions per echoed message each (callgrind, ws_echo scenario b).
#[inline(always)]
fn take_front_message<C: Decoder>(
    codec: &mut C,
    kind: MessageKind,
    input: &mut BytesMut,
    payload: Range<usize>,
) -> Result<Next<C::Item>, Error> {
    let expected = input.len() - payload.end;
    let message = codec.decode_front_message(kind, input, payload)?;
    if input.len() != expected {
        let why = "the codec did not take exactly the message's bytes";
        return Err(Error::Codec(CodecError::malformed(why)));
    }
    Ok(Next::Message(message))
}

/// One message that may be large ([`Framing::encode_split`]): a payload the codec leaves out
/// of `out` goes out behind a header of its own when nothing comes before it in the
/// message and it goes out as it is (the payload is returned, to be queued uncopied); else
/// it is copied in and framed in place. Out of line: it runs for large messages only.
#[inline(never)]
fn encode_large<C: Encoder<M>, M>(
    protocol: &mut Protocol,
    codec: &mut C,
    message: M,
    out: &mut BytesMut,
) -> Result<Option<Bytes>, Error> {
    let room = protocol.reserve_header(out);
    let (kind, payload) = codec.encode_message_split(message, out)?;
    let Some(payload) = payload else {
        return protocol
            .encode_reserved(kind, out, room)
            .map(|()| None)
            .map_err(Error::WebSocket);
    };
    if out.len() == room.payload_start() {
        // Nothing of the codec's comes before the payload: the message is the payload.
        out.truncate(room.frame_start());
        let one = std::slice::from_ref(&payload);
        return match frame_payload(protocol, kind, one, true, out) {
            Ok(Framed::HeaderOnly) => Ok(Some(payload)),
            Ok(Framed::Whole) => Ok(None),
            Err(e) => Err(Error::WebSocket(e)),
        };
    }
    out.extend_from_slice(&payload);
    protocol
        .encode_reserved(kind, out, room)
        .map(|()| None)
        .map_err(Error::WebSocket)
}

impl Framing for WsFraming {
    fn overhead(&self, len: usize) -> Option<usize> {
        self.0.protocol.frame_overhead(len)
    }

    const CONTROL_OUTPUT: bool = true;

    /// The protocol machine answers pings and close frames itself (into `control_out`); a
    /// close from the peer ends input (the reply is flushed, then the session lingers until
    /// the peer's EOF).
    // Inlined: called once per message (and per read that ends short), and a real call
    // here cost about 55 instructions per echoed message in callgrind (ws_echo, 50 conns).
    #[inline]
    fn decode<C: Decoder>(
        &mut self,
        codec: &mut C,
        input: &mut BytesMut,
        limits: DecodeLimits,
        control_out: &mut BytesMut,
    ) -> Result<Next<C::Item>, Error> {
        let ws = &mut *self.0;
        // The common case: the codec takes the message straight from the read buffer, and
        // no event is built for it; a small one comes with the small ones behind it, in a
        // run copied out at once, if the codec takes such copies as they are.
        if C::TAKES_COPIED_MESSAGES {
            if let Some((kind, message)) = ws.run.pop() {
                return Ok(Next::Message(codec.decode_copied_message(kind, message)?));
            }
        }
        if let Some((kind, payload)) = ws.protocol.front_message(input) {
            // (A message alone in the buffer is taken as it is: a run would only add work.)
            let more = input.len() > payload.end;
            if C::TAKES_COPIED_MESSAGES && payload.len() < COPY_BELOW && more {
                let (kind, message) = ws.run.take(&mut ws.protocol, input, kind, payload);
                return Ok(Next::Message(codec.decode_copied_message(kind, message)?));
            }
            return take_front_message(codec, kind, input, payload);
        }
        // Above the high watermark one pong answers a run of pings, and waits until the
        // queue is below it again (`release_output`): a peer flooding pings
        // without reading gets no pong per ping, nor per read where reading goes on. (The
        // common case above never answers one: it declines while a pong is pending.)
        ws.protocol.coalesce_pongs(limits.above_high_watermark);
        ws.protocol.hold_pongs(limits.above_high_watermark);
        let found = ws
            .protocol
            .decode_in_place(input, control_out)
            .map_err(|e| match e.limit_exceeded() {
                // One meaning of the limit on every transport (the close code is 1009).
                Some((len, max)) => Error::MessageTooLong { len, max },
                None => Error::WebSocket(e),
            })?;
        let event = match found {
            // With the length of a frame whose payload is on its way, so that the read
            // buffer takes the frame's size (as a length-prefixed codec's header tells).
            None => return Ok(Next::NeedMore(ws.protocol.awaited_len())),
            // decode_in_place tries the common case first again; it declined above, so it
            // declines here too, but its answer is taken all the same.
            Some(InPlace::Message { kind, payload }) => {
                return take_front_message(codec, kind, input, payload)
            }
            Some(InPlace::Event(event)) => event,
        };
        Ok(match event {
            Event::Message { kind, mut payload } => {
                Next::Message(codec.decode_message(kind, &mut payload)?)
            }
            Event::Pong(_) => {
                ws.ping_sent = None;
                Next::Control
            }
            Event::Ping(_) => Next::Control,
            Event::Close(frame) => {
                log::debug!("websocket peer closed: {frame:?}");
                Next::PeerClosed
            }
        })
    }

    /// One WebSocket message: the codec's bytes become a frame where they lie, behind room
    /// left for the header.
    #[inline]
    fn encode<C: Encoder<M>, M>(
        &mut self,
        codec: &mut C,
        message: M,
        out: &mut BytesMut,
    ) -> Result<(), Error> {
        let protocol = &mut self.0.protocol;
        let room = protocol.reserve_header(out);
        let kind = codec.encode_message(message, out)?;
        protocol
            .encode_reserved(kind, out, room)
            .map_err(Error::WebSocket)
    }

    /// A large payload the codec leaves out ([`Encoder::encode_message_split`]) follows
    /// its frame's header uncopied when it goes out as it is (a server's, not compressed),
    /// as `write_bytes` sends it; otherwise it is copied into `out` and framed in place
    /// (inlined: called once per message, through `Session::write`).
    #[inline]
    fn encode_split<C: Encoder<M>, M>(
        &mut self,
        codec: &mut C,
        message: M,
        out: &mut BytesMut,
    ) -> Result<Option<Bytes>, Error> {
        // Only a message that may be large is asked for its payload: the usual small one
        // takes the in-place path alone, as `encode` does (with the large path inline too,
        // LLVM moved the in-place framing out of line: about 25 instructions per echoed
        // message in callgrind, ws_echo scenario b).
        if C::encoded_len_hint(&message) < SPLIT_FROM {
            return self.encode(codec, message, out).map(|()| None);
        }
        encode_large(&mut self.0.protocol, codec, message, out)
    }

    /// A compressed message is in the compressor's window by now: it must not stay there,
    /// or later messages would refer to bytes the peer never gets.
    fn retract(&mut self) {
        self.0.protocol.retract_last_message();
    }

    fn write_bytes(
        &mut self,
        bytes: Bytes,
        keep_views: bool,
        out: &mut Outbound,
    ) -> Result<(), Error> {
        let one = std::slice::from_ref(&bytes);
        self.write_message(MessageKind::Binary, one, keep_views, out)
    }

    fn write_vectored(
        &mut self,
        buffers: &[Bytes],
        keep_views: bool,
        out: &mut Outbound,
    ) -> Result<u64, Error> {
        self.write_message(MessageKind::Binary, buffers, keep_views, out)?;
        Ok(1)
    }

    /// The codec's message, not yet framed: each member frames it its own way (a client
    /// masks, a compressing session deflates with its own window).
    fn encode_shared<C: Encoder<M>, M>(
        codec: &mut C,
        message: M,
        dst: &mut BytesMut,
    ) -> Result<MessageKind, Error> {
        Ok(codec.encode_message(message, dst)?)
    }

    fn write_shared(
        &mut self,
        kind: MessageKind,
        payload: &Bytes,
        out: &mut Outbound,
    ) -> Result<(), Error> {
        // A broadcast's payload is the group's own allocation, shared by every member's
        // queue: a view of it pins nothing more, and copies would cost one per member.
        self.write_message(kind, std::slice::from_ref(payload), true, out)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.0.pong_deadline()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        if self.0.pong_deadline().is_some_and(|t| now >= t) {
            let timeout = self.0.keepalive.pong_timeout.unwrap_or_default();
            return Err(Error::PongTimeout(timeout));
        }
        Ok(())
    }

    fn on_cron(&mut self, now: Instant, out: &mut BytesMut) {
        if self.0.keepalive.ping_on_cron {
            // It can only fail once the close handshake has started, when no ping is due.
            let _ = self.0.ping(b"", now, out);
        }
    }

    fn holds_output(&self) -> bool {
        self.0.protocol.holds_pong()
    }

    fn release_output(&mut self, out: &mut BytesMut) {
        self.0.protocol.release_pongs(out);
    }

    /// A pong that came while paused is still unread: its time counts from now.
    fn on_resume(&mut self, now: Instant) {
        if self.0.ping_sent.is_some() {
            self.0.ping_sent = Some(now);
        }
    }

    /// A frame whose header was taken, or a fragmented message short of its last fragment.
    fn holds_partial_input(&self) -> bool {
        self.0.protocol.in_message()
    }

    /// Messages of a run copied out of the read buffer that the handler has not had yet.
    fn holds_messages(&self) -> bool {
        self.0.run.holds_messages()
    }

    /// A close frame (1000, or the code the app chose with `close_with`) unless one was sent
    /// already.
    fn close(&mut self, out: &mut BytesMut) -> bool {
        let ws = &mut *self.0;
        let (code, reason) = ws.close_with.take().unwrap_or((1000, String::new()));
        let _ = ws.protocol.close(code, &reason, out);
        true
    }

    /// RFC 6455: 1001, the endpoint is going away.
    fn go_away(&mut self) {
        self.0
            .close_with
            .get_or_insert((close_code::GOING_AWAY, String::new()));
    }

    /// Tells the peer why with a close frame (1002, 1007, 1009, 1001).
    fn fail(&mut self, error: &Error, out: &mut BytesMut) -> bool {
        let code = match error {
            Error::WebSocket(e) => e.close_code(),
            Error::Codec(_) | Error::CodecConsumedNothing => 1007,
            Error::MessageTooLong { .. } => 1009,
            Error::PongTimeout(_) | Error::ReadIdle(_) => 1001,
            _ => return false,
        };
        let failure = match error {
            Error::WebSocket(e) => e.clone(),
            other => WsError::new(code, other.to_string()),
        };
        self.0.protocol.fail(&failure, out)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use getty_codec::Message;

    use super::SPLIT_FROM;

    /// A server's large message goes out behind a header of its own, uncopied, through
    /// `write` as through `write_bytes`; a small one is framed in the tail.
    #[test]
    fn a_servers_large_message_is_queued_behind_its_header_uncopied() {
        crate::with_ws_session(|s| {
            s.write(Message::text("hi")).unwrap();
            assert_eq!(&s.out.tail[..], b"\x81\x02hi");
            let payload = Bytes::from(vec![7u8; SPLIT_FROM]);
            let at = payload.as_ptr();
            s.write(Message::binary(payload)).unwrap();
            // 16 KiB: a 4-byte header (126, then the length) behind "hi", then the payload.
            let header = [0x82, 0x7e, (SPLIT_FROM >> 8) as u8, SPLIT_FROM as u8];
            let chunks = s.out.queued_chunks();
            assert_eq!(chunks.len(), 2);
            assert_eq!(
                chunks[0][..],
                [&b"\x81\x02hi"[..], &header[..]].concat()[..]
            );
            assert_eq!(chunks[1].as_ptr(), at, "the payload was copied");
            assert_eq!(s.queued_bytes(), 4 + 4 + SPLIT_FROM);
            s.write(Message::binary(vec![1u8; 3])).unwrap();
            assert_eq!(
                &s.out.tail[..],
                b"\x82\x03\x01\x01\x01",
                "after the payload"
            );
        });
    }
}
