use proptest::prelude::*;

use super::*;
use crate::CodecErrorKind;

fn args_of(cmd: &RespCommand) -> Vec<Vec<u8>> {
    cmd.args().map(<[u8]>::to_vec).collect()
}

/// Every command in `wire`, decoded in one buffer; panics on an error.
fn decode_all(codec: &mut RespCodec, wire: &[u8]) -> (Vec<Vec<Vec<u8>>>, BytesMut) {
    let mut buf = BytesMut::from(wire);
    let mut commands = Vec::new();
    while let Decoded::Frame(cmd) = codec.decode(&mut buf).unwrap() {
        commands.push(args_of(&cmd));
    }
    (commands, buf)
}

fn strings(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

fn encoded(value: RespValue<'_>) -> Vec<u8> {
    let mut out = BytesMut::new();
    RespCodec::default().encode(value, &mut out).unwrap();
    out.to_vec()
}

#[test]
fn decodes_arrays_of_bulk_strings() {
    let wire = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n";
    let (commands, rest) = decode_all(&mut RespCodec::default(), wire);
    assert_eq!(commands, [strings(&["SET", "key", ""]), strings(&["PING"])]);
    assert!(rest.is_empty());
}

#[test]
fn bulk_strings_hold_any_bytes() {
    let wire = b"*2\r\n$4\r\nECHO\r\n$6\r\na\r\nb\x00c\r\n";
    let (commands, _) = decode_all(&mut RespCodec::default(), wire);
    assert_eq!(commands, [vec![b"ECHO".to_vec(), b"a\r\nb\x00c".to_vec()]]);
}

#[test]
fn decodes_inline_commands_split_on_spaces_and_tabs() {
    let wire = b"  set \t k  v\r\nPING\nGET k\r";
    let (commands, rest) = decode_all(&mut RespCodec::default(), wire);
    assert_eq!(commands, [strings(&["set", "k", "v"]), strings(&["PING"])]);
    assert_eq!(&rest[..], b"GET k\r", "an unterminated line waits");
}

#[test]
fn skips_empty_commands_like_redis() {
    let wire = b"\r\n \r\n*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n";
    let (commands, rest) = decode_all(&mut RespCodec::default(), wire);
    assert_eq!(commands, [strings(&["PING"])]);
    assert!(rest.is_empty());
}

#[test]
fn reports_the_frame_length_once_the_last_header_is_in() {
    let mut codec = RespCodec::default();
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n"[..]);
    // The second argument's header is not in yet: the length is unknown.
    assert_eq!(codec.decode(&mut buf).unwrap(), Decoded::NeedMore(None));
    buf.extend_from_slice(b"$100\r\nabc");
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Decoded::NeedMore(Some(13 + 6 + 100 + 2))
    );
    // Not the last argument: no length promised.
    let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$100\r\n"[..]);
    assert_eq!(
        RespCodec::default().decode(&mut buf).unwrap(),
        Decoded::NeedMore(None)
    );
}

#[test]
fn resumes_after_the_arguments_already_parsed() {
    let mut codec = RespCodec::default();
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\n"[..]);
    assert!(matches!(codec.decode(&mut buf), Ok(Decoded::NeedMore(_))));
    assert_eq!(
        codec.progress,
        Progress::Array {
            argc: 2,
            parsed: 1,
            end: 13
        }
    );
    buf.extend_from_slice(b"k\r\n");
    let Decoded::Frame(cmd) = codec.decode(&mut buf).unwrap() else {
        panic!("a whole command")
    };
    assert_eq!(args_of(&cmd), strings(&["GET", "k"]));
    assert_eq!(codec.progress, Progress::Start);
}

#[test]
fn a_huge_bulk_header_fails_the_session_limit_at_once() {
    let mut codec = RespCodec::default();
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$2147483647\r\n"[..]);
    let capacity = buf.capacity();
    let err = codec.decode_limited(&mut buf, 1 << 20).unwrap_err();
    assert_eq!(
        err.limit_exceeded(),
        Some((13 + 13 + 2147483647 + 2, 1 << 20))
    );
    assert_eq!(err.kind(), CodecErrorKind::FrameTooLong);
    assert_eq!(
        buf.capacity(),
        capacity,
        "nothing was reserved for the body"
    );
}

