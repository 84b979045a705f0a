//! What is dropped: the reasons and the reports a handler hears when datagrams held for a
//! destination are given up.

use super::*;

/// Why datagrams held for one destination of an unconnected unix datagram endpoint were
/// dropped (see [`DroppedDatagrams`]).
///
/// See [`DroppedDatagrams`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Its receiver was full and it held more than a destination may
    /// (`UnixDatagramEndpointBuilder::max_parked_per_peer`, in bytes, each datagram counted
    /// with 64 bytes of overhead): its oldest went.
    OverPeerLimit(usize),
    /// All parked destinations together held more than they may
    /// (`UnixDatagramEndpointBuilder::max_parked`, in bytes, each datagram counted with 64
    /// bytes of overhead), and this one had been parked longest: its oldest went.
    OverTotalLimit(usize),
    /// Its receiver took nothing for the write-stall timeout: all it held went.
    Stalled(Duration),
    /// A send to it failed for another reason than a full receiver (its socket closed, its
    /// file is gone; the error is the `source`): all it held went, and so did every other
    /// datagram for it that was to go out in the same flush.
    Failed,
}

/// The payload of the `Error::Io` an unconnected unix datagram endpoint reports to
/// `on_error` when it drops datagrams it held for one destination: who they were for, how
/// many, and why. Reported once per destination and cause in a flush, and drops past a
/// bound at most once per destination every 100 ms (those in between are added to the
/// next report, or to the one when it is no longer parked); the datagrams are counted in
/// `DatagramStats::dropped_out` as they are dropped. Get it from the error with `get_ref`
/// and `downcast_ref`; its `kind` is `WouldBlock` over a limit, `TimedOut` after the
/// stall, and the failure's own kind (`ConnectionRefused`, `NotFound`, ...) after a
/// failure.
///
/// ```
/// use getty_codec::RawCodec;
/// use getty_transports::udp::{DatagramHandler, DatagramSession, DroppedDatagrams, DropReason};
/// use getty_transports::{Error, UnixAddr};
///
/// struct Server;
/// impl DatagramHandler<RawCodec, UnixAddr> for Server {
///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, _: bytes::Bytes, _: UnixAddr) {}
///     fn on_error(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, error: &Error) {
///         let Error::Io(e) = error else { return };
///         if let Some(d) = e.get_ref().and_then(|e| e.downcast_ref::<DroppedDatagrams<UnixAddr>>()) {
///             if d.reason() == DropReason::Failed {
///                 eprintln!("{:?} is gone: {} replies dropped", d.peer(), d.datagrams());
///             }
///         }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct DroppedDatagrams<A> {
    peer: A,
    datagrams: u64,
    reason: DropReason,
    source: Option<io::Error>,
}

impl<A> DroppedDatagrams<A> {
    /// The destination the datagrams were for.
    ///
    /// See the [type-level example](DroppedDatagrams).
    pub fn peer(&self) -> &A {
        &self.peer
    }

    /// How many were dropped.
    ///
    /// See the [type-level example](DroppedDatagrams).
    pub fn datagrams(&self) -> u64 {
        self.datagrams
    }

    /// Why.
    ///
    /// See the [type-level example](DroppedDatagrams).
    pub fn reason(&self) -> DropReason {
        self.reason
    }
}

impl<A: fmt::Debug> fmt::Display for DroppedDatagrams<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, peer) = (self.datagrams, &self.peer);
        let what = if n == 1 { "datagram" } else { "datagrams" };
        match self.reason {
            DropReason::OverPeerLimit(limit) => write!(
                f,
                "dropped the oldest {n} {what} to {peer:?}: its receiver is full and a \
                 destination may hold {limit} bytes"
            ),
            DropReason::OverTotalLimit(limit) => write!(
                f,
                "dropped the oldest {n} {what} to {peer:?}: parked destinations may hold \
                 {limit} bytes in all, and it was parked longest"
            ),
            DropReason::Stalled(after) => write!(
                f,
                "dropped {n} {what} to {peer:?}: its receiver took none for {after:?}"
            ),
            DropReason::Failed => match &self.source {
                Some(e) => write!(f, "dropped {n} {what} to {peer:?}: {e}"),
                None => write!(f, "dropped {n} {what} to {peer:?}"),
            },
        }
    }
}

impl<A: fmt::Debug> std::error::Error for DroppedDatagrams<A> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Datagrams dropped for one destination, to be counted and reported to `on_error` once.
#[derive(Debug)]
pub(crate) struct Dropped<A> {
    pub(crate) peer: A,
    pub(crate) datagrams: u64,
    pub(crate) reason: DropReason,
    /// The failure, for [`DropReason::Failed`].
    pub(crate) source: Option<io::Error>,
}

impl<A: fmt::Debug + Send + Sync + 'static> Dropped<A> {
    /// The error `on_error` gets: a [`DroppedDatagrams`] that names the destination.
    pub(crate) fn into_error(self) -> io::Error {
        let kind = match (&self.reason, &self.source) {
            (DropReason::Stalled(_), _) => io::ErrorKind::TimedOut,
            (DropReason::Failed, Some(e)) => e.kind(),
            (DropReason::Failed, None) => io::ErrorKind::Other,
            _ => io::ErrorKind::WouldBlock,
        };
        io::Error::new(
            kind,
            DroppedDatagrams {
                peer: self.peer,
                datagrams: self.datagrams,
                reason: self.reason,
                source: self.source,
            },
        )
    }
}
