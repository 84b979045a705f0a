//! A datagram session's counters.

use super::*;

/// Counters of one datagram session.
///
/// ```
/// getty_transports::udp::with_udp_session(getty_codec::RawCodec, |session| {
///     let stats = session.stats();
///     assert_eq!(stats.datagrams_in, 0);
///     assert_eq!(stats.dropped_in, 0);
/// });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatagramStats {
    /// Datagrams read from the socket (including dropped ones and probes).
    pub datagrams_in: u64,
    /// Bytes of those datagrams.
    pub bytes_in: u64,
    /// Messages handed to `on_message`.
    pub messages_in: u64,
    /// Datagrams dropped on the way in: oversized, malformed, garbage, empty.
    pub dropped_in: u64,
    /// Dial probes dropped on the way in (see `UdpOptions::drop_probe`), and answers to
    /// probes (`UdpClient::PROBE_ANSWER`), which are the dial's, not the application's.
    pub probes_dropped: u64,
    /// Answers to dial probes queued (a UDP endpoint answers each probe it drops, unless
    /// its queue is at the high watermark or the source is one nothing can go back to, so
    /// that a getty-rs client's dial opens at once). Sent answers count in
    /// `datagrams_out`, not in `messages_out`.
    pub probes_answered: u64,
    /// Datagrams the kernel accepted for sending.
    pub datagrams_out: u64,
    /// Bytes of those datagrams.
    pub bytes_out: u64,
    /// Messages (and byte buffers) queued by `write*`.
    pub messages_out: u64,
    /// Queued datagrams dropped: refused by the kernel for good, or, on an unconnected unix
    /// endpoint, dropped for one destination: its receiver is gone (then so is every other
    /// datagram for it in the same flush), or it is parked behind its full receiver (its
    /// oldest past its bound or past the bound of all parked destinations; all it held
    /// after the write-stall timeout or a failed send). Counted as they are dropped, and
    /// reported to `on_error`: on an unconnected unix endpoint as a `DroppedDatagrams`, once
    /// per destination, cause and flush (drops past a bound at most once per destination
    /// every 100 ms), elsewhere one by one. What is still queued when the session ends (an
    /// abort, a fatal error such as a write stall) is counted too, before `on_close`: there
    /// every datagram written (`messages_out`) was either sent or dropped.
    pub dropped_out: u64,
    /// Writes refused with `Error::QueueFull`: the queue was at its hard bound
    /// (`SessionOptions::max_outbound`, each datagram charged 64 bytes on top of its
    /// payload), so the datagram was never queued. Datagrams have no flow control: an
    /// endpoint never stops reading, and what no buffer can hold is lost — here, or in the
    /// kernel's socket buffers (counted by the kernel).
    pub refused_out: u64,
    /// ICMP errors reported on the socket (connected sockets: port unreachable and
    /// friends).
    pub peer_errors: u64,
    /// The last time a datagram was read (the session's open time before that).
    pub last_read: Instant,
    /// The last time a datagram was sent (the session's open time before that).
    pub last_write: Instant,
}

impl DatagramStats {
    pub(crate) fn new(now: Instant) -> Self {
        DatagramStats {
            datagrams_in: 0,
            bytes_in: 0,
            messages_in: 0,
            dropped_in: 0,
            probes_dropped: 0,
            probes_answered: 0,
            datagrams_out: 0,
            bytes_out: 0,
            messages_out: 0,
            dropped_out: 0,
            refused_out: 0,
            peer_errors: 0,
            last_read: now,
            last_write: now,
        }
    }
}
