//! Events reported by handlers: what happened to which session, sent to the test thread, and a
//! `Probe` handler that reports every callback.

use super::*;

/// An [`Error`] reduced to what tests compare (`Error` holds an `io::Error`, so it is not
/// `Clone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrKind {
    Io(io::ErrorKind),
    Codec(CodecErrorKind),
    MessageTooLong {
        len: usize,
        max: usize,
    },
    CodecConsumedNothing,
    UnexpectedEof {
        buffered: usize,
    },
    ReadIdle(Duration),
    WriteStalled(Duration),
    ConnectTimeout(Duration),
    QueueFull {
        queued: usize,
        adding: usize,
        max: usize,
    },
    SlowConsumer {
        pending: usize,
        max: usize,
    },
    Closed,
    Other(String),
}

pub fn classify(error: &Error) -> ErrKind {
    match error {
        Error::Io(e) => ErrKind::Io(e.kind()),
        Error::Codec(e) => ErrKind::Codec(e.kind()),
        Error::MessageTooLong { len, max } => ErrKind::MessageTooLong {
            len: *len,
            max: *max,
        },
        Error::CodecConsumedNothing => ErrKind::CodecConsumedNothing,
        Error::UnexpectedEof { buffered } => ErrKind::UnexpectedEof {
            buffered: *buffered,
        },
        Error::ReadIdle(d) => ErrKind::ReadIdle(*d),
        Error::WriteStalled(d) => ErrKind::WriteStalled(*d),
        Error::ConnectTimeout(d) => ErrKind::ConnectTimeout(*d),
        Error::QueueFull {
            queued,
            adding,
            max,
        } => ErrKind::QueueFull {
            queued: *queued,
            adding: *adding,
            max: *max,
        },
        Error::SlowConsumer { pending, max } => ErrKind::SlowConsumer {
            pending: *pending,
            max: *max,
        },
        Error::Closed => ErrKind::Closed,
        other => ErrKind::Other(other.to_string()),
    }
}

/// What a handler saw, tagged with the session id.
#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Open {
        sid: u64,
        peer: SocketAddr,
    },
    /// `on_open` was called and refused the session.
    Rejected {
        sid: u64,
        peer: SocketAddr,
    },
    Msg {
        sid: u64,
        msg: Bytes,
    },
    Error {
        sid: u64,
        err: ErrKind,
    },
    Close {
        sid: u64,
    },
    Writable {
        sid: u64,
        writable: bool,
    },
    Cron {
        sid: u64,
    },
    /// Anything else a test handler wants to say.
    Note {
        sid: u64,
        what: String,
    },
}

impl Ev {
    pub fn sid(&self) -> u64 {
        match self {
            Ev::Open { sid, .. }
            | Ev::Rejected { sid, .. }
            | Ev::Msg { sid, .. }
            | Ev::Error { sid, .. }
            | Ev::Close { sid }
            | Ev::Writable { sid, .. }
            | Ev::Cron { sid }
            | Ev::Note { sid, .. } => *sid,
        }
    }
}

/// Receives the events of one test's handlers and keeps all of them, in order.
pub struct Events {
    rx: Receiver<Ev>,
    pub all: Vec<Ev>,
}

impl Events {
    pub fn new() -> (Sender<Ev>, Events) {
        let (tx, rx) = mpsc::channel();
        (
            tx,
            Events {
                rx,
                all: Vec::new(),
            },
        )
    }

