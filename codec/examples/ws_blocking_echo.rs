//! The sans-IO WebSocket machine on blocking std::net sockets, one thread per connection:
//! proof that `getty_codec::ws` needs no reactor (the reactor-driven transport is separate).
//!
//! ```text
//! ws_blocking_echo --server 127.0.0.1:9001 [--compress]
//!     an echo server: every message comes back with its kind (text stays text)
//! ws_blocking_echo --autobahn-client ws://127.0.0.1:9001 [--agent NAME] [--compress]
//!     Autobahn's client flow: /getCaseCount, then /runCase?case=N&agent=NAME echoing every
//!     message, then /updateReports?agent=NAME
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use getty_codec::ws::{
    parse_request, ClientRequest, Config, DeflateConfig, Event, Protocol, Role, WsError,
};
use getty_codec::{Decoder, Encoder, Message, MessageCodec};

const MAX_HEAD: usize = 8 << 10;
const IDLE: Duration = Duration::from_secs(60);
const LINGER: Duration = Duration::from_secs(2);

fn config() -> Config {
    Config {
        max_message_size: 64 << 20,
        max_frame_size: 64 << 20,
    }
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("ws_blocking_echo: {msg}");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut server = None;
    let mut client = None;
    let mut agent = String::from("getty-rs");
    let mut compress = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--server" => server = it.next().cloned(),
            "--autobahn-client" => client = it.next().cloned(),
            "--agent" => agent = it.next().cloned().unwrap_or_else(|| fail("--agent NAME")),
            "--compress" => compress = true,
            other => fail(format!("unknown argument {other:?}")),
        }
    }
    let deflate = compress.then(DeflateConfig::default);
    match (server, client) {
        (Some(addr), None) => run_server(&addr, deflate),
        (None, Some(base)) => run_autobahn_client(&base, &agent, deflate),
        _ => fail(
            "usage: --server ADDR | --autobahn-client ws://HOST:PORT [--agent NAME] [--compress]",
        ),
    }
}

/// Reads once into `buf`; `Ok(false)` at EOF.
fn read_some(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
    let mut chunk = [0u8; 64 << 10];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// Sends what is queued in `out`.
fn flush(stream: &mut TcpStream, out: &mut BytesMut) -> io::Result<()> {
    stream.write_all(out)?;
    out.clear();
    Ok(())
}

/// Half-closes and reads until the peer's EOF (bounded), so our last frames are not lost to
/// a reset.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

fn run_server(addr: &str, deflate: Option<DeflateConfig>) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| fail(format!("bind {addr}: {e}")));
    eprintln!("listening on {}", listener.local_addr().unwrap());
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, deflate) {
                eprintln!("connection: {e}");
            }
        });
    }
}

fn serve(mut stream: TcpStream, deflate: Option<DeflateConfig>) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_nodelay(true)?;
    let mut input = BytesMut::with_capacity(64 << 10);
    let mut out = BytesMut::new();
    let request = loop {
        match parse_request(&mut input, MAX_HEAD) {
            Ok(Some(request)) => break request,
            Ok(None) => {
                if !read_some(&mut stream, &mut input)? {
                    return Ok(());
                }
            }
            Err(e) => {
                e.write_response(&mut out);
                flush(&mut stream, &mut out)?;
                linger(&mut stream);
                return Ok(());
            }
        }
    };
    let accepted = match request.accept(None, deflate.as_ref(), &mut out) {
        Ok(a) => a,
        Err(e) => {
            e.write_response(&mut out);
            flush(&mut stream, &mut out)?;
            return Ok(());
        }
    };
    flush(&mut stream, &mut out)?;
    let ws = Protocol::new(Role::Server, config(), accepted.deflate());
    echo(stream, ws, input, |_| {})
}

