//! Hostile peers of the WebSocket transport at the framework level, over raw sockets on
//! loopback: the upgrade with frames (and the peer's close and EOF) in the same write,
//! the message limit across fragments with control frames between them, and a handler's
//! pause with frames already read.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use common::*;
use getty::codec::{Bytes, RawCodec};
use getty::ws::{Ws, WsServer};
use getty::{Handler, Session, SessionHandle, SessionOptions};

const TEST_LIMIT: Duration = Duration::from_secs(120);

/// Counts the heap the process holds, for the test of what an open fragmented message
/// pins (which takes the exclusive gate, so no other test here runs meanwhile).
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const REQUEST: &str = "GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// A masked client frame (mask key from `seed`), with the shortest length field.
fn client_frame(opcode: u8, fin: bool, payload: &[u8], seed: u8) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [seed, seed.wrapping_add(1), 0x5a, 0xa5];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// One unmasked server frame: (first byte, payload); `None` at EOF or a reset.
fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).ok()?;
    assert_eq!(head[1] & 0x80, 0, "a server frame must not be masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            stream.read_exact(&mut l).unwrap();
            usize::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            stream.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l) as usize
        }
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    Some((head[0], payload))
}

/// Every frame until the server's close (included) or EOF, and whether EOF followed.
fn frames_until_close(stream: &mut TcpStream) -> (Vec<(u8, Vec<u8>)>, bool) {
    let mut frames = Vec::new();
    for _ in 0..100_000 {
        match read_frame(stream) {
            Some(f) => {
                let close = f.0 == 0x88;
                frames.push(f);
                if close {
                    let mut rest = [0u8; 16];
                    let eof = matches!(stream.read(&mut rest), Ok(0));
                    return (frames, eof);
                }
            }
            None => return (frames, false),
        }
    }
    panic!("no close frame");
}

fn echo_server(options: SessionOptions, tx: &Sender<Ev>) -> (Running, SocketAddr) {
    let tx = tx.clone();
    let server = WsServer::builder()
        .session_options(options)
        .route("/echo", move |_| Ok((RawCodec, Probe::echo(&tx))))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    (Running::serve("wsh", server), addr)
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

/// The upgrade request, frames, the peer's close frame and its FIN, all in one write (and
/// large enough that the upgrade stops reading before the end): every frame is echoed, in
/// order, then the close is answered, then EOF; the handler sees no error, one close.
#[test]
fn frames_a_close_and_eof_sent_with_the_upgrade_are_all_answered() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut events) = Events::new();
        let (server, addr) = echo_server(SessionOptions::default(), &tx);
        for (round, (count, size)) in [(3usize, 10usize), (40, 1000), (200, 3000)]
            .into_iter()
            .enumerate()
        {
            for with_close in [true, false] {
                let mut stream = connect(addr);
                let mut wire = REQUEST.as_bytes().to_vec();
                let sent: Vec<Vec<u8>> = (0..count).map(|i| payload(i, size + i)).collect();
                for (i, p) in sent.iter().enumerate() {
                    wire.extend(client_frame(2, true, p, i as u8));
                }
                if with_close {
                    wire.extend(client_frame(8, true, &1000u16.to_be_bytes(), 7));
                }
                stream.write_all(&wire).unwrap();
                stream.shutdown(Shutdown::Write).unwrap();
                read_101(&mut stream);
                let (frames, eof) = frames_until_close(&mut stream);
                let what = format!("round {round} close {with_close}");
                assert!(
                    frames.len() == count + 1,
                    "{what}: {} frames back, want {} echoes and a close",
                    frames.len(),
                    count
                );
                for (i, (f, p)) in frames.iter().zip(&sent).enumerate() {
                    assert!(f.0 == 0x82 && f.1 == *p, "{what}: echo {i} differs");
                }
                assert_eq!(frames[count].1[..2], 1000u16.to_be_bytes(), "{what}");
                assert!(eof, "{what}: no EOF after the close");
            }
        }
        events.wait_n("every close", 6, |e| matches!(e, Ev::Close { .. }));
        std::thread::sleep(Duration::from_millis(100));
        events.pump();
        let errors: Vec<_> = events
            .all
            .iter()
            .filter(|e| matches!(e, Ev::Error { .. }))
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        events.check_contract();
        server.stop();
    });
}

