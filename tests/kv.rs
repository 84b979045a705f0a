//! The kv example (a Redis-protocol server) driven over real sockets: every command,
//! pipelined and not, over raw sockets; expiry, lazy and swept; a 2 GiB bulk header closing
//! only its session; a unix socket; several reactors; and Redis's own clients (`redis-cli`,
//! scripted and `--pipe`, and `redis-benchmark`) against it.
//!
//! The Redis tools are Debian's `redis-tools`. Without them those tests print why and pass,
//! unless `GETTY_REQUIRE_REDIS=1` (as `.ci/kv.sh` sets), which makes them fail instead.
//!
//! The server is the example's own code, compiled into this test (`#[path]`), started on
//! reactor threads of this process.
#![cfg(target_os = "linux")]

mod common;

#[allow(dead_code)] // the example's parts this test does not call
#[path = "../examples/kv/commands.rs"]
mod commands;
#[allow(dead_code)]
#[path = "../examples/kv/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "../examples/kv/store.rs"]
mod store;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use getty::codec::{Encoder, RespCodec, RespCommand};
use getty::reactor::ReactorThread;
use getty::ReactorPool;

const TEST_LIMIT: Duration = Duration::from_secs(180);

/// The kv server on `reactors` reactor threads of this process, on a free loopback port;
/// stopped when dropped.
struct Kv {
    pool: Option<ReactorPool>,
    addr: SocketAddr,
}

impl Kv {
    fn start(reactors: usize) -> Kv {
        let any_port = "127.0.0.1:0".parse().unwrap();
        let (pool, addr) = server::serve_tcp(any_port, reactors).expect("start the kv server");
        Kv {
            pool: Some(pool),
            addr,
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = connect(self.addr);
        stream.set_read_timeout(Some(STEP)).unwrap();
        stream
    }
}

impl Drop for Kv {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.shutdown();
            let _ = pool.join();
        }
    }
}

/// `args` as a client sends them: an array of bulk strings.
fn command(args: &[&str]) -> Vec<u8> {
    let command = RespCommand::from_args(args.iter().map(|a| a.as_bytes()));
    let mut wire = getty::codec::BytesMut::new();
    RespCodec::default().encode(&command, &mut wire).unwrap();
    wire.to_vec()
}

/// Reads exactly `expected.len()` bytes and checks they are `expected`.
fn expect_reply(stream: &mut impl Read, expected: &[u8]) {
    let mut got = vec![0; expected.len()];
    if let Err(e) = stream.read_exact(&mut got) {
        panic!(
            "reading {:?}: {e}; got so far {:?}",
            expected.escape_ascii().to_string(),
            got.escape_ascii().to_string()
        );
    }
    assert_eq!(
        got.escape_ascii().to_string(),
        expected.escape_ascii().to_string()
    );
}

