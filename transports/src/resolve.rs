//! How clients resolve a host name again before a redial, off the reactor: one small
//! resolver shared by the whole process, and the per-client bookkeeping around it.
//!
//! **The shared resolver.** Lookups run on at most [`MAX_THREADS`] threads named
//! `getty-resolver`, started when a lookup finds none idle and ending after [`IDLE`] without
//! work: a process with no client that resolves has none. A lookup of a name already in
//! flight is not started again: its client waits for the same answer (a thousand clients of
//! one name make one `getaddrinfo` per round, not a thousand). Answers reach the clients as
//! reactor commands ([`Resolved`]). A resolver that panics is answered with an error, and
//! the panic is reported on the reactor of the first client waiting (logged, counted in
//! `LoopMetrics::panics`, under the reactor's `PanicPolicy`). A resolver that never returns
//! holds one thread, never a client: see below.
//!
//! **A client's lookup** ([`Lookup`]) has a deadline, a reactor timer: when it passes, the
//! client dials the addresses it has, and an answer that comes later is used for the next
//! round (which then dials it at once, without resolving again). A DNS outage slows no
//! redial by more than the deadline, and addresses that still answer keep being dialled.

use std::any::{Any, TypeId};
use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use getty_reactor::{Context, ReactorHandle, Recipient, TimerId};

/// At most this many lookups run at once, process-wide.
pub(crate) const MAX_THREADS: usize = 4;

/// A resolver thread with nothing to do for this long ends.
pub(crate) const IDLE: Duration = Duration::from_secs(10);

/// The tag of a client's lookup deadline timer (its redial timer has tag 0).
pub(crate) const DEADLINE_TAG: u64 = 1;

/// What resolves a client's target again: a host name, or the caller's own resolver.
pub(crate) struct Resolver<A> {
    /// Lookups with the same key are merged while one is in flight.
    key: Key,
    resolve: Arc<dyn Fn() -> io::Result<Vec<A>> + Send + Sync>,
}

