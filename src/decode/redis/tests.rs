use super::*;
use crate::decode::{decode_pieces, OwnedMessage};

fn limits() -> Limits {
    Limits::default()
}

/// Decodes `data` whole, at every split into two pieces and byte by byte; all must agree.
fn decode_all_splits(dir: Direction, data: &[u8]) -> Vec<OwnedMessage> {
    let run = |pieces: Vec<&[u8]>| {
        let mut d = RedisDecoder::new(dir, limits());
        let (msgs, err) = decode_pieces(&mut d, pieces);
        assert_eq!(err, None, "{}", String::from_utf8_lossy(data));
        msgs
    };
    let whole = run(vec![data]);
    for cut in 0..=data.len() {
        let (a, b) = data.split_at(cut);
        assert_eq!(run(vec![a, b]), whole, "split at {cut}");
    }
    assert_eq!(run(data.chunks(1).collect()), whole, "byte by byte");
    if dir == Direction::Response {
        assert_eq!(
            whole.iter().map(|m| m.wire_len).sum::<u64>(),
            data.len() as u64
        );
    }
    whole
}

fn summaries(m: &[OwnedMessage]) -> Vec<&str> {
    m.iter().map(|m| m.summary.as_str()).collect()
}

#[test]
fn commands_array_and_inline() {
    let data = b"*3\r\n$3\r\nset\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n\
*1\r\n$4\r\nPING\r\n\
\r\n\
hgetall  user:1\r\n\
get k\n\
*2\r\n$6\r\nclient\r\n$7\r\nsetname\r\n";
    let m = decode_all_splits(Direction::Request, data);
    assert_eq!(
        summaries(&m),
        [
            "req SET",
            "req PING",
            "req HGETALL",
            "req GET",
            "req CLIENT"
        ]
    );
    // The empty inline line is skipped but its bytes are accounted to nothing: offsets show it.
    assert_eq!(m[2].offset, m[1].offset + m[1].wire_len + 2);
}

#[test]
fn command_arguments() {
    let mut d = RedisDecoder::new(Direction::Request, limits());
    d.feed(b"*3\r\n$3\r\nset\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n");
    let m = d.poll_message().unwrap().unwrap();
    let Detail::Redis(det) = m.detail else {
        panic!("{m:?}")
    };
    let args: Vec<&[u8]> = det.args().collect();
    assert_eq!(args, [&b"set"[..], b"key", b"va\r\nl"]);
    assert_eq!(det.len(), 3);
    d.feed(b"PING\r\n");
    let m = d.poll_message().unwrap().unwrap();
    let Detail::Redis(det) = m.detail else {
        panic!("{m:?}")
    };
    assert_eq!(det.args().collect::<Vec<_>>(), [&b"PING"[..]]);
}

