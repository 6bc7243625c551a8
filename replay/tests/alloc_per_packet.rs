//! Proves the read → edit → pace → send loop allocates nothing per packet: a counting global
//! allocator measures allocations of whole runs over N and 10·N packets, and the count must not
//! grow with N.

use std::sync::atomic::AtomicBool;

use replay::pipeline::{
    run, Clock, Edit, EditedFrames, Editor, Input, NoProgress, Output, StopLimits,
};
use tcpclone::capture::{LinkType, Packet, PacketSink, SendOutcome, Timestamp};
use tcpclone::pace::{Pacer, Timing};
use tcpclone::stats::ReplayStats;

#[global_allocator]
static GLOBAL: tcpclone_lab::sys::Counting = tcpclone_lab::sys::Counting;
use tcpclone_lab::sys::allocs;

/// Frames held in memory, handed out by reference (like a preloaded capture).
struct MemInput {
    frames: Vec<Vec<u8>>,
    next: usize,
}

impl Input for MemInput {
    fn files(&self) -> usize {
        1
    }
    fn open(&mut self, _index: usize) -> anyhow::Result<()> {
        self.next = 0;
        Ok(())
    }
    fn next_packet(&mut self) -> anyhow::Result<Option<Packet<'_>>> {
        let i = self.next;
        self.next += 1;
        Ok(self.frames.get(i).map(|f| Packet {
            ts: Timestamp(1_000_000 * i as u64),
            orig_len: f.len() as u32,
            linktype: LinkType::ETHERNET,
            data: f,
        }))
    }
}

/// An editor that really writes the frame into the output buffer (changes the TTL byte).
struct TouchTtl;

impl Editor for TouchTtl {
    fn edit(&mut self, packet: &Packet<'_>, out: &mut EditedFrames) -> Edit {
        out.buf.extend_from_slice(packet.data);
        out.buf[22] = out.buf[22].wrapping_sub(1);
        Edit::Rewritten
    }
}

/// A sink that checks and counts what it gets.
#[derive(Default)]
struct NullSink {
    bytes: u64,
}

impl PacketSink for NullSink {
    type Error = std::io::Error;
    fn send(&mut self, packet: &Packet<'_>) -> std::io::Result<SendOutcome> {
        self.bytes += packet.data.len() as u64;
        Ok(SendOutcome::Sent)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Output for NullSink {}

struct VirtualClock(u64);

impl Clock for VirtualClock {
    fn now(&mut self) -> u64 {
        self.0
    }
    fn wait_until(&mut self, due: u64, _stop: &AtomicBool) {
        self.0 = self.0.max(due);
    }
}

fn frames(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut f = vec![0u8; 60 + (i % 7) * 100];
            // Ethernet / IPv4 / UDP to port 9, lengths consistent.
            let len = f.len();
            f[12] = 0x08;
            f[14] = 0x45;
            f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
            f[22] = 64;
            f[23] = 17;
            f[26..30].copy_from_slice(&[198, 18, 0, 1]);
            f[30..34].copy_from_slice(&[198, 18, 0, 2]);
            f[34..36].copy_from_slice(&40000u16.to_be_bytes());
            f[36..38].copy_from_slice(&9u16.to_be_bytes());
            f[38..40].copy_from_slice(&((len - 34) as u16).to_be_bytes());
            f
        })
        .collect()
}

/// Allocations made by one whole run over `n` packets (setup of the input excluded).
fn allocs_for(n: usize, timing: Timing, loops: u64) -> (u64, ReplayStats) {
    let mut input = MemInput {
        frames: frames(n),
        next: 0,
    };
    let mut editor = TouchTtl;
    let mut pacer = Pacer::new(timing);
    let mut sink = NullSink::default();
    let mut clock = VirtualClock(0);
    let stop = AtomicBool::new(false);
    let mut stats = ReplayStats::default();
    let limits = StopLimits {
        loops,
        ..StopLimits::once()
    };
    let before = allocs();
    run(
        &mut input,
        &mut editor,
        &mut pacer,
        &mut sink,
        &mut clock,
        &mut NoProgress,
        &limits,
        &stop,
        &mut stats,
    )
    .expect("run");
    let after = allocs();
    assert_eq!(sink.bytes, stats.bytes_sent);
    (after - before, stats)
}

