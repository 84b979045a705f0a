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
use std::thread::JoinHandle;

use crate::Error;

type Job = Box<dyn FnOnce() + Send>;

struct Inner {
    /// True once shut down. Submitters hold the read lock across their check and send, and
    /// shutdown takes the write lock to set it, so no job is queued behind the stop signal.
    closed: RwLock<bool>,
    queues: Vec<SyncSender<Option<Job>>>,
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
            let (tx, rx) = mpsc::sync_channel::<Option<Job>>(queue_len.max(1));
            let thread = std::thread::Builder::new()
                .name(format!("getty-offload-{index}"))
                .spawn(move || {
                    // `None` is the signal to stop, queued behind the jobs before it.
                    while let Ok(Some(job)) = rx.recv() {
                        // A panicking job must not take the worker (and every session
                        // hashed to it) down with it.
                        if catch_unwind(AssertUnwindSafe(job)).is_err() {
                            log::error!("an offloaded job panicked; the worker carries on");
                        }
                    }
                })?;
            queues.push(tx);
            threads.push(thread);
        }
        Ok(Offload {
            inner: Arc::new(Inner {
                closed: RwLock::new(false),
                queues,
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
        let closed = self.inner.closed.read().unwrap_or_else(|p| p.into_inner());
        if *closed {
            return Err(Error::Closed);
        }
        let queue = &self.inner.queues[(key % self.inner.queues.len() as u64) as usize];
        match queue.try_send(Some(Box::new(job))) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Error::Backpressure),
            Err(TrySendError::Disconnected(_)) => Err(Error::Closed),
        }
    }

    /// Lets the workers finish the jobs already queued, then stops them and waits. Later
    /// submissions fail with [`Error::Closed`]. Safe to call more than once.
    ///
    /// See the [type-level example](Offload).
    pub fn shutdown(&self) {
        *self.inner.closed.write().unwrap_or_else(|p| p.into_inner()) = true;
        let threads =
            std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|p| p.into_inner()));
        if threads.is_empty() {
            return;
        }
        for queue in &self.inner.queues {
            let _ = queue.send(None); // waits for room: the stop goes behind queued jobs
        }
        for thread in threads {
            let _ = thread.join();
        }
    }
}
