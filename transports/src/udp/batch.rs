//! Several datagrams per syscall where the kernel can (`recvmmsg`/`sendmmsg` on Linux,
//! called through mio's `try_io` and `libc`, since mio offers neither), one at a time
//! elsewhere or when batching is turned off.
//!
//! Buffers are the caller's: a receive writes each datagram into the spare capacity of
//! its own slot (a `BytesMut`), and the `mmsghdr`/`iovec`/address arrays live on the stack
//! of the call. Nothing here allocates. The codec then hands the message out of the slot:
//! a small one (most datagrams) as a copy, so a handler that keeps it does not pin the slot
//! (a pooled read buffer), and the slot is reused for the next receive.
//!
//! Slots are pooled buffers (64 KiB), which hold any UDP datagram. A unix datagram can be
//! larger (up to the sender's send buffer, megabytes): where the session accepts such, each
//! slot gets a second `iovec` into an [`Overflow`] region of its own, address space that
//! costs memory only where a large datagram lands (and is given back when the socket goes
//! idle). So a datagram up to `max_message_len` is received whole, in a batch, without
//! every slot being a megabyte of memory.

use std::ffi::c_int;
use std::io;
#[cfg(target_os = "linux")]
use std::mem::MaybeUninit;

use bytes::BytesMut;
#[cfg(not(target_os = "linux"))]
use socket2::MaybeUninitSlice;

use super::socket::DatagramSocket;

/// The most datagrams one call moves.
pub(crate) const MAX_BATCH: usize = 64;

/// `MSG_TRUNC` as an input flag makes Linux report a datagram's real length even when it
/// did not fit the buffer, so an oversized datagram is reported with its true size.
#[cfg(target_os = "linux")]
const TRUNC: c_int = libc::MSG_TRUNC;
#[cfg(not(target_os = "linux"))]
const TRUNC: c_int = 0;

/// What a receive learnt about one datagram.
#[derive(Debug)]
pub(crate) struct RecvMeta<A> {
    /// The datagram's length as sent; more than was stored when it was truncated (on
    /// Linux, which reports the real length; elsewhere only the flag says so).
    pub(crate) len: usize,
    /// Only the first bytes of the datagram fit its slot (and its overflow region).
    pub(crate) truncated: bool,
    /// Bytes of the datagram stored in the slot's overflow region, after those in the slot.
    pub(crate) overflow: usize,
    /// The sender, when asked for.
    pub(crate) peer: Option<A>,
}

impl<A> Default for RecvMeta<A> {
    fn default() -> Self {
        RecvMeta {
            len: 0,
            truncated: false,
            overflow: 0,
            peer: None,
        }
    }
}

/// Room for the part of a datagram that does not fit its slot: `regions` regions of `per`
/// bytes each, one per slot, in one anonymous mapping reserved without being committed, so
/// that only the pages a large datagram is written to take memory. [`release`]
/// (`Overflow::release`) gives those pages back.
pub(crate) struct Overflow {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    per: usize,
    regions: usize,
    /// Bytes written into the regions since the last release.
    touched: usize,
}

// SAFETY: the mapping is owned by this value alone (no aliasing pointers escape it).
unsafe impl Send for Overflow {}

impl Overflow {
    /// Reserves `regions` regions of `per` bytes.
    pub(crate) fn new(regions: usize, per: usize) -> io::Result<Overflow> {
        let too_big = || io::Error::new(io::ErrorKind::OutOfMemory, "overflow region too large");
        let len = regions
            .checked_mul(per)
            .filter(|&l| l > 0 && l <= isize::MAX as usize)
            .ok_or_else(too_big)?;
        let ptr = map(len)?;
        Ok(Overflow {
            ptr,
            len,
            per,
            regions,
            touched: 0,
        })
    }

    /// How many slots have a region.
    pub(crate) fn regions(&self) -> usize {
        self.regions
    }

    /// Bytes per region.
    pub(crate) fn per(&self) -> usize {
        self.per
    }

    /// Bytes written since the last release: an upper bound of the memory it holds.
    pub(crate) fn touched(&self) -> usize {
        self.touched
    }

    /// The start of region `i`.
    fn region_ptr(&self, i: usize) -> *mut u8 {
        assert!(i < self.regions);
        // SAFETY: `i * per < len`, inside the mapping.
        unsafe { self.ptr.as_ptr().add(i * self.per) }
    }

