//! What entries and jobs may do on the reactor's thread: [`Context`] and [`Spawner`].

#[cfg(doc)]
use crate::PanicPolicy;

use std::any::TypeId;
use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use crate::core::{deadline_after, Core, Phase};
use crate::current::CURRENT_ENTRY;
use crate::panic::forget_payload;
use crate::{
    BufPool, Entry, EntryId, GroupId, LoopMetrics, Reactor, ReactorHandle, Ready, Recipient,
    Status, TimerId,
};

/// What an entry may do while the reactor calls it.
///
/// The rules it teaches: an entry runs to the end of each call, never re-entrantly; what
/// it sets off (entries it [spawns](Spawner::spawn), commands it [sends](Spawner::send))
/// runs right after its call returns, never inside it; its timers and sources are its
/// own, named by its [`token`](Self::token). A `Context` is also a [`Spawner`] (what a job
/// posted from another thread gets), so everything a job may do, an entry may do too.
///
/// ```
/// use std::time::Duration;
/// use getty_reactor::{Context, Entry, NoCommand, Ready, Reactor, Status};
///
/// struct Parent;
/// struct Child;
/// impl Entry for Child {
///     type Command = NoCommand;
///     fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
///         cx.handle().shutdown();
///         Status::Done
///     }
///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
/// }
/// impl Entry for Parent {
///     type Command = NoCommand;
///     fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
///         let child = cx.spawn(Child);
///         assert_ne!(child.id(), cx.id());
///         Status::Done
///     }
///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
/// }
/// let mut reactor = Reactor::new().unwrap();
/// reactor.spawn(Parent);
/// reactor.run().unwrap();
/// ```
pub struct Context<'a> {
    spawner: Spawner<'a>,
    id: EntryId,
}

impl<'a> Context<'a> {
    pub(crate) fn new(core: &'a mut Core, id: EntryId) -> Self {
        Context {
            spawner: Spawner::new(core),
            id,
        }
    }
}

impl<'a> Deref for Context<'a> {
    type Target = Spawner<'a>;

    fn deref(&self) -> &Spawner<'a> {
        &self.spawner
    }
}

