//! Capture files for tests that edit what was captured, through the library's reader and writer
//! (never a second pcap parser): read a file into owned frames, write frames back.

use std::path::Path;
use tcpclone::capture::{
    CaptureReader, LinkType, PacketSource, PcapWriter, Timestamp, TsPrecision,
};

/// One captured frame, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// When it was captured.
    pub ts: Timestamp,
    /// The bytes from the link-layer header on.
    pub data: Vec<u8>,
}

/// Every frame of a pcap or pcapng file, and the link type of the first (panics on a file the
/// library cannot read: a test's own capture).
pub fn read_frames(path: &Path) -> (LinkType, Vec<Frame>) {
    let mut r =
        CaptureReader::open(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut frames = Vec::new();
    let mut linktype = LinkType::ETHERNET;
    while let Some(p) = r
        .next_packet()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    {
        if frames.is_empty() {
            linktype = p.linktype;
        }
        frames.push(Frame {
            ts: p.ts,
            data: p.data.to_vec(),
        });
    }
    (linktype, frames)
}

/// Writes `frames` as a microsecond pcap file of `linktype`.
pub fn write_frames(path: &Path, linktype: LinkType, frames: &[Frame]) {
    let mut w = PcapWriter::create(path, linktype, TsPrecision::Micro, 262_144)
        .unwrap_or_else(|e| panic!("{e}"));
    for f in frames {
        w.write_packet(f.ts, f.data.len() as u32, &f.data)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    w.finish().unwrap_or_else(|e| panic!("{e}"));
}
