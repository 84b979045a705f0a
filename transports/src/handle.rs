//! Reaching a session from other threads.
//!
//! A session has one owner, its reactor; a [`SessionHandle`] never touches it directly. Every
//! call becomes a command in the reactor's queue, applied between two polls, so writes from
//! any number of threads cannot interleave bytes, a write to a closed session is an error
//! rather than a race, and the handle stays valid (and harmless) after the session is gone.

use std::any::Any;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use getty_codec::Encoder;
use getty_reactor::{ReactorHandle, Recipient};

use crate::commands::{SessionCommand, SessionOp};
use crate::{Abort, Close, Error, Session, Tcp, Transport};

/// Writes posted by handles and not yet applied, per session, beyond which `write` refuses
/// more: it bounds the reactor's queue when the reactor falls behind its writers. Their
/// bytes are bounded too, by the session's `max_outbound` (see [`HandleState`]).
const MAX_IN_FLIGHT: usize = 4096;

/// The most bytes one write in flight counts: 4,096 of them, and as many again from
/// writers refused at that moment, cannot overflow the count.
const MAX_WRITE_COUNTED: usize = usize::MAX / (4 * MAX_IN_FLIGHT);

/// Work a handle sends to its session: it gets the session as `dyn Any` and downcasts it
/// to the `Session<C, T>` its handle was made for.
type SessionWork = Box<dyn FnOnce(&mut dyn Any) -> Result<(), Error> + Send>;

/// A job for a session, run on its reactor.
pub(crate) struct SessionJob {
    work: SessionWork,
    /// For a write (it queues bytes, rather than only changing the session's state), about
    /// how many: what its handle counted in flight.
    write_len: Option<usize>,
}

impl SessionJob {
    /// Runs the job on `session` (a `Session<C, T>` or a datagram session).
    pub(crate) fn run(self, session: &mut dyn Any) -> Result<(), Error> {
        (self.work)(session)
    }

    /// It queues bytes (a write), rather than only changing the session's state.
    #[cfg(test)]
    pub(crate) fn writes(&self) -> bool {
        self.write_len.is_some()
    }
}

/// What a session can take now of the writes its handles posted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Room {
    /// The session's queue allows a write: the session is writable (below its high
    /// watermark, or drained to the low one since), or its queue alone, without the
    /// writes held (which the watermarks count too), has drained to the low watermark.
    pub(crate) writable: bool,
    /// The bytes it holds queued, as `max_outbound` counts them.
    pub(crate) queued: usize,
    pub(crate) max_outbound: usize,
}

impl Room {
    /// Writable, with no bound on what it may queue.
    #[cfg(test)]
    pub(crate) fn writable(writable: bool) -> Room {
        Room {
            writable,
            queued: 0,
            max_outbound: usize::MAX,
        }
    }

    /// A write of about `len` bytes may apply now: the session is writable and the write
    /// fits under `max_outbound` beside what is queued, with room for its framing (the
    /// estimate leaves headers out, and compression can add a little). Into an empty queue
    /// any write goes: one that can never fit fails there with `QueueFull` rather than wait
    /// for good, and ends the session (the handler's own write of it would only be
    /// refused; a handle's, accepted already, cannot be, without a hole in the stream).
    fn takes(self, len: usize) -> bool {
        let framed = len.saturating_add(64 + len / 1024);
        self.writable
            && (self.queued == 0 || self.queued.saturating_add(framed) <= self.max_outbound)
    }
}

/// The bytes a write counted in flight; 0 for any other command.
fn op_write_len(op: &SessionOp) -> usize {
    match op {
        SessionOp::Job(job) => job.write_len.unwrap_or(0),
        _ => 0,
    }
}

