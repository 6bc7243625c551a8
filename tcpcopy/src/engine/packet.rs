//! Minimal IPv4/IPv6 + TCP parsing and building for the engine, with full checksums.
//!
//! The one hand-written parser left beside `tcpclone::wire`, on purpose: it runs for every
//! captured segment and every intercept report, and parsing with the library's layout and views
//! instead cost more instructions per call and for the whole engine bench (callgrind over
//! `tcpcopy/benches/engine.rs`; the figures: docs/benchmarks.md). Its rules match the
//! library's: IPv6 extension headers walked, fragments refused, a zero IPv4 length read as a
//! super-segment.
//!
//! Parsing tolerates unfinished (offloaded) checksums and GRO/GSO super-segments; building always
//! computes every checksum in full (with `tcpclone::wire::checksum`). Never panics on malformed
//! input; never logs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tcpclone::seq::SeqNumber;
use tcpclone::wire::{checksum, IpProtocol};

/// TCP flag bits (RFC 9293 §3.1).
pub(crate) const FIN: u8 = 0x01;
pub(crate) const SYN: u8 = 0x02;
pub(crate) const RST: u8 = 0x04;
pub(crate) const PSH: u8 = 0x08;
pub(crate) const ACK: u8 = 0x10;

/// TCP options the engine understands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TcpOpts {
    /// Maximum segment size (RFC 9293 §3.7.1).
    pub mss: Option<u16>,
    /// Window scale shift (RFC 7323 §2).
    pub wscale: Option<u8>,
    /// SACK permitted (RFC 2018).
    pub sack_perm: bool,
    /// Timestamps: (TSval, TSecr) (RFC 7323 §3).
    pub ts: Option<(u32, u32)>,
}

/// One TCP segment as raw mode's engine parses it (headers, options, the payload present).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawSegment<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    pub flags: u8,
    pub window: u16,
    pub opts: TcpOpts,
    /// Payload bytes present in the buffer (empty for header-only reports).
    pub payload: &'a [u8],
    /// Payload length the IP header announces (for header-only reports).
    pub payload_len: u32,
}

impl RawSegment<'_> {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// Parses an IP packet carrying TCP. `headers_only`: the payload is absent (an intercept report)
/// and its length comes from the IP header. Returns `None` for anything that is not a first or
/// whole TCP segment.
pub(crate) fn parse(buf: &[u8], headers_only: bool) -> Option<RawSegment<'_>> {
    let version = buf.first()? >> 4;
    let (src, dst, l4_off, ip_end) = match version {
        4 => {
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            if ihl < 20 || buf.len() < ihl {
                return None;
            }
            let frag = be16(buf, 6)?;
            if frag & 0x3fff != 0 || buf[9] != 6 {
                return None;
            }
            let total = usize::from(be16(buf, 2)?);
            // GSO/TSO super-segments may carry 0 here; the captured length is then the truth.
            let end = if total == 0 { buf.len() } else { total };
            if end < ihl {
                return None;
            }
            let s: [u8; 4] = buf[12..16].try_into().ok()?;
            let d: [u8; 4] = buf[16..20].try_into().ok()?;
            (
                IpAddr::V4(Ipv4Addr::from(s)),
                IpAddr::V4(Ipv4Addr::from(d)),
                ihl,
                end,
            )
        }
        6 => {
            if buf.len() < 40 {
                return None;
            }
            let plen = usize::from(be16(buf, 4)?);
            let end = if plen == 0 { buf.len() } else { 40 + plen };
            let s: [u8; 16] = buf[8..24].try_into().ok()?;
            let d: [u8; 16] = buf[24..40].try_into().ok()?;
            let mut next = buf[6];
            let mut off = 40;
            // Skip hop-by-hop, routing and destination-options headers (RFC 8200 §4).
            let mut hops = 0;
            while next != 6 {
                hops += 1;
                if hops > 8 || !matches!(next, 0 | 43 | 60) {
                    return None;
                }
                next = *buf.get(off)?;
                off += (usize::from(*buf.get(off + 1)?) + 1) * 8;
            }
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                off,
                end,
            )
        }
        _ => return None,
    };
    let tcp = buf.get(l4_off..)?;
    if tcp.len() < 20 {
        return None;
    }
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < 20 || tcp.len() < doff {
        return None;
    }
    let opts = parse_opts(&tcp[20..doff]);
    let announced = ip_end.saturating_sub(l4_off + doff);
    let (payload, payload_len) = if headers_only {
        (&[][..], announced)
    } else {
        let avail = buf.len().min(ip_end).saturating_sub(l4_off + doff);
        let p = &tcp[doff..doff + avail];
        (p, avail)
    };
    Some(RawSegment {
        src,
        dst,
        src_port: be16(tcp, 0)?,
        dst_port: be16(tcp, 2)?,
        seq: SeqNumber(be32(tcp, 4)?),
        ack: SeqNumber(be32(tcp, 8)?),
        flags: tcp[13],
        window: be16(tcp, 14)?,
        opts,
        payload,
        payload_len: u32::try_from(payload_len).ok()?,
    })
}

