//! A session's filter stack (TLS, deflate) and the wire-side buffers around it.
//!
//! Without a filter the session reads into its codec's buffer and writes its outbound queue
//! straight to the socket. With one, reads land in `wire_in`, the filter decodes them into
//! the codec's buffer, and flushes move the outbound queue through the filter into
//! `wire_out`, a batch at a time, before writing that to the socket.

use std::time::Instant;

use bytes::BytesMut;
use getty_codec::filter::{Filter, FilterError};

/// Plain bytes moved through the filter per refill of `wire_out`: a bound on the wire
/// bytes a session holds beyond its outbound queue.
pub(crate) const ENCODE_BATCH: usize = 64 * 1024;

/// Wire bytes a handshake may leave untaken before the peer is cut off: far more than any
/// legitimate flight (a TLS record is at most about 16 KiB, an upgrade head 8 KiB), and a
/// bound on what a peer streaming junk into a handshake costs.
pub(crate) const MAX_HANDSHAKE_BACKLOG: usize = 256 * 1024;

/// Plain bytes a filter may produce beyond the session's max message length before the
/// codec has to take some ("plus one read's worth").
pub(crate) const DECODE_SLACK: usize = 64 * 1024;

pub(crate) struct FilterIo {
    pub(crate) filter: Box<dyn Filter>,
    /// Wire bytes read and not decoded yet.
    pub(crate) wire_in: BytesMut,
    /// Wire bytes encoded and not written yet.
    pub(crate) wire_out: BytesMut,
    /// Plain bytes decoded and encoded (the session's wire counters count the rest).
    pub(crate) plain_in: u64,
    pub(crate) plain_out: u64,
    /// When a filter still negotiating (a TLS handshake) gives up.
    pub(crate) handshake_until: Option<Instant>,
}

impl FilterIo {
    pub(crate) fn new(filter: Box<dyn Filter>) -> Self {
        FilterIo {
            filter,
            wire_in: BytesMut::new(),
            wire_out: BytesMut::new(),
            plain_in: 0,
            plain_out: 0,
            handshake_until: None,
        }
    }

    /// Fails when more than [`MAX_HANDSHAKE_BACKLOG`] wire bytes wait untaken: called
    /// during a handshake, where a legitimate peer's flight is taken as it comes.
    pub(crate) fn check_handshake_backlog(&self) -> Result<(), FilterError> {
        if self.wire_in.len() > MAX_HANDSHAKE_BACKLOG {
            let detail = format!(
                "{} bytes sent during the handshake were not taken",
                self.wire_in.len()
            );
            return Err(FilterError::handshake("handshake", detail));
        }
        Ok(())
    }

    /// The handshake deadline while the filter is still negotiating.
    pub(crate) fn handshake_deadline(&self) -> Option<Instant> {
        self.handshake_until
            .filter(|_| self.filter.is_handshaking())
    }
}
