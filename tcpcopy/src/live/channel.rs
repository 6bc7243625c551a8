//! The channel to intercept (tokio, on its own thread): `-C` connections to every `-s` address,
//! each driven by the sans-IO [`tcpclone::proto::client::Channel`] (hello, optional secure
//! handshake, pings, registrations replayed after a reconnect, backoff). Session registrations
//! come from the engine's events; response headers go back to the engine thread.
//!
//! Each session is registered on one connection per intercept (chosen by a hash of the
//! session), so intercept routes each response once. This module never touches the engine:
//! it talks to the engine thread through channels only.

use super::counters::Counters;
use bytes::Bytes;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tcpclone::proto::client::{Channel, Event};
use tcpclone::proto::secure::Psk;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
// The queue bounds are part of -m, which `config` checks: they live there (one home).
pub use crate::config::{COMMAND_BACKLOG, RESPONSE_BACKLOG};
/// How often a paused connection looks whether the engine has caught up.
const BACKLOG_POLL: Duration = Duration::from_millis(1);
/// Commands batched into one pass before the socket is written.
const CMD_BATCH: usize = 4096;
/// What one queued command costs: its queue slot (~72 bytes) and its share of the queue's
/// blocks, counted high.
const COMMAND_COST: u64 = 128;
/// A write to intercept that makes no progress for this long drops the connection (it is
/// rebuilt, registrations re-sent): an intercept that stops reading must not stall tcpcopy.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Last --insecure warning (all connections together): one a minute while connected, so the
/// log says it for as long as it matters.
static INSECURE_WARNED: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
/// How often the --insecure warning repeats while connected.
const INSECURE_WARN_EVERY: Duration = Duration::from_secs(60);

fn warn_insecure(addr: SocketAddr) {
    let now = std::time::Instant::now();
    let mut last = INSECURE_WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|t| now.duration_since(t) >= INSECURE_WARN_EVERY) {
        *last = Some(now);
        warn!(intercept = %addr, "--insecure: the channel to intercept is unauthenticated and unencrypted; anyone on the path can read or forge registrations and responses");
    }
}

/// The response headers of one `Responses` frame, copied out of it back to back.
///
/// The decoder hands them over as slices of the frame, and the frame is a slice of the
/// channel's read buffer: while one header waits in the queue to the engine thread it keeps
/// that whole buffer (64 KiB and more) alive, and a read that finds the buffer still shared
/// allocates a new one. With the engine a few hundred milliseconds behind, the soak saw
/// 73 MB in use in this thread's malloc arena. A copy holds only the headers' own bytes
/// (~60 each) and lets the read buffer be reused at once.
#[derive(Debug, Default)]
pub struct ResponseBatch {
    data: Vec<u8>,
    ends: Vec<u32>,
}

impl ResponseBatch {
    /// Copies `headers` into one buffer.
    pub fn copy_of(headers: &[Bytes]) -> Self {
        let mut data = Vec::with_capacity(headers.iter().map(|h| h.len()).sum());
        let mut ends = Vec::with_capacity(headers.len());
        for h in headers {
            data.extend_from_slice(h);
            ends.push(data.len() as u32);
        }
        ResponseBatch { data, ends }
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Bytes of headers held.
    pub fn bytes(&self) -> u64 {
        self.data.len() as u64
    }

    /// Whether there is no header.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The headers in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let h = &self.data[start..end as usize];
            start = end as usize;
            h
        })
    }
}

impl ResponseBatch {
    fn push(&mut self, h: &[u8]) {
        self.data.extend_from_slice(h);
        self.ends.push(self.data.len() as u32);
    }
}

/// One worker's inbox of responses.
#[derive(Debug, Clone)]
pub struct Inbox {
    /// The queue.
    pub tx: crossbeam_channel::Sender<ResponseBatch>,
    /// Rung after a batch is queued (the worker may be asleep in `poll`).
    pub wake: Option<Arc<tcpclone::sys::ring::Wake>>,
}

/// Where the channel puts what intercept reports: one inbox per worker, the one whose engine
/// owns the response's session (responses of unknown sessions go to worker 0, whose engine
/// counts them and answers them with a reset).
#[derive(Debug, Clone)]
pub struct Responses {
    inboxes: Arc<Vec<Inbox>>,
    owners: Option<crate::engine::shared::ClientOwners>,
}

