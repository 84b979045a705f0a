//! The one timer of a session, whatever its transport: when its cron ticks, since when its
//! output has been blocked, and one reactor timer kept armed for whichever deadline of the
//! entry comes first.
//!
//! A session never arms a timer per message or per deadline. Deadlines that move with
//! traffic (read-idle moves with every read) are not re-armed when they move: the timer
//! fires at the old deadline, the entry finds nothing due and arms it again for the new
//! one. So a busy session touches the reactor's timer heap about once per idle period.

use std::time::{Duration, Instant};

use getty_reactor::{Context, TimerId};

use crate::{Error, SessionOptions};

/// A session's timer and the deadlines every session has (an entry adds its own, such as
/// a handshake's or a retry's, when it asks for the next one).
#[derive(Debug, Default)]
pub(crate) struct SessionTimer {
    /// The reactor timer armed, and for when.
    armed: Option<(TimerId, Instant)>,
    next_cron: Option<Instant>,
    /// Since when queued output has made no progress (the write-stall timeout runs).
    blocked_since: Option<Instant>,
}

impl SessionTimer {
    /// Starts the cron period from now (the session opened, or the handler changed a
    /// timer option), and drops the armed timer so that the next [`arm`](Self::arm) takes
    /// the new deadlines. The clock is read here rather than taken from the loop pass's
    /// start: a period changed late in a long pass still lasts the whole period.
    pub(crate) fn restart(&mut self, cx: &mut Context<'_>, cron_period: Option<Duration>) {
        self.next_cron = cron_period.map(|period| Instant::now() + period);
        self.cancel(cx);
    }

    /// Keeps the timer armed for `deadline` or earlier: a timer due before it stays, fires,
    /// finds nothing due and arms again.
    #[inline]
    pub(crate) fn arm(&mut self, cx: &mut Context<'_>, deadline: Instant) {
        if self.armed.is_some_and(|(_, at)| at <= deadline) {
            return;
        }
        self.cancel(cx);
        self.armed = Some((cx.set_timer_at(deadline, 0), deadline));
    }

    #[inline]
    pub(crate) fn cancel(&mut self, cx: &mut Context<'_>) {
        if let Some((id, _)) = self.armed.take() {
            cx.cancel_timer(id);
        }
    }

    /// The reactor ran the timer: it is no longer armed.
    #[inline]
    pub(crate) fn fired(&mut self) {
        self.armed = None;
    }

    /// Whether a cron tick is due at `now`; if so, the next one is scheduled. Ticks missed
    /// while the loop was busy are skipped, not fired in a burst.
    #[inline]
    pub(crate) fn take_cron_tick(&mut self, now: Instant, period: Option<Duration>) -> bool {
        let (Some(due), Some(period)) = (self.next_cron, period) else {
            return false;
        };
        if now < due {
            return false;
        }
        let missed = (now - due).as_nanos() / period.as_nanos().max(1);
        self.next_cron = Some(due + period * (missed + 1) as u32);
        true
    }

    /// A flush left output queued: the write-stall timeout runs from the first such flush,
    /// and again from any flush that still made progress.
    #[inline]
    pub(crate) fn note_blocked(&mut self, now: Instant, progressed: bool) {
        if progressed || self.blocked_since.is_none() {
            self.blocked_since = Some(now);
        }
    }

    /// Whether the last flush left output queued: the socket is not taking it all.
    #[inline]
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked_since.is_some()
    }

    /// Nothing is left queued (or waiting is not a stall): no write-stall deadline.
    #[inline]
    pub(crate) fn note_unblocked(&mut self) {
        self.blocked_since = None;
    }

    /// The earliest of the deadlines every session has: the cron tick while `open`, the
    /// read-idle timeout from `idle_since` (the last read; `None` while the timeout does
    /// not count, as for a session that holds its reading: it is not idle by its peer's
    /// fault), and the write stall while output is blocked.
    // Always inlined: LLVM kept it out of line in the datagram entry's settling, which
    // runs after every event, at 29 instructions a call.
    #[inline(always)]
    pub(crate) fn next_deadline(
        &self,
        options: &SessionOptions,
        open: bool,
        idle_since: Option<Instant>,
    ) -> Option<Instant> {
        let cron = self.next_cron.filter(|_| open);
        let idle = idle_deadline(options, idle_since);
        earliest(earliest(cron, idle), self.stall_deadline(options))
    }

    /// `WriteStalled` once output has been blocked for the write-stall timeout.
    #[inline]
    pub(crate) fn check_stall(&self, now: Instant, options: &SessionOptions) -> Result<(), Error> {
        match self.stall_deadline(options) {
            Some(deadline) if now >= deadline => {
                Err(Error::WriteStalled(options.write_stall_timeout))
            }
            _ => Ok(()),
        }
    }

    #[inline]
    fn stall_deadline(&self, options: &SessionOptions) -> Option<Instant> {
        self.blocked_since
            .map(|since| since + options.write_stall_timeout)
    }
}

