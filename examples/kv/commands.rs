//! The commands: each parses its arguments, acts on the store and writes its reply, with
//! Redis's error messages word for word (clients and tests match on them).

use std::time::{Duration, Instant};

use getty::codec::{Bytes, RespArgs, RespCommand, RespValue};

use crate::store::{seconds_left, Store, Ttl};

/// Where replies go: the session (each reply encoded straight into its outbound buffer), or
/// a buffer in tests.
pub(crate) trait Reply {
    fn send(&mut self, value: RespValue<'_>);

    fn ok(&mut self) {
        self.send(RespValue::Simple("OK"));
    }

    fn error(&mut self, message: &str) {
        self.send(RespValue::Error(message));
    }

    fn integer(&mut self, n: i64) {
        self.send(RespValue::Integer(n));
    }

    fn bulk_or_null(&mut self, value: Option<&[u8]>) {
        self.send(value.map_or(RespValue::Null, RespValue::Bulk));
    }

    /// A value from the store: as `bulk_or_null`, for a sender that may keep the store's
    /// `Bytes` (shared, not copied) while the reply waits for room.
    fn stored(&mut self, value: Option<&Bytes>) {
        self.bulk_or_null(value.map(|v| &v[..]));
    }
}

/// What the connection does after a command.
#[derive(Debug, PartialEq)]
pub(crate) enum Flow {
    Continue,
    /// `QUIT`: close once the reply is flushed.
    Close,
}

const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX_ERROR: &str = "ERR syntax error";

/// A command's canonical name (for errors), its arity as Redis counts it (the name
/// included; negative: at least that many) and what runs it. The arguments it gets start
/// after the name.
struct Spec {
    name: &'static str,
    arity: i32,
    run: fn(&mut Store, RespArgs<'_>, &mut dyn Reply) -> Flow,
}

/// The command named `name` (any case).
fn lookup(name: &[u8]) -> Option<&'static Spec> {
    let mut upper = [0u8; 8];
    let upper = upper.get_mut(..name.len())?;
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    let spec: &'static Spec = match &*upper {
        b"GET" => &Spec {
            name: "get",
            arity: 2,
            run: get,
        },
        b"SET" => &Spec {
            name: "set",
            arity: -3,
            run: set,
        },
        b"PING" => &Spec {
            name: "ping",
            arity: -1,
            run: ping,
        },
        b"ECHO" => &Spec {
            name: "echo",
            arity: 2,
            run: echo,
        },
        b"DEL" => &Spec {
            name: "del",
            arity: -2,
            run: del,
        },
        b"EXISTS" => &Spec {
            name: "exists",
            arity: -2,
            run: exists,
        },
        b"INCR" => &Spec {
            name: "incr",
            arity: 2,
            run: incr,
        },
        b"DECR" => &Spec {
            name: "decr",
            arity: 2,
            run: decr,
        },
        b"INCRBY" => &Spec {
            name: "incrby",
            arity: 3,
            run: incrby,
        },
        b"DECRBY" => &Spec {
            name: "decrby",
            arity: 3,
            run: decrby,
        },
        b"MGET" => &Spec {
            name: "mget",
            arity: -2,
            run: mget,
        },
        b"MSET" => &Spec {
            name: "mset",
            arity: -3,
            run: mset,
        },
        b"EXPIRE" => &Spec {
            name: "expire",
            arity: -3,
            run: expire,
        },
        b"TTL" => &Spec {
            name: "ttl",
            arity: 2,
            run: ttl,
        },
        b"PTTL" => &Spec {
            name: "pttl",
            arity: 2,
            run: pttl,
        },
        b"DBSIZE" => &Spec {
            name: "dbsize",
            arity: 1,
            run: dbsize,
        },
        b"FLUSHALL" => &Spec {
            name: "flushall",
            arity: -1,
            run: flushall,
        },
        b"CONFIG" => &Spec {
            name: "config",
            arity: -2,
            run: config,
        },
        b"QUIT" => &Spec {
            name: "quit",
            arity: -1,
            run: quit,
        },
        _ => return None,
    };
    Some(spec)
}

/// Runs one command and writes its reply (exactly one, as Redis does for these).
pub(crate) fn execute(store: &mut Store, command: &RespCommand, out: &mut dyn Reply) -> Flow {
    let mut args = command.args();
    let name = args.next().unwrap_or_default();
    let Some(spec) = lookup(name) else {
        out.error(&unknown_command(name, args));
        return Flow::Continue;
    };
    if !arity_ok(spec.arity, command.len()) {
        out.error(&wrong_arity(spec.name));
        return Flow::Continue;
    }
    (spec.run)(store, args, out)
}

