//! What every session holds and does, whatever its transport: the state a stream
//! [`Session`](crate::Session) and a [`DatagramSession`](crate::udp::DatagramSession) share.
//!
//! Each session keeps one [`SessionCore`] and its public methods delegate to it in one
//! line, so that every method keeps its own rustdoc (with an example for its own session
//! type) while the logic lives here once. A `Deref` to the core was the alternative: it
//! would hide the shared methods from the sessions' rustdoc pages (the core is crate
//! private) and blur which type a method belongs to.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use getty_reactor::{Context, ReactorHandle, Recipient};

use crate::commands::OwnerNote;
use crate::{Error, Metrics, SessionOptions};

mod timer;
mod writability;

pub(crate) use timer::{check_read_idle, earliest, idle_deadline, SessionTimer};
use writability::Writability;
pub(crate) use writability::{settle_output, Output};

/// Session ids are unique in the process, across reactors and transports.
static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// How the handler asked the session to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseRequest {
    /// Flush what is queued, then shut down.
    Graceful,
    /// Discard what is queued and end now (a stream resets its connection).
    Abort,
}

/// The session's socket descriptor, for `setsockopt`. The socket itself is owned by the
/// entry that owns the session, next to it, and outlives it.
#[cfg(unix)]
#[derive(Debug)]
struct SocketFd(std::os::fd::RawFd);

#[cfg(unix)]
impl std::os::fd::AsFd for SocketFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the descriptor stays open while the session exists: the socket that owns
        // it lives in the same entry and is dropped only together with the session.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) }
    }
}

/// The state every session holds: identity, socket, options, the handler's close request and the
/// writability its watermarks decide. Small on purpose (24 bytes, its flags filling what the descriptor leaves): ten thousand idle
/// sessions each hold one.
#[derive(Debug)]
pub(crate) struct SessionCore {
    /// Shared by every session of a server until one changes its own (copy on write).
    pub(crate) options: Arc<SessionOptions>,
    id: u64,
    #[cfg(unix)]
    fd: SocketFd,
    pub(crate) close_request: Option<CloseRequest>,
    /// What the watermarks say, and what the handler last heard of it.
    writability: Writability,
    /// Set when the handler changed a timer option, so the entry re-arms.
    pub(crate) timers_changed: bool,
    /// The handler paused reading (`Session::pause_reading`). Only stream sessions offer
    /// that today; the flag lives here because it fits the core's padding, where a field
    /// of its own in `Session` would grow every idle TCP session by 8 bytes.
    pub(crate) reading_paused: bool,
}

