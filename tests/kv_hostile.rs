//! Hostile checks of the RESP codec, the kv example and offload, over real sockets. The kv
//! replies expected here are the bytes Debian's `redis-server` 7.0.15 gave for the same
//! input, run side by side with the kv example.
#![cfg(target_os = "linux")]

mod common;

#[allow(dead_code)]
#[path = "../examples/kv/commands.rs"]
mod commands;
#[allow(dead_code)]
#[path = "../examples/kv/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "../examples/kv/store.rs"]
mod store;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::*;
use getty::codec::{Bytes, LengthFieldCodec};
use getty::reactor::EntryId;
use getty::tcp::TcpServer;
use getty::{Error, Handler, Offload, ReactorPool, Session};

const TEST_LIMIT: Duration = Duration::from_secs(120);

struct Kv {
    pool: Option<ReactorPool>,
    addr: SocketAddr,
}

impl Kv {
    fn start() -> Kv {
        let (pool, addr) = server::serve_tcp("127.0.0.1:0".parse().unwrap(), 1).expect("kv");
        Kv {
            pool: Some(pool),
            addr,
        }
    }
}

impl Drop for Kv {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.shutdown();
            let _ = pool.join();
        }
    }
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Sends `input` and reads exactly `expected.len()` bytes back; they must be `expected`.
fn exchange(stream: &mut TcpStream, input: &[u8], expected: &[u8]) {
    stream.write_all(input).unwrap();
    let mut got = vec![0; expected.len()];
    let read = stream.read_exact(&mut got);
    assert_eq!(
        got.escape_ascii().to_string(),
        expected.escape_ascii().to_string(),
        "reply to {} ({read:?})",
        input.escape_ascii()
    );
}

/// One `MGET` of 140 keys that each hold 1 MiB: a 1.2 KiB request whose reply is 140 MiB,
/// from a client that reads it all. redis-server (default config: no output limit for
/// normal clients) answers it whole. kv queues the whole reply in one `on_message`, its
/// queue passes `max_outbound` (128 MiB) after 127 values, and it closes the session: the
/// client gets a truncated array and EOF.
#[test]
fn an_mget_whose_reply_is_larger_than_max_outbound_is_answered_whole() {
    watchdog(TEST_LIMIT, || {
        let kv = Kv::start();
        let mut s = connect(kv.addr);
        let value = vec![b'v'; 1 << 20];
        exchange(&mut s, &command(&[b"SET", b"big", &value]), b"+OK\r\n");
        let count = 140;
        let mut mget: Vec<&[u8]> = vec![b"MGET"];
        mget.extend(std::iter::repeat_n(&b"big"[..], count));
        s.write_all(&command(&mget)).unwrap();
        let header = format!("*{count}\r\n");
        let bulk_len = format!("${}\r\n", value.len()).len() + value.len() + 2;
        let want = header.len() + count * bulk_len;
        let mut buf = vec![0u8; 1 << 20];
        let mut received = 0;
        let mut ended = None;
        while received < want {
            match s.read(&mut buf) {
                Ok(0) => {
                    ended = Some("EOF".to_owned());
                    break;
                }
                Ok(n) => received += n,
                Err(e) => {
                    ended = Some(e.to_string());
                    break;
                }
            }
        }
        assert_eq!(
            received,
            want,
            "bytes of the MGET reply received ({} of {count} values) before {ended:?}",
            received.saturating_sub(header.len()) / bulk_len
        );
    });
}

/// `DECRBY k -9223372036854775808`: the amount parses, but negating it overflows.
/// redis-server says `-ERR decrement would overflow`; kv said the amount is not an integer.
#[test]
fn decrby_the_smallest_integer_says_decrement_would_overflow() {
    watchdog(TEST_LIMIT, || {
        let kv = Kv::start();
        let mut s = connect(kv.addr);
        exchange(
            &mut s,
            &command(&[b"DECRBY", b"k", b"-9223372036854775808"]),
            b"-ERR decrement would overflow\r\n",
        );
        exchange(&mut s, &command(&[b"EXISTS", b"k"]), b":0\r\n");
    });
}

