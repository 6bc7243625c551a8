//! Fuzz target: the pcap/pcapng reader (and the pcap writer round trip) must never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tcpclone::fuzz::pcap_reader(data);
});
