//! Session and datagram handles under hostile use: the bytes of a handle's writes in
//! flight bounded by `max_outbound` (writers on several threads, a stalled reader, edge
//! bounds and codec hints), and ids from another reactor, over real sockets on loopback.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Bytes, BytesMut, CodecError, Decoded, Decoder, Encoder, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{Handler, Session, SessionHandle};

const LIMIT: Duration = Duration::from_secs(90);

/// Hands every session's handle out, and tells its errors and its close.
struct HandsOut<C: 'static>(Sender<SessionHandle<C>>, Sender<String>);

impl<C> Handler<C> for HandsOut<C>
where
    C: Decoder + 'static,
{
    fn on_open(&mut self, s: &mut Session<C>) -> std::io::Result<()> {
        let _ = self.0.send(s.handle().unwrap());
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<C>, _: C::Item) {}
    fn on_error(&mut self, _: &mut Session<C>, error: &getty::Error) {
        let _ = self.1.send(format!("error {error}"));
    }
    fn on_close(&mut self, _: &mut Session<C>) {
        let _ = self.1.send("close".into());
    }
}

/// A server of `HandsOut` with `codec`, a client of it with a small receive buffer that
/// does not read yet, the session's handle and events.
fn hands_out<C>(
    name: &str,
    options: getty::SessionOptions,
    codec: C,
) -> (Running, TcpStream, SessionHandle<C>, mpsc::Receiver<String>)
where
    C: Decoder + Clone + Send + 'static,
{
    let (handles_tx, handles) = mpsc::channel();
    let (tx, events) = mpsc::channel();
    let server = TcpServer::builder()
        .session_options(options)
        .bind("127.0.0.1:0", move |_| {
            Ok((codec.clone(), HandsOut(handles_tx.clone(), tx.clone())))
        })
        .unwrap();
    let addr = server.local_addr();
    let server = Running::serve(name, server);
    let peer = connect_with_recv_buffer(addr, 16 * 1024);
    let handle = handles.recv_timeout(STEP).unwrap();
    (server, peer, handle, events)
}

/// Reads until the peer's end (or nothing comes for `STEP`); the bytes and whether it
/// ended.
fn drain(peer: &mut TcpStream) -> (Vec<u8>, bool) {
    peer.set_read_timeout(Some(STEP)).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match peer.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

/// The payloads of the length-prefixed frames in `bytes`.
fn split_frames(bytes: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if at + 4 + len > bytes.len() {
            break;
        }
        frames.push(&bytes[at + 4..at + 4 + len]);
        at += 4 + len;
    }
    frames
}

/// Writes `message` as a writer that heeds backpressure does: on `Backpressure` it waits
/// in `wait_writable` (bounded) and tries again.
/// The number of refusals it met.
fn write_heeding<C, T, M>(handle: &SessionHandle<C, T>, message: M) -> Result<u32, getty::Error>
where
    C: Encoder<M> + 'static,
    T: getty::Transport,
    M: Clone + Send + 'static,
{
    let deadline = Instant::now() + STEP;
    let mut refused = 0;
    loop {
        match handle.write(message.clone()) {
            Err(getty::Error::Backpressure) if Instant::now() < deadline => {
                refused += 1;
                handle.wait_writable(Duration::from_secs(5))?;
            }
            other => return other.map(|()| refused),
        }
    }
}

/// Sizes the writers cycle through: a few bytes to 300 KiB.
const SIZES: [usize; 7] = [8, 300 << 10, 1500, 70 << 10, 16 << 10, 200 << 10, 3];

/// `writers` threads, each writing `each` messages of mixed sizes through a clone of
/// `handle`, heeding backpressure; each message starts with its writer's number and its
/// own, big-endian.
fn spawn_writers<C, T>(
    handle: &SessionHandle<C, T>,
    writers: u32,
    each: u32,
) -> Vec<std::thread::JoinHandle<Result<u32, getty::Error>>>
where
    C: Encoder<Bytes> + 'static,
    T: getty::Transport,
{
    (0..writers)
        .map(|w| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                let mut refused = 0;
                for n in 0..each {
                    let size = SIZES[(n as usize + w as usize) % SIZES.len()];
                    let mut payload = vec![b'.'; size.max(8)];
                    payload[..4].copy_from_slice(&w.to_be_bytes());
                    payload[4..8].copy_from_slice(&n.to_be_bytes());
                    refused += write_heeding(&handle, Bytes::from(payload))?;
                }
                Ok(refused)
            })
        })
        .collect()
}

