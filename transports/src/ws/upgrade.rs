//! The WebSocket upgrade as an entry of its own: it owns the connection from accept (or
//! connect) until the HTTP handshake is done, under the handshake timeout, then hands the
//! connection — with any TLS state and the bytes read past the handshake — to whoever makes
//! the session (the server's router, or the client's session entry).
//!
//! The upgrade never blocks and never spins: a request or response split across reads is
//! parsed again when the next bytes arrive, and a silent or slow peer (slowloris) is
//! dropped by the timer.

use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use getty_reactor::{Context, Entry, Ready, Status, TimerId};
use mio::Interest;

use crate::commands::{SessionCommand, SessionOp};
use crate::filtered::FilterIo;
use crate::stream::{read_and_drop, Dropped, Stream};
use crate::{Error, Metrics};

/// The longest request or response head accepted.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// Bytes one upgrade reads per loop turn before yielding: a peer streaming bytes cannot
/// hold the reactor thread.
const READ_BUDGET: usize = 64 * 1024;

/// What the upgrade found in the bytes read so far.
pub(crate) enum Step {
    /// The head is incomplete: read more.
    More,
    /// Done: the connection becomes a session (`Handshake::open_session`).
    Done,
    /// Refused: send `response` (if any) and close.
    Refuse(BytesMut),
    /// Failed with nothing to answer (a client's bad `101`): close.
    Fail(Error),
}

