//! The loop's state, everything an entry may touch while it is being called, and how
//! entries are called.

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Registry, Token};
use slab::Slab;

use crate::current::{CURRENT_ENTRY, CURRENT_REACTOR, WOKEN, WOKEN_ANY};
use crate::entry::{Erased, Queued, Taken};
use crate::group::{RawGroup, Slot, GROUP_SHIFT, OWNER_BIT, SERIAL_MASK};
use crate::handle::{Remote, Shared};
use crate::panic::{forget_payload, panic_message};
use crate::timer::Timers;
use crate::{BufPool, Context, Entry, EntryId, LoopMetrics, PanicPolicy, Ready, Spawner, Status};

/// Serials of entries and groups, drawn from one counter for the whole process: an id is
/// never reused by any reactor, so an id that reaches the wrong reactor (a recipient from
/// one sent through another's handle) names no entry there and its command is dropped,
/// rather than reaching an unrelated entry that happens to sit at the same key and serial.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(0);

/// The next serial (47 bits: the slot's tag keeps the group index above it).
fn next_serial() -> u64 {
    NEXT_SERIAL.fetch_add(1, Ordering::Relaxed) & SERIAL_MASK
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    Draining(Instant),
    Stopped,
}

/// Everything an entry may touch while it is being called.
pub(crate) struct Core {
    pub(crate) registry: Registry,
    pub(crate) slots: Slab<Slot>,
    pub(crate) timers: Timers,
    /// What `Context::now` answers: when the loop began the call being made (see
    /// [`fresh_clock`](Self::fresh_clock)).
    pub(crate) now: Instant,
    /// An entry or a job has run since `now` was read.
    pub(crate) clock_stale: bool,
    /// Live groups by index: the serial each was created at (index 0, "no group", is never
    /// handed out); `None` marks a free index, also listed in `free_groups`.
    pub(crate) groups: Vec<Option<u64>>,
    pub(crate) free_groups: Vec<u16>,
    /// The group indexes each live owner (an entry with [`OWNER_BIT`]) created, by serial.
    pub(crate) owned_groups: HashMap<u64, Vec<u16>>,
    pub(crate) rescheduled: Vec<(EntryId, Ready)>,
    /// The emptied list of wakes ([`crate::wake`]), swapped with the thread's full one.
    pub(crate) woken: Vec<EntryId>,
    pub(crate) started: VecDeque<EntryId>,
    pub(crate) mailbox: VecDeque<(EntryId, Queued)>,
    pub(crate) buffers: BufPool,
    /// When the pool frees what waited unused since the last time; `None` while it holds
    /// nothing (or keeps all), so that an idle reactor does not wake for it.
    pub(crate) buffers_release_at: Option<Instant>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) phase: Phase,
    pub(crate) metrics: LoopMetrics,
    /// Typed per-reactor state owned by the layers above (their metrics, say).
    pub(crate) extensions: Vec<(TypeId, Box<dyn Any>)>,
    pub(crate) panic_policy: PanicPolicy,
    /// SIGINT and SIGTERM, once [`Reactor::shutdown_on_signals`] asked for them.
    #[cfg(unix)]
    pub(crate) signals: Option<crate::signals::SignalWatch>,
}

/// A reactor that was current on this thread when another was entered inside one of its
/// calls, with the wakes it had pending: current again once the inner one is done.
pub(crate) struct Outer {
    shared: Arc<Shared>,
    woken: Vec<EntryId>,
}

impl Outer {
    /// Makes the outer reactor current again, with its pending wakes.
    pub(crate) fn restore(outer: Option<Outer>) {
        let Some(outer) = outer else {
            return;
        };
        CURRENT_REACTOR.with(|r| *r.borrow_mut() = Some(outer.shared));
        let any = !outer.woken.is_empty();
        WOKEN.with(|w| *w.borrow_mut() = outer.woken);
        WOKEN_ANY.with(|a| a.set(any));
    }
}

