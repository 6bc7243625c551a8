//! Raw mode's per-endpoint report and verdicts in the lab (issue 15): live cloning of a real
//! nginx through intercept with `--response-prefix`, the test nginx answering 500 on one path.
//! The report names that endpoint with its 5xx count, `--fail-if` on it makes tcpcopy exit 1 at
//! SIGINT naming the rule (and the `--junit` file says so), and the same run against an
//! unchanged test build passes. Without `--response-prefix` on intercept the run still works:
//! endpoints are counted, no response class is known.
//!
//! Topology: `tcpclone_lab::topo` (assistant layout): client → production nginx :80 with
//! tcpcopy, target nginx :8080, intercept on the assistant. Build first, same profile:
//! `cargo build --release --workspace --all-targets`.

use std::time::Duration;
use tcpclone_lab::topo::*;
use tcpclone_lab::*;

const ORDERS: usize = 5;
const USERS: usize = 20;
const RULE: &str = "endpoint=GET /orders: errors > 0";

/// What one run left: tcpcopy's exit code, its log (table, broken rules, summary), the JSON
/// report and the JUnit file.
struct Run {
    code: Option<i32>,
    log: String,
    report: serde_json::Value,
    junit: String,
}

/// Live: clones the [`clients`] to a target nginx that answers 500 on /orders when `boom`;
/// intercept runs with `intercept_extra`.
fn run(boom: bool, intercept_extra: &[&str]) -> Run {
    run_live(servers(boom, intercept_extra), RULE, &[])
}

/// Live on `t`'s servers: tcpcopy with the report, `rule` and `tcpcopy_extra`, the
/// [`clients`], then SIGINT.
fn run_live(mut t: Topo, rule: &str, tcpcopy_extra: &[&str]) -> Run {
    let (json, junit) = (t.path("report.json"), t.path("junit.xml"));
    let (js, ju) = (json.display().to_string(), junit.display().to_string());
    let mut args = vec![
        "-x",
        "80-198.18.1.2:8080",
        "--report",
        &js,
        "--fail-if",
        rule,
        "--junit",
        &ju,
    ];
    args.extend_from_slice(tcpcopy_extra);
    let pid = t.start_tcpcopy(&args);
    clients(&t);
    // Every answer reaches intercept and tcpcopy within milliseconds on this lab; the
    // keep-alive connections stay open, which the report does not wait for.
    std::thread::sleep(Duration::from_secs(2));
    let st = t.lab.stop(pid, "INT", Duration::from_secs(5));
    finish(&t, st, "tcpcopy.log")
}

/// The report, the JUnit file and the log of a finished run.
fn finish(t: &Topo, st: Option<std::process::ExitStatus>, log: &str) -> Run {
    let log = std::fs::read_to_string(t.path(log)).unwrap_or_default();
    let text = std::fs::read_to_string(t.path("report.json")).unwrap_or_default();
    let report = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("--report is not JSON ({e}): {text}\ntcpcopy log:\n{log}"));
    Run {
        code: st.and_then(|s| s.code()),
        log,
        report,
        junit: std::fs::read_to_string(t.path("junit.xml")).unwrap_or_default(),
    }
}

/// The curl clients: `USERS` GETs of /users/ID and `ORDERS` of /orders, keep-alive, on three
/// connections.
fn clients(t: &Topo) {
    let users = |from: usize, to: usize| -> String {
        (from..to)
            .map(|i| format!(" http://{PROD4}/users/{i}"))
            .collect()
    };
    let orders: String = (0..ORDERS)
        .map(|_| format!(" http://{PROD4}/orders"))
        .collect();
    for urls in [users(0, USERS / 2), orders, users(USERS / 2, USERS)] {
        t.client(&format!("timeout 20 curl -s -o /dev/null{urls}"));
    }
}

