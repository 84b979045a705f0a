//! Entries: the state machines a reactor drives, and the ids that name them.

#[cfg(doc)]
use crate::PanicPolicy;

use std::any::{Any, TypeId};
use std::time::Instant;

use mio::Token;

use crate::{Context, Ready, Status};

/// Names one entry for life: its slab key (the mio token) plus a serial number that no other
/// entry of any reactor in the process gets, so a stale id (a timer or command aimed at an
/// entry that has ended) can never reach a newer entry that got the same slab key, nor an
/// id sent through another reactor's handle an entry of that reactor.
///
/// ```
/// let id = getty_reactor::EntryId::new(3, 42);
/// assert_eq!(id.token(), mio::Token(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryId {
    pub(crate) key: usize,
    pub(crate) serial: u64,
}

impl EntryId {
    /// An id from its parts; useful in tests. Real ids come from [`Context::id`] and
    /// [`Recipient::id`](crate::Recipient::id).
    ///
    /// ```
    /// let id = getty_reactor::EntryId::new(0, 7);
    /// assert_eq!(id.serial(), 7);
    /// ```
    pub fn new(key: usize, serial: u64) -> Self {
        EntryId { key, serial }
    }

    /// The mio token the entry registers its sources with.
    ///
    /// ```
    /// assert_eq!(getty_reactor::EntryId::new(5, 1).token().0, 5);
    /// ```
    pub fn token(self) -> Token {
        Token(self.key)
    }

    /// The never-reused serial number.
    ///
    /// ```
    /// assert_eq!(getty_reactor::EntryId::new(5, 1).serial(), 1);
    /// ```
    pub fn serial(self) -> u64 {
        self.serial
    }
}

