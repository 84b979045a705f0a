//! Who is running on this thread: the entry being called and its reactor.

use std::any::TypeId;
use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::handle::Shared;
use crate::{EntryId, ReactorHandle, Recipient};

thread_local! {
    /// The entry being called on this thread and its command type, for [`current`].
    pub(crate) static CURRENT_ENTRY: Cell<Option<(EntryId, TypeId)>> = const { Cell::new(None) };
    /// The reactor last entered on this thread (one reactor runs per thread at a time).
    pub(crate) static CURRENT_REACTOR: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
    /// Entries of this thread's reactor that [`wake`] asked to call, in order.
    pub(crate) static WOKEN: RefCell<Vec<EntryId>> = const { RefCell::new(Vec::new()) };
    /// Whether `WOKEN` may hold anything: asked after every call, and, having no destructor,
    /// it costs one load where `WOKEN` costs a check of its lazy state too.
    pub(crate) static WOKEN_ANY: Cell<bool> = const { Cell::new(false) };
    /// A reactor's loop runs on this thread (inside `Reactor::run`).
    static IN_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as running a reactor's loop for as long as it lives.
pub(crate) struct InLoop(bool);

impl InLoop {
    pub(crate) fn enter() -> Self {
        InLoop(IN_LOOP.with(|l| l.replace(true)))
    }
}

impl Drop for InLoop {
    fn drop(&mut self) {
        IN_LOOP.with(|l| l.set(self.0));
    }
}

/// Whether blocking this thread would block a reactor: its loop runs here, or one of its
/// entries is being called. Unlike [`on_reactor_thread`], false on a thread that only holds
/// a reactor it has not run yet.
pub(crate) fn in_reactor_loop() -> bool {
    IN_LOOP.with(Cell::get) || CURRENT_ENTRY.with(Cell::get).is_some()
}

/// Asks this thread's reactor to call `entry`'s [`on_wake`](crate::Entry::on_wake) as soon
/// as the current call (or job) returns, in the same turn: how code that shares state with
/// entries of its own reactor (a broadcast into their inboxes) hands them work without a
/// command, a lock or a wake-up of the poll. Nothing is allocated once the list has grown
/// to its working size. Each call is one `on_wake`: when many may come before the entry
/// runs, keep a flag in the shared state and wake it once. A wake made by an `on_wake`
/// runs at the end of the turn or in the next one, after a poll: an entry that keeps waking
/// itself costs CPU, but never holds back other entries, I/O or timers.
///
/// Returns false, and does nothing, off a live reactor's thread. An entry that has ended
/// meanwhile is not called.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use getty_reactor::{Context, Entry, EntryId, NoCommand, Ready, Status};
///
/// struct Sleeper(Rc<Cell<u32>>);
/// impl Entry for Sleeper {
///     type Command = NoCommand;
///     fn on_start(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
///     fn on_wake(&mut self, _: &mut Context<'_>) -> Status {
///         self.0.set(self.0.get() + 1);
///         Status::Continue
///     }
/// }
///
/// let woken = Rc::new(Cell::new(0));
/// let seen = woken.clone();
/// let mut reactor = getty_reactor::Reactor::new().unwrap();
/// assert!(!getty_reactor::wake(EntryId::new(0, 0)), "not on a live reactor's thread");
/// let sleeper: EntryId = reactor.spawn(Sleeper(woken.clone())).id();
/// reactor.handle().execute(move |_| {
///     assert!(getty_reactor::wake(sleeper));
/// }).unwrap();
/// reactor.handle().shutdown();
/// reactor.run().unwrap();
/// assert_eq!(seen.get(), 1);
/// ```
pub fn wake(entry: EntryId) -> bool {
    if !on_reactor_thread() {
        return false;
    }
    WOKEN.with(|w| w.borrow_mut().push(entry));
    WOKEN_ANY.with(|any| any.set(true));
    true
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
    let (id, _) = CURRENT_ENTRY.with(Cell::get)?;
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

impl<C: Send + 'static> Recipient<C> {
    /// The address of the entry being called on this thread, if it takes commands of type
    /// `C`; `None` outside an entry's call or for an entry of another command type. Code
    /// deep inside a callback (a session minting a cross-thread handle to itself) gets
    /// its typed address this way.
    ///
    /// ```
    /// use getty_reactor::Recipient;
    /// use std::convert::Infallible;
    /// assert!(Recipient::<Infallible>::current().is_none()); // not in a call
    /// getty_reactor::with_context(|cx| {
    ///     // The doc harness's entry takes no commands.
    ///     let me = Recipient::<Infallible>::current().unwrap();
    ///     assert_eq!(me.id(), cx.id());
    ///     assert!(Recipient::<String>::current().is_none());
    /// });
    /// ```
    pub fn current() -> Option<Self> {
        let (id, command_type) = CURRENT_ENTRY.with(Cell::get)?;
        (command_type == TypeId::of::<C>()).then(|| Recipient::exact(id))
    }
}
