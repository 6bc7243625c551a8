//! The `-x [onlineIP:]port-targetIP:port[,...]` target mappings shared by raw and stream modes.

use std::net::{IpAddr, SocketAddr};
use thiserror::Error;

/// One `-x` entry: which service traffic is copied, and where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetMapping {
    /// The production service address, if named (`None`: any local address).
    pub online_ip: Option<IpAddr>,
    /// The production service port.
    pub online_port: u16,
    /// The test server.
    pub target: SocketAddr,
}

/// A malformed `-x` value.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "-x: bad mapping `{entry}`: {why} (expected [onlineIP:]port-targetIP:port, IPv6 in brackets)"
)]
pub struct MappingError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub why: &'static str,
}

fn parse_port(s: &str) -> Option<u16> {
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

fn parse_host_port(s: &str) -> Option<(Option<IpAddr>, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, port) = rest.split_once("]:")?;
        return Some((Some(ip.parse().ok()?), parse_port(port)?));
    }
    match s.rsplit_once(':') {
        Some((ip, port)) => Some((Some(ip.parse().ok()?), parse_port(port)?)),
        None => Some((None, parse_port(s)?)),
    }
}

/// Parses a whole `-x` list.
pub fn parse_mappings(list: &str) -> Result<Vec<TargetMapping>, MappingError> {
    let mut out = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let err = |why| MappingError {
            entry: entry.to_string(),
            why,
        };
        // The separator is the '-' that is followed by the target; IPv6 has no '-', so the
        // first '-' outside brackets splits.
        let (online, target) = entry
            .split_once('-')
            .ok_or_else(|| err("missing '-' between online and target"))?;
        let (online_ip, online_port) =
            parse_host_port(online).ok_or_else(|| err("bad online address or port"))?;
        let (tip, tport) =
            parse_host_port(target).ok_or_else(|| err("bad target address or port"))?;
        let tip = tip.ok_or_else(|| err("target needs an address"))?;
        // ::ffff:a.b.c.d is a.b.c.d: one spelling, so that every address check sees it.
        let tip = tip.to_canonical();
        out.push(TargetMapping {
            online_ip: online_ip.map(|a| a.to_canonical()),
            online_port,
            target: SocketAddr::new(tip, tport),
        });
    }
    if out.is_empty() {
        return Err(MappingError {
            entry: list.to_string(),
            why: "no mapping given",
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let m = parse_mappings("80-198.18.1.2:8080,198.18.0.1:6379-[2001:db8::2]:6379").unwrap();
        assert_eq!(m[0].online_ip, None);
        assert_eq!(m[0].online_port, 80);
        assert_eq!(m[0].target, "198.18.1.2:8080".parse().unwrap());
        assert_eq!(m[1].online_ip, Some("198.18.0.1".parse().unwrap()));
        assert_eq!(m[1].target, "[2001:db8::2]:6379".parse().unwrap());
        let v6 = parse_mappings("[2001:db8::1]:80-[2001:db8::2]:80").unwrap();
        assert_eq!(v6[0].online_ip, Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn rejects_bad() {
        for bad in [
            "",
            "80",
            "80-1.2.3.4",
            "0-198.18.0.1:80",
            "70000-198.18.0.1:80",
            "80-198.18.0.1:x",
            "80-:80",
        ] {
            assert!(parse_mappings(bad).is_err(), "{bad}");
        }
    }
}
