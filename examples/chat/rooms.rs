//! The rooms: who is in which room, and the fan-out to them, through the library's
//! [`SessionGroup`]s: one group per room.
//!
//! **How a message reaches the members.** A session keeps its room's group in its
//! [`Seat`]; saying something is one `broadcast_except`, which encodes the line once and
//! queues the same bytes on every other member of the room on that reactor: no lock, no job,
//! no copy per member (each member's session frames it, compressing with its own
//! permessage-deflate window). With one reactor (the default) that is all.
//!
//! **With several reactors**, a room still has one order that every member sees. Each room
//! has a home reactor (a hash of its name); every line said in it (messages, joins, leaves)
//! goes through one job to the home's queue, even a line said on the home itself, and is
//! broadcast from there. The group then reaches the home's members directly and every
//! other reactor's through one job each, so each reactor's members get the room's lines in
//! the order of the home's queue. (Broadcasting where a line is said would save that job,
//! but two lines said on two reactors could then reach two members in two orders: `joined
//! alice` before `left alice`, for instance.) A member may hear `joined <name>` of someone
//! its `members` line already named (a join in flight when it joined): clients keep the
//! members as a set.
//!
//! **Who is in a room** (names, for `members ...` and to refuse a name taken) is kept in
//! one map behind a mutex, shared by every reactor: it is touched when someone joins or
//! leaves, never when someone speaks. A join or leave changes the names and the group and
//! sends its notice under that lock, so notices reach the home in the order they happened.
//!
//! **A slow member** (policy): a member takes the room's messages only while its session's
//! queue is below its high watermark; what arrives meanwhile waits for it, at most
//! [`MAX_PENDING`] bytes. Past that it is disconnected: it hears `error too slow ...` after
//! what it was sent so far, then the close. It never slows the room down and never grows
//! the server's memory past its watermark, that bound and the kernel's socket buffer.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use getty::codec::{Message, MessageCodec};
use getty::ws::Ws;
use getty::{ReactorHandle, Session, SessionGroup, SlowConsumer};

use crate::protocol;

/// The most bytes of messages that may wait for one member that does not keep up.
pub(crate) const MAX_PENDING: usize = 4 << 20;

/// A room's members, as the library sees them.
type Group = SessionGroup<MessageCodec, Ws>;

/// Every room, by name: `Clone`, shared by every session on every reactor.
#[derive(Clone)]
pub(crate) struct Rooms {
    rooms: Arc<Mutex<HashMap<Arc<str>, Room>>>,
    /// Every reactor, by index: a room's home is one of them.
    reactors: Arc<[ReactorHandle]>,
}

struct Room {
    group: Group,
    names: Vec<Arc<str>>,
}

/// Where a session sits once its `join` was accepted.
pub(crate) struct Seat {
    room: Arc<str>,
    name: Arc<str>,
    group: Group,
    /// The queue the room's lines go through: `None` with one reactor.
    home: Option<ReactorHandle>,
}

impl Rooms {
    /// No rooms yet, for sessions on `reactors`.
    pub(crate) fn new(reactors: Arc<[ReactorHandle]>) -> Rooms {
        Rooms {
            rooms: Arc::default(),
            reactors,
        }
    }

    /// Seats `session` in `room` as `name`: it hears `members ...` (who was there), the
    /// others `joined <name>`. Refuses a name already taken there.
    pub(crate) fn join(
        &self,
        session: &mut Session<MessageCodec, Ws>,
        room: &str,
        name: &str,
    ) -> Result<Seat, &'static str> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let entry = rooms.entry(room.into()).or_insert_with(|| Room {
            group: SessionGroup::builder(MessageCodec)
                .slow_consumer(SlowConsumer::Close)
                .max_pending(MAX_PENDING)
                .build(),
            names: Vec::new(),
        });
        if entry.names.iter().any(|taken| &**taken == name) {
            return Err("name taken in this room");
        }
        entry.group.join(session).map_err(|_| "closing")?;
        let present = protocol::members(entry.names.iter().map(|n| &**n));
        entry.names.push(name.into());
        let seat = Seat {
            room: room.into(),
            name: name.into(),
            group: entry.group.clone(),
            home: self.home_of(room),
        };
        let _ = session.write(Message::text(present));
        seat.broadcast(session.id(), protocol::joined(name));
        Ok(seat)
    }

    /// Takes the member at `seat` out of its room; the others hear `left <name>`.
    pub(crate) fn leave(&self, seat: &Seat, member: u64) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(room) = rooms.get_mut(&seat.room) {
            room.names.retain(|n| *n != seat.name);
            if room.names.is_empty() {
                rooms.remove(&seat.room);
            }
        }
        seat.broadcast(member, protocol::left(&seat.name));
    }

    /// The home reactor of `room`, when there are several.
    fn home_of(&self, room: &str) -> Option<ReactorHandle> {
        if self.reactors.len() == 1 {
            return None;
        }
        let mut hasher = DefaultHasher::new();
        room.hash(&mut hasher);
        let home = (hasher.finish() % self.reactors.len() as u64) as usize;
        Some(self.reactors[home].clone())
    }
}

impl Seat {
    /// `text`, said by this seat's member (`member`) to the others in its room.
    pub(crate) fn say(&self, member: u64, text: &str) {
        self.broadcast(member, protocol::said(&self.name, text));
    }

    /// Broadcasts `line` to the room but `member`, from the room's home.
    fn broadcast(&self, member: u64, line: String) {
        let Some(home) = &self.home else {
            // MessageCodec encodes every message: this cannot fail.
            let _ = self.group.broadcast_except(Message::text(line), member);
            return;
        };
        let group = self.group.clone();
        let sent = home.execute(move |_| {
            let _ = group.broadcast_except(Message::text(line), member);
        });
        if let Err(e) = sent {
            log::debug!("room {}: its home reactor is gone ({e})", self.room);
        }
    }
}
