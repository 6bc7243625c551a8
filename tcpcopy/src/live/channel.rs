//! The channel to intercept (tokio, on its own thread): `-C` connections to every `-s` address,
//! a `Hello` each, session registrations from the engine's events, response headers back to
//! the engine thread. Connections that drop are re-established with backoff and every live
//! session is registered again, so sessions go on.
//!
//! Each session is registered on one connection per intercept (chosen by a hash of the
//! session), so intercept routes each response once. This module never touches the engine:
//! it talks to the engine thread through channels only.

use super::counters::Counters;
use bytes::{Bytes, BytesMut};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tcpclone::proto::{Message, Role, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder};
use tracing::{info, warn};

/// First reconnect delay; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A `Ping` goes out after this much silence from intercept...
const PING_AFTER: Duration = Duration::from_secs(5);
/// ... and the connection is dropped after this much.
const DEAD_AFTER: Duration = Duration::from_secs(15);

/// What the engine thread tells the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToChannel {
    /// Register a session (client as the target sees it, target).
    Add(SocketAddr, SocketAddr),
    /// Unregister it.
    Remove(SocketAddr, SocketAddr),
}

/// The engine thread's handle on the channel thread.
pub struct ChannelHandle {
    /// Commands to the channel; dropping it shuts the channel down.
    pub tx: mpsc::UnboundedSender<ToChannel>,
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
    responses: crossbeam_channel::Sender<Vec<Bytes>>,
    counters: Arc<Counters>,
) -> std::io::Result<ChannelHandle> {
    let (tx, rx) = mpsc::unbounded_channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("intercept-channel".into())
        .spawn(move || {
            rt.block_on(registry(
                intercepts,
                connections,
                instance,
                rx,
                responses,
                counters,
            ));
            rt.shutdown_timeout(Duration::from_millis(200));
        })?;
    Ok(ChannelHandle { tx, thread })
}

/// Events from connection tasks to the registry.
enum ConnEvent {
    Up(usize, usize, mpsc::UnboundedSender<Message>),
    Down(usize, usize),
}

fn conn_of(client: &SocketAddr, target: &SocketAddr, connections: usize) -> usize {
    let mut h = DefaultHasher::new();
    (client, target).hash(&mut h);
    (h.finish() % connections as u64) as usize
}

