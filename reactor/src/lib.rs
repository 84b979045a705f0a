//! The getty-rs reactor: one mio poll loop driving a slab of entries.
//!
//! This crate knows nothing of protocols. It owns:
//!
//! - a [`mio::Poll`] and a [`slab::Slab`] of **entries**. An entry is a state machine (a
//!   listener, a TCP session, a client that redials) that implements [`Entry`]; its slab key
//!   is its mio [`Token`].
//! - **timers** ([`Context::set_timer`]): a heap inside the loop. Idle timeouts, cron ticks,
//!   connect timeouts and write stalls are all timers; nothing ever sets a deadline on a
//!   socket, and an idle entry costs no wake-ups beyond its own timers.
//! - a **waker and command queue** ([`ReactorHandle`]) so that other threads can post work
//!   and stop the loop.
//! - a **buffer pool** ([`BufPool`]) from which entries borrow read and write buffers only
//!   while they have bytes in flight.
//! - on unix, **stopping on SIGINT and SIGTERM** ([`Reactor::shutdown_on_signals`]): the
//!   poll itself watches for them (no thread), and the first starts a graceful shutdown.
//!
//! One turn of the loop: poll (sleeping until the next timer at the latest), dispatch every
//! event to its entry's [`Entry::on_ready`], run the entries that asked to be
//! [rescheduled](Context::reschedule) because they used up their read budget (fairness: one
//! busy connection cannot starve the others), then fire due timers. Entries are called one at
//! a time, each with a [`Context`] that lets it arm timers, spawn new entries and message
//! others; a call returns [`Status::Done`] to remove its entry.
//!
//! A panic in an entry's call (or a posted job) ends that entry (or job) alone: it hears
//! [`Entry::on_panic`] and is removed, and the loop carries on; see [`PanicPolicy`] for
//! that and for aborting instead.
//!
//! The loop is single-threaded by design. To use more cores, run one reactor per core.
//!
//! ```
//! use std::time::Duration;
//! use getty_reactor::{Context, Entry, Ready, Reactor, Status};
//!
//! /// Ticks three times, then stops the reactor.
//! struct Ticker { left: u32 }
//!
//! impl Entry for Ticker {
//!     fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
//!         cx.set_timer(Duration::from_millis(1), 0);
//!         Status::Continue
//!     }
//!     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
//!         Status::Continue // no socket here
//!     }
//!     fn on_timer(&mut self, cx: &mut Context<'_>, _tag: u64) -> Status {
//!         self.left -= 1;
//!         if self.left == 0 {
//!             cx.handle().shutdown();
//!             return Status::Done;
//!         }
//!         cx.set_timer(Duration::from_millis(1), 0);
//!         Status::Continue
//!     }
//! }
//!
//! let mut reactor = Reactor::new().unwrap();
//! reactor.spawn(Box::new(Ticker { left: 3 }));
//! reactor.run().unwrap();
//! ```

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Registry, Token};
use slab::Slab;

mod handle;
mod metrics;
mod pool;
mod reactor_pool;
mod ready;
#[cfg(unix)]
mod signals;
mod timer;

pub use handle::ReactorHandle;
pub use metrics::{LatencyHistogram, LoopMetrics};
pub use pool::BufPool;
pub use reactor_pool::ReactorPool;
pub use ready::Ready;
#[cfg(unix)]
pub use signals::SignalShutdown;
pub use timer::TimerId;

use handle::{Remote, Shared};
use timer::Timers;

/// A message for an entry, delivered to [`Entry::on_command`]. Entries downcast it.
pub type Command = Box<dyn Any + Send>;

/// The token of the waker; slab keys never reach it.
const WAKER: Token = Token(usize::MAX);

/// Whether an entry stays in the reactor after a call.
///
/// ```
/// assert_ne!(getty_reactor::Status::Continue, getty_reactor::Status::Done);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Keep the entry.
    Continue,
    /// Remove and drop the entry (dropping a mio source deregisters and closes it).
    Done,
}

/// Names one entry for life: its slab key (the mio token) plus a serial number that is never
/// reused, so a stale id (a timer or command aimed at an entry that has ended) can never
/// reach a newer entry that got the same slab key.
///
/// ```
/// let id = getty_reactor::EntryId::new(3, 42);
/// assert_eq!(id.token(), mio::Token(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryId {
    key: usize,
    serial: u64,
}

impl EntryId {
    /// An id from its parts; useful in tests. Real ids come from [`Context::id`] and
    /// [`Reactor::spawn`].
    ///
    /// ```
    /// let id = getty_reactor::EntryId::new(0, 7);
    /// assert_eq!(id.serial(), 7);
    /// ```
    pub fn new(key: usize, serial: u64) -> Self {
        EntryId { key, serial }
    }

    /// The mio token the entry registers its sources with.
    ///
    /// ```
    /// assert_eq!(getty_reactor::EntryId::new(5, 1).token().0, 5);
    /// ```
    pub fn token(self) -> Token {
        Token(self.key)
    }

    /// The never-reused serial number.
    ///
    /// ```
    /// assert_eq!(getty_reactor::EntryId::new(5, 1).serial(), 1);
    /// ```
    pub fn serial(self) -> u64 {
        self.serial
    }
}

