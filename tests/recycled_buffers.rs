//! `Outbound::recycle` (a chunk written whole goes back to the reactor's pool when
//! it alone holds its memory) over real loopback sockets: several sessions on one reactor
//! share its pool, so memory recycled too early by one session would be overwritten by
//! another session's next read, and a reply would come back with foreign bytes.
//!
//! Every reply is checked byte for byte: the echo (a zero-copy view of the read buffer, the
//! case the pool takes back), a payload built from the handler's own `Vec` (unique: the pool
//! takes it too), a `Bytes::from_static` (never), and messages the handler keeps (whole or
//! a slice) are checked on the server once every session is done.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{connect, frame, read_frame, watchdog, Running};
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::{TcpServer, TcpServerBuilder};
use getty::{Handler, Session, SessionOptions, SocketOptions};

const LIMIT: Duration = Duration::from_secs(150);
const CLIENTS: u32 = 4;
const ROUNDS: u32 = 30;
const USER_LEN: usize = 70_000;
const STATIC_LEN: usize = 8192;
/// Request sizes, cycled: around the 4 KiB chunk threshold, the 64 KiB pooled size, twice
/// it, and large frames up to the 1 MiB limit.
const SIZES: [usize; 10] = [
    4096,
    5000,
    16_384,
    70_000,
    200_000,
    256 * 1024,
    (1 << 20) - 4,
    100_000,
    64 * 1024 - 4,
    131_000,
];

const fn static_payload() -> [u8; STATIC_LEN] {
    let mut a = [0u8; STATIC_LEN];
    let mut i = 0;
    while i < STATIC_LEN {
        a[i] = (i % 253) as u8;
        i += 1;
    }
    a
}
static STATIC: [u8; STATIC_LEN] = static_payload();

/// Byte `i` of request `round` of `client` (`len` bytes): the ids first, then a pattern that
/// differs per client and round, so that bytes of another message show.
fn byte(client: u32, round: u32, len: usize, i: usize) -> u8 {
    let mut head = [0u8; 12];
    head[..4].copy_from_slice(&client.to_be_bytes());
    head[4..8].copy_from_slice(&round.to_be_bytes());
    head[8..].copy_from_slice(&(len as u32).to_be_bytes());
    if i < 12 {
        return head[i];
    }
    let x = (i as u32).wrapping_mul(2_654_435_761) >> 24;
    (x as u8) ^ (client.wrapping_mul(37).wrapping_add(round.wrapping_mul(11)) as u8)
}

fn request(client: u32, round: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| byte(client, round, len, i)).collect()
}

/// The handler's own payload for a request: another pattern.
fn user_payload(client: u32, round: u32) -> Vec<u8> {
    request(client ^ 0x55aa, round ^ 0xffff, USER_LEN)
}

fn ids(m: &[u8]) -> (u32, u32, usize) {
    let c = u32::from_be_bytes(m[..4].try_into().unwrap());
    let r = u32::from_be_bytes(m[4..8].try_into().unwrap());
    let l = u32::from_be_bytes(m[8..12].try_into().unwrap()) as usize;
    (c, r, l)
}

/// A message the handler keeps: `bytes` is `[from..]` of request `round` of `client`.
struct Kept {
    client: u32,
    round: u32,
    len: usize,
    from: usize,
    bytes: Bytes,
}

impl Kept {
    fn intact(&self) -> bool {
        self.bytes.len() == self.len - self.from
            && self
                .bytes
                .iter()
                .enumerate()
                .all(|(i, &b)| b == byte(self.client, self.round, self.len, self.from + i))
    }
}

struct Mixed {
    kept: Vec<Kept>,
    all_intact: Arc<AtomicBool>,
}

impl Handler<LengthFieldCodec> for Mixed {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        if msg.len() == 1 {
            // The client's last request: check what was kept, answer with the verdict.
            let ok = self.kept.iter().all(Kept::intact);
            if !ok {
                self.all_intact.store(false, Ordering::SeqCst);
            }
            let _ = s.write(Bytes::from(vec![ok as u8]));
            return;
        }
        let (client, round, len) = ids(&msg);
        match round % 3 {
            0 => self.kept.push(Kept {
                client,
                round,
                len,
                from: 0,
                bytes: msg.clone(),
            }),
            1 => self.kept.push(Kept {
                client,
                round,
                len,
                from: len / 2,
                bytes: msg.slice(len / 2..),
            }),
            _ => {}
        }
        s.write(msg).expect("echo");
        s.write(Bytes::from(user_payload(client, round)))
            .expect("user payload");
        s.write(Bytes::from_static(&STATIC))
            .expect("static payload");
    }
}