/// A message of exactly the limit passes, whole or in fragments with pings between them,
/// text and binary; one byte over, however it is cut, ends the session with
/// MessageTooLong {max + 1, max} and 1009, after every earlier reply (pongs included) went
/// out in order; another session carries on.
#[test]
fn the_limit_holds_across_fragments_with_pings_between_them() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let max = 4096;
        let (tx, mut events) = Events::new();
        let (server, addr) = echo_server(SessionOptions::default().max_message_len(max), &tx);
        let mut bystander = connect(addr);
        bystander.write_all(REQUEST.as_bytes()).unwrap();
        read_101(&mut bystander);
        let cuts: [&[usize]; 5] = [&[], &[1], &[2048], &[1000, 3000, 4095], &[0, 0, 4096]];
        for opcode in [1u8, 2] {
            // RawCodec echoes every message as binary.
            let kind = 0x82;
            for cut in cuts {
                for over in [false, true] {
                    let what = format!("opcode {opcode} cuts {cut:?} over {over}");
                    let len = max + usize::from(over);
                    let message: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                    let mut stream = connect(addr);
                    stream.write_all(REQUEST.as_bytes()).unwrap();
                    read_101(&mut stream);
                    let early = b"before".to_vec();
                    let mut wire = client_frame(opcode, true, &early, 1);
                    let mut bounds = vec![0];
                    bounds.extend(cut.iter().map(|&c| c.min(len)));
                    bounds.push(len);
                    let mut pings = 0;
                    for (n, w) in bounds.windows(2).enumerate() {
                        let first = n == 0;
                        let last = n == bounds.len() - 2;
                        let op = if first { opcode } else { 0 };
                        wire.extend(client_frame(op, last, &message[w[0]..w[1]], n as u8));
                        if !last {
                            wire.extend(client_frame(9, true, &[n as u8], 3));
                            pings += 1;
                        }
                    }
                    wire.extend(client_frame(opcode, true, b"after", 2));
                    stream.write_all(&wire).unwrap();
                    let mut want: Vec<(u8, Vec<u8>)> = vec![(kind, early)];
                    want.extend((0..pings).map(|n| (0x8a, vec![n as u8])));
                    if !over {
                        want.push((kind, message.clone()));
                        want.push((kind, b"after".to_vec()));
                        let got: Vec<_> = (0..want.len())
                            .map_while(|_| read_frame(&mut stream))
                            .collect();
                        assert!(got == want, "{what}: {:?}", shape(&got));
                        let mut ping = client_frame(9, true, b"alive", 4);
                        ping.extend(client_frame(8, true, &1000u16.to_be_bytes(), 5));
                        stream.write_all(&ping).unwrap();
                        let (rest, eof) = frames_until_close(&mut stream);
                        assert_eq!(shape(&rest), [(0x8a, 5), (0x88, 2)], "{what}");
                        assert!(eof, "{what}");
                        continue;
                    }
                    let (frames, _) = frames_until_close(&mut stream);
                    let close = frames.last().expect("a close").clone();
                    assert_eq!(close.0, 0x88, "{what}");
                    assert_eq!(close.1[..2], 1009u16.to_be_bytes(), "{what}");
                    let before: Vec<_> = frames[..frames.len() - 1].to_vec();
                    assert!(before == want, "{what}: {:?}", shape(&before));
                    let peer = stream.local_addr().unwrap();
                    let sid = events.wait_open(peer);
                    events.wait_close(sid);
                    let errors = events.errors_of(sid);
                    assert!(
                        matches!(&errors[..], [ErrKind::MessageTooLong { len: l, max: m }]
                            if *l == max + 1 && *m == max),
                        "{what}: {errors:?}"
                    );
                    ws_echo_roundtrip(&mut bystander, b"still here");
                }
            }
        }
        server.stop();
    });
}

/// Frames as (first byte, length), for messages.
fn shape(frames: &[(u8, Vec<u8>)]) -> Vec<(u8, usize)> {
    frames.iter().map(|(b, p)| (*b, p.len())).collect()
}

/// Echoes (as binary); pauses reading at the message "pause" and hands its handle over.
struct Pauser {
    tx: Sender<Ev>,
    handles: Sender<SessionHandle<RawCodec, Ws>>,
}

impl Handler<RawCodec, Ws> for Pauser {
    fn on_message(&mut self, s: &mut Session<RawCodec, Ws>, msg: Bytes) {
        let _ = s.write(msg.clone());
        if &msg[..] == b"pause" {
            s.pause_reading();
            let _ = self.handles.send(s.handle().unwrap());
        }
    }

    fn on_error(&mut self, s: &mut Session<RawCodec, Ws>, error: &getty::Error) {
        let _ = self.tx.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }

    fn on_close(&mut self, s: &mut Session<RawCodec, Ws>) {
        let _ = self.tx.send(Ev::Close { sid: s.id() });
    }
}

