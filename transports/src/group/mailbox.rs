//! Broadcasts on their way to a group's part on another reactor: at most one job in that
//! reactor's queue per group, and the bytes waiting bounded like a member's inbox.
//!
//! A broadcast made off a reactor (or on another one) reaches the members of this one
//! through a job. One job per broadcast made the reactor's queue grow with whatever a
//! producer sent while the reactor was busy, without bound (60,000 broadcasts, 68 MiB in
//! 81 ms, in review s35-b). Now the broadcasts wait here, in order, and one job takes all
//! of them at once. What waits here waits for every member of that reactor, so the
//! group's bound and [`SlowConsumer`] policy apply here as in a member's inbox: past
//! `max_pending` bytes a broadcast is skipped, the oldest are dropped, or the members
//! there are closed.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use getty_codec::MessageKind;

use super::SlowConsumer;

/// One broadcast for the members of one reactor.
pub(super) struct Posted {
    pub(super) kind: MessageKind,
    pub(super) payload: Bytes,
    /// The member that must not get it.
    pub(super) except: Option<u64>,
}

/// What [`Mailbox::post`] asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Posting {
    /// Post the job that takes the mailbox's broadcasts: none is on its way.
    SendJob,
    /// A job is on its way already and will take this one too (or the broadcast was
    /// skipped, or the members are being closed).
    Done,
}

/// What a job takes out of a [`Mailbox`].
#[derive(Default)]
pub(super) struct Batch {
    pub(super) broadcasts: VecDeque<Posted>,
    /// Broadcasts skipped under [`SlowConsumer::Skip`] since the last batch.
    pub(super) skipped: u64,
    /// Broadcasts dropped under [`SlowConsumer::DropOldest`] since the last batch.
    pub(super) dropped: u64,
    /// Under [`SlowConsumer::Close`]: the waiting bytes and the bound when they passed
    /// it; every member there is to close.
    pub(super) overflow: Option<(usize, usize)>,
    /// Broadcasts that went with the overflow: those waiting then, and those made after.
    pub(super) discarded: u64,
}

#[derive(Default)]
struct State {
    batch: Batch,
    bytes: usize,
    /// A job is in the reactor's queue to take the batch.
    job_posted: bool,
}

/// The broadcasts waiting for one reactor's part of a group.
#[derive(Default)]
pub(super) struct Mailbox {
    state: Mutex<State>,
}

