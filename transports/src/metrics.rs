//! Per-reactor transport counters, kept as a reactor extension (no locks, no atomics: only
//! the reactor's own thread touches them) and read from other threads with a query.

use std::io;

use getty_reactor::{LoopMetrics, ReactorHandle};

use crate::Error;

/// What the sessions of one reactor did, plus the loop's own counters.
///
/// ```
/// use getty_transports::Metrics;
///
/// let thread = getty_reactor::Reactor::start_thread("r", |_| Ok(())).unwrap();
/// let m = Metrics::of(thread.handle()).unwrap();
/// assert_eq!(m.sessions_open(), 0);
/// thread.handle().shutdown();
/// thread.join().unwrap();
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Sessions whose `on_open` succeeded.
    pub sessions_opened: u64,
    /// Sessions that have ended (`on_close` ran).
    pub sessions_closed: u64,
    /// Connections accepted by servers on this reactor.
    pub accepted: u64,
    /// Connections refused by a setup hook or `on_open`.
    pub refused: u64,
    /// Sessions ended by an I/O error (reset, ...), and client dial attempts that failed
    /// with one (refused, unreachable).
    pub errors_io: u64,
    /// Sessions ended by bad input (oversized, malformed or truncated frames).
    pub errors_bad_input: u64,
    /// Sessions ended by a timeout (read idle, write stall, handshake), and client dial
    /// attempts past their connect timeout.
    pub errors_timeout: u64,
    /// Sessions ended by anything else (a codec bug, say).
    pub errors_other: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Messages decoded and handed to handlers.
    pub messages_in: u64,
    /// Messages (and byte buffers) queued by handlers.
    pub messages_out: u64,
    /// The loop's own counters (turns, busy time, turn latency).
    pub reactor: LoopMetrics,
}

impl Metrics {
    /// Sessions open now.
    ///
    /// ```
    /// let m = getty_transports::Metrics { sessions_opened: 5, sessions_closed: 2, ..Default::default() };
    /// assert_eq!(m.sessions_open(), 3);
    /// ```
    pub fn sessions_open(&self) -> u64 {
        self.sessions_opened.saturating_sub(self.sessions_closed)
    }

    /// A snapshot of the reactor behind `handle` (waits for the reactor to answer, so it
    /// fails with `Deadlock` on any reactor's thread: see `ReactorHandle::query`).
    ///
    /// See the [type-level example](Metrics).
    pub fn of(handle: &ReactorHandle) -> io::Result<Metrics> {
        handle.query(|s| {
            let reactor = s.loop_metrics();
            Metrics {
                reactor,
                ..s.extension::<Metrics>().clone()
            }
        })
    }

    /// Adds another snapshot to this one (to total a pool of reactors).
    ///
    /// ```
    /// let mut total = getty_transports::Metrics::default();
    /// total.add(&getty_transports::Metrics { accepted: 2, ..Default::default() });
    /// total.add(&getty_transports::Metrics { accepted: 3, ..Default::default() });
    /// assert_eq!(total.accepted, 5);
    /// ```
    pub fn add(&mut self, other: &Metrics) {
        self.sessions_opened += other.sessions_opened;
        self.sessions_closed += other.sessions_closed;
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.errors_io += other.errors_io;
        self.errors_bad_input += other.errors_bad_input;
        self.errors_timeout += other.errors_timeout;
        self.errors_other += other.errors_other;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.reactor.turns += other.reactor.turns;
        self.reactor.events += other.reactor.events;
        self.reactor.busy += other.reactor.busy;
        self.reactor.entries += other.reactor.entries;
    }

    pub(crate) fn count_error(&mut self, error: &Error) {
        match error {
            Error::Io(_) => self.errors_io += 1,
            e if e.is_bad_input() => self.errors_bad_input += 1,
            Error::ReadIdle(_)
            | Error::WriteStalled(_)
            | Error::ConnectTimeout(_)
            | Error::HandshakeTimeout(_)
            | Error::PongTimeout(_) => self.errors_timeout += 1,
            _ => self.errors_other += 1,
        }
    }
}
