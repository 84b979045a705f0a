//! The accepting half every stream server shares (TCP, WebSocket, unix sockets): a
//! listening socket, an accept loop that runs until `WouldBlock` within a budget, a pause on
//! a timer when the process runs out of file descriptors, and the commands a server
//! answers (`Close`, `CloseSessions`, session count).

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use getty_reactor::{Context, Entry, GroupId, Ready, Recipient, Status};
use mio::net::{TcpListener, TcpStream};
use mio::Interest;
use socket2::{Domain, Protocol, Socket, Type};

use crate::commands::{ServerCommand, ServerOp, SessionCommand};
use crate::stream::Stream;
use crate::{Close, Metrics};

/// A listening socket of some family.
pub(crate) trait Listener: mio::event::Source + 'static {
    /// The connected sockets it accepts.
    type Stream: Stream;

    /// One non-blocking accept.
    fn accept_one(&self) -> io::Result<(Self::Stream, <Self::Stream as Stream>::Addr)>;

    /// Whether an accepted connection is the listener dialling itself (TCP: a client on
    /// this host whose ephemeral port happened to be the listening port).
    fn is_self_connect(
        &self,
        stream: &Self::Stream,
        peer: &<Self::Stream as Stream>::Addr,
        local: &<Self::Stream as Stream>::Addr,
    ) -> bool {
        let _ = (stream, peer, local);
        false
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    fn accept_one(&self) -> io::Result<(TcpStream, SocketAddr)> {
        self.accept()
    }

    fn is_self_connect(&self, stream: &TcpStream, peer: &SocketAddr, local: &SocketAddr) -> bool {
        peer.port() == local.port() && stream.local_addr().ok() == Some(*peer)
    }
}

/// The address type of a listener's connections.
pub(crate) type AddrOf<L> = <<L as Listener>::Stream as Stream>::Addr;

/// The transport of the sessions a listener's connections become.
pub(crate) type PlainOf<L> = <<L as Listener>::Stream as Stream>::Plain;

/// Connections accepted per loop turn before the listener yields to its sessions.
const ACCEPT_BUDGET: usize = 256;

/// The first pause after the process ran out of file descriptors; doubles up to a second.
const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(10);
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// How to open the listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenOptions {
    pub(crate) backlog: i32,
    pub(crate) reuse_port: bool,
}

impl Default for ListenOptions {
    /// Backlog 1024 (mio's own `bind` uses 128, which drops bursts); no `SO_REUSEPORT`.
    fn default() -> Self {
        ListenOptions {
            backlog: 1024,
            reuse_port: false,
        }
    }
}

impl ListenOptions {
    /// The listen backlog, at most `i32::MAX` (what `listen` takes).
    pub(crate) fn backlog(self, backlog: u32) -> Self {
        ListenOptions {
            backlog: backlog.min(i32::MAX as u32) as i32,
            ..self
        }
    }

    /// Binds the first of `addr`'s addresses that works.
    pub(crate) fn bind(&self, addr: impl ToSocketAddrs) -> io::Result<Acceptor<TcpListener>> {
        let mut last_error = None;
        for addr in addr.to_socket_addrs()? {
            match self.listen(addr) {
                Ok(listener) => {
                    let local_addr = listener.local_addr()?;
                    return Ok(Acceptor::new(listener, local_addr));
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to")
        }))
    }

    fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        #[cfg(unix)]
        if self.reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(self.backlog)?;
        Ok(TcpListener::from_std(socket.into()))
    }
}

/// The group of a server's sessions (and of handshakes that will become sessions).
pub(crate) type Sessions = GroupId<SessionCommand>;

/// A listening socket and its accept loop. The server that owns it decides what an accepted
/// connection becomes.
pub(crate) struct Acceptor<L: Listener> {
    listener: L,
    local_addr: AddrOf<L>,
    /// True while accepting is paused after running out of file descriptors.
    paused: bool,
    /// The length of the last pause, doubled for the next one; zero after a good accept.
    last_pause: Duration,
    /// The reactor group the server spawns its sessions into, to reach them all later (at
    /// no cost per session). `None` only if the reactor ran out of groups.
    sessions: Option<Sessions>,
}

impl<L: Listener> Acceptor<L> {
    pub(crate) fn new(listener: L, local_addr: AddrOf<L>) -> Self {
        Acceptor {
            listener,
            local_addr,
            paused: false,
            last_pause: Duration::ZERO,
            sessions: None,
        }
    }

    pub(crate) fn local_addr(&self) -> &AddrOf<L> {
        &self.local_addr
    }

    /// Registers the listener (the server's `on_start`).
    pub(crate) fn start(&mut self, cx: &mut Context<'_>) -> Status {
        self.sessions = cx.new_group::<SessionCommand>();
        match cx
            .registry()
            .register(&mut self.listener, cx.token(), Interest::READABLE)
        {
            Ok(()) => {
                log::info!("listening on {}", self.local_addr);
                Status::Continue
            }
            Err(e) => {
                log::error!("cannot register listener {}: {e}", self.local_addr);
                Status::Done
            }
        }
    }

