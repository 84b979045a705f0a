//! Talking to a reactor from other threads: a command queue plus a mio `Waker`.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Command, EntryId, Spawner};

pub(crate) type Job = Box<dyn FnOnce(&mut Spawner<'_>) + Send>;

/// What another thread asked of the reactor.
pub(crate) enum Remote {
    Execute(Job),
    Deliver(EntryId, Command),
    Shutdown(Duration),
}

pub(crate) struct Shared {
    waker: mio::Waker,
    queue: Mutex<Vec<Remote>>,
    stopped: AtomicBool,
}

impl Shared {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        Shared {
            waker,
            queue: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        }
    }

    /// Swaps the queued commands into `into` (which must be empty), keeping both allocations.
    pub(crate) fn drain_into(&self, into: &mut Vec<Remote>) {
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        std::mem::swap(&mut *queue, into);
    }

    /// Marks the reactor as gone: later posts fail, and queued ones are dropped.
    pub(crate) fn mark_stopped(&self) {
        let dropped = {
            let mut queue = self
                .queue
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            self.stopped.store(true, Ordering::Release);
            std::mem::take(&mut *queue)
        };
        // Dropped outside the lock: a job's captures may post to this handle as they drop.
        drop(dropped);
    }
}

/// A `Send + Clone` handle to a reactor, for other threads (and for entries that want to stop
/// their own reactor).
///
/// Every call queues a command and wakes the reactor at most once per batch: the first post
/// into an empty queue writes to the waker, later ones ride along. Calls fail with
/// `ErrorKind::NotConnected` once the reactor's `run` has returned.
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
    shared: Arc<Shared>,
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
    /// the reactor's state (metrics, say). Fails if the reactor stops before running it.
    /// Never call it from the reactor's own thread: it would wait for itself.
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
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.execute(move |s| {
            let _ = tx.send(job(s));
        })?;
        rx.recv().map_err(|_| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the reactor stopped before answering",
            )
        })
    }

    /// Delivers `command` to the entry `to` (its `on_command`). A command for an entry that
    /// has ended is dropped.
    ///
    /// ```
    /// # let reactor = getty_reactor::Reactor::new().unwrap();
    /// # let id = getty_reactor::EntryId::new(0, 0);
    /// reactor.handle().send(id, Box::new("close")).unwrap();
    /// ```
    pub fn send(&self, to: EntryId, command: Command) -> io::Result<()> {
        self.post(Remote::Deliver(to, command))
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
        self.shared.stopped.load(Ordering::Acquire)
    }

    fn post(&self, remote: Remote) -> io::Result<()> {
        let was_empty = {
            let mut queue = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            // Checked under the lock, so a post cannot slip in after `mark_stopped` cleared it.
            if self.is_stopped() {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the reactor has stopped",
                ));
            }
            queue.push(remote);
            queue.len() == 1
        };
        if was_empty {
            self.shared.waker.wake()?;
        }
        Ok(())
    }
}
