//! Raw datagram sockets for the tests to talk to endpoints and clients with: bound on
//! loopback or in a test's directory, every read bounded by `STEP`.

use std::net::UdpSocket;
#[cfg(unix)]
use std::os::unix::net::UnixDatagram;
#[cfg(unix)]
use std::path::Path;

use super::STEP;

/// A plain UDP socket on 127.0.0.1 (an ephemeral port) whose reads time out after `STEP`.
pub fn udp_socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on loopback");
    socket.set_read_timeout(Some(STEP)).unwrap();
    socket
}

/// A plain unix datagram socket bound at `at` whose reads time out after `STEP`.
#[cfg(unix)]
pub fn unix_datagram_socket(at: &Path) -> UnixDatagram {
    let socket = UnixDatagram::bind(at)
        .unwrap_or_else(|e| panic!("bind a unix datagram socket at {}: {e}", at.display()));
    socket.set_read_timeout(Some(STEP)).unwrap();
    socket
}
