//! Hostile peers at scale against a stream server: many cheap connections, each stalled
//! part way through a frame, must not make the server hold much more than they sent.
//!
//! The heap is measured with a counting allocator over the whole process, so the tests
//! take turns (`GATE`).
#![cfg(target_os = "linux")]

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use common::{connect, echo_roundtrip, live_bytes, watchdog, CountingAllocator, Running};
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{Handler, Session, SessionOptions};

const LIMIT: Duration = Duration::from_secs(120);

/// Stalled peers per measurement: many, within the test's descriptor limit (two
/// descriptors each, in this one process).
const PEERS: usize = 1000;

/// One test at a time: the allocator counts the whole process.
static GATE: Mutex<()> = Mutex::new(());

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

struct Echo;

impl Handler<LengthFieldCodec> for Echo {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = s.write(msg);
    }
}

fn length_server() -> (Running, SocketAddr) {
    let server = TcpServer::builder()
        .session_options(SessionOptions::default().max_message_len(64 << 20))
        .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("exhaustion", server), addr)
}

/// The heap each of [`PEERS`] peers makes the server hold when it sends a length header
/// that claims `claim` bytes, then `sent` bytes of the body, then stalls.
fn held_per_stalled_peer(claim: u32, sent: usize) -> isize {
    let (server, addr) = length_server();
    let mut bystander = connect(addr);
    echo_roundtrip(&mut bystander, b"warm");
    let mut peers: Vec<TcpStream> = (0..PEERS).map(|_| connect(addr)).collect();
    // Let every session open and settle into what it holds idle.
    std::thread::sleep(Duration::from_millis(300));
    echo_roundtrip(&mut bystander, b"idle");
    let base = live_bytes();
    let mut wire = claim.to_be_bytes().to_vec();
    wire.extend(std::iter::repeat_n(0x5a, sent));
    for peer in &mut peers {
        peer.write_all(&wire).unwrap();
    }
    // Let the server read every peer's bytes, then settle.
    std::thread::sleep(Duration::from_millis(500));
    echo_roundtrip(&mut bystander, b"during");
    let held = (live_bytes() - base) / PEERS as isize;
    println!(
        "{PEERS} peers each claiming {claim} B, sending {sent} B and stalling: the heap \
         grew by {held} B per peer"
    );
    drop(peers);
    echo_roundtrip(&mut bystander, b"after");
    server.stop();
    held
}

/// A partial frame is moved out of its pooled 64 KiB read buffer into one of its own size
/// when it is tiny (at most 256 bytes), "so that thousands of sessions waiting on a few
/// header bytes do not each pin a pooled buffer". A peer that sends a few bytes more gets
/// past that: a stalled session must hold about what its peer sent (at most eight times
/// it, the bound the read path keeps for buffers it grows ahead), not a whole pooled
/// buffer.
#[test]
fn stalled_partial_frames_hold_about_what_their_peers_sent() {
    watchdog(LIMIT, || {
        let _gate = GATE.lock().unwrap_or_else(|p| p.into_inner());
        let tiny = held_per_stalled_peer(1 << 20, 200);
        let small = held_per_stalled_peer(1 << 20, 300);
        let unclaimed = held_per_stalled_peer(1 << 10, 300);
        println!("per peer: {tiny} B for 200 B sent, {small} B for 300 B (claim 1 MiB), {unclaimed} B for 300 B (claim 1 KiB)");
        // What 100 more bytes may cost: eight times them, and some slack for the
        // allocator's rounding.
        let allowed = tiny + 8 * 100 + 512;
        assert!(
            small <= allowed,
            "a peer that sent 300 bytes of a 1 MiB frame holds {small} B of the server's heap \
             (one that sent 200 holds {tiny} B)"
        );
        assert!(
            unclaimed <= allowed,
            "a peer that sent 300 bytes of a 1 KiB frame holds {unclaimed} B of the server's \
             heap (one that sent 200 holds {tiny} B)"
        );
    });
}