impl SessionCore {
    pub(crate) fn new(options: Arc<SessionOptions>, #[cfg(unix)] fd: std::os::fd::RawFd) -> Self {
        SessionCore {
            options,
            #[cfg(unix)]
            fd: SocketFd(fd),
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            close_request: None,
            writability: Writability::default(),
            timers_changed: false,
            reading_paused: false,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The socket, for `setsockopt`.
    #[cfg(unix)]
    pub(crate) fn socket(&self) -> socket2::SockRef<'_> {
        socket2::SockRef::from(&self.fd)
    }

    pub(crate) fn options(&self) -> &SessionOptions {
        &self.options
    }

    pub(crate) fn set_cron_period(&mut self, period: Option<Duration>) {
        let options = Arc::make_mut(&mut self.options);
        *options = options.clone().cron_period(period);
        self.timers_changed = true;
    }

    pub(crate) fn set_read_idle_timeout(&mut self, timeout: Option<Duration>) {
        let options = Arc::make_mut(&mut self.options);
        *options = options.clone().read_idle_timeout(timeout);
        self.timers_changed = true;
    }

    /// A graceful close; an earlier abort stays an abort.
    pub(crate) fn close(&mut self) {
        self.close_request.get_or_insert(CloseRequest::Graceful);
    }

    pub(crate) fn abort(&mut self) {
        self.close_request = Some(CloseRequest::Abort);
    }

    /// The session has ended for its handler (`on_close` comes next, if owed): nothing
    /// more may be queued, and the reactor's metrics count it closed.
    pub(crate) fn note_ended(&mut self, cx: &mut Context<'_>) {
        self.close_request.get_or_insert(CloseRequest::Abort);
        cx.extension::<Metrics>().sessions_closed += 1;
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.close_request.is_some()
    }

    /// False between crossing the high watermark and draining to the low one.
    #[inline]
    pub(crate) fn is_writable(&self) -> bool {
        self.writability.is_writable()
    }

    /// Refuses a write once the session is closing.
    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if self.close_request.is_some() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// The queue now holds `queued` bytes (as the watermarks count them): past the high
    /// watermark the session is no longer writable. The entry reports the crossing when the
    /// callback returns (its settling always runs then), not through `timers_changed`: that
    /// flag restarts the cron period, so a handler crossing the watermark more often than
    /// the period would starve its cron.
    #[inline]
    pub(crate) fn note_grown(&mut self, queued: usize) {
        self.writability
            .note_grown(queued, self.options.high_watermark);
    }

    /// The watermark crossing the handler has yet to hear of, with `queued` bytes queued:
    /// the writability to tell it, now counted as told. `None` for a session no longer
    /// `open`.
    #[inline]
    pub(crate) fn take_crossing(&mut self, queued: usize, open: bool) -> Option<bool> {
        let (high, low) = (self.options.high_watermark, self.options.low_watermark);
        self.writability.take_crossing(queued, high, low, open)
    }

    /// Whether [`take_crossing`](Self::take_crossing) has something to tell.
    #[inline]
    pub(crate) fn crossing_pending(&self, queued: usize) -> bool {
        let (high, low) = (self.options.high_watermark, self.options.low_watermark);
        self.writability.crossing_pending(queued, high, low)
    }
}

/// The reactor running the current callback, if any.
pub(crate) fn current_reactor() -> Option<ReactorHandle> {
    getty_reactor::current().map(|(_, reactor)| reactor)
}

/// Asks the client that owns a session (`owner`) to close: false, doing nothing, for a
/// session no client owns or outside a reactor's callback.
pub(crate) fn close_client(owner: Option<Recipient<OwnerNote>>) -> bool {
    let Some(client) = owner else {
        return false;
    };
    match getty_reactor::current() {
        Some((_, reactor)) => reactor.send(client, OwnerNote::Close).is_ok(),
        None => false,
    }
}

/// A session's typed attributes, one value per type. `B` is the boxed value's type:
/// `dyn Any` on a stream session, `dyn Any + Send` on a datagram session (whose endpoint
/// may be built on one thread and spawned on another).
pub(crate) struct Attributes<B: ?Sized>(HashMap<TypeId, Box<B>>);

impl<B: ?Sized> Default for Attributes<B> {
    fn default() -> Self {
        Attributes(HashMap::new())
    }
}

/// What an attribute box can be seen as: a plain `Any`.
pub(crate) trait AnyBox {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl AnyBox for dyn Any {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl AnyBox for dyn Any + Send {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl<B: ?Sized + AnyBox> Attributes<B> {
    pub(crate) fn get<V: 'static>(&self) -> Option<&V> {
        self.0.get(&TypeId::of::<V>())?.as_any().downcast_ref()
    }

    pub(crate) fn get_mut<V: 'static>(&mut self) -> Option<&mut V> {
        self.0
            .get_mut(&TypeId::of::<V>())?
            .as_any_mut()
            .downcast_mut()
    }

    /// Stores `boxed`, which holds a `V` (the caller boxes it, so that the box coerces to
    /// `B`), returning the `V` it replaces.
    pub(crate) fn insert<V: 'static>(&mut self, boxed: Box<B>) -> Option<V> {
        debug_assert!(boxed.as_any().is::<V>());
        let old = self.0.insert(TypeId::of::<V>(), boxed)?;
        old.into_any().downcast().ok().map(|b| *b)
    }

    pub(crate) fn remove<V: 'static>(&mut self) -> Option<V> {
        let old = self.0.remove(&TypeId::of::<V>())?;
        old.into_any().downcast().ok().map(|b| *b)
    }
}
