//! A soak: TCP, TLS, WebSocket and UDP echo servers on one reactor, under steady traffic
//! from blocking clients that check every echo byte for byte and churn their connections
//! (each closes after a random number of messages and dials again). Every 10 seconds it
//! prints a line: resident memory, open descriptors, live sessions, messages per second
//! and the p99 round trip. It fails (exit 1) on a lost or corrupted echo, or when memory or
//! descriptors grow past the warm-up (the last third of the run against the first after
//! warm-up), so a leak shows as a failure, not as a line to squint at.
//!
//! ```sh
//! cargo run --release --example soak                 # 10 minutes
//! cargo run --release --example soak -- --minutes 60
//! ```
//!
//! `tests/soak.sh` runs it; CI does not (it takes minutes by design).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use getty::codec::filter::{Filter, TlsFilter};
use getty::codec::{Bytes, LengthFieldCodec, Message, MessageCodec};
use getty::reactor::Reactor;
use getty::tcp::TcpServer;
use getty::udp::{DatagramHandler, DatagramSession, UdpEndpoint};
use getty::ws::{Ws, WsServer};
use getty::{Handler, Metrics, Session};
use hdrhistogram::Histogram;

/// Clients per transport, each with one message in flight.
const CLIENTS: usize = 8;
/// How long one read may wait for its echo before it counts as lost.
const ECHO_WAIT: Duration = Duration::from_secs(5);
/// Growth allowed past the warm-up: memory, then descriptors.
const RSS_SLACK: u64 = 8 << 20;
const FD_SLACK: u64 = 16;

struct Echo;

impl Handler<LengthFieldCodec> for Echo {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = s.write(msg);
    }
}

struct WsEcho;

impl Handler<MessageCodec, Ws> for WsEcho {
    fn on_message(&mut self, s: &mut Session<MessageCodec, Ws>, msg: Message) {
        let _ = s.write(msg);
    }
}

struct UdpEcho;

impl DatagramHandler<LengthFieldCodec> for UdpEcho {
    fn on_message(
        &mut self,
        s: &mut DatagramSession<LengthFieldCodec>,
        msg: Bytes,
        peer: SocketAddr,
    ) {
        let _ = s.write_to(peer, msg);
    }
}

/// Where the servers listen, and what a TLS client needs to trust them.
struct Servers {
    tcp: SocketAddr,
    tls: SocketAddr,
    ws: SocketAddr,
    udp: SocketAddr,
    ca: String,
}

/// What the clients counted, shared with the reporter.
#[derive(Default)]
struct Totals {
    echoes: AtomicU64,
    reconnects: AtomicU64,
    failures: AtomicU64,
    latency: Mutex<Option<Histogram<u64>>>,
}

impl Totals {
    fn record(&self, took: Duration) {
        self.echoes.fetch_add(1, Ordering::Relaxed);
        let mut latency = self.latency.lock().unwrap();
        let histogram = latency.get_or_insert_with(|| Histogram::new(3).unwrap());
        let _ = histogram.record(took.as_micros() as u64);
    }

    fn fail(&self, what: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        eprintln!("FAIL: {what}");
    }
}

fn main() -> ExitCode {
    let minutes = std::env::args()
        .skip_while(|a| a != "--minutes")
        .nth(1)
        .map_or(10.0, |m| {
            m.parse::<f64>().expect("--minutes takes a number")
        });
    let run_for = Duration::from_secs_f64(minutes * 60.0);
    let (reactor, servers) = start_servers().expect("start the servers");
    let servers = Arc::new(servers);
    let totals = Arc::new(Totals::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        type Run = fn(&Servers, &Totals, &AtomicBool, u64) -> io::Result<()>;
        let runs: [(&str, Run); 4] = [
            ("tcp", tcp_client),
            ("tls", tls_client),
            ("ws", ws_client),
            ("udp", udp_client),
        ];
        for (kind, run) in runs {
            let (servers, totals, stop) = (servers.clone(), totals.clone(), stop.clone());
            let seed = (i as u64) << 8 | kind.len() as u64;
            clients.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = run(&servers, &totals, &stop, seed) {
                        totals.fail(&format!("{kind} client {i}: {e}"));
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }));
        }
    }
    let samples = report(reactor.handle(), &totals, run_for);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    reactor.handle().shutdown();
    let _ = reactor.join();
    verdict(&samples, &totals)
}

