//! intercept's TCP server: accepts tcpcopy connections, runs the opening (secure handshake and
//! `Hello`), feeds registrations to the router task and streams `Responses` batches back.
//!
//! Defences, each counted in [`Stats`]: an allow-list of peer networks checked before any
//! byte is read; at most `max_pending` connections that have not finished their opening (a
//! new one evicts the oldest); the opening must finish within `handshake_timeout`; a frame
//! once started must complete within `frame_timeout`; an established peer silent for
//! `idle_timeout` is closed; a peer that does not read its responses for `write_timeout` is
//! closed, and batches it cannot take meanwhile are dropped and counted; EMFILE on accept backs
//! off instead of spinning. A malformed frame closes that connection with one log line.

use crate::batch::HeaderBatch;
use crate::router::{PeerId, Router, RouterConfig, SessionKey};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tcpclone::proto::secure::{Psk, SecureChannel};
use tcpclone::proto::{encode, FrameDecoder, Message, Role, MIN_VERSION, VERSION, VERSION_PREFIX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{sleep_until, timeout, Instant};

/// Largest frame intercept accepts from tcpcopy (it never receives `Responses`).
pub const MAX_INBOUND_FRAME: usize = 4096;

/// Server limits and timings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Pre-shared key: when set, every connection must complete the Noise handshake.
    pub psk: Option<Psk>,
    /// Peer networks allowed to connect (empty: all).
    pub allow: Vec<ipnet::IpNet>,
    /// Time allowed from accept to a valid `Hello` (secure handshake included).
    pub handshake_timeout: Duration,
    /// Time allowed for a frame (or secure record) to arrive once its first byte has.
    pub frame_timeout: Duration,
    /// An established peer silent this long is closed.
    pub idle_timeout: Duration,
    /// A peer not taking our bytes for this long is closed.
    pub write_timeout: Duration,
    /// Most connections still in their opening; a new one evicts the oldest.
    pub max_pending: usize,
    /// Most established tcpcopy connections.
    pub max_peers: usize,
    /// `Responses` frames queued per connection before batches are dropped.
    pub peer_queue: usize,
    /// Router limits.
    pub router: RouterConfig,
    /// This intercept's instance id (sent in `Hello`).
    pub instance: u64,
    /// `--response-prefix`: most payload bytes per response granted to a tcpcopy that asks
    /// (0: none; the capture must keep that many bytes after each header).
    pub response_prefix: u16,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            psk: None,
            allow: Vec::new(),
            handshake_timeout: tcpclone::proto::client::HANDSHAKE_TIMEOUT,
            frame_timeout: Duration::from_secs(5),
            idle_timeout: 2 * tcpclone::proto::client::PEER_TIMEOUT,
            write_timeout: Duration::from_secs(10),
            max_pending: 128,
            max_peers: 1024,
            peer_queue: 1024,
            router: RouterConfig::default(),
            instance: 0,
            response_prefix: 0,
        }
    }
}

/// Counters shared by the captures, the router and the connections.
#[derive(Debug, Default)]
pub struct Stats {
    /// Packets delivered by the capture (all devices).
    pub captured: AtomicU64,
    /// Captured packets that were not a complete IP + TCP header.
    pub not_tcp: AtomicU64,
    /// Packets the kernel dropped before capture (ring or pcap stats).
    pub kernel_drops: AtomicU64,
    /// Responses the router refused as malformed (not a valid IP + TCP header).
    pub malformed: AtomicU64,
    /// Responses routed to their owner.
    pub routed: AtomicU64,
    /// Responses parked (no owner yet).
    pub parked: AtomicU64,
    /// Parked responses later delivered.
    pub unparked: AtomicU64,
    /// Responses dropped: no owner appeared in time, or parking was full.
    pub dropped_unknown: AtomicU64,
    /// Responses dropped because their connection was not reading fast enough.
    pub dropped_slow_peer: AtomicU64,
    /// Responses of sessions removed lately, routed to the connection that removed them.
    pub routed_after_remove: AtomicU64,
    /// Sessions registered now.
    pub sessions: AtomicU64,
    /// Registrations refused (session limit).
    pub sessions_refused: AtomicU64,
    /// Registrations refused because another tcpcopy instance owns the session.
    pub sessions_owned_elsewhere: AtomicU64,
    /// Registrations refused because the connection holds `--max-sessions-per-peer` already.
    pub sessions_over_peer_cap: AtomicU64,
    /// tcpcopy connections established now.
    pub peers_now: AtomicU64,
    /// tcpcopy connections established since start.
    pub peers_total: AtomicU64,
    /// Connections refused by the allow-list.
    pub rejected_not_allowed: AtomicU64,
    /// Connections closed because the pending cap was reached (oldest evicted) or max peers.
    pub rejected_cap: AtomicU64,
    /// Openings that failed authentication or sent a bad `Hello`.
    pub handshake_failed: AtomicU64,
    /// Openings that did not finish in time.
    pub handshake_timeout: AtomicU64,
    /// Established connections closed for a malformed or out-of-place frame, or a stalled one.
    pub protocol_errors: AtomicU64,
    /// accept() failures (EMFILE and friends).
    pub accept_errors: AtomicU64,
    /// Capture read errors (e.g. the interface went down).
    pub capture_errors: AtomicU64,
    /// Capture handles reopened after an error.
    pub capture_reopens: AtomicU64,
}

