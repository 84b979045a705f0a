//! Stopping from the inside and from the outside: a handler that stops its reactor, a
//! handler that closes the client its session belongs to, and SIGINT / SIGTERM shutting
//! reactors down gracefully (then at once, on a second signal).
//!
//! The signal tests raise real signals in this process, so they live in this binary of
//! their own and take `SIGNALS` one at a time (every reactor that watches hears every
//! signal). The other tests here register no handler and never notice: a signal raised
//! while a reactor watches goes to signal-hook's handler, not to its default action.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, LengthFieldCodec, RawCodec};
use getty::reactor::{Context, Entry, Ready, Status};
use getty::tcp::{TcpClient, TcpServer};
use getty::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
use getty::{Handler, Reactor, ReactorPool, Session};

/// Long enough never to be what ends a test's graceful shutdown: the shutdown must end
/// because every session did.
const LONG_GRACE: Duration = Duration::from_secs(600);

/// One signal test at a time: a signal reaches every reactor of the process that watches.
static SIGNALS: Mutex<()> = Mutex::new(());

fn signal_gate() -> std::sync::MutexGuard<'static, ()> {
    SIGNALS.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Sends `signal` to this process. It is delivered to the calling thread before `raise`
/// returns, so the reactors' pipes hold it by then.
fn raise(signal: libc::c_int) {
    // SAFETY: `raise` has no memory-safety preconditions. Every caller but the child of
    // the failed-watch test has a reactor watching this signal, so signal-hook's handler
    // takes it, not the default action; that child raises it to be ended.
    let rc = unsafe { libc::raise(signal) };
    assert_eq!(rc, 0, "raise({signal}) failed");
}

/// The probe's events plus, for "stop", a graceful shutdown of its own reactor, and for
/// every message whether `close_client` found a client (a note).
struct Stopper {
    probe: Probe,
}

impl Handler<LengthFieldCodec> for Stopper {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        self.probe.on_open(s)
    }

    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let closed_a_client = s.close_client();
        let _ = self.probe.tx.send(Ev::Note {
            sid: s.id(),
            what: format!("close_client: {closed_a_client}"),
        });
        if &msg[..] == b"stop" {
            let reactor = s.reactor().expect("a callback has a reactor");
            reactor
                .shutdown_graceful(LONG_GRACE)
                .expect("the reactor runs");
        }
        self.probe.on_message(s, msg);
    }

    fn on_close(&mut self, s: &mut Session<LengthFieldCodec>) {
        self.probe.on_close(s);
    }
}

/// An echo server on loopback on its own reactor, whose sessions report through a
/// `Probe` that `wrap` puts in its handler; returns it with its address.
fn echo_server<H>(name: &str, tx: &Sender<Ev>, wrap: fn(Probe) -> H) -> (Running, SocketAddr)
where
    H: Handler<LengthFieldCodec> + 'static,
{
    let tx = tx.clone();
    let server = TcpServer::bind("127.0.0.1:0", move |_| {
        Ok((LengthFieldCodec::default(), wrap(Probe::echo(&tx))))
    })
    .unwrap();
    let addr = server.local_addr();
    (Running::serve(name, server), addr)
}

/// A handler stops its own reactor: the reactor drains (the other session is closed
/// gracefully, with a FIN) and its thread ends, with no one outside asking. Before
/// `Session::reactor` a handler had to know `getty_reactor::current()`, named only in
/// ARCHITECTURE.md.
#[test]
fn a_handler_stops_its_own_reactor_gracefully() {
    watchdog(Duration::from_secs(60), || {
        let (tx, mut events) = Events::new();
        let (running, addr) = echo_server("stopped-by-handler", &tx, |probe| Stopper { probe });

        let mut bystander = connect(addr);
        echo_roundtrip(&mut bystander, b"still here");
        let mut admin = connect(addr);
        admin.write_all(&frame(b"stop")).unwrap();

        // The bystander's session is closed gracefully: a FIN, after nothing more.
        assert_eq!(expect_closed(&mut bystander), Ended::Eof);
        drop(bystander);
        // The admin's echo of "stop" was queued before the shutdown began: it is flushed.
        assert_eq!(read_frame(&mut admin), b"stop");
        assert_eq!(expect_closed(&mut admin), Ended::Eof);
        drop(admin);
        running.join(STEP);

        assert_eq!(events.count(|e| matches!(e, Ev::Close { .. })), 2);
        let notes =
            events.count(|e| matches!(e, Ev::Note { what, .. } if what == "close_client: false"));
        assert_eq!(notes, 2, "a server's session has no client to close");
        events.check_contract();
    });
}

