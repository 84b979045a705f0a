//! Unix datagram sockets on the UDP datagram path: the same session, queue, batching and
//! callbacks, with [`UnixAddr`] addresses and the unix socket's reliability: a full
//! receiver makes the sender wait, not the kernel drop. An unconnected endpoint waits for
//! each receiver on its own (a slow one is parked; see [`UnixDatagramEndpointBuilder::bind`]);
//! a connected one reconnects to a peer that restarted (see
//! [`UnixDatagramEndpointBuilder::connect`]).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use getty_codec::Decoder;
use mio::net::UnixDatagram;
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use crate::builder::EndpointBuilder;
use crate::server::entry_by_inner;
use crate::udp::endpoint::{DatagramEndpoint, EndpointParts};
use crate::udp::entry::DatagramConfig;
use crate::udp::socket::DatagramSocket;
use crate::udp::{DatagramHandler, DatagramSetup};
use crate::unix::socket_file::{self, SocketFile};
use crate::UnixAddr;

impl DatagramSocket for UnixDatagram {
    type Addr = UnixAddr;

    fn sock(&self) -> SockRef<'_> {
        SockRef::from(self)
    }

    fn try_io<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        UnixDatagram::try_io(self, f)
    }

    fn encode_addr(addr: &UnixAddr) -> SockAddr {
        // `write_to` refuses an unnamed address (`is_unnamed`); a path too long for the
        // kernel's form becomes an empty one, which the kernel refuses at send: the
        // datagram is reported as dropped, and the session carries on.
        addr.to_sockaddr()
            .or_else(|_| SockAddr::unix(""))
            .expect("an empty unix address always fits")
    }

    fn decode_addr(addr: &SockAddr) -> Option<UnixAddr> {
        // An unbound sender's empty address is `Unnamed`: its datagrams are delivered.
        crate::addr::sealed::Stored::from_sockaddr(addr)
    }

    fn is_unnamed(addr: &UnixAddr) -> bool {
        addr.is_unnamed()
    }

    fn local_addr(&self) -> io::Result<UnixAddr> {
        let local = self.sock().local_addr()?;
        Ok(Self::decode_addr(&local).unwrap_or(UnixAddr::Unnamed))
    }

    fn max_payload(&self) -> usize {
        let send_buffer = self.sock().send_buffer_size().unwrap_or(0);
        datagram_limit(send_buffer).unwrap_or(send_buffer.saturating_sub(32))
    }

    fn max_recv_payload(&self) -> usize {
        // What a peer can send depends on the peer's send buffer, not on this socket's
        // (several MiB with a large one): only `max_message_len` bounds what is received.
        usize::MAX
    }

    fn signals_write_space(&self, connected: bool) -> bool {
        // Connected: the kernel wakes this socket when its peer's queue drains (and when
        // its own buffer has room). Unconnected: never for a full receiver, and for its
        // own buffer only once that has drained to a quarter of `SO_SNDBUF`.
        connected
    }

    /// Linux charges a unix datagram to its sender's `SO_SNDBUF` until the receiver reads
    /// it, and refuses a send with `EAGAIN` once what is charged reaches the buffer
    /// (`SIOCOUTQ` reports it: the datagrams' kernel sizes, 768 bytes for a small one, 2304
    /// for 1000 bytes on 64-bit). So `EAGAIN` with what is charged at or past the buffer
    /// is our own buffer; below it, the receiver's queue. Only the receivers' reads lower
    /// the count, never our sends: a full reading taken after the `EAGAIN` was full at the
    /// send too. One that freed in between reads as a full receiver, whose retry, a
    /// millisecond later, then goes through.
    fn send_buffer_full(&self, send_buffer: &mut Option<usize>) -> bool {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let mut charged: libc::c_int = 0;
            // SAFETY: SIOCOUTQ (the same request number as TIOCOUTQ) writes one int to the
            // pointer, which points at one.
            let r = unsafe { libc::ioctl(self.as_raw_fd(), libc::TIOCOUTQ, &mut charged) };
            if r != 0 {
                // Unknown: take it for the receiver's queue, which costs no one else.
                return false;
            }
            let limit = *send_buffer
                .get_or_insert_with(|| self.sock().send_buffer_size().unwrap_or(usize::MAX));
            usize::try_from(charged).unwrap_or(0) >= limit
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = send_buffer;
            false
        }
    }
}