/// A state machine driven by the reactor: a listener, a connection, a dialer.
///
/// Every method returns whether the entry stays. Methods are never called re-entrantly, and
/// never after one of them returned [`Status::Done`].
pub trait Entry: 'static {
    /// Called once, right after the entry was spawned: register sources with
    /// `cx.registry()` under `cx.token()` and arm the first timers here.
    fn on_start(&mut self, cx: &mut Context<'_>) -> Status;

    /// A registered source became ready (or the entry asked to be rescheduled).
    fn on_ready(&mut self, cx: &mut Context<'_>, ready: Ready) -> Status;

    /// A timer armed with `tag` fired.
    fn on_timer(&mut self, cx: &mut Context<'_>, tag: u64) -> Status {
        let _ = (cx, tag);
        Status::Continue
    }

    /// Another entry or thread sent a command.
    fn on_command(&mut self, cx: &mut Context<'_>, command: Command) -> Status {
        let _ = (cx, command);
        Status::Continue
    }

    /// The reactor is shutting down. With `Some(deadline)` the entry may finish its work
    /// (flush, say goodbye) and return [`Status::Continue`] until it is done; with `None`
    /// it must end now, and is removed whatever it returns.
    fn on_shutdown(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        let _ = (cx, deadline);
        Status::Done
    }

    /// One of this entry's calls panicked (`message` is the panic's message), and the
    /// reactor's [`PanicPolicy`] is [`Isolate`](PanicPolicy::Isolate). The entry is removed
    /// right after this returns, whatever it does: this is its chance to tell whoever must
    /// hear that it ended (a session's handler: `on_error`, then `on_close`; a client it
    /// belongs to) and to let go of what dropping it would not (close a socket with a
    /// reset, say).
    ///
    /// The entry's state may be half-updated (the panic cut a call short): do as little as
    /// possible, and call nothing that the panic may have left inconsistent. A panic here
    /// is caught too; the entry is then dropped without another call. The default does
    /// nothing: the entry is dropped, which closes its sources.
    ///
    /// ```
    /// use getty_reactor::{Context, Entry, Ready, Reactor, Status};
    ///
    /// struct Fragile;
    /// impl Entry for Fragile {
    ///     fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
    ///         cx.set_timer(std::time::Duration::ZERO, 0);
    ///         Status::Continue
    ///     }
    ///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
    ///     fn on_timer(&mut self, _: &mut Context<'_>, _: u64) -> Status {
    ///         panic!("a bug in one entry");
    ///     }
    ///     fn on_panic(&mut self, cx: &mut Context<'_>, message: &str) {
    ///         assert_eq!(message, "a bug in one entry");
    ///         cx.handle().shutdown(); // only to end this example
    ///     }
    /// }
    ///
    /// # let quiet = std::panic::take_hook();
    /// # std::panic::set_hook(Box::new(|_| {}));
    /// let mut reactor = Reactor::new().unwrap();
    /// reactor.spawn(Box::new(Fragile));
    /// reactor.run().unwrap(); // the panic ended the entry, not the reactor
    /// # std::panic::set_hook(quiet);
    /// ```
    fn on_panic(&mut self, cx: &mut Context<'_>, message: &str) {
        let _ = (cx, message);
    }
}

/// What a reactor does when an entry's call (readiness, a timer, a command, start,
/// shutdown, [`Entry::on_panic`] itself), the drop of an entry, a job posted with
/// [`ReactorHandle::execute`], or the drop of a command or job the reactor discards (one
/// for an entry that has ended, or left queued when the reactor stops) panics. Set it
/// with [`ReactorBuilder::panic_policy`] or [`Reactor::set_panic_policy`].
///
/// Catching costs nothing while nothing panics (no allocation, no syscall); a panic that
/// escapes with `panic = "abort"` in the build profile aborts the process whatever the
/// policy, since there is then nothing to catch.
///
/// ```
/// use getty_reactor::{PanicPolicy, Reactor};
///
/// // A service that prefers to crash (and be restarted) over running on after a bug:
/// let reactor = Reactor::builder().panic_policy(PanicPolicy::Abort).build().unwrap();
/// assert_eq!(reactor.panic_policy(), PanicPolicy::Abort);
/// assert_eq!(PanicPolicy::default(), PanicPolicy::Isolate);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PanicPolicy {
    /// The default, as netty routes a handler's exception to `exceptionCaught` and closes
    /// that channel, and a tokio runtime outlives a task that panics: the panic is caught
    /// at the call, logged at error level and counted ([`LoopMetrics::panics`]); the
    /// entry that panicked hears [`Entry::on_panic`] and is removed; every other entry,
    /// timer and queued command carries on. A panicking job is logged and dropped (a
    /// [`ReactorHandle::query`] waiting on it fails).
    #[default]
    Isolate,
    /// Logs the panic at error level, then aborts the process (`std::process::abort`):
    /// no entry runs again, and no `on_close` or destructor runs after the bug.
    Abort,
}

struct Slot {
    /// The entry's serial (low 47 bits), whether it created groups (bit 47) and the index of
    /// its group (high 16 bits), packed so that groups cost no memory per entry.
    tag: u64,
    /// `None` only while the entry is being called.
    entry: Option<Box<dyn Entry>>,
}

/// 47 bits of serials outlast any process: 1.4e14 entries, 4 years at a million a second.
const SERIAL_MASK: u64 = (1 << 47) - 1;
/// Set in the tag of an entry that created a group (see [`Core::owned_groups`]), so that
/// removing any other entry costs no group bookkeeping.
const OWNER_BIT: u64 = 1 << 47;
const GROUP_SHIFT: u32 = 48;

impl Slot {
    fn serial(&self) -> u64 {
        self.tag & SERIAL_MASK
    }

    fn group_index(&self) -> u16 {
        (self.tag >> GROUP_SHIFT) as u16
    }

    /// True if the entry was spawned into `group` (and not into an earlier group that had
    /// the same index: a group index is reused once its owner ends, but every entry spawned
    /// into the earlier group has a serial below the one the new group was created at).
    fn is_in(&self, group: GroupId) -> bool {
        self.group_index() == group.index && self.serial() > group.created
    }
}

/// A set of entries on one reactor, named when they are spawned
/// ([`Context::spawn_in`]), so that their spawner can reach them all later (a server closing
/// every session it accepted) without keeping a list.
///
/// A group belongs to the entry that created it ([`Context::new_group`]) and ends when that
/// entry ends; its 16-bit index is then free for a new group (so at most 65,535 groups are
/// alive at once, however many have come and gone). A `GroupId` also remembers when its
/// group was created, so an id kept past its group's end never reaches a later group with
/// the same index: it has no members, and entries spawned into it join no group. Members
/// of an ended group live on, ungrouped, and never join a later group either.
///
/// ```
/// getty_reactor::with_context(|cx| {
///     let group = cx.new_group().unwrap();
///     assert_eq!(cx.group_members(group).len(), 0);
/// });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupId {
    /// 1 to 65,535 (0, in an entry's tag, is "no group").
    index: u16,
    /// A serial taken when the group was created: every member has a later one.
    created: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining(Instant),
    Stopped,
}

/// Everything an entry may touch while it is being called.
struct Core {
    registry: Registry,
    slots: Slab<Slot>,
    timers: Timers,
    now: Instant,
    next_serial: u64,
    /// Live groups by index: the serial each was created at (index 0, "no group", is never
    /// handed out); `None` marks a free index, also listed in `free_groups`.
    groups: Vec<Option<u64>>,
    free_groups: Vec<u16>,
    /// The group indexes each live owner (an entry with [`OWNER_BIT`]) created, by serial.
    owned_groups: HashMap<u64, Vec<u16>>,
    rescheduled: Vec<(EntryId, Ready)>,
    started: VecDeque<EntryId>,
    mailbox: VecDeque<(EntryId, Command)>,
    buffers: BufPool,
    shared: Arc<Shared>,
    phase: Phase,
    metrics: LoopMetrics,
    /// Typed per-reactor state owned by the layers above (their metrics, say).
    extensions: Vec<(TypeId, Box<dyn Any>)>,
    panic_policy: PanicPolicy,
    /// SIGINT and SIGTERM, once [`Reactor::shutdown_on_signals`] asked for them.
    #[cfg(unix)]
    signals: Option<signals::SignalWatch>,
}

