//! intercept's server on 127.0.0.1 with a fake response source (no pcap, no root): routing to
//! the right tcpcopy connection, parking, the secure channel, and hostile peers.
//!
//! The fake tcpcopy clients use the library's pure client (`tcpclone::proto::client::Channel`),
//! the same code tcpcopy's glue uses.

use intercept::batch::HeaderBatch;
use intercept::server::{serve, ServerConfig, Stats};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tcpclone::proto::client::{Channel, Event};
use tcpclone::proto::secure::Psk;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};

const TARGET: &str = "198.18.0.2:6379";

/// A response from the target 198.18.0.2:6379 to client 198.18.0.1:`port`, tagged by `seq`,
/// as a batch of one.
fn hdr(port: u16, seq: u32) -> HeaderBatch {
    let mut h = vec![
        0x45, 0, 0, 45, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1, //
        0x18, 0xeb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
    ];
    h[22..24].copy_from_slice(&port.to_be_bytes());
    h[24..28].copy_from_slice(&seq.to_be_bytes());
    HeaderBatch::one(&h)
}

fn seq_of(h: &[u8]) -> (u16, u32) {
    (
        u16::from_be_bytes([h[22], h[23]]),
        u32::from_be_bytes([h[24], h[25], h[26], h[27]]),
    )
}

fn client(port: u16) -> SocketAddr {
    SocketAddr::new([198, 18, 0, 1].into(), port)
}

struct Server {
    addr: SocketAddr,
    responses: mpsc::Sender<HeaderBatch>,
    stats: Arc<Stats>,
    _shutdown: watch::Sender<bool>,
}

async fn start(cfg: ServerConfig) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(4096);
    let stats = Arc::new(Stats::default());
    let (sd, sd_rx) = watch::channel(false);
    tokio::spawn(serve(l, cfg, rx, stats.clone(), sd_rx));
    Server {
        addr,
        responses: tx,
        stats,
        _shutdown: sd,
    }
}

/// A tcpcopy stand-in: a TCP stream driven by the library's `Channel`.
struct FakeTcpcopy {
    s: TcpStream,
    ch: Channel,
    got: Vec<(u16, u32)>,
    /// The payload prefix of each response in `got` (empty without prefixes).
    prefixes: Vec<Vec<u8>>,
}

impl FakeTcpcopy {
    async fn connect(addr: SocketAddr, instance: u64, psk: Option<Psk>) -> Result<Self, String> {
        Self::connect_prefix(addr, instance, psk, 0).await
    }

