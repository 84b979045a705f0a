//! A group's part on one reactor: its members there, its codec, its counters. Kept in a
//! thread-local registry by group id, so that a `Send` group finds its part on whichever
//! reactor thread it is used, and jobs from other reactors find it too.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use getty_codec::{Encoder, MessageKind};

use super::inbox::{Inbox, Offered, Pending};
use super::{GroupStats, SlowConsumer};
use crate::framing::Framing;
use crate::Error;

/// Bytes the encode buffer grows by at once: broadcasts are cut from it, so most allocate
/// nothing.
const ENCODE_BLOCK: usize = 64 * 1024;

/// Members a part lists before a join first looks for ended ones to forget.
const PRUNE_FIRST: usize = 64;

thread_local! {
    /// The parts of the groups used on this thread's reactor, by group id.
    static PARTS: RefCell<HashMap<u64, Rc<dyn Any>>> = RefCell::default();
}

/// Group `id` is gone: this thread forgets its part.
pub(super) fn forget(id: u64) {
    // Dropped outside the borrow, so that nothing dropping can find the registry borrowed.
    let part = PARTS.with(|p| p.borrow_mut().remove(&id));
    drop(part);
}

/// What [`Local::encode`] made of a message.
pub(super) enum Encoded<M> {
    /// The message encoded once: its kind and its bytes, shared by every member.
    Done(MessageKind, Bytes),
    /// The message as it came: this part was already encoding (a broadcast re-entered from
    /// a message's drop, or from the codec), so the caller encodes it elsewhere.
    Busy(M),
}

pub(super) struct Local<C> {
    /// Where this part sits in the group's list of reactors.
    pub(super) slot: usize,
    policy: SlowConsumer,
    max_pending: usize,
    codec: RefCell<C>,
    members: RefCell<Vec<Member>>,
    /// How many members were left after the last prune: joins prune again once the list
    /// has doubled since, so members that ended leave it even in a group that never
    /// broadcasts (a session ending only marks its inbox).
    pruned_len: Cell<usize>,
    stats: Cell<GroupStats>,
    /// Where broadcasts are encoded, each cut off as shared bytes.
    encoded: RefCell<BytesMut>,
}

struct Member {
    session: u64,
    inbox: Rc<Inbox>,
}

