//! TEMPORARY minimal engine used only to exercise the live glue (raw send, intercept routing)
//! before helper "engine"'s engine lands; selected with `TCPCOPY_SHIM_ENGINE=1`. It forwards
//! client segments of sessions it saw start, with the destination rewritten and the ack taken
//! from the target's last response. No splitting, no pacing, no retransmission. Deleted when the
//! real engine arrives.

use crate::engine::{EngineEvent, Transmit};
use crate::mapping::TargetMapping;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

struct Session {
    target: SocketAddr,
    target_next: Option<u32>,
    target_ts: Option<u32>,
    held: Vec<Vec<u8>>,
}

/// The shim engine.
pub struct ShimEngine {
    mappings: Vec<TargetMapping>,
    sessions: HashMap<(SocketAddr, SocketAddr), Session>,
    out: VecDeque<(Vec<u8>, IpAddr)>,
    events: VecDeque<EngineEvent>,
}

struct View {
    src: IpAddr,
    dst: IpAddr,
    ihl: usize,
    sport: u16,
    dport: u16,
    seq: u32,
    flags: u8,
    payload: usize,
}

fn view(p: &[u8]) -> Option<View> {
    let v = p.first()? >> 4;
    let (src, dst, ihl, total, proto) = match v {
        4 if p.len() >= 20 => {
            let ihl = ((p[0] & 0xf) as usize) * 4;
            let s: [u8; 4] = p[12..16].try_into().ok()?;
            let d: [u8; 4] = p[16..20].try_into().ok()?;
            (
                IpAddr::from(s),
                IpAddr::from(d),
                ihl,
                u16::from_be_bytes([p[2], p[3]]) as usize,
                p[9],
            )
        }
        6 if p.len() >= 40 => {
            let s: [u8; 16] = p[8..24].try_into().ok()?;
            let d: [u8; 16] = p[24..40].try_into().ok()?;
            (
                IpAddr::from(s),
                IpAddr::from(d),
                40,
                40 + u16::from_be_bytes([p[4], p[5]]) as usize,
                p[6],
            )
        }
        _ => return None,
    };
    if proto != 6 || p.len() < ihl + 20 {
        return None;
    }
    let t = &p[ihl..];
    let doff = ((t[12] >> 4) as usize) * 4;
    Some(View {
        src,
        dst,
        ihl,
        sport: u16::from_be_bytes([t[0], t[1]]),
        dport: u16::from_be_bytes([t[2], t[3]]),
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        flags: t[13],
        payload: total.saturating_sub(ihl + doff),
    })
}

/// Offset (within the TCP header) of the timestamp option's TSval, if present.
fn ts_offset(tcp: &[u8]) -> Option<usize> {
    let doff = ((tcp.get(12)? >> 4) as usize) * 4;
    let mut i = 20;
    while i < doff.min(tcp.len()) {
        match tcp[i] {
            0 => return None,
            1 => i += 1,
            k => {
                let l = *tcp.get(i + 1)? as usize;
                if l < 2 {
                    return None;
                }
                if k == 8 && l == 10 && i + 10 <= tcp.len() {
                    return Some(i + 2);
                }
                i += l;
            }
        }
    }
    None
}

fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut it = data.chunks_exact(2);
    for c in &mut it {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = it.remainder() {
        acc += u32::from(*b) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Rewrites destination and ack, recomputes checksums.
fn rewrite(p: &mut Vec<u8>, v: &View, target: SocketAddr, ack: Option<u32>, tsecr: Option<u32>) {
    let ihl = v.ihl;
    if let (Some(e), Some(o)) = (tsecr, ts_offset(&p[ihl..])) {
        p[ihl + o + 4..ihl + o + 8].copy_from_slice(&e.to_be_bytes());
    }
    match (target.ip(), p[0] >> 4) {
        (IpAddr::V4(t), 4) => {
            let total = u16::from_be_bytes([p[2], p[3]]) as usize;
            p.truncate(total);
            p[16..20].copy_from_slice(&t.octets());
            p[10..12].copy_from_slice(&[0, 0]);
            let c = fold(sum(&p[..ihl], 0));
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(t), 6) => {
            let total = 40 + u16::from_be_bytes([p[4], p[5]]) as usize;
            p.truncate(total);
            p[24..40].copy_from_slice(&t.octets());
        }
        _ => return,
    }
    p[ihl + 2..ihl + 4].copy_from_slice(&target.port().to_be_bytes());
    if let Some(a) = ack {
        p[ihl + 8..ihl + 12].copy_from_slice(&a.to_be_bytes());
    }
    p[ihl + 16..ihl + 18].copy_from_slice(&[0, 0]);
    let tcp_len = p.len() - ihl;
    let mut acc = match p[0] >> 4 {
        4 => sum(&p[12..20], 0),
        _ => sum(&p[8..40], 0),
    };
    acc += 6 + tcp_len as u32;
    let c = fold(sum(&p[ihl..], acc));
    p[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
}

impl ShimEngine {
    /// A shim for these mappings.
    pub fn new(mappings: Vec<TargetMapping>) -> Self {
        ShimEngine {
            mappings,
            sessions: HashMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn target_for(&self, dst: IpAddr, dport: u16) -> Option<SocketAddr> {
        self.mappings
            .iter()
            .find(|m| m.online_port == dport && m.online_ip.is_none_or(|ip| ip == dst))
            .map(|m| m.target)
    }

    /// See `Engine::handle_captured`.
    pub fn handle_captured(&mut self, _now: Instant, p: &[u8]) {
        let Some(v) = view(p) else { return };
        let Some(target) = self.target_for(v.dst, v.dport) else {
            return;
        };
        let key = (
            SocketAddr::new(v.src, v.sport),
            SocketAddr::new(v.dst, v.dport),
        );
        let (syn, fin, rst) = (
            v.flags & 0x02 != 0,
            v.flags & 0x01 != 0,
            v.flags & 0x04 != 0,
        );
        if syn {
            if let Some(old) = self.sessions.remove(&key) {
                self.events.push_back(EngineEvent::SessionRemoved {
                    client: key.0,
                    target: old.target,
                });
            }
            self.sessions.insert(
                key,
                Session {
                    target,
                    target_next: None,
                    target_ts: None,
                    held: Vec::new(),
                },
            );
            self.events.push_back(EngineEvent::SessionAdded {
                client: key.0,
                target,
            });
            let mut pkt = p.to_vec();
            rewrite(&mut pkt, &v, target, None, None);
            self.out.push_back((pkt, target.ip()));
            return;
        }
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        match s.target_next {
            Some(a) => {
                let mut pkt = p.to_vec();
                rewrite(&mut pkt, &v, target, Some(a), s.target_ts);
                self.out.push_back((pkt, target.ip()));
            }
            None => s.held.push(p.to_vec()),
        }
        if rst || fin {
            let s = self.sessions.remove(&key).expect("present");
            self.events.push_back(EngineEvent::SessionRemoved {
                client: key.0,
                target: s.target,
            });
        }
    }

    /// See `Engine::handle_response`.
    pub fn handle_response(&mut self, _now: Instant, h: &[u8]) {
        let Some(v) = view(h) else { return };
        let client = SocketAddr::new(v.dst, v.dport);
        let target = SocketAddr::new(v.src, v.sport);
        let Some((key, s)) = self
            .sessions
            .iter_mut()
            .find(|(k, s)| k.0 == client && s.target == target)
        else {
            return;
        };
        let key = *key;
        let next = v
            .seq
            .wrapping_add(v.payload as u32 + u32::from(v.flags & 0x03 != 0));
        let first = s.target_next.is_none();
        s.target_next = Some(next);
        if let Some(o) = ts_offset(&h[v.ihl..]) {
            let t = &h[v.ihl + o..v.ihl + o + 4];
            s.target_ts = Some(u32::from_be_bytes([t[0], t[1], t[2], t[3]]));
        }
        if first {
            for p in std::mem::take(&mut s.held) {
                if let Some(pv) = view(&p) {
                    let mut pkt = p.clone();
                    rewrite(&mut pkt, &pv, s.target, Some(next), s.target_ts);
                    self.out.push_back((pkt, s.target.ip()));
                }
            }
        }
        if v.flags & 0x04 != 0 {
            self.sessions.remove(&key);
            self.events
                .push_back(EngineEvent::SessionRemoved { client, target });
        }
    }

    /// See `Engine::poll_transmit`.
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let (p, dst) = self.out.pop_front()?;
        let len = p.len().min(buf.len());
        buf[..len].copy_from_slice(&p[..len]);
        Some(Transmit { len, dst })
    }

    /// See `Engine::poll_event`.
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }
}