thread_local! {
    /// The entry being called on this thread, for [`current`].
    static CURRENT_ENTRY: Cell<Option<EntryId>> = const { Cell::new(None) };
    /// The reactor last entered on this thread (one reactor runs per thread at a time).
    static CURRENT_REACTOR: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

/// The entry being called on this thread and a handle to its reactor; `None` outside an
/// entry's call. This is how code deep inside a callback (a session handing out a
/// cross-thread handle to itself) learns who it is without every entry storing its id.
///
/// ```
/// assert!(getty_reactor::current().is_none());
/// getty_reactor::with_context(|cx| {
///     let (id, handle) = getty_reactor::current().unwrap();
///     assert_eq!(id, cx.id());
///     assert!(!handle.is_stopped());
/// });
/// ```
pub fn current() -> Option<(EntryId, ReactorHandle)> {
    let id = CURRENT_ENTRY.with(Cell::get)?;
    let shared = CURRENT_REACTOR.with(|r| r.borrow().clone())?;
    Some((id, ReactorHandle::new(shared)))
}

/// True on a thread whose reactor is live (spawned into or run, and not stopped): in its
/// callbacks, in jobs it runs for other threads, and between its runs. Code that may block
/// on a reactor (waiting for a `query`'s answer, joining threads whose jobs wait on one)
/// asks this first, since a reactor's thread that blocks stops that reactor.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
///
/// assert!(!getty_reactor::on_reactor_thread());
/// let mut reactor = getty_reactor::Reactor::new().unwrap();
/// let seen = Arc::new(AtomicBool::new(false));
/// let in_job = seen.clone();
/// let handle = reactor.handle();
/// handle
///     .execute(move |_| in_job.store(getty_reactor::on_reactor_thread(), Ordering::Relaxed))
///     .unwrap();
/// handle.shutdown();
/// reactor.run().unwrap();
/// assert!(seen.load(Ordering::Relaxed), "a job runs on the reactor's thread");
/// assert!(!getty_reactor::on_reactor_thread(), "a stopped reactor is not live");
/// ```
pub fn on_reactor_thread() -> bool {
    CURRENT_REACTOR.with(|r| r.borrow().as_ref().is_some_and(|s| !s.is_stopped()))
}

/// Configures a [`Reactor`].
///
/// ```
/// use getty_reactor::{BufPool, Reactor};
/// let reactor = Reactor::builder()
///     .event_capacity(256)
///     .buffer_pool(BufPool::new(16 * 1024, 32))
///     .build()
///     .unwrap();
/// ```
#[derive(Default)]
pub struct ReactorBuilder {
    event_capacity: Option<usize>,
    buffers: Option<BufPool>,
    panic_policy: PanicPolicy,
}

impl ReactorBuilder {
    /// How many events one poll can return (default 1024).
    ///
    /// ```
    /// let r = getty_reactor::Reactor::builder().event_capacity(64).build().unwrap();
    /// ```
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = Some(n.max(1));
        self
    }

    /// The pool entries borrow buffers from (default: [`BufPool::default`]).
    ///
    /// ```
    /// let r = getty_reactor::Reactor::builder()
    ///     .buffer_pool(getty_reactor::BufPool::new(8192, 16))
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn buffer_pool(mut self, pool: BufPool) -> Self {
        self.buffers = Some(pool);
        self
    }

    /// What the reactor does when an entry or a job panics (default:
    /// [`PanicPolicy::Isolate`], which ends only the entry that panicked).
    ///
    /// ```
    /// use getty_reactor::{PanicPolicy, Reactor};
    /// let r = Reactor::builder().panic_policy(PanicPolicy::Abort).build().unwrap();
    /// ```
    pub fn panic_policy(mut self, policy: PanicPolicy) -> Self {
        self.panic_policy = policy;
        self
    }

    /// Creates the poll instance and its waker.
    ///
    /// ```
    /// let r = getty_reactor::Reactor::builder().build().unwrap();
    /// ```
    pub fn build(self) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let core = Core {
            registry: poll.registry().try_clone()?,
            slots: Slab::new(),
            timers: Timers::default(),
            now: Instant::now(),
            next_serial: 0,
            groups: vec![None],
            free_groups: Vec::new(),
            owned_groups: HashMap::new(),
            rescheduled: Vec::new(),
            started: VecDeque::new(),
            mailbox: VecDeque::new(),
            buffers: self.buffers.unwrap_or_default(),
            shared: Arc::new(Shared::new(waker)),
            phase: Phase::Running,
            metrics: LoopMetrics::default(),
            extensions: Vec::new(),
            panic_policy: self.panic_policy,
            #[cfg(unix)]
            signals: None,
        };
        Ok(Reactor {
            poll,
            events: Events::with_capacity(self.event_capacity.unwrap_or(1024)),
            core,
            rescheduled_now: Vec::new(),
            remote_batch: Vec::new(),
        })
    }
}

/// The poll loop. Create it, [`spawn`](Reactor::spawn) entries into it (or post them through
/// a [`ReactorHandle`]), then [`run`](Reactor::run) it on the thread that will own it.
///
/// ```
/// let mut reactor = getty_reactor::Reactor::new().unwrap();
/// let handle = reactor.handle();
/// handle.shutdown(); // queued: run() will stop at its first turn
/// reactor.run().unwrap();
/// ```
pub struct Reactor {
    poll: Poll,
    events: Events,
    core: Core,
    /// Spare vectors swapped with the live ones each turn, so a turn allocates nothing.
    rescheduled_now: Vec<(EntryId, Ready)>,
    remote_batch: Vec<Remote>,
}

impl Reactor {
    /// A reactor with default settings.
    ///
    /// ```
    /// let reactor = getty_reactor::Reactor::new().unwrap();
    /// assert_eq!(reactor.entry_count(), 0);
    /// ```
    pub fn new() -> io::Result<Reactor> {
        Reactor::builder().build()
    }

    /// A builder for a reactor with non-default settings.
    ///
    /// ```
    /// let reactor = getty_reactor::Reactor::builder().build().unwrap();
    /// ```
    pub fn builder() -> ReactorBuilder {
        ReactorBuilder::default()
    }

    /// A handle for other threads.
    ///
    /// ```
    /// let reactor = getty_reactor::Reactor::new().unwrap();
    /// let handle = reactor.handle();
    /// std::thread::spawn(move || handle.shutdown()).join().unwrap();
    /// ```
    pub fn handle(&self) -> ReactorHandle {
        ReactorHandle::new(self.core.shared.clone())
    }

