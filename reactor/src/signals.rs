//! Stopping on SIGINT and SIGTERM: the reactor's own poll watches signal-hook's self-pipe,
//! so a Ctrl-C starts a graceful shutdown with no thread of its own, and a second one stops
//! the reactor at once.
//!
//! signal-hook's handler does the only async-signal-safe part (a write to the pipe); the
//! reactor reads the pipe between two polls, like any other source, under a token slab keys
//! never reach. Every reactor that watches has a pipe of its own, so all the reactors of a
//! pool hear one signal.
//!
//! signal-hook cannot uninstall its handler: a signal nobody watches any more would be
//! ignored. So while no reactor watches, the default action (ending the process) is
//! emulated, as if no handler had ever been installed.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::core::{Core, Phase};
use crate::{Reactor, ReactorHandle, ReactorPool};

/// The token of the signal pipe; slab keys never reach it.
pub(crate) const SIGNALS: Token = Token(usize::MAX - 1);

/// The signals that stop a reactor.
const STOP_SIGNALS: [i32; 2] = [SIGINT, SIGTERM];

/// How a signal stopped a reactor that [watched for signals](Reactor::shutdown_on_signals).
///
/// ```
/// let reactor = getty_reactor::Reactor::new().unwrap();
/// let handle = reactor.handle();
/// assert_eq!(handle.signal_shutdown(), None); // no signal has stopped it
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalShutdown {
    signal: i32,
    forced: bool,
}

impl SignalShutdown {
    /// The signal's number (`libc::SIGINT`, `libc::SIGTERM`): the first that reached the
    /// reactor.
    ///
    /// See [`Reactor::shutdown_on_signals`] for an example.
    pub fn signal(self) -> i32 {
        self.signal
    }

    /// The signal's name: `"SIGINT"` or `"SIGTERM"`.
    ///
    /// See [`Reactor::shutdown_on_signals`] for an example.
    pub fn name(self) -> &'static str {
        signal_hook::low_level::signal_name(self.signal).unwrap_or("a signal")
    }

    /// True when a later signal cut the graceful shutdown short (the reactor then stopped
    /// at once, as [`ReactorHandle::shutdown`] does), or a signal arrived while the reactor
    /// was already draining for another reason.
    ///
    /// See [`Reactor::shutdown_on_signals`] for an example.
    pub fn forced(self) -> bool {
        self.forced
    }

    /// Packs it into the word the reactor's shared state keeps (0 stands for none).
    pub(crate) fn pack(self) -> u64 {
        const PRESENT: u64 = 1 << 33;
        PRESENT | (u64::from(self.forced) << 32) | u64::from(self.signal as u32)
    }

    pub(crate) fn unpack(word: u64) -> Option<SignalShutdown> {
        (word != 0).then_some(SignalShutdown {
            signal: word as u32 as i32,
            forced: word & (1 << 32) != 0,
        })
    }

    pub(crate) fn new(signal: i32, forced: bool) -> Self {
        SignalShutdown { signal, forced }
    }
}

/// A reactor's watch: the self-pipe, registered in its poll, and the grace a first signal
/// gives.
pub(crate) struct SignalWatch {
    signals: Signals,
    grace: Duration,
}

/// How many reactors of the process watch, and the flag that turns the emulated default
/// action on while none does.
struct Watchers {
    live: usize,
    default_while_idle: Option<Arc<AtomicBool>>,
}

static WATCHERS: Mutex<Watchers> = Mutex::new(Watchers {
    live: 0,
    default_while_idle: None,
});