/// What the session's reactor shares with its handles.
pub(crate) struct HandleState {
    closed: AtomicBool,
    /// A close is on its way (asked by the handler, a handle, a group or a shutdown) or
    /// under way: handles refuse writes, which would come after it and be dropped.
    closing: AtomicBool,
    in_flight: AtomicUsize,
    /// The bytes of the writes in flight, as their codec estimates them before encoding
    /// ([`Encoder::encoded_len_hint`]): a write is refused while they reach
    /// `max_in_flight_bytes`, so that a few writes of large messages cannot queue without
    /// bound where many small ones cannot.
    in_flight_bytes: AtomicUsize,
    /// The session's `max_outbound`: handle writes waiting for the reactor hold at most
    /// about what its outbound queue may.
    max_in_flight_bytes: usize,
    /// The session's writability as last reported; guarded for `wait_writable`.
    writable: Mutex<bool>,
    changed: Condvar,
    /// The bytes of the writes in `held`, as their handles counted them: the watermarks
    /// count them with the queue (netty counts a write from another thread from when it is
    /// submitted), so that the handler, told the session is not writable, lets the queue
    /// drain far enough for a held write to fit under `max_outbound`.
    held_bytes: AtomicUsize,
    /// Commands that wait, in order, for the session to drain below its low watermark:
    /// handle writes that were in flight when it crossed the high one, and whatever came
    /// after them. Only the reactor's thread touches it.
    held: Mutex<VecDeque<SessionOp>>,
}

impl HandleState {
    pub(crate) fn new(writable: bool, max_in_flight_bytes: usize) -> Self {
        HandleState {
            closed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            in_flight_bytes: AtomicUsize::new(0),
            // At least one byte: with nothing in flight there is always room for one write
            // (under `max_outbound(0)` it then fails on the reactor with `QueueFull`, as the
            // handler's own write does, instead of being refused here for good).
            max_in_flight_bytes: max_in_flight_bytes.max(1),
            writable: Mutex::new(writable),
            changed: Condvar::new(),
            held_bytes: AtomicUsize::new(0),
            held: Mutex::new(VecDeque::new()),
        }
    }

    /// `op` as it came to a session whose handles share this state, when it may apply it
    /// now; `None` when it waits behind the high watermark. A write posted by a handle that
    /// was told the session was writable, and came once it no longer was, waits rather
    /// than overrun `max_outbound` (ending a stream, dropping a datagram): a writer that
    /// heeds `Backpressure` loses nothing it was told was accepted. A write or a close
    /// that comes after a held command waits behind it, so bytes keep their order and a
    /// close goes after the writes posted before it. A pause or resume never waits: it
    /// queues no bytes, and a resume held behind writes that wait for the peer to read
    /// could wait for good on a peer that waits for it. An abort discards what waits and
    /// applies at once.
    pub(crate) fn admit(&self, op: SessionOp, room: Room) -> Option<SessionOp> {
        if matches!(op, SessionOp::Abort) {
            self.discard_held();
            return Some(op);
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let waits = match &op {
            SessionOp::Abort => false, // taken above
            SessionOp::Job(job) => match job.write_len {
                None => false,
                Some(len) => !held.is_empty() || !room.takes(len),
            },
            SessionOp::Close => !held.is_empty(),
        };
        if !waits {
            return Some(op);
        }
        self.held_bytes
            .fetch_add(op_write_len(&op), Ordering::Relaxed);
        held.push_back(op);
        None
    }

    /// The next held command that may apply now: a write once the session is writable
    /// and has room for it (see [`Room::takes`]), anything else at once.
    pub(crate) fn release(&self, room: Room) -> Option<SessionOp> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let next = held.front()?;
        if let SessionOp::Job(SessionJob {
            write_len: Some(len),
            ..
        }) = next
        {
            if !room.takes(*len) {
                return None;
            }
        }
        let next = held.pop_front()?;
        self.held_bytes
            .fetch_sub(op_write_len(&next), Ordering::Relaxed);
        Some(next)
    }

