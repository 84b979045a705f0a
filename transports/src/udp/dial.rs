//! How a UDP client dials (see [`UdpClient`]): bind, `connect` (which only records the
//! peer), refuse a self-connect, send the probe; then a [`Dialer`] entry waits for the
//! verdict: an ICMP error (`ECONNREFUSED` from `SO_ERROR`) fails the dial; a datagram from
//! the peer makes it succeed at once, and so does silence for the whole probe wait. The
//! peer's datagram stays queued for the session (its first message), unless it is the
//! answer to the probe ([`PROBE_ANSWER`]), which the dialer takes. The rest (redials,
//! re-resolution, every address in turn) is every client's (`crate::client`).

use std::io;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use getty_codec::Decoder;
use getty_reactor::{Context, Entry, Ready, Recipient, Status};
use mio::net::UdpSocket;
use mio::Interest;
use socket2::SockRef;

use super::client::{UdpClientKind, PROBE_ANSWER};
use super::entry::DatagramEntry;
use super::socket::is_peer_error;
use super::{new_session, DatagramHandler, DatagramSetup};
use crate::client::{Attempt, DialTypes, Dialing};
use crate::commands::OwnerNote;
use crate::{Error, SessionOptions};

#[cfg(doc)]
use super::UdpClient;

/// How a UDP client dials: bind, connect, send the probe, and a [`Dialer`] waits for the
/// verdict.
pub(super) struct UdpDialing<F, C, H> {
    setup: F,
    session_options: Arc<SessionOptions>,
    config: UdpClientKind,
    dial_error: Option<DialErrorHook>,
    _types: PhantomData<fn() -> (C, H)>,
}

/// What is told of every failed dial ([`UdpClient::on_dial_error`]).
pub(super) type DialErrorHook = Box<dyn FnMut(SocketAddr, &Error) + Send>;

impl<F, C, H> UdpDialing<F, C, H> {
    pub(super) fn new(
        setup: F,
        session_options: Arc<SessionOptions>,
        config: UdpClientKind,
    ) -> Self {
        UdpDialing {
            setup,
            session_options,
            config,
            dial_error: None,
            _types: PhantomData,
        }
    }

    /// Calls `hook` with every address that fails.
    pub(super) fn on_attempt_failed(&mut self, hook: DialErrorHook) {
        self.dial_error = Some(hook);
    }
}

impl<F, C, H> DialTypes for UdpDialing<F, C, H> {
    type Addr = SocketAddr;
    type Socket = UdpSocket;
}

impl<F, C, H> Dialing for UdpDialing<F, C, H>
where
    F: FnMut(&mut DatagramSetup<'_>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: DatagramHandler<C>,
{
    type Pending = UdpSocket;
    type Dialer = Dialer;
    type Session = DatagramEntry<UdpSocket, C, H>;

    const KIND: &'static str = "udp";
    const LOG_TARGET: &'static str = "getty_transports::udp::client";
    // The probe proved the peer alive; a datagram session never says it opened.
    const GOOD_WHEN_SPAWNED: bool = true;

    /// Binds, connects, refuses a self-connect and sends the probe.
    fn start(&mut self, addr: &SocketAddr) -> Result<UdpSocket, Error> {
        let addr = *addr;
        let local = self.config.local_addr.unwrap_or(match addr {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        });
        let socket = self.config.udp_options.bind_socket(local, false)?;
        socket.connect(&addr.into())?;
        let socket = UdpSocket::from_std(socket.into());
        let (local, peer) = (socket.local_addr()?, socket.peer_addr()?);
        if local == peer {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("self-connect to {peer} refused"),
            )));
        }
        socket.send(&self.config.probe)?;
        Ok(socket)
    }

    fn dialer(&self, socket: UdpSocket, attempt: Attempt<UdpSocket, SocketAddr>) -> Dialer {
        Dialer {
            socket: Some(socket),
            attempt,
            wait: self.config.probe_wait,
        }
    }

    fn open(
        &mut self,
        cx: &mut Context<'_>,
        socket: UdpSocket,
        peer: SocketAddr,
        owner: Option<Recipient<OwnerNote>>,
    ) -> Result<Self::Session, Error> {
        // The setup hook is user code: a panic in it counts as one failed dial (logged by
        // the reactor), and the client redials and keeps its other sessions.
        let prepared = cx.catch_panic("a client's setup hook", |_| {
            self.prepare(socket, owner, peer)
        });
        prepared.unwrap_or_else(|| Err(Error::Panicked("the setup hook panicked".into())))
    }

    /// One address failed (the dial may go on with the next): tell the hook.
    fn attempt_failed(&mut self, addr: &SocketAddr, error: &Error) {
        if let Some(hook) = self.dial_error.as_mut() {
            hook(*addr, error);
        }
    }
}

