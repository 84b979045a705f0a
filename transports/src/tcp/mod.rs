//! TCP: [`TcpServer`] accepts, [`TcpClient`] dials and redials; both run the same session
//! state machine and call a setup hook ([`Setup`]) for every new connection.

mod client;
mod pool;
mod server;

pub use crate::listener::CloseSessions;
pub use client::{TcpClient, TcpClientBuilder, TcpClientCommand, TcpClientKind};
pub use pool::TcpServerPool;
pub use server::{adopt, ServerHandle, TcpServer, TcpServerBuilder, TcpServerKind};

/// The setup hook's view of a new connection (also `getty_transports::Setup`).
pub use crate::setup::Setup;
