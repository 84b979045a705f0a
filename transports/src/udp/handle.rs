//! Reaching a datagram session from other threads; see [`DatagramHandle`].

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use getty_codec::Encoder;

use crate::handle::HandleCore;
use crate::udp::DatagramSession;
use crate::Error;

/// A `Send + Clone` handle to one datagram session (an endpoint or a connected client),
/// for other threads; get it with [`DatagramSession::handle`] inside a callback. It works as
/// [`SessionHandle`](crate::SessionHandle) does: every call is a job in the reactor's queue,
/// so writes from one handle keep their order, a closing or closed session answers
/// [`Error::Closed`], and a session above its high watermark answers
/// [`Error::Backpressure`]. Writes still in the reactor's queue when the session crossed
/// its high watermark wait until it drains to the low one, as a stream's do. A datagram the
/// session cannot take when the reactor applies the write (past the hard bound with writes
/// the handler made itself, say) is dropped, counted in `dropped_out` and reported to
/// `on_error`; the session carries on.
///
/// ```
/// use std::net::SocketAddr;
/// use std::sync::mpsc;
/// use getty_codec::{Bytes, RawCodec};
/// use getty_reactor::Reactor;
/// use getty_transports::udp::{DatagramHandle, DatagramHandler, DatagramSession, UdpEndpoint};
///
/// /// Hands the endpoint's handle to another thread when it opens.
/// struct Publish(mpsc::Sender<DatagramHandle<RawCodec>>);
/// impl DatagramHandler<RawCodec> for Publish {
///     fn on_open(&mut self, s: &mut DatagramSession<RawCodec>) -> std::io::Result<()> {
///         let _ = self.0.send(s.handle().expect("inside a callback"));
///         Ok(())
///     }
///     fn on_message(&mut self, _: &mut DatagramSession<RawCodec>, _: Bytes, _: SocketAddr) {}
/// }
///
/// let (tx, rx) = mpsc::channel();
/// let endpoint = UdpEndpoint::bind("127.0.0.1:0", move |_| Ok((RawCodec, Publish(tx.clone())))).unwrap();
/// let reactor = Reactor::start_thread("r", move |r| { r.spawn(endpoint); Ok(()) }).unwrap();
///
/// let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// let handle = rx.recv().unwrap();
/// handle.write_to(peer.local_addr().unwrap(), Bytes::from_static(b"from afar")).unwrap();
/// let mut buf = [0u8; 64];
/// let (n, _) = peer.recv_from(&mut buf).unwrap();
/// assert_eq!(&buf[..n], b"from afar");
/// reactor.handle().shutdown();
/// reactor.join().unwrap();
/// assert!(handle.is_closed());
/// ```
pub struct DatagramHandle<C, A = SocketAddr> {
    core: HandleCore,
    _types: PhantomData<fn() -> (C, A)>,
}

impl<C, A> Clone for DatagramHandle<C, A> {
    fn clone(&self) -> Self {
        DatagramHandle {
            core: self.core.clone(),
            _types: PhantomData,
        }
    }
}

impl<C, A> DatagramHandle<C, A>
where
    C: 'static,
    A: Clone + PartialEq + std::fmt::Debug + Send + 'static,
{
    pub(crate) fn new(core: HandleCore) -> Self {
        DatagramHandle {
            core,
            _types: PhantomData,
        }
    }

    /// The session's id.
    ///
    /// See the [type-level example](DatagramHandle).
    pub fn session_id(&self) -> u64 {
        self.core.session_id()
    }

    /// Queues `message` as one datagram to the connected peer (connected sessions only).
    ///
    /// See the [type-level example](DatagramHandle).
    pub fn write<T>(&self, message: T) -> Result<(), Error>
    where
        C: Encoder<T>,
        T: Send + 'static,
    {
        let bytes = C::encoded_len_hint(&message);
        self.core
            .post(bytes, move |s: &mut DatagramSession<C, A>| s.write(message))
    }

    /// Queues `message` as one datagram to `peer`.
    ///
    /// See the [type-level example](DatagramHandle).
    pub fn write_to<T>(&self, peer: A, message: T) -> Result<(), Error>
    where
        C: Encoder<T>,
        T: Send + 'static,
    {
        let bytes = C::encoded_len_hint(&message);
        self.core.post(bytes, move |s: &mut DatagramSession<C, A>| {
            s.write_to(peer, message)
        })
    }

    /// Queues raw bytes as one datagram to `peer`, bypassing the codec.
    ///
    /// See the [type-level example](DatagramHandle).
    pub fn write_bytes_to(&self, peer: A, bytes: Bytes) -> Result<(), Error> {
        self.core
            .post(bytes.len(), move |s: &mut DatagramSession<C, A>| {
                s.write_bytes_to(peer, bytes)
            })
    }

    /// Closes the session gracefully once the writes posted before this call are sent.
    /// Writes from any handle fail with [`Error::Closed`] from now on.
    ///
    /// See the [type-level example](DatagramHandle).
    pub fn close(&self) -> Result<(), Error> {
        self.core.close()
    }

    /// Ends the session now, discarding what is queued.
    ///
    /// See the [type-level example](DatagramHandle).
    pub fn abort(&self) -> Result<(), Error> {
        self.core.abort()
    }

    /// True once the session has ended.
    ///
    /// See the [type-level example](DatagramHandle).
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// False while the session is above its high watermark.
    ///
    /// See the [type-level example](DatagramHandle).
    pub fn is_writable(&self) -> bool {
        self.core.is_writable()
    }

    /// Waits until the session is writable again (below its high watermark, with room for
    /// another write in flight), for at most `timeout`.
    ///
    /// See the [type-level example](DatagramHandle).
    pub fn wait_writable(&self, timeout: Duration) -> Result<(), Error> {
        self.core.wait_writable(timeout)
    }
}
