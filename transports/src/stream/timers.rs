//! The session's one timer: which deadline is next (cron, read idle, write stall,
//! handshake, linger) and what happens when it fires.

use super::*;

impl<S, T, C, H> StreamEntry<S, T, C, H>
where
    S: Stream,
    T: Transport<Addr = S::Addr>,
    C: Decoder + 'static,
    H: Handler<C, T>,
{
    /// The earliest of the session's deadlines: the ones every session has (cron, read
    /// idle, write stall), the TLS handshake's and the framing's (a pong awaited); or the
    /// linger's alone, once `on_close` has run.
    #[inline]
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let extras = self.extras();
        if self.phase == Phase::Lingering {
            return extras?.linger_until;
        }
        // The cron and the idle timeout apply only while open; `on_deadline` ignores them
        // once closing, so counting them here would re-arm an already-due timer on every
        // turn and spin the loop until the queue drained (or the write stall hit).
        let open = self.phase == Phase::Open;
        let options = &self.session.core.options;
        let idle_since = self.idle_since();
        let next = match extras {
            // No cron, no stall and no handshake without extras: the common case, and cheap.
            None => idle_deadline(options, idle_since),
            Some(extras) => {
                let own = extras.timer.next_deadline(options, open, idle_since);
                let handshake = extras
                    .filter
                    .as_ref()
                    .and_then(|io| io.handshake_deadline());
                earliest(own, handshake)
            }
        };
        // Like read-idle: only while reading (a pong awaited cannot be seen otherwise).
        match self.session.framing.poll_timeout() {
            Some(framing) if self.reading() => earliest(next, Some(framing)),
            _ => next,
        }
    }

    /// Open and not paused. A session that does not read is not idle by its peer's fault,
    /// nor can it see what its framing awaits.
    #[inline]
    fn reading(&self) -> bool {
        self.phase == Phase::Open && !self.session.is_reading_paused()
    }

    /// Since when the read-idle timeout counts, if it does: the last read, while reading.
    #[inline]
    fn idle_since(&self) -> Option<Instant> {
        let counts = self.session.core.options.read_idle_timeout.is_some() && self.reading();
        counts.then(|| self.session.last_read().instant())
    }

    /// Keeps one timer armed for the next deadline. A timer that fires early (the idle
    /// deadline moved because bytes arrived) just re-arms: nothing is done per message.
    #[inline]
    pub(super) fn rearm_timer(&mut self, cx: &mut Context<'_>) {
        if std::mem::take(&mut self.session.core.timers_changed) {
            // An idle session with no cron keeps no extras for it.
            let period = self.session.core.options.cron_period;
            if period.is_some() || self.session.extras.is_some() {
                self.extras_mut().timer.restart(cx, period);
            }
        }
        if let Some(deadline) = self.next_deadline() {
            self.extras_mut().timer.arm(cx, deadline);
        }
    }

    pub(super) fn cancel_timer(&mut self, cx: &mut Context<'_>) {
        if let Some(extras) = self.session.extras.as_mut() {
            extras.timer.cancel(cx);
        }
    }

    pub(super) fn on_deadline(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let now = cx.now();
        self.check_stall(cx, now)?;
        let opts = &self.session.core.options;
        let handshake = self
            .session
            .filter_io()
            .and_then(FilterIo::handshake_deadline);
        if handshake.is_some_and(|t| now >= t) {
            return Err(Error::HandshakeTimeout(opts.handshake_timeout));
        }
        if self.reading() {
            self.session.framing.handle_timeout(now)?;
        }
        check_read_idle(now, &self.session.core.options, self.idle_since())?;
        if self.phase != Phase::Open {
            return Ok(());
        }
        let period = self.session.core.options.cron_period;
        let tick = self.session.extras.as_mut();
        if tick.is_some_and(|e| e.timer.take_cron_tick(now, period)) {
            self.lend_write_buffer(cx);
            if !self.session.is_closing() {
                self.session
                    .framing
                    .on_cron(now, &mut self.session.out.tail);
            }
            self.handler.on_cron(&mut self.session);
        }
        Ok(())
    }

    /// `WriteStalled` once queued output has not moved for the write-stall timeout. Linux
    /// tells a TCP socket writable only once a third of its send buffer is free, which a
    /// steady reader slower than that buffer per timeout never frees in time: so a write is
    /// tried first, and whatever the peer took since counts as progress.
    fn check_stall(&mut self, cx: &mut Context<'_>, now: Instant) -> Result<(), Error> {
        let options = &self.session.core.options;
        if self
            .extras()
            .is_none_or(|e| e.timer.check_stall(now, options).is_ok())
        {
            return Ok(());
        }
        self.flush(cx)?;
        match self.extras() {
            Some(extras) => extras.timer.check_stall(now, &self.session.core.options),
            None => Ok(()),
        }
    }
}
