//! Scripted state-machine tests of the engine (STYLE.md rule 13): a constructor per session
//! state, segments built from `TEMPLATE` / `RESP` with `..`, and `send!` / `expect!` helpers.

use super::packet::{self, OutSegment, Path, TcpOpts, ACK, FIN, PSH, RST, SYN};
use super::{Engine, EngineConfig, EngineEvent};
use crate::mapping::TargetMapping;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};
use tcpclone::seq::SeqNumber;

pub(crate) const CLIENT: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 10), 40000));
pub(crate) const SERVICE: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 80));
pub(crate) const TARGET: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 2), 8080));
pub(crate) const CLIENT6: SocketAddr = SocketAddr::V6(SocketAddrV6::new(
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10),
    40000,
    0,
    0,
));
pub(crate) const SERVICE6: SocketAddr = SocketAddr::V6(SocketAddrV6::new(
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    6379,
    0,
    0,
));
pub(crate) const TARGET6: SocketAddr = SocketAddr::V6(SocketAddrV6::new(
    Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 2),
    6379,
    0,
    0,
));

pub(crate) const CLIENT_ISN: u32 = 1000;
pub(crate) const PROD_ISN: u32 = 9000;
pub(crate) const TARGET_ISN: u32 = 5000;

pub(crate) const NO_OPTS: TcpOpts = TcpOpts {
    mss: None,
    wscale: None,
    sack_perm: false,
    ts: None,
};
pub(crate) const SYN_OPTS: TcpOpts = TcpOpts {
    mss: Some(1460),
    wscale: Some(7),
    sack_perm: true,
    ts: None,
};

/// A segment of the script (both directions).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seg {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub win: u16,
    pub opts: TcpOpts,
    pub payload: &'static [u8],
    /// Payload length for target reports (their payload is not carried).
    pub len: u32,
}

/// A captured client segment: established, first data byte, production's ack.
pub(crate) const TEMPLATE: Seg = Seg {
    src: CLIENT,
    dst: SERVICE,
    seq: CLIENT_ISN + 1,
    ack: PROD_ISN + 1,
    flags: ACK | PSH,
    win: 65535,
    opts: NO_OPTS,
    payload: b"",
    len: 0,
};

/// A target report: target → client as the target sees it.
pub(crate) const RESP: Seg = Seg {
    src: TARGET,
    dst: CLIENT,
    seq: TARGET_ISN + 1,
    ack: CLIENT_ISN + 1,
    flags: ACK,
    win: 65535,
    opts: NO_OPTS,
    payload: b"",
    len: 0,
};

pub(crate) const CLIENT_SYN: Seg = Seg {
    seq: CLIENT_ISN,
    ack: 0,
    flags: SYN,
    opts: SYN_OPTS,
    ..TEMPLATE
};
pub(crate) const SYN_ACK: Seg = Seg {
    seq: TARGET_ISN,
    flags: SYN | ACK,
    opts: TcpOpts {
        mss: Some(1460),
        wscale: Some(7),
        sack_perm: true,
        ts: None,
    },
    ..RESP
};

/// A segment the engine sent, parsed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Out {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
    pub opts: TcpOpts,
}

pub(crate) fn build(s: &Seg, with_payload: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let zeros = vec![0u8; s.len as usize];
    let payload: &[u8] = if s.payload.is_empty() {
        &zeros
    } else {
        s.payload
    };
    let seg = OutSegment {
        path: Path::new(s.src, s.dst).expect("fixture addresses of one family"),
        seq: SeqNumber(s.seq),
        ack: SeqNumber(s.ack),
        flags: s.flags,
        window: s.win,
        opts: s.opts,
        payload: (payload, &[]),
        ip_id: 1,
    };
    let n = packet::build(&seg, &mut buf).expect("fixture builds");
    buf.truncate(n);
    if !with_payload {
        let hdr = n - payload.len();
        buf.truncate(hdr);
    }
    buf
}

pub(crate) fn config() -> EngineConfig {
    EngineConfig {
        mappings: vec![
            TargetMapping {
                online_ip: None,
                online_port: SERVICE.port(),
                target: TARGET,
            },
            TargetMapping {
                online_ip: None,
                online_port: SERVICE6.port(),
                target: TARGET6,
            },
        ],
        ..EngineConfig::default()
    }
}

/// The engine under test with a virtual clock.
pub(crate) struct H {
    pub e: Engine,
    pub now: Instant,
    pub t0: Instant,
    buf: Vec<u8>,
    /// Super-segments (segmentation offload) seen by `sent`.
    pub supers: usize,
    /// `sent` takes transmits as the live sender does: payloads by reference, gathered after
    /// the last transmit of the round.
    pub by_ref: bool,
    /// Super-segments whose payload `sent` gathered by reference.
    pub gathered: usize,
}

impl H {
    pub fn new(cfg: EngineConfig) -> H {
        let t0 = Instant::now();
        H {
            e: Engine::new(cfg),
            now: t0,
            t0,
            buf: vec![0; 70_000],
            supers: 0,
            by_ref: false,
            gathered: 0,
        }
    }

    pub fn capture(&mut self, s: Seg) {
        let pkt = build(&s, true);
        self.e.handle_captured(self.now, &pkt);
    }

    pub fn respond(&mut self, s: Seg) {
        let pkt = build(&s, false);
        self.e.handle_response(self.now, &pkt);
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.e.handle_timeout(self.now);
    }

