//! `Offload::shutdown` from anywhere (issue 12, item 10): from inside one of the pool's own
//! jobs (with that worker's queue full, and with other workers still busy), and from a
//! reactor callback or a reactor job while a pool job waits on that reactor. Every wait is
//! bounded, and each test runs under a watchdog, so a deadlock fails the test instead of
//! hanging it.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{Error, Handler, Offload, Session};

const LIMIT: Duration = Duration::from_secs(60);

/// A job that calls `shutdown` while its own worker's queue is full: the stop must not wait
/// for room in that queue (only this worker could make room). The queued job still runs,
/// and later submissions are refused.
#[test]
fn shutdown_from_a_job_whose_queue_is_full() {
    watchdog(LIMIT, || {
        let pool = Offload::new(1, 1).unwrap();
        let (returned_tx, returned_rx) = mpsc::channel();
        let inner = pool.clone();
        let (go_tx, queued_rx) = fill_the_only_worker(&pool, move || {
            inner.shutdown();
            returned_tx.send(()).unwrap();
        });
        assert!(
            matches!(pool.submit(0, || {}), Err(Error::Backpressure)),
            "the worker's queue is full"
        );

        go_tx.send(()).unwrap();
        returned_rx
            .recv_timeout(STEP)
            .expect("shutdown from a job with a full queue returned");
        queued_rx
            .recv_timeout(STEP)
            .expect("the job queued before the shutdown ran");
        assert!(matches!(pool.submit(0, || {}), Err(Error::Closed)));
        pool.shutdown(); // from outside: waits for the worker, and is safe to repeat
    });
}

/// Fills a pool of one worker whose queue holds one job: a first job that has started and
/// waits to be let go on (then runs `then`), and a second job queued behind it. Returns
/// the sender that lets the first job go on, and the receiver the second reports on when
/// it runs.
fn fill_the_only_worker(
    pool: &Offload,
    then: impl FnOnce() + Send + 'static,
) -> (mpsc::Sender<()>, mpsc::Receiver<()>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    pool.submit(0, move || {
        started_tx.send(()).unwrap();
        go_rx
            .recv_timeout(STEP)
            .expect("the test lets the job go on");
        then();
    })
    .unwrap();
    started_rx
        .recv_timeout(STEP)
        .expect("the first job started");
    let (queued_tx, queued_rx) = mpsc::channel();
    pool.submit(0, move || queued_tx.send(()).unwrap()).unwrap();
    (go_tx, queued_rx)
}

/// A job that calls `shutdown` must not try to join its own thread (that panicked inside
/// the job, and the other workers were never waited for): the call returns normally, and a
/// later `shutdown` from an ordinary thread still waits for every worker.
#[test]
fn shutdown_from_a_job_neither_panics_nor_forgets_the_other_workers() {
    watchdog(LIMIT, || {
        let pool = Offload::new(2, 8).unwrap();
        // Key 1 goes to the second worker: it stays busy until released.
        let (busy_tx, busy_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        pool.submit(1, move || {
            busy_tx.send(()).unwrap();
            release_rx.recv_timeout(STEP).expect("released");
            done.store(true, Ordering::SeqCst);
        })
        .unwrap();
        busy_rx
            .recv_timeout(STEP)
            .expect("the second worker is busy");

        // Key 0 goes to the first worker: its job shuts the pool down.
        let (outcome_tx, outcome_rx) = mpsc::channel();
        let inner = pool.clone();
        pool.submit(0, move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| inner.shutdown()));
            outcome_tx.send(outcome.is_ok()).unwrap();
        })
        .unwrap();
        let returned_normally = outcome_rx
            .recv_timeout(STEP)
            .expect("shutdown from a job returned");
        assert!(returned_normally, "shutdown from a job panicked");
        assert!(matches!(pool.submit(1, || {}), Err(Error::Closed)));

        // The second worker is released a little later, from another thread; `shutdown`
        // from this thread must wait for it.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let _ = release_tx.send(());
        });
        pool.shutdown();
        assert!(
            finished.load(Ordering::SeqCst),
            "shutdown returned before the busy worker finished its job"
        );
        releaser.join().unwrap();
    });
}

/// Submits a job that queries the reactor, waits until it runs, then shuts the pool down,
/// all inside a callback on the reactor thread; the reply says the callback returned.
struct ShutsDownInCallback {
    pool: Offload,
    answered: mpsc::Sender<bool>,
}

