//! The addresses sessions are known by: `SocketAddr` for TCP, WebSocket and UDP sessions,
//! [`UnixAddr`] for unix-domain sockets. A stream session, its handler and its handles carry
//! their [`Transport`](crate::Transport) as a parameter (defaulting to TCP), whose `Addr` is
//! the address type, as netty's channels narrow `remoteAddress()` to the address of their
//! transport; datagram sessions carry the address type itself.

use std::fmt;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};

use socket2::SockAddr;

/// An address a session's peer (or its own end) can have: `SocketAddr` or [`UnixAddr`].
///
/// ```
/// fn describe<A: getty_transports::Address>(peer: &A) -> String {
///     format!("peer {peer}")
/// }
/// let addr: std::net::SocketAddr = "127.0.0.1:7000".parse().unwrap();
/// assert_eq!(describe(&addr), "peer 127.0.0.1:7000");
/// ```
pub trait Address:
    Clone + PartialEq + fmt::Debug + fmt::Display + Send + Sync + 'static + sealed::Stored
{
}

pub(crate) mod sealed {
    use socket2::SockAddr;

    /// How a session stores its peer's address compactly, and how an address is read back
    /// from the kernel's form. Sealed: only the transports' address types implement it.
    pub trait Stored: Sized {
        type Compact: Send + 'static;
        fn compact(self) -> Self::Compact;
        fn expand(compact: &Self::Compact) -> Self;
        fn from_sockaddr(addr: &SockAddr) -> Option<Self>;
    }
}

impl Address for SocketAddr {}

/// A peer address in 16 bytes instead of 32: IPv4 inline, IPv6 boxed (ten thousand idle
/// sessions each hold one).
pub enum CompactAddr {
    V4(SocketAddrV4),
    V6(Box<SocketAddrV6>),
}

impl sealed::Stored for SocketAddr {
    type Compact = CompactAddr;

    fn compact(self) -> CompactAddr {
        match self {
            SocketAddr::V4(v4) => CompactAddr::V4(v4),
            SocketAddr::V6(v6) => CompactAddr::V6(Box::new(v6)),
        }
    }

    fn expand(compact: &CompactAddr) -> SocketAddr {
        match compact {
            CompactAddr::V4(v4) => SocketAddr::V4(*v4),
            CompactAddr::V6(v6) => SocketAddr::V6(**v6),
        }
    }

    fn from_sockaddr(addr: &SockAddr) -> Option<SocketAddr> {
        addr.as_socket()
    }
}

/// The address of a unix-domain socket: a path in the file system, a name in Linux's
/// abstract namespace (no file; gone with the last socket), or none at all (the usual peer
/// address of a connected client).
///
/// ```
/// use getty_transports::UnixAddr;
/// let a = UnixAddr::path("/tmp/app.sock");
/// assert_eq!(a.to_string(), "/tmp/app.sock");
/// assert_eq!(UnixAddr::abstract_name("app").to_string(), "@app");
/// assert_eq!(UnixAddr::Unnamed.to_string(), "(unnamed)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A socket file.
    Path(PathBuf),
    /// A name in the abstract namespace (Linux), without the leading NUL byte.
    Abstract(Vec<u8>),
    /// An unbound socket.
    Unnamed,
}

impl UnixAddr {
    /// The address of a socket file.
    ///
    /// See the [type-level example](UnixAddr).
    pub fn path(path: impl AsRef<Path>) -> Self {
        UnixAddr::Path(path.as_ref().to_path_buf())
    }

    /// A name in Linux's abstract namespace.
    ///
    /// See the [type-level example](UnixAddr).
    pub fn abstract_name(name: impl AsRef<[u8]>) -> Self {
        UnixAddr::Abstract(name.as_ref().to_vec())
    }

    /// The socket file's path, for a path address.
    ///
    /// ```
    /// let a = getty_transports::UnixAddr::path("/run/a.sock");
    /// assert_eq!(a.as_path().unwrap().to_str(), Some("/run/a.sock"));
    /// ```
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            UnixAddr::Path(p) => Some(p),
            _ => None,
        }
    }

    /// True for [`UnixAddr::Unnamed`]: an unbound socket, such as the usual one-way client
    /// of a log or metrics sink. Datagrams from it are received, but nothing can be sent
    /// back to it: a datagram endpoint's `write_to` it fails with
    /// [`Error::UnnamedPeer`](crate::Error::UnnamedPeer).
    ///
    /// ```
    /// use getty_transports::UnixAddr;
    /// assert!(UnixAddr::Unnamed.is_unnamed());
    /// assert!(!UnixAddr::path("/run/app.sock").is_unnamed());
    /// ```
    pub fn is_unnamed(&self) -> bool {
        matches!(self, UnixAddr::Unnamed)
    }

    /// The kernel's form of the address.
    ///
    /// ```
    /// let wire = getty_transports::UnixAddr::abstract_name("x").to_sockaddr().unwrap();
    /// assert!(wire.is_unix());
    /// ```
    pub fn to_sockaddr(&self) -> io::Result<SockAddr> {
        match self {
            UnixAddr::Path(path) => SockAddr::unix(path),
            UnixAddr::Abstract(name) => {
                // socket2 takes an abstract name as a "path" that starts with a NUL byte.
                let mut raw = Vec::with_capacity(name.len() + 1);
                raw.push(0);
                raw.extend_from_slice(name);
                SockAddr::unix(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&raw))
            }
            UnixAddr::Unnamed => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an unnamed unix socket address cannot be bound or dialled",
            )),
        }
    }
}