/// The largest datagram a unix datagram socket with this send buffer (as `getsockopt`
/// reports it) can send, found once per buffer size by trying on a socket pair: the limit
/// is the kernel's, and it has changed between versions (about 130 KB once, the send buffer
/// less 32 bytes now).
fn datagram_limit(send_buffer: usize) -> io::Result<usize> {
    static LIMITS: OnceLock<Mutex<HashMap<usize, usize>>> = OnceLock::new();
    let limits = LIMITS.get_or_init(Default::default);
    if let Some(limit) = limits
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&send_buffer)
    {
        return Ok(*limit);
    }
    let limit = probe_datagram_limit(send_buffer)?;
    limits
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(send_buffer, limit);
    Ok(limit)
}

/// Binary search for the longest datagram a sender with `send_buffer` bytes of send buffer
/// can send to an empty receiver.
fn probe_datagram_limit(send_buffer: usize) -> io::Result<usize> {
    let (sender, receiver) = Socket::pair(Domain::UNIX, Type::DGRAM, None)?;
    // The kernel doubles what it is given and reports the doubled value.
    sender.set_send_buffer_size(send_buffer / 2)?;
    receiver.set_recv_buffer_size(send_buffer.max(1 << 20))?;
    sender.set_nonblocking(true)?;
    receiver.set_nonblocking(true)?;
    let reported = sender.send_buffer_size()?;
    let payload = vec![0u8; reported];
    let mut drain = vec![std::mem::MaybeUninit::<u8>::uninit(); reported];
    let (mut fits, mut too_big) = (0usize, reported + 1);
    while too_big - fits > 1 {
        let len = fits + (too_big - fits) / 2;
        match sender.send(&payload[..len]) {
            Ok(_) => {
                fits = len;
                let _ = receiver.recv(&mut drain);
            }
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => too_big = len,
            // ENOBUFS and friends: the kernel could not find the memory for one this big.
            Err(_) => too_big = len,
        }
    }
    Ok(fits)
}

/// The send buffer a bound endpoint asks for when not told (see
/// [`EndpointBuilder::send_buffer_size`]).
const BOUND_SEND_BUFFER: usize = 1 << 20;

/// Configures a [`UnixDatagramEndpoint`]: every datagram endpoint's settings
/// ([`EndpointBuilder`]: batch and buffer sizes, session options), what to do with a stale
/// socket file, and the bounds on what waits for slow receivers.
///
/// ```
/// use getty_codec::RawCodec;
/// use getty_transports::udp::{DatagramHandler, DatagramSession};
/// use getty_transports::{unix::UnixDatagramEndpoint, SessionOptions, UnixAddr};
///
/// struct Sink;
/// impl DatagramHandler<RawCodec, UnixAddr> for Sink {
///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, _: bytes::Bytes, _: UnixAddr) {}
/// }
///
/// let endpoint = UnixDatagramEndpoint::builder()
///     .recv_buffer_size(Some(1 << 20))
///     .session_options(SessionOptions::default().max_outbound(8 << 20))
///     .bind(UnixAddr::abstract_name("getty-doc-dgram"), |_| Ok((RawCodec, Sink)))
///     .unwrap();
/// assert_eq!(endpoint.local_addr(), &UnixAddr::abstract_name("getty-doc-dgram"));
/// ```
pub type UnixDatagramEndpointBuilder = EndpointBuilder<UnixDatagramEndpointKind>;

/// The unix datagram endpoint's part of its [`UnixDatagramEndpointBuilder`]: what to do
/// with a stale socket file, and the bounds on what waits for slow receivers.
#[derive(Debug, Clone)]
pub struct UnixDatagramEndpointKind {
    remove_stale: bool,
    parked_limit: Option<usize>,
    parked_total: Option<usize>,
}

impl Default for UnixDatagramEndpointKind {
    /// Stale socket files removed; the default bounds on parked datagrams (see
    /// [`max_parked_per_peer`](UnixDatagramEndpointBuilder::max_parked_per_peer)).
    fn default() -> Self {
        UnixDatagramEndpointKind {
            remove_stale: true,
            parked_limit: None,
            parked_total: None,
        }
    }
}