    /// Drains and parses everything the engine wants to send, checking every checksum.
    pub fn sent(&mut self) -> Vec<Out> {
        let mut round = Vec::new();
        loop {
            let tx = if self.by_ref {
                self.e.poll_transmit_by_ref(self.now, &mut self.buf)
            } else {
                self.e.poll_transmit(self.now, &mut self.buf)
            };
            let Some(tx) = tx else { break };
            round.push((tx, self.buf[..tx.len].to_vec()));
            assert!(round.len() < 10_000, "engine keeps transmitting");
        }
        let mut v = Vec::new();
        for (tx, mut pkt) in round {
            if let Some(r) = tx.payload {
                assert!(self.by_ref && tx.gso_size.is_some());
                let (a, b) = self
                    .e
                    .payload(&r)
                    .expect("the payload is held until gathered");
                assert_eq!(a.len() + b.len(), r.len());
                pkt.extend_from_slice(a);
                pkt.extend_from_slice(b);
                self.gathered += 1;
            }
            let pieces = match tx.gso_size {
                // A super-segment: cut it as the kernel would, then check every piece.
                Some(mss) => {
                    self.supers += 1;
                    let mut pieces = Vec::new();
                    let mut scratch = vec![0u8; 65_536];
                    tcpclone::wire::gso::segment(&pkt, usize::from(mss), &mut scratch, |p| {
                        pieces.push(p.to_vec())
                    })
                    .expect("a super-segment segments");
                    assert!(pieces.len() > 1, "a super-segment longer than one MSS");
                    pieces
                }
                None => vec![pkt],
            };
            for pkt in &pieces {
                assert!(packet::checksums_ok(pkt), "bad checksum: {pkt:02x?}");
                let p = packet::parse(pkt, false).expect("engine output parses");
                assert_eq!(tx.dst, p.dst);
                v.push(Out {
                    src: SocketAddr::new(p.src, p.src_port),
                    dst: SocketAddr::new(p.dst, p.dst_port),
                    seq: p.seq.value(),
                    ack: p.ack.value(),
                    flags: p.flags,
                    payload: p.payload.to_vec(),
                    opts: p.opts,
                });
            }
        }
        v
    }

    pub fn events(&mut self) -> Vec<EngineEvent> {
        std::iter::from_fn(|| self.e.poll_event()).collect()
    }
}

/// Feeds captured client segments (`send!(h, seg, ...)`) to the engine.
macro_rules! send {
    ($h:expr, $($seg:expr),+ $(,)?) => {{ $( $h.capture($seg); )+ }};
}

/// Feeds target reports to the engine.
macro_rules! respond {
    ($h:expr, $($seg:expr),+ $(,)?) => {{ $( $h.respond($seg); )+ }};
}

/// Asserts the exact (seq, ack, flags, payload) of what the engine sends next.
macro_rules! expect {
    ($h:expr, []) => {{
        let got = $h.sent();
        assert!(got.is_empty(), "expected nothing, engine sent {got:?}");
    }};
    ($h:expr, [$($want:expr),+ $(,)?]) => {{
        let got = $h.sent();
        let want: Vec<(u32, u32, u8, Vec<u8>)> = vec![$( ($want.seq, $want.ack, $want.flags, $want.payload.to_vec()) ),+];
        let got_cmp: Vec<(u32, u32, u8, Vec<u8>)> = got.iter().map(|o| (o.seq, o.ack, o.flags, o.payload.clone())).collect();
        assert_eq!(got_cmp, want, "full output: {got:?}");
        got
    }};
}

/// What we expect the engine to send: seq, ack, flags, payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: &'static [u8],
}

/// The engine's segments towards the target after the handshake.
pub(crate) const WANT: Want = Want {
    seq: CLIENT_ISN + 1,
    ack: TARGET_ISN + 1,
    flags: ACK | PSH,
    payload: b"",
};

/// A session whose SYN went out and awaits the SYN-ACK.
pub(crate) fn session_syn_sent(cfg: EngineConfig) -> H {
    let mut h = H::new(cfg);
    send!(h, CLIENT_SYN);
    let out = h.sent();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags, SYN);
    h.events();
    h
}

/// An established session (client's handshake ACK seen, nothing in flight).
pub(crate) fn session_established_with(cfg: EngineConfig) -> H {
    let mut h = session_syn_sent(cfg);
    send!(
        h,
        Seg {
            flags: ACK,
            ..TEMPLATE
        }
    );
    respond!(h, SYN_ACK);
    expect!(
        h,
        [Want {
            seq: CLIENT_ISN + 1,
            flags: ACK,
            ..WANT
        }]
    );
    h
}

/// An established session with the default test config.
pub(crate) fn session_established() -> H {
    session_established_with(config())
}

/// A request of one segment.
pub(crate) const REQUEST: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
/// The client sequence number just past [`REQUEST`].
pub(crate) const REQUEST_END: u32 = CLIENT_ISN + 1 + REQUEST.len() as u32;

/// [`session_established`] whose client sent [`REQUEST`], what went to the target read.
pub(crate) fn request_sent() -> H {
    let mut h = session_established();
    h.capture(Seg {
        payload: REQUEST,
        ..TEMPLATE
    });
    h.sent();
    h
}

#[allow(dead_code)]
pub(crate) const ALL_FLAGS: [u8; 5] = [FIN, SYN, RST, PSH, ACK];
#[allow(dead_code)]
pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// After the macros: textual scope makes them visible there.
mod fuzz_smoke;
pub(crate) mod gso;
mod ooo;
mod scripted;
mod sim;
