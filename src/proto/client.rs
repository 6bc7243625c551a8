//! The tcpcopy end of the channel to one intercept, as pure code.
//!
//! [`Channel`] keeps the set of sessions registered with that intercept across reconnects,
//! runs the optional [`secure`](super::secure) handshake, sends `Hello`, replays every
//! registration after a reconnect, pings when idle, and turns received frames into
//! [`Event`]s. It never touches a socket or a clock: the glue (tcpcopy's `live` module) owns
//! the TCP stream and passes `now` in.
//!
//! Glue loop, per intercept address:
//! 1. connect (with a timeout); on success `channel.connected(now)`, on failure wait
//!    `channel.disconnected(now)` and retry;
//! 2. write whatever [`Channel::poll_transmit`] returns; feed every read to
//!    [`Channel::handle_input`] and drain [`Channel::poll_event`];
//! 3. wake at [`Channel::poll_timeout`] and call [`Channel::handle_timeout`];
//! 4. on any error, EOF or write failure: `let delay = channel.disconnected(now)`, sleep
//!    `delay`, go to 1. Registrations made meanwhile (`session_add` / `session_remove`) are
//!    kept and sent after the next `connected`.

use super::secure::{Psk, SecureChannel, SecureError};
use super::{
    encode, FrameDecoder, Message, PrefixedResponse, ProtoError, Role, MAX_PREFIX, MIN_VERSION,
    VERSION, VERSION_PREFIX,
};
use bytes::{Bytes, BytesMut};
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the whole opening (secure handshake + `Hello` answer) may take, both ends.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// tcpcopy pings after this much silence from intercept.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// A peer silent this long (no frame at all, a `Pong` included) is considered gone. intercept
/// uses the same bound for tcpcopy connections, so tcpcopy must send something (a `Ping` at
/// least) more often than this.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the channel must be dropped and reconnected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// A frame from intercept was malformed.
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    /// The secure layer failed (wrong secret, tampered record).
    #[error("secure channel: {0}")]
    Secure(#[from] SecureError),
    /// intercept sent something out of place (e.g. a non-`Hello` first frame, `SessionAdd`).
    #[error("unexpected {0} from intercept")]
    Unexpected(&'static str),
    /// intercept speaks another protocol version.
    #[error("intercept speaks protocol version {0}, we speak {MIN_VERSION} to {VERSION}")]
    Version(u16),
    /// intercept granted a longer response prefix than was asked for.
    #[error("intercept granted a response prefix of {granted} bytes, {asked} were asked for")]
    PrefixGrant {
        /// Bytes granted.
        granted: u16,
        /// Bytes asked for.
        asked: u16,
    },
    /// The opening did not finish within [`HANDSHAKE_TIMEOUT`].
    #[error("handshake not finished within {HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
    /// Nothing heard for [`PEER_TIMEOUT`].
    #[error("intercept silent for {PEER_TIMEOUT:?}")]
    PeerTimeout,
    /// `handle_input` or `handle_timeout` was called while disconnected.
    #[error("not connected")]
    NotConnected,
}

/// Something that came from intercept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// intercept answered `Hello`: the channel is up and every registration has been sent.
    Ready {
        /// intercept's protocol version.
        version: u16,
        /// intercept's instance id.
        instance: u64,
    },
    /// A batch of the target's responses: each an IP header + TCP header (checked).
    Responses(Vec<Bytes>),
    /// intercept answered our `Options`: it reports up to `granted` payload bytes per response
    /// from now on (0: headers only).
    PrefixGranted {
        /// Payload bytes per response.
        granted: u16,
    },
    /// A batch of the target's responses with the first bytes of each one's payload (checked
    /// against the granted length).
    PrefixedResponses(Vec<PrefixedResponse>),
}

/// Exponential reconnect backoff: 100 ms doubling to 5 s, with ±25 % jitter from a seed.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    base: Duration,
    max: Duration,
    rng: u64,
}

