#![no_main]
// Packet views and layout parsing over arbitrary bytes: must never panic.
// First byte picks the link type (see tcpclone::fuzz::packet_views).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tcpclone::fuzz::packet_views(data);
});
