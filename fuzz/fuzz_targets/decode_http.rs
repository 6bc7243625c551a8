#![no_main]
// The HTTP/1.x decoder: the first byte picks requests or responses, the rest is the stream. It
// must never panic, and decoding the stream whole or in pieces must give the same messages.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tcpclone::fuzz::decode_http(data);
});