impl Stats {
    /// One line with every counter, for `--stats` and the final summary.
    pub fn line(&self) -> String {
        let g = |a: &AtomicU64| a.load(Relaxed);
        format!(
            "captured {} (not tcp {}, malformed {}, kernel drops {}), routed {}, parked {} (delivered later {}), \
             dropped unknown {}, dropped slow peer {}, late for removed sessions {}, sessions {} (refused {}, owned elsewhere {}, over peer cap {}), peers {} now / {} total, \
             rejected: not allowed {}, over cap {}, auth/hello failed {}, handshake timeout {}, \
             protocol errors {}, accept errors {}, capture errors {} (reopened {})",
            g(&self.captured),
            g(&self.not_tcp),
            g(&self.malformed),
            g(&self.kernel_drops),
            g(&self.routed),
            g(&self.parked),
            g(&self.unparked),
            g(&self.dropped_unknown),
            g(&self.dropped_slow_peer),
            g(&self.routed_after_remove),
            g(&self.sessions),
            g(&self.sessions_refused),
            g(&self.sessions_owned_elsewhere),
            g(&self.sessions_over_peer_cap),
            g(&self.peers_now),
            g(&self.peers_total),
            g(&self.rejected_not_allowed),
            g(&self.rejected_cap),
            g(&self.handshake_failed),
            g(&self.handshake_timeout),
            g(&self.protocol_errors),
            g(&self.accept_errors),
            g(&self.capture_errors),
            g(&self.capture_reopens),
        )
    }
}

enum Control {
    Up(PeerId, u64, mpsc::Sender<Bytes>),
    Down(PeerId),
    Add(PeerId, SessionKey),
    Remove(PeerId, SessionKey),
    Prefix(PeerId, usize),
}

/// Connections still in their opening, oldest first, so a new one can evict the oldest.
#[derive(Default)]
struct Pending {
    conns: Mutex<BTreeMap<u64, Arc<Notify>>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Notify>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Most responses the router takes from its queue before it flushes and looks at
/// registrations again.
const RESPONSES_PER_ROUND: usize = 1024;

/// Serves tcpcopy connections on `listener` until `shutdown` turns true. Responses (batches of
/// IP + TCP headers) come from `responses` (the captures, or a test).
pub async fn serve(
    listener: TcpListener,
    cfg: ServerConfig,
    responses: mpsc::Receiver<HeaderBatch>,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg = Arc::new(cfg);
    let (ctl_tx, ctl_rx) = mpsc::channel::<Control>(65_536);
    let router = tokio::spawn(router_task(
        cfg.router.clone(),
        responses,
        ctl_rx,
        stats.clone(),
    ));
    let pending = Arc::new(Pending::default());
    let mut next_id: u64 = 1;
    let mut last_warn: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            a = listener.accept() => a,
        };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                stats.accept_errors.fetch_add(1, Relaxed);
                let fd_limit = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                // Out of descriptors: shed the oldest quarter of the connections that have not
                // authenticated yet (they are what an fd flood is made of), then back off.
                let mut shed = 0;
                if fd_limit {
                    let mut p = pending.lock();
                    let n = p.len().div_ceil(4);
                    for _ in 0..n {
                        if let Some((_, w)) = p.pop_first() {
                            w.notify_one();
                            shed += 1;
                        }
                    }
                    stats.rejected_cap.fetch_add(shed, Relaxed);
                }
                if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(
                        "accept failed: {e}{}",
                        if fd_limit {
                            "; backing off and closing the oldest unauthenticated connections"
                        } else {
                            ""
                        }
                    );
                    last_warn = Some(Instant::now());
                }
                let pause = match (fd_limit, shed) {
                    (false, _) => 5,
                    (true, 0) => 100,
                    (true, _) => 10,
                };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                continue;
            }
        };
        let ip = addr.ip().to_canonical();
        if !cfg.allow.is_empty() && !cfg.allow.iter().any(|n| n.contains(&ip)) {
            stats.rejected_not_allowed.fetch_add(1, Relaxed);
            tracing::debug!("{addr}: not in --allow, closed");
            continue;
        }
        let id = next_id;
        next_id += 1;
        let evict = Arc::new(Notify::new());
        {
            let mut p = pending.lock();
            while p.len() >= cfg.max_pending.max(1) {
                if let Some((_, n)) = p.pop_first() {
                    n.notify_one();
                    stats.rejected_cap.fetch_add(1, Relaxed);
                }
            }
            p.insert(id, evict.clone());
        }
        let _ = stream.set_nodelay(true);
        let conn = PeerConn {
            id,
            addr,
            stream,
            cfg: cfg.clone(),
            ctl: ctl_tx.clone(),
            stats: stats.clone(),
            pending: pending.clone(),
        };
        let sd = shutdown.clone();
        tokio::spawn(async move { conn.run(evict, sd).await });
    }
    drop(ctl_tx);
    router.abort();
}