impl Responses {
    /// Everything to one inbox.
    pub fn single(inbox: Inbox) -> Responses {
        Responses {
            inboxes: Arc::new(vec![inbox]),
            owners: None,
        }
    }

    /// Spread over `inboxes` by the owners' table.
    pub fn routed(inboxes: Vec<Inbox>, owners: crate::engine::shared::ClientOwners) -> Responses {
        Responses {
            inboxes: Arc::new(inboxes),
            owners: Some(owners),
        }
    }

    /// Queues `headers` for their workers; false when the workers are gone.
    fn deliver(&self, headers: &[Bytes], counters: &Counters) -> bool {
        let send = |i: usize, batch: ResponseBatch| -> bool {
            let inbox = &self.inboxes[i];
            // Counted before the worker can take it off.
            counters.add(&counters.responses_queued, batch.bytes());
            let ok = inbox.tx.send(batch).is_ok();
            if let Some(w) = &inbox.wake {
                w.notify();
            }
            ok
        };
        match &self.owners {
            Some(owners) if self.inboxes.len() > 1 => {
                let mut parts: Vec<ResponseBatch> = (0..self.inboxes.len())
                    .map(|_| ResponseBatch::default())
                    .collect();
                owners.with(|owner| {
                    for h in headers {
                        let w = crate::engine::response_owner_key(h)
                            .and_then(|(client, target)| owner(client, target))
                            .map_or(0, usize::from)
                            .min(parts.len() - 1);
                        parts[w].push(h);
                    }
                });
                let mut ok = true;
                for (i, b) in parts.into_iter().enumerate() {
                    if !b.is_empty() {
                        ok &= send(i, b);
                    }
                }
                ok
            }
            _ => send(0, ResponseBatch::copy_of(headers)),
        }
    }
}

/// What the engine thread tells the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToChannel {
    /// Register a session (client as the target sees it, target).
    Add(SocketAddr, SocketAddr),
    /// Unregister it.
    Remove(SocketAddr, SocketAddr),
}

/// The engines' end of the command queue to the channel thread, bounded by
/// [`COMMAND_BACKLOG`]. Dropping every clone shuts the channel down.
#[derive(Debug, Clone)]
pub struct CommandSender {
    tx: mpsc::UnboundedSender<ToChannel>,
    counters: Arc<Counters>,
}

impl CommandSender {
    /// Queues `cmd`; when the queue is full (intercept not reading), drops it, counts it as a
    /// registration lost and gives it back.
    pub fn send(&self, cmd: ToChannel) -> Result<(), ToChannel> {
        use std::sync::atomic::Ordering::Relaxed;
        let queued = &self.counters.commands_queued;
        if queued.load(Relaxed) * COMMAND_COST >= COMMAND_BACKLOG {
            self.counters.add(&self.counters.registrations_lost, 1);
            return Err(cmd);
        }
        queued.fetch_add(1, Relaxed);
        self.tx.send(cmd).map_err(|e| {
            queued.fetch_sub(1, Relaxed);
            e.0
        })
    }
}

/// The engine thread's handle on the channel thread.
pub struct ChannelHandle {
    /// Commands to the channel; dropping it (and its clones) shuts the channel down.
    pub tx: CommandSender,
    thread: std::thread::JoinHandle<()>,
}