/// Every command with the reply Redis 7 gives it, in order (state carries over).
fn conversation() -> Vec<(Vec<u8>, &'static [u8])> {
    let array = |args: &[&str]| command(args);
    let inline = |line: &str| format!("{line}\r\n").into_bytes();
    vec![
        (array(&["PING"]), b"+PONG\r\n"),
        (inline("PING"), b"+PONG\r\n"),
        (array(&["ping", "hi there"]), b"$8\r\nhi there\r\n"),
        (array(&["ECHO", "a\r\nb"]), b"$4\r\na\r\nb\r\n"),
        (array(&["SET", "k", "v"]), b"+OK\r\n"),
        (inline("GET k"), b"$1\r\nv\r\n"),
        (array(&["GET", "missing"]), b"$-1\r\n"),
        (array(&["SET", "k", "w", "XX"]), b"+OK\r\n"),
        (array(&["SET", "k", "x", "NX"]), b"$-1\r\n"),
        (array(&["SET", "n", "1", "NX"]), b"+OK\r\n"),
        (array(&["SET", "none", "1", "XX"]), b"$-1\r\n"),
        (array(&["SET", "k", "y", "GET"]), b"$1\r\nw\r\n"),
        (
            array(&["SET", "k", "v", "EX", "0"]),
            b"-ERR invalid expire time in 'set' command\r\n",
        ),
        (
            array(&["SET", "k", "v", "PX", "x"]),
            b"-ERR value is not an integer or out of range\r\n",
        ),
        (
            array(&["SET", "k", "v", "NX", "XX"]),
            b"-ERR syntax error\r\n",
        ),
        (array(&["EXISTS", "k", "n", "missing", "k"]), b":3\r\n"),
        (array(&["DEL", "k", "missing"]), b":1\r\n"),
        (array(&["EXISTS", "k"]), b":0\r\n"),
        (array(&["INCR", "counter"]), b":1\r\n"),
        (array(&["INCRBY", "counter", "41"]), b":42\r\n"),
        (array(&["DECR", "counter"]), b":41\r\n"),
        (array(&["DECRBY", "counter", "-9"]), b":50\r\n"),
        (array(&["GET", "counter"]), b"$2\r\n50\r\n"),
        (array(&["SET", "text", "abc"]), b"+OK\r\n"),
        (
            array(&["INCR", "text"]),
            b"-ERR value is not an integer or out of range\r\n",
        ),
        (
            array(&["INCRBY", "counter", "1.5"]),
            b"-ERR value is not an integer or out of range\r\n",
        ),
        (array(&["SET", "max", "9223372036854775807"]), b"+OK\r\n"),
        (
            array(&["INCR", "max"]),
            b"-ERR increment or decrement would overflow\r\n",
        ),
        (array(&["MSET", "a", "1", "b", "2"]), b"+OK\r\n"),
        (
            array(&["MGET", "a", "missing", "b"]),
            b"*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n",
        ),
        (
            array(&["MSET", "a", "1", "b"]),
            b"-ERR wrong number of arguments for 'mset' command\r\n",
        ),
        (array(&["EXPIRE", "a", "100"]), b":1\r\n"),
        (array(&["TTL", "a"]), b":100\r\n"),
        (array(&["EXPIRE", "a", "50", "GT"]), b":0\r\n"),
        (array(&["EXPIRE", "b", "50", "XX"]), b":0\r\n"),
        (array(&["TTL", "b"]), b":-1\r\n"),
        (array(&["TTL", "missing"]), b":-2\r\n"),
        (array(&["EXPIRE", "missing", "10"]), b":0\r\n"),
        (
            array(&["EXPIRE", "a", "x"]),
            b"-ERR value is not an integer or out of range\r\n",
        ),
        (array(&["SET", "a", "2", "KEEPTTL"]), b"+OK\r\n"),
        (array(&["TTL", "a"]), b":100\r\n"),
        (array(&["SET", "a", "3"]), b"+OK\r\n"),
        (array(&["TTL", "a"]), b":-1\r\n"),
        (array(&["EXPIRE", "a", "0"]), b":1\r\n"),
        (array(&["EXISTS", "a"]), b":0\r\n"),
        (array(&["DBSIZE"]), b":5\r\n"), // n, counter, text, max, b
        (
            array(&["CONFIG", "GET", "save"]),
            b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n",
        ),
        (
            array(&["config", "get", "appendonly"]),
            b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        ),
        (array(&["CONFIG", "GET", "nothing"]), b"*0\r\n"),
        (
            array(&["FOO", "a", "b"]),
            b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n",
        ),
        (
            inline("foo"),
            b"-ERR unknown command 'foo', with args beginning with: \r\n",
        ),
        (
            array(&["GET"]),
            b"-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            array(&["GET", "a", "b"]),
            b"-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            array(&["PING", "a", "b"]),
            b"-ERR wrong number of arguments for 'ping' command\r\n",
        ),
        (array(&["FLUSHALL"]), b"+OK\r\n"),
        (array(&["DBSIZE"]), b":0\r\n"),
    ]
}

#[test]
fn every_command_one_at_a_time() {
    watchdog(TEST_LIMIT, || {
        let kv = Kv::start(1);
        let mut stream = kv.connect();
        for (request, reply) in conversation() {
            stream.write_all(&request).unwrap();
            expect_reply(&mut stream, reply);
        }
        stream.write_all(&command(&["QUIT"])).unwrap();
        expect_reply(&mut stream, b"+OK\r\n");
        assert_eq!(stream.read(&mut [0; 16]).unwrap(), 0, "QUIT closes");
    });
}

