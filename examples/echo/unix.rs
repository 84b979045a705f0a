//! Unix stream sockets: the TCP echo over a socket file.

use super::*;
use getty::unix::{UnixClient, UnixServer};
use getty::UnixAddr;
use std::path::{Path, PathBuf};

fn start_server(path: &Path, args: &Args) -> io::Result<Server> {
    let options = session_options(args);
    let (path, codec) = (path.to_path_buf(), args.codec);
    let thread = Reactor::start_thread("echo-unix-server", move |reactor| {
        let builder = UnixServer::builder().session_options(options);
        with_codec!(codec, |codec| reactor
            .spawn(builder.bind(path, move |_| Ok((codec(), Echo)))?));
        Ok(())
    })?;
    Ok(Server::on_thread(thread))
}

fn run_client(path: &Path, args: &Args, plan: Plan) -> io::Result<Report> {
    let codec = plan.client_codec();
    let builder = UnixClient::builder()
        .connection_number(plan.connections)
        .max_consecutive_failures(Some(MAX_DIAL_FAILURES))
        .session_options(session_options(args));
    let addr = UnixAddr::path(path);
    run_senders(plan, move |reactor, mut make_sender| {
        with_codec!(codec, |codec| reactor
            .spawn(builder.build(addr, move |_| Ok((codec(), make_sender())))?));
        Ok(())
    })
}

pub fn run(args: Args) -> io::Result<bool> {
    let plan = Plan::new(&args);
    let layers = layers(&args);
    let fresh_path = || -> PathBuf {
        std::env::temp_dir().join(format!("getty-echo-{}.sock", std::process::id()))
    };
    let (server, client) = (args.unix_server.clone(), args.unix_client.clone());
    Side::of(server, client, fresh_path).run(
        |path| Ok((start_server(&path, &args)?, path)),
        |path| run_client(path, &args, plan),
        |path| {
            format!(
                "echo server ({:?} codec{layers}) on the unix socket {}; Ctrl-C to stop",
                args.codec,
                path.display()
            )
        },
        |path| {
            format!(
                "echo server on the unix socket {} ({:?} codec{layers}); client: {} connections x {} messages, {} in flight each, 1..={} bytes",
                path.display(), args.codec, args.connections, args.messages, args.window, args.max_size
            )
        },
    )
}