/// One client: a writer thread sends every request (pipelined, as fast as the server
/// reads), this thread reads and checks every reply.
fn client(addr: SocketAddr, client: u32) -> Result<(), String> {
    let stream = connect(addr);
    let mut writer: TcpStream = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for round in 0..ROUNDS {
            let len = SIZES[(round as usize + client as usize) % SIZES.len()];
            writer
                .write_all(&frame(&request(client, round, len)))
                .unwrap();
        }
        writer.write_all(&frame(&[0])).unwrap();
    });
    let mut reader = stream;
    let mut failure = None;
    for round in 0..ROUNDS {
        let len = SIZES[(round as usize + client as usize) % SIZES.len()];
        let echo = read_frame(&mut reader);
        let user = read_frame(&mut reader);
        let stat = read_frame(&mut reader);
        if failure.is_some() {
            continue;
        }
        if echo != request(client, round, len) {
            let at = echo
                .iter()
                .enumerate()
                .position(|(i, &b)| i >= len || b != byte(client, round, len, i));
            failure = Some(format!(
                "client {client} round {round}: the echo of {len} B ({} B) differs at {at:?}",
                echo.len()
            ));
        } else if user != user_payload(client, round) {
            failure = Some(format!(
                "client {client} round {round}: the handler's Vec payload differs"
            ));
        } else if stat[..] != STATIC[..] {
            failure = Some(format!(
                "client {client} round {round}: the static payload differs"
            ));
        }
    }
    let verdict = read_frame(&mut reader);
    sender.join().expect("the writer");
    if let Some(f) = failure {
        return Err(f);
    }
    if verdict != [1] {
        return Err(format!(
            "client {client}: a message the handler kept changed"
        ));
    }
    Ok(())
}

/// A server of [`Mixed`] sessions, configured by `builder`; the flag tells whether every
/// message the handlers kept was still intact when their sessions ended.
fn serve_mixed(name: &str, builder: TcpServerBuilder) -> (Running, SocketAddr, Arc<AtomicBool>) {
    let all_intact = Arc::new(AtomicBool::new(true));
    let flag = all_intact.clone();
    let server = builder
        .session_options(SessionOptions::default().max_outbound(16 << 20))
        .bind("127.0.0.1:0", move |_| {
            Ok((
                LengthFieldCodec::default(),
                Mixed {
                    kept: Vec::new(),
                    all_intact: flag.clone(),
                },
            ))
        })
        .unwrap();
    let addr = server.local_addr();
    (Running::serve(name, server), addr, all_intact)
}

fn run(socket_options: SocketOptions) {
    let builder = TcpServer::builder().socket_options(socket_options);
    let (reactor, addr, all_intact) = serve_mixed("recycled", builder);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| std::thread::spawn(move || client(addr, c)))
        .collect();
    let results: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("a client thread"))
        .collect();
    reactor.stop();
    for r in &results {
        if let Err(e) = r {
            panic!("{e}");
        }
    }
    assert!(all_intact.load(Ordering::SeqCst));
}

/// Echoes taken by the socket in several writes (32 KiB send buffer): each chunk is
/// recycled only after its last byte left, while the other sessions read into the pool.
#[test]
fn concurrent_sessions_get_every_reply_byte_exact_through_a_small_send_buffer() {
    watchdog(LIMIT, || {
        run(SocketOptions::default().send_buffer_size(Some(32 * 1024)));
    });
}

/// The same with the default send buffer: most chunks leave in one write.
#[test]
fn concurrent_sessions_get_every_reply_byte_exact_with_the_default_send_buffer() {
    watchdog(LIMIT, || {
        run(SocketOptions::default());
    });
}