#[test]
fn every_resp2_and_resp3_reply_type() {
    let data = b"+OK\r\n\
-WRONGTYPE Operation against a key holding the wrong kind of value\r\n\
:-42\r\n\
$5\r\nhello\r\n\
$0\r\n\r\n\
$-1\r\n\
*-1\r\n\
*2\r\n$1\r\na\r\n*1\r\n:1\r\n\
_\r\n\
,3.14\r\n\
,-inf\r\n\
#t\r\n\
(3492890328409238509324850943850943825024385\r\n\
=15\r\ntxt:Some string\r\n\
%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n\
~2\r\n+a\r\n+b\r\n\
|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:2\r\n\
>3\r\n+message\r\n+chan\r\n$2\r\nhi\r\n\
!21\r\nSYNTAX invalid syntax\r\n\
-ERR unknown command\r\n\
*0\r\n";
    let m = decode_all_splits(Direction::Response, data);
    let classes: Vec<String> = m
        .iter()
        .map(|m| m.summary.rsplit(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(
        classes,
        [
            "simple",
            "WRONGTYPE",
            "integer",
            "bulk",
            "bulk",
            "null",
            "null",
            "array",
            "null",
            "double",
            "double",
            "boolean",
            "bignumber",
            "verbatim",
            "map",
            "set",
            // The attribute travels with the array it annotates.
            "array",
            "push",
            "SYNTAX",
            "ERR",
            "array"
        ]
    );
    assert!(m[18].summary.contains("BlobError"));
    assert_eq!(m[3].body, b"$5\r\nhello\r\n");
}

#[test]
fn error_classes() {
    let e = ResponseClass::Redis {
        kind: ReplyKind::Error,
        error_prefix: Some("WRONGTYPE"),
    };
    assert!(e.is_error());
    assert_eq!(e.class(), "WRONGTYPE");
    let ok = ResponseClass::Redis {
        kind: ReplyKind::Bulk,
        error_prefix: None,
    };
    assert!(!ok.is_error());
    assert_eq!(ok.class(), "bulk");
}

#[test]
fn malformed_streams_are_opaque() {
    for (dir, bad) in [
        (Direction::Response, &b"?what\r\n"[..]),
        (Direction::Response, b":12x\r\n"),
        (Direction::Response, b"$3\r\nabcd\r\n"),
        (Direction::Response, b"#x\r\n"),
        (Direction::Response, b"*-2\r\n"),
        (Direction::Response, b"=2\r\nab\r\n"),
        (Direction::Request, b"*1\r\n:1\r\n"),
        (Direction::Request, b"*0\r\n"),
        (Direction::Request, b"*1\r\n$-1\r\n"),
    ] {
        let mut d = RedisDecoder::new(dir, limits());
        let (_, err) = decode_pieces(&mut d, [bad]);
        assert!(
            matches!(err, Some(DecodeError::Malformed { .. })),
            "{err:?} for {}",
            String::from_utf8_lossy(bad)
        );
        assert!(d.is_opaque());
    }
}

#[test]
fn depth_size_and_truncation_bounds() {
    let deep = "*1\r\n".repeat(40) + ":1\r\n";
    let mut d = RedisDecoder::new(Direction::Response, limits());
    let (_, err) = decode_pieces(&mut d, [deep.as_bytes()]);
    assert!(
        matches!(err, Some(DecodeError::TooDeep { limit: 32, .. })),
        "{err:?}"
    );

    let small = Limits {
        max_buffered: 16,
        ..limits()
    };
    // A bulk string announced bigger than the limit fails before its bytes arrive.
    let mut d = RedisDecoder::new(Direction::Response, small);
    let (_, err) = decode_pieces(&mut d, [&b"$100\r\nab"[..]]);
    assert!(
        matches!(err, Some(DecodeError::TooLarge { limit: 16, .. })),
        "{err:?}"
    );

    let mut d = RedisDecoder::new(Direction::Response, limits());
    let (m, err) = decode_pieces(&mut d, [&b"+OK\r\n$5\r\nab"[..]]);
    assert_eq!(m.len(), 1);
    assert_eq!(
        err,
        Some(DecodeError::Truncated {
            protocol: Protocol::Redis,
            offset: 5
        })
    );
}

#[test]
fn big_value_fed_in_pieces_is_not_rescanned_each_time() {
    // A 1 MB bulk string fed 1 KB at a time: finishes quickly only if the decoder waits
    // for the announced length instead of rescanning from the start at every piece.
    let mut v = b"$1000000\r\n".to_vec();
    v.resize(v.len() + 1_000_000, b'x');
    v.extend_from_slice(b"\r\n");
    let mut d = RedisDecoder::new(
        Direction::Response,
        Limits {
            max_buffered: 2 << 20,
            ..limits()
        },
    );
    let (m, err) = decode_pieces(&mut d, v.chunks(1000));
    assert_eq!(err, None);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].wire_len, v.len() as u64);
    assert_eq!(m[0].body.len(), v.len());
}

#[test]
fn integers_span_the_64_bit_range() {
    assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
    assert_eq!(parse_int(b"9223372036854775808"), None);
    assert_eq!(parse_int(b"-"), None);
    assert_eq!(parse_int(b""), None);
}

