//! Fuzz entry point: arbitrary captured segments, responses, timeouts and shedding through one
//! engine.

use super::{Engine, EngineConfig};
use crate::mapping::TargetMapping;
use std::time::{Duration, Instant};

/// Drives an engine with `data` interpreted as a script of captured packets, target reports,
/// clock steps and shedding; every output is drained and its checksums verified. Must never panic.
#[doc(hidden)]
pub fn fuzz_engine(data: &[u8]) {
    let cfg = EngineConfig {
        mappings: vec![
            TargetMapping {
                online_ip: None,
                online_port: 80,
                target: "198.18.1.2:8080".parse().unwrap_or_else(|_| unreachable!()),
            },
            TargetMapping {
                online_ip: None,
                online_port: 6379,
                target: "[2001:db8::2]:6379"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
            },
        ],
        copies: 1 + u16::from(data.first().copied().unwrap_or(0) % 3),
        max_memory: 1 << 20,
        max_session_buffer: 64 << 10,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(cfg);
    let t0 = Instant::now();
    let mut now = t0;
    let mut out = vec![0u8; 65536 + 64];
    let mut rest = data.get(1..).unwrap_or(&[]);
    while let Some((&op, tail)) = rest.split_first() {
        let len = usize::from(tail.first().copied().unwrap_or(0)) * 4;
        let body = tail.get(1..).unwrap_or(&[]);
        let (chunk, next) = body.split_at(len.min(body.len()));
        rest = next;
        match op % 4 {
            0 => e.handle_captured(now, chunk),
            1 => e.handle_response(now, chunk),
            2 => {
                now += Duration::from_micros(u64::from(op) * 997);
                e.handle_timeout(now);
            }
            // The capture falling behind: shedding on and off, heavy clones shed, shed
            // connections let back.
            _ => match op / 4 % 4 {
                0 => e.set_shedding(!e.shedding()),
                1 => {
                    e.shed_heaviest(now, f64::from(op) / 255.0);
                }
                2 => {
                    e.allow_resume();
                    e.expire_shed(now);
                }
                _ => {
                    if let Some(t) = e.poll_timeout() {
                        if t > now {
                            now = t;
                        }
                        e.handle_timeout(now);
                    }
                }
            },
        }
        let mut guard = 0;
        while let Some(tx) = e.poll_transmit(now, &mut out) {
            assert!(
                super::checksums_ok(&out[..tx.len]),
                "bad checksum in engine output"
            );
            guard += 1;
            if guard > 100_000 {
                panic!("engine keeps transmitting");
            }
        }
        while e.poll_event().is_some() {}
    }
}