    /// Connects asking for `prefix` payload bytes per response (0: a version-1 tcpcopy).
    async fn connect_prefix(
        addr: SocketAddr,
        instance: u64,
        psk: Option<Psk>,
        prefix: u16,
    ) -> Result<Self, String> {
        let s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut ch = Channel::new(instance, psk).with_response_prefix(prefix);
        ch.connected(std::time::Instant::now())
            .map_err(|e| e.to_string())?;
        let mut f = FakeTcpcopy {
            s,
            ch,
            got: Vec::new(),
            prefixes: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(3);
        while !f.ch.is_ready() {
            f.pump_until(deadline).await?;
        }
        Ok(f)
    }

    async fn flush(&mut self) -> Result<(), String> {
        while let Some(b) = self.ch.poll_transmit(std::time::Instant::now()) {
            self.s.write_all(&b).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Writes pending bytes, then reads once (until `deadline`), collecting responses.
    async fn pump_until(&mut self, deadline: Instant) -> Result<(), String> {
        self.flush().await?;
        let mut buf = [0u8; 65536];
        let n = match tokio::time::timeout_at(deadline, self.s.read(&mut buf)).await {
            Err(_) => return Err("timeout".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(0)) => return Err("closed by intercept".into()),
            Ok(Ok(n)) => n,
        };
        self.ch
            .handle_input(std::time::Instant::now(), &buf[..n])
            .map_err(|e| e.to_string())?;
        while let Some(e) = self.ch.poll_event() {
            match e {
                Event::Responses(hs) => {
                    self.got.extend(hs.iter().map(|h| seq_of(h)));
                    self.prefixes.extend(hs.iter().map(|_| Vec::new()));
                }
                Event::PrefixedResponses(es) => {
                    self.got.extend(es.iter().map(|e| seq_of(&e.header)));
                    self.prefixes.extend(es.iter().map(|e| e.prefix.to_vec()));
                }
                _ => {}
            }
        }
        self.flush().await
    }

    async fn add(&mut self, port: u16) {
        self.ch
            .session_add(client(port), TARGET.parse().unwrap())
            .unwrap();
        self.flush().await.unwrap();
    }

    /// Waits until `n` responses in total have arrived (or panics after 3 s).
    async fn wait_for(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.got.len() < n {
            if let Err(e) = self.pump_until(deadline).await {
                panic!("waiting for {n} responses, have {:?}: {e}", self.got);
            }
        }
    }
}

/// Lets the router task process registrations (they travel through a queue).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_each_response_to_its_owner_and_parks_early_ones() {
    let srv = start(ServerConfig::default()).await;
    let mut a = FakeTcpcopy::connect(srv.addr, 1, None).await.unwrap();
    let mut b = FakeTcpcopy::connect(srv.addr, 2, None).await.unwrap();
    a.add(1000).await;
    b.add(2000).await;
    // A response before its registration: parked, delivered on SessionAdd.
    srv.responses.send(hdr(3000, 30)).await.unwrap();
    settle().await;
    for i in 0..50 {
        srv.responses.send(hdr(1000, i)).await.unwrap();
        srv.responses.send(hdr(2000, 100 + i)).await.unwrap();
    }
    // Nobody owns 4000: parked, then dropped at the park timeout (not in this test's time).
    srv.responses.send(hdr(4000, 40)).await.unwrap();
    a.wait_for(50).await;
    b.wait_for(50).await;
    assert_eq!(a.got, (0..50).map(|i| (1000, i)).collect::<Vec<_>>());
    assert_eq!(b.got, (0..50).map(|i| (2000, 100 + i)).collect::<Vec<_>>());
    b.add(3000).await;
    b.wait_for(51).await;
    assert_eq!(b.got[50], (3000, 30));
    // Sessions belong to their registrant: another instance's SessionAdd for 2000 is refused
    // and counted, and b keeps receiving it.
    a.add(2000).await;
    settle().await;
    srv.responses.send(hdr(2000, 777)).await.unwrap();
    b.wait_for(52).await;
    assert_eq!(b.got[51], (2000, 777));
    assert_eq!(a.got.len(), 50, "{:?}", a.got);
    assert_eq!(srv.stats.sessions_owned_elsewhere.load(Relaxed), 1);
    // a goes away: b still served.
    drop(a);
    settle().await;
    srv.responses.send(hdr(3000, 31)).await.unwrap();
    b.wait_for(53).await;
    assert_eq!(b.got.len(), 53, "{:?}", b.got);
    let s = &srv.stats;
    assert_eq!(s.routed.load(Relaxed), 103, "100 + 777 + 2 of session 3000");
    assert_eq!(s.unparked.load(Relaxed), 1);
    assert_eq!(s.parked.load(Relaxed), 2);
    assert_eq!(s.peers_total.load(Relaxed), 2);
    assert_eq!(s.peers_now.load(Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_replays_registrations() {
    let srv = start(ServerConfig::default()).await;
    let mut a = FakeTcpcopy::connect(srv.addr, 1, None).await.unwrap();
    a.add(1000).await;
    let FakeTcpcopy { s, mut ch, .. } = a;
    drop(s);
    ch.disconnected(std::time::Instant::now());
    settle().await;
    // Response while tcpcopy is away: parked.
    srv.responses.send(hdr(1000, 5)).await.unwrap();
    let s = TcpStream::connect(srv.addr).await.unwrap();
    ch.connected(std::time::Instant::now()).unwrap();
    let mut a = FakeTcpcopy {
        s,
        ch,
        got: Vec::new(),
        prefixes: Vec::new(),
    };
    a.wait_for(1).await;
    assert_eq!(a.got, vec![(1000, 5)]);
}

fn psk(b: u8) -> Psk {
    let mut k = [b; 32];
    k[0] = 0;
    Psk::from_bytes(k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_channel_authenticates_both_ends() {
    let cfg = ServerConfig {
        psk: Some(psk(7)),
        ..ServerConfig::default()
    };
    let srv = start(cfg).await;
    let mut a = FakeTcpcopy::connect(srv.addr, 1, Some(psk(7)))
        .await
        .unwrap();
    a.add(1000).await;
    settle().await;
    // Larger than one Noise record: 3,000 headers ≈ 130 KB of frames.
    for i in 0..3000 {
        srv.responses.send(hdr(1000, i)).await.unwrap();
    }
    a.wait_for(3000).await;
    assert_eq!(a.got, (0..3000).map(|i| (1000, i)).collect::<Vec<_>>());

    let wrong = FakeTcpcopy::connect(srv.addr, 2, Some(psk(8))).await;
    assert!(wrong.is_err(), "a wrong secret must be refused");
    let plain = FakeTcpcopy::connect(srv.addr, 3, None).await;
    assert!(plain.is_err(), "a peer without the secret must be refused");
    settle().await;
    assert_eq!(srv.stats.handshake_failed.load(Relaxed), 2);
    assert_eq!(srv.stats.peers_total.load(Relaxed), 1);
    // The authenticated peer is still served.
    srv.responses.send(hdr(1000, 9999)).await.unwrap();
    a.wait_for(3001).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_drops_others() {
    let cfg = ServerConfig {
        allow: vec!["198.18.0.0/15".parse().unwrap()],
        ..ServerConfig::default()
    };
    let srv = start(cfg).await;
    let r = FakeTcpcopy::connect(srv.addr, 1, None).await;
    assert!(r.is_err());
    assert_eq!(srv.stats.rejected_not_allowed.load(Relaxed), 1);
    let cfg = ServerConfig {
        allow: vec!["127.0.0.0/8".parse().unwrap()],
        ..ServerConfig::default()
    };
    let srv = start(cfg).await;
    FakeTcpcopy::connect(srv.addr, 1, None).await.unwrap();
}

/// Waits until the server closes `s` (EOF or reset), returns how long it took.
async fn closed_within(mut s: TcpStream, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match timeout(limit.saturating_sub(t0.elapsed()), s.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return t0.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_closed_while_a_legitimate_one_is_served() {
    let cfg = ServerConfig {
        handshake_timeout: Duration::from_secs(2),
        frame_timeout: Duration::from_secs(2),
        max_pending: 64,
        ..ServerConfig::default()
    };
    let srv = start(cfg).await;
    let mut legit = FakeTcpcopy::connect(srv.addr, 1, None).await.unwrap();
    legit.add(1000).await;
    settle().await;

    // The legitimate tcpcopy gets one response every 20 ms during the whole attack.
    let feeder = {
        let tx = srv.responses.clone();
        tokio::spawn(async move {
            for i in 0..250u32 {
                tx.send(hdr(1000, i)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Garbage: closed at once.
    let mut g = TcpStream::connect(srv.addr).await.unwrap();
    g.write_all(b"GET / HTTP/1.1\r\nHost: intercept\r\n\r\n")
        .await
        .unwrap();
    let garbage = tokio::spawn(closed_within(g, Duration::from_secs(1)));

    // Oversize length prefix: closed at once, nothing buffered.
    let mut o = TcpStream::connect(srv.addr).await.unwrap();
    o.write_all(&[0x7f, 0xff, 0xff, 0xff, 1]).await.unwrap();
    let oversize = tokio::spawn(closed_within(o, Duration::from_secs(1)));

    // An established peer dribbling a SessionAdd one byte a second: closed at the frame timeout.
    let dribbler = FakeTcpcopy::connect(srv.addr, 2, None).await.unwrap();
    let mut d = dribbler.s;
    let dribble = tokio::spawn(async move {
        let frame = [
            0u8, 0, 0, 15, 2, 4, 198, 18, 0, 1, 0x9c, 0x40, 4, 198, 18, 0, 2, 0x18, 0xeb,
        ];
        let t0 = Instant::now();
        for b in frame {
            if d.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut buf = [0u8; 16];
            if let Ok(Ok(0) | Err(_)) = timeout(Duration::from_millis(1), d.read(&mut buf)).await {
                return t0.elapsed();
            }
        }
        panic!("dribbling peer never closed");
    });

    // 250 idle connections that never say anything: each closed (evicted or timed out).
    let mut idle = Vec::new();
    for _ in 0..250 {
        idle.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    let idle_closed: Vec<_> = idle
        .into_iter()
        .map(|s| tokio::spawn(closed_within(s, Duration::from_secs(4))))
        .collect();

    assert!(garbage.await.unwrap() < Duration::from_secs(1));
    assert!(oversize.await.unwrap() < Duration::from_secs(1));
    let mut worst = Duration::ZERO;
    for h in idle_closed {
        worst = worst.max(h.await.unwrap());
    }
    assert!(
        worst <= Duration::from_secs(3),
        "idle connection took {worst:?}"
    );
    let dribble_time = dribble.await.unwrap();
    assert!(
        dribble_time <= Duration::from_secs(4),
        "dribbler closed after {dribble_time:?}"
    );

    feeder.await.unwrap();
    legit.wait_for(250).await;
    assert_eq!(legit.got, (0..250).map(|i| (1000, i)).collect::<Vec<_>>());
    let s = &srv.stats;
    assert_eq!(s.peers_now.load(Relaxed), 1);
    assert!(
        s.handshake_failed.load(Relaxed) >= 2,
        "garbage and oversize counted"
    );
    assert_eq!(s.protocol_errors.load(Relaxed), 1, "the dribbler");
    assert!(s.rejected_cap.load(Relaxed) + s.handshake_timeout.load(Relaxed) >= 250);
    eprintln!("stats after the attack: {}", s.line());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_leave_without_waiting_for_a_batch_to_fill() {
    let srv = start(ServerConfig::default()).await;
    let mut a = FakeTcpcopy::connect(srv.addr, 1, None).await.unwrap();
    a.add(1000).await;
    settle().await;
    let mut lat = Vec::new();
    for i in 0..200u32 {
        let t0 = Instant::now();
        srv.responses.send(hdr(1000, i)).await.unwrap();
        a.wait_for(i as usize + 1).await;
        lat.push(t0.elapsed());
    }
    lat.sort();
    let (p50, p99) = (lat[100], lat[198]);
    eprintln!("injection → fake tcpcopy over loopback: p50 {p50:?}, p99 {p99:?}");
    // The batch is flushed as soon as the router's queue is empty: no timer to wait for.
    assert!(p50 < Duration::from_millis(5), "p50 {p50:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_is_split_by_session_and_early_ones_parked() {
    let srv = start(ServerConfig::default()).await;
    let mut a = FakeTcpcopy::connect(srv.addr, 1, None).await.unwrap();
    let mut b = FakeTcpcopy::connect(srv.addr, 2, None).await.unwrap();
    a.add(1000).await;
    b.add(2000).await;
    settle().await;
    // One capture block's worth: both owners interleaved and a session nobody registered yet.
    let mut batch = HeaderBatch::default();
    for i in 0..100u32 {
        let port = [1000, 2000, 3000][i as usize % 3];
        for h in &hdr(port, i) {
            batch.push(h);
        }
    }
    srv.responses.send(batch).await.unwrap();
    a.wait_for(34).await;
    b.wait_for(33).await;
    assert_eq!(
        a.got,
        (0..100).step_by(3).map(|i| (1000, i)).collect::<Vec<_>>()
    );
    assert_eq!(
        b.got,
        (1..100).step_by(3).map(|i| (2000, i)).collect::<Vec<_>>()
    );
    b.add(3000).await;
    b.wait_for(66).await;
    assert_eq!(
        b.got[33..],
        (2..100).step_by(3).map(|i| (3000, i)).collect::<Vec<_>>()[..],
        "parked in capture order"
    );
    let s = &srv.stats;
    assert_eq!(s.routed.load(Relaxed), 100);
    assert_eq!((s.parked.load(Relaxed), s.unparked.load(Relaxed)), (33, 33));
}

/// A response to client `port` carrying `payload` whole (as a capture with a long snap holds it).
fn answer(port: u16, seq: u32, payload: &[u8]) -> HeaderBatch {
    let mut h = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1, //
        0x18, 0xeb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
    ];
    h[2..4].copy_from_slice(&(40 + payload.len() as u16).to_be_bytes());
    h[22..24].copy_from_slice(&port.to_be_bytes());
    h[24..28].copy_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(payload);
    HeaderBatch::one(&h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_go_to_whoever_asked_within_the_grant_and_headers_to_the_others() {
    let srv = start(ServerConfig {
        response_prefix: 8,
        ..ServerConfig::default()
    })
    .await;
    // Asks for 64, gets the 8 --response-prefix allows.
    let mut new = FakeTcpcopy::connect_prefix(srv.addr, 1, None, 64)
        .await
        .unwrap();
    // A tcpcopy from before version 2 (or one without --report): headers only.
    let mut old = FakeTcpcopy::connect(srv.addr, 2, None).await.unwrap();
    new.add(1000).await;
    old.add(2000).await;
    settle().await;
    // The grant arrived with (or before) the first prefixed batch.
    srv.responses
        .send(answer(1000, 1, b"-ERR unknown command\r\n"))
        .await
        .unwrap();
    srv.responses
        .send(answer(2000, 2, b"-ERR unknown command\r\n"))
        .await
        .unwrap();
    srv.responses.send(answer(1000, 3, b"")).await.unwrap();
    new.wait_for(2).await;
    old.wait_for(1).await;
    assert_eq!(new.ch.response_prefix(), 8);
    assert_eq!(new.got, vec![(1000, 1), (1000, 3)]);
    assert_eq!(new.prefixes, vec![b"-ERR unk".to_vec(), Vec::new()]);
    assert_eq!(old.ch.response_prefix(), 0);
    assert_eq!(old.got, vec![(2000, 2)]);
    assert_eq!(old.prefixes, vec![Vec::<u8>::new()]);
    assert_eq!(srv.stats.protocol_errors.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intercept_without_response_prefix_grants_none() {
    let srv = start(ServerConfig::default()).await;
    let mut c = FakeTcpcopy::connect_prefix(srv.addr, 1, None, 64)
        .await
        .unwrap();
    c.add(1000).await;
    settle().await;
    srv.responses
        .send(answer(1000, 1, b"HTTP/1.1 200 OK\r\n"))
        .await
        .unwrap();
    c.wait_for(1).await;
    assert_eq!(c.ch.response_prefix(), 0);
    assert_eq!(c.prefixes, vec![Vec::<u8>::new()]);
    assert!(!c.ch.is_downgraded());
}
