//! Blocking test clients: loopback sockets with timeouts, frames, upgrades, and what ended a
//! connection.

use super::*;

/// A blocking client socket with read and write timeouts, Nagle off.
pub fn connect(addr: SocketAddr) -> TcpStream {
    try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

pub fn try_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, STEP)?;
    stream.set_read_timeout(Some(STEP))?;
    stream.set_write_timeout(Some(STEP))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects to a server expected to close the connection at once, and waits until it has.
/// The close may come so fast that it is the connect itself that reports the reset.
pub fn connect_expect_closed(addr: SocketAddr) -> Ended {
    match try_connect(addr) {
        Ok(mut stream) => {
            // A write may race with the close; the read below tells how it ended.
            let _ = stream.write_all(&frame(b"anyone there?"));
            expect_closed(&mut stream)
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ended::Reset,
        Err(e) => panic!("connect to {addr}: {e}"),
    }
}

/// A frame of the default `LengthFieldCodec`: 4-byte big-endian length, then the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads one length-prefixed frame and returns its payload.
pub fn read_frame(r: &mut impl Read) -> Vec<u8> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)
        .unwrap_or_else(|e| panic!("reading a frame header: {e}"));
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    r.read_exact(&mut payload)
        .unwrap_or_else(|e| panic!("reading a {}-byte frame body: {e}", payload.len()));
    payload
}

/// Sends `payload` as one frame and checks the echo.
pub fn echo_roundtrip(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(&frame(payload)).expect("send a frame");
    assert_eq!(read_frame(stream), payload, "echo differs");
}

/// How the peer ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// A FIN: `read` returned 0.
    Eof,
    /// A RST: `read` failed with ECONNRESET (or ECONNABORTED).
    Reset,
}

/// Waits (bounded by the read timeout) until the peer ends the connection; returns how,
/// and the bytes that arrived before the end.
pub fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, Ended) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, Ended::Eof),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return (got, Ended::Reset)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "waiting for the peer to close (after {} bytes): {e}",
                got.len()
            ),
        }
    }
}

/// Waits until the peer ends the connection, and checks it sent nothing before.
pub fn expect_closed(stream: &mut TcpStream) -> Ended {
    let (got, ended) = read_to_end(stream);
    assert!(
        got.is_empty(),
        "expected the connection to close, got {} bytes first",
        got.len()
    );
    ended
}

#[cfg(unix)]
fn set_int_option(stream: &TcpStream, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor and a pointer to a c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
}

/// SO_LINGER {on, 0}: closing the socket then sends a RST.
#[cfg(unix)]
pub fn set_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid descriptor and a pointer to a linger struct of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// Connects to an IPv4 `addr` with SO_RCVBUF set to `bytes` before the handshake (the
/// kernel doubles it and applies its minimum). Shrinking the buffer of an established
/// connection instead makes the kernel drop segments it already advertised room for, and
/// the retransmission timeouts that follow look like write stalls.
#[cfg(target_os = "linux")]
pub fn connect_with_recv_buffer(addr: SocketAddr, bytes: usize) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only: {addr}");
    };
    // SAFETY: plain socket calls on a descriptor this function owns until it is handed to
    // TcpStream (which then closes it); the sockaddr is fully initialised.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        set_int_option(
            &stream,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            bytes as libc::c_int,
        );
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = v4.port().to_be();
        sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
        let rc = libc::connect(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect to {addr}: {}", io::Error::last_os_error());
        stream
    };
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream.set_write_timeout(Some(STEP)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// CPU time used by the calling thread.
#[cfg(target_os = "linux")]
pub fn thread_cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time (user + system) of this process's thread named `name`, from
/// `/proc/self/task/*/stat`: works even while that thread is stuck in a loop.
///
/// The kernel lists `/proc/self/task` by position, so a listing made while other threads
/// exit (other tests in this binary) can skip a live thread: a miss is tried again.
#[cfg(target_os = "linux")]
pub fn cpu_of_thread(name: &str) -> Option<Duration> {
    (0..50).find_map(|attempt| {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        cpu_of_thread_once(name)
    })
}

#[cfg(target_os = "linux")]
fn cpu_of_thread_once(name: &str) -> Option<Duration> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        // Fields after the parenthesised command name: utime and stime are 12th and 13th.
        let after = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        return Some(Duration::from_millis(ticks * 1000 / hz.max(1)));
    }
    None
}

