//! The edit step: tcprewrite's flags as the user typed them, compiled by the library's rewriter
//! (`tcpclone::rewrite`, whose parsers validate them and name the flag), plus `--tso-split`,
//! behind the pipeline's [`Editor`] trait.

use crate::pipeline::{Edit, EditedFrames, Editor, NoEdit};
use anyhow::Result;
use tcpclone::capture::{LinkType, Packet};
use tcpclone::rewrite::{
    tso_split, RewriteFailure, RewriteOptions, RewriteOutcome, Rewriter, TsoError,
};
use tcpclone::wire::{Layer, WireError};

/// tcprewrite's edit flags as given on the command line, plus `--tso-split`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EditFlags {
    /// The rewriter's flags; `mtu` is `-m/--mtu` as given (`None`: the interface's MTU).
    pub rewrite: RewriteOptions,
    /// `--tso-split`.
    pub tso_split: bool,
}

impl EditFlags {
    /// True when no edit was asked for.
    pub fn is_empty(&self) -> bool {
        *self == EditFlags::default()
    }
    /// True when the only edit asked for is `--tso-split` (with or without `-m`): frames are
    /// split but not rewritten.
    fn only_tso_split(&self) -> bool {
        self.tso_split
            && RewriteOptions {
                mtu: None,
                ..self.rewrite.clone()
            } == RewriteOptions::default()
    }
    /// True when `--dlt enet` was given.
    pub fn dlt_enet(&self) -> bool {
        self.rewrite.dlt.as_deref() == Some("enet")
    }
    /// The rewriter's options; `default_mtu` (the interface's) stands in when `-m` is not given.
    pub fn options(&self, default_mtu: u32) -> RewriteOptions {
        RewriteOptions {
            mtu: Some(self.rewrite.mtu.unwrap_or(default_mtu)),
            ..self.rewrite.clone()
        }
    }
}

/// The compiled rewriter plus `--tso-split`, with the buffers they reuse.
pub struct RewriteEditor {
    rewriter: Rewriter,
    /// Apply the rewriter at all (false when only `--tso-split` was asked: frames stay as they are).
    rewrite: bool,
    /// Split TCP frames whose IP packet exceeds this many bytes (`--tso-split`).
    tso_mtu: Option<usize>,
    whole: Vec<u8>,
    scratch: Vec<u8>,
}

/// A reason for counting, without allocating, for a header that did not parse.
fn unparsed_reason(e: &WireError) -> &'static str {
    match e.layer {
        Layer::Ethernet => "bad Ethernet header",
        Layer::Vlan => "bad 802.1Q tag",
        Layer::Sll => "bad Linux cooked (SLL) header",
        Layer::Sll2 => "bad Linux cooked v2 (SLL2) header",
        Layer::Ipv4 => "bad IPv4 header",
        Layer::Ipv6 => "bad IPv6 header",
        Layer::Tcp => "bad TCP header",
        Layer::Udp => "bad UDP header",
        Layer::Icmp => "bad ICMP header",
        Layer::Link => "link type not decoded",
    }
}

fn failure_reason(f: &RewriteFailure) -> &'static str {
    match f {
        RewriteFailure::NotEthernet(_) => "Ethernet edit on a non-Ethernet frame",
        RewriteFailure::NoEtherType(_) => "--dlt enet: cooked protocol is not an EtherType",
        RewriteFailure::NoSourceMac => "--dlt enet: no source MAC (give --enet-smac)",
        RewriteFailure::LengthChange => "edit changes the frame length",
    }
}

fn tso_reason(e: &TsoError) -> &'static str {
    match e {
        TsoError::Unparsed(_) => "--tso-split: headers do not parse",
        TsoError::NotTcp => "--tso-split: larger than the MTU and not TCP",
        TsoError::Incomplete => "--tso-split: larger than the MTU and snapped or fragmented",
        TsoError::MtuTooSmall { .. } => "--tso-split: MTU leaves no room for payload",
    }
}

