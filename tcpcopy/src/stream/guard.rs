//! Offline stream mode's extra target check: replaying a capture into the very server it was
//! captured from. Pure: the caller reads the capture and decides.
//!
//! Every stream mode first applies raw mode's rule (`tcpcopy::live::target_problems`: a local,
//! loopback or `-x`-online target is refused unless `--force`, and the check fails closed). An
//! offline replay or a fleet worker may run on any host, so the targets it must not reach also
//! include production's server itself, which only the traffic names: the server endpoint
//! (address and port) the capture's sessions went to ([`captured_server_problems`]), or, for
//! `--from`, each recorded session's server as the session arrives
//! ([`recorded_server_problem`]), before any of it is replayed.

use super::decode::decode;
use crate::mapping::TargetMapping;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use tcpclone::capture::PacketSource;

/// How many packets of the capture are looked at for its server endpoints: a capture of one
/// service names its servers in its first sessions; reading a large file twice would not pay.
pub const SCAN_PACKETS: usize = 100_000;

/// The endpoints of the mapped services in the first `max_packets` packets of `src`: every
/// segment's side whose port is a mapping's online port (and whose address is its online
/// address, when `-x` names one). A read error ends the scan (the replay reports it).
pub fn captured_servers<S: PacketSource>(
    src: &mut S,
    mappings: &[TargetMapping],
    max_packets: usize,
) -> BTreeSet<SocketAddr> {
    let is_server = |a: &SocketAddr| {
        mappings.iter().any(|m| {
            a.port() == m.online_port
                && m.online_ip
                    .is_none_or(|ip| ip.to_canonical() == a.ip().to_canonical())
        })
    };
    let mut found = BTreeSet::new();
    for _ in 0..max_packets {
        let Ok(Some(p)) = src.next_packet() else {
            break;
        };
        if let Some(seg) = decode(p.linktype, p.data) {
            for end in [seg.dst, seg.src] {
                if is_server(&end) {
                    found.insert(SocketAddr::new(end.ip().to_canonical(), end.port()));
                }
            }
        }
    }
    found
}

/// The targets that are one of the capture's server endpoints `captured` (production), one
/// line each; the other rules are raw mode's (see the module comment).
pub fn captured_server_problems(
    mappings: &[TargetMapping],
    captured: &BTreeSet<SocketAddr>,
) -> Vec<String> {
    let mut problems: Vec<String> = mappings
        .iter()
        .map(|m| SocketAddr::new(m.target.ip().to_canonical(), m.target.port()))
        .filter(|t| captured.contains(t))
        .map(|t| format!("target {t} is the server the capture was taken from (production)"))
        .collect();
    problems.sort();
    problems.dedup();
    problems
}

