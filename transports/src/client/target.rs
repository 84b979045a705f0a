//! Where a client dials ([`DialTarget`]): addresses, a host name and a port, or the caller's
//! own resolver; how a host name is resolved and its addresses ordered.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs};
use std::sync::Arc;

use crate::resolve::Resolver;

/// Who a client dials: its addresses (never empty), in order; what resolves them again
/// before a redial, if anything; and its name in the log.
pub(crate) struct Peer<A> {
    pub(super) addrs: Vec<A>,
    pub(super) resolver: Option<Resolver<A>>,
    pub(super) label: String,
}

impl<A: fmt::Display> Peer<A> {
    /// The one address `addr`, never resolved.
    pub(crate) fn one(addr: A) -> Self {
        Peer {
            label: addr.to_string(),
            addrs: vec![addr],
            resolver: None,
        }
    }
}

impl Peer<SocketAddr> {
    /// The addresses of `target`: a host name (or the caller's resolver) is resolved now,
    /// on the calling thread, and again before every redial.
    pub(crate) fn resolve(target: DialTarget) -> io::Result<Self> {
        let label = target.to_string();
        let (addrs, resolver) = target.resolve_now()?;
        Ok(Peer {
            addrs,
            resolver,
            label,
        })
    }
}

/// A caller's resolver ([`DialTarget::resolve_with`]).
type CustomResolver = Arc<dyn Fn() -> io::Result<Vec<SocketAddr>> + Send + Sync>;

/// Where a TCP, WebSocket or UDP client dials: addresses, or a host name and a port.
///
/// Made from what `std::net::ToSocketAddrs` takes (a `SocketAddr`, `"host:port"`,
/// `("host", port)`, `(ip, port)`, a slice or `Vec` of addresses). Every address is tried
/// in turn, each with the connect timeout, until one answers (RFC 8305's fall-through;
/// the attempts are not raced); a dial fails only when all of them did. Once a session
/// has opened, later rounds start at the address it opened with, then try the others in
/// order (a black-holed first address costs one connect timeout, not one per reconnect).
///
/// - **Addresses** (an IP literal, a `SocketAddr`, a list) are dialled in the order given
///   and never resolved: nothing blocks.
/// - **A host name** is resolved when the client is built (on the calling thread: build
///   clients off the reactor thread, or give them addresses), its addresses ordered with
///   the families alternating (RFC 8305 §4); and it is resolved again before every redial
///   by a resolver the whole process shares (at most 4 `getty-resolver` threads, started
///   when needed and ending when idle; lookups of one name in flight are made once), the
///   answer reaching the client as a reactor command, so the reactor never waits on DNS
///   and a changed record is followed. A lookup gets the connect timeout (for UDP, the
///   probe wait): past it, or if it fails or panics, the client dials the addresses it
///   had, and an answer that comes late is dialled in the next round.
/// - **Your own resolver** ([`DialTarget::resolve_with`]) is called as a host name's is.
///
/// ```
/// use std::net::SocketAddr;
/// use getty_transports::DialTarget;
///
/// let literal = DialTarget::from("127.0.0.1:9000");
/// assert_eq!(literal.to_string(), "127.0.0.1:9000");
/// let name = DialTarget::from(("localhost", 9000));
/// assert_eq!(name.to_string(), "localhost:9000");
/// let list: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()];
/// assert_eq!(DialTarget::from(list).to_string(), "[127.0.0.1:1, 127.0.0.1:2]");
/// ```
#[derive(Debug, Clone)]
pub struct DialTarget(Target);

#[derive(Clone)]
enum Target {
    Addrs(Vec<SocketAddr>),
    Host {
        host: String,
        port: u16,
    },
    Custom {
        label: String,
        resolver: CustomResolver,
    },
    Invalid(String),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addrs(addrs) => f.debug_tuple("Addrs").field(addrs).finish(),
            Target::Host { host, port } => write!(f, "Host({host}:{port})"),
            Target::Custom { label, .. } => write!(f, "Custom({label})"),
            Target::Invalid(why) => f.debug_tuple("Invalid").field(why).finish(),
        }
    }
}

