//! Session groups: broadcast to many sessions, encoded once, written on each reactor's
//! own thread (netty's `ChannelGroup`).
//!
//! A group is `Send`: its part on each reactor (`local.rs`: the members there, a codec,
//! counters) lives in a thread-local registry. A broadcast on a reactor's thread encodes
//! its message once and hands the same bytes (reference-counted, never copied per member)
//! to each local member's inbox (`inbox.rs`), then wakes the members with
//! [`getty_reactor::wake`]: each queues what waits for it, framed its own way (a WebSocket
//! client masks, a compressing session deflates with its window), right after the callback
//! that broadcast returns, in the same turn: no lock, no job, no command per member. Other
//! reactors get the encoded bytes through one job each.
//!
//! A member takes broadcasts from its inbox only while it is writable (below its high
//! watermark), so a slow member's backlog waits in its inbox, where the group's
//! [`SlowConsumer`] policy bounds it.

mod inbox;
mod local;

use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use getty_codec::{Encoder, MessageKind};
use getty_reactor::ReactorHandle;

pub(crate) use inbox::{Inbox, Pending};

use local::{Encoded, Local};

use crate::framing::Framing;
use crate::{Error, Session, Tcp, Transport};

/// Group ids, unique in the process: the key of a group's parts on each reactor.
static NEXT_GROUP_ID: AtomicU64 = AtomicU64::new(1);

/// What a group does with a broadcast for a member whose backlog (broadcasts waiting in its
/// inbox, not yet in its outbound queue) would pass
/// [`max_pending`](SessionGroupBuilder::max_pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumer {
    /// The member misses this broadcast (counted in [`GroupStats::skipped`]); it gets the
    /// later ones that fit.
    Skip,
    /// The member's oldest waiting broadcasts are dropped until this one fits (counted in
    /// [`GroupStats::dropped`]): a live feed, where the latest matters most.
    DropOldest,
    /// The member is closed with [`Error::SlowConsumer`] (its handler hears `on_error`,
    /// then `on_close`; what its queue holds still goes out) and leaves the group. The
    /// default: nothing is lost without the member being told.
    #[default]
    Close,
}

/// What a group's slow-consumer policy did, counted since the group was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupStats {
    /// Broadcasts made.
    pub broadcasts: u64,
    /// Broadcasts handed to a member (one per member reached).
    pub delivered: u64,
    /// Broadcasts a member missed under [`SlowConsumer::Skip`].
    pub skipped: u64,
    /// Waiting broadcasts dropped under [`SlowConsumer::DropOldest`].
    pub dropped: u64,
    /// Members closed under [`SlowConsumer::Close`].
    pub closed: u64,
}