/// A server with `options` whose handler ([`Pauser`]) echoes and pauses at "pause", on a
/// reactor thread called `name`; the handles of the sessions it paused come on the
/// receiver.
fn pausing_echo_server(
    name: &str,
    options: SessionOptions,
) -> (
    Running,
    SocketAddr,
    Events,
    mpsc::Receiver<SessionHandle<RawCodec, Ws>>,
) {
    let (tx, events) = Events::new();
    let (htx, handles) = mpsc::channel();
    let server = WsServer::builder()
        .session_options(options)
        .route("/echo", move |_| {
            let (tx, handles) = (tx.clone(), htx.clone());
            Ok((RawCodec, Pauser { tx, handles }))
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr();
    (Running::serve(name, server), addr, events, handles)
}

/// A handler pauses with frames already read behind the pausing one (whole ones, a
/// fragmented message with a ping between its pieces, one cut mid-frame, the rest still
/// coming), and the peer then ends its input: while paused the reactor thread stays idle;
/// on resume every message is echoed in order, each ping answered, then the close.
#[test]
fn frames_read_before_a_pause_and_an_eof_during_it_are_all_answered_on_resume() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (server, addr, mut events, handles) =
            pausing_echo_server("wsh-pause", SessionOptions::default());
        for with_close in [false, true] {
            let mut stream = connect(addr);
            stream.write_all(REQUEST.as_bytes()).unwrap();
            read_101(&mut stream);
            let mut wire = client_frame(2, true, b"pause", 1);
            let mut want: Vec<(u8, Vec<u8>)> = vec![(0x82, b"pause".to_vec())];
            for i in 0..50 {
                let p = payload(i, 10 + i * 37);
                wire.extend(client_frame(2, true, &p, i as u8));
                want.push((0x82, p));
            }
            let whole = payload(99, 3000);
            wire.extend(client_frame(1, false, &[b'x'; 1000], 3));
            wire.extend(client_frame(9, true, b"p1", 4));
            wire.extend(client_frame(0, true, &[b'y'; 1000], 5));
            want.push((0x8a, b"p1".to_vec()));
            let mut text = vec![b'x'; 1000];
            text.extend_from_slice(&[b'y'; 1000]);
            want.push((0x82, text));
            let cut = client_frame(2, true, &whole, 6);
            want.push((0x82, whole));
            let (first, second) = cut.split_at(1500);
            wire.extend_from_slice(first);
            stream.write_all(&wire).unwrap();
            let handle = handles.recv_timeout(STEP).expect("the pause");
            std::thread::sleep(Duration::from_millis(100));
            let mut rest = second.to_vec();
            rest.extend(client_frame(9, true, b"p2", 7));
            want.push((0x8a, b"p2".to_vec()));
            if with_close {
                rest.extend(client_frame(8, true, &1000u16.to_be_bytes(), 8));
            }
            stream.write_all(&rest).unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            let cpu_before = cpu_of_thread("wsh-pause").expect("the reactor thread");
            std::thread::sleep(Duration::from_secs(1));
            let cpu_paused = cpu_of_thread("wsh-pause").unwrap() - cpu_before;
            // Nothing but the pause's echo may have come back.
            stream
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let first_echo = read_frame(&mut stream).expect("the echo of pause");
            assert_eq!(first_echo, want[0]);
            let mut probe = [0u8; 1];
            assert!(
                stream.read(&mut probe).is_err(),
                "something came back while paused"
            );
            stream.set_read_timeout(Some(STEP)).unwrap();
            handle.resume_reading().unwrap();
            let (frames, eof) = frames_until_close(&mut stream);
            let (close, got) = frames.split_last().expect("frames");
            assert!(
                got == &want[1..],
                "close {with_close}: got {:?}, want {:?}",
                shape(got),
                shape(&want[1..])
            );
            assert_eq!(close.0, 0x88);
            assert_eq!(close.1[..2], 1000u16.to_be_bytes());
            assert!(eof, "no EOF after the close");
            println!("close {with_close}: reactor CPU while paused {cpu_paused:?}");
            assert!(
                cpu_paused < Duration::from_millis(300),
                "the reactor thread spun while paused: {cpu_paused:?} in 1 s"
            );
        }
        events.pump();
        let errors: Vec<_> = events
            .all
            .iter()
            .filter(|e| matches!(e, Ev::Error { .. }))
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        server.stop();
    });
}

/// Small messages that came in one read behind the pausing one, all whole: they wait,
/// copied out of the read buffer together, in the framing, with nothing left in the read
/// buffer, and the peer sends nothing more. A resume delivers them all, in order.
#[test]
fn small_messages_read_with_the_pausing_one_are_delivered_on_resume_with_nothing_more_sent() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (server, addr, mut events, handles) =
            pausing_echo_server("wsh-run-pause", SessionOptions::default());
        let mut stream = connect(addr);
        stream.write_all(REQUEST.as_bytes()).unwrap();
        read_101(&mut stream);
        let mut wire = client_frame(2, true, b"pause", 1);
        let mut want: Vec<(u8, Vec<u8>)> = vec![(0x82, b"pause".to_vec())];
        for i in 0..20 {
            let p = payload(i, 1 + i * 7);
            wire.extend(client_frame(2, true, &p, i as u8));
            want.push((0x82, p));
        }
        stream.write_all(&wire).unwrap();
        let handle = handles.recv_timeout(STEP).expect("the pause");
        stream.set_read_timeout(Some(STEP)).unwrap();
        assert_eq!(read_frame(&mut stream).expect("the echo of pause"), want[0]);
        std::thread::sleep(Duration::from_millis(100));
        handle.resume_reading().unwrap();
        for (i, want) in want[1..].iter().enumerate() {
            let got = read_frame(&mut stream);
            assert_eq!(got.as_ref(), Some(want), "echo {i} after the resume");
        }
        events.pump();
        assert!(events.all.is_empty(), "{:?}", events.all);
        drop(stream);
        server.stop();
    });
}