    /// The first `len` bytes of region `i`, as a receive stored them.
    pub(crate) fn part(&self, i: usize, len: usize) -> &[u8] {
        assert!(len <= self.per);
        // SAFETY: inside region i of the mapping; anonymous memory is always initialised
        // (zero until written), and a receive wrote the first `len` bytes.
        unsafe { std::slice::from_raw_parts(self.region_ptr(i), len) }
    }

    /// Gives back the memory the regions took (they read as zeros afterwards; the address
    /// space stays reserved).
    pub(crate) fn release(&mut self) {
        if self.touched == 0 {
            return;
        }
        self.touched = 0;
        discard(self.ptr, self.len);
    }
}

impl Drop for Overflow {
    fn drop(&mut self) {
        unmap(self.ptr, self.len);
    }
}

#[cfg(unix)]
fn map(len: usize) -> io::Result<std::ptr::NonNull<u8>> {
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    std::ptr::NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

#[cfg(unix)]
fn discard(ptr: std::ptr::NonNull<u8>, len: usize) {
    // SAFETY: the whole mapping, which this process owns; its contents are not needed.
    let r = unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTNEED) };
    if r != 0 {
        log::debug!(
            "madvise on a receive overflow region: {}",
            io::Error::last_os_error()
        );
    }
}

#[cfg(unix)]
fn unmap(ptr: std::ptr::NonNull<u8>, len: usize) {
    // SAFETY: the mapping made by `map` with this length, unmapped once.
    unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
}

#[cfg(not(unix))]
fn map(len: usize) -> io::Result<std::ptr::NonNull<u8>> {
    let layout = std::alloc::Layout::array::<u8>(len).map_err(io::Error::other)?;
    // SAFETY: `len > 0`; zeroed memory is initialised.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    std::ptr::NonNull::new(ptr).ok_or_else(|| io::ErrorKind::OutOfMemory.into())
}

#[cfg(not(unix))]
fn discard(_: std::ptr::NonNull<u8>, _: usize) {}

#[cfg(not(unix))]
fn unmap(ptr: std::ptr::NonNull<u8>, len: usize) {
    let layout = std::alloc::Layout::array::<u8>(len).expect("made by map");
    // SAFETY: allocated by `map` with this layout.
    unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) };
}

/// The outcome of one [`recv`].
#[derive(Debug)]
pub(crate) struct Received {
    /// Datagrams stored in the first `count` slots.
    pub(crate) count: usize,
    /// The socket's queue was seen empty: with edge-triggered readiness the next datagram
    /// raises a new event, so there is no need to read again until then.
    pub(crate) drained: bool,
    /// An error that came after `count` datagrams (it was consumed: report it).
    pub(crate) error: Option<io::Error>,
}

/// One datagram to send: its bytes and, on an unconnected socket, its destination.
#[derive(Debug)]
pub(crate) struct Outgoing<'a, A> {
    pub(crate) data: &'a [u8],
    pub(crate) peer: Option<&'a A>,
}

/// Receives up to `slots.len()` datagrams (at most [`MAX_BATCH`], and at most one per
/// overflow region when there is an overflow), each into the spare capacity of its slot (at
/// most `slot_size` bytes) and then its overflow region, filling `metas` alike. Slots must
/// be empty. `WouldBlock` when there was nothing to read.
pub(crate) fn recv<S: DatagramSocket>(
    sock: &S,
    slots: &mut [BytesMut],
    metas: &mut [RecvMeta<S::Addr>],
    slot_size: usize,
    mut overflow: Option<&mut Overflow>,
    want_addr: bool,
    mmsg: bool,
) -> io::Result<Received> {
    let regions = overflow.as_ref().map_or(MAX_BATCH, |o| o.regions());
    let n = slots.len().min(metas.len()).min(MAX_BATCH).min(regions);
    #[cfg(target_os = "linux")]
    if mmsg && n > 1 {
        return linux::recv_mmsg(
            sock,
            &mut slots[..n],
            &mut metas[..n],
            slot_size,
            overflow,
            want_addr,
        );
    }
    let _ = mmsg;
    let mut count = 0;
    while count < n {
        let region = overflow.as_deref_mut().map(|o| (&mut *o, count));
        match recv_one(
            sock,
            &mut slots[count],
            &mut metas[count],
            slot_size,
            region,
            want_addr,
        ) {
            Ok(()) => count += 1,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if count == 0 => return Err(e),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(Received {
                    count,
                    drained: true,
                    error: None,
                })
            }
            Err(e) => {
                return Ok(Received {
                    count,
                    drained: false,
                    error: Some(e),
                })
            }
        }
    }
    Ok(Received {
        count,
        drained: false,
        error: None,
    })
}

