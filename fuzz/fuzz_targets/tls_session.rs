#![no_main]
// The TLS record layer, handshake parsers, key log parser and session decryptor: no input may
// panic them.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tcpclone::fuzz::tls_session(data);
});
