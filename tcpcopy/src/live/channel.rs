//! The channel to intercept, driven by each worker in its own poll loop: `-C` connections to
//! every `-s` address, each run by the sans-IO [`tcpclone::proto::client::Channel`] (hello,
//! optional secure handshake, pings, registrations replayed after a reconnect, backoff).
//!
//! Every worker holds its own connections. It registers the sessions its engine clones on
//! them, and intercept sends each response on the connection that registered its session
//! (`intercept/src/router.rs`), so a response arrives at the worker that owns it: no other
//! thread, no queue, no copy and no hand-off between a response and the engine. A thread of
//! its own for the channel cost a third of tcpcopy's CPU on a busy redis, most of it in waking
//! up (docs/benchmarks.md, "tcpcopy's threads on the redis load").
//!
//! The sockets are non-blocking; the worker polls their descriptors with its rings and calls
//! [`InterceptLink::pump`] every round. This module never blocks and never touches the engine:
//! response headers go to the caller's closure.

use super::counters::Counters;
use bytes::Bytes;
use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcpclone::proto::client::{Channel, Event};
use tcpclone::proto::secure::Psk;
use tcpclone::sys::ring::PollFd;
use tracing::{info, warn};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
// The bound on unsent registrations is part of -m, which `config` checks: it lives there.
pub use crate::config::COMMAND_BACKLOG;
/// A write to intercept that makes no progress for this long drops the connection (it is
/// rebuilt, registrations re-sent): an intercept that stops reading must not stall tcpcopy.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from one connection per call; also the read buffer's size.
pub const READ_CHUNK: usize = 64 * 1024;
/// Reads per connection per round at most: a busy intercept must not keep the worker from its
/// capture (the rest waits in the socket, and TCP holds intercept back).
const READS_PER_ROUND: usize = 8;
/// Messages handed to one `writev` at most.
const WRITE_IOV: usize = 64;

/// Last --insecure warning (all connections together): one a minute while connected, so the
/// log says it for as long as it matters.
static INSECURE_WARNED: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
/// How often the --insecure warning repeats while connected.
const INSECURE_WARN_EVERY: Duration = Duration::from_secs(60);

fn warn_insecure(addr: SocketAddr) {
    let now = Instant::now();
    let mut last = INSECURE_WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|t| now.duration_since(t) >= INSECURE_WARN_EVERY) {
        *last = Some(now);
        warn!(intercept = %addr, "--insecure: the channel to intercept is unauthenticated and unencrypted; anyone on the path can read or forge registrations and responses");
    }
}

/// What the engine tells the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToChannel {
    /// Register a session (client as the target sees it, target).
    Add(SocketAddr, SocketAddr),
    /// Unregister it.
    Remove(SocketAddr, SocketAddr),
}

/// A random-enough instance id for `Hello` (no RNG crate: the std hasher is randomly keyed).
/// One per process: every worker's connections say the same, so intercept sees one tcpcopy.
pub fn instance_id() -> u64 {
    use std::hash::BuildHasher;
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::process::id().hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    h.finish()
}

/// Where one connection stands.
enum Link {
    /// Not connected; the next attempt at `retry_at`.
    Down { retry_at: Instant },
    /// A non-blocking connect in progress, given up at `deadline`.
    Connecting {
        sock: socket2::Socket,
        deadline: Instant,
    },
    /// Connected.
    Up(TcpStream),
}

/// One connection to one intercept, for the life of the worker.
struct Conn {
    addr: SocketAddr,
    /// Its index among the connections to `addr`.
    j: usize,
    ch: Channel,
    link: Link,
    /// What the channel produced and the socket has not taken yet, in order.
    unsent: VecDeque<Bytes>,
    /// Bytes in `unsent`.
    unsent_bytes: u64,
    /// How much of `unsent`'s front the socket has taken.
    front_written: usize,
    /// Since when `unsent` has been waiting without the socket taking anything.
    stalled_since: Option<Instant>,
    /// The last failure was logged (one line per outage, not per retry).
    warned: bool,
}

impl Conn {
    fn take_transmit(&mut self, now: Instant) {
        while let Some(b) = self.ch.poll_transmit(now) {
            self.unsent_bytes += b.len() as u64;
            self.unsent.push_back(b);
        }
    }

