//! Flow control a handler drives: pausing and resuming reading, and what holds a session's
//! reading back on its own (the high watermark, an unfinished handshake).

use super::*;

impl<C, T: Transport> Session<C, T> {
    /// Stops reading from the peer until [`resume_reading`](Self::resume_reading), like
    /// netty's `setAutoRead(false)`: no more bytes are read from the socket, so a peer that
    /// keeps sending is slowed down by TCP's own flow control, and no `on_message` arrives
    /// (frames already read wait, in order, until reading resumes). Timers keep running;
    /// a paused session is not read-idle. Useful while work for this session is offloaded:
    /// pause in `on_message`, resume when the result is written (from another thread,
    /// through [`SessionHandle::resume_reading`]).
    ///
    /// Independent of the automatic pause above the high watermark
    /// ([`SessionOptions::pause_reading_when_unwritable`]): the session reads only when
    /// neither holds it.
    ///
    /// ```
    /// use getty_codec::{Bytes, LengthFieldCodec};
    /// use getty_transports::{Handler, Session};
    ///
    /// /// Answers one request at a time: the next is not read before the reply is queued.
    /// struct OneAtATime;
    /// impl Handler<LengthFieldCodec> for OneAtATime {
    ///     fn on_message(&mut self, session: &mut Session<LengthFieldCodec>, request: Bytes) {
    ///         session.pause_reading();
    ///         let handle = session.handle().expect("inside a callback");
    ///         std::thread::spawn(move || {
    ///             let _ = handle.write(request); // the slow work, done elsewhere
    ///             let _ = handle.resume_reading();
    ///         });
    ///     }
    /// }
    /// # getty_transports::with_session(|s| {
    /// #     s.pause_reading();
    /// #     assert!(s.is_reading_paused());
    /// #     s.resume_reading();
    /// #     assert!(!s.is_reading_paused());
    /// # });
    /// ```
    pub fn pause_reading(&mut self) {
        self.core.reading_paused = true;
    }

    /// Reads again after [`pause_reading`](Self::pause_reading): frames already read are
    /// delivered first, then the socket is read (unless the queue is still above its high
    /// watermark).
    ///
    /// See [`pause_reading`](Self::pause_reading) for an example.
    pub fn resume_reading(&mut self) {
        self.core.reading_paused = false;
    }

    /// True while the session does not read: paused by the handler, or held above its high
    /// watermark by flow control.
    ///
    /// ```
    /// getty_transports::with_session(|s| {
    ///     assert!(!s.is_reading_paused());
    ///     s.write_bytes(vec![0u8; 128 * 1024]).unwrap(); // past the 64 KiB high watermark
    ///     assert!(s.is_reading_paused()); // until the queue drains to 32 KiB
    /// });
    /// ```
    pub fn is_reading_paused(&self) -> bool {
        self.core.reading_paused || self.held_by_flow_control()
    }

    /// Flow control holds reading while the queue is above the high watermark (until it
    /// drains to the low one), counting what the framework wrote by itself. Never during a
    /// handshake: the queue cannot drain before the peer's handshake messages are read.
    pub(crate) fn held_by_flow_control(&self) -> bool {
        self.core.options.pause_reading_when_unwritable
            && self.above_high_watermark()
            && !self.handshaking()
    }

    /// Above the high watermark, or not yet drained to the low one since, counting what the
    /// framework queued by itself (not yet reported through `writable`).
    pub(crate) fn above_high_watermark(&self) -> bool {
        !self.core.is_writable() || self.queued_bytes() >= self.core.options.high_watermark
    }

    /// The filter (TLS) is still negotiating.
    pub(crate) fn handshaking(&self) -> bool {
        self.filter_io()
            .is_some_and(|io| io.filter.is_handshaking())
    }
}
