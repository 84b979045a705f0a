//! The datagram queue with parking on (unconnected unix sockets, issue #12 item 1; issue
//! #14) against a model of per-destination queues: pushes to four destinations whose
//! receivers turn free, full, gone, or take a few more, a socket whose own buffer fills and
//! frees, time passing, and flushes as the entry does them.
//!
//! One model, two drivers: the proptest in `tests/parking_model.rs` generates the
//! operations, and [`decode_fuzz_input`] decodes them from fuzz input (the fuzz target
//! `datagram_parking`), both from the tables below.

use super::model::{stamp, CHARGE};
use super::*;

use arbitrary::Unstructured;
use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::model_input::{pick, Weighted};

const DESTS: u32 = 4;
const LIMIT: usize = 1200;
const TOTAL: usize = 3000;
const STALL: Duration = Duration::from_millis(300);

/// What the fake receiver at one destination does with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver {
    /// Takes it.
    Free,
    /// Takes this many more, then is full: a retry (or a batch) of more goes out in
    /// part.
    Room(u8),
    /// Its queue is full: `EAGAIN`, with room in the socket's own buffer.
    Full,
    /// Its socket closed: `ECONNREFUSED`.
    Gone,
}

#[derive(Debug, Clone)]
pub(crate) enum POp {
    Push {
        dest: u32,
        len: usize,
    },
    Set {
        dest: u32,
        receiver: Receiver,
    },
    /// The socket's own send buffer fills (`EAGAIN` for every destination) or frees.
    SocketFull(bool),
    Advance {
        ms: u64,
    },
    Flush {
        per_call: usize,
    },
}

/// One datagram not yet sent or dropped.
#[derive(Debug, Clone, Copy)]
struct Pending {
    dest: u32,
    id: u64,
    len: usize,
}

/// What a datagram is charged against a bound.
fn charge<'a>(held: impl IntoIterator<Item = &'a Pending>) -> usize {
    held.into_iter().map(|p| p.len + CHARGE).sum()
}

/// A parked destination as documented: its datagrams, oldest first; retried at
/// `retry_at`, after a wait that doubles (1 ms to 100 ms) while its receiver stays
/// full; the order it was parked in; its drops past a bound not reported yet (over its
/// own, over all), and when such drops were last reported.
#[derive(Debug, Clone)]
struct ParkedModel {
    held: VecDeque<Pending>,
    retry_at: Instant,
    wait: Duration,
    progress: Instant,
    seq: u64,
    unreported: [u64; 2],
    reported_at: Option<Instant>,
}