    fn fail(&mut self, now: Instant, why: &str, counters: &Counters) {
        counters.add(&counters.channel_failures, 1);
        let delay = self.ch.disconnected(now);
        self.unsent.clear();
        self.unsent_bytes = 0;
        self.front_written = 0;
        self.stalled_since = None;
        self.link = Link::Down {
            retry_at: now + delay,
        };
        if !self.warned {
            warn!(intercept = %self.addr, conn = self.j, reason = %why, retry_in = ?delay, "intercept connection down; reconnecting");
            self.warned = true;
        }
    }

    /// Starts a non-blocking connect.
    fn connect(&mut self, now: Instant, counters: &Counters) {
        let start = || -> std::io::Result<socket2::Socket> {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(self.addr),
                socket2::Type::STREAM.cloexec(),
                Some(socket2::Protocol::TCP),
            )?;
            sock.set_nonblocking(true)?;
            match sock.connect(&self.addr.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            Ok(sock)
        };
        match start() {
            Ok(sock) => {
                self.link = Link::Connecting {
                    sock,
                    deadline: now + CONNECT_TIMEOUT,
                }
            }
            Err(e) => self.fail(now, &format!("cannot connect: {e}"), counters),
        }
    }

    /// Looks whether a connect in progress finished.
    fn check_connect(&mut self, now: Instant, counters: &Counters) {
        let Link::Connecting { sock, deadline } = &self.link else {
            return;
        };
        let done = match sock.take_error() {
            Ok(Some(e)) | Err(e) => Err(format!("cannot connect: {e}")),
            Ok(None) => match sock.peer_addr() {
                Ok(_) => Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
                Err(e) => Err(format!("cannot connect: {e}")),
            },
        };
        match done {
            Ok(false) if now >= *deadline => self.fail(now, "connect timed out", counters),
            Ok(false) => {}
            Err(why) => self.fail(now, &why, counters),
            Ok(true) => {
                let Link::Connecting { sock, .. } =
                    std::mem::replace(&mut self.link, Link::Down { retry_at: now })
                else {
                    return;
                };
                let _ = sock.set_tcp_nodelay(true);
                // The kernel gives up on data intercept has not acknowledged for as long as a
                // stalled write is tolerated: a peer that vanished without a reset (host down,
                // path cut) is noticed even while our writes still fit in the socket buffer.
                let _ = sock.set_tcp_user_timeout(Some(WRITE_TIMEOUT));
                self.link = Link::Up(sock.into());
                self.warned = false;
                match self.ch.connected(now) {
                    Ok(()) => self.take_transmit(now),
                    Err(e) => self.fail(now, &e.to_string(), counters),
                }
            }
        }
    }

