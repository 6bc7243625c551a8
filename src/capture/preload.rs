//! A whole capture held in memory, for replaying (and looping) without touching the file again.
//!
//! All packet bytes sit back to back in ONE `Vec<u8>`; beside it a compact index holds 24 bytes per
//! packet (timestamp, offset + link type, caplen, original length). After loading, both vectors are
//! shrunk to fit, so the memory beyond the packet data is about 24 bytes per packet — tcpreplay's
//! `--preload-pcap` spends ~560. [`PreloadedCapture::overhead_per_packet`] measures it from the
//! capacities actually held.

use std::convert::Infallible;

use super::{LinkType, Packet, PacketSource, Timestamp};

/// Offsets use the low 48 bits of [`Entry::offset_linktype`]; the link type index the high 16.
const OFFSET_BITS: u32 = 48;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;

/// One packet's place in the data vector.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Nanoseconds since the epoch.
    ts: u64,
    /// Byte offset in `data` (low 48 bits) and index into `linktypes` (high 16 bits).
    offset_linktype: u64,
    /// Bytes captured.
    caplen: u32,
    /// Length on the wire.
    orig_len: u32,
}

/// Every packet of a source in one contiguous buffer plus a 24-byte-per-packet index, with a
/// cursor so it can be replayed as a [`PacketSource`] again and again ([`rewind`](Self::rewind)).
#[derive(Debug, Clone, Default)]
pub struct PreloadedCapture {
    data: Vec<u8>,
    index: Vec<Entry>,
    /// The distinct link types seen, in order of first appearance.
    linktypes: Vec<LinkType>,
    cursor: usize,
}

/// Why a source cannot be preloaded.
#[derive(Debug, thiserror::Error)]
pub enum PreloadError<E: std::error::Error + 'static> {
    /// The source failed.
    #[error(transparent)]
    Source(#[from] E),
    /// More distinct link types than the index can name (65,536), or more than 256 TiB of data.
    #[error("capture too large or too varied to preload (packet {packet})")]
    TooLarge {
        /// Index of the packet that did not fit.
        packet: usize,
    },
}

impl PreloadedCapture {
    /// Reads every packet of `src` into memory; fails on the source's first error.
    pub fn load<S: PacketSource>(src: &mut S) -> Result<Self, PreloadError<S::Error>> {
        match Self::load_partial(src) {
            (cap, None) => Ok(cap),
            (_, Some(e)) => Err(e),
        }
    }

    /// Reads packets of `src` until its end or its first error, keeping every packet read before
    /// the error (a truncated file still gives its whole records) and returning the error beside.
    pub fn load_partial<S: PacketSource>(src: &mut S) -> (Self, Option<PreloadError<S::Error>>) {
        let mut cap = PreloadedCapture::default();
        let err = loop {
            match src.next_packet() {
                Ok(Some(p)) => {
                    if let Err(e) = cap.push(&p) {
                        break Some(e);
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(PreloadError::Source(e)),
            }
        };
        cap.shrink_to_fit();
        (cap, err)
    }

    /// Appends one packet (copying its bytes).
    pub fn push<E: std::error::Error>(&mut self, p: &Packet<'_>) -> Result<(), PreloadError<E>> {
        let too_large = PreloadError::TooLarge {
            packet: self.index.len(),
        };
        let lt = match self.linktypes.iter().position(|&l| l == p.linktype) {
            Some(i) => i,
            None => {
                if self.linktypes.len() > usize::from(u16::MAX) {
                    return Err(too_large);
                }
                self.linktypes.push(p.linktype);
                self.linktypes.len() - 1
            }
        };
        let offset = self.data.len() as u64;
        if offset + p.data.len() as u64 > OFFSET_MASK {
            return Err(too_large);
        }
        self.data.extend_from_slice(p.data);
        self.index.push(Entry {
            ts: p.ts.0,
            offset_linktype: offset | ((lt as u64) << OFFSET_BITS),
            caplen: p.data.len() as u32,
            orig_len: p.orig_len,
        });
        Ok(())
    }

    /// Gives back the spare capacity left by growing while loading.
    pub fn shrink_to_fit(&mut self) {
        self.data.shrink_to_fit();
        self.index.shrink_to_fit();
        self.linktypes.shrink_to_fit();
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no packet was loaded.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Total bytes of packet data.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// Packet `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<Packet<'_>> {
        self.index.get(i).map(|e| self.packet(e))
    }

    fn packet(&self, e: &Entry) -> Packet<'_> {
        let off = (e.offset_linktype & OFFSET_MASK) as usize;
        let lt = (e.offset_linktype >> OFFSET_BITS) as usize;
        // Entries are only made by `push`, so both lookups always succeed.
        Packet {
            ts: Timestamp(e.ts),
            orig_len: e.orig_len,
            linktype: self
                .linktypes
                .get(lt)
                .copied()
                .unwrap_or(LinkType::ETHERNET),
            data: self.data.get(off..off + e.caplen as usize).unwrap_or(&[]),
        }
    }

    /// Iterates over all packets from the first (independent of the cursor).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Packet<'_>> + '_ {
        self.index.iter().map(move |e| self.packet(e))
    }