/// Redis 7.0's `SET` takes an option again (`EX 10 EX 20`, `KEEPTTL KEEPTTL`, `PX` twice):
/// the last amount wins, and only that one is checked, after every option is read (so a
/// syntax error anywhere wins over a bad amount). kv refused a repeated `EX`/`PX`/`KEEPTTL`
/// as a syntax error and checked each amount as it came.
#[test]
fn set_takes_repeated_options_as_redis_does() {
    watchdog(TEST_LIMIT, || {
        let kv = Kv::start();
        let mut s = connect(kv.addr);
        let cases: &[(&[&[u8]], &[u8])] = &[
            (
                &[b"SET", b"k", b"v", b"EX", b"10", b"EX", b"100"],
                b"+OK\r\n",
            ),
            (&[b"TTL", b"k"], b":100\r\n"),
            (
                &[b"SET", b"k", b"v", b"px", b"5000", b"PX", b"20000"],
                b"+OK\r\n",
            ),
            (&[b"TTL", b"k"], b":20\r\n"),
            (&[b"SET", b"k", b"w", b"KEEPTTL", b"keepttl"], b"+OK\r\n"),
            (&[b"TTL", b"k"], b":20\r\n"),
            (
                &[b"SET", b"k", b"v", b"EX", b"abc", b"EX", b"30"],
                b"+OK\r\n",
            ),
            (&[b"TTL", b"k"], b":30\r\n"),
            (
                &[b"SET", b"k", b"v", b"EX", b"0", b"BAD"],
                b"-ERR syntax error\r\n",
            ),
            (
                &[b"SET", b"k", b"v", b"EX", b"10", b"EX", b"0"],
                b"-ERR invalid expire time in 'set' command\r\n",
            ),
            (
                &[b"SET", b"k", b"v", b"EX", b"10", b"EX", b"x"],
                b"-ERR value is not an integer or out of range\r\n",
            ),
            (
                &[b"SET", b"k", b"v", b"EX", b"10", b"PX", b"10"],
                b"-ERR syntax error\r\n",
            ),
            (
                &[b"SET", b"k", b"v", b"KEEPTTL", b"EX", b"10"],
                b"-ERR syntax error\r\n",
            ),
            (&[b"SET", b"k", b"v", b"EX"], b"-ERR syntax error\r\n"),
            (&[b"GET", b"k"], b"$1\r\nv\r\n"),
        ];
        for (args, expected) in cases {
            exchange(&mut s, &command(args), expected);
        }
    });
}

/// What an offloaded job's result must never do: reach another session. A job holds the
/// handle of session A; A closes; a new session B takes A's slab slot; the job then writes
/// through A's handle. B must not get it (the handle names A's slot *and* serial).
struct OffloadsSlowWork {
    pool: Offload,
    /// Each job waits here until the test releases it.
    gate: Arc<Mutex<mpsc::Receiver<()>>>,
    /// Where each session says which slot it got.
    opened: mpsc::Sender<EntryId>,
    /// Where each job says how its write went.
    written: mpsc::Sender<Result<(), Error>>,
}

impl Handler<LengthFieldCodec> for OffloadsSlowWork {
    fn on_open(&mut self, _: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        let (id, _) = getty::reactor::current().expect("inside a callback");
        let _ = self.opened.send(id);
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        if &msg[..] != b"slow" {
            let _ = s.write(msg);
            return;
        }
        let handle = s.handle().expect("inside a callback");
        let gate = self.gate.clone();
        let written = self.written.clone();
        self.pool
            .submit(s.id(), move || {
                let released = gate.lock().unwrap().recv_timeout(STEP);
                assert!(released.is_ok(), "the test released the job");
                let _ = written.send(handle.write(Bytes::from_static(b"result for A")));
            })
            .expect("room in the pool");
    }
}