    /// Adds an entry and calls its [`Entry::on_start`] at once.
    ///
    /// ```
    /// # use getty_reactor::*;
    /// struct Nop;
    /// impl Entry for Nop {
    ///     fn on_start(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    ///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
    /// }
    /// let mut reactor = Reactor::new().unwrap();
    /// let id = reactor.spawn(Box::new(Nop));
    /// assert_eq!(reactor.entry_count(), 1);
    /// # let _ = id;
    /// ```
    pub fn spawn(&mut self, entry: Box<dyn Entry>) -> EntryId {
        self.core.enter();
        let id = self.core.insert(entry);
        self.core.run_deferred();
        id
    }

    /// Builds a reactor on a new thread named `name`, lets `setup` spawn its first entries
    /// there, and runs it. Returns once `setup` has finished (with its error, if it failed).
    ///
    /// Entries need not be `Send` (a handler may hold an `Rc`), so a reactor is built on the
    /// thread that runs it; only `setup` crosses threads.
    ///
    /// ```
    /// let thread = getty_reactor::Reactor::start_thread("demo", |reactor| {
    ///     assert_eq!(reactor.entry_count(), 0);
    ///     Ok(())
    /// }).unwrap();
    /// thread.handle().shutdown();
    /// thread.join().unwrap();
    /// ```
    pub fn start_thread<F>(name: &str, setup: F) -> io::Result<ReactorThread>
    where
        F: FnOnce(&mut Reactor) -> io::Result<()> + Send + 'static,
    {
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut reactor = Reactor::new()?;
                let setup_result = setup(&mut reactor).map(|()| reactor.handle());
                let failed = setup_result.is_err();
                let _ = ready_tx.send(setup_result);
                if failed {
                    return Ok(());
                }
                reactor.run()
            })?;
        match ready_rx.recv() {
            Ok(Ok(handle)) => Ok(ReactorThread { handle, thread }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            // The thread ended before setup reported: Reactor::new failed or setup panicked.
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(io::Error::other("reactor thread panicked during setup")),
            },
        }
    }

    /// How many entries are alive.
    ///
    /// ```
    /// assert_eq!(getty_reactor::Reactor::new().unwrap().entry_count(), 0);
    /// ```
    pub fn entry_count(&self) -> usize {
        self.core.slots.len()
    }

    /// Sets what the reactor does when an entry or a job panics; for reactors made by
    /// [`start_thread`](Self::start_thread) (or a [`ReactorPool`]), call it in `setup`.
    ///
    /// ```
    /// use getty_reactor::{PanicPolicy, Reactor};
    /// let thread = Reactor::start_thread("crash-on-bug", |reactor| {
    ///     reactor.set_panic_policy(PanicPolicy::Abort);
    ///     Ok(())
    /// }).unwrap();
    /// thread.handle().shutdown();
    /// thread.join().unwrap();
    /// ```
    pub fn set_panic_policy(&mut self, policy: PanicPolicy) {
        self.core.panic_policy = policy;
    }

    /// What the reactor does when an entry or a job panics.
    ///
    /// ```
    /// use getty_reactor::{PanicPolicy, Reactor};
    /// assert_eq!(Reactor::new().unwrap().panic_policy(), PanicPolicy::Isolate);
    /// ```
    pub fn panic_policy(&self) -> PanicPolicy {
        self.core.panic_policy
    }

    /// Runs the loop on this thread until the reactor is shut down (through a
    /// [`ReactorHandle`]) and its last entry has ended.
    ///
    /// ```
    /// let mut reactor = getty_reactor::Reactor::new().unwrap();
    /// reactor.handle().shutdown();
    /// reactor.run().unwrap();
    /// ```
    pub fn run(&mut self) -> io::Result<()> {
        self.core.enter();
        let result = self.run_until_stopped();
        self.core.force_stop();
        self.core.mark_stopped();
        #[cfg(unix)]
        self.core.stop_watching_signals();
        result
    }

    fn run_until_stopped(&mut self) -> io::Result<()> {
        while self.core.phase != Phase::Stopped {
            self.turn()?;
        }
        Ok(())
    }

    /// One turn: poll, dispatch events, rescheduled entries, commands and due timers.
    fn turn(&mut self) -> io::Result<()> {
        let timeout = self.core.poll_timeout();
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        self.core.now = Instant::now();
        let turn_began = self.core.now;
        // Entries rescheduled during this turn run in the next one, after its poll.
        std::mem::swap(&mut self.core.rescheduled, &mut self.rescheduled_now);
        #[cfg(unix)]
        let mut signalled = false;
        for event in self.events.iter() {
            if event.token() == WAKER {
                continue; // the queue is checked below, woken or not
            }
            #[cfg(unix)]
            if event.token() == signals::SIGNALS {
                signalled = true; // acted on once this batch of events is dispatched
                continue;
            }
            self.core.metrics.events += 1;
            let ready = Ready::from_event(event);
            self.core
                .dispatch_token(event.token(), |e, cx| e.on_ready(cx, ready));
        }
        #[cfg(unix)]
        if signalled {
            self.core.take_signals();
        }
        // Every turn, not only on the waker's event: a command whose wake-up was lost (a
        // failed `wake`) is applied at the next turn, whatever woke the loop (one atomic
        // load per turn; the lock is taken only when something is queued).
        if self.core.shared.has_queued() {
            self.core.shared.drain_into(&mut self.remote_batch);
        }
        for (id, ready) in self.rescheduled_now.drain(..) {
            self.core.dispatch(id, |e, cx| e.on_ready(cx, ready));
        }
        for remote in self.remote_batch.drain(..) {
            self.core.apply(remote);
        }
        self.core.fire_timers();
        self.core.advance_shutdown();
        let took = turn_began.elapsed();
        let metrics = &mut self.core.metrics;
        metrics.turns += 1;
        metrics.busy += took;
        metrics.turn_latency.record(took);
        Ok(())
    }
}

/// A reactor running on its own thread; see [`Reactor::start_thread`].
///
/// ```
/// let t = getty_reactor::Reactor::start_thread("r", |_| Ok(())).unwrap();
/// t.handle().shutdown();
/// t.join().unwrap();
/// ```
pub struct ReactorThread {
    handle: ReactorHandle,
    thread: std::thread::JoinHandle<io::Result<()>>,
}

impl ReactorThread {
    /// A handle to the running reactor.
    ///
    /// ```
    /// # let t = getty_reactor::Reactor::start_thread("r", |_| Ok(())).unwrap();
    /// let h = t.handle().clone();
    /// # h.shutdown(); t.join().unwrap();
    /// ```
    pub fn handle(&self) -> &ReactorHandle {
        &self.handle
    }