#[test]
fn values_parse_into_trees() {
    let v = Value::parse(
        b"|1\r\n+ttl\r\n:3\r\n%2\r\n$4\r\nname\r\n=8\r\ntxt:ann!\r\n+tags\r\n~2\r\n#t\r\n_\r\n",
        8,
    )
    .unwrap();
    assert_eq!(
        v,
        Value::Attributed(
            vec![(Value::Simple(b"ttl"), Value::Integer(3))],
            Box::new(Value::Map(vec![
                (Value::Bulk(b"name"), Value::Verbatim(b"txt", b"ann!")),
                (
                    Value::Simple(b"tags"),
                    Value::Set(vec![Value::Boolean(true), Value::Null])
                ),
            ]))
        )
    );
    assert_eq!(
        Value::parse(b"*3\r\n$-1\r\n,1.5\r\n!3\r\nERR\r\n", 8).unwrap(),
        Value::Array(vec![
            Value::Null,
            Value::Double(b"1.5"),
            Value::BlobError(b"ERR")
        ])
    );
    assert_eq!(
        Value::parse(b"-WRONGTYPE x\r\n", 8).unwrap(),
        Value::Error(b"WRONGTYPE x")
    );
    assert!(matches!(
        Value::parse(b"$5\r\nab", 8),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        Value::parse(b"+a\r\n+b\r\n", 8),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        Value::parse(b"*1\r\n*1\r\n:1\r\n", 1),
        Err(DecodeError::TooDeep { .. })
    ));
}

// --- Long string replies: streamed, not buffered ---

/// `$len\r\n` + `len` bytes of a pattern + CRLF.
fn bulk(len: usize, t: u8) -> Vec<u8> {
    let mut v = format!("{}{len}\r\n", char::from(t)).into_bytes();
    v.extend((0..len).map(|i| b'a' + (i % 26) as u8));
    v.extend_from_slice(b"\r\n");
    v
}

#[test]
fn a_reply_past_the_buffer_limit_streams_in_bounded_memory() {
    // 3 MiB: three times max_buffered, which made the stream opaque when values were buffered.
    let mut data = bulk(3 << 20, b'$');
    let big = data.len();
    data.extend_from_slice(b"+OK\r\n");
    let lim = limits();
    let mut d = RedisDecoder::new(Direction::Response, lim);
    let mut msgs = Vec::new();
    let mut most_held = 0;
    for piece in data.chunks(16 << 10) {
        d.feed(piece);
        most_held = most_held.max(d.buf.capacity());
        while let Some(m) = d.poll_message().unwrap() {
            msgs.push(OwnedMessage::from(&m));
        }
    }
    assert!(!d.is_opaque());
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        msgs[0].summary,
        "resp Redis { kind: Bulk, error_prefix: None } bulk"
    );
    assert_eq!(
        (msgs[0].wire_len, msgs[0].body_len),
        (big as u64, big as u64)
    );
    assert_eq!(msgs[0].body, data[..lim.max_body]);
    assert_eq!(msgs[1].offset, big as u64);
    // The input buffer never held much more than one piece (a few pieces at most).
    assert!(most_held <= 64 << 10, "buffer grew to {most_held}");
    // Fed whole, the same messages (the stream is not held to max_buffered either).
    let mut w = RedisDecoder::new(Direction::Response, lim);
    let (whole, err) = decode_pieces(&mut w, [&data[..]]);
    assert_eq!((whole, err), (msgs, None));
}

