//! Group broadcasts: what the session's groups left in its inbox becomes output, while the
//! session is writable (see `group.rs`).

use super::*;

impl<S, T, C, H> StreamEntry<S, T, C, H>
where
    S: Stream,
    T: Transport<Addr = S::Addr>,
    C: Decoder + 'static,
    H: Handler<C, T>,
{
    /// Queues the broadcasts waiting in the inbox until the session stops being writable,
    /// and acts on what a group asked of it (close, or fail as a slow consumer).
    fn take_broadcasts(&mut self, inbox: &Inbox, cx: &mut Context<'_>) -> Result<(), Error> {
        inbox.note_running();
        if let Some((pending, max)) = inbox.take_overflow() {
            return Err(Error::SlowConsumer { pending, max });
        }
        if inbox.close_requested() {
            self.session.close();
        }
        if self.phase != Phase::Open || inbox.is_empty() {
            return Ok(());
        }
        self.lend_write_buffer(cx);
        while self.session.core.is_writable() {
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
                Err(Error::Closed) => break,
                Err(e) => return Err(e),
            }
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
        if let Some(inbox) = self.inbox() {
            inbox.end();
        }
    }

    /// `settle_io`, with the group broadcasts that wait for the session taken first, and
    /// another turn asked for those still waiting once the flush made room.
    pub(super) fn settle_broadcasts(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let Some(inbox) = self.inbox() else {
            return self.settle_io(cx);
        };
        self.take_broadcasts(&inbox, cx)?;
        self.settle_io(cx)?;
        self.rewake_for_broadcasts(&inbox);
        Ok(())
    }

    /// The session's inbox, once it joined a group.
    fn inbox(&self) -> Option<Rc<Inbox>> {
        self.session.extras.as_ref()?.inbox.clone()
    }
}
