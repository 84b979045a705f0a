//! Flushing and settling: writing the outbound queue (through the filters) after each
//! callback, and telling the handler when writability changes.

use super::*;

impl<S, T, C, H> StreamEntry<S, T, C, H>
where
    S: Stream,
    T: Transport<Addr = S::Addr>,
    C: Decoder + 'static,
    H: Handler<C, T>,
{
    /// Writes until the queue is empty or the socket is full.
    pub(super) fn flush(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let mut progressed = false;
        while self.refill_wire(cx)? > 0 {
            match self.write_some(cx.buffers()) {
                Ok(0) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.session.counters_mut().bytes_out += n as u64;
                    cx.extension::<Metrics>().bytes_out += n as u64;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        }
        if progressed {
            self.session.counters_mut().last_write = Stamp::of(cx.now());
        }
        if self.session.queued_bytes() == 0 {
            if let Some(extras) = self.session.extras.as_mut() {
                extras.timer.note_unblocked();
                if let Some(io) = extras.filter.as_mut() {
                    give_back(&mut io.wire_out, cx);
                }
            }
        } else {
            // Read afresh: the stall counts from now, not from before the handler's work.
            let now = cx.read_clock();
            self.extras_mut().timer.note_blocked(now, progressed);
        }
        Ok(())
    }

    /// With a filter: when its wire buffer is empty, moves the next batch of the outbound
    /// queue through it (unless it is still handshaking) and flushes it. Returns the bytes
    /// ready to write to the socket.
    pub(super) fn refill_wire(&mut self, cx: &mut Context<'_>) -> Result<usize, Error> {
        let Some(io) = self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) else {
            return Ok(self.session.out.len());
        };
        if io.wire_out.is_empty() {
            if !io.filter.is_handshaking() && !self.session.out.is_empty() {
                if io.wire_out.capacity() == 0 {
                    io.wire_out = cx.buffers().take();
                }
                let (filter, wire) = (&mut io.filter, &mut io.wire_out);
                let moved = self
                    .session
                    .out
                    .drain_into(ENCODE_BATCH, cx.buffers(), |plain| {
                        filter.encode(plain, wire)
                    })?;
                io.plain_out += moved as u64;
            }
            io.filter.flush(&mut io.wire_out)?;
        }
        Ok(io.wire_out.len())
    }

    /// One write to the socket: the filter's wire bytes, or the outbound queue (`writev`).
    pub(super) fn write_some(&mut self, pool: &mut BufPool) -> io::Result<usize> {
        match self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) {
            Some(io) => {
                let n = self.stream.write(&io.wire_out)?;
                io.wire_out.advance(n);
                Ok(n)
            }
            None => self.session.out.write_to(&mut self.stream, pool),
        }
    }

    /// Lends the session a pooled buffer to encode into, so writes do not allocate.
    pub(super) fn lend_write_buffer(&mut self, cx: &mut Context<'_>) {
        let tail = &mut self.session.out.tail;
        if tail.capacity() == 0 {
            *tail = cx.buffers().take();
        }
    }

    /// A command from a handle (or any sender): a close, an abort, or a handle's job.
    pub(super) fn apply(&mut self, cx: &mut Context<'_>, op: SessionOp) -> Result<(), Error> {
        match op {
            SessionOp::Close => self.session.close(),
            SessionOp::Abort => self.session.abort(),
            SessionOp::Job(job) => {
                self.lend_write_buffer(cx);
                match job.run(&mut self.session) {
                    Ok(()) | Err(Error::Closed) => {}
                    // Dropping it would leave a hole in the stream: end the session instead.
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// The session drained to its low watermark: the commands held behind the high one
    /// (see `HandleState::admit`) go now, before the handler hears it is writable (they
    /// were accepted before anything it writes on hearing it, and a handler that refills
    /// the queue then would hold them for as long as it produces). Writes go while the
    /// session stays writable (one that reaches the high watermark makes it unwritable at
    /// once), a close as soon as its turn comes. A write the session cannot take is kept
    /// for `settle` to fail it with. True when they closed the session (or failed it).
    fn apply_held(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(state) = self.extras().and_then(|e| e.handle_state.clone()) else {
            return false;
        };
        let was_closing = self.session.is_closing();
        while self.phase == Phase::Open {
            let Some(op) = state.release(self.session.handle_room()) else {
                break;
            };
            if let Err(e) = self.apply(cx, op) {
                self.extras_mut().held_error = Some(e);
                return true;
            }
        }
        !was_closing && self.session.is_closing()
    }

    /// What the framing held back above the high watermark (a pong), once the queue is
    /// below it, whether or not the handler was told of a crossing: not only once it is
    /// writable again (drained to the low watermark), since a handler that keeps its queue
    /// between the two would hold a ping's answer for as long as it writes, and a busy
    /// peer's keepalive would time it out. True when something was released.
    fn release_framing_output(&mut self, cx: &mut Context<'_>) -> bool {
        let high = self.session.core.options.high_watermark;
        if !self.session.framing.holds_output() || self.session.queued_bytes() >= high {
            return false;
        }
        self.lend_write_buffer(cx);
        self.session
            .framing
            .release_output(&mut self.session.out.tail);
        true
    }

    /// Handle writes that wait, while the session stays writable, for room under
    /// `max_outbound` (not for a crossing): applied once the queue has drained enough.
    /// True when one was (the queue has more to flush), or the session closed.
    fn apply_held_with_room(&mut self, cx: &mut Context<'_>) -> bool {
        let waiting = self
            .extras()
            .and_then(|e| e.handle_state.as_ref())
            .is_some_and(|state| state.holds_any());
        if !waiting {
            return false;
        }
        let queued = self.session.queued_bytes();
        self.apply_held(cx) || self.session.queued_bytes() != queued
    }

    /// After every event: act on close requests, flush, report watermarks, re-arm the timer.
    pub(super) fn settle(&mut self, cx: &mut Context<'_>) -> Status {
        let queued = std::mem::take(&mut self.session.unreported_messages_out);
        if queued > 0 {
            cx.extension::<Metrics>().messages_out += u64::from(queued);
        }
        if self.session.extras.is_some() {
            let open = self.phase == Phase::Open && self.flags.get(Flag::Opened);
            if open && self.session.filter_io().is_some() {
                self.tell_owner_once_talking(cx);
            }
            // Rarely: only a session that joined a group has an inbox.
            if let Err(e) = self.settle_broadcasts(cx) {
                return self.fail(cx, e);
            }
        } else if let Err(e) = self.settle_io(cx) {
            return self.fail(cx, e);
        }
        if let Some(e) = self
            .session
            .extras
            .as_mut()
            .and_then(|e| e.held_error.take())
        {
            return self.fail(cx, e);
        }
        if self.session.core.close_request == Some(CloseRequest::Abort) {
            return self.end(cx, true);
        }
        if self.session.core.close_request.is_some() {
            if self.phase == Phase::Open && self.session.framing.close(&mut self.session.out.tail) {
                if let Err(e) = self.settle_io(cx) {
                    return self.fail(cx, e);
                }
            }
            // A closing session takes no more broadcasts (nothing more may be queued): it
            // leaves its groups now, rather than let them pile up unsent in its inboxes,
            // counted as delivered, until a slow consumer's bound fails it.
            self.leave_groups();
            self.mark_handles_closing();
            self.phase = Phase::Closing;
            if self.session.queued_bytes() == 0 && self.queue_filter_close() {
                // The filter's goodbye goes out as queued output does, then the FIN.
                if let Err(e) = self.settle_io(cx) {
                    return self.fail(cx, e);
                }
            }
            if self.session.queued_bytes() == 0 {
                return self.linger(cx);
            }
        }
        self.resume_reading_if_due(cx);
        self.rearm_timer(cx);
        self.session.out.release(cx.buffers());
        Status::Continue
    }

    /// Reading was held by a pause that has lifted: read at once (no edge will come again
    /// for bytes that waited in the socket), counting read-idle time from now.
    pub(super) fn resume_reading_if_due(&mut self, cx: &mut Context<'_>) {
        if self.phase != Phase::Open || self.session.is_closing() {
            return;
        }
        if self.session.is_reading_paused() {
            // Also a pause with no read in progress: resuming must read.
            self.flags.set(Flag::ReadHeld, true);
            return;
        }
        if self.flags.take(Flag::ReadHeld) || self.flags.get(Flag::Undelivered) {
            let now = cx.read_clock();
            self.session.restart_read_idle(Stamp::of(now));
            self.session.framing.on_resume(now);
            // READ_CLOSED: read on to WouldBlock, since the peer's EOF may have been
            // signalled while paused.
            cx.reschedule(Ready::READABLE | Ready::READ_CLOSED);
        }
    }

    pub(super) fn settle_io(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        if self.session.core.close_request == Some(CloseRequest::Abort) {
            return Ok(());
        }
        settle_output(self, cx)
    }
}

impl<S, T, C, H> Output for StreamEntry<S, T, C, H>
where
    S: Stream,
    T: Transport<Addr = S::Addr>,
    C: Decoder + 'static,
    H: Handler<C, T>,
{
    /// A stream's flush writes until the queue is empty or the socket is full.
    #[inline]
    fn flush_output(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        self.flush(cx).map(|()| false)
    }

    #[inline]
    fn report_writability(&mut self, cx: &mut Context<'_>) -> bool {
        let open = self.phase == Phase::Open;
        let queued = self.session.watermark_bytes();
        let Some(writable) = self.session.core.take_crossing(queued, open) else {
            let released = self.release_framing_output(cx);
            return self.apply_held_with_room(cx) || released;
        };
        if let Some(state) = self.extras().and_then(|e| e.handle_state.as_ref()) {
            state.set_writable(writable);
        }
        self.lend_write_buffer(cx);
        if writable {
            // A pong held while the queue was above its high watermark goes first.
            self.release_framing_output(cx);
        }
        if writable && self.apply_held(cx) {
            // A held close (or a write it could not take) ends the session: no more
            // writability to tell.
            return true;
        }
        self.handler
            .on_writability_changed(&mut self.session, writable);
        true
    }

    #[inline]
    fn output_pending(&self) -> bool {
        let queued = self.session.queued_bytes();
        queued > 0
            || self
                .session
                .core
                .crossing_pending(self.session.watermark_bytes())
    }
}
