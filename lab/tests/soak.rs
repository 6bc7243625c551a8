//! The bounded soak of tcpcopy + intercept (issue 5, "Load held"), ignored by default: run it
//! with `scripts/soak.sh MINUTES` or
//! `TCPCLONE_SOAK_SECS=600 cargo test --release -p tcpclone-lab --test soak -- --ignored --nocapture`.
//!
//! The tcpcopy lab of `lab/tests/tcpcopy_lab.rs` (assistant layout) with redis and nginx in
//! production (:6379, :80) and on the target (:6380, :8080), intercept capturing both, and
//! `tcpcopy -n 2` copying both. Mixed traffic runs in rounds until the time is up: redis-benchmark
//! keep-alive and one connection per request, wrk keep-alive and `Connection: close`, each
//! bounded. wrk is paced (a request per connection per millisecond at most, ~3,000–4,000 a
//! second): unpaced, its rate grew with the machine's speed until production, tcpcopy and the
//! target, which serves twice production's requests with `-n 2`, wanted more than the two
//! vCPUs they share, and the soak measured that saturation instead of tcpcopy over time.
//! tcpcopy's and intercept's RSS and open file descriptors and the target's TCP sockets
//! (TIME-WAIT aside) are sampled at minute 2 (half-way for runs under 4 minutes) and at the end;
//! their memory (VmRSS and its anonymous, file and shared parts) is also printed every minute.
//!
//! Passes when delivery (target count / 2 x production count) is ≥ 99.9 % for redis commands and
//! for nginx requests, RSS and fds grew ≤ 5 % between the samples, and the target's sockets
//! stayed flat (≤ 5 % + 5).

use std::time::{Duration, Instant};
use tcpclone_lab::topo::*;
use tcpclone_lab::*;

/// Duration of the soak when `TCPCLONE_SOAK_SECS` is not set.
const DEFAULT_SECS: u64 = 60;

/// One sample: tcpcopy RSS kB and fds, intercept RSS kB and fds, target sockets.
#[derive(Debug, Clone, Copy)]
struct Sample {
    tcpcopy_rss: u64,
    tcpcopy_fds: u64,
    intercept_rss: u64,
    intercept_fds: u64,
    target_sockets: u64,
}