type Reports = HashMap<(u32, &'static str), u64>;

struct PModel {
    now: Instant,
    /// Datagrams queued in order (not parked), oldest first.
    fifo: VecDeque<Pending>,
    receivers: [Receiver; DESTS as usize],
    socket_full: bool,
    parked: HashMap<u32, ParkedModel>,
    parkings: u64,
    delivered: HashMap<u32, Vec<u64>>,
    next_id: u64,
    pushed: usize,
    dropped: usize,
    /// Dropped in this flush (counted by the entry after it).
    dropped_now: u64,
    /// Reported so far, in all.
    reported: u64,
    /// Drops reported in this flush: per destination and cause, how many.
    reports: Reports,
    /// Destinations a send failed to in this flush.
    failed: HashSet<u32>,
    /// Destinations retried in this flush, and whether the pass stopped at a full
    /// socket.
    tried: Vec<u32>,
    stopped: bool,
    /// The destination being retried, and whether some of it went out.
    retry: Option<(u32, bool)>,
    /// The queue's last `EAGAIN` was the socket's own buffer.
    said_socket_full: bool,
}

impl PModel {
    fn new() -> Self {
        PModel {
            now: Instant::now(),
            fifo: VecDeque::new(),
            receivers: [Receiver::Free; DESTS as usize],
            socket_full: false,
            parked: HashMap::new(),
            parkings: 0,
            delivered: HashMap::new(),
            next_id: 0,
            pushed: 0,
            dropped: 0,
            dropped_now: 0,
            reported: 0,
            reports: HashMap::new(),
            failed: HashSet::new(),
            tried: Vec::new(),
            stopped: false,
            retry: None,
            said_socket_full: false,
        }
    }

    fn held_bytes(&self) -> usize {
        self.parked
            .values()
            .flat_map(|p| &p.held)
            .map(|p| p.len)
            .sum()
    }

    fn held_charge(&self) -> usize {
        charge(self.parked.values().flat_map(|p| &p.held))
    }

    fn held_datagrams(&self) -> usize {
        self.parked.values().map(|p| p.held.len()).sum()
    }

    fn drop_count(&mut self, n: u64) {
        self.dropped += n as usize;
        self.dropped_now += n;
    }

    fn report(&mut self, dest: u32, cause: &'static str, n: u64) {
        if n > 0 {
            *self.reports.entry((dest, cause)).or_default() += n;
            self.reported += n;
        }
    }

    /// Reports a destination's drops past a bound: at once when it leaves, else when
    /// the last such report is 100 ms old (or there was none).
    fn settle(&mut self, dest: u32, leaving: bool) {
        let now = self.now;
        let p = self.parked.get_mut(&dest).expect("parked");
        if p.unreported == [0; 2] {
            return;
        }
        if !leaving && p.reported_at.is_some_and(|at| now < at + REPORT_INTERVAL) {
            return;
        }
        let [over_peer, over_total] = std::mem::take(&mut p.unreported);
        p.reported_at = Some(now);
        self.report(dest, "over-peer", over_peer);
        self.report(dest, "over-total", over_total);
    }

    /// A datagram joins its parked destination: past the destination's bound its
    /// oldest go (its newest stays); past the bound of them all, the destination parked
    /// longest loses its oldest. Each is charged its length and the overhead.
    fn hold(&mut self, p: Pending) {
        let parked = self.parked.get_mut(&p.dest).expect("parked");
        parked.held.push_back(p);
        let mut over = 0;
        while charge(&parked.held) > LIMIT && parked.held.len() > 1 {
            parked.held.pop_front();
            over += 1;
        }
        if over > 0 {
            parked.unreported[0] += over;
            self.drop_count(over);
            self.settle(p.dest, false);
        }
        while self.held_charge() > TOTAL {
            let now = self.now;
            let (&longest, parked) = self
                .parked
                .iter_mut()
                .filter(|(_, p)| !p.held.is_empty())
                .min_by_key(|(_, p)| p.seq)
                .expect("something is held");
            parked.held.pop_front();
            parked.unreported[1] += 1;
            let emptied = parked.held.is_empty();
            if emptied {
                parked.retry_at = now;
            }
            self.drop_count(1);
            if !emptied {
                self.settle(longest, false);
            }
        }
    }

    /// What the queue does before a send of its FIFO: the datagrams at the front for a
    /// parked destination join it; those for a destination that failed in this flush
    /// are dropped.
    fn park_front(&mut self) {
        while let Some(&front) = self.fifo.front() {
            if self.failed.contains(&front.dest) {
                self.fifo.pop_front();
                self.drop_count(1);
                self.report(front.dest, "failed", 1);
                continue;
            }
            if !self.parked.contains_key(&front.dest) {
                break;
            }
            self.fifo.pop_front();
            self.hold(front);
        }
    }

    /// The next retry, or the next report of drops held back (one that holds nothing
    /// reports them when it leaves, on its retry).
    fn next_retry(&self) -> Option<Instant> {
        self.parked
            .values()
            .flat_map(|p| {
                let report = p
                    .reported_at
                    .filter(|_| p.unreported != [0; 2] && !p.held.is_empty())
                    .map(|at| at + REPORT_INTERVAL);
                [Some(p.retry_at), report]
            })
            .flatten()
            .min()
    }

    /// Unparks the destinations that hold nothing, with their last report.
    fn unpark_empty(&mut self) {
        let empty: Vec<u32> = self
            .parked
            .iter()
            .filter(|(_, p)| p.held.is_empty())
            .map(|(d, _)| *d)
            .collect();
        for d in empty {
            self.settle(d, true);
            self.parked.remove(&d);
        }
    }
}

/// The bytes of datagram `id`: its id first when it is that long; 0-byte ones are
/// known by their place alone.
fn datagram(id: u64, len: usize) -> Vec<u8> {
    let mut data: Vec<u8> = (0..len as u64).map(|i| stamp(id * 65_536 + i)).collect();
    if len >= 8 {
        data[..8].copy_from_slice(&id.to_be_bytes());
    }
    data
}

/// The fake socket, and the model's account of what the queue must do with each
/// outcome. It takes the datagrams of a batch in order until a receiver that is full or
/// gone (an error if that is the first, as `sendmmsg` does; a receiver with room for
/// fewer than offered takes part of the batch), or none when the socket's own buffer is
/// full. It checks that each datagram offered is the next of its destination, that the
/// FIFO never offers one for a parked or failed destination, and that a parked
/// destination is retried only when due.
struct FakeLink<'m> {
    m: &'m mut PModel,
    retrying: bool,
}