impl Editor for RewriteEditor {
    fn output_linktype(&self, input: LinkType) -> LinkType {
        if self.rewrite {
            self.rewriter.output_linktype(input).unwrap_or(input)
        } else {
            input
        }
    }

    fn edit(&mut self, packet: &Packet<'_>, out: &mut EditedFrames) -> Edit {
        let (edit, linktype) = if self.rewrite {
            let r =
                self.rewriter
                    .apply(packet.linktype, packet.data, packet.orig_len, &mut out.buf);
            out.orig_len = Some(r.orig_len);
            let edit = match r.outcome {
                RewriteOutcome::Changed => Edit::Rewritten,
                RewriteOutcome::Unchanged => Edit::Unchanged,
                RewriteOutcome::Truncated => Edit::Truncated("cut to the MTU (--mtu-trunc)"),
                RewriteOutcome::Unparsed(e) => Edit::Unparsed(unparsed_reason(&e)),
                RewriteOutcome::Failed(f) => return Edit::Dropped(failure_reason(&f)),
            };
            (edit, r.linktype)
        } else {
            (Edit::Unchanged, packet.linktype)
        };
        let Some(mtu) = self.tso_mtu else { return edit };
        // The frame as it stands now: the rewritten one, or the input.
        let frame_len = if matches!(edit, Edit::Unchanged | Edit::Unparsed(_)) {
            packet.data.len()
        } else {
            out.buf.len()
        };
        // Cheap pre-check: only frames that could hold an IP packet over the MTU are parsed.
        if frame_len <= mtu + 14 {
            return edit;
        }
        self.whole.clear();
        if matches!(edit, Edit::Unchanged | Edit::Unparsed(_)) {
            self.whole.extend_from_slice(packet.data);
        } else {
            std::mem::swap(&mut self.whole, &mut out.buf);
        }
        out.clear();
        let buf = &mut out.buf;
        let ends = &mut out.ends;
        match tso_split(linktype, &self.whole, mtu, &mut self.scratch, |seg| {
            buf.extend_from_slice(seg);
            ends.push(buf.len());
        }) {
            Ok(1) => {
                // It fits after all: send it as the rewrite left it (or the input as it was).
                if matches!(edit, Edit::Unchanged | Edit::Unparsed(_)) {
                    out.clear();
                }
                edit
            }
            Ok(_) => {
                out.orig_len = None;
                Edit::Rewritten
            }
            // Larger than the MTU and not splittable: counted as failed, with the reason.
            Err(e) => Edit::Dropped(tso_reason(&e)),
        }
    }
}

/// Builds the editor for `flags`; `default_mtu` (the interface's MTU, or 1500 when writing a file)
/// is used when `-m` is not given. Errors name the flag.
pub fn build_editor(flags: &EditFlags, default_mtu: u32) -> Result<Box<dyn Editor + Send>> {
    if flags.is_empty() {
        return Ok(Box::new(NoEdit));
    }
    let rewriter = Rewriter::compile(&flags.options(default_mtu))?;
    Ok(Box::new(RewriteEditor {
        rewriter,
        rewrite: !flags.only_tso_split(),
        tso_mtu: flags
            .tso_split
            .then(|| flags.rewrite.mtu.unwrap_or(default_mtu) as usize),
        whole: Vec::new(),
        scratch: Vec::new(),
    }))
}

/// The link type the edits produce from a capture of `input`, or an error naming the flag that
/// cannot apply to it (e.g. `--enet-dmac` on a Linux cooked capture without `--dlt enet`).
pub fn output_linktype(flags: &EditFlags, default_mtu: u32, input: LinkType) -> Result<LinkType> {
    if flags.is_empty() || flags.only_tso_split() {
        return Ok(input);
    }
    Ok(Rewriter::compile(&flags.options(default_mtu))?.output_linktype(input)?)
}