/// The same from a datagram handler: "quit" stops the endpoint's reactor, whose `on_close`
/// then runs.
#[test]
fn a_datagram_handler_stops_its_own_reactor() {
    struct Control {
        tx: Sender<Ev>,
    }
    impl DatagramHandler<RawCodec> for Control {
        fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, _: SocketAddr) {
            if &msg[..] == b"quit" {
                let reactor = s.reactor().expect("a callback has a reactor");
                reactor
                    .shutdown_graceful(LONG_GRACE)
                    .expect("the reactor runs");
            }
        }
        fn on_close(&mut self, s: &mut DatagramSession<RawCodec>) {
            let _ = self.tx.send(Ev::Close { sid: s.id() });
        }
    }
    watchdog(Duration::from_secs(60), || {
        let (tx, mut events) = Events::new();
        let endpoint = UdpEndpoint::bind("127.0.0.1:0", move |_| {
            Ok((RawCodec, Control { tx: tx.clone() }))
        })
        .unwrap();
        let addr = endpoint.local_addr();
        let running = Running::serve("udp-stopped-by-handler", endpoint);
        let peer = udp_socket();
        peer.send_to(b"quit", addr).unwrap();
        running.join(STEP);
        assert_eq!(events.count(|e| matches!(e, Ev::Close { .. })), 1);
    });
}

/// A std listener standing in for a server: accepts `n` connections (bounded in time).
fn accept_n(listener: &TcpListener, n: usize) -> Vec<TcpStream> {
    let deadline = Instant::now() + STEP;
    listener.set_nonblocking(true).unwrap();
    let mut accepted = Vec::new();
    while accepted.len() < n {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(STEP)).unwrap();
                accepted.push(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "only {} of {n} connections came",
                    accepted.len()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    accepted
}

/// Connections that arrive within `wait` (none, when the client is gone).
fn late_connections(listener: &TcpListener, wait: Duration) -> usize {
    let deadline = Instant::now() + wait;
    let mut late = 0;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok(_) => late += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    late
}

/// A client of `listener` on its own reactor, keeping `sessions` sessions and redialling
/// within 5 to 10 ms; its sessions report through a silent `Probe` that `wrap` puts in
/// their handler. Returns it with the connections the listener accepted from it.
fn client_of<H>(
    name: &str,
    listener: &TcpListener,
    sessions: usize,
    tx: &Sender<Ev>,
    wrap: fn(Probe) -> H,
) -> (Running, Vec<TcpStream>)
where
    H: Handler<LengthFieldCodec> + 'static,
{
    let tx = tx.clone();
    let client = TcpClient::builder()
        .connection_number(sessions)
        .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
        .build(listener.local_addr().unwrap(), move |_| {
            Ok((LengthFieldCodec::default(), wrap(Probe::silent(&tx))))
        })
        .unwrap();
    let running = Running::serve(name, client);
    (running, accept_n(listener, sessions))
}

/// One session's handler closes its client: every session of the client closes (a FIN on
/// each connection, `on_close` for each), the client leaves its reactor, and nothing is
/// redialled. Before `Session::close_client` a handler could only close its own session,
/// which the client replaced at once.
#[test]
fn a_handler_closes_its_client_and_nothing_is_redialled() {
    watchdog(Duration::from_secs(60), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (tx, mut events) = Events::new();
        let (running, mut peers) =
            client_of("close-client", &listener, 3, &tx, |probe| Stopper { probe });
        events.wait_n("on_open of the 3 sessions", 3, |e| {
            matches!(e, Ev::Open { .. })
        });

        // Any message makes the handler close its client; one session hears one.
        peers[1].write_all(&frame(b"bye")).unwrap();
        for peer in &mut peers {
            assert_eq!(expect_closed(peer), Ended::Eof, "closed gracefully");
        }
        drop(peers); // the sessions stop lingering
        events.wait_n("on_close of the 3 sessions", 3, |e| {
            matches!(e, Ev::Close { .. })
        });
        running.wait_until_empty("the client is still on its reactor");
        // With a 5 ms backoff, a client still there would have redialled by now.
        assert_eq!(late_connections(&listener, Duration::from_millis(300)), 0);
        running.stop();

        let closing =
            events.count(|e| matches!(e, Ev::Note { what, .. } if what == "close_client: true"));
        assert_eq!(closing, 1, "the session that heard 'bye' found its client");
        assert_eq!(
            events.count(|e| matches!(e, Ev::Open { .. })),
            3,
            "no new session"
        );
        events.check_contract();
    });
}