fn arity_ok(arity: i32, argc: usize) -> bool {
    let wanted = arity.unsigned_abs() as usize;
    if arity < 0 {
        argc >= wanted
    } else {
        argc == wanted
    }
}

fn wrong_arity(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// Redis's message: the name and the first arguments quoted, 128 characters at most, line
/// breaks made spaces (an error is one line).
fn unknown_command(name: &[u8], args: RespArgs<'_>) -> String {
    let mut quoted = String::new();
    for arg in args {
        if quoted.len() >= 128 {
            break;
        }
        let room = 128 - quoted.len();
        quoted.push('\'');
        quoted.push_str(&printable(&arg[..arg.len().min(room)]));
        quoted.push_str("' ");
    }
    let name = printable(&name[..name.len().min(128)]);
    format!("ERR unknown command '{name}', with args beginning with: {quoted}")
}

fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace(['\r', '\n'], " ")
}

/// The next argument; the arity check made sure it is there.
fn next<'a>(args: &mut RespArgs<'a>) -> &'a [u8] {
    args.next().unwrap_or_default()
}

/// A decimal integer as Redis reads one (`string2ll`): no sign but `-`, no spaces, no
/// leading zeros, in range.
pub(crate) fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, bytes),
    };
    match digits {
        [] => return None,
        [b'0'] => return (!negative).then_some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut magnitude: u64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

fn ping(_: &mut Store, mut args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    match args.next() {
        None => out.send(RespValue::Simple("PONG")),
        Some(message) if args.len() == 0 => out.send(RespValue::Bulk(message)),
        Some(_) => out.error(&wrong_arity("ping")),
    }
    Flow::Continue
}

fn echo(_: &mut Store, mut args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    out.send(RespValue::Bulk(next(&mut args)));
    Flow::Continue
}

fn get(store: &mut Store, mut args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    out.stored(store.get(next(&mut args)));
    Flow::Continue
}

/// `SET key value [NX|XX] [GET] [EX seconds|PX milliseconds|KEEPTTL]`.
fn set(store: &mut Store, mut args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    let (key, value) = (next(&mut args), next(&mut args));
    let options = match SetOptions::parse(args) {
        Ok(options) => options,
        Err(message) => {
            out.error(message);
            return Flow::Continue;
        }
    };
    let old = options.get.then(|| store.get(key).cloned()).flatten();
    let exists = if options.get {
        old.is_some()
    } else if options.only_if_absent || options.only_if_present {
        store.contains(key)
    } else {
        false
    };
    let allowed = !(options.only_if_absent && exists || options.only_if_present && !exists);
    if allowed {
        store.set(key, value, options.ttl);
    }
    match (options.get, allowed) {
        (true, _) => out.bulk_or_null(old.as_deref()),
        (false, true) => out.ok(),
        (false, false) => out.send(RespValue::Null),
    }
    Flow::Continue
}

struct SetOptions {
    only_if_absent: bool,
    only_if_present: bool,
    get: bool,
    ttl: Ttl,
}

impl SetOptions {
    fn parse(mut args: RespArgs<'_>) -> Result<SetOptions, &'static str> {
        let mut options = SetOptions {
            only_if_absent: false,
            only_if_present: false,
            get: false,
            ttl: Ttl::Persist,
        };
        // As Redis: an option may come again (the last amount wins), EX and PX and KEEPTTL
        // exclude each other, and only the amount that wins is checked, once every option
        // is read (a syntax error anywhere comes first).
        let mut keep_ttl = false;
        // The amount that wins, and whether it is in seconds (EX) or milliseconds (PX).
        let mut expire: Option<(&[u8], bool)> = None;
        while let Some(option) = args.next() {
            match option.to_ascii_uppercase().as_slice() {
                b"NX" if !options.only_if_present => options.only_if_absent = true,
                b"XX" if !options.only_if_absent => options.only_if_present = true,
                b"GET" => options.get = true,
                b"KEEPTTL" if expire.is_none() => keep_ttl = true,
                unit @ (b"EX" | b"PX")
                    if !keep_ttl && expire.is_none_or(|(_, secs)| secs == (unit == b"EX")) =>
                {
                    let amount = args.next().ok_or(SYNTAX_ERROR)?;
                    expire = Some((amount, unit == b"EX"));
                }
                _ => return Err(SYNTAX_ERROR),
            }
        }
        if keep_ttl {
            options.ttl = Ttl::Keep;
        }
        if let Some((amount, seconds)) = expire {
            let amount = parse_integer(amount).ok_or(NOT_AN_INTEGER)?;
            let unit_ms = if seconds { 1000 } else { 1 };
            let deadline = checked_millis(amount, unit_ms)
                .filter(|&ms| ms > 0)
                .and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms as u64)))
                .ok_or("ERR invalid expire time in 'set' command")?;
            options.ttl = Ttl::At(deadline);
        }
        Ok(options)
    }
}

