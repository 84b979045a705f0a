//! Hostile peers of the write path's flow control: queues that cannot drain, readers that
//! are slow but steady, and writers on other threads that heed `Backpressure`. Every test
//! uses real loopback sockets and bounded waits.

mod common;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, RawCodec};
use getty::tcp::TcpServer;
use getty::{Handler, Session, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Queues a banner of `banner` bytes in `on_open` and counts the writability changes it
/// hears (writing nothing more on hearing them).
struct Banner {
    banner: usize,
    changes: Arc<AtomicUsize>,
}

impl Handler<RawCodec> for Banner {
    fn on_open(&mut self, s: &mut Session<RawCodec>) -> io::Result<()> {
        s.write_bytes(vec![b'b'; self.banner])
            .expect("queue the banner");
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<RawCodec>, _: Bytes) {}
    fn on_writability_changed(&mut self, _: &mut Session<RawCodec>, _: bool) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Equal watermarks (which the options allowed) and a queue of exactly that size that
/// cannot drain (a TLS session whose peer has not sent its ClientHello): the writability
/// was reported unwritable and writable in turn, round after round, and the reactor spun
/// a whole core, telling the handler millions of changes, until the handshake timeout.
#[cfg(feature = "tls")]
#[test]
fn a_queue_stuck_at_equal_watermarks_does_not_spin_the_reactor() {
    use getty::tls;
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let config = tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
        let changes = Arc::new(AtomicUsize::new(0));
        let seen = changes.clone();
        const H: usize = 4096;
        let server = TcpServer::builder()
            .session_options(
                SessionOptions::default()
                    .watermarks(H, H)
                    .handshake_timeout(Duration::from_secs(20)),
            )
            .tls(config)
            .bind("127.0.0.1:0", move |_| {
                let changes = seen.clone();
                Ok((RawCodec, Banner { banner: H, changes }))
            })
            .unwrap();
        let addr = server.local_addr();
        let running = Running::serve("equal-marks", server);
        let peer = connect(addr); // says nothing (yet)
        std::thread::sleep(Duration::from_millis(300));
        let cpu_before = cpu_of_thread("equal-marks").expect("the reactor thread");
        let changes_before = changes.load(Ordering::Relaxed);
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        let elapsed = started.elapsed();
        let cpu = cpu_of_thread("equal-marks").expect("the reactor thread") - cpu_before;
        let told = changes.load(Ordering::Relaxed) - changes_before;
        drop(peer);
        running.stop();
        println!("reactor CPU {cpu:?} in {elapsed:?}; {told} writability changes told");
        assert!(told <= 2, "{told} writability changes told in {elapsed:?}");
        assert!(
            cpu < elapsed / 10,
            "the reactor used {cpu:?} in {elapsed:?}"
        );
    });
}