async fn router_task(
    cfg: RouterConfig,
    mut responses: mpsc::Receiver<HeaderBatch>,
    mut ctl: mpsc::Receiver<Control>,
    stats: Arc<Stats>,
) {
    let mut router = Router::new(cfg);
    let mut peers: HashMap<PeerId, mpsc::Sender<Bytes>> = HashMap::new();
    let mut capture_open = true;
    let apply = |router: &mut Router,
                 peers: &mut HashMap<PeerId, mpsc::Sender<Bytes>>,
                 c: Control| match c {
        Control::Up(id, instance, tx) => {
            router.add_peer(id, instance);
            peers.insert(id, tx);
        }
        Control::Down(id) => {
            router.remove_peer(std::time::Instant::now(), id);
            peers.remove(&id);
        }
        Control::Add(id, k) => router.session_add(std::time::Instant::now(), id, k),
        Control::Remove(id, k) => router.session_remove(std::time::Instant::now(), id, k),
        Control::Prefix(id, n) => router.set_prefix(id, n),
    };
    // Memory a past peak of sessions left in the router's maps, and the allocator's free
    // pages, go back now and then.
    let mut shrink = tokio::time::interval(Duration::from_secs(5));
    shrink.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = router.poll_timeout();
        tokio::select! {
            _ = shrink.tick() => {
                router.shrink();
                tcpclone::sys::release_free_memory();
            }
            c = ctl.recv() => {
                let Some(c) = c else { break };
                apply(&mut router, &mut peers, c);
                for _ in 0..1024 {
                    match ctl.try_recv() {
                        Ok(c) => apply(&mut router, &mut peers, c),
                        Err(_) => break,
                    }
                }
            }
            r = responses.recv(), if capture_open => {
                match r {
                    None => capture_open = false,
                    Some(b) => {
                        let now = std::time::Instant::now();
                        router.handle_responses(now, &b);
                        // Counted in headers, not batches: a round stays as long as it was
                        // when every header came alone.
                        let mut taken = b.len();
                        while taken < RESPONSES_PER_ROUND {
                            match responses.try_recv() {
                                Ok(b) => {
                                    router.handle_responses(now, &b);
                                    taken += b.len().max(1);
                                }
                                Err(_) => break,
                            }
                        }
                    }
                }
            }
            _ = sleep_until(deadline.map(Instant::from_std).unwrap_or_else(Instant::now)), if deadline.is_some() => {
                router.expire(std::time::Instant::now());
            }
        }
        // Batches close as soon as the input queue is drained: under load they fill up, when
        // idle a response leaves at once (well under the 1 ms budget).
        router.flush();
        while let Some((peer, frame)) = router.poll_transmit() {
            if let Some(tx) = peers.get(&peer) {
                if let Err(mpsc::error::TrySendError::Full(f)) = tx.try_send(frame) {
                    let n = u16::from_be_bytes([f[5], f[6]]);
                    stats.dropped_slow_peer.fetch_add(u64::from(n), Relaxed);
                }
            }
        }
        let c = router.counters();
        stats.routed.store(c.routed, Relaxed);
        stats.parked.store(c.parked, Relaxed);
        stats.unparked.store(c.unparked, Relaxed);
        stats.dropped_unknown.store(c.dropped_unknown, Relaxed);
        stats
            .routed_after_remove
            .store(c.routed_after_remove, Relaxed);
        stats.sessions.store(c.sessions, Relaxed);
        stats.sessions_refused.store(c.sessions_refused, Relaxed);
        stats
            .sessions_owned_elsewhere
            .store(c.sessions_owned_elsewhere, Relaxed);
        stats
            .sessions_over_peer_cap
            .store(c.sessions_over_peer_cap, Relaxed);
        stats.malformed.store(c.malformed, Relaxed);
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum ConnEnd {
    Eof,
    Shutdown,
    Evicted,
    Timeout(&'static str),
    Io(std::io::Error),
    Bad(String),
}

struct PeerConn {
    id: PeerId,
    addr: SocketAddr,
    stream: TcpStream,
    cfg: Arc<ServerConfig>,
    ctl: mpsc::Sender<Control>,
    stats: Arc<Stats>,
    pending: Arc<Pending>,
}

impl PeerConn {
    async fn run(mut self, evict: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(self.cfg.peer_queue.max(1));
        let mut secure = match &self.cfg.psk {
            Some(p) => match SecureChannel::responder(p) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!("{}: cannot start the secure channel: {e}", self.addr);
                    return;
                }
            },
            None => None,
        };
        let mut decoder = FrameDecoder::with_max_frame_len(MAX_INBOUND_FRAME);
        let mut input = BytesMut::with_capacity(4096);
        let mut plain = BytesMut::new();
        let mut out = BytesMut::new();
        let opened = Instant::now();
        let mut ready = false;
        let mut peer_instance = 0u64;
        // The version agreed in the opening: the lower of the peer's and ours.
        let mut version = MIN_VERSION;
        let mut options_seen = false;
        let mut last_rx = opened;
        let mut partial_since: Option<Instant> = None;
        let mut evict_fut = Box::pin(evict.notified());
        let (mut rd, mut wr) = self.stream.split();

        let end: ConnEnd = 'conn: loop {
            let deadline = if ready {
                let idle = last_rx + self.cfg.idle_timeout;
                partial_since.map_or(idle, |t| idle.min(t + self.cfg.frame_timeout))
            } else {
                opened + self.cfg.handshake_timeout
            };
            input.reserve(8192);
            tokio::select! {
                _ = shutdown.changed() => break ConnEnd::Shutdown,
                _ = &mut evict_fut, if !ready => break ConnEnd::Evicted,
                _ = sleep_until(deadline) => {
                    break ConnEnd::Timeout(if !ready { "opening" } else if partial_since.is_some_and(|t| t + self.cfg.frame_timeout <= Instant::now()) { "frame" } else { "idle" });
                }
                f = out_rx.recv(), if ready => {
                    let Some(f) = f else { break ConnEnd::Shutdown };
                    let mut frames = vec![f];
                    while let Ok(f) = out_rx.try_recv() {
                        frames.push(f);
                        if frames.len() >= 64 { break; }
                    }
                    for f in frames {
                        match &mut secure {
                            None => out.extend_from_slice(&f),
                            Some(s) => if let Err(e) = s.write(&f, &mut out) { break 'conn ConnEnd::Bad(e.to_string()) },
                        }
                    }
                }
                r = rd.read_buf(&mut input) => {
                    match r {
                        Ok(0) => break ConnEnd::Eof,
                        Err(e) => break ConnEnd::Io(e),
                        Ok(_) => {}
                    }
                    let now = Instant::now();
                    last_rx = now;
                    match &mut secure {
                        None => plain.unsplit(input.split()),
                        Some(s) => if let Err(e) = s.read(&mut input, &mut plain, &mut out) {
                            break ConnEnd::Bad(e.to_string());
                        },
                    }
                    loop {
                        let m = match decoder.decode(&mut plain) {
                            Ok(Some(m)) => m,
                            Ok(None) => break,
                            Err(e) => break 'conn ConnEnd::Bad(e.to_string()),
                        };
                        if !ready {
                            match m {
                                Message::Hello { version: v @ MIN_VERSION.., role: Role::Tcpcopy, instance } => {
                                    version = v.min(VERSION);
                                    if secure.as_ref().is_some_and(|s| !s.is_established()) {
                                        break 'conn ConnEnd::Bad("Hello before the secure handshake".into());
                                    }
                                    if self.stats.peers_now.load(Relaxed) >= self.cfg.max_peers as u64 {
                                        self.stats.rejected_cap.fetch_add(1, Relaxed);
                                        break 'conn ConnEnd::Bad("too many tcpcopy connections".into());
                                    }
                                    let hello = Message::Hello { version, role: Role::Intercept, instance: self.cfg.instance };
                                    let mut f = BytesMut::new();
                                    if encode(&hello, &mut f).is_err() { break 'conn ConnEnd::Bad("encode".into()) }
                                    match &mut secure {
                                        None => out.extend_from_slice(&f),
                                        Some(s) => if let Err(e) = s.write(&f, &mut out) { break 'conn ConnEnd::Bad(e.to_string()) },
                                    }
                                    if self.ctl.send(Control::Up(self.id, instance, out_tx.clone())).await.is_err() {
                                        break 'conn ConnEnd::Shutdown;
                                    }
                                    self.pending.lock().remove(&self.id);
                                    ready = true;
                                    peer_instance = instance;
                                    self.stats.peers_now.fetch_add(1, Relaxed);
                                    self.stats.peers_total.fetch_add(1, Relaxed);
                                    tracing::info!("{}: tcpcopy {instance:016x} connected{}", self.addr, if secure.is_some() { " (authenticated)" } else { "" });
                                }
                                Message::Hello { version, role: Role::Tcpcopy, .. } => {
                                    break 'conn ConnEnd::Bad(format!("protocol version {version}, we speak {MIN_VERSION} to {VERSION}"));
                                }
                                other => break 'conn ConnEnd::Bad(format!("{} before Hello", other.name())),
                            }
                            continue;
                        }
                        let c = match m {
                            Message::SessionAdd { client, target } => Control::Add(self.id, SessionKey { client, target }),
                            Message::SessionRemove { client, target } => Control::Remove(self.id, SessionKey { client, target }),
                            Message::Ping => {
                                let mut f = BytesMut::new();
                                let _ = encode(&Message::Pong, &mut f);
                                match &mut secure {
                                    None => out.extend_from_slice(&f),
                                    Some(s) => if let Err(e) = s.write(&f, &mut out) { break 'conn ConnEnd::Bad(e.to_string()) },
                                }
                                continue;
                            }
                            Message::Pong => continue,
                            // Version 2: once, the prefix tcpcopy wants; we grant what
                            // --response-prefix allows and say so.
                            Message::Options { response_prefix } if version >= VERSION_PREFIX && !options_seen => {
                                options_seen = true;
                                let granted = response_prefix.min(self.cfg.response_prefix);
                                let mut f = BytesMut::new();
                                let _ = encode(&Message::Options { response_prefix: granted }, &mut f);
                                match &mut secure {
                                    None => out.extend_from_slice(&f),
                                    Some(s) => if let Err(e) = s.write(&f, &mut out) { break 'conn ConnEnd::Bad(e.to_string()) },
                                }
                                if response_prefix > 0 && granted == 0 {
                                    tracing::info!("{}: tcpcopy asked for response prefixes; this intercept runs without --response-prefix: headers only", self.addr);
                                }
                                Control::Prefix(self.id, usize::from(granted))
                            }
                            other => break 'conn ConnEnd::Bad(format!("unexpected {} from tcpcopy", other.name())),
                        };
                        if self.ctl.send(c).await.is_err() {
                            break 'conn ConnEnd::Shutdown;
                        }
                    }
                    let partial = !plain.is_empty() || !input.is_empty();
                    partial_since = if partial { partial_since.or(Some(now)) } else { None };
                }
            }
            if !out.is_empty() {
                match timeout(self.cfg.write_timeout, wr.write_all(&out)).await {
                    Ok(Ok(())) => out.clear(),
                    Ok(Err(e)) => break ConnEnd::Io(e),
                    Err(_) => break ConnEnd::Timeout("write"),
                }
            }
        };

        self.pending.lock().remove(&self.id);
        if ready {
            self.stats.peers_now.fetch_sub(1, Relaxed);
            let _ = self.ctl.send(Control::Down(self.id)).await;
        }
        let who = if ready {
            format!("tcpcopy {peer_instance:016x} at {}", self.addr)
        } else {
            format!("{} (not authenticated)", self.addr)
        };
        match end {
            ConnEnd::Eof => tracing::info!("{who}: closed by peer"),
            ConnEnd::Shutdown => {}
            ConnEnd::Evicted => tracing::debug!("{who}: evicted (too many pending connections)"),
            ConnEnd::Timeout(what) => {
                if !ready {
                    self.stats.handshake_timeout.fetch_add(1, Relaxed);
                } else {
                    self.stats.protocol_errors.fetch_add(1, Relaxed);
                }
                tracing::warn!("{who}: closed: {what} timeout");
            }
            ConnEnd::Io(e) => tracing::info!("{who}: connection error: {e}"),
            ConnEnd::Bad(why) => {
                if ready {
                    self.stats.protocol_errors.fetch_add(1, Relaxed);
                } else {
                    self.stats.handshake_failed.fetch_add(1, Relaxed);
                }
                tracing::warn!("{who}: closed: {why}");
            }
        }
    }
}
