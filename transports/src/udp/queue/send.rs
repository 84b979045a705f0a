//! Sending: one step of a flush through a [`Link`], parking the destinations whose
//! receiver is full, retrying them, and counting what is dropped.

use super::*;
use crate::core::earliest;

impl<A: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static> DatagramQueue<A> {
    fn fail(&mut self, error: io::Error) -> Step {
        // The send got past the socket's own buffer (the kernel charges it first): whatever
        // was full is not any more, and a stale flag would keep the endpoint waiting for
        // room it has.
        self.socket_full = false;
        let named = match self.peer_errors {
            // Unconnected unix: the error is about this datagram's receiver: name it.
            PeerErrors::Drop => self.items.front().and_then(|i| i.peer.clone()),
            _ => None,
        };
        if let Some(peer) = named.as_ref().filter(|_| about_receiver(&error)) {
            // That receiver is gone (or its path unusable): the datagram is dropped, and so
            // is what else comes up for it in this flush, unsent; one report for them all.
            self.own_failures = 0;
            self.peer_failures = 0;
            self.pop(1);
            self.dropped += 1;
            note(&mut self.reports, peer, 1, DropReason::Failed, Some(error));
            self.failed.insert(peer.clone());
            return Step::Dropped;
        }
        let give_up = if self.peer_errors == PeerErrors::Keep && is_gone(&error) {
            false
        } else if crate::udp::socket::is_peer_error(&error) {
            self.peer_failures += 1;
            self.peer_errors == PeerErrors::Drop || self.peer_failures >= PEER_FAILURES_BEFORE_DROP
        } else {
            self.own_failures += 1;
            self.own_failures >= OWN_FAILURES_BEFORE_DROP
        };
        if !give_up {
            return Step::Failed {
                error,
                dropped: None,
            };
        }
        self.own_failures = 0;
        self.peer_failures = 0;
        let len = self.pop(1);
        if let Some(peer) = named {
            // A datagram of its own kept failing (too long for the receiver): reported
            // with the others of this flush, by destination.
            self.dropped += 1;
            note(&mut self.reports, &peer, 1, DropReason::Failed, Some(error));
            return Step::Dropped;
        }
        Step::Failed {
            error,
            dropped: Some(len),
        }
    }