/// Resident memory of this process, in bytes (the servers under test run in it).
#[cfg(target_os = "linux")]
pub fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages in /proc/self/statm");
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// A WebSocket echo round trip of a short binary message (at most 125 bytes) on a
/// connection already upgraded, checked byte for byte.
pub fn ws_echo_roundtrip(stream: &mut TcpStream, payload: &[u8]) {
    assert!(payload.len() <= 125, "a short message only");
    // A masked binary frame; the mask key 0 leaves the payload as it is.
    let mut out = vec![0x82, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    out.extend_from_slice(payload);
    stream.write_all(&out).unwrap();
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(
        head,
        [0x82, payload.len() as u8],
        "one unmasked binary frame back"
    );
    let mut echo = vec![0u8; payload.len()];
    stream.read_exact(&mut echo).unwrap();
    assert_eq!(echo, payload, "the echo differs");
}

/// Reads one WebSocket frame a server wrote: its header as it came (first byte, length
/// byte, extended length) and its payload. A server frame is never masked.
pub fn read_server_frame(stream: &mut impl Read) -> (Vec<u8>, Vec<u8>) {
    let mut head = vec![0u8; 2];
    stream.read_exact(&mut head).expect("a frame header");
    let extended = match head[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    head.resize(2 + extended, 0);
    stream
        .read_exact(&mut head[2..])
        .expect("a frame's extended length");
    let len = match extended {
        0 => u64::from(head[1] & 0x7f),
        _ => head[2..].iter().fold(0, |n, &b| n << 8 | u64::from(b)),
    };
    assert_eq!(head[1] & 0x80, 0, "a server frame must not be masked");
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).expect("a frame's payload");
    (head, payload)
}

/// The header a server writes for an unmasked frame whose first byte is `first` and whose
/// payload is `len` bytes: the length in its shortest form (RFC 6455 §5.2).
pub fn shortest_server_header(first: u8, len: usize) -> Vec<u8> {
    match len {
        0..=125 => vec![first, len as u8],
        126..=0xffff => [&[first, 126][..], &(len as u16).to_be_bytes()].concat(),
        _ => [&[first, 127][..], &(len as u64).to_be_bytes()].concat(),
    }
}

/// Upgrades a plain socket to a WebSocket at `/echo` by hand (fixed key) and checks the
/// `101`; no byte past the response head is read.
pub fn ws_upgrade(stream: &mut TcpStream) {
    stream
        .write_all(
            b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    read_101(stream);
}

/// The server's side of a client's upgrade, by hand: reads the request (bounded by the
/// socket's read timeout) and returns the `101` that accepts it, for the caller to send,
/// alone or with frames behind it in the same write.
#[cfg(feature = "ws")]
pub fn accept_ws_request(stream: &mut TcpStream) -> Vec<u8> {
    use getty::codec::ws::parse_request;
    let mut input = bytes::BytesMut::new();
    let request = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("the upgrade request");
        assert!(n > 0, "the request ended");
        input.extend_from_slice(&chunk[..n]);
        if let Some(request) = parse_request(&mut input, 8192).unwrap() {
            break request;
        }
    };
    let mut response = bytes::BytesMut::new();
    request.accept(None, None, &mut response).unwrap();
    response.to_vec()
}

/// Reads a `101 Switching Protocols` head byte by byte (nothing past it).
pub fn read_101(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("the upgrade response");
        head.push(byte[0]);
        assert!(head.len() < 4096, "an overlong response head");
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

/// Drives the TLS filter `client` over the blocking `peer`: the handshake, `send` (plain
/// bytes, sent once it is done), then reads until at least `want` plain bytes came back
/// (with `want` 0, until the handshake is done). Returns the plain bytes and the wire bytes
/// read but not decoded. Bounded by the socket's read timeout.
#[cfg(feature = "tls")]
pub fn tls_exchange(
    peer: &mut TcpStream,
    client: &mut getty::codec::filter::TlsFilter,
    send: &[u8],
    want: usize,
) -> (bytes::BytesMut, bytes::BytesMut) {
    use getty::codec::filter::Filter;
    let mut wire_out = bytes::BytesMut::new();
    let mut wire_in = bytes::BytesMut::new();
    let mut plain = bytes::BytesMut::new();
    client
        .encode(send, &mut wire_out)
        .expect("queue the plain bytes");
    let mut chunk = [0u8; 16 * 1024];
    while client.is_handshaking() || plain.len() < want {
        client.flush(&mut wire_out).unwrap();
        peer.write_all(&wire_out).unwrap();
        wire_out.clear();
        let n = peer.read(&mut chunk).expect("read from the TLS server");
        assert!(n > 0, "the server closed after {} plain bytes", plain.len());
        wire_in.extend_from_slice(&chunk[..n]);
        client.decode(&mut wire_in, &mut plain, 1 << 20).unwrap();
    }
    client.flush(&mut wire_out).unwrap();
    peer.write_all(&wire_out).unwrap();
    (plain, wire_in)
}

/// Reads the server's records until its EOF (bounded by the socket's read timeout);
/// returns the plain bytes and whether its close_notify came.
#[cfg(feature = "tls")]
pub fn tls_read_to_end(
    peer: &mut TcpStream,
    client: &mut getty::codec::filter::TlsFilter,
) -> (bytes::BytesMut, bool) {
    use getty::codec::filter::Filter;
    let (wire, _) = read_to_end(peer);
    let mut wire = bytes::BytesMut::from(&wire[..]);
    let mut plain = bytes::BytesMut::new();
    // One call stops when rustls holds as much plaintext as it buffers: call again while
    // it makes progress.
    for _ in 0..100_000 {
        let before = (wire.len(), plain.len());
        if client.decode(&mut wire, &mut plain, 64 << 20).is_err() {
            break;
        }
        if (wire.len(), plain.len()) == before {
            break;
        }
    }
    (plain, client.peer_closed() == Some(true))
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn dead_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A mutual-TLS echo server on loopback (`LengthFieldCodec`, every event to the returned
/// `Events`) that trusts one client certificate, and the config of a client presenting
/// another of the same name: the server refuses every such client's handshake (under TLS
/// 1.3, after the client's side of it is done).
#[cfg(feature = "tls")]
pub fn server_refusing_client_certificates() -> (
    Running,
    SocketAddr,
    std::sync::Arc<getty::codec::rustls::ClientConfig>,
    Events,
) {
    use getty::codec::LengthFieldCodec;
    use getty::tls;
    let make = |name: &str| rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let (server_id, trusted, impostor) = (make("localhost"), make("client"), make("client"));
    let server_config = tls::server_config_with_client_auth(
        server_id.cert.pem().as_bytes(),
        server_id.signing_key.serialize_pem().as_bytes(),
        trusted.cert.pem().as_bytes(),
    )
    .unwrap();
    let (stx, server_events) = Events::new();
    let server = getty::tcp::TcpServer::builder()
        .tls(server_config)
        .bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), Probe::echo(&stx)))
        })
        .unwrap();
    let addr = server.local_addr();
    let server = Running::serve("mtls-server", server);
    let client_config = tls::client_config_with_certificate(
        server_id.cert.pem().as_bytes(),
        impostor.cert.pem().as_bytes(),
        impostor.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    (server, addr, client_config, server_events)
}