/// Every writer finished, and they met the bounds at least once.
fn join_writers(writers: Vec<std::thread::JoinHandle<Result<u32, getty::Error>>>) {
    let mut refused = 0;
    for (w, writer) in writers.into_iter().enumerate() {
        let done = writer.join().unwrap();
        assert!(done.is_ok(), "writer {w}: {done:?}");
        refused += done.unwrap();
    }
    assert!(refused > 0, "the writers never met the bounds");
}

/// Each writer's messages arrived, all of them, whole and in its order.
fn check_writers<'a>(messages: impl IntoIterator<Item = &'a [u8]>, writers: u32, each: u32) {
    let mut next = vec![0u32; writers as usize];
    for payload in messages {
        let w = u32::from_be_bytes(payload[..4].try_into().unwrap()) as usize;
        let n = u32::from_be_bytes(payload[4..8].try_into().unwrap());
        assert_eq!(n, next[w], "writer {w}'s messages in order");
        let size = SIZES[(n as usize + w) % SIZES.len()].max(8);
        assert_eq!(payload.len(), size, "writer {w}'s message {n} whole");
        next[w] += 1;
    }
    assert_eq!(next, vec![each; writers as usize], "every message arrived");
}

/// Four writer threads push messages of mixed sizes (a few bytes to 300 KiB) through
/// clones of one handle, heeding `Backpressure` with `wait_writable`, while the peer reads
/// nothing for a while and then everything. Every message arrives whole, each writer's in
/// its order, the session never fails (no `QueueFull` from writes the handle accepted), and
/// no writer is left refused or asleep.
#[test]
fn writers_on_several_threads_with_a_stalled_reader_lose_nothing() {
    watchdog(LIMIT, || {
        const WRITERS: u32 = 4;
        const EACH: u32 = 60;
        let options = getty::SessionOptions::default().max_outbound(1 << 20);
        let (server, mut peer, handle, events) =
            hands_out("review-a-writers", options, LengthFieldCodec::default());
        let writers = spawn_writers(&handle, WRITERS, EACH);
        // The reader stalls: the writers run into the bounds and wait.
        std::thread::sleep(Duration::from_millis(700));
        let reader = std::thread::spawn(move || drain(&mut peer));
        join_writers(writers);
        handle.close().unwrap();
        let (got, ended) = reader.join().unwrap();
        assert!(ended, "a FIN after {} bytes", got.len());
        check_writers(split_frames(&got), WRITERS, EACH);
        let seen: Vec<String> = events.try_iter().collect();
        assert!(
            !seen.iter().any(|e| e.starts_with("error")),
            "the session failed: {seen:?}"
        );
        server.stop();
    });
}

/// A `LengthFieldCodec` whose items say they encode to `hint` bytes, whatever they hold.
#[derive(Clone)]
struct Hinted<const HINT: usize>(LengthFieldCodec);

impl<const HINT: usize> Decoder for Hinted<HINT> {
    type Item = Bytes;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Decoded<Bytes>, CodecError> {
        self.0.decode(src)
    }
}

impl<const HINT: usize> Encoder<Bytes> for Hinted<HINT> {
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.0.encode(item, dst)
    }
    fn encoded_len_hint(_: &Bytes) -> usize {
        HINT
    }
}