    /// The bytes of the writes held, as their handles counted them.
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes.load(Ordering::Relaxed)
    }

    /// Commands wait behind the watermark or `max_outbound`.
    pub(crate) fn holds_any(&self) -> bool {
        !self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    pub(crate) fn set_writable(&self, writable: bool) {
        *self.writable.lock().unwrap_or_else(|p| p.into_inner()) = writable;
        self.changed.notify_all();
    }

    /// A close is on its way: handles refuse writes from now on (what was accepted before
    /// still applies), and writers waiting for room hear it.
    pub(crate) fn mark_closing(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            self.wake_waiters();
        }
    }

    /// A graceful close that must not overtake the writes held (a shutdown's): it waits
    /// behind them, as a handle's `close` does, and handles refuse writes from now on.
    /// False when nothing is held, so the close may apply at once.
    pub(crate) fn close_behind_held(&self) -> bool {
        self.mark_closing();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_empty() {
            return false;
        }
        held.push_back(SessionOp::Close);
        true
    }

    /// The session has ended: handles refuse from now on, and what was held is handed
    /// back, never to apply, for [`drop_unapplied`] (a job's drop runs user code, and
    /// one that panics must not cut the end of the session short).
    #[must_use]
    pub(crate) fn mark_closed(&self) -> VecDeque<SessionOp> {
        self.closed.store(true, Ordering::Release);
        let held = self.take_held();
        self.wake_waiters();
        held
    }

    /// Drops what is held, outside the lock: dropping a job drops what the user's closure
    /// holds.
    fn discard_held(&self) {
        drop(self.take_held());
    }

    /// Everything held, taken out.
    fn take_held(&self) -> VecDeque<SessionOp> {
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|p| p.into_inner()));
        self.held_bytes.store(0, Ordering::Relaxed);
        held
    }

    /// Wakes the writers waiting in `wait_writable`, under the lock they check with, so
    /// that none misses the change between its check and its wait.
    fn wake_waiters(&self) {
        let _guard = self.writable.lock().unwrap_or_else(|p| p.into_inner());
        self.changed.notify_all();
    }

    fn is_writable(&self) -> bool {
        *self.writable.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Room for one more write in flight: fewer than the most writes, and fewer bytes than
    /// the most (a write is taken whatever its size while there is room: one larger than
    /// the bound still goes, alone).
    fn has_room_in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) < MAX_IN_FLIGHT
            && self.in_flight_bytes.load(Ordering::Acquire) < self.max_in_flight_bytes
    }
}

/// [`HandleState::admit`] on the reactor, for an entry's `on_command`: what an abort
/// discards is user code, dropped here under guard ([`drop_unapplied`]) rather than by
/// `admit`, outside it.
pub(crate) fn admit_command(
    state: &HandleState,
    cx: &mut getty_reactor::Context<'_>,
    op: SessionOp,
    room: Room,
) -> Option<SessionOp> {
    if matches!(op, SessionOp::Abort) {
        drop_unapplied(cx, state.take_held());
    }
    state.admit(op, room)
}

/// Drops commands a session that ended never applied, each under guard: a destructor that
/// panics is reported (`Context::catch_panic`) and the end of the session goes on, its
/// owner and its handler told.
pub(crate) fn drop_unapplied(cx: &mut getty_reactor::Context<'_>, ops: VecDeque<SessionOp>) {
    for op in ops {
        cx.catch_panic("a handle's command dropped with its session", move |_| {
            drop(op)
        });
    }
}

/// Counts one posted write and its bytes until it is applied, or dropped with its job when
/// the session is gone, so the counts can never leak.
struct InFlight {
    state: Arc<HandleState>,
    bytes: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.state;
        let before = state.in_flight.fetch_sub(1, Ordering::AcqRel);
        let bytes_before = state
            .in_flight_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
        let bytes_after = bytes_before - self.bytes;
        let was_full = bytes_before >= state.max_in_flight_bytes;
        if before >= MAX_IN_FLIGHT || (was_full && bytes_after < state.max_in_flight_bytes) {
            // A writer refused for the writes in flight may wait in `wait_writable`: room
            // for one more is what it waits for.
            state.wake_waiters();
        }
    }
}

