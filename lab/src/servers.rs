//! Real servers, captures and small wait/count helpers shared by the lab tests: redis-server,
//! nginx and tcpdump started inside a namespace of a [`Lab`] (so its `Drop` stops them), redis
//! `INFO commandstats` readers, settle loops and /proc readers. Nothing here creates a
//! namespace or a link; the topologies live in `topo.rs` and in the tests.

use crate::Lab;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises the lab tests of one test binary (they measure, and load a small machine). A test
/// that failed while holding it does not poison the others.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts redis-server in `ns` bound to `bind` on `port` (no persistence, protected mode off,
/// working directory `dir`, then `extra` arguments) and waits up to 10 s until it answers PING
/// from inside `ns`. Output goes to `log` (or is discarded). Returns its PID.
pub fn start_redis(
    lab: &mut Lab,
    ns: &str,
    bind: &[&str],
    port: u16,
    dir: &Path,
    extra: &[&str],
    log: Option<&Path>,
) -> u32 {
    let ps = port.to_string();
    let mut argv = vec!["redis-server", "--port", &ps, "--bind"];
    argv.extend_from_slice(bind);
    argv.extend_from_slice(&[
        "--dir",
        dir.to_str().unwrap(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
    ]);
    argv.extend_from_slice(extra);
    let pid = lab.spawn(ns, &argv, log);
    let host = match bind.first() {
        None | Some(&"0.0.0.0") | Some(&"::") | Some(&"*") => "127.0.0.1",
        Some(h) => h,
    };
    assert!(
        lab.wait_for(
            ns,
            &format!("redis-cli -h {host} -p {port} ping | grep -q PONG"),
            Duration::from_secs(10)
        ),
        "redis in {ns} did not start: {}",
        log.and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default()
    );
    pid
}

/// `calls` of one redis command from `INFO commandstats` of the redis on 127.0.0.1:`port` in
/// `ns`; 0 when the command was never called or redis does not answer.
pub fn redis_calls(lab: &Lab, ns: &str, port: u16, cmd: &str) -> u64 {
    let out = lab.exec(ns, &format!("redis-cli -p {port} info commandstats"));
    let text = String::from_utf8_lossy(&out.stdout);
    let key = format!("cmdstat_{cmd}:calls=");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `INFO commandstats` of the redis at `host`:`port` seen from `ns`, as command → calls (INFO
/// and CONFIG RESETSTAT themselves left out). Panics when redis does not answer.
pub fn commandstats(lab: &Lab, ns: &str, host: &str, port: u16) -> HashMap<String, u64> {
    let out = lab.exec_ok(
        ns,
        &format!("redis-cli -h {host} -p {port} info commandstats"),
    );
    let mut m = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            let (name, stats) = rest.split_once(':').unwrap_or((rest, ""));
            if name == "info" || name == "config|resetstat" {
                continue;
            }
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            m.insert(name.to_string(), calls);
        }
    }
    m
}

/// Starts nginx (one worker, `daemon off`, runs as root) in `ns` serving `200 ok` on every
/// `listen` directive (nginx syntax, e.g. `80 reuseport` or `127.0.0.3:8080 proxy_protocol`),
/// logging each request with `log_format` to `dir/name/access.log`. Ready when the first
/// directive's address is listening (`ADDR:PORT ...`) or answers curl on 127.0.0.1 (`PORT ...`);
/// the access log is then emptied (it forgets the probe). Returns the access log's path.
pub fn start_nginx(
    lab: &mut Lab,
    ns: &str,
    dir: &Path,
    name: &str,
    listen: &[&str],
    log_format: &str,
) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let ds = d.to_str().unwrap();
    let listens: String = listen.iter().map(|l| format!("listen {l}; ")).collect();
    let conf = format!(
        "daemon off; master_process on; worker_processes 1; user root; pid {ds}/nginx.pid;\n\
         error_log {ds}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           log_format t '{log_format}';\n\
           access_log {ds}/access.log t;\n\
           client_body_temp_path {ds}/body; proxy_temp_path {ds}/proxy; fastcgi_temp_path {ds}/fcgi;\n\
           uwsgi_temp_path {ds}/uwsgi; scgi_temp_path {ds}/scgi;\n\
           server {{ {listens}location / {{ return 200 \"ok\\n\"; }} }}\n\
         }}\n"
    );
    let c = d.join("nginx.conf");
    std::fs::write(&c, conf).unwrap();
    lab.spawn(
        ns,
        &["nginx", "-c", c.to_str().unwrap(), "-p", ds],
        Some(&d.join("stderr.log")),
    );
    let first = listen
        .first()
        .and_then(|l| l.split_whitespace().next())
        .expect("a listen directive");
    let probe = if first.contains(':') {
        format!("ss -ltn | grep -q '{first} '")
    } else {
        format!("curl -s -o /dev/null http://127.0.0.1:{first}/")
    };
    assert!(
        lab.wait_for(ns, &probe, Duration::from_secs(10)),
        "nginx in {ns} did not start: {}",
        std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default()
    );
    let log = d.join("access.log");
    if !first.contains(':') {
        // nginx logs the probe after curl has its answer: wait for that line, or emptying the
        // log could come first and the probe would be counted as a request.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::metadata(&log).map_or(0, |m| m.len()) == 0
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    std::fs::write(&log, "").unwrap();
    log
}

/// Starts tcpdump in `ns` on `ifc` (snap length 4096, 32 MB buffer) writing `file`; returns
/// its PID once it listens.
pub fn start_tcpdump(lab: &mut Lab, ns: &str, ifc: &str, filter: &str, file: &Path) -> u32 {
    start_tcpdump_opts(
        lab,
        ns,
        &["-i", ifc, "-s", "4096", "-B", "32768"],
        filter,
        file,
    )
}

/// Captures `client` (a shell command run in `ns`) talking to `port` on loopback into `file`;
/// panics unless the capture is complete. Not `stop_tcpdump`: on loopback, "received by
/// filter" counts every packet twice. A 64 MB buffer: loopback segments reach 64 KB, and 8 MB
/// (some 128 of them) overflowed once on a busy CI machine while tcpdump waited for a CPU.
pub fn capture_loopback(lab: &mut Lab, ns: &str, port: u16, client: &str, file: &Path) {
    let td = start_tcpdump_opts(
        lab,
        ns,
        &["-i", "lo", "-s", "0", "-B", "65536"],
        &format!("tcp port {port}"),
        file,
    );
    lab.exec_ok(ns, client);
    std::thread::sleep(Duration::from_millis(300));
    lab.stop(td, "INT", Duration::from_secs(5))
        .expect("tcpdump did not stop");
    let log = std::fs::read_to_string(file.with_extension("tcpdump.log")).unwrap_or_default();
    assert!(
        log.lines().any(|l| l == "0 packets dropped by kernel"),
        "capture incomplete: {log}"
    );
}

/// Starts tcpdump in `ns` with `opts` (interface, snap length, direction...) plus immediate
/// mode, packet-buffered output and numeric addresses, writing `file`; its messages go to
/// `file` with the extension `tcpdump.log`. Returns its PID once it listens.
pub fn start_tcpdump_opts(
    lab: &mut Lab,
    ns: &str,
    opts: &[&str],
    filter: &str,
    file: &Path,
) -> u32 {
    let log = file.with_extension("tcpdump.log");
    let mut argv = vec!["tcpdump"];
    argv.extend_from_slice(opts);
    argv.extend_from_slice(&[
        "--immediate-mode",
        "-U",
        "-n",
        "-w",
        file.to_str().unwrap(),
        filter,
    ]);
    let pid = lab.spawn(ns, &argv, Some(&log));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on")
        {
            std::thread::sleep(Duration::from_millis(100));
            return pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "tcpdump did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Stops tcpdump once its file stopped growing; panics if the kernel dropped packets.
pub fn stop_tcpdump(lab: &mut Lab, pid: u32, file: &Path) {
    let mut last = 0;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        if now == last {
            break;
        }
        last = now;
    }
    lab.stop(pid, "INT", Duration::from_secs(5))
        .expect("tcpdump did not stop");
    let log = std::fs::read_to_string(file.with_extension("tcpdump.log")).unwrap_or_default();
    let n = |what: &str| {
        log.lines()
            .find(|l| l.ends_with(what))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
    };
    assert!(
        n("packets dropped by kernel") == Some(0)
            && n("packets captured") == n("packets received by filter"),
        "capture incomplete: {log}"
    );
}

/// Number of lines in a file (0 when it cannot be read).
pub fn line_count(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .map(|t| t.lines().count() as u64)
        .unwrap_or(0)
}

/// The lines of a file (none when it cannot be read).
pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A number written alone in a file (0 when missing or not a number).
pub fn read_u64(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls `f` until it reaches `want` or stops changing for 2 s (at most `max`).
pub fn settle(want: u64, max: Duration, mut f: impl FnMut() -> u64) -> u64 {
    let deadline = Instant::now() + max;
    let mut last = f();
    let mut changed = Instant::now();
    while last < want && Instant::now() < deadline && changed.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(200));
        let now = f();
        if now != last {
            last = now;
            changed = Instant::now();
        }
    }
    last
}

/// `got / of`, 0 when `of` is 0.
pub fn ratio(got: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        got as f64 / of as f64
    }
}

