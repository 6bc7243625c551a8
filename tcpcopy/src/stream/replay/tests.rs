//! End-to-end tests of the replayer over loopback line servers (moved unchanged from replay.rs).

use super::*;
use crate::mapping::parse_mappings;
use etherparse::PacketBuilder;
use std::io::{BufRead, BufReader, Write};

/// One frame of the fixture capture.
struct F {
    ts_us: u64,
    from_client: bool,
    cport: u16,
    seq: u32,
    ack: Option<u32>,
    flags: &'static str,
    payload: &'static [u8],
}

fn pcap(frames: &[F]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for f in frames {
        let (c, s) = ([198, 18, 0, 1], [198, 18, 1, 1]);
        let (src, dst, sp, dp) = if f.from_client {
            (c, s, f.cport, 7000)
        } else {
            (s, c, 7000, f.cport)
        };
        let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, f.seq, 65535);
        if f.flags.contains('S') {
            b = b.syn();
        }
        if f.flags.contains('F') {
            b = b.fin();
        }
        if let Some(a) = f.ack {
            b = b.ack(a);
        }
        let mut frame = Vec::new();
        b.write(&mut frame, f.payload).unwrap();
        out.extend_from_slice(&((1_700_000_000 + f.ts_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((f.ts_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

fn fixture() -> Vec<u8> {
    let f = |ts_us, from_client, cport, seq, ack, flags, payload| F {
        ts_us,
        from_client,
        cport,
        seq,
        ack,
        flags,
        payload,
    };
    pcap(&[
        // Session A: handshake, two exchanges, close.
        f(0, true, 40000, 100, None, "S", b""),
        f(100, false, 40000, 900, Some(101), "S", b""),
        f(200, true, 40000, 101, Some(901), "", b""),
        f(1000, true, 40000, 101, Some(901), "", b"a1\n"),
        f(1300, false, 40000, 901, Some(104), "", b"R:a1\n"),
        f(20000, true, 40000, 104, Some(906), "", b"a2\n"),
        f(20500, false, 40000, 906, Some(107), "", b"R:a2\n"),
        // Session B: no SYN in the capture; its request comes in two segments, one of them
        // retransmitted.
        f(21000, true, 40001, 5000, Some(7000), "", b"GET "),
        f(21050, true, 40001, 5000, Some(7000), "", b"GET "),
        f(21100, true, 40001, 5004, Some(7000), "", b"1\n"),
        f(21400, false, 40001, 7000, Some(5006), "", b"R:GET 1\n"),
        f(30000, true, 40000, 107, Some(911), "F", b""),
        f(30100, false, 40000, 911, Some(108), "F", b""),
        f(30200, true, 40001, 5006, Some(7008), "F", b""),
        f(30300, false, 40001, 7008, Some(5007), "F", b""),
    ])
}

/// A line server: answers every line with `R:<line>`; returns what each connection sent.
fn line_server() -> (SocketAddr, std::sync::mpsc::Receiver<Vec<u8>>) {
    line_server_with(Some(Duration::ZERO))
}

/// A line server that answers every line after `delay`, or never (`None`: it only reads,
/// and closes when the client does); returns what each connection sent.
fn line_server_with(delay: Option<Duration>) -> (SocketAddr, std::sync::mpsc::Receiver<Vec<u8>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { break };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                let mut got = Vec::new();
                let mut r = BufReader::new(c);
                let mut line = Vec::new();
                while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                    got.extend_from_slice(&line);
                    if let Some(d) = delay {
                        std::thread::sleep(d);
                        let _ = w.write_all(&[b"R:".as_slice(), &line].concat());
                    }
                    line.clear();
                }
                let _ = tx.send(got);
            });
        }
    });
    (addr, rx)
}