impl UnixDatagramEndpointBuilder {
    /// Whether [`bind`](Self::bind) removes a socket file an earlier run left behind
    /// (default on). A path that is not a socket is never removed, nor a file a live socket
    /// is bound to: the bind fails with `AddrInUse` instead.
    ///
    /// ```
    /// # use getty_codec::RawCodec;
    /// # use getty_transports::udp::{DatagramHandler, DatagramSession};
    /// # use getty_transports::{unix::UnixDatagramEndpoint, UnixAddr};
    /// # struct Sink;
    /// # impl DatagramHandler<RawCodec, UnixAddr> for Sink { fn on_message(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, _: bytes::Bytes, _: UnixAddr) {} }
    /// let path = std::env::temp_dir().join(format!("getty-doc-stale-dgram-{}.sock", std::process::id()));
    /// drop(std::os::unix::net::UnixDatagram::bind(&path).unwrap()); // leaves its file behind
    /// let bind = |remove| UnixDatagramEndpoint::builder().remove_stale_socket(remove).bind(path.as_path(), |_| Ok((RawCodec, Sink)));
    /// let err = bind(false).err().unwrap();
    /// assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    /// let endpoint = bind(true).unwrap(); // the stale file is replaced
    /// # drop(endpoint);
    /// ```
    pub fn remove_stale_socket(mut self, on: bool) -> Self {
        self.kind.remove_stale = on;
        self
    }

    /// The bytes an unconnected endpoint holds for one receiver whose queue is full
    /// (a parked destination; see [`bind`](Self::bind)). Past it, that destination's
    /// oldest datagrams are dropped, counted in `DatagramStats::dropped_out` and reported
    /// to `on_error`; its newest always stays. Default: 64 KiB (the default high
    /// watermark; as much again as a receiver's own queue of 11 holds of 6 KB replies).
    /// Every datagram counts its payload and 64 bytes more, the cost of holding one, so
    /// that empty ones are bounded too (1,024 at most by default). Parked bytes count in
    /// neither the watermarks nor `max_outbound`.
    ///
    /// An endpoint writes 30 datagrams of 1,000 bytes to a receiver that reads none: 11
    /// fill the receiver's queue, the rest are parked, and past 4 KiB the oldest are
    /// dropped, under this bound or under [`max_parked`](Self::max_parked):
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use getty_codec::RawCodec;
    /// # use getty_reactor::Reactor;
    /// use getty_transports::udp::{DatagramHandler, DatagramSession, DropReason, DroppedDatagrams};
    /// use getty_transports::unix::{UnixDatagramEndpoint, UnixDatagramEndpointBuilder};
    /// use getty_transports::{Error, UnixAddr};
    ///
    /// struct Flood(UnixAddr, std::sync::mpsc::Sender<DropReason>);
    /// impl DatagramHandler<RawCodec, UnixAddr> for Flood {
    ///     fn on_open(&mut self, s: &mut DatagramSession<RawCodec, UnixAddr>) -> std::io::Result<()> {
    ///         for _ in 0..30 { let _ = s.write_to(self.0.clone(), &[0u8; 1000][..]); }
    ///         Ok(())
    ///     }
    ///     fn on_error(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, error: &Error) {
    ///         let Error::Io(e) = error else { return };
    ///         if let Some(d) = e.get_ref().and_then(|e| e.downcast_ref::<DroppedDatagrams<UnixAddr>>()) {
    ///             let _ = self.1.send(d.reason());
    ///         }
    ///     }
    /// #   fn on_message(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, _: bytes::Bytes, _: UnixAddr) {}
    /// }
    ///
    /// /// Why the endpoint `builder` makes drops the first datagrams of its flood.
    /// fn first_drop(builder: UnixDatagramEndpointBuilder, name: &str) -> DropReason {
    ///     let path = std::env::temp_dir().join(format!("getty-doc-{name}-{}.sock", std::process::id()));
    ///     let _silent = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    ///     let (tx, rx) = std::sync::mpsc::channel();
    ///     let to = UnixAddr::path(&path);
    ///     let local = UnixAddr::abstract_name(format!("getty-doc-{name}-{}", std::process::id()));
    ///     let endpoint = builder.bind(local, move |_| Ok((RawCodec, Flood(to, tx)))).unwrap();
    /// #   let reactor = Reactor::start_thread(name, move |r| { r.spawn(endpoint); Ok(()) }).unwrap();
    /// #   let reason = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    /// #   reactor.handle().shutdown();
    /// #   reactor.join().unwrap();
    /// #   std::fs::remove_file(path).unwrap();
    /// #   reason
    /// }
    /// let builder = UnixDatagramEndpoint::builder;
    /// let per_peer = first_drop(builder().max_parked_per_peer(4096), "per-peer");
    /// assert_eq!(per_peer, DropReason::OverPeerLimit(4096));
    /// let total = first_drop(builder().max_parked(4096), "total");
    /// assert_eq!(total, DropReason::OverTotalLimit(4096));
    /// ```
    pub fn max_parked_per_peer(mut self, bytes: usize) -> Self {
        self.kind.parked_limit = Some(bytes.max(1));
        self
    }

