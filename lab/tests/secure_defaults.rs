//! Secure by default (issue 16).
//!
//! Without privileges: tcpcopy and intercept refuse to start without `--secret-file` unless
//! `--insecure`, each with one clear line; intercept refuses `--insecure` on every address
//! without `--allow`; tcpcopy refuses a symlinked pid or report path and leaves the link's
//! target alone.
//!
//! Lab (root): `key_holder_cannot_take_sessions`: intercept (with a secret, a per-peer cap of
//! 100) captures on the loopback of a namespace, where connections to the closed port 6379 draw
//! resets from it. Two tcpcopy stand-ins holding the key (this test binary re-executed in the
//! namespace, speaking the protocol through the library's `Channel`) connect: the victim
//! registers 100 sessions, the thief registers the same 100 and then 1,000 of its own. The
//! thief's 100 are refused and counted as owned elsewhere, it gets 100 of its 1,000 (the cap)
//! and the rest are counted over the cap, and the resets of the victim's sessions reach the
//! victim and never the thief.

use tcpclone_lab::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const HELPER_ENV: &str = "TCPCLONE_KEY_HOLDER_DIR";
/// The namespace's ephemeral ports: the knocks come from them, and the victim registers all.
const PORT_LO: u16 = 40200;
const PORT_HI: u16 = 40299;
const CAP: usize = 100;

/// Runs `bin` with `args`; returns (exit code, stderr).
fn run(bin: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin).args(args).output().expect("spawn");
    let code = out
        .status
        .code()
        .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn intercept_without_a_secret_exits_with_one_line() {
    let i = bin("intercept");
    let (code, err) = run(&i, &["-i", "lo", "-F", "tcp and src port 6379"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--secret-file is required") && err.contains("--insecure"),
        "{err}"
    );
    // --insecure on every address without --allow: refused too.
    let (code, err) = run(&i, &["-i", "lo", "-F", "tcp", "--insecure"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("-b ADDR") && err.contains("--allow"), "{err}");
    let (code, err) = run(&i, &["-i", "lo", "-F", "tcp", "--insecure", "-b", "::"]);
    assert_eq!(code, 1, "the wildcard spelled out is the wildcard: {err}");
}

#[test]
fn tcpcopy_without_a_secret_exits_with_one_line() {
    let (code, err) = run(
        &bin("tcpcopy"),
        &["-x", "6379-198.18.1.2:6380", "-s", "198.18.1.3"],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--secret-file: required") && err.contains("--insecure"),
        "{err}"
    );
}

#[test]
fn tcpcopy_refuses_symlinked_pid_and_report_paths() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = |name: &str| {
        let p = dir.join(name);
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        p
    };
    let pcap = workspace_root().join("pcaps/redis.pcap");
    let base = [
        "--offline",
        pcap.to_str().unwrap(),
        "-x",
        "6379-198.18.1.2:6380",
        "-s",
        "198.18.1.3",
        "--insecure",
    ];
    let pid_link = link("tcpcopy.pid");
    let mut args = base.to_vec();
    args.extend(["-P", pid_link.to_str().unwrap()]);
    let (code, err) = run(&bin("tcpcopy"), &args);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("-P/--pid-file") && err.contains("not a regular file"),
        "{err}"
    );
    let report_link = link("report.json");
    let mut args = base.to_vec();
    args.extend(["--report", report_link.to_str().unwrap()]);
    let (code, err) = run(&bin("tcpcopy"), &args);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--report") && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let meta = std::fs::metadata(&victim).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        tcpclone::sys::effective_uid(),
        "not chowned through the link"
    );
}

/// One tcpcopy stand-in: a connection driven by the library's `Channel`.
struct Peer {
    s: TcpStream,
    ch: tcpclone::proto::client::Channel,
    ready: bool,
    headers: Vec<Vec<u8>>,
}

impl Peer {
    fn connect(addr: SocketAddr, instance: u64, psk: &tcpclone::proto::secure::Psk) -> Peer {
        let deadline = Instant::now() + Duration::from_secs(10);
        let s = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => panic!("cannot reach intercept: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut ch = tcpclone::proto::client::Channel::new(instance, Some(psk.clone()));
        ch.connected(Instant::now()).unwrap();
        let mut p = Peer {
            s,
            ch,
            ready: false,
            headers: Vec::new(),
        };
        let t0 = Instant::now();
        while !p.ready {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no Hello from intercept"
            );
            p.pump();
        }
        p
    }

