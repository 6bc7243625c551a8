//! The per-frame entry points of the [`Rewriter`]: [`Rewriter::apply`] (into a reused buffer, any
//! edit) and [`Rewriter::apply_in_place`] (edits that keep the length), with the link-layer
//! edits (MACs, VLAN push/pop, Linux cooked to Ethernet, `--mtu-trunc`).
//!
//! IP and port edits are delegated to `ip.rs`; this module must never allocate per packet beyond
//! growing the caller's buffer, log, or perform I/O.

use super::ip::fill_checksums;
use super::{ChecksumMode, RewriteFailure, RewriteOutcome, Rewriter, Rewritten, VlanEdit};
use crate::capture::LinkType;
use crate::wire::{
    be16, parse_layout, put16, EtherType, IpProtocol, IpVersion, Layout, MacAddr, Sll2Header,
    SllHeader,
};

impl Rewriter {
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
            Err(e) => return passthrough(out, RewriteOutcome::Unparsed(e)),
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
                    Err(e) => return passthrough(out, RewriteOutcome::Unparsed(e)),
                }
            } else {
                match Sll2Header::new_checked(input) {
                    Ok(h) => (
                        h.protocol(),
                        mac6(h.addr()),
                        Sll2Header::<&[u8]>::HEADER_LEN,
                    ),
                    Err(e) => return passthrough(out, RewriteOutcome::Unparsed(e)),
                }
            };
            if proto.0 < 0x0600 {
                return passthrough(
                    out,
                    RewriteOutcome::Failed(RewriteFailure::NoEtherType(proto.0)),
                );
            }
            let Some(smac) = self.smac.or(addr) else {
                return passthrough(out, RewriteOutcome::Failed(RewriteFailure::NoSourceMac));
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
            return passthrough(
                out,
                RewriteOutcome::Failed(RewriteFailure::NotEthernet(linktype)),
            );
        }
        let mut orig_len = (i64::from(orig_len) + delta).max(out.len() as i64) as u32;
        // Same link type and length: the input's layout describes the output too.
        let layout = if lt == linktype && delta == 0 {
            in_layout
        } else {
            match parse_layout(lt, out) {
                Ok(l) => l,
                Err(e) => return passthrough(out, RewriteOutcome::Unparsed(e)),
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
                Err(e) => return passthrough(out, RewriteOutcome::Unparsed(e)),
            }
        }
        if self.mode == ChecksumMode::Full
            || ((self.fixcsum || truncated) && self.mode != ChecksumMode::Keep)
        {
            fill_checksums(&layout, out);
        }
        let outcome = if truncated {
            RewriteOutcome::Truncated
        } else if out[..] != input[..] {
            RewriteOutcome::Changed
        } else {
            RewriteOutcome::Unchanged
        };
        Rewritten {
            outcome,
            linktype: lt,
            orig_len,
        }
    }

    /// Rewrites `frame` in place when no configured edit changes the length (no VLAN, DLT or
    /// truncation); otherwise returns `Failed(LengthChange)` and leaves it alone.
    pub fn apply_in_place(&self, linktype: LinkType, frame: &mut [u8]) -> RewriteOutcome {
        if self.changes_length() {
            return RewriteOutcome::Failed(RewriteFailure::LengthChange);
        }
        let layout = match parse_layout(linktype, frame) {
            Ok(l) => l,
            Err(e) => return RewriteOutcome::Unparsed(e),
        };
        if linktype == LinkType::ETHERNET {
            if let Some(m) = self.dmac {
                frame[0..6].copy_from_slice(&m.0);
            }
            if let Some(m) = self.smac {
                frame[6..12].copy_from_slice(&m.0);
            }
        } else if self.has_l2_edits() {
            return RewriteOutcome::Failed(RewriteFailure::NotEthernet(linktype));
        }
        self.edit_l3(&layout, frame);
        if self.mode == ChecksumMode::Full || (self.fixcsum && self.mode != ChecksumMode::Keep) {
            fill_checksums(&layout, frame);
        }
        RewriteOutcome::Changed
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
