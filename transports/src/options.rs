//! Session and socket options, with defaults that are safe to leave alone.

use std::io;
use std::time::Duration;

#[cfg(feature = "deflate")]
use getty_codec::Compression;
use socket2::{SockRef, TcpKeepalive};

/// The longest timeout the options keep: longer ones (`Duration::MAX` for "never", say)
/// are clamped, so that deadlines computed from them cannot overflow an `Instant`.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 86_400);

pub(crate) fn clamp_timeout(d: Duration) -> Duration {
    d.min(MAX_TIMEOUT)
}

/// Limits and timers of one session. Every field has a sane default; the setup hook may
/// change them per session.
///
/// ```
/// use std::time::Duration;
/// use getty_transports::SessionOptions;
///
/// let opts = SessionOptions::default()
///     .max_message_len(64 * 1024)
///     .cron_period(Some(Duration::from_secs(1)))
///     .read_idle_timeout(Some(Duration::from_secs(30)));
/// assert_eq!(opts.get_max_message_len(), 64 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    pub(crate) max_message_len: usize,
    pub(crate) cron_period: Option<Duration>,
    pub(crate) read_idle_timeout: Option<Duration>,
    pub(crate) write_stall_timeout: Duration,
    pub(crate) linger_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    #[cfg(feature = "deflate")]
    pub(crate) compression: Option<Compression>,
    pub(crate) high_watermark: usize,
    pub(crate) low_watermark: usize,
    pub(crate) max_outbound: usize,
    pub(crate) read_budget: usize,
    pub(crate) pause_reading_when_unwritable: bool,
}

impl Default for SessionOptions {
    /// 1 MiB messages; no cron and no idle timeout (an idle session costs no wake-ups);
    /// 30 s write stall; 2 s linger after a graceful close; 10 s handshake; no compression; watermarks 64 KiB / 32 KiB; 4 MiB hard outbound bound; 256 KiB read
    /// per session per loop turn.
    fn default() -> Self {
        SessionOptions {
            max_message_len: 1 << 20,
            cron_period: None,
            read_idle_timeout: None,
            write_stall_timeout: Duration::from_secs(30),
            linger_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            #[cfg(feature = "deflate")]
            compression: None,
            high_watermark: 64 * 1024,
            low_watermark: 32 * 1024,
            max_outbound: 4 << 20,
            read_budget: 256 * 1024,
            pause_reading_when_unwritable: true,
        }
    }
}

impl SessionOptions {
    /// The longest message the session accepts (default 1 MiB). On a byte stream (TCP,
    /// TLS, unix) it is the message as the handler gets it: the payload after the codec
    /// strips its framing (a `LengthFieldCodec`'s length header, a `LinesCodec` line's
    /// terminator). Where the transport delivers whole units before any codec sees them, it
    /// is the unit: a whole WebSocket message (after reassembly and inflating), or a UDP or
    /// unix datagram's payload. With `RawCodec` or `MessageCodec` (the usual codecs there)
    /// the two agree; a codec that frames inside each unit (a length header in every
    /// datagram) has its framing counted too, so allow for it.
    ///
    /// One byte more is refused as soon as the length is known (from a length header alone,
    /// before the body is buffered) with `Error::MessageTooLong { len, max }`, `max` being
    /// this limit: a stream session closes, a datagram is dropped and the endpoint goes
    /// on. A WebSocket session fails with the same error, and close code 1009.
    ///
    /// The codec decodes with this limit ([`Decoder::decode_limited`]). It replaces a
    /// `LengthFieldCodec`'s built-in 8 MiB frame limit, which is for the codec used on its
    /// own, so messages up to this length pass whatever the codec's default; a limit of the
    /// codec's own still applies after this one (a `LinesCodec`'s line length, 64 KiB by
    /// default; a `max_frame_length` set explicitly), with the codec's error. `RawCodec` and
    /// `MessageCodec` hand out stream bytes in messages of at most this length.
    ///
    /// [`Decoder::decode_limited`]: getty_codec::Decoder::decode_limited
    ///
    /// ```
    /// let o = getty_transports::SessionOptions::default().max_message_len(1024);
    /// assert_eq!(o.get_max_message_len(), 1024);
    /// ```
    pub fn max_message_len(mut self, len: usize) -> Self {
        self.max_message_len = len.max(1);
        self
    }

    /// How often `Handler::on_cron` runs (`None`: never, the default).
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = getty_transports::SessionOptions::default().cron_period(Some(Duration::from_millis(50)));
    /// assert_eq!(o.get_cron_period(), Some(Duration::from_millis(50)));
    /// ```
    pub fn cron_period(mut self, period: Option<Duration>) -> Self {
        self.cron_period = period.filter(|p| !p.is_zero()).map(clamp_timeout);
        self
    }

