//! Fault lab tests for intercept (need root).
//!
//! `intercept_restart_and_link_flap`: two namespaces joined by a veth; intercept captures on the
//! client side the resets a closed port 6379 sends back; a fake tcpcopy (this test binary
//! re-executed, speaking through the library's `Channel` and reconnecting with its backoff)
//! registers every client port of a fixed range. Responses reach it; intercept is then killed
//! (SIGKILL) and restarted: the client reconnects, re-registers and receives the next responses;
//! the veth goes down and comes back: intercept reopens its capture and the next responses
//! arrive too; the veth is deleted and re-created under the same name: intercept reopens its
//! dead capture (counted) and the next responses arrive; SIGTERM stops it within 2 s with its
//! summary.
//!
//! `intercept_thousand_idle_connections`: 1,000 idle connections (a python3 process in the
//! namespace) while a legitimate client connects: it is served, and intercept closes every idle
//! connection within a bounded time (its 5 s opening timeout, plus eviction by the pending cap).

use tcpclone_lab::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CLI_IP: &str = "198.18.212.1";
const SRV_IP: &str = "198.18.212.2";
const PORT_LO: u16 = 40200;
const PORT_HI: u16 = 40249;
const HELPER_ENV: &str = "TCPCLONE_HARDEN_DIR";

