//! Compression bench: echo throughput and the wire/plain ratio per deflate level, for a
//! compressible payload (JSON-like text) and an incompressible one (random bytes), with the
//! uncompressed run as the baseline in the same process.
//!
//! ```text
//! cargo bench --bench compression
//! GETTY_BENCH_QUICK=1 cargo bench --bench compression
//! ```
//!
//! Both ends are getty-rs sessions on their own reactor threads over loopback; 16 messages
//! of 4 KiB are in flight. Each figure is the median of 3 runs. "server CPU" is messages per
//! CPU-second of the server's reactor thread, which on a 2-core machine ranks the levels
//! better than wall time (the client shares the machine).

#[path = "support/filtered_echo.rs"]
mod filtered_echo;

use std::sync::Arc;

use filtered_echo::{median_of, quick, run, Ends};
use getty::codec::{Bytes, Compression};
use getty::SessionOptions;

const SIZE: usize = 4096;

fn json_like(rng: &mut fastrand::Rng) -> Bytes {
    let mut s = String::with_capacity(SIZE + 128);
    while s.len() < SIZE {
        let id = rng.u32(..100_000);
        let score = rng.f64() * 100.0;
        s.push_str(&format!(
            "{{\"id\":{id},\"name\":\"user-{id}\",\"active\":{},\"score\":{score:.3},\"tags\":[\"getty\",\"session\"]}},",
            rng.bool()
        ));
    }
    s.truncate(SIZE);
    Bytes::from(s)
}

fn random(rng: &mut fastrand::Rng) -> Bytes {
    Bytes::from((0..SIZE).map(|_| rng.u8(..)).collect::<Vec<u8>>())
}

fn main() {
    let quick = quick();
    let count: u64 = if quick { 5_000 } else { 40_000 };
    let runs = if quick { 1 } else { 3 };
    let mut rng = fastrand::Rng::with_seed(42);
    let text: Arc<Vec<Bytes>> = Arc::new((0..64).map(|_| json_like(&mut rng)).collect());
    let noise: Arc<Vec<Bytes>> = Arc::new((0..64).map(|_| random(&mut rng)).collect());
    let levels: [(&str, Option<Compression>); 5] = [
        ("none (baseline)", None),
        ("best speed", Some(Compression::Fast)),
        ("default", Some(Compression::Default)),
        ("best compression", Some(Compression::Best)),
        ("huffman only", Some(Compression::HuffmanOnly)),
    ];
    println!(
        "TCP deflate filter: {count} echoes of {SIZE} B, 16 in flight, median of {runs}{}",
        if quick { " (QUICK)" } else { "" }
    );
    for (name, payloads) in [("JSON-like text", &text), ("random bytes", &noise)] {
        println!("\n{name}:");
        println!(
            "  {:<18} {:>10} {:>9} {:>10} {:>12} {:>9}",
            "level", "msgs/s", "MB/s", "wire/plain", "msgs/srv-cpu-s", "vs none"
        );
        let mut baseline = None;
        for (level_name, level) in levels {
            let ends = Ends {
                options: SessionOptions::default().compression(level),
                tls: None,
            };
            let o = median_of(runs, || run(&ends, Arc::clone(payloads), count, 16));
            let rate = o.messages_per_sec();
            let base = *baseline.get_or_insert(rate);
            println!(
                "  {:<18} {:>10.0} {:>9.1} {:>10.3} {:>12.0} {:>8.2}x",
                level_name,
                rate,
                o.plain_mb_per_sec(),
                o.wire_ratio(),
                o.messages_per_server_cpu_sec(),
                rate / base
            );
        }
    }
}
