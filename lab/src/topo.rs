//! The tcpcopy lab topology (issue 3's layout), shared by the tcpcopy lab, fault and soak tests.
//!
//! ```text
//!  client 198.18.10.2 ──veth── 198.18.10.1 production (redis/nginx + tcpcopy)
//!                                    198.18.1.1 ──┐
//!                                                 bridge ns (br0)
//!           target 198.18.1.2 (redis :6380, nginx :8080) ──┤
//!           assistant 198.18.1.3 (intercept, ip_forward=0) ─┘
//! ```
//!
//! The target routes the client networks (198.18.10.0/24, the -c range 198.18.20.0/24 and
//! 2001:db8:10::/64) via the assistant, whose forwarding is off, so responses die there and
//! intercept reports them. In the "intercept on the target" layout the target routes them into
//! a veth to an isolated namespace instead and intercept captures on that veth.

use crate::servers::{start_nginx, start_redis};
use crate::{bin, secret_file, Lab};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Production's address on the client link.
pub const PROD4: &str = "198.18.10.1";
/// The client's address.
pub const CLIENT4: &str = "198.18.10.2";
/// Production's address on the bridge (the LAN of target and assistant).
pub const PROD_LAN4: &str = "198.18.1.1";
/// The target's address.
pub const TARGET4: &str = "198.18.1.2";
/// The assistant's address (intercept).
pub const ASSIST4: &str = "198.18.1.3";
/// Production's IPv6 address on the client link.
pub const PROD6: &str = "2001:db8:10::1";
/// The client's IPv6 address.
pub const CLIENT6: &str = "2001:db8:10::2";
/// Production's IPv6 address on the bridge.
pub const PROD_LAN6: &str = "2001:db8:1::1";
/// The target's IPv6 address.
pub const TARGET6: &str = "2001:db8:1::2";
/// The assistant's IPv6 address.
pub const ASSIST6: &str = "2001:db8:1::3";
/// redis port in production.
pub const REDIS_PROD: u16 = 6379;
/// redis port on the target.
pub const REDIS_TARGET: u16 = 6380;
/// nginx port in production.
pub const HTTP_PROD: u16 = 80;
/// nginx port on the target.
pub const HTTP_TARGET: u16 = 8080;
/// intercept's capture filter for the target's redis responses.
pub const REDIS_FILTER: &str = "tcp and src port 6380";
/// intercept's capture filter for the target's nginx responses.
pub const HTTP_FILTER: &str = "tcp and src port 8080";
/// nginx access-log format of the lab: time, client address:port, request line.
pub const NGINX_LOG_FORMAT: &str = "$msec $remote_addr:$remote_port $request";

/// Where intercept runs.
#[derive(Clone, Copy, PartialEq)]
pub enum Layout {
    /// On an assistant host with forwarding off (the classic layout).
    Assistant,
    /// On the target itself; responses leave through a veth into an isolated namespace.
    OnTarget,
}

/// The namespaces of one tcpcopy lab; dropping it tears everything down.
pub struct Topo {
    /// The lab holding namespaces and processes.
    pub lab: Lab,
    /// Work directory (logs, configurations, captures).
    pub dir: tempfile::TempDir,
    /// The client namespace.
    pub client: String,
    /// The production namespace (services and tcpcopy).
    pub prod: String,
    /// The target namespace.
    pub target: String,
    /// The bridge namespace (the LAN switch of production, target and assistant).
    pub bridge: String,
    /// The target's interface on the LAN (in the target namespace).
    pub target_if: String,
    /// The bridge's end of the target's link (in the bridge namespace).
    pub target_port: String,
    /// Where intercept runs (assistant, or the target itself).
    pub icpt_ns: String,
    /// Device intercept captures on.
    pub icpt_dev: String,
    /// Address tcpcopy reaches intercept at.
    pub icpt_addr: String,
    /// The summary the last `stop_tcpcopy` returned.
    pub last_summary: String,
}

