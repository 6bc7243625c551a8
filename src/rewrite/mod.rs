//! Header rewriting: tcprewrite's edits (CIDR and port maps, MACs, VLAN tags, TTL/TOS/traffic
//! class, MTU truncation, Linux cooked to Ethernet, checksum fixing) and TSO splitting.
//!
//! Flag values arrive as plain values in [`RewriteOptions`] (what the CLI parsed), are validated
//! and compiled once by [`Rewriter::compile`] (errors name the flag), then applied per packet by
//! [`Rewriter::apply`] into a caller-owned `Vec<u8>` that is reused, so nothing is allocated per
//! packet after the first. This module never logs and never performs I/O.
//!
//! Semantics follow tcprewrite 4.4.3 (read from its source and checked by
//! `tests/tcprewrite_diff.rs` against the installed binary):
//! - `-S` rewrites only source addresses, `-D` only destinations, each with the first matching
//!   entry; `-N` rewrites both (with two `-N`, the first maps sources and the second
//!   destinations); `-N` excludes `-S`/`-D`. A mapped address keeps its host bits and takes the
//!   network bits of the TO block (its prefix length). ARP requests/replies are remapped by `-N`.
//! - `-r` maps TCP and UDP source and destination ports, first matching rule.
//! - `--ttl` also sets the IPv6 hop limit; `--tos` is IPv4 only (`--tclass` is the IPv6 one).
//! - `--enet-vlan add` pushes a new outer 802.1Q tag (also on tagged frames); `del` pops one.
//! - `--mtu-trunc` cuts frames whose wire length exceeds L2 header + MTU to exactly that, and sets
//!   the IP length field to the MTU (IPv6: payload length MTU − 40); like tcprewrite it also
//!   zeroes the UDP checksum of IPv4 first fragments.
//! - Checksums ([`ChecksumMode::Full`], the default): tcprewrite recomputes the IPv4 header and
//!   TCP/UDP/ICMP checksums of every IPv4 packet it writes, whatever the edit; so does this
//!   rewriter, and it does the same for IPv6 (TCP/UDP/ICMPv6 with the pseudo-header), where
//!   tcprewrite 4.4.3 only patches the old checksum incrementally unless `-C` is given. L4 checksums
//!   are only recomputed when the whole unfragmented datagram was captured; for snapped records
//!   and fragments the old L4 checksum is patched incrementally (RFC 1624) for the fields changed.
//!   IPv4 UDP datagrams without a checksum (zero) keep zero.
//!
//! Layout: this file holds the options, the errors and the compiled [`Rewriter`] (validation in
//! [`Rewriter::compile`]); `map.rs` the compiled CIDR maps, `frame.rs` the per-frame entry points
//! and the link-layer edits (MACs, VLAN, cooked to Ethernet, truncation), `ip.rs` the IP, ARP
//! and port edits with the checksum patching and recomputation; `parse.rs` the flag parsers,
//! `tso.rs` TSO splitting.

mod frame;
mod ip;
mod map;
mod parse;
mod tso;

pub use ip::fill_checksums;
pub use parse::{
    parse_cidr_map, parse_mac, parse_portmap, parse_ttl, CidrMapEntry, PortMapEntry, TtlEdit,
};
pub use tso::{tso_split, TsoError};

use map::{maps, CompiledMap};

use crate::capture::LinkType;
use crate::wire::{MacAddr, WireError};