/// What `Session::close` on a client's session means: that one session ends and the
/// client, which keeps `connection_number` sessions, dials a new one (whose `on_open`
/// runs). The docs say so; this holds them to it.
#[test]
fn closing_one_session_of_a_client_redials_it() {
    struct CloseOne {
        probe: Probe,
    }
    impl Handler<LengthFieldCodec> for CloseOne {
        fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
            self.probe.on_open(s)
        }
        fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, _: Bytes) {
            s.close();
        }
        fn on_close(&mut self, s: &mut Session<LengthFieldCodec>) {
            self.probe.on_close(s);
        }
    }
    watchdog(Duration::from_secs(60), || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (tx, mut events) = Events::new();
        let (running, mut peers) =
            client_of("close-one", &listener, 2, &tx, |probe| CloseOne { probe });
        peers[0].write_all(&frame(b"close this one")).unwrap();
        assert_eq!(expect_closed(&mut peers[0]), Ended::Eof);
        drop(peers.remove(0));
        // The client replaces it; the other session is untouched.
        let replacement = accept_n(&listener, 1);
        events.wait_n("on_open of the replacement", 3, |e| {
            matches!(e, Ev::Open { .. })
        });
        assert_eq!(events.count(|e| matches!(e, Ev::Close { .. })), 1);
        running.stop();
        drop((peers, replacement));
        events.check_contract();
    });
}

/// SIGTERM shuts a reactor down gracefully: its session is closed with a FIN after what
/// was queued, `on_close` runs, and the reactor stops as soon as the session has ended
/// (long before its grace), saying which signal stopped it.
#[test]
fn sigterm_shuts_a_reactor_down_gracefully() {
    let _one_at_a_time = signal_gate();
    watchdog(Duration::from_secs(60), || {
        let (tx, mut events) = Events::new();
        let (running, addr) = echo_server("sigterm", &tx, |probe| probe);
        running
            .handle()
            .shutdown_on_signals(LONG_GRACE)
            .expect("watch for signals");
        let handle = running.handle().clone();
        let mut peer = connect(addr);
        echo_roundtrip(&mut peer, b"before the signal");

        raise(libc::SIGTERM);
        assert_eq!(expect_closed(&mut peer), Ended::Eof, "closed gracefully");
        drop(peer);
        running.join(STEP);

        let how = handle.signal_shutdown().expect("a signal stopped it");
        assert_eq!(
            (how.signal(), how.name(), how.forced()),
            (libc::SIGTERM, "SIGTERM", false)
        );
        assert_eq!(events.count(|e| matches!(e, Ev::Close { .. })), 1);
        events.check_contract();
    });
}

/// Stays through a graceful shutdown (until its deadline), telling the test it drains.
struct Stubborn {
    draining: Sender<()>,
}

impl Entry for Stubborn {
    type Command = getty::reactor::NoCommand;

    fn on_start(&mut self, _: &mut Context<'_>) -> Status {
        Status::Continue
    }
    fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
        Status::Continue
    }
    fn on_shutdown(&mut self, _: &mut Context<'_>, deadline: Option<Instant>) -> Status {
        if deadline.is_some() {
            let _ = self.draining.send(());
            return Status::Continue;
        }
        Status::Done
    }
}

