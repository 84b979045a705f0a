//! The socket a datagram entry runs over, kept behind a small trait so that the datagram
//! path (batching, queueing, the entry's state machine) can serve other datagram sockets
//! than UDP (unix datagram sockets are next) without change.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use socket2::{SockAddr, SockRef};

/// A non-blocking datagram socket registered with the reactor.
///
/// The address type is the one handlers see (`SocketAddr` for UDP). Everything the
/// datagram path needs goes through [`sock`](DatagramSocket::sock) (socket2 does the
/// portable syscalls) and [`try_io`](DatagramSocket::try_io) (so that mio can track
/// readiness where it must).
pub(crate) trait DatagramSocket: mio::event::Source + 'static {
    /// A peer or local address.
    /// `Eq + Hash`: an unconnected unix endpoint keeps a queue per parked destination;
    /// `Send + Sync`: a report of datagrams dropped for one names it inside an `io::Error`.
    type Addr: Clone + Eq + std::hash::Hash + fmt::Debug + Send + Sync + 'static;

    /// A UDP socket, whose sends may merge runs of datagrams (`batch::Segmentation`).
    const UDP: bool = false;

    /// The socket, for syscalls.
    fn sock(&self) -> SockRef<'_>;

    /// Runs one non-blocking I/O call on the socket (mio's `try_io`).
    fn try_io<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T>;

    /// The wire form of an address.
    fn encode_addr(addr: &Self::Addr) -> SockAddr;

    /// An address from its wire form; `None` when it is not of this socket's family.
    fn decode_addr(addr: &SockAddr) -> Option<Self::Addr>;

    /// The socket's local address.
    fn local_addr(&self) -> io::Result<Self::Addr>;

    /// The largest payload one datagram can carry on this socket.
    fn max_payload(&self) -> usize;

    /// The largest payload one datagram to `peer` can carry, on a socket whose largest is
    /// `socket_max`: less where the peer's network carries less (an IPv4 peer of a
    /// dual-stack UDP socket).
    fn max_payload_to(peer: &Self::Addr, socket_max: usize) -> usize {
        let _ = peer;
        socket_max
    }

    /// The largest datagram this socket can receive, whoever sent it: it sizes the
    /// receive buffers (with the session's `max_message_len`). UDP: the largest UDP
    /// payload. A unix datagram socket has no bound of its own (a peer's send buffer
    /// sets it, and a peer may have a larger one than this socket).
    fn max_recv_payload(&self) -> usize {
        self.max_payload()
    }

    /// True for an address nothing can be sent to: an unnamed unix socket (an unbound
    /// sender), which `write_to` refuses with `Error::UnnamedPeer`.
    fn is_unnamed(addr: &Self::Addr) -> bool {
        let _ = addr;
        false
    }

    /// False for a source address no datagram can go back to (a UDP port 0, an unspecified
    /// IP, an unnamed unix socket): the framework's own answers (to dial probes) skip it.
    fn can_send_to(addr: &Self::Addr) -> bool {
        !Self::is_unnamed(addr)
    }

    /// Whether the socket reports writable readiness once a send that hit `EAGAIN` can go
    /// through again (`connected`: the session's socket is connected, which the entry
    /// knows). UDP does (its own send buffer frees up). An unconnected unix datagram
    /// socket does not, in general: the kernel watches a receiver's queue only for the
    /// senders connected to it, and signals room in the socket's own buffer only once it
    /// has drained to a quarter. Its blocked sends are retried on a timer too.
    fn signals_write_space(&self, connected: bool) -> bool {
        let _ = connected;
        true
    }

    /// Asked after a send failed with `EAGAIN` (unconnected unix sockets, where a full
    /// receiver does that too): true when the socket's own send buffer is full, so that
    /// nothing can go anywhere. `send_buffer` caches the socket's `SO_SNDBUF` for the
    /// caller (one flush). UDP: always.
    fn send_buffer_full(&self, send_buffer: &mut Option<usize>) -> bool {
        let _ = send_buffer;
        true
    }
}

/// The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers).
pub(crate) const MAX_UDP_PAYLOAD_V4: usize = 65_507;
/// The largest UDP payload over IPv6 without jumbograms.
pub(crate) const MAX_UDP_PAYLOAD_V6: usize = 65_527;

impl DatagramSocket for mio::net::UdpSocket {
    type Addr = SocketAddr;

    const UDP: bool = true;

    fn sock(&self) -> SockRef<'_> {
        SockRef::from(self)
    }

    fn try_io<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        mio::net::UdpSocket::try_io(self, f)
    }

    fn encode_addr(addr: &SocketAddr) -> SockAddr {
        SockAddr::from(*addr)
    }

    fn decode_addr(addr: &SockAddr) -> Option<SocketAddr> {
        addr.as_socket()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        mio::net::UdpSocket::local_addr(self)
    }

    fn max_payload(&self) -> usize {
        match mio::net::UdpSocket::local_addr(self) {
            Ok(SocketAddr::V6(_)) => MAX_UDP_PAYLOAD_V6,
            _ => MAX_UDP_PAYLOAD_V4,
        }
    }

    /// A dual-stack (`[::]`) socket sends to an IPv4 peer (an IPv4-mapped address) as IPv4,
    /// whose datagrams carry 20 bytes less than IPv6's.
    fn max_payload_to(peer: &SocketAddr, socket_max: usize) -> usize {
        let ipv4 = match peer {
            SocketAddr::V4(_) => true,
            SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
        };
        if ipv4 {
            socket_max.min(MAX_UDP_PAYLOAD_V4)
        } else {
            socket_max
        }
    }

    fn can_send_to(addr: &SocketAddr) -> bool {
        addr.port() != 0 && !addr.ip().is_unspecified()
    }
}

/// True for the errors an ICMP message from (or about) the peer turns into: the peer's
/// port is closed, or its host or network cannot be reached. A connected socket reports
/// them on a later read or write; they concern the peer, not the socket, which stays
/// usable.
pub(crate) fn is_peer_error(e: &io::Error) -> bool {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    ) {
        return true;
    }
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(
                libc::EHOSTUNREACH
                    | libc::ENETUNREACH
                    | libc::EHOSTDOWN
                    | libc::ENETDOWN
                    | libc::EPROTO
            )
        )
    }
    #[cfg(not(unix))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_errors_are_told_apart() {
        assert!(is_peer_error(&io::ErrorKind::ConnectionRefused.into()));
        assert!(!is_peer_error(&io::ErrorKind::WouldBlock.into()));
        assert!(!is_peer_error(&io::ErrorKind::InvalidInput.into()));
        #[cfg(unix)]
        {
            assert!(is_peer_error(&io::Error::from_raw_os_error(
                libc::EHOSTUNREACH
            )));
            assert!(!is_peer_error(&io::Error::from_raw_os_error(
                libc::EMSGSIZE
            )));
        }
    }

    #[test]
    fn addresses_round_trip() {
        use mio::net::UdpSocket;
        for addr in ["127.0.0.1:4000", "[::1]:4001"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let wire = <UdpSocket as DatagramSocket>::encode_addr(&addr);
            assert_eq!(
                <UdpSocket as DatagramSocket>::decode_addr(&wire),
                Some(addr)
            );
        }
    }
}
