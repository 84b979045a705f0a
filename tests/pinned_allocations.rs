//! What a server keeps after its sessions ended: the reactor's pool and the per-thread
//! spare list of session buffers hold a few pooled buffers (64 KiB, at most twice that),
//! never the allocation a read buffer grew to for a large frame.
//!
//! A read buffer grows (doubling) to 1 MiB for a frame just under it; once the frame is
//! split off, what is left is a short remainder (here 96 KiB) of that allocation. The
//! pool judged a buffer by its `capacity()`, the remainder, so it kept it as an ordinary
//! pooled buffer (`BufPool::give`, `BufPool::reusable`), and so did the spare list
//! (`keep_for_next_use` kept any buffer between half and twice the pool's size): each one
//! pinned the whole 1 MiB allocation, for as long as the reactor was idle (7.7–41 MiB
//! held in these tests). The pool now reclaims a remainder's front first, so its
//! `capacity()` tells the whole allocation, and keeps one grown past twice its size only
//! among its large buffers, whose bytes it bounds (`BufPool::large_budget`): the next large
//! frame reuses one of those instead of faulting in a new allocation.
//!
//! Live heap bytes are counted by this binary's global allocator (exact, unlike the
//! resident set, which malloc's arenas blur), and so are the large allocations the server's
//! reactor thread makes. The tests take a lock so they do not overlap.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{connect, frame, read_frame, watchdog, Running};
use getty::codec::{Bytes, LengthFieldCodec, LinesCodec};
use getty::reactor::BufPool;
use getty::tcp::TcpServer;
use getty::{Handler, Session, SessionOptions, SocketOptions};

/// The system allocator, counting the bytes currently allocated, and the allocations of
/// [`LARGE`] bytes or more made on a thread that asked for it ([`count_large_here`]).
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// An allocation this large is a frame's buffer, which the allocator maps (and faults in)
/// afresh. Smaller ones are ordinary pooled sizes (up to twice 64 KiB): a partial frame's
/// first step out of a 64 KiB buffer may take one, as any read does when the pool is
/// empty, before the frame has earned a kept buffer.
const LARGE: usize = 256 * 1024;
static LARGE_ON_SERVER: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNT_LARGE: Cell<bool> = const { Cell::new(false) };
}

/// From now on, this thread's large allocations are counted in [`LARGE_ON_SERVER`].
fn count_large_here() {
    COUNT_LARGE.with(|on| on.set(true));
}

