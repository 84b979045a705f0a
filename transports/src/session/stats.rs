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

/// The session's counters as stored, boxed at the first byte in or out (40 bytes: malloc's
/// 48-byte chunk); the last read's time is kept in the session itself.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) messages_in: u64,
    pub(crate) messages_out: u64,
    /// An 8-byte timestamp (see [`Stamp`]).
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

thread_local! {
    /// The latest conversion: an event's read and its write are stamped with the same
    /// clock reading (the reactor's, for that call), and the `Instant` arithmetic costs
    /// about 70 instructions.
    static LATEST: std::cell::Cell<Option<(Instant, Stamp)>> = const { std::cell::Cell::new(None) };
}

impl Stamp {
    #[inline]
    pub(crate) fn of(t: Instant) -> Stamp {
        let latest = LATEST.try_with(std::cell::Cell::get).ok().flatten();
        match latest {
            Some((at, stamp)) if at == t => stamp,
            _ => {
                let stamp = Stamp(t.saturating_duration_since(epoch()).as_nanos() as u64);
                let _ = LATEST.try_with(|l| l.set(Some((t, stamp))));
                stamp
            }
        }
    }

    pub(crate) fn instant(self) -> Instant {
        epoch() + Duration::from_nanos(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Stamp;
    use std::time::{Duration, Instant};

    /// A session boxes its counters at its first byte; its stats must not tell: the open
    /// time stays its last write's until it writes, and its last read's until it reads.
    #[test]
    fn the_counters_keep_the_open_time_when_boxed() {
        crate::with_session(|s| {
            let opened = s.stats().last_read;
            assert_eq!(s.stats().last_write, opened);
            assert_eq!(s.stats().bytes_in, 0);
            let later = opened + Duration::from_millis(5);
            s.note_read(3, Stamp::of(later));
            let stats = s.stats();
            assert_eq!((stats.bytes_in, stats.last_write), (3, opened));
            assert!(stats.last_read >= later - Duration::from_micros(1));
            assert!(stats.last_read <= Instant::now() + Duration::from_millis(10));
        });
    }
}