/// Sessions that receive the same broadcasts, like netty's `ChannelGroup`.
///
/// Make one per room (or topic) and clone it into the handlers of its sessions (a clone is
/// the same group; it is `Send`, so a server's setup closure can hold it).
/// [`join`](Self::join) a session in one of its callbacks; it leaves when it starts
/// closing, or by [`leave`](Self::leave). [`broadcast`](Self::broadcast) encodes a message
/// once with the group's codec and queues it on every member (or all but one,
/// [`broadcast_except`](Self::broadcast_except)):
///
/// - on the reactor it is called on, directly: no lock, no job; the members flush right
///   after the current callback returns;
/// - on every other reactor with members, through one job per reactor that carries the
///   encoded bytes (a lock and a wake-up of that reactor, not one per member).
///
/// A member gets broadcasts in the order they were made on one thread, after what its own
/// handler wrote in the same callback, and, from another thread, in order with what that
/// thread writes through the member's [`SessionHandle`](crate::SessionHandle) while the
/// member is writable; while it is not, its own writes (its handler's, and its handles'
/// held ones) go ahead of the broadcasts that wait for it. Broadcasts made on two reactors reach two members in
/// orders that may differ: to give a group one order, broadcast from one reactor (the
/// chat example sends every line through its room's home reactor). Each group a session
/// joins has its own inbox there, so one group's bound and policy never touch another's
/// broadcasts. A broadcast longer than a member's `max_outbound` is skipped for that member
/// (logged), as its own write of it would fail. A member that closes (its handler's or a
/// handle's close) drops what still waits for it; [`close_all`](Self::close_all) closes
/// members after what was broadcast before it.
///
/// A group keeps one part per reactor thread: a thread that runs one reactor after another
/// keeps the first one's part (use a new group with the new reactor).
///
/// A slow member never grows memory without bound: it takes broadcasts only while it is
/// writable (below its high watermark), and what waits for it beyond
/// [`max_pending`](SessionGroupBuilder::max_pending) bytes is handled by the group's
/// [`SlowConsumer`] policy, counted in [`stats`](Self::stats).
///
/// **Groups or handles.** To write to many sessions from their own reactor's callbacks,
/// use a group. A [`SessionHandle`](crate::SessionHandle) is the tool for writing to one
/// session from another thread (a worker's reply): each write is a job and a wake-up of
/// the session's reactor. Never call
/// [`SessionHandle::wait_writable`](crate::SessionHandle::wait_writable) on a reactor's
/// own thread: it blocks the very loop that would make the session writable.
///
/// ```
/// use std::io::{Read, Write};
/// use std::net::TcpStream;
/// use std::time::Duration;
/// use getty_codec::{Bytes, LinesCodec};
/// use getty_transports::tcp::TcpServer;
/// use getty_transports::{Handler, Session, SessionGroup};
///
/// // Every line a member sends goes to every other member.
/// struct Member(SessionGroup<LinesCodec>);
/// impl Handler<LinesCodec> for Member {
///     fn on_open(&mut self, s: &mut Session<LinesCodec>) -> std::io::Result<()> {
///         self.0.join(s).map(|_| ()).map_err(std::io::Error::other)
///     }
///     fn on_message(&mut self, s: &mut Session<LinesCodec>, line: Bytes) {
///         let _ = self.0.broadcast_except(line, s.id());
///     }
/// }
///
/// let room = SessionGroup::new(LinesCodec::default());
/// let server = TcpServer::builder()
///     .bind("127.0.0.1:0", move |_| Ok((LinesCodec::default(), Member(room.clone()))))
///     .unwrap();
/// let addr = server.local_addr();
/// let mut reactor = getty_reactor::Reactor::new().unwrap();
/// reactor.spawn(server);
/// let handle = reactor.handle();
/// let clients = std::thread::spawn(move || {
///     let mut alice = TcpStream::connect(addr).unwrap();
///     let mut bob = TcpStream::connect(addr).unwrap();
///     bob.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
///     std::thread::sleep(Duration::from_millis(100)); // both have joined
///     alice.write_all(b"hello bob\n").unwrap();
///     let mut got = [0u8; 10];
///     bob.read_exact(&mut got).unwrap();
///     handle.shutdown();
///     got
/// });
/// reactor.run().unwrap();
/// assert_eq!(&clients.join().unwrap(), b"hello bob\n");
/// ```
pub struct SessionGroup<C, T: Transport = Tcp> {
    shared: Arc<Shared<C>>,
    transport: PhantomData<fn() -> T>,
}

impl<C, T: Transport> Clone for SessionGroup<C, T> {
    fn clone(&self) -> Self {
        SessionGroup {
            shared: self.shared.clone(),
            transport: PhantomData,
        }
    }
}

struct Shared<C> {
    id: u64,
    policy: SlowConsumer,
    max_pending: usize,
    /// Cloned for each reactor's part; encodes the broadcasts made off every reactor.
    codec: Mutex<C>,
    /// The reactors where the group has a part, by slot.
    reactors: Mutex<Vec<ReactorHandle>>,
    /// How many there are, read without the lock: one reactor needs no jobs.
    spread: AtomicUsize,
}

