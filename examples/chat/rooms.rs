//! The rooms: who is in which room, and the fan-out to them, through the library's
//! [`SessionGroup`]s: one group per room.
//!
//! **How a message reaches the members.** A session keeps its room's group in its
//! [`Seat`]; saying something is one `broadcast_except`, which encodes the line once and
//! queues the same bytes on every other member of the room on this reactor, right where the
//! sender's message was read: no lock, no job, no copy per member (each member's session
//! frames it, compressing with its own permessage-deflate window). Members on other
//! reactors get it through one job per reactor, in the order it was said.
//!
//! **Who is in a room** (names, for `members ...` and to refuse a name taken) is kept in
//! one map behind a mutex, shared by every reactor: it is touched when someone joins or
//! leaves, never when someone speaks.
//!
//! **A slow member** (policy): a member takes the room's messages only while its session's
//! queue is below its high watermark; what arrives meanwhile waits for it, at most
//! [`MAX_PENDING`] bytes. Past that it is disconnected: it hears `error too slow ...` after
//! what it was sent so far, then the close. It never slows the room down and never grows
//! the server's memory past its watermark, that bound and the kernel's socket buffer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use getty::codec::{Message, MessageCodec};
use getty::ws::Ws;
use getty::{Session, SessionGroup, SlowConsumer};

use crate::protocol;

/// The most bytes of messages that may wait for one member that does not keep up.
pub(crate) const MAX_PENDING: usize = 4 << 20;

/// A room's members, as the library sees them.
type Group = SessionGroup<MessageCodec, Ws>;

/// Every room, by name: `Clone`, shared by every session on every reactor.
#[derive(Clone, Default)]
pub(crate) struct Rooms {
    rooms: Arc<Mutex<HashMap<Arc<str>, Room>>>,
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
}

impl Rooms {
    /// Seats `session` in `room` as `name`: it hears `members ...` (who was there), the
    /// others `joined <name>`. Refuses a name already taken there.
    pub(crate) fn join(
        &self,
        session: &mut Session<MessageCodec, Ws>,
        room: &str,
        name: &str,
    ) -> Result<Seat, &'static str> {
        let (group, present) = {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            let room = rooms.entry(room.into()).or_insert_with(|| Room {
                group: SessionGroup::builder(MessageCodec)
                    .slow_consumer(SlowConsumer::Close)
                    .max_pending(MAX_PENDING)
                    .build(),
                names: Vec::new(),
            });
            if room.names.iter().any(|taken| &**taken == name) {
                return Err("name taken in this room");
            }
            let present = protocol::members(room.names.iter().map(|n| &**n));
            room.names.push(name.into());
            (room.group.clone(), present)
        };
        let seat = Seat {
            room: room.into(),
            name: name.into(),
            group,
        };
        if seat.group.join(session).is_err() {
            self.leave(&seat, session.id());
            return Err("closing");
        }
        let _ = session.write(Message::text(present));
        seat.broadcast(session.id(), protocol::joined(name));
        Ok(seat)
    }

    /// Takes the member at `seat` out of its room; the others hear `left <name>`.
    pub(crate) fn leave(&self, seat: &Seat, member: u64) {
        {
            let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(room) = rooms.get_mut(&seat.room) {
                room.names.retain(|n| *n != seat.name);
                if room.names.is_empty() {
                    rooms.remove(&seat.room);
                }
            }
        }
        seat.broadcast(member, protocol::left(&seat.name));
    }
}

impl Seat {
    /// `text`, said by this seat's member (`member`) to the others in its room.
    pub(crate) fn say(&self, member: u64, text: &str) {
        self.broadcast(member, protocol::said(&self.name, text));
    }

    fn broadcast(&self, member: u64, line: String) {
        // MessageCodec encodes every message: this cannot fail.
        let _ = self.group.broadcast_except(Message::text(line), member);
    }
}
