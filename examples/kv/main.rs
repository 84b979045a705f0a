//! A Redis-protocol key-value server on getty-rs: `redis-cli` and `redis-benchmark` work
//! against it unmodified.
//!
//! ```text
//! cargo run --release --example kv                                   # any free loopback port, printed
//! cargo run --release --example kv -- --server 127.0.0.1:6380
//! cargo run --release --example kv -- --server 127.0.0.1:6380 --reactors 4
//! cargo run --release --example kv -- --unix /tmp/kv.sock            # then: redis-cli -s /tmp/kv.sock
//! redis-benchmark -p 6380 -t ping,set,get,incr,mset -n 100000 -P 16 -q
//! ```
//!
//! It speaks RESP2 ([`getty::codec::RespCodec`]): arrays of bulk strings and inline
//! commands, pipelined (replies leave in order, the replies to one read in one write). A
//! reply larger than the outbound bound (an `MGET` of many large values) leaves in steps as
//! the client reads it, reading paused meanwhile.
//! Commands: `PING`, `ECHO`, `GET`, `SET` (`EX`/`PX`/`NX`/`XX`/`KEEPTTL`/`GET`), `DEL`,
//! `EXISTS`, `INCR`/`DECR`/`INCRBY`/`DECRBY`, `MGET`/`MSET`, `EXPIRE` (`NX`/`XX`/`GT`/`LT`),
//! `TTL`/`PTTL`, `DBSIZE`, `FLUSHALL`, `CONFIG GET` (`save`, `appendonly`, `databases`:
//! what `redis-benchmark` asks), `QUIT`. Values are strings only, so there is no
//! `WRONGTYPE`. Errors use Redis's wording (`ERR unknown command 'foo', with args beginning
//! with: 'a' `, `ERR wrong number of arguments for 'get' command`, `ERR value is not an
//! integer or out of range`). A malformed command, or one over 64 MiB, ends that
//! connection only (from its header: a `$2147483647` bulk is refused before any of it is
//! read).
//!
//! **Expiry** is Redis's: lazy (a key past its deadline is deleted when next touched) plus
//! an active sweep every 100 ms, a reactor timer on the reactor that owns the store, which
//! samples 20 keys with a deadline at a time and goes on while more than a quarter of them
//! had expired, at most 16 rounds a tick. No thread sweeps.
//!
//! **`--reactors N`: N keyspaces, not one.** Each of the N reactor threads has its own
//! `SO_REUSEPORT` listener and its own store, shared only by the sessions of that reactor
//! (an `Rc<RefCell<_>>`: no lock anywhere). The kernel spreads connections over the
//! listeners by a hash of their addresses, so **a key written through one connection is
//! visible only through connections the kernel gave the same reactor**: with N > 1 this is
//! N independent caches, one chosen per connection, and NOT a single keyspace. That is
//! right for what it measures (per-core throughput under `redis-benchmark`, where each
//! client only reads back what it wrote, or a cache whose clients pin one connection) and
//! wrong for a shared database. The alternative, owning each key on one reactor by its
//! hash and forwarding commands for foreign keys through `SessionHandle`s, costs a boxed
//! job, a lock and a wake-up per forwarded command, and pipelined replies from several
//! owners would need reordering before they leave; it is not done here. With the default
//! `--reactors 1` there is one keyspace, as in Redis.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use getty::ReactorHandle;

mod commands; // each command: arguments, store, reply
mod server; // sessions, the expiry sweep, the listeners
mod store; // one reactor's keyspace and its expiry

/// How long the server gives its sessions to finish after Ctrl-C or SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

struct Args {
    server: SocketAddr,
    unix: Option<PathBuf>,
    reactors: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        server: "127.0.0.1:0".parse().expect("literal"),
        unix: None,
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
            "--unix" => args.unix = Some(PathBuf::from(value()?)),
            "--reactors" => {
                let n = value()?;
                args.reactors = match n.parse() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(format!("--reactors {n}: a positive number")),
                };
            }
            "-h" | "--help" => {
                return Err("usage: kv [--server ADDR | --unix PATH] [--reactors N]".into())
            }
            other => return Err(format!("unknown option {other} (try --help)")),
        }
    }
    Ok(args)
}

fn run(args: Args) -> io::Result<()> {
    if let Some(path) = &args.unix {
        let thread = server::serve_unix(path)?;
        println!(
            "kv server on the unix socket {}; Ctrl-C to stop",
            path.display()
        );
        serve_until_signal(&[thread.handle().clone()])?;
        return thread.join();
    }
    let (pool, addr) = server::serve_tcp(args.server, args.reactors)?;
    let shards = match args.reactors {
        1 => String::new(),
        n => format!(" on {n} reactors, one keyspace each (see the docs)"),
    };
    println!("kv server listening on {addr}{shards}; Ctrl-C to stop");
    serve_until_signal(&pool.handles())?;
    pool.join()
}

/// Arms the graceful shutdown on SIGINT/SIGTERM (a second one stops at once).
fn serve_until_signal(reactors: &[ReactorHandle]) -> io::Result<()> {
    for reactor in reactors {
        reactor.shutdown_on_signals(SHUTDOWN_GRACE)?;
    }
    Ok(())
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
            eprintln!("kv: {e}");
            ExitCode::FAILURE
        }
    }
}