fn start_servers() -> io::Result<(getty::reactor::ReactorThread, Servers)> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(io::Error::other)?;
    let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
    let tcp =
        TcpServer::builder().bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))?;
    let tls = TcpServer::builder()
        .tls(getty::tls::server_config(chain.as_bytes(), key.as_bytes())?)
        .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))?;
    let ws = WsServer::builder()
        .route("/echo", |_| Ok((MessageCodec, WsEcho)))
        .bind("127.0.0.1:0")?;
    let udp = UdpEndpoint::builder().bind("127.0.0.1:0", |_| {
        Ok((LengthFieldCodec::default(), UdpEcho))
    })?;
    let servers = Servers {
        tcp: tcp.local_addr(),
        tls: tls.local_addr(),
        ws: ws.local_addr(),
        udp: udp.local_addr(),
        ca: chain,
    };
    let reactor = Reactor::start_thread("soak-servers", move |r| {
        r.spawn(tcp);
        r.spawn(tls);
        r.spawn(ws);
        r.spawn(udp);
        Ok(())
    })?;
    Ok((reactor, servers))
}

/// A payload of 1 byte to 16 KiB (mostly small), its first 8 bytes a sequence number.
fn payload(rng: &mut fastrand::Rng, seq: u64) -> Vec<u8> {
    let len = if rng.u8(..) < 240 {
        rng.usize(8..512)
    } else {
        rng.usize(8..16 * 1024)
    };
    let mut p: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut wire = (payload.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(payload);
    wire
}

/// One connection's life: a random number of round trips, each checked, then a close.
fn messages_before_churn(rng: &mut fastrand::Rng) -> usize {
    rng.usize(50..2000)
}

fn tcp_client(s: &Servers, totals: &Totals, stop: &AtomicBool, seed: u64) -> io::Result<()> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x7c9);
    let mut stream = TcpStream::connect(s.tcp)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(ECHO_WAIT))?;
    for seq in 0..messages_before_churn(&mut rng) as u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let wire = framed(&payload(&mut rng, seq));
        let began = Instant::now();
        stream.write_all(&wire)?;
        let mut echo = vec![0u8; wire.len()];
        stream.read_exact(&mut echo)?;
        if echo != wire {
            totals.fail(&format!("tcp echo {seq} differs"));
        }
        totals.record(began.elapsed());
    }
    totals.reconnects.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn tls_client(s: &Servers, totals: &Totals, stop: &AtomicBool, seed: u64) -> io::Result<()> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x715);
    let config = getty::tls::client_config(s.ca.as_bytes())?;
    let mut tls = TlsFilter::client(config, "localhost").map_err(io::Error::other)?;
    let mut stream = TcpStream::connect(s.tls)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(ECHO_WAIT))?;
    let (mut wire_in, mut plain) = (BytesMut::new(), BytesMut::new());
    for seq in 0..messages_before_churn(&mut rng) as u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let message = framed(&payload(&mut rng, seq));
        let began = Instant::now();
        let mut wire_out = BytesMut::new();
        tls.encode(&message, &mut wire_out)
            .map_err(io::Error::other)?;
        let mut chunk = [0u8; 16 * 1024];
        while plain.len() < message.len() {
            tls.flush(&mut wire_out).map_err(io::Error::other)?;
            stream.write_all(&wire_out)?;
            wire_out.clear();
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            wire_in.extend_from_slice(&chunk[..n]);
            tls.decode(&mut wire_in, &mut plain, 1 << 20)
                .map_err(io::Error::other)?;
        }
        if plain.split_to(message.len()) != message[..] {
            totals.fail(&format!("tls echo {seq} differs"));
        }
        totals.record(began.elapsed());
    }
    totals.reconnects.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn ws_client(s: &Servers, totals: &Totals, stop: &AtomicBool, seed: u64) -> io::Result<()> {
    use tungstenite::Message as WsMessage;
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x3e5);
    let stream = TcpStream::connect(s.ws)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(ECHO_WAIT))?;
    let url = format!("ws://{}/echo", s.ws);
    let (mut socket, _) = tungstenite::client(url.as_str(), stream).map_err(io::Error::other)?;
    for seq in 0..messages_before_churn(&mut rng) as u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let message = payload(&mut rng, seq);
        let began = Instant::now();
        socket
            .send(WsMessage::binary(message.clone()))
            .map_err(io::Error::other)?;
        match socket.read().map_err(io::Error::other)? {
            WsMessage::Binary(echo) if echo[..] == message[..] => totals.record(began.elapsed()),
            other => totals.fail(&format!("ws echo {seq} differs: {} bytes", other.len())),
        }
    }
    let _ = socket.close(None);
    totals.reconnects.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn udp_client(s: &Servers, totals: &Totals, stop: &AtomicBool, seed: u64) -> io::Result<()> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x0d9);
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(s.udp)?;
    socket.set_read_timeout(Some(ECHO_WAIT))?;
    let mut buf = vec![0u8; 65_536];
    for seq in 0..messages_before_churn(&mut rng) as u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut message = payload(&mut rng, seq);
        message.truncate(1400); // one datagram, under any loopback MTU
        let wire = framed(&message);
        let began = Instant::now();
        socket.send(&wire)?;
        let n = socket.recv(&mut buf)?;
        if buf[..n] != wire[..] {
            totals.fail(&format!("udp echo {seq} differs"));
        }
        totals.record(began.elapsed());
    }
    totals.reconnects.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// One line of the report.
