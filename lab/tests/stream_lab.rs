//! Stream mode in the lab: real captures (tcpdump in namespaces) of real clients (redis-benchmark,
//! wrk, a scripted client) replayed with `tcpcopy --stream` to real servers (redis, nginx).
//!
//! Build first, same profile: `cargo build --release --workspace --all-targets`.
use tcpclone_lab::*;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tcpclone::capture::LinkType;
use tcpclone::seq::SeqNumber;
use tcpclone::wire::{parse_layout, Ipv4Packet, TcpFlags, TcpPacket};
use tcpclone_lab::pcap::{read_frames, write_frames, Frame};

/// The `tcpcopy` binary (stream mode is `tcpcopy --stream`).
fn stream_bin() -> PathBuf {
    bin("tcpcopy")
}

/// Client and production namespaces joined by a veth: client 198.18.50.1, production 198.18.50.2.
struct Prod {
    client: String,
    prod: String,
    prod_if: String,
}

fn prod_pair(lab: &mut Lab) -> Prod {
    let client = lab.netns("stcl");
    let prod = lab.netns("stpr");
    let (_, prod_if) = lab.veth(&client, "198.18.50.1/24", &prod, "198.18.50.2/24");
    Prod {
        client,
        prod,
        prod_if,
    }
}

/// redis on `bind`:`port` in `ns`, its statistics reset.
fn start_redis(lab: &mut Lab, ns: &str, bind: &str, port: u16, dir: &Path) {
    tcpclone_lab::start_redis(lab, ns, &[bind], port, dir, &[], None);
    lab.exec_ok(
        ns,
        &format!("redis-cli -h {bind} -p {port} config resetstat"),
    );
}

/// Runs the replayer in `ns`; panics unless it exits 0. Returns (stdout, wall time).
/// `--force`: every offline replay here targets a test server on the loopback of the
/// namespace it runs in, a local target that tcpcopy refuses without it.
fn replay(lab: &Lab, ns: &str, args: &str) -> (String, Duration) {
    let cmd = format!("{} --stream --force {args}", stream_bin().display());
    let t = Instant::now();
    let out = lab.exec(ns, &cmd);
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, took)
}