#[test]
fn every_command_pipelined_in_one_write_and_byte_by_byte() {
    watchdog(TEST_LIMIT, || {
        let kv = Kv::start(1);
        let (requests, replies): (Vec<_>, Vec<_>) = conversation().into_iter().unzip();
        let (requests, replies) = (requests.concat(), replies.concat());
        let mut stream = kv.connect();
        stream.write_all(&requests).unwrap();
        expect_reply(&mut stream, &replies);
        // The same again one byte per write: every command split at every point.
        let mut stream = kv.connect();
        stream.set_nodelay(true).unwrap();
        for byte in &requests {
            stream.write_all(std::slice::from_ref(byte)).unwrap();
        }
        expect_reply(&mut stream, &replies);
    });
}

#[test]
fn keys_expire_when_touched_and_when_not() {
    watchdog(TEST_LIMIT, || {
        let kv = Kv::start(1);
        let mut stream = kv.connect();
        let exchange = |stream: &mut TcpStream, args: &[&str], reply: &[u8]| {
            stream.write_all(&command(args)).unwrap();
            expect_reply(stream, reply);
        };
        exchange(&mut stream, &["SET", "lazy", "v", "PX", "1"], b"+OK\r\n");
        std::thread::sleep(Duration::from_millis(5));
        exchange(&mut stream, &["GET", "lazy"], b"$-1\r\n");
        exchange(&mut stream, &["TTL", "lazy"], b":-2\r\n");
        // 500 keys no one touches again, and one that stays: the sweep deletes the 500.
        for i in 0..500 {
            exchange(
                &mut stream,
                &["SET", &format!("k{i}"), "v", "PX", "20"],
                b"+OK\r\n",
            );
        }
        exchange(&mut stream, &["SET", "stays", "v"], b"+OK\r\n");
        let deadline = Instant::now() + STEP;
        loop {
            stream.write_all(&command(&["DBSIZE"])).unwrap();
            let mut reply = [0u8; 16];
            let n = stream.read(&mut reply).unwrap();
            if &reply[..n] == b":1\r\n" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the sweep left {:?}",
                &reply[..n]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        exchange(&mut stream, &["GET", "stays"], b"$1\r\nv\r\n");
    });
}

#[test]
fn a_two_gib_bulk_header_closes_only_its_session() {
    watchdog(TEST_LIMIT, || {
        let kv = Kv::start(1);
        let mut bystander = kv.connect();
        bystander.write_all(&command(&["SET", "k", "v"])).unwrap();
        expect_reply(&mut bystander, b"+OK\r\n");

        let mut stream = kv.connect();
        stream
            .write_all(b"PING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2147483647\r\n")
            .unwrap();
        let (received, ended) = read_to_end(&mut stream);
        let received = String::from_utf8_lossy(&received).into_owned();
        assert!(
            received.starts_with(
                "+PONG\r\n-ERR Protocol error: message of 2147483682 bytes exceeds the maximum of"
            ),
            "{received:?}"
        );
        assert!(matches!(ended, Ended::Eof | Ended::Reset), "{ended:?}");

        bystander.write_all(&command(&["GET", "k"])).unwrap();
        expect_reply(&mut bystander, b"$1\r\nv\r\n");
    });
}

#[test]
fn serves_a_unix_socket() {
    watchdog(TEST_LIMIT, || {
        let dir = TempDir::new("kv");
        let path = dir.path("kv.sock");
        let thread: ReactorThread = server::serve_unix(&path).expect("serve the unix socket");
        let mut stream = UnixStream::connect(&path).unwrap();
        stream.set_read_timeout(Some(STEP)).unwrap();
        stream.write_all(&command(&["SET", "k", "v"])).unwrap();
        stream.write_all(b"GET k\r\n").unwrap();
        expect_reply(&mut stream, b"+OK\r\n$1\r\nv\r\n");
        thread.handle().shutdown();
        thread.join().unwrap();
    });
}

#[test]
fn several_reactors_each_serve_their_connections() {
    watchdog(TEST_LIMIT, || {
        let kv = Kv::start(2);
        let mut streams: Vec<TcpStream> = (0..8).map(|_| kv.connect()).collect();
        for (i, stream) in streams.iter_mut().enumerate() {
            let key = format!("key{i}");
            stream.write_all(&command(&["SET", &key, &key])).unwrap();
            stream.write_all(&command(&["GET", &key])).unwrap();
            let reply = format!("+OK\r\n$4\r\n{key}\r\n");
            expect_reply(stream, reply.as_bytes());
        }
    });
}

/// The store against a model under random writes, deletes, deadlines (past and future)
/// and sweeps: every key reads as the model says, and the index the sweep samples from
/// stays exact (keys move in it when others leave).
#[test]
fn the_store_agrees_with_a_model() {
    use std::collections::HashMap;
    use store::{Store, Ttl};

    let mut rng = fastrand::Rng::with_seed(15);
    let (mut store, mut model) = (
        Store::new(),
        HashMap::<Vec<u8>, (u32, Option<Instant>)>::new(),
    );
    let past = Instant::now() - Duration::from_secs(1);
    let future = Instant::now() + Duration::from_secs(3600);
    for step in 0..20_000u32 {
        let key = vec![b'a' + rng.u8(..16)];
        let deadline = [None, Some(past), Some(future)][rng.usize(..3)];
        match rng.u8(..4) {
            0 => {
                let ttl = match (rng.bool(), deadline) {
                    (true, _) => Ttl::Keep,
                    (false, None) => Ttl::Persist,
                    (false, Some(at)) => Ttl::At(at),
                };
                store.set(&key, &step.to_be_bytes(), ttl);
                let kept = model
                    .get(&key)
                    .and_then(|&(_, at)| at)
                    .filter(|&at| at > past);
                let at = if ttl == Ttl::Keep { kept } else { deadline };
                model.insert(key.clone(), (step, at));
            }
            1 => {
                let live = model.remove(&key).is_some_and(|(_, at)| at != Some(past));
                assert_eq!(store.remove(&key), live, "step {step}");
            }
            2 => {
                let live = model.get(&key).is_some_and(|&(_, at)| at != Some(past));
                assert_eq!(store.set_deadline(&key, deadline), live, "step {step}");
                match model.get_mut(&key) {
                    Some(entry) if live => entry.1 = deadline,
                    _ => {
                        model.remove(&key);
                    }
                }
            }
            _ => {
                store.sweep(Instant::now());
            }
        }
        store.check_index();
        for (key, &(value, at)) in &model {
            let expected = (at != Some(past)).then(|| value.to_be_bytes().to_vec());
            assert_eq!(store.get(key).map(|v| v.to_vec()), expected, "step {step}");
        }
        model.retain(|_, &mut (_, at)| at != Some(past));
        assert_eq!(store.len(), model.len(), "step {step}");
    }
}

// ---------------------------------------------------------------------------------------
// Redis's own clients

/// Whether `tool` (from Debian's `redis-tools`) runs here. Without it the test is skipped
/// with a printed reason, or fails under `GETTY_REQUIRE_REDIS=1`.
fn redis_tool(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        let why = format!("{tool} is not installed (apt-get install redis-tools)");
        assert!(
            std::env::var("GETTY_REQUIRE_REDIS").as_deref() != Ok("1"),
            "GETTY_REQUIRE_REDIS=1 but {why}"
        );
        eprintln!("skipping: {why}");
    }
    found
}

