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
//! `error <why>` before it closes a session. Messages are at most 64 KiB;
//! permessage-deflate is on, so a browser compresses them.
//!
//! **Rooms** ([`rooms`]): a room is a library [`getty::SessionGroup`]. Every message is
//! encoded once and queued on each other member without a lock or a job, in the order it
//! was said.
//!
//! **`--reactors N`**: N reactor threads, each with its own `SO_REUSEPORT` listener. A
//! room spans them, with one order for all its members: its lines are broadcast from its
//! home reactor (a hash of its name), which reaches the members on other reactors through
//! one job per reactor and line; a line said elsewhere gets there through one job. The
//! default is one reactor, where nothing crosses a thread.
//!
//! **A slow member** (one whose browser reads less than its room says) is never allowed
//! an unbounded queue, and never slows the others: past its session's high watermark
//! (1 MiB) the room's messages wait for it, up to 4 MiB; past that it is disconnected,
//! with `error too slow ...` after what it was sent. Meanwhile its own messages wait too:
//! a session stops reading while its queue is over the watermark. See [`rooms`].

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