/// The same under flow control: watermarks so low that the echoes of a run's first
/// messages stop delivery mid-run (the rest of the run waits in the framing, the read
/// buffer empty), and a peer that sends nothing more and reads only later. Once the queue
/// drains, the rest is delivered: every message echoed once, in order, each ping answered.
#[test]
fn small_messages_held_by_flow_control_mid_run_are_delivered_when_the_queue_drains() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        for (high, low) in [(600, 300), (1, 0)] {
            let options = SessionOptions::default().watermarks(high, low);
            let name = "wsh-run-flow";
            let (server, addr, mut events, _handles) = pausing_echo_server(name, options);
            let mut stream = connect(addr);
            stream.write_all(REQUEST.as_bytes()).unwrap();
            read_101(&mut stream);
            let (mut wire, mut want, mut pings) = (Vec::new(), Vec::new(), 0);
            for i in 0..200 {
                let p = payload(i, 1 + i % 150);
                wire.extend(client_frame(2, true, &p, i as u8));
                want.push((0x82, p));
                if i % 37 == 5 {
                    wire.extend(client_frame(9, true, b"pp", 1));
                    pings += 1;
                }
            }
            stream.write_all(&wire).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            stream.set_read_timeout(Some(STEP)).unwrap();
            let (mut echoes, mut pongs) = (Vec::new(), 0);
            while echoes.len() < want.len() {
                match read_frame(&mut stream) {
                    Some((0x8a, _)) => pongs += 1,
                    Some(frame) => echoes.push(frame),
                    None => break,
                }
            }
            assert_eq!(echoes.len(), want.len(), "watermarks {high}/{low}");
            assert!(echoes == want, "watermarks {high}/{low}: the echoes differ");
            // Pongs may coalesce above the high watermark, never vanish.
            assert!(
                (1..=pings).contains(&pongs),
                "{pongs} pongs for {pings} pings"
            );
            events.pump();
            assert!(events.all.is_empty(), "{:?}", events.all);
            drop(stream);
            server.stop();
        }
    });
}

/// A permessage-deflate payload that inflates to `data`: one stored (uncompressed) deflate
/// block, then the empty block a sync flush ends with, less the `00 00 ff ff` that RFC
/// 7692 has the sender strip. Five bytes longer than `data`, plus one, as deflate makes
/// any incompressible message (browsers compress every message once it is negotiated).
#[cfg(feature = "deflate")]
fn stored_deflate(data: &[u8]) -> Vec<u8> {
    assert!(data.len() <= 0xffff, "one stored block");
    let len = data.len() as u16;
    let mut out = vec![0x00];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.push(0x00);
    out
}

/// Under permessage-deflate the limit is on the inflated message, as on TCP: a message of
/// exactly `max_message_len` bytes whose compressed frame is a few bytes longer (deflate of
/// incompressible data) is delivered; one byte more is refused with MessageTooLong and 1009.
#[test]
#[cfg(feature = "deflate")]
fn a_compressed_message_of_exactly_the_limit_is_delivered() {
    use getty::codec::ws::DeflateConfig;
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let max = 4096;
        let (tx, mut events) = Events::new();
        let server = {
            let tx = tx.clone();
            WsServer::builder()
                .deflate(Some(DeflateConfig::default()))
                .session_options(SessionOptions::default().max_message_len(max))
                .route("/echo", move |_| Ok((RawCodec, Probe::echo(&tx))))
                .bind("127.0.0.1:0")
                .unwrap()
        };
        let addr = server.local_addr();
        let server = Running::serve("wsh-deflate", server);
        let mut rng = fastrand::Rng::with_seed(11);
        for len in [max - 10, max, max + 1] {
            let mut stream = connect(addr);
            let request = REQUEST.replace(
                "\r\n\r\n",
                "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
            );
            stream.write_all(request.as_bytes()).unwrap();
            read_101(&mut stream);
            let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let mut frame = client_frame(2, true, &stored_deflate(&data), 1);
            frame[0] |= 0x40; // RSV1: compressed
            stream.write_all(&frame).unwrap();
            let peer = stream.local_addr().unwrap();
            if len <= max {
                let echo = read_frame(&mut stream);
                let sid = events.wait_open(peer);
                let errors = events.errors_of(sid);
                assert!(errors.is_empty(), "{len} B inflated: {errors:?}");
                let (first, payload) = echo.expect("an echo");
                assert_eq!(first, 0x82, "{len} B: an uncompressed binary echo");
                assert!(payload == data, "{len} B: the echo differs");
                continue;
            }
            let (frames, _) = frames_until_close(&mut stream);
            assert_eq!(shape(&frames), [(0x88, 2)]);
            assert_eq!(frames[0].1[..2], 1009u16.to_be_bytes());
            let sid = events.wait_open(peer);
            events.wait_close(sid);
            let errors = events.errors_of(sid);
            assert!(
                matches!(&errors[..], [ErrKind::MessageTooLong { len: l, max: m }]
                    if *l > max && *m == max),
                "{errors:?}"
            );
        }
        server.stop();
    });
}

