//! A member's inbox: the broadcasts waiting to be queued on one session, shared by the
//! session and every group it is in. Single-threaded (`Rc`, `RefCell`): only code on the
//! session's reactor thread touches it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use bytes::Bytes;
use getty_codec::MessageKind;
use getty_reactor::EntryId;

use super::SlowConsumer;

/// One broadcast for one member: the shared bytes, framed by the member when queued.
pub(crate) struct Pending {
    pub(crate) kind: MessageKind,
    pub(crate) payload: Bytes,
}

/// What [`Inbox::offer`] did with a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    Queued,
    /// Queued after dropping this many older broadcasts.
    QueuedDropping(u64),
    Skipped,
    /// Over the bound under `SlowConsumer::Close`: the member is told to close.
    Closing,
    /// The member has ended or closed: nothing queued, and the group forgets it.
    Gone,
}

pub(crate) struct Inbox {
    /// The group whose broadcasts these are.
    group: u64,
    entry: EntryId,
    state: RefCell<State>,
    /// The group's part on this reactor lists it among its members: how the part tells a
    /// second join of the same session without searching its list.
    listed: Cell<bool>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Pending>,
    bytes: usize,
    /// A wake is on its way: more broadcasts need none.
    woken: bool,
    /// Set by `SlowConsumer::Close`: (pending bytes, bound) for the member's error, until
    /// the member takes it.
    overflow: Option<(usize, usize)>,
    /// `SlowConsumer::Close` put the member out of every group.
    expelled: bool,
    /// A group asked the member to close gracefully.
    close_requested: bool,
    ended: bool,
}

impl Inbox {
    pub(crate) fn new(group: u64, entry: EntryId) -> Self {
        Inbox {
            group,
            entry,
            state: RefCell::default(),
            listed: Cell::new(false),
        }
    }

    /// Whether the group's part lists this member (see [`set_listed`](Self::set_listed)).
    pub(crate) fn is_listed(&self) -> bool {
        self.listed.get()
    }

    /// The group's part added this member to its list, or took it off.
    pub(crate) fn set_listed(&self, listed: bool) {
        self.listed.set(listed);
    }

    pub(crate) fn group(&self) -> u64 {
        self.group
    }

    /// Queues `pending` for the member within `max_pending` bytes, under `policy`, and wakes
    /// the member if it was not already.
    pub(crate) fn offer(
        &self,
        pending: Pending,
        policy: SlowConsumer,
        max_pending: usize,
    ) -> Offered {
        let mut state = self.state.borrow_mut();
        if state.ended || state.expelled || state.close_requested {
            return Offered::Gone;
        }
        let len = pending.payload.len();
        let mut dropped = 0;
        if state.bytes + len > max_pending && !state.queue.is_empty() {
            match policy {
                SlowConsumer::Skip => return Offered::Skipped,
                SlowConsumer::Close => {
                    state.overflow = Some((state.bytes + len, max_pending));
                    state.expelled = true;
                    state.queue.clear();
                    state.bytes = 0;
                    drop(state);
                    self.wake();
                    return Offered::Closing;
                }
                SlowConsumer::DropOldest => {
                    while state.bytes + len > max_pending {
                        let Some(old) = state.queue.pop_front() else {
                            break;
                        };
                        state.bytes -= old.payload.len();
                        dropped += 1;
                    }
                }
            }
        }
        state.bytes += len;
        state.queue.push_back(pending);
        drop(state);
        self.wake();
        if dropped > 0 {
            Offered::QueuedDropping(dropped)
        } else {
            Offered::Queued
        }
    }

    /// Asks the member to close gracefully (what is queued goes out first).
    pub(crate) fn request_close(&self) {
        self.state.borrow_mut().close_requested = true;
        self.wake();
    }

    fn wake(&self) {
        let mut state = self.state.borrow_mut();
        if !state.woken {
            state.woken = getty_reactor::wake(self.entry);
        }
    }

    /// The member took what it could and wants another turn for the rest.
    pub(crate) fn rewake(&self) {
        self.wake();
    }

    /// The member runs: the wakes so far are answered.
    pub(crate) fn note_running(&self) {
        self.state.borrow_mut().woken = false;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.state.borrow().queue.is_empty()
    }

    pub(crate) fn pop(&self) -> Option<Pending> {
        let mut state = self.state.borrow_mut();
        let pending = state.queue.pop_front()?;
        state.bytes -= pending.payload.len();
        Some(pending)
    }

    /// Puts back a broadcast the member could not queue yet.
    pub(crate) fn push_front(&self, pending: Pending) {
        let mut state = self.state.borrow_mut();
        state.bytes += pending.payload.len();
        state.queue.push_front(pending);
    }

    /// `SlowConsumer::Close` closed the member: (pending bytes, bound), told once.
    pub(crate) fn take_overflow(&self) -> Option<(usize, usize)> {
        self.state.borrow_mut().overflow.take()
    }

