use super::*;

use getty_codec::ws::{Config, Role};
use getty_codec::{
    small_copy_room, split_message, CodecError, Decoded, Decoder, Message, MessageCodec,
};
use proptest::prelude::*;

use crate::framing::{DecodeLimits, Framing, Next};
use crate::ws::{Keepalive, WsFraming, WsState};

/// A frame with the given first byte (FIN, RSV, opcode), masked with `mask` when given.
fn frame(first: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// [`MessageCodec`] as a codec that does not take copied messages: each message is cut
/// from the read buffer on its own, as before runs.
struct OneByOne(MessageCodec);

impl Decoder for OneByOne {
    type Item = Message;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Decoded<Message>, CodecError> {
        self.0.decode(src)
    }

    fn decode_message(
        &mut self,
        kind: MessageKind,
        payload: &mut BytesMut,
    ) -> Result<Message, CodecError> {
        self.0.decode_message(kind, payload)
    }

    fn decode_front_message(
        &mut self,
        kind: MessageKind,
        src: &mut BytesMut,
        payload: Range<usize>,
    ) -> Result<Message, CodecError> {
        self.0.decode_front_message(kind, src, payload)
    }
}

fn framing(role: Role, limit: usize) -> WsFraming {
    let config = Config {
        max_message_size: limit,
        max_frame_size: limit,
    };
    let protocol = Protocol::new(role, config, None);
    WsFraming::new(WsState::new(protocol, Keepalive::default(), "/".into()))
}

/// What one decode call answered.
#[derive(Debug, PartialEq)]
enum Answer {
    Message(Message),
    NeedMore(Option<usize>),
    Control,
    PeerClosed,
    Error(String),
}

/// Feeds `wire` to a framing in pieces cut at `cuts`, decoding after each piece until it
/// needs more, or until the call whose number `pauses` holds (the session paused: the next
/// piece comes all the same, as it would have been read before the pause). Returns every
/// answer and the control output.
fn drive<C: Decoder<Item = Message>>(
    mut codec: C,
    role: Role,
    limit: usize,
    wire: &[u8],
    cuts: &[usize],
    pauses: &[usize],
) -> (Vec<Answer>, Vec<u8>) {
    let mut framing = framing(role, limit);
    let mut input = BytesMut::new();
    let mut control = BytesMut::new();
    let mut answers = Vec::new();
    let mut calls = 0;
    let mut pieces: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    for &cut in cuts {
        let cut = cut.clamp(at, wire.len());
        pieces.push(&wire[at..cut]);
        at = cut;
    }
    pieces.push(&wire[at..]);
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        input.extend_from_slice(piece);
        loop {
            calls += 1;
            if i < last && pauses.contains(&calls) {
                break;
            }
            let limits = DecodeLimits {
                max_message_len: limit,
                above_high_watermark: false,
            };
            let answer = match framing.decode(&mut codec, &mut input, limits, &mut control) {
                Ok(Next::Message(m)) => Answer::Message(m),
                Ok(Next::NeedMore(n)) => Answer::NeedMore(n),
                Ok(Next::Control) => Answer::Control,
                Ok(Next::PeerClosed) => Answer::PeerClosed,
                Err(e) => Answer::Error(e.to_string()),
            };
            let done = !matches!(answer, Answer::Message(_) | Answer::Control);
            answers.push(answer);
            let ended = matches!(answers.last(), Some(Answer::PeerClosed | Answer::Error(_)));
            if ended {
                return (answers, control.to_vec());
            }
            if done {
                break;
            }
        }
    }
    assert!(!framing.holds_messages(), "messages left in the run");
    (answers, control.to_vec())
}

const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

