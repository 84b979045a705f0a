//! Filters: sans-IO byte transforms that sit between a session's socket and its codec.
//!
//! A codec cuts a byte stream into messages; a filter changes the byte stream itself —
//! compression ([`DeflateFilter`]), encryption (TLS). Both are pure functions of buffers: a
//! filter never touches a socket, so it is tested and fuzzed without one.
//!
//! ```text
//!   socket ──wire──▶ filter.decode ──plain──▶ codec.decode ──▶ on_message
//!   socket ◀──wire── filter.encode/flush ◀──plain── codec.encode ◀── session.write
//! ```
//!
//! Filters stack ([`Layered`]): the session's stack is fixed when it opens, for example TLS
//! nearest the wire, deflate above it, the codec on top.
//!
//! A transport drives a filter like this: wire bytes it reads go to [`Filter::decode`] (again
//! while it makes progress: a filter may stop early at the plain-bytes limit it was given);
//! plain bytes the session queued go to [`Filter::encode`]; at the end of each write batch
//! [`Filter::flush`] emits whatever the filter holds back (a deflate sync flush, TLS
//! handshake messages), and the transport writes the wire buffer to the socket.
//!
//! ```
//! # #[cfg(feature = "deflate")] {
//! use bytes::BytesMut;
//! use getty_codec::filter::{DeflateFilter, Filter};
//! use getty_codec::Compression;
//!
//! let (mut a, mut b) = (DeflateFilter::new(Compression::Default), DeflateFilter::new(Compression::Default));
//! let mut wire = BytesMut::new();
//! a.encode(b"hello hello hello", &mut wire).unwrap();
//! a.flush(&mut wire).unwrap(); // every message is decodable by the peer at once
//! let mut plain = BytesMut::new();
//! b.decode(&mut wire, &mut plain, 1024).unwrap();
//! assert_eq!(&plain[..], b"hello hello hello");
//! # }
//! ```

#![cfg_attr(not(feature = "deflate"), doc = "[`DeflateFilter`]: crate#features")]

use std::any::{Any, TypeId};
use std::fmt;

use bytes::BytesMut;

#[cfg(feature = "deflate")]
mod deflate;
mod layered;
#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "deflate")]
pub use deflate::{Compression, DeflateFilter};
pub use layered::Layered;
#[cfg(feature = "tls")]
pub use tls::TlsFilter;

/// A sans-IO transform of a byte stream in both directions (wire ⇄ plain).
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::filter::{Filter, FilterError};
///
/// /// XORs every byte with a key: a toy cipher.
/// struct Xor(u8);
/// impl Filter for Xor {
///     fn decode(&mut self, wire: &mut BytesMut, plain: &mut BytesMut, limit: usize) -> Result<(), FilterError> {
///         let n = wire.len().min(limit);
///         plain.extend(wire.split_to(n).iter().map(|b| b ^ self.0));
///         Ok(())
///     }
///     fn encode(&mut self, plain: &[u8], wire: &mut BytesMut) -> Result<(), FilterError> {
///         wire.extend(plain.iter().map(|b| b ^ self.0));
///         Ok(())
///     }
///     fn flush(&mut self, _wire: &mut BytesMut) -> Result<(), FilterError> { Ok(()) }
/// }
///
/// let mut wire = BytesMut::new();
/// Xor(7).encode(b"abc", &mut wire).unwrap();
/// let mut plain = BytesMut::new();
/// Xor(7).decode(&mut wire, &mut plain, 2).unwrap(); // at most 2 plain bytes this time
/// assert_eq!((&plain[..], &wire[..]), (&b"ab"[..], &[b'c' ^ 7][..]));
/// ```
pub trait Filter: Any {
    /// Wire → plain: consumes bytes from the front of `wire` (what it cannot use yet stays
    /// there) and appends plain bytes to `plain`, at most about `limit` of them — the bound
    /// that keeps a decompression bomb from inflating into unbounded memory. The transport
    /// calls again, after its codec has taken messages out of `plain`, while this makes
    /// progress.
    fn decode(
        &mut self,
        wire: &mut BytesMut,
        plain: &mut BytesMut,
        limit: usize,
    ) -> Result<(), FilterError>;

    /// Plain → wire: takes all of `plain`, appending what is ready to `wire`. The filter
    /// may hold some back until [`flush`](Filter::flush).
    fn encode(&mut self, plain: &[u8], wire: &mut BytesMut) -> Result<(), FilterError>;

    /// The end of a write batch: appends everything held back to `wire`, so the peer can
    /// decode every byte encoded so far. Appends nothing when there is nothing new (an idle
    /// session's flush costs no bytes).
    fn flush(&mut self, wire: &mut BytesMut) -> Result<(), FilterError>;

