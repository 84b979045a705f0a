//! A WebSocket server's routes as a list of types, one per `route` call, so that the server
//! is `Send` exactly when every route's setup hook is (as a `TcpServer` is when its hook
//! is): a hook holding an `Rc` makes a server that is built on its reactor's thread.

use std::io;
use std::marker::PhantomData;

use getty_codec::Decoder;

use crate::session::Handler;
use crate::ws::server::{Chosen, NewSession, WsSetup};
use crate::ws::Ws;

/// A route's setup hook, with its codec and handler types erased from what it makes, so
/// that routes of one server may use different codecs and handlers.
pub trait Route {
    /// Runs the hook for a request to this route.
    fn setup(&mut self, setup: &mut WsSetup<'_>) -> io::Result<Box<dyn NewSession>>;
}

/// One route: its path and its setup hook.
pub(crate) struct RouteWith<F, C, H> {
    path: String,
    setup: F,
    _types: PhantomData<fn() -> (C, H)>,
}

impl<F, C, H> RouteWith<F, C, H> {
    pub(crate) fn new(path: String, setup: F) -> Self {
        RouteWith {
            path,
            setup,
            _types: PhantomData,
        }
    }
}

impl<F, C, H> Route for RouteWith<F, C, H>
where
    F: FnMut(&mut WsSetup<'_>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, Ws>,
{
    fn setup(&mut self, setup: &mut WsSetup<'_>) -> io::Result<Box<dyn NewSession>> {
        let (codec, handler) = (self.setup)(setup)?;
        Ok(Box::new(Chosen::new(codec, handler)))
    }
}

/// The routes of a server, in the order they were added.
pub trait Routes: 'static {
    /// The route of `path`: the first one added for it.
    fn find(&mut self, path: &str) -> Option<&mut dyn Route>;

    /// Whether a route serves `path`.
    fn serves(&self, path: &str) -> bool;

    /// The paths served, in order (for `Debug`).
    fn paths<'a>(&'a self, out: &mut Vec<&'a str>);
}

/// No route (yet): every request gets a `404`.
#[derive(Debug, Default)]
pub struct NoRoutes;

impl Routes for NoRoutes {
    fn find(&mut self, _path: &str) -> Option<&mut dyn Route> {
        None
    }

    fn serves(&self, _path: &str) -> bool {
        false
    }

    fn paths<'a>(&'a self, _out: &mut Vec<&'a str>) {}
}

/// The routes `R`, then one more.
pub struct Then<R, F, C, H> {
    before: R,
    last: RouteWith<F, C, H>,
}

impl<R, F, C, H> Then<R, F, C, H> {
    pub(crate) fn new(before: R, last: RouteWith<F, C, H>) -> Self {
        Then { before, last }
    }
}

impl<R, F, C, H> Routes for Then<R, F, C, H>
where
    R: Routes,
    F: FnMut(&mut WsSetup<'_>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, Ws>,
{
    fn find(&mut self, path: &str) -> Option<&mut dyn Route> {
        if self.before.serves(path) {
            return self.before.find(path);
        }
        (self.last.path == path).then_some(&mut self.last as &mut dyn Route)
    }

    fn serves(&self, path: &str) -> bool {
        self.last.path == path || self.before.serves(path)
    }

    fn paths<'a>(&'a self, out: &mut Vec<&'a str>) {
        self.before.paths(out);
        out.push(&self.last.path);
    }
}