/// A `Send + Clone` handle to one session, for other threads. Get it with
/// [`Session::handle`] inside a callback.
///
/// - Writes from one handle (and from one thread through any handles) keep their order:
///   they travel through the reactor's queue and are encoded there by the session's codec.
/// - A write to a session that is closing (a close asked by its handler, by a handle, or
///   by a shutdown) or closed fails with [`Error::Closed`]; a session above its high
///   watermark (or with too many writes in flight) refuses with [`Error::Backpressure`] —
///   wait with [`wait_writable`](Self::wait_writable), bounded by a timeout.
/// - Writes accepted here while the session was writable, and still in the reactor's queue
///   when it crossed its high watermark, wait on the reactor until it drains to the low
///   one, then apply in order (a [`close`](Self::close) after them waits too): a writer
///   that heeds `Backpressure` never overruns the hard outbound bound, however far ahead
///   of the reactor it runs. At most 4,096 writes are in flight per session, and a write
///   is refused while those in flight hold the session's `max_outbound` in bytes (as
///   their codec estimates them, [`Encoder::encoded_len_hint`]): a writer far ahead of a
///   busy reactor holds about one outbound queue more, not 4,096 messages of any size.
/// - A write accepted here can still be dropped if the session closes before the reactor
///   applies it; [`is_closed`](Self::is_closed) tells afterwards. A write the session
///   cannot take when the reactor applies it (one the codec refuses, or past the hard
///   bound with writes the handler made itself) ends the session with that error in
///   `on_error`: a byte stream never gets a hole in the middle.
///
/// ```
/// use std::sync::mpsc;
/// use getty_codec::{Bytes, LengthFieldCodec};
/// use getty_reactor::Reactor;
/// use getty_transports::{tcp::TcpServer, Handler, Session, SessionHandle};
///
/// /// Hands every new session's handle to another thread.
/// struct Publish(mpsc::Sender<SessionHandle<LengthFieldCodec>>);
/// impl Handler<LengthFieldCodec> for Publish {
///     fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
///         let _ = self.0.send(s.handle().expect("inside a callback"));
///         Ok(())
///     }
///     fn on_message(&mut self, _: &mut Session<LengthFieldCodec>, _: Bytes) {}
/// }
///
/// let (tx, rx) = mpsc::channel();
/// let server = TcpServer::bind("127.0.0.1:0", move |_| {
///     Ok((LengthFieldCodec::default(), Publish(tx.clone())))
/// }).unwrap();
/// let addr = server.local_addr();
/// let reactor = Reactor::start_thread("r", move |r| { r.spawn(server); Ok(()) }).unwrap();
///
/// let mut peer = std::net::TcpStream::connect(addr).unwrap();
/// let handle = rx.recv().unwrap();
/// handle.write(Bytes::from_static(b"pushed")).unwrap(); // from this thread
/// handle.close().unwrap();
///
/// let mut got = Vec::new();
/// std::io::Read::read_to_end(&mut peer, &mut got).unwrap();
/// assert_eq!(got, b"\x00\x00\x00\x06pushed");
/// reactor.handle().shutdown();
/// reactor.join().unwrap();
/// ```
pub struct SessionHandle<C, T: Transport = Tcp> {
    core: HandleCore,
    _session: PhantomData<fn() -> (C, T)>,
}

impl<C, T: Transport> Clone for SessionHandle<C, T> {
    fn clone(&self) -> Self {
        SessionHandle {
            core: self.core.clone(),
            _session: PhantomData,
        }
    }
}

impl<C: 'static, T: Transport> SessionHandle<C, T> {
    pub(crate) fn new(core: HandleCore) -> Self {
        SessionHandle {
            core,
            _session: PhantomData,
        }
    }

    /// The session's id (as [`Session::id`]).
    ///
    /// See the [type-level example](SessionHandle).
    pub fn session_id(&self) -> u64 {
        self.core.session_id()
    }

    /// Queues `message` for the session; its codec encodes it on the reactor thread.
    ///
    /// See the [type-level example](SessionHandle).
    pub fn write<M>(&self, message: M) -> Result<(), Error>
    where
        C: Encoder<M>,
        M: Send + 'static,
    {
        let bytes = C::encoded_len_hint(&message);
        self.core.post(bytes, move |session: &mut Session<C, T>| {
            session.write(message)
        })
    }

    /// Queues raw bytes for the session, bypassing its codec.
    ///
    /// See the [type-level example](SessionHandle).
    pub fn write_bytes(&self, bytes: Bytes) -> Result<(), Error> {
        self.core
            .post(bytes.len(), move |session: &mut Session<C, T>| {
                session.write_bytes(bytes)
            })
    }

    /// Closes the session gracefully once the writes posted before this call are flushed.
    /// Writes from any handle fail with [`Error::Closed`] from now on.
    ///
    /// See the [type-level example](SessionHandle).
    pub fn close(&self) -> Result<(), Error> {
        self.core.close()
    }

    /// Resets the session now, discarding what is queued.
    ///
    /// See the [type-level example](SessionHandle).
    pub fn abort(&self) -> Result<(), Error> {
        self.core.abort()
    }

    /// Pauses reading, as [`Session::pause_reading`], when the reactor gets to it, after
    /// the writes posted before it that the session could take (those waiting for it to
    /// drain below its low watermark are not waited for: a pause or resume queues no
    /// bytes). Never refused for backpressure (only `Error::Closed`), so a resume after a
    /// burst of writes always arrives.
    ///
    /// See [`Session::pause_reading`] for an example.
    pub fn pause_reading(&self) -> Result<(), Error> {
        self.core
            .post_control(|session: &mut Session<C, T>| session.pause_reading())
    }

    /// Resumes reading, as [`Session::resume_reading`], when the reactor gets to it (as
    /// [`pause_reading`](Self::pause_reading): never behind writes waiting for the session
    /// to drain, which could wait for a peer that waits for this resume). Never refused for
    /// backpressure (only `Error::Closed`), so a resume after a burst of writes always
    /// arrives.
    ///
    /// See [`Session::pause_reading`] for an example.
    pub fn resume_reading(&self) -> Result<(), Error> {
        self.core
            .post_control(|session: &mut Session<C, T>| session.resume_reading())
    }

    /// True once the session has ended.
    ///
    /// See the [type-level example](SessionHandle).
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// False while the session is above its high watermark.
    ///
    /// See the [type-level example](SessionHandle).
    pub fn is_writable(&self) -> bool {
        self.core.is_writable()
    }

    /// Waits until the session is writable again (below its high watermark, with room for
    /// another write in flight), for at most `timeout` (`Duration::MAX` waits as long as it
    /// takes). Fails with [`Error::Closed`] if it starts closing or ends meanwhile (no
    /// write would be taken), and with [`Error::Backpressure`] on timeout.
    ///
    /// See the [type-level example](SessionHandle).
    pub fn wait_writable(&self, timeout: Duration) -> Result<(), Error> {
        self.core.wait_writable(timeout)
    }
}