impl Core {
    /// Makes this the reactor [`current`] reports on this thread. Returns the one it
    /// replaces, if another live one was current (this reactor is used inside one of its
    /// calls: built, run or dropped in a job), for [`Outer::restore`] once done.
    #[must_use]
    pub(crate) fn enter(&self) -> Option<Outer> {
        CURRENT_REACTOR.with(|r| {
            let mut r = r.borrow_mut();
            if r.as_ref().is_some_and(|s| Arc::ptr_eq(s, &self.shared)) {
                return None;
            }
            let replaced = r.replace(self.shared.clone());
            // Wakes left by another reactor that ran on this thread name its entries: kept
            // for it if it is still live, else dropped.
            let woken = WOKEN.with(|w| std::mem::take(&mut *w.borrow_mut()));
            WOKEN_ANY.with(|any| any.set(false));
            let shared = replaced.filter(|s| !s.is_stopped())?;
            Some(Outer { shared, woken })
        })
    }

    /// Stops being the reactor [`current`] reports on this thread (the reactor is being
    /// dropped): the thread must not keep its waker's descriptor open for as long as it lives.
    pub(crate) fn leave(&self) {
        let ours = CURRENT_REACTOR.with(|r| {
            let mut r = r.borrow_mut();
            let ours = r.as_ref().is_some_and(|s| Arc::ptr_eq(s, &self.shared));
            ours.then(|| r.take())
        });
        if ours.is_some() {
            WOKEN.with(|w| w.borrow_mut().clear());
            WOKEN_ANY.with(|any| any.set(false));
        }
    }