impl<A> Clone for Resolver<A> {
    fn clone(&self) -> Self {
        Resolver {
            key: self.key.clone(),
            resolve: Arc::clone(&self.resolve),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// A host name and port, whoever resolves it.
    Name(String, u16),
    /// A caller's resolver, by identity (clones of one `DialTarget` share it).
    Custom(usize),
}

impl<A> Resolver<A> {
    /// Resolves `host` and `port` with `resolve`; lookups of the same name are merged.
    pub(crate) fn name(
        host: &str,
        port: u16,
        resolve: impl Fn() -> io::Result<Vec<A>> + Send + Sync + 'static,
    ) -> Self {
        Resolver {
            key: Key::Name(host.to_string(), port),
            resolve: Arc::new(resolve),
        }
    }

    /// The caller's own resolver; lookups through the same one are merged.
    pub(crate) fn custom(resolve: Arc<dyn Fn() -> io::Result<Vec<A>> + Send + Sync>) -> Self {
        let key = Key::Custom(Arc::as_ptr(&resolve) as *const () as usize);
        Resolver { key, resolve }
    }

    /// Resolves on the calling thread (when a client is built).
    pub(crate) fn resolve_here(&self) -> io::Result<Vec<A>> {
        (self.resolve)()
    }
}

/// An answer from the shared resolver, delivered to a client as a command.
pub(crate) struct Resolved<A> {
    pub(crate) result: io::Result<Vec<A>>,
    /// The resolver panicked: this client reports the panic on its reactor (only the first
    /// client waiting gets it, so one panic is counted once).
    pub(crate) panic: Option<Box<dyn Any + Send>>,
}

// ---------------------------------------------------------------------------------------
// The shared resolver
// ---------------------------------------------------------------------------------------

struct Pool {
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    /// Lookups waiting for a thread, oldest first.
    queue: VecDeque<(TypeId, Key)>,
    /// Lookups queued or running, with the clients waiting for each.
    lookups: HashMap<(TypeId, Key), InFlight>,
    threads: usize,
    idle: usize,
}

struct InFlight {
    /// Taken by the thread that runs it.
    job: Option<Job>,
    waiters: Vec<Waiter>,
}

/// A client waiting for a lookup: its reactor and its `Recipient<Resolved<A>>`, boxed,
/// since the lookups of every address type share one table (keyed by the type).
type Waiter = (ReactorHandle, Box<dyn Any + Send>);

/// Runs a lookup (its panics caught) and returns what answers the waiters.
type Job = Box<dyn FnOnce() -> Answer + Send>;
type Answer = Box<dyn FnOnce(Vec<Waiter>) + Send>;

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(State::default()),
        work: Condvar::new(),
    })
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics under the lock; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Asks the shared resolver to resolve `resolver` for the running entry (a client), which
/// gets a [`Resolved`] command. False if no resolver thread exists or could be started.
fn submit<A: Clone + Send + 'static>(
    cx: &mut Context<'_>,
    resolver: &Resolver<A>,
    client: Recipient<Resolved<A>>,
) -> bool {
    let pool = pool();
    let key = (TypeId::of::<A>(), resolver.key.clone());
    let waiter: Waiter = (cx.handle(), Box::new(client));
    let mut state = pool.lock();
    match state.lookups.entry(key.clone()) {
        Slot::Occupied(mut lookup) => {
            // The same name is being resolved: wait for that answer.
            lookup.get_mut().waiters.push(waiter);
            return true;
        }
        Slot::Vacant(slot) => {
            slot.insert(InFlight {
                job: Some(job(Arc::clone(&resolver.resolve))),
                waiters: vec![waiter],
            });
        }
    }
    state.queue.push_back(key.clone());
    if state.queue.len() > state.idle && state.threads < MAX_THREADS {
        state.threads += 1;
        let started = std::thread::Builder::new()
            .name("getty-resolver".into())
            .spawn(move || work(pool));
        if let Err(e) = started {
            state.threads -= 1;
            if state.threads == 0 {
                log::warn!("no resolver thread could be started: {e}");
                state.queue.retain(|k| *k != key);
                state.lookups.remove(&key);
                return false;
            }
        }
    }
    pool.work.notify_one();
    true
}

fn job<A: Clone + Send + 'static>(
    resolve: Arc<dyn Fn() -> io::Result<Vec<A>> + Send + Sync>,
) -> Job {
    Box::new(move || {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| resolve()));
        Box::new(move |waiters: Vec<Waiter>| answer(outcome, waiters))
    })
}

