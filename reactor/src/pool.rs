//! A per-reactor pool of byte buffers.
//!
//! Connections borrow a buffer when they have bytes to read or write and give it back when
//! it drains, so ten thousand idle connections hold no buffers at all. The pool is owned by
//! one reactor (one thread), so taking and giving back is a `Vec` push/pop: no locks.
//!
//! Buffers that grew for large frames (past twice the pool's size) are kept too, in a
//! second list bounded in bytes ([`BufPool::large_budget`]): a reader assembling the next
//! large frame takes one whole ([`BufPool::take_large`]) instead of growing a new
//! allocation, which the allocator would fault in page by page for every frame.
//!
//! What a burst left behind does not stay for good: buffers that no taker needed for a
//! whole interval ([`BufPool::release_unused_after`], 10 s by default) are freed, so a
//! reactor that has gone idle ends up holding none, and wakes for it no more. A layer that
//! keeps buffers of its own beside the pool, per thread, has them freed by the same rule
//! ([`BufPool::set_thread_cache`]).

use std::time::Duration;

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
    /// Buffers larger than twice `buffer_size`, oldest first.
    large: Vec<BytesMut>,
    /// The capacity of `large`, in all.
    large_bytes: usize,
    max_large_bytes: usize,
    /// The fewest buffers `idle` held at once since the interval began: that many waited
    /// through all of it unused.
    idle_low: usize,
    /// The same for `large`.
    large_low: usize,
    release_after: Option<Duration>,
    thread_cache: Option<fn(CacheRequest) -> usize>,
}

/// What a pool asks of a cache of buffers that a layer above keeps beside it on the
/// reactor's thread ([`BufPool::set_thread_cache`]), for the rule by which the pool frees
/// its own: what waited unused through a whole interval goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheRequest {
    /// The bytes of capacity the cache holds now (0: nothing to wake up for).
    HeldBytes,
    /// An interval begins: whatever the cache holds now counts as unused until taken.
    BeginInterval,
    /// The interval has ended: free what went unused through it; answer the bytes freed.
    ReleaseUnused,
}

impl BufPool {
    /// What a pool keeps of large buffers unless told otherwise
    /// ([`large_budget`](Self::large_budget)): four frames of the default 1 MiB message
    /// limit, with their headers.
    pub const DEFAULT_LARGE_BUDGET: usize = 4 * ((1 << 20) + 1024);

