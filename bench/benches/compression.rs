//! Compression bench: echo throughput and the wire/plain ratio per deflate level, for a
//! compressible payload (JSON-like text) and an incompressible one (random bytes), over TCP
//! (getty's deflate filter, `SessionOptions::compression`) and over WebSocket
//! (permessage-deflate, RFC 7692), each transport with its uncompressed run as the baseline
//! in the same process.
//!
//! ```text
//! cargo bench -p getty-bench --bench compression
//! GETTY_BENCH_QUICK=1 cargo bench -p getty-bench --bench compression
//! ```
//!
//! Both ends are getty-rs sessions on their own reactor threads over loopback, one
//! connection with 16 messages of 4 KiB in flight; the client cycles through 64 different
//! payloads of each kind, and the server echoes every message. Over TCP a message is framed
//! by a 4-byte length prefix and the filter compresses the whole byte stream (one deflate
//! stream per direction, sync-flushed per write batch). Over WebSocket a message is one
//! binary message (`RawCodec`) and permessage-deflate compresses each message on its own,
//! with context takeover and 15-bit windows (the defaults of `DeflateConfig`); both ends are
//! given the same `DeflateConfig` and every run checks that the handshake agreed on it.
//!
//! Columns: "msgs/s" is echoes per second (wall time); "MB/s" is payload MB per second,
//! client to server; "wire/plain" is the bytes the client wrote to its socket
//! (`Stats::bytes_out`, framing, masking and compression included) over the payload bytes
//! it sent, the same measure on both transports (1.000 = the payload as is); "msgs/srv-cpu-s"
//! is messages per CPU-second of the server's reactor thread, which on a 2-core machine
//! ranks the levels better than wall time (the client shares the machine); "vs none" is
//! msgs/s over the same transport's uncompressed run. Each figure is the median of 3 runs
//! (by elapsed time). Quick mode (`GETTY_BENCH_QUICK=1`, or any run without `--bench`, as
//! `cargo test --benches` does) runs 5,000 echoes once instead of 40,000 three times.

#[path = "support/filtered_echo.rs"]
mod filtered_echo;

use std::sync::Arc;

use filtered_echo::{median_of, quick, run, Ends, Transport};
use getty::codec::ws::DeflateConfig;
use getty::codec::{Bytes, Compression};
use getty::SessionOptions;

const SIZE: usize = 4096;
const WINDOW: u64 = 16;

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

/// Prints one table: a row per configuration, the first being the baseline.
fn table(name: &str, payloads: &Arc<Vec<Bytes>>, levels: &[(&str, Ends)], count: u64, runs: usize) {
    println!("\n{name}:");
    println!(
        "  {:<18} {:>10} {:>9} {:>10} {:>12} {:>9}",
        "level", "msgs/s", "MB/s", "wire/plain", "msgs/srv-cpu-s", "vs none"
    );
    let mut baseline = None;
    for (level_name, ends) in levels {
        let o = median_of(runs, || run(ends, Arc::clone(payloads), count, WINDOW));
        let rate = o.messages_per_sec();
        let base = *baseline.get_or_insert(rate);
        println!(
            "  {:<18} {:>10.0} {:>9.1} {:>10.3} {:>12.0} {:>8.2}x",
            level_name,
            rate,
            o.payload_mb_per_sec(),
            o.wire_ratio(),
            o.messages_per_server_cpu_sec(),
            rate / base
        );
    }
}

fn main() {
    let quick = quick();
    let count: u64 = if quick { 5_000 } else { 40_000 };
    let runs = if quick { 1 } else { 3 };
    let mut rng = fastrand::Rng::with_seed(42);
    let text: Arc<Vec<Bytes>> = Arc::new((0..64).map(|_| json_like(&mut rng)).collect());
    let noise: Arc<Vec<Bytes>> = Arc::new((0..64).map(|_| random(&mut rng)).collect());
    let payloads = [("JSON-like text", &text), ("random bytes", &noise)];
    let mode = if quick { " (QUICK)" } else { "" };

    let tcp = |level: Option<Compression>| Ends {
        options: SessionOptions::default().compression(level),
        ..Ends::default()
    };
    let tcp_levels = [
        ("none (baseline)", tcp(None)),
        ("best speed", tcp(Some(Compression::Fast))),
        ("default", tcp(Some(Compression::Default))),
        ("best compression", tcp(Some(Compression::Best))),
        ("huffman only", tcp(Some(Compression::HuffmanOnly))),
    ];
    println!(
        "TCP deflate filter: {count} echoes of {SIZE} B, {WINDOW} in flight, median of {runs}{mode}"
    );
    for (name, payloads) in payloads {
        table(name, payloads, &tcp_levels, count, runs);
    }

    let ws = |level: Option<u32>| Ends {
        transport: Transport::WebSocket {
            deflate: level.map(|level| DeflateConfig {
                level,
                ..Default::default()
            }),
        },
        ..Ends::default()
    };
    let ws_levels = [
        ("none (baseline)", ws(None)),
        ("best speed", ws(Some(1))),
        ("default", ws(Some(6))),
        ("best compression", ws(Some(9))),
    ];
    println!(
        "\nWebSocket permessage-deflate: {count} echoes of {SIZE} B, {WINDOW} in flight, median of {runs}{mode}"
    );
    for (name, payloads) in payloads {
        table(name, payloads, &ws_levels, count, runs);
    }
}