/// Sessions that wait for the rest of a fragmented message whose first fragment was tiny
/// hold a few bytes each, not the pooled read buffer the fragment was read into (as a
/// tiny partial frame on TCP is moved out of its pooled buffer): the heap held while they
/// wait, less what it is once their messages completed, stays small per session.
#[test]
fn a_tiny_open_fragment_does_not_pin_a_pooled_read_buffer() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let sessions = 200;
        let (tx, _events) = Events::new();
        let (server, addr) = echo_server(SessionOptions::default(), &tx);
        let mut peers: Vec<TcpStream> = (0..sessions)
            .map(|_| {
                let mut stream = connect(addr);
                stream.write_all(REQUEST.as_bytes()).unwrap();
                read_101(&mut stream);
                stream
            })
            .collect();
        // Each sends a one-byte first fragment, and a ping to know it was read.
        for (i, peer) in peers.iter_mut().enumerate() {
            let mut wire = client_frame(2, false, &[i as u8], 1);
            wire.extend(client_frame(9, true, b"p", 2));
            peer.write_all(&wire).unwrap();
            assert_eq!(read_frame(peer), Some((0x8a, b"p".to_vec())));
        }
        std::thread::sleep(Duration::from_millis(300));
        let waiting = live_bytes();
        for (i, peer) in peers.iter_mut().enumerate() {
            peer.write_all(&client_frame(0, true, b"rest", 3)).unwrap();
            let mut want = vec![i as u8];
            want.extend_from_slice(b"rest");
            assert_eq!(read_frame(peer), Some((0x82, want)));
        }
        std::thread::sleep(Duration::from_millis(300));
        let done = live_bytes();
        let per_session = (waiting - done) / sessions as isize;
        println!("an open one-byte fragment holds {per_session} B of heap per session");
        assert!(
            per_session < 8 * 1024,
            "each session waiting on a fragmented message holds {per_session} B"
        );
        drop(peers);
        server.stop();
    });
}

/// The upgrade request and the first frames trickled one byte per write: the `101`, then
/// every echo in order, the pong between them, and the close.
#[test]
fn a_request_and_frames_trickled_byte_by_byte_are_all_answered() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut events) = Events::new();
        let (server, addr) = echo_server(SessionOptions::default(), &tx);
        let mut stream = connect(addr);
        let mut wire = REQUEST.as_bytes().to_vec();
        wire.extend(client_frame(2, true, b"one", 1));
        wire.extend(client_frame(1, false, b"tw", 2));
        wire.extend(client_frame(9, true, b"ping", 3));
        wire.extend(client_frame(0, true, b"o", 4));
        wire.extend(client_frame(2, true, &[7; 300], 5));
        wire.extend(client_frame(8, true, &1000u16.to_be_bytes(), 6));
        for b in &wire {
            stream.write_all(&[*b]).unwrap();
            std::thread::sleep(Duration::from_micros(300));
        }
        read_101(&mut stream);
        let (frames, eof) = frames_until_close(&mut stream);
        let want: Vec<(u8, Vec<u8>)> = vec![
            (0x82, b"one".to_vec()),
            (0x8a, b"ping".to_vec()),
            (0x82, b"two".to_vec()),
            (0x82, vec![7; 300]),
            (0x88, 1000u16.to_be_bytes().to_vec()),
        ];
        assert!(frames == want, "{:?}", shape(&frames));
        stream.shutdown(Shutdown::Write).unwrap();
        let _ = eof;
        let sid = events.wait_open(stream.local_addr().unwrap());
        events.wait_close(sid);
        assert!(events.errors_of(sid).is_empty());
        server.stop();
    });
}