/// Echoes every message until the close handshake ends or the connection fails. `first`
/// sees each text message (the Autobahn flow reads the case count from one).
fn echo(
    mut stream: TcpStream,
    mut ws: Protocol,
    mut input: BytesMut,
    mut on_text: impl FnMut(&str),
) -> io::Result<()> {
    let mut codec = MessageCodec;
    let mut out = BytesMut::new();
    loop {
        loop {
            match ws.decode(&mut input, &mut out) {
                Ok(Some(Event::Message { kind, mut payload })) => {
                    let msg: Message = codec
                        .decode_message(kind, &mut payload)
                        .map_err(io::Error::other)?;
                    if let Some(text) = msg.as_text() {
                        on_text(text);
                    }
                    let start = out.len();
                    let kind = codec
                        .encode_message(msg, &mut out)
                        .map_err(io::Error::other)?;
                    ws.encode_message(kind, &mut out, start)
                        .map_err(io::Error::other)?;
                }
                Ok(Some(Event::Close(_))) => break,
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return failed(stream, ws, out, &e),
            }
        }
        flush(&mut stream, &mut out)?;
        if ws.is_closed() {
            // The server closes first; a client waits (bounded) for the server's EOF.
            linger(&mut stream);
            return Ok(());
        }
        if !read_some(&mut stream, &mut input)? {
            return Ok(());
        }
    }
}

fn failed(
    mut stream: TcpStream,
    mut ws: Protocol,
    mut out: BytesMut,
    e: &WsError,
) -> io::Result<()> {
    ws.fail(e, &mut out);
    flush(&mut stream, &mut out)?;
    linger(&mut stream);
    Ok(())
}

/// `ws://host:port` → (`host:port`, the path prefix).
fn split_url(base: &str) -> (String, String) {
    let rest = base
        .strip_prefix("ws://")
        .unwrap_or_else(|| fail(format!("not a ws:// URL: {base}")));
    match rest.find('/') {
        Some(i) => (
            rest[..i].to_string(),
            rest[i..].trim_end_matches('/').to_string(),
        ),
        None => (rest.to_string(), String::new()),
    }
}

/// Connects, upgrades, and echoes until the connection ends; text messages go to `on_text`.
fn client_session(
    host: &str,
    path: &str,
    deflate: Option<DeflateConfig>,
    on_text: impl FnMut(&str),
) -> io::Result<()> {
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_nodelay(true)?;
    let mut out = BytesMut::new();
    let mut request = ClientRequest::new(host, path);
    if let Some(d) = deflate {
        request = request.deflate(d);
    }
    let handshake = request.write(&mut out);
    flush(&mut stream, &mut out)?;
    let mut input = BytesMut::new();
    let response = loop {
        match handshake.parse_response(&mut input, MAX_HEAD) {
            Ok(Some(response)) => break response,
            Ok(None) => {
                if !read_some(&mut stream, &mut input)? {
                    return Err(io::Error::other("EOF during the handshake"));
                }
            }
            Err(e) => return Err(io::Error::other(e)),
        }
    };
    let ws = Protocol::new(Role::Client, config(), response.deflate());
    echo(stream, ws, input, on_text)
}

fn run_autobahn_client(base: &str, agent: &str, deflate: Option<DeflateConfig>) {
    let (host, prefix) = split_url(base);
    let mut count = None;
    client_session(&host, &format!("{prefix}/getCaseCount"), None, |t| {
        count = t.trim().parse::<u32>().ok()
    })
    .unwrap_or_else(|e| fail(format!("getCaseCount: {e}")));
    let count = count.unwrap_or_else(|| fail("no case count"));
    eprintln!("{count} cases");
    for case in 1..=count {
        let path = format!("{prefix}/runCase?case={case}&agent={agent}");
        if let Err(e) = client_session(&host, &path, deflate, |_| {}) {
            eprintln!("case {case}: {e}");
        }
    }
    client_session(
        &host,
        &format!("{prefix}/updateReports?agent={agent}"),
        None,
        |_| {},
    )
    .unwrap_or_else(|e| fail(format!("updateReports: {e}")));
    eprintln!("reports updated");
}
