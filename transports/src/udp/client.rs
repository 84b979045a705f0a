//! The connected UDP client: keeps `connection_number` connected sockets to one address,
//! each verified by a dial probe, redialling with capped, jittered backoff.
//!
//! It is the client every transport shares (`crate::client`: the sessions it keeps, the
//! redials, every address of the peer in turn, each round from the address that last
//! worked, and a host name resolved again before every redial, with a deadline: the probe
//! wait, at least a second), dialling the UDP way (`dial.rs`): bind, `connect`, send a
//! probe, and wait for the verdict.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use getty_codec::Decoder;
use mio::net::UdpSocket;

use super::dial::UdpDialing;
use super::{DatagramHandler, DatagramSetup, UdpOptions, DEFAULT_PROBE};
use crate::builder::ClientBuilder;
use crate::client::{Client, ClientCommand, Peer};
use crate::options::clamp_timeout;
use crate::server::entry_by_inner;
use crate::{DialTarget, Error};

/// How long a dial waits, by default, for the peer to refuse the probe before a silent peer
/// counts as alive: 250 ms.
///
/// The wait only matters for a peer that stays silent: a refusal (`ECONNREFUSED`, the ICMP
/// "port unreachable") fails the dial as soon as it arrives, and any datagram from the peer
/// (an answer to the probe, or a first message) opens the session as soon as it arrives.
/// The refusal takes one round trip: microseconds on loopback, under a millisecond in a
/// data centre, tens of milliseconds across a continent, 200 ms or so halfway round the
/// world; 250 ms covers the round trip of almost every terrestrial path. Shorter, and a
/// dead server far away would count as alive (its refusal then reaches `on_error` after
/// the session has opened, or closes it with `close_on_icmp_error`); longer, and every
/// dial to a live but silent peer waits for nothing. getty's 1 s was four times this.
const DEFAULT_PROBE_WAIT: Duration = Duration::from_millis(250);

/// The shortest deadline a re-resolution of the host name gets before a redial: the 1 s it
/// had when it was the probe wait's default. A shorter probe wait must not cut DNS short.
const MIN_LOOKUP_DEADLINE: Duration = Duration::from_secs(1);

/// See [`UdpClient::PROBE_ANSWER`].
pub(crate) const PROBE_ANSWER: &[u8] = b"getty-rs:udp-dial-alive";

/// Configures a [`UdpClient`]: every client's settings ([`ClientBuilder`]: connections,
/// backoff, session options), plus the dial probe, the local address, ICMP errors and the
/// socket's [`UdpOptions`].
///
/// The example below dials a silent loopback peer from a chosen local address with its own
/// probe, and reads the socket's options back in the setup hook, which runs once the
/// probe wait has passed without a refusal:
///
/// ```
/// use std::net::SocketAddr;
/// use std::time::Duration;
/// use getty_codec::RawCodec;
/// use getty_reactor::Reactor;
/// use getty_transports::udp::{DatagramHandler, DatagramSession, UdpClient, UdpOptions};
///
/// struct Sink;
/// impl DatagramHandler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {}
/// }
///
/// let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
/// let local = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
/// let (tx, rx) = std::sync::mpsc::channel();
/// let client = UdpClient::builder()
///     .probe(bytes::Bytes::from_static(b"hello?"))
///     .probe_wait(Duration::from_millis(20))
///     .local_addr(Some(local))
///     .udp_options(UdpOptions::default().recv_buffer_size(Some(16 * 1024)))
///     .build(peer.local_addr().unwrap(), move |setup| {
///         let _ = tx.send(setup.socket().recv_buffer_size()?);
///         Ok((RawCodec, Sink))
///     })
///     .unwrap();
/// let reactor = Reactor::start_thread("udp-client", move |r| { r.spawn(client); Ok(()) }).unwrap();
/// let mut buf = [0u8; 64];
/// let (n, from) = peer.recv_from(&mut buf).unwrap();
/// assert_eq!((&buf[..n], from), (&b"hello?"[..], local));
/// // A small buffer, so that it differs from the kernel's default (Linux doubles it).
/// let recv_buffer = rx.recv_timeout(Duration::from_secs(10)).unwrap();
/// assert!((16 * 1024..=32 * 1024).contains(&recv_buffer));
/// reactor.handle().shutdown();
/// reactor.join().unwrap();
/// ```
pub type UdpClientBuilder = ClientBuilder<UdpClientKind>;

