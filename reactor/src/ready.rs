//! Readiness as the reactor reports it to an entry.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

/// What a source became ready for: a small set of flags, copied from a mio event (or made by
/// the reactor when an entry asked to be [rescheduled](crate::Context::reschedule)).
///
/// ```
/// use getty_reactor::Ready;
///
/// let r = Ready::READABLE | Ready::READ_CLOSED;
/// assert!(r.is_readable() && r.is_read_closed());
/// assert!(!r.is_writable());
/// assert!(r.contains(Ready::READABLE));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Ready(u8);

impl Ready {
    /// Nothing.
    pub const EMPTY: Ready = Ready(0);
    /// Bytes (or a connection, or an error) can be read.
    pub const READABLE: Ready = Ready(1);
    /// Bytes can be written.
    pub const WRITABLE: Ready = Ready(2);
    /// The peer will send no more (EOF after the buffered bytes).
    pub const READ_CLOSED: Ready = Ready(4);
    /// Writing is no longer possible.
    pub const WRITE_CLOSED: Ready = Ready(8);
    /// The socket has a pending error (read it with `take_error`).
    pub const ERROR: Ready = Ready(16);

    /// Translates a mio event.
    ///
    /// ```no_run
    /// # fn f(event: &mio::event::Event) {
    /// let ready = getty_reactor::Ready::from_event(event);
    /// # }
    /// ```
    pub fn from_event(event: &mio::event::Event) -> Ready {
        let mut r = Ready::EMPTY;
        let flags = [
            (event.is_readable(), Ready::READABLE),
            (event.is_writable(), Ready::WRITABLE),
            (event.is_read_closed(), Ready::READ_CLOSED),
            (event.is_write_closed(), Ready::WRITE_CLOSED),
            (event.is_error(), Ready::ERROR),
        ];
        for (set, flag) in flags {
            if set {
                r |= flag;
            }
        }
        r
    }

    /// True when every flag of `other` is set in `self`.
    ///
    /// ```
    /// use getty_reactor::Ready;
    /// assert!((Ready::READABLE | Ready::WRITABLE).contains(Ready::WRITABLE));
    /// ```
    pub fn contains(self, other: Ready) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when there is something to read (data, EOF or an error).
    ///
    /// ```
    /// assert!(getty_reactor::Ready::ERROR.is_readable());
    /// ```
    pub fn is_readable(self) -> bool {
        self.0 & (Ready::READABLE.0 | Ready::READ_CLOSED.0 | Ready::ERROR.0) != 0
    }

    /// True when writing may make progress (or fail with the socket's error).
    ///
    /// ```
    /// assert!(getty_reactor::Ready::WRITABLE.is_writable());
    /// ```
    pub fn is_writable(self) -> bool {
        self.0 & (Ready::WRITABLE.0 | Ready::WRITE_CLOSED.0 | Ready::ERROR.0) != 0
    }

    /// True when the peer has closed its side.
    ///
    /// ```
    /// assert!(getty_reactor::Ready::READ_CLOSED.is_read_closed());
    /// ```
    pub fn is_read_closed(self) -> bool {
        self.contains(Ready::READ_CLOSED)
    }

    /// True when the source reported an error.
    ///
    /// ```
    /// assert!(!getty_reactor::Ready::READABLE.is_error());
    /// ```
    pub fn is_error(self) -> bool {
        self.contains(Ready::ERROR)
    }
}

impl BitOr for Ready {
    type Output = Ready;
    fn bitor(self, rhs: Ready) -> Ready {
        Ready(self.0 | rhs.0)
    }
}

impl BitOrAssign for Ready {
    fn bitor_assign(&mut self, rhs: Ready) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Ready::READABLE, "READABLE"),
            (Ready::WRITABLE, "WRITABLE"),
            (Ready::READ_CLOSED, "READ_CLOSED"),
            (Ready::WRITE_CLOSED, "WRITE_CLOSED"),
            (Ready::ERROR, "ERROR"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(flag, _)| self.contains(*flag) && *flag != Ready::EMPTY)
            .map(|(_, name)| *name)
            .collect();
        write!(f, "Ready({})", set.join(" | "))
    }
}