/// One frame of a random stream: mostly small whole data frames (the ones runs take),
/// with frames around the run's room, control frames, fragments, RSV bits, the wrong
/// masking and text that is not UTF-8 among them.
fn any_frame(role: Role) -> impl Strategy<Value = Vec<u8>> {
    let firsts = prop::sample::select(vec![
        0x82u8, 0x82, 0x82, 0x81, 0x81, 0x02, 0x80, 0x89, 0x8a, 0x88, 0xc2,
    ]);
    let lens = prop_oneof![
        4 => 0usize..8,
        4 => 60usize..70,
        2 => 120usize..132,
        1 => 1000usize..1100,
        1 => 4080usize..4100,
        1 => Just(70_000),
    ];
    // Mostly as the role expects (a client's peer masks nothing), now and then not.
    let expected = role == Role::Server;
    let masked = prop::sample::select(vec![expected, expected, expected, expected, !expected]);
    (firsts, masked, lens, any::<u8>(), any::<bool>()).prop_map(
        |(first, masked, len, byte, ascii)| {
            let fill = if ascii { byte & 0x7f } else { byte };
            let len = if first & 0x08 != 0 { len.min(125) } else { len };
            let payload = if first == 0x88 {
                [&1000u16.to_be_bytes()[..], &vec![b'r'; len.min(120)]].concat()
            } else {
                vec![fill; len]
            };
            frame(first, masked.then_some(MASK), &payload)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Runs hand out what cutting each message on its own does: the same answers in the
    /// same order (messages, control frames, the need for more and its length, errors),
    /// and the same control output, however the stream is cut into reads and wherever
    /// delivery pauses.
    #[test]
    fn runs_answer_as_messages_taken_one_by_one(
        (role, frames) in prop::sample::select(vec![Role::Server, Role::Client])
            .prop_flat_map(|role| (Just(role), proptest::collection::vec(any_frame(role), 1..40))),
        cuts in proptest::collection::vec(0usize..80_000, 0..6),
        pauses in proptest::collection::vec(1usize..60, 0..6),
        limit in prop::sample::select(vec![100usize, 1050, 4090, 1 << 20]),
    ) {
        let wire: Vec<u8> = frames.concat();
        let mut cuts = cuts;
        cuts.sort_unstable();
        let (runs, runs_control) = drive(MessageCodec, role, limit, &wire, &cuts, &pauses);
        let (one_by_one, control) =
            drive(OneByOne(MessageCodec), role, limit, &wire, &cuts, &pauses);
        prop_assert_eq!(runs, one_by_one);
        // A client masks its pongs with fresh keys: only their sizes can match.
        if role == Role::Server {
            prop_assert_eq!(runs_control, control);
        } else {
            prop_assert_eq!(runs_control.len(), control.len());
        }
    }
}

/// A run copies its frames out in one piece smaller than [`COPY_BELOW`], so that a kept
/// message pins no more than a copy of its own would; the messages are views of that
/// piece, not of the read buffer; the rest of the read starts the next run.
#[test]
fn a_run_shares_one_small_copy_and_not_the_read_buffer() {
    let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 200]).collect();
    // A slab with no room yet, whatever ran on this thread before.
    let _filler = split_message(
        &mut BytesMut::from(&vec![0; small_copy_room()][..]),
        small_copy_room(),
    );
    let mut input = BytesMut::with_capacity(64 * 1024);
    for p in &payloads {
        input.extend_from_slice(&frame(0x82, Some(MASK), p));
    }
    let read_buffer = input.as_ptr_range();
    let mut protocol = Protocol::new(Role::Server, Config::default(), None);
    let mut run = Run::new();
    let mut got = Vec::new();
    let mut runs = 0;
    while let Some((kind, first)) = protocol.front_message(&mut input) {
        runs += 1;
        let (_, message) = run.take(&mut protocol, &mut input, kind, first);
        let start = message.as_ptr() as usize;
        let mut messages = vec![message];
        while let Some((_, message)) = run.pop() {
            messages.push(message);
        }
        let last = messages.last().unwrap();
        let end = last.as_ptr() as usize + last.len();
        assert!(
            end - start < COPY_BELOW,
            "a run spans {} bytes",
            end - start
        );
        for m in &messages {
            assert!(
                !read_buffer.contains(&m.as_ptr()),
                "a view of the read buffer"
            );
        }
        got.extend(messages);
    }
    assert!(input.is_empty());
    assert_eq!(got, payloads);
    // 206 bytes a frame: 19 fit in a run's room.
    assert_eq!(runs, 3);
}

