//! The socket files of unix servers and datagram endpoints: binding a path (taking over a
//! stale file an earlier run left, never a live socket's) and removing only our own file.
//!
//! **Live or stale.** A file at the path is live if a socket is bound to it: a
//! non-blocking `connect` of a socket of the same type succeeds, or fails with `EAGAIN`
//! (a stream listener whose backlog is full) or `EPROTOTYPE` (a live socket of the other
//! type). Only `ECONNREFUSED` means stale. The probe never waits, so a bind cannot hang on
//! a busy server; a live stream server sees the probe as a connection that closes at once.
//!
//! **Takeover.** We bind the path; only if that fails with `EADDRINUSE` (and takeover is
//! on) do we look: not a socket, or live, fails the bind; stale is removed, but only if
//! the path still names the very file (device and inode) that was probed, and the bind is
//! retried once (a second `EADDRINUSE` means someone else took the path meanwhile).
//!
//! Binders in this crate serialize on an advisory `flock` of the parent directory, held
//! from the first bind through `listen`: without it, a stream socket bound but not yet
//! listening looks stale to a second server starting at once, which would remove it and
//! bind too (two "servers", one of them unreachable). Under the lock, a file is live by the
//! time anyone else probes it. Binding to a temporary name and renaming it over the path
//! does not close the race: `rename` replaces whatever is there, a live server's file
//! included, and the socket's own name (what `getsockname`, `ss` and every datagram's
//! source address show) would stay the temporary one.
//!
//! What remains, against programs that do not take the lock (or where it cannot be had: a
//! directory we cannot open, a file system without `flock`, a lock held for over a
//! second), is a window of a few system calls: their stream socket between its `bind` and
//! its `listen` looks stale, and a file they put at the path between our second `lstat`
//! and our `unlink` would be removed. There is no "unlink if this inode" system call to
//! close the latter.
//!
//! **Removal.** [`SocketFile`] records the file's device and inode at bind and removes the
//! path only if it still names that file, so a server that lost its path (removed by hand,
//! then bound by another server) leaves the newer server's file alone. Its owner drops it
//! before the socket closes, so while the file is removed it is still live and no binder
//! here takes it over in between.
//!
//! Abstract names (Linux) have no file: they are bound as they are.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::UnixAddr;

/// The longest a bind waits for another binder's directory lock before going on without it
/// (the lock is held for a few system calls, so this only matters if a process stopped
/// while holding it).
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// The socket file a server or endpoint created; dropping it removes the path if (and only
/// if) the path still names that file. Drop it before closing the socket.
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                if let Err(e) = fs::remove_file(&self.path) {
                    log::debug!("removing {}: {e}", self.path.display());
                }
            }
            Ok(_) => log::debug!(
                "{} is no longer this socket's file: left in place",
                self.path.display()
            ),
            Err(e) => log::debug!("{}: {e}", self.path.display()),
        }
    }
}

/// Binds `socket` (of type `kind`) to `addr`. A socket file at the path that nothing is
/// bound to is removed first if `take_over_stale`; a live socket's file (or a file that is
/// not a socket) fails the bind. `then` runs right after the bind, before any other binder
/// here may look at the path (the stream side listens in it). Returns the file to remove
/// when the socket goes (`None` for an abstract name).
pub(crate) fn bind(
    socket: &Socket,
    addr: &UnixAddr,
    kind: Type,
    take_over_stale: bool,
    then: impl FnOnce(&Socket) -> io::Result<()>,
) -> io::Result<Option<SocketFile>> {
    let sockaddr = addr.to_sockaddr()?;
    let Some(path) = addr.as_path() else {
        socket.bind(&sockaddr)?;
        then(socket)?;
        return Ok(None);
    };
    let _lock = DirLock::acquire(path);
    match socket.bind(&sockaddr) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && take_over_stale => {
            take_over(path, kind)?;
            // Once: a second EADDRINUSE means another socket has the path now.
            socket.bind(&sockaddr).map_err(|e| in_use(path, e))?;
        }
        Err(e) => return Err(in_use(path, e)),
    }
    let meta = fs::symlink_metadata(path)?;
    let file = SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    then(socket)?; // on failure, `file` goes and takes the path with it
    Ok(Some(file))
}

