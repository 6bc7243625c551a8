//! The engine alone, no I/O: captured request segments in, segments to the target out, with the
//! target's answers fed back (goal: ≥ 1 M captured segments per second per core).
//!
//! `cargo bench -p tcpcopy --bench engine`
//!
//! On a noisy machine count instructions instead of time: `valgrind --tool=callgrind
//! --toggle-collect='engine::run' target/release/deps/engine-<hash> --bench --profile-time 1`
//! runs one iteration (50,000 steps) and counts only `run`.
//!
//! `engine/uploads_240k`: 8 sessions each sending 40 requests of 240 KiB in 60 KiB frames (what
//! GRO hands a capture), each request acknowledged whole with its answer: the per-byte work of
//! a bulk upload (one copy into the session's buffer, one into each sent super-segment, and
//! what the buffer costs to grow and give back).
//! `--toggle-collect='*engine::pass_uploads*'` counts it alone.
//!
//! `engine/short_connections`: 40,000 connections of one request each (handshake, request,
//! answer, FIN both ways), one every 100 µs of the engine's clock, with timers run as a worker
//! runs them: what a `Connection: close` load costs per connection, the timer queue included
//! (every connection arms deadlines that are stale by the time they come due). The pass spans
//! 4 s of that clock, so the connections of its first half also end in it, once their 2 s of
//! linger are over.
//! `--toggle-collect='*engine::pass_short*'` counts it alone.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tcpcopy::engine::{Engine, EngineConfig};
use tcpcopy::mapping::TargetMapping;

const SESSIONS: u32 = 1000;
const REQUESTS: u32 = 50;
const REQ: &[u8] = b"*3\r\n$3\r\nSET\r\n$5\r\nkey:1\r\n$10\r\nxxxxxxxxxx\r\n";
const RESP_LEN: u32 = 5;

/// IPv4+TCP packet; `len` payload bytes announced, `payload` carried (may be empty for reports).
fn packet(
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
    len: usize,
) -> Vec<u8> {
    let total = 40 + len;
    let mut p = vec![0u8; 40 + payload.len()];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.0);
    p[16..20].copy_from_slice(&dst.0);
    p[20..22].copy_from_slice(&src.1.to_be_bytes());
    p[22..24].copy_from_slice(&dst.1.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&ack.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = flags;
    p[34..36].copy_from_slice(&65535u16.to_be_bytes());
    p[40..].copy_from_slice(payload);
    p
}

/// [`packet`] for a SYN or SYN-ACK offering window scale 7 (an 8 MB window).
fn syn_scaled(src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let mut p = packet(src, dst, seq, ack, flags, &[1, 3, 3, 7], 4);
    p[32] = 6 << 4;
    p
}

/// Captured request and the target's answer to it, per step.
type Script = Vec<(Vec<u8>, Vec<u8>)>;

const SERVICE: ([u8; 4], u16) = ([198, 18, 0, 1], 6379);
const TARGET: ([u8; 4], u16) = ([198, 18, 1, 2], 6379);
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

fn client(i: u32) -> ([u8; 4], u16) {
    ([198, 19, (i >> 8) as u8, i as u8], 20_000)
}

/// The engine's configuration: production's `port` cloned to the target 198.18.1.2:`target`.
fn config(port: u16, target: u16) -> EngineConfig {
    EngineConfig {
        mappings: vec![TargetMapping {
            online_ip: None,
            online_port: port,
            target: SocketAddr::new(TARGET.0.into(), target),
        }],
        ..EngineConfig::default()
    }
}

/// An engine with `SESSIONS` established clones, and the script of captured requests and the
/// target's answers to run through it.
fn setup() -> (Engine, Instant, Script) {
    let cfg = config(6379, 6379);
    let mut e = Engine::new(cfg);
    let now = Instant::now();
    let mut buf = vec![0u8; 65536];
    for i in 0..SESSIONS {
        e.handle_captured(now, &packet(client(i), SERVICE, 1000, 0, SYN, &[], 0));
        e.handle_response(
            now,
            &packet(TARGET, client(i), 5000, 1001, SYN | ACK, &[], 0),
        );
        while e.poll_transmit(now, &mut buf).is_some() {}
        while e.poll_event().is_some() {}
    }
    let mut script = Vec::new();
    let n = REQ.len() as u32;
    for r in 0..REQUESTS {
        for i in 0..SESSIONS {
            let seq = 1001 + r * n;
            let prod_ack = 1 + r * RESP_LEN;
            let req = packet(client(i), SERVICE, seq, prod_ack, ACK | PSH, REQ, REQ.len());
            let resp = packet(
                TARGET,
                client(i),
                5001 + r * RESP_LEN,
                seq + n,
                ACK | PSH,
                &[],
                RESP_LEN as usize,
            );
            script.push((req, resp));
        }
    }
    (e, now, script)
}