impl Topo {
    /// Builds the namespaces and links of `layout` and checks that they route.
    pub fn new(layout: Layout) -> Topo {
        let mut lab = Lab::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let client = lab.netns("tcc");
        let prod = lab.netns("tcp");
        let bridge = lab.netns("tcb");
        let target = lab.netns("tct");
        lab.bridge(&bridge);
        let (c_if, p_if) = lab.veth(
            &client,
            &format!("{CLIENT4}/24"),
            &prod,
            &format!("{PROD4}/24"),
        );
        lab.exec_ok(
            &client,
            &format!("ip addr add 2001:db8:10::2/64 dev {c_if} nodad"),
        );
        lab.exec_ok(&prod, &format!("ip addr add {PROD6}/64 dev {p_if} nodad"));
        let pb = lab.attach(&bridge, &prod, "198.18.1.1/24");
        lab.exec_ok(
            &prod,
            &format!("ip addr add 2001:db8:1::1/64 dev {pb} nodad"),
        );
        // `attach` spelled out: the target's bridge port is kept to take its link down.
        let (tb, target_port) = lab.veth(&target, &format!("{TARGET4}/24"), &bridge, "");
        lab.exec_ok(&bridge, &format!("ip link set {target_port} master br0"));
        lab.exec_ok(&target, &format!("ip addr add {TARGET6}/64 dev {tb} nodad"));
        let (icpt_ns, icpt_dev, icpt_addr, via4, via6) = match layout {
            Layout::Assistant => {
                let assist = lab.netns("tca");
                let ab = lab.attach(&bridge, &assist, &format!("{ASSIST4}/24"));
                lab.exec_ok(&assist, &format!("ip addr add {ASSIST6}/64 dev {ab} nodad"));
                lab.exec_ok(
                    &assist,
                    "sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0",
                );
                (
                    assist,
                    ab,
                    ASSIST4.to_string(),
                    ASSIST4.to_string(),
                    ASSIST6.to_string(),
                )
            }
            Layout::OnTarget => {
                // A veth into an isolated namespace with forwarding off: responses really leave
                // the target through it (and die on the other side); intercept captures there.
                let sink = lab.netns("tcs");
                let (t_if, _s_if) = lab.veth(&target, "198.18.30.1/24", &sink, "198.18.30.2/24");
                lab.exec_ok(
                    &target,
                    &format!("ip addr add 2001:db8:30::1/64 dev {t_if} nodad"),
                );
                lab.exec_ok(
                    &sink,
                    &format!("ip addr add 2001:db8:30::2/64 dev {_s_if} nodad"),
                );
                lab.exec_ok(
                    &sink,
                    "sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0",
                );
                (
                    target.clone(),
                    t_if,
                    TARGET4.to_string(),
                    "198.18.30.2".to_string(),
                    "2001:db8:30::2".to_string(),
                )
            }
        };
        for net in ["198.18.10.0/24", "198.18.20.0/24"] {
            lab.exec_ok(&target, &format!("ip route add {net} via {via4}"));
        }
        lab.exec_ok(
            &target,
            &format!("ip -6 route add 2001:db8:10::/64 via {via6}"),
        );
        let t = Topo {
            lab,
            dir,
            client,
            prod,
            target,
            bridge,
            target_if: tb,
            target_port,
            icpt_ns,
            icpt_dev,
            icpt_addr,
            last_summary: String::new(),
        };
        assert!(t.lab.wait_for(
            &t.client,
            &format!("ping -c1 -W1 {PROD4}"),
            Duration::from_secs(5)
        ));
        assert!(t.lab.wait_for(
            &t.prod,
            &format!("ping -c1 -W1 {TARGET4}"),
            Duration::from_secs(5)
        ));
        t
    }

    /// Path of `name` in the work directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts redis on all addresses (v4 and v6) of `ns` at `port`, working in `dir/name`.
    pub fn start_redis(&mut self, ns: &str, port: u16, name: &str) -> u32 {
        let d = self.path(name);
        std::fs::create_dir_all(&d).unwrap();
        start_redis(
            &mut self.lab,
            ns,
            &["0.0.0.0", "::"],
            port,
            &d,
            &["--daemonize", "no", "--maxclients", "10000"],
            Some(&d.join("redis.log")),
        )
    }

