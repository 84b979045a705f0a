//! The server: one store per reactor, shared by that reactor's sessions and its expiry
//! sweep; TCP on one or more reactors, or a unix socket.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use getty::codec::{Bytes, BytesMut, Encoder, RespCodec, RespCommand, RespValue};
use getty::reactor::{Context, Entry, NoCommand, ReactorThread, Ready, Status};
use getty::tcp::{Setup, TcpServer};
use getty::unix::UnixServer;
use getty::{Handler, Reactor, ReactorPool, Session, SessionOptions, Transport};

use crate::commands::{execute, Flow, Reply};
use crate::store::Store;

/// How often the expiry sweep runs: Redis's default `hz` is 10.
const SWEEP_PERIOD: Duration = Duration::from_millis(100);

/// The largest command a session accepts (Redis accepts 512 MiB bulk strings; a smaller
/// bound keeps one client from making the server buffer that much).
pub(crate) const MAX_COMMAND_LEN: usize = 64 << 20;

/// The store of one reactor; `Rc<RefCell<_>>` because only that reactor's thread ever
/// touches it, from one callback at a time.
pub(crate) type Shared = Rc<RefCell<Store>>;

/// The session options of every connection: commands up to `MAX_COMMAND_LEN`, and room in
/// the outbound queue for a reply as large (a `GET` of the largest value).
pub(crate) fn session_options() -> SessionOptions {
    SessionOptions::default()
        .max_message_len(MAX_COMMAND_LEN)
        .max_outbound(2 * MAX_COMMAND_LEN)
}

/// One connection: runs its commands against its reactor's store, replies in order.
pub(crate) struct Connection {
    store: Shared,
    backlog: Backlog,
}

impl Connection {
    pub(crate) fn new(store: Shared) -> Connection {
        Connection {
            store,
            backlog: Backlog::default(),
        }
    }
}

/// The rest of a reply too large to queue at once (an `MGET` of many large values, whose
/// reply may be far larger than `max_outbound`): it leaves in steps as the peer reads,
/// each step filling the queue to its high watermark, and reading is paused until it is
/// all out (so the commands after it wait, and their replies follow it in order). Values
/// wait as the store's own `Bytes`, shared, never copied, so a backlog costs at most a
/// few dozen bytes per argument of the command (at most 1 Mi arguments).
#[derive(Default)]
struct Backlog {
    parts: VecDeque<Part>,
    /// Encoded since the last part.
    tail: BytesMut,
    /// `QUIT` came while replies waited: close once they are out.
    close: bool,
}

enum Part {
    /// Encoded replies.
    Encoded(Bytes),
    /// A value from the store, sent as a bulk string.
    Value(Bytes),
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.tail.is_empty()
    }

    /// Queues what fits below the high watermark; once the backlog is empty, reads again
    /// (or closes, after a `QUIT`). Called after a command and when the queue has drained.
    fn drain<T: Transport>(&mut self, session: &mut Session<RespCodec, T>) {
        while session.is_writable() && !session.is_closing() {
            let written = match self.parts.pop_front() {
                Some(Part::Encoded(bytes)) => session.write_bytes(bytes),
                Some(Part::Value(value)) => session.write(RespValue::Bulk(&value)),
                None if !self.tail.is_empty() => session.write_bytes(self.tail.split().freeze()),
                None => break,
            };
            if let Err(e) = written {
                log::info!("session {}: reply refused ({e}); closing", session.id());
                self.parts.clear();
                self.tail.clear();
                session.close();
                return;
            }
        }
        if !self.is_empty() {
            session.pause_reading();
        } else if self.close {
            session.close();
        } else {
            session.resume_reading();
        }
    }
}

/// Where a command's replies go: straight to the session while it is writable and nothing
/// waits, else to the backlog behind what waits.
struct Replies<'a, T: Transport> {
    session: &'a mut Session<RespCodec, T>,
    backlog: &'a mut Backlog,
}

impl<T: Transport> Replies<'_, T> {
    fn direct(&self) -> bool {
        self.backlog.is_empty() && self.session.is_writable()
    }
}

impl<T: Transport> Reply for Replies<'_, T> {
    fn send(&mut self, value: RespValue<'_>) {
        if self.direct() {
            Reply::send(&mut *self.session, value);
        } else if let Err(e) = RespCodec::default().encode(value, &mut self.backlog.tail) {
            log::warn!("session {}: reply not encoded ({e})", self.session.id());
        }
    }

    fn stored(&mut self, value: Option<&Bytes>) {
        match value {
            Some(value) if !self.direct() => {
                let backlog = &mut *self.backlog;
                if !backlog.tail.is_empty() {
                    let encoded = backlog.tail.split().freeze();
                    backlog.parts.push_back(Part::Encoded(encoded));
                }
                backlog.parts.push_back(Part::Value(value.clone()));
            }
            _ => self.bulk_or_null(value.map(|v| &v[..])),
        }
    }
}

