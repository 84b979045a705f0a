//! Groups of entries, packed into each slot's tag.

use std::fmt;
use std::marker::PhantomData;

use crate::entry::Erased;

/// One slab slot: an entry and its tag, 24 bytes (ten thousand idle connections each take
/// one). The slab keeps a free slot's next index in the bytes of the tag, and tells a free
/// slot from a used one by the entry's pointer, which is never null: an `Option` there would
/// add 8 bytes to every slot.
pub(crate) struct Slot {
    /// The entry's serial (low 47 bits), whether it created groups (bit 47) and the index of
    /// its group (high 16 bits), packed so that groups cost no memory per entry.
    pub(crate) tag: u64,
    /// [`Taken`](crate::entry::Taken) while the entry is being called.
    pub(crate) entry: Box<dyn Erased>,
}

/// 47 bits of serials outlast any process: 1.4e14 entries, 4 years at a million a second.
pub(crate) const SERIAL_MASK: u64 = (1 << 47) - 1;
/// Set in the tag of an entry that created a group (see `Core::owned_groups`), so that
/// removing any other entry costs no group bookkeeping.
pub(crate) const OWNER_BIT: u64 = 1 << 47;
pub(crate) const GROUP_SHIFT: u32 = 48;

impl Slot {
    pub(crate) fn serial(&self) -> u64 {
        self.tag & SERIAL_MASK
    }

    fn group_index(&self) -> u16 {
        (self.tag >> GROUP_SHIFT) as u16
    }

    /// True if the entry was spawned into `group` (and not into an earlier group that had
    /// the same index: a group index is reused once its owner ends, but every entry spawned
    /// into the earlier group has a serial below the one the new group was created at).
    pub(crate) fn is_in(&self, group: RawGroup) -> bool {
        self.group_index() == group.index && self.serial() > group.created
    }
}

/// A group without its command type, as the core keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RawGroup {
    /// 1 to 65,535 (0, in an entry's tag, is "no group").
    pub(crate) index: u16,
    /// A serial taken when the group was created: every member has a later one.
    pub(crate) created: u64,
}

/// A set of entries on one reactor, all taking commands of type `C`, named when they are
/// spawned ([`Spawner::spawn_in`](crate::Spawner::spawn_in)), so that their spawner can
/// reach them all later (a server closing every session it accepted) without keeping a
/// list.
///
/// A group belongs to the entry that created it ([`Context::new_group`](crate::Context::new_group))
/// and ends when that
/// entry ends; its 16-bit index is then free for a new group (so at most 65,535 groups are
/// alive at once, however many have come and gone). A `GroupId` also remembers when its
/// group was created, so an id kept past its group's end never reaches a later group with
/// the same index: it has no members, and entries spawned into it join no group. Members
/// of an ended group live on, ungrouped, and never join a later group either.
///
/// ```
/// getty_reactor::with_context(|cx| {
///     let group = cx.new_group::<String>().unwrap();
///     assert_eq!(cx.group_members(group).len(), 0);
/// });
/// ```
pub struct GroupId<C> {
    pub(crate) raw: RawGroup,
    command: PhantomData<fn(C)>,
}

impl<C> GroupId<C> {
    pub(crate) fn new(raw: RawGroup) -> Self {
        GroupId {
            raw,
            command: PhantomData,
        }
    }
}

impl<C> Clone for GroupId<C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for GroupId<C> {}

impl<C> PartialEq for GroupId<C> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl<C> Eq for GroupId<C> {}

impl<C> std::hash::Hash for GroupId<C> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.raw.hash(state)
    }
}

impl<C> fmt::Debug for GroupId<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupId")
            .field("index", &self.raw.index)
            .field("created", &self.raw.created)
            .finish()
    }
}

#[cfg(test)]
mod slot_tests {
    use super::Slot;

    /// The slab's own slot type (`slab::Entry`, private to the slab crate), as it declares
    /// it: a free slot's next index, or the value.
    #[allow(dead_code)]
    enum SlabEntry<T> {
        Vacant(usize),
        Occupied(T),
    }

    /// Every idle connection takes a slot: 24 bytes, the tag and the entry's pointer, with
    /// the slab's free-or-used mark in the pointer's niche.
    #[test]
    fn a_slab_slot_takes_24_bytes() {
        assert_eq!(std::mem::size_of::<SlabEntry<Slot>>(), 24);
    }
}
