//! What the lab tests read back from the programs they start: waiting until a log says a
//! program is ready, the temporary directories the logs and reports go to, and JSON reports
//! (read, and their failed verdicts).
//!
//! Every wait here is bounded by a timeout and panics with the log it waited on; nothing here
//! starts or kills a process except [`Lab::spawn_stream_live`], through [`Lab::spawn`].

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{bin, Lab};

/// A temporary directory named after `prefix`, removed on drop.
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir")
}

/// A temporary directory others can enter (0755): live stream mode drops to `--user nobody`
/// after start and then writes its `--report` files there.
pub fn tempdir_for_dropped_user(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempdir(prefix);
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// A JSON report file, parsed; panics if it is missing or not JSON.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report file")).expect("report JSON")
}

/// (rule, endpoint) of every failed verdict of a JSON report, sorted; a run-wide rule's
/// endpoint is `(run)`.
pub fn failed_verdicts(report: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = report["verdicts"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or(&[])
        .iter()
        .filter(|v| v["failed"] == true)
        .map(|v| {
            (
                v["rule"].as_str().unwrap_or("").to_string(),
                v["endpoint"].as_str().unwrap_or("(run)").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Polls the file `log` every `every` until it contains `needle`, up to `timeout`; panics with
/// `what` and the log's text if it never does. Returns the text that held it.
pub fn wait_for_log(
    log: &Path,
    needle: &str,
    timeout: Duration,
    every: Duration,
    what: &str,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}:\n{text}");
        std::thread::sleep(every);
    }
}

impl Lab {
    /// Starts `tcpcopy --stream` with `args` inside `ns`, its output in `log`, and returns its
    /// PID once it logs that it is capturing (within 10 s, else a panic with the log), plus
    /// 200 ms for the ring to take traffic.
    pub fn spawn_stream_live(&mut self, ns: &str, args: &[&str], log: &Path) -> u32 {
        let tcpcopy = bin("tcpcopy");
        let mut argv = vec![tcpcopy.to_str().expect("UTF-8 path"), "--stream"];
        argv.extend_from_slice(args);
        let pid = self.spawn(ns, &argv, Some(log));
        wait_for_log(
            log,
            "capturing",
            Duration::from_secs(10),
            Duration::from_millis(50),
            "live stream did not start",
        );
        std::thread::sleep(Duration::from_millis(200));
        pid
    }
}