impl DialTarget {
    /// Dials these addresses, in this order, without resolving anything.
    ///
    /// ```
    /// let t = getty_transports::DialTarget::addrs(["127.0.0.1:7".parse().unwrap()]);
    /// assert_eq!(t.to_string(), "127.0.0.1:7");
    /// ```
    pub fn addrs(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        DialTarget(Target::Addrs(addrs.into_iter().collect()))
    }

    /// Dials `host` (a name, or an IP address: then nothing is resolved) on `port`. An
    /// IPv6 address may name its zone (RFC 6874, `fe80::1%25eth0`, or `fe80::1%eth0`): an
    /// interface's name or index.
    ///
    /// ```
    /// let t = getty_transports::DialTarget::host("localhost", 80);
    /// assert_eq!(t.to_string(), "localhost:80");
    /// assert_eq!(getty_transports::DialTarget::host("[::1]", 80).to_string(), "[::1]:80");
    /// let zoned = getty_transports::DialTarget::host("[fe80::1%252]", 80);
    /// assert_eq!(zoned.to_string(), "[fe80::1%2]:80");
    /// ```
    pub fn host(host: impl Into<String>, port: u16) -> Self {
        let host = host.into();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return DialTarget(Target::Addrs(vec![SocketAddr::new(ip, port)]));
        }
        match bare.split_once('%') {
            Some((ip, zone)) => match (ip.parse::<Ipv6Addr>(), scope_id(zone)) {
                (Ok(ip), Some(scope)) => DialTarget::from(SocketAddrV6::new(ip, port, 0, scope)),
                _ => DialTarget(Target::Invalid(format!(
                    "{host:?} is not an IPv6 address with a zone this host has"
                ))),
            },
            None => DialTarget(Target::Host { host, port }),
        }
    }

    /// Dials the addresses `resolve` answers, in its order: it is called when the client
    /// is built (on the calling thread) and again before every redial, on the shared
    /// resolver's threads (never the reactor's), so it may block: a service registry, a DNS
    /// client of your choice, a list that changes. Clients built from clones of one target
    /// share a lookup in flight. `label` names the target in the log. An error when the
    /// client is built fails the build; later, an error, a panic (reported on the client's
    /// reactor like any panic) or a lookup past its deadline leaves the client dialling the
    /// addresses it had.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use getty_transports::DialTarget;
    ///
    /// let t = DialTarget::resolve_with("registry:chat", || {
    ///     Ok(vec!["127.0.0.1:7000".parse::<SocketAddr>().unwrap()])
    /// });
    /// assert_eq!(t.to_string(), "registry:chat");
    /// ```
    pub fn resolve_with<R>(label: impl Into<String>, resolve: R) -> Self
    where
        R: Fn() -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
    {
        DialTarget(Target::Custom {
            label: label.into(),
            resolver: Arc::new(resolve),
        })
    }

    /// The addresses to dial first and, for a host name, how to resolve it again. Resolves
    /// a host name (blocking the calling thread).
    pub(crate) fn resolve_now(self) -> io::Result<(Vec<SocketAddr>, Option<Resolver<SocketAddr>>)> {
        match self.0 {
            Target::Invalid(why) => Err(io::Error::new(io::ErrorKind::InvalidInput, why)),
            Target::Addrs(addrs) if addrs.is_empty() => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address to dial",
            )),
            Target::Addrs(addrs) => Ok((addrs, None)),
            Target::Host { host, port } => {
                let name = host.clone();
                let resolver = Resolver::name(&name, port, move || resolve_host(&host, port));
                Ok((resolver.resolve_here()?, Some(resolver)))
            }
            Target::Custom { label, resolver } => {
                let resolver = Resolver::custom(resolver);
                match resolver.resolve_here()? {
                    addrs if addrs.is_empty() => Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{label} resolved to no address"),
                    )),
                    addrs => Ok((addrs, Some(resolver))),
                }
            }
        }
    }
}

