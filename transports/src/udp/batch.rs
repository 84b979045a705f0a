//! Several datagrams per syscall where the kernel can (`recvmmsg`/`sendmmsg` on Linux,
//! called through mio's `try_io` and `libc`, since mio offers neither), one at a time
//! elsewhere or when batching is turned off.
//!
//! Buffers are the caller's: a receive writes each datagram into the spare capacity of
//! its own slot (a `BytesMut`), and the `mmsghdr`/`iovec`/address arrays live on the stack
//! of the call. Nothing here allocates. The codec then hands the message out of the slot:
//! a small one (most datagrams) as a copy, so a handler that keeps it does not pin the slot
//! (a pooled read buffer), and the slot is reused for the next receive.

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
    /// The datagram's length as sent; more than was stored when it was truncated.
    pub(crate) len: usize,
    /// Only the first bytes of the datagram fit its slot.
    pub(crate) truncated: bool,
    /// The sender, when asked for.
    pub(crate) peer: Option<A>,
}

impl<A> Default for RecvMeta<A> {
    fn default() -> Self {
        RecvMeta {
            len: 0,
            truncated: false,
            peer: None,
        }
    }
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

/// Receives up to `slots.len()` datagrams (at most [`MAX_BATCH`]), each into the spare
/// capacity of its slot (at most `slot_size` bytes), filling `metas` alike. Slots must be
/// empty. `WouldBlock` when there was nothing to read.
pub(crate) fn recv<S: DatagramSocket>(
    sock: &S,
    slots: &mut [BytesMut],
    metas: &mut [RecvMeta<S::Addr>],
    slot_size: usize,
    want_addr: bool,
    mmsg: bool,
) -> io::Result<Received> {
    let n = slots.len().min(metas.len()).min(MAX_BATCH);
    #[cfg(target_os = "linux")]
    if mmsg && n > 1 {
        return linux::recv_mmsg(sock, &mut slots[..n], &mut metas[..n], slot_size, want_addr);
    }
    let _ = mmsg;
    let mut count = 0;
    while count < n {
        match recv_one(
            sock,
            &mut slots[count],
            &mut metas[count],
            slot_size,
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

/// One `recvfrom` (or `recv` on a connected socket) into the slot's spare capacity.
fn recv_one<S: DatagramSocket>(
    sock: &S,
    slot: &mut BytesMut,
    meta: &mut RecvMeta<S::Addr>,
    slot_size: usize,
    want_addr: bool,
) -> io::Result<()> {
    debug_assert!(slot.is_empty());
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
        peer,
    };
    Ok(())
}

/// Sends the first datagrams of `items`: all of them with one `sendmmsg` when `mmsg` is
/// on (Linux), else only the first. Returns how many went out; an error means the first
/// one did not.
pub(crate) fn send<S: DatagramSocket>(
    sock: &S,
    items: &[Outgoing<'_, S::Addr>],
    mmsg: bool,
) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    if mmsg && items.len() > 1 {
        return linux::send_mmsg(sock, items);
    }
    let _ = mmsg;
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
        want_addr: bool,
    ) -> io::Result<Received> {
        let n = slots.len().min(MAX_BATCH);
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
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
            // all-zero `mmsghdr` is valid (null pointers, zero lengths).
            unsafe {
                let iov = iov_base.add(i);
                iov.write(libc::iovec {
                    iov_base: spare.as_mut_ptr().cast(),
                    iov_len: room,
                });
                let mut hdr: libc::mmsghdr = std::mem::zeroed();
                hdr.msg_hdr.msg_iov = iov;
                hdr.msg_hdr.msg_iovlen = 1;
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
            let len = hdr.msg_len as usize;
            let stored = len.min(rooms[i]);
            // SAFETY: the kernel initialised the first `stored` bytes of slot i's spare
            // capacity (the iovec covered `rooms[i]` bytes of it).
            unsafe { slots[i].set_len(stored) };
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
                truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > rooms[i],
                peer,
            };
        }
        Ok(Received {
            count: got,
            drained: got < n,
            error: None,
        })
    }

    pub(super) fn send_mmsg<S: DatagramSocket>(
        sock: &S,
        items: &[Outgoing<'_, S::Addr>],
    ) -> io::Result<usize> {
        let n = items.len().min(MAX_BATCH);
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
        let mut names = [const { MaybeUninit::<SockAddr>::uninit() }; MAX_BATCH];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
        let iov_base = iovs.as_mut_ptr().cast::<libc::iovec>();
        let name_base = names.as_mut_ptr().cast::<SockAddr>();
        for (i, item) in items.iter().enumerate().take(n) {
            // SAFETY: `i < n <= MAX_BATCH`; an all-zero `mmsghdr` is valid. The kernel only
            // reads through these pointers (`sendmmsg` does not write the payload).
            unsafe {
                let iov = iov_base.add(i);
                iov.write(libc::iovec {
                    iov_base: item.data.as_ptr().cast_mut().cast(),
                    iov_len: item.data.len(),
                });
                let mut hdr: libc::mmsghdr = std::mem::zeroed();
                hdr.msg_hdr.msg_iov = iov;
                hdr.msg_hdr.msg_iovlen = 1;
                if let Some(peer) = item.peer {
                    let name = name_base.add(i);
                    name.write(S::encode_addr(peer));
                    hdr.msg_hdr.msg_name = (*name).as_ptr().cast_mut().cast();
                    hdr.msg_hdr.msg_namelen = (*name).len();
                }
                hdrs[i].write(hdr);
            }
        }
        let fd = sock.sock().as_raw_fd();
        let hdr_ptr = hdrs.as_mut_ptr().cast::<libc::mmsghdr>();
        sock.try_io(|| {
            // SAFETY: the first `n` headers are initialised and point at live payloads and
            // addresses for the duration of the call.
            let r = unsafe { libc::sendmmsg(fd, hdr_ptr, n as _, 0) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as usize)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use mio::net::UdpSocket;

    use super::*;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        (a, b)
    }

    fn recv_all(sock: &UdpSocket, want: usize, mmsg: bool) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut slots: Vec<BytesMut> = (0..8).map(|_| BytesMut::with_capacity(2048)).collect();
        let mut metas: Vec<RecvMeta<SocketAddr>> = (0..8).map(|_| RecvMeta::default()).collect();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.len() < want && std::time::Instant::now() < deadline {
            match recv(sock, &mut slots, &mut metas, 1500, true, mmsg) {
                Ok(r) => {
                    for i in 0..r.count {
                        assert!(!metas[i].truncated);
                        got.push((slots[i].to_vec(), metas[i].peer.unwrap()));
                        slots[i].clear();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        got
    }

    #[test]
    fn batches_keep_order_and_addresses() {
        for mmsg in [false, true] {
            let (a, b) = pair();
            let to = b.local_addr().unwrap();
            let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1 + i as usize * 50]).collect();
            let items: Vec<Outgoing<'_, SocketAddr>> = payloads
                .iter()
                .map(|p| Outgoing {
                    data: p,
                    peer: Some(&to),
                })
                .collect();
            let mut sent = 0;
            while sent < items.len() {
                sent += send(&a, &items[sent..], mmsg).unwrap();
            }
            let got = recv_all(&b, payloads.len(), mmsg);
            assert_eq!(got.len(), payloads.len(), "mmsg {mmsg}");
            for ((data, from), want) in got.iter().zip(&payloads) {
                assert_eq!(data, want);
                assert_eq!(*from, a.local_addr().unwrap());
            }
        }
    }

    #[test]
    fn truncation_reports_the_real_length() {
        for mmsg in [false, true] {
            let (a, b) = pair();
            a.send_to(&[7u8; 3000], b.local_addr().unwrap()).unwrap();
            a.send_to(&[8u8; 10], b.local_addr().unwrap()).unwrap();
            let mut slots: Vec<BytesMut> = (0..4).map(|_| BytesMut::with_capacity(4096)).collect();
            let mut metas: Vec<RecvMeta<SocketAddr>> =
                (0..4).map(|_| RecvMeta::default()).collect();
            let mut seen = Vec::new();
            while seen.len() < 2 {
                match recv(&b, &mut slots, &mut metas, 1000, false, mmsg) {
                    Ok(r) => {
                        for i in 0..r.count {
                            seen.push((metas[i].len, metas[i].truncated, slots[i].len()));
                            slots[i].clear();
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(1))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(seen[0].1, "mmsg {mmsg}: {seen:?}");
            assert_eq!(seen[0].2, 1000);
            if cfg!(target_os = "linux") {
                assert_eq!(seen[0].0, 3000);
            }
            assert_eq!(seen[1], (10, false, 10));
        }
    }
}
