#![no_main]
// The secured channel (Noise NNpsk0): forged handshakes never yield plaintext, tampered
// records never decrypt to other bytes, a failed channel stays failed.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tcpclone::fuzz::secure_channel(data);
});