fn parse_opts(mut o: &[u8]) -> TcpOpts {
    let mut out = TcpOpts::default();
    while let Some(&kind) = o.first() {
        match kind {
            0 => break,
            1 => {
                o = &o[1..];
                continue;
            }
            _ => {}
        }
        let Some(&len) = o.get(1) else { break };
        let len = usize::from(len);
        if len < 2 || len > o.len() {
            break;
        }
        let body = &o[2..len];
        match (kind, body.len()) {
            (2, 2) => out.mss = Some(u16::from_be_bytes([body[0], body[1]])),
            (3, 1) => out.wscale = Some(body[0].min(14)),
            (4, 0) => out.sack_perm = true,
            (8, 8) => {
                let v = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let e = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                out.ts = Some((v, e));
            }
            _ => {}
        }
        o = &o[len..];
    }
    out
}

/// Encodes options; returns the length written (a multiple of 4, at most 40).
pub(crate) fn write_opts(o: &TcpOpts, out: &mut [u8; 40]) -> usize {
    let mut n = 0;
    if let Some(mss) = o.mss {
        out[n..n + 4].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
        n += 4;
    }
    match (o.sack_perm, o.ts) {
        (true, Some(_)) => {
            out[n..n + 2].copy_from_slice(&[4, 2]);
            n += 2;
        }
        (true, None) => {
            out[n..n + 4].copy_from_slice(&[1, 1, 4, 2]);
            n += 4;
        }
        (false, Some(_)) => {
            out[n..n + 2].copy_from_slice(&[1, 1]);
            n += 2;
        }
        (false, None) => {}
    }
    if let Some((v, e)) = o.ts {
        out[n] = 8;
        out[n + 1] = 10;
        out[n + 2..n + 6].copy_from_slice(&v.to_be_bytes());
        out[n + 6..n + 10].copy_from_slice(&e.to_be_bytes());
        n += 10;
    }
    if let Some(ws) = o.wscale {
        out[n..n + 4].copy_from_slice(&[1, 3, 3, ws]);
        n += 4;
    }
    n
}

/// The one's complement sums of the header words that are the same in every packet of one
/// connection to the target (addresses, protocol, fixed IPv4 fields): a segment's checksums only
/// add what varies (lengths, IP ID and the TCP bytes). 8 bytes, kept by each session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PathSums {
    /// IPv4 only: version/IHL, flags (DF), TTL/protocol and both addresses.
    ip_sum: u32,
    /// The pseudo-header without its length: both addresses and the protocol.
    pseudo: u32,
}

impl PathSums {
    /// The sums for packets from `src` to `dst`, or `None` when their address families differ.
    pub fn new(src: IpAddr, dst: IpAddr) -> Option<PathSums> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let (s, d) = (s.octets(), d.octets());
                let fixed = 0x4500 + 0x4000 + (64 << 8 | 6);
                Some(PathSums {
                    ip_sum: checksum::sum(&s, checksum::sum(&d, fixed)),
                    pseudo: checksum::pseudo_header_v4(s, d, IpProtocol::TCP, 0),
                })
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => Some(PathSums {
                ip_sum: 0,
                pseudo: checksum::pseudo_header_v6(s.octets(), d.octets(), IpProtocol::TCP, 0),
            }),
            _ => None,
        }
    }
}

/// Both ends of a connection to the target and its [`PathSums`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Path {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub sums: PathSums,
}

impl Path {
    /// The path from `src` to `dst`, or `None` when their address families differ.
    pub fn new(src: SocketAddr, dst: SocketAddr) -> Option<Path> {
        let sums = PathSums::new(src.ip(), dst.ip())?;
        Some(Path { src, dst, sums })
    }
}