/// The rewrite flags as the CLI parsed them: plain values, validated by [`Rewriter::compile`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteOptions {
    /// `-S/--srcipmap CIDR:CIDR,...` (may be given several times).
    pub srcipmap: Vec<String>,
    /// `-D/--dstipmap CIDR:CIDR,...`.
    pub dstipmap: Vec<String>,
    /// `-N/--pnat CIDR:CIDR,...` (at most twice: sources, then destinations).
    pub pnat: Vec<String>,
    /// `-r/--portmap FROM:TO,...`.
    pub portmap: Vec<String>,
    /// `--enet-dmac MAC`.
    pub enet_dmac: Option<String>,
    /// `--enet-smac MAC`.
    pub enet_smac: Option<String>,
    /// `--enet-vlan add|del`.
    pub enet_vlan: Option<String>,
    /// `--enet-vlan-tag N` (0-4095), required by `add`.
    pub enet_vlan_tag: Option<u16>,
    /// `--enet-vlan-pri N` (0-7).
    pub enet_vlan_pri: Option<u8>,
    /// `--enet-vlan-cfi N` (0-1).
    pub enet_vlan_cfi: Option<u8>,
    /// `-m/--mtu N` (1-262144, default 1500).
    pub mtu: Option<u32>,
    /// `--mtu-trunc`.
    pub mtu_trunc: bool,
    /// `--ttl [+|-]N`.
    pub ttl: Option<String>,
    /// `--tos N`.
    pub tos: Option<u8>,
    /// `--tclass N`.
    pub tclass: Option<u8>,
    /// `-C/--fixcsum`.
    pub fixcsum: bool,
    /// `--dlt NAME` (only `enet`).
    pub dlt: Option<String>,
    /// How checksums are brought up to date.
    pub checksums: ChecksumMode,
}

/// How the rewriter brings checksums up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChecksumMode {
    /// Recompute IPv4 header and L4 checksums in full on every IP packet (tcprewrite's output;
    /// right even when the capture's checksums were offloaded and wrong).
    #[default]
    Full,
    /// Patch each changed field into the old checksums (RFC 1624). Only right when the input's
    /// checksums were; for engines that built or verified the packet. `-C` and truncation still
    /// recompute in full.
    Incremental,
    /// Leave checksums exactly as they are (for deliberately broken test traffic).
    Keep,
}

/// A bad flag value or combination, naming the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// A flag's value does not parse.
    #[error("{flag} `{value}`: {reason}")]
    BadValue {
        /// The flag, e.g. `-N/--pnat`.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// Two flags that cannot be used together.
    #[error("{0} and {1} cannot be used together")]
    Conflict(&'static str, &'static str),
    /// A flag that needs another one.
    #[error("{0} needs {1}")]
    Needs(&'static str, &'static str),
    /// The edits cannot apply to this capture's link type.
    #[error("{flag} needs Ethernet frames but the capture is {linktype}{hint}")]
    LinkType {
        /// The flag.
        flag: &'static str,
        /// The capture's link type.
        linktype: LinkType,
        /// A hint how to fix it.
        hint: &'static str,
    },
}

/// Why a packet could not be rewritten (it is passed through unchanged and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RewriteFailure {
    /// An Ethernet edit was asked for on a frame of another link type.
    NotEthernet(LinkType),
    /// `--dlt enet`: the cooked header's protocol is not an EtherType.
    NoEtherType(u16),
    /// `--dlt enet`: no `--enet-smac` and the cooked header holds no 6-byte source address.
    NoSourceMac,
    /// `apply_in_place` was used with an edit that changes the frame's length.
    LengthChange,
}

impl std::fmt::Display for RewriteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RewriteFailure::NotEthernet(lt) => write!(f, "Ethernet edit on a {lt} frame"),
            RewriteFailure::NoEtherType(p) => {
                write!(f, "cooked header protocol 0x{p:04x} is not an EtherType")
            }
            RewriteFailure::NoSourceMac => f.write_str("no source MAC for --dlt enet"),
            RewriteFailure::LengthChange => f.write_str("edit changes the frame length"),
        }
    }
}

/// What [`Rewriter::apply`] did with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteOutcome {
    /// The output differs from the input.
    Changed,
    /// The output equals the input.
    Unchanged,
    /// Cut to the MTU by `--mtu-trunc` (and otherwise rewritten).
    Truncated,
    /// The headers did not parse; passed through unchanged.
    Unparsed(WireError),
    /// Could not be rewritten; passed through unchanged.
    Failed(RewriteFailure),
}