    /// Offers up to `per_call` datagrams from the front to `link` (one syscall), which
    /// returns how many it sent. With parking on, datagrams for a parked destination are
    /// first moved to its queue (those for a destination that failed in this flush are
    /// dropped), and a batch stops before the next one of them.
    pub(crate) fn send_step(
        &mut self,
        now: Instant,
        per_call: usize,
        link: &mut impl Link<A>,
    ) -> Step {
        self.park_front(now);
        if self.items.is_empty() {
            if self.parked_datagrams == 0 {
                // Nothing to send: no room to wait for.
                self.socket_full = false;
            }
            return Step::Empty;
        }
        let result = {
            let mut k = per_call.clamp(1, MAX_BATCH).min(self.items.len());
            if !self.parked.is_empty() || !self.failed.is_empty() {
                // The front is neither (`park_front`): send up to the next that is.
                k = 1 + self
                    .items
                    .iter()
                    .take(k)
                    .skip(1)
                    .take_while(|item| !self.held_back(item.peer.as_ref()))
                    .count();
            }
            let mut batch = [const { MaybeUninit::<Outgoing<'_, A>>::uninit() }; MAX_BATCH];
            let mut offset = 0;
            for (slot, item) in batch.iter_mut().zip(self.items.iter().take(k)) {
                let data: &[u8] = match &item.chunk {
                    Some(chunk) => chunk,
                    None => {
                        let data = &self.tail[offset..offset + item.len];
                        offset += item.len;
                        data
                    }
                };
                slot.write(Outgoing {
                    data,
                    peer: item.peer.as_ref(),
                });
            }
            // SAFETY: the loop initialised the first `k` elements (`k <= items.len()`), and
            // `Outgoing` has no drop glue, so the uninitialised rest is never touched.
            let ready =
                unsafe { std::slice::from_raw_parts(batch.as_ptr().cast::<Outgoing<'_, A>>(), k) };
            link.send(ready)
        };
        match result {
            Ok(0) => self.fail(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                self.own_failures = 0;
                self.peer_failures = 0;
                self.socket_full = false;
                let bytes = self.pop(n);
                Step::Sent {
                    datagrams: n,
                    bytes,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if self.park_limits.is_none() {
                    return Step::Blocked;
                }
                self.socket_full = link.socket_full();
                if !self.socket_full && self.park_first(now) {
                    Step::Parked
                } else {
                    Step::Blocked
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Sent {
                datagrams: 0,
                bytes: 0,
            },
            Err(e) => self.fail(e),
        }
    }

    /// The destination is parked, or failed in this flush: its datagrams are not sent in
    /// order.
    fn held_back(&self, peer: Option<&A>) -> bool {
        peer.is_some_and(|peer| self.parked.contains_key(peer) || self.failed.contains(peer))
    }

    /// Moves the datagrams at the front whose destination is parked into its queue, and
    /// drops those whose destination failed in this flush.
    fn park_front(&mut self, now: Instant) {
        while !(self.parked.is_empty() && self.failed.is_empty()) {
            let Some(peer) = self.items.front().and_then(|i| i.peer.as_ref()) else {
                break;
            };
            if self.failed.contains(peer) {
                let peer = peer.clone();
                self.pop(1);
                self.dropped += 1;
                note(&mut self.reports, &peer, 1, DropReason::Failed, None);
                continue;
            }
            if !self.parked.contains_key(peer) {
                break;
            }
            let Some((Some(peer), data)) = self.take_front() else {
                unreachable!("the front has a parked destination");
            };
            self.hold(now, peer, data);
        }
    }

    /// Parks the first datagram's destination (its receiver is full), with the datagram.
    /// False when the datagram has no destination of its own (a connected socket).
    fn park_first(&mut self, now: Instant) -> bool {
        if self.items.front().is_none_or(|item| item.peer.is_none()) {
            return false;
        }
        let Some((Some(peer), data)) = self.take_front() else {
            unreachable!("the front has a destination");
        };
        self.own_failures = 0;
        self.peer_failures = 0;
        let retry_at = now + FIRST_RETRY;
        self.parkings += 1;
        self.parked.entry(peer.clone()).or_insert(Parked {
            held: VecDeque::new(),
            bytes: 0,
            unreported: [0; 2],
            reported_at: None,
            since: self.parkings,
            progress: now,
            retry_at,
            wait: FIRST_RETRY,
        });
        self.next_retry = earliest(self.next_retry, Some(retry_at));
        self.hold(now, peer, data);
        true
    }

    /// Appends a datagram to a parked destination's queue, then applies the bounds: while
    /// it holds more than a destination may, its oldest go (its newest always stays); while
    /// all of them hold more than they may, the destination parked longest loses its
    /// oldest. Each datagram is charged its payload plus [`DATAGRAM_OVERHEAD`].
    fn hold(&mut self, now: Instant, peer: A, data: Bytes) {
        let limits = self.park_limits.expect("parking is on");
        let parked = self.parked.get_mut(&peer).expect("a parked destination");
        parked.bytes += data.len();
        self.parked_bytes += data.len();
        parked.held.push_back(data);
        self.parked_datagrams += 1;
        let mut dropped = 0;
        while parked.charge() > limits.per_peer && parked.held.len() > 1 {
            let oldest = parked.held.pop_front().expect("more than one held");
            parked.bytes -= oldest.len();
            self.parked_bytes -= oldest.len();
            self.parked_datagrams -= 1;
            dropped += 1;
        }
        if dropped > 0 {
            parked.unreported[0] += dropped;
            self.dropped += dropped;
            if let Some(due) =
                report_held_back(&peer, parked, limits, now, false, &mut self.reports)
            {
                self.next_retry = earliest(self.next_retry, Some(due));
            }
        }
        while self.parked_charge() > limits.total {
            // Rare (the bound of them all is many destinations' worth): a scan will do.
            let Some((longest, parked)) = self
                .parked
                .iter_mut()
                .filter(|(_, p)| !p.held.is_empty())
                .min_by_key(|(_, p)| p.since)
            else {
                break;
            };
            let oldest = parked.held.pop_front().expect("not empty");
            parked.bytes -= oldest.len();
            self.parked_bytes -= oldest.len();
            self.parked_datagrams -= 1;
            self.dropped += 1;
            parked.unreported[1] += 1;
            if parked.held.is_empty() {
                // Nothing left: it is unparked (and its drops reported) on its next retry,
                // which is now.
                parked.retry_at = now;
                self.next_retry = earliest(self.next_retry, Some(now));
            } else if let Some(due) =
                report_held_back(longest, parked, limits, now, false, &mut self.reports)
            {
                self.next_retry = earliest(self.next_retry, Some(due));
            }
        }
    }

    /// Retries the parked destinations that are due, each up to `per_call` datagrams per
    /// send. A destination whose queue empties is unparked; one whose receiver is still
    /// full waits twice as long as before (or from the first wait again when some went
    /// out), and is dropped whole once it has taken nothing for `stall`; one whose send
    /// fails otherwise is dropped whole at once (and what comes up for it in order in the
    /// same flush, unsent). When the socket's own buffer is full the pass stops there: no
    /// destination is blamed, and those not tried stay due. Drops past a bound held back
    /// for a report are reported when [`REPORT_INTERVAL`] has passed, or when their
    /// destination leaves. Returns the datagrams and bytes sent. Allocates nothing (but a
    /// report of a drop).
    pub(crate) fn retry_parked(
        &mut self,
        now: Instant,
        stall: Duration,
        per_call: usize,
        link: &mut impl Link<A>,
    ) -> (usize, usize) {
        if self.next_retry.is_none_or(|at| now < at) {
            return (0, 0);
        }
        let limits = self.park_limits.expect("parking is on");
        let (mut datagrams, mut bytes) = (0, 0);
        let mut next_retry: Option<Instant> = None;
        let mut emptied = false;
        // Called when room may have come (a timer, writable readiness): try again.
        self.socket_full = false;
        let Self {
            parked: map,
            parked_bytes,
            parked_datagrams,
            reports,
            socket_full,
            dropped,
            failed,
            ..
        } = self;
        for (peer, parked) in map.iter_mut() {
            if parked.held.is_empty() {
                // Emptied by the bound of them all: unparked.
                report_held_back(peer, parked, limits, now, true, reports);
                emptied = true;
                continue;
            }
            let report_due = report_held_back(peer, parked, limits, now, false, reports);
            if *socket_full || parked.retry_at > now {
                next_retry = earliest(next_retry, Some(parked.retry_at));
                if let Some(due) = report_due {
                    next_retry = earliest(next_retry, Some(due));
                }
                continue;
            }
            let mut progressed = false;
            let mut interrupted = 0;
            loop {
                if parked.held.is_empty() {
                    break;
                }
                let k = per_call.clamp(1, MAX_BATCH).min(parked.held.len());
                let result = {
                    let mut batch = [const { MaybeUninit::<Outgoing<'_, A>>::uninit() }; MAX_BATCH];
                    for (slot, data) in batch.iter_mut().zip(parked.held.iter().take(k)) {
                        slot.write(Outgoing {
                            data,
                            peer: Some(peer),
                        });
                    }
                    // SAFETY: the loop initialised the first `k` elements (`k <=
                    // held.len()`); `Outgoing` has no drop glue.
                    let ready = unsafe {
                        std::slice::from_raw_parts(batch.as_ptr().cast::<Outgoing<'_, A>>(), k)
                    };
                    link.send(ready)
                };
                let failure = match result {
                    Ok(0) => io::ErrorKind::WriteZero.into(),
                    Ok(n) => {
                        *socket_full = false;
                        for data in parked.held.drain(..n.min(k)) {
                            parked.bytes -= data.len();
                            *parked_bytes -= data.len();
                            *parked_datagrams -= 1;
                            bytes += data.len();
                            datagrams += 1;
                        }
                        parked.progress = now;
                        progressed = true;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if link.socket_full() {
                            // Not this receiver's doing: it stays due, untouched.
                            *socket_full = true;
                            if progressed {
                                parked.wait = FIRST_RETRY;
                            }
                            next_retry = earliest(next_retry, Some(parked.retry_at));
                            break;
                        }
                        *socket_full = false;
                        if now >= parked.progress + stall {
                            let n = parked.held.len() as u64;
                            report_held_back(peer, parked, limits, now, true, reports);
                            note(reports, peer, n, DropReason::Stalled(stall), None);
                            *dropped += n;
                            *parked_bytes -= parked.bytes;
                            *parked_datagrams -= parked.held.len();
                            parked.held.clear();
                            parked.bytes = 0;
                            break;
                        }
                        parked.wait = if progressed {
                            FIRST_RETRY
                        } else {
                            (parked.wait * 2).min(MAX_RETRY)
                        };
                        parked.retry_at = now + parked.wait;
                        next_retry = earliest(next_retry, Some(parked.retry_at));
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupted < 8 => {
                        interrupted += 1;
                        continue;
                    }
                    Err(e) => e,
                };
                // Failed for another reason (its socket closed, its file is gone): what it
                // holds would fail alike. All of it goes, reported once, with the error, and
                // so does what comes up for it in order in this flush.
                *socket_full = false;
                let n = parked.held.len() as u64;
                report_held_back(peer, parked, limits, now, true, reports);
                note(reports, peer, n, DropReason::Failed, Some(failure));
                *dropped += n;
                failed.insert(peer.clone());
                *parked_bytes -= parked.bytes;
                *parked_datagrams -= parked.held.len();
                parked.held.clear();
                parked.bytes = 0;
                break;
            }
            if parked.held.is_empty() {
                // Sent, stalled or failed: unparked, its last drops reported.
                report_held_back(peer, parked, limits, now, true, reports);
                emptied = true;
            } else if let Some(due) = report_due {
                next_retry = earliest(next_retry, Some(due));
            }
        }
        if emptied {
            map.retain(|_, p| !p.held.is_empty());
        }
        self.next_retry = next_retry;
        (datagrams, bytes)
    }

    /// The bytes a parked destination holds (the parking model).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn held_bytes(&self, peer: &A) -> Option<usize> {
        self.parked.get(peer).map(|p| p.bytes)
    }
}

impl Parked {
    /// What it is charged against the bounds: its payload, and the overhead of each
    /// datagram.
    fn charge(&self) -> usize {
        self.bytes + self.held.len() * DATAGRAM_OVERHEAD
    }
}

/// True for the errors of a send on an unconnected unix socket that are about the
/// destination, not the datagram or the socket: its socket closed (`ECONNREFUSED`), its
/// path is gone, not a socket of this type, or not ours to write to. Every datagram to it
/// would fail alike.
fn about_receiver(e: &io::Error) -> bool {
    if crate::udp::socket::is_peer_error(e)
        || matches!(
            e.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
        )
    {
        return true;
    }
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::EPROTOTYPE))
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Notes `n` datagrams dropped for `peer`, added to an earlier report of the same
/// destination and cause when there is one (which keeps its error).
fn note<A: PartialEq + Clone>(
    reports: &mut Vec<Dropped<A>>,
    peer: &A,
    n: u64,
    reason: DropReason,
    source: Option<io::Error>,
) {
    if n == 0 {
        return;
    }
    match reports
        .iter_mut()
        .find(|r| r.reason == reason && r.peer == *peer)
    {
        Some(r) => {
            r.datagrams += n;
            if r.source.is_none() {
                r.source = source;
            }
        }
        None => reports.push(Dropped {
            peer: peer.clone(),
            datagrams: n,
            reason,
            source,
        }),
    }
}

/// Reports the drops past a bound held back for `peer`: at once when `leaving` (it is no
/// longer parked) or when its last such report is [`REPORT_INTERVAL`] old, else returns
/// when they are due.
fn report_held_back<A: PartialEq + Clone>(
    peer: &A,
    parked: &mut Parked,
    limits: ParkLimits,
    now: Instant,
    leaving: bool,
    reports: &mut Vec<Dropped<A>>,
) -> Option<Instant> {
    if parked.unreported == [0; 2] {
        return None;
    }
    if let Some(due) = parked.reported_at.map(|at| at + REPORT_INTERVAL) {
        if !leaving && now < due {
            return Some(due);
        }
    }
    let [over_peer, over_total] = std::mem::take(&mut parked.unreported);
    note(
        reports,
        peer,
        over_peer,
        DropReason::OverPeerLimit(limits.per_peer),
        None,
    );
    note(
        reports,
        peer,
        over_total,
        DropReason::OverTotalLimit(limits.total),
        None,
    );
    parked.reported_at = Some(now);
    None
}