/// The UDP client's part of its [`UdpClientBuilder`]: the dial probe and its wait, the
/// local address, what an ICMP error does, and the socket's [`UdpOptions`].
#[derive(Debug, Clone)]
pub struct UdpClientKind {
    pub(super) probe: Bytes,
    pub(super) probe_wait: Duration,
    pub(super) local_addr: Option<SocketAddr>,
    pub(super) close_on_icmp_error: bool,
    pub(super) udp_options: UdpOptions,
}

impl Default for UdpClientKind {
    /// [`DEFAULT_PROBE`], waited for 250 ms; the unspecified local address; ICMP errors
    /// reported, not closing; the default [`UdpOptions`].
    fn default() -> Self {
        UdpClientKind {
            probe: Bytes::from_static(DEFAULT_PROBE),
            probe_wait: DEFAULT_PROBE_WAIT,
            local_addr: None,
            close_on_icmp_error: false,
            udp_options: UdpOptions::default(),
        }
    }
}
impl UdpClientBuilder {
    /// The datagram sent to verify a dial (default [`DEFAULT_PROBE`]). Receivers should
    /// drop it: getty-rs receivers drop [`DEFAULT_PROBE`] unless told otherwise
    /// ([`UdpOptions::drop_probe`]); tell yours about a custom probe the same way. A
    /// receiver may answer it with [`UdpClient::PROBE_ANSWER`] to let the dial open at
    /// once.
    ///
    /// See the [type-level example](UdpClientBuilder): the peer receives it.
    pub fn probe(mut self, probe: Bytes) -> Self {
        self.kind.probe = probe;
        self
    }

    /// How long an unanswered probe waits for an ICMP error before the dial counts as a
    /// success (default 250 ms). Make it longer than a round trip to the peer.
    ///
    /// Only a silent peer waits it out. A refusal (`ECONNREFUSED`: nothing listens on the
    /// port; microseconds on loopback) fails the dial when it arrives, and is reported to
    /// [`UdpClient::on_dial_error`]; any datagram from the peer opens the session when it
    /// arrives: the answer to the probe ([`UdpClient::PROBE_ANSWER`], taken by the dial),
    /// or anything else, which stays queued and is the session's first message, delivered
    /// after `on_open`. A getty-rs [`UdpEndpoint`](super::UdpEndpoint) answers every
    /// probe, so against one this wait is never waited out. An answer that comes after
    /// the wait is dropped by the session (unless its `drop_probe` is `None`).
    ///
    /// A refusal is not guaranteed: off loopback, Linux rate-limits the ICMP errors it
    /// sends to one host (a burst of 6, then 1 a second, by `net.ipv4.icmp_ratelimit`), so
    /// many clients or fast redials to a dead port soon get silence instead, and open.
    /// Pair a client with a read-idle timeout (and a heartbeat) to notice such a peer.
    ///
    /// Two clients of one silent peer: the one that waits 20 ms opens its session, and the
    /// one that waits a minute has not opened its own well after the default 250 ms.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use std::net::SocketAddr;
    /// # use getty_codec::RawCodec;
    /// # use getty_reactor::Reactor;
    /// # use getty_transports::udp::{DatagramHandler, DatagramSession, UdpClient};
    /// # struct Sink;
    /// # impl DatagramHandler<RawCodec> for Sink { fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {} }
    /// let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// let (opened, rx) = std::sync::mpsc::channel();
    /// let client = |wait| {
    ///     let opened = opened.clone();
    ///     UdpClient::builder().probe_wait(wait).build(silent.local_addr().unwrap(), move |_| {
    ///         let _ = opened.send(wait);
    ///         Ok((RawCodec, Sink))
    ///     }).unwrap()
    /// };
    /// let (quick, patient) = (client(Duration::from_millis(20)), client(Duration::from_secs(60)));
    /// let reactor = Reactor::start_thread("r", move |r| { r.spawn(quick); r.spawn(patient); Ok(()) }).unwrap();
    /// assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(Duration::from_millis(20)));
    /// assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
    /// # reactor.handle().shutdown();
    /// # reactor.join().unwrap();
    /// ```
    pub fn probe_wait(mut self, wait: Duration) -> Self {
        self.kind.probe_wait = clamp_timeout(wait.max(Duration::from_millis(1)));
        self
    }

