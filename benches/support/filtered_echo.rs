//! An echo round trip through getty-rs on both ends (server and client each on a reactor
//! thread), with whatever filters the session options and TLS settings ask for. Shared by
//! the compression and TLS benches.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use getty::codec::rustls::{ClientConfig, ServerConfig};
use getty::codec::{Bytes, LengthFieldCodec};
use getty::reactor::ReactorThread;
use getty::tcp::{TcpClient, TcpServer};
use getty::{Handler, Reactor, Session, SessionOptions, Stats};

/// One configuration of the two ends.
#[derive(Clone, Default)]
pub struct Ends {
    pub options: SessionOptions,
    pub tls: Option<(Arc<ServerConfig>, Arc<ClientConfig>)>,
}

/// What one run measured.
pub struct Outcome {
    pub elapsed: Duration,
    pub messages: u64,
    /// The client's counters: plain bytes out, wire bytes out.
    pub client: Stats,
    pub server_cpu: Duration,
}

impl Outcome {
    pub fn messages_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
    pub fn plain_mb_per_sec(&self) -> f64 {
        self.client.plain_bytes_out as f64 / self.elapsed.as_secs_f64() / 1e6
    }
    /// Wire bytes per plain byte, client to server.
    pub fn wire_ratio(&self) -> f64 {
        self.client.bytes_out as f64 / self.client.plain_bytes_out.max(1) as f64
    }
    pub fn messages_per_server_cpu_sec(&self) -> f64 {
        self.messages as f64 / self.server_cpu.as_secs_f64().max(1e-9)
    }
}

struct Echo;
impl Handler<LengthFieldCodec> for Echo {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = s.write(msg);
    }
}

/// Keeps `window` messages in flight until `count` have come back, then reports.
struct Driver {
    payloads: Arc<Vec<Bytes>>,
    count: u64,
    window: u64,
    sent: u64,
    received: u64,
    started: Instant,
    done: mpsc::Sender<(Duration, Stats)>,
}

impl Driver {
    fn send_next(&mut self, s: &mut Session<LengthFieldCodec>) {
        let payload = &self.payloads[self.sent as usize % self.payloads.len()];
        s.write(payload.clone()).expect("the window fits the queue");
        self.sent += 1;
    }
}

impl Handler<LengthFieldCodec> for Driver {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        self.started = Instant::now();
        while self.sent < self.window.min(self.count) {
            self.send_next(s);
        }
        Ok(())
    }

    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, _echo: Bytes) {
        self.received += 1;
        if self.received == self.count {
            let _ = self.done.send((self.started.elapsed(), s.stats()));
            s.close();
        } else if self.sent < self.count {
            self.send_next(s);
        }
    }

    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, error: &getty::Error) {
        panic!("bench client failed: {error}");
    }
}

fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime fills the timespec it is given.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn cpu_of(reactor: &ReactorThread) -> Duration {
    reactor
        .handle()
        .query(|_| thread_cpu())
        .expect("reactor running")
}

/// Echoes `count` messages (cycling through `payloads`) with `window` in flight.
pub fn run(ends: &Ends, payloads: Arc<Vec<Bytes>>, count: u64, window: u64) -> Outcome {
    let options = ends.options.clone().max_message_len(8 << 20);
    let mut server = TcpServer::builder().session_options(options.clone());
    if let Some((config, _)) = &ends.tls {
        server = server.tls(Arc::clone(config));
    }
    let server = server
        .bind("127.0.0.1:0", |_| Ok((LengthFieldCodec::default(), Echo)))
        .expect("bind");
    let addr = server.local_addr();
    let server_thread = Reactor::start_thread("bench-server", move |r| {
        r.spawn(Box::new(server));
        Ok(())
    })
    .expect("server reactor");

    let (done_tx, done_rx) = mpsc::channel();
    let mut client = TcpClient::builder()
        .session_options(options)
        .max_consecutive_failures(Some(1));
    if let Some((_, config)) = &ends.tls {
        client = client.tls(Arc::clone(config), "localhost");
    }
    let client = client
        .build(addr, move |_| {
            Ok((
                LengthFieldCodec::default(),
                Driver {
                    payloads: Arc::clone(&payloads),
                    count,
                    window,
                    sent: 0,
                    received: 0,
                    started: Instant::now(),
                    done: done_tx.clone(),
                },
            ))
        })
        .expect("client");
    let cpu_before = cpu_of(&server_thread);
    let client_thread = Reactor::start_thread("bench-client", move |r| {
        r.spawn(Box::new(client));
        Ok(())
    })
    .expect("client reactor");
    let (elapsed, stats) = done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the run finished in time");
    let server_cpu = cpu_of(&server_thread) - cpu_before;
    client_thread.handle().shutdown();
    client_thread.join().expect("client reactor");
    server_thread.handle().shutdown();
    server_thread.join().expect("server reactor");
    Outcome {
        elapsed,
        messages: count,
        client: stats,
        server_cpu,
    }
}

/// The median of `runs` runs by elapsed time.
pub fn median_of(runs: usize, mut one: impl FnMut() -> Outcome) -> Outcome {
    let mut all: Vec<Outcome> = (0..runs.max(1)).map(|_| one()).collect();
    all.sort_by_key(|o| o.elapsed);
    all.swap_remove(all.len() / 2)
}

pub fn quick() -> bool {
    std::env::var("GETTY_BENCH_QUICK").is_ok_and(|v| v != "0")
}