impl ChannelHandle {
    /// Closes every connection and waits (briefly) for the thread.
    pub fn shutdown(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

/// A random-enough instance id for `Hello` (no RNG crate: the std hasher is randomly keyed).
pub fn instance_id() -> u64 {
    use std::hash::BuildHasher;
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::process::id().hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    h.finish()
}

/// Starts the channel thread.
pub fn spawn(
    intercepts: Vec<SocketAddr>,
    connections: u32,
    instance: u64,
    psk: Option<Psk>,
    responses: Responses,
    counters: Arc<Counters>,
) -> std::io::Result<ChannelHandle> {
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = CommandSender {
        tx,
        counters: counters.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("intercept-channel".into())
        .spawn(move || {
            // Not a capture thread: back to the ordinary priority (see --capture-nice).
            let _ = tcpclone::sys::set_thread_nice(0);
            rt.block_on(route(
                intercepts,
                connections as usize,
                instance,
                psk,
                rx,
                responses,
                counters,
            ));
            rt.shutdown_timeout(Duration::from_millis(200));
        })?;
    Ok(ChannelHandle { tx, thread })
}

fn conn_of(client: &SocketAddr, target: &SocketAddr, connections: usize) -> usize {
    let mut h = DefaultHasher::new();
    (client, target).hash(&mut h);
    (h.finish() % connections as u64) as usize
}

/// Fans the engine's registrations out to one connection per intercept.
async fn route(
    intercepts: Vec<SocketAddr>,
    c: usize,
    instance: u64,
    psk: Option<Psk>,
    mut rx: mpsc::UnboundedReceiver<ToChannel>,
    responses: Responses,
    counters: Arc<Counters>,
) {
    let queued = &counters.commands_queued;
    let mut conns: Vec<Vec<mpsc::UnboundedSender<ToChannel>>> = Vec::new();
    let mut tasks = Vec::new();
    for addr in &intercepts {
        let mut row = Vec::new();
        for j in 0..c {
            let (tx, crx) = mpsc::unbounded_channel();
            row.push(tx);
            let ch = Channel::new(instance, psk.clone());
            tasks.push(tokio::spawn(connection(
                j,
                *addr,
                ch,
                crx,
                responses.clone(),
                counters.clone(),
            )));
        }
        conns.push(row);
    }
    while let Some(cmd) = rx.recv().await {
        let (ToChannel::Add(cl, t) | ToChannel::Remove(cl, t)) = cmd;
        let j = conn_of(&cl, &t, c);
        // One command in, one copy per intercept out: each is counted until applied.
        queued.fetch_add(conns.len() as u64, std::sync::atomic::Ordering::Relaxed);
        queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        for row in &conns {
            if row[j].send(cmd).is_err() {
                queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    for t in tasks {
        t.abort();
    }
}

/// Applies one registration command to the channel (it leaves the bounded queue).
fn apply(ch: &mut Channel, cmd: ToChannel, counters: &Counters) {
    counters
        .commands_queued
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    let r = match cmd {
        ToChannel::Add(cl, t) => ch.session_add(cl, t),
        ToChannel::Remove(cl, t) => ch.session_remove(cl, t),
    };
    if let Err(e) = r {
        counters.add(&counters.registrations_lost, 1);
        warn!(error = %e, "registration refused");
    }
}

/// One connection to one intercept, for the life of the process.
async fn connection(
    j: usize,
    addr: SocketAddr,
    mut ch: Channel,
    mut cmds: mpsc::UnboundedReceiver<ToChannel>,
    responses: Responses,
    counters: Arc<Counters>,
) {
    let mut warned = false;
    loop {
        // Connect, still taking registrations (they are sent once connected).
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr));
        tokio::pin!(connect);
        let stream = loop {
            tokio::select! {
                r = &mut connect => break r,
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => apply(&mut ch, cmd, &counters),
                    None => return,
                },
            }
        };
        let why = match stream {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                // The kernel gives up on data intercept has not acknowledged for as long as a
                // stalled write is tolerated: a peer that vanished without a reset (host down,
                // path cut) is noticed even while our writes still fit in the socket buffer.
                let _ = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(WRITE_TIMEOUT));
                warned = false;
                serve(j, addr, stream, &mut ch, &mut cmds, &responses, &counters).await
            }
            Ok(Err(e)) => format!("cannot connect: {e}"),
            Err(_) => "connect timed out".to_string(),
        };
        if why.is_empty() {
            return; // shutting down
        }
        counters.add(&counters.channel_failures, 1);
        let delay = ch.disconnected(std::time::Instant::now());
        if !warned {
            warn!(intercept = %addr, conn = j, reason = %why, retry_in = ?delay, "intercept connection down; reconnecting");
            warned = true;
        }
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => apply(&mut ch, cmd, &counters),
                    None => return,
                },
            }
        }
    }
}

