//! Pipelined requests in the lab: real clients that send many requests before any answer
//! (`redis-benchmark -P 16`, and HTTP/1.1 pipelining written to nginx with bash's `/dev/tcp`)
//! captured with tcpdump, replayed with `tcpcopy --stream --offline` to a second server; the
//! report counts every request under its own endpoint, each with its own latency.
//!
//! Everything runs inside one namespace on loopback addresses. Build first, same profile:
//! `cargo build --release --workspace --all-targets`.
use tcpclone_lab::*;

use std::path::Path;

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pipeline_lab")
        .tempdir()
        .expect("tempdir")
}

/// Replays `cap` with `tcpcopy --stream --offline ARGS --report DIR/r.json`; the JSON report.
/// `--force`: the second server is on this namespace's loopback, a local target that tcpcopy
/// refuses without it.
fn replay(lab: &Lab, ns: &str, cap: &Path, args: &str, dir: &Path) -> (serde_json::Value, String) {
    let report = dir.join("r.json");
    let out = lab.exec(
        ns,
        &format!(
            "timeout 60 {} --stream --force --offline {} {args} --report {}",
            bin("tcpcopy").display(),
            cap.display(),
            report.display()
        ),
    );
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tcpcopy failed: {text}");
    let r = std::fs::read_to_string(&report).expect("report file");
    (serde_json::from_str(&r).expect("report JSON"), text)
}

/// The report's endpoint called `name`.
fn endpoint<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["endpoint"] == name)
        .unwrap_or_else(|| panic!("no endpoint {name} in {}", r["endpoints"]))
}

#[test]
fn redis_benchmark_pipelines_count_every_command() {
    require_root!("pipeline_lab::redis_benchmark");
    require_programs!(
        "pipeline_lab::redis_benchmark",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "tcpdump"
    );
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tmpdir();
    let ns = lab.netns("pipr");
    for port in [6379, 6390] {
        start_redis(&mut lab, &ns, &["127.0.0.1"], port, tmp.path(), &[], None);
        lab.exec_ok(
            &ns,
            &format!("redis-cli -p {port} config resetstat >/dev/null"),
        );
    }
    let cap = tmp.path().join("bench.pcap");
    // 2 connections, 16 commands per burst: 320 SETs then 320 GETs.
    capture_loopback(
        &mut lab,
        &ns,
        6379,
        "timeout 30 redis-benchmark -p 6379 -c 2 -P 16 -n 320 -r 50 -t set,get -q >/dev/null",
        &cap,
    );
    // What redis-benchmark sent, as production counted it.
    let sent = commandstats(&lab, &ns, "127.0.0.1", 6379);
    assert_eq!(sent.get("set"), Some(&320), "{sent:?}");
    assert_eq!(sent.get("get"), Some(&320), "{sent:?}");
    let (r, text) = replay(&lab, &ns, &cap, "-x 6379-127.0.0.1:6390", tmp.path());
    for (name, cmd) in [("SET", "set"), ("GET", "get")] {
        let e = endpoint(&r, name);
        let n = sent[cmd];
        assert_eq!(e["protocol"], "redis");
        assert_eq!(e["test"]["requests"], n, "{name}: {text}");
        assert_eq!(e["test"]["errors"], 0, "{name}: {text}");
        // Each command has its own latency (its reply's first byte), on both sides.
        assert_eq!(e["test"]["latency_ms"]["count"], n, "{name}: {e}");
        assert_eq!(e["production"]["requests"], n, "{name}: {e}");
        assert_eq!(e["production"]["latency_ms"]["count"], n, "{name}: {e}");
    }
    // The target ran them all too.
    let ran = commandstats(&lab, &ns, "127.0.0.1", 6390);
    assert_eq!(
        (ran.get("set"), ran.get("get")),
        (Some(&320), Some(&320)),
        "{ran:?}"
    );
    assert_eq!(r["decode"]["opaque_requests"], 0, "{}", r["decode"]);
    assert_eq!(r["decode"]["opaque_responses"], 0, "{}", r["decode"]);
}

#[test]
fn pipelined_http_requests_count_each_with_its_status() {
    require_root!("pipeline_lab::http");
    require_programs!("pipeline_lab::http", "nginx", "curl", "tcpdump", "bash");
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tmpdir();
    let ns = lab.netns("piph");
    start_nginx(&mut lab, &ns, tmp.path(), "prod", &["8080"], "$request");
    start_nginx(&mut lab, &ns, tmp.path(), "test", &["8081"], "$request");
    // 6 connections, each one write of 5 pipelined requests (the last one closes).
    let reqs = "GET /a HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\
                GET /users/1 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\
                HEAD /a HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\
                GET /users/22 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\
                GET /b HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n";
    // The burst is written to a file first and sent by one `cat` (one write): bash's printf may
    // write it in pieces, and a piece after the server spoke starts a new request mid-request.
    let burst = tmp.path().join("burst.txt");
    let client = format!(
        "printf '{reqs}' > {burst} && for i in 1 2 3 4 5 6; do \
           exec 3<>/dev/tcp/127.0.0.1/8080 && cat {burst} >&3 && timeout 5 cat <&3 >/dev/null; \
           exec 3<&-; done",
        burst = burst.display()
    );
    let cap = tmp.path().join("http.pcap");
    capture_loopback(&mut lab, &ns, 8080, &format!("bash -c \"{client}\""), &cap);
    let log = std::fs::read_to_string(tmp.path().join("prod/access.log")).unwrap();
    assert_eq!(log.lines().count(), 30, "production saw: {log}");
    let (r, text) = replay(&lab, &ns, &cap, "-x 8080-127.0.0.1:8081", tmp.path());
    for (name, n) in [
        ("GET /a", 6),
        ("HEAD /a", 6),
        ("GET /users/{id}", 12),
        ("GET /b", 6),
    ] {
        let e = endpoint(&r, name);
        assert_eq!(e["protocol"], "http");
        assert_eq!(e["test"]["requests"], n, "{name}: {text}");
        assert_eq!(e["test"]["errors"], 0, "{name}: {e}");
        assert_eq!(e["test"]["latency_ms"]["count"], n, "{name}: {e}");
        assert_eq!(e["production"]["requests"], n, "{name}: {e}");
    }
    let replayed = std::fs::read_to_string(tmp.path().join("test/access.log")).unwrap();
    assert_eq!(replayed.lines().count(), 30, "target saw: {replayed}");
    assert_eq!(r["decode"]["opaque_responses"], 0, "{}", r["decode"]);
}