/// Every reactor of a pool hears the signal and drains; a second signal stops them all
/// at once, though an entry would have kept them draining for the whole grace.
#[test]
fn a_second_signal_stops_every_reactor_of_a_pool_at_once() {
    let _one_at_a_time = signal_gate();
    watchdog(Duration::from_secs(60), || {
        let (draining_tx, draining) = mpsc::channel();
        let draining_tx = Mutex::new(draining_tx);
        let pool = ReactorPool::start(2, move |_, reactor| {
            let draining = draining_tx.lock().unwrap().clone();
            reactor.spawn(Stubborn { draining });
            Ok(())
        })
        .unwrap();
        pool.shutdown_on_signals(LONG_GRACE)
            .expect("watch for signals");
        let handles = pool.handles();

        raise(libc::SIGINT);
        for _ in 0..2 {
            draining.recv_timeout(STEP).expect("both reactors drain");
        }
        assert!(
            handles.iter().all(|h| !h.is_stopped()),
            "the grace holds them"
        );
        raise(libc::SIGTERM);
        let (joined_tx, joined) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = joined_tx.send(pool.join());
        });
        joined
            .recv_timeout(STEP)
            .expect("the second signal stopped them")
            .unwrap();

        for handle in &handles {
            let how = handle.signal_shutdown().expect("a signal stopped it");
            assert_eq!((how.name(), how.forced()), ("SIGINT", true));
        }
    });
}

/// A reactor that watches stops watching when it stops: the next reactor to watch is the
/// only one told (a stopped one is not "stopped again"), and a reactor that never watched
/// never hears a signal.
#[test]
fn only_reactors_that_watch_hear_signals() {
    let _one_at_a_time = signal_gate();
    watchdog(Duration::from_secs(60), || {
        let mut first = Reactor::new().unwrap();
        first.shutdown_on_signals(LONG_GRACE).unwrap();
        let first_handle = first.handle();
        raise(libc::SIGINT);
        first.run().unwrap();
        assert!(first_handle.signal_shutdown().is_some());

        let bystander = Running::serve(
            "not-watching",
            Stubborn {
                draining: mpsc::channel().0,
            },
        );
        let second = Reactor::start_thread("watching", |_| Ok(())).unwrap();
        second.handle().shutdown_on_signals(LONG_GRACE).unwrap();
        let second_handle = second.handle().clone();
        raise(libc::SIGTERM);
        second.join().unwrap();

        let how = second_handle
            .signal_shutdown()
            .expect("a signal stopped it");
        assert_eq!((how.name(), how.forced()), ("SIGTERM", false));
        let first_how = first_handle.signal_shutdown().unwrap();
        assert_eq!((first_how.name(), first_how.forced()), ("SIGINT", false));
        assert!(bystander.handle().signal_shutdown().is_none());
        assert_eq!(bystander.entry_count(), 1, "the bystander runs on");
        bystander.stop();
    });
}

/// The same for a UDP client: a session's handler closes its client, every session of it
/// hears `on_close`, and the client leaves its reactor instead of redialling.
#[test]
fn a_udp_handler_closes_its_client() {
    use getty::udp::UdpClient;

    /// Reports its life; closes its client on any datagram.
    struct UdpStopper(std::sync::mpsc::Sender<String>);
    impl DatagramHandler<RawCodec> for UdpStopper {
        fn on_open(&mut self, _: &mut DatagramSession<RawCodec>) -> std::io::Result<()> {
            let _ = self.0.send("open".into());
            Ok(())
        }
        fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, _: Bytes, _: SocketAddr) {
            let _ = self.0.send(format!("close_client: {}", s.close_client()));
        }
        fn on_close(&mut self, _: &mut DatagramSession<RawCodec>) {
            let _ = self.0.send("close".into());
        }
    }

    watchdog(Duration::from_secs(60), || {
        let peer = udp_socket();
        let (tx, rx) = std::sync::mpsc::channel();
        let client = UdpClient::builder()
            .connection_number(2)
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(10))
            .build(peer.local_addr().unwrap(), move |_| {
                Ok((RawCodec, UdpStopper(tx.clone())))
            })
            .unwrap();
        let running = Running::serve("close-udp-client", client);
        let next = || rx.recv_timeout(STEP).expect("an event");
        assert_eq!((next(), next()), ("open".into(), "open".into()));
        // Each session probed the peer from its own socket: answer one of them.
        let mut probe = [0u8; 64];
        let (_, from) = peer.recv_from(&mut probe).unwrap();
        peer.send_to(b"bye", from).unwrap();
        assert_eq!(next(), "close_client: true");
        assert_eq!((next(), next()), ("close".into(), "close".into()));
        running.wait_until_empty("the client is still on its reactor");
        assert!(rx.try_recv().is_err(), "no new session");
        running.stop();
    });
}

