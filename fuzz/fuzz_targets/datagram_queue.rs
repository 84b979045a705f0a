//! The outbound queue of a datagram session (`DatagramQueue`), against the model of its
//! proptests (`getty_transports::fuzzing::datagram_queue_model`): the input decodes into
//! datagrams pushed or encoded, small and large, to a few destinations or none, and sends
//! that take any part of a batch, block, are interrupted, or fail for the datagram or for
//! its peer.
//!
//! Oracles:
//! - every batch offered is the front of the queue: whole datagrams, with their
//!   destinations;
//! - the byte and datagram counts, and the tail's contents, agree with the model after
//!   every operation;
//! - a datagram is dropped only after 2 failures of its own or 8 about its peer in a row;
//! - at the end, everything not dropped goes out, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| getty_transports::fuzzing::datagram_queue_model(data));
