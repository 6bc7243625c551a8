#![no_main]
// The rewriter over arbitrary frames and edit sets: must never panic, and whatever it marks as
// rewritten must parse again. First byte picks the link type, second the edits
// (see tcpclone::fuzz::rewriter).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tcpclone::fuzz::rewriter(data);
});