/// Writes `unit` (repeated) without reading until the kernel has taken nothing for a
/// while: the server holds the session by flow control.
fn fill_without_reading(stream: &mut TcpStream, prefix: &[u8], unit: &[u8]) -> usize {
    stream.write_all(prefix).unwrap();
    stream.set_nonblocking(true).unwrap();
    let (mut stuck, mut offset, mut sent) = (0, 0, 0);
    for _ in 0..1_000_000 {
        if stuck >= 50 {
            break;
        }
        match stream.write(&unit[offset..]) {
            Ok(n) => {
                offset = (offset + n) % unit.len();
                sent += n;
                stuck = 0;
            }
            Err(_) => {
                stuck += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    sent
}

/// Peers that send without reading (data messages; pings inside an open fragmented
/// message) are held by flow control: the reactor thread then idles, and a bystander
/// still gets its echoes.
#[test]
fn held_websocket_floods_cost_the_reactor_no_cpu() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let (tx, _events) = Events::new();
        let (server, addr) = echo_server(SessionOptions::default(), &tx);
        let mut data = connect(addr);
        data.write_all(REQUEST.as_bytes()).unwrap();
        read_101(&mut data);
        let sent_data =
            fill_without_reading(&mut data, &[], &client_frame(2, true, &[1; 16 * 1024], 1));
        let mut pings = connect(addr);
        pings.write_all(REQUEST.as_bytes()).unwrap();
        read_101(&mut pings);
        let mut unit = client_frame(9, true, &[2; 125], 2);
        unit.extend(client_frame(0, false, b"", 3));
        let sent_pings =
            fill_without_reading(&mut pings, &client_frame(2, false, b"open", 4), &unit);
        println!("sent {sent_data} B of messages, {sent_pings} B of pings");
        std::thread::sleep(Duration::from_millis(300));
        let c0 = server.run_on(|_| thread_cpu_time());
        std::thread::sleep(Duration::from_secs(1));
        let c1 = server.run_on(|_| thread_cpu_time());
        println!("reactor CPU over 1 s while held: {:?}", c1 - c0);
        let mut bystander = connect(addr);
        bystander.write_all(REQUEST.as_bytes()).unwrap();
        read_101(&mut bystander);
        ws_echo_roundtrip(&mut bystander, b"bystander");
        assert!(
            c1 - c0 < Duration::from_millis(100),
            "the reactor spun while the floods were held: {:?}",
            c1 - c0
        );
        drop((data, pings));
        server.stop();
    });
}

/// The client: a server's `101`, frames (one large), its close and its FIN in one write.
/// The client's handler gets every message in order, then `on_close` without an error; the
/// client answers the close with 1000 (masked) and then closes its end.
#[test]
fn a_client_gets_frames_a_close_and_eof_sent_with_the_101() {
    use getty::ws::WsClient;
    use std::net::TcpListener;
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let big: Vec<u8> = (0..100_000).map(|i| (i * 13) as u8).collect();
        let sent = vec![b"first".to_vec(), big.clone(), b"last".to_vec()];
        let to_send = sent.clone();
        let peer = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            drop(listener);
            stream.set_read_timeout(Some(STEP)).unwrap();
            let mut wire = accept_ws_request(&mut stream);
            for m in &to_send {
                // An unmasked server frame: a client frame less its mask.
                let mut f = client_frame(2, true, m, 0);
                let head = f.len() - m.len() - 4;
                f[1] &= 0x7f;
                f.truncate(head);
                f.extend_from_slice(m);
                wire.extend(f);
            }
            wire.extend_from_slice(&[0x88, 0x02, 0x03, 0xe8]);
            stream.write_all(&wire).unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            let mut back = Vec::new();
            let _ = stream.read_to_end(&mut back);
            back
        });
        let (tx, mut events) = Events::new();
        let client = WsClient::builder()
            .build(&format!("ws://{addr}/"), move |_| {
                Ok((RawCodec, Probe::silent(&tx)))
            })
            .unwrap();
        let client = Running::serve("wsh-client", client);
        let back = peer.join().unwrap();
        let close = events.wait("the close", |e| matches!(e, Ev::Close { .. }));
        let sid = close.sid();
        let got: Vec<Vec<u8>> = events
            .of(sid)
            .into_iter()
            .filter_map(|e| match e {
                Ev::Msg { msg, .. } => Some(msg.to_vec()),
                _ => None,
            })
            .collect();
        assert!(
            got == sent,
            "messages: {:?}",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert!(events.errors_of(sid).is_empty(), "{:?}", events.of(sid));
        // The client's answer: one masked close frame carrying 1000.
        assert!(
            back.len() == 8 && back[0] == 0x88 && back[1] == 0x82,
            "{back:02x?}"
        );
        let code = [back[6] ^ back[2], back[7] ^ back[3]];
        assert_eq!(u16::from_be_bytes(code), 1000);
        client.stop();
    });
}

/// Answers each message with 200 KB of its first byte, queued without a copy
/// (`write_bytes`), then a short write.
struct BigEcho(Sender<Ev>);

impl Handler<RawCodec, Ws> for BigEcho {
    fn on_message(&mut self, s: &mut Session<RawCodec, Ws>, msg: Bytes) {
        s.write_bytes(Bytes::from(vec![msg[0]; 200_000])).unwrap();
        s.write(msg).unwrap();
    }