impl<C: 'static> Local<C> {
    pub(super) fn new(slot: usize, codec: C, policy: SlowConsumer, max_pending: usize) -> Self {
        Local {
            slot,
            policy,
            max_pending,
            codec: RefCell::new(codec),
            members: RefCell::default(),
            pruned_len: Cell::new(0),
            stats: Cell::default(),
            encoded: RefCell::default(),
        }
    }

    /// This thread's part of group `id`, if it has one.
    pub(super) fn find(id: u64) -> Option<Rc<Local<C>>> {
        let part = PARTS.with(|p| p.borrow().get(&id).cloned())?;
        part.downcast::<Local<C>>().ok()
    }

    pub(super) fn register(id: u64, part: Local<C>) -> Rc<Local<C>> {
        let part = Rc::new(part);
        PARTS.with(|p| p.borrow_mut().insert(id, part.clone() as Rc<dyn Any>));
        part
    }

    /// Adds a member; false if it was one already. O(1), amortized over the prunes it
    /// sets off.
    pub(super) fn join(&self, session: u64, inbox: Rc<Inbox>) -> bool {
        // The inbox is this session's for this group alone: listed means listed here.
        if inbox.is_listed() {
            return false;
        }
        inbox.set_listed(true);
        let listed = {
            let mut members = self.members.borrow_mut();
            members.push(Member { session, inbox });
            members.len()
        };
        if listed >= PRUNE_FIRST.max(2 * self.pruned_len.get()) {
            self.prune();
        }
        true
    }

    pub(super) fn leave(&self, session: u64) -> bool {
        let mut members = self.members.borrow_mut();
        let before = members.len();
        members.retain(|m| m.session != session || m.unlist());
        members.len() != before
    }

    pub(super) fn contains(&self, session: u64) -> bool {
        self.prune();
        self.members.borrow().iter().any(|m| m.session == session)
    }

    pub(super) fn len(&self) -> usize {
        self.prune();
        self.members.borrow().len()
    }

    pub(super) fn stats(&self) -> GroupStats {
        self.stats.get()
    }

    pub(super) fn close_all(&self) {
        for member in self.members.borrow().iter() {
            member.inbox.request_close();
        }
    }

    /// Encodes `message` once, as framing `F` needs it, unless this part is already
    /// encoding (see [`Encoded::Busy`]).
    pub(super) fn encode<F: Framing, M>(&self, message: M) -> Result<Encoded<M>, Error>
    where
        C: Encoder<M>,
    {
        let (Ok(mut encoded), Ok(mut codec)) =
            (self.encoded.try_borrow_mut(), self.codec.try_borrow_mut())
        else {
            return Ok(Encoded::Busy(message));
        };
        // Empty, unless a codec panicked halfway through the last broadcast.
        encoded.clear();
        if encoded.capacity() - encoded.len() < ENCODE_BLOCK / 16 {
            encoded.reserve(ENCODE_BLOCK);
        }
        match F::encode_shared(&mut *codec, message, &mut encoded) {
            Ok(kind) => Ok(Encoded::Done(kind, encoded.split().freeze())),
            Err(e) => {
                encoded.clear();
                Err(e)
            }
        }
    }

    /// Offers one encoded broadcast to every member here but `except`; returns how many
    /// took it.
    pub(super) fn deliver(&self, kind: MessageKind, payload: &Bytes, except: Option<u64>) -> usize {
        let mut stats = self.stats.get();
        stats.broadcasts += 1;
        let mut reached = 0;
        self.members.borrow_mut().retain(|member| {
            if Some(member.session) == except {
                return true;
            }
            let pending = Pending {
                kind,
                payload: payload.clone(),
            };
            match member.inbox.offer(pending, self.policy, self.max_pending) {
                Offered::Queued => reached += 1,
                Offered::QueuedDropping(n) => {
                    reached += 1;
                    stats.dropped += n;
                }
                Offered::Skipped => stats.skipped += 1,
                Offered::Closing => {
                    stats.closed += 1;
                    return member.unlist();
                }
                Offered::Gone => return member.unlist(),
            }
            true
        });
        stats.delivered += reached as u64;
        self.stats.set(stats);
        reached
    }

    /// Forgets members that have ended.
    fn prune(&self) {
        let mut members = self.members.borrow_mut();
        members.retain(|m| m.inbox.is_member() || m.unlist());
        self.pruned_len.set(members.len());
    }
}

impl Member {
    /// Marks the member as off the list, for `retain` to drop it: always false.
    fn unlist(&self) -> bool {
        self.inbox.set_listed(false);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use getty_reactor::EntryId;

    fn part() -> Local<()> {
        Local::new(0, (), SlowConsumer::default(), 1 << 20)
    }

    fn inbox(session: u64) -> Rc<Inbox> {
        Rc::new(Inbox::new(1, EntryId::new(0, session)))
    }

    /// Sessions that join and end, in a group that never broadcasts nor counts its
    /// members, used to stay on its list for good (about 126 bytes each, reproduced with
    /// 10,000 connections): joins now forget them once the list has doubled.
    #[test]
    fn members_that_ended_leave_the_list_of_a_group_that_never_broadcasts() {
        let here = part();
        let live = inbox(0);
        assert!(here.join(0, live.clone()));
        let mut most = 0;
        for session in 1..10_000 {
            let churned = inbox(session);
            assert!(here.join(session, churned.clone()));
            churned.end();
            most = most.max(here.members.borrow().len());
        }
        assert!(most <= 2 * PRUNE_FIRST, "{most} members listed at once");
        assert_eq!(here.len(), 1, "the live member stays");
        assert!(here.contains(0));
    }

    /// A second join of a member is refused whatever the list holds, and a member that
    /// left, or was forgotten, may join again.
    #[test]
    fn a_member_is_listed_once() {
        let here = part();
        let first = inbox(1);
        assert!(here.join(1, first.clone()));
        assert!(!here.join(1, first.clone()), "listed already");
        for session in 2..200 {
            assert!(here.join(session, inbox(session)));
        }
        assert!(!here.join(1, first.clone()), "still listed after prunes");
        assert!(here.leave(1));
        assert!(!here.leave(1));
        assert!(here.join(1, first.clone()), "joins again after leaving");
        assert_eq!(
            here.members
                .borrow()
                .iter()
                .filter(|m| m.session == 1)
                .count(),
            1
        );
    }
}