/// The scope id of an IPv6 zone: `25` (a percent-encoded `%`) first if it is there, then an
/// interface index or name.
fn scope_id(zone: &str) -> Option<u32> {
    let zone = zone
        .strip_prefix("25")
        .filter(|rest| !rest.is_empty())
        .unwrap_or(zone);
    if let Ok(index) = zone.parse::<u32>() {
        return Some(index);
    }
    let name = std::ffi::CString::new(zone).ok()?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Resolves `host` and orders its addresses for dialling: the families alternate, starting
/// with the resolver's first choice (RFC 8305 §4), otherwise in the resolver's order.
fn resolve_host(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let resolved: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    if resolved.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolved to no address"),
        ));
    }
    Ok(interleave(resolved))
}

/// The families alternate, starting with the first address's; each family keeps its order.
fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first_v6) = addrs.first().map(SocketAddr::is_ipv6) else {
        return addrs;
    };
    let (mut first, mut second): (VecDeque<_>, VecDeque<_>) =
        addrs.into_iter().partition(|a| a.is_ipv6() == first_v6);
    let mut ordered = Vec::with_capacity(first.len() + second.len());
    while !first.is_empty() || !second.is_empty() {
        ordered.extend(first.pop_front());
        ordered.extend(second.pop_front());
    }
    ordered
}

impl fmt::Display for DialTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Target::Addrs(addrs) => fmt_addrs(addrs, f),
            Target::Host { host, port } => write!(f, "{host}:{port}"),
            Target::Custom { label, .. } => f.write_str(label),
            Target::Invalid(why) => f.write_str(why),
        }
    }
}

/// One address as itself, several as a list: how a client names what it dials in its log.
fn fmt_addrs<A: fmt::Display>(addrs: &[A], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match addrs {
        [one] => one.fmt(f),
        many => {
            f.write_str("[")?;
            for (i, a) in many.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                a.fmt(f)?;
            }
            f.write_str("]")
        }
    }
}

impl From<SocketAddr> for DialTarget {
    fn from(addr: SocketAddr) -> Self {
        DialTarget::addrs([addr])
    }
}

impl From<SocketAddrV4> for DialTarget {
    fn from(addr: SocketAddrV4) -> Self {
        DialTarget::addrs([addr.into()])
    }
}

impl From<SocketAddrV6> for DialTarget {
    fn from(addr: SocketAddrV6) -> Self {
        DialTarget::addrs([addr.into()])
    }
}

impl From<(IpAddr, u16)> for DialTarget {
    fn from((ip, port): (IpAddr, u16)) -> Self {
        DialTarget::addrs([SocketAddr::new(ip, port)])
    }
}

impl From<(Ipv4Addr, u16)> for DialTarget {
    fn from((ip, port): (Ipv4Addr, u16)) -> Self {
        DialTarget::addrs([SocketAddr::new(ip.into(), port)])
    }
}

impl From<(Ipv6Addr, u16)> for DialTarget {
    fn from((ip, port): (Ipv6Addr, u16)) -> Self {
        DialTarget::addrs([SocketAddr::new(ip.into(), port)])
    }
}

impl From<(&str, u16)> for DialTarget {
    fn from((host, port): (&str, u16)) -> Self {
        DialTarget::host(host, port)
    }
}

impl From<(String, u16)> for DialTarget {
    fn from((host, port): (String, u16)) -> Self {
        DialTarget::host(host, port)
    }
}

impl From<&str> for DialTarget {
    /// `ip:port`, `[ipv6]:port` (with a zone if need be: `[fe80::1%eth0]:port`) or
    /// `host:port`.
    fn from(s: &str) -> Self {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return DialTarget::from(addr);
        }
        if let Some((literal, port)) = s.strip_prefix('[').and_then(|r| r.rsplit_once("]:")) {
            // `[fe80::1%eth0]:port`: a zone by name.
            return match port.parse::<u16>() {
                Ok(port) => DialTarget::host(literal, port),
                Err(_) => DialTarget(Target::Invalid(format!("invalid port in {s:?}"))),
            };
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.contains(':') => {
                match port.parse::<u16>() {
                    Ok(port) => DialTarget::host(host, port),
                    Err(_) => DialTarget(Target::Invalid(format!("invalid port in {s:?}"))),
                }
            }
            _ => DialTarget(Target::Invalid(format!(
                "{s:?} is not an address: host:port or ip:port"
            ))),
        }
    }
}