/// Everything needed to build one outgoing TCP segment.
pub(crate) struct OutSegment<'a> {
    pub path: Path,
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    pub flags: u8,
    pub window: u16,
    pub opts: TcpOpts,
    /// Payload in at most two pieces (a ring buffer's two halves).
    pub payload: (&'a [u8], &'a [u8]),
    pub ip_id: u16,
}

/// Writes a whole IP packet into `buf`; returns its length, or `None` when `buf` is too small or
/// the address families differ. Every checksum is complete: the IPv4 header's and the TCP
/// checksum over the pseudo-header, header, options and payload (the fixed words' sums come
/// from the [`PathSums`]).
pub(crate) fn build(seg: &OutSegment<'_>, buf: &mut [u8]) -> Option<usize> {
    build_with(seg, buf, false)
}

/// [`build`], or with `partial`, the TCP checksum left for segmentation offload to finish: the
/// field holds the pseudo-header sum only ([`tcpclone::wire::gso::partial_tcp_checksum`]).
pub(crate) fn build_with(seg: &OutSegment<'_>, buf: &mut [u8], partial: bool) -> Option<usize> {
    write(seg, buf, partial, true)
}

/// The headers of the packet [`build_with`] with `partial` would write, alone: the IP header's
/// lengths count the payload, which the caller sends from where it lies (its checksum is the
/// kernel's to finish). Returns the headers' length.
pub(crate) fn build_headers(seg: &OutSegment<'_>, buf: &mut [u8]) -> Option<usize> {
    write(seg, buf, true, false)
}

fn write(seg: &OutSegment<'_>, buf: &mut [u8], partial: bool, payload: bool) -> Option<usize> {
    let path = &seg.path;
    let mut optbuf = [0u8; 40];
    let olen = write_opts(&seg.opts, &mut optbuf);
    let tcp_len = 20 + olen + seg.payload.0.len() + seg.payload.1.len();
    let ip_len = if path.src.is_ipv4() { 20 } else { 40 };
    let total = ip_len + tcp_len;
    let written = if payload { total } else { ip_len + 20 + olen };
    if buf.len() < written || total > 65535 + 40 {
        return None;
    }
    let (h, t) = buf[..written].split_at_mut(ip_len);
    match (path.src.ip(), path.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total16 = u16::try_from(total).ok()?;
            h[0] = 0x45;
            h[1] = 0;
            h[2..4].copy_from_slice(&total16.to_be_bytes());
            h[4..6].copy_from_slice(&seg.ip_id.to_be_bytes());
            h[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
            h[8] = 64;
            h[9] = 6;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let sum = path.sums.ip_sum + u32::from(total16) + u32::from(seg.ip_id);
            h[10..12].copy_from_slice(&checksum::finish(sum).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let plen = u16::try_from(tcp_len).ok()?;
            h[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
            h[4..6].copy_from_slice(&plen.to_be_bytes());
            h[6] = 6;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
        }
        _ => return None,
    }
    t[0..2].copy_from_slice(&path.src.port().to_be_bytes());
    t[2..4].copy_from_slice(&path.dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&seg.seq.value().to_be_bytes());
    t[8..12].copy_from_slice(&seg.ack.value().to_be_bytes());
    t[12] = (((20 + olen) / 4) as u8) << 4;
    t[13] = seg.flags;
    t[14..16].copy_from_slice(&seg.window.to_be_bytes());
    t[16..20].fill(0);
    // Options are whole 32-bit words: fixed-size copies rather than a call to memcpy.
    for (d, o) in t[20..20 + olen]
        .chunks_exact_mut(4)
        .zip(optbuf.chunks_exact(4))
    {
        d.copy_from_slice(o);
    }
    if payload {
        let p0 = 20 + olen;
        let p1 = p0 + seg.payload.0.len();
        t[p0..p1].copy_from_slice(seg.payload.0);
        t[p1..].copy_from_slice(seg.payload.1);
    }
    // tcp_len < 2^17: its two 16-bit halves go into the pseudo-header sum.
    let len = tcp_len as u32;
    let c = if partial {
        tcpclone::wire::gso::partial_tcp_checksum(path.sums.pseudo, tcp_len)
    } else {
        let pseudo = path.sums.pseudo + (len & 0xffff) + (len >> 16);
        checksum::finish(checksum::sum(t, pseudo))
    };
    t[16..18].copy_from_slice(&c.to_be_bytes());
    Some(written)
}

/// Ones'-complement partial sum of the TCP pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1).
fn pseudo_sum(src: IpAddr, dst: IpAddr, tcp_len: usize) -> u32 {
    let len = u32::try_from(tcp_len).unwrap_or(u32::MAX);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            checksum::pseudo_header_v4(s.octets(), d.octets(), IpProtocol::TCP, len)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            checksum::pseudo_header_v6(s.octets(), d.octets(), IpProtocol::TCP, len)
        }
        _ => 0,
    }
}