/// Runs one established connection until it fails; returns why ("" on shutdown).
async fn serve(
    j: usize,
    addr: SocketAddr,
    stream: TcpStream,
    ch: &mut Channel,
    cmds: &mut mpsc::UnboundedReceiver<ToChannel>,
    responses: &Responses,
    counters: &Counters,
) -> String {
    let (mut rd, mut wr) = stream.into_split();
    if let Err(e) = ch.connected(std::time::Instant::now()) {
        return e.to_string();
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut was_paused = false;
    loop {
        if ch.is_insecure() && ch.is_ready() {
            warn_insecure(addr);
        }
        // Write everything the channel has for the socket.
        while let Some(out) = ch.poll_transmit(std::time::Instant::now()) {
            match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return format!("write: {e}"),
                Err(_) => {
                    return format!(
                        "write: intercept took nothing for {} s",
                        WRITE_TIMEOUT.as_secs()
                    )
                }
            }
        }
        while let Some(ev) = ch.poll_event() {
            match ev {
                Event::Ready { version, instance } => {
                    counters.add(&counters.channel_connects, 1);
                    info!(intercept = %addr, conn = j, version, peer = format_args!("{instance:016x}"), sessions = ch.session_count(), "connected to intercept");
                }
                Event::Responses(headers) => {
                    counters.add(&counters.responses, headers.len() as u64);
                    if !responses.deliver(&headers, counters) {
                        return String::new();
                    }
                }
            }
        }
        let deadline = ch
            .poll_timeout()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        // The engine is far behind: leave intercept's answers in the socket for now.
        let paused = Counters::get(&counters.responses_queued) >= RESPONSE_BACKLOG;
        if paused && !was_paused {
            counters.add(&counters.response_pauses, 1);
        }
        was_paused = paused;
        tokio::select! {
            _ = tokio::time::sleep(BACKLOG_POLL), if paused => {}
            n = rd.read(&mut buf), if !paused => match n {
                Ok(0) => return "closed by intercept".into(),
                Err(e) => return format!("read: {e}"),
                Ok(n) => if let Err(e) = ch.handle_input(std::time::Instant::now(), &buf[..n]) {
                    return e.to_string();
                },
            },
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { return String::new() };
                apply(ch, cmd, counters);
                for _ in 0..CMD_BATCH {
                    match cmds.try_recv() {
                        Ok(cmd) => apply(ch, cmd, counters),
                        Err(_) => break,
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                if let Err(e) = ch.handle_timeout(std::time::Instant::now()) {
                    return e.to_string();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_queue_is_bounded_and_counts_what_it_drops() {
        let counters = Arc::new(Counters::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let s = CommandSender {
            tx,
            counters: counters.clone(),
        };
        let cmd = |p: u16| {
            ToChannel::Add(
                SocketAddr::from(([198, 18, 0, 1], p)),
                "198.18.0.2:80".parse().unwrap(),
            )
        };
        let cap = COMMAND_BACKLOG / COMMAND_COST;
        // Nobody takes them (intercept stopped reading): ten times the bound is offered.
        let sent = (0..10 * cap as u32)
            .filter(|&i| s.clone().send(cmd(i as u16)).is_ok())
            .count() as u64;
        assert_eq!(sent, cap);
        assert_eq!(Counters::get(&counters.registrations_lost), 9 * cap);
        // Applied commands leave the queue and make room again.
        let mut ch = Channel::new(1, None);
        for _ in 0..10 {
            let c = rx.try_recv().unwrap();
            apply(&mut ch, c, &counters);
        }
        assert_eq!(Counters::get(&counters.commands_queued), cap - 10);
        assert!(s.send(cmd(1)).is_ok());
    }

    #[test]
    fn response_batch_is_a_compact_copy_in_order() {
        let frame = Bytes::from((0u8..200).collect::<Vec<u8>>());
        let headers = vec![
            frame.slice(0..40),
            frame.slice(40..100),
            frame.slice(150..200),
        ];
        let b = ResponseBatch::copy_of(&headers);
        drop(headers);
        assert_eq!(b.len(), 3);
        let got: Vec<&[u8]> = b.iter().collect();
        assert_eq!(got, vec![&frame[0..40], &frame[40..100], &frame[150..200]]);
        // Only the headers' bytes are held, not the frame they came from.
        assert_eq!(b.data.capacity(), 150);
        assert!(ResponseBatch::copy_of(&[]).is_empty());
    }
    use bytes::BytesMut;
    use tcpclone::proto::{encode, Decoder, Message, Role, VERSION};

    /// IPv4 + TCP headers of a response from `target` to `client` (ACK).
    fn response(client: SocketAddr, target: SocketAddr) -> Bytes {
        let (SocketAddr::V4(c), SocketAddr::V4(t)) = (client, target) else {
            unreachable!()
        };
        let mut h = vec![0u8; 40];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&40u16.to_be_bytes());
        h[8] = 64;
        h[9] = 6;
        h[12..16].copy_from_slice(&t.ip().octets());
        h[16..20].copy_from_slice(&c.ip().octets());
        h[20..22].copy_from_slice(&t.port().to_be_bytes());
        h[22..24].copy_from_slice(&c.port().to_be_bytes());
        h[32] = 0x50;
        h[33] = 0x10;
        Bytes::from(h)
    }

    #[test]
    fn responses_reach_the_worker_that_owns_the_session() {
        let (workers, owners) = crate::engine::shared::SharedClients::group(3);
        let target: SocketAddr = "198.18.1.2:6380".parse().unwrap();
        let clients: Vec<SocketAddr> = (0..3)
            .map(|i| format!("198.18.10.2:{}", 40000 + i).parse().unwrap())
            .collect();
        // Client i is owned by worker 2 - i.
        for (i, c) in clients.iter().enumerate() {
            assert!(workers[2 - i].claim(*c, target));
        }
        let wakes: Vec<_> = (0..3)
            .map(|_| Arc::new(tcpclone::sys::ring::Wake::new().unwrap()))
            .collect();
        let mut rxs = Vec::new();
        let inboxes = wakes
            .iter()
            .map(|w| {
                let (tx, rx) = crossbeam_channel::unbounded();
                rxs.push(rx);
                Inbox {
                    tx,
                    wake: Some(w.clone()),
                }
            })
            .collect();
        let r = Responses::routed(inboxes, owners);
        let stranger: SocketAddr = "198.18.10.9:1234".parse().unwrap();
        let headers = vec![
            response(clients[0], target),
            response(clients[1], target),
            response(stranger, target),
            response(clients[0], target),
        ];
        let counters = Counters::default();
        wakes[1].park();
        assert!(r.deliver(&headers, &counters));
        let got: Vec<Vec<Vec<u8>>> = rxs
            .iter()
            .map(|rx| {
                rx.try_iter()
                    .flat_map(|b| b.iter().map(<[u8]>::to_vec).collect::<Vec<_>>())
                    .collect()
            })
            .collect();
        assert_eq!(got[2], vec![headers[0].to_vec(), headers[3].to_vec()]);
        assert_eq!(got[1], vec![headers[1].to_vec()]);
        assert_eq!(
            got[0],
            vec![headers[2].to_vec()],
            "unknown sessions: worker 0"
        );
        let mut ready = Vec::new();
        tcpclone::sys::ring::poll_many(&[wakes[1].fd()], 0, &mut ready).unwrap();
        assert_eq!(ready, vec![true], "the parked worker was woken");
        assert_eq!(
            Counters::get(&counters.responses_queued),
            40 * 4,
            "queued bytes counted for the backlog limit"
        );
    }
    use tokio::net::TcpListener;

    /// A fake intercept: answers the hello, records registrations, answers each SessionAdd
    /// with one response header, and drops the first connection after its first add.
    async fn fake_intercept(l: TcpListener, adds: mpsc::UnboundedSender<Message>) {
        let mut first = true;
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let mut w = BytesMut::new();
            encode(
                &Message::Hello {
                    version: VERSION,
                    role: Role::Intercept,
                    instance: 7,
                },
                &mut w,
            )
            .unwrap();
            s.write_all(&w).await.unwrap();
            let mut dec = Decoder::new();
            let mut r = BytesMut::new();
            'conn: while s.read_buf(&mut r).await.unwrap() > 0 {
                while let Some(m) = dec.decode(&mut r).unwrap() {
                    if let Message::SessionAdd { .. } = m {
                        adds.send(m.clone()).unwrap();
                        // A real IPv4+TCP header (the decoder checks it).
                        let mut h = vec![0u8; 40];
                        h[0] = 0x45;
                        h[2..4].copy_from_slice(&40u16.to_be_bytes());
                        h[9] = 6;
                        h[32] = 0x50;
                        let mut w = BytesMut::new();
                        encode(
                            &Message::Responses {
                                headers: vec![Bytes::from(h)],
                            },
                            &mut w,
                        )
                        .unwrap();
                        s.write_all(&w).await.unwrap();
                        if first {
                            first = false;
                            break 'conn;
                        }
                    }
                }
            }
        }
    }

    /// A channel (one connection) to a [`fake_intercept`] on its own thread: the handle, the
    /// registrations the fake saw, the responses for the engine, and the counters.
    fn channel_to_fake_intercept() -> (
        ChannelHandle,
        mpsc::UnboundedReceiver<Message>,
        crossbeam_channel::Receiver<ResponseBatch>,
        Arc<Counters>,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let l = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = l.local_addr().unwrap();
        let (add_tx, add_rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || rt.block_on(fake_intercept(l, add_tx)));
        let counters = Arc::new(Counters::default());
        let (resp_tx, resp_rx) = crossbeam_channel::unbounded();
        let h = spawn(
            vec![addr],
            1,
            1,
            None,
            Responses::single(Inbox {
                tx: resp_tx,
                wake: None,
            }),
            counters.clone(),
        )
        .unwrap();
        (h, add_rx, resp_rx, counters)
    }

    #[test]
    fn stops_reading_while_the_engine_is_a_backlog_behind() {
        let (h, mut add_rx, resp_rx, counters) = channel_to_fake_intercept();
        let cl: SocketAddr = "198.18.10.2:40000".parse().unwrap();
        let t: SocketAddr = "198.18.1.2:6379".parse().unwrap();
        h.tx.send(ToChannel::Add(cl, t)).unwrap();
        add_rx.blocking_recv().unwrap();
        let r = resp_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(Counters::get(&counters.responses_queued), r.bytes());
        // The engine is now a whole backlog behind: the fake intercept closed the connection
        // after its answer, but nothing is read, so no reconnect and no second answer.
        counters.add(&counters.responses_queued, RESPONSE_BACKLOG);
        std::thread::sleep(Duration::from_millis(300));
        assert!(resp_rx.recv_timeout(Duration::from_millis(300)).is_err());
        assert_eq!(Counters::get(&counters.channel_connects), 1);
        assert_eq!(Counters::get(&counters.response_pauses), 1);
        // Caught up: reading goes on, the close is seen, the session registered again.
        counters.sub(&counters.responses_queued, RESPONSE_BACKLOG + r.bytes());
        assert!(resp_rx.recv_timeout(Duration::from_secs(5)).is_ok());
        assert!(Counters::get(&counters.channel_connects) >= 2);
        h.shutdown();
    }

    #[test]
    fn registers_and_re_registers_after_reconnect() {
        let (h, mut add_rx, resp_rx, counters) = channel_to_fake_intercept();
        let cl: SocketAddr = "198.18.10.2:40000".parse().unwrap();
        let t: SocketAddr = "198.18.1.2:6379".parse().unwrap();
        h.tx.send(ToChannel::Add(cl, t)).unwrap();
        let first = add_rx.blocking_recv().unwrap();
        assert_eq!(
            first,
            Message::SessionAdd {
                client: cl,
                target: t
            }
        );
        let r = resp_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r.iter().next().map(|h| h.len()), Some(40));
        // The fake dropped the connection: the live session must be registered again.
        let again = add_rx.blocking_recv().unwrap();
        assert_eq!(again, first);
        assert!(resp_rx.recv_timeout(Duration::from_secs(5)).is_ok());
        assert!(Counters::get(&counters.channel_connects) >= 2);
        h.shutdown();
    }
}