/// Posts `count` numbered 2 KiB writes while nothing drains, heeding backpressure, then
/// reads: all arrive in order, and the session never failed.
fn writes_arrive_with<C>(name: &str, options: getty::SessionOptions, codec: C, count: u32)
where
    C: Decoder + Encoder<Bytes> + Clone + Send + 'static,
{
    let (server, mut peer, handle, events) = hands_out(name, options, codec);
    let writer = std::thread::spawn(move || {
        for n in 0..count {
            let mut payload = vec![b'.'; 2048];
            payload[..4].copy_from_slice(&n.to_be_bytes());
            write_heeding(&handle, Bytes::from(payload))?;
        }
        handle.close()
    });
    std::thread::sleep(Duration::from_millis(300));
    let (got, ended) = drain(&mut peer);
    let done = writer.join().unwrap();
    assert!(done.is_ok(), "{done:?}");
    assert!(ended, "a FIN after {} bytes", got.len());
    let frames = split_frames(&got);
    assert_eq!(frames.len(), count as usize, "every write arrived");
    for (k, payload) in frames.iter().enumerate() {
        assert_eq!(
            u32::from_be_bytes(payload[..4].try_into().unwrap()),
            k as u32
        );
    }
    let seen: Vec<String> = events.try_iter().collect();
    assert!(
        !seen.iter().any(|e| e.starts_with("error")),
        "the session failed: {seen:?}"
    );
    server.stop();
}

/// A codec whose hint is 0 (its items "take no room"), and one whose hint is `usize::MAX`
/// under an unbounded `max_outbound`: the counts neither refuse for good nor overflow, and
/// every write goes out in order.
#[test]
fn codec_hints_of_zero_and_usize_max_neither_wedge_nor_overflow() {
    watchdog(LIMIT, || {
        let unbounded = getty::SessionOptions::default().max_outbound(usize::MAX);
        writes_arrive_with(
            "review-a-hint-max",
            unbounded.clone(),
            Hinted::<{ usize::MAX }>(LengthFieldCodec::default()),
            3000,
        );
        writes_arrive_with(
            "review-a-hint-zero",
            getty::SessionOptions::default(),
            Hinted::<0>(LengthFieldCodec::default()),
            3000,
        );
        // A huge hint under a finite bound: one write in flight at a time.
        writes_arrive_with(
            "review-a-hint-max-bounded",
            getty::SessionOptions::default(),
            Hinted::<{ usize::MAX }>(LengthFieldCodec::default()),
            500,
        );
    });
}

/// `max_outbound(0)`: the session takes no byte, and an empty write. Through a handle, an
/// idle writable session with nothing in flight must still have room for one write ("one
/// larger than the bound still goes, alone"): `wait_writable` returns, an empty write is
/// taken as the session itself takes it, and a write of bytes ends the session with
/// `QueueFull`, as the same write made by the handler does. Before the fix the bytes in
/// flight (0) were never below the bound (0): every handle write was refused with
/// `Backpressure` for good, and `wait_writable` slept until its timeout on a session that
/// said it was writable.
#[test]
fn a_handle_of_a_session_with_max_outbound_zero_is_not_refused_for_good() {
    watchdog(LIMIT, || {
        let options = getty::SessionOptions::default().max_outbound(0);
        let (server, _peer, handle, events) =
            hands_out("review-a-zero", options, LengthFieldCodec::default());
        assert!(handle.is_writable());
        let waited = handle.wait_writable(Duration::from_millis(500));
        assert!(
            waited.is_ok(),
            "idle, writable, nothing in flight: {waited:?}"
        );
        let empty = handle.write_bytes(Bytes::new());
        assert!(empty.is_ok(), "an empty write: {empty:?}");
        let written = handle.write(Bytes::from_static(b"x"));
        assert!(written.is_ok(), "a write of one byte: {written:?}");
        let error = events.recv_timeout(STEP).unwrap();
        assert!(error.starts_with("error"), "{error}");
        assert!(error.contains("outbound queue full"), "{error}");
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        server.stop();
    });
}

