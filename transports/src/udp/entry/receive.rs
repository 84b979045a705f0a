//! Receiving: the pooled receive buffers, reading a batch of datagrams, decoding each
//! and handing its messages to the handler; errors that name a peer.

use super::*;

impl<S, C, H> DatagramEntry<S, C, H>
where
    S: DatagramSocket,
    C: Decoder + 'static,
    H: DatagramHandler<C, S::Addr>,
{
    pub(super) fn new_slot(&self, cx: &mut Context<'_>) -> BytesMut {
        if cx.buffers().buffer_size() >= self.slot_size {
            cx.buffers().take()
        } else {
            BytesMut::with_capacity(self.slot_size)
        }
    }

    /// Sizes the receive buffers for the largest datagram accepted: `max_message_len`, or
    /// less when the socket cannot receive that much (UDP's 64 KiB). Slots are pooled
    /// buffers, one per datagram of a batch; what a datagram needs beyond its slot goes to
    /// an overflow region of its own (a unix datagram of up to the sender's send buffer).
    pub(super) fn size_receive_buffers(&mut self, cx: &mut Context<'_>) {
        // One byte more than the largest datagram accepted, to catch an oversized one.
        let largest = self
            .session
            .core
            .options
            .max_message_len
            .min(self.socket.max_recv_payload())
            .saturating_add(1);
        self.slot_size = largest.min(cx.buffers().buffer_size().max(1));
        self.overflow_per = largest - self.slot_size;
        self.active = self.config.batch.min(2);
    }

    /// Makes the overflow regions when first needed: one per slot of a batch, or fewer so
    /// that they reserve at most `OVERFLOW_SPACE` of address space (at least one: then a
    /// receive takes one datagram at a time). None are needed when a slot holds the largest
    /// datagram accepted; when the space cannot be had, a datagram longer than a slot is
    /// truncated and reported.
    pub(super) fn make_overflow(&mut self) {
        if self.overflow_per == 0 || self.overflow.is_some() {
            return;
        }
        let regions = (OVERFLOW_SPACE / self.overflow_per).clamp(1, self.config.batch);
        match batch::Overflow::new(regions, self.overflow_per) {
            Ok(o) => self.overflow = Some(o),
            Err(e) => {
                log::warn!(
                    "session {}: no room to receive datagrams over {} bytes ({e}): they will \
                     be truncated and dropped",
                    self.session.id(),
                    self.slot_size - 1
                );
                self.overflow_per = 0;
            }
        }
    }

    /// Notes the receive buffers held, for [`DatagramSession::receive_buffer_bytes`].
    pub(super) fn note_held(&mut self) {
        let slots: usize = self.slots.iter().map(BytesMut::capacity).sum();
        let overflow = self.overflow.as_ref().map_or(0, batch::Overflow::touched);
        self.session.recv_held = slots + overflow;
    }

    /// Gives the slots back to the pool and the overflow's pages back to the kernel: the
    /// socket was read dry, and an idle socket holds no receive buffers. The next readable
    /// event takes pooled buffers again, so datagrams arriving under load cost no
    /// allocation.
    pub(super) fn release_receive_buffers(&mut self, cx: &mut Context<'_>) {
        for slot in self.slots.drain(..) {
            Self::give_back(cx, slot);
        }
        for meta in &mut self.metas {
            meta.peer = None;
        }
        if let Some(o) = &mut self.overflow {
            o.release();
        }
        self.session.recv_held = 0;
    }

    /// Makes the first `n` slots ready for a receive: each with room for a whole datagram,
    /// reusing its allocation once the handler has dropped the messages in it.
    pub(super) fn prepare_slots(&mut self, cx: &mut Context<'_>, n: usize) {
        while self.slots.len() < n {
            let slot = self.new_slot(cx);
            self.slots.push(slot);
        }
        // The metadata stays when the slots go back to the pool (it is small): grow it to
        // the slots in use, never past them, or it would grow with every drained read.
        if self.metas.len() < n {
            self.metas.resize_with(n, RecvMeta::default);
        }
        debug_assert!(
            self.metas.len() <= self.config.batch,
            "receive metadata leaks"
        );
        for i in 0..n {
            let slot = &mut self.slots[i];
            debug_assert!(slot.is_empty());
            if slot.capacity() < self.slot_size && !slot.try_reclaim(self.slot_size) {
                // Messages handed out still use this buffer: they keep it alive.
                self.slots[i] = self.new_slot(cx);
            }
        }
        self.note_held();
    }

    pub(super) fn on_readable(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let mut budget = self.session.core.options.read_budget;
        let want_addr = self.session.connected_peer().is_none();
        let mut this_wake = 0;
        // Datagrams handed to the handler since the replies last left: never a batch, so
        // that the queue holds the replies to one batch at most, as when every receive is
        // answered at once (see `replies_should_go`).
        let mut unanswered = 0;
        let mut looked_again = false;
        while self.phase == Phase::Open && !self.session.is_closing() {
            self.lend_write_buffer(cx);
            let n = self.active.min(self.config.batch - unanswered);
            self.prepare_slots(cx, n);
            self.make_overflow();
            let received = batch::recv(
                &self.socket,
                &mut self.slots[..n],
                &mut self.metas[..n],
                self.slot_size,
                self.overflow.as_mut(),
                want_addr,
                self.config.mmsg,
            );
            self.note_held();
            match received {
                Ok(r) => {
                    if r.count > 0 {
                        self.session.stats.last_read = cx.now();
                    }
                    let (bytes, messages) =
                        (self.session.stats.bytes_in, self.session.stats.messages_in);
                    for i in 0..r.count {
                        budget = budget.saturating_sub(self.metas[i].len.max(MIN_BUDGET_CHARGE));
                        if self.session.is_closing() {
                            // The handler closed mid-batch: no message after that.
                            self.slots[i].clear();
                            continue;
                        }
                        self.deliver(i);
                    }
                    let metrics = cx.extension::<Metrics>();
                    metrics.bytes_in += self.session.stats.bytes_in - bytes;
                    metrics.messages_in += self.session.stats.messages_in - messages;
                    this_wake += r.count;
                    unanswered += r.count;
                    self.size_next_receive(n, r.count, r.drained, this_wake);
                    let last = r.drained || budget == 0;
                    // Before an error that may end the session, what was read is answered.
                    if r.error.is_some() || (!last && self.replies_should_go(unanswered)) {
                        self.flush(cx);
                        unanswered = 0;
                    }
                    if let Some(e) = r.error {
                        self.read_error(e)?;
                    }
                    if r.drained {
                        if looked_again || budget == 0 || self.session.out.fifo_is_empty() {
                            break;
                        }
                        // A peer that answers at once sends its next datagrams while the
                        // replies leave: send them now and look once more before sleeping,
                        // which costs one receive and may save a wake-up.
                        self.flush(cx);
                        unanswered = 0;
                        looked_again = true;
                        continue;
                    }
                    if budget == 0 {
                        // More to read on the next turn: the buffers stay.
                        cx.reschedule(Ready::READABLE);
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => self.read_error(e)?,
            }
        }
        // Read dry (or no longer reading): an idle socket holds no receive buffers.
        self.release_receive_buffers(cx);
        Ok(())
    }

    /// Sizes the next receive after one that offered `n` slots and filled `count`, with
    /// `this_wake` datagrams read since the wake-up. Every slot offered is a pooled buffer
    /// taken and given back, and a receive that comes back full costs another one: a full
    /// receive offers the whole batch next, and a wake-up read dry offers twice what it
    /// read (at least 2) the next time.
    fn size_next_receive(&mut self, n: usize, count: usize, drained: bool, this_wake: usize) {
        let batch = self.config.batch;
        if count == n && n < batch {
            self.active = batch;
        } else if drained {
            self.active = (2 * this_wake).max(2).min(batch);
        }
    }

    /// Whether the replies to the `unanswered` datagrams just read leave now, within the read
    /// loop, rather than with those of the next receive (the last receive's leave with the
    /// settle that follows the loop): when they fill a `sendmmsg`, or answer a whole batch.
    ///
    /// The second is a bound, not a speed-up: each receive offers at most the slots left to
    /// a batch, so the queue never holds the replies to more than one batch of datagrams,
    /// just as when every receive is answered at once. A handler whose replies to a full
    /// batch fit under `max_outbound` and the high watermark never sees `QueueFull` or an
    /// unwritable session for replies the entry held back (holding the replies to one batch
    /// while the next was read refused replies past a small `max_outbound`, unheard by a
    /// handler that ignored the write's result).
    fn replies_should_go(&self, unanswered: usize) -> bool {
        unanswered >= self.config.batch || self.session.out.in_order() >= self.per_call()
    }

    /// Decodes datagram `i` as exactly one message and hands it to the handler, or drops it.
    pub(super) fn deliver(&mut self, i: usize) {
        let len = self.metas[i].len;
        let truncated = self.metas[i].truncated;
        let overflow = std::mem::take(&mut self.metas[i].overflow);
        let peer = match self.metas[i].peer.take() {
            Some(peer) => peer,
            None => match self.session.connected_peer() {
                Some(peer) => peer.clone(),
                None => {
                    self.session.stats.datagrams_in += 1;
                    self.session.stats.dropped_in += 1;
                    log::debug!("dropped a datagram from an address of another family");
                    self.slots[i].clear();
                    return;
                }
            },
        };
        let stats = &mut self.session.stats;
        stats.datagrams_in += 1;
        stats.bytes_in += len as u64;
        let max = self.session.core.options.max_message_len;
        if len > max || truncated {
            // With MSG_TRUNC the kernel reports the datagram's real length. One within the
            // limit, yet longer than the buffers, was cut by the socket's own bound (or the
            // want of room for an overflow region): say so, with the real sizes.
            let kept = self.slots[i].len() + overflow;
            self.slots[i].clear();
            let error = if len > max {
                Error::MessageTooLong { len, max }
            } else {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "datagram of {len} bytes truncated to the {kept}-byte receive buffer \
                         (max message length {max})"
                    ),
                ))
            };
            self.drop_datagram(error, &peer);
            return;
        }
        let mut datagram = if overflow > 0 {
            // Longer than its slot: the whole datagram in a buffer of its own, so that the
            // message is a view of exactly its bytes, and the slot stays a pooled buffer.
            let regions = self
                .overflow
                .as_ref()
                .expect("a datagram overflowed into it");
            let mut whole = BytesMut::with_capacity(len);
            whole.extend_from_slice(&self.slots[i]);
            whole.extend_from_slice(regions.part(i, overflow));
            self.slots[i].clear();
            whole
        } else {
            std::mem::take(&mut self.slots[i])
        };
        self.decode_datagram(&mut datagram, len, peer);
        if overflow == 0 {
            datagram.clear();
            self.slots[i] = datagram;
        }
    }

    /// Decodes one whole datagram of `len` bytes as exactly one message and hands it to the
    /// handler, or drops it.
    pub(super) fn decode_datagram(&mut self, datagram: &mut BytesMut, len: usize, peer: S::Addr) {
        if let Some(probe) = &self.config.drop_probe {
            // An answer first, even if the probe is configured to the same bytes: an answer
            // is never answered, so two endpoints cannot bounce one between them.
            if datagram[..] == *PROBE_ANSWER {
                // An answer that came after its dial had opened on silence.
                self.session.stats.probes_dropped += 1;
                return;
            }
            if datagram[..] == probe[..] {
                self.session.stats.probes_dropped += 1;
                log::debug!("dropped a dial probe from {peer:?}");
                // Never more bytes out than came in, so a forged probe amplifies nothing;
                // never to a source nothing can be sent to (a forged port 0); a full queue
                // (or a closing session) leaves the client to its wait.
                let answerable = probe.len() >= PROBE_ANSWER.len() && S::can_send_to(&peer);
                if self.config.answer_probe && answerable {
                    let answer = Bytes::from_static(PROBE_ANSWER);
                    match self.session.queue_control(peer, answer) {
                        Ok(()) => self.session.stats.probes_answered += 1,
                        Err(e) => log::debug!("a dial probe went unanswered: {e}"),
                    }
                }
                return;
            }
        }
        let max = self.session.core.options.max_message_len;
        // Each datagram is a buffer of its own: nothing the codec remembers of an earlier
        // one (a line scanned without a newline) may apply to it.
        let codec = self.session.decoder();
        codec.reset();
        // The datagram is within the limit; a message it declares longer (a length header)
        // is refused against the same limit, as on a stream.
        let error = match codec.decode_limited(datagram, max) {
            Ok(Decoded::Frame(message)) if datagram.is_empty() => {
                self.session.stats.messages_in += 1;
                self.handler.on_message(&mut self.session, message, peer);
                return;
            }
            Ok(Decoded::Frame(_)) if datagram.len() == len => Error::CodecConsumedNothing,
            Ok(Decoded::Frame(_)) => Error::Codec(CodecError::malformed(format!(
                "{} bytes after the message in one datagram",
                datagram.len()
            ))),
            Ok(Decoded::NeedMore(_)) if len == 0 => {
                Error::Codec(CodecError::malformed("empty datagram"))
            }
            Ok(Decoded::NeedMore(_)) => Error::Codec(CodecError::malformed(format!(
                "datagram of {len} bytes ends inside a message"
            ))),
            Err(e) => match e.limit_exceeded() {
                Some((len, max)) => Error::MessageTooLong { len, max },
                None => Error::Codec(e),
            },
        };
        self.drop_datagram(error, &peer);
    }

    /// Counts and reports a datagram dropped on the way in (its buffer already cleared).
    pub(super) fn drop_datagram(&mut self, error: Error, peer: &S::Addr) {
        self.session.stats.dropped_in += 1;
        log::debug!(
            "session {}: dropped a datagram from {peer:?}: {error}",
            self.session.id()
        );
        self.handler.on_error(&mut self.session, &error);
    }

    /// An error from a receive: ICMP errors are reported and reading goes on; anything
    /// else ends the session.
    pub(super) fn read_error(&mut self, e: std::io::Error) -> Result<(), Error> {
        if is_peer_error(&e) {
            self.peer_error(e);
            Ok(())
        } else {
            Err(Error::Io(e))
        }
    }

    /// An ICMP error about the peer: count it, report it, and close when so configured.
    pub(super) fn peer_error(&mut self, e: std::io::Error) {
        self.session.stats.peer_errors += 1;
        log::debug!("session {}: peer error: {e}", self.session.id());
        if self.config.close_on_peer_error && self.session.is_connected() {
            self.session.close();
        }
        self.handler.on_error(&mut self.session, &Error::Io(e));
    }
}