    /// Takes in whatever has arrived.
    pub fn pump(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            self.all.push(ev);
        }
    }

    /// Waits until at least `n` of the events seen so far match `pred`, and returns them.
    pub fn wait_n(&mut self, what: &str, n: usize, mut pred: impl FnMut(&Ev) -> bool) -> Vec<Ev> {
        let deadline = Instant::now() + STEP;
        loop {
            self.pump();
            let found: Vec<Ev> = self.all.iter().filter(|e| pred(e)).cloned().collect();
            if found.len() >= n {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(ev) => self.all.push(ev),
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => panic!(
                    "timed out waiting for {n} x {what} (have {}); events so far: {:#?}",
                    found.len(),
                    self.all
                ),
            }
        }
    }

    /// Waits for one event matching `pred` and returns the first such event.
    pub fn wait(&mut self, what: &str, pred: impl FnMut(&Ev) -> bool) -> Ev {
        self.wait_n(what, 1, pred).remove(0)
    }

    /// Waits for the `Open` of the session whose peer is `peer` and returns its id.
    pub fn wait_open(&mut self, peer: SocketAddr) -> u64 {
        self.wait(
            &format!("on_open of {peer}"),
            |e| matches!(e, Ev::Open { peer: p, .. } if *p == peer),
        )
        .sid()
    }

    /// Waits for the `Close` of session `sid`.
    pub fn wait_close(&mut self, sid: u64) {
        self.wait(
            &format!("on_close of session {sid}"),
            |e| matches!(e, Ev::Close { sid: s } if *s == sid),
        );
    }

    pub fn count(&mut self, mut pred: impl FnMut(&Ev) -> bool) -> usize {
        self.pump();
        self.all.iter().filter(|e| pred(e)).count()
    }

    /// The events of one session, in order.
    pub fn of(&mut self, sid: u64) -> Vec<Ev> {
        self.pump();
        self.all
            .iter()
            .filter(|e| e.sid() == sid)
            .cloned()
            .collect()
    }

    /// The errors reported for one session.
    pub fn errors_of(&mut self, sid: u64) -> Vec<ErrKind> {
        self.of(sid)
            .into_iter()
            .filter_map(|e| match e {
                Ev::Error { err, .. } => Some(err),
                _ => None,
            })
            .collect()
    }

    /// Checks the Handler contract for every session seen: `on_open` first; a session
    /// rejected by `on_open` hears nothing else; an opened one hears `on_close` exactly
    /// once and last, and `on_error` at most once, right before `on_close`.
    /// Call it after the reactors have stopped, when no more events can come.
    pub fn check_contract(&mut self) {
        self.pump();
        let mut by_sid: BTreeMap<u64, Vec<&Ev>> = BTreeMap::new();
        for ev in &self.all {
            by_sid.entry(ev.sid()).or_default().push(ev);
        }
        for (sid, evs) in by_sid {
            match evs[0] {
                Ev::Rejected { .. } => {
                    assert_eq!(
                        evs.len(),
                        1,
                        "session {sid} was rejected by on_open, yet heard more: {evs:?}"
                    );
                    continue;
                }
                Ev::Open { .. } => {}
                _ => panic!("session {sid}: first event is not on_open: {evs:?}"),
            }
            let opens = evs.iter().filter(|e| matches!(e, Ev::Open { .. })).count();
            assert_eq!(opens, 1, "session {sid}: on_open {opens} times: {evs:?}");
            let closes = evs.iter().filter(|e| matches!(e, Ev::Close { .. })).count();
            assert_eq!(closes, 1, "session {sid}: on_close {closes} times: {evs:?}");
            assert!(
                matches!(evs.last(), Some(Ev::Close { .. })),
                "session {sid}: on_close is not the last event: {evs:?}"
            );
            let errors: Vec<usize> = evs
                .iter()
                .enumerate()
                .filter(|(_, e)| matches!(e, Ev::Error { .. }))
                .map(|(i, _)| i)
                .collect();
            assert!(
                errors.len() <= 1,
                "session {sid}: on_error {} times: {evs:?}",
                errors.len()
            );
            if let Some(&i) = errors.first() {
                assert_eq!(
                    i,
                    evs.len() - 2,
                    "session {sid}: on_error is not right before on_close: {evs:?}"
                );
            }
        }
    }
}

/// A handler that reports every callback; it echoes messages when `echo` is set.
pub struct Probe {
    pub tx: Sender<Ev>,
    pub echo: bool,
}

impl Probe {
    pub fn echo(tx: &Sender<Ev>) -> Probe {
        Probe {
            tx: tx.clone(),
            echo: true,
        }
    }

    pub fn silent(tx: &Sender<Ev>) -> Probe {
        Probe {
            tx: tx.clone(),
            echo: false,
        }
    }
}

impl<C, T> Handler<C, T> for Probe
where
    C: Decoder<Item = Bytes> + Encoder<Bytes> + 'static,
    T: Transport<Addr = SocketAddr>,
{
    fn on_open(&mut self, s: &mut Session<C, T>) -> io::Result<()> {
        let _ = self.tx.send(Ev::Open {
            sid: s.id(),
            peer: s.peer_addr(),
        });
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<C, T>, msg: Bytes) {
        let _ = self.tx.send(Ev::Msg {
            sid: s.id(),
            msg: msg.clone(),
        });
        if self.echo {
            if let Err(e) = s.write(msg) {
                let _ = self.tx.send(Ev::Note {
                    sid: s.id(),
                    what: format!("echo failed: {e}"),
                });
            }
        }
    }

    fn on_cron(&mut self, s: &mut Session<C, T>) {
        let _ = self.tx.send(Ev::Cron { sid: s.id() });
    }

    fn on_writability_changed(&mut self, s: &mut Session<C, T>, writable: bool) {
        let _ = self.tx.send(Ev::Writable {
            sid: s.id(),
            writable,
        });
    }

    fn on_error(&mut self, s: &mut Session<C, T>, error: &Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }

    fn on_close(&mut self, s: &mut Session<C, T>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}
