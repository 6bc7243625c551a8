//! Where captured client segments come from, and what every source shares.
//!
//! - [`ring`]: the default. Each worker reads its own TPACKET_V3 ring per device in place
//!   (PACKET_FANOUT spreads sessions over the workers); no copy, no other thread.
//! - [`libpcap`] (`--capture pcap`): a libpcap handle per device on a thread of its own, handing
//!   the worker [`CopiedBatch`]es of IP packets.
//! - [`offline`] (`--offline`): a capture file replayed with its own timing (the library's reader
//!   and pacing), also as copied batches.
//!
//! Here: the one BPF filter all of them apply ([`capture_filter`]), the link-layer stripping of
//! the copied sources, and the capture clock. This module never sends anything and never
//! captures tcpcopy's own output: the filter excludes every target address and port, and the
//! direction is set to inbound where the device allows.

pub mod copied;
pub mod libpcap;
pub mod offline;
pub mod ring;

pub use copied::{CopiedBatch, CopiedBatchPool, CHANNEL_BATCHES, POOL_BATCHES};
pub use libpcap::{open_live, run_live, LiveCapture};
pub use offline::run_offline;
pub use ring::{open_rings, ring_block_size, ring_ip, LiveRing, RingSpec, Skip};

use crate::mapping::TargetMapping;
use anyhow::{Context, Result};
use std::time::{Duration, Instant};
use tcpclone::capture::LinkType;
use tcpclone::wire::parse_link;

/// The BPF filter: `tcp and dst port P [and dst host IP]` OR'ed across the mappings, minus
/// anything addressed to a target (our own output), ANDed with the user's `-F`.
pub fn capture_filter(mappings: &[TargetMapping], user: Option<&str>) -> String {
    capture_filter_with(mappings, user, false)
}

/// [`capture_filter`]; with `production_answers` (the report on) also the services' answers
/// (`src port P [and src host IP]`), for production's side of the report.
pub fn capture_filter_with(
    mappings: &[TargetMapping],
    user: Option<&str>,
    production_answers: bool,
) -> String {
    let mut wanted: Vec<String> = mappings
        .iter()
        .map(|m| match m.online_ip {
            Some(ip) => format!("(dst port {} and dst host {ip})", m.online_port),
            None => format!("(dst port {})", m.online_port),
        })
        .collect();
    if production_answers {
        wanted.push(answers_clause(mappings));
    }
    let mut targets: Vec<String> = mappings
        .iter()
        .map(|m| {
            format!(
                "(dst host {} and dst port {})",
                m.target.ip(),
                m.target.port()
            )
        })
        .collect();
    targets.sort();
    targets.dedup();
    // Loopback sessions on the production host (health checks, admin tools) are not client
    // traffic and could not be sent anywhere with a 127/8 or ::1 source.
    let mut f = format!(
        "tcp and ({}) and not ({}) and not src net 127.0.0.0/8 and not src host ::1",
        wanted.join(" or "),
        targets.join(" or ")
    );
    if let Some(u) = user {
        f = format!("({f}) and ({u})");
    }
    f
}

/// The filter of a capture ring: [`capture_filter_with`], and with `production_answers` (the
/// report on) the host's own outgoing frames too, but only the services' answers among them
/// (on the production host, production's answers are outgoing frames, which a ring opened
/// without `PACKET_IGNORE_OUTGOING` sees). The direction test is the kernel's packet type
/// (`inbound`: `SKF_AD_PKTTYPE`), so every other outgoing frame is dropped in the kernel.
/// Without a report: exactly [`capture_filter`].
pub fn ring_filter(
    mappings: &[TargetMapping],
    user: Option<&str>,
    production_answers: bool,
) -> String {
    let f = capture_filter_with(mappings, user, production_answers);
    if !production_answers {
        return f;
    }
    format!("({f}) and (inbound or ({}))", answers_clause(mappings))
}