/// A state machine driven by the reactor: a listener, a connection, a dialer.
///
/// Every method returns whether the entry stays. Methods are never called re-entrantly, and
/// never after one of them returned [`Status::Done`].
pub trait Entry: 'static {
    /// What other entries and threads may send this entry (an enum of its commands,
    /// usually), through the [`Recipient`](crate::Recipient) that
    /// [`spawn`](crate::Spawner::spawn) returns. An entry nobody sends anything uses
    /// [`NoCommand`]. Sending anything else does not compile:
    ///
    /// ```compile_fail
    /// use getty_reactor::{Context, Entry, NoCommand, Ready, Reactor, Status};
    /// struct Deaf;
    /// impl Entry for Deaf {
    ///     type Command = NoCommand;
    ///     fn on_start(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    ///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
    /// }
    /// let mut reactor = Reactor::new().unwrap();
    /// let deaf = reactor.spawn(Deaf);
    /// reactor.handle().send(deaf, "hello").unwrap(); // a &str is not a NoCommand
    /// ```
    type Command: Send + 'static;

    /// Called once, right after the entry was spawned: register sources with
    /// `cx.registry()` under `cx.token()` and arm the first timers here.
    fn on_start(&mut self, cx: &mut Context<'_>) -> Status;

    /// A registered source became ready (or the entry asked to be rescheduled).
    fn on_ready(&mut self, cx: &mut Context<'_>, ready: Ready) -> Status;

    /// A timer armed with `tag` fired.
    fn on_timer(&mut self, cx: &mut Context<'_>, tag: u64) -> Status {
        let _ = (cx, tag);
        Status::Continue
    }

    /// Another entry or thread sent a command. The default drops it: only right for an
    /// entry whose `Command` is [`NoCommand`].
    fn on_command(&mut self, cx: &mut Context<'_>, command: Self::Command) -> Status {
        let _ = (cx, command);
        Status::Continue
    }

    /// Code on this reactor's thread called [`wake`](crate::wake) for this entry: state it
    /// shares with that code (an inbox, say) has work for it. Called right after the call
    /// (or job) that woke it returns, in the same turn, once per `wake`. The default does
    /// nothing.
    fn on_wake(&mut self, cx: &mut Context<'_>) -> Status {
        let _ = cx;
        Status::Continue
    }

    /// The reactor is shutting down. With `Some(deadline)` the entry may finish its work
    /// (flush, say goodbye) and return [`Status::Continue`] until it is done; with `None`
    /// it must end now, and is removed whatever it returns.
    fn on_shutdown(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        let _ = (cx, deadline);
        Status::Done
    }

    /// One of this entry's calls panicked (`message` is the panic's message), and the
    /// reactor's [`PanicPolicy`] is [`Isolate`](PanicPolicy::Isolate). The entry is removed
    /// right after this returns, whatever it does: this is its chance to tell whoever must
    /// hear that it ended (a session's handler: `on_error`, then `on_close`; a client it
    /// belongs to) and to let go of what dropping it would not (close a socket with a
    /// reset, say).
    ///
    /// The entry's state may be half-updated (the panic cut a call short): do as little as
    /// possible, and call nothing that the panic may have left inconsistent. A panic here
    /// is caught too; the entry is then dropped without another call. The default does
    /// nothing: the entry is dropped, which closes its sources.
    ///
    /// ```
    /// use getty_reactor::{Context, Entry, Ready, Reactor, Status};
    ///
    /// struct Fragile;
    /// impl Entry for Fragile {
    ///     type Command = getty_reactor::NoCommand;
    ///     fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
    ///         cx.set_timer(std::time::Duration::ZERO, 0);
    ///         Status::Continue
    ///     }
    ///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
    ///     fn on_timer(&mut self, _: &mut Context<'_>, _: u64) -> Status {
    ///         panic!("a bug in one entry");
    ///     }
    ///     fn on_panic(&mut self, cx: &mut Context<'_>, message: &str) {
    ///         assert_eq!(message, "a bug in one entry");
    ///         cx.handle().shutdown(); // only to end this example
    ///     }
    /// }
    ///
    /// # let quiet = std::panic::take_hook();
    /// # std::panic::set_hook(Box::new(|_| {}));
    /// let mut reactor = Reactor::new().unwrap();
    /// reactor.spawn(Fragile);
    /// reactor.run().unwrap(); // the panic ended the entry, not the reactor
    /// # std::panic::set_hook(quiet);
    /// ```
    fn on_panic(&mut self, cx: &mut Context<'_>, message: &str) {
        let _ = (cx, message);
    }
}

/// A boxed entry is an entry: so one variable or collection can hold entries of different
/// types that take the same commands (`Box<dyn Entry<Command = C>>`), at the cost of a
/// second allocation when spawned.
///
/// ```
/// use getty_reactor::{Context, Entry, NoCommand, Ready, Reactor, Status};
/// struct Quick;
/// impl Entry for Quick {
///     type Command = NoCommand;
///     fn on_start(&mut self, _: &mut Context<'_>) -> Status { Status::Done }
///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Done }
/// }
/// struct Slow;
/// impl Entry for Slow {
///     type Command = NoCommand;
///     fn on_start(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
/// }
/// let mut reactor = Reactor::new().unwrap();
/// let entries: Vec<Box<dyn Entry<Command = NoCommand>>> = vec![Box::new(Quick), Box::new(Slow)];
/// for entry in entries {
///     reactor.spawn(entry);
/// }
/// assert_eq!(reactor.entry_count(), 1); // Quick ended in its on_start
/// ```
impl<E: Entry + ?Sized> Entry for Box<E> {
    type Command = E::Command;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        (**self).on_start(cx)
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, ready: Ready) -> Status {
        (**self).on_ready(cx, ready)
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, tag: u64) -> Status {
        (**self).on_timer(cx, tag)
    }

    fn on_command(&mut self, cx: &mut Context<'_>, command: E::Command) -> Status {
        (**self).on_command(cx, command)
    }

    fn on_wake(&mut self, cx: &mut Context<'_>) -> Status {
        (**self).on_wake(cx)
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        (**self).on_shutdown(cx, deadline)
    }

    fn on_panic(&mut self, cx: &mut Context<'_>, message: &str) {
        (**self).on_panic(cx, message)
    }
}

/// The command type of an entry that takes none: it has no values, so nothing can be sent
/// to such an entry (and its `on_command` is never called).
///
/// ```
/// use getty_reactor::{Context, Entry, NoCommand, Ready, Status};
/// struct Listener;
/// impl Entry for Listener {
///     type Command = NoCommand;
///     fn on_start(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
/// }
/// ```
pub type NoCommand = std::convert::Infallible;