#[test]
fn streamed_blobs_keep_their_checks_and_classes() {
    let small = Limits {
        max_body: 1024,
        ..limits()
    };
    // 1 MiB blob error and verbatim string, split into uneven pieces, agree with whole decoding.
    for t in [b'!', b'=', b'$'] {
        let mut data = bulk(1 << 20, t);
        if t == b'=' {
            data[10..14].copy_from_slice(b"txt:");
        }
        if t == b'!' {
            data[10..16].copy_from_slice(b"BIG e ");
        }
        let pieces: Vec<&[u8]> = data.chunks(999).collect();
        let (a, ea) = decode_pieces(&mut RedisDecoder::new(Direction::Response, small), pieces);
        let (b, eb) = decode_pieces(
            &mut RedisDecoder::new(Direction::Response, small),
            [&data[..]],
        );
        assert_eq!((&a, &ea), (&b, &eb), "type {}", char::from(t));
        assert_eq!(ea, None);
        assert_eq!(a[0].body.len(), 1024);
        if t == b'!' {
            assert!(a[0].summary.ends_with(" BIG"), "{}", a[0].summary);
        }
    }
    // A bad final CRLF, or a verbatim string without its colon, is malformed at the value's
    // offset, once the value is complete, in pieces as whole.
    for bad in [b"$".as_slice(), b"="] {
        let mut data = b"+OK\r\n".to_vec();
        data.extend(bulk(5000, bad[0]));
        let n = data.len();
        data[n - 1] = b'x';
        let pieces: Vec<&[u8]> = data.chunks(100).collect();
        let (a, ea) = decode_pieces(&mut RedisDecoder::new(Direction::Response, small), pieces);
        let (_, eb) = decode_pieces(
            &mut RedisDecoder::new(Direction::Response, small),
            [&data[..]],
        );
        assert_eq!(a.len(), 1);
        assert_eq!(ea, eb);
        assert!(
            matches!(
                ea,
                Some(DecodeError::Malformed {
                    what: "blob",
                    offset: 5,
                    ..
                })
            ),
            "{ea:?}"
        );
    }
    // Cut short: truncated at the value's offset.
    let data = bulk(5000, b'$');
    let (_, e) = decode_pieces(
        &mut RedisDecoder::new(Direction::Response, small),
        data[..3000].chunks(700),
    );
    assert_eq!(
        e,
        Some(DecodeError::Truncated {
            protocol: Protocol::Redis,
            offset: 0
        })
    );
}

#[test]
fn the_first_bytes_of_a_long_reply_say_its_class() {
    // What the exchange layer holds of a 1 MiB reply: its first 64 KiB.
    let data = bulk(1 << 20, b'$');
    for lim in [
        limits(),
        Limits {
            max_body: 4096,
            ..limits()
        },
    ] {
        let mut d = RedisDecoder::new(Direction::Response, lim);
        d.feed(&data[..64 << 10]);
        assert_eq!(d.poll_message().unwrap(), None);
        let m = d.poll_partial().expect("the reply's type is known");
        assert_eq!(
            m.summary,
            Summary::Response(ResponseClass::Redis {
                kind: ReplyKind::Bulk,
                error_prefix: None
            })
        );
        assert_eq!(m.body_len, 64 << 10);
        assert_eq!(m.body.len(), (64 << 10).min(lim.max_body));
    }
    // No type line yet, an attribute first, between replies, or a command: nothing to say.
    for (dir, bytes) in [
        (Direction::Response, &b"$1048"[..]),
        (Direction::Response, b"|1\r\n+a\r\n"),
        (Direction::Response, b"+OK\r\n"),
        (Direction::Request, b"*2\r\n$3\r\nGET\r\n"),
    ] {
        let mut d = RedisDecoder::new(dir, limits());
        d.feed(bytes);
        while let Ok(Some(_)) = d.poll_message() {}
        assert!(d.poll_partial().is_none(), "{bytes:?}");
    }
}

#[test]
fn null_lengths_are_read_as_the_scanner_reads_them() {
    // Found by the decode_redis fuzz target: `*-01` is a null array to the scanner; the value
    // tree and the reply class must agree.
    let data = b"*-01\r\n$-1\r\n";
    let msgs = decode_all_splits(Direction::Response, data);
    assert_eq!(msgs.len(), 2);
    for m in &msgs {
        assert!(m.summary.contains("Null"), "{}", m.summary);
        assert_eq!(Value::parse(&m.body, 8), Ok(Value::Null));
    }
}