    /// The local address to bind before connecting (default: the unspecified address of
    /// the peer's family, port 0). One port takes one connection: with a port other than 0,
    /// [`build`](Self::build) refuses a `connection_number` above 1.
    ///
    /// See the [type-level example](UdpClientBuilder): the peer sees the probe come from it.
    pub fn local_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.kind.local_addr = addr;
        self
    }

    /// What an ICMP error after the dial does (the peer's port closed, its host became
    /// unreachable): by default (`false`) the session is kept and the error is counted in
    /// [`DatagramStats::peer_errors`](super::DatagramStats::peer_errors) and reported to
    /// `on_error`; with `true` the session also closes, and the client redials with
    /// backoff.
    ///
    /// A session that writes every 10 ms, to a peer whose socket then closes: the next
    /// write draws the ICMP error, and the session closes.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use std::net::SocketAddr;
    /// # use getty_codec::RawCodec;
    /// # use getty_reactor::Reactor;
    /// use getty_transports::udp::{DatagramHandler, DatagramSession, UdpClient};
    /// use getty_transports::SessionOptions;
    ///
    /// struct Ticker(std::sync::mpsc::Sender<()>);
    /// impl DatagramHandler<RawCodec> for Ticker {
    ///     fn on_cron(&mut self, s: &mut DatagramSession<RawCodec>) { let _ = s.write(&b"tick"[..]); }
    ///     fn on_close(&mut self, _: &mut DatagramSession<RawCodec>) { let _ = self.0.send(()); }
    ///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {}
    /// }
    ///
    /// let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    /// peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    /// let (closed, rx) = std::sync::mpsc::channel();
    /// let client = UdpClient::builder()
    ///     .close_on_icmp_error(true)
    ///     .probe_wait(Duration::from_millis(20))
    ///     .session_options(SessionOptions::default().cron_period(Some(Duration::from_millis(10))))
    ///     .build(peer.local_addr().unwrap(), move |_| Ok((RawCodec, Ticker(closed.clone()))))
    ///     .unwrap();
    /// let reactor = Reactor::start_thread("udp-client", move |r| { r.spawn(client); Ok(()) }).unwrap();
    /// peer.recv(&mut [0u8; 64]).unwrap(); // the probe
    /// drop(peer);
    /// rx.recv_timeout(Duration::from_secs(10)).expect("the session closed");
    /// reactor.handle().shutdown();
    /// reactor.join().unwrap();
    /// ```
    pub fn close_on_icmp_error(mut self, on: bool) -> Self {
        self.kind.close_on_icmp_error = on;
        self
    }

    /// Socket and datagram-path options of every dialled socket.
    ///
    /// See the [type-level example](UdpClientBuilder): the setup hook reads the buffer
    /// size back.
    pub fn udp_options(mut self, options: UdpOptions) -> Self {
        self.kind.udp_options = options;
        self
    }

    /// Makes the client of `target`: an address, a list of addresses, or a host name and
    /// port (see [`DialTarget`]). Every address is tried in turn until one is verified; a
    /// host name is resolved here (on the calling thread) and again, off the reactor,
    /// before every redial. Nothing is dialled until the client is spawned into a reactor.
    /// `setup` runs for every verified socket (an error drops it and redials).
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::udp::{DatagramHandler, DatagramSession, UdpClient};
    /// # struct Sink;
    /// # impl DatagramHandler<RawCodec> for Sink { fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {} }
    /// let client = UdpClient::builder().build("127.0.0.1:9", |_| Ok((RawCodec, Sink))).unwrap();
    /// assert_eq!(client.peer_addr().port(), 9);
    /// ```
    pub fn build<A, F, C, H>(self, target: A, setup: F) -> io::Result<UdpClient<F, C, H>>
    where
        A: Into<DialTarget>,
        F: FnMut(&mut DatagramSetup<'_>) -> io::Result<(C, H)> + 'static,
        C: Decoder + 'static,
        H: DatagramHandler<C>,
    {
        // Every connection binds the local address: a fixed port binds once, and the other
        // dials would fail (EADDRINUSE) at every redial.
        if let Some(local) = self.kind.local_addr.filter(|a| a.port() != 0) {
            if self.dial.connection_number > 1 {
                let why = format!(
                    "{} connections cannot share the local address {local}: give port 0",
                    self.dial.connection_number
                );
                return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
            }
        }
        let peer = Peer::resolve(target.into())?;
        let kind = self.kind;
        // A lookup gets the probe wait (the time a dial is given to prove itself), but
        // never less than a second: a short probe wait must not cut DNS short.
        let deadline = kind.probe_wait.max(MIN_LOOKUP_DEADLINE);
        let dialing = UdpDialing::new(setup, Arc::new(self.session_options), kind);
        Ok(UdpClient {
            inner: Client::new(dialing, peer, self.dial, deadline),
        })
    }
}