/// One rewritten packet: the outcome and the output's link type and wire length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// What happened.
    pub outcome: RewriteOutcome,
    /// Link type of the output bytes.
    pub linktype: LinkType,
    /// Wire length of the output (the input's, adjusted by header changes and truncation).
    pub orig_len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VlanEdit {
    Add(u16),
    Del,
}

/// Compiled rewrite rules; cheap to share by reference between threads.
#[derive(Debug, Clone)]
pub struct Rewriter {
    srcipmap: CompiledMap,
    dstipmap: CompiledMap,
    pnat_src: CompiledMap,
    pnat_dst: CompiledMap,
    portmap: Vec<PortMapEntry>,
    dmac: Option<MacAddr>,
    smac: Option<MacAddr>,
    vlan: Option<VlanEdit>,
    mtu: u32,
    mtu_trunc: bool,
    ttl: Option<TtlEdit>,
    tos: Option<u8>,
    tclass: Option<u8>,
    fixcsum: bool,
    dlt_enet: bool,
    mode: ChecksumMode,
}

impl Rewriter {
    /// Validates and compiles the options. Errors name the flag.
    pub fn compile(o: &RewriteOptions) -> Result<Rewriter, RewriteError> {
        if !o.pnat.is_empty() && !o.srcipmap.is_empty() {
            return Err(RewriteError::Conflict("-N/--pnat", "-S/--srcipmap"));
        }
        if !o.pnat.is_empty() && !o.dstipmap.is_empty() {
            return Err(RewriteError::Conflict("-N/--pnat", "-D/--dstipmap"));
        }
        if o.pnat.len() > 2 {
            return Err(RewriteError::BadValue {
                flag: "-N/--pnat",
                value: o.pnat.join(" "),
                reason: "may be given at most twice (sources, then destinations)".into(),
            });
        }
        let pnat_src = maps("-N/--pnat", &o.pnat[..o.pnat.len().min(1)])?;
        let pnat_dst = match o.pnat.get(1) {
            Some(s) => maps("-N/--pnat", std::slice::from_ref(s))?,
            None => pnat_src.clone(),
        };
        let mut portmap = Vec::new();
        for s in &o.portmap {
            portmap.extend(parse_portmap("-r/--portmap", s)?);
        }
        let dmac = o
            .enet_dmac
            .as_deref()
            .map(|s| parse_mac("--enet-dmac", s))
            .transpose()?;
        let smac = o
            .enet_smac
            .as_deref()
            .map(|s| parse_mac("--enet-smac", s))
            .transpose()?;
        let vlan = match o.enet_vlan.as_deref() {
            None => {
                if o.enet_vlan_tag.is_some() {
                    return Err(RewriteError::Needs("--enet-vlan-tag", "--enet-vlan"));
                }
                if o.enet_vlan_pri.is_some() {
                    return Err(RewriteError::Needs("--enet-vlan-pri", "--enet-vlan"));
                }
                if o.enet_vlan_cfi.is_some() {
                    return Err(RewriteError::Needs("--enet-vlan-cfi", "--enet-vlan"));
                }
                None
            }
            Some("add") => {
                let tag = o
                    .enet_vlan_tag
                    .ok_or(RewriteError::Needs("--enet-vlan add", "--enet-vlan-tag"))?;
                let bad = |flag, value: String, reason: &str| RewriteError::BadValue {
                    flag,
                    value,
                    reason: reason.into(),
                };
                if tag > 4095 {
                    return Err(bad("--enet-vlan-tag", tag.to_string(), "must be 0-4095"));
                }
                let pri = o.enet_vlan_pri.unwrap_or(0);
                if pri > 7 {
                    return Err(bad("--enet-vlan-pri", pri.to_string(), "must be 0-7"));
                }
                let cfi = o.enet_vlan_cfi.unwrap_or(0);
                if cfi > 1 {
                    return Err(bad("--enet-vlan-cfi", cfi.to_string(), "must be 0 or 1"));
                }
                Some(VlanEdit::Add(
                    (u16::from(pri) << 13) | (u16::from(cfi) << 12) | tag,
                ))
            }
            Some("del") => Some(VlanEdit::Del),
            Some(other) => {
                return Err(RewriteError::BadValue {
                    flag: "--enet-vlan",
                    value: other.into(),
                    reason: "expected `add` or `del`".into(),
                })
            }
        };
        let mtu = o.mtu.unwrap_or(1500);
        if !(1..=262_144).contains(&mtu) {
            return Err(RewriteError::BadValue {
                flag: "-m/--mtu",
                value: mtu.to_string(),
                reason: "must be 1-262144".into(),
            });
        }
        let ttl = o
            .ttl
            .as_deref()
            .map(|s| parse_ttl("--ttl", s))
            .transpose()?;
        let dlt_enet = match o.dlt.as_deref() {
            None => false,
            Some(s) if s.eq_ignore_ascii_case("enet") || s.eq_ignore_ascii_case("en10mb") => true,
            Some(other) => {
                return Err(RewriteError::BadValue {
                    flag: "--dlt",
                    value: other.into(),
                    reason: "only `enet` (Ethernet) is supported".into(),
                })
            }
        };
        if dlt_enet && dmac.is_none() {
            return Err(RewriteError::Needs(
                "--dlt enet",
                "--enet-dmac (Linux cooked headers carry no destination MAC)",
            ));
        }
        Ok(Rewriter {
            srcipmap: maps("-S/--srcipmap", &o.srcipmap)?,
            dstipmap: maps("-D/--dstipmap", &o.dstipmap)?,
            pnat_src,
            pnat_dst,
            portmap,
            dmac,
            smac,
            vlan,
            mtu,
            mtu_trunc: o.mtu_trunc,
            ttl,
            tos: o.tos,
            tclass: o.tclass,
            fixcsum: o.fixcsum,
            dlt_enet,
            mode: o.checksums,
        })
    }

