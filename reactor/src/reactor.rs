//! The poll loop itself: [`Reactor`], its builder, and a reactor on its own thread.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::Instant;

use mio::{Events, Poll, Token};
use slab::Slab;

use crate::core::{Core, Outer, Phase};
use crate::handle::{Remote, Shared};
use crate::timer::Timers;
use crate::{BufPool, Entry, EntryId, LoopMetrics, PanicPolicy, ReactorHandle, Ready, Recipient};

/// The token of the waker; slab keys never reach it.
const WAKER: Token = Token(usize::MAX);

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
            clock_stale: false,
            groups: vec![None],
            free_groups: Vec::new(),
            owned_groups: HashMap::new(),
            rescheduled: Vec::new(),
            woken: Vec::new(),
            started: VecDeque::new(),
            mailbox: VecDeque::new(),
            buffers: self.buffers.unwrap_or_default(),
            buffers_release_at: None,
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
    pub(crate) core: Core,
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

    /// Adds an entry and calls its [`Entry::on_start`] at once; returns its address, typed
    /// by the commands it accepts.
    ///
    /// ```
    /// # use getty_reactor::*;
    /// struct Nop;
    /// impl Entry for Nop {
    ///     type Command = NoCommand;
    ///     fn on_start(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    ///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
    /// }
    /// let mut reactor = Reactor::new().unwrap();
    /// let nop = reactor.spawn(Nop);
    /// assert_eq!(reactor.entry_count(), 1);
    /// # let _ = nop;
    /// ```
    pub fn spawn<E: Entry>(&mut self, entry: E) -> Recipient<E::Command> {
        let outer = self.core.enter();
        // Outside a turn the loop's clock is as old as the reactor (or its last turn): an
        // entry arming a timer in `on_start` counts from now, not from then.
        self.core.set_clock(Instant::now());
        let id = self.core.insert(entry);
        self.core.run_deferred();
        Outer::restore(outer);
        Recipient::exact(id)
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
    /// [`start_thread`](Self::start_thread) (or a [`ReactorPool`](crate::ReactorPool)), call it in `setup`.
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
        let outer = self.core.enter();
        let in_loop = crate::current::InLoop::enter();
        let result = self.run_until_stopped();
        self.core.force_stop();
        self.core.mark_stopped();
        #[cfg(unix)]
        self.core.stop_watching_signals();
        drop(in_loop);
        Outer::restore(outer);
        result
    }

    fn run_until_stopped(&mut self) -> io::Result<()> {
        // Each turn's poll counts its timeout from the clock read that ended the turn
        // before; the first counts from now, not from when the reactor was built.
        self.core.set_clock(Instant::now());
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
        self.core.set_clock(Instant::now());
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
            if event.token() == crate::signals::SIGNALS {
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
        self.core.release_unused_buffers();
        // Wakes left for this turn (made by the last batch of wakes); asked inline first,
        // as after every call, since most turns leave none.
        if self.core.has_deferred() {
            self.core.run_deferred();
        }
        self.core.advance_shutdown();
        // The turn ends at the clock's latest reading, read again only if a call ran since
        // `fire_timers` read it: usually that one read times the timers, ends the turn's
        // busy time and starts the next poll's timeout.
        self.core.fresh_clock();
        let took = self.core.now.saturating_duration_since(turn_began);
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
        let outer = self.core.enter();
        self.core.force_stop();
        self.core.mark_stopped();
        // Extensions are the layers' (or a user's) types, and their destructors user code.
        for (_, extension) in std::mem::take(&mut self.core.extensions) {
            self.core.drop_user("a reactor extension", extension);
        }
        self.core.leave();
        Outer::restore(outer);
    }
}