/// Through TLS the queue is drained into the filter (`Outbound::drain_into`), which
/// recycles each chunk once rustls has taken its bytes; four sessions share the pool.
/// Each client is a blocking rustls stream, one request at a time.
#[cfg(feature = "tls")]
#[test]
fn tls_sessions_get_every_reply_byte_exact() {
    use getty::codec::rustls;
    use getty::tls;
    watchdog(LIMIT, || {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let server_config = tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
        let client_config = tls::client_config(chain.as_bytes()).unwrap();
        let builder = TcpServer::builder()
            .tls(server_config)
            .socket_options(SocketOptions::default().send_buffer_size(Some(32 * 1024)));
        let (reactor, addr, all_intact) = serve_mixed("recycled-tls", builder);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let config = client_config.clone();
                std::thread::spawn(move || -> Result<(), String> {
                    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                    let conn = rustls::ClientConnection::new(config, name).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, connect(addr));
                    for round in 0..ROUNDS / 2 {
                        let len = SIZES[(round as usize + client as usize) % SIZES.len()];
                        tls.write_all(&frame(&request(client, round, len))).unwrap();
                        let echo = read_frame(&mut tls);
                        let user = read_frame(&mut tls);
                        let stat = read_frame(&mut tls);
                        if echo != request(client, round, len) {
                            return Err(format!("tls client {client} round {round}: echo differs"));
                        }
                        if user != user_payload(client, round) || stat[..] != STATIC[..] {
                            return Err(format!(
                                "tls client {client} round {round}: payload differs"
                            ));
                        }
                    }
                    tls.write_all(&frame(&[0])).unwrap();
                    if read_frame(&mut tls) != [1] {
                        return Err(format!("tls client {client}: a kept message changed"));
                    }
                    Ok(())
                })
            })
            .collect();
        let results: Vec<_> = clients
            .into_iter()
            .map(|c| c.join().expect("a client thread"))
            .collect();
        reactor.stop();
        for r in results {
            r.unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(all_intact.load(Ordering::SeqCst));
    });
}

/// A member of one group: every message it gets goes to the others.
struct Relay(getty::SessionGroup<LengthFieldCodec>);

impl Handler<LengthFieldCodec> for Relay {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        self.0.join(s).map_err(std::io::Error::other)?;
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        self.0.broadcast_except(msg, s.id()).expect("broadcast");
    }
}

/// A large broadcast is one `Bytes` shared by every member's queue: the member that writes
/// it last recycles it, while the others (32 KiB send buffers) and the large frames the
/// members send meanwhile read into the pool. Every member checks every broadcast.
#[test]
fn large_broadcasts_shared_across_members_arrive_byte_exact() {
    watchdog(LIMIT, || {
        const MEMBERS: u32 = 4;
        const EACH: u32 = 12;
        const BIG: [usize; 7] = [
            70_000,
            150_000,
            300_000,
            600_000,
            (1 << 20) - 4,
            5000,
            40_000,
        ];
        let group = getty::SessionGroup::builder(LengthFieldCodec::default())
            .slow_consumer(getty::SlowConsumer::Close)
            .max_pending(64 << 20)
            .build();
        let server = TcpServer::builder()
            .socket_options(SocketOptions::default().send_buffer_size(Some(32 * 1024)))
            .session_options(SessionOptions::default().max_outbound(64 << 20))
            .bind("127.0.0.1:0", move |_| {
                Ok((LengthFieldCodec::default(), Relay(group.clone())))
            })
            .unwrap();
        let addr = server.local_addr();
        let reactor = Running::serve("recycled-group", server);
        let streams: Vec<TcpStream> = (0..MEMBERS).map(|_| connect(addr)).collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while reactor.entry_count() < 1 + MEMBERS as usize && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        let readers: Vec<_> = streams
            .iter()
            .enumerate()
            .map(|(me, s)| {
                let mut r = s.try_clone().unwrap();
                std::thread::spawn(move || -> Result<(), String> {
                    let mut next = [0u32; MEMBERS as usize];
                    for _ in 0..(MEMBERS - 1) * EACH {
                        let m = read_frame(&mut r);
                        let (sender, seq, len) = ids(&m);
                        if sender as usize == me || seq != next[sender as usize] {
                            return Err(format!("member {me}: {sender}/{seq} out of order"));
                        }
                        next[sender as usize] += 1;
                        if m != request(sender, seq, len) {
                            return Err(format!(
                                "member {me}: broadcast {sender}/{seq} ({len} B) damaged"
                            ));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        let writers: Vec<_> = streams
            .iter()
            .enumerate()
            .map(|(me, s)| {
                let mut w = s.try_clone().unwrap();
                std::thread::spawn(move || {
                    for seq in 0..EACH {
                        let len = BIG[(seq as usize + me) % BIG.len()];
                        w.write_all(&frame(&request(me as u32, seq, len))).unwrap();
                    }
                })
            })
            .collect();
        writers.into_iter().for_each(|w| w.join().unwrap());
        let results: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        reactor.stop();
        for r in results {
            r.unwrap_or_else(|e| panic!("{e}"));
        }
    });
}
