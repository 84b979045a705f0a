//! A stream session's buffers, held only while bytes are in flight: an idle session costs
//! one pointer for them.
//!
//! The read buffer and the outbound queue live in one box, [`Io`], taken when the session
//! first needs either and handed back when both have drained. Handed-back boxes wait in a
//! short per-thread list with their (cleared) buffers, so a request/response session takes
//! the same box, buffers and all, for every message: no allocation, and no trip of each
//! buffer through the reactor's pool. The pool frees the boxes that waited unused through
//! one of its release intervals, as it frees its own buffers (`spare_cache`).

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use bytes::BytesMut;
use getty_reactor::{BufPool, CacheRequest};

use crate::outbound::Outbound;

/// What a session holds while bytes are in flight.
#[derive(Default)]
pub(crate) struct Io {
    /// Bytes read and not yet decoded (a partial frame between reads).
    read: BytesMut,
    /// Bytes queued and not yet written.
    out: Outbound,
}

/// At most this many drained boxes wait per thread: enough for the sessions one turn
/// drains back to back, few enough that their buffers (two pooled buffers each at most)
/// stay a small, fixed amount of memory.
const MAX_SPARE: usize = 8;

/// Drained boxes, with their buffers, for the next session that needs one. The boxes
/// themselves are what is kept: a session holds a `Box<Io>`, and handing one out must not
/// allocate.
struct Spare {
    /// The oldest first: a session takes the box handed back last.
    #[allow(clippy::vec_box)]
    boxes: Vec<Box<Io>>,
    /// The fewest boxes held at once since the pool's release interval began: that many,
    /// the oldest, waited through all of it unused.
    low: usize,
}

thread_local! {
    static SPARE: RefCell<Spare> = const {
        RefCell::new(Spare {
            boxes: Vec::new(),
            low: 0,
        })
    };
}

#[inline(never)]
fn take_spare() -> Box<Io> {
    SPARE
        .try_with(|spare| {
            let mut spare = spare.borrow_mut();
            let io = spare.boxes.pop();
            spare.low = spare.low.min(spare.boxes.len());
            io
        })
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The spare list as the reactor's pool sees it ([`BufPool::set_thread_cache`]): what it
/// holds, and the boxes that went unused through a whole release interval, freed at its
/// end (their buffers too), so that an idle reactor's thread holds none.
fn spare_cache(request: CacheRequest) -> usize {
    let answer = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        match request {
            CacheRequest::HeldBytes => spare.boxes.iter().map(|io| io.held_bytes()).sum(),
            CacheRequest::BeginInterval => {
                spare.low = spare.boxes.len();
                0
            }
            CacheRequest::ReleaseUnused => {
                let unused = spare.low;
                spare.low = 0;
                spare.boxes.drain(..unused).map(|io| io.held_bytes()).sum()
            }
        }
    });
    // Only while the thread is being torn down, when its list is gone.
    answer.unwrap_or(0)
}

impl Io {
    /// The capacity of the buffers a spare box keeps.
    fn held_bytes(&self) -> usize {
        self.read.capacity() + self.out.tail.capacity()
    }
}

/// A session's [`Io`], absent while nothing is in flight. It derefs to the outbound queue,
/// so code that writes (`session.out.tail`, `&mut session.out`) takes a box on first use;
/// `len`, `is_empty` and `clear` never do.
#[derive(Default)]
pub(crate) struct Buffers(Option<Box<Io>>);

impl Buffers {
    #[inline]
    fn io(&mut self) -> &mut Io {
        if self.0.is_none() {
            self.0 = Some(take_spare());
        }
        self.0.as_mut().expect("just taken")
    }

    /// The read buffer (taking a box if the session has none).
    #[inline]
    pub(crate) fn read_buf(&mut self) -> &mut BytesMut {
        &mut self.io().read
    }

    /// The read buffer and the outbound queue at once, for a decode that answers the peer.
    #[inline]
    pub(crate) fn read_and_out(&mut self) -> (&mut BytesMut, &mut Outbound) {
        let io = self.io();
        (&mut io.read, &mut io.out)
    }

