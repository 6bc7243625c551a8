//! Writing classic pcap files to any `std::io::Write`.
//!
//! The file header is written when the writer is made, so even a run that writes no packet leaves
//! a valid pcap. Each record is a 16-byte header built on the stack plus the packet bytes: nothing
//! is allocated per packet. The writer does not buffer by itself ([`PcapWriter::create`] wraps the
//! file in a `BufWriter`). Microsecond files get `tv_usec = nanoseconds / 1000`, truncated, as
//! libpcap's `pcap_dump` and tcprewrite write them.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::error::{CaptureError, CaptureErrorKind};
use super::{LinkType, Packet, PacketSink, SendOutcome, Timestamp, TsPrecision};

/// The snapshot length libpcap and tcpdump write by default (MAXIMUM_SNAPLEN).
pub const DEFAULT_SNAPLEN: u32 = 262_144;

/// A classic pcap writer with a fixed link type, timestamp precision and snaplen.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    w: W,
    name: String,
    linktype: LinkType,
    precision: TsPrecision,
    /// Bytes written so far.
    pos: u64,
}

impl PcapWriter<BufWriter<File>> {
    /// Creates (or truncates) a pcap file by path, buffered; errors name the file.
    pub fn create(
        path: impl AsRef<Path>,
        linktype: LinkType,
        precision: TsPrecision,
        snaplen: u32,
    ) -> Result<Self, CaptureError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = File::create(path)
            .map_err(|source| CaptureError::new(&name, CaptureErrorKind::Open { source }))?;
        PcapWriter::new(
            BufWriter::with_capacity(1 << 18, file),
            name,
            linktype,
            precision,
            snaplen,
        )
    }
}

impl<W: Write> PcapWriter<W> {
    /// Writes the 24-byte little-endian file header (magic 0xa1b2c3d4 for microseconds,
    /// 0xa1b23c4d for nanoseconds, version 2.4) to `w`; `name` is used in error messages.
    pub fn new(
        w: W,
        name: impl Into<String>,
        linktype: LinkType,
        precision: TsPrecision,
        snaplen: u32,
    ) -> Result<Self, CaptureError> {
        let magic: u32 = match precision {
            TsPrecision::Micro => 0xa1b2_c3d4,
            TsPrecision::Nano => 0xa1b2_3c4d,
        };
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&magic.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay 0.
        h[16..20].copy_from_slice(&snaplen.to_le_bytes());
        h[20..24].copy_from_slice(&linktype.0.to_le_bytes());
        let mut writer = PcapWriter {
            w,
            name: name.into(),
            linktype,
            precision,
            pos: 0,
        };
        writer.put(&h)?;
        Ok(writer)
    }

    /// The file's link type.
    pub fn linktype(&self) -> LinkType {
        self.linktype
    }

    /// The file's timestamp precision.
    pub fn precision(&self) -> TsPrecision {
        self.precision
    }

    /// Bytes written so far (header included).
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), CaptureError> {
        match self.w.write_all(bytes) {
            Ok(()) => {
                self.pos += bytes.len() as u64;
                Ok(())
            }
            Err(source) => Err(self.write_err(source)),
        }
    }

    fn write_err(&self, source: io::Error) -> CaptureError {
        CaptureError::new(
            &self.name,
            CaptureErrorKind::Write {
                offset: self.pos,
                source,
            },
        )
    }

    /// Appends one record: `data` is written whole (caplen = `data.len()`), `orig_len` as given.
    /// Seconds are stored in 32 bits, as in every pcap file.
    pub fn write_packet(
        &mut self,
        ts: Timestamp,
        orig_len: u32,
        data: &[u8],
    ) -> Result<(), CaptureError> {
        let frac = match self.precision {
            TsPrecision::Micro => ts.subsec_nanos() / 1000,
            TsPrecision::Nano => ts.subsec_nanos(),
        };
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&(ts.secs() as u32).to_le_bytes());
        h[4..8].copy_from_slice(&frac.to_le_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&orig_len.to_le_bytes());
        self.put(&h)?;
        self.put(data)
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        self.w.flush().map_err(|e| self.write_err(e))
    }

    /// Flushes and gives back the underlying writer.
    pub fn finish(mut self) -> Result<W, CaptureError> {
        self.flush()?;
        Ok(self.w)
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.w
    }
}

impl<W: Write> PacketSink for PcapWriter<W> {
    type Error = CaptureError;

    /// Writes the packet; a packet of another link type stops the run with
    /// [`CaptureErrorKind::LinkTypeMismatch`] (one pcap file holds one link type).
    fn send(&mut self, packet: &Packet<'_>) -> Result<SendOutcome, CaptureError> {
        if packet.linktype != self.linktype {
            return Err(CaptureError::new(
                &self.name,
                CaptureErrorKind::LinkTypeMismatch {
                    offset: self.pos,
                    packet: packet.linktype,
                    file: self.linktype,
                },
            ));
        }
        self.write_packet(packet.ts, packet.orig_len, packet.data)?;
        Ok(SendOutcome::Sent)
    }

