//! Validated configuration per mode, from the parsed command line ([`crate::cli::Cli`]):
//! [`raw`] produces the [`raw::Settings`] that `live` consumes, [`stream`] the
//! [`crate::stream::StreamCommon`] of stream mode. Here: what both share (the error type,
//! the address-list parsers, the production safety check) and the memory the intercept connections
//! take, which both the check of `-m` and the channel that enforces it need.
//!
//! Plain values only: this module never opens a socket or a file.

pub mod raw;
pub mod stream;

use crate::mapping::TargetMapping;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// Largest number of client addresses a `-c` list may expand to.
const MAX_CLIENT_IPS: usize = 1 << 16;

/// Bytes one connection to intercept may hold (enforced by `live::channel`, counted in -m per
/// connection of every worker): its read buffer and at most one frame being decoded, twice
/// (the ciphertext and the plaintext of the secure layer). Responses are handed to the engine
/// as they are decoded, so nothing else accumulates: when the worker is behind, intercept's
/// answers wait in the socket and TCP holds intercept back.
pub const CHANNEL_CONN_MEMORY: u64 = 64 * 1024 + 2 * tcpclone::proto::MAX_FRAME_LEN as u64;

/// Bytes of registrations waiting for the intercept connections of one worker at most
/// (enforced by `live::channel`), counted in -m: when intercept stops reading, the
/// connection's writes stall and registrations pile up; past this they are dropped and counted
/// as registrations lost (after `WRITE_TIMEOUT` the connection is rebuilt and re-sends every
/// registration it holds).
pub const COMMAND_BACKLOG: u64 = 1 << 20;

/// A flag that failed validation: one line naming the flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {why}")]
pub struct FlagError {
    /// The flag, as `-x/--mapping`.
    pub flag: &'static str,
    /// What is wrong.
    pub why: String,
}

pub(crate) fn bad(flag: &'static str, why: impl Into<String>) -> FlagError {
    FlagError {
        flag,
        why: why.into(),
    }
}

/// Parses `-s ip[:port][,...]` (IPv6 in brackets when a port is given; host names resolve).
pub fn parse_intercepts(list: &str, default_port: u16) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if let Ok(sa) = entry.parse::<SocketAddr>() {
            out.push(sa);
            continue;
        }
        let bare = entry
            .strip_prefix('[')
            .and_then(|e| e.strip_suffix(']'))
            .unwrap_or(entry);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, default_port));
            continue;
        }
        let with_port = if entry.contains(':') {
            entry.to_string()
        } else {
            format!("{entry}:{default_port}")
        };
        let resolved = with_port
            .to_socket_addrs()
            .map_err(|e| format!("bad intercept address `{entry}`: {e}"))?
            .next()
            .ok_or_else(|| format!("`{entry}` resolves to no address"))?;
        if resolved.port() == 0 {
            return Err(format!("bad port in `{entry}`"));
        }
        out.push(resolved);
    }
    if out.is_empty() {
        return Err("no intercept address given".into());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Parses `-c`: `a.b.c.x` (hosts .1–.254), CIDRs (their hosts), single IPv4/IPv6 addresses.
pub fn parse_client_ips(list: &str) -> Result<(Vec<IpAddr>, Vec<IpNet>), String> {
    let mut ips = Vec::new();
    let mut nets = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if let Some(prefix) = entry
            .strip_suffix(".x")
            .or_else(|| entry.strip_suffix(".X"))
        {
            let base: Ipv4Addr = format!("{prefix}.0")
                .parse()
                .map_err(|_| format!("bad client address pattern `{entry}`"))?;
            let o = base.octets();
            for last in 1..=254u8 {
                ips.push(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], last)));
            }
            nets.push(IpNet::new(IpAddr::V4(base), 24).expect("valid /24"));
        } else if entry.contains('/') {
            let net: IpNet = entry
                .parse()
                .map_err(|_| format!("bad client network `{entry}`"))?;
            let hosts = net.hosts();
            for ip in hosts {
                ips.push(ip);
                if ips.len() > MAX_CLIENT_IPS {
                    return Err(format!(
                        "`{entry}` has more than {MAX_CLIENT_IPS} addresses"
                    ));
                }
            }
            nets.push(net);
        } else {
            let ip: IpAddr = entry
                .parse()
                .map_err(|_| format!("bad client address `{entry}`"))?;
            ips.push(ip);
            nets.push(IpNet::from(ip));
        }
        if ips.len() > MAX_CLIENT_IPS {
            return Err(format!("more than {MAX_CLIENT_IPS} client addresses"));
        }
    }
    if ips.is_empty() {
        return Err("no client address given".into());
    }
    let mut seen = std::collections::HashSet::new();
    ips.retain(|ip| seen.insert(*ip));
    Ok((ips, nets))
}

/// Production safety (issue 5): a target must not be a local address of this host, an online
/// address named in -x, or inside a -c range. Returns one line per refused target.
pub fn check_targets(settings: &raw::Settings, local_addrs: &[IpAddr]) -> Vec<String> {
    check_mapping_targets(&settings.mappings, &settings.client_nets, local_addrs)
}

