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
    pub(super) fn take_broadcasts(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let Some(inbox) = self.inbox() else {
            return Ok(());
        };
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

    /// After a flush: broadcasts still wait while the session is writable again, and no
    /// socket event may come to take them (the socket has room), so the session wakes
    /// itself, after whatever else this turn has to run.
    pub(super) fn rewake_for_broadcasts(&self) {
        if let Some(inbox) = self.inbox() {
            if !inbox.is_empty() && self.session.core.is_writable() && !self.session.is_closing() {
                inbox.rewake();
            }
        }
    }

    /// The session has ended: its groups forget it, and what waits for it is dropped.
    pub(super) fn leave_groups(&self) {
        if let Some(inbox) = self.inbox() {
            inbox.end();
        }
    }

    fn inbox(&self) -> Option<Rc<Inbox>> {
        self.session.extras.as_ref()?.inbox.clone()
    }
}