    /// Closes the session with `Error::ReadIdle` when nothing arrives for this long
    /// (`None`: never, the default).
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = getty_transports::SessionOptions::default().read_idle_timeout(Some(Duration::from_secs(5)));
    /// assert_eq!(o.get_read_idle_timeout(), Some(Duration::from_secs(5)));
    /// ```
    pub fn read_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.read_idle_timeout = timeout.filter(|t| !t.is_zero()).map(clamp_timeout);
        self
    }

    /// Closes the session with `Error::WriteStalled` when queued bytes make no progress for
    /// this long (default 30 s). It also bounds how long a graceful close waits to flush.
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = getty_transports::SessionOptions::default().write_stall_timeout(Duration::from_secs(1));
    /// assert_eq!(o.get_write_stall_timeout(), Duration::from_secs(1));
    /// ```
    pub fn write_stall_timeout(mut self, timeout: Duration) -> Self {
        self.write_stall_timeout = clamp_timeout(timeout.max(Duration::from_millis(1)));
        self
    }

    /// After a graceful close has flushed everything and shut down the write side, how
    /// long to keep reading (and discarding) until the peer's EOF before closing the socket
    /// (default 2 s). `on_close` runs when the lingering starts. Closing with unread input
    /// would reset the connection and lose replies the kernel had not sent yet.
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = getty_transports::SessionOptions::default().linger_timeout(Duration::from_millis(500));
    /// assert_eq!(o.get_linger_timeout(), Duration::from_millis(500));
    /// ```
    pub fn linger_timeout(mut self, timeout: Duration) -> Self {
        self.linger_timeout = clamp_timeout(timeout);
        self
    }

    /// See [`linger_timeout`](Self::linger_timeout).
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(getty_transports::SessionOptions::default().get_linger_timeout(), Duration::from_secs(2));
    /// ```
    pub fn get_linger_timeout(&self) -> Duration {
        self.linger_timeout
    }

    /// How long a handshake (TLS, WebSocket upgrade) may take before the session ends with
    /// `Error::HandshakeTimeout`: slow or silent peers (slowloris) cannot hold a session.
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = getty_transports::SessionOptions::default().handshake_timeout(Duration::from_secs(3));
    /// assert_eq!(o.get_handshake_timeout(), Duration::from_secs(3));
    /// ```
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = clamp_timeout(timeout);
        self
    }

    /// See [`handshake_timeout`](Self::handshake_timeout).
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(getty_transports::SessionOptions::default().get_handshake_timeout(), Duration::from_secs(10));
    /// ```
    pub fn get_handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Compresses the session's byte stream with one continuous deflate stream per
    /// direction (getty's compressed sessions); `None`, the default, sends bytes as they
    /// are. Both peers must agree. Each write batch is sync-flushed, so every message is
    /// decodable by the peer as it arrives.
    ///
    /// Only with the `deflate` feature. Nothing negotiates it (the peer must be configured
    /// alike), so a build without the feature has no such setting, rather than one that
    /// would be ignored and leave the two peers reading each other's bytes as garbage.
    /// A WebSocket session ignores it: it compresses messages (permessage-deflate, the
    /// `deflate` setting of its server or client builder), never its byte stream.
    ///
    /// ```
    /// use getty_codec::Compression;
    /// let o = getty_transports::SessionOptions::default().compression(Some(Compression::Fast));
    /// assert_eq!(o.get_compression(), Some(Compression::Fast));
    /// ```
    #[cfg(feature = "deflate")]
    pub fn compression(mut self, level: Option<Compression>) -> Self {
        self.compression = level;
        self
    }

    /// See [`compression`](Self::compression).
    ///
    /// ```
    /// assert_eq!(getty_transports::SessionOptions::default().get_compression(), None);
    /// ```
    #[cfg(feature = "deflate")]
    pub fn get_compression(&self) -> Option<Compression> {
        self.compression
    }

    /// Outbound watermarks: crossing `high` upwards tells the handler the session is no
    /// longer writable; draining to `low` tells it that it is again. `high` is at least 1
    /// and `low` is clamped below it, so that no queue is at both at once (a queue stuck
    /// at a `high` equal to `low` would be reported unwritable and writable in turn).
    ///
    /// ```
    /// let o = getty_transports::SessionOptions::default().watermarks(1024, 512);
    /// assert_eq!(o.get_watermarks(), (1024, 512));
    /// // Unwritable from 1,024 queued bytes, writable again at 1,023.
    /// let o = getty_transports::SessionOptions::default().watermarks(1024, 1024);
    /// assert_eq!(o.get_watermarks(), (1024, 1023));
    /// ```
    pub fn watermarks(mut self, high: usize, low: usize) -> Self {
        self.high_watermark = high.max(1);
        self.low_watermark = low.min(self.high_watermark - 1);
        self
    }

    /// The hard bound on queued outbound bytes: a write past it fails with
    /// `Error::QueueFull` and queues nothing (default 4 MiB).
    ///
    /// It counts bytes as they wait in the queue, framing included, the same whichever
    /// call queued them (`write`, `write_bytes`, a group's broadcast): a WebSocket message
    /// counts its frame, compressed when permessage-deflate compresses it (at write time);
    /// under `compression` (with the `deflate` feature) a message waits as written, to be
    /// compressed as the stream is flushed, so it counts uncompressed (and the
    /// compressor's output waiting for the socket counts too). A datagram counts its
    /// payload plus 64 bytes, so that empty ones are bounded as well.
    ///
    /// Replies to what the session reads rarely reach it: reading pauses at the high
    /// watermark (see [`pause_reading_when_unwritable`](Self::pause_reading_when_unwritable)).
    /// It bounds the writes a handler makes on its own — pushes, fan-out to slow consumers —
    /// which should watch [`Session::is_writable`](crate::Session::is_writable) or
    /// `on_writability_changed` and drop or defer rather than fail.
    ///
    /// ```
    /// let o = getty_transports::SessionOptions::default().max_outbound(1 << 20);
    /// assert_eq!(o.get_max_outbound(), 1 << 20);
    /// ```
    pub fn max_outbound(mut self, bytes: usize) -> Self {
        self.max_outbound = bytes;
        self
    }

    /// Flow control (on by default, for every stream transport): a session stops reading
    /// from its peer while its outbound queue is above the high watermark, and reads again
    /// once the queue has drained to the low one (netty's auto-read driven by its write
    /// watermarks). Bytes already read are still decoded and handed to the handler, and
    /// timers keep running; a paused session is not read-idle.
    ///
    /// A peer that sends faster than it reads (pipelining, then reading later) is thereby
    /// slowed down by TCP itself instead of filling the queue up to its hard bound
    /// ([`max_outbound`](Self::max_outbound)). Replies the framework writes by itself
    /// (WebSocket pongs and close frames, TLS records, compressed output) count too.
    ///
    /// Turn it off only for a handler that bounds its own output per message read; writes
    /// the handler makes on its own (pushes, fan-out) are bounded by `max_outbound` either way.
    /// A client that pipelines requests whose replies it must read before its own queue can
    /// drain (large requests to an echoing server, say) turns it off too: with both ends
    /// pausing, a backlog larger than both queues and both kernels' buffers leaves each end
    /// waiting for the other to read, until the write-stall timeout ends the session.
    ///
    /// ```
    /// let o = getty_transports::SessionOptions::default().pause_reading_when_unwritable(false);
    /// assert!(!o.get_pause_reading_when_unwritable());
    /// ```
    pub fn pause_reading_when_unwritable(mut self, on: bool) -> Self {
        self.pause_reading_when_unwritable = on;
        self
    }

    /// See [`pause_reading_when_unwritable`](Self::pause_reading_when_unwritable).
    ///
    /// ```
    /// assert!(getty_transports::SessionOptions::default().get_pause_reading_when_unwritable());
    /// ```
    pub fn get_pause_reading_when_unwritable(&self) -> bool {
        self.pause_reading_when_unwritable
    }

    /// Bytes one session may read in one loop turn before yielding to the others.
    ///
    /// ```
    /// let o = getty_transports::SessionOptions::default().read_budget(64 * 1024);
    /// assert_eq!(o.get_read_budget(), 64 * 1024);
    /// ```
    pub fn read_budget(mut self, bytes: usize) -> Self {
        self.read_budget = bytes.max(1);
        self
    }

    /// See [`max_message_len`](Self::max_message_len).
    ///
    /// ```
    /// assert_eq!(getty_transports::SessionOptions::default().get_max_message_len(), 1 << 20);
    /// ```
    pub fn get_max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// See [`cron_period`](Self::cron_period).
    ///
    /// ```
    /// assert_eq!(getty_transports::SessionOptions::default().get_cron_period(), None);
    /// ```
    pub fn get_cron_period(&self) -> Option<Duration> {
        self.cron_period
    }

    /// See [`read_idle_timeout`](Self::read_idle_timeout).
    ///
    /// ```
    /// assert_eq!(getty_transports::SessionOptions::default().get_read_idle_timeout(), None);
    /// ```
    pub fn get_read_idle_timeout(&self) -> Option<Duration> {
        self.read_idle_timeout
    }

    /// See [`write_stall_timeout`](Self::write_stall_timeout).
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(getty_transports::SessionOptions::default().get_write_stall_timeout(), Duration::from_secs(30));
    /// ```
    pub fn get_write_stall_timeout(&self) -> Duration {
        self.write_stall_timeout
    }

    /// See [`watermarks`](Self::watermarks): `(high, low)`.
    ///
    /// ```
    /// assert_eq!(getty_transports::SessionOptions::default().get_watermarks(), (65536, 32768));
    /// ```
    pub fn get_watermarks(&self) -> (usize, usize) {
        (self.high_watermark, self.low_watermark)
    }

    /// See [`max_outbound`](Self::max_outbound).
    ///
    /// ```
    /// assert_eq!(getty_transports::SessionOptions::default().get_max_outbound(), 4 << 20);
    /// ```
    pub fn get_max_outbound(&self) -> usize {
        self.max_outbound
    }

    /// See [`read_budget`](Self::read_budget).
    ///
    /// ```
    /// assert_eq!(getty_transports::SessionOptions::default().get_read_budget(), 256 * 1024);
    /// ```
    pub fn get_read_budget(&self) -> usize {
        self.read_budget
    }
}

