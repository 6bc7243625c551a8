//! IP-layer edits of the [`Rewriter`]: TOS/TTL/traffic class, ports, `-S`/`-D`/`-N` addresses,
//! ARP under `-N`, and the checksums: patched incrementally (RFC 1624) or recomputed in full.
//!
//! Works on a frame already parsed into a [`Layout`]; it must never change a frame's length,
//! log, or perform I/O.

use super::{ChecksumMode, Rewriter};
use crate::wire::checksum;
use crate::wire::{be16, put16, EtherType, IpProtocol, IpVersion, Layout};

impl Rewriter {
    /// L3/L4 edits on `buf` described by `layout`: TOS/TTL/traffic class, ports, addresses, ARP.
    pub(super) fn edit_l3(&self, layout: &Layout, buf: &mut [u8]) {
        // Incremental mode patches every checksum (RFC 1624). Full mode recomputes afterwards, so
        // it only patches the L4 checksum where a full recompute is impossible (snapped records,
        // fragments), as tcprewrite does. Keep patches nothing.
        let inc_ip = self.mode == ChecksumMode::Incremental;
        let l3 = layout.l3_offset;
        let Some(ip) = layout.ip else {
            if layout.ethertype == EtherType::ARP {
                self.edit_arp(l3, buf);
            }
            return;
        };
        let inc = inc_ip || (self.mode == ChecksumMode::Full && !ip.l4_checksummable());
        // Where the L4 checksum lives, if we may patch it (TCP/UDP header captured).
        let l4 = ip.l4_offset;
        let ip_end = layout.ip_end(buf.len());
        let l4_csum: Option<(usize, bool)> = match (l4, ip.protocol) {
            (Some(o), IpProtocol::TCP)
                if ip_end >= o + 20 && usize::from(buf[o + 12] >> 4) >= 5 =>
            {
                Some((o + 16, false))
            }
            (Some(o), IpProtocol::UDP) if ip_end >= o + 8 => Some((o + 6, true)),
            (Some(o), IpProtocol::ICMPV6) if ip_end >= o + 4 => Some((o + 2, false)),
            _ => None,
        };
        let ports_ok =
            matches!(ip.protocol, IpProtocol::TCP | IpProtocol::UDP) && l4_csum.is_some();
        match ip.version {
            IpVersion::V4 => {
                if let Some(tos) = self.tos {
                    let old = be16(buf, l3);
                    buf[l3 + 1] = tos;
                    if inc_ip {
                        patch16(buf, l3 + 10, old, be16(buf, l3), false);
                    }
                }
                if let Some(t) = self.ttl {
                    let old = be16(buf, l3 + 8);
                    buf[l3 + 8] = t.apply(buf[l3 + 8]);
                    if inc_ip {
                        patch16(buf, l3 + 10, old, be16(buf, l3 + 8), false);
                    }
                }
            }
            IpVersion::V6 => {
                if let Some(t) = self.ttl {
                    buf[l3 + 7] = t.apply(buf[l3 + 7]);
                }
                if let Some(tc) = self.tclass {
                    let w = u32::from_be_bytes([buf[l3], buf[l3 + 1], buf[l3 + 2], buf[l3 + 3]]);
                    let w = (w & 0xf00f_ffff) | (u32::from(tc) << 20);
                    buf[l3..l3 + 4].copy_from_slice(&w.to_be_bytes());
                }
            }
        }
        // Ports.
        if ports_ok && !self.portmap.is_empty() {
            let (o, (c, udp)) = (l4.unwrap_or(0), l4_csum.unwrap_or((0, false)));
            for field in [o, o + 2] {
                let old = be16(buf, field);
                if let Some(new) = self
                    .portmap
                    .iter()
                    .find(|p| (p.lo..=p.hi).contains(&old))
                    .map(|p| p.to)
                {
                    if new != old {
                        put16(buf, field, new);
                        if inc {
                            patch16(buf, c, old, new, udp);
                        }
                    }
                }
            }
        }
        // Addresses.
        if self.srcipmap.is_empty() && self.dstipmap.is_empty() && self.pnat_src.is_empty() {
            return;
        }
        // ICMPv4 has no pseudo-header; its checksum does not cover the addresses.
        let pseudo = l4_csum.filter(|_| ip.protocol != IpProtocol::ICMP);
        let v4 = ip.version == IpVersion::V4;
        let (alen, src_off) = if v4 { (4, l3 + 12) } else { (16, l3 + 8) };
        for (off, is_src) in [(src_off, true), (src_off + alen, false)] {
            let (first, pnat) = if is_src {
                (&self.srcipmap, &self.pnat_src)
            } else {
                (&self.dstipmap, &self.pnat_dst)
            };
            let mut ob = [0u8; 16];
            ob[..alen].copy_from_slice(&buf[off..off + alen]);
            let mut nb = [0u8; 16];
            if v4 {
                let old = u32::from_be_bytes([ob[0], ob[1], ob[2], ob[3]]);
                let mut new = first.map4(old).unwrap_or(old);
                new = pnat.map4(new).unwrap_or(new);
                if new == old {
                    continue;
                }
                nb[..4].copy_from_slice(&new.to_be_bytes());
            } else {
                let old = u128::from_be_bytes(ob);
                let mut new = first.map6(old).unwrap_or(old);
                new = pnat.map6(new).unwrap_or(new);
                if new == old {
                    continue;
                }
                nb = new.to_be_bytes();
            }
            buf[off..off + alen].copy_from_slice(&nb[..alen]);
            if inc_ip && v4 {
                let c = checksum::update_bytes(be16(buf, l3 + 10), &ob[..4], &nb[..4]);
                put16(buf, l3 + 10, c);
            }
            if inc {
                if let Some((c, udp)) = pseudo {
                    patch_bytes(buf, c, &ob[..alen], &nb[..alen], udp);
                }
            }
        }
    }