/// The machine's 1-, 5- and 15-minute load averages (the figures depend on them).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `VmRSS RssAnon RssFile RssShmem` of a process in kB, one string (empty once it is gone): the
/// per-minute memory line shows which kind of memory moves.
fn rss_parts(pid: u32) -> String {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    ["VmRSS:", "RssAnon:", "RssFile:", "RssShmem:"]
        .iter()
        .filter_map(|k| {
            st.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next())
                .map(|v| format!("{}={v}", k.trim_end_matches(':')))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn sample(t: &Topo, tcpcopy: u32, intercept: u32) -> Sample {
    let out = t.lab.exec(&t.target, "ss -Htan exclude time-wait");
    Sample {
        tcpcopy_rss: rss_kb(tcpcopy).expect("tcpcopy runs"),
        tcpcopy_fds: fd_count(tcpcopy).expect("tcpcopy runs") as u64,
        intercept_rss: rss_kb(intercept).expect("intercept runs"),
        intercept_fds: fd_count(intercept).expect("intercept runs") as u64,
        target_sockets: String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count() as u64,
    }
}

#[test]
#[ignore = "soak: minutes long; run with scripts/soak.sh MINUTES (TCPCLONE_SOAK_SECS)"]
fn soak() {
    require_root!("soak");
    require_programs!(
        "soak",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "nginx",
        "wrk",
        "curl",
        "ss"
    );
    let secs: u64 = std::env::var("TCPCLONE_SOAK_SECS")
        .ok()
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("TCPCLONE_SOAK_SECS={v}: not a number of seconds"))
        })
        .unwrap_or(DEFAULT_SECS)
        .max(10);
    let _g = serial();
    let mut t = Topo::new(Layout::Assistant);
    let (p, tg) = (t.prod.clone(), t.target.clone());
    t.start_redis(&p, REDIS_PROD, "redis-prod");
    t.start_redis(&tg, REDIS_TARGET, "redis-target");
    let prod_log = t.start_nginx(&p, HTTP_PROD, "nginx-prod");
    let target_log = t.start_nginx(&tg, HTTP_TARGET, "nginx-target");
    let icpt = t.start_intercept("tcp and (src port 6380 or src port 8080)");
    // TCPCLONE_SOAK_TCPCOPY_ARGS: more tcpcopy flags, space-separated (e.g. `--immediate`).
    let extra = std::env::var("TCPCLONE_SOAK_TCPCOPY_ARGS").unwrap_or_default();
    let mut args = vec![
        "-x",
        "6379-198.18.1.2:6380,80-198.18.1.2:8080",
        "-n",
        "2",
        "--stats",
        "30",
    ];
    args.extend(extra.split_whitespace());
    let tcpcopy = t.start_tcpcopy(&args);
    for (name, pid) in [("tcpcopy", tcpcopy), ("intercept", icpt)] {
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |k: &str| {
            st.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
                .unwrap_or_default()
        };
        println!(
            "soak: {name} runs as uid {}, CapEff {}",
            field("Uid:"),
            field("CapEff:")
        );
    }

    println!(
        "soak: {secs} s on {} cores, load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let sample_at = Duration::from_secs(if secs >= 240 { 120 } else { secs / 2 });
    let mut first: Option<(Duration, Sample)> = None;
    let mut rounds = 0u64;
    let mut next_minute = 1u64;
    // wrk's delay(): milliseconds before each next request of a connection.
    let paced = t.path("paced.lua");
    std::fs::write(&paced, "function delay()\n  return 1\nend\n").expect("writing paced.lua");
    let paced = paced.display();
    while Instant::now() < end {
        rounds += 1;
        // A steady, moderate mix (a soak looks for leaks, not for the saturation point): wrk
        // paced, see the module's doc.
        t.client(&format!(
            "timeout 60 redis-benchmark -h {PROD4} -p {REDIS_PROD} -n 2000 -c 5 -t set,get -q"
        ));
        t.client(&format!(
            "timeout 60 redis-benchmark -h {PROD4} -p {REDIS_PROD} -n 300 -c 3 -k 0 -t set -q"
        ));
        t.client(&format!(
            "timeout 30 wrk -t1 -c4 -d1s -s {paced} http://{PROD4}/"
        ));
        t.client(&format!(
            "timeout 30 wrk -t1 -c4 -d1s -s {paced} -H 'Connection: close' http://{PROD4}/"
        ));
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            rss_kb(tcpcopy).is_some() && rss_kb(icpt).is_some(),
            "tcpcopy or intercept died in round {rounds}:\n{}\n{}",
            std::fs::read_to_string(t.path("tcpcopy.log")).unwrap_or_default(),
            std::fs::read_to_string(t.path("intercept.log")).unwrap_or_default()
        );
        if start.elapsed() >= Duration::from_secs(60 * next_minute) {
            println!(
                "soak: minute {next_minute}: tcpcopy {} kB, fds {}; intercept {} kB, fds {}",
                rss_parts(tcpcopy),
                fd_count(tcpcopy).unwrap_or(0),
                rss_parts(icpt),
                fd_count(icpt).unwrap_or(0)
            );
            next_minute = start.elapsed().as_secs() / 60 + 1;
        }
        if first.is_none() && start.elapsed() >= sample_at {
            std::thread::sleep(Duration::from_secs(2));
            let s = sample(&t, tcpcopy, icpt);
            println!(
                "soak: sample at {:.0}s: {s:?}",
                start.elapsed().as_secs_f64()
            );
            first = Some((start.elapsed(), s));
        }
    }
    // Let the last clones finish and the target close its side.
    let prod_cmds =
        redis_calls(&t.lab, &p, REDIS_PROD, "set") + redis_calls(&t.lab, &p, REDIS_PROD, "get");
    let prod_http = line_count(&prod_log);
    let tgt_cmds = settle(2 * prod_cmds, Duration::from_secs(20), || {
        redis_calls(&t.lab, &tg, REDIS_TARGET, "set")
            + redis_calls(&t.lab, &tg, REDIS_TARGET, "get")
    });
    let tgt_http = settle(2 * prod_http, Duration::from_secs(20), || {
        line_count(&target_log)
    });
    std::thread::sleep(Duration::from_secs(3));
    let last = sample(&t, tcpcopy, icpt);
    let states = t.lab.exec(
        &tg,
        "ss -Htan exclude time-wait | awk '{print $1}' | sort | uniq -c | tr -s ' \\n' ' '",
    );
    let (at, first) = first.unwrap_or((start.elapsed(), last));
    println!(
        "soak: sample at end ({:.0}s, {rounds} rounds): {last:?}; load average {}",
        start.elapsed().as_secs_f64(),
        loadavg()
    );
    let summary = t.stop_tcpcopy(tcpcopy);
    t.lab.stop(icpt, "TERM", Duration::from_secs(3));
    let ilog = std::fs::read_to_string(t.path("intercept.log")).unwrap_or_default();
    println!(
        "soak: intercept {}",
        ilog.lines()
            .rev()
            .find(|l| l.contains("summary:"))
            .unwrap_or("(no summary)")
    );

    let mut failures = Vec::new();
    for (what, prod, got) in [
        ("redis commands", prod_cmds, tgt_cmds),
        ("nginx requests", prod_http, tgt_http),
    ] {
        let r = ratio(got, 2 * prod);
        println!(
            "soak: {what}: production {prod}, target {got} (-n 2): delivery {:.3} %",
            100.0 * r
        );
        if prod == 0 || r < 0.999 || got > 2 * prod {
            failures.push(format!(
                "{what}: delivery {:.3} % of 2 x {prod} (want ≥ 99.9 %)",
                100.0 * r
            ));
        }
    }
    for (what, a, b) in [
        ("tcpcopy RSS kB", first.tcpcopy_rss, last.tcpcopy_rss),
        ("tcpcopy fds", first.tcpcopy_fds, last.tcpcopy_fds),
        ("intercept RSS kB", first.intercept_rss, last.intercept_rss),
        ("intercept fds", first.intercept_fds, last.intercept_fds),
    ] {
        let growth = (b as f64 - a as f64) / a.max(1) as f64;
        println!(
            "soak: {what}: {a} at {:.0}s -> {b} at end ({:+.1} %)",
            at.as_secs_f64(),
            100.0 * growth
        );
        if growth > 0.05 {
            failures.push(format!("{what} grew {:+.1} %: {a} -> {b}", 100.0 * growth));
        }
    }
    let (a, b) = (first.target_sockets, last.target_sockets);
    println!(
        "soak: target TCP sockets (TIME-WAIT aside): {a} -> {b} (at the end: {})",
        String::from_utf8_lossy(&states.stdout).trim()
    );
    if b as f64 > a as f64 * 1.05 + 5.0 {
        failures.push(format!("target sockets grew: {a} -> {b}"));
    }
    println!(
        "soak: {}",
        if failures.is_empty() { "PASS" } else { "FAIL" }
    );
    assert!(failures.is_empty(), "{}\n{summary}", failures.join("\n"));
}
