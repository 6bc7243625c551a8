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

mod parse;
mod tso;

pub use parse::{
    parse_cidr_map, parse_mac, parse_portmap, parse_ttl, CidrMapEntry, PortMapEntry, TtlEdit,
};
pub use tso::{tso_split, TsoError};

use crate::capture::LinkType;
use crate::wire::checksum;
use crate::wire::{
    be16, parse_layout, put16, EtherType, IpProtocol, IpVersion, Layout, MacAddr, Sll2Header,
    SllHeader, WireError,
};

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
pub enum Outcome {
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
    pub outcome: Outcome,
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

fn maps(flag: &'static str, values: &[String]) -> Result<CompiledMap, RewriteError> {
    let mut v = Vec::new();
    for s in values {
        v.extend(parse_cidr_map(flag, s)?);
    }
    Ok(CompiledMap::new(&v))
}

/// A CIDR map compiled to masks per family: `[from_net, from_mask, to_net, to_mask]`.
#[derive(Debug, Clone, Default)]
struct CompiledMap {
    v4: Vec<[u32; 4]>,
    v6: Vec<[u128; 4]>,
}

impl CompiledMap {
    fn new(entries: &[CidrMapEntry]) -> Self {
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

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// First matching entry: network bits of its TO block, host bits of `a`.
    fn map4(&self, a: u32) -> Option<u32> {
        self.v4
            .iter()
            .find(|e| a & e[1] == e[0])
            .map(|e| e[2] | (a & !e[3]))
    }

    fn map6(&self, a: u128) -> Option<u128> {
        self.v6
            .iter()
            .find(|e| a & e[1] == e[0])
            .map(|e| e[2] | (a & !e[3]))
    }
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

    /// Rewrites one packet of `linktype` (wire length `orig_len`) from `input` into `out`
    /// (cleared first, capacity reused). On `Unparsed`/`Failed`, `out` holds the input unchanged.
    pub fn apply(
        &self,
        linktype: LinkType,
        input: &[u8],
        orig_len: u32,
        out: &mut Vec<u8>,
    ) -> Rewritten {
        out.clear();
        let passthrough = |out: &mut Vec<u8>, outcome| {
            out.clear();
            out.extend_from_slice(input);
            Rewritten {
                outcome,
                linktype,
                orig_len,
            }
        };
        let in_layout = match parse_layout(linktype, input) {
            Ok(l) => l,
            Err(e) => return passthrough(out, Outcome::Unparsed(e)),
        };
        // Layer 2: cooked -> Ethernet, MACs, VLAN.
        let mut lt = linktype;
        let mut delta: i64 = 0;
        let cooked = linktype == LinkType::LINUX_SLL || linktype == LinkType::LINUX_SLL2;
        if self.dlt_enet && cooked {
            let mac6 = |a: &[u8]| match a {
                [a, b, c, d, e, f] => Some(MacAddr([*a, *b, *c, *d, *e, *f])),
                _ => None,
            };
            // parse_layout succeeded, so the cooked header is all there.
            let (proto, addr, hl) = if linktype == LinkType::LINUX_SLL {
                match SllHeader::new_checked(input) {
                    Ok(h) => (h.protocol(), mac6(h.addr()), SllHeader::<&[u8]>::HEADER_LEN),
                    Err(e) => return passthrough(out, Outcome::Unparsed(e)),
                }
            } else {
                match Sll2Header::new_checked(input) {
                    Ok(h) => (
                        h.protocol(),
                        mac6(h.addr()),
                        Sll2Header::<&[u8]>::HEADER_LEN,
                    ),
                    Err(e) => return passthrough(out, Outcome::Unparsed(e)),
                }
            };
            if proto.0 < 0x0600 {
                return passthrough(out, Outcome::Failed(RewriteFailure::NoEtherType(proto.0)));
            }
            let Some(smac) = self.smac.or(addr) else {
                return passthrough(out, Outcome::Failed(RewriteFailure::NoSourceMac));
            };
            out.extend_from_slice(&self.dmac.unwrap_or_default().0);
            out.extend_from_slice(&smac.0);
            out.extend_from_slice(&proto.0.to_be_bytes());
            out.extend_from_slice(&input[hl..]);
            lt = LinkType::ETHERNET;
            delta += 14 - hl as i64;
        } else {
            out.extend_from_slice(input);
        }
        if lt == LinkType::ETHERNET {
            if let Some(m) = self.dmac {
                out[0..6].copy_from_slice(&m.0);
            }
            if let Some(m) = self.smac {
                out[6..12].copy_from_slice(&m.0);
            }
            match self.vlan {
                Some(VlanEdit::Add(tci)) => {
                    let n = out.len();
                    out.extend_from_slice(&[0; 4]);
                    out.copy_within(12..n, 16);
                    put16(out, 12, EtherType::VLAN.0);
                    put16(out, 14, tci);
                    delta += 4;
                }
                Some(VlanEdit::Del) if EtherType(be16(out, 12)).is_vlan() && out.len() >= 18 => {
                    out.copy_within(16.., 12);
                    out.truncate(out.len() - 4);
                    delta -= 4;
                }
                _ => {}
            }
        } else if self.has_l2_edits() {
            return passthrough(out, Outcome::Failed(RewriteFailure::NotEthernet(linktype)));
        }
        let mut orig_len = (i64::from(orig_len) + delta).max(out.len() as i64) as u32;
        // Same link type and length: the input's layout describes the output too.
        let layout = if lt == linktype && delta == 0 {
            in_layout
        } else {
            match parse_layout(lt, out) {
                Ok(l) => l,
                Err(e) => return passthrough(out, Outcome::Unparsed(e)),
            }
        };
        self.edit_l3(&layout, out);
        // MTU truncation.
        if self.mtu_trunc {
            zero_udp_checksum_of_first_fragment(&layout, out);
        }
        let mut truncated = false;
        let mut layout = layout;
        let limit = layout.l3_offset + self.mtu as usize;
        if self.mtu_trunc && orig_len as usize > limit {
            truncated = true;
            out.truncate(limit.min(out.len()));
            orig_len = limit as u32;
            if let Some(ip) = layout.ip {
                let l3 = layout.l3_offset;
                match ip.version {
                    IpVersion::V4 => put16(out, l3 + 2, self.mtu.min(65535) as u16),
                    IpVersion::V6 => {
                        put16(out, l3 + 4, self.mtu.saturating_sub(40).min(65535) as u16)
                    }
                }
            }
            match parse_layout(lt, out) {
                Ok(l) => layout = l,
                Err(e) => return passthrough(out, Outcome::Unparsed(e)),
            }
        }
        if self.mode == ChecksumMode::Full
            || ((self.fixcsum || truncated) && self.mode != ChecksumMode::Keep)
        {
            fill_checksums(&layout, out);
        }
        let outcome = if truncated {
            Outcome::Truncated
        } else if out[..] != input[..] {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        };
        Rewritten {
            outcome,
            linktype: lt,
            orig_len,
        }
    }

    /// Rewrites `frame` in place when no configured edit changes the length (no VLAN, DLT or
    /// truncation); otherwise returns `Failed(LengthChange)` and leaves it alone.
    pub fn apply_in_place(&self, linktype: LinkType, frame: &mut [u8]) -> Outcome {
        if self.changes_length() {
            return Outcome::Failed(RewriteFailure::LengthChange);
        }
        let layout = match parse_layout(linktype, frame) {
            Ok(l) => l,
            Err(e) => return Outcome::Unparsed(e),
        };
        if linktype == LinkType::ETHERNET {
            if let Some(m) = self.dmac {
                frame[0..6].copy_from_slice(&m.0);
            }
            if let Some(m) = self.smac {
                frame[6..12].copy_from_slice(&m.0);
            }
        } else if self.has_l2_edits() {
            return Outcome::Failed(RewriteFailure::NotEthernet(linktype));
        }
        self.edit_l3(&layout, frame);
        if self.mode == ChecksumMode::Full || (self.fixcsum && self.mode != ChecksumMode::Keep) {
            fill_checksums(&layout, frame);
        }
        Outcome::Changed
    }

    /// L3/L4 edits on `buf` described by `layout`: TOS/TTL/traffic class, ports, addresses, ARP.
    fn edit_l3(&self, layout: &Layout, buf: &mut [u8]) {
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

/// tcprewrite's `--mtu-trunc` zeroes (disables) the UDP checksum of IPv4 first fragments,
/// whether or not the frame is cut: a cut datagram's checksum could not be right any more.
fn zero_udp_checksum_of_first_fragment(layout: &Layout, buf: &mut [u8]) {
    let Some(ip) = layout.ip else {
        return;
    };
    if ip.version != IpVersion::V4 || ip.protocol != IpProtocol::UDP {
        return;
    }
    if let (Some(f), Some(o)) = (ip.fragment, ip.l4_offset) {
        if f.offset == 0 && f.more && buf.len() >= o + 8 {
            put16(buf, o + 6, 0);
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
