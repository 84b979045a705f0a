//! Talking to a reactor from other threads: a command queue plus a mio `Waker`.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use crate::entry::Queued;
use crate::{EntryId, Recipient, Spawner};

pub(crate) type Job = Box<dyn FnOnce(&mut Spawner<'_>) + Send>;

/// What another thread asked of the reactor.
pub(crate) enum Remote {
    Execute(Job),
    Deliver(EntryId, Queued),
    Shutdown(Duration),
}

pub(crate) struct Shared {
    waker: mio::Waker,
    queue: Mutex<Queue>,
    /// True while the queue holds commands: the loop reads it every turn and drains the
    /// queue when it is set, whether or not a wake-up arrived for them.
    queued: AtomicBool,
    stopped: AtomicBool,
    /// How a signal stopped the reactor ([`crate::SignalShutdown`], packed; 0 for none).
    #[cfg(unix)]
    signal: std::sync::atomic::AtomicU64,
    /// The thread that built the reactor, the only one that can run it (a `Reactor` is not
    /// `Send`): a `query` from it would wait for itself.
    owner: ThreadId,
    /// Wake-ups to fail on purpose, for the tests of a lost wake-up.
    #[cfg(test)]
    pub(crate) failing_wakes: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Queue {
    remotes: Vec<Remote>,
    /// The last wake-up failed: the next post wakes again, even into a non-empty queue.
    wake_owed: bool,
}

impl Shared {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        Shared {
            waker,
            queue: Mutex::new(Queue::default()),
            queued: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            #[cfg(unix)]
            signal: std::sync::atomic::AtomicU64::new(0),
            owner: std::thread::current().id(),
            #[cfg(test)]
            failing_wakes: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// True when commands are queued (one atomic load: the loop asks every turn).
    pub(crate) fn has_queued(&self) -> bool {
        self.queued.load(Ordering::Acquire)
    }

    /// Swaps the queued commands into `into` (which must be empty), keeping both allocations.
    pub(crate) fn drain_into(&self, into: &mut Vec<Remote>) {
        let mut queue = self.lock();
        std::mem::swap(&mut queue.remotes, into);
        queue.wake_owed = false;
        self.queued.store(false, Ordering::Release);
    }

    fn wake(&self) -> io::Result<()> {
        #[cfg(test)]
        if self
            .failing_wakes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(io::Error::other("a wake-up failed on purpose"));
        }
        self.waker.wake()
    }

    /// Records a signal that shut the reactor down: the first signal's number stays, a
    /// forced stop is added to it.
    #[cfg(unix)]
    pub(crate) fn note_signal(&self, how: crate::SignalShutdown) {
        let first = crate::SignalShutdown::unpack(self.signal.load(Ordering::Acquire));
        let kept = match first {
            Some(first) => {
                crate::SignalShutdown::new(first.signal(), first.forced() || how.forced())
            }
            None => how,
        };
        self.signal.store(kept.pack(), Ordering::Release);
    }

    /// How a signal stopped the reactor, if one did.
    #[cfg(unix)]
    pub(crate) fn signal_shutdown(&self) -> Option<crate::SignalShutdown> {
        crate::SignalShutdown::unpack(self.signal.load(Ordering::Acquire))
    }

    /// True once the reactor has stopped (its `run` returned, or it was dropped).
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Marks the reactor as gone: later posts fail. Returns what was queued, for the
    /// reactor to drop outside the lock (a job's captures may post to this handle as they
    /// drop) and one by one under guard (their destructors are user code and may panic).
    #[must_use = "the queued commands are the caller's to drop"]
    pub(crate) fn mark_stopped(&self) -> Vec<Remote> {
        let mut queue = self.lock();
        self.stopped.store(true, Ordering::Release);
        self.queued.store(false, Ordering::Release);
        std::mem::take(&mut queue.remotes)
    }
}

/// A `Send + Clone` handle to a reactor, for other threads (and for entries that want to stop
/// their own reactor).
///
/// Every call queues a command and wakes the reactor at most once per batch: the first post
/// into an empty queue writes to the waker, later ones ride along. Should a wake-up fail
/// (it is logged), the command stays queued (the call still succeeds), the next post wakes
/// the reactor again, and the loop applies queued commands at every turn whatever woke it.
/// Until then it waits: on an idle loop (no I/O, no timer, no later post) that can be for
/// ever. Calls fail with `ErrorKind::NotConnected` once the reactor's `run` has returned.
///
/// ```
/// use getty_reactor::Reactor;
///
/// let thread = Reactor::start_thread("reactor", |_| Ok(())).unwrap();
/// let handle = thread.handle().clone();
/// handle.execute(|spawner| {
///     // runs on the reactor thread, between two polls
///     assert_eq!(spawner.entry_count(), 0);
/// }).unwrap();
/// handle.shutdown();
/// thread.join().unwrap();
/// assert!(handle.shutdown_graceful(std::time::Duration::ZERO).is_err());
/// ```
#[derive(Clone)]
pub struct ReactorHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ReactorHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        ReactorHandle { shared }
    }

    /// Runs `job` on the reactor thread, where it can spawn entries.
    ///
    /// ```
    /// # let reactor = getty_reactor::Reactor::new().unwrap();
    /// reactor.handle().execute(|s| { let _ = s.now(); }).unwrap();
    /// ```
    pub fn execute<F>(&self, job: F) -> io::Result<()>
    where
        F: FnOnce(&mut Spawner<'_>) + Send + 'static,
    {
        self.post(Remote::Execute(Box::new(job)))
    }

    /// Runs `job` on the reactor thread and waits for its answer: how another thread reads
    /// the reactor's state (metrics, say). Fails with `NotConnected` if the reactor stops
    /// before running it, with `Other` if the job panics, and at once with `Deadlock` on
    /// the reactor's own thread (in a callback, or on the thread that holds the `Reactor`),
    /// which would wait for itself forever, and on a thread running another reactor (in
    /// its loop, or a call into one of its entries): a reactor blocked on another stops
    /// all its sessions meanwhile, and two that ask each other wait for ever (netty refuses
    /// blocking calls in an event loop alike). Use [`execute`](Self::execute) there, and
    /// send the answer back with another. A thread that holds a reactor it has not run
    /// yet may ask, but the answer waits for the asked reactor to run: two threads that
    /// each ask the other's reactor before running their own wait for ever.
    ///
    /// ```
    /// let thread = getty_reactor::Reactor::start_thread("r", |_| Ok(())).unwrap();
    /// let entries = thread.handle().query(|s| s.entry_count()).unwrap();
    /// assert_eq!(entries, 0);
    /// thread.handle().shutdown();
    /// thread.join().unwrap();
    /// ```
    pub fn query<R, F>(&self, job: F) -> io::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Spawner<'_>) -> R + Send + 'static,
    {
        if std::thread::current().id() == self.shared.owner {
            return Err(io::Error::new(
                io::ErrorKind::Deadlock,
                "ReactorHandle::query on the reactor's own thread would wait for itself",
            ));
        }
        if crate::current::in_reactor_loop() {
            return Err(io::Error::new(
                io::ErrorKind::Deadlock,
                "ReactorHandle::query on another reactor's thread would block that reactor",
            ));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.execute(move |s| {
            let _ = tx.send(job(s));
        })?;
        rx.recv().map_err(|_| {
            // The job was dropped unanswered: with the queue when the reactor stopped
            // (marked before the drop), or as its panic unwound.
            if self.is_stopped() {
                io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the reactor stopped before answering",
                )
            } else {
                io::Error::other("the query's job panicked on the reactor thread")
            }
        })
    }

    /// Delivers `command` to the entry `to` (its `on_command`). A command for an entry that
    /// has ended is dropped. Costs one allocation (the command, boxed for the queue) and
    /// at most one wake-up.
    ///
    /// See the [`Recipient`] example.
    pub fn send<C: Send + 'static>(
        &self,
        to: Recipient<C>,
        command: impl Into<C>,
    ) -> io::Result<()> {
        self.post(Remote::Deliver(to.id(), to.wrap(command.into())))
    }

    /// Stops the reactor now: every entry gets `on_shutdown` with no deadline and is removed,
    /// then `run` returns. Calling it on a stopped reactor does nothing.
    ///
    /// ```
    /// # let reactor = getty_reactor::Reactor::new().unwrap();
    /// reactor.handle().shutdown();
    /// ```
    pub fn shutdown(&self) {
        let _ = self.post(Remote::Shutdown(Duration::ZERO));
    }

    /// Stops the reactor, giving entries up to `grace` to finish (sessions flush their
    /// queues). What is left when the grace period ends is shut down at once.
    ///
    /// ```
    /// # let reactor = getty_reactor::Reactor::new().unwrap();
    /// reactor.handle().shutdown_graceful(std::time::Duration::from_secs(1)).unwrap();
    /// ```
    pub fn shutdown_graceful(&self, grace: Duration) -> io::Result<()> {
        self.post(Remote::Shutdown(grace))
    }

    /// True once the reactor's `run` has returned.
    ///
    /// ```
    /// # let reactor = getty_reactor::Reactor::new().unwrap();
    /// assert!(!reactor.handle().is_stopped());
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.shared.is_stopped()
    }

    fn post(&self, remote: Remote) -> io::Result<()> {
        let wake = {
            let mut queue = self.shared.lock();
            // Checked under the lock, so a post cannot slip in after `mark_stopped` cleared it.
            if self.is_stopped() {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the reactor has stopped",
                ));
            }
            queue.remotes.push(remote);
            self.shared.queued.store(true, Ordering::Release);
            let wake = queue.remotes.len() == 1 || queue.wake_owed;
            queue.wake_owed = false;
            wake
        };
        if wake {
            if let Err(e) = self.shared.wake() {
                // The command is queued: the loop applies it at its next turn, and the
                // next post tries the wake-up again.
                log::warn!("waking the reactor failed ({e}); the next post wakes it again");
                self.shared.lock().wake_owed = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;
    use std::time::Duration;

    use crate::{Context, Entry, NoCommand, Reactor, Ready, Status};

    /// The longest any one expected thing may take; it only bounds a failing test.
    const STEP: Duration = Duration::from_secs(15);

    /// Posts a job that reports on `tx` that it ran.
    fn post(handle: &super::ReactorHandle, tx: &mpsc::Sender<u32>, n: u32) {
        let tx = tx.clone();
        handle
            .execute(move |_| {
                let _ = tx.send(n);
            })
            .expect("a post whose wake-up failed is still queued");
    }

    /// One failed wake-up used to leave the queue non-empty for good, so no later post
    /// woke the loop again: now the next post retries the wake-up.
    #[test]
    fn a_failed_wake_up_is_retried_by_the_next_post() {
        let thread = Reactor::start_thread("lost-wake", |_| Ok(())).unwrap();
        let handle = thread.handle().clone();
        // A round trip: the loop is idle (no timers) once it has answered.
        handle.query(|_| ()).unwrap();
        handle.shared.failing_wakes.store(1, Ordering::Release);
        let (tx, rx) = mpsc::channel();
        post(&handle, &tx, 1); // queued, but its wake-up fails
        post(&handle, &tx, 2); // wakes the loop again
        let mut ran = vec![
            rx.recv_timeout(STEP).expect("the jobs ran"),
            rx.recv_timeout(STEP).expect("the jobs ran"),
        ];
        ran.sort_unstable();
        assert_eq!(ran, [1, 2]);
        handle.shutdown();
        thread.join().unwrap();
    }

    /// Two reactors that each ask the other from a job would wait for each other for
    /// ever, and every session on both with them: a query from any live reactor's thread
    /// is refused at once.
    #[test]
    fn a_query_from_another_reactors_thread_is_refused() {
        let a = Reactor::start_thread("query-a", |_| Ok(())).unwrap();
        let b = Reactor::start_thread("query-b", |_| Ok(())).unwrap();
        let (tx, rx) = mpsc::channel();
        for (me, other) in [(a.handle(), b.handle()), (b.handle(), a.handle())] {
            let (tx, other) = (tx.clone(), other.clone());
            me.execute(move |_| {
                let _ = tx.send(other.query(|s| s.entry_count()).map_err(|e| e.kind()));
            })
            .unwrap();
        }
        for _ in 0..2 {
            let answer = rx.recv_timeout(STEP).expect("both reactors answered");
            assert_eq!(answer, Err(std::io::ErrorKind::Deadlock));
        }
        // Off the reactors' threads a query still waits for its answer, and so does one
        // from a thread that holds a reactor it has not run yet.
        assert_eq!(a.handle().query(|s| s.entry_count()).unwrap(), 0);
        let mut unrun = Reactor::new().unwrap();
        unrun.spawn(Idle);
        assert_eq!(a.handle().query(|s| s.entry_count()).unwrap(), 0);
        drop(unrun);
        for thread in [a, b] {
            thread.handle().shutdown();
            thread.join().unwrap();
        }
    }

    /// A reactor built, run and dropped inside a job of another left that thread with no
    /// current reactor (review s35-d): its sessions could no longer make handles or join
    /// groups, and `wake` refused. The outer one is current again, with its pending wakes.
    #[test]
    fn a_reactor_used_inside_a_job_of_another_leaves_it_current() {
        let outer = Reactor::start_thread("outer", |_| Ok(())).unwrap();
        let (tx, rx) = mpsc::channel();
        outer
            .handle()
            .execute(move |_| {
                let mut inner = Reactor::new().unwrap();
                inner.spawn(Idle);
                let spawned = crate::on_reactor_thread() && crate::current::in_reactor_loop();
                inner.handle().shutdown();
                inner.run().unwrap();
                let ran = crate::on_reactor_thread();
                drop(inner);
                let _ = tx.send((spawned, ran, crate::on_reactor_thread()));
            })
            .unwrap();
        assert_eq!(rx.recv_timeout(STEP).unwrap(), (true, true, true));
        // The outer reactor still answers, and its thread still counts as a reactor's.
        let (tx, rx) = mpsc::channel();
        outer
            .handle()
            .execute(move |_| {
                let _ = tx.send(crate::on_reactor_thread());
            })
            .unwrap();
        assert!(rx.recv_timeout(STEP).unwrap());
        outer.handle().shutdown();
        outer.join().unwrap();
    }

    /// Does nothing.
    struct Idle;

    impl Entry for Idle {
        type Command = NoCommand;

        fn on_start(&mut self, _: &mut Context<'_>) -> Status {
            Status::Continue
        }
        fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
            Status::Continue
        }
    }

    /// Ticks on a 1 ms timer for ever: the loop turns without any wake-up.
    struct Ticker;

    impl Entry for Ticker {
        type Command = NoCommand;

        fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
            cx.set_timer(Duration::from_millis(1), 0);
            Status::Continue
        }
        fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
            Status::Continue
        }
        fn on_timer(&mut self, cx: &mut Context<'_>, _: u64) -> Status {
            cx.set_timer(Duration::from_millis(1), 0);
            Status::Continue
        }
    }

    /// A command whose wake-up was lost is applied at the loop's next turn, whatever woke
    /// it (here a timer): the queue used to be read only on the waker's event.
    #[test]
    fn queued_commands_are_applied_at_the_next_turn_without_a_wake_up() {
        let thread = Reactor::start_thread("lost-wake-timer", |r| {
            r.spawn(Ticker);
            Ok(())
        })
        .unwrap();
        let handle = thread.handle().clone();
        handle.query(|_| ()).unwrap();
        handle.shared.failing_wakes.store(1, Ordering::Release);
        let (tx, rx) = mpsc::channel();
        post(&handle, &tx, 1); // its wake-up fails; no other post follows
        assert_eq!(rx.recv_timeout(STEP).expect("the job ran"), 1);
        handle.shutdown();
        thread.join().unwrap();
    }
}
