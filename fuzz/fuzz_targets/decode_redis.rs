#![no_main]
// The Redis RESP2/RESP3 decoder: the first byte picks commands or replies, the rest is the stream. It
// must never panic, and decoding the stream whole or in pieces must give the same messages.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tcpclone::fuzz::decode_redis(data);
});