#[test]
fn loop_allocations_do_not_grow_with_packet_count() {
    for timing in [
        Timing::TopSpeed,
        Timing::pps(1e6).unwrap(),
        Timing::multiplier(1.0).unwrap(),
    ] {
        let (small, s1) = allocs_for(10_000, timing, 1);
        let (large, s2) = allocs_for(100_000, timing, 1);
        assert_eq!(s1.packets_sent, 10_000);
        assert_eq!(s2.packets_sent, 100_000);
        assert_eq!(s2.rewritten, 100_000);
        // A handful of allocations for the reusable buffers, the same for both sizes.
        assert!(
            large <= small,
            "{timing:?}: {small} allocations for 10k packets, {large} for 100k"
        );
        assert!(
            small < 50,
            "{timing:?}: {small} allocations for 10k packets"
        );
    }
    // Loops reuse the same buffers too.
    let (one, _) = allocs_for(1_000, Timing::TopSpeed, 1);
    let (ten, s) = allocs_for(1_000, Timing::TopSpeed, 10);
    assert_eq!(s.packets_sent, 10_000);
    assert!(ten <= one, "1 pass: {one} allocations, 10 passes: {ten}");
}

/// The real thing: a pcap file read by the library reader ([`replay::input::FileInput`], or
/// preloaded), edited, and written by the library writer to /dev/null, as `replay -w` does.
fn file_allocs_for(n: usize, preload: bool, rewrite: bool) -> u64 {
    use tcpclone::capture::{PcapWriter, TsPrecision};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.pcap");
    let mut w = PcapWriter::create(&path, LinkType::ETHERNET, TsPrecision::Nano, 65535).unwrap();
    for (i, f) in frames(n).iter().enumerate() {
        w.write_packet(Timestamp(1_000 * i as u64), f.len() as u32, f)
            .unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let mut sink =
        PcapWriter::create("/dev/null", LinkType::ETHERNET, TsPrecision::Nano, 65535).unwrap();
    let mut input: Box<dyn Input> = if preload {
        Box::new(replay::input::PreloadInput::new(
            replay::input::preload(std::slice::from_ref(&path)).unwrap(),
        ))
    } else {
        Box::new(replay::input::FileInput::open_all(std::slice::from_ref(&path)).unwrap())
    };
    let mut clock = VirtualClock(0);
    let stop = AtomicBool::new(false);
    let mut stats = ReplayStats::default();
    // The library rewriter with tcprewrite edits (maps, MAC, TTL, checksums), or the test editor.
    let mut editor: Box<dyn Editor> = if rewrite {
        let flags = replay::edit::EditFlags {
            rewrite: tcpclone::rewrite::RewriteOptions {
                srcipmap: vec!["0.0.0.0/0:198.18.0.0/16".into()],
                enet_dmac: Some("02:00:00:00:00:aa".into()),
                ttl: Some("-1".into()),
                portmap: vec!["9:99".into()],
                ..Default::default()
            },
            tso_split: false,
        };
        replay::edit::build_editor(&flags, 1500).expect("edits")
    } else {
        Box::new(TouchTtl)
    };
    let before = allocs();
    run(
        &mut *input,
        &mut *editor,
        &mut Pacer::new(Timing::TopSpeed),
        &mut sink,
        &mut clock,
        &mut NoProgress,
        &StopLimits::once(),
        &stop,
        &mut stats,
    )
    .expect("run");
    let after = allocs();
    assert_eq!(stats.packets_sent, n as u64);
    assert_eq!(
        stats.rewritten, n as u64,
        "every packet rewritten: {stats:?}"
    );
    assert_eq!(stats.unparsed.total(), 0);
    after - before
}

#[test]
fn file_reader_and_writer_loop_allocates_nothing_per_packet() {
    for (preload, rewrite) in [(false, false), (true, false), (false, true), (true, true)] {
        let small = file_allocs_for(10_000, preload, rewrite);
        let large = file_allocs_for(100_000, preload, rewrite);
        let what = format!("preload {preload}, rewrite {rewrite}");
        assert!(
            large <= small,
            "{what}: {small} allocations for 10k packets, {large} for 100k"
        );
        assert!(small < 50, "{what}: {small} allocations for 10k packets");
    }
}