impl Backoff {
    /// A backoff between `base` and `max`; `seed` drives the jitter (e.g. the instance id).
    pub fn new(base: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            next: base,
            base,
            max,
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt; doubles the one after it.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter only, not security.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let quarter = d.as_micros() as u64 / 4;
        let jitter = if quarter == 0 {
            0
        } else {
            self.rng % (2 * quarter)
        };
        Duration::from_micros(d.as_micros() as u64 - quarter + jitter)
    }

    /// Back to the base delay (after a successful connection).
    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Disconnected,
    /// TCP up, waiting for the secure handshake and/or intercept's `Hello`.
    Opening,
    Ready,
}

/// tcpcopy's end of one intercept connection (see the module docs for the glue loop).
#[derive(Debug)]
pub struct Channel {
    instance: u64,
    psk: Option<Psk>,
    sessions: HashSet<(SocketAddr, SocketAddr)>,
    phase: Phase,
    secure: Option<SecureChannel>,
    decoder: FrameDecoder,
    /// Ciphertext (or plain frames without a secret) ready for the socket.
    out: BytesMut,
    /// Plain frames waiting for the secure handshake to finish.
    pending: BytesMut,
    input: BytesMut,
    plain: BytesMut,
    events: VecDeque<Event>,
    opened_at: Option<Instant>,
    last_rx: Option<Instant>,
    last_tx: Option<Instant>,
    backoff: Backoff,
    /// Response prefix bytes to ask intercept for (0: speak version 1, headers only).
    want_prefix: u16,
    /// The version of the `Hello` sent on this connection.
    sent_version: u16,
    /// The prefix intercept granted on this connection.
    granted: u16,
    /// intercept closed a connection during its opening after our version-2 `Hello`: an
    /// intercept from before version 2; speak version 1 from now on.
    downgraded: bool,
}