/// One `recvfrom` (or `recv` on a connected socket) into the slot's spare capacity, and
/// then into overflow region `i` when given.
fn recv_one<S: DatagramSocket>(
    sock: &S,
    slot: &mut BytesMut,
    meta: &mut RecvMeta<S::Addr>,
    slot_size: usize,
    overflow: Option<(&mut Overflow, usize)>,
    want_addr: bool,
) -> io::Result<()> {
    debug_assert!(slot.is_empty());
    if let Some((overflow, i)) = overflow {
        return recv_one_with_overflow(sock, slot, meta, slot_size, overflow, i, want_addr);
    }
    let spare = slot.spare_capacity_mut();
    let room = spare.len().min(slot_size);
    let s = sock.sock();
    // Linux: `recvfrom`/`recv` with MSG_TRUNC return the datagram's real length, which
    // tells a truncated one apart (and they cost less than `recvmsg`). Elsewhere `recvmsg`
    // reports truncation in its flags.
    #[cfg(target_os = "linux")]
    let (len, truncated, peer) = {
        let buf = &mut spare[..room];
        let (len, peer) = if want_addr {
            let (len, addr) = sock.try_io(|| s.recv_from_with_flags(buf, TRUNC))?;
            (len, S::decode_addr(&addr))
        } else {
            (sock.try_io(|| s.recv_with_flags(buf, TRUNC))?, None)
        };
        (len, len > room, peer)
    };
    #[cfg(not(target_os = "linux"))]
    let (len, truncated, peer) = {
        let mut bufs = [MaybeUninitSlice::new(&mut spare[..room])];
        let (len, flags, peer) = if want_addr {
            let (len, flags, addr) =
                sock.try_io(|| s.recv_from_vectored_with_flags(&mut bufs, TRUNC))?;
            (len, flags, S::decode_addr(&addr))
        } else {
            let (len, flags) = sock.try_io(|| s.recv_vectored_with_flags(&mut bufs, TRUNC))?;
            (len, flags, None)
        };
        (len, flags.is_truncated() || len > room, peer)
    };
    let stored = len.min(room);
    // SAFETY: the kernel initialised the first `stored` bytes of the spare capacity.
    unsafe { slot.set_len(stored) };
    *meta = RecvMeta {
        len,
        truncated,
        overflow: 0,
        peer,
    };
    Ok(())
}

/// One `recvmsg` into the slot's spare capacity and then overflow region `i`.
fn recv_one_with_overflow<S: DatagramSocket>(
    sock: &S,
    slot: &mut BytesMut,
    meta: &mut RecvMeta<S::Addr>,
    slot_size: usize,
    overflow: &mut Overflow,
    i: usize,
    want_addr: bool,
) -> io::Result<()> {
    let spare = slot.spare_capacity_mut();
    let room = spare.len().min(slot_size);
    let per = overflow.per();
    // SAFETY: region i is `per` bytes of the mapping, which nothing else borrows now.
    let region = unsafe {
        std::slice::from_raw_parts_mut(
            overflow.region_ptr(i).cast::<std::mem::MaybeUninit<u8>>(),
            per,
        )
    };
    let mut bufs = [
        socket2::MaybeUninitSlice::new(&mut spare[..room]),
        socket2::MaybeUninitSlice::new(region),
    ];
    let s = sock.sock();
    let (len, flags, peer) = if want_addr {
        let (len, flags, addr) =
            sock.try_io(|| s.recv_from_vectored_with_flags(&mut bufs, TRUNC))?;
        (len, flags, S::decode_addr(&addr))
    } else {
        let (len, flags) = sock.try_io(|| s.recv_vectored_with_flags(&mut bufs, TRUNC))?;
        (len, flags, None)
    };
    let stored = len.min(room + per);
    let in_slot = stored.min(room);
    // SAFETY: the kernel initialised the first `in_slot` bytes of the spare capacity (and
    // the rest of `stored` in region i).
    unsafe { slot.set_len(in_slot) };
    overflow.touched += stored - in_slot;
    *meta = RecvMeta {
        len,
        truncated: flags.is_truncated() || len > room + per,
        overflow: stored - in_slot,
        peer,
    };
    Ok(())
}

