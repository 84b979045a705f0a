//! Framing: how a stream session's plain bytes become messages and its messages bytes.
//!
//! The stream machine (`stream.rs`) reads, flushes and keeps the session's one timer; what a
//! message looks like on the wire is the framing's business, behind one interface in the
//! sans-IO style: buffers in and out, time passed in (`poll_timeout` / `handle_timeout`).
//! Two framings: [`CodecFraming`], the codec's own (zero-sized: an idle TCP session carries
//! nothing for it), and the WebSocket's (`ws::WsFraming`: frames, pings, close codes).
//! A session's [`Transport`](crate::Transport) names its framing, so the choice is made at
//! compile time and the per-message path has no dynamic dispatch.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use getty_codec::{Decoded, Decoder, Encoder, MessageKind};

use crate::outbound::Outbound;
use crate::Error;

/// What one decode found in the read buffer.
#[derive(Debug)]
pub enum Next<M> {
    /// A message for the handler.
    Message(M),
    /// No whole message yet; with the length of the frame being read, when it is known, so
    /// that room is made for it at once.
    NeedMore(Option<usize>),
    /// The framing handled traffic of its own (a ping answered, a pong noted): decode
    /// again, with the queue's state as it is now.
    Control,
    /// The peer closed its side (a WebSocket close frame): nothing more is delivered, and the
    /// session closes gracefully (the framing's answer is queued already).
    PeerClosed,
}

/// What a decode needs to know of its session.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// The longest message the handler may get.
    pub max_message_len: usize,
    /// The outbound queue is above its high watermark: control answers coalesce.
    pub above_high_watermark: bool,
}

/// A stream session's framing: the layer between the filters (plain bytes) and the handler
/// (messages). The stream machine drives only this; a framing never touches a socket or a
/// clock of its own.
pub trait Framing: 'static {
    /// How many bytes framing a raw payload of `len` bytes (`write_bytes`) adds, counted
    /// against the outbound hard bound before anything is queued; `None` when the framing
    /// transforms the payload (compresses it) into its tail: then what it appended there
    /// is counted once it is framed, as for a codec's message.
    fn overhead(&self, len: usize) -> Option<usize>;

    /// Whether decoding may queue output of the framing's own (pongs, close replies): then a
    /// decode is told whether the queue is above its high watermark.
    const CONTROL_OUTPUT: bool;

    /// Decodes the next message from `input` with the session's codec. Control output of
    /// the framing's own (a pong, a close reply) goes to `control_out`.
    fn decode<C: Decoder>(
        &mut self,
        codec: &mut C,
        input: &mut BytesMut,
        limits: DecodeLimits,
        control_out: &mut BytesMut,
    ) -> Result<Next<C::Item>, Error>;

    /// Encodes one message with the session's codec into `out` (on failure, the caller
    /// truncates `out` to where it was).
    fn encode<C: Encoder<M>, M>(
        &mut self,
        codec: &mut C,
        message: M,
        out: &mut BytesMut,
    ) -> Result<(), Error>;

    /// Encodes one message as [`encode`](Self::encode) does, except that a large payload
    /// the codec leaves out of `out` ([`Encoder::encode_split`]) is returned, to be queued
    /// after `out`'s bytes without a copy. The default never splits: a framing that must
    /// change the payload (mask it, deflate it) or wrap what follows it keeps to `encode`.
    fn encode_split<C: Encoder<M>, M>(
        &mut self,
        codec: &mut C,
        message: M,
        out: &mut BytesMut,
    ) -> Result<Option<Bytes>, Error> {
        self.encode(codec, message, out).map(|()| None)
    }

    /// The message just encoded was refused (past the hard bound, or failed part way) and
    /// taken back out of the queue: undo what encoding it left in the framing's state (a
    /// compressor's window).
    fn retract(&mut self) {}

    /// Queues raw bytes as one message; large ones without a copy where the framing allows
    /// and `keep_views` (the queue drains: see [`Outbound::keeps_views`]), else copied.
    fn write_bytes(
        &mut self,
        bytes: Bytes,
        keep_views: bool,
        out: &mut Outbound,
    ) -> Result<(), Error>;

    /// Queues `buffers` as one unit, as [`write_bytes`](Self::write_bytes) queues one;
    /// returns how many messages that counts as.
    fn write_vectored(
        &mut self,
        buffers: &[Bytes],
        keep_views: bool,
        out: &mut Outbound,
    ) -> Result<u64, Error>;

    /// Encodes `message` once for many sessions (a group's broadcast): what the codec
    /// makes of it, before any framing of one session's own, and whether it is text.
    fn encode_shared<C: Encoder<M>, M>(
        codec: &mut C,
        message: M,
        dst: &mut BytesMut,
    ) -> Result<MessageKind, Error>;

    /// Queues one message that [`encode_shared`](Self::encode_shared) made. Its bytes are
    /// shared with other sessions' queues, so they are never changed in place (a client's
    /// mask or a compressor works on a copy).
    fn write_shared(
        &mut self,
        kind: MessageKind,
        payload: &Bytes,
        out: &mut Outbound,
    ) -> Result<(), Error>;

    /// When [`handle_timeout`](Self::handle_timeout) is due (a pong awaited), if ever.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The session's timer fired at `now`: fails the session when a deadline of the
    /// framing's has passed.
    fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        let _ = now;
        Ok(())
    }

    /// The cron tick, before the handler's `on_cron` (a WebSocket keep-alive ping).
    fn on_cron(&mut self, now: Instant, out: &mut BytesMut) {
        let _ = (now, out);
    }

    /// Reading resumes after a pause at `now`: what was awaited while paused counts from now.
    fn on_resume(&mut self, now: Instant) {
        let _ = now;
    }

    /// It holds output back while the queue is above the high watermark (a pong).
    fn holds_output(&self) -> bool {
        false
    }

    /// The queue is below the high watermark again: what the framing held back while it
    /// was not may go to `out`.
    fn release_output(&mut self, out: &mut BytesMut) {
        let _ = out;
    }

    /// Whether the framing holds the start of a message it took from the input (a
    /// WebSocket frame header, a fragment): input that ends now is cut inside a message,
    /// though no unread byte shows it.
    fn holds_partial_input(&self) -> bool {
        false
    }

    /// Whether the framing holds whole messages it took from the read buffer that the
    /// handler has not had yet (a WebSocket run): they are delivered before anything read
    /// after them, once delivery goes on, though the read buffer may be empty.
    fn holds_messages(&self) -> bool {
        false
    }

    /// The session closes gracefully: queues the framing's goodbye (a close frame with code
    /// 1000, or the app's). Returns true when something was queued.
    fn close(&mut self, out: &mut BytesMut) -> bool {
        let _ = out;
        false
    }

    /// The reactor is shutting down: the goodbye says so (1001, going away).
    fn go_away(&mut self) {}

    /// The session fails with `error`: queues the framing's goodbye for it (a close frame
    /// with 1002, 1007, 1009 or 1001). Returns true when one was queued.
    fn fail(&mut self, error: &Error, out: &mut BytesMut) -> bool {
        let _ = (error, out);
        false
    }
}

