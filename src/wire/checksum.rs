//! Internet checksums (RFC 1071): one's complement sums, full recomputation for the IPv4 header,
//! TCP, UDP, ICMP and ICMPv6 with IPv4/IPv6 pseudo-headers, and incremental updates (RFC 1624).
//!
//! Sums are carried as `u32` accumulators of big-endian 16-bit words and folded at the end, so
//! partial sums (a pseudo-header, then a segment) can be added together. Nothing here allocates.

use super::IpProtocol;

/// Adds the big-endian 16-bit words of `data` to `acc` (an odd last byte is padded with zero).
///
/// The words are summed eight bytes at a time in the machine's byte order with the carries
/// added back (end-around carry), then folded to 16 bits and swapped once: the one's complement
/// sum does not depend on byte order (RFC 1071 §2(B)), so this is the same sum as adding the
/// big-endian words one by one, without a byte swap per word.
pub fn sum(data: &[u8], acc: u32) -> u32 {
    let mut s = 0u64;
    let mut add = |w: u64| {
        let (r, carry) = s.overflowing_add(w);
        s = r + u64::from(carry);
    };
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        add(u64::from_ne_bytes([
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
        ]));
    }
    // The remainder starts at a multiple of 8: its 16-bit words keep their alignment, and where
    // a word sits inside the 64-bit accumulator does not matter (all lanes are folded together).
    let mut rest = chunks.remainder();
    if let [a, b, c, d, tail @ ..] = rest {
        add(u64::from(u32::from_ne_bytes([*a, *b, *c, *d])));
        rest = tail;
    }
    if let [a, b, tail @ ..] = rest {
        add(u64::from(u16::from_ne_bytes([*a, *b])));
        rest = tail;
    }
    if let [a] = rest {
        // An odd last byte is the high half of a big-endian word padded with zero.
        add(u64::from(u16::from_ne_bytes([*a, 0])));
    }
    let mut x = (s & 0xffff_ffff) + (s >> 32);
    x = (x & 0xffff_ffff) + (x >> 32);
    x = (x & 0xffff) + (x >> 16);
    x = (x & 0xffff) + (x >> 16);
    x = (x & 0xffff) + (x >> 16);
    let folded = u16::from_be(x as u16);
    fold64(u64::from(acc) + u64::from(folded))
}

/// The reference of [`sum`]: one big-endian 16-bit word at a time (RFC 1071 §4.1).
#[cfg(test)]
fn sum_words(data: &[u8], acc: u32) -> u32 {
    let mut acc = u64::from(acc);
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold64(acc)
}

fn fold64(mut acc: u64) -> u32 {
    while acc > 0xffff_ffff {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a 32-bit accumulator into 16 bits with end-around carry (not complemented).
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for an accumulator: the complement of the folded sum.
pub fn finish(acc: u32) -> u16 {
    !fold(acc)
}

/// Sum of the IPv4 pseudo-header (RFC 793 §3.1, RFC 768): addresses, protocol, L4 length.
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], protocol: IpProtocol, l4_len: u32) -> u32 {
    let words = |a: [u8; 4]| {
        let w = u32::from_be_bytes(a);
        u64::from(w >> 16) + u64::from(w & 0xffff)
    };
    let acc = words(src) + words(dst);
    fold64(acc + u64::from(protocol.0) + u64::from(l4_len & 0xffff) + u64::from(l4_len >> 16))
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next header.
pub fn pseudo_header_v6(src: [u8; 16], dst: [u8; 16], protocol: IpProtocol, l4_len: u32) -> u32 {
    let acc = u64::from(sum(&src, 0)) + u64::from(sum(&dst, 0));
    fold64(acc + u64::from(protocol.0) + u64::from(l4_len & 0xffff) + u64::from(l4_len >> 16))
}

/// Sum of `data` with the two bytes at `skip` (a checksum field) taken as zero.
pub fn sum_skipping(data: &[u8], skip: usize, acc: u32) -> u32 {
    let skip = skip.min(data.len());
    let end = (skip + 2).min(data.len());
    let acc = sum(&data[..skip], acc);
    // `skip` is even for every header we handle, so the second half keeps its word alignment.
    sum(&data[end..], acc)
}

/// Full IPv4 header checksum (RFC 791 §3.1) of `header` (IHL*4 bytes), ignoring its checksum field.
pub fn ipv4_header(header: &[u8]) -> u16 {
    finish(sum_skipping(header, 10, 0))
}

/// Offset of the checksum field inside an L4 header of `protocol`, if it has one we compute.
pub fn l4_checksum_offset(protocol: IpProtocol) -> Option<usize> {
    match protocol {
        IpProtocol::TCP => Some(16),
        IpProtocol::UDP => Some(6),
        IpProtocol::ICMP | IpProtocol::ICMPV6 => Some(2),
        _ => None,
    }
}

/// Full L4 checksum of `segment` (header + payload) over IPv4; ICMP has no pseudo-header.
/// The segment's own checksum field is ignored. UDP's computed zero is sent as 0xffff (RFC 768).
pub fn l4_v4(src: [u8; 4], dst: [u8; 4], protocol: IpProtocol, segment: &[u8]) -> Option<u16> {
    let off = l4_checksum_offset(protocol)?;
    if segment.len() < off + 2 {
        return None;
    }
    let acc = if protocol == IpProtocol::ICMP {
        0
    } else {
        pseudo_header_v4(src, dst, protocol, segment.len() as u32)
    };
    Some(fix_udp_zero(
        protocol,
        finish(sum_skipping(segment, off, acc)),
    ))
}

/// Full L4 checksum of `segment` over IPv6 (TCP, UDP, ICMPv6 all use the pseudo-header).
pub fn l4_v6(src: [u8; 16], dst: [u8; 16], protocol: IpProtocol, segment: &[u8]) -> Option<u16> {
    let off = l4_checksum_offset(protocol)?;
    if segment.len() < off + 2 {
        return None;
    }
    let acc = pseudo_header_v6(src, dst, protocol, segment.len() as u32);
    Some(fix_udp_zero(
        protocol,
        finish(sum_skipping(segment, off, acc)),
    ))
}

fn fix_udp_zero(protocol: IpProtocol, c: u16) -> u16 {
    if protocol == IpProtocol::UDP && c == 0 {
        0xffff
    } else {
        c
    }
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word changed from `old` to `new`.
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    !fold(acc)
}

/// RFC 1624 incremental update for a 32-bit field (two words).
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    update_bytes(checksum, &old.to_be_bytes(), &new.to_be_bytes())
}