fn watchers() -> std::sync::MutexGuard<'static, Watchers> {
    WATCHERS.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl SignalWatch {
    fn new(registry: &Registry, grace: Duration) -> io::Result<SignalWatch> {
        // The pipe first: a process out of descriptors fails here, before this watch is
        // counted (a count that `Drop` would never undo would keep the emulated default
        // action off for good).
        let signals = Signals::new(STOP_SIGNALS)?;
        {
            let mut watchers = watchers();
            if watchers.default_while_idle.is_none() {
                // Once per process: from now on signal-hook's handler is installed for good,
                // so the default action is emulated whenever no reactor watches.
                let idle = Arc::new(AtomicBool::new(false));
                for signal in STOP_SIGNALS {
                    signal_hook::flag::register_conditional_default(signal, Arc::clone(&idle))?;
                }
                watchers.default_while_idle = Some(idle);
            }
            watchers.live += 1;
            if let Some(idle) = &watchers.default_while_idle {
                idle.store(false, Ordering::SeqCst);
            }
        }
        // From here on `Drop` undoes the count, whatever fails below.
        let mut watch = SignalWatch { signals, grace };
        registry.register(&mut watch.signals, SIGNALS, Interest::READABLE)?;
        Ok(watch)
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        // `signals` is dropped after this body, which unregisters its action; a signal in
        // between goes to its pipe and is not acted on, as one that came an instant later.
        let mut watchers = watchers();
        watchers.live = watchers.live.saturating_sub(1);
        if watchers.live == 0 {
            if let Some(idle) = &watchers.default_while_idle {
                idle.store(true, Ordering::SeqCst);
            }
        }
    }
}