#[test]
fn replays_sessions_in_order_with_copies_and_measures() {
    let (addr, rx) = line_server();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.pcap");
    std::fs::write(&path, fixture()).unwrap();
    let common = StreamCommon {
        mappings: parse_mappings(&format!("7000-{addr}")).unwrap(),
        percentage: 100,
        copies: 2,
        speedup: 1.0,
        no_wait: false,
        source: StreamSource::Offline(path),
        force: false,
    };
    let opts = StreamOptions {
        diff: true,
        ..Default::default()
    };
    let (r, err) = run(&common, &opts).unwrap();
    assert!(err.is_none());
    let mut got: Vec<Vec<u8>> = (0..4)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            b"GET 1\n".to_vec(),
            b"GET 1\n".to_vec(),
            b"a1\na2\n".to_vec(),
            b"a1\na2\n".to_vec()
        ]
    );
    assert_eq!(r.test.requests, 6);
    assert_eq!(r.test.answered, 6);
    assert_eq!(r.sessions.seen, 2);
    assert_eq!(r.sessions.replayed, 4);
    assert_eq!(r.sessions.without_syn, 1);
    let p = r.production.as_ref().unwrap();
    assert_eq!(p.requests, 6);
    // Production latencies: 300 µs, 500 µs, 300 µs.
    assert!(
        (p.latency_ms.p50 - 0.3).abs() < 0.01,
        "{}",
        p.latency_ms.p50
    );
    let d = r.diff.unwrap();
    assert_eq!((d.compared, d.matched), (6, 6));
    // Timed: session A's second request is 19 ms after the first; the run lasts ≥ 30 ms.
    assert!(r.duration_s >= 0.029, "{}", r.duration_s);
}

fn common_for(addr: SocketAddr, path: std::path::PathBuf) -> StreamCommon {
    StreamCommon {
        mappings: parse_mappings(&format!("7000-{addr}")).unwrap(),
        percentage: 100,
        copies: 1,
        speedup: 1.0,
        no_wait: false,
        source: StreamSource::Offline(path),
        force: false,
    }
}

#[test]
fn no_wait_pipelines_without_waiting_for_answers() {
    // A server that never answers: without -W every request would wait the response
    // timeout (3 s) before the next one; with -W all of them go out at once.
    let (addr, rx) = line_server_with(None);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.pcap");
    std::fs::write(&path, fixture()).unwrap();
    let common = StreamCommon {
        no_wait: true,
        ..common_for(addr, path)
    };
    let opts = StreamOptions {
        topspeed: true,
        response_timeout: 3.0,
        ..Default::default()
    };
    let (r, _) = run(&common, &opts).unwrap();
    let mut got: Vec<Vec<u8>> = (0..2)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, vec![b"GET 1\n".to_vec(), b"a1\na2\n".to_vec()]);
    assert_eq!(r.test.requests, 3);
    assert_eq!(r.test.timed_out, 0, "{r:?}");
    assert!(r.duration_s < 2.0, "-W waited: {} s", r.duration_s);
}

