//! How clients redial (TCP and UDP alike): capped, jittered exponential backoff, an optional
//! limit on consecutive failures, and one reactor timer.

use std::fmt;
use std::time::Duration;

use getty_reactor::{Context, TimerId};

use crate::options::clamp_timeout;
use crate::Error;

/// The redial settings a client builder carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedialPolicy {
    min: Duration,
    max: Duration,
    max_failures: Option<u32>,
}

impl Default for RedialPolicy {
    /// 100 ms doubling to 5 s; never give up.
    fn default() -> Self {
        RedialPolicy {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_failures: None,
        }
    }
}

impl RedialPolicy {
    pub(crate) fn backoff(self, min: Duration, max: Duration) -> Self {
        let min = clamp_timeout(min.max(Duration::from_millis(1)));
        RedialPolicy {
            min,
            max: clamp_timeout(max.max(min)),
            ..self
        }
    }

    pub(crate) fn max_failures(self, limit: Option<u32>) -> Self {
        RedialPolicy {
            max_failures: limit,
            ..self
        }
    }

    /// `min * 2^failures`, capped at `max`, drawn uniformly from its upper half so that many
    /// clients do not redial in step.
    fn delay(&self, failures: u32) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(1u32 << failures.min(20))
            .min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// A client's redial state.
pub(crate) struct Redial {
    policy: RedialPolicy,
    /// What is dialled, for the log ("tcp", "udp").
    kind: &'static str,
    /// The client's module, so its log lines stay under its own target.
    log_target: &'static str,
    /// Consecutive failed dials; reset by a good one.
    failures: u32,
    /// Consecutive sessions the peer ended within [`QUICK_END`] of opening; reset by one
    /// that lasted or that this side closed. They lengthen the backoff as failures do, but
    /// never end the client.
    quick_ends: u32,
    timer: Option<TimerId>,
}

/// A session the peer (or an error) ends sooner than this after it opened (a peer that
/// accepts and closes at once: overloaded, at its connection limit, or hostile) makes the
/// next redial wait as after a failed dial, so that clients back off from such a server
/// instead of redialling it at the shortest delay for ever. A session this side closed is
/// not one, and resets the count: the server served it until the client chose to end it (a
/// client may close to send one request per connection).
pub(crate) const QUICK_END: Duration = Duration::from_secs(1);

impl Redial {
    pub(crate) fn new(policy: RedialPolicy, kind: &'static str, log_target: &'static str) -> Self {
        Redial {
            policy,
            kind,
            log_target,
            failures: 0,
            quick_ends: 0,
            timer: None,
        }
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// A good dial: the failures before it no longer count. Returns how many it wiped,
    /// for [`take_back_success`](Self::take_back_success).
    pub(crate) fn succeeded(&mut self) -> u32 {
        std::mem::take(&mut self.failures)
    }

    /// A success turned out a failure (a TLS 1.3 server refused the client's certificate
    /// after the client's side of the handshake was done): the `wiped` failures it reset
    /// count again, with those counted since, so that a client refused every time still
    /// reaches its limit, however its connections' dials interleave.
    pub(crate) fn take_back_success(&mut self, wiped: u32) {
        self.failures = self.failures.saturating_add(wiped);
    }

    /// A session that had opened ended after it `lived` that long, `by_peer` (its EOF or
    /// close frame, an error, or a panic in the handler) or by this side's close. One the
    /// peer ended within [`QUICK_END`] lengthens the next redial's delay; one that lasted,
    /// or that this side closed (the server served it until the client chose to end it),
    /// resets that.
    pub(crate) fn session_ended(
        &mut self,
        lived: Duration,
        by_peer: bool,
        addr: &impl fmt::Display,
    ) {
        if !by_peer || lived >= QUICK_END {
            self.quick_ends = 0;
            return;
        }
        self.quick_ends = self.quick_ends.saturating_add(1);
        log::debug!(
            target: self.log_target,
            "{} session to {addr} ended {lived:?} after it opened ({} in a row); redialling \
             with backoff",
            self.kind,
            self.quick_ends
        );
    }

    pub(crate) fn failed(&mut self, addr: &impl fmt::Display, error: &Error) {
        self.failures = self.failures.saturating_add(1);
        // The first failure of a run is news; the rest of the run is noise.
        if self.failures == 1 {
            log::warn!(
                target: self.log_target,
                "{} dial {addr} failed: {error}; redialling with backoff",
                self.kind
            );
        } else {
            log::debug!(
                target: self.log_target,
                "{} dial {addr} failed again ({}): {error}",
                self.kind,
                self.failures
            );
        }
    }

    /// True once the failure limit is reached (and says so in the log).
    pub(crate) fn gave_up(&self, addr: &impl fmt::Display) -> bool {
        let gave_up = self
            .policy
            .max_failures
            .is_some_and(|max| self.failures >= max);
        if gave_up {
            log::error!(
                target: self.log_target,
                "giving up on {addr} after {} consecutive failed {} dials",
                self.failures,
                self.kind
            );
        }
        gave_up
    }

    /// Arms the redial timer when `missing` sessions are wanted and none is armed.
    pub(crate) fn schedule(&mut self, cx: &mut Context<'_>, missing: usize) {
        if self.timer.is_some() || missing == 0 || cx.is_shutting_down() {
            return;
        }
        self.timer = Some(cx.set_timer(self.next_delay(), 0));
    }

    /// The delay before the next redial: failed dials and sessions that ended at once
    /// count alike.
    fn next_delay(&self) -> Duration {
        self.policy
            .delay(self.failures.saturating_add(self.quick_ends))
    }

    /// The redial timer fired.
    pub(crate) fn fired(&mut self) {
        self.timer = None;
    }

    pub(crate) fn cancel(&mut self, cx: &mut Context<'_>) {
        if let Some(timer) = self.timer.take() {
            cx.cancel_timer(timer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sessions that end at once lengthen the backoff as failed dials do, without counting
    /// towards the failure limit; one that lasted resets them.
    #[test]
    fn sessions_that_end_at_once_lengthen_the_backoff_but_do_not_end_the_client() {
        let policy = RedialPolicy::default()
            .backoff(Duration::from_millis(10), Duration::from_secs(10))
            .max_failures(Some(1));
        let mut redial = Redial::new(policy, "tcp", "test");
        let at_once = Duration::from_millis(3);
        for ends in 1..=4u32 {
            redial.session_ended(at_once, true, &"peer");
            let floor = Duration::from_millis(5) * (1 << ends);
            let delay = redial.next_delay();
            assert!(delay >= floor, "{ends} quick ends: {delay:?}");
        }
        assert!(!redial.gave_up(&"peer"), "quick ends are not failures");
        redial.session_ended(QUICK_END, true, &"peer");
        assert!(
            redial.next_delay() <= Duration::from_millis(10),
            "reset by a lasting session"
        );
        redial.session_ended(at_once, true, &"peer");
        redial.session_ended(at_once, false, &"peer");
        assert!(
            redial.next_delay() <= Duration::from_millis(10),
            "reset by a session this side closed"
        );
    }

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_in_the_upper_half() {
        let policy =
            RedialPolicy::default().backoff(Duration::from_millis(10), Duration::from_millis(100));
        for (failures, ceiling_ms) in [(0, 10), (1, 20), (2, 40), (3, 80), (4, 100), (30, 100)] {
            for _ in 0..50 {
                let d = policy.delay(failures);
                let ceiling = Duration::from_millis(ceiling_ms);
                assert!(
                    d >= ceiling / 2 && d <= ceiling,
                    "{failures} failures: {d:?}"
                );
            }
        }
    }
}
