//! A TCP server on a pool of reactors: one `SO_REUSEPORT` listener per reactor, so the
//! kernel spreads connections over them and each session lives on one reactor for life.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use getty_codec::Decoder;
use getty_reactor::ReactorPool;

use crate::session::Handler;
use crate::tcp::{ServerHandle, Setup, TcpServerBuilder};
use crate::Metrics;

/// A TCP server running on several reactors; see [`TcpServerBuilder::start_pool`].
///
/// ```
/// use getty_codec::{Bytes, LengthFieldCodec};
/// use getty_transports::{tcp::TcpServer, Handler, Session};
///
/// struct Echo;
/// impl Handler<LengthFieldCodec> for Echo {
///     fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
///         let _ = s.write(msg);
///     }
/// }
///
/// // Two reactors; `make_setup` runs once per reactor, so handlers are per reactor.
/// let server = TcpServer::builder()
///     .start_pool(2, "127.0.0.1:0", |_reactor| |_setup: &mut _| Ok((LengthFieldCodec::default(), Echo)))
///     .unwrap();
/// let _client = std::net::TcpStream::connect(server.local_addr()).unwrap();
/// assert_eq!(server.metrics().unwrap().len(), 2);
/// server.shutdown();
/// server.join().unwrap();
/// ```
pub struct TcpServerPool {
    reactors: ReactorPool,
    local_addr: SocketAddr,
    servers: Vec<ServerHandle>,
}

impl TcpServerBuilder {
    /// Starts `reactors` reactor threads, each with its own listener on `addr` (bound with
    /// `SO_REUSEPORT`; port 0 picks one port for all). `make_setup(i)` makes reactor `i`'s
    /// setup hook, so handlers (and anything they share) are per reactor.
    ///
    /// See [`TcpServerPool`].
    pub fn start_pool<A, M, F, C, H>(
        self,
        reactors: usize,
        addr: A,
        make_setup: M,
    ) -> io::Result<TcpServerPool>
    where
        A: ToSocketAddrs,
        M: Fn(usize) -> F + Send + Sync + 'static,
        F: FnMut(&mut Setup<'_>) -> io::Result<(C, H)> + 'static,
        C: Decoder + 'static,
        H: Handler<C>,
    {
        let first = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing")
        })?;
        let builder = self.reuse_port(true);
        // Reactor 0 may bind port 0; the others then bind the port it got.
        let bound = Arc::new(Mutex::new(first));
        let servers = Arc::new(Mutex::new(Vec::new()));
        let (bound_in, servers_in) = (bound.clone(), servers.clone());
        let pool = ReactorPool::start(reactors, move |index, reactor| {
            let at = *bound_in.lock().unwrap_or_else(|p| p.into_inner());
            let server = builder.clone().bind(at, make_setup(index))?;
            *bound_in.lock().unwrap_or_else(|p| p.into_inner()) = server.local_addr();
            let id = reactor.spawn(server);
            servers_in
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(ServerHandle::new(reactor.handle(), id));
            Ok(())
        })?;
        let local_addr = *bound.lock().unwrap_or_else(|p| p.into_inner());
        let servers = std::mem::take(&mut *servers.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(TcpServerPool {
            reactors: pool,
            local_addr,
            servers,
        })
    }
}

impl TcpServerPool {
    /// The address every reactor listens on.
    ///
    /// See the [type-level example](TcpServerPool).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The listener of each reactor, in reactor order.
    ///
    /// See the [type-level example](TcpServerPool).
    pub fn servers(&self) -> &[ServerHandle] {
        &self.servers
    }

    /// The reactors.
    ///
    /// See the [type-level example](TcpServerPool).
    pub fn reactors(&self) -> &ReactorPool {
        &self.reactors
    }

    /// A metrics snapshot of each reactor, in reactor order (sum them with
    /// [`Metrics::add`]).
    ///
    /// See the [type-level example](TcpServerPool).
    pub fn metrics(&self) -> io::Result<Vec<Metrics>> {
        self.reactors.handles().iter().map(Metrics::of).collect()
    }

    /// Stops every reactor now: listeners close, sessions get `on_close`.
    ///
    /// See the [type-level example](TcpServerPool).
    pub fn shutdown(&self) {
        self.reactors.shutdown();
    }

    /// Stops accepting and gives sessions up to `grace` to flush, then closes the rest.
    ///
    /// See the [type-level example](TcpServerPool).
    pub fn shutdown_graceful(&self, grace: Duration) {
        self.reactors.shutdown_graceful(grace);
    }

    /// Waits for every reactor thread to end.
    ///
    /// See the [type-level example](TcpServerPool).
    pub fn join(self) -> io::Result<()> {
        self.reactors.join()
    }
}