/// `ReadIdle` once a session that reads (`idle_since`, as for
/// [`SessionTimer::next_deadline`]) has read nothing for the read-idle timeout.
#[inline]
pub(crate) fn check_read_idle(
    now: Instant,
    options: &SessionOptions,
    idle_since: Option<Instant>,
) -> Result<(), Error> {
    match (
        idle_deadline(options, idle_since),
        options.read_idle_timeout,
    ) {
        (Some(deadline), Some(timeout)) if now >= deadline => Err(Error::ReadIdle(timeout)),
        _ => Ok(()),
    }
}

/// When the read-idle timeout of a session reading since `idle_since` (as for
/// [`SessionTimer::next_deadline`]) expires, if it counts at all.
#[inline]
pub(crate) fn idle_deadline(
    options: &SessionOptions,
    idle_since: Option<Instant>,
) -> Option<Instant> {
    Some(idle_since? + options.read_idle_timeout?)
}

/// The earlier of two optional deadlines. (Cheaper than a `min` over an iterator: this runs
/// after every event of every session.)
#[inline]
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SessionOptions {
        SessionOptions::default()
            .cron_period(Some(Duration::from_secs(1)))
            .read_idle_timeout(Some(Duration::from_secs(5)))
    }

    fn timer_with_cron(at: Instant) -> SessionTimer {
        SessionTimer {
            next_cron: Some(at),
            ..SessionTimer::default()
        }
    }

    #[test]
    fn missed_cron_ticks_are_skipped_not_fired_in_a_burst() {
        let start = Instant::now();
        let period = Some(Duration::from_secs(1));
        let mut timer = timer_with_cron(start + Duration::from_secs(1));
        assert!(!timer.take_cron_tick(start, period), "not due yet");
        let late = start + Duration::from_millis(3500);
        assert!(timer.take_cron_tick(late, period));
        assert_eq!(timer.next_cron, Some(start + Duration::from_secs(4)));
        assert!(!timer.take_cron_tick(late, period), "one tick, not three");
        assert!(!timer.take_cron_tick(late, None), "no period: no tick");
    }

    #[test]
    fn the_next_deadline_is_the_earliest_that_applies() {
        let start = Instant::now();
        let opts = options();
        let mut timer = timer_with_cron(start + Duration::from_secs(1));
        let cron = Some(start + Duration::from_secs(1));
        assert_eq!(timer.next_deadline(&opts, true, Some(start)), cron);
        let idle = Some(start + Duration::from_secs(5));
        assert_eq!(
            timer.next_deadline(&opts, false, Some(start)),
            idle,
            "cron only while open"
        );
        assert_eq!(
            timer.next_deadline(&opts, false, None),
            None,
            "idle only while reading"
        );
        timer.note_blocked(start, false);
        let stall = start + opts.write_stall_timeout;
        assert_eq!(timer.next_deadline(&opts, false, None), Some(stall));
        timer.note_unblocked();
        assert_eq!(timer.next_deadline(&opts, false, None), None);
    }

    #[test]
    fn the_stall_runs_from_the_last_flush_that_made_progress() {
        let start = Instant::now();
        let opts = options();
        let stall = opts.write_stall_timeout;
        let mut timer = SessionTimer::default();
        timer.note_blocked(start, false);
        timer.note_blocked(start + Duration::from_secs(1), false);
        assert!(
            timer.check_stall(start + stall, &opts).is_err(),
            "no progress"
        );
        timer.note_blocked(start + Duration::from_secs(2), true);
        assert!(timer.check_stall(start + stall, &opts).is_ok());
        let later = start + Duration::from_secs(2) + stall;
        assert!(matches!(
            timer.check_stall(later, &opts),
            Err(Error::WriteStalled(_))
        ));
    }

    #[test]
    fn read_idle_counts_only_while_reading() {
        let start = Instant::now();
        let opts = options();
        let later = start + Duration::from_secs(5);
        assert!(matches!(
            check_read_idle(later, &opts, Some(start)),
            Err(Error::ReadIdle(_))
        ));
        assert!(check_read_idle(later, &opts, None).is_ok());
        assert!(check_read_idle(later - Duration::from_millis(1), &opts, Some(start)).is_ok());
        let no_timeout = SessionOptions::default();
        assert!(check_read_idle(later, &no_timeout, Some(start)).is_ok());
    }
}
