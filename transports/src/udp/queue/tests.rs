use super::model::CHARGE;
use super::*;

mod model;
mod parking_model;

/// A socket stand-in: accepts at most `per_call` datagrams per call, or fails with the
/// scripted errors first.
struct Fake {
    sent: Sent,
    script: VecDeque<io::Result<usize>>,
    calls: usize,
}

impl Fake {
    fn new(script: Vec<io::Result<usize>>) -> Self {
        Fake {
            sent: Vec::new(),
            script: script.into(),
            calls: 0,
        }
    }

    fn send(&mut self, items: &[Outgoing<'_, u32>]) -> io::Result<usize> {
        self.calls += 1;
        let n = match self.script.pop_front() {
            Some(Err(e)) => return Err(e),
            Some(Ok(n)) => n.min(items.len()),
            None => items.len(),
        };
        for item in &items[..n] {
            self.sent.push((item.data.to_vec(), item.peer.copied()));
        }
        Ok(n)
    }
}

fn drain(q: &mut DatagramQueue<u32>, fake: &mut Fake, per_call: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    for _ in 0..1000 {
        let step = q.send_step(Instant::now(), per_call, &mut |items: &[Outgoing<
            '_,
            u32,
        >]| {
            fake.send(items)
        });
        let done = matches!(step, Step::Empty | Step::Blocked);
        steps.push(step);
        if done {
            break;
        }
    }
    steps
}

type Sent = Vec<(Vec<u8>, Option<u32>)>;

fn filled() -> (DatagramQueue<u32>, Sent) {
    let mut q = DatagramQueue::default();
    let mut want = Vec::new();
    for i in 0..40u32 {
        let len = if i % 9 == 0 {
            5000 + i as usize
        } else {
            1 + i as usize
        };
        let data: Vec<u8> = (0..len).map(|b| (b as u32 + i) as u8).collect();
        let peer = (i % 2 == 0).then_some(i);
        if i % 3 == 0 {
            q.push_bytes(peer, Bytes::from(data.clone()));
        } else {
            q.tail.extend_from_slice(&data);
            q.push_encoded(peer, len);
        }
        want.push((data, peer));
    }
    (q, want)
}

#[test]
fn order_and_destinations_survive_partial_batches() {
    for per_call in [1, 7, 32, 64] {
        let (mut q, want) = filled();
        let total: usize = want.iter().map(|(d, _)| d.len()).sum();
        assert_eq!(q.len(), total + want.len() * CHARGE);
        assert_eq!(q.payload_bytes(), total);
        let mut fake = Fake::new(vec![Ok(3), Ok(1), Ok(5)]);
        drain(&mut q, &mut fake, per_call);
        assert_eq!(fake.sent, want, "per_call {per_call}");
        assert!(q.is_empty() && q.tail.is_empty());
        assert_eq!(q.len(), 0);
    }
}

#[test]
fn a_full_socket_keeps_everything_queued() {
    let (mut q, want) = filled();
    let mut fake = Fake::new(vec![Ok(2), Err(io::ErrorKind::WouldBlock.into())]);
    let steps = drain(&mut q, &mut fake, 32);
    assert!(matches!(steps.last(), Some(Step::Blocked)));
    assert_eq!(q.datagrams(), want.len() - 2);
    // Writable again: the rest goes out, in order, nothing lost.
    drain(&mut q, &mut fake, 32);
    assert_eq!(fake.sent, want);
}

#[test]
fn own_errors_drop_the_datagram_after_a_retry_and_say_so() {
    let (mut q, want) = filled();
    let emsgsize = || Err(io::Error::new(io::ErrorKind::InvalidInput, "too long"));
    let mut fake = Fake::new(vec![emsgsize(), emsgsize()]);
    let steps = drain(&mut q, &mut fake, 8);
    let failures: Vec<Option<usize>> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Failed { dropped, .. } => Some(*dropped),
            _ => None,
        })
        .collect();
    assert_eq!(failures, vec![None, Some(want[0].0.len())]);
    assert_eq!(fake.sent, want[1..].to_vec());
}

#[test]
fn peer_errors_are_retried() {
    let (mut q, want) = filled();
    let refused = || Err(io::ErrorKind::ConnectionRefused.into());
    let mut fake = Fake::new(vec![refused(), Ok(1), refused(), refused()]);
    let steps = drain(&mut q, &mut fake, 4);
    let dropped = steps
        .iter()
        .filter(|s| {
            matches!(
                s,
                Step::Failed {
                    dropped: Some(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(dropped, 0);
    assert_eq!(fake.sent, want);
}

#[test]
fn clear_forgets_everything() {
    let (mut q, _) = filled();
    q.clear();
    assert!(q.is_empty());
    assert_eq!(q.len(), 0);
    assert!(matches!(
        q.send_step(
            Instant::now(),
            4,
            &mut |_: &[Outgoing<'_, u32>]| -> io::Result<usize> { unreachable!() }
        ),
        Step::Empty
    ));
}