/// Runs the replayer in `ns` as user nobody with no capabilities (a copy of the binary in `dir`,
/// which is made world-readable, so that no parent directory needs to be); panics unless it
/// exits 0. Returns stdout. `--force` as in [`replay`]: the target is on loopback.
fn replay_unprivileged(lab: &Lab, ns: &str, dir: &Path, args: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let exe = dir.join("tcpcopy-unprivileged");
    std::fs::copy(stream_bin(), &exe).expect("copy tcpcopy");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let mode = if path == exe { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cmd = format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all {} --stream --force {args}",
        exe.display()
    );
    let out = lab.exec(ns, &cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A capture of redis-benchmark against production redis; returns production's command counts.
fn redis_benchmark_capture(
    lab: &mut Lab,
    p: &Prod,
    dir: &Path,
    bench: &str,
    cap: &Path,
) -> HashMap<String, u64> {
    start_redis(lab, &p.prod, "198.18.50.2", 6379, dir);
    let td = start_tcpdump(lab, &p.prod, &p.prod_if, "tcp port 6379", cap);
    lab.exec_ok(
        &p.client,
        &format!("redis-benchmark -h 198.18.50.2 -p 6379 {bench} -q"),
    );
    stop_tcpdump(lab, td, cap);
    commandstats(lab, &p.prod, "198.18.50.2", 6379)
}

#[test]
fn redis_offline_replays_exactly_the_captured_commands_and_copies() {
    require_root!("stream_lab::redis_offline");
    require_programs!(
        "stream_lab::redis_offline",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "tcpdump",
        "setpriv"
    );
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tempdir_for_dropped_user("stream_lab");
    let p = prod_pair(&mut lab);
    let cap = tmp.path().join("redis.pcap");
    let prod = redis_benchmark_capture(&mut lab, &p, tmp.path(), "-n 5000 -c 10 -t set,get", &cap);
    assert!(
        prod.get("set").copied().unwrap_or(0) >= 5000,
        "production: {prod:?}"
    );

    // A target namespace with its own redis; the replay runs there (no route to production needed).
    let target = lab.netns("sttg");
    start_redis(&mut lab, &target, "127.0.0.1", 6390, tmp.path());
    let json_path = tmp.path().join("r.json");
    let html_path = tmp.path().join("r.html");
    let (table, _) = replay(
        &lab,
        &target,
        &format!(
            "-x 6379-127.0.0.1:6390 --offline {} --report {} --report {}",
            cap.display(),
            json_path.display(),
            html_path.display()
        ),
    );
    let got = commandstats(&lab, &target, "127.0.0.1", 6390);
    assert_eq!(
        got, prod,
        "test redis ran other commands than production\n{table}"
    );
    let r = read_json(&json_path);
    assert_eq!(r["schema"], "tcpclone.report");
    assert_eq!(r["version"], 2);
    assert_eq!(
        r["source"],
        format!("offline {}", cap.file_name().unwrap().to_string_lossy())
    );
    assert!(
        r["histograms"]["test_latency"]
            .as_str()
            .is_some_and(|h| h.len() > 8),
        "{table}"
    );
    assert_eq!(r["test"]["errors"], 0, "{table}");
    assert!(
        r["production"]["latency_ms"]["p50"].as_f64().unwrap() > 0.0,
        "{table}"
    );

    // The HTML page: both charts, each with test and production curves carrying data points.
    let page = std::fs::read_to_string(&html_path).unwrap();
    assert!(!page.contains("<script"));
    for id in ["latency", "throughput"] {
        let fig = page
            .split(&format!("<figure id=\"{id}\">"))
            .nth(1)
            .expect("figure")
            .split("</figure>")
            .next()
            .unwrap();
        assert!(fig.contains("<svg"), "{id}: no svg");
        let curves = fig
            .split("<polyline")
            .skip(1)
            .filter(|l| {
                let pts = l
                    .split("points=\"")
                    .nth(1)
                    .and_then(|p| p.split('"').next())
                    .unwrap_or("");
                pts.split_whitespace().count() >= 2
                    && pts.split_whitespace().all(|xy| xy.split(',').count() == 2)
            })
            .count();
        assert!(curves >= 2, "{id}: {curves} curves with data points");
    }

    // -n 3: three times as many. Run as nobody without capabilities: stream mode needs no
    // privilege on a capture file.
    lab.exec_ok(&target, "redis-cli -h 127.0.0.1 -p 6390 config resetstat");
    replay_unprivileged(
        &lab,
        &target,
        tmp.path(),
        &format!(
            "-x 6379-127.0.0.1:6390 --offline {} --topspeed -n 3",
            cap.display()
        ),
    );
    let got3 = commandstats(&lab, &target, "127.0.0.1", 6390);
    eprintln!("redis offline: production {prod:?}; replayed {got:?}; with -n 3 as nobody {got3:?}");
    for (cmd, n) in &prod {
        assert_eq!(
            got3.get(cmd).copied().unwrap_or(0),
            3 * n,
            "{cmd} with -n 3: {got3:?}"
        );
    }
}

#[test]
fn think_time_scales_with_speedup() {
    require_root!("stream_lab::think_time");
    require_programs!(
        "stream_lab::think_time",
        "redis-server",
        "redis-cli",
        "tcpdump",
        "bash"
    );
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tempdir_for_dropped_user("stream_lab");
    let p = prod_pair(&mut lab);
    start_redis(&mut lab, &p.prod, "198.18.50.2", 6379, tmp.path());
    let cap = tmp.path().join("think.pcap");
    let td = start_tcpdump(&mut lab, &p.prod, &p.prod_if, "tcp port 6379", &cap);
    // One connection, 80 PINGs, 20 ms of thinking after each answer.
    lab.exec_ok(
        &p.client,
        "bash -c 'exec 3<>/dev/tcp/198.18.50.2/6379; for i in $(seq 80); do printf \"PING\\r\\n\" >&3; read -r l <&3; sleep 0.02; done; exec 3<&-'",
    );
    stop_tcpdump(&mut lab, td, &cap);
    // The capture's span: first to last packet.
    let out = Command::new("tcpdump")
        .args(["-r", cap.to_str().unwrap(), "-n", "-tt"])
        .output()
        .unwrap();
    let ts: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    let span = ts.last().unwrap() - ts.first().unwrap();
    assert!(span > 1.6, "capture span {span}");
    let target = lab.netns("sttg");
    start_redis(&mut lab, &target, "127.0.0.1", 6390, tmp.path());
    let json_path = tmp.path().join("t.json");
    replay(
        &lab,
        &target,
        &format!(
            "-x 6379-127.0.0.1:6390 --offline {} -a 2 --report {}",
            cap.display(),
            json_path.display()
        ),
    );
    let took = read_json(&json_path)["duration_s"].as_f64().unwrap();
    let want = span / 2.0;
    eprintln!(
        "think time: capture {span:.3} s, -a 2 replay {took:.3} s (want {want:.3} s, {:+.2} %)",
        100.0 * (took - want) / want
    );
    assert!(
        (took - want).abs() <= 0.05 * want,
        "replay took {took:.3} s, want {want:.3} s ± 5 %"
    );
    assert_eq!(
        commandstats(&lab, &target, "127.0.0.1", 6390).get("ping"),
        Some(&80)
    );
}

/// nginx in `ns` on `listen` (nginx syntax) logging the PROXY-protocol address, the peer and
/// the request; returns the access log path.
fn start_nginx(lab: &mut Lab, ns: &str, dir: &Path, name: &str, listen: &str) -> PathBuf {
    tcpclone_lab::start_nginx(
        lab,
        ns,
        dir,
        name,
        &[listen],
        "$proxy_protocol_addr:$proxy_protocol_port $remote_addr \"$request\" $status",
    )
}

#[test]
fn nginx_keepalive_and_close_every_request_arrives_and_proxy_v2_v1() {
    require_root!("stream_lab::nginx");
    require_programs!("stream_lab::nginx", "nginx", "wrk", "tcpdump", "ss");
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tempdir_for_dropped_user("stream_lab");
    let p = prod_pair(&mut lab);
    let prod_log = start_nginx(&mut lab, &p.prod, tmp.path(), "prod", "198.18.50.2:80");
    let target = lab.netns("sttg");
    for (name, header) in [("keepalive", ""), ("close", "-H 'Connection: close'")] {
        let cap = tmp.path().join(format!("{name}.pcap"));
        let before = read_lines(&prod_log).len();
        let td = start_tcpdump(&mut lab, &p.prod, &p.prod_if, "tcp port 80", &cap);
        lab.exec_ok(
            &p.client,
            &format!("wrk -t 1 -c 4 -d 1 {header} http://198.18.50.2/"),
        );
        stop_tcpdump(&mut lab, td, &cap);
        let sent = read_lines(&prod_log).len() - before;
        assert!(sent > 100, "{name}: only {sent} requests at production");
        let tlog = start_nginx(
            &mut lab,
            &target,
            tmp.path(),
            &format!("t{name}"),
            &format!("127.0.0.{}:8080", if name == "close" { 2 } else { 1 }),
        );
        let t_ip = if name == "close" {
            "127.0.0.2"
        } else {
            "127.0.0.1"
        };
        let (table, _) = replay(
            &lab,
            &target,
            &format!("-x 80-{t_ip}:8080 --offline {} --topspeed", cap.display()),
        );
        let got = settle(sent as u64, Duration::from_secs(10), || line_count(&tlog)) as usize;
        eprintln!("nginx {name}: {got} of {sent} requests arrived");
        assert_eq!(
            got, sent,
            "{name}: {got} of {sent} requests arrived\n{table}"
        );

        // PROXY v2 (keep-alive capture) and v1 (Connection: close capture) against nginx with
        // proxy_protocol on: the original client address is logged for every request.
        let (version, listen) = if name == "keepalive" {
            ("v2", "127.0.0.3:8080")
        } else {
            ("v1", "127.0.0.4:8080")
        };
        let plog = start_nginx(
            &mut lab,
            &target,
            tmp.path(),
            &format!("proxy{version}"),
            &format!("{listen} proxy_protocol"),
        );
        replay(
            &lab,
            &target,
            &format!(
                "-x 80-{listen} --offline {} --topspeed --proxy-protocol {version}",
                cap.display()
            ),
        );
        settle(sent as u64, Duration::from_secs(10), || line_count(&plog));
        let pl = read_lines(&plog);
        eprintln!(
            "proxy {version} ({name}): {} of {sent} logged, first: {:?}",
            pl.len(),
            pl.first()
        );
        assert_eq!(pl.len(), sent, "proxy {version}");
        assert!(
            pl.iter().all(|l| l.starts_with("198.18.50.1:")),
            "proxy {version} log: {:?}",
            &pl[..pl.len().min(3)]
        );
    }
}

/// A delay proxy: forwards `listen` → `upstream`, holding every answer chunk for `delay`.
fn delay_proxy(listen: std::net::TcpListener, upstream: std::net::SocketAddr, delay: Duration) {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        for conn in listen.incoming() {
            let Ok(client) = conn else { break };
            let Ok(server) = std::net::TcpStream::connect(upstream) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut c_rd, mut s_wr) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_rd, mut c_wr) = (server, client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = c_rd.read(&mut buf) {
                    if n == 0 || s_wr.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_wr.shutdown(std::net::Shutdown::Write);
            });
            // One thread per answer direction: read, hold until read time + delay, write.
            // (Request/answer traffic has one answer in flight per connection.)
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = s_rd.read(&mut buf) {
                    let due = Instant::now() + delay;
                    if n == 0 {
                        break;
                    }
                    // Sleep, then spin the last 300 µs: sleep wake-ups are late by that much
                    // on a busy machine, and the test measures this delay to 0.5 ms.
                    let now = Instant::now();
                    if due > now + Duration::from_micros(300) {
                        std::thread::sleep(due - now - Duration::from_micros(300));
                    }
                    while Instant::now() < due {
                        std::hint::spin_loop();
                    }
                    if c_wr.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c_wr.shutdown(std::net::Shutdown::Both);
            });
        }
    });
}

