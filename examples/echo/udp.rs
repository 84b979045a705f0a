//! UDP: the same echo over datagrams, one message per datagram.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use getty::udp::{DatagramHandler, DatagramSession, UdpClient, UdpEndpoint, UdpOptions};

/// The largest message the client sends: a 4-byte length prefix and the payload fit
/// one IPv4 UDP datagram.
pub const MAX_PAYLOAD: usize = 65_507 - 4;

/// A client resends what is in flight after this long without an echo.
const RESEND_AFTER: Duration = Duration::from_secs(1);

/// Big enough that a burst of a window of large datagrams per client fits.
fn udp_options() -> UdpOptions {
    UdpOptions::default()
        .recv_buffer_size(Some(4 << 20))
        .send_buffer_size(Some(4 << 20))
}

/// The server: every datagram goes back to its sender.
struct Echo;

impl<C> DatagramHandler<C> for Echo
where
    C: Decoder<Item = Bytes> + Encoder<Bytes> + 'static,
{
    fn on_message(&mut self, session: &mut DatagramSession<C>, message: Bytes, peer: SocketAddr) {
        if let Err(e) = session.write_to(peer, message) {
            log::warn!("echo to {peer} failed: {e}");
        }
    }

    fn on_error(&mut self, _: &mut DatagramSession<C>, error: &getty::Error) {
        log::info!("udp echo: {error}");
    }
}

/// Starts the echo endpoint on its own reactor; returns it with the address it is bound to.
fn start_server(addr: SocketAddr, codec: CodecKind) -> io::Result<(Server, SocketAddr)> {
    let (addr_tx, addr_rx) = mpsc::channel();
    let thread = Reactor::start_thread("udp-echo-server", move |reactor| {
        let builder = UdpEndpoint::builder().udp_options(udp_options());
        with_codec!(codec, |codec| {
            let server = builder.bind(addr, move |_| Ok((codec(), Echo)))?;
            let _ = addr_tx.send(server.local_addr());
            reactor.spawn(server)
        });
        Ok(())
    })?;
    let bound = addr_rx
        .recv()
        .map_err(|_| io::Error::other("server did not report its address"))?;
    Ok((Server::on_thread(thread), bound))
}

/// One client socket: a window of messages in flight, every echo checked.
struct UdpSender {
    plan: Rc<Plan>,
    totals: Rc<RefCell<Totals>>,
    resent: Arc<AtomicU64>,
    done_tx: mpsc::Sender<Report>,
    rng: fastrand::Rng,
    /// `None` for a connected socket.
    to: Option<SocketAddr>,
    in_flight: VecDeque<(Instant, Bytes)>,
    /// The last echoes matched, to tell a late copy of a resent datagram from garbage.
    recent: VecDeque<Bytes>,
    sent: usize,
    received: usize,
    last_progress: Instant,
    finished: bool,
}

impl UdpSender {
    fn send<C: Encoder<Bytes>>(&self, session: &mut DatagramSession<C>, payload: Bytes) {
        let result = match self.to {
            Some(to) => session.write_to(to, payload),
            None => session.write(payload),
        };
        if let Err(e) = result {
            log::error!("write failed: {e}");
        }
    }

    fn send_next<C: Encoder<Bytes>>(&mut self, session: &mut DatagramSession<C>) {
        while self.sent < self.plan.messages && self.in_flight.len() < self.plan.window {
            let payload = self.plan.payload(&mut self.rng);
            self.send(session, payload.clone());
            self.in_flight.push_back((Instant::now(), payload));
            self.sent += 1;
        }
    }

    /// Reports this socket's part once; `main` then stops the client's reactor.
    fn finish(&mut self, failed: bool) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let connections = self.plan.connections;
        self.totals
            .borrow_mut()
            .session_done(failed, connections, &self.done_tx);
    }
}

