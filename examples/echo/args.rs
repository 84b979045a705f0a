//! The command line: which transport, codec and load, and which side to run.

use std::net::SocketAddr;

use crate::udp;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum CodecKind {
    Length,
    Lines,
    Raw,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Transport {
    Tcp,
    Tls,
    Udp,
    Ws,
    Wss,
    Unix,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum UdpMode {
    Connected,
    Unconnected,
}

#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) transport: Transport,
    /// Reactor threads for the TCP server (one reactor per core).
    pub(crate) reactors: usize,
    pub(crate) udp_mode: UdpMode,
    pub(crate) server: Option<SocketAddr>,
    pub(crate) client: Option<SocketAddr>,
    /// `--transport unix`: the socket path of `--server` or `--client`.
    pub(crate) unix_server: Option<std::path::PathBuf>,
    pub(crate) unix_client: Option<std::path::PathBuf>,
    pub(crate) codec: CodecKind,
    pub(crate) connections: usize,
    pub(crate) messages: usize,
    pub(crate) window: usize,
    pub(crate) max_size: usize,
    pub(crate) compress: bool,
    pub(crate) max_message: Option<usize>,
    /// The CA that signed the server's certificate (`--client` alone over TLS).
    pub(crate) ca: Option<std::path::PathBuf>,
}

pub(crate) fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        transport: Transport::Tcp,
        reactors: 1,
        udp_mode: UdpMode::Connected,
        server: None,
        client: None,
        unix_server: None,
        unix_client: None,
        codec: CodecKind::Length,
        connections: 8,
        messages: 1000,
        window: 4,
        max_size: 4096,
        compress: false,
        max_message: None,
        ca: None,
    };
    let (mut server, mut client) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--transport" => {
                args.transport = match value()?.as_str() {
                    "tcp" => Transport::Tcp,
                    "tls" => Transport::Tls,
                    "udp" => Transport::Udp,
                    "ws" => Transport::Ws,
                    "wss" => Transport::Wss,
                    "unix" => Transport::Unix,
                    other => {
                        return Err(format!(
                            "unknown transport {other:?} (tcp|tls|udp|ws|wss|unix)"
                        ))
                    }
                }
            }
            "--reactors" => args.reactors = parse(&value()?)?,
            "--udp-mode" => {
                args.udp_mode = match value()?.as_str() {
                    "connected" => UdpMode::Connected,
                    "unconnected" => UdpMode::Unconnected,
                    other => {
                        return Err(format!(
                            "unknown UDP mode {other:?} (connected|unconnected)"
                        ))
                    }
                }
            }
            "--server" => server = Some(value()?),
            "--client" => client = Some(value()?),
            "--codec" => {
                args.codec = match value()?.as_str() {
                    "length" => CodecKind::Length,
                    "lines" => CodecKind::Lines,
                    "raw" => CodecKind::Raw,
                    other => return Err(format!("unknown codec {other:?} (length|lines|raw)")),
                }
            }
            "--connections" => args.connections = parse(&value()?)?,
            "--messages" => args.messages = parse(&value()?)?,
            "--window" => args.window = parse(&value()?)?,
            "--max-size" => args.max_size = parse(&value()?)?,
            "--compress" => args.compress = true,
            "--max-message" => args.max_message = Some(parse(&value()?)?),
            "--ca" => args.ca = Some(value()?.into()),
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    // A unix socket's address is a path; the others' a host and port.
    if args.transport == Transport::Unix {
        args.unix_server = server.map(Into::into);
        args.unix_client = client.map(Into::into);
    } else {
        args.server = server.map(|s| parse(&s)).transpose()?;
        args.client = client.map(|s| parse(&s)).transpose()?;
    }
    if args.reactors == 0 {
        return Err("--reactors must be > 0".into());
    }
    if args.connections == 0 || args.messages == 0 || args.window == 0 || args.max_size < 16 {
        return Err("--connections, --messages and --window must be > 0, --max-size >= 16".into());
    }
    if args.transport == Transport::Udp && args.max_size > udp::MAX_PAYLOAD {
        return Err(format!(
            "--max-size must be at most {} with UDP (one message is one datagram)",
            udp::MAX_PAYLOAD
        ));
    }
    Ok(args)
}

pub(crate) fn parse<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("cannot parse {s:?}"))
}