/// Socket options applied to every accepted or dialled TCP connection (a unix stream
/// socket takes only the buffer sizes).
///
/// ```
/// use std::time::Duration;
/// use getty_transports::SocketOptions;
///
/// let opts = SocketOptions::default()
///     .nodelay(true)
///     .keepalive(Some(Duration::from_secs(30)))
///     .recv_buffer_size(Some(256 * 1024));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    nodelay: bool,
    keepalive: Option<Duration>,
    recv_buffer_size: Option<usize>,
    send_buffer_size: Option<usize>,
}

impl Default for SocketOptions {
    /// TCP_NODELAY on; keepalive probes after 60 s idle; the kernel's buffer sizes.
    fn default() -> Self {
        SocketOptions {
            nodelay: true,
            keepalive: Some(Duration::from_secs(60)),
            recv_buffer_size: None,
            send_buffer_size: None,
        }
    }
}

impl SocketOptions {
    /// TCP_NODELAY (default on: latency over batching; the session already coalesces writes).
    ///
    /// ```
    /// let o = getty_transports::SocketOptions::default().nodelay(false);
    /// ```
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// SO_KEEPALIVE with this idle time before the first probe (`None`: off).
    ///
    /// ```
    /// let o = getty_transports::SocketOptions::default().keepalive(None);
    /// ```
    pub fn keepalive(mut self, idle: Option<Duration>) -> Self {
        self.keepalive = idle;
        self
    }

