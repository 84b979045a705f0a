//! The rooms: who is in which room, and the fan-out to them. This file is the chat's only
//! seam with the library's session API, so that a session-group broadcast API can replace
//! its insides without touching the rest of the example.
//!
//! **Where a room lives.** Each room has a home reactor, chosen by a hash of its name. Its
//! members may live on any reactor; the room's state lives only on its home, in a
//! thread-local [`Registry`] that nothing else touches (no lock). [`Rooms::join`],
//! [`Rooms::leave`], [`Rooms::broadcast`] and [`Rooms::resume`] run there: directly when the
//! caller is on the home reactor (always, with one reactor), else as a job posted to it
//! (a boxed job and its queue's mutex per request), which keeps each session's requests in
//! order.
//!
//! **How a message reaches a member**: through the member's [`SessionHandle`], today's one
//! way to write to another session. A handle write is a boxed job in the member's reactor
//! queue, which takes that queue's (uncontended, on one reactor) mutex: a cost per member
//! and message that the group API is to remove.
//!
//! **A slow member** (policy): while its session's outbound queue is above its high
//! watermark, its handle refuses writes, and what is for that member waits here, in its
//! backlog, in order. The backlog is bounded by [`MAX_BACKLOG_BYTES`]; past it the *oldest*
//! waiting messages are dropped and counted, and once the member drains, a `dropped <n>`
//! notice takes their place before the rest. So a slow member costs the server at most its
//! high watermark, plus this backlog, plus what was posted to it within one reactor turn
//! (the senders' read budgets, or one [`MAX_FLUSH_BYTES`] retry), plus the kernel's socket
//! buffer; the session's hard `max_outbound` disconnects it past that. The
//! senders are never slowed down by it. A backlog is retried when the member's queue drains
//! ([`Rooms::resume`]), at every later message for it, and every [`RETRY_PERIOD`].

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use getty::codec::{Message, MessageCodec};
use getty::reactor::{Context, Entry, NoCommand, Ready, Status};
use getty::ws::Ws;
use getty::{Error, ReactorHandle, SessionHandle};

use crate::protocol;

/// A member, as the rooms reach it.
pub(crate) type Member = SessionHandle<MessageCodec, Ws>;

/// A member's id: its session's id.
pub(crate) type MemberId = u64;

/// The most a slow member's backlog holds, in payload bytes, before its oldest messages
/// are dropped.
pub(crate) const MAX_BACKLOG_BYTES: usize = 4 << 20;

/// The most one retry of a backlog posts: the member's handle reports its queue's
/// writability as of its last flush, so a whole backlog posted at once could land on a
/// queue already near its hard bound.
pub(crate) const MAX_FLUSH_BYTES: usize = 1 << 20;

/// How often every backlog is retried, for a member whose writes were refused while its
/// queue was not over the watermark (too many writes in flight in one turn), which no
/// writability change will announce.
pub(crate) const RETRY_PERIOD: Duration = Duration::from_millis(50);

/// The way into the rooms from one reactor: `Clone`, one per session.
#[derive(Clone)]
pub(crate) struct Rooms {
    /// Every reactor, by index: a room's home is one of them.
    reactors: Arc<[ReactorHandle]>,
    /// The index of the reactor this `Rooms` is used on.
    here: usize,
}

impl Rooms {
    /// The rooms as seen from reactor `here` of `reactors`.
    pub(crate) fn new(reactors: Arc<[ReactorHandle]>, here: usize) -> Rooms {
        Rooms { reactors, here }
    }

    /// Seats `member` in `room` as `name`: it hears `members ...`, the others `joined
    /// <name>`. A name already taken there is refused with `error ...` and a close.
    pub(crate) fn join(&self, room: &Arc<str>, name: &str, member: Member) {
        let (key, name) = (room.clone(), name.to_owned());
        self.at_home(room, move |registry| registry.join(key, name, member));
    }

    /// Takes `member` out of `room`; the others hear `left <name>`.
    pub(crate) fn leave(&self, room: &Arc<str>, member: MemberId) {
        let key = room.clone();
        self.at_home(room, move |registry| registry.leave(&key, member));
    }

    /// Sends `text` to every member of `room` but `except` (the sender), provided the
    /// sender is a member (a refused join says nothing).
    pub(crate) fn broadcast(&self, room: &Arc<str>, except: MemberId, text: String) {
        let key = room.clone();
        let message = Message::text(text);
        self.at_home(room, move |registry| {
            registry.broadcast(&key, except, message)
        });
    }

    /// Retries `member`'s backlog: its queue has drained.
    pub(crate) fn resume(&self, room: &Arc<str>, member: MemberId) {
        let key = room.clone();
        self.at_home(room, move |registry| registry.resume(&key, member));
    }

    /// Runs `op` on the registry of `room`'s home reactor.
    fn at_home(&self, room: &str, op: impl FnOnce(&mut Registry) + Send + 'static) {
        let home = home_of(room, self.reactors.len());
        if home == self.here {
            REGISTRY.with(|registry| op(&mut registry.borrow_mut()));
            return;
        }
        let posted = self.reactors[home]
            .execute(move |_| REGISTRY.with(|registry| op(&mut registry.borrow_mut())));
        if let Err(e) = posted {
            log::debug!("room {room}: its reactor {home} is gone ({e})");
        }
    }
}

