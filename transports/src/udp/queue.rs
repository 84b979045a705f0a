//! The outbound queue of a datagram session: whole datagrams in order, each with its
//! destination. Small datagrams are encoded back to back into one pooled buffer (the
//! tail); large byte buffers are queued as they are. A flush hands up to a batch of them
//! to one `sendmmsg`.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};

use super::batch::{Outgoing, MAX_BATCH};

/// `write_bytes` copies buffers shorter than this into the tail; longer ones are queued
/// without copying.
const COPY_THRESHOLD: usize = 4096;

/// A datagram that keeps failing for reasons of its own (too big for the route, an
/// unreachable destination) is dropped, and reported, after this many attempts.
const OWN_FAILURES_BEFORE_DROP: u8 = 2;

/// Errors about the peer (ICMP) are reported and the datagram is retried; after this many
/// in a row for the same datagram it is dropped, so that a socket that keeps returning one
/// cannot hold the loop.
const PEER_FAILURES_BEFORE_DROP: u8 = 8;

struct Item<A> {
    peer: Option<A>,
    len: usize,
    /// The bytes, when not in the tail.
    chunk: Option<Bytes>,
}

/// What one [`DatagramQueue::send_step`] did.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing is queued.
    Empty,
    /// `datagrams` went out (possibly none, after an interrupted call).
    Sent { datagrams: usize, bytes: usize },
    /// The socket's buffer is full: wait for writable readiness.
    Blocked,
    /// The first datagram failed. It was `dropped` when it had failed too often; otherwise
    /// it stays first in the queue and the next step retries it.
    Failed {
        error: io::Error,
        dropped: Option<usize>,
    },
}

pub(crate) struct DatagramQueue<A> {
    /// Where codecs encode to; lent from the reactor's pool while the session has output.
    pub(crate) tail: BytesMut,
    items: VecDeque<Item<A>>,
    bytes: usize,
    own_failures: u8,
    peer_failures: u8,
}

impl<A> Default for DatagramQueue<A> {
    fn default() -> Self {
        DatagramQueue {
            tail: BytesMut::new(),
            items: VecDeque::new(),
            bytes: 0,
            own_failures: 0,
            peer_failures: 0,
        }
    }
}

impl<A> DatagramQueue<A> {
    /// Queued bytes.
    pub(crate) fn len(&self) -> usize {
        self.bytes
    }

    /// Queued datagrams.
    pub(crate) fn datagrams(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Records that the last `len` bytes of the tail are one datagram for `peer`.
    pub(crate) fn push_encoded(&mut self, peer: Option<A>, len: usize) {
        debug_assert!(len <= self.tail.len());
        self.items.push_back(Item {
            peer,
            len,
            chunk: None,
        });
        self.bytes += len;
    }

    /// Queues `bytes` as one datagram, copying small ones into the tail.
    pub(crate) fn push_bytes(&mut self, peer: Option<A>, bytes: Bytes) {
        let len = bytes.len();
        if len < COPY_THRESHOLD {
            self.tail.extend_from_slice(&bytes);
            self.push_encoded(peer, len);
            return;
        }
        self.items.push_back(Item {
            peer,
            len,
            chunk: Some(bytes),
        });
        self.bytes += len;
    }

    /// Offers up to `per_call` datagrams from the front to `send` (one syscall), which
    /// returns how many it sent.
    pub(crate) fn send_step<F>(&mut self, per_call: usize, send: F) -> Step
    where
        F: FnOnce(&[Outgoing<'_, A>]) -> io::Result<usize>,
    {
        if self.items.is_empty() {
            return Step::Empty;
        }
        let result = {
            let k = per_call.clamp(1, MAX_BATCH).min(self.items.len());
            let mut batch = [const { MaybeUninit::<Outgoing<'_, A>>::uninit() }; MAX_BATCH];
            let mut offset = 0;
            for (slot, item) in batch.iter_mut().zip(self.items.iter().take(k)) {
                let data: &[u8] = match &item.chunk {
                    Some(chunk) => chunk,
                    None => {
                        let data = &self.tail[offset..offset + item.len];
                        offset += item.len;
                        data
                    }
                };
                slot.write(Outgoing {
                    data,
                    peer: item.peer.as_ref(),
                });
            }
            // SAFETY: the loop initialised the first `k` elements (`k <= items.len()`), and
            // `Outgoing` has no drop glue, so the uninitialised rest is never touched.
            let ready =
                unsafe { std::slice::from_raw_parts(batch.as_ptr().cast::<Outgoing<'_, A>>(), k) };
            send(ready)
        };
        match result {
            Ok(0) => self.fail(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                self.own_failures = 0;
                self.peer_failures = 0;
                let bytes = self.pop(n);
                Step::Sent {
                    datagrams: n,
                    bytes,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Sent {
                datagrams: 0,
                bytes: 0,
            },
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, error: io::Error) -> Step {
        let give_up = if super::socket::is_peer_error(&error) {
            self.peer_failures += 1;
            self.peer_failures >= PEER_FAILURES_BEFORE_DROP
        } else {
            self.own_failures += 1;
            self.own_failures >= OWN_FAILURES_BEFORE_DROP
        };
        let dropped = give_up.then(|| {
            self.own_failures = 0;
            self.peer_failures = 0;
            self.pop(1)
        });
        Step::Failed { error, dropped }
    }

    /// Removes the first `n` datagrams; returns their bytes.
    fn pop(&mut self, n: usize) -> usize {
        let mut bytes = 0;
        for _ in 0..n {
            let Some(item) = self.items.pop_front() else {
                break;
            };
            if item.chunk.is_none() {
                self.tail.advance(item.len);
            }
            bytes += item.len;
        }
        self.bytes -= bytes;
        bytes
    }

    /// Drops everything queued (the session is going away without flushing).
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.tail.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let step = q.send_step(per_call, |items| fake.send(items));
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
            assert_eq!(q.len(), total);
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
        assert!(matches!(q.send_step(4, |_| unreachable!()), Step::Empty));
    }
}
