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

    /// Adds a member; false if it was one already.
    pub(super) fn join(&self, session: u64, inbox: Rc<Inbox>) -> bool {
        let mut members = self.members.borrow_mut();
        if members.iter().any(|m| Rc::ptr_eq(&m.inbox, &inbox)) {
            return false;
        }
        members.push(Member { session, inbox });
        true
    }

    pub(super) fn leave(&self, session: u64) -> bool {
        let mut members = self.members.borrow_mut();
        let before = members.len();
        members.retain(|m| m.session != session);
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
                    return false;
                }
                Offered::Gone => return false,
            }
            true
        });
        stats.delivered += reached as u64;
        self.stats.set(stats);
        reached
    }

    /// Forgets members that have ended.
    fn prune(&self) {
        self.members.borrow_mut().retain(|m| m.inbox.is_member());
    }
}