    /// Bytes read and not yet decoded.
    #[inline]
    pub(crate) fn read_len(&self) -> usize {
        self.0.as_ref().map_or(0, |io| io.read.len())
    }

    /// Room in the read buffer, from its unread bytes on.
    #[inline]
    pub(crate) fn read_capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |io| io.read.capacity())
    }

    /// Bytes queued and not yet written.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |io| io.out.len())
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything queued (the session is going away without flushing).
    pub(crate) fn clear(&mut self) {
        if let Some(io) = self.0.as_mut() {
            io.out.clear();
        }
    }

    /// Whether the session holds a box now (for tests).
    #[cfg(test)]
    pub(crate) fn is_held(&self) -> bool {
        self.0.is_some()
    }

    /// After an event: a session with nothing in flight hands its box back; one still
    /// waiting for bytes (a partial frame) or for the socket (a queue) keeps it, but gives
    /// the buffer it does not use back to the reactor's pool, and moves a small partial
    /// frame out of a pooled buffer into one of its own size.
    pub(crate) fn release(&mut self, pool: &mut BufPool) {
        let Some(io) = self.0.as_mut() else {
            return;
        };
        match (io.read.is_empty(), io.out.is_empty()) {
            (true, true) => {
                let io = self.0.take().expect("checked above");
                hand_back(io, pool);
            }
            (read_drained, out_drained) => {
                if read_drained {
                    give(&mut io.read, pool);
                } else {
                    compact_partial_frame(&mut io.read, pool);
                }
                if out_drained {
                    give(&mut io.out.tail, pool);
                }
            }
        }
    }

    /// The session has ended: its buffers go back to the pool, its box to the spare list.
    pub(crate) fn give_back(&mut self, pool: &mut BufPool) {
        if let Some(mut io) = self.0.take() {
            io.out.clear();
            io.read.clear();
            hand_back(io, pool);
        }
    }
}

/// Puts a drained box on the thread's spare list with its buffers, cleared (those the
/// pool would not keep are freed); with the list full, the buffers go to the pool and the
/// box is freed.
fn hand_back(mut io: Box<Io>, pool: &mut BufPool) {
    keep_for_next_use(&mut io.read, pool);
    keep_for_next_use(&mut io.out.tail, pool);
    io.out.trim();
    // The pool frees the list's unused boxes with its own unused buffers.
    pool.set_thread_cache(spare_cache);
    let full = SPARE
        .try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.boxes.len() < MAX_SPARE {
                spare.boxes.push(io);
                None
            } else {
                Some(io)
            }
        })
        .ok()
        .flatten();
    if let Some(mut io) = full {
        give(&mut io.read, pool);
        give(&mut io.out.tail, pool);
    }
}

/// Clears `buf` for the next session if the pool would keep it among its ordinary
/// buffers, and otherwise gives it to the pool, which keeps a large one within its budget
/// and frees the rest. The pool's test sees through a short remainder of a large
/// allocation (a read buffer grown for one big frame), which a spare box would otherwise
/// keep whole.
#[inline]
fn keep_for_next_use(buf: &mut BytesMut, pool: &mut BufPool) {
    // Even an empty handle may be the remainder of a frame that took all of a large
    // allocation: once the frame is gone, it alone holds that memory.
    if !pool.reusable(buf) {
        pool.give(std::mem::take(buf));
    }
}

/// Gives `buf`'s memory back to the pool.
fn give(buf: &mut BytesMut, pool: &mut BufPool) {
    if buf.capacity() > 0 {
        pool.give(std::mem::take(buf));
    }
}

/// A partial frame of at most this fraction of the pool's buffer size (8 KiB of 64 KiB) is
/// moved out of a pooled (or grown) buffer into a small one of its own, so that thousands
/// of sessions stalled a few bytes into a frame do not each pin a pooled buffer: a stalled
/// session holds what its peer sent, or, past this, at most about eight times it (a
/// buffer grows ahead of its bytes by at most as much again, or `READ_AHEAD`).
pub(crate) const COMPACT_FRACTION: usize = 8;