/// What every kind of session handle holds: where the session lives and what it shares.
#[derive(Clone)]
pub(crate) struct HandleCore {
    entry: Recipient<SessionCommand>,
    reactor: ReactorHandle,
    state: Arc<HandleState>,
    session_id: u64,
}

impl HandleCore {
    /// A handle core for the session being called on this thread; `None` outside a
    /// reactor callback. `state` is the session's shared state, made on first use.
    pub(crate) fn current(
        state: &mut Option<Arc<HandleState>>,
        writable: bool,
        closing: bool,
        session_id: u64,
        max_outbound: usize,
    ) -> Option<HandleCore> {
        let (_, reactor) = getty_reactor::current()?;
        // `None` too in an entry that is not a session (which has no session to hand out).
        let entry = Recipient::<SessionCommand>::current()?;
        let state = state
            .get_or_insert_with(|| Arc::new(HandleState::new(writable, max_outbound)))
            .clone();
        if closing {
            // The first handle of a session closed before it: no state was there to mark.
            state.mark_closing();
        }
        Some(HandleCore {
            entry,
            reactor,
            state,
            session_id,
        })
    }

    pub(crate) fn session_id(&self) -> u64 {
        self.session_id
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.closed.load(Ordering::Acquire) || self.reactor.is_stopped()
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.state.is_writable()
    }

    pub(crate) fn close(&self) -> Result<(), Error> {
        self.check_open()?;
        // A write posted from now on would come after the close, and be dropped.
        self.state.mark_closing();
        self.reactor
            .send(self.entry, Close)
            .map_err(|_| Error::Closed)
    }

    pub(crate) fn abort(&self) -> Result<(), Error> {
        self.check_open()?;
        self.reactor
            .send(self.entry, Abort)
            .map_err(|_| Error::Closed)
    }