    pub(crate) fn close_requested(&self) -> bool {
        self.state.borrow().close_requested
    }

    /// The member has ended: drop what waits, and let groups forget it.
    pub(crate) fn end(&self) {
        let mut state = self.state.borrow_mut();
        state.ended = true;
        state.queue = VecDeque::new();
        state.bytes = 0;
    }

    /// Whether a group should still count this member.
    pub(crate) fn is_member(&self) -> bool {
        let state = self.state.borrow();
        !state.ended && !state.expelled
    }
}

#[cfg(test)]
mod tests {
    //! The inbox against a model: whole broadcasts in order, the byte count, and each
    //! policy's decision at the bound.

    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[derive(Debug, Clone)]
    enum Op {
        Offer(usize),
        /// The member takes one (and, if `back`, puts it back: it did not fit).
        Take {
            back: bool,
        },
        RequestClose,
        End,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3_000usize).prop_map(Op::Offer),
            4 => any::<bool>().prop_map(|back| Op::Take { back }),
            1 => Just(Op::RequestClose),
            1 => Just(Op::End),
        ]
    }

    fn policy() -> impl Strategy<Value = SlowConsumer> {
        prop_oneof![
            Just(SlowConsumer::Skip),
            Just(SlowConsumer::DropOldest),
            Just(SlowConsumer::Close)
        ]
    }

    /// The documented behaviour: a broadcast that would take the waiting bytes past the
    /// bound, with something already waiting, is skipped, makes room by dropping the
    /// oldest, or closes the member; a member gone takes nothing more.
    #[derive(Default)]
    struct Model {
        queue: VecDeque<(u64, usize)>,
        gone: bool,
        overflow: Option<(usize, usize)>,
    }

    impl Model {
        fn bytes(&self) -> usize {
            self.queue.iter().map(|&(_, len)| len).sum()
        }

        fn offer(&mut self, id: u64, len: usize, policy: SlowConsumer, max: usize) -> Offered {
            if self.gone {
                return Offered::Gone;
            }
            let mut dropped = 0;
            if self.bytes() + len > max && !self.queue.is_empty() {
                match policy {
                    SlowConsumer::Skip => return Offered::Skipped,
                    SlowConsumer::Close => {
                        self.overflow = Some((self.bytes() + len, max));
                        self.queue.clear();
                        self.gone = true;
                        return Offered::Closing;
                    }
                    SlowConsumer::DropOldest => {
                        while self.bytes() + len > max && self.queue.pop_front().is_some() {
                            dropped += 1;
                        }
                    }
                }
            }
            self.queue.push_back((id, len));
            if dropped > 0 {
                Offered::QueuedDropping(dropped)
            } else {
                Offered::Queued
            }
        }
    }

    /// A payload that names its broadcast: its first 8 bytes (when it has them).
    fn payload(id: u64, len: usize) -> Bytes {
        let mut bytes = id.to_be_bytes().to_vec();
        bytes.resize(len, 0xa5);
        Bytes::from(bytes)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_inbox_matches_its_model(
            ops in proptest::collection::vec(op(), 1..200),
            policy in policy(),
            max in 1..10_000usize,
        ) {
            let inbox = Inbox::new(1, EntryId::new(0, 0));
            let mut model = Model::default();
            for (id, op) in ops.iter().enumerate() {
                let id = id as u64;
                match *op {
                    Op::Offer(len) => {
                        let pending = Pending { kind: MessageKind::Binary, payload: payload(id, len) };
                        let got = inbox.offer(pending, policy, max);
                        prop_assert_eq!(got, model.offer(id, len, policy, max));
                    }
                    Op::Take { back } => {
                        let taken = inbox.pop();
                        let expected = model.queue.pop_front();
                        prop_assert_eq!(taken.as_ref().map(|p| p.payload.len()), expected.map(|e| e.1));
                        if let (Some(p), Some((id, len))) = (taken, expected) {
                            prop_assert_eq!(&p.payload, &payload(id, len), "another broadcast");
                            if back {
                                inbox.push_front(p);
                                model.queue.push_front((id, len));
                            }
                        }
                    }
                    Op::RequestClose => {
                        inbox.request_close();
                        prop_assert!(inbox.close_requested());
                        model.gone = true;
                    }
                    Op::End => {
                        inbox.end();
                        model.queue.clear();
                        model.gone = true;
                    }
                }
                prop_assert_eq!(inbox.is_empty(), model.queue.is_empty());
                prop_assert_eq!(inbox.state.borrow().bytes, model.bytes());
                if let Some(overflow) = model.overflow.take() {
                    prop_assert_eq!(inbox.take_overflow(), Some(overflow));
                    prop_assert_eq!(inbox.take_overflow(), None, "told once");
                    prop_assert!(!inbox.is_member());
                }
            }
        }
    }
}
