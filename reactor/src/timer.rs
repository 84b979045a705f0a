//! Timers that live inside the poll loop: a binary heap of deadlines over a slab of timers.
//!
//! Setting a timer and firing one are O(log n). Cancelling is O(1): the slab slot goes away and
//! the heap node is left behind as a tombstone, skipped when it surfaces. Tombstones are
//! swept out when they outnumber live timers, so a connection churn that cancels many timers
//! cannot grow the heap without bound.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use slab::Slab;

use crate::EntryId;

/// Names one armed timer, so that its owner can cancel it.
///
/// ```
/// use std::time::Duration;
/// use getty_reactor::{Context, Entry, Ready, Reactor, Status};
///
/// struct Once;
/// impl Entry for Once {
///     type Command = getty_reactor::NoCommand;
///     fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
///         let id = cx.set_timer(Duration::from_secs(60), 1);
///         cx.cancel_timer(id); // never fires
///         cx.set_timer(Duration::from_millis(1), 2);
///         Status::Continue
///     }
///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
///     fn on_timer(&mut self, cx: &mut Context<'_>, tag: u64) -> Status {
///         assert_eq!(tag, 2);
///         cx.handle().shutdown();
///         Status::Done
///     }
/// }
/// let mut reactor = Reactor::new().unwrap();
/// reactor.spawn(Once);
/// reactor.run().unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: usize,
    seq: u64,
}

struct Armed {
    seq: u64,
    owner: EntryId,
    tag: u64,
}

/// A node in the heap: earliest deadline first, then the order of arming.
type Node = Reverse<(Instant, u64, usize)>;

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Node>,
    armed: Slab<Armed>,
    next_seq: u64,
}

/// Heaps smaller than this are never swept: sweeping them would cost more than it saves.
const SWEEP_FLOOR: usize = 1024;

impl Timers {
    pub(crate) fn set(&mut self, deadline: Instant, owner: EntryId, tag: u64) -> TimerId {
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = self.armed.insert(Armed { seq, owner, tag });
        self.heap.push(Reverse((deadline, seq, key)));
        TimerId { key, seq }
    }

    /// Returns true when the timer was still armed.
    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        let live = matches!(self.armed.get(id.key), Some(a) if a.seq == id.seq);
        if live {
            self.armed.remove(id.key);
            self.sweep_if_sparse();
        }
        live
    }

    /// The earliest deadline of a live timer, dropping tombstones on the way.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, seq, key))) = self.heap.peek().copied() {
            if self.is_live(key, seq) {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// The sequence number the next armed timer will get. Timers armed from now on are not
    /// fired by `pop_expired(_, limit)` with this limit, so a timer that re-arms itself with
    /// a zero delay runs once per turn instead of looping forever.
    pub(crate) fn seq_limit(&self) -> u64 {
        self.next_seq
    }

    /// Removes and returns one timer due at `now` that was armed before `seq_limit`.
    pub(crate) fn pop_expired(&mut self, now: Instant, seq_limit: u64) -> Option<(EntryId, u64)> {
        while let Some(Reverse((deadline, seq, key))) = self.heap.peek().copied() {
            if !self.is_live(key, seq) {
                self.heap.pop();
                continue;
            }
            if deadline > now || seq >= seq_limit {
                return None;
            }
            self.heap.pop();
            let armed = self.armed.remove(key);
            return Some((armed.owner, armed.tag));
        }
        None
    }

    pub(crate) fn live_count(&self) -> usize {
        self.armed.len()
    }

    fn is_live(&self, key: usize, seq: u64) -> bool {
        matches!(self.armed.get(key), Some(a) if a.seq == seq)
    }

    fn sweep_if_sparse(&mut self) {
        if self.heap.len() > SWEEP_FLOOR && self.heap.len() > 2 * self.armed.len() {
            let armed = &self.armed;
            self.heap.retain(
                |Reverse((_, seq, key))| matches!(armed.get(*key), Some(a) if a.seq == *seq),
            );
        }
    }

    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn owner(key: usize) -> EntryId {
        EntryId::new(key, key as u64)
    }

    #[test]
    fn fires_in_deadline_order() {
        let mut t = Timers::default();
        let base = Instant::now();
        t.set(base + Duration::from_millis(30), owner(3), 3);
        t.set(base + Duration::from_millis(10), owner(1), 1);
        t.set(base + Duration::from_millis(20), owner(2), 2);
        assert_eq!(t.next_deadline(), Some(base + Duration::from_millis(10)));
        let limit = t.seq_limit();
        let later = base + Duration::from_millis(25);
        assert_eq!(t.pop_expired(later, limit), Some((owner(1), 1)));
        assert_eq!(t.pop_expired(later, limit), Some((owner(2), 2)));
        assert_eq!(t.pop_expired(later, limit), None);
        assert_eq!(t.live_count(), 1);
    }

    #[test]
    fn cancelled_timer_never_fires() {
        let mut t = Timers::default();
        let now = Instant::now();
        let id = t.set(now, owner(1), 7);
        assert!(t.cancel(id));
        assert!(!t.cancel(id), "a second cancel is a no-op");
        assert_eq!(t.pop_expired(now, t.seq_limit()), None);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn stale_id_cannot_cancel_a_reused_slot() {
        let mut t = Timers::default();
        let now = Instant::now();
        let old = t.set(now, owner(1), 1);
        assert!(t.cancel(old));
        let _new = t.set(now, owner(2), 2); // reuses the slab slot of `old`
        assert!(!t.cancel(old));
        assert_eq!(t.pop_expired(now, t.seq_limit()), Some((owner(2), 2)));
    }

    #[test]
    fn timers_armed_after_the_limit_wait_for_the_next_turn() {
        let mut t = Timers::default();
        let now = Instant::now();
        let limit = t.seq_limit();
        t.set(now, owner(1), 1);
        assert_eq!(t.pop_expired(now, limit), None);
        assert_eq!(t.pop_expired(now, t.seq_limit()), Some((owner(1), 1)));
    }

    #[test]
    fn tombstones_are_swept() {
        let mut t = Timers::default();
        let far = Instant::now() + Duration::from_secs(3600);
        for i in 0..100_000 {
            let id = t.set(far, owner(i), 0);
            t.cancel(id);
        }
        assert!(
            t.heap_len() <= 2 * SWEEP_FLOOR + 2,
            "heap kept {} tombstones",
            t.heap_len()
        );
    }
}