fn note_large(size: usize) {
    if size >= LARGE && COUNT_LARGE.try_with(Cell::get).unwrap_or(false) {
        LARGE_ON_SERVER.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
            note_large(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
            if new_size > layout.size() {
                note_large(new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const LIMIT: Duration = Duration::from_secs(120);
const PEERS: usize = 40;
/// What the pool and the spare list may hold at most, for the default pool (64 buffers of
/// at most 128 KiB, its large buffers' budget, eight spare boxes of two 128 KiB buffers),
/// with room for the reactor's own bookkeeping: anything near a megabyte per peer is far
/// above it.
const BUDGET: isize = (14 << 20) + BufPool::DEFAULT_LARGE_BUDGET as isize;

struct Echo;

impl Handler<LengthFieldCodec> for Echo {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, message: Bytes) {
        let _ = s.write(message);
    }
}

/// Keeps every message for as long as its session lasts, answering each with an empty one.
struct Store(Vec<Bytes>);

impl Handler<LengthFieldCodec> for Store {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, message: Bytes) {
        self.0.push(message);
        let _ = s.write(Bytes::new());
    }
}

fn echo_server(options: SessionOptions) -> (Running, SocketAddr) {
    let server = TcpServer::builder()
        .session_options(options)
        .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("pinned-allocations", server), addr)
}

/// Live bytes the server holds, once idle again, after `PEERS` peers at once each sent a
/// frame of `frame_len` bytes (just under the default 1 MiB message limit), read its echo
/// and left.
fn held_after_large_frames(frame_len: usize) -> isize {
    let (reactor, addr) = echo_server(SessionOptions::default());
    let held = held_after(&reactor, addr, PEERS, frame_len - 4);
    reactor.stop();
    held
}

/// Live bytes `reactor` holds once idle again, more than before `peers` peers at once each
/// sent one frame of `payload_len` bytes, read the answer and left.
fn held_after(reactor: &Running, addr: SocketAddr, peers: usize, payload_len: usize) -> isize {
    round_trip(addr, 100);
    let before = live_once_settled(reactor);
    let peers: Vec<_> = (0..peers)
        .map(|_| std::thread::spawn(move || round_trip(addr, payload_len)))
        .collect();
    for peer in peers {
        peer.join().expect("a peer");
    }
    // The sessions end on the peers' FIN: wait for the server to be idle again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while reactor.entry_count() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let held = live_once_settled(reactor) - before;
    eprintln!(
        "frames of {payload_len} B: the idle server holds {} KiB more",
        held >> 10
    );
    held
}

/// Live heap bytes, once the reactor has done what it was doing.
fn live_once_settled(reactor: &Running) -> isize {
    std::thread::sleep(Duration::from_millis(100));
    reactor.run_on(|_| ()); // a barrier
    LIVE.load(Ordering::Relaxed)
}

/// One frame of `payload_len` bytes and its answer, which is an echo or empty.
fn round_trip(addr: SocketAddr, payload_len: usize) {
    let mut stream = connect(addr);
    let payload = vec![0x5a; payload_len];
    stream.write_all(&frame(&payload)).unwrap();
    let answer = read_frame(&mut stream).len();
    assert!(
        answer == payload_len || answer == 0,
        "an answer of {answer} B"
    );
}

/// The frame leaves 96 KiB of a 1 MiB read buffer: a remainder the pool takes for one of
/// its own buffers.
#[test]
fn large_frames_leave_no_pinned_allocation_behind() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(LIMIT, || {
        let held = held_after_large_frames((1 << 20) - 96 * 1024);
        assert!(
            held < BUDGET,
            "an idle server holds {} KiB after {PEERS} peers sent a 928 KiB frame each",
            held >> 10
        );
    });
}

/// The control: a frame that leaves more than twice a pooled buffer of its read buffer
/// (300 KiB) gets the buffer freed, and the server holds little.
#[test]
fn control_a_remainder_too_large_for_the_pool_is_freed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(LIMIT, || {
        let held = held_after_large_frames((1 << 20) - 300 * 1024);
        assert!(
            held < BUDGET,
            "an idle server holds {} KiB after {PEERS} peers sent a 724 KiB frame each",
            held >> 10
        );
    });
}

/// What the spare list adds (new with the idle-memory change): a 48 KiB remainder is too
/// short for the pool, which reclaims it and frees the allocation, but `keep_for_next_use`
/// keeps any buffer of at least half a pooled buffer as it is: each of the eight spare
/// boxes then pins a 1 MiB allocation (measured: 7.7 MiB; 7 KiB before the change).
#[test]
fn a_short_remainder_is_not_kept_by_the_spare_list() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(LIMIT, || {
        // Eight spare boxes of two buffers of at most twice 64 KiB, some slack, and the
        // pool's large buffers.
        const SPARE_BUDGET: isize = (3 << 20) + BufPool::DEFAULT_LARGE_BUDGET as isize;
        let held = held_after_large_frames((1 << 20) - 48 * 1024);
        assert!(
            held < SPARE_BUDGET,
            "an idle server holds {} KiB after {PEERS} peers sent a 976 KiB frame each",
            held >> 10
        );
    });
}

/// A peer that sends large frames one after another, each once the last echo is back, has
/// them read into the same few buffers: the pool keeps a large read buffer once its message
/// is written, and the next large frame is read into it. Before, every frame grew a new
/// allocation (three or four per 256 KiB frame, from a pooled 64 KiB buffer by doubling),
/// which the allocator mapped and faulted in afresh: 40-60 % of a hand-written echo's
/// speed at 256 KiB and 1 MiB (`bench/benches/sweep.rs`).
#[test]
fn consecutive_large_frames_reuse_the_read_buffers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(LIMIT, || {
        let sizes = [(256 * 1024, 40), ((1 << 20) - 4, 12), (100_000, 40)];
        echo_without_new_large_buffers(SocketOptions::default(), &sizes);
    });
}

/// The same when the socket takes each echo in several writes (its send buffer is small):
/// the message is still queued when the read buffer's remainder goes back, so
/// the pool cannot take the buffer then; it comes back once its last byte is written
/// (`Outbound`'s `recycle`). Before, the buffer was freed then, and every frame grew anew.
#[test]
fn large_frames_echoed_in_several_writes_reuse_the_read_buffers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(LIMIT, || {
        let sizes = [(256 * 1024, 12), ((1 << 20) - 4, 8)];
        let small_send_buffer = SocketOptions::default().send_buffer_size(Some(32 * 1024));
        echo_without_new_large_buffers(small_send_buffer, &sizes);
    });
}

