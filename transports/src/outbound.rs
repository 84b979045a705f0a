//! A session's outbound queue: small writes coalesce into one buffer, large ones are queued
//! as zero-copy chunks, and a flush hands everything to one `writev`.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes, BytesMut};
use getty_reactor::BufPool;

/// Writes shorter than this are copied into the tail buffer; longer ones are queued as they
/// are, so a 1 MiB payload is never copied.
const COPY_THRESHOLD: usize = 4096;

/// A payload the codec left out of its encoding (a view, perhaps, of the read buffer it
/// was decoded from) is queued as it is only while the socket takes what is queued and
/// less than this is queued before it: a queue that drains every turn sends views at once,
/// without a copy. A queue the socket stopped taking gets copies, so a peer that does not
/// read cannot make a session hold a read buffer (64 KiB) for each payload the bound
/// counts at 16 KiB: what a session holds beyond its count stays within a buffer or two.
const VIEWS_WHILE_BELOW: usize = 64 * 1024;

/// The most buffers handed to one `writev` (Linux allows 1024; more than this rarely helps).
const MAX_IOVECS: usize = 64;

/// Queued bytes in order: every chunk, then the tail.
#[derive(Default)]
pub struct Outbound {
    /// Where codecs encode to. Lent from the reactor's pool while the session has output.
    pub(crate) tail: BytesMut,
    /// Allocated on the first large write and kept: most sessions never need it, and a
    /// session that does should not allocate it again for every large write.
    chunks: Option<Box<Chunks>>,
}

#[derive(Default)]
struct Chunks {
    queue: VecDeque<Bytes>,
    len: usize,
}

impl Outbound {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.chunks.as_ref().map_or(0, |c| c.len) + self.tail.len()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queued chunks (the tail not among them), oldest first: for tests.
    #[cfg(all(test, feature = "ws"))]
    pub(crate) fn queued_chunks(&self) -> Vec<Bytes> {
        self.chunks
            .iter()
            .flat_map(|c| c.queue.iter().cloned())
            .collect()
    }

    /// Takes back a refused message from the tail: cuts it to `len` bytes again and, when
    /// the message grew it past the `capacity` it had, moves what is left into a buffer of
    /// its own size, so that a large refused message leaves no room of its size behind
    /// (held for as long as a stalled peer keeps the queue from draining).
    #[cold]
    pub(crate) fn take_back_tail(&mut self, len: usize, capacity: usize) {
        self.tail.truncate(len);
        if self.tail.capacity() > capacity {
            self.tail = BytesMut::from(&self.tail[..]);
        }
    }

    /// Queues `bytes`, copying small ones into the tail.
    pub(crate) fn push(&mut self, bytes: Bytes) {
        if bytes.len() < COPY_THRESHOLD {
            self.tail.extend_from_slice(&bytes);
            return;
        }
        if !self.tail.is_empty() {
            // Keep the order: what was encoded before this chunk goes out before it.
            let before = self.tail.split().freeze();
            self.push_chunk(before);
        }
        self.push_chunk(bytes);
    }

    /// Queues a payload the codec left out of its encoding, behind `queued` bytes (in the
    /// queue and past it, in a filter): as it is while the queue is short and the last
    /// flush was not `blocked` with output left, else copied into the tail (see
    /// [`VIEWS_WHILE_BELOW`]).
    pub(crate) fn push_view(&mut self, payload: Bytes, queued: usize, blocked: bool) {
        self.push_or_copy(payload, Self::keeps_views(queued, blocked));
    }

    /// Whether a payload handed over whole (perhaps a view of a larger buffer) is queued as
    /// it is behind `queued` bytes, the last flush `blocked` or not: see
    /// [`VIEWS_WHILE_BELOW`].
    #[inline]
    pub(crate) fn keeps_views(queued: usize, blocked: bool) -> bool {
        !blocked && queued < VIEWS_WHILE_BELOW
    }

    /// Queues `payload` as [`push`](Self::push) does when `keep_view`, else copies it into
    /// the tail.
    #[inline]
    pub(crate) fn push_or_copy(&mut self, payload: Bytes, keep_view: bool) {
        if keep_view {
            self.push(payload);
        } else {
            self.tail.extend_from_slice(&payload);
        }
    }