/// Feeds the script through the engine: each captured packet, then the target's answer (none
/// when empty), sending what each allows. Returns the bytes sent.
#[inline(always)]
fn drive(e: &mut Engine, now: Instant, script: &Script) -> u64 {
    let mut buf = vec![0u8; 65536];
    let mut sent = 0u64;
    let t = now + Duration::from_millis(1);
    for (req, resp) in script {
        e.handle_captured(t, req);
        while let Some(tx) = e.poll_transmit(t, &mut buf) {
            sent += tx.len as u64;
        }
        if !resp.is_empty() {
            e.handle_response(t, resp);
            while let Some(tx) = e.poll_transmit(t, &mut buf) {
                sent += tx.len as u64;
            }
        }
    }
    sent
}

/// Returns the script so that freeing it is not measured. Never inlined, so that callgrind's
/// `--toggle-collect='engine::run'` finds it.
#[inline(never)]
fn run(mut e: Engine, now: Instant, script: Script) -> (Engine, Script, u64) {
    let sent = drive(&mut e, now, &script);
    assert!(e.stats().bytes_acked >= u64::from(SESSIONS * (REQUESTS - 1)) * REQ.len() as u64);
    (e, script, sent)
}

const UPLOAD_SESSIONS: u32 = 8;
const UPLOADS: u32 = 40;
/// One captured frame of an upload: what GRO hands the capture on a veth (under the IPv4
/// total length's 64 KiB).
const FRAME: u32 = 60 * 1024;
/// Frames per request: a 240 KiB body.
const FRAMES: u32 = 4;

/// An engine with `UPLOAD_SESSIONS` established clones, and the script of captured upload
/// frames (each request's last frame followed by the target's answer, which acknowledges it).
fn setup_uploads() -> (Engine, Instant, Script) {
    let cfg = config(80, 8080);
    let mut e = Engine::new(cfg);
    let now = Instant::now();
    let mut buf = vec![0u8; 65536];
    let service = (SERVICE.0, 80);
    let target = (TARGET.0, 8080);
    for i in 0..UPLOAD_SESSIONS {
        e.handle_captured(now, &syn_scaled(client(i), service, 1000, 0, SYN));
        e.handle_response(now, &syn_scaled(target, client(i), 5000, 1001, SYN | ACK));
        while e.poll_transmit(now, &mut buf).is_some() {}
        while e.poll_event().is_some() {}
    }
    let body = vec![b'x'; FRAME as usize];
    let mut script = Vec::new();
    for r in 0..UPLOADS {
        for f in 0..FRAMES {
            for i in 0..UPLOAD_SESSIONS {
                let seq = 1001 + (r * FRAMES + f) * FRAME;
                let prod_ack = 1 + r * RESP_LEN;
                let req = packet(
                    client(i),
                    service,
                    seq,
                    prod_ack,
                    ACK | PSH,
                    &body,
                    body.len(),
                );
                // The target acknowledges a request whole, with its answer (a receive window
                // as large as the body, as a warmed-up connection has).
                let resp = if f + 1 == FRAMES {
                    packet(
                        target,
                        client(i),
                        5001 + r * RESP_LEN,
                        1001 + (r + 1) * FRAMES * FRAME,
                        ACK | PSH,
                        &[],
                        RESP_LEN as usize,
                    )
                } else {
                    Vec::new()
                };
                script.push((req, resp));
            }
        }
    }
    (e, now, script)
}

/// [`run`] for the uploads; its own symbol for callgrind (`--toggle-collect='*engine::pass_uploads*'`).
#[inline(never)]
fn pass_uploads(mut e: Engine, now: Instant, script: Script) -> (Engine, Script, u64) {
    let sent = drive(&mut e, now, &script);
    let want = u64::from(UPLOAD_SESSIONS * (UPLOADS - 1) * FRAMES * FRAME);
    assert!(e.stats().bytes_acked >= want, "{:?}", e.stats());
    (e, script, sent)
}