#[test]
fn the_session_limit_counts_the_whole_frame() {
    let wire = b"*1\r\n$4\r\nPING\r\n"; // 14 bytes
    let mut ok = BytesMut::from(&wire[..]);
    assert!(matches!(
        RespCodec::default().decode_limited(&mut ok, 14),
        Ok(Decoded::Frame(_))
    ));
    let mut over = BytesMut::from(&wire[..]);
    let err = RespCodec::default()
        .decode_limited(&mut over, 13)
        .unwrap_err();
    assert_eq!(err.limit_exceeded(), Some((14, 13)));
}

#[test]
fn too_many_arguments_for_the_limit_fail_from_the_array_header() {
    let mut buf = BytesMut::from(&b"*1000\r\n"[..]);
    let err = RespCodec::default()
        .decode_limited(&mut buf, 1000)
        .unwrap_err();
    assert_eq!(err.limit_exceeded(), Some((7 + 6000, 1000)));
    let mut buf = BytesMut::from(&b"*2000000\r\n"[..]);
    let err = RespCodec::default().decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), CodecErrorKind::Malformed);
}

#[test]
fn the_codec_limit_applies_outside_a_session() {
    let mut buf = BytesMut::from(&b"*1\r\n$100\r\n"[..]);
    let err = RespCodec::new(50).decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), CodecErrorKind::FrameTooLong);
    assert_eq!(err.limit_exceeded(), None);
}

#[test]
fn inline_commands_are_limited() {
    let mut long = BytesMut::from(vec![b'a'; MAX_INLINE_LEN + 2].as_slice());
    let err = RespCodec::default().decode(&mut long).unwrap_err();
    assert_eq!(err.kind(), CodecErrorKind::Malformed);
    assert!(err.to_string().contains("too big inline request"), "{err}");
    let mut line = BytesMut::from(&b"GET abcdef"[..]);
    let err = RespCodec::default()
        .decode_limited(&mut line, 8)
        .unwrap_err();
    assert_eq!(err.limit_exceeded(), Some((10, 8)));
    // A line of exactly the limit, with its terminator, passes.
    let mut line = BytesMut::from(&b"GET abcd\r\n"[..]);
    assert!(matches!(
        RespCodec::default().decode_limited(&mut line, 8),
        Ok(Decoded::Frame(_))
    ));
}

#[test]
fn malformed_headers_fail() {
    let cases: [&[u8]; 8] = [
        b"*x\r\n",
        b"*1\r\n:1\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$1x\r\n",
        b"*1\r\n$1\r\nab\r\n",
        b"*1\n",
        b"*1\r\n$\r\n",
        b"*11111111111111111111111111111111111",
    ];
    for wire in cases {
        let err = RespCodec::default()
            .decode(&mut BytesMut::from(wire))
            .unwrap_err();
        assert_eq!(
            err.kind(),
            CodecErrorKind::Malformed,
            "{:?}",
            wire.escape_ascii()
        );
    }
}

#[test]
fn reset_forgets_a_half_parsed_command() {
    let mut codec = RespCodec::default();
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n"[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Ok(Decoded::NeedMore(None))
    ));
    codec.reset();
    let (commands, _) = decode_all(&mut codec, b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(commands, [strings(&["PING"])]);
}