/// Polls `f` every 50 ms until it holds; panics after `timeout` with `what` and the `logs`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool, logs: &[&Path]) {
    let t0 = Instant::now();
    while !f() {
        if t0.elapsed() > timeout {
            let mut msg = format!("timed out waiting for {what}");
            for l in logs {
                msg += &format!(
                    "\n--- {}:\n{}",
                    l.display(),
                    std::fs::read_to_string(l).unwrap_or_default()
                );
            }
            panic!("{msg}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` connection attempts from `ns` to `host`:`port` (bash /dev/tcp), whatever they meet.
pub fn knock(lab: &Lab, ns: &str, host: &str, port: u16, n: u32) {
    lab.exec(
        ns,
        &format!(
            "for i in $(seq {n}); do bash -c 'exec 3<>/dev/tcp/{host}/{port}' 2>/dev/null; done; true"
        ),
    );
}

/// Resident set size of a process in kB (from /proc/PID/status), `None` once it is gone.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    st.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
}

/// Open file descriptors of a process (entries of /proc/PID/fd), `None` once it is gone.
pub fn fd_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// Starts nginx (one worker, `daemon off`, runs as root) in `ns` with `main` (top-level
/// directives such as `load_module`) and `servers` (the `server { ... }` blocks of its `http`
/// block), files under `dir/name`. Ready when `probe` (a URL) answers curl inside `ns`.
pub fn start_nginx_servers(
    lab: &mut Lab,
    ns: &str,
    dir: &Path,
    name: &str,
    main: &str,
    servers: &str,
    probe: &str,
) -> u32 {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let ds = d.to_str().unwrap();
    let conf = format!(
        "{main}\ndaemon off; master_process on; worker_processes 1; user root; pid {ds}/nginx.pid;\n\
         error_log {ds}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {ds}/body; proxy_temp_path {ds}/proxy; fastcgi_temp_path {ds}/fcgi;\n\
           uwsgi_temp_path {ds}/uwsgi; scgi_temp_path {ds}/scgi;\n\
           {servers}\n\
         }}\n"
    );
    let c = d.join("nginx.conf");
    std::fs::write(&c, conf).unwrap();
    let pid = lab.spawn(
        ns,
        &["nginx", "-c", c.to_str().unwrap(), "-p", ds],
        Some(&d.join("stderr.log")),
    );
    assert!(
        lab.wait_for(
            ns,
            &format!("curl -s -o /dev/null {probe}"),
            Duration::from_secs(10)
        ),
        "nginx {name} in {ns} did not start: {}",
        std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default()
    );
    pid
}