/// Per-command counts of the report's endpoints (`SET` → `set`), test side.
fn report_counts(r: &serde_json::Value) -> std::collections::HashMap<String, u64> {
    r["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["protocol"] == "redis")
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap_or("").to_ascii_lowercase(),
                e["test"]["requests"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Captures `client` against redis on 6379, replays it to redis on 6390, and checks that the
/// report counts, per command, exactly what the target's `INFO commandstats` says it ran (and
/// what production ran); returns the report.
fn big_pipelines_counted(ns_name: &str, client: &str, cmds: &[&str]) -> serde_json::Value {
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tmpdir();
    let ns = lab.netns(ns_name);
    for port in [6379, 6390] {
        start_redis(&mut lab, &ns, &["127.0.0.1"], port, tmp.path(), &[], None);
        lab.exec_ok(
            &ns,
            &format!("redis-cli -p {port} config resetstat >/dev/null"),
        );
    }
    let cap = tmp.path().join("big.pcap");
    let client = client.replace("DIR", &tmp.path().display().to_string());
    capture_loopback(&mut lab, &ns, 6379, &client, &cap);
    let sent = commandstats(&lab, &ns, "127.0.0.1", 6379);
    let (r, text) = replay(&lab, &ns, &cap, "-x 6379-127.0.0.1:6390", tmp.path());
    let ran = commandstats(&lab, &ns, "127.0.0.1", 6390);
    let counted = report_counts(&r);
    for cmd in cmds {
        assert!(sent.get(*cmd).copied().unwrap_or(0) > 0, "{cmd}: {sent:?}");
        assert_eq!(
            ran.get(*cmd),
            sent.get(*cmd),
            "target vs production: {ran:?} {sent:?}"
        );
        assert_eq!(
            counted.get(*cmd),
            ran.get(*cmd),
            "{cmd}: report {counted:?}, target ran {ran:?}; decode {}; {text}",
            r["decode"]
        );
    }
    assert_eq!(r["decode"]["opaque_requests"], 0, "{}", r["decode"]);
    assert_eq!(r["decode"]["opaque_responses"], 0, "{}", r["decode"]);
    r
}

#[test]
fn redis_benchmark_bursts_past_64_kib_count_every_command() {
    require_root!("pipeline_lab::big_bursts");
    require_programs!(
        "pipeline_lab::big_bursts",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "tcpdump"
    );
    // 64 commands of 1 KiB values a burst: about 70 KiB, past what one burst was decoded of
    // before (64 KiB, 1,024 commands); 3,200 SETs then 3,200 GETs on one connection.
    let r = big_pipelines_counted(
        "pipbig",
        "timeout 60 redis-benchmark -p 6379 -c 1 -P 64 -d 1024 -n 3200 -r 100 -t set,get -q >/dev/null",
        &["set", "get"],
    );
    let e = endpoint(&r, "GET");
    assert_eq!(e["test"]["latency_ms"]["count"], 3200, "{e}");
}

/// `redis-cli --pipe` writes while redis answers: the capture splits its stream into bursts
/// around production's replies, often inside a command, and replies are cut by the bursts too;
/// the connection's decoder still sees each command and reply whole.
#[test]
fn redis_cli_pipe_mass_insertion_counts_every_command() {
    require_root!("pipeline_lab::pipe");
    require_programs!("pipeline_lab::pipe", "redis-server", "redis-cli", "tcpdump");
    // Mass insertion as the Redis docs show it: a file of RESP commands (30,000 of them, SET,
    // INCR, RPUSH; about 1.4 MB) written by `redis-cli --pipe` as fast as the socket takes it.
    let gen = "awk 'BEGIN { for (i = 0; i < 10000; i++) { \
                 k = sprintf(\"key:%06d\", i); \
                 printf \"*3\\r\\n$3\\r\\nSET\\r\\n$10\\r\\n%s\\r\\n$8\\r\\nvalue%03d\\r\\n\", k, i % 1000; \
                 printf \"*2\\r\\n$4\\r\\nINCR\\r\\n$7\\r\\ncounter\\r\\n\"; \
                 printf \"*3\\r\\n$5\\r\\nRPUSH\\r\\n$4\\r\\nlist\\r\\n$10\\r\\n%s\\r\\n\", k } }' > DIR/cmds.resp";
    big_pipelines_counted(
        "pippipe",
        &format!("{gen} && timeout 60 redis-cli -p 6379 --pipe < DIR/cmds.resp >/dev/null"),
        &["set", "incr", "rpush"],
    );
}
