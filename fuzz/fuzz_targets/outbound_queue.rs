//! The outbound queue of a stream session (`Outbound`), against the model of its proptests
//! (`getty_transports::fuzzing::outbound_model`): the input decodes into pushes small and
//! large, codec appends to the tail, bursts of chunks, `write_to` into sinks that take any
//! part of what they are offered (from any number of the buffers) or fail, flushes, and
//! `drain_into` with any limit and a sink that may fail.
//!
//! Oracles:
//! - every byte a sink is offered is the queued byte at that place, taken or not, so a
//!   byte out of order fails even when it is not written; a write that fails takes
//!   nothing;
//! - the queue's length and emptiness agree with the model after every operation;
//! - at the end, everything not cleared comes out, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| getty_transports::fuzzing::outbound_model(data));
