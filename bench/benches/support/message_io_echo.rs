//! message-io, a peer of getty-rs (an event-driven network library on mio), as a TCP echo:
//! what its raw TCP transport delivers (each read, up to 64 KiB) goes back with one `send`.
//!
//! It uses message-io's network layer directly (`network::split`, and
//! `process_poll_event` in a loop on one thread), not its `node` layer, which would add a
//! thread for signals: all of its work happens on the thread whose CPU the bench reads.
//! The echo does no framing: message-io's framed transport uses a varint prefix, which the
//! bench's 4-byte length-prefixed client does not speak, and echoing the bytes as they come
//! returns the frames whole. message-io's defaults are kept: it does not set TCP_NODELAY,
//! and its `send` retries a full socket until it takes everything (it spins).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use message_io::network::{self, NetEvent, Transport};

use crate::echo_bench::{current_thread_ids, AcceptThread, ThreadIds};

/// Connections accepted by the message-io echo (every instance, since the start).
pub static MESSAGE_IO_OPENED: AtomicUsize = AtomicUsize::new(0);

/// How long one poll waits before the loop looks at its stop flag again.
const POLL_WAIT: Duration = Duration::from_millis(50);

/// Starts the message-io echo on a thread named `name`, listening on an ephemeral loopback
/// port. Returns its accept thread (stop it like the others) and the thread's ids.
pub fn start_message_io_thread(name: &str) -> io::Result<(AcceptThread, ThreadIds)> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<(SocketAddr, ThreadIds)>>();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let (controller, mut processor) = network::split();
            let listening = controller.listen(Transport::Tcp, "127.0.0.1:0");
            let _ = ready_tx.send(listening.map(|(_, addr)| (addr, current_thread_ids())));
            while !stop_flag.load(Ordering::Acquire) {
                processor.process_poll_event(Some(POLL_WAIT), |event| match event {
                    NetEvent::Accepted(..) => {
                        MESSAGE_IO_OPENED.fetch_add(1, Ordering::Relaxed);
                    }
                    NetEvent::Message(endpoint, data) => {
                        controller.send(endpoint, data);
                    }
                    NetEvent::Connected(..) | NetEvent::Disconnected(_) => {}
                });
            }
            Ok(())
        })?;
    let (addr, ids) = ready_rx
        .recv()
        .map_err(|_| io::Error::other(format!("the {name} thread is gone")))??;
    Ok((AcceptThread { addr, stop, thread }, ids))
}
