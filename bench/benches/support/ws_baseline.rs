//! The hand-written WebSocket echo: the lean baseline getty-rs's WebSocket server is measured
//! against (issue 16). No framework: [`WsEcho`] is a [`Protocol`] of the hand-written mio
//! loop in `mio_echo.rs` (one `read` per readiness, answers appended to one output buffer,
//! one `write` per batch), and does the least a correct echo of the bench's traffic needs:
//!
//! - the upgrade: it waits for the request head, takes its `Sec-WebSocket-Key` and answers
//!   `101` with the matching `Sec-WebSocket-Accept` (nothing else of the request is checked);
//! - then frames, parsed where they lie in the read buffer: a client frame must be masked,
//!   with no reserved bit set; a data frame (binary, text or continuation) goes back with the
//!   same first byte, its payload copied to the output and unmasked there (eight bytes at a
//!   time); a ping is answered by a pong, a pong ignored, a close echoed, and the next input
//!   ends the connection.
//!
//! What it leaves out, and getty-rs does not: UTF-8 checks of text, reassembly of fragmented
//! messages, message and frame size limits (beyond the 64-bit length), permessage-deflate,
//! control-frame rules, close codes, a handler that owns each message. None of it changes
//! what the bench's client sends (whole masked binary frames) or gets back.

use std::io;

use tungstenite::handshake::derive_accept_key;

use crate::mio_echo::Protocol;

/// A longer request head is refused.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// The header name whose value the accept key is derived from (compared ignoring case).
const KEY_HEADER: &[u8] = b"sec-websocket-key:";

/// Opcodes of RFC 6455 section 5.2.
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// One connection of the hand-written WebSocket echo: before the upgrade, echoing, closed.
#[derive(Debug, Default)]
pub struct WsEcho {
    upgraded: bool,
    /// The peer's close frame was echoed: nothing more is answered.
    closed: bool,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Protocol for WsEcho {
    /// Answers the upgrade request, then frames.
    fn answer(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        if self.closed {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        let mut used = 0;
        if !self.upgraded {
            used = match upgrade(input, out)? {
                Some(head) => head,
                None => return Ok(0),
            };
            self.upgraded = true;
        }
        while let Some((frame, close)) = echo_frame(&input[used..], out)? {
            used += frame;
            if close {
                self.closed = true;
                break;
            }
        }
        Ok(used)
    }
}

/// Answers the upgrade request at the front of `input` once its head is whole; returns the
/// head's length.
fn upgrade(input: &[u8], out: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") else {
        if input.len() > MAX_REQUEST_HEAD {
            return Err(invalid("the upgrade request head is too long"));
        }
        return Ok(None);
    };
    let head = &input[..end];
    let key = head
        .split(|&b| b == b'\n')
        .find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let name = line.get(..KEY_HEADER.len())?;
            name.eq_ignore_ascii_case(KEY_HEADER)
                .then(|| line[KEY_HEADER.len()..].trim_ascii())
        })
        .ok_or_else(|| invalid("no Sec-WebSocket-Key"))?;
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(derive_accept_key(key).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    Ok(Some(end + 4))
}

/// Answers the client frame at the front of `input` if all of it is there; returns its
/// length, and whether it was a close.
fn echo_frame(input: &[u8], out: &mut Vec<u8>) -> io::Result<Option<(usize, bool)>> {
    let [first, second, ..] = *input else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(invalid("reserved bits set"));
    }
    if second & 0x80 == 0 {
        return Err(invalid("unmasked frame from a client"));
    }
    let (len_field, len) = match second & 0x7f {
        126 => match input.get(2..4) {
            Some(b) => (2, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(None),
        },
        127 => match input.get(2..10) {
            Some(b) => (8, u64::from_be_bytes(b.try_into().expect("eight bytes"))),
            None => return Ok(None),
        },
        short => (0, u64::from(short)),
    };
    let header: usize = 2 + len_field + 4;
    let len = usize::try_from(len).map_err(|_| invalid("frame too long"))?;
    let Some(total) = header.checked_add(len).filter(|&t| t <= input.len()) else {
        return Ok(None);
    };
    let mask: [u8; 4] = input[header - 4..header].try_into().expect("four bytes");
    let payload = &input[header..total];
    let opcode = first & 0x0f;
    match opcode {
        OP_PONG => {}
        OP_PING => put_frame(0x80 | OP_PONG, payload, mask, out),
        _ => put_frame(first, payload, mask, out),
    }
    Ok(Some((total, opcode == OP_CLOSE)))
}

/// Appends an unmasked server frame with `first` as its first byte and the masked `payload`
/// unmasked.
fn put_frame(first: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    let len = payload.len();
    out.reserve(10 + len);
    out.push(first);
    match len {
        0..126 => out.push(len as u8),
        126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    unmask_into(payload, mask, out);
}

/// Appends `payload` XORed with `mask`: one copy, then eight bytes at a time in place.
fn unmask_into(payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(payload);
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = out[start..].chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("eight bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    // The chunks were whole words, so the rest starts at the mask's first byte.
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *b ^= m;
    }
}
