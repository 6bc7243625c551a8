#![no_main]
// Placeholder until the owner of this target wires it to its library entry point.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = data;
});
