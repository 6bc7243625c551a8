#![no_main]
// The fleet recording format's decoder (tcpcopy --record/--from): never panics on any bytes, and
// every decoded message re-encodes to records that decode the same.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tcpcopy::fleet::wire::fuzz_decode(data);
});