impl Link<u32> for FakeLink<'_> {
    fn send(&mut self, items: &[Outgoing<'_, u32>]) -> io::Result<usize> {
        let m = &mut *self.m;
        assert!(!items.is_empty());
        let first = *items[0]
            .peer
            .expect("unconnected: every datagram has a destination");
        let expected: Vec<Pending> = if self.retrying {
            let parked = m
                .parked
                .get(&first)
                .expect("a retry of a parked destination");
            assert!(
                m.now >= parked.retry_at,
                "destination {first} retried before it was due"
            );
            if m.retry.is_none_or(|(d, _)| d != first) {
                assert!(
                    !m.tried.contains(&first),
                    "destination {first} retried twice"
                );
                m.tried.push(first);
                m.retry = Some((first, false));
            }
            parked.held.iter().copied().collect()
        } else {
            m.park_front();
            m.fifo.iter().copied().collect()
        };
        assert!(items.len() <= expected.len(), "more offered than queued");
        let mut taken = 0;
        for (i, (item, want)) in items.iter().zip(&expected).enumerate() {
            let d = *item.peer.expect("a destination");
            assert_eq!(
                d, want.dest,
                "datagram {i} of the batch is for another destination"
            );
            if !self.retrying {
                assert!(
                    !m.parked.contains_key(&d),
                    "the FIFO offered one for parked {d}"
                );
                assert!(
                    !m.failed.contains(&d),
                    "the FIFO offered one for {d}, which failed in this flush"
                );
            }
            assert_eq!(item.data.len(), want.len, "not the next datagram");
            if want.len >= 8 {
                let id = u64::from_be_bytes(item.data[..8].try_into().unwrap());
                assert_eq!(id, want.id, "not the next datagram");
            }
            assert!(
                item.data == datagram(want.id, want.len).as_slice(),
                "the bytes of {}",
                want.id
            );
            if m.socket_full {
                break;
            }
            match m.receivers[d as usize] {
                Receiver::Free => {}
                Receiver::Room(n) => {
                    m.receivers[d as usize] = if n > 1 {
                        Receiver::Room(n - 1)
                    } else {
                        Receiver::Full
                    };
                }
                Receiver::Full | Receiver::Gone => break,
            }
            taken = i + 1;
        }
        let now = m.now;
        if taken > 0 {
            for p in &expected[..taken] {
                m.delivered.entry(p.dest).or_default().push(p.id);
            }
            if self.retrying {
                let parked = m.parked.get_mut(&first).unwrap();
                parked.held.drain(..taken);
                parked.progress = now;
                m.retry = Some((first, true));
            } else {
                m.fifo.drain(..taken);
            }
            m.said_socket_full = false;
            return Ok(taken);
        }
        if m.socket_full {
            m.said_socket_full = true;
            if self.retrying {
                // No one is blamed: the pass stops, this destination untouched but for
                // a wait that starts over when some of it went out.
                m.stopped = true;
                if m.retry.is_some_and(|(_, p)| p) {
                    m.parked.get_mut(&first).unwrap().wait = FIRST_RETRY;
                }
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        m.said_socket_full = false;
        match m.receivers[first as usize] {
            Receiver::Free | Receiver::Room(_) => unreachable!(),
            Receiver::Full if self.retrying => {
                let progressed = m.retry.is_some_and(|(_, p)| p);
                let parked = m.parked.get_mut(&first).unwrap();
                if now >= parked.progress + STALL {
                    // All it holds goes, reported once, after its drops past a bound.
                    let n = parked.held.len() as u64;
                    parked.held.clear();
                    m.settle(first, true);
                    m.parked.remove(&first);
                    m.drop_count(n);
                    m.report(first, "stalled", n);
                } else {
                    parked.wait = if progressed {
                        FIRST_RETRY
                    } else {
                        (parked.wait * 2).min(MAX_RETRY)
                    };
                    parked.retry_at = now + parked.wait;
                }
                Err(io::ErrorKind::WouldBlock.into())
            }
            Receiver::Full => {
                // The FIFO's EAGAIN with room in the socket parks the destination, with
                // this datagram.
                m.parkings += 1;
                m.parked.insert(
                    first,
                    ParkedModel {
                        held: VecDeque::new(),
                        retry_at: now + FIRST_RETRY,
                        wait: FIRST_RETRY,
                        progress: now,
                        seq: m.parkings,
                        unreported: [0; 2],
                        reported_at: None,
                    },
                );
                let p = m.fifo.pop_front().unwrap();
                m.hold(p);
                Err(io::ErrorKind::WouldBlock.into())
            }
            Receiver::Gone if self.retrying => {
                // All it holds goes, reported once (after its drops past a bound), and
                // so does what comes up for it in order in this flush.
                let n = m.parked[&first].held.len() as u64;
                m.settle(first, true);
                m.parked.remove(&first);
                m.drop_count(n);
                m.report(first, "failed", n);
                m.failed.insert(first);
                Err(io::ErrorKind::ConnectionRefused.into())
            }
            Receiver::Gone => {
                // Dropped at once, and so is what comes up for it in this flush.
                m.fifo.pop_front();
                m.drop_count(1);
                m.report(first, "failed", 1);
                m.failed.insert(first);
                Err(io::ErrorKind::ConnectionRefused.into())
            }
        }
    }

    fn socket_full(&mut self) -> bool {
        self.m.socket_full
    }
}

/// One flush as the entry does it (due parked destinations first, then the FIFO), and
/// the checks that follow it.
fn flush_model(q: &mut DatagramQueue<u32>, m: &mut PModel, per_call: usize) {
    m.reports.clear();
    m.tried.clear();
    m.stopped = false;
    m.retry = None;
    m.dropped_now = 0;
    let now = m.now;
    // A deadline already past means "due": any of them will do.
    let due_at = |at: Option<Instant>| at.map(|at| at.max(now));
    assert_eq!(
        due_at(q.next_retry),
        due_at(m.next_retry()),
        "the next retry, before the flush"
    );
    let due: Vec<u32> = m
        .parked
        .iter()
        .filter(|(_, p)| p.retry_at <= now && !p.held.is_empty())
        .map(|(d, _)| *d)
        .collect();
    if m.next_retry().is_some_and(|at| at <= now) {
        // The pass runs: every parked destination is visited, and reports its drops
        // past a bound when they are due (or leaves, when emptied by the bound of all).
        m.said_socket_full = false;
        let dests: Vec<u32> = m.parked.keys().copied().collect();
        for d in dests {
            let leaving = m.parked[&d].held.is_empty();
            m.settle(d, leaving);
        }
    }
    q.retry_parked(now, STALL, per_call, &mut FakeLink { m, retrying: true });
    for d in due {
        assert!(
            m.stopped || m.tried.contains(&d),
            "destination {d} was due and not retried"
        );
    }
    // Emptied by the retry, or earlier by the bound of them all: unparked.
    m.unpark_empty();
    let mut blocked = false;
    for _ in 0..10_000 {
        let step = q.send_step(now, per_call, &mut FakeLink { m, retrying: false });
        match step {
            Step::Empty => {
                // The queue parks (or drops) what is left for parked (or failed)
                // destinations without a send.
                m.park_front();
                assert!(m.fifo.is_empty(), "the FIFO drained");
                if m.held_datagrams() == 0 {
                    m.said_socket_full = false;
                }
                break;
            }
            Step::Sent { .. } | Step::Parked | Step::Dropped => {}
            Step::Failed { error, .. } => {
                panic!("parking on, a send that failed drops its destination: {error}")
            }
            Step::Blocked => {
                assert!(m.socket_full, "blocked with room in the socket");
                blocked = true;
                break;
            }
        }
    }
    q.end_flush();
    m.failed.clear();
    if m.fifo.is_empty() && m.held_datagrams() == 0 {
        m.said_socket_full = false;
    }
    assert_eq!(q.fifo_is_empty(), m.fifo.is_empty(), "the FIFO");
    assert_eq!(q.socket_full(), m.said_socket_full, "socket_full()");
    if blocked {
        assert!(q.socket_full());
    }
    assert!(
        !q.socket_full() || !q.is_empty(),
        "waiting for room with nothing to send"
    );
    assert_eq!(q.take_dropped(), m.dropped_now, "the drops counted");
    // Reports: once per destination and cause, with the count.
    let mut reported: Reports = HashMap::new();
    for r in q.take_reports() {
        let cause = match r.reason {
            DropReason::OverPeerLimit(limit) => {
                assert_eq!(limit, LIMIT);
                "over-peer"
            }
            DropReason::OverTotalLimit(limit) => {
                assert_eq!(limit, TOTAL);
                "over-total"
            }
            DropReason::Stalled(after) => {
                assert_eq!(after, STALL);
                "stalled"
            }
            DropReason::Failed => {
                let e = r.source.as_ref().expect("the failure");
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
                "failed"
            }
        };
        let dest = r.peer;
        let error = r.into_error();
        let named = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<DroppedDatagrams<u32>>())
            .expect("a DroppedDatagrams");
        assert_eq!(*named.peer(), dest);
        assert!(
            reported.insert((dest, cause), named.datagrams()).is_none(),
            "{dest} reported twice for {cause}"
        );
    }
    assert_eq!(reported, m.reports, "the drops reported");
    for d in 0..DESTS {
        let held = m.parked.get(&d).map(|p| p.held.iter().map(|p| p.len).sum());
        assert_eq!(q.held_bytes(&d), held, "bytes held for {d}");
    }
    assert_eq!(q.parked_destinations(), m.parked.len());
    let next = (!q.socket_full()).then(|| m.next_retry()).flatten();
    assert_eq!(due_at(q.next_retry()), due_at(next), "the next retry");
}

fn apply_parking(q: &mut DatagramQueue<u32>, m: &mut PModel, op: &POp) {
    match *op {
        POp::Push { dest, len } => {
            let id = m.next_id;
            m.next_id += 1;
            let data = datagram(id, len);
            if id & 1 == 0 {
                q.push_bytes(Some(dest), Bytes::from(data));
            } else {
                q.tail.extend_from_slice(&data);
                q.push_encoded(Some(dest), len);
            }
            m.fifo.push_back(Pending { dest, id, len });
            m.pushed += 1;
        }
        POp::Set { dest, receiver } => m.receivers[dest as usize] = receiver,
        POp::SocketFull(full) => m.socket_full = full,
        POp::Advance { ms } => m.now += Duration::from_millis(ms),
        POp::Flush { per_call } => flush_model(q, m, per_call),
    }
    // The watermarks and `max_outbound` count the FIFO alone, parked datagrams apart:
    // each datagram its payload and the overhead.
    let fifo: usize = m.fifo.iter().map(|p| p.len).sum();
    assert_eq!(q.payload_bytes(), fifo, "payload_bytes()");
    assert_eq!(q.len(), charge(&m.fifo), "len()");
    assert_eq!(q.parked_bytes(), m.held_bytes(), "parked_bytes()");
    assert_eq!(q.parked_charge(), m.held_charge(), "the parked charge");
    assert!(q.parked_charge() <= TOTAL, "over the bound of them all");
    for p in m.parked.values() {
        assert!(
            charge(&p.held) <= LIMIT || p.held.len() == 1,
            "a destination over its bound"
        );
    }
    assert_eq!(
        q.datagrams(),
        m.fifo.len() + m.held_datagrams(),
        "datagrams()"
    );
    assert_eq!(q.in_order(), m.fifo.len(), "in_order()");
    assert_eq!(
        q.is_empty(),
        m.fifo.is_empty() && m.held_datagrams() == 0,
        "is_empty()"
    );
}

/// Runs `ops` with parking on, checking the queue against the model after each; then,
/// with the socket and every receiver free, flushes until every parked destination has
/// been retried: all that was not dropped arrives, each destination's in order, and every
/// drop was reported. Panics at the first disagreement.
pub(crate) fn run(ops: &[POp]) {
    let mut q = DatagramQueue::default();
    q.set_policy(
        PeerErrors::Drop,
        Some(ParkLimits {
            per_peer: LIMIT,
            total: TOTAL,
        }),
    );
    let mut m = PModel::new();
    for op in ops {
        apply_parking(&mut q, &mut m, op);
    }
    apply_parking(&mut q, &mut m, &POp::SocketFull(false));
    for d in 0..DESTS {
        let free = POp::Set {
            dest: d,
            receiver: Receiver::Free,
        };
        apply_parking(&mut q, &mut m, &free);
    }
    for _ in 0..3 {
        apply_parking(&mut q, &mut m, &POp::Advance { ms: 100 });
        let flush = POp::Flush {
            per_call: MAX_BATCH,
        };
        apply_parking(&mut q, &mut m, &flush);
    }
    assert!(q.is_empty() && q.tail.is_empty(), "left in the queue");
    assert!(
        m.fifo.is_empty() && m.parked.is_empty(),
        "left in the model"
    );
    assert!(
        !q.socket_full() && q.next_retry().is_none(),
        "still waiting"
    );
    let delivered: usize = m.delivered.values().map(|v| v.len()).sum();
    assert_eq!(
        delivered + m.dropped,
        m.pushed,
        "every datagram sent or dropped"
    );
    assert_eq!(m.reported, m.dropped as u64, "every drop reported");
    for ids in m.delivered.values() {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "a destination's order");
    }
}

