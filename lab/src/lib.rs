//! The lab: real networks on one machine, for end-to-end tests.
//!
//! Network namespaces joined by veth pairs (and a bridge namespace for a LAN), real servers and
//! clients started inside them. Everything created here is removed by `Drop`, also when a test
//! fails: namespaces are deleted (their veths go with them) and only processes this lab started
//! are killed, by PID. Addresses come from 198.18.0.0/15 and 2001:db8::/32 only.

pub mod logs;
pub mod pcap;
pub mod servers;
pub mod sys;
pub mod topo;
pub use logs::{failed_verdicts, read_json, tempdir, tempdir_for_dropped_user, wait_for_log};
#[allow(unused_imports)]
pub use servers::*;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Skip the calling test, loudly, when not root. Use as the first line of every lab test.
#[macro_export]
macro_rules! require_root {
    ($what:expr) => {
        if !$crate::is_root() {
            eprintln!(
                "\n*** LAB TEST SKIPPED: {} — needs root (network namespaces, raw sockets). Run as root to include it. ***\n",
                $what
            );
            println!("LAB TEST SKIPPED (not root): {}", $what);
            return;
        }
    };
}

/// Skip the calling test, loudly, when a program it needs is missing.
#[macro_export]
macro_rules! require_programs {
    ($what:expr, $($prog:expr),+) => {
        for p in [$($prog),+] {
            if !$crate::have_program(p) {
                eprintln!("\n*** LAB TEST SKIPPED: {} — program `{}` is not installed (the README's test command installs it). ***\n", $what, p);
                println!("LAB TEST SKIPPED (missing {}): {}", p, $what);
                return;
            }
        }
    };
}

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY-free: read the effective uid through `id -u` to keep tests free of unsafe.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// True when `prog` is on PATH (or an absolute path that exists).
pub fn have_program(prog: &str) -> bool {
    if prog.starts_with('/') {
        return std::path::Path::new(prog).exists();
    }
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Writes a fresh shared secret (64 hex digits, mode 600) to `dir/secret` unless one is there;
/// returns its path. tcpcopy and intercept refuse to start without one unless `--insecure`.
pub fn secret_file(dir: &std::path::Path) -> PathBuf {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join("secret");
    if p.exists() {
        return p;
    }
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .expect("/dev/urandom");
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .expect("create secret");
    std::io::Write::write_all(&mut f, hex.as_bytes()).expect("write secret");
    p
}

/// Path of a workspace binary (`replay`, `tcpcopy`, `intercept`) built in the same profile as
/// this test. Run `cargo build --workspace` (same profile) before the tests.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "binary {} not found: run `cargo build --workspace` with the same profile first",
        p.display()
    );
    p
}

/// Root of the workspace (for `pcaps/` and scripts): the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    let lab = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    lab.parent().unwrap_or(lab).to_path_buf()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call, safe as a netns or interface name (≤ 15 bytes).
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id() % 100_000;
    let p: String = prefix.chars().take(4).collect();
    format!("{p}{pid}x{n}")
}