/// [`check_mapping_targets`] against this host's address list as it was read. Fails closed:
/// when the list could not be read (`Err`: why), that is the one problem, whatever the targets.
pub fn check_mapping_targets_listed(
    mappings: &[TargetMapping],
    client_nets: &[IpNet],
    local_addrs: Result<Vec<IpAddr>, String>,
) -> Vec<String> {
    match local_addrs {
        Ok(local) => check_mapping_targets(mappings, client_nets, &local),
        Err(why) => vec![why],
    }
}

/// [`check_targets`] for any mode: the `-x` targets against this host's addresses, the
/// online addresses of `-x` and the `-c` networks. IPv4-mapped IPv6 addresses are compared as
/// the IPv4 address they are.
pub fn check_mapping_targets(
    mappings: &[TargetMapping],
    client_nets: &[IpNet],
    local_addrs: &[IpAddr],
) -> Vec<String> {
    let local: Vec<IpAddr> = local_addrs.iter().map(|a| a.to_canonical()).collect();
    let mut problems = Vec::new();
    for m in mappings {
        let t = m.target.ip().to_canonical();
        if t.is_unspecified() || t.is_multicast() {
            problems.push(format!("target {t} is not a unicast address"));
        }
        if t.is_loopback() || local.contains(&t) {
            problems.push(format!(
                "target {t} is an address of this (production) host"
            ));
        }
        if mappings
            .iter()
            .any(|o| o.online_ip.map(|a| a.to_canonical()) == Some(t))
        {
            problems.push(format!(
                "target {t} is an online (production) address named in -x"
            ));
        }
        if let Some(net) = client_nets.iter().find(|n| n.contains(&t)) {
            problems.push(format!("target {t} is inside the -c range {net}"));
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::parse_mappings;

    /// A mapping to `target` built directly, so the rule itself (not the `-x` parser) has to
    /// see through the IPv4-mapped spelling.
    fn to(target: &str) -> Vec<TargetMapping> {
        vec![TargetMapping {
            online_ip: None,
            online_port: 80,
            target: target.parse().unwrap(),
        }]
    }

    #[test]
    fn loopback_is_refused_in_every_spelling() {
        for t in [
            "127.0.0.1:80",
            "127.9.8.7:80",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:127.1.2.3]:80",
        ] {
            let p = check_mapping_targets(&to(t), &[], &[]);
            assert_eq!(p.len(), 1, "{t}: {p:?}");
            assert!(
                p[0].contains("is an address of this (production) host"),
                "{t}: {p:?}"
            );
        }
        // Through the -x parser too, as the user writes it.
        for x in ["80-[::ffff:127.0.0.1]:80", "80-[::1]:80", "80-127.0.0.1:80"] {
            let m = parse_mappings(x).unwrap();
            assert_eq!(check_mapping_targets(&m, &[], &[]).len(), 1, "{x}");
        }
        // A lab address that is not this host's: allowed.
        assert!(check_mapping_targets(&to("198.18.1.2:80"), &[], &[]).is_empty());
        assert!(check_mapping_targets(&to("[::ffff:198.18.1.2]:80"), &[], &[]).is_empty());
    }

    #[test]
    fn an_unreadable_address_list_refuses_even_a_sound_target() {
        let why = "cannot list this host's addresses to check the targets (boom)";
        let p = check_mapping_targets_listed(&to("198.18.1.2:80"), &[], Err(why.into()));
        assert_eq!(p, [why]);
        assert!(check_mapping_targets_listed(&to("198.18.1.2:80"), &[], Ok(vec![])).is_empty());
    }

    #[test]
    fn local_addresses_match_in_either_spelling() {
        let mapped_local: IpAddr = "::ffff:198.18.1.2".parse().unwrap();
        let plain_local: IpAddr = "198.18.1.2".parse().unwrap();
        for (t, local) in [
            ("198.18.1.2:80", mapped_local),
            ("[::ffff:198.18.1.2]:80", plain_local),
            ("[::ffff:198.18.1.2]:80", mapped_local),
            ("[2001:db8::2]:80", "2001:db8::2".parse().unwrap()),
        ] {
            let p = check_mapping_targets(&to(t), &[], &[local]);
            assert_eq!(p.len(), 1, "{t} on {local}: {p:?}");
            assert!(p[0].contains("of this (production) host"), "{p:?}");
        }
    }

    #[test]
    fn a_target_named_online_is_refused_in_either_spelling() {
        let m = vec![
            TargetMapping {
                online_ip: Some("::ffff:198.18.5.5".parse().unwrap()),
                online_port: 6379,
                target: "198.18.9.9:6379".parse().unwrap(),
            },
            TargetMapping {
                online_ip: None,
                online_port: 80,
                target: "198.18.5.5:7000".parse().unwrap(),
            },
        ];
        let p = check_mapping_targets(&m, &[], &[]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("198.18.5.5 is an online (production) address"),
            "{p:?}"
        );
    }
}