    pub(crate) fn wait_writable(&self, timeout: Duration) -> Result<(), Error> {
        // Clamped as the session options are: `Duration::MAX` ("wait as long as it takes")
        // must not overflow the deadline.
        let deadline = Instant::now() + crate::options::clamp_timeout(timeout);
        let mut writable = self
            .state
            .writable
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            self.check_writes_taken()?;
            // Writable, and room for one more write in flight: what `post` refuses
            // `Backpressure` for, besides the watermark.
            if *writable && self.state.has_room_in_flight() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Backpressure);
            }
            writable = self
                .state
                .changed
                .wait_timeout(writable, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Writes are refused from when a close is on its way: they would come after it.
    fn check_writes_taken(&self) -> Result<(), Error> {
        if self.state.closing.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.check_open()
    }

    /// Counts one more job in flight, of about `bytes`, or refuses with `Backpressure` when
    /// the writes or the bytes in flight are at their bound.
    fn count_in_flight(&self, bytes: usize) -> Result<InFlight, Error> {
        let state = &self.state;
        // One write counts at most the whole bound (and never near `usize::MAX`, whatever
        // a codec's hint says), so that the sum of those in flight cannot overflow.
        let bytes = bytes.min(state.max_in_flight_bytes).min(MAX_WRITE_COUNTED);
        let count_before = state.in_flight.fetch_add(1, Ordering::AcqRel);
        let bytes_before = state.in_flight_bytes.fetch_add(bytes, Ordering::AcqRel);
        let in_flight = InFlight {
            state: state.clone(),
            bytes,
        };
        if count_before >= MAX_IN_FLIGHT || bytes_before >= state.max_in_flight_bytes {
            // Taken back by the drop, which wakes a writer on another thread that may have
            // seen these refused counts in `wait_writable` and gone to sleep on them.
            drop(in_flight);
            return Err(Error::Backpressure);
        }
        Ok(in_flight)
    }

    /// Sends `apply` to run on the session (of type `S`) on its reactor, past any
    /// backpressure: it changes the session's state and queues no bytes, and refusing it
    /// could leave a session paused for good (a resume after a burst of writes).
    pub(crate) fn post_control<S, F>(&self, apply: F) -> Result<(), Error>
    where
        S: 'static,
        F: FnOnce(&mut S) + Send + 'static,
    {
        self.check_open()?;
        let job = SessionJob {
            work: Box::new(move |session: &mut dyn Any| {
                if let Some(session) = session.downcast_mut::<S>() {
                    apply(session);
                }
                Ok(())
            }),
            write_len: None,
        };
        self.reactor
            .send(self.entry, job)
            .map_err(|_| Error::Closed)
    }

    /// Sends `apply`, a write of about `bytes`, to run on the session (of type `S`) on its
    /// reactor.
    pub(crate) fn post<S, F>(&self, bytes: usize, apply: F) -> Result<(), Error>
    where
        S: 'static,
        F: FnOnce(&mut S) -> Result<(), Error> + Send + 'static,
    {
        self.check_writes_taken()?;
        if !self.state.is_writable() {
            return Err(Error::Backpressure);
        }
        let in_flight = self.count_in_flight(bytes)?;
        let write_len = Some(in_flight.bytes);
        let job = SessionJob {
            work: Box::new(move |session: &mut dyn Any| {
                let _applied = in_flight;
                match session.downcast_mut::<S>() {
                    Some(session) => apply(session),
                    None => Ok(()),
                }
            }),
            write_len,
        };
        self.reactor
            .send(self.entry, job)
            .map_err(|_| Error::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts a write of `bytes` in flight, as `post` does, whatever the bounds.
    fn in_flight_of(state: &Arc<HandleState>, bytes: usize) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.in_flight_bytes.fetch_add(bytes, Ordering::AcqRel);
        InFlight {
            state: state.clone(),
            bytes,
        }
    }

    /// A job that records `label` in `log` when it runs.
    fn job(log: &Arc<Mutex<Vec<&'static str>>>, label: &'static str, writes: bool) -> SessionOp {
        let log = log.clone();
        SessionOp::Job(SessionJob {
            work: Box::new(move |_| {
                log.lock().unwrap().push(label);
                Ok(())
            }),
            write_len: writes.then_some(0),
        })
    }

    fn run(op: SessionOp) -> &'static str {
        match op {
            SessionOp::Job(job) => {
                job.run(&mut ()).unwrap();
                "job"
            }
            SessionOp::Close => "close",
            SessionOp::Abort => "abort",
        }
    }

    #[test]
    fn room_in_flight_ends_at_either_bound_and_a_large_write_goes_alone() {
        let state = Arc::new(HandleState::new(true, 1000));
        assert!(state.has_room_in_flight());
        // Larger than the bound: taken while there was room, and then none is left.
        let large = in_flight_of(&state, 5000);
        assert!(!state.has_room_in_flight());
        drop(large);
        assert!(state.has_room_in_flight());
        let small: Vec<_> = (0..MAX_IN_FLIGHT)
            .map(|_| in_flight_of(&state, 0))
            .collect();
        assert!(
            !state.has_room_in_flight(),
            "as many writes as may be in flight"
        );
        drop(small);
        assert!(state.has_room_in_flight());
        assert_eq!(state.in_flight_bytes.load(Ordering::Acquire), 0);
    }

    /// Posts a write ("w1") and a close to an unwritable session: both wait.
    fn hold_a_write_and_a_close(state: &HandleState, log: &Arc<Mutex<Vec<&'static str>>>) {
        assert!(state
            .admit(job(log, "w1", true), Room::writable(false))
            .is_none());
        assert!(state
            .admit(SessionOp::Close, Room::writable(false))
            .is_none());
    }

    #[test]
    fn writes_and_a_close_wait_in_order_while_pauses_and_resumes_go_at_once() {
        let state = HandleState::new(false, usize::MAX);
        let log = Arc::new(Mutex::new(Vec::new()));
        // Above the high watermark: the write waits, and the close after it.
        hold_a_write_and_a_close(&state, &log);
        // A resume queues no bytes: it applies now, ahead of the held write.
        let resume = state
            .admit(job(&log, "resume", false), Room::writable(false))
            .expect("at once");
        run(resume);
        // A write after the held close waits behind it, even once writable.
        assert!(state
            .admit(job(&log, "w2", true), Room::writable(true))
            .is_none());
        // Still unwritable: nothing is released.
        assert!(state.release(Room::writable(false)).is_none());
        let mut applied = Vec::new();
        while let Some(op) = state.release(Room::writable(true)) {
            applied.push(run(op));
        }
        assert_eq!(applied, ["job", "close", "job"]);
        assert_eq!(*log.lock().unwrap(), ["resume", "w1", "w2"]);
    }

    #[test]
    fn a_held_close_goes_as_soon_as_the_writes_before_it_have() {
        let state = HandleState::new(false, usize::MAX);
        let log = Arc::new(Mutex::new(Vec::new()));
        hold_a_write_and_a_close(&state, &log);
        // The write goes once writable; the close right after, writable or not.
        assert_eq!(state.release(Room::writable(true)).map(run), Some("job"));
        assert_eq!(state.release(Room::writable(false)).map(run), Some("close"));
        assert!(state.release(Room::writable(true)).is_none());
    }

    #[test]
    fn an_abort_discards_what_waits_and_the_end_of_the_session_drops_it() {
        let state = Arc::new(HandleState::new(true, usize::MAX));
        let log = Arc::new(Mutex::new(Vec::new()));
        let in_flight = |state: &Arc<HandleState>| state.in_flight.load(Ordering::Acquire);
        // A held write counts as in flight until it is applied or dropped.
        let counted = |state: &Arc<HandleState>, log| {
            let guard = in_flight_of(state, 100);
            let log: Arc<Mutex<Vec<&'static str>>> = Arc::clone(log);
            SessionOp::Job(SessionJob {
                work: Box::new(move |_| {
                    let _applied = guard;
                    log.lock().unwrap().push("w");
                    Ok(())
                }),
                write_len: Some(100),
            })
        };
        assert!(state
            .admit(counted(&state, &log), Room::writable(false))
            .is_none());
        assert_eq!(in_flight(&state), 1);
        assert_eq!(
            state
                .admit(SessionOp::Abort, Room::writable(false))
                .map(run),
            Some("abort")
        );
        assert_eq!(
            in_flight(&state),
            0,
            "the discarded write is no longer in flight"
        );
        assert!(state.release(Room::writable(true)).is_none());

        assert!(state
            .admit(counted(&state, &log), Room::writable(false))
            .is_none());
        drop(state.mark_closed());
        assert_eq!(in_flight(&state), 0, "the end of the session dropped it");
        assert!(log.lock().unwrap().is_empty(), "nothing held was applied");
    }

    /// What a random run does to the held queue, against the rules it must keep.
    #[derive(Debug, Clone)]
    enum Step {
        Write { room: Room },
        Close { room: Room },
        Control { room: Room },
        Abort,
        Drain { room: Room },
    }

    /// The room of a session whose writes are all of [`WRITE_LEN`] bytes: writable or not,
    /// with an empty queue, one with room for a write, or one too full for another.
    fn room() -> impl proptest::strategy::Strategy<Value = Room> {
        use proptest::prelude::*;
        (
            any::<bool>(),
            prop_oneof![Just(0), Just(100), Just(4900), Just(5000)],
        )
            .prop_map(|(writable, queued)| Room {
                writable,
                queued,
                max_outbound: 5000,
            })
    }

    const WRITE_LEN: usize = 100;

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            6 => room().prop_map(|room| Step::Write { room }),
            1 => room().prop_map(|room| Step::Close { room }),
            1 => room().prop_map(|room| Step::Control { room }),
            1 => Just(Step::Abort),
            3 => room().prop_map(|room| Step::Drain { room }),
        ]
    }

    /// What ran, in order: a write by its sequence number, a close, a control.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Ran {
        Write(u32),
        Close,
        Control,
        Abort,
    }

    proptest::proptest! {
        /// Whatever comes in whatever state: writes run in the order they came, never
        /// while the session is unwritable, each once or dropped (by an abort or the end),
        /// never run after a close that came after them; a close never runs before a write
        /// that came before it; pauses and resumes never wait; and every write counted in
        /// flight is released by the end.
        #[test]
        fn the_held_queue_keeps_order_and_releases_every_write(
            steps in proptest::collection::vec(step(), 1..200)
        ) {
            let state = Arc::new(HandleState::new(true, usize::MAX));
            let ran = Arc::new(Mutex::new(Vec::new()));
            let mut next = 0u32;
            // What came, in order, between aborts: what may run, in that order.
            let mut came_runs: Vec<Vec<Ran>> = vec![Vec::new()];
            let apply = |op: SessionOp, room: Room, ran: &Arc<Mutex<Vec<Ran>>>| match op {
                SessionOp::Job(job) => {
                    let writes = job.writes();
                    assert!(!writes || room.takes(WRITE_LEN), "a write ran without room: {room:?}");
                    job.run(&mut ()).unwrap();
                }
                SessionOp::Close => ran.lock().unwrap().push(Ran::Close),
                SessionOp::Abort => ran.lock().unwrap().push(Ran::Abort),
            };
            for step in steps {
                match step {
                    Step::Write { room } => {
                        let guard = in_flight_of(&state, 100);
                        let (ran2, seq) = (ran.clone(), next);
                        next += 1;
                        came_runs.last_mut().unwrap().push(Ran::Write(seq));
                        let op = SessionOp::Job(SessionJob {
                            work: Box::new(move |_| {
                                let _applied = guard;
                                ran2.lock().unwrap().push(Ran::Write(seq));
                                Ok(())
                            }),
                            write_len: Some(WRITE_LEN),
                        });
                        if let Some(op) = state.admit(op, room) {
                            apply(op, room, &ran);
                        }
                    }
                    Step::Close { room } => {
                        came_runs.last_mut().unwrap().push(Ran::Close);
                        if let Some(op) = state.admit(SessionOp::Close, room) {
                            apply(op, room, &ran);
                        }
                    }
                    Step::Control { room } => {
                        let ran2 = ran.clone();
                        let op = SessionOp::Job(SessionJob {
                            work: Box::new(move |_| {
                                ran2.lock().unwrap().push(Ran::Control);
                                Ok(())
                            }),
                            write_len: None,
                        });
                        let op = state.admit(op, room);
                        proptest::prop_assert!(op.is_some(), "a pause or resume waited");
                        apply(op.unwrap(), room, &ran);
                    }
                    Step::Abort => {
                        came_runs.push(Vec::new());
                        let op = state.admit(SessionOp::Abort, Room::writable(false));
                        proptest::prop_assert!(op.is_some(), "an abort waited");
                        apply(op.unwrap(), Room::writable(false), &ran);
                    }
                    Step::Drain { room } => {
                        while let Some(op) = state.release(room) {
                            apply(op, room, &ran);
                        }
                    }
                }
                // The watermarks count exactly the writes held.
                let held_writes = state
                    .held
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|op| op_write_len(op) > 0)
                    .count();
                proptest::prop_assert_eq!(state.held_bytes(), held_writes * WRITE_LEN);
            }
            drop(state.mark_closed());
            proptest::prop_assert_eq!(state.held_bytes(), 0);
            proptest::prop_assert_eq!(state.in_flight.load(Ordering::Acquire), 0);
            proptest::prop_assert_eq!(state.in_flight_bytes.load(Ordering::Acquire), 0);
            // Between two aborts, what ran (pauses and resumes aside) is the front of what
            // came, in the order it came: nothing reordered, run twice, or run past a
            // command still held; the rest was dropped by the abort or the end.
            let ran = ran.lock().unwrap().clone();
            let ran_runs: Vec<Vec<Ran>> = ran
                .split(|r| *r == Ran::Abort)
                .map(|run| run.iter().copied().filter(|r| *r != Ran::Control).collect())
                .collect();
            proptest::prop_assert_eq!(ran_runs.len(), came_runs.len());
            for (ran, came) in ran_runs.iter().zip(&came_runs) {
                proptest::prop_assert!(
                    came.starts_with(ran),
                    "ran {:?}, not the front of what came {:?}",
                    ran,
                    came
                );
            }
        }
    }
}