#[test]
fn latency_through_a_5ms_delay_proxy_and_diff() {
    require_root!("stream_lab::latency_diff");
    require_programs!(
        "stream_lab::latency_diff",
        "redis-server",
        "redis-cli",
        "tcpdump",
        "bash"
    );
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tempdir_for_dropped_user("stream_lab");
    let p = prod_pair(&mut lab);
    start_redis(&mut lab, &p.prod, "198.18.50.2", 6379, tmp.path());
    // Keys key:0..99; the test redis (reachable from the root namespace) has other values for
    // one key in ten.
    let fill: String = (0..100)
        .map(|i| format!("SET key:{i} value{i}\r\n"))
        .collect();
    std::fs::write(tmp.path().join("fill"), &fill).unwrap();
    lab.exec_ok(
        &p.prod,
        &format!(
            "redis-cli -h 198.18.50.2 < {}",
            tmp.path().join("fill").display()
        ),
    );
    let cap = tmp.path().join("get.pcap");
    let td = start_tcpdump(&mut lab, &p.prod, &p.prod_if, "tcp port 6379", &cap);
    // 4 connections × 100 GETs (one per key), each waiting for its answer.
    lab.exec_ok(
        &p.client,
        "for c in 1 2 3 4; do bash -c 'exec 3<>/dev/tcp/198.18.50.2/6379; for i in $(seq 0 99); do printf \"GET key:$i\\r\\n\" >&3; read -r l <&3; read -r l <&3; done; exec 3<&-' & done; wait",
    );
    stop_tcpdump(&mut lab, td, &cap);
    // For latency: one connection, 150 GETs 5 ms apart (requests do not queue behind each other).
    let lat_cap = tmp.path().join("lat.pcap");
    let td = start_tcpdump(&mut lab, &p.prod, &p.prod_if, "tcp port 6379", &lat_cap);
    lab.exec_ok(
        &p.client,
        "bash -c 'exec 3<>/dev/tcp/198.18.50.2/6379; for i in $(seq 0 149); do printf \"GET key:$((i % 100))\\r\\n\" >&3; read -r l <&3; read -r l <&3; sleep 0.005; done; exec 3<&-'",
    );
    stop_tcpdump(&mut lab, td, &lat_cap);

    let target = lab.netns("sttg");
    start_redis(&mut lab, &target, "127.0.0.1", 6390, tmp.path());
    let fill_t: String = (0..100)
        .map(|i| {
            if i % 10 == 7 {
                format!("SET key:{i} other{i}\r\n")
            } else {
                format!("SET key:{i} value{i}\r\n")
            }
        })
        .collect();
    std::fs::write(tmp.path().join("fill_t"), &fill_t).unwrap();
    lab.exec_ok(
        &target,
        &format!(
            "redis-cli -h 127.0.0.1 -p 6390 < {}",
            tmp.path().join("fill_t").display()
        ),
    );

    // --diff straight against the test redis.
    let dj = tmp.path().join("diff.json");
    let (table, _) = replay(
        &lab,
        &target,
        &format!(
            "-x 6379-127.0.0.1:6390 --offline {} --diff --report {}",
            cap.display(),
            dj.display()
        ),
    );
    let d = read_json(&dj);
    let rate = d["diff"]["match_rate"].as_f64().unwrap();
    assert_eq!(d["diff"]["compared"], 400, "{table}");
    assert!((rate - 0.90).abs() <= 0.02, "match rate {rate}\n{table}");
    // Redis replies are decoded: the examples name the command and key (docs/report.md).
    let ex = d["diff"]["fields"].as_array().unwrap();
    eprintln!(
        "diff: {} compared, match rate {rate:.4}, {} examples",
        d["diff"]["compared"],
        ex.len()
    );
    assert!(!ex.is_empty());
    for e in ex {
        assert_eq!(e["endpoint"], "GET", "{table}");
        let req = e["key"].as_str().unwrap();
        let key: u32 = req.trim_start_matches("key:").parse().unwrap_or(999);
        assert_eq!(
            key % 10,
            7,
            "example names a key that answers the same: {req}"
        );
    }

    // Latency through a 5 ms delay proxy, run inside the target namespace by a helper process:
    // the proxy lives in this test process, so it listens in the root namespace on loopback and
    // the replay runs in the root namespace too (offline replay needs no namespace).
    let upstream_ns_port = {
        // Expose the target redis to the root namespace with a veth.
        let root_addr = "198.18.52.1/24";
        let (a, _b) = (unique("vr"), unique("vt"));
        sh(&format!("ip link add {a} type veth peer name {}", _b));
        sh(&format!("ip link set {} netns {target}", _b));
        sh(&format!(
            "ip addr add {root_addr} dev {a} && ip link set {a} up"
        ));
        lab.exec_ok(
            &target,
            &format!(
                "ip addr add 198.18.52.2/24 dev {} && ip link set {} up",
                _b, _b
            ),
        );
        lab.exec_ok(
            &target,
            "redis-cli -h 127.0.0.1 -p 6390 config set bind '127.0.0.1 198.18.52.2'",
        );
        (
            a,
            "198.18.52.2:6390".parse::<std::net::SocketAddr>().unwrap(),
        )
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    delay_proxy(listener, upstream_ns_port.1, Duration::from_millis(5));
    let lj = tmp.path().join("lat.json");
    // --force: the delay proxy listens on this host's loopback, a local target.
    let out = Command::new(stream_bin())
        .args([
            "--stream",
            "--force",
            "-x",
            &format!("6379-{proxy_addr}"),
            "--offline",
            lat_cap.to_str().unwrap(),
            "--report",
            lj.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let _ = Command::new("ip")
        .args(["link", "del", &upstream_ns_port.0])
        .status();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = read_json(&lj);
    let test_p50 = l["test"]["latency_ms"]["p50"].as_f64().unwrap();
    let prod_p50 = l["production"]["latency_ms"]["p50"].as_f64().unwrap();
    eprintln!("latency p50: test {test_p50:.3} ms, production {prod_p50:.3} ms (+5 ms expected)");
    assert!(
        (test_p50 - (prod_p50 + 5.0)).abs() <= 0.5,
        "test p50 {test_p50} ms, production p50 {prod_p50} ms\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// (client port, seq, payload offset in the frame) of a client→6379 data segment.
fn client_data(f: &[u8]) -> Option<(u16, u32, usize)> {
    let l = parse_layout(LinkType::ETHERNET, f).ok()?;
    let tcp = l.tcp(f)?;
    if tcp.dst_port() != 6379 || tcp.payload().is_empty() {
        return None;
    }
    let off = l.ip?.l4_offset? + tcp.header_len();
    Some((tcp.src_port(), tcp.seq().0, off))
}

/// Whether frame `f` is a SYN or SYN-ACK between client port `port` and 6379.
fn is_syn_of(f: &[u8], port: u16) -> bool {
    let Some(tcp) = parse_layout(LinkType::ETHERNET, f)
        .ok()
        .and_then(|l| l.tcp(f))
    else {
        return false;
    };
    let ports = (tcp.src_port(), tcp.dst_port());
    tcp.flags().contains(TcpFlags::SYN) && (ports == (port, 6379) || ports == (6379, port))
}

/// A copy of data frame `f` carrying `payload` at sequence `seq` (checksums left as they
/// were: stream mode does not check them).
fn with_payload(f: &Frame, seq: u32, payload: &[u8]) -> Frame {
    let (_, _, off) = client_data(&f.data).unwrap();
    let mut r = f.data[..off].to_vec();
    r.extend_from_slice(payload);
    let l = parse_layout(LinkType::ETHERNET, &r).unwrap();
    let (l3, l4) = (l.l3_offset, l.ip.unwrap().l4_offset.unwrap());
    let ip_total = (r.len() - l3) as u16;
    Ipv4Packet::new_checked(&mut r[l3..])
        .unwrap()
        .set_total_len(ip_total);
    TcpPacket::new_checked(&mut r[l4..])
        .unwrap()
        .set_seq(SeqNumber(seq));
    Frame { ts: f.ts, data: r }
}

#[test]
fn edited_captures_with_holes_retransmissions_overlaps_replay_and_count_partial() {
    require_root!("stream_lab::edited_captures");
    require_programs!(
        "stream_lab::edited_captures",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "tcpdump"
    );
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tempdir_for_dropped_user("stream_lab");
    let p = prod_pair(&mut lab);
    let cap = tmp.path().join("orig.pcap");
    let prod = redis_benchmark_capture(&mut lab, &p, tmp.path(), "-n 3000 -c 6 -t set", &cap);
    let (linktype, recs) = read_frames(&cap);
    let data: Vec<usize> = (0..recs.len())
        .filter(|&i| client_data(&recs[i].data).is_some())
        .collect();
    assert!(data.len() >= 3000);
    let mut out: Vec<Frame> = Vec::new();
    // One hole in each of three different sessions.
    let mut holes: Vec<usize> = Vec::new();
    let mut holed_ports = Vec::new();
    for start in [data.len() / 4, data.len() / 2, 3 * data.len() / 4] {
        let k = (start..data.len())
            .find(|&k| !holed_ports.contains(&client_data(&recs[data[k]].data).unwrap().0))
            .expect("a data segment of another session");
        holed_ports.push(client_data(&recs[data[k]].data).unwrap().0);
        holes.push(data[k]);
    }
    // One more session (not holed) starts mid-stream: its SYN and SYN-ACK are cut out.
    let no_syn_port = {
        let mut count: HashMap<u16, usize> = HashMap::new();
        for &k in &data {
            *count
                .entry(client_data(&recs[k].data).unwrap().0)
                .or_default() += 1;
        }
        count
            .into_iter()
            .filter(|(port, _)| !holed_ports.contains(port))
            .max_by_key(|&(port, n)| (n, port))
            .expect("a session without a hole")
            .0
    };
    let syns: Vec<usize> = (0..recs.len())
        .filter(|&i| is_syn_of(&recs[i].data, no_syn_port))
        .collect();
    assert_eq!(syns.len(), 2, "SYN and SYN-ACK of port {no_syn_port}");
    holes.extend_from_slice(&syns);
    let (mut dup, mut swapped, mut overlap) = (0, 0, 0);
    let mut i = 0;
    while i < recs.len() {
        if holes.contains(&i) {
            i += 1;
            continue;
        }
        let rank = data.binary_search(&i).ok();
        match rank {
            // Out of order: this segment after the next record.
            Some(k) if k % 70 == 5 && i + 1 < recs.len() && !holes.contains(&(i + 1)) => {
                out.push(recs[i + 1].clone());
                out.push(recs[i].clone());
                swapped += 1;
                i += 2;
                continue;
            }
            // Retransmission: the same segment twice.
            Some(k) if k % 50 == 7 => {
                out.push(recs[i].clone());
                out.push(recs[i].clone());
                dup += 1;
            }
            // Overlap: a segment covering the second half of this one and the first half of the
            // next one of the same connection, sent in between.
            Some(k) if k % 90 == 11 => {
                out.push(recs[i].clone());
                let (port, seq, off) = client_data(&recs[i].data).unwrap();
                let next = data[k + 1..].iter().take(40).find(|&&j| {
                    !holes.contains(&j) && client_data(&recs[j].data).unwrap().0 == port
                });
                if let Some(&j) = next {
                    let (_, nseq, noff) = client_data(&recs[j].data).unwrap();
                    let a = &recs[i].data[off..];
                    let b = &recs[j].data[noff..];
                    if seq.wrapping_add(a.len() as u32) == nseq {
                        let mut pl = a[a.len() / 2..].to_vec();
                        pl.extend_from_slice(&b[..b.len() / 2]);
                        out.push(with_payload(
                            &recs[i],
                            seq.wrapping_add((a.len() / 2) as u32),
                            &pl,
                        ));
                        overlap += 1;
                    }
                }
            }
            _ => out.push(recs[i].clone()),
        }
        i += 1;
    }
    assert!(
        dup > 10 && swapped > 10 && overlap > 5,
        "edits: {dup} dup, {swapped} swapped, {overlap} overlaps"
    );
    let edited = tmp.path().join("edited.pcap");
    write_frames(&edited, linktype, &out);

    let target = lab.netns("sttg");
    start_redis(&mut lab, &target, "127.0.0.1", 6390, tmp.path());
    let rj = tmp.path().join("e.json");
    let (table, _) = replay(
        &lab,
        &target,
        &format!(
            "-x 6379-127.0.0.1:6390 --offline {} --topspeed --report {}",
            edited.display(),
            rj.display()
        ),
    );
    let r = read_json(&rj);
    eprintln!(
        "edited capture: {dup} retransmitted, {swapped} reordered, {overlap} overlapping, 3 holes, 1 session without SYN; report sessions {}, errors {}",
        r["sessions"], r["test"]["errors"]
    );
    assert_eq!(r["sessions"]["partial"], 3, "{table}");
    assert_eq!(r["sessions"]["without_syn"], 1, "{table}");
    let sets = commandstats(&lab, &target, "127.0.0.1", 6390)
        .get("set")
        .copied()
        .unwrap_or(0);
    let prod_sets = prod["set"];
    // The SETs before each hole in holed sessions, and all of the other sessions' (the one
    // without a SYN included), counted in the original capture.
    let before_holes: u64 = data
        .iter()
        .filter(|&&k| {
            let port = client_data(&recs[k].data).unwrap().0;
            match holed_ports.iter().position(|&p| p == port) {
                Some(h) => k < holes[h],
                None => true,
            }
        })
        .map(|&k| {
            let pl = &recs[k].data[client_data(&recs[k].data).unwrap().2..];
            pl.windows(9).filter(|w| w == b"$3\r\nSET\r\n").count() as u64
        })
        .sum();
    eprintln!(
        "edited capture: {sets} of {prod_sets} SETs replayed, {before_holes} before the holes"
    );
    // Each holed session stops at its hole, nothing else is missing (a command split across a
    // hole's edge may be lost with it).
    assert!(
        sets <= before_holes && sets + 3 >= before_holes && before_holes < prod_sets,
        "{sets} of {prod_sets} SETs, {before_holes} before the holes\n{table}"
    );
    // Only the request cut by each hole may go unanswered.
    assert!(r["test"]["errors"].as_u64().unwrap() <= 3, "{table}");
}

#[test]
fn live_stream_from_production_delivers_redis_benchmark() {
    require_root!("stream_lab::live");
    require_programs!(
        "stream_lab::live",
        "redis-server",
        "redis-benchmark",
        "redis-cli"
    );
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tempdir_for_dropped_user("stream_lab");
    let p = prod_pair(&mut lab);
    let target = lab.netns("sttg");
    // The target is an ordinary host next to production: no intercept, no special route.
    lab.veth(&p.prod, "198.18.51.1/24", &target, "198.18.51.2/24");
    start_redis(&mut lab, &p.prod, "198.18.50.2", 6379, tmp.path());
    start_redis(&mut lab, &target, "198.18.51.2", 6379, tmp.path());
    let log = tmp.path().join("live.log");
    let pid = lab.spawn_stream_live(
        &p.prod,
        &[
            "-x",
            "6379-198.18.51.2:6379",
            "-i",
            &p.prod_if,
            "--duration",
            "60",
            "--metrics",
            "127.0.0.1:19190",
        ],
        &log,
    );
    lab.exec_ok(
        &p.client,
        "redis-benchmark -h 198.18.50.2 -p 6379 -n 20000 -c 10 -t set,get -q",
    );
    std::thread::sleep(Duration::from_secs(1));
    // --metrics: scraped once the traffic is over, it must say what the table will say.
    let scrape = lab.exec(
        &p.prod,
        "curl -sf --max-time 5 http://127.0.0.1:19190/metrics",
    );
    let metrics = String::from_utf8_lossy(&scrape.stdout).into_owned();
    let out = stop_live(&mut lab, pid, &log);
    assert_eq!(promtool_check_metrics(&metrics), "", "{metrics}");
    // Every stream-mode metric docs/grafana-dashboard.json queries is one this run serves.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("docs/grafana-dashboard.json")).unwrap(),
    )
    .expect("dashboard is JSON");
    let mut queried = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let e = target["expr"].as_str().unwrap();
            for w in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if w.starts_with("tcpclone_tcpcopy_stream_") {
                    queried += 1;
                    let base = w.trim_end_matches("_bucket");
                    assert!(
                        metrics.contains(&format!("# TYPE {base} "))
                            || metrics
                                .contains(&format!("# TYPE {} ", base.trim_end_matches("_total"))),
                        "the dashboard queries {w}, which stream mode does not serve:\n{metrics}"
                    );
                }
            }
        }
    }
    assert!(queried >= 10, "the dashboard has no stream-mode panels");
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
    };
    let table_requests: u64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("requests")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no requests line in:\n{out}"));
    assert_eq!(
        metric("tcpclone_tcpcopy_stream_requests_total"),
        table_requests,
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{} replayed",
            metric("tcpclone_tcpcopy_stream_sessions_replayed_total")
        )),
        "{metrics}\n{out}"
    );
    let table_answered: u64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("answered")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no answered line in:\n{out}"));
    assert_eq!(
        metric("tcpclone_tcpcopy_stream_requests_answered_total"),
        table_answered,
        "{out}"
    );
    // Every answered request has its latency in the histogram.
    assert_eq!(
        metric("tcpclone_tcpcopy_stream_request_latency_seconds_count"),
        table_answered,
        "{metrics}"
    );
    let prod = commandstats(&lab, &p.prod, "198.18.50.2", 6379);
    let got = commandstats(&lab, &target, "198.18.51.2", 6379);
    eprintln!("live: production {prod:?}, target {got:?}");
    for cmd in ["set", "get"] {
        let (want, have) = (prod[cmd], got.get(cmd).copied().unwrap_or(0));
        assert!(
            have as f64 >= 0.999 * want as f64 && have <= want,
            "{cmd}: {have} of {want} arrived\n{out}"
        );
    }
}