/// Echoes `rounds` frames of each size over one connection and asserts that, after the
/// first few of each size, the server's reactor allocated no frame-sized buffer.
fn echo_without_new_large_buffers(socket_options: SocketOptions, sizes: &[(usize, usize)]) {
    let server = TcpServer::builder()
        .socket_options(socket_options)
        .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
        .unwrap();
    let addr = server.local_addr();
    let reactor = Running::serve("large-frame-reuse", server);
    reactor.run_on(|_| count_large_here());
    let mut stream = connect(addr);
    for &(size, rounds) in sizes {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let framed = frame(&payload);
        // The first frames may allocate (growing, filling the pool); the rest must not.
        let warm = 3;
        let mut after_warm_up = 0;
        for round in 0..rounds {
            if round == warm {
                after_warm_up = LARGE_ON_SERVER.load(Ordering::Relaxed);
            }
            stream.write_all(&framed).unwrap();
            assert!(
                read_frame(&mut stream) == payload,
                "the echo of {size} B differs"
            );
        }
        let grown = LARGE_ON_SERVER.load(Ordering::Relaxed) - after_warm_up;
        eprintln!(
            "{size} B frames: {grown} large allocations in {} echoes",
            rounds - warm
        );
        assert_eq!(
            grown,
            0,
            "the server allocated {grown} large buffers for {} frames of {size} B",
            rounds - warm
        );
    }
    reactor.stop();
}

/// A header that claims a large frame and stalls holds about what a growing read buffer
/// would (a few times what its peer sent, plus a read's worth), not one of the pool's
/// large buffers: those are taken only once an eighth of the frame has come. Between
/// attackers an honest peer echoes a 1 MiB frame, so the pool always has one to give.
/// Taking them whole at the first bytes let each attacker hold 1 MiB for 1,000 B sent.
#[test]
fn a_header_that_claims_a_large_frame_and_stalls_gets_no_large_buffer() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(LIMIT, || {
        const ATTACKERS: usize = 16;
        let (reactor, addr) = echo_server(SessionOptions::default());
        round_trip(addr, 100);
        let before = live_once_settled(&reactor);
        let mut stalled = Vec::new();
        for _ in 0..ATTACKERS {
            round_trip(addr, (1 << 20) - 4);
            let mut attacker = connect(addr);
            let mut lie = ((1u32 << 20) - 4).to_be_bytes().to_vec();
            lie.extend_from_slice(&[7u8; 1000]);
            attacker.write_all(&lie).unwrap();
            stalled.push(attacker);
            std::thread::sleep(Duration::from_millis(20));
        }
        let held = live_once_settled(&reactor) - before;
        let kept = reactor.run_on(|s| s.buffers().large_idle_bytes()) as isize;
        let per_attacker = (held - kept) / ATTACKERS as isize;
        eprintln!(
            "{ATTACKERS} stalled claims of 1 MiB: {} KiB held, {} KiB of it the pool's \
             large buffers; {} KiB per attacker",
            held >> 10,
            kept >> 10,
            per_attacker >> 10
        );
        drop(stalled);
        reactor.stop();
        assert!(
            per_attacker < 200 * 1024,
            "an attacker that sent 1000 B of a claimed 1 MiB frame holds {} KiB",
            per_attacker >> 10
        );
    });
}

/// The pool keeps a large buffer only once nothing else shares it: a remainder still
/// shared with its frame (the echo queued) has a small capacity of its own and would pin
/// the whole allocation, outside the large budget, once the frame is gone (66 MiB held by
/// an idle server after twelve 8 MiB echoes, against a 4 MiB budget).
#[test]
fn remainders_still_shared_with_a_frame_are_not_kept() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(LIMIT, || {
        let options = SessionOptions::default()
            .max_message_len(16 << 20)
            .max_outbound(64 << 20);
        let (reactor, addr) = echo_server(options);
        let held = held_after(&reactor, addr, 12, (8 << 20) - 200 * 1024);
        reactor.stop();
        assert!(
            held < BUDGET,
            "an idle server holds {} KiB after twelve echoes of 7.8 MiB",
            held >> 10
        );
    });
}

