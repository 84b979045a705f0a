//! Without the `deflate` feature: no compressor. [`Deflate`] has no values, so the
//! machine's deflate paths are there for the type checker only and can never run:
//! `Protocol::new` drops any settings, and the handshake never agrees to the extension.

use crate::ws::utf8::Utf8Validator;
use crate::ws::WsError;

/// Stands in for the engine; no value of it can exist.
#[derive(Debug)]
pub(crate) enum Deflate {}

impl Deflate {
    pub(crate) fn wants(&self, _len: usize) -> bool {
        match *self {}
    }

    pub(crate) fn compress(&mut self, _input: &[u8], _out: &mut Vec<u8>) -> Result<(), WsError> {
        match *self {}
    }

    pub(crate) fn forget_context(&mut self) {
        match *self {}
    }

    pub(crate) fn forget_last(&mut self) -> bool {
        match *self {}
    }

    pub(crate) fn sent_plain(&mut self) {
        match *self {}
    }

    pub(crate) fn inflate(
        &mut self,
        _input: &[u8],
        _out: &mut Vec<u8>,
        _max: usize,
        _utf8: Option<&mut Utf8Validator>,
    ) -> Result<(), WsError> {
        match *self {}
    }

    pub(crate) fn finish_message(
        &mut self,
        _out: &mut Vec<u8>,
        _max: usize,
        _utf8: Option<&mut Utf8Validator>,
    ) -> Result<(), WsError> {
        match *self {}
    }
}