impl From<&Path> for UnixAddr {
    fn from(path: &Path) -> Self {
        UnixAddr::path(path)
    }
}

impl From<PathBuf> for UnixAddr {
    fn from(path: PathBuf) -> Self {
        UnixAddr::Path(path)
    }
}

impl From<&str> for UnixAddr {
    /// A path (write abstract names with [`UnixAddr::abstract_name`]).
    fn from(path: &str) -> Self {
        UnixAddr::path(path)
    }
}

impl From<&std::os::unix::net::SocketAddr> for UnixAddr {
    fn from(addr: &std::os::unix::net::SocketAddr) -> Self {
        if let Some(path) = addr.as_pathname() {
            return UnixAddr::path(path);
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::linux::net::SocketAddrExt;
            if let Some(name) = addr.as_abstract_name() {
                return UnixAddr::abstract_name(name);
            }
        }
        UnixAddr::Unnamed
    }
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(path) => write!(f, "{}", path.display()),
            UnixAddr::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
            UnixAddr::Unnamed => f.write_str("(unnamed)"),
        }
    }
}

impl Address for UnixAddr {}

impl sealed::Stored for UnixAddr {
    /// Boxed: unix sessions are few next to TCP's, and most peers are unnamed.
    type Compact = Option<Box<UnixAddr>>;

    fn compact(self) -> Self::Compact {
        match self {
            UnixAddr::Unnamed => None,
            named => Some(Box::new(named)),
        }
    }

    fn expand(compact: &Self::Compact) -> UnixAddr {
        compact.as_deref().cloned().unwrap_or(UnixAddr::Unnamed)
    }

    fn from_sockaddr(addr: &SockAddr) -> Option<UnixAddr> {
        if addr.len() == 0 {
            // The sender of a datagram is an unbound socket: the kernel reports an empty
            // address (not even a family). It is a unix peer without a name, not a peer of
            // another family.
            return Some(UnixAddr::Unnamed);
        }
        if !addr.is_unix() {
            return None;
        }
        if let Some(path) = addr.as_pathname() {
            return Some(UnixAddr::Path(path.to_path_buf()));
        }
        if let Some(name) = addr.as_abstract_namespace() {
            return Some(UnixAddr::Abstract(name.to_vec()));
        }
        Some(UnixAddr::Unnamed)
    }
}

#[cfg(test)]
mod tests {
    use super::sealed::Stored;
    use super::*;

    #[test]
    fn unix_addresses_round_trip_through_the_kernel_form() {
        for addr in [
            UnixAddr::path("/tmp/getty.sock"),
            UnixAddr::abstract_name(b"getty\x01name"),
        ] {
            let wire = addr.to_sockaddr().unwrap();
            assert_eq!(UnixAddr::from_sockaddr(&wire), Some(addr));
        }
        assert!(UnixAddr::Unnamed.to_sockaddr().is_err());
        let inet = SockAddr::from("127.0.0.1:1".parse::<SocketAddr>().unwrap());
        assert_eq!(UnixAddr::from_sockaddr(&inet), None);
        // What the kernel reports for an unbound sender: no bytes of address at all.
        // SAFETY: zeroed storage is a valid (empty) address of length 0.
        let empty = unsafe { SockAddr::new(socket2::SockAddrStorage::zeroed(), 0) };
        assert_eq!(UnixAddr::from_sockaddr(&empty), Some(UnixAddr::Unnamed));
    }

    #[test]
    fn compact_forms_expand_to_the_same_address() {
        for addr in ["10.0.0.1:80", "[::1]:443"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(SocketAddr::expand(&addr.compact()), addr);
        }
        for addr in [UnixAddr::Unnamed, UnixAddr::path("/a")] {
            assert_eq!(UnixAddr::expand(&addr.clone().compact()), addr);
        }
        assert_eq!(std::mem::size_of::<CompactAddr>(), 16);
    }
}