    /// One round: writes what is queued, reads what came (up to 20 ms).
    fn pump(&mut self) {
        use tcpclone::proto::client::Event;
        while let Some(b) = self.ch.poll_transmit(Instant::now()) {
            self.s.write_all(&b).unwrap();
        }
        let mut buf = [0u8; 65536];
        match self.s.read(&mut buf) {
            Ok(0) => panic!("intercept closed the connection"),
            Ok(n) => self.ch.handle_input(Instant::now(), &buf[..n]).unwrap(),
            Err(_) => {}
        }
        while let Some(ev) = self.ch.poll_event() {
            match ev {
                Event::Ready { .. } => self.ready = true,
                Event::Responses(h) => self.headers.extend(h.iter().map(|h| h.to_vec())),
                // No prefix asked: intercept sends none.
                Event::PrefixGranted { .. } | Event::PrefixedResponses(_) => {}
            }
        }
    }
}

/// The two stand-ins, run by `key_holder_cannot_take_sessions` inside the namespace. Does
/// nothing when run directly.
#[test]
#[ignore = "helper process for key_holder_cannot_take_sessions"]
fn key_holders_helper() {
    let Ok(dir) = std::env::var(HELPER_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let addr: SocketAddr = "127.0.0.1:36524".parse().unwrap();
    let psk = tcpclone::proto::secure::read_secret_file(&dir.join("secret")).unwrap();
    let target: SocketAddr = "127.0.0.1:6379".parse().unwrap();
    let mut victim = Peer::connect(addr, 0x71c7, &psk);
    let mut thief = Peer::connect(addr, 0x781e, &psk);
    for p in PORT_LO..=PORT_HI {
        let client = SocketAddr::new([127, 0, 0, 1].into(), p);
        victim.ch.session_add(client, target).unwrap();
    }
    victim.pump();
    std::thread::sleep(Duration::from_millis(200));
    for p in PORT_LO..=PORT_HI {
        let client = SocketAddr::new([127, 0, 0, 1].into(), p);
        thief.ch.session_add(client, target).unwrap();
    }
    for p in 0..10 * CAP as u16 {
        let client = SocketAddr::new([127, 0, 0, 9].into(), 20_000 + p);
        thief.ch.session_add(client, target).unwrap();
    }
    thief.pump();
    std::thread::sleep(Duration::from_millis(300));
    // Resets from 127.0.0.1:6379 to the victim's client ports.
    let mut knocks = 0;
    for _ in 0..20 {
        if TcpStream::connect(target).is_err() {
            knocks += 1;
        }
    }
    assert_eq!(knocks, 20, "port 6379 must be closed in the namespace");
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end && victim.headers.len() < 20 {
        victim.pump();
        thief.pump();
    }
    for _ in 0..10 {
        thief.pump();
    }
    std::fs::write(
        dir.join("result"),
        format!("{} {}\n", victim.headers.len(), thief.headers.len()),
    )
    .unwrap();
}

#[test]
fn key_holder_cannot_take_sessions() {
    require_root!("secure_defaults::key_holder_cannot_take_sessions");
    require_programs!("secure_defaults", "ip", "env");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let secret = secret_file(dir);
    let mut lab = Lab::new();
    let ns = lab.netns("sdk");
    lab.exec_ok(
        &ns,
        &format!("sysctl -qw net.ipv4.ip_local_port_range='{PORT_LO} {PORT_HI}'"),
    );
    let ilog = dir.join("intercept.log");
    let cap = CAP.to_string();
    let ipid = lab.spawn(
        &ns,
        &[
            bin("intercept").to_str().unwrap(),
            "-i",
            "lo",
            "-F",
            "tcp and src port 6379",
            "-b",
            "127.0.0.1",
            "--secret-file",
            secret.to_str().unwrap(),
            "--max-sessions-per-peer",
            &cap,
        ],
        Some(&ilog),
    );
    let exe = std::env::current_exe().unwrap();
    let env = format!("{HELPER_ENV}={}", dir.display());
    let hpid = lab.spawn(
        &ns,
        &[
            "env",
            &env,
            exe.to_str().unwrap(),
            "key_holders_helper",
            "--exact",
            "--ignored",
            "--nocapture",
        ],
        Some(&dir.join("helper.log")),
    );
    let hst = lab
        .stop(hpid, "0", Duration::from_secs(30))
        .expect("helper finishes within 30 s");
    let st = lab
        .stop(ipid, "TERM", Duration::from_secs(2))
        .expect("intercept stops within 2 s of SIGTERM");
    let log = std::fs::read_to_string(&ilog).unwrap_or_default();
    assert!(
        hst.success(),
        "helper failed:\n{}\nintercept log:\n{log}",
        std::fs::read_to_string(dir.join("helper.log")).unwrap_or_default()
    );
    assert!(st.success(), "intercept exit {st}:\n{log}");
    let result = std::fs::read_to_string(dir.join("result")).unwrap();
    let got: Vec<usize> = result
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let summary = log
        .lines()
        .rev()
        .find(|l| l.contains("summary:"))
        .unwrap_or_else(|| panic!("no summary:\n{log}"));
    eprintln!("victim got {} headers, thief {}\n{summary}", got[0], got[1]);
    assert!(got[0] >= 20, "the victim keeps delivering: {result}");
    assert_eq!(got[1], 0, "the thief got the victim's responses");
    assert!(
        summary.contains(&format!(
            "(refused 0, owned elsewhere {}, over peer cap {})",
            PORT_HI - PORT_LO + 1,
            9 * CAP
        )),
        "{summary}"
    );
}

/// `Key: value` of /proc/PID/status.
fn proc_status(pid: u32, key: &str) -> Option<String> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    st.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim_start_matches(':').trim().to_string())
}

