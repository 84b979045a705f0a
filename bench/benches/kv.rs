//! The kv example against Debian's `redis-server`, under the same `redis-benchmark` load.
//!
//! One after the other on this machine: `redis-server` (started with `--save ''
//! --appendonly no --io-threads 1`: no persistence, one I/O thread, its event loop being the
//! reference single-threaded server of the field) and the kv example's server on one
//! reactor (its code compiled into this bench with `#[path]`, on a reactor thread of this
//! process, which does nothing else while it is measured). Each load is
//! `redis-benchmark -c 50 -d 64 -P {1,16} -t {set,get} --csv`; the figures are
//! redis-benchmark's requests/s, p50 and p99, and the server's **requests per CPU-second**:
//! the requests over the server process's `utime + stime` (from `/proc/PID/stat`, in clock
//! ticks of 10 ms) during the run. The last column is kv's figure over redis's.
//!
//! `cargo bench -p getty-bench --bench kv`; `KV_BENCH_REQUESTS=N` sets the requests of a `-P 16` run
//! (default 1,000,000; a `-P 1` run makes a fifth of them). Each load's latency percentiles
//! are also drawn, to `bench-charts/kv-<test>-P<pipeline>.svg` in the target directory
//! (`GETTY_BENCH_CHART_DIR` elsewhere). Without `redis-server` or
//! `redis-benchmark` it prints why and does nothing.
#![cfg(target_os = "linux")]

#[path = "support/chart.rs"]
mod chart;
#[allow(dead_code)]
#[path = "../../examples/kv/commands.rs"]
mod commands;
#[allow(dead_code)]
#[path = "../../examples/kv/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "../../examples/kv/store.rs"]
mod store;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The latency percentiles charted after each load, as redis-benchmark reports them.
const CHART_PERCENTILES: [&str; 4] = ["p50", "p95", "p99", "max"];

/// One run's figures.
struct Figures {
    rps: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    cpu_secs: f64,
    requests: u64,
}

impl Figures {
    fn per_cpu_second(&self) -> f64 {
        self.requests as f64 / self.cpu_secs.max(0.01)
    }

    /// One server's bars in a latency chart (in µs), in the order of [`CHART_PERCENTILES`].
    fn chart_series(&self, server: &str) -> chart::Series {
        chart::Series {
            name: server.to_owned(),
            micros: [self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms]
                .iter()
                .map(|ms| ms * 1e3)
                .collect(),
        }
    }
}

/// Draws both servers' latency percentiles under one load and prints the chart's path.
fn chart_load(test: &str, pipeline: u32, servers: [(&Target, &Figures); 2]) {
    chart::LatencyChart {
        bench: "kv",
        scenario: &format!("{test}-P{pipeline}"),
        title: &format!("kv: redis-benchmark -c 50 -d 64 -P {pipeline} -t {test}, request latency"),
        percentiles: &CHART_PERCENTILES,
        series: servers
            .iter()
            .map(|(target, figures)| figures.chart_series(target.name))
            .collect(),
    }
    .report();
}

/// A server under test: its process and port.
struct Target {
    name: &'static str,
    pid: u32,
    port: u16,
}

fn tool_runs(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The CPU time process `pid` has used so far (user + system).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15.
    let after_name = &stat[stat.rfind(')').expect("stat has a name") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// Runs one `redis-benchmark` load against `target`; its figures and the server's CPU.
fn run(target: &Target, test: &str, pipeline: u32, requests: u64) -> Figures {
    let before = cpu_time(target.pid);
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &target.port.to_string()])
        .args(["-c", "50", "-d", "64", "-t", test, "--csv"])
        .args(["-P", &pipeline.to_string(), "-n", &requests.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("run redis-benchmark");
    let cpu = cpu_time(target.pid) - before;
    assert!(
        output.status.success(),
        "redis-benchmark failed: {}",
        output.status
    );
    let csv = String::from_utf8_lossy(&output.stdout);
    let row = csv
        .lines()
        .find(|line| line.starts_with(&format!("\"{}\"", test.to_uppercase())))
        .unwrap_or_else(|| panic!("no result row in {csv}"));
    // After the test's name: requests/s, then the average, min, p50, p95, p99 and max
    // latencies in ms.
    let cells: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|cell| cell.trim_matches('"').parse().expect("a number"))
        .collect();
    Figures {
        rps: cells[0],
        p50_ms: cells[3],
        p95_ms: cells[4],
        p99_ms: cells[5],
        max_ms: cells[6],
        cpu_secs: cpu.as_secs_f64(),
        requests,
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// Waits until a server answers `PING` on `port`.
fn wait_until_serving(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let mut reply = [0u8; 7];
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            if stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() {
                assert_eq!(&reply, b"+PONG\r\n");
                return;
            }
        }
        assert!(Instant::now() < deadline, "no server on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the redis-server this bench started when dropped.
struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> (RedisServer, Target) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--io-threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let target = Target {
        name: "redis-server",
        pid: child.id(),
        port,
    };
    let server = RedisServer(child);
    wait_until_serving(port);
    (server, target)
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (a filter) is ignored.
    for tool in ["redis-server", "redis-benchmark"] {
        if !tool_runs(tool) {
            println!("kv bench skipped: {tool} is not installed (apt-get install redis-server redis-tools)");
            return;
        }
    }
    let requests: u64 = std::env::var("KV_BENCH_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);

    let (_redis, redis) = start_redis();
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (pool, kv_addr) = server::serve_tcp(any_port, 1).expect("start the kv server");
    let kv = Target {
        name: "getty kv",
        pid: std::process::id(),
        port: kv_addr.port(),
    };
    wait_until_serving(kv.port);

    println!("redis-benchmark -c 50 -d 64, SET then GET, redis-server then getty kv (1 reactor)");
    println!(
        "{:<13} {:<4} {:>3} {:>12} {:>8} {:>8} {:>8} {:>14} {:>9}",
        "server", "test", "-P", "requests/s", "p50 ms", "p99 ms", "CPU s", "req/CPU-s", "kv/redis"
    );
    for pipeline in [1u32, 16] {
        let n = if pipeline == 1 {
            requests / 5
        } else {
            requests
        };
        for test in ["set", "get"] {
            let base = run(&redis, test, pipeline, n);
            let ours = run(&kv, test, pipeline, n);
            for (target, figures) in [(&redis, &base), (&kv, &ours)] {
                let ratio = if std::ptr::eq(figures, &ours) {
                    format!("{:.2}x", ours.per_cpu_second() / base.per_cpu_second())
                } else {
                    String::new()
                };
                println!(
                    "{:<13} {:<4} {:>3} {:>12.0} {:>8.3} {:>8.3} {:>8.2} {:>14.0} {:>9}",
                    target.name,
                    test.to_uppercase(),
                    pipeline,
                    figures.rps,
                    figures.p50_ms,
                    figures.p99_ms,
                    figures.cpu_secs,
                    figures.per_cpu_second(),
                    ratio
                );
            }
            println!(
                "{:<13} {:<4} {:>3} p99 kv/redis {:.2}x",
                "",
                test.to_uppercase(),
                pipeline,
                ours.p99_ms / base.p99_ms.max(0.001)
            );
            chart_load(test, pipeline, [(&kv, &ours), (&redis, &base)]);
        }
    }
    pool.shutdown();
    pool.join().expect("stop the kv server");
}