/// Set, to the test's name, in the child process a failed-watch test starts.
const FAILED_WATCH_CHILD: &str = "GETTY_STOPPING_FAILED_WATCH_CHILD";

/// A watch that cannot start, because the process is out of descriptors, leaves the process
/// as it found it: with no reactor watching, SIGTERM still ends it. Each case runs in a
/// child process (this test binary, filtered to the test), which the signal is meant to end.
#[test]
fn a_watch_that_fails_to_start_leaves_the_default_action_on() {
    let name = "a_watch_that_fails_to_start_leaves_the_default_action_on";
    expect_sigterm_to_end_the_child(name, || {
        watch_with_no_descriptor_free(&mut Reactor::new().unwrap());
    });
}

/// The same after a watch that came and went: signal-hook's handler is installed for good
/// by then, so it is the emulated default action that must be back.
#[test]
fn a_watch_that_fails_after_one_that_ended_leaves_the_default_action_on() {
    let name = "a_watch_that_fails_after_one_that_ended_leaves_the_default_action_on";
    expect_sigterm_to_end_the_child(name, || {
        let mut first = Reactor::new().unwrap();
        first.shutdown_on_signals(LONG_GRACE).unwrap();
        drop(first);
        watch_with_no_descriptor_free(&mut Reactor::new().unwrap());
    });
}

/// Asks `reactor` to watch while no descriptor is free for its pipe; prints the result.
fn watch_with_no_descriptor_free(reactor: &mut Reactor) {
    let limit = leave_free_descriptors(0);
    let watched = reactor.shutdown_on_signals(LONG_GRACE);
    set_descriptor_limit(limit);
    println!("watch: {watched:?}");
}

/// A pool where one reactor cannot watch: the call fails, and the reactor that did start
/// watching stops again, instead of taking the signal and leaving the process running.
#[test]
fn a_pool_watch_that_fails_halfway_leaves_the_default_action_on() {
    let name = "a_pool_watch_that_fails_halfway_leaves_the_default_action_on";
    expect_sigterm_to_end_the_child(name, || {
        let pool = ReactorPool::start(2, |_, _| Ok(())).unwrap();
        let limit = leave_free_descriptors(2); // one signal pipe (a socket pair), not two
        let watched = pool.shutdown_on_signals(LONG_GRACE);
        set_descriptor_limit(limit);
        println!("watch: {watched:?}");
        std::mem::forget(pool); // its reactors run on while the child raises SIGTERM
    });
}

/// In the child (`FAILED_WATCH_CHILD` names `name`): runs `fail_to_watch`, which prints the
/// failed watch's result, then raises SIGTERM and exits with 0 only if it survived. In the
/// parent: runs that child and checks the watch failed and SIGTERM ended it.
fn expect_sigterm_to_end_the_child(name: &str, fail_to_watch: impl FnOnce()) {
    if std::env::var(FAILED_WATCH_CHILD).as_deref() == Ok(name) {
        fail_to_watch();
        raise(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(200)); // a reactor's shutdown, if any
        println!("survived SIGTERM");
        std::process::exit(0);
    }
    let name = name.to_owned();
    watchdog(Duration::from_secs(60), move || {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &name, "--nocapture", "--test-threads=1"])
            .env(FAILED_WATCH_CHILD, &name)
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("watch: Err"), "{stdout}");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGTERM),
            "the child survived SIGTERM: {stdout}"
        );
    });
}

/// Lowers this process's descriptor limit so that only the `free` lowest free descriptors
/// can still be opened; returns the limit it replaced.
fn leave_free_descriptors(free: usize) -> libc::rlimit {
    use std::os::fd::AsRawFd;
    let probes: Vec<_> = (0..=free)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let limit = probes.last().unwrap().as_raw_fd();
    drop(probes);
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into `old`, a valid rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    set_descriptor_limit(libc::rlimit {
        rlim_cur: limit as libc::rlim_t,
        rlim_max: old.rlim_max,
    });
    old
}

fn set_descriptor_limit(limit: libc::rlimit) {
    // SAFETY: setrlimit reads `limit`, a valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}