    fn on_error(&mut self, s: &mut Session<RawCodec, Ws>, error: &getty::Error) {
        let _ = self.0.send(Ev::Error {
            sid: s.id(),
            err: classify(error),
        });
    }

    fn on_close(&mut self, s: &mut Session<RawCodec, Ws>) {
        let _ = self.0.send(Ev::Close { sid: s.id() });
    }
}

/// Large replies (queued as views, behind the socket's window: the peer reads slowly),
/// pings between the requests, then a malformed frame: every reply and pong goes out
/// whole and in order, then the close with 1002; the handler hears the error once.
#[test]
fn large_replies_queued_before_a_bad_frame_all_go_out_before_its_close() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut events) = Events::new();
        let server = {
            let tx = tx.clone();
            WsServer::builder()
                .route("/echo", move |_| Ok((RawCodec, BigEcho(tx.clone()))))
                .bind("127.0.0.1:0")
                .unwrap()
        };
        let addr = server.local_addr();
        let server = Running::serve("wsh-big", server);
        let mut stream = connect(addr);
        stream.write_all(REQUEST.as_bytes()).unwrap();
        read_101(&mut stream);
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for i in 0..6u8 {
            wire.extend(client_frame(2, true, &[i, i], i));
            wire.extend(client_frame(9, true, &[i], i));
            want.push((0x82, vec![i; 200_000]));
            want.push((0x82, vec![i, i]));
            want.push((0x8a, vec![i]));
        }
        // Unmasked: a protocol error.
        wire.extend_from_slice(&[0x82, 0x01, 0x00]);
        stream.write_all(&wire).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let (frames, _) = frames_until_close(&mut stream);
        let (close, got) = frames.split_last().unwrap();
        assert!(got == want, "{:?}", shape(got));
        assert_eq!(close, &(0x88, 1002u16.to_be_bytes().to_vec()));
        // The only session of this server.
        let sid = events
            .wait("the close", |e| matches!(e, Ev::Close { .. }))
            .sid();
        std::thread::sleep(Duration::from_millis(100));
        let of = events.of(sid);
        assert!(
            matches!(&of[..], [Ev::Error { .. }, Ev::Close { .. }]),
            "{of:?}"
        );
        server.stop();
    });
}

/// The peer's EOF inside a message is a truncation the handler hears
/// (`UnexpectedEof`), as on TCP, wherever the cut falls: inside a frame's payload, right
/// after a frame's header, or between the fragments of a message. At a message boundary
/// it is a clean end.
#[test]
fn an_eof_inside_a_message_is_reported_wherever_it_falls() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, mut events) = Events::new();
        let (server, addr) = echo_server(SessionOptions::default(), &tx);
        let whole = client_frame(2, true, b"whole", 1);
        let long = client_frame(2, true, &[5; 100], 2);
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("at a message boundary", vec![], false),
            ("inside a payload", long[..7].to_vec(), true),
            ("right after a header", long[..6].to_vec(), true),
            (
                "between fragments",
                client_frame(2, false, b"part", 3),
                true,
            ),
            (
                "after a ping between fragments",
                [
                    client_frame(2, false, b"part", 3),
                    client_frame(9, true, b"", 4),
                ]
                .concat(),
                true,
            ),
        ];
        for (what, tail, cut) in cases {
            let mut stream = connect(addr);
            stream.write_all(REQUEST.as_bytes()).unwrap();
            read_101(&mut stream);
            stream.write_all(&[whole.clone(), tail].concat()).unwrap();
            assert_eq!(
                read_frame(&mut stream),
                Some((0x82, b"whole".to_vec())),
                "{what}"
            );
            stream.shutdown(Shutdown::Write).unwrap();
            let sid = events.wait_open(stream.local_addr().unwrap());
            events.wait_close(sid);
            let errors = events.errors_of(sid);
            if cut {
                assert!(
                    matches!(&errors[..], [ErrKind::UnexpectedEof { .. }]),
                    "{what}: {errors:?}"
                );
            } else {
                assert!(errors.is_empty(), "{what}: {errors:?}");
            }
        }
        server.stop();
    });
}

/// An upgrade request refused while more of it is still unread (a head far over the
/// limit, sent in one write) gets its refusal: the `431` reaches the peer, rather than a
/// reset that destroys it.
#[test]
fn a_refused_oversized_head_gets_its_431() {
    watchdog(TEST_LIMIT, || {
        let _gate = shared_gate();
        let (tx, _events) = Events::new();
        let (server, addr) = echo_server(SessionOptions::default(), &tx);
        for junk in [12 * 1024, 40 * 1024, 200 * 1024] {
            let mut stream = connect(addr);
            let head = format!(
                "GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Junk: {}\r\n{}",
                "j".repeat(junk),
                &REQUEST[REQUEST.find("Upgrade").unwrap()..]
            );
            // The server may stop taking it part-way.
            let _ = stream.write_all(head.as_bytes());
            std::thread::sleep(Duration::from_millis(100));
            let mut response = Vec::new();
            let ended = stream.read_to_end(&mut response);
            let text = String::from_utf8_lossy(&response);
            assert!(
                text.starts_with("HTTP/1.1 431"),
                "a head with {junk} B of junk: {ended:?}, got {text:?}"
            );
        }
        server.stop();
    });
}

