//! A per-reactor pool of byte buffers.
//!
//! Connections borrow a buffer when they have bytes to read or write and give it back when
//! it drains, so ten thousand idle connections hold no buffers at all. The pool is owned by
//! one reactor (one thread), so taking and giving back is a `Vec` push/pop: no locks.

use bytes::BytesMut;

/// Buffers lent to the entries of one reactor; see [`Spawner::buffers`](crate::Spawner::buffers).
///
/// ```
/// use getty_reactor::BufPool;
///
/// let mut pool = BufPool::new(16 * 1024, 8);
/// let mut buf = pool.take();
/// assert!(buf.capacity() >= 16 * 1024);
/// buf.extend_from_slice(b"scratch");
/// pool.give(buf); // cleared and kept for the next taker
/// assert_eq!(pool.idle(), 1);
/// assert!(pool.take().is_empty());
/// ```
pub struct BufPool {
    buffer_size: usize,
    max_idle: usize,
    idle: Vec<BytesMut>,
}

impl BufPool {
    /// A pool that hands out buffers of `buffer_size` bytes and keeps at most `max_idle`.
    ///
    /// ```
    /// let pool = getty_reactor::BufPool::new(4096, 2);
    /// assert_eq!(pool.buffer_size(), 4096);
    /// ```
    pub fn new(buffer_size: usize, max_idle: usize) -> Self {
        BufPool {
            buffer_size,
            max_idle,
            idle: Vec::with_capacity(max_idle),
        }
    }

    /// An empty buffer with at least [`buffer_size`](Self::buffer_size) bytes of capacity.
    ///
    /// ```
    /// let mut pool = getty_reactor::BufPool::new(1024, 1);
    /// assert!(pool.take().capacity() >= 1024);
    /// ```
    pub fn take(&mut self) -> BytesMut {
        match self.idle.pop() {
            Some(buf) => buf,
            None => BytesMut::with_capacity(self.buffer_size),
        }
    }

    /// Returns a buffer to the pool. Its contents are discarded. A buffer whose front was
    /// consumed (split off or advanced past) is reclaimed in place when nothing else shares
    /// its memory; one still shared (a decoded frame is alive), one grown past twice the
    /// pool's size, or one beyond `max_idle` is freed.
    ///
    /// ```
    /// let mut pool = getty_reactor::BufPool::new(1024, 1);
    /// pool.give(bytes::BytesMut::with_capacity(10)); // too small: freed
    /// assert_eq!(pool.idle(), 0);
    /// ```
    pub fn give(&mut self, mut buf: BytesMut) {
        if self.idle.len() < self.max_idle && self.reusable(&mut buf) {
            self.idle.push(buf);
        }
    }

    /// Clears `buf` and tells whether the pool would keep it: the whole of its memory is
    /// unshared again and no larger than twice the pool's size. An entry that keeps a
    /// drained buffer for its next bytes applies the pool's policy with this.
    ///
    /// ```
    /// let pool = getty_reactor::BufPool::new(1024, 1);
    /// let mut buf = bytes::BytesMut::with_capacity(1024);
    /// buf.extend_from_slice(b"done");
    /// assert!(pool.reusable(&mut buf) && buf.is_empty());
    /// assert!(!pool.reusable(&mut bytes::BytesMut::with_capacity(10)));
    /// ```
    pub fn reusable(&self, buf: &mut BytesMut) -> bool {
        buf.clear();
        // Consuming the front of a buffer shrinks its capacity() without freeing anything:
        // a short leftover of a large allocation would pass for a pooled buffer and keep
        // all of it. try_reclaim moves the start back without allocating when the memory
        // is unshared, so capacity() tells the whole allocation (asking for one byte more
        // than there is changes nothing in a buffer that is whole already).
        let _ = buf.try_reclaim(buf.capacity() + 1);
        let whole = buf.capacity() >= self.buffer_size || buf.try_reclaim(self.buffer_size);
        // A buffer grown for one huge frame would pin that memory for good: free it.
        let oversized = buf.capacity() > 2 * self.buffer_size;
        whole && !oversized
    }

    /// The capacity of the buffers this pool hands out.
    ///
    /// ```
    /// assert_eq!(getty_reactor::BufPool::new(8192, 4).buffer_size(), 8192);
    /// ```
    pub fn buffer_size(&self) -> usize {
        self.buffer_size
    }

    /// How many buffers wait in the pool.
    ///
    /// ```
    /// assert_eq!(getty_reactor::BufPool::new(8192, 4).idle(), 0);
    /// ```
    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}

impl Default for BufPool {
    /// 64 KiB buffers, at most 64 kept (4 MiB per reactor at the most).
    fn default() -> Self {
        BufPool::new(64 * 1024, 64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn buffers_whose_front_was_consumed_come_back() {
        let mut pool = BufPool::new(1024, 4);
        let mut buf = pool.take();
        let ptr = buf.as_ptr();
        buf.extend_from_slice(&[1u8; 1000]);
        buf.advance(600); // as a flush does
        drop(buf.split_to(100)); // as a decoder does, frame dropped by the handler
        pool.give(buf);
        assert_eq!(pool.idle(), 1, "the buffer was dropped instead of reused");
        let again = pool.take();
        assert_eq!(again.as_ptr(), ptr, "the same memory, not a new allocation");
        assert!(again.capacity() >= 1024);
    }

    #[test]
    fn a_buffer_grown_for_a_huge_frame_is_not_kept() {
        let mut pool = BufPool::new(1024, 4);
        let mut buf = pool.take();
        buf.reserve(16 << 20);
        pool.give(buf);
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn a_buffer_still_shared_with_a_live_frame_is_not_kept() {
        let mut pool = BufPool::new(1024, 4);
        let mut buf = pool.take();
        buf.extend_from_slice(&[1u8; 1000]);
        let frame = buf.split_to(500).freeze(); // the handler keeps it
        pool.give(buf);
        assert_eq!(pool.idle(), 0);
        assert_eq!(frame.len(), 500);
    }
}
