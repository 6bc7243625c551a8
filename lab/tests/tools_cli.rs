//! The tools as a user meets them without privileges (issue 13): `--version` names the
//! version and the git commit, and replay's `--metrics` serves its counters while it runs
//! (text that `promtool check metrics` accepts, when promtool is installed).

use std::process::Command;
use std::time::Duration;
use tcpclone_lab::*;

#[test]
fn version_names_version_and_commit() {
    for tool in ["tcpcopy", "intercept", "replay"] {
        let out = Command::new(bin(tool)).arg("--version").output().unwrap();
        assert!(out.status.success(), "{tool} --version failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let want = format!("{tool} {} (commit ", env!("CARGO_PKG_VERSION"));
        assert!(text.starts_with(&want), "{tool} --version: {text:?}");
        let commit = text
            .trim()
            .rsplit("commit ")
            .next()
            .unwrap()
            .trim_end_matches(')');
        assert!(
            commit == "unknown"
                || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
            "{tool} --version commit {commit:?}"
        );
    }
}

#[test]
fn replay_serves_metrics_while_running() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let pcap = workspace_root().join("pcaps/redis.pcap");
    // --loop 0 for 2 s into /dev/null (top speed: a real file would grow by gigabytes): long
    // enough to scrape twice.
    let child = Command::new(bin("replay"))
        .args(["-w", "/dev/null"])
        .args([
            "--loop",
            "0",
            "--duration",
            "2",
            "--metrics",
            &addr.to_string(),
        ])
        .arg(&pcap)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let scrape = || {
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(100));
            if let Ok(mut c) = std::net::TcpStream::connect(addr) {
                use std::io::{Read, Write};
                let _ = write!(c, "GET /metrics HTTP/1.0\r\n\r\n");
                let mut s = String::new();
                let _ = c.read_to_string(&mut s);
                return s;
            }
        }
        String::new()
    };
    let value = |s: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix("tcpclone_replay_sent_packets_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let first = scrape();
    std::thread::sleep(Duration::from_millis(500));
    let second = scrape();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let (a, b) = (value(&first), value(&second));
    assert!(
        a > 0 && b > a,
        "sent packets did not grow between scrapes: {a} then {b}\n{first}"
    );
    if have_program("promtool") {
        let body = second.split("\r\n\r\n").nth(1).unwrap_or("");
        let mut p = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let o = p.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// scripts/gen-docs.sh writes a man page and bash/zsh/fish completions per tool, from the
/// tools' own flags (a flag added to a parser shows up in both).
#[test]
fn gen_docs_writes_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(workspace_root().join("scripts/gen-docs.sh"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen-docs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for tool in ["tcpcopy", "intercept", "replay"] {
        let man = std::fs::read_to_string(dir.path().join(format!("man/{tool}.1"))).unwrap();
        assert!(man.contains(&format!(".TH {tool} 1")), "{tool}.1:\n{man}");
        assert!(man.contains("metrics"), "{tool}.1 has no --metrics");
        let bash = dir.path().join(format!("completions/{tool}.bash"));
        let text = std::fs::read_to_string(&bash).unwrap();
        assert!(text.contains("--metrics"), "{tool}.bash has no --metrics");
        let syntax = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
        assert!(syntax.status.success(), "{tool}.bash does not parse");
        for f in [format!("_{tool}"), format!("{tool}.fish")] {
            let t = std::fs::read_to_string(dir.path().join("completions").join(&f)).unwrap();
            assert!(t.contains("metrics"), "{f} has no --metrics");
        }
    }
}

/// Stream mode serves `--metrics`; an address it cannot listen on is one line naming the flag
/// and the address, exit 2, before anything is replayed.
#[test]
fn stream_mode_metrics_on_a_busy_address_is_one_line() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    // A target that passes the target check (not an address of this host, not the capture's
    // server), so that the --metrics error is the one reported.
    let out = Command::new(bin("tcpcopy"))
        .args(["--stream", "-x", "6379-198.18.0.9:1", "--offline"])
        .arg(workspace_root().join("pcaps/redis.pcap"))
        .args(["--metrics", &addr])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with(&format!("tcpcopy: --metrics {addr}: cannot listen")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `--log-format json` in stream mode: a refusal is one JSON object on stderr, and a whole
/// offline run logs only JSON lines there (the privilege switch among them), while the
/// report table stays on stdout.
#[test]
fn stream_mode_logs_json() {
    let cap = workspace_root().join("pcaps/redis.pcap");
    let out = Command::new(bin("tcpcopy"))
        .args(["--stream", "--log-format", "json"])
        .args(["-x", "6379-198.18.200.2:6379", "--offline"])
        .arg(&cap)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(err.trim()).expect("a JSON line");
    assert_eq!(v["level"], "ERROR", "{v}");
    assert!(
        v["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("refused"),
        "{v}"
    );

    // --force: port 1 on loopback (closed: the run ends at once) is a local target, refused
    // without it; its warning must be a JSON line too.
    let out = Command::new(bin("tcpcopy"))
        .args(["--stream", "--log-format", "json", "--topspeed", "--force"])
        .args([
            "--connect-timeout",
            "0.5",
            "-x",
            "6379-127.0.0.1:1",
            "--offline",
        ])
        .arg(&cap)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let messages: Vec<String> = err
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"));
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("privileges dropped") || m.contains("not root")),
        "{err}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("warning: --force: target 127.0.0.1")),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
}
