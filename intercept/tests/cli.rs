//! The `intercept` command line: bad input gives one clear line and a non-zero exit, before
//! any capture is opened (so these run without root).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_intercept"))
        .args(args)
        .output()
        .expect("run intercept");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SECRET: &str = "3f1e2d4c5b6a798807f6e5d4c3b2a1900f1e2d3c4b5a69788796a5b4c3d2e1f0\n";

#[test]
fn secret_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("secret");
    std::fs::write(&p, SECRET).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = run(&[
        "-i",
        "lo",
        "-F",
        "tcp",
        "--secret-file",
        p.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("mode 644") && err.contains("chmod 600"),
        "{err}"
    );
}

#[test]
fn malformed_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("secret");
    std::fs::write(&p, "hunter2\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, err) = run(&["-F", "tcp", "--secret-file", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("64 hexadecimal digits"), "{err}");
    let (code, err) = run(&["-F", "tcp", "--secret-file", "/nonexistent/secret"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/secret"), "{err}");
}

#[test]
fn filter_is_required_and_allow_is_checked() {
    let (code, err) = run(&["-i", "lo"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--filter"), "{err}");
    let (code, err) = run(&["-F", "tcp", "--allow", "198.18.0.0/33"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--allow") && err.contains("198.18.0.0/33"),
        "{err}"
    );
}

#[test]
fn capture_backend_and_workers_are_checked() {
    let (code, err) = run(&["-F", "tcp", "--capture", "bpf"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--capture") && err.contains("ring"), "{err}");
    let (code, err) = run(&["-F", "tcp", "--workers", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--workers"), "{err}");
    let (code, err) = run(&["-F", "tcp", "--capture", "pcap", "--workers", "2"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("--capture ring"), "{err}");
}
