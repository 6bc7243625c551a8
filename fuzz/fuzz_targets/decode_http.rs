#![no_main]
// The HTTP/1.x decoder: the first byte picks requests or responses, the rest is the stream. It
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
    fuzz_decode(Protocol::Http, dir, rest);
});
