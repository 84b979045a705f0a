//! Sending: flushing the datagram queue in batches, reconnecting a connected socket whose
//! peer went away, retrying parked destinations, and watching for writability.

use super::*;

impl<S, C, H> DatagramEntry<S, C, H>
where
    S: DatagramSocket,
    C: Decoder + 'static,
    H: DatagramHandler<C, S::Addr>,
{
    /// Sends queued datagrams until the queue is empty or the socket is full. Parked
    /// destinations that are due are retried first (their datagrams are older than any
    /// queued for them since), then the queue in order. Returns true when datagrams are
    /// left that could still go now: the handler wrote them in an `on_error` for a drop
    /// reported after the send loop, and nothing (no readiness, no timer) would wake the
    /// session for them.
    pub(super) fn flush(&mut self, cx: &mut Context<'_>) -> bool {
        let per_call = self.per_call();
        // After the handler's callbacks: a stall counts from now.
        let now = cx.read_clock();
        let mut progressed = false;
        let mut blocked = false;
        let mut reconnected = false;
        let bytes_before = self.session.stats.bytes_out;
        let mut link = SocketLink {
            socket: &self.socket,
            mmsg: self.config.mmsg,
            segmentation: &mut self.segmentation,
            send_buffer: None,
        };
        if self.session.core.close_request != Some(CloseRequest::Abort) {
            let stall = self.session.core.options.write_stall_timeout;
            let (datagrams, bytes) = self
                .session
                .out
                .retry_parked(now, stall, per_call, &mut link);
            self.session.stats.datagrams_out += datagrams as u64;
            self.session.stats.bytes_out += bytes as u64;
            progressed |= datagrams > 0;
        }
        while self.session.core.close_request != Some(CloseRequest::Abort) {
            let step = self.session.out.send_step(now, per_call, &mut link);
            match step {
                Step::Empty => break,
                Step::Blocked => {
                    blocked = true;
                    break;
                }
                // That destination waits on its own, or was dropped (reported below, once
                // for all its datagrams of this flush); the others go on.
                Step::Parked | Step::Dropped => {}
                Step::Sent { datagrams, bytes } => {
                    self.session.stats.datagrams_out += datagrams as u64;
                    self.session.stats.bytes_out += bytes as u64;
                    progressed |= datagrams > 0;
                    if datagrams > 0 {
                        self.gone = None;
                        self.gone_reported = false;
                    }
                }
                Step::Failed {
                    error,
                    dropped: None,
                } if self.reconnects() && is_gone(&error) => {
                    // The peer is gone (it closed; perhaps it restarted at the same
                    // address): reconnect, and send the datagram again. Reported once.
                    if !std::mem::replace(&mut self.gone_reported, true) {
                        self.session.stats.peer_errors += 1;
                        log::debug!("session {}: the peer is gone: {error}", self.session.id());
                        self.lend_write_buffer(cx);
                        self.handler.on_error(&mut self.session, &Error::Io(error));
                    }
                    match self.reconnect() {
                        // Connected again: a peer back but full is waited for as any peer
                        // is (its room signalled, a stall reported as one).
                        Ok(()) if !reconnected => {
                            reconnected = true;
                            self.gone = None;
                        }
                        // Once per flush: a peer that keeps vanishing waits for the timer.
                        Ok(()) => {
                            self.gone = Some(std::io::ErrorKind::NotConnected.into());
                            blocked = true;
                            break;
                        }
                        Err(e) => {
                            self.gone = Some(e);
                            blocked = true;
                            break;
                        }
                    }
                    link = SocketLink {
                        socket: &self.socket,
                        mmsg: self.config.mmsg,
                        segmentation: &mut self.segmentation,
                        send_buffer: None,
                    };
                }
                Step::Failed { error, dropped } => {
                    if let Some(len) = dropped {
                        self.session.stats.dropped_out += 1;
                        log::debug!(
                            "session {}: dropped an outgoing datagram of {len} bytes: {error}",
                            self.session.id()
                        );
                    }
                    self.lend_write_buffer(cx);
                    if is_peer_error(&error) {
                        self.peer_error(error);
                    } else if dropped.is_some() {
                        self.handler.on_error(&mut self.session, &Error::Io(error));
                    }
                    link = SocketLink {
                        socket: &self.socket,
                        mmsg: self.config.mmsg,
                        segmentation: &mut self.segmentation,
                        send_buffer: None,
                    };
                }
            }
        }
        if self.session.out.has_reports() {
            self.report_parked_drops(cx);
        }
        self.session.out.end_flush();
        if progressed {
            self.session.stats.last_write = now;
            cx.extension::<Metrics>().bytes_out += self.session.stats.bytes_out - bytes_before;
        }
        // Parking on (an unconnected unix socket): a full socket may be found by a retry of
        // a parked destination, with nothing queued in order.
        let socket_full = blocked || self.session.out.socket_full();
        if !socket_full && !self.session.out.fifo_is_empty() {
            return true;
        }
        if !socket_full {
            self.timer.note_unblocked();
            self.retry = None;
            self.watch_writable(cx, false);
        } else {
            let parking = self.config.unix && !self.session.is_connected();
            // An open unconnected unix endpoint never fails on a stall: receivers that do
            // not read hold its buffer, and it is free again when they read or close.
            // Until then its queue waits, bounded by `max_outbound` (and the watermarks say
            // so). Once closing, the stall bounds the wait, as for any session.
            let stalls = !parking || self.phase == Phase::Closing;
            if stalls {
                self.timer.note_blocked(now, progressed);
            }
            let connected = self.session.is_connected();
            if self.gone.is_none() && self.socket.signals_write_space(connected) {
                // Registering re-checks readiness, so space freed since the `EAGAIN` still
                // raises an event.
                self.watch_writable(cx, true);
            } else {
                if parking {
                    // The kernel says so once the buffer has drained to a quarter; the
                    // timer finds room that comes sooner (a fast reader's datagrams read).
                    self.watch_writable(cx, true);
                }
                self.schedule_retry(now, progressed);
            }
        }
        false
    }

    /// Datagrams one send may carry.
    pub(super) fn per_call(&self) -> usize {
        if self.config.mmsg && batch::HAS_MMSG {
            self.config.batch
        } else {
            1
        }
    }

    /// A connected unix socket: a peer found gone is reconnected to.
    pub(super) fn reconnects(&self) -> bool {
        self.config.unix && self.session.is_connected()
    }

    /// Connects the socket to its peer's address again (the kernel disconnected it when it
    /// found the peer gone). It succeeds once a socket is bound there again.
    pub(super) fn reconnect(&mut self) -> std::io::Result<()> {
        let peer = self
            .session
            .connected_peer()
            .expect("only a connected socket reconnects");
        let result = self.socket.sock().connect(&S::encode_addr(peer));
        match &result {
            Ok(()) => log::debug!("session {}: reconnected to {peer:?}", self.session.id()),
            Err(e) => log::debug!("session {}: cannot reconnect: {e}", self.session.id()),
        }
        result
    }

    /// Counts the datagrams dropped by destination (parked, or failed on an unconnected
    /// unix socket), and reports them, one `on_error` per destination and cause (drops past
    /// a bound may be held back for a later report, but are counted now).
    pub(super) fn report_parked_drops(&mut self, cx: &mut Context<'_>) {
        self.session.stats.dropped_out += self.session.out.take_dropped();
        for dropped in self.session.out.take_reports() {
            let error = Error::Io(dropped.into_error());
            log::debug!("session {}: {error}", self.session.id());
            self.lend_write_buffer(cx);
            self.handler.on_error(&mut self.session, &error);
        }
    }

    /// Retries a blocked send after a wait that doubles while nothing goes out (1 ms up to
    /// 100 ms): a slow reader costs at most ten wake-ups a second, never a busy loop. A
    /// flush before the retry is due (another event) leaves the armed retry as it is; the
    /// one that is due doubles the wait.
    pub(super) fn schedule_retry(&mut self, now: Instant, progressed: bool) {
        let wait = match self.retry {
            Some((at, last)) if !progressed => {
                if now < at {
                    return;
                }
                (last * 2).min(MAX_RETRY)
            }
            _ => FIRST_RETRY,
        };
        self.retry = Some((now + wait, wait));
    }

    /// How the queue treats a full receiver and errors about the peer, by socket.
    pub(super) fn set_send_policy(&mut self) {
        let (peer_errors, park_limit) = match (self.config.unix, self.session.is_connected()) {
            (false, _) => (PeerErrors::Retry, None),
            (true, true) => (PeerErrors::Keep, None),
            (true, false) => {
                let limits = ParkLimits {
                    per_peer: self.config.parked_limit.unwrap_or(PARKED_PER_PEER),
                    total: self.config.parked_total.unwrap_or(PARKED_TOTAL),
                };
                (PeerErrors::Drop, Some(limits))
            }
        };
        self.session.out.set_policy(peer_errors, park_limit);
    }

    /// Registers or drops interest in writable readiness.
    pub(super) fn watch_writable(&mut self, cx: &mut Context<'_>, on: bool) {
        if self.want_writable == on {
            return;
        }
        let interest = if on {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        match cx
            .registry()
            .reregister(&mut self.socket, cx.token(), interest)
        {
            Ok(()) => self.want_writable = on,
            Err(e) => log::warn!("session {}: cannot reregister: {e}", self.session.id()),
        }
    }
}