/// Runs a command in the root namespace; panics with its stderr if it fails.
pub fn sh(cmd: &str) -> Output {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A set of namespaces, links and processes that is torn down on drop.
pub struct Lab {
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab {
    /// An empty lab.
    pub fn new() -> Self {
        Lab {
            namespaces: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Creates a namespace with loopback up; returns its (unique) name.
    pub fn netns(&mut self, role: &str) -> String {
        let name = unique(role);
        sh(&format!("ip netns add {name}"));
        self.namespaces.push(name.clone());
        self.exec_ok(&name, "ip link set lo up");
        name
    }

    /// Joins two namespaces with a veth pair and gives each end an address (CIDR form, e.g.
    /// `198.18.0.1/24` or `2001:db8::1/64`; empty for none). Returns the interface names (a, b).
    pub fn veth(&mut self, ns_a: &str, addr_a: &str, ns_b: &str, addr_b: &str) -> (String, String) {
        let a = unique("va");
        let b = unique("vb");
        sh(&format!("ip link add {a} type veth peer name {b}"));
        sh(&format!("ip link set {a} netns {ns_a}"));
        sh(&format!("ip link set {b} netns {ns_b}"));
        for (ns, ifc, addr) in [(ns_a, &a, addr_a), (ns_b, &b, addr_b)] {
            if !addr.is_empty() {
                self.exec_ok(ns, &format!("ip addr add {addr} dev {ifc} nodad"));
            }
            self.exec_ok(ns, &format!("ip link set {ifc} up"));
        }
        (a, b)
    }

    /// Creates a bridge `br0` inside `ns` (a LAN switch host) and returns its name.
    /// Bridged frames skip iptables, as on a switch (where br_netfilter is loaded a new
    /// namespace has it on; `scripts/lab.sh` says why that matters).
    pub fn bridge(&mut self, ns: &str) -> String {
        self.exec_ok(ns, "ip link add br0 type bridge && ip link set br0 up");
        self.exec_ok(
            ns,
            "for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -e \"$f\" ] && echo 0 >\"$f\"; done; true",
        );
        "br0".to_string()
    }

    /// Connects `host_ns` to the bridge in `bridge_ns` with a veth; the host end gets `addr`.
    /// Returns the host-side interface name.
    pub fn attach(&mut self, bridge_ns: &str, host_ns: &str, addr: &str) -> String {
        let (h, b) = self.veth(host_ns, addr, bridge_ns, "");
        self.exec_ok(bridge_ns, &format!("ip link set {b} master br0"));
        h
    }

    /// Runs `cmd` through `sh -c` inside `ns` and returns its output, whatever its status.
    pub fn exec(&self, ns: &str, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", cmd])
            .output()
            .expect("spawn ip netns exec")
    }

    /// Like [`Lab::exec`] but panics with stderr when the command fails.
    pub fn exec_ok(&self, ns: &str, cmd: &str) -> Output {
        let out = self.exec(ns, cmd);
        assert!(
            out.status.success(),
            "in {ns}: `{cmd}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts a long-running program inside `ns` (argv form, no shell); it is killed by PID on drop
    /// if still running. Output goes to the given files (or is discarded). Returns the child's PID.
    pub fn spawn(&mut self, ns: &str, argv: &[&str], log: Option<&std::path::Path>) -> u32 {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null());
        match log {
            Some(p) => {
                let f = std::fs::File::create(p).expect("log file");
                cmd.stdout(f.try_clone().unwrap()).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        let pid = child.id();
        self.children.push((argv.join(" "), child));
        pid
    }

    /// Starts, inside `ns`, the ignored test `test` of the running test binary as a helper
    /// process (a fake peer, a flood), with `env_var` set to `dir` so that it finds the test's
    /// files; its output goes to `log`. Returns its PID (killed on drop like any child).
    pub fn spawn_helper_test(
        &mut self,
        ns: &str,
        test: &str,
        env_var: &str,
        dir: &std::path::Path,
        log: &std::path::Path,
    ) -> u32 {
        let exe = std::env::current_exe().expect("test binary path");
        let env = format!("{env_var}={}", dir.display());
        self.spawn(
            ns,
            &[
                "env",
                &env,
                exe.to_str().expect("UTF-8 path"),
                test,
                "--exact",
                "--ignored",
                "--nocapture",
            ],
            Some(log),
        )
    }

    /// Sends `signal` (e.g. "INT", "TERM") to a child started by [`Lab::spawn`] and waits up to
    /// `timeout` for it to exit. Returns its exit status if it exited.
    pub fn stop(
        &mut self,
        pid: u32,
        signal: &str,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let idx = self.children.iter().position(|(_, c)| c.id() == pid)?;
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.children[idx].1.try_wait() {
                self.children.remove(idx);
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `cmd` succeeds inside `ns`, up to `timeout`. Returns whether it did.
    pub fn wait_for(&self, ns: &str, cmd: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.exec(ns, cmd).status.success() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for ns in self.namespaces.iter().rev() {
            // Kill anything still running inside namespaces we created (e.g. daemons that forked
            // away from the PIDs we hold): `ip netns pids` lists only processes in *our* namespace.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `promtool check metrics` on an endpoint's text; returns its complaints (empty: ok).
pub fn promtool_check_metrics(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        String::new()
    } else {
        format!("promtool check metrics failed:\n{s}")
    }
}