/// A run stops at a frame it does not take (here a ping), which is left in the read
/// buffer as it came.
#[test]
fn a_run_stops_at_a_frame_it_does_not_take() {
    let mut input = BytesMut::new();
    for i in 0..40u8 {
        input.extend_from_slice(&frame(0x82, Some(MASK), &[i]));
    }
    let ping = frame(0x89, Some(MASK), b"ping");
    input.extend_from_slice(&ping);
    let mut protocol = Protocol::new(Role::Server, Config::default(), None);
    let mut run = Run::new();
    let (kind, first) = protocol.front_message(&mut input).unwrap();
    let (_, message) = run.take(&mut protocol, &mut input, kind, first);
    let mut got = vec![message];
    while let Some((kind, message)) = run.pop() {
        assert_eq!(kind, MessageKind::Binary);
        got.push(message);
    }
    let want: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i]).collect();
    assert_eq!(got, want);
    assert_eq!(&input[..], &ping[..]);
}

/// A run fills what the thread's slab of small copies has left before a new slab is
/// started, as messages copied one by one would: a slab left with room it never fills
/// would be kept for nothing by the messages in it (twice the heap for kept 64-byte
/// messages, a review measured).
#[test]
fn a_run_fills_the_room_its_slab_has_left() {
    let mut earlier = BytesMut::from(&[0u8; 3000][..]);
    let earlier = split_message(&mut earlier, 3000);
    let room = small_copy_room();
    assert!((1000..1100).contains(&room), "{room}");
    let mut input = BytesMut::new();
    for i in 0..40u8 {
        input.extend_from_slice(&frame(0x81, Some(MASK), &[b'a' + i % 26; 64]));
    }
    let mut protocol = Protocol::new(Role::Server, Config::default(), None);
    let mut run = Run::new();
    let (kind, first) = protocol.front_message(&mut input).unwrap();
    let (kind, message) = run.take(&mut protocol, &mut input, kind, first);
    assert_eq!(kind, MessageKind::Text);
    // Right behind the earlier message, in its slab.
    assert_eq!(message.as_ptr(), earlier.as_ptr().wrapping_add(3000));
    let mut taken = 1;
    while run.pop().is_some() {
        taken += 1;
    }
    // 64 bytes, then 70 a frame (6 of header): what the room holds, less than a frame left.
    assert_eq!(taken, 1 + (room - 64) / 70);
    assert!(small_copy_room() < 70, "{}", small_copy_room());
    // The next run starts a new slab.
    let (kind, first) = protocol.front_message(&mut input).unwrap();
    let (_, message) = run.take(&mut protocol, &mut input, kind, first);
    assert!(
        !(earlier.as_ptr_range().start..earlier.as_ptr().wrapping_add(4096))
            .contains(&message.as_ptr())
    );
}

/// Leaves this thread's slab of small copies with `room` bytes free (less than 4095).
fn set_slab_room(room: usize) {
    let copy = |len: usize| split_message(&mut BytesMut::from(&vec![0; len][..]), len);
    if small_copy_room() < room {
        // The slab used up, then one byte more: a new slab.
        copy(small_copy_room());
        copy(1);
    }
    copy(small_copy_room() - room);
    assert_eq!(small_copy_room(), room);
}

/// Empty messages fit in any room a slab has left, and copying one leaves the room as it
/// was: sized by a room shorter than a frame, every run took one empty message alone, again
/// and again (a review measured 2.5 times the CPU per message). A run that can hold nothing
/// after its first message in the slab's room takes a new slab instead.
#[test]
fn empty_messages_form_runs_whatever_room_the_slab_has_left() {
    for room in [0, 1, 5, 6, 4000] {
        set_slab_room(room);
        let mut input = BytesMut::new();
        for _ in 0..100 {
            input.extend_from_slice(&frame(0x82, Some(MASK), b""));
        }
        let mut protocol = Protocol::new(Role::Server, Config::default(), None);
        let mut run = Run::new();
        let (mut runs, mut taken) = (0, 0);
        while let Some((kind, first)) = protocol.front_message(&mut input) {
            runs += 1;
            let (_, message) = run.take(&mut protocol, &mut input, kind, first);
            assert!(message.is_empty());
            taken += 1;
            while let Some((_, message)) = run.pop() {
                assert!(message.is_empty());
                taken += 1;
            }
        }
        assert_eq!(taken, 100);
        // What the room holds, then a new slab for the rest.
        assert!(runs <= 2, "{runs} runs with the slab's room at {room}");
        assert!(input.is_empty());
    }
}
