//! A command as the server receives it: arguments read on demand from the frame it came in.

use super::value::put_array_of_bulks;
use super::*;

/// One command from a client: its arguments, the command's name first, read from the frame
/// it arrived in.
///
/// ```
/// use bytes::BytesMut;
/// use getty_codec::{Decoded, Decoder, RespCodec};
///
/// let mut wire = BytesMut::from(&b"SET  k\tv\r\n"[..]);
/// let Decoded::Frame(cmd) = RespCodec::default().decode(&mut wire).unwrap() else { panic!() };
/// assert_eq!(cmd.len(), 3);
/// assert!(cmd.is_inline());
/// assert_eq!(cmd.arg(2), Some(&b"v"[..]));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RespCommand {
    /// The whole array (headers included), or the inline line without its terminator.
    pub(super) frame: Bytes,
    pub(super) argc: u32,
    pub(super) inline: bool,
}

impl RespCommand {
    /// The number of arguments, the command's name included (never 0).
    ///
    /// ```
    /// use getty_codec::RespCommand;
    /// assert_eq!(RespCommand::from_args([&b"PING"[..]]).len(), 1);
    /// ```
    #[allow(clippy::len_without_is_empty)] // a decoded command is never empty
    pub fn len(&self) -> usize {
        self.argc as usize
    }

    /// The first argument: the command's name, as the client wrote it (any case).
    ///
    /// ```
    /// use getty_codec::RespCommand;
    /// assert_eq!(RespCommand::from_args([&b"get"[..], b"k"]).name(), Some(&b"get"[..]));
    /// ```
    pub fn name(&self) -> Option<&[u8]> {
        self.args().next()
    }

    /// The arguments in order, the name first; each a slice of the frame.
    ///
    /// ```
    /// use getty_codec::RespCommand;
    /// let cmd = RespCommand::from_args([&b"DEL"[..], b"a", b"b"]);
    /// assert_eq!(cmd.args().skip(1).collect::<Vec<_>>(), [&b"a"[..], b"b"]);
    /// ```
    pub fn args(&self) -> RespArgs<'_> {
        RespArgs {
            rest: if self.inline {
                &self.frame[..]
            } else {
                // Skip the `*N\r\n` header (validated when decoded).
                let header_end = memchr_newline(&self.frame).map_or(0, |i| i + 1);
                &self.frame[header_end..]
            },
            left: self.argc,
            inline: self.inline,
        }
    }

    /// The `index`th argument (0 is the name), if there is one.
    ///
    /// ```
    /// use getty_codec::RespCommand;
    /// let cmd = RespCommand::from_args([&b"GET"[..], b"k"]);
    /// assert_eq!(cmd.arg(1), Some(&b"k"[..]));
    /// assert_eq!(cmd.arg(2), None);
    /// ```
    pub fn arg(&self, index: usize) -> Option<&[u8]> {
        self.args().nth(index)
    }

    /// The `index`th argument as a zero-copy [`Bytes`] view of the frame: keeping it keeps
    /// the frame alive (for a small command, the slab it was copied into), so a store that
    /// keeps values for long should copy them instead.
    ///
    /// ```
    /// use getty_codec::RespCommand;
    /// let cmd = RespCommand::from_args([&b"ECHO"[..], b"hi"]);
    /// assert_eq!(cmd.arg_bytes(1).unwrap(), "hi");
    /// ```
    pub fn arg_bytes(&self, index: usize) -> Option<Bytes> {
        self.arg(index).map(|arg| self.frame.slice_ref(arg))
    }

    /// Whether the command arrived inline (a line of words) rather than as an array.
    ///
    /// ```
    /// use getty_codec::RespCommand;
    /// assert!(!RespCommand::from_args([&b"PING"[..]]).is_inline());
    /// ```
    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// The bytes the command arrived in: the whole array with its headers, or the inline
    /// line without its terminator.
    ///
    /// ```
    /// use getty_codec::RespCommand;
    /// assert_eq!(RespCommand::from_args([&b"PING"[..]]).frame(), &b"*1\r\n$4\r\nPING\r\n"[..]);
    /// ```
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// A command made of `args` (at least one), framed as a client sends it: an array of
    /// bulk strings. For clients and tests.
    ///
    /// # Panics
    ///
    /// If `args` is empty.
    ///
    /// ```
    /// use getty_codec::RespCommand;
    /// let cmd = RespCommand::from_args(["SET", "k", "v"].map(str::as_bytes));
    /// assert_eq!(cmd.len(), 3);
    /// assert_eq!(cmd.arg(2), Some(&b"v"[..]));
    /// ```
    pub fn from_args<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> RespCommand {
        let args: Vec<&[u8]> = args.into_iter().collect();
        assert!(!args.is_empty(), "a command has at least its name");
        let mut frame = BytesMut::new();
        put_array_of_bulks(&args, &mut frame);
        RespCommand {
            frame: frame.freeze(),
            argc: args.len() as u32,
            inline: false,
        }
    }
}

impl fmt::Debug for RespCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.args().map(|arg| arg.escape_ascii().to_string()))
            .finish()
    }
}

/// The arguments of a [`RespCommand`], in order (from [`RespCommand::args`]).
///
/// ```
/// use getty_codec::RespCommand;
/// let cmd = RespCommand::from_args([&b"MGET"[..], b"a", b"b"]);
/// let mut args = cmd.args();
/// assert_eq!(args.len(), 3);
/// args.next();
/// assert_eq!(args.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct RespArgs<'a> {
    rest: &'a [u8],
    left: u32,
    inline: bool,
}

impl<'a> Iterator for RespArgs<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        if self.inline {
            let start = self.rest.iter().position(|&b| b != b' ' && b != b'\t')?;
            let rest = &self.rest[start..];
            let len = rest
                .iter()
                .position(|&b| b == b' ' || b == b'\t')
                .unwrap_or(rest.len());
            let (word, rest) = rest.split_at(len);
            self.rest = rest;
            return Some(word);
        }
        // `$len\r\n<bytes>\r\n`, validated when the frame was decoded.
        let newline = memchr_newline(self.rest)?;
        let len = parse_int(&self.rest[1..newline - 1])? as usize;
        let body = &self.rest[newline + 1..];
        let (arg, rest) = body.split_at(len);
        self.rest = &rest[2..];
        Some(arg)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for RespArgs<'_> {}
