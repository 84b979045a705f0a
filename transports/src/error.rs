//! The one error type sessions report.

use std::fmt;
use std::io;
use std::time::Duration;

use getty_codec::filter::{FilterError, FilterErrorKind};
#[cfg(feature = "ws")]
use getty_codec::ws::{HandshakeError, WsError};
use getty_codec::CodecError;

/// Why a session ended abnormally (seen in `Handler::on_error`) or why a call was refused.
///
/// ```
/// use getty_transports::Error;
/// let e = Error::MessageTooLong { len: 2_000_000, max: 1 << 20 };
/// assert_eq!(e.to_string(), "message of 2000000 bytes exceeds the maximum of 1048576");
/// assert!(e.is_bad_input());
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed (reset by the peer, refused, ...).
    Io(io::Error),
    /// The codec rejected the peer's bytes, or could not encode a message.
    Codec(CodecError),
    /// A frame declared (or grew to) more bytes than the session's `max_message_len`.
    MessageTooLong {
        /// The frame's length as declared or as buffered so far.
        len: usize,
        /// The session's limit.
        max: usize,
    },
    /// The codec returned a message without consuming any input: it would loop forever.
    CodecConsumedNothing,
    /// The peer closed the connection in the middle of a frame, or of a unit taken whole
    /// from the input (a deflate batch cut before its sync flush ended, a WebSocket message
    /// whose frame header or first fragments were taken; then `buffered` is 0).
    UnexpectedEof {
        /// Bytes of the unfinished frame.
        buffered: usize,
    },
    /// Nothing was read for the session's read-idle timeout.
    ReadIdle(Duration),
    /// Queued bytes could not be written for the session's write-stall timeout.
    WriteStalled(Duration),
    /// A connect did not complete within the client's connect timeout.
    ConnectTimeout(Duration),
    /// A filter (TLS, compression) refused the peer's bytes or failed its handshake.
    Filter(FilterError),
    /// A handshake (TLS, WebSocket upgrade) did not complete within the session's handshake
    /// timeout.
    HandshakeTimeout(Duration),
    /// The WebSocket peer broke the protocol (the session sent it a close frame with the
    /// error's close code), or a WebSocket frame could not be written. Only with the `ws`
    /// feature.
    #[cfg(feature = "ws")]
    WebSocket(WsError),
    /// The WebSocket upgrade failed: the server refused it or answered something else.
    /// Only with the `ws` feature.
    #[cfg(feature = "ws")]
    Upgrade(HandshakeError),
    /// A ping sent with `Session::ping` got no pong within the pong timeout.
    PongTimeout(Duration),
    /// A write would take the outbound queue past its hard bound; nothing was queued.
    QueueFull {
        /// Bytes queued before the write.
        queued: usize,
        /// Bytes the write tried to add.
        adding: usize,
        /// The bound.
        max: usize,
    },
    /// A [`SessionGroup`](crate::SessionGroup) whose slow-consumer policy is
    /// [`SlowConsumer::Close`](crate::SlowConsumer::Close) closed this member: its
    /// broadcasts waiting to be queued would have passed the group's bound.
    SlowConsumer {
        /// Bytes of broadcasts waiting for this member, with the one that did not fit.
        pending: usize,
        /// The group's bound ([`max_pending`](crate::SessionGroupBuilder::max_pending)).
        max: usize,
    },
    /// A session handle refused a write: the session is above its high watermark, or too
    /// many writes are in flight. Wait with `SessionHandle::wait_writable`.
    Backpressure,
    /// A datagram was addressed to an unnamed unix socket ([`UnixAddr::Unnamed`]): an
    /// unbound sender, which can be received from but has no address to send back to.
    /// Nothing was queued; the session carries on.
    ///
    /// ```
    /// let e = getty_transports::Error::UnnamedPeer;
    /// assert!(e.to_string().contains("unnamed"));
    /// ```
    ///
    /// [`UnixAddr::Unnamed`]: crate::UnixAddr::Unnamed
    UnnamedPeer,
    /// The session is closing or closed.
    Closed,
    /// A callback of this session's handler (or a job run on the session) panicked, with
    /// this message. The reactor caught the panic; the session was reset and ends with
    /// this error (`on_error`, then `on_close`, unless the panic was in `on_open`, which
    /// then counts as a refusal, or a second panic came from `on_error` itself). Every
    /// other session carries on. See `getty_reactor::PanicPolicy`.
    ///
    /// ```
    /// let e = getty_transports::Error::Panicked("index out of bounds".into());
    /// assert_eq!(e.to_string(), "a handler panicked: index out of bounds");
    /// ```
    Panicked(String),
}