impl Channel {
    /// A disconnected channel for tcpcopy instance `instance`; `psk` enables the secure layer.
    pub fn new(instance: u64, psk: Option<Psk>) -> Self {
        Channel {
            instance,
            psk,
            sessions: HashSet::new(),
            phase: Phase::Disconnected,
            secure: None,
            decoder: FrameDecoder::new(),
            out: BytesMut::new(),
            pending: BytesMut::new(),
            input: BytesMut::new(),
            plain: BytesMut::new(),
            events: VecDeque::new(),
            opened_at: None,
            last_rx: None,
            last_tx: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5), instance),
            want_prefix: 0,
            sent_version: MIN_VERSION,
            granted: 0,
            downgraded: false,
        }
    }

    /// Asks intercept for the first `n` payload bytes of each response (at most
    /// [`MAX_PREFIX`]; 0: headers only, protocol version 1 as before).
    pub fn with_response_prefix(mut self, n: u16) -> Self {
        self.want_prefix = n.min(MAX_PREFIX as u16);
        self
    }

    /// The response prefix intercept granted on this connection (0: none, or not yet).
    pub fn response_prefix(&self) -> u16 {
        self.granted
    }

    /// True once an intercept refused our version-2 `Hello` (it predates response prefixes):
    /// the channel speaks version 1, headers only, from then on.
    pub fn is_downgraded(&self) -> bool {
        self.downgraded
    }

    /// True once intercept has answered `Hello`.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// True when the channel runs without a secret (`--insecure`).
    pub fn is_insecure(&self) -> bool {
        self.psk.is_none()
    }

    /// Sessions currently registered (sent or to be sent after the next connect).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The TCP connection is up: starts the opening and queues `Hello` plus a `SessionAdd` for
    /// every registered session.
    pub fn connected(&mut self, now: Instant) -> Result<(), ChannelError> {
        self.reset_conn();
        self.phase = Phase::Opening;
        self.opened_at = Some(now);
        self.last_rx = Some(now);
        self.last_tx = Some(now);
        if let Some(psk) = &self.psk {
            self.secure = Some(SecureChannel::initiator(psk, &mut self.out)?);
        }
        // Version 2 only when prefixes are wanted: an older intercept refuses it.
        self.sent_version = if self.want_prefix > 0 && !self.downgraded {
            VERSION_PREFIX
        } else {
            MIN_VERSION
        };
        self.send(&Message::Hello {
            version: self.sent_version,
            role: Role::Tcpcopy,
            instance: self.instance,
        })?;
        if self.sent_version >= VERSION_PREFIX {
            self.send(&Message::Options {
                response_prefix: self.want_prefix,
            })?;
        }
        let regs: Vec<_> = self.sessions.iter().copied().collect();
        for (client, target) in regs {
            self.send(&Message::SessionAdd { client, target })?;
        }
        Ok(())
    }

    /// The connection failed or closed: drops its state (registrations are kept) and returns
    /// how long to wait before reconnecting.
    pub fn disconnected(&mut self, _now: Instant) -> Duration {
        // Closed after our version-2 Hello reached an authenticated (or plain) peer and before
        // its answer: what an intercept from before version 2 does. Headers only from now on.
        let hello_refused = self.phase == Phase::Opening
            && self.sent_version >= VERSION_PREFIX
            && self.secure.as_ref().is_none_or(|s| s.is_established());
        if hello_refused && !self.downgraded {
            self.downgraded = true;
            tracing::warn!(
                "intercept closed the connection on our protocol version {VERSION_PREFIX} Hello: \
                 it predates response prefixes; speaking version {MIN_VERSION} (headers only, \
                 no per-endpoint classes of the target's responses)"
            );
        }
        self.reset_conn();
        self.backoff.next_delay()
    }

    fn reset_conn(&mut self) {
        self.phase = Phase::Disconnected;
        self.secure = None;
        self.decoder = FrameDecoder::new();
        self.out.clear();
        self.pending.clear();
        self.input.clear();
        self.plain.clear();
        self.opened_at = None;
        self.granted = 0;
    }

    /// Registers a session with this intercept (sent now if connected, else after connecting).
    pub fn session_add(
        &mut self,
        client: SocketAddr,
        target: SocketAddr,
    ) -> Result<(), ChannelError> {
        let m = Message::SessionAdd { client, target };
        // Validate first so a bad address is never remembered for replay.
        encode(&m, &mut BytesMut::new())?;
        if self.sessions.insert((client, target)) && self.phase != Phase::Disconnected {
            self.send(&m)?;
        }
        Ok(())
    }

    /// Unregisters a session (sent if connected; forgotten either way).
    pub fn session_remove(
        &mut self,
        client: SocketAddr,
        target: SocketAddr,
    ) -> Result<(), ChannelError> {
        if self.sessions.remove(&(client, target)) && self.phase != Phase::Disconnected {
            self.send(&Message::SessionRemove { client, target })?;
        }
        Ok(())
    }

    fn send(&mut self, m: &Message) -> Result<(), ChannelError> {
        match &mut self.secure {
            None => encode(m, &mut self.out)?,
            Some(s) if s.is_established() => {
                self.pending.clear();
                encode(m, &mut self.pending)?;
                s.write(&self.pending, &mut self.out)?;
                self.pending.clear();
            }
            Some(_) => encode(m, &mut self.pending)?,
        }
        Ok(())
    }

    /// Bytes to write to the socket now, if any. Write them all before the next call.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        if self.out.is_empty() {
            return None;
        }
        self.last_tx = Some(now);
        Some(self.out.split().freeze())
    }

    /// Feeds bytes read from the socket. An error means: drop the connection (call
    /// [`disconnected`](Self::disconnected)).
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) -> Result<(), ChannelError> {
        if self.phase == Phase::Disconnected {
            return Err(ChannelError::NotConnected);
        }
        self.last_rx = Some(now);
        match &mut self.secure {
            None => self.plain.extend_from_slice(data),
            Some(s) => {
                self.input.extend_from_slice(data);
                let was = s.is_established();
                s.read(&mut self.input, &mut self.plain, &mut self.out)?;
                if !was && s.is_established() && !self.pending.is_empty() {
                    let p = self.pending.split();
                    s.write(&p, &mut self.out)?;
                }
            }
        }
        while let Some(m) = self.decoder.decode(&mut self.plain)? {
            match (m, &self.phase) {
                (
                    Message::Hello {
                        version,
                        role: Role::Intercept,
                        instance,
                    },
                    Phase::Opening,
                ) => {
                    // intercept answers with the lower of both versions.
                    if !(MIN_VERSION..=self.sent_version).contains(&version) {
                        return Err(ChannelError::Version(version));
                    }
                    self.sent_version = version;
                    self.phase = Phase::Ready;
                    self.backoff.reset();
                    self.events.push_back(Event::Ready { version, instance });
                }
                (_, Phase::Opening) => {
                    return Err(ChannelError::Unexpected(
                        "first frame other than an intercept Hello",
                    ))
                }
                (Message::Responses { headers }, _) => {
                    self.events.push_back(Event::Responses(headers))
                }
                (Message::Options { response_prefix }, _)
                    if self.sent_version >= VERSION_PREFIX =>
                {
                    if response_prefix > self.want_prefix {
                        return Err(ChannelError::PrefixGrant {
                            granted: response_prefix,
                            asked: self.want_prefix,
                        });
                    }
                    self.granted = response_prefix;
                    self.decoder.set_max_prefix(usize::from(response_prefix));
                    self.events.push_back(Event::PrefixGranted {
                        granted: response_prefix,
                    });
                }
                (Message::PrefixedResponses { entries }, _)
                    if self.sent_version >= VERSION_PREFIX =>
                {
                    self.events.push_back(Event::PrefixedResponses(entries))
                }
                (Message::Ping, _) => self.send(&Message::Pong)?,
                (Message::Pong, _) => {}
                (m, _) => return Err(ChannelError::Unexpected(m.name())),
            }
        }
        Ok(())
    }

    /// The next event from intercept.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called (None when disconnected).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Disconnected => None,
            Phase::Opening => self.opened_at.map(|t| t + HANDSHAKE_TIMEOUT),
            Phase::Ready => {
                let rx = self.last_rx? + PEER_TIMEOUT;
                let ping = self.last_rx?.max(self.last_tx?) + PING_INTERVAL;
                Some(rx.min(ping))
            }
        }
    }

    /// Handles timers: the opening deadline, the idle ping and the peer timeout.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ChannelError> {
        match self.phase {
            Phase::Disconnected => Ok(()),
            Phase::Opening => match self.opened_at {
                Some(t) if now >= t + HANDSHAKE_TIMEOUT => Err(ChannelError::HandshakeTimeout),
                _ => Ok(()),
            },
            Phase::Ready => {
                let last_rx = self.last_rx.unwrap_or(now);
                if now >= last_rx + PEER_TIMEOUT {
                    return Err(ChannelError::PeerTimeout);
                }
                let last = last_rx.max(self.last_tx.unwrap_or(now));
                if now >= last + PING_INTERVAL && self.out.is_empty() {
                    self.send(&Message::Ping)?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::secure::SecureChannel;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn psk() -> Psk {
        Psk::from_hex_text(b"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
            .unwrap()
    }

    /// A fake intercept end: decodes what the channel sent, optionally through Noise.
    struct FakeIntercept {
        secure: Option<SecureChannel>,
        input: BytesMut,
        plain: BytesMut,
        dec: FrameDecoder,
    }

    impl FakeIntercept {
        fn new(psk: Option<&Psk>) -> Self {
            FakeIntercept {
                secure: psk.map(|p| SecureChannel::responder(p).unwrap()),
                input: BytesMut::new(),
                plain: BytesMut::new(),
                dec: FrameDecoder::new(),
            }
        }
        /// Feeds bytes from tcpcopy; returns (messages, bytes to send back).
        fn feed(&mut self, b: &[u8]) -> (Vec<Message>, BytesMut) {
            let mut back = BytesMut::new();
            match &mut self.secure {
                None => self.plain.extend_from_slice(b),
                Some(s) => {
                    self.input.extend_from_slice(b);
                    s.read(&mut self.input, &mut self.plain, &mut back).unwrap();
                }
            }
            let mut v = Vec::new();
            while let Some(m) = self.dec.decode(&mut self.plain).unwrap() {
                v.push(m);
            }
            (v, back)
        }
        fn send(&mut self, m: &Message, back: &mut BytesMut) {
            let mut f = BytesMut::new();
            encode(m, &mut f).unwrap();
            match &mut self.secure {
                None => back.extend_from_slice(&f),
                Some(s) => s.write(&f, back).unwrap(),
            }
        }
    }

    const HDR: [u8; 40] = [
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1, // IPv4
        0x18, 0xeb, 0x9c, 0x40, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x12, 0xff, 0xff, 0, 0, 0,
        0, // TCP
    ];

    fn run(psk: Option<Psk>) {
        let t0 = Instant::now();
        let mut ch = Channel::new(7, psk.clone());
        ch.session_add(a("198.18.0.1:40000"), a("198.18.0.2:6379"))
            .unwrap();
        assert!(
            ch.poll_transmit(t0).is_none(),
            "nothing sent while disconnected"
        );
        ch.connected(t0).unwrap();
        let mut fi = FakeIntercept::new(psk.as_ref());
        let (msgs, mut back) = fi.feed(&ch.poll_transmit(t0).unwrap());
        if psk.is_some() {
            assert!(msgs.is_empty(), "frames wait for the handshake");
            ch.handle_input(t0, &back.split()).unwrap();
            let (msgs, b2) = fi.feed(&ch.poll_transmit(t0).unwrap());
            back = b2;
            assert_eq!(msgs.len(), 2);
            assert!(matches!(
                msgs[0],
                Message::Hello {
                    role: Role::Tcpcopy,
                    instance: 7,
                    ..
                }
            ));
        } else {
            assert_eq!(msgs.len(), 2);
            assert!(matches!(msgs[1], Message::SessionAdd { .. }));
        }
        assert!(!ch.is_ready());
        fi.send(
            &Message::Hello {
                version: MIN_VERSION,
                role: Role::Intercept,
                instance: 9,
            },
            &mut back,
        );
        fi.send(
            &Message::Responses {
                headers: vec![Bytes::copy_from_slice(&HDR)],
            },
            &mut back,
        );
        fi.send(&Message::Ping, &mut back);
        ch.handle_input(t0, &back).unwrap();
        assert_eq!(
            ch.poll_event(),
            Some(Event::Ready {
                version: MIN_VERSION,
                instance: 9
            })
        );
        assert_eq!(
            ch.poll_event(),
            Some(Event::Responses(vec![Bytes::copy_from_slice(&HDR)]))
        );
        assert_eq!(ch.poll_event(), None);
        ch.session_add(a("198.18.0.1:40001"), a("198.18.0.2:6379"))
            .unwrap();
        ch.session_remove(a("198.18.0.1:40000"), a("198.18.0.2:6379"))
            .unwrap();
        let (msgs, _) = fi.feed(&ch.poll_transmit(t0).unwrap());
        assert_eq!(msgs[0], Message::Pong);
        assert!(matches!(msgs[1], Message::SessionAdd { .. }));
        assert!(matches!(msgs[2], Message::SessionRemove { .. }));

        // Idle: ping, then peer timeout.
        let t1 = ch.poll_timeout().unwrap();
        assert_eq!(t1, t0 + PING_INTERVAL);
        ch.handle_timeout(t1).unwrap();
        let (msgs, _) = fi.feed(&ch.poll_transmit(t1).unwrap());
        assert_eq!(msgs, vec![Message::Ping]);
        assert_eq!(
            ch.handle_timeout(t0 + PEER_TIMEOUT),
            Err(ChannelError::PeerTimeout)
        );

        // Reconnect replays the one live registration.
        let d = ch.disconnected(t1);
        assert!(
            d >= Duration::from_millis(75) && d <= Duration::from_millis(125),
            "{d:?}"
        );
        ch.connected(t1).unwrap();
        let mut fi = FakeIntercept::new(psk.as_ref());
        let (mut msgs, back) = fi.feed(&ch.poll_transmit(t1).unwrap());
        if psk.is_some() {
            ch.handle_input(t1, &back).unwrap();
            msgs = fi.feed(&ch.poll_transmit(t1).unwrap()).0;
        }
        assert_eq!(
            msgs[1],
            Message::SessionAdd {
                client: a("198.18.0.1:40001"),
                target: a("198.18.0.2:6379")
            }
        );
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            ch.handle_timeout(t1 + HANDSHAKE_TIMEOUT),
            Err(ChannelError::HandshakeTimeout)
        );
    }

    #[test]
    fn plain_channel_conversation() {
        run(None);
    }

    #[test]
    fn secure_channel_conversation() {
        run(Some(psk()));
    }

    #[test]
    fn unexpected_frames_close() {
        let t0 = Instant::now();
        let mut ch = Channel::new(1, None);
        ch.connected(t0).unwrap();
        let mut f = BytesMut::new();
        encode(&Message::Ping, &mut f).unwrap();
        assert!(matches!(
            ch.handle_input(t0, &f),
            Err(ChannelError::Unexpected(_))
        ));
        ch.disconnected(t0);
        ch.connected(t0).unwrap();
        let mut f = BytesMut::new();
        encode(
            &Message::Hello {
                version: 2,
                role: Role::Intercept,
                instance: 1,
            },
            &mut f,
        )
        .unwrap();
        assert_eq!(ch.handle_input(t0, &f), Err(ChannelError::Version(2)));
        assert!(ch
            .session_add(a("198.18.0.1:0"), a("198.18.0.2:1"))
            .is_err());
        assert_eq!(ch.session_count(), 0);
    }

    /// An HTTP answer segment: IPv4 + TCP header whose IP length gives 17 payload bytes, and
    /// those bytes.
    fn http_answer() -> (Vec<u8>, &'static [u8]) {
        let mut h = HDR.to_vec();
        h[3] = 40 + 17;
        (h, b"HTTP/1.1 500 Boom")
    }

    /// Opens a plain channel asking for `want` prefix bytes; the fake intercept answers as a
    /// version-2 intercept granting `grant`. Returns the channel after the grant.
    fn prefixed_channel(want: u16, grant: u16) -> Result<Channel, ChannelError> {
        let t0 = Instant::now();
        let mut ch = Channel::new(7, None).with_response_prefix(want);
        ch.connected(t0)?;
        let mut fi = FakeIntercept::new(None);
        let (msgs, _) = fi.feed(&ch.poll_transmit(t0).unwrap());
        assert_eq!(
            msgs,
            vec![
                Message::Hello {
                    version: VERSION_PREFIX,
                    role: Role::Tcpcopy,
                    instance: 7
                },
                Message::Options {
                    response_prefix: want
                }
            ]
        );
        let mut back = BytesMut::new();
        fi.send(
            &Message::Hello {
                version: VERSION_PREFIX,
                role: Role::Intercept,
                instance: 9,
            },
            &mut back,
        );
        fi.send(
            &Message::Options {
                response_prefix: grant,
            },
            &mut back,
        );
        ch.handle_input(t0, &back)?;
        Ok(ch)
    }

    #[test]
    fn prefix_negotiated_with_a_version_2_intercept() {
        let mut ch = prefixed_channel(64, 12).unwrap();
        assert_eq!(
            ch.poll_event(),
            Some(Event::Ready {
                version: VERSION_PREFIX,
                instance: 9
            })
        );
        assert_eq!(ch.poll_event(), Some(Event::PrefixGranted { granted: 12 }));
        assert_eq!(ch.response_prefix(), 12);
        let (h, payload) = http_answer();
        let entry = |n: usize| PrefixedResponse {
            header: Bytes::from(h.clone()),
            prefix: Bytes::copy_from_slice(&payload[..n]),
        };
        let mut f = BytesMut::new();
        encode(
            &Message::PrefixedResponses {
                entries: vec![entry(12)],
            },
            &mut f,
        )
        .unwrap();
        ch.handle_input(Instant::now(), &f).unwrap();
        assert_eq!(
            ch.poll_event(),
            Some(Event::PrefixedResponses(vec![entry(12)]))
        );
        // One byte more than granted: a protocol error, the connection must go.
        let mut f = BytesMut::new();
        encode(
            &Message::PrefixedResponses {
                entries: vec![entry(13)],
            },
            &mut f,
        )
        .unwrap();
        assert!(matches!(
            ch.handle_input(Instant::now(), &f),
            Err(ChannelError::Proto(ProtoError::PrefixTooLong {
                len: 13,
                max: 12,
                ..
            }))
        ));
    }

    #[test]
    fn a_grant_above_the_ask_is_refused() {
        assert_eq!(
            prefixed_channel(16, 17).err(),
            Some(ChannelError::PrefixGrant {
                granted: 17,
                asked: 16
            })
        );
    }

    #[test]
    fn an_intercept_before_version_2_gets_version_1() {
        let t0 = Instant::now();
        let mut ch = Channel::new(7, None).with_response_prefix(64);
        ch.session_add(a("198.18.0.1:40000"), a("198.18.0.2:80"))
            .unwrap();
        ch.connected(t0).unwrap();
        let first = ch.poll_transmit(t0).unwrap();
        // An intercept from before version 2 reads the Hello and closes the connection.
        let mut old = FrameDecoder::new();
        let mut b = BytesMut::from(&first[..]);
        assert!(matches!(
            old.decode(&mut b).unwrap(),
            Some(Message::Hello { version: 2, .. })
        ));
        ch.disconnected(t0);
        assert!(ch.is_downgraded());
        ch.connected(t0).unwrap();
        let mut fi = FakeIntercept::new(None);
        let (msgs, _) = fi.feed(&ch.poll_transmit(t0).unwrap());
        // Exactly what a version-1 tcpcopy sends: no Options.
        assert_eq!(
            msgs[0],
            Message::Hello {
                version: MIN_VERSION,
                role: Role::Tcpcopy,
                instance: 7
            }
        );
        assert!(matches!(msgs[1], Message::SessionAdd { .. }));
        assert_eq!(msgs.len(), 2);
        let mut back = BytesMut::new();
        fi.send(
            &Message::Hello {
                version: MIN_VERSION,
                role: Role::Intercept,
                instance: 9,
            },
            &mut back,
        );
        fi.send(
            &Message::Responses {
                headers: vec![Bytes::from_static(&HDR)],
            },
            &mut back,
        );
        ch.handle_input(t0, &back).unwrap();
        assert!(ch.is_ready());
        assert_eq!(
            ch.poll_event(),
            Some(Event::Ready {
                version: MIN_VERSION,
                instance: 9
            })
        );
        assert_eq!(
            ch.poll_event(),
            Some(Event::Responses(vec![Bytes::from_static(&HDR)]))
        );
        assert_eq!(ch.response_prefix(), 0);
        // A version-1 intercept never sends prefixed frames; one that did is out of place.
        let (h, p) = http_answer();
        let mut f = BytesMut::new();
        encode(
            &Message::PrefixedResponses {
                entries: vec![PrefixedResponse {
                    header: Bytes::from(h),
                    prefix: Bytes::from_static(&p[..0]),
                }],
            },
            &mut f,
        )
        .unwrap();
        assert!(matches!(
            ch.handle_input(t0, &f),
            Err(ChannelError::Unexpected("PrefixedResponses"))
        ));
    }

    #[test]
    fn a_secret_mismatch_is_no_reason_to_downgrade() {
        let t0 = Instant::now();
        let mut ch = Channel::new(7, Some(psk())).with_response_prefix(64);
        ch.connected(t0).unwrap();
        let _ = ch.poll_transmit(t0);
        ch.disconnected(t0);
        assert!(!ch.is_downgraded());
    }

    #[test]
    fn backoff_grows_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5), 42);
        let v: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(v[9] <= Duration::from_millis(6250) && v[9] >= Duration::from_millis(3750));
        assert!(v[3] > v[0]);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }
}