impl Mailbox {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `posted` within `max_pending` bytes under `policy` (a broadcast longer than
    /// the bound still goes alone, as into an inbox).
    pub(super) fn post(&self, posted: Posted, policy: SlowConsumer, max_pending: usize) -> Posting {
        let mut state = self.state();
        let len = posted.payload.len();
        if state.batch.overflow.is_some() {
            // The members there are closing: nothing more reaches them.
            state.batch.discarded += 1;
            return Posting::Done;
        }
        if state.bytes + len > max_pending && !state.batch.broadcasts.is_empty() {
            match policy {
                SlowConsumer::Skip => {
                    state.batch.skipped += 1;
                    return Posting::Done;
                }
                SlowConsumer::Close => {
                    state.batch.overflow = Some((state.bytes + len, max_pending));
                    let waiting = std::mem::take(&mut state.batch.broadcasts);
                    state.batch.discarded += waiting.len() as u64 + 1;
                    state.bytes = 0;
                    return state.job_needed();
                }
                SlowConsumer::DropOldest => {
                    while state.bytes + len > max_pending {
                        let Some(old) = state.batch.broadcasts.pop_front() else {
                            break;
                        };
                        state.bytes -= old.payload.len();
                        state.batch.dropped += 1;
                    }
                }
            }
        }
        state.bytes += len;
        state.batch.broadcasts.push_back(posted);
        state.job_needed()
    }

    /// Everything waiting, for the job that was posted: a broadcast posted from now on
    /// posts another job.
    pub(super) fn take(&self) -> Batch {
        let mut state = self.state();
        state.job_posted = false;
        state.bytes = 0;
        std::mem::take(&mut state.batch)
    }

    /// The job could not be posted (the reactor has stopped): nothing will take what
    /// waits, so it goes, and the next broadcast tries again.
    pub(super) fn job_refused(&self) {
        drop(self.take());
    }
}

impl State {
    fn job_needed(&mut self) -> Posting {
        if std::mem::replace(&mut self.job_posted, true) {
            Posting::Done
        } else {
            Posting::SendJob
        }
    }
}

#[cfg(test)]
mod tests {
    //! The mailbox against a model: whole broadcasts in order, the bytes waiting within
    //! the bound, each policy's decision at it, and one job for each batch.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Post(usize),
        /// The job runs and takes the batch.
        Take,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3_000usize).prop_map(Op::Post),
            1 => Just(Op::Take),
        ]
    }

    fn policy() -> impl Strategy<Value = SlowConsumer> {
        prop_oneof![
            Just(SlowConsumer::Skip),
            Just(SlowConsumer::DropOldest),
            Just(SlowConsumer::Close)
        ]
    }

    /// What the documentation says, as plainly as it can be written.
    #[derive(Default)]
    struct Model {
        queue: VecDeque<(u64, usize)>,
        skipped: u64,
        dropped: u64,
        overflow: Option<(usize, usize)>,
        discarded: u64,
        job_posted: bool,
    }

    impl Model {
        fn bytes(&self) -> usize {
            self.queue.iter().map(|&(_, len)| len).sum()
        }

        fn post(&mut self, id: u64, len: usize, policy: SlowConsumer, max: usize) -> Posting {
            if self.overflow.is_some() {
                self.discarded += 1;
                return Posting::Done;
            }
            if self.bytes() + len > max && !self.queue.is_empty() {
                match policy {
                    SlowConsumer::Skip => {
                        self.skipped += 1;
                        return Posting::Done;
                    }
                    SlowConsumer::Close => {
                        self.overflow = Some((self.bytes() + len, max));
                        self.discarded += self.queue.len() as u64 + 1;
                        self.queue.clear();
                        return self.job();
                    }
                    SlowConsumer::DropOldest => {
                        while self.bytes() + len > max && self.queue.pop_front().is_some() {
                            self.dropped += 1;
                        }
                    }
                }
            }
            self.queue.push_back((id, len));
            self.job()
        }

        fn job(&mut self) -> Posting {
            if self.job_posted {
                Posting::Done
            } else {
                self.job_posted = true;
                Posting::SendJob
            }
        }
    }

    /// A payload that names its broadcast: its first 8 bytes (when it has them).
    fn payload(id: u64, len: usize) -> Bytes {
        let mut bytes = id.to_be_bytes().to_vec();
        bytes.resize(len, 0x5a);
        Bytes::from(bytes)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_mailbox_matches_its_model(
            ops in proptest::collection::vec(op(), 1..300),
            policy in policy(),
            max in 1..10_000usize,
        ) {
            let mailbox = Mailbox::default();
            let mut model = Model::default();
            for (id, op) in ops.into_iter().enumerate() {
                let id = id as u64;
                match op {
                    Op::Post(len) => {
                        let posted = Posted {
                            kind: MessageKind::Binary,
                            payload: payload(id, len),
                            except: Some(id),
                        };
                        prop_assert_eq!(mailbox.post(posted, policy, max), model.post(id, len, policy, max));
                    }
                    Op::Take => {
                        let batch = mailbox.take();
                        prop_assert_eq!(batch.broadcasts.len(), model.queue.len());
                        for (got, (id, len)) in batch.broadcasts.iter().zip(model.queue.drain(..)) {
                            prop_assert_eq!(&got.payload, &payload(id, len), "another broadcast");
                            prop_assert_eq!(got.except, Some(id));
                        }
                        prop_assert_eq!(batch.skipped, std::mem::take(&mut model.skipped));
                        prop_assert_eq!(batch.dropped, std::mem::take(&mut model.dropped));
                        prop_assert_eq!(batch.overflow, model.overflow.take());
                        prop_assert_eq!(batch.discarded, std::mem::take(&mut model.discarded));
                        model.job_posted = false;
                    }
                }
                let bytes = mailbox.state().bytes;
                prop_assert_eq!(bytes, model.bytes());
                // Within the bound, but for one broadcast longer than it, alone.
                prop_assert!(bytes <= max || model.queue.len() == 1);
            }
        }
    }
}