/// The fake tcpcopy. With `mode` = `reconnect` it registers the port range and keeps
/// reconnecting, writing the responses received to `responses` and the connections made to
/// `connects`; with `legit` it writes the seconds until intercept answered to `served` and
/// exits. Does nothing when run directly.
#[test]
#[ignore = "helper process for the harden_faults tests"]
fn harden_fake_tcpcopy() {
    use tcpclone::proto::client::{Channel, Event};
    let Ok(dir) = std::env::var(HELPER_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let legit = std::env::var("HARDEN_MODE").as_deref() == Ok("legit");
    let addr: SocketAddr = "127.0.0.1:36524".parse().unwrap();
    let mut ch = Channel::new(0x4a7d, None);
    if !legit {
        let target: SocketAddr = format!("{SRV_IP}:6379").parse().unwrap();
        for p in PORT_LO..=PORT_HI {
            ch.session_add(SocketAddr::new(CLI_IP.parse().unwrap(), p), target)
                .unwrap();
        }
    }
    let (mut responses, mut connects) = (0u64, 0u64);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(60);
    let stop = dir.join("stop");
    let mut buf = vec![0u8; 1 << 16];
    'outer: while !stop.exists() && Instant::now() < end {
        let mut s = match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(s) => s,
            Err(_) => {
                std::thread::sleep(ch.disconnected(Instant::now()));
                continue;
            }
        };
        connects += 1;
        std::fs::write(dir.join("connects"), format!("{connects}\n")).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        ch.connected(Instant::now()).unwrap();
        let broken = loop {
            if stop.exists() || Instant::now() > end {
                break 'outer;
            }
            while let Some(b) = ch.poll_transmit(Instant::now()) {
                if s.write_all(&b).is_err() {
                    break;
                }
            }
            match s.read(&mut buf) {
                Ok(0) => break "closed",
                Ok(n) => {
                    if ch.handle_input(Instant::now(), &buf[..n]).is_err() {
                        break "bad input";
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break "read error",
            }
            while let Some(ev) = ch.poll_event() {
                match ev {
                    Event::Ready { .. } => {
                        if legit {
                            std::fs::write(
                                dir.join("served"),
                                format!("{:.3}\n", t0.elapsed().as_secs_f64()),
                            )
                            .unwrap();
                            return;
                        }
                        std::fs::write(dir.join("ready"), format!("{connects}\n")).unwrap();
                    }
                    Event::Responses(hs) => {
                        responses += hs.len() as u64;
                        std::fs::write(dir.join("responses"), format!("{responses}\n")).unwrap();
                    }
                    // No prefix asked: intercept sends none.
                    Event::PrefixGranted { .. } | Event::PrefixedResponses(_) => {}
                }
            }
            if ch.handle_timeout(Instant::now()).is_err() {
                break "timeout";
            }
        };
        let delay = ch.disconnected(Instant::now());
        eprintln!("channel {broken}; reconnecting in {delay:?}");
        std::thread::sleep(delay);
    }
    assert!(!legit, "legitimate client never served");
}

/// `n` connections from `ns` to the closed port 6379: each draws a RST from source port 6379.
fn knock(lab: &Lab, ns: &str, n: u32) {
    tcpclone_lab::knock(lab, ns, SRV_IP, 6379, n);
}

fn spawn_intercept(lab: &mut Lab, ns: &str, dev: &str, log: &Path) -> u32 {
    let ibin = bin("intercept");
    lab.spawn(
        ns,
        &[
            ibin.to_str().unwrap(),
            "-i",
            dev,
            "-F",
            "tcp and src port 6379",
            "-b",
            "127.0.0.1",
            "--insecure",
            "--stats",
            "1",
            "--user",
            "nobody",
        ],
        Some(log),
    )
}

#[test]
fn intercept_restart_and_link_flap() {
    require_root!("harden_faults::intercept_restart_and_link_flap");
    require_programs!("harden_faults", "ip", "env", "bash");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let mut lab = Lab::new();
    let cli = lab.netns("hfc");
    let srv = lab.netns("hfs");
    let (veth, _) = lab.veth(&cli, &format!("{CLI_IP}/24"), &srv, &format!("{SRV_IP}/24"));
    lab.exec_ok(
        &cli,
        &format!("sysctl -qw net.ipv4.ip_local_port_range='{PORT_LO} {PORT_HI}'"),
    );
    let log1 = dir.join("intercept1.log");
    let ipid = spawn_intercept(&mut lab, &cli, &veth, &log1);
    let exe = std::env::current_exe().unwrap();
    let env = format!("{HELPER_ENV}={}", dir.display());
    let hlog = dir.join("helper.log");
    let hpid = lab.spawn(
        &cli,
        &[
            "env",
            &env,
            "HARDEN_MODE=reconnect",
            exe.to_str().unwrap(),
            "harden_fake_tcpcopy",
            "--exact",
            "--ignored",
            "--nocapture",
        ],
        Some(&hlog),
    );
    let ready = dir.join("ready");
    let responses = dir.join("responses");
    wait_until(
        "the fake tcpcopy's first opening",
        Duration::from_secs(10),
        || read_u64(&ready) >= 1,
        &[&log1, &hlog],
    );
    std::thread::sleep(Duration::from_millis(200));
    knock(&lab, &cli, 5);
    wait_until(
        "5 responses",
        Duration::from_secs(5),
        || read_u64(&responses) >= 5,
        &[&log1, &hlog],
    );
    let before_kill = read_u64(&responses);

    // Killed without warning, restarted: the client reconnects and re-registers.
    lab.stop(ipid, "KILL", Duration::from_secs(2))
        .expect("intercept killed");
    std::thread::sleep(Duration::from_millis(500));
    let log2 = dir.join("intercept2.log");
    let t_restart = Instant::now();
    let ipid = spawn_intercept(&mut lab, &cli, &veth, &log2);
    wait_until(
        "the reconnection",
        Duration::from_secs(10),
        || read_u64(&ready) >= 2,
        &[&log2, &hlog],
    );
    eprintln!(
        "fake tcpcopy ready again {:?} after the restart",
        t_restart.elapsed()
    );
    wait_until(
        "sessions re-registered",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(&log2)
                .unwrap_or_default()
                .contains(&format!("sessions {}", PORT_HI - PORT_LO + 1))
        },
        &[&log2, &hlog],
    );
    knock(&lab, &cli, 5);
    wait_until(
        "5 responses after the restart",
        Duration::from_secs(5),
        || read_u64(&responses) >= before_kill + 5,
        &[&log2, &hlog],
    );
    let before_flap = read_u64(&responses);

    // The capture interface goes down and comes back.
    lab.exec_ok(&cli, &format!("ip link set {veth} down"));
    std::thread::sleep(Duration::from_millis(1500));
    lab.exec_ok(&cli, &format!("ip link set {veth} up"));
    // Until the link is back up on both ends, connects fail; retry a few rounds.
    let t0 = Instant::now();
    while read_u64(&responses) < before_flap + 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "capture did not resume after the link came back; log:\n{}",
            std::fs::read_to_string(&log2).unwrap_or_default()
        );
        knock(&lab, &cli, 5);
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("capture resumed {:?} after link up", t0.elapsed());
    let before_del = read_u64(&responses);

    // The capture interface disappears and a new one with the same name appears: the old
    // pcap handle is dead for good, intercept must reopen it.
    lab.exec_ok(&cli, &format!("ip link del {veth}"));
    std::thread::sleep(Duration::from_millis(1000));
    let peer = format!("{veth}p");
    lab.exec_ok(
        &cli,
        &format!(
            "ip link add {veth} type veth peer name {peer} && ip link set {peer} netns {srv} && \
             ip addr add {CLI_IP}/24 dev {veth} && ip link set {veth} up"
        ),
    );
    lab.exec_ok(
        &srv,
        &format!("ip addr add {SRV_IP}/24 dev {peer} && ip link set {peer} up"),
    );
    let t0 = Instant::now();
    while read_u64(&responses) < before_del + 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "capture did not resume on the re-created interface; log:\n{}",
            std::fs::read_to_string(&log2).unwrap_or_default()
        );
        knock(&lab, &cli, 5);
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!(
        "capture resumed {:?} after the interface was re-created",
        t0.elapsed()
    );

    std::fs::write(dir.join("stop"), b"").unwrap();
    let hst = lab
        .stop(hpid, "0", Duration::from_secs(3))
        .expect("helper exits");
    assert!(hst.success(), "{}", std::fs::read_to_string(&hlog).unwrap());
    let t0 = Instant::now();
    let st = lab
        .stop(ipid, "TERM", Duration::from_secs(2))
        .expect("intercept stops within 2 s of SIGTERM");
    eprintln!("intercept stopped {:?} after SIGTERM", t0.elapsed());
    let log = std::fs::read_to_string(&log2).unwrap();
    assert!(st.success(), "{log}");
    let summary = log
        .lines()
        .rev()
        .find(|l| l.contains("summary:"))
        .unwrap_or_else(|| panic!("no summary:\n{log}"));
    eprintln!("{summary}");
    assert!(
        !summary.contains("capture errors 0 ") && !summary.contains("(reopened 0)"),
        "the dead capture was not counted and reopened: {summary}"
    );
    assert!(
        log.contains("capture on") && log.contains("reopened"),
        "{log}"
    );
}