impl Error {
    /// True when the peer sent something the session refused (oversized, malformed,
    /// truncated): the session closed because of its input, not because of the network.
    ///
    /// ```
    /// assert!(!getty_transports::Error::Closed.is_bad_input());
    /// ```
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Codec(_) | Error::MessageTooLong { .. } | Error::UnexpectedEof { .. } => true,
            Error::Filter(e) => e.kind() == FilterErrorKind::Malformed,
            #[cfg(feature = "ws")]
            Error::WebSocket(_) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o error: {e}"),
            Error::Codec(e) => write!(f, "codec error: {e}"),
            Error::MessageTooLong { len, max } => {
                write!(f, "message of {len} bytes exceeds the maximum of {max}")
            }
            Error::CodecConsumedNothing => {
                f.write_str("codec bug: it returned a message without consuming any bytes")
            }
            // Nothing buffered: a filter or the framing holds the cut unit.
            Error::UnexpectedEof { buffered: 0 } => f.write_str(
                "peer closed the connection inside a unit already taken \
                 (a compressed batch, a WebSocket message)",
            ),
            Error::UnexpectedEof { buffered } => {
                write!(
                    f,
                    "peer closed the connection inside a frame ({buffered} bytes buffered)"
                )
            }
            Error::ReadIdle(t) => write!(f, "nothing read for {t:?} (read-idle timeout)"),
            Error::WriteStalled(t) => write!(f, "queued bytes not written for {t:?} (write stall)"),
            Error::ConnectTimeout(t) => write!(f, "connect timed out after {t:?}"),
            Error::Filter(e) => write!(f, "filter error: {e}"),
            Error::HandshakeTimeout(t) => write!(f, "handshake not done after {t:?}"),
            #[cfg(feature = "ws")]
            Error::WebSocket(e) => write!(f, "{e}"),
            #[cfg(feature = "ws")]
            Error::Upgrade(e) => write!(f, "websocket upgrade failed: {e}"),
            Error::PongTimeout(t) => write!(f, "no pong within {t:?} of a ping"),
            Error::QueueFull {
                queued,
                adding,
                max,
            } => write!(
                f,
                "outbound queue full: {queued} bytes queued + {adding} would exceed {max}"
            ),
            Error::SlowConsumer { pending, max } => write!(
                f,
                "too slow for its group: {pending} bytes of broadcasts pending, past {max}"
            ),
            Error::Backpressure => {
                f.write_str("session is not writable (above its high watermark); wait and retry")
            }
            Error::UnnamedPeer => f.write_str(
                "the peer is an unnamed (unbound) unix socket: there is no address to send to",
            ),
            Error::Closed => f.write_str("session is closed"),
            Error::Panicked(message) => write!(f, "a handler panicked: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Codec(e) => Some(e),
            Error::Filter(e) => Some(e),
            #[cfg(feature = "ws")]
            Error::WebSocket(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<CodecError> for Error {
    fn from(e: CodecError) -> Self {
        Error::Codec(e)
    }
}

impl From<FilterError> for Error {
    fn from(e: FilterError) -> Self {
        Error::Filter(e)
    }
}

impl From<Error> for io::Error {
    /// For callers that want `std::io::Result`: I/O errors pass through, the rest keep their
    /// text under a fitting kind.
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io(io) => return io::Error::new(io.kind(), e.to_string()),
            Error::Codec(_) | Error::MessageTooLong { .. } | Error::CodecConsumedNothing => {
                io::ErrorKind::InvalidData
            }
            Error::UnexpectedEof { .. } => io::ErrorKind::UnexpectedEof,
            Error::Filter(_) => io::ErrorKind::InvalidData,
            #[cfg(feature = "ws")]
            Error::WebSocket(_) | Error::Upgrade(_) => io::ErrorKind::InvalidData,
            Error::ReadIdle(_)
            | Error::WriteStalled(_)
            | Error::ConnectTimeout(_)
            | Error::HandshakeTimeout(_)
            | Error::PongTimeout(_) => io::ErrorKind::TimedOut,
            Error::QueueFull { .. } | Error::Backpressure => io::ErrorKind::WouldBlock,
            Error::SlowConsumer { .. } => io::ErrorKind::TimedOut,
            Error::UnnamedPeer => io::ErrorKind::InvalidInput,
            Error::Closed => io::ErrorKind::NotConnected,
            Error::Panicked(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, e.to_string())
    }
}
