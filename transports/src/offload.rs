//! Slow handler work off the reactor thread, with per-session order and backpressure.
//!
//! getty's task pool spawned a goroutine whenever its queues were full: no order, no bound.
//! Here a fixed set of workers each own a bounded queue, and a session's jobs always go to
//! the same worker, so they run in the order they were submitted. A full queue refuses the
//! job ([`Error::Backpressure`]); the handler decides what to do (stop reading, answer
//! "busy", drop). Results go back through a [`SessionHandle`](crate::SessionHandle).

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::{JoinHandle, ThreadId};

use crate::Error;

type Job = Box<dyn FnOnce() + Send>;

struct Inner {
    /// The workers' queues, `None` once shut down. Submitters hold the read lock across
    /// their check and send; shutdown takes the write lock and drops the senders. A worker
    /// then runs what its queue holds and stops (its `recv` fails once the queue is empty
    /// and no sender is left): stopping never waits for room in a queue.
    queues: RwLock<Option<Vec<SyncSender<Job>>>>,
    /// How many workers (and queues) there are.
    workers: usize,
    /// The workers' threads, to tell a call from one of this pool's own jobs.
    worker_ids: Vec<ThreadId>,
    /// Joined by the first `shutdown` that may wait; held while it waits, so a concurrent
    /// one waits too.
    threads: Mutex<Vec<JoinHandle<()>>>,
}
/// A bounded worker pool for slow handler work; cheap to clone (handlers on every reactor
/// can hold one).
///
/// ```
/// use std::sync::mpsc;
/// use getty_transports::Offload;
///
/// let pool = Offload::new(2, 64).unwrap();
/// let (tx, rx) = mpsc::channel();
/// for i in 0..5 {
///     let tx = tx.clone();
///     // Same key (a session id): same worker, so the jobs run in order.
///     pool.submit(42, move || tx.send(i).unwrap()).unwrap();
/// }
/// let got: Vec<i32> = (0..5).map(|_| rx.recv().unwrap()).collect();
/// assert_eq!(got, [0, 1, 2, 3, 4]);
/// pool.shutdown();
/// ```
#[derive(Clone)]
pub struct Offload {
    inner: Arc<Inner>,
}

impl Offload {
    /// Starts `workers` threads (at least one), each with a queue of `queue_len` jobs.
    ///
    /// See the [type-level example](Offload).
    pub fn new(workers: usize, queue_len: usize) -> io::Result<Offload> {
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for index in 0..workers.max(1) {
            let (tx, rx) = mpsc::sync_channel::<Job>(queue_len.max(1));
            let thread = std::thread::Builder::new()
                .name(format!("getty-offload-{index}"))
                .spawn(move || {
                    // Ends once every sender is gone (shutdown) and the queue is empty.
                    while let Ok(job) = rx.recv() {
                        // A panicking job must not take the worker (and every session
                        // hashed to it) down with it.
                        if let Err(payload) = catch_unwind(AssertUnwindSafe(job)) {
                            log::error!("an offloaded job panicked; the worker carries on");
                            // The payload is user code too: its drop may panic as well.
                            if catch_unwind(AssertUnwindSafe(move || drop(payload))).is_err() {
                                log::error!("dropping an offloaded job's panic panicked");
                            }
                        }
                    }
                })?;
            queues.push(tx);
            threads.push(thread);
        }
        Ok(Offload {
            inner: Arc::new(Inner {
                workers: queues.len(),
                queues: RwLock::new(Some(queues)),
                worker_ids: threads.iter().map(|t| t.thread().id()).collect(),
                threads: Mutex::new(threads),
            }),
        })
    }

    /// Queues `job` on the worker for `key` (use the session id: jobs of one key run in
    /// order). Fails with [`Error::Backpressure`] when that worker's queue is full and with
    /// [`Error::Closed`] after [`shutdown`](Self::shutdown).
    ///
    /// See the [type-level example](Offload).
    pub fn submit(&self, key: u64, job: impl FnOnce() + Send + 'static) -> Result<(), Error> {
        let guard = self.inner.queues.read().unwrap_or_else(|p| p.into_inner());
        let Some(queues) = guard.as_ref() else {
            return Err(Error::Closed);
        };
        let queue = &queues[(key % self.inner.workers as u64) as usize];
        let (refused, error) = match queue.try_send(Box::new(job)) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(job)) => (job, Error::Backpressure),
            Err(TrySendError::Disconnected(job)) => (job, Error::Closed),
        };
        // The refused job is user code, and its drop may submit again or shut the pool
        // down: it runs with the lock released.
        drop(guard);
        drop(refused);
        Err(error)
    }

    /// Stops the pool: later submissions fail with [`Error::Closed`], and the jobs already
    /// queued still run. Then it waits until every worker has finished them, **unless
    /// waiting could deadlock**, where it returns at once and the workers finish on their
    /// own:
    ///
    /// - inside one of this pool's jobs (a worker cannot wait for itself, and the jobs
    ///   queued behind the running one only run after it returns);
    /// - on a live reactor's thread (a handler's `on_message`, a job posted with
    ///   [`ReactorHandle::execute`](getty_reactor::ReactorHandle::execute);
    ///   [`getty_reactor::on_reactor_thread`]): a job may be waiting for that reactor (a [`ReactorHandle::query`](getty_reactor::ReactorHandle::query), a
    ///   [`SessionHandle::wait_writable`](crate::SessionHandle::wait_writable)), and the
    ///   reactor would be waiting for the job.
    ///
    /// So it is safe to call from anywhere, and more than once: a later call from an
    /// ordinary thread waits for the workers a call from a job or a reactor's thread left
    /// running.
    /// Stopping never waits for room in a full queue.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use getty_transports::{Error, Offload};
    ///
    /// let pool = Offload::new(2, 16).unwrap();
    /// let (tx, rx) = mpsc::channel();
    /// let inner = pool.clone();
    /// pool.submit(7, move || {
    ///     // From a job: stops the pool and returns at once (no waiting for itself).
    ///     inner.shutdown();
    ///     tx.send(inner.submit(7, || {}).is_err()).unwrap();
    /// }).unwrap();
    /// assert!(rx.recv().unwrap(), "no job is accepted after shutdown");
    /// // From an ordinary thread: waits until every worker has finished.
    /// pool.shutdown();
    /// assert!(matches!(pool.submit(7, || {}), Err(Error::Closed)));
    /// ```
    pub fn shutdown(&self) {
        let queues = self
            .inner
            .queues
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(queues); // every worker now stops once its queue is empty
        let me = std::thread::current().id();
        if self.inner.worker_ids.contains(&me) {
            log::debug!("offload pool shut down from one of its jobs: not waiting for workers");
            return;
        }
        if getty_reactor::on_reactor_thread() {
            log::debug!("offload pool shut down on a reactor's thread: not waiting for workers");
            return;
        }
        let mut threads = self.inner.threads.lock().unwrap_or_else(|p| p.into_inner());
        for thread in threads.drain(..) {
            if thread.join().is_err() {
                log::error!("an offload worker ended with a panic");
            }
        }
    }
}
