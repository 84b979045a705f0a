//! Typed addresses of entries.

use std::any::Any;
use std::fmt;

use crate::entry::Queued;
use crate::EntryId;

/// The address of an entry that takes commands of type `C`: what
/// [`spawn`](crate::Spawner::spawn) returns, and what [`Spawner::send`](crate::Spawner::send)
/// and [`ReactorHandle::send`](crate::ReactorHandle::send) take, so that a command the
/// entry does not accept is a compile error rather than a silent drop.
///
/// It is small and `Copy` (an [`EntryId`] and a function pointer), `Send` whatever `C` is,
/// and harmless once its entry has ended: a command sent then is dropped, and an id is
/// never reused, so it never reaches a newer entry.
///
/// A `Recipient<C>` may also name an entry whose own command type is wider, one that `C`
/// converts into ([`Context::recipient_as`](crate::Context::recipient_as)): a client hands
/// its sessions an address for the few notes they send it.
///
/// ```
/// use getty_reactor::{Context, Entry, Ready, Reactor, Status};
///
/// enum Counter { Add(u32), Stop }
/// struct Total(u32);
/// impl Entry for Total {
///     type Command = Counter;
///     fn on_start(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
///     fn on_command(&mut self, cx: &mut Context<'_>, command: Counter) -> Status {
///         match command {
///             Counter::Add(n) => self.0 += n,
///             Counter::Stop => {
///                 assert_eq!(self.0, 5);
///                 cx.handle().shutdown();
///                 return Status::Done;
///             }
///         }
///         Status::Continue
///     }
/// }
///
/// let mut reactor = Reactor::new().unwrap();
/// let total = reactor.spawn(Total(0)); // a Recipient<Counter>
/// let handle = reactor.handle();
/// std::thread::spawn(move || {
///     handle.send(total, Counter::Add(2)).unwrap();
///     handle.send(total, Counter::Add(3)).unwrap();
///     handle.send(total, Counter::Stop).unwrap();
/// });
/// reactor.run().unwrap();
/// ```
pub struct Recipient<C> {
    id: EntryId,
    /// Boxes a `C` as the entry's own command type (the same type when the recipient was
    /// made by `spawn`).
    wrap: fn(C) -> Queued,
}

impl<C: Send + 'static> Recipient<C> {
    /// The address of an entry whose command type is `C` itself.
    pub(crate) fn exact(id: EntryId) -> Self {
        Recipient {
            id,
            wrap: box_as::<C, C>,
        }
    }

    /// The address of an entry whose command type `E` is made from a `C`.
    pub(crate) fn converting<E>(id: EntryId) -> Self
    where
        E: From<C> + Send + 'static,
    {
        Recipient {
            id,
            wrap: box_as::<C, E>,
        }
    }

    /// The entry's id (to compare with [`Context::id`](crate::Context::id), or to ask
    /// [`is_alive`](crate::Spawner::is_alive)).
    ///
    /// ```
    /// use getty_reactor::{Context, Entry, NoCommand, Ready, Reactor, Status};
    /// struct Idle;
    /// impl Entry for Idle {
    ///     type Command = NoCommand;
    ///     fn on_start(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    ///     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status { Status::Continue }
    /// }
    /// let mut reactor = Reactor::new().unwrap();
    /// let idle = reactor.spawn(Idle);
    /// let other = reactor.spawn(Idle);
    /// assert_ne!(idle.id(), other.id());
    /// ```
    pub fn id(self) -> EntryId {
        self.id
    }

    /// The command boxed for the queue, as the entry's own command type.
    pub(crate) fn wrap(self, command: C) -> Queued {
        (self.wrap)(command)
    }
}

fn box_as<C, E: From<C> + Send + 'static>(command: C) -> Queued {
    Box::new(E::from(command)) as Box<dyn Any + Send>
}

impl<C> From<Recipient<C>> for EntryId {
    fn from(recipient: Recipient<C>) -> EntryId {
        recipient.id
    }
}

impl<C> Clone for Recipient<C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for Recipient<C> {}

impl<C> PartialEq for Recipient<C> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<C> Eq for Recipient<C> {}

impl<C> fmt::Debug for Recipient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Recipient").field(&self.id).finish()
    }
}
