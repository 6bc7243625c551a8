//! Capture filters for the packet rings (`crate::sys::ring`): the user's BPF expression,
//! compiled by libpcap for a Linux cooked capture (`DLT_LINUX_SLL`), then moved to where a
//! `SOCK_DGRAM` socket finds the same fields, as libpcap does for its own cooked sockets
//! (`fix_program` in pcap-linux.c): bytes after the 16-byte cooked header move 16 back (the
//! socket's data starts at the network header), and the cooked header's protocol and packet
//! type become the kernel's `SKF_AD_PROTOCOL` and `SKF_AD_PKTTYPE`. So `ip`, `ip6` and `tcp` test
//! the frame's EtherType exactly as under libpcap, rather than the first nibble a raw-IP program
//! would look at. A filter that needs other link-header bytes is refused. Every accepting `ret`
//! is capped at a snap length: the kernel copies only that much of each frame into the ring.
//!
//! The one filter builder of tcpcopy's and intercept's rings. The rewrite is pure; only
//! [`compile_for_ring`] (feature `pcap`) calls libpcap's compiler, and nothing here opens a
//! socket.

use crate::sys::ring::SockFilter;

/// `DLT_LINUX_SLL`: what the program is compiled for.
pub const DLT_LINUX_SLL: i32 = 113;
/// Length of the cooked header the compiled program assumes in front of the network header.
const SLL_HDR_LEN: u32 = 16;
/// Offset of the packet type in the cooked header.
const SLL_PKTTYPE_AT: u32 = 0;
/// Offset of the protocol (EtherType) in the cooked header.
const SLL_PROTOCOL_AT: u32 = 14;
/// `SKF_AD_OFF` (linux/filter.h): loads from here on read the kernel's ancillary data.
pub const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
/// `SKF_AD_PROTOCOL`: the frame's EtherType (`skb->protocol`).
pub const SKF_AD_PROTOCOL: u32 = 0;
/// `SKF_AD_PKTTYPE`: the frame's packet type (`PACKET_HOST`, `PACKET_OUTGOING`, ...).
pub const SKF_AD_PKTTYPE: u32 = 4;

/// Classic BPF opcode fields (linux/bpf_common.h).
const fn class(code: u16) -> u16 {
    code & 0x07
}
const fn mode(code: u16) -> u16 {
    code & 0xe0
}
const BPF_LD: u16 = 0x00;
const BPF_LDX: u16 = 0x01;
const BPF_RET: u16 = 0x06;
const BPF_ABS: u16 = 0x20;
const BPF_IND: u16 = 0x40;
const BPF_MSH: u16 = 0xa0;
/// `BPF_RET | BPF_K`: return a constant.
const RET_K: u16 = BPF_RET;

/// Why a filter cannot serve a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BpfError {
    /// libpcap refused the expression (its message).
    #[error("bad filter {filter:?}: {message} (a capture ring sees no link-layer header: link-layer filters need --capture pcap)")]
    Syntax {
        /// The expression.
        filter: String,
        /// libpcap's message.
        message: String,
    },
    /// The program reads link-layer header bytes a ring does not see.
    #[error("filter {filter:?} reads link-layer header fields (instruction {at}), which a capture ring does not see; use --capture pcap")]
    LinkLayer {
        /// The expression.
        filter: String,
        /// The instruction's index.
        at: usize,
    },
    /// libpcap's compiler could not be set up, or printed an instruction we cannot read.
    #[error("BPF compiler: {0}")]
    Compiler(String),
}