    /// Waits for the reactor's `run` to return (after a shutdown) and gives its result.
    ///
    /// ```
    /// # let t = getty_reactor::Reactor::start_thread("r", |_| Ok(())).unwrap();
    /// t.handle().shutdown();
    /// assert!(t.join().is_ok());
    /// ```
    pub fn join(self) -> io::Result<()> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("reactor thread panicked")))
    }
}

impl Drop for Reactor {
    /// A reactor dropped without running to the end still ends its entries properly, so
    /// every session hears its `on_close`.
    fn drop(&mut self) {
        self.core.enter();
        self.core.force_stop();
        self.core.mark_stopped();
        // Extensions are the layers' (or a user's) types, and their destructors user code.
        for (_, extension) in std::mem::take(&mut self.core.extensions) {
            self.core.drop_user("a reactor extension", extension);
        }
    }
}

impl Core {
    /// Makes this the reactor [`current`] reports on this thread.
    fn enter(&self) {
        CURRENT_REACTOR.with(|r| {
            let mut r = r.borrow_mut();
            if !r.as_ref().is_some_and(|s| Arc::ptr_eq(s, &self.shared)) {
                *r = Some(self.shared.clone());
            }
        });
    }

    fn extension<T: Default + 'static>(&mut self) -> &mut T {
        let type_id = TypeId::of::<T>();
        let index = match self.extensions.iter().position(|(t, _)| *t == type_id) {
            Some(i) => i,
            None => {
                self.extensions.push((type_id, Box::new(T::default())));
                self.extensions.len() - 1
            }
        };
        self.extensions[index]
            .1
            .downcast_mut()
            .expect("extension stored under its own TypeId")
    }

    fn is_alive(&self, id: EntryId) -> bool {
        self.slots
            .get(id.key)
            .is_some_and(|s| s.serial() == id.serial)
    }

    fn insert(&mut self, entry: Box<dyn Entry>) -> EntryId {
        self.insert_at(0, entry)
    }

    fn insert_in(&mut self, group: GroupId, entry: Box<dyn Entry>) -> EntryId {
        let index = if self.group_is_live(group) {
            group.index
        } else {
            log::debug!("spawn into a group that has ended: the entry joins no group");
            0
        };
        self.insert_at(index, entry)
    }

    fn insert_at(&mut self, group_index: u16, entry: Box<dyn Entry>) -> EntryId {
        let serial = self.next_serial & SERIAL_MASK;
        self.next_serial += 1;
        let key = self.slots.insert(Slot {
            tag: serial | (u64::from(group_index) << GROUP_SHIFT),
            entry: Some(entry),
        });
        let id = EntryId { key, serial };
        self.started.push_back(id);
        id
    }

    fn poll_timeout(&mut self) -> Option<Duration> {
        if !self.rescheduled.is_empty() || !self.mailbox.is_empty() || self.shared.has_queued() {
            return Some(Duration::ZERO);
        }
        let mut wake_at = self.timers.next_deadline();
        if let Phase::Draining(deadline) = self.phase {
            wake_at = Some(wake_at.map_or(deadline, |t| t.min(deadline)));
        }
        // mio rounds a sub-millisecond timeout up, so a timer due in 0.3 ms does not spin.
        wake_at.map(|t| t.saturating_duration_since(Instant::now()))
    }

    fn dispatch_token(
        &mut self,
        token: Token,
        call: impl FnOnce(&mut dyn Entry, &mut Context<'_>) -> Status,
    ) {
        let Some(slot) = self.slots.get(token.0) else {
            return; // an event raced with the entry's removal
        };
        let id = EntryId {
            key: token.0,
            serial: slot.serial(),
        };
        self.dispatch(id, call);
    }

    /// Calls one entry, then whatever that call set off (spawned entries, local messages).
    fn dispatch(
        &mut self,
        id: EntryId,
        call: impl FnOnce(&mut dyn Entry, &mut Context<'_>) -> Status,
    ) {
        self.call_entry(id, call);
        self.run_deferred();
    }

    fn call_entry(
        &mut self,
        id: EntryId,
        call: impl FnOnce(&mut dyn Entry, &mut Context<'_>) -> Status,
    ) -> Option<Status> {
        let entry = match self.slots.get_mut(id.key) {
            Some(slot) if slot.serial() == id.serial => slot.entry.take(),
            _ => None,
        };
        let Some(mut entry) = entry else {
            // The entry has ended: `call` goes unused, and what it holds (a command, with
            // whatever the sender put in it) is user code's to drop.
            self.drop_user("a command for an entry that has ended", call);
            return None;
        };
        let outer = CURRENT_ENTRY.with(|c| c.replace(Some(id)));
        // AssertUnwindSafe: after a panic the entry is never called again but for
        // `on_panic`, whose contract says its state may be half-updated, and is then
        // dropped; the core is changed during the call only through `Context`, whose
        // methods run no user code, so no panic of the entry's can leave it half-updated.
        // catch_unwind costs nothing until something panics.
        let called = panic::catch_unwind(AssertUnwindSafe(|| {
            call(entry.as_mut(), &mut Context { core: self, id })
        }));
        let status = match called {
            Ok(status) => status,
            Err(payload) => {
                self.entry_panicked(id, entry.as_mut(), payload);
                Status::Done
            }
        };
        CURRENT_ENTRY.with(|c| c.set(outer));
        match status {
            Status::Continue => self.slots[id.key].entry = Some(entry),
            Status::Done => {
                self.remove(id.key);
                self.drop_entry(id, entry);
            }
        }
        Some(status)
    }

    /// An entry's call panicked: report it, let the entry tell its handler (`on_panic`,
    /// itself guarded), and leave its removal to the caller. Runs as the entry (the
    /// "current entry" is still its id), so `on_panic` may mint handles and send.
    #[cold]
    #[inline(never)]
    fn entry_panicked(&mut self, id: EntryId, entry: &mut dyn Entry, payload: Box<dyn Any + Send>) {
        self.report_panic(&format!("entry {id:?}"), "it is removed", &*payload);
        // AssertUnwindSafe: as in `call_entry`; a second panic ends the entry's calls.
        let told = panic::catch_unwind(AssertUnwindSafe(|| {
            entry.on_panic(&mut Context { core: self, id }, panic_message(&*payload))
        }));
        if let Err(again) = told {
            let what = format!("entry {id:?}, in on_panic,");
            self.report_panic(&what, "it is dropped", &*again);
            forget_payload(again);
        }
        forget_payload(payload);
    }

    /// Drops a removed entry; a destructor that panics is reported like any other panic.
    fn drop_entry(&mut self, id: EntryId, entry: Box<dyn Entry>) {
        // AssertUnwindSafe: nothing is observed after a destructor panicked but the panic.
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(move || drop(entry))) {
            let what = format!("entry {id:?}, while being dropped,");
            self.report_panic(&what, "it is gone", &*payload);
            forget_payload(payload);
        }
    }

    /// Drops a value that user code gave the reactor (a command, a job, what a call's
    /// closure holds): its destructor is user code too, so a panic in it is reported like
    /// any other and the loop carries on. Costs nothing while nothing panics.
    #[inline]
    fn drop_user<T>(&mut self, what: &str, value: T) {
        // AssertUnwindSafe: nothing is observed after a destructor panicked but the panic.
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(move || drop(value))) {
            self.dropped_with_panic(what, payload);
        }
    }

    #[cold]
    #[inline(never)]
    fn dropped_with_panic(&mut self, what: &str, payload: Box<dyn Any + Send>) {
        let what = format!("{what}, while being dropped,");
        self.report_panic(&what, "it is gone", &*payload);
        forget_payload(payload);
    }

    /// Marks the reactor stopped for other threads and drops what they had posted and it
    /// will never run, one by one, each under guard (see [`Core::drop_user`]).
    fn mark_stopped(&mut self) {
        for remote in self.shared.mark_stopped() {
            self.drop_user("a command or job posted to a stopped reactor", remote);
        }
    }

    /// Logs a caught panic and counts it, or aborts the process under
    /// [`PanicPolicy::Abort`].
    #[cold]
    #[inline(never)]
    fn report_panic(&mut self, what: &str, then: &str, payload: &(dyn Any + Send)) {
        let message = panic_message(payload);
        self.metrics.panics += 1;
        if self.panic_policy == PanicPolicy::Abort {
            log::error!("{what} panicked: {message}; aborting (PanicPolicy::Abort)");
            std::process::abort();
        }
        log::error!("{what} panicked: {message}; {then}, the reactor carries on");
    }

    fn run_deferred(&mut self) {
        loop {
            if let Some(id) = self.started.pop_front() {
                let status = self.call_entry(id, |e, cx| e.on_start(cx));
                if status == Some(Status::Continue) {
                    self.notify_shutdown(id);
                }
            } else if let Some((to, command)) = self.mailbox.pop_front() {
                self.call_entry(to, |e, cx| e.on_command(cx, command));
            } else {
                return;
            }
        }
    }

    fn apply(&mut self, remote: Remote) {
        match remote {
            Remote::Execute(job) => {
                // AssertUnwindSafe: the job is consumed, and `Spawner` changes the core
                // only through methods that run no user code.
                let ran =
                    panic::catch_unwind(AssertUnwindSafe(|| job(&mut Spawner { core: self })));
                if let Err(payload) = ran {
                    self.report_panic("a job posted to the reactor", "it is dropped", &*payload);
                    forget_payload(payload);
                }
                self.run_deferred();
            }
            Remote::Deliver(to, command) => self.dispatch(to, |e, cx| e.on_command(cx, command)),
            Remote::Shutdown(grace) => self.begin_shutdown(grace),
        }
    }

    fn fire_timers(&mut self) {
        let limit = self.timers.seq_limit();
        while let Some((owner, tag)) = self.timers.pop_expired(self.now, limit) {
            self.dispatch(owner, |e, cx| e.on_timer(cx, tag));
        }
    }

    fn live_ids(&self) -> Vec<EntryId> {
        self.ids_where(|_| true)
    }

    fn ids_where(&self, keep: impl Fn(&Slot) -> bool) -> Vec<EntryId> {
        self.slots
            .iter()
            .filter(|(_, slot)| keep(slot))
            .map(|(key, slot)| EntryId {
                key,
                serial: slot.serial(),
            })
            .collect()
    }

    /// Removes an entry, returning it (if it was not being called) for the caller to drop
    /// with [`Core::drop_entry`]; the groups it created end with it.
    fn remove(&mut self, key: usize) -> Option<Box<dyn Entry>> {
        let slot = self.slots.remove(key);
        if slot.tag & OWNER_BIT != 0 {
            for index in self.owned_groups.remove(&slot.serial()).unwrap_or_default() {
                self.groups[usize::from(index)] = None;
                self.free_groups.push(index);
            }
        }
        slot.entry
    }

    /// A new group owned by `owner` (the entry being called), ended when `owner` is removed.
    fn new_group(&mut self, owner: EntryId) -> Option<GroupId> {
        let slot = self.slots.get_mut(owner.key)?;
        if slot.serial() != owner.serial {
            return None;
        }
        let index = match self.free_groups.pop() {
            Some(index) => index,
            None => {
                let index = u16::try_from(self.groups.len()).ok()?;
                self.groups.push(None);
                index
            }
        };
        slot.tag |= OWNER_BIT;
        // A group takes a serial of its own, so no two groups are created at the same one
        // (an id kept past its group's end must not equal a later group's id).
        let created = self.next_serial & SERIAL_MASK;
        self.next_serial += 1;
        self.groups[usize::from(index)] = Some(created);
        self.owned_groups
            .entry(owner.serial)
            .or_default()
            .push(index);
        Some(GroupId { index, created })
    }

    fn group_is_live(&self, group: GroupId) -> bool {
        self.groups.get(usize::from(group.index)) == Some(&Some(group.created))
    }

    fn group_members(&self, group: GroupId) -> Vec<EntryId> {
        if !self.group_is_live(group) {
            return Vec::new();
        }
        self.ids_where(|slot| slot.is_in(group))
    }

    fn begin_shutdown(&mut self, grace: Duration) {
        if self.phase != Phase::Running {
            if grace.is_zero() {
                self.force_stop(); // a second, impatient request
            }
            return;
        }
        log::debug!(
            "reactor shutting down with {grace:?} of grace, {} entries",
            self.slots.len()
        );
        if grace.is_zero() {
            self.force_stop();
            return;
        }
        self.phase = Phase::Draining(deadline_after(self.now, grace));
        for id in self.live_ids() {
            self.notify_shutdown(id);
        }
        self.advance_shutdown();
    }

    /// Tells an entry the reactor is draining (entries spawned while it drains hear it too).
    fn notify_shutdown(&mut self, id: EntryId) {
        if let Phase::Draining(deadline) = self.phase {
            self.dispatch(id, |e, cx| e.on_shutdown(cx, Some(deadline)));
        }
    }

    fn advance_shutdown(&mut self) {
        match self.phase {
            Phase::Draining(deadline) if self.slots.is_empty() || self.now >= deadline => {
                self.force_stop()
            }
            _ => {}
        }
    }

    /// Ends every entry now. Entries may spawn others while they end (a client's redial);
    /// those end too, so the loop repeats until the slab is empty.
    fn force_stop(&mut self) {
        self.phase = Phase::Stopped;
        self.started.clear();
        while !self.slots.is_empty() {
            for id in self.live_ids() {
                self.call_entry(id, |e, cx| e.on_shutdown(cx, None));
                if self.is_alive(id) {
                    if let Some(entry) = self.remove(id.key) {
                        self.drop_entry(id, entry);
                    }
                }
            }
            self.started.clear();
            while let Some((_, command)) = self.mailbox.pop_front() {
                self.drop_user("a command left when the reactor stopped", command);
            }
        }
    }
}