    /// True while the filter is still negotiating (a TLS handshake): plain bytes wait.
    fn is_handshaking(&self) -> bool {
        false
    }

    /// The session is closing: appends a closing message if the protocol has one (TLS
    /// `close_notify`).
    fn close(&mut self, wire: &mut BytesMut) {
        let _ = wire;
    }

    /// False once the filter can carry no more plain bytes out: after `decode` failed in a
    /// way that ends its protocol (TLS has queued a fatal alert, which `flush` still
    /// writes). The transport then sends only what `flush` and `close` append, and drops
    /// the session's queued output. A filter whose directions are independent (deflate)
    /// keeps sending, so replies to good input still go out.
    fn can_send(&self) -> bool {
        true
    }

    /// Whether the peer has ended its stream the protocol's way (TLS `close_notify`): no
    /// more input will come, whatever the socket still carries. `None` for a protocol with
    /// no closing message (deflate): there only the socket's EOF ends the input, and an EOF
    /// before `Some(true)` is a truncation.
    fn peer_closed(&self) -> Option<bool> {
        None
    }

    /// True when wire bytes the filter has taken have not all come out as plain bytes: the
    /// input stopped inside one of the protocol's units (a deflate batch before the end of
    /// its sync flush). The transport reports an EOF then as a truncation, as it does for a
    /// codec frame cut short. A filter that tells its end another way
    /// ([`peer_closed`](Filter::peer_closed)) may leave this false.
    fn holds_partial_input(&self) -> bool {
        false
    }

    /// The filter inside this one whose type is `type_id` (a stack looks through its layers;
    /// a plain filter has none). Used by `<dyn Filter>::layer`.
    fn find(&self, type_id: TypeId) -> Option<&dyn Any> {
        let _ = type_id;
        None
    }
}

impl dyn Filter {
    /// The filter of type `T` in this stack.
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use getty_codec::filter::{Filter, FilterError};
    /// # /// XORs every byte with a key (the toy filter of [`Filter`]'s example).
    /// # struct Xor(u8);
    /// # impl Filter for Xor {
    /// #     fn decode(&mut self, wire: &mut BytesMut, plain: &mut BytesMut, limit: usize) -> Result<(), FilterError> {
    /// #         let n = wire.len().min(limit);
    /// #         plain.extend(wire.split_to(n).iter().map(|b| b ^ self.0));
    /// #         Ok(())
    /// #     }
    /// #     fn encode(&mut self, plain: &[u8], wire: &mut BytesMut) -> Result<(), FilterError> {
    /// #         wire.extend(plain.iter().map(|b| b ^ self.0));
    /// #         Ok(())
    /// #     }
    /// #     fn flush(&mut self, _wire: &mut BytesMut) -> Result<(), FilterError> { Ok(()) }
    /// # }
    /// # struct Other;
    /// # impl Filter for Other {
    /// #     fn decode(&mut self, _: &mut BytesMut, _: &mut BytesMut, _: usize) -> Result<(), FilterError> { Ok(()) }
    /// #     fn encode(&mut self, _: &[u8], _: &mut BytesMut) -> Result<(), FilterError> { Ok(()) }
    /// #     fn flush(&mut self, _: &mut BytesMut) -> Result<(), FilterError> { Ok(()) }
    /// # }
    /// use getty_codec::filter::Layered;
    ///
    /// let stack: Box<dyn Filter> = Box::new(Layered::new(Xor(1), Xor(2)));
    /// assert_eq!(stack.layer::<Xor>().map(|x| x.0), Some(1)); // the one nearest the wire
    /// assert!(stack.layer::<Other>().is_none());
    /// ```
    pub fn layer<T: Filter>(&self) -> Option<&T> {
        let this: &dyn Any = self;
        this.downcast_ref()
            .or_else(|| self.find(TypeId::of::<T>())?.downcast_ref())
    }
}

/// Why a filter refused its input or could not go on.
///
/// ```
/// use getty_codec::filter::{FilterError, FilterErrorKind};
/// let e = FilterError::malformed("deflate", "invalid block type");
/// assert_eq!(e.kind(), FilterErrorKind::Malformed);
/// assert_eq!(e.to_string(), "deflate: invalid block type");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    kind: FilterErrorKind,
    detail: String,
}

/// The class of a [`FilterError`].
///
/// ```
/// use getty_codec::filter::{FilterError, FilterErrorKind};
/// assert_eq!(FilterError::handshake("tls", "unknown CA").kind(), FilterErrorKind::Handshake);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterErrorKind {
    /// The peer's bytes do not follow the filter's format (corrupt deflate data, a TLS
    /// record that fails to decrypt, plaintext sent to a TLS port).
    Malformed,
    /// Negotiation failed: the peer's certificate is not trusted, no common protocol, ...
    Handshake,
    /// The filter failed on its own side (a compressor error).
    Internal,
}

