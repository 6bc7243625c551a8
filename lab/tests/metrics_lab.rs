//! `--metrics` end to end (issue 13): Debian's real Prometheus scrapes tcpcopy (two workers)
//! and intercept during a redis cloning run; what its HTTP API answers equals the counts in
//! the tools' final summaries. `promtool check metrics` accepts both endpoints' text,
//! `promtool check rules` accepts docs/alerts.yml, Prometheus loads those rules and evaluates
//! them without error, and every metric docs/grafana-dashboard.json queries is one the tools
//! serve. intercept logs with `--log-format json`: every line of its log parses as JSON.
//!
//! Topology: the redis lab of tcpcopy_lab (common/topo.rs); tcpcopy serves on the production
//! host's LAN address, intercept on the assistant's, Prometheus runs in the production
//! namespace on its loopback.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tcpclone_lab::topo::*;
use tcpclone_lab::*;

const TCPCOPY_METRICS: &str = "198.18.1.1:9101";
const INTERCEPT_METRICS: &str = "198.18.1.3:9102";
const PROMETHEUS: &str = "127.0.0.1:9190";

/// The number after `key` in `text` (e.g. `cloned=` in the engine line).
fn after(text: &str, key: &str) -> u64 {
    let rest = text
        .split(key)
        .nth(1)
        .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"));
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key:?} in:\n{text}"))
}

