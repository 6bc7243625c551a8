#![no_main]
// The report's exchange layer: a burst of requests and two response streams (production's, the
// target's) as any bytes, any protocol, cut or whole. It must never panic, pair responses in
// order, and find no difference between a response and itself.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tcpcopy::report::exchange::fuzz_exchange(data);
});