    fn flush(&mut self) -> Result<(), CaptureError> {
        PcapWriter::flush(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{CaptureReader, PacketSource};
    use hex_literal::hex;

    #[test]
    fn micro_header_and_record_bytes() {
        let mut w = PcapWriter::new(
            Vec::new(),
            "o.pcap",
            LinkType::ETHERNET,
            TsPrecision::Micro,
            65535,
        )
        .unwrap();
        // 1600000000.123456789 s: tv_usec is truncated to 123456, as libpcap writes it.
        w.write_packet(
            Timestamp::from_parts(1_600_000_000, 123_456_789),
            60,
            &hex!("deadbeef"),
        )
        .unwrap();
        assert_eq!(w.position(), 24 + 16 + 4);
        let bytes = w.finish().unwrap();
        assert_eq!(
            bytes,
            hex!(
                "d4c3b2a1 0200 0400 00000000 00000000 ffff0000 01000000"
                "00105e5f 40e20100 04000000 3c000000 deadbeef"
            )
        );
    }

    #[test]
    fn nano_header_and_record_bytes() {
        let mut w = PcapWriter::new(
            Vec::new(),
            "o.pcap",
            LinkType::RAW,
            TsPrecision::Nano,
            262_144,
        )
        .unwrap();
        w.write_packet(
            Timestamp::from_parts(1_600_000_000, 123_456_789),
            3,
            &hex!("aabbcc"),
        )
        .unwrap();
        assert_eq!(
            w.finish().unwrap(),
            hex!(
                "4d3cb2a1 0200 0400 00000000 00000000 00000400 65000000"
                "00105e5f 15cd5b07 03000000 03000000 aabbcc"
            )
        );
    }

    #[test]
    fn ns_to_us_truncates() {
        for (nanos, usec) in [
            (0, 0),
            (999, 0),
            (1_000, 1),
            (1_999, 1),
            (999_999_999, 999_999),
        ] {
            let mut w = PcapWriter::new(Vec::new(), "o", LinkType::ETHERNET, TsPrecision::Micro, 0)
                .unwrap();
            w.write_packet(Timestamp::from_parts(5, nanos), 0, &[])
                .unwrap();
            let b = w.finish().unwrap();
            assert_eq!(u32::from_le_bytes([b[28], b[29], b[30], b[31]]), usec);
            let mut r = CaptureReader::from_reader(&b[..], "o").unwrap();
            let p = r.next_packet().unwrap().unwrap();
            assert_eq!(p.ts, Timestamp::from_parts(5, usec * 1000));
        }
    }

    #[test]
    fn empty_run_leaves_a_valid_file() {
        let w =
            PcapWriter::new(Vec::new(), "o", LinkType::LINUX_SLL2, TsPrecision::Nano, 0).unwrap();
        let b = w.finish().unwrap();
        let mut r = CaptureReader::from_reader(&b[..], "o").unwrap();
        assert_eq!(r.linktype(), LinkType::LINUX_SLL2);
        assert_eq!(r.precision(), TsPrecision::Nano);
        assert!(r.next_packet().unwrap().is_none());
    }

    #[test]
    fn sink_refuses_other_linktypes() {
        let mut w = PcapWriter::new(
            Vec::new(),
            "o.pcap",
            LinkType::ETHERNET,
            TsPrecision::Micro,
            0,
        )
        .unwrap();
        let p = Packet {
            ts: Timestamp(1),
            orig_len: 1,
            linktype: LinkType::ETHERNET,
            data: &[1],
        };
        assert_eq!(w.send(&p).unwrap(), SendOutcome::Sent);
        let raw = Packet {
            linktype: LinkType::RAW,
            ..p
        };
        assert_eq!(
            w.send(&raw).unwrap_err().to_string(),
            "o.pcap: packet of link type RAW cannot be written at byte 41 of a EN10MB pcap file"
        );
    }

    #[test]
    fn write_errors_name_file_and_offset() {
        /// Accepts `room` bytes, then reports a full disk.
        struct Full {
            room: usize,
        }
        impl Write for Full {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.room == 0 {
                    return Err(io::Error::from_raw_os_error(28));
                }
                let n = buf.len().min(self.room);
                self.room -= n;
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = PcapWriter::new(
            Full { room: 40 },
            "o.pcap",
            LinkType::ETHERNET,
            TsPrecision::Micro,
            0,
        )
        .unwrap();
        let e = w.write_packet(Timestamp(0), 4, &[0; 4]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "o.pcap: write error at byte 40: No space left on device (os error 28)"
        );
        assert!(PcapWriter::new(
            Full { room: 3 },
            "o.pcap",
            LinkType::ETHERNET,
            TsPrecision::Micro,
            0
        )
        .is_err());
    }
}
