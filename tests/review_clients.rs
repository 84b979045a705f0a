//! A hostile review of the client side: dials, redials, handshakes a client waits for, and
//! many clients on one reactor, each over real loopback sockets.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use getty::codec::LengthFieldCodec;
use getty::tcp::TcpClient;
use getty::tls;

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// A loopback server that accepts every connection and answers it with `reply` (then
/// closes it), until the returned flag is set or 30 s pass; it counts what it accepted.
fn answering_server(reply: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (count, done) = (accepted.clone(), stop.clone());
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(30);
        while !done.load(Ordering::Relaxed) && Instant::now() < until {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    count.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                    let _ = stream.write_all(reply);
                    let mut sink = [0u8; 4096];
                    let _ = stream.read(&mut sink);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    (addr, accepted, stop)
}

/// Waits (at most `limit`) until `running` has no entry left; true if it got there.
fn emptied_within(running: &Running, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while running.entry_count() > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// A TLS client (plain TCP with `.tls(..)`) whose server answers the ClientHello with
/// bytes that are not TLS: every handshake fails. The builder's documentation says a failed
/// handshake "counts as a failed dial", so a client allowed two consecutive failures must
/// give up after two connections. Each handshake failure also reaches the handler once
/// (`on_error`, then `on_close`).
#[test]
fn a_tls_client_whose_handshakes_fail_gives_up_after_its_failure_limit() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (addr, accepted, stop) = answering_server(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let config = tls::client_config(ca.cert.pem().as_bytes()).unwrap();
        let (tx, mut events) = Events::new();
        let client = TcpClient::builder()
            .tls(config, "localhost")
            .reconnect_backoff(Duration::from_millis(5), Duration::from_millis(20))
            .max_consecutive_failures(Some(2))
            .build(addr, move |_| {
                Ok((LengthFieldCodec::default(), Probe::silent(&tx)))
            })
            .unwrap();
        let client = Running::serve("tls-failing-client", client);
        let gave_up = emptied_within(&client, Duration::from_secs(5));
        stop.store(true, Ordering::Relaxed);
        let dials = accepted.load(Ordering::Relaxed);
        client.stop();
        events.pump();
        let errors = events.count(|e| matches!(e, Ev::Error { .. }));
        assert!(
            gave_up,
            "the client never gave up: {dials} connections, {errors} handshake errors"
        );
        assert_eq!(dials, 2, "connections made before giving up");
        assert_eq!(errors, 2, "one on_error per failed handshake");
    });
}
