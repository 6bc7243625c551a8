#![no_main]
// The Redis RESP2/RESP3 decoder: the first byte picks commands or replies, the rest is the stream. It
// must never panic, and decoding the stream whole or in pieces must give the same messages.
use tcpclone::decode::{fuzz_decode, Direction, Protocol};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&dir, rest)) = data.split_first() else {
        return;
    };
    let dir = if dir & 1 == 0 {
        Direction::Request
    } else {
        Direction::Response
    };
    fuzz_decode(Protocol::Redis, dir, rest);
});
