//! The server: a WebSocket route whose sessions speak the chat protocol, on one or more
//! reactors, with the rooms of [`crate::rooms`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use getty::codec::ws::DeflateConfig;
use getty::codec::{Message, MessageCodec};
use getty::ws::{Ws, WsServer};
use getty::{Handler, ReactorPool, Session, SessionOptions};

use crate::protocol;
use crate::rooms::{BacklogRetry, Rooms};

/// The longest message a client may send, in bytes (after decompression).
pub(crate) const MAX_MESSAGE_LEN: usize = 64 << 10;

/// Above this many queued bytes a member is slow: what is for it waits in its backlog.
pub(crate) const HIGH_WATERMARK: usize = 1 << 20;

/// A slow member's messages flow again once its queue is down to this.
pub(crate) const LOW_WATERMARK: usize = 256 << 10;

/// The hard bound on a member's queue (see the rooms' policy): past it, it is disconnected.
pub(crate) const MAX_OUTBOUND: usize = 16 << 20;

/// The options of every chat session.
pub(crate) fn session_options() -> SessionOptions {
    SessionOptions::default()
        .max_message_len(MAX_MESSAGE_LEN)
        .watermarks(HIGH_WATERMARK, LOW_WATERMARK)
        .max_outbound(MAX_OUTBOUND)
}

/// Where a session sits once its `join` was read.
struct Seat {
    room: Arc<str>,
    name: Arc<str>,
}

/// One chat session: a `join` first, then every text message goes to its room.
struct ChatSession {
    rooms: Rooms,
    seat: Option<Seat>,
}

impl ChatSession {
    fn join(&mut self, session: &mut Session<MessageCodec, Ws>, line: &str) {
        let join = match protocol::parse_join(line) {
            Ok(join) => join,
            Err(why) => return refuse(session, why),
        };
        let Some(member) = session.handle() else {
            return refuse(session, "internal error");
        };
        let seat = Seat {
            room: join.room.into(),
            name: join.name.into(),
        };
        self.rooms.join(&seat.room, &seat.name, member);
        self.seat = Some(seat);
    }
}

/// Answers `error <why>` and closes with a policy-violation code.
fn refuse(session: &mut Session<MessageCodec, Ws>, why: &str) {
    let _ = session.write(Message::text(protocol::error(why)));
    let _ = session.close_with(1008, "bad join");
}

impl Handler<MessageCodec, Ws> for ChatSession {
    fn on_message(&mut self, session: &mut Session<MessageCodec, Ws>, message: Message) {
        let Some(text) = message.as_text() else {
            let _ = session.close_with(1003, "text messages only");
            return;
        };
        match &self.seat {
            None => self.join(session, text),
            Some(seat) => {
                let line = protocol::said(&seat.name, text);
                self.rooms.broadcast(&seat.room, session.id(), line);
            }
        }
    }

    fn on_writability_changed(&mut self, session: &mut Session<MessageCodec, Ws>, writable: bool) {
        if let (true, Some(seat)) = (writable, &self.seat) {
            self.rooms.resume(&seat.room, session.id());
        }
    }

    fn on_error(&mut self, session: &mut Session<MessageCodec, Ws>, error: &getty::Error) {
        log::info!(
            "session {} from {}: {error}",
            session.id(),
            session.peer_addr()
        );
    }

    fn on_close(&mut self, session: &mut Session<MessageCodec, Ws>) {
        if let Some(seat) = &self.seat {
            self.rooms.leave(&seat.room, session.id());
        }
    }
}

/// Serves the chat at `addr` on `reactors` reactor threads, each with its own
/// `SO_REUSEPORT` listener; returns the pool and the address they listen on.
pub(crate) fn serve(addr: SocketAddr, reactors: usize) -> io::Result<(ReactorPool, SocketAddr)> {
    // The reactors start empty: a session's `Rooms` needs every reactor's handle.
    let pool = ReactorPool::start(reactors, |_, _| Ok(()))?;
    let handles: Arc<[_]> = pool.handles().into();
    let mut at = addr;
    for (here, reactor) in handles.iter().enumerate() {
        let rooms = Rooms::new(handles.clone(), here);
        let listening = reactor.query(move |spawner| {
            spawner.spawn(BacklogRetry);
            let server = WsServer::builder()
                .reuse_port(reactors > 1)
                .session_options(session_options())
                .deflate(Some(DeflateConfig::default()))
                .route("/", move |_| {
                    let rooms = rooms.clone();
                    Ok((MessageCodec, ChatSession { rooms, seat: None }))
                })
                .bind(at)?;
            let bound = server.local_addr();
            spawner.spawn(server);
            Ok::<_, io::Error>(bound)
        });
        // Reactor 0 may bind port 0; the others then bind the port it got.
        match listening.and_then(|bound| bound) {
            Ok(bound) => at = bound,
            Err(e) => {
                pool.shutdown();
                let _ = pool.join();
                return Err(e);
            }
        }
    }
    Ok((pool, at))
}
