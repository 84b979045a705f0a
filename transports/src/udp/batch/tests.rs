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
        match recv(sock, &mut slots, &mut metas, 1500, None, true, mmsg) {
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
            sent += send(&a, &items[sent..], mmsg, &mut Segmentation::Off).unwrap();
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
fn overflow_regions_take_what_does_not_fit_a_slot_in_one_batch() {
    use std::os::unix::net::UnixDatagram;
    for mmsg in [false, true] {
        let (a, b) = UnixDatagram::pair().unwrap();
        socket2::SockRef::from(&a)
            .set_send_buffer_size(1 << 20)
            .unwrap();
        b.set_nonblocking(true).unwrap();
        let b = mio::net::UnixDatagram::from_std(b);
        let sizes = [300_000usize, 3, 100, 250_000, 4096];
        let sent: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (j * 7 + i) as u8).collect())
            .collect();
        for d in &sent {
            a.send(d).unwrap();
        }
        // 4 KiB slots; regions of 300,000 - 4,096 + 1 bytes, so 300,001 is the most.
        let mut overflow = Overflow::new(8, 300_001 - 4096).unwrap();
        let mut slots: Vec<BytesMut> = (0..8).map(|_| BytesMut::with_capacity(4096)).collect();
        let mut metas: Vec<RecvMeta<crate::UnixAddr>> =
            (0..8).map(|_| RecvMeta::default()).collect();
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let r = recv(
                &b,
                &mut slots,
                &mut metas,
                4096,
                Some(&mut overflow),
                false,
                mmsg,
            )
            .unwrap();
            for i in 0..r.count {
                assert!(!metas[i].truncated, "mmsg {mmsg}: datagram {}", got.len());
                let mut whole = slots[i].to_vec();
                whole.extend_from_slice(overflow.part(i, metas[i].overflow));
                assert_eq!(whole.len(), metas[i].len);
                got.push(whole);
                slots[i].clear();
            }
        }
        assert!(got == sent, "mmsg {mmsg}: the datagrams came out changed");
        assert!(overflow.touched() >= 300_000 - 4096 + 250_000 - 4096);
        overflow.release();
        assert_eq!(overflow.touched(), 0);
        // One too long for slot and region: truncated, with its real length on Linux.
        a.send(&vec![1u8; 300_002]).unwrap();
        let r = recv(
            &b,
            &mut slots[..1],
            &mut metas[..1],
            4096,
            Some(&mut overflow),
            false,
            mmsg,
        )
        .unwrap();
        assert_eq!(r.count, 1);
        assert!(metas[0].truncated);
        assert_eq!(slots[0].len() + metas[0].overflow, 300_001);
        if cfg!(target_os = "linux") {
            assert_eq!(metas[0].len, 300_002);
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
        let mut metas: Vec<RecvMeta<SocketAddr>> = (0..4).map(|_| RecvMeta::default()).collect();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match recv(&b, &mut slots, &mut metas, 1000, None, false, mmsg) {
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

/// After a moment for stragglers, the socket holds no datagram.
fn assert_nothing_more(sock: &UdpSocket) {
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut buf = [0u8; 2048];
    match sock.recv(&mut buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("one datagram too many: {other:?}"),
    }
}

/// Sends `items` to the end with segmentation allowed; returns the state it ended in.
fn send_all(sock: &UdpSocket, items: &[Outgoing<'_, SocketAddr>]) -> Segmentation {
    let mut segmentation = Segmentation::for_socket(true);
    let mut sent = 0;
    while sent < items.len() {
        match send(sock, &items[sent..], true, &mut segmentation) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    segmentation
}

/// Datagrams of sizes that make runs of every shape: long runs of one size (more than
/// one message holds), a shorter one ending a run, ones too long to merge, empty ones.
fn mixed_payloads() -> Vec<Vec<u8>> {
    let mut sizes = vec![100; 40];
    sizes.push(37);
    sizes.extend([1300; 3]);
    sizes.extend([0, 0]);
    sizes.extend([8; 70]);
    sizes.extend([200, 100, 200, 200, 1232, 1232, 1233]);
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
        .collect()
}

#[test]
fn segmented_runs_arrive_as_the_datagrams_sent() {
    let (a, b) = pair();
    let to = b.local_addr().unwrap();
    let payloads = mixed_payloads();
    let items: Vec<Outgoing<'_, SocketAddr>> = payloads
        .iter()
        .map(|p| Outgoing {
            data: p,
            peer: Some(&to),
        })
        .collect();
    let state = send_all(&a, &items);
    if cfg!(target_os = "linux") {
        assert_ne!(state, Segmentation::Untried, "the kernel was never asked");
    }
    let got = recv_all(&b, payloads.len(), true);
    assert_eq!(got.len(), payloads.len(), "segmentation {state:?}");
    for (i, ((data, from), want)) in got.iter().zip(&payloads).enumerate() {
        assert_eq!(data, want, "datagram {i}, segmentation {state:?}");
        assert_eq!(*from, a.local_addr().unwrap());
    }
    // Nothing more: no datagram was split or merged wrongly.
    assert_nothing_more(&b);
}

#[test]
fn runs_never_cross_destinations() {
    let (a, b) = pair();
    let c = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (to_b, to_c) = (b.local_addr().unwrap(), c.local_addr().unwrap());
    let payloads: Vec<Vec<u8>> = (0..60u8).map(|i| vec![i; 50]).collect();
    // Runs of 5 for b, then 3 for c, alternating.
    let peer_of = |i: usize| if i % 8 < 5 { &to_b } else { &to_c };
    let items: Vec<Outgoing<'_, SocketAddr>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| Outgoing {
            data: p,
            peer: Some(peer_of(i)),
        })
        .collect();
    send_all(&a, &items);
    for (sock, addr) in [(&b, to_b), (&c, to_c)] {
        let want: Vec<&Vec<u8>> = (0..payloads.len())
            .filter(|&i| *peer_of(i) == addr)
            .map(|i| &payloads[i])
            .collect();
        let got = recv_all(sock, want.len(), true);
        let got: Vec<&Vec<u8>> = got.iter().map(|(d, _)| d).collect();
        assert_eq!(got, want, "to {addr}");
        assert_nothing_more(sock);
    }
}

#[test]
fn a_connected_socket_segments_runs_too() {
    let (a, b) = pair();
    a.connect(b.local_addr().unwrap()).unwrap();
    let payloads = mixed_payloads();
    let items: Vec<Outgoing<'_, SocketAddr>> = payloads
        .iter()
        .map(|p| Outgoing {
            data: p,
            peer: None,
        })
        .collect();
    send_all(&a, &items);
    let got = recv_all(&b, payloads.len(), true);
    let got: Vec<Vec<u8>> = got.into_iter().map(|(d, _)| d).collect();
    assert!(got == payloads, "the datagrams came out changed");
}

/// A socket whose path refuses merged runs (here: no UDP checksums, `SO_NO_CHECK`, which
/// segmentation cannot do without) turns segmentation off, and every datagram still goes,
/// in order.
#[cfg(target_os = "linux")]
#[test]
fn a_refused_run_is_sent_datagram_by_datagram() {
    use std::os::fd::AsRawFd;
    let (a, b) = pair();
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value (SO_NO_CHECK is 11 on Linux).
    let r = unsafe {
        libc::setsockopt(
            a.as_raw_fd(),
            libc::SOL_SOCKET,
            11,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_NO_CHECK: {}", io::Error::last_os_error());
    let to = b.local_addr().unwrap();
    let payloads = mixed_payloads();
    let items: Vec<Outgoing<'_, SocketAddr>> = payloads
        .iter()
        .map(|p| Outgoing {
            data: p,
            peer: Some(&to),
        })
        .collect();
    assert_eq!(send_all(&a, &items), Segmentation::Off);
    let got = recv_all(&b, payloads.len(), true);
    let got: Vec<Vec<u8>> = got.into_iter().map(|(d, _)| d).collect();
    assert!(got == payloads, "the datagrams came out changed");
    assert_nothing_more(&b);
}