fn del(store: &mut Store, args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    let deleted = args.filter(|key| store.remove(key)).count();
    out.integer(deleted as i64);
    Flow::Continue
}

fn exists(store: &mut Store, args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    let found = args.filter(|key| store.contains(key)).count();
    out.integer(found as i64);
    Flow::Continue
}

/// Adds `by` to the integer at `key` (0 if absent), keeping its deadline.
fn add(store: &mut Store, key: &[u8], by: i64, out: &mut dyn Reply) {
    let current = match store.get(key) {
        None => Some(0),
        Some(value) => parse_integer(value),
    };
    let Some(current) = current else {
        return out.error(NOT_AN_INTEGER);
    };
    let Some(sum) = current.checked_add(by) else {
        return out.error("ERR increment or decrement would overflow");
    };
    let mut digits = itoa_buffer();
    store.set(key, format_integer(sum, &mut digits), Ttl::Keep);
    out.integer(sum);
}

fn incr(store: &mut Store, mut args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    add(store, next(&mut args), 1, out);
    Flow::Continue
}

fn decr(store: &mut Store, mut args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    add(store, next(&mut args), -1, out);
    Flow::Continue
}

fn incrby(store: &mut Store, mut args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    let key = next(&mut args);
    match parse_integer(next(&mut args)) {
        Some(by) => add(store, key, by, out),
        None => out.error(NOT_AN_INTEGER),
    }
    Flow::Continue
}

fn decrby(store: &mut Store, mut args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    let key = next(&mut args);
    match parse_integer(next(&mut args)).map(i64::checked_neg) {
        Some(Some(by)) => add(store, key, by, out),
        // Redis's word for an amount it cannot negate (`i64::MIN`).
        Some(None) => out.error("ERR decrement would overflow"),
        None => out.error(NOT_AN_INTEGER),
    }
    Flow::Continue
}

fn itoa_buffer() -> [u8; 20] {
    [0; 20]
}

/// `n` in decimal, written into `buffer` without allocating.
fn format_integer(n: i64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut at = buffer.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        buffer[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        buffer[at] = b'-';
    }
    &buffer[at..]
}

fn mget(store: &mut Store, args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    // The header, then each value straight from the store: no reply is built in between.
    out.send(RespValue::ArrayHeader(args.len()));
    for key in args {
        out.stored(store.get(key));
    }
    Flow::Continue
}

fn mset(store: &mut Store, mut args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    if args.len() % 2 != 0 {
        out.error(&wrong_arity("mset"));
        return Flow::Continue;
    }
    while let (Some(key), Some(value)) = (args.next(), args.next()) {
        store.set(key, value, Ttl::Persist);
    }
    out.ok();
    Flow::Continue
}

/// `amount` of a unit of `unit_ms` milliseconds as milliseconds from now, or `None` where
/// Redis refuses it: Redis keeps a deadline as Unix time in milliseconds in an `i64`, so
/// it refuses an amount that overflows once converted, or once today's time is added
/// (`EXPIRE k -9223372036854775808` is refused, not a deletion).
fn checked_millis(amount: i64, unit_ms: i64) -> Option<i64> {
    let millis = amount.checked_mul(unit_ms)?;
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    millis.checked_add(since_epoch)?;
    Some(millis)
}

