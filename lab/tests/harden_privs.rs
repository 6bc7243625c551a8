//! Lab tests for least privilege in intercept (need root).
//!
//! `intercept_drops_to_nobody`: intercept started as root with `--user nobody -l FILE -P FILE`
//! in a namespace runs as uid/gid 65534 with only CAP_NET_RAW (effective, permitted, bounding;
//! every thread), still captures responses (TCP resets from a closed port on the other end of a
//! veth), reopens its log file on SIGHUP after a rename (the new file owned by nobody), and stops
//! within 2 s of SIGTERM with its summary.
//!
//! `intercept_runs_as_user_with_setcap`: a copy of intercept given `cap_net_raw+ep` with setcap,
//! started as nobody, captures too.

use tcpclone_lab::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

const CLI_IP: &str = "198.18.211.1";
const SRV_IP: &str = "198.18.211.2";
const NOBODY: u32 = 65534;
/// CAP_NET_RAW alone, as /proc/PID/status prints a capability set.
const ONLY_NET_RAW: &str = "0000000000002000";

/// The `captured N` figure of the last stats/summary line in `log`.
fn last_captured(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.split("captured ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
}

/// One field of /proc/PID/status (or of a task's status file).
fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in status"))
        .trim()
        .to_string()
}

/// Opens `n` connections from `ns` to the closed port 6379 on the server: each draws a RST
/// with source port 6379, which intercept's filter captures.
fn knock(lab: &Lab, ns: &str, n: u32) {
    tcpclone_lab::knock(lab, ns, SRV_IP, 6379, n);
}

/// A work directory that the dropped user can enter, with a `logs` subdirectory it owns.
fn work_dir() -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let logs = work.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::os::unix::fs::chown(&logs, Some(NOBODY), Some(NOBODY)).unwrap();
    work
}

#[test]
fn intercept_drops_to_nobody() {
    require_root!("harden_privs::intercept_drops_to_nobody");
    require_programs!("harden_privs", "ip", "bash");
    let work = work_dir();
    let dir = work.path();
    let mut lab = Lab::new();
    let cli = lab.netns("hpc");
    let srv = lab.netns("hps");
    let (veth, _) = lab.veth(&cli, &format!("{CLI_IP}/24"), &srv, &format!("{SRV_IP}/24"));
    let log = dir.join("logs/intercept.log");
    let pidf = dir.join("intercept.pid");
    let out = dir.join("stderr.log");
    let ibin = bin("intercept");
    let ipid = lab.spawn(
        &cli,
        &[
            ibin.to_str().unwrap(),
            "-i",
            &veth,
            "-F",
            "tcp and src port 6379",
            "-b",
            "127.0.0.1",
            "--insecure",
            "--stats",
            "1",
            "--user",
            "nobody",
            "-l",
            log.to_str().unwrap(),
            "-P",
            pidf.to_str().unwrap(),
        ],
        Some(&out),
    );
    wait_until(
        "the privilege drop",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("privileges dropped to nobody")
        },
        &[&out],
    );
    // Let the runtime thread (which reads the ring) start, then inspect every thread.
    wait_until(
        "a stats line",
        Duration::from_secs(5),
        || last_captured(&std::fs::read_to_string(&log).unwrap_or_default()).is_some(),
        &[&log],
    );
    let status = std::fs::read_to_string(format!("/proc/{ipid}/status")).unwrap();
    assert_eq!(status_field(&status, "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(&status, "Gid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(&status, "Groups"), "65534");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    let mut threads = 0;
    for t in std::fs::read_dir(format!("/proc/{ipid}/task")).unwrap() {
        let st = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        for f in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(status_field(&st, f), ONLY_NET_RAW, "{f} of a thread:\n{st}");
        }
        assert_eq!(status_field(&st, "CapInh"), "0000000000000000");
        threads += 1;
    }
    assert!(threads >= 2, "main and runtime threads: {threads}");
    assert_eq!(
        std::fs::read_to_string(&pidf).unwrap().trim(),
        ipid.to_string()
    );
    assert_eq!(std::fs::metadata(&log).unwrap().uid(), NOBODY);

    // It still captures.
    knock(&lab, &cli, 5);
    wait_until(
        "5 captured resets",
        Duration::from_secs(5),
        || last_captured(&std::fs::read_to_string(&log).unwrap_or_default()) >= Some(5),
        &[&log],
    );

    // SIGHUP after logrotate's rename: a new file, owned by nobody, gets the next lines.
    std::fs::rename(&log, dir.join("logs/intercept.log.1")).unwrap();
    lab.exec_ok(&cli, &format!("kill -HUP {ipid}"));
    wait_until(
        "the reopened log",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(&log)
                .map(|s| s.contains("SIGHUP: log file") && last_captured(&s).is_some())
                .unwrap_or(false)
        },
        &[&dir.join("logs/intercept.log.1")],
    );
    assert_eq!(std::fs::metadata(&log).unwrap().uid(), NOBODY);
    let old = std::fs::read_to_string(dir.join("logs/intercept.log.1")).unwrap();
    assert!(!old.contains("SIGHUP: log file"), "{old}");
    knock(&lab, &cli, 3);
    wait_until(
        "3 more captured resets",
        Duration::from_secs(5),
        || last_captured(&std::fs::read_to_string(&log).unwrap_or_default()) >= Some(8),
        &[&log],
    );

    let t0 = Instant::now();
    let st = lab
        .stop(ipid, "TERM", Duration::from_secs(2))
        .expect("intercept stops within 2 s of SIGTERM");
    eprintln!("stopped {:?} after SIGTERM", t0.elapsed());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(st.success(), "exit {st}:\n{text}");
    assert!(text.contains("summary: captured"), "{text}");
}