/// `(src port P [and src host IP]) or ...`: the services' answers.
fn answers_clause(mappings: &[TargetMapping]) -> String {
    mappings
        .iter()
        .map(|m| match m.online_ip {
            Some(ip) => format!("(src port {} and src host {ip})", m.online_port),
            None => format!("(src port {})", m.online_port),
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// pcap `DLT_*` values handled (what `pcap_datalink` returns, also for files).
pub(crate) mod dlt {
    pub const NULL: i32 = 0;
    pub const EN10MB: i32 = 1;
    pub const RAW_LINUX: i32 = 12;
    pub const RAW_BSD: i32 = 14;
    pub const RAW: i32 = 101;
    pub const LOOP: i32 = 108;
    pub const LINUX_SLL: i32 = 113;
    pub const IPV4: i32 = 228;
    pub const IPV6: i32 = 229;
    pub const LINUX_SLL2: i32 = 276;
}

/// `PACKET_OUTGOING` in the cooked headers' packet type (linux/if_packet.h).
const PACKET_OUTGOING: u16 = 4;

pub(crate) fn ip_version_ok(p: &[u8]) -> bool {
    matches!(p.first().map(|b| b >> 4), Some(4) | Some(6))
}

/// Strips the link layer: the IP packet inside a frame, or `None` when the frame is not IP, is
/// one of this host's outgoing frames (cooked captures say so), or is too short.
pub fn strip_link(dlt: i32, frame: &[u8]) -> Option<&[u8]> {
    let link = parse_link(LinkType::from_dlt(dlt), frame).ok()?;
    if link.packet_type == Some(PACKET_OUTGOING) || !link.ethertype.is_ip() {
        return None;
    }
    let ip = frame.get(link.l3_offset..)?;
    ip_version_ok(ip).then_some(ip)
}

/// Whether a device's link type is one we can strip.
pub(crate) fn supported_dlt(d: i32) -> bool {
    use dlt::*;
    [
        NULL, EN10MB, RAW_LINUX, RAW_BSD, RAW, LOOP, LINUX_SLL, IPV4, IPV6, LINUX_SLL2,
    ]
    .contains(&d)
}

/// The BPF program of `filter` for a capture ring (the library's one filter builder), keeping
/// whole frames.
pub fn compile_for_ring(filter: &str) -> Result<Vec<tcpclone::sys::ring::SockFilter>> {
    tcpclone::capture::bpf::compile_for_ring(filter, u32::MAX).context("-F/--filter")
}

/// Wall clock in ns since the Unix epoch (the timebase of capture timestamps).
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A live capture's stamp (`stamp_ns`, wall clock) on the monotonic clock: `now` less how long
/// ago the wall clock says it was (`wall_now_ns`, read beside `now`). A stamp from the future
/// (clock stepped back) is `now`.
pub fn live_stamp(now: Instant, wall_now_ns: u64, stamp_ns: u64) -> Instant {
    now.checked_sub(Duration::from_nanos(wall_now_ns.saturating_sub(stamp_ns)))
        .unwrap_or(now)
}

/// A capture file's stamps on the monotonic clock: the first stamp seen is the instant it was
/// seen, every later one that much later or earlier, unscaled by `--speedup` (production's
/// latency as the file recorded it).
#[derive(Debug, Default, Clone, Copy)]
pub struct FileClock {
    anchor: Option<(u64, Instant)>,
}

impl FileClock {
    /// The instant of the file's stamp `stamp_ns`, seen at `now`.
    pub fn at(&mut self, now: Instant, stamp_ns: u64) -> Instant {
        let (s0, t0) = *self.anchor.get_or_insert((stamp_ns, now));
        if stamp_ns >= s0 {
            t0 + Duration::from_nanos(stamp_ns - s0)
        } else {
            t0.checked_sub(Duration::from_nanos(s0 - stamp_ns))
                .unwrap_or(t0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::parse_mappings;

    #[test]
    fn filter_from_mappings() {
        let m = parse_mappings("6379-198.18.1.2:6380,198.18.0.1:80-[2001:db8::2]:80").unwrap();
        let f = capture_filter(&m, Some("not src net 198.18.5.0/24"));
        assert_eq!(
            f,
            "(tcp and ((dst port 6379) or (dst port 80 and dst host 198.18.0.1)) and not \
             ((dst host 198.18.1.2 and dst port 6380) or (dst host 2001:db8::2 and dst port 80)) \
             and not src net 127.0.0.0/8 and not src host ::1) and (not src net 198.18.5.0/24)"
        );
        // It must compile (IPv4 and IPv6 primitives alike).
        let dead = pcap::Capture::dead(pcap::Linktype(dlt::LINUX_SLL2)).unwrap();
        dead.compile(&f, true).unwrap();
    }

    #[test]
    fn filter_with_production_answers() {
        let m = parse_mappings("6379-198.18.1.2:6380,198.18.0.1:80-[2001:db8::2]:80").unwrap();
        let f = capture_filter_with(&m, None, true);
        assert!(
            f.contains("(src port 6379) or (src port 80 and src host 198.18.0.1)"),
            "{f}"
        );
        assert_eq!(
            capture_filter_with(&m, None, false),
            capture_filter(&m, None)
        );
        let dead = pcap::Capture::dead(pcap::Linktype(dlt::LINUX_SLL2)).unwrap();
        dead.compile(&f, true).unwrap();
    }

    #[test]
    fn ring_filter_keeps_only_answers_among_outgoing_frames() {
        let m = parse_mappings("80-198.18.1.2:8080").unwrap();
        assert_eq!(ring_filter(&m, None, false), capture_filter(&m, None));
        let f = ring_filter(&m, None, true);
        assert!(f.ends_with("and (inbound or ((src port 80)))"), "{f}");
        // The ring's compiler takes it: the direction is the kernel's packet type.
        let prog = compile_for_ring(&f).unwrap();
        let pkttype = tcpclone::capture::bpf::SKF_AD_OFF + tcpclone::capture::bpf::SKF_AD_PKTTYPE;
        assert!(prog.iter().any(|i| i.k == pkttype), "{prog:?}");
    }

    #[test]
    fn stamps_on_the_monotonic_clock() {
        let now = Instant::now() + Duration::from_secs(10);
        let wall = 5_000_000_000u64;
        assert_eq!(
            live_stamp(now, wall, wall - 3_000_000),
            now - Duration::from_millis(3)
        );
        assert_eq!(live_stamp(now, wall, wall + 1), now, "from the future");
        let mut c = FileClock::default();
        let s0 = 1_700_000_000_000_000_000u64;
        assert_eq!(c.at(now, s0), now);
        // Seen 1 ms later on the run's clock, stamped 40 ms later in the file: 40 ms.
        let later = c.at(now + Duration::from_millis(1), s0 + 40_000_000);
        assert_eq!(later - now, Duration::from_millis(40));
        assert_eq!(c.at(now, s0 - 2_000_000), now - Duration::from_millis(2));
    }

    #[test]
    fn filter_excludes_our_output() {
        let m = parse_mappings("6379-198.18.1.2:6379").unwrap();
        let dead = pcap::Capture::dead(pcap::Linktype(dlt::RAW_LINUX)).unwrap();
        let prog = dead.compile(&capture_filter(&m, None), true).unwrap();
        let mut to_prod = ipv4_tcp([198, 18, 10, 2], [198, 18, 10, 1], 6379);
        assert!(prog.filter(&to_prod));
        to_prod[16..20].copy_from_slice(&[198, 18, 1, 2]);
        assert!(
            !prog.filter(&to_prod),
            "a packet to the target must not be captured"
        );
    }

    fn ipv4_tcp(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[32] = 0x50;
        p
    }

    #[test]
    fn strips_link_layers() {
        let ip = ipv4_tcp([198, 18, 10, 2], [198, 18, 10, 1], 80);
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00]);
        eth.extend_from_slice(&ip);
        assert_eq!(strip_link(dlt::EN10MB, &eth), Some(&ip[..]));
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        sll2.extend_from_slice(&ip);
        assert_eq!(strip_link(dlt::LINUX_SLL2, &sll2), Some(&ip[..]));
        sll2[10] = PACKET_OUTGOING as u8;
        assert_eq!(
            strip_link(dlt::LINUX_SLL2, &sll2),
            None,
            "our own outgoing frames are skipped"
        );
        let mut sll = vec![0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x86, 0xdd];
        let mut v6 = vec![0x60u8];
        v6.extend_from_slice(&[0; 39]);
        sll.extend_from_slice(&v6);
        assert_eq!(strip_link(dlt::LINUX_SLL, &sll), Some(&v6[..]));
        assert_eq!(strip_link(dlt::RAW_LINUX, &ip), Some(&ip[..]));
        assert_eq!(strip_link(dlt::EN10MB, &[0u8; 13]), None);
        assert_eq!(strip_link(dlt::EN10MB, &[0u8; 20]), None, "not IP");
        assert_eq!(strip_link(dlt::RAW, &[0x30u8; 20]), None, "bad version");
    }

    #[test]
    fn strips_qinq_cooked_raw_and_loopback() {
        let ip = ipv4_tcp([198, 18, 10, 2], [198, 18, 10, 1], 80);
        // 802.1ad outer tag + 802.1Q inner tag.
        let mut qinq = vec![0u8; 12];
        qinq.extend_from_slice(&[0x88, 0xa8, 0, 200, 0x81, 0x00, 0, 5, 0x08, 0x00]);
        qinq.extend_from_slice(&ip);
        assert_eq!(strip_link(dlt::EN10MB, &qinq), Some(&ip[..]));
        // Truncated inside the second tag, and a tag hiding something that is not IP.
        assert_eq!(strip_link(dlt::EN10MB, &qinq[..20]), None);
        qinq[20..22].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(strip_link(dlt::EN10MB, &qinq), None, "ARP inside tags");
        // Ethertype IPv4, but the header behind it is not IP (version 0).
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&[0u8; 40]);
        assert_eq!(strip_link(dlt::EN10MB, &eth), None, "bad version");
        // SLL: incoming is kept, outgoing skipped, truncated header refused.
        let mut sll = vec![0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&ip);
        assert_eq!(strip_link(dlt::LINUX_SLL, &sll), Some(&ip[..]));
        sll[1] = PACKET_OUTGOING as u8;
        assert_eq!(strip_link(dlt::LINUX_SLL, &sll), None, "outgoing: skipped");
        assert_eq!(strip_link(dlt::LINUX_SLL, &sll[..15]), None);
        // SLL2 truncated.
        let mut sll2 = vec![0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6];
        sll2.extend_from_slice(&[0; 7]);
        assert_eq!(strip_link(dlt::LINUX_SLL2, &sll2), None);
        // Raw IP under every DLT that means it; an empty frame.
        for d in [dlt::RAW, dlt::RAW_LINUX, dlt::RAW_BSD, dlt::IPV4] {
            assert_eq!(strip_link(d, &ip), Some(&ip[..]), "DLT {d}");
        }
        assert_eq!(strip_link(dlt::RAW_LINUX, &[]), None);
        // BSD loopback: 4-byte address family first.
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(&ip);
        assert_eq!(strip_link(dlt::NULL, &null), Some(&ip[..]));
        assert_eq!(strip_link(dlt::LOOP, &null), Some(&ip[..]));
        assert_eq!(strip_link(dlt::NULL, &null[..3]), None);
        // A link type we do not read.
        assert_eq!(strip_link(147, &ip), None);
    }

    #[test]
    fn supported_dlts_are_the_ones_stripped() {
        let ip = ipv4_tcp([198, 18, 10, 2], [198, 18, 10, 1], 80);
        for d in -1..300 {
            // A frame of that DLT carrying `ip`, where we know how to build one.
            let frame: Vec<u8> = match d {
                dlt::EN10MB => [&[0u8; 12][..], &[0x08, 0x00], &ip].concat(),
                dlt::LINUX_SLL => [&[0u8; 14][..], &[0x08, 0x00], &ip].concat(),
                dlt::LINUX_SLL2 => [&[0x08, 0x00][..], &[0u8; 18], &ip].concat(),
                dlt::NULL | dlt::LOOP => [&[2u8, 0, 0, 0][..], &ip].concat(),
                _ => ip.clone(),
            };
            assert_eq!(strip_link(d, &frame).is_some(), supported_dlt(d), "DLT {d}");
        }
    }
}
