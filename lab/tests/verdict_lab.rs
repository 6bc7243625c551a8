//! Benchmark verdicts in the lab: real clients (curl, redis-cli) captured with tcpdump against
//! production servers (nginx, redis), replayed with `tcpcopy --stream` to changed copies; the
//! per-endpoint report, `--fail-if`, `--junit`, the protocol-aware `--diff`, the noise learned
//! with `--baseline-target`, `tcpcopy report compare`, and the HTML page rendered by Chromium.
//!
//! Everything runs inside one namespace on loopback addresses. Build first, same profile:
//! `cargo build --release --workspace --all-targets`.
use tcpclone_lab::*;

use std::path::{Path, PathBuf};

/// nginx's echo module (Debian `libnginx-mod-http-echo`): `echo_sleep` is the slow upstream.
const ECHO_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_echo_module.so";

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("verdict_lab")
        .tempdir()
        .expect("tempdir")
}

/// `tcpcopy ARGS` in `ns`: (exit code, stdout, stderr).
fn tcpcopy(lab: &Lab, ns: &str, args: &str) -> (i32, String, String) {
    let out = lab.exec(ns, &format!("{} {args}", bin("tcpcopy").display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report file")).expect("report JSON")
}

/// The endpoints of production: JSON on /fast, /slow, /boom and /users/ID.
fn http_locations(slow: &str, boom: &str) -> String {
    format!(
        "default_type application/json;\n\
         location = /fast {{ return 200 '{{\"fast\":true}}'; }}\n\
         location = /slow {{ {slow} }}\n\
         location = /boom {{ {boom} }}\n\
         location /users/ {{ return 200 '{{\"user\":\"$uri\"}}'; }}\n"
    )
}

const SLOW_RULE: &str = "endpoint=*: p99 > 3 * production.p99 + 80ms";
const ERROR_RULE: &str = "endpoint=*: errors > 1%";

#[test]
fn nginx_slow_and_failing_endpoints_are_named_and_fail_the_run() {
    require_root!("verdict_lab::nginx_endpoints");
    require_programs!("verdict_lab::nginx_endpoints", "nginx", "curl", "tcpdump");
    assert!(
        Path::new(ECHO_MODULE).exists(),
        "{ECHO_MODULE} missing: apt-get install libnginx-mod-http-echo (scripts/setup.sh)"
    );
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tmpdir();
    let ns = lab.netns("vdng");
    let ok = "return 200 '{\"ok\":1}';";
    let same = http_locations(ok, ok);
    // Production (8080), the unchanged build (8082), the candidate (8081): /slow goes through a
    // proxy to an upstream (8083) that sleeps 150 ms, /boom answers 500.
    start_nginx_servers(
        &mut lab,
        &ns,
        tmp.path(),
        "prod",
        "",
        &format!("server {{ listen 127.0.0.1:8080; {same} }}"),
        "http://127.0.0.1:8080/fast",
    );
    start_nginx_servers(
        &mut lab,
        &ns,
        tmp.path(),
        "same",
        "",
        &format!("server {{ listen 127.0.0.1:8082; {same} }}"),
        "http://127.0.0.1:8082/fast",
    );
    let changed = http_locations(
        "proxy_pass http://127.0.0.1:8083;",
        "return 500 '{\"error\":1}';",
    );
    start_nginx_servers(
        &mut lab,
        &ns,
        tmp.path(),
        "candidate",
        &format!("load_module {ECHO_MODULE};"),
        &format!(
            "server {{ listen 127.0.0.1:8081; {changed} }}\n\
             server {{ listen 127.0.0.1:8083; location / {{ echo_sleep 0.15; echo '{{\"ok\":1}}'; }} }}"
        ),
        "http://127.0.0.1:8081/fast",
    );
    // 20 keep-alive sessions of 4 requests each (curl reuses one connection for its URLs).
    let cap = tmp.path().join("http.pcap");
    let u = "http://127.0.0.1:8080";
    capture_loopback(
        &mut lab,
        &ns,
        8080,
        &format!(
            "for i in $(seq 1 20); do curl -s -o /dev/null -o /dev/null -o /dev/null -o /dev/null \
             {u}/fast {u}/slow {u}/boom {u}/users/$i || exit 1; done"
        ),
        &cap,
    );

    let rules = format!("--fail-if '{SLOW_RULE}' --fail-if '{ERROR_RULE}'");
    // --force: the candidate and unchanged builds listen on this namespace's loopback, a local
    // target that tcpcopy refuses without it.
    let run = |target: u16, name: &str| {
        let dir = tmp.path();
        let (code, out, err) = tcpcopy(
            &lab,
            &ns,
            &format!(
                "--stream --force -x 8080-127.0.0.1:{target} --offline {} {rules} --report {d}/{name}.json \
                 --report {d}/{name}.html --junit {d}/{name}.xml",
                cap.display(),
                d = dir.display()
            ),
        );
        (code, out, err, json(&dir.join(format!("{name}.json"))))
    };

    // The candidate: exactly /slow and /boom fail, the run exits 1 and says so on stderr.
    let (code, out, err, r) = run(8081, "candidate");
    assert_eq!(code, 1, "{out}\n{err}");
    assert_eq!(
        failed_verdicts(&r),
        [
            (SLOW_RULE.to_string(), "GET /slow".to_string()),
            (ERROR_RULE.to_string(), "GET /boom".to_string()),
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>(),
        "{out}\n{err}"
    );
    assert!(
        err.contains("[GET /slow]") && err.contains("[GET /boom]"),
        "{err}"
    );
    assert!(
        !err.contains("[GET /fast]") && !err.contains("/users/"),
        "{err}"
    );
    let eps = r["endpoints"].as_array().expect("endpoints");
    let names: Vec<&str> = eps
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    // Largest regressions first: the failing endpoint, then the slow one.
    assert_eq!(&names[..2], ["GET /boom", "GET /slow"], "{out}");
    let ep = |n: &str| eps.iter().find(|e| e["endpoint"] == n).unwrap();
    assert_eq!(ep("GET /users/{id}")["test"]["requests"], 20);
    assert_eq!(ep("GET /boom")["test"]["errors_by_class"]["500"], 20);
    assert_eq!(ep("GET /boom")["production"]["errors"], 0);
    assert!(
        ep("GET /slow")["test"]["latency_ms"]["p50"]
            .as_f64()
            .unwrap()
            >= 140.0
    );
    assert!(
        ep("GET /slow")["production"]["latency_ms"]["p99"]
            .as_f64()
            .unwrap()
            < 40.0
    );
    assert_eq!(r["decode"]["decoded"]["http"], 80, "{out}");
    assert_eq!(r["decode"]["opaque_requests"], 0);
    assert!(!r["latency_over_time"]["test"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(out.contains("verdict FAIL"), "{out}");
    let junit = std::fs::read_to_string(tmp.path().join("candidate.xml")).unwrap();
    assert!(
        junit.contains("<testsuite name=\"endpoints\" tests=\"4\" failures=\"2\">"),
        "{junit}"
    );
    assert!(junit.contains("<testsuite name=\"verdicts\" tests=\"8\" failures=\"2\">"));

    // The unchanged build passes the same rules.
    let (code, out, err, same) = run(8082, "same");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(failed_verdicts(&same).is_empty());
    assert_eq!(same["verdicts"].as_array().unwrap().len(), 8);

    // `report compare`: the saved candidate run against the unchanged one, same rules.
    let d = tmp.path().display();
    let (code, out, err) = tcpcopy(
        &lab,
        &ns,
        &format!("report compare {d}/same.json {d}/candidate.json {rules} --report {d}/cmp.json"),
    );
    assert_eq!(code, 1, "{out}\n{err}");
    let c = json(&tmp.path().join("cmp.json"));
    assert_eq!(c["mode"], "compare");
    let failed = failed_verdicts(&c);
    assert!(
        failed.contains(&(SLOW_RULE.to_string(), "GET /slow".to_string()))
            && failed.contains(&(ERROR_RULE.to_string(), "GET /boom".to_string()))
            && failed.len() == 2,
        "{failed:?}\n{out}"
    );
    let (code, _, err) = tcpcopy(
        &lab,
        &ns,
        &format!("report compare {d}/same.json {d}/same.json {rules}"),
    );
    assert_eq!(code, 0, "{err}");
    // A broken rule is a usage error.
    let (code, _, err) = tcpcopy(
        &lab,
        &ns,
        &format!("report compare {d}/same.json {d}/same.json --fail-if 'p99 >'"),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--fail-if `p99 >`"), "{err}");

    render_in_chromium(&tmp.path().join("candidate.html"), tmp.path());
}

/// Renders the HTML report in headless Chromium: the page's DOM holds the verdicts, the
/// endpoint table and the three charts, and a screenshot is written (copied to
/// `$VERDICT_SCREENSHOT` when set, which is how `docs/verdict-report.png` is made).
fn render_in_chromium(page: &Path, dir: &Path) {
    let Some(chromium) = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|p| have_program(p))
    else {
        assert!(
            !is_root() && std::env::var_os("CI").is_none(),
            "chromium missing: apt-get install chromium (scripts/setup.sh)"
        );
        eprintln!("\n*** SKIPPED verdict_lab chromium rendering: chromium is not installed ***\n");
        return;
    };
    let profile = dir.join("chromium-profile");
    let shot = dir.join("report.png");
    let flags = format!(
        "--headless --no-sandbox --disable-gpu --disable-background-networking \
         --disable-component-update --disable-sync --no-first-run --user-data-dir={}",
        profile.display()
    );
    let dom = sh(&format!(
        "timeout 60 {chromium} {flags} --dump-dom file://{}",
        page.display()
    ));
    let dom = String::from_utf8_lossy(&dom.stdout);
    for needle in [
        "Verdicts: 2 failed",
        "GET /slow",
        "GET /boom",
        "id=\"latency-over-time\"",
    ] {
        assert!(dom.contains(needle), "rendered DOM lacks {needle}");
    }
    assert_eq!(dom.matches("<svg").count(), 3, "three charts");
    let out = sh(&format!(
        "timeout 60 {chromium} {flags} --window-size=1280,2400 --screenshot={} file://{}",
        shot.display(),
        page.display()
    ));
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if let Some(to) = std::env::var_os("VERDICT_SCREENSHOT") {
        std::fs::copy(&shot, PathBuf::from(to)).expect("copy the screenshot");
    }
}

#[test]
fn redis_diff_names_the_command_and_the_key() {
    require_root!("verdict_lab::redis_diff");
    require_programs!(
        "verdict_lab::redis_diff",
        "redis-server",
        "redis-cli",
        "tcpdump"
    );
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tmpdir();
    let ns = lab.netns("vdrd");
    for (port, bob) in [(6379, "bob"), (6390, "robert")] {
        start_redis(&mut lab, &ns, &["127.0.0.1"], port, tmp.path(), &[], None);
        lab.exec_ok(
            &ns,
            &format!(
                "redis-cli -p {port} mset user:1 alice user:2 {bob} v 7 >/dev/null && \
                 redis-cli -p {port} rpush list a b >/dev/null"
            ),
        );
    }
    let cap = tmp.path().join("redis.pcap");
    capture_loopback(&mut lab,
        &ns,
        6379,
        "for i in 1 2 3; do for k in user:1 user:2 v; do redis-cli -p 6379 get $k >/dev/null || exit 1; done; \
         redis-cli -p 6379 lrange list 0 -1 >/dev/null; redis-cli -p 6379 get nope >/dev/null; done",
        &cap,
    );
    let d = tmp.path().display();
    // --force: the changed redis listens on this namespace's loopback, a local target.
    let (code, out, err) = tcpcopy(
        &lab,
        &ns,
        &format!(
            "--stream --force -x 6379-127.0.0.1:6390 --offline {} --diff --fail-if 'diff > 0' --report {d}/r.json",
            cap.display()
        ),
    );
    assert_eq!(code, 1, "{out}\n{err}");
    let r = json(&tmp.path().join("r.json"));
    let diff = &r["diff"];
    // 15 commands, all compared; the 3 GETs of user:2 differ, nothing else.
    assert_eq!(diff["compared"], 15, "{out}");
    assert_eq!(diff["matched"], 12, "{out}");
    let ex = diff["fields"].as_array().expect("field examples");
    assert_eq!(ex.len(), 3, "{out}");
    for e in ex {
        assert_eq!(e["endpoint"], "GET");
        assert_eq!(e["key"], "user:2");
        assert_eq!(e["fields"][0]["path"], "$");
        assert_eq!(e["fields"][0]["production"], "bulk bob");
        assert_eq!(e["fields"][0]["test"], "bulk robert");
    }
    assert!(out.contains("differs: GET user:2"), "{out}");
    assert!(err.contains("--fail-if `diff > 0`"), "{err}");
    let names: Vec<&str> = r["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"GET") && names.contains(&"LRANGE"),
        "{names:?}"
    );
}

#[test]
fn baseline_target_learns_timestamp_and_id_noise_and_keeps_real_changes() {
    require_root!("verdict_lab::baseline");
    require_programs!("verdict_lab::baseline", "nginx", "curl", "tcpdump");
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tmpdir();
    let ns = lab.netns("vdbl");
    // A timestamp and a random id in every body; the changed build (8084) raises the price.
    let item = |port: u16, price: u32| {
        format!(
            "server {{ listen 127.0.0.1:{port}; default_type application/json; \
             location /item/ {{ return 200 '{{\"id\":\"$request_id\",\"ts\":$msec,\"name\":\"widget\",\"price\":{price}}}'; }} }}"
        )
    };
    let servers = [
        item(8080, 10),
        item(8081, 10),
        item(8082, 10),
        item(8084, 12),
    ]
    .join("\n");
    start_nginx_servers(
        &mut lab,
        &ns,
        tmp.path(),
        "items",
        "",
        &servers,
        "http://127.0.0.1:8084/item/0",
    );
    let cap = tmp.path().join("items.pcap");
    let u = "http://127.0.0.1:8080/item";
    capture_loopback(
        &mut lab,
        &ns,
        8080,
        &format!(
            "for i in $(seq 1 10); do curl -s -o /dev/null -o /dev/null -o /dev/null \
             {u}/$i {u}/$i {u}/$((i+100)) || exit 1; done"
        ),
        &cap,
    );
    let d = tmp.path().display();
    // --force: the targets listen on this namespace's loopback, a local target.
    let run = |target: u16, extra: &str, name: &str| {
        let (code, out, err) = tcpcopy(
            &lab,
            &ns,
            &format!(
                "--stream --force -x 8080-127.0.0.1:{target} --offline {} --diff {extra} --report {d}/{name}.json",
                cap.display()
            ),
        );
        assert_eq!(code, 0, "{out}\n{err}");
        (out, json(&tmp.path().join(format!("{name}.json"))))
    };

    // Without a baseline the noise shows as differences: this test can fail.
    let (_, noisy) = run(8081, "", "noisy");
    assert_eq!(noisy["diff"]["compared"], 30);
    assert!(noisy["diff"]["matched"].as_u64().unwrap() < 30);

    // With it: $.id and $.ts are learned as noise for GET /item/{id}; nothing differs.
    let baseline = "--baseline-target 127.0.0.1:8082";
    let (out, quiet) = run(8081, baseline, "quiet");
    let diff = &quiet["diff"];
    assert_eq!(
        (diff["compared"].as_u64(), diff["matched"].as_u64()),
        (Some(30), Some(30)),
        "{out}"
    );
    assert_eq!(diff["baseline_compared"], 30);
    let noise: Vec<&str> = diff["noise"]["GET /item/{id}"]
        .as_array()
        .expect("learned noise")
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        noise.contains(&"$.id") && noise.contains(&"$.ts"),
        "{noise:?}"
    );
    assert!(
        !noise.contains(&"$.price") && !noise.contains(&"$.name"),
        "{noise:?}"
    );
    assert!(
        out.contains("noise learned from 30 baseline responses"),
        "{out}"
    );
    // The baseline's requests count nowhere else.
    assert_eq!(quiet["test"]["requests"], 30);

    // A real change in one field is still reported, and only that field.
    let (out, changed) = run(8084, baseline, "changed");
    let diff = &changed["diff"];
    assert_eq!(
        (diff["compared"].as_u64(), diff["matched"].as_u64()),
        (Some(30), Some(0)),
        "{out}"
    );
    for e in diff["fields"].as_array().unwrap() {
        let paths: Vec<&str> = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["$.price"], "{out}");
        assert_eq!(e["fields"][0]["production"], "10");
        assert_eq!(e["fields"][0]["test"], "12");
    }
}