/// `EXPIRE key seconds [NX|XX|GT|LT]`; a deadline not in the future deletes the key.
fn expire(store: &mut Store, mut args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    let key = next(&mut args);
    let amount = next(&mut args);
    // As Redis: every option first (any case, repeats allowed; the combinations it refuses),
    // then the amount, then the key.
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in args {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                let option = printable(option);
                out.error(&format!("ERR Unsupported option {option}"));
                return Flow::Continue;
            }
        }
    }
    if nx && (xx || gt || lt) {
        out.error("ERR NX and XX, GT or LT options at the same time are not compatible");
        return Flow::Continue;
    }
    if gt && lt {
        out.error("ERR GT and LT options at the same time are not compatible");
        return Flow::Continue;
    }
    let Some(seconds) = parse_integer(amount) else {
        out.error(NOT_AN_INTEGER);
        return Flow::Continue;
    };
    let Some(millis) = checked_millis(seconds, 1000) else {
        out.error("ERR invalid expire time in 'expire' command");
        return Flow::Continue;
    };
    let Some(current) = store.deadline(key) else {
        out.integer(0);
        return Flow::Continue;
    };
    let now = Instant::now();
    // Deadlines as signed milliseconds from now: a past one compares as negative.
    let wanted = millis;
    let current_ms = current.map(|at| at.saturating_duration_since(now).as_millis() as i64);
    // A key without a deadline counts as never expiring (an infinite TTL) for GT and LT.
    let refused = nx && current_ms.is_some()
        || xx && current_ms.is_none()
        || gt && current_ms.is_none_or(|ms| wanted <= ms)
        || lt && current_ms.is_some_and(|ms| wanted >= ms);
    if refused {
        out.integer(0);
    } else if millis <= 0 {
        store.remove(key);
        out.integer(1);
    } else {
        let at = now.checked_add(Duration::from_millis(millis as u64));
        match at {
            Some(at) => {
                store.set_deadline(key, Some(at));
                out.integer(1);
            }
            None => out.error("ERR invalid expire time in 'expire' command"),
        }
    }
    Flow::Continue
}

/// `TTL`: -2 for a missing key, -1 for one without a deadline, else seconds left.
fn ttl(store: &mut Store, mut args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    out.integer(match store.deadline(next(&mut args)) {
        None => -2,
        Some(None) => -1,
        Some(Some(at)) => seconds_left(at),
    });
    Flow::Continue
}

fn pttl(store: &mut Store, mut args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    out.integer(match store.deadline(next(&mut args)) {
        None => -2,
        Some(None) => -1,
        Some(Some(at)) => at.saturating_duration_since(Instant::now()).as_millis() as i64,
    });
    Flow::Continue
}

fn dbsize(store: &mut Store, _: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    out.integer(store.len() as i64);
    Flow::Continue
}

/// `FLUSHALL [ASYNC|SYNC]`: both empty the store at once.
fn flushall(store: &mut Store, mut args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    let mode = args.next().map(<[u8]>::to_ascii_uppercase);
    match mode.as_deref() {
        None | Some(b"ASYNC" | b"SYNC") if args.len() == 0 => {
            store.clear();
            out.ok();
        }
        _ => out.error(SYNTAX_ERROR),
    }
    Flow::Continue
}

/// The configuration `CONFIG GET` reports: what `redis-benchmark` asks before it starts
/// (and warns about persistence from). Nothing is persisted, so `save` is empty and
/// `appendonly` is `no`.
const CONFIG: [(&str, &str); 3] = [("save", ""), ("appendonly", "no"), ("databases", "1")];

/// `CONFIG GET pattern...`: the matching parameters as name/value pairs. Patterns are the
/// exact names or `*`.
fn config(_: &mut Store, mut args: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    let subcommand = next(&mut args);
    if !subcommand.eq_ignore_ascii_case(b"GET") {
        let subcommand = printable(subcommand);
        out.error(&format!(
            "ERR unknown subcommand '{subcommand}'. Try CONFIG HELP."
        ));
        return Flow::Continue;
    }
    if args.len() == 0 {
        out.error(&wrong_arity("config|get"));
        return Flow::Continue;
    }
    let patterns: Vec<&[u8]> = args.collect();
    let matches = |name: &str| {
        patterns
            .iter()
            .any(|p| *p == b"*" || p.eq_ignore_ascii_case(name.as_bytes()))
    };
    let found: Vec<_> = CONFIG.iter().filter(|(name, _)| matches(name)).collect();
    out.send(RespValue::ArrayHeader(found.len() * 2));
    for (name, value) in found {
        out.send(RespValue::Bulk(name.as_bytes()));
        out.send(RespValue::Bulk(value.as_bytes()));
    }
    Flow::Continue
}

fn quit(_: &mut Store, _: RespArgs<'_>, out: &mut dyn Reply) -> Flow {
    out.ok();
    Flow::Close
}