impl<C> Shared<C> {
    fn reactors(&self) -> MutexGuard<'_, Vec<ReactorHandle>> {
        self.reactors.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<C> Drop for Shared<C> {
    /// Each reactor forgets its part (and the members' places in it).
    fn drop(&mut self) {
        let id = self.id;
        for reactor in self.reactors().iter() {
            let _ = reactor.execute(move |_| local::forget(id));
        }
    }
}

/// Settings of a [`SessionGroup`]: its slow-consumer policy and bound.
///
/// ```
/// use getty_codec::{Bytes, LinesCodec};
/// use getty_transports::{SessionGroup, SlowConsumer};
///
/// // A live feed of price lines: a member that falls 256 KiB behind loses its oldest
/// // waiting updates, not its connection.
/// let feed: SessionGroup<LinesCodec> = SessionGroup::builder(LinesCodec::default())
///     .slow_consumer(SlowConsumer::DropOldest)
///     .max_pending(256 * 1024)
///     .build();
/// assert!(feed.is_empty()); // no member on this thread
/// assert_eq!(feed.broadcast(Bytes::from_static(b"ACME 12.5")).unwrap(), 0);
/// ```
pub struct SessionGroupBuilder<C, T: Transport = Tcp> {
    codec: C,
    policy: SlowConsumer,
    max_pending: usize,
    transport: PhantomData<fn() -> T>,
}

impl<C, T: Transport> SessionGroupBuilder<C, T> {
    /// What to do for a member whose backlog would pass the bound (default
    /// [`SlowConsumer::Close`]).
    pub fn slow_consumer(mut self, policy: SlowConsumer) -> Self {
        self.policy = policy;
        self
    }

    /// The most bytes of broadcasts that may wait for one member (default 4 MiB). They
    /// wait while the member is not writable, and also between the broadcasts of one
    /// callback and the member's turn, right after it: so keep the bound above what one
    /// callback broadcasts, or a member that keeps up is treated as slow. A handler that
    /// broadcasts every message it reads broadcasts up to a read budget of them at once
    /// ([`SessionOptions::read_budget`](crate::SessionOptions::read_budget), 256 KiB by
    /// default). A broadcast longer than the bound still reaches a member that has nothing
    /// waiting.
    pub fn max_pending(mut self, bytes: usize) -> Self {
        self.max_pending = bytes;
        self
    }