impl Core {
    /// Starts watching for signals (or changes the grace of the watch there is); says
    /// whether it started a watch.
    fn watch_signals(&mut self, grace: Duration) -> io::Result<bool> {
        if self.phase == Phase::Stopped {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the reactor has stopped",
            ));
        }
        match &mut self.signals {
            Some(watch) => watch.grace = grace,
            None => {
                self.signals = Some(SignalWatch::new(&self.registry, grace)?);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Stops watching for signals; dropping the watch closes its pipe (which leaves the
    /// poll) and uncounts it.
    fn unwatch_signals(&mut self) {
        self.signals = None;
    }

    /// The signal pipe is readable: a first signal starts a graceful shutdown, any later
    /// one (or one that finds the reactor already draining) stops it now.
    pub(crate) fn take_signals(&mut self) {
        let Some(watch) = self.signals.as_mut() else {
            return;
        };
        let grace = watch.grace;
        let arrived: Vec<i32> = watch.signals.pending().collect();
        for signal in arrived {
            let forced = self.phase != Phase::Running;
            let how = SignalShutdown::new(signal, forced);
            self.shared.note_signal(how);
            if forced {
                log::warn!("{}: stopping the reactor now", how.name());
                self.begin_shutdown(Duration::ZERO);
            } else {
                log::info!(
                    "{}: shutting the reactor down gracefully (up to {grace:?}); \
                     another signal stops it at once",
                    how.name()
                );
                self.begin_shutdown(grace);
            }
        }
    }

    /// Stops watching: from now on these signals are someone else's (or end the process).
    pub(crate) fn stop_watching_signals(&mut self) {
        if let Some(mut watch) = self.signals.take() {
            let _ = self.registry.deregister(&mut watch.signals);
        }
    }
}

impl Reactor {
    /// Shuts this reactor down when the process gets SIGINT (Ctrl-C) or SIGTERM: the first
    /// signal starts a graceful shutdown, as
    /// [`ReactorHandle::shutdown_graceful(grace)`](ReactorHandle::shutdown_graceful) does
    /// (sessions flush and close, then `run` returns: sooner, if every entry has ended); a
    /// second one, while it drains, stops it at once, as
    /// [`ReactorHandle::shutdown`] does. Afterwards
    /// [`ReactorHandle::signal_shutdown`] says which signal stopped it and how.
    ///
    /// No thread is started: the reactor's own poll watches the signal (through
    /// signal-hook's self-pipe). Every reactor that calls this hears every such signal, so
    /// call it on each reactor of a pool ([`ReactorPool::shutdown_on_signals`] does). Call
    /// it again to change the grace.
    ///
    /// These signals stop ending the process by themselves while a reactor watches for
    /// them; once none does any more (its `run` has returned, or it was dropped), their
    /// default action (ending the process) is back. An application that handles SIGINT or
    /// SIGTERM itself should not use this as well: signal-hook's handler stays installed,
    /// and emulates the default action whenever no reactor watches.
    ///
    /// ```
    /// use std::time::Duration;
    /// use getty_reactor::Reactor;
    ///
    /// let mut reactor = Reactor::new().unwrap();
    /// reactor.shutdown_on_signals(Duration::from_secs(5)).unwrap();
    /// let handle = reactor.handle();
    /// // A real service spawns its servers here; this example sends itself a Ctrl-C.
    /// signal_hook::low_level::raise(signal_hook::consts::SIGINT).unwrap();
    /// reactor.run().unwrap(); // nothing to drain: returns at once
    /// let how = handle.signal_shutdown().expect("stopped by the signal");
    /// assert_eq!((how.name(), how.forced()), ("SIGINT", false));
    /// ```
    pub fn shutdown_on_signals(&mut self, grace: Duration) -> io::Result<()> {
        self.core.watch_signals(grace).map(drop)
    }
}

impl ReactorHandle {
    /// [`Reactor::shutdown_on_signals`] for a reactor running on another thread: waits
    /// until the reactor has started watching. Fails with `Deadlock` on the reactor's own
    /// thread (use the `Reactor`'s method there, before `run`) or on another reactor's
    /// running thread (as [`query`](ReactorHandle::query) does), and with `NotConnected`
    /// once it has stopped.
    ///
    /// ```
    /// use std::time::Duration;
    /// use getty_reactor::Reactor;
    ///
    /// let thread = Reactor::start_thread("service", |_reactor| Ok(())).unwrap();
    /// thread.handle().shutdown_on_signals(Duration::from_secs(5)).unwrap();
    /// // ... until Ctrl-C; here the example stops it itself:
    /// thread.handle().shutdown();
    /// thread.join().unwrap();
    /// ```
    pub fn shutdown_on_signals(&self, grace: Duration) -> io::Result<()> {
        self.start_watching(grace).map(drop)
    }

    /// [`shutdown_on_signals`](Self::shutdown_on_signals), saying whether the reactor
    /// started a watch (it was not watching yet).
    fn start_watching(&self, grace: Duration) -> io::Result<bool> {
        self.query(move |spawner| spawner.core.watch_signals(grace))?
    }

    /// Which signal stopped the reactor, and whether it stopped at once; `None` while no
    /// signal has reached it (see [`Reactor::shutdown_on_signals`]).
    ///
    /// See [`Reactor::shutdown_on_signals`] for an example.
    pub fn signal_shutdown(&self) -> Option<SignalShutdown> {
        self.shared.signal_shutdown()
    }
}

impl ReactorPool {
    /// Every reactor of the pool shuts down on SIGINT or SIGTERM: gracefully, within
    /// `grace`, on the first signal; at once on a second (see
    /// [`Reactor::shutdown_on_signals`]). [`join`](ReactorPool::join) then returns when all
    /// have stopped.
    ///
    /// Fails if one reactor cannot watch (the process is out of descriptors, or that
    /// reactor has stopped); the reactors this call made watch then stop watching again,
    /// so a signal finds the process as it was (a reactor that was watching before the call
    /// keeps its watch, with the new grace).
    ///
    /// ```
    /// use std::time::Duration;
    /// use getty_reactor::ReactorPool;
    ///
    /// let pool = ReactorPool::start(2, |_, _| Ok(())).unwrap();
    /// pool.shutdown_on_signals(Duration::from_secs(5)).unwrap();
    /// let handles = pool.handles();
    /// signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
    /// pool.join().unwrap(); // both reactors heard it
    /// assert!(handles.iter().all(|h| h.signal_shutdown().is_some_and(|s| !s.forced())));
    /// ```
    pub fn shutdown_on_signals(&self, grace: Duration) -> io::Result<()> {
        let mut started = Vec::new();
        for handle in self.handles() {
            match handle.start_watching(grace) {
                Ok(true) => started.push(handle),
                Ok(false) => {}
                Err(e) => {
                    // Half a pool watching would take the first signal and leave the rest
                    // of the process running: undo.
                    for handle in started {
                        let _ = handle.query(|spawner| spawner.core.unwatch_signals());
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}
