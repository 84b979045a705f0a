//! One reactor per core: N reactor threads started together and stopped together.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::{Reactor, ReactorHandle, ReactorThread};

/// N reactors, each on its own thread. Entries never move between reactors: a session stays
/// on the reactor that accepted it for life, so nothing on the hot path is shared.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use getty_reactor::ReactorPool;
///
/// let started = Arc::new(AtomicUsize::new(0));
/// let counter = started.clone();
/// let pool = ReactorPool::start(2, move |index, _reactor| {
///     assert!(index < 2);
///     counter.fetch_add(1, Ordering::SeqCst);
///     Ok(())
/// }).unwrap();
/// assert_eq!(pool.len(), 2);
/// assert_eq!(started.load(Ordering::SeqCst), 2);
/// pool.shutdown();
/// pool.join().unwrap();
/// ```
pub struct ReactorPool {
    threads: Vec<ReactorThread>,
}

impl ReactorPool {
    /// Starts `n` reactors (at least one). `setup(i, reactor)` runs on reactor `i`'s own
    /// thread before it polls, one reactor after the other, to spawn its first entries. If
    /// one fails, the reactors already started are shut down and the error is returned.
    ///
    /// See the [type-level example](ReactorPool).
    pub fn start<F>(n: usize, setup: F) -> io::Result<ReactorPool>
    where
        F: Fn(usize, &mut Reactor) -> io::Result<()> + Send + Sync + 'static,
    {
        let setup = Arc::new(setup);
        let mut threads: Vec<ReactorThread> = Vec::with_capacity(n.max(1));
        for index in 0..n.max(1) {
            let setup = setup.clone();
            let started =
                Reactor::start_thread(&format!("getty-reactor-{index}"), move |r| setup(index, r));
            match started {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    let pool = ReactorPool { threads };
                    pool.shutdown();
                    let _ = pool.join();
                    return Err(e);
                }
            }
        }
        Ok(ReactorPool { threads })
    }

    /// How many reactors run.
    ///
    /// See the [type-level example](ReactorPool).
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Always false: a pool has at least one reactor.
    ///
    /// See the [type-level example](ReactorPool).
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Handles to the reactors, in order.
    ///
    /// ```
    /// let pool = getty_reactor::ReactorPool::start(2, |_, _| Ok(())).unwrap();
    /// let counts: Vec<usize> = pool
    ///     .handles()
    ///     .iter()
    ///     .map(|h| h.query(|s| s.entry_count()).unwrap())
    ///     .collect();
    /// assert_eq!(counts, [0, 0]);
    /// pool.shutdown();
    /// pool.join().unwrap();
    /// ```
    pub fn handles(&self) -> Vec<ReactorHandle> {
        self.threads.iter().map(|t| t.handle().clone()).collect()
    }

    /// Stops every reactor now (see [`ReactorHandle::shutdown`]).
    ///
    /// See the [type-level example](ReactorPool).
    pub fn shutdown(&self) {
        for thread in &self.threads {
            thread.handle().shutdown();
        }
    }

    /// Stops every reactor, giving their entries up to `grace` to finish.
    ///
    /// ```
    /// let pool = getty_reactor::ReactorPool::start(2, |_, _| Ok(())).unwrap();
    /// pool.shutdown_graceful(std::time::Duration::from_millis(10));
    /// pool.join().unwrap();
    /// ```
    pub fn shutdown_graceful(&self, grace: Duration) {
        for thread in &self.threads {
            let _ = thread.handle().shutdown_graceful(grace);
        }
    }

    /// Waits for every reactor to stop; the first error wins.
    ///
    /// See the [type-level example](ReactorPool).
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for thread in self.threads {
            if let Err(e) = thread.join() {
                result = result.and(Err(e));
            }
        }
        result
    }
}
