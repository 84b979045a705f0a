//! The server every stream transport shares (TCP, unix sockets): an accept loop
//! ([`Acceptor`]) whose connections go through the setup hook and become sessions in the
//! server's group. The public servers wrap it with their own builders.

use std::io;
use std::marker::PhantomData;
use std::sync::Arc;

use getty_codec::Decoder;
use getty_reactor::{Context, Entry, Ready, Status};

use crate::commands::ServerCommand;
use crate::listener::{Acceptor, AddrOf, Listener, PlainOf};
use crate::session::Handler;
use crate::setup::{prepare, FilterFactory, Plan, Setup};
use crate::{SessionOptions, SocketOptions};

/// A listener's server: accepts and spawns a session per connection.
pub(crate) struct StreamServer<L: Listener, F, C, H> {
    pub(crate) acceptor: Acceptor<L>,
    setup: F,
    socket_options: SocketOptions,
    session_options: Arc<SessionOptions>,
    transport_filter: Option<FilterFactory>,
    _types: PhantomData<fn() -> (C, H)>,
}

impl<L, F, C, H> StreamServer<L, F, C, H>
where
    L: Listener,
    F: FnMut(&mut Setup<'_, AddrOf<L>>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, PlainOf<L>>,
{
    pub(crate) fn new(
        acceptor: Acceptor<L>,
        setup: F,
        socket_options: SocketOptions,
        session_options: SessionOptions,
        transport_filter: Option<FilterFactory>,
    ) -> Self {
        StreamServer {
            acceptor,
            setup,
            socket_options,
            session_options: Arc::new(session_options),
            transport_filter,
            _types: PhantomData,
        }
    }

    /// Accepts what is waiting; each connection becomes a session in the server's group.
    fn accept(&mut self, cx: &mut Context<'_>, resumed: bool) -> Status {
        let accepted = |cx: &mut Context<'_>, stream, peer| {
            let plan = Plan {
                socket_options: &self.socket_options,
                session_options: &self.session_options,
                transport_filter: self.transport_filter.as_ref(),
                #[cfg(all(feature = "ws", feature = "deflate"))]
                websocket: false,
            };
            let now = cx.now();
            let setup = &mut self.setup;
            // The setup hook is user code: a panic in it refuses this one connection (its
            // socket is dropped) and the server keeps accepting, as a netty
            // ChannelInitializer's exception closes only its own channel. The hook is
            // called again for the next connection: its state is the user's, and nothing
            // of the server's is mid-update while it runs.
            let session = cx.catch_panic("a server's setup hook", |_| {
                prepare(stream, peer, &plan, setup, now, None)
            });
            session.flatten()
        };
        if resumed {
            self.acceptor.on_timer(cx, accepted)
        } else {
            self.acceptor.on_ready(cx, accepted)
        }
    }
}

impl<L, F, C, H> Entry for StreamServer<L, F, C, H>
where
    L: Listener,
    F: FnMut(&mut Setup<'_, AddrOf<L>>) -> io::Result<(C, H)> + 'static,
    C: Decoder + 'static,
    H: Handler<C, PlainOf<L>>,
{
    type Command = ServerCommand;

    fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
        self.acceptor.start(cx)
    }

    fn on_ready(&mut self, cx: &mut Context<'_>, _ready: Ready) -> Status {
        self.accept(cx, false)
    }

    fn on_timer(&mut self, cx: &mut Context<'_>, _tag: u64) -> Status {
        self.accept(cx, true)
    }

    fn on_command(&mut self, cx: &mut Context<'_>, command: ServerCommand) -> Status {
        self.acceptor.on_command(cx, command)
    }
}

/// Implements `Entry` for a public server or client by handing every call to the generic
/// entry in its `inner` field; `command` is the inner entry's command type.
macro_rules! entry_by_inner {
    (impl<$($g:ident),*> for $ty:ty, command = $command:ty, where $($bound:tt)*) => {
        impl<$($g),*> getty_reactor::Entry for $ty
        where
            $($bound)*
        {
            type Command = $command;

            fn on_start(&mut self, cx: &mut getty_reactor::Context<'_>) -> getty_reactor::Status {
                self.inner.on_start(cx)
            }

            fn on_ready(
                &mut self,
                cx: &mut getty_reactor::Context<'_>,
                ready: getty_reactor::Ready,
            ) -> getty_reactor::Status {
                self.inner.on_ready(cx, ready)
            }

            fn on_timer(&mut self, cx: &mut getty_reactor::Context<'_>, tag: u64) -> getty_reactor::Status {
                self.inner.on_timer(cx, tag)
            }

            fn on_command(
                &mut self,
                cx: &mut getty_reactor::Context<'_>,
                command: $command,
            ) -> getty_reactor::Status {
                self.inner.on_command(cx, command)
            }

            fn on_shutdown(
                &mut self,
                cx: &mut getty_reactor::Context<'_>,
                deadline: Option<std::time::Instant>,
            ) -> getty_reactor::Status {
                self.inner.on_shutdown(cx, deadline)
            }

            fn on_panic(&mut self, cx: &mut getty_reactor::Context<'_>, message: &str) {
                self.inner.on_panic(cx, message)
            }
        }
    };
}
pub(crate) use entry_by_inner;
