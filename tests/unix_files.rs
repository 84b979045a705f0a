//! Unix socket files (issue 12, items 7 and 8): a bind never takes over a path a live socket
//! holds (stream or datagram), whatever that socket's backlog; a server removes only its own
//! file; servers binding one path at once end with exactly one winner. Every test works in a
//! directory of its own and runs under a watchdog.
#![cfg(target_os = "linux")]

mod common;

use std::io::{self, ErrorKind};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::net::{UnixDatagram as StdUnixDatagram, UnixListener as StdUnixListener};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use getty::codec::{Bytes, RawCodec};
use getty::udp::{DatagramHandler, DatagramSession};
use getty::unix::{UnixDatagramEndpoint, UnixServer};
use getty::{Handler, Session, Unix, UnixAddr};
use socket2::{Domain, SockAddr, Socket, Type};

const LIMIT: Duration = Duration::from_secs(60);

struct Sink;

impl Handler<RawCodec, Unix> for Sink {
    fn on_message(&mut self, _: &mut Session<RawCodec, Unix>, _: Bytes) {}
}

impl DatagramHandler<RawCodec, UnixAddr> for Sink {
    fn on_message(&mut self, _: &mut DatagramSession<RawCodec, UnixAddr>, _: Bytes, _: UnixAddr) {}
}

type SetupFn = fn(&mut getty::Setup<'_, UnixAddr>) -> io::Result<(RawCodec, Sink)>;
type StreamServer = UnixServer<SetupFn, RawCodec, Sink>;

/// A stream server at `path` (never spawned: its listener queues connections, which is all
/// these tests need).
fn stream_server(path: &Path) -> io::Result<StreamServer> {
    fn setup(_: &mut getty::Setup<'_, UnixAddr>) -> io::Result<(RawCodec, Sink)> {
        Ok((RawCodec, Sink))
    }
    UnixServer::bind(path, setup as SetupFn)
}

fn datagram_endpoint(path: &Path) -> io::Result<UnixDatagramEndpoint<RawCodec, Sink>> {
    UnixDatagramEndpoint::builder().bind(path, |_| Ok((RawCodec, Sink)))
}

/// A socket file nothing is bound to any more (what a crashed server leaves).
fn stale_file(path: &Path, kind: Type) {
    let socket = Socket::new(Domain::UNIX, kind, None).unwrap();
    socket.bind(&SockAddr::unix(path).unwrap()).unwrap();
    drop(socket);
    assert!(path.exists(), "a stale socket file");
}

fn inode(path: &Path) -> (u64, u64) {
    let meta = std::fs::symlink_metadata(path).expect("the socket file");
    (meta.dev(), meta.ino())
}

fn kind_of<T>(result: &io::Result<T>) -> Option<ErrorKind> {
    result.as_ref().err().map(io::Error::kind)
}

/// Item 7a: a datagram bind over a path that a live socket holds fails with AddrInUse and
/// leaves that socket's file alone (a live getty endpoint, a plain datagram socket, a
/// stream server); a stale datagram file is still taken over.
#[test]
fn a_datagram_bind_never_takes_over_a_live_socket() {
    watchdog(LIMIT, || {
        let dir = TempDir::new("dgram-live");

        let path = dir.path("endpoint.sock");
        let live = datagram_endpoint(&path).unwrap();
        let before = inode(&path);
        assert_eq!(
            kind_of(&datagram_endpoint(&path)),
            Some(ErrorKind::AddrInUse)
        );
        assert_eq!(
            inode(&path),
            before,
            "the live endpoint's file was replaced"
        );
        drop(live);
        assert!(!path.exists(), "an endpoint removes its own file");

        let path = dir.path("plain.sock");
        let plain = StdUnixDatagram::bind(&path).unwrap();
        assert_eq!(
            kind_of(&datagram_endpoint(&path)),
            Some(ErrorKind::AddrInUse)
        );
        let sender = StdUnixDatagram::unbound().unwrap();
        sender.send_to(b"still mine", &path).unwrap();
        plain.set_read_timeout(Some(STEP)).unwrap();
        let mut buf = [0u8; 32];
        let n = plain.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"still mine");

        let path = dir.path("stream.sock");
        let _listener = StdUnixListener::bind(&path).unwrap();
        assert_eq!(
            kind_of(&datagram_endpoint(&path)),
            Some(ErrorKind::AddrInUse)
        );
        StdUnixStream::connect(&path).expect("the stream server still has its path");

        let path = dir.path("stale.sock");
        stale_file(&path, Type::DGRAM);
        let taken = datagram_endpoint(&path).expect("a stale file is taken over");
        sender.send_to(b"to the new endpoint", &path).unwrap();
        drop(taken);
        assert!(!path.exists());
    });
}

