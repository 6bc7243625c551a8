//! Parsers for tcprewrite's flag values. Every error names the flag and the bad value.

use super::RewriteError;
use crate::wire::MacAddr;
use ipnet::IpNet;
use std::net::IpAddr;

/// One `FROM:TO` entry of a CIDR map (`-S`, `-D`, `-N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidrMapEntry {
    /// Addresses inside this network are rewritten.
    pub from: IpNet,
    /// Their network bits are replaced by this network's (its prefix length), host bits kept.
    pub to: IpNet,
}

impl CidrMapEntry {
    /// The rewritten address when `addr` is inside `from`, else `None`.
    pub fn map(&self, addr: IpAddr) -> Option<IpAddr> {
        if !self.from.contains(&addr) {
            return None;
        }
        Some(match (addr, self.to) {
            (IpAddr::V4(a), IpNet::V4(to)) => {
                let mask = u32::from(to.netmask());
                let net = u32::from(to.network());
                IpAddr::V4(((net & mask) | (u32::from(a) & !mask)).into())
            }
            (IpAddr::V6(a), IpNet::V6(to)) => {
                let mask = u128::from(to.netmask());
                let net = u128::from(to.network());
                IpAddr::V6(((net & mask) | (u128::from(a) & !mask)).into())
            }
            // Families are checked equal when the map is parsed.
            _ => return None,
        })
    }
}

fn parse_net(flag: &'static str, whole: &str, s: &str) -> Result<IpNet, RewriteError> {
    let bad = |reason: String| RewriteError::BadValue {
        flag,
        value: whole.to_string(),
        reason,
    };
    let inner = match (s.strip_prefix('['), s.strip_suffix(']')) {
        (Some(_), Some(_)) => &s[1..s.len() - 1],
        (None, None) => s,
        _ => return Err(bad(format!("unbalanced brackets in `{s}`"))),
    };
    if inner.contains('/') {
        inner.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
            bad(format!(
                "`{inner}` is not a CIDR block (e.g. 198.18.0.0/16 or [2001:db8::/64])"
            ))
        })
    } else {
        inner
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| bad(format!("`{inner}` is not an IP address or CIDR block")))
    }
}

/// Parses `CIDR:CIDR[,CIDR:CIDR...]`; IPv6 blocks are written in brackets:
/// `[2001:db8::/64]:[2001:db8:1::/64]`. A bare address means a /32 (or /128).
pub fn parse_cidr_map(flag: &'static str, value: &str) -> Result<Vec<CidrMapEntry>, RewriteError> {
    let bad = |reason: String| RewriteError::BadValue {
        flag,
        value: value.to_string(),
        reason,
    };
    let mut out = Vec::new();
    for pair in value.split(',') {
        let pair = pair.trim();
        let (from, to) = if pair.starts_with('[') {
            let close = pair
                .find("]:")
                .ok_or_else(|| bad(format!("`{pair}` is not `[CIDR]:[CIDR]`")))?;
            (&pair[..=close], &pair[close + 2..])
        } else {
            pair.split_once(':')
                .ok_or_else(|| bad(format!("`{pair}` is not `CIDR:CIDR`")))?
        };
        let from = parse_net(flag, value, from)?;
        let to = parse_net(flag, value, to)?;
        if from.addr().is_ipv4() != to.addr().is_ipv4() {
            return Err(bad(format!("`{pair}` maps between IPv4 and IPv6")));
        }
        out.push(CidrMapEntry { from, to });
    }
    Ok(out)
}

/// One `-r/--portmap` rule: ports `lo..=hi` become `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapEntry {
    /// First port of the range.
    pub lo: u16,
    /// Last port of the range (inclusive).
    pub hi: u16,
    /// The new port.
    pub to: u16,
}

fn parse_port(flag: &'static str, whole: &str, s: &str) -> Result<u16, RewriteError> {
    s.trim().parse::<u16>().map_err(|_| RewriteError::BadValue {
        flag,
        value: whole.to_string(),
        reason: format!("`{s}` is not a port (0-65535)"),
    })
}

/// Parses tcprewrite's port map: `FROM:TO[,FROM:TO...]` where FROM is a port, a range `LO-HI`
/// or a list `A+B+C`.
pub fn parse_portmap(flag: &'static str, value: &str) -> Result<Vec<PortMapEntry>, RewriteError> {
    let bad = |reason: String| RewriteError::BadValue {
        flag,
        value: value.to_string(),
        reason,
    };
    let mut out = Vec::new();
    for pair in value.split(',') {
        let (from, to) = pair
            .split_once(':')
            .ok_or_else(|| bad(format!("`{pair}` is not `FROM:TO`")))?;
        let to = parse_port(flag, value, to)?;
        if let Some((lo, hi)) = from.split_once('-') {
            let (lo, hi) = (parse_port(flag, value, lo)?, parse_port(flag, value, hi)?);
            if lo > hi {
                return Err(bad(format!("range `{from}` is reversed")));
            }
            out.push(PortMapEntry { lo, hi, to });
        } else {
            for p in from.split('+') {
                let p = parse_port(flag, value, p)?;
                out.push(PortMapEntry { lo: p, hi: p, to });
            }
        }
    }
    Ok(out)
}