// ---------------------------------------------------------------------------------------
// What the operations are drawn from, by the proptest and from fuzz input
// ---------------------------------------------------------------------------------------

/// The most operations in one run.
pub(crate) const MOST_OPS: usize = 300;

/// How often each kind of operation comes up: push, set a receiver, fill or free the
/// socket, advance the clock, flush.
pub(crate) const OP_WEIGHTS: [u32; 5] = [8, 2, 1, 3, 4];

/// A destination.
pub(crate) const DEST: Weighted<u32> = Weighted(&[(1, 0..=DESTS - 1)]);

/// A datagram: empty ones often (they are bounded by their overhead alone), short ones
/// (shorter than the id they carry from 8 bytes), and large ones (queued as they are).
pub(crate) const PUSH_LEN: Weighted<usize> = Weighted(&[
    (2, 0..=0),
    (1, 1..=7),
    (6, 8..=199),
    (1, COPY_THRESHOLD..=COPY_THRESHOLD + 199),
]);

/// How often a receiver turns free, takes a few more, turns full, or goes.
pub(crate) const RECEIVER_WEIGHTS: [u32; 4] = [2, 2, 2, 1];

/// How many more a receiver takes before it is full.
pub(crate) const ROOM: Weighted<u8> = Weighted(&[(1, 1..=3)]);