/// Sends every waiter its copy of the answer. A waiter that is gone (a closed client, a
/// stopped reactor) is skipped.
fn answer<A: Clone + Send + 'static>(
    outcome: Result<io::Result<Vec<A>>, Box<dyn Any + Send>>,
    waiters: Vec<Waiter>,
) {
    let (result, mut panic) = match outcome {
        Ok(result) => (result, None),
        Err(payload) => {
            let message = panic_message(&*payload);
            let error = io::Error::other(format!("the resolver panicked: {message}"));
            (Err(error), Some(payload))
        }
    };
    for (handle, client) in waiters {
        // The table is keyed by `A`'s type, so every waiter here waits for an `A`.
        let Ok(client) = client.downcast::<Recipient<Resolved<A>>>() else {
            continue;
        };
        let result = match &result {
            Ok(addrs) => Ok(addrs.clone()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        let resolved = Resolved {
            result,
            panic: panic.take(),
        };
        if let Err(unsent) = handle.send(*client, resolved) {
            log::debug!("a resolution's client is gone: {unsent}");
        }
    }
    if let Some(payload) = panic {
        // Nobody was waiting any more: say so here. (Dropping a payload can panic too.)
        log::error!("a client's resolver panicked: {}", panic_message(&*payload));
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string payload)".to_string()
    }
}

/// A resolver thread: runs queued lookups until none has come for [`IDLE`].
fn work(pool: &'static Pool) {
    let mut state = pool.lock();
    loop {
        if let Some(key) = state.queue.pop_front() {
            let job = state.lookups.get_mut(&key).and_then(|l| l.job.take());
            drop(state);
            // `job` catches the resolver's panics; this catches any in the plumbing, so the
            // waiters are always answered (or, at worst, released) and the thread lives on.
            let answer = job.and_then(|job| panic::catch_unwind(AssertUnwindSafe(job)).ok());
            state = pool.lock();
            let waiters = state
                .lookups
                .remove(&key)
                .map(|lookup| lookup.waiters)
                .unwrap_or_default();
            drop(state);
            if let Some(answer) = answer {
                let _ = panic::catch_unwind(AssertUnwindSafe(move || answer(waiters)));
            }
            state = pool.lock();
            continue;
        }
        state.idle += 1;
        let (woken, wait) = pool
            .work
            .wait_timeout(state, IDLE)
            .unwrap_or_else(PoisonError::into_inner);
        state = woken;
        state.idle -= 1;
        if wait.timed_out() && state.queue.is_empty() {
            state.threads -= 1;
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// A client's side
// ---------------------------------------------------------------------------------------

/// Where a client's lookup stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No lookup of ours is out.
    Idle,
    /// A lookup is out and the redial waits for it, until the deadline timer.
    Waiting(TimerId),
    /// The deadline passed and the client dialled what it had; the answer is still out.
    Late,
    /// A late answer came: the next round dials it without resolving again.
    Fresh,
}

/// A client's re-resolution: the resolver (if the target has one), the lookup's deadline
/// and what became of the last lookup. Used by the TCP/WebSocket and UDP clients alike.
pub(crate) struct Lookup<A> {
    resolver: Option<Resolver<A>>,
    deadline: Duration,
    phase: Phase,
    /// The running client's address for answers (its command type converts from them).
    client: fn(&Context<'_>) -> Option<Recipient<Resolved<A>>>,
}

/// What a client does after a lookup event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Dial the missing sessions now, with the addresses it has.
    Dial,
    /// Wait: an answer (or the deadline) will come.
    Wait,
}

impl<A: Clone + Send + 'static> Lookup<A> {
    /// `resolver`: `None` when the addresses are fixed. A lookup gets `deadline` before the
    /// client dials without its answer. `E` is the client's command type, which the
    /// answers are delivered as.
    pub(crate) fn new<E>(resolver: Option<Resolver<A>>, deadline: Duration) -> Self
    where
        E: From<Resolved<A>> + Send + 'static,
    {
        Lookup {
            resolver,
            deadline,
            phase: Phase::Idle,
            client: |cx| cx.recipient_as::<Resolved<A>, E>(),
        }
    }

    /// Time to redial (`missing` sessions are wanted): resolve again first, if there is
    /// something to resolve and no answer of ours is out or fresh.
    pub(crate) fn redial(&mut self, cx: &mut Context<'_>, missing: usize, label: &str) -> Next {
        match self.phase {
            Phase::Waiting(_) => return Next::Wait,
            // Still out: dial what we have (the lookup is not asked for twice).
            Phase::Late => return Next::Dial,
            Phase::Fresh => {
                self.phase = Phase::Idle;
                return Next::Dial;
            }
            Phase::Idle => {}
        }
        let Some(resolver) = self.resolver.as_ref().filter(|_| missing > 0) else {
            return Next::Dial;
        };
        let Some(client) = (self.client)(cx) else {
            log::error!("{label}: a lookup from an entry that is not its client (a bug)");
            return Next::Dial;
        };
        if !submit(cx, resolver, client) {
            log::debug!("no resolver thread for {label}: dialling as before");
            return Next::Dial;
        }
        self.phase = Phase::Waiting(cx.set_timer(self.deadline, DEADLINE_TAG));
        Next::Wait
    }

    /// The deadline timer fired: dial what the client has; a late answer is kept for the
    /// next round.
    pub(crate) fn deadline_passed(&mut self, label: &str) -> Next {
        if !matches!(self.phase, Phase::Waiting(_)) {
            return Next::Wait; // a stale timer
        }
        log::debug!(
            "resolving {label} takes over {:?}: dialling the addresses it had",
            self.deadline
        );
        self.phase = Phase::Late;
        Next::Dial
    }

    /// An answer came. Returns the new addresses (if any) and whether to dial now. A panic
    /// in the resolver is reported here, on the client's reactor.
    pub(crate) fn resolved(
        &mut self,
        cx: &mut Context<'_>,
        resolved: Resolved<A>,
        label: &str,
    ) -> (Option<Vec<A>>, Next) {
        if let Some(payload) = resolved.panic {
            let what = format!("the resolver of {label}");
            cx.catch_panic(&what, move |_| panic::resume_unwind(payload));
        }
        let addrs = match resolved.result {
            Ok(addrs) if !addrs.is_empty() => Some(addrs),
            Ok(_) => {
                log::debug!("{label} resolved to nothing: dialling as before");
                None
            }
            Err(e) => {
                log::debug!("resolving {label} failed: {e}; dialling as before");
                None
            }
        };
        let next = match self.phase {
            Phase::Waiting(timer) => {
                cx.cancel_timer(timer);
                self.phase = Phase::Idle;
                Next::Dial
            }
            Phase::Late if addrs.is_some() => {
                self.phase = Phase::Fresh;
                Next::Wait
            }
            Phase::Late | Phase::Idle | Phase::Fresh => {
                if self.phase == Phase::Late {
                    self.phase = Phase::Idle;
                }
                Next::Wait
            }
        };
        (addrs, next)
    }

    /// The client ends: its deadline timer goes (an answer still out is dropped on
    /// delivery).
    pub(crate) fn cancel(&mut self, cx: &mut Context<'_>) {
        if let Phase::Waiting(timer) = self.phase {
            cx.cancel_timer(timer);
        }
        self.phase = Phase::Idle;
    }
}

/// The order of one dial round: the address that last worked first, then the others in
/// their order (so a black-holed first address costs a connect timeout once, not on every
/// reconnect).
pub(crate) fn round_order<A: Clone + PartialEq>(
    addrs: &Arc<[A]>,
    last_good: Option<&A>,
) -> Arc<[A]> {
    match last_good.and_then(|good| addrs.iter().position(|a| a == good)) {
        None | Some(0) => Arc::clone(addrs),
        Some(at) => {
            let mut order = Vec::with_capacity(addrs.len());
            order.push(addrs[at].clone());
            order.extend(addrs[..at].iter().cloned());
            order.extend(addrs[at + 1..].iter().cloned());
            order.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_starts_at_the_address_that_last_worked() {
        let addrs: Arc<[u8]> = vec![1, 2, 3, 4].into();
        assert_eq!(&*round_order(&addrs, None), &[1, 2, 3, 4]);
        assert_eq!(&*round_order(&addrs, Some(&1)), &[1, 2, 3, 4]);
        assert_eq!(&*round_order(&addrs, Some(&3)), &[3, 1, 2, 4]);
        assert_eq!(&*round_order(&addrs, Some(&9)), &[1, 2, 3, 4]);
    }

    #[test]
    fn same_names_share_a_key_and_custom_resolvers_are_told_apart() {
        let a = Resolver::<u8>::name("h", 1, || Ok(vec![1]));
        let b = Resolver::<u8>::name("h", 1, || Ok(vec![2]));
        let c = Resolver::<u8>::name("h", 2, || Ok(vec![1]));
        assert_eq!(a.key, b.key);
        assert_ne!(a.key, c.key);
        let f: Arc<dyn Fn() -> io::Result<Vec<u8>> + Send + Sync> = Arc::new(|| Ok(vec![1]));
        let g: Arc<dyn Fn() -> io::Result<Vec<u8>> + Send + Sync> = Arc::new(|| Ok(vec![1]));
        let (f1, f2, g1) = (
            Resolver::custom(Arc::clone(&f)),
            Resolver::custom(f),
            Resolver::custom(g),
        );
        assert_eq!(f1.key, f2.key);
        assert_ne!(f1.key, g1.key);
        assert_eq!(f1.resolve_here().unwrap(), vec![1]);
    }
}
