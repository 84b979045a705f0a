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
    /// The earliest of the cron tick, the idle, write-stall and linger deadlines.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let opts = &self.session.core.options;
        let extras = self.extras();
        if self.phase == Phase::Lingering {
            return extras?.linger_until;
        }
        // The cron and the idle timeout apply only while open; `on_deadline` ignores them
        // once closing, so counting them here would re-arm an already-due timer on every
        // turn and spin the loop until the queue drained (or the write stall hit).
        let open = self.phase == Phase::Open;
        let idle = opts
            .read_idle_timeout
            .filter(|_| open && !self.session.is_reading_paused())
            .map(|t| self.session.counters.last_read.instant() + t);
        let cron = extras.and_then(|e| e.next_cron).filter(|_| open);
        let stall = extras
            .and_then(|e| e.blocked_since)
            .map(|t| t + opts.write_stall_timeout);
        let handshake = self
            .session
            .filter_io()
            .and_then(FilterIo::handshake_deadline);
        // Like read-idle: a session that does not read cannot see what the framing awaits
        // (a pong).
        let framing = self
            .session
            .framing
            .poll_timeout()
            .filter(|_| open && !self.session.is_reading_paused());
        [cron, idle, stall, handshake, framing]
            .into_iter()
            .flatten()
            .min()
    }

    /// Keeps one timer armed for the next deadline. A timer that fires early (the idle
    /// deadline moved because bytes arrived) just re-arms: nothing is done per message.
    pub(super) fn rearm_timer(&mut self, cx: &mut Context<'_>) {
        if std::mem::take(&mut self.session.core.timers_changed) {
            let next_cron = self.session.core.options.cron_period.map(|p| cx.now() + p);
            if next_cron.is_some() || self.session.extras.is_some() {
                self.extras_mut().next_cron = next_cron;
            }
            self.cancel_timer(cx);
        }
        let Some(deadline) = self.next_deadline() else {
            return;
        };
        let extras = self.extras_mut();
        match extras.timer {
            Some((_, armed)) if armed <= deadline => {}
            _ => {
                if let Some((id, _)) = extras.timer.take() {
                    cx.cancel_timer(id);
                }
                extras.timer = Some((cx.set_timer_at(deadline, 0), deadline));
            }
        }
    }

    pub(super) fn cancel_timer(&mut self, cx: &mut Context<'_>) {
        if let Some((id, _)) = self.session.extras.as_mut().and_then(|e| e.timer.take()) {
            cx.cancel_timer(id);
        }
    }

    pub(super) fn on_deadline(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let now = cx.now();
        let opts = &self.session.core.options;
        if let Some(since) = self.blocked_since() {
            if now >= since + opts.write_stall_timeout {
                return Err(Error::WriteStalled(opts.write_stall_timeout));
            }
        }
        let handshake = self
            .session
            .filter_io()
            .and_then(FilterIo::handshake_deadline);
        if handshake.is_some_and(|t| now >= t) {
            return Err(Error::HandshakeTimeout(opts.handshake_timeout));
        }
        if self.phase == Phase::Open && !self.session.is_reading_paused() {
            self.session.framing.handle_timeout(now)?;
        }
        let opts = &self.session.core.options;
        if let Some(idle) = opts.read_idle_timeout {
            let idle_since = self.session.counters.last_read.instant();
            if self.phase == Phase::Open
                && !self.session.is_reading_paused()
                && now >= idle_since + idle
            {
                return Err(Error::ReadIdle(idle));
            }
        }
        let next_cron = self.extras().and_then(|e| e.next_cron);
        if let (Some(due), Some(period)) = (next_cron, opts.cron_period) {
            if now >= due && self.phase == Phase::Open {
                // Skip missed ticks rather than firing a burst after a stall.
                let missed = (now - due).as_nanos() / period.as_nanos().max(1);
                self.extras_mut().next_cron = Some(due + period * (missed + 1) as u32);
                self.lend_write_buffer(cx);
                if !self.session.is_closing() {
                    self.session
                        .framing
                        .on_cron(now, &mut self.session.out.tail);
                }
                self.handler.on_cron(&mut self.session);
            }
        }
        Ok(())
    }
}
