//! What a queued echo pins. A message of 4 KiB or more is a view of the read buffer it
//! was cut from, and `Session::write` may queue a large payload without copying it
//! (`Encoder::encode_split`): it then keeps that whole read buffer alive until it is
//! written, while the queue's bounds (the watermarks, `max_outbound`) count the message's
//! bytes. So views are queued only while the queue is short (it drains every turn); a queue
//! the socket stopped taking gets copies.
//!
//! A peer that sends one message per read (it paces them) and reads nothing makes each
//! queued view hold a 64 KiB pooled buffer. The tests measure the heap that the whole
//! process holds (a counting allocator) while such peers are held by flow control, against
//! what the sessions say they queued: before the fix, 18x the count for 4 KiB messages and
//! 5.6x for 16 KiB ones. A handler that answers with a 4 KiB slice of a larger message (a
//! header, a preview) pinned the whole read buffer that message grew: 137x.
//!
//! The allocator counts the whole process: the tests take turns (`GATE`).

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{connect_with_recv_buffer, live_bytes, watchdog, CountingAllocator, Running};
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{Handler, Session, SessionOptions, SocketOptions};

const LIMIT: Duration = Duration::from_secs(120);
/// Messages each peer sends at most (flow control stops the server reading well before).
const ROUNDS: usize = 80;
/// At `COPY_BELOW`: the smallest message that is a view of its read buffer.
const SMALLEST_VIEW: usize = 4096;
const HIGH_WATERMARK: usize = 64 * 1024;

/// One test at a time: the allocator counts the whole process.
static GATE: Mutex<()> = Mutex::new(());

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn live() -> isize {
    live_bytes()
}

/// Answers every message through the codec, with the message itself or its first
/// `reply_len` bytes, and publishes what its session has queued.
struct Echo {
    reply_len: Option<usize>,
    queued: Arc<[AtomicUsize]>,
    slot: usize,
}

impl Handler<LengthFieldCodec> for Echo {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, message: Bytes) {
        let reply = match self.reply_len {
            Some(len) => message.slice(..len.min(message.len())),
            None => message,
        };
        let _ = s.write(reply);
        self.queued[self.slot].store(s.queued_bytes(), Ordering::Relaxed);
    }
}

/// Sends one framed message on every stream per round, with a pause between rounds so the
/// server reads each in a read of its own; a stream the server stopped reading (its send
/// buffer full) is left alone.
fn pace(streams: &mut [TcpStream], frame: &[u8]) {
    let mut open = vec![true; streams.len()];
    for _ in 0..ROUNDS {
        for (stream, open) in streams.iter_mut().zip(open.iter_mut()) {
            if !*open {
                continue;
            }
            match stream.write_all(frame) {
                Ok(()) => {}
                // Timed out: the server holds this peer by flow control.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    *open = false
                }
                Err(e) => panic!("send: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(4));
    }
}

/// What `connections` peers, each pacing messages of `body` bytes and reading nothing,
/// make the server hold: (bytes its queues count, bytes of heap the process grew by).
fn held_by_peers(connections: usize, body: usize, reply_len: Option<usize>) -> (usize, usize) {
    let queued: Arc<[AtomicUsize]> = (0..connections).map(|_| AtomicUsize::new(0)).collect();
    let next_slot = Arc::new(AtomicUsize::new(0));
    let server = {
        let queued = queued.clone();
        TcpServer::builder()
            .socket_options(SocketOptions::default().send_buffer_size(Some(4096)))
            .session_options(SessionOptions::default())
            .bind("127.0.0.1:0", move |_| {
                let slot = next_slot.fetch_add(1, Ordering::Relaxed);
                Ok((
                    LengthFieldCodec::default(),
                    Echo {
                        reply_len,
                        queued: queued.clone(),
                        slot,
                    },
                ))
            })
            .unwrap()
    };
    let addr = server.local_addr();
    let reactor = Running::serve("pinned-memory", server);

    let mut streams: Vec<TcpStream> = (0..connections)
        .map(|_| {
            let s = connect_with_recv_buffer(addr, 4096);
            s.set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        })
        .collect();
    let mut frame = (body as u32).to_be_bytes().to_vec();
    frame.extend(std::iter::repeat_n(0x5a, body));
    // Let the sessions open and take what they hold idle.
    std::thread::sleep(Duration::from_millis(200));
    let base = live();

    pace(&mut streams, &frame);
    // Let the server take what is in flight, then settle.
    std::thread::sleep(Duration::from_secs(2));
    let held = (live() - base).max(0) as usize;
    let counted: usize = queued.iter().map(|q| q.load(Ordering::Relaxed)).sum();
    eprintln!(
        "{connections} peers x {body} B messages: the queues count {counted} B ({} B each), \
         the heap grew by {held} B ({} B each, {:.1}x what is counted)",
        counted / connections,
        held / connections,
        held as f64 / counted.max(1) as f64
    );
    drop(streams);
    reactor.stop();
    (counted, held)
}

/// Checks that `connections` peers pacing `body`-byte echoes hold about what is counted.
fn check_echoes(connections: usize, body: usize) {
    let _gate = GATE.lock().unwrap_or_else(|p| p.into_inner());
    let (counted, held) = held_by_peers(connections, body, None);
    assert!(
        counted >= connections * HIGH_WATERMARK / 2,
        "flow control did not hold the peers (queues count {counted} B): the test proves \
         nothing"
    );
    // A copy costs what is queued, in a buffer grown by doubling, plus the reactor's
    // pool (64 buffers of 64 KiB at most): allow four times the count, plus the pool.
    let budget = 4 * counted + 64 * 64 * 1024;
    assert!(
        held <= budget,
        "queued echoes hold {held} B of heap for {counted} B counted by the queues \
         (budget {budget} B): each pins the read buffer it was cut from"
    );
}

#[test]
fn a_queued_echo_holds_about_what_the_queue_counts() {
    watchdog(LIMIT, || check_echoes(40, SMALLEST_VIEW));
}

/// At 16 KiB the codec leaves the payload out of its encoding (`SPLIT_FROM`).
#[test]
fn a_queued_16k_echo_holds_about_what_the_queue_counts() {
    watchdog(LIMIT, || check_echoes(40, getty::codec::SPLIT_FROM));
}

#[test]
fn a_queued_slice_of_a_large_message_holds_about_what_the_queue_counts() {
    watchdog(LIMIT, || {
        let _gate = GATE.lock().unwrap_or_else(|p| p.into_inner());
        let (connections, body) = (8, 256 * 1024);
        let (counted, held) = held_by_peers(connections, body, Some(SMALLEST_VIEW));
        assert!(
            counted >= connections * HIGH_WATERMARK / 2,
            "flow control did not hold the peers (queues count {counted} B): the test proves \
             nothing"
        );
        // As above, plus a read buffer per peer that may hold a message cut short (grown
        // by doubling).
        let budget = 4 * counted + 64 * 64 * 1024 + connections * 2 * body;
        assert!(
            held <= budget,
            "queued 4 KiB slices hold {held} B of heap for {counted} B counted by the queues \
             (budget {budget} B): each pins the read buffer its message grew"
        );
    });
}