/// The two sides' handshake logic: parse what arrived, and finish with the connection.
pub(crate) trait Handshake<S>: 'static {
    /// Looks at the plain bytes read so far (`input`) from `stream`, consuming the head once
    /// complete.
    fn advance(&mut self, cx: &mut Context<'_>, input: &mut BytesMut, stream: &S) -> Step;

    /// After `Step::Done`: turns the connection into a session.
    fn open_session(&mut self, cx: &mut Context<'_>, parts: Parts<S>);

    /// The upgrade failed before it was done (timeout, I/O error, a bad answer, a close or
    /// a shutdown): a client counts a failed dial.
    fn failed(&mut self, cx: &mut Context<'_>, error: Error);
}

/// A connection as the upgrade hands it on.
pub(crate) struct Parts<S> {
    pub(crate) stream: S,
    /// TLS (or another filter) with its buffers, mid-stream.
    pub(crate) filter: Option<Box<FilterIo>>,
    /// Plain bytes read past the handshake: the first frames.
    pub(crate) leftover: BytesMut,
    /// The peer's EOF was read with the handshake: epoll will not report it again.
    pub(crate) peer_closed: bool,
}

pub(crate) struct Upgrade<S, H> {
    stream: Option<S>,
    filter: Option<Box<FilterIo>>,
    /// Plain bytes read and not parsed yet.
    input: BytesMut,
    pacing: ParsePacing,
    /// Plain bytes to send (a client's request; a refusal).
    output: BytesMut,
    handshake: H,
    timer: Option<TimerId>,
    /// Set once refused: flush `output`, then close.
    refusing: bool,
    /// Set once closed by the app mid-upgrade: the write side is shut down and input is
    /// discarded until the peer's EOF (or the linger timeout).
    lingering: bool,
    timeout: Duration,
}

impl<S: Stream, H: Handshake<S>> Upgrade<S, H> {
    pub(crate) fn new(
        stream: S,
        filter: Option<Box<FilterIo>>,
        first_output: BytesMut,
        handshake: H,
        timeout: Duration,
    ) -> Self {
        Upgrade {
            stream: Some(stream),
            filter,
            input: BytesMut::new(),
            pacing: ParsePacing::default(),
            output: first_output,
            handshake,
            timer: None,
            refusing: false,
            lingering: false,
            timeout,
        }
    }

    /// The handshake, to take what it made once the upgrade is done.
    pub(crate) fn handshake_mut(&mut self) -> &mut H {
        &mut self.handshake
    }

    fn stream(&mut self) -> &mut S {
        self.stream
            .as_mut()
            .expect("the upgrade owns the stream until it is done")
    }

    /// Reads what the socket has (through the filter) into `input`, within the read budget
    /// (then it reads on next turn). Returns false at EOF.
    fn read_all(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        let mut chunk = [0u8; 4096];
        let mut budget = READ_BUDGET;
        loop {
            if budget == 0 {
                cx.reschedule(Ready::READABLE);
                return Ok(true);
            }
            let n = match self.stream().read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            };
            budget = budget.saturating_sub(n);
            match self.filter.as_mut() {
                Some(io) => {
                    io.wire_in.extend_from_slice(&chunk[..n]);
                    let before = self.input.len();
                    io.filter
                        .decode(&mut io.wire_in, &mut self.input, MAX_HEAD + 1)?;
                    io.plain_in += (self.input.len() - before) as u64;
                    io.check_handshake_backlog()?;
                }
                None => self.input.extend_from_slice(&chunk[..n]),
            }
            if self.input.len() > MAX_HEAD * 2 {
                return Ok(true); // let the parser refuse it
            }
        }
    }

    /// Writes `output` (through the filter) until done or the socket is full. Returns true
    /// when nothing is left to write.
    fn flush(&mut self) -> Result<bool, Error> {
        let (stream, output) = (self.stream.as_mut().expect("owned"), &mut self.output);
        let wire = match self.filter.as_mut() {
            Some(io) => {
                if !io.filter.is_handshaking() && !output.is_empty() {
                    io.filter.encode(output, &mut io.wire_out)?;
                    io.plain_out += output.len() as u64;
                    output.clear();
                }
                io.filter.flush(&mut io.wire_out)?;
                &mut io.wire_out
            }
            None => output,
        };
        while !wire.is_empty() {
            match stream.write(wire) {
                Ok(0) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => wire.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
        Ok(self.output.is_empty())
    }

    /// An abnormal end of the upgrade: the handshake hears `error` (a client counts a
    /// failed dial); no session opened, so no `on_close`.
    fn fail(&mut self, cx: &mut Context<'_>, error: Error) -> Status {
        log::debug!("websocket upgrade failed: {error}");
        cx.extension::<Metrics>().count_error(&error);
        if matches!(error, Error::HandshakeTimeout(_)) {
            // As a session's handshake timeout does (TLS on TCP): the connection is reset
            // (SO_LINGER 0), not closed with a FIN.
            #[cfg(unix)]
            if let Some(stream) = self.stream.as_ref() {
                let _ = stream.socket().set_linger(Some(Duration::ZERO));
            }
        }
        // Unregistered first: the handshake may hand the failure on (a client redials).
        let status = self.end(cx);
        self.handshake.failed(cx, error);
        status
    }

    /// Ends the upgrade the way a session's `close()` ends a session: the handshake hears
    /// that it failed (a client counts a failed dial), the write side is shut down, and the
    /// entry reads and discards until the peer's EOF (at most `linger`), since closing a
    /// socket with unread input (a `101` on its way) would make the kernel reset it.
    pub(crate) fn close(&mut self, cx: &mut Context<'_>, linger: Duration) -> Status {
        if self.lingering || self.refusing || self.stream.is_none() {
            return Status::Continue;
        }
        log::debug!("websocket upgrade closed before it was done");
        self.handshake.failed(cx, Error::Closed);
        let _ = self.stream().shutdown_write();
        self.lingering = true;
        if let Some(timer) = self.timer.take() {
            cx.cancel_timer(timer);
        }
        self.timer = Some(cx.set_timer(linger, 0));
        self.discard_input(cx)
    }

    /// Reads and drops what the peer still sends; ends at its EOF or on an error.
    fn discard_input(&mut self, cx: &mut Context<'_>) -> Status {
        match read_and_drop(self.stream(), READ_BUDGET, cx) {
            Dropped::Ended => self.end(cx),
            Dropped::Waiting => Status::Continue,
        }
    }

    /// The entry's own end: cancels its timer and drops the connection.
    fn end(&mut self, cx: &mut Context<'_>) -> Status {
        if let Some(timer) = self.timer.take() {
            cx.cancel_timer(timer);
        }
        if let Some(mut stream) = self.stream.take() {
            let _ = cx.registry().deregister(&mut stream);
        }
        Status::Done
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Status {
        if self.refusing {
            return match self.flush() {
                Ok(false) => Status::Continue,
                _ => {
                    let _ = self.stream().shutdown_write();
                    self.end(cx)
                }
            };
        }
        let open = match self.read_all(cx) {
            Ok(open) => open,
            Err(e) => return self.fail(cx, e),
        };
        if let Err(e) = self.flush() {
            return self.fail(cx, e);
        }
        let handshaking = self
            .filter
            .as_ref()
            .is_some_and(|f| f.filter.is_handshaking());
        if handshaking || self.input.is_empty() {
            if !open {
                return self.fail(cx, Error::UnexpectedEof { buffered: 0 });
            }
            return Status::Continue;
        }
        // The peer's input has ended: what it sent is all there is, parsed now (a head
        // that cannot be a request is refused with its 400 however it was split).
        let step = if self.pacing.due(&self.input) || !open {
            let stream = self.stream.as_ref().expect("owned until done");
            self.handshake.advance(cx, &mut self.input, stream)
        } else {
            Step::More
        };
        match step {
            Step::More if open => Status::Continue,
            Step::More => self.fail(cx, Error::UnexpectedEof { buffered: 0 }),
            Step::Done => {
                if let Some(timer) = self.timer.take() {
                    cx.cancel_timer(timer);
                }
                let mut stream = self.stream.take().expect("owned until done");
                // The session registers the socket again under its own token.
                let _ = cx.registry().deregister(&mut stream);
                let parts = Parts {
                    stream,
                    filter: self.filter.take(),
                    leftover: std::mem::take(&mut self.input),
                    peer_closed: !open,
                };
                self.handshake.open_session(cx, parts);
                Status::Done
            }
            Step::Fail(error) => self.fail(cx, error),
            Step::Refuse(response) => {
                self.refusing = true;
                self.output = response;
                self.step(cx)
            }
        }
    }
}

/// When to parse a head again, as it arrives. Parsing it whole after every read would cost
/// a head trickled a byte at a time work quadratic in its length, for each slow peer; it is
/// parsed again only once a line has ended (every head ends with one, and has at most a
/// few dozen), once it has doubled since the last parse (so that junk is refused early: a
/// TLS ClientHello sent to a plain port gets its 400 at once), or once it is past the
/// limit, for the parser to refuse.
#[derive(Default)]
struct ParsePacing {
    /// The input's length at the last parse.
    parsed: usize,
    /// How much of the input was looked at for a line's end.
    seen: usize,
    /// A byte other than a line end came: the empty lines before a head (which the parser
    /// skips, however many) are paced as junk, by doubling.
    started: bool,
}

impl ParsePacing {
    fn due(&mut self, input: &[u8]) -> bool {
        let new = input.get(self.seen..).unwrap_or_default();
        self.started = self.started || new.iter().any(|&b| b != b'\r' && b != b'\n');
        let line_ended = self.started && new.contains(&b'\n');
        self.seen = input.len();
        let due = line_ended || input.len() >= 2 * self.parsed || input.len() > MAX_HEAD;
        if due {
            self.parsed = input.len();
        }
        due
    }
}

impl<S: Stream, H: Handshake<S>> Entry for Upgrade<S, H> {
    /// A session's commands, since an upgrade is a session to be, in the server's group of
    /// sessions.
    type Command = SessionCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        let interest = Interest::READABLE | Interest::WRITABLE;
        let token = cx.token();
        if let Err(e) = cx.registry().register(self.stream(), token, interest) {
            return self.fail(cx, Error::Io(e));
        }
        self.timer = Some(cx.set_timer(self.timeout, 0));
        self.step(cx)
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _ready: Ready) -> Status {
        if self.lingering {
            return self.discard_input(cx);
        }
        self.step(cx)
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _tag: u64) -> Status {
        self.timer = None;
        if self.lingering {
            return self.end(cx); // the peer never closed; stop waiting
        }
        self.fail(cx, Error::HandshakeTimeout(self.timeout))
    }

    fn on_command(&mut self, cx: &mut Context<'_>, command: SessionCommand) -> Status {
        if self.lingering {
            return Status::Continue;
        }
        match command.0 {
            // The server closing its sessions (or the app closing this one) ends an
            // upgrade in progress too.
            SessionOp::Close | SessionOp::Abort => self.fail(cx, Error::Closed),
            // Only a session's handle sends jobs, and there is no session yet.
            SessionOp::Job(_) => Status::Continue,
        }
    }

    fn on_shutdown(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        if self.lingering {
            // Finish lingering, unless time is up.
            return if deadline.is_some() {
                Status::Continue
            } else {
                self.end(cx)
            };
        }
        self.fail(cx, Error::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lengths at which a head fed `step` bytes at a time is parsed.
    fn parses(head: &[u8], step: usize) -> Vec<usize> {
        let mut pacing = ParsePacing::default();
        (1..=head.len().div_ceil(step))
            .map(|n| (n * step).min(head.len()))
            .filter(|&len| pacing.due(&head[..len]))
            .collect()
    }

    #[test]
    fn a_head_is_parsed_again_once_a_line_has_ended_or_it_has_doubled() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        // A byte at a time: at doubled lengths (1 to 16) and at each line's end (16, 25, 27).
        assert_eq!(parses(head, 1), [1, 2, 4, 8, 16, 25, 27]);
        assert_eq!(parses(head, head.len()), [27], "all at once");
        // A head of one long line: the parses' total length stays within three times the head's,
        // and one past the limit is parsed at once, for the parser to refuse it.
        let line = [b'x'; MAX_HEAD + 1];
        let lengths = parses(&line, 1);
        assert!(lengths.iter().sum::<usize>() <= 3 * MAX_HEAD, "{lengths:?}");
        assert_eq!(lengths.last(), Some(&(MAX_HEAD + 1)));
    }

    /// Empty lines before a request line are skipped by the parser (httparse, as RFC 9112
    /// §2.2 allows), however many: a peer that trickles nothing but line ends must not
    /// have the head parsed again at every byte, work quadratic in the head's length.
    #[test]
    fn leading_empty_lines_are_paced_like_any_junk() {
        for junk in [&b"\n"[..], b"\r\n"] {
            let head: Vec<u8> = junk.iter().copied().cycle().take(MAX_HEAD + 1).collect();
            let lengths = parses(&head, 1);
            let total: usize = lengths.iter().sum();
            assert!(
                total <= 3 * MAX_HEAD,
                "{} parses, {total} bytes",
                lengths.len()
            );
            assert_eq!(lengths.last(), Some(&(MAX_HEAD + 1)));
        }
        // A request after them is parsed at its lines' ends.
        let head = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(parses(head, 1), [1, 2, 4, 8, 16, 20, 29, 31]);
    }
}