    /// The server's `on_ready`.
    /// `accepted` makes what an accepted connection becomes: an entry to spawn into the
    /// server's group (a session, or a handshake that will become one), or `None` when it
    /// was refused.
    pub(crate) fn on_ready<E: Entry<Command = SessionCommand>>(
        &mut self,
        cx: &mut Context<'_>,
        accepted: impl FnMut(&mut Context<'_>, L::Stream, AddrOf<L>) -> Option<E>,
    ) -> Status {
        if !self.paused {
            self.accept_some(cx, accepted);
        }
        Status::Continue
    }

    /// The server's `on_timer`: the pause is over. Connections waiting in the backlog
    /// raised no new edge while paused, so accept at once.
    pub(crate) fn on_timer<E: Entry<Command = SessionCommand>>(
        &mut self,
        cx: &mut Context<'_>,
        accepted: impl FnMut(&mut Context<'_>, L::Stream, AddrOf<L>) -> Option<E>,
    ) -> Status {
        self.paused = false;
        self.accept_some(cx, accepted);
        Status::Continue
    }

    /// The group of the server's sessions, for entries that spawn a session later (a
    /// WebSocket upgrade).
    #[cfg(feature = "ws")]
    pub(crate) fn group(&self) -> Option<Sessions> {
        self.sessions
    }

    /// Spawns a session entry into the server's group.
    pub(crate) fn spawn_session<E: Entry<Command = SessionCommand>>(
        &self,
        cx: &mut Context<'_>,
        entry: E,
    ) -> Recipient<SessionCommand> {
        match self.sessions {
            Some(group) => cx.spawn_in(group, entry),
            None => cx.spawn(entry),
        }
    }

    /// The server's `on_command`: [`Close`] stops listening (the sessions carry on),
    /// [`CloseSessions`] closes the server's sessions, and a session count is answered.
    pub(crate) fn on_command(&mut self, cx: &mut Context<'_>, command: ServerCommand) -> Status {
        match command.0 {
            ServerOp::Close => {
                log::info!("stopped listening on {}", self.local_addr);
                return Status::Done;
            }
            ServerOp::CloseSessions => {
                for session in self.live_sessions(cx) {
                    cx.send(session, Close);
                }
            }
            ServerOp::AskSessionCount(ask) => {
                let _ = ask.0.send(self.live_sessions(cx).len());
            }
        }
        Status::Continue
    }

    fn accept_some<E: Entry<Command = SessionCommand>>(
        &mut self,
        cx: &mut Context<'_>,
        mut accepted: impl FnMut(&mut Context<'_>, L::Stream, AddrOf<L>) -> Option<E>,
    ) {
        for _ in 0..ACCEPT_BUDGET {
            match self.listener.accept_one() {
                Ok((stream, peer)) => {
                    self.last_pause = Duration::ZERO;
                    cx.extension::<Metrics>().accepted += 1;
                    if self
                        .listener
                        .is_self_connect(&stream, &peer, &self.local_addr)
                    {
                        log::warn!("refusing a self-connect on {peer}");
                        continue;
                    }
                    match accepted(cx, stream, peer) {
                        Some(entry) => {
                            self.spawn_session(cx, entry);
                        }
                        None => cx.extension::<Metrics>().refused += 1,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_resource_exhaustion(&e) => {
                    self.pause_accepting(cx, e);
                    return;
                }
                // ECONNABORTED and friends concern one connection, not the listener.
                Err(e) => log::debug!("accept on {}: {e}", self.local_addr),
            }
        }
        cx.reschedule(Ready::READABLE);
    }

    /// Out of file descriptors: accepting again at once would spin. Wait on a timer.
    fn pause_accepting(&mut self, cx: &mut Context<'_>, e: io::Error) {
        let pause = match self.last_pause {
            Duration::ZERO => FIRST_ACCEPT_PAUSE,
            last => (last * 2).min(MAX_ACCEPT_PAUSE),
        };
        log::warn!(
            "accept on {} failed ({e}); pausing accepts for {pause:?}",
            self.local_addr
        );
        self.paused = true;
        self.last_pause = pause;
        cx.set_timer(pause, 0);
    }

    /// This server's live sessions.
    fn live_sessions(&self, cx: &Context<'_>) -> Vec<Recipient<SessionCommand>> {
        self.sessions
            .map(|group| cx.group_members(group))
            .unwrap_or_default()
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        )
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// A command for a server: close, gracefully, every session it accepted (it keeps
/// listening; send [`Close`] as well to stop that).
///
/// See [`ServerCommand`](crate::ServerCommand) for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseSessions;

/// Asks a server how many of its sessions are alive.
pub(crate) struct AskSessionCount(pub(crate) std::sync::mpsc::SyncSender<usize>);