    /// The reactor's value of type `T`, made with `T::default()` on first use. Inlined, with
    /// the first use out of line: the stream entries look their metrics up a few times per
    /// event, and as a call each lookup cost about 30 instructions.
    #[inline(always)]
    pub(crate) fn extension<T: Default + 'static>(&mut self) -> &mut T {
        let type_id = TypeId::of::<T>();
        let index = match self.extensions.iter().position(|(t, _)| *t == type_id) {
            Some(i) => i,
            None => self.add_extension::<T>(),
        };
        let value: &mut dyn Any = &mut *self.extensions[index].1;
        // SAFETY: a value is stored under its own type's `TypeId` only (`add_extension`),
        // so the one found under `TypeId::of::<T>()` is a `T`. (`downcast_mut` would ask
        // the value's type through its vtable again: an indirect call on every lookup.)
        unsafe { &mut *(value as *mut dyn Any).cast::<T>() }
    }

    /// Stores `T::default()` under `T`'s `TypeId`, returning its index.
    #[cold]
    #[inline(never)]
    fn add_extension<T: Default + 'static>(&mut self) -> usize {
        self.extensions
            .push((TypeId::of::<T>(), Box::new(T::default())));
        self.extensions.len() - 1
    }

    pub(crate) fn is_alive(&self, id: EntryId) -> bool {
        self.slots
            .get(id.key)
            .is_some_and(|s| s.serial() == id.serial)
    }

    pub(crate) fn insert<E: Entry>(&mut self, entry: E) -> EntryId {
        self.insert_at(0, Box::new(entry))
    }

    pub(crate) fn insert_in<E: Entry>(&mut self, group: RawGroup, entry: E) -> EntryId {
        let index = if self.group_is_live(group) {
            group.index
        } else {
            log::debug!("spawn into a group that has ended: the entry joins no group");
            0
        };
        self.insert_at(index, Box::new(entry))
    }

    fn insert_at(&mut self, group_index: u16, entry: Box<dyn Erased>) -> EntryId {
        let serial = next_serial();
        let key = self.slots.insert(Slot {
            tag: serial | (u64::from(group_index) << GROUP_SHIFT),
            entry,
        });
        let id = EntryId { key, serial };
        self.started.push_back(id);
        id
    }

    /// How long the next poll may wait, counted from `now`: the clock as the last turn ended
    /// (read after its last call), which the loop asks right after.
    pub(crate) fn poll_timeout(&mut self) -> Option<Duration> {
        if !self.rescheduled.is_empty()
            || !self.mailbox.is_empty()
            || self.shared.has_queued()
            || WOKEN_ANY.with(Cell::get)
        {
            return Some(Duration::ZERO);
        }
        let mut wake_at = self.timers.next_deadline();
        if let Phase::Draining(deadline) = self.phase {
            wake_at = Some(wake_at.map_or(deadline, |t| t.min(deadline)));
        }
        // mio rounds a sub-millisecond timeout up, so a timer due in 0.3 ms does not spin.
        let mut timeout = wake_at.map(|t| t.saturating_duration_since(self.now));
        if let Some(release_at) = self.schedule_buffer_release() {
            let until_release = release_at.saturating_duration_since(self.now);
            timeout = Some(timeout.map_or(until_release, |t| t.min(until_release)));
        }
        timeout
    }

    pub(crate) fn dispatch_token(
        &mut self,
        token: Token,
        call: impl FnOnce(&mut dyn Erased, &mut Context<'_>) -> Status,
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
    pub(crate) fn dispatch(
        &mut self,
        id: EntryId,
        call: impl FnOnce(&mut dyn Erased, &mut Context<'_>) -> Status,
    ) {
        self.call_entry(id, call);
        if self.has_deferred() {
            self.run_deferred();
        }
    }

    /// Whether a call left work behind: an entry spawned, a local message, a wake. Asked
    /// inline after every call, since most leave none (out of line, `run_deferred` cost
    /// about 70 instructions per event just to find nothing to do).
    #[inline]
    pub(crate) fn has_deferred(&self) -> bool {
        !self.started.is_empty() || !self.mailbox.is_empty() || WOKEN_ANY.with(Cell::get)
    }

    /// `now` is when the loop read the clock (after its poll).
    pub(crate) fn set_clock(&mut self, now: Instant) {
        self.now = now;
        self.clock_stale = false;
    }

    /// Reads the clock again if user code ran since it was last read: each call is given
    /// the time it began, not a time from before the calls ahead of it in the turn (a read
    /// or write stamped behind entries that kept the loop busy would look that much older,
    /// and its read-idle timeout or write stall would fire that much early). One clock
    /// read per call; the first call after a poll shares the poll's.
    #[inline]
    pub(crate) fn fresh_clock(&mut self) {
        if self.clock_stale {
            self.set_clock(Instant::now());
        }
    }

    pub(crate) fn call_entry(
        &mut self,
        id: EntryId,
        call: impl FnOnce(&mut dyn Erased, &mut Context<'_>) -> Status,
    ) -> Option<Status> {
        self.fresh_clock();
        let entry = match self.slots.get_mut(id.key) {
            Some(slot) if slot.serial() == id.serial && !slot.entry.is_taken() => {
                Some(std::mem::replace(&mut slot.entry, Taken::boxed()))
            }
            _ => None,
        };
        let Some(mut entry) = entry else {
            // The entry has ended: `call` goes unused, and what it holds (a command, with
            // whatever the sender put in it) is user code's to drop.
            self.drop_user("a command for an entry that has ended", call);
            return None;
        };
        let outer = CURRENT_ENTRY.with(|c| c.replace(Some((id, entry.command_type()))));
        // AssertUnwindSafe: after a panic the entry is never called again but for
        // `on_panic`, whose contract says its state may be half-updated, and is then
        // dropped; the core is changed during the call only through `Context`, whose
        // methods run no user code, so no panic of the entry's can leave it half-updated.
        // catch_unwind costs nothing until something panics.
        let called = panic::catch_unwind(AssertUnwindSafe(|| {
            call(entry.as_mut(), &mut Context::new(self, id))
        }));
        self.clock_stale = true;
        let status = match called {
            Ok(status) => status,
            Err(payload) => {
                self.entry_panicked(id, entry.as_mut(), payload);
                Status::Done
            }
        };
        CURRENT_ENTRY.with(|c| c.set(outer));
        match status {
            Status::Continue => self.slots[id.key].entry = entry,
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
    fn entry_panicked(
        &mut self,
        id: EntryId,
        entry: &mut dyn Erased,
        payload: Box<dyn Any + Send>,
    ) {
        self.report_panic(&format!("entry {id:?}"), "it is removed", &*payload);
        // AssertUnwindSafe: as in `call_entry`; a second panic ends the entry's calls.
        let told = panic::catch_unwind(AssertUnwindSafe(|| {
            entry.on_panic(&mut Context::new(self, id), panic_message(&*payload))
        }));
        if let Err(again) = told {
            let what = format!("entry {id:?}, in on_panic,");
            self.report_panic(&what, "it is dropped", &*again);
            forget_payload(again);
        }
        forget_payload(payload);
    }

    /// Drops a removed entry; a destructor that panics is reported like any other panic.
    fn drop_entry(&mut self, id: EntryId, entry: Box<dyn Erased>) {
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
    pub(crate) fn drop_user<T>(&mut self, what: &str, value: T) {
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
    /// will never run, one by one, each under guard (see `Core::drop_user`).
    pub(crate) fn mark_stopped(&mut self) {
        for remote in self.shared.mark_stopped() {
            self.drop_user("a command or job posted to a stopped reactor", remote);
        }
    }

    /// Logs a caught panic and counts it, or aborts the process under
    /// [`PanicPolicy::Abort`].
    #[cold]
    #[inline(never)]
    pub(crate) fn report_panic(&mut self, what: &str, then: &str, payload: &(dyn Any + Send)) {
        let message = panic_message(payload);
        self.metrics.panics += 1;
        if self.panic_policy == PanicPolicy::Abort {
            log::error!("{what} panicked: {message}; aborting (PanicPolicy::Abort)");
            std::process::abort();
        }
        log::error!("{what} panicked: {message}; {then}, the reactor carries on");
    }

    pub(crate) fn run_deferred(&mut self) {
        // One batch of wakes per call: an entry that wakes itself from `on_wake` runs again
        // after the next poll, not in a loop that would never poll again.
        let mut woke = false;
        loop {
            if let Some(id) = self.started.pop_front() {
                let status = self.call_entry(id, |e, cx| e.on_start(cx));
                if status == Some(Status::Continue) {
                    self.notify_shutdown(id);
                }
            } else if let Some((to, command)) = self.mailbox.pop_front() {
                self.call_entry(to, |e, cx| e.on_queued(cx, command));
            } else if !woke && WOKEN_ANY.with(Cell::get) {
                woke = true;
                self.run_woken();
            } else {
                return;
            }
        }
    }

    /// Calls the entries [`crate::wake`] asked for, in order: the thread's list is swapped
    /// with the core's emptied one, so that neither allocates once grown.
    #[cold]
    fn run_woken(&mut self) {
        WOKEN_ANY.with(|any| any.set(false));
        WOKEN.with(|w| std::mem::swap(&mut *w.borrow_mut(), &mut self.woken));
        let woken = std::mem::take(&mut self.woken);
        for &id in &woken {
            self.call_entry(id, |e, cx| e.on_wake(cx));
        }
        self.woken = woken;
        self.woken.clear();
    }

    pub(crate) fn apply(&mut self, remote: Remote) {
        match remote {
            Remote::Execute(job) => {
                self.fresh_clock();
                // AssertUnwindSafe: the job is consumed, and `Spawner` changes the core
                // only through methods that run no user code.
                let ran = panic::catch_unwind(AssertUnwindSafe(|| job(&mut Spawner::new(self))));
                self.clock_stale = true;
                if let Err(payload) = ran {
                    self.report_panic("a job posted to the reactor", "it is dropped", &*payload);
                    forget_payload(payload);
                }
                self.run_deferred();
            }
            Remote::Deliver(to, command) => self.dispatch(to, |e, cx| e.on_queued(cx, command)),
            Remote::Shutdown(grace) => self.begin_shutdown(grace),
        }
    }

    /// When the pool next frees its unused buffers: one interval after it began to hold
    /// any, then every interval while it still does.
    fn schedule_buffer_release(&mut self) -> Option<Instant> {
        if self.buffers_release_at.is_none() && !self.buffers.is_empty() {
            let interval = self.buffers.release_interval()?;
            self.buffers.begin_interval();
            // An interval too long for the clock never ends: nothing is freed.
            self.buffers_release_at = self.now.checked_add(interval);
        }
        self.buffers_release_at
    }

    /// Frees the pool's buffers that waited unused through the interval now ended; the
    /// next one begins when the loop next polls, if the pool still holds any.
    pub(crate) fn release_unused_buffers(&mut self) {
        if self.buffers_release_at.is_some_and(|at| self.now >= at) {
            let freed = self.buffers.release_unused();
            log::trace!("buffer pool: freed {freed} bytes unused for an interval");
            self.buffers_release_at = None;
        }
    }

    /// Fires the timers due now: the clock is read again if a call ran since it was last
    /// read, so a timer that fell due during the turn's work fires at its end, before the
    /// next turn's events. (That read usually also ends the turn: see `Reactor::turn`.)
    pub(crate) fn fire_timers(&mut self) {
        self.fresh_clock();
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
    /// with `Core::drop_entry`; the groups it created end with it.
    pub(crate) fn remove(&mut self, key: usize) -> Option<Box<dyn Erased>> {
        let slot = self.slots.remove(key);
        if slot.tag & OWNER_BIT != 0 {
            for index in self.owned_groups.remove(&slot.serial()).unwrap_or_default() {
                self.groups[usize::from(index)] = None;
                self.free_groups.push(index);
            }
        }
        (!slot.entry.is_taken()).then_some(slot.entry)
    }

    /// A new group owned by `owner` (the entry being called), ended when `owner` is removed.
    pub(crate) fn new_group(&mut self, owner: EntryId) -> Option<RawGroup> {
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
        let created = next_serial();
        self.groups[usize::from(index)] = Some(created);
        self.owned_groups
            .entry(owner.serial)
            .or_default()
            .push(index);
        Some(RawGroup { index, created })
    }

    fn group_is_live(&self, group: RawGroup) -> bool {
        self.groups.get(usize::from(group.index)) == Some(&Some(group.created))
    }

    pub(crate) fn group_members(&self, group: RawGroup) -> Vec<EntryId> {
        if !self.group_is_live(group) {
            return Vec::new();
        }
        self.ids_where(|slot| slot.is_in(group))
    }

    pub(crate) fn begin_shutdown(&mut self, grace: Duration) {
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
        // The grace counts from now, not from before the callbacks ahead of it in the turn.
        self.fresh_clock();
        self.phase = Phase::Draining(deadline_after(self.now, grace));
        for id in self.live_ids() {
            self.notify_shutdown(id);
        }
        self.advance_shutdown();
    }

    /// Tells an entry the reactor is draining (entries spawned while it drains hear it too).
    pub(crate) fn notify_shutdown(&mut self, id: EntryId) {
        if let Phase::Draining(deadline) = self.phase {
            self.dispatch(id, |e, cx| e.on_shutdown(cx, Some(deadline)));
        }
    }

    pub(crate) fn advance_shutdown(&mut self) {
        match self.phase {
            Phase::Draining(deadline) if self.slots.is_empty() || self.now >= deadline => {
                self.force_stop()
            }
            _ => {}
        }
    }

    /// Ends every entry now. Entries may spawn others while they end (a client's redial);
    /// those end too, so the loop repeats until the slab is empty.
    pub(crate) fn force_stop(&mut self) {
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
pub(crate) fn deadline_after(now: Instant, delay: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    now.checked_add(delay.min(CENTURY))
        .unwrap_or_else(|| now + CENTURY)
}
