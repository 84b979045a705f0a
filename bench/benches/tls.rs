//! TLS bench: echo throughput over TLS 1.3 (rustls, ring) against plain TCP in the same
//! run, for small and large messages.
//!
//! ```text
//! cargo bench -p getty-bench --bench tls
//! GETTY_BENCH_QUICK=1 cargo bench -p getty-bench --bench tls
//! ```
//!
//! Quick mode (a tenth of the messages, one run) is also what runs without `--bench`, as
//! `cargo test --benches` does.
//!
//! Both ends are getty-rs sessions on their own reactor threads over loopback. The
//! certificate is self-signed and made at start-up. Each figure is the median of 3 runs;
//! "overhead" is plain TCP's rate over the TLS rate (1.00x = free). "TLS MB/s" counts
//! payload bytes, client to server; "wire/plain" is the bytes the TLS client wrote to its
//! socket over the payload bytes it sent, so it includes the 4-byte length prefix of each
//! message as well as TLS's records and handshake (1.000 = the payload as is).

#[path = "support/filtered_echo.rs"]
mod filtered_echo;

use std::sync::Arc;

use filtered_echo::{median_of, quick, run, Ends};
use getty::codec::Bytes;
use getty::tls;

fn main() {
    let quick = quick();
    let runs = if quick { 1 } else { 3 };
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let (chain, key) = (made.cert.pem(), made.signing_key.serialize_pem());
    let server = tls::server_config(chain.as_bytes(), key.as_bytes()).expect("server config");
    let client = tls::client_config(chain.as_bytes()).expect("client config");
    let plain = Ends::default();
    let secure = Ends {
        tls: Some((server, client)),
        ..Ends::default()
    };
    println!(
        "TLS 1.3 echo vs plain TCP, median of {runs}{}",
        if quick { " (QUICK)" } else { "" }
    );
    println!(
        "  {:<26} {:>12} {:>12} {:>9} {:>14} {:>14} {:>10} {:>10}",
        "load",
        "plain msg/s",
        "TLS msg/s",
        "overhead",
        "plain srv-cpu",
        "TLS srv-cpu",
        "TLS MB/s",
        "wire/plain"
    );
    for (size, window, count) in [
        (64usize, 1u64, 20_000u64),
        (64, 16, 100_000),
        (16 * 1024, 16, 20_000),
    ] {
        let count = if quick { count / 10 } else { count };
        let payloads = Arc::new(vec![Bytes::from(vec![7u8; size])]);
        let p = median_of(runs, || run(&plain, Arc::clone(&payloads), count, window));
        let t = median_of(runs, || run(&secure, Arc::clone(&payloads), count, window));
        println!(
            "  {:<26} {:>12.0} {:>12.0} {:>8.2}x {:>14.0} {:>14.0} {:>10.1} {:>10.3}",
            format!("{size} B, {window} in flight"),
            p.messages_per_sec(),
            t.messages_per_sec(),
            p.messages_per_sec() / t.messages_per_sec(),
            p.messages_per_server_cpu_sec(),
            t.messages_per_server_cpu_sec(),
            t.payload_mb_per_sec(),
            t.wire_ratio()
        );
    }
    println!("  (srv-cpu: messages per CPU-second of the server's reactor thread;");
    println!("   wire/plain: bytes the TLS client wrote per payload byte, framing included)");
}
