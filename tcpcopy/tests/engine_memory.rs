//! 100,000 concurrent sessions must fit in 256 MB: a counting allocator measures what the engine
//! really allocates per session (struct, maps, one small buffered request each).

#[global_allocator]
static GLOBAL: tcpclone_lab::sys::Counting = tcpclone_lab::sys::Counting;

use std::time::Instant;
use tcpcopy::engine::{Engine, EngineConfig};
use tcpcopy::mapping::TargetMapping;

/// An IPv4+TCP packet (checksums left zero: the engine does not need them on input).
fn packet(src: [u8; 4], sport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let total = 40 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&[198, 18, 0, 1]);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&6379u16.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&ack.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = flags;
    p[34..36].copy_from_slice(&65535u16.to_be_bytes());
    p[40..].copy_from_slice(payload);
    p
}

#[test]
fn hundred_thousand_sessions_fit_in_256_mb() {
    let cfg = EngineConfig {
        mappings: vec![TargetMapping {
            online_ip: None,
            online_port: 6379,
            target: "198.18.1.2:6379".parse().expect("address"),
        }],
        ..EngineConfig::default()
    };
    let before = tcpclone_lab::sys::total_live_bytes();
    let mut e = Engine::new(cfg);
    let now = Instant::now();
    let mut buf = vec![0u8; 65536];
    let n = 100_000u32;
    for i in 0..n {
        let src = [198, 19, (i >> 8) as u8, i as u8];
        let port = 10_000 + (i >> 16) as u16;
        // A mid-flight session with one buffered request, waiting for the target's handshake.
        e.handle_captured(
            now,
            &packet(src, port, 1000, 1, 0x18, b"*1\r\n$4\r\nPING\r\n"),
        );
        while e.poll_transmit(now, &mut buf).is_some() {}
        while e.poll_event().is_some() {}
    }
    assert_eq!(e.session_count(), n as usize);
    let used = (tcpclone_lab::sys::total_live_bytes() - before).max(0) as usize;
    let per = used / n as usize;
    println!(
        "engine: {n} sessions use {} MB, {per} bytes/session (budget accounting: {} bytes/session)",
        used >> 20,
        e.memory_used() / n as usize
    );
    assert!(used < 256 << 20, "{used} bytes for {n} sessions");
    drop(e);
}