/// Production nginx (200 everywhere), the target nginx (500 on /orders when `boom`), intercept
/// with `intercept_extra`.
fn servers(boom: bool, intercept_extra: &[&str]) -> Topo {
    // With a body: a bare `return 500` makes nginx close the keep-alive connection, and the
    // requests after it on that connection would never reach the test build.
    let orders = if boom {
        "location = /orders { return 500 \"boom\\n\"; }"
    } else {
        "location = /orders { return 200 \"orders\\n\"; }"
    };
    servers_with("", orders, intercept_extra)
}

/// Production nginx (200 everywhere), the target nginx with `http` in its `http` block and the
/// `orders` location, intercept with `intercept_extra`.
fn servers_with(http: &str, orders: &str, intercept_extra: &[&str]) -> Topo {
    let mut t = Topo::new(Layout::Assistant);
    let (p, tg) = (t.prod.clone(), t.target.clone());
    t.start_nginx(&p, HTTP_PROD, "nginx-prod");
    // A static file for locations that must reach nginx's content phase (`{www}`).
    let www = t.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("orders"), "orders\n").unwrap();
    let orders = orders.replace("{www}", www.to_str().unwrap());
    let servers = format!(
        "{http} server {{ listen {HTTP_TARGET} reuseport; {orders} location / {{ return 200 \"ok\\n\"; }} }}"
    );
    let dir = t.dir.path().to_path_buf();
    start_nginx_servers(
        &mut t.lab,
        &tg,
        &dir,
        "nginx-target",
        "",
        &servers,
        &format!("http://127.0.0.1:{HTTP_TARGET}/"),
    );
    t.start_intercept_with(HTTP_FILTER, intercept_extra);
    t
}

/// The report's figures of `endpoint`'s test side: (requests, errors, 5xx by class "500").
fn endpoint(r: &Run, endpoint: &str) -> (u64, u64, u64) {
    side(r, endpoint, "test")
}