#[test]
fn live_stream_runs_unprivileged_and_refuses_local_targets() {
    require_root!("secure_defaults::live_stream_runs_unprivileged_and_refuses_local_targets");
    require_programs!("secure_defaults", "ip");
    let mut lab = Lab::new();
    let ns = lab.netns("sds");
    let tcpcopy = bin("tcpcopy");
    let t = tcpcopy.to_str().unwrap();
    // Local targets, however spelled, are refused in live stream mode as in raw mode.
    for target in ["127.0.0.1:6380", "[::ffff:127.0.0.1]:6380", "[::1]:6380"] {
        let out = lab.exec(
            &ns,
            &format!("{t} --stream -i lo -x 6379-{target} --user nobody"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{target}: {err}");
        assert!(
            err.contains("refused") && err.contains("this (production) host"),
            "{target}: {err}"
        );
    }
    // A target elsewhere: it runs, as nobody, with CAP_NET_RAW only.
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("stream.log");
    let pid = lab.spawn(
        &ns,
        &[
            t,
            "--stream",
            "-i",
            "lo",
            "-x",
            "6379-198.18.61.2:6379",
            "--user",
            "nobody",
        ],
        Some(&log),
    );
    let nobody = tcpclone::sys::lookup_user("nobody")
        .unwrap()
        .uid
        .to_string();
    let t0 = Instant::now();
    loop {
        let uid = proc_status(pid, "Uid").unwrap_or_default();
        if uid.split_whitespace().all(|u| u == nobody) && !uid.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "still uid {uid:?} after 5 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the capture open, then look again: still running, nothing but CAP_NET_RAW (bit 13).
    std::thread::sleep(Duration::from_millis(500));
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            proc_status(pid, key).as_deref(),
            Some("0000000000002000"),
            "{key}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    assert_eq!(proc_status(pid, "NoNewPrivs").as_deref(), Some("1"));
    let st = lab.stop(pid, "INT", Duration::from_secs(3));
    assert!(
        st.is_some(),
        "live stream mode did not stop on SIGINT: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// A 60-byte Ethernet/IPv4/UDP frame 198.18.62.1 → 198.18.62.2 carrying `seq`.
fn udp_frame(seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&46u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[198, 18, 62, 1]);
    f[30..34].copy_from_slice(&[198, 18, 62, 2]);
    let mut sum: u32 = f[14..34]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    f[42..46].copy_from_slice(&seq.to_be_bytes());
    f
}

/// replay sending on an interface: the capture sits in a directory only root can read, yet
/// the replay runs as nobody with nothing but CAP_NET_RAW (bit 13) while it sends, and every
/// packet still goes out; `--user root` is refused with one line.
#[test]
fn replay_to_an_interface_runs_unprivileged() {
    require_root!("secure_defaults::replay_to_an_interface_runs_unprivileged");
    require_programs!("secure_defaults", "ip");
    let mut lab = Lab::new();
    let ns = lab.netns("sdr");
    let (tx_if, _rx_if) = lab.veth(&ns, "", &ns, "");
    // tempdir() is mode 700, owned by root: nobody could not open the capture by its path.
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in.pcap");
    {
        use tcpclone::capture::{LinkType, PcapWriter, Timestamp, TsPrecision};
        let mut w =
            PcapWriter::create(&input, LinkType::ETHERNET, TsPrecision::Micro, 65535).unwrap();
        for i in 0..300u32 {
            let f = udp_frame(i);
            w.write_packet(Timestamp(u64::from(i) * 1_000_000), 60, &f)
                .unwrap();
        }
    }
    let replay = bin("replay");
    let r = replay.to_str().unwrap();
    let inp = input.to_str().unwrap();
    let out = lab.exec(&ns, &format!("{r} -i {tx_if} -t --user root {inp}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is root"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // 300 packets at 150 pps: two seconds of sending to look at.
    let log = work.path().join("replay.log");
    let pid = lab.spawn(
        &ns,
        &[r, "-i", &tx_if, "--pps", "150", "--user", "nobody", inp],
        Some(&log),
    );
    let nobody = tcpclone::sys::lookup_user("nobody")
        .unwrap()
        .uid
        .to_string();
    let t0 = Instant::now();
    loop {
        let uid = proc_status(pid, "Uid").unwrap_or_default();
        if !uid.is_empty() && uid.split_whitespace().all(|u| u == nobody) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "still uid {uid:?} after 1 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Sending now (the first packets are out): nothing but CAP_NET_RAW, no way back.
    std::thread::sleep(Duration::from_millis(300));
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            proc_status(pid, key).as_deref(),
            Some("0000000000002000"),
            "{key}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    assert_eq!(proc_status(pid, "NoNewPrivs").as_deref(), Some("1"));
    // kill -0: no signal, only the wait for the end of the 2 s replay.
    let st = lab
        .stop(pid, "0", Duration::from_secs(10))
        .expect("replay did not finish within 10 s");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(st.success(), "{text}");
    assert!(text.contains("Actual: 300 packets"), "{text}");
}

/// Offline stream mode started as root: the capture (in a directory only root can read) is
/// opened and the `--report` file created first, then the process runs as nobody with no
/// capability at all while it replays to a test host next to it. A target that is the
/// capture's own server, a `-x` online address, a loopback address (in any spelling) or an
/// address of this host is refused with one line naming -x and the address, exit 2, unless
/// `--force`, which warns and replays.
#[test]
fn offline_stream_runs_unprivileged_and_refuses_the_captured_server() {
    require_root!(
        "secure_defaults::offline_stream_runs_unprivileged_and_refuses_the_captured_server"
    );
    require_programs!("secure_defaults", "ip");
    let mut lab = Lab::new();
    let ns = lab.netns("sdo");
    // The test host: 198.18.201.2, nothing listening (connections draw resets).
    let test_host = lab.netns("sdot");
    lab.veth(&ns, "198.18.201.1/24", &test_host, "198.18.201.2/24");
    let tcpcopy = bin("tcpcopy");
    let t = tcpcopy.to_str().unwrap();
    // tempdir() is mode 700, owned by root.
    let work = tempfile::tempdir().unwrap();
    let cap = work.path().join("redis.pcap");
    std::fs::copy(workspace_root().join("pcaps/redis.pcap"), &cap).unwrap();
    let c = cap.to_str().unwrap();
    // pcaps/redis.pcap: clients → 198.18.200.2:6379.
    for (mapping, why) in [
        (
            "6379-198.18.200.2:6379",
            "the server the capture was taken from",
        ),
        (
            "6379-[::ffff:198.18.200.2]:6379",
            "the server the capture was taken from",
        ),
        (
            "198.18.200.2:6379-198.18.200.2:7000",
            "online (production) address",
        ),
        (
            "6379-127.0.0.1:6390",
            "target 127.0.0.1 is an address of this (production) host",
        ),
        (
            "6379-[::ffff:127.0.0.1]:6390",
            "target 127.0.0.1 is an address of this (production) host",
        ),
        (
            "6379-[::1]:6390",
            "target ::1 is an address of this (production) host",
        ),
        (
            "6379-198.18.201.1:6390",
            "target 198.18.201.1 is an address of this (production) host",
        ),
    ] {
        let out = lab.exec(
            &ns,
            &format!("{t} --stream -x {mapping} --offline {c} --topspeed"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mapping}: {err}");
        assert!(
            err.starts_with("tcpcopy: -x/--mapping: refused: ") && err.contains(why),
            "{mapping}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{mapping}: {err}");
    }
    // --force: a warning, then the replay (nothing routes to the captured server in this
    // namespace; the loopback and local ports are closed: failed connections are counted).
    for (mapping, warned) in [
        (
            "6379-198.18.200.2:6379",
            "the server the capture was taken from",
        ),
        (
            "6379-127.0.0.1:6390",
            "target 127.0.0.1 is an address of this",
        ),
        (
            "6379-198.18.201.1:6390",
            "target 198.18.201.1 is an address of this",
        ),
    ] {
        let out = lab.exec(
            &ns,
            &format!(
                "{t} --stream -x {mapping} --offline {c} --topspeed --force --connect-timeout 0.5"
            ),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let o = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{mapping}: {err}\n{o}");
        assert!(
            err.lines()
                .any(|l| l.contains("warning: --force") && l.contains(warned)),
            "{mapping}: {err}"
        );
        assert!(!err.contains("refused"), "{mapping}: {err}");
    }

    // The test host (a closed port: the run counts failed connections), the capture's 43 ms
    // stretched to about 4 s by -a 0.01.
    let report = work.path().join("r.json");
    let log = work.path().join("stream.log");
    let pid = lab.spawn(
        &ns,
        &[
            t,
            "--stream",
            "-x",
            "6379-198.18.201.2:6390",
            "--offline",
            c,
            "-a",
            "0.01",
            "--user",
            "nobody",
            "--report",
            report.to_str().unwrap(),
        ],
        Some(&log),
    );
    assert_runs_as_nobody_without_capabilities(pid, &log);
    let st = lab
        .stop(pid, "0", Duration::from_secs(20))
        .expect("offline stream mode did not finish within 20 s");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(st.success(), "{text}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).expect("report JSON");
    assert!(r.is_object(), "{text}");
}

/// Fleet replay (`--from`) started as root: the `--report` file is created first, then the
/// worker runs as nobody with no capability at all while it pulls sessions from a real
/// JetStream (Debian's nats-server) and replays every one to nginx on a test host next to it.
/// A target that is the recorded sessions' own server is refused when they arrive (nothing of
/// them is replayed, nothing acknowledged); a `-x` online address, a loopback address (in any
/// spelling) or an address of this host at start; each with one error line naming -x and the
/// address, exit 2, unless `--force`, which warns and replays.
#[test]
fn fleet_replay_runs_unprivileged_and_refuses_the_recorded_server() {
    require_root!(
        "secure_defaults::fleet_replay_runs_unprivileged_and_refuses_the_recorded_server"
    );
    require_programs!("secure_defaults", "ip", "nats-server", "nginx", "curl");
    let _serial = serial();
    let mut lab = Lab::new();
    let ns = lab.netns("sdf");
    // The test host: nginx on 198.18.202.2:8080.
    let test_host = lab.netns("sdft");
    lab.veth(&ns, "198.18.202.1/24", &test_host, "198.18.202.2/24");
    let tcpcopy = bin("tcpcopy");
    let t = tcpcopy.to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("js");
    let nats_log = work.path().join("nats.log");
    lab.spawn(
        &ns,
        &[
            "nats-server",
            "-js",
            "-sd",
            store.to_str().unwrap(),
            "-a",
            "127.0.0.1",
            "-p",
            "4222",
        ],
        Some(&nats_log),
    );
    assert!(
        lab.wait_for(
            &ns,
            "ss -ltn | grep -q '127.0.0.1:4222 '",
            Duration::from_secs(10)
        ),
        "nats-server did not start: {}",
        std::fs::read_to_string(&nats_log).unwrap_or_default()
    );
    let url = "nats://127.0.0.1:4222/sd";
    // pcaps/http_close.pcap: 10 GETs on 10 connections to 198.18.200.2:80.
    let pcap = workspace_root().join("pcaps/http_close.pcap");
    let out = lab.exec(
        &ns,
        &format!(
            "{t} --stream -x 80-198.18.202.2:8080 --offline {} --record {url} --partitions 4",
            pcap.display()
        ),
    );
    assert!(
        out.status.success(),
        "record: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let access = start_nginx(
        &mut lab,
        &test_host,
        work.path(),
        "nginx-sdf",
        &["198.18.202.2:8080"],
        "$request $status",
    );

    // The recorded server, however spelled, and a -x online address: refused, one error line.
    for (mapping, why) in [
        (
            "80-198.18.200.2:80",
            "the server the recording was taken from",
        ),
        (
            "80-[::ffff:198.18.200.2]:80",
            "the server the recording was taken from",
        ),
        (
            "198.18.200.2:80-198.18.200.2:8080",
            "online (production) address",
        ),
        (
            "80-127.0.0.1:8080",
            "target 127.0.0.1 is an address of this (production) host",
        ),
        (
            "80-[::ffff:127.0.0.1]:8080",
            "target 127.0.0.1 is an address of this (production) host",
        ),
        (
            "80-198.18.202.1:8080",
            "target 198.18.202.1 is an address of this (production) host",
        ),
    ] {
        let out = lab.exec(
            &ns,
            &format!("{t} --stream -x {mapping} --from {url} --worker 0/1 --topspeed --replay-name refused --ack-wait 1"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{mapping}: {err}");
        let refusals: Vec<&str> = err.lines().filter(|l| l.contains("refused")).collect();
        assert_eq!(refusals.len(), 1, "{mapping}: {err}");
        assert!(refusals[0].contains(why), "{mapping}: {err}");
        assert!(
            refusals[0].contains("-x/--mapping: refused: "),
            "{mapping}: {err}"
        );
    }
    assert_eq!(
        line_count(&access),
        0,
        "a refused worker replayed something"
    );

    // A sound target: as nobody, no capability, every session replayed. -a 0.05 stretches the
    // capture's 71 ms to about 1.4 s after the start the worker publishes (1 s ahead).
    let report = work.path().join("r.json");
    let log = work.path().join("worker.log");
    let pid = lab.spawn(
        &ns,
        &[
            t,
            "--stream",
            "-x",
            "80-198.18.202.2:8080",
            "--from",
            url,
            "--worker",
            "0/1",
            "-a",
            "0.05",
            "--user",
            "nobody",
            "--report",
            report.to_str().unwrap(),
        ],
        Some(&log),
    );
    assert_runs_as_nobody_without_capabilities(pid, &log);
    let st = lab
        .stop(pid, "0", Duration::from_secs(30))
        .expect("the --from worker did not finish within 30 s");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(st.success(), "{text}");
    assert!(text.contains("10 sessions received, 10 replayed"), "{text}");
    let lines = read_lines(&access);
    assert_eq!(lines.len(), 10, "{lines:?}\n{text}");
    assert!(lines.iter().all(|l| l.starts_with("GET /")), "{lines:?}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).expect("report JSON");
    assert!(r.is_object(), "{text}");

    // --force: a warning, then the replay (nothing listens there in this namespace), for the
    // recorded server, loopback and an address of this host; each run is a new replay name.
    for (name, mapping, warned) in [
        (
            "forced",
            "80-198.18.200.2:80",
            "the server the recording was taken from",
        ),
        (
            "forced-lo",
            "80-127.0.0.1:8080",
            "target 127.0.0.1 is an address of this",
        ),
        (
            "forced-local",
            "80-198.18.202.1:8080",
            "target 198.18.202.1 is an address of this",
        ),
    ] {
        let out = lab.exec(
            &ns,
            &format!("{t} --stream -x {mapping} --from {url} --worker 0/1 --topspeed --replay-name {name} --force --connect-timeout 0.5"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let o = String::from_utf8_lossy(&out.stdout);
        assert!(
            err.lines()
                .any(|l| l.contains("warning: --force") && l.contains(warned))
                && o.contains("10 replayed"),
            "{mapping}: {err}\n{o}"
        );
    }
}

/// Waits (1 s at most) until `pid` runs as `nobody`, then checks that it holds no capability
/// and cannot gain one (`log`: its output, shown when it does not).
fn assert_runs_as_nobody_without_capabilities(pid: u32, log: &Path) {
    let nobody = tcpclone::sys::lookup_user("nobody")
        .unwrap()
        .uid
        .to_string();
    let t0 = Instant::now();
    loop {
        let uid = proc_status(pid, "Uid").unwrap_or_default();
        if !uid.is_empty() && uid.split_whitespace().all(|u| u == nobody) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "still uid {uid:?} after 1 s: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            proc_status(pid, key).as_deref(),
            Some("0000000000000000"),
            "{key}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    assert_eq!(proc_status(pid, "NoNewPrivs").as_deref(), Some("1"));
}
