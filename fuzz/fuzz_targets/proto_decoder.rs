#![no_main]
// The tcpcopy–intercept protocol decoder: whole and split-stream decoding must agree, and every
// decoded message must re-encode to a frame that decodes to the same message.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tcpclone::fuzz::proto_decoder(data);
});