const SHORT_CONNECTIONS: u32 = 40_000;
/// The engine's clock between two connections' starts: 10,000 a second, so that the pass spans
/// more than every deadline its connections arm, their linger after the FINs included.
const SHORT_EVERY: Duration = Duration::from_micros(100);

/// A connection's packets in order: captured (`true`) or the target's (`false`).
type Steps = Vec<(bool, Vec<u8>)>;

/// An engine with no session yet, and each connection's steps: SYN, the target's SYN-ACK, the
/// request, the target's answer, the client's FIN, the target's FIN.
fn setup_short() -> (Engine, Instant, Vec<Steps>) {
    let cfg = config(80, 8080);
    let service = (SERVICE.0, 80);
    let target = (TARGET.0, 8080);
    let n = REQ.len() as u32;
    let steps = (0..SHORT_CONNECTIONS)
        .map(|i| {
            let c = (
                [198, 19, (i >> 16) as u8, (i >> 8) as u8],
                1024 + (i & 0xff) as u16,
            );
            vec![
                (true, packet(c, service, 1000, 0, SYN, &[], 0)),
                (false, packet(target, c, 5000, 1001, SYN | ACK, &[], 0)),
                (true, packet(c, service, 1001, 1, ACK | PSH, REQ, REQ.len())),
                (
                    false,
                    packet(target, c, 5001, 1001 + n, ACK | PSH, &[], RESP_LEN as usize),
                ),
                (
                    true,
                    packet(c, service, 1001 + n, 1 + RESP_LEN, FIN | ACK, &[], 0),
                ),
                (
                    false,
                    packet(target, c, 5001 + RESP_LEN, 1002 + n, FIN | ACK, &[], 0),
                ),
            ]
        })
        .collect();
    (Engine::new(cfg), Instant::now(), steps)
}

/// Runs the connections one after the other on the engine's clock, sending what each step
/// allows and running due timers after each connection, as a worker's wake-up does.
#[inline(never)]
fn pass_short(mut e: Engine, now: Instant, conns: Vec<Steps>) -> (Engine, Vec<Steps>, u64) {
    let mut buf = vec![0u8; 65536];
    let mut sent = 0u64;
    let mut t = now;
    for steps in &conns {
        t += SHORT_EVERY;
        for (captured, p) in steps {
            if *captured {
                e.handle_captured(t, p);
            } else {
                e.handle_response(t, p);
            }
            while let Some(tx) = e.poll_transmit(t, &mut buf) {
                sent += tx.len as u64;
            }
        }
        while e.poll_event().is_some() {}
        if e.poll_timeout().is_some_and(|d| d <= t) {
            e.handle_timeout(t);
            while let Some(tx) = e.poll_transmit(t, &mut buf) {
                sent += tx.len as u64;
            }
        }
    }
    let st = e.stats();
    assert_eq!(st.sessions_cloned, u64::from(SHORT_CONNECTIONS), "{st:?}");
    // The first half's connections ended in the pass (their linger is shorter than the rest).
    assert!(
        st.sessions_completed >= u64::from(SHORT_CONNECTIONS / 4),
        "{st:?}"
    );
    assert!(
        st.bytes_acked >= u64::from(SHORT_CONNECTIONS) * REQ.len() as u64,
        "{st:?}"
    );
    (e, conns, sent)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(u64::from(SESSIONS * REQUESTS)));
    g.bench_function("request_response_segments", |b| {
        b.iter_batched(setup, |(e, now, s)| run(e, now, s), BatchSize::PerIteration)
    });
    g.throughput(Throughput::Bytes(u64::from(
        UPLOAD_SESSIONS * UPLOADS * FRAMES * FRAME,
    )));
    g.bench_function("uploads_240k", |b| {
        b.iter_batched(
            setup_uploads,
            |(e, now, s)| pass_uploads(e, now, s),
            BatchSize::PerIteration,
        )
    });
    g.throughput(Throughput::Elements(u64::from(SHORT_CONNECTIONS)));
    g.bench_function("short_connections", |b| {
        b.iter_batched(
            setup_short,
            |(e, now, s)| pass_short(e, now, s),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