    /// The bytes an unconnected endpoint holds for all parked destinations together.
    /// Past it, the destination parked longest loses its oldest datagrams (counted and
    /// reported as for [`max_parked_per_peer`](Self::max_parked_per_peer)) until they fit:
    /// writes are never refused for it. Every datagram counts its payload and 64 bytes
    /// more, as for `max_outbound`. Default: 4 MiB (as much as the default `max_outbound`:
    /// 64 destinations at their full bound).
    ///
    /// See [`max_parked_per_peer`](Self::max_parked_per_peer) for an example that shows
    /// both bounds.
    pub fn max_parked(mut self, bytes: usize) -> Self {
        self.kind.parked_total = Some(bytes.max(1));
        self
    }

    /// Binds `local` (a path or an abstract name): an unconnected endpoint that receives
    /// from any peer and writes to any peer with `write_to`. The socket file is removed
    /// when the endpoint goes.
    ///
    /// **A slow receiver holds up no one else.** A receiver that does not read fills its
    /// queue (Linux: `net.unix.max_dgram_qlen` + 1, 11 datagrams); then that destination
    /// is *parked*: its datagrams wait, in order, in a queue of its own, retried on a timer
    /// that backs off from 1 ms to 100 ms (ten tries a second at most), while datagrams to
    /// every other destination keep going out in order. Parked datagrams count in neither
    /// the watermarks nor `max_outbound` (see `DatagramSession::parked_bytes`): a slow
    /// receiver never makes the endpoint unwritable, nor refuses writes to anyone else.
    /// They have bounds of their own: a destination holds at most
    /// [`max_parked_per_peer`](Self::max_parked_per_peer) (64 KiB; past it its oldest are
    /// dropped), all of them at most [`max_parked`](Self::max_parked) (4 MiB; past it the
    /// destination parked longest loses its oldest). One that takes nothing for the
    /// write-stall timeout (`SessionOptions::write_stall_timeout`, 30 s) has all it holds
    /// dropped and is forgotten, and so has one whose send fails otherwise (its socket
    /// closed, its file removed). Each drop is counted in `DatagramStats::dropped_out` and
    /// reported to `on_error` once per destination and cause in a flush (drops past a bound
    /// at most every 100 ms), as an `Error::Io` holding a
    /// [`DroppedDatagrams`](crate::udp::DroppedDatagrams) that names the destination and the
    /// count; the endpoint never fails on a stall.
    ///
    /// **What the kernel charges to the endpoint.** Linux charges every unix datagram to
    /// its sender's send buffer (`SO_SNDBUF`) until its receiver reads it: a receiver that
    /// never reads holds up to 11 of the endpoint's datagrams there. The kernel charges
    /// 768 bytes for a small datagram (8 KiB per silent receiver), 2,304 for 1,000 bytes
    /// (25 KiB), 33,024 for 30,000: seven 30 KB replies to one receiver that reads none
    /// fill the kernel's default buffer of 208 KiB, and so do eight silent receivers of
    /// 1 KB replies. When the endpoint's own buffer is full,
    /// nothing can go to anyone: the whole queue waits for room (writable readiness, which
    /// the kernel signals once the buffer has drained to a quarter, and a retry timer for
    /// room that comes sooner); no destination is parked or blamed for it, the watermarks
    /// and `max_outbound` apply as on any full socket, and the endpoint does not fail.
    /// It is free again when those receivers read, or close. A larger buffer is the only
    /// remedy, and a bound endpoint asks for one by default
    /// ([`send_buffer_size`](Self::send_buffer_size): 1 MiB asked, which the kernel caps at
    /// `net.core.wmem_max` for an unprivileged process and doubles: 416 KiB on a default
    /// system, where one silent receiver of 30 KB replies no longer fills it). Where large
    /// replies meet many silent receivers, raise `net.core.wmem_max`.
    ///
    /// See [`UnixDatagramEndpointBuilder`] for an example.
    pub fn bind<F, C, H>(
        self,
        local: impl Into<UnixAddr>,
        setup: F,
    ) -> io::Result<UnixDatagramEndpoint<C, H>>
    where
        F: FnOnce(&mut DatagramSetup<'_, UnixAddr>) -> io::Result<(C, H)>,
        C: Decoder + 'static,
        H: DatagramHandler<C, UnixAddr>,
    {
        self.open(Some(local.into()), None, setup)
    }

    /// Connects an unbound socket to `peer`: `write` sends to it, and only its datagrams
    /// are received. A send to a full peer waits for the kernel's writable signal; if the
    /// peer reads nothing for the write-stall timeout, the session ends with
    /// `Error::WriteStalled`.
    ///
    /// **A peer that restarts is reconnected to.** When a send finds the peer's socket
    /// closed (`ECONNREFUSED`: the kernel then disconnects this socket), the handler hears
    /// it once (`on_error` with that `Error::Io`; the session goes on), and the endpoint
    /// connects again to the same address and sends that datagram, and the ones queued
    /// after it, there, as syslog clients do. While nothing is bound there, the queue
    /// waits and the connect is retried on a timer (1 ms doubling to 100 ms); if the peer
    /// is not back within the write-stall timeout, the session ends with the last
    /// connect's error (`on_error`, e.g. `NotFound`, then `on_close`). Datagrams the old
    /// peer had received but not read are lost with it.
    ///
    /// ```
    /// use getty_codec::RawCodec;
    /// use getty_transports::udp::{DatagramHandler, DatagramSession};
    /// use getty_transports::{unix::UnixDatagramEndpoint, UnixAddr};
    /// # struct Sink;
    /// # impl DatagramHandler<RawCodec, UnixAddr> for Sink { fn on_message(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, _: bytes::Bytes, _: UnixAddr) {} }
    /// let server = std::os::unix::net::UnixDatagram::bind(
    ///     std::env::temp_dir().join(format!("getty-doc-connect-{}.sock", std::process::id())),
    /// ).unwrap();
    /// let path = server.local_addr().unwrap().as_pathname().unwrap().to_path_buf();
    /// let client = UnixDatagramEndpoint::builder().connect(path.as_path(), |_| Ok((RawCodec, Sink))).unwrap();
    /// assert_eq!(client.peer_addr(), Some(UnixAddr::path(&path)));
    /// std::fs::remove_file(path).unwrap();
    /// ```
    pub fn connect<F, C, H>(
        self,
        peer: impl Into<UnixAddr>,
        setup: F,
    ) -> io::Result<UnixDatagramEndpoint<C, H>>
    where
        F: FnOnce(&mut DatagramSetup<'_, UnixAddr>) -> io::Result<(C, H)>,
        C: Decoder + 'static,
        H: DatagramHandler<C, UnixAddr>,
    {
        self.open(None, Some(peer.into()), setup)
    }

    fn open<F, C, H>(
        self,
        local: Option<UnixAddr>,
        peer: Option<UnixAddr>,
        setup: F,
    ) -> io::Result<UnixDatagramEndpoint<C, H>>
    where
        F: FnOnce(&mut DatagramSetup<'_, UnixAddr>) -> io::Result<(C, H)>,
        C: Decoder + 'static,
        H: DatagramHandler<C, UnixAddr>,
    {
        let socket = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
        socket.set_nonblocking(true)?;
        self.datagram.apply_buffer_sizes(&socket)?;
        if self.datagram.send_buffer_size.is_none() && peer.is_none() {
            // Unread datagrams are charged to this buffer, for every receiver at once: ask
            // for more than the default. The kernel caps the request at `wmem_max` (and
            // doubles it), so this cannot fail for want of privilege; should it fail
            // anyway, the default buffer serves.
            let _ = socket.set_send_buffer_size(BOUND_SEND_BUFFER);
        }
        let mut file = None;
        if let Some(local) = &local {
            file = socket_file::bind(&socket, local, Type::DGRAM, self.kind.remove_stale, |_| {
                Ok(())
            })?;
        }
        if let Some(peer) = &peer {
            socket.connect(&peer.to_sockaddr()?)?;
        }
        let socket = UnixDatagram::from_std(socket.into());
        let local_addr = DatagramSocket::local_addr(&socket)?;
        let mut options = Arc::new(self.session_options);
        let (codec, handler) = setup(&mut DatagramSetup {
            local: local_addr.clone(),
            peer: peer.clone(),
            socket: SockRef::from(&socket),
            options: &mut options,
        })?;
        let config = DatagramConfig {
            batch: self.datagram.batch_size,
            mmsg: true,
            drop_probe: None,
            answer_probe: false,
            close_on_peer_error: false,
            unix: true,
            parked_limit: self.kind.parked_limit,
            parked_total: self.kind.parked_total,
        };
        let parts = EndpointParts {
            socket,
            peer: peer.clone(),
            codec,
            handler,
            options,
            config,
        };
        Ok(UnixDatagramEndpoint {
            _file: file,
            inner: DatagramEndpoint::new(parts, local_addr),
            peer,
        })
    }
}

/// A unix datagram socket: an [`Entry`](getty_reactor::Entry) with one session, bound
/// (any peer; [`write_to`](crate::udp::DatagramSession::write_to)) or connected to one
/// peer ([`write`](crate::udp::DatagramSession::write)). Spawn it into a reactor; send it
/// [`Close`](crate::Close) to close it after its queued datagrams are sent.
///
/// ```
/// use getty_codec::RawCodec;
/// use getty_reactor::Reactor;
/// use getty_transports::udp::{DatagramHandler, DatagramSession};
/// use getty_transports::{unix::UnixDatagramEndpoint, UnixAddr};
///
/// struct Echo;
/// impl DatagramHandler<RawCodec, UnixAddr> for Echo {
///     fn on_message(&mut self, s: &mut DatagramSession<RawCodec, UnixAddr>, msg: bytes::Bytes, peer: UnixAddr) {
///         let _ = s.write_to(peer, msg);
///     }
/// }
///
/// let dir = std::env::temp_dir();
/// let at = dir.join(format!("getty-doc-echo-{}.sock", std::process::id()));
/// let endpoint = UnixDatagramEndpoint::builder().bind(at.as_path(), |_| Ok((RawCodec, Echo))).unwrap();
/// let reactor = Reactor::start_thread("unix-dgram", move |r| { r.spawn(endpoint); Ok(()) }).unwrap();
///
/// let me = dir.join(format!("getty-doc-peer-{}.sock", std::process::id()));
/// let peer = std::os::unix::net::UnixDatagram::bind(&me).unwrap();
/// peer.send_to(b"hello", &at).unwrap();
/// let mut buf = [0u8; 16];
/// let n = peer.recv(&mut buf).unwrap();
/// assert_eq!(&buf[..n], b"hello");
/// std::fs::remove_file(me).unwrap();
/// reactor.handle().shutdown();
/// reactor.join().unwrap();
/// ```
pub struct UnixDatagramEndpoint<C, H> {
    /// Declared first, so dropped first: the file goes while the socket is still bound.
    _file: Option<SocketFile>,
    inner: DatagramEndpoint<UnixDatagram, C, H>,
    peer: Option<UnixAddr>,
}

impl UnixDatagramEndpoint<(), ()> {
    /// A builder with default settings: batches of 32, the kernel's buffer sizes (a bound
    /// endpoint asks for a larger send buffer), stale socket files removed, the default
    /// bounds on parked datagrams.
    ///
    /// See [`UnixDatagramEndpointBuilder`] and [`EndpointBuilder`] for examples.
    pub fn builder() -> UnixDatagramEndpointBuilder {
        UnixDatagramEndpointBuilder::default()
    }
}

impl<C, H> UnixDatagramEndpoint<C, H> {
    /// The address the socket is bound to (`Unnamed` for an unbound connected socket).
    ///
    /// See [`UnixDatagramEndpointBuilder`] for an example.
    pub fn local_addr(&self) -> &UnixAddr {
        self.inner.local_addr()
    }

    /// The peer a connected socket sends to.
    ///
    /// See [`UnixDatagramEndpointBuilder::connect`] for an example.
    pub fn peer_addr(&self) -> Option<UnixAddr> {
        self.peer.clone()
    }
}

entry_by_inner!(impl<C, H> for UnixDatagramEndpoint<C, H>, command = crate::SessionCommand, where
    C: Decoder + 'static,
    H: DatagramHandler<C, UnixAddr>,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_finds_the_longest_datagram_that_goes_through() {
        let (sender, receiver) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let send_buffer = SockRef::from(&sender).send_buffer_size().unwrap();
        SockRef::from(&receiver)
            .set_recv_buffer_size(1 << 20)
            .unwrap();
        let limit = datagram_limit(send_buffer).unwrap();
        assert!(
            limit > 64 * 1024,
            "a unix datagram limit of only {limit} bytes"
        );
        sender.send(&vec![1u8; limit]).unwrap();
        let mut buf = vec![0u8; limit + 1];
        assert_eq!(receiver.recv(&mut buf).unwrap(), limit);
        let err = sender.send(&vec![1u8; limit + 1]).unwrap_err();
        assert!(
            matches!(err.raw_os_error(), Some(libc::EMSGSIZE | libc::ENOBUFS)),
            "{err}"
        );
    }
}