/// Runs `tool args...` with `stdin` as its input, killed after `limit`.
fn run_tool(tool: &str, args: &[&str], stdin: &[u8], limit: Duration) -> Output {
    let mut child = Command::new("timeout")
        .arg("--signal=KILL")
        .arg(format!("{}", limit.as_secs()))
        .arg(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{tool} {args:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A `redis-cli` script, one command a line, and what `redis-cli` prints for it against
/// Redis 7.0 (checked against Debian's `redis-server`): replies raw, nil as an empty
/// line, an error followed by an empty line.
const CLI_SCRIPT: &str = r#"PING
PING hello
ECHO "two words"
SET greeting hello
GET greeting
GET missing
SET greeting world XX
GET greeting
SET greeting again NX
SET fresh 1 NX
SET fresh 2 XX GET
SET nobody 1 XX
EXISTS greeting fresh missing
DEL greeting missing
EXISTS greeting
INCR counter
INCRBY counter 41
DECR counter
INCR fresh
SET notnum abc
INCR notnum
INCRBY counter x
MSET a 1 b 2 c 3
MGET a b missing c
EXPIRE a 100
TTL a
TTL b
TTL missing
EXPIRE missing 10
SET temp v EX 100
TTL temp
SET temp v KEEPTTL
TTL temp
SET temp v
TTL temp
EXPIRE b 0
EXISTS b
DBSIZE
CONFIG GET save
CONFIG GET appendonly
FOO bar baz
GET
SET k
MSET a
FLUSHALL
DBSIZE
QUIT
"#;

const CLI_OUTPUT: &str =
    "PONG\nhello\ntwo words\nOK\nhello\n\nOK\nworld\n\nOK\n1\n\n2\n1\n0\n1\n42\n41\n3\nOK\n\
ERR value is not an integer or out of range\n\nERR value is not an integer or out of range\n\n\
OK\n1\n2\n\n3\n1\n100\n-1\n-2\n0\nOK\n100\nOK\n100\nOK\n-1\n1\n0\n6\nsave\n\nappendonly\nno\n\
ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' \n\n\
ERR wrong number of arguments for 'get' command\n\n\
ERR wrong number of arguments for 'set' command\n\n\
ERR wrong number of arguments for 'mset' command\n\nOK\n0\n";

#[test]
fn redis_cli_runs_a_script_command_by_command() {
    if !redis_tool("redis-cli") {
        return;
    }
    watchdog(TEST_LIMIT, || {
        let kv = Kv::start(1);
        let port = kv.addr.port().to_string();
        let output = run_tool("redis-cli", &["-p", &port], CLI_SCRIPT.as_bytes(), STEP);
        assert_eq!(String::from_utf8_lossy(&output.stdout), CLI_OUTPUT);
    });
}

#[test]
fn redis_cli_pipes_thousands_of_commands() {
    if !redis_tool("redis-cli") {
        return;
    }
    watchdog(TEST_LIMIT, || {
        let kv = Kv::start(1);
        let port = kv.addr.port().to_string();
        let mut input = Vec::new();
        for i in 0..5000 {
            input.extend(command(&["SET", &format!("key:{i}"), &i.to_string()]));
            input.extend(command(&["INCR", "counter"]));
        }
        let output = run_tool("redis-cli", &["-p", &port, "--pipe"], &input, STEP);
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(report.contains("errors: 0, replies: 10000"), "{report}");

        let get = |key: &str| {
            let output = run_tool("redis-cli", &["-p", &port, "GET", key], b"", STEP);
            String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_owned()
        };
        assert_eq!(get("counter"), "5000");
        assert_eq!(get("key:4999"), "4999");
        let output = run_tool("redis-cli", &["-p", &port, "DBSIZE"], b"", STEP);
        assert_eq!(String::from_utf8_lossy(&output.stdout), "5001\n");
    });
}

#[test]
fn redis_cli_over_the_unix_socket() {
    if !redis_tool("redis-cli") {
        return;
    }
    watchdog(TEST_LIMIT, || {
        let dir = TempDir::new("kv-cli");
        let path = dir.path("kv.sock");
        let thread = server::serve_unix(&path).expect("serve the unix socket");
        let socket = path.to_str().unwrap();
        let output = run_tool("redis-cli", &["-s", socket], b"SET k v\nGET k\n", STEP);
        assert_eq!(String::from_utf8_lossy(&output.stdout), "OK\nv\n");
        thread.handle().shutdown();
        thread.join().unwrap();
        assert!(!Path::new(socket).exists(), "the socket file is removed");
    });
}

#[test]
fn redis_benchmark_runs_without_errors() {
    if !redis_tool("redis-benchmark") {
        return;
    }
    watchdog(TEST_LIMIT, || {
        let _alone = exclusive_gate();
        let kv = Kv::start(1);
        let port = kv.addr.port().to_string();
        let args = [
            "-p",
            &port,
            "-t",
            "ping,set,get,incr,mset",
            "-n",
            "100000",
            "-P",
            "16",
            "-q",
        ];
        let output = run_tool("redis-benchmark", &args, b"", Duration::from_secs(150));
        // `-q` redraws a progress line with `\r`; the results are the lines after the last.
        let text = String::from_utf8_lossy(&output.stdout).replace('\r', "\n");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let results: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("requests per second"))
            .collect();
        for test in ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET"] {
            assert!(
                results.iter().any(|line| line.starts_with(test)),
                "no result for {test}: {text}"
            );
        }
        assert!(!text.to_lowercase().contains("error"), "{text}");
        assert!(!stderr.to_lowercase().contains("error"), "{stderr}");
        eprintln!("{}", results.join("\n"));

        // Every INCR landed exactly once (without -r the key is literally this).
        let mut stream = kv.connect();
        stream
            .write_all(&command(&["GET", "counter:__rand_int__"]))
            .unwrap();
        expect_reply(&mut stream, b"$6\r\n100000\r\n");
    });
}