    /// Writes what the socket takes of `unsent`; an error or a stall past [`WRITE_TIMEOUT`]
    /// fails the connection.
    fn write(&mut self, now: Instant, counters: &Counters) {
        let Link::Up(s) = &mut self.link else {
            return;
        };
        let mut progressed = false;
        let mut error = None;
        while !self.unsent.is_empty() {
            // One system call for many messages: a busy worker registers and removes a
            // session per short connection, and a write each cost more than its sends.
            let mut iov = [IoSlice::new(&[]); WRITE_IOV];
            let mut k = 0;
            for (i, b) in self.unsent.iter().take(WRITE_IOV).enumerate() {
                iov[i] = IoSlice::new(if i == 0 { &b[self.front_written..] } else { b });
                k = i + 1;
            }
            match s.write_vectored(&iov[..k]) {
                Ok(0) => {
                    error = Some("write: intercept took nothing".to_string());
                    break;
                }
                Ok(mut n) => {
                    progressed = true;
                    while n > 0 {
                        let front = &self.unsent[0];
                        let take = n.min(front.len() - self.front_written);
                        n -= take;
                        self.front_written += take;
                        if self.front_written == front.len() {
                            self.unsent_bytes -= front.len() as u64;
                            self.unsent.pop_front();
                            self.front_written = 0;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(format!("write: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = error {
            return self.fail(now, &why, counters);
        }
        if self.unsent.is_empty() || progressed {
            self.stalled_since = (!self.unsent.is_empty()).then_some(now);
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(now);
        }
        if self
            .stalled_since
            .is_some_and(|t| now.saturating_duration_since(t) >= WRITE_TIMEOUT)
        {
            let why = format!(
                "write: intercept took nothing for {} s",
                WRITE_TIMEOUT.as_secs()
            );
            self.fail(now, &why, counters);
        }
    }

    /// Reads what intercept sent (a bounded amount) and hands each response header to
    /// `on_header`. Returns whether anything was read, and whether more may be waiting.
    fn read(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        counters: &Counters,
        on_header: &mut dyn FnMut(&[u8], &[u8]),
    ) -> (bool, bool) {
        let mut any = false;
        for _ in 0..READS_PER_ROUND {
            let Link::Up(s) = &mut self.link else {
                return (any, false);
            };
            let n = match s.read(buf) {
                Ok(0) => {
                    // Before intercept answered our Hello, a close is how it refuses the
                    // opening: it says why in its own log only.
                    let why = if self.ch.is_ready() || self.ch.is_insecure() {
                        "closed by intercept"
                    } else {
                        "closed by intercept during the opening (wrong secret, or a tcpcopy and \
                         intercept of different versions?)"
                    };
                    self.fail(now, why, counters);
                    return (any, false);
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return (any, false),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(now, &format!("read: {e}"), counters);
                    return (any, false);
                }
            };
            any = true;
            if let Err(e) = self.ch.handle_input(now, &buf[..n]) {
                self.fail(now, &e.to_string(), counters);
                return (any, false);
            }
            while let Some(ev) = self.ch.poll_event() {
                match ev {
                    Event::Ready { version, instance } => {
                        counters.add(&counters.channel_connects, 1);
                        info!(intercept = %self.addr, conn = self.j, version, peer = format_args!("{instance:016x}"), sessions = self.ch.session_count(), "connected to intercept");
                    }
                    Event::Responses(headers) => {
                        counters.add(&counters.responses, headers.len() as u64);
                        for h in &headers {
                            on_header(h, &[]);
                        }
                    }
                    Event::PrefixGranted { granted } => {
                        info!(intercept = %self.addr, conn = self.j, granted, "intercept reports response prefixes");
                    }
                    Event::PrefixedResponses(entries) => {
                        counters.add(&counters.responses, entries.len() as u64);
                        for e in &entries {
                            on_header(&e.header, &e.prefix);
                        }
                    }
                }
            }
            // Pongs, and the handshake's answers.
            self.take_transmit(now);
            if n < buf.len() {
                return (any, false);
            }
        }
        counters.add(&counters.response_pauses, 1);
        (any, true)
    }
}

/// One worker's connections to every intercept.
pub struct InterceptLink {
    conns: Vec<Conn>,
    /// Connections per intercept.
    per_intercept: usize,
    /// Bytes of registrations the sockets have not taken, over all connections, at most.
    unsent_limit: u64,
    counters: Arc<Counters>,
    buf: Box<[u8]>,
}

impl InterceptLink {
    /// `per_intercept` connections to each of `intercepts` (connected by the first
    /// [`pump`](Self::pump)), saying `instance` in their `Hello`; `psk` enables the secure
    /// layer. At most `unsent_limit` bytes of registrations wait for the sockets.
    pub fn new(
        intercepts: &[SocketAddr],
        per_intercept: usize,
        instance: u64,
        psk: Option<Psk>,
        unsent_limit: u64,
        counters: Arc<Counters>,
    ) -> InterceptLink {
        let per_intercept = per_intercept.max(1);
        let now = Instant::now();
        let conns = intercepts
            .iter()
            .flat_map(|&addr| (0..per_intercept).map(move |j| (addr, j)))
            .map(|(addr, j)| Conn {
                addr,
                j,
                ch: Channel::new(instance, psk.clone()),
                link: Link::Down { retry_at: now },
                unsent: VecDeque::new(),
                unsent_bytes: 0,
                front_written: 0,
                stalled_since: None,
                warned: false,
            })
            .collect();
        InterceptLink {
            conns,
            per_intercept,
            unsent_limit,
            counters,
            buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
        }
    }

    /// Asks every intercept for the first `n` payload bytes of each response (the report's
    /// response classes); 0: headers only, protocol version 1.
    pub fn with_response_prefix(mut self, n: u16) -> Self {
        for c in &mut self.conns {
            let ch = std::mem::replace(&mut c.ch, Channel::new(0, None));
            c.ch = ch.with_response_prefix(n);
        }
        self
    }

    /// Bytes of registrations waiting for the sockets, over all connections.
    pub fn unsent_bytes(&self) -> u64 {
        self.conns.iter().map(|c| c.unsent_bytes).sum()
    }

    /// Registers or unregisters a session with every intercept, on the connection its hash
    /// picks (so intercept sends its responses there). Written by the next
    /// [`write`](Self::write) or [`pump`](Self::pump). A registration that would take the
    /// unsent bytes past the limit (intercept not reading) is dropped and counted as lost;
    /// removals always go through, as they free intercept's table.
    pub fn register(&mut self, now: Instant, cmd: ToChannel) {
        let (ToChannel::Add(cl, t) | ToChannel::Remove(cl, t)) = cmd;
        if matches!(cmd, ToChannel::Add(..)) && self.unsent_bytes() >= self.unsent_limit {
            self.counters.add(&self.counters.registrations_lost, 1);
            return;
        }
        let j = conn_of(&cl, &t, self.per_intercept);
        for c in self.conns.iter_mut().filter(|c| c.j == j) {
            let r = match cmd {
                ToChannel::Add(cl, t) => c.ch.session_add(cl, t),
                ToChannel::Remove(cl, t) => c.ch.session_remove(cl, t),
            };
            if let Err(e) = r {
                self.counters.add(&self.counters.registrations_lost, 1);
                warn!(error = %e, "registration refused");
            }
            c.take_transmit(now);
        }
    }

    /// Writes what the connections have for their sockets (registrations first: intercept
    /// must know a clone before its SYN reaches the target).
    pub fn write(&mut self, now: Instant) {
        for c in &mut self.conns {
            if !c.unsent.is_empty() {
                c.write(now, &self.counters);
            }
        }
    }

    /// One round: connects what is down and due, finishes connects, reads what intercept sent
    /// (each response header, and its payload prefix when intercept grants one, to
    /// `on_header`), runs the channels' timers and writes. Returns
    /// (anything read, more may be waiting in a socket).
    pub fn pump(&mut self, now: Instant, on_header: &mut dyn FnMut(&[u8], &[u8])) -> (bool, bool) {
        let (mut any, mut more) = (false, false);
        for c in &mut self.conns {
            let counters = &*self.counters;
            match &c.link {
                Link::Down { retry_at } if now >= *retry_at => c.connect(now, counters),
                Link::Down { .. } => continue,
                Link::Connecting { .. } => {}
                Link::Up(_) => {}
            }
            if matches!(c.link, Link::Connecting { .. }) {
                c.check_connect(now, counters);
            }
            if matches!(c.link, Link::Up(_)) {
                let (a, m) = c.read(now, &mut self.buf, counters, on_header);
                any |= a;
                more |= m;
            }
            if matches!(c.link, Link::Up(_)) {
                if c.ch.poll_timeout().is_some_and(|t| t <= now) {
                    if let Err(e) = c.ch.handle_timeout(now) {
                        c.fail(now, &e.to_string(), counters);
                        continue;
                    }
                    c.take_transmit(now);
                }
                if c.ch.is_insecure() && c.ch.is_ready() {
                    warn_insecure(c.addr);
                }
                c.write(now, counters);
            }
        }
        (any, more)
    }

    /// The earliest time [`pump`](Self::pump) has something to do without any socket event.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter_map(|c| match &c.link {
                Link::Down { retry_at } => Some(*retry_at),
                Link::Connecting { deadline, .. } => Some(*deadline),
                Link::Up(_) => {
                    let stall = c.stalled_since.map(|t| t + WRITE_TIMEOUT);
                    match (c.ch.poll_timeout(), stall) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                }
            })
            .min()
    }

    /// The descriptors to wait on: readable for an open connection, writable for a connect in
    /// progress or a connection with unsent bytes.
    pub fn poll_fds(&self, out: &mut Vec<PollFd>) {
        for c in &self.conns {
            match &c.link {
                Link::Down { .. } => {}
                Link::Connecting { sock, .. } => {
                    out.push(PollFd::new(sock.as_raw_fd(), false, true))
                }
                Link::Up(s) => out.push(PollFd::new(s.as_raw_fd(), true, !c.unsent.is_empty())),
            }
        }
    }
}

fn conn_of(client: &SocketAddr, target: &SocketAddr, connections: usize) -> usize {
    let mut h = DefaultHasher::new();
    (client, target).hash(&mut h);
    (h.finish() % connections as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use tcpclone::proto::{encode, FrameDecoder, Message, Role};

    /// A real IPv4+TCP header (the channel's decoder checks it).
    fn header() -> Bytes {
        let mut h = vec![0u8; 40];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&40u16.to_be_bytes());
        h[9] = 6;
        h[32] = 0x50;
        Bytes::from(h)
    }

    fn frame(m: &Message) -> BytesMut {
        let mut w = BytesMut::new();
        encode(m, &mut w).unwrap();
        w
    }

    /// Writes intercept's answer to a version-1 Hello (no report: no prefix asked).
    fn answer_hello(s: &mut TcpStream) {
        let hello = Message::Hello {
            version: tcpclone::proto::MIN_VERSION,
            role: Role::Intercept,
            instance: 7,
        };
        let _ = s.write_all(&frame(&hello));
    }

    /// A fake intercept on its own thread: answers the hello, reports every registration it
    /// sees, answers each `SessionAdd` with one response header, and drops its first
    /// connection after the first add. Bounded: it serves `conns` connections, then ends.
    fn fake_intercept(conns: usize) -> (SocketAddr, mpsc::Receiver<Message>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for n in 0..conns {
                let Ok((mut s, _)) = l.accept() else { return };
                answer_hello(&mut s);
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut dec = FrameDecoder::new();
                let mut r = BytesMut::new();
                let mut buf = [0u8; 4096];
                'conn: while let Ok(k @ 1..) = s.read(&mut buf) {
                    r.extend_from_slice(&buf[..k]);
                    while let Ok(Some(m)) = dec.decode(&mut r) {
                        if let Message::SessionAdd { .. } = m {
                            let _ = tx.send(m.clone());
                            let answer = Message::Responses {
                                headers: vec![header()],
                            };
                            let _ = s.write_all(&frame(&answer));
                            if n == 0 {
                                break 'conn;
                            }
                        }
                    }
                }
            }
        });
        (addr, rx)
    }