impl Handler<LengthFieldCodec> for ShutsDownInCallback {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let (_, reactor) = getty::reactor::current().expect("inside a callback");
        let (started_tx, started_rx) = mpsc::channel();
        let answered = self.answered.clone();
        self.pool
            .submit(s.id(), move || {
                started_tx.send(()).unwrap();
                // Blocks until the reactor thread runs it.
                let reply = reactor.query(|spawner| spawner.entry_count());
                let _ = answered.send(reply.is_ok());
            })
            .unwrap();
        started_rx
            .recv_timeout(STEP)
            .expect("the job started before the shutdown");
        self.pool.shutdown();
        let _ = s.write(msg);
    }
}

/// `shutdown` in a reactor callback while a job waits for that reactor (a `query`): waiting
/// for the job there would deadlock the reactor and the worker on each other.
#[test]
fn shutdown_in_a_reactor_callback_while_a_job_waits_on_the_reactor() {
    watchdog(LIMIT, || {
        let pool = Offload::new(1, 8).unwrap();
        let (answered_tx, answered_rx) = mpsc::channel();
        let p = pool.clone();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((
                LengthFieldCodec::default(),
                ShutsDownInCallback {
                    pool: p.clone(),
                    answered: answered_tx.clone(),
                },
            ))
        })
        .unwrap();
        let addr = server.local_addr();
        let reactor = Running::serve("offload-shutdown", server);
        let mut client = connect(addr);
        echo_roundtrip(&mut client, b"shut the pool down");
        let answered = answered_rx
            .recv_timeout(STEP)
            .expect("the job's query came back");
        assert!(answered, "the reactor answered the job's query");
        pool.shutdown();
        assert!(matches!(pool.submit(0, || {}), Err(Error::Closed)));
        drop(client);
        reactor.stop();
    });
}

/// The same from a job the reactor runs for another thread (`ReactorHandle::execute`),
/// outside any entry's callback: still a reactor's thread, so `shutdown` must not wait.
#[test]
fn shutdown_in_a_reactor_job_while_a_pool_job_waits_on_the_reactor() {
    watchdog(LIMIT, || {
        let pool = Offload::new(1, 8).unwrap();
        let server = TcpServer::bind("127.0.0.1:0", |_| {
            Ok((LengthFieldCodec::default(), Probe::echo(&Events::new().0)))
        })
        .unwrap();
        let reactor = Running::serve("offload-shutdown-job", server);
        let (answered_tx, answered_rx) = mpsc::channel();
        let (handle, p) = (reactor.handle().clone(), pool.clone());
        let returned = reactor.run_on(move |_| {
            let (started_tx, started_rx) = mpsc::channel();
            p.submit(0, move || {
                started_tx.send(()).unwrap();
                let reply = handle.query(|spawner| spawner.entry_count());
                let _ = answered_tx.send(reply.is_ok());
            })
            .unwrap();
            started_rx
                .recv_timeout(STEP)
                .expect("the pool's job started");
            p.shutdown();
            true
        });
        assert!(returned, "shutdown returned on the reactor's thread");
        let answered = answered_rx.recv_timeout(STEP).expect("the query came back");
        assert!(answered, "the reactor answered the pool job's query");
        pool.shutdown();
        reactor.stop();
    });
}

/// Shuts the pool down when dropped, after letting its blocked worker go on.
struct ShutdownOnDrop {
    pool: Offload,
    release: mpsc::Sender<()>,
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        let _ = self.release.send(());
        self.pool.shutdown();
    }
}

/// A refused job is user code, and dropping it may call back into the pool: here its drop
/// shuts the pool down (which takes the lock `submit` reads the queues under). The job is
/// dropped after that lock is released, so the refusal returns instead of deadlocking.
#[test]
fn a_refused_job_whose_drop_shuts_the_pool_down_does_not_deadlock() {
    watchdog(LIMIT, || {
        let pool = Offload::new(1, 1).unwrap();
        let (release_tx, queued_rx) = fill_the_only_worker(&pool, || {});
        let guard = ShutdownOnDrop {
            pool: pool.clone(),
            release: release_tx,
        };
        let refused = pool.submit(0, move || drop(guard));
        assert!(matches!(refused, Err(Error::Backpressure)), "{refused:?}");
        queued_rx
            .recv_timeout(STEP)
            .expect("the job queued before the shutdown ran");
        assert!(matches!(pool.submit(0, || {}), Err(Error::Closed)));
    });
}