/// `now + delay`, or a century from now for a delay past what an `Instant` can hold
/// (`Duration::MAX` for "never"): "never" in practice, and no overflow.
fn deadline_after(now: Instant, delay: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    now.checked_add(delay.min(CENTURY))
        .unwrap_or_else(|| now + CENTURY)
}

/// The message of a panic payload (`panic!` makes a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a panic with a payload that is not a string"
    }
}

/// Disposes of a caught panic's payload. Its destructor is user code too and could panic
/// in turn, so it is dropped under `catch_unwind`, and a payload of *that* panic is leaked.
fn forget_payload(payload: Box<dyn Any + Send>) {
    // AssertUnwindSafe: nothing is observed after the drop.
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// What an entry may do while the reactor calls it.
///
/// ```
/// use std::time::Duration;
/// use getty_reactor::{Context, Entry, Ready, Reactor, Status};
///
/// struct Spawner;
/// struct Child;
/// impl Entry for Child {
///     fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
///         cx.handle().shutdown();
///         Status::Done
///     }
///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
/// }
/// impl Entry for Spawner {
///     fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
///         let child = cx.spawn(Box::new(Child));
///         assert_ne!(child, cx.id());
///         Status::Done
///     }
///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
/// }
/// let mut reactor = Reactor::new().unwrap();
/// reactor.spawn(Box::new(Spawner));
/// reactor.run().unwrap();
/// ```
pub struct Context<'a> {
    core: &'a mut Core,
    id: EntryId,
}