    fn push_chunk(&mut self, bytes: Bytes) {
        let chunks = self.chunks.get_or_insert_with(Box::default);
        chunks.len += bytes.len();
        chunks.queue.push_back(bytes);
    }

    /// One write (a `writev` when there is more than one buffer). Returns the bytes written.
    /// A chunk written whole goes to `pool` when nothing else holds its memory
    /// ([`recycle`]).
    pub(crate) fn write_to<W: Write>(
        &mut self,
        sink: &mut W,
        pool: &mut BufPool,
    ) -> io::Result<usize> {
        let queue = match self.chunks.as_deref() {
            Some(chunks) if !chunks.queue.is_empty() => &chunks.queue,
            _ => {
                let n = sink.write(&self.tail)?;
                self.tail.advance(n);
                return Ok(n);
            }
        };
        let n = {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for chunk in queue.iter().take(MAX_IOVECS - 1) {
                slices[count] = IoSlice::new(chunk);
                count += 1;
            }
            // The tail follows the last chunk, so it may only join a writev that carries
            // every chunk: bytes leave in the order they were queued.
            if !self.tail.is_empty() && count == queue.len() {
                slices[count] = IoSlice::new(&self.tail);
                count += 1;
            }
            sink.write_vectored(&slices[..count])?
        };
        self.consume(n, pool);
        Ok(n)
    }

    fn consume(&mut self, mut n: usize, pool: &mut BufPool) {
        while n > 0 {
            let Some(chunks) = self.chunks.as_deref_mut().filter(|c| !c.queue.is_empty()) else {
                self.tail.advance(n);
                return;
            };
            let front = chunks.queue.front_mut().expect("checked non-empty");
            let take = n.min(front.len());
            front.advance(take);
            chunks.len -= take;
            n -= take;
            if front.is_empty() {
                if let Some(done) = chunks.queue.pop_front() {
                    recycle(done, pool);
                }
            }
        }
    }

    /// Hands up to about `limit` queued bytes, in order, to `sink` (a filter) and removes
    /// them from the queue, recycling chunks as [`write_to`](Self::write_to) does. Returns
    /// how many it handed over.
    pub(crate) fn drain_into<E>(
        &mut self,
        limit: usize,
        pool: &mut BufPool,
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut taken = 0;
        while taken < limit {
            let piece = match self.chunks.as_deref_mut().filter(|c| !c.queue.is_empty()) {
                Some(chunks) => {
                    let front = chunks.queue.front().expect("checked non-empty");
                    &front[..front.len().min(limit - taken)]
                }
                None if self.tail.is_empty() => break,
                None => &self.tail[..self.tail.len().min(limit - taken)],
            };
            let n = piece.len();
            sink(piece)?;
            self.consume(n, pool);
            taken += n;
        }
        Ok(taken)
    }

    /// Drops everything queued (the session is going away without flushing).
    pub(crate) fn clear(&mut self) {
        self.chunks = None;
        self.tail.clear();
    }

    /// Frees a chunk list that a burst of large writes grew past one `writev`'s worth, so
    /// that a drained queue waiting for its next session keeps no more than that.
    pub(crate) fn trim(&mut self) {
        if self
            .chunks
            .as_ref()
            .is_some_and(|c| c.queue.capacity() > MAX_IOVECS)
        {
            self.chunks = None;
        }
    }
}

/// Gives a written chunk's memory to the pool when the chunk alone holds it: typically the
/// read buffer a large message was decoded into and echoed from without a copy. The pool
/// keeps it (a large one among its large buffers) for the next frame, which would
/// otherwise grow a fresh allocation for the allocator to fault in; a chunk that shares
/// its memory (the rest of a read buffer, a message the handler kept) is only dropped.
#[inline]
fn recycle(chunk: Bytes, pool: &mut BufPool) {
    if let Ok(memory) = chunk.try_into_mut() {
        pool.give(memory);
    }
}

/// The queue against a model of the bytes queued: driven by the proptests below, and by
/// the fuzz target `outbound_queue` (the `fuzzing` feature).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod model;

/// Model-based property tests of this queue.
#[cfg(test)]
#[path = "outbound_model_tests.rs"]
mod model_tests;