#[test]
fn slow_target_is_waited_for_and_the_slip_reported() {
    // Answers 60 ms late: session A's second request (19 ms after production's answer in
    // the capture) goes out ≥ 60 ms behind its place in the schedule, and is still sent.
    let (addr, _rx) = line_server_with(Some(Duration::from_millis(60)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.pcap");
    std::fs::write(&path, fixture()).unwrap();
    let (r, _) = run(&common_for(addr, path), &StreamOptions::default()).unwrap();
    assert_eq!((r.test.requests, r.test.answered), (3, 3), "{r:?}");
    assert!(r.slip_ms.max >= 50.0, "slip {:?}", r.slip_ms);
    assert!(r.test.latency_ms.p50 >= 59.0, "{:?}", r.test.latency_ms);
    assert!(crate::report::render_table(&r).contains("slip behind schedule"));
}

#[test]
fn server_that_speaks_first_is_waited_for() {
    // Production sent a banner before the client's first request; the test server sends
    // its banner 150 ms after accepting. The request must not go out before it (the
    // server checks that nothing has arrived when it sends the banner), even at top speed.
    let f = |ts_us, from_client, seq, ack, flags, payload| F {
        ts_us,
        from_client,
        cport: 40000,
        seq,
        ack,
        flags,
        payload,
    };
    let cap = pcap(&[
        f(0, true, 100, None, "S", b""),
        f(100, false, 900, Some(101), "S", b""),
        f(200, true, 101, Some(901), "", b""),
        f(500, false, 901, Some(101), "", b"HI\n"),
        f(1000, true, 101, Some(904), "", b"a1\n"),
        f(1300, false, 904, Some(104), "", b"R:a1\n"),
        f(2000, true, 104, Some(909), "F", b""),
        f(2100, false, 909, Some(105), "F", b""),
    ]);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (c, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_millis(150));
        c.set_nonblocking(true).unwrap();
        let early = c.peek(&mut [0u8; 8]).is_ok();
        c.set_nonblocking(false).unwrap();
        let mut w = c.try_clone().unwrap();
        w.write_all(b"HI\n").unwrap();
        let mut r = BufReader::new(c);
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line).unwrap();
        w.write_all(b"R:a1\n").unwrap();
        let _ = tx.send((early, line));
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("banner.pcap");
    std::fs::write(&path, cap).unwrap();
    let opts = StreamOptions {
        topspeed: true,
        ..Default::default()
    };
    let (r, _) = run(&common_for(addr, path), &opts).unwrap();
    let (early, line) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(!early, "the request went out before the server's banner");
    assert_eq!(line, b"a1\n");
    assert_eq!((r.test.requests, r.test.answered), (1, 1), "{r:?}");
    // Measured from the request, not from the connection: the banner wait is not latency.
    assert!(r.test.latency_ms.max < 100.0, "{:?}", r.test.latency_ms);
}

#[test]
fn loop_sampling_and_session_rate() {
    let (addr, rx) = line_server();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.pcap");
    std::fs::write(&path, fixture()).unwrap();
    let mut common = StreamCommon {
        mappings: parse_mappings(&format!("7000-{addr}")).unwrap(),
        percentage: 0,
        copies: 1,
        speedup: 1.0,
        no_wait: false,
        source: StreamSource::Offline(path),
        force: false,
    };
    let (r, _) = run(
        &common,
        &StreamOptions {
            topspeed: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        (r.sessions.seen, r.sessions.sampled_out, r.test.requests),
        (2, 2, 0)
    );
    // --loop 3 at 10 sessions/s: 6 sessions, the last starting ≥ 0.5 s after the first.
    common.percentage = 100;
    let opts = StreamOptions {
        topspeed: true,
        loops: 3,
        max_sessions_per_sec: Some(10.0),
        ..Default::default()
    };
    let (r, _) = run(&common, &opts).unwrap();
    assert_eq!(r.sessions.replayed, 6);
    assert_eq!(r.test.answered, 9);
    assert!(r.duration_s >= 0.5, "{}", r.duration_s);
    let got: Vec<Vec<u8>> = (0..6)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    assert_eq!(
        got.iter().filter(|g| g.as_slice() == b"a1\na2\n").count(),
        3
    );
}

#[test]
fn refused_target_counts_every_request() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.pcap");
    std::fs::write(&path, fixture()).unwrap();
    let common = StreamCommon {
        mappings: parse_mappings(&format!("7000-127.0.0.1:{port}")).unwrap(),
        percentage: 100,
        copies: 1,
        speedup: 1.0,
        no_wait: false,
        source: StreamSource::Offline(path),
        force: false,
    };
    let (r, _) = run(
        &common,
        &StreamOptions {
            topspeed: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.test.requests, 3);
    assert_eq!(r.test.refused, 3);
    assert_eq!(r.sessions.connect_failed, 2);
}

#[test]
fn bad_inputs_fail_with_one_line() {
    let common = StreamCommon {
        mappings: parse_mappings("7000-127.0.0.1:1").unwrap(),
        percentage: 100,
        copies: 1,
        speedup: 1.0,
        no_wait: false,
        source: StreamSource::Offline("/nonexistent/x.pcap".into()),
        force: false,
    };
    let e = run(&common, &StreamOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/x.pcap"), "{e}");
    let e = run(
        &common,
        &StreamOptions {
            report: vec!["r.txt".into()],
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("must end in .json or .html"), "{e}");
}

#[test]
fn baseline_target_connect_failures_are_counted_apart() {
    // The test target answers; the baseline refuses: its failures are counted on their own,
    // not as the test target's, and its requests stay out of the target's figures.
    let (addr, _rx) = line_server();
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.pcap");
    std::fs::write(&path, fixture()).unwrap();
    let mut opts = StreamOptions {
        topspeed: true,
        diff: true,
        ..Default::default()
    };
    opts.verdict.baseline_target = Some(refused);
    let (r, _) = run(&common_for(addr, path), &opts).unwrap();
    assert_eq!(r.sessions.connect_failed, 0, "{:?}", r.sessions);
    assert_eq!(r.sessions.baseline_connect_failed, 2, "{:?}", r.sessions);
    assert_eq!((r.test.requests, r.test.answered), (3, 3), "{r:?}");
    assert!(crate::report::render_table(&r)
        .contains("baseline target: 2 connections could not be made"));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["sessions"]["baseline_connect_failed"], 2);
}