#[test]
fn an_offloaded_result_never_reaches_the_session_that_took_its_slot() {
    watchdog(TEST_LIMIT, || {
        let pool = Offload::new(2, 8).unwrap();
        let (gate_tx, gate_rx) = mpsc::channel();
        let gate = Arc::new(Mutex::new(gate_rx));
        let (opened_tx, opened_rx) = mpsc::channel();
        let (written_tx, written_rx) = mpsc::channel();
        let p = pool.clone();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((
                LengthFieldCodec::default(),
                OffloadsSlowWork {
                    pool: p.clone(),
                    gate: gate.clone(),
                    opened: opened_tx.clone(),
                    written: written_tx.clone(),
                },
            ))
        })
        .unwrap();
        let addr = server.local_addr();
        let reactor = Running::serve("offload-slot-reuse", server);

        let mut a = connect(addr);
        let a_id = opened_rx.recv_timeout(STEP).expect("A opened");
        a.write_all(&frame(b"slow")).unwrap();
        echo_roundtrip(&mut a, b"the job is queued");
        drop(a);
        // Connect until a session lands in A's old slot (the slab reuses freed keys).
        let mut b = None;
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(20));
            let mut candidate = connect(addr);
            let id = opened_rx.recv_timeout(STEP).expect("a session opened");
            echo_roundtrip(&mut candidate, b"hello");
            if id.token() == a_id.token() {
                assert_ne!(id, a_id, "a new session has a new serial");
                b = Some(candidate);
                break;
            }
        }
        let mut b = b.expect("a new session took A's slot");
        gate_tx.send(()).unwrap();
        let written = written_rx.recv_timeout(STEP).expect("the job ran");
        // Refused, or accepted and dropped on the reactor: either way B must not see it.
        assert!(
            matches!(written, Ok(()) | Err(Error::Closed)),
            "{written:?}"
        );
        echo_roundtrip(&mut b, b"after the job");
        b.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut extra = [0u8; 64];
        match b.read(&mut extra) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("B got more than its own echo: {other:?} {:?}", &extra[..8]),
        }
        pool.shutdown();
        drop(b);
        reactor.stop();
    });
}

/// A job that panics does not take its worker down: the next job of the same key (the same
/// worker) still runs, in order.
#[test]
fn a_panicking_job_leaves_its_worker_running() {
    watchdog(TEST_LIMIT, || {
        let pool = Offload::new(1, 4).unwrap();
        let (tx, rx) = mpsc::channel();
        pool.submit(3, || panic!("an offloaded job panics"))
            .unwrap();
        pool.submit(3, move || tx.send("after").unwrap()).unwrap();
        assert_eq!(rx.recv_timeout(STEP), Ok("after"));
        pool.shutdown();
    });
}

/// A panic payload whose own drop panics: the worker caught the first panic, then dropped
/// the payload outside any `catch_unwind`, so the second panic ended the worker's thread.
/// Every later job for its keys was refused with `Closed` although the pool was never shut
/// down.
#[test]
fn a_panic_payload_that_panics_when_dropped_leaves_its_worker_running() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("the payload's drop panics");
        }
    }
    watchdog(TEST_LIMIT, || {
        let pool = Offload::new(1, 4).unwrap();
        pool.submit(5, || std::panic::panic_any(PanicsOnDrop))
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let mut outcome = None;
        // The worker may still be unwinding: give it a few tries, each bounded.
        for _ in 0..20 {
            let tx = tx.clone();
            match pool.submit(5, move || tx.send(()).unwrap()) {
                Ok(()) => {
                    outcome = Some(rx.recv_timeout(STEP).map_err(|e| e.to_string()));
                    break;
                }
                Err(Error::Backpressure) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    outcome = Some(Err(format!("refused: {e}")));
                    break;
                }
            }
        }
        assert_eq!(outcome, Some(Ok(())), "a job after the panic ran");
        pool.shutdown();
    });
}