impl Context<'_> {
    /// The id of the entry being called.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| assert_eq!(cx.id().token(), cx.token()));
    /// ```
    pub fn id(&self) -> EntryId {
        self.id
    }

    /// The token to register this entry's sources with.
    ///
    /// ```
    /// use mio::{net::UdpSocket, Interest};
    /// getty_reactor::with_context(|cx| {
    ///     let mut socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    ///     cx.registry().register(&mut socket, cx.token(), Interest::READABLE).unwrap();
    /// });
    /// ```
    pub fn token(&self) -> Token {
        self.id.token()
    }

    /// The registry to register, reregister and deregister sources with.
    ///
    /// ```
    /// use mio::{net::UdpSocket, Interest};
    /// getty_reactor::with_context(|cx| {
    ///     let mut socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    ///     cx.registry().register(&mut socket, cx.token(), Interest::READABLE).unwrap();
    ///     cx.registry().deregister(&mut socket).unwrap();
    /// });
    /// ```
    pub fn registry(&self) -> &Registry {
        &self.core.registry
    }

    /// The time this turn of the loop began (one clock read per turn, not per call).
    ///
    /// ```
    /// getty_reactor::with_context(|cx| assert!(cx.now() <= std::time::Instant::now()));
    /// ```
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// Arms a timer that calls this entry's [`Entry::on_timer`] with `tag` after `delay`.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| {
    ///     cx.set_timer(std::time::Duration::from_secs(1), 7);
    ///     assert_eq!(cx.armed_timers(), 1);
    /// });
    /// ```
    pub fn set_timer(&mut self, delay: Duration, tag: u64) -> TimerId {
        let deadline = deadline_after(self.core.now, delay);
        self.set_timer_at(deadline, tag)
    }

    /// Arms a timer for an absolute deadline.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| {
    ///     let at = cx.now() + std::time::Duration::from_millis(5);
    ///     cx.set_timer_at(at, 0);
    /// });
    /// ```
    pub fn set_timer_at(&mut self, deadline: Instant, tag: u64) -> TimerId {
        self.core.timers.set(deadline, self.id, tag)
    }

    /// Disarms a timer; returns false when it had already fired or been cancelled.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| {
    ///     let t = cx.set_timer(std::time::Duration::from_secs(1), 0);
    ///     assert!(cx.cancel_timer(t));
    ///     assert!(!cx.cancel_timer(t));
    /// });
    /// ```
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.core.timers.cancel(timer)
    }

    /// Calls this entry's `on_ready(ready)` again in the next turn, after that turn's poll.
    /// An entry that stops reading because it used its budget asks for this, since an
    /// edge-triggered poll will not report the bytes it left behind.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| cx.reschedule(getty_reactor::Ready::READABLE));
    /// ```
    pub fn reschedule(&mut self, ready: Ready) {
        self.core.rescheduled.push((self.id, ready));
    }

    /// Adds an entry; its `on_start` runs as soon as the current call returns.
    ///
    /// See the [type-level example](Context).
    pub fn spawn(&mut self, entry: Box<dyn Entry>) -> EntryId {
        self.core.insert(entry)
    }

    /// A new group to spawn entries into, owned by this entry: it ends when this entry
    /// ends, and its index is then reused. `None` only while 65,535 groups are alive on this
    /// reactor at once (a server that gets none spawns its sessions ungrouped, and cannot
    /// close them all).
    ///
    /// See [`GroupId`].
    pub fn new_group(&mut self) -> Option<GroupId> {
        self.core.new_group(self.id)
    }

    /// Like [`spawn`](Self::spawn), into `group`. An entry spawned into a group that has
    /// ended (its owner is gone) joins no group.
    ///
    /// ```
    /// use getty_reactor::{Context, Entry, Ready, Status};
    /// struct Idle;
    /// impl Entry for Idle {
    ///     fn on_start(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    ///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
    /// }
    /// getty_reactor::with_context(|cx| {
    ///     let group = cx.new_group().unwrap();
    ///     let a = cx.spawn_in(group, Box::new(Idle));
    ///     cx.spawn(Box::new(Idle)); // not in the group
    ///     assert_eq!(cx.group_members(group), vec![a]);
    /// });
    /// ```
    pub fn spawn_in(&mut self, group: GroupId, entry: Box<dyn Entry>) -> EntryId {
        self.core.insert_in(group, entry)
    }

    /// The live entries of `group` (a scan of the slab: for rare operations such as
    /// closing them all, not for every event); none once the group has ended.
    ///
    /// See [`spawn_in`](Self::spawn_in).
    pub fn group_members(&self, group: GroupId) -> Vec<EntryId> {
        self.core.group_members(group)
    }

    /// Sends a command to another entry on this reactor; it is delivered as soon as the
    /// current call returns. A command for an entry that has ended is dropped.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| {
    ///     let me = cx.id();
    ///     cx.send(me, Box::new("note to self"));
    /// });
    /// ```
    pub fn send(&mut self, to: EntryId, command: Command) {
        self.core.mailbox.push_back((to, command));
    }

    /// A handle to this reactor, for other threads.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| assert!(!cx.handle().is_stopped()));
    /// ```
    pub fn handle(&self) -> ReactorHandle {
        ReactorHandle::new(self.core.shared.clone())
    }

    /// The reactor's buffer pool.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| {
    ///     let buf = cx.buffers().take();
    ///     cx.buffers().give(buf);
    /// });
    /// ```
    pub fn buffers(&mut self) -> &mut BufPool {
        &mut self.core.buffers
    }

    /// True once the reactor has begun to shut down; entries should not start new work
    /// (a client should not redial).
    ///
    /// ```
    /// getty_reactor::with_context(|cx| assert!(!cx.is_shutting_down()));
    /// ```
    pub fn is_shutting_down(&self) -> bool {
        self.core.phase != Phase::Running
    }

    /// True while the entry `id` is alive on this reactor.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| assert!(cx.is_alive(cx.id())));
    /// ```
    pub fn is_alive(&self, id: EntryId) -> bool {
        self.core.is_alive(id)
    }

    /// This reactor's instance of `T`, created with `T::default()` on first use: typed
    /// per-reactor state for the layers above (their metrics, say), reached without a lock.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| {
    ///     *cx.extension::<u64>() += 1;
    ///     assert_eq!(*cx.extension::<u64>(), 1);
    /// });
    /// ```
    pub fn extension<T: Default + 'static>(&mut self) -> &mut T {
        self.core.extension()
    }

    /// Runs `f`, a piece of user code that concerns less than this whole entry (a server's
    /// setup hook, called for one connection), catching a panic in it under the reactor's
    /// [`PanicPolicy`]: with [`Isolate`](PanicPolicy::Isolate) the panic is logged at
    /// error level (naming `what`) and counted, `None` comes back and the entry carries
    /// on; with [`Abort`](PanicPolicy::Abort) the process aborts. Costs nothing while
    /// nothing panics.
    ///
    /// The caller vouches that what `f` touches is sound to use after a panic (as with
    /// `AssertUnwindSafe`): state the panic may have cut short must not be relied on.
    ///
    /// ```
    /// # let quiet = std::panic::take_hook();
    /// # std::panic::set_hook(Box::new(|_| {}));
    /// getty_reactor::with_context(|cx| {
    ///     let fine = cx.catch_panic("a hook", |cx| cx.armed_timers());
    ///     assert_eq!(fine, Some(0));
    ///     let broken: Option<u32> = cx.catch_panic("a hook", |_| panic!("bug"));
    ///     assert_eq!(broken, None); // logged and counted; this entry carries on
    /// });
    /// # std::panic::set_hook(quiet);
    /// ```
    pub fn catch_panic<R>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Context<'_>) -> R,
    ) -> Option<R> {
        // AssertUnwindSafe: the caller vouches for `f`'s captures; the core is changed
        // only through `Context` methods, which run no user code.
        match panic::catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(value) => Some(value),
            Err(payload) => {
                let id = self.id;
                let what = format!("{what} (in entry {id:?})");
                self.core
                    .report_panic(&what, "the entry goes on", &*payload);
                forget_payload(payload);
                None
            }
        }
    }

    /// How many timers are armed on this reactor (for tests and metrics).
    ///
    /// ```
    /// getty_reactor::with_context(|cx| assert_eq!(cx.armed_timers(), 0));
    /// ```
    pub fn armed_timers(&self) -> usize {
        self.core.timers.live_count()
    }
}