/// Stops live stream mode with SIGINT; it must exit successfully within 30 s. Returns its log.
fn stop_live(lab: &mut Lab, pid: u32, log: &Path) -> String {
    let st = lab
        .stop(pid, "INT", Duration::from_secs(30))
        .expect("stream mode did not stop on SIGINT");
    let out = std::fs::read_to_string(log).unwrap_or_default();
    assert!(st.success(), "exit {st:?}: {out}");
    out
}

#[test]
fn live_with_responses_reports_production_and_a_full_queue_drops_whole_sessions() {
    require_root!("stream_lab::live_queue");
    require_programs!(
        "stream_lab::live_queue",
        "redis-server",
        "redis-benchmark",
        "redis-cli",
        "kill"
    );
    let _serial = serial();
    let mut lab = Lab::new();
    let tmp = tempdir_for_dropped_user("stream_lab");
    let p = prod_pair(&mut lab);
    let target = lab.netns("sttg");
    lab.veth(&p.prod, "198.18.51.1/24", &target, "198.18.51.2/24");
    start_redis(&mut lab, &p.prod, "198.18.50.2", 6379, tmp.path());
    let target_pid = tcpclone_lab::start_redis(
        &mut lab,
        &target,
        &["198.18.51.2"],
        6379,
        tmp.path(),
        &[],
        None,
    );

    // 1. --with-responses: production's latency comes from the live capture, beside the test's.
    let log = tmp.path().join("resp.log");
    let rj = tmp.path().join("resp.json");
    let rj_s = rj.to_str().unwrap().to_string();
    let pid = lab.spawn_stream_live(
        &p.prod,
        &[
            "-x",
            "6379-198.18.51.2:6379",
            "-i",
            &p.prod_if,
            "--with-responses",
            "--duration",
            "60",
            "--report",
            &rj_s,
        ],
        &log,
    );
    lab.exec_ok(
        &p.client,
        "redis-benchmark -h 198.18.50.2 -p 6379 -n 2000 -c 4 -t set,get -q",
    );
    std::thread::sleep(Duration::from_secs(1));
    let out = stop_live(&mut lab, pid, &log);
    let prod = commandstats(&lab, &p.prod, "198.18.50.2", 6379);
    let prod_cmds: u64 = prod.values().sum();
    let r = read_json(&rj);
    let pr = &r["production"];
    eprintln!(
        "live --with-responses: production {prod:?}; report production requests {} p50 {} ms, test requests {} p50 {} ms",
        pr["requests"], pr["latency_ms"]["p50"], r["test"]["requests"], r["test"]["latency_ms"]["p50"]
    );
    assert!(
        pr["requests"].as_u64().unwrap_or(0) as f64 >= 0.999 * prod_cmds as f64,
        "production side of the report: {pr}\n{out}"
    );
    assert!(
        pr["latency_ms"]["p50"].as_f64().unwrap_or(0.0) > 0.0,
        "{out}"
    );
    assert!(
        r["test"]["latency_ms"]["p50"].as_f64().unwrap_or(0.0) > 0.0,
        "{out}"
    );

    // 2. A stopped target and a 1 MB queue: 4 connections x 50 SETs of 100 KB (20 MB) cannot
    // be queued; whole sessions are dropped and counted, and the replay ends cleanly.
    lab.exec_ok(&p.prod, "redis-cli -h 198.18.50.2 config resetstat");
    lab.exec_ok(&target, "redis-cli -h 198.18.51.2 config resetstat");
    let log = tmp.path().join("queue.log");
    let qj = tmp.path().join("queue.json");
    let qj_s = qj.to_str().unwrap().to_string();
    let pid = lab.spawn_stream_live(
        &p.prod,
        &[
            "-x",
            "6379-198.18.51.2:6379",
            "-i",
            &p.prod_if,
            "--queue-mb",
            "1",
            "--response-timeout",
            "30",
            "--duration",
            "60",
            "--report",
            &qj_s,
        ],
        &log,
    );
    lab.exec_ok(&target, &format!("kill -STOP {target_pid}"));
    let bench = lab.exec(
        &p.client,
        "redis-benchmark -h 198.18.50.2 -p 6379 -n 200 -c 4 -d 100000 -t set -q",
    );
    lab.exec_ok(&target, &format!("kill -CONT {target_pid}"));
    assert!(bench.status.success(), "redis-benchmark failed");
    std::thread::sleep(Duration::from_secs(2));
    let out = stop_live(&mut lab, pid, &log);
    let q = read_json(&qj);
    let sets = commandstats(&lab, &target, "198.18.51.2", 6379)
        .get("set")
        .copied()
        .unwrap_or(0);
    let prod_sets = commandstats(&lab, &p.prod, "198.18.50.2", 6379)["set"];
    eprintln!(
        "live queue bound: sessions {}, {sets} of {prod_sets} SETs arrived",
        q["sessions"]
    );
    assert!(q["sessions"]["dropped"].as_u64().unwrap() >= 1, "{out}");
    assert!(sets < prod_sets, "{sets} of {prod_sets} SETs\n{out}");
}
