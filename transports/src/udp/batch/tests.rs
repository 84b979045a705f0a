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