/// Gives an `EADDRINUSE` the path it is about; other errors pass through.
fn in_use(path: &Path, e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::AddrInUse {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use: {e}", path.display()),
        )
    } else {
        e
    }
}

/// Removes the file at `path` if it is a stale socket file (and still the one probed).
/// `Ok` means: try the bind again.
fn take_over(path: &Path, kind: Type) -> io::Result<()> {
    let probed = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !probed.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    match probe(path, kind)? {
        Found::Gone => return Ok(()),
        Found::Live => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("a socket is bound to {}", path.display()),
            ))
        }
        Found::Stale => {}
    }
    match fs::symlink_metadata(path) {
        Ok(now) if now.dev() == probed.dev() && now.ino() == probed.ino() => {
            log::info!("removing the stale socket file {}", path.display());
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        // Replaced since the probe: not ours to remove; the retried bind tells.
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What a probe found at a socket file.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// A socket is bound to it.
    Live,
    /// Nothing is bound to it.
    Stale,
    /// The file went away.
    Gone,
}

/// Connects a non-blocking socket of type `kind` to `path` to tell a live socket from a
/// stale file, without ever waiting.
fn probe(path: &Path, kind: Type) -> io::Result<Found> {
    let socket = Socket::new(Domain::UNIX, kind, None)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::unix(path)?) {
        Ok(()) => Ok(Found::Live),
        Err(e) => match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Ok(Found::Stale),
            Some(libc::ENOENT) => Ok(Found::Gone),
            // A full backlog (the connect did not start), or a live socket of another type.
            Some(code)
                if code == libc::EAGAIN
                    || code == libc::EWOULDBLOCK
                    || code == libc::EINPROGRESS
                    || code == libc::EPROTOTYPE =>
            {
                Ok(Found::Live)
            }
            _ => Err(e),
        },
    }
}

/// An exclusive `flock` on the directory of a socket path, released when dropped.
struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock, waiting at most [`LOCK_WAIT`]; `None` (go on without it) if the
    /// directory cannot be opened or locked.
    fn acquire(path: &Path) -> Option<DirLock> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let file = match File::open(dir) {
            Ok(file) => file,
            Err(e) => {
                log::debug!("cannot open {} to lock it: {e}", dir.display());
                return None;
            }
        };
        let deadline = Instant::now() + LOCK_WAIT;
        let mut pause = Duration::from_micros(50);
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Some(DirLock { _file: file });
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EWOULDBLOCK) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Some(libc::EWOULDBLOCK) => {
                    log::warn!(
                        "{} stayed locked for {LOCK_WAIT:?}: binding without the lock",
                        dir.display()
                    );
                    return None;
                }
                _ => {
                    log::debug!("cannot lock {}: {e}", dir.display());
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("getty-socket-file-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn the_probe_tells_live_from_stale_and_gone() {
        let dir = temp_dir("probe");
        let path = dir.join("s.sock");
        assert_eq!(probe(&path, Type::STREAM).unwrap(), Found::Gone);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(probe(&path, Type::STREAM).unwrap(), Found::Live);
        assert_eq!(probe(&path, Type::DGRAM).unwrap(), Found::Live);
        drop(listener);
        assert_eq!(probe(&path, Type::STREAM).unwrap(), Found::Stale);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_directory_lock_excludes_a_second_binder() {
        let dir = temp_dir("lock");
        let path = dir.join("s.sock");
        let held = DirLock::acquire(&path).expect("a temp directory can be locked");
        let other = File::open(&dir).unwrap();
        // SAFETY: flock on a descriptor we own.
        let r = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(r, -1, "a second lock on the directory was granted");
        drop(held);
        // SAFETY: as above.
        let r = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(r, 0, "the lock was not released");
        let _ = fs::remove_dir_all(&dir);
    }
}