/// RFC 1624 incremental update for a word-aligned field of even length (addresses: 4 or 16 bytes).
pub fn update_bytes(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc = u32::from(!checksum);
    for (o, n) in old.chunks(2).zip(new.chunks(2)) {
        let o = u16::from_be_bytes([o[0], *o.get(1).unwrap_or(&0)]);
        let n = u16::from_be_bytes([n[0], *n.get(1).unwrap_or(&0)]);
        acc += u32::from(!o) + u32::from(n);
    }
    !fold(acc)
}

/// Incremental update of a UDP checksum: zero means "no checksum" (IPv4) and stays zero; a
/// result of zero is sent as 0xffff.
pub fn update_udp(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    if checksum == 0 {
        return 0;
    }
    let c = update_bytes(checksum, old, new);
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// True when `data` (checksum field included) sums to 0xffff, i.e. its checksum verifies.
pub fn verifies(data: &[u8], acc: u32) -> bool {
    fold(sum(data, acc)) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    // IPv4 header of the first SYN in pcaps/http_keepalive.pcap (checksum 0xb91e).
    const IP_HDR: [u8; 20] = hex!("4500003c65744000 4006b91e c612c801 c612c802");

    #[test]
    fn ipv4_header_matches_capture() {
        assert_eq!(ipv4_header(&IP_HDR), 0xb91e);
        assert!(verifies(&IP_HDR, 0));
        let mut bad = IP_HDR;
        bad[11] ^= 1;
        assert!(!verifies(&bad, 0));
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000.
        assert_eq!(update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn incremental_equals_full_on_ttl_change() {
        let mut h = IP_HDR;
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] = 7;
        let new = u16::from_be_bytes([h[8], h[9]]);
        let inc = update_u16(0xb91e, old, new);
        assert_eq!(inc, ipv4_header(&h));
    }

    #[test]
    fn wide_sum_equals_word_by_word_sum() {
        // Every length up to 70 (all remainders), every start offset, carries from 0xff bytes,
        // and a nonzero accumulator: the folded sums agree.
        let mut data = [0u8; 80];
        let mut x = 0x9e37_79b9u32;
        for b in data.iter_mut() {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *b = (x >> 24) as u8;
        }
        for fill in [None, Some(0xffu8), Some(0u8)] {
            let mut d = data;
            if let Some(f) = fill {
                d.fill(f);
            }
            for start in 0..8 {
                for len in 0..70 {
                    let s = &d[start..start + len];
                    for acc in [0u32, 1, 0xffff, 0x1_2345, 0xffff_ffff] {
                        assert_eq!(fold(sum(s, acc)), fold(sum_words(s, acc)), "{start} {len}");
                    }
                }
            }
        }
    }

    #[test]
    fn pseudo_header_v4_equals_word_sum() {
        let (s, d) = ([198, 18, 0xff, 0xfe], [0xff, 0xff, 1, 2]);
        for len in [0u32, 20, 0xffff, 0x1_0010] {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&s);
            bytes.extend_from_slice(&d);
            bytes.extend_from_slice(&[0, 6]);
            let want = sum_words(&bytes, (len & 0xffff) + (len >> 16));
            let got = pseudo_header_v4(s, d, IpProtocol::TCP, len);
            assert_eq!(fold(got), fold(want));
        }
    }

    #[test]
    fn odd_length_sum_pads() {
        assert_eq!(sum(&[0x01], 0), 0x0100);
        assert_eq!(sum(&[0x01, 0x02, 0x03], 0), 0x0102 + 0x0300);
        assert_eq!(fold(0x1_fffe), 0xffff);
    }
}