/// [`endpoint`] of `side` (`test` or `production`).
fn side(r: &Run, endpoint: &str, side: &str) -> (u64, u64, u64) {
    let e = r.report["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["endpoint"] == endpoint))
        .unwrap_or_else(|| panic!("no endpoint {endpoint} in {:#}", r.report["endpoints"]));
    let t = &e[side];
    (
        t["requests"].as_u64().unwrap_or(0),
        t["errors"].as_u64().unwrap_or(0),
        t["errors_by_class"]["500"].as_u64().unwrap_or(0),
    )
}

/// `endpoint`'s latency percentile `p` (`p50`, `p99`) on `side`, ms.
fn latency(r: &Run, endpoint: &str, side: &str, p: &str) -> f64 {
    r.report["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["endpoint"] == endpoint))
        .and_then(|e| e[side]["latency_ms"][p].as_f64())
        .unwrap_or_else(|| panic!("no {side} {p} of {endpoint} in {:#}", r.report["endpoints"]))
}

/// The rule of the live production column: the test build's /orders p99 against
/// production's, with room for the path through intercept.
const SLOW_RULE: &str = "endpoint=GET /orders: p99 > production.p99 + 100ms";

/// Live with production's answers (this host's outgoing frames) in the report, on two
/// workers: the target's /orders held back by nginx's `limit_req` when `slow` (5 a second,
/// excess queued: each /orders after the first of a burst waits some 200 ms), a static file
/// either way.
fn run_production_column(slow: bool) -> Run {
    let limit = if slow {
        "limit_req zone=orders burst=50;"
    } else {
        ""
    };
    // `limit_req` runs after the rewrite phase, where `return` would already have answered:
    // the answer comes from a file.
    let orders = format!("location = /orders {{ {limit} root {{www}}; }}");
    let t = servers_with(
        "limit_req_zone $server_port zone=orders:1m rate=5r/s;",
        &orders,
        &["--response-prefix", "64"],
    );
    run_live(t, SLOW_RULE, &["--workers", "2"])
}

/// Runs `tcpcopy --offline pcap` in production with the report, [`RULE`] and `extra`, until
/// the end of the file (its summary, 30 s at most), then SIGINT.
fn run_offline_file(
    t: &mut Topo,
    pcap: &std::path::Path,
    extra: &[&str],
) -> Option<std::process::ExitStatus> {
    let (js, ju) = (
        t.path("report.json").display().to_string(),
        t.path("junit.xml").display().to_string(),
    );
    let secret = secret_file(t.dir.path());
    let tcpcopy = bin("tcpcopy");
    let icpt = t.icpt_addr.clone();
    let mut argv = vec![
        tcpcopy.to_str().unwrap(),
        "--offline",
        pcap.to_str().unwrap(),
        "-x",
        "80-198.18.1.2:8080",
        "-s",
        &icpt,
        "--secret-file",
        secret.to_str().unwrap(),
        "--report",
        &js,
        "--fail-if",
        RULE,
        "--junit",
        &ju,
    ];
    argv.extend_from_slice(extra);
    let p = t.prod.clone();
    let log = t.path("tcpcopy-offline.log");
    let pid = t.lab.spawn(&p, &argv, Some(&log));
    // It stops by itself at the end of the file (3 s after the last packet at most).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("tcpcopy summary")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    t.lab.stop(pid, "INT", Duration::from_secs(5))
}

/// Production's gap in [`known_timing`]: its answer starts this long after the request.
const PRODUCTION_GAP: Duration = Duration::from_millis(40);

/// `pcaps/http_keepalive.pcap` (curl, 6 GETs on one keep-alive connection to nginx) with
/// timing of our own: a frame from the server right after a frame from the client comes
/// [`PRODUCTION_GAP`] after it, every other frame 1 ms after the one before. So production
/// answers each request 40 ms (41 when an empty ACK goes first) after its last byte.
fn known_timing(to: &std::path::Path) {
    use tcpclone_lab::pcap::{read_frames, write_frames};
    let src = workspace_root().join("pcaps/http_keepalive.pcap");
    let (linktype, mut frames) = read_frames(&src);
    // Ethernet + IPv4 without options: the source port at byte 34.
    let from_server = |f: &tcpclone_lab::pcap::Frame| f.data[34..36] == 80u16.to_be_bytes();
    let mut ts = frames[0].ts.0;
    for i in 1..frames.len() {
        let gap = if from_server(&frames[i]) && !from_server(&frames[i - 1]) {
            PRODUCTION_GAP
        } else {
            Duration::from_millis(1)
        };
        ts += gap.as_nanos() as u64;
        frames[i].ts = tcpclone::capture::Timestamp(ts);
    }
    write_frames(to, linktype, &frames);
}

macro_rules! require_nginx_lab {
    ($name:literal) => {
        require_root!(concat!("raw_verdict_lab::", $name));
        require_programs!("raw_verdict_lab", "nginx", "curl", "ss");
    };
}

#[test]
fn raw_mode_names_the_500_endpoint_and_fails_its_rule() {
    require_nginx_lab!("raw_mode_names_the_500_endpoint_and_fails_its_rule");
    let _g = serial();
    let r = run(true, &["--response-prefix", "64"]);
    println!("{}", r.log);
    assert_eq!(
        endpoint(&r, "GET /orders"),
        (ORDERS as u64, ORDERS as u64, ORDERS as u64),
        "{}",
        r.log
    );
    assert_eq!(endpoint(&r, "GET /users/{id}"), (USERS as u64, 0, 0));
    assert_eq!(
        failed_verdicts(&r.report),
        vec![(RULE.to_string(), "GET /orders".to_string())]
    );
    assert!(
        r.log.contains(&format!("--fail-if `{RULE}` [GET /orders]")),
        "the broken rule is not named:\n{}",
        r.log
    );
    assert_eq!(r.code, Some(1), "exit code\n{}", r.log);
    assert!(
        r.junit.contains("<failure") && r.junit.contains("GET /orders"),
        "{}",
        r.junit
    );
}

#[test]
fn raw_mode_passes_on_the_unchanged_build() {
    require_nginx_lab!("raw_mode_passes_on_the_unchanged_build");
    let _g = serial();
    let r = run(false, &["--response-prefix", "64"]);
    assert_eq!(
        endpoint(&r, "GET /orders"),
        (ORDERS as u64, 0, 0),
        "{}",
        r.log
    );
    assert_eq!(endpoint(&r, "GET /users/{id}"), (USERS as u64, 0, 0));
    assert!(failed_verdicts(&r.report).is_empty(), "{}", r.log);
    assert_eq!(r.code, Some(0), "exit code\n{}", r.log);
    assert!(!r.junit.contains("<failure"), "{}", r.junit);
}

#[test]
fn raw_mode_without_response_prefix_counts_endpoints_but_no_classes() {
    require_nginx_lab!("raw_mode_without_response_prefix_counts_endpoints_but_no_classes");
    let _g = serial();
    // intercept grants no prefix: headers only, as from an intercept before version 2.
    let r = run(true, &[]);
    assert_eq!(
        endpoint(&r, "GET /orders"),
        (ORDERS as u64, 0, 0),
        "{}",
        r.log
    );
    assert_eq!(endpoint(&r, "GET /users/{id}"), (USERS as u64, 0, 0));
    assert_eq!(r.code, Some(0), "exit code\n{}", r.log);
}

#[test]
fn raw_offline_with_both_directions_has_production_beside_test() {
    require_nginx_lab!("raw_offline_with_both_directions_has_production_beside_test");
    require_programs!("raw_verdict_lab", "tcpdump");
    let _g = serial();
    let mut t = servers(true, &["--response-prefix", "64"]);
    // Recorded at the client's end of its link: an Ethernet capture holds both directions
    // (on the production host, its own answers are outgoing, which tcpcopy's capture skips).
    let c = t.client.clone();
    let dev = String::from_utf8_lossy(
        &t.lab
            .exec(
                &c,
                "ip -o link show | awk -F': ' '$2 !~ /^lo/ {print $2}' | cut -d@ -f1",
            )
            .stdout,
    )
    .trim()
    .to_string();
    let pcap = t.path("both.pcap");
    let tcpdump = start_tcpdump_opts(
        &mut t.lab,
        &c,
        &["-i", &dev, "-s", "2048", "-Z", "root"],
        "tcp port 80",
        &pcap,
    );
    std::thread::sleep(Duration::from_millis(300));
    clients(&t);
    std::thread::sleep(Duration::from_millis(300));
    t.lab
        .stop(tcpdump, "INT", Duration::from_secs(5))
        .expect("tcpdump stops");
    let st = run_offline_file(&mut t, &pcap, &[]);
    let r = finish(&t, st, "tcpcopy-offline.log");
    println!("{}", r.log);
    assert_eq!(
        endpoint(&r, "GET /orders"),
        (ORDERS as u64, ORDERS as u64, ORDERS as u64),
        "{}",
        r.log
    );
    // Production answered the same requests with 200.
    assert_eq!(side(&r, "GET /orders", "production"), (ORDERS as u64, 0, 0));
    assert_eq!(
        side(&r, "GET /users/{id}", "production"),
        (USERS as u64, 0, 0)
    );
    // Production's latency on the file's own stamps: raw_offline_production_latency_is_the_files.
    assert_eq!(r.code, Some(1), "exit code\n{}", r.log);
}

#[test]
fn raw_live_has_production_beside_test_and_fails_the_slow_endpoint() {
    require_nginx_lab!("raw_live_has_production_beside_test_and_fails_the_slow_endpoint");
    let _g = serial();
    let r = run_production_column(true);
    println!("{}", r.log);
    // Production's side comes from its answers leaving this host, every request of both
    // endpoints, with its own latency.
    assert_eq!(
        side(&r, "GET /orders", "production").0,
        ORDERS as u64,
        "{}",
        r.log
    );
    assert_eq!(side(&r, "GET /users/{id}", "production").0, USERS as u64);
    for ep in ["GET /orders", "GET /users/{id}"] {
        let p = latency(&r, ep, "production", "p50");
        assert!(p > 0.0 && p < 50.0, "production p50 of {ep}: {p} ms");
    }
    assert_eq!(
        endpoint(&r, "GET /orders"),
        (ORDERS as u64, 0, 0),
        "{}",
        r.log
    );
    assert!(latency(&r, "GET /orders", "test", "p99") >= 150.0);
    assert_eq!(
        failed_verdicts(&r.report),
        vec![(SLOW_RULE.to_string(), "GET /orders".to_string())],
        "{}",
        r.log
    );
    assert_eq!(r.code, Some(1), "exit code\n{}", r.log);
}

#[test]
fn raw_live_production_comparison_passes_on_the_unchanged_build() {
    require_nginx_lab!("raw_live_production_comparison_passes_on_the_unchanged_build");
    let _g = serial();
    let r = run_production_column(false);
    // The rule is evaluated against production (an unknown production p99 would fail it).
    assert_eq!(
        side(&r, "GET /orders", "production").0,
        ORDERS as u64,
        "{}",
        r.log
    );
    assert!(failed_verdicts(&r.report).is_empty(), "{}", r.log);
    assert_eq!(r.code, Some(0), "exit code\n{}", r.log);
}

#[test]
fn raw_offline_production_latency_is_the_files() {
    require_nginx_lab!("raw_offline_production_latency_is_the_files");
    let _g = serial();
    let mut t = servers(false, &["--response-prefix", "64"]);
    // The capture's client network goes back through intercept, like the lab's own.
    let target = t.target.clone();
    t.lab.exec_ok(
        &target,
        &format!("ip route add 198.18.200.0/24 via {ASSIST4}"),
    );
    let pcap = t.path("known.pcap");
    known_timing(&pcap);
    // Fed ten times faster than recorded: read on tcpcopy's clock, production would answer
    // in some 4 ms; on the file's stamps it is the recorded 40 ms.
    let st = run_offline_file(&mut t, &pcap, &["-a", "10"]);
    let r = finish(&t, st, "tcpcopy-offline.log");
    println!("{}", r.log);
    let eps = r.report["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut answered = 0;
    for e in &eps {
        let p = &e["production"];
        answered += p["requests"].as_u64().unwrap_or(0);
        for q in ["p50", "p99"] {
            let ms = p["latency_ms"][q].as_f64().unwrap_or(0.0);
            assert!(
                (39.0..=45.0).contains(&ms),
                "production {q} of {}: {ms} ms, recorded 40-41 ms\n{}",
                e["endpoint"],
                r.log
            );
        }
    }
    assert_eq!(answered, 6, "every GET has production's answer\n{}", r.log);
}

#[test]
fn raw_mode_response_prefix_flag_sets_the_bytes_asked() {
    require_nginx_lab!("raw_mode_response_prefix_flag_sets_the_bytes_asked");
    let _g = serial();
    // intercept allows 64; tcpcopy asks 12: `HTTP/1.1 500` is exactly the status.
    let r = run_live(
        servers(true, &["--response-prefix", "64"]),
        RULE,
        &["--response-prefix", "12"],
    );
    assert_eq!(
        endpoint(&r, "GET /orders"),
        (ORDERS as u64, ORDERS as u64, ORDERS as u64),
        "{}",
        r.log
    );
    assert_eq!(r.code, Some(1), "exit code\n{}", r.log);
    // tcpcopy asks 4: intercept grants the smaller, `HTTP` tells no class (opaque answers).
    let r = run_live(
        servers(true, &["--response-prefix", "64"]),
        RULE,
        &["--response-prefix", "4"],
    );
    assert_eq!(
        endpoint(&r, "GET /orders"),
        (ORDERS as u64, 0, 0),
        "{}",
        r.log
    );
    assert_eq!(
        r.report["decode"]["opaque_responses"].as_u64(),
        Some((ORDERS + USERS) as u64),
        "{:#}",
        r.report["decode"]
    );
}
