//! The edit step: tcprewrite's flags, kept as the strings the user typed, handed to the rewrite
//! module's parsers (`tcpclone::rewrite`), and the compiled rewriter behind the pipeline's
//! [`Editor`] trait.

use crate::pipeline::Editor;
use crate::pipeline::NoEdit;
use anyhow::{bail, Result};
use tcpclone::capture::LinkType;

/// tcprewrite's edit flags as given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EditFlags {
    /// `-S/--srcipmap`.
    pub srcipmap: Option<String>,
    /// `-D/--dstipmap`.
    pub dstipmap: Option<String>,
    /// `-N/--pnat`.
    pub pnat: Option<String>,
    /// `-r/--portmap`.
    pub portmap: Option<String>,
    /// `--enet-dmac`.
    pub enet_dmac: Option<String>,
    /// `--enet-smac`.
    pub enet_smac: Option<String>,
    /// `--enet-vlan`.
    pub enet_vlan: Option<String>,
    /// `--enet-vlan-tag`.
    pub enet_vlan_tag: Option<String>,
    /// `-m/--mtu`.
    pub mtu: Option<String>,
    /// `--mtu-trunc`.
    pub mtu_trunc: bool,
    /// `--tso-split`.
    pub tso_split: bool,
    /// `--ttl`.
    pub ttl: Option<String>,
    /// `--tos`.
    pub tos: Option<String>,
    /// `-C/--fixcsum`.
    pub fixcsum: bool,
    /// `--dlt`.
    pub dlt: Option<String>,
}

impl EditFlags {
    /// True when no edit was asked for.
    pub fn is_empty(&self) -> bool {
        *self == EditFlags::default()
    }
    /// True when `--dlt enet` was given.
    pub fn dlt_enet(&self) -> bool {
        self.dlt.as_deref() == Some("enet")
    }
}

/// Builds the editor for `flags` (input link type `input`, MTU for `--mtu-trunc`/`--tso-split`
/// when `-m` is not given). Errors name the flag.
pub fn build_editor(
    flags: &EditFlags,
    _input: LinkType,
    _default_mtu: u32,
) -> Result<Box<dyn Editor + Send>> {
    if let Some(d) = &flags.dlt {
        if d != "enet" {
            bail!("--dlt: unknown link type `{d}` (only `enet` is supported)");
        }
    }
    if flags.is_empty() {
        return Ok(Box::new(NoEdit));
    }
    bail!("rewriting flags need the rewrite module, which is not in this build yet")
}
