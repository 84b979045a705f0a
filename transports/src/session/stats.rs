//! A session's counters: what the handler reads ([`Stats`]) and how they are stored, small.

use super::*;

/// Counters of one session. Bytes are counted as they cross the socket (`bytes_*`) and as
/// the codec sees them (`plain_bytes_*`); the two differ only under a filter (TLS,
/// compression).
///
/// ```
/// # fn f(s: &getty_transports::Session<getty_codec::RawCodec>) {
/// let stats = s.stats();
/// println!("{} bytes in, {} messages in", stats.bytes_in, stats.messages_in);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Bytes read from the socket.
    pub bytes_in: u64,
    /// Bytes written to the socket.
    pub bytes_out: u64,
    /// Bytes the filters handed to the codec (`bytes_in` when there is no filter).
    pub plain_bytes_in: u64,
    /// Bytes the codec and `write_bytes` handed to the filters (`bytes_out` when there is
    /// no filter).
    pub plain_bytes_out: u64,
    /// Messages decoded and handed to `on_message`.
    pub messages_in: u64,
    /// Messages (and byte buffers) queued by `write*`.
    pub messages_out: u64,
    /// The last time bytes were read (the session's open time before that).
    pub last_read: Instant,
    /// The last time bytes were written (the session's open time before that).
    pub last_write: Instant,
}

/// The session's counters as stored: timestamps in 8 bytes each (see [`Stamp`]).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) messages_in: u64,
    pub(crate) messages_out: u64,
    pub(crate) last_read: Stamp,
    pub(crate) last_write: Stamp,
}

/// An `Instant` as nanoseconds since a process-wide epoch: half the size of an `Instant`,
/// which matters in a struct that ten thousand idle sessions each hold.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(u64);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Stamp {
    pub(crate) fn of(t: Instant) -> Stamp {
        Stamp(t.saturating_duration_since(epoch()).as_nanos() as u64)
    }

    pub(crate) fn instant(self) -> Instant {
        epoch() + Duration::from_nanos(self.0)
    }
}
