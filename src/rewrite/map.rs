//! CIDR maps (`-S`, `-D`, `-N`) compiled to masks per address family.
//!
//! Owns the matching rule (first entry that matches; network bits of its TO block, host bits of
//! the address); it must never touch packet bytes.

use super::parse::{parse_cidr_map, CidrMapEntry};
use super::RewriteError;

/// Parses every value of a map flag and compiles them into one map.
pub(super) fn maps(flag: &'static str, values: &[String]) -> Result<CompiledMap, RewriteError> {
    let mut v = Vec::new();
    for s in values {
        v.extend(parse_cidr_map(flag, s)?);
    }
    Ok(CompiledMap::new(&v))
}

/// A CIDR map compiled to masks per family: `[from_net, from_mask, to_net, to_mask]`.
#[derive(Debug, Clone, Default)]
pub(super) struct CompiledMap {
    v4: Vec<[u32; 4]>,
    v6: Vec<[u128; 4]>,
}

impl CompiledMap {
    pub(super) fn new(entries: &[CidrMapEntry]) -> Self {
        let mut m = CompiledMap::default();
        for e in entries {
            match (e.from, e.to) {
                (ipnet::IpNet::V4(f), ipnet::IpNet::V4(t)) => {
                    let (fm, tm) = (u32::from(f.netmask()), u32::from(t.netmask()));
                    m.v4.push([
                        u32::from(f.network()) & fm,
                        fm,
                        u32::from(t.network()) & tm,
                        tm,
                    ]);
                }
                (ipnet::IpNet::V6(f), ipnet::IpNet::V6(t)) => {
                    let (fm, tm) = (u128::from(f.netmask()), u128::from(t.netmask()));
                    m.v6.push([
                        u128::from(f.network()) & fm,
                        fm,
                        u128::from(t.network()) & tm,
                        tm,
                    ]);
                }
                // parse_cidr_map refuses mixed families.
                _ => {}
            }
        }
        m
    }

    pub(super) fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// First matching entry: network bits of its TO block, host bits of `a`.
    pub(super) fn map4(&self, a: u32) -> Option<u32> {
        self.v4
            .iter()
            .find(|e| a & e[1] == e[0])
            .map(|e| e[2] | (a & !e[3]))
    }

    pub(super) fn map6(&self, a: u128) -> Option<u128> {
        self.v6
            .iter()
            .find(|e| a & e[1] == e[0])
            .map(|e| e[2] | (a & !e[3]))
    }
}
