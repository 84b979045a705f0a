//! Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature; not part of the
//! API). Each decodes its input into the operations the crate's proptests generate for a
//! queue, from the same tables, runs them against the real queue and the queue's model,
//! and panics at the first disagreement. The models are the proptests' own, not copies.
//!
//! With `GETTY_FUZZ_OPS` set in the environment, each prints the operations it decoded
//! before it runs them, so that a failing input can be read, or replayed as a test.

use std::fmt::Debug;
use std::sync::OnceLock;

use crate::outbound::model as outbound;
use crate::udp::queue::{model as datagram, parking_model as parking};

/// The outbound queue of a stream session: pushes small and large, codec appends to its
/// tail, `write_to` into sinks that take any part of what they are offered (or fail), and
/// `drain_into` with any limit. After each operation what left is the front of what was
/// queued, in order; at the end everything not cleared comes out, in order.
pub fn outbound_model(data: &[u8]) {
    let (ops, with_drain) = outbound::decode_fuzz_input(data);
    show(&(&ops, with_drain));
    outbound::run(&ops, with_drain);
}

/// The datagram queue of a datagram session: pushes and encodes to a few destinations,
/// sends that take part of a batch, block, are interrupted or fail. Every batch offered is
/// the front of the queue, whole datagrams with their destinations; a datagram is dropped
/// only after the documented run of failures; at the end everything not dropped goes out,
/// in order.
pub fn datagram_queue_model(data: &[u8]) {
    let ops = datagram::decode_fuzz_input(data);
    show(&ops);
    datagram::run(&ops);
}

/// The datagram queue with parking on (an unconnected unix datagram socket): receivers that
/// turn full, gone, or take a few more, a socket whose own buffer fills, time passing, and
/// flushes. Parked destinations are retried on their backoff and kept within their bounds,
/// every drop is counted and reported, and at the end all that was not dropped arrives,
/// each destination's in order.
pub fn parking_model(data: &[u8]) {
    let ops = parking::decode_fuzz_input(data);
    show(&ops);
    parking::run(&ops);
}

/// Prints `ops` when `GETTY_FUZZ_OPS` is set (looked up once: it is not meant to change
/// during a run).
fn show(ops: &impl Debug) {
    static SHOW: OnceLock<bool> = OnceLock::new();
    if *SHOW.get_or_init(|| std::env::var_os("GETTY_FUZZ_OPS").is_some()) {
        eprintln!("{ops:#?}");
    }
}