async fn registry(
    intercepts: Vec<SocketAddr>,
    connections: u32,
    instance: u64,
    mut rx: mpsc::UnboundedReceiver<ToChannel>,
    responses: crossbeam_channel::Sender<Vec<Bytes>>,
    counters: Arc<Counters>,
) {
    let c = connections as usize;
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (i, addr) in intercepts.iter().enumerate() {
        for j in 0..c {
            tasks.push(tokio::spawn(connection(
                i,
                j,
                *addr,
                instance,
                ev_tx.clone(),
                responses.clone(),
                counters.clone(),
            )));
        }
    }
    drop(ev_tx);
    let mut live: HashSet<(SocketAddr, SocketAddr)> = HashSet::new();
    let mut up: HashMap<(usize, usize), mpsc::UnboundedSender<Message>> = HashMap::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let (client, target, add) = match cmd {
                    ToChannel::Add(cl, t) => (cl, t, true),
                    ToChannel::Remove(cl, t) => (cl, t, false),
                };
                if add { live.insert((client, target)); } else { live.remove(&(client, target)); }
                let j = conn_of(&client, &target, c);
                for i in 0..intercepts.len() {
                    let msg = if add { Message::SessionAdd { client, target } } else { Message::SessionRemove { client, target } };
                    match up.get(&(i, j)) {
                        Some(tx) if tx.send(msg).is_ok() => {}
                        // Registered again when the connection is back (it is in `live`).
                        _ => if add { counters.add(&counters.registrations_lost, 1) },
                    }
                }
            }
            ev = ev_rx.recv() => match ev {
                Some(ConnEvent::Up(i, j, tx)) => {
                    let mut n = 0;
                    for (client, target) in live.iter().filter(|(cl, t)| conn_of(cl, t, c) == j) {
                        let _ = tx.send(Message::SessionAdd { client: *client, target: *target });
                        n += 1;
                    }
                    if n > 0 {
                        info!(intercept = %intercepts[i], conn = j, sessions = n, "re-registered live sessions");
                    }
                    up.insert((i, j), tx);
                }
                Some(ConnEvent::Down(i, j)) => { up.remove(&(i, j)); }
                None => break,
            },
        }
    }
    for t in tasks {
        t.abort();
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    i: usize,
    j: usize,
    addr: SocketAddr,
    instance: u64,
    events: mpsc::UnboundedSender<ConnEvent>,
    responses: crossbeam_channel::Sender<Vec<Bytes>>,
    counters: Arc<Counters>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut warned = false;
    loop {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                counters.add(&counters.channel_connects, 1);
                info!(intercept = %addr, conn = j, "connected to intercept");
                warned = false;
                let (tx, rx) = mpsc::unbounded_channel();
                if events.send(ConnEvent::Up(i, j, tx)).is_err() {
                    return;
                }
                let why = serve(stream, instance, rx, &responses, &counters).await;
                let _ = events.send(ConnEvent::Down(i, j));
                counters.add(&counters.channel_failures, 1);
                warn!(intercept = %addr, conn = j, reason = %why, "intercept connection lost; reconnecting");
                if responses.is_empty() && responses.send(Vec::new()).is_err() {
                    return; // engine gone
                }
                backoff = BACKOFF_MIN;
            }
            Ok(Err(e)) => {
                counters.add(&counters.channel_failures, 1);
                if !warned {
                    warn!(intercept = %addr, error = %e, "cannot connect to intercept; retrying with backoff");
                    warned = true;
                }
            }
            Err(_) => {
                counters.add(&counters.channel_failures, 1);
                if !warned {
                    warn!(intercept = %addr, "connecting to intercept timed out; retrying with backoff");
                    warned = true;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Runs one established connection until it fails; returns why.
async fn serve(
    stream: TcpStream,
    instance: u64,
    mut rx: mpsc::UnboundedReceiver<Message>,
    responses: &crossbeam_channel::Sender<Vec<Bytes>>,
    counters: &Counters,
) -> String {
    let (mut rd, mut wr) = stream.into_split();
    let mut codec = FrameCodec;
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut wbuf = BytesMut::with_capacity(4096);
    let _ = codec.encode(
        Message::Hello {
            version: VERSION,
            role: Role::Tcpcopy,
            instance,
        },
        &mut wbuf,
    );
    if let Err(e) = wr.write_all(&wbuf).await {
        return format!("sending hello: {e}");
    }
    wbuf.clear();
    let mut greeted = false;
    let mut last_heard = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(PING_AFTER);
    loop {
        tokio::select! {
            n = rd.read_buf(&mut rbuf) => {
                match n {
                    Ok(0) => return "closed by intercept".into(),
                    Err(e) => return format!("read: {e}"),
                    Ok(_) => {}
                }
                last_heard = tokio::time::Instant::now();
                loop {
                    let msg = match codec.decode(&mut rbuf) {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(e) => return format!("bad frame: {e}"),
                    };
                    match msg {
                        Message::Hello { version, role, .. } => {
                            if version != VERSION || role != Role::Intercept {
                                return format!("peer speaks version {version} as {role:?}; want {VERSION} as Intercept");
                            }
                            greeted = true;
                        }
                        Message::Responses { headers } if greeted => {
                            counters.add(&counters.responses, headers.len() as u64);
                            if responses.send(headers).is_err() {
                                return "engine gone".into();
                            }
                        }
                        Message::Ping => {
                            let _ = codec.encode(Message::Pong, &mut wbuf);
                        }
                        Message::Pong => {}
                        other => return format!("unexpected message {}", msg_name(&other)),
                    }
                }
                if !wbuf.is_empty() {
                    if let Err(e) = wr.write_all(&wbuf).await {
                        return format!("write: {e}");
                    }
                    wbuf.clear();
                }
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { return "shutting down".into() };
                let _ = codec.encode(msg, &mut wbuf);
                // Batch whatever else is queued into the same write.
                while let Ok(m) = rx.try_recv() {
                    let _ = codec.encode(m, &mut wbuf);
                    if wbuf.len() > 256 * 1024 {
                        break;
                    }
                }
                if let Err(e) = wr.write_all(&wbuf).await {
                    return format!("write: {e}");
                }
                wbuf.clear();
            }
            _ = tick.tick() => {
                if last_heard.elapsed() >= DEAD_AFTER {
                    return format!("no word from intercept for {}s", DEAD_AFTER.as_secs());
                }
                if last_heard.elapsed() >= PING_AFTER {
                    let _ = codec.encode(Message::Ping, &mut wbuf);
                    if let Err(e) = wr.write_all(&wbuf).await {
                        return format!("write: {e}");
                    }
                    wbuf.clear();
                }
            }
        }
    }
}

fn msg_name(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "Hello",
        Message::SessionAdd { .. } => "SessionAdd",
        Message::SessionRemove { .. } => "SessionRemove",
        Message::Responses { .. } => "Responses",
        Message::Ping => "Ping",
        Message::Pong => "Pong",
    }
}

/// Adapter from the protocol codec to tokio-util framing.
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Message;
    type Error = std::io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, Self::Error> {
        shim::decode(src).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

impl Encoder<Message> for FrameCodec {
    type Error = std::io::Error;
    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), Self::Error> {
        shim::encode(&item, dst);
        Ok(())
    }
}

/// TEMPORARY stand-in for `tcpclone::proto`'s codec until helper "intercept" lands it; it does
/// not interoperate with anything else and is deleted then.
mod shim {
    use super::*;
    use bytes::{Buf, BufMut};
    use std::net::IpAddr;
    use tcpclone::proto::MAX_FRAME_LEN;

    fn put_addr(d: &mut BytesMut, a: &SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) => {
                d.put_u8(4);
                d.put_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                d.put_u8(6);
                d.put_slice(&ip.octets());
            }
        }
        d.put_u16(a.port());
    }

    fn get_addr(b: &mut &[u8]) -> Result<SocketAddr, String> {
        let fam = b.try_get_u8().map_err(|e| e.to_string())?;
        let ip: IpAddr = match fam {
            4 if b.len() >= 6 => {
                let mut o = [0u8; 4];
                b.copy_to_slice(&mut o);
                o.into()
            }
            6 if b.len() >= 18 => {
                let mut o = [0u8; 16];
                b.copy_to_slice(&mut o);
                o.into()
            }
            _ => return Err("bad address".into()),
        };
        Ok(SocketAddr::new(ip, b.get_u16()))
    }

    pub fn encode(m: &Message, d: &mut BytesMut) {
        let start = d.len();
        d.put_u32(0);
        match m {
            Message::Hello {
                version,
                role,
                instance,
            } => {
                d.put_u8(1);
                d.put_u16(*version);
                d.put_u8(matches!(role, Role::Intercept) as u8);
                d.put_u64(*instance);
            }
            Message::SessionAdd { client, target } | Message::SessionRemove { client, target } => {
                d.put_u8(if matches!(m, Message::SessionAdd { .. }) {
                    2
                } else {
                    3
                });
                put_addr(d, client);
                put_addr(d, target);
            }
            Message::Responses { headers } => {
                d.put_u8(4);
                d.put_u16(headers.len() as u16);
                for h in headers {
                    d.put_u16(h.len() as u16);
                    d.put_slice(h);
                }
            }
            Message::Ping => d.put_u8(5),
            Message::Pong => d.put_u8(6),
        }
        let len = (d.len() - start) as u32;
        d[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    pub fn decode(src: &mut BytesMut) -> Result<Option<Message>, String> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if !(5..=MAX_FRAME_LEN).contains(&len) {
            return Err(format!("frame length {len}"));
        }
        if src.len() < len {
            return Ok(None);
        }
        let frame = src.split_to(len).freeze();
        let mut b = &frame[4..];
        let t = b.get_u8();
        let m = match t {
            1 if b.len() >= 11 => Message::Hello {
                version: b.get_u16(),
                role: if b.get_u8() == 1 {
                    Role::Intercept
                } else {
                    Role::Tcpcopy
                },
                instance: b.get_u64(),
            },
            2 => Message::SessionAdd {
                client: get_addr(&mut b)?,
                target: get_addr(&mut b)?,
            },
            3 => Message::SessionRemove {
                client: get_addr(&mut b)?,
                target: get_addr(&mut b)?,
            },
            4 => {
                let n = b.try_get_u16().map_err(|e| e.to_string())?;
                let mut headers = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let l = b.try_get_u16().map_err(|e| e.to_string())? as usize;
                    if b.len() < l {
                        return Err("short response".into());
                    }
                    headers.push(Bytes::copy_from_slice(&b[..l]));
                    b.advance(l);
                }
                Message::Responses { headers }
            }
            5 => Message::Ping,
            6 => Message::Pong,
            _ => return Err(format!("bad frame type {t}")),
        };
        Ok(Some(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A fake intercept: accepts one tcpcopy connection, checks the hello, records registrations
    /// and answers each SessionAdd with one response header.
    async fn fake_intercept(l: TcpListener, adds: mpsc::UnboundedSender<Message>) {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let mut w = BytesMut::new();
            FrameCodec
                .encode(
                    Message::Hello {
                        version: VERSION,
                        role: Role::Intercept,
                        instance: 7,
                    },
                    &mut w,
                )
                .unwrap();
            s.write_all(&w).await.unwrap();
            let mut r = BytesMut::new();
            'conn: while s.read_buf(&mut r).await.unwrap() > 0 {
                while let Some(m) = FrameCodec.decode(&mut r).unwrap() {
                    if let Message::SessionAdd { .. } = m {
                        adds.send(m.clone()).unwrap();
                        let mut w = BytesMut::new();
                        let resp = Message::Responses {
                            headers: vec![Bytes::from_static(b"hdr")],
                        };
                        FrameCodec.encode(resp, &mut w).unwrap();
                        s.write_all(&w).await.unwrap();
                        // Drop the connection after the first add to force a reconnect.
                        break 'conn;
                    }
                }
            }
        }
    }

    #[test]
    fn registers_and_re_registers_after_reconnect() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let l = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = l.local_addr().unwrap();
        let (add_tx, mut add_rx) = mpsc::unbounded_channel();
        let server = std::thread::spawn(move || rt.block_on(fake_intercept(l, add_tx)));
        let counters = Arc::new(Counters::default());
        let (resp_tx, resp_rx) = crossbeam_channel::unbounded();
        let h = spawn(vec![addr], 1, 1, resp_tx, counters.clone()).unwrap();
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
        assert_eq!(r, vec![Bytes::from_static(b"hdr")]);
        // The fake drops the connection; the live session must be registered again.
        let again = add_rx.blocking_recv().unwrap();
        assert_eq!(again, first);
        assert!(Counters::get(&counters.channel_connects) >= 2);
        h.shutdown();
        drop(server);
    }
}
