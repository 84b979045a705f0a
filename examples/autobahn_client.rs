//! The getty-rs WebSocket client under the Autobahn test suite (`wstest -m fuzzingserver`):
//! it asks the suite how many cases it has, runs each case by echoing every message the
//! suite sends until the suite closes, then asks the suite to write its report.
//!
//! ```text
//! wstest -m fuzzingserver -s fuzzingserver.json          # listens on ws://127.0.0.1:9001
//! cargo run --release --example autobahn_client -- --url ws://127.0.0.1:9001 [--agent getty-rs] [--compress]
//! ```
//!
//! `tests/autobahn/run.sh` runs both halves and checks the report. Every case is one
//! `WsClient` session on one reactor; the suite's huge messages (up to 16 MiB) are allowed
//! by raising the session's message and outbound limits.

use std::io;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use getty::codec::ws::DeflateConfig;
use getty::codec::{Message, MessageCodec};
use getty::ws::{Ws, WsClient};
use getty::{Close, Handler, Reactor, ReactorHandle, Session, SessionOptions};

/// The largest message the suite sends is 16 MiB; leave room.
const MAX_MESSAGE: usize = 64 << 20;

/// How long one case may take before the run gives up on it.
const CASE_LIMIT: Duration = Duration::from_secs(120);

/// What a case's session tells the main thread.
enum Event {
    Text(String),
    Closed,
}

/// Echoes every message with its kind; reports text and the end of the session.
struct Echo {
    events: mpsc::Sender<Event>,
}

impl Handler<MessageCodec, Ws> for Echo {
    fn on_message(&mut self, session: &mut Session<MessageCodec, Ws>, message: Message) {
        if let Some(text) = message.as_text() {
            let _ = self.events.send(Event::Text(text.to_string()));
        }
        if let Err(e) = session.write(message) {
            log::warn!("echo failed: {e}");
        }
    }

    fn on_error(&mut self, _: &mut Session<MessageCodec, Ws>, error: &getty::Error) {
        log::info!("session failed: {error}");
    }

    fn on_close(&mut self, _: &mut Session<MessageCodec, Ws>) {
        let _ = self.events.send(Event::Closed);
    }
}

struct Args {
    url: String,
    agent: String,
    compress: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "ws://127.0.0.1:9001".into(),
        agent: "getty-rs".into(),
        compress: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value()?,
            "--agent" => args.agent = value()?,
            "--compress" => args.compress = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// Runs one session against `path` on the suite and returns the text messages it got.
/// The session's own echoes are what the suite checks.
fn run_session(reactor: &ReactorHandle, args: &Args, path: &str) -> io::Result<Vec<String>> {
    let (tx, rx) = mpsc::channel();
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    let options = SessionOptions::default()
        .max_message_len(MAX_MESSAGE)
        .max_outbound(2 * MAX_MESSAGE);
    let client = WsClient::builder()
        .session_options(options)
        .max_consecutive_failures(Some(1))
        .deflate(args.compress.then(DeflateConfig::default))
        .build(&url, move |_| {
            Ok((MessageCodec, Echo { events: tx.clone() }))
        })?;
    let id = reactor.query(move |spawner| spawner.spawn(client))?;
    let deadline = Instant::now() + CASE_LIMIT;
    let mut texts = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Event::Text(text)) => texts.push(text),
            Ok(Event::Closed) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // A client whose dial failed gives up (one failure allowed) and ends.
                if !reactor.query(move |s| s.is_alive(id))? {
                    return Err(io::Error::other(format!("could not connect to {url}")));
                }
                if Instant::now() > deadline {
                    return Err(io::Error::other(format!("{url} did not end in time")));
                }
            }
            // The client gave up (its failure limit) and dropped its handler factory.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(io::Error::other(format!("could not connect to {url}")));
            }
        }
    }
    // The session is over: stop the client from redialling.
    let _ = reactor.send(id, Close);
    Ok(texts)
}

fn run(args: &Args) -> io::Result<()> {
    let reactor = Reactor::start_thread("autobahn-client", |_| Ok(()))?;
    let handle = reactor.handle().clone();
    let result = (|| {
        let count: usize = run_session(&handle, args, "/getCaseCount")?
            .first()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| io::Error::other("no case count from the suite"))?;
        println!("running {count} cases as agent {}", args.agent);
        for case in 1..=count {
            let path = format!("/runCase?case={case}&agent={}", args.agent);
            run_session(&handle, args, &path)?;
        }
        run_session(
            &handle,
            args,
            &format!("/updateReports?agent={}", args.agent),
        )?;
        println!("done: {count} cases");
        Ok(())
    })();
    handle.shutdown();
    reactor.join()?;
    result
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("autobahn_client: {msg}");
            eprintln!("usage: autobahn_client [--url ws://HOST:PORT] [--agent NAME] [--compress]");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autobahn_client: {e}");
            ExitCode::FAILURE
        }
    }
}