/// Reads until EOF (or an error), at most `limit` bytes.
fn read_to_end_bounded(s: &mut TcpStream, limit: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    while got.len() <= limit {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// The same large MGET, pipelined in one write between small commands and a QUIT: every
/// reply whole and in order, then the close (as redis-server answers it).
#[test]
fn a_large_mget_in_a_pipeline_keeps_the_replies_around_it_in_order() {
    watchdog(TEST_LIMIT, || {
        let kv = Kv::start();
        let mut s = connect(kv.addr);
        let value = vec![b'v'; 1 << 20];
        exchange(&mut s, &command(&[b"SET", b"big", &value]), b"+OK\r\n");
        let count = 140;
        let mut mget: Vec<&[u8]> = vec![b"MGET", b"missing"];
        mget.extend(std::iter::repeat_n(&b"big"[..], count));
        mget.push(b"small");
        let mut pipeline = command(&[b"SET", b"small", b"s"]);
        pipeline.extend_from_slice(&command(&mget));
        pipeline.extend_from_slice(&command(&[b"GET", b"big"]));
        pipeline.extend_from_slice(b"PING\r\n");
        pipeline.extend_from_slice(&command(&[b"QUIT"]));
        pipeline.extend_from_slice(b"PING\r\n"); // after QUIT: never answered
        s.write_all(&pipeline).unwrap();

        let bulk = [format!("${}\r\n", value.len()).as_bytes(), &value, b"\r\n"].concat();
        let mut want = b"+OK\r\n".to_vec();
        want.extend_from_slice(format!("*{}\r\n$-1\r\n", count + 2).as_bytes());
        (0..count).for_each(|_| want.extend_from_slice(&bulk));
        want.extend_from_slice(b"$1\r\ns\r\n");
        want.extend_from_slice(&bulk);
        want.extend_from_slice(b"+PONG\r\n+OK\r\n");
        let got = read_to_end_bounded(&mut s, want.len() + 64);
        assert_eq!(got.len(), want.len(), "reply bytes, then EOF");
        assert!(got == want, "the replies differ from redis-server's");
    });
}

/// Lengths Redis does not write and refuses (its `string2ll`: no leading zero, no `-0`):
/// redis-server answers each with `-ERR Protocol error: invalid ... length` and closes.
/// The codec took them (`*01` as 1, `$-0` as an empty argument, `*-0` as an empty command).
#[test]
fn lengths_with_leading_zeros_or_minus_zero_are_protocol_errors() {
    watchdog(TEST_LIMIT, || {
        let kv = Kv::start();
        let cases: [&[u8]; 6] = [
            b"*-0\r\nPING\r\n",
            b"*00\r\nPING\r\n",
            b"*01\r\n$4\r\nPING\r\n",
            b"*1\r\n$04\r\nPING\r\n",
            b"*1\r\n$-0\r\n\r\nPING\r\n",
            b"*2\r\n$4\r\nECHO\r\n$-00\r\n\r\nPING\r\n",
        ];
        for wire in cases {
            let mut s = connect(kv.addr);
            s.write_all(wire).unwrap();
            let got = read_to_end_bounded(&mut s, 4096);
            assert!(
                got.starts_with(b"-ERR Protocol error: ") && !got.ends_with(b"+PONG\r\n"),
                "{} got {}",
                wire.escape_ascii(),
                got.escape_ascii()
            );
            // Canonical forms still work on a fresh connection.
            let mut s = connect(kv.addr);
            exchange(
                &mut s,
                b"*0\r\n*1\r\n$0\r\n\r\nPING\r\n",
                b"-ERR unknown command '', with args beginning with: \r\n+PONG\r\n",
            );
        }
    });
}

/// Redis 7.0's `EXPIRE key seconds [NX|XX|GT|LT]...` takes several options where they are
/// compatible (`XX GT`, `NX NX`), and reads every option first: an unknown one, or an
/// incompatible pair, is the error even before a bad amount or a missing key. kv refused
/// any two options, and checked the amount and the key first.
#[test]
fn expire_takes_compatible_options_together_as_redis_does() {
    watchdog(TEST_LIMIT, || {
        let kv = Kv::start();
        let mut s = connect(kv.addr);
        let nx_and_others =
            &b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"[..];
        let cases: &[(&[&[u8]], &[u8])] = &[
            (&[b"SET", b"k", b"v"], b"+OK\r\n"),
            (&[b"EXPIRE", b"k", b"100", b"XX", b"GT"], b":0\r\n"),
            (&[b"EXPIRE", b"k", b"100", b"NX", b"NX"], b":1\r\n"),
            (&[b"EXPIRE", b"k", b"200", b"gt", b"xx"], b":1\r\n"),
            (&[b"TTL", b"k"], b":200\r\n"),
            (&[b"EXPIRE", b"k", b"50", b"LT", b"lt", b"XX"], b":1\r\n"),
            (&[b"TTL", b"k"], b":50\r\n"),
            (&[b"EXPIRE", b"k", b"100", b"NX", b"GT"], nx_and_others),
            (
                &[b"EXPIRE", b"k", b"100", b"GT", b"LT"],
                b"-ERR GT and LT options at the same time are not compatible\r\n",
            ),
            (
                &[b"EXPIRE", b"k", b"abc", b"FOO"],
                b"-ERR Unsupported option FOO\r\n",
            ),
            (&[b"EXPIRE", b"k", b"abc", b"NX", b"XX"], nx_and_others),
            (
                &[b"EXPIRE", b"k", b"9223372036854775807", b"FOO"],
                b"-ERR Unsupported option FOO\r\n",
            ),
            (
                &[b"EXPIRE", b"missing", b"100", b"foo"],
                b"-ERR Unsupported option foo\r\n",
            ),
            (
                &[b"EXPIRE", b"k", b"abc", b"XX"],
                b"-ERR value is not an integer or out of range\r\n",
            ),
            (&[b"TTL", b"k"], b":50\r\n"),
        ];
        for (args, expected) in cases {
            exchange(&mut s, &command(args), expected);
        }
    });
}