    /// How long a buffer may wait unused before it is freed unless told otherwise
    /// ([`release_unused_after`](Self::release_unused_after)).
    pub const DEFAULT_RELEASE_AFTER: Duration = Duration::from_secs(10);

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
            large: Vec::new(),
            large_bytes: 0,
            max_large_bytes: Self::DEFAULT_LARGE_BUDGET,
            idle_low: 0,
            large_low: 0,
            release_after: Some(Self::DEFAULT_RELEASE_AFTER),
            thread_cache: None,
        }
    }

    /// Has the pool's release cover `cache` too: buffers a layer above keeps for reuse
    /// outside the pool, on the thread that runs this pool's reactor (getty-transports
    /// keeps the drained buffers of its last few sessions this way, so that the next
    /// session takes them without a trip through the pool). The pool asks `cache` what it
    /// holds before deciding it is empty, and has it free, at each interval's end, what
    /// went unused through the interval: an idle reactor then holds none of those either.
    /// One cache per pool; setting it again replaces it.
    ///
    /// ```
    /// use std::cell::Cell;
    /// use getty_reactor::{BufPool, CacheRequest};
    ///
    /// thread_local! {
    ///     /// (held, held at the interval's start and not taken since)
    ///     static CACHE: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    /// }
    /// fn cache(request: CacheRequest) -> usize {
    ///     let (held, unused) = CACHE.get();
    ///     match request {
    ///         CacheRequest::HeldBytes => held,
    ///         CacheRequest::BeginInterval => { CACHE.set((held, held)); 0 }
    ///         CacheRequest::ReleaseUnused => { CACHE.set((held - unused, 0)); unused }
    ///     }
    /// }
    ///
    /// let mut pool = BufPool::new(1024, 4);
    /// pool.set_thread_cache(cache);
    /// assert!(pool.is_empty());
    /// CACHE.set((4096, 0)); // the layer above keeps 4 KiB
    /// assert!(!pool.is_empty());
    /// assert_eq!(pool.thread_cache_bytes(), 4096);
    /// pool.begin_interval();
    /// assert_eq!(pool.release_unused(), 4096); // unused all interval long
    /// assert!(pool.is_empty());
    /// ```
    pub fn set_thread_cache(&mut self, cache: fn(CacheRequest) -> usize) {
        self.thread_cache = Some(cache);
    }

    /// The bytes the thread's cache ([`set_thread_cache`](Self::set_thread_cache)) holds;
    /// 0 without one.
    ///
    /// See [`set_thread_cache`](Self::set_thread_cache).
    pub fn thread_cache_bytes(&self) -> usize {
        self.thread_cache
            .map_or(0, |cache| cache(CacheRequest::HeldBytes))
    }

    /// Frees the buffers that wait unused through an `interval`: a reactor calls
    /// [`release_unused`](Self::release_unused) once per interval while its pool holds any
    /// buffer, so what a burst of traffic left behind is freed within two intervals of the
    /// burst's end, and a reactor whose pool is empty does not wake for it. `None` keeps
    /// them for good (and costs no wake-up at all). The default is
    /// [`DEFAULT_RELEASE_AFTER`](Self::DEFAULT_RELEASE_AFTER).
    ///
    /// A buffer taken even once in an interval counts as needed, so a steady load keeps its
    /// working set and only the spare buffers go.
    ///
    /// ```
    /// use std::time::Duration;
    /// use getty_reactor::BufPool;
    ///
    /// let pool = BufPool::new(1024, 4).release_unused_after(Some(Duration::from_secs(60)));
    /// assert_eq!(pool.release_interval(), Some(Duration::from_secs(60)));
    /// assert_eq!(BufPool::new(1024, 4).release_unused_after(None).release_interval(), None);
    /// ```
    pub fn release_unused_after(mut self, interval: Option<Duration>) -> Self {
        self.release_after = interval;
        self
    }

    /// See [`release_unused_after`](Self::release_unused_after).
    ///
    /// ```
    /// let pool = getty_reactor::BufPool::default();
    /// assert_eq!(pool.release_interval(), Some(getty_reactor::BufPool::DEFAULT_RELEASE_AFTER));
    /// ```
    pub fn release_interval(&self) -> Option<Duration> {
        self.release_after
    }

    /// Frees as many buffers as waited unused since the last call (or since
    /// [`begin_interval`](Self::begin_interval)), those that waited longest first, and
    /// starts the next interval. Returns the bytes of capacity freed. The reactor calls it;
    /// call it yourself only on a pool you drive outside a reactor.
    ///
    /// ```
    /// let mut pool = getty_reactor::BufPool::new(1024, 4);
    /// pool.give(bytes::BytesMut::with_capacity(1024));
    /// pool.give(bytes::BytesMut::with_capacity(1024));
    /// pool.begin_interval();
    /// let buf = pool.take(); // one of the two is needed in this interval...
    /// pool.give(buf);
    /// assert_eq!(pool.release_unused(), 1024); // ...the other is freed
    /// assert_eq!(pool.idle(), 1);
    /// assert_eq!(pool.release_unused(), 1024); // unused through the next interval
    /// assert!(pool.is_empty());
    /// ```
    pub fn release_unused(&mut self) -> usize {
        // `take` pops the top of the stack, so the bottom waited longest.
        let mut freed: usize = self.idle.drain(..self.idle_low).map(|b| b.capacity()).sum();
        // The oldest first, as eviction goes.
        for buf in self.large.drain(..self.large_low) {
            self.large_bytes -= buf.capacity();
            freed += buf.capacity();
        }
        if let Some(cache) = self.thread_cache {
            freed += cache(CacheRequest::ReleaseUnused);
        }
        self.begin_interval();
        freed
    }

    /// Starts counting which buffers go unused from now: every buffer waiting now counts
    /// as unused until it is taken. The reactor calls it when its pool, empty until then,
    /// holds buffers again.
    ///
    /// See [`release_unused`](Self::release_unused).
    pub fn begin_interval(&mut self) {
        self.idle_low = self.idle.len();
        self.large_low = self.large.len();
        if let Some(cache) = self.thread_cache {
            cache(CacheRequest::BeginInterval);
        }
    }

    /// Whether the pool holds no buffer at all, ordinary or large, nor does the thread's
    /// cache ([`set_thread_cache`](Self::set_thread_cache)).
    ///
    /// ```
    /// let mut pool = getty_reactor::BufPool::new(1024, 4);
    /// assert!(pool.is_empty());
    /// pool.give(bytes::BytesMut::with_capacity(1024));
    /// assert!(!pool.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.idle.is_empty() && self.large.is_empty() && self.thread_cache_bytes() == 0
    }

    /// Keeps at most `bytes` of large buffers (those grown past twice
    /// [`buffer_size`](Self::buffer_size) for large frames), the oldest going first when a
    /// newer one needs the room; 0 keeps none. The default,
    /// [`DEFAULT_LARGE_BUDGET`](Self::DEFAULT_LARGE_BUDGET), holds four frames of 1 MiB.
    ///
    /// A server whose messages are large reuses these for every frame; one whose messages
    /// are small never fills the list, and an idle reactor holds at most this much.
    ///
    /// ```
    /// use getty_reactor::BufPool;
    ///
    /// let mut pool = BufPool::new(1024, 4).large_budget(64 * 1024);
    /// pool.give(bytes::BytesMut::with_capacity(40 * 1024));
    /// pool.give(bytes::BytesMut::with_capacity(40 * 1024)); // the first one makes room
    /// assert_eq!(pool.large_idle_bytes(), 40 * 1024);
    /// pool.give(bytes::BytesMut::with_capacity(100 * 1024)); // over the budget: freed
    /// assert_eq!(pool.large_idle_bytes(), 40 * 1024);
    /// ```
    pub fn large_budget(mut self, bytes: usize) -> Self {
        self.max_large_bytes = bytes;
        self.evict_large_above(bytes);
        self
    }

    /// An empty buffer with at least [`buffer_size`](Self::buffer_size) bytes of capacity.
    ///
    /// ```
    /// let mut pool = getty_reactor::BufPool::new(1024, 1);
    /// assert!(pool.take().capacity() >= 1024);
    /// ```
    pub fn take(&mut self) -> BytesMut {
        match self.idle.pop() {
            Some(buf) => {
                self.idle_low = self.idle_low.min(self.idle.len());
                buf
            }
            None => BytesMut::with_capacity(self.buffer_size),
        }
    }

    /// Returns a buffer to the pool; its contents are discarded. A buffer whose memory a
    /// live frame still shares is dropped (the frame keeps that memory until it goes). Any
    /// other is reclaimed whole (a consumed front is taken back), then one of the pool's
    /// size (up to twice it) is kept, up to `max_idle`; a larger one joins the large
    /// buffers, within the [`large_budget`](Self::large_budget); a smaller one is freed.
    ///
    /// ```
    /// let mut pool = getty_reactor::BufPool::new(1024, 1);
    /// pool.give(bytes::BytesMut::with_capacity(10)); // too small: freed
    /// assert_eq!(pool.idle(), 0);
    /// pool.give(bytes::BytesMut::with_capacity(1 << 20)); // large: kept apart
    /// assert_eq!((pool.idle(), pool.large_idle_bytes()), (0, 1 << 20));
    /// ```
    pub fn give(&mut self, mut buf: BytesMut) {
        if !reclaim_unshared(&mut buf) {
            return;
        }
        let size = buf.capacity();
        if size > 2 * self.buffer_size {
            self.keep_large(buf);
        } else if size >= self.buffer_size && self.idle.len() < self.max_idle {
            self.idle.push(buf);
        }
    }

    /// An idle buffer of at least `min_capacity` bytes, empty, from those the pool keeps at
    /// its size (up to twice it); `None` when none is that large. A reader whose partial
    /// frame outgrows a pooled buffer takes one of these before allocating.
    ///
    /// ```
    /// let mut pool = getty_reactor::BufPool::new(1024, 4);
    /// pool.give(bytes::BytesMut::with_capacity(1500));
    /// assert!(pool.take_at_least(2000).is_none());
    /// assert!(pool.take_at_least(1200).is_some_and(|buf| buf.capacity() >= 1500));
    /// assert_eq!(pool.idle(), 0);
    /// ```
    pub fn take_at_least(&mut self, min_capacity: usize) -> Option<BytesMut> {
        let at = self
            .idle
            .iter()
            .rposition(|buf| buf.capacity() >= min_capacity)?;
        let buf = self.idle.swap_remove(at);
        self.idle_low = self.idle_low.min(self.idle.len());
        Some(buf)
    }

    /// The smallest kept large buffer of `min_capacity` to `max_capacity` bytes, empty;
    /// `None` when no kept buffer is that large (the caller allocates). A reader bounds the
    /// capacity by what its peer has sent, so that a header claiming a large frame does
    /// not get a large buffer for nothing.
    ///
    /// ```
    /// let mut pool = getty_reactor::BufPool::new(1024, 4);
    /// pool.give(bytes::BytesMut::with_capacity(8 * 1024));
    /// pool.give(bytes::BytesMut::with_capacity(32 * 1024));
    /// assert!(pool.take_large(64 * 1024, usize::MAX).is_none());
    /// assert!(pool.take_large(9000, 16 * 1024).is_none());
    /// let buf = pool.take_large(5000, usize::MAX).unwrap();
    /// assert!(buf.is_empty() && buf.capacity() >= 8 * 1024 && buf.capacity() < 32 * 1024);
    /// ```
    pub fn take_large(&mut self, min_capacity: usize, max_capacity: usize) -> Option<BytesMut> {
        let (at, _) = self
            .large
            .iter()
            .enumerate()
            .filter(|(_, buf)| (min_capacity..=max_capacity).contains(&buf.capacity()))
            .min_by_key(|(_, buf)| buf.capacity())?;
        let buf = self.large.remove(at);
        self.large_bytes -= buf.capacity();
        self.large_low = self.large_low.min(self.large.len());
        Some(buf)
    }

    /// Whether a kept large buffer of `min_capacity` to `max_capacity` bytes waits, which
    /// [`take_large`](Self::take_large) would give. A reader that will soon earn one can
    /// keep reading into the buffer it has instead of growing an allocation in between.
    ///
    /// ```
    /// let mut pool = getty_reactor::BufPool::new(1024, 4);
    /// pool.give(bytes::BytesMut::with_capacity(8 * 1024));
    /// assert!(pool.has_large(4096, 8 * 1024) && !pool.has_large(4096, 8000));
    /// ```
    pub fn has_large(&self, min_capacity: usize, max_capacity: usize) -> bool {
        let fits = min_capacity..=max_capacity;
        self.large.iter().any(|buf| fits.contains(&buf.capacity()))
    }

    /// Whether a large buffer of `capacity` bytes fits the
    /// [`large_budget`](Self::large_budget), so that giving it back keeps it.
    ///
    /// ```
    /// let pool = getty_reactor::BufPool::new(1024, 4).large_budget(1 << 20);
    /// assert!(pool.keeps_large(1 << 20) && !pool.keeps_large((1 << 20) + 1));
    /// ```
    pub fn keeps_large(&self, capacity: usize) -> bool {
        capacity <= self.max_large_bytes
    }

    /// Bytes of capacity in the kept large buffers.
    ///
    /// ```
    /// assert_eq!(getty_reactor::BufPool::default().large_idle_bytes(), 0);
    /// ```
    pub fn large_idle_bytes(&self) -> usize {
        self.large_bytes
    }

    /// Keeps a large (cleared, whole) buffer, making room by freeing the oldest kept ones.
    fn keep_large(&mut self, buf: BytesMut) {
        let size = buf.capacity();
        if !self.keeps_large(size) {
            return;
        }
        self.evict_large_above(self.max_large_bytes - size);
        self.large_bytes += size;
        self.large.push(buf);
    }

    /// Frees the oldest large buffers until at most `bytes` are kept.
    fn evict_large_above(&mut self, bytes: usize) {
        while self.large_bytes > bytes {
            let oldest = self.large.remove(0);
            self.large_bytes -= oldest.capacity();
        }
        self.large_low = self.large_low.min(self.large.len());
    }

    /// Clears `buf` and tells whether the pool would keep it among its ordinary buffers:
    /// nothing else shares its memory, and the whole of it (a consumed front is reclaimed
    /// first) is between the pool's size and twice that. An entry that keeps a drained
    /// buffer for its next bytes applies the pool's policy with this. A buffer still shared
    /// is left empty, its share of the memory dropped.
    ///
    /// ```
    /// let pool = getty_reactor::BufPool::new(1024, 1);
    /// let mut buf = bytes::BytesMut::with_capacity(1024);
    /// buf.extend_from_slice(b"done");
    /// assert!(pool.reusable(&mut buf) && buf.is_empty());
    /// assert!(!pool.reusable(&mut bytes::BytesMut::with_capacity(10)));
    /// ```
    pub fn reusable(&self, buf: &mut BytesMut) -> bool {
        let ordinary = self.buffer_size..=2 * self.buffer_size;
        reclaim_unshared(buf) && ordinary.contains(&buf.capacity())
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

/// Clears `buf` and makes the whole of its allocation usable again; false if something
/// else (a decoded frame still alive) shares that memory, leaving `buf` empty. Consuming
/// the front of a buffer shrinks its `capacity()` without freeing anything, so a short
/// remainder of a large allocation would pass for a small buffer and keep all of it.
fn reclaim_unshared(buf: &mut BytesMut) -> bool {
    buf.clear();
    // Moves the start back over a consumed front, which only an unshared buffer allows
    // (asking for one byte more than there is changes nothing in a buffer already whole).
    if buf.try_reclaim(buf.capacity() + 1) {
        return true;
    }
    if buf.capacity() == 0 {
        // An empty handle, or a remainder with no room of its own still shared.
        *buf = BytesMut::new();
        return false;
    }
    // Whole already, or shared: consume a byte of the front (its own room) and ask again.
    // This allocates nothing, where asking the reference count through `freeze` would
    // allocate for a buffer never shared, on every give of a datagram slot.
    buf.extend_from_slice(&[0]);
    bytes::Buf::advance(buf, 1);
    let unshared = buf.try_reclaim(buf.capacity() + 1);
    if !unshared {
        *buf = BytesMut::new();
    }
    unshared
}

impl Default for BufPool {
    /// 64 KiB buffers, at most 64 kept (8 MiB per reactor at the most), and large buffers
    /// up to [`DEFAULT_LARGE_BUDGET`](Self::DEFAULT_LARGE_BUDGET) (4 MiB); buffers unused
    /// for [`DEFAULT_RELEASE_AFTER`](Self::DEFAULT_RELEASE_AFTER) (10 s) are freed.
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
    fn large_buffers_come_back_whole_within_the_budget_oldest_freed_first() {
        let mut pool = BufPool::new(1024, 4).large_budget(100 * 1024);
        let mut grown = pool.take();
        grown.reserve(40 * 1024);
        let whole = grown.capacity();
        grown.extend_from_slice(&[7u8; 30 * 1024]);
        drop(grown.split_to(30 * 1024)); // a large frame, written and dropped
        pool.give(grown);
        assert_eq!(
            pool.large_idle_bytes(),
            whole,
            "the remainder came back whole"
        );
        pool.give(BytesMut::with_capacity(50 * 1024));
        pool.give(BytesMut::with_capacity(30 * 1024)); // the oldest makes room
        assert_eq!(pool.large_idle_bytes(), 80 * 1024);
        assert!(
            pool.take_large(60 * 1024, usize::MAX).is_none(),
            "the first one was freed"
        );
        assert_eq!(
            pool.take_large(20 * 1024, usize::MAX).unwrap().capacity(),
            30 * 1024
        );
        assert_eq!(
            pool.take_large(20 * 1024, usize::MAX).unwrap().capacity(),
            50 * 1024
        );
        assert_eq!(pool.large_idle_bytes(), 0);

        let mut again = BufPool::new(1024, 4);
        let mut grown = again.take();
        grown.reserve(40 * 1024);
        let at_again = grown.as_ptr();
        again.give(grown);
        let reused = again.take_large(40 * 1024, usize::MAX).expect("kept");
        assert_eq!(
            reused.as_ptr(),
            at_again,
            "the same memory, not a new allocation"
        );
    }

    #[test]
    fn a_zero_large_budget_keeps_no_large_buffer() {
        let mut pool = BufPool::new(1024, 4).large_budget(0);
        pool.give(BytesMut::with_capacity(1 << 20));
        assert_eq!((pool.idle(), pool.large_idle_bytes()), (0, 0));
        assert!(pool.take_large(1, usize::MAX).is_none());
    }

    #[test]
    fn a_large_remainder_still_shared_with_a_live_frame_is_not_kept() {
        let mut pool = BufPool::new(1024, 4);
        let mut grown = BytesMut::with_capacity(64 * 1024);
        grown.extend_from_slice(&[3u8; 1000]);
        let frame = grown.split_to(1000).freeze(); // the handler keeps it
        pool.give(grown); // 63 KiB of its own, but the frame pins all 64
        assert_eq!((pool.idle(), pool.large_idle_bytes()), (0, 0));
        assert_eq!(frame.len(), 1000);
    }

    #[test]
    fn a_shared_remainder_of_the_pools_size_is_not_kept_either() {
        let mut pool = BufPool::new(1024, 4);
        let mut grown = BytesMut::with_capacity(64 * 1024);
        grown.extend_from_slice(&[3u8; 63 * 1024]);
        let frame = grown.split_to(63 * 1024).freeze();
        pool.give(grown); // 1 KiB left: the pool's size, yet it would pin 64 KiB
        assert_eq!(pool.idle(), 0);
        drop(frame);
    }

    #[test]
    fn a_front_whose_back_is_still_shared_is_not_kept_and_a_whole_buffer_is() {
        let mut pool = BufPool::new(1024, 4);
        let mut front = BytesMut::with_capacity(4096);
        front.extend_from_slice(&[5u8; 4096]);
        let back = front.split_off(1024); // the front starts where the allocation does
        pool.give(front);
        assert_eq!(pool.idle(), 0, "a buffer sharing its allocation was kept");
        assert!(
            back.iter().all(|&b| b == 5),
            "the shared part was written over"
        );
        let mut whole = BytesMut::with_capacity(1024);
        whole.extend_from_slice(b"used, never split");
        let at = whole.as_ptr();
        pool.give(whole);
        assert_eq!(pool.idle(), 1);
        assert_eq!(pool.take().as_ptr(), at, "the same memory, whole");
    }

    #[test]
    fn an_empty_remainder_comes_back_whole_once_its_frame_is_gone() {
        let mut pool = BufPool::new(1024, 4);
        let mut exact = BytesMut::with_capacity(8 * 1024);
        exact.extend_from_slice(&[3u8; 8 * 1024]);
        let frame = exact.split_to(8 * 1024).freeze();
        assert_eq!(exact.capacity(), 0, "the frame took all of it");
        drop(frame);
        pool.give(exact);
        assert_eq!(pool.large_idle_bytes(), 8 * 1024);
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

    #[test]
    fn only_buffers_unused_through_a_whole_interval_are_released() {
        let mut pool = BufPool::new(1024, 8).large_budget(1 << 20);
        for _ in 0..4 {
            pool.give(BytesMut::with_capacity(1024));
        }
        pool.give(BytesMut::with_capacity(100 * 1024));
        pool.give(BytesMut::with_capacity(200 * 1024));
        pool.begin_interval();
        // Two ordinary buffers out at once, and the smaller large one, all given back.
        let (a, b) = (pool.take(), pool.take());
        let large = pool.take_large(50 * 1024, usize::MAX).unwrap();
        assert_eq!(large.capacity(), 100 * 1024);
        pool.give(a);
        pool.give(b);
        pool.give(large);
        // Two ordinary ones and one large one (the oldest, the larger) waited unused.
        assert_eq!(pool.release_unused(), 2 * 1024 + 200 * 1024);
        assert_eq!((pool.idle(), pool.large_idle_bytes()), (2, 100 * 1024));
        // Nothing taken since: the rest goes too, and the pool is empty.
        assert_eq!(pool.release_unused(), 2 * 1024 + 100 * 1024);
        assert!(pool.is_empty());
        assert_eq!(pool.release_unused(), 0);
    }

    #[test]
    fn a_buffer_taken_from_anywhere_in_the_list_counts_as_needed() {
        let mut pool = BufPool::new(1024, 8);
        pool.give(BytesMut::with_capacity(2048));
        pool.give(BytesMut::with_capacity(1024));
        pool.begin_interval();
        let big = pool.take_at_least(2000).unwrap();
        pool.give(big);
        assert_eq!(pool.release_unused(), 1024, "one of the two went unused");
        assert_eq!(pool.idle(), 1);
    }

    #[test]
    fn evicted_large_buffers_are_not_released_twice() {
        let mut pool = BufPool::new(1024, 8).large_budget(300 * 1024);
        pool.give(BytesMut::with_capacity(100 * 1024));
        pool.give(BytesMut::with_capacity(150 * 1024));
        pool.begin_interval();
        // Makes room by evicting the oldest: the count of unused ones falls with it.
        pool.give(BytesMut::with_capacity(120 * 1024));
        assert_eq!(pool.large_idle_bytes(), 270 * 1024);
        assert_eq!(pool.release_unused(), 150 * 1024);
        assert_eq!(pool.large_idle_bytes(), 120 * 1024);
    }
}
