//! Unix stream sockets: the TCP echo over a socket file.

use super::*;
use getty::reactor::ReactorThread;
use getty::unix::{UnixClient, UnixServer};
use getty::UnixAddr;
use std::path::{Path, PathBuf};

fn start_server(path: &Path, args: &Args) -> io::Result<ReactorThread> {
    let options = session_options(args);
    let (path, codec) = (path.to_path_buf(), args.codec);
    Reactor::start_thread("echo-unix-server", move |reactor| {
        let builder = UnixServer::builder().session_options(options);
        match codec {
            CodecKind::Length => {
                reactor.spawn(builder.bind(path, |_| Ok((LengthFieldCodec::default(), Echo)))?)
            }
            CodecKind::Lines => {
                reactor.spawn(builder.bind(path, |_| Ok((LinesCodec::default(), Echo)))?)
            }
            CodecKind::Raw => reactor.spawn(builder.bind(path, |_| Ok((RawCodec, Echo)))?),
        };
        Ok(())
    })
}

fn run_client(path: &Path, args: &Args, plan: Plan) -> io::Result<Report> {
    let lines = plan.codec == CodecKind::Lines;
    let builder = UnixClient::builder()
        .connection_number(plan.connections)
        .max_consecutive_failures(Some(MAX_DIAL_FAILURES))
        .session_options(session_options(args));
    let addr = UnixAddr::path(path);
    run_senders(plan, move |reactor, mut make_sender| {
        // Raw servers echo the stream as it comes, so the client frames with lengths.
        if lines {
            reactor
                .spawn(builder.build(addr, move |_| Ok((LinesCodec::default(), make_sender())))?);
        } else {
            reactor.spawn(builder.build(addr, move |_| {
                Ok((LengthFieldCodec::default(), make_sender()))
            })?);
        }
        Ok(())
    })
}

pub fn run(args: Args) -> io::Result<bool> {
    let plan = Plan {
        connections: args.connections,
        messages: args.messages,
        window: args.window,
        max_size: args.max_size,
        codec: args.codec,
    };
    let layers = layers(&args);
    if let Some(path) = &args.unix_server {
        let server = start_server(path, &args)?;
        server.handle().shutdown_on_signals(SHUTDOWN_GRACE)?;
        println!(
            "echo server ({:?} codec{layers}) on the unix socket {}; Ctrl-C to stop",
            args.codec,
            path.display()
        );
        let reactor = server.handle().clone();
        server.join()?;
        report_stop(&[reactor]);
        return Ok(true);
    }
    if let Some(path) = &args.unix_client {
        let report = run_client(path, &args, plan)?;
        print_report(&report);
        return Ok(report.mismatches == 0 && report.failed == 0);
    }
    let path: PathBuf =
        std::env::temp_dir().join(format!("getty-echo-{}.sock", std::process::id()));
    let server = start_server(&path, &args)?;
    println!(
        "echo server on the unix socket {} ({:?} codec{layers}); client: {} connections x {} messages, {} in flight each, 1..={} bytes",
        path.display(), args.codec, args.connections, args.messages, args.window, args.max_size
    );
    let report = run_client(&path, &args, plan);
    server.handle().shutdown();
    server.join()?;
    let report = report?;
    print_report(&report);
    Ok(report.mismatches == 0 && report.failed == 0)
}