impl FilterError {
    /// The peer's bytes are malformed for `filter`; `detail` says how.
    ///
    /// ```
    /// let e = getty_codec::filter::FilterError::malformed("tls", "bad record");
    /// assert_eq!(e.to_string(), "tls: bad record");
    /// ```
    pub fn malformed(filter: &str, detail: impl fmt::Display) -> Self {
        Self::new(FilterErrorKind::Malformed, filter, detail)
    }

    /// `filter`'s negotiation failed; `detail` says why.
    ///
    /// ```
    /// let e = getty_codec::filter::FilterError::handshake("tls", "certificate expired");
    /// assert_eq!(e.to_string(), "tls: certificate expired");
    /// ```
    pub fn handshake(filter: &str, detail: impl fmt::Display) -> Self {
        Self::new(FilterErrorKind::Handshake, filter, detail)
    }

    /// `filter` failed on its own side.
    ///
    /// ```
    /// let e = getty_codec::filter::FilterError::internal("deflate", "stream error");
    /// assert_eq!(e.to_string(), "deflate: stream error");
    /// ```
    pub fn internal(filter: &str, detail: impl fmt::Display) -> Self {
        Self::new(FilterErrorKind::Internal, filter, detail)
    }

    fn new(kind: FilterErrorKind, filter: &str, detail: impl fmt::Display) -> Self {
        FilterError {
            kind,
            detail: format!("{filter}: {detail}"),
        }
    }

    /// The class of this error.
    ///
    /// ```
    /// use getty_codec::filter::{FilterError, FilterErrorKind};
    /// assert_eq!(FilterError::internal("x", "y").kind(), FilterErrorKind::Internal);
    /// ```
    pub fn kind(&self) -> FilterErrorKind {
        self.kind
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for FilterError {}

/// A boxed filter is a filter, so stacks of filters chosen at run time compose with
/// [`Layered`].
///
/// ```
/// # use bytes::BytesMut;
/// # use getty_codec::filter::{Filter, FilterError};
/// # /// XORs every byte with a key (the toy filter of [`Filter`]'s example).
/// # struct Xor(u8);
/// # impl Filter for Xor {
/// #     fn decode(&mut self, wire: &mut BytesMut, plain: &mut BytesMut, limit: usize) -> Result<(), FilterError> {
/// #         let n = wire.len().min(limit);
/// #         plain.extend(wire.split_to(n).iter().map(|b| b ^ self.0));
/// #         Ok(())
/// #     }
/// #     fn encode(&mut self, plain: &[u8], wire: &mut BytesMut) -> Result<(), FilterError> {
/// #         wire.extend(plain.iter().map(|b| b ^ self.0));
/// #         Ok(())
/// #     }
/// #     fn flush(&mut self, _wire: &mut BytesMut) -> Result<(), FilterError> { Ok(()) }
/// # }
/// use getty_codec::filter::Layered;
///
/// // Chosen at run time: a boxed filter under a concrete one.
/// let lower: Box<dyn Filter> = Box::new(Xor(1));
/// let mut stack = Layered::new(lower, Xor(2));
/// let mut wire = BytesMut::new();
/// stack.encode(b"a", &mut wire).unwrap();
/// assert_eq!(&wire[..], [b'a' ^ 3]);
/// let boxed: Box<dyn Filter> = Box::new(stack);
/// assert_eq!(boxed.layer::<Xor>().map(|x| x.0), Some(1)); // found through the box
/// ```
impl Filter for Box<dyn Filter> {
    fn decode(
        &mut self,
        wire: &mut BytesMut,
        plain: &mut BytesMut,
        limit: usize,
    ) -> Result<(), FilterError> {
        (**self).decode(wire, plain, limit)
    }

    fn encode(&mut self, plain: &[u8], wire: &mut BytesMut) -> Result<(), FilterError> {
        (**self).encode(plain, wire)
    }

    fn flush(&mut self, wire: &mut BytesMut) -> Result<(), FilterError> {
        (**self).flush(wire)
    }

    fn is_handshaking(&self) -> bool {
        (**self).is_handshaking()
    }

    fn close(&mut self, wire: &mut BytesMut) {
        (**self).close(wire)
    }

    fn can_send(&self) -> bool {
        (**self).can_send()
    }

    fn peer_closed(&self) -> Option<bool> {
        (**self).peer_closed()
    }

    fn holds_partial_input(&self) -> bool {
        (**self).holds_partial_input()
    }

    fn find(&self, type_id: TypeId) -> Option<&dyn Any> {
        // Look at the boxed filter itself, not at the box.
        let inner: &dyn Any = &**self;
        if inner.type_id() == type_id {
            return Some(inner);
        }
        (**self).find(type_id)
    }
}