#[test]
fn command_accessors() {
    let (mut codec, mut buf) = (RespCodec::default(), BytesMut::from(&b"MGET a b\r\n"[..]));
    let Decoded::Frame(cmd) = codec.decode(&mut buf).unwrap() else {
        panic!("a command")
    };
    assert_eq!((cmd.len(), cmd.is_inline()), (3, true));
    assert_eq!(cmd.arg(2), Some(&b"b"[..]));
    assert_eq!(cmd.arg(3), None);
    assert_eq!(&cmd.arg_bytes(1).unwrap()[..], b"a");
    assert_eq!(format!("{cmd:?}"), r#"["MGET", "a", "b"]"#);
}

#[test]
fn encodes_every_reply_type() {
    assert_eq!(encoded(RespValue::Simple("OK")), b"+OK\r\n");
    assert_eq!(
        encoded(RespValue::Error("ERR unknown command")),
        b"-ERR unknown command\r\n"
    );
    assert_eq!(encoded(RespValue::Integer(0)), b":0\r\n");
    assert_eq!(
        encoded(RespValue::Integer(i64::MIN)),
        b":-9223372036854775808\r\n"
    );
    assert_eq!(encoded(RespValue::Bulk(b"")), b"$0\r\n\r\n");
    assert_eq!(encoded(RespValue::Null), b"$-1\r\n");
    assert_eq!(encoded(RespValue::NullArray), b"*-1\r\n");
    assert_eq!(encoded(RespValue::Array(&[])), b"*0\r\n");
    assert_eq!(
        encoded(RespValue::Array(&[
            RespValue::Integer(1),
            RespValue::Array(&[RespValue::Bulk(b"x")])
        ])),
        b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n"
    );
}

#[test]
fn refuses_line_breaks_in_lines_and_leaves_the_buffer() {
    let mut out = BytesMut::from(&b"kept"[..]);
    let mut codec = RespCodec::default();
    let nested = [RespValue::Bulk(b"ok"), RespValue::Error("a\rb")];
    for bad in [
        RespValue::Simple("a\nb"),
        RespValue::Error("x\r"),
        RespValue::Array(&nested),
    ] {
        let err = codec.encode(bad, &mut out).unwrap_err();
        assert_eq!(err.kind(), CodecErrorKind::Unencodable);
    }
    assert_eq!(&out[..], b"kept");
}

#[test]
fn an_inline_command_encodes_as_an_array() {
    let mut codec = RespCodec::default();
    let mut buf = BytesMut::from(&b"SET k v\r\n"[..]);
    let Decoded::Frame(cmd) = codec.decode(&mut buf).unwrap() else {
        panic!("a command")
    };
    let mut out = BytesMut::new();
    codec.encode(&cmd, &mut out).unwrap();
    assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
}

/// Arguments as a client might send them: any bytes, sometimes long.
fn command() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let arg = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..12),
        1 => proptest::collection::vec(any::<u8>(), 0..6000),
    ];
    proptest::collection::vec(arg, 1..6)
}

/// An inline command: words without spaces, tabs or line breaks.
fn inline_command() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let word = proptest::collection::vec(
        any::<u8>().prop_filter("no separators", |b| !b" \t\r\n".contains(b)),
        1..10,
    );
    // A line starting with `*` is an array's header, not an inline command.
    proptest::collection::vec(word, 1..5).prop_filter("not an array", |words| words[0][0] != b'*')
}

/// `wire` fed to one codec in pieces cut at `cuts`, as a stream transport would.
fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Vec<Vec<Vec<u8>>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.push(wire.len());
    cuts.sort_unstable();
    let (mut codec, mut buf, mut at) = (RespCodec::default(), BytesMut::new(), 0);
    let mut commands = Vec::new();
    for cut in cuts {
        buf.extend_from_slice(&wire[at..cut]);
        at = cut;
        while let Decoded::Frame(cmd) = codec.decode_limited(&mut buf, 1 << 20).unwrap() {
            commands.push(args_of(&cmd));
        }
    }
    assert!(buf.is_empty(), "every byte was consumed");
    commands
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encoded_commands_decode_back_however_split(
        commands in proptest::collection::vec((command(), any::<bool>()), 1..8),
        inline in proptest::collection::vec(inline_command(), 0..3),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut wire = BytesMut::new();
        let mut expected = Vec::new();
        for (args, as_values) in &commands {
            let slices: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            if *as_values {
                let values: Vec<RespValue<'_>> = slices.iter().map(|a| RespValue::Bulk(a)).collect();
                RespCodec::default().encode(RespValue::Array(&values), &mut wire).unwrap();
            } else {
                RespCodec::default().encode(&RespCommand::from_args(slices), &mut wire).unwrap();
            }
            expected.push(args.clone());
        }
        for words in &inline {
            wire.extend_from_slice(&words.join(&b' '));
            wire.extend_from_slice(b"\r\n");
            expected.push(words.clone());
        }
        prop_assert_eq!(decode_in_pieces(&wire, &cuts), expected);
    }
}