    /// Starts nginx on all addresses (v4 and v6) of `ns` at `port`, working in `dir/name`;
    /// returns its (empty) access log.
    pub fn start_nginx(&mut self, ns: &str, port: u16, name: &str) -> PathBuf {
        let (l4, l6) = (
            format!("{port} reuseport"),
            format!("[::]:{port} reuseport"),
        );
        let dir = self.dir.path().to_path_buf();
        start_nginx(&mut self.lab, ns, &dir, name, &[&l4, &l6], NGINX_LOG_FORMAT)
    }

    /// Starts intercept where the layout puts it, capturing `filter`; waits until it listens.
    /// Returns its PID.
    pub fn start_intercept(&mut self, filter: &str) -> u32 {
        self.start_intercept_with(filter, &[])
    }

    /// [`Topo::start_intercept`] with `extra` flags.
    pub fn start_intercept_with(&mut self, filter: &str, extra: &[&str]) -> u32 {
        let log = self.path("intercept.log");
        let secret = secret_file(self.dir.path());
        let (ns, dev, bind) = (
            self.icpt_ns.clone(),
            self.icpt_dev.clone(),
            self.icpt_addr.clone(),
        );
        let intercept = bin("intercept");
        let mut argv = vec![
            intercept.to_str().unwrap(),
            "-i",
            &dev,
            "-F",
            filter,
            "-b",
            &bind,
            "--secret-file",
            secret.to_str().unwrap(),
        ];
        argv.extend_from_slice(extra);
        let pid = self.lab.spawn(&ns, &argv, Some(&log));
        assert!(
            self.lab.wait_for(
                &ns,
                "ss -Hltn 'sport = :36524' | grep -q LISTEN",
                Duration::from_secs(10)
            ),
            "intercept did not start listening: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        pid
    }

    /// Starts tcpcopy in production and waits until it is connected to intercept.
    pub fn start_tcpcopy(&mut self, args: &[&str]) -> u32 {
        let log = self.path("tcpcopy.log");
        let prod = self.prod.clone();
        let tcpcopy = bin("tcpcopy");
        let mut argv: Vec<&str> = vec![tcpcopy.to_str().unwrap()];
        argv.extend_from_slice(args);
        let icpt = self.icpt_addr.clone();
        let secret = secret_file(self.dir.path());
        argv.extend_from_slice(&["-s", &icpt, "--secret-file", secret.to_str().unwrap()]);
        let pid = self.lab.spawn(&prod, &argv, Some(&log));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("connected to intercept") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tcpcopy did not connect to intercept:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        pid
    }

    /// SIGINT; it must exit within 2 s with a summary. Returns the summary text.
    pub fn stop_tcpcopy(&mut self, pid: u32) -> String {
        let t0 = Instant::now();
        let st = self.lab.stop(pid, "INT", Duration::from_secs(3));
        let took = t0.elapsed();
        let text = std::fs::read_to_string(self.path("tcpcopy.log")).unwrap_or_default();
        let summary: String = text
            .lines()
            .skip_while(|l| !l.starts_with("tcpcopy summary"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            st.is_some() && took <= Duration::from_millis(2_500),
            "tcpcopy did not stop within 2 s of SIGINT ({took:?})"
        );
        assert!(!summary.is_empty(), "no summary printed:\n{text}");
        println!("{summary}");
        self.last_summary = summary.clone();
        summary
    }

    /// Sockets on the target in LAST_ACK / FIN_WAIT / CLOSING.
    pub fn half_closed(&self) -> usize {
        let out = self.lab.exec(
            &self.target,
            "ss -Htan state last-ack state fin-wait-1 state fin-wait-2 state closing",
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }

    /// Waits (up to 8 s) for the target's half-closed sockets to fall back to `baseline`;
    /// returns a report (printed too) when they do not.
    pub fn half_closed_report(&self, baseline: usize) -> Option<String> {
        self.half_closed_report_within(baseline, Duration::from_secs(8))
    }

    /// [`Topo::half_closed_report`], waiting up to `wait` for the sockets to close; prints how
    /// long they took when they were there at the first look.
    pub fn half_closed_report_within(&self, baseline: usize, wait: Duration) -> Option<String> {
        let start = Instant::now();
        let mut n = self.half_closed();
        let first = n;
        while n > baseline && start.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(200));
            n = self.half_closed();
        }
        if n <= baseline {
            if first > baseline {
                println!(
                    "target's {} half-closed sockets closed within {:.1} s",
                    first - baseline,
                    start.elapsed().as_secs_f64()
                );
            }
            return None;
        }
        let detail = self.lab.exec(
            &self.target,
            "ss -Htan state last-ack state fin-wait-1 state fin-wait-2 state closing | head -5",
        );
        let r = format!(
            "target has {n} sockets in LAST_ACK/FIN_WAIT/CLOSING (baseline {baseline}), e.g.:\n{}",
            String::from_utf8_lossy(&detail.stdout)
        );
        println!("{r}");
        Some(r)
    }

    /// Runs `cmd` in the client namespace (it must succeed); returns its stdout.
    pub fn client(&self, cmd: &str) -> String {
        let out = self.lab.exec_ok(&self.client, cmd);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A redis lab: redis in production and on the target, intercept, and tcpcopy started with
    /// `-x mapping` and `extra`; returns the topology and tcpcopy's PID.
    pub fn redis_lab(layout: Layout, mapping: &str, extra: &[&str]) -> (Topo, u32) {
        let mut t = Topo::new(layout);
        let (p, tg) = (t.prod.clone(), t.target.clone());
        t.start_redis(&p, REDIS_PROD, "redis-prod");
        t.start_redis(&tg, REDIS_TARGET, "redis-target");
        t.start_intercept(REDIS_FILTER);
        let mut args = vec!["-x", mapping];
        args.extend_from_slice(extra);
        let pid = t.start_tcpcopy(&args);
        (t, pid)
    }

    /// An nginx lab (assistant layout), tcpcopy started with `-x 80-198.18.1.2:8080` and
    /// `extra`; returns the topology, tcpcopy's PID and the production and target access logs.
    pub fn nginx_lab(extra: &[&str]) -> (Topo, u32, PathBuf, PathBuf) {
        let mut t = Topo::new(Layout::Assistant);
        let (p, tg) = (t.prod.clone(), t.target.clone());
        let prod_log = t.start_nginx(&p, HTTP_PROD, "nginx-prod");
        let target_log = t.start_nginx(&tg, HTTP_TARGET, "nginx-target");
        t.start_intercept(HTTP_FILTER);
        let mut args = vec!["-x", "80-198.18.1.2:8080"];
        args.extend_from_slice(extra);
        let pid = t.start_tcpcopy(&args);
        (t, pid, prod_log, target_log)
    }

    /// Starts tcpdump in production on all interfaces, outbound only, writing what matches
    /// `filter` (the packets that must never leave production) to `name` in the work directory.
    /// Returns its PID and the capture's path once it writes.
    pub fn start_leak_watch(&mut self, filter: &str, name: &str) -> (u32, PathBuf) {
        let leaks = self.path(name);
        let p = self.prod.clone();
        let log = self.path(&format!("{name}.log"));
        let watch = self.lab.spawn(
            &p,
            &[
                "tcpdump",
                "-i",
                "any",
                "-nn",
                "-Q",
                "out",
                "-Z",
                "root",
                "-U",
                "--immediate-mode",
                "-w",
                leaks.to_str().unwrap(),
                filter,
            ],
            Some(&log),
        );
        assert!(
            self.lab.wait_for(
                &p,
                &format!("test -s {}", leaks.display()),
                Duration::from_secs(5)
            ),
            "tcpdump did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        (watch, leaks)
    }

    /// Stops the watch of [`Topo::start_leak_watch`] and returns the first (at most five)
    /// packets it caught as tcpdump prints them; empty when nothing leaked.
    pub fn leak_report(&mut self, watch: u32, leaks: &std::path::Path) -> String {
        self.lab.stop(watch, "INT", Duration::from_secs(5));
        let out = super::sh(&format!(
            "tcpdump -nn -r {} 2>/dev/null | head -5",
            leaks.display()
        ));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