/// GET over curl inside `ns`; the body.
fn get(lab: &Lab, ns: &str, url: &str) -> String {
    let out = lab.exec(ns, &format!("curl -sf --max-time 5 '{url}'"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One number from Prometheus' instant-query API.
fn query(lab: &Lab, ns: &str, q: &str) -> Option<u64> {
    let url = format!(
        "http://{PROMETHEUS}/api/v1/query?query={}",
        q.replace(' ', "%20")
            .replace('(', "%28")
            .replace(')', "%29")
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace('=', "%3D")
    );
    let body = get(lab, ns, &url);
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let s = v["data"]["result"][0]["value"][1].as_str()?;
    s.parse::<f64>().ok().map(|f| f as u64)
}

/// Metric family names in an exposition text.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn prometheus_scrapes_equal_the_summaries() {
    require_root!("metrics_lab::prometheus_scrapes_equal_the_summaries");
    require_programs!(
        "metrics_lab",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "ss",
        "curl",
        "prometheus",
        "promtool"
    );
    let _g = serial();
    let root = workspace_root();
    let rules = root.join("docs/alerts.yml");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules docs/alerts.yml:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut t = Topo::new(Layout::Assistant);
    let (p, tg) = (t.prod.clone(), t.target.clone());
    t.start_redis(&p, REDIS_PROD, "redis-prod");
    t.start_redis(&tg, REDIS_TARGET, "redis-target");
    let icpt_pid = t.start_intercept_with(
        REDIS_FILTER,
        &["--metrics", INTERCEPT_METRICS, "--log-format", "json"],
    );
    let pid = t.start_tcpcopy(&[
        "-x",
        "6379-198.18.1.2:6380",
        "--workers",
        "2",
        "--metrics",
        TCPCOPY_METRICS,
    ]);

    // Prometheus, scraping both every second, with the alerting rules loaded.
    let cfg = t.path("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: ['{}']\n\
             scrape_configs:\n\
             \x20 - job_name: tcpcopy\n    static_configs: [{{targets: ['{TCPCOPY_METRICS}']}}]\n\
             \x20 - job_name: intercept\n    static_configs: [{{targets: ['{INTERCEPT_METRICS}']}}]\n",
            rules.display()
        ),
    )
    .unwrap();
    let data = t.path("prometheus-data");
    let prom_log = t.path("prometheus.log");
    let prom_pid = t.lab.spawn(
        &p,
        &[
            "prometheus",
            &format!("--config.file={}", cfg.display()),
            &format!("--storage.tsdb.path={}", data.display()),
            &format!("--web.listen-address={PROMETHEUS}"),
        ],
        Some(&prom_log),
    );
    let up = |t: &Topo| query(&t.lab, &p, "sum(up)") == Some(2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !up(&t) {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape both targets:\n{}",
            std::fs::read_to_string(&prom_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // The endpoints' text, checked by promtool, and the dashboard's metrics among them.
    let tc_text = get(&t.lab, &p, &format!("http://{TCPCOPY_METRICS}/metrics"));
    let ic_text = get(&t.lab, &p, &format!("http://{INTERCEPT_METRICS}/metrics"));
    let mut failures = Vec::new();
    for (who, text) in [("tcpcopy", &tc_text), ("intercept", &ic_text)] {
        let e = promtool_check_metrics(text);
        if !e.is_empty() {
            failures.push(format!("{who}: {e}"));
        }
    }
    let served: BTreeSet<String> = families(&tc_text)
        .union(&families(&ic_text))
        .cloned()
        .collect();
    assert!(
        tc_text.contains("worker=\"1\""),
        "no worker label:\n{tc_text}"
    );
    let dash = std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dash).expect("dashboard is JSON");
    let mut used = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let e = target["expr"].as_str().unwrap();
            for w in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                // Stream mode's panels are checked against a stream run (stream_lab).
                if w.starts_with("tcpclone_") && !w.starts_with("tcpclone_tcpcopy_stream_") {
                    let base = w.trim_end_matches("_bucket").to_string();
                    used.insert(base);
                }
            }
        }
    }
    let missing: Vec<_> = used.difference(&served).collect();
    if !missing.is_empty() {
        failures.push(format!(
            "the dashboard queries metrics nobody serves: {missing:?}"
        ));
    }

    // Traffic, then quiet until both tools' counters stop moving and Prometheus has scraped
    // the final values a few times.
    t.client(&format!(
        "timeout 60 redis-benchmark -h {PROD4} -p {REDIS_PROD} -n 3000 -c 10 -t set,get -q"
    ));
    let prod = redis_calls(&t.lab, &p, REDIS_PROD, "set");
    let got = settle(prod, Duration::from_secs(20), || {
        redis_calls(&t.lab, &tg, REDIS_TARGET, "set")
    });
    assert!(got > 0, "nothing reached the target");
    let mut last = (String::new(), String::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        let now = (
            get(&t.lab, &p, &format!("http://{TCPCOPY_METRICS}/metrics")),
            get(&t.lab, &p, &format!("http://{INTERCEPT_METRICS}/metrics")),
        );
        // Gauges aside (memory is compacted in the background), nothing moves any more; CPU
        // time aside too (answering the scrape itself costs some).
        let counters = |s: &str| -> String {
            s.lines()
                .filter(|l| l.contains("_total") && !l.contains("cpu_seconds_total"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        if counters(&now.0) == counters(&last.0) && counters(&now.1) == counters(&last.1) {
            break;
        }
        assert!(Instant::now() < deadline, "the counters never settled");
        last = now;
    }
    std::thread::sleep(Duration::from_secs(3));
    // What each tool cost its host: served, and moved by the traffic.
    for (who, text, key) in [
        (
            "tcpcopy",
            &last.0,
            "tcpclone_tcpcopy_worker_cpu_seconds_total{worker=\"0\"} ",
        ),
        (
            "tcpcopy",
            &last.0,
            "tcpclone_tcpcopy_worker_cpu_seconds_total{worker=\"1\"} ",
        ),
        ("tcpcopy", &last.0, "process_cpu_seconds_total "),
        ("intercept", &last.1, "process_cpu_seconds_total "),
    ] {
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.parse::<f64>().ok());
        println!("{who} {key}{v:?}");
        if !v.is_some_and(|v| v > 0.0) {
            failures.push(format!("{who}: no positive `{key}` in its metrics"));
        }
    }

    let q = |expr: &str| {
        query(&t.lab, &p, expr).unwrap_or_else(|| panic!("Prometheus has no value for {expr}"))
    };
    // Keys of the summary's `counters:` line, then of its `engine:` line.
    let prom_counters: Vec<(&str, u64)> = [
        ("captured", "tcpclone_tcpcopy_capture_frames_total"),
        ("captured_bytes", "tcpclone_tcpcopy_capture_bytes_total"),
        (
            "kernel_drops",
            "tcpclone_tcpcopy_kernel_dropped_packets_total",
        ),
        ("sent", "tcpclone_tcpcopy_send_packets_total"),
        ("sent_bytes", "tcpclone_tcpcopy_send_bytes_total"),
        ("send_calls", "tcpclone_tcpcopy_send_calls_total"),
        ("responses", "tcpclone_tcpcopy_intercept_responses_total"),
        (
            "sessions_added",
            "tcpclone_tcpcopy_intercept_registrations_total",
        ),
        (
            "sessions_removed",
            "tcpclone_tcpcopy_intercept_unregistrations_total",
        ),
    ]
    .into_iter()
    .map(|(k, m)| (k, q(&format!("sum({m})"))))
    .collect();
    let prom_tcpcopy: Vec<(&str, u64)> = [
        ("sessions cloned=", "tcpclone_tcpcopy_sessions_cloned_total"),
        ("completed=", "tcpclone_tcpcopy_sessions_completed_total"),
        ("aborted=", "tcpclone_tcpcopy_sessions_aborted_total"),
        ("requests sent=", "tcpclone_tcpcopy_requests_sent_total"),
        (" answered=", "tcpclone_tcpcopy_requests_answered_total"),
    ]
    .into_iter()
    .map(|(k, m)| (k, q(&format!("sum({m})"))))
    .collect();
    let prom_intercept: Vec<(&str, u64)> = [
        (
            "summary: captured ",
            "tcpclone_intercept_capture_packets_total",
        ),
        (
            "kernel drops ",
            "tcpclone_intercept_kernel_dropped_packets_total",
        ),
        ("routed ", "tcpclone_intercept_routed_packets_total"),
        (
            "dropped unknown ",
            "tcpclone_intercept_dropped_unknown_packets_total",
        ),
    ]
    .into_iter()
    .map(|(k, m)| (k, q(&format!("sum({m})"))))
    .collect();
    // The rules were evaluated against these series without error.
    let rules_api = get(&t.lab, &p, &format!("http://{PROMETHEUS}/api/v1/rules"));
    let rules_json: serde_json::Value = serde_json::from_str(&rules_api).expect("rules API");
    let mut rule_health = Vec::new();
    for g in rules_json["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            rule_health.push(format!(
                "{}={}",
                r["name"].as_str().unwrap_or("?"),
                r["health"].as_str().unwrap_or("?")
            ));
        }
    }
    t.lab.stop(prom_pid, "TERM", Duration::from_secs(10));

    let summary = t.stop_tcpcopy(pid);
    if !summary.contains(", cpu per worker: ") {
        failures.push(format!("no per-worker CPU in the summary:\n{summary}"));
    }
    t.lab.stop(icpt_pid, "INT", Duration::from_secs(5));
    let icpt_log = std::fs::read_to_string(t.path("intercept.log")).unwrap_or_default();
    let icpt_summary = icpt_log
        .lines()
        .rev()
        .find(|l| l.contains("summary: captured"))
        .unwrap_or_else(|| panic!("no intercept summary:\n{icpt_log}"))
        .to_string();
    println!("intercept {icpt_summary}");
    // --log-format json: every line of intercept's logger is one JSON object (lines that
    // start with `intercept: ` are the binary's own messages to the terminal, not the log's).
    for l in icpt_log
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("intercept: "))
    {
        if serde_json::from_str::<serde_json::Value>(l).is_err() {
            failures.push(format!(
                "intercept --log-format json wrote a line that is not JSON: {l}"
            ));
        }
    }
    let counters_line = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("counters: "))
        .unwrap_or_else(|| panic!("no counters line:\n{summary}"));
    let engine_line = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("engine: "))
        .unwrap_or_else(|| panic!("no engine line:\n{summary}"));
    for (key, v) in &prom_counters {
        let want = counters_line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {key}= in {counters_line}"));
        println!("tcpcopy {key:<22} summary {want:>8} prometheus {v:>8}");
        if *v != want {
            failures.push(format!("tcpcopy {key}: summary {want}, Prometheus {v}"));
        }
    }
    for (key, v) in &prom_tcpcopy {
        let want = after(engine_line, key);
        println!("tcpcopy {key:<22} summary {want:>8} prometheus {v:>8}");
        if *v != want {
            failures.push(format!("tcpcopy {key}: summary {want}, Prometheus {v}"));
        }
    }
    for (key, v) in &prom_intercept {
        let want = after(&icpt_summary, key);
        println!("intercept {key:<20} summary {want:>8} prometheus {v:>8}");
        if *v != want {
            failures.push(format!("intercept {key}: summary {want}, Prometheus {v}"));
        }
    }
    // A run that counted nothing would compare zeros.
    let cloned = after(&summary, "sessions cloned=");
    if cloned < 10 {
        failures.push(format!("only {cloned} sessions cloned"));
    }
    println!("rules: {}", rule_health.join(" "));
    if rule_health.len() < 6 || rule_health.iter().any(|r| !r.ends_with("=ok")) {
        failures.push(format!("rules not all loaded and healthy: {rule_health:?}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