impl From<String> for DialTarget {
    fn from(s: String) -> Self {
        DialTarget::from(s.as_str())
    }
}

impl From<&String> for DialTarget {
    fn from(s: &String) -> Self {
        DialTarget::from(s.as_str())
    }
}

impl From<Vec<SocketAddr>> for DialTarget {
    fn from(addrs: Vec<SocketAddr>) -> Self {
        DialTarget::addrs(addrs)
    }
}

impl From<&[SocketAddr]> for DialTarget {
    fn from(addrs: &[SocketAddr]) -> Self {
        DialTarget::addrs(addrs.iter().copied())
    }
}

impl<const N: usize> From<[SocketAddr; N]> for DialTarget {
    fn from(addrs: [SocketAddr; N]) -> Self {
        DialTarget::addrs(addrs)
    }
}

impl From<&DialTarget> for DialTarget {
    fn from(target: &DialTarget) -> Self {
        target.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn targets_parse_as_to_socket_addrs_would() {
        let cases: [(DialTarget, &str); 8] = [
            ("127.0.0.1:9".into(), "Addrs([127.0.0.1:9])"),
            ("[::1]:9".into(), "Addrs([[::1]:9])"),
            ("localhost:9".into(), "Host(localhost:9)"),
            (("::1", 9).into(), "Addrs([[::1]:9])"),
            (("example.com", 443).into(), "Host(example.com:443)"),
            (
                "no-port".into(),
                "Invalid(\"\\\"no-port\\\" is not an address: host:port or ip:port\")",
            ),
            (
                "h:99999".into(),
                "Invalid(\"invalid port in \\\"h:99999\\\"\")",
            ),
            (
                "::1".into(),
                "Invalid(\"\\\"::1\\\" is not an address: host:port or ip:port\")",
            ),
        ];
        for (target, debug) in cases {
            assert_eq!(format!("{:?}", target.0), debug);
        }
        // IPv6 zones, by index or (the loopback's) name, percent-encoded or not.
        let lo = scope_id("lo").expect("a loopback interface named lo");
        for (target, scope) in [
            (DialTarget::host("[fe80::1%253]", 9), 3),
            (DialTarget::host("fe80::1%3", 9), 3),
            (DialTarget::host("fe80::1%25lo", 9), lo),
            (DialTarget::from("[fe80::1%lo]:9"), lo),
        ] {
            let (addrs, _) = target.resolve_now().unwrap();
            let expected = SocketAddrV6::new("fe80::1".parse().unwrap(), 9, 0, scope);
            assert_eq!(addrs, vec![SocketAddr::V6(expected)]);
        }
        assert!(DialTarget::host("fe80::1%no-such-if", 9)
            .resolve_now()
            .is_err());
        assert!(DialTarget::from("[fe80::1%lo]:x").resolve_now().is_err());
        assert!(DialTarget::from("no-port").resolve_now().is_err());
        assert!(DialTarget::addrs([]).resolve_now().is_err());
        let (addrs, resolver) = DialTarget::from("127.0.0.1:9").resolve_now().unwrap();
        assert_eq!(
            (addrs, resolver.is_none()),
            (vec![addr("127.0.0.1:9")], true)
        );
    }

    #[test]
    fn resolved_families_alternate_in_their_own_order() {
        let list = vec![
            addr("[::1]:1"),
            addr("[::2]:1"),
            addr("[::3]:1"),
            addr("10.0.0.1:1"),
            addr("10.0.0.2:1"),
        ];
        let expected = vec![
            addr("[::1]:1"),
            addr("10.0.0.1:1"),
            addr("[::2]:1"),
            addr("10.0.0.2:1"),
            addr("[::3]:1"),
        ];
        assert_eq!(interleave(list), expected);
        assert_eq!(interleave(Vec::new()), Vec::<SocketAddr>::new());
        let v4 = vec![addr("10.0.0.1:1"), addr("10.0.0.2:1")];
        assert_eq!(interleave(v4.clone()), v4);
    }
}
