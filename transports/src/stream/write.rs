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
            match self.write_some() {
                Ok(0) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.session.counters.bytes_out += n as u64;
                    cx.extension::<Metrics>().bytes_out += n as u64;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        }
        if progressed {
            self.session.counters.last_write = Stamp::of(cx.now());
        }
        if self.session.queued_bytes() == 0 {
            if let Some(extras) = self.session.extras.as_mut() {
                extras.blocked_since = None;
                if let Some(io) = extras.filter.as_mut() {
                    give_back(&mut io.wire_out, cx);
                }
            }
            give_back(&mut self.session.out.tail, cx);
        } else if progressed || self.blocked_since().is_none() {
            self.extras_mut().blocked_since = Some(cx.now());
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
                    .drain_into(ENCODE_BATCH, |plain| filter.encode(plain, wire))?;
                io.plain_out += moved as u64;
            }
            io.filter.flush(&mut io.wire_out)?;
        }
        Ok(io.wire_out.len())
    }

    /// One write to the socket: the filter's wire bytes, or the outbound queue (`writev`).
    pub(super) fn write_some(&mut self) -> io::Result<usize> {
        match self.session.extras.as_mut().and_then(|e| e.filter.as_mut()) {
            Some(io) => {
                let n = self.stream.write(&io.wire_out)?;
                io.wire_out.advance(n);
                Ok(n)
            }
            None => self.session.out.write_to(&mut self.stream),
        }
    }

    /// Lends the session a pooled buffer to encode into, so writes do not allocate.
    pub(super) fn lend_write_buffer(&mut self, cx: &mut Context<'_>) {
        if self.session.out.tail.capacity() == 0 {
            self.session.out.tail = cx.buffers().take();
        }
    }

    /// After every event: act on close requests, flush, report watermarks, re-arm the timer.
    pub(super) fn settle(&mut self, cx: &mut Context<'_>) -> Status {
        let queued = std::mem::take(&mut self.session.unreported_messages_out);
        if queued > 0 {
            cx.extension::<Metrics>().messages_out += u64::from(queued);
        }
        if let Err(e) = self.settle_io(cx) {
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
            self.phase = Phase::Closing;
            if self.session.queued_bytes() == 0 {
                return self.linger(cx);
            }
        }
        self.resume_reading_if_due(cx);
        self.rearm_timer(cx);
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
            self.session.counters.last_read = Stamp::of(cx.now());
            self.session.framing.on_resume(cx.now());
            // READ_CLOSED: read on to WouldBlock, since the peer's EOF may have been
            // signalled while paused.
            cx.reschedule(Ready::READABLE | Ready::READ_CLOSED);
        }
    }

    pub(super) fn settle_io(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        if self.session.core.close_request == Some(CloseRequest::Abort) {
            return Ok(());
        }
        // The handler heard about a crossing and may have written more: flush again. A few
        // rounds at most, so a handler refilling a fast reader's queue cannot hold the loop;
        // what is left waits for the next writable event.
        for _ in 0..4 {
            self.flush(cx)?;
            if !self.report_writability(cx) {
                return Ok(());
            }
        }
        // Work is left after the last round: the handler wrote again after the last flush
        // (no writable edge may come for it: that flush did not fill the socket), or a
        // crossing is still to be told. The second matters as much: when the last round
        // reported "not writable" for a queue that the flush had meanwhile drained, the
        // handler stopped producing and nothing would ever tell it to resume.
        if self.session.queued_bytes() > 0 || self.writability_pending() {
            cx.reschedule(Ready::WRITABLE);
        }
        Ok(())
    }

    /// Whether `report_writability` has a crossing to tell.
    pub(super) fn writability_pending(&self) -> bool {
        let options = &self.session.core.options;
        crossing_pending(
            self.session.core.writable,
            self.reported_writable,
            self.session.queued_bytes(),
            options.high_watermark,
            options.low_watermark,
        )
    }

    /// Tells the handler when the queue crossed a watermark. Returns true when it did.
    pub(super) fn report_writability(&mut self, cx: &mut Context<'_>) -> bool {
        let (high, low) = (
            self.session.core.options.high_watermark,
            self.session.core.options.low_watermark,
        );
        if self.session.core.writable == self.reported_writable {
            let queued = self.session.queued_bytes();
            self.session.core.writable =
                next_writability(self.reported_writable, queued, high, low);
        }
        if self.session.core.writable == self.reported_writable || self.phase != Phase::Open {
            return false;
        }
        self.reported_writable = self.session.core.writable;
        if let Some(state) = self.extras().and_then(|e| e.handle_state.as_ref()) {
            state.set_writable(self.reported_writable);
        }
        self.lend_write_buffer(cx);
        self.handler
            .on_writability_changed(&mut self.session, self.reported_writable);
        true
    }
}