/// Item 7b: a server that lost its path (someone removed the file and another server bound
/// it) does not remove the newer server's file when it goes. Stream and datagram.
#[test]
fn a_server_removes_only_its_own_socket_file() {
    watchdog(LIMIT, || {
        let dir = TempDir::new("own-file");

        let path = dir.path("stream.sock");
        let first = stream_server(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let second = stream_server(&path).unwrap();
        drop(first);
        assert!(
            path.exists(),
            "dropping the first server removed the second's file"
        );
        StdUnixStream::connect(&path).expect("the second server still listens on its path");
        drop(second);
        assert!(!path.exists(), "a server removes its own file");

        let path = dir.path("dgram.sock");
        let first = datagram_endpoint(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let second = datagram_endpoint(&path).unwrap();
        drop(first);
        assert!(
            path.exists(),
            "dropping the first endpoint removed the second's file"
        );
        let sender = StdUnixDatagram::unbound().unwrap();
        sender
            .send_to(b"x", &path)
            .expect("the second endpoint is still reachable at its path");
        drop(second);
        assert!(!path.exists(), "an endpoint removes its own file");

        // A file that replaced ours while we ran (not a socket at all) is left alone too.
        let path = dir.path("replaced.sock");
        let server = stream_server(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"someone else's").unwrap();
        drop(server);
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
    });
}

/// Servers started at the same moment over one stale file: exactly one binds, every other
/// fails with AddrInUse, and the winner keeps a working file. Rounds of `threads` binds.
fn one_winner<T: Send + 'static>(
    name: &str,
    kind: Type,
    bind: fn(&Path) -> io::Result<T>,
    reachable: fn(&Path) -> io::Result<()>,
) {
    const ROUNDS: usize = 40;
    const THREADS: usize = 6;
    let dir = TempDir::new(name);
    for round in 0..ROUNDS {
        let path = dir.path(&format!("race-{round}.sock"));
        stale_file(&path, kind);
        let barrier = Arc::new(Barrier::new(THREADS));
        let binders: Vec<_> = (0..THREADS)
            .map(|_| {
                let (barrier, path) = (barrier.clone(), path.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    bind(&path)
                })
            })
            .collect();
        let results: Vec<io::Result<T>> = binders
            .into_iter()
            .map(|b| b.join().expect("a binding thread"))
            .collect();
        let (won, lost): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
        let lost: Vec<String> = lost
            .into_iter()
            .filter_map(Result::err)
            .filter(|e| e.kind() != ErrorKind::AddrInUse)
            .map(|e| format!("{:?}: {e}", e.kind()))
            .collect();
        assert!(lost.is_empty(), "round {round}: binds failed with {lost:?}");
        assert_eq!(
            won.len(),
            1,
            "round {round}: {} servers bound one path",
            won.len()
        );
        reachable(&path).unwrap_or_else(|e| panic!("round {round}: the winner's path: {e}"));
        drop(won);
        assert!(!path.exists(), "round {round}: the winner removes its file");
    }
}

/// Item 7c, stream: the stale-file takeover is safe against servers starting at once.
#[test]
fn stream_servers_binding_one_path_at_once_have_one_winner() {
    watchdog(LIMIT, || {
        one_winner("stream-race", Type::STREAM, stream_server, |path| {
            StdUnixStream::connect(path).map(drop)
        });
    });
}

/// Item 7c, datagram: the same for datagram endpoints.
#[test]
fn datagram_endpoints_binding_one_path_at_once_have_one_winner() {
    watchdog(LIMIT, || {
        one_winner("dgram-race", Type::DGRAM, datagram_endpoint, |path| {
            StdUnixDatagram::unbound()?.send_to(b"x", path).map(drop)
        });
    });
}

/// Item 8: a live server whose backlog is full (connections nobody accepts) makes a bind
/// over its path fail with AddrInUse at once, instead of blocking in the stale-file check.
#[test]
fn a_bind_over_a_live_server_with_a_full_backlog_fails_at_once() {
    let dir = TempDir::new("backlog");
    let path = dir.path("busy.sock");
    let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    listener.bind(&SockAddr::unix(&path).unwrap()).unwrap();
    listener.listen(1).unwrap();
    // Connect until the kernel refuses with EAGAIN: the backlog is full.
    let mut queued = Vec::new();
    let full = (0..64).any(|_| {
        let client = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        client.set_nonblocking(true).unwrap();
        match client.connect(&SockAddr::unix(&path).unwrap()) {
            Ok(()) => {
                queued.push(client);
                false
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => true,
            Err(e) => panic!("filling the backlog: {e}"),
        }
    });
    assert!(full, "the backlog never filled ({} queued)", queued.len());

    let at = path.clone();
    watchdog(Duration::from_secs(20), move || {
        assert_eq!(kind_of(&stream_server(&at)), Some(ErrorKind::AddrInUse));
        let builder = UnixServer::builder().backlog(8);
        let refused = builder.bind(at.as_path(), |_| Ok((RawCodec, Sink)));
        assert_eq!(kind_of(&refused), Some(ErrorKind::AddrInUse));
    });
    assert!(path.exists(), "the live server's file stays");
    drop(queued);
    drop(listener);
}

/// Abstract names have no file: binding one twice fails in the kernel, and nothing appears
/// on disk.
#[test]
fn abstract_names_have_no_file() {
    watchdog(LIMIT, || {
        let name = format!("getty-files-abstract-{}", std::process::id());
        let first = UnixDatagramEndpoint::builder()
            .bind(UnixAddr::abstract_name(&name), |_| Ok((RawCodec, Sink)))
            .unwrap();
        let again = UnixDatagramEndpoint::builder()
            .bind(UnixAddr::abstract_name(&name), |_| Ok((RawCodec, Sink)));
        assert_eq!(kind_of(&again), Some(ErrorKind::AddrInUse));
        drop(first);
        let server =
            UnixServer::bind(UnixAddr::abstract_name(&name), |_| Ok((RawCodec, Sink))).unwrap();
        assert_eq!(server.local_addr(), UnixAddr::abstract_name(&name));
    });
}