/// A handler that keeps its messages: when the read buffer goes back, the remainder is
/// still shared with a stored message, and the pool must not take it for one of its own
/// buffers (a remainder of 100 KiB looked like one, and each pinned 1 MiB: 17.9 MiB held
/// once idle after twenty such sessions).
#[test]
fn remainders_shared_with_stored_messages_are_not_kept() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(LIMIT, || {
        let server = TcpServer::builder()
            .bind("127.0.0.1:0", |_| {
                Ok((LengthFieldCodec::default(), Store(Vec::new())))
            })
            .unwrap();
        let addr = server.local_addr();
        let reactor = Running::serve("pinned-store", server);
        let held = held_after(&reactor, addr, 20, (1 << 20) - 100 * 1024 - 4);
        reactor.stop();
        // The pool's ordinary and large buffers, the spare boxes, and slack.
        const STORE_BUDGET: isize = (6 << 20) + BufPool::DEFAULT_LARGE_BUDGET as isize;
        assert!(
            held < STORE_BUDGET,
            "an idle server holds {} KiB after twenty sessions stored a 924 KiB message",
            held >> 10
        );
    });
}

/// Answers every line with a short one.
struct Ack;

impl Handler<LinesCodec> for Ack {
    fn on_message(&mut self, s: &mut Session<LinesCodec>, _line: Bytes) {
        let _ = s.write("ok");
    }
}

/// A framing that cannot tell a message's length ahead (lines; WebSocket frames take the
/// same path) grows its read buffer a read at a time: there too, once the bytes read earn
/// it, a large buffer the pool kept is taken, not a new allocation grown.
#[test]
fn long_lines_reuse_the_read_buffers_too() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(LIMIT, || {
        let server = TcpServer::builder()
            .bind("127.0.0.1:0", |_| Ok((LinesCodec::new(1 << 20), Ack)))
            .unwrap();
        let addr = server.local_addr();
        let reactor = Running::serve("long-lines", server);
        reactor.run_on(|_| count_large_here());
        let mut stream = connect(addr);
        let mut line = vec![b'x'; 256 * 1024 - 1];
        line.push(b'\n');
        let (rounds, warm) = (30, 3);
        let mut after_warm_up = 0;
        for round in 0..rounds {
            if round == warm {
                after_warm_up = LARGE_ON_SERVER.load(Ordering::Relaxed);
            }
            stream.write_all(&line).unwrap();
            let mut ack = [0u8; 3];
            std::io::Read::read_exact(&mut stream, &mut ack).unwrap();
            assert_eq!(&ack, b"ok\n");
        }
        let grown = LARGE_ON_SERVER.load(Ordering::Relaxed) - after_warm_up;
        eprintln!(
            "256 KiB lines: {grown} large allocations in {} lines",
            rounds - warm
        );
        reactor.stop();
        assert_eq!(grown, 0, "the server allocated {grown} large buffers");
    });
}

/// A header that claims a frame just under two read-aheads (124 KiB) and stalls after
/// 1,000 B holds what `make_room_for_frame` documents: at most eight times what its peer
/// sent, plus READ_AHEAD (72 KiB here; it holds 1,000 B + READ_AHEAD). A first version of
/// the rule that a step near the frame's end takes the frame's whole room took it whenever
/// the step stopped less than READ_AHEAD short of it: 129 KiB per stalled connection.
#[test]
fn a_stalled_claim_just_under_two_read_aheads_holds_no_more_than_its_bound() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(LIMIT, || {
        const ATTACKERS: usize = 32;
        const SENT: usize = 1000; // the 4-byte header included
        const READ_AHEAD: usize = 64 * 1024;
        const MIN_READ_SPACE: usize = 4096;
        // frame_len + MIN_READ_SPACE == SENT + 2 * READ_AHEAD: the largest claim the new
        // rule takes whole at once.
        let claim = SENT + 2 * READ_AHEAD - MIN_READ_SPACE - 4;
        let (reactor, addr) = echo_server(SessionOptions::default());
        round_trip(addr, 100);
        let before = live_once_settled(&reactor);
        let idle_before = reactor.run_on(|s| s.buffers().idle()) as isize;
        let mut stalled = Vec::new();
        for _ in 0..ATTACKERS {
            let mut attacker = connect(addr);
            let mut lie = (claim as u32).to_be_bytes().to_vec();
            lie.extend_from_slice(&[7u8; SENT - 4]);
            attacker.write_all(&lie).unwrap();
            stalled.push(attacker);
            std::thread::sleep(Duration::from_millis(20));
        }
        let held = live_once_settled(&reactor) - before;
        let (idle, kept) = reactor.run_on(|s| (s.buffers().idle(), s.buffers().large_idle_bytes()));
        let pooled = (idle as isize - idle_before) * (64 * 1024) + kept as isize;
        let per_attacker = (held - pooled) / ATTACKERS as isize;
        eprintln!(
            "{ATTACKERS} stalled claims of {claim} B after {SENT} B: {} KiB held, {} KiB of it \
             pooled; {per_attacker} B per attacker",
            held >> 10,
            pooled >> 10
        );
        drop(stalled);
        reactor.stop();
        // The documented bound, with 8 KiB for the session's own state.
        let bound = (8 * SENT + READ_AHEAD + 8 * 1024) as isize;
        assert!(
            per_attacker <= bound,
            "an attacker that sent {SENT} B of a claimed {claim} B frame holds {per_attacker} B \
             (bound: {bound} B)"
        );
    });
}

