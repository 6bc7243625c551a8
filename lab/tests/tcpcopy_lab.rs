//! tcpcopy + intercept acceptance tests (issue 3), end to end with real servers and clients.
//!
//! Topology per test (all namespaces created and removed here):
//!
//! ```text
//!  client 198.18.10.2 ──veth── 198.18.10.1 production (redis/nginx + tcpcopy)
//!                                    198.18.1.1 ──┐
//!                                                 bridge ns (br0)
//!           target 198.18.1.2 (redis :6380, nginx :8080) ──┤
//!           assistant 198.18.1.3 (intercept, ip_forward=0) ─┘
//! ```
//!
//! The target routes the client networks (198.18.10.0/24, the -c range 198.18.20.0/24 and
//! 2001:db8:10::/64) via the assistant, whose forwarding is off, so responses die there and
//! intercept reports them. In the "intercept on the target" layout the target routes them into
//! a veth to an isolated namespace instead and intercept captures on that veth.
//!
//! Counts are taken at the servers: redis `INFO commandstats`, nginx access-log lines. Tests run
//! one at a time (a lock) so that their loads do not disturb each other on a small machine.
//! Build first: `cargo build --release --workspace && cargo test --release -p tcpclone-lab --test tcpcopy_lab`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tcpclone_lab::topo::*;
use tcpclone_lab::*;

/// The first line of a redis-benchmark scenario: skips it, loudly, unless root with redis and
/// ss installed.
macro_rules! require_redis_lab {
    ($name:literal) => {
        require_root!(concat!("tcpcopy_lab::", $name));
        require_programs!(
            "tcpcopy_lab",
            "redis-server",
            "redis-benchmark",
            "redis-cli",
            "ss"
        );
    };
}

/// Runs redis-benchmark and checks that the target got ≥ `min` of each command production got.
// Each argument is one knob of the scenario table in issue 3; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn redis_delivery(
    t: &mut Topo,
    pid: u32,
    host: &str,
    bench: &str,
    cmds: &[&str],
    factor: u64,
    min: f64,
    what: &str,
) -> Vec<String> {
    let baseline = t.half_closed();
    let (p, tg) = (t.prod.clone(), t.target.clone());
    t.client(&format!(
        "timeout 120 redis-benchmark -h {host} -p {REDIS_PROD} {bench} -q"
    ));
    let mut report = Vec::new();
    let mut ok = true;
    for cmd in cmds {
        let prod = redis_calls(&t.lab, &p, REDIS_PROD, cmd);
        let got = settle(prod * factor, Duration::from_secs(20), || {
            redis_calls(&t.lab, &tg, REDIS_TARGET, cmd)
        });
        let r = ratio(got, prod * factor);
        report.push(format!(
            "{cmd}: production {prod}, target {got} ({:.3} %)",
            100.0 * r
        ));
        ok &= prod > 0 && r >= min && got <= prod * factor;
    }
    println!("{what}: {}", report.join("; "));
    let sockets = t.half_closed_report(baseline);
    let summary = t.stop_tcpcopy(pid);
    let mut failures = Vec::new();
    if !ok {
        failures.push(format!(
            "{what}: delivery below {:.1} % (or above 100 %): {}\n{summary}",
            100.0 * min,
            report.join("; ")
        ));
    }
    failures.extend(sockets);
    failures
}

#[test]
fn redis_set_get_20k_10conns() {
    require_root!("tcpcopy_lab::redis_set_get_20k_10conns");
    require_programs!(
        "tcpcopy_lab",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "ss",
        "tcpdump"
    );
    let _g = serial();
    let (mut t, pid) = Topo::redis_lab(Layout::Assistant, "6379-198.18.1.2:6380", &[]);
    // Production safety (issue 5): watch everything production sends during the run. Any
    // packet with a client source that does not go to the target, anything to a client that
    // is not the service answering, and anything to production's own addresses is a leak.
    let (watch, leaks) = t.start_leak_watch(
        "(src host 198.18.10.2 and not dst host 198.18.1.2) or \
         (dst net 198.18.10.0/24 and not src port 6379) or \
         (dst host 198.18.10.1 or dst host 198.18.1.1)",
        "leaks.pcap",
    );
    let failures = redis_delivery(
        &mut t,
        pid,
        PROD4,
        "-n 20000 -c 10 -t set,get",
        &["set", "get"],
        1,
        0.999,
        "redis SET/GET 20k x 10",
    );
    let text = t.leak_report(watch, &leaks);
    println!(
        "packets from production to a client or production address not from the service: {}\n{text}",
        text.lines().count()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        text.trim().is_empty(),
        "tcpcopy sent packets where it must not:\n{text}"
    );
}

/// `--nice N`: every worker runs at that nice value, and clones everything of a light load.
#[test]
fn workers_run_at_the_nice_value_given() {
    require_redis_lab!("workers_run_at_the_nice_value_given");
    let _g = serial();
    let extra = ["--nice", "7", "--workers", "2"];
    let (mut t, pid) = Topo::redis_lab(Layout::Assistant, "6379-198.18.1.2:6380", &extra);
    let nices = worker_nices(pid);
    assert!(
        nices.len() == 2 && nices.iter().all(|&(_, n)| n == 7),
        "tcpcopy's worker threads and their nice values: {nices:?}"
    );
    let failures = redis_delivery(
        &mut t,
        pid,
        PROD4,
        "-n 2000 -c 5 -t set",
        &["set"],
        1,
        0.999,
        "redis SET 2k, --nice 7",
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The `worker-N` threads of process `pid` and their nice values, from /proc.
fn worker_nices(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if !comm.starts_with("worker-") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis start at the 3rd; nice is the 19th.
        let nice = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(16))
            .and_then(|n| n.parse().ok());
        if let Some(n) = nice {
            out.push((comm.to_string(), n));
        }
    }
    out
}