/// True when the IP header checksum (IPv4) and the TCP checksum of a whole packet verify.
pub fn checksums_ok(pkt: &[u8]) -> bool {
    let Some(seg) = parse(pkt, false) else {
        return false;
    };
    let ip_len = match seg.src {
        IpAddr::V4(_) => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            if checksum::fold(checksum::sum(&pkt[..ihl], 0)) != 0xffff {
                return false;
            }
            ihl
        }
        IpAddr::V6(_) => 40,
    };
    let tcp = &pkt[ip_len..];
    checksum::fold(checksum::sum(tcp, pseudo_sum(seg.src, seg.dst, tcp.len()))) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `build` adds precomputed sums of the fixed words; the library's full recomputation over
    /// the bytes written (a separate code path) must give the same checksums, for both families,
    /// every option combination, odd and even lengths, and a payload split in two pieces.
    #[test]
    fn built_checksums_equal_full_recomputation() {
        let ends: [(SocketAddr, SocketAddr); 3] = [
            (
                "198.18.0.9:40000".parse().unwrap(),
                "198.18.1.2:6379".parse().unwrap(),
            ),
            (
                "198.19.255.254:65535".parse().unwrap(),
                "198.18.255.255:1".parse().unwrap(),
            ),
            (
                "[2001:db8::ffff:1]:40000".parse().unwrap(),
                "[2001:db8:ffff::2]:80".parse().unwrap(),
            ),
        ];
        let data: Vec<u8> = (0..1500u32).map(|i| (i * 131 + 7) as u8 | 0x80).collect();
        let mut buf = vec![0u8; 70_000];
        for (src, dst) in ends {
            let path = Path::new(src, dst).expect("one family");
            for (k, len) in [0usize, 1, 2, 7, 47, 536, 1499].into_iter().enumerate() {
                let opts = TcpOpts {
                    mss: (k % 2 == 0).then_some(1460),
                    wscale: (k % 3 == 0).then_some(7),
                    sack_perm: k % 4 < 2,
                    ts: (k % 5 != 1).then_some((0xffff_fff0 + k as u32, 0x8000_0000)),
                };
                let cut = len / 3;
                let seg = OutSegment {
                    path,
                    seq: SeqNumber(0xffff_0000 + len as u32),
                    ack: SeqNumber(0xfedc_ba98),
                    flags: ACK | PSH,
                    window: 65535,
                    opts,
                    payload: (&data[..cut], &data[cut..len]),
                    ip_id: 0xffff - k as u16,
                };
                let n = build(&seg, &mut buf).expect("builds");
                let pkt = &buf[..n];
                assert!(checksums_ok(pkt));
                let got = |at: usize| u16::from_be_bytes([pkt[at], pkt[at + 1]]);
                match (src.ip(), dst.ip()) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        assert_eq!(got(10), checksum::ipv4_header(&pkt[..20]));
                        let want =
                            checksum::l4_v4(s.octets(), d.octets(), IpProtocol::TCP, &pkt[20..]);
                        assert_eq!(Some(got(36)), want);
                    }
                    (IpAddr::V6(s), IpAddr::V6(d)) => {
                        let want =
                            checksum::l4_v6(s.octets(), d.octets(), IpProtocol::TCP, &pkt[40..]);
                        assert_eq!(Some(got(56)), want);
                    }
                    _ => unreachable!(),
                }
                let back = parse(pkt, false).expect("parses back");
                assert_eq!(back.payload, &data[..len]);
                assert_eq!(back.opts, opts);
            }
        }
        let v4: SocketAddr = "198.18.0.9:1".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        assert!(Path::new(v4, v6).is_none());
    }
}