    /// SO_RCVBUF (`None`: the kernel's default and auto-tuning).
    ///
    /// ```
    /// let o = getty_transports::SocketOptions::default().recv_buffer_size(Some(1 << 20));
    /// ```
    pub fn recv_buffer_size(mut self, bytes: Option<usize>) -> Self {
        self.recv_buffer_size = bytes;
        self
    }

    /// SO_SNDBUF (`None`: the kernel's default and auto-tuning).
    ///
    /// ```
    /// let o = getty_transports::SocketOptions::default().send_buffer_size(Some(1 << 20));
    /// ```
    pub fn send_buffer_size(mut self, bytes: Option<usize>) -> Self {
        self.send_buffer_size = bytes;
        self
    }

    /// Applies the options to a connected socket.
    ///
    /// ```
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    /// getty_transports::SocketOptions::default()
    ///     .apply(socket2::SockRef::from(&stream))
    ///     .unwrap();
    /// assert!(stream.nodelay().unwrap());
    /// ```
    pub fn apply(&self, socket: SockRef<'_>) -> io::Result<()> {
        socket.set_tcp_nodelay(self.nodelay)?;
        match self.keepalive {
            Some(idle) => socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?,
            None => socket.set_keepalive(false)?,
        }
        self.apply_buffer_sizes(socket)
    }

    /// Applies the buffer sizes only: what a unix socket takes of these options.
    pub(crate) fn apply_buffer_sizes(&self, socket: SockRef<'_>) -> io::Result<()> {
        if let Some(n) = self.recv_buffer_size {
            socket.set_recv_buffer_size(n)?;
        }
        if let Some(n) = self.send_buffer_size {
            socket.set_send_buffer_size(n)?;
        }
        Ok(())
    }
}
