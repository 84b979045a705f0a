//! Queueing a write: its destination, its bounds (charged per datagram), and the
//! watermark it may cross.

use super::*;

impl<C, A: Clone + PartialEq + std::fmt::Debug> DatagramSession<C, A> {
    /// `None` (the connected peer) on a connected socket, else `Some(peer)`.
    pub(super) fn destination(&self, peer: A) -> Result<Option<A>, Error> {
        match &self.peer {
            None if (self.destinations.is_unnamed)(&peer) => Err(Error::UnnamedPeer),
            None => Ok(Some(peer)),
            Some(connected) if *connected == peer => Ok(None),
            Some(connected) => Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the socket is connected to {connected:?}, not {peer:?}"),
            ))),
        }
    }

    pub(super) fn queue<T>(&mut self, peer: Option<A>, message: T) -> Result<(), Error>
    where
        C: Encoder<T>,
    {
        self.core.check_open()?;
        let before = self.out.tail.len();
        self.codec.encode(message, &mut self.out.tail)?;
        let len = self.out.tail.len() - before;
        if let Err(e) = self.check_room(peer.as_ref(), len) {
            self.out.tail.truncate(before);
            return Err(e);
        }
        self.out.push_encoded(peer, len);
        self.note_queued();
        Ok(())
    }

    pub(super) fn queue_bytes(&mut self, peer: Option<A>, bytes: Bytes) -> Result<(), Error> {
        self.core.check_open()?;
        self.check_room(peer.as_ref(), bytes.len())?;
        self.out.push_bytes(peer, bytes);
        self.note_queued();
        Ok(())
    }

    /// Queues a datagram of the framework's own (the answer to a dial probe) to `peer`:
    /// bounded like any write, but no message of the handler's.
    ///
    /// Only below the high watermark, so that an answer never moves the watermarks a
    /// handler sees nor counts as a refused write of its own (`refused_out`): a peer
    /// flooding probes then goes unanswered, not into the handler's figures.
    pub(crate) fn queue_control(&mut self, peer: A, bytes: Bytes) -> Result<(), Error> {
        let peer = self.destination(peer)?;
        self.core.check_open()?;
        let queued = self.out.len();
        let adding = bytes.len() + DATAGRAM_OVERHEAD;
        let options = self.core.options();
        if queued + adding >= options.high_watermark.min(options.max_outbound) {
            return Err(Error::QueueFull {
                queued,
                adding,
                max: options.high_watermark,
            });
        }
        self.out.push_bytes(peer, bytes);
        Ok(())
    }

    /// Whether a datagram of `len` bytes to `peer` (`None`: the connected peer) may be
    /// queued.
    pub(super) fn check_room(&mut self, peer: Option<&A>, len: usize) -> Result<(), Error> {
        let max = match peer {
            Some(peer) => (self.destinations.max_payload_to)(peer, self.max_payload),
            None => self.max_payload,
        };
        if len > max {
            return Err(Error::MessageTooLong { len, max });
        }
        // Every datagram costs its bookkeeping too: charged, so that empty ones are bounded.
        let queued = self.out.len();
        let adding = len + DATAGRAM_OVERHEAD;
        if queued + adding > self.core.options.max_outbound {
            self.stats.refused_out += 1;
            return Err(Error::QueueFull {
                queued,
                adding,
                max: self.core.options.max_outbound,
            });
        }
        Ok(())
    }

    pub(super) fn note_queued(&mut self) {
        self.stats.messages_out += 1;
        self.note_grown();
    }

    /// The queue grew: past the high watermark, the session is no longer writable.
    pub(super) fn note_grown(&mut self) {
        self.core.note_grown(self.out.len());
    }
}
