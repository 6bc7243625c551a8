#![no_main]
// A TPACKET_V3 ring block (as the kernel hands it to a capture worker) of arbitrary bytes:
// walking its frames must never panic or read outside the block.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tcpclone::fuzz::tpacket_block(data);
});
