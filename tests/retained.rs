//! What retained small messages cost: a handler that keeps 10,000 messages of 50 bytes (a
//! cache, a chat history, datagrams) must hold about their size, not a read buffer each.
//! Each message arrives in a read of its own (the peer waits for an ack before the next), so
//! a message that were a view of its read buffer would pin a whole pooled buffer.
//!
//! Memory is measured as the growth of this process's resident set (`VmRSS`) while the
//! messages are kept; the two tests take the exclusive gate so they do not overlap.
#![cfg(target_os = "linux")]

mod common;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use getty::codec::{Bytes, LengthFieldCodec, RawCodec};
use getty::tcp::TcpServer;
use getty::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
use getty::{Handler, Session};

const TEST_LIMIT: Duration = Duration::from_secs(180);
const MESSAGES: usize = 10_000;
const SIZE: usize = 50;
/// 10,000 × 50 bytes kept, with the handler's vector and allocator overhead, is about
/// 1 MiB; as views of 64 KiB read buffers they hold at least a page each (about 40 MiB).
const BUDGET: usize = 4 << 20;

fn payload(i: usize) -> Vec<u8> {
    let mut p = vec![(i % 251) as u8; SIZE];
    p[..8].copy_from_slice(&(i as u64).to_be_bytes());
    p
}

/// Keeps every message and acknowledges it with one byte.
struct Keeper {
    kept: Vec<Bytes>,
    count: Arc<AtomicUsize>,
}

impl Handler<LengthFieldCodec> for Keeper {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        assert_eq!(msg.len(), SIZE);
        self.kept.push(msg);
        self.count.store(self.kept.len(), Ordering::Relaxed);
        s.write(Bytes::from_static(b"k")).unwrap();
    }
}

#[test]
fn retained_small_tcp_messages_cost_their_size() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let count = Arc::new(AtomicUsize::new(0));
        let server = {
            let count = count.clone();
            TcpServer::bind("127.0.0.1:0", move |_| {
                Ok((
                    LengthFieldCodec::default(),
                    Keeper {
                        kept: Vec::with_capacity(MESSAGES + 100),
                        count: count.clone(),
                    },
                ))
            })
            .unwrap()
        };
        let addr = server.local_addr();
        let running = Running::serve("retained-tcp", server);
        let mut peer = connect(addr);
        let mut send = |i: usize| {
            peer.write_all(&frame(&payload(i))).unwrap();
            assert_eq!(read_frame(&mut peer), b"k");
        };
        // Warm up (the pool, the session, the allocator), then measure.
        for i in 0..100 {
            send(i);
        }
        let before = resident_bytes();
        for i in 100..100 + MESSAGES {
            send(i);
        }
        let grown = resident_bytes().saturating_sub(before);
        assert_eq!(count.load(Ordering::Relaxed), MESSAGES + 100);
        eprintln!(
            "tcp: {MESSAGES} retained {SIZE}-byte messages grew RSS by {} KiB",
            grown / 1024
        );
        assert!(
            grown < BUDGET,
            "{MESSAGES} retained {SIZE}-byte messages grew RSS by {} KiB",
            grown / 1024
        );
        drop(peer);
        running.stop();
    });
}

/// Keeps every datagram and acknowledges it with one byte.
struct DatagramKeeper {
    kept: Vec<Bytes>,
    count: Arc<AtomicUsize>,
}

impl DatagramHandler<RawCodec> for DatagramKeeper {
    fn on_message(&mut self, s: &mut DatagramSession<RawCodec>, msg: Bytes, peer: SocketAddr) {
        assert_eq!(msg.len(), SIZE);
        self.kept.push(msg);
        self.count.store(self.kept.len(), Ordering::Relaxed);
        s.write_to(peer, Bytes::from_static(b"k")).unwrap();
    }
}

#[test]
fn retained_small_datagrams_cost_their_size() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let count = Arc::new(AtomicUsize::new(0));
        let endpoint = {
            let count = count.clone();
            UdpEndpoint::bind("127.0.0.1:0", move |_| {
                Ok((
                    RawCodec,
                    DatagramKeeper {
                        kept: Vec::with_capacity(2 * MESSAGES),
                        count: count.clone(),
                    },
                ))
            })
            .unwrap()
        };
        let addr = endpoint.local_addr();
        let running = Running::serve("retained-udp", endpoint);
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut resent = 0;
        let mut send = |i: usize| {
            let mut ack = [0u8; 16];
            for _ in 0..10 {
                peer.send_to(&payload(i), addr).unwrap();
                match peer.recv(&mut ack) {
                    Ok(1) if ack[0] == b'k' => return,
                    Ok(n) => panic!("unexpected {n}-byte reply"),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        resent += 1; // lost on loopback: rare, send it again
                    }
                    Err(e) => panic!("waiting for an ack: {e}"),
                }
            }
            panic!("datagram {i} was never acknowledged");
        };
        for i in 0..100 {
            send(i);
        }
        let before = resident_bytes();
        for i in 100..100 + MESSAGES {
            send(i);
        }
        let grown = resident_bytes().saturating_sub(before);
        assert!(count.load(Ordering::Relaxed) >= MESSAGES + 100);
        eprintln!(
            "udp: {MESSAGES} retained {SIZE}-byte datagrams grew RSS by {} KiB ({resent} resent)",
            grown / 1024
        );
        assert!(
            grown < BUDGET,
            "{MESSAGES} retained {SIZE}-byte datagrams grew RSS by {} KiB",
            grown / 1024
        );
        running.stop();
    });
}
