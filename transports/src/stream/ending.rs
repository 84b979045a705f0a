//! How a session ends: [`fail`](StreamEntry::fail) for an abnormal end the handler hears,
//! [`end`](StreamEntry::end) for the entry's own end (it runs `on_close`), the lingering
//! close between them, and [`abandon`](StreamEntry::abandon) for a session that never opened.

use super::*;

impl<S, T, C, H> StreamEntry<S, T, C, H>
where
    S: Stream,
    T: Transport<Addr = S::Addr>,
    C: Decoder + 'static,
    H: Handler<C, T>,
{
    /// A session failing on bad input tells the peer why, the framing's way (a WebSocket
    /// close frame with 1002, 1007, 1009, ...). Returns true when a goodbye was queued.
    pub(super) fn send_failure(&mut self, error: &Error) -> bool {
        if !self.session.framing.fail(error, &mut self.session.out.tail) {
            return false;
        }
        self.session.core.close_request = Some(CloseRequest::Graceful);
        true
    }

    /// Everything is flushed: shut down the write side, tell the handler, and wait for the
    /// peer's EOF while discarding its input (unless it has already closed).
    pub(super) fn linger(&mut self, cx: &mut Context<'_>) -> Status {
        self.send_filter_close();
        let _ = self.stream.shutdown_write();
        self.flags.set(Flag::Graceful, true);
        if self.flags.get(Flag::PeerClosed) {
            return self.end(cx, false);
        }
        self.run_on_close(cx);
        self.phase = Phase::Lingering;
        let until = cx.read_clock() + self.session.core.options.linger_timeout;
        self.extras_mut().linger_until = Some(until);
        self.rearm_timer(cx);
        self.discard_input(cx)
    }

    /// Queues the filter's goodbye (TLS `close_notify`) as output, to be flushed as the rest
    /// is (a socket that is full right now must not lose it); true if it queued it now.
    pub(super) fn queue_filter_close(&mut self) -> bool {
        if self.flags.get(Flag::FilterClosed) {
            return false;
        }
        let Some(io) = self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) else {
            return false;
        };
        self.flags.set(Flag::FilterClosed, true);
        io.filter.close(&mut io.wire_out);
        true
    }

    /// Lets the filter say goodbye (TLS `close_notify`), best effort, unless it was queued
    /// already: the write side is about to shut down.
    pub(super) fn send_filter_close(&mut self) {
        if self.flags.get(Flag::FilterClosed) {
            return;
        }
        self.flags.set(Flag::FilterClosed, true);
        if let Some(io) = self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) {
            io.filter.close(&mut io.wire_out);
            let _ = self.stream.write(&io.wire_out);
            io.wire_out.clear();
        }
    }

    /// Reads and drops what the peer still sends; ends the entry at EOF or on an error.
    pub(super) fn discard_input(&mut self, cx: &mut Context<'_>) -> Status {
        match read_and_drop(&mut self.stream, LINGER_READ_BUDGET, cx) {
            Dropped::Ended => self.end(cx, false),
            Dropped::Waiting => Status::Continue,
        }
    }

    /// Reads and drops the input already received, up to the linger budget, without
    /// waiting: the last thing done before a gracefully closing socket is dropped early.
    pub(super) fn drain_unread(&mut self) {
        let mut scratch = [0u8; 4096];
        let mut budget = LINGER_READ_BUDGET;
        while budget > 0 {
            match self.stream.read(&mut scratch) {
                Ok(0) => return,
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// [`drain_unread`](Self::drain_unread) before a graceful close that cannot wait for the
    /// peer's EOF any more (the reactor stops now).
    pub(super) fn drain_unread_unless_peer_closed(&mut self) {
        if !self.flags.get(Flag::PeerClosed) {
            self.drain_unread();
        }
    }

    /// An abnormal end the handler hears: `on_error` with `error`, then (through
    /// [`end`](Self::end), at once or after a flush) `on_close`.
    ///
    /// Most errors end it gracefully: what is queued (replies to the frames before a bad
    /// one, a goodbye written in `on_error`, a WebSocket close frame with the RFC's code)
    /// is flushed within the write-stall timeout, then the write side is shut down and the
    /// entry lingers, as `close()` does. A reset only where nothing more can be sent or
    /// waiting would hold resources for a peer that does not cooperate: an I/O error, a
    /// write stall, a handshake timeout. A filter that broke (a TLS alert was queued) sends
    /// only its own goodbye: the alert, then FIN.
    pub(super) fn fail(&mut self, cx: &mut Context<'_>, error: Error) -> Status {
        if !matches!(self.phase, Phase::Open | Phase::Closing) || self.flags.get(Flag::Failed) {
            return self.end(cx, true);
        }
        self.flags.set(Flag::Failed, true);
        self.note_ended_by_peer();
        log::debug!(
            "session {} ({}) failed: {error}",
            self.session.id(),
            self.session.peer_addr()
        );
        cx.extension::<Metrics>().count_error(&error);
        if matches!(&error, Error::Filter(e) if e.kind() == getty_codec::filter::FilterErrorKind::Handshake)
        {
            self.flags.set(Flag::HandshakeRefused, true);
        }
        let resets = matches!(
            error,
            Error::Io(_) | Error::WriteStalled(_) | Error::HandshakeTimeout(_)
        );
        // A filter that failed, or one still negotiating (nothing queued can be encrypted
        // before the handshake is done, and no more is read to finish it), sends only its
        // own goodbye.
        let filter_broken = self
            .session
            .filter_io()
            .is_some_and(|io| !io.filter.can_send() || io.filter.is_handshaking());
        if resets {
            // Writes in on_error fail (Error::Closed): nothing more can be sent.
            self.session.core.close_request = Some(CloseRequest::Abort);
        } else if filter_broken {
            self.session.out.clear();
            self.session.core.close_request = Some(CloseRequest::Graceful);
        }
        self.handler.on_error(&mut self.session, &error);
        if resets || self.session.core.close_request == Some(CloseRequest::Abort) {
            return self.end(cx, true);
        }
        if self.phase == Phase::Open && !filter_broken {
            self.send_failure(&error);
        }
        self.session
            .core
            .close_request
            .get_or_insert(CloseRequest::Graceful);
        self.phase = Phase::Closing;
        self.settle(cx)
    }

    /// The entry's own end, whatever led to it: runs `on_close` (if the handler opened and
    /// has not heard it yet) and drops the socket, resetting the connection when `reset`
    /// (SO_LINGER 0 drops what the kernel holds).
    pub(super) fn end(&mut self, cx: &mut Context<'_>, reset: bool) -> Status {
        if reset && self.phase != Phase::Closed {
            #[cfg(unix)]
            let _ = self
                .session
                .socket()
                .set_linger(Some(std::time::Duration::ZERO));
        } else if !reset {
            self.flags.set(Flag::Graceful, true);
        }
        self.run_on_close(cx);
        self.phase = Phase::Closed;
        let _ = cx.registry().deregister(&mut self.stream);
        self.cancel_timer(cx);
        Status::Done
    }

    /// The peer (its EOF or close frame), an error or a panic is ending the session: noted
    /// unless this side asked to close it first.
    pub(super) fn note_ended_by_peer(&mut self) {
        if !self.session.is_closing() {
            self.flags.set(Flag::EndedByPeer, true);
        }
    }

    /// Ends a session that never opened (for `why`): no `on_close` (the handler never
    /// heard of it), but its handles see it closed and its owner hears that it ended.
    pub(super) fn abandon(&mut self, cx: &mut Context<'_>, why: Error) -> Status {
        self.phase = Phase::Closed;
        // An `on_open` that joined a group, then refused the session.
        self.leave_groups();
        self.mark_handles_closed(cx);
        if let Some(owner) = self.owner() {
            let ended = SessionEnded {
                id: cx.id(),
                by_peer: self.flags.get(Flag::EndedByPeer),
                outcome: Err(why),
            };
            cx.send(owner, OwnerNote::Ended(ended));
        }
        Status::Done
    }

    /// Notes an opened session's end on the framework's side, before the handler hears of
    /// it (no `on_close` here): the handles refuse writes, the owner (a client) hears the
    /// end and redials (the message is delivered after this call, panic or not), the
    /// metrics count it.
    pub(super) fn note_ended(&mut self, cx: &mut Context<'_>) {
        self.phase = Phase::Closed;
        self.session.core.note_ended(cx);
        self.leave_groups();
        self.mark_handles_closed(cx);
        if let Some(owner) = self.owner() {
            // A session that ends before its handshake is done, or on the peer's refusal
            // of it, was a failed dial.
            let refused = self.flags.get(Flag::HandshakeRefused);
            let outcome = if self.session.handshaking() || refused {
                let why = "the session ended before its TLS handshake was done";
                Err(Error::Io(io::Error::other(why)))
            } else {
                Ok(())
            };
            let ended = SessionEnded {
                id: cx.id(),
                by_peer: self.flags.get(Flag::EndedByPeer),
                outcome,
            };
            cx.send(owner, OwnerNote::Ended(ended));
        }
    }

    /// Runs `on_close` once (after [`note_ended`](Self::note_ended), which tells the
    /// owner) and returns the buffers. Leaves the socket to [`end`](Self::end).
    pub(super) fn run_on_close(&mut self, cx: &mut Context<'_>) {
        if matches!(self.phase, Phase::Lingering | Phase::Closed) {
            return;
        }
        // The framework's side first, so that a panic in `on_close` cannot skip it.
        // `on_panic` then finds the session closed and adds nothing.
        self.note_ended(cx);
        self.handler.on_close(&mut self.session);
        // A handle made in on_close, after the ones before it were marked.
        self.mark_handles_closed(cx);
        self.session.out.clear();
        self.session.out.give_back(cx.buffers());
        if let Some(io) = self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) {
            give_back(&mut io.wire_in, cx);
            give_back(&mut io.wire_out, cx);
        }
    }

    /// A close is under way: the session's handles (if it has any) refuse writes, which
    /// would come after it.
    pub(super) fn mark_handles_closing(&self) {
        if let Some(state) = self.extras().and_then(|e| e.handle_state.as_ref()) {
            state.mark_closing();
        }
    }

    /// A shutdown's graceful close goes behind the handle writes held (see
    /// `HandleState::close_behind_held`); false when none are, so it may apply now.
    pub(super) fn close_behind_held(&self) -> bool {
        self.extras()
            .and_then(|e| e.handle_state.as_ref())
            .is_some_and(|state| state.close_behind_held())
    }

    /// The session's handles (if it has any) see it closed and refuse writes; what they
    /// posted that waited is dropped.
    pub(super) fn mark_handles_closed(&self, cx: &mut Context<'_>) {
        if let Some(state) = self.extras().and_then(|e| e.handle_state.as_ref()) {
            crate::handle::drop_unapplied(cx, state.mark_closed());
        }
    }
}
