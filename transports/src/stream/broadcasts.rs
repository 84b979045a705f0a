//! Group broadcasts: what the session's groups left in its inboxes (one per group) becomes
//! output, while the session is writable (see `group.rs`).

use super::*;

impl<S, T, C, H> StreamEntry<S, T, C, H>
where
    S: Stream,
    T: Transport<Addr = S::Addr>,
    C: Decoder + 'static,
    H: Handler<C, T>,
{
    /// `settle_io`, with the group broadcasts that wait for the session taken first, and
    /// another turn asked for those still waiting once the flush made room.
    pub(super) fn settle_broadcasts(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let inboxes = self.inbox_count();
        for i in 0..inboxes {
            let inbox = self.inbox_at(i);
            self.take_broadcasts(&inbox, cx)?;
        }
        self.settle_io(cx)?;
        for i in 0..inboxes {
            self.rewake_for_broadcasts(&self.inbox_at(i));
        }
        Ok(())
    }

    /// Queues the broadcasts waiting in `inbox` until the session stops being writable,
    /// and acts on what its group asked of it (close once they are out, or fail as a slow
    /// consumer).
    fn take_broadcasts(&mut self, inbox: &Inbox, cx: &mut Context<'_>) -> Result<(), Error> {
        inbox.note_running();
        if let Some((pending, max)) = inbox.take_overflow() {
            return Err(Error::SlowConsumer { pending, max });
        }
        if self.phase == Phase::Open && !inbox.is_empty() {
            self.lend_write_buffer(cx);
        }
        while self.phase == Phase::Open && self.session.core.is_writable() {
            let Some(pending) = inbox.pop() else {
                break;
            };
            match self.session.write_shared(&pending) {
                Ok(()) => {}
                Err(Error::QueueFull { .. }) if self.session.queued_bytes() > 0 => {
                    // It fits once the queue drains.
                    inbox.push_front(pending);
                    break;
                }
                Err(Error::QueueFull { max, .. }) => {
                    // It never fits this session: its own write of it would have failed
                    // too. The session misses it and carries on.
                    log::warn!(
                        "session {}: a {}-byte broadcast is over its max_outbound ({max}); \
                         skipped",
                        self.session.id(),
                        pending.payload.len()
                    );
                }
                Err(Error::Closed) => break,
                Err(e) => return Err(e),
            }
        }
        // Closed by its group (`close_all`) once what the group sent before is queued.
        if inbox.close_requested() && inbox.is_empty() {
            self.session.close();
        }
        Ok(())
    }

    /// After a flush: broadcasts still wait, and the socket took everything queued, so no
    /// socket event will come to take the rest: the session wakes itself, after whatever
    /// else this turn has to run. While bytes stay queued the socket is full (a flush
    /// writes until it is), and its writable edge brings the session back: waking it now
    /// would only spin.
    fn rewake_for_broadcasts(&self, inbox: &Inbox) {
        let drained = self.session.queued_bytes() == 0;
        if drained && !inbox.is_empty() && !self.session.is_closing() {
            inbox.rewake();
        }
    }

    /// The session has ended: its groups forget it, and what waits for it is dropped.
    pub(super) fn leave_groups(&self) {
        for i in 0..self.inbox_count() {
            self.inbox_at(i).end();
        }
    }

    fn inbox_count(&self) -> usize {
        self.session.extras.as_ref().map_or(0, |e| e.inboxes.len())
    }

    fn inbox_at(&self, i: usize) -> Rc<Inbox> {
        let extras = self
            .session
            .extras
            .as_ref()
            .expect("counted in inbox_count");
        extras.inboxes[i].clone()
    }
}