/// Peers that send a few hundred bytes of a frame and hang up cannot flush the large
/// buffers the pool keeps for an honest peer's frames: their partial frames grow to what
/// was sent + READ_AHEAD, which the pool keeps among its ordinary buffers. The first
/// version of the rule above grew them to the claimed frame's room, just over twice the
/// pool's size, which the pool keeps among its large ones, the oldest going first: 45
/// peers that each sent 257 B of a claim (ascending, so that none waits for an earlier
/// one's buffer, `BufPool::has_large`) and hung up made the honest peer's next 1 MiB
/// frames grow fresh allocations again.
#[test]
fn short_claims_that_hang_up_do_not_flush_the_pools_kept_frame_buffers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    watchdog(LIMIT, || {
        const ATTACKERS: usize = 45;
        const SENT: usize = 257; // the 4-byte header included
        const MIN_READ_SPACE: usize = 4096;
        let (reactor, addr) = echo_server(SessionOptions::default());
        reactor.run_on(|_| count_large_here());
        let payload: Vec<u8> = (0..(1 << 20) - 4).map(|i| (i % 251) as u8).collect();
        let framed = frame(&payload);
        let mut honest = connect(addr);
        let mut echo = |rounds: usize| {
            for _ in 0..rounds {
                honest.write_all(&framed).unwrap();
                assert!(read_frame(&mut honest) == payload, "the echo differs");
            }
        };
        // Warm up until the pool keeps a buffer that holds a whole frame (an echo that
        // allocates nothing large): when the first frames ended without a last growth
        // step, the buffer kept (grown by doubling) is just short of the frame's room.
        for warm in 1.. {
            let before = LARGE_ON_SERVER.load(Ordering::Relaxed);
            echo(1);
            if warm >= 4 && LARGE_ON_SERVER.load(Ordering::Relaxed) == before {
                break;
            }
            assert!(
                warm < 20,
                "every echo of 1 MiB allocates a frame-sized buffer"
            );
        }
        let kept_before = reactor.run_on(|s| s.buffers().large_idle_bytes());
        let mut stalled = Vec::new();
        for i in 0..ATTACKERS {
            // frame_len + MIN_READ_SPACE: just over twice the pool's 64 KiB, ascending.
            let frame_room = 2 * 64 * 1024 + 1 + i;
            let claim = frame_room - MIN_READ_SPACE - 4;
            let mut attacker = connect(addr);
            let mut lie = (claim as u32).to_be_bytes().to_vec();
            lie.extend_from_slice(&[7u8; SENT - 4]);
            attacker.write_all(&lie).unwrap();
            stalled.push(attacker);
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = live_once_settled(&reactor);
        drop(stalled);
        let deadline = Instant::now() + Duration::from_secs(10);
        while reactor.entry_count() > 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = live_once_settled(&reactor);
        let kept_after = reactor.run_on(|s| s.buffers().large_idle_bytes());
        let before = LARGE_ON_SERVER.load(Ordering::Relaxed);
        echo(6);
        let grown = LARGE_ON_SERVER.load(Ordering::Relaxed) - before;
        eprintln!(
            "kept large buffers: {} KiB before {ATTACKERS} claims of {SENT} B, {} KiB after \
             they hung up; {grown} frame-sized allocations in the 6 echoes after them",
            kept_before >> 10,
            kept_after >> 10
        );
        reactor.stop();
        assert_eq!(
            grown, 0,
            "{ATTACKERS} claims of {SENT} B made the next 6 echoes of 1 MiB allocate {grown} \
             frame-sized buffers"
        );
    });
}