/// Moves a small partial frame out of a pooled buffer into one of its own size.
pub(crate) fn compact_partial_frame(buf: &mut BytesMut, pool: &mut BufPool) {
    let small = buf.len() <= pool.buffer_size() / COMPACT_FRACTION;
    if !buf.is_empty() && small && buf.capacity() >= pool.buffer_size() {
        let small = BytesMut::from(&buf[..]);
        pool.give(std::mem::replace(buf, small));
    }
}

impl Deref for Buffers {
    type Target = Outbound;

    /// The queue, or an empty one for a session that holds no box.
    fn deref(&self) -> &Outbound {
        static EMPTY: OnceLock<Outbound> = OnceLock::new();
        match self.0.as_deref() {
            Some(io) => &io.out,
            None => EMPTY.get_or_init(Outbound::default),
        }
    }
}

impl DerefMut for Buffers {
    /// The queue, taking a box if the session holds none.
    #[inline]
    fn deref_mut(&mut self) -> &mut Outbound {
        &mut self.io().out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` sessions at once take a box with a read buffer, then drain and hand it back.
    fn hand_back(n: usize, pool: &mut BufPool) {
        let mut sessions: Vec<Buffers> = (0..n).map(|_| Buffers::default()).collect();
        for buffers in &mut sessions {
            buffers.read_buf().reserve(4096);
        }
        for buffers in &mut sessions {
            buffers.release(pool);
            assert!(!buffers.is_held());
        }
    }

    #[test]
    fn the_pool_frees_the_spare_boxes_that_went_unused_through_an_interval() {
        let mut pool = BufPool::new(4096, 4);
        let held = |pool: &BufPool| pool.thread_cache_bytes();
        hand_back(3, &mut pool);
        let three = held(&pool);
        assert!(three >= 3 * 4096 && !pool.is_empty(), "{three}");
        pool.begin_interval();
        // One box is taken and handed back within the interval: the two others waited.
        hand_back(1, &mut pool);
        let freed = pool.release_unused();
        assert!(freed >= 2 * 4096 && held(&pool) == three - freed, "{freed}");
        // The last one, unused through the next interval, goes too.
        assert_eq!(pool.release_unused(), three - freed);
        assert_eq!(held(&pool), 0);
        assert!(pool.is_empty());
    }

    #[test]
    fn a_drained_session_hands_its_box_back_and_gets_it_again_with_its_buffers() {
        let mut pool = BufPool::new(4096, 4);
        let mut buffers = Buffers::default();
        assert!(!buffers.is_held() && buffers.is_empty());
        buffers.tail = pool.take();
        buffers.tail.extend_from_slice(b"reply");
        buffers.read_buf().extend_from_slice(b"partial");
        buffers.release(&mut pool);
        assert!(buffers.is_held(), "bytes in flight keep the box");
        buffers.read_buf().clear();
        buffers.tail.clear();
        let tail_at = buffers.tail.as_ptr();
        buffers.release(&mut pool);
        assert!(!buffers.is_held(), "a drained session holds no box");
        let mut next = Buffers::default();
        let tail = &mut next.tail; // mutably: that takes the spare box
        assert_eq!(
            tail.as_ptr(),
            tail_at,
            "the spare box came back, buffer and all"
        );
        assert!(tail.capacity() >= 4096 && tail.is_empty());
    }

    #[test]
    fn a_session_waiting_on_a_partial_frame_keeps_no_pooled_buffer() {
        let mut pool = BufPool::new(4096, 4);
        let mut buffers = Buffers::default();
        *buffers.read_buf() = pool.take();
        buffers.read_buf().extend_from_slice(b"hea");
        buffers.tail = pool.take();
        buffers.release(&mut pool);
        assert_eq!(&buffers.read_buf()[..], b"hea");
        assert!(
            buffers.read_buf().capacity() < 4096,
            "the partial frame was compacted"
        );
        assert_eq!(
            buffers.tail.capacity(),
            0,
            "the drained queue gave its buffer back"
        );
        assert_eq!(pool.idle(), 2);
    }
}