    /// Pumps `link` until `until` holds or 5 s pass; returns the headers it handed over.
    fn pump_until(
        link: &mut InterceptLink,
        got: &mut Vec<Vec<u8>>,
        until: impl Fn(&InterceptLink, &[Vec<u8>]) -> bool,
    ) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if until(link, got) {
                return true;
            }
            let mut fds = Vec::new();
            link.poll_fds(&mut fds);
            let _ = tcpclone::sys::ring::poll_fds(&mut fds, 10);
            link.pump(Instant::now(), &mut |h, _| got.push(h.to_vec()));
        }
        until(link, got)
    }

    #[test]
    fn registers_and_re_registers_after_reconnect() {
        let (addr, adds) = fake_intercept(2);
        let counters = Arc::new(Counters::default());
        let mut link = InterceptLink::new(&[addr], 1, 1, None, COMMAND_BACKLOG, counters.clone());
        let cl: SocketAddr = "198.18.10.2:40000".parse().unwrap();
        let t: SocketAddr = "198.18.1.2:6379".parse().unwrap();
        // Registered before the connection is up: sent once it is.
        link.register(Instant::now(), ToChannel::Add(cl, t));
        let mut got = Vec::new();
        assert!(pump_until(&mut link, &mut got, |_, g| !g.is_empty()));
        let first = adds.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            first,
            Message::SessionAdd {
                client: cl,
                target: t
            }
        );
        assert_eq!(got, vec![header().to_vec()]);
        // The fake dropped the connection: the live session is registered again and answered.
        assert!(pump_until(&mut link, &mut got, |_, g| g.len() == 2));
        assert_eq!(adds.recv_timeout(Duration::from_secs(5)).unwrap(), first);
        assert_eq!(Counters::get(&counters.channel_connects), 2);
        assert_eq!(Counters::get(&counters.channel_failures), 1);
        assert_eq!(Counters::get(&counters.responses), 2);
    }

    #[test]
    fn unsent_registrations_are_bounded_and_counted_when_intercept_stops_reading() {
        // An intercept that answers the hello, then reads nothing more (but holds on).
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let Ok((mut s, _)) = l.accept() else { return };
            answer_hello(&mut s);
            let _ = done_rx.recv_timeout(Duration::from_secs(30));
        });
        let counters = Arc::new(Counters::default());
        let limit = 64 * 1024;
        let mut link = InterceptLink::new(&[addr], 1, 1, None, limit, counters.clone());
        let mut got = Vec::new();
        assert!(pump_until(&mut link, &mut got, |_, _| {
            Counters::get(&counters.channel_connects) == 1
        }));
        let t: SocketAddr = "198.18.1.2:6379".parse().unwrap();
        // Far more than the socket buffers and the limit hold: ~45 bytes each, 45 MB in all.
        let offered = 1_000_000u32;
        for i in 0..offered {
            let cl = SocketAddr::from(([198, 18, (i >> 16) as u8, (i >> 8) as u8], i as u16));
            link.register(Instant::now(), ToChannel::Add(cl, t));
            if i % 1000 == 0 {
                link.write(Instant::now());
            }
        }
        link.write(Instant::now());
        let lost = Counters::get(&counters.registrations_lost);
        assert!(lost > 0, "nothing was dropped");
        assert!(lost < u64::from(offered));
        // At most one registration's frame over the limit waits in memory.
        assert!(link.unsent_bytes() <= limit + 64, "{}", link.unsent_bytes());
        assert_eq!(Counters::get(&counters.channel_failures), 0);
        drop(done_tx);
    }

    #[test]
    fn queued_registrations_arrive_whole_and_in_order_through_partial_writes() {
        // Far more than the socket buffers hold (~45 bytes each, ~13 MB), and an intercept
        // that starts reading late, then reads in odd sizes: writev returns in the middle of a
        // message again and again. Every message must arrive whole and in order.
        const N: u32 = 300_000;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let reader = std::thread::spawn(move || -> Vec<SocketAddr> {
            let Ok((mut s, _)) = l.accept() else {
                return Vec::new();
            };
            answer_hello(&mut s);
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            std::thread::sleep(Duration::from_millis(300));
            let (mut dec, mut r, mut buf) = (FrameDecoder::new(), BytesMut::new(), [0u8; 997]);
            let mut clients = Vec::new();
            while clients.len() < N as usize {
                let Ok(k @ 1..) = s.read(&mut buf) else { break };
                r.extend_from_slice(&buf[..k]);
                while let Ok(Some(m)) = dec.decode(&mut r) {
                    if let Message::SessionAdd { client, .. } = m {
                        clients.push(client);
                    }
                }
            }
            clients
        });
        let counters = Arc::new(Counters::default());
        let mut link = InterceptLink::new(&[addr], 1, 1, None, u64::MAX, counters.clone());
        let mut got = Vec::new();
        assert!(pump_until(&mut link, &mut got, |_, _| {
            Counters::get(&counters.channel_connects) == 1
        }));
        let t: SocketAddr = "198.18.1.2:6379".parse().unwrap();
        let client = |i: u32| {
            SocketAddr::from((
                [198, 18, (i >> 16) as u8, (i >> 8) as u8],
                1024 + (i & 0xff) as u16,
            ))
        };
        for i in 0..N {
            link.register(Instant::now(), ToChannel::Add(client(i), t));
        }
        // A debug build on a busy machine may need more than one pump_until's 5 s.
        assert!((0..4).any(|_| pump_until(&mut link, &mut got, |l, _| l.unsent_bytes() == 0)));
        let clients = reader.join().unwrap();
        assert_eq!(clients.len(), N as usize);
        assert!(clients
            .iter()
            .enumerate()
            .all(|(i, c)| *c == client(i as u32)));
        assert_eq!(Counters::get(&counters.registrations_lost), 0);
        assert_eq!(Counters::get(&counters.channel_failures), 0);
    }
}