    /// True when no edit is configured (tcprewrite would still recompute IPv4 checksums; callers
    /// that only forward packets can skip the rewriter).
    pub fn is_identity(&self) -> bool {
        self.srcipmap.is_empty()
            && self.dstipmap.is_empty()
            && self.pnat_src.is_empty()
            && self.portmap.is_empty()
            && !self.has_l2_edits()
            && !self.mtu_trunc
            && self.ttl.is_none()
            && self.tos.is_none()
            && self.tclass.is_none()
            && !self.fixcsum
            && !self.dlt_enet
    }

    /// True when some edit can change a frame's length (VLAN, DLT conversion, truncation).
    pub fn changes_length(&self) -> bool {
        self.vlan.is_some() || self.dlt_enet || self.mtu_trunc
    }

    fn has_l2_edits(&self) -> bool {
        self.dmac.is_some() || self.smac.is_some() || self.vlan.is_some()
    }

    /// The link type of the output for input of `linktype`, or an error naming the flag when the
    /// edits cannot apply to it (call once per capture, before reading packets).
    pub fn output_linktype(&self, linktype: LinkType) -> Result<LinkType, RewriteError> {
        let cooked = linktype == LinkType::LINUX_SLL || linktype == LinkType::LINUX_SLL2;
        if self.dlt_enet && (cooked || linktype == LinkType::ETHERNET) {
            return Ok(LinkType::ETHERNET);
        }
        if self.dlt_enet {
            return Err(RewriteError::LinkType {
                flag: "--dlt enet",
                linktype,
                hint: " (only Linux cooked SLL/SLL2 captures are converted)",
            });
        }
        if linktype != LinkType::ETHERNET && self.has_l2_edits() {
            let flag = if self.dmac.is_some() {
                "--enet-dmac"
            } else if self.smac.is_some() {
                "--enet-smac"
            } else {
                "--enet-vlan"
            };
            return Err(RewriteError::LinkType {
                flag,
                linktype,
                hint: if cooked {
                    "; add --dlt enet to convert it"
                } else {
                    ""
                },
            });
        }
        Ok(linktype)
    }
}