    /// `-N` on ARP requests and replies for IPv4 over 6-byte hardware addresses.
    fn edit_arp(&self, l3: usize, buf: &mut [u8]) {
        if self.pnat_src.is_empty() || buf.len() < l3 + 28 {
            return;
        }
        let a = &buf[l3..];
        if be16(a, 2) != EtherType::IPV4.0 || a[4] != 6 || a[5] != 4 {
            return;
        }
        let op = be16(a, 6);
        let (sender_map, target_map) = match op {
            // tcprewrite maps a request's sender with the destination map and its target with the
            // source map, and the reverse for replies; with one -N both maps are the same.
            1 => (&self.pnat_dst, &self.pnat_src),
            2 => (&self.pnat_src, &self.pnat_dst),
            _ => return,
        };
        for (off, map) in [(l3 + 14, sender_map), (l3 + 24, target_map)] {
            let old = u32::from_be_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]);
            if let Some(new) = map.map4(old) {
                buf[off..off + 4].copy_from_slice(&new.to_be_bytes());
            }
        }
    }
}

fn patch16(buf: &mut [u8], csum_off: usize, old: u16, new: u16, udp: bool) {
    patch_bytes(buf, csum_off, &old.to_be_bytes(), &new.to_be_bytes(), udp);
}

fn patch_bytes(buf: &mut [u8], csum_off: usize, old: &[u8], new: &[u8], udp: bool) {
    let c = be16(buf, csum_off);
    let n = if udp {
        checksum::update_udp(c, old, new)
    } else {
        checksum::update_bytes(c, old, new)
    };
    put16(buf, csum_off, n);
}

/// Recomputes in full the IPv4 header checksum and, when the whole unfragmented datagram is
/// present, the TCP/UDP/ICMP/ICMPv6 checksum of the packet in `buf` described by `layout`.
/// IPv4 UDP checksums of zero (none) stay zero.
pub fn fill_checksums(layout: &Layout, buf: &mut [u8]) {
    let Some(ip) = layout.ip else {
        return;
    };
    let l3 = layout.l3_offset;
    if ip.version == IpVersion::V4 {
        let c = checksum::ipv4_header(&buf[l3..l3 + ip.header_len]);
        put16(buf, l3 + 10, c);
    }
    if !ip.l4_checksummable() {
        return;
    }
    let (Some(o), end) = (ip.l4_offset, layout.ip_end(buf.len())) else {
        return;
    };
    let Some(coff) = checksum::l4_checksum_offset(ip.protocol) else {
        return;
    };
    if end < o + coff + 2 {
        return;
    }
    let c = match ip.version {
        IpVersion::V4 => {
            if ip.protocol == IpProtocol::ICMPV6 {
                return;
            }
            if ip.protocol == IpProtocol::UDP && be16(buf, o + coff) == 0 {
                return;
            }
            let (s, d) = crate::wire::layout_addrs_v4(&buf[l3..]);
            checksum::l4_v4(s, d, ip.protocol, &buf[o..end])
        }
        IpVersion::V6 => {
            if ip.protocol == IpProtocol::ICMP {
                return;
            }
            let (s, d) = crate::wire::layout_addrs_v6(&buf[l3..]);
            checksum::l4_v6(s, d, ip.protocol, &buf[o..end])
        }
    };
    if let Some(c) = c {
        put16(buf, o + coff, c);
    }
}
