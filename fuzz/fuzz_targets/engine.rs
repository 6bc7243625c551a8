#![no_main]
// The session engine fed arbitrary captured segments, target reports and clock steps.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tcpcopy::engine::fuzz_engine(data);
});
