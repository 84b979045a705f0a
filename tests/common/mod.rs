//! Shared helpers for the integration tests: reactors on their own threads that are always
//! stopped, handlers that report what happens to the test thread, blocking loopback clients
//! with timeouts, and a watchdog so that no test can hang.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use getty::codec::{Bytes, CodecErrorKind, Decoder, Encoder};
use getty::reactor::{Entry, ReactorThread, Recipient, Spawner};
use getty::{Error, Handler, Reactor, ReactorHandle, Session, Transport};

mod children;
mod clients;
mod counting;
mod datagram;
mod events;
#[allow(unused_imports)] // each test binary uses a different subset
pub use {children::*, clients::*, counting::*, datagram::*, events::*};

/// The longest any single expected thing (an event, a read, a reactor stopping) may take.
/// Generous on purpose: it only bounds a failing test, it is never a speed requirement.
pub const STEP: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// Watchdog and test isolation
// ---------------------------------------------------------------------------------------

/// Runs `body` on its own thread and fails the test if it has not finished within `limit`
/// (a hung test fails instead of hanging the suite). A panic in `body` is re-raised here.
pub fn watchdog<F: FnOnce() + Send + 'static>(limit: Duration, body: F) {
    let (done_tx, done_rx) = mpsc::channel();
    let name = std::thread::current().name().unwrap_or("test").to_owned();
    let body_thread = std::thread::Builder::new()
        .name(format!("{name}-body"))
        .spawn(move || {
            body();
            let _ = done_tx.send(());
        })
        .expect("spawn the test body");
    match done_rx.recv_timeout(limit) {
        Ok(()) => body_thread.join().expect("body finished"),
        Err(RecvTimeoutError::Disconnected) => {
            // The body panicked; re-raise its panic with its message.
            if let Err(panic) = body_thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("watchdog: the test did not finish within {limit:?}")
        }
    }
}

static GATE: RwLock<()> = RwLock::new(());

/// Taken by the tests with loose timing expectations (cron, idle timeouts): they run
/// alongside each other but never alongside the bulk traffic test, which can starve a
/// 2-core machine for long stretches.
pub fn shared_gate() -> RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(|poison| poison.into_inner())
}

/// Taken by the bulk traffic test.
pub fn exclusive_gate() -> RwLockWriteGuard<'static, ()> {
    GATE.write().unwrap_or_else(|poison| poison.into_inner())
}

// ---------------------------------------------------------------------------------------
// Reactors on threads
// ---------------------------------------------------------------------------------------

/// A reactor on its own thread that is shut down when dropped (so a failing test does not
/// leave it running), and stopped with a deadline by [`Running::stop`].
pub struct Running {
    thread: Option<ReactorThread>,
    handle: ReactorHandle,
}

impl Running {
    /// Starts a reactor thread that spawns `entry` (a server or client) and returns its
    /// address.
    pub fn spawn<E: Entry + Send>(name: &str, entry: E) -> (Running, Recipient<E::Command>) {
        let (id_tx, id_rx) = mpsc::channel();
        let thread = Reactor::start_thread(name, move |reactor| {
            let id = reactor.spawn(entry);
            id_tx.send(id).map_err(io::Error::other)
        })
        .expect("start the reactor thread");
        let id = id_rx.recv_timeout(STEP).expect("the entry's address");
        let handle = thread.handle().clone();
        (
            Running {
                thread: Some(thread),
                handle,
            },
            id,
        )
    }

    /// Starts a reactor thread that runs `entry`.
    pub fn serve<E: Entry + Send>(name: &str, entry: E) -> Running {
        Running::spawn(name, entry).0
    }

    /// Starts the reactor `build` makes (a pool or policy of its own) on a thread of its
    /// own, running `entry`.
    pub fn serve_with<E, B>(name: &str, entry: E, build: B) -> Running
    where
        E: Entry + Send,
        B: FnOnce() -> io::Result<Reactor> + Send + 'static,
    {
        let thread = Reactor::start_thread(name, move |reactor| {
            *reactor = build()?;
            reactor.spawn(entry);
            Ok(())
        })
        .expect("start the reactor thread");
        let handle = thread.handle().clone();
        Running {
            thread: Some(thread),
            handle,
        }
    }

    pub fn handle(&self) -> &ReactorHandle {
        &self.handle
    }

    /// Runs `job` on the reactor thread and waits for its result. Doubles as a barrier:
    /// everything the reactor was doing before the job has finished when this returns.
    pub fn run_on<T, F>(&self, job: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Spawner<'_>) -> T + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.handle
            .execute(move |spawner| {
                let _ = tx.send(job(spawner));
            })
            .expect("the reactor is running");
        rx.recv_timeout(STEP)
            .expect("the reactor ran the job in time")
    }

    /// Runs `post` while the reactor thread is held busy (in a job that waits), so that
    /// nothing posted meanwhile is applied until it returns: what a writer far ahead of a
    /// busy reactor sends all reaches the session at once.
    pub fn while_busy<T>(&self, post: impl FnOnce() -> T) -> T {
        let (release_tx, release) = mpsc::channel::<()>();
        let (busy_tx, busy) = mpsc::channel();
        self.handle
            .execute(move |_| {
                let _ = busy_tx.send(());
                let _ = release.recv_timeout(STEP);
            })
            .expect("the reactor is running");
        busy.recv_timeout(STEP).expect("the reactor took the job");
        let posted = post();
        let _ = release_tx.send(());
        posted
    }

    /// Entries alive on the reactor.
    pub fn entry_count(&self) -> usize {
        self.run_on(|s| s.entry_count())
    }

    /// Waits (at most `STEP`) until no entry is left on the reactor, as when a client gave
    /// up or was closed; past that, fails with `failure`.
    pub fn wait_until_empty(&self, failure: &str) {
        let deadline = Instant::now() + STEP;
        while self.entry_count() > 0 {
            assert!(Instant::now() < deadline, "{failure}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Shuts the reactor down now and waits (with a deadline) for its thread to end.
    pub fn stop(mut self) {
        self.handle.shutdown();
        join_within(self.thread.take().expect("running"), STEP);
    }

    /// Waits (with a deadline) for the reactor's thread to end, after a shutdown was asked
    /// for through its handle.
    pub fn join(mut self, limit: Duration) {
        join_within(self.thread.take().expect("running"), limit);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // Only reached when a test failed part-way: stop the reactor, do not wait.
            self.handle.shutdown();
        }
    }
}

fn join_within(thread: ReactorThread, limit: Duration) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(thread.join().map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the reactor failed: {e}"),
        Err(_) => panic!("the reactor did not stop within {limit:?}"),
    }
}