    /// Puts the cursor back at the first packet, for the next loop.
    pub fn rewind(&mut self) {
        self.cursor = 0;
    }

    /// Heap bytes held beyond the packet bytes themselves, per packet: the index, the link type
    /// table and any spare capacity of the data vector, all measured from capacities.
    pub fn overhead_per_packet(&self) -> f64 {
        if self.index.is_empty() {
            return 0.0;
        }
        let held = self.index.capacity() * std::mem::size_of::<Entry>()
            + self.linktypes.capacity() * std::mem::size_of::<LinkType>()
            + (self.data.capacity() - self.data.len())
            + std::mem::size_of::<Self>();
        held as f64 / self.index.len() as f64
    }
}

impl PacketSource for PreloadedCapture {
    type Error = Infallible;

    /// Next packet after the cursor; `Ok(None)` after the last until [`rewind`](Self::rewind).
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>, Infallible> {
        let i = self.cursor;
        if i >= self.index.len() {
            return Ok(None);
        }
        self.cursor += 1;
        Ok(self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{CaptureReader, PcapWriter, TsPrecision};

    fn pcap(n: usize) -> Vec<u8> {
        let mut w =
            PcapWriter::new(Vec::new(), "p", LinkType::ETHERNET, TsPrecision::Nano, 0).unwrap();
        for i in 0..n {
            let data: Vec<u8> = (0..(60 + i % 100)).map(|j| (i + j) as u8).collect();
            w.write_packet(Timestamp(1_000_000_000 * i as u64 + 7), 1500, &data)
                .unwrap();
        }
        w.finish().unwrap()
    }

    fn drain(src: &mut impl PacketSource) -> Vec<(Timestamp, u32, LinkType, Vec<u8>)> {
        let mut v = Vec::new();
        while let Some(p) = src.next_packet().unwrap() {
            v.push((p.ts, p.orig_len, p.linktype, p.data.to_vec()));
        }
        v
    }

    #[test]
    fn holds_every_packet_and_replays_after_rewind() {
        let file = pcap(1000);
        let expected = drain(&mut CaptureReader::from_reader(&file[..], "p").unwrap());
        let mut cap =
            PreloadedCapture::load(&mut CaptureReader::from_reader(&file[..], "p").unwrap())
                .unwrap();
        assert_eq!(cap.len(), 1000);
        assert_eq!(
            cap.data_len(),
            expected.iter().map(|p| p.3.len()).sum::<usize>()
        );
        assert_eq!(drain(&mut cap), expected);
        assert!(cap.next_packet().unwrap().is_none());
        cap.rewind();
        assert_eq!(drain(&mut cap), expected);
        let via_iter: Vec<_> = cap
            .iter()
            .map(|p| (p.ts, p.orig_len, p.linktype, p.data.to_vec()))
            .collect();
        assert_eq!(via_iter, expected);
        assert_eq!(cap.iter().len(), 1000);
        assert_eq!(cap.get(999).unwrap().data, &expected[999].3[..]);
        assert!(cap.get(1000).is_none());
    }

    #[test]
    fn overhead_is_at_most_32_bytes_per_packet() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
        let file = pcap(10_000);
        let cap = PreloadedCapture::load(&mut CaptureReader::from_reader(&file[..], "p").unwrap())
            .unwrap();
        let o = cap.overhead_per_packet();
        assert!(o <= 32.0, "overhead {o} bytes per packet");
        assert!(o >= 24.0, "overhead {o} cannot be below the index entry");
    }

    #[test]
    fn keeps_link_type_per_packet() {
        let mut cap = PreloadedCapture::default();
        for (i, lt) in [
            LinkType::ETHERNET,
            LinkType::RAW,
            LinkType::ETHERNET,
            LinkType::LINUX_SLL2,
        ]
        .into_iter()
        .enumerate()
        {
            let data = [i as u8; 3];
            let p = Packet {
                ts: Timestamp(i as u64),
                orig_len: 3,
                linktype: lt,
                data: &data,
            };
            cap.push::<Infallible>(&p).unwrap();
        }
        let lts: Vec<_> = cap.iter().map(|p| p.linktype).collect();
        assert_eq!(
            lts,
            [
                LinkType::ETHERNET,
                LinkType::RAW,
                LinkType::ETHERNET,
                LinkType::LINUX_SLL2
            ]
        );
        assert_eq!(cap.get(3).unwrap().data, &[3, 3, 3]);
    }

    #[test]
    fn truncated_source_keeps_whole_records() {
        let file = pcap(10);
        let cut = &file[..file.len() - 5];
        let (cap, err) =
            PreloadedCapture::load_partial(&mut CaptureReader::from_reader(cut, "p").unwrap());
        assert_eq!(cap.len(), 9);
        let err = err.unwrap();
        assert!(
            err.to_string().starts_with("p: record cut short at byte "),
            "{err}"
        );
        assert!(
            PreloadedCapture::load(&mut CaptureReader::from_reader(cut, "p").unwrap()).is_err()
        );
    }
}