/// Compiles `filter` for a `SOCK_DGRAM` capture ring, keeping at most `snap` bytes of each
/// frame (from the network header).
#[cfg(feature = "pcap")]
pub fn compile_for_ring(filter: &str, snap: u32) -> Result<Vec<SockFilter>, BpfError> {
    let dead = pcap::Capture::dead(pcap::Linktype(DLT_LINUX_SLL))
        .map_err(|e| BpfError::Compiler(e.to_string()))?;
    let prog = dead.compile(filter, true).map_err(|e| BpfError::Syntax {
        filter: filter.to_string(),
        message: e.to_string(),
    })?;
    let mut insns = prog
        .get_instructions()
        .iter()
        .map(|i| {
            let text = i.to_string();
            SockFilter::from_text(&text)
                .ok_or_else(|| BpfError::Compiler(format!("unexpected instruction {text}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for_dgram_socket(&mut insns, snap).map_err(|at| BpfError::LinkLayer {
        filter: filter.to_string(),
        at,
    })?;
    Ok(insns)
}

/// Rewrites a program compiled for `DLT_LINUX_SLL` in place for a `SOCK_DGRAM` socket, and
/// caps what it accepts at `snap` bytes. `Err(i)`: instruction `i` reads a cooked-header field
/// the socket has no equivalent for.
pub fn for_dgram_socket(prog: &mut [SockFilter], snap: u32) -> Result<(), usize> {
    for (i, insn) in prog.iter_mut().enumerate() {
        let c = insn.code;
        if c == RET_K {
            if insn.k > 0 {
                insn.k = insn.k.min(snap.max(1));
            }
            continue;
        }
        let packet_load = match class(c) {
            BPF_LD => matches!(mode(c), BPF_ABS | BPF_IND),
            BPF_LDX => mode(c) == BPF_MSH,
            _ => false,
        };
        // Loads of ancillary data already are where the socket finds them.
        if !packet_load || insn.k >= SKF_AD_OFF {
            continue;
        }
        insn.k = if insn.k >= SLL_HDR_LEN {
            insn.k - SLL_HDR_LEN
        } else if mode(c) == BPF_ABS && insn.k == SLL_PROTOCOL_AT {
            SKF_AD_OFF + SKF_AD_PROTOCOL
        } else if mode(c) == BPF_ABS && insn.k == SLL_PKTTYPE_AT {
            SKF_AD_OFF + SKF_AD_PKTTYPE
        } else {
            return Err(i);
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u16, k: u32) -> SockFilter {
        SockFilter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    #[test]
    fn cooked_loads_move_to_the_network_header_and_ancillary_data() {
        // ldh [14]; ldb [25]; ldxb 4*([16]&0xf); ldh [x+16]; ldh [0]; ret #262144; ret #0; ret a
        let mut p = vec![
            insn(0x28, 14),
            insn(0x30, 25),
            insn(0xb1, 16),
            insn(0x48, 16),
            insn(0x28, 0),
            insn(0x06, 262_144),
            insn(0x06, 0),
            insn(0x16, 0),
            insn(0x28, SKF_AD_OFF + 8),
        ];
        for_dgram_socket(&mut p, 256).unwrap();
        let k: Vec<u32> = p.iter().map(|i| i.k).collect();
        assert_eq!(
            k,
            vec![
                SKF_AD_OFF + SKF_AD_PROTOCOL,
                9,
                0,
                0,
                SKF_AD_OFF + SKF_AD_PKTTYPE,
                256,
                0,
                0,
                SKF_AD_OFF + 8
            ]
        );
        // The cooked header's address bytes have no equivalent.
        let mut p = vec![insn(0x06, 1), insn(0x20, 6)];
        assert_eq!(for_dgram_socket(&mut p, 256), Err(1));
    }

    #[cfg(feature = "pcap")]
    #[test]
    fn compiled_filters_test_the_ethertype_and_keep_headers_only() {
        let p = compile_for_ring("tcp and src port 6379", 256).unwrap();
        assert_eq!(p[0].code, 0x28);
        assert_eq!(p[0].k, SKF_AD_OFF + SKF_AD_PROTOCOL, "{p:?}");
        assert!(p.iter().any(|i| i.code == RET_K && i.k == 256), "{p:?}");
        assert!(p.iter().all(|i| i.code != RET_K || i.k <= 256), "{p:?}");
        // Every packet load now lies inside the IP + TCP headers or in ancillary data.
        assert!(
            p.iter()
                .filter(|i| matches!(i.code, 0x28 | 0x30 | 0x20 | 0x48 | 0x50 | 0xb1))
                .all(|i| i.k < 64 || i.k >= SKF_AD_OFF),
            "{p:?}"
        );
        for f in [
            "ip or ip6",
            "inbound and tcp",
            "tcp[tcpflags] & tcp-syn != 0",
        ] {
            compile_for_ring(f, 256).unwrap_or_else(|e| panic!("{f}: {e:#}"));
        }
        for f in [
            "tcp and link[6] = 0",
            "tcp and ether host 02:00:00:00:00:01",
        ] {
            let e = compile_for_ring(f, 256).unwrap_err();
            assert!(format!("{e:#}").contains("--capture pcap"), "{e:#}");
        }
        assert!(compile_for_ring("tcp and", 256).is_err());
    }
}
