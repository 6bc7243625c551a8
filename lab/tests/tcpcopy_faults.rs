//! tcpcopy-side faults (issue 5, "Faults survived" and "Production safety"), end to end with
//! real redis-server / redis-benchmark in namespaces, in the assistant layout of
//! `lab/tests/tcpcopy_lab.rs` (see `lab/src/topo.rs`).
//!
//! Each fault test runs the production clients in phases, one redis command per phase, so that
//! what the target counts for a phase (`INFO commandstats`) belongs to that phase alone: a
//! session that recovers late from an earlier phase cannot hide a loss in a later one.
//!
//! - `target_down_then_back`: the target's LAN link is down (no answer at all) while clients
//!   use production, then comes back. tcpcopy stays up, counts the handshakes it gave up on,
//!   and the sessions started afterwards are delivered.
//! - `target_refusing_then_resetting`: the target's port is closed (RST to every SYN), then
//!   opened; then the target kills its established client connections in a loop (`CLIENT KILL
//!   TYPE normal`: FIN, and RST to the next request), then stops. tcpcopy stays up, counts the
//!   refused handshakes and the resets, and delivers what comes after each fault.
//! - `target_slow_production_unaffected`: the target redis is stopped (SIGSTOP) for seconds
//!   while clients push 16 KB values through production with `-m 24 -B 8 -k 2 -t 5`: production
//!   answers every request, the memory budget is hit (sessions refused or buffers overflowed,
//!   counted), stalled clones time out (counted), and after SIGCONT new sessions are cloned
//!   again (≥ 25 % delivered).
//! - `target_slow_full_recovery`: the same;
//!   the new sessions after SIGCONT must be delivered ≥ 99 %.
//! - `target_slow_rss_within_memory_budget`: the same; tcpcopy's RSS must stay within `-m`
//!   plus a fixed 24 MB overhead.
//! - `capture_device_recreated`: the client link production captures on (`-i`, two workers)
//!   is deleted and re-created under the same name: tcpcopy opens its rings again (counted)
//!   and the sessions started afterwards are delivered.
//! - `production_safety_capture`: tcpdump on every interface of production, outbound, during a
//!   run with IPv4 (`-c` client rewriting) and IPv6 mappings: no TCP packet went to a production
//!   address, to a client address (other than the service's own answers) or from a client or
//!   `-c` address to anything but the target; a canary packet proves the watch sees leaks.
//!
//! Build first: `cargo build --release --workspace && cargo test --release -p tcpclone-lab --test tcpcopy_faults`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcpclone_lab::topo::*;
use tcpclone_lab::*;

const MAPPING: &str = "6379-198.18.1.2:6380";

/// The value of `key=N` in `text` (a summary or stats line), the first occurrence or the last.
/// The engine's line says `refused memory=N` early and `memory=N` (bytes in use) last.
fn field(text: &str, key: &str, last: bool) -> Option<u64> {
    let mut it = text
        .split_whitespace()
        .map(|w| w.trim_matches(|c| c == '(' || c == ')' || c == ';'))
        .filter_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .filter_map(|v| v.parse().ok());
    if last {
        it.next_back()
    } else {
        it.next()
    }
}

/// The value of the first `key=N` on the summary line that starts with `line` (`engine:` or
/// `counters:`); panics with the summary when it is missing.
fn summary_value(summary: &str, line: &str, key: &str) -> u64 {
    summary
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(line))
        .and_then(|l| field(l, key, false))
        .unwrap_or_else(|| panic!("no `{key}=` on the `{line}` line of:\n{summary}"))
}

/// The `--stats` lines of tcpcopy's log so far: (counters part, engine part).
fn stats_lines(t: &Topo) -> Vec<(String, String)> {
    std::fs::read_to_string(t.path("tcpcopy.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (c, e) = l.split_once("| engine:")?;
            Some((c.to_string(), e.to_string()))
        })
        .collect()
}