impl<'a> DerefMut for Context<'a> {
    fn deref_mut(&mut self) -> &mut Spawner<'a> {
        &mut self.spawner
    }
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
        &self.spawner.core.registry
    }

    /// Arms a timer that calls this entry's [`Entry::on_timer`] with `tag` after `delay`,
    /// counted from this call: the clock is read here, not taken from the start of the
    /// entry's call ([`Spawner::now`]), which a long callback leaves behind.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| {
    ///     cx.set_timer(std::time::Duration::from_secs(1), 7);
    ///     assert_eq!(cx.armed_timers(), 1);
    /// });
    /// ```
    pub fn set_timer(&mut self, delay: Duration, tag: u64) -> TimerId {
        let deadline = deadline_after(Instant::now(), delay);
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
        self.spawner.core.timers.set(deadline, self.id, tag)
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
        self.spawner.core.timers.cancel(timer)
    }

    /// Calls this entry's `on_ready(ready)` again in the next turn, after that turn's poll.
    /// An entry that stops reading because it used its budget asks for this, since an
    /// edge-triggered poll will not report the bytes it left behind.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| cx.reschedule(getty_reactor::Ready::READABLE));
    /// ```
    pub fn reschedule(&mut self, ready: Ready) {
        self.spawner.core.rescheduled.push((self.id, ready));
    }

    /// A new group to spawn entries into, owned by this entry: it ends when this entry
    /// ends, and its index is then reused. `None` only while 65,535 groups are alive on this
    /// reactor at once (a server that gets none spawns its sessions ungrouped, and cannot
    /// close them all).
    ///
    /// See [`GroupId`].
    pub fn new_group<C: Send + 'static>(&mut self) -> Option<GroupId<C>> {
        self.spawner.core.new_group(self.id).map(GroupId::new)
    }

    /// This entry's own address, if `C` is its command type (`None` otherwise): what it
    /// hands to the entries it spawns so that they can answer it.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// getty_reactor::with_context(|cx| {
    ///     // The doc harness's entry takes no commands.
    ///     assert_eq!(cx.recipient::<Infallible>().unwrap().id(), cx.id());
    ///     assert!(cx.recipient::<u32>().is_none());
    /// });
    /// ```
    pub fn recipient<C: Send + 'static>(&self) -> Option<Recipient<C>> {
        self.is_commanded_by::<C>()
            .then(|| Recipient::exact(self.id))
    }

    /// This entry's address for commands of a narrower type `C`, each turned into its own
    /// command type `E` on the way (`None` if `E` is not its command type): a client gives
    /// its sessions an address for the few notes they send it, and they need not know the
    /// client's whole command type.
    ///
    /// ```
    /// use getty_reactor::{Context, Entry, Ready, Reactor, Recipient, Status};
    ///
    /// struct Bye;
    /// enum Note { Bye(Bye), Other }
    /// impl From<Bye> for Note {
    ///     fn from(bye: Bye) -> Note { Note::Bye(bye) }
    /// }
    /// struct Client;
    /// impl Entry for Client {
    ///     type Command = Note;
    ///     fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
    ///         let only_bye: Recipient<Bye> = cx.recipient_as::<Bye, Note>().unwrap();
    ///         cx.send(only_bye, Bye);
    ///         Status::Continue
    ///     }
    ///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
    ///     fn on_command(&mut self, cx: &mut Context<'_>, note: Note) -> Status {
    ///         assert!(matches!(note, Note::Bye(_)));
    ///         cx.handle().shutdown();
    ///         Status::Done
    ///     }
    /// }
    /// let mut reactor = Reactor::new().unwrap();
    /// reactor.spawn(Client);
    /// reactor.run().unwrap();
    /// ```
    pub fn recipient_as<C, E>(&self) -> Option<Recipient<C>>
    where
        C: Send + 'static,
        E: From<C> + Send + 'static,
    {
        self.is_commanded_by::<E>()
            .then(|| Recipient::converting::<E>(self.id))
    }

    /// True if this entry's command type is `C`.
    fn is_commanded_by<C: 'static>(&self) -> bool {
        CURRENT_ENTRY.with(Cell::get) == Some((self.id, TypeId::of::<C>()))
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
}

/// What a job posted with [`ReactorHandle::execute`] may do on the reactor thread, and
/// what every [`Context`] may do too (a `Context` dereferences to its `Spawner`): spawn
/// entries, message them, read the reactor's state.
///
/// ```
/// use getty_reactor::{Context, Entry, Ready, Reactor, Status};
///
/// struct Greeter;
/// impl Entry for Greeter {
///     type Command = &'static str;
///     fn on_start(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
///     fn on_command(&mut self, cx: &mut Context<'_>, hello: &'static str) -> Status {
///         assert_eq!(hello, "hello");
///         cx.handle().shutdown();
///         Status::Done
///     }
/// }
///
/// let mut reactor = Reactor::new().unwrap();
/// reactor.handle().execute(|s| {
///     assert!(!s.is_shutting_down());
///     let greeter = s.spawn(Greeter);
///     s.send(greeter, "hello");
/// }).unwrap();
/// reactor.run().unwrap();
/// ```
pub struct Spawner<'a> {
    pub(crate) core: &'a mut Core,
}

impl<'a> Spawner<'a> {
    pub(crate) fn new(core: &'a mut Core) -> Self {
        Spawner { core }
    }
}

