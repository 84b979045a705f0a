//! The getty-rs reactor: one mio poll loop driving a slab of entries.
//!
//! This crate knows nothing of protocols. It owns:
//!
//! - a [`mio::Poll`] and a [`slab::Slab`] of **entries**. An entry is a state machine (a
//!   listener, a TCP session, a client that redials) that implements [`Entry`]; its slab key
//!   is its mio [`Token`].
//! - **timers** ([`Context::set_timer`]): a heap inside the loop. Idle timeouts, cron ticks,
//!   connect timeouts and write stalls are all timers; nothing ever sets a deadline on a
//!   socket, and an idle entry costs no wake-ups beyond its own timers.
//! - a **waker and command queue** ([`ReactorHandle`]) so that other threads can post work
//!   and stop the loop.
//! - **typed commands**: an entry names what it accepts ([`Entry::Command`]), and
//!   [`spawn`](Reactor::spawn) returns a [`Recipient`] typed by it, so sending an entry a
//!   command it does not take is a compile error.
//! - a **buffer pool** ([`BufPool`]) from which entries borrow read and write buffers only
//!   while they have bytes in flight.
//! - on unix, **stopping on SIGINT and SIGTERM** ([`Reactor::shutdown_on_signals`]): the
//!   poll itself watches for them (no thread), and the first starts a graceful shutdown.
//!
//! One turn of the loop: poll (sleeping until the next timer at the latest), dispatch every
//! event to its entry's [`Entry::on_ready`], run the entries that asked to be
//! [rescheduled](Context::reschedule) because they used up their read budget (fairness: one
//! busy connection cannot starve the others), then fire due timers. Entries are called one at
//! a time, each with a [`Context`] that lets it arm timers, spawn new entries and message
//! others; a call returns [`Status::Done`] to remove its entry.
//!
//! A panic in an entry's call (or a posted job) ends that entry (or job) alone: it hears
//! [`Entry::on_panic`] and is removed, and the loop carries on; see [`PanicPolicy`] for
//! that and for aborting instead.
//!
//! The loop is single-threaded by design. To use more cores, run one reactor per core.
//!
//! ```
//! use std::time::Duration;
//! use getty_reactor::{Context, Entry, NoCommand, Ready, Reactor, Status};
//!
//! /// Ticks three times, then stops the reactor.
//! struct Ticker { left: u32 }
//!
//! impl Entry for Ticker {
//!     type Command = NoCommand; // nobody sends it anything
//!
//!     fn on_start(&mut self, cx: &mut Context<'_>) -> Status {
//!         cx.set_timer(Duration::from_millis(1), 0);
//!         Status::Continue
//!     }
//!     fn on_ready(&mut self, _: &mut Context<'_>, _: Ready) -> Status {
//!         Status::Continue // no socket here
//!     }
//!     fn on_timer(&mut self, cx: &mut Context<'_>, _tag: u64) -> Status {
//!         self.left -= 1;
//!         if self.left == 0 {
//!             cx.handle().shutdown();
//!             return Status::Done;
//!         }
//!         cx.set_timer(Duration::from_millis(1), 0);
//!         Status::Continue
//!     }
//! }
//!
//! let mut reactor = Reactor::new().unwrap();
//! reactor.spawn(Ticker { left: 3 });
//! reactor.run().unwrap();
//! ```

#![deny(missing_docs)]
#![deny(unreachable_pub)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(doc)]
use mio::Token;

mod context;
mod core;
mod current;
mod entry;
mod group;
mod handle;
mod metrics;
mod panic;
mod pool;
mod reactor;
mod reactor_pool;
mod ready;
mod recipient;
#[cfg(unix)]
mod signals;
mod timer;

pub use context::{with_context, Context, Spawner};
pub use current::{current, on_reactor_thread, wake};
pub use entry::{Entry, EntryId, NoCommand};
pub use group::GroupId;
pub use handle::ReactorHandle;
pub use metrics::{LatencyHistogram, LoopMetrics};
pub use panic::PanicPolicy;
pub use pool::{BufPool, CacheRequest};
pub use reactor::{Reactor, ReactorBuilder, ReactorThread};
pub use reactor_pool::ReactorPool;
pub use ready::Ready;
pub use recipient::Recipient;
#[cfg(unix)]
pub use signals::SignalShutdown;
pub use timer::TimerId;

/// Whether an entry stays in the reactor after a call.
///
/// ```
/// assert_ne!(getty_reactor::Status::Continue, getty_reactor::Status::Done);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Keep the entry.
    Continue,
    /// Remove and drop the entry (dropping a mio source deregisters and closes it).
    Done,
}
