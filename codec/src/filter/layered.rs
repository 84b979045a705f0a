//! Two filters stacked into one: the lower one nearest the wire.

use std::any::{Any, TypeId};

use bytes::BytesMut;

use super::{Filter, FilterError};

/// How many bytes may wait between the two layers on the way in: the lower layer stops
/// there until the upper one has taken them.
const MIDDLE_LIMIT: usize = 64 * 1024;

/// `lower` (nearest the wire) and `upper` (nearest the codec) as one filter, with a buffer
/// between them in each direction.
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::filter::{Filter, FilterError, Layered};
///
/// /// XORs every byte with a key: a toy cipher, so each layer's work shows on the wire.
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
/// let make = || Layered::new(Xor(0x0f), Xor(0xf0)); // the wire sees both keys
/// let (mut a, mut b) = (make(), make());
/// let mut wire = BytesMut::new();
/// a.encode(b"stacked", &mut wire).unwrap();
/// a.flush(&mut wire).unwrap();
/// assert_eq!(wire[0], b's' ^ 0xff);
/// let mut plain = BytesMut::new();
/// b.decode(&mut wire, &mut plain, 1 << 16).unwrap();
/// assert_eq!(&plain[..], b"stacked");
/// ```
pub struct Layered<L, U> {
    lower: L,
    upper: U,
    /// Bytes the lower layer decoded that the upper one has not taken yet.
    middle_in: BytesMut,
    /// Scratch for the upper layer's output on the way out (empty between calls).
    middle_out: BytesMut,
}

impl<L: Filter, U: Filter> Layered<L, U> {
    /// Stacks `upper` on `lower`.
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
    /// let mut stack = Layered::new(Xor(1), Xor(2));
    /// let mut wire = BytesMut::new();
    /// stack.encode(b"ab", &mut wire).unwrap();
    /// assert_eq!(&wire[..], [b'a' ^ 3, b'b' ^ 3]);
    /// ```
    pub fn new(lower: L, upper: U) -> Self {
        Layered {
            lower,
            upper,
            middle_in: BytesMut::new(),
            middle_out: BytesMut::new(),
        }
    }

    /// The layer nearest the wire.
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
    /// let stack = Layered::new(Xor(1), Xor(2));
    /// assert_eq!(stack.lower().0, 1);
    /// ```
    pub fn lower(&self) -> &L {
        &self.lower
    }

    /// The layer nearest the codec.
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
    /// let stack = Layered::new(Xor(1), Xor(2));
    /// assert_eq!(stack.upper().0, 2);
    /// ```
    pub fn upper(&self) -> &U {
        &self.upper
    }

    /// Passes what the upper layer produced down through the lower one.
    fn push_down(&mut self, wire: &mut BytesMut) -> Result<(), FilterError> {
        if !self.middle_out.is_empty() {
            self.lower.encode(&self.middle_out, wire)?;
            self.middle_out.clear();
        }
        Ok(())
    }
}

impl<L: Filter, U: Filter> Filter for Layered<L, U> {
    fn decode(
        &mut self,
        wire: &mut BytesMut,
        plain: &mut BytesMut,
        limit: usize,
    ) -> Result<(), FilterError> {
        let start = plain.len();
        loop {
            let before = (wire.len(), self.middle_in.len(), plain.len());
            let middle_room = MIDDLE_LIMIT.saturating_sub(self.middle_in.len());
            self.lower.decode(wire, &mut self.middle_in, middle_room)?;
            let room = limit.saturating_sub(plain.len() - start);
            self.upper.decode(&mut self.middle_in, plain, room)?;
            let stuck = before == (wire.len(), self.middle_in.len(), plain.len());
            if stuck || plain.len() - start >= limit {
                return Ok(());
            }
        }
    }

    fn encode(&mut self, plain: &[u8], wire: &mut BytesMut) -> Result<(), FilterError> {
        self.upper.encode(plain, &mut self.middle_out)?;
        self.push_down(wire)
    }

    fn can_send(&self) -> bool {
        self.lower.can_send() && self.upper.can_send()
    }

    fn holds_partial_input(&self) -> bool {
        self.lower.holds_partial_input()
            || !self.middle_in.is_empty()
            || self.upper.holds_partial_input()
    }

    fn peer_closed(&self) -> Option<bool> {
        self.lower.peer_closed().or(self.upper.peer_closed())
    }

    fn flush(&mut self, wire: &mut BytesMut) -> Result<(), FilterError> {
        self.upper.flush(&mut self.middle_out)?;
        self.push_down(wire)?;
        self.lower.flush(wire)
    }

    fn is_handshaking(&self) -> bool {
        self.lower.is_handshaking() || self.upper.is_handshaking()
    }

    fn close(&mut self, wire: &mut BytesMut) {
        self.upper.close(&mut self.middle_out);
        let _ = self.push_down(wire);
        self.lower.close(wire);
    }

    /// Looks nearest the wire first.
    fn find(&self, type_id: TypeId) -> Option<&dyn Any> {
        let lower: &dyn Any = &self.lower;
        let upper: &dyn Any = &self.upper;
        (lower.type_id() == type_id)
            .then_some(lower)
            .or_else(|| self.lower.find(type_id))
            .or_else(|| (upper.type_id() == type_id).then_some(upper))
            .or_else(|| self.upper.find(type_id))
    }
}