/// What a [`UdpClient`] accepts: [`Close`](crate::Close) (close its sessions and stop
/// redialling). It cannot be aborted. The rest (its dialers' verdicts, its sessions'
/// notes, resolved addresses) is the framework's: it is the [`ClientCommand`] of every
/// client, with what a UDP dial yields.
///
/// ```
/// use std::net::SocketAddr;
/// use getty_codec::RawCodec;
/// use getty_reactor::{Reactor, Recipient};
/// use getty_transports::udp::{DatagramHandler, DatagramSession, UdpClient, UdpClientCommand};
/// use getty_transports::Close;
///
/// struct Sink;
/// impl DatagramHandler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {}
/// }
/// let mut reactor = Reactor::new().unwrap();
/// let client = UdpClient::builder().build("127.0.0.1:9", |_| Ok((RawCodec, Sink))).unwrap();
/// let client: Recipient<UdpClientCommand> = reactor.spawn(client);
/// reactor.handle().send(client, Close).unwrap();
/// ```
pub type UdpClientCommand = ClientCommand<UdpSocket, SocketAddr>;

/// A client that keeps `connection_number` connected UDP sockets to one address, each
/// verified by a probe before its session opens. Spawn it into a reactor; send it
/// [`Close`](crate::Close) to close its sessions and stop redialling.
///
/// # The dial
///
/// UDP has no handshake, so each dial sends a probe ([`UdpClientBuilder::probe`]) and
/// waits for the first of:
/// - a refusal (`ECONNREFUSED`: nothing listens on that port, which loopback says in
///   microseconds): the dial fails, is reported to [`on_dial_error`](Self::on_dial_error),
///   and the client redials with backoff;
/// - any datagram from the peer: the session opens at once. The answer to the probe
///   ([`PROBE_ANSWER`](Self::PROBE_ANSWER)) is taken by the dial; anything else is the
///   session's first message, delivered after `on_open`;
/// - silence for the whole [`probe_wait`](UdpClientBuilder::probe_wait) (250 ms by
///   default): the peer counts as alive and the session opens.
///
/// **A failed dial is reported only to [`on_dial_error`](Self::on_dial_error) and to the
/// log** (the `log` facade: nothing shows without a logger). A
/// handler hears nothing, since it is made only for a dial that succeeded. So install the
/// hook, and bound the retries with
/// [`max_consecutive_failures`](UdpClientBuilder::max_consecutive_failures) if the client
/// should give up: by default it redials for ever, silently to a program with neither.
///
/// ```
/// use std::net::SocketAddr;
/// use std::time::Duration;
/// use getty_codec::RawCodec;
/// use getty_reactor::Reactor;
/// use getty_transports::udp::{DatagramHandler, DatagramSession, UdpClient};
///
/// struct Sink;
/// impl DatagramHandler<RawCodec> for Sink {
///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {}
/// }
///
/// // Nothing listens on this port: every dial is refused at once, and the hook says so.
/// let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
/// let (tx, rx) = std::sync::mpsc::channel();
/// let client = UdpClient::builder()
///     .max_consecutive_failures(Some(2))
///     .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
///     .build(closed, |_| Ok((RawCodec, Sink)))
///     .unwrap()
///     .on_dial_error(move |addr, error| {
///         let _ = tx.send((addr, error.to_string()));
///     });
/// let reactor = Reactor::start_thread("udp-client", move |r| {
///     r.spawn(client);
///     Ok(())
/// }).unwrap();
/// for _ in 0..2 {
///     let (addr, why) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
///     assert_eq!(addr, closed);
///     eprintln!("dial to {addr} failed: {why}");
/// }
/// reactor.handle().shutdown();
/// reactor.join().unwrap();
/// ```
///
/// A peer that never answers opens once the probe wait has passed:
///
/// ```
/// use std::net::SocketAddr;
/// use std::time::Duration;
/// use getty_codec::RawCodec;
/// use getty_reactor::Reactor;
/// use getty_transports::udp::{DatagramHandler, DatagramSession, UdpClient};
///
/// struct Ping;
/// impl DatagramHandler<RawCodec> for Ping {
///     fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> std::io::Result<()> {
///         s.write(&b"ping"[..]).map_err(std::io::Error::from)
///     }
///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {}
/// }
///
/// // A silent peer: the dial succeeds once the probe wait passes without an ICMP error.
/// let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
/// let client = UdpClient::builder()
///     .probe_wait(Duration::from_millis(20))
///     .build(peer.local_addr().unwrap(), |_| Ok((RawCodec, Ping)))
///     .unwrap();
/// let reactor = Reactor::start_thread("udp-client", move |r| {
///     r.spawn(client);
///     Ok(())
/// }).unwrap();
///
/// let mut buf = [0u8; 64];
/// let n = peer.recv(&mut buf).unwrap();
/// assert_eq!(&buf[..n], getty_transports::udp::DEFAULT_PROBE);
/// let n = peer.recv(&mut buf).unwrap();
/// assert_eq!(&buf[..n], b"ping");
/// reactor.handle().shutdown();
/// reactor.join().unwrap();
/// ```
pub struct UdpClient<F, C, H> {
    inner: Client<UdpDialing<F, C, H>>,
}