/// The home reactor of `room` among `reactors`.
fn home_of(room: &str, reactors: usize) -> usize {
    if reactors == 1 {
        return 0;
    }
    let mut hasher = DefaultHasher::new();
    room.hash(&mut hasher);
    (hasher.finish() % reactors as u64) as usize
}

thread_local! {
    /// The rooms whose home is this reactor thread.
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

/// The rooms of one home reactor.
#[derive(Default)]
struct Registry {
    rooms: HashMap<Arc<str>, Vec<Seat>>,
}

impl Registry {
    fn join(&mut self, room: Arc<str>, name: String, member: Member) {
        let seats = self.rooms.entry(room).or_default();
        if seats.iter().any(|seat| seat.name == name) {
            let _ = member.write(Message::text(protocol::error("name taken in this room")));
            let _ = member.close();
            return;
        }
        let present = protocol::members(seats.iter().map(|seat| seat.name.as_str()));
        let notice = Message::text(protocol::joined(&name));
        for seat in seats.iter_mut() {
            seat.send(notice.clone());
        }
        let mut seat = Seat::new(name, member);
        seat.send(Message::text(present));
        seats.push(seat);
    }

    fn leave(&mut self, room: &str, member: MemberId) {
        let Some(seats) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(at) = seats.iter().position(|seat| seat.id() == member) else {
            return; // a refused join
        };
        let gone = seats.remove(at);
        if seats.is_empty() {
            self.rooms.remove(room);
            return;
        }
        let notice = Message::text(protocol::left(&gone.name));
        for seat in seats.iter_mut() {
            seat.send(notice.clone());
        }
    }

    fn broadcast(&mut self, room: &str, except: MemberId, message: Message) {
        let Some(seats) = self.rooms.get_mut(room) else {
            return;
        };
        if !seats.iter().any(|seat| seat.id() == except) {
            return;
        }
        for seat in seats.iter_mut().filter(|seat| seat.id() != except) {
            seat.send(message.clone());
        }
    }

    fn resume(&mut self, room: &str, member: MemberId) {
        let seats = self.rooms.get_mut(room).into_iter().flatten();
        for seat in seats.filter(|seat| seat.id() == member) {
            seat.flush();
        }
    }

    fn retry_backlogs(&mut self) {
        for seat in self.rooms.values_mut().flatten() {
            seat.flush();
        }
    }
}

/// One member of one room, with what waits for it.
struct Seat {
    name: String,
    member: Member,
    backlog: Backlog,
}

impl Seat {
    fn new(name: String, member: Member) -> Seat {
        Seat {
            name,
            member,
            backlog: Backlog::default(),
        }
    }

    fn id(&self) -> MemberId {
        self.member.session_id()
    }

    /// Posts `message` to the member, behind its backlog, or adds it to the backlog.
    fn send(&mut self, message: Message) {
        self.flush();
        if self.backlog.is_empty() {
            match self.member.write(message.clone()) {
                Err(Error::Backpressure) => {}
                // Sent; or the member is gone, and its `leave` is on its way.
                _ => return,
            }
        }
        self.backlog.push(message);
    }

    /// Posts what waits, oldest first (a `dropped` notice before it), until refused or
    /// [`MAX_FLUSH_BYTES`] are posted.
    fn flush(&mut self) {
        if self.backlog.dropped > 0 {
            let notice = Message::text(protocol::dropped(self.backlog.dropped));
            if !self.post(notice) {
                return;
            }
            self.backlog.dropped = 0;
        }
        let mut posted = 0;
        while let Some(message) = self.backlog.front().cloned() {
            let len = message.payload().len();
            if posted >= MAX_FLUSH_BYTES || !self.post(message) {
                return;
            }
            posted += len;
            self.backlog.pop();
        }
    }

    /// Posts one message; false if the member refused it for now.
    fn post(&mut self, message: Message) -> bool {
        match self.member.write(message) {
            Ok(()) => true,
            Err(Error::Backpressure) => false,
            Err(_) => {
                // Gone: nothing will ever be read again.
                self.backlog = Backlog::default();
                false
            }
        }
    }
}

/// A slow member's waiting messages: bounded, the oldest dropped first.
#[derive(Default)]
struct Backlog {
    queue: VecDeque<Message>,
    bytes: usize,
    /// Messages dropped since the member last heard `dropped <n>`.
    dropped: u64,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.dropped == 0
    }

    fn front(&self) -> Option<&Message> {
        self.queue.front()
    }

    fn pop(&mut self) {
        if let Some(message) = self.queue.pop_front() {
            self.bytes -= message.payload().len();
        }
    }

    fn push(&mut self, message: Message) {
        self.bytes += message.payload().len();
        self.queue.push_back(message);
        while self.bytes > MAX_BACKLOG_BYTES {
            self.pop();
            self.dropped += 1;
        }
    }
}

/// Retries every backlog of its reactor's registry every [`RETRY_PERIOD`]; one per reactor.
pub(crate) struct BacklogRetry;

impl Entry for BacklogRetry {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        cx.set_timer(RETRY_PERIOD, 0);
        Status::Continue
    }

    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _: u64) -> Status {
        REGISTRY.with(|registry| registry.borrow_mut().retry_backlogs());
        cx.set_timer(RETRY_PERIOD, 0);
        Status::Continue
    }
}