impl<T: Transport> Reply for Session<RespCodec, T> {
    fn send(&mut self, value: RespValue<'_>) {
        // Fails only when the session is closing, or its queue is past the hard bound
        // (a client that pipelines without reading its replies): then it ends.
        if let Err(e) = self.write(value) {
            if !self.is_closing() {
                log::info!("session {}: reply refused ({e}); closing", self.id());
                self.close();
            }
        }
    }
}

impl<T: Transport> Handler<RespCodec, T> for Connection {
    fn on_message(&mut self, session: &mut Session<RespCodec, T>, command: RespCommand) {
        let mut out = Replies {
            session,
            backlog: &mut self.backlog,
        };
        let flow = execute(&mut self.store.borrow_mut(), &command, &mut out);
        if self.backlog.is_empty() {
            if flow == Flow::Close {
                session.close();
            }
            return;
        }
        self.backlog.close |= flow == Flow::Close;
        self.backlog.drain(session);
    }

    fn on_writability_changed(&mut self, session: &mut Session<RespCodec, T>, writable: bool) {
        if writable && (!self.backlog.is_empty() || self.backlog.close) {
            self.backlog.drain(session);
        }
    }

    fn on_error(&mut self, session: &mut Session<RespCodec, T>, error: &getty::Error) {
        // A protocol error (or a command over the limit) ends the session, as in Redis,
        // which tells the client why first (if the session can still take a write).
        log::info!("session {}: {error}", session.id());
        let why = format!("ERR Protocol error: {error}").replace(['\r', '\n'], " ");
        let _ = session.write(RespValue::Error(&why));
    }
}

/// The periodic half of expiry: an entry on the reactor that owns the store, woken by a
/// reactor timer (never a thread of its own), sampling a bounded number of keys per tick.
struct ExpirySweep {
    store: Shared,
}

impl Entry for ExpirySweep {
    type Command = NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        cx.set_timer(SWEEP_PERIOD, 0);
        Status::Continue
    }

    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _: u64) -> Status {
        let deleted = self.store.borrow_mut().sweep(Instant::now());
        if deleted > 0 {
            log::debug!("expiry sweep: {deleted} keys deleted");
        }
        cx.set_timer(SWEEP_PERIOD, 0);
        Status::Continue
    }
}

/// A fresh store for `reactor`, with its expiry sweep running there.
fn store_on(reactor: &mut Reactor) -> Shared {
    let store = Rc::new(RefCell::new(Store::new()));
    reactor.spawn(ExpirySweep {
        store: store.clone(),
    });
    store
}

/// Serves TCP at `addr` on `reactors` reactor threads, each with its own `SO_REUSEPORT`
/// listener and its own store; returns the pool and the address it listens on.
pub(crate) fn serve_tcp(
    addr: SocketAddr,
    reactors: usize,
) -> io::Result<(ReactorPool, SocketAddr)> {
    // Reactor 0 may bind port 0; the others then bind the port it got.
    let bound = Arc::new(Mutex::new(addr));
    let bound_in = bound.clone();
    let pool = ReactorPool::start(reactors, move |_, reactor| {
        let store = store_on(reactor);
        let mut at = bound_in.lock().unwrap_or_else(|p| p.into_inner());
        let server = TcpServer::builder()
            .reuse_port(reactors > 1)
            .session_options(session_options())
            .bind(*at, move |_: &mut Setup<'_>| {
                let store = store.clone();
                Ok((RespCodec::default(), Connection::new(store)))
            })?;
        *at = server.local_addr();
        reactor.spawn(server);
        Ok(())
    })?;
    let addr = *bound.lock().unwrap_or_else(|p| p.into_inner());
    Ok((pool, addr))
}

/// Serves the unix socket at `path` on one reactor thread.
pub(crate) fn serve_unix(path: &Path) -> io::Result<ReactorThread> {
    let path = path.to_path_buf();
    Reactor::start_thread("kv-unix", move |reactor| {
        let store = store_on(reactor);
        let server = UnixServer::builder()
            .session_options(session_options())
            .bind(path, move |_| {
                let store = store.clone();
                Ok((RespCodec::default(), Connection::new(store)))
            })?;
        reactor.spawn(server);
        Ok(())
    })
}