struct Sample {
    at: Duration,
    rss: u64,
    fds: u64,
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// Prints a line every 10 s until `run_for` has passed; returns the samples.
fn report(reactor: &getty::ReactorHandle, totals: &Totals, run_for: Duration) -> Vec<Sample> {
    let began = Instant::now();
    let mut samples = Vec::new();
    let mut last_echoes = 0;
    println!(
        "{:>6} {:>9} {:>5} {:>8} {:>9} {:>8} {:>7}",
        "time", "RSS KiB", "fds", "sessions", "msgs/s", "p99 µs", "redials"
    );
    while began.elapsed() < run_for {
        std::thread::sleep(Duration::from_secs(10).min(run_for.saturating_sub(began.elapsed())));
        let echoes = totals.echoes.load(Ordering::Relaxed);
        let p99 = totals
            .latency
            .lock()
            .unwrap()
            .take()
            .map_or(0, |h| h.value_at_quantile(0.99));
        let sessions = Metrics::of(reactor).map_or(0, |m| m.sessions_open());
        let sample = Sample {
            at: began.elapsed(),
            rss: resident_bytes(),
            fds: open_descriptors(),
        };
        println!(
            "{:>5}s {:>9} {:>5} {:>8} {:>9} {:>8} {:>7}",
            sample.at.as_secs(),
            sample.rss >> 10,
            sample.fds,
            sessions,
            (echoes - last_echoes) / 10,
            p99,
            totals.reconnects.load(Ordering::Relaxed),
        );
        last_echoes = echoes;
        samples.push(sample);
    }
    samples
}

/// Passes when nothing failed and, past the warm-up (the first fifth of the run), the last
/// third's peak memory and descriptors are within a small slack of the first third's.
fn verdict(samples: &[Sample], totals: &Totals) -> ExitCode {
    let failures = totals.failures.load(Ordering::Relaxed);
    let settled: Vec<&Sample> = samples.iter().skip(samples.len() / 5).collect();
    let third = (settled.len() / 3).max(1);
    let peak = |s: &[&Sample], f: fn(&Sample) -> u64| s.iter().map(|x| f(x)).max().unwrap_or(0);
    let (early, late) = (
        &settled[..third.min(settled.len())],
        &settled[settled.len().saturating_sub(third)..],
    );
    let rss = (peak(early, |s| s.rss), peak(late, |s| s.rss));
    let fds = (peak(early, |s| s.fds), peak(late, |s| s.fds));
    println!(
        "{} echoes, {} connections churned, {failures} failures; RSS peak {} -> {} KiB, descriptors {} -> {}",
        totals.echoes.load(Ordering::Relaxed),
        totals.reconnects.load(Ordering::Relaxed),
        rss.0 >> 10,
        rss.1 >> 10,
        fds.0,
        fds.1,
    );
    let flat = rss.1 <= rss.0 + RSS_SLACK && fds.1 <= fds.0 + FD_SLACK;
    if failures == 0 && flat && !samples.is_empty() {
        println!("PASS");
        ExitCode::SUCCESS
    } else {
        println!("FAIL");
        ExitCode::FAILURE
    }
}
