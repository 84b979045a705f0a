//! The datagram queue with parking on, as on an unconnected unix datagram socket, against
//! the model of its proptest (`getty_transports::fuzzing::parking_model`): the input
//! decodes into datagrams pushed to four destinations whose receivers turn free, full,
//! gone, or take a few more, a socket whose own buffer fills and frees, time passing, and
//! flushes.
//!
//! Oracles:
//! - every datagram offered is the next of its destination; a full receiver parks only its
//!   own destination, a full socket blocks the queue and blames no one;
//! - a parked destination is retried exactly when its backoff says, and kept within its
//!   bound while all of them stay within theirs; it is dropped whole after the stall
//!   timeout or a failed send;
//! - every drop is counted, and reported once per destination and cause;
//! - at the end, with every receiver free, all that was not dropped arrives, each
//!   destination's in order, and every drop was reported.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| getty_transports::fuzzing::parking_model(data));