impl<F, C, H> fmt::Debug for UdpClient<F, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.describe("UdpClient", f)
    }
}

impl UdpClient<(), (), ()> {
    /// What a receiver may send back to a dial probe to say "alive" at once: the 23 bytes
    /// `getty-rs:udp-dial-alive`. A dial that gets exactly these bytes while it waits opens
    /// its session at once and takes them: they never reach the session. (Any other
    /// datagram opens the session too, and is its first message.)
    ///
    /// The answer differs from every probe a getty-rs client sends, so two receivers that
    /// both answer probes can never bounce one datagram between them for ever, and it is
    /// no longer than [`DEFAULT_PROBE`], so a forged probe cannot make a receiver send
    /// more than it got. A receiver should answer only probes at least this long.
    ///
    /// ```
    /// use getty_transports::udp::{UdpClient, DEFAULT_PROBE};
    /// assert_eq!(UdpClient::PROBE_ANSWER, b"getty-rs:udp-dial-alive");
    /// assert_eq!(UdpClient::PROBE_ANSWER.len(), DEFAULT_PROBE.len());
    /// ```
    pub const PROBE_ANSWER: &'static [u8] = PROBE_ANSWER;

    /// A builder with default settings: one connection, redials after 100 ms doubling to
    /// 5 s for ever, [`DEFAULT_PROBE`] waited for 250 ms.
    ///
    /// See [`UdpClientBuilder`] and [`ClientBuilder`] for examples.
    pub fn builder() -> UdpClientBuilder {
        UdpClientBuilder::default()
    }
}

impl<F, C, H> UdpClient<F, C, H>
where
    F: FnMut(&mut DatagramSetup<'_>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: DatagramHandler<C>,
{
    /// The first address this client dials (of a host name: the first as resolved when
    /// the client was built).
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::udp::{DatagramHandler, DatagramSession, UdpClient};
    /// # struct Sink;
    /// # impl DatagramHandler<RawCodec> for Sink { fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {} }
    /// let c = UdpClient::builder().build("127.0.0.1:9", |_| Ok((RawCodec, Sink))).unwrap();
    /// assert!(c.peer_addr().ip().is_loopback());
    /// ```
    pub fn peer_addr(&self) -> SocketAddr {
        *self.inner.peer_addr()
    }

    /// Calls `hook` with every failed dial, and with the address: refused
    /// (`ECONNREFUSED`, the peer's port is closed), a self-connect, a socket error, or a
    /// setup hook that refused the socket. Of several addresses, each one that fails is
    /// reported as it fails. It runs on the reactor's thread: keep it short.
    ///
    /// **Install it**: a failed dial reaches no handler (none is made before a dial
    /// succeeds), and is otherwise only logged (the first of a run at warn level, the rest
    /// at debug), which shows nothing without a logger. A client dialling a dead server
    /// then redials for ever without a sign; see also
    /// [`max_consecutive_failures`](UdpClientBuilder::max_consecutive_failures), and the
    /// [type-level example](UdpClient#the-dial).
    ///
    /// ```
    /// # use std::net::SocketAddr;
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::udp::{DatagramHandler, DatagramSession, UdpClient};
    /// # struct Sink;
    /// # impl DatagramHandler<RawCodec> for Sink { fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: bytes::Bytes, _: SocketAddr) {} }
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let client = UdpClient::builder()
    ///     .build("127.0.0.1:9", |_| Ok((RawCodec, Sink)))
    ///     .unwrap()
    ///     .on_dial_error(move |addr, error| { let _ = tx.send((addr, error.to_string())); });
    /// # drop(rx);
    /// ```
    pub fn on_dial_error(mut self, hook: impl FnMut(SocketAddr, &Error) + Send + 'static) -> Self {
        self.inner.transport.on_attempt_failed(Box::new(hook));
        self
    }
}

entry_by_inner!(impl<F, C, H> for UdpClient<F, C, H>, command = UdpClientCommand, where
    F: FnMut(&mut DatagramSetup<'_>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: DatagramHandler<C>,
);