impl<F, C, H> UdpDialing<F, C, H>
where
    F: FnMut(&mut DatagramSetup<'_>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: DatagramHandler<C>,
{
    fn prepare(
        &mut self,
        socket: UdpSocket,
        owner: Option<Recipient<OwnerNote>>,
        peer: SocketAddr,
    ) -> Result<DatagramEntry<UdpSocket, C, H>, Error> {
        let mut options = Arc::clone(&self.session_options);
        let (codec, handler) = (self.setup)(&mut DatagramSetup {
            local: socket.local_addr()?,
            peer: Some(peer),
            socket: SockRef::from(&socket),
            options: &mut options,
        })?;
        let session = new_session(&socket, Some(peer), codec, options)?;
        let config = self
            .config
            .udp_options
            .entry_config(self.config.close_on_icmp_error);
        Ok(DatagramEntry::new(socket, session, handler, config, owner))
    }
}

/// Waits for the verdict on one probe.
pub(super) struct Dialer {
    socket: Option<UdpSocket>,
    attempt: Attempt<UdpSocket, SocketAddr>,
    wait: Duration,
}

impl Dialer {
    fn failed(&mut self, cx: &mut Context<'_>, error: io::Error) -> Status {
        self.attempt.failed(cx, Error::Io(error))
    }

    fn verified(&mut self, cx: &mut Context<'_>) -> Status {
        let Some(mut socket) = self.socket.take() else {
            return Status::Done;
        };
        // The session registers the socket again under its own token.
        let _ = cx.registry().deregister(&mut socket);
        self.attempt.connected(cx, socket)
    }
}

impl Entry for Dialer {
    type Command = getty_reactor::NoCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        let Some(socket) = self.socket.as_mut() else {
            return Status::Done;
        };
        if let Err(e) = cx
            .registry()
            .register(socket, cx.token(), Interest::READABLE)
        {
            return self.failed(cx, e);
        }
        self.attempt.arm(cx, self.wait);
        Status::Continue
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, ready: Ready) -> Status {
        let Some(socket) = self.socket.as_ref() else {
            return Status::Done;
        };
        match socket.take_error() {
            Ok(Some(e)) | Err(e) => return self.failed(cx, e),
            Ok(None) => {}
        }
        if !ready.is_readable() {
            return Status::Continue;
        }
        // The peer spoke: it is alive. Its datagram stays queued for the session (its
        // first message), unless it is the answer to the probe, which is the dial's. One
        // byte more than the answer tells it from a longer datagram that starts alike.
        let mut head = [0u8; PROBE_ANSWER.len() + 1];
        match socket.peek(&mut head) {
            Ok(n) => {
                if head[..n] == *PROBE_ANSWER {
                    // Just peeked, so it is there to take; should the take fail, the
                    // session reads the answer as a datagram: nothing is lost.
                    let _ = socket.recv(&mut head);
                }
                self.verified(cx)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Status::Continue,
            Err(e) if is_peer_error(&e) || e.kind() != io::ErrorKind::Interrupted => {
                self.failed(cx, e)
            }
            Err(_) => Status::Continue,
        }
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _tag: u64) -> Status {
        self.attempt.timer_fired();
        let error = match self.socket.as_ref().map(|s| s.take_error()) {
            Some(Ok(Some(e))) | Some(Err(e)) => e,
            // Silence for the whole wait: a live (if quiet) peer.
            _ => return self.verified(cx),
        };
        self.failed(cx, error)
    }
}
