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
use crate::rooms::{Rooms, Seat};

/// The longest message a client may send, in bytes (after decompression).
pub(crate) const MAX_MESSAGE_LEN: usize = 64 << 10;

/// Above this many queued bytes a member is slow: the room's messages wait for it (see the
/// rooms' policy), and it stops reading its own.
pub(crate) const HIGH_WATERMARK: usize = 1 << 20;

/// A slow member takes the room's messages again once its queue is down to this.
pub(crate) const LOW_WATERMARK: usize = 256 << 10;

/// The options of every chat session.
pub(crate) fn session_options() -> SessionOptions {
    SessionOptions::default()
        .max_message_len(MAX_MESSAGE_LEN)
        .watermarks(HIGH_WATERMARK, LOW_WATERMARK)
}

/// One chat session: a `join` first, then every text message goes to its room.
struct ChatSession {
    rooms: Rooms,
    seat: Option<Seat>,
}

impl ChatSession {
    fn join(&mut self, session: &mut Session<MessageCodec, Ws>, line: &str) {
        let joined = protocol::parse_join(line)
            .and_then(|join| self.rooms.join(session, join.room, join.name));
        match joined {
            Ok(seat) => self.seat = Some(seat),
            Err(why) => refuse(session, why),
        }
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
            Some(seat) => seat.say(session.id(), text),
        }
    }

    fn on_error(&mut self, session: &mut Session<MessageCodec, Ws>, error: &getty::Error) {
        log::info!(
            "session {} from {}: {error}",
            session.id(),
            session.peer_addr()
        );
        if let getty::Error::SlowConsumer { .. } = error {
            // After what it was sent so far, before the close.
            let _ = session.write(Message::text(protocol::error(&error.to_string())));
        }
    }

    fn on_close(&mut self, session: &mut Session<MessageCodec, Ws>) {
        if let Some(seat) = self.seat.take() {
            self.rooms.leave(&seat, session.id());
        }
    }
}

/// Serves the chat at `addr` on `reactors` reactor threads, each with its own
/// `SO_REUSEPORT` listener; returns the pool and the address they listen on.
pub(crate) fn serve(addr: SocketAddr, reactors: usize) -> io::Result<(ReactorPool, SocketAddr)> {
    let pool = ReactorPool::start(reactors, |_, _| Ok(()))?;
    let handles: Arc<[_]> = pool.handles().into();
    let rooms = Rooms::new(handles.clone());
    let mut at = addr;
    for reactor in handles.iter() {
        let rooms = rooms.clone();
        let listening = reactor.query(move |spawner| {
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