/// Parses a MAC flag value. tcprewrite's `MAC,MAC` form (client/server, chosen by a tcpprep
/// cache file) is refused: without a cache there is no client/server split.
pub fn parse_mac(flag: &'static str, value: &str) -> Result<MacAddr, RewriteError> {
    if value.contains(',') {
        return Err(RewriteError::BadValue {
            flag,
            value: value.to_string(),
            reason: "the `MAC,MAC` client/server form needs a tcpprep cache, which is not supported; give one MAC".into(),
        });
    }
    value
        .parse()
        .map_err(|e: crate::wire::MacParseError| RewriteError::BadValue {
            flag,
            value: value.to_string(),
            reason: e.to_string(),
        })
}

/// How `--ttl` changes the TTL / hop limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlEdit {
    /// `--ttl N`: set to N.
    Set(u8),
    /// `--ttl +N`: add N, at most 255.
    Add(u8),
    /// `--ttl -N`: subtract N, at least 1.
    Sub(u8),
}

impl TtlEdit {
    /// The new TTL for `ttl`.
    pub fn apply(self, ttl: u8) -> u8 {
        match self {
            TtlEdit::Set(v) => v,
            TtlEdit::Add(v) => ttl.saturating_add(v),
            TtlEdit::Sub(v) => {
                if ttl <= v {
                    1
                } else {
                    ttl - v
                }
            }
        }
    }
}

/// Parses `--ttl [+|-]N`, N in 0..=255.
pub fn parse_ttl(flag: &'static str, value: &str) -> Result<TtlEdit, RewriteError> {
    let n = |s: &str| {
        s.parse::<u8>().map_err(|_| RewriteError::BadValue {
            flag,
            value: value.to_string(),
            reason: "expected N, +N or -N with N in 0-255".into(),
        })
    };
    if let Some(v) = value.strip_prefix('+') {
        Ok(TtlEdit::Add(n(v)?))
    } else if let Some(v) = value.strip_prefix('-') {
        Ok(TtlEdit::Sub(n(v)?))
    } else {
        Ok(TtlEdit::Set(n(value)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_maps() {
        let m = parse_cidr_map("-N", "198.18.0.0/16:198.19.0.0/24,10.0.0.1:198.18.5.5").unwrap();
        assert_eq!(m.len(), 2);
        let a: IpAddr = "198.18.200.7".parse().unwrap();
        // Network bits from the TO block's prefix (/24), host bits kept: tcprewrite's remap.
        assert_eq!(m[0].map(a), Some("198.19.0.7".parse().unwrap()));
        assert_eq!(m[0].map("198.20.0.1".parse().unwrap()), None);
        assert_eq!(
            m[1].map("10.0.0.1".parse().unwrap()),
            Some("198.18.5.5".parse().unwrap())
        );
        let m6 = parse_cidr_map("-N", "[2001:db8:200::/64]:[2001:db8:300::/48]").unwrap();
        assert_eq!(
            m6[0].map("2001:db8:200::1".parse().unwrap()),
            Some("2001:db8:300::1".parse().unwrap())
        );
        for bad in [
            "198.18.0.0/16",
            "198.18.0.0/33:1.2.3.4",
            "x:y",
            "[2001:db8::/64]:198.18.0.0/16",
            "[2001:db8::/64:[::/0]",
        ] {
            let e = parse_cidr_map("-N/--pnat", bad).unwrap_err().to_string();
            assert!(e.contains("-N/--pnat"), "{e}");
        }
    }

    #[test]
    fn portmaps() {
        let p = parse_portmap("-r", "80:8080,6379:16379,1000-2000:3000,81+82:90").unwrap();
        assert_eq!(
            p[0],
            PortMapEntry {
                lo: 80,
                hi: 80,
                to: 8080
            }
        );
        assert_eq!(
            p[2],
            PortMapEntry {
                lo: 1000,
                hi: 2000,
                to: 3000
            }
        );
        assert_eq!(p.len(), 5);
        for bad in ["80", "80:70000", "a:1", "2000-1000:5", "80:8080:1"] {
            assert!(
                parse_portmap("-r/--portmap", bad)
                    .unwrap_err()
                    .to_string()
                    .contains("--portmap"),
                "{bad}"
            );
        }
    }

    #[test]
    fn macs_and_ttl() {
        assert_eq!(
            parse_mac("--enet-dmac", "2:0:0:0:0:9").unwrap().to_string(),
            "02:00:00:00:00:09"
        );
        assert!(parse_mac("--enet-dmac", "02:00:00:00:00:09,02:00:00:00:00:0a").is_err());
        assert!(parse_mac("--enet-dmac", "zz")
            .unwrap_err()
            .to_string()
            .contains("--enet-dmac"));
        assert_eq!(parse_ttl("--ttl", "+10").unwrap().apply(250), 255);
        assert_eq!(parse_ttl("--ttl", "-10").unwrap().apply(5), 1);
        assert_eq!(parse_ttl("--ttl", "7").unwrap().apply(64), 7);
        assert!(parse_ttl("--ttl", "256").is_err());
    }
}