/// Keeps every message for as long as its session lasts, answering each with an empty one.
struct Keep(Vec<Bytes>);

impl Handler<RawCodec, Ws> for Keep {
    fn on_message(&mut self, s: &mut Session<RawCodec, Ws>, msg: Bytes) {
        self.0.push(msg);
        let _ = s.write(Bytes::new());
    }
}

/// A large message is a view of the buffer it was read into, so a handler that keeps it
/// keeps that buffer. Told the frame's length once its header is read (as the TCP codecs
/// tell theirs), the session reads the frame into a buffer about its size; grown a step
/// per read instead, the buffer of a message just over 1 MiB (or 4 MiB) doubled to 2 MiB
/// (8 MiB).
#[test]
fn a_kept_large_message_holds_about_its_own_size() {
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let server = WsServer::builder()
            .session_options(SessionOptions::default().max_message_len(16 << 20))
            .route("/echo", |_| Ok((RawCodec, Keep(Vec::new()))))
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        // A pool that keeps no large buffer, so that the heap counts only what the
        // messages hold (an outgrown step would otherwise wait in the pool).
        let server = Running::serve_with("ws-kept", server, || {
            let pool = getty::reactor::BufPool::default().large_budget(0);
            getty::reactor::Reactor::builder().buffer_pool(pool).build()
        });
        let mut peer = connect(addr);
        peer.write_all(REQUEST.as_bytes()).unwrap();
        read_101(&mut peer);
        // Just over 1 MiB (the pool keeps buffers for it) and over 4 MiB (it does not).
        for (round, len) in [(1 << 20) + 1024, (4 << 20) + 1024].into_iter().enumerate() {
            std::thread::sleep(Duration::from_millis(100));
            server.run_on(|_| ()); // settled
            let before = live_bytes();
            peer.write_all(&client_frame(2, true, &payload(round, len), 5))
                .unwrap();
            assert_eq!(read_frame(&mut peer), Some((0x82, Vec::new())));
            std::thread::sleep(Duration::from_millis(100));
            server.run_on(|_| ());
            let held = live_bytes() - before;
            println!("a kept message of {len} B holds {held} B of heap");
            assert!(
                held < len as isize * 5 / 4,
                "a kept message of {len} B holds {held} B"
            );
        }
        drop(peer);
        server.stop();
    });
}

/// Keeps every message it is given; counts them.
struct Keeper {
    kept: Vec<Bytes>,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Handler<RawCodec, Ws> for Keeper {
    fn on_message(&mut self, _: &mut Session<RawCodec, Ws>, msg: Bytes) {
        self.kept.push(msg);
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A handler that keeps the small messages it is given (a history, a cache) holds about
/// their size in heap, whether they came one to a read or many (copied out in runs): runs
/// once left most of each slab of small copies unused but kept, twice the heap for 64-byte
/// messages (a review measured 124 bytes each).
#[test]
fn kept_small_messages_read_together_cost_about_their_size() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    watchdog(TEST_LIMIT, || {
        let _gate = exclusive_gate();
        let (n, len) = (20_000usize, 64usize);
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let server = WsServer::builder()
            .route("/echo", move |_| {
                let kept = Vec::with_capacity(n);
                let count = counter.clone();
                Ok((RawCodec, Keeper { kept, count }))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("wsh-keep", server);
        let mut wire = Vec::new();
        for i in 0..n {
            wire.extend(client_frame(2, true, &[b'k'; 64], i as u8));
        }
        let mut stream = connect(addr);
        stream.set_read_timeout(Some(STEP)).unwrap();
        stream.write_all(REQUEST.as_bytes()).unwrap();
        read_101(&mut stream);
        std::thread::sleep(Duration::from_millis(100));
        let before = live_bytes();
        stream.write_all(&wire).unwrap();
        let until = std::time::Instant::now() + STEP;
        while count.load(Ordering::SeqCst) < n && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        let per = (live_bytes() - before) as f64 / n as f64;
        println!("{len}-byte messages: {per:.1} bytes of heap per kept message");
        drop(stream);
        server.stop();
        assert_eq!(count.load(Ordering::SeqCst), n);
        // The payload, a header of 6 bytes, a slab's end now and then, a read buffer.
        assert!(
            per < 1.5 * len as f64,
            "{per:.1} bytes per kept {len}-byte message"
        );
    });
}