/// A command on its way through the reactor's queues, its type erased so that one queue
/// holds commands for every kind of entry. Boxed once, when it is sent (as before typed
/// commands), and unboxed by the one entry type it was made for (see [`Erased`]).
pub(crate) type Queued = Box<dyn Any + Send>;

/// An [`Entry`] of any type, as the slab holds it: the one place that turns a queued
/// command back into the entry's own `Command` type.
pub(crate) trait Erased {
    fn on_start(&mut self, cx: &mut Context<'_>) -> Status;
    fn on_ready(&mut self, cx: &mut Context<'_>, ready: Ready) -> Status;
    fn on_timer(&mut self, cx: &mut Context<'_>, tag: u64) -> Status;
    fn on_queued(&mut self, cx: &mut Context<'_>, command: Queued) -> Status;
    fn on_wake(&mut self, cx: &mut Context<'_>) -> Status;
    fn on_shutdown(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Status;
    fn on_panic(&mut self, cx: &mut Context<'_>, message: &str);
    /// The `TypeId` of the entry's `Command`, checked when an entry asks for its own
    /// [`Recipient`](crate::Recipient).
    fn command_type(&self) -> TypeId;
    /// True for [`Taken`], which stands in a slot while its entry is out being called.
    fn is_taken(&self) -> bool {
        false
    }
}

/// What a slot holds while its entry is out being called: zero-sized, so boxing it
/// allocates nothing. The core never calls it.
pub(crate) struct Taken;

impl Taken {
    pub(crate) fn boxed() -> Box<dyn Erased> {
        Box::new(Taken)
    }
}

impl Erased for Taken {
    fn on_start(&mut self, _: &mut Context<'_>) -> Status {
        unreachable!("a taken slot is never called")
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        unreachable!("a taken slot is never called")
    }
    fn on_timer(&mut self, _: &mut Context<'_>, _: u64) -> Status {
        unreachable!("a taken slot is never called")
    }
    fn on_queued(&mut self, _: &mut Context<'_>, _: Queued) -> Status {
        unreachable!("a taken slot is never called")
    }
    fn on_wake(&mut self, _: &mut Context<'_>) -> Status {
        unreachable!("a taken slot is never called")
    }
    fn on_shutdown(&mut self, _: &mut Context<'_>, _: Option<Instant>) -> Status {
        unreachable!("a taken slot is never called")
    }
    fn on_panic(&mut self, _: &mut Context<'_>, _: &str) {
        unreachable!("a taken slot is never called")
    }
    fn command_type(&self) -> TypeId {
        TypeId::of::<Taken>()
    }
    fn is_taken(&self) -> bool {
        true
    }
}

impl<E: Entry> Erased for E {
    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        Entry::on_start(self, cx)
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, ready: Ready) -> Status {
        Entry::on_ready(self, cx, ready)
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, tag: u64) -> Status {
        Entry::on_timer(self, cx, tag)
    }

    fn on_queued(&mut self, cx: &mut Context<'_>, command: Queued) -> Status {
        // This cannot fail: a command is queued only through a `Recipient<C>`, which
        // boxes an `E::Command` for the entry it names (`spawn` makes it from `E` itself,
        // `Context::recipient` checks the type), and an id is never reused, so the
        // entry at that id is of type `E`. Checked anyway, as a bug must not go unseen.
        match command.downcast::<E::Command>() {
            Ok(command) => Entry::on_command(self, cx, *command),
            Err(_) => {
                debug_assert!(false, "a command of another type reached {}", cx.id().key);
                log::error!(
                    "entry {:?} got a command that is not its {}: dropped (a bug)",
                    cx.id(),
                    std::any::type_name::<E::Command>()
                );
                Status::Continue
            }
        }
    }

    fn on_wake(&mut self, cx: &mut Context<'_>) -> Status {
        Entry::on_wake(self, cx)
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        Entry::on_shutdown(self, cx, deadline)
    }

    fn on_panic(&mut self, cx: &mut Context<'_>, message: &str) {
        Entry::on_panic(self, cx, message)
    }

    fn command_type(&self) -> TypeId {
        TypeId::of::<E::Command>()
    }
}