/// Model-based property tests of the filter path behind this queue.
// They run TLS and deflate; the queue is the same in every build, so the default build's
// run covers it.
#[cfg(all(test, feature = "tls", feature = "deflate"))]
#[path = "outbound_filter_model_tests.rs"]
mod filter_model_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that accepts at most `limit` bytes per call, to exercise partial writes.
    struct Trickle {
        got: Vec<u8>,
        limit: usize,
        vectored_calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.limit);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.vectored_calls += 1;
            let mut left = self.limit;
            let mut total = 0;
            for b in bufs {
                let n = b.len().min(left);
                self.got.extend_from_slice(&b[..n]);
                left -= n;
                total += n;
                if left == 0 {
                    break;
                }
            }
            Ok(total)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn drain(out: &mut Outbound, limit: usize) -> Trickle {
        let mut sink = Trickle {
            got: Vec::new(),
            limit,
            vectored_calls: 0,
        };
        while !out.is_empty() {
            out.write_to(&mut sink, &mut BufPool::default()).unwrap();
        }
        sink
    }

    #[test]
    fn keeps_order_across_small_and_large_writes() {
        let mut out = Outbound::default();
        let mut expected = Vec::new();
        for i in 0..50usize {
            let size = if i % 7 == 0 { 10_000 + i } else { i };
            let piece: Vec<u8> = (0..size).map(|b| (b + i) as u8).collect();
            expected.extend_from_slice(&piece);
            out.push(Bytes::from(piece));
        }
        assert_eq!(out.len(), expected.len());
        for limit in [1, 7, 4096, usize::MAX] {
            let mut copy = Outbound::default();
            let mut offset = 0;
            // Rebuild the same queue for each limit.
            for i in 0..50usize {
                let size = if i % 7 == 0 { 10_000 + i } else { i };
                copy.push(Bytes::copy_from_slice(&expected[offset..offset + size]));
                offset += size;
            }
            assert_eq!(drain(&mut copy, limit).got, expected, "limit {limit}");
        }
    }

    #[test]
    fn drain_into_hands_over_in_order_and_in_bounded_batches() {
        let mut out = Outbound::default();
        out.tail.extend_from_slice(b"ab");
        out.push(Bytes::from(vec![b'x'; 5000]));
        out.tail.extend_from_slice(b"cd");
        let mut got = Vec::new();
        let n = out
            .drain_into(3000, &mut BufPool::default(), |piece| {
                got.extend_from_slice(piece);
                Ok::<_, ()>(())
            })
            .unwrap();
        assert_eq!((n, out.len()), (3000, 2004));
        out.drain_into(usize::MAX, &mut BufPool::default(), |piece| {
            got.extend_from_slice(piece);
            Ok::<_, ()>(())
        })
        .unwrap();
        assert!(out.is_empty());
        assert_eq!(&got[..2], b"ab");
        assert_eq!(&got[5002..], b"cd");
        assert_eq!(got.len(), 5004);
    }

    /// More chunks than one writev takes, then a small write: the tail must wait for every
    /// chunk (it once jumped ahead of chunk 63 and corrupted it).
    #[test]
    fn a_tail_behind_more_chunks_than_one_writev_stays_last() {
        let mut out = Outbound::default();
        let mut expected = Vec::new();
        for i in 0..MAX_IOVECS as u8 + 2 {
            let chunk = vec![i; 8192];
            expected.extend_from_slice(&chunk);
            out.push(Bytes::from(chunk));
        }
        out.push(Bytes::from_static(b"END\n"));
        expected.extend_from_slice(b"END\n");
        assert_eq!(drain(&mut out, usize::MAX).got, expected);
    }

    #[test]
    fn large_chunks_use_one_writev() {
        let mut out = Outbound::default();
        out.tail.extend_from_slice(b"header");
        out.push(Bytes::from(vec![1u8; 100_000]));
        out.tail.extend_from_slice(b"trailer");
        let sink = drain(&mut out, usize::MAX);
        assert_eq!(sink.vectored_calls, 1);
        assert_eq!(sink.got.len(), 6 + 100_000 + 7);
        assert!(sink.got.starts_with(b"header") && sink.got.ends_with(b"trailer"));
    }
}
