//! Small WebSocket messages taken from the read buffer a run at a time: one copy out of the
//! buffer for the run, then each message a view of that copy.
//!
//! A handler owns the messages it is given, so each small message must leave the read
//! buffer (a view would keep the whole pooled buffer alive as long as the handler keeps the
//! message). Copied one by one, that costs a cut of the read buffer and a copy per message.
//! A run takes the whole small frames that lie together at the front of the buffer (as one
//! read brings them) with one copy of their bytes, and its messages are views of that copy.
//! The copy goes into the thread's slab of small copies ([`getty_codec::split_message`]),
//! filling what the slab has left, so a kept message pins what a copy of its own would:
//! less than [`COPY_BELOW`] bytes, in a packed slab. Only the headers of the frames after
//! the first come along (2 to 8 bytes a message).

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use getty_codec::ws::Protocol;
use getty_codec::{small_copy_room, split_message, MessageKind, COPY_BELOW};

/// The messages of the latest run not yet handed out, in order.
pub(crate) struct Run {
    /// The run's bytes not handed out: the first message's payload, unless it was, then
    /// the later frames whole (their headers as they came, their payloads unmasked).
    frames: Bytes,
    /// The first message's kind and length, until it is handed out.
    first: Option<(MessageKind, u16)>,
    /// How many messages wait.
    left: u16,
}

impl Run {
    pub(crate) const fn new() -> Self {
        Run {
            frames: Bytes::new(),
            first: None,
            left: 0,
        }
    }

    /// Whether messages of the run wait to be handed out.
    pub(crate) fn holds_messages(&self) -> bool {
        self.left > 0
    }

    /// The run's next message.
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<(MessageKind, Bytes)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (kind, len) = match self.first.take() {
            Some((kind, len)) => (kind, usize::from(len)),
            None => self.take_header(),
        };
        let message = if self.left == 0 {
            // All that is left (which lets the copy go with the last message).
            std::mem::take(&mut self.frames)
        } else {
            // `slice` is generic, so inlined here, where `split_to` was a call into `bytes`
            // of about 40 instructions.
            let message = self.frames.slice(..len);
            self.frames.advance(len);
            message
        };
        Some((kind, message))
    }

    /// The header at the front of `frames`, taken off: one that [`take`](Run::take) found
    /// on a whole text or binary frame with FIN set and no RSV bits, its length in 7 or 16
    /// bits.
    #[inline(always)]
    fn take_header(&mut self) -> (MessageKind, usize) {
        let (first, second) = (self.frames[0], self.frames[1]);
        let kind = if first == 0x81 {
            MessageKind::Text
        } else {
            MessageKind::Binary
        };
        let (field, len) = match second & 0x7f {
            126 => (
                2,
                usize::from(u16::from_be_bytes([self.frames[2], self.frames[3]])),
            ),
            short => (0, usize::from(short)),
        };
        let mask = if second & 0x80 != 0 { 4 } else { 0 };
        self.frames.advance(2 + field + mask);
        (kind, len)
    }

    /// Takes the run of whole small messages at the front of `input`, the first of which
    /// `protocol` found there (of `kind`, its payload at `first`, unmasked), and returns
    /// that one: the frames are copied out in one piece and leave `input`. The run holds
    /// the others; the caller must have handed out all of the previous run's.
    #[inline]
    pub(crate) fn take(
        &mut self,
        protocol: &mut Protocol,
        input: &mut BytesMut,
        kind: MessageKind,
        first: Range<usize>,
    ) -> (MessageKind, Bytes) {
        debug_assert!(!self.holds_messages());
        debug_assert!(first.len() < COPY_BELOW);
        // The piece fills what the slab has left if the first message fits there, so that
        // no slab keeps room it never fills; else it starts a new slab.
        let room = small_copy_room();
        let most = if room >= first.len() {
            room.min(COPY_BELOW - 1)
        } else {
            COPY_BELOW - 1
        };
        let (mut count, mut end) = frames_within(protocol, input, &first, most);
        if count == 1 && most < COPY_BELOW - 1 {
            // Nothing after the first fits in what the slab has left: a new slab for the
            // run. (An empty first message always fits, and would find the same room
            // again and again: a run of one each.)
            (count, end) = frames_within(protocol, input, &first, COPY_BELOW - 1);
        }
        input.advance(first.start);
        self.frames = split_message(input, end - first.start);
        self.first = Some((kind, first.len() as u16));
        self.left = count;
        self.pop().expect("the run's first message")
    }
}

/// How many whole small frames, from the first message's (its payload at `first`) on, lie
/// within `most` bytes of its payload's start (the first counted whatever its length), and
/// where the last of them ends. Each is unmasked in place; the next, declined, is left as
/// it came.
#[inline]
fn frames_within(
    protocol: &mut Protocol,
    input: &mut BytesMut,
    first: &Range<usize>,
    most: usize,
) -> (u16, usize) {
    let mut count = 1;
    let mut end = first.end;
    while let Some((_, payload)) =
        protocol.front_message_within(&mut input[end..], most - (end - first.start))
    {
        end += payload.end;
        count += 1;
    }
    (count, end)
}

#[cfg(test)]
mod tests;