impl<C> DatagramHandler<C> for UdpSender
where
    C: Decoder<Item = Bytes> + Encoder<Bytes> + 'static,
{
    fn on_open(&mut self, session: &mut DatagramSession<C>) -> io::Result<()> {
        let mut totals = self.totals.borrow_mut();
        if totals.messages == 0 {
            // Time the echo, not the dial verification (the probe wait) before it.
            totals.started = Instant::now();
        }
        drop(totals);
        session.set_cron_period(Some(Duration::from_millis(100)));
        self.last_progress = Instant::now();
        self.send_next(session);
        Ok(())
    }

    fn on_message(&mut self, session: &mut DatagramSession<C>, echo: Bytes, _: SocketAddr) {
        if self.finished {
            return;
        }
        let Some(pos) = self.in_flight.iter().position(|(_, p)| *p == echo) else {
            if !self.recent.contains(&echo) {
                log::error!("an echo does not match anything sent");
                self.totals.borrow_mut().mismatches += 1;
            }
            return; // else a late copy of a datagram that was sent again
        };
        // Datagrams stay in order on one path: those before the echoed one were lost.
        for _ in 0..pos {
            let lost = self.in_flight.pop_front().expect("counted");
            self.resent.fetch_add(1, Ordering::Relaxed);
            self.send(session, lost.1.clone());
            self.in_flight.push_back(lost);
        }
        let (sent_at, payload) = self.in_flight.pop_front().expect("found");
        self.recent.push_back(payload);
        if self.recent.len() > 64 {
            self.recent.pop_front();
        }
        let mut totals = self.totals.borrow_mut();
        totals
            .histogram
            .saturating_record((sent_at.elapsed().as_micros() as u64).max(1));
        totals.messages += 1;
        totals.bytes += echo.len() as u64;
        drop(totals);
        self.received += 1;
        self.last_progress = Instant::now();
        if self.received == self.plan.messages {
            self.finish(false);
        } else {
            self.send_next(session);
        }
    }

    fn on_cron(&mut self, session: &mut DatagramSession<C>) {
        if self.finished || self.in_flight.is_empty() {
            return;
        }
        if self.last_progress.elapsed() >= RESEND_AFTER {
            for (_, payload) in self.in_flight.clone() {
                self.resent.fetch_add(1, Ordering::Relaxed);
                self.send(session, payload);
            }
            self.last_progress = Instant::now();
        }
    }

    fn on_error(&mut self, _: &mut DatagramSession<C>, error: &getty::Error) {
        log::warn!("udp client: {error}");
    }

    fn on_close(&mut self, _: &mut DatagramSession<C>) {
        let failed = self.received < self.plan.messages;
        self.finish(failed);
    }
}

/// Runs the client on its own reactor and waits for its report.
fn run_client(addr: SocketAddr, plan: Plan, mode: UdpMode) -> io::Result<Report> {
    let (done_tx, done_rx) = mpsc::channel();
    let resent = Arc::new(AtomicU64::new(0));
    let resent_in = resent.clone();
    let connections = plan.connections;
    let codec = plan.client_codec();
    let client = Reactor::start_thread("udp-echo-client", move |reactor| {
        let plan = Rc::new(plan);
        let totals = Rc::new(RefCell::new(Totals::new()));
        let mut seed = 0u64;
        let to = (mode == UdpMode::Unconnected).then_some(addr);
        let mut make_sender = move || {
            seed += 1;
            UdpSender {
                plan: plan.clone(),
                totals: totals.clone(),
                resent: resent_in.clone(),
                done_tx: done_tx.clone(),
                rng: fastrand::Rng::with_seed(seed),
                to,
                in_flight: VecDeque::new(),
                recent: VecDeque::new(),
                sent: 0,
                received: 0,
                last_progress: Instant::now(),
                finished: false,
            }
        };
        match mode {
            UdpMode::Connected => {
                let builder = UdpClient::builder()
                    .connection_number(connections)
                    .max_consecutive_failures(Some(MAX_DIAL_FAILURES))
                    // Loopback answers a probe to a closed port in microseconds.
                    .probe_wait(Duration::from_millis(100))
                    .udp_options(udp_options());
                with_codec!(codec, |codec| reactor
                    .spawn(builder.build(addr, move |_| Ok((codec(), make_sender())))?));
            }
            UdpMode::Unconnected => {
                for _ in 0..connections {
                    let sender = make_sender();
                    let builder = UdpEndpoint::builder().udp_options(udp_options());
                    with_codec!(codec, |codec| reactor
                        .spawn(builder.bind("127.0.0.1:0", move |_| Ok((codec(), sender)))?));
                }
            }
        }
        Ok(())
    })?;
    let report = wait_for_report(&done_rx, client.handle());
    let resent = resent.load(Ordering::Relaxed);
    client.handle().shutdown();
    client.join()?;
    let mut report = report?;
    report.resent = resent;
    Ok(report)
}

pub fn run(args: Args) -> io::Result<bool> {
    let plan = Plan::new(&args);
    Side::of_socket(&args).run(
        |at| start_server(at, args.codec),
        |at| run_client(*at, plan, args.udp_mode),
        |at| format!("udp echo endpoint ({:?} codec) on {at}; Ctrl-C to stop", args.codec),
        |at| {
            format!(
                "udp echo endpoint on {at} ({:?} codec); {} {:?} clients x {} messages, {} in flight each, 1..={} bytes",
                args.codec, args.connections, args.udp_mode, args.messages, args.window, args.max_size
            )
        },
    )
}