/// Time passing: less than a backoff, several, and past the stall timeout.
pub(crate) const ADVANCE_MS: Weighted<u64> = Weighted(&[(1, 0..=2), (1, 3..=39), (1, 90..=399)]);

/// A flush's batch size.
pub(crate) const PER_CALL: Weighted<usize> = Weighted(&[(1, 1..=3), (1, 4..=MAX_BATCH)]);

fn parking_op(u: &mut Unstructured<'_>) -> arbitrary::Result<POp> {
    Ok(match pick(u, &OP_WEIGHTS)? {
        0 => POp::Push {
            dest: DEST.draw(u)?,
            len: PUSH_LEN.draw(u)?,
        },
        1 => POp::Set {
            dest: DEST.draw(u)?,
            receiver: receiver(u)?,
        },
        2 => POp::SocketFull(u.arbitrary()?),
        3 => POp::Advance {
            ms: ADVANCE_MS.draw(u)?,
        },
        _ => POp::Flush {
            per_call: PER_CALL.draw(u)?,
        },
    })
}

fn receiver(u: &mut Unstructured<'_>) -> arbitrary::Result<Receiver> {
    Ok(match pick(u, &RECEIVER_WEIGHTS)? {
        0 => Receiver::Free,
        1 => Receiver::Room(ROOM.draw(u)?),
        2 => Receiver::Full,
        _ => Receiver::Gone,
    })
}

/// The operations `data` decodes to (at most [`MOST_OPS`]).
pub(crate) fn decode_fuzz_input(data: &[u8]) -> Vec<POp> {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MOST_OPS {
        match parking_op(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}