/// What is wrong with replaying a recorded session (fleet `--from`) whose original server was
/// `server` to the mappings' targets: a target that is that server (production) is.
pub fn recorded_server_problem(mappings: &[TargetMapping], server: SocketAddr) -> Option<String> {
    let server = SocketAddr::new(server.ip().to_canonical(), server.port());
    mappings
        .iter()
        .any(|m| SocketAddr::new(m.target.ip().to_canonical(), m.target.port()) == server)
        .then(|| format!("target {server} is the server the recording was taken from (production)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::parse_mappings;
    use tcpclone::capture::{CaptureReader, LinkType, PcapWriter, Timestamp, TsPrecision};

    /// Ethernet/IPv4/TCP SYN `src` → `dst` (addresses as 4 bytes, ports).
    fn syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[46] = 0x50;
        f[47] = 0x02;
        f
    }

    fn capture(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = PcapWriter::new(
            &mut buf,
            "t.pcap",
            LinkType::ETHERNET,
            TsPrecision::Micro,
            65535,
        )
        .unwrap();
        for (i, f) in frames.iter().enumerate() {
            w.write_packet(Timestamp(i as u64 * 1000), f.len() as u32, f)
                .unwrap();
        }
        drop(w);
        buf
    }

    #[test]
    fn the_captures_own_server_is_found_however_spelled() {
        let pcap = capture(&[
            syn([198, 18, 0, 1], 40000, [198, 18, 1, 1], 6379),
            syn([198, 18, 0, 1], 40001, [198, 18, 1, 2], 80),
            // Another service: not a server of the mapping.
            syn([198, 18, 0, 1], 40002, [198, 18, 1, 3], 5432),
        ]);
        let maps = parse_mappings("6379-198.18.9.9:6379").unwrap();
        let mut r = CaptureReader::from_reader(&pcap[..], "t.pcap").unwrap();
        let servers = captured_servers(&mut r, &maps, SCAN_PACKETS);
        assert_eq!(
            servers.into_iter().collect::<Vec<_>>(),
            ["198.18.1.1:6379".parse::<SocketAddr>().unwrap()]
        );
        let servers: BTreeSet<SocketAddr> = ["198.18.1.1:6379".parse().unwrap()].into();
        // Another host, or the same host on another port: not this rule's (raw mode's rule
        // judges loopback and local targets).
        for ok in ["6379-198.18.9.9:6379", "6379-198.18.1.1:6380"] {
            let m = parse_mappings(ok).unwrap();
            assert!(captured_server_problems(&m, &servers).is_empty(), "{ok}");
        }
        // The capture's server itself, however spelled.
        for bad in ["6379-198.18.1.1:6379", "6379-[::ffff:198.18.1.1]:6379"] {
            let m = parse_mappings(bad).unwrap();
            let p = captured_server_problems(&m, &servers);
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            assert!(
                p[0].contains("198.18.1.1:6379 is the server the capture was taken from"),
                "{bad}: {p:?}"
            );
        }
    }

    #[test]
    fn the_scan_stops_after_its_bound_and_at_a_damaged_record() {
        let frames: Vec<Vec<u8>> = (0..10u8)
            .map(|i| syn([198, 18, 0, 1], 40000, [198, 18, 1, i], 6379))
            .collect();
        let pcap = capture(&frames);
        let maps = parse_mappings("6379-127.0.0.1:6379").unwrap();
        let mut r = CaptureReader::from_reader(&pcap[..], "t.pcap").unwrap();
        assert_eq!(captured_servers(&mut r, &maps, 3).len(), 3);
        let cut = &pcap[..pcap.len() - 10];
        let mut r = CaptureReader::from_reader(cut, "t.pcap").unwrap();
        assert_eq!(captured_servers(&mut r, &maps, SCAN_PACKETS).len(), 9);
        // -x naming the online address: only that server.
        let maps = parse_mappings("198.18.1.4:6379-127.0.0.1:6379").unwrap();
        let mut r = CaptureReader::from_reader(&pcap[..], "t.pcap").unwrap();
        let s = captured_servers(&mut r, &maps, SCAN_PACKETS);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_recorded_sessions_server_is_refused_however_spelled() {
        let server: SocketAddr = "198.18.1.1:6379".parse().unwrap();
        for bad in ["6379-198.18.1.1:6379", "6379-[::ffff:198.18.1.1]:6379"] {
            let m = parse_mappings(bad).unwrap();
            let p = recorded_server_problem(&m, server).expect(bad);
            assert!(p.contains("the server the recording was taken from"), "{p}");
        }
        let mapped: SocketAddr = "[::ffff:198.18.1.1]:6379".parse().unwrap();
        let m = parse_mappings("6379-198.18.1.1:6379").unwrap();
        assert!(recorded_server_problem(&m, mapped).is_some());
        // Another port, another host: not the recorded server.
        for ok in ["6379-198.18.1.1:6380", "6379-198.18.9.9:6379"] {
            let m = parse_mappings(ok).unwrap();
            assert_eq!(recorded_server_problem(&m, server), None, "{ok}");
        }
    }
}
