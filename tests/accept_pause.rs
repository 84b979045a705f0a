//! When accept fails for lack of file descriptors, the listener pauses on a timer instead
//! of spinning, and resumes once descriptors are free again.
//!
//! This test exhausts the process's descriptors, so it lives alone in its own test binary
//! (a test binary is one process; other test files are other processes).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{frame, read_frame, watchdog, Running, STEP};
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{Handler, Metrics, Session};

struct CountingEcho(Arc<AtomicUsize>);

impl Handler<LengthFieldCodec> for CountingEcho {
    fn on_open(&mut self, _: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = s.write(msg);
    }
}

/// Descriptors duplicated until the process hits its limit; closed on drop.
struct Exhausted(Vec<libc::c_int>);

impl Exhausted {
    fn now() -> Exhausted {
        let mut fds = Vec::new();
        loop {
            // SAFETY: dup of stdin's descriptor number; each result is closed on drop.
            let fd = unsafe { libc::dup(0) };
            if fd < 0 {
                let err = std::io::Error::last_os_error();
                assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "dup failed: {err}");
                return Exhausted(fds);
            }
            fds.push(fd);
            assert!(fds.len() < 100_000, "no descriptor limit in sight");
        }
    }
}

impl Drop for Exhausted {
    fn drop(&mut self) {
        for fd in self.0.drain(..) {
            // SAFETY: closing descriptors this struct opened.
            unsafe { libc::close(fd) };
        }
    }
}

/// Lowers the soft descriptor limit (so exhausting it is quick) and restores it on drop.
struct Limit(libc::rlimit);

impl Limit {
    fn lower_to(soft: u64) -> Limit {
        // SAFETY: getrlimit/setrlimit on local structs.
        unsafe {
            let mut old: libc::rlimit = std::mem::zeroed();
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
            let mut new = old;
            new.rlim_cur = soft.min(old.rlim_max as u64) as libc::rlim_t;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &new), 0);
            Limit(old)
        }
    }
}

impl Drop for Limit {
    fn drop(&mut self) {
        // SAFETY: restores the limit read at construction.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
    }
}

fn connect_prepared(socket: socket2::Socket, addr: SocketAddr) -> std::net::TcpStream {
    socket
        .connect(&addr.into())
        .expect("the kernel completes the handshake");
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream
}

#[test]
fn out_of_descriptors_pauses_accepting_without_spinning_then_resumes() {
    watchdog(Duration::from_secs(60), || {
        let opened = Arc::new(AtomicUsize::new(0));
        let opened_in = opened.clone();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), CountingEcho(opened_in.clone())))
        })
        .unwrap();
        let addr = server.local_addr();
        let reactor = Running::serve("emfile", server);

        // The client's socket must exist before descriptors run out; connecting needs none.
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        let _limit = Limit::lower_to(512);
        let exhausted = Exhausted::now();
        let turns_before = Metrics::of(reactor.handle()).unwrap().reactor.turns;
        let mut client = connect_prepared(socket, addr);

        // The connection waits in the backlog; accept fails with EMFILE and pauses.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            opened.load(Ordering::SeqCst),
            0,
            "accepted without a descriptor?"
        );
        let turns = Metrics::of(reactor.handle()).unwrap().reactor.turns - turns_before;
        // Pauses double from 10 ms to 1 s: about seven retries in half a second. A spinning
        // listener would turn the loop hundreds of thousands of times.
        assert!(
            turns < 100,
            "the loop turned {turns} times while out of descriptors"
        );

        drop(exhausted);
        let deadline = Instant::now() + STEP;
        while opened.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "accepting never resumed");
            std::thread::sleep(Duration::from_millis(10));
        }
        client.write_all(&frame(b"back")).unwrap();
        assert_eq!(read_frame(&mut client), b"back");
        reactor.stop();
    });
}