    /// The group, with no members.
    pub fn build(self) -> SessionGroup<C, T> {
        SessionGroup {
            shared: Arc::new(Shared {
                id: NEXT_GROUP_ID.fetch_add(1, Ordering::Relaxed),
                policy: self.policy,
                max_pending: self.max_pending,
                codec: Mutex::new(self.codec),
                reactors: Mutex::default(),
                spread: AtomicUsize::new(0),
            }),
            transport: PhantomData,
        }
    }
}

impl<C, T: Transport> SessionGroup<C, T> {
    /// Settings for a group whose broadcasts `codec` encodes.
    pub fn builder(codec: C) -> SessionGroupBuilder<C, T> {
        SessionGroupBuilder {
            codec,
            policy: SlowConsumer::default(),
            max_pending: 4 << 20,
            transport: PhantomData,
        }
    }
}

impl<C, T> SessionGroup<C, T>
where
    C: Clone + Send + 'static,
    T: Transport,
{
    /// A group whose broadcasts `codec` encodes, with the default policy and bound.
    pub fn new(codec: C) -> Self {
        SessionGroup::builder(codec).build()
    }

    /// Adds the session whose callback is running. Returns false if it was a member
    /// already. Fails with `Error::Closed` for a session that is closing, or when called
    /// outside a callback of the session's reactor.
    pub fn join<D>(&self, session: &mut Session<D, T>) -> Result<bool, Error> {
        session.check_open()?;
        let inbox = session.inbox(self.shared.id)?;
        let here = self.part_here()?;
        Ok(here.join(session.id(), inbox))
    }

    /// Removes `session`; returns whether it was a member.
    pub fn leave<D>(&self, session: &Session<D, T>) -> bool {
        self.local().is_some_and(|here| here.leave(session.id()))
    }

    /// Whether the session with this [`id`](Session::id) is a member on this thread's
    /// reactor.
    pub fn contains(&self, session: u64) -> bool {
        self.local().is_some_and(|here| here.contains(session))
    }

    /// How many members the group has on this thread's reactor.
    pub fn len(&self) -> usize {
        self.local().map_or(0, |here| here.len())
    }

    /// Whether the group has no members on this thread's reactor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the group's broadcasts and its slow-consumer policy did on this thread's
    /// reactor.
    pub fn stats(&self) -> GroupStats {
        self.local().map(|here| here.stats()).unwrap_or_default()
    }

    /// Closes every member, on every reactor, gracefully (what is queued goes out first);
    /// they leave as they start closing.
    pub fn close_all(&self) {
        let here = self.local();
        if let Some(here) = &here {
            here.close_all();
        }
        let id = self.shared.id;
        self.to_other_reactors(here.map(|h| h.slot), |reactor| {
            reactor.execute(move |_| {
                if let Some(part) = Local::<C>::find(id) {
                    part.close_all();
                }
            })
        });
    }

    /// Queues `message` on every member. Returns how many members on this thread's
    /// reactor took it (those on other reactors get it through a job, a little later).
    /// Fails, reaching none, when the group's codec cannot encode it.
    pub fn broadcast<M>(&self, message: M) -> Result<usize, Error>
    where
        C: Encoder<M>,
    {
        self.send(message, None)
    }

    /// Queues `message` on every member but the session with id `except` (a sender that
    /// should not hear itself); returns as [`broadcast`](Self::broadcast) does.
    pub fn broadcast_except<M>(&self, message: M, except: u64) -> Result<usize, Error>
    where
        C: Encoder<M>,
    {
        self.send(message, Some(except))
    }

    fn send<M>(&self, message: M, except: Option<u64>) -> Result<usize, Error>
    where
        C: Encoder<M>,
    {
        let here = self.local();
        let (kind, payload) = match &here {
            Some(part) => match part.encode::<T::Framing, M>(message)? {
                Encoded::Done(kind, payload) => (kind, payload),
                Encoded::Busy(message) => self.encode_elsewhere(message)?,
            },
            None => self.encode_elsewhere(message)?,
        };
        let reached = here
            .as_ref()
            .map_or(0, |part| part.deliver(kind, &payload, except));
        let id = self.shared.id;
        self.to_other_reactors(here.map(|h| h.slot), |reactor| {
            let payload = payload.clone();
            reactor.execute(move |_| {
                if let Some(part) = Local::<C>::find(id) {
                    part.deliver(kind, &payload, except);
                }
            })
        });
        Ok(reached)
    }

    /// Encodes with a clone of the group's codec, off any reactor with a part (or when this
    /// reactor's part is already encoding: a broadcast from a message's drop).
    fn encode_elsewhere<M>(&self, message: M) -> Result<(MessageKind, Bytes), Error>
    where
        C: Encoder<M>,
    {
        // A clone, encoding with the lock released: the message is user code, and its
        // drop (inside the codec) may broadcast on this group again.
        let mut codec = self
            .shared
            .codec
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut encoded = BytesMut::new();
        let kind = T::Framing::encode_shared(&mut codec, message, &mut encoded)?;
        Ok((kind, encoded.freeze()))
    }

    /// Runs `post` for every reactor with a part but the one at `skip`.
    fn to_other_reactors(
        &self,
        skip: Option<usize>,
        post: impl Fn(&ReactorHandle) -> std::io::Result<()>,
    ) {
        if self.shared.spread.load(Ordering::Acquire) <= usize::from(skip.is_some()) {
            return;
        }
        for (slot, reactor) in self.shared.reactors().iter().enumerate() {
            if Some(slot) != skip {
                // A reactor that has stopped has no members left to reach.
                let _ = post(reactor);
            }
        }
    }

    /// This thread's part of the group.
    fn local(&self) -> Option<Rc<Local<C>>> {
        Local::find(self.shared.id)
    }

    /// This thread's part, made on first use: only in a reactor's callback, where the
    /// reactor's handle is known.
    fn part_here(&self) -> Result<Rc<Local<C>>, Error> {
        if let Some(part) = self.local() {
            return Ok(part);
        }
        let (_, reactor) = getty_reactor::current().ok_or(Error::Closed)?;
        let codec = self
            .shared
            .codec
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut reactors = self.shared.reactors();
        reactors.push(reactor);
        let slot = reactors.len() - 1;
        self.shared.spread.store(reactors.len(), Ordering::Release);
        drop(reactors);
        let part = Local::new(slot, codec, self.shared.policy, self.shared.max_pending);
        Ok(Local::register(self.shared.id, part))
    }
}
