//! A WebSocket chat on getty-rs, with rooms; its client is one static page,
//! `examples/chat/index.html`, that a browser opens from disk.
//!
//! ```text
//! cargo run --release --example chat                                # any free loopback port, printed
//! cargo run --release --example chat -- --server 127.0.0.1:9000 --reactors 2
//! chromium 'examples/chat/index.html?ws=ws://127.0.0.1:9000/'        # then pick a room and a name
//! ```
//!
//! The protocol is text, one line per WebSocket message (see [`protocol`]): a session's
//! first message is `join <room> <name>`, every later one is said to the room; the server
//! sends `members ...`, `joined <name>`, `left <name>`, `msg <name> <text>`, and
//! `dropped <n>` to a slow member. Messages are at most 64 KiB; permessage-deflate is on,
//! so a browser compresses them.
//!
//! **Rooms** ([`rooms`]): every message is posted to each other member of its room through
//! that member's reactor, in order per sender (each sender's messages go through one FIFO
//! to the room's home reactor, and from there through one FIFO per member).
//!
//! **`--reactors N`**: N reactor threads, each with its own `SO_REUSEPORT` listener. A room
//! is sharded, not split: it lives on one reactor, chosen by a hash of its name, and its
//! members anywhere; the members on other reactors reach it through a reactor handle (one
//! posted job per request). The default is one reactor, where nothing crosses a thread.
//!
//! **A slow member** (one whose browser reads less than its room says) is never allowed
//! an unbounded queue, and never slows the others: past its session's high watermark
//! (1 MiB) its messages wait in a backlog of at most 4 MiB, and past that its *oldest*
//! waiting messages are dropped and it is told `dropped <n>` in their place. Past the
//! session's hard bound (16 MiB, reachable only by senders flooding within one reactor
//! turn) it is disconnected. Meanwhile its own messages wait too: a session stops reading
//! while its queue is over the watermark. See [`rooms`] for the accounting.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

mod protocol; // the lines the clients and the server exchange
mod rooms; // who is in which room, and the fan-out: the seam with the session API
mod server; // the sessions and the listeners

/// How long the server gives its sessions to finish after Ctrl-C or SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

struct Args {
    server: SocketAddr,
    reactors: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        server: "127.0.0.1:0".parse().expect("literal"),
        reactors: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => {
                let addr = value()?;
                args.server = addr.parse().map_err(|e| format!("--server {addr}: {e}"))?;
            }
            "--reactors" => {
                let n = value()?;
                args.reactors = match n.parse() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(format!("--reactors {n}: a positive number")),
                };
            }
            "-h" | "--help" => return Err("usage: chat [--server ADDR] [--reactors N]".into()),
            other => return Err(format!("unknown option {other} (try --help)")),
        }
    }
    Ok(args)
}

fn run(args: Args) -> std::io::Result<()> {
    let (pool, addr) = server::serve(args.server, args.reactors)?;
    // The browser test reads this line for the address: keep its shape.
    println!(
        "chat server listening on ws://{addr}/ ({} reactors); open examples/chat/index.html?ws=ws://{addr}/ ; Ctrl-C to stop",
        args.reactors
    );
    for reactor in pool.handles() {
        reactor.shutdown_on_signals(SHUTDOWN_GRACE)?;
    }
    pool.join()
}

fn main() -> ExitCode {
    env_logger::init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: {e}");
            ExitCode::FAILURE
        }
    }
}
