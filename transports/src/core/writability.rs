//! Watermarks and the handler's view of them, and the settling round every entry runs after
//! an event: flush, tell the handler of a crossing, flush what it wrote on hearing it.

use getty_reactor::{Context, Ready};

use crate::Error;

/// What the watermarks say of a session's queue, and what its handler last heard, in one
/// byte (ten thousand idle sessions each hold one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Writability(u8);

/// The queue is below the high watermark (or has drained to the low one since).
const WRITABLE: u8 = 1;
/// The handler was last told the session is writable (`on_writability_changed`).
const REPORTED: u8 = 2;

impl Default for Writability {
    fn default() -> Self {
        Writability(WRITABLE | REPORTED)
    }
}

impl Writability {
    #[inline]
    pub(crate) fn is_writable(self) -> bool {
        self.0 & WRITABLE != 0
    }

    #[inline]
    fn reported(self) -> bool {
        self.0 & REPORTED != 0
    }

    #[inline]
    fn set(&mut self, bit: u8, on: bool) {
        if on {
            self.0 |= bit;
        } else {
            self.0 &= !bit;
        }
    }

    /// A write left `queued` bytes: at the high watermark the session stops being
    /// writable at once, so that the handler's next `is_writable` inside the same callback
    /// says so. The handler hears of it when the callback returns ([`take_crossing`]).
    ///
    /// [`take_crossing`]: Self::take_crossing
    #[inline]
    pub(crate) fn note_grown(&mut self, queued: usize, high: usize) {
        if queued >= high {
            self.set(WRITABLE, false);
        }
    }

    /// The crossing the handler has yet to hear of, with `queued` bytes now queued, if any:
    /// the new writability, now counted as told. Nothing is told to a session that is no
    /// longer `open` (it is closing, and its handler may no longer write), though its
    /// writability still follows the queue.
    #[inline]
    pub(crate) fn take_crossing(
        &mut self,
        queued: usize,
        high: usize,
        low: usize,
        open: bool,
    ) -> Option<bool> {
        if self.is_writable() == self.reported() {
            let next = next_writability(self.reported(), queued, high, low);
            self.set(WRITABLE, next);
        }
        let writable = self.is_writable();
        if writable == self.reported() || !open {
            return None;
        }
        self.set(REPORTED, writable);
        Some(writable)
    }

    /// Whether [`take_crossing`](Self::take_crossing) has a crossing to tell: the session
    /// went unwritable inside a callback, or its queue has crossed a watermark since the
    /// last report.
    #[inline]
    pub(crate) fn crossing_pending(self, queued: usize, high: usize, low: usize) -> bool {
        let reported = self.reported();
        self.is_writable() != reported || next_writability(reported, queued, high, low) != reported
    }
}

/// The writability a session should report next, given the last one reported. It moves
/// one step at a time from the reported state, so a write that crosses the high watermark
/// and a flush that drains below the low one at once are reported as both crossings: a
/// handler that stopped producing on `false` must hear `true`. A queue is never both at
/// the high watermark and at the low one (`SessionOptions::watermarks` keeps `low` below
/// `high`, and so does this), or its writability would flip on every round.
#[inline]
fn next_writability(reported: bool, queued: usize, high: usize, low: usize) -> bool {
    if reported && queued >= high {
        false
    } else if !reported && queued <= low && queued < high {
        true
    } else {
        reported
    }
}

/// An entry whose session writes through an outbound queue, as [`settle_output`] drives it.
pub(crate) trait Output {
    /// Writes what the socket takes now. True when queued output is left that another
    /// round may send (a batch limit stopped it, not a full socket).
    fn flush_output(&mut self, cx: &mut Context<'_>) -> Result<bool, Error>;

    /// Tells the handler of a watermark crossing, if there is one to tell; true when it
    /// did (the handler may have written more on hearing it).
    fn report_writability(&mut self, cx: &mut Context<'_>) -> bool;

    /// Output still queued, or a crossing the handler has yet to hear of.
    fn output_pending(&self) -> bool;
}

/// Rounds of flushing and reporting per event, at most.
const SETTLE_ROUNDS: usize = 4;

/// Flushes, and tells the handler of watermark crossings, until neither has more to do.
///
/// The handler may write again when it hears of a crossing, so the queue is flushed again:
/// a few rounds at most, so that a handler refilling a fast reader's queue cannot hold the
/// loop. Work left after the last round waits for the next turn, rescheduled here since no
/// writable edge may come for it: bytes written after the last flush (which did not fill
/// the socket), or a crossing still to tell. The second matters as much: when the last
/// round reported "not writable" for a queue the flush had meanwhile drained, the handler
/// stopped producing, and nothing else would ever tell it to resume.
#[inline]
pub(crate) fn settle_output(entry: &mut impl Output, cx: &mut Context<'_>) -> Result<(), Error> {
    for _ in 0..SETTLE_ROUNDS {
        let more = entry.flush_output(cx)?;
        if !entry.report_writability(cx) && !more {
            return Ok(());
        }
    }
    if entry.output_pending() {
        cx.reschedule(Ready::WRITABLE);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writability_moves_one_crossing_at_a_time() {
        let (high, low) = (100, 50);
        assert!(!next_writability(true, 100, high, low), "crossing high");
        assert!(next_writability(true, 99, high, low));
        assert!(next_writability(false, 50, high, low), "drained to low");
        assert!(!next_writability(false, 51, high, low));
        // Reported writable, queue already drained: no crossing to report.
        assert!(next_writability(true, 0, high, low));
    }

    /// Whatever the watermarks (even equal, or a high of 0 set some other way) and the
    /// queue, a crossing is told at most once per state: the next writability is a fixed
    /// point, so a queue that cannot drain never flips it round after round.
    #[test]
    fn a_queue_that_stays_put_settles_after_one_crossing() {
        for high in 0..6 {
            for low in 0..6 {
                for queued in 0..8 {
                    for reported in [true, false] {
                        let next = next_writability(reported, queued, high, low);
                        assert_eq!(
                            next_writability(next, queued, high, low),
                            next,
                            "flips at high {high}, low {low}, queued {queued}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_crossing_is_told_once_and_only_while_open() {
        let (high, low) = (100, 50);
        let mut w = Writability::default();
        assert_eq!(w.take_crossing(10, high, low, true), None);
        w.note_grown(100, high);
        assert!(!w.is_writable(), "unwritable at once, inside the callback");
        assert!(w.crossing_pending(100, high, low));
        assert_eq!(w.take_crossing(100, high, low, true), Some(false));
        assert_eq!(w.take_crossing(100, high, low, true), None, "told once");
        assert!(
            !w.crossing_pending(60, high, low),
            "not yet at the low watermark"
        );
        assert!(w.crossing_pending(50, high, low));
        assert_eq!(
            w.take_crossing(50, high, low, false),
            None,
            "closing: not told"
        );
        assert!(w.is_writable(), "but it follows the queue");
        assert_eq!(w.take_crossing(50, high, low, true), Some(true));
    }

    #[test]
    fn a_write_past_high_then_a_drain_below_low_tells_both() {
        let (high, low) = (100, 50);
        let mut w = Writability::default();
        w.note_grown(150, high);
        // The flush drained it all before the handler heard of the first crossing.
        assert_eq!(w.take_crossing(0, high, low, true), Some(false));
        assert_eq!(w.take_crossing(0, high, low, true), Some(true));
        assert_eq!(w.take_crossing(0, high, low, true), None);
    }
}