/// Sends the first datagrams of `items`: all of them with one `sendmmsg` when `mmsg` is
/// on (Linux), else only the first. Returns how many went out; an error means the first
/// one did not. Where `segmentation` allows, a run of datagrams to one destination goes as
/// one message the kernel cuts up (see [`Segmentation`]).
pub(crate) fn send<S: DatagramSocket>(
    sock: &S,
    items: &[Outgoing<'_, S::Addr>],
    mmsg: bool,
    segmentation: &mut Segmentation,
) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    if mmsg && items.len() > 1 {
        return linux::send_mmsg(sock, items, segmentation);
    }
    let _ = (mmsg, segmentation);
    let Some(item) = items.first() else {
        return Ok(0);
    };
    let s = sock.sock();
    sock.try_io(|| match item.peer {
        Some(peer) => s.send_to(item.data, &S::encode_addr(peer)),
        None => s.send(item.data),
    })?;
    Ok(1)
}

/// UDP generic segmentation offload (`UDP_SEGMENT`, Linux 4.18): consecutive datagrams to
/// one destination, all of one size (the last may be shorter), go down the stack as one
/// message that is cut into those datagrams at the end (by the device, or by the kernel just
/// before it hands them over; on loopback, at the receiving socket). The receiver sees the
/// same datagrams in the same order; the sender pays the route, the headers and the
/// device's queue once per run instead of once per datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segmentation {
    /// Not asked yet whether the kernel has it (asked at the first run worth merging).
    Untried,
    On,
    /// Not for this socket: not UDP, a kernel without it, or a path that refused it
    /// (`EIO`: no checksum offload on the way, IPsec; `EINVAL`: a path MTU under a
    /// segment).
    Off,
}

impl Segmentation {
    /// The state a socket starts in: `Untried` for UDP sockets on Linux, `Off` otherwise.
    pub(crate) fn for_socket(udp: bool) -> Segmentation {
        if udp && HAS_MMSG {
            Segmentation::Untried
        } else {
            Segmentation::Off
        }
    }
}