#[test]
fn intercept_runs_as_user_with_setcap() {
    require_root!("harden_privs::intercept_runs_as_user_with_setcap");
    require_programs!("harden_privs", "ip", "bash", "setcap", "setpriv");
    let work = work_dir();
    let dir = work.path();
    // A copy of the binary the unprivileged user may run, with the file capability.
    let copy = dir.join("intercept");
    std::fs::copy(bin("intercept"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sc = sh(&format!("setcap cap_net_raw+ep {}", copy.display()));
    assert!(sc.status.success());
    let mut lab = Lab::new();
    let cli = lab.netns("hqc");
    let srv = lab.netns("hqs");
    let (veth, _) = lab.veth(&cli, &format!("{CLI_IP}/24"), &srv, &format!("{SRV_IP}/24"));
    let log = dir.join("logs/intercept.log");
    let ipid = lab.spawn(
        &cli,
        &[
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            copy.to_str().unwrap(),
            "-i",
            &veth,
            "-F",
            "tcp and src port 6379",
            "-b",
            "127.0.0.1",
            "--insecure",
            "-p",
            "36600",
            "--stats",
            "1",
            "-l",
            log.to_str().unwrap(),
        ],
        Some(&dir.join("stderr.log")),
    );
    wait_until(
        "a stats line",
        Duration::from_secs(10),
        || last_captured(&std::fs::read_to_string(&log).unwrap_or_default()).is_some(),
        &[&dir.join("stderr.log")],
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("not root"), "{text}");
    let status = std::fs::read_to_string(format!("/proc/{ipid}/status")).unwrap();
    assert_eq!(status_field(&status, "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(&status, "CapEff"), ONLY_NET_RAW);
    knock(&lab, &cli, 4);
    wait_until(
        "4 captured resets",
        Duration::from_secs(5),
        || last_captured(&std::fs::read_to_string(&log).unwrap_or_default()) >= Some(4),
        &[&log],
    );
    let st = lab
        .stop(ipid, "TERM", Duration::from_secs(2))
        .expect("stops within 2 s of SIGTERM");
    assert!(st.success());
}