/// As `writers_on_several_threads_with_a_stalled_reader_lose_nothing`, on TLS (records
/// count against the watermarks): every message arrives whole and in order, then
/// close_notify; no error.
#[test]
fn writers_on_several_threads_over_tls_with_a_stalled_reader_lose_nothing() {
    watchdog(LIMIT, || {
        use getty::codec::filter::TlsFilter;
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let (handles_tx, handles) = mpsc::channel();
        let (tx, events) = mpsc::channel();
        let server = TcpServer::builder()
            .tls(getty::tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
            .session_options(getty::SessionOptions::default().max_outbound(1 << 20))
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    LengthFieldCodec::default(),
                    HandsOut(handles_tx.clone(), tx.clone()),
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-a-tls-writers", server);
        let config = getty::tls::client_config(chain.as_bytes()).unwrap();
        let mut client = TlsFilter::client(config, "localhost").unwrap();
        let mut peer = connect_with_recv_buffer(addr, 16 * 1024);
        peer.set_read_timeout(Some(STEP)).unwrap();
        tls_exchange(&mut peer, &mut client, &[], 0);
        let handle: SessionHandle<LengthFieldCodec> = handles.recv_timeout(STEP).unwrap();
        let writers = spawn_writers(&handle, 3, 40);
        std::thread::sleep(Duration::from_millis(700));
        let reader = std::thread::spawn(move || tls_read_to_end(&mut peer, &mut client));
        join_writers(writers);
        handle.close().unwrap();
        let (plain, notified) = reader.join().unwrap();
        check_writers(split_frames(&plain), 3, 40);
        assert!(notified, "close_notify came");
        let seen: Vec<String> = events.try_iter().collect();
        assert!(
            !seen.iter().any(|e| e.starts_with("error")),
            "the session failed: {seen:?}"
        );
        server.stop();
    });
}

/// The binary messages of the server's (unmasked) WebSocket frames in `wire`, and the
/// close code if a close frame came.
fn ws_messages(wire: &[u8]) -> (Vec<&[u8]>, Option<u16>) {
    let mut at = 0;
    let mut messages = Vec::new();
    let mut close = None;
    while at + 2 <= wire.len() {
        let opcode = wire[at] & 0x0f;
        let (len, head) = match wire[at + 1] & 0x7f {
            126 => (u16::from_be_bytes([wire[at + 2], wire[at + 3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(wire[at + 2..at + 10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        assert!(at + head + len <= wire.len(), "a cut frame at {at}");
        let payload = &wire[at + head..at + head + len];
        match opcode {
            2 => {
                assert!(close.is_none(), "a message after the close");
                messages.push(payload);
            }
            8 => close = Some(u16::from_be_bytes([payload[0], payload[1]])),
            other => panic!("opcode {other}"),
        }
        at += head + len;
    }
    (messages, close)
}

/// Hands out WebSocket sessions' handles.
struct WsHandsOut(
    Sender<SessionHandle<getty::codec::RawCodec, getty::ws::Ws>>,
    Sender<String>,
);

impl Handler<getty::codec::RawCodec, getty::ws::Ws> for WsHandsOut {
    fn on_open(
        &mut self,
        s: &mut Session<getty::codec::RawCodec, getty::ws::Ws>,
    ) -> std::io::Result<()> {
        let _ = self.0.send(s.handle().unwrap());
        Ok(())
    }
    fn on_message(&mut self, _: &mut Session<getty::codec::RawCodec, getty::ws::Ws>, _: Bytes) {}
    fn on_error(
        &mut self,
        _: &mut Session<getty::codec::RawCodec, getty::ws::Ws>,
        error: &getty::Error,
    ) {
        let _ = self.1.send(format!("error {error}"));
    }
}

/// The same on a WebSocket: every message arrives whole and in order, then the close
/// frame (1000); no error.
#[test]
fn writers_on_several_threads_over_websocket_with_a_stalled_reader_lose_nothing() {
    watchdog(LIMIT, || {
        let (handles_tx, handles) = mpsc::channel();
        let (tx, events) = mpsc::channel();
        let server = getty::ws::WsServer::builder()
            .session_options(getty::SessionOptions::default().max_outbound(1 << 20))
            .route("/echo", move |_| {
                Ok((
                    getty::codec::RawCodec,
                    WsHandsOut(handles_tx.clone(), tx.clone()),
                ))
            })
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("review-a-ws-writers", server);
        let mut peer = connect_with_recv_buffer(addr, 16 * 1024);
        peer.set_read_timeout(Some(STEP)).unwrap();
        ws_upgrade(&mut peer);
        let handle = handles.recv_timeout(STEP).unwrap();
        let writers = spawn_writers(&handle, 3, 40);
        std::thread::sleep(Duration::from_millis(700));
        let reader = std::thread::spawn(move || drain(&mut peer));
        join_writers(writers);
        handle.close().unwrap();
        let (wire, ended) = reader.join().unwrap();
        assert!(ended, "a FIN after {} bytes", wire.len());
        let (messages, close) = ws_messages(&wire);
        check_writers(messages, 3, 40);
        assert_eq!(close, Some(1000));
        let seen: Vec<String> = events.try_iter().collect();
        assert!(
            !seen.iter().any(|e| e.starts_with("error")),
            "the session failed: {seen:?}"
        );
        server.stop();
    });
}

/// An entry that takes `String` commands and does nothing.
struct Idle;

impl getty::reactor::Entry for Idle {
    type Command = String;
    fn on_start(&mut self, _: &mut getty::reactor::Context<'_>) -> getty::reactor::Status {
        getty::reactor::Status::Continue
    }
    fn on_ready(
        &mut self,
        _: &mut getty::reactor::Context<'_>,
        _: getty::reactor::Ready,
    ) -> getty::reactor::Status {
        getty::reactor::Status::Continue
    }
}

/// Creates a group in `on_start`, spawns two `Idle` members into it, and tells its id.
struct Owner(Sender<getty::reactor::GroupId<String>>);

impl getty::reactor::Entry for Owner {
    type Command = String;
    fn on_start(&mut self, cx: &mut getty::reactor::Context<'_>) -> getty::reactor::Status {
        let group = cx.new_group::<String>().unwrap();
        cx.spawn_in(group, Idle);
        cx.spawn_in(group, Idle);
        let _ = self.0.send(group);
        getty::reactor::Status::Continue
    }
    fn on_ready(
        &mut self,
        _: &mut getty::reactor::Context<'_>,
        _: getty::reactor::Ready,
    ) -> getty::reactor::Status {
        getty::reactor::Status::Continue
    }
}

/// Serials come from one counter for the process now: two reactors that each create a
/// group in the same way get groups at the same index, but a group id from one reactor
/// names no group on the other. Used there, it has no members and an entry spawned into it
/// joins no group (before 8575cd6 both groups were created at the same serial, and the id
/// named the other reactor's group). On its own reactor, the group has its two members.
#[test]
fn a_group_id_from_one_reactor_names_no_group_on_another() {
    watchdog(LIMIT, || {
        let start = |name: &str| {
            let (tx, rx) = mpsc::channel();
            let reactor = getty::Reactor::start_thread(name, move |r| {
                r.spawn(Owner(tx));
                Ok(())
            })
            .unwrap();
            let group = rx.recv_timeout(STEP).unwrap();
            (reactor, group)
        };
        let (a, group_a) = start("review-a-groups-a");
        let (b, group_b) = start("review-a-groups-b");
        println!("{group_a:?} {group_b:?}");
        assert_ne!(group_a, group_b, "one id for two groups");
        let count = |r: &getty::reactor::ReactorThread, g| {
            r.handle()
                .query(move |sp| sp.group_members(g).len())
                .unwrap()
        };
        assert_eq!(count(&a, group_a), 2);
        assert_eq!(count(&b, group_b), 2);
        assert_eq!(
            count(&b, group_a),
            0,
            "another reactor's group id has members"
        );
        b.handle()
            .query(move |sp| {
                sp.spawn_in(group_a, Idle);
            })
            .unwrap();
        assert_eq!(
            count(&b, group_b),
            2,
            "spawned into a foreign id, joined a group"
        );
        assert_eq!(count(&a, group_a), 2);
        for r in [a, b] {
            r.handle().shutdown();
            r.join().unwrap();
        }
    });
}

/// Many writers contending for a small bound (8 KiB in flight, messages up to 6 KiB),
/// with a reader that reads all along: every writer refused wakes from `wait_writable`
/// when room comes (a lost wake-up leaves one asleep until its timeout, which fails its
/// write), and everything arrives in order.
#[test]
fn many_writers_contending_for_a_small_bound_are_all_woken() {
    watchdog(LIMIT, || {
        const WRITERS: u32 = 8;
        const EACH: u32 = 400;
        let options = getty::SessionOptions::default()
            .max_outbound(8 << 10)
            .watermarks(4 << 10, 2 << 10);
        let (server, mut peer, handle, events) =
            hands_out("review-a-contend", options, LengthFieldCodec::default());
        let reader = std::thread::spawn(move || drain(&mut peer));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let handle = handle.clone();
                std::thread::spawn(move || {
                    let mut refused = 0;
                    for n in 0..EACH {
                        let size = 8 + ((n as usize * 977 + w as usize * 131) % (6 << 10));
                        let mut payload = vec![b'.'; size];
                        payload[..4].copy_from_slice(&w.to_be_bytes());
                        payload[4..8].copy_from_slice(&n.to_be_bytes());
                        refused += write_heeding(&handle, Bytes::from(payload))?;
                    }
                    Ok::<u32, getty::Error>(refused)
                })
            })
            .collect();
        join_writers(writers);
        handle.close().unwrap();
        let (got, ended) = reader.join().unwrap();
        assert!(ended, "a FIN after {} bytes", got.len());
        let mut next = [0u32; WRITERS as usize];
        for payload in split_frames(&got) {
            let w = u32::from_be_bytes(payload[..4].try_into().unwrap()) as usize;
            let n = u32::from_be_bytes(payload[4..8].try_into().unwrap());
            assert_eq!(n, next[w], "writer {w}'s messages in order");
            next[w] += 1;
        }
        assert_eq!(next, [EACH; WRITERS as usize], "every message arrived");
        let seen: Vec<String> = events.try_iter().collect();
        assert!(
            !seen.iter().any(|e| e.starts_with("error")),
            "the session failed: {seen:?}"
        );
        server.stop();
    });
}

/// Hands the endpoint's handle out.
struct DatagramHandsOut(Sender<getty::udp::DatagramHandle<getty::codec::RawCodec>>);

impl getty::udp::DatagramHandler<getty::codec::RawCodec> for DatagramHandsOut {
    fn on_open(
        &mut self,
        s: &mut getty::udp::DatagramSession<getty::codec::RawCodec>,
    ) -> std::io::Result<()> {
        let _ = self.0.send(s.handle().unwrap());
        Ok(())
    }
    fn on_message(
        &mut self,
        _: &mut getty::udp::DatagramSession<getty::codec::RawCodec>,
        _: Bytes,
        _: std::net::SocketAddr,
    ) {
    }
}

/// A datagram endpoint's handle bounds its bytes in flight too: while the reactor is busy,
/// writes of 8 KiB to two peers are taken until they hold `max_outbound` (64 KiB), then
/// refused; once the reactor runs they all go out, each peer's in order, and the handle has
/// room again.
#[test]
fn a_datagram_handle_bounds_its_bytes_in_flight_to_many_peers() {
    watchdog(LIMIT, || {
        const DATAGRAM: usize = 8 << 10;
        let peers = [
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        ];
        let (tx, handles) = mpsc::channel();
        let endpoint = getty::udp::UdpEndpoint::builder()
            .session_options(getty::SessionOptions::default().max_outbound(64 << 10))
            .bind("127.0.0.1:0", move |_| {
                Ok((getty::codec::RawCodec, DatagramHandsOut(tx.clone())))
            })
            .unwrap();
        let server = Running::serve("review-a-udp-bound", endpoint);
        let handle = handles.recv_timeout(STEP).unwrap();
        let (release_tx, release) = mpsc::channel::<()>();
        let (held_tx, held) = mpsc::channel();
        server
            .handle()
            .execute(move |_| {
                let _ = held_tx.send(());
                let _ = release.recv_timeout(STEP);
            })
            .unwrap();
        held.recv_timeout(STEP).unwrap();
        let mut taken = 0u32;
        let refused = loop {
            let to = peers[taken as usize % 2].local_addr().unwrap();
            let mut payload = vec![b'u'; DATAGRAM];
            payload[..4].copy_from_slice(&taken.to_be_bytes());
            match handle.write_bytes_to(to, Bytes::from(payload)) {
                Ok(()) => taken += 1,
                Err(e) => break e,
            }
            assert!(taken <= 4096, "no bound");
        };
        release_tx.send(()).unwrap();
        assert!(matches!(refused, getty::Error::Backpressure), "{refused:?}");
        assert_eq!(taken, 8, "8 KiB datagrams in flight under a 64 KiB bound");
        handle.wait_writable(STEP).unwrap();
        for (p, peer) in peers.iter().enumerate() {
            peer.set_read_timeout(Some(STEP)).unwrap();
            let mut buf = vec![0u8; 64 << 10];
            for k in 0..taken / 2 {
                let n = peer.recv(&mut buf).unwrap();
                assert_eq!(n, DATAGRAM);
                let got = u32::from_be_bytes(buf[..4].try_into().unwrap());
                assert_eq!(got, 2 * k + p as u32, "peer {p}'s datagrams in order");
            }
        }
        server.stop();
    });
}

/// Queues `CLOSING_BULK` bytes of its own on its first message, then closes, and says so.
struct ClosesAfterBulk(Sender<SessionHandle<LengthFieldCodec>>, Sender<String>);

const CLOSING_BULK: usize = 8 << 20;

impl Handler<LengthFieldCodec> for ClosesAfterBulk {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        let _ = self.0.send(s.handle().unwrap());
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, _: Bytes) {
        for _ in 0..CLOSING_BULK / (64 << 10) {
            s.write(Bytes::from(vec![b'a'; 64 << 10])).unwrap();
        }
        s.close();
        let _ = self.1.send("closing".into());
    }
    fn on_close(&mut self, _: &mut Session<LengthFieldCodec>) {
        let _ = self.1.send("close".into());
    }
}

/// A handle used to accept writes (`Ok`) for a session that had started closing, for as
/// long as its queue took to flush (up to the write-stall timeout): each was dropped when
/// the reactor applied it, after the close. Now they are refused with `Closed` from the
/// moment the handler closes, while the session still flushes (not yet `is_closed`), and
/// a writer waiting for room hears it too.
#[test]
fn a_handle_refuses_writes_once_its_session_is_closing() {
    watchdog(LIMIT, || {
        let (handles_tx, handles) = mpsc::channel();
        let (tx, events) = mpsc::channel();
        // The watermarks above what the handler queues: the session stays writable.
        let options = getty::SessionOptions::default()
            .watermarks(32 << 20, 16 << 20)
            .max_outbound(64 << 20);
        let server = TcpServer::builder()
            .session_options(options)
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    LengthFieldCodec::default(),
                    ClosesAfterBulk(handles_tx.clone(), tx.clone()),
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("handle-closing", server);
        let mut peer = connect_with_recv_buffer(addr, 16 * 1024);
        let handle = handles.recv_timeout(STEP).unwrap();
        assert!(handle.write(Bytes::from_static(b"before")).is_ok());
        server.run_on(|_| ()); // applied: it goes ahead of the handler's bulk
        std::io::Write::write_all(&mut peer, &frame(b"bulk")).unwrap();
        assert_eq!(events.recv_timeout(STEP).unwrap(), "closing");
        let refused = handle.write(Bytes::from_static(b"after"));
        assert!(
            matches!(refused, Err(getty::Error::Closed)),
            "a write to a closing session: {refused:?}"
        );
        assert!(!handle.is_closed(), "the session still flushes");
        assert!(matches!(
            handle.wait_writable(Duration::from_secs(5)),
            Err(getty::Error::Closed)
        ));
        let (got, ended) = drain(&mut peer);
        assert!(ended, "the session closed after flushing");
        let frames = split_frames(&got);
        assert_eq!(
            frames.first(),
            Some(&&b"before"[..]),
            "the write before the close"
        );
        assert_eq!(frames.len(), 1 + CLOSING_BULK / (64 << 10));
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        server.stop();
    });
}

/// Closes on its first message, and only then makes a handle and writes through it (a
/// handler handing the rest of the work on once it decided to close).
struct ClosesThenHands(Sender<(Result<(), getty::Error>, Result<(), getty::Error>)>);

impl Handler<LengthFieldCodec> for ClosesThenHands {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, _: Bytes) {
        s.write(Bytes::from(vec![b'a'; 1024])).unwrap();
        s.close();
        let handle = s.handle().unwrap();
        let written = handle.write(Bytes::from_static(b"late"));
        let _ = self.0.send((written, handle.wait_writable(Duration::ZERO)));
    }
}

/// The first handle of a session made after its close had no state to be marked closing
/// when the close began: its writes were accepted and dropped (review s35-c). It is told
/// when it is made.
#[test]
fn a_handle_made_after_its_session_closed_refuses_writes() {
    watchdog(LIMIT, || {
        let (tx, answers) = mpsc::channel();
        let server = TcpServer::bind("127.0.0.1:0", move |_| {
            Ok((LengthFieldCodec::default(), ClosesThenHands(tx.clone())))
        })
        .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("handle-after-close", server);
        let mut peer = connect_with_recv_buffer(addr, 16 * 1024);
        std::io::Write::write_all(&mut peer, &frame(b"go")).unwrap();
        let (written, waited) = answers.recv_timeout(STEP).unwrap();
        assert!(matches!(written, Err(getty::Error::Closed)), "{written:?}");
        assert!(matches!(waited, Err(getty::Error::Closed)), "{waited:?}");
        let (got, ended) = drain(&mut peer);
        assert!(ended);
        assert_eq!(
            split_frames(&got).len(),
            1,
            "the write before the close alone"
        );
        server.stop();
    });
}

/// A graceful shutdown closed each session at once, ahead of the handle writes held
/// behind its high watermark: accepted while the session was writable, they were dropped
/// with grace time to spare (120 of 2,048 in the review). The shutdown's close now waits
/// behind them, as a handle's `close` does, and handles refuse writes from then on.
#[test]
fn a_graceful_shutdown_sends_the_handle_writes_held_before_it() {
    watchdog(LIMIT, || {
        let (server, mut peer, handle, events) = hands_out(
            "shutdown-held",
            Default::default(),
            LengthFieldCodec::default(),
        );
        // The reactor is kept busy while a writer posts: every write is accepted, and
        // reaches the session at once, far past its high watermark.
        let accepted = server.while_busy(|| {
            let mut accepted = 0u32;
            for n in 0..2_100u32 {
                let mut payload = vec![b'.'; 2048];
                payload[..4].copy_from_slice(&n.to_be_bytes());
                if handle.write(Bytes::from(payload)).is_ok() {
                    accepted += 1;
                }
            }
            accepted
        });
        server.run_on(|_| ());
        assert!(!handle.is_writable(), "writes are held");
        server
            .handle()
            .shutdown_graceful(Duration::from_secs(30))
            .unwrap();
        // Refused for backpressure until the reactor takes the shutdown, then as closing.
        let deadline = Instant::now() + STEP;
        loop {
            match handle.write(Bytes::from_static(b"late")) {
                Err(getty::Error::Closed) => break,
                Err(getty::Error::Backpressure) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                other => panic!("a write after the shutdown: {other:?}"),
            }
        }
        let (got, ended) = drain(&mut peer);
        assert!(ended, "the session closed after flushing");
        let frames = split_frames(&got);
        assert_eq!(
            frames.len() as u32,
            accepted,
            "every accepted write arrived"
        );
        for (n, frame) in frames.iter().enumerate() {
            assert_eq!(frame[..4], (n as u32).to_be_bytes(), "in order");
        }
        assert_eq!(events.recv_timeout(STEP).unwrap(), "close");
        server.join(STEP);
    });
}