/// Whether this build batches with `recvmmsg`/`sendmmsg`.
pub(crate) const HAS_MMSG: bool = cfg!(target_os = "linux");

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::AsRawFd;

    use socket2::{SockAddr, SockAddrStorage};

    use super::*;

    pub(super) fn recv_mmsg<S: DatagramSocket>(
        sock: &S,
        slots: &mut [BytesMut],
        metas: &mut [RecvMeta<S::Addr>],
        slot_size: usize,
        mut overflow: Option<&mut Overflow>,
        want_addr: bool,
    ) -> io::Result<Received> {
        let n = slots.len().min(MAX_BATCH);
        if let Some(o) = &overflow {
            assert!(n <= o.regions());
        }
        let per = overflow.as_ref().map_or(0, |o| o.per());
        // Two per datagram: its slot, then its overflow region (when there is one).
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; 2 * MAX_BATCH];
        let mut names = [const { MaybeUninit::<SockAddrStorage>::uninit() }; MAX_BATCH];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
        let mut rooms = [0usize; MAX_BATCH];
        // Raw pointers from one borrow each, so that the headers may point into the arrays.
        let iov_base = iovs.as_mut_ptr().cast::<libc::iovec>();
        let name_base = names.as_mut_ptr().cast::<SockAddrStorage>();
        for (i, slot) in slots.iter_mut().enumerate().take(n) {
            debug_assert!(slot.is_empty());
            let spare = slot.spare_capacity_mut();
            let room = spare.len().min(slot_size);
            rooms[i] = room;
            // SAFETY: `i < n <= MAX_BATCH`, so every pointer stays inside its array; an
            // all-zero `mmsghdr` is valid (null pointers, zero lengths). Region i of the
            // overflow exists (`n <= regions`) and nothing else borrows it during the call.
            unsafe {
                let iov = iov_base.add(2 * i);
                iov.write(libc::iovec {
                    iov_base: spare.as_mut_ptr().cast(),
                    iov_len: room,
                });
                let mut hdr: libc::mmsghdr = std::mem::zeroed();
                hdr.msg_hdr.msg_iov = iov;
                hdr.msg_hdr.msg_iovlen = 1;
                if let Some(o) = &overflow {
                    iov.add(1).write(libc::iovec {
                        iov_base: o.region_ptr(i).cast(),
                        iov_len: per,
                    });
                    hdr.msg_hdr.msg_iovlen = 2;
                }
                if want_addr {
                    let name = name_base.add(i);
                    name.write(SockAddrStorage::zeroed());
                    hdr.msg_hdr.msg_namelen = (*name).size_of();
                    hdr.msg_hdr.msg_name = name.cast();
                }
                hdrs[i].write(hdr);
            }
        }
        let fd = sock.sock().as_raw_fd();
        let hdr_ptr = hdrs.as_mut_ptr().cast::<libc::mmsghdr>();
        let got = sock.try_io(|| {
            // SAFETY: the first `n` headers are initialised; each points at one iovec over
            // the spare capacity of a live slot (at most `room` bytes) and, when asked, at
            // zeroed address storage of the right size. The kernel writes only there.
            let r =
                unsafe { libc::recvmmsg(fd, hdr_ptr, n as _, TRUNC as _, std::ptr::null_mut()) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as usize)
            }
        })?;
        for i in 0..got {
            // SAFETY: initialised above; the kernel filled in `msg_len`, `msg_flags` and
            // `msg_namelen`.
            let hdr = unsafe { hdrs[i].assume_init_ref() };
            // With MSG_TRUNC, the datagram's real length, even when it did not fit.
            let len = hdr.msg_len as usize;
            let stored = len.min(rooms[i] + per);
            let in_slot = stored.min(rooms[i]);
            // SAFETY: the kernel initialised the first `in_slot` bytes of slot i's spare
            // capacity (the iovec covered `rooms[i]` bytes of it), the rest of `stored` in
            // overflow region i.
            unsafe { slots[i].set_len(in_slot) };
            if let Some(o) = overflow.as_deref_mut() {
                o.touched += stored - in_slot;
            }
            let peer = if want_addr {
                // SAFETY: storage i was zeroed above and the kernel wrote a socket address
                // of `msg_namelen` bytes of the socket's family into it.
                let addr =
                    unsafe { SockAddr::new(name_base.add(i).read(), hdr.msg_hdr.msg_namelen) };
                S::decode_addr(&addr)
            } else {
                None
            };
            metas[i] = RecvMeta {
                len,
                truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > rooms[i] + per,
                overflow: stored - in_slot,
                peer,
            };
        }
        Ok(Received {
            count: got,
            drained: got < n,
            error: None,
        })
    }

    /// `setsockopt`/`cmsg` option of `SOL_UDP`: the segment size of a send.
    const UDP_SEGMENT: c_int = 103;
    /// The most segments one message may be cut into (the kernel's `UDP_MAX_SEGMENTS`).
    const MAX_SEGMENTS: usize = 64;
    /// The largest datagram merged: one that fits the smallest IPv6 path (1,280 bytes less
    /// the IPv6 and UDP headers), so that no path MTU refuses a segment. Longer ones go
    /// one per message, and may be fragmented, as without segmentation.
    const MAX_SEGMENT: usize = 1_232;
    /// The most payload bytes one merged message carries (one IP packet's worth).
    const MAX_MERGED: usize = 65_000;

    /// The control message that carries a segment size: `CMSG_SPACE(2)` bytes.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct SegmentCmsg {
        hdr: libc::cmsghdr,
        size: u16,
        _pad: [u8; 6],
    }

    /// How many datagrams from the front of `items` may go as one message: consecutive,
    /// to the same destination, of the first one's size (the last may be shorter).
    fn run_len<A: PartialEq>(items: &[Outgoing<'_, A>]) -> usize {
        let first = &items[0];
        let size = first.data.len();
        if size == 0 || size > MAX_SEGMENT {
            return 1;
        }
        let mut n = 1;
        let mut total = size;
        for item in &items[1..] {
            let len = item.data.len();
            if n == MAX_SEGMENTS
                || len == 0
                || len > size
                || total + len > MAX_MERGED
                || item.peer != first.peer
            {
                break;
            }
            n += 1;
            total += len;
            if len < size {
                break; // only the last segment may be shorter
            }
        }
        n
    }

    /// Whether the kernel knows `UDP_SEGMENT` (it answers `getsockopt` for it since the
    /// same release). A kernel that does not would ignore the control message and send
    /// a run as one long datagram, so it is asked before the first run goes.
    fn kernel_segments<S: DatagramSocket>(sock: &S) -> bool {
        let mut value: c_int = 0;
        let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
        // SAFETY: a valid descriptor, and an out-pointer of `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                sock.sock().as_raw_fd(),
                libc::SOL_UDP,
                UDP_SEGMENT,
                (&mut value as *mut c_int).cast(),
                &mut len,
            )
        };
        r == 0
    }

    pub(super) fn send_mmsg<S: DatagramSocket>(
        sock: &S,
        items: &[Outgoing<'_, S::Addr>],
        segmentation: &mut Segmentation,
    ) -> io::Result<usize> {
        let n = items.len().min(MAX_BATCH);
        if *segmentation == Segmentation::Untried && n > 1 && run_len(&items[..n]) > 1 {
            *segmentation = if kernel_segments(sock) {
                Segmentation::On
            } else {
                Segmentation::Off
            };
        }
        let segments = *segmentation == Segmentation::On;
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
        let mut names = [const { MaybeUninit::<SockAddr>::uninit() }; MAX_BATCH];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
        let mut cmsgs = [const { MaybeUninit::<SegmentCmsg>::uninit() }; MAX_BATCH];
        // Datagrams per message: 1, or a run when segmenting.
        let mut runs = [0u8; MAX_BATCH];
        let iov_base = iovs.as_mut_ptr().cast::<libc::iovec>();
        let name_base = names.as_mut_ptr().cast::<SockAddr>();
        let cmsg_base = cmsgs.as_mut_ptr().cast::<SegmentCmsg>();
        for (i, item) in items.iter().enumerate().take(n) {
            // SAFETY: `i < n <= MAX_BATCH`. The kernel only reads the payloads.
            unsafe {
                iov_base.add(i).write(libc::iovec {
                    iov_base: item.data.as_ptr().cast_mut().cast(),
                    iov_len: item.data.len(),
                });
            }
        }
        let mut messages = 0;
        let mut at = 0;
        while at < n {
            let run = if segments { run_len(&items[at..n]) } else { 1 };
            let item = &items[at];
            // SAFETY: `messages <= at < n <= MAX_BATCH`; an all-zero `mmsghdr` is valid. The
            // header points at the run's iovecs (consecutive, initialised above), at its
            // destination and at its control message, which live until the call returns;
            // the kernel only reads them.
            unsafe {
                let mut hdr: libc::mmsghdr = std::mem::zeroed();
                hdr.msg_hdr.msg_iov = iov_base.add(at);
                hdr.msg_hdr.msg_iovlen = run as _;
                if let Some(peer) = item.peer {
                    let name = name_base.add(messages);
                    name.write(S::encode_addr(peer));
                    hdr.msg_hdr.msg_name = (*name).as_ptr().cast_mut().cast();
                    hdr.msg_hdr.msg_namelen = (*name).len();
                }
                if run > 1 {
                    let cmsg = cmsg_base.add(messages);
                    let mut c: SegmentCmsg = std::mem::zeroed();
                    c.hdr.cmsg_len = libc::CMSG_LEN(2) as _;
                    c.hdr.cmsg_level = libc::SOL_UDP;
                    c.hdr.cmsg_type = UDP_SEGMENT;
                    c.size = item.data.len() as u16;
                    cmsg.write(c);
                    hdr.msg_hdr.msg_control = cmsg.cast();
                    hdr.msg_hdr.msg_controllen = std::mem::size_of::<SegmentCmsg>() as _;
                }
                hdrs[messages].write(hdr);
            }
            runs[messages] = run as u8;
            messages += 1;
            at += run;
        }
        let fd = sock.sock().as_raw_fd();
        let hdr_ptr = hdrs.as_mut_ptr().cast::<libc::mmsghdr>();
        let sent = sock.try_io(|| {
            // SAFETY: the first `messages` headers are initialised and point at live
            // payloads, addresses and control messages for the duration of the call.
            let r = unsafe { libc::sendmmsg(fd, hdr_ptr, messages as _, 0) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as usize)
            }
        });
        match sent {
            Ok(m) => Ok(runs[..m].iter().map(|&r| usize::from(r)).sum()),
            // A merged run was refused. `EINVAL` also comes from the destination itself
            // (port 0, say), so the run's first datagram goes alone: if it fails too, the
            // error is its own, and segmentation stays on for everyone else; if it goes,
            // the path refuses merged runs, and this socket sends datagram by datagram from
            // now on. Either way the caller sees what a plain send would have told it.
            Err(e) if runs[0] > 1 && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {
                let sent = send_mmsg(sock, &items[..1], &mut Segmentation::Off)?;
                log::debug!("UDP segmentation refused ({e}): sending datagram by datagram");
                *segmentation = Segmentation::Off;
                Ok(sent)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
