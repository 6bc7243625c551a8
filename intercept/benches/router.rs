//! intercept's router alone, no I/O: what each response the target sends costs between the
//! capture and the channel (finding the session's owner, adding the header to its batch), and
//! what registering and releasing a session costs.
//!
//! `cargo bench -p intercept --bench router`
//!
//! On a noisy machine count instructions instead of time: `valgrind --tool=callgrind
//! --toggle-collect='*router::pass_*' target/release/deps/router-<hash> --bench --profile-time 1`
//! counts only the passes; it runs each a few times, so divide by the calls of
//! `Router::handle_responses` (256 responses each) or `Router::session_add`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use intercept::batch::HeaderBatch;
use intercept::router::{Router, RouterConfig, SessionKey};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

/// Registered sessions: 20,000 clones in flight, spread over 4 tcpcopy connections.
const SESSIONS: u32 = 20_000;
const PEERS: u64 = 4;
/// Responses per capture batch, as a busy target's ring hands them over.
const BATCH: usize = 256;
/// Batches per pass: every session answered 8 times.
const BATCHES: usize = (SESSIONS as usize * 8) / BATCH;

fn client(i: u32) -> SocketAddr {
    // Clients from several addresses and many ports, as production's are.
    let ip = Ipv4Addr::new(198, 18, (i >> 18) as u8, (i >> 10) as u8);
    SocketAddr::new(ip.into(), 1024 + (i & 1023) as u16 * 61)
}

const TARGET: ([u8; 4], u16) = ([198, 19, 0, 2], 8080);

fn key(i: u32) -> SessionKey {
    SessionKey {
        client: client(i),
        target: SocketAddr::new(TARGET.0.into(), TARGET.1),
    }
}

/// The target's answer to session `i`: an IPv4 + TCP header (ACK, no payload).
fn response(i: u32, seq: u32) -> [u8; 40] {
    let mut h = [0u8; 40];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&40u16.to_be_bytes());
    h[8] = 64;
    h[9] = 6;
    h[12..16].copy_from_slice(&TARGET.0);
    let SocketAddr::V4(c) = client(i) else {
        unreachable!()
    };
    h[16..20].copy_from_slice(&c.ip().octets());
    h[20..22].copy_from_slice(&TARGET.1.to_be_bytes());
    h[22..24].copy_from_slice(&c.port().to_be_bytes());
    h[24..28].copy_from_slice(&seq.to_be_bytes());
    h[32] = 5 << 4;
    h[33] = 0x10;
    h[34..36].copy_from_slice(&65535u16.to_be_bytes());
    h
}

fn registered() -> Router {
    let t = Instant::now();
    let mut r = Router::new(RouterConfig::default());
    for p in 0..PEERS {
        r.add_peer(p, p);
    }
    for i in 0..SESSIONS {
        r.session_add(t, u64::from(i) % PEERS, key(i));
    }
    r
}

/// Every session answered 8 times, in batches that interleave the sessions.
fn batches() -> Vec<HeaderBatch> {
    let mut out = Vec::with_capacity(BATCHES);
    let mut n = 0u32;
    for _ in 0..BATCHES {
        let mut b = HeaderBatch::with_capacity(BATCH * 42);
        for _ in 0..BATCH {
            // A stride through the sessions, so that consecutive headers hit other buckets.
            let i = n.wrapping_mul(7919) % SESSIONS;
            b.push(&response(i, n));
            n += 1;
        }
        out.push(b);
    }
    out
}

#[inline(never)]
fn pass_responses(r: &mut Router, batches: &[HeaderBatch], now: Instant) -> usize {
    let mut frames = 0;
    for b in batches {
        r.handle_responses(now, b);
        r.flush();
        while let Some((_, f)) = r.poll_transmit() {
            frames += black_box(f).len();
        }
    }
    frames
}

#[inline(never)]
fn pass_register(r: &mut Router, now: Instant) {
    for i in 0..SESSIONS {
        r.session_add(now, u64::from(i) % PEERS, key(i));
    }
    for i in 0..SESSIONS {
        r.session_remove(now, u64::from(i) % PEERS, key(i));
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("router");
    let batches = batches();
    let mut r = registered();
    let now = Instant::now();
    g.throughput(Throughput::Elements((BATCHES * BATCH) as u64));
    g.bench_function("responses_160k", |b| {
        b.iter(|| pass_responses(&mut r, &batches, now))
    });
    let counters = r.counters();
    assert_eq!(counters.malformed, 0, "the bench's headers must parse");
    assert_eq!(counters.parked, 0, "every response's session is registered");

    let mut r = Router::new(RouterConfig::default());
    for p in 0..PEERS {
        r.add_peer(p, p);
    }
    g.throughput(Throughput::Elements(u64::from(SESSIONS)));
    g.bench_function("register_20k", |b| b.iter(|| pass_register(&mut r, now)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