impl Spawner<'_> {
    /// Adds an entry; its `on_start` runs as soon as the current call (or job) returns.
    /// Returns its address, typed by what it accepts.
    ///
    /// See the [`Context`] and [`Spawner`] examples.
    pub fn spawn<E: Entry>(&mut self, entry: E) -> Recipient<E::Command> {
        Recipient::exact(self.core.insert(entry))
    }

    /// Like [`spawn`](Self::spawn), into `group`. An entry spawned into a group that has
    /// ended (its owner is gone) joins no group.
    ///
    /// ```
    /// use getty_reactor::{Context, Entry, Ready, Status};
    /// struct Idle;
    /// impl Entry for Idle {
    ///     type Command = String;
    ///     fn on_start(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    ///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
    /// }
    /// getty_reactor::with_context(|cx| {
    ///     let group = cx.new_group::<String>().unwrap();
    ///     let a = cx.spawn_in(group, Idle);
    ///     cx.spawn(Idle); // not in the group
    ///     assert_eq!(cx.group_members(group), vec![a]);
    /// });
    /// ```
    pub fn spawn_in<E: Entry>(
        &mut self,
        group: GroupId<E::Command>,
        entry: E,
    ) -> Recipient<E::Command> {
        Recipient::exact(self.core.insert_in(group.raw, entry))
    }

    /// The live entries of `group` (a scan of the slab: for rare operations such as
    /// closing them all, not for every event); none once the group has ended.
    ///
    /// See [`spawn_in`](Self::spawn_in).
    pub fn group_members<C: Send + 'static>(&self, group: GroupId<C>) -> Vec<Recipient<C>> {
        let members = self.core.group_members(group.raw);
        members.into_iter().map(Recipient::exact).collect()
    }

    /// Sends a command to an entry on this reactor; it is delivered as soon as the
    /// current call (or job) returns. A command for an entry that has ended is dropped.
    ///
    /// See the [`Recipient`] example.
    pub fn send<C: Send + 'static>(&mut self, to: Recipient<C>, command: impl Into<C>) {
        let queued = to.wrap(command.into());
        self.core.mailbox.push_back((to.id(), queued));
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

    /// True while `entry` (an [`EntryId`] or a [`Recipient`]) is alive on this reactor.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| assert!(cx.is_alive(cx.id())));
    /// ```
    pub fn is_alive(&self, entry: impl Into<EntryId>) -> bool {
        self.core.is_alive(entry.into())
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
    #[inline]
    pub fn extension<T: Default + 'static>(&mut self) -> &mut T {
        self.core.extension()
    }

    /// How many timers are armed on this reactor (for tests and metrics).
    ///
    /// ```
    /// getty_reactor::with_context(|cx| assert_eq!(cx.armed_timers(), 0));
    /// ```
    pub fn armed_timers(&self) -> usize {
        self.core.timers.live_count()
    }

    /// The time the loop began the call being made (this entry's `on_ready`, `on_timer`,
    /// `on_command`, ..., or a job): one clock read per call, not per `now()`; the first
    /// call after a poll shares the poll's. So an entry called after others kept the loop
    /// busy is not given a time from before their work.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| assert!(cx.now() <= std::time::Instant::now()));
    /// ```
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// Reads the clock, and makes it what [`now`](Self::now) answers for the rest of this
    /// call: for a deadline counted from a moment after work that may have taken long (a
    /// handler's callback), which `now` would count from the call's start.
    ///
    /// ```
    /// getty_reactor::with_context(|cx| {
    ///     let began = cx.now();
    ///     std::thread::sleep(std::time::Duration::from_millis(5));
    ///     let read = cx.read_clock();
    ///     assert!(read >= began + std::time::Duration::from_millis(5));
    ///     assert_eq!(cx.now(), read);
    /// });
    /// ```
    pub fn read_clock(&mut self) -> Instant {
        self.core.now = Instant::now();
        self.core.now
    }

    /// How many entries are alive.
    ///
    /// ```
    /// let thread = getty_reactor::Reactor::start_thread("r", |_| Ok(())).unwrap();
    /// assert_eq!(thread.handle().query(|s| s.entry_count()).unwrap(), 0);
    /// thread.handle().shutdown();
    /// thread.join().unwrap();
    /// ```
    pub fn entry_count(&self) -> usize {
        self.core.slots.len()
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
        type Command = crate::NoCommand;
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
    reactor.spawn(Once(Some(f)));
}