/// What a job posted with [`ReactorHandle::execute`] may do on the reactor thread.
///
/// ```
/// let mut reactor = getty_reactor::Reactor::new().unwrap();
/// let handle = reactor.handle();
/// handle.execute(|s| {
///     assert!(!s.is_shutting_down());
///     s.handle().shutdown();
/// }).unwrap();
/// reactor.run().unwrap();
/// ```
pub struct Spawner<'a> {
    core: &'a mut Core,
}

impl Spawner<'_> {
    /// Adds an entry; its `on_start` runs as soon as the job returns.
    ///
    /// See the [type-level example](Spawner).
    pub fn spawn(&mut self, entry: Box<dyn Entry>) -> EntryId {
        self.core.insert(entry)
    }

    /// Sends a command to an entry on this reactor.
    ///
    /// See the [type-level example](Spawner).
    pub fn send(&mut self, to: EntryId, command: Command) {
        self.core.mailbox.push_back((to, command));
    }

    /// The time the current turn began.
    ///
    /// See the [type-level example](Spawner).
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// A handle to this reactor.
    ///
    /// See the [type-level example](Spawner).
    pub fn handle(&self) -> ReactorHandle {
        ReactorHandle::new(self.core.shared.clone())
    }

    /// How many entries are alive.
    ///
    /// See the [type-level example](Spawner).
    pub fn entry_count(&self) -> usize {
        self.core.slots.len()
    }

    /// True once the reactor has begun to shut down.
    ///
    /// See the [type-level example](Spawner).
    pub fn is_shutting_down(&self) -> bool {
        self.core.phase != Phase::Running
    }

    /// True while the entry `id` is alive.
    ///
    /// See the [type-level example](Spawner).
    pub fn is_alive(&self, id: EntryId) -> bool {
        self.core.is_alive(id)
    }

    /// This reactor's instance of `T` (see [`Context::extension`]).
    ///
    /// See the [type-level example](Spawner).
    pub fn extension<T: Default + 'static>(&mut self) -> &mut T {
        self.core.extension()
    }

    /// A snapshot of the loop's own counters.
    ///
    /// See [`LoopMetrics`].
    pub fn loop_metrics(&self) -> LoopMetrics {
        LoopMetrics {
            entries: self.core.slots.len() as u64,
            ..self.core.metrics.clone()
        }
    }
}

/// Runs `f` with the [`Context`] of a short-lived entry on a fresh reactor: the harness of
/// this crate's documentation examples.
///
/// ```
/// getty_reactor::with_context(|cx| assert_eq!(cx.armed_timers(), 0));
/// ```
#[doc(hidden)]
pub fn with_context(f: impl FnOnce(&mut Context<'_>) + 'static) {
    struct Once<F>(Option<F>);
    impl<F: FnOnce(&mut Context<'_>) + 'static> Entry for Once<F> {
        fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
            if let Some(f) = self.0.take() {
                f(cx);
            }
            Status::Done
        }
        fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
            Status::Done
        }
    }
    let mut reactor = Reactor::new().expect("a reactor for the example");
    reactor.spawn(Box::new(Once(Some(f))));
}