/// Opens 1,000 idle connections to intercept, signals `flooded`, then watches them: prints how
/// many intercept closed and the latest close time, in seconds after the flood.
const FLOOD_PY: &str = r#"
import resource, socket, sys, time, select
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
d = sys.argv[1]
socks = []
for i in range(1000):
    s = socket.create_connection(("127.0.0.1", 36524), timeout=5)
    s.setblocking(False)
    socks.append(s)
t0 = time.time()
open(d + "/flooded", "w").write("1\n")
closed = {}
while len(closed) < len(socks) and time.time() - t0 < 20:
    p = select.poll()
    for i, s in enumerate(socks):
        if i not in closed:
            p.register(s.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
    by_fd = {s.fileno(): i for i, s in enumerate(socks)}
    for fd, ev in p.poll(200):
        i = by_fd[fd]
        try:
            data = socks[i].recv(4096)
        except (ConnectionResetError, BlockingIOError) as e:
            data = b"" if isinstance(e, ConnectionResetError) else None
        if data == b"":
            closed[i] = time.time() - t0
open(d + "/idle", "w").write("%d %.2f\n" % (len(closed), max(closed.values() or [0])))
"#;

#[test]
fn intercept_thousand_idle_connections() {
    require_root!("harden_faults::intercept_thousand_idle_connections");
    require_programs!("harden_faults", "ip", "env", "python3");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let mut lab = Lab::new();
    let ns = lab.netns("hfi");
    let ilog = dir.join("intercept.log");
    let ipid = spawn_intercept(&mut lab, &ns, "lo", &ilog);
    std::thread::sleep(Duration::from_millis(500));
    let py = dir.join("flood.py");
    std::fs::write(&py, FLOOD_PY).unwrap();
    let plog = dir.join("flood.log");
    let ppid = lab.spawn(
        &ns,
        &["python3", py.to_str().unwrap(), dir.to_str().unwrap()],
        Some(&plog),
    );
    wait_until(
        "1,000 idle connections",
        Duration::from_secs(15),
        || dir.join("flooded").exists(),
        &[&plog, &ilog],
    );
    let exe = std::env::current_exe().unwrap();
    let env = format!("{HELPER_ENV}={}", dir.display());
    let hlog = dir.join("legit.log");
    let hpid = lab.spawn(
        &ns,
        &[
            "env",
            &env,
            "HARDEN_MODE=legit",
            exe.to_str().unwrap(),
            "harden_fake_tcpcopy",
            "--exact",
            "--ignored",
            "--nocapture",
        ],
        Some(&hlog),
    );
    let hst = lab
        .stop(hpid, "0", Duration::from_secs(15))
        .expect("legitimate client finishes");
    assert!(
        hst.success(),
        "{}\n{}",
        std::fs::read_to_string(&hlog).unwrap(),
        std::fs::read_to_string(&ilog).unwrap()
    );
    let served: f64 = std::fs::read_to_string(dir.join("served"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pst = lab
        .stop(ppid, "0", Duration::from_secs(25))
        .expect("flooder finishes");
    assert!(pst.success(), "{}", std::fs::read_to_string(&plog).unwrap());
    let idle = std::fs::read_to_string(dir.join("idle")).unwrap();
    let mut it = idle.split_whitespace();
    let closed: u32 = it.next().unwrap().parse().unwrap();
    let latest: f64 = it.next().unwrap().parse().unwrap();
    let st = lab
        .stop(ipid, "TERM", Duration::from_secs(2))
        .expect("intercept stops within 2 s of SIGTERM");
    let log = std::fs::read_to_string(&ilog).unwrap();
    let summary = log
        .lines()
        .rev()
        .find(|l| l.contains("summary:"))
        .unwrap_or("")
        .to_string();
    eprintln!("legitimate client served after {served:.2} s; intercept closed {closed}/1000 idle connections, the last after {latest:.2} s\n{summary}");
    assert!(st.success(), "{log}");
    assert!(served < 3.0, "legitimate client waited {served} s");
    assert_eq!(closed, 1000, "idle connections left open:\n{summary}");
    assert!(latest < 8.0, "idle connections closed after {latest} s");
}
