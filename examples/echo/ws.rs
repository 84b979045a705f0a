//! WebSocket: the same echo, one message per WebSocket message.

use super::*;
use getty::codec::ws::DeflateConfig;
use getty::codec::{Message, MessageCodec, RawCodec};
use getty::ws::{Ws, WsClient, WsServer};
use getty::ReactorPool;

/// Echoes every message with its kind (text as text, binary as binary), so that any
/// WebSocket client can talk to it.
struct WsEcho;

impl Handler<MessageCodec, Ws> for WsEcho {
    fn on_message(&mut self, session: &mut Session<MessageCodec, Ws>, message: Message) {
        if let Err(e) = session.write(message) {
            log::warn!("session {}: echo failed: {e}", session.id());
            let _ = session.close_with(1011, "echo failed");
        }
    }

    fn on_error(&mut self, session: &mut Session<MessageCodec, Ws>, error: &getty::Error) {
        log::info!(
            "session {} from {} failed: {error}",
            session.id(),
            session.peer_addr()
        );
    }
}

fn deflate(args: &Args) -> Option<DeflateConfig> {
    args.compress.then(DeflateConfig::default)
}

/// The echo server on `reactors` reactor threads, each with its own `SO_REUSEPORT`
/// listener; returns it and the address they listen on.
fn start_server(
    addr: SocketAddr,
    args: &Args,
    tls: Option<Arc<ServerConfig>>,
) -> io::Result<(Server, SocketAddr)> {
    let (options, deflate) = (session_options(args), deflate(args));
    let bound = std::sync::Arc::new(std::sync::Mutex::new(addr));
    let bound_in = bound.clone();
    let pool = ReactorPool::start(args.reactors, move |_, reactor| {
        let mut at = bound_in.lock().map_err(|_| io::Error::other("poisoned"))?;
        let mut builder = WsServer::builder()
            .reuse_port(true)
            .session_options(options.clone())
            .deflate(deflate)
            .route("/", |_| Ok((MessageCodec, WsEcho)));
        if let Some(config) = &tls {
            builder = builder.tls(config.clone());
        }
        let server = builder.bind(*at)?;
        *at = server.local_addr();
        reactor.spawn(server);
        Ok(())
    })?;
    let addr = *bound.lock().map_err(|_| io::Error::other("poisoned"))?;
    Ok((Server::on_pool(pool), addr))
}

fn run_client(
    addr: SocketAddr,
    args: &Args,
    plan: Plan,
    tls: Option<Arc<ClientConfig>>,
) -> io::Result<Report> {
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let url = format!("{scheme}://{addr}/");
    let mut builder = WsClient::builder()
        .connection_number(plan.connections)
        .max_consecutive_failures(Some(MAX_DIAL_FAILURES))
        .session_options(session_options(args))
        .deflate(deflate(args));
    if let Some(config) = tls {
        builder = builder.tls(config);
    }
    run_senders(plan, move |reactor, mut make_sender| {
        // Raw bytes, one WebSocket message per echo message.
        let client = builder.build(&url, move |_| Ok((RawCodec, make_sender())))?;
        reactor.spawn(client);
        Ok(())
    })
}

pub fn run(args: Args, security: Security) -> io::Result<bool> {
    let plan = Plan {
        codec: CodecKind::Raw,
        ..Plan::new(&args)
    };
    let layers = layers(&args);
    let scheme = if args.transport == Transport::Wss {
        "wss"
    } else {
        "ws"
    };
    Side::of_socket(&args).run(
        |at| start_server(at, &args, security.server),
        |at| run_client(*at, &args, plan, security.client),
        |at| {
            format!(
                "WebSocket echo server ({} reactors{layers}) on {scheme}://{at}/; Ctrl-C to stop",
                args.reactors
            )
        },
        |at| {
            format!(
                "WebSocket echo server on {scheme}://{at}/ ({} reactors{layers}); client: {} connections x {} messages, {} in flight each, 1..={} bytes",
                args.reactors, args.connections, args.messages, args.window, args.max_size
            )
        },
    )
}
