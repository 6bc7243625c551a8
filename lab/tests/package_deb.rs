//! The Debian package (issue 13): scripts/package.sh builds it with cargo-deb, `dpkg -i`
//! installs it on this machine, each installed tool answers `--version` and `--help` from
//! /usr/bin, `man -w tcpcopy` finds the page, the completions and /etc/tcpclone/ example files
//! are in place, the postinst created the tcpclone user, and `systemd-analyze verify` accepts
//! both units. The package is purged at the end (also when a check fails), and the user is
//! removed again if the test created it.

use std::path::Path;
use std::process::Command;
use tcpclone_lab::*;

/// Purges the package (and the user it created) when the test ends, however it ends.
struct Installed {
    user_was_there: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "tcpclone"]).output();
        if !self.user_was_there {
            let _ = Command::new("deluser")
                .args(["--system", "--quiet", "tcpclone"])
                .output();
            let _ = Command::new("delgroup")
                .args(["--system", "--quiet", "tcpclone"])
                .output();
        }
    }
}

fn run(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn deb_installs_runs_and_verifies() {
    require_root!("package_deb::deb_installs_runs_and_verifies");
    require_programs!("package_deb", "dpkg", "man", "systemd-analyze", "cargo");
    if !run("cargo deb --version").0 {
        println!("SKIPPED package_deb: cargo-deb is not installed (scripts/setup.sh installs it)");
        return;
    }
    let _g = serial();
    if run("dpkg-query -W -f='${Status}' tcpclone 2>/dev/null | grep -q 'install ok'").0 {
        println!("SKIPPED package_deb: a tcpclone package is installed on this machine already");
        return;
    }
    let root = workspace_root();
    let out = Command::new("bash")
        .arg(root.join("scripts/package.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/package.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let deb = root.join(&deb);
    assert!(deb.exists(), "no package at {}", deb.display());

    let _installed = Installed {
        user_was_there: run("getent passwd tcpclone").0,
    };
    let (ok, text) = run(&format!("dpkg -i {}", deb.display()));
    assert!(ok, "dpkg -i failed:\n{text}");

    let mut failures = Vec::new();
    for tool in ["tcpcopy", "intercept", "replay"] {
        let (ok, v) = run(&format!("/usr/bin/{tool} --version"));
        if !ok || !v.starts_with(&format!("{tool} {} (commit ", env!("CARGO_PKG_VERSION"))) {
            failures.push(format!("/usr/bin/{tool} --version: {v}"));
        }
        let (ok, h) = run(&format!("/usr/bin/{tool} --help"));
        if !ok || !h.contains("--metrics") {
            failures.push(format!("/usr/bin/{tool} --help: {h}"));
        }
        let (ok, m) = run(&format!("man -w {tool}"));
        if !ok || !m.contains(&format!("/usr/share/man/man1/{tool}.1")) {
            failures.push(format!("man -w {tool}: {m}"));
        }
        for f in [
            format!("/usr/share/bash-completion/completions/{tool}"),
            format!("/usr/share/zsh/vendor-completions/_{tool}"),
            format!("/usr/share/fish/vendor_completions.d/{tool}.fish"),
        ] {
            if !Path::new(&f).exists() {
                failures.push(format!("missing {f}"));
            }
        }
    }
    for f in ["/etc/tcpclone/tcpcopy.env", "/etc/tcpclone/intercept.env"] {
        if !Path::new(f).exists() {
            failures.push(format!("missing {f}"));
        }
    }
    let (ok, conf) = run("dpkg-query --showformat='${Conffiles}' -W tcpclone");
    if !ok || !conf.contains("/etc/tcpclone/tcpcopy.env") {
        failures.push(format!("the env files are not conffiles: {conf}"));
    }
    if !run("getent passwd tcpclone").0 {
        failures.push("postinst did not create the tcpclone user".into());
    }
    for unit in ["tcpcopy", "intercept"] {
        let path = format!("/lib/systemd/system/{unit}.service");
        let (ok, v) = run(&format!("systemd-analyze verify {path}"));
        // verify prints nothing for a clean unit; any line about our unit is a finding.
        let ours: Vec<&str> = v.lines().filter(|l| l.contains(unit)).collect();
        if !ok || !ours.is_empty() {
            failures.push(format!("systemd-analyze verify {path}:\n{v}"));
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for want in [
            "CapabilityBoundingSet=CAP_NET_RAW",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "User=tcpclone",
        ] {
            if !text.contains(want) {
                failures.push(format!("{path} lacks {want}"));
            }
        }
        let (_, sec) = run(&format!("systemd-analyze security --offline=true {path}"));
        println!("{unit}: {}", sec.lines().last().unwrap_or(""));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
