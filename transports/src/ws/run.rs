//! Small WebSocket messages taken from the read buffer a run at a time: one copy out of the
//! buffer for the run, then each message a view of that copy.
//!
//! A handler owns the messages it is given, so each small message must leave the read
//! buffer (a view would keep the whole pooled buffer alive as long as the handler keeps the
//! message). Copied one by one, that costs a cut of the read buffer and a copy per message.
//! A run takes the whole small frames that lie together at the front of the buffer (as one
//! read brings them) with one copy of their bytes, headers and all, and its messages are
//! views of that copy: fewer than [`COPY_BELOW`] bytes, which is what a kept message may
//! pin, as with [`getty_codec::split_message`].

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use getty_codec::ws::Protocol;
use getty_codec::{split_message, MessageKind, COPY_BELOW};

/// The most messages one run takes (the rest of a read starts the next run).
const MAX_MESSAGES: usize = 32;

/// The messages of the latest run not yet handed out, in order.
pub(crate) struct Run {
    /// The run's frames from the next message's payload on (the headers of the later ones
    /// still in place, unmasked payloads).
    frames: Bytes,
    /// Each message's header length, skipped before its payload (the first's was skipped
    /// before the copy).
    headers: [u8; MAX_MESSAGES],
    /// Each message's payload length.
    lens: [u16; MAX_MESSAGES],
    /// Bit `i` set: message `i` is text.
    text: u32,
    /// The next one to hand out.
    next: u8,
    /// How many the run holds.
    count: u8,
}

impl Run {
    pub(crate) const fn new() -> Self {
        Run {
            frames: Bytes::new(),
            headers: [0; MAX_MESSAGES],
            lens: [0; MAX_MESSAGES],
            text: 0,
            next: 0,
            count: 0,
        }
    }

    /// Whether messages of the run wait to be handed out.
    pub(crate) fn holds_messages(&self) -> bool {
        self.next < self.count
    }

    /// The run's next message.
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<(MessageKind, Bytes)> {
        if self.next >= self.count {
            return None;
        }
        let i = usize::from(self.next);
        self.next += 1;
        let kind = if self.text & (1 << i) != 0 {
            MessageKind::Text
        } else {
            MessageKind::Binary
        };
        self.frames.advance(usize::from(self.headers[i]));
        let message = if self.next == self.count {
            // All that is left (which lets the copy go with the last message).
            std::mem::take(&mut self.frames)
        } else {
            self.frames.split_to(usize::from(self.lens[i]))
        };
        Some((kind, message))
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
        self.headers[0] = 0;
        self.lens[0] = first.len() as u16;
        self.text = u32::from(kind == MessageKind::Text);
        let mut count = 1;
        let mut end = first.end;
        while count < MAX_MESSAGES {
            let room = COPY_BELOW - 1 - (end - first.start);
            let Some((kind, payload)) = protocol.front_message_within(&mut input[end..], room)
            else {
                break;
            };
            // A header is at most 8 bytes here (no 64-bit length), a payload under 4 KiB.
            self.headers[count] = payload.start as u8;
            self.lens[count] = payload.len() as u16;
            self.text |= u32::from(kind == MessageKind::Text) << count;
            end += payload.end;
            count += 1;
        }
        input.advance(first.start);
        self.frames = split_message(input, end - first.start);
        self.count = count as u8;
        self.next = 0;
        self.pop().expect("the run's first message")
    }
}

#[cfg(test)]
mod tests;