/// `n` redis SETs of 64 KB over 5 connections, cloned by tcpcopy started with `extra` (after
/// `prepare` ran on the lab); fails below `min` delivered. Returns tcpcopy's summary.
fn redis_64k_sets(extra: &[&str], n: u32, min: f64, what: &str, prepare: fn(&mut Topo)) -> String {
    let (mut t, pid) = Topo::redis_lab(Layout::Assistant, "6379-198.18.1.2:6380", extra);
    prepare(&mut t);
    let failures = redis_delivery(
        &mut t,
        pid,
        PROD4,
        &format!("-n {n} -c 5 -t set -d 65536"),
        &["set"],
        1,
        min,
        what,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    t.last_summary.clone()
}

/// A burst of uploads that the default ring holds whatever the worker's pace: each 64 KB SET
/// takes one of its 2,048 blocks of 128 KiB (see `ring_block_size`), so 1,500 leave it under
/// the 7/8 at which a worker that fell behind sheds. With 3,000 the ring held two thirds of
/// the burst: CI's slower worker fell 7/8 behind once, 75 ms late, and shed 72 % of them.
#[test]
fn redis_set_64k_values() {
    require_redis_lab!("redis_set_64k_values");
    let _g = serial();
    let sum = &redis_64k_sets(&[], 1500, 0.999, "redis SET 64 KB x 1500 x 5", |_| {});
    // --send packet (the default): the uploads left through the packet socket, mostly as
    // super-segments the kernel cut, not one system call's worth of work per segment.
    let (sent, via_packet, gso) = (
        counter(sum, "sent"),
        counter(sum, "sent_via_packet"),
        counter(sum, "gso_frames"),
    );
    assert!(
        via_packet * 10 >= sent * 9 && gso >= 1000,
        "expected nearly every segment through the packet socket in 64 KB frames: sent={sent} \
         sent_via_packet={via_packet} gso_frames={gso}\n{sum}"
    );
    // The values arrive in super-frames, whose payloads stay in the capture ring until the
    // target has them (how many depends on how far the target lags: a lagging clone's bytes
    // are copied out to give the kernel its blocks back); every SET arrived above.
    let in_ring = engine_counter(sum, "in_ring");
    assert!(in_ring > 0, "expected payloads left in the ring:\n{sum}");
}

/// The same uploads through a small ring (64 MB). Production fills it faster than the kernel
/// may be left to fill it while the worker waits for a CPU here (both are busy): the sessions
/// hold few payloads in it, copy the rest as they read them, and copy out what they hold before
/// the kernel comes round to their blocks. Holding half the ring whatever the rate, as before,
/// lost frames in about half of the runs.
///
/// The worker cannot keep up with this burst: it sheds connections once 7/8 of the ring waits,
/// so only a part of the SETs is asked for (5 %: the clone worked at all). How large a part
/// depends on when the worker falls that far behind: 28–100 % delivered in this lab while each
/// request waited for its answer; with `--max-lag` 12.7–34.3 %, since requests sent pipelined
/// load the worker with the target's receive path (a veth runs it in the send) while it
/// should be reading (4 runs each way: 32–34 % against 31–100 %); and when it is
/// kept off its CPU just then, the kernel drops a few frames at the end of the ring (kernel
/// drops, counted). What is checked is that those were never the hold's: the kernel was never
/// found stopped at a held block.
#[test]
fn redis_set_64k_values_small_ring() {
    require_redis_lab!("redis_set_64k_values_small_ring");
    let _g = serial();
    let what = "redis SET 64 KB x 3000 x 5, 64 MB ring";
    let sum = &redis_64k_sets(&["-B", "64"], 3000, 0.05, what, |_| {});
    let (in_ring, copyouts, overruns, drops) = (
        engine_counter(sum, "in_ring"),
        counter(sum, "ring_copyouts"),
        counter(sum, "ring_hold_overruns"),
        counter(sum, "kernel_drops"),
    );
    println!("ring_copyouts={copyouts} ring_hold_overruns={overruns} kernel_drops={drops}");
    assert!(
        in_ring > 0 && overruns == 0,
        "expected payloads left in the ring, copied out before the kernel came round to them: \
         in_ring={in_ring} ring_copyouts={copyouts} ring_hold_overruns={overruns} \
         kernel_drops={drops}\n{sum}"
    );
}

/// What `redis_set_64k_values_small_ring` checks can fail: a worker kept from its CPU
/// (SIGSTOP) while its session holds payloads in the ring (the target's redis is stopped, so
/// they stay unacknowledged) leaves the kernel to fill the rest of the ring; it stops at the held
/// block and drops, and tcpcopy counts that in `ring_hold_overruns` once it runs again.
#[test]
fn a_held_block_that_stops_the_kernel_is_counted() {
    require_redis_lab!("a_held_block_that_stops_the_kernel_is_counted");
    let _g = serial();
    let mut t = Topo::new(Layout::Assistant);
    let (p, tg) = (t.prod.clone(), t.target.clone());
    t.start_redis(&p, REDIS_PROD, "redis-prod");
    let target_redis = t.start_redis(&tg, REDIS_TARGET, "redis-target");
    t.start_intercept(REDIS_FILTER);
    let pid = t.start_tcpcopy(&["-x", "6379-198.18.1.2:6380"]);
    let sets = |n: u32, c: u32| {
        format!(
            "timeout 60 redis-benchmark -h {PROD4} -p {REDIS_PROD} -n {n} -c {c} -t set -d 65536 -q"
        )
    };
    // 20 SETs on one connection: the stopped target takes the first into its window, the
    // clone waits for its answer, and the rest stay in the ring.
    sh(&format!("kill -STOP {target_redis}"));
    t.client(&sets(20, 1));
    std::thread::sleep(Duration::from_millis(300));
    // More than the default ring's 2,048 blocks (one 64 KB SET takes a block) while tcpcopy
    // is stopped.
    sh(&format!("kill -STOP {pid}"));
    t.client(&sets(2500, 5));
    sh(&format!("kill -CONT {pid}"));
    std::thread::sleep(Duration::from_millis(1000));
    sh(&format!("kill -CONT {target_redis}"));
    std::thread::sleep(Duration::from_millis(500));
    let sum = t.stop_tcpcopy(pid);
    let (overruns, drops) = (
        counter(&sum, "ring_hold_overruns"),
        counter(&sum, "kernel_drops"),
    );
    assert!(
        overruns >= 1 && drops >= 1,
        "expected the kernel stopped at the held block and counted: ring_hold_overruns={overruns} \
         kernel_drops={drops}\n{sum}"
    );
}

/// 64 KB SETs on one connection while the target's redis is stopped: no answer comes, the
/// clone's requests pile up, and once the session holds 1 MiB unsent a request `--max-lag`
/// (20 ms) behind production goes behind the unanswered one (`pipelined`), into what the
/// target's socket takes. With `--max-lag 0` none goes that way. Every SET reaches the target
/// either way once it runs again.
fn uploads_to_a_stopped_target(extra: &[&str]) -> u64 {
    let mut t = Topo::new(Layout::Assistant);
    let (p, tg) = (t.prod.clone(), t.target.clone());
    t.start_redis(&p, REDIS_PROD, "redis-prod");
    let target_redis = t.start_redis(&tg, REDIS_TARGET, "redis-target");
    t.start_intercept(REDIS_FILTER);
    let mut args = vec!["-x", "6379-198.18.1.2:6380"];
    args.extend_from_slice(extra);
    let pid = t.start_tcpcopy(&args);
    sh(&format!("kill -STOP {target_redis}"));
    t.client(&format!(
        "timeout 60 redis-benchmark -h {PROD4} -p {REDIS_PROD} -n 200 -c 1 -t set -d 65536 -q"
    ));
    std::thread::sleep(Duration::from_millis(300));
    sh(&format!("kill -CONT {target_redis}"));
    let prod = redis_calls(&t.lab, &p, REDIS_PROD, "set");
    let got = settle(prod, Duration::from_secs(20), || {
        redis_calls(&t.lab, &tg, REDIS_TARGET, "set")
    });
    let sum = t.stop_tcpcopy(pid);
    let pipelined = engine_counter(&sum, "pipelined");
    println!("{extra:?}: production {prod} SETs, target {got}, pipelined={pipelined}");
    assert!(
        prod == 200 && got == prod,
        "{extra:?}: the target got {got} of production's {prod} SETs\n{sum}"
    );
    pipelined
}

#[test]
fn uploads_behind_a_stopped_target_go_pipelined() {
    require_redis_lab!("uploads_behind_a_stopped_target_go_pipelined");
    let _g = serial();
    let on = uploads_to_a_stopped_target(&[]);
    assert!(
        on > 0,
        "expected SETs sent before the previous answer: pipelined={on}"
    );
    let off = uploads_to_a_stopped_target(&["--max-lag", "0"]);
    assert_eq!(off, 0, "--max-lag 0 waits for every answer");
}

#[test]
fn redis_set_64k_values_before_the_neighbour_is_known() {
    require_redis_lab!("redis_set_64k_values_before_the_neighbour_is_known");
    let _g = serial();
    let what = "redis SET 64 KB x 1000 x 5, neighbour flushed";
    let sum = &redis_64k_sets(&[], 1000, 0.999, what, |t| {
        let prod = t.prod.clone();
        t.lab.exec_ok(&prod, "ip neigh flush to 198.18.1.2");
    });
    assert!(counter(sum, "hop_unresolved") >= 1, "{sum}");
    assert!(counter(sum, "sent_via_packet") > 0, "{sum}");
    assert_eq!(counter(sum, "send_refused"), 0, "{sum}");
}

/// The same uploads with `--send raw`: every segment through the raw IP socket, as before.
#[test]
fn redis_set_64k_values_send_raw() {
    require_redis_lab!("redis_set_64k_values_send_raw");
    let _g = serial();
    let what = "redis SET 64 KB x 1000 x 5, --send raw";
    let sum = &redis_64k_sets(&["--send", "raw"], 1000, 0.999, what, |_| {});
    assert_eq!(counter(sum, "sent_via_packet"), 0, "{sum}");
    assert_eq!(
        counter(sum, "gso_frames") + counter(sum, "gso_soft"),
        0,
        "{sum}"
    );
    assert!(counter(sum, "sent") > 45_000, "{sum}");
}

/// The first `name=N` of the summary's counters line.
/// A capture ring far too small for a burst of uploads at memory speed (`-B 1`: 8 blocks of
/// 128 KiB) overflows: tcpcopy sheds whole connections rather than cloning pieces of every
/// one, nothing reaches the target twice, and once the burst is over it clones new
/// connections again in full.
#[test]
fn an_overflowing_capture_sheds_connections_and_recovers() {
    require_redis_lab!("an_overflowing_capture_sheds_connections_and_recovers");
    let _g = serial();
    let (mut t, pid) = Topo::redis_lab(Layout::Assistant, "6379-198.18.1.2:6380", &["-B", "1"]);
    let (p, tg) = (t.prod.clone(), t.target.clone());
    t.client(&format!(
        "timeout 120 redis-benchmark -h {PROD4} -p {REDIS_PROD} -n 2000 -c 20 -t set -d 65536 -q"
    ));
    let prod_set = redis_calls(&t.lab, &p, REDIS_PROD, "set");
    let got_set = settle(prod_set, Duration::from_secs(10), || {
        redis_calls(&t.lab, &tg, REDIS_TARGET, "set")
    });
    println!("the burst: production {prod_set} SETs of 64 KB, target {got_set}");
    // The recovery: new keep-alive connections, delivered in full.
    let failures = redis_delivery(
        &mut t,
        pid,
        PROD4,
        "-n 3000 -c 5 -t incr",
        &["incr"],
        1,
        0.99,
        "after the burst, INCR x 5 keep-alive",
    );
    let sum = t.last_summary.clone();
    let drops = counter(&sum, "kernel_drops");
    let overloads = counter(&sum, "overloads");
    let shed = engine_counter(&sum, "shed") + engine_counter(&sum, "new");
    println!(
        "kernel_drops {drops}, overloads {overloads}, shed {shed}, cut {}",
        engine_counter(&sum, "gaps")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        got_set <= prod_set,
        "the target got more SETs than production: {got_set} > {prod_set}"
    );
    if drops == 0 {
        println!(
            "NOTE: a 1 MB ring did not overflow under 2,000 uploads of 64 KB here: shedding not \
             exercised"
        );
        return;
    }
    assert!(
        overloads >= 1 && shed >= 1,
        "the ring overflowed ({drops} kernel drops) and nothing was shed:\n{sum}"
    );
}

fn counter(summary: &str, name: &str) -> u64 {
    summary_counter(summary, "counters:", name)
}

/// An `engine:` counter of tcpcopy's summary.
fn engine_counter(summary: &str, name: &str) -> u64 {
    summary_counter(summary, "engine:", name)
}

/// `name=N` on the summary line that starts with `line` (perhaps after a parenthesis).
fn summary_counter(summary: &str, line: &str, name: &str) -> u64 {
    summary
        .lines()
        .find(|l| l.trim_start().starts_with(line))
        .and_then(|l| {
            l.split_whitespace()
                .filter_map(|w| {
                    w.trim_start_matches('(')
                        .strip_prefix(name)?
                        .strip_prefix('=')
                })
                .find_map(|v| v.trim_end_matches([')', ';']).parse().ok())
        })
        .unwrap_or_else(|| panic!("no {line} {name}= in the summary:\n{summary}"))
}

#[test]
fn redis_ipv6_set_get() {
    require_redis_lab!("redis_ipv6_set_get");
    let _g = serial();
    let mapping = format!("[{PROD6}]:6379-[{TARGET6}]:6380");
    let mut t = Topo::new(Layout::Assistant);
    let (p, tg) = (t.prod.clone(), t.target.clone());
    t.start_redis(&p, REDIS_PROD, "redis-prod");
    t.start_redis(&tg, REDIS_TARGET, "redis-target");
    t.start_intercept("tcp and src port 6380");
    let pid = t.start_tcpcopy(&["-x", &mapping]);
    let failures = redis_delivery(
        &mut t,
        pid,
        PROD6,
        "-n 10000 -c 10 -t set,get",
        &["set", "get"],
        1,
        0.999,
        "redis IPv6 SET/GET 10k x 10",
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn redis_intercept_on_target() {
    require_redis_lab!("redis_intercept_on_target");
    let _g = serial();
    let (mut t, pid) = Topo::redis_lab(Layout::OnTarget, "6379-198.18.1.2:6380", &[]);
    let failures = redis_delivery(
        &mut t,
        pid,
        PROD4,
        "-n 10000 -c 10 -t set,get",
        &["set", "get"],
        1,
        0.999,
        "redis, intercept on target",
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn copies_n2_doubles() {
    require_redis_lab!("copies_n2_doubles");
    let _g = serial();
    let (mut t, pid) = Topo::redis_lab(Layout::Assistant, "6379-198.18.1.2:6380", &["-n", "2"]);
    let failures = redis_delivery(
        &mut t,
        pid,
        PROD4,
        "-n 10000 -c 10 -t set,get",
        &["set", "get"],
        2,
        0.999,
        "redis -n 2",
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `--workers 2`: the fanout shares the sessions between two engines; `-n 2` and `-c` draw
/// their client addresses from one table, so the four copies of the sessions never collide on
/// a 4-tuple and every command reaches the target twice; responses reach the worker that owns
/// the session (a lost response would stall its clone and show as a shortfall).
#[test]
fn two_workers_n2_with_client_ips_doubles() {
    require_redis_lab!("two_workers_n2_with_client_ips_doubles");
    let _g = serial();
    let (mut t, pid) = Topo::redis_lab(
        Layout::Assistant,
        "6379-198.18.1.2:6380",
        &["--workers", "2", "-n", "2", "-c", "198.18.20.1,198.18.20.2"],
    );
    let failures = redis_delivery(
        &mut t,
        pid,
        PROD4,
        "-n 10000 -c 20 -t set,get",
        &["set", "get"],
        2,
        0.999,
        "redis --workers 2 -n 2 -c",
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Both workers had sessions (20 connections hashed over two rings: all on one side is
    // 2 in a million).
    let log = std::fs::read_to_string(t.path("tcpcopy.log")).unwrap_or_default();
    let per: Vec<u64> = log
        .lines()
        .find_map(|l| l.split("sessions cloned per worker: ").nth(1))
        .map(|v| {
            // The counts end where the workers' CPU times begin.
            v.split(',')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        per.len() == 2 && per.iter().all(|&n| n > 0),
        "sessions per worker {per:?}:\n{log}"
    );
}

/// Raw mode's `--report`: the same JSON and HTML report as stream mode's, from the requests the
/// engine sent and the answers intercept reported. The files are created before tcpcopy drops
/// to `nobody` and written at the end.
#[test]
fn raw_mode_report_json_and_html() {
    require_redis_lab!("raw_mode_report_json_and_html");
    let _g = serial();
    let base = std::env::temp_dir().join(format!("tcpclone-raw-report-{}", std::process::id()));
    let (json, html) = (base.with_extension("json"), base.with_extension("html"));
    let (js, hs) = (json.display().to_string(), html.display().to_string());
    let (mut t, pid) = Topo::redis_lab(
        Layout::Assistant,
        "6379-198.18.1.2:6380",
        &["--report", &js, "--report", &hs],
    );
    let failures = redis_delivery(
        &mut t,
        pid,
        PROD4,
        "-n 4000 -c 10 -t set",
        &["set"],
        1,
        0.999,
        "redis with --report",
    );
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let page = std::fs::read_to_string(&html).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&html);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let r: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("--report {js} is not JSON ({e}):\n{text}"));
    let test = &r["test"];
    let (requests, answered) = (
        test["requests"].as_u64().unwrap_or(0),
        test["answered"].as_u64().unwrap_or(0),
    );
    let p50 = test["latency_ms"]["p50"].as_f64().unwrap_or(0.0);
    let p99 = test["latency_ms"]["p99"].as_f64().unwrap_or(0.0);
    println!(
        "raw --report: mode {}, requests {requests}, answered {answered}, latency p50 {p50:.3} ms p99 {p99:.3} ms, rps {:.0}, sessions {}",
        r["mode"], test["rps"], r["sessions"]
    );
    assert_eq!(r["schema"], "tcpclone.report");
    assert_eq!(r["mode"], "raw");
    // redis-benchmark's 4,000 SETs, plus its CONFIG GET on one more connection.
    assert!(
        (4000..=4010).contains(&requests),
        "requests {requests}, want 4,000 SETs (+ CONFIG GET)\n{text}"
    );
    assert!(
        answered as f64 >= 0.999 * requests as f64,
        "answered {answered} of {requests}\n{text}"
    );
    // The target is a redis on a veth in the same machine: well under a second, above zero.
    assert!(p50 > 0.0 && p50 < 1000.0, "latency p50 {p50} ms\n{text}");
    assert!(
        r["sessions"]["replayed"].as_u64().unwrap_or(0) >= 10,
        "{text}"
    );
    // redis-benchmark's SETs by endpoint (raw mode decodes what the engine sends).
    let set = r["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["endpoint"] == "SET"))
        .map(|e| e["test"]["requests"].as_u64().unwrap_or(0));
    assert_eq!(set, Some(4000), "{text}");
    // The three charts (latency percentiles, throughput, latency over time), each with a test
    // curve of several points.
    let curves = page
        .split("<polyline")
        .skip(1)
        .filter(|l| {
            l.split("points=\"")
                .nth(1)
                .is_some_and(|p| p.split('"').next().unwrap_or("").split(' ').count() >= 4)
        })
        .count();
    assert!(
        page.matches("<svg").count() == 3 && curves >= 3,
        "--report {hs}: {} charts, {curves} curves with data points:\n{page:.2000}",
        page.matches("<svg").count()
    );
}

#[test]
fn percentage_r50_samples_sessions() {
    require_redis_lab!("percentage_r50_samples_sessions");
    let _g = serial();
    let (mut t, pid) = Topo::redis_lab(Layout::Assistant, "6379-198.18.1.2:6380", &["-r", "50"]);
    let baseline = t.half_closed();
    // -k 0: a new connection per request, so 3,000 sessions.
    t.client(&format!(
        "timeout 120 redis-benchmark -h {PROD4} -p {REDIS_PROD} -n 3000 -c 10 -k 0 -t set -q"
    ));
    let prod = redis_calls(&t.lab, &t.prod, REDIS_PROD, "set");
    let tg = t.target.clone();
    let got = settle(prod, Duration::from_secs(5), || {
        redis_calls(&t.lab, &tg, REDIS_TARGET, "set")
    });
    let r = ratio(got, prod);
    println!(
        "-r 50: production {prod} sessions (one SET each), target {got} ({:.2} %)",
        100.0 * r
    );
    let sockets = t.half_closed_report(baseline);
    let summary = t.stop_tcpcopy(pid);
    assert!(
        prod >= 2000 && (0.47..=0.53).contains(&r),
        "-r 50 gave {:.2} % of {prod}\n{summary}",
        100.0 * r
    );
    assert!(sockets.is_none(), "{}", sockets.unwrap_or_default());
}

/// A wrk script giving every request a path of its own.
const UNIQUE_PATHS_LUA: &str = r#"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local n = 0
function request()
  n = n + 1
  return wrk.format(nil, "/?r=" .. id .. "-" .. n)
end
"#;

/// How many of the named requests (`/?r=…`) in an access log (`NGINX_LOG_FORMAT`) appear more
/// than once (nginx logs `-` for a connection cut before its request line: not a request).
fn requests_seen_twice(log: &Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    text.lines()
        .filter_map(|l| l.splitn(3, ' ').nth(2))
        .filter(|req| req.contains("/?r="))
        .filter(|req| !seen.insert(*req))
        .count()
}

/// Drops `per_mille` ‰ of the TCP segments the target receives on its HTTP port and as many of
/// those it sends (nftables in the target namespace, gone with it): a lossy path both ways.
fn lossy_target(t: &Topo, per_mille: u32) {
    let rules = format!(
        "table inet tcpclone_loss {{\n\
         chain i {{ type filter hook input priority 0; tcp dport {HTTP_TARGET} numgen random mod 1000 < {per_mille} counter drop; }}\n\
         chain o {{ type filter hook output priority 0; tcp sport {HTTP_TARGET} numgen random mod 1000 < {per_mille} counter drop; }}\n\
         }}\n"
    );
    let file = t.path("loss.nft");
    std::fs::write(&file, rules).unwrap();
    t.lab
        .exec_ok(&t.target, &format!("nft -f {}", file.display()));
}

/// Segments the rules of [`lossy_target`] dropped: (to the target, from it).
fn lossy_drops(t: &Topo) -> (u64, u64) {
    let out = t
        .lab
        .exec_ok(&t.target, "nft list table inet tcpclone_loss");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = text.lines().filter_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        let i = w.iter().position(|x| *x == "packets")?;
        w.get(i + 1)?.parse::<u64>().ok()
    });
    (n.next().unwrap_or(0), n.next().unwrap_or(0))
}

fn nginx_delivery(close: bool, min: f64) {
    nginx_delivery_with(close, min, 0);
}

/// `loss`: ‰ of the segments dropped each way between the target and the LAN (0: none).
fn nginx_delivery_with(close: bool, min: f64, loss: u32) {
    let (mut t, pid, prod_log, target_log) = Topo::nginx_lab(&[]);
    let baseline = t.half_closed();
    if loss > 0 {
        lossy_target(&t, loss);
    }
    let hdr = if close { "-H 'Connection: close'" } else { "" };
    // Every request names itself (`/?r=<thread>-<n>`), so a request the target got twice
    // shows as such instead of hiding behind one that was lost.
    let script = t.path("unique.lua");
    std::fs::write(&script, UNIQUE_PATHS_LUA).unwrap();
    let out = t.client(&format!(
        "timeout 30 wrk -t2 -c20 -d3s -s {} {hdr} http://{PROD4}/",
        script.display()
    ));
    // nginx logs a request once it is answered: the last ones in flight when wrk stopped can
    // land a moment later (counted too early, the target seemed to get more than production).
    let prod = settle(u64::MAX, Duration::from_secs(3), || line_count(&prod_log));
    let got = settle(prod, Duration::from_secs(20), || line_count(&target_log));
    // Read production's count again: on a loaded machine a request answered before wrk stopped
    // can still be logged after the first settle, and the target would seem to get more.
    let prod = prod.max(line_count(&prod_log));
    let r = ratio(got, prod);
    let twice = requests_seen_twice(&target_log);
    let what = if close {
        "wrk Connection: close"
    } else {
        "wrk keep-alive"
    };
    println!(
        "{what}: production {prod} requests, target {got} ({:.3} %), {twice} of them twice",
        100.0 * r
    );
    // On a lossy path the target's retransmission timeout doubles with each loss of the same
    // segment: an answer or FIN whose ACK (or our RST) was lost twice comes again seconds
    // later, and only then does a clone, or the reset for a session gone, close the socket.
    let wait = Duration::from_secs(if loss > 0 { 30 } else { 8 });
    let sockets = t.half_closed_report_within(baseline, wait);
    let drops = (loss > 0).then(|| lossy_drops(&t));
    if let Some((to, from)) = drops {
        println!("the lossy path dropped {to} segments to the target and {from} from it");
    }
    let summary = t.stop_tcpcopy(pid);
    println!("{summary}");
    // A lossy run that dropped nothing would prove nothing.
    let lossy_ok = drops.is_none_or(|(to, from)| to > 0 && from > 0);
    let ok = prod > 1000 && r >= min && got <= prod && twice == 0 && lossy_ok;
    if let (true, Ok(keep)) = (!ok || got < prod, std::env::var("TCPCLONE_KEEP_LOGS")) {
        // For a post-mortem, also of a run that lost fewer requests than it may: both access
        // logs and tcpcopy's log.
        let dir = PathBuf::from(keep).join(format!("nginx-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(&prod_log, dir.join("prod.log"));
        let _ = std::fs::copy(&target_log, dir.join("target.log"));
        let _ = std::fs::copy(t.path("tcpcopy.log"), dir.join("tcpcopy.log"));
        println!("logs kept in {}", dir.display());
    }
    assert!(
        ok,
        "{what}: {got} of {prod} requests, {:.3} % delivered, {twice} requests twice (want \
         ≥ {:.1} %, none twice); segments dropped by the lossy path (to, from the target): \
         {drops:?}\n{out}\n{summary}",
        100.0 * r,
        100.0 * min
    );
    assert!(sockets.is_none(), "{}", sockets.unwrap_or_default());
}

#[test]
fn nginx_keepalive_wrk() {
    require_root!("tcpcopy_lab::nginx_keepalive_wrk");
    require_programs!("tcpcopy_lab", "nginx", "wrk", "curl", "ss");
    let _g = serial();
    nginx_delivery(false, 0.999);
}

#[test]
fn nginx_connection_close_wrk() {
    require_root!("tcpcopy_lab::nginx_connection_close_wrk");
    require_programs!("tcpcopy_lab", "nginx", "wrk", "curl", "ss");
    let _g = serial();
    nginx_delivery(true, 0.995);
}

/// A lossy path between tcpcopy and the target (1 % of the segments dropped each way, every
/// connection's handshake, request, answer and FIN exposed): retransmissions deliver every
/// request once, and every clone closes.
#[test]
fn nginx_connection_close_lossy_target() {
    require_root!("tcpcopy_lab::nginx_connection_close_lossy_target");
    require_programs!("tcpcopy_lab", "nginx", "wrk", "curl", "ss", "nft");
    let _g = serial();
    nginx_delivery_with(true, 0.995, 10);
}

/// The same lossy path under keep-alive connections: a lost segment in the middle of a
/// conversation is retransmitted without losing or repeating a request.
#[test]
fn nginx_keepalive_lossy_target() {
    require_root!("tcpcopy_lab::nginx_keepalive_lossy_target");
    require_programs!("tcpcopy_lab", "nginx", "wrk", "curl", "ss", "nft");
    let _g = serial();
    nginx_delivery_with(false, 0.999, 10);
}

#[test]
fn client_ip_rewrite_c() {
    require_root!("tcpcopy_lab::client_ip_rewrite_c");
    require_programs!("tcpcopy_lab", "nginx", "wrk", "curl", "ss");
    let _g = serial();
    let (mut t, pid, prod_log, target_log) = Topo::nginx_lab(&["-c", "198.18.20.x"]);
    let baseline = t.half_closed();
    t.client(&format!("timeout 30 wrk -t2 -c10 -d1s http://{PROD4}/"));
    let prod = line_count(&prod_log);
    let got = settle(prod, Duration::from_secs(15), || line_count(&target_log));
    let text = std::fs::read_to_string(&target_log).unwrap();
    let addrs: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|a| a.rsplit_once(':'))
        .map(|(ip, _)| ip)
        .collect();
    println!(
        "-c 198.18.20.x: production {prod}, target {got}; client addresses at target: {addrs:?}"
    );
    let sockets = t.half_closed_report(baseline);
    let summary = t.stop_tcpcopy(pid);
    assert!(
        !addrs.is_empty() && addrs.iter().all(|a| a.starts_with("198.18.20.")),
        "addresses at target: {addrs:?}\n{summary}"
    );
    assert!(ratio(got, prod) >= 0.99, "-c: {got} of {prod}\n{summary}");
    assert!(sockets.is_none(), "{}", sockets.unwrap_or_default());
}

#[test]
fn connection_open_before_start() {
    require_root!("tcpcopy_lab::connection_open_before_start");
    require_programs!("tcpcopy_lab", "redis-server", "redis-cli", "bash", "ss");
    let _g = serial();
    let mut t = Topo::new(Layout::Assistant);
    let (p, tg) = (t.prod.clone(), t.target.clone());
    t.start_redis(&p, REDIS_PROD, "redis-prod");
    t.start_redis(&tg, REDIS_TARGET, "redis-target");
    t.start_intercept(REDIS_FILTER);
    let go = t.path("go");
    let done = t.path("done");
    // One connection: 20 requests before tcpcopy runs, then (once told) 400 more, 5 ms apart.
    let script = format!(
        "exec 3<>/dev/tcp/{PROD4}/{REDIS_PROD}\n\
         for i in $(seq 1 20); do printf 'SET pre%d x\\r\\n' $i >&3; read -r l <&3; done\n\
         n=0; while [ ! -e {go} ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done\n\
         for i in $(seq 1 400); do printf 'SET post%d x\\r\\n' $i >&3; read -r l <&3; sleep 0.005; done\n\
         touch {done}\n",
        go = go.display(),
        done = done.display()
    );
    std::fs::write(t.path("client.sh"), script).unwrap();
    let c = t.client.clone();
    let sp = t.path("client.sh");
    t.lab
        .spawn(&c, &["timeout", "60", "bash", sp.to_str().unwrap()], None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis_calls(&t.lab, &p, REDIS_PROD, "set") < 20 {
        assert!(Instant::now() < deadline, "client did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let baseline = t.half_closed();
    let pid = t.start_tcpcopy(&["-x", "6379-198.18.1.2:6380"]);
    std::fs::write(&go, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done.exists() {
        assert!(Instant::now() < deadline, "client did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let prod_after = redis_calls(&t.lab, &p, REDIS_PROD, "set") - 20;
    let got = settle(prod_after, Duration::from_secs(10), || {
        redis_calls(&t.lab, &tg, REDIS_TARGET, "set")
    });
    let r = ratio(got, prod_after);
    println!(
        "open before start: production {prod_after} requests after start, target {got} ({:.2} %)",
        100.0 * r
    );
    let sockets = t.half_closed_report(baseline);
    let summary = t.stop_tcpcopy(pid);
    assert!(
        prod_after == 400 && r >= 0.99 && got <= prod_after,
        "{got} of {prod_after}\n{summary}"
    );
    assert!(sockets.is_none(), "{}", sockets.unwrap_or_default());
}

/// Records client→production redis traffic with tcpdump in production while `client_cmd`
/// runs; returns the capture's path and production's SET count.
fn record(t: &mut Topo, client_cmd: &str, name: &str) -> (PathBuf, u64) {
    let pcap = t.path(name);
    let p = t.prod.clone();
    let pid = start_tcpdump_opts(
        &mut t.lab,
        &p,
        &["-i", "any", "-s", "2048", "-B", "65536", "-Z", "root"],
        "tcp port 6379",
        &pcap,
    );
    std::thread::sleep(Duration::from_millis(300));
    t.client(client_cmd);
    std::thread::sleep(Duration::from_millis(300));
    t.lab
        .stop(pid, "INT", Duration::from_secs(5))
        .expect("tcpdump stops");
    let log = std::fs::read_to_string(pcap.with_extension("tcpdump.log")).unwrap_or_default();
    // Every packet the filter took must be in the file (without --immediate-mode, tcpdump
    // loses the last unfinished TPACKET_V3 block at exit: counted as received, never written).
    let count = |what: &str| {
        log.lines()
            .find_map(|l| l.trim().strip_suffix(what))
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    let (captured, received) = (
        count("packets captured"),
        count("packets received by filter"),
    );
    assert!(
        log.lines()
            .any(|l| l.trim() == "0 packets dropped by kernel")
            && captured.is_some()
            && captured == received,
        "tcpdump lost packets: {log}"
    );
    (pcap.clone(), redis_calls(&t.lab, &p, REDIS_PROD, "set"))
}

/// Runs tcpcopy --offline to completion (it stops by itself at the end of the file).
fn run_offline(t: &mut Topo, pcap: &Path, extra: &[&str]) -> (Duration, String) {
    let log = t.path("tcpcopy-offline.log");
    let tcpcopy = bin("tcpcopy");
    let mut argv = vec![
        tcpcopy.to_str().unwrap(),
        "--offline",
        pcap.to_str().unwrap(),
        "-x",
        "6379-198.18.1.2:6380",
    ];
    argv.extend_from_slice(extra);
    let icpt = t.icpt_addr.clone();
    let secret = tcpclone_lab::secret_file(t.dir.path());
    argv.extend_from_slice(&["-s", &icpt, "--secret-file", secret.to_str().unwrap()]);
    let p = t.prod.clone();
    let t0 = Instant::now();
    let pid = t.lab.spawn(&p, &argv, Some(&log));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text;
    loop {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("tcpcopy summary") || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = t0.elapsed();
    let _ = t.lab.stop(pid, "INT", Duration::from_secs(3));
    assert!(
        text.contains("tcpcopy summary"),
        "tcpcopy --offline did not finish:\n{text}"
    );
    (took, text)
}

#[test]
fn offline_delivers_every_request() {
    require_root!("tcpcopy_lab::offline_delivers_every_request");
    require_programs!(
        "tcpcopy_lab",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "tcpdump",
        "ss"
    );
    let _g = serial();
    let mut t = Topo::new(Layout::Assistant);
    let (p, tg) = (t.prod.clone(), t.target.clone());
    t.start_redis(&p, REDIS_PROD, "redis-prod");
    t.start_redis(&tg, REDIS_TARGET, "redis-target");
    t.start_intercept(REDIS_FILTER);
    let (pcap, prod) = record(
        &mut t,
        &format!("timeout 60 redis-benchmark -h {PROD4} -p {REDIS_PROD} -n 2000 -c 5 -t set -q"),
        "bench.pcap",
    );
    let baseline = t.half_closed();
    let (_took, text) = run_offline(&mut t, &pcap, &[]);
    // What the capture holds: SET commands in client payloads (RESP `$3\r\nSET\r\n`).
    let bytes = std::fs::read(&pcap).unwrap();
    let in_capture = bytes.windows(9).filter(|w| w == b"$3\r\nSET\r\n").count() as u64;
    let got = settle(in_capture, Duration::from_secs(10), || {
        redis_calls(&t.lab, &tg, REDIS_TARGET, "set")
    });
    println!(
        "--offline: production got {prod} SETs, the capture holds {in_capture}, target got {got}"
    );
    let sockets = t.half_closed_report(baseline);
    assert!(
        in_capture > 0 && got == in_capture,
        "--offline delivered {got} of the {in_capture} SETs in the capture\n{text}"
    );
    assert!(sockets.is_none(), "{}", sockets.unwrap_or_default());
}

/// First-to-last timestamp of data segments matching `filter` in a capture (tcpdump -tt).
/// Also returns the first and last three matching lines, for failure messages.
fn data_span(pcap: &Path, filter: &str) -> (f64, usize, String) {
    let out = sh(&format!(
        "tcpdump -nn -tt -r {} '{filter}' 2>/dev/null",
        pcap.display()
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    // Retransmissions (same sequence range again) do not count: first sight of each range only.
    let mut seen = std::collections::HashSet::new();
    let all: Vec<&str> = text
        .lines()
        .filter(|l| {
            let seq = l.split(", ").find(|f| f.starts_with("seq ")).unwrap_or(l);
            seen.insert(seq.to_string())
        })
        .collect();
    let ts: Vec<f64> = all
        .iter()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let mut excerpt: Vec<&str> = all.iter().take(3).copied().collect();
    excerpt.push("...");
    excerpt.extend(all.iter().skip(all.len().saturating_sub(3)));
    match (ts.first(), ts.last()) {
        (Some(a), Some(b)) => (b - a, ts.len(), excerpt.join("\n")),
        _ => (0.0, 0, String::new()),
    }
}

#[test]
fn offline_speedup_halves_duration() {
    require_root!("tcpcopy_lab::offline_speedup_halves_duration");
    require_programs!(
        "tcpcopy_lab",
        "redis-server",
        "redis-cli",
        "tcpdump",
        "bash",
        "ss"
    );
    let _g = serial();
    let mut t = Topo::new(Layout::Assistant);
    let (p, tg) = (t.prod.clone(), t.target.clone());
    t.start_redis(&p, REDIS_PROD, "redis-prod");
    t.start_redis(&tg, REDIS_TARGET, "redis-target");
    t.start_intercept(REDIS_FILTER);
    // A client that thinks 20 ms between requests: 100 requests on one connection.
    let script = format!(
        "exec 3<>/dev/tcp/{PROD4}/{REDIS_PROD}\n\
         for i in $(seq 1 100); do printf 'SET k%d x\\r\\n' $i >&3; read -r l <&3; sleep 0.02; done\n\
         exec 3>&-\n"
    );
    std::fs::write(t.path("think.sh"), script).unwrap();
    let cmd = format!("timeout 30 bash {}", t.path("think.sh").display());
    let (pcap, prod) = record(&mut t, &cmd, "think.pcap");
    let payload = "(ip[2:2] - ((ip[0]&0xf)<<2) - ((tcp[12]&0xf0)>>2)) > 0";
    let (span_orig, n_orig, ex_orig) =
        data_span(&pcap, &format!("tcp dst port 6379 and {payload}"));
    // Watch what the target receives.
    let seen = t.path("target.pcap");
    let tcpdump = start_tcpdump_opts(
        &mut t.lab,
        &tg,
        &["-i", "any", "-s", "128", "-Z", "root"],
        "tcp dst port 6380 and src host 198.18.10.2",
        &seen,
    );
    std::thread::sleep(Duration::from_millis(300));
    let baseline = t.half_closed();
    let (_took, text) = run_offline(&mut t, &pcap, &["-a", "2"]);
    let got = settle(prod, Duration::from_secs(5), || {
        redis_calls(&t.lab, &tg, REDIS_TARGET, "set")
    });
    std::thread::sleep(Duration::from_millis(300));
    t.lab.stop(tcpdump, "INT", Duration::from_secs(5));
    let (span_copy, n_copy, ex_copy) = data_span(
        &seen,
        &format!("tcp dst port 6380 and src host 198.18.10.2 and {payload}"),
    );
    let r = span_copy / (span_orig / 2.0);
    println!(
        "-a 2: capture spans {span_orig:.3}s ({n_orig} data segments), target saw {span_copy:.3}s ({n_copy}); \
         ratio to half = {r:.3}; target SETs {got} of {prod}"
    );
    let sockets = t.half_closed_report(baseline);
    assert!(got == prod, "-a 2 delivered {got} of {prod}\n{text}");
    assert!(
        (0.9..=1.1).contains(&r),
        "-a 2 took {span_copy:.3}s for a {span_orig:.3}s capture (ratio {r:.3})\n\
         capture:\n{ex_orig}\nat target:\n{ex_copy}\n{text}"
    );
    assert!(sockets.is_none(), "{}", sockets.unwrap_or_default());
}

/// Capture-to-engine latency on a quiet host: one small request every 10 ms. tcpcopy's summary
/// reports the percentiles from capture timestamps (kernel receive time) to the moment the
/// engine has handled the segment and its transmits went out. The tail is printed (on a shared
/// 2-core machine it is dominated by scheduling).
/// - Immediate mode (the default, a wake-up per packet): the median must be ≤ 1 ms.
/// - Block mode (TPACKET_V3, `--capture-block 1`): a block waits up to the timeout, which the
///   kernel rounds up to its timer tick where it has no high-resolution block timer (4 ms at
///   HZ=250), so the median must be ≤ 5 ms (0.8–0.9 ms on this lab's 6.18 kernel).
#[test]
fn capture_to_send_latency_idle() {
    require_root!("tcpcopy_lab::capture_to_send_latency_idle");
    require_programs!("tcpcopy_lab", "redis-server", "redis-cli", "bash", "ss");
    let _g = serial();
    let mut failures = Vec::new();
    for (mode, extra, bound_us) in [
        ("immediate mode", &[][..], 1000),
        ("--capture-block 1", &["--capture-block", "1"][..], 5000),
    ] {
        let (mut t, pid) = Topo::redis_lab(Layout::Assistant, "6379-198.18.1.2:6380", extra);
        let script = format!(
            "exec 3<>/dev/tcp/{PROD4}/{REDIS_PROD}\n\
             for i in $(seq 1 200); do printf 'PING\\r\\n' >&3; read -r l <&3; sleep 0.01; done\n"
        );
        std::fs::write(t.path("ping.sh"), script).unwrap();
        t.client(&format!("timeout 30 bash {}", t.path("ping.sh").display()));
        let summary = t.stop_tcpcopy(pid);
        let line = summary
            .lines()
            .find(|l| l.contains("latency_us:"))
            .unwrap_or_default()
            .to_string();
        let field = |k: &str| -> u64 {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX)
        };
        let (p50, p99) = (field("p50="), field("p99="));
        println!("idle capture->engine latency, {mode}: p50 {p50} us, p99 {p99} us");
        if p50 > bound_us {
            failures.push(format!(
                "{mode}: median capture-to-send latency {p50} us > {bound_us} us\n{summary}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `--max-pps`: a burst of redis SETs from production (over the cap for a moment) reaches the
/// target whole (held, not dropped), and no faster than the cap: 2,000 SETs need at least
/// 2,000 packets, so at 1,000 pps the last one cannot arrive before about 2 s, while production
/// serves the burst in a fraction of that.
#[test]
fn max_pps_holds_packets_without_loss() {
    require_redis_lab!("max_pps_holds_packets_without_loss");
    let _g = serial();
    const CAP: u64 = 1000;
    const SETS: u64 = 2000;
    let (mut t, pid) = Topo::redis_lab(
        Layout::Assistant,
        "6379-198.18.1.2:6380",
        &["--max-pps", &CAP.to_string()],
    );
    let (p, tg) = (t.prod.clone(), t.target.clone());
    let started = Instant::now();
    t.client(&format!(
        "timeout 60 redis-benchmark -h {PROD4} -p {REDIS_PROD} -n {SETS} -c 5 -t set -q"
    ));
    let prod_took = started.elapsed().as_secs_f64();
    let prod = redis_calls(&t.lab, &p, REDIS_PROD, "set");
    // Poll finely: the arrival time of the last SET is what is measured.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = 0;
    while Instant::now() < deadline {
        got = redis_calls(&t.lab, &tg, REDIS_TARGET, "set");
        if got >= prod {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let clone_took = started.elapsed().as_secs_f64();
    let summary = t.stop_tcpcopy(pid);
    let counter = |k: &str| -> u64 {
        summary
            .lines()
            .filter(|l| l.trim_start().starts_with("counters:"))
            .flat_map(|l| l.split_whitespace())
            .find_map(|f| f.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    };
    let (sent, held) = (counter("sent="), counter("rate_held="));
    println!(
        "--max-pps {CAP}: production served {prod} SETs in {prod_took:.2} s; the target had \
         {got} after {clone_took:.2} s; tcpcopy sent {sent} packets, held {held} times"
    );
    assert_eq!(prod, SETS, "production did not get every SET");
    assert_eq!(got, prod, "packets were lost under the cap\n{summary}");
    assert!(
        held > 0 && held != u64::MAX,
        "the cap never held anything\n{summary}"
    );
    // SETS packets at CAP pps, less the 10 ms burst and the 20 ms poll.
    let least = SETS as f64 / CAP as f64 - 0.05;
    assert!(
        clone_took >= least,
        "{got} SETs reached the target in {clone_took:.2} s: faster than --max-pps {CAP} allows"
    );
}