/// The codec's own framing: a byte stream cut into messages by the codec alone (TCP, unix
/// sockets). Zero-sized.
#[derive(Debug, Clone, Copy, Default)]
pub struct CodecFraming;

impl Framing for CodecFraming {
    #[inline]
    fn overhead(&self, _len: usize) -> Option<usize> {
        Some(0)
    }

    const CONTROL_OUTPUT: bool = false;

    #[inline]
    fn decode<C: Decoder>(
        &mut self,
        codec: &mut C,
        input: &mut BytesMut,
        limits: DecodeLimits,
        _control_out: &mut BytesMut,
    ) -> Result<Next<C::Item>, Error> {
        let before = input.len();
        // The codec checks the message the handler would get (header or terminator
        // stripped) against the session's limit, from a header alone where it can, and
        // bounds what it leaves buffered without a frame.
        let decoded = codec
            .decode_limited(input, limits.max_message_len)
            .map_err(|e| match e.limit_exceeded() {
                Some((len, max)) => Error::MessageTooLong { len, max },
                None => Error::from(e),
            })?;
        match decoded {
            Decoded::Frame(message) => {
                if input.len() == before {
                    return Err(Error::CodecConsumedNothing);
                }
                Ok(Next::Message(message))
            }
            Decoded::NeedMore(frame_len) => Ok(Next::NeedMore(frame_len)),
        }
    }

    #[inline]
    fn encode<C: Encoder<M>, M>(
        &mut self,
        codec: &mut C,
        message: M,
        out: &mut BytesMut,
    ) -> Result<(), Error> {
        codec.encode(message, out).map_err(Error::from)
    }

    /// The codec's bytes are the wire's: a payload it leaves out goes out as it is.
    #[inline]
    fn encode_split<C: Encoder<M>, M>(
        &mut self,
        codec: &mut C,
        message: M,
        out: &mut BytesMut,
    ) -> Result<Option<Bytes>, Error> {
        codec.encode_split(message, out).map_err(Error::from)
    }

    #[inline]
    fn write_bytes(
        &mut self,
        bytes: Bytes,
        keep_views: bool,
        out: &mut Outbound,
    ) -> Result<(), Error> {
        out.push_or_copy(bytes, keep_views);
        Ok(())
    }

    fn write_vectored(
        &mut self,
        buffers: &[Bytes],
        keep_views: bool,
        out: &mut Outbound,
    ) -> Result<u64, Error> {
        for b in buffers {
            out.push_or_copy(b.clone(), keep_views);
        }
        Ok(buffers.len() as u64)
    }

    /// The codec's bytes are the wire's: every member gets the same ones.
    fn encode_shared<C: Encoder<M>, M>(
        codec: &mut C,
        message: M,
        dst: &mut BytesMut,
    ) -> Result<MessageKind, Error> {
        codec.encode(message, dst)?;
        Ok(MessageKind::Binary)
    }

    #[inline]
    fn write_shared(
        &mut self,
        _: MessageKind,
        payload: &Bytes,
        out: &mut Outbound,
    ) -> Result<(), Error> {
        out.push(payload.clone());
        Ok(())
    }
}
