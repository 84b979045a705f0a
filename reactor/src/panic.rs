//! What happens when user code panics on the reactor's thread.

#[cfg(doc)]
use crate::{Entry, LoopMetrics, Reactor, ReactorBuilder, ReactorHandle};

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

/// What a reactor does when an entry's call (readiness, a timer, a command, start,
/// shutdown, [`Entry::on_panic`] itself), the drop of an entry, a job posted with
/// [`ReactorHandle::execute`], or the drop of a command or job the reactor discards (one
/// for an entry that has ended, or left queued when the reactor stops) panics. Set it
/// with [`ReactorBuilder::panic_policy`] or [`Reactor::set_panic_policy`].
///
/// Catching costs nothing while nothing panics (no allocation, no syscall); a panic that
/// escapes with `panic = "abort"` in the build profile aborts the process whatever the
/// policy, since there is then nothing to catch.
///
/// ```
/// use getty_reactor::{PanicPolicy, Reactor};
///
/// // A service that prefers to crash (and be restarted) over running on after a bug:
/// let reactor = Reactor::builder().panic_policy(PanicPolicy::Abort).build().unwrap();
/// assert_eq!(reactor.panic_policy(), PanicPolicy::Abort);
/// assert_eq!(PanicPolicy::default(), PanicPolicy::Isolate);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PanicPolicy {
    /// The default, as netty routes a handler's exception to `exceptionCaught` and closes
    /// that channel, and a tokio runtime outlives a task that panics: the panic is caught
    /// at the call, logged at error level and counted ([`LoopMetrics::panics`]); the
    /// entry that panicked hears [`Entry::on_panic`] and is removed; every other entry,
    /// timer and queued command carries on. A panicking job is logged and dropped (a
    /// [`ReactorHandle::query`] waiting on it fails).
    #[default]
    Isolate,
    /// Logs the panic at error level, then aborts the process (`std::process::abort`):
    /// no entry runs again, and no `on_close` or destructor runs after the bug.
    Abort,
}

/// The message of a panic payload (`panic!` makes a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a panic with a payload that is not a string"
    }
}

/// Disposes of a caught panic's payload. Its destructor is user code too and could panic
/// in turn, so it is dropped under `catch_unwind`, and a payload of *that* panic is leaked.
pub(crate) fn forget_payload(payload: Box<dyn Any + Send>) {
    // AssertUnwindSafe: nothing is observed after the drop.
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}