/// Waits up to `max` for the engine part of a `--stats` line to satisfy `ok`; returns the last
/// engine part seen.
fn wait_stats(t: &Topo, max: Duration, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + max;
    loop {
        let last = stats_lines(t).pop().map(|(_, e)| e).unwrap_or_default();
        if ok(&last) || Instant::now() > deadline {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The source address of a packet as `tcpdump -nn -r` prints it (`... IP 198.18.20.3.41000 >
/// ...`, `... IP6 2001:db8:20::2.41000 > ...`, with or without the interface and direction of a
/// cooked capture in front).
fn packet_source(line: &str) -> Option<IpAddr> {
    let mut w = line.split_whitespace();
    w.find(|t| *t == "IP" || *t == "IP6")?;
    let src = w.next()?;
    src.rsplit_once('.')?.0.parse().ok()
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z")
}

/// redis-benchmark from the client against production (`args` after host and port); it must
/// succeed, i.e. production answered every request.
fn bench(t: &Topo, host: &str, args: &str) -> String {
    t.client(&format!(
        "timeout 120 redis-benchmark -h {host} -p {REDIS_PROD} {args} -q"
    ))
}

/// One phase: redis-benchmark `args` (which must use `-t cmd` only) against production, then
/// what production and the target counted for `cmd` (the target given up to 20 s to settle).
fn phase(t: &Topo, host: &str, cmd: &str, args: &str) -> (u64, u64) {
    bench(t, host, &format!("{args} -t {cmd}"));
    let prod = redis_calls(&t.lab, &t.prod, REDIS_PROD, cmd);
    let got = settle(prod, Duration::from_secs(20), || {
        redis_calls(&t.lab, &t.target, REDIS_TARGET, cmd)
    });
    (prod, got)
}

/// Checks a recovery phase: production got exactly `want` and the target ≥ 99 % of it (never
/// more).
fn recovered(what: &str, got: (u64, u64), want: u64, failures: &mut Vec<String>) {
    delivered(what, got, want, 0.99, failures);
}

/// How a recovery phase's clients connect.
#[derive(Clone, Copy)]
enum Conns {
    /// 10 keep-alive connections.
    KeepAlive,
    /// One connection per command, 5 at a time.
    OneEach,
}

/// A recovery phase of `n` `cmd` commands from `host`, connected as `conns` says, checked by
/// [`recovered`] as "`when`, CMD x 10 keep-alive" or "`when`, CMD one connection each".
fn recovered_phase(
    conns: Conns,
    t: &Topo,
    host: &str,
    when: &str,
    cmd: &str,
    n: u64,
    failures: &mut Vec<String>,
) {
    let (how, args) = match conns {
        Conns::KeepAlive => ("x 10 keep-alive", "-c 10"),
        Conns::OneEach => ("one connection each", "-c 5 -k 0"),
    };
    let what = format!("{when}, {} {how}", cmd.to_uppercase());
    let got = phase(t, host, cmd, &format!("-n {n} {args}"));
    recovered(&what, got, n, failures);
}

/// Checks a phase: production got exactly `want` and the target ≥ `min` of it (never more).
fn delivered(what: &str, (prod, got): (u64, u64), want: u64, min: f64, failures: &mut Vec<String>) {
    let r = ratio(got, prod);
    println!(
        "{what}: production {prod}, target {got} ({:.2} %)",
        100.0 * r
    );
    if prod != want || r < min || got > prod {
        failures.push(format!(
            "{what}: production {prod} (want {want}), target {got} ({:.2} %, want ≥ {:.0} %)",
            100.0 * r,
            100.0 * min
        ));
    }
}

/// Redis in production and on the target, intercept; returns the topology and the target
/// redis' PID.
fn redis_topo() -> (Topo, u32) {
    let mut t = Topo::new(Layout::Assistant);
    let (p, tg) = (t.prod.clone(), t.target.clone());
    t.start_redis(&p, REDIS_PROD, "redis-prod");
    let target_redis = t.start_redis(&tg, REDIS_TARGET, "redis-target");
    t.start_intercept(REDIS_FILTER);
    (t, target_redis)
}

#[test]
fn target_down_then_back() {
    require_root!("tcpcopy_faults::target_down_then_back");
    require_programs!(
        "tcpcopy_faults",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "ss",
        "ping"
    );
    let _g = serial();
    let (mut t, _) = redis_topo();
    let pid = t.start_tcpcopy(&["-x", MAPPING, "--stats", "1"]);
    let mut failures = Vec::new();

    // Down: the target's port on the LAN switch goes down (its side loses carrier; its routes
    // stay). Nothing answers the SYNs: tcpcopy retries them and gives up (counted).
    let (br, port) = (t.bridge.clone(), t.target_port.clone());
    t.lab.exec_ok(&br, &format!("ip link set {port} down"));
    let down_at = Instant::now();
    bench(&t, PROD4, "-n 2000 -c 10 -t set");
    bench(&t, PROD4, "-n 100 -c 5 -k 0 -t set");
    let prod_down = redis_calls(&t.lab, &t.prod, REDIS_PROD, "set");
    // Nothing answers: every handshake of the phase is given up after the SYN retries
    // (counted); the link stays down until the stats say so (at most 45 s).
    let stats = wait_stats(&t, Duration::from_secs(45), |e| {
        field(e, "handshake", false).is_some_and(|n| n >= 110)
    });
    println!("stats while down: {}", stats.trim());
    let tgt_down = redis_calls(&t.lab, &t.target, REDIS_TARGET, "set");
    println!(
        "target down {:.1}s: production {prod_down} SETs, target {tgt_down}",
        down_at.elapsed().as_secs_f64()
    );
    if !alive(pid) {
        failures.push("tcpcopy died while the target was down".into());
    }
    if prod_down != 2100 || tgt_down != 0 {
        failures.push(format!(
            "while down: production {prod_down} SETs (want 2100), target {tgt_down} (want 0)"
        ));
    }

    // Back: sessions started now are delivered.
    t.lab.exec_ok(&br, &format!("ip link set {port} up"));
    assert!(
        t.lab.wait_for(
            &t.prod,
            &format!("ping -c1 -W1 {TARGET4}"),
            Duration::from_secs(10)
        ),
        "the target did not come back"
    );
    recovered_phase(
        Conns::KeepAlive,
        &t,
        PROD4,
        "after the target came back",
        "get",
        5000,
        &mut failures,
    );
    recovered_phase(
        Conns::OneEach,
        &t,
        PROD4,
        "after the target came back",
        "incr",
        300,
        &mut failures,
    );
    let alive_at_end = alive(pid);
    let summary = t.stop_tcpcopy(pid);
    let gave_up = summary_value(&summary, "engine:", "handshake");
    let syn_rto = summary_value(&summary, "engine:", "rto");
    println!("handshakes given up {gave_up}, retransmission timeouts {syn_rto}");
    // 10 + 100 (+ the config connection of each benchmark): at least the 110 sessions of the
    // down phase never got an answer.
    if gave_up < 110 {
        failures.push(format!(
            "only {gave_up} handshakes counted as given up (want ≥ 110)"
        ));
    }
    if !alive_at_end {
        failures.push("tcpcopy died".into());
    }
    assert!(failures.is_empty(), "{}\n{summary}", failures.join("\n"));
}

/// The name of the device holding `addr` in `ns`.
fn device_of(t: &Topo, ns: &str, addr: &str) -> String {
    let out = t.lab.exec(ns, &format!("ip -o addr show to {addr}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no device holds {addr} in {ns}: {text}"))
        .to_string()
}

#[test]
fn capture_device_recreated() {
    require_root!("tcpcopy_faults::capture_device_recreated");
    require_programs!(
        "tcpcopy_faults",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "ping"
    );
    let _g = serial();
    let (mut t, _) = redis_topo();
    let (prod, client) = (t.prod.clone(), t.client.clone());
    let dev = device_of(&t, &prod, PROD4);
    let peer = device_of(&t, &client, CLIENT4);
    let pid = t.start_tcpcopy(&["-x", MAPPING, "-i", &dev, "--workers", "2"]);
    let mut failures = Vec::new();
    recovered_phase(
        Conns::KeepAlive,
        &t,
        PROD4,
        "before",
        "set",
        2000,
        &mut failures,
    );

    // The client link goes away with both its ends, and comes back under the same names
    // (a new device index): the old rings are bound to a device that no longer exists.
    t.lab.exec_ok(&prod, &format!("ip link del {dev}"));
    std::thread::sleep(Duration::from_millis(500));
    t.lab.exec_ok(
        &prod,
        &format!(
            "ip link add {dev} type veth peer name {peer} && ip link set {peer} netns {client} && \
             ip addr add {PROD4}/24 dev {dev} && ip addr add {PROD6}/64 dev {dev} nodad && \
             ip link set {dev} up"
        ),
    );
    t.lab.exec_ok(
        &client,
        &format!(
            "ip addr add {CLIENT4}/24 dev {peer} && ip addr add {CLIENT6}/64 dev {peer} nodad && \
             ip link set {peer} up"
        ),
    );
    assert!(
        t.lab.wait_for(
            &client,
            &format!("ping -c1 -W1 {PROD4}"),
            Duration::from_secs(10)
        ),
        "the re-created link does not carry traffic"
    );
    // Both workers' rings are opened again within a few of their 1 s checks.
    let log = t.path("tcpcopy.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("ring opened again")
        .count()
        < 2
    {
        if Instant::now() > deadline {
            failures.push("the rings were not opened again within 10 s".into());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    recovered_phase(
        Conns::KeepAlive,
        &t,
        PROD4,
        "after the device was re-created",
        "get",
        2000,
        &mut failures,
    );
    recovered_phase(
        Conns::OneEach,
        &t,
        PROD4,
        "after the device was re-created",
        "incr",
        200,
        &mut failures,
    );
    let summary = t.stop_tcpcopy(pid);
    let reopens = summary_value(&summary, "counters:", "capture_reopens");
    if reopens != 2 {
        failures.push(format!(
            "capture_reopens {reopens}, want 2 (one per worker)"
        ));
    }
    assert!(failures.is_empty(), "{}\n{summary}", failures.join("\n"));
}

#[test]
fn target_refusing_then_resetting() {
    require_root!("tcpcopy_faults::target_refusing_then_resetting");
    require_programs!(
        "tcpcopy_faults",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "ss"
    );
    let _g = serial();
    let (mut t, target_redis) = redis_topo();
    let pid = t.start_tcpcopy(&["-x", MAPPING]);
    let mut failures = Vec::new();
    let tg = t.target.clone();

    // Refusing: the target's redis is stopped, its port closed: every SYN draws a RST.
    t.lab
        .stop(target_redis, "TERM", Duration::from_secs(5))
        .expect("target redis stops");
    assert!(t.lab.wait_for(
        &tg,
        &format!("! ss -Hltn 'sport = :{REDIS_TARGET}' | grep -q LISTEN"),
        Duration::from_secs(5)
    ));
    bench(&t, PROD4, "-n 2000 -c 10 -t set");
    bench(&t, PROD4, "-n 200 -c 5 -k 0 -t set");
    std::thread::sleep(Duration::from_secs(2));
    if !alive(pid) {
        failures.push("tcpcopy died while the target refused".into());
    }

    // Open again: new sessions are delivered.
    t.start_redis(&tg, REDIS_TARGET, "redis-target");
    recovered_phase(
        Conns::KeepAlive,
        &t,
        PROD4,
        "after the target reopened",
        "get",
        5000,
        &mut failures,
    );

    // Resetting: for 4 s the target kills every normal client connection every 100 ms while
    // production clients keep going (several short keep-alive runs).
    let killer = t.lab.spawn(
        &tg,
        &[
            "timeout",
            "4",
            "sh",
            "-c",
            &format!(
                "while true; do redis-cli -p {REDIS_TARGET} client kill type normal >/dev/null; \
                 sleep 0.1; done"
            ),
        ],
        None,
    );
    let t0 = Instant::now();
    let mut runs = 0;
    while t0.elapsed() < Duration::from_millis(3500) {
        bench(&t, PROD4, "-n 2000 -c 10 -t lpush");
        runs += 1;
    }
    t.lab.stop(killer, "0", Duration::from_secs(5));
    let prod_reset = redis_calls(&t.lab, &t.prod, REDIS_PROD, "lpush");
    std::thread::sleep(Duration::from_secs(2));
    let tgt_reset = redis_calls(&t.lab, &tg, REDIS_TARGET, "lpush");
    println!(
        "while resetting: {runs} benchmark runs, production {prod_reset} LPUSH, target {tgt_reset}"
    );
    if !alive(pid) {
        failures.push("tcpcopy died while the target reset connections".into());
    }

    // Calm again: new sessions are delivered.
    recovered_phase(
        Conns::KeepAlive,
        &t,
        PROD4,
        "after the resets stopped",
        "incr",
        5000,
        &mut failures,
    );
    recovered_phase(
        Conns::OneEach,
        &t,
        PROD4,
        "after the resets stopped",
        "sadd",
        300,
        &mut failures,
    );
    let summary = t.stop_tcpcopy(pid);
    let refused = summary_value(&summary, "engine:", "handshakes_refused");
    let resets = summary_value(&summary, "engine:", "target_resets");
    let aborted_reset = summary_value(&summary, "engine:", "target_reset");
    println!(
        "handshakes refused {refused}, target resets {resets}, sessions ended by a target reset {aborted_reset}"
    );
    // The refusing phase had 10 + 200 sessions (plus the benchmarks' config connections).
    if refused < 210 {
        failures.push(format!(
            "only {refused} refused handshakes counted (want ≥ 210)"
        ));
    }
    if resets == 0 || aborted_reset == 0 {
        failures.push(format!(
            "the target's resets were not counted: target_resets={resets} target_reset={aborted_reset}"
        ));
    }
    assert!(failures.is_empty(), "{}\n{summary}", failures.join("\n"));
}

/// Fixed RSS overhead allowed above `-m`: the program and its libraries, threads' stacks and
/// allocator arenas (an idle tcpcopy has an RSS of about 9.5 MB on x86-64), and a few capture
/// batches on their way to the engine.
const RSS_OVERHEAD_MB: u64 = 24;

/// What the slow-target scenario checks.
#[derive(Clone, Copy, PartialEq)]
enum SlowCheck {
    /// Production unaffected, budget hit and stalls timed out (counted), new sessions cloned
    /// again afterwards (≥ 25 % delivered: see `target_slow_full_recovery` for why not more).
    Behaviour,
    /// New sessions after the slow phase delivered in full (≥ 99 %).
    FullRecovery,
    /// tcpcopy's RSS peak stays within `-m` + [`RSS_OVERHEAD_MB`].
    Rss,
}

/// The slow-target scenario with `-m budget_mb -B ring_mb -k 2 -t 5`: the target redis is
/// stopped (SIGSTOP) while production clients push ~100 MB of 16 KB values through 20
/// connections and open 600 one-request connections, until a stalled clone timed out; then
/// it answers again (SIGCONT) and, once the slow phase's clones are gone, new sessions are
/// measured. RSS is sampled every 20 ms throughout. `check` says what fails the test.
/// A small ring (`-B 8`) in block mode (`--capture-block 1`): in immediate mode its 128 slots of
/// 64 KiB overflow whenever the capture thread waits a few ms on a busy machine (27 kernel drops
/// cost a CI run 7 % of the recovery phase); packed blocks hold some 80,000 small segments.
fn slow_target(budget_mb: u64, ring_mb: u64, check: SlowCheck) {
    let _g = serial();
    let (mut t, target_redis) = redis_topo();
    let (budget, ring) = (budget_mb.to_string(), ring_mb.to_string());
    let pid = t.start_tcpcopy(&[
        "-x",
        MAPPING,
        "-m",
        &budget,
        "-B",
        &ring,
        "--capture-block",
        "1",
        "-k",
        "2",
        "-t",
        "5",
        "--stats",
        "1",
    ]);
    let idle_kb = rss_kb(pid).expect("tcpcopy runs");
    let mut failures = Vec::new();

    // RSS sampled every 20 ms for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(idle_kb));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kb) = rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Slow: the target's redis stops answering (its kernel still accepts and buffers until the
    // windows close). Production clients push ~100 MB of 16 KB values through 20 connections
    // while others open a new connection per request.
    sh(&format!("kill -STOP {target_redis}"));
    let stopped = Instant::now();
    t.client(&format!(
        "timeout 120 redis-benchmark -h {PROD4} -p {REDIS_PROD} -n 6000 -c 20 -d 16384 -t set -q & A=$!; \
         timeout 120 redis-benchmark -h {PROD4} -p {REDIS_PROD} -n 600 -c 5 -k 0 -t get -q & B=$!; \
         wait $A && wait $B"
    ));
    let prod_set = redis_calls(&t.lab, &t.prod, REDIS_PROD, "set");
    let prod_get = redis_calls(&t.lab, &t.prod, REDIS_PROD, "get");
    println!(
        "while the target was stopped: production answered {prod_set} SETs of 16 KB and {prod_get} GETs in {:.1}s",
        stopped.elapsed().as_secs_f64()
    );
    if prod_set != 6000 || prod_get != 600 {
        failures.push(format!(
            "production was affected: {prod_set} of 6000 SETs, {prod_get} of 600 GETs"
        ));
    }
    // Stalled sessions time out after -k 2 s without progress: wait until one did (at most
    // 20 s), then let the target answer again.
    let during = wait_stats(&t, Duration::from_secs(20), |e| {
        field(e, "timeout", false).is_some_and(|n| n > 0)
    });
    println!(
        "stats with the target stopped {:.1}s: {}",
        stopped.elapsed().as_secs_f64(),
        during.trim()
    );
    sh(&format!("kill -CONT {target_redis}"));
    if !alive(pid) {
        failures.push("tcpcopy died while the target was slow".into());
    }
    // Answering again: once the sessions of the slow phase are gone (-t 5 ends those whose end
    // the capture missed), new ones are delivered.
    let calm = wait_stats(&t, Duration::from_secs(30), |e| {
        field(e, "active", false) == Some(0)
    });
    println!(
        "stats once the slow phase's sessions ended: {}",
        calm.trim()
    );
    let drops_before = stats_lines(&t)
        .pop()
        .and_then(|(c, _)| field(&c, "kernel_drops", false))
        .unwrap_or(0);
    let recovery = phase(&t, PROD4, "incr", "-n 3000 -c 10");
    let recovery_what = "after the target answered again, INCR x 10 keep-alive";
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let hwm_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let peak_kb = peak.load(Ordering::Relaxed).max(hwm_kb);
    let end_kb = rss_kb(pid).unwrap_or(0);
    let engine_peak = stats_lines(&t)
        .iter()
        .filter_map(|(_, e)| field(e, "memory", true))
        .max()
        .unwrap_or(0);
    let summary = t.stop_tcpcopy(pid);
    let refused = summary_value(&summary, "engine:", "memory");
    let overflows = summary_value(&summary, "engine:", "overflows");
    let timed_out = summary_value(&summary, "engine:", "timeout");
    let drops = summary_value(&summary, "counters:", "kernel_drops");
    let limit_kb = (budget_mb + RSS_OVERHEAD_MB) * 1024;
    println!(
        "-m {budget_mb} -B {ring_mb}: RSS idle {idle_kb} kB, peak {peak_kb} kB (VmHWM {hwm_kb} kB), at the end {end_kb} kB, \
         limit {limit_kb} kB; \
         engine memory peak in --stats {engine_peak} bytes; sessions refused for memory {refused}, \
         buffer overflows {overflows}, timed out {timed_out}; kernel drops {drops} ({} during the recovery phase)",
        drops - drops_before.min(drops)
    );
    match check {
        SlowCheck::Rss => {
            // Only memory (and survival) counts here.
            failures.retain(|f| f.contains("died"));
            println!(
                "{recovery_what}: production {}, target {}",
                recovery.0, recovery.1
            );
            if peak_kb > limit_kb {
                failures.push(format!(
                    "RSS peaked at {peak_kb} kB > -m {budget_mb} MB + {RSS_OVERHEAD_MB} MB \
                     (the engine accounted at most {engine_peak} bytes in the --stats samples)"
                ));
            }
        }
        SlowCheck::Behaviour => {
            // On a busy machine the worker can fall behind its 8 MB ring while the target is
            // stopped (CI once: 802 kernel drops, the worker 24 ms late): it then sheds the
            // stalled sessions, which lets go of what they held before the budget is reached.
            // That bounds memory too; one of the two must have happened.
            let shed = summary_value(&summary, "engine:", "shed");
            if refused + overflows == 0 && (drops == 0 || shed == 0) {
                failures.push(format!(
                    "the memory budget was never hit (nothing refused or overflowed), and no \
                     overflowing capture shed the stalled sessions instead (kernel drops \
                     {drops}, shed {shed})"
                ));
            }
            if timed_out == 0 {
                failures.push("no stalled session timed out".into());
            }
            delivered(recovery_what, recovery, 3000, 0.25, &mut failures);
        }
        SlowCheck::FullRecovery => {
            failures.retain(|f| f.contains("died"));
            delivered(recovery_what, recovery, 3000, 0.99, &mut failures);
        }
    }
    assert!(failures.is_empty(), "{}\n{summary}", failures.join("\n"));
}

#[test]
fn target_slow_production_unaffected() {
    require_root!("tcpcopy_faults::target_slow_production_unaffected");
    require_programs!(
        "tcpcopy_faults",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "ss"
    );
    // A ring of 8 MB: with 1 MB the kernel drops segments whenever the capture thread waits a
    // few ms on a busy machine (each costs a clone a reset).
    slow_target(24, 8, SlowCheck::Behaviour);
}

#[test]
fn target_slow_full_recovery() {
    require_root!("tcpcopy_faults::target_slow_full_recovery");
    require_programs!(
        "tcpcopy_faults",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "ss"
    );
    slow_target(24, 8, SlowCheck::FullRecovery);
}

#[test]
// Peak RSS with -m 24 -B 8 --capture-block 1: 25.1-37.6 MB in six runs (three with two busy
// loops on both cores), against the 48 MB allowed. Before session buffers counted by their
// allocated capacity and the response queue counted against -m, the peaks reached 49-50 MB
// on a loaded machine and this test was ignored.
fn target_slow_rss_within_memory_budget() {
    require_root!("tcpcopy_faults::target_slow_rss_within_memory_budget");
    require_programs!(
        "tcpcopy_faults",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "ss"
    );
    slow_target(24, 8, SlowCheck::Rss);
}

#[test]
fn production_safety_capture() {
    require_root!("tcpcopy_faults::production_safety_capture");
    require_programs!(
        "tcpcopy_faults",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "ss",
        "tcpdump",
        "bash"
    );
    let _g = serial();
    let (mut t, _) = redis_topo();
    let tg = t.target.clone();
    // The -c networks route back through the assistant like the real clients.
    t.lab.exec_ok(
        &tg,
        &format!("ip -6 route add 2001:db8:20::/64 via {ASSIST6}"),
    );
    // What must never leave production (TCP; everything tcpcopy sends is TCP): anything to a
    // production address, anything to a client or -c address that is not the service
    // answering, anything from a client or -c address to other than the target.
    let leak_filter = format!(
        "tcp and ((dst host {PROD4} or dst host {PROD_LAN4} or dst host {PROD6} or dst host {PROD_LAN6}) or \
         ((dst net 198.18.10.0/24 or dst net 198.18.20.0/24 or dst net 2001:db8:10::/64 or dst net 2001:db8:20::/64) \
           and not src port {REDIS_PROD}) or \
         ((src host {CLIENT4} or src net 198.18.20.0/24) and not dst host {TARGET4}) or \
         ((src host {CLIENT6} or src net 2001:db8:20::/64) and not dst host {TARGET6}))"
    );
    let (watch, leaks) = t.start_leak_watch(&leak_filter, "leaks.pcap");
    // What tcpcopy sends to the target, to show that the run did send (and from where).
    let sent = t.path("sent.pcap");
    let p = t.prod.clone();
    let sent_pid = start_tcpdump_opts(
        &mut t.lab,
        &p,
        &[
            "-i", "any", "-Q", "out", "-s", "128", "-B", "32768", "-Z", "root",
        ],
        &format!("tcp dst port {REDIS_TARGET}"),
        &sent,
    );
    // The canary: one SYN from production to a client port that no service uses. The watch
    // must catch exactly it.
    knock(&t.lab, &p, CLIENT4, 9, 1);

    // Online addresses in both mappings: a bare `6379-...` would also take the IPv6 clients
    // (to the IPv4 target, with an IPv4 -c source).
    let mapping = format!("{PROD4}:6379-{TARGET4}:6380,[{PROD6}]:6379-[{TARGET6}]:6380");
    let pid = t.start_tcpcopy(&["-x", &mapping, "-c", "198.18.20.0/28,2001:db8:20::/124"]);
    let mut failures = Vec::new();
    recovered_phase(
        Conns::KeepAlive,
        &t,
        PROD4,
        "IPv4 with -c",
        "set",
        5000,
        &mut failures,
    );
    recovered_phase(
        Conns::KeepAlive,
        &t,
        PROD6,
        "IPv6 with -c",
        "get",
        5000,
        &mut failures,
    );
    recovered_phase(
        Conns::OneEach,
        &t,
        PROD4,
        "IPv4 with -c",
        "incr",
        300,
        &mut failures,
    );
    let summary = t.stop_tcpcopy(pid);
    stop_tcpdump(&mut t.lab, sent_pid, &sent);
    let text = t.leak_report(watch, &leaks);
    let all = sh(&format!("tcpdump -nn -r {} 2>/dev/null", leaks.display()));
    let all = String::from_utf8_lossy(&all.stdout).into_owned();
    let canary = all
        .lines()
        .filter(|l| l.contains(&format!("> {CLIENT4}.9:")))
        .count();
    let leaked: Vec<&str> = all
        .lines()
        .filter(|l| !l.contains(&format!("> {CLIENT4}.9:")))
        .collect();
    // Sources of what went to the target: the -c networks only.
    let out = sh(&format!("tcpdump -nn -r {} 2>/dev/null", sent.display()));
    let (mut v4, mut v6, mut other) = (0u64, 0u64, Vec::new());
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        match packet_source(l) {
            Some(IpAddr::V4(a))
                if a.octets()[..3] == [198, 18, 20] && (1..=14).contains(&a.octets()[3]) =>
            {
                v4 += 1
            }
            Some(IpAddr::V6(a))
                if a.segments()[..7] == [0x2001, 0xdb8, 0x20, 0, 0, 0, 0]
                    && a.segments()[7] < 16 =>
            {
                v6 += 1
            }
            _ => other.push(l.to_string()),
        }
    }
    other.truncate(5);
    println!(
        "sent to the target: {v4} packets from 198.18.20.0/28, {v6} from 2001:db8:20::/124, others {other:?}; \
         leak watch: canary {canary}, other packets {}\n{text}",
        leaked.len()
    );
    if canary != 1 {
        failures.push(format!(
            "the leak watch saw the canary {canary} times (want 1)"
        ));
    }
    if !leaked.is_empty() {
        failures.push(format!(
            "packets left production where they must not:\n{}",
            leaked
                .iter()
                .take(5)
                .copied()
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    if v4 == 0 || v6 == 0 || !other.is_empty() {
        failures.push(format!(
            "sources of the packets to the target: {v4} from the IPv4 -c list, {v6} from the IPv6 one, others {other:?}"
        ));
    }
    assert!(failures.is_empty(), "{}\n{summary}", failures.join("\n"));
}

/// Issue 16: an intercept that stops reading (SIGSTOP) for 30 s while production is busy
/// leaves tcpcopy's RSS within -m plus the fixed overhead (its queue of registrations is
/// bounded, its writes time out and the connection is rebuilt), and once intercept runs again
/// (SIGCONT) new sessions are delivered in full.
#[test]
fn intercept_stopped_then_continued() {
    require_root!("tcpcopy_faults::intercept_stopped_then_continued");
    require_programs!(
        "tcpcopy_faults",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "kill"
    );
    let _g = serial();
    let mut t = Topo::new(Layout::Assistant);
    let (p, tg) = (t.prod.clone(), t.target.clone());
    t.start_redis(&p, REDIS_PROD, "redis-prod");
    t.start_redis(&tg, REDIS_TARGET, "redis-target");
    let ipid = t.start_intercept(REDIS_FILTER);
    let budget_mb: u64 = 48;
    let budget = budget_mb.to_string();
    let pid = t.start_tcpcopy(&["-x", MAPPING, "-m", &budget, "-B", "8", "--stats", "1"]);
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kb) = rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut failures = Vec::new();
    sh(&format!("kill -STOP {ipid}"));
    let stopped = Instant::now();
    // Busy production for the 30 s: one connection per request, so every request is a
    // session registered with (and removed from) the stopped intercept. The client closes
    // each connection first and keeps its port in TIME-WAIT: let it reuse those (as
    // redis-benchmark asks), and stop at 8 rounds (24,000 connections) however fast they go.
    let client = t.client.clone();
    t.lab.exec_ok(&client, "sysctl -qw net.ipv4.tcp_tw_reuse=1");
    let mut rounds = 0;
    while stopped.elapsed() < Duration::from_secs(30) && rounds < 8 {
        bench(&t, PROD4, "-n 3000 -c 20 -k 0 -t set");
        rounds += 1;
    }
    if let Some(rest) = Duration::from_secs(30).checked_sub(stopped.elapsed()) {
        std::thread::sleep(rest);
    }
    let stats = std::fs::read_to_string(t.path("tcpcopy.log")).unwrap_or_default();
    let last = stats
        .lines()
        .rev()
        .find(|l| l.contains("stats"))
        .unwrap_or("");
    println!("after 30 s of a stopped intercept: {last}");
    if !alive(pid) {
        failures.push("tcpcopy died while intercept was stopped".into());
    }
    sh(&format!("kill -CONT {ipid}"));
    // The connection comes back (rebuilt or resumed) and new sessions are delivered in full.
    let back = t.lab.wait_for(
        &t.prod,
        "ss -Htn state established 'dport = :36524' | grep -q .",
        Duration::from_secs(20),
    );
    if !back {
        failures.push("no connection to intercept 20 s after SIGCONT".into());
    }
    std::thread::sleep(Duration::from_secs(2));
    recovered_phase(
        Conns::KeepAlive,
        &t,
        PROD4,
        "after SIGCONT",
        "get",
        5000,
        &mut failures,
    );
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let peak_kb = peak.load(Ordering::Relaxed);
    let limit_kb = (budget_mb + RSS_OVERHEAD_MB) * 1024;
    println!("tcpcopy RSS peak {peak_kb} kB (limit {limit_kb} kB)");
    if peak_kb > limit_kb {
        failures.push(format!(
            "RSS peaked at {peak_kb} kB > -m {budget_mb} MB + {RSS_OVERHEAD_MB} MB"
        ));
    }
    let summary = t.stop_tcpcopy(pid);
    assert!(failures.is_empty(), "{}\n{summary}", failures.join("\n"));
}
